//! `make bench-cinema`: load on the cinema gRPC contract.
//!
//! Starts the real service in-process on ephemeral ports with its own database on the
//! PostgreSQL of `DATABASE_URL` (created and dropped here), then measures, each phase bounded
//! in time:
//! 1. CheckSeatAvailability (4 seats per call);
//! 2. LockSeats + ReleaseSeatLock pairs, every worker on its own seats;
//! 3. a flash sale: 1,000 concurrent clients race for the 100 seats of one showtime (lock,
//!    then confirm); exactly 100 seats must be sold.
//!
//! Prints requests/s and p50/p99 per phase and the machine. Knobs: `BENCH_SECONDS` (per
//! phase, default 10), `BENCH_CONCURRENCY` (in-flight requests, default 24),
//! `BENCH_CONNECTIONS` (HTTP/2 connections, default 4), `DB_MAX_CONNECTIONS` (the service's
//! pool, default 16: on 2 cores more PostgreSQL backends only add context switches),
//! `SEAT_CACHE_MS` (the age of CheckSeatAvailability's seat-board copy, as in the service;
//! 0 measures every check against PostgreSQL).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use cinema_service::{
    Config,
    domain::{Layout, row_label},
    store,
    testdb::TestDb,
};
use moviebook_common::{
    auth::{BOOKING_SERVICE, JwtKeys},
    grpc_auth::{AuthedChannel, ServiceBearer},
    proto::{self, cinema_service_client::CinemaServiceClient},
};
use tonic::transport::Channel;
use uuid::Uuid;

/// A client as the booking service is one (cinema takes gRPC calls from booking alone).
type Client = CinemaServiceClient<AuthedChannel>;

async fn connect(url: &str, bearer: &ServiceBearer) -> anyhow::Result<Client> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    Ok(CinemaServiceClient::with_interceptor(
        channel,
        bearer.clone(),
    ))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid number")),
        _ => Ok(default),
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or_else(String::new, |kb| {
            format!(", {:.1} GiB RAM", kb as f64 / 1048576.0)
        });
    format!("{cores} cores (nproc), {cpu}{mem}")
}

/// The bench database's name: only its PostgreSQL backends are counted (other tests may use
/// the same server).
static BENCH_DB: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// CPU seconds (user + system) of processes from `/proc/<pid>/stat` (USER_HZ is 100 on
/// Linux): this process, and the PostgreSQL backends serving the bench database.
fn cpu_seconds() -> (f64, f64) {
    let db = BENCH_DB.get().map(String::as_str).unwrap_or("\u{0}");
    fn ticks(stat: &str) -> Option<(String, f64)> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((comm, (utime + stime) / 100.0))
    }
    let me = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| ticks(&s))
        .map_or(0.0, |(_, t)| t);
    let mut pg = 0.0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
                && let Some((comm, t)) = ticks(&stat)
                && comm == "postgres"
                && std::fs::read(entry.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(db))
            {
                pg += t;
            }
        }
    }
    (me, pg)
}

struct Stats {
    name: String,
    count: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// CPU seconds spent by this process (service + client) and by PostgreSQL.
    cpu: (f64, f64),
}

impl Stats {
    /// Operations per second.
    fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The nearest-rank percentile `p` (0–1) in milliseconds; call after [`Stats::print`].
    fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i =
            ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[i].as_secs_f64() * 1000.0
    }

    fn print(&mut self) {
        self.latencies.sort();
        let pct = |p: f64| self.pct(p);
        println!(
            "{:<40} {:>8} ok {:>5} err in {:>5.1}s  {:>9.0} /s   p50 {:>7.2} ms   p99 {:>7.2} ms",
            self.name,
            self.count,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.count as f64 / self.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
        );
        let n = self.count.max(1) as f64;
        println!(
            "{:<40} CPU per op: service+client {:.0} us, PostgreSQL backends {:.0} us",
            "",
            self.cpu.0 / n * 1e6,
            self.cpu.1 / n * 1e6,
        );
    }
}

