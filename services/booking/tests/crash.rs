//! Crash tests: the real `booking-service` process is killed with SIGKILL between two durable
//! steps of a payment or a cancellation, then a fresh process is started on the same
//! database. Once its sweeper has run, every booking is in a consistent final state and the
//! reconciliation audit (the oracle) finds nothing wrong.
//!
//! The process stops exactly at a step boundary because `BOOKING_CRASH_POINT` arms that
//! point: it prints `CRASH_POINT <name>` and waits there; the test then kills it. A timed kill
//! would land wherever it lands and prove little.
//!
//! The same boundaries with MongoDB cut off instead: the process reaches the point with
//! `BOOKING_CRASH_PAUSE`, the test cuts its MongoDB connection (a proxy in front of the
//! server drops every connection and refuses new ones), lets it go on, and the request's next
//! write fails. The answer is a coded error, never a success; once the store is back, the
//! reconciler carries the booking to its end.

mod common;

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Booked, CANCEL, Options, PAY, Stack};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
    sync::Mutex,
    task::JoinSet,
};

/// A `booking-service` process on an ephemeral port of 127.0.0.1, sharing the stack's
/// database and services.
struct Booking {
    child: Child,
    graphql: String,
    stderr: Option<tokio::process::ChildStderr>,
}

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    l.local_addr().expect("addr").port()
}

impl Booking {
    async fn start(stack: &Stack, crash_point: Option<&str>, sweeper: bool) -> Self {
        Self::start_with(stack, &stack.booking_db_url, crash_point, false, sweeper).await
    }

    /// `mongodb_url` is the booking database (perhaps through a [`StoreProxy`]); `pause` makes
    /// the crash point go on at SIGUSR1 instead of waiting to be killed.
    async fn start_with(
        stack: &Stack,
        mongodb_url: &str,
        crash_point: Option<&str>,
        pause: bool,
        sweeper: bool,
    ) -> Self {
        let port = free_port().await;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_booking-service"));
        cmd.env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("MONGODB_URL", mongodb_url)
            .env("BOOKING_CRASH_PAUSE", pause.to_string())
            .env("RABBITMQ_URL", common::env("RABBITMQ_URL"))
            .env("CINEMA_GRPC_URL", &stack.cinema_grpc)
            .env("USER_SERVICE_URL", &stack.user_url)
            .env("PAYMENT_SERVICE_URL", &stack.payment_url)
            .env("SWEEPER_ENABLED", sweeper.to_string())
            .env("SWEEP_INTERVAL_SECONDS", "1")
            .env("RUST_LOG", "warn")
            .env_remove("BOOKING_CRASH_POINT")
            .stdout(Stdio::null())
            .kill_on_drop(true);
        // Only a process that is to stop at a point has its stderr read; the others' goes to
        // the test's output (an unread pipe would fill up and block the process).
        if let Some(p) = crash_point {
            cmd.env("BOOKING_CRASH_POINT", p).stderr(Stdio::piped());
        } else {
            cmd.stderr(Stdio::inherit());
        }
        let mut child = cmd.spawn().expect("start booking-service");
        let stderr = child.stderr.take();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let mut ready = false;
        for _ in 0..300 {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("booking-service exited at start: {status}");
            }
            if let Ok(r) = http.get(format!("{base}/ready")).send().await
                && r.status().is_success()
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "booking-service on {base} never became ready");
        Self {
            child,
            graphql: format!("{base}/graphql"),
            stderr,
        }
    }

    /// Waits until the process reports that it stopped at `point`.
    async fn reached(&mut self, point: &str) {
        let stderr = self.stderr.take().expect("stderr is read once");
        let mut lines = BufReader::new(stderr).lines();
        // Whatever the process prints after the line is drained in the background, so that a
        // process that goes on (a paused point) never blocks on a full pipe.
        let drain = |mut lines: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>| {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        };
        let want = format!("CRASH_POINT {point}");
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains(&want) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "booking-service never reached {point}");
        drain(lines);
    }

    /// Lets a paused point go on (SIGUSR1).
    fn resume(&self) {
        let pid = self.child.id().expect("the process runs").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-USR1", &pid])
            .status()
            .expect("kill -USR1");
        assert!(sent.success(), "kill -USR1 {pid}: {sent}");
    }

    /// SIGKILL: no destructor, no flush, no graceful shutdown.
    async fn kill9(mut self) {
        self.child.kill().await.expect("kill -9");
    }
}

