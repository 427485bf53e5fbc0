//! Every rule of [`Rules::decide`] and of the decisions it shares with the answer, on plain
//! values: no database, no Redis, no clock but the `now` given.

use shared::config::{CommonConfig, Env, ServiceName};
use shared::proto::{Identity, Inbound, MediaRef, identity, inbound};

use super::*;
use crate::domain::{Effect, Outcome, Reason, Speaker};
use crate::store::Handoff;
use shared::lang::Lang;

const NOW: i64 = 1_767_000_000_000;
const DAY: &str = "2026-12-29";
/// A transcript that was understood.
const SPOKEN: Source = Source::Transcript(Heard::Ok);

fn config(pairs: &[(&str, &str)]) -> Config {
    let mut all = vec![("ADMIN_NUMBERS", "+15550000001,+15550000002")];
    all.extend_from_slice(pairs);
    let mut env = Env::from_pairs(all.iter().copied());
    let common = CommonConfig::from_env(&mut env, ServiceName::Brain);
    let cfg = Config::load(&mut env, &common);
    env.finish().expect("a valid test configuration");
    cfg
}

fn contact() -> Contact {
    Contact {
        id: "c1".into(),
        role: Role::User,
        allowed: true,
        opted_out: false,
        last_refusal_day: None,
        disclosed: false,
        handoff: None,
        unanswered_streak: 0,
        paused_until_ms: None,
    }
}

fn from_phone(kind: inbound::Kind, text: &str) -> Inbound {
    Inbound {
        message_id: "m1".into(),
        chat_id: "chat-1".into(),
        kind: kind as i32,
        text: text.into(),
        identities: vec![Identity {
            kind: identity::Kind::Phone as i32,
            value: "+15551234567".into(),
        }],
        ..Default::default()
    }
}

fn from_visitor(text: &str) -> Inbound {
    Inbound {
        identities: vec![Identity {
            kind: identity::Kind::Webchat as i32,
            value: "v-123".into(),
        }],
        ..from_phone(inbound::Kind::Text, text)
    }
}

/// What the rules decide for a typed message (or a transcript) with the defaults.
fn decide_with(cfg: &Config, c: &Contact, ib: &Inbound, source: Source, absorbed: bool) -> Step {
    let msg = Message {
        ib,
        text: ib.text.trim(),
        source,
        absorbed,
        deadline_ms: (!source.is_typed()).then_some(NOW + 45_000),
        lang: crate::domain::lang_of(ib.text.trim(), &[]),
    };
    Rules::new(cfg).decide(&msg, c, &[], cfg, DAY, NOW)
}

fn typed(c: &Contact, ib: &Inbound) -> Step {
    decide_with(&config(&[]), c, ib, Source::Typed, false)
}

fn done(step: Step) -> Decision {
    match step {
        Step::Done(d) => d,
        other => panic!("expected a decision, got {other:?}"),
    }
}

fn text_of(d: &Decision) -> &str {
    d.replies.first().map_or("", |(_, t)| t.as_str())
}

#[test]
fn the_owners_own_message_is_remembered_and_pauses_the_bot() {
    let ib = Inbound {
        from_business: true,
        ..from_phone(inbound::Kind::Text, "I'll bring it tomorrow")
    };
    let d = done(typed(&contact(), &ib));
    assert_eq!(d.outcome, Outcome::OwnerAnswered);
    assert!(d.replies.is_empty());
    let turns: Vec<_> = d.turns().collect();
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].speaker, Speaker::Business);
    let pause = d.effects.iter().find_map(|e| match e {
        Effect::PauseUntil(t) => Some(*t),
        _ => None,
    });
    assert_eq!(
        pause,
        Some(NOW + 30 * 60_000),
        "OWNER_PAUSE_MIN defaults to 30"
    );
}

