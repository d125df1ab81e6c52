//! The `MovieBookingSystem` custom resource: one object describes a whole MovieBook
//! installation (five services, their stores, the Kong gateway, migrations).
//!
//! The Rust types are the single source of truth: `moviebook-operator crdgen` prints the CRD
//! from them, `crds/` holds the checked-in copy and a test fails when the two drift.
//!
//! Schema rules that keep the API server happy (see kube-rs #648, #1047): every optional field
//! is `#[serde(default, skip_serializing_if = ...)]`, enums are plain string enums, Kubernetes
//! types (`Quantity`, `ResourceRequirements`, `EnvVar`, `Condition`) come from k8s-openapi, and
//! cross-field rules are CEL `x-kubernetes-validations` so the API server rejects a bad spec
//! at `kubectl apply` time with a readable message instead of the operator failing later.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "moviebook.io";
/// Finalizer that lets the operator apply `dataOnDelete` before the resource disappears.
pub const FINALIZER: &str = "moviebook.io/cleanup";

/// Desired state of one MovieBook installation.
// clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "moviebook.io",
    version = "v1alpha1",
    kind = "MovieBookingSystem",
    plural = "moviebookingsystems",
    shortname = "mbs",
    category = "moviebook",
    namespaced,
    status = "MovieBookingSystemStatus",
    derive = "PartialEq",
    doc = "A whole MovieBook installation: five services, their stores, migrations and the Kong gateway.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.readyComponents",
        description = "ready components / all components"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoints.graphql"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MovieBookingSystemSpec {
    /// Image tag of the five services (for example `0.1.0`). Changing it runs each service's
    /// migration Job for the new version first, then rolls the service.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$')").message("version must be a valid image tag"))]
    pub version: String,

    /// Registry and path prefix of the service images: `<imageRegistry>/<name>-service:<version>`.
    #[serde(default = "default_image_registry")]
    pub image_registry: String,

    /// Pull policy of every container the operator creates.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,

    /// Names of Secrets (in the same namespace) used to pull the service images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<String>,

    /// Per-service settings of the five services.
    #[serde(default)]
    pub services: ServicesSpec,

    /// The API gateway in front of the services.
    #[serde(default)]
    pub gateway: GatewaySpec,

    /// PostgreSQL (used by cinema).
    #[serde(default)]
    pub postgres: StoreSpec,

    /// MongoDB (used by user, payment, booking and notification, each in its own database
    /// `moviebook_<service>`). A managed MongoDB runs as a single-member replica set so that
    /// multi-document transactions work (`managed.topology: Standalone` for servers that are
    /// their own replica set), with authentication: each service logs in as its own user,
    /// allowed only its own database.
    #[serde(default)]
    pub mongodb: StoreSpec,

    /// Redis (used by notification for idempotency).
    #[serde(default)]
    pub redis: StoreSpec,

    /// RabbitMQ (the event bus).
    #[serde(default)]
    pub rabbitmq: StoreSpec,

    /// Token keys: the user service's ES256 signing key and the keys user tokens are
    /// accepted with (booking's service-token key is always generated).
    #[serde(default)]
    pub auth: AuthSpec,

    /// How schema migrations run before a rollout.
    #[serde(default)]
    pub migrations: MigrationsSpec,

    /// When true the operator writes nothing but status: no object is created, changed or
    /// deleted until it is set back to false.
    #[serde(default)]
    pub paused: bool,

    /// What happens to the stores' data (PersistentVolumeClaims and generated credentials)
    /// when this resource is deleted.
    #[serde(default)]
    pub data_on_delete: DataOnDelete,

    /// Loads the sample catalogue (cinemas, screens, movies, a week of showtimes) with a Job
    /// running `cinema-service seed` after cinema's migration; idempotent, so it runs again
    /// harmlessly for each new version (adding the new days' showtimes).
    #[serde(default)]
    pub sample_data: bool,

    /// Log filter passed to every service as `RUST_LOG`.
    #[serde(default = "default_log_level")]
    pub log_level: String,

    /// NetworkPolicies that let each pod of the installation be reached only by the pods that
    /// need it (on by default; they take effect where the network plugin enforces them).
    #[serde(default)]
    pub network_policies: NetworkPoliciesSpec,
}

