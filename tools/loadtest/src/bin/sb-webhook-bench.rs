//! `sb-webhook-bench`: how fast the gateway answers the Cloud API's webhook (not pass/fail).
//! Starts a private Redis, a local Graph API stand-in and the release `gateway` beside this
//! binary with `TRANSPORTS=cloud`, then posts signed Meta text-message notifications (500
//! customers): an open loop at `--rate` requests/s (default 200) for `--secs` (default 20), then
//! a closed loop of 32 posters for 10 s. Prints answer-time percentiles per phase and checks
//! that every accepted delivery became exactly one inbound event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use loadtest::stack::sibling_bin;
use shared::testing::{RedisServer, TempDir, free_port};

/// `sha256=<hex>` of `body` under `secret`, as Meta signs.
fn sign(secret: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

const SECRET: &str = "bench-app-secret";
const PHONE_NUMBER_ID: &str = "106540352242922";

/// Message `n`, stamped now (older ones are ignored as replays).
fn body(n: u64) -> Vec<u8> {
    let customer = format!("1650555{:04}", n % 500);
    serde_json::to_vec(&serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
            "contacts": [{"profile": {"name": "Bench"}, "wa_id": customer}],
            "messages": [{"from": customer, "id": format!("wamid.BENCH{n}"), "timestamp": (shared::ids::now_ms() / 1000).to_string(),
                          "type": "text", "text": {"body": "Do you open on Sundays?"}}]
        }}]}]
    }))
    .expect("json")
}

struct Phase {
    name: &'static str,
    took: Vec<f64>,
    non_200: u64,
    secs: f64,
}

impl Phase {
    fn print(&mut self) {
        self.took.sort_by(f64::total_cmp);
        let p = |q: f64| {
            let i = ((q / 100.0) * (self.took.len().max(1) - 1) as f64).round() as usize;
            self.took.get(i).copied().unwrap_or(0.0) * 1000.0
        };
        println!(
            "{:<8} {:>7} requests {:>7.0}/s  p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  non-200 {}",
            self.name,
            self.took.len(),
            self.took.len() as f64 / self.secs,
            p(50.0),
            p(90.0),
            p(99.0),
            p(100.0),
            self.non_200
        );
    }
}

async fn post(http: &reqwest::Client, url: &str, n: u64) -> (f64, bool) {
    let b = body(n);
    let sig = sign(SECRET.as_bytes(), &b);
    let started = Instant::now();
    let ok = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(b)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200);
    (started.elapsed().as_secs_f64(), ok)
}

/// The gateway under test, with what it needs around it.
struct Rig {
    redis: RedisServer,
    gateway: shared::testing::ServiceProcess,
    url: String,
    _dir: TempDir,
}

