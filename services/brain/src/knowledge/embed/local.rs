//! A sentence-transformers folder run in-process (`EMBEDDINGS_MODEL_DIR`): BERT on candle's
//! CPU backend and the folder's WordPiece tokenizer, on one thread of its own (the service's
//! two cores are shared with everything else), pooled and normalised as the folder says.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::EmbedError;

/// The files a folder must hold (the pooling config is found through `modules.json`).
pub const FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "modules.json",
];

/// How a sentence's vector is made of its tokens' (`1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    Mean,
    Cls,
    Max,
    MeanSqrtLen,
}

/// The folder's sentence-transformers settings.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    pooling: Pooling,
    normalize: bool,
    max_seq_length: usize,
}

#[derive(serde::Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(serde::Deserialize, Default)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EmbedError::Model(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| EmbedError::Model(format!("{} is not valid: {e}", path.display())))
}

fn settings(dir: &Path) -> Result<Settings, EmbedError> {
    let modules: Vec<Module> = read_json(&dir.join("modules.json"))?;
    let pooling_dir = modules
        .iter()
        .find(|m| m.kind.ends_with(".Pooling"))
        .map(|m| dir.join(&m.path));
    let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
    let pooling = match pooling_dir {
        Some(p) => {
            let c: PoolingConfig = read_json(&p.join("config.json"))?;
            if c.pooling_mode_mean_tokens {
                Pooling::Mean
            } else if c.pooling_mode_cls_token {
                Pooling::Cls
            } else if c.pooling_mode_max_tokens {
                Pooling::Max
            } else if c.pooling_mode_mean_sqrt_len_tokens {
                Pooling::MeanSqrtLen
            } else {
                return Err(EmbedError::Model(
                    "the pooling config names no mode this brain supports (mean, cls, max, mean_sqrt_len)".into(),
                ));
            }
        }
        None => Pooling::Mean,
    };
    #[derive(serde::Deserialize)]
    struct SentenceBert {
        max_seq_length: Option<usize>,
    }
    let max_seq_length = read_json::<SentenceBert>(&dir.join("sentence_bert_config.json"))
        .ok()
        .and_then(|s| s.max_seq_length)
        .unwrap_or(256);
    Ok(Settings {
        pooling,
        normalize,
        max_seq_length,
    })
}

/// The model, loaded.
struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
    settings: Settings,
}

impl From<candle_core::Error> for EmbedError {
    fn from(e: candle_core::Error) -> Self {
        Self::Model(e.to_string())
    }
}

impl Model {
    fn load(dir: &Path) -> Result<Self, EmbedError> {
        let mut settings = settings(dir)?;
        let config: Config = read_json(&dir.join("config.json"))?;
        settings.max_seq_length = settings.max_seq_length.min(config.max_position_embeddings);
        let bytes = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| EmbedError::Model(format!("cannot read model.safetensors: {e}")))?;
        // Buffered, not memory-mapped: mapping is `unsafe` (and the workspace forbids it).
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)?;
        let bert = BertModel::load(vb, &config)?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| EmbedError::Model(format!("tokenizer.json: {e}")))?;
        // sentence-transformers' length, not the tokenizer file's; padded to the longest of a
        // batch, not to a fixed length (a short question costs its own tokens only).
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: settings.max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| EmbedError::Model(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        Ok(Self {
            bert,
            tokenizer,
            settings,
        })
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Model(format!("tokenizing: {e}")))?;
        let ids: Vec<Vec<u32>> = enc.iter().map(|e| e.get_ids().to_vec()).collect();
        let mask: Vec<Vec<u32>> = enc
            .iter()
            .map(|e| e.get_attention_mask().to_vec())
            .collect();
        let ids = Tensor::new(ids, &Device::Cpu)?;
        let mask = Tensor::new(mask, &Device::Cpu)?;
        let types = ids.zeros_like()?;
        let out = self.bert.forward(&ids, &types, Some(&mask))?;
        self.pool(&out, &mask).map_err(EmbedError::from)
    }

    /// The tokens' vectors `out` (batch, tokens, dims) pooled over the attention `mask`.
    fn pool(&self, out: &Tensor, mask: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let pooled = match self.settings.pooling {
            Pooling::Cls => out.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Max => {
                // Padding pushed far down so it never wins.
                let shift = ((&m - 1.0)? * 1e9)?;
                out.broadcast_add(&shift)?.max(1)?
            }
            Pooling::Mean | Pooling::MeanSqrtLen => {
                let sum = out.broadcast_mul(&m)?.sum(1)?;
                let count = m.sum(1)?;
                let by = if self.settings.pooling == Pooling::Mean {
                    count
                } else {
                    count.sqrt()?
                };
                sum.broadcast_div(&by)?
            }
        };
        let pooled = if self.settings.normalize {
            let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
            pooled.broadcast_div(&(norm + 1e-12)?)?
        } else {
            pooled
        };
        pooled.to_vec2()
    }
}

