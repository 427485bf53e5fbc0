//! The knowledge base as read from its Markdown files: sections (chunks for the model's
//! context) and FAQ entries (a `##` heading ending in `?`, its answer, and the other ways
//! customers ask it on `Also:` / `También:` lines, separated by `|`), with BM25 over both.

use std::collections::HashSet;

use bm25::{Document, SearchEngine, SearchEngineBuilder};

use super::embed::Vectors;
use super::evidence::{Evidence, VOTERS};
use super::typo::Vocabulary;
use super::words::{Ask, Cues, Words, cues};

mod meaning;

/// A section of a file: what the model may be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The file it comes from (`returns.md`).
    pub file: String,
    /// `File title › Section`.
    pub title: String,
    /// The section's text.
    pub text: String,
}

/// A question the business answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file it comes from.
    pub file: String,
    /// The `##` heading.
    pub question: String,
    /// Its answer, as written.
    pub answer: String,
    /// The heading and its `Also:` phrasings.
    pub phrasings: Vec<String>,
}

/// A question that matches an entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit<'a> {
    /// The entry.
    pub entry: &'a Entry,
    /// How sure: 0 to 1.
    pub confidence: f32,
    /// Matched by meaning too (the question and the index had vectors): its confidence is
    /// [`super::CALIBRATION_MEANING`]'s, and [`super::DIRECT_MEANING`] the one to answer at.
    pub by_meaning: bool,
}

impl Hit<'_> {
    /// Sure enough to answer by itself: at [`super::DIRECT`] (by words) or
    /// [`super::DIRECT_MEANING`] (by meaning too).
    pub fn is_direct(&self) -> bool {
        self.confidence >= self.direct()
    }

    /// The confidence at which a hit like this one answers by itself.
    pub fn direct(&self) -> f32 {
        if self.by_meaning {
            super::DIRECT_MEANING
        } else {
            super::DIRECT
        }
    }
}

type Engine = SearchEngine<usize, u32, Words>;

/// What an entry's confidence is multiplied by when its phrasings ask other kinds of question
/// than the customer's and none the customer's ([`Cues::ask`]), and when none of them is negated
/// as the customer's question is (or is not). Chosen on held-out training rows of banking77
/// and CLINC150 (`scripts/eval-kb --held-out`, 2026-12-07): the factors from 1, 0.8, 0.6, 0.5,
/// 0.4 and 1, 0.6 (the best MRR on both), then the rule ("what" asks anything; an entry
/// agrees when one phrasing does) from three versions. On banking77's held-out rows
/// right-when-answered went from 91.5 to 93.6 % and confidently wrong from 1.0 to 0.7 % at
/// the same `DIRECT`.
const OTHER_QUESTION: f32 = 0.8;
const OTHER_NEGATION: f32 = 0.6;

/// Searchable knowledge (see the module docs).
pub struct Index {
    chunks: Vec<Chunk>,
    chunk_engine: Option<Engine>,
    entries: Vec<Entry>,
    /// Every phrasing of every entry: its entry, its content words (stems) and its score
    /// against itself (the most a question can score against it).
    phrasings: Vec<(usize, Vec<Vec<String>>, f32)>,
    /// Each entry's phrasings' cues (question kinds, negations).
    entry_cues: Vec<Vec<Cues>>,
    /// Every word the knowledge base uses, to read a question's typos as them.
    vocabulary: Vocabulary,
    phrasing_engine: Option<Engine>,
    /// Each entry's stems (phrasings and answer).
    entry_stems: Vec<HashSet<String>>,
    /// How telling each stem is among the entries (inverse entry frequency).
    weight: std::collections::HashMap<String, f32>,
    words: Words,
    /// Each phrasing written as only one entry has it ([`verbatim`]): asked word for word,
    /// it is that entry's question, however close another entry is.
    verbatim: std::collections::HashMap<String, usize>,
    /// The phrasings' and sections' vectors, once computed ([`Index::set_vectors`]).
    vectors: std::sync::OnceLock<Vectors>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("chunks", &self.chunks.len())
            .field("entries", &self.entries.len())
            .finish()
    }
}

const ALSO: [&str; 2] = ["also:", "también:"];

