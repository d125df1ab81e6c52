//! Integration tests against a REAL etcd + kube-apiserver + kube-controller-manager
//! (`scripts/k8s-testenv.sh start`; `make test` does it). They read `KUBECONFIG`.
//!
//! Without `KUBECONFIG` they FAIL, unless `MOVIEBOOK_SKIP_K8S_TESTS=1` says to skip them: a
//! test suite that silently passes when its cluster is missing proves nothing.
//!
//! There is no kubelet and no StatefulSet or Job controller: the tests play them, patching
//! StatefulSet, Job and Pod status the way they would (Pods are created by the real
//! ReplicaSet controller, Deployments are rolled by the real Deployment controller). Each test
//! uses its own namespace, so they run in parallel.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, CustomResourceExt, Resource, ResourceExt};
use moviebook_operator::controller::{self, Context};
use moviebook_operator::crd::{MovieBookingSystem, Phase};
use moviebook_operator::leader::{LeaderElector, LeaseConfig};
use serde_json::{Value, json};

const MANAGER: &str = "moviebook-tests";

/// A client for the test cluster, or None when the tests are explicitly skipped.
async fn client() -> Option<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        if std::env::var("MOVIEBOOK_SKIP_K8S_TESTS").as_deref() == Ok("1") {
            eprintln!("skipping: MOVIEBOOK_SKIP_K8S_TESTS=1 and no KUBECONFIG");
            return None;
        }
        panic!(
            "KUBECONFIG is not set. These tests need a real kube-apiserver: run\n  \
             scripts/k8s-testenv.sh build && eval \"$(scripts/k8s-testenv.sh start)\"\n\
             (or `make test`), or set MOVIEBOOK_SKIP_K8S_TESTS=1 to skip them explicitly."
        );
    }
    moviebook_operator::install_crypto_provider();
    Some(Client::try_default().await.expect("client from KUBECONFIG"))
}

/// One test's world: a client, its own namespace and the CRD installed.
struct T {
    client: Client,
    ns: String,
}

impl T {
    async fn new(prefix: &str) -> Option<T> {
        let client = client().await?;
        install_crd(&client).await;
        let ns = format!("{prefix}-{}", suffix());
        let nss: Api<Namespace> = Api::all(client.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns"),
        )
        .await
        .expect("create namespace");
        Some(T { client, ns })
    }

    fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(
        &self,
    ) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn ctx(&self) -> Arc<Context> {
        Arc::new(Context::new(self.client.clone(), Some("tests".into())))
    }

    async fn create(&self, name: &str, spec: Value) -> MovieBookingSystem {
        let obj: MovieBookingSystem = serde_json::from_value(json!({
            "apiVersion": "moviebook.io/v1alpha1", "kind": "MovieBookingSystem",
            "metadata": {"name": name, "namespace": self.ns}, "spec": spec,
        }))
        .expect("cr");
        self.api::<MovieBookingSystem>()
            .create(&PostParams::default(), &obj)
            .await
            .expect("create cr")
    }

    async fn get(&self, name: &str) -> MovieBookingSystem {
        self.api::<MovieBookingSystem>()
            .get(name)
            .await
            .expect("get cr")
    }

    async fn patch_spec(&self, name: &str, spec: Value) {
        self.api::<MovieBookingSystem>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .expect("patch spec");
    }

    /// One reconcile of the current object, as the controller would run it.
    async fn reconcile(&self, name: &str) {
        let obj = self.get(name).await;
        if let Err(e) = controller::reconcile(Arc::new(obj), self.ctx()).await {
            panic!("reconcile failed: {e}");
        }
    }

