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

/// `text`'s words lowercased and accent-folded, joined and framed by single spaces, so a phrase
/// framed the same way matches whole words only (`" hablar con alguien "`).
pub fn framed(text: &str) -> String {
    static PLAIN: std::sync::LazyLock<bm25::DefaultTokenizer> =
        std::sync::LazyLock::new(plain_tokenizer);
    format!(" {} ", PLAIN.tokenize(text).join(" "))
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

impl bm25::Tokenizer for Words {
    fn tokenize(&self, input_text: &str) -> Vec<String> {
        self.words(input_text).into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
