//! `!` commands, parsed ([`Command::parse`]) before anything reaches the model, then run
//! ([`Command::run`]). Everyone: `!help`, `!reset`. Admins: `!allow`, `!deny`, `!role`,
//! `!forget`, `!usage`, `!stats`, `!config`. Roles come from the database only: nothing typed
//! here raises the sender's role unless they already are an admin.

use shared::bus::{Bus, HandleError};
use shared::db::Db;
use shared::phone::Phone;
use shared::redact::hash_id;
use shared::usage::Totals;

use crate::config::Config;
use crate::decision::{Decision, OrRetry};
use crate::metrics as m;
use crate::outcome::Outcome;
use crate::settings;
use crate::store::{self, Contact, Role};

const HELP_USER: &str = "Commands:\n!help — this list\n!reset — forget our conversation so far";
const HELP_ADMIN: &str = "\n\nAdmin commands:\n!allow <number> — let a number use the assistant\n\
!deny <number> — stop a number from using it\n!role <number> admin|user — set a role\n\
!forget <number> — erase a contact's memory and identities\n!usage [today|7d|30d] — spend and tokens\n\
!stats — today's activity\n!config, !config set <key> <value>, !config unset <key> — settings";

/// What commands need from the brain (so this module does not depend on the handler).
pub trait Context: Sync {
    /// The brain's database.
    fn db(&self) -> &Db;
    /// The bus (for `!forget`'s Redis data).
    fn bus(&self) -> &Bus;
    /// The configuration from the environment.
    fn config(&self) -> &Config;
    /// The configuration with the admins' `!config set` values applied.
    fn effective(&self) -> impl Future<Output = Result<Config, HandleError>> + Send;
    /// A setting changed: the next answer reads the settings again.
    fn settings_changed(&self);
}

/// A `!` command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `!help`: the commands the sender may use.
    Help,
    /// `!reset`: forget the sender's conversation.
    Reset,
    /// `!allow <number>`: the number may use the assistant.
    Allow(Phone),
    /// `!deny <number>`: it may not (and is no admin).
    Deny(Phone),
    /// `!role <number> admin|user`.
    Role(Phone, Role),
    /// `!forget <number>`: erase the contact (its spend stays, unlinked).
    Forget(Phone),
    /// `!usage [today|7d|30d]`: spend and tokens over the last `days` days.
    Usage {
        /// How the period is named in the answer.
        label: &'static str,
        /// Days back from today, today included.
        days: i64,
    },
    /// `!stats`: today's activity.
    Stats,
    /// `!config`: the settings and where each comes from.
    ConfigShow,
    /// `!config set <key> <value>`.
    ConfigSet {
        /// The setting (lowercase).
        key: String,
        /// Its new value, as typed.
        value: String,
    },
    /// `!config unset <key>`: back to the environment's value.
    ConfigUnset {
        /// The setting (lowercase).
        key: String,
    },
    /// A known command used wrongly: its name and the usage to answer with.
    Invalid {
        /// The command's name.
        name: &'static str,
        /// The usage line to answer with.
        usage: String,
    },
    /// Not a command this bot knows.
    Unknown,
}

/// The commands by name, and whether only admins may run them.
const NAMES: &[(&str, bool)] = &[
    ("help", false),
    ("reset", false),
    ("allow", true),
    ("deny", true),
    ("role", true),
    ("forget", true),
    ("usage", true),
    ("stats", true),
    ("config", true),
];