/// Sections and entries of one Markdown file named `name`; for each section, its `Also:`
/// phrasings too (searched with it, not shown to the model).
fn parse(
    name: &str,
    text: &str,
    chunks: &mut Vec<Chunk>,
    entries: &mut Vec<Entry>,
    also_of: &mut Vec<String>,
) {
    let mut title = name.trim_end_matches(".md").replace(['-', '_'], " ");
    let mut heading: Option<String> = None;
    let mut body: Vec<&str> = Vec::new();
    let mut also: Vec<String> = Vec::new();
    let mut flush =
        |title: &str, heading: Option<String>, body: &mut Vec<&str>, also: &mut Vec<String>| {
            let text = body.join("\n").trim().to_owned();
            body.clear();
            let phrasings: Vec<String> = std::mem::take(also);
            if text.is_empty() && heading.is_none() {
                return;
            }
            let section = heading.clone().unwrap_or_default();
            also_of.push(phrasings.join("\n"));
            chunks.push(Chunk {
                file: name.to_owned(),
                title: if section.is_empty() {
                    title.to_owned()
                } else {
                    format!("{title} › {section}")
                },
                text: if section.is_empty() {
                    text.clone()
                } else {
                    format!("{section}\n{text}")
                },
            });
            if let Some(q) = heading.filter(|h| h.ends_with('?') && !text.is_empty()) {
                let mut all = vec![q.clone()];
                all.extend(phrasings);
                entries.push(Entry {
                    file: name.to_owned(),
                    question: q,
                    answer: text,
                    phrasings: all,
                });
            }
        };
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(t) = trimmed.strip_prefix("# ") {
            flush(&title, heading.take(), &mut body, &mut also);
            title = t.trim().to_owned();
        } else if let Some(h) = trimmed.strip_prefix("## ") {
            flush(&title, heading.take(), &mut body, &mut also);
            heading = Some(h.trim().to_owned());
        } else if let Some(rest) = ALSO.iter().find_map(|p| {
            trimmed
                .get(..p.len())
                .filter(|head| head.eq_ignore_ascii_case(p))
                .map(|_| &trimmed[p.len()..])
        }) {
            also.extend(
                rest.split('|')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        } else {
            body.push(line);
        }
    }
    flush(&title, heading.take(), &mut body, &mut also);
}

