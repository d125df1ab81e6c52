//! Booking's cinema client against several REAL cinema servers, as it meets the pods behind a
//! Kubernetes headless Service: calls spread over every address the name resolves to, and a
//! read that meets an unavailable pod (gone, or shutting down) is answered by the next one.
//!
//! The two cinema servers are told apart by their data: one has the sample catalogue, the other
//! an empty one, so which pod answered shows in the answer.

mod common;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use booking_service::clients::{CinemaClient, Resolver};
use cinema_service::testdb::TestDb;
use moviebook_common::shutdown;
use tokio::net::TcpListener;

struct Cinema {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _db: TestDb,
}

async fn cinema(seeded: bool) -> Cinema {
    let db = TestDb::create(&common::env("DATABASE_URL"), "moviebook_cinema_test")
        .await
        .expect("cinema test database");
    if seeded {
        let pool = cinema_service::store::pool(&db.url, 2, Duration::from_secs(10)).expect("pool");
        cinema_service::seed::run(&pool).await.expect("seed");
        pool.close().await;
    }
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = grpc.local_addr().expect("addr");
    let (stop, rx) = shutdown::channel();
    let task = tokio::spawn(cinema_service::run(
        cinema_service::Config::for_database(&db.url),
        http,
        grpc,
        shutdown::wait(rx),
    ));
    Cinema {
        addr,
        stop,
        task,
        _db: db,
    }
}

/// An address nothing listens on (a pod that is gone).
async fn dead_address() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

/// Booking's service token, as cinema requires on every gRPC call.
fn bearer() -> moviebook_common::grpc_auth::ServiceBearer {
    moviebook_common::grpc_auth::ServiceBearer::new(
        Arc::new(moviebook_common::auth::JwtKeys::new(
            &cinema_service::Config::for_database("postgres://unused").jwt_secret,
            &cinema_service::Config::for_database("postgres://unused").jwt_issuer,
            Duration::from_secs(60),
        )),
        moviebook_common::auth::BOOKING_SERVICE,
    )
}

fn resolver(addrs: Vec<SocketAddr>) -> Resolver {
    Arc::new(move |_, _| {
        let addrs = addrs.clone();
        Box::pin(async move { Ok(addrs) })
    })
}

#[tokio::test]
async fn reads_spread_over_every_pod_and_fail_over_to_the_next() {
    let full = cinema(true).await;
    let empty = cinema(false).await;
    let dead = dead_address().await;
    let client = CinemaClient::with_resolver(
        "http://cinema-grpc.moviebook.svc:9090",
        Duration::from_secs(5),
        Duration::from_secs(1),
        resolver(vec![full.addr, dead, empty.addr]),
        bearer(),
    )
    .expect("client");

    // Both servers answer (the empty catalogue and the full one both show up), and no call
    // fails although one address in three is dead: each such call moved to the next pod.
    let (mut from_full, mut from_empty) = (0, 0);
    for i in 0..30 {
        let movies = client
            .list_movies(None, 50, 0)
            .await
            .unwrap_or_else(|e| panic!("call {i} failed: {e:?}"));
        if movies.movies.is_empty() {
            from_empty += 1;
        } else {
            from_full += 1;
        }
    }
    assert!(
        from_full >= 5 && from_empty >= 5,
        "calls must spread over both pods: {from_full} from the seeded one, {from_empty} from the empty one"
    );
    let mut addrs = client.addresses();
    addrs.sort();
    let mut want = vec![full.addr, dead, empty.addr];
    want.sort();
    assert_eq!(addrs, want);

    // One pod stops (its address is still listed, as right after a rolling update began):
    // every read is still answered, now by the other one.
    full.stop.send(true).expect("stop");
    full.task
        .await
        .expect("join")
        .expect("cinema stopped cleanly");
    for i in 0..20 {
        let movies = client
            .list_movies(None, 50, 0)
            .await
            .unwrap_or_else(|e| panic!("call {i} after the stop failed: {e:?}"));
        assert!(movies.movies.is_empty(), "only the empty cinema is left");
    }
    let _ = empty.stop.send(true);
}

/// The rolling-update case: every address this process knows is gone (both pods were
/// replaced between two refreshes); the resolver's next answer names the pod that replaced
/// them. A read waits for the fresh list instead of failing, and readiness follows.
#[tokio::test]
async fn a_read_survives_a_list_naming_only_pods_that_are_gone() {
    let live = cinema(true).await;
    let gone = [dead_address().await, dead_address().await];
    let answers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let resolve: Resolver = {
        let answers = answers.clone();
        let live = live.addr;
        Arc::new(move |_, _| {
            let n = answers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Box::pin(async move { Ok(if n == 0 { gone.to_vec() } else { vec![live] }) })
        })
    };
    let client = CinemaClient::with_resolver(
        "http://cinema-grpc.moviebook.svc:9090",
        Duration::from_secs(5),
        Duration::from_secs(3600),
        resolve,
        bearer(),
    )
    .expect("client");
    let movies = client
        .list_movies(None, 50, 0)
        .await
        .expect("answered by the pod of the fresh list");
    assert!(!movies.movies.is_empty());
    assert_eq!(client.addresses(), [live.addr]);
    assert!(client.reached().await.is_ok());
    let _ = live.stop.send(true);
}

/// A write is never retried by the client (its outcome is the booking's to reconcile): with
/// only a gone pod known it fails at once, without waiting for a fresh list.
#[tokio::test]
async fn a_lock_is_not_retried_on_a_fresh_list() {
    let gone = dead_address().await;
    let client = CinemaClient::with_resolver(
        "http://cinema-grpc.moviebook.svc:9090",
        Duration::from_secs(5),
        Duration::from_secs(3600),
        resolver(vec![gone]),
        bearer(),
    )
    .expect("client");
    let started = std::time::Instant::now();
    let err = client
        .lock_seats("s1", &["A1".to_owned()], "b1", Duration::from_secs(60))
        .await
        .expect_err("nothing listens");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "no backoff for a write: {:?}",
        started.elapsed()
    );
}
