//! Small talk a shop without a model still answers kindly: a message that is only a greeting,
//! a thanks or a goodbye (English, Spanish, Portuguese); an acknowledgement ("ok", "👍") needs
//! no answer. Anything more ("hi, are you open
//! today?") is a question, for the knowledge base and whoever answers the rest.

use crate::messages::Messages;

/// What a small-talk message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Talk {
    /// hi, hello, good morning, hola, buenos días, olá, bom dia…
    Greeting,
    /// thanks, thank you, gracias, obrigado…
    Thanks,
    /// bye, goodbye, see you, adiós, hasta luego, tchau…
    Goodbye,
    /// ok, great, got it, vale, 👍 — nothing to answer.
    Ack,
}

const GREETING: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "hiya",
    "howdy",
    "yo",
    "good",
    "morning",
    "afternoon",
    "evening",
    "day",
    "there",
    "hola",
    "buenas",
    "buenos",
    "dias",
    "tardes",
    "noches",
    "ola",
    "oi",
    "bom",
    "boa",
    "dia",
    "tarde",
    "noite",
    "saludos",
];
const THANKS: &[&str] = &[
    "thanks",
    "thank",
    "you",
    "thx",
    "ty",
    "cheers",
    "much",
    "so",
    "very",
    "a",
    "lot",
    "appreciate",
    "it",
    "gracias",
    "muchas",
    "muchisimas",
    "mil",
    "obrigado",
    "obrigada",
    "muito",
    "great",
    "perfect",
    "ok",
    "okay",
    "cool",
    "awesome",
    "genial",
    "perfecto",
    "vale",
];
const ACK: &[&str] = &[
    "ok",
    "okay",
    "k",
    "kk",
    "great",
    "perfect",
    "cool",
    "nice",
    "good",
    "got",
    "it",
    "alright",
    "fine",
    "sure",
    "noted",
    "understood",
    "vale",
    "perfecto",
    "genial",
    "bien",
    "de",
    "acuerdo",
    "entendido",
    "beleza",
    "certo",
    "entendi",
    "otimo",
    "thanks",
];
const GOODBYE: &[&str] = &[
    "bye", "goodbye", "see", "you", "later", "soon", "ciao", "adios", "hasta", "luego", "pronto",
    "chao", "tchau", "ate", "logo", "take", "care", "have", "a", "nice", "good", "day", "night",
    "buen", "dia",
];
/// Words that mark each kind (the rest of its list may only stand beside them).
const GREETING_MARKS: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "hiya",
    "howdy",
    "morning",
    "afternoon",
    "evening",
    "hola",
    "buenas",
    "buenos",
    "buen",
    "ola",
    "oi",
    "bom",
    "boa",
    "saludos",
];
const THANKS_MARKS: &[&str] = &[
    "thanks",
    "thank",
    "thx",
    "ty",
    "cheers",
    "appreciate",
    "gracias",
    "obrigado",
    "obrigada",
];
const GOODBYE_MARKS: &[&str] = &[
    "bye", "goodbye", "later", "ciao", "adios", "luego", "chao", "tchau", "logo", "night",
    "noches", "noite",
];

/// The small talk `text` is, if it is only that.
pub fn small_talk(text: &str) -> Option<Talk> {
    let framed = crate::knowledge::framed_words(text);
    let words: Vec<&str> = framed.split_whitespace().collect();
    if words.is_empty() {
        // Only emoji or punctuation ("👍"): nothing to answer.
        return (!text.trim().is_empty()).then_some(Talk::Ack);
    }
    if words.len() > 8 {
        return None;
    }
    let only = |list: &[&str], marks: &[&str]| {
        words.iter().all(|w| list.contains(w) || marks.contains(w))
            && words.iter().any(|w| marks.contains(w))
    };
    // Thanks first: "thank you, bye" is thanks; "ok thanks" too.
    [
        (Talk::Thanks, THANKS, THANKS_MARKS),
        (Talk::Goodbye, GOODBYE, GOODBYE_MARKS),
        (Talk::Greeting, GREETING, GREETING_MARKS),
        (Talk::Ack, ACK, ACK),
    ]
    .into_iter()
    .find(|(_, list, marks)| only(list, marks))
    .map(|(talk, _, _)| talk)
    .or_else(|| mixed(&words))
}

/// Thanks and goodbye together ("thanks, bye!"): thanks.
fn mixed(words: &[&str]) -> Option<Talk> {
    let known = |w: &&str| THANKS.contains(w) || THANKS_MARKS.contains(w) || GOODBYE.contains(w);
    (words.iter().all(known) && words.iter().any(|w| THANKS_MARKS.contains(w)))
        .then_some(Talk::Thanks)
}

/// The answer to small talk: its text (`MSG_GREETING`, …), with the automated assistant's
/// disclosure when it is the contact's first reply.
pub fn small_talk_reply(
    contact: &crate::store::Contact,
    talk: Talk,
    cfg: &crate::config::Config,
    lang: shared::lang::Lang,
) -> crate::domain::Decision {
    use crate::domain::{AnsweredBy, Decision, Effect, Outcome};
    let Some(text) = talk.reply(cfg.messages.get(lang)) else {
        return Decision::silent(Outcome::SmallTalk);
    };
    match super::replies::disclosure(contact, AnsweredBy::Knowledge, cfg, lang) {
        Some(first) => Decision::notice(&format!("{first}\n\n{text}"), Outcome::SmallTalk)
            .with(Effect::Disclose),
        None => Decision::notice(text, Outcome::SmallTalk),
    }
}

impl Talk {
    /// What the bot answers (`MSG_GREETING`, `MSG_THANKS`, `MSG_GOODBYE`; nothing to an
    /// acknowledgement).
    pub fn reply(self, msgs: &Messages) -> Option<&str> {
        match self {
            Talk::Greeting => Some(&msgs.greeting),
            Talk::Thanks => Some(&msgs.thanks),
            Talk::Goodbye => Some(&msgs.goodbye),
            Talk::Ack => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_greeting_thanks_or_goodbye_is_small_talk() {
        for (text, talk) in [
            ("Hi!", Talk::Greeting),
            ("hello there", Talk::Greeting),
            ("Good morning", Talk::Greeting),
            ("¡Hola, buenos días!", Talk::Greeting),
            ("Olá, bom dia", Talk::Greeting),
            ("thank you!", Talk::Thanks),
            ("Thanks a lot 🙏", Talk::Thanks),
            ("muchas gracias", Talk::Thanks),
            ("ok thanks, bye", Talk::Thanks),
            ("bye!", Talk::Goodbye),
            ("see you later", Talk::Goodbye),
            ("hasta luego", Talk::Goodbye),
            ("good night", Talk::Goodbye),
            ("¡Buen día!", Talk::Greeting),
            ("ok", Talk::Ack),
            ("good", Talk::Ack),
            ("great, got it", Talk::Ack),
            ("👍", Talk::Ack),
        ] {
            assert_eq!(small_talk(text), Some(talk), "{text:?}");
        }
        for text in [
            "hi, are you open today?",
            "hello, where is my order",
            "thank you for nothing, my shoes never arrived",
            "",
            "what are your opening hours?",
        ] {
            assert_eq!(small_talk(text), None, "{text:?}");
        }
    }
}
