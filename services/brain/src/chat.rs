//! Chat completions (text and vision) through the resilient shared client.

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessageArgs, ChatCompletionRequestMessage,
    ChatCompletionRequestMessageContentPartImageArgs,
    ChatCompletionRequestMessageContentPartTextArgs, ChatCompletionRequestSystemMessageArgs,
    ChatCompletionRequestUserMessageArgs, ChatCompletionRequestUserMessageContentPart,
    CreateChatCompletionRequest, CreateChatCompletionRequestArgs, ImageDetail, ImageUrlArgs,
};
use shared::bus::Reason;
use shared::llm::{Breaker, CallError};
use tokio::time::Instant;

use crate::config::Config;
use crate::domain::{Speaker, Turn};

/// A model's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The answer, as the model wrote it (Markdown).
    pub text: String,
    /// The model asked for (`CHAT_MODEL`, `VISION_MODEL` or an admin's setting).
    pub requested_model: String,
    /// The model that answered, as the API reports it (priced by the ledger).
    pub response_model: String,
    /// Tokens of the prompt (memory and the question).
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
    /// How long the call took, retries included.
    pub latency_ms: u64,
}

/// An image to show the model.
pub struct Image<'a> {
    /// The image as stored.
    pub bytes: &'a [u8],
    /// Its MIME type (`image/jpeg`, `image/png`, …).
    pub mime: &'a str,
}

/// The model client: retries, the circuit breaker and a bound on calls in flight
/// (`BRAIN_CONCURRENCY`).
pub struct Chat {
    client: Client<OpenAIConfig>,
    breaker: Breaker,
    slots: tokio::sync::Semaphore,
}

impl Chat {
    /// A client of the configured endpoint.
    pub fn new(cfg: &Config) -> Self {
        Self {
            client: shared::llm::client(&cfg.endpoint, cfg.policy.timeout),
            breaker: Breaker::new("chat", cfg.policy.clone()),
            slots: tokio::sync::Semaphore::new(cfg.concurrency),
        }
    }

    fn request(
        cfg: &Config,
        system: &str,
        memory: &[Turn],
        text: &str,
        image: Option<&Image<'_>>,
    ) -> Result<CreateChatCompletionRequest, OpenAIError> {
        let mut messages: Vec<ChatCompletionRequestMessage> = vec![
            ChatCompletionRequestSystemMessageArgs::default()
                .content(system)
                .build()?
                .into(),
        ];
        for t in memory {
            messages.push(if t.speaker == Speaker::Business {
                ChatCompletionRequestAssistantMessageArgs::default()
                    .content(t.content.as_str())
                    .build()?
                    .into()
            } else {
                ChatCompletionRequestUserMessageArgs::default()
                    .content(t.content.as_str())
                    .build()?
                    .into()
            });
        }
        let user = match image {
            None => ChatCompletionRequestUserMessageArgs::default()
                .content(text)
                .build()?,
            Some(img) => {
                use base64::Engine;
                let url = format!(
                    "data:{};base64,{}",
                    img.mime,
                    base64::engine::general_purpose::STANDARD.encode(img.bytes)
                );
                let parts: Vec<ChatCompletionRequestUserMessageContentPart> = vec![
                    ChatCompletionRequestMessageContentPartTextArgs::default()
                        .text(text)
                        .build()?
                        .into(),
                    ChatCompletionRequestMessageContentPartImageArgs::default()
                        .image_url(
                            ImageUrlArgs::default()
                                .url(url)
                                .detail(ImageDetail::Auto)
                                .build()?,
                        )
                        .build()?
                        .into(),
                ];
                ChatCompletionRequestUserMessageArgs::default()
                    .content(parts)
                    .build()?
            }
        };
        messages.push(user.into());
        let model = if image.is_some() {
            &cfg.vision_model
        } else {
            &cfg.chat_model
        };
        let mut req = CreateChatCompletionRequestArgs::default();
        req.model(model.as_str())
            .messages(messages)
            .max_completion_tokens(cfg.max_tokens);
        if let Some(t) = cfg.temperature {
            req.temperature(t);
        }
        req.build()
    }

    /// Asks the model; bounded by `deadline`, retried and circuit-broken as configured.
    pub async fn ask(
        &self,
        cfg: &Config,
        system: &str,
        memory: &[Turn],
        text: &str,
        image: Option<Image<'_>>,
        deadline: Instant,
    ) -> Result<Answer, CallError> {
        let request = Self::request(cfg, system, memory, text, image.as_ref())
            .map_err(|e| CallError::Failed(Reason::new("cannot build the request", e)))?;
        let _slot = tokio::time::timeout_at(deadline, self.slots.acquire())
            .await
            .map_err(|_| CallError::Deadline("waiting for a free model slot".into()))?
            .map_err(|_| CallError::Failed("shutting down".into()))?;
        let called = shared::llm::call(&self.breaker, deadline, || {
            let request = request.clone();
            async move { self.client.chat().create(request).await }
        })
        .await?;
        let r = called.value;
        let text = r
            .choices
            .first()
            .and_then(|c| c.message.content.clone())
            .unwrap_or_default();
        let usage = r.usage.as_ref();
        Ok(Answer {
            text: text.trim().to_owned(),
            requested_model: request.model.clone(),
            response_model: r.model.clone(),
            prompt_tokens: usage.map_or(0, |u| u64::from(u.prompt_tokens)),
            completion_tokens: usage.map_or(0, |u| u64::from(u.completion_tokens)),
            latency_ms: called.latency.as_millis() as u64,
        })
    }
}
