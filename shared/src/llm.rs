//! Calls to OpenAI-compatible APIs (chat, vision, Whisper) the way every paid call is made:
//! a per-attempt timeout, retries on 429 / 5xx / timeouts / connection errors with exponential
//! backoff and ±20% jitter (honouring `Retry-After`), no retry on other 4xx, a circuit breaker,
//! and an overall deadline that bounds all of it.
//!
//! The async-openai client is built without its own retry layer (it would retry on its own
//! schedule and hide failures from the breaker); a thin HTTP service under it records the
//! `Retry-After` header of each response for the retry loop.

use std::cell::Cell;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use crate::bus::Reason;
use crate::config::Env;

tokio::task_local! {
    /// `Retry-After` of the last response seen by the current call.
    static RETRY_AFTER: Cell<Option<Duration>>;
}

/// Metric: calls by upstream and outcome (`ok`, `failed`, `circuit_open`, `deadline`).
pub const CALLS: &str = "llm_calls_total";
/// Metric: retries by upstream.
pub const RETRIES: &str = "llm_retries_total";
/// Metric: 0 closed, 1 open, 2 half-open.
pub const CIRCUIT: &str = "llm_circuit_state";
/// Metric: seconds per successful call (all attempts).
pub const LATENCY: &str = "llm_latency_seconds";

/// Retry and breaker settings (shared by the brain and the transcriber).
#[derive(Debug, Clone)]
pub struct Policy {
    /// `LLM_TIMEOUT_SECS` (30): one attempt at most.
    pub timeout: Duration,
    /// `LLM_RETRIES` (3): retries after the first attempt.
    pub retries: u32,
    /// `LLM_RETRY_BASE_MS` (2000): first backoff; doubles each retry, ±20% jitter.
    pub retry_base: Duration,
    /// `BREAKER_FAILURES` (5): consecutive failures that open the circuit.
    pub breaker_failures: u32,
    /// `BREAKER_OPEN_SECS` (30): how long it stays open before one probe.
    pub breaker_open: Duration,
    /// `BREAKER_CLOSE_AFTER` (2): successful probes that close it again.
    pub breaker_close_after: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            retries: 3,
            retry_base: Duration::from_secs(2),
            breaker_failures: 5,
            breaker_open: Duration::from_secs(30),
            breaker_close_after: 2,
        }
    }
}

impl Policy {
    /// Reads `LLM_*` (timeouts, retries, breaker); problems are recorded in `env`.
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            timeout: env.secs("LLM_TIMEOUT_SECS", 30, 1, 600),
            retries: env.int_in("LLM_RETRIES", 3, 0, 10),
            retry_base: env.millis("LLM_RETRY_BASE_MS", 2000, 1, 60_000),
            breaker_failures: env.int_in("BREAKER_FAILURES", 5, 1, 1000),
            breaker_open: env.secs("BREAKER_OPEN_SECS", 30, 1, 3600),
            breaker_close_after: env.int_in("BREAKER_CLOSE_AFTER", 2, 1, 100),
        }
    }
}

/// Where an OpenAI-compatible API is, and whether one is configured at all.
/// An OpenAI-compatible endpoint: where, and with which key.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base URL including `/v1` (trailing slash removed).
    pub base_url: String,
    /// The API key, if any.
    pub api_key: Option<SecretString>,
    /// A key or a base URL was given (a base URL without a key is valid: Ollama).
    pub configured: bool,
}

/// OpenAI's own API.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

