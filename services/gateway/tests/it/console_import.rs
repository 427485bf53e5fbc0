//! Importing into the knowledge base from the console: a web page (fetched by the brain, which
//! refuses private addresses after resolving and on every redirect) and a PDF (read in a
//! child process), both given back as Markdown and saved only when the owner saves — through
//! the gateway and the brain as they run, against a local site.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

use crate::console::{ADMIN, Session, Stack, T};

const PAGE: &str = "<html><head><title>Delivery | Ana's Bakery</title>\
    <script>document.write('tracking')</script></head><body>\
    <nav><a href='/'>Home</a> <a href='/menu'>Menu</a></nav>\
    <h1>Delivery</h1><h2>Do you deliver on Sundays?</h2>\
    <p>Yes, on Sundays we deliver <b>cakes and bread</b> from 9:00 to 13:00.</p>\
    <footer>Ana's Bakery, Lisbon</footer></body></html>";

/// A one-page PDF with two lines of text in a standard font (offsets computed).
pub(crate) fn pdf(lines: &[&str]) -> Vec<u8> {
    let mut content = String::new();
    for (i, l) in lines.iter().enumerate() {
        content.push_str(&format!(
            "BT /F1 14 Tf 72 {} Td ({l}) Tj ET\n",
            720 - 30 * i
        ));
    }
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_owned(),
        format!(
            "<< /Length {} >>\nstream\n{content}endstream",
            content.len()
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_owned(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// The local "site": a page, a PDF, redirects into private addresses, a page too large.
async fn site(private_port: u16) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new()
        .route(
            "/delivery",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
        )
        .route(
            "/hours.pdf",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/pdf")],
                    pdf(&["Opening hours", "We open every day at nine."]),
                )
            }),
        )
        .route("/moved", get(|| async { Redirect::temporary("/delivery") }))
        .route(
            "/to-private",
            get(move || async move {
                Redirect::temporary(&format!("http://127.0.0.1:{private_port}/secret"))
            }),
        )
        .route(
            "/to-localhost",
            get(move || async move {
                Redirect::temporary(&format!("http://localhost:{port}/delivery"))
            }),
        )
        .route(
            "/to-metadata",
            get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }),
        )
        .route(
            "/huge",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html")],
                    "x".repeat(6 * 1024 * 1024),
                )
            }),
        )
        .route(
            "/deep",
            get(|| async {
                // Nesting deep enough to overflow a recursive converter's stack.
                let page = format!("{}deep{}", "<div>".repeat(5_000), "</div>".repeat(5_000));
                ([(header::CONTENT_TYPE, "text/html")], page)
            }),
        )
        .route(
            "/binary",
            get(|| async { ([(header::CONTENT_TYPE, "application/zip")], vec![0u8; 10]) }),
        )
        .route(
            "/gone",
            get(|| async { StatusCode::NOT_FOUND.into_response() }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// A "private" service the import must never reach (it counts the calls it gets).
async fn private_service() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            "secret"
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, hits)
}

/// The stack with the local site allowed and the private service beside it.
struct Rig {
    s: Stack,
    me: Session,
    /// The allowed site's address (`http://127.0.0.1:<port>`).
    base: String,
    private_port: u16,
    private_hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    port: u16,
}

impl Rig {
    async fn start() -> Self {
        let (private_port, private_hits) = private_service().await;
        let port = site(private_port).await;
        let allow = format!("127.0.0.1:{port}");
        let s = Stack::start_with(&[], &[("KNOWLEDGE_IMPORT_ALLOW", allow.as_str())], false).await;
        let me = s.session().await;
        Self {
            s,
            me,
            base: format!("http://127.0.0.1:{port}"),
            private_port,
            private_hits,
            port,
        }
    }
}

async fn import_url(s: &Stack, me: &Session, url: &str) -> (u16, serde_json::Value) {
    s.post(
        me,
        "/console/api/knowledge/import/url",
        serde_json::json!({"url": url}),
    )
    .await
}

