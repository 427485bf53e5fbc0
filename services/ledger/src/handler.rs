//! Handling one usage record: price it, store it once, keep the budget mark, raise alerts.

use std::sync::Arc;
use std::time::Duration;

use shared::bus::{Bus, Delivery, HandleError, Handler, Publish};
use shared::clock::SharedClock;
use shared::db::Db;
use shared::proto::{Payload, UsageRecord};
use shared::redact::Redacted;
use shared::usage::{Usd, over_budget_key};

use crate::config::Config;
use crate::metrics as m;
use crate::store::{self, Alert, AlertKind, Record, Thresholds};

/// The ledger: consumes usage records.
pub struct Ledger {
    db: Db,
    bus: Bus,
    cfg: Config,
    http: reqwest::Client,
    clock: SharedClock,
    writer: store::Writer,
    /// The budget mark as last written: (day, over, when). Records repeat it within a second
    /// without a Redis round trip each; the periodic reconcile writes it regardless.
    mark: std::sync::Mutex<Option<(String, bool, std::time::Instant)>>,
    /// What the owner's tools hear (`EVENTS_WEBHOOK_URL`): the budget reached.
    events: shared::events::Events,
}

/// How long a written budget mark is taken as still in place (see [`Ledger::mark`]).
const MARK_FRESH: Duration = Duration::from_secs(1);

impl Ledger {
    /// A ledger on `db` and `bus`, telling the time by `clock` (tests set it).
    pub fn new(db: Db, bus: Bus, cfg: Config, clock: SharedClock) -> Arc<Self> {
        Self::with_events(db, bus, cfg, clock, shared::events::Events::off())
    }

    /// [`Ledger::new`] telling the owner's tools through `events`.
    pub fn with_events(
        db: Db,
        bus: Bus,
        cfg: Config,
        clock: SharedClock,
        events: shared::events::Events,
    ) -> Arc<Self> {
        let http = shared::http_client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        let writer = store::writer(db.clone());
        Arc::new(Self {
            db,
            bus,
            cfg,
            http,
            clock,
            writer,
            mark: std::sync::Mutex::new(None),
            events,
        })
    }

    fn record_of(&self, u: &UsageRecord, at_ms: i64) -> (Record, bool) {
        let priced = self.cfg.prices.price(
            &u.requested_model,
            &u.response_model,
            u.prompt_tokens,
            u.completion_tokens,
            u.audio_seconds,
        );
        let known = priced.model.is_some();
        let record = Record {
            usage_id: u.usage_id.clone(),
            contact_id: (!u.contact_id.is_empty()).then(|| u.contact_id.clone()),
            message_id: u.message_id.clone(),
            operation: u.operation().label(),
            requested_model: u.requested_model.clone(),
            response_model: u.response_model.clone(),
            priced_model: priced.model.unwrap_or_else(|| {
                if u.requested_model.is_empty() {
                    u.response_model.clone()
                } else {
                    u.requested_model.clone()
                }
            }),
            prompt_tokens: u.prompt_tokens as i64,
            completion_tokens: u.completion_tokens as i64,
            audio_ms: if priced.billed_seconds > 0 {
                (u.audio_seconds * 1000.0).round() as i64
            } else {
                0
            },
            cost: priced.cost,
            latency_ms: u.latency_ms as i64,
            day: self.cfg.days.day_of(at_ms),
            at_ms,
        };
        (record, known)
    }

    /// Sets or clears today's over-budget mark from today's spend (at startup, periodically,
    /// and after every record); updates the spend gauges. Returns whether today is over budget.
    pub async fn reconcile_budget(&self) -> anyhow::Result<bool> {
        let now = self.clock.now_ms();
        let day = self.cfg.days.day_of(now);
        let total = store::day_total(&self.db, &day).await?;
        metrics::gauge!(m::SPEND_TODAY).set(total.as_f64());
        self.apply_budget_mark(&day, now, total).await
    }