    /// Plays kubelet and the StatefulSet controller: every StatefulSet and Pod becomes ready.
    async fn kubelet(&self) {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        for sts in self
            .api::<StatefulSet>()
            .list(&ListParams::default())
            .await
            .expect("sts")
            .items
        {
            let ready = sts
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            let seen =
                sts.status.as_ref().and_then(|s| s.observed_generation) == sts.metadata.generation;
            if ready >= 1 && seen {
                continue;
            }
            let status = json!({"status": {"replicas": 1, "readyReplicas": 1, "currentReplicas": 1, "updatedReplicas": 1,
                                           "availableReplicas": 1, "observedGeneration": sts.metadata.generation}});
            self.api::<StatefulSet>()
                .patch_status(
                    &sts.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(status),
                )
                .await
                .expect("sts status");
        }
        for pod in self
            .api::<Pod>()
            .list(&ListParams::default())
            .await
            .expect("pods")
            .items
        {
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if ready || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let status = json!({"status": {"phase": "Running", "startTime": now, "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
            // A pod may vanish between list and patch (rollouts delete them); that is fine.
            let _ = self
                .api::<Pod>()
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(status),
                )
                .await;
        }
    }

    /// Plays the Job controller: finishes every unfinished Job whose name matches.
    async fn finish_jobs(&self, matching: &str, succeed: bool) -> Vec<String> {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let mut done = Vec::new();
        for job in self
            .api::<Job>()
            .list(&ListParams::default())
            .await
            .expect("jobs")
            .items
        {
            let finished = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"
                    })
                });
            if finished || !job.name_any().contains(matching) {
                continue;
            }
            let cond = |t: &str| {
                json!({"type": t, "status": "True", "lastTransitionTime": now, "lastProbeTime": now,
                                          "reason": "Test", "message": "set by the test"})
            };
            let status = if succeed {
                json!({"status": {"startTime": now, "completionTime": now, "succeeded": 1, "active": 0, "ready": 0,
                                  "terminating": 0, "uncountedTerminatedPods": {},
                                  "conditions": [cond("SuccessCriteriaMet"), cond("Complete")]}})
            } else {
                json!({"status": {"startTime": now, "failed": 4, "active": 0, "ready": 0, "terminating": 0,
                                  "uncountedTerminatedPods": {},
                                  "conditions": [cond("FailureTarget"), cond("Failed")]}})
            };
            self.api::<Job>()
                .patch_status(
                    &job.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(status),
                )
                .await
                .unwrap_or_else(|e| panic!("job status {}: {e}", job.name_any()));
            done.push(job.name_any());
        }
        done
    }

    /// Reconciles and plays the cluster until the resource is Ready.
    async fn converge(&self, name: &str) -> MovieBookingSystem {
        for _ in 0..120 {
            self.reconcile(name).await;
            self.kubelet().await;
            self.finish_jobs("", true).await;
            let obj = self.get(name).await;
            if phase(&obj) == Some(Phase::Ready)
                && obj.status.as_ref().and_then(|s| s.observed_generation)
                    == obj.metadata.generation
            {
                return obj;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "{name} did not become Ready: {:#?}",
            self.get(name).await.status
        );
    }

    async fn deployment_image(&self, name: &str) -> String {
        let d = self
            .api::<Deployment>()
            .get(name)
            .await
            .expect("deployment");
        d.spec
            .and_then(|s| s.template.spec)
            .map(|p| p.containers[0].image.clone().unwrap_or_default())
            .unwrap_or_default()
    }

    async fn cleanup(self) {
        let nss: Api<Namespace> = Api::all(self.client.clone());
        // CRs carry a finalizer and no operator runs any more: drop it so the namespace can go.
        for mbs in self
            .api::<MovieBookingSystem>()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let _ = self
                .api::<MovieBookingSystem>()
                .patch(
                    &mbs.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await;
        }
        let _ = nss.delete(&self.ns, &DeleteParams::background()).await;
    }
}

fn phase(obj: &MovieBookingSystem) -> Option<Phase> {
    obj.status.as_ref().and_then(|s| s.phase)
}

fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Installs (server-side applies) the checked-in CRD and waits until it is served.
async fn install_crd(client: &Client) {
    let path = std::path::PathBuf::from(manifest_dir())
        .join("../crds/moviebook.io_moviebookingsystems.yaml");
    let yaml = std::fs::read_to_string(path).expect("checked-in CRD");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).expect("CRD yaml");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        MovieBookingSystem::crd_name(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("the API server accepts the generated CRD");
    for _ in 0..100 {
        let c = crds.get(MovieBookingSystem::crd_name()).await.expect("crd");
        let established = c.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if established {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("CRD not established");
}

fn names<K: ResourceExt>(items: &[K]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|o| o.name_any()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn crd_is_accepted_and_cel_rules_reject_invalid_specs_readably() {
    let Some(t) = T::new("cel").await else { return };
    let api = t.api::<MovieBookingSystem>();
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    // Untyped, so that specs the Rust types would refuse still reach the API server.
    let raw: Api<DynamicObject> = Api::namespaced_with(
        t.client.clone(),
        &t.ns,
        &ApiResource::erase::<MovieBookingSystem>(&()),
    );
    let try_create = |spec: Value| {
        let raw = raw.clone();
        let ns = t.ns.clone();
        async move {
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "moviebook.io/v1alpha1", "kind": "MovieBookingSystem",
                "metadata": {"name": "bad", "namespace": ns}, "spec": spec}))
            .expect("cr");
            raw.create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &obj,
            )
            .await
        }
    };
    let cases = [
        (
            json!({"version": "0.1.0", "postgres": {"managed": {}, "external": {"secretRef": {"name": "a", "key": "b"}}}}),
            "exactly one of managed or external must be set",
        ),
        (
            json!({"version": "0.1.0", "redis": {}}),
            "exactly one of managed or external must be set",
        ),
        (
            json!({"version": "0.1.0", "services": {"booking": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}}),
            "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
        ),
        (
            json!({"version": "0.1.0", "services": {"user": {"replicas": 9, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}}}),
            "replicas must lie within autoscaling.minReplicas..maxReplicas",
        ),
        (
            json!({"version": "0.1.0", "gateway": {"kong": {"serviceType": "ClusterIP", "nodePort": 30080}}}),
            "gateway.kong.nodePort needs serviceType NodePort or LoadBalancer",
        ),
        (
            json!({"version": "not a tag!"}),
            "version must be a valid image tag",
        ),
        (
            json!({"version": "0.1.0", "gateway": {"type": "None", "direct": {"serviceType": "ClusterIP", "nodePorts": {"graphql": 30080}}}}),
            "gateway.direct.nodePorts needs serviceType NodePort or LoadBalancer",
        ),
        (
            json!({"version": "0.1.0", "gateway": {"type": "Traefik"}}),
            "Unsupported value: \"Traefik\"",
        ),
        (
            json!({"version": "0.1.0", "mongodb": {"managed": {"topology": "Sharded"}}}),
            "Unsupported value: \"Sharded\"",
        ),
        (
            json!({"version": "0.1.0", "dataOnDelete": "Shred"}),
            "Unsupported value: \"Shred\"",
        ),
    ];
    for (spec, message) in cases {
        match try_create(spec.clone()).await {
            Ok(_) => panic!("accepted invalid spec {spec}"),
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{s:?}");
                assert!(
                    s.message.contains(message),
                    "for {spec}: expected {message:?} in {:?}",
                    s.message
                );
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    // the examples are valid
    for file in ["minimal.yaml", "full.yaml"] {
        let path = std::path::PathBuf::from(manifest_dir())
            .join("../examples")
            .join(file);
        let text = std::fs::read_to_string(&path).expect("example");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
            if v["kind"] != "MovieBookingSystem" {
                continue;
            }
            let mut obj: MovieBookingSystem = serde_json::from_value(v).expect("example parses");
            obj.metadata.namespace = Some(t.ns.clone());
            api.create(&dry, &obj)
                .await
                .unwrap_or_else(|e| panic!("{file} rejected: {e}"));
        }
    }
    t.cleanup().await;
}