#[test]
fn stop_and_start_are_effects_of_the_commit_and_only_typed() {
    let stop = done(typed(
        &contact(),
        &from_phone(inbound::Kind::Text, " STOP "),
    ));
    assert_eq!(stop.outcome, Outcome::OptedOut);
    assert!(!text_of(&stop).is_empty(), "STOP is confirmed");
    assert!(matches!(stop.effects.as_slice(), [Effect::OptOut(true)]));

    let out = Contact {
        opted_out: true,
        ..contact()
    };
    let start = done(typed(&out, &from_phone(inbound::Kind::Text, "start")));
    assert_eq!(start.outcome, Outcome::OptedIn);
    assert!(matches!(start.effects.as_slice(), [Effect::OptOut(false)]));
    let other = done(typed(&out, &from_phone(inbound::Kind::Text, "hello?")));
    assert_eq!(other.outcome, Outcome::OptedOut);
    assert!(other.replies.is_empty() && other.effects.is_empty());

    // Said in a voice note, STOP and START are words, not commands.
    let cfg = config(&[]);
    let voice = from_phone(inbound::Kind::Voice, "stop");
    assert!(matches!(
        decide_with(&cfg, &contact(), &voice, SPOKEN, false),
        Step::Answer { .. }
    ));
    let voice_start = from_phone(inbound::Kind::Voice, "start");
    let d = done(decide_with(&cfg, &out, &voice_start, SPOKEN, false));
    assert_eq!(d.outcome, Outcome::OptedOut);
    assert!(d.effects.is_empty(), "a transcript never opts back in");
}

#[test]
fn commands_come_only_from_typed_text() {
    let ib = from_phone(inbound::Kind::Text, "!help");
    assert!(matches!(
        typed(&contact(), &ib),
        Step::Command(crate::commands::Command::Help)
    ));
    let cfg = config(&[]);
    let voice = from_phone(inbound::Kind::Voice, "!help");
    assert!(matches!(
        decide_with(&cfg, &contact(), &voice, SPOKEN, false),
        Step::Answer { .. }
    ));
}

#[test]
fn a_stranger_is_refused_once_a_day_and_admins_and_open_mode_are_served() {
    let stranger = Contact {
        allowed: false,
        ..contact()
    };
    let ib = from_phone(inbound::Kind::Text, "hi");
    let d = done(typed(&stranger, &ib));
    assert_eq!(d.outcome, Outcome::Refused);
    assert!(matches!(d.effects.as_slice(), [Effect::RefusedToday]));
    let told = Contact {
        last_refusal_day: Some(DAY.into()),
        ..stranger.clone()
    };
    let again = done(typed(&told, &ib));
    assert_eq!(again.outcome, Outcome::RefusedSilently);
    assert!(again.replies.is_empty() && again.effects.is_empty());

    let admin = Contact {
        role: Role::Admin,
        ..stranger.clone()
    };
    assert!(matches!(typed(&admin, &ib), Step::Answer { .. }));
    let open = config(&[("ACCESS_MODE", "open")]);
    assert!(matches!(
        decide_with(&open, &stranger, &ib, Source::Typed, false),
        Step::Answer { .. }
    ));
    // Visitors are governed by WEBCHAT_VISITORS, not the whitelist.
    let visitor = from_visitor("hi");
    assert!(matches!(typed(&stranger, &visitor), Step::Answer { .. }));
    let closed = config(&[("WEBCHAT_VISITORS", "off")]);
    let d = done(decide_with(
        &closed,
        &contact(),
        &visitor,
        Source::Typed,
        false,
    ));
    assert_eq!(d.outcome, Outcome::Refused);
}

#[test]
fn handed_off_for_want_of_a_model_the_faq_still_answers_and_the_rest_waits_quietly() {
    let handed = Contact {
        handoff: Some(Handoff {
            reference: "H-ABCDEF".into(),
            reason: Reason::NoLlm,
            since_ms: NOW - 60_000,
            deadline_ms: Some(NOW + 60_000),
            chat: (0, "chat-1".into()),
        }),
        ..contact()
    };
    let none = config(&[]);
    let question = from_phone(inbound::Kind::Text, "what are your opening hours?");
    assert!(matches!(
        decide_with(&none, &handed, &question, Source::Typed, false),
        Step::Answer { .. }
    ));
    let sticker = from_phone(inbound::Kind::Other, "");
    let d = done(decide_with(&none, &handed, &sticker, Source::Typed, false));
    assert_eq!(d.outcome, Outcome::WhileHandedOff);
    let cut = Inbound {
        text_cut: true,
        ..question.clone()
    };
    let d = done(decide_with(&none, &handed, &cut, Source::Typed, false));
    assert_eq!(d.outcome, Outcome::WhileHandedOff);
    // With a model configured since, the person's conversation is theirs as for any reason.
    let model = config(&[("OPENAI_API_KEY", "sk-test")]);
    let d = done(decide_with(
        &model,
        &handed,
        &question,
        Source::Typed,
        false,
    ));
    assert_eq!(d.outcome, Outcome::WhileHandedOff);
}

