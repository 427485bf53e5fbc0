//! Writing usage records and deciding alerts, in one database transaction.

use std::sync::Arc;

use shared::db::{Backend, Db, GroupCommit};
use shared::usage::Usd;
use sqlx::Row;

/// One record as stored.
#[derive(Debug, Clone)]
pub struct Record {
    /// The usage record's id (stored once).
    pub usage_id: String,
    /// The brain's contact (none once forgotten).
    pub contact_id: Option<String>,
    /// The customer message the call answered.
    pub message_id: String,
    /// `chat`, `vision` or `transcription`.
    pub operation: &'static str,
    /// The model asked for.
    pub requested_model: String,
    /// The model that answered.
    pub response_model: String,
    /// The price-table entry, or the requested model when unknown.
    pub priced_model: String,
    /// Tokens of the prompt.
    pub prompt_tokens: i64,
    /// Tokens of the answer.
    pub completion_tokens: i64,
    /// Audio transcribed.
    pub audio_ms: i64,
    /// What it cost.
    pub cost: Usd,
    /// How long the call took.
    pub latency_ms: i64,
    /// The day it counts on (`LEDGER_TIMEZONE`).
    pub day: String,
    /// When it was made (unix ms).
    pub at_ms: i64,
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// Today's spend reached `COST_ALERT_USD`.
    DailyCost,
    /// Today's spend reached 80% of `DAILY_BUDGET_USD`.
    BudgetWarning,
    /// Today's spend reached `DAILY_BUDGET_USD`: paid calls stop.
    BudgetReached,
    /// One contact's spend today reached `CONTACT_ALERT_USD`.
    ContactCost,
}

impl AlertKind {
    /// Every kind (for metrics registered at zero).
    pub const ALL: [AlertKind; 4] = [
        AlertKind::DailyCost,
        AlertKind::BudgetWarning,
        AlertKind::BudgetReached,
        AlertKind::ContactCost,
    ];

    /// The name stored and counted.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::DailyCost => "daily_cost",
            AlertKind::BudgetWarning => "budget_warning",
            AlertKind::BudgetReached => "budget_reached",
            AlertKind::ContactCost => "contact_cost",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An alert raised (once per day, kind, subject and threshold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The day it is about.
    pub day: String,
    /// What it is about.
    pub kind: AlertKind,
    /// The contact for `ContactCost`, else empty.
    pub subject: String,
    /// The threshold crossed.
    pub threshold: Usd,
    /// Spend when it was raised.
    pub spend: Usd,
}

/// Thresholds to check after each stored record.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// `COST_ALERT_USD`: today's spend.
    pub cost_alert: Usd,
    /// `CONTACT_ALERT_USD`: one contact's spend today.
    pub contact_alert: Option<Usd>,
    /// `DAILY_BUDGET_USD`: the hard cap.
    pub daily_budget: Option<Usd>,
}

/// Result of storing one record.
#[derive(Debug, Clone)]
pub struct Stored {
    /// False when this usage id was stored before (a redelivery).
    pub inserted: bool,
    /// Today's total after this record.
    pub day_total: Usd,
    /// Alerts this record raised (also on a redelivery, so their delivery is retried).
    pub alerts: Vec<Alert>,
}

/// The day's total spend (kept in `usage_day_totals`).
async fn day_spend(conn: &mut sqlx::AnyConnection, day: &str) -> Result<Usd, sqlx::Error> {
    let row = sqlx::query("SELECT cost_pico_usd FROM usage_day_totals WHERE day = $1")
        .bind(day)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(Usd(row
        .map(|r| r.try_get("cost_pico_usd"))
        .transpose()?
        .unwrap_or(0)))
}

/// Adds `cost` to the day's total spend and returns the new total.
async fn add_day_spend(
    conn: &mut sqlx::AnyConnection,
    day: &str,
    cost: Usd,
) -> Result<Usd, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO usage_day_totals (day, cost_pico_usd) VALUES ($1, $2) ON CONFLICT (day) \
         DO UPDATE SET cost_pico_usd = usage_day_totals.cost_pico_usd + excluded.cost_pico_usd \
         RETURNING cost_pico_usd",
    )
    .bind(day)
    .bind(cost.pico())
    .fetch_one(&mut *conn)
    .await?;
    Ok(Usd(row.try_get("cost_pico_usd")?))
}

