//! Transcriber benchmark: jobs/second and ffmpeg conversion time for a 30 s voice note, with
//! the fake Whisper server answering after a fixed delay, for 1, 2 and 4 replicas (separate
//! `transcriber` processes sharing one consumer group). Prints a table.
//!
//! Variables: `TRANSCRIBER_BIN` (the release binary), `REDIS_URL`, `BENCH_JOBS` (default 24),
//! `BENCH_WHISPER_MS` (default 1000), `BENCH_CONCURRENCY` (jobs one replica works on at once,
//! default 1: one replica = one worker, as when each container gets one CPU).

use std::time::{Duration, Instant};

use shared::bus::{Bus, Publish, Stream};
use shared::config::{BusConfig, Dsn, ServiceName};
use shared::fake_whisper::{Answer, FakeWhisper};
use shared::proto::{Envelope, MediaRef, Payload, TranscriptionJob};
use shared::testing::{ServiceEnv, ServiceProcess};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Row {
    replicas: usize,
    jobs: usize,
    secs: f64,
    ffmpeg_ms: f64,
}

/// `replicas` transcribers on `prefix`, ready.
async fn start_replicas(
    bin: &str,
    redis: &str,
    prefix: &str,
    whisper: &FakeWhisper,
    replicas: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<ServiceProcess>, Vec<ServiceEnv>)> {
    let mut procs = Vec::new();
    let mut envs = Vec::new();
    for _ in 0..replicas {
        let mut senv = ServiceEnv::new(ServiceName::Transcriber, redis, None);
        senv.use_prefix(prefix);
        for (k, v) in [
            ("WHISPER_BASE_URL", whisper.base_url.as_str()),
            ("WHISPER_API_KEY", "bench"),
            ("RUST_LOG", "warn"),
            ("BUS_BLOCK_MS", "100"),
        ] {
            senv.env.insert(k.into(), v.into());
        }
        senv.env
            .insert("BUS_CONCURRENCY".into(), concurrency.to_string());
        let p = senv.spawn(bin);
        anyhow::ensure!(
            p.wait_status("/readyz", 200, Duration::from_secs(30)).await,
            "transcriber did not start:\n{}",
            p.log_text()
        );
        procs.push(p);
        envs.push(senv);
    }
    Ok((procs, envs))
}

/// `jobs` transcription jobs of the voice note stored at `key`.
fn jobs_of(key: &str, size: u64, jobs: usize) -> Vec<Publish> {
    (0..jobs)
        .map(|i| {
            Publish::new(
                Stream::Transcribe,
                Envelope::new(
                    "bench",
                    Payload::TranscriptionJob(TranscriptionJob {
                        message_id: format!("bench-{i}"),
                        media: Some(MediaRef {
                            key: key.to_owned(),
                            mime_type: "audio/ogg".into(),
                            size_bytes: size,
                            sha256: String::new(),
                        }),
                        contact_id: format!("c{i}"),
                        deadline_at_ms: shared::ids::now_ms() + 600_000,
                        language: String::new(),
                        visitor: false,
                    }),
                ),
            )
        })
        .collect()
}

async fn run(
    bin: &str,
    redis: &str,
    whisper: &FakeWhisper,
    audio: &[u8],
    replicas: usize,
    jobs: usize,
    concurrency: usize,
) -> anyhow::Result<Row> {
    let prefix = shared::testing::unique_prefix();
    let bus = Bus::with_parts(&Dsn::new(redis), &prefix, BusConfig::default(), "bench")?;
    let key = format!("{{{prefix}}}:media:be4c");
    let mut c = bus.connection();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(audio)
        .query_async(&mut c)
        .await?;
    let (procs, _envs) =
        start_replicas(bin, redis, &prefix, whisper, replicas, concurrency).await?;
    let started = Instant::now();
    let events = jobs_of(&key, audio.len() as u64, jobs);
    bus.publisher().publish_batch(&events).await?;
    let transcripts = bus.keys().stream(Stream::Transcripts);
    loop {
        let n: usize = redis::cmd("XLEN")
            .arg(&transcripts)
            .query_async(&mut c)
            .await?;
        if n >= jobs {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(240),
            "only {n} of {jobs} jobs done"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let (mut sum, mut count) = (0.0, 0.0);
    for p in &procs {
        sum += shared::testing::scrape_metric(&p.http, "transcriber_ffmpeg_seconds_sum").await;
        count += shared::testing::scrape_metric(&p.http, "transcriber_ffmpeg_seconds_count").await;
    }
    for p in procs {
        let _ = p.terminate_async(Duration::from_secs(20)).await;
    }
    shared::testing::cleanup_prefix(redis, &prefix).await;
    Ok(Row {
        replicas,
        jobs,
        secs,
        ffmpeg_ms: if count > 0.0 {
            sum / count * 1000.0
        } else {
            f64::NAN
        },
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bin =
        std::env::var("TRANSCRIBER_BIN").unwrap_or_else(|_| "target/release/transcriber".into());
    // Services run in their own directories: the binary path must not be relative.
    let bin = std::fs::canonicalize(&bin)
        .map_err(|e| anyhow::anyhow!("{bin}: {e} (build it with cargo build --release)"))?
        .display()
        .to_string();
    let redis = shared::testing::redis_url();
    let jobs: usize = env_or("BENCH_JOBS", 24);
    let delay: u64 = env_or("BENCH_WHISPER_MS", 1000);
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 1);
    let whisper = FakeWhisper::start(
        Vec::new(),
        Some(Answer::Slow(
            Duration::from_millis(delay),
            "benchmark transcript",
        )),
    );
    let audio = shared::testing::voice_note(30);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "transcriber: 30 s voice note ({} KB Ogg/Opus), Whisper fake answering after {delay} ms, {jobs} jobs, {concurrency} job(s) per replica at once, {cpus} CPUs",
        audio.len() / 1024
    );
    println!(
        "{:>8} {:>6} {:>9} {:>8} {:>18}",
        "replicas", "jobs", "seconds", "jobs/s", "ffmpeg ms (mean)"
    );
    for replicas in [1, 2, 4] {
        let r = run(&bin, &redis, &whisper, &audio, replicas, jobs, concurrency).await?;
        println!(
            "{:>8} {:>6} {:>9.2} {:>8.2} {:>18.1}",
            r.replicas,
            r.jobs,
            r.secs,
            r.jobs as f64 / r.secs,
            r.ffmpeg_ms
        );
    }
    Ok(())
}
