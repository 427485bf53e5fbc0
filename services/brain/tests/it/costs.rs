//! What web chat visitors may cost and how loud handoffs may get: one daily allowance shared by
//! every visitor (tokens, and Whisper seconds reserved before the call), WhatsApp customers
//! unaffected; `WEBCHAT_VISITORS=off`; one alert per waiting contact and a digest past
//! `ALERT_DIGEST_AFTER`.

use shared::fake_whisper::{Answer, FakeWhisper};
use shared::proto::{Identity, MediaRef, Outbound, identity, inbound, outbound};

use crate::handoff::outbound_until;
use crate::rig::{ADMIN, Rig, metric};

const CUSTOMER: &str = "+15551260001";
const VISITOR_BUDGET: &str = "Our chat assistant has answered all it can for today";

/// A web chat visitor's identity.
fn visitor(id: &str) -> Identity {
    Identity {
        kind: identity::Kind::Webchat as i32,
        value: id.to_owned(),
    }
}

/// Stores `audio` as the gateway would and sends it as a voice note from `who`; its id.
async fn voice_from(rig: &Rig, who: Identity, audio: &[u8]) -> String {
    let key = format!("{{{}}}:media:{}", rig.prefix, blake3::hash(audio).to_hex());
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(audio)
        .query_async(&mut rig.bus.connection())
        .await
        .unwrap();
    let media = MediaRef {
        key,
        mime_type: "audio/ogg".into(),
        size_bytes: audio.len() as u64,
        sha256: String::new(),
    };
    let id = shared::ids::new_id();
    let chat = who.value.trim_start_matches('+').to_owned();
    rig.send_as(who, &chat, &id, inbound::Kind::Voice, "", Some(media))
        .await;
    id
}

/// The visitors' tokens counted today.
async fn visitor_tokens(rig: &Rig) -> u64 {
    let day = shared::usage::Days::utc().day_of(shared::ids::now_ms());
    let used: Option<u64> = redis::cmd("GET")
        .arg(format!("{{{}}}:visitors:tokens:{day}", rig.prefix))
        .query_async(&mut rig.bus.connection())
        .await
        .unwrap();
    used.unwrap_or(0)
}

#[tokio::test]
async fn visitors_share_one_daily_allowance_and_whatsapp_customers_are_still_answered() {
    // Each fake answer uses 120 tokens; a call reserves its prompt's bytes and MAX_TOKENS first.
    const CAP: u64 = 4_000;
    let mut rig = Rig::new(&[
        ("ACCESS_MODE", "open"),
        ("MAX_TOKENS", "100"),
        ("VISITOR_DAILY_TOKENS", "4000"),
    ])
    .await;
    let _brain = rig.spawn().await;

    // New visitors, one after another, each answered until the shared allowance is spent.
    let mut answered = 0;
    loop {
        let id = rig
            .visitor_text(&format!("wc_visitor_{answered}"), "Do you ship abroad?")
            .await;
        let r = rig.replies_to(&id).await;
        assert_eq!(r.len(), 1, "{r:?}");
        if r[0].text.starts_with(VISITOR_BUDGET) {
            assert_eq!(r[0].kind(), outbound::Kind::Notice);
            break;
        }
        assert!(
            r[0].text.ends_with("You said: Do you ship abroad?"),
            "{}",
            r[0].text
        );
        answered += 1;
        assert!(answered < 40, "the allowance is never spent");
    }
    assert!(answered >= 1, "no visitor was answered");
    assert_eq!(rig.fake.requests().len(), answered);
    assert_eq!(visitor_tokens(&rig).await, 120 * answered as u64);
    assert!(visitor_tokens(&rig).await <= CAP);

    // A new visitor starts no allowance of its own: the shared one is spent.
    for v in ["wc_visitor_late", "wc_visitor_later"] {
        let id = rig.visitor_text(v, "Do you ship abroad?").await;
        let r = rig.replies_to(&id).await;
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].text.starts_with(VISITOR_BUDGET), "{v}: {}", r[0].text);
    }
    assert_eq!(
        rig.fake.requests().len(),
        answered,
        "no model call once spent"
    );
    // Spent visitors are no handoff: no admin hears of them.
    assert!(
        rig.outbound()
            .await
            .iter()
            .all(|o| o.kind() != outbound::Kind::Alert)
    );

    // A WhatsApp customer is served as ever.
    let id = rig.text(CUSTOMER, "Are you open today?").await;
    assert!(
        rig.reply(&id)
            .await
            .ends_with("You said: Are you open today?")
    );
    assert_eq!(rig.fake.requests().len(), answered + 1);
}

