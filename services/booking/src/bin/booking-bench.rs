//! `booking-bench`: the createBooking and processPayment benchmark behind `make bench-booking`
//! (scripts/bench-booking.sh starts the stores and the five release services on their own
//! ports and data, then runs this against them).
//!
//! 1. signs up `--users` users (register + login over the user service's REST API);
//! 2. reads the catalogue over GraphQL and lists every free seat of the showtimes on sale,
//!    interleaved across showtimes, so no two requests ever ask for the same seat: every error
//!    is a failure, none is a business answer;
//! 3. createBooking phase: `--concurrency` closed-loop workers book one seat each per request
//!    for `--create-secs`;
//! 4. processPayment phase: the same workers pay the bookings of phase 3 for `--pay-secs` (or
//!    until none is left);
//! 5. after each phase waits until the processes it watches are idle again (the outbox relay,
//!    the notification worker and the stores finish the phase's events), so the CPU a request
//!    causes later is still counted against it.
//!
//! Cost: CPU time of every watched process (`--process name=pid`, its descendants included, from
//! /proc) per successful request, and store operations per request where the store reports
//! them (MongoDB `serverStatus` opcounters, PostgreSQL `pg_stat_database`, Redis
//! `total_commands_processed`). The last line of the output is the summary `make bench` shows:
//!
//! ```text
//! bench-booking: createBooking=<N>/s p99=<X>ms processPayment=<M>/s p99=<Y>ms cpu_per_booking=<C>ms
//! ```
//! Exit status 1 when any request failed: a number measured on errors is not a result.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::Mutex,
};

const MOVIES: &str = "{ movies { showtimes { id startTime availableSeats } } }";
const SEAT_MAP: &str = "query($id: ID!) { showtime(id: $id) { seats { seatNumber status } } }";
const CREATE: &str = "mutation($u: ID!, $s: ID!, $seats: [String!]!) { createBooking(userId: $u, showtimeId: $s, seatNumbers: $seats) { success booking { id status } } }";
const PAY: &str = "mutation($b: ID!) { processPayment(bookingId: $b, paymentMethod: \"credit_card\", paymentDetails: \"{\\\"card_number\\\":\\\"4111111111111111\\\"}\") { success booking { status } } }";

/// Linux reports /proc CPU times in USER_HZ ticks, 100 per second on every architecture
/// the kernel exposes to user space.
const TICKS_PER_SECOND: f64 = 100.0;

struct Args {
    graphql: String,
    user_url: String,
    users: usize,
    concurrency: usize,
    create_secs: u64,
    pay_secs: u64,
    processes: Vec<(String, u32)>,
    mongo_url: Option<String>,
    postgres_url: Option<String>,
    redis_addr: Option<String>,
}

fn usage() -> &'static str {
    "usage: booking-bench --graphql URL --user-url URL [--users N] [--concurrency N] \
     [--create-secs S] [--pay-secs S] [--process NAME=PID]... [--mongo-url URL] \
     [--postgres-url URL] [--redis-addr HOST:PORT]"
}

fn parse_args(mut it: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut a = Args {
        graphql: String::new(),
        user_url: String::new(),
        users: 64,
        concurrency: 32,
        create_secs: 10,
        pay_secs: 10,
        processes: vec![],
        mongo_url: None,
        postgres_url: None,
        redis_addr: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value; {}", usage()))
        };
        match flag.as_str() {
            "--graphql" => a.graphql = value()?,
            "--user-url" => a.user_url = value()?,
            "--users" => a.users = value()?.parse().context("--users")?,
            "--concurrency" => a.concurrency = value()?.parse().context("--concurrency")?,
            "--create-secs" => a.create_secs = value()?.parse().context("--create-secs")?,
            "--pay-secs" => a.pay_secs = value()?.parse().context("--pay-secs")?,
            "--process" => {
                let v = value()?;
                let (name, pid) = v
                    .split_once('=')
                    .with_context(|| format!("--process wants NAME=PID, got {v:?}"))?;
                a.processes
                    .push((name.to_owned(), pid.parse().context("--process PID")?));
            }
            "--mongo-url" => a.mongo_url = Some(value()?),
            "--postgres-url" => a.postgres_url = Some(value()?),
            "--redis-addr" => a.redis_addr = Some(value()?),
            other => bail!("unknown argument {other:?}; {}", usage()),
        }
    }
    if a.graphql.is_empty() || a.user_url.is_empty() {
        bail!("{}", usage());
    }
    if a.users == 0 || a.concurrency == 0 {
        bail!("--users and --concurrency must be at least 1");
    }
    Ok(a)
}

