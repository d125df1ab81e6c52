//! Status is computed only from what was applied or read back, never from intentions, and
//! it is a pure function of its inputs: an unchanged cluster yields an identical status, so
//! the controller can skip the write (no timestamps move unless a condition flips).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::build::sample::SamplePlan;
use crate::build::{ServiceKind, ServicePlan, StoreKind, gateway};
use crate::crd::{
    ComponentStatus, Endpoints, GatewayType, MigrationState, MigrationStatus,
    MovieBookingSystemSpec, MovieBookingSystemStatus, Phase,
};

pub const READY: &str = "Ready";
pub const DATABASES_READY: &str = "DatabasesReady";
pub const MIGRATIONS_COMPLETE: &str = "MigrationsComplete";
pub const SERVICES_READY: &str = "ServicesReady";
pub const GATEWAY_READY: &str = "GatewayReady";
/// Only with `spec.sampleData`: the sample catalogue is loaded.
pub const SAMPLE_DATA_LOADED: &str = "SampleDataLoaded";

/// What the status is computed from.
#[derive(Debug)]
pub struct Observation<'a> {
    pub name: &'a str,
    pub generation: Option<i64>,
    pub paused: bool,
    /// Set when validation or dereferencing failed: the message for the `Ready` condition.
    pub invalid: Option<String>,
    /// The five services' and Kong's Deployments as stored.
    pub deployments: &'a [Deployment],
    /// The managed stores' StatefulSets as stored.
    pub stateful_sets: &'a [StatefulSet],
    pub plans: &'a BTreeMap<ServiceKind, ServicePlan>,
    /// The sample-data Job, when `sampleData` is on.
    pub sample: Option<&'a SamplePlan>,
    /// Address of the gateway's load balancer, when it has one.
    pub lb_address: Option<String>,
    /// Node port Kubernetes allocated to the gateway Service.
    pub node_port: Option<i32>,
    pub namespace: &'a str,
}

/// Readiness of a Deployment: the controller saw the current spec, and enough pods of the
/// current template are ready.
fn deployment_ready(d: &Deployment, desired: i32) -> bool {
    let status = d.status.clone().unwrap_or_default();
    let seen = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    seen && status.updated_replicas.unwrap_or(0) >= desired
        && status.ready_replicas.unwrap_or(0) >= desired
}

fn desired_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn image_of(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
}

fn find<'a, K: kube::Resource>(list: &'a [K], name: &str) -> Option<&'a K> {
    list.iter().find(|o| o.meta().name.as_deref() == Some(name))
}

