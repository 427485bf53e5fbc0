//! `!` commands, parsed ([`Command::parse`]) before anything reaches the model, then run
//! ([`Command::run`]). Everyone: `!help`, `!reset`. Admins: `!allow`, `!deny`, `!role`,
//! `!forget`, `!usage`, `!stats`, `!config`. Roles come from the database only: nothing typed
//! here raises the sender's role unless they already are an admin.

mod admin;
mod handoff;

use admin::{deny, forget, set_config, set_role, show_config, stats, unset_config, usage};
pub use handoff::Target;
pub(crate) use handoff::{reply_id, send_as_business, send_to};
use std::sync::Arc;

use shared::bus::{Bus, HandleError};
use shared::clock::SharedClock;
use shared::db::Db;
use shared::phone::Phone;
use shared::redact::hash_id;

use crate::config::Config;
use crate::domain::{Decision, Outcome};
use crate::metrics as m;
use crate::settings::Settings;
use crate::store::{self, Contact, OrRetry, Role};

const HELP_USER: &str = "Commands:\n!help — this list\n!reset — forget our conversation so far";
const HELP_ADMIN: &str = "\n\nAdmin commands:\n!allow <number> — let a number use the assistant\n\
!deny <number> — stop a number from using it\n!role <number> admin|user — set a role\n\
!forget <number> — erase a contact's memory and identities\n!usage [today|7d|30d] — spend and tokens\n\
!stats — today's activity\n!config, !config set <key> <value>, !config unset <key> — settings\n\
!handoffs — conversations waiting for a person\n!reply <number or H-ref> <text> — answer one as the business\n\
!resume <number or H-ref> — the assistant answers it again\n!console — a sign-in link to the owner's console";

/// What commands work with: the database, the bus, the settings, the console's sign-in
/// links and the clock — not the whole brain.
#[derive(Clone)]
pub struct Office {
    /// The brain's database.
    pub db: Db,
    /// The bus (for `!forget`'s Redis data, `!reply`'s message).
    pub bus: Bus,
    /// The configuration in effect.
    pub settings: Arc<Settings>,
    /// The console's sign-in links.
    pub console: shared::console::Console,
    /// The time.
    pub clock: SharedClock,
    /// What the owner's tools hear (`EVENTS_WEBHOOK_URL`).
    pub events: shared::events::Events,
}

impl Office {
    /// The brain's database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The configuration from the environment.
    pub fn config(&self) -> &Config {
        self.settings.base()
    }

    /// The configuration with the admins' `!config set` values applied.
    pub async fn effective(&self) -> Result<Config, HandleError> {
        self.settings.effective().await
    }

    /// A setting changed: the next answer reads the settings again.
    pub fn settings_changed(&self) {
        self.settings.changed();
    }

    /// The console's sign-in links.
    pub fn console(&self) -> &shared::console::Console {
        &self.console
    }
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
    /// `!handoffs`: conversations waiting for a person.
    Handoffs,
    /// `!console`: a one-time sign-in link to the owner's console.
    Console,
    /// `!reply <contact> <text>`: sent to the contact as the business.
    Reply(Target, String),
    /// `!resume <contact>`: the assistant answers it again.
    Resume(Target),
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
    ("handoffs", true),
    ("console", true),
    ("reply", true),
    ("resume", true),
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
            "handoffs" => Self::Handoffs,
            "console" => Self::Console,
            "reply" => match Target::parse(&args) {
                Some((t, n)) if n < args.len() => Self::Reply(t, args[n..].join(" ")),
                _ => invalid("Usage: !reply <number or H-reference> <text>"),
            },
            "resume" => match Target::parse(&args) {
                Some((t, n)) if n == args.len() => Self::Resume(t),
                _ => invalid("Usage: !resume <number or H-reference>"),
            },
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
            Self::Handoffs => "handoffs",
            Self::Console => "console",
            Self::Reply(..) => "reply",
            Self::Resume(_) => "resume",
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

    /// Runs the command that `contact` sent as inbound message `message_id`, and answers it.
    pub async fn run(
        self,
        office: &Office,
        contact: &Contact,
        message_id: &str,
    ) -> Result<Decision, HandleError> {
        let known = if self.name().is_some() {
            "known"
        } else {
            "unknown"
        };
        metrics::counter!(m::COMMANDS, "command" => known).increment(1);
        if self.admin_only() && contact.role != Role::Admin {
            // Commands are English words: the answer to one is English.
            let msgs = office.config().messages.get(shared::lang::Lang::En);
            return Ok(reply(msgs.admin_only.clone()));
        }
        let now = office.clock.now_ms();
        let db = office.db();
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
            Self::Forget(number) => forget(office, &number).await,
            Self::Usage { label, days } => usage(office, label, days, now).await,
            Self::Stats => stats(office, now).await,
            Self::Handoffs => handoff::list(office, now).await,
            Self::Console => console_link(office, contact).await,
            Self::Reply(target, text) => {
                handoff::reply_as_business(office, &target, &text, now, message_id).await
            }
            Self::Resume(target) => handoff::resume(office, &target, now).await,
            Self::ConfigShow => show_config(office).await,
            Self::ConfigSet { key, value } => set_config(office, contact, &key, &value, now).await,
            Self::ConfigUnset { key } => unset_config(office, &key).await,
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

/// `!console`: a one-time sign-in link, valid 10 minutes, for this admin.
async fn console_link(office: &Office, contact: &Contact) -> Result<Decision, HandleError> {
    let name = store::phone_of(office.db(), &contact.id)
        .await
        .or_retry()?
        .unwrap_or_else(|| format!("admin {}", hash_id(&contact.id)));
    let admin = shared::console::Admin {
        name,
        contact_id: Some(contact.id.clone()),
    };
    let token = office
        .console()
        .issue_link(&admin)
        .await
        .map_err(|e| HandleError::retry("keeping the console link", e))?;
    Ok(reply(format!(
        "Your console sign-in link, valid once for 10 minutes — do not share it:\n{}",
        shared::console::link(&office.config().public_url, &token)
    )))
}

/// The contact of a phone number (created when new).
async fn target(db: &Db, number: &Phone, now: i64) -> Result<Contact, HandleError> {
    store::resolve(db, &[("phone".to_owned(), number.as_str().to_owned())], now)
        .await
        .or_retry()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_s_command_table_names_every_command() {
        let readme = include_str!("../../../../README.md");
        let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `!")).collect();
        for (name, _) in NAMES {
            let cell = format!("`!{name}");
            assert!(
                rows.iter()
                    .any(|r| r.split('|').nth(1).is_some_and(|c| c.contains(&cell))),
                "README's command table lacks !{name}"
            );
        }
    }

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
