//! Managed stores: a one-replica StatefulSet with a PersistentVolumeClaim and a headless
//! Service per store, running the official images.
//!
//! MongoDB runs as a single-member replica set because the services use multi-document
//! transactions, which MongoDB only offers on replica sets. The replica set is initiated by
//! the readiness probe (idempotently), so the pod only becomes ready once it is a writable
//! primary and no separate init Job is needed. `topology: Standalone` runs the server as it is
//! (no `--replSet`, no `mongosh` in the probes: TCP checks), for MongoDB-compatible servers that
//! are their own replica set, such as the SecantusDB stand-in of the local node.
//!
//! Every managed store authenticates each service as its own user. RabbitMQ and Redis load
//! their users from files at start; MongoDB gets them from an init container that applies the
//! users file to a private server on 127.0.0.1 before the real one starts with `--auth` (see
//! `moviebook_grants::mongodb` for why, and [`mongodb_users_script`]).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, ExecAction, KeyToPath, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, Secret, SecretVolumeSource,
    Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use moviebook_grants::rabbitmq::{Access, Account};

use super::config::{
    DB_USER, MONGO_REPLICA_SET, MONGODB_KEYFILE, MONGODB_PASSWORD, POSTGRES_DB, POSTGRES_PASSWORD,
    RABBITMQ_PASSWORD, REDIS_NOTIFICATION_PASSWORD, REDIS_PASSWORD, mongo_database,
    mongodb_clients, mongodb_password_key, plain_env, rabbitmq_password_key, secret_env,
    secret_name,
};
use super::{
    CONFIG_HASH_ANNOTATION, Instance, Resolved, StoreKind, default_resources, hash_of,
    pull_secrets, restricted_container, restricted_pod,
};
use crate::crd::{DataOnDelete, ManagedStore, MongoTopology, MovieBookingSystemSpec};

/// UID of the `postgres`, `mongodb`, `redis` and `rabbitmq` users in the official images.
const STORE_UID: i64 = 999;

/// Where the Redis and RabbitMQ pods find their users and rights ([`access_secret`]).
const ACCESS_DIR: &str = "/etc/moviebook/access";
/// Keys of the store-access Secret: Redis's ACL file, RabbitMQ's definitions and the
/// configuration line that loads them.
pub const REDIS_ACL_KEY: &str = "users.acl";
pub const RABBITMQ_DEFINITIONS_KEY: &str = "definitions.json";
pub const RABBITMQ_CONF_KEY: &str = "moviebook-access.conf";
/// MongoDB's users, as JSON (for the stand-in's `moviebook-mongo-users`) and as a `mongosh`
/// script (for the official image).
pub const MONGODB_USERS_KEY: &str = "mongo-users.json";
pub const MONGODB_USERS_JS_KEY: &str = "mongo-users.js";
/// Where MongoDB's init container finds the replica-set key, and where it leaves the copy
/// mongod reads: mongod refuses a key file that its group can read, and a Secret volume's
/// files belong to root, so the init container copies it as the mongodb user with mode 0400.
const MONGODB_KEY_SOURCE: &str = "/etc/moviebook/mongo-key-source";
const MONGODB_KEY_DIR: &str = "/etc/moviebook/mongo-key";
/// The init container's script: copies the replica-set key (when there is one), then applies
/// the users to the data directory with a server of its own on 127.0.0.1:27018,
/// authentication off, which it stops again. An image with `moviebook-mongo-users` (the
/// SecantusDB stand-in) does that itself; the official image runs `mongod` and `mongosh`.
pub fn mongodb_users_script() -> String {
    let data = data_path(StoreKind::Mongodb);
    format!(
        r#"set -eu
if [ -f {MONGODB_KEY_SOURCE}/keyfile ]; then
  cp {MONGODB_KEY_SOURCE}/keyfile {MONGODB_KEY_DIR}/keyfile
  chmod 0400 {MONGODB_KEY_DIR}/keyfile
fi
if command -v moviebook-mongo-users >/dev/null 2>&1; then
  exec moviebook-mongo-users {data} {ACCESS_DIR}/{MONGODB_USERS_KEY}
elif command -v mongod >/dev/null 2>&1 && command -v mongosh >/dev/null 2>&1; then
  mongod --dbpath {data} --bind_ip 127.0.0.1 --port 27018 --fork --logpath /tmp/moviebook-users.log
  mongosh --quiet --port 27018 --file {ACCESS_DIR}/{MONGODB_USERS_JS_KEY}
  mongod --dbpath {data} --shutdown
else
  echo "managed MongoDB: the image has neither moviebook-mongo-users nor mongod and mongosh, so its users cannot be applied" >&2
  exit 64
fi
"#
    )
}
/// Where RabbitMQ (the official image and the stand-in) reads extra configuration files.
const RABBITMQ_CONF_PATH: &str = "/etc/rabbitmq/conf.d/20-moviebook-access.conf";

