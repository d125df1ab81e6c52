//! Pure builders: from the validated spec (plus what was read from the cluster) to every
//! desired Kubernetes object. Nothing here does I/O, so most behaviour is tested without an
//! API server.
//!
//! One module per component family: [`config`] (Secrets, ConfigMap), [`stores`] (managed
//! StatefulSets), [`migrations`] (Jobs), [`sample`] (the sample-data Job), [`services`]
//! (Deployments, Services, HPAs, PDBs), [`gateway`] (Kong, Ingress or the public Services) and
//! [`network`] (NetworkPolicies). [`build`] assembles them into a [`Desired`] set whose stages
//! are applied in dependency order.

pub mod config;
pub mod gateway;
pub mod migrations;
pub mod network;
pub mod sample;
pub mod services;
pub mod stores;
pub mod tokens;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, PodSecurityContext, ResourceRequirements, SeccompProfile, Secret,
    SecurityContext, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};

use crate::crd::{GatewayType, MigrationState, MovieBookingSystemSpec};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "moviebook-operator";
/// `app.kubernetes.io/managed-by` value; together with `instance` it selects what may be pruned.
pub const MANAGED_BY: &str = "moviebook-operator";
/// `app.kubernetes.io/part-of` value.
pub const PART_OF: &str = "moviebook";
/// Pod-template annotation carrying the hash of the configuration a pod consumes, so that a
/// change of a Secret or ConfigMap (which Kubernetes does not roll by itself) rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "moviebook.io/config-hash";
/// Annotation on migration Jobs: the resource generation that created them. A failed Job is
/// deleted and retried only once the spec changed past that generation.
pub const GENERATION_ANNOTATION: &str = "moviebook.io/generation";

/// The five services, in a fixed order (the order of objects in every list and test).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKind {
    User,
    Cinema,
    Payment,
    Notification,
    Booking,
}

impl ServiceKind {
    pub const ALL: [ServiceKind; 5] = [
        ServiceKind::User,
        ServiceKind::Cinema,
        ServiceKind::Payment,
        ServiceKind::Notification,
        ServiceKind::Booking,
    ];

    /// Short name, used in object names and as the `component` label.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::User => "user",
            ServiceKind::Cinema => "cinema",
            ServiceKind::Payment => "payment",
            ServiceKind::Notification => "notification",
            ServiceKind::Booking => "booking",
        }
    }

    /// Binary (and image) name fixed by docs/architecture.md.
    pub fn binary(self) -> String {
        format!("{}-service", self.name())
    }

    /// HTTP port (REST/GraphQL plus /health, /ready and /metrics).
    pub fn http_port(self) -> i32 {
        match self {
            ServiceKind::User => 8001,
            ServiceKind::Cinema => 8002,
            ServiceKind::Payment => 8003,
            ServiceKind::Notification => 8004,
            ServiceKind::Booking => 8010,
        }
    }

    /// gRPC port, only cinema has one.
    pub fn grpc_port(self) -> Option<i32> {
        (self == ServiceKind::Cinema).then_some(9090)
    }

    /// The stores this service talks to: its pods get their URLs, and the network policies let
    /// only these pods reach them.
    pub fn stores(self) -> &'static [StoreKind] {
        match self {
            ServiceKind::Cinema => &[StoreKind::Postgres],
            ServiceKind::Notification => {
                &[StoreKind::Mongodb, StoreKind::Redis, StoreKind::Rabbitmq]
            }
            ServiceKind::Payment | ServiceKind::Booking => {
                &[StoreKind::Mongodb, StoreKind::Rabbitmq]
            }
            ServiceKind::User => &[StoreKind::Mongodb],
        }
    }

    /// Who this service is in the stores it shares with others (its own RabbitMQ and Redis
    /// user, with the rights `moviebook-grants` gives it); `None` for services that share none.
    pub fn grantee(self) -> Option<moviebook_grants::Service> {
        match self {
            ServiceKind::Booking => Some(moviebook_grants::Service::Booking),
            ServiceKind::Payment => Some(moviebook_grants::Service::Payment),
            ServiceKind::Notification => Some(moviebook_grants::Service::Notification),
            ServiceKind::User | ServiceKind::Cinema => None,
        }
    }

    pub fn spec(self, spec: &MovieBookingSystemSpec) -> &crate::crd::ServiceSpec {
        match self {
            ServiceKind::User => &spec.services.user,
            ServiceKind::Cinema => &spec.services.cinema,
            ServiceKind::Payment => &spec.services.payment,
            ServiceKind::Notification => &spec.services.notification,
            ServiceKind::Booking => &spec.services.booking,
        }
    }
}