/// `spec.networkPolicies`.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPoliciesSpec {
    /// Creates the policies (true by default). Off: none are created and existing ones are
    /// removed. Ingress only: each pod's callers are listed, its outgoing traffic is not
    /// restricted. Policies add up, so a scraper in another namespace (Prometheus) needs an
    /// allowing policy of your own.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for NetworkPoliciesSpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

fn yes() -> bool {
    true
}

fn default_image_registry() -> String {
    "ghcr.io/moviebook".into()
}

fn default_log_level() -> String {
    "info".into()
}

/// Image pull policy (a string enum, as in a Pod).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Settings of each of the five services.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicesSpec {
    #[serde(default)]
    pub user: ServiceSpec,
    #[serde(default)]
    pub cinema: ServiceSpec,
    #[serde(default)]
    pub payment: ServiceSpec,
    #[serde(default)]
    pub notification: ServiceSpec,
    #[serde(default)]
    pub booking: ServiceSpec,
}

/// Settings of one service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.autoscaling) || !has(self.replicas) || (self.replicas >= self.autoscaling.minReplicas && self.replicas <= self.autoscaling.maxReplicas)").message("replicas must lie within autoscaling.minReplicas..maxReplicas"))]
pub struct ServiceSpec {
    /// Number of pods (default 1). Ignored while `autoscaling` is set: the HPA owns the count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,

    /// CPU and memory requests and limits; sensible defaults apply when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Horizontal pod autoscaling on CPU utilisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Extra environment variables, appended after the ones the operator sets (so they can
    /// override them, for example `RUST_LOG`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,
}

/// Horizontal pod autoscaling of one service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"))]
pub struct AutoscalingSpec {
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Average CPU utilisation (percent of requests) the HPA aims for.
    #[serde(
        default = "default_cpu_target",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn default_cpu_target() -> i32 {
    70
}

/// The gateway in front of the services.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// What users reach the services through: `Kong` (default) runs Kong with the rendered
    /// declarative config; `Ingress` creates an Ingress (with `ingress.className`) that routes
    /// the public paths straight to the services, for a cluster that already runs an ingress
    /// controller (Kong's included); `None` only exposes the public Services (see `direct`).
    #[serde(default, rename = "type")]
    pub type_: GatewayType,
    #[serde(default)]
    pub kong: KongSpec,
    /// With `type: Kong`, an Ingress pointing at Kong (for clusters that have an ingress
    /// controller); with `type: Ingress`, the Ingress routing straight to the services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// The public Services of `type: Ingress` and `type: None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<DirectSpec>,
}

/// Which gateway fronts the services.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum GatewayType {
    /// Kong in DB-less mode (rate limit, JWT checks at the edge, CORS).
    #[default]
    Kong,
    /// An Ingress of the cluster's ingress controller routes the public paths to the services.
    Ingress,
    /// No gateway: the public Services `<name>-public-{graphql,user,catalogue}` only.
    None,
}

/// The public Services created without Kong: `<name>-public-graphql` (booking's GraphQL),
/// `<name>-public-user` (register, login, profile) and `<name>-public-catalogue` (cinema's
/// REST catalogue). The services check tokens themselves; Kong's rate limit and CORS are absent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.nodePorts) || !has(self.serviceType) || self.serviceType != 'ClusterIP'").message("gateway.direct.nodePorts needs serviceType NodePort or LoadBalancer"))]
pub struct DirectSpec {
    /// Type of the public Services: NodePort by default with `type: None`, ClusterIP with
    /// `type: Ingress` (the ingress controller reaches them inside the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<GatewayServiceType>,
    /// Fixed node ports (NodePort/LoadBalancer); Kubernetes picks free ones when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ports: Option<DirectNodePorts>,
}

/// Fixed node ports of the public Services.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectNodePorts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub graphql: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub user: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub catalogue: Option<i32>,
}

