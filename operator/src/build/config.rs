//! The installation's shared configuration: one Secret (generated credentials and the URLs
//! of managed stores) and one ConfigMap (non-secret settings every service reads).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, EnvVarSource, Secret, SecretKeySelector};

use super::{Instance, Resolved, ServiceKind, StoreKind, hash_of};
use crate::crd::MovieBookingSystemSpec;

/// Keys of the generated credentials in `<name>-secrets`.
pub const POSTGRES_PASSWORD: &str = "postgres-password";
pub const REDIS_PASSWORD: &str = "redis-password";
pub const RABBITMQ_PASSWORD: &str = "rabbitmq-password";
pub const JWT_SECRET: &str = "jwt-secret";
/// Database user and names of the managed stores.
pub const DB_USER: &str = "moviebook";
pub const POSTGRES_DB: &str = "cinema";
pub const MONGO_DB: &str = "moviebook";
pub const MONGO_REPLICA_SET: &str = "rs0";

/// Name of the Secret with generated credentials.
pub fn secret_name(inst: &Instance) -> String {
    inst.child("secrets")
}

/// Name of the shared ConfigMap.
pub fn config_map_name(inst: &Instance) -> String {
    inst.child("config")
}

/// In-cluster URL of a managed store (with credentials).
pub fn managed_url(store: StoreKind, inst: &Instance, res: &Resolved) -> String {
    let host = inst.dns(&inst.child(store.name()));
    let port = store.port();
    match store {
        StoreKind::Postgres => format!(
            "postgres://{DB_USER}:{}@{host}:{port}/{POSTGRES_DB}",
            res.postgres_password
        ),
        // The member host must be the name the replica set was initiated with (see stores.rs).
        StoreKind::Mongodb => format!(
            "mongodb://{}-0.{host}:{port}/{MONGO_DB}?replicaSet={MONGO_REPLICA_SET}",
            inst.child(store.name())
        ),
        StoreKind::Redis => format!("redis://:{}@{host}:{port}/0", res.redis_password),
        StoreKind::Rabbitmq => format!(
            "amqp://{DB_USER}:{}@{host}:{port}/%2f",
            res.rabbitmq_password
        ),
    }
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
    if res.jwt_generated {
        data.insert(JWT_SECRET.into(), res.jwt_secret.clone());
    }
    for store in StoreKind::ALL {
        if store.spec(spec).managed.is_some() {
            data.insert(store.url_env().into(), managed_url(store, inst, res));
        }
    }
    let settings = settings(spec, inst);

    let mut parts: Vec<String> = Vec::new();
    parts.extend(data.iter().map(|(k, v)| format!("secret:{k}={v}")));
    parts.extend(settings.iter().map(|(k, v)| format!("config:{k}={v}")));
    parts.extend(
        res.external_urls
            .iter()
            .map(|(k, v)| format!("external:{}={v}", k.name())),
    );
    parts.push(format!("jwt={}", res.jwt_secret));
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
        (
            "CINEMA_GRPC_URL".into(),
            format!(
                "http://{}:9090",
                inst.dns(&inst.child(ServiceKind::Cinema.name()))
            ),
        ),
    ])
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

/// Where a service reads a store's URL: the generated Secret for a managed store, the user's
/// Secret for an external one.
pub fn store_url_env(store: StoreKind, spec: &MovieBookingSystemSpec, inst: &Instance) -> EnvVar {
    match &store.spec(spec).external {
        Some(ext) => secret_env(store.url_env(), &ext.secret_ref.name, &ext.secret_ref.key),
        None => secret_env(store.url_env(), &secret_name(inst), store.url_env()),
    }
}

/// Where a service reads the JWT secret.
pub fn jwt_env(spec: &MovieBookingSystemSpec, inst: &Instance) -> EnvVar {
    match &spec.auth.jwt_secret_ref {
        Some(r) => secret_env("JWT_SECRET", &r.name, &r.key),
        None => secret_env("JWT_SECRET", &secret_name(inst), JWT_SECRET),
    }
}

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
            text(&secret, "DATABASE_URL"),
            "postgres://moviebook:pgpw@demo-postgres.shop.svc:5432/cinema"
        );
        assert_eq!(
            text(&secret, "MONGODB_URL"),
            "mongodb://demo-mongodb-0.demo-mongodb.shop.svc:27017/moviebook?replicaSet=rs0"
        );
        assert_eq!(
            text(&secret, "REDIS_URL"),
            "redis://:redispw@demo-redis.shop.svc:6379/0"
        );
        assert_eq!(
            text(&secret, "RABBITMQ_URL"),
            "amqp://moviebook:rabbitpw@demo-rabbitmq.shop.svc:5672/%2f"
        );
        let data = cm.data.expect("data");
        assert_eq!(data["LOG_FORMAT"], "json");
        assert_eq!(data["JWT_ISSUER"], "moviebook");
        assert_eq!(data["CINEMA_GRPC_URL"], "http://demo-cinema.shop.svc:9090");
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
        let env = store_url_env(StoreKind::Postgres, &mbs.spec, &instance());
        let sel = env
            .value_from
            .and_then(|v| v.secret_key_ref)
            .expect("secret ref");
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("pg", "url"));
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
        assert_ne!(h1, build(&mbs.spec, &instance(), &res).2);
        let mut spec = mbs.spec.clone();
        spec.log_level = "debug".into();
        assert_ne!(h1, build(&spec, &instance(), &resolved()).2);
        let mut res = resolved();
        res.external_urls
            .insert(StoreKind::Redis, "redis://elsewhere".into());
        assert_ne!(h1, build(&mbs.spec, &instance(), &res).2);
    }
}
