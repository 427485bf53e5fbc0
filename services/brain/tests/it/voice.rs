//! Voice notes through the whole back end: brain → transcriber (real ffmpeg, fake Whisper) →
//! brain → a reply, with a progress notice first.

use shared::fake_whisper::{Answer, FakeWhisper};
use shared::proto::{MediaRef, inbound, outbound, usage_record};

use crate::rig::Rig;

const USER: &str = "+15551239999";

async fn send_voice(rig: &Rig, audio: &[u8]) -> String {
    send_voice_from(rig, USER, audio).await
}

/// Keeps `audio` in the media store, as the gateway would, and publishes a voice note of it
/// from `phone`; returns its id.
async fn send_voice_from(rig: &Rig, phone: &str, audio: &[u8]) -> String {
    let key = format!("{{{}}}:media:{}", rig.prefix, blake3::hash(audio).to_hex());
    let mut c = rig.bus.connection();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(audio)
        .query_async(&mut c)
        .await
        .unwrap();
    let id = shared::ids::new_id();
    let media = MediaRef {
        key,
        mime_type: "audio/ogg".into(),
        size_bytes: audio.len() as u64,
        sha256: String::new(),
    };
    rig.send(phone, &id, inbound::Kind::Voice, "", Some(media))
        .await;
    id
}

#[tokio::test]
async fn a_voice_note_is_acknowledged_transcribed_and_answered() {
    let whisper = FakeWhisper::start(
        vec![
            Answer::Ok("When do you open tomorrow?"),
            Answer::Status(400),
        ],
        None,
    );
    let mut rig = Rig::new(&[("ACCESS_MODE", "open"), ("ECHO_TRANSCRIPT", "true")]).await;
    let _brain = rig.spawn().await;
    let _transcriber = rig.spawn_transcriber(&whisper.base_url).await;
    let audio = shared::testing::voice_note(2);

    let id = send_voice(&rig, &audio).await;
    let r = rig.replies_n(&id, 2).await;
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0].kind(), outbound::Kind::Notice);
    assert!(r[0].text.contains("Listening"), "{}", r[0].text);
    assert_eq!(r[1].kind(), outbound::Kind::Reply);
    assert!(
        r[1].text.contains("\"When do you open tomorrow?\""),
        "echo: {}",
        r[1].text
    );
    assert!(
        r[1].text.ends_with("You said: When do you open tomorrow?"),
        "{}",
        r[1].text
    );
    assert_eq!(rig.fake.requests().len(), 1);
    let usage = rig.usage().await;
    let ops: Vec<_> = usage.iter().map(|u| u.operation()).collect();
    assert!(
        ops.contains(&usage_record::Operation::Transcription),
        "{ops:?}"
    );
    assert!(ops.contains(&usage_record::Operation::Chat), "{ops:?}");

    // Whisper refuses the next one: the customer is asked to type.
    let id2 = send_voice(&rig, &audio).await;
    let r = rig.replies_n(&id2, 2).await;
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r[1].text.contains("type your question"), "{}", r[1].text);
    assert_eq!(
        rig.fake.requests().len(),
        1,
        "no model call for a failed transcription"
    );

    // The console's log: each voice note once, in order, with its transcript filled in when it
    // came back (empty when it could not be transcribed), then the bot's notice and answers.
    let db = shared::db::Db::connect_lazy(&shared::config::Dsn::new(&rig.db.url)).unwrap();
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT direction, kind, author, content FROM conversation_log ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    let shape: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(d, k, a, _)| (d.as_str(), k.as_str(), a.as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            ("in", "voice", "customer"),
            ("out", "text", "bot"),
            ("out", "text", "model"),
            ("in", "voice", "customer"),
            ("out", "text", "bot"),
            ("out", "text", "bot"),
        ]
    );
    assert_eq!(rows[0].3, "When do you open tomorrow?");
    assert_eq!(rows[3].3, "");
}

#[tokio::test]
async fn a_voice_note_joins_the_burst_it_was_sent_in() {
    let whisper = FakeWhisper::start(vec![Answer::Ok("the blue ones in size 38")], None);
    let mut rig = Rig::new(&[("ACCESS_MODE", "open"), ("BURST_WINDOW_MS", "700")]).await;
    let _brain = rig.spawn().await;
    let _transcriber = rig.spawn_transcriber(&whisper.base_url).await;
    let audio = shared::testing::voice_note(1);
    let hi = rig.text(USER, "hi").await;
    let voice = send_voice(&rig, &audio).await;
    let thanks = rig.text(USER, "thanks!").await;
    let out = rig.replies_to(&thanks).await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].also_answers, [hi.clone(), voice.clone()]);
    let reqs = rig.fake.requests();
    assert_eq!(reqs.len(), 1, "one model call for the burst");
    assert_eq!(
        shared::fake_chat::last_user_text(&reqs[0]),
        "hi\n[voice] the blue ones in size 38\nthanks!"
    );
    // The voice note got its progress notice, never an answer of its own.
    let to_voice = rig.replies_to_now(&voice).await;
    assert!(
        to_voice.iter().all(|o| o.kind() == outbound::Kind::Notice),
        "{to_voice:?}"
    );
    assert!(rig.replies_to_now(&hi).await.is_empty());
}

