//! The index matched by meaning: its vectors, set once computed, and what a question's vector
//! is compared with — the entries' phrasings (for the FAQ decision) and the sections (for the
//! model's context).

use super::{Chunk, Evidence, Index};
use crate::knowledge::embed::{Vector, Vectors, cosine};
use crate::knowledge::evidence::{Meaning, VOTERS};

impl Index {
    /// What vectors are computed of, in [`Vectors`]' order: every entry's phrasings, and each
    /// section as its heading line and text.
    pub fn embedding_texts(&self) -> (Vec<String>, Vec<String>) {
        let phrasings = self
            .entries
            .iter()
            .flat_map(|e| e.phrasings.iter().cloned())
            .collect();
        let chunks = self
            .chunks
            .iter()
            .map(|c| format!("{}\n{}", c.title, c.text))
            .collect();
        (phrasings, chunks)
    }

    /// Gives the index its vectors (from then on questions with a vector are matched by
    /// meaning too). Ignored when they do not fit its texts, or it has them already.
    pub fn set_vectors(&self, v: Vectors) -> bool {
        let dims = v
            .phrasings
            .first()
            .or(v.chunks.first())
            .map_or(0, |x| x.len());
        if v.phrasings.len() != self.phrasings.len()
            || v.chunks.len() != self.chunks.len()
            || v.phrasings.iter().chain(&v.chunks).any(|x| x.len() != dims)
        {
            return false;
        }
        self.vectors.set(v).is_ok()
    }

    /// The index has its vectors.
    pub fn has_vectors(&self) -> bool {
        self.vectors.get().is_some()
    }

    /// How close `question`'s vector is to each entry (none without vectors, or of another
    /// length).
    pub(super) fn meanings(&self, question: &[f32]) -> Option<Vec<Meaning>> {
        let v = self.vectors.get()?;
        // One entry has no runner-up to be told apart from: its margin would mean nothing.
        let fits = v
            .phrasings
            .first()
            .is_some_and(|p| p.len() == question.len());
        if self.entries.len() < 2 || !fits {
            return None;
        }
        let mut best = vec![-1.0f32; self.entries.len()];
        let mut closest: Vec<(f32, usize)> = Vec::with_capacity(self.phrasings.len());
        for ((entry, _, _), p) in self.phrasings.iter().zip(&v.phrasings) {
            let c = cosine(question, p);
            best[*entry] = best[*entry].max(c);
            closest.push((c, *entry));
        }
        let mut votes = vec![0usize; self.entries.len()];
        let k = VOTERS.min(closest.len());
        if k > 0 {
            closest.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            for (_, e) in &closest[..k] {
                votes[*e] += 1;
            }
        }
        let n = best.len() as f32;
        let mean = best.iter().sum::<f32>() / n;
        let spread = (best.iter().map(|c| (c - mean).powi(2)).sum::<f32>() / n).sqrt();
        let (mut first, mut second) = (f32::MIN, f32::MIN);
        for &c in &best {
            if c > first {
                (first, second) = (c, first);
            } else if c > second {
                second = c;
            }
        }
        Some(
            best.iter()
                .zip(votes)
                .map(|(&cosine, votes)| Meaning {
                    cosine,
                    // Against the best other entry (the runner-up for the closest one).
                    margin: cosine
                        - if cosine >= first {
                            second.max(-1.0)
                        } else {
                            first
                        },
                    spread,
                    votes,
                })
                .collect(),
        )
    }

    /// The sections' cosines to `question` (none without vectors, or of another length).
    fn section_cosines(&self, question: &[f32]) -> Option<Vec<f32>> {
        let v = self.vectors.get()?;
        if v.chunks.first().is_none_or(|c| c.len() != question.len()) {
            return None;
        }
        Some(
            v.chunks
                .iter()
                .map(|c: &Vector| cosine(question, c))
                .collect(),
        )
    }

