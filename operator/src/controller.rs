//! The reconciler: a fixed pipeline, each step in its own module.
//!
//! `validate` (pure) → `observe` (read the generated Secret, referenced Secrets and the
//! labelled workloads) → `build` (pure: every desired object) → `apply` (server-side apply in
//! dependency order: config, stores, migrations, services, gateway; then prune labelled
//! orphans) → `status` (computed from what was applied, written only when it changed) →
//! Events for transitions.
//!
//! `paused` short-circuits after `build`: status is still computed from what exists, nothing
//! else is written. Deletion goes through a finalizer so `dataOnDelete` is honoured.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::apply::{self, Managed};
use crate::build::{
    self, GENERATION_ANNOTATION, Instance, MANAGED_BY, ObservedJob, Resolved, ServiceKind,
    StoreKind, config, migrations, tokens,
};
use crate::crd::{
    DataOnDelete, FINALIZER, MigrationState, MovieBookingSystem, MovieBookingSystemStatus, Phase,
};
use crate::error::{Error, KubeContext, Result};
use crate::{metrics, status, validate};

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: "moviebook-operator".into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A panic while holding this lock cannot leave the map inconsistent; keep going.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Requeue interval when everything is ready (a safety net; watches do the real work).
const READY_REQUEUE: Duration = Duration::from_secs(300);
/// Requeue interval while converging (Jobs and pods change without touching our resource).
const PROGRESS_REQUEUE: Duration = Duration::from_secs(15);

/// Entry point of one reconcile, wrapped with metrics and backoff bookkeeping.
pub async fn reconcile(mbs: Arc<MovieBookingSystem>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let key = format!("{}/{}", mbs.namespace().unwrap_or_default(), mbs.name_any());
    let result = reconcile_inner(mbs, ctx.clone()).await;
    metrics::observe_reconcile(started.elapsed(), result.as_ref().err());
    if result.is_ok() {
        ctx.failures().remove(&key);
    }
    result
}

async fn reconcile_inner(mbs: Arc<MovieBookingSystem>, ctx: Arc<Context>) -> Result<Action> {
    let ns = mbs.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<MovieBookingSystem> = Api::namespaced(ctx.client.clone(), &ns);
    // A paused resource gets no finalizer added: that would be a write. Deletion still runs
    // the cleanup, or the resource could never go away.
    let deleting = mbs.meta().deletion_timestamp.is_some();
    if mbs.spec.paused && !deleting {
        return apply_phase(mbs, ctx).await;
    }
    finalizer(&api, FINALIZER, mbs, |event| async {
        match event {
            FinalizerEvent::Apply(m) => apply_phase(m, ctx.clone()).await,
            FinalizerEvent::Cleanup(m) => cleanup(m, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Requeue policy on error: user errors wait for a spec change (with a slow retry), API
/// errors back off exponentially from 5 s to 5 min.
pub fn error_policy(mbs: Arc<MovieBookingSystem>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", mbs.namespace().unwrap_or_default(), mbs.name_any());
    warn!(resource = %key, error = %err, "reconcile failed");
    if err.is_user_error() {
        return Action::requeue(Duration::from_secs(60));
    }
    let mut failures = ctx.failures();
    let n = failures.entry(key).or_insert(0);
    *n = n.saturating_add(1);
    Action::requeue(backoff(*n))
}

/// `5s * 2^(n-1)`, capped at 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    Duration::from_secs((5u64 << exp).min(300))
}

fn instance(mbs: &MovieBookingSystem) -> Result<Instance> {
    Ok(Instance {
        name: mbs
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingMetadata("name"))?,
        namespace: mbs.namespace().ok_or(Error::MissingMetadata("namespace"))?,
        owner: mbs
            .controller_owner_ref(&())
            .ok_or(Error::MissingMetadata("uid"))?,
        generation: mbs.metadata.generation.unwrap_or(0),
    })
}

/// Objects labelled as ours, read before building.
#[derive(Debug, Default)]
pub struct Observed {
    pub deployments: Vec<Deployment>,
    pub stateful_sets: Vec<StatefulSet>,
    pub jobs: Vec<Job>,
    pub services: Vec<Service>,
    pub hpas: Vec<HorizontalPodAutoscaler>,
    pub pdbs: Vec<PodDisruptionBudget>,
    pub ingresses: Vec<Ingress>,
    pub network_policies: Vec<NetworkPolicy>,
}

async fn observe(client: &Client, inst: &Instance) -> Result<Observed> {
    let (ns, sel) = (inst.namespace.as_str(), inst.managed_selector());
    Ok(Observed {
        deployments: apply::list(client, ns, &sel).await?,
        stateful_sets: apply::list(client, ns, &sel).await?,
        jobs: apply::list(client, ns, &sel).await?,
        services: apply::list(client, ns, &sel).await?,
        hpas: apply::list(client, ns, &sel).await?,
        pdbs: apply::list(client, ns, &sel).await?,
        ingresses: apply::list(client, ns, &sel).await?,
        network_policies: apply::list(client, ns, &sel).await?,
    })
}

fn random_secret(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A new ticket-signing seed as booking's `TICKET_SIGNING_KEY` takes it: base64 of 32 bytes
/// (32 random alphanumerics, about 190 bits).
fn new_ticket_key() -> String {
    base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        random_secret(32),
    )
}

/// Reads one key of a Secret as text.
async fn secret_value(client: &Client, ns: &str, name: &str, key: &str) -> Result<Option<String>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = api
        .get_opt(name)
        .await
        .context(format!("reading Secret {name}"))?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned()))
}

