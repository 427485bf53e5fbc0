//! The Cloud API's webhook body (`object: whatsapp_business_account`), read leniently: the
//! fields the gateway uses, everything else ignored, unknown message types kept as `other`.

use serde::Deserialize;

/// A webhook notification: entries of changes.
#[derive(Debug, Default, Deserialize)]
pub struct Notification {
    /// `whatsapp_business_account` for WhatsApp.
    #[serde(default)]
    pub object: String,
    /// One per business account.
    #[serde(default)]
    pub entry: Vec<Entry>,
}

/// Changes of one business account.
#[derive(Debug, Default, Deserialize)]
pub struct Entry {
    /// What changed.
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// One change: `field` names what it is about (`messages` for messages and statuses).
#[derive(Debug, Default, Deserialize)]
pub struct Change {
    /// `messages`, or another subscription field (ignored).
    #[serde(default)]
    pub field: String,
    /// Its content.
    #[serde(default)]
    pub value: Value,
}

/// The content of a `messages` change.
#[derive(Debug, Default, Deserialize)]
pub struct Value {
    /// The business number it came to.
    #[serde(default)]
    pub metadata: Metadata,
    /// The senders' profiles.
    #[serde(default)]
    pub contacts: Vec<Contact>,
    /// Customers' messages.
    #[serde(default)]
    pub messages: Vec<Message>,
    /// What became of messages we sent.
    #[serde(default)]
    pub statuses: Vec<Status>,
}

/// The business phone number of a change.
#[derive(Debug, Default, Deserialize)]
pub struct Metadata {
    /// Its id (`WA_CLOUD_PHONE_NUMBER_ID`).
    #[serde(default)]
    pub phone_number_id: String,
}

/// A sender's profile.
#[derive(Debug, Default, Deserialize)]
pub struct Contact {
    /// The sender's WhatsApp id (their phone number's digits).
    #[serde(default)]
    pub wa_id: String,
    /// The business-scoped user id, where WhatsApp sends one.
    #[serde(default)]
    pub user_id: String,
    /// The name they chose.
    #[serde(default)]
    pub profile: Profile,
}

/// A profile's name.
#[derive(Debug, Default, Deserialize)]
pub struct Profile {
    /// The name.
    #[serde(default)]
    pub name: String,
}

/// A customer's message.
#[derive(Debug, Default, Deserialize)]
pub struct Message {
    /// The sender's phone number's digits (absent for a user WhatsApp only names by id).
    #[serde(default)]
    pub from: String,
    /// The sender's business-scoped user id, where WhatsApp sends one.
    #[serde(default)]
    pub from_user_id: String,
    /// The message id (`wamid.…`).
    #[serde(default)]
    pub id: String,
    /// Unix seconds, as a string.
    #[serde(default)]
    pub timestamp: String,
    /// `text`, `audio`, `image`, or another type.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// A text message's content.
    pub text: Option<Text>,
    /// A voice note or audio file.
    pub audio: Option<Media>,
    /// A photo.
    pub image: Option<Media>,
}

/// A text's body.
#[derive(Debug, Default, Deserialize)]
pub struct Text {
    /// The text.
    #[serde(default)]
    pub body: String,
}

/// A media message's reference.
#[derive(Debug, Default, Deserialize)]
pub struct Media {
    /// The media id (fetched with `GET {graph}/{id}`).
    #[serde(default)]
    pub id: String,
    /// Its MIME type as WhatsApp reports it.
    #[serde(default)]
    pub mime_type: String,
    /// A photo's caption.
    #[serde(default)]
    pub caption: String,
}

/// What became of a message we sent.
#[derive(Debug, Default, Deserialize)]
pub struct Status {
    /// Our message's WhatsApp id (as the send answered).
    #[serde(default)]
    pub id: String,
    /// `sent`, `delivered`, `read`, `failed` (others ignored).
    #[serde(default)]
    pub status: String,
    /// Unix seconds, as a string.
    #[serde(default)]
    pub timestamp: String,
    /// The customer's phone number's digits.
    #[serde(default)]
    pub recipient_id: String,
    /// The customer's business-scoped user id, where WhatsApp sends one.
    #[serde(default)]
    pub recipient_user_id: String,
    /// Why it failed.
    #[serde(default)]
    pub errors: Vec<GraphErrorDetail>,
}

/// One error of a failed status.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct GraphErrorDetail {
    /// WhatsApp's error code (131047: outside the 24-hour window).
    #[serde(default)]
    pub code: i64,
    /// A short title.
    #[serde(default)]
    pub title: String,
}

