//! `moviebook-load`: a load generator (goose) for any MovieBook GraphQL endpoint — the local
//! booking service or Kong in a cluster. Each simulated user registers and logs in once, then
//! loops over a realistic mix: browse the catalogue, open a showtime's seat map, book one or
//! two free seats, pay (4 in 5) and cancel (refunds a paid booking, releases a held one), so
//! the seats return to sale and the test can run for as long as asked.
//!
//! ```text
//! moviebook-load --host http://127.0.0.1:8010 --users 64 --increase-rate 64 --run-time 30s
//! USER_SERVICE_URL=http://gateway:30080 moviebook-load --host http://gateway:30080 ...
//! ```
//! Goose prints requests/s and latency percentiles per request (`createBooking`,
//! `processPayment`, ...). Expected GraphQL business errors (SEATS_UNAVAILABLE when two users
//! race for a seat) count as successes; any other error counts as a failure.

use goose::prelude::*;
use rand::{Rng, seq::IndexedRandom};
use serde_json::{Value, json};

const MOVIES: &str = "{ movies { id title genre duration showtimes { id startTime cinema { name location } availableSeats basePrice } } }";
const SEAT_MAP: &str = "query($id: ID!) { showtime(id: $id) { id seats { seatNumber status } } }";
const CREATE: &str = "mutation($u: ID!, $s: ID!, $seats: [String!]!) { createBooking(userId: $u, showtimeId: $s, seatNumbers: $seats) { success lockId booking { id status totalAmount } } }";
const PAY: &str = "mutation($b: ID!) { processPayment(bookingId: $b, paymentMethod: \"credit_card\", paymentDetails: \"{\\\"card_number\\\":\\\"4111111111111111\\\"}\") { success booking { status confirmedAt } } }";
const CANCEL: &str =
    "mutation($b: ID!) { cancelBooking(bookingId: $b) { success booking { status } } }";

/// Business answers that are a normal part of the mix, not failures.
const EXPECTED_CODES: [&str; 2] = ["SEATS_UNAVAILABLE", "INVALID_STATE"];

#[derive(Clone)]
struct Session {
    user_id: String,
    token: String,
    showtimes: Vec<String>,
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPU(s), {model}")
}

#[tokio::main]
async fn main() -> Result<(), GooseError> {
    println!("moviebook-load on {}", machine());
    GooseAttack::initialize()?
        .register_scenario(
            scenario!("BrowseBookPayCancel")
                .register_transaction(transaction!(sign_up).set_on_start().set_name("signUp"))
                .register_transaction(transaction!(browse).set_name("browse").set_weight(1)?)
                .register_transaction(transaction!(book).set_name("book").set_weight(3)?),
        )
        .set_default(GooseDefault::Host, "http://127.0.0.1:8010")?
        .execute()
        .await?;
    Ok(())
}

