//! Keeping handoff alerts readable: a contact already waiting for a person is never alerted
//! again ([`Brain::hand_off`]), and when more than `ALERT_DIGEST_AFTER` handoffs arrive within
//! `ALERT_DIGEST_MINUTES`, the admins' WhatsApp alerts past that number are held and one
//! digest per window tells the count ([`Brain::send_digests`]). Anyone can open web chat
//! visitors and ask each for a person: without this, every one of them is a message on every
//! admin's phone.
//!
//! One window per channel ([`Channel`]): web chat visitors cost nothing to create, phone
//! identities are the shop's WhatsApp customers. With one window for both, a handful of
//! visitors asking for a person would hold back the alerts of paying customers for the rest of
//! the window; with one each, visitors only ever hold back visitors, and a real flood of
//! WhatsApp handoffs is still summed up rather than ringing every admin's phone each time.
//!
//! The window starts at the first handoff after a quiet spell and lasts `ALERT_DIGEST_MINUTES`
//! (`{prefix}:alerts:handoffs:<channel>`, a hash of its start and count); the held alerts are
//! counted per window start in `{prefix}:alerts:held:<channel>`. A handoff is counted once per
//! inbound message (`{prefix}:alerts:counted:<id>` keeps its number), so a redelivery before the
//! commit gets the same verdict without counting again. Digests are published before the held
//! counts are removed (by the count published, so handoffs counted meanwhile stay): a failed
//! publish leaves them for the next check, and the digests' ids are fixed per window and admin,
//! so the gateway delivers a digest published twice (a retry, two replicas) once.

use shared::bus::{HandleError, Publish};
use shared::proto::{Inbound, Payload, outbound};

use super::Brain;
use crate::domain::{Decision, Effect};
use crate::metrics as m;

/// How long the held counts and the per-message verdicts are kept (well past any redelivery).
const KEEP_MS: u64 = 86_400_000;

/// Counts a handoff in the current window (a new one when none is open at `ARGV[1]`, by the
/// brain's clock like the digest's check): its number in the window. A message counted already
/// (`KEYS[3]`) gets its number again and counts nothing.
const COUNT: &str = r"
local seen = redis.call('GET', KEYS[3])
if seen then
  return tonumber(seen)
end
local start = redis.call('HGET', KEYS[1], 'start')
if not start or tonumber(start) + tonumber(ARGV[2]) <= tonumber(ARGV[1]) then
  start = ARGV[1]
  redis.call('HSET', KEYS[1], 'start', start, 'n', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
if n > tonumber(ARGV[3]) then
  redis.call('HINCRBY', KEYS[2], start, 1)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('SET', KEYS[3], n, 'PX', ARGV[4])
return n
";

/// Removes `ARGV[2]` held alerts of the window started at `ARGV[1]` (those a digest told).
const SETTLE: &str = r"
if redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2])) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
";

/// Whose handoffs share a window: web chat visitors, or phone (WhatsApp) identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    Visitors,
    Phone,
}

impl Channel {
    const ALL: [Channel; 2] = [Channel::Visitors, Channel::Phone];

    fn of(ib: &Inbound) -> Self {
        if shared::proto::is_visitor(&ib.identities) {
            Channel::Visitors
        } else {
            Channel::Phone
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Channel::Visitors => "visitors",
            Channel::Phone => "phone",
        }
    }

    /// Who the digest speaks of.
    fn described(self) -> &'static str {
        match self {
            Channel::Visitors => "web chat",
            Channel::Phone => "WhatsApp",
        }
    }
}

/// Where one channel's window and held counts live.
#[derive(Debug, Clone)]
pub(crate) struct DigestKeys {
    window: String,
    held: String,
    counted_prefix: String,
}

impl DigestKeys {
    pub(crate) fn new(keys: &shared::bus::Keys, channel: Channel) -> Self {
        Self {
            window: keys.key(&format!("alerts:handoffs:{}", channel.as_str())),
            held: keys.key(&format!("alerts:held:{}", channel.as_str())),
            counted_prefix: keys.key("alerts:counted:"),
        }
    }
}

/// Counts the handoff of inbound message `message_id` (once, however often it is handled) in
/// its channel's window at `now_ms`: its number in the window.
pub(crate) async fn count_handoff<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    keys: &DigestKeys,
    message_id: &str,
    now_ms: i64,
    window: std::time::Duration,
    after: u32,
) -> redis::RedisResult<u64> {
    redis::Script::new(COUNT)
        .key(&keys.window)
        .key(&keys.held)
        .key(format!("{}{message_id}", keys.counted_prefix))
        .arg(now_ms)
        .arg(window.as_millis() as u64)
        .arg(after)
        .arg(KEEP_MS)
        .invoke_async(conn)
        .await
}

