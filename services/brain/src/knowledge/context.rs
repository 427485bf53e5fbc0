//! The model's context: the sections most relevant to a question, as many as a token budget
//! (`KNOWLEDGE_CONTEXT_TOKENS`) holds.

use std::borrow::Cow;

use super::index::{Chunk, Index};

/// Sections looked at for a context: enough to fill the largest budgets with the sections
/// knowledge bases have (a few hundred characters each).
const CANDIDATES: usize = 400;

/// A text's length in tokens, estimated: about four characters a token, the rule of thumb for
/// English with OpenAI's tokenizers (Spanish and Portuguese run a little longer, which the
/// budget's round figure absorbs). An estimate, not a count: the model's tokenizer is not
/// known here, and a context is chosen before every call.
pub fn tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// What a section costs in the prompt: its heading line and its text.
fn cost(chunk: &Chunk) -> usize {
    tokens(&chunk.title) + tokens(&chunk.text) + 2
}

impl Index {
    /// The sections for a model's context on `query`: the most relevant first, each added
    /// while the estimated tokens stay within `budget`; one too large for what is left is
    /// passed over for the less relevant, smaller ones after it. When even the most relevant
    /// is larger than the whole budget, its beginning is given, cut to fit.
    pub fn context(&self, query: &str, budget: usize) -> Vec<Cow<'_, Chunk>> {
        self.context_with(query, None, budget)
    }

    /// [`Index::context`] ranked by meaning too given the question's vector
    /// ([`Index::ranked_sections_with`]).
    pub fn context_with(
        &self,
        query: &str,
        question: Option<&[f32]>,
        budget: usize,
    ) -> Vec<Cow<'_, Chunk>> {
        let ranked = self.ranked_sections_with(query, question, CANDIDATES);
        let mut left = budget;
        let mut chosen: Vec<Cow<'_, Chunk>> = Vec::new();
        for (chunk, _) in &ranked {
            let c = cost(chunk);
            if c <= left {
                left -= c;
                chosen.push(Cow::Borrowed(*chunk));
            }
            if left < 8 {
                break;
            }
        }
        if chosen.is_empty()
            && let Some((first, _)) = ranked.first()
        {
            let room = budget.saturating_sub(tokens(&first.title) + 3) * 4;
            if room > 0 {
                let cut: String = first.text.chars().take(room).collect();
                chosen.push(Cow::Owned(Chunk {
                    text: format!("{}…", cut.trim_end()),
                    ..(*first).clone()
                }));
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> Index {
        let mut faq = String::from("# Shop\n");
        for i in 0..40 {
            faq.push_str(&format!(
                "\n## Delivery to zone {i}\nParcels to zone {i} take {} days by courier.\n",
                i % 5 + 1
            ));
        }
        let long = format!(
            "# Returns\n\n## Returns policy\n{}",
            "Returns are free. ".repeat(200)
        );
        Index::build(&[
            ("delivery.md".into(), faq),
            ("returns.md".into(), long),
            ("hours.md".into(), "# Hours\n\nOpen 9 to 5.".into()),
        ])
    }

    #[test]
    fn the_budget_decides_how_many_sections_go_in() {
        let index = shop();
        let small = index.context("delivery courier parcels", 60);
        let large = index.context("delivery courier parcels", 4000);
        assert!(small.len() >= 2, "{}", small.len());
        assert!(
            large.len() > small.len() * 5,
            "{} vs {}",
            large.len(),
            small.len()
        );
        for (budget, got) in [(60, &small), (4000, &large)] {
            let used: usize = got.iter().map(|c| cost(c)).sum();
            assert!(used <= budget, "{used} > {budget}");
        }
        assert!(large.iter().all(|c| c.file == "delivery.md"));
    }

    #[test]
    fn a_section_too_large_is_passed_over_or_cut_when_it_is_all_there_is() {
        let index = shop();
        let mixed = index.context("returns free parcels courier", 200);
        assert!(!mixed.is_empty());
        assert!(mixed.iter().all(|c| c.file == "delivery.md"), "{mixed:?}");
        let alone = index.context("returns free", 100);
        assert_eq!(alone.len(), 1);
        assert_eq!(alone[0].file, "returns.md");
        assert!(alone[0].text.ends_with('…'));
        assert!(cost(&alone[0]) <= 100, "{}", cost(&alone[0]));
        assert!(index.context("zebra", 4000).is_empty());
    }
}
