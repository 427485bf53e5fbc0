//! τ-Knowledge banking (tau2-bench): does the model's context hold what a task needs? Its 698
//! documents become the knowledge base (one file `<id>.md` each: `# title`, then the content);
//! each of its 97 tasks names the documents it requires. Asked with the customer's opening line
//! ([`opening_line`]) and with the whole scenario text, the sections [`Index::context`] gives
//! the model at a token budget are mapped back to their documents. There is no training split:
//! nothing is chosen on it.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use anyhow::Context;
use brain::knowledge::Index;
use serde::Deserialize;

#[derive(Deserialize)]
struct Document {
    id: String,
    title: String,
    content: String,
}

#[derive(Deserialize, Debug, Clone)]
struct Scenario {
    instructions: String,
}

#[derive(Deserialize, Debug, Clone, Default)]
struct Criteria {
    /// The actions a right conversation takes (absent or null in some tasks).
    #[serde(default)]
    actions: Option<Vec<Action>>,
}

#[derive(Deserialize, Debug, Clone)]
struct Action {
    name: String,
}

/// One task: the customer's instructions and the documents it requires.
#[derive(Deserialize, Debug, Clone)]
pub struct Task {
    /// `task_001` …
    pub id: String,
    user_scenario: Scenario,
    /// Document ids.
    pub required_documents: Vec<String>,
    #[serde(default)]
    evaluation_criteria: Criteria,
}

impl Task {
    /// The role-play instructions (what the simulated customer is told).
    pub fn scenario(&self) -> &str {
        &self.user_scenario.instructions
    }

    /// Whether a right conversation transfers the customer to a person.
    pub fn expects_transfer(&self) -> bool {
        self.evaluation_criteria
            .actions
            .iter()
            .flatten()
            .any(|a| a.name == "transfer_to_human_agents")
    }
}

/// The knowledge base and the tasks.
pub struct Tau {
    /// The documents as knowledge files (`<id>.md`, Markdown).
    pub files: Vec<(String, String)>,
    /// The tasks, in file order.
    pub tasks: Vec<Task>,
}

/// Reads `documents.json` and `tasks.json` in `dir`.
pub fn load(dir: &Path) -> anyhow::Result<Tau> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .with_context(|| format!("{}", dir.join(name).display()))
    };
    let docs: Vec<Document> = serde_json::from_str(&read("documents.json")?)?;
    let tasks: Vec<Task> = serde_json::from_str(&read("tasks.json")?)?;
    let files = docs
        .into_iter()
        .map(|d| {
            (
                format!("{}.md", d.id),
                format!("# {}\n\n{}", d.title, d.content),
            )
        })
        .collect();
    Ok(Tau { files, tasks })
}

/// The sentences of `text` (split after `.`, `!` or `?` followed by white space, and at line
/// breaks), trimmed, Markdown emphasis left out.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.replace("**", "").lines() {
        let mut start = 0;
        let b = line.as_bytes();
        for i in 0..b.len() {
            if matches!(b[i], b'.' | b'!' | b'?')
                && b.get(i + 1).is_none_or(|c| c.is_ascii_whitespace())
            {
                out.push(line[start..=i].trim().to_owned());
                start = i + 1;
            }
        }
        out.push(line[start..].trim().to_owned());
    }
    out.retain(|s| s.split_whitespace().count() >= 3);
    out
}