/// Kong in DB-less mode, configured from a declarative config the operator renders.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.nodePort) || self.serviceType != 'ClusterIP'").message("gateway.kong.nodePort needs serviceType NodePort or LoadBalancer"))]
pub struct KongSpec {
    #[serde(default = "default_kong_image")]
    pub image: String,
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 20))]
    pub replicas: i32,
    /// Requests per minute allowed per client IP (Kong rate-limiting, policy `local`: the count
    /// is kept by each Kong pod, so with N replicas a client gets up to N times this).
    #[serde(default = "default_rate_limit")]
    #[schemars(range(min = 1))]
    pub rate_limit_per_minute: i32,
    /// Origins allowed by the CORS plugin; `*` allows all.
    #[serde(default = "default_cors")]
    pub cors_origins: Vec<String>,
    /// How the proxy is exposed.
    #[serde(default)]
    pub service_type: GatewayServiceType,
    /// Fixed node port of the proxy (NodePort/LoadBalancer only), e.g. 30080 for kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// CIDRs of the proxies in front of Kong (a load balancer, an ingress controller) whose
    /// `X-Forwarded-For` is believed. Empty (the default): the header is ignored and the client
    /// is the TCP peer, so no client can choose the IP it is rate-limited as. With a NodePort
    /// or LoadBalancer Service the peer is the real client (`externalTrafficPolicy: Local`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub trusted_proxies: Vec<String>,
}

impl Default for KongSpec {
    fn default() -> Self {
        Self {
            image: default_kong_image(),
            replicas: 1,
            rate_limit_per_minute: default_rate_limit(),
            cors_origins: default_cors(),
            service_type: GatewayServiceType::default(),
            node_port: None,
            resources: None,
            trusted_proxies: Vec::new(),
        }
    }
}

fn default_kong_image() -> String {
    "kong:3.9".into()
}
fn one() -> i32 {
    1
}
fn default_rate_limit() -> i32 {
    200
}
fn default_cors() -> Vec<String> {
    vec!["*".into()]
}

/// Kubernetes Service type of the gateway.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum GatewayServiceType {
    ClusterIP,
    #[default]
    NodePort,
    LoadBalancer,
}

impl GatewayServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayServiceType::ClusterIP => "ClusterIP",
            GatewayServiceType::NodePort => "NodePort",
            GatewayServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// An Ingress: in front of Kong (`type: Kong`) or routing to the services (`type: Ingress`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Host name routed; all hosts when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// IngressClass to use; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Secret holding the TLS certificate for `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
}

/// A backing store: either managed in-cluster by the operator or external.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.managed) != has(self.external)").message("exactly one of managed or external must be set"))]
pub struct StoreSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedStore>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalStore>,
}

impl Default for StoreSpec {
    fn default() -> Self {
        Self {
            managed: Some(ManagedStore::default()),
            external: None,
        }
    }
}

/// A store run by the operator as a one-replica StatefulSet with a PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedStore {
    /// Image; the official image of the store when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Size of the data volume (default 1Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Quantity>,
    /// StorageClass of the data volume; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// MongoDB only: `ReplicaSet` (default) runs `mongod --replSet` and initiates a
    /// single-member replica set (multi-document transactions need one); `Standalone` runs the
    /// server as it is (no `--replSet`, TCP probes, `directConnection=true` in the URLs), for
    /// MongoDB-compatible servers that are their own replica set or cannot be initiated as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<MongoTopology>,
}

/// How a managed MongoDB runs.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum MongoTopology {
    #[default]
    ReplicaSet,
    Standalone,
}

/// A store outside the cluster (or run by someone else): a Secret holds its URL.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalStore {
    pub secret_ref: SecretKeyRef,
}

/// A key of a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct SecretKeyRef {
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Token signing settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret key holding a secret no pod receives any more: both kinds of token are ES256
    /// (user tokens: `userTokenKeyRef`; service tokens: booking's own key, generated into
    /// `<name>-secrets` as `service-token-signing-key`). Kong's configuration still carries a
    /// one-way hash of it in the `secret` field decK requires on every jwt credential. Kept so
    /// existing resources stay valid; when absent the operator generates one and keeps it in
    /// `<name>-secrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret_ref: Option<SecretKeyRef>,
    /// `iss` of the tokens the user service issues (every service checks it).
    #[serde(default = "default_issuer")]
    pub jwt_issuer: String,
    /// Secret key holding the user service's ES256 token-signing key (PKCS#8 PEM, P-256).
    /// When absent the operator generates one and keeps it in `<name>-secrets`
    /// (`user-token-signing-key`). Only the user service's pods receive it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_token_key_ref: Option<SecretKeyRef>,
    /// Secret key holding further public keys (SPKI PEMs, one after the other) user tokens are
    /// accepted with, besides the signing key's own. A rotation without logging anyone out:
    /// list the new key's public half here, then point `userTokenKeyRef` at the new key (and
    /// keep the old public key listed for one token lifetime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_token_verification_keys_ref: Option<SecretKeyRef>,
}

