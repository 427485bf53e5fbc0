//! Handing conversations to a person: every trigger, the silence while a person has it, the
//! admins' commands, the timeout, and the mode without a model.

use std::time::Duration;

use shared::fake_chat::Reply;
use shared::proto::{Outbound, outbound};
use shared::testing::{eventually, wait_for};

use crate::rig::{ADMIN, Rig, metric};

const CUSTOMER: &str = "+15551250001";
const NOTICE: &str =
    "Thanks — I've passed your message to our team: a person will reply here soon.";

/// Outbound messages that `keep` picks, once there are `n` (or after 10 s).
pub(crate) async fn outbound_until(
    rig: &Rig,
    n: usize,
    keep: impl Fn(&Outbound) -> bool,
) -> Vec<Outbound> {
    let picked = async || -> Vec<Outbound> {
        rig.outbound()
            .await
            .into_iter()
            .filter(|o| keep(o))
            .collect()
    };
    let enough = wait_for(Duration::from_secs(10), async || {
        let a = picked().await;
        (a.len() >= n).then_some(a)
    })
    .await;
    match enough {
        Some(a) => a,
        None => picked().await,
    }
}

/// Outbound alerts to the admin, once there are `n`.
async fn admin_alerts(rig: &Rig, n: usize) -> Vec<Outbound> {
    outbound_until(rig, n, |o| o.kind() == outbound::Kind::Alert).await
}

/// Outbound messages to the customer that answer nothing (a person's, a timeout's).
async fn unprompted(rig: &Rig, n: usize) -> Vec<Outbound> {
    outbound_until(rig, n, |o| {
        o.in_reply_to.is_empty() && o.kind() != outbound::Kind::Alert
    })
    .await
}

/// A knowledge base of one FAQ entry (the folder, kept while it is used, and its path).
fn opening_hours_faq() -> (shared::testing::TempDir, String) {
    let kb = shared::testing::TempDir::new("kb");
    std::fs::write(
        kb.path().join("faq.md"),
        "## When are you open?\nAlso: opening hours\n\nMon–Fri 9–18.\n",
    )
    .unwrap();
    let dir = kb.path().display().to_string();
    (kb, dir)
}