/// The words quoted after the first `marker` ("Opening", "Start") on its line, up to the
/// closing quote (which may be on a later line), spaces collapsed.
fn quoted_after(instructions: &str, marker: &str) -> Option<String> {
    let rest = &instructions[instructions.find(marker)?..];
    let line_end = rest.find('\n').unwrap_or(rest.len());
    let open = rest[..line_end].find('"')?;
    let len = rest[open + 1..].find('"')?;
    let quote = &rest[open + 1..open + 1 + len];
    Some(quote.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The customer's opening line, derived from the instructions by a fixed rule (tau2-bench has
/// none; its simulated customer writes one): the words quoted after "Opening" (71 tasks script
/// it so) or else after "Start"; else the first sentence saying what the customer wants
/// ("want", "looking for", "need", "would like"), the role-play preamble left out; else the
/// first sentence after the preamble.
pub fn opening_line(instructions: &str) -> String {
    if let Some(q) =
        quoted_after(instructions, "Opening").or_else(|| quoted_after(instructions, "Start"))
    {
        return q;
    }
    let preamble = |s: &str| {
        let l = s.to_lowercase();
        l.contains("playing the role") || l.contains("your character") || l.starts_with("you are ")
    };
    let all = sentences(instructions);
    let wants = ["want", "looking for", "need", "would like"];
    all.iter()
        .find(|s| !preamble(s) && wants.iter().any(|w| s.to_lowercase().contains(w)))
        .or_else(|| all.iter().find(|s| !preamble(s)))
        .or(all.first())
        .cloned()
        .unwrap_or_default()
}

/// What the model's context held for the tasks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TauReport {
    /// Estimated tokens of context (`KNOWLEDGE_CONTEXT_TOKENS`).
    pub budget: usize,
    /// Tasks.
    pub tasks: usize,
    /// Opening lines whose context held a required document (or that an FAQ entry of a
    /// required document answered without the model).
    pub opening_hit: usize,
    /// Opening lines an FAQ entry answered without the model.
    pub opening_faq: usize,
    /// Mean share of a task's required documents in the context of its opening line.
    pub opening_recall: f64,
    /// Mean share of a task's required documents in the context of its scenario text.
    pub scenario_recall: f64,
    /// Mean sections in the opening lines' contexts.
    pub sections: f64,
    /// Ranked by meaning too (vectors), not by words alone.
    pub fused: bool,
}

/// The documents (ids) of the sections in `query`'s context, and whether an FAQ entry
/// answered it without the model (then the document of that entry only).
fn context_docs(
    index: &Index,
    query: &str,
    vector: Option<&[f32]>,
    budget: usize,
) -> (HashSet<String>, bool, usize) {
    if let Some(hit) = index
        .faq_with(query, vector)
        .filter(brain::knowledge::Hit::is_direct)
    {
        let doc = hit.entry.file.trim_end_matches(".md").to_owned();
        return (HashSet::from([doc]), true, 0);
    }
    let chunks = index.context_with(query, vector, budget);
    let n = chunks.len();
    let docs = chunks
        .into_iter()
        .map(|c| c.file.trim_end_matches(".md").to_owned())
        .collect();
    (docs, false, n)
}

fn recall(found: &HashSet<String>, required: &[String]) -> f64 {
    if required.is_empty() {
        return 0.0;
    }
    required.iter().filter(|d| found.contains(*d)).count() as f64 / required.len() as f64
}

/// Asks every task's opening line and scenario text at `budget` estimated tokens.
pub fn evaluate(tau: &Tau, index: &Index, budget: usize) -> TauReport {
    evaluate_with(tau, index, budget, None).expect("no vectors to compute")
}

/// [`evaluate`], by meaning too with `meanings` (the index and the questions get vectors).
pub fn evaluate_with(
    tau: &Tau,
    index: &Index,
    budget: usize,
    mut meanings: Option<&mut crate::meaning::Meanings>,
) -> anyhow::Result<TauReport> {
    let openings: Vec<String> = tau
        .tasks
        .iter()
        .map(|t| opening_line(t.scenario()))
        .collect();
    if let Some(m) = meanings.as_deref_mut() {
        m.ready(
            index,
            openings
                .iter()
                .map(String::as_str)
                .chain(tau.tasks.iter().map(|t| t.scenario())),
        )?;
    }
    let meanings = meanings.as_deref();
    let vector = |q: &str| meanings.and_then(|m| m.of(q));
    let mut r = TauReport {
        budget,
        tasks: tau.tasks.len(),
        fused: meanings.is_some(),
        ..TauReport::default()
    };
    let (mut opening, mut scenario, mut sections) = (0.0, 0.0, 0usize);
    for (t, open) in tau.tasks.iter().zip(&openings) {
        let (docs, faq, n) = context_docs(index, open, vector(open), budget);
        r.opening_faq += usize::from(faq);
        r.opening_hit += usize::from(t.required_documents.iter().any(|d| docs.contains(d)));
        opening += recall(&docs, &t.required_documents);
        sections += n;
        let (docs, _, _) = context_docs(index, t.scenario(), vector(t.scenario()), budget);
        scenario += recall(&docs, &t.required_documents);
    }
    let n = r.tasks.max(1) as f64;
    r.opening_recall = opening / n;
    r.scenario_recall = scenario / n;
    r.sections = sections as f64 / n;
    Ok(r)
}

impl TauReport {
    /// As JSON (for `--json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": "tau-banking",
            "fused": self.fused,
            "budget_tokens": self.budget,
            "tasks": self.tasks,
            "opening_line_required_document_in_context": self.opening_hit as f64 / self.tasks.max(1) as f64,
            "opening_line_answered_by_faq": self.opening_faq,
            "opening_line_recall": self.opening_recall,
            "scenario_recall": self.scenario_recall,
            "sections_per_context": self.sections,
        })
    }
}

