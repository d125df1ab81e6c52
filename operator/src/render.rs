//! `moviebook-operator render FILE`: every object the operator would create for the
//! `MovieBookingSystem`s in a YAML file, printed as YAML documents (like `helm template`), with no
//! cluster. It runs the same pure builders as the reconciler, for an installation whose stores
//! are ready and whose migrations have succeeded, so the migration and seed Jobs and the
//! Deployments all appear. Generated credentials are shown as placeholders: the real ones are
//! made at install time and never leave the cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::Serialize;
use serde::ser::Error as _;

use crate::build::{
    self, Desired, Instance, ObservedJob, Resolved, StoreKind, tokens::VerificationKey,
};
use crate::crd::{MigrationState, MovieBookingSystem};

/// Placeholder of every generated credential.
pub const GENERATED: &str = "GENERATED-AT-INSTALL";

/// Why a file cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("not YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("document {index} is not a valid MovieBookingSystem: {reason}")]
    Invalid { index: usize, reason: String },
    #[error("no MovieBookingSystem in the file")]
    Empty,
}

/// Renders every MovieBookingSystem of `text` (other kinds are skipped); `namespace` is used
/// where a resource names none.
pub fn render(text: &str, namespace: &str) -> Result<String, RenderError> {
    let mut out = String::new();
    let mut found = 0;
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value: serde_json::Value = serde::Deserialize::deserialize(doc)?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("MovieBookingSystem") {
            continue;
        }
        let mut mbs: MovieBookingSystem =
            serde_json::from_value(value).map_err(|e| RenderError::Invalid {
                index,
                reason: e.to_string(),
            })?;
        if mbs.metadata.namespace.is_none() {
            mbs.metadata.namespace = Some(namespace.to_string());
        }
        crate::validate::validate(&mbs).map_err(|e| RenderError::Invalid {
            index,
            reason: e.to_string(),
        })?;
        out.push_str(&render_one(&mbs)?);
        found += 1;
    }
    if found == 0 {
        return Err(RenderError::Empty);
    }
    Ok(out)
}