#[tokio::test]
async fn visitors_asking_at_once_never_pass_the_shared_allowance() {
    // 40 visitors at once against slow answers of 120 tokens: checked first and counted after,
    // every call in flight would pass the check and the 40 would spend 4,800.
    const CAP: u64 = 3_050;
    let mut rig = Rig::new(&[
        ("ACCESS_MODE", "open"),
        ("MAX_TOKENS", "100"),
        ("VISITOR_DAILY_TOKENS", "3050"),
    ])
    .await;
    rig.fake.otherwise(shared::fake_chat::Reply::Slow(
        std::time::Duration::from_millis(400),
        "We ship worldwide.".into(),
    ));
    let _brain = rig.spawn().await;
    let mut ids = Vec::new();
    for n in 0..40 {
        ids.push(
            rig.visitor_text(&format!("wc_at_once_{n}"), "Do you ship abroad?")
                .await,
        );
    }
    let mut answered = 0;
    for id in &ids {
        let r = rig.replies_to(id).await;
        assert_eq!(r.len(), 1, "{r:?}");
        if !r[0].text.starts_with(VISITOR_BUDGET) {
            answered += 1;
        }
    }
    let calls = rig.fake.requests().len();
    assert!(answered >= 1, "no visitor was answered");
    assert_eq!(calls, answered);
    // Settled to what the calls used, and never past the cap.
    let used = visitor_tokens(&rig).await;
    assert_eq!(used, 120 * calls as u64);
    assert!(used <= CAP, "{calls} calls used {used} tokens of {CAP}");
}

/// Waits until the ledger has stored `n` usage records and kept the budget mark after the
/// last (or 10 s passed); whether today is marked over budget.
async fn over_budget_after(rig: &Rig, n: i64) -> bool {
    let db = shared::db::Db::connect_lazy(&shared::config::Dsn::new(&rig.db.url)).unwrap();
    let day = shared::usage::Days::utc().day_of(shared::ids::now_ms());
    let mut over = false;
    shared::testing::wait_for(std::time::Duration::from_secs(10), async || {
        let stored = shared::usage::totals(&db, &day, &day)
            .await
            .unwrap()
            .records;
        over = shared::usage::is_over_budget(&rig.bus, &day).await.unwrap();
        // The mark is kept before the record is acknowledged: over, or all acknowledged.
        let usage = rig.bus.stats(shared::bus::Stream::Usage).await.unwrap();
        let idle = usage.pending == 0 && usage.lag == Some(0);
        (stored >= n && (over || idle)).then_some(())
    })
    .await;
    over
}

#[tokio::test]
async fn the_default_daily_budget_stops_paid_calls_once_spent_and_0_never_does() {
    // gpt-4o at $25,000 per 1M prompt tokens: each fake answer (100 prompt tokens) costs $2.50,
    // so two spend the default $5.
    let dir = shared::testing::TempDir::new("prices");
    let prices = dir.path().join("prices.toml");
    std::fs::write(&prices, "[models.\"gpt-4o\"]\ninput_per_mtok = 25000\n").unwrap();
    let prices = prices.display().to_string();
    for (budget, capped) in [(None, true), (Some("0"), false)] {
        let mut rig = Rig::new(&[("ACCESS_MODE", "open")]).await;
        let mut ledger_env = vec![("PRICES_FILE", prices.as_str())];
        ledger_env.extend(budget.map(|b| ("DAILY_BUDGET_USD", b)));
        let _ledger = rig.spawn_ledger(&ledger_env).await;
        let _brain = rig.spawn().await;
        for n in 0..2 {
            let id = rig.text(CUSTOMER, &format!("question {n}")).await;
            let reply = rig.reply(&id).await;
            assert!(reply.ends_with(&format!("question {n}")), "{reply}");
        }
        assert_eq!(
            over_budget_after(&rig, 2).await,
            capped,
            "budget {budget:?}"
        );
        let id = rig.text(CUSTOMER, "question 2").await;
        let r = rig.replies_to(&id).await;
        if capped {
            assert_eq!(r[0].text, "We'll get back to you shortly.", "{r:?}");
            assert_eq!(rig.fake.requests().len(), 2, "a paid call past the budget");
        } else {
            assert!(r[0].text.ends_with("question 2"), "{r:?}");
            assert_eq!(rig.fake.requests().len(), 3);
        }
    }
}

#[tokio::test]
async fn a_visitor_voice_note_over_the_audio_left_is_not_sent_to_whisper() {
    let whisper = FakeWhisper::start(Vec::new(), Some(Answer::Ok("Do you deliver?")));
    let mut rig = Rig::new(&[
        ("ACCESS_MODE", "open"),
        ("VISITOR_DAILY_AUDIO_SECONDS", "3"),
    ])
    .await;
    let _brain = rig.spawn().await;
    let _transcriber = rig.spawn_transcriber(&whisper.base_url).await;
    let audio = shared::testing::voice_note(2);

    // The answer to a voice note from `who`, after its "Listening…" notice.
    let answer = async |who: Identity| {
        let id = voice_from(&rig, who, &audio).await;
        let r = rig.replies_n(&id, 2).await;
        assert_eq!(r.len(), 2, "{r:?}");
        r[1].text.clone()
    };
    const HEARD: &str = "You said: Do you deliver?";

    // 2 s of the visitors' 3: transcribed and answered.
    assert!(answer(visitor("wc_voice_one")).await.ends_with(HEARD));
    assert_eq!(whisper.seen().len(), 1);

    // Another visitor's 2 s would make 4: told, and Whisper never hears it.
    let told = answer(visitor("wc_voice_two")).await;
    assert!(told.starts_with(VISITOR_BUDGET), "{told}");
    assert_eq!(whisper.seen().len(), 1, "the note reached Whisper");

    // A WhatsApp customer's note is transcribed as ever.
    let customer = Identity {
        kind: identity::Kind::Phone as i32,
        value: CUSTOMER.to_owned(),
    };
    assert!(answer(customer).await.ends_with(HEARD));
    assert_eq!(whisper.seen().len(), 2);
}

