//! `!` commands, parsed before anything reaches the model. Everyone: `!help`, `!reset`.
//! Admins: `!allow`, `!deny`, `!role`, `!forget`, `!usage`, `!stats`, `!config`. Roles come
//! from the database only: nothing typed here raises the sender's role unless they already are
//! an admin.

use shared::bus::HandleError;
use shared::phone::Phone;
use shared::redact::hash_id;
use shared::usage::Totals;

use crate::handler::{Brain, Decision, OrRetry};
use crate::metrics as m;
use crate::outcome::Outcome;
use crate::settings;
use crate::store::{self, Contact, Role};

const HELP_USER: &str = "Commands:\n!help — this list\n!reset — forget our conversation so far";
const HELP_ADMIN: &str = "\n\nAdmin commands:\n!allow <number> — let a number use the assistant\n\
!deny <number> — stop a number from using it\n!role <number> admin|user — set a role\n\
!forget <number> — erase a contact's memory and identities\n!usage [today|7d|30d] — spend and tokens\n\
!stats — today's activity\n!config, !config set <key> <value>, !config unset <key> — settings";

const KNOWN: &[&str] = &[
    "help", "reset", "allow", "deny", "role", "forget", "usage", "stats", "config",
];
const ADMIN_ONLY: &[&str] = &[
    "allow", "deny", "role", "forget", "usage", "stats", "config",
];

fn reply(text: impl Into<String>) -> Decision {
    Decision::notice(&text.into(), Outcome::Command)
}