/// A cluster-wide operator may touch Secrets only in the namespaces its chart granted
/// (`rbac.secretNamespaces`); a system elsewhere is told so in its status instead of retrying.
fn secrets_forbidden(e: kube::Error, ns: &str) -> Error {
    match e {
        kube::Error::Api(s) if s.is_forbidden() => Error::Forbidden(format!(
            "the operator may not read Secrets in namespace {ns}: add {ns} to the chart's \
             rbac.secretNamespaces (or install the operator with operator.watchNamespace={ns})"
        )),
        e => Error::Kube {
            action: "reading the generated Secret".into(),
            source: e,
        },
    }
}

/// A referenced Secret's key that must exist.
async fn required_secret_value(
    client: &Client,
    ns: &str,
    field: &str,
    r: &crate::crd::SecretKeyRef,
) -> Result<String> {
    secret_value(client, ns, &r.name, &r.key)
        .await?
        .ok_or_else(|| {
            Error::MissingSecret(format!("{field}: Secret {} has no key {}", r.name, r.key))
        })
}

/// The user-token signing key (referenced, else the generated one, else a new one) and the
/// keys tokens are accepted with. A key that does not parse is an invalid spec, reported in
/// the status before any pod would crash on it.
async fn resolve_user_token_keys(
    client: &Client,
    ns: &str,
    auth: &crate::crd::AuthSpec,
    generated: &BTreeMap<String, String>,
    res: &mut Resolved,
) -> Result<()> {
    res.user_token_signing_key = match &auth.user_token_key_ref {
        Some(r) => required_secret_value(client, ns, "auth.userTokenKeyRef", r).await?,
        None => {
            res.user_token_key_generated = true;
            kept_or_new_signing_key(generated, config::USER_TOKEN_SIGNING_KEY)?
        }
    };
    let extra = match &auth.user_token_verification_keys_ref {
        Some(r) => {
            Some(required_secret_value(client, ns, "auth.userTokenVerificationKeysRef", r).await?)
        }
        None => None,
    };
    res.user_token_keys = tokens::verification_keys(&res.user_token_signing_key, extra.as_deref())
        .map_err(Error::InvalidSpec)?;
    Ok(())
}

/// A generated signing key as kept in `<name>-secrets` under `key`, else a new one.
fn kept_or_new_signing_key(generated: &BTreeMap<String, String>, key: &str) -> Result<String> {
    match generated.get(key).filter(|v| !v.trim().is_empty()) {
        Some(kept) => Ok(kept.clone()),
        None => tokens::new_signing_key().map_err(Error::InvalidSpec),
    }
}