/// A TCP proxy in front of the MongoDB server that the test can cut: `cut` drops every
/// connection through it and refuses new ones, which is what a store outage (or a network
/// partition) looks like to the driver, without stopping the server the other tests share.
struct StoreProxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl StoreProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let links = Arc::new(Mutex::new(JoinSet::new()));
        let accept = tokio::spawn({
            let (up, links) = (up.clone(), links.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: connection reset
                    }
                    let upstream = upstream.clone();
                    links.lock().await.spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            }
        });
        Self {
            addr,
            up,
            links,
            accept,
        }
    }

    /// Every open connection dropped, every new one refused.
    async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.links.lock().await.abort_all();
    }
}

impl Drop for StoreProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// `url` (mongodb://host:port/db?query) with its host and port replaced by `addr`, short
/// driver timeouts so that a cut store fails a request within seconds, and
/// `directConnection=true`: otherwise the driver learns the server's own address from its
/// `hello` answer and connects there, around the proxy.
fn through(url: &str, addr: std::net::SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a mongodb:// URL");
    let path = rest.find(['/', '?']).map_or("", |i| &rest[i..]);
    let sep = if path.contains('?') { '&' } else { '?' };
    let path = if path.is_empty() { "/" } else { path };
    format!(
        "{scheme}://{addr}{path}{sep}directConnection=true&serverSelectionTimeoutMS=1500&connectTimeoutMS=1500"
    )
}

/// The host:port of a mongodb:// URL.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

async fn gql(url: &str, token: &str, query: &str, variables: Value) -> reqwest::Result<Value> {
    reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .timeout(Duration::from_secs(60))
        .send()
        .await?
        .json()
        .await
}

/// Where the crash happens and what the booking must end as after the restart.
struct Case {
    point: &'static str,
    /// Cancel a CONFIRMED booking (else: pay a held one).
    cancel: bool,
    /// The cinema's hold lapses before the payment, so the charge must be refunded.
    hold_lapsed: bool,
    ends: &'static [&'static str],
    seats: &'static str,
}

/// Brings a held booking to where its case starts: paid (CONFIRMED) for a cancellation, and
/// with the cinema's hold lapsed when the charge is to be refunded.
async fn prepare(stack: &Stack, token: &str, case: &Case, id: &str) {
    if case.cancel {
        let (_, body) = stack
            .gql(Some(token), PAY, json!({"b": id, "m": "credit_card"}))
            .await;
        assert_eq!(
            body["data"]["processPayment"]["booking"]["status"], "CONFIRMED",
            "{body}"
        );
    }
    if case.hold_lapsed {
        stack.lapse_cinema_hold(id).await;
    }
}

/// The request that runs into the case's point: cancelBooking or processPayment.
fn request(case: &Case, id: &str) -> (&'static str, Value) {
    if case.cancel {
        (CANCEL, json!({"b": id}))
    } else {
        (PAY, json!({"b": id, "m": "credit_card"}))
    }
}