async fn start() -> anyhow::Result<Rig> {
    let redis = RedisServer::start_with(&["--appendfsync", "everysec"]);
    // The Graph API stand-in: the token check and read marks succeed.
    let graph = shared::testing::serve_on_own_thread(axum::Router::new().fallback(|| async {
        axum::Json(serde_json::json!({"success": true, "id": PHONE_NUMBER_ID}))
    }));
    let dir = TempDir::new("webhook-bench");
    let public = format!("127.0.0.1:{}", free_port());
    let internal = format!("127.0.0.1:{}", free_port());
    let env: std::collections::HashMap<String, String> = [
        ("REDIS_URL", redis.url()),
        ("STREAM_PREFIX", "sb".to_owned()),
        ("DATA_DIR", dir.path().join("data").display().to_string()),
        ("TRANSPORTS", "cloud".to_owned()),
        ("PUBLIC_ADDR", public.clone()),
        ("GATEWAY_HTTP_ADDR", internal.clone()),
        ("WA_CLOUD_PHONE_NUMBER_ID", PHONE_NUMBER_ID.to_owned()),
        ("WA_CLOUD_ACCESS_TOKEN", "EAAbench".to_owned()),
        ("WA_CLOUD_APP_SECRET", SECRET.to_owned()),
        ("WA_CLOUD_VERIFY_TOKEN", "bench".to_owned()),
        ("WA_CLOUD_GRAPH_URL", format!("http://{graph}/v26.0")),
        ("RATE_LIMIT_PER_CONTACT", "100000".to_owned()),
        ("RATE_LIMIT_GLOBAL", "10000000".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let bin = sibling_bin("gateway");
    let gateway = shared::testing::ServiceProcess::spawn(
        bin.to_str().expect("path"),
        &env,
        &internal,
        dir.path(),
    );
    anyhow::ensure!(
        gateway
            .wait_status("/readyz", 200, Duration::from_secs(30))
            .await,
        "the gateway did not become ready:\n{}",
        gateway.log_text()
    );
    Ok(Rig {
        redis,
        gateway,
        url: format!("http://{public}/webhooks/whatsapp"),
        _dir: dir,
    })
}

/// Requests start on schedule, whatever the answers do.
async fn open_loop(
    http: &reqwest::Client,
    url: &str,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Phase> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for n in 0..rate * secs {
        tick.tick().await;
        let (http, url) = (http.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move { post(&http, &url, n).await }));
    }
    let mut phase = Phase {
        name: "open",
        took: Vec::new(),
        non_200: 0,
        secs: started.elapsed().as_secs_f64(),
    };
    for t in tasks {
        let (took, ok) = t.await?;
        phase.took.push(took);
        phase.non_200 += u64::from(!ok);
    }
    Ok(phase)
}

/// 32 posters, each sending as soon as the last answer came, for 10 s; ids from `first`.
async fn closed_loop(http: &reqwest::Client, url: &str, first: u64) -> anyhow::Result<Phase> {
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(first));
    let deadline = Instant::now() + Duration::from_secs(10);
    let started = Instant::now();
    let mut posters = Vec::new();
    for _ in 0..32 {
        let (http, url, counter) = (http.clone(), url.to_owned(), counter.clone());
        posters.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                out.push(post(&http, &url, n).await);
            }
            out
        }));
    }
    let mut phase = Phase {
        name: "closed",
        took: Vec::new(),
        non_200: 0,
        secs: 0.0,
    };
    for p in posters {
        for (took, ok) in p.await? {
            phase.took.push(took);
            phase.non_200 += u64::from(!ok);
        }
    }
    phase.secs = started.elapsed().as_secs_f64();
    Ok(phase)
}

/// Waits until `accepted` inbound events are published (up to 2 min); how many there are.
async fn inbound_events(redis: &RedisServer, accepted: u64) -> anyhow::Result<u64> {
    let client = redis::Client::open(redis.url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let from = Instant::now();
    loop {
        let n: u64 = redis::cmd("XLEN")
            .arg("{sb}:v1:inbound")
            .query_async(&mut conn)
            .await?;
        if n >= accepted || from.elapsed() > Duration::from_secs(120) {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut rate = 200u64;
    let mut secs = 20u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value: u64 = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{a} takes a number"))?
            .parse()?;
        match a.as_str() {
            "--rate" => rate = value.max(1),
            "--secs" => secs = value.max(1),
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let rig = start().await?;
    let http = shared::http_client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    println!(
        "gateway webhook answer time ({} cores); every request a signed text message",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    let mut open = open_loop(&http, &rig.url, rate, secs).await?;
    open.print();
    let mut closed = closed_loop(&http, &rig.url, rate * secs).await?;
    closed.print();
    let accepted = [&open, &closed]
        .iter()
        .map(|p| p.took.len() as u64 - p.non_200)
        .sum();
    let caught_up = Instant::now();
    let published = inbound_events(&rig.redis, accepted).await?;
    println!(
        "accepted {accepted}, inbound events {published} (caught up {:.1} s after the last request)",
        caught_up.elapsed().as_secs_f64()
    );
    if let Some(u) = loadtest::stack::ProcUsage::read(rig.gateway.child.id()) {
        println!(
            "gateway: {:.1} CPU s in all, peak RSS {:.0} MB",
            u.cpu_secs,
            u.peak_rss_bytes as f64 / 1e6
        );
    }
    Ok(())
}
