//! `eval-kb [--data DIR] [--held-out] [--typos] [--json] [--context-tokens N]`: the
//! answer-quality benchmark (see the library's docs), and τ-Knowledge banking's contexts at
//! `N` estimated tokens (default `KNOWLEDGE_CONTEXT_TOKENS`' default; see `evalkb::tau`). The data folder defaults to `$SB_EVAL_DATA`, else the `shared/eval-data`
//! folder beside the project; without it the benchmark says it skipped and succeeds.
//! `--held-out` asks held-out training rows instead of the test split (what thresholds are
//! chosen on); `--typos` puts a typo in every question (`evalkb::with_typo`).

use std::path::PathBuf;

use anyhow::bail;
use brain::config::{HANDOFF_PHRASES, phrases};
use brain::rules::Rules;

fn main() -> anyhow::Result<()> {
    let mut data: Option<PathBuf> = std::env::var_os("SB_EVAL_DATA").map(PathBuf::from);
    let mut json = false;
    let mut split = evalkb::Split::Test;
    let mut typos = false;
    let mut fit = false;
    let mut direct = brain::knowledge::DIRECT;
    let mut budget = brain::knowledge::CONTEXT_TOKENS;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data" => match args.next() {
                Some(d) => data = Some(PathBuf::from(d)),
                None => bail!("--data needs a folder"),
            },
            "--json" => json = true,
            "--held-out" => split = evalkb::Split::HeldOut,
            "--typos" => typos = true,
            "--fit" => fit = true,
            "--context-tokens" => match args.next().and_then(|d| d.parse().ok()) {
                Some(t) => budget = t,
                None => bail!("--context-tokens needs a number"),
            },
            "--direct" => match args.next().and_then(|d| d.parse().ok()) {
                Some(d) => direct = d,
                None => bail!("--direct needs a confidence (0 to 1)"),
            },
            other => bail!(
                "unknown option {other} (eval-kb [--data DIR] [--held-out] [--typos] [--json] [--fit] [--direct C] [--context-tokens N])"
            ),
        }
    }
    let data = data.unwrap_or_else(evalkb::default_data);
    if !data.is_dir() {
        println!(
            "eval-kb SKIPPED: no evaluation data at {} (set SB_EVAL_DATA or --data)",
            data.display()
        );
        return Ok(());
    }
    let rules = Rules::with_phrases(&phrases(HANDOFF_PHRASES));
    if fit {
        return fit_calibration(&data, &rules);
    }
    for ds in [
        evalkb::banking77(&data.join("banking77"), split)?,
        evalkb::clinc150(&data.join("clinc150"), split)?,
    ] {
        let ds = if typos { evalkb::misspelt(&ds) } else { ds };
        let report = evalkb::evaluate_at(&ds, &rules, direct)?;
        if typos {
            println!("(every question with a typo: its longest word's middle letter left out)");
        }
        if split == evalkb::Split::HeldOut {
            println!("(held-out training rows, not the test split)");
        }
        if json {
            println!("{}", serde_json::to_string(&report.to_json())?);
        } else {
            print!("{report}");
        }
    }
    let tau_dir = data.join("tau-banking");
    if split == evalkb::Split::Test && !typos && tau_dir.is_dir() {
        let tau = evalkb::tau::load(&tau_dir)?;
        let index = brain::knowledge::Index::build(&tau.files);
        let report = evalkb::tau::evaluate(&tau, &index, budget);
        let handoffs = evalkb::handoff::evaluate(&tau, &evalkb::handoff::requests_file(), &rules)?;
        if json {
            println!("{}", serde_json::to_string(&report.to_json())?);
            println!("{}", serde_json::to_string(&handoffs.to_json())?);
        } else {
            print!("{report}{handoffs}");
        }
    }
    Ok(())
}

/// `--fit`: the calibration fitted on both datasets' held-out training rows (with and without
/// typos), printed as the constant to paste, with what it answers at a few thresholds.
fn fit_calibration(data: &std::path::Path, rules: &Rules) -> anyhow::Result<()> {
    let sets = [
        evalkb::banking77(&data.join("banking77"), evalkb::Split::HeldOut)?,
        evalkb::clinc150(&data.join("clinc150"), evalkb::Split::HeldOut)?,
    ];
    let mut per_set = Vec::new();
    let mut all = Vec::new();
    for ds in &sets {
        let clean = evalkb::samples(ds, rules)?;
        let typo = evalkb::samples(&evalkb::misspelt(ds), rules)?;
        // Each dataset weighs as much as 10,000 questions, whatever its size; where it has
        // questions out of scope, they weigh a fifth of it (a shop's FAQ does not answer
        // everything its customers ask; held-out rows have few of them).
        let both: Vec<&evalkb::Sample> = clean.iter().chain(&typo).collect();
        let outside = both.iter().filter(|s| !s.in_scope).count();
        let inside = both.len() - outside;
        let (w_in, w_out) = if outside == 0 {
            (10_000.0 / inside.max(1) as f64, 0.0)
        } else {
            (8_000.0 / inside.max(1) as f64, 2_000.0 / outside as f64)
        };
        all.extend(both.into_iter().map(|s| evalkb::Sample {
            weight: if s.in_scope { w_in } else { w_out },
            ..*s
        }));
        per_set.push((
            ds.name,
            ds.test.iter().filter(|(_, l)| l.is_some()).count(),
            clean,
        ));
    }
    // The example shop: a small FAQ in two languages, as a shop writes one; it weighs half
    // as much as a dataset.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shop = evalkb::shop_samples(&root, rules)?;
    let outside = shop.iter().filter(|s| !s.in_scope).count();
    let inside = shop.len() - outside;
    all.extend(shop.iter().map(|s| evalkb::Sample {
        weight: if s.in_scope {
            2_500.0 / inside.max(1) as f64
        } else {
            2_500.0 / outside.max(1) as f64
        },
        ..*s
    }));
    let c = evalkb::fit(&all);
    println!("pub const CALIBRATION: Calibration = Calibration {{");
    println!("    bias: {:.3},", c.bias);
    let w: Vec<String> = c.weights.iter().map(|w| format!("{w:.3}")).collect();
    println!("    weights: [{}],", w.join(", "));
    println!("}};");
    for t in [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95] {
        let row: Vec<String> = per_set
            .iter()
            .map(|(name, asked, s)| {
                let (coverage, precision) = evalkb::at_threshold(s, &c, t, *asked);
                format!(
                    "{name} {:.1} % at {:.1} %",
                    100.0 * coverage,
                    100.0 * precision
                )
            })
            .collect();
        let (coverage, precision) = evalkb::at_threshold(&shop, &c, t, inside);
        println!(
            "at {t:.2}: {} | shop {:.1} % at {:.1} %",
            row.join(" | "),
            100.0 * coverage,
            100.0 * precision
        );
    }
    Ok(())
}
