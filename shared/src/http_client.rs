//! Outgoing HTTP: reqwest with rustls on the `ring` crypto provider. reqwest 0.13's default
//! provider is aws-lc-rs, whose C library (aws-lc-sys) was the longest single step of a cold
//! build; reqwest is built without a provider (`rustls-no-provider`) and this module installs
//! `ring` for the whole process before any client is made. Build every client here.

use std::sync::Once;

/// Makes `ring` the process's TLS crypto provider (once; later calls do nothing). Clients made
/// by [`builder`] and [`client`] call it; call it yourself before anything else builds a
/// reqwest client (the OTLP exporter does).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only when another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client builder (reqwest's), the crypto provider in place.
pub fn builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// A client with reqwest's defaults (what `reqwest::Client::new()` makes).
pub fn client() -> reqwest::Client {
    builder()
        .build()
        .expect("a reqwest client (TLS roots and crypto provider available)")
}

/// Why [`body_at_most`] gave no body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is longer than the limit (said by `Content-Length`, or found while reading).
    #[error("the body is larger than the limit")]
    TooLarge,
    /// The body broke off.
    #[error("the body broke off: {0}")]
    Broken(#[source] reqwest::Error),
}

/// A response's body, read no further than `limit` bytes: refused at once when its
/// `Content-Length` says more, and as soon as it grows past the limit when it does not (or lies).
pub async fn body_at_most(mut res: reqwest::Response, limit: u64) -> Result<Vec<u8>, BodyError> {
    if res.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(BodyError::Broken)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn clients_are_made_and_speak_tls_with_ring() {
        // Any client builds (reqwest would panic without a provider), and the provider in use
        // is ring's: an https request gets as far as the network (refused here), not a panic.
        let http = super::client();
        let err = http
            .get("https://127.0.0.1:9/")
            .send()
            .await
            .expect_err("nothing listens on port 9");
        assert!(err.is_connect(), "{err}");
        let provider = rustls::crypto::CryptoProvider::get_default().expect("installed");
        let ring = rustls::crypto::ring::default_provider();
        assert_eq!(
            provider.cipher_suites.len(),
            ring.cipher_suites.len(),
            "the process provider is ring's"
        );
    }

    /// Serves one response per connection: `head` (status line and headers) then `body`.
    async fn serve(head: &'static str, body: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            }
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_its_limit_whatever_its_length_header_says() {
        let http = super::client();
        let get = |url: String| {
            let http = http.clone();
            async move { http.get(url).send().await.unwrap() }
        };
        let url = serve(
            "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n",
            vec![b'x'; 3000],
        )
        .await;
        // No Content-Length: found while reading.
        let body = super::body_at_most(get(url.clone()).await, 3000)
            .await
            .unwrap();
        assert_eq!(body.len(), 3000);
        assert!(matches!(
            super::body_at_most(get(url).await, 2999).await,
            Err(super::BodyError::TooLarge)
        ));
        // A Content-Length over the limit: refused before reading.
        let url = serve(
            "HTTP/1.1 200 OK\r\ncontent-length: 5000\r\nconnection: close\r\n\r\n",
            vec![b'x'; 5000],
        )
        .await;
        assert!(matches!(
            super::body_at_most(get(url).await, 4000).await,
            Err(super::BodyError::TooLarge)
        ));
    }
}
