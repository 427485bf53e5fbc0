//! The benchmark end to end (`eval-kb --webchat`): the four release binaries as separate
//! processes ([`loadtest::stack`]: a private Redis, SQLite), no model configured, the dataset's
//! FAQ as the only knowledge file, and every test question sent by a new customer through the
//! web chat API — what the customer reads is what is scored: an answer that carries an FAQ
//! entry's text (`Answer B77-012.`) counts as that entry's, anything else (a handoff, a
//! greeting's reply, a notice) as not answered. The in-process figures leave out what the
//! services add around the match (small talk, the handoff rules, language notes, bursts,
//! access, limits); these do not.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use loadtest::stack::{Backend, Stack};

use crate::{Dataset, Report};

/// Customers asking at once.
const CONCURRENCY: usize = 32;

/// The longest a customer waits for an answer.
const WAIT: Duration = Duration::from_secs(30);

/// The `brain_knowledge_vectors_total` sample that counts the indexes whose vectors are ready.
const VECTORS_READY: &str = "brain_knowledge_vectors_total{result=\"ready\"}";

/// The sample that counts questions matched without their vector (not made in time).
const QUESTION_FAILED: &str = "brain_knowledge_vectors_total{result=\"question_failed\"}";

/// Asks every test question of `ds` through the web chat of a stack whose knowledge base is
/// the dataset's FAQ (`embeddings`: the brain's `EMBEDDINGS_MODEL_DIR`).
pub async fn evaluate(ds: &Dataset, embeddings: Option<&Path>) -> anyhow::Result<Report> {
    let (md, answers) = crate::faq(ds)?;
    let kb = shared::testing::TempDir::new("eval-kb-knowledge");
    std::fs::write(kb.path().join("faq.md"), &md)?;
    let kb_dir = kb.path().display().to_string();
    // Absolute: the brain runs in a folder of its own.
    let model_dir = match embeddings {
        Some(d) => Some(
            std::fs::canonicalize(d)
                .with_context(|| format!("no model folder at {}", d.display()))?
                .display()
                .to_string(),
        ),
        None => None,
    };
    let mut extra = vec![
        ("KNOWLEDGE_DIR", kb_dir.as_str()),
        // No model: what `scripts/run` gives a newcomer without a key.
        ("OPENAI_API_KEY", ""),
        ("OPENAI_BASE_URL", ""),
        ("AI_DISCLOSURE", ""),
        ("AUTOMATED_DISCLOSURE", ""),
    ];
    if let Some(d) = &model_dir {
        extra.push(("EMBEDDINGS_MODEL_DIR", d.as_str()));
    }
    let stack = Stack::start(Backend::Sqlite, "", &extra).await?;
    let entries = ds.intents.len();
    if model_dir.is_some() {
        vectors_ready(&stack).await?;
    }
    let started = Instant::now();
    let said = ask_all(ds, &stack.public_url).await?;
    let secs = started.elapsed().as_secs_f64();
    if model_dir.is_some() {
        let missed = shared::testing::scrape_metric(&brain(&stack)?.http, QUESTION_FAILED).await;
        eprintln!(
            "{}: {missed} questions matched without their vector (not made in time)",
            ds.name
        );
    }
    stack.stop().await;
    drop(kb);
    let mut r = Report {
        name: ds.name.to_owned(),
        entries,
        fused: model_dir.is_some(),
        end_to_end: true,
        ..Report::default()
    };
    score(ds, &said, &answers, &mut r);
    r.ms_per_question = 1000.0 * secs / ds.test.len().max(1) as f64;
    Ok(r)
}

/// Asks every test question, each as a new customer, [`CONCURRENCY`] at once: what each read
/// first, by question.
async fn ask_all(ds: &Dataset, base: &str) -> anyhow::Result<Vec<Option<String>>> {
    let http = shared::http_client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()?;
    let base = base.to_owned();
    let questions: Arc<Vec<(String, Option<String>)>> = Arc::new(ds.test.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, base, questions, next) =
            (http.clone(), base.clone(), questions.clone(), next.clone());
        let code = ds.code;
        workers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((q, _)) = questions.get(i) else {
                    return Ok::<_, anyhow::Error>(got);
                };
                // A new customer per question (digits only: the demo web chat's numbers).
                let contact = format!("1{:02}{:08}", code_number(code), i);
                got.push((i, ask(&http, &base, &contact, q).await?));
            }
        }));
    }
    let mut said: Vec<Option<String>> = vec![None; ds.test.len()];
    for w in workers {
        for (i, text) in w.await?? {
            said[i] = Some(text);
        }
    }
    Ok(said)
}

