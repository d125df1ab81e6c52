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
//! | `moviebook.io` | `moviebookingsystems` | get, list, watch, patch, update |
//! | `moviebook.io` | `moviebookingsystems/status` | get, patch, update |
//! | `moviebook.io` | `moviebookingsystems/finalizers` | update |
//! | `""` (core) | `secrets` | get, list, watch, create, patch, update, delete |
//! | `""` (core) | `configmaps`, `services` | get, list, watch, create, patch, update, delete |
//! | `""` (core) | `persistentvolumeclaims` | get, list, delete |
//! | `apps` | `deployments`, `statefulsets` | get, list, watch, create, patch, update, delete |
//! | `batch` | `jobs` | get, list, watch, create, patch, update, delete |
//! | `autoscaling` | `horizontalpodautoscalers` | get, list, watch, create, patch, update, delete |
//! | `policy` | `poddisruptionbudgets` | get, list, watch, create, patch, update, delete |
//! | `networking.k8s.io` | `ingresses`, `networkpolicies` | get, list, watch, create, patch, update, delete |
//! | `events.k8s.io` | `events` | create, patch |
//! | `coordination.k8s.io` | `leases` (in the operator's namespace) | get, create, update |
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
