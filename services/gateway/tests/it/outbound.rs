//! Outbound delivery: order per chat across replicas, retries in place, dead letters, and no
//! double send after a crash. The in-process tests drive the real outbound handler and bus
//! consumer over real Redis with a transport that plays WhatsApp's side (accepts or refuses a
//! send), since WhatsApp's servers cannot be reached from here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::config::TransportKind;
use gateway::transport::{OutgoingText, SendError, Sent, SessionState, Transport, Transports};
use shared::bus::{Bus, Delivery, Handler, Publish, Stream};
use shared::config::{BusConfig, Dsn};
use shared::proto::{Envelope, Identity, Outbound, Payload, outbound};

use crate::helpers::{Gw, metric};

const T: Duration = Duration::from_secs(15);

fn out(chat: &str, id: &str, text: &str) -> Outbound {
    Outbound {
        message_id: id.to_owned(),
        transport: shared::proto::Transport::Webchat as i32,
        chat_id: chat.to_owned(),
        kind: outbound::Kind::Reply as i32,
        text: text.to_owned(),
        in_reply_to: String::new(),
        identities: Vec::new(),
        also_answers: Vec::new(),
    }
}

#[tokio::test]
async fn outbound_is_delivered_in_order_per_chat_across_two_gateways() {
    let prefix = shared::testing::unique_prefix();
    let redis = shared::testing::redis_url();
    let a = Gw::start_on(&redis, Some(&prefix), &[]).await;
    let b = Gw::start_on(&redis, Some(&prefix), &[]).await;
    let chats = ["15553330001", "15553330002", "15553330003"];
    for i in 0..25 {
        for chat in chats {
            a.publish_outbound(out(chat, &format!("{chat}-{i:02}"), &format!("reply {i}")))
                .await;
        }
    }
    for chat in chats {
        let list = a.wait_listing(chat, T, |l| l.len() >= 25).await;
        let ids: Vec<&str> = list.iter().map(|m| m["id"].as_str().unwrap()).collect();
        let want: Vec<String> = (0..25).map(|i| format!("{chat}-{i:02}")).collect();
        assert_eq!(ids, want, "chat {chat} out of order");
    }
    let sent = metric(
        &a.metrics().await,
        "gateway_outbound_sent_total{transport=\"webchat\"}",
    ) + metric(
        &b.metrics().await,
        "gateway_outbound_sent_total{transport=\"webchat\"}",
    );
    assert_eq!(sent, 75.0, "each message sent exactly once");
    b.proc.terminate_async(Duration::from_secs(20)).await;
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_with_its_reason() {
    let gw = Gw::start(&[]).await;
    gw.publish_outbound(out("not-a-phone", "P1", "hello")).await;
    let mut empty = out("15553339999", "P2", "   ");
    empty.kind = outbound::Kind::Notice as i32;
    gw.publish_outbound(empty).await;
    let dead = gw.dead_letters(2).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("not a web chat contact")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("empty message")),
        "{reasons:?}"
    );
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            "gateway_outbound_failed_total{transport=\"webchat\",failure=\"permanent\"}"
        ),
        1.0
    );
}

/// WhatsApp's side of a send: accepts, or fails as scripted.
struct Phone {
    script: Mutex<VecDeque<Option<SendError>>>,
    sent: Mutex<Vec<String>>,
    attempts: Mutex<u32>,
}

impl Phone {
    fn new(script: Vec<Option<SendError>>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.into()),
            sent: Mutex::new(Vec::new()),
            attempts: Mutex::new(0),
        })
    }

    fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Transport for Phone {
    fn kind(&self) -> TransportKind {
        TransportKind::Webchat
    }

    fn state(&self) -> SessionState {
        SessionState::Connected
    }

    fn chat_for(&self, _: &[Identity]) -> Option<String> {
        None
    }

    async fn send_text(&self, msg: &OutgoingText) -> Result<Sent, SendError> {
        *self.attempts.lock().unwrap() += 1;
        if let Some(Some(e)) = self.script.lock().unwrap().pop_front() {
            return Err(e);
        }
        self.sent.lock().unwrap().push(msg.id.clone());
        Ok(Sent {
            transport_message_id: format!("wamid.{}", msg.id),
            already: false,
            recorded: false,
        })
    }

    async fn typing(&self, _: &str, _: bool) -> Result<(), SendError> {
        Ok(())
    }
}

struct Rig {
    bus: Bus,
    deliverer: Arc<gateway::deliver::Deliverer>,
    _keys: shared::testing::KeyPrefix,
}

fn rig(phone: Arc<Phone>) -> Rig {
    let prefix = shared::testing::unique_prefix();
    let url = shared::testing::redis_url();
    let bus_cfg = BusConfig {
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        max_deliveries: 4,
        ..BusConfig::default()
    };
    let bus = Bus::with_parts(&Dsn::new(&url), &prefix, bus_cfg, "gateway").unwrap();
    let transports = Transports::new(vec![phone as Arc<dyn Transport>]);
    let (typing, indicators) = gateway::typing::channel(true, std::time::Duration::ZERO);
    tokio::spawn(indicators.run(
        transports.clone(),
        tokio_util::sync::CancellationToken::new(),
    ));
    let receipts = gateway::receipts::Receipts::new(&bus);
    Rig {
        deliverer: Arc::new(gateway::deliver::Deliverer::new(
            transports, receipts, typing, &bus,
        )),
        bus,
        _keys: shared::testing::KeyPrefix::of(&url, &prefix),
    }
}

