//! The answer-quality benchmark (`scripts/eval-kb`): the brain's own knowledge base and rules
//! against public intent datasets, as a shop without a model meets its customers.
//!
//! Each dataset becomes one FAQ file the way issue 27 fixes it — per intent, its first six
//! training rows in file order: the first as the `## heading?` (a `?` added when missing), the
//! next five on the `Also:` line; the answer an opaque code (`Answer B77-001.`), so no word of
//! the intent's name helps the match. Every test question is a new customer's first message:
//! a request for a person (`HANDOFF_PHRASES`) is handed off; otherwise an FAQ entry at least
//! [`brain::knowledge::DIRECT`] sure answers it; anything else goes to a person (no model).
//! Test splits are reported, never tuned on.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use anyhow::{Context, bail};
use brain::knowledge::{DIRECT, Index};
use brain::rules::Rules;

mod calibrate;
pub mod handoff;
pub mod meaning;
pub mod tau;
pub mod webchat;
pub use calibrate::{Sample, at_threshold, fit, samples, shop_samples};

/// Training rows per intent that make its FAQ entry (the heading and five phrasings).
pub const ROWS_PER_ENTRY: usize = 6;

/// One intent's FAQ rows, in file order.
#[derive(Debug, Clone)]
pub struct Intent {
    /// The dataset's label.
    pub name: String,
    /// Its first [`ROWS_PER_ENTRY`] training rows.
    pub rows: Vec<String>,
}

/// A dataset as the benchmark uses it.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `banking77`, `clinc150`.
    pub name: &'static str,
    /// What its answers are coded by (`B77`, `C150`).
    pub code: &'static str,
    /// The intents, in the order they first appear in the training file.
    pub intents: Vec<Intent>,
    /// Test questions with their intent (`None`: out of scope — no entry answers it).
    pub test: Questions,
}

/// Which questions a dataset is asked: its test split (reported, never tuned on), or rows held
/// out of its training data (for choosing thresholds): banking77's training rows after each
/// intent's first six; CLINC150's too, with its `val`, `oos_val` and `oos_train`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The test split.
    Test,
    /// Held-out training data.
    HeldOut,
}

/// A dataset's questions with their intent (`None`: out of scope).
type Questions = Vec<(String, Option<String>)>;

/// Groups `(text, intent)` training rows into intents in order of first appearance, keeping
/// each intent's first [`ROWS_PER_ENTRY`] rows; the rows after them are returned too.
fn intents(train: impl IntoIterator<Item = (String, String)>) -> (Vec<Intent>, Questions) {
    let mut out: Vec<Intent> = Vec::new();
    let mut rest = Vec::new();
    for (text, intent) in train {
        let i = match out.iter().position(|i| i.name == intent) {
            Some(i) => i,
            None => {
                out.push(Intent {
                    name: intent,
                    rows: Vec::new(),
                });
                out.len() - 1
            }
        };
        if out[i].rows.len() < ROWS_PER_ENTRY {
            out[i].rows.push(text);
        } else {
            rest.push((text, Some(out[i].name.clone())));
        }
    }
    (out, rest)
}