#[tokio::test]
async fn sample_converges_under_the_running_controller_and_applies_spec_changes() {
    let Some(t) = T::new("converge").await else {
        return;
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let client = t.client.clone();
    let ns = t.ns.clone();
    let controller = tokio::spawn(async move {
        controller::run(client, Some(ns), Some("test-operator".into()), async {
            let _ = stop_rx.await;
        })
        .await
    });
    t.create(
        "demo",
        json!({"version": "0.1.0", "services": {"booking": {"replicas": 2}}}),
    )
    .await;
    let mut ready = None;
    for _ in 0..240 {
        t.kubelet().await;
        t.finish_jobs("", true).await;
        let obj = t.get("demo").await;
        if phase(&obj) == Some(Phase::Ready) {
            ready = Some(obj);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let obj = ready.unwrap_or_else(|| panic!("never Ready under the controller"));
    let st = obj.status.expect("status");
    assert_eq!(st.ready_components.as_deref(), Some("10/10"));
    for c in [
        "Ready",
        "DatabasesReady",
        "MigrationsComplete",
        "ServicesReady",
        "GatewayReady",
    ] {
        assert!(
            st.conditions
                .iter()
                .any(|x| x.type_ == c && x.status == "True"),
            "{c}: {:#?}",
            st.conditions
        );
    }
    assert_eq!(st.components["booking"].ready_replicas, 2);
    let gateway = t
        .api::<Service>()
        .get("demo-gateway")
        .await
        .expect("gateway service");
    let node_port = gateway
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p[0].node_port)
        .expect("allocated node port");
    assert_eq!(
        st.endpoints.and_then(|e| e.graphql),
        Some(format!("http://<node>:{node_port}/graphql"))
    );

    // every object exists, owned by the resource
    let deps = t
        .api::<Deployment>()
        .list(&ListParams::default())
        .await
        .expect("deps")
        .items;
    assert_eq!(
        names(&deps),
        [
            "demo-booking",
            "demo-cinema",
            "demo-gateway",
            "demo-notification",
            "demo-payment",
            "demo-user"
        ]
    );
    let sts = t
        .api::<StatefulSet>()
        .list(&ListParams::default())
        .await
        .expect("sts")
        .items;
    assert_eq!(
        names(&sts),
        [
            "demo-mongodb",
            "demo-postgres",
            "demo-rabbitmq",
            "demo-redis"
        ]
    );
    let jobs = t
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .expect("jobs")
        .items;
    assert_eq!(jobs.len(), 5, "{:?}", names(&jobs));
    let svcs = t
        .api::<Service>()
        .list(&ListParams::default())
        .await
        .expect("svcs")
        .items;
    assert_eq!(svcs.len(), 11, "{:?}", names(&svcs));
    let pdbs = t
        .api::<PodDisruptionBudget>()
        .list(&ListParams::default())
        .await
        .expect("pdbs")
        .items;
    assert_eq!(pdbs.len(), 5);
    let secrets = names(
        &t.api::<Secret>()
            .list(&ListParams::default())
            .await
            .expect("secrets")
            .items,
    );
    assert!(
        secrets.contains(&"demo-secrets".to_string())
            && secrets.contains(&"demo-kong-config".to_string()),
        "{secrets:?}"
    );
    t.api::<ConfigMap>()
        .get("demo-config")
        .await
        .expect("config map");
    for d in &deps {
        let owner = &d.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("MovieBookingSystem", "demo", Some(true))
        );
    }
    // Events were recorded
    let events = t
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("events")
        .items;
    let reasons: Vec<String> = events.iter().filter_map(|e| e.reason.clone()).collect();
    assert!(
        reasons.iter().any(|r| r == "MigrationSucceeded"),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r == "Ready"), "{reasons:?}");

    // a spec change (replicas) is applied by the controller on its own
    t.patch_spec("demo", json!({"services": {"booking": {"replicas": 3}}}))
        .await;
    let mut scaled = false;
    for _ in 0..120 {
        let d = t
            .api::<Deployment>()
            .get("demo-booking")
            .await
            .expect("booking");
        if d.spec.and_then(|s| s.replicas) == Some(3) {
            scaled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(scaled, "replicas change not applied");

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    t.cleanup().await;
}

#[tokio::test]
async fn version_bump_migrates_first_and_rolls_out_only_after_the_job_succeeded() {
    let Some(t) = T::new("upgrade").await else {
        return;
    };
    t.create("demo", json!({"version": "0.1.0"})).await;
    t.converge("demo").await;
    assert_eq!(
        t.deployment_image("demo-user").await,
        "ghcr.io/moviebook/user-service:0.1.0"
    );

    t.patch_spec("demo", json!({"version": "0.2.0"})).await;
    t.reconcile("demo").await;
    let jobs = names(
        &t.api::<Job>()
            .list(&ListParams::default())
            .await
            .expect("jobs")
            .items,
    );
    let new_jobs: Vec<&String> = jobs
        .iter()
        .filter(|j| j.contains("migrate-0-2-0"))
        .collect();
    assert_eq!(new_jobs.len(), 5, "{jobs:?}");
    let job = t.api::<Job>().get(new_jobs[0]).await.expect("job");
    let c = &job
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
        .containers[0];
    assert!(c.image.as_deref().is_some_and(|i| i.ends_with(":0.2.0")));
    // the Job runs, the Deployments keep the old image
    for _ in 0..3 {
        t.kubelet().await;
        t.reconcile("demo").await;
    }
    assert_eq!(
        t.deployment_image("demo-user").await,
        "ghcr.io/moviebook/user-service:0.1.0"
    );
    let obj = t.get("demo").await;
    assert_eq!(phase(&obj), Some(Phase::Progressing));
    assert_eq!(
        obj.status.as_ref().expect("status").migrations["user"].state,
        moviebook_operator::crd::MigrationState::Running
    );

    // cinema's migration fails: cinema stays on 0.1.0 and the failure is reported
    assert_eq!(
        t.finish_jobs("demo-cinema-migrate-0-2-0", false)
            .await
            .len(),
        1
    );
    // user's succeeds: user rolls out
    assert_eq!(
        t.finish_jobs("demo-user-migrate-0-2-0", true).await.len(),
        1
    );
    t.reconcile("demo").await;
    assert_eq!(
        t.deployment_image("demo-user").await,
        "ghcr.io/moviebook/user-service:0.2.0"
    );
    assert_eq!(
        t.deployment_image("demo-cinema").await,
        "ghcr.io/moviebook/cinema-service:0.1.0"
    );
    assert_eq!(
        t.deployment_image("demo-booking").await,
        "ghcr.io/moviebook/booking-service:0.1.0"
    );
    let obj = t.get("demo").await;
    assert_eq!(phase(&obj), Some(Phase::Failed));
    let st = obj.status.expect("status");
    let cond = st
        .conditions
        .iter()
        .find(|c| c.type_ == "MigrationsComplete")
        .expect("cond");
    assert_eq!(cond.reason, "MigrationFailed");
    assert!(cond.message.contains("cinema"), "{}", cond.message);
    let reasons: Vec<String> = t
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "MigrationFailed"),
        "{reasons:?}"
    );

    // a spec change retries the failed Job; once everything succeeds all run 0.2.0 and the
    // 0.1.0 Jobs are pruned
    t.patch_spec("demo", json!({"logLevel": "debug"})).await;
    let obj = t.converge("demo").await;
    for svc in ["user", "cinema", "payment", "notification", "booking"] {
        assert_eq!(
            t.deployment_image(&format!("demo-{svc}")).await,
            format!("ghcr.io/moviebook/{svc}-service:0.2.0")
        );
    }
    let jobs = names(
        &t.api::<Job>()
            .list(&ListParams::default())
            .await
            .expect("jobs")
            .items,
    );
    assert!(
        jobs.iter().all(|j| j.contains("0-2-0")),
        "old Jobs pruned: {jobs:?}"
    );
    assert_eq!(
        obj.status.expect("status").components["cinema"]
            .image
            .as_deref(),
        Some("ghcr.io/moviebook/cinema-service:0.2.0")
    );
    t.cleanup().await;
}