/// Resolves credentials (reusing generated ones), referenced Secrets and workload state.
async fn resolve(
    client: &Client,
    mbs: &MovieBookingSystem,
    inst: &Instance,
    observed: &Observed,
) -> Result<Resolved> {
    let ns = inst.namespace.as_str();
    let generated: BTreeMap<String, String> = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(&config::secret_name(inst))
        .await
        .map_err(|e| secrets_forbidden(e, ns))?
        .and_then(|s| s.data)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    let keep_or_new = |key: &str, len: usize| {
        generated
            .get(key)
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| random_secret(len))
    };
    let mut res = Resolved {
        postgres_password: keep_or_new(config::POSTGRES_PASSWORD, 32),
        redis_password: keep_or_new(config::REDIS_PASSWORD, 32),
        rabbitmq_password: keep_or_new(config::RABBITMQ_PASSWORD, 32),
        store_passwords: config::store_password_keys()
            .into_iter()
            .map(|key| {
                let password = keep_or_new(&key, 32);
                (key, password)
            })
            .collect(),
        ticket_signing_key: generated
            .get(config::TICKET_SIGNING_KEY)
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(new_ticket_key),
        ..Resolved::default()
    };
    match &mbs.spec.auth.jwt_secret_ref {
        Some(r) => {
            res.jwt_secret = secret_value(client, ns, &r.name, &r.key)
                .await?
                .ok_or_else(|| {
                    Error::MissingSecret(format!(
                        "auth.jwtSecretRef: Secret {} has no key {}",
                        r.name, r.key
                    ))
                })?;
        }
        None => {
            res.jwt_secret = keep_or_new(config::JWT_SECRET, 48);
            res.jwt_generated = true;
        }
    }
    resolve_user_token_keys(client, ns, &mbs.spec.auth, &generated, &mut res).await?;
    res.service_token_signing_key =
        kept_or_new_signing_key(&generated, config::SERVICE_TOKEN_SIGNING_KEY)?;
    res.service_token_keys = tokens::verification_keys(&res.service_token_signing_key, None)
        .map_err(Error::InvalidSpec)?;
    for store in StoreKind::ALL {
        if let Some(ext) = &store.spec(&mbs.spec).external {
            let r = &ext.secret_ref;
            let url = secret_value(client, ns, &r.name, &r.key)
                .await?
                .ok_or_else(|| {
                    Error::MissingSecret(format!(
                        "{}.external.secretRef: Secret {} has no key {}",
                        store.name(),
                        r.name,
                        r.key
                    ))
                })?;
            res.external_urls.insert(store, url);
        }
    }
    for svc in ServiceKind::ALL {
        let name = inst.child(svc.name());
        if let Some(d) = observed.deployments.iter().find(|d| d.name_any() == name) {
            let image = d
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.containers.first())
                .and_then(|c| c.image.clone());
            if let Some(image) = image {
                res.running_images.insert(svc, image);
            }
        }
    }
    for job in &observed.jobs {
        let generation = job
            .annotations()
            .get(GENERATION_ANNOTATION)
            .and_then(|g| g.parse().ok());
        res.jobs.insert(
            job.name_any(),
            ObservedJob {
                state: migrations::job_state(job),
                generation,
            },
        );
    }
    for store in StoreKind::ALL {
        let name = inst.child(store.name());
        if let Some(s) = observed.stateful_sets.iter().find(|s| s.name_any() == name) {
            let ready = s
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            res.store_ready.insert(store, ready);
        }
    }
    Ok(res)
}

