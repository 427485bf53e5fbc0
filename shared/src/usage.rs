//! The usage tables as a contract: day boundaries in `LEDGER_TIMEZONE`, exact money, and the read
//! queries over `usage_daily` (the ledger's per-day aggregate of `usage_records`) that the
//! brain's `!usage` and `!stats` use. The ledger writes both tables; the only other write is
//! [`unlink_contact`] (`!forget`), kept here beside the ledger's aggregation clause.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use sqlx::Row;

use crate::db::Db;

/// Money in pico-dollars (10⁻¹² USD): exact for per-token and per-second prices, summed as
/// integers, never floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Usd(pub i64);

impl Usd {
    /// Picodollars in a dollar.
    pub const PICO_PER_USD: i64 = 1_000_000_000_000;
    /// Picodollars in a microdollar (what is shown).
    pub const PICO_PER_MICRO: i64 = 1_000_000;

    /// From a decimal dollar amount (configuration); rounded to the nearest micro-dollar first so
    /// `0.15` is exactly 150,000 micro-dollars.
    pub fn from_dollars(usd: f64) -> Self {
        Self((usd * 1e6).round() as i64 * Self::PICO_PER_MICRO)
    }

    /// The amount in picodollars.
    pub fn pico(self) -> i64 {
        self.0
    }

    /// For metrics only (display).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / Self::PICO_PER_USD as f64
    }
}

impl fmt::Display for Usd {
    /// `$12.345678` (six decimals, rounded half up).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micro = (i128::from(self.0) + i128::from(Self::PICO_PER_MICRO / 2))
            .div_euclid(i128::from(Self::PICO_PER_MICRO));
        let sign = if micro < 0 { "-" } else { "" };
        let m = micro.abs();
        write!(f, "{sign}${}.{:06}", m / 1_000_000, m % 1_000_000)
    }
}

/// Day boundaries in one time zone (`LEDGER_TIMEZONE`).
#[derive(Debug, Clone)]
pub struct Days {
    tz: TimeZone,
    name: String,
}

impl Days {
    /// An IANA name such as `Europe/Berlin` (or `UTC`).
    pub fn new(name: &str) -> Result<Self, String> {
        let tz = TimeZone::get(name).map_err(|e| format!("unknown time zone {name:?}: {e}"))?;
        Ok(Self {
            tz,
            name: name.to_owned(),
        })
    }

    /// `LEDGER_TIMEZONE` (IANA name, default `UTC`); the brain and the ledger share it.
    pub fn from_env(env: &mut crate::config::Env) -> Self {
        let name = env.string("LEDGER_TIMEZONE", "UTC");
        match Self::new(&name) {
            Ok(d) => d,
            Err(e) => {
                env.problem(
                    "LEDGER_TIMEZONE",
                    format!("expected an IANA time zone like Europe/Berlin: {e}"),
                );
                Self::utc()
            }
        }
    }

    /// Days in UTC.
    pub fn utc() -> Self {
        Self {
            tz: TimeZone::UTC,
            name: "UTC".to_owned(),
        }
    }

    /// The zone's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `YYYY-MM-DD` of the instant `ms` in this zone.
    pub fn day_of(&self, ms: i64) -> String {
        self.date_of(ms).to_string()
    }

    fn date_of(&self, ms: i64) -> Date {
        Timestamp::from_millisecond(ms)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned_datetime(self.tz.clone())
            .date()
    }

    /// The instant the day after `ms`'s day starts, in ms (for TTLs past the day's end).
    pub fn next_day_start_ms(&self, ms: i64) -> i64 {
        let date = self.date_of(ms);
        let next = date.tomorrow().unwrap_or(date);
        next.to_zoned_datetime(self.tz.clone())
            .map(|z| z.timestamp().as_millisecond())
            .unwrap_or(ms + 86_400_000)
    }

    /// The day `n` days before `ms`'s day (`0` = that day).
    pub fn days_back(&self, ms: i64, n: i64) -> String {
        let date = self.date_of(ms);
        date.checked_sub(jiff::Span::new().days(n))
            .unwrap_or(date)
            .to_string()
    }
}

