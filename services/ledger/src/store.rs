//! Writing usage records and deciding alerts, in one database transaction per group.

use std::sync::Arc;

use shared::db::{Backend, Db, GroupCommit, rows};
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
/// spend has reached and that were not raised yet today ([`Writer`] does it for many records
/// in one transaction).
pub async fn store(db: &Db, r: &Record, t: Thresholds) -> Result<Stored, sqlx::Error> {
    let job = Job {
        record: r.clone(),
        thresholds: t,
        backend: db.backend(),
    };
    let stored = store_all(db, std::slice::from_ref(&job)).await?;
    Ok(stored
        .into_iter()
        .next()
        .expect("one result for one record"))
}

/// Stores `jobs` in one transaction, as [`Writer`] stores a group: a result per job, in order.
pub async fn store_all(db: &Db, jobs: &[Job]) -> Result<Vec<Stored>, sqlx::Error> {
    let mut tx = db.begin_write().await?;
    let stored = apply(&mut tx, jobs).await?;
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

/// Records stored together ([`GroupCommit`]): one transaction, and a few multi-row statements,
/// for every record that arrives at about the same time. Each record's totals and alerts are
/// still those after it and the records before it: no crossing is missed.
pub type Writer = GroupCommit<Job, Stored>;

/// The ledger's group-commit writer.
pub fn writer(db: Db) -> Writer {
    GroupCommit::spawn_batched("ledger", db, 256, Arc::new(apply_shared))
}

fn apply_shared<'c>(
    conn: &'c mut sqlx::AnyConnection,
    jobs: &'c [Job],
) -> shared::db::BoxFuture<'c, Result<Vec<Stored>, sqlx::Error>> {
    Box::pin(apply(conn, jobs))
}

/// Stores a group of records inside a write transaction: the records (a redelivered one, or
/// one already earlier in the group, is stored once), the daily rows and the day's totals in
/// multi-row statements; then, record by record in order, the running totals and the alerts
/// they make due. Records of a day are stored one group at a time: SQLite has one writer
/// anyway; on PostgreSQL a transaction-scoped advisory lock per day does it.
async fn apply(tx: &mut sqlx::AnyConnection, jobs: &[Job]) -> Result<Vec<Stored>, sqlx::Error> {
    let Some(first) = jobs.first() else {
        return Ok(Vec::new());
    };
    if first.backend == Backend::Postgres {
        let mut days: Vec<&str> = jobs.iter().map(|j| j.record.day.as_str()).collect();
        days.sort_unstable();
        days.dedup();
        for day in days {
            lock_day(tx, day).await?;
        }
    }
    let new = insert_records(tx, jobs).await?;
    let fresh: Vec<&Record> = jobs
        .iter()
        .zip(&new)
        .filter(|(_, new)| **new)
        .map(|(j, _)| &j.record)
        .collect();
    add_daily(tx, &fresh).await?;
    let mut day_totals = Running::default();
    for (day, total) in add_day_spends(tx, &fresh).await? {
        let of_day = fresh.iter().copied().filter(|r| r.day == day);
        day_totals.start(&day, total, of_day);
    }
    let mut contact_totals = Running::default();
    let mut out = Vec::with_capacity(jobs.len());
    for (job, new) in jobs.iter().zip(new) {
        let r = &job.record;
        if !new {
            // A redelivery: report what the first delivery stored.
            out.push(Stored {
                inserted: false,
                day_total: day_spend(tx, &r.day).await?,
                alerts: alerts_of(tx, &r.usage_id).await?,
            });
            continue;
        }
        let day_total = day_totals.add(&r.day, r.cost);
        let contact_spent = match (job.thresholds.contact_alert, r.contact_id.as_deref()) {
            (Some(_), Some(contact)) => {
                let key = format!("{}|{contact}", r.day);
                if !contact_totals.has(&key) {
                    let spent = contact_spend(tx, &r.day, contact).await?;
                    // The group's records of this contact from this one on (the earlier ones
                    // are in `spent` already and count before it).
                    let here = fresh.iter().position(|f| std::ptr::eq(*f, r)).unwrap_or(0);
                    let mine = fresh[here..]
                        .iter()
                        .copied()
                        .filter(|f| f.day == r.day && f.contact_id.as_deref() == Some(contact));
                    contact_totals.start(&key, spent, mine);
                }
                Some(contact_totals.add(&key, r.cost))
            }
            _ => None,
        };
        let alerts = raise_alerts(tx, r, job.thresholds, day_total, contact_spent).await?;
        out.push(Stored {
            inserted: true,
            day_total,
            alerts,
        });
    }
    Ok(out)
}

/// Running totals of a group: each key starts at its total before the group's records and
/// grows record by record.
#[derive(Default)]
struct Running(Vec<(String, Usd)>);

impl Running {
    /// `key`, whose total after the group is `after`, with the group's `records` of it.
    fn start<'r>(&mut self, key: &str, after: Usd, records: impl Iterator<Item = &'r Record>) {
        let group: i64 = records.map(|r| r.cost.pico()).sum();
        self.0.push((key.to_owned(), Usd(after.pico() - group)));
    }

    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// Adds `cost` to `key`'s total and returns it.
    fn add(&mut self, key: &str, cost: Usd) -> Usd {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, total)) => {
                *total = Usd(total.pico() + cost.pico());
                *total
            }
            None => cost,
        }
    }
}

