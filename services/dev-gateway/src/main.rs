//! `dev-gateway`: what Kong is in a cluster, for `make dev` and the browser tests: one origin
//! (http://127.0.0.1:8000) whose paths go to the services the way the operator's Kong
//! configuration routes them (`operator/src/kong.rs`), so the storefront talks to a single
//! origin everywhere. WebSocket upgrades (`/graphql/ws`) are passed through byte for byte.
//!
//! It is not a production gateway: no JWT check (the services verify tokens themselves), no
//! rate limit, bodies buffered (at most [`MAX_BODY_BYTES`]). Listens on 127.0.0.1 by default.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper_util::rt::TokioIo;
use moviebook_common::{
    config::{url_or, var_or},
    telemetry,
};

const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The services behind the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    User,
    Cinema,
    Payment,
    Booking,
}

/// Where a request goes and the path the service sees, mirroring the Kong routes
/// (`operator/src/kong.rs`): register/login/users/profile → user; the catalogue → cinema;
/// `GET`/`HEAD /api/v1/payments…` → payment's `/payments…` (prefix stripped; payment and
/// refund writes are internal to the booking service and not routed); `/graphql` and below
/// (API, IDE, WebSocket) and everything else (the storefront's files) → booking. Unknown
/// `/api/...` paths answer 404 here, as on Kong.
pub fn route(method: &http::Method, path: &str) -> Option<(Upstream, String)> {
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    const USER: [&str; 4] = [
        "/api/v1/register",
        "/api/v1/login",
        "/api/v1/users",
        "/api/v1/profile",
    ];
    const CATALOGUE: [&str; 4] = [
        "/api/v1/movies",
        "/api/v1/showtimes",
        "/api/v1/cinemas",
        "/api/v1/screens",
    ];
    if USER.iter().any(|p| under(p)) {
        return Some((Upstream::User, path.to_owned()));
    }
    if CATALOGUE.iter().any(|p| under(p)) {
        return Some((Upstream::Cinema, path.to_owned()));
    }
    let read = *method == http::Method::GET || *method == http::Method::HEAD;
    if read && under("/api/v1/payments") {
        return Some((
            Upstream::Payment,
            format!("/payments{}", &path["/api/v1/payments".len()..]),
        ));
    }
    if under("/api") {
        return None;
    }
    Some((Upstream::Booking, path.to_owned()))
}

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1), except that an
/// upgrade keeps `connection` and `upgrade`.
fn hop_by_hop(name: &HeaderName, upgrade: bool) -> bool {
    let n = name.as_str();
    match n {
        "connection" | "upgrade" => !upgrade,
        "keep-alive" | "proxy-connection" | "te" | "trailer" | "transfer-encoding" | "host" => true,
        _ => n.starts_with("proxy-"),
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

struct Gateway {
    client: reqwest::Client,
    user: String,
    cinema: String,
    payment: String,
    booking: String,
}

impl Gateway {
    fn base(&self, u: Upstream) -> &str {
        match u {
            Upstream::User => &self.user,
            Upstream::Cinema => &self.cinema,
            Upstream::Payment => &self.payment,
            Upstream::Booking => &self.booking,
        }
    }
}

fn problem(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn proxy(State(gw): State<Arc<Gateway>>, mut req: Request) -> Response {
    let Some((upstream, path)) = route(req.method(), req.uri().path()) else {
        return problem(StatusCode::NOT_FOUND, "NOT_FOUND", "no route for this path");
    };
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let url = format!("{}{path}{query}", gw.base(upstream).trim_end_matches('/'));
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "body too large",
        );
    };
    let mut out = gw.client.request(parts.method, &url).body(body);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name, upgrade) {
            out = out.header(name, value);
        }
    }
    if let Some(host) = parts.headers.get(header::HOST) {
        out = out.header("x-forwarded-host", host);
    }
    out = out.header("x-forwarded-proto", "http");
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%url, error = %e, "upstream did not answer");
            return problem(
                StatusCode::BAD_GATEWAY,
                "SERVICE_UNAVAILABLE",
                "the service did not answer",
            );
        }
    };
    let status = resp.status();
    let mut headers = HeaderMap::new();
    for (name, value) in resp.headers() {
        if !hop_by_hop(name, upgrade) {
            headers.append(name, value.clone());
        }
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return problem(
                StatusCode::BAD_GATEWAY,
                "SERVICE_UNAVAILABLE",
                "unexpected upgrade",
            );
        };
        tokio::spawn(async move {
            match (client_upgrade.await, resp.upgrade().await) {
                (Ok(client), Ok(mut server)) => {
                    let mut client = TokioIo::new(client);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                        tracing::debug!(error = %e, "websocket relay ended");
                    }
                }
                (c, s) => {
                    tracing::warn!(client = ?c.err(), server = ?s.err(), "websocket upgrade failed")
                }
            }
        });
        let mut r = Response::new(Body::empty());
        *r.status_mut() = status;
        *r.headers_mut() = headers;
        return r;
    }
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(%url, error = %e, "upstream body failed");
            return problem(
                StatusCode::BAD_GATEWAY,
                "SERVICE_UNAVAILABLE",
                "the service's answer broke off",
            );
        }
    };
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(bytes.len() as u64),
    );
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