/// The clause that adds an inserted `usage_daily` row to an existing one of the same day,
/// contact, model and operation (the ledger's aggregation and `!forget`'s merge both use it).
pub const DAILY_ADD_ON_CONFLICT: &str = "ON CONFLICT (day, contact_id, priced_model, operation) DO UPDATE SET \
     cost_pico_usd = usage_daily.cost_pico_usd + excluded.cost_pico_usd, \
     prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, \
     completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens, \
     audio_ms = usage_daily.audio_ms + excluded.audio_ms, \
     latency_ms = usage_daily.latency_ms + excluded.latency_ms, \
     records = usage_daily.records + excluded.records";

/// Unlinks a forgotten contact's usage, in the caller's transaction: its records lose their
/// contact, and its daily rows are added to the unlinked ones (`contact_id = ''`), so the
/// totals stay as they were.
pub async fn unlink_contact(
    conn: &mut sqlx::AnyConnection,
    contact_id: &str,
) -> Result<(), sqlx::Error> {
    let merge = format!(
        "INSERT INTO usage_daily (day, contact_id, priced_model, operation, cost_pico_usd, prompt_tokens, \
         completion_tokens, audio_ms, latency_ms, records) \
         SELECT day, '', priced_model, operation, cost_pico_usd, prompt_tokens, completion_tokens, audio_ms, \
         latency_ms, records FROM usage_daily WHERE contact_id = $1 {DAILY_ADD_ON_CONFLICT}"
    );
    for sql in [
        "UPDATE usage_records SET contact_id = NULL WHERE contact_id = $1",
        merge.as_str(),
        "DELETE FROM usage_daily WHERE contact_id = $1",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(contact_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Sums over a set of usage records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// What it cost.
    pub cost: Usd,
    /// Tokens of prompts.
    pub prompt_tokens: i64,
    /// Tokens of answers.
    pub completion_tokens: i64,
    /// Audio transcribed.
    pub audio_ms: i64,
    /// Paid calls.
    pub records: i64,
}

const TOTALS: &str = "CAST(COALESCE(SUM(cost_pico_usd), 0) AS BIGINT) AS cost, \
     CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
     CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
     CAST(COALESCE(SUM(audio_ms), 0) AS BIGINT) AS audio_ms, \
     CAST(COALESCE(SUM(records), 0) AS BIGINT) AS records";

fn totals_of(row: &sqlx::any::AnyRow) -> Result<Totals, sqlx::Error> {
    Ok(Totals {
        cost: Usd(row.try_get("cost")?),
        prompt_tokens: row.try_get("prompt_tokens")?,
        completion_tokens: row.try_get("completion_tokens")?,
        audio_ms: row.try_get("audio_ms")?,
        records: row.try_get("records")?,
    })
}

/// Totals of the days `from..=to` (`YYYY-MM-DD`).
pub async fn totals(db: &Db, from: &str, to: &str) -> Result<Totals, sqlx::Error> {
    let sql = format!("SELECT {TOTALS} FROM usage_daily WHERE day >= $1 AND day <= $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(from)
        .bind(to)
        .fetch_one(db.pool())
        .await?;
    totals_of(&row)
}

/// The contacts that cost most over `from..=to`, most expensive first (`None`: unlinked usage
/// of forgotten contacts).
pub async fn top_contacts(
    db: &Db,
    from: &str,
    to: &str,
    limit: i64,
) -> Result<Vec<(Option<String>, Totals)>, sqlx::Error> {
    let sql = format!(
        "SELECT contact_id, {TOTALS} FROM usage_daily WHERE day >= $1 AND day <= $2 \
         GROUP BY contact_id ORDER BY cost DESC, contact_id LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| {
            let c: String = r.try_get("contact_id")?;
            Ok(((!c.is_empty()).then_some(c), totals_of(r)?))
        })
        .collect()
}

/// Spend per day over `from..=to` (pico-dollars), by day; days without spend are absent.
pub async fn spend_by_day(
    db: &Db,
    from: &str,
    to: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT day, CAST(cost_pico_usd AS BIGINT) AS cost FROM usage_day_totals \
         WHERE day >= $1 AND day <= $2 ORDER BY day",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("day")?, r.try_get("cost")?)))
        .collect()
}

/// Average latency (ms) of the paid calls over `from..=to`, if any.
pub async fn average_latency_ms(db: &Db, from: &str, to: &str) -> Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(latency_ms), 0) AS BIGINT) AS total, \
         CAST(COALESCE(SUM(records), 0) AS BIGINT) AS n \
         FROM usage_daily WHERE day >= $1 AND day <= $2",
    )
    .bind(from)
    .bind(to)
    .fetch_one(db.pool())
    .await?;
    let total: i64 = row.try_get("total")?;
    let n: i64 = row.try_get("n")?;
    Ok((n > 0).then(|| total / n))
}

