//! Whether a message asks for a person: a `HANDOFF_PHRASES` phrase *asked for*, not merely
//! written. "Can I talk to a human?", "pásame con un agente", "agent please" hand off; "are you a
//! human or a computer?", "my real estate agent never called", "customer service told me to
//! write here" do not.
//!
//! A phrase found in the message (whole words, accents folded, any case) is a request when:
//! - it is one itself (it starts with a verb of asking: "talk to someone", "hablar con alguien");
//! - a verb of asking comes up to four words before it ("can I **speak** to a human", "**quiero**
//!   un agente", "**connect** me with an operator", "**pásame** con una persona");
//! - or the message is little more than the phrase ("human", "a real person please!").
//!
//! And, whatever the phrases (unless they are turned off), "transfer me" / "put me through" /
//! "transfiéreme" asked alone or to someone ("just transfer me already!", "please transfer me to
//! the security team") — not a transfer of money ("transfer me $50", "transfer me to savings",
//! "transfiéreme 100 euros") nor "my parents put me through college".
//!
//! A question about who is answering ("are you a human?", "¿eres una persona?", "is this a
//! bot or a real person") is not a request, unless it asks for one ("is it possible to talk to
//! a human?").

/// Words that ask for someone (folded as [`crate::knowledge::framed`] folds them).
const ASKING: &[&str] = &[
    // English
    "talk",
    "speak",
    "chat",
    "connect",
    "transfer",
    "put",
    "get",
    "want",
    "need",
    "like",
    "prefer",
    "call",
    "contact",
    "reach",
    "give",
    "let",
    "escalate",
    "send",
    "forward",
    // Spanish
    "hablar",
    "habla",
    "pasame",
    "pasa",
    "paseme",
    "pase",
    "quiero",
    "necesito",
    "comunicar",
    "comunicarme",
    "comuniqueme",
    "contactar",
    "llamar",
    "atienda",
    "atender",
    "deme",
    "dame",
    // Portuguese
    "falar",
    "quero",
    "preciso",
    "passa",
    "transferir",
];

/// What may stand beside a phrase in a message that is only the phrase ("a human please").
const FILLER: &[&str] = &[
    "a", "an", "the", "please", "pls", "plz", "now", "asap", "just", "real", "live", "actual",
    "hi", "hello", "hey", "ok", "okay", "yes", "i", "me", "to", "with", "por", "favor", "un",
    "una", "el", "la", "con", "hola", "ya", "ahora", "si", "sí", "um", "uh", "again",
];

/// How a question about who is answering starts ("are you …", "eres …").
const WHO_ANSWERS: &[&[&str]] = &[
    &["are", "you"],
    &["r", "u"],
    &["is", "this"],
    &["is", "it"],
    &["am", "i"],
    &["eres"],
    &["es", "usted"],
    &["estoy", "hablando"],
    &["voce", "e"],
];

/// Whether `text` asks for one of `phrases` (each framed: [`crate::knowledge::framed`]).
pub fn asks_for(phrases: &[String], text: &str) -> bool {
    let framed = crate::knowledge::framed_words(text);
    let words: Vec<&str> = framed.split_whitespace().collect();
    let about_the_bot = WHO_ANSWERS
        .iter()
        .any(|start| words.len() >= start.len() && words[..start.len()] == **start);
    let put_through = || {
        text.split(['.', '!', '?', ';', '\n']).any(|sentence| {
            let framed = crate::knowledge::framed_words(sentence);
            asks_to_be_put_through(&framed.split_whitespace().collect::<Vec<_>>())
        })
    };
    (!phrases.is_empty() && put_through())
        || phrases.iter().any(|p| {
            let phrase: Vec<&str> = p.split_whitespace().collect();
            !phrase.is_empty()
                && occurrences(&words, &phrase).any(|at| asked(&words, &phrase, at, about_the_bot))
        })
}

/// What may end a request to be put through ("just transfer me already!").
const PUT_THROUGH_AFTER: &[&str] = &[
    "now", "already", "please", "pls", "asap", "again", "right", "por", "favor", "ya", "ahora",
];

/// Who one may ask to be put through to ("transfer me to **someone** who can help", "to the
/// **security** team", "con un **agente**").
const SOMEONE: &[&str] = &[
    "someone",
    "somebody",
    "anyone",
    "anybody",
    "person",
    "human",
    "agent",
    "representative",
    "rep",
    "operator",
    "manager",
    "supervisor",
    "team",
    "department",
    "security",
    "sales",
    "support",
    "staff",
    "alguien",
    "persona",
    "agente",
    "humano",
    "encargado",
    "gerente",
];

