//! The price table: defaults, the operator's `PRICES_FILE`, and pricing one record exactly.
//!
//! Default prices are OpenAI's published list prices as gathered in November 2026: gpt-4o
//! $2.50 input / $10.00 output per 1M tokens; gpt-4o-mini $0.15 / $0.60 per 1M; whisper-1
//! $0.006 per audio minute, billed per second. Operators: check them against OpenAI's pricing
//! page and override or add models in `PRICES_FILE`.

use std::collections::HashMap;

use serde::Deserialize;
use shared::usage::Usd;

/// Prices of one model, in micro-dollars (exact integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelPrice {
    /// Micro-dollars per 1M input (prompt) tokens — equal to pico-dollars per token.
    pub input_per_mtok_micro: i64,
    /// Micro-dollars per 1M output (completion) tokens.
    pub output_per_mtok_micro: i64,
    /// Micro-dollars per audio minute (billed per second).
    pub per_audio_minute_micro: i64,
}

/// Model name → prices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTable {
    models: HashMap<String, ModelPrice>,
    /// Price unknown models as the most expensive known one instead of at zero (set when a
    /// daily budget is: a model missing from the table must not spend it unseen).
    fail_closed: bool,
}

/// How a record was priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// The price-table entry used (`None`: unknown model, priced at zero — or, when the
    /// table fails closed, at the most expensive known prices).
    pub model: Option<String>,
    /// What the call cost.
    pub cost: Usd,
    /// Seconds billed (audio).
    pub billed_seconds: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[serde(default)]
    models: HashMap<String, PriceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceEntry {
    /// USD per 1M input tokens.
    input_per_mtok: Option<f64>,
    /// USD per 1M output tokens.
    output_per_mtok: Option<f64>,
    /// USD per audio minute.
    per_audio_minute: Option<f64>,
}

fn micro(usd: f64) -> i64 {
    (usd * 1e6).round() as i64
}

impl Default for PriceTable {
    fn default() -> Self {
        let mut models = HashMap::new();
        models.insert(
            "gpt-4o".to_owned(),
            ModelPrice {
                input_per_mtok_micro: 2_500_000,
                output_per_mtok_micro: 10_000_000,
                per_audio_minute_micro: 0,
            },
        );
        models.insert(
            "gpt-4o-mini".to_owned(),
            ModelPrice {
                input_per_mtok_micro: 150_000,
                output_per_mtok_micro: 600_000,
                per_audio_minute_micro: 0,
            },
        );
        models.insert(
            "whisper-1".to_owned(),
            ModelPrice {
                input_per_mtok_micro: 0,
                output_per_mtok_micro: 0,
                per_audio_minute_micro: 6_000,
            },
        );
        Self {
            models,
            fail_closed: false,
        }
    }
}

/// `gpt-4o-2024-08-06` → `gpt-4o`: dated snapshots are priced as their family.
pub fn family(model: &str) -> &str {
    let b = model.as_bytes();
    if b.len() > 11 {
        let tail = &model[model.len() - 11..];
        let t = tail.as_bytes();
        let digits = |r: std::ops::Range<usize>| t[r].iter().all(u8::is_ascii_digit);
        if t[0] == b'-'
            && digits(1..5)
            && t[5] == b'-'
            && digits(6..8)
            && t[8] == b'-'
            && digits(9..11)
        {
            return &model[..model.len() - 11];
        }
    }
    model
}

impl PriceTable {
    /// Defaults with the models of a TOML price file added or overridden.
    pub fn with_file(text: &str) -> Result<Self, String> {
        let file: PriceFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut table = Self::default();
        for (name, e) in file.models {
            let mut p = table.models.get(&name).copied().unwrap_or_default();
            for (v, field) in [
                (e.input_per_mtok, "input_per_mtok"),
                (e.output_per_mtok, "output_per_mtok"),
                (e.per_audio_minute, "per_audio_minute"),
            ] {
                if let Some(v) = v
                    && !(v.is_finite() && v >= 0.0)
                {
                    return Err(format!("models.{name}.{field} must be a price >= 0"));
                }
            }
            if let Some(v) = e.input_per_mtok {
                p.input_per_mtok_micro = micro(v);
            }
            if let Some(v) = e.output_per_mtok {
                p.output_per_mtok_micro = micro(v);
            }
            if let Some(v) = e.per_audio_minute {
                p.per_audio_minute_micro = micro(v);
            }
            table.models.insert(name, p);
        }
        Ok(table)
    }