async fn apply_phase(mbs: Arc<MovieBookingSystem>, ctx: Arc<Context>) -> Result<Action> {
    let client = &ctx.client;
    let inst = instance(&mbs)?;
    let ns = inst.namespace.clone();

    if let Err(err) = validate::validate(&mbs) {
        report_invalid(&mbs, &ctx, &inst, &err).await?;
        return Err(err);
    }
    let observed = observe(client, &inst).await?;
    let res = match resolve(client, &mbs, &inst, &observed).await {
        Ok(r) => r,
        Err(err) if err.is_user_error() => {
            report_invalid(&mbs, &ctx, &inst, &err).await?;
            return Err(err);
        }
        Err(err) => return Err(err),
    };
    let mut desired = build::build(&mbs.spec, &inst, &res);
    let storage_changes =
        build::stores::keep_existing_claims(&mut desired.stateful_sets, &observed.stateful_sets);

    if mbs.spec.paused {
        let deps = observed.deployments.clone();
        let node_port = observed
            .services
            .iter()
            .find(|s| s.name_any() == build::gateway::endpoint_service_name(&mbs.spec, &inst))
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.ports.as_ref())
            .and_then(|p| p.first())
            .and_then(|p| p.node_port);
        let new = compute_status(
            &mbs,
            &inst,
            &deps,
            &observed.stateful_sets,
            &desired,
            (None, node_port),
        );
        finish(&mbs, &ctx, new).await?;
        return Ok(Action::requeue(READY_REQUEUE));
    }

    // A failed migration Job is retried once the spec moved past the generation that
    // created it: delete it now, the next reconcile (triggered by the deletion) recreates it.
    // The sample-data Job is retried the same way.
    let failed_jobs = desired
        .plans
        .values()
        .filter(|p| p.migration == MigrationState::Failed)
        .map(|p| (p.job_name.as_str(), "MigrationRetried"))
        .chain(
            desired
                .sample
                .iter()
                .filter(|p| p.state == MigrationState::Failed)
                .map(|p| (p.job_name.as_str(), "SampleDataRetried")),
        );
    for (job_name, reason) in failed_jobs {
        let created = res
            .jobs
            .get(job_name)
            .and_then(|j| j.generation)
            .unwrap_or(0);
        if created < inst.generation {
            info!(job = %job_name, "retrying a failed Job after a spec change");
            apply::delete::<Job>(client, &ns, job_name).await?;
            publish(
                &ctx,
                &mbs,
                EventType::Normal,
                reason,
                format!("deleted failed Job {job_name} to retry it"),
            )
            .await;
        }
    }

    // Reported once per spec change, not on every reconcile (each Event is a write).
    let new_generation =
        mbs.status.as_ref().and_then(|s| s.observed_generation) != mbs.metadata.generation;
    if !storage_changes.is_empty() && new_generation {
        let note = format!(
            "volume size/class of {} cannot change on an existing StatefulSet; expand the PVCs by hand",
            storage_changes.join(", ")
        );
        publish(&ctx, &mbs, EventType::Warning, "StorageChangeIgnored", note).await;
    }

    hand_replicas_to_hpa(client, &ns, &desired, &observed).await?;

    // 1. network policies (before any pod they protect) and configuration, 2. stores,
    // 3. migrations, 4. services, 5. gateway
    apply::apply_all(client, &ns, &desired.network_policies).await?;
    apply::apply_all(client, &ns, &desired.secrets).await?;
    apply::apply_all(client, &ns, &desired.config_maps).await?;
    apply::apply_all(client, &ns, &desired.store_services).await?;
    let stateful_sets = apply::apply_all(client, &ns, &desired.stateful_sets).await?;
    apply::apply_all(client, &ns, &desired.jobs).await?;
    let mut deployments = apply::apply_all(client, &ns, &desired.deployments).await?;
    apply::apply_all(client, &ns, &desired.services).await?;
    apply::apply_all(client, &ns, &desired.pdbs).await?;
    apply::apply_all(client, &ns, &desired.hpas).await?;
    apply::apply_all(client, &ns, &desired.gateway_secrets).await?;
    deployments.extend(apply::apply_all(client, &ns, &desired.gateway_deployments).await?);
    let gateway_services = apply::apply_all(client, &ns, &desired.gateway_services).await?;
    apply::apply_all(client, &ns, &desired.ingresses).await?;

    // Prune what is labelled as ours but no longer desired (e.g. a store switched to
    // external, autoscaling removed, the Job of a previous version).
    let mut pruned = Vec::new();
    let all_deployments: Vec<Deployment> = desired
        .deployments
        .iter()
        .chain(&desired.gateway_deployments)
        .cloned()
        .collect();
    pruned.extend(apply::prune(client, &ns, &observed.deployments, &all_deployments).await?);
    pruned
        .extend(apply::prune(client, &ns, &observed.stateful_sets, &desired.stateful_sets).await?);
    let keep_jobs: BTreeSet<&str> = desired
        .plans
        .values()
        .map(|p| p.job_name.as_str())
        .chain(desired.sample.iter().map(|p| p.job_name.as_str()))
        .collect();
    let stale_jobs: Vec<Job> = observed
        .jobs
        .iter()
        .filter(|j| !keep_jobs.contains(j.name_any().as_str()))
        .cloned()
        .collect();
    pruned.extend(apply::prune::<Job>(client, &ns, &stale_jobs, &[]).await?);
    let all_services: Vec<Service> = desired
        .store_services
        .iter()
        .chain(&desired.services)
        .chain(&desired.gateway_services)
        .cloned()
        .collect();
    pruned.extend(apply::prune(client, &ns, &observed.services, &all_services).await?);
    pruned.extend(apply::prune(client, &ns, &observed.hpas, &desired.hpas).await?);
    pruned.extend(apply::prune(client, &ns, &observed.pdbs, &desired.pdbs).await?);
    pruned.extend(apply::prune(client, &ns, &observed.ingresses, &desired.ingresses).await?);
    pruned.extend(
        apply::prune(
            client,
            &ns,
            &observed.network_policies,
            &desired.network_policies,
        )
        .await?,
    );
    if !pruned.is_empty() {
        info!(?pruned, "pruned objects no longer desired");
    }

    let lb = gateway_services
        .first()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|i| i.first())
        .and_then(|i| i.ip.clone().or_else(|| i.hostname.clone()));
    let node_port = gateway_services
        .first()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first())
        .and_then(|p| p.node_port);
    let new = compute_status(
        &mbs,
        &inst,
        &deployments,
        &stateful_sets,
        &desired,
        (lb, node_port),
    );
    let ready = new.phase == Some(Phase::Ready);
    finish(&mbs, &ctx, new).await?;
    Ok(Action::requeue(if ready {
        READY_REQUEUE
    } else {
        PROGRESS_REQUEUE
    }))
}

