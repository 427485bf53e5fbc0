//! Every text a customer can get that the model did not write, in one place, in English,
//! Spanish and Portuguese ([`shared::lang`]): each customer gets them in the language they
//! write. Each can be replaced through its environment variable — in every language — or per
//! language (`MSG_HANDOFF_ES`).

use shared::config::Env;
use shared::lang::{Lang, Text};

/// The customer-facing texts in one language (see the module docs).
#[derive(Debug, Clone)]
pub struct Messages {
    /// `MSG_NOT_ALLOWED`: to a non-whitelisted contact, once a day.
    pub not_allowed: String,
    /// `MSG_LLM_DOWN`: the model failed (all retries, circuit open, deadline).
    pub llm_down: String,
    /// `MSG_NOT_CONFIGURED`: no LLM configured.
    pub not_configured: String,
    /// `MSG_HANDOFF`: the conversation goes to a person.
    pub handoff: String,
    /// `MSG_CLOSED`: a person is asked for outside `BUSINESS_HOURS` (`{when}`: the next opening).
    pub closed: String,
    /// `MSG_HANDOFF_TIMEOUT`: nobody answered in time; the bot is back.
    pub handoff_timeout: String,
    /// `BUDGET_MESSAGE`: the daily budget is used up.
    pub budget: String,
    /// `MSG_TOKEN_BUDGET`: this contact's daily tokens are used up.
    pub token_budget: String,
    /// `MSG_VISITOR_BUDGET`: the web chat visitors' shared daily allowance is used up.
    pub visitor_budget: String,
    /// `MSG_UNSUPPORTED`: stickers, documents, locations…
    pub unsupported: String,
    /// `MSG_TOO_LONG`: text over `MAX_INPUT_CHARS`.
    pub too_long: String,
    /// `MSG_IMAGE_TOO_LARGE`: image over `MAX_IMAGE_MB`.
    pub image_too_large: String,
    /// `MSG_LISTENING`: a voice note is being transcribed.
    pub listening: String,
    /// `MSG_TRANSCRIPTION_FAILED`.
    pub transcription_failed: String,
    /// `MSG_VOICE_TOO_LONG`.
    pub voice_too_long: String,
    /// `MSG_OPTED_OUT`: the confirmation of `STOP`.
    pub opted_out: String,
    /// `MSG_OPTED_IN`: the confirmation of `START`.
    pub opted_in: String,
    /// `MSG_ADMIN_ONLY`.
    pub admin_only: String,
    /// `MSG_GREETING`, `MSG_THANKS`, `MSG_GOODBYE`: small talk answered without a model.
    pub greeting: String,
    /// See `greeting`.
    pub thanks: String,
    /// See `greeting`.
    pub goodbye: String,
    /// `MSG_APOLOGY`: a message that could not be handled at all (dead-lettered).
    pub apology: String,
}

/// The customer-facing texts in every language.
#[derive(Debug, Clone)]
pub struct Localized([Messages; 3]);

impl Localized {
    /// Each text from its variables, or its defaults.
    pub fn from_env(env: &Env) -> Self {
        Self(Lang::ALL.map(|lang| Messages::from_env(env, lang)))
    }

    /// The texts in `lang`.
    pub fn get(&self, lang: Lang) -> &Messages {
        &self.0[lang.index()]
    }
}

/// Variable, and its default in English, Spanish and Portuguese.
type Default = (&'static str, [&'static str; 3]);