impl Command {
    /// Parses `!name args…` (the name in any case).
    pub fn parse(text: &str) -> Self {
        let mut words = text.split_whitespace();
        let word = words
            .next()
            .unwrap_or("!")
            .trim_start_matches('!')
            .to_ascii_lowercase();
        let Some(&(name, _)) = NAMES.iter().find(|(n, _)| *n == word) else {
            return Self::Unknown;
        };
        let args: Vec<&str> = words.collect();
        let invalid = |usage: &str| Self::Invalid {
            name,
            usage: usage.to_owned(),
        };
        match name {
            "help" => Self::Help,
            "reset" => Self::Reset,
            "allow" | "deny" | "role" | "forget" => Self::parse_contact(name, &args),
            "usage" => match args.first().map(|a| a.to_ascii_lowercase()).as_deref() {
                None | Some("today") => Self::Usage {
                    label: "today",
                    days: 1,
                },
                Some("7d") => Self::Usage {
                    label: "7 days",
                    days: 7,
                },
                Some("30d") => Self::Usage {
                    label: "30 days",
                    days: 30,
                },
                Some(_) => invalid("Usage: !usage [today|7d|30d]"),
            },
            "stats" => Self::Stats,
            _ => match args.first().map(|a| a.to_ascii_lowercase()).as_deref() {
                None => Self::ConfigShow,
                Some("set") if args.len() > 2 => Self::ConfigSet {
                    key: args[1].to_ascii_lowercase(),
                    value: args[2..].join(" "),
                },
                Some("set") => invalid("Usage: !config set <key> <value>"),
                Some("unset") => match args.get(1) {
                    Some(k) => Self::ConfigUnset {
                        key: k.to_ascii_lowercase(),
                    },
                    None => invalid("Usage: !config unset <key>"),
                },
                Some(_) => {
                    invalid("Usage: !config, !config set <key> <value>, !config unset <key>")
                }
            },
        }
    }

    /// `!allow`, `!deny`, `!role`, `!forget`: a phone number, often written with spaces
    /// (`!allow +1 555 000 1111`), and for `!role` the role last.
    fn parse_contact(name: &'static str, args: &[&str]) -> Self {
        let (number_words, role_word) = match (name, args.split_last()) {
            ("role", Some((last, rest))) => (rest, Some(*last)),
            _ => (args, None),
        };
        let Some(number) = Phone::parse(&number_words.join(" "))
            .ok()
            .filter(|_| !number_words.is_empty())
        else {
            return Self::Invalid {
                name,
                usage: format!(
                    "Usage: !{name} <phone number with country code>{}",
                    if name == "role" { " admin|user" } else { "" }
                ),
            };
        };
        match name {
            "allow" => Self::Allow(number),
            "deny" => Self::Deny(number),
            "forget" => Self::Forget(number),
            _ => match role_word.and_then(|r| Role::parse(&r.to_ascii_lowercase())) {
                Some(role) => Self::Role(number, role),
                None => Self::Invalid {
                    name,
                    usage: "Usage: !role <number> admin|user".to_owned(),
                },
            },
        }
    }

    /// The command's name (`None`: not a command this bot knows).
    pub fn name(&self) -> Option<&'static str> {
        Some(match self {
            Self::Help => "help",
            Self::Reset => "reset",
            Self::Allow(_) => "allow",
            Self::Deny(_) => "deny",
            Self::Role(..) => "role",
            Self::Forget(_) => "forget",
            Self::Usage { .. } => "usage",
            Self::Stats => "stats",
            Self::ConfigShow | Self::ConfigSet { .. } | Self::ConfigUnset { .. } => "config",
            Self::Invalid { name, .. } => name,
            Self::Unknown => return None,
        })
    }

    /// Only admins may run it (checked before its arguments are looked at).
    pub fn admin_only(&self) -> bool {
        self.name()
            .is_some_and(|n| NAMES.iter().any(|&(name, admin)| name == n && admin))
    }

    /// Runs the command for `contact` and answers it.
    pub async fn run(
        self,
        brain: &impl Context,
        contact: &Contact,
    ) -> Result<Decision, HandleError> {
        let known = if self.name().is_some() {
            "known"
        } else {
            "unknown"
        };
        metrics::counter!(m::COMMANDS, "command" => known).increment(1);
        if self.admin_only() && contact.role != Role::Admin {
            return Ok(reply(brain.config().messages.admin_only.clone()));
        }
        let now = shared::ids::now_ms();
        let db = brain.db();
        match self {
            Self::Help => Ok(reply(help(contact))),
            Self::Reset => {
                store::reset_memory(db, &contact.id).await.or_retry()?;
                Ok(reply(
                    "Done: I've forgotten our conversation. How can I help?",
                ))
            }
            Self::Allow(number) => {
                let target = target(db, &number, now).await?;
                store::set_allowed(db, &target.id, true, now)
                    .await
                    .or_retry()?;
                Ok(reply(format!("{number} may now use the assistant.")))
            }
            Self::Deny(number) => deny(db, contact, &number, now).await,
            Self::Role(number, role) => set_role(db, contact, &number, role, now).await,
            Self::Forget(number) => forget(brain, &number).await,
            Self::Usage { label, days } => usage(brain, label, days, now).await,
            Self::Stats => stats(brain, now).await,
            Self::ConfigShow => show_config(brain).await,
            Self::ConfigSet { key, value } => set_config(brain, contact, &key, &value, now).await,
            Self::ConfigUnset { key } => unset_config(brain, &key).await,
            Self::Invalid { usage, .. } => Ok(reply(usage)),
            Self::Unknown => Ok(reply(format!(
                "I don't know that command.\n\n{}",
                help(contact)
            ))),
        }
    }
}

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

