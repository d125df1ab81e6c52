//! `make bench-user-payment`: register, login, token verification and payment throughput and
//! latency, with both services running in this process against the test backing servers.
//!
//! Bounded: each phase stops after its request count or 30 s. Run on the dev profile
//! (dependencies at opt-level 2, our code at opt-level 1), so numbers are conservative.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use futures::StreamExt;
use moviebook_common::auth::JwtKeys;
use serde_json::json;
use user_service::password::{self, HashParams};

const SECRET: &str = "bench-secret-bench-secret-0123456789abcdef";
const PHASE_LIMIT: Duration = Duration::from_secs(30);

fn env(var: &str) -> anyhow::Result<String> {
    std::env::var(var).map_err(|_| {
        anyhow::anyhow!("{var} is not set: run `eval \"$(scripts/stack.sh test env)\"` first")
    })
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs (nproc), {model}")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Each phase's `key=<N>/s p99=<X>ms`, for the closing `bench-user-payment:` line.
static SUMMARY: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The summary key of a phase: the last path segment of its request, plus `_replays`.
fn summary_key(name: &str) -> String {
    let path = name.split_whitespace().nth(1).unwrap_or(name);
    let mut key = path.rsplit('/').next().unwrap_or(path).to_owned();
    if name.contains("(replays)") {
        key.push_str("_replays");
    }
    key
}

/// Runs `make_request(i)` for i in 0..count with `concurrency` in flight; prints the summary.
async fn phase<F, Fut>(name: &str, count: usize, concurrency: usize, make_request: F) -> Vec<usize>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    let results: Vec<(usize, bool, Duration)> = futures::stream::iter(0..count)
        .take_while(|_| futures::future::ready(start.elapsed() < PHASE_LIMIT))
        .map(|i| {
            let fut = make_request(i);
            async move {
                let t = Instant::now();
                let ok = fut.await;
                (i, ok, t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let mut lat: Vec<Duration> = results.iter().map(|r| r.2).collect();
    lat.sort();
    let errors = results.iter().filter(|r| !r.1).count();
    println!(
        "{name:<28} {:>6} req {:>4} err  concurrency {concurrency:>3}  {:>9.1} req/s  p50 {:>8.2} ms  p99 {:>8.2} ms",
        results.len(),
        errors,
        results.len() as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
    );
    if let Ok(mut summary) = SUMMARY.lock() {
        summary.push(format!(
            "{}={:.0}/s p99={:.2}ms",
            summary_key(name),
            results.len() as f64 / elapsed.as_secs_f64(),
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
        ));
    }
    results.into_iter().filter(|r| r.1).map(|r| r.0).collect()
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{base}/ready")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{base} never became ready")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mongodb_url = env("MONGODB_URL")?;
    let rabbitmq_url = env("RABBITMQ_URL")?;
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let params = HashParams {
        memory_kib: moviebook_common::config::var_or(
            "ARGON2_MEMORY_KIB",
            HashParams::OWASP.memory_kib,
        )?,
        iterations: moviebook_common::config::var_or(
            "ARGON2_ITERATIONS",
            HashParams::OWASP.iterations,
        )?,
        parallelism: moviebook_common::config::var_or(
            "ARGON2_PARALLELISM",
            HashParams::OWASP.parallelism,
        )?,
    };
    println!("machine: {}", machine());
    println!("build: dev profile (dependencies opt-level 2, MovieBook crates opt-level 1)");
    println!("backing servers: MongoDB-compatible {mongodb_url}, RabbitMQ (outbox relay running)");

    // Raw hash rate, one thread and then one thread per CPU.
    let one = tokio::task::spawn_blocking(move || password::raw_hash_rate(params, 10)).await??;
    let t = Instant::now();
    let per_cpu = 8u32;
    let handles: Vec<_> = (0..cpus)
        .map(|_| tokio::task::spawn_blocking(move || password::raw_hash_rate(params, per_cpu)))
        .collect();
    for h in handles {
        h.await??;
    }
    let all = f64::from(per_cpu) * cpus as f64 / t.elapsed().as_secs_f64();
    println!(
        "password hash: {params}: {one:.1} hashes/s on 1 thread ({:.1} ms each), {all:.1} hashes/s on {cpus} threads",
        1000.0 / one
    );

    let db_suffix = uuid::Uuid::new_v4().simple().to_string();
    let user_cfg = user_service::Config {
        port: 0,
        mongodb_url: mongodb_url.clone(),
        database: format!("moviebook_bench_user_{db_suffix}"),
        jwt_secret: SECRET.into(),
        jwt_issuer: "moviebook".into(),
        jwt_ttl: Duration::from_secs(3600),
        hash: params,
        hash_concurrency: cpus,
    };
    let pay_cfg = payment_service::Config {
        port: 0,
        mongodb_url,
        database: format!("moviebook_bench_payment_{db_suffix}"),
        rabbitmq_url,
        rabbitmq_topology: moviebook_common::amqp::Topology::Declare,
        jwt_secret: SECRET.into(),
        jwt_issuer: "moviebook".into(),
        failure_rate: 0.0,
    };
    user_service::migrate(&user_cfg).await?;
    payment_service::migrate(&pay_cfg).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let user_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let pay_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let user_base = format!("http://{}", user_listener.local_addr()?);
    let pay_base = format!("http://{}", pay_listener.local_addr()?);
    let user_task = tokio::spawn(user_service::run(
        user_cfg.clone(),
        user_listener,
        moviebook_common::shutdown::wait(stop_rx.clone()),
    ));
    let pay_task = tokio::spawn(payment_service::run(
        pay_cfg.clone(),
        pay_listener,
        moviebook_common::shutdown::wait(stop_rx),
    ));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    wait_ready(&http, &user_base).await?;
    wait_ready(&http, &pay_base).await?;

    let (http_ref, user_ref, pay_ref) = (&http, &user_base, &pay_base);
    let registered = phase("POST /api/v1/register", 200, 16, |i| async move {
        http_ref
            .post(format!("{user_ref}/api/v1/register"))
            .json(
                &json!({"email": format!("bench{i}@example.com"), "password": "bench password 123",
                          "first_name": "Bench", "last_name": "Mark"}),
            )
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 201)
    })
    .await;
    anyhow::ensure!(!registered.is_empty(), "no registration succeeded");
    let registered_ref = &registered;
    phase("POST /api/v1/login", 200, 16, |i| async move {
        let who = registered_ref[i % registered_ref.len()];
        http_ref
            .post(format!("{user_ref}/api/v1/login"))
            .json(&json!({"email": format!("bench{who}@example.com"), "password": "bench password 123"}))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    let keys = JwtKeys::new(SECRET, "moviebook", Duration::from_secs(3600));
    let login: serde_json::Value = http
        .post(format!("{user_base}/api/v1/login"))
        .json(&json!({"email": format!("bench{}@example.com", registered[0]), "password": "bench password 123"}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("login answered no token: {login}"))?
        .to_owned();
    let user_id = login["user"]["id"].as_str().unwrap_or_default().to_owned();
    // The full check (signature included), then the check of a token seen before.
    for (name, key, n, cached) in [
        ("JwtKeys::verify_uncached", "verify_us", 5_000, false),
        ("JwtKeys::verify (seen)", "verify_seen_us", 100_000, true),
    ] {
        let t = Instant::now();
        for _ in 0..n {
            if cached {
                keys.verify(&token)?;
            } else {
                keys.verify_uncached(&token)?;
            }
        }
        let per = t.elapsed() / n;
        println!(
            "{name:<29} {:>9.0} verifications/s on 1 thread ({:.2} µs each)",
            1.0 / per.as_secs_f64(),
            per.as_secs_f64() * 1e6
        );
        if let Ok(mut summary) = SUMMARY.lock() {
            summary.push(format!("{key}={:.1}", per.as_secs_f64() * 1e6));
        }
    }
    let token_ref = &token;
    phase("GET /api/v1/profile (JWT)", 5000, 32, |_| async move {
        http_ref
            .get(format!("{user_ref}/api/v1/profile"))
            .bearer_auth(token_ref)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    let user_id_ref = &user_id;
    let suffix = &db_suffix;
    // Payments are written by the booking service only: the benchmark charges as it does.
    let service_token = keys.issue_service_token(moviebook_common::auth::BOOKING_SERVICE)?;
    let token_ref = &service_token;
    phase("POST /payments", 3000, 32, |i| async move {
        http_ref
            .post(format!("{pay_ref}/payments"))
            .bearer_auth(token_ref)
            .json(
                &json!({"booking_id": format!("bench-{suffix}-{i}"), "user_id": user_id_ref,
                          "amount": 42.5, "currency": "USD", "payment_method": "credit_card",
                          "payment_details": {"card_number": "4111111111111111"}}),
            )
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 201)
    })
    .await;
    phase("POST /payments (replays)", 3000, 32, |i| async move {
        http_ref
            .post(format!("{pay_ref}/payments"))
            .bearer_auth(token_ref)
            .json(
                &json!({"booking_id": format!("bench-{suffix}-{}", i % 100), "user_id": user_id_ref,
                          "amount": 42.5, "currency": "USD", "payment_method": "credit_card",
                          "payment_details": {"card_number": "4111111111111111"}}),
            )
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200)
    })
    .await;

    let _ = stop_tx.send(true);
    let _ = user_task.await;
    let _ = pay_task.await;
    for db in [
        user_service::connect(&user_cfg).await?,
        payment_service::connect(&pay_cfg).await?,
    ] {
        let _ = db.drop().await;
    }
    if let Ok(summary) = SUMMARY.lock() {
        println!("bench-user-payment: {}", summary.join(" "));
    }
    Ok(())
}
