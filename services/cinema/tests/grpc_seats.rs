//! The seat-locking contract over the wire: the race, expiry, confirmation, idempotency and the
//! bad-input battery, against the real service and a real PostgreSQL.

mod common;

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use common::{Service, seats};
use moviebook_common::proto;
use tonic::Code;

fn lock_req(showtime: &str, s: &[&str], booking: &str, secs: i32) -> proto::LockSeatsRequest {
    proto::LockSeatsRequest {
        showtime_id: showtime.to_owned(),
        seat_numbers: seats(s),
        booking_id: booking.to_owned(),
        lock_duration_seconds: secs,
    }
}

fn confirm_req(lock: &str, booking: &str) -> proto::ConfirmSeatBookingRequest {
    proto::ConfirmSeatBookingRequest {
        lock_id: lock.to_owned(),
        booking_id: booking.to_owned(),
        user_id: "user-1".to_owned(),
    }
}

fn release_req(lock: &str, booking: &str) -> proto::ReleaseSeatLockRequest {
    proto::ReleaseSeatLockRequest {
        lock_id: lock.to_owned(),
        booking_id: booking.to_owned(),
    }
}

async fn seat_status(
    client: &mut common::Client,
    showtime: &str,
) -> HashMap<String, proto::SeatStatus> {
    client
        .get_seat_map(proto::GetSeatMapRequest {
            showtime_id: showtime.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .seats
        .into_iter()
        .map(|s| (s.seat_number.clone(), s.status()))
        .collect()
}

async fn available_seats(client: &mut common::Client, showtime: &str) -> i32 {
    client
        .get_showtime_details(proto::GetShowtimeDetailsRequest {
            showtime_id: showtime.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .showtime
        .unwrap()
        .available_seats
}

/// 240 clients, each on its own connection, race for overlapping windows of 1-4 adjacent seats
/// of a 50-seat showtime, all released at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_never_share_a_seat() {
    const CLIENTS: usize = 240;
    let svc = Service::start().await;
    let showtime = svc.showtime(5, 10).await.to_string();
    let rows = ["A", "B", "C", "D", "E"];
    let requests: Vec<Vec<String>> = (0..CLIENTS)
        .map(|i| {
            let row = rows[(i * 7) % rows.len()];
            let start = 1 + (i * 13) % 8; // 1..=8
            let len = 1 + (i % 4); // 1..=4
            (start..(start + len).min(11))
                .map(|n| format!("{row}{n}"))
                .collect()
        })
        .collect();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(svc.client().await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let tasks: Vec<_> = clients
        .into_iter()
        .zip(requests.iter().cloned())
        .enumerate()
        .map(|(i, (mut client, seats))| {
            let barrier = barrier.clone();
            let showtime = showtime.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let resp = client
                    .lock_seats(proto::LockSeatsRequest {
                        showtime_id: showtime,
                        seat_numbers: seats,
                        booking_id: format!("race-{i}"),
                        lock_duration_seconds: 600,
                    })
                    .await;
                (i, resp.map(|r| r.into_inner()))
            })
        })
        .collect();
    let mut granted: HashMap<String, (usize, String)> = HashMap::new(); // seat -> (client, lock)
    let mut lock_ids = BTreeSet::new();
    let mut losers = Vec::new();
    for t in tasks {
        let (i, resp) = t.await.unwrap();
        let resp = resp.unwrap_or_else(|s| panic!("client {i}: gRPC error {s:?}"));
        let asked: BTreeSet<String> = requests[i].iter().cloned().collect();
        if resp.success {
            assert!(resp.failed_seats.is_empty());
            assert!(lock_ids.insert(resp.lock_id.clone()), "lock id reused");
            let got: BTreeSet<String> = resp
                .seat_prices
                .iter()
                .map(|p| p.seat_number.clone())
                .collect();
            assert_eq!(got, asked, "client {i} holds exactly what it asked");
            for s in got {
                if let Some((other, _)) = granted.insert(s.clone(), (i, resp.lock_id.clone())) {
                    panic!("seat {s} granted to clients {other} and {i}");
                }
            }
        } else {
            assert!(resp.lock_id.is_empty());
            assert!(
                !resp.failed_seats.is_empty(),
                "client {i} learns what it lost"
            );
            for f in &resp.failed_seats {
                assert!(
                    asked.contains(f),
                    "client {i} told about a seat it did not ask for"
                );
            }
            losers.push((i, resp.failed_seats));
        }
    }
    assert!(
        !granted.is_empty() && !losers.is_empty(),
        "the race had winners and losers"
    );
    // Every seat a loser lost is held by a winner.
    for (i, failed) in &losers {
        for f in failed {
            assert!(
                granted.contains_key(f),
                "client {i} lost {f} but nobody holds it"
            );
        }
    }
    // The database agrees: exactly the granted seats are locked, each by its winner's lock.
    let rows: Vec<(String, String, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT seat_number, status, lock_id FROM seats WHERE showtime_id = $1::uuid",
    )
    .bind(&showtime)
    .fetch_all(&svc.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 50);
    for (seat, status, lock) in &rows {
        match granted.get(seat) {
            Some((_, lock_id)) => {
                assert_eq!(status, "LOCKED", "{seat}");
                assert_eq!(
                    lock.map(|l| l.to_string()).as_deref(),
                    Some(lock_id.as_str())
                );
            }
            None => assert_eq!(status, "AVAILABLE", "{seat}"),
        }
    }
    let mut client = svc.client().await;
    let free = rows.iter().filter(|(_, s, _)| s == "AVAILABLE").count() as i32;
    assert_eq!(available_seats(&mut client, &showtime).await, free);
    assert_eq!(free, 50 - granted.len() as i32);
    let map = seat_status(&mut client, &showtime).await;
    assert_eq!(
        map.values()
            .filter(|s| **s == proto::SeatStatus::Available)
            .count() as i32,
        free
    );
    svc.stop().await;
}

#[tokio::test]
async fn an_expired_hold_cannot_be_confirmed_and_its_seat_goes_to_the_next_client() {
    let svc = Service::start().await;
    let showtime = svc.showtime(2, 5).await.to_string();
    let mut c = svc.client().await;
    let first = c
        .lock_seats(lock_req(&showtime, &["A1", "A2"], "slow-booking", 60))
        .await
        .unwrap()
        .into_inner();
    assert!(first.success, "{first:?}");
    // Held now: another client cannot take it.
    let clash = c
        .lock_seats(lock_req(&showtime, &["A2"], "eager-booking", 60))
        .await
        .unwrap()
        .into_inner();
    assert!(!clash.success);
    assert_eq!(clash.failed_seats, seats(&["A2"]));
    assert_eq!(available_seats(&mut c, &showtime).await, 8);

    // The hold lapses: its expiry moves into the past, as if its minute had gone by. (A short
    // real hold and a sleep made the "held now" checks above race the clock on a busy machine.)
    let lock_id = uuid::Uuid::parse_str(&first.lock_id).expect("lock id is a UUID");
    let lapsed = sqlx::query(
        "UPDATE seat_locks SET expires_at = now() - interval '1 second' WHERE id = $1 AND status = 'HELD'",
    )
    .bind(lock_id)
    .execute(&svc.pool)
    .await
    .expect("age the hold")
    .rows_affected();
    assert_eq!(lapsed, 1, "the hold was live until now");
    sqlx::query("UPDATE seats SET locked_until = now() - interval '1 second' WHERE lock_id = $1")
        .bind(lock_id)
        .execute(&svc.pool)
        .await
        .expect("age the held seats");
    // Expired: free for everyone, even before the sweeper ran.
    let check = c
        .check_seat_availability(proto::CheckSeatAvailabilityRequest {
            showtime_id: showtime.clone(),
            seat_numbers: seats(&["A1", "A2"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(check.available, "{check:?}");
    assert_eq!(available_seats(&mut c, &showtime).await, 10);
    let late = c
        .confirm_seat_booking(confirm_req(&first.lock_id, "slow-booking"))
        .await
        .unwrap()
        .into_inner();
    assert!(!late.success, "{late:?}");
    assert!(late.message.contains("expired"), "{}", late.message);
    assert!(late.confirmed_seats.is_empty());

    let next = c
        .lock_seats(lock_req(&showtime, &["A2"], "next-booking", 60))
        .await
        .unwrap()
        .into_inner();
    assert!(next.success, "{next:?}");
    let sold = c
        .confirm_seat_booking(confirm_req(&next.lock_id, "next-booking"))
        .await
        .unwrap()
        .into_inner();
    assert!(sold.success, "{sold:?}");
    assert_eq!(sold.confirmed_seats, seats(&["A2"]));
    // The first hold still cannot be confirmed, and the sold seat stays sold.
    let again = c
        .confirm_seat_booking(confirm_req(&first.lock_id, "slow-booking"))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.success);
    let map = seat_status(&mut c, &showtime).await;
    assert_eq!(map["A2"], proto::SeatStatus::Booked);
    assert_eq!(map["A1"], proto::SeatStatus::Available);
    assert_eq!(available_seats(&mut c, &showtime).await, 9);
    svc.stop().await;
}

#[tokio::test]
async fn confirm_needs_the_live_hold_of_that_booking() {
    let svc = Service::start().await;
    let showtime = svc.showtime(2, 5).await.to_string();
    let mut c = svc.client().await;
    let a = c
        .lock_seats(lock_req(&showtime, &["B1", "B2"], "booking-a", 60))
        .await
        .unwrap()
        .into_inner();
    assert!(a.success);
    // Another booking's lock: refused, nothing changes.
    let wrong = c
        .confirm_seat_booking(confirm_req(&a.lock_id, "booking-b"))
        .await
        .unwrap()
        .into_inner();
    assert!(!wrong.success);
    assert!(
        wrong.message.contains("another booking"),
        "{}",
        wrong.message
    );
    let map = seat_status(&mut c, &showtime).await;
    assert_eq!(map["B1"], proto::SeatStatus::Locked);
    // Release then confirm: refused.
    let rel = c
        .release_seat_lock(release_req(&a.lock_id, "booking-a"))
        .await
        .unwrap()
        .into_inner();
    assert!(rel.success, "{rel:?}");
    let after = c
        .confirm_seat_booking(confirm_req(&a.lock_id, "booking-a"))
        .await
        .unwrap()
        .into_inner();
    assert!(!after.success);
    assert!(after.message.contains("released"), "{}", after.message);
    assert_eq!(available_seats(&mut c, &showtime).await, 10);
    // A confirmed hold cannot be released as a hold, only returned as booked seats.
    let b = c
        .lock_seats(lock_req(&showtime, &["B3"], "booking-c", 60))
        .await
        .unwrap()
        .into_inner();
    assert!(
        c.confirm_seat_booking(confirm_req(&b.lock_id, "booking-c"))
            .await
            .unwrap()
            .into_inner()
            .success
    );
    let rel = c
        .release_seat_lock(release_req(&b.lock_id, "booking-c"))
        .await
        .unwrap()
        .into_inner();
    assert!(!rel.success);
    assert_eq!(
        seat_status(&mut c, &showtime).await["B3"],
        proto::SeatStatus::Booked
    );
    for _ in 0..2 {
        let back = c
            .release_booked_seats(proto::ReleaseBookedSeatsRequest {
                booking_id: "booking-c".into(),
                showtime_id: showtime.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(back.success, "{back:?}");
        assert_eq!(back.released_seats, seats(&["B3"]));
    }
    assert_eq!(
        seat_status(&mut c, &showtime).await["B3"],
        proto::SeatStatus::Available
    );
    assert_eq!(available_seats(&mut c, &showtime).await, 10);
    svc.stop().await;
}

#[tokio::test]
async fn retries_are_idempotent() {
    let svc = Service::start().await;
    let showtime = svc.showtime(3, 6).await.to_string();
    let mut c = svc.client().await;
    let first = c
        .lock_seats(lock_req(&showtime, &["A1", "a2"], "retry-1", 120))
        .await
        .unwrap()
        .into_inner();
    assert!(first.success);
    assert_eq!(first.total_price, 20.0);
    // Sequential and concurrent retries (seats in another order) get the same hold.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let mut c = svc.client().await;
        let showtime = showtime.clone();
        tasks.push(tokio::spawn(async move {
            let order: &[&str] = if i % 2 == 0 {
                &["A2", "A1"]
            } else {
                &["A1", "A2"]
            };
            c.lock_seats(lock_req(&showtime, order, "retry-1", 120))
                .await
                .map(|r| r.into_inner())
        }));
    }
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert!(r.success, "{r:?}");
        assert_eq!(r.lock_id, first.lock_id);
        assert_eq!(r.expires_at, first.expires_at);
        assert_eq!(r.total_price, first.total_price);
    }
    // Concurrent first attempts of one new booking: exactly one hold, every caller sees it.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut c = svc.client().await;
        let showtime = showtime.clone();
        tasks.push(tokio::spawn(async move {
            c.lock_seats(lock_req(&showtime, &["C1", "C2", "C3"], "retry-2", 120))
                .await
                .map(|r| r.into_inner())
        }));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert!(r.success, "{r:?}");
        ids.insert(r.lock_id);
    }
    assert_eq!(ids.len(), 1);
    let holds: i64 = sqlx::query_scalar("SELECT count(*) FROM seat_locks")
        .fetch_one(&svc.pool)
        .await
        .unwrap();
    assert_eq!(holds, 2);
    assert_eq!(available_seats(&mut c, &showtime).await, 18 - 5);
    // Same booking id, other seats: refused without changing anything.
    let other = c
        .lock_seats(lock_req(&showtime, &["B1"], "retry-1", 120))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::FailedPrecondition);
    assert!(other.message().contains("retry-1"), "{}", other.message());
    assert_eq!(
        seat_status(&mut c, &showtime).await["B1"],
        proto::SeatStatus::Available
    );
    // Confirm twice: same seats both times.
    for _ in 0..2 {
        let r = c
            .confirm_seat_booking(confirm_req(&first.lock_id, "retry-1"))
            .await
            .unwrap()
            .into_inner();
        assert!(r.success, "{r:?}");
        assert_eq!(r.confirmed_seats, seats(&["A1", "A2"]));
    }
    // A lock retry after confirmation still answers the same lock, never a second hold.
    let r = c
        .lock_seats(lock_req(&showtime, &["A1", "A2"], "retry-1", 120))
        .await
        .unwrap()
        .into_inner();
    assert!(r.success);
    assert_eq!(r.lock_id, first.lock_id);
    // Release twice.
    let lock2 = ids.into_iter().next().unwrap();
    for _ in 0..2 {
        let r = c
            .release_seat_lock(release_req(&lock2, "retry-2"))
            .await
            .unwrap()
            .into_inner();
        assert!(r.success, "{r:?}");
    }
    // After release, the booking id cannot silently re-hold.
    let again = c
        .lock_seats(lock_req(&showtime, &["C1", "C2", "C3"], "retry-2", 120))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(available_seats(&mut c, &showtime).await, 18 - 2);
    svc.stop().await;
}

#[tokio::test]
async fn the_sweeper_frees_expired_holds() {
    let svc = Service::start().await;
    let showtime = svc.showtime(2, 4).await.to_string();
    let mut c = svc.client().await;
    let r = c
        .lock_seats(lock_req(&showtime, &["A1", "B4"], "sweep-me", 1))
        .await
        .unwrap()
        .into_inner();
    assert!(r.success);
    let mut freed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status,): (String,) =
            sqlx::query_as("SELECT status FROM seat_locks WHERE booking_id = 'sweep-me'")
                .fetch_one(&svc.pool)
                .await
                .unwrap();
        if status == "EXPIRED" {
            freed = true;
            break;
        }
    }
    assert!(freed, "the sweeper marked the hold expired");
    let locked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM seats WHERE showtime_id = $1::uuid AND status <> 'AVAILABLE'",
    )
    .bind(&showtime)
    .fetch_one(&svc.pool)
    .await
    .unwrap();
    assert_eq!(locked, 0);
    // Releasing an expired hold is a no-op success; confirming it fails.
    let rel = c
        .release_seat_lock(release_req(&r.lock_id, "sweep-me"))
        .await
        .unwrap()
        .into_inner();
    assert!(rel.success);
    let conf = c
        .confirm_seat_booking(confirm_req(&r.lock_id, "sweep-me"))
        .await
        .unwrap()
        .into_inner();
    assert!(!conf.success);
    svc.stop().await;
}