// ---- pure helpers ----------------------------------------------------------------------------

/// The nearest-rank percentile `p` (0–100) of `sorted` (ascending).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// CPU ticks (user + system, plus reaped children's) from the text of /proc/PID/stat, and the
/// parent PID. The command name (field 2) may hold spaces and parentheses: fields are counted
/// from the last `)`.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f
        .get(11..15)?
        .iter()
        .map(|v| v.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    Some((ppid, ticks))
}

/// Every seat of `maps` (showtime → free seats), taken one showtime after the other in turn,
/// so consecutive requests go to different showtimes.
fn interleave(maps: Vec<(String, Vec<String>)>) -> Vec<(String, String)> {
    let longest = maps.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(maps.iter().map(|(_, s)| s.len()).sum());
    for i in 0..longest {
        for (showtime, seats) in &maps {
            if let Some(seat) = seats.get(i) {
                out.push((showtime.clone(), seat.clone()));
            }
        }
    }
    out
}

// ---- measuring the processes -----------------------------------------------------------------

/// CPU ticks of each watched process and all its descendants, now.
fn cpu_ticks(processes: &[(String, u32)]) -> BTreeMap<String, u64> {
    let mut table: Vec<(u32, u32, u64)> = vec![];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((ppid, ticks)) = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
            {
                table.push((pid, ppid, ticks));
            }
        }
    }
    let mut out = BTreeMap::new();
    for (name, root) in processes {
        let mut members = vec![*root];
        let mut i = 0;
        while i < members.len() {
            let parent = members[i];
            members.extend(table.iter().filter(|t| t.1 == parent).map(|t| t.0));
            i += 1;
        }
        let total: u64 = table
            .iter()
            .filter(|t| members.contains(&t.0))
            .map(|t| t.2)
            .sum();
        *out.entry(name.clone()).or_insert(0) += total;
    }
    out
}

/// CPU ticks of this process (the load generator) so far.
fn own_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
        .map_or(0, |(_, ticks)| ticks)
}

/// Store operation counters that the stores report, by name.
async fn store_ops(args: &Args, pg: Option<&sqlx::PgPool>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if let Some(url) = &args.mongo_url
        && let Ok(client) = mongodb::Client::with_uri_str(url).await
        && let Ok(status) = client
            .database("admin")
            .run_command(bson::doc! { "serverStatus": 1 })
            .await
        && let Ok(ops) = status.get_document("opcounters")
    {
        for (k, v) in ops {
            let n = match v {
                bson::Bson::Int32(n) => u64::try_from(*n).unwrap_or(0),
                bson::Bson::Int64(n) => u64::try_from(*n).unwrap_or(0),
                bson::Bson::Double(n) => *n as u64,
                _ => continue,
            };
            out.insert(format!("mongo.{k}"), n);
        }
    }
    if let Some(pool) = pg {
        let row: Result<(i64, i64, i64, i64), _> = sqlx::query_as(
            "SELECT sum(xact_commit)::bigint, sum(tup_fetched + tup_returned)::bigint, \
             sum(tup_inserted)::bigint, sum(tup_updated)::bigint FROM pg_stat_database",
        )
        .fetch_one(pool)
        .await;
        if let Ok((commits, read, inserted, updated)) = row {
            for (k, v) in [
                ("pg.commits", commits),
                ("pg.rows_read", read),
                ("pg.rows_inserted", inserted),
                ("pg.rows_updated", updated),
            ] {
                out.insert(k.into(), u64::try_from(v).unwrap_or(0));
            }
        }
    }
    if let Some(addr) = &args.redis_addr
        && let Some(n) = redis_commands(addr).await
    {
        out.insert("redis.commands".into(), n);
    }
    out
}