const NOT_ALLOWED: Default = (
    "MSG_NOT_ALLOWED",
    [
        "Sorry, this assistant is only available to invited customers.",
        "Lo siento, este asistente solo está disponible para clientes invitados.",
        "Desculpe, este assistente está disponível apenas para clientes convidados.",
    ],
);
const LLM_DOWN: Default = (
    "MSG_LLM_DOWN",
    [
        "Sorry, I'm having technical difficulties right now. Please try again in a few minutes.",
        "Lo siento, ahora mismo tengo problemas técnicos. Vuelve a intentarlo en unos minutos, por favor.",
        "Desculpe, estou com dificuldades técnicas agora. Tente novamente em alguns minutos, por favor.",
    ],
);
const NOT_CONFIGURED: Default = (
    "MSG_NOT_CONFIGURED",
    [
        "Thanks for your message! I've passed it to a person here, who will reply as soon as they can.",
        "¡Gracias por tu mensaje! Se lo he pasado a una persona del equipo, que te responderá en cuanto pueda.",
        "Obrigado pela sua mensagem! Passei para uma pessoa da equipe, que vai responder assim que puder.",
    ],
);
const BUDGET: Default = (
    "BUDGET_MESSAGE",
    [
        "We'll get back to you shortly.",
        "Te responderemos en breve.",
        "Responderemos em breve.",
    ],
);
const TOKEN_BUDGET: Default = (
    "MSG_TOKEN_BUDGET",
    [
        "You've reached today's limit for the assistant. Please write again tomorrow.",
        "Has llegado al límite de hoy del asistente. Escríbenos de nuevo mañana, por favor.",
        "Você atingiu o limite de hoje do assistente. Escreva novamente amanhã, por favor.",
    ],
);
const VISITOR_BUDGET: Default = (
    "MSG_VISITOR_BUDGET",
    [
        "Our chat assistant has answered all it can for today. Please write again tomorrow, or reach us by phone or WhatsApp.",
        "Nuestro asistente ya ha respondido todo lo que puede por hoy. Escríbenos mañana, o contáctanos por teléfono o WhatsApp.",
        "Nosso assistente já respondeu tudo o que podia hoje. Escreva amanhã, ou fale conosco por telefone ou WhatsApp.",
    ],
);
const UNSUPPORTED: Default = (
    "MSG_UNSUPPORTED",
    [
        "I can read text, voice notes and photos. Could you send your question as one of those?",
        "Puedo leer texto, notas de voz y fotos. ¿Podrías enviar tu pregunta de una de esas formas?",
        "Consigo ler texto, mensagens de voz e fotos. Pode enviar sua pergunta de uma dessas formas?",
    ],
);
const TOO_LONG: Default = (
    "MSG_TOO_LONG",
    [
        "That message is too long for me. Could you shorten it a little?",
        "Ese mensaje es demasiado largo para mí. ¿Podrías acortarlo un poco?",
        "Essa mensagem é longa demais para mim. Pode encurtá-la um pouco?",
    ],
);
const IMAGE_TOO_LARGE: Default = (
    "MSG_IMAGE_TOO_LARGE",
    [
        "That photo is too large for me. Could you send a smaller one?",
        "Esa foto es demasiado grande para mí. ¿Podrías enviar una más pequeña?",
        "Essa foto é grande demais para mim. Pode enviar uma menor?",
    ],
);
const LISTENING: Default = (
    "MSG_LISTENING",
    [
        "Listening to your voice message…",
        "Escuchando tu mensaje de voz…",
        "Ouvindo sua mensagem de voz…",
    ],
);
const TRANSCRIPTION_FAILED: Default = (
    "MSG_TRANSCRIPTION_FAILED",
    [
        "Sorry, I couldn't understand that voice message. Could you please type your question?",
        "Lo siento, no he entendido ese mensaje de voz. ¿Podrías escribir tu pregunta?",
        "Desculpe, não entendi essa mensagem de voz. Pode escrever sua pergunta?",
    ],
);
const VOICE_TOO_LONG: Default = (
    "MSG_VOICE_TOO_LONG",
    [
        "That voice message is too long for me. Could you send a shorter one or type your question?",
        "Ese mensaje de voz es demasiado largo para mí. ¿Podrías enviar uno más corto o escribir tu pregunta?",
        "Essa mensagem de voz é longa demais para mim. Pode enviar uma mais curta ou escrever sua pergunta?",
    ],
);
const OPTED_OUT: Default = (
    "MSG_OPTED_OUT",
    [
        "You won't get any more messages from us. Write START if you'd like to chat again.",
        "No recibirás más mensajes nuestros. Escribe START si quieres volver a hablar.",
        "Você não receberá mais mensagens nossas. Escreva START se quiser conversar de novo.",
    ],
);
const OPTED_IN: Default = (
    "MSG_OPTED_IN",
    [
        "Welcome back! How can I help you?",
        "¡Bienvenido de nuevo! ¿En qué puedo ayudarte?",
        "Bem-vindo de volta! Como posso ajudar?",
    ],
);
const ADMIN_ONLY: Default = (
    "MSG_ADMIN_ONLY",
    [
        "Sorry, that command is for administrators.",
        "Lo siento, ese comando es solo para administradores.",
        "Desculpe, esse comando é só para administradores.",
    ],
);
const GREETING: Default = (
    "MSG_GREETING",
    [
        "Hello! How can I help you today?",
        "¡Hola! ¿En qué puedo ayudarte hoy?",
        "Olá! Como posso ajudar hoje?",
    ],
);
const THANKS: Default = ("MSG_THANKS", ["You're welcome!", "¡De nada!", "De nada!"]);
const GOODBYE: Default = (
    "MSG_GOODBYE",
    [
        "Goodbye! Write any time.",
        "¡Hasta luego! Escríbenos cuando quieras.",
        "Até logo! Escreva quando quiser.",
    ],
);
const APOLOGY: Default = (
    "MSG_APOLOGY",
    [
        "Sorry, something went wrong with your message. Please send it again in a moment.",
        "Lo siento, algo ha fallado con tu mensaje. Envíalo de nuevo en un momento, por favor.",
        "Desculpe, algo deu errado com sua mensagem. Envie novamente daqui a pouco, por favor.",
    ],
);
const HANDOFF: Default = (
    "MSG_HANDOFF",
    [
        "Thanks — I've passed your message to our team: a person will reply here soon.",
        "Gracias: he pasado tu mensaje a nuestro equipo y una persona te responderá aquí pronto.",
        "Obrigado — passei sua mensagem para nossa equipe: uma pessoa vai responder aqui em breve.",
    ],
);
const CLOSED: Default = (
    "MSG_CLOSED",
    [
        "Thanks — we're closed right now. A person will reply when we open ({when}); until then I'll help with what I can.",
        "Gracias. Ahora mismo estamos cerrados: una persona te responderá cuando abramos ({when}); mientras tanto, te ayudo en lo que pueda.",
        "Obrigado — estamos fechados agora. Uma pessoa vai responder quando abrirmos ({when}); até lá, ajudo no que puder.",
    ],
);
const HANDOFF_TIMEOUT: Default = (
    "MSG_HANDOFF_TIMEOUT",
    [
        "Sorry, nobody from our team could answer yet. I'm here again in the meantime: tell me how I can help, or write \"person\" to ask for someone later.",
        "Lo siento, nadie del equipo ha podido responder todavía. Mientras tanto vuelvo a estar aquí: dime en qué puedo ayudarte, o escribe \"persona\" para pedir que te atiendan más tarde.",
        "Desculpe, ninguém da equipe conseguiu responder ainda. Enquanto isso estou aqui de novo: diga como posso ajudar, ou escreva \"pessoa\" para pedir alguém mais tarde.",
    ],
);

