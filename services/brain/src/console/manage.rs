//! The console's management pages: the `!config` settings, the whitelist, dead letters and
//! the audit log.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use shared::bus::Stream;
use shared::console::Session;
use shared::phone::Phone;

use super::{Api, ApiError, ApiResult};
use crate::settings;
use crate::store::{self, Role};

/// The value of `key` in full (the console shows the whole prompt).
fn full_value(cfg: &crate::Config, key: &str) -> serde_json::Value {
    match key {
        "model" => cfg.chat_model.clone().into(),
        "pre-prompt" => cfg.pre_prompt.clone().into(),
        "temperature" => cfg.temperature.map(f64::from).into(),
        "echo-transcript" => cfg.echo_transcript.into(),
        _ => serde_json::Value::Null,
    }
}

/// `GET /console/api/settings`: each setting, what it means, its value and whether it was
/// set here (or comes from the environment).
pub async fn settings(State(api): State<Api>) -> ApiResult<Vec<serde_json::Value>> {
    let cfg = api.settings.effective().await?;
    let stored = store::settings(&api.db).await?;
    Ok(Json(
        settings::KEYS
            .iter()
            .map(|(key, meaning)| {
                serde_json::json!({
                    "key": key,
                    "meaning": meaning,
                    "value": full_value(&cfg, key),
                    "set_here": stored.iter().any(|(k, _)| k == key),
                })
            })
            .collect(),
    ))
}

/// A setting to change: `value` null goes back to the environment's.
#[derive(Deserialize)]
pub struct SetBody {
    key: String,
    value: Option<String>,
}

/// `PUT /console/api/settings` `{"key": …, "value": … | null}`.
pub async fn set_setting(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Json(body): Json<SetBody>,
) -> ApiResult<serde_json::Value> {
    let key = body.key.trim().to_ascii_lowercase();
    if !settings::KEYS.iter().any(|(k, _)| *k == key) {
        return Err(ApiError::bad(format!("unknown setting {key:?}")));
    }
    let now = api.clock.now_ms();
    match &body.value {
        Some(v) => {
            let v = settings::validate(&key, v).map_err(ApiError::bad)?;
            let by = session
                .admin
                .contact_id
                .clone()
                .unwrap_or_else(|| session.admin.name.clone());
            api.audit(&session, "settings.set", &key, "").await?;
            store::set_setting(&api.db, &key, &v, &by, now).await?;
        }
        None => {
            api.audit(&session, "settings.unset", &key, "").await?;
            store::unset_setting(&api.db, &key).await?;
        }
    }
    api.settings.changed();
    let cfg = api.settings.effective().await?;
    Ok(Json(
        serde_json::json!({"key": key, "value": full_value(&cfg, &key)}),
    ))
}

/// `GET /console/api/whitelist`: numbers allowed, admins, and those who opted out.
pub async fn whitelist(State(api): State<Api>) -> ApiResult<Vec<store::Whitelisted>> {
    Ok(Json(store::whitelist(&api.db).await?))
}

/// A change to a number's access.
#[derive(Deserialize)]
pub struct ContactBody {
    number: String,
    /// `allow`, `deny`, `admin` or `user`.
    action: String,
}

