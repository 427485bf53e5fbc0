//! The knowledge base matched by meaning: vectors from an OpenAI-compatible provider (the
//! fake's `/v1/embeddings`, whose vectors know the synonyms the test gives it), computed in
//! the background; a failing or slow provider never blocks startup or an answer.

use std::time::Duration;

use brain::knowledge::{DIRECT, Index};
use shared::fake_chat::Reply;
use shared::testing::eventually;

use crate::rig::{Rig, metric};

const SHOP: &str = "# The shop\n\n\
## What are your opening hours?\nMonday to Saturday, 9:00 to 17:30.\n\n\
## How much does delivery cost?\nUK delivery is £4.50.\n\n\
## Can I return an item?\nWithin 30 days, unworn, with the receipt.\n";

/// Shares no content word with any entry: only its meaning finds the opening hours.
const WORDED_OTHERWISE: &str = "what time do you start serving people?";
const HOURS: &str = "Monday to Saturday, 9:00 to 17:30.";

const READY: &str = "brain_knowledge_vectors_total{result=\"ready\"}";

/// A brain without a chat model, its vectors from the fake provider.
async fn rig(kb: &shared::testing::TempDir) -> Rig {
    let fake_url = shared::fake_chat::FakeChat::start();
    let kb_dir = kb.path().display().to_string();
    let mut rig = Rig::new(&[
        ("ACCESS_MODE", "open"),
        ("OPENAI_BASE_URL", ""),
        ("OPENAI_API_KEY", ""),
        ("KNOWLEDGE_DIR", &kb_dir),
        ("EMBEDDINGS_MODEL", "text-embedding-3-small"),
    ])
    .await;
    rig.set_env("EMBEDDINGS_BASE_URL", &fake_url.base_url);
    rig.fake = fake_url;
    rig.fake.meanings(&[
        &["open", "opening", "hours", "time", "start", "serving"],
        &["delivery", "deliver", "shipping", "post"],
        &["return", "refund", "back"],
    ]);
    rig
}

fn shop_dir() -> shared::testing::TempDir {
    let dir = shared::testing::TempDir::new("knowledge");
    std::fs::write(dir.path().join("shop.md"), SHOP).unwrap();
    dir
}

async fn ready(p: &shared::testing::ServiceProcess, n: f64) {
    eventually(
        "the knowledge base's vectors",
        Duration::from_secs(30),
        async || (metric(p, READY).await >= n).then_some(()),
    )
    .await;
}

#[tokio::test]
async fn a_question_worded_otherwise_is_answered_by_meaning_once_the_vectors_are_ready() {
    // By words alone the question is not sure enough to answer.
    let lexical = Index::build(&[("shop.md".to_owned(), SHOP.to_owned())]);
    assert!(
        lexical
            .faq(WORDED_OTHERWISE)
            .is_none_or(|h| h.confidence < DIRECT),
        "the test needs a question words alone do not answer"
    );
    let kb = shop_dir();
    let mut rig = rig(&kb).await;
    let p = rig.spawn().await;
    ready(&p, 1.0).await;
    let m = rig.text("+15551250001", WORDED_OTHERWISE).await;
    let reply = rig.reply(&m).await;
    assert!(reply.ends_with(HOURS), "{reply}");
    // What was embedded: the 3 phrasings and 3 sections, then the question — nothing else.
    let embedded = rig.fake.embedded();
    assert_eq!(embedded.len(), 7, "{embedded:?}");
    assert_eq!(embedded[6], WORDED_OTHERWISE);
    assert!(embedded.iter().any(|t| t == "What are your opening hours?"));
    // An unrelated question is not answered by meaning either (no model: a person answers).
    let m = rig
        .text("+15551250002", "is the car park free on sundays?")
        .await;
    let reply = rig.reply(&m).await;
    assert!(!reply.contains(HOURS), "{reply}");
}