/// Computes the new status. `previous` keeps condition transition times stable; `now` is used
/// only for conditions that change.
pub fn compute(
    spec: &MovieBookingSystemSpec,
    obs: &Observation<'_>,
    previous: Option<&MovieBookingSystemStatus>,
    now: &Time,
) -> MovieBookingSystemStatus {
    let child = |s: &str| format!("{}-{}", obs.name, s);
    let mut components = BTreeMap::new();
    let mut total = 0;
    let mut ready = 0;

    // stores
    let mut stores_waiting = Vec::new();
    for store in StoreKind::ALL {
        if store.spec(spec).managed.is_none() {
            continue;
        }
        let sts = find(obs.stateful_sets, &child(store.name()));
        let r = sts
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        let image = sts
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.clone());
        total += 1;
        if r >= 1 {
            ready += 1;
        } else {
            stores_waiting.push(store.name());
        }
        components.insert(
            store.name().to_string(),
            ComponentStatus {
                ready_replicas: r,
                desired_replicas: 1,
                image,
            },
        );
    }

    // services
    let mut services_waiting = Vec::new();
    let mut migrations = BTreeMap::new();
    for svc in ServiceKind::ALL {
        let Some(plan) = obs.plans.get(&svc) else {
            continue;
        };
        migrations.insert(
            svc.name().to_string(),
            MigrationStatus {
                job: plan.job_name.clone(),
                image: plan.desired_image.clone(),
                state: plan.migration,
            },
        );
        total += 1;
        let dep = find(obs.deployments, &child(svc.name()));
        let (status, ok) = match dep {
            Some(d) => {
                let desired = desired_replicas(d);
                let image = image_of(d);
                let ok = deployment_ready(d, desired)
                    && image.as_deref() == Some(plan.desired_image.as_str());
                (
                    ComponentStatus {
                        ready_replicas: d
                            .status
                            .as_ref()
                            .and_then(|s| s.ready_replicas)
                            .unwrap_or(0),
                        desired_replicas: desired,
                        image,
                    },
                    ok,
                )
            }
            None => (
                ComponentStatus {
                    ready_replicas: 0,
                    desired_replicas: svc.spec(spec).replicas.unwrap_or(1),
                    image: None,
                },
                false,
            ),
        };
        if ok {
            ready += 1;
        } else {
            services_waiting.push(format!(
                "{} ({}/{})",
                svc.name(),
                status.ready_replicas,
                status.desired_replicas
            ));
        }
        components.insert(svc.name().to_string(), status);
    }

    // gateway: only Kong is a component of ours; an Ingress is served by the cluster's
    // controller and the public Services need nothing to be ready but the services.
    let kong_gateway = spec.gateway.type_ == GatewayType::Kong;
    let mut gateway_ok = true;
    if kong_gateway {
        total += 1;
        let kong = find(obs.deployments, &child(gateway::COMPONENT));
        gateway_ok = kong.is_some_and(|d| deployment_ready(d, desired_replicas(d)));
        if gateway_ok {
            ready += 1;
        }
        components.insert(
            gateway::COMPONENT.to_string(),
            ComponentStatus {
                ready_replicas: kong
                    .and_then(|d| d.status.as_ref())
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0),
                desired_replicas: kong
                    .map(desired_replicas)
                    .unwrap_or(spec.gateway.kong.replicas),
                image: kong.and_then(image_of),
            },
        );
    }

    // conditions
    let mut conds: Vec<(&str, bool, String, String)> = Vec::new();
    conds.push(if stores_waiting.is_empty() {
        (
            DATABASES_READY,
            true,
            "AllStoresReady".into(),
            "every store is ready".into(),
        )
    } else {
        (
            DATABASES_READY,
            false,
            "StoresNotReady".into(),
            format!("waiting for: {}", stores_waiting.join(", ")),
        )
    });
    let by_state = |s: MigrationState| -> Vec<String> {
        obs.plans
            .iter()
            .filter(|(_, p)| p.migration == s)
            .map(|(k, p)| format!("{} (job {})", k.name(), p.job_name))
            .collect()
    };
    let failed = by_state(MigrationState::Failed);
    let running = by_state(MigrationState::Running);
    let waiting = by_state(MigrationState::Waiting);
    conds.push(if !failed.is_empty() {
        (
            MIGRATIONS_COMPLETE,
            false,
            "MigrationFailed".into(),
            format!(
                "failed: {}; fix the cause and change the spec to retry",
                failed.join(", ")
            ),
        )
    } else if !running.is_empty() {
        (
            MIGRATIONS_COMPLETE,
            false,
            "MigrationRunning".into(),
            format!("running: {}", running.join(", ")),
        )
    } else if !waiting.is_empty() {
        (
            MIGRATIONS_COMPLETE,
            false,
            "WaitingForDatabases".into(),
            format!("waiting for the stores: {}", waiting.join(", ")),
        )
    } else if obs
        .plans
        .values()
        .all(|p| p.migration == MigrationState::Skipped)
    {
        (
            MIGRATIONS_COMPLETE,
            true,
            "MigrationsDisabled".into(),
            "migrations are disabled by policy".into(),
        )
    } else {
        (
            MIGRATIONS_COMPLETE,
            true,
            "MigrationsSucceeded".into(),
            format!("migrated to {}", spec.version),
        )
    });
    conds.push(if services_waiting.is_empty() {
        (
            SERVICES_READY,
            true,
            "AllServicesReady".into(),
            format!("all services run {}", spec.version),
        )
    } else {
        (
            SERVICES_READY,
            false,
            "RolloutInProgress".into(),
            format!("not ready: {}", services_waiting.join(", ")),
        )
    });
    conds.push(match (spec.gateway.type_, gateway_ok) {
        (GatewayType::Kong, true) => (
            GATEWAY_READY,
            true,
            "KongReady".into(),
            "Kong is serving".into(),
        ),
        (GatewayType::Kong, false) => (
            GATEWAY_READY,
            false,
            "KongNotReady".into(),
            "Kong has no ready pod yet".into(),
        ),
        (GatewayType::Ingress, _) => (
            GATEWAY_READY,
            true,
            "IngressApplied".into(),
            "the Ingress routes the public paths to the services".into(),
        ),
        (GatewayType::None, _) => (
            GATEWAY_READY,
            true,
            "PublicServices".into(),
            "no gateway: the public Services expose the services".into(),
        ),
    });
    let sample_failed = obs
        .sample
        .is_some_and(|p| p.state == MigrationState::Failed);
    if let Some(p) = obs.sample {
        conds.push(match p.state {
            MigrationState::Succeeded => (
                SAMPLE_DATA_LOADED,
                true,
                "SampleDataLoaded".into(),
                format!("Job {} loaded the sample catalogue", p.job_name),
            ),
            MigrationState::Failed => (
                SAMPLE_DATA_LOADED,
                false,
                "SampleDataFailed".into(),
                format!(
                    "Job {} failed; fix the cause and change the spec to retry",
                    p.job_name
                ),
            ),
            MigrationState::Running => (
                SAMPLE_DATA_LOADED,
                false,
                "SampleDataLoading".into(),
                format!("running Job {}", p.job_name),
            ),
            MigrationState::Waiting | MigrationState::Skipped => (
                SAMPLE_DATA_LOADED,
                false,
                "WaitingForMigration".into(),
                "waiting for cinema's migration".into(),
            ),
        });
    }
    let all_ok = conds.iter().all(|c| c.1);
    let ready_cond = if let Some(msg) = &obs.invalid {
        (READY, false, "InvalidSpec".to_string(), msg.clone())
    } else if all_ok {
        (
            READY,
            true,
            "AllComponentsReady".into(),
            format!("{ready}/{total} components ready"),
        )
    } else if !failed.is_empty() {
        (
            READY,
            false,
            "MigrationFailed".into(),
            format!("{ready}/{total} components ready"),
        )
    } else if sample_failed {
        (
            READY,
            false,
            "SampleDataFailed".into(),
            format!("{ready}/{total} components ready"),
        )
    } else {
        (
            READY,
            false,
            "Progressing".into(),
            format!("{ready}/{total} components ready"),
        )
    };
    conds.insert(0, ready_cond);

    let previous_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let conditions = conds
        .into_iter()
        .map(|(type_, ok, reason, message)| {
            condition(
                previous_conditions,
                type_,
                ok,
                reason,
                message,
                obs.generation,
                now,
            )
        })
        .collect();

    let phase = if obs.invalid.is_some() {
        Phase::Failed
    } else if obs.paused {
        Phase::Paused
    } else if !failed.is_empty() || sample_failed {
        Phase::Failed
    } else if all_ok {
        Phase::Ready
    } else {
        Phase::Progressing
    };

    let inst_dns = |svc: &str| format!("{}.{}.svc", svc, obs.namespace);
    let graphql = endpoint(spec, obs);
    MovieBookingSystemStatus {
        phase: Some(phase),
        observed_generation: obs.generation,
        conditions,
        ready_components: Some(format!("{ready}/{total}")),
        components,
        migrations,
        endpoints: Some(Endpoints {
            graphql: Some(graphql),
            gateway: kong_gateway
                .then(|| format!("http://{}", inst_dns(&child(gateway::COMPONENT)))),
        }),
    }
}

