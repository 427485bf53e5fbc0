//! Waiting on a condition instead of sleeping a fixed time: a test that waits for something
//! to happen asks for it until it holds, with a deadline, and goes on the moment it does.

use std::time::Duration;

use tokio::time::Instant;

/// How long between two questions.
const POLL: Duration = Duration::from_millis(50);

/// Asks `probe` every 50 ms until it answers `Some`, and returns that; `None` once `timeout`
/// passed without (for a test that reports what it saw instead).
pub async fn wait_for<R>(
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<R>,
) -> Option<R> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_for`] that fails the test, naming `what`, when `probe` never answers within
/// `timeout`.
pub async fn eventually<R>(
    what: &str,
    timeout: Duration,
    probe: impl AsyncFnMut() -> Option<R>,
) -> R {
    match wait_for(timeout, probe).await {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn it_answers_as_soon_as_the_condition_holds_and_gives_up_at_the_deadline() {
        let started = Instant::now();
        let mut asked = 0;
        let got = wait_for(Duration::from_secs(5), async || {
            asked += 1;
            (asked == 3).then_some("ready")
        })
        .await;
        assert_eq!(got, Some("ready"));
        assert_eq!(started.elapsed(), 2 * POLL);
        let started = Instant::now();
        let never = wait_for(Duration::from_secs(1), async || None::<()>).await;
        assert_eq!(never, None);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(1) + POLL * 2);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waiting for the answer")]
    async fn eventually_fails_the_test_naming_what_never_came() {
        eventually(
            "the answer",
            Duration::from_millis(200),
            async || None::<()>,
        )
        .await;
    }
}