fn help(contact: &Contact) -> String {
    if contact.role == Role::Admin {
        format!("{HELP_USER}{HELP_ADMIN}")
    } else {
        HELP_USER.to_owned()
    }
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

pub(crate) async fn run(
    brain: &Brain,
    contact: &Contact,
    text: &str,
) -> Result<Decision, HandleError> {
    let mut words = text.split_whitespace();
    let name = words
        .next()
        .unwrap_or("!")
        .trim_start_matches('!')
        .to_ascii_lowercase();
    let args: Vec<&str> = words.collect();
    let known = KNOWN.contains(&name.as_str());
    metrics::counter!(m::COMMANDS, "command" => if known { "known" } else { "unknown" })
        .increment(1);
    if ADMIN_ONLY.contains(&name.as_str()) && contact.role != Role::Admin {
        return Ok(reply(brain.cfg.messages.admin_only.clone()));
    }
    let now = shared::ids::now_ms();
    let db = &brain.db;
    match name.as_str() {
        "help" => Ok(reply(help(contact))),
        "reset" => {
            store::reset_memory(db, &contact.id).await.or_retry()?;
            Ok(reply(
                "Done: I've forgotten our conversation. How can I help?",
            ))
        }
        "allow" | "deny" | "role" | "forget" => {
            // Numbers are often written with spaces: `!allow +1 555 000 1111`.
            let (number_words, role_word) = match (name.as_str(), args.split_last()) {
                ("role", Some((last, rest))) => (rest, Some(*last)),
                _ => (args.as_slice(), None),
            };
            let Some(number) = Phone::parse(&number_words.join(" "))
                .ok()
                .filter(|_| !number_words.is_empty())
            else {
                return Ok(reply(format!(
                    "Usage: !{name} <phone number with country code>{}",
                    if name == "role" { " admin|user" } else { "" }
                )));
            };
            if name == "forget" {
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
                let erased = brain
                    .bus
                    .forget(&person)
                    .await
                    .map_err(|e| HandleError::Retry(format!("forget in Redis: {e}")))?;
                store::forget(db, &target.id).await.or_retry()?;
                return Ok(reply(format!(
                    "Forgotten: {number}'s conversation and identities are erased, with {} web chat history, {} media item{} and {} dead letter{} (spend stays in the totals, unlinked).",
                    if erased.histories > 0 { "its" } else { "no" },
                    erased.media,
                    if erased.media == 1 { "" } else { "s" },
                    erased.dead_letters,
                    if erased.dead_letters == 1 { "" } else { "s" },
                )));
            }
            let target =
                store::resolve(db, &[("phone".to_owned(), number.as_str().to_owned())], now)
                    .await
                    .or_retry()?;
            match name.as_str() {
                "allow" => {
                    store::set_allowed(db, &target.id, true, now)
                        .await
                        .or_retry()?;
                    Ok(reply(format!("{number} may now use the assistant.")))
                }
                "deny" => {
                    if target.id == contact.id {
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
                _ => {
                    let Some(role) = role_word.and_then(|r| Role::parse(&r.to_ascii_lowercase()))
                    else {
                        return Ok(reply("Usage: !role <number> admin|user"));
                    };
                    if target.id == contact.id && role == Role::User {
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
            }
        }
        "usage" => {
            let (label, days) = match args.first().map(|a| a.to_ascii_lowercase()).as_deref() {
                None | Some("today") => ("today", 1),
                Some("7d") => ("7 days", 7),
                Some("30d") => ("30 days", 30),
                Some(_) => return Ok(reply("Usage: !usage [today|7d|30d]")),
            };
            let to = brain.cfg.days.day_of(now);
            let from = brain.cfg.days.days_back(now, days - 1);
            let total = shared::usage::totals(db, &from, &to).await.or_retry()?;
            let top = shared::usage::top_contacts(db, &from, &to, 5)
                .await
                .or_retry()?;
            let mut text = format!(
                "Usage, {label} ({from} – {to}, {}):\n{}",
                brain.cfg.days.name(),
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
        "stats" => {
            let today = brain.cfg.days.day_of(now);
            let since = brain.cfg.days.next_day_start_ms(now - 86_400_000);
            let (messages, contacts, errors) = store::activity(db, since, &Outcome::errors())
                .await
                .or_retry()?;
            let latency = shared::usage::average_latency_ms(db, &today, &today)
                .await
                .or_retry()?;
            Ok(reply(format!(
                "Today ({today}): {} messages from {} contacts, {} errors, average AI latency {}.",
                thousands(messages),
                thousands(contacts),
                thousands(errors),
                latency.map_or_else(|| "—".to_owned(), |ms| format!("{ms} ms"))
            )))
        }
        "config" => config(brain, contact, &args, now).await,
        _ => Ok(reply(format!(
            "I don't know that command.\n\n{}",
            help(contact)
        ))),
    }
}

async fn config(
    brain: &Brain,
    contact: &Contact,
    args: &[&str],
    now: i64,
) -> Result<Decision, HandleError> {
    let db = &brain.db;
    match args.first().map(|a| a.to_ascii_lowercase()).as_deref() {
        None => {
            let stored = store::settings(db).await.or_retry()?;
            let eff = settings::apply(&brain.cfg, &stored);
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
        Some("set") => {
            let (Some(key), true) = (args.get(1), args.len() > 2) else {
                return Ok(reply("Usage: !config set <key> <value>"));
            };
            let key = key.to_ascii_lowercase();
            let value = args[2..].join(" ");
            match settings::validate(&key, &value) {
                Ok(v) => {
                    let before = settings::current(&brain.effective().await?, &key);
                    store::set_setting(db, &key, &v, &contact.id, now)
                        .await
                        .or_retry()?;
                    brain.settings_changed();
                    let after = settings::current(&brain.effective().await?, &key);
                    tracing::info!(key, "setting changed by an admin");
                    Ok(reply(format!("Done: {key} is now {after} (was {before}).")))
                }
                Err(e) => Ok(reply(format!("Not changed: {e}."))),
            }
        }
        Some("unset") => {
            let Some(key) = args.get(1).map(|k| k.to_ascii_lowercase()) else {
                return Ok(reply("Usage: !config unset <key>"));
            };
            if store::unset_setting(db, &key).await.or_retry()? {
                brain.settings_changed();
                let now_value = settings::current(&brain.effective().await?, &key);
                Ok(reply(format!(
                    "Done: {key} is back to the environment's value ({now_value})."
                )))
            } else {
                Ok(reply(format!("{key} was not set here.")))
            }
        }
        Some(_) => Ok(reply(
            "Usage: !config, !config set <key> <value>, !config unset <key>",
        )),
    }
}
