//! The answer-quality benchmark's FAQ building, and its figures held as floors: a change that
//! makes the knowledge base answer fewer customers, or more of them wrong, fails here (the
//! figures themselves: `scripts/eval-kb`, docs/BENCHMARKS.md). Skipped, saying so, without
//! the evaluation data.

use brain::config::{HANDOFF_PHRASES, phrases};
use brain::rules::Rules;
use evalkb::{Dataset, Intent, Report};

fn data() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("SB_EVAL_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(evalkb::default_data);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: no evaluation data at {}", dir.display());
        None
    }
}

fn report(ds: &Dataset) -> Report {
    let r = evalkb::evaluate(ds, &Rules::with_phrases(&phrases(HANDOFF_PHRASES))).unwrap();
    eprint!("{r}");
    r
}

#[test]
fn an_faq_entry_is_an_intent_s_first_row_asked_and_the_next_five_on_its_also_line() {
    let ds = Dataset {
        name: "tiny",
        code: "T",
        intents: vec![
            Intent {
                name: "card_arrival".into(),
                rows: vec!["Where is my card?".into(), "card  not\n here".into()],
            },
            Intent {
                name: "pin".into(),
                rows: vec!["how do i change my pin".into()],
            },
        ],
        test: Vec::new(),
    };
    let (md, answers) = evalkb::faq(&ds).unwrap();
    assert_eq!(
        md,
        "# FAQ\n\n## Where is my card?\nAlso: card not here\n\nAnswer T-001.\n\
         \n## how do i change my pin?\n\nAnswer T-002.\n"
    );
    assert_eq!(answers["Answer T-002."], "pin");
    let index = brain::knowledge::Index::build(&[("faq.md".to_owned(), md)]);
    assert_eq!(index.entries().len(), 2, "both are entries");
    assert_eq!(index.entries()[0].phrasings.len(), 2);

    let mut bad = ds;
    bad.intents[1].rows[0] = "pin | password".into();
    assert!(evalkb::faq(&bad).is_err(), "a `|` would split the phrasing");
}

#[test]
fn banking77_is_answered_at_least_as_well_as_measured() {
    let Some(dir) = data() else { return };
    let ds = evalkb::banking77(&dir.join("banking77"), evalkb::Split::Test).unwrap();
    assert_eq!((ds.intents.len(), ds.test.len()), (77, 3080));
    let r = report(&ds);
    // Measured 2026-12-07 with the calibrated confidence (`DIRECT` 0.89): 20.3 % answered,
    // 97.3 % right when answered, 0.6 % wrong, MRR 0.748 (the hand-made confidence at 0.8:
    // 13.5 / 89.2 / 1.5 %; before question kinds and negations 14.0 / 88.0 / 1.7 %).
    assert!(r.answered_share() >= 0.2, "answered {}", r.answered_share());
    assert!(r.right_share() >= 0.965, "right {}", r.right_share());
    assert!(r.wrong_share() <= 0.007, "wrong {}", r.wrong_share());
    assert!(r.mrr >= 0.745, "MRR {}", r.mrr);
}

#[test]
fn clinc150_is_answered_at_least_as_well_as_measured_and_out_of_scope_mostly_not() {
    let Some(dir) = data() else { return };
    let ds = evalkb::clinc150(&dir.join("clinc150"), evalkb::Split::Test).unwrap();
    assert_eq!((ds.intents.len(), ds.test.len()), (150, 5500));
    let r = report(&ds);
    // Measured 2026-12-07 with the calibrated confidence: 25.0 % answered, 95.0 % right when
    // answered, 1.2 % wrong, MRR 0.685, 1.3 % of the out-of-scope questions answered anyway
    // (the hand-made confidence: 8.1 / 90.9 / 0.7 %, 0.3 %).
    assert!(
        r.answered_share() >= 0.245,
        "answered {}",
        r.answered_share()
    );
    assert!(r.right_share() >= 0.945, "right {}", r.right_share());
    assert!(r.wrong_share() <= 0.013, "wrong {}", r.wrong_share());
    assert!(r.mrr >= 0.68, "MRR {}", r.mrr);
    assert!(
        r.out_of_scope_answered_share() <= 0.015,
        "out of scope answered {}",
        r.out_of_scope_answered_share()
    );
    // No CLINC150 intent asks for a person: 22 were handed off when a phrase anywhere did it.
    assert!(r.handed_off <= 2, "handed off {}", r.handed_off);
}