/// A contact's spend of the day.
async fn contact_spend(
    conn: &mut sqlx::AnyConnection,
    day: &str,
    contact: &str,
) -> Result<Usd, sqlx::Error> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(cost_pico_usd), 0) AS BIGINT) AS c FROM usage_daily WHERE day = $1 AND contact_id = $2",
    )
    .bind(day)
    .bind(contact)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Usd(row.try_get("c")?))
}

/// Stores `r` once (keyed by its usage id) and records the alerts whose thresholds today's
/// spend has reached and that were not raised yet today. Records of the same day are stored
/// one at a time, so each sees the totals of all before it and no crossing is missed: SQLite
/// has one writer anyway; on PostgreSQL a transaction-scoped advisory lock per day does it.
pub async fn store(db: &Db, r: &Record, t: Thresholds) -> Result<Stored, sqlx::Error> {
    let mut tx = db.begin_write().await?;
    let stored = apply(&mut tx, r, t, db.backend()).await?;
    tx.commit().await?;
    Ok(stored)
}

/// One record to store with [`Writer`].
pub struct Job {
    /// The record.
    pub record: Record,
    /// What to check after storing it.
    pub thresholds: Thresholds,
    /// The database's kind (the SQL differs).
    pub backend: Backend,
}

/// Records stored together ([`GroupCommit`]): one transaction for every record that arrives
/// at about the same time. Inside it records are applied one after the other, so each still
/// sees the totals of all before it.
pub type Writer = GroupCommit<Job, Stored>;

/// The ledger's group-commit writer.
pub fn writer(db: Db) -> Writer {
    GroupCommit::spawn("ledger", db, 256, Arc::new(apply_job))
}

fn apply_job<'c>(
    conn: &'c mut sqlx::AnyConnection,
    job: &'c Job,
) -> shared::db::BoxFuture<'c, Result<Stored, sqlx::Error>> {
    Box::pin(apply(conn, &job.record, job.thresholds, job.backend))
}

/// [`store`] inside a write transaction.
async fn apply(
    tx: &mut sqlx::AnyConnection,
    r: &Record,
    t: Thresholds,
    backend: Backend,
) -> Result<Stored, sqlx::Error> {
    if backend == Backend::Postgres {
        let key = i64::from_le_bytes(
            blake3::hash(format!("ledger-day|{}", r.day).as_bytes()).as_bytes()[..8]
                .try_into()
                .expect("8 bytes"),
        );
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut *tx)
            .await?;
    }
    let inserted = sqlx::query(
        "INSERT INTO usage_records (usage_id, contact_id, message_id, operation, requested_model, \
         response_model, priced_model, prompt_tokens, completion_tokens, audio_ms, cost_pico_usd, \
         latency_ms, day, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (usage_id) DO NOTHING",
    )
    .bind(&r.usage_id)
    .bind(r.contact_id.as_deref())
    .bind(&r.message_id)
    .bind(r.operation)
    .bind(&r.requested_model)
    .bind(&r.response_model)
    .bind(&r.priced_model)
    .bind(r.prompt_tokens)
    .bind(r.completion_tokens)
    .bind(r.audio_ms)
    .bind(r.cost.pico())
    .bind(r.latency_ms)
    .bind(&r.day)
    .bind(r.at_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;

    if !inserted {
        // A redelivery: report what the first delivery stored.
        let day_total = day_spend(tx, &r.day).await?;
        let alerts = alerts_of(tx, &r.usage_id).await?;
        return Ok(Stored {
            inserted,
            day_total,
            alerts,
        });
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO usage_daily (day, contact_id, priced_model, operation, cost_pico_usd, \
         prompt_tokens, completion_tokens, audio_ms, latency_ms, records) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1) {}",
        shared::usage::DAILY_ADD_ON_CONFLICT
    )))
    .bind(&r.day)
    .bind(r.contact_id.as_deref().unwrap_or(""))
    .bind(&r.priced_model)
    .bind(r.operation)
    .bind(r.cost.pico())
    .bind(r.prompt_tokens)
    .bind(r.completion_tokens)
    .bind(r.audio_ms)
    .bind(r.latency_ms)
    .execute(&mut *tx)
    .await?;
    let day_total = add_day_spend(tx, &r.day, r.cost).await?;
    let alerts = raise_alerts(tx, r, t, day_total).await?;
    Ok(Stored {
        inserted,
        day_total,
        alerts,
    })
}

