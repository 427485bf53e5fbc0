//! The index's own tests.

use super::*;

fn shop() -> Index {
    Index::build(&[(
        "faq.md".into(),
        "# FAQ\n\n## When are you open?\nAlso: opening hours | horario\n\nMon–Fri 9–18.\n\n## Do you deliver?\nWe ship in the UK.\n\n## Notes\nNot a question.\n"
            .into(),
    )])
}

#[test]
fn questions_become_entries_with_their_phrasings_and_sections_become_chunks() {
    let i = shop();
    assert_eq!(i.size(), (3, 2));
    let e = &i.entries()[0];
    assert_eq!(e.question, "When are you open?");
    assert_eq!(e.answer, "Mon–Fri 9–18.");
    assert_eq!(
        e.phrasings,
        ["When are you open?", "opening hours", "horario"]
    );
    assert!(!e.answer.contains("Also"));
}

#[test]
fn an_asked_question_matches_its_entry_and_an_unrelated_one_nothing() {
    let i = shop();
    let hit = i.faq("what are your opening hours").unwrap();
    assert_eq!(hit.entry.question, "When are you open?");
    assert!(hit.confidence > 0.9, "{hit:?}");
    assert!(
        i.faq("do you sell socks")
            .is_none_or(|h| h.confidence < 0.3)
    );
    assert_eq!(
        i.ranked_sections("ship to the UK", 1)[0].0.title,
        "FAQ › Do you deliver?"
    );
    assert!(i.ranked_sections("zebra", 3).is_empty());
}

#[test]
fn a_question_asked_word_for_word_as_a_phrasing_is_that_entry_s() {
    let index = Index::build(&[(
        "faq.md".into(),
        "## Do you deliver on Sundays?\nNo.\n\n## do you deliver on saturday?\nYes, 9 to 1.\n\n\
         ## Is it free?\nAlso: how much\n\nYes.\n\n## What does it cost?\nAlso: how much\n\n£4.\n"
            .into(),
    )]);
    let hit = index.faq("Do you deliver on Saturday").unwrap();
    assert_eq!(
        (hit.entry.answer.as_str(), hit.confidence),
        ("Yes, 9 to 1.", 1.0)
    );
    assert!(hit.is_direct(), "a near twin entry does not stop it");
    // A phrasing two entries share tells nothing by itself.
    assert!(index.faq("how much?").is_none_or(|h| h.confidence < 1.0));
}
