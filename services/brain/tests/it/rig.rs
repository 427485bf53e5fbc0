//! A brain deployment under test: its database, a key prefix, the fake OpenAI server, and
//! brain processes; inbound messages go in on the real bus, replies are read off it.

use std::time::Duration;

use shared::bus::{Bus, Publish, Stream};
use shared::config::{BusConfig, Dsn, ServiceName};
use shared::fake_chat::FakeChat;
use shared::proto::{Envelope, Identity, Inbound, Outbound, Payload, Transport, identity, inbound};
use shared::testing::{KeyPrefix, ServiceEnv, ServiceProcess, TestDb, eventually, wait_for};

use crate::BIN;

pub const ADMIN: &str = "+15550000001";

pub struct Rig {
    pub db: TestDb,
    pub prefix: String,
    pub redis: String,
    pub bus: Bus,
    pub fake: FakeChat,
    env: Vec<(String, String)>,
    dirs: Vec<ServiceEnv>,
    _keys: KeyPrefix,
}

impl Rig {
    pub async fn new(extra: &[(&str, &str)]) -> Self {
        let db = TestDb::new().await;
        let fake = FakeChat::start();
        let prefix = shared::testing::unique_prefix();
        let redis = shared::testing::redis_url();
        let bus =
            Bus::with_parts(&Dsn::new(&redis), &prefix, BusConfig::default(), "test").unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("OPENAI_BASE_URL".into(), fake.base_url.clone()),
            ("OPENAI_API_KEY".into(), "sk-test".into()),
            ("ADMIN_NUMBERS".into(), ADMIN.into()),
            ("LLM_RETRY_BASE_MS".into(), "50".into()),
            ("BUS_BLOCK_MS".into(), "200".into()),
            ("BUS_RETRY_BASE_MS".into(), "50".into()),
        ];
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push(((*k).into(), (*v).into()));
        }
        Self {
            _keys: KeyPrefix::of(&redis, &prefix),
            db,
            prefix,
            redis,
            bus,
            fake,
            env,
            dirs: Vec::new(),
        }
    }

    /// Changes a variable for the processes spawned from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    pub async fn spawn(&mut self) -> ServiceProcess {
        let mut senv = ServiceEnv::new(ServiceName::Brain, &self.redis, Some(&self.db.url));
        senv.use_prefix(&self.prefix);
        for (k, v) in &self.env {
            if v.is_empty() && k.starts_with("OPENAI_") {
                senv.env.remove(k);
            } else {
                senv.env.insert(k.clone(), v.clone());
            }
        }
        let p = senv.spawn_ready(BIN).await;
        self.dirs.push(senv);
        p
    }

    /// Publishes a text from `phone` (web chat, loopback: the phone identity); returns its id.
    pub async fn text(&self, phone: &str, text: &str) -> String {
        let id = shared::ids::new_id();
        self.send(phone, &id, inbound::Kind::Text, text, None).await;
        id
    }

    /// Publishes a text from web chat visitor `visitor` (no phone number); returns its id.
    pub async fn visitor_text(&self, visitor: &str, text: &str) -> String {
        let id = shared::ids::new_id();
        let who = Identity {
            kind: identity::Kind::Webchat as i32,
            value: visitor.to_owned(),
        };
        self.publish_inbound(self.inbound_of(who, visitor, &id, inbound::Kind::Text, text, None))
            .await;
        id
    }

    pub async fn send(
        &self,
        phone: &str,
        id: &str,
        kind: inbound::Kind,
        text: &str,
        media: Option<shared::proto::MediaRef>,
    ) {
        let who = Identity {
            kind: identity::Kind::Phone as i32,
            value: phone.to_owned(),
        };
        let ib = self.inbound_of(who, phone.trim_start_matches('+'), id, kind, text, media);
        self.publish_inbound(ib).await;
    }

    /// Stores `png` in the media store under `name`, as the gateway would; its reference.
    pub async fn store_png(&self, name: &str, png: &[u8]) -> shared::proto::MediaRef {
        let key = format!("{{{}}}:media:{name}", self.prefix);
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(png)
            .query_async(&mut self.bus.connection())
            .await
            .unwrap();
        shared::proto::MediaRef {
            key,
            mime_type: "image/png".into(),
            size_bytes: png.len() as u64,
            sha256: String::new(),
        }
    }

    /// Publishes what the business wrote to `phone` from its own phone (the gateway passes the
    /// owner's messages on this way); returns its id.
    pub async fn owner_wrote(&self, phone: &str, text: &str) -> String {
        let id = shared::ids::new_id();
        let ib = Inbound {
            message_id: id.clone(),
            transport: Transport::Web as i32,
            transport_message_id: id.clone(),
            identities: vec![Identity {
                kind: identity::Kind::Phone as i32,
                value: phone.to_owned(),
            }],
            chat_id: format!("{}@c.us", phone.trim_start_matches('+')),
            kind: inbound::Kind::Text as i32,
            text: text.to_owned(),
            sent_at_ms: shared::ids::now_ms(),
            from_business: true,
            ..Default::default()
        };
        self.bus
            .publisher()
            .publish(Publish::ordered(
                Stream::Inbound,
                Envelope::new("test", Payload::Inbound(ib)),
                phone.to_owned(),
            ))
            .await
            .unwrap();
        id
    }

    /// Publishes a message from `who` in chat `chat_id`.
    pub async fn send_as(
        &self,
        who: Identity,
        chat_id: &str,
        id: &str,
        kind: inbound::Kind,
        text: &str,
        media: Option<shared::proto::MediaRef>,
    ) {
        let ib = self.inbound_of(who, chat_id, id, kind, text, media);
        self.publish_inbound(ib).await;
    }

    /// Publishes a text the gateway cut to `MAX_INPUT_CHARS` (it was longer); returns its id.
    pub async fn cut_text(&self, phone: &str, text: &str) -> String {
        let id = shared::ids::new_id();
        let mut ib = self.inbound_of(
            Identity {
                kind: identity::Kind::Phone as i32,
                value: phone.to_owned(),
            },
            phone.trim_start_matches('+'),
            &id,
            inbound::Kind::Text,
            text,
            None,
        );
        ib.text_cut = true;
        self.publish_inbound(ib).await;
        id
    }

    fn inbound_of(
        &self,
        who: Identity,
        chat_id: &str,
        id: &str,
        kind: inbound::Kind,
        text: &str,
        media: Option<shared::proto::MediaRef>,
    ) -> Inbound {
        Inbound {
            message_id: id.to_owned(),
            transport: Transport::Webchat as i32,
            transport_message_id: id.to_owned(),
            identities: vec![who],
            chat_id: chat_id.to_owned(),
            kind: kind as i32,
            text: text.to_owned(),
            media,
            sent_at_ms: shared::ids::now_ms(),
            display_name: String::new(),
            from_business: false,
            text_cut: false,
        }
    }

    async fn publish_inbound(&self, ib: Inbound) {
        let order = ib.identities[0].value.clone();
        self.bus
            .publisher()
            .publish(Publish::ordered(
                Stream::Inbound,
                Envelope::new("test", Payload::Inbound(ib)),
                order,
            ))
            .await
            .unwrap();
    }

    async fn envelopes(&self, stream: Stream) -> Vec<Envelope> {
        shared::testing::read_envelopes(&self.bus, stream).await
    }

    /// Every outbound message so far.
    pub async fn outbound(&self) -> Vec<Outbound> {
        self.envelopes(Stream::Outbound)
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                Some(Payload::Outbound(o)) => Some(o),
                _ => None,
            })
            .collect()
    }

    /// Waits for the answers to inbound message `id` (none after 15 s).
    pub async fn replies_to(&self, id: &str) -> Vec<Outbound> {
        self.replies_n(id, 1).await
    }

    /// Waits until inbound message `id` has `n` answers (what it has after 20 s otherwise).
    pub async fn replies_n(&self, id: &str, n: usize) -> Vec<Outbound> {
        let enough = wait_for(Duration::from_secs(20), async || {
            let r = self.replies_to_now(id).await;
            (r.len() >= n).then_some(r)
        })
        .await;
        match enough {
            Some(r) => r,
            None => self.replies_to_now(id).await,
        }
    }

    /// A transcriber process on this deployment, talking to `whisper_url`.
    pub async fn spawn_transcriber(&mut self, whisper_url: &str) -> ServiceProcess {
        let bin = shared::testing::workspace_bin("transcriber");
        let mut senv = ServiceEnv::new(ServiceName::Transcriber, &self.redis, None);
        senv.use_prefix(&self.prefix);
        senv.env
            .insert("WHISPER_BASE_URL".into(), whisper_url.to_owned());
        senv.env.insert("WHISPER_API_KEY".into(), "sk-test".into());
        senv.env.insert("LLM_RETRY_BASE_MS".into(), "50".into());
        senv.env.insert("BUS_BLOCK_MS".into(), "200".into());
        // The visitors' allowance is the deployment's, as in production.
        for (k, v) in self.env.iter().filter(|(k, _)| k.starts_with("VISITOR_")) {
            senv.env.insert(k.clone(), v.clone());
        }
        let p = senv.spawn_ready(bin.to_str().unwrap()).await;
        self.dirs.push(senv);
        p
    }

    /// A ledger process on this deployment and database, with `extra` variables.
    pub async fn spawn_ledger(&mut self, extra: &[(&str, &str)]) -> ServiceProcess {
        let bin = shared::testing::workspace_bin("ledger");
        let mut senv = ServiceEnv::new(ServiceName::Ledger, &self.redis, Some(&self.db.url));
        senv.use_prefix(&self.prefix);
        senv.env.insert("BUS_BLOCK_MS".into(), "200".into());
        for (k, v) in extra {
            senv.env.insert((*k).into(), (*v).into());
        }
        let p = senv.spawn_ready(bin.to_str().unwrap()).await;
        self.dirs.push(senv);
        p
    }

    /// The one reply's text.
    pub async fn reply(&self, id: &str) -> String {
        let r = self.replies_to(id).await;
        assert_eq!(r.len(), 1, "expected one reply to {id}, got {r:?}");
        r[0].text.clone()
    }

    /// Waits until every entry of `stream` so far was handled and acknowledged.
    pub async fn idle(&self, stream: Stream) {
        eventually(
            &format!("{stream:?} handled"),
            Duration::from_secs(10),
            async || {
                let stats = self.bus.stats(stream).await.unwrap();
                (stats.pending == 0 && stats.lag == Some(0)).then_some(())
            },
        )
        .await;
    }

    /// Waits until inbound message `id` was acknowledged without any reply.
    pub async fn assert_silent(&self, id: &str) {
        self.idle(Stream::Inbound).await;
        assert!(
            self.replies_to_now(id).await.is_empty(),
            "{id} was answered"
        );
    }

    pub async fn replies_to_now(&self, id: &str) -> Vec<Outbound> {
        self.outbound()
            .await
            .into_iter()
            .filter(|o| o.in_reply_to == id)
            .collect()
    }

    pub async fn usage(&self) -> Vec<shared::proto::UsageRecord> {
        self.envelopes(Stream::Usage)
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                Some(Payload::Usage(u)) => Some(u),
                _ => None,
            })
            .collect()
    }
}

pub async fn metric(p: &ServiceProcess, name: &str) -> f64 {
    shared::testing::scrape_metric(&p.http, name).await
}