/// Field manager that keeps `spec.replicas` when autoscaling is switched on (see below).
const HPA_HANDOVER_MANAGER: &str = "moviebook-operator-hpa-handover";

/// True when `manager` owns `spec.replicas` of the object.
fn owns_replicas(d: &Deployment, manager: &str) -> bool {
    d.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(manager)
            && m.fields_v1.as_ref().is_some_and(|f| {
                f.0.get("f:spec")
                    .and_then(|s| s.get("f:replicas"))
                    .is_some()
            })
    })
}

/// When a running service switches to autoscaling, the operator stops applying
/// `spec.replicas`. Were it the field's only owner, Kubernetes would drop the field and reset the
/// Deployment to one replica until the HPA scales it back. So the current count is first
/// applied by a second manager that never applies again: the value stays, and the HPA takes it
/// from there (the ownership transfer the server-side apply docs describe).
async fn hand_replicas_to_hpa(
    client: &Client,
    ns: &str,
    desired: &build::Desired,
    observed: &Observed,
) -> Result<()> {
    for want in &desired.deployments {
        let autoscaled = want.spec.as_ref().is_some_and(|s| s.replicas.is_none());
        let Some(have) = observed
            .deployments
            .iter()
            .find(|d| d.name_any() == want.name_any())
        else {
            continue;
        };
        if !autoscaled || !owns_replicas(have, build::FIELD_MANAGER) {
            continue;
        }
        let replicas = have.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let patch = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": have.name_any(), "namespace": ns},
            "spec": {"replicas": replicas},
        });
        Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(
                &have.name_any(),
                &PatchParams::apply(HPA_HANDOVER_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .context(format!(
                "handing replicas of {} to its HPA",
                have.name_any()
            ))?;
    }
    Ok(())
}

