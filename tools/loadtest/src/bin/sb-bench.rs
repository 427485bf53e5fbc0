//! `sb-bench`: the load benchmark (not pass/fail). Starts the stack from the release binaries
//! beside it, drives it through the web chat API and prints throughput, latency over the
//! model's delay, lost and duplicated answers, CPU seconds per 1,000 messages and peak memory
//! of every process.
//!
//! Usage: `sb-bench [--backend sqlite|postgres] [--quick] [--out DIR] [SCENARIO...]`, scenarios
//! `closed` (50 customers, instant model), `open` (500 customers, one message every 1.25 s
//! each, model answering after 1 s: 400 msg/s offered), `overhead` (100 customers, one message
//! a second each, instant model: 100 msg/s), `sweep` (100 customers, instant model, offered
//! load stepped from 50 to 1,200 msg/s on one stack; writes `DIR/sweep.tsv` for the latency plot,
//! default `DIR` `target/bench`). Default: the first three. `--quick`: shorter runs.
//! `--env KEY=VALUE` (repeatable) sets a variable for every service, to measure a setting.

use std::time::Duration;

use loadtest::load::{self, Mode, Spec};
use loadtest::model::FakeModel;
use loadtest::stack::{Backend, ProcUsage, Stack};

struct Scenario {
    name: &'static str,
    customers: usize,
    mode: Mode,
    model_delay: Duration,
    duration: Duration,
    warmup: Duration,
}

fn scenarios(quick: bool) -> Vec<Scenario> {
    let secs = |full: u64, short: u64| Duration::from_secs(if quick { short } else { full });
    vec![
        Scenario {
            name: "closed",
            customers: 50,
            mode: Mode::Closed,
            model_delay: Duration::ZERO,
            duration: secs(30, 10),
            warmup: secs(5, 2),
        },
        Scenario {
            name: "open",
            customers: 500,
            mode: Mode::Open {
                interval: Duration::from_millis(1250),
            },
            model_delay: Duration::from_secs(1),
            duration: secs(40, 15),
            warmup: secs(10, 5),
        },
        Scenario {
            name: "overhead",
            customers: 100,
            mode: Mode::Open {
                interval: Duration::from_secs(1),
            },
            model_delay: Duration::ZERO,
            duration: secs(30, 10),
            warmup: secs(5, 2),
        },
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut backend = Backend::Sqlite;
    let mut quick = false;
    let mut out = std::path::PathBuf::from("target/bench");
    let mut wanted: Vec<String> = Vec::new();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--backend" => backend = Backend::from_arg(it.next().map(String::as_str))?,
            "--quick" => quick = true,
            "--env" => {
                let kv = it.next().and_then(|kv| kv.split_once('='));
                let (k, v) = kv.ok_or_else(|| anyhow::anyhow!("--env takes KEY=VALUE"))?;
                env.push((k.to_owned(), v.to_owned()));
            }
            "--out" => {
                out = it
                    .next()
                    .map(std::path::PathBuf::from)
                    .ok_or_else(|| anyhow::anyhow!("--out takes a directory"))?;
            }
            s if !s.starts_with('-') => wanted.push(s.to_owned()),
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    if wanted.iter().any(|w| w == "sweep") {
        sweep(backend, quick, &out, &env).await?;
        wanted.retain(|w| w != "sweep");
        if wanted.is_empty() {
            return Ok(());
        }
    }
    for s in scenarios(quick) {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == s.name) {
            continue;
        }
        run(&s, backend, &env).await?;
    }
    Ok(())
}

