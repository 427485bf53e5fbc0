//! The customer's language: the bot's own messages (handoff, closed, too long, rate limit…)
//! are written in English, Spanish and Portuguese, and each customer gets them in the language
//! they write ([`Lang::detect`]). An operator's override (`MSG_HANDOFF=…`) applies in every
//! language unless a per-language one (`MSG_HANDOFF_ES=…`) exists ([`Text::from_env`]).

use std::collections::HashSet;

use crate::config::Env;

/// A language the bot's own messages are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lang {
    /// English (what a message in no detected language gets).
    #[default]
    En,
    /// Spanish.
    Es,
    /// Portuguese.
    Pt,
}

/// Shorter texts than this many letters are not told apart reliably ("ok", "si").
const FEWEST_LETTERS: usize = 4;
/// How sure the statistical detector must be ([`whatlang::Info::confidence`]).
const SURE: f64 = 0.5;

impl Lang {
    /// Every language, in the order [`Text`] keeps them.
    pub const ALL: [Self; 3] = [Self::En, Self::Es, Self::Pt];

    /// The suffix of a per-language variable (`MSG_HANDOFF_ES`) and the language's code.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::En => "EN",
            Self::Es => "ES",
            Self::Pt => "PT",
        }
    }

    /// The language's English name (for the model's instructions).
    pub fn name(self) -> &'static str {
        match self {
            Self::En => "English",
            Self::Es => "Spanish",
            Self::Pt => "Portuguese",
        }
    }

    /// Its place in [`Lang::ALL`] (and in a [`Text`]).
    pub fn index(self) -> usize {
        match self {
            Self::En => 0,
            Self::Es => 1,
            Self::Pt => 2,
        }
    }

    /// The language `text` is written in, when it is one of these and the text says enough:
    /// its little words ("do you", "por favor", "não"), accents only one of them uses (ñ, ¿;
    /// ã, ç), greetings ("hola", "obrigado"); a statistical detector (whatlang) only when it is
    /// sure — on a few words it is not ("do you sell socks?" reads to it as Portuguese).
    /// `None`: too little to tell ("ok", "a person please").
    pub fn detect(text: &str) -> Option<Self> {
        let lower = text.to_lowercase();
        let mut score = [0.0f32; 3];
        for c in lower.chars() {
            match c {
                'ñ' | '¿' | '¡' => score[Self::Es.index()] += 2.0,
                'ã' | 'õ' | 'ç' | 'ê' | 'ô' => score[Self::Pt.index()] += 2.0,
                _ => {}
            }
        }
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphabetic())
            .filter(|w| !w.is_empty())
            .collect();
        let lists = &*LITTLE_WORDS;
        for w in &words {
            let in_lists = [0, 1, 2].map(|i| lists[i].contains(*w));
            let n = in_lists.iter().filter(|&&b| b).count();
            for (i, _) in in_lists.iter().enumerate().filter(|(_, b)| **b) {
                score[i] += 1.0 / n as f32;
            }
            if let Some(lang) = greeting(w) {
                score[lang.index()] += 2.0;
            }
        }
        let mut order = [0usize, 1, 2];
        order.sort_by(|a, b| score[*b].total_cmp(&score[*a]));
        // More than one little word's worth, or an accent or greeting: one short word ("yo",
        // "eu", "da", "com") is as often a name, an abbreviation or an address.
        if score[order[0]] > 1.0 && score[order[0]] > score[order[1]] {
            return Some(Self::ALL[order[0]]);
        }
        if words.iter().map(|w| w.chars().count()).sum::<usize>() < FEWEST_LETTERS {
            return None;
        }
        let info = DETECTOR.detect(text).filter(|i| i.confidence() >= SURE)?;
        match info.lang() {
            whatlang::Lang::Spa => Some(Self::Es),
            whatlang::Lang::Por => Some(Self::Pt),
            _ => Some(Self::En),
        }
    }

    /// [`Lang::detect`], remembered: a customer's earlier messages are read again with every
    /// message they send (the language of their latest one that says it), and telling a
    /// language statistically costs tens of microseconds. The last few thousand texts are
    /// remembered by a keyed hash (per process), then forgotten all at once.
    pub fn detect_remembered(text: &str) -> Option<Self> {
        use std::hash::BuildHasher;
        let key = SEEN.hasher.hash_one(text);
        if let Some(&lang) = SEEN.langs.lock().expect("seen lock").get(&key) {
            return lang;
        }
        let lang = Self::detect(text);
        let mut langs = SEEN.langs.lock().expect("seen lock");
        if langs.len() >= REMEMBERED {
            langs.clear();
        }
        langs.insert(key, lang);
        lang
    }
}