const CASES: &[Case] = &[
    Case {
        point: "pay.after_claim",
        cancel: false,
        hold_lapsed: false,
        ends: &["EXPIRED"],
        seats: "AVAILABLE",
    },
    Case {
        point: "pay.after_charge",
        cancel: false,
        hold_lapsed: false,
        ends: &["CONFIRMED"],
        seats: "BOOKED",
    },
    Case {
        point: "pay.after_seats_confirmed",
        cancel: false,
        hold_lapsed: false,
        ends: &["CONFIRMED"],
        seats: "BOOKED",
    },
    Case {
        point: "pay.after_refund_intent",
        cancel: false,
        hold_lapsed: true,
        ends: &["REFUNDED"],
        seats: "AVAILABLE",
    },
    Case {
        point: "pay.after_refund",
        cancel: false,
        hold_lapsed: true,
        // The refund happened before the crash: the restart finds no money left to give back.
        ends: &["REFUNDED", "EXPIRED"],
        seats: "AVAILABLE",
    },
    Case {
        point: "cancel.after_mark",
        cancel: true,
        hold_lapsed: false,
        ends: &["CANCELLED"],
        seats: "AVAILABLE",
    },
    Case {
        point: "cancel.after_refund",
        cancel: true,
        hold_lapsed: false,
        ends: &["CANCELLED"],
        seats: "AVAILABLE",
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_between_any_two_steps_loses_nothing() {
    let stack = Stack::start(Options {
        notification: false,
        sweeper: false,
        ..Options::default()
    })
    .await;
    let replica = stack.replica().await;
    let (user_id, token) = stack.user().await;

    let mut crashed = Vec::new();
    // Every case's seats are held before any hold is lapsed: a lapsed seat looks free, and a
    // later case booking it would make the seat checks below depend on which sweep ran first.
    let mut held = Vec::new();
    for _ in CASES {
        held.push(stack.book(&user_id, &token, 1).await);
    }
    for (case, booked) in CASES.iter().zip(held) {
        let Booked {
            showtime,
            seats,
            id,
            ..
        } = booked;
        prepare(&stack, &token, case, &id).await;
        let mut doomed = Booking::start(&stack, Some(case.point), false).await;
        let (query, vars) = request(case, &id);
        let url = doomed.graphql.clone();
        let token2 = token.clone();
        let request = tokio::spawn(async move { gql(&url, &token2, query, vars).await });
        doomed.reached(case.point).await;
        doomed.kill9().await;
        let answer = request.await.expect("request task");
        assert!(
            answer.is_err(),
            "{}: the killed process answered {answer:?}",
            case.point
        );
        crashed.push((case, id, showtime, seats));
    }

    settle_and_audit(&stack, &replica, &token, &crashed, 2).await;
    stack.stop().await;
}

/// A booking stopped at a step boundary: its case, id, showtime and seats.
type Stopped<'a> = (&'a Case, String, String, Vec<String>);

/// Time passes (holds, PAYING claims and unfinished cancellations are all due), and a fresh
/// process with its sweeper, on the real store, carries every booking to its end: each ends as
/// its case says, with its seats as they must be, and the audit finds nothing wrong, with one
/// net charge per CONFIRMED booking (`confirmed` of them) and none elsewhere.
async fn settle_and_audit(
    stack: &Stack,
    replica: &booking_service::service::Booker,
    token: &str,
    stopped: &[Stopped<'_>],
    confirmed: usize,
) {
    for (_, id, ..) in stopped {
        stack.age(id).await;
        stack.age_cancellation(id).await;
    }
    let survivor = Booking::start(stack, None, true).await;
    for (case, id, showtime, seats) in stopped {
        let mut status = String::new();
        for _ in 0..150 {
            status = stack.booking_status(token, id).await;
            if case.ends.contains(&status.as_str()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            case.ends.contains(&status.as_str()),
            "{}: ended {status}, want one of {:?}",
            case.point,
            case.ends
        );
        let statuses = stack.seat_statuses(showtime).await;
        for s in seats {
            assert_eq!(statuses[s], case.seats, "{}: seat {s}", case.point);
        }
    }
    // The restarted sweeper may still be finishing a compensation: give the audit a moment to
    // agree, then insist.
    for _ in 0..50 {
        let report = booking_service::audit::run(replica).await.expect("audit");
        if report.inconsistencies.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = common::audit_clean(replica, "after the restart").await;
    assert_eq!(
        report.by_status.get("CONFIRMED").copied().unwrap_or(0),
        confirmed,
        "{:?}",
        report.lines()
    );
    assert!(
        (report.net() - report.confirmed_total).abs() < 0.005,
        "one net charge per CONFIRMED booking and none elsewhere: {:?}",
        report.lines()
    );
    survivor.kill9().await;
}

/// Where MongoDB goes away, and what the booking must end as once it is back. Every write
/// after the point fails, so the request stops with what the other services already did: a
/// charge (rolled forward: the seats were confirmed, or the hold still stands), a refund, seats
/// returned; the reconciler finishes from there.
const STORE_CASES: &[Case] = &[
    Case {
        point: "pay.after_claim",
        cancel: false,
        hold_lapsed: false,
        ends: &["CONFIRMED"],
        seats: "BOOKED",
    },
    Case {
        point: "pay.after_charge",
        cancel: false,
        hold_lapsed: false,
        ends: &["CONFIRMED"],
        seats: "BOOKED",
    },
    Case {
        point: "pay.after_seats_confirmed",
        cancel: false,
        hold_lapsed: false,
        ends: &["CONFIRMED"],
        seats: "BOOKED",
    },
    Case {
        point: "pay.after_refund_intent",
        cancel: false,
        hold_lapsed: true,
        ends: &["REFUNDED", "EXPIRED"],
        seats: "AVAILABLE",
    },
    Case {
        point: "pay.after_refund",
        cancel: false,
        hold_lapsed: true,
        ends: &["REFUNDED", "EXPIRED"],
        seats: "AVAILABLE",
    },
    Case {
        point: "cancel.after_mark",
        cancel: true,
        hold_lapsed: false,
        ends: &["CANCELLED"],
        seats: "AVAILABLE",
    },
    Case {
        point: "cancel.after_refund",
        cancel: true,
        hold_lapsed: false,
        ends: &["CANCELLED"],
        seats: "AVAILABLE",
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_unreachable_at_any_step_loses_nothing() {
    let stack = Stack::start(Options {
        notification: false,
        sweeper: false,
        ..Options::default()
    })
    .await;
    let replica = stack.replica().await;
    let (user_id, token) = stack.user().await;
    let mut held = Vec::new();
    for _ in STORE_CASES {
        held.push(stack.book(&user_id, &token, 1).await);
    }
    let mut stopped = Vec::new();
    for (case, booked) in STORE_CASES.iter().zip(held) {
        let Booked {
            showtime,
            seats,
            id,
            ..
        } = booked;
        prepare(&stack, &token, case, &id).await;
        let proxy = StoreProxy::start(authority(&stack.booking_db_url)).await;
        let url = through(&stack.booking_db_url, proxy.addr);
        let mut cut_off = Booking::start_with(&stack, &url, Some(case.point), true, false).await;
        let (query, vars) = request(case, &id);
        let graphql = cut_off.graphql.clone();
        let token2 = token.clone();
        let request = tokio::spawn(async move { gql(&graphql, &token2, query, vars).await });
        cut_off.reached(case.point).await;
        proxy.cut().await;
        cut_off.resume();
        let answer = request
            .await
            .expect("request task")
            .unwrap_or_else(|e| panic!("{}: no answer with the store cut off: {e}", case.point));
        let field = if case.cancel {
            "cancelBooking"
        } else {
            "processPayment"
        };
        let code = answer["errors"][0]["extensions"]["code"].as_str();
        assert!(
            answer["data"][field].is_null() && code.is_some(),
            "{}: with MongoDB cut off the request must fail with a code: {answer}",
            case.point
        );
        cut_off.kill9().await;
        stopped.push((case, id, showtime, seats));
    }
    settle_and_audit(&stack, &replica, &token, &stopped, 3).await;
    stack.stop().await;
}
