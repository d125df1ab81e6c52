//! The real payment service over HTTP against the real MongoDB-compatible test server and
//! RabbitMQ. Needs MONGODB_URL and RABBITMQ_URL (`eval "$(scripts/stack.sh test env)"`); fails
//! loudly without them.

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions};
use mongodb::bson::{Document, doc};
use moviebook_common::auth::JwtKeys;
use payment_service::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "payment-service-test-secret-0123456789abcdef";

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run `eval \"$(scripts/stack.sh test env)\"` or `make test`")
    })
}

/// What the payment service really published.
async fn tap(routing_key: &str) -> moviebook_common::amqp::EventTap {
    moviebook_common::amqp::EventTap::bind(&env("RABBITMQ_URL"), routing_key)
        .await
        .expect("bind an event tap on RabbitMQ")
}

struct TestApp {
    base: String,
    http: reqwest::Client,
    db: mongodb::Database,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestApp {
    async fn spawn() -> Self {
        Self::spawn_with_failure_rate(0.0).await
    }

    async fn spawn_with_failure_rate(failure_rate: f64) -> Self {
        let config = Config {
            port: 0,
            mongodb_url: env("MONGODB_URL"),
            database: format!("moviebook_test_{}", uuid::Uuid::new_v4().simple()),
            rabbitmq_url: env("RABBITMQ_URL"),
            rabbitmq_topology: moviebook_common::amqp::Topology::Declare,
            jwt_secret: SECRET.into(),
            jwt_issuer: "moviebook".into(),
            failure_rate,
        };
        payment_service::migrate(&config).await.expect("migrate");
        let db = payment_service::connect(&config).await.expect("connect");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            payment_service::run(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("payment-service run");
        });
        let http = reqwest::Client::new();
        let mut ready = false;
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{base}/ready")).send().await
                && r.status() == StatusCode::OK
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            ready,
            "payment-service never became ready (MongoDB and RabbitMQ up?)"
        );
        Self {
            base,
            http,
            db,
            stop: Some(stop),
        }
    }

    fn keys() -> JwtKeys {
        JwtKeys::new(SECRET, "moviebook", Duration::from_secs(3600))
    }

    fn token(user: &str) -> String {
        Self::keys().issue(user, None, &[]).unwrap()
    }

    /// The booking service's own token: the only identity allowed to write.
    fn booking_service() -> String {
        Self::keys()
            .issue_service_token(moviebook_common::auth::BOOKING_SERVICE)
            .unwrap()
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn pay(&self, token: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            reqwest::Method::POST,
            "/payments",
            Some(token),
            None,
            Some(body),
        )
        .await
    }

    async fn refund(&self, token: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            reqwest::Method::POST,
            "/refunds",
            Some(token),
            None,
            Some(body),
        )
        .await
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, Some(token), None, None)
            .await
    }

    /// The refunds recorded for a transaction (inside its document).
    async fn refunds_of(&self, transaction_id: &str) -> usize {
        self.db
            .collection::<Document>("transactions")
            .find_one(doc! { "_id": transaction_id })
            .await
            .unwrap()
            .and_then(|t| t.get_array("refunds").ok().map(Vec::len))
            .unwrap_or(0)
    }

    async fn count(&self, coll: &str, filter: Document) -> u64 {
        self.db
            .collection::<Document>(coll)
            .count_documents(filter)
            .await
            .unwrap()
    }

    async fn cleanup(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Let the relay publish what it leased before the database goes away.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = self.db.drop().await;
    }
}

