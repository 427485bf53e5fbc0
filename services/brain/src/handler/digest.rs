//! Keeping handoff alerts readable: a contact already waiting for a person is never alerted
//! again ([`Brain::hand_off`]), and when more than `ALERT_DIGEST_AFTER` handoffs arrive within
//! `ALERT_DIGEST_MINUTES`, the admins' WhatsApp alerts past that number are held and one
//! digest per window tells the count ([`Brain::send_digests`]). Anyone can open web chat
//! visitors and ask each for a person: without this, every one of them is a message on every
//! admin's phone.
//!
//! The window starts at the first handoff after a quiet spell and lasts `ALERT_DIGEST_MINUTES`
//! (`{prefix}:alerts:handoffs`, a hash of its start and count); the held alerts are counted per
//! window start in `{prefix}:alerts:held`. Both live in Redis, so replicas share them, and the
//! digest is taken (read and deleted) in one script, so exactly one replica sends it.

use super::*;

/// Counts a handoff in the current window (a new one when none is open at `ARGV[1]`, by the
/// brain's clock like the digest's check): its number in the window.
const COUNT: &str = r"
local start = redis.call('HGET', KEYS[1], 'start')
if not start or tonumber(start) + tonumber(ARGV[2]) <= tonumber(ARGV[1]) then
  start = ARGV[1]
  redis.call('HSET', KEYS[1], 'start', start, 'n', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
if n > tonumber(ARGV[3]) then
  redis.call('HINCRBY', KEYS[2], start, 1)
  redis.call('PEXPIRE', KEYS[2], 86400000)
end
return n
";

/// Takes the held counts of the windows that ended by `ARGV[1]`: `{start, count, ...}`.
const TAKE: &str = r"
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i]) + tonumber(ARGV[2]) <= tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], all[i])
    table.insert(out, all[i])
    table.insert(out, all[i + 1])
  end
end
return out
";

/// Whether `p` is a WhatsApp alert to an admin.
fn is_admin_alert(p: &Publish) -> bool {
    matches!(
        &p.envelope.payload,
        Some(Payload::Outbound(o)) if o.kind() == outbound::Kind::Alert
    )
}

impl Brain {
    /// `ALERT_DIGEST_MINUTES`.
    pub fn digest_window(&self) -> std::time::Duration {
        self.cfg.alert_digest_window
    }

    fn window_key(&self) -> String {
        self.bus.keys().key("alerts:handoffs")
    }

    fn held_key(&self) -> String {
        self.bus.keys().key("alerts:held")
    }

    /// Counts a handoff `d` makes; past `ALERT_DIGEST_AFTER` in the window, its admin alerts
    /// are held for the digest.
    pub(super) async fn limit_alerts(&self, d: &mut Decision) -> Result<(), HandleError> {
        let after = self.cfg.alert_digest_after;
        if d.handoff.is_none() || after == 0 || !d.extra.iter().any(is_admin_alert) {
            return Ok(());
        }
        let n: u64 = redis::Script::new(COUNT)
            .key(self.window_key())
            .key(self.held_key())
            .arg(shared::ids::now_ms())
            .arg(self.cfg.alert_digest_window.as_millis() as u64)
            .arg(after)
            .invoke_async(&mut self.bus.connection())
            .await
            .map_err(|e| HandleError::retry("handoff alert count", e))?;
        if n > u64::from(after) {
            d.extra.retain(|p| !is_admin_alert(p));
            metrics::counter!(m::ALERTS_HELD).increment(1);
            tracing::info!(in_window = n, "handoff alert held for the digest");
        }
        Ok(())
    }

    /// Sends each admin one digest per ended window whose alerts were held. Returns how many
    /// windows were summed up.
    pub async fn send_digests(&self) -> anyhow::Result<usize> {
        let window = self.cfg.alert_digest_window;
        let taken: Vec<(i64, u64)> = redis::Script::new(TAKE)
            .key(self.held_key())
            .arg(shared::ids::now_ms())
            .arg(window.as_millis() as u64)
            .invoke_async(&mut self.bus.connection())
            .await?;
        let minutes = (window.as_secs_f64() / 60.0).to_string();
        for (start, held) in &taken {
            let text = format!(
                "🙋 {held} more conversation{s} went to a person within {minutes} min (over \
                 ALERT_DIGEST_AFTER = {after}); their alerts were held to keep this readable. \
                 !handoffs lists everyone waiting.",
                s = if *held == 1 { "" } else { "s" },
                after = self.cfg.alert_digest_after,
            );
            for admin in &self.cfg.admins {
                let id = blake3::hash(format!("digest|{start}|{admin}").as_bytes()).to_hex()[..26]
                    .to_owned();
                self.bus
                    .publisher()
                    .publish(Publish::admin_alert("brain", id, &text, admin.as_str()))
                    .await?;
            }
            metrics::counter!(m::DIGESTS).increment(1);
            tracing::info!(held, "handoff digest sent");
        }
        Ok(taken.len())
    }
}