/// banking77 (`train.csv` and `test.csv`, header `text,category`) from `dir`.
pub fn banking77(dir: &Path, split: Split) -> anyhow::Result<Dataset> {
    let read = |file: &str| -> anyhow::Result<Vec<(String, String)>> {
        let path = dir.join(file);
        let mut reader = csv::Reader::from_path(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        reader
            .deserialize::<(String, String)>()
            .map(|r| r.with_context(|| format!("a bad row in {}", path.display())))
            .collect()
    };
    let (intents, held_out) = intents(read("train.csv")?);
    let test = match split {
        Split::Test => read("test.csv")?
            .into_iter()
            .map(|(t, i)| (t, Some(i)))
            .collect(),
        Split::HeldOut => held_out,
    };
    Ok(Dataset {
        name: "banking77",
        code: "B77",
        intents,
        test,
    })
}

/// CLINC150 (`data_full.json`: `train`, `test` and `oos_test` as `[text, intent]` pairs) from
/// `dir`: the in-scope test questions and the out-of-scope ones.
pub fn clinc150(dir: &Path, split: Split) -> anyhow::Result<Dataset> {
    let path = dir.join("data_full.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut splits: HashMap<String, Vec<(String, String)>> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not CLINC150", path.display()))?;
    let mut take = |split: &str| {
        splits
            .remove(split)
            .with_context(|| format!("{} has no `{split}` split", path.display()))
    };
    let (intents, rest) = intents(take("train")?);
    let (asked, out_of_scope) = match split {
        Split::Test => ("test", "oos_test"),
        Split::HeldOut => ("val", "oos_val"),
    };
    let mut test: Questions = take(asked)?
        .into_iter()
        .map(|(t, i)| (t, Some(i)))
        .collect();
    test.extend(take(out_of_scope)?.into_iter().map(|(t, _)| (t, None)));
    if split == Split::HeldOut {
        // Every training row the FAQ does not use, and the out-of-scope training rows.
        test.extend(rest);
        test.extend(take("oos_train")?.into_iter().map(|(t, _)| (t, None)));
    }
    Ok(Dataset {
        name: "clinc150",
        code: "C150",
        intents,
        test,
    })
}

/// The dataset's FAQ file (`# FAQ`, an entry per intent) and each entry's answer with its
/// intent.
pub fn faq(ds: &Dataset) -> anyhow::Result<(String, HashMap<String, String>)> {
    let mut md = String::from("# FAQ\n");
    let mut answers = HashMap::new();
    for (n, intent) in ds.intents.iter().enumerate() {
        let rows: Vec<String> = intent
            .rows
            .iter()
            .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if let Some(bad) = rows.iter().find(|r| r.contains('|') || r.is_empty()) {
            bail!("{}: the row {bad:?} cannot be an FAQ phrasing", intent.name);
        }
        let Some((first, rest)) = rows.split_first() else {
            bail!("{}: no training rows", intent.name);
        };
        let heading = if first.ends_with('?') {
            first.clone()
        } else {
            format!("{first}?")
        };
        let answer = format!("Answer {}-{:03}.", ds.code, n + 1);
        md.push_str(&format!("\n## {heading}\n"));
        if !rest.is_empty() {
            md.push_str(&format!("Also: {}\n", rest.join(" | ")));
        }
        md.push_str(&format!("\n{answer}\n"));
        answers.insert(answer, intent.name.clone());
    }
    Ok((md, answers))
}

/// `text` with one typo a hurried customer makes: the middle letter of its longest word (of five
/// letters or more) left out — deterministic, so runs compare.
pub fn with_typo(text: &str) -> String {
    let Some(word) = text
        .split_whitespace()
        .filter(|w| w.chars().count() >= 5 && w.chars().all(char::is_alphabetic))
        .max_by_key(|w| w.chars().count())
    else {
        return text.to_owned();
    };
    let mid = word.chars().count() / 2;
    let typo: String = word
        .chars()
        .enumerate()
        .filter_map(|(i, c)| (i != mid).then_some(c))
        .collect();
    text.replacen(word, &typo, 1)
}

/// `ds` with a typo in every question ([`with_typo`]).
pub fn misspelt(ds: &Dataset) -> Dataset {
    Dataset {
        test: ds
            .test
            .iter()
            .map(|(t, label)| (with_typo(t), label.clone()))
            .collect(),
        ..ds.clone()
    }
}