/// POSTs a GraphQL request named `name`; marks the request failed on an unexpected error.
async fn gql(
    user: &mut GooseUser,
    name: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Result<Option<Value>, Box<TransactionError>> {
    let mut builder = user
        .get_request_builder(&GooseMethod::Post, "/graphql")?
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(t) = token {
        builder = builder.bearer_auth(t);
    }
    let request = GooseRequest::builder()
        .method(GooseMethod::Post)
        .path("/graphql")
        .name(name)
        .set_request_builder(builder)
        .build();
    let mut goose = user.request(request).await?;
    let Ok(response) = goose.response else {
        return Ok(None);
    };
    let body: Value = match response.json().await {
        Ok(v) => v,
        Err(_) => {
            user.set_failure("unreadable GraphQL answer", &mut goose.request, None, None)?;
            return Ok(None);
        }
    };
    if let Some(code) = body["errors"][0]["extensions"]["code"].as_str() {
        if !EXPECTED_CODES.contains(&code) {
            let text = body.to_string();
            user.set_failure(code, &mut goose.request, None, Some(&text))?;
        }
        return Ok(None);
    }
    Ok(Some(body))
}

fn user_service_url(user: &GooseUser) -> String {
    std::env::var("USER_SERVICE_URL").unwrap_or_else(|_| {
        if user.base_url.port() == Some(8010) {
            "http://127.0.0.1:8001".to_owned()
        } else {
            user.base_url.as_str().trim_end_matches('/').to_owned()
        }
    })
}

/// Registers and logs in once per simulated user, and remembers the catalogue's showtimes.
async fn sign_up(user: &mut GooseUser) -> TransactionResult {
    let base = user_service_url(user);
    let email = format!("load-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "load-test-password-123";
    let register = user
        .get_request_builder(&GooseMethod::Post, &format!("{base}/api/v1/register"))?
        .json(&json!({"email": email, "password": password, "first_name": "Load", "last_name": "Test"}));
    user.request(
        GooseRequest::builder()
            .method(GooseMethod::Post)
            .path("/api/v1/register")
            .name("register")
            .expect_status_code(201)
            .set_request_builder(register)
            .build(),
    )
    .await?;
    let login = user
        .get_request_builder(&GooseMethod::Post, &format!("{base}/api/v1/login"))?
        .json(&json!({"email": email, "password": password}));
    let goose = user
        .request(
            GooseRequest::builder()
                .method(GooseMethod::Post)
                .path("/api/v1/login")
                .name("login")
                .set_request_builder(login)
                .build(),
        )
        .await?;
    let body: Value = match goose.response {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let (Some(user_id), Some(token)) = (body["user"]["id"].as_str(), body["token"].as_str()) else {
        return Err(Box::new(TransactionError::Custom("login failed".into())));
    };
    let session = Session {
        user_id: user_id.to_owned(),
        token: token.to_owned(),
        showtimes: vec![],
    };
    user.set_session_data(session);
    browse(user).await
}

/// The catalogue query of the documented flow (public).
async fn browse(user: &mut GooseUser) -> TransactionResult {
    if let Some(body) = gql(user, "movies", None, MOVIES, json!({})).await? {
        let showtimes: Vec<String> = body["data"]["movies"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|m| m["showtimes"].as_array().cloned().unwrap_or_default())
            .filter(|s| s["availableSeats"].as_i64().unwrap_or(0) > 0)
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect();
        if let Some(s) = user.get_session_data_mut::<Session>()
            && !showtimes.is_empty()
        {
            s.showtimes = showtimes;
        }
    }
    Ok(())
}

/// Seat map → createBooking → processPayment (4 in 5) → cancelBooking.
async fn book(user: &mut GooseUser) -> TransactionResult {
    let Some(session) = user.get_session_data::<Session>() else {
        return Ok(());
    };
    let (user_id, token) = (session.user_id.clone(), session.token.clone());
    let Some(showtime) = session.showtimes.choose(&mut rand::rng()).cloned() else {
        return Ok(());
    };
    let Some(map) = gql(user, "seatMap", None, SEAT_MAP, json!({"id": showtime})).await? else {
        return Ok(());
    };
    let free: Vec<String> = map["data"]["showtime"]["seats"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["status"] == "AVAILABLE")
        .filter_map(|s| s["seatNumber"].as_str().map(str::to_owned))
        .collect();
    let (count, pay) = {
        let mut rng = rand::rng();
        (rng.random_range(1..=2usize), rng.random_bool(0.8))
    };
    let seats: Vec<String> = free
        .choose_multiple(&mut rand::rng(), count)
        .cloned()
        .collect();
    if seats.is_empty() {
        return Ok(());
    }
    let Some(created) = gql(
        user,
        "createBooking",
        Some(&token),
        CREATE,
        json!({"u": user_id, "s": showtime, "seats": seats}),
    )
    .await?
    else {
        return Ok(());
    };
    let Some(booking_id) = created["data"]["createBooking"]["booking"]["id"]
        .as_str()
        .map(str::to_owned)
    else {
        return Ok(());
    };
    if pay {
        gql(
            user,
            "processPayment",
            Some(&token),
            PAY,
            json!({"b": booking_id}),
        )
        .await?;
    }
    gql(
        user,
        "cancelBooking",
        Some(&token),
        CANCEL,
        json!({"b": booking_id}),
    )
    .await?;
    Ok(())
}
