//! The brain's own configuration.

use std::time::Duration;

use shared::config::{CommonConfig, Env};
use shared::llm::{Endpoint, Policy};
use shared::phone::{self, Phone};
use shared::usage::Days;

use crate::messages::Localized;
use shared::lang::Text;

/// Who is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMode {
    /// Only listed numbers (and admins); others get one polite refusal per day.
    Whitelist,
    /// Everyone (a shop's real customers).
    Open,
}

/// Brain settings (beyond the common variables).
#[derive(Debug, Clone)]
pub struct Config {
    /// `PRE_PROMPT`: the system prompt.
    pub pre_prompt: String,
    /// `MEMORY_TTL_DAYS` (default 7).
    pub memory_ttl: Duration,
    /// `KNOWLEDGE_DIR` (default `knowledge`): the business's Markdown files (absent is fine).
    pub knowledge_dir: std::path::PathBuf,
    /// `KNOWLEDGE_IMPORT_ALLOW` (default none): `host:port` pairs the console's URL import may
    /// fetch although they are private addresses (an intranet site).
    pub knowledge_import_allow: Vec<String>,
    /// `KNOWLEDGE_CONTEXT_TOKENS` (default 4000): the knowledge base's sections put into the
    /// model's context for a question, in estimated tokens (0: none).
    pub knowledge_context_tokens: usize,
    /// `EMBEDDINGS_MODEL_DIR` or `EMBEDDINGS_MODEL`: where the knowledge base's vectors come
    /// from (none: matching by words only).
    pub embeddings: Option<Embeddings>,
    /// `PUBLIC_URL` (default `http://<PUBLIC_ADDR>`): where `!console` sign-in links point.
    pub public_url: String,
    /// Turns of memory sent with each request.
    pub memory_turns: usize,
    /// `AI_DISCLOSURE`: first line of the first reply to a new contact (empty: off).
    pub ai_disclosure: Text,
    /// `AUTOMATED_DISCLOSURE`: the same without a model (FAQ answers and small talk; empty:
    /// none).
    pub automated_disclosure: Text,
    /// `OPENAI_BASE_URL` / `OPENAI_API_KEY`.
    pub endpoint: Endpoint,
    /// `CHAT_MODEL` (default `gpt-4o`).
    pub chat_model: String,
    /// `VISION_MODEL` (default `CHAT_MODEL`).
    pub vision_model: String,
    /// `MAX_TOKENS` (default 2000).
    pub max_tokens: u32,
    /// `TEMPERATURE` (default: the API's).
    pub temperature: Option<f32>,
    /// `MAX_IMAGE_MB` (default 5).
    pub max_image_bytes: u64,
    /// `ECHO_TRANSCRIPT` (default false): prefix voice answers with what was understood.
    pub echo_transcript: bool,
    /// Timeouts, retries, breaker.
    pub policy: Policy,
    /// `TEXT_DEADLINE_SECS` (20): the whole answer to a text.
    pub text_deadline: Duration,
    /// `IMAGE_DEADLINE_SECS` (30): the whole answer to a photo.
    pub image_deadline: Duration,
    /// `VOICE_DEADLINE_SECS` (45): the whole answer to a voice note, transcription included.
    pub voice_deadline: Duration,
    /// `ACCESS_MODE` (default whitelist).
    pub access: AccessMode,
    /// `ADMIN_NUMBERS`: bootstrapped admins, always allowed.
    pub admins: Vec<Phone>,
    /// `MAX_INPUT_CHARS` (default 4096).
    pub max_input_chars: usize,
    /// `CONTACT_DAILY_TOKENS` (default 50000; 0 = no limit).
    pub contact_daily_tokens: u64,
    /// `WEBCHAT_VISITORS` (default `open`): web chat visitors are served (`off`: refused like
    /// a contact off the whitelist, once a day; the gateway creates no new ones).
    pub visitors_open: bool,
    /// `VISITOR_DAILY_TOKENS`, `VISITOR_DAILY_AUDIO_SECONDS`: what all visitors share a day.
    pub visitors: shared::usage::VisitorAllowance,
    /// `LEDGER_TIMEZONE`: what "today" means.
    pub days: Days,
    /// `BRAIN_CONCURRENCY` (default 512): model calls in flight (each mostly waits on the network).
    pub concurrency: usize,
    /// Customer-facing texts.
    pub messages: Localized,
    /// `HANDOFF_PHRASES`: what a customer writes to ask for a person (`|`-separated, any
    /// language; default English and Spanish).
    pub handoff_phrases: Vec<String>,
    /// `HANDOFF_TIMEOUT_MIN` (default 60): back to the bot when no person replied by then.
    pub handoff_timeout: Duration,
    /// `BURST_WINDOW_MS` (default 0, off): wait this long after a contact's text for more and
    /// answer the burst once.
    pub burst_window: Duration,
    /// `CONVERSATION_IDLE_MIN` (default 1440, a day): the silence that ends a conversation.
    pub conversation_idle: Duration,
    /// `OWNER_PAUSE_MIN` (default 30): the bot is quiet this long for a customer the owner
    /// answered from the business's phone.
    pub owner_pause: Duration,
    /// `BUSINESS_HOURS` in `BUSINESS_TIMEZONE`: when a person can answer (unset: always).
    pub hours: crate::hours::Hours,
    /// `ALERT_WEBHOOK_URL`: handoffs are POSTed here too (the reason and a reference only).
    pub alert_webhook: Option<secrecy::SecretString>,
    /// `ALERT_DIGEST_AFTER` (default 5; 0 = off): handoff alerts sent one by one within a
    /// window; past it they are held for one digest.
    pub alert_digest_after: u32,
    /// `ALERT_DIGEST_MINUTES` (default 10): that window.
    pub alert_digest_window: Duration,
}