/// How many texts' languages [`Lang::detect_remembered`] keeps (about 140 KB).
const REMEMBERED: usize = 4096;

/// What [`Lang::detect_remembered`] keeps: languages by the keyed hash of their text.
struct Seen {
    hasher: std::hash::RandomState,
    langs: std::sync::Mutex<std::collections::HashMap<u64, Option<Lang>>>,
}

static SEEN: std::sync::LazyLock<Seen> = std::sync::LazyLock::new(|| Seen {
    hasher: std::hash::RandomState::new(),
    langs: std::sync::Mutex::default(),
});

/// The statistical detector, told the three languages.
static DETECTOR: std::sync::LazyLock<whatlang::Detector> = std::sync::LazyLock::new(|| {
    whatlang::Detector::with_allowlist(vec![
        whatlang::Lang::Eng,
        whatlang::Lang::Spa,
        whatlang::Lang::Por,
    ])
});

/// Each language's little words (NLTK's stop-word lists, lowercased), in [`Lang::ALL`]'s order.
static LITTLE_WORDS: std::sync::LazyLock<[HashSet<String>; 3]> = std::sync::LazyLock::new(|| {
    [
        stop_words::LANGUAGE::English,
        stop_words::LANGUAGE::Spanish,
        stop_words::LANGUAGE::Portuguese,
    ]
    .map(|l| {
        stop_words::get(l)
            .iter()
            .map(|w| w.to_lowercase())
            .collect()
    })
});

/// A word that says the language by itself, where the rest says too little.
fn greeting(word: &str) -> Option<Lang> {
    const WORDS: [(&str, Lang); 22] = [
        ("hi", Lang::En),
        ("hello", Lang::En),
        ("hey", Lang::En),
        ("thanks", Lang::En),
        ("thank", Lang::En),
        ("please", Lang::En),
        ("hola", Lang::Es),
        ("gracias", Lang::Es),
        ("buenas", Lang::Es),
        ("buenos", Lang::Es),
        ("adiós", Lang::Es),
        ("adios", Lang::Es),
        ("quiero", Lang::Es),
        ("oi", Lang::Pt),
        ("olá", Lang::Pt),
        ("obrigado", Lang::Pt),
        ("obrigada", Lang::Pt),
        ("valeu", Lang::Pt),
        ("tchau", Lang::Pt),
        ("bom", Lang::Pt),
        ("quero", Lang::Pt),
        ("você", Lang::Pt),
    ];
    WORDS.iter().find(|(g, _)| *g == word).map(|(_, l)| *l)
}

/// One of the bot's texts in every language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text([String; 3]);

impl Text {
    /// The same text in every language (an operator's words, a test's).
    pub fn same(text: &str) -> Self {
        Self([text.to_owned(), text.to_owned(), text.to_owned()])
    }

    /// The text of variable `var`: per language, `{var}_{ES|PT|EN}` when set, else `var` when
    /// set, else `defaults` (English, Spanish, Portuguese).
    pub fn from_env(env: &Env, var: &str, defaults: [&str; 3]) -> Self {
        let all = env.opt_string(var);
        let mut texts: [String; 3] = Default::default();
        for lang in Lang::ALL {
            texts[lang.index()] = env
                .variant(var, lang.suffix())
                .or_else(|| all.clone())
                .unwrap_or_else(|| defaults[lang.index()].to_owned());
        }
        Self(texts)
    }

