//! The brain's tables: contacts and their identities, conversation memory, the outbox.
//! Booleans are stored as 0/1 integers (the same SQL runs on SQLite and PostgreSQL).

mod console;
mod contacts;
mod conversations;
mod handoff;
mod log;
mod memory;
mod outbox;
mod settings;
mod snapshot;

use shared::bus::HandleError;
use shared::db::Db;
use sqlx::Row;

use crate::domain::Reason;

pub use console::*;
pub use contacts::*;
pub use conversations::*;
pub use handoff::*;
pub use log::*;
pub use memory::*;
pub use outbox::*;
pub use settings::*;
pub use snapshot::{Ask, Reader, Snapshot, reader};

/// A contact's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs the admin commands, always served, gets the cost alerts.
    Admin,
    /// A customer.
    User,
}

impl Role {
    /// `admin` or `user`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    /// The role named `s` (as stored).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// A contact as the brain sees it.
#[derive(Debug, Clone)]
pub struct Contact {
    /// The brain's own id (identities point at it).
    pub id: String,
    /// Admin or user.
    pub role: Role,
    /// On the whitelist.
    pub allowed: bool,
    /// Said STOP: hears nothing but the START confirmation.
    pub opted_out: bool,
    /// The day it was last told it is not on the whitelist (told once a day).
    pub last_refusal_day: Option<String>,
    /// Was told it talks to an AI.
    pub disclosed: bool,
    /// Handed off to a person: the bot is silent for it.
    pub handoff: Option<Handoff>,
    /// The model's answers in a row that did not know.
    pub unanswered_streak: i64,
    /// The owner answered from the business's phone: the bot is quiet until then (unix ms).
    pub paused_until_ms: Option<i64>,
}

/// A conversation handed to a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    /// The short reference admins use (`H-3F9A2C`).
    pub reference: String,
    /// Why.
    pub reason: Reason,
    /// Since when (unix ms).
    pub since_ms: i64,
    /// Back to the bot at this time unless a person replies (unix ms; none once one did).
    pub deadline_ms: Option<i64>,
    /// The transport the customer wrote from (its proto number) and the chat there.
    pub chat: (i32, String),
}

/// A database failure is worth another delivery (or, when the database is only busy, another
/// try without counting one).
pub trait OrRetry<T> {
    /// The error as the bus's handler error.
    fn or_retry(self) -> Result<T, HandleError>;
}

impl<T> OrRetry<T> for Result<T, sqlx::Error> {
    fn or_retry(self) -> Result<T, HandleError> {
        self.map_err(HandleError::database)
    }
}

pub(super) fn contact_from(row: &sqlx::any::AnyRow) -> Result<Contact, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(Contact {
        id: row.try_get("id")?,
        role: Role::parse(&role).unwrap_or(Role::User),
        allowed: row.try_get::<i64, _>("allowed")? != 0,
        opted_out: row.try_get::<i64, _>("opted_out")? != 0,
        last_refusal_day: row.try_get("last_refusal_day")?,
        disclosed: row.try_get::<Option<i64>, _>("disclosed_at_ms")?.is_some(),
        handoff: match row.try_get::<Option<i64>, _>("handoff_at_ms")? {
            Some(since_ms) => Some(Handoff {
                reference: row
                    .try_get::<Option<String>, _>("handoff_ref")?
                    .unwrap_or_default(),
                // A reason this version does not know reads as the customer's request.
                reason: row
                    .try_get::<Option<String>, _>("handoff_reason")?
                    .and_then(|r| Reason::parse(&r))
                    .unwrap_or(Reason::Asked),
                since_ms,
                deadline_ms: row.try_get("handoff_deadline_ms")?,
                chat: (
                    row.try_get::<Option<i64>, _>("handoff_transport")?
                        .unwrap_or_default() as i32,
                    row.try_get::<Option<String>, _>("handoff_chat")?
                        .unwrap_or_default(),
                ),
            }),
            None => None,
        },
        unanswered_streak: row.try_get("unanswered_streak")?,
        paused_until_ms: row.try_get("paused_until_ms")?,
    })
}

/// A contact's columns, as [`contact_from`] reads them.
pub(super) const CONTACT_COLUMNS: &str = "id, role, allowed, opted_out, last_refusal_day, disclosed_at_ms, \
     handoff_ref, handoff_reason, handoff_at_ms, handoff_deadline_ms, unanswered_streak, \
     handoff_transport, handoff_chat, paused_until_ms";

/// [`CONTACT_COLUMNS`] of the table aliased `c`.
pub(super) const CONTACT_COLUMNS_C: &str = "c.id, c.role, c.allowed, c.opted_out, c.last_refusal_day, c.disclosed_at_ms, \
     c.handoff_ref, c.handoff_reason, c.handoff_at_ms, c.handoff_deadline_ms, c.unanswered_streak, \
     c.handoff_transport, c.handoff_chat, c.paused_until_ms";

/// The contact with id `id`.
pub async fn contact(db: &Db, id: &str) -> Result<Option<Contact>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CONTACT_COLUMNS} FROM contacts WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(contact_from).transpose()
}
