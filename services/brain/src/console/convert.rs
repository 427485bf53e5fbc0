//! Turning an import into Markdown, in a child process: `brain extract-pdf` and
//! `brain extract-html` read the document on stdin and print `{"markdown", "title", "pages",
//! "truncated"}` on stdout (a failure: exit 1 and the reason on stderr). The brain runs them
//! with [`in_child`], which kills the child at [`EXTRACT_TIME`]; the child limits its own
//! address space and CPU time before it reads anything. So a document that sends a parser into
//! a loop, a recursion deep enough to overflow its stack, or an output of gigabytes costs a
//! child process, never the brain: PDF parsing (pdf-extract) and HTML conversion (htmd walks
//! the tree recursively) both run there.

use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

/// The longest a conversion runs before its process is killed.
pub const EXTRACT_TIME: Duration = Duration::from_secs(30);

/// Most bytes of Markdown given back (a knowledge file is at most 1 MB).
pub const MAX_MARKDOWN_BYTES: usize = 1024 * 1024 - 1024;

/// Most bytes a child reads on stdin.
const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;

/// What a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A PDF (`brain extract-pdf`).
    Pdf,
    /// An HTML page (`brain extract-html`).
    Html,
}

impl Kind {
    /// The brain's subcommand that converts it.
    pub fn command(self) -> &'static str {
        match self {
            Kind::Pdf => "extract-pdf",
            Kind::Html => "extract-html",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Kind::Pdf => "the PDF",
            Kind::Html => "the page",
        }
    }
}

/// A document as Markdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Converted {
    /// The Markdown, at most [`MAX_MARKDOWN_BYTES`].
    pub markdown: String,
    /// Its title (a page's `<title>`, a PDF's first line), if any.
    pub title: Option<String>,
    /// A PDF's pages (0 for a page).
    pub pages: usize,
    /// Whether the Markdown was cut at [`MAX_MARKDOWN_BYTES`].
    pub truncated: bool,
}

/// Converts `input` in a child process of this binary (see the module docs); the error is the
/// reason to show the admin.
pub async fn in_child(kind: Kind, input: &[u8]) -> Result<Converted, String> {
    let failed = |e: std::io::Error| {
        tracing::warn!(error = %e, "knowledge import: the converter did not run");
        format!("{} cannot be read here", kind.what())
    };
    // /proc/self/exe, not the path: still this very binary after an upgrade replaced the file.
    let mut child = tokio::process::Command::new("/proc/self/exe")
        .arg(kind.command())
        // Nothing of the brain's: no keys, no database URL, no .env in its folder.
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(failed)?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_vec();
    let run = async move {
        // Written beside the reads: a child that stops reading cannot block the write.
        let write = async move {
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let (_, out) = tokio::join!(write, child.wait_with_output());
        out
    };
    let out = match tokio::time::timeout(EXTRACT_TIME, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(failed(e)),
        Err(_) => {
            return Err(format!(
                "reading {} took longer than {} seconds; it was stopped",
                kind.what(),
                EXTRACT_TIME.as_secs()
            ));
        }
    };
    let unreadable = |why: &str| format!("{}'s text cannot be read ({why})", kind.what());
    if std::os::unix::process::ExitStatusExt::signal(&out.status).is_some() {
        // Killed: out of memory, of stack or of CPU time — the runtime's own words say no more.
        return Err(unreadable("it is too large or too deeply nested to read"));
    }
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.lines().last().unwrap_or("").trim();
        return Err(unreadable(if why.is_empty() {
            "its reader stopped"
        } else {
            why
        }));
    }
    serde_json::from_slice(&out.stdout).map_err(|_| unreadable("its reader said nothing"))
}

