//! Whether this process is still live: `/healthz` answers 503 once something found it is not
//! (a stuck consumer), and the process exits soon after.

/// Why this process is no longer live, once something found it so.
static UNHEALTHY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Marks the process as not live, with `reason` (the first reason wins).
pub fn set_unhealthy(reason: String) {
    let _ = UNHEALTHY.set(reason);
}

/// The reason this process is not live, if it is not.
pub fn unhealthy() -> Option<&'static str> {
    UNHEALTHY.get().map(String::as_str)
}