/// What a dataset's customers got.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// The dataset.
    pub name: String,
    /// Matched by meaning too (vectors), not by words alone.
    pub fused: bool,
    /// Asked end to end through the release binaries' web chat ([`webchat`]): no MRR, no
    /// handoff count, and the time is the wall time per question with 32 customers at once.
    pub end_to_end: bool,
    /// FAQ entries.
    pub entries: usize,
    /// In-scope test questions.
    pub questions: usize,
    /// In-scope questions handed to a person for a handoff phrase.
    pub handed_off: usize,
    /// In-scope questions answered from the FAQ.
    pub answered: usize,
    /// Of those, answered with their own intent's entry.
    pub right: usize,
    /// Mean reciprocal rank of the right entry among all entries (0 where it is not ranked).
    pub mrr: f64,
    /// Out-of-scope test questions.
    pub out_of_scope: usize,
    /// Out-of-scope questions answered anyway.
    pub out_of_scope_answered: usize,
    /// The most frequent wrong answers: (asked intent, answered intent, count).
    pub confusions: Vec<(String, String, usize)>,
    /// Milliseconds of one core per question to decide it (handoff rule, FAQ match, ranking;
    /// a question's vector not included — see [`meaning::Meanings::single_ms`]).
    pub ms_per_question: f64,
}

impl Report {
    /// Share of in-scope questions answered from the FAQ.
    pub fn answered_share(&self) -> f64 {
        ratio(self.answered, self.questions)
    }

    /// Share of the answered questions answered right.
    pub fn right_share(&self) -> f64 {
        ratio(self.right, self.answered)
    }

    /// Share of in-scope questions answered wrong (confidently: at [`DIRECT`] or above).
    pub fn wrong_share(&self) -> f64 {
        ratio(self.answered - self.right, self.questions)
    }

    /// Share of out-of-scope questions answered anyway.
    pub fn out_of_scope_answered_share(&self) -> f64 {
        ratio(self.out_of_scope_answered, self.out_of_scope)
    }
}

impl Report {
    /// Counts an in-scope question of intent `label` answered as `given` (`None`: not
    /// answered), a wrong answer in `confusions`.
    pub(crate) fn tally(
        &mut self,
        confusions: &mut HashMap<(String, String), usize>,
        label: &str,
        given: Option<&str>,
    ) {
        let Some(given) = given else { return };
        self.answered += 1;
        if given == label {
            self.right += 1;
        } else {
            *confusions
                .entry((label.to_owned(), given.to_owned()))
                .or_default() += 1;
        }
    }
}