    /// Up to `k` sections ranked by relevance to `query` — by its words and, given the
    /// question's vector and the index's, by meaning: reciprocal rank fusion of the two
    /// rankings (each section scores `1 / (60 + rank)` in each; Cormack et al., 2009).
    pub fn ranked_sections_with(
        &self,
        query: &str,
        question: Option<&[f32]>,
        k: usize,
    ) -> Vec<(&Chunk, f32)> {
        let Some(cosines) = question.and_then(|q| self.section_cosines(q)) else {
            return self.ranked_sections(query, k);
        };
        const K: f32 = 60.0;
        let mut fused = vec![0.0f32; self.chunks.len()];
        for (rank, (i, _)) in self.lexical_sections(query, k).into_iter().enumerate() {
            fused[i] += 1.0 / (K + rank as f32 + 1.0);
        }
        // By meaning, only the sections that stand out from the rest (two standard deviations
        // above the mean cosine): a greeting or an off-topic question brings none of its own,
        // and a model call's context stays as small as words alone would make it.
        let n = cosines.len().max(1) as f32;
        let mean = cosines.iter().sum::<f32>() / n;
        let spread = (cosines.iter().map(|c| (c - mean).powi(2)).sum::<f32>() / n).sqrt();
        let mut by_meaning: Vec<usize> = (0..self.chunks.len())
            .filter(|i| cosines[*i] > mean + 2.0 * spread)
            .collect();
        by_meaning.sort_by(|a, b| cosines[*b].total_cmp(&cosines[*a]).then(a.cmp(b)));
        for (rank, i) in by_meaning.into_iter().take(k).enumerate() {
            fused[i] += 1.0 / (K + rank as f32 + 1.0);
        }
        let mut ranked: Vec<(usize, f32)> = fused
            .into_iter()
            .enumerate()
            .filter(|(_, s)| *s > 0.0)
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        ranked
            .into_iter()
            .map(|(i, s)| (&self.chunks[i], s))
            .collect()
    }

    /// [`Index::evidence`] with the question's vector: of the entry best by words and the
    /// one closest in meaning, the one the calibration is surer of.
    pub fn evidence_with(
        &self,
        query: &str,
        question: Option<&[f32]>,
    ) -> Option<(usize, Evidence)> {
        let all = self.all_evidence(query, question)?;
        let by_words = (0..all.len()).max_by(|a, b| all[*a].score().total_cmp(&all[*b].score()))?;
        let cosine = |i: &usize| all[*i].meaning.map_or(f32::MIN, |m| m.cosine);
        let by_meaning = (0..all.len())
            .filter(|i| all[*i].meaning.is_some())
            .max_by(|a, b| cosine(a).total_cmp(&cosine(b)));
        let best = match by_meaning {
            Some(m) if m != by_words && all[m].confidence() > all[by_words].confidence() => m,
            _ => by_words,
        };
        Some((best, all[best]))
    }

