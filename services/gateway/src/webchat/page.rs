//! The chat page: `/chat` (HTML), `/chat/page.css` and `/chat/page.js`, embedded in the binary.
//!
//! The page runs under a Content-Security-Policy with no inline script or style (both are
//! served files), talking to this origin only; `frame-ancestors` comes from
//! `WEBCHAT_FRAME_ANCESTORS` (default `'self'`), the sites the owner lets embed the page as a
//! widget. The assets' URLs carry a hash of their content, so they can be cached for good
//! and an upgrade is picked up at once.

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::Webchat;

const HTML: &str = include_str!("page.html");
const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// A short hash of an asset, for its URL.
fn version(asset: &str) -> String {
    hex::encode(Sha256::digest(asset.as_bytes()))[..12].to_owned()
}

/// The page for each mode (`<body data-mode>` tells the script which it is in).
static PAGES: LazyLock<[String; 2]> = LazyLock::new(|| {
    let page = |mode: &str| {
        HTML.replace("{{css_version}}", &version(CSS))
            .replace("{{js_version}}", &version(JS))
            .replace("{{mode}}", mode)
    };
    [page("visitor"), page("demo")]
});

/// The `Content-Security-Policy` of the page, with `frame_ancestors` (a validated source
/// list: `WEBCHAT_FRAME_ANCESTORS`).
pub(super) fn policy(frame_ancestors: &str) -> HeaderValue {
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; \
         frame-ancestors {frame_ancestors}"
    );
    HeaderValue::from_str(&csp).expect("WEBCHAT_FRAME_ANCESTORS is validated at startup")
}

/// `GET /chat`: the page, in demo or visitor mode.
pub(super) async fn page(State(wc): State<Webchat>) -> Response {
    let html = &PAGES[usize::from(wc.inner.local)];
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::CONTENT_SECURITY_POLICY, wc.inner.csp.clone()),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        html.clone(),
    )
        .into_response()
}

/// `GET /chat/page.css`.
pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

/// `GET /chat/page.js`.
pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

/// An asset: its URL changes with its content, so it is cached for a day (a client asking
/// with an old version after an upgrade gets the new content all the same).
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_is_set_on_the_body_tag_and_the_page_has_nothing_inline() {
        for (page, mode) in PAGES.iter().zip(["visitor", "demo"]) {
            assert!(
                page.contains(&format!("<body data-mode=\"{mode}\">")),
                "{mode}"
            );
            assert!(!page.contains("{{"), "{mode}: a placeholder left");
            assert!(!page.contains("<style") && !page.contains("style="));
            assert_eq!(page.matches("<script").count(), 1);
            assert!(page.contains(&format!(
                "<script src=\"/chat/page.js?v={}\"></script>",
                version(JS)
            )));
        }
    }
}