#[tokio::test]
async fn asking_for_a_person_hands_off_silences_the_bot_until_resume_and_a_person_replies() {
    let hooks = shared::testing::WebhookSink::start();
    let mut rig = Rig::new(&[("ACCESS_MODE", "open"), ("ALERT_WEBHOOK_URL", &hooks.url)]).await;
    let p = rig.spawn().await;
    let first = rig.text(CUSTOMER, "My order 1234 never arrived").await;
    rig.reply(&first).await;
    let ask = rig.text(CUSTOMER, "Can I talk to a HUMAN please?").await;
    assert_eq!(rig.reply(&ask).await, NOTICE);
    // The admin hears of it with the contact, the last messages and a way to answer.
    let alert = admin_alerts(&rig, 1).await.remove(0);
    assert_eq!(alert.identities[0].value, ADMIN);
    let text = &alert.text;
    assert!(text.contains(CUSTOMER), "{text}");
    assert!(text.contains("asked for a person"), "{text}");
    assert!(text.contains("My order 1234 never arrived"), "{text}");
    // The customer's conversation, as the console shows it, holds what the customer and the
    // bot said — never the alert the admin got.
    let logged: Vec<(String, String)> =
        sqlx::query_as("SELECT direction, content FROM conversation_log ORDER BY id")
            .fetch_all(rig.db.db.pool())
            .await
            .unwrap();
    assert!(
        logged
            .iter()
            .all(|(_, c)| !c.contains("asked for a person")),
        "{logged:?}"
    );
    assert!(
        logged.iter().any(|(d, c)| d == "out" && c == NOTICE),
        "{logged:?}"
    );
    let reference = text
        .split_whitespace()
        .find(|w| w.starts_with("H-"))
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    // The webhook hears the reason and the reference, never the text or the number.
    let hook = eventually("the webhook", Duration::from_secs(5), async || {
        hooks.got().into_iter().next()
    })
    .await;
    assert_eq!(hook["switchboard"]["kind"], "handoff");
    assert_eq!(hook["switchboard"]["reason"], "asked");
    assert_eq!(hook["switchboard"]["reference"], reference.as_str());
    let raw = hook.to_string();
    assert!(
        !raw.contains("5551250001") && !raw.contains("1234"),
        "{raw}"
    );
    assert_eq!(
        metric(&p, "brain_handoffs_total{reason=\"asked\"}").await,
        1.0
    );

    // While a person has it, the bot says nothing.
    let calls = rig.fake.requests().len();
    let quiet = rig.text(CUSTOMER, "hello? anyone?").await;
    rig.assert_silent(&quiet).await;
    assert_eq!(rig.fake.requests().len(), calls, "no model call");
    let list = rig.text(ADMIN, "!handoffs").await;
    let listed = rig.reply(&list).await;
    assert!(
        listed.contains(&reference) && listed.contains(CUSTOMER),
        "{listed}"
    );

    // The admin answers as the business, by reference.
    let r = rig
        .text(
            ADMIN,
            &format!(
                "!reply {} It ships tomorrow, sorry!",
                reference.to_lowercase()
            ),
        )
        .await;
    assert!(rig.reply(&r).await.starts_with("Sent to"));
    let sent = unprompted(&rig, 1).await;
    assert_eq!(sent[0].text, "It ships tomorrow, sorry!");
    assert_eq!(sent[0].kind(), outbound::Kind::Reply);
    assert!(sent[0].identities.iter().any(|i| i.value == CUSTOMER));

    // Back to the bot: it answers, and its memory holds what the person said.
    let back = rig.text(ADMIN, &format!("!resume {CUSTOMER}")).await;
    assert!(rig.reply(&back).await.contains("answers"));
    let again = rig.text(CUSTOMER, "thanks, when exactly?").await;
    rig.reply(&again).await;
    let req = rig.fake.requests().pop().unwrap();
    let memory = req["messages"].to_string();
    assert!(memory.contains("It ships tomorrow, sorry!"), "{memory}");
    assert!(memory.contains("hello? anyone?"), "{memory}");
    let none = rig.text(ADMIN, "!handoffs").await;
    assert!(rig.reply(&none).await.starts_with("No conversation"));
}

#[tokio::test]
async fn the_model_hands_off_when_it_cannot_help_or_did_not_know_twice_in_a_row() {
    let mut rig = Rig::new(&[("ACCESS_MODE", "open")]).await;
    let _p = rig.spawn().await;
    rig.fake
        .script([Reply::Text("I'm sorry about that. [[HANDOFF]]".into())]);
    let m = rig
        .text(CUSTOMER, "The box was damaged and I want compensation")
        .await;
    assert_eq!(rig.reply(&m).await, NOTICE);
    assert!(
        admin_alerts(&rig, 1).await[0]
            .text
            .contains("could not help")
    );

    let other = "+15551250002";
    rig.fake.script([
        Reply::Text("I don't know our warranty terms. [[UNSURE]]".into()),
        // A model failure never counts as not knowing.
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(500),
        Reply::Text("I don't have that information. [[UNSURE]]".into()),
    ]);
    let a = rig.text(other, "what is the warranty?").await;
    let first = rig.reply(&a).await;
    assert!(
        first.ends_with("I don't know our warranty terms."),
        "{first}"
    );
    assert!(
        !first.contains("[["),
        "marks never reach the customer: {first}"
    );
    let b = rig.text(other, "and the warranty on boots?").await;
    let failed = rig.reply(&b).await;
    assert!(failed.contains("technical difficulties"), "{failed}");
    let c = rig.text(other, "and on sandals?").await;
    assert_eq!(
        rig.reply(&c).await,
        NOTICE,
        "the second not-knowing in a row"
    );
    let alerts = admin_alerts(&rig, 2).await;
    assert!(
        alerts[1].text.contains("twice in a row"),
        "{}",
        alerts[1].text
    );
}