/// Redis's `total_commands_processed` (our own INFO call counts too; it is one per sample).
async fn redis_commands(addr: &str) -> Option<u64> {
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    conn.write_all(b"INFO stats\r\n").await.ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let n = tokio::time::timeout(Duration::from_millis(500), conn.read(&mut buf[got..]))
            .await
            .ok()?
            .ok()?;
        got += n;
        let text = String::from_utf8_lossy(&buf[..got]);
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with("total_commands_processed:"))
        {
            return line.split(':').nth(1)?.trim().parse().ok();
        }
        if n == 0 || got == buf.len() {
            break;
        }
    }
    None
}

/// Waits until the watched processes use less than a tenth of a core over half a second (at
/// most `limit`): the work a phase queued (events, notifications) is then done.
async fn settle(processes: &[(String, u32)], limit: Duration) {
    let end = Instant::now() + limit;
    let mut last: u64 = cpu_ticks(processes).values().sum();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now: u64 = cpu_ticks(processes).values().sum();
        // 0.1 core over 0.5 s = 5 ticks.
        if now.saturating_sub(last) < 5 {
            return;
        }
        last = now;
    }
}

// ---- the load ---------------------------------------------------------------------------------

#[derive(Clone)]
struct Account {
    user_id: String,
    token: String,
}

/// A GraphQL call; `Err` carries the error code (or the transport failure) of a failed one.
async fn gql(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Result<Value, String> {
    let mut req = http
        .post(url)
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| format!("transport: {e}"))?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .map_err(|e| format!("HTTP {status}, unreadable body: {e}"))?;
    if let Some(err) = body["errors"].get(0) {
        let code = err["extensions"]["code"].as_str().unwrap_or("NO_CODE");
        return Err(format!("{code}: {}", err["message"].as_str().unwrap_or("")));
    }
    Ok(body)
}

async fn sign_up(http: &reqwest::Client, base: &str, n: usize) -> anyhow::Result<Account> {
    let email = format!("bench-{n}-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "bench-password-123";
    let r = http
        .post(format!("{base}/api/v1/register"))
        .json(&json!({"email": email, "password": password, "first_name": "Bench", "last_name": "User"}))
        .send()
        .await?;
    if r.status().as_u16() != 201 {
        bail!(
            "register answered {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    let body: Value = http
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?
        .json()
        .await?;
    match (body["user"]["id"].as_str(), body["token"].as_str()) {
        (Some(id), Some(token)) => Ok(Account {
            user_id: id.to_owned(),
            token: token.to_owned(),
        }),
        _ => bail!("login answered no token: {body}"),
    }
}

/// Free seats of every showtime that starts more than 30 minutes from now (sales close before).
async fn free_seats(http: &reqwest::Client, url: &str) -> anyhow::Result<Vec<(String, String)>> {
    let movies = gql(http, url, None, MOVIES, json!({}))
        .await
        .map_err(anyhow::Error::msg)?;
    let cutoff = chrono::Utc::now() + chrono::Duration::minutes(30);
    let showtimes: Vec<String> = movies["data"]["movies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["showtimes"].as_array())
        .flatten()
        .filter(|s| s["availableSeats"].as_i64().unwrap_or(0) > 0)
        .filter(|s| {
            s["startTime"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t > cutoff)
        })
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect();
    let mut maps = vec![];
    for id in showtimes {
        let map = gql(http, url, None, SEAT_MAP, json!({"id": id}))
            .await
            .map_err(anyhow::Error::msg)?;
        let seats: Vec<String> = map["data"]["showtime"]["seats"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["status"] == "AVAILABLE")
            .filter_map(|s| s["seatNumber"].as_str().map(str::to_owned))
            .collect();
        maps.push((id, seats));
    }
    Ok(interleave(maps))
}

/// What one phase measured.
#[derive(Default)]
struct Phase {
    latencies: Vec<Duration>,
    failures: BTreeMap<String, usize>,
    elapsed: Duration,
    cpu: BTreeMap<String, u64>,
    /// This process's own CPU ticks: the price of the load, kept out of the system's total.
    generator: u64,
    ops: BTreeMap<String, u64>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn failed(&self) -> usize {
        self.failures.values().sum()
    }
}

/// Runs `concurrency` workers for `secs`: each calls `request(i)` for its next job index `i`
/// (shared, so each job is done once) until the time is up or `request` answers `None`.
async fn run_phase<F, Fut>(concurrency: usize, secs: u64, request: F) -> Phase
where
    F: Fn(usize) -> Option<Fut> + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let request = Arc::new(request);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut workers = vec![];
    for _ in 0..concurrency {
        let (next, request) = (next.clone(), request.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = vec![];
            let mut failures: BTreeMap<String, usize> = BTreeMap::new();
            while Instant::now() < end {
                let Some(fut) = request(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                let t = Instant::now();
                match fut.await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => *failures.entry(e).or_default() += 1,
                }
            }
            (lat, failures)
        }));
    }
    let mut phase = Phase::default();
    for w in workers {
        if let Ok((lat, failures)) = w.await {
            phase.latencies.extend(lat);
            for (k, v) in failures {
                *phase.failures.entry(k).or_default() += v;
            }
        }
    }
    phase.elapsed = start.elapsed();
    phase.latencies.sort();
    phase
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(*before.get(k).unwrap_or(&0))))
        .collect()
}

