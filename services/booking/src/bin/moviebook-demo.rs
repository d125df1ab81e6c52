//! `moviebook-demo` (`make demo`): walks the documented flow over the wire against a running
//! MovieBook (`make dev`) and prints each step: register, login, browse, seat map, book, pay,
//! read the booking back, and the notifications the worker recorded.
//!
//! URLs: `BOOKING_URL` (http://127.0.0.1:8010), `USER_SERVICE_URL` (http://127.0.0.1:8001),
//! `NOTIFICATION_URL` (http://127.0.0.1:8004); if the notification API does not answer, the
//! `notifications` collection of `moviebook_notification` at `MONGODB_URL` is read instead.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

fn var(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

struct Demo {
    http: reqwest::Client,
    graphql: String,
    step: usize,
}

impl Demo {
    fn step(&mut self, title: &str) {
        self.step += 1;
        println!("\n\x1b[1m{}. {title}\x1b[0m", self.step);
    }

    async fn gql(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .post(&self.graphql)
            .json(&json!({"query": query, "variables": variables}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let body: Value = req
            .send()
            .await
            .with_context(|| format!("POST {}", self.graphql))?
            .json()
            .await?;
        if let Some(err) = body["errors"].get(0) {
            bail!(
                "GraphQL error {}: {}",
                err["extensions"]["code"].as_str().unwrap_or("?"),
                err["message"].as_str().unwrap_or("")
            );
        }
        Ok(body["data"].clone())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let booking = var("BOOKING_URL", "http://127.0.0.1:8010");
    let users = var("USER_SERVICE_URL", "http://127.0.0.1:8001");
    let notifications = var("NOTIFICATION_URL", "http://127.0.0.1:8004");
    let mut demo = Demo {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?,
        graphql: format!("{}/graphql", booking.trim_end_matches('/')),
        step: 0,
    };
    println!(
        "MovieBook demo against {} (GraphiQL: GET the same URL in a browser)",
        demo.graphql
    );

    demo.step("Register a new user (POST /api/v1/register)");
    let email = format!(
        "demo-{}@example.com",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let password = "demo-password-123";
    let resp = demo
        .http
        .post(format!("{users}/api/v1/register"))
        .json(&json!({"email": email, "password": password, "first_name": "Demo", "last_name": "User"}))
        .send()
        .await
        .context("the user service does not answer: is `make dev` running?")?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    println!(
        "   {status}: {}",
        body["message"].as_str().unwrap_or(&body.to_string())
    );
    if !status.is_success() {
        bail!("registration failed: {body}");
    }

    demo.step("Log in (POST /api/v1/login)");
    let body: Value = demo
        .http
        .post(format!("{users}/api/v1/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?
        .json()
        .await?;
    let token = body["token"]
        .as_str()
        .context("no token in the login answer")?
        .to_owned();
    let user_id = body["user"]["id"]
        .as_str()
        .context("no user id")?
        .to_owned();
    println!(
        "   user {user_id} ({email}); JWT {}…",
        &token[..token.len().min(24)]
    );

    demo.step("Browse the catalogue (GraphQL `movies`, public)");
    let data = demo
        .gql(
            None,
            "{ movies { id title genre duration showtimes { id startTime cinema { name location } availableSeats basePrice } } }",
            json!({}),
        )
        .await?;
    let movies = data["movies"].as_array().cloned().unwrap_or_default();
    for m in movies.iter().take(5) {
        println!(
            "   {} ({}, {} min): {} showtimes",
            m["title"].as_str().unwrap_or("?"),
            m["genre"].as_str().unwrap_or("?"),
            m["duration"],
            m["showtimes"].as_array().map_or(0, Vec::len)
        );
    }
    let (movie, showtime) = movies
        .iter()
        .flat_map(|m| {
            m["showtimes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |s| (m.clone(), s))
        })
        .find(|(_, s)| s["availableSeats"].as_i64().unwrap_or(0) >= 2)
        .context("no showtime with two free seats: run `cinema-service seed`")?;
    let showtime_id = showtime["id"].as_str().unwrap_or_default().to_owned();
    println!(
        "   → {} at {} ({}), {} seats free from ${}",
        movie["title"].as_str().unwrap_or("?"),
        showtime["cinema"]["name"].as_str().unwrap_or("?"),
        showtime["startTime"].as_str().unwrap_or("?"),
        showtime["availableSeats"],
        showtime["basePrice"]
    );

    demo.step("Open the seat map (GraphQL `showtime(id) { seats }`)");
    let data = demo
        .gql(
            None,
            "query($id: ID!) { showtime(id: $id) { seats { seatNumber seatType price status } } }",
            json!({"id": showtime_id}),
        )
        .await?;
    let free: Vec<Value> = data["showtime"]["seats"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s["status"] == "AVAILABLE")
        .collect();
    let seats: Vec<String> = free
        .iter()
        .skip(free.len() / 2)
        .take(2)
        .filter_map(|s| s["seatNumber"].as_str().map(str::to_owned))
        .collect();
    println!(
        "   {} seats free; choosing {}",
        free.len(),
        seats.join(", ")
    );

    demo.step("Book them (GraphQL `createBooking`): seats held for 5 minutes");
    let data = demo
        .gql(
            Some(&token),
            "mutation($u: ID!, $s: ID!, $seats: [String!]!) { createBooking(userId: $u, showtimeId: $s, seatNumbers: $seats) { success message lockId booking { id status totalAmount createdAt } } }",
            json!({"u": user_id, "s": showtime_id, "seats": seats}),
        )
        .await?;
    let created = &data["createBooking"];
    let booking_id = created["booking"]["id"]
        .as_str()
        .context("no booking id")?
        .to_owned();
    println!(
        "   booking {booking_id}: {} — ${} — {}",
        created["booking"]["status"].as_str().unwrap_or("?"),
        created["booking"]["totalAmount"],
        created["message"].as_str().unwrap_or("")
    );

    demo.step("Pay (GraphQL `processPayment`, test card 4111 1111 1111 1111)");
    let data = demo
        .gql(
            Some(&token),
            "mutation($b: ID!) { processPayment(bookingId: $b, paymentMethod: \"credit_card\", paymentDetails: \"{\\\"card_number\\\":\\\"4111111111111111\\\"}\") { success message transactionId booking { status confirmedAt } } }",
            json!({"b": booking_id}),
        )
        .await?;
    let paid = &data["processPayment"];
    println!(
        "   {} at {} (transaction {})",
        paid["booking"]["status"].as_str().unwrap_or("?"),
        paid["booking"]["confirmedAt"].as_str().unwrap_or("?"),
        paid["transactionId"].as_str().unwrap_or("?")
    );

    demo.step("Read it back (GraphQL `myBookings`)");
    let data = demo
        .gql(
            Some(&token),
            "{ myBookings { id status seats totalAmount showtime { startTime movie { title } cinema { name } } } }",
            json!({}),
        )
        .await?;
    for b in data["myBookings"].as_array().cloned().unwrap_or_default() {
        println!(
            "   {} {} seats {} — {} at {}",
            b["id"].as_str().unwrap_or("?"),
            b["status"].as_str().unwrap_or("?"),
            b["seats"],
            b["showtime"]["movie"]["title"].as_str().unwrap_or("?"),
            b["showtime"]["cinema"]["name"].as_str().unwrap_or("?")
        );
    }

    demo.step("See the notifications the worker recorded");
    let mut shown = false;
    for _ in 0..30 {
        let list = notifications_over_http(&demo.http, &notifications, &token, &booking_id).await;
        let list = match list {
            Ok(l) => l,
            Err(e) => {
                println!("   (notification API: {e:#}; reading MongoDB instead)");
                notifications_in_mongo(&booking_id).await?
            }
        };
        if list.iter().any(|n| n["event_type"] == "booking.confirmed") {
            for n in &list {
                println!(
                    "   [{}] {} → {}: {}",
                    n["event_type"].as_str().unwrap_or("?"),
                    n["channel"].as_str().unwrap_or("?"),
                    n["recipient"].as_str().unwrap_or("-"),
                    n["subject"].as_str().unwrap_or("")
                );
            }
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !shown {
        bail!(
            "no booking.confirmed notification recorded within 15 s: is notification-service running?"
        );
    }
    println!("\nDone: registered, logged in, browsed, booked, paid and notified.");
    Ok(())
}

async fn notifications_over_http(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    booking_id: &str,
) -> anyhow::Result<Vec<Value>> {
    let resp = http
        // Booking ids are UUIDs: nothing to escape.
        .get(format!(
            "{base}/api/v1/notifications?booking_id={booking_id}"
        ))
        .bearer_auth(token)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("GET /api/v1/notifications answered {}", resp.status());
    }
    let body: Value = resp.json().await?;
    Ok(body["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

async fn notifications_in_mongo(booking_id: &str) -> anyhow::Result<Vec<Value>> {
    use futures::TryStreamExt;
    let url = var("MONGODB_URL", "mongodb://127.0.0.1:27017");
    let client = mongodb::Client::with_uri_str(&url).await?;
    let docs: Vec<bson::Document> = client
        .database("moviebook_notification")
        .collection::<bson::Document>("notifications")
        .find(bson::doc! { "booking_id": booking_id })
        .await?
        .try_collect()
        .await?;
    Ok(docs
        .into_iter()
        .filter_map(|d| serde_json::to_value(d).ok())
        .collect())
}
