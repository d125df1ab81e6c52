//! Hostile input: malformed GraphQL, wrong types, huge seat lists, forged / expired / other
//! users' tokens, unknown ids. Every answer is a 4xx or a GraphQL error with a code; never a 5xx.

mod common;

use std::time::Duration;

use common::{CREATE, Options, PAY, Stack, code};
use moviebook_common::auth::{Claims, JwtKeys};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_inputs_get_codes_and_never_a_5xx() {
    let stack = Stack::start(Options {
        notification: false,
        ..Options::default()
    })
    .await;
    let (user_id, token) = stack.user().await;
    let (other_id, _) = stack.user().await;
    let showtime = stack.first_showtime().await;
    let unknown = uuid::Uuid::new_v4().to_string();

    // Transport-level garbage.
    let raw = |body: Vec<u8>| {
        stack
            .http
            .post(&stack.graphql)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = raw(b"not json".to_vec()).await.expect("send");
    assert_eq!(r.status().as_u16(), 400);
    let v: serde_json::Value = r.json().await.expect("json error body");
    assert_eq!(code(&v), "BAD_REQUEST");
    let r = raw(vec![b' '; 200 * 1024]).await.expect("send");
    assert_eq!(r.status().as_u16(), 413);
    let r = raw(b"[1,2,3]".to_vec()).await.expect("send");
    assert_eq!(r.status().as_u16(), 400);
    let r = stack
        .http
        .get(format!(
            "{}/nope",
            stack.graphql.trim_end_matches("/graphql")
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 404);

    // Forged and expired tokens.
    let now = chrono::Utc::now().timestamp();
    let forged = JwtKeys::new(
        "someone-else-secret-0123456789abcdef",
        "moviebook",
        Duration::from_secs(60),
    )
    .issue(&user_id, None, &[])
    .expect("sign");
    let expired = JwtKeys::new(
        moviebook_common::config::defaults::JWT_SECRET,
        "moviebook",
        Duration::from_secs(60),
    )
    .sign(&Claims {
        sub: user_id.clone(),
        iss: "moviebook".into(),
        exp: now - 3600,
        iat: now - 7200,
        email: None,
        roles: vec![],
    })
    .expect("sign");
    // What a holder of the secret could make when it was shared: a user's claims, HS256,
    // with the user audience. Every token is ES256 now, user tokens from the user service's
    // key alone.
    let secret_signed_user = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user_id, "iss": "moviebook", "aud": "moviebook",
                "exp": now + 600, "iat": now}),
        &jsonwebtoken::EncodingKey::from_secret(
            moviebook_common::config::defaults::JWT_SECRET.as_bytes(),
        ),
    )
    .expect("sign");
    // A genuine service token: it is no user, and acts for none on these calls.
    let service = JwtKeys::new(
        moviebook_common::config::defaults::JWT_SECRET,
        "moviebook",
        Duration::from_secs(60),
    )
    .issue_service_token("notification-service")
    .expect("sign");
    let seats = json!(["A1"]);
    let create = json!({"u": user_id, "s": showtime, "seats": seats});

    let deep = format!(
        "{{ movies {{ {} id {} }} }}",
        "showtimes { movie { ".repeat(6),
        "} } ".repeat(6)
    );
    let huge: Vec<String> = (1..=1000).map(|i| format!("A{i}")).collect();
    let cases: Vec<(&str, Option<&str>, String, serde_json::Value, &str)> = vec![
        (
            "syntax error",
            None,
            "{ movies { ".into(),
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "unknown field",
            None,
            "{ movies { nope } }".into(),
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "wrong variable type",
            Some(&token),
            CREATE.into(),
            json!({"u": 1, "s": true, "seats": "A1"}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        ("too deep", None, deep, json!({}), "QUERY_TOO_COMPLEX"),
        (
            "no token",
            None,
            CREATE.into(),
            create.clone(),
            "UNAUTHENTICATED",
        ),
        (
            "forged token",
            Some(&forged),
            CREATE.into(),
            create.clone(),
            "UNAUTHENTICATED",
        ),
        (
            "expired token",
            Some(&expired),
            CREATE.into(),
            create.clone(),
            "UNAUTHENTICATED",
        ),
        (
            "user claims signed with the service secret",
            Some(&secret_signed_user),
            CREATE.into(),
            create.clone(),
            "UNAUTHENTICATED",
        ),
        (
            "service token booking for a user",
            Some(&service),
            CREATE.into(),
            create.clone(),
            "FORBIDDEN",
        ),
        (
            "garbage token",
            Some("abc.def"),
            CREATE.into(),
            create.clone(),
            "UNAUTHENTICATED",
        ),
        (
            "booking as someone else",
            Some(&token),
            CREATE.into(),
            json!({"u": other_id, "s": showtime, "seats": seats}),
            "FORBIDDEN",
        ),
        (
            "huge seat list",
            Some(&token),
            CREATE.into(),
            json!({"u": user_id, "s": showtime, "seats": huge}),
            "BAD_USER_INPUT",
        ),
        (
            "empty seat list",
            Some(&token),
            CREATE.into(),
            json!({"u": user_id, "s": showtime, "seats": []}),
            "BAD_USER_INPUT",
        ),
        (
            "duplicate seats",
            Some(&token),
            CREATE.into(),
            json!({"u": user_id, "s": showtime, "seats": ["A1", "a1"]}),
            "BAD_USER_INPUT",
        ),
        (
            "bad seat number",
            Some(&token),
            CREATE.into(),
            json!({"u": user_id, "s": showtime, "seats": ["'; DROP TABLE seats; --"]}),
            "BAD_USER_INPUT",
        ),
        (
            "non-uuid showtime",
            Some(&token),
            CREATE.into(),
            json!({"u": user_id, "s": "../../etc", "seats": seats}),
            "BAD_USER_INPUT",
        ),
        (
            "unknown showtime",
            Some(&token),
            CREATE.into(),
            json!({"u": user_id, "s": unknown, "seats": seats}),
            "NOT_FOUND",
        ),
        (
            "unknown booking",
            Some(&token),
            PAY.into(),
            json!({"b": unknown, "m": "credit_card"}),
            "NOT_FOUND",
        ),
        (
            "non-uuid booking",
            Some(&token),
            PAY.into(),
            json!({"b": "{$ne: null}", "m": "credit_card"}),
            "BAD_USER_INPUT",
        ),
        (
            "bad payment method",
            Some(&token),
            PAY.into(),
            json!({"b": unknown, "m": "bitcoin"}),
            "BAD_USER_INPUT",
        ),
        (
            "details not json",
            Some(&token),
            PAY.into(),
            json!({"b": unknown, "m": "credit_card", "d": "{oops"}),
            "BAD_USER_INPUT",
        ),
        (
            "other user's bookings",
            Some(&token),
            "query($u: ID!) { getUserBookings(userId: $u) { id } }".into(),
            json!({"u": other_id}),
            "FORBIDDEN",
        ),
        (
            "my bookings anonymously",
            None,
            "{ myBookings { id } }".into(),
            json!({}),
            "UNAUTHENTICATED",
        ),
        (
            "movies limit out of range",
            None,
            "{ movies(limit: 100000) { id } }".into(),
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "negative offset",
            None,
            "{ movies(offset: -1) { id } }".into(),
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "unknown showtime read",
            None,
            "query($id: ID!) { showtime(id: $id) { id } }".into(),
            json!({"id": "zzz"}),
            "BAD_USER_INPUT",
        ),
    ];
    for (name, tok, query, vars, expected) in cases {
        let (status, body) = stack.gql(tok, &query, vars).await;
        assert!(status < 500, "{name}: HTTP {status} {body}");
        assert_eq!(code(&body), expected, "{name}: {body}");
    }
    // A showtime id that does not exist reads as null, not as an error.
    let (status, body) = stack
        .gql(
            None,
            "query($id: ID!) { showtime(id: $id) { id } }",
            json!({"id": unknown}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(body["data"]["showtime"].is_null(), "{body}");
    stack.stop().await;
}

/// Issue 13: an anonymous query over lists cannot fan out into one cinema call per showtime.
/// The complexity limit lets `movies(limit: 3) { showtimes { seats } }` through (its lists'
/// lengths are unknown before they are fetched); the seat-map budget stops it at 4 calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_cannot_fan_out_into_seat_maps() {
    let stack = Stack::start(Options {
        notification: false,
        ..Options::default()
    })
    .await;
    let (status, body) = stack
        .gql(
            None,
            "{ movies(limit: 3) { showtimes { id seats { seatNumber status } } } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let showtimes: usize = body["data"]["movies"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["showtimes"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    assert!(
        showtimes > 4,
        "the sample catalogue gives more showtimes than the budget: {showtimes}"
    );
    let errors = body["errors"].as_array().cloned().unwrap_or_default();
    let exceeded = errors
        .iter()
        .filter(|e| e["extensions"]["code"] == "SEAT_MAPS_EXCEEDED")
        .count();
    assert_eq!(exceeded, showtimes - 4, "{errors:?}");
    assert_eq!(exceeded, errors.len(), "no other error: {errors:?}");

    // Four seat maps in one request are fine (a storefront showing a few screens).
    let ids: Vec<String> = stack.showtimes().await.into_iter().take(4).collect();
    let query = format!(
        "{{ {} }}",
        ids.iter()
            .enumerate()
            .map(|(i, id)| format!("s{i}: showtime(id: \"{id}\") {{ seats {{ seatNumber }} }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (status, body) = stack.gql(None, &query, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    for i in 0..4 {
        assert!(
            body["data"][format!("s{i}")]["seats"]
                .as_array()
                .is_some_and(|s| !s.is_empty()),
            "{body}"
        );
    }
    stack.stop().await;
}

/// One user cannot hammer the booking mutations: past `USER_MUTATIONS_PER_MINUTE` (3 here)
/// createBooking, processPayment and cancelBooking answer RATE_LIMITED with `retryAfter`,
/// before any seat is held or any money moves; another user is not affected.
#[tokio::test]
async fn a_user_is_limited_per_minute_and_others_are_not() {
    let stack = Stack::start(Options {
        notification: false,
        user_mutations_per_minute: 3,
        ..Options::default()
    })
    .await;
    let (user_id, token) = stack.user().await;
    let b1 = stack.book(&user_id, &token, 1).await;
    let _b2 = stack.book(&user_id, &token, 1).await;
    let (_, body) = stack
        .gql(
            Some(&token),
            "mutation($id: ID!) { cancelBooking(bookingId: $id) { success } }",
            json!({"id": b1.id}),
        )
        .await;
    assert_eq!(body["data"]["cancelBooking"]["success"], true, "{body}");

    // the 4th mutation of the minute: refused with a code and a wait, and nothing was held
    let showtime = stack.first_showtime().await;
    let seats = stack.free_seats(&showtime, 1).await;
    let (status, body) = stack
        .gql(
            Some(&token),
            "mutation($u: ID!, $s: ID!, $seats: [String!]!) { createBooking(userId: $u, showtimeId: $s, seatNumbers: $seats) { success } }",
            json!({"u": user_id, "s": showtime, "seats": seats}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let err = &body["errors"][0]["extensions"];
    assert_eq!(err["code"], "RATE_LIMITED", "{body}");
    let wait = err["retryAfter"].as_u64().unwrap_or(0);
    assert!((1..=21).contains(&wait), "retryAfter {wait}: {body}");
    assert_eq!(
        stack
            .seat_statuses(&showtime)
            .await
            .get(&seats[0])
            .map(String::as_str),
        Some("AVAILABLE"),
        "a refused mutation holds nothing"
    );

    // another user still books
    let (other_id, other_token) = stack.user().await;
    let _ = stack.book(&other_id, &other_token, 1).await;
    stack.stop().await;
}