type Job = (
    Vec<String>,
    tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
);

/// The folder's model on a thread of its own: loaded there in the background (startup never
/// waits for it), then answering one batch at a time.
pub struct Local {
    dir: PathBuf,
    jobs: mpsc::Sender<Job>,
}

impl Local {
    /// Starts the model's thread; a folder that cannot be loaded fails every request, saying
    /// why (the knowledge base stays lexical).
    pub fn spawn(dir: &Path) -> Self {
        let (jobs, rx) = mpsc::channel::<Job>();
        let folder = dir.to_owned();
        let spawned = std::thread::Builder::new()
            .name("embeddings".into())
            .spawn(move || run(&folder, &rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the embeddings thread");
        }
        Self {
            dir: dir.to_owned(),
            jobs,
        }
    }

    /// Which model (for logs).
    pub fn describe(&self) -> String {
        format!("local model {}", self.dir.display())
    }

    /// The vectors of `texts`, in order.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send((texts, reply))
            .map_err(|_| EmbedError::Model("the embeddings thread has stopped".into()))?;
        rx.await
            .map_err(|_| EmbedError::Model("the embeddings thread has stopped".into()))?
    }
}

fn run(dir: &Path, jobs: &mpsc::Receiver<Job>) {
    // One thread for candle's matrix products too (it splits them over all cores otherwise).
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the embeddings thread pool");
            return;
        }
    };
    let started = std::time::Instant::now();
    let model = pool.install(|| Model::load(dir));
    match &model {
        Ok(_) => tracing::info!(
            dir = %dir.display(),
            seconds = started.elapsed().as_secs_f64(),
            "embeddings model loaded"
        ),
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot load the embeddings model; the knowledge base stays lexical")
        }
    }
    while let Ok((texts, reply)) = jobs.recv() {
        if reply.is_closed() {
            continue; // asked for a question that stopped waiting
        }
        let out = match &model {
            Ok(m) => pool.install(|| m.embed(&texts)),
            Err(e) => Err(e.clone()),
        };
        let _ = reply.send(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_says_how_to_pool_and_whether_to_normalise() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modules.json"),
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
        std::fs::write(
            dir.path().join("1_Pooling/config.json"),
            r#"{"word_embedding_dimension":384,"pooling_mode_cls_token":true}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sentence_bert_config.json"),
            r#"{"max_seq_length":128}"#,
        )
        .unwrap();
        let s = settings(dir.path()).unwrap();
        assert_eq!(
            s,
            Settings {
                pooling: Pooling::Cls,
                normalize: false,
                max_seq_length: 128
            }
        );
        std::fs::write(
            dir.path().join("1_Pooling/config.json"),
            r#"{"pooling_mode_cls_token":false}"#,
        )
        .unwrap();
        assert!(settings(dir.path()).is_err(), "no pooling mode");
    }
}
