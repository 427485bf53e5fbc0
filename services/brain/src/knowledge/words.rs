//! The words the knowledge base ranks by: lowercased, accents folded, English and Spanish stop
//! words dropped, and each word as its English and its Spanish stem (so a customer writing in
//! either language meets the business's text in either, whatever language a short question is
//! taken for).

use std::collections::HashSet;

use bm25::Tokenizer as _;
use rust_stemmers::{Algorithm, Stemmer};

/// The knowledge base's tokenizer (see the module docs).
pub struct Words {
    base: bm25::DefaultTokenizer,
    stop: HashSet<String>,
    en: Stemmer,
    es: Stemmer,
}

impl std::fmt::Debug for Words {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Words")
    }
}

impl Default for Words {
    fn default() -> Self {
        Self::new()
    }
}

/// Splitting, lowercasing and accent folding only (stop words and stems are ours).
fn plain_tokenizer() -> bm25::DefaultTokenizer {
    bm25::DefaultTokenizer::builder()
        .language_mode(bm25::Language::English)
        .normalization(true)
        .stemming(false)
        .stopwords(false)
        .build()
}

/// The plain tokenizer, built once.
static PLAIN: std::sync::LazyLock<bm25::DefaultTokenizer> =
    std::sync::LazyLock::new(plain_tokenizer);

/// `text`'s words lowercased and accent-folded, joined and framed by single spaces, so a phrase
/// framed the same way matches whole words only (`" hablar con alguien "`).
pub fn framed(text: &str) -> String {
    format!(" {} ", PLAIN.tokenize(text).join(" "))
}

/// [`framed`] with emoji and punctuation left out first: they say nothing in a short message
/// ("human 🙏", "thanks!"), and the folding would spell an emoji as words.
pub fn framed_words(text: &str) -> String {
    let letters: String = text
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    framed(&letters)
}

impl Words {
    /// The tokenizer, its stop-word lists built.
    pub fn new() -> Self {
        let base = plain_tokenizer();
        let mut stop = HashSet::new();
        for lang in [stop_words::LANGUAGE::English, stop_words::LANGUAGE::Spanish] {
            for w in stop_words::get(lang) {
                stop.extend(base.tokenize(w));
            }
        }
        Self {
            base,
            stop,
            en: Stemmer::create(Algorithm::English),
            es: Stemmer::create(Algorithm::Spanish),
        }
    }

    /// The content words of `text`, each with its stems.
    pub fn words(&self, text: &str) -> Vec<Vec<String>> {
        self.base
            .tokenize(text)
            .into_iter()
            .filter(|w| !self.stop.contains(w))
            .map(|w| {
                let en = self.en.stem(&w).into_owned();
                let es = self.es.stem(&w).into_owned();
                if en == es { vec![en] } else { vec![en, es] }
            })
            .collect()
    }
}

/// What a question asks besides its content words — which the stop words drop: the kind of
/// question and whether it is negated. Two questions with the same content words ask different
/// things when these differ ("Why must I verify my identity?" / "How do I verify my
/// identity?"; "that's true" / "that's not true").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cues {
    /// The kind of question, when a question word says it.
    pub ask: Option<Ask>,
    /// A negation (`not`, `n't`, `no`, `never`; `no`, `nunca`, …).
    pub negated: bool,
}

/// The kind of a question, by its question word (English or Spanish).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// why, por qué
    Why,
    /// how, cómo
    How,
    /// how much, how many, cuánto
    HowMuch,
    /// when, how long, cuándo
    When,
    /// where, dónde
    Where,
    /// who, quién
    Who,
    /// what, which, qué, cuál
    What,
}

/// Negations as words (besides any word ending in `n't`); chat spellings without the
/// apostrophe included.
const NEGATIONS: [&str; 21] = [
    "not", "no", "never", "nor", "cannot", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt",
    "werent", "cant", "couldnt", "wont", "wouldnt", "shouldnt", "havent", "hasnt", "nunca",
    "tampoco",
];

/// Spanish question words, accented as questions are written (unaccented they are mostly
/// conjunctions: `que`, `como`, `cuando`, `donde`).
const PREGUNTAS: [(&str, Ask); 13] = [
    ("por qué", Ask::Why),
    ("cómo", Ask::How),
    ("cuánto", Ask::HowMuch),
    ("cuánta", Ask::HowMuch),
    ("cuántos", Ask::HowMuch),
    ("cuántas", Ask::HowMuch),
    ("cuándo", Ask::When),
    ("dónde", Ask::Where),
    ("quién", Ask::Who),
    ("quiénes", Ask::Who),
    ("qué", Ask::What),
    ("cuál", Ask::What),
    ("cuáles", Ask::What),
];

/// The [`Cues`] of `text`.
pub fn cues(text: &str) -> Cues {
    let words = PLAIN.tokenize(text);
    let english = words.iter().enumerate().find_map(|(i, w)| {
        let next = words.get(i + 1).map(String::as_str);
        Some(match (w.as_str(), next) {
            ("why", _) => Ask::Why,
            ("how", Some("much" | "many")) => Ask::HowMuch,
            ("how", Some("long")) | ("when", _) => Ask::When,
            ("how", _) => Ask::How,
            ("where", _) => Ask::Where,
            ("who" | "whom" | "whose", _) => Ask::Who,
            ("what" | "which", _) => Ask::What,
            _ => return None,
        })
    });
    let lower = text.to_lowercase();
    let spanish = PREGUNTAS
        .iter()
        .filter_map(|(w, ask)| lower.find(w).map(|at| (at, *ask)))
        .min_by_key(|(at, _)| *at)
        .map(|(_, ask)| ask);
    Cues {
        ask: english.or(spanish),
        negated: words
            .iter()
            .any(|w| NEGATIONS.contains(&w.as_str()) || w.ends_with("n't") || w.ends_with("n’t")),
    }
}

impl bm25::Tokenizer for Words {
    fn tokenize(&self, input_text: &str) -> Vec<String> {
        self.words(input_text).into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cues_tell_the_question_s_kind_and_negation() {
        let c = |t: &str| cues(t);
        assert_eq!(c("Why must I verify my identity?").ask, Some(Ask::Why));
        assert_eq!(c("How do I verify my identity?").ask, Some(Ask::How));
        assert_eq!(c("how much is delivery").ask, Some(Ask::HowMuch));
        assert_eq!(c("How long does it take?").ask, Some(Ask::When));
        assert_eq!(c("¿Cuándo abren?").ask, Some(Ask::When));
        assert_eq!(c("¿Por qué no llega?").ask, Some(Ask::Why));
        assert_eq!(
            c("Dijo que como siempre").ask,
            None,
            "unaccented: conjunctions"
        );
        assert_eq!(c("my card arrived").ask, None);
        assert!(c("that's not true").negated);
        assert!(c("It doesn't work").negated && c("it doesnt work").negated);
        assert!(c("No funciona").negated);
        assert!(!c("that's true").negated);
    }

    #[test]
    fn stop_words_go_and_both_languages_stem_to_meet() {
        let w = Words::new();
        assert_eq!(w.words("What are the opening hours?").len(), 2);
        assert!(
            w.words("¿Cuándo están abiertos?")
                .iter()
                .all(|s| !s.is_empty())
        );
        let t = bm25::Tokenizer::tokenize(&w, "deliveries");
        assert!(t.contains(&"deliveri".to_owned()), "{t:?}");
        // Accents fold: the Spanish word with or without them is one token.
        assert_eq!(
            bm25::Tokenizer::tokenize(&w, "envío"),
            bm25::Tokenizer::tokenize(&w, "envio")
        );
    }
}