fn container(
    pod: Option<k8s_openapi::api::core::v1::PodSpec>,
) -> k8s_openapi::api::core::v1::Container {
    pod.expect("pod").containers.remove(0)
}

fn env_value(c: &k8s_openapi::api::core::v1::Container, name: &str) -> Option<String> {
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

/// What the local node runs (scripts/cluster/values.yaml): no Kong (the public Services on
/// fixed node ports), a standalone MongoDB, the sample catalogue; then the other gateways.
#[tokio::test]
async fn no_gateway_standalone_mongodb_and_sample_data_as_the_node_runs_them() {
    let Some(t) = T::new("direct").await else {
        return;
    };
    // node ports are cluster-wide: three free-looking ones for this run
    let base = 30000 + (rand::random::<u16>() % 2500) as i32;
    let (gq, us, ca) = (base, base + 1, base + 2);
    t.create(
        "demo",
        json!({"version": "0.1.0", "sampleData": true,
               "gateway": {"type": "None", "direct": {"nodePorts": {"graphql": gq, "user": us, "catalogue": ca}}},
               "mongodb": {"managed": {"topology": "Standalone"}},
               "services": {"cinema": {"replicas": 2}}}),
    )
    .await;
    let obj = t.converge("demo").await;
    let st = obj.status.expect("status");
    assert_eq!(st.ready_components.as_deref(), Some("9/9"), "no Kong");
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "SampleDataLoaded" && c.status == "True"),
        "{:#?}",
        st.conditions
    );
    assert_eq!(
        st.endpoints.and_then(|e| e.graphql),
        Some(format!("http://<node>:{gq}/graphql"))
    );

    // the public Services on the ports asked for, and no Kong
    let svcs = t.api::<Service>();
    for (name, port, app, target) in [
        ("demo-public-graphql", gq, "booking", 8010),
        ("demo-public-user", us, "user", 8001),
        ("demo-public-catalogue", ca, "cinema", 8002),
    ] {
        let spec = svcs.get(name).await.expect(name).spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("NodePort"), "{name}");
        let p = &spec.ports.expect("ports")[0];
        assert_eq!(p.node_port, Some(port), "{name}");
        assert_eq!(spec.selector.expect("sel")["app.kubernetes.io/name"], app);
        // the named target port resolves to the service's HTTP port
        let dep = t
            .api::<Deployment>()
            .get(&format!("demo-{app}"))
            .await
            .expect("dep");
        let c = container(dep.spec.and_then(|s| s.template.spec));
        assert_eq!(c.ports.expect("ports")[0].container_port, target);
    }
    assert!(svcs.get_opt("demo-gateway").await.expect("get").is_none());
    assert!(
        t.api::<Deployment>()
            .get_opt("demo-gateway")
            .await
            .expect("get")
            .is_none()
    );

    // cinema's headless gRPC Service, which booking resolves to every ready cinema pod
    let grpc = svcs
        .get("demo-cinema-grpc")
        .await
        .expect("grpc")
        .spec
        .expect("spec");
    assert_eq!(grpc.cluster_ip.as_deref(), Some("None"));
    let cm = t.api::<ConfigMap>().get("demo-config").await.expect("cm");
    let data = cm.data.expect("data");
    assert_eq!(
        data["CINEMA_GRPC_URL"],
        format!("http://demo-cinema-grpc.{}.svc:9090", t.ns)
    );

    // MongoDB standalone: no --replSet, TCP probes; each service its own database
    let mongo = t
        .api::<StatefulSet>()
        .get("demo-mongodb")
        .await
        .expect("sts");
    let c = container(mongo.spec.clone().and_then(|s| s.template.spec));
    let args = c.args.clone().unwrap_or_default();
    assert!(!args.iter().any(|a| a.contains("replSet")));
    assert!(
        args.iter().any(|a| a == "--auth"),
        "MongoDB requires authentication"
    );
    assert!(c.readiness_probe.and_then(|p| p.tcp_socket).is_some());
    let init = mongo
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.init_containers.clone())
        .unwrap_or_default();
    assert_eq!(
        init.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["users"],
        "the users are applied before the server starts"
    );
    let generated: BTreeMap<String, String> = t
        .api::<Secret>()
        .get("demo-secrets")
        .await
        .expect("secret")
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    for svc in ["user", "payment", "notification", "booking"] {
        let dep = t
            .api::<Deployment>()
            .get(&format!("demo-{svc}"))
            .await
            .expect("dep");
        let pod = dep.spec.and_then(|s| s.template.spec);
        let grace = pod
            .as_ref()
            .and_then(|p| p.termination_grace_period_seconds);
        let c = container(pod);
        // Its own key of the Secret, with its own user (the API server kept the reference).
        let key = c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "MONGODB_URL")
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref())
            .map(|r| r.key.clone())
            .expect("MONGODB_URL from the Secret");
        assert_eq!(key, format!("{svc}.MONGODB_URL"));
        let url = &generated[&key];
        assert!(url.starts_with(&format!("mongodb://{svc}:")), "{svc}");
        assert!(
            url.contains(&format!(
                "/moviebook_{svc}?authSource=moviebook_{svc}&directConnection=true&maxPoolSize="
            )),
            "{svc}: {url}"
        );
        // the API server kept the preStop sleep (the images have no shell)
        let sleep = c
            .lifecycle
            .and_then(|l| l.pre_stop)
            .and_then(|p| p.sleep)
            .map(|s| s.seconds)
            .expect("preStop sleep");
        assert!(grace > Some(sleep), "{svc}");
    }
    let cinema = t.api::<Deployment>().get("demo-cinema").await.expect("dep");
    let c = container(cinema.spec.and_then(|s| s.template.spec));
    assert_eq!(env_value(&c, "DB_MAX_CONNECTIONS").as_deref(), Some("20"));

    // the sample data: `cinema-service seed` from cinema's image, its own component label
    let seeds = t
        .api::<Job>()
        .list(&ListParams::default().labels("app.kubernetes.io/component=cinema-seed"))
        .await
        .expect("jobs")
        .items;
    assert_eq!(seeds.len(), 1, "{:?}", names(&seeds));
    let c = container(
        seeds[0]
            .spec
            .clone()
            .map(|s| s.template)
            .and_then(|t| t.spec),
    );
    assert_eq!(
        c.command,
        Some(vec!["cinema-service".to_string(), "seed".into()])
    );

    // type Ingress: an Ingress straight to the services, the public Services pruned
    t.patch_spec(
        "demo",
        json!({"gateway": {"type": "Ingress", "direct": null, "ingress": {"className": "kong", "host": "tickets.example"}}}),
    )
    .await;
    let obj = t.converge("demo").await;
    assert_eq!(
        obj.status.and_then(|s| s.endpoints).and_then(|e| e.graphql),
        Some("http://tickets.example/graphql".into())
    );
    let ing = t
        .api::<k8s_openapi::api::networking::v1::Ingress>()
        .get("demo-gateway")
        .await
        .expect("ingress")
        .spec
        .expect("spec");
    assert_eq!(ing.ingress_class_name.as_deref(), Some("kong"));
    let backends: Vec<String> = ing.rules.expect("rules")[0]
        .http
        .as_ref()
        .expect("http")
        .paths
        .iter()
        .filter_map(|p| p.backend.service.as_ref().map(|s| s.name.clone()))
        .collect();
    assert!(
        backends.contains(&"demo-booking".to_string()),
        "{backends:?}"
    );
    assert!(
        svcs.get_opt("demo-public-graphql")
            .await
            .expect("get")
            .is_none()
    );

    // and back to Kong (the default): Kong's Deployment and Service appear again
    t.patch_spec(
        "demo",
        json!({"gateway": {"type": "Kong", "ingress": null}}),
    )
    .await;
    t.converge("demo").await;
    assert!(svcs.get_opt("demo-gateway").await.expect("get").is_some());
    assert!(
        t.api::<k8s_openapi::api::networking::v1::Ingress>()
            .get_opt("demo-gateway")
            .await
            .expect("get")
            .is_none()
    );
    t.cleanup().await;
}