async fn import_pdf(
    s: &Stack,
    me: &Session,
    body: Vec<u8>,
    csrf: bool,
) -> (u16, serde_json::Value) {
    let mut req = s
        .http
        .post(s.url("/console/api/knowledge/import/pdf"))
        .header("cookie", &me.cookie)
        .header("content-type", "application/pdf")
        .body(body);
    if csrf {
        req = req.header("x-csrf-token", &me.csrf);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn a_page_and_a_pdf_are_imported_as_markdown_saved_only_by_the_owner_and_answer_customers() {
    let Rig {
        s,
        me,
        base,
        private_hits,
        ..
    } = Rig::start().await;

    // A page (through a redirect on the allowed site): its text as Markdown, without its
    // scripts, navigation and footer; a name from its title; nothing saved yet.
    let (status, page) = import_url(&s, &me, &format!("{base}/moved")).await;
    assert_eq!(status, 200, "{page}");
    let md = page["markdown"].as_str().unwrap();
    assert!(
        md.contains("## Do you deliver on Sundays?\n\nYes, on Sundays we deliver **cakes and bread** from 9:00 to 13:00."),
        "{md}"
    );
    for gone in ["tracking", "Home", "Lisbon"] {
        assert!(!md.contains(gone), "{gone} in {md}");
    }
    assert_eq!(page["name"], "delivery-ana-s-bakery.md");
    assert_eq!(page["source"], format!("{base}/delivery"));
    let (_, kb) = s.get(&me, "/console/api/knowledge").await;
    assert_eq!(kb["files"].as_array().unwrap().len(), 0, "{kb}");

    // Saved by the owner, it answers customers.
    let (status, saved) = s
        .send(
            &me,
            reqwest::Method::PUT,
            "/console/api/knowledge/delivery.md",
            serde_json::json!({"content": md}),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    let customer = "+15550003333";
    let (status, _) = s.gw.send_text(customer, "Do you deliver on Sundays?").await;
    assert_eq!(status, 202);
    let l =
        s.gw.wait_listing(customer, T, |l| l.iter().any(|m| m["direction"] == "out"))
            .await;
    let answer = l.iter().find(|m| m["direction"] == "out").unwrap();
    assert!(
        answer["text"].as_str().unwrap().contains("cakes and bread"),
        "{answer}"
    );

    // A PDF (uploaded, and at an address): its text, a heading from its first line.
    let (status, p) = import_pdf(
        &s,
        &me,
        pdf(&["Opening hours", "We open every day at nine."]),
        true,
    )
    .await;
    assert_eq!(status, 200, "{p}");
    let md = p["markdown"].as_str().unwrap();
    assert!(
        md.contains("Opening hours") && md.contains("We open every day at nine."),
        "{md}"
    );
    assert_eq!(p["name"], "opening-hours.md");
    let (status, p) = import_url(&s, &me, &format!("{base}/hours.pdf")).await;
    assert_eq!(status, 200, "{p}");
    assert!(
        p["markdown"]
            .as_str()
            .unwrap()
            .contains("We open every day at nine.")
    );

    // Every import is in the audit log, with the admin's name.
    let (_, audit) = s.get(&me, "/console/api/audit").await;
    let imports = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "knowledge.import" && a["admin"] == ADMIN)
        .count();
    assert_eq!(imports, 3, "{audit}");
    assert_eq!(private_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn imports_refuse_private_addresses_on_every_redirect_and_bad_or_oversized_input() {
    let Rig {
        s,
        me,
        base,
        private_port,
        private_hits,
        port,
    } = Rig::start().await;

    for (url, want) in [
        // The private service itself, by address and by name.
        (
            format!("http://127.0.0.1:{private_port}/"),
            "private network",
        ),
        (
            format!("http://localhost:{private_port}/"),
            "private network",
        ),
        (format!("http://[::1]:{private_port}/"), "private network"),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "private network",
        ),
        ("http://10.0.0.1/".to_owned(), "private network"),
        // An allowed site that redirects inside: refused at the redirect.
        (format!("{base}/to-private"), "private network"),
        (format!("{base}/to-localhost"), "private network"),
        (format!("{base}/to-metadata"), "private network"),
        ("file:///etc/passwd".to_owned(), "not a web address"),
        ("gopher://example.com/".to_owned(), "not a web address"),
        (
            format!("http://user:pw@127.0.0.1:{port}/delivery"),
            "user name or password",
        ),
        (format!("{base}/huge"), "larger than 5 MB"),
        (format!("{base}/binary"), "not a page or a PDF"),
        (format!("{base}/gone"), "answered 404"),
    ] {
        let (status, body) = import_url(&s, &me, &url).await;
        assert_eq!(status, 422, "{url}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(want),
            "{url}: {body}"
        );
    }
    assert_eq!(private_hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    // A page nested deep enough to overflow its converter costs the converter's process, not
    // the brain: refused (or converted), and the next import works.
    let (status, body) = import_url(&s, &me, &format!("{base}/deep")).await;
    assert!(status == 422 || status == 200, "{status}: {body}");
    let (status, body) = import_url(&s, &me, &format!("{base}/delivery")).await;
    assert_eq!(status, 200, "{body}");

    // A PDF: the CSRF token is needed, a PDF it must be, a broken one says so, 10 MB at most.
    let (status, _) = import_pdf(&s, &me, pdf(&["Hello"]), false).await;
    assert_eq!(status, 403);
    let (status, body) = import_pdf(&s, &me, b"<html>not a pdf</html>".to_vec(), true).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not a PDF"),
        "{body}"
    );
    let (status, body) =
        import_pdf(&s, &me, b"%PDF-1.4\nthis is no pdf at all".to_vec(), true).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("cannot be read"),
        "{body}"
    );
    let mut big = b"%PDF-1.4\n".to_vec();
    big.resize(11 * 1024 * 1024, b' ');
    // On a connection of its own: the gateway answers before reading the rest of the body and
    // closes that connection, which a pooled client could otherwise pick for the next request.
    let r = shared::http_client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .post(s.url("/console/api/knowledge/import/pdf"))
        .header("cookie", &me.cookie)
        .header("x-csrf-token", &me.csrf)
        .header("content-type", "application/pdf")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("at most 10 MB"));
    // Nothing was saved by any of it.
    let (_, kb) = s.get(&me, "/console/api/knowledge").await;
    assert_eq!(kb["files"].as_array().unwrap().len(), 0, "{kb}");
}