/// The four backing stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreKind {
    Postgres,
    Mongodb,
    Redis,
    Rabbitmq,
}

impl StoreKind {
    pub const ALL: [StoreKind; 4] = [
        StoreKind::Postgres,
        StoreKind::Mongodb,
        StoreKind::Redis,
        StoreKind::Rabbitmq,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Postgres => "postgres",
            StoreKind::Mongodb => "mongodb",
            StoreKind::Redis => "redis",
            StoreKind::Rabbitmq => "rabbitmq",
        }
    }

    /// The official image docs/architecture.md names.
    pub fn default_image(self) -> &'static str {
        match self {
            StoreKind::Postgres => "postgres:15",
            StoreKind::Mongodb => "mongo:7.0",
            StoreKind::Redis => "redis:7.2",
            StoreKind::Rabbitmq => "rabbitmq:3.12-management",
        }
    }

    pub fn port(self) -> i32 {
        match self {
            StoreKind::Postgres => 5432,
            StoreKind::Mongodb => 27017,
            StoreKind::Redis => 6379,
            StoreKind::Rabbitmq => 5672,
        }
    }

    /// The environment variable through which services receive this store's URL.
    pub fn url_env(self) -> &'static str {
        match self {
            StoreKind::Postgres => "DATABASE_URL",
            StoreKind::Mongodb => "MONGODB_URL",
            StoreKind::Redis => "REDIS_URL",
            StoreKind::Rabbitmq => "RABBITMQ_URL",
        }
    }

    pub fn spec(self, spec: &MovieBookingSystemSpec) -> &crate::crd::StoreSpec {
        match self {
            StoreKind::Postgres => &spec.postgres,
            StoreKind::Mongodb => &spec.mongodb,
            StoreKind::Redis => &spec.redis,
            StoreKind::Rabbitmq => &spec.rabbitmq,
        }
    }
}

/// Identity of the resource being reconciled, shared by every builder.
#[derive(Clone, Debug)]
pub struct Instance {
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    pub generation: i64,
}

impl Instance {
    /// Name of a child object: `<instance>-<suffix>`.
    pub fn child(&self, suffix: &str) -> String {
        format!("{}-{}", self.name, suffix)
    }

    /// Recommended labels (`app.kubernetes.io/*`) of a component. `instance` +
    /// `managed-by` select everything the operator may prune.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".into(), component.to_string()),
            ("app.kubernetes.io/instance".into(), self.name.clone()),
            ("app.kubernetes.io/component".into(), component.to_string()),
            ("app.kubernetes.io/part-of".into(), PART_OF.into()),
            ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
        ])
    }

    /// Labels that select the pods of a component (a stable subset of [`Self::labels`]:
    /// selectors are immutable, so they never contain anything that may change).
    pub fn selector(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".into(), component.to_string()),
            ("app.kubernetes.io/instance".into(), self.name.clone()),
        ])
    }

    /// Label selector string of everything this instance manages.
    pub fn managed_selector(&self) -> String {
        format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/managed-by={}",
            self.name, MANAGED_BY
        )
    }

    /// Object metadata with labels and the controller owner reference.
    pub fn meta(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    /// In-cluster DNS name of a Service of this instance.
    pub fn dns(&self, service: &str) -> String {
        format!("{}.{}.svc", service, self.namespace)
    }
}

/// Values the builders need that come from the cluster rather than from the spec: generated
/// credentials, the content of referenced Secrets and the state of running workloads.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    /// Generated passwords (kept in `<name>-secrets` and reused on every reconcile).
    pub postgres_password: String,
    pub redis_password: String,
    pub rabbitmq_password: String,
    /// Generated passwords of the services' own users in the managed RabbitMQ and Redis, by
    /// their key in `<name>-secrets` ([`config::store_password_keys`]).
    pub store_passwords: BTreeMap<String, String>,
    /// The JWT secret: from `auth.jwtSecretRef`, or generated.
    pub jwt_secret: String,
    /// Whether `jwt_secret` was generated (and so must be written into `<name>-secrets`).
    pub jwt_generated: bool,
    /// Booking's ticket-signing seed (base64 of 32 bytes), generated once and kept.
    pub ticket_signing_key: String,
    /// The user service's token-signing key (PKCS#8 PEM): from `auth.userTokenKeyRef`, or
    /// generated once and kept.
    pub user_token_signing_key: String,
    /// Whether `user_token_signing_key` was generated (and so lives in `<name>-secrets`).
    pub user_token_key_generated: bool,
    /// The keys user tokens are accepted with (the signing key's first).
    pub user_token_keys: Vec<tokens::VerificationKey>,
    /// Booking's service-token signing key (PKCS#8 PEM), generated once and kept.
    pub service_token_signing_key: String,
    /// The keys booking's service tokens are accepted with (its signing key's).
    pub service_token_keys: Vec<tokens::VerificationKey>,
    /// URLs of external stores, read from their Secrets (only for hashing: pods read the
    /// Secret themselves through `secretKeyRef`).
    pub external_urls: BTreeMap<StoreKind, String>,
    /// Image currently in each service's Deployment, if it exists.
    pub running_images: BTreeMap<ServiceKind, String>,
    /// Migration Jobs that exist, by name: state and the generation that created them.
    pub jobs: BTreeMap<String, ObservedJob>,
    /// Ready replicas of each managed store's StatefulSet.
    pub store_ready: BTreeMap<StoreKind, i32>,
}

