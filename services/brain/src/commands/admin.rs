//! The admin commands that read or change other contacts and settings: `!deny`, `!role`,
//! `!forget`, `!usage`, `!stats`, `!config`.

use shared::bus::HandleError;
use shared::db::Db;
use shared::phone::Phone;
use shared::redact::hash_id;
use shared::usage::Totals;

use super::{Office, reply, target};
use crate::domain::{Decision, Outcome};
use crate::settings;
use crate::store::{self, Contact, OrRetry, Role};

pub(super) async fn deny(
    db: &Db,
    admin: &Contact,
    number: &Phone,
    now: i64,
) -> Result<Decision, HandleError> {
    let target = target(db, number, now).await?;
    if target.id == admin.id {
        return Ok(reply("You cannot deny yourself."));
    }
    store::set_allowed(db, &target.id, false, now)
        .await
        .or_retry()?;
    store::set_role(db, &target.id, Role::User, now)
        .await
        .or_retry()?;
    Ok(reply(format!("{number} may no longer use the assistant.")))
}

pub(super) async fn set_role(
    db: &Db,
    admin: &Contact,
    number: &Phone,
    role: Role,
    now: i64,
) -> Result<Decision, HandleError> {
    let target = target(db, number, now).await?;
    if target.id == admin.id && role == Role::User {
        return Ok(reply("You cannot remove your own admin role."));
    }
    store::set_role(db, &target.id, role, now)
        .await
        .or_retry()?;
    if role == Role::Admin {
        store::set_allowed(db, &target.id, true, now)
            .await
            .or_retry()?;
    }
    Ok(reply(format!("{number} is now {}.", role.as_str())))
}

/// `!forget`: the contact's rows, and what Redis holds about them.
pub(super) async fn forget(office: &Office, number: &Phone) -> Result<Decision, HandleError> {
    let db = office.db();
    let Some(target) = store::contact_by_phone(db, number.as_str())
        .await
        .or_retry()?
    else {
        return Ok(reply(format!("I have nothing stored for {number}.")));
    };
    // Redis first: its keys are found through the identities the database holds.
    let person = shared::bus::Person {
        identities: store::identity_values(db, &target.id).await.or_retry()?,
        contact_id: target.id.clone(),
    };
    let erased = office
        .bus()
        .forget(&person)
        .await
        .map_err(|e| HandleError::retry("forget in Redis", e))?;
    store::forget(db, &target.id).await.or_retry()?;
    Ok(reply(format!(
        "Forgotten: {number}'s conversation and identities are erased, with {} web chat history, {} media item{} and {} dead letter{} (spend stays in the totals, unlinked).",
        if erased.histories > 0 { "its" } else { "no" },
        erased.media,
        if erased.media == 1 { "" } else { "s" },
        erased.dead_letters,
        if erased.dead_letters == 1 { "" } else { "s" },
    )))
}

pub(super) async fn usage(
    office: &Office,
    label: &str,
    days: i64,
    now: i64,
) -> Result<Decision, HandleError> {
    let (db, cfg) = (office.db(), office.config());
    let to = cfg.days.day_of(now);
    let from = cfg.days.days_back(now, days - 1);
    let total = shared::usage::totals(db, &from, &to).await.or_retry()?;
    let top = shared::usage::top_contacts(db, &from, &to, 5)
        .await
        .or_retry()?;
    let mut text = format!(
        "Usage, {label} ({from} – {to}, {}):\n{}",
        cfg.days.name(),
        totals_line(&total)
    );
    if !top.is_empty() {
        text.push_str("\n\nTop contacts:");
        for (i, (c, t)) in top.iter().enumerate() {
            let who = c
                .as_deref()
                .map_or_else(|| "(forgotten)".to_owned(), hash_id);
            text.push_str(&format!("\n{}. {who}: {}", i + 1, t.cost));
        }
    }
    Ok(reply(text))
}

