//! The live seat map over a real WebSocket (`/graphql/ws`, graphql-transport-ws) against the
//! real services: the first message is the whole map, a hold and its release made over HTTP
//! reach the subscriber through RabbitMQ, the connection, subscription and rate limits hold,
//! and the socket executes nothing but the public subscription.
//! (Two replicas seeing each other's changes: the browser test, web/test/e2e.)

mod common;

use std::time::{Duration, Instant};

use common::{Options, Stack};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{
    WebSocketStream, client_async,
    tungstenite::{self, client::IntoClientRequest, http::HeaderValue},
};

type Socket = WebSocketStream<tokio::net::TcpStream>;

const SEATS: &str = "subscription($id: ID!) { seatsChanged(showtimeId: $id) { showtimeId seats { seatNumber status } } }";

/// Opens `/graphql/ws` next to the stack's `/graphql`; `Err` carries the HTTP status of a refusal.
async fn open(graphql: &str) -> Result<Socket, u16> {
    let url = format!("{}/ws", graphql.replacen("http://", "ws://", 1));
    let mut req = url.as_str().into_client_request().expect("ws request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let host = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("host")
        .to_owned();
    let tcp = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    match client_async(req, tcp).await {
        Ok((mut ws, resp)) => {
            assert_eq!(
                resp.headers()["sec-websocket-protocol"],
                "graphql-transport-ws"
            );
            send(&mut ws, json!({"type": "connection_init", "payload": {}})).await;
            let ack = recv(&mut ws).await;
            assert_eq!(ack["type"], "connection_ack", "{ack}");
            Ok(ws)
        }
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("websocket handshake: {e}"),
    }
}

async fn send(ws: &mut Socket, v: Value) {
    ws.send(tungstenite::Message::Text(v.to_string().into()))
        .await
        .expect("ws send");
}

/// The next protocol message (pings answered, other frames skipped), within 10 s.
async fn recv(ws: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a websocket message within 10 s")
            .expect("the socket stays open")
            .expect("a readable frame");
        if let tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("json message");
            if v["type"] == "ping" {
                send(ws, json!({"type": "pong"})).await;
                continue;
            }
            return v;
        }
    }
}

async fn subscribe(ws: &mut Socket, id: &str, showtime: &str) {
    send(
        ws,
        json!({"id": id, "type": "subscribe", "payload": {"query": SEATS, "variables": {"id": showtime}}}),
    )
    .await;
}

/// Messages of subscription `id` until `pred` holds for one; returns it.
async fn until(ws: &mut Socket, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no matching message within 10 s");
        let m = recv(ws).await;
        if m["id"] == id {
            assert!(
                m["type"] == "next" && m["payload"]["errors"].is_null(),
                "subscription {id} failed: {m}"
            );
        }
        if m["id"] == id && m["type"] == "next" && pred(&m["payload"]["data"]["seatsChanged"]) {
            return m["payload"]["data"]["seatsChanged"].clone();
        }
    }
}

/// The first error of subscription `id` (async-graphql sends it as a `next` with `errors`).
async fn error_of(ws: &mut Socket, id: &str) -> Value {
    loop {
        let m = recv(ws).await;
        if m["id"] == id && m["type"] != "complete" {
            assert!(m["payload"]["errors"].is_array(), "an error for {id}: {m}");
            return m["payload"]["errors"][0].clone();
        }
    }
}

