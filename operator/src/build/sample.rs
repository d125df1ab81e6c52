//! `spec.sampleData`: a Job running `cinema-service seed` (the sample catalogue `make dev`
//! loads) once cinema's migration for the desired version has succeeded. The seed is
//! idempotent, so the Job is named per version like the migrations and simply runs again for a
//! new version (adding the new days' showtimes); a failed one is retried after a spec change.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;

use super::migrations::{self, OneShot};
use super::{Instance, Resolved, ServiceKind, ServicePlan};
use crate::crd::{MigrationState, MovieBookingSystemSpec};

/// Component label of the sample-data Jobs.
pub const COMPONENT: &str = "cinema-seed";

/// The sample-data Job of the desired version and its state.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplePlan {
    pub job_name: String,
    pub image: String,
    /// `Waiting` until cinema's migration succeeded.
    pub state: MigrationState,
}

/// Decides the sample-data Job from cinema's migration plan and the Jobs that exist.
pub fn plan(
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    res: &Resolved,
    plans: &BTreeMap<ServiceKind, ServicePlan>,
) -> SamplePlan {
    let svc = ServiceKind::Cinema;
    let job_name = migrations::named_job(svc, "seed", spec, inst, res);
    let migrated = plans.get(&svc).is_some_and(|p| {
        matches!(
            p.migration,
            MigrationState::Succeeded | MigrationState::Skipped
        )
    });
    let state = match res.jobs.get(&job_name) {
        Some(job) => job.state,
        None if migrated => MigrationState::Running,
        None => MigrationState::Waiting,
    };
    SamplePlan {
        job_name,
        image: migrations::image(svc, spec),
        state,
    }
}

/// The Job to create, if the plan needs one that does not exist yet.
pub fn job_to_create(
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    plan: &SamplePlan,
    res: &Resolved,
    config_hash: &str,
) -> Option<Job> {
    if plan.state != MigrationState::Running || res.jobs.contains_key(&plan.job_name) {
        return None;
    }
    Some(migrations::one_shot_job(
        ServiceKind::Cinema,
        spec,
        inst,
        OneShot {
            name: &plan.job_name,
            image: &plan.image,
            component: COMPONENT,
            subcommand: "seed",
            container: "seed",
        },
        config_hash,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::*;
    use crate::build::{ObservedJob, build};

    fn seed_jobs(d: &crate::build::Desired) -> Vec<&Job> {
        d.jobs
            .iter()
            .filter(|j| {
                j.metadata.labels.as_ref().expect("labels")["app.kubernetes.io/component"]
                    == COMPONENT
            })
            .collect()
    }

    #[test]
    fn the_seed_runs_after_cinemas_migration_and_only_when_asked() {
        let mut mbs = sample();
        let inst = instance();
        // off by default
        assert!(build(&mbs.spec, &inst, &resolved_ready()).sample.is_none());

        mbs.spec.sample_data = true;
        let d = build(&mbs.spec, &inst, &resolved_ready());
        let plan = d.sample.clone().expect("plan");
        assert_eq!(
            plan.state,
            MigrationState::Waiting,
            "cinema not migrated yet"
        );
        assert!(seed_jobs(&d).is_empty());

        // cinema's migration succeeded: the seed Job runs `cinema-service seed`
        let mut res = resolved_ready();
        let cinema_job = d.plans[&ServiceKind::Cinema].job_name.clone();
        res.jobs.insert(
            cinema_job,
            ObservedJob {
                state: MigrationState::Succeeded,
                generation: Some(1),
            },
        );
        let d = build(&mbs.spec, &inst, &res);
        let jobs = seed_jobs(&d);
        assert_eq!(jobs.len(), 1);
        let job = jobs[0];
        assert!(
            job.metadata
                .name
                .as_deref()
                .expect("name")
                .starts_with("demo-cinema-seed-0-1-0-")
        );
        let pod = job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod");
        let c = &pod.containers[0];
        assert_eq!(
            c.command.as_deref(),
            Some(&["cinema-service".to_string(), "seed".into()][..])
        );
        assert!(
            c.env
                .as_ref()
                .expect("env")
                .iter()
                .any(|e| e.name == "DATABASE_URL")
        );

        // once it exists its state is reported and nothing is re-created
        res.jobs.insert(
            plan.job_name.clone(),
            ObservedJob {
                state: MigrationState::Succeeded,
                generation: Some(1),
            },
        );
        let d = build(&mbs.spec, &inst, &res);
        assert!(seed_jobs(&d).is_empty());
        assert_eq!(d.sample.map(|p| p.state), Some(MigrationState::Succeeded));
    }
}