fn delivery(o: Outbound) -> Delivery {
    Delivery {
        entry_id: "1-0".into(),
        stream: Stream::Outbound,
        envelope: Envelope::new("test", Payload::Outbound(o)),
        deliveries: 1,
        order_token: None,
        max_deliveries: 4,
    }
}

#[tokio::test]
async fn a_transient_failure_is_retried_in_place_then_succeeds() {
    let phone = Phone::new(vec![
        Some(SendError::Transient("503 from the API".into())),
        Some(SendError::Transient("timeout".into())),
    ]);
    let rig = rig(phone.clone());
    let o = out("15554440000", "M1", "Your order has shipped.");
    let env = Envelope::new("test", Payload::Outbound(o));
    rig.bus
        .publisher()
        .publish(Publish::ordered(
            Stream::Outbound,
            env,
            "webchat:15554440000",
        ))
        .await
        .unwrap();
    let consumer = rig.bus.consumer(Stream::Outbound, rig.deliverer.clone());
    assert_eq!(consumer.process_available().await.unwrap(), 1);
    assert_eq!(phone.sent(), ["M1"]);
    assert_eq!(*phone.attempts.lock().unwrap(), 3);
    assert_eq!(rig.bus.dlq().len(Stream::Outbound).await.unwrap(), 0);
    let stats = rig.bus.stats(Stream::Outbound).await.unwrap();
    assert_eq!(
        stats.pending, 0,
        "acknowledged after the transport accepted it"
    );
}

#[tokio::test]
async fn a_redelivered_message_never_sends_a_part_twice() {
    // Part 2 of 3 fails once; the redelivery sends parts 2 and 3 only; a third delivery (a
    // crash after sending, before the acknowledgement) sends nothing.
    let phone = Phone::new(vec![None, Some(SendError::Transient("network".into()))]);
    let rig = rig(phone.clone());
    let long = (0..3)
        .map(|i| format!("{i}{}", "x".repeat(3000)))
        .collect::<Vec<_>>()
        .join("\n\n");
    let d = delivery(out("15554441111", "M2", &long));
    let first = rig.deliverer.handle(d.clone()).await;
    assert!(
        matches!(first, Err(shared::bus::HandleError::Retry(_))),
        "{first:?}"
    );
    assert_eq!(phone.sent(), ["M2"]);
    rig.deliverer.handle(d.clone()).await.unwrap();
    assert_eq!(phone.sent(), ["M2", "M2.2", "M2.3"]);
    rig.deliverer.handle(d).await.unwrap();
    assert_eq!(
        phone.sent(),
        ["M2", "M2.2", "M2.3"],
        "sent again after a redelivery"
    );
}

#[tokio::test]
async fn a_permanent_transport_failure_goes_to_the_dead_letters_at_once() {
    let phone = Phone::new(vec![Some(SendError::Permanent(
        "131026: recipient is not a WhatsApp user".into(),
    ))]);
    let rig = rig(phone.clone());
    let env = Envelope::new("test", Payload::Outbound(out("15554442222", "M3", "hi")));
    rig.bus
        .publisher()
        .publish(Publish::ordered(
            Stream::Outbound,
            env,
            "webchat:15554442222",
        ))
        .await
        .unwrap();
    let consumer = rig.bus.consumer(Stream::Outbound, rig.deliverer.clone());
    consumer.process_available().await.unwrap();
    assert_eq!(
        *phone.attempts.lock().unwrap(),
        1,
        "a permanent failure is not retried"
    );
    let dead = rig.bus.dlq().list(Stream::Outbound, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("not a WhatsApp user"),
        "{}",
        dead[0].reason
    );
}

#[tokio::test]
async fn delivery_receipts_are_recorded_once_per_status() {
    let phone = Phone::new(Vec::new());
    let rig = rig(phone.clone());
    rig.deliverer
        .handle(delivery(out("15554443333", "M4", "hello")))
        .await
        .unwrap();
    let receipts = gateway::receipts::Receipts::new(&rig.bus);
    use gateway::transport::ReceiptStatus::*;
    assert!(
        receipts
            .receipt(TransportKind::Webchat, "wamid.M4", Delivered)
            .await
            .unwrap()
    );
    assert!(
        !receipts
            .receipt(TransportKind::Webchat, "wamid.M4", Delivered)
            .await
            .unwrap()
    );
    assert!(
        receipts
            .receipt(TransportKind::Webchat, "wamid.M4", Read)
            .await
            .unwrap()
    );
    assert!(
        !receipts
            .receipt(TransportKind::Webchat, "wamid.unknown", Failed)
            .await
            .unwrap()
    );
    let mut got = receipts.receipts_of("M4").await.unwrap();
    got.sort();
    assert_eq!(got, ["delivered", "read"]);
}
