//! Leader election with a `coordination.k8s.io/v1` Lease, so that two operator replicas never
//! reconcile at the same time.
//!
//! Writes use the Lease's resourceVersion (optimistic concurrency): of two candidates racing
//! for an expired Lease exactly one update succeeds. Expiry is judged on the local clock, from
//! when this candidate last saw the Lease change (as client-go does), so clock skew between
//! nodes cannot make two replicas believe they lead.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::error::{KubeContext, Result};

/// Settings of one candidate.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica: the pod name in a cluster.
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
}

/// A candidate for leadership.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// (holder, renewTime) last seen and when it was first seen locally.
    last_seen: Mutex<Option<(String, Instant)>>,
}

impl LeaderElector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            last_seen: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.cfg.identity
    }

    fn now() -> MicroTime {
        MicroTime(k8s_openapi::jiff::Timestamp::now())
    }

    fn spec(&self, acquire: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(
                self.cfg
                    .lease_duration
                    .as_secs()
                    .try_into()
                    .unwrap_or(i32::MAX),
            ),
            acquire_time: Some(acquire),
            renew_time: Some(Self::now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Acquires or renews the Lease; true while this candidate leads.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let existing = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .context("reading the leader Lease")?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(Self::now(), 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e).context("creating the leader Lease"),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = if holder == self.cfg.identity {
            self.spec(
                spec.acquire_time.clone().unwrap_or_else(Self::now),
                transitions,
            )
        } else if holder.is_empty() || self.expired(&holder, &spec) {
            self.spec(Self::now(), transitions + 1)
        } else {
            return Ok(false);
        };
        lease.spec = Some(new_spec);
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e).context("updating the leader Lease"),
        }
    }

    /// True once the other holder's renewTime has not moved for a whole lease duration, as
    /// measured here.
    fn expired(&self, holder: &str, spec: &LeaseSpec) -> bool {
        let seen = format!("{holder}@{:?}", spec.renew_time.as_ref().map(|t| t.0));
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(self.cfg.lease_duration);
        let mut last = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
        match last.as_ref() {
            Some((s, at)) if *s == seen => at.elapsed() >= duration,
            _ => {
                *last = Some((seen, Instant::now()));
                false
            }
        }
    }

    /// Gives the Lease up (on shutdown) so another replica takes over without waiting.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .context("reading the leader Lease")?
        else {
            return Ok(());
        };
        let mine = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.cfg.identity.as_str());
        if !mine {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
        }
        self.api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
            .context("releasing the leader Lease")?;
        Ok(())
    }
}
