//! Typos in a customer's question: a word the knowledge base never uses, close to one it does
//! ("delivry", "refnd", "shiping"), is read as that word. Only words of five letters or more are
//! corrected (one edit; two from nine letters), never numbers, and a word the knowledge base
//! uses is never touched; among equally close words the most frequent wins.

use std::collections::HashMap;

/// The knowledge base's words (folded as [`super::framed`] folds them), by length.
#[derive(Debug, Default)]
pub struct Vocabulary {
    by_len: HashMap<usize, Vec<(String, u32)>>,
}

/// The shortest word corrected, and the length from which two edits are allowed.
const SHORTEST: usize = 5;
const TWO_EDITS: usize = 9;
/// Words shorter than this are corrected only to words that start with the same letter
/// ("dream" is not a typo of "cream").
const SAME_START: usize = 7;

impl Vocabulary {
    /// The words of `texts`.
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut count: HashMap<String, u32> = HashMap::new();
        for t in texts {
            for w in super::framed(t).split_whitespace() {
                *count.entry(w.to_owned()).or_default() += 1;
            }
        }
        let mut by_len: HashMap<usize, Vec<(String, u32)>> = HashMap::new();
        for (w, n) in count {
            by_len.entry(w.chars().count()).or_default().push((w, n));
        }
        for words in by_len.values_mut() {
            words.sort();
        }
        Self { by_len }
    }

    fn knows(&self, word: &str) -> bool {
        self.by_len
            .get(&word.chars().count())
            .is_some_and(|ws| ws.binary_search_by(|(w, _)| w.as_str().cmp(word)).is_ok())
    }

    /// The known word `word` is a typo of, if any.
    fn closest(&self, word: &str) -> Option<&str> {
        let len = word.chars().count();
        if len < SHORTEST || !word.chars().all(char::is_alphabetic) || self.knows(word) {
            return None;
        }
        let max = if len >= TWO_EDITS { 2 } else { 1 };
        let mut best: Option<(usize, u32, &str)> = None;
        for l in len - max..=len + max {
            for (w, n) in self.by_len.get(&l).into_iter().flatten() {
                if len < SAME_START && w.chars().next() != word.chars().next() {
                    continue;
                }
                if bag_distance(word, w) > max {
                    continue;
                }
                let d = strsim::osa_distance(word, w);
                if d > max {
                    continue;
                }
                let better = best.is_none_or(|(bd, bn, _)| d < bd || (d == bd && *n > bn));
                if better {
                    best = Some((d, *n, w));
                }
            }
        }
        best.map(|(_, _, w)| w)
    }

    /// `query` with its typos corrected (its words folded), or `None` when it has none. A word
    /// written more than once is looked up once (long messages repeat theirs).
    pub fn correct(&self, query: &str) -> Option<String> {
        let framed = super::framed(query);
        let mut changed = false;
        let mut seen: std::collections::HashMap<&str, Option<&str>> =
            std::collections::HashMap::new();
        let words: Vec<&str> = framed
            .split_whitespace()
            .map(
                |w| match *seen.entry(w).or_insert_with(|| self.closest(w)) {
                    Some(c) => {
                        changed = true;
                        c
                    }
                    None => w,
                },
            )
            .collect();
        changed.then(|| words.join(" "))
    }
}

/// A lower bound of the edit distance between `a` and `b` (transpositions included): the
/// larger of the letters one has that the other lacks, counted as multisets. Cheap, so the
/// exact distance is computed only for words it does not rule out. Letters outside a–z count
/// together, which keeps it a lower bound.
fn bag_distance(a: &str, b: &str) -> usize {
    let mut counts = [0i32; 27];
    let slot = |c: char| {
        if c.is_ascii_lowercase() {
            (c as u8 - b'a') as usize
        } else {
            26
        }
    };
    for c in a.chars() {
        counts[slot(c)] += 1;
    }
    for c in b.chars() {
        counts[slot(c)] -= 1;
    }
    let more: i32 = counts.iter().filter(|n| **n > 0).sum();
    let less: i32 = -counts.iter().filter(|n| **n < 0).sum::<i32>();
    more.max(less) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_of_a_known_word_is_read_as_it_and_nothing_else_changes() {
        let v = Vocabulary::build([
            "How much does delivery cost? Delivery is free over £60.",
            "Can I get a refund? Refunds within 30 days.",
            "International shipping to the EU.",
        ]);
        assert_eq!(
            v.correct("how much is delivry").as_deref(),
            Some("how much is delivery")
        );
        assert_eq!(
            v.correct("i want a refnd").as_deref(),
            Some("i want a refund")
        );
        assert_eq!(
            v.correct("internatinal shiping").as_deref(),
            Some("international shipping")
        );
        assert_eq!(v.correct("delivery cost"), None, "known words stay");
        assert_eq!(v.correct("do you sell pizza"), None, "nothing close");
        assert_eq!(v.correct("cst 12345"), None, "short words and numbers stay");
    }

    #[test]
    fn the_cheap_bound_never_exceeds_the_edit_distance() {
        let words = [
            "shipping",
            "shiping",
            "shpiping",
            "delivery",
            "deliveyr",
            "ñandú",
            "nandu",
            "cafés",
            "cafe",
            "",
            "abc",
            "cba",
            "international",
        ];
        for a in words {
            for b in words {
                assert!(
                    bag_distance(a, b) <= strsim::osa_distance(a, b),
                    "{a:?} {b:?}"
                );
            }
        }
        assert_eq!(bag_distance("shipping", "shpiping"), 0);
        assert_eq!(bag_distance("delivery", "pizza"), 7, "all but the i");
    }
}