pub(super) async fn stats(office: &Office, now: i64) -> Result<Decision, HandleError> {
    let (db, cfg) = (office.db(), office.config());
    let today = cfg.days.day_of(now);
    let since = cfg.days.next_day_start_ms(now - 86_400_000);
    let (messages, contacts, errors) = store::activity(db, since, &Outcome::errors())
        .await
        .or_retry()?;
    let from_knowledge = store::count_outcomes(db, since, &[Outcome::Knowledge.as_str()])
        .await
        .or_retry()?;
    let latency = shared::usage::average_latency_ms(db, &today, &today)
        .await
        .or_retry()?;
    let ended = store::ended_since(db, since).await.or_retry()?;
    let conversations = if ended.is_empty() {
        String::new()
    } else {
        let total: i64 = ended.iter().map(|(_, n)| n).sum();
        let parts: Vec<String> = ended
            .iter()
            .map(|(o, n)| format!("{} {}", thousands(*n), o.replace('_', " ")))
            .collect();
        format!(
            "\nConversations ended: {} ({}).",
            thousands(total),
            parts.join(", ")
        )
    };
    Ok(reply(
        format!(
            "Today ({today}): {} messages from {} contacts, {} errors, {} answered from the knowledge base (AI calls saved), average AI latency {}.",
            thousands(messages),
            thousands(contacts),
            thousands(errors),
            thousands(from_knowledge),
            latency.map_or_else(|| "—".to_owned(), |ms| format!("{ms} ms"))
        ) + &conversations,
    ))
}

fn thousands(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn totals_line(t: &Totals) -> String {
    let mut line = format!(
        "{} — {} prompt + {} completion tokens, {} call{}",
        t.cost,
        thousands(t.prompt_tokens),
        thousands(t.completion_tokens),
        thousands(t.records),
        if t.records == 1 { "" } else { "s" }
    );
    if t.audio_ms > 0 {
        line.push_str(&format!(", {:.1} audio min", t.audio_ms as f64 / 60_000.0));
    }
    line
}

/// `!config`: the settings with where each comes from.
pub(super) async fn show_config(office: &Office) -> Result<Decision, HandleError> {
    let stored = store::settings(office.db()).await.or_retry()?;
    let eff = settings::apply(office.config(), &stored);
    let mut text = "Settings:".to_owned();
    for (key, what) in settings::KEYS {
        let from = if stored.iter().any(|(k, _)| k == key) {
            "set here"
        } else {
            "environment"
        };
        text.push_str(&format!(
            "\n{key} = {} ({from}) — {what}",
            settings::current(&eff, key)
        ));
    }
    text.push_str("\n\n!config set <key> <value> changes one; !config unset <key> goes back to the environment.");
    Ok(reply(text))
}

pub(super) async fn set_config(
    office: &Office,
    admin: &Contact,
    key: &str,
    value: &str,
    now: i64,
) -> Result<Decision, HandleError> {
    match settings::validate(key, value) {
        Ok(v) => {
            let before = settings::current(&office.effective().await?, key);
            store::set_setting(office.db(), key, &v, &admin.id, now)
                .await
                .or_retry()?;
            office.settings_changed();
            let after = settings::current(&office.effective().await?, key);
            tracing::info!(key, "setting changed by an admin");
            Ok(reply(format!("Done: {key} is now {after} (was {before}).")))
        }
        Err(e) => Ok(reply(format!("Not changed: {e}."))),
    }
}

pub(super) async fn unset_config(office: &Office, key: &str) -> Result<Decision, HandleError> {
    if store::unset_setting(office.db(), key).await.or_retry()? {
        office.settings_changed();
        let now_value = settings::current(&office.effective().await?, key);
        Ok(reply(format!(
            "Done: {key} is back to the environment's value ({now_value})."
        )))
    } else {
        Ok(reply(format!("{key} was not set here.")))
    }
}