impl Endpoint {
    /// Reads `<prefix>BASE_URL` / `<prefix>API_KEY`, falling back to `OPENAI_BASE_URL` /
    /// `OPENAI_API_KEY` (pass `"OPENAI_"` for the chat endpoint itself).
    pub fn from_env(env: &mut Env, prefix: &str) -> Self {
        let own_url = format!("{prefix}BASE_URL");
        let own_key = format!("{prefix}API_KEY");
        let base = env.http_url(&own_url).or_else(|| {
            (prefix != "OPENAI_")
                .then(|| env.http_url("OPENAI_BASE_URL"))
                .flatten()
        });
        let key = env.secret(&own_key).or_else(|| {
            (prefix != "OPENAI_")
                .then(|| env.secret("OPENAI_API_KEY"))
                .flatten()
        });
        Self {
            configured: base.is_some() || key.is_some(),
            base_url: base.unwrap_or_else(|| OPENAI_BASE_URL.to_owned()),
            api_key: key,
        }
    }
}

/// An async-openai client for `endpoint` without the crate's own retries, with `timeout` per
/// HTTP request, recording `Retry-After` for [`call`].
pub fn client(endpoint: &Endpoint, timeout: Duration) -> Client<OpenAIConfig> {
    let http = crate::http_client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .expect("the HTTP client builds");
    let service = tower::service_fn(move |factory: HttpRequestFactory| {
        let http = http.clone();
        async move {
            let request = factory.build().await?;
            let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
            if let Some(after) = retry_after(response.headers()) {
                let _ = RETRY_AFTER.try_with(|c| c.set(Some(after)));
            }
            Ok::<_, OpenAIError>(response)
        }
    });
    let mut config = OpenAIConfig::new().with_api_base(endpoint.base_url.trim_end_matches('/'));
    config = match &endpoint.api_key {
        Some(k) => config.with_api_key(k.expose_secret()),
        // Local servers (Ollama, faster-whisper) accept any key; OpenAI answers 401.
        None => config.with_api_key("none"),
    };
    Client::with_config(config).with_http_service(service)
}

/// `Retry-After` in seconds (HTTP dates are rare on these APIs; they count as absent).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// Whether a failed attempt is worth retrying, and an operator-facing reason that keeps the
/// error as its cause (`HTTP client: error sending request …: tcp connect error: Connection
/// refused`).
pub fn classify(e: OpenAIError) -> (bool, Reason) {
    match e {
        OpenAIError::ApiError(r) => {
            let status = r.status_code.as_u16();
            let quota = r.api_error.code.as_deref() == Some("insufficient_quota");
            let retry = (status == 429 && !quota) || status >= 500;
            (retry, Reason::new(format!("HTTP {status}"), r.api_error))
        }
        OpenAIError::Reqwest(e) => {
            let retry = e.is_timeout()
                || e.is_connect()
                || e.is_request()
                || e.is_body()
                || e.status()
                    .is_some_and(|s| s.as_u16() == 429 || s.is_server_error());
            (retry, Reason::new("HTTP client", e))
        }
        OpenAIError::JSONDeserialize(err, _) => (false, Reason::new("unexpected response", err)),
        other => (false, Reason::from_error(other)),
    }
}

/// Why a call gave up. The last attempt's error is kept as the source, so a log or a dead
/// letter shows the whole chain (a [`Reason`] shows it in its text too).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The circuit is open: no call was made.
    #[error("circuit open: the service failed repeatedly; not calling it for now")]
    CircuitOpen,
    /// The overall deadline passed (or would pass before the next attempt).
    #[error("deadline reached: {0}")]
    Deadline(#[source] Reason),
    /// A non-retryable failure, or retries exhausted.
    #[error(transparent)]
    Failed(Reason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool, successes: u32 },
}

/// A circuit breaker for one upstream, shared by all calls of a process.
#[derive(Debug)]
pub struct Breaker {
    upstream: &'static str,
    policy: Policy,
    mode: Mutex<Mode>,
}