fn compute_status(
    mbs: &MovieBookingSystem,
    inst: &Instance,
    deployments: &[Deployment],
    stateful_sets: &[StatefulSet],
    desired: &build::Desired,
    (lb_address, node_port): (Option<String>, Option<i32>),
) -> MovieBookingSystemStatus {
    let obs = status::Observation {
        name: &inst.name,
        generation: mbs.metadata.generation,
        paused: mbs.spec.paused,
        invalid: None,
        deployments,
        stateful_sets,
        plans: &desired.plans,
        sample: desired.sample.as_ref(),
        lb_address,
        node_port,
        namespace: &inst.namespace,
    };
    status::compute(&mbs.spec, &obs, mbs.status.as_ref(), &now())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Reports a spec that cannot be acted upon: `Ready=False` with the error's reason
/// (`InvalidSpec`, `Forbidden`) and a Warning Event.
async fn report_invalid(
    mbs: &MovieBookingSystem,
    ctx: &Context,
    inst: &Instance,
    err: &Error,
) -> Result<()> {
    let mut new = mbs.status.clone().unwrap_or_default();
    new.phase = Some(Phase::Failed);
    new.observed_generation = mbs.metadata.generation;
    let message = err.to_string();
    let previous = new
        .conditions
        .iter()
        .find(|c| c.type_ == status::READY)
        .cloned();
    let unchanged = previous
        .as_ref()
        .is_some_and(|c| c.status == "False" && c.reason == err.reason() && c.message == message);
    new.conditions.retain(|c| c.type_ != status::READY);
    new.conditions.insert(
        0,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: status::READY.into(),
            status: "False".into(),
            reason: err.reason().into(),
            message: message.clone(),
            observed_generation: mbs.metadata.generation,
            last_transition_time: previous
                .filter(|c| c.status == "False")
                .map(|c| c.last_transition_time)
                .unwrap_or_else(now),
        },
    );
    debug!(name = %inst.name, "invalid spec: {message}");
    write_status(ctx, mbs, &new).await?;
    if !unchanged {
        publish(ctx, mbs, EventType::Warning, err.reason(), message).await;
    }
    Ok(())
}

/// Writes the status if it changed, then publishes Events for the transitions.
async fn finish(
    mbs: &MovieBookingSystem,
    ctx: &Context,
    new: MovieBookingSystemStatus,
) -> Result<()> {
    let events = transition_events(mbs.status.as_ref(), &new, &mbs.spec.version);
    write_status(ctx, mbs, &new).await?;
    for (type_, reason, note) in events {
        publish(ctx, mbs, type_, reason, note).await;
    }
    Ok(())
}

