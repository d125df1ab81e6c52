//! The installation's shared configuration: one Secret (generated credentials and the URLs
//! of managed stores) and one ConfigMap (non-secret settings every service reads).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, EnvVarSource, Secret, SecretKeySelector};

use super::{Instance, Resolved, ServiceKind, StoreKind, hash_of};
use crate::crd::{MongoTopology, MovieBookingSystemSpec, ServiceSpec};

/// Keys of the generated credentials in `<name>-secrets`.
pub const POSTGRES_PASSWORD: &str = "postgres-password";
pub const REDIS_PASSWORD: &str = "redis-password";
pub const RABBITMQ_PASSWORD: &str = "rabbitmq-password";
/// The managed MongoDB's administrator (`moviebook`, `root` on `admin`): the replica-set
/// probe's and a person's at `mongosh`; only the MongoDB pod reads it.
pub const MONGODB_PASSWORD: &str = "mongodb-password";
/// The replica set's internal-authentication key (`--keyFile`; only the MongoDB pod reads it).
pub const MONGODB_KEYFILE: &str = "mongodb-keyfile";
/// Notification's own password in the managed Redis (its user is `notification`).
pub const REDIS_NOTIFICATION_PASSWORD: &str = "redis-password-notification";
pub const JWT_SECRET: &str = "jwt-secret";
/// The Ed25519 seed booking signs tickets with (base64 of 32 bytes; booking's env alone).
pub const TICKET_SIGNING_KEY: &str = "ticket-signing-key";
/// The user service's ES256 token-signing key, when generated (the user service's env alone).
pub const USER_TOKEN_SIGNING_KEY: &str = "user-token-signing-key";
/// The public keys user tokens are verified with (every service's env; Kong's config).
pub const USER_TOKEN_PUBLIC_KEYS: &str = "user-token-public-keys";
/// Booking's ES256 service-token signing key (booking's env alone): the identity that
/// charges, refunds and holds seats, which no other pod can therefore assume.
pub const SERVICE_TOKEN_SIGNING_KEY: &str = "service-token-signing-key";
/// The public keys booking's service tokens are verified with (the other services' env).
pub const SERVICE_TOKEN_PUBLIC_KEYS: &str = "service-token-public-keys";
/// Database user and names of the managed stores.
pub const DB_USER: &str = "moviebook";
pub const POSTGRES_DB: &str = "cinema";
pub const MONGO_REPLICA_SET: &str = "rs0";
/// How often booking resolves cinema's headless Service again (`CINEMA_GRPC_RESOLVE_SECONDS`):
/// a cinema pod that starts gets traffic, one that stops loses it, within this time (plus
/// CoreDNS's cache of 5 s). The services' preStop delay covers both.
pub const CINEMA_RESOLVE_SECONDS: i32 = 5;

/// Connections the managed PostgreSQL (`max_connections` 100) gives cinema's pods together;
/// the rest is for the superuser, the migration and seed Jobs and a `psql` by hand.
pub const POSTGRES_CONNECTION_BUDGET: i32 = 80;
/// Connections each MongoDB service's pods share on the managed MongoDB (four services: 400,
/// well inside mongod's limits and a small server's memory at ~1 MiB each).
pub const MONGO_CONNECTIONS_PER_SERVICE: i32 = 100;
/// Pods a pool is sized for at least: scaling within this changes no pool size, so it rolls
/// no pods (the pool size is part of the pod template).
pub const MIN_POOL_PODS: i32 = 4;

/// The most pods a service may run: the autoscaler's ceiling, else its replicas, at least
/// [`MIN_POOL_PODS`].
pub fn pod_ceiling(sspec: &ServiceSpec) -> i32 {
    let replicas = sspec.replicas.unwrap_or(1);
    let hpa = sspec.autoscaling.as_ref().map_or(0, |a| a.max_replicas);
    replicas.max(hpa).max(MIN_POOL_PODS)
}

/// Connection pool of one pod so that `pods` pods stay within `budget` connections (never
/// below 2, so a pod can always make progress, nor above 64).
pub fn pool_size(budget: i32, pods: i32) -> i32 {
    (budget / pods.max(1)).clamp(2, 64)
}