fn expect_code<T: std::fmt::Debug>(
    what: &str,
    r: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
) {
    match r {
        Ok(resp) => panic!("{what}: expected {code:?}, got OK {:?}", resp.into_inner()),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {s:?}");
            assert!(!s.message().is_empty(), "{what}: empty message");
        }
    }
}

#[tokio::test]
async fn bad_input_is_invalid_argument_or_not_found_never_internal() {
    let svc = Service::start().await;
    let showtime = svc.showtime(2, 5).await.to_string();
    let unknown = uuid::Uuid::new_v4().to_string();
    let mut c = svc.client().await;
    use Code::{InvalidArgument as Invalid, NotFound};

    let check = |id: &str, s: Vec<String>| proto::CheckSeatAvailabilityRequest {
        showtime_id: id.to_owned(),
        seat_numbers: s,
    };
    expect_code(
        "check: empty id",
        c.check_seat_availability(check("", seats(&["A1"]))).await,
        Invalid,
    );
    expect_code(
        "check: malformed id",
        c.check_seat_availability(check("42", seats(&["A1"]))).await,
        Invalid,
    );
    expect_code(
        "check: unknown id",
        c.check_seat_availability(check(&unknown, seats(&["A1"])))
            .await,
        NotFound,
    );
    expect_code(
        "check: no seats",
        c.check_seat_availability(check(&showtime, vec![])).await,
        Invalid,
    );
    expect_code(
        "check: duplicates",
        c.check_seat_availability(check(&showtime, seats(&["A1", "A1"])))
            .await,
        Invalid,
    );
    expect_code(
        "check: unknown seat",
        c.check_seat_availability(check(&showtime, seats(&["Z99"])))
            .await,
        Invalid,
    );

    let many: Vec<String> = (1..=300).map(|i| format!("A{i}")).collect();
    let cases: Vec<(&str, proto::LockSeatsRequest, Code)> = vec![
        ("lock: empty id", lock_req("", &["A1"], "b", 10), Invalid),
        (
            "lock: malformed id",
            lock_req("not-a-uuid", &["A1"], "b", 10),
            Invalid,
        ),
        (
            "lock: unknown id",
            lock_req(&unknown, &["A1"], "b", 10),
            NotFound,
        ),
        ("lock: no seats", lock_req(&showtime, &[], "b", 10), Invalid),
        (
            "lock: duplicate seats",
            lock_req(&showtime, &["A1", "B2", "A1"], "b", 10),
            Invalid,
        ),
        (
            "lock: nonexistent seat",
            lock_req(&showtime, &["A1", "Q7"], "b", 10),
            Invalid,
        ),
        (
            "lock: seat past the row",
            lock_req(&showtime, &["A6"], "b", 10),
            Invalid,
        ),
        (
            "lock: malformed seat",
            lock_req(&showtime, &["'; DROP TABLE seats; --"], "b", 10),
            Invalid,
        ),
        (
            "lock: blank seat",
            lock_req(&showtime, &[" "], "b", 10),
            Invalid,
        ),
        (
            "lock: hundreds of seats",
            proto::LockSeatsRequest {
                seat_numbers: many.clone(),
                ..lock_req(&showtime, &[], "b", 10)
            },
            Invalid,
        ),
        (
            "lock: negative duration",
            lock_req(&showtime, &["A1"], "b", -5),
            Invalid,
        ),
        (
            "lock: absurd duration",
            lock_req(&showtime, &["A1"], "b", 86_400 * 365),
            Invalid,
        ),
        (
            "lock: i32::MAX duration",
            lock_req(&showtime, &["A1"], "b", i32::MAX),
            Invalid,
        ),
        (
            "lock: i32::MIN duration",
            lock_req(&showtime, &["A1"], "b", i32::MIN),
            Invalid,
        ),
        (
            "lock: no booking id",
            lock_req(&showtime, &["A1"], "", 10),
            Invalid,
        ),
        (
            "lock: huge booking id",
            lock_req(&showtime, &["A1"], &"x".repeat(10_000), 10),
            Invalid,
        ),
    ];
    for (what, req, code) in cases {
        expect_code(what, c.lock_seats(req).await, code);
    }
    // Nothing above held anything.
    assert_eq!(available_seats(&mut c, &showtime).await, 10);
    let holds: i64 = sqlx::query_scalar("SELECT count(*) FROM seat_locks")
        .fetch_one(&svc.pool)
        .await
        .unwrap();
    assert_eq!(holds, 0);

    // Duration 0 means the default 300 s.
    let ok = c
        .lock_seats(lock_req(&showtime, &["A1"], "default-duration", 0))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.success);
    let left = ok.expires_at - chrono::Utc::now().timestamp();
    assert!(
        (295..=301).contains(&left),
        "default hold is 300 s, got {left}"
    );

    expect_code(
        "release: malformed lock",
        c.release_seat_lock(release_req("nope", "b")).await,
        Invalid,
    );
    expect_code(
        "release: unknown lock",
        c.release_seat_lock(release_req(&unknown, "b")).await,
        NotFound,
    );
    expect_code(
        "release: no booking",
        c.release_seat_lock(release_req(&ok.lock_id, "")).await,
        Invalid,
    );
    expect_code(
        "confirm: malformed lock",
        c.confirm_seat_booking(confirm_req("", "b")).await,
        Invalid,
    );
    expect_code(
        "confirm: unknown lock",
        c.confirm_seat_booking(confirm_req(&unknown, "b")).await,
        NotFound,
    );
    expect_code(
        "confirm: no user",
        c.confirm_seat_booking(proto::ConfirmSeatBookingRequest {
            user_id: " ".into(),
            ..confirm_req(&ok.lock_id, "default-duration")
        })
        .await,
        Invalid,
    );
    expect_code(
        "details: malformed",
        c.get_showtime_details(proto::GetShowtimeDetailsRequest {
            showtime_id: "x".into(),
        })
        .await,
        Invalid,
    );
    expect_code(
        "details: unknown",
        c.get_showtime_details(proto::GetShowtimeDetailsRequest {
            showtime_id: unknown.clone(),
        })
        .await,
        NotFound,
    );
    expect_code(
        "seat map: unknown",
        c.get_seat_map(proto::GetSeatMapRequest {
            showtime_id: unknown.clone(),
        })
        .await,
        NotFound,
    );
    expect_code(
        "batch: malformed",
        c.batch_get_showtimes(proto::BatchGetShowtimesRequest {
            showtime_ids: vec![showtime.clone(), "bad".into()],
        })
        .await,
        Invalid,
    );
    expect_code(
        "release booked: unknown booking",
        c.release_booked_seats(proto::ReleaseBookedSeatsRequest {
            booking_id: "nobody".into(),
            showtime_id: String::new(),
        })
        .await,
        NotFound,
    );
    expect_code(
        "list movies: negative limit",
        c.list_movies(proto::ListMoviesRequest {
            limit: -1,
            ..Default::default()
        })
        .await,
        Invalid,
    );
    // Unknown ids in a batch are simply absent.
    let batch = c
        .batch_get_showtimes(proto::BatchGetShowtimesRequest {
            showtime_ids: vec![showtime.clone(), unknown.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.showtimes.len(), 1);
    let d = &batch.showtimes[0];
    assert_eq!(d.showtime.as_ref().unwrap().available_seats, 9);
    assert_eq!(d.movie.as_ref().unwrap().genre, "Drama");
    assert!(d.cinema.as_ref().unwrap().name.starts_with("Cinema "));
    svc.stop().await;
}

#[tokio::test]
async fn catalogue_calls_serve_the_graphql_layer_in_one_round_trip() {
    let svc = Service::start().await;
    let showtime = svc.showtime(3, 4).await.to_string();
    let mut c = svc.client().await;
    let movies = c
        .list_movies(proto::ListMoviesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(movies.movies.len(), 1);
    let m = &movies.movies[0];
    assert_eq!(m.showtimes.len(), 1);
    assert_eq!(m.showtimes[0].id, showtime);
    assert_eq!(m.showtimes[0].total_seats, 12);
    assert_eq!(m.showtimes[0].available_seats, 12);
    assert_eq!(movies.cinemas.len(), 1);
    assert_eq!(movies.cinemas[0].id, m.showtimes[0].cinema_id);
    assert_eq!(movies.cinemas[0].total_screens, 1);
    let none = c
        .list_movies(proto::ListMoviesRequest {
            genre: "Western".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.movies.is_empty());
    let cinemas = c
        .list_cinemas(proto::ListCinemasRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cinemas.cinemas.len(), 1);
    let map = c
        .get_seat_map(proto::GetSeatMapRequest {
            showtime_id: showtime.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(map.seats.len(), 12);
    // Layout::simple(3, 4, 1, 0): rows A, B standard, C premium (x1.5 of 10.00).
    let c1 = map.seats.iter().find(|s| s.seat_number == "C1").unwrap();
    assert_eq!(
        (c1.seat_type.as_str(), c1.price, c1.row.as_str(), c1.number),
        ("premium", 15.0, "C", 1)
    );
    svc.stop().await;
}

/// Seat locks, confirmations and releases are the booking service's calls alone: without a
/// token, with a forged or expired one, or as a user (even an admin), every call is refused
/// before it reaches the store; the booking service's own token passes.
#[tokio::test]
async fn only_the_booking_service_may_call_the_grpc_api() {
    let svc = Service::start().await;
    let mut anon = svc.anonymous_client().await;
    let with = |token: String| {
        let mut r = tonic::Request::new(lock_req(
            &uuid::Uuid::new_v4().to_string(),
            &["A1"],
            "b-1",
            60,
        ));
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("metadata"),
        );
        r
    };
    let err = anon
        .lock_seats(lock_req("s", &["A1"], "b-1", 60))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("booking-service"),
        "{}",
        err.message()
    );

    let forged = moviebook_common::auth::JwtKeys::new(
        "a-different-secret-that-is-long-enough!!",
        svc.keys.issuer(),
        Duration::from_secs(60),
    )
    .issue_service_token(moviebook_common::auth::BOOKING_SERVICE)
    .expect("token");
    let err = anon.lock_seats(with(forged)).await.expect_err("forged");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let admin = svc
        .keys
        .issue("u-1", Some("a@example.com"), &["admin".to_owned()])
        .expect("token");
    let err = anon.lock_seats(with(admin)).await.expect_err("a user");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let payment = svc
        .keys
        .issue_service_token("payment-service")
        .expect("token");
    let err = anon
        .lock_seats(with(payment))
        .await
        .expect_err("another service");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // booking's own client is let through (the showtime does not exist: the store answered)
    let err = svc
        .client()
        .await
        .lock_seats(lock_req(
            &uuid::Uuid::new_v4().to_string(),
            &["A1"],
            "b-1",
            60,
        ))
        .await
        .expect_err("unknown showtime");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    svc.stop().await;
}

/// CheckSeatAvailability answers from a short-lived copy of the seat board (see
/// cinema_service::availability). Two "pods" on one database: `a` keeps copies for 10 min (so
/// that staleness is visible), `b` keeps none. A stale answer never lets LockSeats take a taken
/// seat, a pod sees its own writes at once, and another pod's once the copy is old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_availability_copy_never_makes_a_lock_wrong() {
    use cinema_service::{availability::SeatBoards, grpc::Grpc};
    use proto::cinema_service_server::CinemaService;

    let svc = Service::start().await;
    let showtime_id = svc.showtime(2, 5).await;
    let showtime = showtime_id.to_string();
    let boards = SeatBoards::new(Duration::from_secs(600));
    let a = Grpc::new(svc.pool.clone(), boards.clone());
    let b = Grpc::new(svc.pool.clone(), SeatBoards::new(Duration::ZERO));
    let short = SeatBoards::new(Duration::from_millis(300));
    let c = Grpc::new(svc.pool.clone(), short.clone());

    let check = |pod: &Grpc, s: &[&str]| {
        let pod = pod.clone();
        let req = proto::CheckSeatAvailabilityRequest {
            showtime_id: showtime.clone(),
            seat_numbers: seats(s),
        };
        async move {
            CinemaService::check_seat_availability(&pod, tonic::Request::new(req))
                .await
                .expect("check answers")
                .into_inner()
        }
    };
    let lock = |pod: &Grpc, s: &[&str], booking: &str| {
        let pod = pod.clone();
        let req = lock_req(&showtime, s, booking, 60);
        async move {
            CinemaService::lock_seats(&pod, tonic::Request::new(req))
                .await
                .expect("lock answers")
                .into_inner()
        }
    };
    let loaded = |boards: &SeatBoards| {
        let boards = boards.clone();
        async move {
            for _ in 0..250 {
                if boards.holds(showtime_id) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("the seat board was never loaded");
        }
    };

    // The first check reads PostgreSQL and loads the board for the next ones.
    assert!(check(&a, &["A1", "A2"]).await.available);
    loaded(&boards).await;
    assert!(check(&c, &["A3"]).await.available);
    loaded(&short).await;

    // Another pod takes A1: `a`'s copy still says free (it is advice, up to its age old)...
    assert!(lock(&b, &["A1"], "other-booking").await.success);
    assert!(check(&a, &["A1"]).await.available, "served from the copy");
    // ...but a lock on `a` is decided in PostgreSQL, and refuses the seat.
    let refused = lock(&a, &["A1", "A2"], "my-booking").await;
    assert!(!refused.success, "{refused:?}");
    assert_eq!(refused.failed_seats, seats(&["A1"]));
    // That write dropped `a`'s copy: the next check tells the truth.
    let now = check(&a, &["A1", "A2"]).await;
    assert!(!now.available, "{now:?}");
    assert_eq!(now.unavailable_seats.len(), 1, "{now:?}");
    assert_eq!(now.unavailable_seats[0].seat_number, "A1");
    assert_eq!(now.unavailable_seats[0].locked_by, "other-booking");

    // A pod sees its own lock at once, from PostgreSQL or from a copy loaded after it.
    let mine = lock(&a, &["A2"], "my-booking").await;
    assert!(mine.success, "{mine:?}");
    let held = check(&a, &["A2"]).await;
    assert_eq!(held.unavailable_seats.len(), 1, "{held:?}");
    assert_eq!(held.unavailable_seats[0].locked_by, "my-booking");
    loaded(&boards).await;
    let held = check(&a, &["A2"]).await;
    assert_eq!(held.unavailable_seats.len(), 1, "from the copy: {held:?}");
    assert!(held.unavailable_seats[0].locked_until > 0);
    // ...and its own release too (the release names the booking, whose boards are dropped).
    let released = CinemaService::release_seat_lock(
        &a,
        tonic::Request::new(release_req(&mine.lock_id, "my-booking")),
    )
    .await
    .expect("release answers")
    .into_inner();
    assert!(released.success, "{released:?}");
    assert!(check(&a, &["A2"]).await.available);

    // Another pod's write shows once the copy is older than its age: 300 ms for `c`.
    assert!(lock(&b, &["A3"], "third-booking").await.success);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let seen = check(&c, &["A3"]).await;
    assert!(!seen.available, "{seen:?}");

    // Unknown seats are still explained by PostgreSQL while a copy is held.
    loaded(&boards).await;
    let unknown = CinemaService::check_seat_availability(
        &a,
        tonic::Request::new(proto::CheckSeatAvailabilityRequest {
            showtime_id: showtime.clone(),
            seat_numbers: seats(&["Z99"]),
        }),
    )
    .await
    .expect_err("an unknown seat is refused");
    assert_eq!(unknown.code(), Code::InvalidArgument, "{unknown:?}");
    svc.stop().await;
}
