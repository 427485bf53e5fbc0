//! The reader every configuration is built with: typed getters that record every problem
//! (missing, malformed, out of range) instead of stopping at the first.

use super::*;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The environment variable.
    pub variable: String,
    /// What was expected (and what was found, for non-secret values).
    pub message: String,
}

/// Every problem found while loading a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Every problem found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "invalid configuration: {n} problem{}",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  - {}: {}", p.variable, p.message)?;
        }
        Ok(())
    }
}

/// Reads variables from a snapshot of the environment and collects problems.
pub struct Env {
    vars: HashMap<String, String>,
    problems: Vec<Problem>,
    /// Every variable name asked for (the `vars` subcommand lists them).
    asked: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

impl Env {
    /// Snapshot of the process environment (after `.env` was loaded by [`load_dotenv`]).
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars())
    }

    /// Build from explicit pairs (tests use this instead of mutating the process environment).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            problems: Vec::new(),
            asked: std::cell::RefCell::default(),
        }
    }

    /// Every variable name read so far, sorted.
    pub fn asked(&self) -> Vec<String> {
        self.asked.borrow().iter().cloned().collect()
    }

    fn ask(&self, name: &str) {
        self.asked.borrow_mut().insert(name.to_owned());
    }

    /// The raw value, `None` when unset or blank.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.ask(name);
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The value of `{name}_{suffix}` (a per-language variant such as `MSG_HANDOFF_ES`), `None`
    /// when unset or blank. Only `name` is listed among the variables asked for: the variants
    /// are documented with it.
    pub fn variant(&self, name: &str, suffix: &str) -> Option<String> {
        self.ask(name);
        self.vars
            .get(&format!("{name}_{suffix}"))
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// Records a problem (for cross-field checks).
    pub fn problem(&mut self, variable: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            variable: variable.to_owned(),
            message: message.into(),
        });
    }

    /// A string with a default.
    pub fn string(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or(default).to_owned()
    }

    /// An optional string (unset or blank is `None`).
    pub fn opt_string(&self, name: &str) -> Option<String> {
        self.raw(name).map(str::to_owned)
    }

    /// A string that may be set to empty on purpose (e.g. to turn a message off): unset gives
    /// the default, set-but-empty gives `""`.
    pub fn string_allow_empty(&self, name: &str, default: &str) -> String {
        self.ask(name);
        match self.vars.get(name) {
            Some(v) => v.trim().to_owned(),
            None => default.to_owned(),
        }
    }

    /// An optional secret; never echoed in problems.
    pub fn secret(&self, name: &str) -> Option<SecretString> {
        self.raw(name).map(|v| SecretString::from(v.to_owned()))
    }

    /// A required value.
    pub fn required<T>(&mut self, name: &str, expected: &str) -> Option<T>
    where
        T: FromStr,
    {
        match self.raw(name) {
            None => {
                self.problem(name, format!("is required: expected {expected}"));
                None
            }
            Some(_) => self.opt(name, expected),
        }
    }

    /// An optional parsed value.
    pub fn opt<T>(&mut self, name: &str, expected: &str) -> Option<T>
    where
        T: FromStr,
    {
        let raw = self.raw(name)?.to_owned();
        match raw.parse::<T>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.problem(name, format!("expected {expected}, got {raw:?}"));
                None
            }
        }
    }

    /// A parsed value with a default.
    pub fn parse<T>(&mut self, name: &str, default: T, expected: &str) -> T
    where
        T: FromStr,
    {
        self.opt(name, expected).unwrap_or(default)
    }

    /// An integer in `min..=max` with a default.
    pub fn int_in<T>(&mut self, name: &str, default: T, min: T, max: T) -> T
    where
        T: FromStr + PartialOrd + Copy + fmt::Display,
    {
        let expected = format!("an integer from {min} to {max}");
        match self.opt::<T>(name, &expected) {
            Some(v) if v < min || v > max => {
                self.problem(name, format!("expected {expected}, got {v}"));
                default
            }
            Some(v) => v,
            None => default,
        }
    }

    /// A number of seconds (integer) in `min..=max`, as a `Duration`.
    pub fn secs(&mut self, name: &str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_secs(self.int_in(name, default, min, max))
    }

    /// A number of milliseconds (integer) in `min..=max`, as a `Duration`.
    pub fn millis(&mut self, name: &str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_millis(self.int_in(name, default, min, max))
    }

    /// A boolean (`true/false/1/0/yes/no/on/off`).
    pub fn flag(&mut self, name: &str, default: bool) -> bool {
        let Some(raw) = self.raw(name).map(str::to_ascii_lowercase) else {
            return default;
        };
        match raw.as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => {
                self.problem(name, format!("expected true or false, got {raw:?}"));
                default
            }
        }
    }

    /// One of a fixed set of lowercase words.
    pub fn choice(
        &mut self,
        name: &str,
        default: &'static str,
        allowed: &[&'static str],
    ) -> String {
        let Some(raw) = self.raw(name).map(str::to_ascii_lowercase) else {
            return default.to_owned();
        };
        if allowed.contains(&raw.as_str()) {
            raw
        } else {
            self.problem(
                name,
                format!("expected one of {}, got {raw:?}", allowed.join(", ")),
            );
            default.to_owned()
        }
    }

    /// A socket address such as `127.0.0.1:9181`.
    pub fn addr(&mut self, name: &str, default: &str) -> SocketAddr {
        self.opt(name, "a socket address like 127.0.0.1:9181")
            .unwrap_or_else(|| default.parse().expect("default address parses"))
    }

    /// An `http://` or `https://` URL (kept as a string, trailing slash removed).
    pub fn http_url(&mut self, name: &str) -> Option<String> {
        self.checked_http_url(name, false)
    }

    /// [`Env::http_url`] for a URL that is a credential (a webhook's carries its token): kept
    /// as a secret and never echoed in a problem.
    pub fn secret_http_url(&mut self, name: &str) -> Option<SecretString> {
        self.checked_http_url(name, true).map(SecretString::from)
    }

    fn checked_http_url(&mut self, name: &str, secret: bool) -> Option<String> {
        let raw = self.raw(name)?.to_owned();
        let ok = (raw.starts_with("http://") || raw.starts_with("https://"))
            && raw.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
        if ok {
            return Some(raw.trim_end_matches('/').to_owned());
        }
        let problem = if secret {
            "expected an http:// or https:// URL (the value is a secret: not shown)".to_owned()
        } else {
            format!("expected an http:// or https:// URL, got {raw:?}")
        };
        self.problem(name, problem);
        None
    }

    /// Ends loading: `Err` lists every problem found.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }

    /// Problems recorded so far (for tests).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}
