//! The gateway's metrics, registered at zero at startup.

use crate::config::TransportKind;
use crate::transport::{ReceiptStatus, SessionState};

/// Inbound messages published, by transport and kind.
pub const INBOUND: &str = "gateway_inbound_total";
/// Duplicates dropped.
pub const DUPLICATES: &str = "gateway_duplicates_dropped_total";
/// Messages refused by a rate limit, by scope.
pub const RATE_LIMITED: &str = "gateway_rate_limited_total";
/// Requests refused (too large, bad request, busy, …), by reason.
pub const REJECTED: &str = "gateway_inbound_rejected_total";
/// 1 while Redis is past `REDIS_HIGH_WATER_PERCENT` of its `maxmemory` (the web chat refuses
/// new visitors and messages).
pub const REDIS_HIGH_WATER: &str = "gateway_redis_high_water";
/// Message parts sent.
pub const OUTBOUND_SENT: &str = "gateway_outbound_sent_total";
/// Sends that failed, transient or permanent.
pub const OUTBOUND_FAILED: &str = "gateway_outbound_failed_total";
/// Parts not sent again on a redelivery (already sent).
pub const OUTBOUND_SKIPPED: &str = "gateway_outbound_already_sent_total";
/// Delivery receipts by status.
pub const RECEIPTS: &str = "gateway_outbound_receipts_total";
/// From the outbound event to the transport accepting it.
pub const DELIVERY_LATENCY: &str = "gateway_delivery_latency_seconds";
/// How long a transport takes to accept a send.
pub const SEND_LATENCY: &str = "gateway_send_latency_seconds";
/// From the send to the delivered receipt.
pub const RECEIPT_LATENCY: &str = "gateway_receipt_latency_seconds";
/// Messages the business wrote to customers itself (from its phone), by transport.
pub const OWNER_MESSAGES: &str = "gateway_owner_messages_total";
/// 1 for each transport's current session state.
pub const SESSION_STATE: &str = "gateway_session_state";

/// Cloud API webhook requests, by result (`accepted`, `bad_signature`, `bad_request`,
/// `unavailable`).
pub const CLOUD_WEBHOOKS: &str = "gateway_cloud_webhooks_total";
/// Cloud API messages and statuses ignored as older than the replay window, by kind
/// (`message`, `status`): replayed deliveries, or deliveries Meta retried for over a day.
pub const CLOUD_STALE: &str = "gateway_cloud_stale_total";
/// WhatsApp Web messages older than the dedup window, dropped unanswered ([`crate::web`]).
pub const WEB_STALE: &str = "gateway_web_stale_total";
/// Seconds from a Cloud API webhook request's arrival to its answer (kept on the stream).
pub const CLOUD_WEBHOOK_LATENCY: &str = "gateway_cloud_webhook_seconds";
/// Cloud API sends by outcome (`sent`, `throttled`, `transient`, `window_closed`, `refused`,
/// `unauthorized`).
pub const CLOUD_SENDS: &str = "gateway_cloud_sends_total";

/// How a Cloud API send ended: the `outcome` label of `gateway_cloud_sends_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Accepted by WhatsApp.
    Sent,
    /// Rate-limited (retried).
    Throttled,
    /// WhatsApp or the network failing (retried).
    Transient,
    /// The customer's 24-hour window is closed (only a template could reach them).
    WindowClosed,
    /// Refused for good.
    Refused,
    /// The access token was refused (retried: the operator may fix it).
    Unauthorized,
}

impl SendOutcome {
    /// Every outcome, for registering the metric at zero.
    pub const ALL: [Self; 6] = [
        Self::Sent,
        Self::Throttled,
        Self::Transient,
        Self::WindowClosed,
        Self::Refused,
        Self::Unauthorized,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Throttled => "throttled",
            Self::Transient => "transient",
            Self::WindowClosed => "window_closed",
            Self::Refused => "refused",
            Self::Unauthorized => "unauthorized",
        }
    }

    /// Counts one send that ended so.
    pub fn count(self) {
        metrics::counter!(CLOUD_SENDS, "outcome" => self.label()).increment(1);
    }
}

const KINDS: [&str; 4] = ["text", "voice", "image", "other"];