    /// Unknown models are priced as the most expensive known model (each price the highest
    /// any model has), not at zero.
    pub fn fail_closed(mut self, on: bool) -> Self {
        self.fail_closed = on;
        self
    }

    /// The highest input, output and audio prices of the table.
    fn most_expensive(&self) -> ModelPrice {
        self.models
            .values()
            .fold(ModelPrice::default(), |a, p| ModelPrice {
                input_per_mtok_micro: a.input_per_mtok_micro.max(p.input_per_mtok_micro),
                output_per_mtok_micro: a.output_per_mtok_micro.max(p.output_per_mtok_micro),
                per_audio_minute_micro: a.per_audio_minute_micro.max(p.per_audio_minute_micro),
            })
    }

    /// The models priced.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// The price of `model`, by its exact name.
    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        self.models.get(model)
    }

    /// The table entry for a call: the model the API returned, its family, then the requested
    /// model and its family.
    pub fn resolve(&self, requested: &str, response: &str) -> Option<(&str, &ModelPrice)> {
        [response, family(response), requested, family(requested)]
            .into_iter()
            .filter(|m| !m.is_empty())
            .find_map(|m| self.models.get_key_value(m))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Prices one call exactly.
    pub fn price(
        &self,
        requested: &str,
        response: &str,
        prompt_tokens: u64,
        completion_tokens: u64,
        audio_seconds: f64,
    ) -> Priced {
        let billed_seconds = billed_seconds(audio_seconds);
        let (model, p) = match self.resolve(requested, response) {
            Some((name, p)) => (Some(name.to_owned()), *p),
            None if self.fail_closed => (None, self.most_expensive()),
            None => {
                return Priced {
                    model: None,
                    cost: Usd(0),
                    billed_seconds,
                };
            }
        };
        // Micro-dollars per 1M tokens are pico-dollars per token. Saturating: absurd counts
        // or prices cost the most a record can, never wrap around to a small or negative sum.
        let tokens = i128::from(prompt_tokens)
            .saturating_mul(i128::from(p.input_per_mtok_micro))
            .saturating_add(
                i128::from(completion_tokens).saturating_mul(i128::from(p.output_per_mtok_micro)),
            );
        // Per second: micro-dollars per minute × 10⁶ / 60, rounded half up.
        let audio = i128::from(billed_seconds)
            .saturating_mul(i128::from(p.per_audio_minute_micro))
            .saturating_mul(1_000_000)
            .saturating_add(30)
            / 60;
        let total = tokens
            .saturating_add(audio)
            .clamp(0, i128::from(MAX_RECORD.pico())) as i64;
        Priced {
            model,
            cost: Usd(total),
            billed_seconds,
        }
    }
}

/// The most one record can cost: far above any real call (cents), far enough below the
/// largest sum a day's total can hold that absurd records cannot overflow it.
pub const MAX_RECORD: Usd = Usd(10_000 * 1_000_000_000_000);

