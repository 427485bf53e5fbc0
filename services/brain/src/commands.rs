//! `!` commands, parsed before anything reaches the model. Everyone: `!help`, `!reset`.
//! Admins: `!allow <number>`, `!deny <number>`, `!role <number> admin|user`. Roles come from
//! the database only; nothing typed here can raise the sender's own role unless they are
//! already an admin.

use shared::bus::HandleError;
use shared::phone::Phone;

use crate::handler::{Brain, Decision, OrRetry};
use crate::metrics as m;
use crate::store::{self, Contact, Role};

const HELP_USER: &str = "Commands:\n!help — this list\n!reset — forget our conversation so far";
const HELP_ADMIN: &str = "\n\nAdmin commands:\n!allow <number> — let a number use the assistant\n!deny <number> — stop a number from using it\n!role <number> admin|user — set a role";

fn reply(text: impl Into<String>, outcome: &'static str) -> Decision {
    let text = text.into();
    Decision::notice(&text, outcome)
}

fn help(contact: &Contact) -> String {
    if contact.role == Role::Admin {
        format!("{HELP_USER}{HELP_ADMIN}")
    } else {
        HELP_USER.to_owned()
    }
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
    let admin_only = matches!(name.as_str(), "allow" | "deny" | "role");
    metrics::counter!(m::COMMANDS, "command" => match name.as_str() {
        "help" | "reset" | "allow" | "deny" | "role" => "known",
        _ => "unknown",
    })
    .increment(1);
    if admin_only && contact.role != Role::Admin {
        return Ok(reply(brain.cfg.messages.admin_only.clone(), "admin_only"));
    }
    let now = shared::ids::now_ms();
    match name.as_str() {
        "help" => Ok(reply(help(contact), "command")),
        "reset" => {
            store::reset_memory(&brain.db, &contact.id)
                .await
                .or_retry()?;
            Ok(reply(
                "Done: I've forgotten our conversation. How can I help?",
                "command",
            ))
        }
        "allow" | "deny" | "role" => {
            // Numbers are often written with spaces: `!allow +1 555 000 1111`.
            let (number_words, role_word) = match (name.as_str(), args.split_last()) {
                ("role", Some((last, rest))) => (rest, Some(*last)),
                _ => (args.as_slice(), None),
            };
            let Some(number) = Phone::parse(&number_words.join(" "))
                .ok()
                .filter(|_| !number_words.is_empty())
            else {
                return Ok(reply(
                    format!(
                        "Usage: !{name} <phone number with country code>{}",
                        if name == "role" { " admin|user" } else { "" }
                    ),
                    "command",
                ));
            };
            let target = store::resolve(
                &brain.db,
                &[("phone".to_owned(), number.as_str().to_owned())],
                now,
            )
            .await
            .or_retry()?;
            match name.as_str() {
                "allow" => {
                    store::set_allowed(&brain.db, &target.id, true, now)
                        .await
                        .or_retry()?;
                    Ok(reply(
                        format!("{number} may now use the assistant."),
                        "command",
                    ))
                }
                "deny" => {
                    if target.id == contact.id {
                        return Ok(reply("You cannot deny yourself.", "command"));
                    }
                    store::set_allowed(&brain.db, &target.id, false, now)
                        .await
                        .or_retry()?;
                    store::set_role(&brain.db, &target.id, Role::User, now)
                        .await
                        .or_retry()?;
                    Ok(reply(
                        format!("{number} may no longer use the assistant."),
                        "command",
                    ))
                }
                _ => {
                    let Some(role) = role_word.and_then(|r| Role::parse(&r.to_ascii_lowercase()))
                    else {
                        return Ok(reply("Usage: !role <number> admin|user", "command"));
                    };
                    if target.id == contact.id && role == Role::User {
                        return Ok(reply("You cannot remove your own admin role.", "command"));
                    }
                    store::set_role(&brain.db, &target.id, role, now)
                        .await
                        .or_retry()?;
                    if role == Role::Admin {
                        store::set_allowed(&brain.db, &target.id, true, now)
                            .await
                            .or_retry()?;
                    }
                    Ok(reply(
                        format!("{number} is now {}.", role.as_str()),
                        "command",
                    ))
                }
            }
        }
        _ => Ok(reply(
            format!("I don't know that command.\n\n{}", help(contact)),
            "command",
        )),
    }
}