/// Redis key of the over-budget mark for `day`, set by the ledger and read by the brain before
/// any paid call: `{prefix}:budget:over:<day>`.
pub fn over_budget_key(keys: &crate::bus::Keys, day: &str) -> String {
    keys.key(&format!("budget:over:{day}"))
}

/// Whether the ledger marked `day` as over budget.
pub async fn is_over_budget(bus: &crate::bus::Bus, day: &str) -> redis::RedisResult<bool> {
    redis::cmd("EXISTS")
        .arg(over_budget_key(bus.keys(), day))
        .query_async(&mut bus.connection())
        .await
}

/// The ledger's limits as it keeps them in Redis (`{prefix}:budget:limits`) at start, for the
/// console: `COST_ALERT_USD` and `DAILY_BUDGET_USD` in pico-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// The daily cost alert.
    pub alert_pico: Option<i64>,
    /// The hard daily budget (none: no cap).
    pub budget_pico: Option<i64>,
}

fn limits_key(keys: &crate::bus::Keys) -> String {
    keys.key("budget:limits")
}

/// Keeps the ledger's limits for the console.
pub async fn keep_limits(bus: &crate::bus::Bus, limits: Limits) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg(limits_key(bus.keys()))
        .arg(serde_json::to_string(&limits).expect("limits serialize"))
        .query_async(&mut bus.connection())
        .await
}

/// The ledger's limits, as it last kept them (none before a ledger started).
pub async fn limits(bus: &crate::bus::Bus) -> redis::RedisResult<Option<Limits>> {
    let raw: Option<String> = redis::cmd("GET")
        .arg(limits_key(bus.keys()))
        .query_async(&mut bus.connection())
        .await?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

/// The daily allowance all web chat visitors share (`VISITOR_DAILY_TOKENS`,
/// `VISITOR_DAILY_AUDIO_SECONDS`; 0 = no cap): a new visitor costs nothing to create, so no
/// visitor may start a fresh allowance of their own. The brain reserves the most a paid call
/// could use (its prompt's bytes, an upper bound of its tokens, plus `MAX_TOKENS`) before the
/// call and settles to what it used after, so calls in flight together never pass the cap; the
/// transcriber reserves a voice note's seconds before sending it to Whisper. The counters live in Redis per day of `LEDGER_TIMEZONE`
/// (`{prefix}:visitors:tokens:<day>`, `{prefix}:visitors:audio_ms:<day>`), shared by replicas
/// and gone an hour after the day ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisitorAllowance {
    /// Tokens (prompt and answer) per day over all visitors; 0 = no cap.
    pub tokens: u64,
    /// Milliseconds of audio per day over all visitors; 0 = no cap.
    pub audio_ms: u64,
}

/// `VISITOR_DAILY_TOKENS` when unset: at list prices about $1 of gpt-4o a day (some 175
/// answers of 1,700 tokens), a fifth of the default `DAILY_BUDGET_USD`, so visitors can never
/// spend what the shop's WhatsApp customers need.
pub const DEFAULT_VISITOR_DAILY_TOKENS: u64 = 300_000;
/// `VISITOR_DAILY_AUDIO_SECONDS` when unset: 15 minutes of Whisper ($0.09 at list price).
pub const DEFAULT_VISITOR_DAILY_AUDIO_SECONDS: u64 = 900;

impl VisitorAllowance {
    /// `VISITOR_DAILY_TOKENS` and `VISITOR_DAILY_AUDIO_SECONDS`.
    pub fn from_env(env: &mut crate::config::Env) -> Self {
        let tokens = env.int_in(
            "VISITOR_DAILY_TOKENS",
            DEFAULT_VISITOR_DAILY_TOKENS,
            0,
            u64::MAX / 2,
        );
        let audio_seconds = env.int_in(
            "VISITOR_DAILY_AUDIO_SECONDS",
            DEFAULT_VISITOR_DAILY_AUDIO_SECONDS,
            0,
            u64::MAX / 2_000,
        );
        Self {
            tokens,
            audio_ms: audio_seconds * 1000,
        }
    }
}