/// The chat of a customer's message: their phone number's digits, or the user id WhatsApp
/// names them by when it gives no number.
impl Message {
    /// The chat to answer in (empty when the message names no sender).
    pub fn chat(&self) -> &str {
        if self.from.is_empty() {
            &self.from_user_id
        } else {
            &self.from
        }
    }
}

impl Notification {
    /// Parses a webhook body.
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The `messages` changes addressed to `phone_number_id`.
    pub fn changes_for<'a>(&'a self, phone_number_id: &'a str) -> impl Iterator<Item = &'a Value> {
        self.entry
            .iter()
            .flat_map(|e| &e.changes)
            .filter(move |c| {
                c.field == "messages" && c.value.metadata.phone_number_id == phone_number_id
            })
            .map(|c| &c.value)
    }

    /// Everyone the notification names (phone numbers' digits and user ids), whatever number
    /// it is for.
    pub fn people(&self) -> Vec<String> {
        let mut people: Vec<String> = Vec::new();
        for v in self.entry.iter().flat_map(|e| &e.changes).map(|c| &c.value) {
            let named = v
                .contacts
                .iter()
                .flat_map(|c| [&c.wa_id, &c.user_id])
                .chain(v.messages.iter().flat_map(|m| [&m.from, &m.from_user_id]))
                .chain(
                    v.statuses
                        .iter()
                        .flat_map(|s| [&s.recipient_id, &s.recipient_user_id]),
                );
            for p in named {
                if !p.is_empty() && !people.contains(p) {
                    people.push(p.clone());
                }
            }
        }
        people
    }
}

impl Value {
    /// The profile name of the sender `chat`, if given.
    pub fn name_of(&self, chat: &str) -> &str {
        self.contacts
            .iter()
            .find(|c| c.wa_id == chat || (!c.user_id.is_empty() && c.user_id == chat))
            .map_or("", |c| c.profile.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Meta's documented examples (text, voice note, photo with caption, statuses).
    pub(crate) const TEXT: &str = r#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":"16505551234"}],"messages":[{"from":"16505551234","id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=","timestamp":"1749416383","type":"text","text":{"body":"Does it come in another color?"}}]},"field":"messages"}]}]}"#;

    #[test]
    fn a_text_message_names_its_sender_and_body() {
        let n = Notification::parse(TEXT.as_bytes()).unwrap();
        assert_eq!(n.object, "whatsapp_business_account");
        let v: Vec<&Value> = n.changes_for("106540352242922").collect();
        assert_eq!(v.len(), 1);
        let m = &v[0].messages[0];
        assert_eq!(m.chat(), "16505551234");
        assert_eq!(m.kind, "text");
        assert_eq!(
            m.text.as_ref().unwrap().body,
            "Does it come in another color?"
        );
        assert_eq!(v[0].name_of("16505551234"), "Sheena Nelson");
        assert_eq!(n.people(), vec!["16505551234".to_owned()]);
        assert_eq!(n.changes_for("999").count(), 0, "another number's change");
    }

    #[test]
    fn a_status_with_errors_keeps_the_code() {
        let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"statuses":[{"id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MTE5MjVBOTE3MDk5QUVFM0YA","status":"failed","timestamp":"1750263773","recipient_id":"16505551234","errors":[{"code":131047,"title":"Re-engagement message","message":"Re-engagement message","error_data":{"details":"Message failed to send because more than 24 hours have passed since the customer last replied to this number."},"href":"https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}]}]},"field":"messages"}]}]}"#;
        let n = Notification::parse(body.as_bytes()).unwrap();
        let s = &n.changes_for("106540352242922").next().unwrap().statuses[0];
        assert_eq!(s.status, "failed");
        assert_eq!(s.errors[0].code, 131_047);
        assert_eq!(n.people(), vec!["16505551234".to_owned()]);
    }

    #[test]
    fn unknown_fields_and_types_are_ignored_not_errors() {
        let body = r#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"account_update","value":{"event":"VERIFIED"}},{"field":"messages","value":{"metadata":{"phone_number_id":"1"},"messages":[{"from":"1555","id":"wamid.x","timestamp":"1","type":"reaction","reaction":{"message_id":"wamid.y","emoji":"👍"}}]}}]}]}"#;
        let n = Notification::parse(body.as_bytes()).unwrap();
        let v: Vec<&Value> = n.changes_for("1").collect();
        assert_eq!(v[0].messages[0].kind, "reaction");
        assert!(Notification::parse(b"[1,2]").is_err());
    }
}
