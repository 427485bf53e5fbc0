//! Keyed hashing of personal identifiers for logs.
//!
//! Phone numbers, WhatsApp ids and contact ids appear in logs only as a keyed BLAKE3 hash
//! (`LOG_HASH_KEY`), so an operator can follow one customer through the logs of every service
//! (same key everywhere) without the logs holding the number. Message text is never logged at all.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

static KEY: OnceLock<[u8; 32]> = OnceLock::new();

const CONTEXT: &str = "switchboard 2026-11 log id hash v1";

/// Sets the process-wide hash key (first call wins).
pub fn set_key(material: &[u8]) {
    let _ = KEY.set(blake3::derive_key(CONTEXT, material));
}

fn key() -> &'static [u8; 32] {
    // Without a configured key (unit tests), a per-process random key: hashes are still
    // unlinkable to the number, just not stable across processes.
    KEY.get_or_init(|| {
        let seed: [u8; 32] = rand::random();
        blake3::derive_key(CONTEXT, &seed)
    })
}

/// The keyed hash of an identifier: 16 hex characters.
pub fn hash_id(id: &str) -> String {
    let h = blake3::keyed_hash(key(), id.as_bytes());
    h.to_hex()[..16].to_owned()
}

/// Display wrapper that prints the keyed hash of an identifier: `tracing::info!(contact = %Redacted(phone))`.
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        f.write_str(&hash_id(self.0))
    }
}

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The key material: `LOG_HASH_KEY` when set, else a random key generated once and kept in
/// `<data_dir>/log_hash_key` (created atomically, so services starting together agree; 0600,
/// in a `DATA_DIR` created 0700).
pub fn load_or_create_key(configured: Option<&str>, data_dir: &Path) -> std::io::Result<Vec<u8>> {
    if let Some(k) = configured {
        return Ok(k.as_bytes().to_vec());
    }
    let path = data_dir.join("log_hash_key");
    if let Ok(existing) = std::fs::read(&path)
        && !existing.is_empty()
    {
        return Ok(existing);
    }
    crate::files::create_private_dir_all(data_dir)?;
    let fresh: [u8; 32] = rand::random();
    let hex = hex::encode(fresh);
    let tmp = data_dir.join(format!(".log_hash_key.{}", crate::ids::new_id()));
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Owner-only from its creation: never readable by others, even for a moment.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::files::FILE_MODE)
            .open(&tmp)?;
        f.write_all(hex.as_bytes())?;
        f.sync_all()?;
    }
    // hard_link fails if another process won the race; then its key is the key.
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(hex.into_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(&path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_hide_the_input() {
        let a = hash_id("+15550001111");
        assert_eq!(a, hash_id("+15550001111"));
        assert_ne!(a, hash_id("+15550001112"));
        assert_eq!(a.len(), 16);
        assert!(!a.contains("5550001111"));
        assert_eq!(format!("{}", Redacted("+15550001111")), a);
    }

    #[test]
    fn generated_key_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("sb-key-{}", crate::ids::new_id()));
        let first = load_or_create_key(None, &dir).unwrap();
        let second = load_or_create_key(None, &dir).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), 64);
        let configured = load_or_create_key(Some("abc"), &dir).unwrap();
        assert_eq!(configured, b"abc");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