/// `POST /console/api/whitelist` `{"number": …, "action": "allow"|"deny"|"admin"|"user"}`.
pub async fn change_contact(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Json(body): Json<ContactBody>,
) -> ApiResult<serde_json::Value> {
    let number = Phone::parse(&body.number)
        .map_err(|_| ApiError::bad("expected a phone number with country code"))?;
    let action = body.action.to_ascii_lowercase();
    if !matches!(action.as_str(), "allow" | "deny" | "admin" | "user") {
        return Err(ApiError::bad("action is allow, deny, admin or user"));
    }
    let now = api.clock.now_ms();
    let identity = [("phone".to_owned(), number.as_str().to_owned())];
    let c = store::resolve(&api.db, &identity, now).await?;
    if session.admin.contact_id.as_deref() == Some(c.id.as_str())
        && matches!(action.as_str(), "deny" | "user")
    {
        return Err(ApiError::bad(
            "you cannot take your own admin role or access",
        ));
    }
    api.audit(
        &session,
        &format!("whitelist.{action}"),
        number.as_str(),
        "",
    )
    .await?;
    match action.as_str() {
        "allow" => store::set_allowed(&api.db, &c.id, true, now).await?,
        "deny" => {
            store::set_allowed(&api.db, &c.id, false, now).await?;
            store::set_role(&api.db, &c.id, Role::User, now).await?;
        }
        "admin" => {
            store::set_role(&api.db, &c.id, Role::Admin, now).await?;
            store::set_allowed(&api.db, &c.id, true, now).await?;
        }
        _ => store::set_role(&api.db, &c.id, Role::User, now).await?,
    }
    Ok(Json(
        serde_json::json!({"number": number.as_str(), "action": action}),
    ))
}

/// `GET /console/api/deadletters`: per stream, how many and the oldest 50 (reasons and event
/// kinds only: never a message's content).
pub async fn dead_letters(State(api): State<Api>) -> ApiResult<Vec<serde_json::Value>> {
    let dlq = api.bus.dlq();
    let mut out = Vec::new();
    for s in Stream::ALL {
        out.push(serde_json::json!({
            "stream": s.name(),
            "count": dlq.len(s).await?,
            "entries": dlq.list(s, 50).await?,
        }));
    }
    Ok(Json(out))
}

/// Which dead letters (none: all of the stream's).
#[derive(Deserialize)]
pub struct IdsBody {
    #[serde(default)]
    ids: Vec<String>,
}

/// `POST /console/api/deadletters/{stream}/replay|discard` `{"ids": [...]}` (empty: all).
pub async fn dead_letter_action(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Path((stream, action)): Path<(String, String)>,
    Json(body): Json<IdsBody>,
) -> ApiResult<serde_json::Value> {
    let s: Stream = stream
        .parse()
        .map_err(|_| ApiError::not_found(format!("no stream named {stream:?}")))?;
    if !matches!(action.as_str(), "replay" | "discard") {
        return Err(ApiError::not_found("the action is replay or discard"));
    }
    let which = if body.ids.is_empty() {
        "all".to_owned()
    } else {
        format!("{} chosen", body.ids.len())
    };
    api.audit(&session, &format!("deadletters.{action}"), s.name(), &which)
        .await?;
    let dlq = api.bus.dlq();
    let n = if action == "replay" {
        dlq.replay(s, &body.ids).await?
    } else {
        let ids = if body.ids.is_empty() {
            dlq.list(s, 100_000)
                .await?
                .into_iter()
                .map(|d| d.id)
                .collect()
        } else {
            body.ids.clone()
        };
        dlq.discard(s, &ids).await?
    };
    Ok(Json(serde_json::json!({ action: n })))
}

/// `GET /console/api/audit`: the newest 200 console actions.
pub async fn audit(State(api): State<Api>) -> ApiResult<Vec<store::Audited>> {
    Ok(Json(store::audit_log(&api.db, 200).await?))
}

/// An action the gateway did itself (the WhatsApp session's), to record.
#[derive(Deserialize)]
pub struct RecordBody {
    action: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    detail: String,
}

/// `POST /console/api/audit`: the gateway records its own console actions here (`whatsapp.*`
/// only; the gateway never passes this route through from a browser).
pub async fn record(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Json(body): Json<RecordBody>,
) -> ApiResult<serde_json::Value> {
    let ok = body.action.starts_with("whatsapp.")
        && body.action.len() <= 64
        && body.target.len() <= 64
        && body.detail.len() <= 200;
    if !ok {
        return Err(ApiError::bad("only whatsapp.* actions are recorded here"));
    }
    api.audit(&session, &body.action, &body.target, &body.detail)
        .await?;
    Ok(Json(serde_json::json!({"recorded": true})))
}
