//! Posting an alert to `ALERT_WEBHOOK_URL` (Slack-compatible JSON), as the ledger, the brain
//! and the gateway all do: retried briefly, and never logging the URL (it is a credential).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use secrecy::{ExposeSecret, SecretString};

/// Posts `body` to `url`, retrying three times with backoff; the error (without the URL) when
/// every try failed.
pub async fn post_alert(
    http: &reqwest::Client,
    url: &SecretString,
    body: &serde_json::Value,
) -> Result<(), reqwest::Error> {
    let send = || async {
        http.post(url.expose_secret())
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .error_for_status()
            .map(|_| ())
    };
    send.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_times(3)
            .with_jitter(),
    )
    .sleep(tokio::time::sleep)
    .await
    .map_err(reqwest::Error::without_url)
}
