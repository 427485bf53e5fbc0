//! `eval-kb [--data DIR] [--held-out] [--typos] [--json]`: the answer-quality benchmark (see the
//! library's docs). The data folder defaults to `$SB_EVAL_DATA`, else the `shared/eval-data`
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
            other => bail!(
                "unknown option {other} (eval-kb [--data DIR] [--held-out] [--typos] [--json])"
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
    for ds in [
        evalkb::banking77(&data.join("banking77"), split)?,
        evalkb::clinc150(&data.join("clinc150"), split)?,
    ] {
        let ds = if typos { evalkb::misspelt(&ds) } else { ds };
        let report = evalkb::evaluate(&ds, &rules)?;
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
    Ok(())
}