/// Describes every metric and registers it at zero for the transports run.
pub fn register(transports: &[TransportKind]) {
    metrics::describe_counter!(INBOUND, "Inbound messages published, by transport and kind");
    metrics::describe_counter!(DUPLICATES, "Inbound messages dropped as duplicates");
    metrics::describe_counter!(
        OWNER_MESSAGES,
        "Messages the business wrote to customers itself (the bot pauses for them)"
    );
    metrics::describe_counter!(
        RATE_LIMITED,
        "Inbound messages refused by a rate limit, by scope"
    );
    metrics::describe_counter!(REJECTED, "Inbound messages refused as bad input, by reason");
    metrics::describe_counter!(OUTBOUND_SENT, "Outbound messages accepted by the transport");
    metrics::describe_counter!(
        OUTBOUND_FAILED,
        "Outbound send failures, by kind of failure"
    );
    metrics::describe_counter!(
        OUTBOUND_SKIPPED,
        "Outbound parts not sent again because a record shows they were sent"
    );
    metrics::describe_counter!(RECEIPTS, "Delivery receipts by status");
    metrics::describe_histogram!(
        DELIVERY_LATENCY,
        "Seconds from an outbound event's creation to the transport accepting it"
    );
    metrics::describe_histogram!(SEND_LATENCY, "Seconds one transport send took");
    metrics::describe_histogram!(
        RECEIPT_LATENCY,
        "Seconds from the transport accepting a message to its delivery receipt"
    );
    metrics::describe_gauge!(
        SESSION_STATE,
        "1 for the current state of each transport session"
    );
    register_storage(transports);
    for scope in ["contact", "global"] {
        metrics::counter!(RATE_LIMITED, "scope" => scope).absolute(0);
    }
    register_edge();
    if transports.contains(&TransportKind::Cloud) {
        register_cloud();
    }
    for t in transports {
        let t = t.as_str();
        for kind in KINDS {
            metrics::counter!(INBOUND, "transport" => t, "kind" => kind).absolute(0);
        }
        metrics::counter!(DUPLICATES, "transport" => t).absolute(0);
        metrics::counter!(OWNER_MESSAGES, "transport" => t).absolute(0);
        metrics::counter!(OUTBOUND_SENT, "transport" => t).absolute(0);
        for failure in ["transient", "permanent"] {
            metrics::counter!(OUTBOUND_FAILED, "transport" => t, "failure" => failure).absolute(0);
        }
        metrics::counter!(OUTBOUND_SKIPPED, "transport" => t).absolute(0);
        let _ = metrics::histogram!(DELIVERY_LATENCY, "transport" => t);
        let _ = metrics::histogram!(SEND_LATENCY, "transport" => t);
        let _ = metrics::histogram!(RECEIPT_LATENCY, "transport" => t);
        for s in [
            ReceiptStatus::Delivered,
            ReceiptStatus::Read,
            ReceiptStatus::Failed,
        ] {
            metrics::counter!(RECEIPTS, "transport" => t, "status" => s.as_str()).absolute(0);
        }
        for s in SessionState::ALL {
            metrics::gauge!(SESSION_STATE, "transport" => t, "state" => s.as_str()).set(0.0);
        }
    }
}

/// The media store, Redis's high-water mark, and what is dropped as older than the dedup
/// window ([`crate::storage`]).
fn register_storage(transports: &[TransportKind]) {
    metrics::describe_gauge!(crate::media::STORE_BYTES, "Bytes held by the media store");
    metrics::describe_counter!(
        crate::media::EVICTED,
        "Media items evicted to stay under MEDIA_CAP_MB"
    );
    metrics::counter!(crate::media::EVICTED).absolute(0);
    metrics::describe_gauge!(
        REDIS_HIGH_WATER,
        "1 while Redis is past REDIS_HIGH_WATER_PERCENT of maxmemory (the web chat refuses new visitors and messages)"
    );
    metrics::gauge!(REDIS_HIGH_WATER).set(0.0);
    metrics::gauge!(crate::media::STORE_BYTES).set(0.0);
    if transports.contains(&TransportKind::Web) {
        metrics::describe_counter!(
            WEB_STALE,
            "WhatsApp Web messages older than the dedup window (a re-sent backlog), dropped unanswered"
        );
        metrics::counter!(WEB_STALE).absolute(0);
    }
}

/// What the public listener refused at its edge ([`crate::edge`], `serve_public`).
fn register_edge() {
    metrics::describe_counter!(
        shared::http::PUBLIC_REFUSED,
        "Connections and requests the public listener refused at its edge, by reason"
    );
    for reason in shared::http::REFUSED_REASONS {
        metrics::counter!(shared::http::PUBLIC_REFUSED, "reason" => reason).absolute(0);
    }
}

fn register_cloud() {
    metrics::describe_counter!(
        CLOUD_WEBHOOKS,
        "Cloud API webhook requests, by result (accepted, bad_signature, bad_request, unavailable)"
    );
    metrics::describe_histogram!(
        CLOUD_WEBHOOK_LATENCY,
        "Seconds to answer a Cloud API webhook request (verified and kept on the stream)"
    );
    metrics::describe_counter!(CLOUD_SENDS, "Cloud API sends, by outcome");
    metrics::describe_counter!(
        CLOUD_STALE,
        "Cloud API messages and statuses ignored as older than the 24-hour replay window, by kind"
    );
    for k in ["message", "status"] {
        metrics::counter!(CLOUD_STALE, "kind" => k).absolute(0);
    }
    for r in ["accepted", "bad_signature", "bad_request", "unavailable"] {
        metrics::counter!(CLOUD_WEBHOOKS, "result" => r).absolute(0);
    }
    let _ = metrics::histogram!(CLOUD_WEBHOOK_LATENCY);
    for o in SendOutcome::ALL {
        metrics::counter!(CLOUD_SENDS, "outcome" => o.label()).absolute(0);
    }
}

/// Sets the session-state gauges of one transport.
pub fn session_state(transport: TransportKind, state: SessionState) {
    for s in SessionState::ALL {
        metrics::gauge!(SESSION_STATE, "transport" => transport.as_str(), "state" => s.as_str())
            .set(if s == state { 1.0 } else { 0.0 });
    }
}