/// The contact of a phone number (created when new).
async fn target(db: &Db, number: &Phone, now: i64) -> Result<Contact, HandleError> {
    store::resolve(db, &[("phone".to_owned(), number.as_str().to_owned())], now)
        .await
        .or_retry()
}

async fn deny(db: &Db, admin: &Contact, number: &Phone, now: i64) -> Result<Decision, HandleError> {
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

async fn set_role(
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
async fn forget(brain: &impl Context, number: &Phone) -> Result<Decision, HandleError> {
    let db = brain.db();
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

async fn usage(
    brain: &impl Context,
    label: &str,
    days: i64,
    now: i64,
) -> Result<Decision, HandleError> {
    let (db, cfg) = (brain.db(), brain.config());
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

async fn stats(brain: &impl Context, now: i64) -> Result<Decision, HandleError> {
    let (db, cfg) = (brain.db(), brain.config());
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
    Ok(reply(format!(
        "Today ({today}): {} messages from {} contacts, {} errors, {} answered from the knowledge base (AI calls saved), average AI latency {}.",
        thousands(messages),
        thousands(contacts),
        thousands(errors),
        thousands(from_knowledge),
        latency.map_or_else(|| "—".to_owned(), |ms| format!("{ms} ms"))
    )))
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
async fn show_config(brain: &impl Context) -> Result<Decision, HandleError> {
    let stored = store::settings(brain.db()).await.or_retry()?;
    let eff = settings::apply(brain.config(), &stored);
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

async fn set_config(
    brain: &impl Context,
    admin: &Contact,
    key: &str,
    value: &str,
    now: i64,
) -> Result<Decision, HandleError> {
    match settings::validate(key, value) {
        Ok(v) => {
            let before = settings::current(&brain.effective().await?, key);
            store::set_setting(brain.db(), key, &v, &admin.id, now)
                .await
                .or_retry()?;
            brain.settings_changed();
            let after = settings::current(&brain.effective().await?, key);
            tracing::info!(key, "setting changed by an admin");
            Ok(reply(format!("Done: {key} is now {after} (was {before}).")))
        }
        Err(e) => Ok(reply(format!("Not changed: {e}."))),
    }
}

async fn unset_config(brain: &impl Context, key: &str) -> Result<Decision, HandleError> {
    if store::unset_setting(brain.db(), key).await.or_retry()? {
        brain.settings_changed();
        let now_value = settings::current(&brain.effective().await?, key);
        Ok(reply(format!(
            "Done: {key} is back to the environment's value ({now_value})."
        )))
    } else {
        Ok(reply(format!("{key} was not set here.")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_their_arguments_and_usage() {
        let phone = Phone::parse("+15550001111").unwrap();
        assert_eq!(Command::parse("!HELP"), Command::Help);
        assert_eq!(
            Command::parse("!allow +1 555 000 1111"),
            Command::Allow(phone.clone())
        );
        assert_eq!(
            Command::parse("!role +15550001111 Admin"),
            Command::Role(phone, Role::Admin)
        );
        assert!(matches!(
            Command::parse("!role +15550001111 boss"),
            Command::Invalid { name: "role", .. }
        ));
        assert!(matches!(
            Command::parse("!allow"),
            Command::Invalid { name: "allow", .. }
        ));
        assert_eq!(
            Command::parse("!usage 7d"),
            Command::Usage {
                label: "7 days",
                days: 7
            }
        );
        assert_eq!(
            Command::parse("!config set persona Be brief"),
            Command::ConfigSet {
                key: "persona".into(),
                value: "Be brief".into()
            }
        );
        assert_eq!(Command::parse("!nonsense"), Command::Unknown);
        // A wrongly used admin command is still admin-only: a user learns nothing from it.
        assert!(Command::parse("!allow").admin_only());
        assert!(!Command::parse("!reset").admin_only());
        assert!(!Command::Unknown.admin_only());
    }
}
