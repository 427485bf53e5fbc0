//! Typed configuration from unprefixed environment variables.
//!
//! Every service builds its `Config` with an [`Env`] reader that records every problem it finds
//! (missing, malformed, out of range) instead of stopping at the first, so a bad `.env` is fixed
//! in one go. Secret values never appear in problems or `Debug` output.

mod env;
mod events;
mod redact;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::events::EventsConfig;

pub use env::{ConfigError, Env, Problem};
pub use redact::redact_url_password;

/// Reads `.env` from the working directory when present; real environment variables win over
/// it. A file that does not parse stops startup naming the file and line (it used to be cut
/// off there without a word, dropping every variable after the bad line).
pub fn load_dotenv() -> Result<(), String> {
    load_dotenv_from(std::path::Path::new(".env"))
}

/// [`load_dotenv`] from `path`: every line is checked before anything is set, so a file that
/// does not parse changes nothing and its first bad line is named (`.env line 12: …`), and
/// so does a variable set twice (dotenvy would keep the first, compose the last: which one
/// applies would depend on who reads the file). Variables already in the environment win.
pub fn load_dotenv_from(path: &std::path::Path) -> Result<(), String> {
    let iter = match dotenvy::from_path_iter(path) {
        Ok(iter) => iter,
        Err(e) if e.not_found() => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut seen = std::collections::HashSet::new();
    let mut twice = Vec::new();
    for item in iter {
        let (name, _) = item.map_err(|e| dotenv_problem(path, &e))?;
        if !seen.insert(name.clone()) && !twice.contains(&name) {
            twice.push(name);
        }
    }
    if !twice.is_empty() {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let problems: Vec<String> = twice
            .iter()
            .map(|name| {
                let mut lines = lines_setting(&text, name);
                let last = lines.pop().unwrap_or_default();
                let all = if lines.len() == 1 { "both" } else { "all" };
                format!(
                    "{} lines {} and {last} {all} set {name}: keep one (compose would use the \
                     last, the services the first)",
                    path.display(),
                    lines.join(", "),
                )
            })
            .collect();
        return Err(problems.join("\n"));
    }
    dotenvy::from_path(path).map_err(|e| dotenv_problem(path, &e))
}

/// The numbers of the lines of a `.env` text that set `name` (`NAME=` or `export NAME=`).
fn lines_setting(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_start();
            let l = l.strip_prefix("export ").map_or(l, str::trim_start);
            l.strip_prefix(name)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|(i, _)| (i + 1).to_string())
        .collect()
}

/// `<file> line <n>: <what>` for a parse error (dotenvy names the line's text, not its number),
/// with a hint that fits what is wrong: a line that is no `NAME=value`, a quote never closed,
/// or a value that needs quoting.
fn dotenv_problem(path: &std::path::Path, e: &dotenvy::Error) -> String {
    let dotenvy::Error::LineParse(text, _) = e else {
        return format!("{}: {e}", path.display());
    };
    // dotenvy names the text it could not read (the value, or the line), not where.
    let first = text.lines().next().unwrap_or("").trim();
    let all = std::fs::read_to_string(path).unwrap_or_default();
    let found = all
        .lines()
        .enumerate()
        .find(|(_, l)| !l.trim_start().starts_with('#') && l.contains(first));
    let Some((i, line)) = found else {
        return format!("{}: cannot read it: {e}", path.display());
    };
    let at = format!("{} line {}", path.display(), i + 1);
    let setting = line.trim().trim_start_matches("export ").trim_start();
    let Some((name, value)) = setting.split_once('=') else {
        return format!(
            "{at}: `{}` is not a setting: write NAME=value, or start a note with #",
            line.trim()
        );
    };
    let name = name.trim();
    let value = value.trim_start();
    if let Some(q) = value.chars().next().filter(|c| matches!(c, '"' | '\''))
        && !value[1..].contains(q)
    {
        return format!(
            "{at}: the quote that opens {name}'s value is never closed: end the value with {q} \
             on the same line"
        );
    }
    format!(
        "{at}: cannot read {name}: quote a value with spaces, quotes or # in it, \
         like {name}=\"You're welcome\""
    )
}

/// A connection URL that may carry a password: `Debug`/`Display` show it with the password
/// replaced by `***`.
#[derive(Clone)]
pub struct Dsn(SecretString);

impl Dsn {
    /// A DSN from its URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(SecretString::from(url.into()))
    }

    /// The full URL, for the client that connects with it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL with any password masked.
    pub fn redacted(&self) -> String {
        redact_url_password(self.expose())
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// For people at a terminal.
    Pretty,
}