/// Runs `op(worker, iteration)` from `concurrency` workers for `duration`; each call counts as
/// one operation whose latency is recorded.
async fn closed_loop<F, Fut>(
    name: &str,
    clients: &[Client],
    concurrency: usize,
    duration: Duration,
    op: F,
) -> Stats
where
    F: Fn(Client, usize, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let tasks: Vec<_> = (0..concurrency)
        .map(|w| {
            let client = clients[w % clients.len()].clone();
            let op = op.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(4096);
                let mut errors = 0;
                let mut i = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match op(client.clone(), w, i).await {
                        Ok(()) => lat.push(t.elapsed()),
                        Err(e) => {
                            if errors == 0 {
                                eprintln!("worker {w}: {e:#}");
                            }
                            errors += 1;
                        }
                    }
                    i += 1;
                }
                (lat, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            latencies.extend(l);
            errors += e;
        }
    }
    let cpu1 = cpu_seconds();
    Stats {
        name: name.to_owned(),
        count: latencies.len(),
        errors,
        elapsed: start.elapsed(),
        latencies,
        cpu: (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1),
    }
}

async fn fixture(pool: &sqlx::PgPool, name: &str, layout: &Layout) -> anyhow::Result<Uuid> {
    let cinema = store::upsert_cinema(pool, None, &format!("Bench {name}"), "Benchville").await?;
    let screen = store::create_screen(pool, cinema.id, "Screen", layout).await?;
    let movie = store::upsert_movie(
        pool,
        None,
        &store::MovieInput {
            title: format!("Bench {name}"),
            description: String::new(),
            genre: "Drama".into(),
            duration_minutes: 120,
            rating: "PG".into(),
            poster_url: String::new(),
            release_date: None,
        },
    )
    .await?;
    let st = store::create_showtime(
        pool,
        movie.id,
        screen.id,
        &store::ShowtimeInput {
            start_time: chrono::Utc::now() + chrono::Duration::days(1),
            end_time: None,
            base_price_cents: 1000,
        },
    )
    .await?;
    Ok(st.id)
}