/// Name of the Secret with the stores' users and rights.
pub fn access_secret_name(inst: &Instance) -> String {
    inst.child("store-access")
}

/// The files that give each service its own user in the managed Redis and RabbitMQ, with the
/// rights `moviebook-grants` gives it, and the installation's administrator user (the one the
/// probes and a person at `rabbitmqctl` / `redis-cli` use). Only salted hashes of passwords
/// are in them; the passwords stay in `<name>-secrets`. Returns the Secret and a hash of its
/// content, which goes into the two stores' pod templates: new rights restart them, and both
/// load the files at every start. `None` when neither store is managed.
pub fn access_secret(
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    res: &Resolved,
) -> Option<(Secret, String)> {
    let password = |key: &str| res.store_passwords.get(key).cloned().unwrap_or_default();
    // Notification's queue and key prefix as its pods will see them (an override in
    // `services.notification.env` moves its rights along).
    let notification_setting = |name: &str, default: &str| {
        spec.services
            .notification
            .env
            .iter()
            .rev()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
            .unwrap_or_else(|| default.to_string())
    };
    let mut files: Vec<(&str, String)> = Vec::new();
    if spec.redis.managed.is_some() {
        files.push((
            REDIS_ACL_KEY,
            moviebook_grants::redis::acl_file(
                &res.redis_password,
                &password(REDIS_NOTIFICATION_PASSWORD),
                &notification_setting(
                    "NOTIFICATION_REDIS_PREFIX",
                    moviebook_grants::redis::NOTIFICATION_PREFIX,
                ),
            ),
        ));
    }
    if spec.rabbitmq.managed.is_some() {
        let mut accounts = vec![Account {
            user: DB_USER.into(),
            password: res.rabbitmq_password.clone(),
            access: Access::Administrator,
        }];
        accounts.extend(
            moviebook_grants::Service::BROKER_CLIENTS
                .into_iter()
                .map(|who| Account {
                    user: who.name().into(),
                    password: password(&rabbitmq_password_key(who)),
                    access: Access::Granted(match who {
                        moviebook_grants::Service::Notification => {
                            moviebook_grants::rabbitmq::notification(&notification_setting(
                                "NOTIFICATION_QUEUE",
                                moviebook_grants::rabbitmq::NOTIFICATION_QUEUE,
                            ))
                        }
                        other => moviebook_grants::rabbitmq::for_service(other),
                    }),
                }),
        );
        let definitions = moviebook_grants::rabbitmq::definitions(&accounts);
        files.push((
            RABBITMQ_DEFINITIONS_KEY,
            serde_json::to_string_pretty(&definitions).unwrap_or_default(),
        ));
        files.push((
            RABBITMQ_CONF_KEY,
            moviebook_grants::rabbitmq::load_definitions_conf(&format!(
                "{ACCESS_DIR}/{RABBITMQ_DEFINITIONS_KEY}"
            )),
        ));
    }
    if spec.mongodb.managed.is_some() {
        let mut users = vec![moviebook_grants::mongodb::User::administrator(
            DB_USER,
            &password(MONGODB_PASSWORD),
        )];
        users.extend(mongodb_clients().map(|svc| {
            moviebook_grants::mongodb::User::service(
                svc.name(),
                &mongo_database(svc),
                &password(&mongodb_password_key(svc)),
            )
        }));
        files.push((
            MONGODB_USERS_KEY,
            moviebook_grants::mongodb::users_file(&users).to_string(),
        ));
        files.push((
            MONGODB_USERS_JS_KEY,
            moviebook_grants::mongodb::mongosh_script(&users),
        ));
    }
    if files.is_empty() {
        return None;
    }
    let parts: Vec<String> = files.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let hash = hash_of(&refs);
    let secret = Secret {
        metadata: inst.meta(access_secret_name(inst), "config"),
        type_: Some("Opaque".into()),
        data: Some(
            files
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    };
    Some((secret, hash))
}

/// The store-access files one store reads, as a read-only volume of its pod.
fn access_volume(store: StoreKind, inst: &Instance) -> Option<(Volume, Vec<VolumeMount>)> {
    let keys: &[&str] = match store {
        StoreKind::Redis => &[REDIS_ACL_KEY],
        StoreKind::Rabbitmq => &[RABBITMQ_DEFINITIONS_KEY, RABBITMQ_CONF_KEY],
        StoreKind::Mongodb => &[MONGODB_USERS_KEY, MONGODB_USERS_JS_KEY],
        StoreKind::Postgres => return None,
    };
    let volume = Volume {
        name: "access".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(access_secret_name(inst)),
            items: Some(
                keys.iter()
                    .map(|k| KeyToPath {
                        key: (*k).into(),
                        path: (*k).into(),
                        mode: None,
                    })
                    .collect(),
            ),
            // Readable by the store's group (fsGroup) only.
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Volume::default()
    };
    let mut mounts = vec![VolumeMount {
        name: "access".into(),
        mount_path: ACCESS_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    if store == StoreKind::Rabbitmq {
        mounts.push(VolumeMount {
            name: "access".into(),
            mount_path: RABBITMQ_CONF_PATH.into(),
            sub_path: Some(RABBITMQ_CONF_KEY.into()),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    Some((volume, mounts))
}

/// The replica set's key: the Secret's copy, readable by the store's group, and the
/// scratch directory the init container copies it into for mongod (mode 0400, owned by the
/// mongodb user). Returns the volumes, the source mount and the copy's mount.
fn mongodb_key_volumes(inst: &Instance) -> (Vec<Volume>, VolumeMount, VolumeMount) {
    let source = Volume {
        name: "mongo-key-source".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name(inst)),
            items: Some(vec![KeyToPath {
                key: MONGODB_KEYFILE.into(),
                path: "keyfile".into(),
                mode: None,
            }]),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Volume::default()
    };
    let copy = Volume {
        name: "mongo-key".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    };
    (
        vec![source, copy],
        VolumeMount {
            name: "mongo-key-source".into(),
            mount_path: MONGODB_KEY_SOURCE.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "mongo-key".into(),
            mount_path: MONGODB_KEY_DIR.into(),
            ..VolumeMount::default()
        },
    )
}

/// Headless Service giving the store pod a stable DNS name. Not-ready addresses are published
/// because MongoDB must resolve its own member name before it can become ready.
pub fn service(store: StoreKind, inst: &Instance) -> Service {
    let component = store.name();
    Service {
        metadata: inst.meta(inst.child(component), component),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(inst.selector(component)),
            ports: Some(vec![ServicePort {
                name: Some(component.into()),
                port: store.port(),
                target_port: Some(IntOrString::Int(store.port())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The store's StatefulSet. `access_hash` is the hash of [`access_secret`]'s content (Redis
/// and RabbitMQ load it at start, so a change must restart them).
pub fn stateful_set(
    store: StoreKind,
    managed: &ManagedStore,
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    access_hash: &str,
) -> StatefulSet {
    let component = store.name();
    let name = inst.child(component);
    let image = managed
        .image
        .clone()
        .unwrap_or_else(|| store.default_image().to_string());
    let data_path = data_path(store);
    let mut mounts = vec![VolumeMount {
        name: "data".into(),
        mount_path: data_path.into(),
        ..VolumeMount::default()
    }];
    let mut volumes = Vec::new();
    for (i, path) in scratch_paths(store).iter().enumerate() {
        let vol = format!("scratch-{i}");
        mounts.push(VolumeMount {
            name: vol.clone(),
            mount_path: (*path).into(),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: vol,
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    }
    let access = access_volume(store, inst);
    let standalone = store == StoreKind::Mongodb
        && managed.topology.unwrap_or_default() == MongoTopology::Standalone;
    let mut init_containers = Vec::new();
    match &access {
        Some((volume, access_mounts)) if store == StoreKind::Mongodb => {
            // Only the init container reads the users (with their passwords).
            volumes.push(volume.clone());
            let mut init_mounts = mounts.clone();
            init_mounts.extend(access_mounts.iter().cloned());
            if !standalone {
                let (key_volumes, source, copy) = mongodb_key_volumes(inst);
                volumes.extend(key_volumes);
                init_mounts.push(source);
                init_mounts.push(copy.clone());
                mounts.push(VolumeMount {
                    read_only: Some(true),
                    ..copy
                });
            }
            init_containers.push(Container {
                name: "users".into(),
                image: Some(image.clone()),
                image_pull_policy: Some(spec.image_pull_policy.as_str().into()),
                command: Some(vec!["sh".into(), "-c".into(), mongodb_users_script()]),
                env: Some(vec![plain_env("HOME", "/tmp")]),
                resources: Some(
                    managed
                        .resources
                        .clone()
                        .unwrap_or_else(|| default_resources("100m", "256Mi", "1", "1Gi")),
                ),
                security_context: Some(restricted_container()),
                volume_mounts: Some(init_mounts),
                ..Container::default()
            });
        }
        Some((volume, access_mounts)) => {
            volumes.push(volume.clone());
            mounts.extend(access_mounts.iter().cloned());
        }
        None => {}
    }
    let mut security = restricted_container();
    if store == StoreKind::Rabbitmq {
        // The RabbitMQ image writes its generated configuration and Erlang cookie under
        // /etc/rabbitmq and /var/lib/rabbitmq at start-up; it cannot run read-only.
        security.read_only_root_filesystem = Some(false);
    }
    let (command, args, env) = process(store, inst, standalone);
    let (readiness, liveness) = if standalone {
        (
            tcp_probe(store.port(), 5, 5, 6),
            tcp_probe(store.port(), 30, 10, 6),
        )
    } else {
        (
            exec_probe(readiness_command(store, inst), 10, 5, 6),
            exec_probe(liveness_command(store), 30, 10, 6),
        )
    };
    let container = Container {
        name: component.into(),
        image: Some(image),
        image_pull_policy: Some(spec.image_pull_policy.as_str().into()),
        command,
        args,
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(component.into()),
            container_port: store.port(),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(readiness),
        liveness_probe: Some(liveness),
        resources: Some(
            managed
                .resources
                .clone()
                .unwrap_or_else(|| default_resources("100m", "256Mi", "1", "1Gi")),
        ),
        security_context: Some(security),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let storage = managed
        .storage
        .clone()
        .unwrap_or_else(|| Quantity("1Gi".into()));
    let retention = match spec.data_on_delete {
        DataOnDelete::Retain => "Retain",
        DataOnDelete::Delete => "Delete",
    };
    // PVCs are labelled like everything else so that `dataOnDelete: Delete` can find them.
    let pvc_labels = inst.labels(component);
    StatefulSet {
        metadata: inst.meta(name.clone(), component),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name),
            selector: LabelSelector {
                match_labels: Some(inst.selector(component)),
                ..LabelSelector::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(inst.labels(component)),
                    annotations: access.is_some().then(|| {
                        BTreeMap::from([(
                            CONFIG_HASH_ANNOTATION.to_string(),
                            access_hash.to_string(),
                        )])
                    }),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    containers: vec![container],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    security_context: Some(restricted_pod(STORE_UID)),
                    image_pull_secrets: pull_secrets(spec),
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(30),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(pvc_labels),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: managed.storage_class.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([("storage".into(), storage)])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// Keeps the volume claim templates of StatefulSets that already exist: Kubernetes forbids
/// changing them, so applying a new size or class would fail every reconcile. Returns the
/// names of the StatefulSets whose spec asked for a different size or class (resizing is a
/// manual PVC expansion; the operator reports it instead of failing).
pub fn keep_existing_claims(desired: &mut [StatefulSet], observed: &[StatefulSet]) -> Vec<String> {
    let key = |t: &PersistentVolumeClaim| {
        let spec = t.spec.as_ref();
        (
            spec.and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map(|q| q.0.clone()),
            spec.and_then(|s| s.storage_class_name.clone()),
        )
    };
    let mut changed = Vec::new();
    for sts in desired.iter_mut() {
        let name = sts.metadata.name.clone().unwrap_or_default();
        let Some(existing) = observed
            .iter()
            .find(|o| o.metadata.name.as_deref() == Some(name.as_str()))
            .and_then(|o| o.spec.as_ref())
            .and_then(|s| s.volume_claim_templates.clone())
        else {
            continue;
        };
        let Some(spec) = sts.spec.as_mut() else {
            continue;
        };
        let wanted: Vec<_> = spec
            .volume_claim_templates
            .iter()
            .flatten()
            .map(key)
            .collect();
        let have: Vec<_> = existing.iter().map(key).collect();
        if wanted != have {
            changed.push(name);
        }
        spec.volume_claim_templates = Some(
            existing
                .into_iter()
                .map(|mut t| {
                    t.status = None;
                    t
                })
                .collect(),
        );
    }
    changed
}

fn data_path(store: StoreKind) -> &'static str {
    match store {
        StoreKind::Postgres => "/var/lib/postgresql/data",
        StoreKind::Mongodb => "/data/db",
        StoreKind::Redis => "/data",
        StoreKind::Rabbitmq => "/var/lib/rabbitmq",
    }
}

/// Writable directories each image needs besides its data volume (the root is read-only).
fn scratch_paths(store: StoreKind) -> &'static [&'static str] {
    match store {
        StoreKind::Postgres => &["/var/run/postgresql", "/tmp"],
        StoreKind::Mongodb => &["/tmp", "/data/configdb"],
        StoreKind::Redis => &["/tmp"],
        StoreKind::Rabbitmq => &["/tmp"],
    }
}

type Process = (
    Option<Vec<String>>,
    Option<Vec<String>>,
    Vec<k8s_openapi::api::core::v1::EnvVar>,
);

/// Command, arguments and environment of the store process.
fn process(store: StoreKind, inst: &Instance, standalone: bool) -> Process {
    let secret = secret_name(inst);
    match store {
        StoreKind::Postgres => (
            None,
            None,
            vec![
                plain_env("POSTGRES_USER", DB_USER),
                secret_env("POSTGRES_PASSWORD", &secret, POSTGRES_PASSWORD),
                plain_env("POSTGRES_DB", POSTGRES_DB),
                plain_env("PGDATA", "/var/lib/postgresql/data/pgdata"),
            ],
        ),
        StoreKind::Mongodb if standalone => (
            None,
            Some(vec!["--bind_ip_all".into(), "--auth".into()]),
            vec![plain_env("HOME", "/tmp")],
        ),
        StoreKind::Mongodb => (
            None,
            Some(vec![
                "--replSet".into(),
                MONGO_REPLICA_SET.into(),
                "--bind_ip_all".into(),
                "--auth".into(),
                "--keyFile".into(),
                format!("{MONGODB_KEY_DIR}/keyfile"),
            ]),
            vec![
                // mongosh (run by the probe) writes its history under $HOME.
                plain_env("HOME", "/tmp"),
                // The probe initiates the replica set as the administrator.
                secret_env("MONGODB_ADMIN_PASSWORD", &secret, MONGODB_PASSWORD),
            ],
        ),
        StoreKind::Redis => (
            None,
            Some(vec![
                "redis-server".into(),
                "--appendonly".into(),
                "yes".into(),
                "--dir".into(),
                "/data".into(),
                // The users (`default` with REDIS_PASSWORD, notification with its rights).
                "--aclfile".into(),
                format!("{ACCESS_DIR}/{REDIS_ACL_KEY}"),
            ]),
            vec![secret_env("REDIS_PASSWORD", &secret, REDIS_PASSWORD)],
        ),
        StoreKind::Rabbitmq => (
            None,
            None,
            vec![
                plain_env("RABBITMQ_DEFAULT_USER", DB_USER),
                secret_env("RABBITMQ_DEFAULT_PASS", &secret, RABBITMQ_PASSWORD),
            ],
        ),
    }
}

/// Host name the MongoDB replica-set member is initiated with; clients connect to it.
pub fn mongo_member_host(inst: &Instance) -> String {
    let svc = inst.child(StoreKind::Mongodb.name());
    format!("{svc}-0.{}:{}", inst.dns(&svc), StoreKind::Mongodb.port())
}

fn readiness_command(store: StoreKind, inst: &Instance) -> Vec<String> {
    match store {
        StoreKind::Postgres => sh(&format!(
            "pg_isready -U {DB_USER} -d {POSTGRES_DB} -h 127.0.0.1"
        )),
        // Idempotent: initiates the replica set on first use, then only checks that this
        // member is a writable primary.
        StoreKind::Mongodb => sh(&format!(
            "mongosh --quiet -u {DB_USER} -p \"$MONGODB_ADMIN_PASSWORD\" --authenticationDatabase admin --eval \"try {{ rs.status() }} catch (e) {{ rs.initiate({{_id: '{MONGO_REPLICA_SET}', members: [{{_id: 0, host: '{}'}}]}}) }}; if (!db.hello().isWritablePrimary) {{ quit(1) }}\"",
            mongo_member_host(inst)
        )),
        StoreKind::Redis => {
            sh("redis-cli -a \"$REDIS_PASSWORD\" --no-auth-warning ping | grep -q PONG")
        }
        StoreKind::Rabbitmq => sh("rabbitmq-diagnostics -q check_port_connectivity"),
    }
}

fn liveness_command(store: StoreKind) -> Vec<String> {
    match store {
        StoreKind::Postgres => sh(&format!("pg_isready -U {DB_USER} -h 127.0.0.1")),
        StoreKind::Mongodb => vec![
            "mongosh".into(),
            "--quiet".into(),
            "--eval".into(),
            "db.adminCommand('ping').ok".into(),
        ],
        StoreKind::Redis => {
            sh("redis-cli -a \"$REDIS_PASSWORD\" --no-auth-warning ping | grep -q PONG")
        }
        StoreKind::Rabbitmq => sh("rabbitmq-diagnostics -q ping"),
    }
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// A TCP connect check: all a standalone MongoDB-compatible server is asked (its image need not
/// ship `mongosh`); the services' own `/ready` checks that it answers commands.
fn tcp_probe(port: i32, initial_delay: i32, period: i32, failures: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(port),
            ..TCPSocketAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn exec_probe(command: Vec<String>, initial_delay: i32, period: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(command),
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(10),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::*;

    fn container(sts: &StatefulSet) -> &Container {
        &sts.spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .as_ref()
            .expect("pod")
            .containers[0]
    }

    /// The config-hash annotation of a StatefulSet's pod template.
    fn pod_hash(sts: &StatefulSet) -> String {
        sts.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned())
            .expect("config-hash annotation")
    }

    fn access_text(secret: &Secret, key: &str) -> String {
        String::from_utf8(secret.data.as_ref().expect("data")[key].0.clone()).expect("utf8")
    }

    #[test]
    fn redis_and_rabbitmq_load_each_services_own_user_from_the_access_secret() {
        let mbs = sample();
        let res = resolved();
        let (secret, hash) = access_secret(&mbs.spec, &instance(), &res).expect("managed");
        assert_eq!(secret.metadata.name.as_deref(), Some("demo-store-access"));
        let acl = access_text(&secret, REDIS_ACL_KEY);
        assert!(acl.contains("user notification on #") && acl.contains("~notification:*"));
        let defs: serde_json::Value =
            serde_json::from_str(&access_text(&secret, RABBITMQ_DEFINITIONS_KEY)).expect("json");
        let users: Vec<&str> = defs["users"]
            .as_array()
            .expect("users")
            .iter()
            .filter_map(|u| u["name"].as_str())
            .collect();
        assert_eq!(users, ["moviebook", "booking", "payment", "notification"]);
        assert_eq!(
            access_text(&secret, RABBITMQ_CONF_KEY),
            "load_definitions = /etc/moviebook/access/definitions.json\n"
        );
        for k in [REDIS_ACL_KEY, RABBITMQ_DEFINITIONS_KEY, RABBITMQ_CONF_KEY] {
            let text = access_text(&secret, k);
            for pw in res.store_passwords.values().chain([&res.redis_password]) {
                assert!(!text.contains(pw.as_str()), "{k} holds a password");
            }
        }

        let redis = stateful_set(
            StoreKind::Redis,
            &Default::default(),
            &mbs.spec,
            &instance(),
            &hash,
        );
        let args = container(&redis).args.clone().expect("args");
        assert!(
            args.windows(2)
                .any(|w| w == ["--aclfile", "/etc/moviebook/access/users.acl"])
        );
        assert!(
            !args.iter().any(|a| a == "--requirepass"),
            "the ACL file has the users"
        );
        let rabbit = stateful_set(
            StoreKind::Rabbitmq,
            &Default::default(),
            &mbs.spec,
            &instance(),
            &hash,
        );
        let mounts = container(&rabbit).volume_mounts.clone().expect("mounts");
        assert!(mounts.iter().any(|m| m.mount_path == RABBITMQ_CONF_PATH
            && m.sub_path.as_deref() == Some(RABBITMQ_CONF_KEY)));
        for sts in [&redis, &rabbit] {
            assert_eq!(pod_hash(sts), hash, "new rights restart the store");
        }
        for store in [StoreKind::Postgres, StoreKind::Mongodb] {
            let sts = stateful_set(store, &Default::default(), &mbs.spec, &instance(), &hash);
            // (MongoDB's init container reads them: mongodb_authenticates_each_service…)
            assert!(
                !container(&sts)
                    .volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.name == "access"),
                "{store:?} gets no access files"
            );
        }

        // An override of notification's queue or key prefix moves its rights along.
        let mut moved = mbs.spec.clone();
        moved.services.notification.env = vec![
            crate::build::config::plain_env("NOTIFICATION_QUEUE", "notes.q"),
            crate::build::config::plain_env("NOTIFICATION_REDIS_PREFIX", "notes"),
        ];
        let (moved_secret, _) = access_secret(&moved, &instance(), &res).expect("managed");
        assert!(access_text(&moved_secret, REDIS_ACL_KEY).contains(" ~notes:* "));
        assert!(
            access_text(&moved_secret, RABBITMQ_DEFINITIONS_KEY).contains(r"notes\\.q\\.dlq"),
            "{}",
            access_text(&moved_secret, RABBITMQ_DEFINITIONS_KEY)
        );

        // A changed password changes the files and so the hash; external stores need none.
        let mut other = res.clone();
        other
            .store_passwords
            .insert("rabbitmq-password-payment".into(), "new".into());
        let (_, hash2) = access_secret(&mbs.spec, &instance(), &other).expect("managed");
        assert_ne!(hash, hash2);
        let mut external = mbs.spec.clone();
        for store in [
            &mut external.redis,
            &mut external.rabbitmq,
            &mut external.mongodb,
        ] {
            *store = serde_json::from_value(
                serde_json::json!({"external": {"secretRef": {"name": "x", "key": "url"}}}),
            )
            .expect("store");
        }
        assert!(access_secret(&external, &instance(), &res).is_none());
    }

    #[test]
    fn every_store_gets_official_image_volume_and_probes() {
        let mbs = sample();
        for store in StoreKind::ALL {
            let sts = stateful_set(store, &Default::default(), &mbs.spec, &instance(), "hash");
            let c = container(&sts);
            assert_eq!(c.image.as_deref(), Some(store.default_image()));
            assert!(
                c.readiness_probe.is_some() && c.liveness_probe.is_some(),
                "{store:?}"
            );
            let spec = sts.spec.as_ref().expect("spec");
            assert_eq!(
                spec.service_name.as_deref(),
                Some(format!("demo-{}", store.name()).as_str())
            );
            let pvc = &spec.volume_claim_templates.as_ref().expect("pvc")[0];
            assert_eq!(
                pvc.spec
                    .as_ref()
                    .and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .expect("req")["storage"]
                    .0,
                "1Gi"
            );
            assert_eq!(
                pvc.metadata.labels.as_ref().expect("labels")["app.kubernetes.io/instance"],
                "demo"
            );
            let sec = c.security_context.as_ref().expect("security");
            assert_eq!(sec.run_as_non_root, Some(true));
            assert_eq!(sec.allow_privilege_escalation, Some(false));
            assert_eq!(
                spec.persistent_volume_claim_retention_policy
                    .as_ref()
                    .and_then(|p| p.when_deleted.as_deref()),
                Some("Retain")
            );
        }
    }

    #[test]
    fn mongodb_is_a_replica_set_initiated_by_its_probe() {
        let mbs = sample();
        let sts = stateful_set(
            StoreKind::Mongodb,
            &Default::default(),
            &mbs.spec,
            &instance(),
            "hash",
        );
        let c = container(&sts);
        assert_eq!(
            c.args.as_deref(),
            Some(
                &[
                    "--replSet".to_string(),
                    "rs0".into(),
                    "--bind_ip_all".into(),
                    "--auth".into(),
                    "--keyFile".into(),
                    "/etc/moviebook/mongo-key/keyfile".into(),
                ][..]
            )
        );
        let cmd = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.exec.as_ref())
            .and_then(|e| e.command.clone())
            .expect("cmd");
        let script = cmd.last().expect("script");
        assert!(script.contains("rs.initiate"), "{script}");
        assert!(
            script.contains("demo-mongodb-0.demo-mongodb.shop.svc:27017"),
            "{script}"
        );
        assert!(script.contains("isWritablePrimary"), "{script}");
        assert!(
            script.contains(
                "-u moviebook -p \"$MONGODB_ADMIN_PASSWORD\" --authenticationDatabase admin"
            ),
            "the probe initiates the set as the administrator: {script}"
        );
        // The key file mongod reads is the init container's 0400 copy, in memory.
        let pod = sts
            .spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .clone()
            .expect("pod");
        let init = &pod.init_containers.as_ref().expect("init")[0];
        let init_paths: Vec<&str> = init
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(
            init_paths.contains(&"/etc/moviebook/mongo-key-source"),
            "{init_paths:?}"
        );
        assert!(
            init_paths.contains(&"/etc/moviebook/mongo-key"),
            "{init_paths:?}"
        );
        assert!(
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path == "/etc/moviebook/mongo-key" && m.read_only == Some(true))
        );
        let key_source = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "mongo-key-source")
            .and_then(|v| v.secret.clone())
            .expect("key source");
        assert_eq!(key_source.secret_name.as_deref(), Some("demo-secrets"));
        assert_eq!(key_source.items.expect("items")[0].key, MONGODB_KEYFILE);
    }

    #[test]
    fn mongodb_authenticates_each_service_as_its_own_user() {
        let mbs = sample();
        let res = resolved();
        let (secret, hash) = access_secret(&mbs.spec, &instance(), &res).expect("managed");
        let users: serde_json::Value =
            serde_json::from_str(&access_text(&secret, MONGODB_USERS_KEY)).expect("json");
        let summary: Vec<String> = users["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|u| {
                format!(
                    "{}@{} {}@{} {}",
                    u["user"].as_str().unwrap_or_default(),
                    u["db"].as_str().unwrap_or_default(),
                    u["roles"][0]["role"].as_str().unwrap_or_default(),
                    u["roles"][0]["db"].as_str().unwrap_or_default(),
                    u["pwd"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "moviebook@admin root@admin pw-mongodb-password",
                "user@moviebook_user readWrite@moviebook_user pw-mongodb-password-user",
                "payment@moviebook_payment readWrite@moviebook_payment pw-mongodb-password-payment",
                "notification@moviebook_notification readWrite@moviebook_notification pw-mongodb-password-notification",
                "booking@moviebook_booking readWrite@moviebook_booking pw-mongodb-password-booking",
            ]
        );
        assert!(access_text(&secret, MONGODB_USERS_JS_KEY).contains("pw-mongodb-password-booking"));

        for topology in [MongoTopology::ReplicaSet, MongoTopology::Standalone] {
            let managed = ManagedStore {
                topology: Some(topology),
                ..ManagedStore::default()
            };
            let sts = stateful_set(StoreKind::Mongodb, &managed, &mbs.spec, &instance(), &hash);
            assert_eq!(
                pod_hash(&sts),
                hash,
                "new users restart MongoDB, whose init container applies them"
            );
            let pod = sts
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .expect("pod");
            let init = &pod.init_containers.as_ref().expect("init")[0];
            assert_eq!(init.name, "users");
            assert_eq!(init.image, container(&sts).image);
            let script = init.command.as_ref().expect("command").join(" ");
            assert!(
                script.contains(
                    "moviebook-mongo-users /data/db /etc/moviebook/access/mongo-users.json"
                ),
                "{script}"
            );
            assert!(
                script.contains("--bind_ip 127.0.0.1 --port 27018"),
                "{script}"
            );
            assert!(
                init.volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.name == "access"),
                "the init container reads the users"
            );
            assert!(
                !container(&sts)
                    .volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.name == "access"),
                "the server itself never sees the passwords file"
            );
            assert!(container(&sts).args.iter().flatten().any(|a| a == "--auth"));
        }
    }

    #[test]
    fn standalone_mongodb_has_no_replica_set_and_tcp_probes() {
        let mbs = sample();
        let managed = ManagedStore {
            image: Some("moviebook.local/mongo-standin-secantusdb:0.7.0b3".into()),
            topology: Some(MongoTopology::Standalone),
            ..ManagedStore::default()
        };
        let sts = stateful_set(StoreKind::Mongodb, &managed, &mbs.spec, &instance(), "hash");
        let c = container(&sts);
        assert_eq!(
            c.args.as_deref(),
            Some(&["--bind_ip_all".to_string(), "--auth".into()][..])
        );
        assert!(
            !c.env
                .iter()
                .flatten()
                .any(|e| e.name == "MONGODB_ADMIN_PASSWORD"),
            "TCP probes need no administrator"
        );
        for probe in [&c.readiness_probe, &c.liveness_probe] {
            let p = probe.as_ref().expect("probe");
            assert!(
                p.exec.is_none(),
                "no mongosh in a standalone server's image"
            );
            assert_eq!(
                p.tcp_socket.as_ref().map(|t| t.port.clone()),
                Some(IntOrString::Int(27017))
            );
        }
        // the topology means nothing to the other stores
        let pg = stateful_set(
            StoreKind::Postgres,
            &managed,
            &mbs.spec,
            &instance(),
            "hash",
        );
        assert!(
            container(&pg)
                .readiness_probe
                .as_ref()
                .and_then(|p| p.exec.as_ref())
                .is_some()
        );
    }

    #[test]
    fn storage_settings_and_delete_policy_are_honoured() {
        let mut mbs = sample();
        mbs.spec.data_on_delete = DataOnDelete::Delete;
        let managed = ManagedStore {
            image: Some("postgres:16".into()),
            storage: Some(Quantity("5Gi".into())),
            storage_class: Some("fast".into()),
            resources: None,
            topology: None,
        };
        let sts = stateful_set(
            StoreKind::Postgres,
            &managed,
            &mbs.spec,
            &instance(),
            "hash",
        );
        assert_eq!(container(&sts).image.as_deref(), Some("postgres:16"));
        let spec = sts.spec.expect("spec");
        let pvc = spec
            .volume_claim_templates
            .expect("pvc")
            .remove(0)
            .spec
            .expect("spec");
        assert_eq!(pvc.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            pvc.resources.and_then(|r| r.requests).expect("req")["storage"].0,
            "5Gi"
        );
        assert_eq!(
            spec.persistent_volume_claim_retention_policy
                .and_then(|p| p.when_deleted),
            Some("Delete".into())
        );
    }

    #[test]
    fn existing_claim_templates_are_kept_and_changes_reported() {
        let mbs = sample();
        let running = stateful_set(
            StoreKind::Redis,
            &Default::default(),
            &mbs.spec,
            &instance(),
            "hash",
        );
        let bigger = ManagedStore {
            storage: Some(Quantity("9Gi".into())),
            ..ManagedStore::default()
        };
        let mut desired = vec![stateful_set(
            StoreKind::Redis,
            &bigger,
            &mbs.spec,
            &instance(),
            "hash",
        )];
        let changed = keep_existing_claims(&mut desired, std::slice::from_ref(&running));
        assert_eq!(changed, ["demo-redis"]);
        assert_eq!(
            desired[0]
                .spec
                .as_ref()
                .and_then(|s| s.volume_claim_templates.clone()),
            running
                .spec
                .as_ref()
                .and_then(|s| s.volume_claim_templates.clone())
        );
        // unchanged or new StatefulSets: nothing reported, new ones keep their templates
        let mut same = vec![running.clone()];
        assert!(keep_existing_claims(&mut same, std::slice::from_ref(&running)).is_empty());
        let mut fresh = vec![stateful_set(
            StoreKind::Redis,
            &bigger,
            &mbs.spec,
            &instance(),
            "hash",
        )];
        assert!(keep_existing_claims(&mut fresh, &[]).is_empty());
        assert_eq!(
            fresh[0]
                .spec
                .as_ref()
                .and_then(|s| s.volume_claim_templates.as_ref())
                .and_then(|v| v[0].spec.as_ref())
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .map(|r| r["storage"].0.clone()),
            Some("9Gi".into())
        );
    }

    #[test]
    fn headless_service_publishes_not_ready_addresses() {
        let svc = service(StoreKind::Mongodb, &instance());
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.ports.expect("ports")[0].port, 27017);
    }
}
