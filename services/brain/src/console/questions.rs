//! The owner's loop: what customers asked that the knowledge base did not answer — handed to
//! a person, answered by the model (the FAQ was not sure enough), or not answered at all —
//! grouped by the words they share, with counts; and one click to answer a group for good, as
//! an FAQ entry in a knowledge file written on the console (audited, indexed at once).

use std::collections::{BTreeMap, HashSet};

use axum::Extension;
use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use shared::console::Session;

use super::{Api, ApiError, ApiResult};
use crate::knowledge::Index;
use crate::store;

/// Questions looked at: the newest this many of the period.
const LOOKED_AT: i64 = 2_000;
/// Groups shown, the largest first.
const GROUPS: usize = 50;
/// Examples shown per group.
const EXAMPLES: usize = 5;
/// How many of two questions' content words they must share (of those either has) to be
/// one group.
const ALIKE: f32 = 0.5;
/// The file new entries go to, unless the owner names another.
pub const FAQ_FILE: &str = "faq-console.md";

/// A group of questions asked alike.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Group {
    /// How many times.
    pub count: usize,
    /// The most recent one, as written.
    pub question: String,
    /// Others, different from it, most recent first.
    pub examples: Vec<String>,
    /// How they were answered (`model`, `person`, `bot`, `none`) and how often.
    pub answered_by: BTreeMap<String, usize>,
    /// The FAQ entry closest to the question now, when one matches at all (not surely enough
    /// to answer alone: with a model, it answers with that entry in its context).
    pub closest: Option<String>,
    #[serde(skip)]
    words: HashSet<String>,
}

