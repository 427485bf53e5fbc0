//! Identifiers: sortable unique ids for events and messages.

/// A new unique, time-sortable id (ULID, 26 characters).
pub fn new_id() -> String {
    ulid::Ulid::new().to_string()
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