/// A migration Job as observed in the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedJob {
    pub state: MigrationState,
    pub generation: Option<i64>,
}

/// The migration and rollout decision of one service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServicePlan {
    /// Image the spec asks for.
    pub desired_image: String,
    /// Image the Deployment is applied with: the desired one once its migration succeeded,
    /// the running one while it has not, none before the first migration finished.
    pub rollout_image: Option<String>,
    pub job_name: String,
    pub migration: MigrationState,
}

/// Every desired object, grouped by the stage that applies it.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    pub secrets: Vec<Secret>,
    pub config_maps: Vec<ConfigMap>,
    pub store_services: Vec<Service>,
    pub stateful_sets: Vec<StatefulSet>,
    pub jobs: Vec<Job>,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub hpas: Vec<HorizontalPodAutoscaler>,
    pub pdbs: Vec<PodDisruptionBudget>,
    pub gateway_secrets: Vec<Secret>,
    pub gateway_deployments: Vec<Deployment>,
    pub gateway_services: Vec<Service>,
    pub ingresses: Vec<Ingress>,
    /// Applied first, so no pod runs unprotected ([`network`]).
    pub network_policies: Vec<NetworkPolicy>,
    /// Per service: the plan the objects above were built from.
    pub plans: BTreeMap<ServiceKind, ServicePlan>,
    /// The sample-data Job's plan, when `sampleData` is on.
    pub sample: Option<sample::SamplePlan>,
    /// Hash of the configuration every service pod consumes.
    pub config_hash: String,
}

/// Builds every desired object of an installation.
pub fn build(spec: &MovieBookingSystemSpec, inst: &Instance, res: &Resolved) -> Desired {
    let mut d = Desired::default();
    let (secret, config_map, config_hash) = config::build(spec, inst, res);
    d.secrets.push(secret);
    d.config_maps.push(config_map);
    d.config_hash = config_hash.clone();
    d.network_policies = network::policies(spec, inst);

    let access_hash = match stores::access_secret(spec, inst, res) {
        Some((secret, hash)) => {
            d.secrets.push(secret);
            hash
        }
        None => String::new(),
    };
    for store in StoreKind::ALL {
        if let Some(managed) = &store.spec(spec).managed {
            d.store_services.push(stores::service(store, inst));
            d.stateful_sets.push(stores::stateful_set(
                store,
                managed,
                spec,
                inst,
                &access_hash,
            ));
        }
    }
    let stores_ready = stores_ready(spec, res);

    for svc in ServiceKind::ALL {
        let plan = migrations::plan(svc, spec, inst, res, &config_hash, stores_ready);
        if let Some(job) = migrations::job_to_create(svc, spec, inst, &plan, res, &config_hash) {
            d.jobs.push(job);
        }
        if let Some(image) = &plan.rollout_image {
            d.deployments
                .push(services::deployment(svc, spec, inst, image, &config_hash));
        }
        d.services.push(services::service(svc, inst));
        d.pdbs.push(services::pdb(svc, inst));
        if let Some(hpa) = services::hpa(svc, spec, inst) {
            d.hpas.push(hpa);
        }
        d.plans.insert(svc, plan);
    }

    d.services.push(services::cinema_grpc_service(inst));
    if spec.sample_data {
        let plan = sample::plan(spec, inst, res, &d.plans);
        if let Some(job) = sample::job_to_create(spec, inst, &plan, res, &config_hash) {
            d.jobs.push(job);
        }
        d.sample = Some(plan);
    }

    match spec.gateway.type_ {
        GatewayType::Kong => {
            let kong_config = gateway::kong_config_secret(spec, inst, res);
            let kong_hash = hash_of(&[&gateway::render_kong_config(spec, inst, res)]);
            d.gateway_secrets.push(kong_config);
            d.gateway_deployments
                .push(gateway::deployment(spec, inst, &kong_hash));
            d.gateway_services.push(gateway::service(spec, inst));
        }
        GatewayType::None => d.gateway_services = gateway::public_services(spec, inst),
        GatewayType::Ingress => {}
    }
    if let Some(ingress) = gateway::ingress(spec, inst) {
        d.ingresses.push(ingress);
    }
    d
}