#[test]
fn while_a_person_has_the_conversation_the_bot_only_remembers() {
    let handed = Contact {
        handoff: Some(Handoff {
            reference: "H-ABCDEF".into(),
            reason: Reason::Asked,
            since_ms: NOW - 60_000,
            deadline_ms: Some(NOW + 60_000),
            chat: (0, "chat-1".into()),
        }),
        ..contact()
    };
    let d = done(typed(
        &handed,
        &from_phone(inbound::Kind::Image, "this one"),
    ));
    assert_eq!(d.outcome, Outcome::WhileHandedOff);
    assert_eq!(d.turns().next().unwrap().content, "[photo] this one");
    // A transcript that comes back while a person has the conversation is not answered.
    let cfg = config(&[]);
    let voice = from_phone(inbound::Kind::Voice, "where is my order");
    let d = done(decide_with(&cfg, &handed, &voice, SPOKEN, false));
    assert_eq!(d.outcome, Outcome::WhileHandedOff);
    assert_eq!(
        d.turns().next().unwrap().content,
        "[voice] where is my order"
    );

    let paused = Contact {
        paused_until_ms: Some(NOW + 1),
        ..contact()
    };
    let ib = from_phone(inbound::Kind::Text, "hello");
    assert_eq!(done(typed(&paused, &ib)).outcome, Outcome::WhileHandedOff);
    let pause_over = Contact {
        paused_until_ms: Some(NOW),
        ..contact()
    };
    assert!(matches!(typed(&pause_over, &ib), Step::Answer { .. }));

    // Outside business hours the bot keeps helping while the customer waits for a person.
    let never_open = config(&[("BUSINESS_HOURS", "sun 00:00-00:01")]);
    assert!(!never_open.hours.is_open(NOW));
    assert!(matches!(
        decide_with(&never_open, &handed, &ib, Source::Typed, false),
        Step::Answer { .. }
    ));
}

#[test]
fn a_message_followed_by_more_is_absorbed_into_the_burst() {
    let cfg = config(&[("BURST_WINDOW_MS", "2000")]);
    let photo = Inbound {
        media: Some(MediaRef {
            mime_type: "image/jpeg".into(),
            ..Default::default()
        }),
        ..from_phone(inbound::Kind::Image, "")
    };
    let d = done(decide_with(&cfg, &contact(), &photo, Source::Typed, true));
    assert_eq!(d.outcome, Outcome::Burst);
    assert!(d.replies.is_empty());
    assert_eq!(d.turns().next().unwrap().content, "[photo]");
    assert!(
        d.effects
            .iter()
            .any(|e| matches!(e, Effect::KeepBurstMedia(_)))
    );
    let voice = from_phone(inbound::Kind::Voice, "and a large one");
    let d = done(decide_with(&cfg, &contact(), &voice, SPOKEN, true));
    assert_eq!(d.turns().next().unwrap().content, "[voice] and a large one");
}

