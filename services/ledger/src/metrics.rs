//! The ledger's metrics, registered at zero at startup.

use crate::pricing::PriceTable;
use crate::store::{AlertKind, Record};

/// Spend by model and operation.
pub const COST: &str = "ledger_cost_usd";
/// Tokens by model and direction.
pub const TOKENS: &str = "ledger_tokens_total";
/// Audio transcribed.
pub const AUDIO_SECONDS: &str = "ledger_audio_seconds";
/// Usage records stored.
pub const RECORDS: &str = "ledger_records_total";
/// Records of a model missing from the price table.
pub const UNKNOWN_MODEL: &str = "ledger_unknown_model_total";
/// Alerts raised by kind.
pub const ALERTS: &str = "ledger_alerts_total";
/// Alert webhook calls that failed.
pub const WEBHOOK_FAILURES: &str = "ledger_alert_webhook_failures_total";
/// Spend so far today.
pub const SPEND_TODAY: &str = "ledger_spend_today_usd";
/// `DAILY_BUDGET_USD` (0: none).
pub const BUDGET_USD: &str = "ledger_daily_budget_usd";
/// `COST_ALERT_USD`.
pub const COST_ALERT_USD: &str = "ledger_cost_alert_threshold_usd";
/// 1 while today's budget is spent.
pub const BUDGET_EXCEEDED: &str = "ledger_budget_exceeded";

const OPERATIONS: [&str; 4] = ["chat", "vision", "transcription", "other"];

/// Describes every metric and registers it at zero (per known model and operation).
pub fn register(prices: &PriceTable, budget: Option<f64>, cost_alert: f64) {
    metrics::describe_gauge!(
        COST,
        "Cost of paid API calls in USD since start, by model and operation (a gauge: the value is fractional; use increase())"
    );
    metrics::describe_counter!(
        TOKENS,
        "Tokens by model, operation and direction (input/output)"
    );
    metrics::describe_gauge!(
        AUDIO_SECONDS,
        "Audio seconds transcribed since start, by model"
    );
    metrics::describe_counter!(
        RECORDS,
        "Usage records consumed, by operation and outcome (stored/duplicate)"
    );
    metrics::describe_counter!(
        UNKNOWN_MODEL,
        "Usage records of models missing from the price table (priced at zero)"
    );
    metrics::describe_counter!(ALERTS, "Cost alerts raised, by kind");
    metrics::describe_counter!(WEBHOOK_FAILURES, "Alerts the webhook did not accept");
    metrics::describe_gauge!(SPEND_TODAY, "Today's spend in USD (LEDGER_TIMEZONE)");
    metrics::describe_gauge!(BUDGET_USD, "DAILY_BUDGET_USD (0 = no cap)");
    metrics::describe_gauge!(COST_ALERT_USD, "COST_ALERT_USD");
    metrics::describe_gauge!(
        BUDGET_EXCEEDED,
        "1 while today's spend is at or over the daily budget"
    );
    for model in prices.models() {
        let model = model.to_owned();
        for op in OPERATIONS {
            metrics::gauge!(COST, "model" => model.clone(), "operation" => op).set(0.0);
        }
        for op in ["chat", "vision"] {
            for dir in ["input", "output"] {
                metrics::counter!(TOKENS, "model" => model.clone(), "operation" => op, "direction" => dir)
                    .absolute(0);
            }
        }
        metrics::gauge!(AUDIO_SECONDS, "model" => model.clone()).set(0.0);
    }
    for op in OPERATIONS {
        for outcome in ["stored", "duplicate"] {
            metrics::counter!(RECORDS, "operation" => op, "outcome" => outcome).absolute(0);
        }
    }
    for k in AlertKind::ALL {
        metrics::counter!(ALERTS, "kind" => k.as_str()).absolute(0);
    }
    metrics::counter!(UNKNOWN_MODEL).absolute(0);
    metrics::counter!(WEBHOOK_FAILURES).absolute(0);
    metrics::gauge!(SPEND_TODAY).set(0.0);
    metrics::gauge!(BUDGET_USD).set(budget.unwrap_or(0.0));
    metrics::gauge!(COST_ALERT_USD).set(cost_alert);
    metrics::gauge!(BUDGET_EXCEEDED).set(0.0);
}

/// Counts a newly stored record.
pub fn record_stored(r: &Record, known: bool) {
    metrics::counter!(RECORDS, "operation" => r.operation, "outcome" => "stored").increment(1);
    if !known {
        metrics::counter!(UNKNOWN_MODEL).increment(1);
    }
    let model = r.priced_model.clone();
    metrics::gauge!(COST, "model" => model.clone(), "operation" => r.operation)
        .increment(r.cost.as_f64());
    if r.prompt_tokens > 0 || r.completion_tokens > 0 {
        metrics::counter!(TOKENS, "model" => model.clone(), "operation" => r.operation, "direction" => "input")
            .increment(r.prompt_tokens.max(0) as u64);
        metrics::counter!(TOKENS, "model" => model.clone(), "operation" => r.operation, "direction" => "output")
            .increment(r.completion_tokens.max(0) as u64);
    }
    if r.audio_ms > 0 {
        metrics::gauge!(AUDIO_SECONDS, "model" => model).increment(r.audio_ms as f64 / 1000.0);
    }
}
