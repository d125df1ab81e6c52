//! MovieBook operator: deploys and runs a whole MovieBook installation from one
//! `MovieBookingSystem` resource.
//!
//! The reconciler is a pipeline, one module per step (see [`controller`]):
//! [`validate`] → observe → [`build`] (pure builders per component) → [`apply`] →
//! [`status`]; [`kong`] renders the gateway's declarative config, [`leader`] makes several
//! replicas safe, [`metrics`] serves `/health`, `/ready` and `/metrics`.
//!
//! # Kubernetes API access (for least-privilege RBAC)
//!
//! Everything the operator reads or writes; the Helm chart's ClusterRole (or Role, with
//! `WATCH_NAMESPACE`) should grant exactly this:
//!
//! | API group | resources | verbs |
//! |---|---|---|
//! | `moviebook.io` | `moviebookingsystems` | list, watch, patch |
//! | `moviebook.io` | `moviebookingsystems/status` | patch |
//! | `moviebook.io` | `moviebookingsystems/finalizers` | update |
//! | `""` (core) | `secrets` (only in the namespaces it manages, never cluster-wide) | get, create, patch |
//! | `""` (core) | `configmaps` | create, patch |
//! | `""` (core) | `services` | list, create, patch, delete |
//! | `""` (core) | `persistentvolumeclaims` | list, delete |
//! | `apps` | `deployments`, `statefulsets` | list, watch, create, patch, delete |
//! | `batch` | `jobs` | list, watch, create, patch, delete |
//! | `autoscaling` | `horizontalpodautoscalers` | list, create, patch, delete |
//! | `policy` | `poddisruptionbudgets` | list, create, patch, delete |
//! | `networking.k8s.io` | `ingresses`, `networkpolicies` | list, create, patch, delete |
//! | `events.k8s.io` | `events` | create, patch |
//! | `coordination.k8s.io` | `leases` (its own, in the operator's namespace) | create, get, update |
//!
//! The chart's `templates/rbac.yaml` is the grant; keep the two in step.
//!
//! `patch` covers server-side apply (create-or-update); `create` is listed because an apply
//! that creates an object is authorised as `create`.
#![forbid(unsafe_code)]
#![deny(missing_debug_implementations)]

pub mod apply;
pub mod build;
pub mod controller;
pub mod crd;
pub mod error;
pub mod kong;
pub mod leader;
pub mod metrics;
pub mod render;
pub mod status;
pub mod validate;

/// Chooses rustls' crypto provider (ring) for the process. The workspace links both `ring`
/// (kube, mongodb) and `aws-lc-rs` (reqwest, through the load generator) into one build, and
/// rustls then refuses to guess: without this, creating a kube client panics in a
/// `cargo test --workspace` build. Idempotent; call before the first client is made.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub use crd::{MovieBookingSystem, MovieBookingSystemSpec, MovieBookingSystemStatus};
pub use error::{Error, Result};