/// The alerts `r` makes due (today's spend, the budget's warning and cap, the contact's
/// spend), each raised once: those not raised before are recorded and returned.
async fn raise_alerts(
    tx: &mut sqlx::AnyConnection,
    r: &Record,
    t: Thresholds,
    day_total: Usd,
) -> Result<Vec<Alert>, sqlx::Error> {
    let mut alerts = Vec::new();
    let mut candidates = Vec::new();
    if day_total >= t.cost_alert && t.cost_alert.pico() > 0 {
        candidates.push((AlertKind::DailyCost, String::new(), t.cost_alert, day_total));
    }
    if let Some(budget) = t.daily_budget {
        let warn = Usd(budget.pico() / 10 * 8);
        if day_total >= warn {
            candidates.push((AlertKind::BudgetWarning, String::new(), warn, day_total));
        }
        if day_total >= budget {
            candidates.push((AlertKind::BudgetReached, String::new(), budget, day_total));
        }
    }
    if let (Some(limit), Some(contact)) = (t.contact_alert, r.contact_id.as_deref()) {
        let spent = contact_spend(tx, &r.day, contact).await?;
        if spent >= limit {
            candidates.push((AlertKind::ContactCost, contact.to_owned(), limit, spent));
        }
    }
    for (kind, subject, threshold, spend) in candidates {
        let raised = sqlx::query(
            "INSERT INTO alerts_sent (day, kind, subject, threshold_pico_usd, usage_id, spend_pico_usd, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&r.day)
        .bind(kind.as_str())
        .bind(&subject)
        .bind(threshold.pico())
        .bind(&r.usage_id)
        .bind(spend.pico())
        .bind(shared::ids::now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if raised {
            alerts.push(Alert {
                day: r.day.clone(),
                kind,
                subject,
                threshold,
                spend,
            });
        }
    }
    alerts.sort_by(|a, b| (a.kind.as_str(), &a.subject).cmp(&(b.kind.as_str(), &b.subject)));
    Ok(alerts)
}

/// The alerts a record raised, as stored.
async fn alerts_of(
    tx: &mut sqlx::AnyConnection,
    usage_id: &str,
) -> Result<Vec<Alert>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT day, kind, subject, threshold_pico_usd, spend_pico_usd FROM alerts_sent WHERE usage_id = $1 \
         ORDER BY kind, subject",
    )
    .bind(usage_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut alerts = Vec::new();
    for row in rows {
        let kind: String = row.try_get("kind")?;
        let Some(kind) = AlertKind::parse(&kind) else {
            continue;
        };
        alerts.push(Alert {
            day: row.try_get("day")?,
            kind,
            subject: row.try_get("subject")?,
            threshold: Usd(row.try_get("threshold_pico_usd")?),
            spend: Usd(row.try_get("spend_pico_usd")?),
        });
    }
    Ok(alerts)
}

/// Today's spend (for reconciling the budget mark at startup).
pub async fn day_total(db: &Db, day: &str) -> Result<Usd, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    day_spend(&mut conn, day).await
}

/// Phone numbers of the admins in the database.
pub async fn admin_phones(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT i.value AS phone FROM contacts c JOIN contact_identities i ON i.contact_id = c.id \
         WHERE c.role = 'admin' AND i.kind = 'phone' ORDER BY i.value",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(|r| r.try_get("phone")).collect()
}