/// Database of a MongoDB service: its own, so that no two services share collections (booking
/// and payment would otherwise share one outbox).
pub fn mongo_database(svc: ServiceKind) -> String {
    format!("moviebook_{}", svc.name())
}

/// In-cluster URL of the managed MongoDB for one service: its own user (defined in its own
/// database, so that is the `authSource`), its database, its pool size
/// (`maxPoolSize`), and how to reach the server: through the replica set, or straight to the
/// one server (`directConnection=true`, so the driver does not go looking for the members a
/// standalone server may announce under names this cluster does not resolve).
pub fn managed_mongo_url(
    svc: ServiceKind,
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    password: &str,
) -> String {
    let store = StoreKind::Mongodb;
    let host = format!(
        "{}-0.{}:{}",
        inst.child(store.name()),
        inst.dns(&inst.child(store.name())),
        store.port()
    );
    let topology = mongo_topology(spec);
    let reach = match topology {
        MongoTopology::ReplicaSet => format!("replicaSet={MONGO_REPLICA_SET}"),
        MongoTopology::Standalone => "directConnection=true".to_string(),
    };
    let pool = pool_size(MONGO_CONNECTIONS_PER_SERVICE, pod_ceiling(svc.spec(spec)));
    let database = mongo_database(svc);
    format!(
        "mongodb://{}:{password}@{host}/{database}?authSource={database}&{reach}&maxPoolSize={pool}",
        svc.name()
    )
}

/// Topology of the managed MongoDB (ReplicaSet unless the spec says otherwise).
pub fn mongo_topology(spec: &MovieBookingSystemSpec) -> MongoTopology {
    spec.mongodb
        .managed
        .as_ref()
        .and_then(|m| m.topology)
        .unwrap_or_default()
}

/// Key of a service's own password in the managed RabbitMQ (its user is the service's name).
pub fn rabbitmq_password_key(who: moviebook_grants::Service) -> String {
    format!("{RABBITMQ_PASSWORD}-{}", who.name())
}

/// Key of a service's own password in the managed MongoDB (its user is the service's name,
/// defined in its own database).
pub fn mongodb_password_key(svc: ServiceKind) -> String {
    format!("{MONGODB_PASSWORD}-{}", svc.name())
}

/// The services with a user in the managed MongoDB (those that store documents).
pub fn mongodb_clients() -> impl Iterator<Item = ServiceKind> {
    ServiceKind::ALL
        .into_iter()
        .filter(|svc| svc.stores().contains(&StoreKind::Mongodb))
}

/// Every generated password of a store user besides the three original administrators (the
/// services' own users, MongoDB's administrator and its replica-set key), by its key in
/// `<name>-secrets`.
pub fn store_password_keys() -> Vec<String> {
    let mut keys: Vec<String> = moviebook_grants::Service::BROKER_CLIENTS
        .into_iter()
        .map(rabbitmq_password_key)
        .collect();
    keys.push(REDIS_NOTIFICATION_PASSWORD.into());
    keys.extend(mongodb_clients().map(mongodb_password_key));
    keys.push(MONGODB_PASSWORD.into());
    keys.push(MONGODB_KEYFILE.into());
    keys
}

/// Key of `<name>-secrets` under which a service finds a managed store's URL: PostgreSQL has
/// one client (cinema, `DATABASE_URL`); MongoDB, RabbitMQ and Redis URLs carry the service's
/// own user, so each service has its own key (`booking.RABBITMQ_URL`) and its pods read only
/// that one.
pub fn url_key(svc: ServiceKind, store: StoreKind) -> String {
    match store {
        StoreKind::Redis | StoreKind::Rabbitmq | StoreKind::Mongodb => {
            format!("{}.{}", svc.name(), store.url_env())
        }
        StoreKind::Postgres => store.url_env().to_string(),
    }
}

