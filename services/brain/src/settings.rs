//! Settings an admin can change from WhatsApp (`!config set <key> <value>`); a value set there
//! wins over the environment until `!config unset <key>`.

use std::sync::Arc;

use shared::bus::HandleError;

use crate::config::Config;
use crate::store::OrRetry;

/// The keys, with what they mean.
pub const KEYS: &[(&str, &str)] = &[
    ("model", "the chat model (CHAT_MODEL)"),
    ("pre-prompt", "the system prompt (PRE_PROMPT)"),
    ("temperature", "0 to 2 (TEMPERATURE)"),
    ("echo-transcript", "on or off (ECHO_TRANSCRIPT)"),
];

/// Checks and normalises a value; the error is said to the admin.
pub fn validate(key: &str, value: &str) -> Result<String, String> {
    let value = value.trim();
    match key {
        "model" => {
            let ok = !value.is_empty()
                && value.len() <= 100
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/'));
            if ok {
                Ok(value.to_owned())
            } else {
                Err("a model name is letters, digits and . - _ : / (like gpt-4o-mini)".into())
            }
        }
        "pre-prompt" => {
            let n = value.chars().count();
            if (1..=8000).contains(&n) {
                Ok(value.to_owned())
            } else {
                Err("the prompt must be 1 to 8000 characters".into())
            }
        }
        "temperature" => match value.parse::<f32>() {
            Ok(t) if (0.0..=2.0).contains(&t) => Ok(t.to_string()),
            _ => Err("the temperature is a number from 0 to 2".into()),
        },
        "echo-transcript" => match value.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Ok("on".into()),
            "off" | "false" | "no" | "0" => Ok("off".into()),
            _ => Err("echo-transcript is on or off".into()),
        },
        _ => Err(format!(
            "unknown key; one of: {}",
            KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The configuration with the stored settings applied (invalid stored values are ignored).
pub fn apply(cfg: &Config, settings: &[(String, String)]) -> Config {
    let mut eff = cfg.clone();
    for (key, value) in settings {
        let Ok(v) = validate(key, value) else {
            tracing::warn!(key, "ignoring an invalid stored setting");
            continue;
        };
        match key.as_str() {
            "model" => eff.chat_model = v,
            "pre-prompt" => eff.pre_prompt = v,
            "temperature" => eff.temperature = v.parse().ok(),
            "echo-transcript" => eff.echo_transcript = v == "on",
            _ => {}
        }
    }
    eff
}

/// The current value of a key in `cfg`, for `!config`.
pub fn current(cfg: &Config, key: &str) -> String {
    match key {
        "model" => cfg.chat_model.clone(),
        "pre-prompt" => {
            let p: String = cfg.pre_prompt.chars().take(80).collect();
            if cfg.pre_prompt.chars().count() > 80 {
                format!("{p}…")
            } else {
                p
            }
        }
        "temperature" => cfg
            .temperature
            .map_or_else(|| "(the API's default)".to_owned(), |t| t.to_string()),
        "echo-transcript" => if cfg.echo_transcript { "on" } else { "off" }.to_owned(),
        _ => String::new(),
    }
}

/// How long answers reuse the admins' settings before reading them again.
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The owner of the configuration in effect: the environment's, with the admins' `!config set`
/// values applied. Answers read it at most once a second ([`Settings::current`]); a change made
/// here clears this process's copy at once ([`Settings::changed`]), other replicas see it
/// within a second.
pub struct Settings {
    base: Arc<Config>,
    db: shared::db::Db,
    cache: std::sync::Mutex<Option<(std::time::Instant, Arc<Config>)>>,
}

impl Settings {
    /// The settings over the environment's `base`, stored in `db`.
    pub fn new(base: Config, db: shared::db::Db) -> Arc<Self> {
        Arc::new(Self {
            base: Arc::new(base),
            db,
            cache: std::sync::Mutex::new(None),
        })
    }

    /// The configuration from the environment.
    pub fn base(&self) -> &Config {
        &self.base
    }

    /// The configuration from the environment, shared.
    pub fn base_shared(&self) -> Arc<Config> {
        self.base.clone()
    }

    /// The configuration in effect, read now.
    pub async fn effective(&self) -> Result<Config, HandleError> {
        let stored = crate::store::settings(&self.db).await.or_retry()?;
        Ok(apply(&self.base, &stored))
    }

    /// The configuration in effect, read at most once a second.
    pub async fn current(&self) -> Result<Arc<Config>, HandleError> {
        {
            let cached = self.cache.lock().expect("settings cache");
            if let Some((at, cfg)) = &*cached
                && at.elapsed() < CACHE_TTL
            {
                return Ok(cfg.clone());
            }
        }
        let cfg = Arc::new(self.effective().await?);
        *self.cache.lock().expect("settings cache") =
            Some((std::time::Instant::now(), cfg.clone()));
        Ok(cfg)
    }

    /// Admins changed a setting: the next answer reads the settings again.
    pub fn changed(&self) {
        *self.cache.lock().expect("settings cache") = None;
    }
}