fn endpoint(spec: &MovieBookingSystemSpec, obs: &Observation<'_>) -> String {
    // Same rule as the builder, from names only (no owner reference is needed for a URL).
    let inst = crate::build::Instance {
        name: obs.name.to_string(),
        namespace: obs.namespace.to_string(),
        owner: Default::default(),
        generation: obs.generation.unwrap_or(0),
    };
    gateway::graphql_endpoint(spec, &inst, obs.lb_address.as_deref(), obs.node_port)
}

/// A condition, keeping the previous transition time when its status did not change.
fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: String,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason,
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Looks up a condition's status.
pub fn is_true(status: Option<&MovieBookingSystemStatus>, type_: &str) -> bool {
    status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::*;
    use crate::build::{self, Desired};
    use k8s_openapi::api::apps::v1::{DeploymentStatus, StatefulSetStatus};

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("ts"))
    }

    fn ready_objects(d: &Desired) -> (Vec<Deployment>, Vec<StatefulSet>) {
        let deps = d
            .deployments
            .iter()
            .chain(&d.gateway_deployments)
            .cloned()
            .map(|mut dep| {
                let n = desired_replicas(&dep);
                dep.metadata.generation = Some(1);
                dep.status = Some(DeploymentStatus {
                    observed_generation: Some(1),
                    ready_replicas: Some(n),
                    updated_replicas: Some(n),
                    ..DeploymentStatus::default()
                });
                dep
            })
            .collect();
        let sts = d
            .stateful_sets
            .iter()
            .cloned()
            .map(|mut s| {
                s.status = Some(StatefulSetStatus {
                    ready_replicas: Some(1),
                    ..StatefulSetStatus::default()
                });
                s
            })
            .collect();
        (deps, sts)
    }

    fn succeeded(mbs: &crate::crd::MovieBookingSystem) -> build::Resolved {
        let mut res = resolved_ready();
        for svc in ServiceKind::ALL {
            let name = build::migrations::job_name(svc, &mbs.spec, &instance(), &res);
            res.jobs.insert(
                name,
                build::ObservedJob {
                    state: MigrationState::Succeeded,
                    generation: Some(1),
                },
            );
        }
        res
    }

    fn obs<'a>(d: &'a Desired, deps: &'a [Deployment], sts: &'a [StatefulSet]) -> Observation<'a> {
        Observation {
            name: "demo",
            generation: Some(1),
            paused: false,
            invalid: None,
            deployments: deps,
            stateful_sets: sts,
            plans: &d.plans,
            sample: d.sample.as_ref(),
            lb_address: None,
            node_port: None,
            namespace: "shop",
        }
    }

    #[test]
    fn everything_ready_is_ready_and_stable() {
        let mbs = sample();
        let d = build::build(&mbs.spec, &instance(), &succeeded(&mbs));
        let (deps, sts) = ready_objects(&d);
        let s = compute(&mbs.spec, &obs(&d, &deps, &sts), None, &now());
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(s.ready_components.as_deref(), Some("10/10"));
        assert!(
            s.conditions.iter().all(|c| c.status == "True"),
            "{:?}",
            s.conditions
        );
        let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            [
                READY,
                DATABASES_READY,
                MIGRATIONS_COMPLETE,
                SERVICES_READY,
                GATEWAY_READY
            ]
        );
        assert_eq!(s.components["booking"].desired_replicas, 2);
        assert_eq!(
            s.components["booking"].image.as_deref(),
            Some("ghcr.io/moviebook/booking-service:0.1.0")
        );
        // recomputing later with the same inputs changes nothing (no status write)
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_999).expect("ts"));
        assert_eq!(
            compute(&mbs.spec, &obs(&d, &deps, &sts), Some(&s), &later),
            s
        );
    }

    #[test]
    fn without_kong_there_is_no_gateway_to_wait_for_but_the_sample_data() {
        let mut mbs = sample();
        mbs.spec.gateway.type_ = GatewayType::None;
        mbs.spec.sample_data = true;
        let res = succeeded(&mbs);
        let d = build::build(&mbs.spec, &instance(), &res);
        assert!(d.gateway_deployments.is_empty() && d.gateway_secrets.is_empty());
        let (deps, sts) = ready_objects(&d);
        let s = compute(&mbs.spec, &obs(&d, &deps, &sts), None, &now());
        let c = |s: &MovieBookingSystemStatus, t: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| (c.status.clone(), c.reason.clone()))
                .expect("cond")
        };
        assert_eq!(
            c(&s, GATEWAY_READY),
            ("True".into(), "PublicServices".into())
        );
        assert_eq!(
            c(&s, SAMPLE_DATA_LOADED),
            ("False".into(), "SampleDataLoading".into()),
            "the seed Job was just created"
        );
        assert_eq!(
            s.phase,
            Some(Phase::Progressing),
            "Ready waits for the sample data"
        );
        assert_eq!(
            s.ready_components.as_deref(),
            Some("9/9"),
            "no Kong component"
        );
        assert!(
            s.endpoints
                .as_ref()
                .and_then(|e| e.gateway.clone())
                .is_none()
        );

        let mut res = res;
        let seed = d.sample.clone().expect("plan").job_name;
        res.jobs.insert(
            seed,
            build::ObservedJob {
                state: MigrationState::Succeeded,
                generation: Some(1),
            },
        );
        let d = build::build(&mbs.spec, &instance(), &res);
        let s = compute(&mbs.spec, &obs(&d, &deps, &sts), None, &now());
        assert_eq!(c(&s, SAMPLE_DATA_LOADED).0, "True");
        assert_eq!(s.phase, Some(Phase::Ready));
    }

    #[test]
    fn fresh_install_waits_for_stores() {
        let mbs = sample();
        let d = build::build(&mbs.spec, &instance(), &resolved());
        let s = compute(&mbs.spec, &obs(&d, &[], &[]), None, &now());
        assert_eq!(s.phase, Some(Phase::Progressing));
        let c = |t: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == t)
                .cloned()
                .expect("cond")
        };
        assert_eq!(c(DATABASES_READY).status, "False");
        assert!(c(DATABASES_READY).message.contains("postgres"));
        assert_eq!(c(MIGRATIONS_COMPLETE).reason, "WaitingForDatabases");
        assert_eq!(s.ready_components.as_deref(), Some("0/10"));
    }

    #[test]
    fn failed_migration_is_reported() {
        let mbs = sample();
        let mut res = succeeded(&mbs);
        let job = build::migrations::job_name(ServiceKind::Cinema, &mbs.spec, &instance(), &res);
        res.jobs.insert(
            job.clone(),
            build::ObservedJob {
                state: MigrationState::Failed,
                generation: Some(1),
            },
        );
        let d = build::build(&mbs.spec, &instance(), &res);
        let (deps, sts) = ready_objects(&d);
        let s = compute(&mbs.spec, &obs(&d, &deps, &sts), None, &now());
        assert_eq!(s.phase, Some(Phase::Failed));
        let m = s
            .conditions
            .iter()
            .find(|c| c.type_ == MIGRATIONS_COMPLETE)
            .expect("cond");
        assert_eq!(m.reason, "MigrationFailed");
        assert!(m.message.contains(&job), "{}", m.message);
        assert_eq!(s.migrations["cinema"].state, MigrationState::Failed);
    }

    #[test]
    fn old_image_is_not_ready_even_with_ready_pods() {
        let mbs = sample();
        let d = build::build(&mbs.spec, &instance(), &succeeded(&mbs));
        let (mut deps, sts) = ready_objects(&d);
        if let Some(p) = deps[0].spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            p.containers[0].image = Some("ghcr.io/moviebook/user-service:0.0.1".into());
        }
        let s = compute(&mbs.spec, &obs(&d, &deps, &sts), None, &now());
        assert_eq!(s.phase, Some(Phase::Progressing));
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == SERVICES_READY)
            .expect("cond");
        assert!(c.message.contains("user"), "{}", c.message);
    }
}