#[test]
fn a_typo_in_every_question_costs_little() {
    let Some(dir) = data() else { return };
    let ds = evalkb::banking77(&dir.join("banking77"), evalkb::Split::Test).unwrap();
    let r = report(&evalkb::misspelt(&ds));
    // Measured 2026-12-07: 18.3 % answered, 97.5 % right when answered, MRR 0.734 (without
    // typos 20.3 %, 0.748; without typo correction, on held-out rows, typos took the share
    // answered from 11.1 to 3.7 % with the hand-made confidence).
    assert!(
        r.answered_share() >= 0.175,
        "answered {}",
        r.answered_share()
    );
    assert!(r.right_share() >= 0.965, "right {}", r.right_share());
    assert!(r.mrr >= 0.725, "MRR {}", r.mrr);
    // The longest word of letters only ("arriving?" has a `?`).
    assert_eq!(
        evalkb::with_typo("Where is my new card arriving?"),
        "Whre is my new card arriving?"
    );
    assert_eq!(evalkb::with_typo("my delivery"), "my deliery");
}

#[test]
fn tau_banking_s_contexts_hold_what_the_tasks_need_at_the_default_budget() {
    let Some(dir) = data() else { return };
    let tau = evalkb::tau::load(&dir.join("tau-banking")).unwrap();
    let index = brain::knowledge::Index::build(&tau.files);
    let r = evalkb::tau::evaluate(&tau, &index, brain::knowledge::CONTEXT_TOKENS);
    eprint!("{r}");
    // Measured 2026-12-07 (lexical, 4,000 tokens): 89.7 % of opening lines with a required
    // document in the context, recall 0.331; scenario texts 0.350 (at 300 tokens, about the
    // three sections before the budget: 38.1 %, 0.064 and 0.100).
    assert_eq!(r.tasks, 97);
    assert!(
        r.opening_hit as f64 / r.tasks as f64 >= 0.85,
        "opening lines {}",
        r.opening_hit
    );
    assert!(r.opening_recall >= 0.31, "recall {}", r.opening_recall);
    assert!(
        r.scenario_recall >= 0.33,
        "scenario recall {}",
        r.scenario_recall
    );
}

#[test]
fn tau_banking_s_requests_for_a_person_hand_off_and_its_other_lines_do_not() {
    let Some(dir) = data() else { return };
    let rules = Rules::with_phrases(&phrases(HANDOFF_PHRASES));
    let tau = evalkb::tau::load(&dir.join("tau-banking")).unwrap();
    let r = evalkb::handoff::evaluate(&tau, &evalkb::handoff::requests_file(), &rules).unwrap();
    eprint!("{r}");
    // Measured 2026-12-07: 0 of 24 requests (9 tasks) missed (8 before "transfer me" was read as a
    // request — written from these very misses, so not a held-out figure), 4 of 878 other
    // lines handed off: one a real request in a task whose policy refuses it, three one quote
    // run into the simulator's instruction "request to speak to a real human".
    assert_eq!(r.requests, 24);
    assert!(r.missed.is_empty(), "missed {:?}", r.missed);
    assert!(r.others >= 800, "{} other lines", r.others);
    assert!(r.false_handoffs.len() <= 4, "{:?}", r.false_handoffs);
}