/// One channel's digest check: whose, when, and to whom.
pub(crate) struct DigestRun<'a> {
    pub channel: Channel,
    pub now_ms: i64,
    pub window: std::time::Duration,
    pub after: u32,
    pub admins: &'a [String],
}

/// Publishes a digest to every admin for each window of `keys` that ended by `now_ms` with
/// alerts held, then removes what was told. Stops at the first failed publish, leaving that
/// window's count for the next call. The windows summed up: `(start, held)`.
pub(crate) async fn digests<C, P, F>(
    conn: &mut C,
    keys: &DigestKeys,
    run: &DigestRun<'_>,
    mut publish: P,
) -> anyhow::Result<Vec<(i64, u64)>>
where
    C: redis::aio::ConnectionLike + Send,
    P: FnMut(Publish) -> F,
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let DigestRun {
        channel,
        now_ms,
        window,
        after,
        admins,
    } = *run;
    let held: Vec<(i64, u64)> = redis::cmd("HGETALL")
        .arg(&keys.held)
        .query_async(conn)
        .await?;
    let window_ms = window.as_millis() as i64;
    let ended: Vec<(i64, u64)> = held
        .into_iter()
        .filter(|(start, n)| start + window_ms <= now_ms && *n > 0)
        .collect();
    let minutes = (window.as_secs_f64() / 60.0).to_string();
    for &(start, held) in &ended {
        let text = format!(
            "🙋 {held} more {who} conversation{s} went to a person within {minutes} min (over \
             ALERT_DIGEST_AFTER = {after}); their alerts were held to keep this readable. \
             !handoffs lists everyone waiting.",
            who = channel.described(),
            s = if held == 1 { "" } else { "s" },
        );
        for admin in admins {
            let id =
                blake3::hash(format!("digest|{}|{start}|{admin}", channel.as_str()).as_bytes())
                    .to_hex()[..26]
                    .to_owned();
            publish(Publish::admin_alert("brain", id, &text, admin)).await?;
        }
        let _: i64 = redis::Script::new(SETTLE)
            .key(&keys.held)
            .arg(start)
            .arg(held)
            .invoke_async(conn)
            .await?;
    }
    Ok(ended)
}

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

    /// Counts a handoff `d` makes in answer to `ib` (`message_id`: what its commit is keyed
    /// by); past `ALERT_DIGEST_AFTER` in its channel's window, its admin alerts are held for
    /// the digest.
    pub(super) async fn limit_alerts(
        &self,
        ib: &Inbound,
        message_id: &str,
        d: &mut Decision,
    ) -> Result<(), HandleError> {
        let after = self.cfg.alert_digest_after;
        if d.handoff().is_none() || after == 0 || !d.publishes().any(is_admin_alert) {
            return Ok(());
        }
        let channel = Channel::of(ib);
        let n = count_handoff(
            &mut self.bus.connection(),
            &DigestKeys::new(self.bus.keys(), channel),
            message_id,
            self.clock.now_ms(),
            self.cfg.alert_digest_window,
            after,
        )
        .await
        .map_err(|e| HandleError::retry("handoff alert count", e))?;
        if n > u64::from(after) {
            d.effects
                .retain(|e| !matches!(e, Effect::Publish(p) if is_admin_alert(p)));
            metrics::counter!(m::ALERTS_HELD).increment(1);
            tracing::info!(
                in_window = n,
                channel = channel.as_str(),
                "handoff alert held for the digest"
            );
        }
        Ok(())
    }

    /// Sends each admin one digest per ended window (per channel) whose alerts were held.
    /// Returns how many windows were summed up.
    pub async fn send_digests(&self) -> anyhow::Result<usize> {
        let admins: Vec<String> = self
            .cfg
            .admins
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect();
        let publisher = self.bus.publisher();
        let mut told = 0;
        for channel in Channel::ALL {
            let run = DigestRun {
                channel,
                now_ms: self.clock.now_ms(),
                window: self.cfg.alert_digest_window,
                after: self.cfg.alert_digest_after,
                admins: &admins,
            };
            let sent = digests(
                &mut self.bus.connection(),
                &DigestKeys::new(self.bus.keys(), channel),
                &run,
                |p| {
                    let publisher = publisher.clone();
                    async move {
                        publisher.publish(p).await?;
                        Ok(())
                    }
                },
            )
            .await?;
            for (_, held) in &sent {
                metrics::counter!(m::DIGESTS).increment(1);
                tracing::info!(held, channel = channel.as_str(), "handoff digest sent");
            }
            told += sent.len();
        }
        Ok(told)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const WINDOW: Duration = Duration::from_secs(60);

    /// What a test publisher was given.
    #[derive(Default, Clone)]
    struct Sent(std::sync::Arc<std::sync::Mutex<Vec<Publish>>>);

    impl Sent {
        /// A publisher that takes `ok` publishes and fails after.
        fn publisher(
            &self,
            ok: usize,
        ) -> impl FnMut(Publish) -> std::future::Ready<anyhow::Result<()>> {
            let sent = self.clone();
            move |p| {
                let mut sent = sent.0.lock().unwrap();
                if sent.len() >= ok {
                    return std::future::ready(Err(anyhow::anyhow!("Redis went away")));
                }
                sent.push(p);
                std::future::ready(Ok(()))
            }
        }

        fn taken(&self) -> Vec<Publish> {
            self.0.lock().unwrap().clone()
        }
    }

    async fn redis() -> (
        shared::testing::KeyPrefix,
        DigestKeys,
        impl redis::aio::ConnectionLike + Send,
    ) {
        let space = shared::testing::KeyPrefix::new(&shared::testing::redis_url());
        let keys = DigestKeys::new(&shared::bus::Keys::new(&space.prefix), Channel::Visitors);
        let conn = redis::Client::open(space.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        (space, keys, conn)
    }

    async fn held<C: redis::aio::ConnectionLike + Send>(
        conn: &mut C,
        keys: &DigestKeys,
    ) -> Vec<(i64, u64)> {
        redis::cmd("HGETALL")
            .arg(&keys.held)
            .query_async(conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_handoff_handled_twice_is_counted_once_with_the_same_verdict() {
        let (_space, keys, mut conn) = redis().await;
        let now = 1_000_000;
        let count = async |conn: &mut _, id: &str| {
            count_handoff(conn, &keys, id, now, WINDOW, 1)
                .await
                .unwrap()
        };
        assert_eq!(count(&mut conn, "m1").await, 1);
        assert_eq!(count(&mut conn, "m2").await, 2);
        // m2 again (a redelivery before its commit): held as before, counted once.
        assert_eq!(count(&mut conn, "m2").await, 2);
        assert_eq!(count(&mut conn, "m1").await, 1);
        assert_eq!(held(&mut conn, &keys).await, vec![(now, 1)]);
        assert_eq!(count(&mut conn, "m3").await, 3);
        assert_eq!(held(&mut conn, &keys).await, vec![(now, 2)]);
    }

    #[tokio::test]
    async fn a_failed_publish_keeps_the_digest_for_every_admin_until_it_is_sent() {
        let (_space, keys, mut conn) = redis().await;
        let start = 1_000_000;
        for id in ["m1", "m2", "m3"] {
            count_handoff(&mut conn, &keys, id, start, WINDOW, 1)
                .await
                .unwrap();
        }
        let admins = vec!["+15550000001".to_owned(), "+15550000002".to_owned()];
        let run = DigestRun {
            channel: Channel::Visitors,
            now_ms: start + WINDOW.as_millis() as i64,
            window: WINDOW,
            after: 1,
            admins: &admins,
        };
        // The second admin's publish fails: nothing is taken.
        let sent = Sent::default();
        let failed = digests(&mut conn, &keys, &run, sent.publisher(1)).await;
        assert!(failed.is_err());
        assert_eq!(held(&mut conn, &keys).await, vec![(start, 2)]);

        // The next check tells both admins (the first again, under the same id).
        let again = Sent::default();
        let told = digests(&mut conn, &keys, &run, again.publisher(usize::MAX))
            .await
            .unwrap();
        assert_eq!(told, vec![(start, 2)]);
        let to = |p: &Publish| match &p.envelope.payload {
            Some(Payload::Outbound(o)) => (o.message_id.clone(), o.identities[0].value.clone()),
            _ => panic!("not an alert"),
        };
        let (sent, again) = (sent.taken(), again.taken());
        assert_eq!(again.iter().map(|p| to(p).1).collect::<Vec<_>>(), admins);
        assert_eq!(to(&sent[0]).0, to(&again[0]).0);
        assert!(held(&mut conn, &keys).await.is_empty());

        // Nothing left to tell.
        let none = digests(&mut conn, &keys, &run, async |_| Ok(()))
            .await
            .unwrap();
        assert!(none.is_empty());
    }
}