/// Minutes (fractions allowed) from 0.01 to a week.
fn minutes(env: &mut Env, name: &str, default: f64) -> Duration {
    let raw = env.string(name, &default.to_string());
    match raw.trim().parse::<f64>() {
        Ok(m) if (0.01..=7.0 * 24.0 * 60.0).contains(&m) => Duration::from_secs_f64(m * 60.0),
        _ => {
            env.problem(
                name,
                format!("expected minutes from 0.01 to 10080 (a week), like {default}"),
            );
            Duration::from_secs_f64(default * 60.0)
        }
    }
}

/// What customers write to ask for a person, by default.
pub const HANDOFF_PHRASES: &str = "human|a person|real person|someone real|talk to someone|speak to someone|\
     agent|representative|operator|customer service|humano|una persona|persona real|hablar con alguien|\
     agente|representante|operador|atención al cliente";

/// The phrases of a `|`-separated list (as `HANDOFF_PHRASES` gives them), lowercase; `off`
/// (or `none`) is no phrases at all: only the model's marks, the budget and a missing model
/// hand off.
pub fn phrases(list: &str) -> Vec<String> {
    if matches!(list.trim().to_lowercase().as_str(), "off" | "none") {
        return Vec::new();
    }
    list.split('|')
        .map(|p| p.trim().to_lowercase())
        .filter(|p| !p.is_empty())
        .collect()
}

const DEFAULT_PROMPT: &str = "You are the customer-service assistant of a small business, \
answering its customers on WhatsApp. Be polite, warm and concise: a few short sentences, no \
long lists unless asked. Stay on the business's topics (its products, services, orders, opening \
hours, delivery and policies); politely decline anything else. Always answer in the language \
the customer writes in. If you do not know something about the business, say so and offer to \
pass the question to a person; never invent prices, stock or policies.";

