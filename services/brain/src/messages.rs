//! Every text a customer can get that the model did not write, in one place; each can be
//! replaced through its environment variable.

use shared::config::Env;

/// The customer-facing texts (see the module docs).
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

impl Messages {
    /// Each text from its variable, or its default.
    pub fn from_env(env: &mut Env) -> Self {
        let s = |env: &Env, name: &str, default: &str| env.string(name, default);
        let (handoff, closed, handoff_timeout) = handoff_texts(env);
        Self {
            handoff,
            closed,
            handoff_timeout,
            not_allowed: s(
                env,
                "MSG_NOT_ALLOWED",
                "Sorry, this assistant is only available to invited customers.",
            ),
            llm_down: s(
                env,
                "MSG_LLM_DOWN",
                "Sorry, I'm having technical difficulties right now. Please try again in a few minutes.",
            ),
            not_configured: s(
                env,
                "MSG_NOT_CONFIGURED",
                "Thanks for your message! I've passed it to a person here, who will reply as soon as they can.",
            ),
            budget: s(env, "BUDGET_MESSAGE", "We'll get back to you shortly."),
            token_budget: s(
                env,
                "MSG_TOKEN_BUDGET",
                "You've reached today's limit for the assistant. Please write again tomorrow.",
            ),
            visitor_budget: s(
                env,
                "MSG_VISITOR_BUDGET",
                "Our chat assistant has answered all it can for today. Please write again tomorrow, or reach us by phone or WhatsApp.",
            ),
            unsupported: s(
                env,
                "MSG_UNSUPPORTED",
                "I can read text, voice notes and photos. Could you send your question as one of those?",
            ),
            too_long: s(
                env,
                "MSG_TOO_LONG",
                "That message is too long for me. Could you shorten it a little?",
            ),
            image_too_large: s(
                env,
                "MSG_IMAGE_TOO_LARGE",
                "That photo is too large for me. Could you send a smaller one?",
            ),
            listening: s(env, "MSG_LISTENING", "Listening to your voice message…"),
            transcription_failed: s(
                env,
                "MSG_TRANSCRIPTION_FAILED",
                "Sorry, I couldn't understand that voice message. Could you please type your question?",
            ),
            voice_too_long: s(
                env,
                "MSG_VOICE_TOO_LONG",
                "That voice message is too long for me. Could you send a shorter one or type your question?",
            ),
            opted_out: s(
                env,
                "MSG_OPTED_OUT",
                "You won't get any more messages from us. Write START if you'd like to chat again.",
            ),
            opted_in: s(env, "MSG_OPTED_IN", "Welcome back! How can I help you?"),
            admin_only: s(
                env,
                "MSG_ADMIN_ONLY",
                "Sorry, that command is for administrators.",
            ),
            greeting: s(env, "MSG_GREETING", "Hello! How can I help you today?"),
            thanks: s(env, "MSG_THANKS", "You're welcome!"),
            goodbye: s(env, "MSG_GOODBYE", "Goodbye! Write any time."),
            apology: s(
                env,
                "MSG_APOLOGY",
                "Sorry, something went wrong with your message. Please send it again in a moment.",
            ),
        }
    }
}

/// `MSG_HANDOFF`, `MSG_CLOSED`, `MSG_HANDOFF_TIMEOUT`.
fn handoff_texts(env: &Env) -> (String, String, String) {
    let s = |env: &Env, name: &str, default: &str| env.string(name, default);
    (
        s(
            env,
            "MSG_HANDOFF",
            "Thanks — I've passed your message to our team: a person will reply here soon.",
        ),
        s(
            env,
            "MSG_CLOSED",
            "Thanks — we're closed right now. A person will reply when we open ({when}); until then I'll help with what I can.",
        ),
        s(
            env,
            "MSG_HANDOFF_TIMEOUT",
            "Sorry, nobody from our team could answer yet. I'm here again in the meantime: tell me how I can help, or write \"person\" to ask for someone later.",
        ),
    )
}