/// resourceVersion of every object in the namespace the operator writes.
async fn versions(t: &T) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    macro_rules! collect {
        ($k:ty) => {
            for o in t
                .api::<$k>()
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
            {
                out.insert(
                    format!("{}/{}", <$k>::kind(&()), o.name_any()),
                    o.resource_version().unwrap_or_default(),
                );
            }
        };
    }
    collect!(Deployment);
    collect!(StatefulSet);
    collect!(Job);
    collect!(Service);
    collect!(Secret);
    collect!(ConfigMap);
    collect!(PodDisruptionBudget);
    collect!(MovieBookingSystem);
    collect!(Event);
    out
}

#[tokio::test]
async fn reconciling_an_unchanged_resource_twice_writes_nothing() {
    let Some(t) = T::new("idle").await else {
        return;
    };
    t.create("demo", json!({"version": "0.1.0"})).await;
    t.converge("demo").await;
    // let the controller-manager settle (Deployment status updates after the last pod)
    let mut before = versions(&t).await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = versions(&t).await;
        if now == before {
            break;
        }
        before = now;
    }
    t.reconcile("demo").await;
    t.reconcile("demo").await;
    let after = versions(&t).await;
    let changed: Vec<&String> = after
        .keys()
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(
        changed.is_empty(),
        "an unchanged resource caused writes to {changed:?}"
    );
    t.cleanup().await;
}

