//! Renders Kong's declarative configuration (DB-less mode, `_format_version: "3.0"`).
//!
//! What the gateway does, in one place:
//! - `/api/v1/register` and `/api/v1/login` are public; the rest of the user API needs a JWT.
//! - the catalogue (`/api/v1/{movies,showtimes,cinemas,screens}`) is public to read; writes
//!   need a JWT (the cinema service checks the admin role itself).
//! - `/api/v1/payments` is read-only (GET/HEAD, JWT; a user sees only their own payments),
//!   mapped onto the payment service's `/payments`. No payment or refund write is routed:
//!   charging and refunding are internal steps of the booking service (issue 12), and users
//!   get money back through GraphQL `cancelBooking`.
//! - `/graphql` goes through the jwt plugin with an anonymous consumer, so browsing the
//!   catalogue stays public while a valid token identifies the user (booking checks tokens on
//!   mutations itself).
//! - `GET /` (any path no other route takes) is the storefront booking serves, public.
//!
//! Every route lists its methods. Kong's router tries the routes with the most matching fields
//! first and only then prefers the longest path, so a `paths` + `methods` catch-all on `/`
//! would shadow every route that has `paths` alone (`GET /api/v1/profile` would reach the
//! storefront, past the JWT check). With the same fields on every route, the longest path
//! prefix decides.
//! - global plugins: CORS, rate limiting per client IP (policy `local`, no shared store needed),
//!   a correlation id and JSON access logs on stdout.
//!
//! User tokens are ES256 and name their key in the header's `kid`; Kong has one credential per
//! public key (the operator's `user-token-public-keys`, two during a rotation), keyed by that
//! id, and nothing it could sign with (the `secret` decK requires is a one-way filler).
//! Service tokens (HS256) are never accepted at the edge.

use serde_json::{Value, json};

use crate::build::{Instance, ServiceKind, tokens::VerificationKey};
use crate::crd::MovieBookingSystemSpec;

/// Consumer whose credential verifies user tokens.
pub const USERS_CONSUMER: &str = "moviebook-users";
/// Consumer Kong assigns to requests without a token on routes that allow them.
pub const ANONYMOUS_CONSUMER: &str = "anonymous";
/// The methods of a route that takes any method a client sends through the gateway: named so
/// that every route has the same matching fields (see the module docs).
pub const ANY_METHOD: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// Catalogue collections served by cinema.
pub const CATALOGUE: [&str; 4] = ["movies", "showtimes", "cinemas", "screens"];