    async fn apply_budget_mark(&self, day: &str, at_ms: i64, total: Usd) -> anyhow::Result<bool> {
        let key = over_budget_key(self.bus.keys(), day);
        let mut conn = self.bus.connection();
        let over = self.cfg.daily_budget.is_some_and(|b| total >= b);
        // Kept an hour past the end of the day in LEDGER_TIMEZONE; the next day starts clear.
        // The lifetime is relative (PX, measured by this service's clock), never an absolute
        // PXAT: Redis would measure that against its own clock.
        let ttl_ms = self.cfg.days.next_day_start_ms(at_ms) + 3_600_000 - self.clock.now_ms();
        if over && ttl_ms > 0 {
            redis::cmd("SET")
                .arg(&key)
                .arg(total.pico())
                .arg("PX")
                .arg(ttl_ms)
                .query_async::<()>(&mut conn)
                .await?;
        } else {
            // Budget raised or removed by the operator: paid calls may resume.
            redis::cmd("DEL")
                .arg(&key)
                .query_async::<()>(&mut conn)
                .await?;
        }
        if day == self.cfg.days.day_of(self.clock.now_ms()) {
            metrics::gauge!(m::BUDGET_EXCEEDED).set(if over { 1.0 } else { 0.0 });
        }
        *self.mark.lock().expect("mark lock") =
            Some((day.to_owned(), over, std::time::Instant::now()));
        Ok(over)
    }

    /// [`Ledger::apply_budget_mark`] after a record, skipped while under budget and the same
    /// cleared mark was written less than [`MARK_FRESH`] ago.
    async fn keep_budget_mark(&self, day: &str, at_ms: i64, total: Usd) -> anyhow::Result<bool> {
        let over = self.cfg.daily_budget.is_some_and(|b| total >= b);
        let fresh = self
            .mark
            .lock()
            .expect("mark lock")
            .as_ref()
            .is_some_and(|(d, o, at)| d == day && !*o && !over && at.elapsed() < MARK_FRESH);
        if fresh {
            return Ok(false);
        }
        self.apply_budget_mark(day, at_ms, total).await
    }

    fn alert_text(&self, a: &Alert) -> String {
        let tz = self.cfg.days.name();
        match a.kind {
            AlertKind::DailyCost => format!(
                "⚠️ *Cost alert*: today's AI spend is {}, over the {} alert threshold ({}, {tz}).",
                a.spend, a.threshold, a.day
            ),
            AlertKind::BudgetWarning => format!(
                "⚠️ *Budget warning*: today's AI spend is {}, 80% of the daily budget ({} of {}; {}, {tz}).",
                a.spend,
                a.threshold,
                self.cfg.daily_budget.unwrap_or_default(),
                a.day
            ),
            AlertKind::BudgetReached => format!(
                "🛑 *Daily budget reached*: today's AI spend is {} (budget {}). The bot stops paid AI calls until the day ends ({}, {tz}); raise DAILY_BUDGET_USD to resume.",
                a.spend, a.threshold, a.day
            ),
            AlertKind::ContactCost => format!(
                "⚠️ *Unusual usage*: one contact ({}) spent {} today, over the {} per-contact alert ({}, {tz}).",
                Redacted(&a.subject),
                a.spend,
                a.threshold,
                a.day
            ),
        }
    }

    /// Posts an alert to `ALERT_WEBHOOK_URL` (Slack-compatible), retried briefly.
    async fn post_webhook(&self, a: &Alert, text: &str) {
        let Some(url) = &self.cfg.alert_webhook else {
            return;
        };
        let body = serde_json::json!({
            "text": text,
            "switchboard": {
                "kind": a.kind.as_str(),
                "day": a.day,
                "timezone": self.cfg.days.name(),
                "threshold_usd": a.threshold.to_string().trim_start_matches('$'),
                "spend_usd": a.spend.to_string().trim_start_matches('$'),
                "contact": (!a.subject.is_empty()).then(|| Redacted(&a.subject).to_string()),
            }
        });
        if let Err(e) = shared::webhook::post_alert(&self.http, url, &body).await {
            metrics::counter!(m::WEBHOOK_FAILURES).increment(1);
            tracing::error!(error = %e, kind = a.kind.as_str(), "alert webhook failed");
        }
    }

