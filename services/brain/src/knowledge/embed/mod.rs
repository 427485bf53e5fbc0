//! Embeddings: a vector per FAQ phrasing, per section and per question, so a question worded
//! differently from the knowledge base still finds it. From a local sentence-transformers
//! folder (`EMBEDDINGS_MODEL_DIR`, [`local`]) or an OpenAI-compatible provider
//! (`EMBEDDINGS_MODEL`, [`remote`]). The knowledge base's vectors are computed in the
//! background after each index build, and kept by text hash so that only changed sections are
//! computed again ([`Cache`]); until they are ready, and whenever the embedder fails or is
//! slow, answers are lexical ([`super::Knowledge::question_vector`]).

mod local;
mod remote;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use local::FILES as MODEL_FILES;

/// Why no vector came.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    /// The local model could not be loaded or run.
    #[error("embeddings model: {0}")]
    Model(String),
    /// The provider failed or answered something unusable.
    #[error("embeddings provider: {0}")]
    Provider(String),
    /// A question's vector took longer than [`QUERY_WAIT`].
    #[error("no vector within {0:?}")]
    Timeout(Duration),
}

/// How long an answer waits for its question's vector before it goes on lexically: the local
/// model takes about 11 ms for a short question on one core; a provider, a round trip.
pub const QUERY_WAIT: Duration = Duration::from_secs(2);

/// Texts per background request: small enough that a question waits behind at most one
/// batch on the local model's thread.
pub const BATCH: usize = 16;

/// A normalised vector (length 1: a dot product is the cosine).
pub type Vector = Arc<[f32]>;

/// Where vectors come from.
pub enum Embedder {
    /// A sentence-transformers folder, in-process.
    Local(local::Local),
    /// An OpenAI-compatible provider.
    Remote(remote::Remote),
}

impl Embedder {
    /// The folder `dir`'s model, loaded on a thread of its own in the background.
    pub fn local(dir: &Path) -> Self {
        Self::Local(local::Local::spawn(dir))
    }

    /// `model` at `endpoint`.
    pub fn remote(endpoint: &shared::llm::Endpoint, model: String) -> Self {
        Self::Remote(remote::Remote::new(endpoint, model))
    }

    /// Which model (for logs).
    pub fn describe(&self) -> String {
        match self {
            Self::Local(l) => l.describe(),
            Self::Remote(r) => r.describe(),
        }
    }

    /// The normalised vectors of `texts`, in order, all of one length.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vector>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let raw = match self {
            Self::Local(l) => l.embed(texts).await?,
            Self::Remote(r) => r.embed(texts).await?,
        };
        let dims = raw.first().map_or(0, Vec::len);
        if dims == 0 || raw.iter().any(|v| v.len() != dims) {
            return Err(EmbedError::Provider(
                "vectors of different or no length".into(),
            ));
        }
        if raw.iter().flatten().any(|x| !x.is_finite()) {
            return Err(EmbedError::Provider("vectors with non-numbers".into()));
        }
        Ok(raw.into_iter().map(normalised).collect())
    }

    /// [`Embedder::embed`] of one question, waiting at most [`QUERY_WAIT`].
    pub async fn embed_question(&self, question: &str) -> Result<Vector, EmbedError> {
        let texts = vec![question.to_owned()];
        match tokio::time::timeout(QUERY_WAIT, self.embed(texts)).await {
            Ok(v) => v?
                .pop()
                .ok_or_else(|| EmbedError::Provider("no vector".into())),
            Err(_) => Err(EmbedError::Timeout(QUERY_WAIT)),
        }
    }
}

/// `v` scaled to length 1 (a zero vector stays zero).
pub fn normalised(v: Vec<f32>) -> Vector {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.into_iter().map(|x| x / norm).collect()
    } else {
        v.into()
    }
}

/// The cosine of two normalised vectors (0 when their lengths differ).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The vectors of one index, aligned with it: one per FAQ phrasing (every entry's, in order)
/// and one per section.
#[derive(Debug, Clone, Default)]
pub struct Vectors {
    /// Per phrasing.
    pub phrasings: Vec<Vector>,
    /// Per section.
    pub chunks: Vec<Vector>,
}

/// Vectors already computed, by the hash of their text: an index built again after a change
/// has only its new or changed texts computed.
#[derive(Default)]
pub struct Cache {
    map: Mutex<HashMap<[u8; 32], Vector>>,
}

/// A text's key in a [`Cache`].
pub fn key(text: &str) -> [u8; 32] {
    *blake3::hash(text.as_bytes()).as_bytes()
}

impl Cache {
    /// The vector of `text`, when known.
    pub fn get(&self, text: &str) -> Option<Vector> {
        self.map
            .lock()
            .expect("cache lock")
            .get(&key(text))
            .cloned()
    }

    /// Remembers `text`'s vector.
    pub fn put(&self, text: &str, v: Vector) {
        self.map.lock().expect("cache lock").insert(key(text), v);
    }

    /// Forgets every vector but those of `texts` (after an index is complete: what its
    /// predecessor used and it does not is not kept).
    pub fn keep_only<'a>(&self, texts: impl IntoIterator<Item = &'a String>) {
        let keep: std::collections::HashSet<[u8; 32]> = texts.into_iter().map(|t| key(t)).collect();
        self.map
            .lock()
            .expect("cache lock")
            .retain(|k, _| keep.contains(k));
    }

    /// Vectors known.
    pub fn len(&self) -> usize {
        self.map.lock().expect("cache lock").len()
    }

    /// No vector known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The vectors of `texts` in order: the cached ones as they are, the others computed by
    /// `embedder` in batches of [`BATCH`] and cached. `None` when `still_wanted` says, between
    /// batches, that they no longer are (the index was rebuilt meanwhile).
    pub async fn vectors(
        &self,
        embedder: &Embedder,
        texts: &[String],
        still_wanted: impl Fn() -> bool,
    ) -> Result<Option<Vec<Vector>>, EmbedError> {
        let missing: Vec<&String> = {
            let mut seen = std::collections::HashSet::new();
            texts
                .iter()
                .filter(|t| self.get(t).is_none() && seen.insert(t.as_str()))
                .collect()
        };
        for batch in missing.chunks(BATCH) {
            if !still_wanted() {
                return Ok(None);
            }
            let owned: Vec<String> = batch.iter().map(|t| (*t).clone()).collect();
            let vectors = embedder.embed(owned).await?;
            for (t, v) in batch.iter().zip(vectors) {
                self.put(t, v);
            }
        }
        Ok(Some(
            texts
                .iter()
                .map(|t| self.get(t).unwrap_or_else(|| Vec::new().into()))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_normalised_so_a_dot_product_is_the_cosine() {
        let a = normalised(vec![3.0, 4.0]);
        assert!((a[0] - 0.6).abs() < 1e-6 && (a[1] - 0.8).abs() < 1e-6);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&a, &normalised(vec![1.0, 0.0, 0.0])), 0.0);
        assert_eq!(&*normalised(vec![0.0, 0.0]), &[0.0, 0.0]);
    }

    #[test]
    fn the_cache_keeps_only_what_the_index_still_uses() {
        let c = Cache::default();
        c.put("a", normalised(vec![1.0]));
        c.put("b", normalised(vec![1.0]));
        c.keep_only(&["b".to_owned()]);
        assert!(c.get("a").is_none());
        assert!(c.get("b").is_some());
        assert_eq!(c.len(), 1);
    }
}