#[tokio::test]
async fn paused_stops_all_changes_until_resumed() {
    let Some(t) = T::new("paused").await else {
        return;
    };
    t.create("demo", json!({"version": "0.1.0"})).await;
    t.converge("demo").await;
    t.patch_spec(
        "demo",
        json!({"paused": true, "version": "0.3.0", "services": {"user": {"replicas": 4}}}),
    )
    .await;
    let before = versions(&t).await;
    t.reconcile("demo").await;
    t.reconcile("demo").await;
    let obj = t.get("demo").await;
    assert_eq!(phase(&obj), Some(Phase::Paused));
    let after = versions(&t).await;
    let changed: Vec<&String> = after
        .keys()
        .filter(|k| before.get(*k) != after.get(*k))
        .filter(|k| !k.starts_with("MovieBookingSystem/") && !k.starts_with("Event/"))
        .collect();
    assert!(changed.is_empty(), "paused resource changed {changed:?}");
    let d = t.api::<Deployment>().get("demo-user").await.expect("user");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(1));
    assert!(
        t.api::<Job>()
            .list(&ListParams::default())
            .await
            .expect("jobs")
            .items
            .iter()
            .all(|j| !j.name_any().contains("0-3-0"))
    );

    t.patch_spec("demo", json!({"paused": false})).await;
    t.reconcile("demo").await;
    let d = t.api::<Deployment>().get("demo-user").await.expect("user");
    assert_eq!(
        d.spec.and_then(|s| s.replicas),
        Some(4),
        "resumed: changes applied"
    );
    assert!(
        t.api::<Job>()
            .list(&ListParams::default())
            .await
            .expect("jobs")
            .items
            .iter()
            .any(|j| j.name_any().contains("0-3-0"))
    );
    t.cleanup().await;
}