/// The child's side of `kind`'s subcommand: stdin to stdout (see the module docs).
pub fn child_main(kind: Kind) -> std::process::ExitCode {
    use std::io::{Read, Write};
    use std::process::ExitCode;
    limit_self();
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin()
        .take(MAX_INPUT_BYTES)
        .read_to_end(&mut input)
    {
        eprintln!("cannot read it: {e}");
        return ExitCode::FAILURE;
    }
    // A document the reader cannot follow may make it panic: said as a reason, not a backtrace.
    std::panic::set_hook(Box::new(|_| {}));
    let converted = std::panic::catch_unwind(|| match kind {
        Kind::Pdf => pdf_extract::extract_text_from_mem_by_pages(&input)
            .map(|pages| pdf_converted(&pages))
            .map_err(|e| e.to_string()),
        Kind::Html => Ok(html_converted(&String::from_utf8_lossy(&input))),
    });
    match converted {
        Ok(Ok(c)) => {
            let json = serde_json::to_vec(&c).expect("strings serialise");
            if std::io::stdout().write_all(&json).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("it is damaged or uses features the reader does not know");
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

/// `s` cut at [`MAX_MARKDOWN_BYTES`] on a character boundary, and whether it was.
pub fn capped(mut s: String) -> (String, bool) {
    if s.len() <= MAX_MARKDOWN_BYTES {
        return (s, false);
    }
    s.truncate(s.floor_char_boundary(MAX_MARKDOWN_BYTES));
    (s, true)
}

fn pdf_converted(pages: &[String]) -> Converted {
    let title = pages
        .iter()
        .flat_map(|p| p.lines())
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned);
    let (markdown, truncated) = capped(pdf_markdown(pages));
    Converted {
        markdown,
        title,
        pages: pages.len(),
        truncated,
    }
}

fn html_converted(html: &str) -> Converted {
    let (markdown, title) = html_markdown(html);
    let (markdown, truncated) = capped(markdown);
    Converted {
        markdown,
        title,
        pages: 0,
        truncated,
    }
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

/// A page's `<title>`, its entities decoded and its spaces folded.
fn title_of(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let raw = html.get(start..end)?;
    let decoded = raw
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    let t = decoded.split_whitespace().collect::<Vec<_>>().join(" ");
    (!t.is_empty()).then_some(t)
}

/// An HTML page's text as Markdown (scripts, styles, navigation, headers, footers, forms and
/// embedded media left out) and its title.
pub fn html_markdown(html: &str) -> (String, Option<String>) {
    let title = title_of(html);
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
        let c = pdf_converted(&pages);
        assert_eq!(
            c.markdown,
            "## Opening hours\n\nWe open Monday to Friday from 9 to 18 and on Saturdays from 10.\n\n## Returns\n\nWithin 30 days, with the receipt.\n"
        );
        assert_eq!(
            (c.title.as_deref(), c.pages, c.truncated),
            (Some("Opening hours"), 2, false)
        );
    }

    #[test]
    fn a_page_keeps_its_text_and_loses_its_scripts_and_navigation() {
        let (md, title) = html_markdown(
            "<html><head><TITLE> Gift  cards &amp; more | Shop </TITLE><script>alert(1)</script></head>\
             <body><nav><a href='/'>Home</a></nav><h1>Gift cards</h1><p>From <b>$10</b>.</p>\
             <ul><li>In the shop</li><li>Online</li></ul><footer>© Shop</footer></body></html>",
        );
        assert_eq!(title.as_deref(), Some("Gift cards & more | Shop"));
        assert!(md.starts_with("# Gift cards\n\nFrom **$10**."), "{md}");
        assert!(md.contains("In the shop") && md.contains("Online"), "{md}");
        for gone in ["alert", "Home", "©"] {
            assert!(!md.contains(gone), "{gone} in {md}");
        }
    }

    #[test]
    fn a_long_import_is_cut_on_a_character_boundary() {
        let (s, cut) = capped("é".repeat(MAX_MARKDOWN_BYTES));
        assert!(cut && s.len() <= MAX_MARKDOWN_BYTES && s.chars().all(|c| c == 'é'));
        assert_eq!(capped("short".into()), ("short".into(), false));
    }
}
