//! What the brain tells the owner's tools (`EVENTS_WEBHOOK_URL`): the events it publishes on
//! the events stream for the ledger to deliver, with the commit of each message.

use std::time::Duration;

use shared::bus::Stream;
use shared::proto::{Envelope, Payload};
use shared::testing::wait_for;

use crate::rig::{ADMIN, Rig};

const CUSTOMER: &str = "+15551260001";

/// (type, data) of every event on the stream.
async fn events(rig: &Rig) -> Vec<(String, serde_json::Value)> {
    shared::testing::read_envelopes(&rig.bus, Stream::Events)
        .await
        .into_iter()
        .filter_map(|e: Envelope| match e.payload {
            Some(Payload::OwnerEvent(o)) => {
                Some((o.r#type, serde_json::from_str(&o.data_json).unwrap()))
            }
            _ => None,
        })
        .collect()
}

async fn events_until(rig: &Rig, n: usize) -> Vec<(String, serde_json::Value)> {
    wait_for(Duration::from_secs(10), async || {
        let e = events(rig).await;
        (e.len() >= n).then_some(e)
    })
    .await
    .unwrap_or_else(|| panic!("fewer than {n} events"))
}

#[tokio::test]
async fn messages_and_a_handoff_are_told_without_their_text_unless_asked() {
    let mut rig = Rig::new(&[
        ("ACCESS_MODE", "open"),
        ("EVENTS_WEBHOOK_URL", "http://127.0.0.1:9/events"),
        (
            "EVENTS_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
    ])
    .await;
    let _p = rig.spawn().await;
    let hello = rig.text(CUSTOMER, "Hello there").await;
    rig.reply(&hello).await;
    let ask = rig.text(CUSTOMER, "Can I talk to a HUMAN please?").await;
    rig.reply(&ask).await;
    let answer = rig
        .text(ADMIN, &format!("!reply {CUSTOMER} Your parcel left today"))
        .await;
    rig.reply(&answer).await;
    let resume = rig.text(ADMIN, &format!("!resume {CUSTOMER}")).await;
    rig.reply(&resume).await;
    let got = events_until(&rig, 7).await;
    let kinds: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "message.in",
            "message.out",
            "message.in",
            "message.out",
            "handoff.opened",
            "message.out",
            "handoff.closed"
        ],
        "an admin's command is not a customer's message"
    );
    let contact = got[0].1["contact"].as_str().unwrap().to_owned();
    assert!(got.iter().all(|(_, d)| d["contact"] == contact.as_str()));
    assert!(got.iter().all(|(_, d)| d["schema"] == 1));
    assert_eq!(got[0].1["message_id"], hello.as_str());
    assert_eq!(got[0].1["phone"], CUSTOMER);
    assert_eq!(got[1].1["in_reply_to"], hello.as_str());
    assert_eq!(got[1].1["author"], "model");
    assert!(got.iter().all(|(_, d)| d["text"].is_null()), "{got:?}");
    assert_eq!(got[4].1["reason"], "asked");
    assert!(got[4].1["reference"].as_str().unwrap().starts_with("H-"));
    assert_eq!(got[5].1["author"], "person");
    assert_eq!(got[6].1["how"], "resumed");

    // With EVENTS_INCLUDE_TEXT the words go too.
    rig.set_env("EVENTS_INCLUDE_TEXT", "true");
    drop(_p);
    let _p = rig.spawn().await;
    let again = rig.text(CUSTOMER, "Thanks a lot").await;
    rig.reply(&again).await;
    let got = events_until(&rig, 9).await;
    assert_eq!(got[7].1["text"], "Thanks a lot");
    assert!(got[8].1["text"].as_str().is_some_and(|t| !t.is_empty()));
}
