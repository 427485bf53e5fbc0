//! The business's knowledge base: Markdown files in `KNOWLEDGE_DIR` (opening hours, prices,
//! delivery, returns, an FAQ as `## question?` + answer), and those written on the owner's
//! console (kept in the database; one of the same name wins over the folder's). Indexed at
//! startup and again within 2 s of any change ([`Knowledge::watch`]), at once on the replica
//! the console wrote through. The sections most relevant to a question go into
//! the model's context, as many as its token budget holds ([`Index::context`]); a question that matches an FAQ entry confidently is answered with it,
//! with no model call.

mod context;
mod evidence;
mod index;
mod typo;
mod words;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

pub use context::tokens;
pub use evidence::{CALIBRATION, Calibration, Evidence, FEATURES};
pub use index::{Chunk, Entry, Hit, Index};
use tokio_util::sync::CancellationToken;
pub use words::{framed, framed_words};

/// Confidence ([`Evidence::confidence`], the chance the match is right) at which an FAQ entry
/// answers a question by itself. Chosen on held-out training rows (`scripts/eval-kb --held-out
/// --direct C`, 2026-12-07) as the lowest, in steps of 0.01, at which banking77's and
/// CLINC150's answers were both at least 95.5 % right with at most 1 % of CLINC150's
/// out-of-scope questions answered (0.89: 96.6 % and 95.7 %, 0.5 %).
pub const DIRECT: f32 = 0.89;
/// `KNOWLEDGE_CONTEXT_TOKENS`' default: the estimated tokens of sections put into the
/// model's context for a question.
pub const CONTEXT_TOKENS: usize = 4000;
/// How often the folder is looked at for changes.
const POLL: Duration = Duration::from_secs(1);

/// What the folder held when it was read: each file's name, length and change time.
type Signature = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// The knowledge base (see the module docs); cheap to share.
pub struct Knowledge {
    dir: PathBuf,
    index: RwLock<Arc<Index>>,
    /// The console's files (name, text), as last read from the database.
    stored: RwLock<Vec<(String, String)>>,
}

fn signature(dir: &Path) -> Signature {
    let mut sig: Signature = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "md"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.is_file().then(|| (e.path(), m.len(), m.modified().ok()))
        })
        .collect();
    sig.sort();
    sig
}

/// The folder's files (name, text).
pub fn folder_files(dir: &Path) -> Vec<(String, String)> {
    read_files(&signature(dir))
}

fn read_files(sig: &Signature) -> Vec<(String, String)> {
    sig
        .iter()
        .filter_map(|(path, _, _)| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            match std::fs::read_to_string(path) {
                Ok(text) => Some((name, text)),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read a knowledge file");
                    None
                }
            }
        })
        .collect()
}

fn read(dir: &Path, sig: &Signature, stored: &[(String, String)]) -> Index {
    let mut files = read_files(sig);
    files.retain(|(name, _)| !stored.iter().any(|(n, _)| n == name));
    files.extend(stored.iter().cloned());
    files.sort();
    let index = Index::build(&files);
    let (sections, entries) = index.size();
    tracing::info!(
        dir = %dir.display(),
        files = files.len(),
        sections,
        faq_entries = entries,
        "knowledge base indexed"
    );
    index
}

impl Knowledge {
    /// Reads `dir` (absent or empty is fine: no knowledge).
    pub fn load(dir: &Path) -> Self {
        let index = read(dir, &signature(dir), &[]);
        Self {
            dir: dir.to_owned(),
            index: RwLock::new(Arc::new(index)),
            stored: RwLock::new(Vec::new()),
        }
    }

    /// The index now.
    pub fn current(&self) -> Arc<Index> {
        self.index.read().expect("index lock").clone()
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Indexes again with the console's files `stored` (read from the database).
    pub fn set_stored(&self, stored: Vec<(String, String)>) {
        let index = read(&self.dir, &signature(&self.dir), &stored);
        *self.stored.write().expect("stored lock") = stored;
        *self.index.write().expect("index lock") = Arc::new(index);
    }

    /// Re-reads the folder whenever a file is added, changed or removed — and, with `db`, the
    /// console's files whenever one changes — until `shutdown`.
    pub async fn watch(self: Arc<Self>, db: Option<shared::db::Db>, shutdown: CancellationToken) {
        let mut seen = signature(&self.dir);
        let mut seen_db: Option<Vec<(String, i64)>> = None;
        loop {
            if let Some(db) = &db {
                match crate::store::knowledge_versions(db).await {
                    Ok(v) if seen_db.as_ref() != Some(&v) => {
                        match crate::store::knowledge_files(db).await {
                            Ok(files) => {
                                let this = self.clone();
                                let _ = tokio::task::spawn_blocking(move || this.set_stored(files))
                                    .await;
                                seen_db = Some(v);
                                seen = signature(&self.dir);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot read the console's knowledge files")
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the console's knowledge files")
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
            let now = signature(&self.dir);
            if now != seen {
                let this = self.clone();
                let sig = now.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let stored = this.stored.read().expect("stored lock").clone();
                    let index = read(&this.dir, &sig, &stored);
                    *this.index.write().expect("index lock") = Arc::new(index);
                })
                .await;
                seen = now;
            }
        }
    }

    /// The system prompt for `question`: `base`, then the most relevant sections within
    /// `budget` estimated tokens with the instruction to answer from them (just `base` when
    /// none is relevant).
    pub fn prompt(&self, base: &str, question: &str, budget: usize) -> String {
        let index = self.current();
        let sections = index.context(question, budget);
        if sections.is_empty() {
            return base.to_owned();
        }
        let mut p = format!(
            "{base}\n\nAnswer from the business information below when it covers the question. \
             When it does not, say that you don't know and offer to pass the question to a person; \
             never invent prices, dates, stock or policies.\n\n--- Business information ---"
        );
        for s in sections {
            p.push_str(&format!("\n\n## {}\n{}", s.title, s.text));
        }
        p
    }
}
