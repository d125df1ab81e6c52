//! Migration Jobs and the rollout gate.
//!
//! Each service's schema migration runs as a Job named per version (`<instance>-<service>-
//! migrate-<version>-<hash>`), running `<service>-service migrate` from the new image. The
//! Deployment keeps its running image until that Job has succeeded, so a new version never
//! serves traffic against an old schema. Job names include a hash of the image and of where
//! the service's stores are, so pointing a service at another database migrates it again.
//! Jobs are immutable: an existing Job is never re-applied, and a failed one is deleted and
//! retried only after the spec changes (see `controller`).

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, PodSpec,
    PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

use super::config::config_map_name;
use super::services::{SERVICE_UID, service_env};
use super::{
    GENERATION_ANNOTATION, Instance, Resolved, ServiceKind, ServicePlan, default_resources,
    hash_of, pull_secrets, restricted_container, restricted_pod,
};
use crate::crd::{MigrationPolicy, MigrationState, MovieBookingSystemSpec};

/// Image of a service at the spec's version.
pub fn image(svc: ServiceKind, spec: &MovieBookingSystemSpec) -> String {
    format!(
        "{}/{}:{}",
        spec.image_registry.trim_end_matches('/'),
        svc.binary(),
        spec.version
    )
}

/// Component label of a service's migration Jobs.
pub fn component(svc: ServiceKind) -> String {
    format!("{}-migration", svc.name())
}

/// Name of the migration Job for `image`: readable (instance, service, version) and unique
/// (hash), at most 63 characters because Kubernetes copies it into a label.
pub fn job_name(
    svc: ServiceKind,
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    res: &Resolved,
) -> String {
    named_job(svc, "migrate", spec, inst, res)
}

/// `<instance>-<service>-<what>-<version>-<hash>`, the hash over the image and where the
/// service's stores are (see [`job_name`]).
pub fn named_job(
    svc: ServiceKind,
    what: &str,
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    res: &Resolved,
) -> String {
    let image = image(svc, spec);
    let mut parts = vec![image.clone()];
    for store in svc.stores() {
        parts.push(match res.external_urls.get(store) {
            Some(url) => format!("{}=external:{url}", store.name()),
            None => format!("{}=managed", store.name()),
        });
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let hash = hash_of(&refs);
    let version: String = spec
        .version
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut base = format!("{}-{}-{what}-{}", inst.name, svc.name(), version);
    base.truncate(54);
    let base = base.trim_end_matches('-');
    format!("{base}-{}", &hash[..8])
}

/// Decides the migration state and the image the Deployment may run.
pub fn plan(
    svc: ServiceKind,
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    res: &Resolved,
    _config_hash: &str,
    stores_ready: bool,
) -> ServicePlan {
    let desired_image = image(svc, spec);
    let job_name = job_name(svc, spec, inst, res);
    let running = res.running_images.get(&svc).cloned();
    if spec.migrations.policy == MigrationPolicy::Disabled {
        return ServicePlan {
            rollout_image: Some(desired_image.clone()),
            desired_image,
            job_name,
            migration: MigrationState::Skipped,
        };
    }
    let migration = match res.jobs.get(&job_name) {
        Some(job) => job.state,
        None if stores_ready => MigrationState::Running,
        None => MigrationState::Waiting,
    };
    let rollout_image = if migration == MigrationState::Succeeded {
        Some(desired_image.clone())
    } else {
        running
    };
    ServicePlan {
        desired_image,
        rollout_image,
        job_name,
        migration,
    }
}

/// The Job to create, if the plan needs one that does not exist yet.
pub fn job_to_create(
    svc: ServiceKind,
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    plan: &ServicePlan,
    res: &Resolved,
    config_hash: &str,
) -> Option<Job> {
    if plan.migration != MigrationState::Running || res.jobs.contains_key(&plan.job_name) {
        return None;
    }
    Some(job(svc, spec, inst, plan, config_hash))
}

/// A migration Job. `restartPolicy: Never` + `backoffLimit` retries in new pods, so a crash
/// leaves its logs behind.
pub fn job(
    svc: ServiceKind,
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    plan: &ServicePlan,
    config_hash: &str,
) -> Job {
    one_shot_job(
        svc,
        spec,
        inst,
        OneShot {
            name: &plan.job_name,
            image: &plan.desired_image,
            component: &component(svc),
            subcommand: "migrate",
            container: "migrate",
        },
        config_hash,
    )
}

/// What a one-shot Job of a service runs.
#[derive(Debug, Clone, Copy)]
pub struct OneShot<'a> {
    pub name: &'a str,
    pub image: &'a str,
    /// `app.kubernetes.io/component` of the Job and its pods.
    pub component: &'a str,
    /// `<service-binary> <subcommand>`.
    pub subcommand: &'a str,
    pub container: &'a str,
}