/// A service's own URL of a managed MongoDB, RabbitMQ or Redis (its user and generated
/// password), or `None` for a service that holds no user there.
pub fn managed_service_url(
    svc: ServiceKind,
    store: StoreKind,
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    res: &Resolved,
) -> Option<String> {
    let password = |key: &str| res.store_passwords.get(key).cloned().unwrap_or_default();
    if store == StoreKind::Mongodb {
        return svc
            .stores()
            .contains(&store)
            .then(|| managed_mongo_url(svc, spec, inst, &password(&mongodb_password_key(svc))));
    }
    let who = svc.grantee()?;
    let host = inst.dns(&inst.child(store.name()));
    let port = store.port();
    match store {
        StoreKind::Rabbitmq => Some(format!(
            "amqp://{}:{}@{host}:{port}/%2f",
            who.name(),
            password(&rabbitmq_password_key(who))
        )),
        StoreKind::Redis if who == moviebook_grants::Service::Notification => Some(format!(
            "redis://{}:{}@{host}:{port}/0",
            moviebook_grants::redis::NOTIFICATION_USER,
            password(REDIS_NOTIFICATION_PASSWORD)
        )),
        _ => None,
    }
}

/// Name of the Secret with generated credentials.
pub fn secret_name(inst: &Instance) -> String {
    inst.child("secrets")
}

/// Name of the shared ConfigMap.
pub fn config_map_name(inst: &Instance) -> String {
    inst.child("config")
}

/// In-cluster URL of the managed PostgreSQL (cinema's, with its credentials).
pub fn managed_postgres_url(inst: &Instance, res: &Resolved) -> String {
    let store = StoreKind::Postgres;
    format!(
        "postgres://{DB_USER}:{}@{}:{}/{POSTGRES_DB}",
        res.postgres_password,
        inst.dns(&inst.child(store.name())),
        store.port()
    )
}

