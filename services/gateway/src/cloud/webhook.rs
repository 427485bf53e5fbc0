//! `/webhooks/whatsapp` on the public listener: Meta's verification handshake (`GET`) and its
//! deliveries (`POST`), each verified by its `X-Hub-Signature-256` and kept on the webhooks
//! stream before `200` is answered — so Meta retries whatever Redis did not take (`503`), and
//! nothing slow (media downloads) runs while Meta waits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use shared::bus::{Publish, Publisher, Stream};
use shared::http::json_error;
use shared::proto::{Envelope, Payload, Transport, WebhookDelivery};

use super::payload::Notification;
use crate::metrics as m;

/// The webhook's path (the callback URL Meta is given ends with it).
pub const PATH: &str = "/webhooks/whatsapp";
/// Largest webhook body taken (Meta's are a few kilobytes).
const MAX_BODY: usize = 1024 * 1024;

struct Inner {
    app_secret: SecretString,
    verify_token: SecretString,
    publisher: Publisher,
}

/// The webhook's routes.
pub fn routes(cfg: &crate::config::CloudConfig, bus: &shared::bus::Bus) -> Router {
    let inner = Arc::new(Inner {
        app_secret: cfg.app_secret.clone(),
        verify_token: cfg.verify_token.clone(),
        publisher: bus.publisher(),
    });
    Router::new()
        .route(PATH, get(verify).post(deliver))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(inner)
}

/// The handshake: `hub.mode=subscribe`, the right `hub.verify_token` → `hub.challenge` as
/// plain text.
async fn verify(
    State(inner): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (Some(mode), Some(token), Some(challenge)) = (
        q.get("hub.mode"),
        q.get("hub.verify_token"),
        q.get("hub.challenge"),
    ) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "expected hub.mode, hub.verify_token and hub.challenge (Meta's webhook verification)",
        );
    };
    let expected = inner.verify_token.expose_secret().as_bytes();
    if mode != "subscribe" || !constant_time_eq(token.as_bytes(), expected) {
        tracing::warn!("webhook verification with a wrong verify token or mode");
        return json_error(
            StatusCode::FORBIDDEN,
            "wrong hub.verify_token (it must equal WA_CLOUD_VERIFY_TOKEN)",
        );
    }
    tracing::info!("webhook verified by Meta");
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        challenge.clone(),
    )
        .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // HMACs of both under one key compare in constant time whatever the lengths.
    let mac = |v: &[u8]| {
        let mut m = Hmac::<Sha256>::new_from_slice(b"switchboard").expect("any key length");
        m.update(v);
        m
    };
    mac(b).verify_slice(&mac(a).finalize().into_bytes()).is_ok()
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
pub fn signature_valid(secret: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let Some(hex_sig) = signature.and_then(|s| s.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// A delivery: signature checked, then kept on the webhooks stream, then `200`.
async fn deliver(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            metrics::counter!(m::CLOUD_WEBHOOKS, "result" => "bad_request").increment(1);
            return json_error(
                e.status(),
                format!("unreadable webhook body: {}", e.body_text()),
            );
        }
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !signature_valid(
        inner.app_secret.expose_secret().as_bytes(),
        &body,
        signature,
    ) {
        metrics::counter!(m::CLOUD_WEBHOOKS, "result" => "bad_signature").increment(1);
        tracing::warn!(
            signed = signature.is_some(),
            "webhook refused: missing or wrong X-Hub-Signature-256"
        );
        return json_error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-Hub-Signature-256 (the body must be signed with the app secret, WA_CLOUD_APP_SECRET)",
        );
    }
    // Who it names, so `!forget` can find it; a body that is not a notification is kept as
    // is and dead-lettered by the consumer (nothing lost, Meta not asked to resend it).
    let people = Notification::parse(&body)
        .map(|n| n.people())
        .unwrap_or_default();
    // Handled in order with the same customer's other deliveries: their messages reach the
    // brain in the order Meta sent them.
    let order_key = people
        .first()
        .map_or_else(|| "cloud".to_owned(), |p| format!("cloud:{p}"));
    let identities = people
        .iter()
        .flat_map(|p| super::inbound::identities_of(p))
        .collect();
    let env = Envelope::new(
        "gateway",
        Payload::Webhook(WebhookDelivery {
            transport: Transport::Cloud as i32,
            body: body.to_vec(),
            received_at_ms: shared::ids::now_ms(),
            identities,
        }),
    );
    let result = inner
        .publisher
        .publish(Publish::ordered(Stream::Webhooks, env, order_key))
        .await;
    metrics::histogram!(m::CLOUD_WEBHOOK_LATENCY).record(started.elapsed().as_secs_f64());
    match result {
        Ok(_) => {
            metrics::counter!(m::CLOUD_WEBHOOKS, "result" => "accepted").increment(1);
            (StatusCode::OK, axum::Json(serde_json::json!({"ok": true}))).into_response()
        }
        Err(e) => {
            metrics::counter!(m::CLOUD_WEBHOOKS, "result" => "unavailable").increment(1);
            tracing::warn!(error = %e, "webhook not kept: Redis unavailable; Meta will retry");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot keep the delivery right now; retry later",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_against_the_body() {
        let secret = b"app-secret";
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(signature_valid(secret, body, Some(&good)));
        assert!(!signature_valid(secret, b"{}", Some(&good)));
        assert!(!signature_valid(b"other", body, Some(&good)));
        assert!(!signature_valid(secret, body, None));
        assert!(!signature_valid(secret, body, Some(&good[7..])));
        assert!(!signature_valid(secret, body, Some("sha256=zz")));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