/// The local model's vectors, when scripts/test fetched it (else the test says it skipped).
/// Texts without a vector on disk are embedded by the test, at most [`COLD_MOST`] of them
/// (`SB_EVAL_KB_EMBED_MOST` to allow more): a fresh machine's cold cache (the two tests need
/// some 12,000 texts, 5–10 minutes of CPU on two cores in the debug build) is skipped, saying so.
fn minilm() -> Option<evalkb::meaning::Meanings> {
    let dir = shared::testing::minilm_dir()?;
    let most = std::env::var("SB_EVAL_KB_EMBED_MOST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(COLD_MOST);
    Some(evalkb::meaning::Meanings::open(&dir).unwrap().at_most(most))
}

/// The most texts a test embeds itself (about a minute of one core).
const COLD_MOST: usize = 2_000;

/// `r`, or `None` after saying the test skipped because the vectors are not on disk yet.
fn warm<T>(r: anyhow::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => match e.downcast_ref::<evalkb::meaning::Cold>() {
            Some(cold) => {
                eprintln!("SKIPPED: {cold}");
                None
            }
            None => panic!("{e:#}"),
        },
    }
}

#[test]
fn with_all_minilm_l6_v2_both_datasets_are_answered_at_least_as_well_as_measured() {
    let Some(dir) = data() else { return };
    let Some(mut m) = minilm() else { return };
    let rules = Rules::with_phrases(&phrases(HANDOFF_PHRASES));
    let direct = brain::knowledge::DIRECT_MEANING;
    let ds = evalkb::banking77(&dir.join("banking77"), evalkb::Split::Test).unwrap();
    let Some(r) = warm(evalkb::evaluate_at(&ds, &rules, direct, Some(&mut m))) else {
        return;
    };
    eprint!("{r}");
    // Measured 2026-12-07 (`DIRECT_MEANING` 0.85): 53.5 % answered, 96.6 % right when
    // answered, 1.8 % wrong, MRR 0.867 (lexical alone: 20.6 / 97.2 / 0.6 %, 0.747).
    assert!(
        r.answered_share() >= 0.53,
        "answered {}",
        r.answered_share()
    );
    assert!(r.right_share() >= 0.96, "right {}", r.right_share());
    assert!(r.mrr >= 0.86, "MRR {}", r.mrr);
    let ds = evalkb::clinc150(&dir.join("clinc150"), evalkb::Split::Test).unwrap();
    let Some(r) = warm(evalkb::evaluate_at(&ds, &rules, direct, Some(&mut m))) else {
        return;
    };
    eprint!("{r}");
    // Measured 2026-12-07: 47.9 % answered, 95.8 % right when answered, MRR 0.856, 1.7 % of
    // the out-of-scope questions answered anyway (lexical alone: 25.0 / 95.1 %, 1.3 %).
    assert!(
        r.answered_share() >= 0.475,
        "answered {}",
        r.answered_share()
    );
    assert!(r.right_share() >= 0.95, "right {}", r.right_share());
    assert!(r.mrr >= 0.85, "MRR {}", r.mrr);
    assert!(
        r.out_of_scope_answered_share() <= 0.02,
        "out of scope answered {}",
        r.out_of_scope_answered_share()
    );
}

#[test]
fn with_all_minilm_l6_v2_tau_contexts_hold_the_required_documents() {
    let Some(dir) = data() else { return };
    let Some(mut m) = minilm() else { return };
    let tau_dir = dir.join("tau-banking");
    if !tau_dir.is_dir() {
        eprintln!("SKIPPED: no {}", tau_dir.display());
        return;
    }
    let tau = evalkb::tau::load(&tau_dir).unwrap();
    let index = brain::knowledge::Index::build(&tau.files);
    let Some(r) = warm(evalkb::tau::evaluate_with(
        &tau,
        &index,
        brain::knowledge::CONTEXT_TOKENS,
        Some(&mut m),
    )) else {
        return;
    };
    eprint!("{r}");
    // Measured 2026-12-07, words and meaning fused: 88.7 % of opening lines with a required
    // document in the context, recall 0.340; scenario texts 0.320 (lexical: 89.7 %, 0.331,
    // 0.350 — a scenario is longer than the model reads, 256 word pieces).
    let share = r.opening_hit as f64 / r.tasks as f64;
    assert!(share >= 0.88, "opening lines {share}");
    assert!(
        r.opening_recall >= 0.335,
        "opening recall {}",
        r.opening_recall
    );
    assert!(
        r.scenario_recall >= 0.3,
        "scenario recall {}",
        r.scenario_recall
    );
}