impl fmt::Display for TauReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let share = |a: usize| 100.0 * a as f64 / self.tasks.max(1) as f64;
        writeln!(
            f,
            "tau-banking ({}, context of {} tokens): {} tasks",
            if self.fused {
                "words + meaning"
            } else {
                "lexical"
            },
            self.budget,
            self.tasks
        )?;
        writeln!(
            f,
            "  opening line: a required document in the context {:.1} % ({} answered by an FAQ entry), recall {:.3}, {:.1} sections",
            share(self.opening_hit),
            self.opening_faq,
            self.opening_recall,
            self.sections
        )?;
        writeln!(f, "  scenario text: recall {:.3}", self.scenario_recall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opening_line_is_the_scripted_start_else_what_the_customer_wants() {
        let quoted = "You are playing the role of a customer.\n\n**Start naturally:** \"Hi, is my card blocked abroad?\" Then wait.";
        assert_eq!(opening_line(quoted), "Hi, is my card blocked abroad?");
        let scripted = "You want help.\n**Opening:** \"Hi, I need help.\nMy card was declined.\"\n- Start with \"later\"";
        assert_eq!(
            opening_line(scripted),
            "Hi, I need help. My card was declined."
        );
        let wants = "You are playing the role of a customer. Your character is Ana, who wants a loan.\n\nYou live in Lisbon. You're looking for a card with no fees. You will not pay.";
        assert_eq!(
            opening_line(wants),
            "You're looking for a card with no fees."
        );
        let neither = "**Your character:** You are Mei, 33.\n\n**Your situation:** You lost your wallet today.";
        assert_eq!(
            opening_line(neither),
            "Your situation: You lost your wallet today."
        );
    }

    #[test]
    fn a_context_counts_the_documents_of_its_sections() {
        let tau = Tau {
            files: vec![
                (
                    "doc_a.md".into(),
                    "# Cards\n\n## Fees abroad\nNo foreign fees on Gold.".into(),
                ),
                (
                    "doc_b.md".into(),
                    "# Loans\n\n## Rates\nLoans cost 5 % a year.".into(),
                ),
                (
                    "doc_c.md".into(),
                    "# Branches\n\n## Hours\nOpen 9 to 5.".into(),
                ),
            ],
            tasks: vec![Task {
                id: "t".into(),
                user_scenario: Scenario {
                    instructions: "You want to know the fees abroad on your card and loan rates."
                        .into(),
                },
                required_documents: vec!["doc_a".into(), "doc_b".into(), "doc_c".into()],
                evaluation_criteria: Criteria::default(),
            }],
        };
        let index = Index::build(&tau.files);
        let r = evaluate(&tau, &index, 4000);
        assert_eq!(r.opening_hit, 1);
        assert!((r.opening_recall - 2.0 / 3.0).abs() < 1e-9, "{r:?}");
        let tight = evaluate(&tau, &index, 12);
        assert!(tight.opening_recall < r.opening_recall, "{tight:?}");
    }
}
