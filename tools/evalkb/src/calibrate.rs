//! The calibration of the FAQ decision's confidence (`eval-kb --fit`): what each question's
//! best match rests on, and the logistic model fitted to whether it was right.

use std::path::Path;

use anyhow::Context;
use brain::knowledge::{Calibration, Entry, FEATURES, Index};
use brain::rules::Rules;

use crate::meaning::Meanings;
use crate::{Dataset, Questions, faq, ratio};

/// A question's best match as the calibration sees it: its evidence's inputs and whether it
/// was right (an out-of-scope question's match never is).
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// [`brain::knowledge::Evidence::features`].
    pub features: [f32; FEATURES],
    /// The best entry was the question's own.
    pub right: bool,
    /// How much it counts in the fit (each dataset counts the same, whatever its size).
    pub weight: f64,
    /// The question has an entry (is not out of scope).
    pub in_scope: bool,
}

/// The best match of every question of `ds` the knowledge base built from its FAQ matches at
/// all (requests for a person left out: they never reach the FAQ).
pub fn samples(
    ds: &Dataset,
    rules: &Rules,
    mut meanings: Option<&mut Meanings>,
) -> anyhow::Result<Vec<Sample>> {
    let (md, answers) = faq(ds)?;
    let index = Index::build(&[("faq.md".to_owned(), md)]);
    if let Some(m) = meanings.as_deref_mut() {
        m.ready(&index, ds.test.iter().map(|(q, _)| q.as_str()))?;
    }
    Ok(samples_of(
        &index,
        &ds.test,
        rules,
        meanings.as_deref(),
        |e| answers.get(&e.answer).map(String::as_str),
    ))
}

/// The example shop's knowledge base (`examples/shop/knowledge`) asked its own evaluation set
/// (`examples/shop/eval.json`: each entry's paraphrases in English and Spanish, and off-topic
/// questions no entry answers), as [`samples`] does: a small shop's FAQ, not an intent dataset.
pub fn shop_samples(
    root: &Path,
    rules: &Rules,
    mut meanings: Option<&mut Meanings>,
) -> anyhow::Result<Vec<Sample>> {
    let dir = root.join("examples/shop/knowledge");
    let mut files = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "md") {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            files.push((name, std::fs::read_to_string(&p)?));
        }
    }
    files.sort();
    let index = Index::build(&files);
    let path = root.join("examples/shop/eval.json");
    let eval: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let mut questions: Questions = Vec::new();
    for e in eval["entries"].as_array().into_iter().flatten() {
        let q = e["question"].as_str().unwrap_or_default().to_owned();
        for (key, label) in [
            ("match_en", Some(&q)),
            ("match_es", Some(&q)),
            ("off_en", None),
            ("off_es", None),
        ] {
            for p in e[key].as_array().into_iter().flatten() {
                questions.push((p.as_str().unwrap_or_default().to_owned(), label.cloned()));
            }
        }
    }
    if let Some(m) = meanings.as_deref_mut() {
        m.ready(&index, questions.iter().map(|(q, _)| q.as_str()))?;
    }
    Ok(samples_of(
        &index,
        &questions,
        rules,
        meanings.as_deref(),
        |e| Some(e.question.as_str()),
    ))
}

/// The best match of each of `questions` in `index` whose entry `label_of` names.
fn samples_of<'i>(
    index: &'i Index,
    questions: &[(String, Option<String>)],
    rules: &Rules,
    meanings: Option<&Meanings>,
    label_of: impl Fn(&'i Entry) -> Option<&'i str>,
) -> Vec<Sample> {
    questions
        .iter()
        .filter(|(q, _)| !rules.asks_for_person(q))
        .filter_map(|(q, label)| {
            let (best, evidence) = index.evidence_with(q, meanings.and_then(|m| m.of(q)))?;
            let given = label_of(&index.entries()[best]);
            let right = label.as_deref().is_some_and(|l| given == Some(l));
            Some(Sample {
                features: evidence.features(),
                right,
                weight: 1.0,
                in_scope: label.is_some(),
            })
        })
        .collect()
}