#[tokio::test]
async fn a_failing_or_slow_provider_never_blocks_startup_or_an_answer() {
    let kb = shop_dir();
    let mut rig = rig(&kb).await;
    rig.fake.embeddings_reply(Some(Reply::Status(500)));
    let p = rig.spawn().await;
    eventually("a failed attempt", Duration::from_secs(10), async || {
        (metric(&p, "brain_knowledge_vectors_total{result=\"failed\"}").await >= 1.0).then_some(())
    })
    .await;
    // Started, and answering by words: the FAQ's own question gets its answer.
    let m = rig
        .text("+15551250003", "What are your opening hours?")
        .await;
    assert!(rig.reply(&m).await.ends_with(HOURS));
    // The provider recovers: the vectors are computed on the next try.
    rig.fake.embeddings_reply(None);
    ready(&p, 1.0).await;
    // Then it hangs: a question waits for its vector at most 2 s, then goes on by words.
    rig.fake
        .embeddings_reply(Some(Reply::Slow(Duration::from_secs(20), String::new())));
    let started = std::time::Instant::now();
    let m = rig
        .text("+15551250004", "What are your opening hours?")
        .await;
    assert!(rig.reply(&m).await.ends_with(HOURS));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "answered by words after the wait: {took:?}"
    );
    assert_eq!(
        metric(
            &p,
            "brain_knowledge_vectors_total{result=\"question_failed\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn only_new_or_changed_texts_are_embedded_again_after_an_edit() {
    let kb = shop_dir();
    let mut rig = rig(&kb).await;
    let p = rig.spawn().await;
    ready(&p, 1.0).await;
    let before = rig.fake.embedded().len();
    assert_eq!(before, 6, "3 phrasings and 3 sections");
    let lexical = Index::build(&[("shop.md".to_owned(), SHOP.to_owned())]);
    assert!(
        lexical
            .faq("how much is shipping?")
            .is_none_or(|h| !h.is_direct()),
        "words alone must not answer it: the answer below comes by meaning"
    );
    std::fs::write(
        kb.path().join("shop.md"),
        SHOP.replace("UK delivery is £4.50.", "UK delivery is £3.95."),
    )
    .unwrap();
    // The answer follows the edit once the changed section's vector is in (each try a new
    // customer: one answered by words alone is handed to a person).
    let mut n = 0;
    eventually(
        "the edited answer, by meaning",
        Duration::from_secs(30),
        async || {
            n += 1;
            let m = rig
                .text(&format!("+1555125010{n}"), "how much is shipping?")
                .await;
            rig.reply(&m)
                .await
                .ends_with("UK delivery is £3.95.")
                .then_some(())
        },
    )
    .await;
    let again: Vec<String> = rig.fake.embedded().split_off(before);
    let texts: Vec<&String> = again
        .iter()
        .filter(|t| *t != "how much is shipping?")
        .collect();
    assert_eq!(texts.len(), 1, "only the changed section: {again:?}");
    assert!(texts[0].contains("£3.95"), "{again:?}");
}

#[tokio::test]
async fn the_local_model_answers_what_words_alone_miss_in_the_example_shop() {
    let Some(model) = shared::testing::minilm_dir() else {
        return;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shop = root.join("examples/shop/knowledge");
    let mut rig = Rig::new(&[
        ("ACCESS_MODE", "open"),
        ("OPENAI_BASE_URL", ""),
        ("OPENAI_API_KEY", ""),
        ("KNOWLEDGE_DIR", shop.to_str().unwrap()),
        ("EMBEDDINGS_MODEL_DIR", model.to_str().unwrap()),
    ])
    .await;
    let p = rig.spawn().await;
    ready(&p, 1.0).await;
    // Asked as customers word it, not as the FAQ does: by words alone neither is answered.
    let cases = [
        (
            "Can I come by on a Saturday morning?",
            "Saturday 10:00–14:00",
        ),
        ("when do you open tomorrow", "Saturday 10:00–14:00"),
    ];
    let lexical = crate::knowledge::shop();
    for (n, (q, answer)) in cases.iter().enumerate() {
        assert!(
            lexical.faq(q).is_none_or(|h| h.confidence < DIRECT),
            "words alone answer {q:?}: pick another"
        );
        let m = rig.text(&format!("+1555125020{n}"), q).await;
        let reply = rig.reply(&m).await;
        assert!(reply.contains(answer), "{q:?}: {reply}");
    }
    // Off-topic questions that share the entry's words are not answered from it.
    let m = rig.text("+15551250210", "What time is it in Spain?").await;
    let reply = rig.reply(&m).await;
    assert!(!reply.contains("Saturday 10:00–14:00"), "{reply}");
}
