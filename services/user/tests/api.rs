//! The real user service over HTTP against the real MongoDB-compatible test server.
//! Needs MONGODB_URL (`eval "$(scripts/stack.sh test env)"`); fails loudly without it.

use std::time::Duration;

use mongodb::bson::doc;
use moviebook_common::auth::{Claims, JwtKeys};
use reqwest::StatusCode;
use serde_json::{Value, json};
use user_service::{Config, password::HashParams};

const SECRET: &str = "user-service-test-secret-0123456789abcdef";

struct TestApp {
    base: String,
    http: reqwest::Client,
    config: Config,
    db: mongodb::Database,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

fn mongodb_url() -> String {
    std::env::var("MONGODB_URL").unwrap_or_else(|_| {
        panic!("MONGODB_URL is not set: run `eval \"$(scripts/stack.sh test env)\"` or `make test`")
    })
}

impl TestApp {
    async fn spawn() -> Self {
        let config = Config {
            port: 0,
            mongodb_url: mongodb_url(),
            database: format!("moviebook_test_{}", uuid::Uuid::new_v4().simple()),
            jwt_secret: SECRET.into(),
            jwt_issuer: "moviebook".into(),
            jwt_ttl: Duration::from_secs(3600),
            // Cheap parameters keep the suite fast on shared cores; the parameters are
            // checked below by reading the stored PHC string.
            hash: HashParams {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            hash_concurrency: 4,
        };
        user_service::migrate(&config).await.expect("migrate");
        let db = user_service::connect(&config).await.expect("connect");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let cfg = config.clone();
        tokio::spawn(async move {
            user_service::run(cfg, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("user-service run");
        });
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{base}/ready")).send().await
                && r.status() == StatusCode::OK
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            base,
            http,
            config,
            db,
            stop: Some(stop),
        }
    }

    fn keys(&self) -> JwtKeys {
        JwtKeys::new(SECRET, "moviebook", Duration::from_secs(3600))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn register(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/api/v1/register",
            json!({"email": email, "password": password, "first_name": "Ada", "last_name": "Lovelace"}),
        )
        .await
    }

    /// Registers and logs in; answers (user id, token).
    async fn user(&self, email: &str) -> (String, String) {
        let (s, body) = self.register(email, "correct horse battery").await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        let (s, body) = self
            .post(
                "/api/v1/login",
                json!({"email": email, "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        (
            body["user"]["id"].as_str().unwrap().to_owned(),
            body["token"].as_str().unwrap().to_owned(),
        )
    }

    async fn cleanup(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.db.drop().await;
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn register_login_and_read_the_profile() {
    let app = TestApp::spawn().await;
    let (s, body) = app
        .post(
            "/api/v1/register",
            json!({"email": "  Ada@Example.COM ", "password": "correct horse battery",
                   "first_name": "Ada", "last_name": "Lovelace", "phone": "+44 20 7946 0958"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["message"], "User created successfully");
    let user = &body["user"];
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["first_name"], "Ada");
    assert_eq!(user["phone"], "+44 20 7946 0958");
    assert!(user["created_at"].is_string());
    let id = user["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    assert!(!body.to_string().contains("argon2"), "hash leaked: {body}");

    // The stored hash is argon2id with the configured parameters.
    let stored = app
        .db
        .collection::<mongodb::bson::Document>("users")
        .find_one(doc! {"_id": &id})
        .await
        .unwrap()
        .unwrap();
    let hash = stored.get_str("password_hash").unwrap();
    assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");

    let (s, body) = app
        .post(
            "/api/v1/login",
            json!({"email": "ADA@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"], id.as_str());
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert!(!body.to_string().contains("argon2"));
    let token = body["token"].as_str().unwrap().to_owned();

    // The token verifies with the shared crate and carries the contract's claims.
    let claims = app.keys().verify(&token).expect("token verifies");
    assert_eq!(claims.sub, id);
    assert_eq!(claims.iss, "moviebook");
    assert_eq!(claims.email.as_deref(), Some("ada@example.com"));
    assert_eq!(claims.exp - claims.iat, 3600);

    let (s, me) = app.get(&format!("/api/v1/users/{id}"), Some(&token)).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["id"], id.as_str());
    assert!(me.get("password_hash").is_none());
    let (s, profile) = app.get("/api/v1/profile", Some(&token)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(profile, me);

    let (s, updated) = app
        .put(
            "/api/v1/profile",
            &token,
            json!({"first_name": "Augusta", "phone": null}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(updated["first_name"], "Augusta");
    assert_eq!(updated["last_name"], "Lovelace");
    assert!(updated["phone"].is_null());
    let (s, updated) = app
        .put(
            &format!("/api/v1/users/{id}"),
            &token,
            json!({"last_name": "King"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(updated["last_name"], "King");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tampered_expired_and_foreign_tokens_are_rejected() {
    let app = TestApp::spawn().await;
    let (id, token) = app.user("tamper@example.com").await;
    let path = format!("/api/v1/users/{id}");

    // Flip the payload to claim admin: the signature no longer matches.
    let parts: Vec<&str> = token.split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["roles"] = json!(["admin"]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    assert!(app.keys().verify(&forged).is_err());
    let (s, body) = app.get(&path, Some(&forged)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "TOKEN_INVALID_SIGNATURE");

    // A flipped signature character.
    let mut bad_sig = token.clone();
    let last = bad_sig.pop().unwrap();
    bad_sig.push(if last == 'A' { 'B' } else { 'A' });
    let (s, _) = app.get(&path, Some(&bad_sig)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let now = chrono::Utc::now().timestamp();
    let expired = app
        .keys()
        .sign(&Claims {
            sub: id.clone(),
            iss: "moviebook".into(),
            exp: now - 600,
            iat: now - 4000,
            email: None,
            roles: vec![],
        })
        .unwrap();
    let (s, body) = app.get(&path, Some(&expired)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "TOKEN_EXPIRED");

    let foreign = JwtKeys::new(
        "some-other-secret-some-other-secret!!",
        "moviebook",
        Duration::from_secs(60),
    )
    .issue(&id, None, &[])
    .unwrap();
    let (s, _) = app.get(&path, Some(&foreign)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (s, body) = app.get(&path, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "UNAUTHENTICATED");
    let (s, _) = app.get(&path, Some("not-a-jwt")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_read_only_themselves_unless_admin_or_service() {
    let app = TestApp::spawn().await;
    let (alice, alice_token) = app.user("alice@example.com").await;
    let (bob, _) = app.user("bob@example.com").await;

    let (s, body) = app
        .get(&format!("/api/v1/users/{bob}"), Some(&alice_token))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(code(&body), "FORBIDDEN");
    let (s, body) = app
        .put(
            &format!("/api/v1/users/{bob}"),
            &alice_token,
            json!({"first_name": "Mallory"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");

    let admin = app
        .keys()
        .issue("some-admin", None, &["admin".into()])
        .unwrap();
    let (s, body) = app.get(&format!("/api/v1/users/{bob}"), Some(&admin)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["email"], "bob@example.com");
    let (s, body) = app
        .put(
            &format!("/api/v1/users/{bob}"),
            &admin,
            json!({"first_name": "Robert"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["first_name"], "Robert");

    // Service identities read nobody's profile: booking forwards the customer's own token.
    for name in ["booking-service", "notification-service"] {
        let service = app.keys().issue_service_token(name).unwrap();
        let (s, body) = app
            .get(&format!("/api/v1/users/{alice}"), Some(&service))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{name}: {body}");
    }
    let service = app.keys().issue_service_token("booking-service").unwrap();
    let (s, _) = app
        .put(
            &format!("/api/v1/users/{alice}"),
            &service,
            json!({"first_name": "X"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let unknown = uuid::Uuid::new_v4();
    let (s, body) = app
        .get(&format!("/api/v1/users/{unknown}"), Some(&admin))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "USER_NOT_FOUND");
    let (s, body) = app.get("/api/v1/users/not-a-uuid", Some(&admin)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "INVALID_USER_ID");

    // An admin granted through the CLI path gets the role in their token.
    user_service::grant_admin(&app.config, " ALICE@example.com")
        .await
        .unwrap();
    let (s, body) = app
        .post(
            "/api/v1/login",
            json!({"email": "alice@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let claims = app.keys().verify(body["token"].as_str().unwrap()).unwrap();
    assert!(claims.is_admin());
    assert!(
        user_service::grant_admin(&app.config, "nobody@example.com")
            .await
            .is_err()
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_password_and_unknown_email_get_the_same_401() {
    let app = TestApp::spawn().await;
    app.user("carol@example.com").await;
    let (s1, wrong) = app
        .post(
            "/api/v1/login",
            json!({"email": "carol@example.com", "password": "not the password"}),
        )
        .await;
    let (s2, unknown) = app
        .post(
            "/api/v1/login",
            json!({"email": "nobody@example.com", "password": "not the password"}),
        )
        .await;
    assert_eq!(s1, StatusCode::UNAUTHORIZED);
    assert_eq!(s2, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&wrong), "INVALID_CREDENTIALS");
    assert_eq!(wrong, unknown, "the two failures must be indistinguishable");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_4xx_with_a_code() {
    let app = TestApp::spawn().await;
    let (s, body) = app.register("dave@example.com", "short").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&body), "WEAK_PASSWORD");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at least 8")
    );
    let (s, body) = app.register("not-an-email", "correct horse battery").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&body), "INVALID_EMAIL");
    let (s, body) = app
        .post(
            "/api/v1/register",
            json!({"email": "e@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "INVALID_BODY");
    let r = app
        .http
        .post(format!("{}/api/v1/register", app.base))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(code(&body), "MALFORMED_JSON");
    let r = app
        .http
        .post(format!("{}/api/v1/login", app.base))
        .header("content-type", "application/json")
        .body(vec![b' '; 200 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The server drops the connection without reading the rest, so it must say so; otherwise the
    // client's pool reuses the dead socket and the next request fails (IncompleteMessage).
    assert_eq!(
        r.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );

    // Password change: the current password is required, then the new one works.
    let (id, token) = app.user("erin@example.com").await;
    let (s, body) = app
        .put(
            "/api/v1/profile",
            &token,
            json!({"password": "a brand new secret"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&body), "WRONG_CURRENT_PASSWORD");
    let (s, body) = app
        .put(
            &format!("/api/v1/users/{id}"),
            &token,
            json!({"password": "a brand new secret", "current_password": "correct horse battery"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = app
        .post(
            "/api/v1/login",
            json!({"email": "erin@example.com", "password": "a brand new secret"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = app.put("/api/v1/profile", &token, json!({})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&body), "NOTHING_TO_UPDATE");
    let (s, body) = app.get("/api/v1/nowhere", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "NOT_FOUND");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_registrations_of_one_email_give_one_user() {
    let app = TestApp::spawn().await;
    let variants = ["race@example.com", "RACE@example.com", " race@Example.com "];
    let results = futures::future::join_all((0..20).map(|i| {
        let app = &app;
        async move {
            app.register(variants[i % variants.len()], "correct horse battery")
                .await
        }
    }))
    .await;
    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let taken = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && code(b) == "EMAIL_TAKEN")
        .count();
    assert_eq!(created, 1, "{results:?}");
    assert_eq!(taken, 19, "{results:?}");
    let count = app
        .db
        .collection::<mongodb::bson::Document>("users")
        .count_documents(doc! {"email": "race@example.com"})
        .await
        .unwrap();
    assert_eq!(count, 1);
    // And afterwards too.
    let (s, body) = app
        .register("Race@Example.com", "correct horse battery")
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(code(&body), "EMAIL_TAKEN");
    app.cleanup().await;
}