async fn run(s: &Scenario, backend: Backend, env: &[(String, String)]) -> anyhow::Result<()> {
    let model = FakeModel::start(s.model_delay).await?;
    let stack = Stack::start(backend, &model.base_url, &pairs(env)).await?;
    let before = stack.usage();
    let spec = Spec {
        base: stack.public_url.clone(),
        customers: s.customers,
        mode: s.mode,
        duration: s.duration,
        warmup: s.warmup,
        drain: Duration::from_secs(30),
        model_delay: s.model_delay,
        per_customer: None,
        progress: Default::default(),
        voice: None,
    };
    let r = load::run(spec).await?;
    let after = stack.usage();
    println!(
        "\n== {} ({:?}): {} customers, {:?}, model delay {} ms, {} s (first {} s left out)",
        s.name,
        backend,
        s.customers,
        s.mode,
        s.model_delay.as_millis(),
        s.duration.as_secs(),
        s.warmup.as_secs()
    );
    println!(
        "offered {:.1} msg/s, answered {:.1} msg/s | latency over the model p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r.offered, r.throughput, r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms
    );
    println!(
        "sent {}, accepted {}, refused {}, replies {}, notices {}, lost {} ({} of them in the history), duplicated {} | model calls {}",
        r.sent,
        r.accepted,
        r.refused,
        r.replies,
        r.notices,
        r.lost,
        r.lost_but_in_history,
        r.duplicated,
        model.calls()
    );
    let slices: Vec<String> = r
        .timeline
        .iter()
        .map(|(at, rate, p99)| format!("{at}s {rate:.0}/s p99 {p99:.0}"))
        .collect();
    println!("by 5 s: {}", slices.join(" | "));
    let answered = (r.replies + r.notices).max(1) as f64;
    for (name, a) in &after {
        let b = before
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, u)| *u)
            .unwrap_or_default();
        let cpu = cpu_per_thousand(b, *a, answered);
        println!(
            "  {name:<12} CPU {cpu:>6.3} s / 1,000 msgs   peak RSS {:>6.1} MB",
            a.peak_rss_bytes as f64 / 1e6
        );
    }
    println!(
        "RESULT {}",
        serde_json::json!({"scenario": s.name, "backend": format!("{backend:?}"), "report": r})
    );
    stack.stop().await;
    Ok(())
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn cpu_per_thousand(before: ProcUsage, after: ProcUsage, answered: f64) -> f64 {
    (after.cpu_secs - before.cpu_secs) / (answered / 1000.0)
}

/// Latency percentiles against offered load: one stack, 100 customers, instant model, the
/// offered load stepped up; a row per step in `out/sweep.tsv`.
async fn sweep(
    backend: Backend,
    quick: bool,
    out: &std::path::Path,
    env: &[(String, String)],
) -> anyhow::Result<()> {
    let model = FakeModel::start(Duration::ZERO).await?;
    let stack = Stack::start(backend, &model.base_url, &pairs(env)).await?;
    let customers = 100usize;
    let (duration, warmup) = if quick { (6, 2) } else { (15, 3) };
    let mut rows = vec!["offered\tanswered\tp50_ms\tp95_ms\tp99_ms\tmax_ms\tlost".to_owned()];
    println!("\n== sweep ({backend:?}): {customers} customers, instant model, {duration} s a step");
    for rate in [50u32, 100, 200, 400, 600, 800, 1000, 1200] {
        let spec = Spec {
            base: stack.public_url.clone(),
            customers,
            mode: Mode::Open {
                interval: Duration::from_secs_f64(customers as f64 / f64::from(rate)),
            },
            duration: Duration::from_secs(duration),
            warmup: Duration::from_secs(warmup),
            drain: Duration::from_secs(30),
            model_delay: Duration::ZERO,
            per_customer: None,
            progress: Default::default(),
            voice: None,
        };
        let r = load::run(spec).await?;
        println!(
            "offered {:>6.1} msg/s  answered {:>6.1} msg/s  p50 {:>7.1} ms  p95 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  lost {}",
            r.offered, r.throughput, r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms, r.lost
        );
        rows.push(format!(
            "{:.1}\t{:.1}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{}",
            r.offered, r.throughput, r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms, r.lost
        ));
    }
    std::fs::create_dir_all(out)?;
    let file = out.join("sweep.tsv");
    std::fs::write(&file, rows.join("\n") + "\n")?;
    println!("written: {}", file.display());
    stack.stop().await;
    Ok(())
}