/// The day's records stored one transaction at a time (PostgreSQL).
async fn lock_day(tx: &mut sqlx::AnyConnection, day: &str) -> Result<(), sqlx::Error> {
    let key = i64::from_le_bytes(
        blake3::hash(format!("ledger-day|{day}").as_bytes()).as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    );
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The group's records, in multi-row statements: for each job, whether its record is new (the
/// first of its usage id in the group, and not stored before).
async fn insert_records(
    tx: &mut sqlx::AnyConnection,
    jobs: &[Job],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut first: Vec<&Record> = Vec::with_capacity(jobs.len());
    for j in jobs {
        if !first.iter().any(|f| f.usage_id == j.record.usage_id) {
            first.push(&j.record);
        }
    }
    let mut inserted: std::collections::HashSet<String> = std::collections::HashSet::new();
    for chunk in rows::chunks(&first) {
        let sql = format!(
            "INSERT INTO usage_records (usage_id, contact_id, message_id, operation, requested_model, \
             response_model, priced_model, prompt_tokens, completion_tokens, audio_ms, cost_pico_usd, \
             latency_ms, day, at_ms) VALUES {} ON CONFLICT (usage_id) DO NOTHING RETURNING usage_id",
            rows::values(tx, chunk.len(), 14)
        );
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q
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
                .bind(r.at_ms);
        }
        inserted.extend(q.fetch_all(&mut *tx).await?);
    }
    Ok(jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let id = &j.record.usage_id;
            inserted.contains(id) && !jobs[..i].iter().any(|e| &e.record.usage_id == id)
        })
        .collect())
}

/// Adds new records to their daily rows (day, contact, model, operation): summed per row
/// first, so each row appears once per statement (an upsert may not touch a row twice).
async fn add_daily(tx: &mut sqlx::AnyConnection, fresh: &[&Record]) -> Result<(), sqlx::Error> {
    struct Daily<'r> {
        r: &'r Record,
        cost: i64,
        prompt: i64,
        completion: i64,
        audio: i64,
        latency: i64,
        records: i64,
    }
    let mut daily: Vec<Daily<'_>> = Vec::new();
    for r in fresh {
        let same = |d: &&mut Daily<'_>| {
            d.r.day == r.day
                && d.r.contact_id == r.contact_id
                && d.r.priced_model == r.priced_model
                && d.r.operation == r.operation
        };
        match daily.iter_mut().find(same) {
            Some(d) => {
                d.cost += r.cost.pico();
                d.prompt += r.prompt_tokens;
                d.completion += r.completion_tokens;
                d.audio += r.audio_ms;
                d.latency += r.latency_ms;
                d.records += 1;
            }
            None => daily.push(Daily {
                r,
                cost: r.cost.pico(),
                prompt: r.prompt_tokens,
                completion: r.completion_tokens,
                audio: r.audio_ms,
                latency: r.latency_ms,
                records: 1,
            }),
        }
    }
    for chunk in rows::chunks(&daily) {
        let sql = format!(
            "INSERT INTO usage_daily (day, contact_id, priced_model, operation, cost_pico_usd, \
             prompt_tokens, completion_tokens, audio_ms, latency_ms, records) VALUES {} {}",
            rows::values(tx, chunk.len(), 10),
            shared::usage::DAILY_ADD_ON_CONFLICT
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for d in chunk {
            q = q
                .bind(&d.r.day)
                .bind(d.r.contact_id.as_deref().unwrap_or(""))
                .bind(&d.r.priced_model)
                .bind(d.r.operation)
                .bind(d.cost)
                .bind(d.prompt)
                .bind(d.completion)
                .bind(d.audio)
                .bind(d.latency)
                .bind(d.records);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Adds the new records' costs to their days' totals: each day's total after the group.
async fn add_day_spends(
    tx: &mut sqlx::AnyConnection,
    fresh: &[&Record],
) -> Result<Vec<(String, Usd)>, sqlx::Error> {
    let mut days: Vec<(&str, i64)> = Vec::new();
    for r in fresh {
        match days.iter_mut().find(|(d, _)| *d == r.day) {
            Some((_, cost)) => *cost += r.cost.pico(),
            None => days.push((&r.day, r.cost.pico())),
        }
    }
    let mut totals = Vec::with_capacity(days.len());
    for (day, cost) in days {
        totals.push((day.to_owned(), add_day_spend(tx, day, Usd(cost)).await?));
    }
    Ok(totals)
}

/// The alerts `r` makes due (today's spend, the budget's warning and cap, the contact's
/// spend), each raised once: those not raised before are recorded and returned.
async fn raise_alerts(
    tx: &mut sqlx::AnyConnection,
    r: &Record,
    t: Thresholds,
    day_total: Usd,
    contact_spent: Option<Usd>,
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
    if let (Some(limit), Some(contact), Some(spent)) =
        (t.contact_alert, r.contact_id.as_deref(), contact_spent)
        && spent >= limit
    {
        candidates.push((AlertKind::ContactCost, contact.to_owned(), limit, spent));
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