#[tokio::test]
async fn with_web_chat_visitors_off_a_visitor_is_refused_and_costs_nothing() {
    let mut rig = Rig::new(&[("ACCESS_MODE", "open"), ("WEBCHAT_VISITORS", "off")]).await;
    let _brain = rig.spawn().await;
    let id = rig.visitor_text("wc_visitor_off", "Hi!").await;
    assert_eq!(
        rig.reply(&id).await,
        "Sorry, this assistant is only available to invited customers."
    );
    // Once a day; silence after that.
    let id = rig.visitor_text("wc_visitor_off", "Hello??").await;
    rig.assert_silent(&id).await;
    assert!(rig.fake.requests().is_empty());
    let id = rig.text(CUSTOMER, "Hi").await;
    assert!(rig.reply(&id).await.ends_with("You said: Hi"));
}

/// The admin's alerts once there are `n` (or after 10 s).
async fn alerts_to_admin(rig: &Rig, n: usize) -> Vec<Outbound> {
    outbound_until(rig, n, |o| {
        o.kind() == outbound::Kind::Alert && o.identities[0].value == ADMIN
    })
    .await
}

#[tokio::test]
async fn handoff_alerts_come_once_per_waiting_contact_and_past_the_limit_as_one_digest() {
    let mut rig = Rig::new(&[
        ("ACCESS_MODE", "open"),
        ("ALERT_DIGEST_AFTER", "2"),
        // 3 s windows (fractions of a minute are accepted).
        ("ALERT_DIGEST_MINUTES", "0.05"),
    ])
    .await;
    let brain = rig.spawn().await;

    // Five visitors ask for a person within the window; the first asks twice.
    let mut asked = Vec::new();
    for n in 0..5 {
        let id = rig
            .visitor_text(&format!("wc_asks_{n}"), "I want to talk to a human")
            .await;
        assert_eq!(rig.replies_to(&id).await.len(), 1);
        asked.push(id);
    }
    let twice = rig.visitor_text("wc_asks_0", "a human please!").await;
    rig.assert_silent(&twice).await;

    // Two alerts one by one, then one digest of the three held.
    let alerts = alerts_to_admin(&rig, 3).await;
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    assert!(alerts[0].text.starts_with("🙋 H-"), "{}", alerts[0].text);
    assert!(alerts[1].text.starts_with("🙋 H-"), "{}", alerts[1].text);
    assert!(
        alerts[2]
            .text
            .starts_with("🙋 3 more web chat conversations went to a person"),
        "{}",
        alerts[2].text
    );
    assert_eq!(metric(&brain, "brain_handoff_alerts_held_total").await, 3.0);
    assert_eq!(metric(&brain, "brain_handoff_digests_total").await, 1.0);
    assert_eq!(
        metric(&brain, "brain_handoffs_total{reason=\"asked\"}").await,
        5.0
    );

    // The digest came when the window was over: the next handoff alerts on its own again.
    let id = rig.visitor_text("wc_asks_late", "a person please").await;
    assert_eq!(rig.replies_to(&id).await.len(), 1);
    let alerts = alerts_to_admin(&rig, 4).await;
    assert_eq!(alerts.len(), 4, "{alerts:?}");
    assert!(alerts[3].text.starts_with("🙋 H-"), "{}", alerts[3].text);
}

#[tokio::test]
async fn visitors_asking_for_a_person_never_hold_back_a_whatsapp_customers_alert() {
    let mut rig = Rig::new(&[
        ("ACCESS_MODE", "open"),
        ("ALERT_DIGEST_AFTER", "1"),
        ("ALERT_DIGEST_MINUTES", "10"),
    ])
    .await;
    let brain = rig.spawn().await;

    // Visitors flood the window: one alert, the rest held.
    for n in 0..4 {
        let id = rig
            .visitor_text(&format!("wc_flood_{n}"), "I want to talk to a human")
            .await;
        assert_eq!(rig.replies_to(&id).await.len(), 1);
    }
    assert_eq!(metric(&brain, "brain_handoff_alerts_held_total").await, 3.0);

    // A WhatsApp customer asking for a person within the same minutes is alerted on their own.
    let id = rig.text(CUSTOMER, "I want to talk to a human").await;
    assert_eq!(rig.replies_to(&id).await.len(), 1);
    let alerts = alerts_to_admin(&rig, 2).await;
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(alerts[1].text.starts_with("🙋 H-"), "{}", alerts[1].text);
    assert!(alerts[1].text.contains("5551260001"), "{}", alerts[1].text);
    assert_eq!(metric(&brain, "brain_handoff_alerts_held_total").await, 3.0);
}