/// Publishes the transcriber's answer for voice note `id`, as the transcriber would.
async fn transcript_back(rig: &Rig, id: &str, text: &str) {
    let t = shared::proto::Transcript {
        message_id: id.to_owned(),
        outcome: shared::proto::transcript::Outcome::Ok as i32,
        text: text.to_owned(),
        ..Default::default()
    };
    rig.bus
        .publisher()
        .publish(shared::bus::Publish::new(
            shared::bus::Stream::Transcripts,
            shared::proto::Envelope::new("test", shared::proto::Payload::Transcript(t)),
        ))
        .await
        .unwrap();
}

/// A voice note from `phone` that the brain took ("Listening…") and is waiting to hear back on.
async fn voice_waiting(rig: &Rig, phone: &str) -> String {
    let id = send_voice_from(rig, phone, &shared::testing::voice_note(1)).await;
    let r = rig.replies_n(&id, 1).await;
    assert!(r[0].text.contains("Listening"), "{r:?}");
    id
}

/// A transcript is a text that arrived late: it goes through the same rules as a typed one.
/// What changed while the voice note was being transcribed — STOP, a request for a person, the
/// owner answering from the phone — holds for its transcript; and what a voice note says is
/// never a command or STOP.
#[tokio::test]
async fn a_transcript_goes_through_the_rules_that_hold_when_it_comes_back() {
    let mut rig = Rig::new(&[("ACCESS_MODE", "open")]).await;
    let _brain = rig.spawn().await;

    // STOP while the note was being transcribed: nothing more, not even its answer.
    let stopper = "+15551230001";
    let voice = voice_waiting(&rig, stopper).await;
    let stop = rig.text(stopper, "STOP").await;
    assert!(!rig.reply(&stop).await.is_empty(), "STOP is confirmed");
    transcript_back(&rig, &voice, "When do you open tomorrow?").await;

    // Asked for a person meanwhile: the person answers, not the bot.
    let asker = "+15551230002";
    let voice2 = voice_waiting(&rig, asker).await;
    let human = rig.text(asker, "I want to talk to a human").await;
    assert_eq!(rig.replies_to(&human).await.len(), 1);
    transcript_back(&rig, &voice2, "Where is my order?").await;

    // The owner answered from the business's phone meanwhile: the bot keeps quiet.
    let paused = "+15551230003";
    let voice3 = voice_waiting(&rig, paused).await;
    let owner = rig
        .owner_wrote(paused, "I'll call you in five minutes")
        .await;
    rig.assert_silent(&owner).await;
    transcript_back(&rig, &voice3, "Do you deliver?").await;

    // Said, not typed: "stop" and "!help" are words to answer, not STOP or a command.
    let speaker = "+15551230004";
    let voice4 = voice_waiting(&rig, speaker).await;
    transcript_back(&rig, &voice4, "stop").await;
    let voice5 = voice_waiting(&rig, speaker).await;
    transcript_back(&rig, &voice5, "!help").await;

    let answered = rig.replies_n(&voice5, 2).await;
    assert_eq!(answered.len(), 2, "{answered:?}");
    assert_eq!(answered[1].kind(), outbound::Kind::Reply);
    assert!(
        answered[1].text.ends_with("You said: !help"),
        "{:?}",
        answered[1]
    );
    let r4 = rig.replies_n(&voice4, 2).await;
    assert!(r4[1].text.ends_with("You said: stop"), "{r4:?}");
    // Every transcript was taken; the first three got nothing but their "Listening…".
    rig.idle(shared::bus::Stream::Transcripts).await;
    for v in [&voice, &voice2, &voice3] {
        let r = rig.replies_to_now(v).await;
        assert_eq!(r.len(), 1, "{v}: {r:?}");
    }
    let asked: Vec<String> = rig.fake.requests().iter().map(|r| r.to_string()).collect();
    assert_eq!(
        asked.len(),
        2,
        "only the two spoken questions reach the model"
    );
    for unanswered in ["When do you open", "Where is my order", "Do you deliver"] {
        assert!(
            asked.iter().all(|r| !r.contains(unanswered)),
            "{unanswered:?} reached the model"
        );
    }
}

#[tokio::test]
async fn without_a_model_a_voice_note_goes_to_a_person_once_and_then_waits_for_them() {
    let mut rig = Rig::new(&[
        ("ACCESS_MODE", "open"),
        ("OPENAI_BASE_URL", ""),
        ("OPENAI_API_KEY", ""),
    ])
    .await;
    let _p = rig.spawn().await;
    let audio = b"OggS not really audio".to_vec();
    let first = send_voice(&rig, &audio).await;
    let passed = rig.reply(&first).await;
    assert!(passed.contains("passed it to a person"), "{passed}");
    let alerts = |all: Vec<shared::proto::Outbound>| {
        all.into_iter()
            .filter(|o| o.kind() == outbound::Kind::Alert)
            .map(|o| o.text)
            .collect::<Vec<_>>()
    };
    let sent = shared::testing::eventually(
        "the admins' alert",
        std::time::Duration::from_secs(5),
        async || {
            let a = alerts(rig.outbound().await);
            (!a.is_empty()).then_some(a)
        },
    )
    .await;
    assert!(sent[0].contains("[voice note]"), "{sent:?}");
    // A second voice note while the person has it: remembered, not answered, no new alert.
    let second = send_voice(&rig, b"OggS another").await;
    rig.assert_silent(&second).await;
    assert_eq!(alerts(rig.outbound().await).len(), 1);
}