impl Breaker {
    /// A breaker for `upstream` (its name in metrics) with `policy`'s thresholds.
    pub fn new(upstream: &'static str, policy: Policy) -> Self {
        metrics::describe_counter!(CALLS, "Calls to AI APIs by upstream and outcome");
        metrics::describe_counter!(RETRIES, "Retries of AI API calls");
        metrics::describe_gauge!(CIRCUIT, "Circuit breaker: 0 closed, 1 open, 2 half-open");
        metrics::describe_histogram!(
            LATENCY,
            "Seconds per successful AI API call, retries included"
        );
        metrics::gauge!(CIRCUIT, "upstream" => upstream).set(0.0);
        metrics::counter!(RETRIES, "upstream" => upstream).absolute(0);
        for outcome in ["ok", "failed", "circuit_open", "deadline"] {
            metrics::counter!(CALLS, "upstream" => upstream, "outcome" => outcome).absolute(0);
        }
        Self {
            upstream,
            policy,
            mode: Mutex::new(Mode::Closed { failures: 0 }),
        }
    }

    /// The policy it was made with.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// `closed`, `open` or `half_open`.
    pub fn state(&self) -> &'static str {
        match *self.mode.lock().expect("breaker lock") {
            Mode::Closed { .. } => "closed",
            Mode::Open { until } if Instant::now() >= until => "half_open",
            Mode::Open { .. } => "open",
            Mode::HalfOpen { .. } => "half_open",
        }
    }

    fn set(&self, mode: &mut Mode, new: Mode) {
        *mode = new;
        let v = match new {
            Mode::Closed { .. } => 0.0,
            Mode::Open { .. } => 1.0,
            Mode::HalfOpen { .. } => 2.0,
        };
        metrics::gauge!(CIRCUIT, "upstream" => self.upstream).set(v);
    }

    /// May a call go out now? While half-open, one probe at a time.
    fn acquire(&self) -> bool {
        let mut mode = self.mode.lock().expect("breaker lock");
        match *mode {
            Mode::Closed { .. } => true,
            Mode::Open { until } if Instant::now() >= until => {
                self.set(
                    &mut mode,
                    Mode::HalfOpen {
                        probing: true,
                        successes: 0,
                    },
                );
                tracing::info!(upstream = self.upstream, "circuit half-open: probing");
                true
            }
            Mode::Open { .. } => false,
            Mode::HalfOpen { probing: true, .. } => false,
            Mode::HalfOpen {
                probing: false,
                successes,
            } => {
                *mode = Mode::HalfOpen {
                    probing: true,
                    successes,
                };
                true
            }
        }
    }

    fn success(&self) {
        let mut mode = self.mode.lock().expect("breaker lock");
        match *mode {
            Mode::HalfOpen { successes, .. } => {
                if successes + 1 >= self.policy.breaker_close_after {
                    self.set(&mut mode, Mode::Closed { failures: 0 });
                    tracing::info!(upstream = self.upstream, "circuit closed again");
                } else {
                    *mode = Mode::HalfOpen {
                        probing: false,
                        successes: successes + 1,
                    };
                }
            }
            _ => self.set(&mut mode, Mode::Closed { failures: 0 }),
        }
    }

    fn failure(&self) {
        let mut mode = self.mode.lock().expect("breaker lock");
        let open = Mode::Open {
            until: Instant::now() + self.policy.breaker_open,
        };
        match *mode {
            Mode::Closed { failures } if failures + 1 >= self.policy.breaker_failures => {
                self.set(&mut mode, open);
                tracing::warn!(
                    upstream = self.upstream,
                    failures = failures + 1,
                    "circuit opened after consecutive failures"
                );
            }
            Mode::Closed { failures } => {
                *mode = Mode::Closed {
                    failures: failures + 1,
                }
            }
            Mode::HalfOpen { .. } => {
                self.set(&mut mode, open);
                tracing::warn!(upstream = self.upstream, "probe failed: circuit open again");
            }
            Mode::Open { .. } => {}
        }
    }

    /// A failure that says nothing about the upstream's health (a 400) ends a probe without
    /// reopening or closing the circuit.
    fn neutral(&self) {
        let mut mode = self.mode.lock().expect("breaker lock");
        if let Mode::HalfOpen { successes, .. } = *mode {
            *mode = Mode::HalfOpen {
                probing: false,
                successes,
            };
        }
    }
}

