//! The Graph API calls of the `cloud` transport: send a text, mark a message read (with the
//! typing indicator), fetch media, check the access token. Every failure is classified:
//! throttling (130429, 131056, 80007, HTTP 429), 5xx and network errors are worth retrying;
//! the rest are not.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use shared::bus::Reason;

use crate::config::CloudConfig;

/// Outside the 24-hour customer-service window: only an approved template reaches them.
pub const WINDOW_CLOSED: i64 = 131_047;
/// Error codes that mean "slow down" (retried with backoff).
const THROTTLED: [i64; 5] = [4, 80_007, 130_429, 131_048, 131_056];
/// The access token is invalid or expired.
const BAD_TOKEN: i64 = 190;

/// A Graph API failure.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Asked to slow down (throttling): worth retrying after a while.
    #[error("throttled: {0}")]
    Throttled(#[source] Reason),
    /// Worth retrying: 5xx, network.
    #[error("{0}")]
    Transient(#[source] Reason),
    /// The access token was refused (the transport is not ready until it works again).
    #[error("the access token was refused (code {code}): {message}")]
    Unauthorized {
        /// Graph's error code.
        code: i64,
        /// Graph's message.
        message: String,
    },
    /// Will not succeed as asked.
    #[error("refused (code {code}): {message}")]
    Refused {
        /// Graph's (or WhatsApp's) error code; 0 when the body named none.
        code: i64,
        /// Graph's message.
        message: String,
    },
}

impl GraphError {
    /// The Graph error code, where there is one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Throttled(_) | Self::Transient(_) => None,
            Self::Unauthorized { code, .. } | Self::Refused { code, .. } => Some(*code),
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorFields>,
}

#[derive(Deserialize)]
struct ErrorFields {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: i64,
    #[serde(default)]
    error_data: Option<ErrorData>,
}

#[derive(Deserialize)]
struct ErrorData {
    #[serde(default)]
    details: String,
}

/// A media item's location, as `GET {graph}/{media-id}` answers.
#[derive(Debug, Deserialize)]
pub struct MediaInfo {
    /// Where the bytes are (fetched with the access token; valid a few minutes).
    pub url: String,
    /// Its MIME type.
    #[serde(default)]
    pub mime_type: String,
    /// Its size in bytes (Graph sends a number or a string).
    #[serde(default, deserialize_with = "number_or_string")]
    pub file_size: Option<u64>,
}

fn number_or_string<'de, D>(d: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Number(u64),
        Text(String),
    }
    Ok(match Option::<N>::deserialize(d)? {
        Some(N::Number(n)) => Some(n),
        Some(N::Text(s)) => s.trim().parse().ok(),
        None => None,
    })
}

/// A Graph API client for one business phone number.
#[derive(Clone)]
pub struct Graph {
    http: reqwest::Client,
    base: String,
    phone_number_id: String,
    token: SecretString,
}

impl Graph {
    /// A client as `cfg` says.
    pub fn new(cfg: &CloudConfig) -> Self {
        Self {
            http: shared::http_client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            base: cfg.graph_url.clone(),
            phone_number_id: cfg.phone_number_id.clone(),
            token: cfg.access_token.clone(),
        }
    }

    fn messages_url(&self) -> String {
        format!("{}/{}/messages", self.base, self.phone_number_id)
    }