async fn write_status(
    ctx: &Context,
    mbs: &MovieBookingSystem,
    new: &MovieBookingSystemStatus,
) -> Result<()> {
    if mbs.status.as_ref() == Some(new) {
        return Ok(());
    }
    let ns = mbs.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<MovieBookingSystem> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = json!({
        "apiVersion": MovieBookingSystem::api_version(&()),
        "kind": MovieBookingSystem::kind(&()),
        "status": new,
    });
    api.patch_status(
        &mbs.name_any(),
        &PatchParams::apply(build::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .context("writing status")?;
    Ok(())
}

/// Events worth telling a human, derived from the status change (pure, so it is tested
/// without an API server, and an unchanged status yields no Event and so no write).
pub fn transition_events(
    old: Option<&MovieBookingSystemStatus>,
    new: &MovieBookingSystemStatus,
    version: &str,
) -> Vec<(EventType, &'static str, String)> {
    let mut out = Vec::new();
    let empty = MovieBookingSystemStatus::default();
    let old = old.unwrap_or(&empty);
    for (svc, m) in &new.migrations {
        let before = old.migrations.get(svc);
        if before.map(|b| (&b.job, b.state)) == Some((&m.job, m.state)) {
            continue;
        }
        match m.state {
            MigrationState::Running => out.push((
                EventType::Normal,
                "MigrationStarted",
                format!("{svc}: running migration Job {} ({})", m.job, m.image),
            )),
            MigrationState::Succeeded => out.push((
                EventType::Normal,
                "MigrationSucceeded",
                format!("{svc}: migration Job {} succeeded", m.job),
            )),
            MigrationState::Failed => out.push((
                EventType::Warning,
                "MigrationFailed",
                format!(
                    "{svc}: migration Job {} failed; the rollout is held back",
                    m.job
                ),
            )),
            MigrationState::Waiting | MigrationState::Skipped => {}
        }
    }
    for svc in ServiceKind::ALL {
        let before = old.components.get(svc.name()).and_then(|c| c.image.clone());
        let after = new.components.get(svc.name()).and_then(|c| c.image.clone());
        if let (Some(b), Some(a)) = (&before, &after)
            && a != b
        {
            out.push((
                EventType::Normal,
                "RolloutStarted",
                format!("{}: {b} -> {a}", svc.name()),
            ));
        }
    }
    let was_ready = status::is_true(Some(old), status::READY);
    let is_ready = status::is_true(Some(new), status::READY);
    if is_ready && !was_ready {
        out.push((
            EventType::Normal,
            "Ready",
            format!("all components ready at version {version}"),
        ));
    }
    if was_ready && !is_ready && new.phase != Some(Phase::Paused) {
        out.push((
            EventType::Normal,
            "Progressing",
            "not all components are ready".to_string(),
        ));
    }
    if new.phase == Some(Phase::Paused) && old.phase != Some(Phase::Paused) {
        out.push((
            EventType::Normal,
            "Paused",
            "reconciliation paused: no changes are applied".to_string(),
        ));
    }
    if old.phase == Some(Phase::Paused) && new.phase != Some(Phase::Paused) {
        out.push((
            EventType::Normal,
            "Resumed",
            "reconciliation resumed".to_string(),
        ));
    }
    out
}

async fn publish(
    ctx: &Context,
    mbs: &MovieBookingSystem,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    // Events are best effort: failing to record one must not fail the reconcile.
    if let Err(e) = ctx.recorder.publish(&ev, &mbs.object_ref(&())).await {
        warn!(error = %e, reason, "could not publish event");
    }
}

/// Runs when the resource is being deleted. Owned objects go with it through garbage
/// collection; data is what needs a decision: PVCs (not owned: StatefulSets create them) and
/// the generated credentials, without which retained data could not be opened again.
async fn cleanup(mbs: Arc<MovieBookingSystem>, ctx: Arc<Context>) -> Result<Action> {
    let inst = instance(&mbs)?;
    let ns = inst.namespace.as_str();
    let client = &ctx.client;
    match mbs.spec.data_on_delete {
        DataOnDelete::Delete => {
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
            let list = pvcs
                .list(&ListParams::default().labels(&inst.managed_selector()))
                .await
                .context("listing PersistentVolumeClaims")?;
            for pvc in list.items {
                apply::delete::<PersistentVolumeClaim>(client, ns, &pvc.name_any()).await?;
            }
            publish(
                &ctx,
                &mbs,
                EventType::Normal,
                "DataDeleted",
                "deleted the stores' volumes (dataOnDelete: Delete)".into(),
            )
            .await;
        }
        DataOnDelete::Retain => {
            // Drop the owner reference so garbage collection keeps the credentials.
            let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
            let name = config::secret_name(&inst);
            if secrets
                .get_opt(&name)
                .await
                .context("reading the generated Secret")?
                .is_some()
            {
                secrets
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"ownerReferences": null}})),
                    )
                    .await
                    .context("orphaning the generated Secret")?;
            }
            publish(
                &ctx,
                &mbs,
                EventType::Normal,
                "DataRetained",
                format!("kept the stores' volumes and Secret {name} (dataOnDelete: Retain)"),
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

/// Watches the resource and the workloads it owns, and reconciles until `shutdown` resolves.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    pod_name: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let mbs: Api<MovieBookingSystem> = scoped(&client, namespace.as_deref());
    // Fail fast with a clear message when the CRD is missing instead of retrying forever.
    mbs.list(&ListParams::default().limit(1))
        .await
        .context("listing MovieBookingSystems (is the CRD installed? `moviebook-operator crdgen | kubectl apply -f -`)")?;
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    let ctx = Arc::new(Context::new(client.clone(), pod_name));
    Controller::new(mbs, watcher::Config::default().any_semantic())
        .owns(
            scoped::<Deployment>(&client, namespace.as_deref()),
            owned.clone(),
        )
        .owns(
            scoped::<StatefulSet>(&client, namespace.as_deref()),
            owned.clone(),
        )
        .owns(scoped::<Job>(&client, namespace.as_deref()), owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(object = %obj, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile attempt failed"),
            }
        })
        .await;
    Ok(())
}

