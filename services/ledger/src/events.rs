//! Delivering events to the owner's webhook (`EVENTS_WEBHOOK_URL`, see [`shared::events`]): one
//! POST per event in the Standard Webhooks shape — `webhook-id` (the event's id, the same on
//! every try, so a receiver drops repeats), `webhook-timestamp` (this try's time, in seconds),
//! `webhook-signature` (`v1,` base64 HMAC-SHA256 of `id.timestamp.body`). A 2xx answer delivers
//! it; anything else, or no answer within 10 s, is tried again in place with the bus's backoff
//! (the contact's later events wait behind it, so they arrive in order) and dead-lettered after
//! `MAX_DELIVERIES`, after which the contact's later events go on.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use shared::bus::{Delivery, HandleError, Handler, Publish};
use shared::proto::Payload;

/// Events posted, by `type` and `result` (`delivered`, `failed`).
pub const POSTED: &str = "events_posted_total";

/// How long the receiver has to answer one POST.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The events stream's handler: posts each event to the owner's webhook.
pub struct Deliverer {
    http: reqwest::Client,
    url: SecretString,
    key: Arc<[u8]>,
}

impl Deliverer {
    /// Posts to `url`, signing with `key`.
    pub fn new(url: SecretString, key: Arc<[u8]>) -> anyhow::Result<Self> {
        metrics::describe_counter!(POSTED, "Events posted to the owner's webhook, by result");
        for k in shared::events::Kind::ALL {
            for r in ["delivered", "failed"] {
                let _ = metrics::counter!(POSTED, "type" => k.as_str(), "result" => r);
            }
        }
        let http = shared::http_client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, url, key })
    }

    async fn post(&self, kind: &str, id: &str, body: Vec<u8>) -> Result<(), String> {
        let now = shared::ids::now_ms() / 1000;
        let signature = shared::events::sign(&self.key, id, now, &body);
        let res = self
            .http
            .post(self.url.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            // Never the URL: it is a credential.
            .map_err(|e| format!("{kind}: {}", e.without_url()))?;
        let status = res.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{kind}: the receiver answered {status}"))
        }
    }
}

impl Handler for Deliverer {
    async fn handle(&self, d: Delivery) -> Result<Vec<Publish>, HandleError> {
        let Some(Payload::OwnerEvent(e)) = &d.envelope.payload else {
            return Err(HandleError::Permanent(
                "not an event for the owner's webhook".into(),
            ));
        };
        let body = shared::events::body(&e.r#type, d.envelope.created_at_ms, &e.data_json);
        let kind = e
            .r#type
            .parse::<shared::events::Kind>()
            .map_or("other", shared::events::Kind::as_str);
        match self.post(kind, &d.envelope.event_id, body).await {
            Ok(()) => {
                metrics::counter!(POSTED, "type" => kind, "result" => "delivered").increment(1);
                Ok(Vec::new())
            }
            Err(reason) => {
                metrics::counter!(POSTED, "type" => kind, "result" => "failed").increment(1);
                tracing::info!(
                    attempt = d.deliveries,
                    "the owner's webhook did not take an event; trying again later"
                );
                Err(HandleError::retry("events webhook", reason))
            }
        }
    }

    fn deadline(&self) -> Duration {
        TIMEOUT + Duration::from_secs(5)
    }
}