/// A PVC as the StatefulSet controller would create it from the volume claim template.
async fn pvc(t: &T, instance: &str, store: &str) -> String {
    let name = format!("data-{instance}-{store}-0");
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/instance": instance, "app.kubernetes.io/managed-by": "moviebook-operator",
                                               "app.kubernetes.io/name": store}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
    .expect("pvc");
    t.api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &pvc)
        .await
        .expect("create pvc");
    name
}

#[tokio::test]
async fn deletion_honours_the_data_policy() {
    let Some(t) = T::new("delete").await else {
        return;
    };
    t.create(
        "keep",
        json!({"version": "0.1.0", "dataOnDelete": "Retain", "migrations": {"policy": "Disabled"}}),
    )
    .await;
    t.create(
        "drop",
        json!({"version": "0.1.0", "dataOnDelete": "Delete", "migrations": {"policy": "Disabled"}}),
    )
    .await;
    for name in ["keep", "drop"] {
        t.reconcile(name).await; // adds the finalizer
        t.reconcile(name).await; // applies
    }
    let keep_pvc = pvc(&t, "keep", "postgres").await;
    let drop_pvc = pvc(&t, "drop", "postgres").await;
    let mbs = t.api::<MovieBookingSystem>();
    for name in ["keep", "drop"] {
        mbs.delete(name, &DeleteParams::background())
            .await
            .expect("delete");
        t.reconcile(name).await; // runs the cleanup and removes the finalizer
    }
    for name in ["keep", "drop"] {
        assert!(
            mbs.get_opt(name).await.expect("get").is_none(),
            "{name} still exists"
        );
    }
    let pvcs = t.api::<PersistentVolumeClaim>();
    let keep = pvcs.get(&keep_pvc).await.expect("retained PVC");
    assert!(
        keep.metadata.deletion_timestamp.is_none(),
        "Retain must keep the PVC"
    );
    // the PVC protection finalizer keeps a deleted PVC around until its controller runs
    let dropped = pvcs.get_opt(&drop_pvc).await.expect("get pvc");
    assert!(
        dropped.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "Delete must delete the PVC"
    );

    // garbage collection removes owned objects; the retained credentials stay
    let secrets = t.api::<Secret>();
    let mut gone = false;
    for _ in 0..120 {
        let deps = t
            .api::<Deployment>()
            .list(&ListParams::default())
            .await
            .expect("deps")
            .items;
        if deps.is_empty()
            && secrets
                .get_opt("drop-secrets")
                .await
                .expect("secret")
                .is_none()
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(gone, "garbage collection did not remove the owned objects");
    let kept = secrets
        .get("keep-secrets")
        .await
        .expect("Retain keeps the credentials");
    assert!(kept.owner_references().is_empty());
    t.cleanup().await;
}

#[tokio::test]
async fn only_one_replica_leads() {
    let Some(t) = T::new("lease").await else {
        return;
    };
    let cfg = |id: &str| LeaseConfig {
        namespace: t.ns.clone(),
        name: "moviebook-operator".into(),
        identity: id.into(),
        lease_duration: Duration::from_secs(2),
    };
    let a = LeaderElector::new(t.client.clone(), cfg("a"));
    let b = LeaderElector::new(t.client.clone(), cfg("b"));
    assert!(a.try_acquire_or_renew().await.expect("a"));
    assert!(!b.try_acquire_or_renew().await.expect("b"));
    assert!(a.try_acquire_or_renew().await.expect("a renews"));
    // b first sees a's renewed Lease here; expiry is judged on b's clock from this moment.
    let seen_renewed = std::time::Instant::now();
    assert!(!b.try_acquire_or_renew().await.expect("b still waits"));
    // a stops renewing: b keeps trying and takes over once the lease expired, never before. The
    // test polls for the observed take-over instead of sleeping a fixed time against the lease.
    let deadline = seen_renewed + Duration::from_secs(30);
    loop {
        if b.try_acquire_or_renew().await.expect("b tries") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "b never took over the expired lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen_renewed.elapsed() >= Duration::from_secs(2),
        "b took over after {:?}, before the 2 s lease expired",
        seen_renewed.elapsed()
    );
    assert!(!a.try_acquire_or_renew().await.expect("a lost it"));
    // a clean release hands over at once
    b.release().await.expect("release");
    assert!(a.try_acquire_or_renew().await.expect("a again"));
    t.cleanup().await;
}

#[tokio::test]
async fn a_storage_change_on_existing_stores_is_reported_not_fatal() {
    let Some(t) = T::new("storage").await else {
        return;
    };
    t.create(
        "demo",
        json!({"version": "0.1.0", "migrations": {"policy": "Disabled"}}),
    )
    .await;
    t.reconcile("demo").await;
    t.reconcile("demo").await;
    t.patch_spec(
        "demo",
        json!({"postgres": {"managed": {"storage": "20Gi"}}}),
    )
    .await;
    t.reconcile("demo").await; // must not fail on the immutable volumeClaimTemplates
    let sts = t
        .api::<StatefulSet>()
        .get("demo-postgres")
        .await
        .expect("sts");
    let size = sts
        .spec
        .and_then(|s| s.volume_claim_templates)
        .and_then(|v| v[0].spec.clone())
        .and_then(|s| s.resources)
        .and_then(|r| r.requests)
        .map(|r| r["storage"].0.clone());
    assert_eq!(size.as_deref(), Some("1Gi"));
    let reasons: Vec<String> = t
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "StorageChangeIgnored"),
        "{reasons:?}"
    );
    t.cleanup().await;
}