/// The logistic model of `samples` (Newton's method on the log-likelihood with a small ridge,
/// which keeps it finite when a feature separates the classes).
pub fn fit(samples: &[Sample]) -> Calibration {
    const N: usize = FEATURES + 1;
    const RIDGE: f64 = 1e-3;
    let row = |s: &Sample| {
        let mut x = [1.0f64; N];
        for (k, f) in s.features.iter().enumerate() {
            x[k + 1] = f64::from(*f);
        }
        x
    };
    let mut beta = [0.0f64; N];
    for _ in 0..50 {
        let mut grad = [0.0f64; N];
        let mut hess = [[0.0f64; N]; N];
        for s in samples {
            let x = row(s);
            let z: f64 = x.iter().zip(&beta).map(|(a, b)| a * b).sum();
            let p = 1.0 / (1.0 + (-z).exp());
            let y = if s.right { 1.0 } else { 0.0 };
            for a in 0..N {
                grad[a] += s.weight * (y - p) * x[a];
                for b in 0..N {
                    hess[a][b] += s.weight * p * (1.0 - p) * x[a] * x[b];
                }
            }
        }
        for a in 1..N {
            grad[a] -= RIDGE * beta[a];
            hess[a][a] += RIDGE;
        }
        let step = solve(hess, grad);
        let size: f64 = step.iter().map(|d| d.abs()).sum();
        for (b, d) in beta.iter_mut().zip(step) {
            *b += d;
        }
        if size < 1e-9 {
            break;
        }
    }
    let mut weights = [0.0f32; FEATURES];
    for (w, b) in weights.iter_mut().zip(&beta[1..]) {
        *w = *b as f32;
    }
    Calibration {
        bias: beta[0] as f32,
        weights,
    }
}

/// `a x = b` by Gaussian elimination with partial pivoting (`a` is positive definite here).
fn solve<const N: usize>(mut a: [[f64; N]; N], mut b: [f64; N]) -> [f64; N] {
    for col in 0..N {
        let pivot = (col..N)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        let d = a[col][col];
        if d.abs() < 1e-12 {
            continue;
        }
        let pivot_row = a[col];
        for r in col + 1..N {
            let f = a[r][col] / d;
            for (x, p) in a[r][col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = [0.0f64; N];
    for r in (0..N).rev() {
        let s: f64 = (r + 1..N).map(|c| a[r][c] * x[c]).sum();
        x[r] = if a[r][r].abs() < 1e-12 {
            0.0
        } else {
            (b[r] - s) / a[r][r]
        };
    }
    x
}

/// Share of `samples` a calibration answers at `threshold`, and the share of those right.
pub fn at_threshold(
    samples: &[Sample],
    c: &Calibration,
    threshold: f32,
    asked: usize,
) -> (f64, f64) {
    let mut answered = 0;
    let mut right = 0;
    for s in samples {
        if c.apply_features(&s.features) >= threshold {
            answered += 1;
            right += usize::from(s.right);
        }
    }
    (ratio(answered, asked), ratio(right, answered))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(x: f32, right: bool) -> Sample {
        let mut features = [0.0; FEATURES];
        features[0] = x;
        features[1] = 0.5;
        Sample {
            features,
            right,
            weight: 1.0,
            in_scope: true,
        }
    }

    #[test]
    fn the_fit_learns_which_evidence_is_right_and_how_often() {
        // Right three times in four above 0.5, once in four below.
        let mut samples = Vec::new();
        for i in 0..400 {
            let x = (i % 100) as f32 / 100.0;
            let right = if x >= 0.5 { i % 4 != 0 } else { i % 4 == 0 };
            samples.push(sample(x, right));
        }
        let c = fit(&samples);
        assert!(c.weights[0] > 1.0, "{c:?}");
        let high = c.apply_features(&sample(0.9, true).features);
        let low = c.apply_features(&sample(0.1, true).features);
        assert!(high > 0.75 && low < 0.25, "{high} {low}");
        // Calibrated: the mean predicted chance is the share right.
        let mean: f32 = samples
            .iter()
            .map(|s| c.apply_features(&s.features))
            .sum::<f32>()
            / samples.len() as f32;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let (coverage, precision) = at_threshold(&samples, &c, 0.5, samples.len());
        assert!((coverage - 0.5).abs() < 0.02, "{coverage}");
        assert!((precision - 0.75).abs() < 0.02, "{precision}");
    }
}
