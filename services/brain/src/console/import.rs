//! Importing into the knowledge base from a PDF or a web page: the text is extracted and
//! turned into Markdown, and given back to the console to read and edit — nothing is saved
//! here (the owner saves with `PUT /console/api/knowledge/{name}`, audited as every write).
//! Both are audited before they run, one import runs at a time, and both are capped in size
//! and time: a page is fetched by [`super::fetch`], which refuses addresses inside private
//! networks, and a PDF or a page is turned into Markdown by a child process that is killed
//! when it runs too long ([`super::convert`]), so no document can hold or crash the brain.

use std::sync::LazyLock;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use shared::console::Session;
use tokio::sync::Semaphore;

use super::convert::{self, Converted, Kind};
use super::fetch::{self, Limits};
use super::{Api, ApiError, ApiResult};

/// Largest PDF taken (the gateway passes this route's bodies up to it).
pub const MAX_PDF_BYTES: usize = shared::console::MAX_IMPORT_BYTES;

/// Largest web page read.
const MAX_PAGE_BYTES: usize = 5 * 1024 * 1024;

/// The longest a web page's fetch takes, redirects included.
const FETCH_TIME: Duration = Duration::from_secs(20);

/// One import at a time, for the whole brain.
static ONE_AT_A_TIME: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(1));

/// An import's answer: the Markdown and a file name to save it as.
fn preview(
    c: Converted,
    fallback_name: &str,
    source: &str,
) -> Result<Json<serde_json::Value>, ApiError> {
    if c.markdown.trim().is_empty() {
        return Err(unprocessable(if c.pages > 0 {
            "the PDF has no text to import (a scan of paper is an image: type it or use a text PDF)"
        } else {
            "there is no text to import there"
        }));
    }
    let Converted {
        markdown,
        title,
        pages,
        truncated,
    } = c;
    let name = file_name(title.as_deref().unwrap_or(fallback_name));
    Ok(Json(serde_json::json!({
        "name": name,
        "source": source,
        "markdown": markdown,
        "pages": pages,
        "truncated": truncated,
    })))
}

/// A file name from a title or address: lower-case words joined by `-`, `.md`.
fn file_name(from: &str) -> String {
    let words: Vec<String> = from
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.chars()
                .flat_map(char::to_lowercase)
                .map(unaccented)
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .take(8)
        .collect();
    let stem = words.join("-");
    let stem: String = stem.chars().take(60).collect();
    if stem.is_empty() {
        "imported.md".to_owned()
    } else {
        format!("{stem}.md")
    }
}

/// The letter without its accent, for the Latin letters of the bot's languages.
fn unaccented(c: char) -> char {
    match c {
        'á' | 'à' | 'â' | 'ã' | 'ä' | 'å' => 'a',
        'é' | 'è' | 'ê' | 'ë' => 'e',
        'í' | 'ì' | 'î' | 'ï' => 'i',
        'ó' | 'ò' | 'ô' | 'õ' | 'ö' => 'o',
        'ú' | 'ù' | 'û' | 'ü' => 'u',
        'ç' => 'c',
        'ñ' => 'n',
        c => c,
    }
}

fn busy() -> ApiError {
    ApiError(
        StatusCode::TOO_MANY_REQUESTS,
        "another import is running; try again in a minute".into(),
    )
}

fn unprocessable(why: impl Into<String>) -> ApiError {
    ApiError(StatusCode::UNPROCESSABLE_ENTITY, why.into())
}

/// `POST /console/api/knowledge/import/pdf` with the PDF as the body: its text as Markdown.
pub async fn pdf(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> ApiResult<serde_json::Value> {
    if body.len() > MAX_PDF_BYTES {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a PDF is at most {} MB", MAX_PDF_BYTES / (1024 * 1024)),
        ));
    }
    if !body.starts_with(b"%PDF-") {
        return Err(ApiError::bad(
            "that is not a PDF (it does not start with %PDF-)",
        ));
    }
    let _one = ONE_AT_A_TIME.try_acquire().map_err(|_| busy())?;
    api.audit(
        &session,
        "knowledge.import",
        "pdf",
        &format!("{} bytes", body.len()),
    )
    .await?;
    let c = convert::in_child(Kind::Pdf, &body)
        .await
        .map_err(unprocessable)?;
    let source = format!("PDF, {} pages", c.pages);
    preview(c, "imported", &source)
}

/// The URL to import.
#[derive(Deserialize)]
pub struct UrlBody {
    url: String,
}

/// `POST /console/api/knowledge/import/url` `{"url": …}`: the page's text as Markdown (an
/// HTML page converted, Markdown and text as they are, a PDF read as above).
pub async fn url(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Json(body): Json<UrlBody>,
) -> ApiResult<serde_json::Value> {
    if body.url.len() > 2048 {
        return Err(ApiError::bad("a web address is at most 2,048 characters"));
    }
    let _one = ONE_AT_A_TIME.try_acquire().map_err(|_| busy())?;
    let host = reqwest::Url::parse(body.url.trim())
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    api.audit(&session, "knowledge.import", "url", &host)
        .await?;
    let limits = Limits {
        max_bytes: MAX_PAGE_BYTES,
        timeout: FETCH_TIME,
        allow: api.settings.base().knowledge_import_allow.clone(),
    };
    let page = fetch::fetch(&body.url, &limits)
        .await
        .map_err(|e| unprocessable(e.to_string()))?;
    let source = page.url.to_string();
    let path_words = page
        .url
        .path_segments()
        .and_then(|mut s| s.rfind(|p| !p.is_empty()).map(str::to_owned))
        .unwrap_or_default();
    let fallback_name = format!("{} {path_words}", page.url.host_str().unwrap_or(""));
    let ct = page.content_type.as_str();
    let kind = if ct.starts_with("application/pdf") || page.body.starts_with(b"%PDF-") {
        Kind::Pdf
    } else if ct.starts_with("text/html") || ct.starts_with("application/xhtml") || ct.is_empty() {
        Kind::Html
    } else if ct.starts_with("text/") {
        let text = String::from_utf8_lossy(&page.body).into_owned();
        let (markdown, truncated) = convert::capped(text);
        let c = Converted {
            markdown,
            title: None,
            pages: 0,
            truncated,
        };
        return preview(c, &fallback_name, &source);
    } else {
        return Err(unprocessable(format!(
            "that address is not a page or a PDF ({})",
            ct.split(';').next().unwrap_or("no content type")
        )));
    };
    let mut c = convert::in_child(kind, &page.body)
        .await
        .map_err(unprocessable)?;
    if kind == Kind::Pdf {
        // A PDF's first line names it less well than its address does.
        c.title = None;
    }
    preview(c, &fallback_name, &source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_titles() {
        assert_eq!(file_name("Gift cards | Shop"), "gift-cards-shop.md");
        assert_eq!(
            file_name("Preços & Entregas 2026"),
            "precos-entregas-2026.md"
        );
        assert_eq!(
            file_name("Über uns — Öffnungszeiten"),
            "uber-uns-offnungszeiten.md"
        );
        assert_eq!(file_name("!!!"), "imported.md");
    }
}