fn report(name: &str, p: &Phase) {
    let n = p.latencies.len().max(1) as f64;
    println!(
        "{name}: {} ok, {} failed in {:.1} s = {:.0}/s; p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p.latencies.len(),
        p.failed(),
        p.elapsed.as_secs_f64(),
        p.rate(),
        percentile(&p.latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&p.latencies, 90.0).as_secs_f64() * 1e3,
        percentile(&p.latencies, 99.0).as_secs_f64() * 1e3,
        p.latencies
            .last()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3,
    );
    for (code, count) in &p.failures {
        println!("  failed {count}x: {code}");
    }
    let total: u64 = p.cpu.values().sum();
    println!("  CPU per request (µs), phase and the drain after it:");
    for (proc_name, ticks) in &p.cpu {
        println!(
            "    {proc_name:<14} {:>8.0}",
            *ticks as f64 / TICKS_PER_SECOND * 1e6 / n
        );
    }
    println!(
        "    {:<14} {:>8.0}",
        "total",
        total as f64 / TICKS_PER_SECOND * 1e6 / n
    );
    println!(
        "    {:<14} {:>8.0}  (the load generator itself, not in the total)",
        "bench",
        p.generator as f64 / TICKS_PER_SECOND * 1e6 / n
    );
    if !p.ops.is_empty() {
        println!("  store operations per request:");
        for (op, count) in &p.ops {
            println!("    {op:<18} {:>8.2}", *count as f64 / n);
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(Duration::from_secs(30))
        .build()?;
    let pg = match &args.postgres_url {
        Some(url) => Some(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .context("the PostgreSQL statistics connection")?,
        ),
        None => None,
    };

    println!("signing up {} users", args.users);
    let mut accounts = vec![];
    let mut pending = futures::stream::FuturesOrdered::new();
    for n in 0..args.users {
        pending.push_back(sign_up(&http, &args.user_url, n));
        if pending.len() >= 8 || n + 1 == args.users {
            while let Some(a) = futures::StreamExt::next(&mut pending).await {
                accounts.push(a?);
            }
        }
    }
    let seats = free_seats(&http, &args.graphql).await?;
    println!(
        "{} free seats to book; {} workers, createBooking {} s, processPayment {} s",
        seats.len(),
        args.concurrency,
        args.create_secs,
        args.pay_secs
    );
    if seats.is_empty() {
        bail!("no free seats: is the catalogue seeded and on sale?");
    }
    let accounts = Arc::new(accounts);
    let seats = Arc::new(seats);
    let booked: Arc<Mutex<Vec<(String, Account)>>> = Arc::default();
    settle(&args.processes, Duration::from_secs(20)).await;

    // Phase 1: createBooking.
    let (cpu0, ops0, own0) = (
        cpu_ticks(&args.processes),
        store_ops(&args, pg.as_ref()).await,
        own_ticks(),
    );
    let mut create = {
        let (http, url, accounts, seats, booked) = (
            http.clone(),
            args.graphql.clone(),
            accounts.clone(),
            seats.clone(),
            booked.clone(),
        );
        run_phase(args.concurrency, args.create_secs, move |i| {
            let (showtime, seat) = seats.get(i)?.clone();
            let account = accounts[i % accounts.len()].clone();
            let (http, url, booked) = (http.clone(), url.clone(), booked.clone());
            Some(async move {
                let vars = json!({"u": account.user_id, "s": showtime, "seats": [seat]});
                let body = gql(&http, &url, Some(&account.token), CREATE, vars).await?;
                let id = body["data"]["createBooking"]["booking"]["id"]
                    .as_str()
                    .ok_or_else(|| format!("createBooking answered no booking: {body}"))?;
                booked.lock().await.push((id.to_owned(), account));
                Ok(())
            })
        })
        .await
    };
    if create.latencies.len() >= seats.len().saturating_sub(args.concurrency) {
        println!("warning: the catalogue ran out of seats during the createBooking phase");
    }
    settle(&args.processes, Duration::from_secs(30)).await;
    let (cpu1, ops1, own1) = (
        cpu_ticks(&args.processes),
        store_ops(&args, pg.as_ref()).await,
        own_ticks(),
    );
    create.cpu = diff(&cpu1, &cpu0);
    create.generator = own1.saturating_sub(own0);
    create.ops = diff(&ops1, &ops0);

    // Phase 2: processPayment of those bookings.
    let to_pay = Arc::new(std::mem::take(&mut *booked.lock().await));
    let mut pay = {
        let (http, url, to_pay) = (http.clone(), args.graphql.clone(), to_pay.clone());
        run_phase(args.concurrency, args.pay_secs, move |i| {
            let (booking, account) = to_pay.get(i)?.clone();
            let (http, url) = (http.clone(), url.clone());
            Some(async move {
                let body = gql(
                    &http,
                    &url,
                    Some(&account.token),
                    PAY,
                    json!({"b": booking}),
                )
                .await?;
                match body["data"]["processPayment"]["booking"]["status"].as_str() {
                    Some("CONFIRMED") => Ok(()),
                    other => Err(format!("processPayment left the booking {other:?}")),
                }
            })
        })
        .await
    };
    settle(&args.processes, Duration::from_secs(30)).await;
    let (cpu2, ops2, own2) = (
        cpu_ticks(&args.processes),
        store_ops(&args, pg.as_ref()).await,
        own_ticks(),
    );
    pay.cpu = diff(&cpu2, &cpu1);
    pay.generator = own2.saturating_sub(own1);
    pay.ops = diff(&ops2, &ops1);

    report("createBooking", &create);
    report("processPayment", &pay);
    let per_booking_ms = create.cpu.values().sum::<u64>() as f64 / TICKS_PER_SECOND * 1e3
        / create.latencies.len().max(1) as f64;
    println!(
        "bench-booking: createBooking={:.0}/s p99={:.1}ms processPayment={:.0}/s p99={:.1}ms cpu_per_booking={:.2}ms",
        create.rate(),
        percentile(&create.latencies, 99.0).as_secs_f64() * 1e3,
        pay.rate(),
        percentile(&pay.latencies, 99.0).as_secs_f64() * 1e3,
        per_booking_ms,
    );
    if create.failed() + pay.failed() > 0 {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime ...
        let stat = "42 (tokio (rt) x) S 7 42 42 0 -1 4194560 10 0 0 0 120 30 5 1 20 0 9";
        assert_eq!(parse_stat(stat), Some((7, 156)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn interleave_alternates_showtimes() {
        let maps = vec![
            ("a".to_owned(), vec!["1".to_owned(), "2".to_owned()]),
            ("b".to_owned(), vec!["1".to_owned()]),
        ];
        let got: Vec<String> = interleave(maps)
            .into_iter()
            .map(|(s, n)| format!("{s}{n}"))
            .collect();
        assert_eq!(got, ["a1", "b1", "a2"]);
    }

    #[test]
    fn arguments_are_checked() {
        let args = |v: &[&str]| parse_args(v.iter().map(|s| (*s).to_owned()));
        assert!(args(&[]).is_err());
        assert!(args(&["--graphql", "u", "--user-url", "v", "--process", "nopid"]).is_err());
        let a = args(&["--graphql", "u", "--user-url", "v", "--process", "pg=12"]).unwrap();
        assert_eq!(a.processes, vec![("pg".to_owned(), 12)]);
        assert_eq!((a.users, a.concurrency), (64, 32));
    }
}
