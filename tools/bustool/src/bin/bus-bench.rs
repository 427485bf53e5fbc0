//! Bus benchmark: publish → handle → ack throughput through one consumer group, and
//! publish-to-handler latency at a steady rate, through the same shared consumer the services
//! use with default settings. Prints figures; first line: `<n> events/s`.
//!
//! Variables: `REDIS_URL` (default the local one), `BENCH_EVENTS` (default 100000),
//! `BENCH_RATE` (default 1000 events/s), `BENCH_SECS` (default 10). Uses a unique key prefix
//! and deletes its keys afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shared::bus::{Bus, Delivery, HandleError, Handler, Publish, Stream};
use shared::config::{BusConfig, Dsn};
use shared::proto::{Envelope, Inbound, Payload};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

struct Recorder {
    handled: AtomicUsize,
    latencies_us: Mutex<Vec<u64>>,
}

impl Handler for Recorder {
    async fn handle(&self, d: Delivery) -> Result<Vec<Publish>, HandleError> {
        if let Some(Payload::Inbound(i)) = &d.envelope.payload
            && let Ok(sent) = i.text.parse::<u128>()
        {
            let us = (now_ns().saturating_sub(sent) / 1000) as u64;
            self.latencies_us.lock().await.push(us);
        }
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(Vec::new())
    }
}

fn event(i: usize, contacts: Option<usize>) -> Publish {
    let env = Envelope::new(
        "bench",
        Payload::Inbound(Inbound {
            message_id: format!("m{i}"),
            chat_id: format!("c{}", i % contacts.unwrap_or(1)),
            text: now_ns().to_string(),
            ..Default::default()
        }),
    );
    match contacts {
        Some(c) => Publish::ordered(Stream::Inbound, env, format!("contact-{}", i % c)),
        None => Publish::new(Stream::Inbound, env),
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

struct Run {
    bus: Bus,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<shared::bus::Result<()>>,
}

async fn start(url: &str, prefix: &str) -> Run {
    let bus = Bus::with_parts(&Dsn::new(url), prefix, BusConfig::default(), "bench").unwrap();
    bus.ensure_group(Stream::Inbound).await.unwrap();
    let recorder = Arc::new(Recorder {
        handled: AtomicUsize::new(0),
        latencies_us: Mutex::new(Vec::new()),
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(
        bus.consumer(Stream::Inbound, recorder.clone())
            .run(stop.clone()),
    );
    Run {
        bus,
        recorder,
        stop,
        task,
    }
}

async fn finish(run: Run, url: &str, prefix: &str) {
    run.stop.cancel();
    let _ = run.task.await;
    let _ = shared::redis_conn::delete_prefix(url, prefix).await;
}

/// Publishes `n` events (pipelined by 500 from 4 tasks) and waits until all are handled and
/// acknowledged; returns events per second.
async fn throughput(url: &str, n: usize, contacts: Option<usize>) -> f64 {
    let prefix = format!("bench-{}", shared::ids::new_id().to_lowercase());
    let run = start(url, &prefix).await;
    let started = Instant::now();
    let mut publishers = Vec::new();
    for p in 0..4 {
        let publisher = run.bus.publisher();
        publishers.push(tokio::spawn(async move {
            let mut i = p;
            let mut batch = Vec::with_capacity(500);
            while i < n {
                batch.push(event(i, contacts));
                i += 4;
                if batch.len() == 500 {
                    publisher.publish_batch(&batch).await.unwrap();
                    batch.clear();
                }
            }
            if !batch.is_empty() {
                publisher.publish_batch(&batch).await.unwrap();
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    loop {
        if run.recorder.handled.load(Ordering::Relaxed) >= n
            && run.bus.stats(Stream::Inbound).await.unwrap().pending == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    finish(run, url, &prefix).await;
    rate
}

/// Publishes one event at a time at `rate`/s for `secs`; returns sorted latencies (µs).
async fn steady(url: &str, rate: u64, secs: u64, contacts: Option<usize>) -> Vec<u64> {
    let prefix = format!("bench-{}", shared::ids::new_id().to_lowercase());
    let run = start(url, &prefix).await;
    let publisher = run.bus.publisher();
    let total = (rate * secs) as usize;
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        tick.tick().await;
        let p = publisher.clone();
        let e = event(i, contacts);
        tokio::spawn(async move { p.publish(e).await.unwrap() });
    }
    while run.recorder.handled.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut lat = run.recorder.latencies_us.lock().await.clone();
    lat.sort_unstable();
    finish(run, url, &prefix).await;
    lat
}

#[tokio::main]
async fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let n: usize = env_or("BENCH_EVENTS", 100_000);
    let rate: u64 = env_or("BENCH_RATE", 1000);
    let secs: u64 = env_or("BENCH_SECS", 10);

    let ordered = throughput(&url, n, Some(1000)).await;
    println!(
        "{ordered:.0} events/s  (publish -> handle -> ack, {n} events, ordered per contact over 1000 contacts, one consumer, default settings)"
    );
    let unordered = throughput(&url, n, None).await;
    println!("{unordered:.0} events/s  (same, events without an order key)");
    for (label, contacts) in [("ordered, 100 contacts", Some(100)), ("unordered", None)] {
        let lat = steady(&url, rate, secs, contacts).await;
        println!(
            "latency publish->handler at {rate} events/s for {secs}s ({label}): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} events)",
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0),
            lat.len()
        );
    }
}