    /// Sends a text message to `chat` (a phone number's digits, or a user id); returns the
    /// WhatsApp message id.
    pub async fn send_text(&self, chat: &str, text: &str) -> Result<String, GraphError> {
        #[derive(Deserialize)]
        struct Sent {
            #[serde(default)]
            messages: Vec<SentId>,
        }
        #[derive(Deserialize)]
        struct SentId {
            id: String,
        }
        let mut body = serde_json::json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "type": "text",
            "text": {"preview_url": false, "body": text},
        });
        // A phone number goes in `to`; a business-scoped user id in `recipient`.
        let field = if chat.bytes().all(|b| b.is_ascii_digit()) {
            "to"
        } else {
            "recipient"
        };
        body[field] = serde_json::json!(chat);
        let response = self.post(&self.messages_url(), &body).await?;
        let sent: Sent = response.json().await.map_err(|e| {
            GraphError::Transient(Reason::new("the send's answer was not understood", e))
        })?;
        sent.messages
            .into_iter()
            .next()
            .map(|m| m.id)
            .ok_or_else(|| GraphError::Refused {
                code: 0,
                message: "the send's answer carried no message id".into(),
            })
    }

    /// Marks the customer's message `wamid` read (blue ticks), with the typing indicator when
    /// `typing` (shown until the reply or for 25 s).
    pub async fn mark_read(&self, wamid: &str, typing: bool) -> Result<(), GraphError> {
        let mut body = serde_json::json!({
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": wamid,
        });
        if typing {
            body["typing_indicator"] = serde_json::json!({"type": "text"});
        }
        self.post(&self.messages_url(), &body).await.map(drop)
    }

    /// Where media `id` is and what it is.
    pub async fn media(&self, id: &str) -> Result<MediaInfo, GraphError> {
        let response = self.get(&format!("{}/{id}", self.base)).await?;
        response.json().await.map_err(|e| {
            GraphError::Transient(Reason::new("the media answer was not understood", e))
        })
    }

    /// Downloads `url` with the access token, refusing more than `limit` bytes.
    pub async fn download(&self, url: &str, limit: u64) -> Result<Vec<u8>, GraphError> {
        let response = self.get(url).await?;
        shared::http_client::body_at_most(response, limit)
            .await
            .map_err(|e| match e {
                shared::http_client::BodyError::TooLarge => GraphError::Refused {
                    code: 0,
                    message: format!("the media is larger than {limit} bytes"),
                },
                shared::http_client::BodyError::Broken(e) => {
                    GraphError::Transient(Reason::new("the media download broke off", e))
                }
            })
    }

    /// A cheap call that works only with a valid token: the phone number's own record.
    pub async fn check(&self) -> Result<(), GraphError> {
        self.get(&format!("{}/{}?fields=id", self.base, self.phone_number_id))
            .await
            .map(drop)
    }

    async fn post(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<reqwest::Response, GraphError> {
        let request = self
            .http
            .post(url)
            .bearer_auth(self.token.expose_secret())
            .json(body);
        classify(request.send().await).await
    }

    async fn get(&self, url: &str) -> Result<reqwest::Response, GraphError> {
        let request = self.http.get(url).bearer_auth(self.token.expose_secret());
        classify(request.send().await).await
    }
}

/// A response when it succeeded; otherwise the failure, classified.
async fn classify(
    sent: reqwest::Result<reqwest::Response>,
) -> Result<reqwest::Response, GraphError> {
    let response =
        sent.map_err(|e| GraphError::Transient(Reason::new("the Graph API is unreachable", e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body: Option<ErrorFields> = response
        .json::<ErrorBody>()
        .await
        .ok()
        .and_then(|b| b.error);
    let (code, message) = body.map_or((0, String::new()), |e| {
        let details = e.error_data.map(|d| d.details).unwrap_or_default();
        let message = if details.is_empty() {
            e.message
        } else {
            format!("{}: {details}", e.message)
        };
        (e.code, message)
    });
    let message = if message.is_empty() {
        format!("HTTP {status}")
    } else {
        message
    };
    if status.as_u16() == 429 || THROTTLED.contains(&code) {
        return Err(GraphError::Throttled(
            format!("code {code}: {message}").into(),
        ));
    }
    if code == BAD_TOKEN || status.as_u16() == 401 {
        return Err(GraphError::Unauthorized { code, message });
    }
    if status.is_server_error() {
        return Err(GraphError::Transient(
            format!("Graph API error {status} (code {code}): {message}").into(),
        ));
    }
    Err(GraphError::Refused { code, message })
}
