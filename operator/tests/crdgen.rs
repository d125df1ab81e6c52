//! The checked-in CRD must be exactly what the Rust types generate, or `kubectl apply -f
//! crds/` (and the Helm chart) would install a schema the operator does not speak.
//!
//! To refresh it: `cargo run -p moviebook-operator -- crdgen > crds/moviebook.io_moviebookingsystems.yaml`
//! (or run this test with `UPDATE_CRDS=1`).

use std::path::PathBuf;

use moviebook_operator::crd::{CRD_FILE, crd_yaml};

#[test]
fn checked_in_crd_matches_the_rust_types() {
    let generated = crd_yaml().expect("CRD renders");
    let path = PathBuf::from(manifest_dir()).join("..").join(CRD_FILE);
    if std::env::var("UPDATE_CRDS").as_deref() == Ok("1") {
        std::fs::write(&path, &generated).expect("write CRD");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "{CRD_FILE} differs from the CRD the types generate; regenerate it with\n  \
         cargo run -p moviebook-operator -- crdgen > {CRD_FILE}\n(or UPDATE_CRDS=1 cargo test -p moviebook-operator --test crdgen)"
    );
}

#[test]
fn crd_has_short_name_columns_status_and_cel_rules() {
    let yaml = crd_yaml().expect("CRD renders");
    for needle in [
        "shortNames:\n    - mbs",
        "status: {}",
        "x-kubernetes-validations",
        "exactly one of managed or external must be set",
        "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
        "x-kubernetes-list-type: map",
        "jsonPath: .status.phase",
        "jsonPath: .status.endpoints.graphql",
    ] {
        assert!(yaml.contains(needle), "CRD lacks {needle:?}");
    }
}

/// The crate's folder, read when the test runs: clones at different paths share one target
/// directory, so a path compiled in with `env!` can name another clone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
}