    /// Every admin gets the alert on WhatsApp through the outbound stream.
    async fn admin_messages(&self, a: &Alert, text: &str) -> Vec<Publish> {
        let mut phones: Vec<String> = self
            .cfg
            .admin_numbers
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect();
        match store::admin_phones(&self.db).await {
            Ok(more) => {
                for p in more {
                    if !phones.contains(&p) {
                        phones.push(p);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read admins from the database"),
        }
        phones
            .into_iter()
            .map(|phone| {
                let id = blake3::hash(
                    format!(
                        "alert|{}|{}|{}|{}|{phone}",
                        a.day,
                        a.kind.as_str(),
                        a.subject,
                        a.threshold.pico()
                    )
                    .as_bytes(),
                )
                .to_hex()[..26]
                    .to_owned();
                Publish::admin_alert("ledger", id, text, &phone)
            })
            .collect()
    }
}

impl Handler for Ledger {
    #[tracing::instrument(name = "ledger.record", skip_all, fields(usage_id))]
    async fn handle(&self, d: Delivery) -> Result<Vec<Publish>, HandleError> {
        let Some(Payload::Usage(u)) = &d.envelope.payload else {
            return Err(HandleError::Permanent(
                format!(
                    "expected a usage record on the usage stream, got {}",
                    d.envelope.payload.as_ref().map_or("nothing", |p| p.kind())
                )
                .into(),
            ));
        };
        if u.usage_id.is_empty() {
            return Err(HandleError::Permanent(
                "usage record without usage_id".into(),
            ));
        }
        tracing::Span::current().record("usage_id", u.usage_id.as_str());
        let at_ms = if u.at_ms > 0 {
            u.at_ms
        } else {
            self.clock.now_ms()
        };
        let (record, known) = self.record_of(u, at_ms);
        if !known {
            tracing::warn!(
                requested_model = %u.requested_model,
                response_model = %u.response_model,
                priced_as = if self.cfg.daily_budget.is_some() {
                    "the most expensive known model (a daily budget is set)"
                } else {
                    "zero"
                },
                "unknown model; add it to PRICES_FILE"
            );
        }
        let thresholds = Thresholds {
            cost_alert: self.cfg.cost_alert,
            contact_alert: self.cfg.contact_alert,
            daily_budget: self.cfg.daily_budget,
        };
        let stored = self
            .writer
            .commit(store::Job {
                record: record.clone(),
                thresholds,
                backend: self.db.backend(),
            })
            .await
            .map_err(HandleError::database)?;

        if stored.inserted {
            m::record_stored(&record, known);
            for a in &stored.alerts {
                metrics::counter!(m::ALERTS, "kind" => a.kind.as_str()).increment(1);
            }
        } else {
            metrics::counter!(m::RECORDS, "operation" => record.operation, "outcome" => "duplicate")
                .increment(1);
        }
        if record.day == self.cfg.days.day_of(self.clock.now_ms()) {
            metrics::gauge!(m::SPEND_TODAY).set(stored.day_total.as_f64());
        }
        self.keep_budget_mark(&record.day, at_ms, stored.day_total)
            .await
            .map_err(|e| HandleError::retry("budget mark", e))?;

        Ok(self.raise(&stored.alerts).await)
    }
}

impl Ledger {
    /// Raises the alerts a record crossed: logged, posted to the webhook, and the messages to
    /// the admins to publish.
    async fn raise(&self, alerts: &[store::Alert]) -> Vec<Publish> {
        let mut out = Vec::new();
        for a in alerts {
            let text = self.alert_text(a);
            tracing::warn!(
                kind = a.kind.as_str(),
                day = %a.day,
                spend = %a.spend,
                threshold = %a.threshold,
                contact = %Redacted(&a.subject),
                "cost alert"
            );
            self.post_webhook(a, &text).await;
            out.extend(self.admin_messages(a, &text).await);
            if a.kind == AlertKind::BudgetReached {
                let data = serde_json::json!({
                    "day": a.day,
                    "timezone": self.cfg.days.name(),
                    "spend_usd": a.spend.to_string().trim_start_matches('$'),
                    "budget_usd": a.threshold.to_string().trim_start_matches('$'),
                });
                let kind = shared::events::Kind::BudgetExceeded;
                if let Some(mut p) = self.events.event(kind, None, data) {
                    // Once a day: a record handled again publishes the same event.
                    p.envelope.event_id =
                        format!("budget-exceeded-{}-{}", a.day, a.threshold.pico());
                    out.push(p);
                }
            }
        }
        out
    }
}
