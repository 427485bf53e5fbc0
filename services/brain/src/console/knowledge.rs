//! The knowledge base on the console: the files (the folder's and those written here), one
//! file's text, writing one (edit or upload; a file of the same name as the folder's wins),
//! deleting the console's copy. The index is rebuilt at once.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use shared::console::Session;

use super::{Api, ApiError, ApiResult};
use crate::store;

/// Largest knowledge file written on the console.
const MAX_FILE_BYTES: usize = 1024 * 1024;

/// A file name the console accepts: `[A-Za-z0-9._-]` ending in `.md`, at most 100 characters.
fn checked(name: &str) -> Result<&str, ApiError> {
    let ok = name.len() <= 100
        && name.len() > 3
        && name.ends_with(".md")
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(name)
    } else {
        Err(ApiError::bad(
            "a knowledge file is named like prices.md: letters, digits, . _ - and .md at the end",
        ))
    }
}

/// `GET /console/api/knowledge`: every file, where it comes from, its size; and the index's
/// sections and FAQ entries.
pub async fn list(State(api): State<Api>) -> ApiResult<serde_json::Value> {
    let stored = store::knowledge_files(&api.db).await?;
    let k = api.knowledge.clone();
    let folder = tokio::task::spawn_blocking(move || crate::knowledge::folder_files(k.dir()))
        .await
        .unwrap_or_default();
    let mut files: Vec<serde_json::Value> = folder
        .iter()
        .filter(|(n, _)| !stored.iter().any(|(s, _)| s == n))
        .map(|(n, t)| serde_json::json!({"name": n, "source": "folder", "bytes": t.len()}))
        .chain(stored.iter().map(|(n, t)| {
            let shadows = folder.iter().any(|(f, _)| f == n);
            serde_json::json!({"name": n, "source": "console", "bytes": t.len(), "replaces_folder_file": shadows})
        }))
        .collect();
    files.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let (sections, faq_entries) = api.knowledge.current().size();
    Ok(Json(serde_json::json!({
        "files": files,
        "sections": sections,
        "faq_entries": faq_entries,
    })))
}

/// `GET /console/api/knowledge/{name}`: its text (the console's copy when there is one).
pub async fn show(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<serde_json::Value> {
    let name = checked(&name)?.to_owned();
    if let Some((_, text)) = store::knowledge_files(&api.db)
        .await?
        .into_iter()
        .find(|(n, _)| *n == name)
    {
        return Ok(Json(
            serde_json::json!({"name": name, "source": "console", "content": text}),
        ));
    }
    let k = api.knowledge.clone();
    let folder = tokio::task::spawn_blocking(move || crate::knowledge::folder_files(k.dir()))
        .await
        .unwrap_or_default();
    match folder.into_iter().find(|(n, _)| *n == name) {
        Some((_, text)) => Ok(Json(
            serde_json::json!({"name": name, "source": "folder", "content": text}),
        )),
        None => Err(ApiError::not_found("no such knowledge file")),
    }
}

/// A file's new text.
#[derive(Deserialize)]
pub struct FileBody {
    content: String,
}

/// Indexes the knowledge base again with the console's files as stored now.
pub(super) async fn reindex(api: &Api) -> Result<(usize, usize), ApiError> {
    let files = store::knowledge_files(&api.db).await?;
    let k = api.knowledge.clone();
    let _ = tokio::task::spawn_blocking(move || k.set_stored(files)).await;
    Ok(api.knowledge.current().size())
}

/// `PUT /console/api/knowledge/{name}` `{"content": …}`: written (edited or uploaded) and
/// indexed at once.
pub async fn put(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Json(body): Json<FileBody>,
) -> ApiResult<serde_json::Value> {
    let name = checked(&name)?.to_owned();
    if body.content.len() > MAX_FILE_BYTES {
        return Err(ApiError::bad("a knowledge file is at most 1 MB"));
    }
    api.audit(
        &session,
        "knowledge.write",
        &name,
        &format!("{} bytes", body.content.len()),
    )
    .await?;
    let by = session.admin.name.clone();
    store::put_knowledge(&api.db, &name, &body.content, &by, api.clock.now_ms()).await?;
    let (sections, faq_entries) = reindex(&api).await?;
    Ok(Json(
        serde_json::json!({"name": name, "sections": sections, "faq_entries": faq_entries}),
    ))
}

/// `DELETE /console/api/knowledge/{name}`: the console's copy goes (the folder's file of that
/// name, if any, counts again).
pub async fn delete(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> ApiResult<serde_json::Value> {
    let name = checked(&name)?.to_owned();
    let none = || {
        ApiError::not_found(
            "no file of that name was written on the console (files in KNOWLEDGE_DIR are changed there)",
        )
    };
    if !store::knowledge_files(&api.db)
        .await?
        .iter()
        .any(|(n, _)| *n == name)
    {
        return Err(none());
    }
    api.audit(&session, "knowledge.delete", &name, "").await?;
    if !store::delete_knowledge(&api.db, &name).await? {
        return Err(none());
    }
    let (sections, faq_entries) = reindex(&api).await?;
    Ok(Json(
        serde_json::json!({"name": name, "sections": sections, "faq_entries": faq_entries}),
    ))
}
