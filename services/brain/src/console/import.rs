//! Importing into the knowledge base from a PDF or a web page: the text is extracted and
//! turned into Markdown, and given back to the console to read and edit — nothing is saved
//! here (the owner saves with `PUT /console/api/knowledge/{name}`, audited as every write).
//! Both are audited before they run, one import runs at a time, and both are capped in size
//! and time: a PDF is read by a child process (`brain extract-pdf`) that is killed when it
//! runs past [`EXTRACT_TIME`], so a PDF that never ends cannot hold the brain; a page is
//! fetched by [`super::fetch`], which refuses addresses inside private networks.

use std::process::Stdio;
use std::sync::LazyLock;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use shared::console::Session;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use super::fetch::{self, Limits};
use super::{Api, ApiError, ApiResult};

/// Largest PDF taken (the gateway passes this route's bodies up to it).
pub const MAX_PDF_BYTES: usize = shared::console::MAX_IMPORT_BYTES;

/// Largest web page read.
const MAX_PAGE_BYTES: usize = 5 * 1024 * 1024;

/// The longest a web page's fetch takes, redirects included.
const FETCH_TIME: Duration = Duration::from_secs(20);

/// The longest a PDF's text extraction runs before its process is killed.
pub const EXTRACT_TIME: Duration = Duration::from_secs(30);

/// Most characters of Markdown given back (a knowledge file is at most 1 MB).
const MAX_MARKDOWN_BYTES: usize = 1024 * 1024 - 1024;

/// One import at a time, for the whole brain.
static ONE_AT_A_TIME: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(1));

/// The hidden subcommand that extracts a PDF's text (stdin: the PDF; stdout: the pages as a
/// JSON array of strings; a failure: exit 1 and the reason on stderr).
pub const EXTRACT_COMMAND: &str = "extract-pdf";

/// An import's answer: the Markdown and a file name to save it as.
fn preview(markdown: String, name: &str, source: &str) -> serde_json::Value {
    let (markdown, truncated) = truncated(markdown);
    serde_json::json!({
        "name": name,
        "source": source,
        "markdown": markdown,
        "truncated": truncated,
    })
}

fn truncated(mut s: String) -> (String, bool) {
    if s.len() <= MAX_MARKDOWN_BYTES {
        return (s, false);
    }
    let mut end = MAX_MARKDOWN_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    (s, true)
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
    let pages = extract_in_child(&body).await?;
    let title = pages
        .iter()
        .flat_map(|p| p.lines())
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("imported")
        .to_owned();
    Ok(Json(preview(
        pdf_markdown(&pages),
        &file_name(&title),
        &format!("PDF, {} pages", pages.len()),
    )))
}

/// Runs [`EXTRACT_COMMAND`] on `pdf`, killed at [`EXTRACT_TIME`].
async fn extract_in_child(pdf: &[u8]) -> Result<Vec<String>, ApiError> {
    let exe = std::env::current_exe().map_err(|e| {
        tracing::warn!(error = %e, "knowledge import: cannot find the brain's own binary");
        unprocessable("the PDF cannot be read here")
    })?;
    let mut child = tokio::process::Command::new(exe)
        .arg(EXTRACT_COMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            tracing::warn!(error = %e, "knowledge import: cannot start the PDF reader");
            unprocessable("the PDF cannot be read here")
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = pdf.to_vec();
    let run = async move {
        // A child that stops reading (it failed early) must not block the write forever.
        let write = async move {
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let (_, out) = tokio::join!(write, child.wait_with_output());
        out
    };
    let out = match tokio::time::timeout(EXTRACT_TIME, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "knowledge import: the PDF reader failed");
            return Err(unprocessable("the PDF cannot be read here"));
        }
        Err(_) => {
            return Err(unprocessable(format!(
                "reading the PDF took longer than {} seconds; it was stopped",
                EXTRACT_TIME.as_secs()
            )));
        }
    };
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.lines().last().unwrap_or("").trim();
        return Err(unprocessable(format!(
            "the PDF's text cannot be read ({})",
            if why.is_empty() { "it failed" } else { why }
        )));
    }
    let pages: Vec<String> = serde_json::from_slice(&out.stdout)
        .map_err(|_| unprocessable("the PDF's text cannot be read"))?;
    if pages.iter().all(|p| p.trim().is_empty()) {
        return Err(unprocessable(
            "the PDF has no text to import (a scan of paper is an image: type it or use a text PDF)",
        ));
    }
    Ok(pages)
}