    /// Every entry with its calibrated confidence for `query` (by meaning too with the
    /// question's vector), surest first.
    pub fn ranked_with(&self, query: &str, question: Option<&[f32]>) -> Vec<(usize, f32)> {
        let Some(all) = self.all_evidence(query, question) else {
            return Vec::new();
        };
        let mut ranked: Vec<(usize, f32)> = all
            .iter()
            .enumerate()
            .map(|(i, e)| (i, e.confidence()))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::embed::normalised;

    const KB: &str = "# Shop\n\n## When do you open?\nNine to five.\n\n\
        ## How much is delivery?\nFour pounds.\n\n## Can I return a jumper?\nWithin 30 days.\n";

    /// Vectors along one axis per entry (and its section): entry `i` points along `i`.
    fn with_axes(index: &Index) {
        let (phrasings, chunks) = index.embedding_texts();
        let axis = |i: usize| normalised((0..4).map(|d| f32::from(u8::from(d == i))).collect());
        let entry_of = |t: &String| index.entries().iter().position(|e| e.phrasings.contains(t));
        assert!(
            index.set_vectors(Vectors {
                phrasings: phrasings
                    .iter()
                    .map(|t| axis(entry_of(t).unwrap()))
                    .collect(),
                chunks: (0..chunks.len()).map(axis).collect(),
            })
        );
        assert!(index.has_vectors());
    }

    #[test]
    fn the_closest_entry_in_meaning_has_the_margin_and_the_votes() {
        let index = Index::build(&[("shop.md".to_owned(), KB.to_owned())]);
        with_axes(&index);
        let q = normalised(vec![0.1, 0.9, 0.1, 0.0]);
        let m = index.meanings(&q).unwrap();
        assert!(
            m[1].margin > 0.5 && m[0].margin < 0.0 && m[2].margin < 0.0,
            "{m:?}"
        );
        assert_eq!(
            m.iter().map(|x| x.votes).sum::<usize>(),
            3,
            "3 phrasings vote"
        );
        assert_eq!(m[1].votes, 1);
        // Chosen by meaning although it shares no word with the question.
        let (best, e) = index.evidence_with("shipping fee?", Some(&q)).unwrap();
        assert_eq!(index.entries()[best].question, "How much is delivery?");
        assert!(e.meaning.is_some() && e.runner_up <= 2.0);
    }

    #[test]
    fn one_entry_alone_is_matched_by_words_only() {
        let index = Index::build(&[(
            "shop.md".to_owned(),
            "## When do you open?\nNine to five.\n".to_owned(),
        )]);
        with_axes(&index);
        let q = normalised(vec![1.0, 0.0, 0.0, 0.0]);
        assert!(index.meanings(&q).is_none(), "no runner-up to tell it from");
        let hit = index.faq_with("is the zebra striped?", Some(&q));
        assert!(hit.is_none_or(|h| !h.by_meaning && !h.is_direct()));
    }

    #[test]
    fn vectors_that_do_not_fit_are_refused() {
        let index = Index::build(&[("shop.md".to_owned(), KB.to_owned())]);
        let (phrasings, chunks) = index.embedding_texts();
        let v = |n: usize| normalised(vec![1.0; n]);
        let mixed = Vectors {
            phrasings: phrasings.iter().map(|_| v(4)).collect(),
            chunks: chunks.iter().map(|_| v(3)).collect(),
        };
        assert!(!index.set_vectors(mixed), "of different lengths");
        let short = Vectors {
            phrasings: vec![v(4)],
            chunks: Vec::new(),
        };
        assert!(!index.set_vectors(short), "fewer than the texts");
        assert!(!index.has_vectors());
    }

    #[test]
    fn meaning_adds_to_the_context_only_sections_that_stand_out() {
        let sections: String = (0..12)
            .map(|i| format!("## Topic {i}\nText about thing{i}.\n\n"))
            .collect();
        let index = Index::build(&[("kb.md".to_owned(), sections)]);
        let (phrasings, chunks) = index.embedding_texts();
        assert!(phrasings.is_empty());
        let dims = chunks.len();
        let axis = |i: usize| normalised((0..dims).map(|d| f32::from(u8::from(d == i))).collect());
        assert!(index.set_vectors(Vectors {
            phrasings: Vec::new(),
            chunks: (0..dims).map(axis).collect(),
        }));
        // A question as close to every section as to any: none comes by meaning.
        let flat = normalised(vec![1.0; dims]);
        assert!(
            index
                .ranked_sections_with("zebra", Some(&flat), 50)
                .is_empty()
        );
        // One close to section 7 brings it, though it shares no word with it.
        let near = normalised((0..dims).map(|d| if d == 7 { 1.0 } else { 0.05 }).collect());
        let ranked = index.ranked_sections_with("zebra", Some(&near), 50);
        assert_eq!(ranked.len(), 1);
        assert!(
            ranked[0].0.title.ends_with("Topic 7"),
            "{}",
            ranked[0].0.title
        );
        // Words and meaning fused: a section found both ways ranks above one found by words.
        let both = index.ranked_sections_with("thing3", Some(&axis(3)), 50);
        assert!(both[0].0.title.ends_with("Topic 3"), "{}", both[0].0.title);
    }
}
