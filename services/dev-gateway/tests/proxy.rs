//! The real `dev-gateway` binary in front of a real upstream: paths routed like Kong, the
//! query string, method, body and status passed through, unknown API paths 404.

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use axum::{Router, routing::any};

struct Gateway(Child);
impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn routes_and_passes_requests_through() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up = format!("http://{}", upstream.local_addr().expect("addr"));
    let app = Router::new().fallback(any(|req: axum::extract::Request| async move {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        (
            axum::http::StatusCode::ACCEPTED,
            format!(
                "{} {} {}",
                parts.method,
                parts.uri,
                String::from_utf8_lossy(&body)
            ),
        )
    }));
    tokio::spawn(async move { axum::serve(upstream, app).await });
    let port = free_port();
    let _gw = Gateway(
        Command::new(env!("CARGO_BIN_EXE_dev-gateway"))
            .env("PORT", port.to_string())
            .env("BOOKING_URL", &up)
            .env("USER_SERVICE_URL", &up)
            .env("CINEMA_REST_URL", &up)
            .env("PAYMENT_SERVICE_URL", &up)
            .spawn()
            .expect("start dev-gateway"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = http
        .post(format!("{base}/graphql?x=1"))
        .body("{\"query\":\"{ a }\"}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(
        r.text().await.expect("body"),
        "POST /graphql?x=1 {\"query\":\"{ a }\"}"
    );
    let r = http
        .get(format!("{base}/api/v1/payments/t1"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.text().await.expect("body"), "GET /payments/t1 ");
    let r = http
        .get(format!("{base}/api/v1/unknown"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
}