/// True when every managed store reports a ready replica (external stores are taken as ready:
/// their Secret was found, which is all the operator can check).
pub fn stores_ready(spec: &MovieBookingSystemSpec, res: &Resolved) -> bool {
    StoreKind::ALL.iter().all(|s| {
        s.spec(spec).managed.is_none() || res.store_ready.get(s).copied().unwrap_or(0) >= 1
    })
}

/// Hex SHA-256 of some strings (length-prefixed so that `["ab","c"]` and `["a","bc"]` differ).
pub fn hash_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Container security context of every container: non-root, read-only root filesystem, no
/// capabilities, no privilege escalation (the services need nothing more).
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// Pod security context: non-root user, RuntimeDefault seccomp.
pub fn restricted_pod(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Requests and limits used when the spec gives none.
pub fn default_resources(
    cpu_req: &str,
    mem_req: &str,
    cpu_lim: &str,
    mem_lim: &str,
) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity(cpu_req.into())),
            ("memory".into(), Quantity(mem_req.into())),
        ])),
        limits: Some(BTreeMap::from([
            ("cpu".into(), Quantity(cpu_lim.into())),
            ("memory".into(), Quantity(mem_lim.into())),
        ])),
        ..ResourceRequirements::default()
    }
}

/// Image pull secrets of the spec, as a Pod wants them.
pub fn pull_secrets(
    spec: &MovieBookingSystemSpec,
) -> Option<Vec<k8s_openapi::api::core::v1::LocalObjectReference>> {
    (!spec.image_pull_secrets.is_empty()).then(|| {
        spec.image_pull_secrets
            .iter()
            .map(|n| k8s_openapi::api::core::v1::LocalObjectReference { name: n.clone() })
            .collect()
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::crd::MovieBookingSystem;

    /// A resource as a user would write it, with defaults filled in by serde as the API
    /// server would.
    pub fn sample() -> MovieBookingSystem {
        let mut mbs: MovieBookingSystem = serde_json::from_value(serde_json::json!({
            "apiVersion": "moviebook.io/v1alpha1",
            "kind": "MovieBookingSystem",
            "metadata": {"name": "demo", "namespace": "shop", "uid": "uid-1", "generation": 1},
            "spec": {"version": "0.1.0"}
        }))
        .expect("sample parses");
        mbs.spec.services.booking.replicas = Some(2);
        mbs
    }

    pub fn instance() -> Instance {
        Instance {
            name: "demo".into(),
            namespace: "shop".into(),
            owner: OwnerReference {
                api_version: "moviebook.io/v1alpha1".into(),
                kind: "MovieBookingSystem".into(),
                name: "demo".into(),
                uid: "uid-1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            generation: 1,
        }
    }

    pub fn resolved() -> Resolved {
        Resolved {
            postgres_password: "pgpw".into(),
            redis_password: "redispw".into(),
            rabbitmq_password: "rabbitpw".into(),
            store_passwords: super::config::store_password_keys()
                .into_iter()
                .map(|k| {
                    let v = format!("pw-{k}");
                    (k, v)
                })
                .collect(),
            jwt_secret: "jwtsecret".into(),
            jwt_generated: true,
            ticket_signing_key: "dGlja2V0LXNlZWQtMzItYnl0ZXMtZm9yLXRlc3RzISE=".into(),
            user_token_signing_key: "<test signing key>".into(),
            user_token_key_generated: true,
            user_token_keys: vec![super::tokens::VerificationKey {
                kid: "0123456789abcdef".into(),
                pem: "-----BEGIN PUBLIC KEY-----\ntest\n-----END PUBLIC KEY-----\n".into(),
            }],
            service_token_signing_key: "<test service-token key>".into(),
            service_token_keys: vec![super::tokens::VerificationKey {
                kid: "fedcba9876543210".into(),
                pem: "-----BEGIN PUBLIC KEY-----\nservice\n-----END PUBLIC KEY-----\n".into(),
            }],
            ..Resolved::default()
        }
    }

    /// Resolved state of a running installation whose stores are ready.
    pub fn resolved_ready() -> Resolved {
        let mut r = resolved();
        for s in StoreKind::ALL {
            r.store_ready.insert(s, 1);
        }
        r
    }
}
