//! `--embeddings DIR`: vectors of every text the benchmark asks or indexes, from a local
//! sentence-transformers folder through the brain's own embedder, kept on disk between runs
//! (`~/.cache/switchboard/eval-kb/`, one file per model, keyed by the text's hash) — a cold
//! run embeds some 40,000 texts, minutes of CPU; a warm one reads them.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use brain::knowledge::Index;
use brain::knowledge::embed::{Embedder, Vector, key};

/// Texts' vectors (see the module docs).
pub struct Meanings {
    embedder: Embedder,
    runtime: tokio::runtime::Runtime,
    map: HashMap<[u8; 32], Vector>,
    file: PathBuf,
    /// The most texts one call may embed ([`Meanings::at_most`]); `None`: any number.
    most: Option<usize>,
}

/// More texts to embed than [`Meanings::at_most`] allows: the vectors are not on disk yet (a
/// fresh machine), and computing them would take longer than the caller can wait.
#[derive(Debug)]
pub struct Cold {
    /// Texts not embedded yet.
    pub missing: usize,
    /// The most allowed.
    pub most: usize,
}

impl std::fmt::Display for Cold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} texts have no vector on disk yet (more than {}): `scripts/eval-kb --embeddings \
             minilm` computes them once (tens of minutes of CPU on two cores)",
            self.missing, self.most
        )
    }
}

impl std::error::Error for Cold {}

/// Texts embedded per request.
const BATCH: usize = 32;

/// Where vectors of `model` are kept: named by a hash of its weights.
fn cache_file(model: &Path) -> anyhow::Result<PathBuf> {
    let weights = std::fs::read(model.join("model.safetensors"))
        .with_context(|| format!("{} has no model.safetensors", model.display()))?;
    let id = blake3::hash(&weights).to_hex();
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    Ok(base
        .join("switchboard/eval-kb")
        .join(format!("vectors-{}.bin", &id[..16])))
}

impl Meanings {
    /// The model in `dir`, with the vectors kept for it.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let file = cache_file(dir)?;
        let mut map = HashMap::new();
        if let Ok(mut f) = std::fs::File::open(&file) {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            let mut at = 0;
            while at + 36 <= bytes.len() {
                let k: [u8; 32] = bytes[at..at + 32].try_into()?;
                let dims = u32::from_le_bytes(bytes[at + 32..at + 36].try_into()?) as usize;
                let end = at + 36 + 4 * dims;
                if end > bytes.len() {
                    break; // a run stopped while writing: the rest is computed again
                }
                let v: Vec<f32> = bytes[at + 36..end]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                map.insert(k, v.into());
                at = end;
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Self {
            embedder: Embedder::local(dir),
            runtime,
            map,
            file,
            most: None,
        })
    }

    /// Fails with [`Cold`] rather than embed more than `most` texts in one call.
    pub fn at_most(mut self, most: usize) -> Self {
        self.most = Some(most);
        self
    }

    /// Computes (and keeps on disk) the vectors of `texts` not known yet.
    fn prepare<'a>(&mut self, texts: impl IntoIterator<Item = &'a str>) -> anyhow::Result<()> {
        let mut seen = std::collections::HashSet::new();
        let missing: Vec<String> = texts
            .into_iter()
            .filter(|t| !self.map.contains_key(&key(t)) && seen.insert(key(t)))
            .map(str::to_owned)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if let Some(most) = self.most
            && missing.len() > most
        {
            return Err(Cold {
                missing: missing.len(),
                most,
            }
            .into());
        }
        if let Some(parent) = self.file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .with_context(|| format!("cannot write {}", self.file.display()))?;
        let started = std::time::Instant::now();
        for (n, batch) in missing.chunks(BATCH).enumerate() {
            let vectors = self
                .runtime
                .block_on(self.embedder.embed(batch.to_vec()))
                .context("embedding")?;
            let mut bytes = Vec::new();
            for (t, v) in batch.iter().zip(vectors) {
                let k = key(t);
                bytes.extend_from_slice(&k);
                bytes.extend_from_slice(&(v.len() as u32).to_le_bytes());
                for x in v.iter() {
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
                self.map.insert(k, v);
            }
            out.write_all(&bytes)?;
            if n % 50 == 49 {
                eprintln!(
                    "eval-kb: {} of {} texts embedded ({:.0} s)",
                    (n + 1) * BATCH,
                    missing.len(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        eprintln!(
            "eval-kb: {} texts embedded in {:.1} s ({} known)",
            missing.len(),
            started.elapsed().as_secs_f64(),
            self.map.len()
        );
        Ok(())
    }

    /// Milliseconds per question to compute the vectors of `questions` one at a time, as the
    /// brain does for each question (none of them from the cache), and the process's peak
    /// memory in MB afterwards.
    pub fn single_ms(&self, questions: &[&str]) -> anyhow::Result<(f64, f64)> {
        let started = std::time::Instant::now();
        for q in questions {
            self.runtime
                .block_on(self.embedder.embed(vec![(*q).to_owned()]))
                .context("embedding")?;
        }
        let ms = 1000.0 * started.elapsed().as_secs_f64() / questions.len().max(1) as f64;
        let peak = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0);
        Ok((ms, peak))
    }

    /// `text`'s vector (after [`Meanings::ready`]).
    pub fn of(&self, text: &str) -> Option<&[f32]> {
        self.map.get(&key(text)).map(|v| &**v)
    }

    /// Gives `index` its vectors and computes those of the `questions` it will be asked
    /// (each only when not known yet).
    pub fn ready<'a>(
        &mut self,
        index: &Index,
        questions: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<()> {
        self.prepare(questions)?;
        let (phrasings, chunks) = index.embedding_texts();
        self.prepare(phrasings.iter().chain(&chunks).map(String::as_str))?;
        let get = |t: &String| -> Vector { self.map[&key(t)].clone() };
        let set = index.set_vectors(brain::knowledge::embed::Vectors {
            phrasings: phrasings.iter().map(get).collect(),
            chunks: chunks.iter().map(get).collect(),
        });
        anyhow::ensure!(set, "the index took no vectors");
        Ok(())
    }
}
