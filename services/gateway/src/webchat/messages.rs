//! The conversation's messages: listing them (`GET …/messages`, paged) and taking a new one
//! (`POST …/messages`: JSON text, or a multipart photo or voice note with a caption).

use axum::Json;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shared::http::json_error;
use shared::proto::inbound;

use super::{
    ChatMessage, Conversation, Direction, Reject, Webchat, history, now_rfc3339, unavailable,
};
use crate::config::TransportKind;
use crate::ingest::{Incoming, IngestError, MediaBytes, Outcome};
use crate::media::{MediaError, sniff};

/// The largest JSON body of a text message (bytes); the text in it is held to
/// `MAX_INPUT_CHARS` characters.
const MAX_TEXT_BYTES: usize = 64 * 1024;

/// The largest caption of a photo or voice note (WhatsApp allows 1,024 characters).
const MAX_CAPTION_BYTES: usize = 4 * 1024;

#[derive(Deserialize)]
pub(super) struct ListQuery {
    limit: Option<String>,
    before: Option<String>,
}

/// The conversation, oldest first: the newest `limit` messages (at most and by default
/// 1,000), older than the message `before` when paging back.
pub(super) async fn list_messages(
    State(wc): State<Webchat>,
    Conversation(contact): Conversation,
    Query(q): Query<ListQuery>,
) -> Response {
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => history::MAX_PAGE,
        Some(Ok(n)) if (1..=history::MAX_PAGE).contains(&n) => n,
        Some(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("limit must be a number from 1 to {}", history::MAX_PAGE),
            );
        }
    };
    let before = q.before.filter(|b| !b.is_empty());
    if before.as_ref().is_some_and(|b| b.len() > 200) {
        return json_error(StatusCode::BAD_REQUEST, "before must be a message id");
    }
    match wc
        .inner
        .history
        .page(&contact, limit, before.as_deref())
        .await
    {
        Ok(Some(list)) => Json(list).into_response(),
        Ok(None) => json_error(
            StatusCode::NOT_FOUND,
            "no message with the id given in before (it may have expired)",
        ),
        Err(e) => unavailable(&e),
    }
}

#[derive(Deserialize)]
struct TextBody {
    text: Option<serde_json::Value>,
}

/// Why a POST's body was refused.
#[derive(Debug)]
enum Refused {
    /// The file is over `MAX_MEDIA_MB`: answered like a body declared over it.
    FileTooLarge,
    /// Answered as it is.
    Rejected(Reject),
}

impl From<Reject> for Refused {
    fn from(r: Reject) -> Self {
        Self::Rejected(r)
    }
}

/// What a POST carried, validated.
struct Posted {
    kind: inbound::Kind,
    text: String,
    media: Option<MediaBytes>,
}

/// The body of a `POST …/messages`, validated; a refusal is answered (and counted) as is.
async fn read_posted(
    wc: &Webchat,
    headers: &HeaderMap,
    request: Request,
) -> Result<Posted, Response> {
    let limit = wc.inner.max_media;
    let too_large = || {
        metrics::counter!(crate::metrics::REJECTED, "reason" => "too_large").increment(1);
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            MediaError::TooLarge {
                limit_mb: limit / (1024 * 1024),
            }
            .to_string(),
        )
    };
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit + 256 * 1024)
    {
        return Err(too_large());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let max_chars = wc.inner.max_input_chars;
    let posted = if content_type.starts_with("application/json") {
        read_json(request, max_chars).await.map_err(Refused::from)
    } else if content_type.starts_with("multipart/form-data") {
        // Uploads are read whole into memory: a bounded number at once.
        let Ok(_upload) = wc.inner.uploads.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::REJECTED, "reason" => "busy").increment(1);
            return Err(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many uploads in progress (WEBCHAT_MAX_UPLOADS); try again shortly",
            ));
        };
        read_multipart(request, limit, max_chars).await
    } else {
        Err(Reject::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json {\"text\": \"...\"} or multipart/form-data with a file part",
        )
        .into())
    };
    posted.map_err(|refused| {
        let r = match refused {
            Refused::FileTooLarge => return too_large(),
            Refused::Rejected(r) => r,
        };
        if r.0 == StatusCode::PAYLOAD_TOO_LARGE {
            // A text or caption over its limit: its own reason.
            metrics::counter!(crate::metrics::REJECTED, "reason" => "too_large").increment(1);
        }
        if r.0 == StatusCode::BAD_REQUEST {
            metrics::counter!(crate::metrics::REJECTED, "reason" => "bad_request").increment(1);
        }
        r.into_response()
    })
}