#[tokio::test]
async fn nobody_answering_in_time_gives_the_conversation_back_with_an_apology() {
    let mut rig = Rig::new(&[("ACCESS_MODE", "open"), ("HANDOFF_TIMEOUT_MIN", "0.02")]).await;
    let p = rig.spawn().await;
    // Asked in Spanish: told in Spanish, and so is the apology when nobody came.
    let ask = rig.text(CUSTOMER, "hablar con alguien, por favor").await;
    assert_eq!(
        rig.reply(&ask).await,
        "Gracias: he pasado tu mensaje a nuestro equipo y una persona te responderá aquí pronto."
    );
    let apology = unprompted(&rig, 1).await;
    assert_eq!(apology.len(), 1, "no timeout notice");
    assert!(
        apology[0].text.contains("nadie del equipo"),
        "{}",
        apology[0].text
    );
    assert_eq!(apology[0].kind(), outbound::Kind::Notice);
    assert_eq!(metric(&p, "brain_handoff_timeouts_total").await, 1.0);
    let m = rig.text(CUSTOMER, "ok, what time do you open?").await;
    assert!(
        rig.reply(&m).await.contains("You said"),
        "the bot answers again"
    );
}

#[tokio::test]
async fn without_a_model_the_knowledge_base_answers_and_the_rest_goes_to_a_person() {
    let (_kb, dir) = opening_hours_faq();
    let mut rig = Rig::new(&[
        ("ACCESS_MODE", "open"),
        ("OPENAI_BASE_URL", ""),
        ("OPENAI_API_KEY", ""),
        ("KNOWLEDGE_DIR", &dir),
    ])
    .await;
    let p = rig.spawn().await;
    let ready = shared::testing::get_json(&format!("{}/readyz", p.http)).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["llm"], "none", "{ready}");
    assert!(p.log_text().contains("mode: no LLM configured"));
    // A greeting is answered kindly, not handed off (it used to be, and the bot then kept
    // quiet for the handoff timeout).
    let hi = rig.text(CUSTOMER, "Hi!").await;
    assert_eq!(
        rig.reply(&hi).await,
        "You're chatting with an automated assistant.\n\nHello! How can I help you today?",
        "no AI wrote it: the disclosure says so"
    );
    let faq = rig.text(CUSTOMER, "what are your opening hours?").await;
    assert!(rig.reply(&faq).await.ends_with("Mon–Fri 9–18."));
    let other = rig.text(CUSTOMER, "do you repair zippers?").await;
    let passed = rig.reply(&other).await;
    assert!(
        passed.contains("person") && !passed.contains("not configured"),
        "{passed}"
    );
    assert!(
        admin_alerts(&rig, 1).await[0]
            .text
            .contains("no AI configured")
    );
    // While a person has it, the knowledge base still answers what it knows; the rest waits
    // for the person, quietly (no second notice, no second alert).
    let more = rig.text(CUSTOMER, "and can you dye leather?").await;
    rig.assert_silent(&more).await;
    let again = rig.text(CUSTOMER, "what are your opening hours?").await;
    assert!(rig.reply(&again).await.ends_with("Mon–Fri 9–18."));
    let thanks = rig.text(CUSTOMER, "thank you!").await;
    assert_eq!(rig.reply(&thanks).await, "You're welcome!");
    assert_eq!(admin_alerts(&rig, 1).await.len(), 1);
    assert!(rig.fake.requests().is_empty());
}

