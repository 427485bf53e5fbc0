//! The FAQ direct answers of the example knowledge base against its evaluation set
//! (`examples/shop/eval.json`, written before the ranking was tuned): precision and recall,
//! printed, and held above a floor.

use brain::knowledge::{DIRECT, Index};

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn shop() -> Index {
    let dir = root().join("examples/shop/knowledge");
    let mut files = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        files.push((
            p.file_name().unwrap().to_string_lossy().into_owned(),
            std::fs::read_to_string(&p).unwrap(),
        ));
    }
    Index::build(&files)
}

fn eval() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("examples/shop/eval.json")).unwrap())
        .unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[test]
fn the_first_two_paraphrases_share_no_content_word_with_the_entry() {
    let index = shop();
    let mut sharing = Vec::new();
    for e in eval()["entries"].as_array().unwrap() {
        let q = e["question"].as_str().unwrap();
        let entry = index
            .entries()
            .iter()
            .find(|x| x.question == q)
            .unwrap_or_else(|| panic!("no entry {q}"));
        let own: std::collections::HashSet<String> = entry
            .phrasings
            .iter()
            .flat_map(|p| index.words_of(p))
            .flatten()
            .collect();
        for lang in ["match_en", "match_es"] {
            for p in &strings(&e[lang])[..2] {
                let shared: Vec<String> = index
                    .words_of(p)
                    .into_iter()
                    .flatten()
                    .filter(|s| own.contains(s))
                    .collect();
                if !shared.is_empty() {
                    sharing.push(format!("{p:?} shares {shared:?} with {q:?}"));
                }
            }
        }
    }
    assert!(sharing.is_empty(), "{sharing:#?}");
}

/// (correct direct answers, wrong ones, paraphrases, off-topic answered, off-topic)
fn score(index: &Index, threshold: f32) -> (u32, u32, u32, u32, u32) {
    score_in(index, threshold, &["en", "es"])
}

/// [`score`] for the questions in `langs` only.
fn score_in(index: &Index, threshold: f32, langs: &[&str]) -> (u32, u32, u32, u32, u32) {
    let (mut right, mut wrong, mut paraphrases, mut off_answered, mut off) = (0, 0, 0, 0, 0);
    let has = |key: &str| langs.iter().any(|l| key.ends_with(l));
    for e in eval()["entries"].as_array().unwrap() {
        let q = e["question"].as_str().unwrap();
        for lang in ["match_en", "match_es"].into_iter().filter(|k| has(k)) {
            for p in strings(&e[lang]) {
                paraphrases += 1;
                match index.faq(p).filter(|h| h.confidence >= threshold) {
                    Some(h) if h.entry.question == q => right += 1,
                    Some(_) => wrong += 1,
                    None => {}
                }
            }
        }
        for lang in ["off_en", "off_es"].into_iter().filter(|k| has(k)) {
            for p in strings(&e[lang]) {
                off += 1;
                if index.faq(p).is_some_and(|h| h.confidence >= threshold) {
                    off_answered += 1;
                }
            }
        }
    }
    (right, wrong, paraphrases, off_answered, off)
}

#[test]
fn faq_direct_answers_are_precise_and_find_most_paraphrases() {
    let index = shop();
    for t in [0.6, 0.7, DIRECT, 0.9] {
        let (right, wrong, paraphrases, off_answered, off) = score(&index, t);
        let answered = right + wrong + off_answered;
        let precision = f64::from(right) / f64::from(answered.max(1));
        let recall = f64::from(right) / f64::from(paraphrases);
        println!(
            "threshold {t:.2}: precision {precision:.3} ({right} right of {answered} direct answers; {wrong} wrong entry, {off_answered}/{off} off-topic answered), recall {recall:.3} ({right}/{paraphrases})"
        );
    }
    for lang in ["en", "es"] {
        let (right, wrong, paraphrases, off_answered, off) = score_in(&index, DIRECT, &[lang]);
        println!(
            "{lang} at {DIRECT:.2}: {right} right, {wrong} wrong entry, {off_answered}/{off} off-topic answered, recall {right}/{paraphrases}"
        );
    }
    let (right, wrong, paraphrases, off_answered, _) = score(&index, DIRECT);
    let precision = f64::from(right) / f64::from((right + wrong + off_answered).max(1));
    let recall = f64::from(right) / f64::from(paraphrases);
    assert!(precision >= 0.95, "precision {precision:.3}");
    // Lexical ranking finds a paraphrase through the entry's words and its answer's; the rest
    // go to the model, with the knowledge in its context. Measured 2026-12-07: 21 of 70 at
    // precision 1.00 with the calibrated confidence (0.89), 28 of 70 at 1.00 with the
    // hand-made one (0.8), tuned on this set; the calibration, fitted on public datasets,
    // answers a fifth more of their questions at 95 % precision and fewer of these.
    assert!(recall >= 0.28, "recall {recall:.3}");
}