/// The Secret, the ConfigMap and the hash of everything a service pod reads from them (or
/// from referenced Secrets), which goes into every pod template.
pub fn build(
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    res: &Resolved,
) -> (Secret, ConfigMap, String) {
    let mut data: BTreeMap<String, String> = BTreeMap::from([
        (POSTGRES_PASSWORD.into(), res.postgres_password.clone()),
        (REDIS_PASSWORD.into(), res.redis_password.clone()),
        (RABBITMQ_PASSWORD.into(), res.rabbitmq_password.clone()),
    ]);
    for key in store_password_keys() {
        let value = res.store_passwords.get(&key).cloned().unwrap_or_default();
        data.insert(key, value);
    }
    if res.jwt_generated {
        data.insert(JWT_SECRET.into(), res.jwt_secret.clone());
    }
    if !res.ticket_signing_key.is_empty() {
        data.insert(TICKET_SIGNING_KEY.into(), res.ticket_signing_key.clone());
    }
    if res.user_token_key_generated {
        data.insert(
            USER_TOKEN_SIGNING_KEY.into(),
            res.user_token_signing_key.clone(),
        );
    }
    // Derived from the signing key (and the referenced extra keys), so a change of either
    // changes this value, the config hash and so every pod.
    data.insert(
        USER_TOKEN_PUBLIC_KEYS.into(),
        super::tokens::joined(&res.user_token_keys),
    );
    data.insert(
        SERVICE_TOKEN_SIGNING_KEY.into(),
        res.service_token_signing_key.clone(),
    );
    data.insert(
        SERVICE_TOKEN_PUBLIC_KEYS.into(),
        super::tokens::joined(&res.service_token_keys),
    );
    // The administrator passwords of MongoDB, Redis and RabbitMQ are only in the stores' own
    // pods.
    if spec.postgres.managed.is_some() {
        data.insert(
            url_key(ServiceKind::Cinema, StoreKind::Postgres),
            managed_postgres_url(inst, res),
        );
    }
    for store in [StoreKind::Mongodb, StoreKind::Redis, StoreKind::Rabbitmq] {
        if store.spec(spec).managed.is_none() {
            continue;
        }
        for svc in ServiceKind::ALL {
            if !svc.stores().contains(&store) {
                continue;
            }
            if let Some(url) = managed_service_url(svc, store, spec, inst, res) {
                data.insert(url_key(svc, store), url);
            }
        }
    }
    let settings = settings(spec, inst);

    let mut parts: Vec<String> = Vec::new();
    // No service pod reads the JWT secret: it only seeds the filler secrets of Kong's rendered
    // config, and Kong rolls by the hash of that config. Leaving it out keeps a changed JWT
    // secret from restarting every service pod for nothing.
    parts.extend(
        data.iter()
            .filter(|(k, _)| k.as_str() != JWT_SECRET)
            .map(|(k, v)| format!("secret:{k}={v}")),
    );
    parts.extend(settings.iter().map(|(k, v)| format!("config:{k}={v}")));
    parts.extend(
        res.external_urls
            .iter()
            .map(|(k, v)| format!("external:{}={v}", k.name())),
    );
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let hash = hash_of(&refs);

    let secret = Secret {
        metadata: inst.meta(secret_name(inst), "config"),
        type_: Some("Opaque".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    };
    let config_map = ConfigMap {
        metadata: inst.meta(config_map_name(inst), "config"),
        data: Some(settings),
        ..ConfigMap::default()
    };
    (secret, config_map, hash)
}

/// Non-secret settings shared by all services (docs/architecture.md's environment contract).
fn settings(spec: &MovieBookingSystemSpec, inst: &Instance) -> BTreeMap<String, String> {
    let url = |svc: ServiceKind| {
        format!(
            "http://{}:{}",
            inst.dns(&inst.child(svc.name())),
            svc.http_port()
        )
    };
    BTreeMap::from([
        ("RUST_LOG".into(), spec.log_level.clone()),
        ("LOG_FORMAT".into(), "json".into()),
        ("JWT_ISSUER".into(), spec.auth.jwt_issuer.clone()),
        ("USER_SERVICE_URL".into(), url(ServiceKind::User)),
        ("PAYMENT_SERVICE_URL".into(), url(ServiceKind::Payment)),
        // The headless Service: booking resolves one address per ready cinema pod and spreads
        // its calls over them (one HTTP/2 connection to a ClusterIP would pin one pod).
        (
            "CINEMA_GRPC_URL".into(),
            format!("http://{}:9090", inst.dns(&cinema_grpc_service_name(inst))),
        ),
        (
            "CINEMA_GRPC_RESOLVE_SECONDS".into(),
            CINEMA_RESOLVE_SECONDS.to_string(),
        ),
    ])
}

/// Name of cinema's headless gRPC Service.
pub fn cinema_grpc_service_name(inst: &Instance) -> String {
    inst.child("cinema-grpc")
}

/// `env` entry reading a key of a Secret.
pub fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// `env` entry with a literal value.
pub fn plain_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// Where a service reads a store's URL: its own key of the generated Secret for a managed
/// store ([`url_key`]), the user's Secret for an external one (an external MongoDB URL should name no database: each service then uses its own,
/// `moviebook_<service>`).
pub fn store_url_env(
    svc: ServiceKind,
    store: StoreKind,
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
) -> EnvVar {
    match &store.spec(spec).external {
        Some(ext) => secret_env(store.url_env(), &ext.secret_ref.name, &ext.secret_ref.key),
        None => secret_env(store.url_env(), &secret_name(inst), &url_key(svc, store)),
    }
}

/// Where booking reads its ticket-signing seed: its own key of `<name>-secrets`, so tickets
/// cannot be made with the JWT secret every service holds (booking would otherwise derive
/// the key from it).
pub fn ticket_key_env(inst: &Instance) -> EnvVar {
    secret_env("TICKET_SIGNING_KEY", &secret_name(inst), TICKET_SIGNING_KEY)
}

/// Where the user service reads its token-signing key (no other pod gets it).
pub fn user_token_signing_key_env(spec: &MovieBookingSystemSpec, inst: &Instance) -> EnvVar {
    match &spec.auth.user_token_key_ref {
        Some(r) => secret_env("USER_TOKEN_SIGNING_KEY", &r.name, &r.key),
        None => secret_env(
            "USER_TOKEN_SIGNING_KEY",
            &secret_name(inst),
            USER_TOKEN_SIGNING_KEY,
        ),
    }
}

/// Where every service reads the keys user tokens are verified with.
pub fn user_token_public_keys_env(inst: &Instance) -> EnvVar {
    secret_env(
        "USER_TOKEN_PUBLIC_KEYS",
        &secret_name(inst),
        USER_TOKEN_PUBLIC_KEYS,
    )
}

/// Where booking reads its service-token signing key (no other pod gets it).
pub fn service_token_signing_key_env(inst: &Instance) -> EnvVar {
    secret_env(
        "SERVICE_TOKEN_SIGNING_KEY",
        &secret_name(inst),
        SERVICE_TOKEN_SIGNING_KEY,
    )
}

/// Where the services booking calls read the keys its service tokens are verified with.
pub fn service_token_public_keys_env(inst: &Instance) -> EnvVar {
    secret_env(
        "SERVICE_TOKEN_PUBLIC_KEYS",
        &secret_name(inst),
        SERVICE_TOKEN_PUBLIC_KEYS,
    )
}

/// The variables that hold a private key: a service's pods get theirs, the Jobs that run
/// its migration or seed never do (they only need the stores).
pub const PRIVATE_KEY_VARS: [&str; 3] = [
    "USER_TOKEN_SIGNING_KEY",
    "SERVICE_TOKEN_SIGNING_KEY",
    "TICKET_SIGNING_KEY",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::*;

    fn text(s: &Secret, k: &str) -> String {
        let bytes = &s.data.as_ref().expect("data")[k].0;
        String::from_utf8(bytes.clone()).expect("utf8")
    }

    #[test]
    fn secret_holds_generated_credentials_and_managed_urls() {
        let mbs = sample();
        let (secret, cm, _) = build(&mbs.spec, &instance(), &resolved());
        assert_eq!(secret.metadata.name.as_deref(), Some("demo-secrets"));
        assert_eq!(text(&secret, JWT_SECRET), "jwtsecret");
        assert_eq!(
            text(&secret, TICKET_SIGNING_KEY),
            resolved().ticket_signing_key,
            "booking's ticket key is kept in the Secret"
        );
        assert_eq!(
            text(&secret, "DATABASE_URL"),
            "postgres://moviebook:pgpw@demo-postgres.shop.svc:5432/cinema"
        );
        assert!(
            !secret
                .data
                .as_ref()
                .expect("data")
                .contains_key("MONGODB_URL"),
            "no MongoDB URL shared by the services"
        );
        // Each MongoDB service logs in as itself, to its own database.
        assert_eq!(
            text(&secret, "booking.MONGODB_URL"),
            "mongodb://booking:pw-mongodb-password-booking@demo-mongodb-0.demo-mongodb.shop.svc:27017/moviebook_booking?authSource=moviebook_booking&replicaSet=rs0&maxPoolSize=25"
        );
        assert!(
            !secret
                .data
                .as_ref()
                .expect("data")
                .contains_key("cinema.MONGODB_URL"),
            "cinema stores no documents"
        );
        // Each service that shares RabbitMQ or Redis has its own user there, and its own URL.
        assert_eq!(
            text(&secret, "notification.REDIS_URL"),
            "redis://notification:pw-redis-password-notification@demo-redis.shop.svc:6379/0"
        );
        for svc in ["booking", "payment", "notification"] {
            assert_eq!(
                text(&secret, &format!("{svc}.RABBITMQ_URL")),
                format!("amqp://{svc}:pw-rabbitmq-password-{svc}@demo-rabbitmq.shop.svc:5672/%2f")
            );
            assert_eq!(
                text(&secret, &format!("rabbitmq-password-{svc}")),
                format!("pw-rabbitmq-password-{svc}"),
                "kept, so the next reconcile renders the same users"
            );
        }
        let data = secret.data.as_ref().expect("data");
        for gone in [
            "REDIS_URL",
            "RABBITMQ_URL",
            "user.RABBITMQ_URL",
            "cinema.RABBITMQ_URL",
        ] {
            assert!(
                !data.contains_key(gone),
                "{gone}: no pod reads an administrator URL, and user and cinema use no broker"
            );
        }
        let urls = data
            .values()
            .map(|v| String::from_utf8_lossy(&v.0))
            .collect::<Vec<_>>();
        assert!(
            !urls
                .iter()
                .any(|u| u.contains("rabbitpw@") || u.contains(":redispw@")),
            "the administrator passwords are in no URL"
        );
        let data = cm.data.expect("data");
        assert_eq!(data["LOG_FORMAT"], "json");
        assert_eq!(data["JWT_ISSUER"], "moviebook");
        assert_eq!(
            data["CINEMA_GRPC_URL"],
            "http://demo-cinema-grpc.shop.svc:9090"
        );
        assert_eq!(data["CINEMA_GRPC_RESOLVE_SECONDS"], "5");
        assert_eq!(data["USER_SERVICE_URL"], "http://demo-user.shop.svc:8001");
        assert_eq!(
            data["PAYMENT_SERVICE_URL"],
            "http://demo-payment.shop.svc:8003"
        );
        // owned by the resource, so deleting it garbage-collects the Secret
        assert_eq!(
            secret.metadata.owner_references.expect("owner")[0].uid,
            "uid-1"
        );
    }

    #[test]
    fn external_store_url_is_not_copied_and_user_jwt_is_not_stored() {
        let mut mbs = sample();
        mbs.spec.postgres = serde_json::from_value(
            serde_json::json!({"external": {"secretRef": {"name": "pg", "key": "url"}}}),
        )
        .expect("store");
        let mut res = resolved();
        res.jwt_generated = false;
        let (secret, _, _) = build(&mbs.spec, &instance(), &res);
        let data = secret.data.expect("data");
        assert!(!data.contains_key("DATABASE_URL"));
        assert!(!data.contains_key(JWT_SECRET));
        let env = store_url_env(
            ServiceKind::Cinema,
            StoreKind::Postgres,
            &mbs.spec,
            &instance(),
        );
        let sel = env
            .value_from
            .and_then(|v| v.secret_key_ref)
            .expect("secret ref");
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("pg", "url"));
    }

    #[test]
    fn service_token_keys_are_in_the_secret_and_each_change_rolls_the_pods() {
        let mbs = sample();
        let res = resolved();
        let (secret, _, h1) = build(&mbs.spec, &instance(), &res);
        assert_eq!(
            text(&secret, SERVICE_TOKEN_SIGNING_KEY),
            res.service_token_signing_key
        );
        assert_eq!(
            text(&secret, SERVICE_TOKEN_PUBLIC_KEYS),
            super::super::tokens::joined(&res.service_token_keys)
        );
        let mut rotated = resolved();
        rotated.service_token_signing_key = "<another key>".into();
        let (_, _, h2) = build(&mbs.spec, &instance(), &rotated);
        assert_ne!(h1, h2, "a new signing key restarts booking");
        let mut rotated = resolved();
        rotated.service_token_keys[0].pem = "<another public key>".into();
        let (_, _, h3) = build(&mbs.spec, &instance(), &rotated);
        assert_ne!(h1, h3, "new verification keys restart the callees");
    }

    #[test]
    fn user_token_keys_generated_or_referenced() {
        let mut mbs = sample();
        let res = resolved();
        let (secret, _, h1) = build(&mbs.spec, &instance(), &res);
        assert_eq!(
            text(&secret, USER_TOKEN_SIGNING_KEY),
            res.user_token_signing_key
        );
        assert_eq!(
            text(&secret, USER_TOKEN_PUBLIC_KEYS),
            super::super::tokens::joined(&res.user_token_keys)
        );
        let from = |e: EnvVar| {
            let sel = e
                .value_from
                .and_then(|v| v.secret_key_ref)
                .expect("secret ref");
            (sel.name, sel.key)
        };
        assert_eq!(
            from(user_token_signing_key_env(&mbs.spec, &instance())),
            ("demo-secrets".to_owned(), USER_TOKEN_SIGNING_KEY.to_owned())
        );

        // A referenced key is read from the user's Secret and not copied.
        mbs.spec.auth.user_token_key_ref = Some(crate::crd::SecretKeyRef {
            name: "token-key".into(),
            key: "pem".into(),
        });
        let mut res = resolved();
        res.user_token_key_generated = false;
        let (secret, _, _) = build(&mbs.spec, &instance(), &res);
        let data = secret.data.expect("data");
        assert!(!data.contains_key(USER_TOKEN_SIGNING_KEY));
        assert!(data.contains_key(USER_TOKEN_PUBLIC_KEYS));
        assert_eq!(
            from(user_token_signing_key_env(&mbs.spec, &instance())),
            ("token-key".to_owned(), "pem".to_owned())
        );

        // A second verification key (a rotation's first step) rolls every pod.
        let mut res = resolved();
        res.user_token_keys
            .push(super::super::tokens::VerificationKey {
                kid: "fedcba9876543210".into(),
                pem: "-----BEGIN PUBLIC KEY-----\nnew\n-----END PUBLIC KEY-----\n".into(),
            });
        let (_, _, h2) = build(&sample().spec, &instance(), &res);
        assert_ne!(h1, h2);
    }

    #[test]
    fn config_hash_changes_with_any_input() {
        let mbs = sample();
        let (_, _, h1) = build(&mbs.spec, &instance(), &resolved());
        let (_, _, same) = build(&mbs.spec, &instance(), &resolved());
        assert_eq!(
            h1, same,
            "hash must be deterministic or every reconcile rolls the pods"
        );
        let mut res = resolved();
        res.jwt_secret = "other".into();
        assert_eq!(
            h1,
            build(&mbs.spec, &instance(), &res).2,
            "no service pod reads the JWT secret, so it must not roll them"
        );
        res.ticket_signing_key = "b3RoZXI=".into();
        assert_ne!(h1, build(&mbs.spec, &instance(), &res).2);
        let mut spec = mbs.spec.clone();
        spec.log_level = "debug".into();
        assert_ne!(h1, build(&spec, &instance(), &resolved()).2);
        let mut res = resolved();
        res.external_urls
            .insert(StoreKind::Redis, "redis://elsewhere".into());
        assert_ne!(h1, build(&mbs.spec, &instance(), &res).2);
    }

    #[test]
    fn each_mongodb_service_has_its_own_database_and_a_pool_that_fits() {
        let mut mbs = sample();
        let url =
            |svc, spec: &MovieBookingSystemSpec| managed_mongo_url(svc, spec, &instance(), "pw");
        assert_eq!(
            url(ServiceKind::User, &mbs.spec),
            "mongodb://user:pw@demo-mongodb-0.demo-mongodb.shop.svc:27017/moviebook_user?authSource=moviebook_user&replicaSet=rs0&maxPoolSize=25"
        );
        let dbs: Vec<String> = [
            ServiceKind::User,
            ServiceKind::Payment,
            ServiceKind::Notification,
            ServiceKind::Booking,
        ]
        .into_iter()
        .map(mongo_database)
        .collect();
        assert_eq!(
            dbs,
            [
                "moviebook_user",
                "moviebook_payment",
                "moviebook_notification",
                "moviebook_booking"
            ]
        );
        mbs.spec.mongodb.managed.as_mut().expect("managed").topology =
            Some(MongoTopology::Standalone);
        let standalone = url(ServiceKind::Booking, &mbs.spec);
        assert!(
            standalone
                .contains("/moviebook_booking?authSource=moviebook_booking&directConnection=true&"),
            "{standalone}"
        );
        assert!(!standalone.contains("replicaSet"), "{standalone}");
        // more pods, smaller pools: replicas x pool stays within the budget
        mbs.spec.services.booking.replicas = Some(10);
        assert!(url(ServiceKind::Booking, &mbs.spec).ends_with("maxPoolSize=10"));
        mbs.spec.services.booking.autoscaling = Some(crate::crd::AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 20,
            target_cpu_utilization_percentage: 70,
        });
        assert!(url(ServiceKind::Booking, &mbs.spec).ends_with("maxPoolSize=5"));
        for pods in 1..=100 {
            let pool = pool_size(POSTGRES_CONNECTION_BUDGET, pods.max(MIN_POOL_PODS));
            assert!(
                pool * pods <= POSTGRES_CONNECTION_BUDGET || pool == 2,
                "{pods} pods x {pool}"
            );
        }
    }
}