#[test]
fn asking_for_a_person_hands_off_with_an_alert_to_each_admin() {
    let ib = from_phone(inbound::Kind::Text, "Can I talk to a HUMAN please");
    let d = done(typed(&contact(), &ib));
    assert_eq!(d.outcome, Outcome::HandedOff);
    let h = d.handoff().expect("a handoff starts");
    assert_eq!(h.reason, Reason::Asked);
    assert_eq!(h.reference, reference_of("c1"));
    assert_eq!(
        h.deadline_ms,
        NOW + 60 * 60_000,
        "HANDOFF_TIMEOUT_MIN defaults to 60"
    );
    assert_eq!(d.publishes().count(), 2, "one alert per admin");
    assert_eq!(d.turns().next().unwrap().speaker, Speaker::Customer);
    // Asked again while waiting: the same notice, no second handoff or alert.
    let waiting = Contact {
        handoff: Some(Handoff {
            reference: h.reference.clone(),
            reason: Reason::Asked,
            since_ms: NOW,
            deadline_ms: None,
            chat: (0, "chat-1".into()),
        }),
        ..contact()
    };
    let never_open = config(&[("BUSINESS_HOURS", "sun 00:00-00:01")]);
    let again = done(decide_with(
        &never_open,
        &waiting,
        &ib,
        Source::Typed,
        false,
    ));
    assert_eq!(again.outcome, Outcome::HandedOff);
    assert!(again.handoff().is_none() && again.publishes().next().is_none());
    // Outside the hours, the next opening is told in the customer's language.
    assert!(
        text_of(&again).contains("(Sunday 00:00)"),
        "{}",
        text_of(&again)
    );
    let spanish = from_phone(inbound::Kind::Text, "quiero hablar con una persona");
    let cerrado = done(decide_with(
        &never_open,
        &contact(),
        &spanish,
        Source::Typed,
        false,
    ));
    assert!(
        text_of(&cerrado).contains("cuando abramos (domingo 00:00)"),
        "{}",
        text_of(&cerrado)
    );
    // "humanitarian" is not "human"; a transcript that asks for a person is handed off too.
    let words = from_phone(inbound::Kind::Text, "do you support humanitarian aid");
    assert!(matches!(typed(&contact(), &words), Step::Answer { .. }));
    let voice = from_phone(inbound::Kind::Voice, "let me talk to a human");
    let cfg = config(&[]);
    let d = done(decide_with(&cfg, &contact(), &voice, SPOKEN, false));
    assert_eq!(d.outcome, Outcome::HandedOff);
}

#[test]
fn each_kind_of_message_goes_its_way_within_its_deadline() {
    let c = contact();
    match typed(&c, &from_phone(inbound::Kind::Text, "hours?")) {
        Step::Answer { deadline_ms } => assert_eq!(deadline_ms, NOW + 20_000),
        other => panic!("{other:?}"),
    }
    match typed(&c, &from_phone(inbound::Kind::Image, "")) {
        Step::Answer { deadline_ms } => assert_eq!(deadline_ms, NOW + 30_000),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        typed(&c, &from_phone(inbound::Kind::Voice, "")),
        Step::Transcribe
    ));
    let cfg = config(&[]);
    let voice = from_phone(inbound::Kind::Voice, "hours?");
    match decide_with(&cfg, &c, &voice, SPOKEN, false) {
        Step::Answer { deadline_ms } => assert_eq!(deadline_ms, NOW + 45_000),
        other => panic!("{other:?}"),
    }
    let other = done(typed(&c, &from_phone(inbound::Kind::Other, "")));
    assert_eq!(other.outcome, Outcome::Unsupported);
    let cut = Inbound {
        text_cut: true,
        ..from_phone(inbound::Kind::Text, "long")
    };
    assert_eq!(done(typed(&c, &cut)).outcome, Outcome::TooLong);
}

#[test]
fn the_models_marks_decide_between_an_answer_and_a_person() {
    let cfg = config(&[]);
    let ib = from_phone(inbound::Kind::Text, "q");
    let c = contact();
    let d = marked(&ib, &c, "q".into(), "We open at 9.", &[], &cfg, NOW);
    assert_eq!(d.outcome, Outcome::Answered);
    assert!(text_of(&d).ends_with("We open at 9."));
    assert!(
        d.effects.iter().any(|e| matches!(e, Effect::Disclose)),
        "the first answer discloses the AI"
    );
    let told = Contact {
        disclosed: true,
        unanswered_streak: 1,
        ..c.clone()
    };
    let d = marked(&ib, &told, "q".into(), "We open at 9.", &[], &cfg, NOW);
    assert_eq!(text_of(&d), "We open at 9.");
    assert!(d.effects.iter().any(|e| matches!(e, Effect::Streak(0))));
    assert!(!d.effects.iter().any(|e| matches!(e, Effect::Disclose)));

    let unsure = marked(&ib, &c, "q".into(), "Not sure. [[UNSURE]]", &[], &cfg, NOW);
    assert_eq!(unsure.outcome, Outcome::Answered);
    assert!(!text_of(&unsure).contains("[[UNSURE]]"));
    let streaks: Vec<_> = unsure
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::Streak(_)))
        .collect();
    assert!(matches!(streaks.as_slice(), [Effect::Streak(1)]));
    let twice = marked(
        &ib,
        &told,
        "q".into(),
        "Not sure. [[UNSURE]]",
        &[],
        &cfg,
        NOW,
    );
    assert_eq!(twice.handoff().unwrap().reason, Reason::RepeatedFailure);
    let cannot = marked(&ib, &c, "q".into(), "[[HANDOFF]]", &[], &cfg, NOW);
    assert_eq!(cannot.handoff().unwrap().reason, Reason::CannotAnswer);
}