/// Whether what follows a "transfer me" / "put me through" (`rest`) makes it a request to be
/// passed to someone: nothing, a word that ends a request ("now", "please"), or "to" / "con"
/// and someone within the next three words — not an account, an amount or "college".
fn to_someone(rest: &[&str]) -> bool {
    match rest.first() {
        None => true,
        Some(&("to" | "con" | "with")) => rest[1..].iter().take(3).any(|w| SOMEONE.contains(w)),
        Some(w) => PUT_THROUGH_AFTER.contains(w),
    }
}

/// "transfer me" or "put me through" (alone, or to someone: [`to_someone`]) and Spanish
/// "transfiéreme" / "transfiérame" (the same): asking to be passed to someone.
fn asks_to_be_put_through(words: &[&str]) -> bool {
    words.iter().enumerate().any(|(i, w)| match *w {
        "transfer" if words.get(i + 1) == Some(&"me") => to_someone(&words[i + 2..]),
        "put" if words.get(i + 1) == Some(&"me") && words.get(i + 2) == Some(&"through") => {
            to_someone(&words[i + 3..])
        }
        "transfiereme" | "transfierame" => to_someone(&words[i + 1..]),
        _ => false,
    })
}

/// Where `phrase` starts in `words`.
fn occurrences<'a>(words: &'a [&str], phrase: &'a [&str]) -> impl Iterator<Item = usize> + 'a {
    (0..=words.len().saturating_sub(phrase.len()))
        .filter(move |&i| words.len() >= phrase.len() && words[i..i + phrase.len()] == *phrase)
}

/// Whether `phrase`, found in `words` at `at`, is asked for (in a message that starts as a
/// question `about_the_bot`, only after a verb of asking: "is it possible to talk to a human?").
fn asked(words: &[&str], phrase: &[&str], at: usize, about_the_bot: bool) -> bool {
    if ASKING.contains(&phrase[0]) {
        return true;
    }
    if words[at.saturating_sub(4)..at]
        .iter()
        .any(|w| ASKING.contains(w))
    {
        return true;
    }
    !about_the_bot
        && words[..at]
            .iter()
            .chain(&words[at + phrase.len()..])
            .all(|w| FILLER.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_phrases() -> Vec<String> {
        crate::config::phrases(crate::config::HANDOFF_PHRASES)
            .iter()
            .map(|p| crate::knowledge::framed(p))
            .collect()
    }

    #[test]
    fn a_person_asked_for_hands_off_a_word_written_does_not() {
        let p = default_phrases();
        for asks in [
            "Can I talk to a HUMAN please?",
            "I want to speak to someone",
            "pásame con un agente",
            "Quiero hablar con una persona real",
            "connect me with an operator",
            "human",
            "A real person please!",
            "agent",
            "let me talk to customer service",
            "necesito un representante",
            "I need a human, this bot is useless",
            "Is it possible to talk to a human?",
            "Am I able to speak to an agent?",
            "is this a bot? I want a real person",
            "human 🙏",
            "agent 😡",
            "This is ridiculous! Just transfer me already!",
            "My rent is due TOMORROW! Transfer me NOW!",
            "just transfer me to someone who can help!",
            "Yes, please transfer me to the security team.",
            "Alright, please transfer me. Thanks for your help.",
            "can you put me through to sales",
            "transfiérame por favor",
        ] {
            assert!(asks_for(&p, asks), "{asks:?} asks for a person");
        }
        for not in [
            "are you a human or a computer?",
            "Are you a real person?",
            "¿Eres una persona?",
            "is this a bot or a real person",
            "my real estate agent never called me back",
            "customer service told me to write here about my refund",
            "who is the person that brought you to life",
            "what is the best way to become a travel agent",
            "the operator of the bus was rude",
            "can you transfer me $50 from savings",
            "please transfer me to my savings account",
            "Can you transfer me to savings?",
            "transfer me to the checking account",
            "transfer me to account 12345",
            "transfer me back the $20 you charged",
            "transfiéreme 100 euros a mi cuenta",
            "My parents put me through college",
            "the fees put me through hell",
            "how long does a transfer take to reach me",
            "transfer money to my friend",
        ] {
            assert!(!asks_for(&p, not), "{not:?} does not ask for a person");
        }
    }
}