#[tokio::test]
async fn switching_to_autoscaling_keeps_the_current_replicas() {
    let Some(t) = T::new("hpa").await else { return };
    t.create(
        "demo",
        json!({"version": "0.1.0", "migrations": {"policy": "Disabled"},
                             "services": {"booking": {"replicas": 3}}}),
    )
    .await;
    t.reconcile("demo").await;
    t.reconcile("demo").await;
    let replicas = |d: Deployment| d.spec.and_then(|s| s.replicas);
    assert_eq!(
        replicas(
            t.api::<Deployment>()
                .get("demo-booking")
                .await
                .expect("booking")
        ),
        Some(3)
    );
    t.patch_spec(
        "demo",
        json!({"services": {"booking": {"replicas": null,
        "autoscaling": {"minReplicas": 2, "maxReplicas": 6}}}}),
    )
    .await;
    t.reconcile("demo").await;
    t.reconcile("demo").await;
    let d = t
        .api::<Deployment>()
        .get("demo-booking")
        .await
        .expect("booking");
    assert_eq!(
        replicas(d),
        Some(3),
        "the replica count must survive until the HPA changes it"
    );
    let hpa = t
        .api::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>()
        .get("demo-booking")
        .await
        .expect("hpa");
    assert_eq!(
        hpa.spec.map(|s| (s.min_replicas, s.max_replicas)),
        Some((Some(2), 6))
    );
    // the HPA (here: the test) scales through the scale subresource; the operator does not fight it
    t.api::<Deployment>()
        .patch_scale(
            "demo-booking",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("scale");
    t.reconcile("demo").await;
    assert_eq!(
        replicas(
            t.api::<Deployment>()
                .get("demo-booking")
                .await
                .expect("booking")
        ),
        Some(5)
    );
    // and autoscaling off again: the spec's count is applied
    t.patch_spec(
        "demo",
        json!({"services": {"booking": {"replicas": 2, "autoscaling": null}}}),
    )
    .await;
    t.reconcile("demo").await;
    assert_eq!(
        replicas(
            t.api::<Deployment>()
                .get("demo-booking")
                .await
                .expect("booking")
        ),
        Some(2)
    );
    assert!(
        t.api::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>()
            .get_opt("demo-booking")
            .await
            .expect("get")
            .is_none(),
        "HPA pruned"
    );
    t.cleanup().await;
}

/// The crate's folder, read when the test runs: clones at different paths share one target
/// directory, so a path compiled in with `env!` can name another clone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
}
