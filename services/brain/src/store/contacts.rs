//! Contacts and their identities: resolving a sender, admins from `ADMIN_NUMBERS`, the
//! flags admins and customers change, and `!forget`.

use shared::db::Db;
use sqlx::Row;

use super::{CONTACT_COLUMNS_C, Contact, Role, contact, contact_from};

/// The contact owning any of `identities` (kind, value), created when none does; identities
/// not yet linked are linked to it.
pub async fn resolve(
    db: &Db,
    identities: &[(String, String)],
    now_ms: i64,
) -> Result<Contact, sqlx::Error> {
    // The common case reads only: every identity is known and names one contact.
    if let Some(c) = known_contact(db, identities).await? {
        return Ok(c);
    }
    let mut tx = db.begin_write().await?;
    let mut found: Option<String> = None;
    for (kind, value) in identities {
        let row =
            sqlx::query("SELECT contact_id FROM contact_identities WHERE kind = $1 AND value = $2")
                .bind(kind)
                .bind(value)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(row) = row {
            found = Some(row.try_get("contact_id")?);
            break;
        }
    }
    let id = match found {
        Some(id) => id,
        None => {
            let id = shared::ids::new_id();
            sqlx::query(
                "INSERT INTO contacts (id, role, allowed, opted_out, created_at_ms, updated_at_ms) \
                 VALUES ($1, 'user', 0, 0, $2, $2)",
            )
            .bind(&id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            id
        }
    };
    for (kind, value) in identities {
        sqlx::query(
            "INSERT INTO contact_identities (kind, value, contact_id, created_at_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, value) DO NOTHING",
        )
        .bind(kind)
        .bind(value)
        .bind(&id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(contact(db, &id)
        .await?
        .expect("the contact was just written"))
}

/// The contact when all `identities` are linked to the same one (one query).
pub(super) async fn known_contact(
    db: &Db,
    identities: &[(String, String)],
) -> Result<Option<Contact>, sqlx::Error> {
    if identities.is_empty() {
        return Ok(None);
    }
    let wanted: Vec<String> = (0..identities.len())
        .map(|i| format!("(i.kind = ${} AND i.value = ${})", 2 * i + 1, 2 * i + 2))
        .collect();
    let sql = format!(
        "SELECT {CONTACT_COLUMNS_C} \
         FROM contact_identities i JOIN contacts c ON c.id = i.contact_id WHERE {}",
        wanted.join(" OR ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (kind, value) in identities {
        q = q.bind(kind).bind(value);
    }
    let rows = q.fetch_all(db.pool()).await?;
    if rows.len() != identities.len() {
        return Ok(None);
    }
    let contacts = rows
        .iter()
        .map(contact_from)
        .collect::<Result<Vec<_>, _>>()?;
    if contacts.iter().any(|c| c.id != contacts[0].id) {
        return Ok(None);
    }
    Ok(contacts.into_iter().next())
}

/// The contact of a phone number (E.164), if known.
pub async fn contact_by_phone(db: &Db, phone: &str) -> Result<Option<Contact>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT contact_id FROM contact_identities WHERE kind = 'phone' AND value = $1",
    )
    .bind(phone)
    .fetch_optional(db.pool())
    .await?;
    match row {
        Some(r) => contact(db, &r.try_get::<String, _>("contact_id")?).await,
        None => Ok(None),
    }
}

/// Makes the phone numbers in `ADMIN_NUMBERS` admins (creating their contacts), and takes the
/// admin role back from contacts it came from whose number is no longer listed (a role an
/// admin gave with `!role` is left alone). Returns how many were revoked.
pub async fn bootstrap_admins(db: &Db, phones: &[String], now_ms: i64) -> Result<u64, sqlx::Error> {
    let mut listed = Vec::with_capacity(phones.len());
    for phone in phones {
        let c = resolve(db, &[("phone".to_owned(), phone.clone())], now_ms).await?;
        sqlx::query(
            "UPDATE contacts SET role = 'admin', allowed = 1, admin_from_env = 1, \
             updated_at_ms = $1 WHERE id = $2",
        )
        .bind(now_ms)
        .bind(&c.id)
        .execute(db.pool())
        .await?;
        listed.push(c.id);
    }
    let from_env: Vec<String> =
        sqlx::query_scalar("SELECT id FROM contacts WHERE admin_from_env = 1")
            .fetch_all(db.pool())
            .await?;
    let mut revoked = 0;
    for id in from_env.iter().filter(|id| !listed.contains(id)) {
        revoked += sqlx::query(
            "UPDATE contacts SET role = 'user', admin_from_env = 0, updated_at_ms = $1 \
             WHERE id = $2 AND admin_from_env = 1",
        )
        .bind(now_ms)
        .bind(id)
        .execute(db.pool())
        .await?
        .rows_affected();
    }
    Ok(revoked)
}

pub(super) async fn update(
    db: &Db,
    sql: &'static str,
    id: &str,
    value: Option<i64>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let mut q = sqlx::query(sql);
    if let Some(v) = value {
        q = q.bind(v);
    }
    q.bind(now_ms).bind(id).execute(db.pool()).await?;
    Ok(())
}

/// An admin's decision: from now on the role is theirs, not `ADMIN_NUMBERS`'s.
pub async fn set_role(db: &Db, id: &str, role: Role, now_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE contacts SET role = $1, admin_from_env = 0, updated_at_ms = $2 WHERE id = $3",
    )
    .bind(role.as_str())
    .bind(now_ms)
    .bind(id)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Puts the contact on the whitelist, or takes it off.
pub async fn set_allowed(db: &Db, id: &str, allowed: bool, now_ms: i64) -> Result<(), sqlx::Error> {
    update(
        db,
        "UPDATE contacts SET allowed = $1, updated_at_ms = $2 WHERE id = $3",
        id,
        Some(i64::from(allowed)),
        now_ms,
    )
    .await
}

/// The values of a contact's identities (`+15550001111`, a visitor id, …).
pub async fn identity_values(db: &Db, contact_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM contact_identities WHERE contact_id = $1")
        .bind(contact_id)
        .fetch_all(db.pool())
        .await
}

/// `!forget`: erases a contact's memory, pending work, identities and the contact itself; its
/// usage is kept, unlinked (daily aggregates move to the anonymous row).
pub async fn forget(db: &Db, contact_id: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.begin_write().await?;
    for sql in [
        "DELETE FROM conversation_messages WHERE contact_id = $1",
        "DELETE FROM conversation_log WHERE contact_id = $1",
        "DELETE FROM outbox WHERE contact_id = $1",
        "DELETE FROM voice_pending WHERE contact_id = $1",
        "DELETE FROM burst_media WHERE contact_id = $1",
    ] {
        sqlx::query(sql).bind(contact_id).execute(&mut *tx).await?;
    }
    // Conversation outcomes stay in the counts, unlinked.
    sqlx::query("UPDATE conversations SET contact_id = '' WHERE contact_id = $1")
        .bind(contact_id)
        .execute(&mut *tx)
        .await?;
    // The ledger's tables keep the spend, unlinked from the contact.
    shared::usage::unlink_contact(&mut tx, contact_id).await?;
    for sql in [
        "DELETE FROM contact_identities WHERE contact_id = $1",
        "DELETE FROM contacts WHERE id = $1",
    ] {
        sqlx::query(sql).bind(contact_id).execute(&mut *tx).await?;
    }
    tx.commit().await
}