/// The five most frequent confusions, most first (ties by name).
pub(crate) fn top_confusions(
    confusions: HashMap<(String, String), usize>,
) -> Vec<(String, String, usize)> {
    let mut confusions: Vec<(String, String, usize)> = confusions
        .into_iter()
        .map(|((a, b), n)| (a, b, n))
        .collect();
    confusions.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
    confusions.truncate(5);
    confusions
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Asks every test question of `ds` of the knowledge base built from its FAQ, with `rules`'
/// handoff phrases.
pub fn evaluate(ds: &Dataset, rules: &Rules) -> anyhow::Result<Report> {
    evaluate_at(ds, rules, DIRECT, None)
}

/// [`evaluate`] with FAQ entries answering at `direct` instead of [`DIRECT`] (for choosing it).
/// With `meanings`, the knowledge base and the questions have vectors (matching by meaning too).
pub fn evaluate_at(
    ds: &Dataset,
    rules: &Rules,
    direct: f32,
    mut meanings: Option<&mut meaning::Meanings>,
) -> anyhow::Result<Report> {
    let (md, answers) = faq(ds)?;
    let index = Index::build(&[("faq.md".to_owned(), md)]);
    if let Some(m) = meanings.as_deref_mut() {
        m.ready(&index, ds.test.iter().map(|(q, _)| q.as_str()))?;
    }
    let meanings = meanings.as_deref();
    let vector = |q: &str| meanings.and_then(|m| m.of(q));
    let intent_of = |answer: &str| answers.get(answer).map(String::as_str);
    let mut r = Report {
        name: ds.name.to_owned(),
        entries: index.entries().len(),
        fused: meanings.is_some(),
        ..Report::default()
    };
    let mut confusions: HashMap<(String, String), usize> = HashMap::new();
    let mut rank_sum = 0.0;
    let started = std::time::Instant::now();
    for (question, label) in &ds.test {
        let answered = if rules.asks_for_person(question) {
            if label.is_some() {
                r.handed_off += 1;
            }
            None
        } else {
            index
                .faq_with(question, vector(question))
                .filter(|h| h.confidence >= direct)
                .and_then(|h| intent_of(&h.entry.answer))
        };
        let Some(label) = label else {
            r.out_of_scope += 1;
            r.out_of_scope_answered += usize::from(answered.is_some());
            continue;
        };
        r.questions += 1;
        let ranked = match vector(question) {
            Some(v) => index.ranked_with(question, Some(v)),
            None => index.ranked(question),
        };
        let rank = ranked
            .iter()
            .position(|(i, _)| intent_of(&index.entries()[*i].answer) == Some(label.as_str()));
        rank_sum += rank.map_or(0.0, |p| 1.0 / (p + 1) as f64);
        r.tally(&mut confusions, label, answered);
    }
    r.ms_per_question = 1000.0 * started.elapsed().as_secs_f64() / ds.test.len().max(1) as f64;
    r.mrr = if r.questions == 0 {
        0.0
    } else {
        rank_sum / r.questions as f64
    };
    r.confusions = top_confusions(confusions);
    Ok(r)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |x: f64| format!("{:.1} %", 100.0 * x);
        writeln!(
            f,
            "{} ({}; {} FAQ entries, {} in-scope and {} out-of-scope test questions)",
            self.name,
            if self.fused {
                "words + meaning"
            } else {
                "lexical"
            },
            self.entries,
            self.questions,
            self.out_of_scope
        )?;
        if self.end_to_end {
            writeln!(
                f,
                "  through the release binaries' web chat: answered from the FAQ {} | right when \
                 answered {} | confidently wrong {}",
                pct(self.answered_share()),
                pct(self.right_share()),
                pct(self.wrong_share()),
            )?;
        } else {
            writeln!(
                f,
                "  answered from the FAQ {} | right when answered {} | confidently wrong {} | \
                 handed off for a handoff phrase {} ({}) | MRR {:.3}",
                pct(self.answered_share()),
                pct(self.right_share()),
                pct(self.wrong_share()),
                pct(ratio(self.handed_off, self.questions)),
                self.handed_off,
                self.mrr
            )?;
        }
        if self.out_of_scope > 0 {
            writeln!(
                f,
                "  out of scope answered anyway {} ({} of {})",
                pct(self.out_of_scope_answered_share()),
                self.out_of_scope_answered,
                self.out_of_scope
            )?;
        }
        for (asked, given, n) in &self.confusions {
            writeln!(f, "  confused: {asked} answered as {given} ({n}×)")?;
        }
        if self.end_to_end {
            writeln!(
                f,
                "  {:.2} ms per question, wall time, 32 customers at once",
                self.ms_per_question
            )
        } else {
            writeln!(
                f,
                "  {:.2} ms of one core per question to decide it (its vector aside)",
                self.ms_per_question
            )
        }
    }
}

impl Report {
    /// The figures as one JSON object (`eval-kb --json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "dataset": self.name,
            "mode": if self.fused { "words+meaning" } else { "lexical" },
            "through": if self.end_to_end { "webchat" } else { "in-process" },
            "entries": self.entries,
            "questions": self.questions,
            "answered": self.answered_share(),
            "right_when_answered": self.right_share(),
            "confidently_wrong": self.wrong_share(),
            // Not measured end to end.
            "handed_off_for_a_phrase": (!self.end_to_end).then(|| ratio(self.handed_off, self.questions)),
            "mrr": (!self.end_to_end).then_some(self.mrr),
            "out_of_scope": self.out_of_scope,
            "out_of_scope_answered": self.out_of_scope_answered_share(),
            "confusions": self.confusions,
        })
    }
}

/// Where the evaluation data is when nothing says: `shared/eval-data` beside the project.
pub fn default_data() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/eval-data")
}