/// The child's side of [`EXTRACT_COMMAND`]: stdin to stdout (see there). Limits its own
/// memory (2 GB of address space) and CPU time before it reads anything.
pub fn extract_pdf_stdio() -> std::process::ExitCode {
    use std::io::{Read, Write};
    use std::process::ExitCode;
    limit_self();
    let mut pdf = Vec::new();
    if let Err(e) = std::io::stdin()
        .take(MAX_PDF_BYTES as u64 + 1)
        .read_to_end(&mut pdf)
    {
        eprintln!("cannot read the PDF: {e}");
        return ExitCode::FAILURE;
    }
    // A PDF the reader cannot follow may make it panic: said as a reason, not a backtrace.
    std::panic::set_hook(Box::new(|_| {}));
    let read = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(&pdf));
    let Ok(read) = read else {
        eprintln!("it is damaged or uses features the reader does not know");
        return ExitCode::FAILURE;
    };
    match read {
        Ok(pages) => {
            let json = serde_json::to_vec(&pages).expect("strings serialise");
            if std::io::stdout().write_all(&json).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn limit_self() {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let cap = |n: u64| Rlimit {
        current: Some(n),
        maximum: Some(n),
    };
    let _ = setrlimit(Resource::As, cap(2 * 1024 * 1024 * 1024));
    let _ = setrlimit(Resource::Cpu, cap(EXTRACT_TIME.as_secs() + 5));
}

/// A PDF's pages as Markdown: paragraphs (lines joined, words hyphenated across a line break
/// joined again), a short line standing alone taken as a heading.
pub fn pdf_markdown(pages: &[String]) -> String {
    let mut out = String::new();
    for page in pages {
        for block in page.split("\n\n").map(str::trim).filter(|b| !b.is_empty()) {
            let lines: Vec<&str> = block
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let mut para = String::new();
            for l in &lines {
                if para.ends_with('-') && l.starts_with(char::is_lowercase) {
                    para.pop();
                } else if !para.is_empty() {
                    para.push(' ');
                }
                para.push_str(l);
            }
            let para = para.split_whitespace().collect::<Vec<_>>().join(" ");
            if para.is_empty() {
                continue;
            }
            let heading = lines.len() == 1
                && para.chars().count() <= 60
                && !para.ends_with(['.', ',', ';', ':'])
                && para.starts_with(char::is_uppercase);
            if heading {
                out.push_str("## ");
            }
            out.push_str(&para);
            out.push_str("\n\n");
        }
    }
    out.trim_end().to_owned() + "\n"
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
    if ct.starts_with("application/pdf") || page.body.starts_with(b"%PDF-") {
        let pages = extract_in_child(&page.body).await?;
        return Ok(Json(preview(
            pdf_markdown(&pages),
            &file_name(&fallback_name),
            &source,
        )));
    }
    let text = String::from_utf8_lossy(&page.body).into_owned();
    if ct.starts_with("text/html") || ct.starts_with("application/xhtml") || ct.is_empty() {
        let (markdown, title) = tokio::task::spawn_blocking(move || html_markdown(&text))
            .await
            .map_err(|_| unprocessable("the page cannot be read"))?;
        if markdown.trim().is_empty() {
            return Err(unprocessable("the page has no text to import"));
        }
        let name = file_name(title.as_deref().unwrap_or(&fallback_name));
        return Ok(Json(preview(markdown, &name, &source)));
    }
    if ct.starts_with("text/") {
        return Ok(Json(preview(text, &file_name(&fallback_name), &source)));
    }
    Err(unprocessable(format!(
        "that address is not a page or a PDF ({})",
        ct.split(';').next().unwrap_or("no content type")
    )))
}

/// An HTML page's text as Markdown (scripts, styles, navigation, headers, footers, forms and
/// embedded media left out) and its title.
pub fn html_markdown(html: &str) -> (String, Option<String>) {
    let title = html
        .find("<title")
        .and_then(|i| html[i..].find('>').map(|j| i + j + 1))
        .and_then(|start| {
            html[start..]
                .find("</title>")
                .map(|end| &html[start..start + end])
        })
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty());
    let converter = htmd::HtmlToMarkdown::builder()
        .skip_tags(vec![
            "script", "style", "noscript", "nav", "header", "footer", "form", "iframe", "svg",
            "img", "video", "audio", "canvas", "head", "button", "select", "template",
        ])
        .build();
    let md = converter.convert(html).unwrap_or_default();
    // Blank lines at most two in a row.
    let mut out = String::with_capacity(md.len());
    let mut blank = 0;
    for line in md.lines() {
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    (out.trim().to_owned() + "\n", title)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pdfs_lines_become_paragraphs_and_short_lines_headings() {
        let pages = vec![
            "Opening hours\n\nWe open Monday to Fri-\nday from 9 to 18 and on\nSaturdays from 10.\n\n".to_owned(),
            "Returns\n\nWithin 30 days, with the receipt.".to_owned(),
        ];
        assert_eq!(
            pdf_markdown(&pages),
            "## Opening hours\n\nWe open Monday to Friday from 9 to 18 and on Saturdays from 10.\n\n## Returns\n\nWithin 30 days, with the receipt.\n"
        );
    }

    #[test]
    fn a_page_keeps_its_text_and_loses_its_scripts_and_navigation() {
        let (md, title) = html_markdown(
            "<html><head><title> Gift  cards | Shop </title><script>alert(1)</script></head>\
             <body><nav><a href='/'>Home</a></nav><h1>Gift cards</h1><p>From <b>$10</b>.</p>\
             <ul><li>In the shop</li><li>Online</li></ul><footer>© Shop</footer></body></html>",
        );
        assert_eq!(title.as_deref(), Some("Gift cards | Shop"));
        assert!(md.starts_with("# Gift cards\n\nFrom **$10**."), "{md}");
        assert!(md.contains("In the shop") && md.contains("Online"), "{md}");
        for gone in ["alert", "Home", "©"] {
            assert!(!md.contains(gone), "{gone} in {md}");
        }
    }

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

    #[test]
    fn a_long_import_is_cut_on_a_character_boundary() {
        let (s, cut) = truncated("é".repeat(MAX_MARKDOWN_BYTES));
        assert!(cut && s.len() <= MAX_MARKDOWN_BYTES && s.chars().all(|c| c == 'é'));
        assert_eq!(truncated("short".into()), ("short".into(), false));
    }
}
