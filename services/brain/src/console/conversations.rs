//! Conversations on the console: the list (latest first, search by number), one conversation
//! with its messages and who wrote each, and the business's actions — reply as the business,
//! hand back to the bot, pause the bot for the contact.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shared::console::Session;

use super::{Api, ApiError, ApiResult};
use crate::store::{self, Contact};

/// `?phone=` narrows the list to numbers containing those digits.
#[derive(Deserialize)]
pub struct ListQuery {
    phone: Option<String>,
}

/// `GET /console/api/conversations`.
pub async fn list(
    State(api): State<Api>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Vec<store::Listed>> {
    Ok(Json(
        store::conversations(&api.db, q.phone.as_deref(), 200).await?,
    ))
}

/// `?after=<row>`: only messages logged after that row (the page polls with it).
#[derive(Deserialize)]
pub struct ShowQuery {
    #[serde(default)]
    after: i64,
}

/// One conversation.
#[derive(serde::Serialize)]
pub struct Shown {
    contact_id: String,
    phone: Option<String>,
    role: &'static str,
    allowed: bool,
    opted_out: bool,
    /// Waiting for a person: reference, reason, since (unix ms).
    handoff: Option<serde_json::Value>,
    paused_until_ms: Option<i64>,
    messages: Vec<store::Logged>,
}

async fn contact(api: &Api, id: &str) -> Result<Contact, ApiError> {
    store::contact(&api.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such contact (forgotten, or never wrote)"))
}

/// `GET /console/api/conversations/{contact}`: its newest 200 messages (or those after
/// `after`), oldest first.
pub async fn show(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> ApiResult<Shown> {
    let c = contact(&api, &id).await?;
    let messages = store::log_of(&api.db, &c.id, q.after, 200).await?;
    let now = api.clock.now_ms();
    Ok(Json(Shown {
        phone: store::phone_of(&api.db, &c.id).await?,
        role: c.role.as_str(),
        allowed: c.allowed,
        opted_out: c.opted_out,
        handoff: c.handoff.as_ref().map(|h| {
            serde_json::json!({"reference": h.reference, "reason": h.reason.as_str(), "since_ms": h.since_ms})
        }),
        paused_until_ms: c.paused_until_ms.filter(|&t| t > now),
        contact_id: c.id,
        messages,
    }))
}

/// `GET /console/api/conversations/{contact}/media/{row}`: the image logged with that
/// message, while the media store still keeps it (404 after).
pub async fn media(
    State(api): State<Api>,
    Path((id, row)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let gone = || ApiError::not_found("the image is no longer kept");
    let encoded = store::logged_media(&api.db, &id, row)
        .await?
        .ok_or_else(gone)?;
    let media = <shared::proto::MediaRef as prost::Message>::decode(encoded.as_slice())
        .map_err(|_| gone())?;
    let bytes = api.bus.read_media(&media).await?.ok_or_else(gone)?;
    let mime = if media.mime_type.starts_with("image/") {
        media.mime_type.clone()
    } else {
        "application/octet-stream".to_owned()
    };
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "private, max-age=300".to_owned()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        bytes,
    )
        .into_response())
}

/// A reply written on the console.
#[derive(Deserialize)]
pub struct ReplyBody {
    text: String,
}

/// Longest reply the console sends (WhatsApp's own limit is 4,096 characters).
const MAX_REPLY_CHARS: usize = 4096;

/// `POST /console/api/conversations/{contact}/reply` `{"text": …}`: sent to the customer as
/// the business, remembered and logged as a person's; the handoff no longer times out.
pub async fn reply(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Json(body): Json<ReplyBody>,
) -> ApiResult<serde_json::Value> {
    let text = body.text.trim();
    if text.is_empty() || text.chars().count() > MAX_REPLY_CHARS {
        return Err(ApiError::bad(format!(
            "a reply is 1 to {MAX_REPLY_CHARS} characters"
        )));
    }
    let c = contact(&api, &id).await?;
    let who = store::phone_of(&api.db, &c.id)
        .await?
        .unwrap_or_else(|| c.id.clone());
    api.audit(
        &session,
        "reply",
        &who,
        &format!("{} characters", text.chars().count()),
    )
    .await?;
    let now = api.clock.now_ms();
    let id = crate::commands::reply_id(&format!("{}|{now}|{text}", c.id));
    crate::commands::send_as_business(&api.db, &api.bus, &api.events, &c, text, now, id).await?;
    Ok(Json(serde_json::json!({"sent": true})))
}

/// `POST /console/api/conversations/{contact}/resume`: the bot answers the contact again
/// (the handoff or pause ends).
pub async fn resume(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> ApiResult<serde_json::Value> {
    let c = contact(&api, &id).await?;
    let who = store::phone_of(&api.db, &c.id)
        .await?
        .unwrap_or_else(|| c.id.clone());
    api.audit(&session, "resume", &who, "").await?;
    crate::tell::handoff_closed(&api.events, &api.bus, &c, "console").await?;
    let ended = store::end_handoff(&api.db, &c.id, api.clock.now_ms()).await?;
    Ok(Json(serde_json::json!({"resumed": ended})))
}

/// How long to pause the bot for a contact.
#[derive(Deserialize)]
pub struct PauseBody {
    minutes: u32,
}

/// `POST /console/api/conversations/{contact}/pause` `{"minutes": 1…10080}`: the bot stays
/// quiet for the contact (messages are still logged and remembered) until then, or until
/// resumed.
pub async fn pause(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Json(body): Json<PauseBody>,
) -> ApiResult<serde_json::Value> {
    if !(1..=7 * 24 * 60).contains(&body.minutes) {
        return Err(ApiError::bad("minutes is 1 to 10080 (a week)"));
    }
    let c = contact(&api, &id).await?;
    let until = api.clock.now_ms() + i64::from(body.minutes) * 60_000;
    let who = store::phone_of(&api.db, &c.id)
        .await?
        .unwrap_or_else(|| c.id.clone());
    api.audit(&session, "pause", &who, &format!("{} min", body.minutes))
        .await?;
    store::pause_contact(&api.db, &c.id, until).await?;
    Ok(Json(serde_json::json!({"paused_until_ms": until})))
}