/// Which service a process is; fixes its listener variable and default port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceName {
    /// WhatsApp sessions and the web chat.
    Gateway,
    /// Answers.
    Brain,
    /// Voice notes to text.
    Transcriber,
    /// Usage, cost, alerts, the budget.
    Ledger,
}

impl ServiceName {
    /// The service's name in logs, metrics and consumer names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Brain => "brain",
            Self::Transcriber => "transcriber",
            Self::Ledger => "ledger",
        }
    }

    /// The variable naming the internal listener (`GATEWAY_HTTP_ADDR`, …).
    pub fn http_addr_var(self) -> &'static str {
        match self {
            Self::Gateway => "GATEWAY_HTTP_ADDR",
            Self::Brain => "BRAIN_HTTP_ADDR",
            Self::Transcriber => "TRANSCRIBER_HTTP_ADDR",
            Self::Ledger => "LEDGER_HTTP_ADDR",
        }
    }

    /// The default internal listener.
    pub fn default_http_addr(self) -> &'static str {
        match self {
            Self::Gateway => "127.0.0.1:9181",
            Self::Brain => "127.0.0.1:9182",
            Self::Transcriber => "127.0.0.1:9183",
            Self::Ledger => "127.0.0.1:9184",
        }
    }
}

/// Settings of the Redis Streams bus (shared by every service).
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// `RECLAIM_IDLE_SECS`: an entry idle this long is taken over from its consumer.
    pub reclaim_idle: Duration,
    /// `MAX_DELIVERIES`: deliveries before an entry is dead-lettered.
    pub max_deliveries: u32,
    /// `BUS_BLOCK_MS`: how long one blocking read waits for new entries.
    pub block: Duration,
    /// `BUS_BATCH`: entries read per call at most.
    pub batch: usize,
    /// `BUS_CONCURRENCY`: entries read and held at once per consumer (in progress or waiting
    /// for their turn behind the same contact); bounds read-ahead and so memory. Handlers
    /// mostly wait on I/O (the model, the database), so the default is high: 1,024 (the
    /// transcriber, a pool whose replicas should share the work: 8).
    pub concurrency: usize,
    /// `BUS_RETRY_BASE_MS`: first wait before a failed entry is tried again (doubles each time).
    pub retry_base: Duration,
    /// `BUS_RETRY_MAX_MS`: cap of that wait.
    pub retry_max: Duration,
    /// `BUS_TRIM_INTERVAL_SECS`: how often acknowledged entries are trimmed.
    pub trim_interval: Duration,
    /// `SHUTDOWN_GRACE_SECS`: how long in-flight work may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// `DLQ_RETENTION_DAYS`: dead letters (they hold customers' messages) older than this are
    /// trimmed.
    pub dlq_retention: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            reclaim_idle: Duration::from_secs(15),
            max_deliveries: 5,
            block: Duration::from_millis(1000),
            batch: 64,
            concurrency: 1024,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            trim_interval: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            dlq_retention: Duration::from_secs(14 * 86_400),
        }
    }
}

impl BusConfig {
    /// Reads the common variables; problems are recorded in `env`.
    pub fn from_env(env: &mut Env, service: ServiceName) -> Self {
        let d = Self::default();
        let concurrency = match service {
            ServiceName::Transcriber => 8,
            _ => d.concurrency,
        };
        Self {
            reclaim_idle: env.secs("RECLAIM_IDLE_SECS", d.reclaim_idle.as_secs(), 1, 3600),
            max_deliveries: env.int_in("MAX_DELIVERIES", d.max_deliveries, 1, 100),
            block: env.millis("BUS_BLOCK_MS", 1000, 10, 60_000),
            batch: env.int_in("BUS_BATCH", d.batch, 1, 1000),
            concurrency: env.int_in("BUS_CONCURRENCY", concurrency, 1, 10_000),
            retry_base: env.millis("BUS_RETRY_BASE_MS", 500, 1, 600_000),
            retry_max: env.millis("BUS_RETRY_MAX_MS", 30_000, 1, 3_600_000),
            trim_interval: env.secs("BUS_TRIM_INTERVAL_SECS", 30, 1, 86_400),
            shutdown_grace: env.secs("SHUTDOWN_GRACE_SECS", 10, 0, 600),
            dlq_retention: Duration::from_secs(
                86_400 * env.int_in("DLQ_RETENTION_DAYS", 14u64, 1, 3650),
            ),
        }
    }
}