fn payment(booking: &str, user: &str, card: Option<&str>) -> Value {
    let mut body = json!({
        "booking_id": booking,
        "user_id": user,
        "amount": 25.5,
        "currency": "USD",
        "payment_method": "credit_card",
    });
    if let Some(c) = card {
        body["payment_details"] = json!({ "card_number": c, "cvv": "123" });
    }
    body
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

fn ids() -> (String, String) {
    (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pay_replay_and_read_back() {
    let app = TestApp::spawn().await;
    let (booking, user) = ids();
    let token = TestApp::token(&user);
    let svc = TestApp::booking_service();
    let (s, tx) = app
        .pay(&svc, payment(&booking, &user, Some("4111 1111 1111 1111")))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{tx}");
    assert_eq!(tx["status"], "SUCCESS");
    assert_eq!(tx["amount"], 25.5);
    assert_eq!(tx["currency"], "USD");
    assert_eq!(tx["booking_id"], booking.as_str());
    assert_eq!(tx["user_id"], user.as_str());
    assert_eq!(tx["payment_method"], "credit_card");
    assert_eq!(tx["card_last4"], "1111");
    assert_eq!(tx["refunded_amount"], 0.0);
    assert!(tx["created_at"].is_string() && tx["updated_at"].is_string());
    assert!(tx.get("failure_code").is_none());
    let id = tx["transaction_id"].as_str().unwrap().to_owned();

    // A retry (same body, key defaults to the booking id) replays with 200.
    let (s, again) = app
        .pay(&svc, payment(&booking, &user, Some("4111111111111111")))
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["transaction_id"], id.as_str());

    let (s, read) = app.get(&format!("/payments/{id}"), &token).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(read["transaction_id"], id.as_str());
    let log = read["log"].as_array().unwrap();
    let states: Vec<&str> = log.iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(states, ["PROCESSING", "SUCCESS"]);
    assert!(log.iter().all(|e| e["at"].is_string()));

    let (s, list) = app
        .get(&format!("/payments/booking/{booking}"), &token)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Neither the number nor the CVV is stored anywhere.
    for coll in ["transactions", "outbox"] {
        let docs: Vec<Document> = futures::TryStreamExt::try_collect(
            app.db
                .collection::<Document>(coll)
                .find(doc! {})
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        let text = format!("{docs:?}");
        assert!(
            !text.contains("4111111111111111"),
            "{coll}: card number stored"
        );
        assert!(!text.contains("\"123\""), "{coll}: cvv stored");
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_cards_decide_the_outcome() {
    let app = TestApp::spawn().await;
    let user = uuid::Uuid::new_v4().to_string();
    let token = TestApp::booking_service();
    let cases = [
        (Some("4242424242424242"), "SUCCESS", None),
        (None, "SUCCESS", None),
        (Some("5555555555554444"), "SUCCESS", None),
        (Some("4000000000000002"), "FAILED", Some("CARD_DECLINED")),
        (
            Some("4000000000009995"),
            "FAILED",
            Some("INSUFFICIENT_FUNDS"),
        ),
        (Some("4000000000000069"), "FAILED", Some("EXPIRED_CARD")),
        (Some("4000000000000119"), "FAILED", Some("PROCESSING_ERROR")),
    ];
    for (card, status, failure) in cases {
        let booking = uuid::Uuid::new_v4().to_string();
        let (s, tx) = app.pay(&token, payment(&booking, &user, card)).await;
        assert_eq!(s, StatusCode::CREATED, "{card:?}: {tx}");
        assert_eq!(tx["status"], status, "{card:?}");
        assert_eq!(tx["failure_code"].as_str(), failure, "{card:?}");
        if failure.is_some() {
            assert!(tx["failure_reason"].is_string());
        }
    }
    let (s, tx) = app.pay(&token, payment("b-default", &user, None)).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(tx["card_last4"], "4242");
    // payment_details as a JSON string (as the GraphQL API forwards it).
    let mut body = payment("b-string", &user, None);
    body["payment_details"] = json!("{\"card_number\":\"4000000000000002\"}");
    let (s, tx) = app.pay(&token, body).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(tx["failure_code"], "CARD_DECLINED");

    let (s, body) = app
        .pay(&token, payment("b-luhn", &user, Some("4111111111111112")))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&body), "INVALID_CARD");
    assert_eq!(
        app.count("transactions", doc! {"booking_id": "b-luhn"})
            .await,
        0
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_input_and_auth_errors() {
    let app = TestApp::spawn().await;
    let (booking, user) = ids();
    let token = TestApp::booking_service();
    let reader = TestApp::token(&user);
    let mut cases = Vec::new();
    for (field, value, expected) in [
        ("amount", json!(0), "INVALID_AMOUNT"),
        ("amount", json!(-5), "INVALID_AMOUNT"),
        ("amount", json!(100000.01), "INVALID_AMOUNT"),
        ("amount", json!(1.234), "INVALID_AMOUNT"),
        ("currency", json!("XYZ"), "INVALID_CURRENCY"),
        ("payment_method", json!("cash"), "INVALID_PAYMENT_METHOD"),
        ("payment_details", json!(42), "INVALID_PAYMENT_DETAILS"),
        ("booking_id", json!(""), "INVALID_ID"),
        ("amount", json!("12"), "INVALID_BODY"),
    ] {
        let mut body = payment(&booking, &user, None);
        body[field] = value;
        cases.push((body, expected));
    }
    for (body, expected) in cases {
        let (s, got) = app.pay(&token, body.clone()).await;
        assert!(s.is_client_error(), "{body}: {s}");
        assert_eq!(code(&got), expected, "{body}");
    }
    let r = app
        .http
        .post(format!("{}/payments", app.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"booking_id\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Auth: none, tampered, a user (even for their own booking), an admin, another service,
    // someone else's transaction.
    let (s, _) = app
        .send(
            reqwest::Method::POST,
            "/payments",
            None,
            None,
            Some(payment(&booking, &user, None)),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let mut tampered = token.clone();
    tampered.insert(tampered.len() - 3, 'x');
    let (s, _) = app.pay(&tampered, payment(&booking, &user, None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let mallory = TestApp::token("mallory");
    let admin = TestApp::keys()
        .issue(&user, None, &["admin".to_owned()])
        .unwrap();
    let notifier = TestApp::keys()
        .issue_service_token("notification-service")
        .unwrap();
    for who in [&mallory, &reader, &admin, &notifier] {
        let (s, body) = app.pay(who, payment(&booking, &user, None)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(code(&body), "FORBIDDEN");
        // Refused before the body is read: even garbage gets 403, not 4xx about the body.
        let (s, _) = app
            .send(
                reqwest::Method::POST,
                "/refunds",
                Some(who),
                None,
                Some(json!(1)),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        app.count("transactions", doc! {}).await,
        0,
        "nothing charged"
    );

    // The booking service pays; the user reads their own payment, nobody else does.
    let (s, tx) = app.pay(&token, payment(&booking, &user, None)).await;
    assert_eq!(s, StatusCode::CREATED, "{tx}");
    let id = tx["transaction_id"].as_str().unwrap();
    let (s, read) = app.get(&format!("/payments/{id}"), &reader).await;
    assert_eq!(s, StatusCode::OK, "{read}");
    let (s, _) = app.get(&format!("/payments/{id}"), &mallory).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, list) = app
        .get(&format!("/payments/booking/{booking}"), &mallory)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list, json!([]));
    let (s, list) = app
        .get(&format!("/payments/booking/{booking}"), &reader)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let (s, body) = app.get("/payments/does-not-exist", &reader).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "TRANSACTION_NOT_FOUND");
    let (s, body) = app.refund(&token, json!({"transaction_id": "nope"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "TRANSACTION_NOT_FOUND");
    // The owner cannot refund their own payment directly (that is cancelBooking's job).
    for who in [&mallory, &reader, &admin] {
        let (s, _) = app.refund(who, json!({"transaction_id": id})).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    assert_eq!(app.refunds_of(id).await, 0, "nothing refunded");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys() {
    let app = TestApp::spawn().await;
    let (booking, user) = ids();
    let token = TestApp::booking_service();
    let (s, declined) = app
        .pay(&token, payment(&booking, &user, Some("4000000000000002")))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(declined["status"], "FAILED");
    // Same (default) key, different card: refused, nothing charged.
    let (s, body) = app
        .pay(&token, payment(&booking, &user, Some("4111111111111111")))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(code(&body), "IDEMPOTENCY_KEY_REUSED");
    // A new attempt with its own key goes through.
    let (s, ok) = app
        .send(
            reqwest::Method::POST,
            "/payments",
            Some(&token),
            Some("attempt-2"),
            Some(payment(&booking, &user, Some("4111111111111111"))),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ok}");
    assert_eq!(ok["status"], "SUCCESS");
    let (s, replay) = app
        .send(
            reqwest::Method::POST,
            "/payments",
            Some(&token),
            Some("attempt-2"),
            Some(payment(&booking, &user, Some("4111111111111111"))),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(replay["transaction_id"], ok["transaction_id"]);
    let (_, list) = app
        .get(&format!("/payments/booking/{booking}"), &token)
        .await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        list[0]["transaction_id"], ok["transaction_id"],
        "newest first"
    );
    assert_eq!(list[1]["transaction_id"], declined["transaction_id"]);
    let (s, body) = app
        .send(
            reqwest::Method::POST,
            "/payments",
            Some(&token),
            Some(" "),
            Some(payment(&booking, &user, None)),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn fifty_concurrent_identical_payments_give_one_transaction() {
    let app = TestApp::spawn().await;
    let (booking, user) = ids();
    let token = TestApp::booking_service();
    let mut tap = tap("payment.*").await;
    let results = futures::future::join_all((0..50).map(|_| {
        let (app, token) = (&app, &token);
        let body = payment(&booking, &user, Some("4111111111111111"));
        async move { app.pay(token, body).await }
    }))
    .await;
    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let replayed = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(created, 1, "{results:?}");
    assert_eq!(replayed, 49, "{results:?}");
    let first = &results[0].1["transaction_id"];
    assert!(results.iter().all(|(_, b)| &b["transaction_id"] == first));
    assert_eq!(
        app.count("transactions", doc! {"booking_id": &booking})
            .await,
        1
    );
    assert_eq!(
        tap.types_where("booking_id", &booking, Duration::from_secs(2))
            .await,
        ["payment.success"],
        "one event for one payment"
    );
    tap.close().await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn refunds_are_idempotent_and_bounded() {
    let app = TestApp::spawn().await;
    let (booking, user) = ids();
    let token = TestApp::booking_service();
    let mut tap = tap("payment.*").await;
    let (_, tx) = app.pay(&token, payment(&booking, &user, None)).await;
    let id = tx["transaction_id"].as_str().unwrap().to_owned();

    let (s, first) = app
        .refund(
            &token,
            json!({"transaction_id": id, "reason": "changed my mind"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(first["status"], "REFUNDED");
    assert_eq!(first["amount"], 25.5);
    assert_eq!(first["transaction_id"], id.as_str());
    assert!(first["created_at"].is_string());
    let (s, second) = app.refund(&token, json!({"transaction_id": id})).await;
    assert_eq!(s, StatusCode::OK, "{second}");
    assert_eq!(second["refund_id"], first["refund_id"]);
    assert_eq!(app.refunds_of(&id).await, 1);
    assert_eq!(
        tap.types_where("booking_id", &booking, Duration::from_secs(2))
            .await,
        ["payment.success", "payment.refund"],
        "the payment and its one refund were published"
    );
    tap.close().await;
    let (_, read) = app.get(&format!("/payments/{id}"), &token).await;
    assert_eq!(read["refunded_amount"], 25.5);
    assert_eq!(read["refund_status"], "REFUNDED");
    assert_eq!(read["status"], "SUCCESS");
    assert_eq!(
        read["log"].as_array().unwrap().last().unwrap()["status"],
        "REFUNDED"
    );
    let (s, body) = app
        .refund(&token, json!({"transaction_id": id, "amount": 1}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(code(&body), "NOT_REFUNDABLE");

    // A failed payment is not refundable.
    let (_, failed) = app
        .pay(&token, payment("b-failed", &user, Some("4000000000000002")))
        .await;
    let (s, body) = app
        .refund(&token, json!({"transaction_id": failed["transaction_id"]}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(code(&body), "NOT_REFUNDABLE");

    // Partial refunds, never past the amount paid.
    let (_, tx) = app.pay(&token, payment("b-partial", &user, None)).await;
    let pid = tx["transaction_id"].as_str().unwrap().to_owned();
    let (s, part) = app
        .refund(&token, json!({"transaction_id": pid, "amount": 10}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{part}");
    let (s, body) = app
        .refund(&token, json!({"transaction_id": pid, "amount": 20}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    let (s, rest) = app.refund(&token, json!({"transaction_id": pid})).await;
    assert_eq!(s, StatusCode::CREATED, "{rest}");
    assert_eq!(rest["amount"], 15.5);
    let (_, read) = app.get(&format!("/payments/{pid}"), &token).await;
    assert_eq!(read["refunded_amount"], 25.5);

    // Ten concurrent full refunds: one refund.
    let (_, tx) = app.pay(&token, payment("b-race", &user, None)).await;
    let rid = tx["transaction_id"].as_str().unwrap().to_owned();
    let results = futures::future::join_all((0..10).map(|_| {
        let (app, token, rid) = (&app, &token, &rid);
        async move { app.refund(token, json!({"transaction_id": rid})).await }
    }))
    .await;
    assert_eq!(
        results
            .iter()
            .filter(|(s, _)| *s == StatusCode::CREATED)
            .count(),
        1,
        "{results:?}"
    );
    assert!(results.iter().all(|(s, _)| s.is_success()), "{results:?}");
    assert_eq!(app.refunds_of(&rid).await, 1);
    app.cleanup().await;
}

/// What the version before embedded refunds left behind: a refund in the `refunds` collection,
/// its amount in the transaction. Its key still replays, and a refund of the rest is bounded
/// by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refunds_recorded_by_the_previous_version_still_count() {
    let app = TestApp::spawn().await;
    let (booking, user) = ids();
    let token = TestApp::booking_service();
    let (_, tx) = app.pay(&token, payment(&booking, &user, None)).await;
    let id = tx["transaction_id"].as_str().unwrap().to_owned();
    let now = mongodb::bson::DateTime::now();
    app.db
        .collection::<Document>("refunds")
        .insert_one(doc! {
            "_id": "legacy-refund", "transaction_id": &id, "idempotency_key": "amount:1000",
            "fingerprint": "amount:1000", "booking_id": &booking, "user_id": &user,
            "amount_cents": 1000_i64, "currency": "USD", "status": "REFUNDED", "created_at": now,
        })
        .await
        .unwrap();
    app.db
        .collection::<Document>("transactions")
        .update_one(
            doc! { "_id": &id },
            doc! { "$set": { "refunded_cents": 1000_i64 } },
        )
        .await
        .unwrap();

    let (s, replay) = app
        .refund(&token, json!({"transaction_id": id, "amount": 10}))
        .await;
    assert_eq!(s, StatusCode::OK, "{replay}");
    assert_eq!(replay["refund_id"], "legacy-refund");
    let (s, rest) = app.refund(&token, json!({"transaction_id": id})).await;
    assert_eq!(s, StatusCode::CREATED, "{rest}");
    assert_eq!(rest["amount"], 15.5, "the rest, not the whole amount");
    let (_, read) = app.get(&format!("/payments/{id}"), &token).await;
    assert_eq!(read["refunded_amount"], 25.5);
    assert_eq!(read["refund_status"], "REFUNDED");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_rate_fails_approved_payments() {
    let app = TestApp::spawn_with_failure_rate(1.0).await;
    let (booking, user) = ids();
    let (s, tx) = app
        .pay(&TestApp::booking_service(), payment(&booking, &user, None))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(tx["status"], "FAILED");
    assert_eq!(tx["failure_code"], "PROCESSING_ERROR");
    app.cleanup().await;
}

/// Reads messages from `queue` until `want` events about `booking_ids` arrived (or a timeout).
async fn collect_events(
    channel: &lapin::Channel,
    queue: &str,
    booking_ids: &[&str],
    want: usize,
) -> Vec<(String, Value)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < want && tokio::time::Instant::now() < deadline {
        match channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            Some(msg) => {
                let d = msg.delivery;
                d.acker.ack(BasicAckOptions::default()).await.unwrap();
                let v: Value = serde_json::from_slice(&d.data).unwrap();
                let booking = v["data"]["booking_id"].as_str().unwrap_or_default();
                if booking_ids.contains(&booking) {
                    got.push((d.routing_key.to_string(), v));
                }
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_arrive_on_a_bound_queue_with_the_design_envelope() {
    let conn = moviebook_common::amqp::connect(&env("RABBITMQ_URL"), "payment-test")
        .await
        .expect("RabbitMQ at RABBITMQ_URL");
    let channel = conn.create_channel().await.unwrap();
    let queue = format!("test.payment.{}", uuid::Uuid::new_v4().simple());
    moviebook_common::amqp::declare_consumer_queue(
        &channel,
        moviebook_common::amqp::Topology::Declare,
        &queue,
        &["payment.*"],
    )
    .await
    .unwrap();

    let app = TestApp::spawn().await;
    let user = uuid::Uuid::new_v4().to_string();
    let token = TestApp::booking_service();
    let (ok_booking, bad_booking) = ids();
    let (_, ok) = app
        .pay(
            &token,
            payment(&ok_booking, &user, Some("4111111111111111")),
        )
        .await;
    let (_, bad) = app
        .pay(
            &token,
            payment(&bad_booking, &user, Some("4000000000009995")),
        )
        .await;
    let (s, refund) = app
        .refund(
            &token,
            json!({"transaction_id": ok["transaction_id"], "reason": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let events = collect_events(&channel, &queue, &[&ok_booking, &bad_booking], 3).await;
    assert_eq!(events.len(), 3, "{events:?}");
    for (key, e) in &events {
        assert_eq!(
            e["event_type"].as_str(),
            Some(key.as_str()),
            "routing key = event_type"
        );
        assert!(uuid::Uuid::parse_str(e["event_id"].as_str().unwrap()).is_ok());
        assert!(chrono::DateTime::parse_from_rfc3339(e["occurred_at"].as_str().unwrap()).is_ok());
        assert_eq!(e["source"], "payment-service");
        assert!(!e.to_string().contains("4111111111111111"));
    }
    let find = |t: &str| {
        events
            .iter()
            .find(|(k, _)| k == t)
            .map(|(_, e)| e["data"].clone())
            .unwrap_or_else(|| panic!("no {t} event in {events:?}"))
    };
    let success = find("payment.success");
    assert_eq!(success["transaction_id"], ok["transaction_id"]);
    assert_eq!(success["user_id"], user.as_str());
    assert_eq!(success["amount"], 25.5);
    assert_eq!(success["currency"], "USD");
    assert_eq!(success["payment_method"], "credit_card");
    assert_eq!(success["status"], "SUCCESS");
    let failed = find("payment.failed");
    assert_eq!(failed["transaction_id"], bad["transaction_id"]);
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["failure_code"], "INSUFFICIENT_FUNDS");
    assert!(failed["failure_reason"].is_string());
    let refunded = find("payment.refund");
    assert_eq!(refunded["refund_id"], refund["refund_id"]);
    assert_eq!(refunded["transaction_id"], ok["transaction_id"]);
    assert_eq!(refunded["booking_id"], ok_booking.as_str());
    assert_eq!(refunded["amount"], 25.5);
    assert_eq!(refunded["reason"], "test");

    app.cleanup().await;
    let _ = channel
        .queue_delete(queue.clone().into(), QueueDeleteOptions::default())
        .await;
    let _ = channel
        .queue_delete(format!("{queue}.dlq").into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
}