/// Scores what each customer read (`said`, by question) into `r`.
fn score(ds: &Dataset, said: &[Option<String>], answers: &HashMap<String, String>, r: &mut Report) {
    let silent: Vec<&str> = ds
        .test
        .iter()
        .zip(said)
        .filter(|(_, t)| t.as_deref() == Some(""))
        .map(|((q, _), _)| q.as_str())
        .collect();
    if !silent.is_empty() {
        // Scored as not answered; a slow stack, or a message the bot does not answer.
        eprintln!(
            "{}: {} questions got no message within {} s, e.g. {:?}",
            ds.name,
            silent.len(),
            WAIT.as_secs(),
            &silent[..silent.len().min(5)]
        );
    }
    let mut confusions: HashMap<(String, String), usize> = HashMap::new();
    for ((_, label), text) in ds.test.iter().zip(said) {
        let text = text.as_deref().unwrap_or("");
        let given = answer_in(text)
            .and_then(|a| answers.get(&a))
            .map(String::as_str);
        let Some(label) = label else {
            r.out_of_scope += 1;
            r.out_of_scope_answered += usize::from(given.is_some());
            continue;
        };
        r.questions += 1;
        r.tally(&mut confusions, label, given);
    }
    r.confusions = crate::top_confusions(confusions);
}

/// A number for the dataset's code, so two datasets' customers never share a number.
fn code_number(code: &str) -> u32 {
    code.bytes()
        .fold(0u32, |a, b| (a * 31 + u32::from(b)) % 100)
}

/// The FAQ answer (`Answer XXX-NNN.`) a reply carries, if any.
fn answer_in(text: &str) -> Option<String> {
    let at = text.find("Answer ")?;
    let rest = &text[at..];
    let end = rest.find('.')?;
    Some(rest[..=end].to_owned())
}

/// Sends `question` as `contact` and waits for what the business says first (the text of
/// its first outgoing message; empty when none came within [`WAIT`]).
async fn ask(
    http: &reqwest::Client,
    base: &str,
    contact: &str,
    question: &str,
) -> anyhow::Result<String> {
    let url = format!("{base}/chat/api/{contact}/messages");
    let r = http
        .post(&url)
        .json(&serde_json::json!({ "text": question }))
        .send()
        .await?;
    if r.status().as_u16() != 202 {
        bail!("the web chat refused a question: {}", r.status());
    }
    let deadline = Instant::now() + WAIT;
    let mut pause = Duration::from_millis(20);
    while Instant::now() < deadline {
        let list: Vec<serde_json::Value> = http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if let Some(out) = list.iter().find(|m| m["direction"] == "out") {
            return Ok(out["text"].as_str().unwrap_or("").to_owned());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    Ok(String::new())
}

fn brain(stack: &Stack) -> anyhow::Result<&shared::testing::ServiceProcess> {
    stack
        .procs
        .iter()
        .find(|(n, _)| *n == "brain")
        .map(|(_, p)| p)
        .context("no brain in the stack")
}

/// Waits until the brain's knowledge base has its vectors (the meaning match is on).
async fn vectors_ready(stack: &Stack) -> anyhow::Result<()> {
    let brain = brain(stack)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if shared::testing::scrape_metric(&brain.http, VECTORS_READY).await >= 1.0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("the brain's knowledge vectors were not ready within 10 minutes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_faq_answer_is_found_in_what_the_customer_reads() {
        assert_eq!(answer_in("Answer B77-012."), Some("Answer B77-012.".into()));
        assert_eq!(
            answer_in("(Our answer is in English:) Answer C150-001."),
            Some("Answer C150-001.".into())
        );
        assert_eq!(answer_in("I'll pass this to a person at the shop."), None);
        assert_ne!(code_number("B77"), code_number("C150"));
    }
}
