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
}