/// The declarative configuration as a JSON value (Kong accepts YAML or JSON).
pub fn config(
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    user_keys: &[VerificationKey],
    filler_seed: &str,
) -> Value {
    let upstream = |svc: ServiceKind, path: &str| {
        format!(
            "http://{}:{}{}",
            inst.dns(&inst.child(svc.name())),
            svc.http_port(),
            path
        )
    };
    let jwt = |anonymous: bool| {
        let mut config = json!({
            // Kong reads the claim from the payload, then the header: `kid` is in the header.
            "key_claim_name": "kid",
            "claims_to_verify": ["exp"],
            "header_names": ["authorization"],
            "uri_param_names": [],
        });
        if anonymous {
            config["anonymous"] = json!(ANONYMOUS_CONSUMER);
        }
        json!({"name": "jwt", "config": config})
    };
    let catalogue_paths: Vec<String> = CATALOGUE.iter().map(|c| format!("/api/v1/{c}")).collect();
    let read = json!(["GET", "HEAD", "OPTIONS"]);
    let write = json!(["POST", "PUT", "PATCH", "DELETE"]);
    let any = json!(ANY_METHOD);
    json!({
        "_format_version": "3.0",
        "_transform": true,
        "services": [
            {
                "name": "user-service",
                "url": upstream(ServiceKind::User, ""),
                "routes": [
                    {"name": "user-public", "paths": ["/api/v1/register", "/api/v1/login"], "methods": any,
                     "strip_path": false},
                    {"name": "user-protected", "paths": ["/api/v1/users", "/api/v1/profile"], "methods": any,
                     "strip_path": false, "plugins": [jwt(false)]},
                ],
            },
            {
                "name": "cinema-service",
                "url": upstream(ServiceKind::Cinema, ""),
                "routes": [
                    {"name": "catalogue-read", "paths": catalogue_paths, "methods": read, "strip_path": false},
                    {"name": "catalogue-write", "paths": catalogue_paths, "methods": write, "strip_path": false,
                     "plugins": [jwt(false)]},
                ],
            },
            {
                "name": "payment-service",
                "url": upstream(ServiceKind::Payment, "/payments"),
                "routes": [
                    {"name": "payments", "paths": ["/api/v1/payments"], "methods": ["GET", "HEAD"],
                     "strip_path": true, "plugins": [jwt(false)]},
                ],
            },
            {
                "name": "booking-service",
                "url": upstream(ServiceKind::Booking, ""),
                "routes": [
                    {"name": "graphql", "paths": ["/graphql"], "methods": any, "strip_path": false,
                     "plugins": [jwt(true)]},
                    // the storefront booking serves (page, assets); every route has paths and
                    // methods, so the longest prefix wins and every other route keeps its own
                    {"name": "storefront", "paths": ["/"], "methods": ["GET", "HEAD"], "strip_path": false},
                ],
            },
        ],
        "consumers": [
            {
                "username": USERS_CONSUMER,
                // One credential per public key (two during a rotation). Kong cannot mint a
                // token, and service tokens never pass the edge (no credential has the kid of
                // booking's service-token key).
                "jwt_secrets": user_keys
                    .iter()
                    .map(|k| json!({
                        "key": k.kid,
                        "algorithm": "ES256",
                        "rsa_public_key": k.pem,
                        "secret": unused_secret(filler_seed, &k.kid),
                    }))
                    .collect::<Vec<_>>(),
            },
            {"username": ANONYMOUS_CONSUMER},
        ],
        "plugins": [
            {
                "name": "cors",
                "config": {
                    "origins": spec.gateway.kong.cors_origins,
                    "methods": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                    "headers": ["Accept", "Authorization", "Content-Type", "X-Request-ID"],
                    "exposed_headers": ["X-Request-ID", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"],
                    "credentials": !spec.gateway.kong.cors_origins.iter().any(|o| o == "*"),
                    "max_age": 3600,
                },
            },
            {
                "name": "rate-limiting",
                "config": {
                    "minute": spec.gateway.kong.rate_limit_per_minute,
                    "limit_by": "ip",
                    "policy": "local",
                    "fault_tolerant": true,
                },
            },
            {
                "name": "correlation-id",
                "config": {"header_name": "X-Request-ID", "generator": "uuid", "echo_downstream": true},
            },
            {
                "name": "file-log",
                "config": {"path": "/dev/stdout", "reopen": false},
            },
        ],
    })
}

/// The `secret` of an ES256 credential. Kong's schema fills it in when absent, but decK's
/// validation requires it; Kong never uses it for an ES256 credential (it checks the token's
/// `alg` against the credential's first). A one-way hash of `seed` (the instance's JWT secret)
/// and the key id: neither guessable nor the secret itself.
fn unused_secret(seed: &str, kid: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"moviebook kong: unused secret of an ES256 credential\0")
        .chain_update(seed.as_bytes())
        .chain_update(b"\0")
        .chain_update(kid.as_bytes())
        .finalize();
    hex::encode(digest)
}