fn statuses(change: &Value) -> std::collections::HashMap<String, String> {
    change["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .map(|s| {
            (
                s["seatNumber"].as_str().unwrap_or_default().to_owned(),
                s["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holds_and_releases_reach_subscribers_and_the_limits_hold() {
    let stack = Stack::start(Options {
        notification: false,
        live: booking_service::live::LiveLimits {
            max_connections: 2,
            max_subscriptions_per_connection: 3,
            max_starts_per_minute: 10,
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let showtime = stack.first_showtime().await;
    let mut ws = open(&stack.graphql).await.expect("first connection");
    subscribe(&mut ws, "map", &showtime).await;

    // the first message is the whole map, as the seat map query shows it
    let first = until(&mut ws, "map", |_| true).await;
    assert_eq!(first["showtimeId"], showtime.as_str());
    let map = statuses(&first);
    assert_eq!(
        map,
        stack.seat_statuses(&showtime).await,
        "snapshot = seat map"
    );

    // a hold made over HTTP arrives as LOCKED
    let (user, token) = stack.user().await;
    let seats = stack.free_seats(&showtime, 2).await;
    let t0 = Instant::now();
    let (_, body) = stack
        .gql(
            Some(&token),
            "mutation($u: ID!, $s: ID!, $seats: [String!]!) { createBooking(userId: $u, showtimeId: $s, seatNumbers: $seats) { booking { id } } }",
            json!({"u": user, "s": showtime, "seats": seats}),
        )
        .await;
    let booking = body["data"]["createBooking"]["booking"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("createBooking: {body}"))
        .to_owned();
    let held = until(&mut ws, "map", |c| {
        let s = statuses(c);
        seats
            .iter()
            .all(|n| s.get(n).map(String::as_str) == Some("LOCKED"))
    })
    .await;
    eprintln!(
        "hold seen by the subscriber {} ms after createBooking was sent",
        t0.elapsed().as_millis()
    );
    assert!(statuses(&held).len() <= map.len());

    // its release arrives as AVAILABLE (and the cinema's word after it agrees)
    let (_, body) = stack
        .gql(
            Some(&token),
            "mutation($id: ID!) { cancelBooking(bookingId: $id) { booking { status } } }",
            json!({"id": booking}),
        )
        .await;
    assert_eq!(
        body["data"]["cancelBooking"]["booking"]["status"], "CANCELLED",
        "{body}"
    );
    until(&mut ws, "map", |c| {
        let s = statuses(c);
        seats
            .iter()
            .all(|n| s.get(n).map(String::as_str) == Some("AVAILABLE"))
    })
    .await;

    // subscriptions per connection: 3 allowed, the 4th is refused with a code
    // (each one's first map is awaited: the server starts pending subscriptions in no fixed
    // order, so three sent at once would not say which one is refused)
    subscribe(&mut ws, "two", &showtime).await;
    until(&mut ws, "two", |_| true).await;
    subscribe(&mut ws, "three", &showtime).await;
    until(&mut ws, "three", |_| true).await;
    subscribe(&mut ws, "four", &showtime).await;
    let refused = error_of(&mut ws, "four").await;
    assert_eq!(
        refused["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS",
        "{refused}"
    );
    // completing one frees its slot
    send(&mut ws, json!({"id": "two", "type": "complete"})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    subscribe(&mut ws, "five", &showtime).await;
    until(&mut ws, "five", |_| true).await;
    send(&mut ws, json!({"id": "five", "type": "complete"})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // an unknown showtime is an error with a code, not a silent stream
    subscribe(&mut ws, "unknown", &uuid::Uuid::new_v4().to_string()).await;
    let unknown = error_of(&mut ws, "unknown").await;
    assert_eq!(unknown["extensions"]["code"], "NOT_FOUND", "{unknown}");

    // the socket serves subscriptions only: queries and mutations belong to POST /graphql,
    // where the gateway's token check and rate limit apply (7th and 8th operation)
    send(
        &mut ws,
        json!({"id": "query", "type": "subscribe", "payload": {"query": "{ myBookings { id userId } }"}}),
    )
    .await;
    let query = error_of(&mut ws, "query").await;
    assert_eq!(query["extensions"]["code"], "BAD_REQUEST", "{query}");
    send(
        &mut ws,
        json!({"id": "mutation", "type": "subscribe", "payload": {"query": "mutation { cancelBooking(bookingId: \"x\") { success } }"}}),
    )
    .await;
    let mutation = error_of(&mut ws, "mutation").await;
    assert_eq!(mutation["extensions"]["code"], "BAD_REQUEST", "{mutation}");
    // every operation spends one of the connection's 10 starts per minute
    for n in 9..=10 {
        subscribe(&mut ws, &format!("burn{n}"), "not-a-uuid").await;
        let e = error_of(&mut ws, &format!("burn{n}")).await;
        assert_ne!(e["extensions"]["code"], "RATE_LIMITED", "start {n}: {e}");
    }
    subscribe(&mut ws, "eleventh", &showtime).await;
    let limited = error_of(&mut ws, "eleventh").await;
    assert_eq!(limited["extensions"]["code"], "RATE_LIMITED", "{limited}");

    // the messages can carry seat numbers and statuses only: nobody's booking id or email
    let (_, types) = stack
        .gql(
            None,
            "{ a: __type(name: \"SeatsChanged\") { fields { name } } b: __type(name: \"SeatState\") { fields { name } } }",
            json!({}),
        )
        .await;
    let names = |t: &Value| -> Vec<String> {
        let mut v: Vec<String> = t["fields"]
            .as_array()
            .unwrap_or_else(|| panic!("introspection: {types}"))
            .iter()
            .map(|f| f["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&types["data"]["a"]), ["seats", "showtimeId"]);
    assert_eq!(names(&types["data"]["b"]), ["seatNumber", "status"]);

    // connections per process: 2 allowed, the 3rd upgrade answers 503; a closed one frees its slot
    let second = open(&stack.graphql).await.expect("second connection");
    assert_eq!(open(&stack.graphql).await.err(), Some(503));
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match open(&stack.graphql).await {
            Ok(_) => break,
            Err(503) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => panic!("a freed connection slot is reused (got {s})"),
        }
    }
    drop(ws);
    stack.stop().await;
}