/// What one call achieved.
#[derive(Debug)]
pub struct Called<T> {
    /// What the call returned.
    pub value: T,
    /// Attempts made (1 = no retry).
    pub attempts: u32,
    /// How long it took, retries included.
    pub latency: Duration,
}

/// The wait before retrying after attempt `n` (from 1): `retry_base` doubled each time, ±20%.
fn backoff(policy: &Policy, n: u32) -> Duration {
    let base = policy.retry_base.as_secs_f64() * 2f64.powi(n as i32 - 1);
    let jitter = rand::rng().random_range(0.8..=1.2);
    Duration::from_secs_f64(base * jitter)
}

/// Runs `attempt` under the breaker with retries until it succeeds, fails for good, or
/// `deadline` passes.
pub async fn call<T, F, Fut>(
    breaker: &Breaker,
    deadline: Instant,
    mut attempt: F,
) -> Result<Called<T>, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OpenAIError>>,
{
    let upstream = breaker.upstream;
    let policy = breaker.policy.clone();
    let started = Instant::now();
    let outcome = |o: &'static str| {
        metrics::counter!(CALLS, "upstream" => upstream, "outcome" => o).increment(1);
    };
    let mut n: u32 = 0;
    loop {
        let now = Instant::now();
        if now >= deadline {
            outcome("deadline");
            return Err(CallError::Deadline(format!("after {n} attempt(s)").into()));
        }
        if !breaker.acquire() {
            outcome("circuit_open");
            return Err(CallError::CircuitOpen);
        }
        n += 1;
        let budget = policy.timeout.min(deadline - now);
        let (result, after) = RETRY_AFTER
            .scope(Cell::new(None), async {
                let r = tokio::time::timeout(budget, attempt()).await;
                (r, RETRY_AFTER.with(Cell::get))
            })
            .await;
        let (retryable, reason) = match result {
            Ok(Ok(value)) => {
                breaker.success();
                outcome("ok");
                metrics::histogram!(LATENCY, "upstream" => upstream)
                    .record(started.elapsed().as_secs_f64());
                return Ok(Called {
                    value,
                    attempts: n,
                    latency: started.elapsed(),
                });
            }
            Ok(Err(e)) => classify(e),
            Err(_) => (
                true,
                format!("timed out after {} ms", budget.as_millis()).into(),
            ),
        };
        if retryable {
            breaker.failure();
        } else {
            breaker.neutral();
            outcome("failed");
            return Err(CallError::Failed(reason));
        }
        if n > policy.retries {
            outcome("failed");
            return Err(CallError::Failed(Reason::new(
                format!("after {n} attempts"),
                reason,
            )));
        }
        let delay = after.unwrap_or_else(|| backoff(&policy, n));
        if Instant::now() + delay >= deadline {
            outcome("deadline");
            return Err(CallError::Deadline(Reason::new(
                "no time left to retry",
                reason,
            )));
        }
        tracing::warn!(upstream, attempt = n, delay_ms = delay.as_millis() as u64, error = %reason, "AI API call failed; retrying");
        metrics::counter!(RETRIES, "upstream" => upstream).increment(1);
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            timeout: Duration::from_secs(1),
            retries: 3,
            retry_base: Duration::from_millis(100),
            breaker_failures: 3,
            breaker_open: Duration::from_secs(30),
            breaker_close_after: 2,
        }
    }

    fn api_error(status: u16) -> OpenAIError {
        OpenAIError::ApiError(async_openai::error::ApiErrorResponse {
            status_code: reqwest::StatusCode::from_u16(status).unwrap(),
            api_error: async_openai::error::ApiError {
                message: "boom".into(),
                ..Default::default()
            },
        })
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_fails_fast_probes_and_closes_after_two_successes() {
        let b = Breaker::new("test-breaker", policy());
        let far = Instant::now() + Duration::from_secs(3600);
        // Three consecutive failures (one call with retries) open it.
        let mut calls = 0;
        let r: Result<Called<()>, _> = call(&b, far, || {
            calls += 1;
            async { Err(api_error(503)) }
        })
        .await;
        assert!(matches!(r, Err(CallError::CircuitOpen)), "{r:?}");
        assert_eq!(calls, 3);
        assert_eq!(b.state(), "open");
        // While open: no call at all.
        let mut called = false;
        let r: Result<Called<()>, _> = call(&b, far, || {
            called = true;
            async { Ok(()) }
        })
        .await;
        assert!(matches!(r, Err(CallError::CircuitOpen)), "{r:?}");
        assert!(!called);
        // After the open period: a probe; two successes close it.
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(b.state(), "half_open");
        call(&b, far, || async { Ok(()) }).await.unwrap();
        assert_eq!(b.state(), "half_open");
        call(&b, far, || async { Ok(()) }).await.unwrap();
        assert_eq!(b.state(), "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_backoff_only_what_is_retryable() {
        let b = Breaker::new(
            "test-retry",
            Policy {
                breaker_failures: 100,
                ..policy()
            },
        );
        let far = Instant::now() + Duration::from_secs(3600);
        let started = Instant::now();
        let mut n = 0;
        let r = call(&b, far, || {
            n += 1;
            let k = n;
            async move { if k < 3 { Err(api_error(429)) } else { Ok(k) } }
        })
        .await
        .unwrap();
        assert_eq!((r.value, r.attempts), (3, 3));
        // 100 ms then 200 ms, ±20%.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(240) && waited <= Duration::from_millis(360),
            "{waited:?}"
        );
        // A 400 is not retried; retries are bounded.
        let mut n = 0;
        let r: Result<Called<()>, _> = call(&b, far, || {
            n += 1;
            async { Err(api_error(400)) }
        })
        .await;
        assert!(matches!(&r, Err(CallError::Failed(m)) if m.to_string() == "HTTP 400: boom"));
        // The API's error is kept as the cause, not only as text.
        let source = std::error::Error::source(r.as_ref().unwrap_err()).expect("a cause");
        assert_eq!(source.to_string(), "boom");
        assert_eq!(n, 1);
        let mut n = 0;
        let r: Result<Called<()>, _> = call(&b, far, || {
            n += 1;
            async { Err(api_error(500)) }
        })
        .await;
        let e = r.unwrap_err().to_string();
        assert_eq!((e.as_str(), n), ("after 4 attempts: HTTP 500: boom", 4));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_attempts_and_waits() {
        let b = Breaker::new(
            "test-deadline",
            Policy {
                breaker_failures: 100,
                ..policy()
            },
        );
        // A hanging upstream: each attempt times out at the deadline.
        let deadline = Instant::now() + Duration::from_millis(500);
        let r: Result<Called<()>, _> = call(&b, deadline, || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        })
        .await;
        let e = r.unwrap_err().to_string();
        assert_eq!(
            e,
            "deadline reached: no time left to retry: timed out after 500 ms"
        );
        assert!(Instant::now() <= deadline + Duration::from_millis(1));
    }

    #[tokio::test]
    async fn a_refused_connection_keeps_its_cause_in_the_reason() {
        // Nothing listens on port 1: reqwest's own text names only the request, the cause
        // (the refused connection) is in its source chain.
        let e = crate::http_client::client()
            .get("http://127.0.0.1:1/v1/chat/completions")
            .send()
            .await
            .unwrap_err();
        let top = format!("HTTP client: {e}");
        let (retry, reason) = classify(OpenAIError::Reqwest(e));
        let shown = reason.to_string();
        assert!(
            retry && shown.starts_with(&top) && shown.len() > top.len(),
            "{shown}"
        );
        let refused = shown.to_lowercase().contains("connection refused");
        assert!(
            refused && std::error::Error::source(&reason).is_some(),
            "{shown}"
        );
    }
}