/// A text as asked word for word: its letters and digits, lower case, single spaces.
fn verbatim_key(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Each phrasing (as [`verbatim_key`] writes it) that only one of `entries` has, with it.
fn verbatim_of(entries: &[Entry]) -> std::collections::HashMap<String, usize> {
    let mut verbatim: std::collections::HashMap<String, Option<usize>> =
        std::collections::HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        for p in &e.phrasings {
            let slot = verbatim.entry(verbatim_key(p)).or_insert(Some(i));
            if *slot != Some(i) {
                *slot = None; // two entries share it: it tells nothing
            }
        }
    }
    verbatim
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn engine(texts: &[String]) -> Option<Engine> {
    if texts.is_empty() {
        return None;
    }
    let docs = texts
        .iter()
        .enumerate()
        .map(|(i, t)| Document::new(i, t.clone()));
    Some(
        SearchEngineBuilder::<usize, u32, Words>::with_tokenizer_and_documents(Words::new(), docs)
            .build(),
    )
}

impl Index {
    /// An index of `files` (name, Markdown text).
    pub fn build(files: &[(String, String)]) -> Self {
        let mut chunks = Vec::new();
        let mut entries = Vec::new();
        let mut also_of = Vec::new();
        for (name, text) in files {
            parse(name, text, &mut chunks, &mut entries, &mut also_of);
        }
        let chunk_texts: Vec<String> = chunks
            .iter()
            .zip(&also_of)
            .map(|(c, also)| format!("{}\n{}\n{also}", c.title, c.text))
            .collect();
        let words = Words::new();
        let mut phrasing_texts = Vec::new();
        let mut phrasings = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            for p in &e.phrasings {
                phrasing_texts.push(p.clone());
                phrasings.push((i, words.words(p), 0.0));
            }
        }
        let entry_cues = entries
            .iter()
            .map(|e| e.phrasings.iter().map(|p| cues(p)).collect())
            .collect();
        let vocabulary = Vocabulary::build(
            chunk_texts
                .iter()
                .chain(&phrasing_texts)
                .map(String::as_str),
        );
        let phrasing_engine = engine(&phrasing_texts);
        let verbatim = verbatim_of(&entries);
        if let Some(engine) = &phrasing_engine {
            for (n, text) in phrasing_texts.iter().enumerate() {
                phrasings[n].2 = engine
                    .search(text, None)
                    .into_iter()
                    .find(|r| r.document.id == n)
                    .map_or(0.0, |r| r.score);
            }
        }
        let entry_stems: Vec<HashSet<String>> = entries
            .iter()
            .map(|e| {
                e.phrasings
                    .iter()
                    .chain(std::iter::once(&e.answer))
                    .flat_map(|t| words.words(t))
                    .flatten()
                    .collect()
            })
            .collect();
        let mut df: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for stems in &entry_stems {
            for s in stems {
                *df.entry(s.clone()).or_default() += 1;
            }
        }
        let n = entry_stems.len().max(1) as f32;
        let weight = df
            .into_iter()
            .map(|(s, d)| (s, (1.0 + n / d as f32).ln()))
            .collect();
        Self {
            chunk_engine: engine(&chunk_texts),
            chunks,
            entries,
            phrasings,
            entry_cues,
            vocabulary,
            phrasing_engine,
            entry_stems,
            weight,
            words,
            verbatim,
            vectors: std::sync::OnceLock::new(),
        }
    }

    /// Nothing to search.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Sections and entries indexed.
    pub fn size(&self) -> (usize, usize) {
        (self.chunks.len(), self.entries.len())
    }

    /// Up to `k` sections ranked by relevance to `query`, with their BM25 scores (none that
    /// shares no word with it).
    pub fn ranked_sections(&self, query: &str, k: usize) -> Vec<(&Chunk, f32)> {
        self.lexical_sections(query, k)
            .into_iter()
            .map(|(i, s)| (&self.chunks[i], s))
            .collect()
    }

    /// Up to `k` sections (their positions) by BM25 against `query`, best first.
    fn lexical_sections(&self, query: &str, k: usize) -> Vec<(usize, f32)> {
        let Some(engine) = &self.chunk_engine else {
            return Vec::new();
        };
        let corrected = self.vocabulary.correct(query);
        let mut found = engine.search(corrected.as_deref().unwrap_or(query), k);
        // Ties in file order (see `scored`: the engine's last bits vary from run to run).
        let key = |s: f32| (s * 1e4).round() as i64;
        found.sort_by(|a, b| {
            key(b.score)
                .cmp(&key(a.score))
                .then(a.document.id.cmp(&b.document.id))
        });
        found
            .into_iter()
            .filter(|r| r.score > 0.0)
            .map(|r| (r.document.id, r.score))
            .collect()
    }

    /// The FAQ entry `query` asks, with how sure the match is ([`Evidence::confidence`]; 1
    /// when it is one of the entry's phrasings word for word).
    pub fn faq(&self, query: &str) -> Option<Hit<'_>> {
        self.faq_with(query, None)
    }

    /// [`Index::faq`], by meaning too when given the question's vector and the index has
    /// its own.
    pub fn faq_with(&self, query: &str, question: Option<&[f32]>) -> Option<Hit<'_>> {
        if self.entries.is_empty() {
            return None;
        }
        if let Some(&i) = self.verbatim.get(&verbatim_key(query)) {
            return Some(Hit {
                entry: &self.entries[i],
                confidence: 1.0,
                by_meaning: false,
            });
        }
        let (best, evidence) = self.evidence_with(query, question)?;
        Some(Hit {
            entry: &self.entries[best],
            confidence: evidence.confidence(),
            by_meaning: evidence.meaning.is_some(),
        })
    }

    /// The entry `query` matches best (its index in [`Index::entries`]) and what the match
    /// rests on (none when the query has no content word or there is no entry).
    pub fn evidence(&self, query: &str) -> Option<(usize, Evidence)> {
        self.evidence_with(query, None)
    }

    /// Every entry with what a match of `query` to it rests on, its runner-ups the best
    /// other entries (none when the query has no content word).
    pub(super) fn all_evidence(
        &self,
        query: &str,
        question: Option<&[f32]>,
    ) -> Option<Vec<Evidence>> {
        let scored = self.scored(query);
        if scored.is_empty() {
            return None;
        }
        let meanings = question.and_then(|q| self.meanings(q));
        let top2 = |f: &dyn Fn(&Evidence) -> f32| {
            let (mut first, mut second) = (0.0f32, 0.0f32);
            for (_, e) in &scored {
                let x = f(e);
                if x > first {
                    (first, second) = (x, first);
                } else if x > second {
                    second = x;
                }
            }
            (first, second)
        };
        let score = top2(&Evidence::score);
        let like = top2(&|e: &Evidence| e.like);
        // The best of the others: the second best for the best, the best for the rest.
        let other =
            |(first, second): (f32, f32), mine: f32| if mine >= first { second } else { first };
        Some(
            scored
                .iter()
                .map(|(i, e)| {
                    let top = e.score();
                    Evidence {
                        runner_up: if top > 0.0 {
                            other(score, top) / top
                        } else {
                            1.0
                        },
                        like_runner_up: if e.like > 0.0 {
                            other(like, e.like) / e.like
                        } else {
                            2.0
                        },
                        meaning: meanings.as_ref().map(|m| m[*i]),
                        ..*e
                    }
                })
                .collect(),
        )
    }

    /// Every entry (its index in [`Index::entries`]) with how well `query` matches it, best
    /// first (none when the query has no content word).
    pub fn ranked(&self, query: &str) -> Vec<(usize, f32)> {
        let mut scored: Vec<(usize, f32)> = self
            .scored(query)
            .into_iter()
            .map(|(i, e)| (i, e.score()))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored
    }

    /// Every entry with what a match of `query` to it rests on (`runner_up` left 0).
    fn scored(&self, query: &str) -> Vec<(usize, Evidence)> {
        if self.entries.is_empty() {
            return Vec::new();
        }
        // Cues read the question as written; words, with its typos corrected.
        let asked = cues(query);
        let corrected = self.vocabulary.correct(query);
        // The words as written, to tell which ones a correction put there.
        let written: HashSet<String> = match &corrected {
            Some(_) => self.words.words(query).into_iter().flatten().collect(),
            None => HashSet::new(),
        };
        let query = corrected.as_deref().unwrap_or(query);
        let q: Vec<(Vec<String>, bool)> = self
            .words
            .words(query)
            .into_iter()
            .map(|w| {
                let fixed = corrected.is_some() && !w.iter().any(|s| written.contains(s));
                (w, fixed)
            })
            .collect();
        if q.is_empty() {
            return Vec::new();
        }
        // How closely the question reads like each entry's phrasings.
        let mut like = vec![0.0f32; self.entries.len()];
        let mut votes = vec![0usize; self.entries.len()];
        if let Some(engine) = &self.phrasing_engine {
            // Scores rounded, ties in phrasing order: the engine sums in hash order, so equal
            // scores may differ in their last bits from one run to the next.
            let mut found = engine.search(query, 50);
            let key = |s: f32| (s * 1e4).round() as i64;
            found.sort_by(|a, b| {
                key(b.score)
                    .cmp(&key(a.score))
                    .then(a.document.id.cmp(&b.document.id))
            });
            for (n, r) in found.into_iter().enumerate() {
                let (entry, _, own) = &self.phrasings[r.document.id];
                if n < VOTERS && r.score > 0.0 {
                    votes[*entry] += 1;
                }
                if *own > 0.0 {
                    like[*entry] = like[*entry].max((r.score / own).min(1.0));
                }
            }
        }
        (0..self.entries.len())
            .map(|i| {
                (
                    i,
                    Evidence {
                        like: like[i],
                        votes: votes[i],
                        agreement: self.agreement(asked, i),
                        ..self.coverage(&q, i)
                    },
                )
            })
            .collect()
    }

    /// How much of the question (content words `q`) entry `i`'s words cover: the share of its
    /// weight (a word no entry uses weighs half — it tells nothing either way), the weight, and
    /// the words matched and unknown.
    fn coverage(&self, q: &[(Vec<String>, bool)], i: usize) -> Evidence {
        let stems = &self.entry_stems[i];
        let mut e = Evidence {
            words: q.len(),
            ..Evidence::default()
        };
        let rarest = (1.0 + self.entries.len() as f32).ln();
        let (mut total, mut strict_total) = (0.0f32, 0.0f32);
        for (word, fixed) in q {
            let w = word
                .iter()
                .filter_map(|s| self.weight.get(s))
                .copied()
                .fold(None, |m: Option<f32>, x| Some(m.map_or(x, |m| m.max(x))));
            e.unknown += usize::from(w.is_none());
            strict_total += w.unwrap_or(rarest);
            let w = w.unwrap_or(0.5);
            total += w;
            if word.iter().any(|s| stems.contains(s)) {
                e.covered += w;
                e.matched += 1;
                if *fixed {
                    e.corrected += w;
                }
            }
        }
        e.share = if total > 0.0 { e.covered / total } else { 0.0 };
        e.strict = if strict_total > 0.0 {
            e.covered / strict_total
        } else {
            0.0
        };
        e
    }

    /// How far entry `i` asks what a question with cues `asked` asks: 1 when its phrasings
    /// agree, less when they ask other kinds of question and none the customer's (why, not
    /// how; "what" asks anything) or none of them is negated as the question is (or is not).
    fn agreement(&self, asked: Cues, i: usize) -> f32 {
        let mine = &self.entry_cues[i];
        let mut factor = 1.0;
        // "What" asks anything ("what are your hours" asks when): only the other kinds count.
        let kind = |c: &Cues| c.ask.filter(|a| *a != Ask::What);
        if let Some(a) = kind(&asked)
            && mine.iter().any(|c| kind(c).is_some())
            && !mine.iter().any(|c| kind(c) == Some(a))
        {
            factor *= OTHER_QUESTION;
        }
        if !mine.iter().any(|c| c.negated == asked.negated) {
            factor *= OTHER_NEGATION;
        }
        factor
    }

    /// Every entry (for `!stats` and tests).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The content words of `text`, with their stems (the evaluation checks which are shared).
    pub fn words_of(&self, text: &str) -> Vec<Vec<String>> {
        self.words.words(text)
    }
}

#[cfg(test)]
mod tests;