#[test]
#[ignore = "a listing for tuning, not a check"]
fn list_matches() {
    let index = shop();
    for e in eval()["entries"].as_array().unwrap() {
        let q = e["question"].as_str().unwrap();
        for lang in ["match_en", "match_es", "off_en", "off_es"] {
            for p in strings(&e[lang]) {
                let hit = index.faq(p);
                println!(
                    "{lang} {:>5} {} | {p} -> {}",
                    hit.map_or(0.0, |h| h.confidence),
                    if hit.is_some_and(|h| h.entry.question == q) {
                        "OK "
                    } else {
                        "   "
                    },
                    hit.map_or("-", |h| h.entry.question.as_str())
                );
            }
        }
    }
}

/// A brain whose `KNOWLEDGE_DIR` is a copy of the example shop's.
async fn shop_rig() -> (crate::rig::Rig, shared::testing::TempDir) {
    let dir = shared::testing::TempDir::new("knowledge");
    for e in std::fs::read_dir(root().join("examples/shop/knowledge")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let kb = dir.path().display().to_string();
    let rig = crate::rig::Rig::new(&[("ACCESS_MODE", "open"), ("KNOWLEDGE_DIR", &kb)]).await;
    (rig, dir)
}

fn system_prompt(req: &serde_json::Value) -> String {
    req["messages"][0]["content"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_faq_question_is_answered_from_the_knowledge_base_without_the_model() {
    let (mut rig, _dir) = shop_rig().await;
    let p = rig.spawn().await;
    let m = rig
        .text("+15551240001", "how much does delivery cost?")
        .await;
    let reply = rig.reply(&m).await;
    assert!(
        reply.ends_with("UK delivery is £4.50, free on orders over £60. EU delivery is £12."),
        "{reply}"
    );
    assert!(
        reply.starts_with("You're chatting with an AI assistant."),
        "with a model configured the contact is told once, the FAQ's answer first: {reply}"
    );
    assert!(rig.fake.requests().is_empty(), "no model call");
    assert!(rig.usage().await.is_empty(), "nothing to pay for");
    assert_eq!(
        crate::rig::metric(&p, "brain_llm_calls_saved_total").await,
        1.0
    );
    let s = rig.text(crate::rig::ADMIN, "!stats").await;
    let stats = rig.reply(&s).await;
    assert!(
        stats.contains("1 answered from the knowledge base"),
        "{stats}"
    );
}

#[tokio::test]
async fn an_faq_answer_in_another_language_is_translated_by_the_model_or_said_to_be_in_it() {
    let (mut rig, _dir) = shop_rig().await;
    let _p = rig.spawn().await;
    // The shop's answers are English: a Spanish question goes to the model, with the answer
    // in its context and the customer's language in its instructions.
    let m = rig.text("+15551240004", "¿cuánto cuesta el envío?").await;
    rig.reply(&m).await;
    let reqs = rig.fake.requests();
    assert_eq!(reqs.len(), 1, "the model translates");
    let system = system_prompt(&reqs[0]);
    assert!(system.contains("UK delivery is £4.50"), "{system}");
    assert!(
        system.contains("this customer writes in Spanish"),
        "{system}"
    );
    // An English question: no model call, and an English customer's instructions say English.
    let e = rig
        .text("+15551240005", "Do you stock Blundstone boots?")
        .await;
    rig.reply(&e).await;
    assert!(system_prompt(&rig.fake.requests()[1]).contains("writes in English"));

    // Without a model the FAQ answers, saying its answer is in English.
    let dir = shared::testing::TempDir::new("knowledge");
    for e in std::fs::read_dir(root().join("examples/shop/knowledge")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let kb = dir.path().display().to_string();
    let mut rig = crate::rig::Rig::new(&[
        ("ACCESS_MODE", "open"),
        ("OPENAI_BASE_URL", ""),
        ("OPENAI_API_KEY", ""),
        ("KNOWLEDGE_DIR", &kb),
    ])
    .await;
    let _p = rig.spawn().await;
    let m = rig.text("+15551240006", "¿cuánto cuesta el envío?").await;
    let reply = rig.reply(&m).await;
    assert!(
        reply.ends_with(
            "(Nuestra respuesta está en inglés:)\n\nUK delivery is £4.50, free on orders over £60. EU delivery is £12."
        ),
        "{reply}"
    );
    assert!(
        reply.starts_with("Estás hablando con un asistente automático.\n\n"),
        "the disclosure in the customer's language: {reply}"
    );
}

#[tokio::test]
async fn other_questions_go_to_the_model_with_the_relevant_sections_and_the_rule_to_not_guess() {
    let (mut rig, dir) = shop_rig().await;
    let _p = rig.spawn().await;
    let m = rig
        .text("+15551240002", "Do you stock Blundstone boots?")
        .await;
    rig.reply(&m).await;
    let reqs = rig.fake.requests();
    assert_eq!(reqs.len(), 1);
    let system = system_prompt(&reqs[0]);
    assert!(system.contains("Blundstone"), "{system}");
    assert!(system.contains("say that you don't know"), "{system}");
    assert!(
        !system.contains("Harbour Street, Portsmouth PO1"),
        "only the relevant sections: {system}"
    );
    // A question the knowledge base knows nothing of gets the bare prompt.
    let n = rig.text("+15551240002", "zzqx?").await;
    rig.reply(&n).await;
    assert!(!system_prompt(&rig.fake.requests()[1]).contains("Business information"));

    // A file added while it runs is searched within 2 s.
    std::fs::write(
        dir.path().join("events.md"),
        "# Events\n\n## Is there a summer sale?\nYes: 20% off sandals from 1 to 15 July.\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let q = rig.text("+15551240003", "is there a summer sale?").await;
        let r = rig.reply(&q).await;
        if r.ends_with("20% off sandals from 1 to 15 July.") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not indexed in 2 s: {r}"
        );
        // Each probe posts a message (and waits for its answer): paced, not polled.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The sections in a system prompt (each goes in under a `## ` heading line).
fn sections_in(system: &str) -> usize {
    system
        .split("--- Business information ---")
        .nth(1)
        .map_or(0, |info| info.matches("\n## ").count())
}

#[tokio::test]
async fn the_model_s_context_holds_as_many_relevant_sections_as_the_token_budget() {
    let dir = shared::testing::TempDir::new("knowledge");
    let mut zones = String::from("# Delivery\n");
    for i in 0..30 {
        zones.push_str(&format!(
            "\n## Zone {i}\nA courier takes parcels to zone {i} in {} working days.\n",
            i % 4 + 1
        ));
    }
    std::fs::write(dir.path().join("zones.md"), zones).unwrap();
    let kb = dir.path().display().to_string();
    let question = "how many days does the courier take to my zone?";
    let mut counts = Vec::new();
    for budget in [None, Some("90"), Some("0")] {
        let mut env = vec![("ACCESS_MODE", "open"), ("KNOWLEDGE_DIR", kb.as_str())];
        if let Some(b) = budget {
            env.push(("KNOWLEDGE_CONTEXT_TOKENS", b));
        }
        let mut rig = crate::rig::Rig::new(&env).await;
        let _p = rig.spawn().await;
        let m = rig.text("+15551240010", question).await;
        rig.reply(&m).await;
        let system = system_prompt(&rig.fake.requests()[0]);
        // The sections, from the marker to the rules that follow them.
        let info = system
            .split("--- Business information ---")
            .nth(1)
            .and_then(|i| i.split("\n\nIf the customer needs").next())
            .unwrap_or("");
        assert!(
            info.chars().count() <= 4 * budget.map_or(4000, |b| b.parse().unwrap()),
            "{budget:?}: {} characters",
            info.chars().count()
        );
        counts.push(sections_in(&system));
    }
    // The default (about 4,000 tokens) holds all 30 (three sections went in before the budget);
    // 90 tokens hold four of these (22 estimated tokens each, heading included); 0 none.
    assert_eq!(counts, [30, 4, 0]);
}
