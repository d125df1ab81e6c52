//! Reconciler tests against a `tower_test` mock API server.
//!
//! The mock is a tiny in-memory API server: it stores what is applied, answers GET/LIST from
//! that store and records every request (method, path, body). Tests then assert on the exact
//! requests the reconciler made: their order (stores before migrations before services
//! before Kong), what was not written (paused, gated Deployments), and their bodies.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use moviebook_operator::controller::{self, Context};
use moviebook_operator::crd::MovieBookingSystem;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
struct Call {
    method: Method,
    path: String,
    query: String,
    body: Value,
}

impl Call {
    fn is_write(&self) -> bool {
        !matches!(self.method, Method::GET)
    }
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<String, Value>,
    calls: Vec<Call>,
}

/// The fake API server; cheap to clone.
#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<Store>>);

impl FakeApi {
    fn put(&self, path: &str, obj: Value) {
        self.0
            .lock()
            .expect("lock")
            .objects
            .insert(path.to_string(), obj);
    }
    fn get(&self, path: &str) -> Option<Value> {
        self.0.lock().expect("lock").objects.get(path).cloned()
    }
    fn calls(&self) -> Vec<Call> {
        self.0.lock().expect("lock").calls.clone()
    }
    fn clear_calls(&self) {
        self.0.lock().expect("lock").calls.clear();
    }

    /// Starts serving a kube Client; the task ends when the client is dropped.
    fn client(&self) -> Client {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.expect("body");
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let (code, resp) = api.handle(
                    &parts.method,
                    parts.uri.path(),
                    parts.uri.query().unwrap_or(""),
                    body,
                );
                send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&resp).expect("json")))
                        .expect("response"),
                );
            }
        });
        Client::new(svc, "default")
    }

    fn handle(&self, method: &Method, path: &str, query: &str, body: Value) -> (StatusCode, Value) {
        let mut s = self.0.lock().expect("lock");
        s.calls.push(Call {
            method: method.clone(),
            path: path.to_string(),
            query: query.to_string(),
            body: body.clone(),
        });
        let not_found = || {
            (
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
            )
        };
        match *method {
            Method::GET if query.contains("labelSelector") || query.contains("limit") => {
                let prefix = format!("{path}/");
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                    .map(|(_, v)| v.clone())
                    .collect();
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            Method::GET => match s.objects.get(path) {
                Some(o) => (StatusCode::OK, o.clone()),
                None => not_found(),
            },
            Method::PATCH if path.ends_with("/status") => {
                let obj_path = path.trim_end_matches("/status");
                match s.objects.get_mut(obj_path) {
                    Some(o) => {
                        o["status"] = body["status"].clone();
                        (StatusCode::OK, o.clone())
                    }
                    None => not_found(),
                }
            }
            Method::PATCH if body.is_array() => {
                // JSON patch: the finalizer helper adding its finalizer.
                match s.objects.get_mut(path) {
                    Some(o) => {
                        o["metadata"]["finalizers"] = json!(["moviebook.io/cleanup"]);
                        (StatusCode::OK, o.clone())
                    }
                    None => not_found(),
                }
            }
            Method::PATCH => {
                let mut obj = body.clone();
                if let Some(st) = s.objects.get(path).and_then(|e| e.get("status")) {
                    obj["status"] = st.clone();
                }

                s.objects.insert(path.to_string(), obj.clone());
                (StatusCode::OK, obj)
            }
            Method::POST => (StatusCode::CREATED, body),
            Method::DELETE => {
                s.objects.remove(path);
                (
                    StatusCode::OK,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
                )
            }
            _ => not_found(),
        }
    }
}

const NS: &str = "shop";
const CR_PATH: &str = "/apis/moviebook.io/v1alpha1/namespaces/shop/moviebookingsystems/demo";

fn path(group: &str, plural: &str, name: &str) -> String {
    let base = if group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{group}")
    };
    format!("{base}/namespaces/{NS}/{plural}/{name}")
}

fn cr(spec: Value, generation: i64) -> Value {
    json!({
        "apiVersion": "moviebook.io/v1alpha1",
        "kind": "MovieBookingSystem",
        "metadata": {"name": "demo", "namespace": NS, "uid": "uid-1", "generation": generation,
                     "resourceVersion": "7", "finalizers": ["moviebook.io/cleanup"]},
        "spec": spec,
    })
}

async fn reconcile(api: &FakeApi, obj: &Value) -> Result<(), moviebook_operator::Error> {
    let mbs: MovieBookingSystem = serde_json::from_value(obj.clone()).expect("cr");
    let ctx = Arc::new(Context::new(api.client(), None));
    controller::reconcile(Arc::new(mbs), ctx).await.map(|_| ())
}