/// `WEBCHAT_VISITORS` (`open`, the default, or `off`): whether web chat visitors are served.
/// The gateway and the brain both read it.
pub fn visitors_open(env: &mut crate::config::Env) -> bool {
    env.choice("WEBCHAT_VISITORS", "open", &["open", "off"]) == "open"
}

fn visitor_key(keys: &crate::bus::Keys, what: &str, day: &str) -> String {
    keys.key(&format!("visitors:{what}:{day}"))
}

/// Milliseconds from `now_ms` until an hour after `now_ms`'s day ends (a day counter's life).
fn day_counter_ttl_ms(days: &Days, now_ms: i64) -> i64 {
    (days.next_day_start_ms(now_ms) + 3_600_000 - now_ms).max(1)
}

/// What the visitors' allowance counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitorUse {
    /// Model tokens, prompt and answer.
    Tokens,
    /// Milliseconds of audio sent to Whisper.
    Audio,
}

impl VisitorUse {
    fn counter(self) -> &'static str {
        match self {
            Self::Tokens => "tokens",
            Self::Audio => "audio_ms",
        }
    }

    fn cap(self, allowance: VisitorAllowance) -> u64 {
        match self {
            Self::Tokens => allowance.tokens,
            Self::Audio => allowance.audio_ms,
        }
    }
}

/// Whether the visitors' `what` of `now_ms`'s day is used up (never, with no cap).
pub async fn visitor_spent(
    bus: &crate::bus::Bus,
    days: &Days,
    allowance: VisitorAllowance,
    what: VisitorUse,
    now_ms: i64,
) -> redis::RedisResult<bool> {
    let cap = what.cap(allowance);
    if cap == 0 {
        return Ok(false);
    }
    let used: Option<u64> = redis::cmd("GET")
        .arg(visitor_key(
            bus.keys(),
            what.counter(),
            &days.day_of(now_ms),
        ))
        .query_async(&mut bus.connection())
        .await?;
    Ok(used.unwrap_or(0) >= cap)
}

/// Part of the visitors' allowance held for one paid call in flight ([`reserve_visitor`]):
/// settled to what the call used ([`settle_visitor`]) when it returns.
#[derive(Debug)]
#[must_use = "a reservation is settled to what the call used"]
pub struct VisitorReservation {
    /// The day counter it was taken from (settled there even past midnight).
    key: String,
    amount: u64,
}

/// Reserves `amount` of the visitors' `what` for `now_ms`'s day: `None`, and nothing
/// reserved, when the day's use plus `amount` would pass the allowance. Check and add are one
/// script, so calls in flight on any replica never overshoot it together. With no cap, always
/// reserved (and counted).
pub async fn reserve_visitor(
    bus: &crate::bus::Bus,
    days: &Days,
    allowance: VisitorAllowance,
    what: VisitorUse,
    amount: u64,
    now_ms: i64,
) -> redis::RedisResult<Option<VisitorReservation>> {
    let script = redis::Script::new(
        r"local cap = tonumber(ARGV[2])
          local used = tonumber(redis.call('GET', KEYS[1]) or '0')
          if cap > 0 and used + tonumber(ARGV[1]) > cap then return 0 end
          redis.call('INCRBY', KEYS[1], ARGV[1])
          redis.call('PEXPIRE', KEYS[1], ARGV[3])
          return 1",
    );
    let key = visitor_key(bus.keys(), what.counter(), &days.day_of(now_ms));
    let reserved: i64 = script
        .key(&key)
        .arg(amount)
        .arg(what.cap(allowance))
        .arg(day_counter_ttl_ms(days, now_ms))
        .invoke_async(&mut bus.connection())
        .await?;
    Ok((reserved == 1).then_some(VisitorReservation { key, amount }))
}