    /// [`Text::from_env`] for a text an operator may turn off: `var` set to nothing is an
    /// empty text in every language (a per-language variant still wins).
    pub fn from_env_allow_empty(env: &Env, var: &str, defaults: [&str; 3]) -> Self {
        Self(Lang::ALL.map(|lang| {
            env.variant(var, lang.suffix())
                .unwrap_or_else(|| env.string_allow_empty(var, defaults[lang.index()]))
        }))
    }

    /// The text in `lang`.
    pub fn get(&self, lang: Lang) -> &str {
        &self.0[lang.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_s_language_is_told_from_what_they_write() {
        for (text, lang) in [
            ("hola", Some(Lang::Es)),
            ("Hola, ¿a qué hora abren mañana?", Some(Lang::Es)),
            ("¿Tienen envío a Madrid?", Some(Lang::Es)),
            (
                "quiero devolver unos zapatos que compré la semana pasada",
                Some(Lang::Es),
            ),
            ("obrigado!", Some(Lang::Pt)),
            ("Olá, vocês entregam em Lisboa?", Some(Lang::Pt)),
            (
                "quero devolver os sapatos que comprei na semana passada",
                Some(Lang::Pt),
            ),
            ("hi", Some(Lang::En)),
            ("what are your opening hours?", Some(Lang::En)),
            (
                "I'd like to return the shoes I bought last week",
                Some(Lang::En),
            ),
            ("do you sell socks?", Some(Lang::En)),
            ("can I pay by card", Some(Lang::En)),
            ("a person please", Some(Lang::En)),
            ("hablar con alguien, por favor", Some(Lang::Es)),
            ("mi pedido no ha llegado", Some(Lang::Es)),
            ("meu pedido não chegou", Some(Lang::Pt)),
            ("quero um reembolso", Some(Lang::Pt)),
            ("¿cuánto cuesta el envío?", Some(Lang::Es)),
            ("ok", None),
            ("yo", None),
            ("EU shipping?", None),
            ("john@gmail.com", None),
            (
                "Returns within 30 days: see rosas.com/returns",
                Some(Lang::En),
            ),
            ("👍", None),
            ("12345", None),
        ] {
            assert_eq!(Lang::detect(text), lang, "{text}");
            // Remembered: the same answer the first time and every time after.
            assert_eq!(Lang::detect_remembered(text), lang, "{text}");
            assert_eq!(Lang::detect_remembered(text), lang, "{text}");
        }
    }

    #[test]
    fn remembered_languages_are_held_to_a_few_thousand_texts() {
        for n in 0..REMEMBERED + 10 {
            let text = format!("quero um reembolso do pedido {n}");
            assert_eq!(Lang::detect_remembered(&text), Some(Lang::Pt));
        }
        let held = SEEN.langs.lock().unwrap().len();
        assert!(held <= REMEMBERED, "{held} texts remembered");
    }

    #[test]
    fn an_override_applies_in_every_language_unless_one_is_set_for_a_language() {
        let defaults = ["Hello", "Hola", "Olá"];
        let env = Env::from_pairs(Vec::<(String, String)>::new());
        let t = Text::from_env(&env, "MSG_GREETING", defaults);
        assert_eq!(
            Lang::ALL.map(|l| t.get(l)),
            ["Hello", "Hola", "Olá"],
            "the built-in texts"
        );
        let env = Env::from_pairs([("MSG_GREETING", "Welcome to Rosa's!")]);
        let t = Text::from_env(&env, "MSG_GREETING", defaults);
        assert_eq!(Lang::ALL.map(|l| t.get(l)), ["Welcome to Rosa's!"; 3]);
        let env = Env::from_pairs([
            ("MSG_GREETING", "Welcome to Rosa's!"),
            ("MSG_GREETING_ES", "¡Bienvenido a Rosa's!"),
        ]);
        let t = Text::from_env(&env, "MSG_GREETING", defaults);
        assert_eq!(
            Lang::ALL.map(|l| t.get(l)),
            [
                "Welcome to Rosa's!",
                "¡Bienvenido a Rosa's!",
                "Welcome to Rosa's!"
            ]
        );
    }
}
