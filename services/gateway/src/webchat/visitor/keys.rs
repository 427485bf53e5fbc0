//! Visitor ids and tokens: made and checked under the server key (no state kept per visitor).

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Random part of an anonymous visitor's id, in hex digits.
const RANDOM_HEX: usize = 20;
/// The id's MAC, in hex digits.
const ID_MAC_HEX: usize = 12;
/// Length of a visitor id: a letter, the body, the MAC.
pub const ID_LEN: usize = 1 + RANDOM_HEX + ID_MAC_HEX;

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one this server did not issue (401).
    Unauthenticated,
    /// A valid token of another visitor, or a visitor that does not exist (404).
    NotFound,
    /// A token this server issued, past its expiry (401).
    Expired,
}

/// A visitor and its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The visitor id.
    pub visitor: String,
    /// Its token.
    pub token: String,
    /// When the token expires, in Unix seconds.
    pub expires: i64,
}

impl Issued {
    /// The JSON a client gets: `{"visitor", "token", "expires_at", "expires_in"}`.
    pub(super) fn json(&self, now: i64) -> serde_json::Value {
        let at = jiff::Timestamp::from_second(self.expires)
            .map(|t| t.to_string())
            .unwrap_or_default();
        serde_json::json!({
            "visitor": self.visitor,
            "token": self.token,
            "expires_at": at,
            "expires_in": (self.expires - now).max(0),
        })
    }
}

/// Now, in Unix seconds.
pub(crate) fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The server's keys for visitors.
#[derive(Clone)]
pub struct Keys {
    /// The server key (`WEBCHAT_SECRET` or the one kept in Redis).
    secret: SecretString,
    /// `WEBCHAT_TOKEN`: may act on any issued visitor.
    server_token: Option<SecretString>,
    /// `WEBCHAT_IDENTITY_SECRET`: the business signs its user ids with it.
    identity: Option<SecretString>,
    /// How long a new token is valid, in seconds.
    lifetime: i64,
    /// Until when tokens without an expiry (issued before it existed) are valid, in Unix
    /// seconds; `None`: not at all.
    legacy_until: Option<i64>,
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
        m.update(b"\x1f");
    }
    m
}

