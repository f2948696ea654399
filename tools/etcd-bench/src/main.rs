//! `etcd-bench`: closed-loop puts against a 3-member etcd through its v3
//! gRPC API, for `scripts/bench-vs-etcd`.
//!
//! `--clients C --inflight M` opens C gRPC connections to the leader (found
//! with the Maintenance `Status` call, so no put is forwarded by a follower)
//! and keeps M puts outstanding on each: C × M puts in flight, as in a
//! `rast bench --clients C --inflight M` run. Every put waits for etcd's
//! acknowledgement (the `PutResponse`, sent after the entry is committed on a
//! majority and applied). Keys cycle through `--keys` names so the key space
//! stays bounded; values are `--payload` bytes.
//!
//! Prints one line: `RESULT ops=… seconds=… ops_per_s=… mb_per_s=… p50_us=…
//! p99_us=… p999_us=… max_us=… errors=…`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use hdrhistogram::Histogram;

/// Command-line settings.
struct Settings {
    endpoints: Vec<String>,
    clients: usize,
    inflight: usize,
    payload: usize,
    seconds: f64,
    warmup_seconds: f64,
    keys: u64,
}

fn main() {
    let settings = match parse(std::env::args().skip(1).collect()) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("etcd-bench: {message}");
            eprintln!(
                "usage: etcd-bench --endpoints A,B,C [--clients 4] [--inflight 64] \
                 [--payload 128] [--seconds 10] [--warmup-seconds 2] [--keys 100000]"
            );
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(message) = runtime.block_on(run(settings)) {
        eprintln!("etcd-bench: {message}");
        std::process::exit(2);
    }
}

fn parse(arguments: Vec<String>) -> Result<Settings, String> {
    let mut settings = Settings {
        endpoints: Vec::new(),
        clients: 4,
        inflight: 64,
        payload: 128,
        seconds: 10.0,
        warmup_seconds: 2.0,
        keys: 100_000,
    };
    let mut items = arguments.into_iter();
    while let Some(flag) = items.next() {
        let value = items
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<f64>()
                .map_err(|_| format!("{flag} {value}: not a number"))
        };
        match flag.as_str() {
            "--endpoints" => {
                settings.endpoints = value.split(',').map(str::to_owned).collect();
            }
            "--clients" => settings.clients = number()? as usize,
            "--inflight" => settings.inflight = number()? as usize,
            "--payload" => settings.payload = number()? as usize,
            "--seconds" => settings.seconds = number()?,
            "--warmup-seconds" => settings.warmup_seconds = number()?,
            "--keys" => settings.keys = number()? as u64,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if settings.endpoints.is_empty() || settings.clients == 0 || settings.inflight == 0 {
        return Err("--endpoints, --clients and --inflight must be given and non-zero".into());
    }
    Ok(settings)
}

/// The endpoint whose member is the leader.
async fn leader(endpoints: &[String]) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for endpoint in endpoints {
            let Ok(mut client) = Client::connect([endpoint], None).await else {
                continue;
            };
            if let Ok(status) = client.status().await
                && let Some(header) = status.header()
                && status.leader() != 0
                && header.member_id() == status.leader()
            {
                return Ok(endpoint.clone());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no leader among {endpoints:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the workers share.
struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    errors: AtomicU64,
}

async fn run(settings: Settings) -> Result<(), String> {
    let leader = leader(&settings.endpoints).await?;
    eprintln!(
        "etcd-bench: leader {leader}; {} clients x {} in flight, {} B values, {} s",
        settings.clients, settings.inflight, settings.payload, settings.seconds
    );
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        errors: AtomicU64::new(0),
    });
    let value = vec![b'x'; settings.payload];
    let mut tasks = Vec::new();
    for client_number in 0..settings.clients {
        let options = ConnectOptions::new()
            .with_timeout(Duration::from_secs(10))
            .with_connect_timeout(Duration::from_secs(5));
        let client = Client::connect([leader.as_str()], Some(options))
            .await
            .map_err(|error| format!("connecting to {leader}: {error}"))?;
        for slot in 0..settings.inflight {
            let mut kv = client.kv_client();
            let shared = Arc::clone(&shared);
            let value = value.clone();
            let keys = settings.keys;
            let worker = (client_number * settings.inflight + slot) as u64;
            tasks.push(tokio::spawn(async move {
                let mut histogram =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
                let mut sequence = worker;
                while !shared.stop.load(Ordering::Relaxed) {
                    let key = format!("k{:08}", sequence % keys);
                    sequence += 7919;
                    let started = Instant::now();
                    let outcome = kv.put(key, value.clone(), None).await;
                    let micros = started.elapsed().as_micros() as u64;
                    if !shared.measuring.load(Ordering::Relaxed) {
                        continue;
                    }
                    match outcome {
                        Ok(_) => histogram.saturating_record(micros.max(1)),
                        Err(_) => {
                            shared.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                histogram
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(settings.warmup_seconds)).await;
    shared.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(settings.seconds)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    for task in tasks {
        let histogram = task.await.map_err(|error| format!("worker: {error}"))?;
        total
            .add(&histogram)
            .map_err(|error| format!("merging: {error}"))?;
    }
    let ops = total.len();
    println!(
        "RESULT ops={ops} seconds={seconds:.3} ops_per_s={:.1} mb_per_s={:.3} p50_us={} p99_us={} p999_us={} max_us={} errors={}",
        ops as f64 / seconds,
        ops as f64 * settings.payload as f64 / seconds / 1e6,
        total.value_at_quantile(0.50),
        total.value_at_quantile(0.99),
        total.value_at_quantile(0.999),
        total.max(),
        shared.errors.load(Ordering::Relaxed),
    );
    Ok(())
}