#[tokio::test]
async fn outside_business_hours_the_customer_hears_when_we_open_and_the_bot_keeps_helping() {
    // Open one hour a week, three days from today: closed now.
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    const NAMES: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let today = (shared::ids::now_ms() / 86_400_000 + 3) % 7; // 1970-01-01 was a Thursday
    let open = ((today + 3) % 7) as usize;
    let spec = format!("{} 09:00-10:00", DAYS[open]);
    let mut rig = Rig::new(&[
        ("ACCESS_MODE", "open"),
        ("BUSINESS_HOURS", &spec),
        ("BUSINESS_TIMEZONE", "UTC"),
    ])
    .await;
    let _p = rig.spawn().await;
    let ask = rig.text(CUSTOMER, "I need to speak to someone").await;
    let closed = rig.reply(&ask).await;
    assert!(closed.contains("we're closed"), "{closed}");
    assert!(
        closed.contains(&format!("{} 09:00", NAMES[open])),
        "{closed}"
    );
    assert_eq!(
        admin_alerts(&rig, 1).await.len(),
        1,
        "the admins know already"
    );
    // Meanwhile the bot answers what it can.
    let q = rig.text(CUSTOMER, "do you sell socks?").await;
    assert!(rig.reply(&q).await.contains("You said"));
    // Asking again: the same answer, no second alert.
    let again = rig.text(CUSTOMER, "a person please").await;
    assert!(rig.reply(&again).await.contains("we're closed"));
    // A handler's events go out with its acknowledgement, in one transaction: an alert of this
    // message would be on the stream with its reply.
    let alerts = rig
        .outbound()
        .await
        .into_iter()
        .filter(|o| o.kind() == outbound::Kind::Alert)
        .count();
    assert_eq!(alerts, 1);
    let list = rig.text(ADMIN, "!handoffs").await;
    assert!(rig.reply(&list).await.contains(CUSTOMER));
}

#[tokio::test]
async fn the_owner_answering_from_the_phone_pauses_the_bot_and_is_remembered() {
    let mut rig = Rig::new(&[("ACCESS_MODE", "open")]).await;
    let p = rig.spawn().await;
    let first = rig.text(CUSTOMER, "is the blue jacket in stock?").await;
    rig.reply(&first).await;
    let owner = rig
        .owner_wrote(CUSTOMER, "Hi! Marta here — yes, I kept one aside for you.")
        .await;
    rig.assert_silent(&owner).await;
    assert_eq!(metric(&p, "brain_owner_pauses_total").await, 1.0);
    // The bot does not talk over the owner.
    let calls = rig.fake.requests().len();
    let during = rig.text(CUSTOMER, "great, can I pick it up at 5?").await;
    rig.assert_silent(&during).await;
    assert_eq!(rig.fake.requests().len(), calls);
    // !resume ends the pause; the bot knows what the owner said.
    let back = rig.text(ADMIN, &format!("!resume {CUSTOMER}")).await;
    assert!(rig.reply(&back).await.contains("answers"));
    let after = rig.text(CUSTOMER, "thanks!").await;
    rig.reply(&after).await;
    let memory = rig.fake.requests().pop().unwrap()["messages"].to_string();
    assert!(memory.contains("I kept one aside for you"), "{memory}");
    assert!(memory.contains("pick it up at 5"), "{memory}");
}