impl Default for AuthSpec {
    fn default() -> Self {
        Self {
            jwt_secret_ref: None,
            jwt_issuer: default_issuer(),
            user_token_key_ref: None,
            user_token_verification_keys_ref: None,
        }
    }
}

fn default_issuer() -> String {
    "moviebook".into()
}

/// Migration settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationsSpec {
    #[serde(default)]
    pub policy: MigrationPolicy,
    /// Retries of a failing migration pod before the Job is marked failed.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,
    /// Upper bound of one migration Job's run time.
    #[serde(default = "default_deadline")]
    #[schemars(range(min = 30))]
    pub active_deadline_seconds: i64,
}

impl Default for MigrationsSpec {
    fn default() -> Self {
        Self {
            policy: MigrationPolicy::default(),
            backoff_limit: default_backoff_limit(),
            active_deadline_seconds: default_deadline(),
        }
    }
}

fn default_backoff_limit() -> i32 {
    3
}
fn default_deadline() -> i64 {
    600
}

/// `Automatic` runs `<service> migrate` as a Job per version and rolls a service out only after
/// its Job succeeded; `Disabled` rolls out immediately (migrations are someone else's job).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum MigrationPolicy {
    #[default]
    Automatic,
    Disabled,
}

/// What happens to data when the resource is deleted.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DataOnDelete {
    /// PersistentVolumeClaims and the generated credentials Secret are kept, so re-creating
    /// a resource of the same name finds its data again.
    #[default]
    Retain,
    /// PersistentVolumeClaims and credentials are deleted with the resource.
    Delete,
}

/// Observed state, computed only from what the operator applied and read back.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MovieBookingSystemStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `DatabasesReady`, `MigrationsComplete`, `ServicesReady`, `GatewayReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// `ready/total` components, for `kubectl get mbs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_components: Option<String>,
    /// Per component (services, stores, kong): replicas and image.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, ComponentStatus>,
    /// Per service: the migration Job of the desired version and its state.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub migrations: BTreeMap<String, MigrationStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
}

/// Coarse lifecycle phase, for humans.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Phase {
    Pending,
    Progressing,
    Ready,
    Degraded,
    Failed,
    Paused,
    Deleting,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Progressing => "Progressing",
            Phase::Ready => "Ready",
            Phase::Degraded => "Degraded",
            Phase::Failed => "Failed",
            Phase::Paused => "Paused",
            Phase::Deleting => "Deleting",
        }
    }
}

/// Replicas and image of one component.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    pub ready_replicas: i32,
    pub desired_replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// Migration Job of one service for the desired version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    pub job: String,
    pub image: String,
    pub state: MigrationState,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum MigrationState {
    /// Waiting for the stores to become ready before starting the Job.
    Waiting,
    Running,
    Succeeded,
    Failed,
    /// Migrations are disabled by policy.
    Skipped,
}

/// Where users reach the system.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphql: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// Renders the CRD as YAML exactly as checked in under `crds/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let value = serde_json::to_value(MovieBookingSystem::crd())
        .map_err(<serde_yaml::Error as serde::ser::Error>::custom)?;
    serde_yaml::to_string(&sorted_keys(value))
}

/// The same value with every object's keys in sorted order. serde_json keeps insertion order
/// when any crate in the build enables its `preserve_order` feature (the workspace test build
/// does, a lone `-p moviebook-operator` build does not); sorting makes the rendered CRD the same
/// bytes either way, so the checked-in copy can be compared exactly.
fn sorted_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted_keys(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted_keys).collect())
        }
        other => other,
    }
}

/// Path of the checked-in CRD, relative to the repository root.
pub const CRD_FILE: &str = "crds/moviebook.io_moviebookingsystems.yaml";
