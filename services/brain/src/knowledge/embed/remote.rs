//! Embeddings from an OpenAI-compatible provider (`EMBEDDINGS_MODEL`, at `EMBEDDINGS_BASE_URL`
//! or else `OPENAI_BASE_URL`): `POST /embeddings`.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::embeddings::{CreateEmbeddingRequest, EmbeddingInput};
use shared::llm::Endpoint;

use super::EmbedError;

/// How long one request may take (a batch of sections; a question's own vector is waited for
/// far less, see [`super::QUERY_WAIT`]).
const TIMEOUT: Duration = Duration::from_secs(30);

/// The most characters of a text sent (some 2,000 tokens; providers refuse inputs over
/// 8,192): a long section is known by its beginning.
const MOST_CHARS: usize = 8_000;

/// The provider's model.
pub struct Remote {
    client: Client<OpenAIConfig>,
    model: String,
}

impl Remote {
    /// A client of `endpoint` asking for `model`'s vectors.
    pub fn new(endpoint: &Endpoint, model: String) -> Self {
        Self {
            client: shared::llm::client(endpoint, TIMEOUT),
            model,
        }
    }

    /// Which model (for logs).
    pub fn describe(&self) -> String {
        format!("provider model {}", self.model)
    }

    /// The vectors of `texts`, in order (the response's `index`, not its order, says which is
    /// which).
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let n = texts.len();
        let texts = texts
            .into_iter()
            .map(|t| match t.char_indices().nth(MOST_CHARS) {
                Some((cut, _)) => t[..cut].to_owned(),
                None => t,
            })
            .collect();
        let request = CreateEmbeddingRequest {
            model: self.model.clone(),
            input: EmbeddingInput::StringArray(texts),
            encoding_format: None,
            user: None,
            dimensions: None,
        };
        let response = self
            .client
            .embeddings()
            .create(request)
            .await
            .map_err(|e| EmbedError::Provider(e.to_string()))?;
        let mut data = response.data;
        data.sort_by_key(|d| d.index);
        let ok = data.len() == n && data.iter().enumerate().all(|(i, d)| d.index as usize == i);
        if !ok {
            return Err(EmbedError::Provider(format!(
                "asked for {n} vectors, the provider gave {}",
                data.len()
            )));
        }
        Ok(data.into_iter().map(|d| d.embedding).collect())
    }
}
