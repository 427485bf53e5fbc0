//! Costs and usage on the console, from the ledger's tables: today, 7 and 30 days — spend,
//! tokens, calls, audio minutes, cost per conversation —, the budget and how close today is,
//! a daily series of spend and customers' messages (the page draws it), top contacts.

use axum::Json;
use axum::extract::State;
use shared::usage::{self, Totals};

use super::{Api, ApiResult};

/// One period's figures.
#[derive(serde::Serialize)]
pub struct Period {
    label: &'static str,
    days: i64,
    spend_usd: f64,
    prompt_tokens: i64,
    completion_tokens: i64,
    calls: i64,
    audio_minutes: f64,
    conversations: i64,
    /// Spend over conversations started in the period (none without conversations).
    cost_per_conversation_usd: Option<f64>,
}

/// One day of the chart.
#[derive(serde::Serialize)]
pub struct Day {
    day: String,
    spend_usd: f64,
    messages: i64,
}

/// A contact among those that cost most.
#[derive(serde::Serialize)]
pub struct Top {
    contact_id: Option<String>,
    phone: Option<String>,
    spend_usd: f64,
    calls: i64,
}

/// `GET /console/api/costs`.
#[derive(serde::Serialize)]
pub struct Costs {
    timezone: String,
    today: String,
    periods: Vec<Period>,
    /// The daily cost alert and hard budget as the ledger keeps them (USD).
    alert_usd: Option<f64>,
    budget_usd: Option<f64>,
    /// Today's spend over the budget, 0–1+ (none without a budget).
    budget_used: Option<f64>,
    daily: Vec<Day>,
    top_contacts: Vec<Top>,
}

fn usd(pico: i64) -> f64 {
    shared::usage::Usd(pico).as_f64()
}

/// `GET /console/api/costs`.
pub async fn costs(State(api): State<Api>) -> ApiResult<Costs> {
    let days = &api.settings.base().days;
    let now = api.clock.now_ms();
    let today = days.day_of(now);
    let mut periods = Vec::new();
    for (label, n) in [("today", 1), ("7 days", 7), ("30 days", 30)] {
        let from = days.days_back(now, n - 1);
        let t: Totals = usage::totals(&api.db, &from, &today).await?;
        let since_ms = now - n * 86_400_000;
        let conversations = crate::store::conversations_started(&api.db, since_ms).await?;
        periods.push(Period {
            label,
            days: n,
            spend_usd: t.cost.as_f64(),
            prompt_tokens: t.prompt_tokens,
            completion_tokens: t.completion_tokens,
            calls: t.records,
            audio_minutes: t.audio_ms as f64 / 60_000.0,
            conversations,
            cost_per_conversation_usd: (conversations > 0)
                .then(|| t.cost.as_f64() / conversations as f64),
        });
    }
    let from = days.days_back(now, 29);
    let spend = usage::spend_by_day(&api.db, &from, &today).await?;
    let messages = crate::store::received_by_day(&api.db, &from, &today).await?;
    let daily = (0..30)
        .rev()
        .map(|back| {
            let day = days.days_back(now, back);
            let s = spend.iter().find(|(d, _)| *d == day).map_or(0, |x| x.1);
            let m = messages.iter().find(|(d, _)| *d == day).map_or(0, |x| x.1);
            Day {
                spend_usd: usd(s),
                messages: m,
                day,
            }
        })
        .collect();
    let mut top_contacts = Vec::new();
    for (contact_id, t) in usage::top_contacts(&api.db, &from, &today, 10).await? {
        let phone = match &contact_id {
            Some(id) => crate::store::phone_of(&api.db, id).await?,
            None => None,
        };
        top_contacts.push(Top {
            contact_id,
            phone,
            spend_usd: t.cost.as_f64(),
            calls: t.records,
        });
    }
    let limits = usage::limits(&api.bus).await.unwrap_or_default();
    let budget = limits.and_then(|l| l.budget_pico);
    let today_spend = periods.first().map_or(0.0, |p| p.spend_usd);
    Ok(Json(Costs {
        timezone: days.name().to_owned(),
        today,
        alert_usd: limits.and_then(|l| l.alert_pico).map(usd),
        budget_usd: budget.map(usd),
        budget_used: budget.filter(|&b| b > 0).map(|b| today_spend / usd(b)),
        periods,
        daily,
        top_contacts,
    }))
}
