//! The ledger's own configuration.

use shared::config::{CommonConfig, Env};
use shared::phone::{self, Phone};
use shared::usage::{Days, Usd};

use crate::pricing::PriceTable;

/// Ledger settings (beyond the common variables).
#[derive(Debug, Clone)]
pub struct Config {
    /// `LEDGER_TIMEZONE`: day boundaries for daily totals, alerts and the budget.
    pub days: Days,
    /// `COST_ALERT_USD` (default 50): alert once a day when today's spend reaches it.
    pub cost_alert: Usd,
    /// `CONTACT_ALERT_USD` (default 5; 0 turns it off): alert when one contact's spend today
    /// reaches it (abuse signal).
    pub contact_alert: Option<Usd>,
    /// `DAILY_BUDGET_USD` (default [`DEFAULT_DAILY_BUDGET_USD`]; 0 = no cap): stop paid calls
    /// for the rest of the day.
    pub daily_budget: Option<Usd>,
    /// `ALERT_WEBHOOK_URL`: every alert is POSTed here (Slack-compatible JSON).
    /// A credential (the URL carries the webhook's token): never logged.
    pub alert_webhook: Option<secrecy::SecretString>,
    /// `PRICES_FILE`: TOML adding or overriding model prices.
    pub prices: PriceTable,
    /// `ADMIN_NUMBERS`: admins who get alerts on WhatsApp (with the admins in the database).
    pub admin_numbers: Vec<Phone>,
}

/// `DAILY_BUDGET_USD` when unset: a fresh install spends at most what a small shop's busy day
/// costs (at list prices about 870 gpt-4o answers of 1,500 prompt and 200 answer tokens, or
/// 14,000 of gpt-4o-mini), never an open-ended bill.
pub const DEFAULT_DAILY_BUDGET_USD: f64 = 5.0;

fn dollars(env: &mut Env, name: &str, default: Option<f64>) -> Option<Usd> {
    let v: Option<f64> = env.opt(name, "an amount in US dollars like 50 or 12.5");
    match v.or(default) {
        Some(x) if !(x.is_finite() && x >= 0.0) => {
            env.problem(name, "expected an amount of US dollars >= 0");
            None
        }
        Some(x) => Some(Usd::from_dollars(x)),
        None => None,
    }
}

impl Config {
    /// Reads the ledger's variables; problems are recorded in `env`.
    pub fn load(env: &mut Env, _common: &CommonConfig) -> Self {
        let days = Days::from_env(env);
        let cost_alert =
            dollars(env, "COST_ALERT_USD", Some(50.0)).unwrap_or(Usd::from_dollars(50.0));
        let contact_alert = dollars(env, "CONTACT_ALERT_USD", Some(5.0)).filter(|u| u.pico() > 0);
        // 0 turns the cap off (the test and bench rigs; an owner who watches COST_ALERT_USD).
        let daily_budget = dollars(env, "DAILY_BUDGET_USD", Some(DEFAULT_DAILY_BUDGET_USD))
            .filter(|u| u.pico() > 0);
        let alert_webhook = env.secret_http_url("ALERT_WEBHOOK_URL");
        let prices = match env.opt_string("PRICES_FILE") {
            None => PriceTable::default(),
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(text) => PriceTable::with_file(&text).unwrap_or_else(|e| {
                    env.problem("PRICES_FILE", format!("{path}: invalid price file: {e}"));
                    PriceTable::default()
                }),
                Err(e) => {
                    env.problem("PRICES_FILE", format!("cannot read {path}: {e}"));
                    PriceTable::default()
                }
            },
        };
        // With a budget, a model missing from the table must not spend it unseen.
        let prices = prices.fail_closed(daily_budget.is_some());
        let (admin_numbers, bad) = phone::parse_list(&env.string("ADMIN_NUMBERS", ""));
        if !bad.is_empty() {
            env.problem(
                "ADMIN_NUMBERS",
                format!(
                    "expected comma-separated phone numbers with country code, {} entr{} are not",
                    bad.len(),
                    if bad.len() == 1 { "y" } else { "ies" }
                ),
            );
        }
        Self {
            days,
            cost_alert,
            contact_alert,
            daily_budget,
            alert_webhook,
            prices,
            admin_numbers,
        }
    }
}