/// `questions` (newest first) the FAQ did not answer, grouped by the content words they share
/// as `index` reads them (stems, typos corrected); greetings and thanks, questions without a
/// content word and commands are left out.
pub fn groups(index: &Index, questions: &[store::Asked]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for q in questions {
        let text = q.text.trim();
        let small_talk = crate::rules::small_talk(text).is_some();
        if q.answered_by == "knowledge" || text.starts_with('!') || text.is_empty() || small_talk {
            continue;
        }
        let words: HashSet<String> = index
            .words_of(text)
            .into_iter()
            .filter_map(|alternatives| alternatives.into_iter().next())
            .collect();
        if words.is_empty() {
            continue;
        }
        let how = match q.answered_by.as_str() {
            "" => "none",
            other => other,
        };
        let alike = groups.iter_mut().find(|g| {
            let shared = g.words.intersection(&words).count() as f32;
            shared / g.words.union(&words).count().max(1) as f32 >= ALIKE
        });
        match alike {
            Some(g) => {
                g.count += 1;
                *g.answered_by.entry(how.to_owned()).or_default() += 1;
                let seen = same(&g.question, text) || g.examples.iter().any(|e| same(e, text));
                if !seen && g.examples.len() < EXAMPLES {
                    g.examples.push(text.to_owned());
                }
            }
            None => groups.push(Group {
                count: 1,
                question: text.to_owned(),
                examples: Vec::new(),
                answered_by: BTreeMap::from([(how.to_owned(), 1)]),
                closest: None,
                words,
            }),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    groups.truncate(GROUPS);
    groups
}

/// Two questions written alike: the same letters and digits, whatever the case and the
/// punctuation.
fn same(a: &str, b: &str) -> bool {
    let letters = |s: &str| {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    letters(a) == letters(b)
}

/// The period asked for.
#[derive(Deserialize)]
pub struct Period {
    days: Option<u32>,
}

/// `GET /console/api/questions?days=N` (default 30): the groups of questions the knowledge
/// base did not answer — and still would not: a group whose question it answers now is done.
pub async fn list(State(api): State<Api>, Query(p): Query<Period>) -> ApiResult<serde_json::Value> {
    let days = i64::from(p.days.unwrap_or(30).clamp(1, 365));
    let since = api.clock.now_ms() - days * 86_400_000;
    let asked = store::questions_since(&api.db, since, LOOKED_AT).await?;
    let index = api.knowledge.current();
    let looked_at = asked.len();
    // Groups the knowledge base answers by now (the owner added an entry) are done.
    let groups = tokio::task::spawn_blocking(move || {
        let mut g = groups(&index, &asked);
        g.retain_mut(|g| match index.faq(&g.question) {
            Some(h) if h.is_direct() => false,
            Some(h) => {
                g.closest = (h.confidence >= 0.5).then(|| h.entry.question.clone());
                true
            }
            None => true,
        });
        g
    })
    .await
    .unwrap_or_default();
    Ok(Json(serde_json::json!({
        "days": days,
        "looked_at": looked_at,
        "groups": groups,
        "file": FAQ_FILE,
    })))
}

/// A new FAQ entry.
#[derive(Deserialize)]
pub struct NewEntry {
    question: String,
    #[serde(default)]
    also: Vec<String>,
    answer: String,
}

/// One line of a heading or an `Also:` phrasing: trimmed, no line breaks, no `|`.
fn line(text: &str, what: &str, most: usize) -> Result<String, ApiError> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > most || t.contains(['\n', '\r', '|']) {
        return Err(ApiError::bad(format!(
            "{what}: one line of 1 to {most} characters, without |"
        )));
    }
    Ok(t.to_owned())
}

/// The entry as Markdown: `## question?`, its `Also:` line, the answer.
fn entry_markdown(e: &NewEntry) -> Result<String, ApiError> {
    let mut question = line(&e.question, "the question", 200)?;
    if !question.ends_with('?') {
        question.push('?');
    }
    let also = e
        .also
        .iter()
        .filter(|a| !a.trim().is_empty())
        .map(|a| line(a, "another way to ask", 200))
        .collect::<Result<Vec<_>, _>>()?;
    let answer = e.answer.trim();
    if answer.is_empty() || answer.len() > 4_000 || answer.lines().any(|l| l.starts_with('#')) {
        return Err(ApiError::bad(
            "the answer: 1 to 4,000 characters, no line starting with #",
        ));
    }
    let mut md = format!("## {question}\n");
    if !also.is_empty() {
        md.push_str(&format!("Also: {}\n", also.join(" | ")));
    }
    md.push_str(&format!("\n{answer}\n"));
    Ok(md)
}

/// `POST /console/api/questions/faq` `{"question", "also": [...], "answer"}`: the entry is
/// added to the console's file [`FAQ_FILE`] (created on first use) and indexed at once.
pub async fn add(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Json(e): Json<NewEntry>,
) -> ApiResult<serde_json::Value> {
    let md = entry_markdown(&e)?;
    let stored = store::knowledge_files(&api.db).await?;
    let before = match stored.into_iter().find(|(n, _)| n == FAQ_FILE) {
        Some((_, text)) => text,
        None => "# Answers written on the console\n".to_owned(),
    };
    let content = format!("{}\n\n{md}", before.trim_end());
    api.audit(
        &session,
        "knowledge.faq",
        FAQ_FILE,
        &format!("an FAQ entry with {} other phrasings", e.also.len()),
    )
    .await?;
    let by = session.admin.name.clone();
    store::put_knowledge(&api.db, FAQ_FILE, &content, &by, api.clock.now_ms()).await?;
    let (sections, faq_entries) = super::knowledge::reindex(&api).await?;
    Ok(Json(serde_json::json!({
        "file": FAQ_FILE,
        "sections": sections,
        "faq_entries": faq_entries,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(text: &str, by: &str) -> store::Asked {
        store::Asked {
            text: text.to_owned(),
            answered_by: by.to_owned(),
        }
    }

    #[test]
    fn questions_asked_alike_are_one_group_and_answered_ones_are_left_out() {
        let index = Index::build(&[(
            "faq.md".to_owned(),
            "## When do you open?\nNine to five.\n".to_owned(),
        )]);
        let qs = [
            asked("Do you sell gift cards?", "model"),
            asked("when do you open", "knowledge"),
            asked("do you sell gift cards", "bot"),
            asked("Can I buy a gift card?", ""),
            asked("Is parking free?", "person"),
            asked("hi", "model"),
            asked("!stats", "bot"),
        ];
        let g = groups(&index, &qs);
        assert_eq!(g.len(), 2, "{g:?}");
        assert_eq!(g[0].count, 3);
        assert_eq!(g[0].question, "Do you sell gift cards?");
        assert_eq!(g[0].examples, ["Can I buy a gift card?"], "same words once");
        assert_eq!(
            g[0].answered_by,
            BTreeMap::from([("bot".into(), 1), ("model".into(), 1), ("none".into(), 1)])
        );
        assert_eq!(
            (g[1].count, g[1].question.as_str()),
            (1, "Is parking free?")
        );
    }

    #[test]
    fn an_entry_is_one_heading_its_other_phrasings_and_an_answer() {
        let e = NewEntry {
            question: " Do you sell gift cards ".into(),
            also: vec!["gift card".into(), " ".into()],
            answer: "Yes, from £10.".into(),
        };
        assert_eq!(
            entry_markdown(&e).unwrap(),
            "## Do you sell gift cards?\nAlso: gift card\n\nYes, from £10.\n"
        );
        for bad in [
            NewEntry {
                question: "a\nb".into(),
                also: vec![],
                answer: "x".into(),
            },
            NewEntry {
                question: "q".into(),
                also: vec!["a | b".into()],
                answer: "x".into(),
            },
            NewEntry {
                question: "q".into(),
                also: vec![],
                answer: " ".into(),
            },
            NewEntry {
                question: "q".into(),
                also: vec![],
                answer: "x\n## Injected?".into(),
            },
        ] {
            assert!(entry_markdown(&bad).is_err());
        }
    }
}
