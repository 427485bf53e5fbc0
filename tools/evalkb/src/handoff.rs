//! Missed and false handoffs on τ-Knowledge banking's customers' own words. The requests for a
//! person are the lines the tasks that expect a transfer script for their customer
//! (`data/tau-handoff-requests.json`: 24 lines of 9 tasks, picked by hand, verbatim — the
//! instructions' other lines are asides to the simulator, not messages); everything else is
//! every quoted line (three words or more) of the tasks that expect no transfer, taken
//! mechanically. A line counts as handed off when `Rules::asks_for_person` says so.

use std::fmt;
use std::path::Path;

use anyhow::Context;
use brain::rules::Rules;
use serde::Deserialize;

use crate::tau::Tau;

#[derive(Deserialize)]
struct Request {
    text: String,
}

/// What the handoff rule did with the two sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HandoffReport {
    /// Requests for a person.
    pub requests: usize,
    /// Requests not handed off.
    pub missed: Vec<String>,
    /// Other customer lines.
    pub others: usize,
    /// Other lines handed off.
    pub false_handoffs: Vec<String>,
}

/// The quoted lines of `text` with three words or more (quotes closed on their line).
fn quoted(text: &str) -> Vec<String> {
    text.lines()
        .flat_map(|line| {
            let parts: Vec<&str> = line.split('"').collect();
            // An odd count of quotes on a line: the last part is not a quote.
            let closed = if parts.len() % 2 == 1 {
                parts.len()
            } else {
                parts.len() - 1
            };
            parts[..closed]
                .iter()
                .skip(1)
                .step_by(2)
                .map(|q| q.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|q| q.split_whitespace().count() >= 3)
        .collect()
}

/// Asks `rules` every request (`requests_file`) and every quoted line of the τ tasks that
/// expect no transfer.
pub fn evaluate(tau: &Tau, requests_file: &Path, rules: &Rules) -> anyhow::Result<HandoffReport> {
    let requests: Vec<Request> = serde_json::from_str(
        &std::fs::read_to_string(requests_file)
            .with_context(|| requests_file.display().to_string())?,
    )?;
    let mut r = HandoffReport {
        requests: requests.len(),
        ..HandoffReport::default()
    };
    for q in &requests {
        if !rules.asks_for_person(&q.text) {
            r.missed.push(q.text.clone());
        }
    }
    for t in tau.tasks.iter().filter(|t| !t.expects_transfer()) {
        for line in quoted(t.scenario()) {
            r.others += 1;
            if rules.asks_for_person(&line) {
                r.false_handoffs.push(line);
            }
        }
    }
    Ok(r)
}

/// The hand-picked requests beside this crate.
pub fn requests_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/tau-handoff-requests.json")
}

impl HandoffReport {
    /// As JSON (for `--json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": "tau-banking handoffs",
            "requests": self.requests,
            "missed": self.missed,
            "other_lines": self.others,
            "false_handoffs": self.false_handoffs,
        })
    }
}

impl fmt::Display for HandoffReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "tau-banking handoffs: {} of {} requests for a person missed, {} of {} other customer lines handed off",
            self.missed.len(),
            self.requests,
            self.false_handoffs.len(),
            self.others
        )?;
        for m in &self.missed {
            writeln!(f, "  missed: {m}")?;
        }
        for m in &self.false_handoffs {
            writeln!(f, "  handed off: {m}")?;
        }
        Ok(())
    }
}