/// Settles a reservation to the `used` amount the call really took (0 when it failed): the
/// difference goes back to the allowance (or, were it more, is added). A day counter gone
/// meanwhile is left alone.
pub async fn settle_visitor(
    bus: &crate::bus::Bus,
    reservation: VisitorReservation,
    used: u64,
) -> redis::RedisResult<()> {
    let delta = used as i64 - reservation.amount as i64;
    if delta == 0 {
        return Ok(());
    }
    redis::Script::new(
        r"if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBY', KEYS[1], ARGV[1]) end
          return 1",
    )
    .key(&reservation.key)
    .arg(delta)
    .invoke_async(&mut bus.connection())
    .await
}

/// Reserves `audio_ms` of the visitors' audio for `now_ms`'s day: `false`, and nothing
/// reserved, when it would go over the allowance (always `true`, uncounted, with no cap).
pub async fn reserve_visitor_audio(
    bus: &crate::bus::Bus,
    days: &Days,
    allowance: VisitorAllowance,
    audio_ms: u64,
    now_ms: i64,
) -> redis::RedisResult<bool> {
    if allowance.audio_ms == 0 {
        return Ok(true);
    }
    let reserved =
        reserve_visitor(bus, days, allowance, VisitorUse::Audio, audio_ms, now_ms).await?;
    Ok(reserved.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reservation_holds_the_allowance_until_settled_to_what_was_used() {
        // The machine's Redis (as `testing::redis_url`, behind a feature), a prefix of our own.
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("t-{}", crate::ids::new_id().to_lowercase());
        let bus = crate::bus::Bus::with_parts(
            &crate::config::Dsn::new(&url),
            &prefix,
            crate::config::BusConfig::default(),
            "test",
        )
        .unwrap();
        let days = Days::utc();
        let now = crate::ids::now_ms();
        let allowance = VisitorAllowance {
            tokens: 1_500,
            audio_ms: 0,
        };
        let reserve = async |amount| {
            reserve_visitor(&bus, &days, allowance, VisitorUse::Tokens, amount, now)
                .await
                .unwrap()
        };
        let used = async || -> u64 {
            let v: Option<u64> = redis::cmd("GET")
                .arg(visitor_key(bus.keys(), "tokens", &days.day_of(now)))
                .query_async(&mut bus.connection())
                .await
                .unwrap();
            v.unwrap_or(0)
        };
        let first = reserve(1_000).await.expect("fits");
        // A call in flight holds its most: a second one that would pass the cap is refused.
        assert!(reserve(600).await.is_none());
        assert_eq!(used().await, 1_000);
        // The call failed: all of it comes back.
        settle_visitor(&bus, first, 0).await.unwrap();
        assert_eq!(used().await, 0);
        let second = reserve(1_500).await.expect("fits");
        settle_visitor(&bus, second, 120).await.unwrap();
        assert_eq!(used().await, 120);
        assert!(reserve(1_380).await.is_some());
        assert!(reserve(1).await.is_none());
        let _: () = redis::cmd("DEL")
            .arg(visitor_key(bus.keys(), "tokens", &days.day_of(now)))
            .query_async(&mut bus.connection())
            .await
            .unwrap();
    }

    #[test]
    fn money_is_exact_and_prints_six_decimals() {
        assert_eq!(Usd::from_dollars(2.5).pico(), 2_500_000_000_000);
        assert_eq!(Usd::from_dollars(0.15).pico(), 150_000_000_000);
        assert_eq!(Usd(150_000).to_string(), "$0.000000");
        assert_eq!(Usd(1_500_000).to_string(), "$0.000002");
        assert_eq!(Usd(12_345_678_000_000).to_string(), "$12.345678");
        assert_eq!(Usd(-1_000_000).to_string(), "-$0.000001");
    }

    #[test]
    fn days_follow_the_time_zone() {
        // 2026-03-29 22:30 UTC is already 2026-03-30 in Berlin (CEST, UTC+2).
        let ms = 1_774_823_400_000;
        assert_eq!(Days::utc().day_of(ms), "2026-03-29");
        let berlin = Days::new("Europe/Berlin").unwrap();
        assert_eq!(berlin.day_of(ms), "2026-03-30");
        // The Berlin day 2026-03-30 ends at 2026-03-30 22:00 UTC.
        assert_eq!(berlin.next_day_start_ms(ms), 1_774_908_000_000);
        assert_eq!(berlin.days_back(ms, 6), "2026-03-24");
        assert!(Days::new("Mars/Olympus").is_err());
    }
}