#[tokio::test]
async fn conversations_end_after_the_silence_and_are_counted_by_how_they_ended() {
    let (_kb, dir) = opening_hours_faq();
    let mut rig = Rig::new(&[
        ("ACCESS_MODE", "open"),
        ("CONVERSATION_IDLE_MIN", "0.02"),
        ("KNOWLEDGE_DIR", &dir),
        ("LLM_RETRIES", "0"),
    ])
    .await;
    let p = rig.spawn().await;
    let model = rig.text("+15551260001", "do you sell socks?").await;
    rig.reply(&model).await;
    let kb_answer = rig
        .text("+15551260002", "what are your opening hours?")
        .await;
    rig.reply(&kb_answer).await;
    let person = rig.text("+15551260003", "I want a human").await;
    rig.reply(&person).await;
    rig.fake.script([Reply::Status(500)]);
    let failed = rig.text("+15551260004", "hello?").await;
    rig.reply(&failed).await;
    let metric_of = |o: &'static str| {
        let http = p.http.clone();
        async move {
            shared::testing::scrape_metric(
                &http,
                &format!("brain_conversations_total{{outcome=\"{o}\"}}"),
            )
            .await
        }
    };
    let mut got = [0.0; 4];
    let ended = wait_for(Duration::from_secs(10), async || {
        got = [
            metric_of("model").await,
            metric_of("knowledge").await,
            metric_of("handoff_asked").await,
            metric_of("abandoned").await,
        ];
        (got == [1.0, 1.0, 1.0, 1.0]).then_some(())
    })
    .await;
    assert!(ended.is_some(), "{got:?}");
    let s = rig.text(ADMIN, "!stats").await;
    let stats = rig.reply(&s).await;
    assert!(stats.contains("Conversations ended: 4"), "{stats}");
    assert!(stats.contains("1 handoff asked"), "{stats}");
}

#[tokio::test]
async fn a_burst_of_texts_is_answered_once_with_one_model_call() {
    let mut rig = Rig::new(&[("ACCESS_MODE", "open"), ("BURST_WINDOW_MS", "700")]).await;
    let _p = rig.spawn().await;
    let a = rig.text(CUSTOMER, "hi").await;
    let b = rig.text(CUSTOMER, "I ordered shoes").await;
    let c = rig.text(CUSTOMER, "they haven't come").await;
    let reply = rig.reply(&c).await;
    assert!(reply.contains("they haven't come"), "{reply}");
    let out = rig.replies_to_now(&c).await.remove(0);
    assert_eq!(
        out.also_answers,
        [a.clone(), b.clone()],
        "it answers the burst"
    );
    rig.assert_silent(&a).await;
    assert!(rig.replies_to_now(&b).await.is_empty());
    let reqs = rig.fake.requests();
    assert_eq!(reqs.len(), 1, "one model call for the burst");
    let asked = shared::fake_chat::last_user_text(&reqs[0]);
    assert_eq!(asked, "hi\nI ordered shoes\nthey haven't come");
    // Each message is remembered once, the reply after them.
    let next = rig.text(CUSTOMER, "order 1234").await;
    rig.reply(&next).await;
    let req = &rig.fake.requests()[1];
    let users: Vec<&str> = req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(
        users,
        ["hi", "I ordered shoes", "they haven't come", "order 1234"]
    );
    // Another customer's message is not held by this one's burst.
    let other = rig.text("+15551270002", "hello").await;
    rig.reply(&other).await;
}

#[tokio::test]
async fn a_photo_joins_the_burst_and_goes_with_its_answer() {
    let mut rig = Rig::new(&[("ACCESS_MODE", "open"), ("BURST_WINDOW_MS", "700")]).await;
    let _p = rig.spawn().await;
    let media = rig
        .store_png("b0057", b"\x89PNG\r\n\x1a\nburst-photo")
        .await;
    let photo = shared::ids::new_id();
    rig.send(
        CUSTOMER,
        &photo,
        shared::proto::inbound::Kind::Image,
        "",
        Some(media),
    )
    .await;
    let text = rig.text(CUSTOMER, "is this one in stock in size 38?").await;
    let out = rig.replies_to(&text).await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].also_answers, std::slice::from_ref(&photo));
    rig.assert_silent(&photo).await;
    let reqs = rig.fake.requests();
    assert_eq!(reqs.len(), 1, "one call for the photo and the text");
    let parts = reqs[0]["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    let parts = parts.as_array().expect("text and image parts");
    assert!(
        parts
            .iter()
            .any(|p| p["image_url"]["url"].as_str().is_some())
    );
    assert!(
        parts
            .iter()
            .any(|p| p["text"].as_str().is_some_and(|t| t.contains("size 38"))),
        "{parts:?}"
    );
}