impl Config {
    /// Reads the brain's variables; problems are recorded in `env`.
    pub fn load(env: &mut Env, _common: &CommonConfig) -> Self {
        let endpoint = Endpoint::from_env(env, "OPENAI_");
        let chat_model = env.string("CHAT_MODEL", "gpt-4o");
        let vision_model = env.string("VISION_MODEL", &chat_model);
        let temperature: Option<f32> = env.opt("TEMPERATURE", "a number from 0 to 2");
        if temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            env.problem("TEMPERATURE", "expected a number from 0 to 2");
        }
        let access = match env
            .choice("ACCESS_MODE", "whitelist", &["whitelist", "open"])
            .as_str()
        {
            "open" => AccessMode::Open,
            _ => AccessMode::Whitelist,
        };
        let (admins, bad) = phone::parse_list(&env.string("ADMIN_NUMBERS", ""));
        if !bad.is_empty() {
            env.problem(
                "ADMIN_NUMBERS",
                format!(
                    "expected comma-separated phone numbers with country code; {} entr{} are not",
                    bad.len(),
                    if bad.len() == 1 { "y" } else { "ies" }
                ),
            );
        }
        let (ai_disclosure, automated_disclosure) = disclosures(env);
        Self {
            pre_prompt: env.string("PRE_PROMPT", DEFAULT_PROMPT),
            memory_ttl: Duration::from_secs(86_400 * env.int_in("MEMORY_TTL_DAYS", 7u64, 1, 3650)),
            knowledge_dir: env.string("KNOWLEDGE_DIR", "knowledge").into(),
            knowledge_import_allow: import_allow(env),
            knowledge_context_tokens: env.int_in(
                "KNOWLEDGE_CONTEXT_TOKENS",
                crate::knowledge::CONTEXT_TOKENS,
                0,
                1_000_000,
            ),
            embeddings: embeddings(env),
            public_url: shared::console::public_url(env),
            memory_turns: 10,
            ai_disclosure,
            automated_disclosure,
            endpoint,
            chat_model,
            vision_model,
            max_tokens: env.int_in("MAX_TOKENS", 2000u32, 1, 128_000),
            temperature,
            max_image_bytes: 1024 * 1024 * env.int_in("MAX_IMAGE_MB", 5u64, 1, 100),
            echo_transcript: env.flag("ECHO_TRANSCRIPT", false),
            policy: Policy::from_env(env),
            text_deadline: env.secs("TEXT_DEADLINE_SECS", 20, 1, 600),
            image_deadline: env.secs("IMAGE_DEADLINE_SECS", 30, 1, 600),
            voice_deadline: env.secs("VOICE_DEADLINE_SECS", 45, 5, 600),
            access,
            admins,
            max_input_chars: shared::proto::max_input_chars(env),
            contact_daily_tokens: env.int_in("CONTACT_DAILY_TOKENS", 50_000u64, 0, u64::MAX / 2),
            visitors_open: shared::usage::visitors_open(env),
            visitors: shared::usage::VisitorAllowance::from_env(env),
            days: Days::from_env(env),
            concurrency: env.int_in("BRAIN_CONCURRENCY", 512usize, 1, 10_000),
            messages: Localized::from_env(env),
            handoff_phrases: phrases(&env.string("HANDOFF_PHRASES", HANDOFF_PHRASES)),
            handoff_timeout: minutes(env, "HANDOFF_TIMEOUT_MIN", 60.0),
            conversation_idle: minutes(env, "CONVERSATION_IDLE_MIN", 1440.0),
            burst_window: env.millis("BURST_WINDOW_MS", 0, 0, 60_000),
            hours: crate::hours::Hours::from_env(env),
            owner_pause: Duration::from_secs(
                60 * env.int_in("OWNER_PAUSE_MIN", 30u64, 1, 7 * 24 * 60),
            ),
            alert_webhook: env.secret_http_url("ALERT_WEBHOOK_URL"),
            alert_digest_after: env.int_in("ALERT_DIGEST_AFTER", 5u32, 0, 100_000),
            alert_digest_window: minutes(env, "ALERT_DIGEST_MINUTES", 10.0),
        }
    }
}

/// `KNOWLEDGE_IMPORT_ALLOW`: comma-separated `host:port` pairs, lower-cased.
fn import_allow(env: &mut Env) -> Vec<String> {
    let raw = env.string("KNOWLEDGE_IMPORT_ALLOW", "");
    let pairs: Vec<String> = raw
        .split(',')
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .collect();
    let bad = pairs.iter().filter(|p| {
        p.rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    });
    if bad.count() > 0 {
        env.problem(
            "KNOWLEDGE_IMPORT_ALLOW",
            "expected comma-separated host:port pairs, e.g. wiki.internal:443",
        );
    }
    pairs
}

/// Where the knowledge base's vectors come from.
#[derive(Debug, Clone)]
pub enum Embeddings {
    /// `EMBEDDINGS_MODEL_DIR`: a sentence-transformers folder, run in-process.
    Local(std::path::PathBuf),
    /// `EMBEDDINGS_MODEL` at `EMBEDDINGS_BASE_URL` (else `OPENAI_BASE_URL`) with
    /// `EMBEDDINGS_API_KEY` (else `OPENAI_API_KEY`).
    Provider {
        /// The provider.
        endpoint: Endpoint,
        /// Its model (e.g. `text-embedding-3-small`).
        model: String,
    },
}