#[test]
fn a_guard_that_stops_the_call_hands_off_when_no_model_or_budget_is_left() {
    let cfg = config(&[]);
    let ib = from_phone(inbound::Kind::Text, "q");
    let c = contact();
    let stop = Decision::notice("x", Outcome::NotConfigured);
    let d = stopped(&ib, &c, "q", &[], stop, &cfg, NOW);
    assert_eq!(d.handoff().unwrap().reason, Reason::NoLlm);
    assert_eq!(text_of(&d), cfg.messages.get(Lang::En).not_configured);
    let stop = Decision::notice("x", Outcome::Budget);
    assert_eq!(
        stopped(&ib, &c, "", &[], stop, &cfg, NOW)
            .handoff()
            .unwrap()
            .reason,
        Reason::Budget
    );
    let stop = Decision::notice("tokens", Outcome::TokenBudget);
    let d = stopped(&ib, &c, "q", &[], stop, &cfg, NOW);
    assert_eq!(d.outcome, Outcome::TokenBudget);
    assert!(d.handoff().is_none());
}

#[test]
fn a_voice_note_not_transcribed_is_said_so_unless_a_person_has_the_conversation() {
    let cfg = config(&[]);
    let voice = from_phone(inbound::Kind::Voice, "");
    for (heard, outcome) in [
        (Heard::Failed, Outcome::TranscriptionFailed),
        (Heard::TooLong, Outcome::VoiceTooLong),
        (Heard::Budget, Outcome::VisitorBudget),
    ] {
        let d = done(decide_with(
            &cfg,
            &contact(),
            &voice,
            Source::Transcript(heard),
            false,
        ));
        assert_eq!(d.outcome, outcome);
        assert_eq!(d.replies.len(), 1);
        assert!(d.effects.is_empty(), "nothing remembered of {heard:?}");
    }
    let paused = Contact {
        paused_until_ms: Some(NOW + 60_000),
        ..contact()
    };
    let d = done(decide_with(
        &cfg,
        &paused,
        &voice,
        Source::Transcript(Heard::Failed),
        false,
    ));
    assert_eq!(d.outcome, Outcome::WhileHandedOff);
    assert!(d.replies.is_empty());
    assert_eq!(d.turns().next().unwrap().content, "[voice note]");
}

#[test]
fn the_guard_stops_a_paid_call_for_the_first_limit_reached() {
    let cfg = config(&[
        ("OPENAI_API_KEY", "sk-test"),
        ("CONTACT_DAILY_TOKENS", "1000"),
    ]);
    let fine = Spend {
        tokens_today: 999,
        ..Spend::default()
    };
    assert!(guard(&fine, &cfg, Lang::En).is_none());
    let outcome = |s: Spend| guard(&s, &cfg, Lang::En).map(|d| d.outcome);
    assert_eq!(
        outcome(Spend {
            tokens_today: 1000,
            ..fine
        }),
        Some(Outcome::TokenBudget)
    );
    assert_eq!(
        outcome(Spend {
            visitors_spent: true,
            tokens_today: 1000,
            ..fine
        }),
        Some(Outcome::VisitorBudget)
    );
    assert_eq!(
        outcome(Spend {
            over_budget: true,
            visitors_spent: true,
            ..fine
        }),
        Some(Outcome::Budget)
    );
    // With no model nothing is paid for: that comes first.
    let none = config(&[]);
    assert!(!none.endpoint.configured);
    assert_eq!(
        guard(&fine, &none, Lang::En).map(|d| d.outcome),
        Some(Outcome::NotConfigured)
    );
    let unlimited = config(&[("OPENAI_API_KEY", "sk-test"), ("CONTACT_DAILY_TOKENS", "0")]);
    let heavy = Spend {
        tokens_today: i64::MAX,
        ..Spend::default()
    };
    assert!(guard(&heavy, &unlimited, Lang::En).is_none());
}