fn writes(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.is_write())
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

fn position(calls: &[String], needle: &str) -> usize {
    calls
        .iter()
        .position(|c| c.contains(needle))
        .unwrap_or_else(|| panic!("no request matching {needle} in {calls:#?}"))
}

/// Puts StatefulSets that report a ready replica, as the StatefulSet controller would.
fn stores_ready(api: &FakeApi) {
    for store in ["postgres", "mongodb", "redis", "rabbitmq"] {
        let name = format!("demo-{store}");
        api.put(
            &path("apps/v1", "statefulsets", &name),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                   "metadata": {"name": name, "namespace": NS,
                                "labels": {"app.kubernetes.io/instance": "demo", "app.kubernetes.io/managed-by": "moviebook-operator"}},
                   "spec": {"selector": {}, "serviceName": name, "template": {}},
                   "status": {"replicas": 1, "readyReplicas": 1}}),
        );
    }
}

fn deployment_image(body: &Value) -> String {
    body["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn adds_finalizer_before_anything_else() {
    let api = FakeApi::default();
    let mut obj = cr(json!({"version": "0.1.0"}), 1);
    obj["metadata"]["finalizers"] = json!([]);
    api.put(CR_PATH, obj.clone());
    reconcile(&api, &obj).await.expect("reconcile");
    let calls = api.calls();
    assert_eq!(
        writes(&calls),
        [format!("PATCH {CR_PATH}")],
        "only the finalizer is written first"
    );
    assert!(calls[0].body.to_string().contains("moviebook.io/cleanup"));
}

#[tokio::test]
async fn fresh_install_applies_config_and_stores_first_and_holds_services() {
    let api = FakeApi::default();
    let obj = cr(json!({"version": "0.1.0"}), 1);
    api.put(CR_PATH, obj.clone());
    reconcile(&api, &obj).await.expect("reconcile");
    let calls = api.calls();
    let w = writes(&calls);

    // dependency order: config, stores, then the rest, Kong last, status at the very end
    let secret = position(&w, "/secrets/demo-secrets");
    let config = position(&w, "/configmaps/demo-config");
    let sts = position(&w, "/statefulsets/demo-postgres");
    let svc = position(&w, "/services/demo-user");
    let kong = position(&w, "/deployments/demo-gateway");
    let status = position(&w, "/moviebookingsystems/demo/status");
    assert!(
        secret < config && config < sts && sts < svc && svc < kong && kong < status,
        "{w:#?}"
    );
    assert_eq!(
        status,
        w.len() - 1 - events(&w),
        "status is written after every object: {w:#?}"
    );

    // stores are not ready: no migration Job, and so no service Deployment
    assert!(!w.iter().any(|c| c.contains("/jobs/")), "{w:#?}");
    for svc in ["user", "cinema", "payment", "notification", "booking"] {
        assert!(
            !w.iter()
                .any(|c| c.ends_with(&format!("/deployments/demo-{svc}"))),
            "{svc} deployed early: {w:#?}"
        );
    }
    // every apply is server-side apply with the operator's field manager
    for c in calls
        .iter()
        .filter(|c| c.method == Method::PATCH && !c.path.ends_with(CR_PATH))
    {
        assert!(
            c.query.contains("fieldManager=moviebook-operator"),
            "{} {}",
            c.path,
            c.query
        );
        assert!(c.query.contains("force=true"), "{}", c.query);
    }
    let status_body = &calls
        .iter()
        .find(|c| c.path.ends_with("/status"))
        .expect("status")
        .body;
    assert_eq!(status_body["status"]["phase"], "Progressing");
    assert_eq!(status_body["status"]["observedGeneration"], 1);
}

fn events(w: &[String]) -> usize {
    w.iter().filter(|c| c.contains("/events")).count()
}

#[tokio::test]
async fn version_bump_runs_migration_first_and_rolls_only_after_success() {
    let api = FakeApi::default();
    stores_ready(&api);
    // version 0.1.0 is running
    let obj = cr(
        json!({"version": "0.1.0", "migrations": {"policy": "Disabled"}}),
        1,
    );
    api.put(CR_PATH, obj.clone());
    reconcile(&api, &obj).await.expect("install");
    let user = path("apps/v1", "deployments", "demo-user");
    assert_eq!(
        deployment_image(&api.get(&user).expect("deployment")),
        "ghcr.io/moviebook/user-service:0.1.0"
    );

    // bump to 0.2.0 with automatic migrations
    api.clear_calls();
    let obj = cr(json!({"version": "0.2.0"}), 2);
    api.put(CR_PATH, obj.clone());
    reconcile(&api, &obj).await.expect("bump");
    let calls = api.calls();
    let w = writes(&calls);
    let job = position(&w, "/jobs/demo-user-migrate-0-2-0-");
    let dep = position(&w, "/deployments/demo-user");
    assert!(
        job < dep,
        "the Job is created before the Deployment is touched: {w:#?}"
    );
    let applied = calls
        .iter()
        .find(|c| c.method == Method::PATCH && c.path == user)
        .expect("deployment apply");
    assert_eq!(
        deployment_image(&applied.body),
        "ghcr.io/moviebook/user-service:0.1.0",
        "old image kept while migrating"
    );
    let job_call = calls
        .iter()
        .find(|c| c.path.contains("/jobs/demo-user-migrate"))
        .expect("job");
    let container = &job_call.body["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "ghcr.io/moviebook/user-service:0.2.0");
    assert_eq!(container["command"], json!(["user-service", "migrate"]));

    // the Job fails: still the old image, Failed in status
    let job_path = job_call.path.clone();
    let mut job = api.get(&job_path).expect("job stored");
    job["status"] = json!({"failed": 4, "conditions": [{"type": "Failed", "status": "True"}]});
    api.put(&job_path, job.clone());
    api.clear_calls();
    let obj = api.get(CR_PATH).expect("cr");
    reconcile(&api, &obj).await.expect("failed job");
    let calls = api.calls();
    let applied = calls
        .iter()
        .find(|c| c.method == Method::PATCH && c.path == user)
        .expect("deployment apply");
    assert_eq!(
        deployment_image(&applied.body),
        "ghcr.io/moviebook/user-service:0.1.0"
    );
    assert!(
        !calls.iter().any(|c| c.path == job_path && c.is_write()),
        "failed Job is neither re-applied nor deleted without a spec change"
    );
    let cr_now = api.get(CR_PATH).expect("cr");
    assert_eq!(cr_now["status"]["migrations"]["user"]["state"], "Failed");
    assert_eq!(cr_now["status"]["phase"], "Failed");
    assert!(
        calls
            .iter()
            .any(|c| c.path.contains("/events") && c.body["reason"] == "MigrationFailed")
    );

    // a spec change retries it: the failed Job is deleted
    api.clear_calls();
    let mut obj = api.get(CR_PATH).expect("cr");
    obj["metadata"]["generation"] = json!(3);
    obj["spec"]["logLevel"] = json!("debug");
    api.put(CR_PATH, obj.clone());
    reconcile(&api, &obj).await.expect("retry");
    assert!(
        api.calls()
            .iter()
            .any(|c| c.method == Method::DELETE && c.path == job_path),
        "{:#?}",
        writes(&api.calls())
    );

    // the Job (re-created) succeeds: now the Deployment gets the new image and the Job is not re-applied
    reconcile(&api, &api.get(CR_PATH).expect("cr"))
        .await
        .expect("recreate");
    let mut job = api.get(&job_path).expect("job recreated");
    job["status"] = json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
    api.put(&job_path, job);
    api.clear_calls();
    reconcile(&api, &api.get(CR_PATH).expect("cr"))
        .await
        .expect("rollout");
    let calls = api.calls();
    let applied = calls
        .iter()
        .find(|c| c.method == Method::PATCH && c.path == user)
        .expect("deployment apply");
    assert_eq!(
        deployment_image(&applied.body),
        "ghcr.io/moviebook/user-service:0.2.0"
    );
    assert!(
        !calls.iter().any(|c| c.path == job_path && c.is_write()),
        "an existing Job is immutable and never re-applied"
    );
}

#[tokio::test]
async fn paused_writes_nothing_but_status() {
    let api = FakeApi::default();
    stores_ready(&api);
    let obj = cr(json!({"version": "0.1.0", "paused": true}), 1);
    api.put(CR_PATH, obj.clone());
    reconcile(&api, &obj).await.expect("reconcile");
    let w = writes(&api.calls());
    let non_status: Vec<&String> = w
        .iter()
        .filter(|c| !c.ends_with("/status") && !c.contains("/events"))
        .collect();
    assert!(non_status.is_empty(), "paused wrote {non_status:#?}");
    assert_eq!(api.get(CR_PATH).expect("cr")["status"]["phase"], "Paused");
}

#[tokio::test]
async fn second_reconcile_of_unchanged_resource_writes_no_status_or_events() {
    let api = FakeApi::default();
    stores_ready(&api);
    let obj = cr(json!({"version": "0.1.0"}), 1);
    api.put(CR_PATH, obj.clone());
    reconcile(&api, &obj).await.expect("first");
    api.clear_calls();
    reconcile(&api, &api.get(CR_PATH).expect("cr"))
        .await
        .expect("second");
    let calls = api.calls();
    let w = writes(&calls);
    assert!(
        !w.iter().any(|c| c.ends_with("/status")),
        "status rewritten: {w:#?}"
    );
    assert!(
        !w.iter().any(|c| c.contains("/events")),
        "events re-sent: {w:#?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.method == Method::DELETE || c.method == Method::POST),
        "{w:#?}"
    );
}

#[tokio::test]
async fn missing_external_secret_is_reported_not_applied() {
    let api = FakeApi::default();
    let obj = cr(
        json!({"version": "0.1.0", "postgres": {"external": {"secretRef": {"name": "pg", "key": "url"}}}}),
        1,
    );
    api.put(CR_PATH, obj.clone());
    let err = reconcile(&api, &obj).await.expect_err("missing secret");
    assert!(
        err.to_string().contains("Secret pg has no key url"),
        "{err}"
    );
    let w = writes(&api.calls());
    assert!(
        w.iter()
            .all(|c| c.ends_with("/status") || c.contains("/events")),
        "{w:#?}"
    );
    let status = &api.get(CR_PATH).expect("cr")["status"];
    assert_eq!(status["conditions"][0]["reason"], "InvalidSpec");
}

#[tokio::test]
async fn external_store_gets_no_statefulset_and_old_one_is_pruned() {
    let api = FakeApi::default();
    stores_ready(&api);
    api.put(
        &path("", "secrets", "pg"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg", "namespace": NS}, "data": {"url": "cG9zdGdyZXM6Ly94"}}),
    );
    let obj = cr(
        json!({"version": "0.1.0", "postgres": {"external": {"secretRef": {"name": "pg", "key": "url"}}}}),
        1,
    );
    api.put(CR_PATH, obj.clone());
    reconcile(&api, &obj).await.expect("reconcile");
    let w = writes(&api.calls());
    assert!(
        w.contains(&format!(
            "DELETE {}",
            path("apps/v1", "statefulsets", "demo-postgres")
        )),
        "{w:#?}"
    );
    assert!(
        !w.contains(&format!(
            "PATCH {}",
            path("apps/v1", "statefulsets", "demo-postgres")
        )),
        "{w:#?}"
    );
}

#[tokio::test]
async fn deletion_with_delete_policy_removes_volumes() {
    let api = FakeApi::default();
    let pvc = path("", "persistentvolumeclaims", "data-demo-postgres-0");
    api.put(&pvc, json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-demo-postgres-0", "namespace": NS}}));
    let mut obj = cr(json!({"version": "0.1.0", "dataOnDelete": "Delete"}), 1);
    obj["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
    api.put(CR_PATH, obj.clone());
    reconcile(&api, &obj).await.expect("cleanup");
    let w = writes(&api.calls());
    assert!(w.contains(&format!("DELETE {pvc}")), "{w:#?}");
    assert_eq!(
        w.last().map(String::as_str),
        Some(format!("PATCH {CR_PATH}").as_str()),
        "finalizer removed last: {w:#?}"
    );
}

#[tokio::test]
async fn deletion_with_retain_policy_keeps_volumes_and_credentials() {
    let api = FakeApi::default();
    let pvc = path("", "persistentvolumeclaims", "data-demo-postgres-0");
    api.put(&pvc, json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-demo-postgres-0", "namespace": NS}}));
    let secret = path("", "secrets", "demo-secrets");
    api.put(&secret, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "demo-secrets", "namespace": NS, "ownerReferences": [{"apiVersion": "moviebook.io/v1alpha1", "kind": "MovieBookingSystem", "name": "demo", "uid": "uid-1"}]}}));
    let mut obj = cr(json!({"version": "0.1.0"}), 1);
    obj["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
    api.put(CR_PATH, obj.clone());
    reconcile(&api, &obj).await.expect("cleanup");
    let calls = api.calls();
    assert!(
        !calls.iter().any(|c| c.method == Method::DELETE),
        "{:#?}",
        writes(&calls)
    );
    let orphan = calls
        .iter()
        .find(|c| c.method == Method::PATCH && c.path == secret)
        .expect("secret orphaned");
    assert_eq!(orphan.body["metadata"]["ownerReferences"], Value::Null);
}
