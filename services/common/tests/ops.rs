//! `/metrics` counters move with requests and `/ready` fails when a real dependency is down.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, routing::get};
use moviebook_common::{error, mongo, ops};

async fn start(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ops::serve_listener(listener, app, std::future::pending()));
    format!("http://{addr}")
}

/// The value of one Prometheus sample whose line contains every `needle`.
fn sample(text: &str, name: &str, needles: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_count_requests_per_route_and_status() {
    let app = Router::new()
        .route("/api/v1/things/{id}", get(|| async { "thing" }))
        .merge(ops::router(ops::Readiness::new()))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn(ops::track_metrics));
    let base = start(app).await;
    let http = reqwest::Client::new();

    let metrics = || async {
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let route = "route=\"/api/v1/things/{id}\"";
    let before_ok = sample(
        &metrics().await,
        "http_requests_total",
        &[route, "status=\"200\""],
    );
    for id in ["1", "2", "3"] {
        let r = http
            .get(format!("{base}/api/v1/things/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http.get(format!("{base}/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND");

    let text = metrics().await;
    let after_ok = sample(&text, "http_requests_total", &[route, "status=\"200\""]);
    assert_eq!(
        after_ok - before_ok,
        3.0,
        "three requests to the templated route:\n{text}"
    );
    assert!(
        sample(
            &text,
            "http_requests_total",
            &["route=\"unmatched\"", "status=\"404\""]
        ) >= 1.0,
        "unknown routes are counted under one label:\n{text}"
    );
    assert!(
        sample(&text, "http_request_duration_seconds_count", &[route]) >= 3.0,
        "latency histogram recorded:\n{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
    // Raw ids never become labels.
    assert!(!text.contains("/api/v1/things/1\""), "{text}");
}

#[tokio::test]
async fn ready_fails_when_a_dependency_is_down() {
    let url = std::env::var("MONGODB_URL")
        .expect("MONGODB_URL must point at the test MongoDB (run through `make test`)");
    let live = mongo::connect(&url, "ops-test", "moviebook_test_ops")
        .await
        .unwrap();
    // A real driver against a port where nothing listens: the check must fail, not hang.
    let dead = mongo::connect(
        "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500&connectTimeoutMS=500",
        "ops-test",
        "moviebook_test_ops",
    )
    .await
    .unwrap();
    let switch = Arc::new(AtomicBool::new(true));

    let live_check = {
        let db = live.clone();
        move || {
            let db = db.clone();
            async move { mongo::ping(&db).await }
        }
    };
    let readiness_ok = ops::Readiness::new()
        .with("mongodb", live_check.clone())
        .with("switch", {
            let s = switch.clone();
            move || {
                let up = s.load(Ordering::SeqCst);
                async move { if up { Ok(()) } else { Err("switched off") } }
            }
        });
    let base = start(Router::new().merge(ops::router(readiness_ok))).await;
    let http = reqwest::Client::new();

    let r = http.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["mongodb"], "ok");

    switch.store(false, Ordering::SeqCst);
    let r = http.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["switch"], "switched off");
    assert_eq!(body["checks"]["mongodb"], "ok");

    // Liveness does not depend on the dependencies.
    let r = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let readiness_dead = ops::Readiness::new().with("mongodb", move || {
        let db = dead.clone();
        async move { mongo::ping(&db).await }
    });
    let base = start(Router::new().merge(ops::router(readiness_dead))).await;
    let r = http.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_ne!(body["checks"]["mongodb"], "ok", "{body}");
}