async fn real_main() -> anyhow::Result<()> {
    let port: u16 = var_or("PORT", 8000)?;
    let bind: std::net::IpAddr = var_or("BIND_ADDR", std::net::IpAddr::from([127, 0, 0, 1]))?;
    let http = &["http", "https"];
    let gw = Gateway {
        client: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("http client")?,
        user: url_or("USER_SERVICE_URL", "http://127.0.0.1:8001", http)?,
        cinema: url_or("CINEMA_REST_URL", "http://127.0.0.1:8002", http)?,
        payment: url_or("PAYMENT_SERVICE_URL", "http://127.0.0.1:8003", http)?,
        booking: url_or("BOOKING_URL", "http://127.0.0.1:8010", http)?,
    };
    let app = Router::new().fallback(proxy).with_state(Arc::new(gw));
    let addr = SocketAddr::new(bind, port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    tracing::info!(%addr, "dev gateway listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            moviebook_common::shutdown::signal().await;
        })
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::run_service("dev-gateway", real_main()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_like_kong() {
        let r = |p: &str| route(&http::Method::GET, p);
        assert_eq!(
            r("/api/v1/login"),
            Some((Upstream::User, "/api/v1/login".into()))
        );
        assert_eq!(
            r("/api/v1/users/42"),
            Some((Upstream::User, "/api/v1/users/42".into()))
        );
        assert_eq!(
            r("/api/v1/movies"),
            Some((Upstream::Cinema, "/api/v1/movies".into()))
        );
        assert_eq!(
            r("/api/v1/payments/t1"),
            Some((Upstream::Payment, "/payments/t1".into()))
        );
        // payment and refund writes are internal (booking service only), as on Kong
        assert_eq!(r("/api/v1/refunds"), None);
        assert_eq!(route(&http::Method::POST, "/api/v1/payments"), None);
        assert_eq!(
            route(&http::Method::HEAD, "/api/v1/payments/booking/b1"),
            Some((Upstream::Payment, "/payments/booking/b1".into()))
        );
        assert_eq!(r("/graphql"), Some((Upstream::Booking, "/graphql".into())));
        assert_eq!(
            r("/graphql/ws"),
            Some((Upstream::Booking, "/graphql/ws".into()))
        );
        assert_eq!(r("/"), Some((Upstream::Booking, "/".into())));
        assert_eq!(
            r("/assets/index-1.js"),
            Some((Upstream::Booking, "/assets/index-1.js".into()))
        );
        // a prefix matches whole segments only
        assert_eq!(r("/api/v1/loginx"), None);
        assert_eq!(r("/api/v1/nothing"), None);
    }

    #[test]
    fn hop_by_hop_headers_stay_behind_but_an_upgrade_keeps_its_own() {
        let h = |n: &'static str| HeaderName::from_static(n);
        assert!(hop_by_hop(&h("connection"), false));
        assert!(!hop_by_hop(&h("connection"), true));
        assert!(!hop_by_hop(&h("upgrade"), true));
        assert!(hop_by_hop(&h("transfer-encoding"), true));
        assert!(hop_by_hop(&h("host"), false));
        assert!(!hop_by_hop(&h("authorization"), false));
        assert!(!hop_by_hop(&h("sec-websocket-key"), true));
    }
}
