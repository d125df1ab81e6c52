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
//! `processPayment`, ...). In the mix, expected GraphQL business errors (SEATS_UNAVAILABLE
//! when two users race for a seat) count as successes; any other error counts as a failure.
//!
//! Two focused scenarios measure the targets of single mutations (pick one with
//! `--scenarios`; `--scenarios-list` prints the names):
//! - `createbooking`: every iteration books one seat that nobody else asks for (each user
//!   walks its own showtimes' free seats), so every request must succeed;
//! - `paybooking`: every iteration books one such seat, pays for it, and cancels (refunds) so
//!   the seat returns to sale.
//!
//! `createbooking` does not cancel: its holds lapse after the hold time (5 minutes by
//! default). At a few hundred bookings/s a 20 s run holds about a third of the seeded
//! catalogue (about 25,000 seats), so wait for the holds to lapse before running it again.

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
    /// Every showtime still on sale when the run started, in id order (focused scenarios).
    all_showtimes: Vec<String>,
    /// Focused scenarios: free seats of this user's current showtime, and how many of its
    /// showtimes it has used up.
    seats: Vec<(String, String)>,
    rounds: usize,
    /// This user's number, 0.. in sign-up order: which showtimes it books in.
    slot: usize,
}

/// Hands out [`Session::slot`]s (goose's user indexes need not be dense).
static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

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
            scenario!("CreateBooking")
                .register_transaction(transaction!(sign_up).set_on_start().set_name("signUp"))
                .register_transaction(transaction!(create_only).set_name("create")),
        )
        .register_scenario(
            scenario!("PayBooking")
                .register_transaction(transaction!(sign_up).set_on_start().set_name("signUp"))
                .register_transaction(transaction!(create_and_pay).set_name("createAndPay")),
        )
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
    gql_expecting(user, name, token, query, variables, &EXPECTED_CODES).await
}

/// [`gql`] with the business error codes that count as success given explicitly.
async fn gql_expecting(
    user: &mut GooseUser,
    name: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
    expected: &[&str],
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
        if !expected.contains(&code) {
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
        all_showtimes: vec![],
        seats: vec![],
        rounds: 0,
        slot: NEXT_SLOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    };
    user.set_session_data(session);
    browse(user).await
}

/// Showtimes starting before this stop selling seats (FAILED_PRECONDITION) during a run: one
/// cutoff for the whole process, so every user sees the same list.
fn sale_cutoff() -> chrono::DateTime<chrono::Utc> {
    static CUTOFF: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();
    *CUTOFF.get_or_init(|| chrono::Utc::now() + chrono::Duration::minutes(30))
}

/// The catalogue query of the documented flow (public).
async fn browse(user: &mut GooseUser) -> TransactionResult {
    if let Some(body) = gql(user, "movies", None, MOVIES, json!({})).await? {
        let on_sale: Vec<&Value> = body["data"]["movies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["showtimes"].as_array())
            .flatten()
            .filter(|s| {
                s["startTime"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t > sale_cutoff())
            })
            .collect();
        let id = |s: &&Value| s["id"].as_str().map(str::to_owned);
        let showtimes: Vec<String> = on_sale
            .iter()
            .filter(|s| s["availableSeats"].as_i64().unwrap_or(0) > 0)
            .filter_map(id)
            .collect();
        // Not filtered by availability, which changes during a run: users that signed up at
        // different moments must still agree on who owns which showtime.
        let mut owned: Vec<String> = on_sale.iter().filter_map(id).collect();
        owned.sort();
        if let Some(s) = user.get_session_data_mut::<Session>() {
            if !showtimes.is_empty() {
                s.showtimes = showtimes;
            }
            if s.all_showtimes.is_empty() {
                s.all_showtimes = owned;
            }
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

/// The next seat only this user books: of `n` users, user `i` walks showtimes `i`, `i + n`,
/// `i + 2n`, ... of the catalogue in id order, and books their free seats one by one. `None`
/// when its share of the catalogue is exhausted.
async fn next_own_seat(
    user: &mut GooseUser,
) -> Result<Option<(String, String)>, Box<TransactionError>> {
    // Without --users goose runs one user per CPU.
    let users = user
        .config
        .users
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    loop {
        let Some(session) = user.get_session_data_mut::<Session>() else {
            return Ok(None);
        };
        let index = session.slot;
        if let Some(seat) = session.seats.pop() {
            return Ok(Some(seat));
        }
        let Some(showtime) = index
            .checked_add(session.rounds.saturating_mul(users))
            .and_then(|k| session.all_showtimes.get(k))
            .cloned()
        else {
            return Ok(None);
        };
        session.rounds += 1;
        let Some(map) = gql(user, "seatMap", None, SEAT_MAP, json!({"id": showtime})).await? else {
            continue;
        };
        let free: Vec<(String, String)> = map["data"]["showtime"]["seats"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["status"] == "AVAILABLE")
            .filter_map(|s| {
                s["seatNumber"]
                    .as_str()
                    .map(|n| (showtime.clone(), n.to_owned()))
            })
            .collect();
        if let Some(session) = user.get_session_data_mut::<Session>() {
            session.seats = free;
        }
    }
}

/// createBooking of one seat nobody else asks for: any error is a failure.
async fn create_own(user: &mut GooseUser) -> Result<Option<String>, Box<TransactionError>> {
    let Some((showtime, seat)) = next_own_seat(user).await? else {
        out_of_seats(user).await;
        return Ok(None);
    };
    let Some(session) = user.get_session_data::<Session>() else {
        return Ok(None);
    };
    let (user_id, token) = (session.user_id.clone(), session.token.clone());
    let created = gql_expecting(
        user,
        "createBooking",
        Some(&token),
        CREATE,
        json!({"u": user_id, "s": showtime, "seats": [seat]}),
        &[],
    )
    .await?;
    Ok(created.and_then(|c| {
        c["data"]["createBooking"]["booking"]["id"]
            .as_str()
            .map(str::to_owned)
    }))
}

/// Focused: createBooking only.
async fn create_only(user: &mut GooseUser) -> TransactionResult {
    create_own(user).await?;
    Ok(())
}

/// A user that found no seat of its own left: says so once and idles, rather than spinning
/// through transactions that send nothing (which starves the other users' tasks).
async fn out_of_seats(user: &GooseUser) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!(
            "moviebook-load: user {} found no free seat of its own: reseed (`make dev-down`, \
             remove the dev state, `make dev`) or shorten --run-time",
            user.get_session_data::<Session>().map_or(0, |s| s.slot)
        );
    });
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}

/// Focused: createBooking, then processPayment of that booking, then cancelBooking (a refund)
/// so the seat returns to sale and repeated runs do not sell out the catalogue.
async fn create_and_pay(user: &mut GooseUser) -> TransactionResult {
    let Some(booking_id) = create_own(user).await? else {
        return Ok(());
    };
    let token = user
        .get_session_data::<Session>()
        .map(|s| s.token.clone())
        .unwrap_or_default();
    gql_expecting(
        user,
        "processPayment",
        Some(&token),
        PAY,
        json!({"b": booking_id}),
        &[],
    )
    .await?;
    gql_expecting(
        user,
        "cancelBooking",
        Some(&token),
        CANCEL,
        json!({"b": booking_id}),
        &[],
    )
    .await?;
    Ok(())
}