pub(super) async fn post_message(
    State(wc): State<Webchat>,
    Conversation(contact): Conversation,
    headers: HeaderMap,
    request: Request,
) -> Response {
    // Redis is nearly full: what room is left goes to WhatsApp's customers.
    if wc.inner.high_water.is_over() {
        return crate::storage::HighWater::refusal();
    }
    let posted = match read_posted(&wc, &headers, request).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let message_id = shared::ids::new_id();
    // An Idempotency-Key makes a retried POST a duplicate instead of a second message.
    let transport_message_id = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map_or_else(|| message_id.clone(), |k| format!("{contact}:{k}"));
    let in_msg = ChatMessage {
        id: message_id.clone(),
        direction: Direction::In,
        kind: posted.kind.into(),
        text: posted.text.clone(),
        in_reply_to: None,
        at: now_rfc3339(),
        answers: Vec::new(),
    };
    let incoming = Incoming {
        transport: TransportKind::Webchat,
        transport_message_id,
        message_id: Some(message_id),
        chat_id: contact.clone(),
        identities: wc.identities(&contact),
        kind: posted.kind,
        text: posted.text,
        media: posted.media,
        sent_at_ms: 0,
        display_name: String::new(),
    };
    let history = wc.inner.history.clone();
    let outcome = wc
        .inner
        .ingest
        .accept_with(incoming, move |pipe, published| {
            // A message a rate limit refused is not kept in the history at all (its notice,
            // once a window, is): a flood within the limits must not fill Redis. What is left
            // of it is its one-minute dedup record.
            if published {
                history.append_commands(pipe, &contact, &in_msg);
                history.typing_commands(pipe, &contact);
            }
        })
        .await;
    match outcome {
        Ok(o) => {
            let status = match &o {
                Outcome::Published { .. } => "accepted",
                Outcome::Duplicate { .. } => "duplicate",
                Outcome::Limited { .. } => "rate_limited",
            };
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"id": o.message_id(), "status": status})),
            )
                .into_response()
        }
        Err(IngestError::Media(e)) => media_error(&e),
        Err(IngestError::Unavailable(e)) => unavailable(&e),
    }
}

fn media_error(e: &MediaError) -> Response {
    media_reject(e).into_response()
}

fn media_reject(e: &MediaError) -> Reject {
    let (status, reason) = match e {
        MediaError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        MediaError::Unsupported(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_type"),
        MediaError::Corrupt(_) | MediaError::Empty => {
            (StatusCode::UNPROCESSABLE_ENTITY, "corrupt_media")
        }
    };
    metrics::counter!(crate::metrics::REJECTED, "reason" => reason).increment(1);
    Reject::new(status, e.to_string())
}

/// A text or caption over `max_chars` characters (`MAX_INPUT_CHARS`): refused whole, before
/// anything is stored.
fn check_chars(text: &str, max_chars: usize, what: &str) -> Result<(), Reject> {
    if shared::proto::past_chars(text, max_chars).is_some() {
        return Err(Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the {what} is longer than {max_chars} characters"),
        ));
    }
    Ok(())
}

async fn read_json(request: Request, max_chars: usize) -> Result<Posted, Reject> {
    let body = axum::body::to_bytes(request.into_body(), MAX_TEXT_BYTES)
        .await
        .map_err(|_| {
            Reject::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the message is longer than 64 KB",
            )
        })?;
    let parsed: TextBody = serde_json::from_slice(&body).map_err(|e| {
        Reject::new(
            StatusCode::BAD_REQUEST,
            format!("expected JSON like {{\"text\": \"...\"}}: {e}"),
        )
    })?;
    let text = match parsed.text {
        Some(serde_json::Value::String(s)) => s,
        Some(_) => {
            return Err(Reject::new(
                StatusCode::BAD_REQUEST,
                "\"text\" must be a string",
            ));
        }
        None => return Err(Reject::new(StatusCode::BAD_REQUEST, "\"text\" is required")),
    };
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err(Reject::new(StatusCode::BAD_REQUEST, "\"text\" is empty"));
    }
    check_chars(&text, max_chars, "message")?;
    Ok(Posted {
        kind: inbound::Kind::Text,
        text,
        media: None,
    })
}

async fn read_multipart(request: Request, limit: u64, max_chars: usize) -> Result<Posted, Refused> {
    let mut mp = Multipart::from_request(request, &())
        .await
        .map_err(|e| Reject::new(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}")))?;
    let mut file: Option<(Vec<u8>, String)> = None;
    let mut caption = String::new();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(Reject::new(
                    e.status(),
                    format!("bad multipart body: {}", e.body_text()),
                )
                .into());
            }
        };
        match field.name() {
            Some("file") => {
                let declared = field.content_type().unwrap_or("").to_owned();
                let bytes = field.bytes().await.map_err(|e| {
                    Reject::new(
                        e.status(),
                        format!("cannot read the file: {}", e.body_text()),
                    )
                })?;
                if bytes.len() as u64 > limit {
                    return Err(Refused::FileTooLarge);
                }
                file = Some((bytes.to_vec(), declared));
            }
            Some("caption") => {
                caption = field
                    .text()
                    .await
                    .map_err(|e| {
                        Reject::new(
                            StatusCode::BAD_REQUEST,
                            format!("bad caption: {}", e.body_text()),
                        )
                    })?
                    .trim()
                    .to_owned();
                if caption.len() > MAX_CAPTION_BYTES {
                    return Err(Reject::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the caption is longer than 4 KB",
                    )
                    .into());
                }
                check_chars(&caption, max_chars, "caption")?;
            }
            _ => {}
        }
    }
    let Some((bytes, declared)) = file else {
        return Err(Reject::new(
            StatusCode::BAD_REQUEST,
            "multipart body needs a \"file\" part (audio or image)",
        )
        .into());
    };
    let sniffed = sniff(&bytes, &declared).map_err(|e| media_reject(&e))?;
    Ok(Posted {
        kind: sniffed.kind,
        text: caption,
        media: Some(MediaBytes {
            bytes,
            mime: sniffed.mime,
        }),
    })
}
