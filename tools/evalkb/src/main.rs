//! `eval-kb [--data DIR] [--held-out] [--typos] [--json] [--context-tokens N]`: the
//! answer-quality benchmark (see the library's docs), and τ-Knowledge banking's contexts at
//! `N` estimated tokens (default `KNOWLEDGE_CONTEXT_TOKENS`' default; see `evalkb::tau`). The data folder defaults to `$SB_EVAL_DATA`, else the `shared/eval-data`
//! folder beside the project; without it the benchmark says it skipped and succeeds.
//! `--held-out` asks held-out training rows instead of the test split (what thresholds are
//! chosen on); `--typos` puts a typo in every question (`evalkb::with_typo`).
//! `--webchat` asks the questions end to end through the release binaries' web chat instead
//! (`evalkb::webchat`; scripts/eval-kb builds them).

use std::path::PathBuf;

use anyhow::bail;
use brain::config::{HANDOFF_PHRASES, phrases};
use brain::rules::Rules;

/// The command line.
struct Options {
    data: Option<PathBuf>,
    json: bool,
    split: evalkb::Split,
    typos: bool,
    fit: bool,
    direct: Option<f32>,
    budget: usize,
    embeddings: Option<PathBuf>,
    webchat: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        data: std::env::var_os("SB_EVAL_DATA").map(PathBuf::from),
        json: false,
        split: evalkb::Split::Test,
        typos: false,
        fit: false,
        direct: None,
        budget: brain::knowledge::CONTEXT_TOKENS,
        embeddings: None,
        webchat: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data" => match args.next() {
                Some(d) => o.data = Some(PathBuf::from(d)),
                None => bail!("--data needs a folder"),
            },
            "--json" => o.json = true,
            "--held-out" => o.split = evalkb::Split::HeldOut,
            "--typos" => o.typos = true,
            "--fit" => o.fit = true,
            "--webchat" => o.webchat = true,
            "--embeddings" => match args.next() {
                Some(d) => o.embeddings = Some(PathBuf::from(d)),
                None => bail!("--embeddings needs a sentence-transformers folder"),
            },
            "--context-tokens" => match args.next().and_then(|d| d.parse().ok()) {
                Some(t) => o.budget = t,
                None => bail!("--context-tokens needs a number"),
            },
            "--direct" => match args.next().and_then(|d| d.parse().ok()) {
                Some(d) => o.direct = Some(d),
                None => bail!("--direct needs a confidence (0 to 1)"),
            },
            other => bail!(
                "unknown option {other} (eval-kb [--data DIR] [--held-out] [--typos] [--json] [--fit] [--direct C] [--context-tokens N] [--embeddings DIR] [--webchat])"
            ),
        }
    }
    if o.webchat && (o.fit || o.direct.is_some() || o.budget != brain::knowledge::CONTEXT_TOKENS) {
        bail!(
            "--webchat asks the services as they are: --fit, --direct and --context-tokens do not apply"
        );
    }
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    let Options {
        data,
        json,
        split,
        typos,
        fit,
        direct,
        budget,
        embeddings,
        webchat,
    } = options()?;
    let data = data.unwrap_or_else(evalkb::default_data);
    if !data.is_dir() {
        println!(
            "eval-kb SKIPPED: no evaluation data at {} (set SB_EVAL_DATA or --data)",
            data.display()
        );
        return Ok(());
    }
    if webchat {
        return through_webchat(&data, split, typos, json, embeddings.as_deref());
    }
    let rules = Rules::with_phrases(&phrases(HANDOFF_PHRASES));
    let mut meanings = match &embeddings {
        Some(dir) => Some(evalkb::meaning::Meanings::open(dir)?),
        None => None,
    };
    let direct = direct.unwrap_or(if meanings.is_some() {
        brain::knowledge::DIRECT_MEANING
    } else {
        brain::knowledge::DIRECT
    });
    if fit {
        return fit_calibration(&data, &rules, meanings.as_mut());
    }
    for ds in [
        evalkb::banking77(&data.join("banking77"), split)?,
        evalkb::clinc150(&data.join("clinc150"), split)?,
    ] {
        let ds = if typos { evalkb::misspelt(&ds) } else { ds };
        let report = evalkb::evaluate_at(&ds, &rules, direct, meanings.as_mut())?;
        if let Some(m) = &meanings
            && !json
        {
            let sample: Vec<&str> = ds.test.iter().take(100).map(|(q, _)| q.as_str()).collect();
            let (ms, peak) = m.single_ms(&sample)?;
            println!(
                "  {ms:.1} ms of one core per question for its vector (one at a time, 100 questions); peak memory of this process {peak:.0} MB"
            );
        }
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
        let report = evalkb::tau::evaluate_with(&tau, &index, budget, meanings.as_mut())?;
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

/// `--webchat`: both datasets end to end through the release binaries' web chat
/// ([`evalkb::webchat`]).
fn through_webchat(
    data: &std::path::Path,
    split: evalkb::Split,
    typos: bool,
    json: bool,
    embeddings: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    for ds in [
        evalkb::banking77(&data.join("banking77"), split)?,
        evalkb::clinc150(&data.join("clinc150"), split)?,
    ] {
        let ds = if typos { evalkb::misspelt(&ds) } else { ds };
        let report = rt.block_on(evalkb::webchat::evaluate(&ds, embeddings))?;
        if json {
            println!("{}", serde_json::to_string(&report.to_json())?);
        } else {
            print!("{report}");
        }
    }
    Ok(())
}

/// `--fit`: the calibration fitted on both datasets' held-out training rows (with and without
/// typos), printed as the constant to paste, with what it answers at a few thresholds.
fn fit_calibration(
    data: &std::path::Path,
    rules: &Rules,
    mut meanings: Option<&mut evalkb::meaning::Meanings>,
) -> anyhow::Result<()> {
    let sets = [
        evalkb::banking77(&data.join("banking77"), evalkb::Split::HeldOut)?,
        evalkb::clinc150(&data.join("clinc150"), evalkb::Split::HeldOut)?,
    ];
    let mut per_set = Vec::new();
    let mut all = Vec::new();
    for ds in &sets {
        let clean = evalkb::samples(ds, rules, meanings.as_deref_mut())?;
        let typo = evalkb::samples(&evalkb::misspelt(ds), rules, meanings.as_deref_mut())?;
        // Each dataset weighs as much as 10,000 questions, whatever its size; where it has
        // questions out of scope, they weigh a fifth of it (a shop's FAQ does not answer
        // everything its customers ask; held-out rows have few of them) — two fifths with
        // vectors, whose cosines make unrelated questions look closer than words do.
        let out_share = if meanings.is_some() { 0.4 } else { 0.2 };
        let both: Vec<&evalkb::Sample> = clean.iter().chain(&typo).collect();
        let outside = both.iter().filter(|s| !s.in_scope).count();
        let inside = both.len() - outside;
        let (w_in, w_out) = if outside == 0 {
            (10_000.0 / inside.max(1) as f64, 0.0)
        } else {
            (
                10_000.0 * (1.0 - out_share) / inside.max(1) as f64,
                10_000.0 * out_share / outside as f64,
            )
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
    let shop = evalkb::shop_samples(&root, rules, meanings.as_deref_mut())?;
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
    let name = if meanings.is_some() {
        "CALIBRATION_MEANING"
    } else {
        "CALIBRATION"
    };
    print_fit(name, &c, &per_set, (&shop, inside));
    Ok(())
}

/// The calibration `c` as the constant `name` to paste, with what it answers at a few
/// thresholds on each held-out set (`per_set`: name, in-scope questions, samples) and the shop.
fn print_fit(
    name: &str,
    c: &brain::knowledge::Calibration,
    per_set: &[(&str, usize, Vec<evalkb::Sample>)],
    (shop, inside): (&[evalkb::Sample], usize),
) {
    println!("pub const {name}: Calibration = Calibration {{");
    println!("    bias: {:.3},", c.bias);
    let w: Vec<String> = c.weights.iter().map(|w| format!("{w:.3}")).collect();
    println!("    weights: [{}],", w.join(", "));
    println!("}};");
    for t in [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95] {
        let row: Vec<String> = per_set
            .iter()
            .map(|(name, asked, s)| {
                let (coverage, precision) = evalkb::at_threshold(s, c, t, *asked);
                format!(
                    "{name} {:.1} % at {:.1} %",
                    100.0 * coverage,
                    100.0 * precision
                )
            })
            .collect();
        let (coverage, precision) = evalkb::at_threshold(shop, c, t, inside);
        println!(
            "at {t:.2}: {} | shop {:.1} % at {:.1} %",
            row.join(" | "),
            100.0 * coverage,
            100.0 * precision
        );
    }
}