/// Gives the database the shape of one that has been selling for a while: a past showtime
/// sold out through 3,200 confirmed holds, 20,000 released holds, and planner statistics.
///
/// Measured without it, the benchmark reports the first minute of a new database instead:
/// with empty tables at ANALYZE time (or none yet) the planner picks sequential scans of
/// `seat_locks` and guesses that a showtime has a handful of seats, every pooled connection
/// caches those generic plans, and each request then reads every hold and seat as the
/// tables grow (0.65 ms instead of 0.05 ms per availability check). In production
/// autovacuum analyses the tables (migration 0002 makes it do so early) and the cached plans
/// are replaced; this reproduces that state before measuring.
async fn history(pool: &sqlx::PgPool, layout: &Layout) -> anyhow::Result<()> {
    let past = fixture(pool, "history", layout).await?;
    sqlx::query(
        "WITH holds AS ( \
           INSERT INTO seat_locks (id, booking_id, showtime_id, seat_numbers, status, expires_at) \
           SELECT gen_random_uuid(), 'history-' || s.seat_number, s.showtime_id, \
             ARRAY[s.seat_number], 'CONFIRMED', now() \
           FROM seats s WHERE s.showtime_id = $1 \
           RETURNING id, seat_numbers[1] AS seat_number, booking_id) \
         UPDATE seats s SET status = 'BOOKED', lock_id = h.id, booking_id = h.booking_id, \
           booked_by = 'history' \
         FROM holds h WHERE s.showtime_id = $1 AND s.seat_number = h.seat_number",
    )
    .bind(past)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO seat_locks (id, booking_id, showtime_id, seat_numbers, status, expires_at) \
         SELECT gen_random_uuid(), 'released-' || g, $1, ARRAY['A1'], 'RELEASED', now() \
         FROM generate_series(1, 20000) g",
    )
    .bind(past)
    .execute(pool)
    .await?;
    store::analyze(pool).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = env_or("BENCH_SECONDS", 10)?;
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 24)?;
    let connections: usize = env_or("BENCH_CONNECTIONS", 4)?.max(1);
    let duration = Duration::from_secs(seconds.clamp(1, 120));
    let base_url = std::env::var("DATABASE_URL")
        .context("DATABASE_URL must point at a PostgreSQL server (make bench-cinema sets it)")?;

    println!("cinema-service benchmark");
    println!("machine: {}", machine());
    println!(
        "build: {}; service, client and PostgreSQL on the same machine",
        if cfg!(debug_assertions) {
            "dev profile (our code opt-level 1): use `make bench-cinema` for release numbers"
        } else {
            "release profile"
        }
    );
    println!(
        "phases of {}s, {concurrency} requests in flight over {connections} HTTP/2 connections",
        duration.as_secs()
    );

    let db = TestDb::create(&base_url, "moviebook_cinema_bench").await?;
    let _ = BENCH_DB.set(db.url.rsplit('/').next().unwrap_or_default().to_owned());
    let mut config = Config::for_database(&db.url);
    config.db_max_connections = env_or("DB_MAX_CONNECTIONS", 16)?.max(1);
    config.seat_cache_ttl = Duration::from_millis(env_or(
        "SEAT_CACHE_MS",
        cinema_service::config::SEAT_CACHE_MS,
    )?);
    println!(
        "CheckSeatAvailability's seat-board copy: {} (SEAT_CACHE_MS)",
        if config.seat_cache_ttl.is_zero() {
            "off".to_owned()
        } else {
            format!("up to {} ms old", config.seat_cache_ttl.as_millis())
        }
    );
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc_url = format!("http://{}", grpc.local_addr()?);
    println!(
        "service pool: {} PostgreSQL connections\n",
        config.db_max_connections
    );
    let bearer = ServiceBearer::new(
        std::sync::Arc::new(JwtKeys::new(
            &config.jwt_secret,
            &config.jwt_issuer,
            Duration::from_secs(3600),
        )),
        BOOKING_SERVICE,
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cinema_service::run(config, http, grpc, async move {
        let _ = stop_rx.await;
    }));
    let pool = store::pool(&db.url, 2, Duration::from_secs(10))?;

    // 40 rows × 80 seats: every lock worker gets seats of its own.
    let big = fixture(&pool, "big", &Layout::simple(40, 80, 10, 4)).await?;
    let flash = fixture(&pool, "flash", &Layout::simple(4, 25, 1, 1)).await?;
    history(&pool, &Layout::simple(40, 80, 10, 4)).await?;

    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(connect(&grpc_url, &bearer).await?);
    }

    // 1. availability
    let big_s = big.to_string();
    let mut check = closed_loop(
        "CheckSeatAvailability (4 seats)",
        &clients,
        concurrency,
        duration,
        move |mut c, w, i| {
            let showtime = big_s.clone();
            async move {
                let row = row_label((w + i) % 40);
                let first = 1 + (i * 7 + w) % 76;
                let seats = (first..first + 4).map(|n| format!("{row}{n}")).collect();
                c.check_seat_availability(proto::CheckSeatAvailabilityRequest {
                    showtime_id: showtime,
                    seat_numbers: seats,
                })
                .await?;
                Ok(())
            }
        },
    )
    .await;
    check.print();

    // 2. lock + release pairs on distinct seats: worker w cycles through its own seats.
    let big_s = big.to_string();
    let seats_per_worker = (3200 / concurrency.max(1)).max(1);
    let mut pairs = closed_loop(
        "LockSeats + ReleaseSeatLock (pair, 2 seats)",
        &clients,
        concurrency,
        duration,
        move |mut c, w, i| {
            let showtime = big_s.clone();
            async move {
                let seat = |k: usize| {
                    let idx = (w * seats_per_worker + k % seats_per_worker) % 3200;
                    format!("{}{}", row_label(idx / 80), idx % 80 + 1)
                };
                let mut seats = vec![seat(2 * i), seat(2 * i + 1)];
                seats.dedup();
                let booking = format!("bench-{w}-{i}-{}", Uuid::new_v4().simple());
                let lock = c
                    .lock_seats(proto::LockSeatsRequest {
                        showtime_id: showtime,
                        seat_numbers: seats,
                        booking_id: booking.clone(),
                        lock_duration_seconds: 60,
                    })
                    .await?
                    .into_inner();
                anyhow::ensure!(lock.success, "lock failed: {}", lock.message);
                let rel = c
                    .release_seat_lock(proto::ReleaseSeatLockRequest {
                        lock_id: lock.lock_id,
                        booking_id: booking,
                    })
                    .await?
                    .into_inner();
                anyhow::ensure!(rel.success, "release failed: {}", rel.message);
                Ok(())
            }
        },
    )
    .await;
    pairs.print();

    // 3. flash sale
    const BUYERS: usize = 1000;
    const SEATS: usize = 100;
    let flash_clients: Vec<Client> = {
        let mut v = Vec::new();
        for _ in 0..(BUYERS / 5) {
            v.push(connect(&grpc_url, &bearer).await?);
        }
        v
    };
    let all_seats: Arc<Vec<String>> = Arc::new(
        Layout::simple(4, 25, 1, 1)
            .seats(1000)
            .into_iter()
            .map(|s| s.seat_number)
            .collect(),
    );
    let sold = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(AtomicUsize::new(0));
    let sold_out = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(tokio::sync::Barrier::new(BUYERS + 1));
    let flash_s = flash.to_string();
    let sellout_deadline = Duration::from_secs(60);
    let mut tasks = Vec::new();
    for b in 0..BUYERS {
        let mut c = flash_clients[b % flash_clients.len()].clone();
        let (seats, sold, attempts, sold_out, barrier, showtime) = (
            all_seats.clone(),
            sold.clone(),
            attempts.clone(),
            sold_out.clone(),
            barrier.clone(),
            flash_s.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let start = Instant::now();
            let mut k = b.wrapping_mul(7919);
            // Each buyer tries seats until it has one or the show is sold out.
            while !sold_out.load(Ordering::Relaxed) && start.elapsed() < sellout_deadline {
                let seat = seats[k % SEATS].clone();
                k = k.wrapping_add(37);
                attempts.fetch_add(1, Ordering::Relaxed);
                let booking = format!("flash-{b}-{k}");
                let Ok(lock) = c
                    .lock_seats(proto::LockSeatsRequest {
                        showtime_id: showtime.clone(),
                        seat_numbers: vec![seat],
                        booking_id: booking.clone(),
                        lock_duration_seconds: 60,
                    })
                    .await
                else {
                    continue;
                };
                let lock = lock.into_inner();
                if !lock.success {
                    continue;
                }
                let Ok(confirm) = c
                    .confirm_seat_booking(proto::ConfirmSeatBookingRequest {
                        lock_id: lock.lock_id,
                        booking_id: booking,
                        user_id: format!("buyer-{b}"),
                    })
                    .await
                else {
                    continue;
                };
                if confirm.into_inner().success {
                    if sold.fetch_add(1, Ordering::SeqCst) + 1 >= SEATS {
                        sold_out.store(true, Ordering::SeqCst);
                    }
                    return Some(start.elapsed());
                }
            }
            None
        }));
    }
    barrier.wait().await;
    let t0 = Instant::now();
    let mut buyer_latencies = Vec::new();
    for t in tasks {
        if let Ok(Some(l)) = t.await {
            buyer_latencies.push(l);
        }
    }
    let all_done = t0.elapsed();
    let sellout = buyer_latencies.iter().max().copied().unwrap_or_default();
    let booked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM seats WHERE showtime_id = $1 AND status = 'BOOKED'",
    )
    .bind(flash)
    .fetch_one(&pool)
    .await?;
    let distinct_buyers: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT booked_by) FROM seats WHERE showtime_id = $1 AND status = 'BOOKED'",
    )
    .bind(flash)
    .fetch_one(&pool)
    .await?;
    println!(
        "flash sale: {BUYERS} concurrent clients for {SEATS} seats: {} confirmed, {booked} seats BOOKED in PostgreSQL ({distinct_buyers} distinct buyers), sold out in {:.0} ms ({} lock attempts, all clients done in {:.0} ms)",
        sold.load(Ordering::SeqCst),
        sellout.as_secs_f64() * 1000.0,
        attempts.load(Ordering::SeqCst),
        all_done.as_secs_f64() * 1000.0,
    );
    let exact = booked == SEATS as i64 && sold.load(Ordering::SeqCst) == SEATS;
    println!(
        "flash sale sold exactly {SEATS} seats: {}",
        if exact { "yes" } else { "NO" }
    );
    println!(
        "bench-cinema: checkSeatAvailability={:.0}/s p99={:.2}ms lockRelease={:.0}/s p99={:.2}ms flashSale={booked}/{SEATS}",
        check.rate(),
        check.pct(0.99),
        pairs.rate(),
        pairs.pct(0.99),
    );

    drop(clients);
    drop(flash_clients);
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
    pool.close().await;
    drop(db);
    anyhow::ensure!(exact, "the flash sale did not sell exactly {SEATS} seats");
    Ok(())
}