/// A Job's environment: the service's, without its private keys (a migration or a seed
/// only talks to the stores, so a compromised Job image signs nothing).
pub fn job_env(svc: ServiceKind, spec: &MovieBookingSystemSpec, inst: &Instance) -> Vec<EnvVar> {
    let mut env = service_env(svc, spec, inst);
    env.retain(|e| !super::config::PRIVATE_KEY_VARS.contains(&e.name.as_str()));
    env
}

/// A Job running `<binary> <subcommand>` once with the service's environment.
pub fn one_shot_job(
    svc: ServiceKind,
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    what: OneShot<'_>,
    config_hash: &str,
) -> Job {
    let component = what.component.to_string();
    let mut meta = inst.meta(what.name.to_string(), &component);
    meta.annotations = Some(BTreeMap::from([(
        GENERATION_ANNOTATION.to_string(),
        inst.generation.to_string(),
    )]));
    let container = Container {
        name: what.container.into(),
        image: Some(what.image.to_string()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().into()),
        command: Some(vec![svc.binary(), what.subcommand.into()]),
        env: Some(job_env(svc, spec, inst)),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: config_map_name(inst),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        resources: Some(default_resources("50m", "64Mi", "500m", "256Mi")),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(spec.migrations.backoff_limit),
            active_deadline_seconds: Some(spec.migrations.active_deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(inst.labels(&component)),
                    annotations: Some(BTreeMap::from([(
                        super::CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    security_context: Some(restricted_pod(SERVICE_UID)),
                    image_pull_secrets: pull_secrets(spec),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// State of an observed Job, as the Job controller reports it.
pub fn job_state(job: &Job) -> MigrationState {
    let status = job.status.clone().unwrap_or_default();
    let has = |t: &str| {
        status
            .conditions
            .as_ref()
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"))
    };
    if has("Complete") || status.succeeded.unwrap_or(0) > 0 {
        MigrationState::Succeeded
    } else if has("Failed") {
        MigrationState::Failed
    } else {
        MigrationState::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::ObservedJob;
    use crate::build::test_support::*;

    #[test]
    fn job_names_are_per_version_short_and_stable() {
        let mut mbs = sample();
        let n1 = job_name(
            ServiceKind::Notification,
            &mbs.spec,
            &instance(),
            &resolved(),
        );
        assert!(n1.starts_with("demo-notification-migrate-0-1-0-"), "{n1}");
        assert_eq!(
            n1,
            job_name(
                ServiceKind::Notification,
                &mbs.spec,
                &instance(),
                &resolved()
            )
        );
        mbs.spec.version = "0.2.0".into();
        let n2 = job_name(
            ServiceKind::Notification,
            &mbs.spec,
            &instance(),
            &resolved(),
        );
        assert_ne!(n1, n2);
        mbs.spec.version =
            "a-very-long-version-string-that-keeps-going-and-going.1234567890".into();
        let long = job_name(
            ServiceKind::Notification,
            &mbs.spec,
            &instance(),
            &resolved(),
        );
        assert!(long.len() <= 63, "{long} is {} chars", long.len());
        // a service moved to another database migrates again
        let mut res = resolved();
        res.external_urls
            .insert(crate::build::StoreKind::Mongodb, "mongodb://x".into());
        assert_ne!(
            job_name(ServiceKind::User, &mbs.spec, &instance(), &res),
            job_name(ServiceKind::User, &mbs.spec, &instance(), &resolved())
        );
    }

    #[test]
    fn job_runs_migrate_subcommand_of_new_image() {
        let mbs = sample();
        let plan = plan(
            ServiceKind::Cinema,
            &mbs.spec,
            &instance(),
            &resolved_ready(),
            "h",
            true,
        );
        let job = job_to_create(
            ServiceKind::Cinema,
            &mbs.spec,
            &instance(),
            &plan,
            &resolved_ready(),
            "h",
        )
        .expect("job");
        let pod = job
            .spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .as_ref()
            .expect("pod");
        let c = &pod.containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some("ghcr.io/moviebook/cinema-service:0.1.0")
        );
        assert_eq!(
            c.command.as_deref(),
            Some(&["cinema-service".to_string(), "migrate".into()][..])
        );
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let env: Vec<&str> = c
            .env
            .as_ref()
            .expect("env")
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert!(env.contains(&"DATABASE_URL"), "{env:?}");
        assert_eq!(
            job.metadata.annotations.as_ref().expect("ann")[GENERATION_ANNOTATION],
            "1"
        );
        assert_eq!(job.spec.as_ref().and_then(|s| s.backoff_limit), Some(3));
    }

    #[test]
    fn jobs_get_the_stores_but_no_private_key() {
        let mbs = sample();
        for svc in ServiceKind::ALL {
            let pod_env: Vec<String> = service_env(svc, &mbs.spec, &instance())
                .into_iter()
                .map(|e| e.name)
                .collect();
            let job_env: Vec<String> = job_env(svc, &mbs.spec, &instance())
                .into_iter()
                .map(|e| e.name)
                .collect();
            for var in crate::build::config::PRIVATE_KEY_VARS {
                assert!(!job_env.iter().any(|n| n == var), "{svc:?} Job has {var}");
            }
            // Everything else the pods get, the Job gets too (the store URLs above all).
            let kept: Vec<&String> = pod_env
                .iter()
                .filter(|n| !crate::build::config::PRIVATE_KEY_VARS.contains(&n.as_str()))
                .collect();
            assert_eq!(kept, job_env.iter().collect::<Vec<_>>(), "{svc:?}");
        }
        // The pods that sign do get their keys.
        let booking: Vec<String> = service_env(ServiceKind::Booking, &mbs.spec, &instance())
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(booking.iter().any(|n| n == "SERVICE_TOKEN_SIGNING_KEY"));
    }

    #[test]
    fn deployment_waits_for_its_migration() {
        let mbs = sample();
        // stores not ready: nothing runs, nothing rolls out
        let p = plan(
            ServiceKind::User,
            &mbs.spec,
            &instance(),
            &resolved(),
            "h",
            false,
        );
        assert_eq!(
            (p.migration, p.rollout_image.clone()),
            (MigrationState::Waiting, None)
        );
        assert!(
            job_to_create(
                ServiceKind::User,
                &mbs.spec,
                &instance(),
                &p,
                &resolved(),
                "h"
            )
            .is_none()
        );

        // stores ready, an old version running: the Job starts, the old image stays
        let mut res = resolved_ready();
        res.running_images.insert(
            ServiceKind::User,
            "ghcr.io/moviebook/user-service:0.0.9".into(),
        );
        let p = plan(ServiceKind::User, &mbs.spec, &instance(), &res, "h", true);
        assert_eq!(p.migration, MigrationState::Running);
        assert_eq!(
            p.rollout_image.as_deref(),
            Some("ghcr.io/moviebook/user-service:0.0.9")
        );

        // Job failed: still the old image
        res.jobs.insert(
            p.job_name.clone(),
            ObservedJob {
                state: MigrationState::Failed,
                generation: Some(1),
            },
        );
        let p = plan(ServiceKind::User, &mbs.spec, &instance(), &res, "h", true);
        assert_eq!(
            p.rollout_image.as_deref(),
            Some("ghcr.io/moviebook/user-service:0.0.9")
        );
        assert!(job_to_create(ServiceKind::User, &mbs.spec, &instance(), &p, &res, "h").is_none());

        // Job succeeded: the new image rolls out
        res.jobs.insert(
            p.job_name.clone(),
            ObservedJob {
                state: MigrationState::Succeeded,
                generation: Some(1),
            },
        );
        let p = plan(ServiceKind::User, &mbs.spec, &instance(), &res, "h", true);
        assert_eq!(
            p.rollout_image.as_deref(),
            Some("ghcr.io/moviebook/user-service:0.1.0")
        );
    }

    #[test]
    fn disabled_policy_rolls_out_directly() {
        let mut mbs = sample();
        mbs.spec.migrations.policy = MigrationPolicy::Disabled;
        let p = plan(
            ServiceKind::Booking,
            &mbs.spec,
            &instance(),
            &resolved(),
            "h",
            false,
        );
        assert_eq!(p.migration, MigrationState::Skipped);
        assert_eq!(
            p.rollout_image.as_deref(),
            Some("ghcr.io/moviebook/booking-service:0.1.0")
        );
    }

    #[test]
    fn job_state_follows_job_conditions() {
        let mut job = Job::default();
        assert_eq!(job_state(&job), MigrationState::Running);
        job.status = serde_json::from_value(
            serde_json::json!({"conditions": [{"type": "Failed", "status": "True"}]}),
        )
        .expect("status");
        assert_eq!(job_state(&job), MigrationState::Failed);
        job.status = serde_json::from_value(serde_json::json!({"succeeded": 1})).expect("status");
        assert_eq!(job_state(&job), MigrationState::Succeeded);
    }
}
