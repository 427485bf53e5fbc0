//! A fake OpenAI chat endpoint for load and faults: answers every request after a fixed delay
//! with the echo of the last user text, fails a chosen share of requests (HTTP 500) and leaves
//! another share hanging past any client timeout; keeps nothing (the test fake records every
//! request).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use axum::routing::post;

/// How the fake model behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// Every answer takes this long.
    pub delay: Duration,
    /// Share of requests answered with HTTP 500 (0.0–1.0).
    pub fail: f64,
    /// Share of requests never answered in time (they hang for 10 minutes).
    pub hang: f64,
}

#[derive(Clone)]
struct Model {
    behaviour: Behaviour,
    calls: Arc<AtomicU64>,
}

/// A running fake model.
pub struct FakeModel {
    pub base_url: String,
    calls: Arc<AtomicU64>,
}

impl FakeModel {
    /// Serves `POST /v1/chat/completions` on a free loopback port, answering after `delay`.
    pub async fn start(delay: Duration) -> anyhow::Result<Self> {
        Self::start_with(Behaviour {
            delay,
            ..Behaviour::default()
        })
        .await
    }

    pub async fn start_with(behaviour: Behaviour) -> anyhow::Result<Self> {
        let calls = Arc::new(AtomicU64::new(0));
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(Model {
                behaviour,
                calls: calls.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            base_url: format!("http://{addr}/v1"),
            calls,
        })
    }

    /// Requests received so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

async fn complete(
    State(m): State<Model>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Response {
    m.calls.fetch_add(1, Ordering::Relaxed);
    let b = m.behaviour;
    let roll: f64 = rand::random_range(0.0..1.0);
    if roll < b.hang {
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
    if !b.delay.is_zero() {
        tokio::time::sleep(b.delay).await;
    }
    if roll < b.hang + b.fail {
        return shared::fake_chat::openai_error(
            500,
            "The server had an error while processing your request.",
        );
    }
    shared::fake_chat::completion(&format!(
        "You said: {}",
        shared::fake_chat::last_user_text(&body)
    ))
}