fn instance(mbs: &MovieBookingSystem) -> Instance {
    let name = mbs.metadata.name.clone().unwrap_or_default();
    Instance {
        namespace: mbs.metadata.namespace.clone().unwrap_or_default(),
        owner: OwnerReference {
            api_version: "moviebook.io/v1alpha1".into(),
            kind: "MovieBookingSystem".into(),
            name: name.clone(),
            uid: "00000000-0000-0000-0000-000000000000".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
        name,
        generation: mbs.metadata.generation.unwrap_or(1),
    }
}

/// The objects of one resource: the first reconcile once the stores are ready (its Jobs),
/// then the one after the migrations succeeded (everything else, and the seed Job).
fn render_one(mbs: &MovieBookingSystem) -> Result<String, RenderError> {
    let inst = instance(mbs);
    let mut res = Resolved {
        postgres_password: GENERATED.into(),
        redis_password: GENERATED.into(),
        rabbitmq_password: GENERATED.into(),
        store_passwords: crate::build::config::store_password_keys()
            .into_iter()
            .map(|k| (k, GENERATED.to_string()))
            .collect(),
        jwt_secret: GENERATED.into(),
        ticket_signing_key: GENERATED.into(),
        jwt_generated: mbs.spec.auth.jwt_secret_ref.is_none(),
        user_token_signing_key: GENERATED.into(),
        user_token_key_generated: mbs.spec.auth.user_token_key_ref.is_none(),
        // Kong's credentials show where the key comes from, not a key made up for the print.
        user_token_keys: vec![VerificationKey {
            kid: GENERATED.into(),
            pem: GENERATED.into(),
        }],
        service_token_signing_key: GENERATED.into(),
        service_token_keys: vec![VerificationKey {
            kid: GENERATED.into(),
            pem: GENERATED.into(),
        }],
        ..Resolved::default()
    };
    for store in StoreKind::ALL {
        if store.spec(&mbs.spec).external.is_some() {
            res.external_urls.insert(
                store,
                format!("<from the Secret of {}.external>", store.name()),
            );
        }
        res.store_ready.insert(store, 1);
    }
    let first = build::build(&mbs.spec, &inst, &res);
    for plan in first.plans.values() {
        res.jobs.insert(
            plan.job_name.clone(),
            ObservedJob {
                state: MigrationState::Succeeded,
                generation: Some(inst.generation),
            },
        );
    }
    let mut settled = build::build(&mbs.spec, &inst, &res);
    let mut jobs = first.jobs;
    jobs.append(&mut settled.jobs);
    settled.jobs = jobs;
    documents(&settled)
}

fn documents(d: &Desired) -> Result<String, RenderError> {
    let mut out = String::new();
    fn push<K: Serialize + k8s_openapi::Resource>(
        out: &mut String,
        objs: &[K],
    ) -> Result<(), RenderError> {
        for obj in objs {
            let mut value = serde_json::to_value(obj).map_err(serde_yaml::Error::custom)?;
            if let Some(map) = value.as_object_mut() {
                map.insert("apiVersion".into(), K::API_VERSION.into());
                map.insert("kind".into(), K::KIND.into());
            }
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&value)?);
        }
        Ok(())
    }
    push(&mut out, &d.network_policies)?;
    push(&mut out, &d.secrets)?;
    push(&mut out, &d.config_maps)?;
    push(&mut out, &d.store_services)?;
    push(&mut out, &d.stateful_sets)?;
    push(&mut out, &d.jobs)?;
    push(&mut out, &d.deployments)?;
    push(&mut out, &d.services)?;
    push(&mut out, &d.pdbs)?;
    push(&mut out, &d.hpas)?;
    push(&mut out, &d.gateway_secrets)?;
    push(&mut out, &d.gateway_deployments)?;
    push(&mut out, &d.gateway_services)?;
    push(&mut out, &d.ingresses)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds_and_names(yaml: &str) -> Vec<(String, String)> {
        serde_yaml::Deserializer::from_str(yaml)
            .map(|doc| {
                let v: serde_json::Value = serde::Deserialize::deserialize(doc).expect("doc");
                (
                    v["kind"].as_str().expect("kind").to_string(),
                    v["metadata"]["name"].as_str().expect("name").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn renders_every_object_of_the_node_installation_without_a_cluster() {
        let file = r#"
apiVersion: v1
kind: Namespace
metadata: {name: ignored}
---
apiVersion: moviebook.io/v1alpha1
kind: MovieBookingSystem
metadata: {name: moviebook}
spec:
  version: "0.1.0"
  sampleData: true
  gateway: {type: None, direct: {nodePorts: {graphql: 30080, user: 30081, catalogue: 30082}}}
  mongodb: {managed: {topology: Standalone}}
"#;
        let yaml = render(file, "shop").expect("renders");
        let objs = kinds_and_names(&yaml);
        let has = |k: &str, n: &str| objs.iter().any(|o| o.0 == k && o.1 == n);
        for svc in ["user", "cinema", "payment", "notification", "booking"] {
            assert!(has("Deployment", &format!("moviebook-{svc}")), "{objs:?}");
            assert!(
                objs.iter()
                    .any(|o| o.0 == "Job" && o.1.starts_with(&format!("moviebook-{svc}-migrate-"))),
                "{objs:?}"
            );
        }
        assert!(
            objs.iter()
                .any(|o| o.0 == "Job" && o.1.starts_with("moviebook-cinema-seed-"))
        );
        assert!(has("Service", "moviebook-public-graphql"));
        assert!(has("Service", "moviebook-cinema-grpc"));
        assert!(has("NetworkPolicy", "moviebook-deny-ingress"));
        assert!(has("NetworkPolicy", "moviebook-allow-postgres"));
        assert!(has("StatefulSet", "moviebook-mongodb"));
        assert!(
            !has("Deployment", "moviebook-gateway"),
            "no Kong with type None"
        );
        assert!(yaml.contains("namespace: shop"));
        // The managed MongoDB requires authentication; its users are applied by the pod's
        // init container (the URLs with their passwords are in the Secret, base64).
        assert!(yaml.contains("--auth"), "{yaml}");
        assert!(yaml.contains("moviebook-mongo-users"));
        assert!(!yaml.contains("uid-"), "no cluster identity");
    }

    #[test]
    fn an_invalid_resource_or_an_empty_file_is_an_error() {
        let bad = "kind: MovieBookingSystem\napiVersion: moviebook.io/v1alpha1\nmetadata: {name: x}\nspec: {version: '1', redis: {}}\n";
        let e = render(bad, "default").expect_err("invalid").to_string();
        assert!(e.contains("exactly one of managed or external"), "{e}");
        assert!(matches!(
            render("kind: ConfigMap\n", "default"),
            Err(RenderError::Empty)
        ));
    }
}