/// The configuration as YAML, the file Kong reads.
pub fn render(
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    user_keys: &[VerificationKey],
    filler_seed: &str,
) -> String {
    // A serde_json::Value always serialises; the fallback only guards the type system.
    serde_yaml::to_string(&config(spec, inst, user_keys, filler_seed)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::*;

    fn find<'a>(v: &'a Value, list: &str, key: &str, name: &str) -> &'a Value {
        v[list]
            .as_array()
            .expect("list")
            .iter()
            .find(|x| x[key] == name)
            .unwrap_or_else(|| panic!("{list} has no {name}"))
    }

    fn route<'a>(v: &'a Value, service: &str, route: &str) -> &'a Value {
        find(
            find(v, "services", "name", service),
            "routes",
            "name",
            route,
        )
    }

    fn plugins(route: &Value) -> Vec<String> {
        route["plugins"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| p["name"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn login_and_register_are_public_profile_is_protected() {
        let v = config(&sample().spec, &instance(), &test_keys(), "service-secret");
        let public = route(&v, "user-service", "user-public");
        assert_eq!(
            public["paths"],
            json!(["/api/v1/register", "/api/v1/login"])
        );
        assert!(plugins(public).is_empty());
        let protected = route(&v, "user-service", "user-protected");
        assert_eq!(plugins(protected), ["jwt"]);
        assert!(protected["plugins"][0]["config"].get("anonymous").is_none());
        assert_eq!(
            find(&v, "services", "name", "user-service")["url"],
            "http://demo-user.shop.svc:8001"
        );
    }

    #[test]
    fn graphql_uses_jwt_with_anonymous_consumer() {
        let v = config(&sample().spec, &instance(), &test_keys(), "service-secret");
        let g = route(&v, "booking-service", "graphql");
        assert_eq!(g["paths"], json!(["/graphql"]));
        assert_eq!(g["plugins"][0]["name"], "jwt");
        assert_eq!(g["plugins"][0]["config"]["anonymous"], ANONYMOUS_CONSUMER);
        assert_eq!(g["plugins"][0]["config"]["key_claim_name"], "kid");
        find(&v, "consumers", "username", ANONYMOUS_CONSUMER);
        assert_eq!(
            find(&v, "services", "name", "booking-service")["url"],
            "http://demo-booking.shop.svc:8010"
        );
    }

    #[test]
    fn the_storefront_is_a_public_read_only_catch_all_on_booking() {
        let v = config(&sample().spec, &instance(), &test_keys(), "service-secret");
        let r = route(&v, "booking-service", "storefront");
        assert_eq!(r["paths"], serde_json::json!(["/"]));
        assert_eq!(r["methods"], serde_json::json!(["GET", "HEAD"]));
        assert!(plugins(r).is_empty());
    }

    fn test_keys() -> Vec<VerificationKey> {
        vec![
            VerificationKey {
                kid: "aaaaaaaaaaaaaaaa".into(),
                pem: "-----BEGIN PUBLIC KEY-----\nA\n-----END PUBLIC KEY-----\n".into(),
            },
            VerificationKey {
                kid: "bbbbbbbbbbbbbbbb".into(),
                pem: "-----BEGIN PUBLIC KEY-----\nB\n-----END PUBLIC KEY-----\n".into(),
            },
        ]
    }

    #[test]
    fn one_es256_credential_per_public_key() {
        let v = config(&sample().spec, &instance(), &test_keys(), "service-secret");
        let creds = find(&v, "consumers", "username", USERS_CONSUMER)["jwt_secrets"]
            .as_array()
            .expect("credentials")
            .clone();
        assert_eq!(creds.len(), 2);
        for (cred, key) in creds.iter().zip(test_keys()) {
            assert_eq!(cred["key"], key.kid.as_str());
            assert_eq!(cred["algorithm"], "ES256");
            assert_eq!(cred["rsa_public_key"], key.pem.as_str());
            let filler = cred["secret"].as_str().expect("decK requires a secret");
            assert_eq!(filler.len(), 64);
            assert!(
                !filler.contains("service-secret"),
                "not the service secret itself"
            );
        }
        let g = route(&v, "booking-service", "graphql");
        assert_eq!(g["plugins"][0]["config"]["key_claim_name"], "kid");
    }

    #[test]
    fn catalogue_reads_are_public_writes_need_a_token() {
        let v = config(&sample().spec, &instance(), &test_keys(), "service-secret");
        let read = route(&v, "cinema-service", "catalogue-read");
        assert!(plugins(read).is_empty());
        assert_eq!(read["methods"], json!(["GET", "HEAD", "OPTIONS"]));
        assert_eq!(read["paths"].as_array().map(Vec::len), Some(4));
        assert_eq!(
            plugins(route(&v, "cinema-service", "catalogue-write")),
            ["jwt"]
        );
        let pay = route(&v, "payment-service", "payments");
        assert_eq!(pay["strip_path"], true);
        assert_eq!(
            find(&v, "services", "name", "payment-service")["url"],
            "http://demo-payment.shop.svc:8003/payments"
        );
    }

    /// The routes that match `method path`: a path prefix match and, when the route lists
    /// methods, the method among them (Kong's router rules for these fields). [`picked`] says
    /// which of them Kong uses.
    fn routed<'a>(v: &'a Value, method: &str, path: &str) -> Vec<&'a str> {
        let mut hits = Vec::new();
        for s in v["services"].as_array().expect("services") {
            for r in s["routes"].as_array().expect("routes") {
                let path_ok = r["paths"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .filter_map(Value::as_str)
                        .any(|p| path.starts_with(p))
                });
                let method_ok = r["methods"]
                    .as_array()
                    .is_none_or(|ms| ms.iter().any(|m| m == method));
                if path_ok && method_ok {
                    hits.push(r["name"].as_str().unwrap_or_default());
                }
            }
        }
        hits
    }

    /// The route Kong picks for `method path` among those [`routed`] lists, as `(service,
    /// route)`: the most matching fields first (Kong's `match_weight`), then the longest path
    /// prefix (plain paths; none of these are regexes).
    fn picked<'a>(v: &'a Value, method: &str, path: &str) -> Option<(&'a str, &'a str)> {
        let fields = |r: &Value| {
            ["paths", "methods", "hosts", "headers"]
                .iter()
                .filter(|f| !r[**f].is_null())
                .count()
        };
        let longest = |r: &Value| {
            r["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|p| path.starts_with(p))
                .map(str::len)
                .max()
                .unwrap_or(0)
        };
        let names = routed(v, method, path);
        v["services"]
            .as_array()
            .expect("services")
            .iter()
            .flat_map(|s| {
                s["routes"]
                    .as_array()
                    .expect("routes")
                    .iter()
                    .map(move |r| (s, r))
            })
            .filter(|(_, r)| names.contains(&r["name"].as_str().unwrap_or_default()))
            .max_by_key(|(_, r)| (fields(r), longest(r)))
            .map(|(s, r)| {
                (
                    s["name"].as_str().unwrap_or_default(),
                    r["name"].as_str().unwrap_or_default(),
                )
            })
    }

    #[test]
    fn every_path_reaches_its_own_route_past_the_storefront_catch_all() {
        let v = config(&sample().spec, &instance(), &test_keys(), "service-secret");
        for r in v["services"]
            .as_array()
            .expect("services")
            .iter()
            .flat_map(|s| s["routes"].as_array().expect("routes"))
        {
            assert!(r["methods"].is_array(), "{} lists no methods", r["name"]);
        }
        for (method, path, want) in [
            ("GET", "/api/v1/profile", ("user-service", "user-protected")),
            (
                "GET",
                "/api/v1/users/u1",
                ("user-service", "user-protected"),
            ),
            ("POST", "/api/v1/login", ("user-service", "user-public")),
            (
                "OPTIONS",
                "/api/v1/register",
                ("user-service", "user-public"),
            ),
            (
                "GET",
                "/api/v1/movies",
                ("cinema-service", "catalogue-read"),
            ),
            (
                "POST",
                "/api/v1/movies",
                ("cinema-service", "catalogue-write"),
            ),
            (
                "GET",
                "/api/v1/payments/p1",
                ("payment-service", "payments"),
            ),
            ("GET", "/graphql", ("booking-service", "graphql")),
            ("POST", "/graphql", ("booking-service", "graphql")),
            ("GET", "/", ("booking-service", "storefront")),
            ("GET", "/assets/app.js", ("booking-service", "storefront")),
        ] {
            assert_eq!(picked(&v, method, path), Some(want), "{method} {path}");
        }
        assert_eq!(picked(&v, "POST", "/"), None, "the storefront is read-only");
    }

    #[test]
    fn no_payment_or_refund_write_is_routed_reads_need_a_token() {
        let v = config(&sample().spec, &instance(), &test_keys(), "service-secret");
        for path in [
            "/api/v1/payments",
            "/api/v1/payments/",
            "/api/v1/payments/booking/b1",
            "/api/v1/refunds",
            "/api/v1/refunds/x",
        ] {
            for method in ["POST", "PUT", "PATCH", "DELETE"] {
                assert_eq!(
                    routed(&v, method, path),
                    Vec::<&str>::new(),
                    "{method} {path}"
                );
            }
        }
        // a refund read finds no payment route: only the storefront's catch-all (booking)
        assert_eq!(routed(&v, "GET", "/api/v1/refunds"), ["storefront"]);
        assert_eq!(
            picked(&v, "GET", "/api/v1/payments/t1"),
            Some(("payment-service", "payments"))
        );
        assert_eq!(plugins(route(&v, "payment-service", "payments")), ["jwt"]);
    }

    #[test]
    fn global_rate_limit_and_cors_follow_the_spec() {
        let mut mbs = sample();
        let v = config(&mbs.spec, &instance(), &test_keys(), "service-secret");
        let rl = find(&v, "plugins", "name", "rate-limiting");
        assert_eq!(rl["config"]["minute"], 200);
        assert_eq!(rl["config"]["limit_by"], "ip");
        assert_eq!(rl["config"]["policy"], "local");
        assert_eq!(
            find(&v, "plugins", "name", "cors")["config"]["origins"],
            json!(["*"])
        );
        find(&v, "plugins", "name", "file-log");

        mbs.spec.gateway.kong.rate_limit_per_minute = 50;
        mbs.spec.gateway.kong.cors_origins = vec!["https://tickets.example".into()];
        let v = config(&mbs.spec, &instance(), &test_keys(), "service-secret");
        assert_eq!(
            find(&v, "plugins", "name", "rate-limiting")["config"]["minute"],
            50
        );
        let cors = find(&v, "plugins", "name", "cors");
        assert_eq!(
            cors["config"]["origins"],
            json!(["https://tickets.example"])
        );
        assert_eq!(cors["config"]["credentials"], true);
    }

    #[test]
    fn renders_yaml_with_format_version() {
        let yaml = render(&sample().spec, &instance(), &test_keys(), "service-secret");
        assert!(
            yaml.starts_with("_format_version: '3.0'") || yaml.contains("_format_version: '3.0'"),
            "{yaml}"
        );
        let back: Value = serde_yaml::from_str(&yaml).expect("yaml parses");
        assert_eq!(
            back,
            config(&sample().spec, &instance(), &test_keys(), "service-secret")
        );
    }
}