fn scoped<K: Managed>(client: &Client, namespace: Option<&str>) -> Api<K> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Object reference of a resource, for tests that trigger reconciles by hand.
pub fn object_ref(mbs: &MovieBookingSystem) -> ObjectRef<MovieBookingSystem> {
    ObjectRef::from_obj(mbs)
}

#[cfg(test)]
mod ticket_key_tests {
    #[test]
    fn a_new_ticket_key_is_a_32_byte_seed_and_never_repeats() {
        let a = super::new_ticket_key();
        let seed =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &a).expect("base64");
        assert_eq!(seed.len(), 32);
        assert_ne!(a, super::new_ticket_key());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ComponentStatus, MigrationStatus};

    #[test]
    fn secrets_outside_the_granted_namespaces_are_reported_not_retried() {
        let denied = kube::Error::Api(
            kube::core::Status::failure("secrets is forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        let err = secrets_forbidden(denied, "shop");
        assert!(err.is_user_error(), "{err}");
        assert_eq!(err.reason(), "Forbidden");
        assert!(
            err.to_string()
                .contains("add shop to the chart's rbac.secretNamespaces"),
            "{err}"
        );

        let other = kube::Error::Api(
            kube::core::Status::failure("etcd timeout", "Timeout")
                .with_code(504)
                .boxed(),
        );
        let err = secrets_forbidden(other, "shop");
        assert!(!err.is_user_error(), "{err}");
        assert_eq!(err.metric_label(), "kube");
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(50), Duration::from_secs(300));
    }

    fn with_migration(state: MigrationState, image: &str) -> MovieBookingSystemStatus {
        let mut s = MovieBookingSystemStatus::default();
        s.migrations.insert(
            "user".into(),
            MigrationStatus {
                job: "demo-user-migrate-0-2-0-abc".into(),
                image: "u:0.2.0".into(),
                state,
            },
        );
        s.components.insert(
            "user".into(),
            ComponentStatus {
                ready_replicas: 1,
                desired_replicas: 1,
                image: Some(image.into()),
            },
        );
        s
    }

    #[test]
    fn transitions_produce_events_and_steady_state_none() {
        let running = with_migration(MigrationState::Running, "u:0.1.0");
        let reasons = |old: Option<&MovieBookingSystemStatus>,
                       new: &MovieBookingSystemStatus|
         -> Vec<&'static str> {
            transition_events(old, new, "0.2.0")
                .into_iter()
                .map(|e| e.1)
                .collect()
        };
        assert_eq!(reasons(None, &running), ["MigrationStarted"]);
        assert!(reasons(Some(&running), &running).is_empty());
        let done = with_migration(MigrationState::Succeeded, "u:0.2.0");
        assert_eq!(
            reasons(Some(&running), &done),
            ["MigrationSucceeded", "RolloutStarted"]
        );
        let failed = with_migration(MigrationState::Failed, "u:0.1.0");
        let evs = transition_events(Some(&running), &failed, "0.2.0");
        assert_eq!(evs[0].0, EventType::Warning);
        assert_eq!(evs[0].1, "MigrationFailed");
        let mut paused = done.clone();
        paused.phase = Some(Phase::Paused);
        assert_eq!(reasons(Some(&done), &paused), ["Paused"]);
        assert_eq!(reasons(Some(&paused), &done), ["Resumed"]);
    }
}