impl Messages {
    /// Each text in `lang` from its variables ([`Text::from_env`]), or its default.
    pub fn from_env(env: &Env, lang: Lang) -> Self {
        let s = |(var, defaults): Default| Text::from_env(env, var, defaults).get(lang).to_owned();
        Self {
            not_allowed: s(NOT_ALLOWED),
            llm_down: s(LLM_DOWN),
            not_configured: s(NOT_CONFIGURED),
            handoff: s(HANDOFF),
            closed: s(CLOSED),
            handoff_timeout: s(HANDOFF_TIMEOUT),
            budget: s(BUDGET),
            token_budget: s(TOKEN_BUDGET),
            visitor_budget: s(VISITOR_BUDGET),
            unsupported: s(UNSUPPORTED),
            too_long: s(TOO_LONG),
            image_too_large: s(IMAGE_TOO_LARGE),
            listening: s(LISTENING),
            transcription_failed: s(TRANSCRIPTION_FAILED),
            voice_too_long: s(VOICE_TOO_LONG),
            opted_out: s(OPTED_OUT),
            opted_in: s(OPTED_IN),
            admin_only: s(ADMIN_ONLY),
            greeting: s(GREETING),
            thanks: s(THANKS),
            goodbye: s(GOODBYE),
            apology: s(APOLOGY),
        }
    }
}

/// The line before an FAQ answer written in `answer`'s language, for a customer writing in
/// `customer`'s.
pub fn written_in(customer: Lang, answer: Lang) -> &'static str {
    match (customer, answer) {
        (Lang::Es, Lang::En) => "(Nuestra respuesta está en inglés:)",
        (Lang::Es, _) => "(Nuestra respuesta está en portugués:)",
        (Lang::Pt, Lang::En) => "(Nossa resposta está em inglês:)",
        (Lang::Pt, _) => "(Nossa resposta está em espanhol:)",
        (Lang::En, Lang::Pt) => "(Our answer is in Portuguese:)",
        (Lang::En, _) => "(Our answer is in Spanish:)",
    }
}