/// Whether `id` has a visitor id's shape (its MAC is checked by [`Keys::issued`]).
pub fn looks_like_visitor(id: &str) -> bool {
    id.len() == ID_LEN
        && (id.starts_with('v') || id.starts_with('u'))
        && id[1..]
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Constant-time equality of two byte strings.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Keys {
    /// Keys from the server key, with the optional server token and identity secret; tokens
    /// valid for 30 days, none without an expiry ([`Keys::with_expiry`] changes both).
    pub fn new(
        secret: SecretString,
        server_token: Option<SecretString>,
        identity: Option<SecretString>,
    ) -> Self {
        Self {
            secret,
            server_token,
            identity,
            lifetime: 30 * 86_400,
            legacy_until: None,
        }
    }

    /// New tokens valid for `lifetime` seconds; tokens without an expiry valid until
    /// `legacy_until` (Unix seconds).
    pub fn with_expiry(mut self, lifetime: i64, legacy_until: Option<i64>) -> Self {
        self.lifetime = lifetime;
        self.legacy_until = legacy_until;
        self
    }

    fn key(&self) -> &[u8] {
        self.secret.expose_secret().as_bytes()
    }

    /// `body` (a letter and hex digits) with its MAC: an id only this server can issue.
    fn seal(&self, body: &str) -> String {
        let tag = mac(self.key(), &[b"visitor-id", body.as_bytes()])
            .finalize()
            .into_bytes();
        format!("{body}{}", &hex::encode(tag)[..ID_MAC_HEX])
    }

    /// Whether `id` is a visitor id this server issued.
    pub fn issued(&self, id: &str) -> bool {
        if !looks_like_visitor(id) {
            return false;
        }
        let body = &id[..ID_LEN - ID_MAC_HEX];
        same(self.seal(body).as_bytes(), id.as_bytes())
    }

    /// The token of visitor `id` valid until `expires` (Unix seconds).
    pub fn token_until(&self, id: &str, expires: i64) -> String {
        let expires = expires.to_string();
        let tag = mac(
            self.key(),
            &[b"visitor-token-v2", id.as_bytes(), expires.as_bytes()],
        )
        .finalize()
        .into_bytes();
        format!(
            "{id}.{expires}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The token of visitor `id` as issued before tokens expired (`<id>.<MAC>`): still
    /// checked until [`Keys::with_expiry`]'s `legacy_until`.
    pub fn legacy_token(&self, id: &str) -> String {
        let tag = mac(self.key(), &[b"visitor-token", id.as_bytes()])
            .finalize()
            .into_bytes();
        format!(
            "{id}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// A fresh token for visitor `id`, valid for the configured lifetime from `now`.
    pub fn issue(&self, id: String, now: i64) -> Issued {
        let expires = now.saturating_add(self.lifetime);
        Issued {
            token: self.token_until(&id, expires),
            visitor: id,
            expires,
        }
    }

    /// A new anonymous visitor: its id and token.
    pub fn new_visitor(&self, now: i64) -> Issued {
        let random: [u8; RANDOM_HEX / 2] = rand::random();
        self.issue(self.seal(&format!("v{}", hex::encode(random))), now)
    }

    /// A keyed hash of `value` (for Redis key names: no address or id in the clear, and none
    /// that can be guessed back without the server key).
    pub fn key_hash(&self, value: &str) -> String {
        let tag = mac(self.key(), &[b"redis-key", value.as_bytes()])
            .finalize()
            .into_bytes();
        hex::encode(tag)[..32].to_owned()
    }

    /// Whether the business's user verification is configured.
    pub fn verifies_users(&self) -> bool {
        self.identity.is_some()
    }

    /// The visitor of a user the business vouches for (`user_hash` = hex HMAC-SHA256 of
    /// `user_id` under `WEBCHAT_IDENTITY_SECRET`): the same visitor on every device. `None`
    /// when the hash is wrong (or verification is not configured).
    pub fn user_visitor(&self, user_id: &str, user_hash: &str, now: i64) -> Option<Issued> {
        let identity = self.identity.as_ref()?;
        let given = hex::decode(user_hash).ok()?;
        let mut m = HmacSha256::new_from_slice(identity.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
        m.update(user_id.as_bytes());
        m.verify_slice(&given).ok()?;
        let tag = mac(self.key(), &[b"user", user_id.as_bytes()])
            .finalize()
            .into_bytes();
        Some(self.issue(
            self.seal(&format!("u{}", &hex::encode(tag)[..RANDOM_HEX])),
            now,
        ))
    }

    /// Checks a bearer token against the visitor in the path, at `now` (Unix seconds).
    pub fn check(&self, bearer: Option<&str>, visitor: &str, now: i64) -> Result<(), Denied> {
        let given = bearer.unwrap_or("");
        if given.is_empty() {
            return Err(Denied::Unauthenticated);
        }
        if let Some(server) = &self.server_token
            && same(given.as_bytes(), server.expose_secret().as_bytes())
        {
            return if self.issued(visitor) {
                Ok(())
            } else {
                Err(Denied::NotFound)
            };
        }
        let Some((id, rest)) = given.split_once('.') else {
            return Err(Denied::Unauthenticated);
        };
        if !self.issued(id) {
            return Err(Denied::Unauthenticated);
        }
        let expires = match rest.split_once('.') {
            Some((expires, _)) => {
                let Ok(expires) = expires.parse::<i64>() else {
                    return Err(Denied::Unauthenticated);
                };
                if !same(self.token_until(id, expires).as_bytes(), given.as_bytes()) {
                    return Err(Denied::Unauthenticated);
                }
                Some(expires)
            }
            None => {
                if !same(self.legacy_token(id).as_bytes(), given.as_bytes()) {
                    return Err(Denied::Unauthenticated);
                }
                self.legacy_until
            }
        };
        if expires.is_none_or(|e| now >= e) {
            return Err(Denied::Expired);
        }
        if id == visitor {
            Ok(())
        } else {
            Err(Denied::NotFound)
        }
    }
}

/// The visitor user-hash a business computes: hex HMAC-SHA256 of `user_id` under `secret`.
pub fn user_hash(secret: &str, user_id: &str) -> String {
    let mut m = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(user_id.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn keys(identity: Option<&str>) -> Keys {
        Keys::new(
            SecretString::from("k".repeat(40)),
            Some(SecretString::from("server-token-0123456789")),
            identity.map(SecretString::from),
        )
    }

    #[test]
    fn a_visitor_token_opens_its_own_conversation_only() {
        let k = keys(None);
        let Issued {
            visitor: a,
            token: ta,
            ..
        } = k.new_visitor(NOW);
        let Issued {
            visitor: b,
            token: tb,
            ..
        } = k.new_visitor(NOW);
        assert_ne!(a, b);
        assert!(k.issued(&a) && k.issued(&b));
        assert_eq!(k.check(Some(&ta), &a, NOW), Ok(()));
        assert_eq!(k.check(Some(&tb), &a, NOW), Err(Denied::NotFound));
        assert_eq!(k.check(None, &a, NOW), Err(Denied::Unauthenticated));
        assert_eq!(k.check(Some("nope"), &a, NOW), Err(Denied::Unauthenticated));
        // The right shape under another server key is a wrong token.
        let other = Keys::new(SecretString::from("x".repeat(40)), None, None);
        assert_eq!(
            k.check(Some(&other.token_until(&a, NOW + DAY)), &a, NOW),
            Err(Denied::Unauthenticated)
        );
        // An id that was never issued: 404 even for the server token.
        let forged = format!("v{}", "0".repeat(ID_LEN - 1));
        assert!(!k.issued(&forged));
        assert_eq!(
            k.check(Some("server-token-0123456789"), &forged, NOW),
            Err(Denied::NotFound)
        );
        assert_eq!(k.check(Some("server-token-0123456789"), &a, NOW), Ok(()));
        assert_eq!(
            k.check(Some("server-token-0123456789"), "15550001111", NOW),
            Err(Denied::NotFound)
        );
    }

    #[test]
    fn tokens_expire_and_their_expiry_is_under_the_mac() {
        let k = keys(None).with_expiry(30 * DAY, Some(NOW + 30 * DAY));
        let issued = k.new_visitor(NOW);
        assert_eq!(issued.expires, NOW + 30 * DAY);
        let v = &issued.visitor;
        assert_eq!(k.check(Some(&issued.token), v, NOW + 30 * DAY - 1), Ok(()));
        assert_eq!(
            k.check(Some(&issued.token), v, NOW + 30 * DAY),
            Err(Denied::Expired)
        );
        // A later expiry written into the token breaks its MAC; so does a non-canonical one.
        let stretched = issued.token.replace(
            &format!(".{}.", NOW + 30 * DAY),
            &format!(".{}.", NOW + 90 * DAY),
        );
        assert_ne!(stretched, issued.token);
        assert_eq!(
            k.check(Some(&stretched), v, NOW),
            Err(Denied::Unauthenticated)
        );
        let padded = issued.token.replace(
            &format!(".{}.", NOW + 30 * DAY),
            &format!(".0{}.", NOW + 30 * DAY),
        );
        assert_eq!(k.check(Some(&padded), v, NOW), Err(Denied::Unauthenticated));
        // A renewed token runs from its own issue.
        let renewed = k.issue(v.clone(), NOW + 20 * DAY);
        assert_eq!(k.check(Some(&renewed.token), v, NOW + 45 * DAY), Ok(()));
        // The server token never expires.
        assert_eq!(
            k.check(Some("server-token-0123456789"), v, NOW + 400 * DAY),
            Ok(())
        );
    }

    #[test]
    fn tokens_from_before_expiry_work_until_the_deadline_only() {
        let k = keys(None).with_expiry(30 * DAY, Some(NOW + 30 * DAY));
        let v = k.new_visitor(NOW).visitor;
        let old = k.legacy_token(&v);
        assert_eq!(old.matches('.').count(), 1);
        assert_eq!(k.check(Some(&old), &v, NOW + 29 * DAY), Ok(()));
        assert_eq!(
            k.check(Some(&old), &v, NOW + 30 * DAY),
            Err(Denied::Expired)
        );
        let other = k.new_visitor(NOW).visitor;
        assert_eq!(k.check(Some(&old), &other, NOW), Err(Denied::NotFound));
        // Without a deadline they are refused.
        assert_eq!(keys(None).check(Some(&old), &v, NOW), Err(Denied::Expired));
    }

    #[test]
    fn a_user_the_business_vouches_for_is_one_visitor_everywhere() {
        let k = keys(Some("identity-secret-123"));
        let hash = user_hash("identity-secret-123", "customer-42");
        let one = k
            .user_visitor("customer-42", &hash, NOW)
            .expect("right hash");
        let two = k
            .user_visitor("customer-42", &hash.to_uppercase(), NOW)
            .unwrap();
        assert_eq!(one, two);
        assert!(one.visitor.starts_with('u') && k.issued(&one.visitor));
        assert_eq!(k.check(Some(&one.token), &one.visitor, NOW), Ok(()));
        assert!(k.user_visitor("customer-43", &hash, NOW).is_none());
        assert!(k.user_visitor("customer-42", "zz", NOW).is_none());
        assert!(
            k.user_visitor("customer-42", &user_hash("other", "customer-42"), NOW)
                .is_none()
        );
        assert!(keys(None).user_visitor("customer-42", &hash, NOW).is_none());
    }
}