/// `EMBEDDINGS_MODEL_DIR` / `EMBEDDINGS_MODEL` (at most one; a folder must hold a model).
fn embeddings(env: &mut Env) -> Option<Embeddings> {
    let dir = env.opt_string("EMBEDDINGS_MODEL_DIR");
    let model = env.opt_string("EMBEDDINGS_MODEL");
    let endpoint = Endpoint::from_env(env, "EMBEDDINGS_");
    match (dir, model) {
        (Some(_), Some(_)) => {
            env.problem(
                "EMBEDDINGS_MODEL_DIR",
                "set either EMBEDDINGS_MODEL_DIR (a local model) or EMBEDDINGS_MODEL (a provider's), not both",
            );
            None
        }
        (Some(dir), None) => {
            let dir = std::path::PathBuf::from(dir);
            let missing: Vec<&str> = crate::knowledge::embed::MODEL_FILES
                .into_iter()
                .filter(|f| !dir.join(f).is_file())
                .collect();
            if !missing.is_empty() {
                env.problem(
                    "EMBEDDINGS_MODEL_DIR",
                    format!(
                        "expected a sentence-transformers folder; {} has no {}",
                        dir.display(),
                        missing.join(", ")
                    ),
                );
            }
            Some(Embeddings::Local(dir))
        }
        (None, Some(model)) => {
            if !endpoint.configured {
                env.problem(
                    "EMBEDDINGS_MODEL",
                    "needs a provider: EMBEDDINGS_BASE_URL or EMBEDDINGS_API_KEY (or OPENAI_BASE_URL / OPENAI_API_KEY)",
                );
            }
            Some(Embeddings::Provider { endpoint, model })
        }
        (None, None) => None,
    }
}

/// `AI_DISCLOSURE` and `AUTOMATED_DISCLOSURE`, in every language.
fn disclosures(env: &Env) -> (Text, Text) {
    (
        Text::from_env_allow_empty(
            env,
            "AI_DISCLOSURE",
            [
                "You're chatting with an AI assistant.",
                "Estás hablando con un asistente de IA.",
                "Você está conversando com um assistente de IA.",
            ],
        ),
        Text::from_env_allow_empty(
            env,
            "AUTOMATED_DISCLOSURE",
            [
                "You're chatting with an automated assistant.",
                "Estás hablando con un asistente automático.",
                "Você está conversando com um assistente automático.",
            ],
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoff_phrases_split_fold_and_turn_off() {
        assert_eq!(phrases(" Human | A Person ||"), ["human", "a person"]);
        assert!(phrases("off").is_empty() && phrases("NONE").is_empty());
        assert_eq!(phrases("offer").len(), 1);
    }

    #[test]
    fn embeddings_come_from_one_source_that_is_there() {
        let problems = |pairs: &[(&str, &str)]| {
            let mut env = Env::from_pairs(pairs.iter().copied());
            let e = embeddings(&mut env);
            let p: Vec<String> = env
                .problems()
                .iter()
                .map(|p| format!("{}: {}", p.variable, p.message))
                .collect();
            (e, p)
        };
        let (e, p) = problems(&[]);
        assert!(e.is_none() && p.is_empty(), "off by default");
        let (_, p) = problems(&[("EMBEDDINGS_MODEL", "text-embedding-3-small")]);
        assert!(p.len() == 1 && p[0].contains("needs a provider"), "{p:?}");
        let (e, p) = problems(&[
            ("EMBEDDINGS_MODEL", "text-embedding-3-small"),
            ("OPENAI_API_KEY", "sk-x"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        assert!(
            matches!(e, Some(Embeddings::Provider { endpoint, .. }) if endpoint.base_url == shared::llm::OPENAI_BASE_URL)
        );
        let (_, p) = problems(&[
            ("EMBEDDINGS_MODEL", "m"),
            ("EMBEDDINGS_MODEL_DIR", "/models/x"),
            ("OPENAI_API_KEY", "sk-x"),
        ]);
        assert!(p.len() == 1 && p[0].contains("not both"), "{p:?}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let (_, p) = problems(&[("EMBEDDINGS_MODEL_DIR", dir.path().to_str().unwrap())]);
        assert!(
            p.len() == 1 && p[0].contains("model.safetensors, tokenizer.json, modules.json"),
            "every missing file named: {p:?}"
        );
    }

    #[test]
    fn env_example_shows_the_handoff_phrases_the_code_uses() {
        let example = include_str!("../../../.env.example");
        let line = example
            .lines()
            .find_map(|l| l.strip_prefix("# HANDOFF_PHRASES="))
            .expect(".env.example shows HANDOFF_PHRASES");
        assert_eq!(
            phrases(line.trim_matches('"')),
            phrases(HANDOFF_PHRASES),
            ".env.example's default differs from the code's"
        );
    }
}