/// Audio is billed per second, rounded to the nearest second, at least one for any audio.
pub fn billed_seconds(audio_seconds: f64) -> i64 {
    if !(audio_seconds.is_finite() && audio_seconds > 0.0) {
        return 0;
    }
    (audio_seconds.round() as i64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_prices_cost_what_the_table_says() {
        let t = PriceTable::default();
        // gpt-4o: 1M in = $2.50, 1M out = $10.00
        let p = t.price("gpt-4o", "gpt-4o-2024-08-06", 1_000_000, 1_000_000, 0.0);
        assert_eq!(p.model.as_deref(), Some("gpt-4o"));
        assert_eq!(p.cost, Usd::from_dollars(12.50));
        // 1,234 in + 567 out on gpt-4o = 1234*2.5e-6 + 567*1e-5 = 0.003085 + 0.00567
        let p = t.price("gpt-4o", "gpt-4o", 1_234, 567, 0.0);
        assert_eq!(p.cost.to_string(), "$0.008755");
        // gpt-4o-mini: 1 token in = $0.00000015 exactly
        let p = t.price("gpt-4o-mini", "gpt-4o-mini-2024-07-18", 1, 0, 0.0);
        assert_eq!(p.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(p.cost, Usd(150_000));
        let p = t.price("gpt-4o-mini", "", 1_000_000, 1_000_000, 0.0);
        assert_eq!(p.cost, Usd::from_dollars(0.75));
        // whisper-1: $0.006 per minute, per second: 61.4 s -> 61 s = $0.0061
        let p = t.price("whisper-1", "whisper-1", 0, 0, 61.4);
        assert_eq!(p.billed_seconds, 61);
        assert_eq!(p.cost, Usd::from_dollars(0.0061));
        let p = t.price("whisper-1", "", 0, 0, 60.0);
        assert_eq!(p.cost, Usd::from_dollars(0.006));
    }

    #[test]
    fn unknown_models_price_at_zero_and_requested_model_is_the_fallback() {
        let t = PriceTable::default();
        let p = t.price("llama3", "llama3:8b", 100, 100, 0.0);
        assert_eq!((p.model, p.cost), (None, Usd(0)));
        let p = t.price("gpt-4o", "some-proxy-name", 1_000_000, 0, 0.0);
        assert_eq!(p.model.as_deref(), Some("gpt-4o"));
        assert_eq!(p.cost, Usd::from_dollars(2.5));
    }

    #[test]
    fn with_a_budget_unknown_models_cost_the_most_expensive_prices_and_nothing_overflows() {
        let t = PriceTable::default().fail_closed(true);
        // gpt-4o's token prices, whisper-1's audio price.
        let p = t.price("llama3", "llama3:8b", 1_000_000, 1_000_000, 0.0);
        assert_eq!((p.model, p.cost), (None, Usd::from_dollars(12.50)));
        let p = t.price("", "my-whisper", 0, 0, 60.0);
        assert_eq!(p.cost, Usd::from_dollars(0.006));
        // Known models keep their own prices.
        let p = t.price("gpt-4o-mini", "", 1_000_000, 0, 0.0);
        assert_eq!(p.cost, Usd::from_dollars(0.15));
        // The largest counts and durations saturate at the most a record may cost.
        let p = t.price("gpt-4o", "", u64::MAX, u64::MAX, 0.0);
        assert_eq!(p.cost, MAX_RECORD);
        let p = t.price("whisper-1", "", 0, 0, f64::MAX);
        assert_eq!(p.cost, MAX_RECORD);
        let huge = PriceTable::with_file("[models.x]\nper_audio_minute = 1e300").unwrap();
        assert_eq!(huge.price("x", "", 0, 0, 1e300).cost, MAX_RECORD);
        assert_eq!(MAX_RECORD, Usd::from_dollars(10_000.0));
    }

    #[test]
    fn families_strip_only_a_date_suffix() {
        assert_eq!(family("gpt-4o-2024-08-06"), "gpt-4o");
        assert_eq!(family("gpt-4o-mini-2024-07-18"), "gpt-4o-mini");
        assert_eq!(family("gpt-4o"), "gpt-4o");
        assert_eq!(family("model-2024-08-0x"), "model-2024-08-0x");
    }

    #[test]
    fn a_price_file_adds_and_overrides_models() {
        let t = PriceTable::with_file(
            r#"
            [models."gpt-4o"]
            input_per_mtok = 2.0
            [models."llama3"]
            input_per_mtok = 0.05
            output_per_mtok = 0.08
            "#,
        )
        .unwrap();
        assert_eq!(t.get("gpt-4o").unwrap().input_per_mtok_micro, 2_000_000);
        assert_eq!(t.get("gpt-4o").unwrap().output_per_mtok_micro, 10_000_000);
        let p = t.price("llama3", "llama3", 1_000_000, 1_000_000, 0.0);
        assert_eq!(p.cost, Usd::from_dollars(0.13));
        assert!(PriceTable::with_file("[models.x]\nprice = 1").is_err());
        assert!(PriceTable::with_file("[models.x]\ninput_per_mtok = -1").is_err());
    }
}