/// Variables every service reads.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// Which service this is.
    pub service: ServiceName,
    /// `REDIS_URL`.
    pub redis_url: Dsn,
    /// `DATABASE_URL` (`sqlite://…` or `postgres://…`).
    pub database_url: Dsn,
    /// `DATA_DIR`: where local state lives (the log hash key; the SQLite file by default).
    pub data_dir: PathBuf,
    /// `STREAM_PREFIX`: the hash tag every key of this deployment is under.
    pub stream_prefix: String,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `LOG_HASH_KEY`: key for hashing ids in logs.
    pub log_hash_key: Option<SecretString>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: OTLP/HTTP base URL; traces exported only when set.
    pub otlp_endpoint: Option<String>,
    /// `<SERVICE>_HTTP_ADDR`: the internal listener (health, readiness, metrics).
    pub http_addr: SocketAddr,
    /// `STARTUP_TIMEOUT_SECS`: how long to wait for the database at startup.
    pub startup_timeout: Duration,
    /// The bus's settings.
    pub bus: BusConfig,
    /// `EVENTS_WEBHOOK_URL` and the rest: events out to the owner's tools.
    pub events: EventsConfig,
}

impl CommonConfig {
    /// Reads the common variables; problems are recorded in `env`.
    pub fn from_env(env: &mut Env, service: ServiceName) -> Self {
        let redis_url = env.string("REDIS_URL", "redis://127.0.0.1:6379");
        if !(redis_url.starts_with("redis://")
            || redis_url.starts_with("rediss://")
            || redis_url.starts_with("redis+unix://")
            || redis_url.starts_with("unix://"))
        {
            env.problem("REDIS_URL", "expected a redis:// or rediss:// URL");
        }
        let database_url = env.string("DATABASE_URL", "sqlite://data/switchboard.db");
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            env.problem("DATABASE_URL", "expected a sqlite:// or postgres:// URL");
        }
        let stream_prefix = env.string("STREAM_PREFIX", "sb");
        if stream_prefix.is_empty()
            || stream_prefix.len() > 64
            || !stream_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        {
            env.problem(
                "STREAM_PREFIX",
                format!(
                    "expected 1-64 characters of letters, digits, '-', '_', '.', ':', got {stream_prefix:?}"
                ),
            );
        }
        let log_format = match env
            .choice("LOG_FORMAT", "json", &["json", "pretty"])
            .as_str()
        {
            "pretty" => LogFormat::Pretty,
            _ => LogFormat::Json,
        };
        let otlp_endpoint = env.http_url("OTEL_EXPORTER_OTLP_ENDPOINT");
        let http_addr = env.addr(service.http_addr_var(), service.default_http_addr());
        Self {
            service,
            redis_url: Dsn::new(redis_url),
            database_url: Dsn::new(database_url),
            data_dir: PathBuf::from(env.string("DATA_DIR", "data")),
            stream_prefix,
            log_format,
            log_hash_key: env.secret("LOG_HASH_KEY"),
            otlp_endpoint,
            http_addr,
            startup_timeout: env.secs("STARTUP_TIMEOUT_SECS", 60, 0, 3600),
            bus: BusConfig::from_env(env, service),
            events: events::events_from_env(env),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dotenv_that_does_not_parse_is_named_with_its_line_and_sets_nothing() {
        let dir = std::env::temp_dir().join(format!("sb-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(".env");
        std::fs::write(
            &file,
            "# comment\nSB_DOTENV_TEST_A=1\n\nSB_DOTENV_TEST_B=You're here\nSB_DOTENV_TEST_C=3\n",
        )
        .unwrap();
        let e = load_dotenv_from(&file).unwrap_err();
        assert!(
            e.contains(".env line 4: cannot read SB_DOTENV_TEST_B"),
            "{e}"
        );
        assert!(
            std::env::var("SB_DOTENV_TEST_A").is_err(),
            "nothing set from a bad file"
        );
        std::fs::write(&file, "SB_DOTENV_TEST_D=\"You're here\" # fine\n").unwrap();
        load_dotenv_from(&file).unwrap();
        assert_eq!(std::env::var("SB_DOTENV_TEST_D").unwrap(), "You're here");
        assert!(load_dotenv_from(&dir.join("absent")).is_ok());
        // An unclosed quote, and a line that is no setting: each hint says what is wrong.
        std::fs::write(
            &file,
            "SB_DOTENV_TEST_E=1\nSB_DOTENV_TEST_F=\"open\nSB_DOTENV_TEST_G=2\n",
        )
        .unwrap();
        let e = load_dotenv_from(&file).unwrap_err();
        assert!(
            e.contains(
                ".env line 2: the quote that opens SB_DOTENV_TEST_F's value is never closed"
            ),
            "{e}"
        );
        std::fs::write(&file, "SB_DOTENV_TEST_H=1\nremember to set the key\n").unwrap();
        let e = load_dotenv_from(&file).unwrap_err();
        assert!(
            e.contains(".env line 2: `remember to set the key` is not a setting"),
            "{e}"
        );
        assert!(!e.contains("quote a value"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_variable_set_twice_in_dotenv_is_refused_naming_both_lines() {
        let dir = std::env::temp_dir().join(format!("sb-dotenv-twice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(".env");
        std::fs::write(
            &file,
            "# SB_TWICE_A=commented out\nSB_TWICE_A=first\nSB_TWICE_B=1\n\nexport SB_TWICE_A=last\n\
             SB_TWICE_AB=other\nSB_TWICE_C=1\nSB_TWICE_C=2\nSB_TWICE_C=3\n",
        )
        .unwrap();
        let e = load_dotenv_from(&file).unwrap_err();
        assert!(
            e.contains(".env lines 2 and 5 both set SB_TWICE_A: keep one"),
            "{e}"
        );
        assert!(
            e.contains(".env lines 7, 8 and 9 all set SB_TWICE_C"),
            "{e}"
        );
        assert!(
            !e.contains("SB_TWICE_B") && !e.contains("SB_TWICE_AB"),
            "{e}"
        );
        assert!(
            std::env::var("SB_TWICE_B").is_err(),
            "nothing set from a refused file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut env = Env::from_pairs([
            ("REDIS_URL", "http://nope"),
            ("RECLAIM_IDLE_SECS", "soon"),
            ("MAX_DELIVERIES", "0"),
            ("LOG_FORMAT", "xml"),
            ("BRAIN_HTTP_ADDR", "localhost"),
        ]);
        let _ = CommonConfig::from_env(&mut env, ServiceName::Brain);
        let err = env.finish().unwrap_err();
        let vars: Vec<_> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            vars,
            [
                "REDIS_URL",
                "LOG_FORMAT",
                "BRAIN_HTTP_ADDR",
                "RECLAIM_IDLE_SECS",
                "MAX_DELIVERIES"
            ]
        );
        let text = err.to_string();
        assert!(text.contains("5 problems"), "{text}");
        assert!(text.contains("MAX_DELIVERIES: expected an integer from 1 to 100, got 0"));
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let mut env = Env::from_pairs(Vec::<(String, String)>::new());
        let cfg = CommonConfig::from_env(&mut env, ServiceName::Ledger);
        env.finish().unwrap();
        assert_eq!(cfg.redis_url.expose(), "redis://127.0.0.1:6379");
        assert_eq!(cfg.database_url.expose(), "sqlite://data/switchboard.db");
        assert_eq!(cfg.stream_prefix, "sb");
        assert_eq!(cfg.http_addr.to_string(), "127.0.0.1:9184");
        assert_eq!(cfg.bus.reclaim_idle, Duration::from_secs(15));
        assert_eq!(cfg.bus.max_deliveries, 5);
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert!(cfg.otlp_endpoint.is_none());
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let mut env = Env::from_pairs([
            ("REDIS_URL", "redis://:hunter2@redis:6379/0"),
            ("DATABASE_URL", "postgres://sb:pg-s3cret@db/sb"),
            ("LOG_HASH_KEY", "k3y-material"),
        ]);
        let cfg = CommonConfig::from_env(&mut env, ServiceName::Gateway);
        env.finish().unwrap();
        let dbg = format!("{cfg:?}");
        for secret in ["hunter2", "pg-s3cret", "k3y-material"] {
            assert!(!dbg.contains(secret), "{secret} leaked: {dbg}");
        }
        assert!(dbg.contains("postgres://sb:***@db/sb"), "{dbg}");
        assert!(dbg.contains("redis://:***@redis:6379/0"), "{dbg}");
    }

    #[test]
    fn empty_values_can_be_deliberate() {
        let env = Env::from_pairs([("AI_DISCLOSURE", "")]);
        assert_eq!(env.string_allow_empty("AI_DISCLOSURE", "hi"), "");
        assert_eq!(env.string_allow_empty("OTHER", "hi"), "hi");
    }
}
