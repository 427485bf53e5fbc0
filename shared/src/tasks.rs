//! A service's background work as named tasks: they run together until shutdown; the first to
//! fail — or to end on its own before shutdown — stops the rest, and every failure is reported
//! with the task's name.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

/// Named tasks of one service (see the module docs).
pub struct Tasks {
    set: JoinSet<anyhow::Result<()>>,
    names: HashMap<Id, &'static str>,
    shutdown: CancellationToken,
}

impl Tasks {
    /// Tasks that stop when `shutdown` is cancelled (and cancel it when one fails).
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            set: JoinSet::new(),
            names: HashMap::new(),
            shutdown,
        }
    }

    /// The token the tasks stop on.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Runs `task` until it ends; it is expected to end only at shutdown.
    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Runs `work` every `period` (the first time at once) until shutdown. A round's own
    /// failures are its business (logged there); the loop goes on.
    pub fn every<F, Fut>(&mut self, name: &'static str, period: Duration, mut work: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let shutdown = self.shutdown.clone();
        self.spawn(name, async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    _ = tick.tick() => work().await,
                }
            }
        });
    }

    /// Waits for every task. The first failure (or a task ending before shutdown) cancels the
    /// rest; the first error is returned, named.
    pub async fn join(mut self) -> anyhow::Result<()> {
        let mut first: anyhow::Result<()> = Ok(());
        while let Some(joined) = self.set.join_next_with_id().await {
            let (name, result) = match joined {
                Ok((id, r)) => (self.names.get(&id).copied().unwrap_or("task"), r),
                Err(e) => (
                    self.names.get(&e.id()).copied().unwrap_or("task"),
                    Err(anyhow::anyhow!("panicked: {e}")),
                ),
            };
            match result {
                Err(e) => {
                    tracing::error!(
                        task = name,
                        error = format!("{e:#}"),
                        "task failed; stopping"
                    );
                    self.shutdown.cancel();
                    if first.is_ok() {
                        first = Err(e).with_context(|| format!("{name} failed"));
                    }
                }
                Ok(()) if !self.shutdown.is_cancelled() => {
                    tracing::warn!(task = name, "task ended on its own; stopping");
                    self.shutdown.cancel();
                }
                Ok(()) => {}
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_failure_stops_the_rest_and_is_named() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        let waiting = shutdown.clone();
        tasks.spawn("patient", async move {
            waiting.cancelled().await;
            Ok(())
        });
        tasks.spawn("broken", async { anyhow::bail!("no database") });
        let err = tasks.join().await.unwrap_err();
        assert!(shutdown.is_cancelled());
        assert_eq!(format!("{err:#}"), "broken failed: no database");
    }

    #[tokio::test]
    async fn a_task_ending_early_stops_the_service_and_every_runs_until_shutdown() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tasks.every("ticker", Duration::from_millis(5), move || {
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
            }
        });
        let stop = shutdown.clone();
        tasks.spawn("quitter", async move {
            // Ends (Ok) once the ticker has run a few times: that alone stops the service.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!stop.is_cancelled());
            Ok(())
        });
        tasks.join().await.unwrap();
        assert!(shutdown.is_cancelled());
        let mut rounds = 0;
        while rx.try_recv().is_ok() {
            rounds += 1;
        }
        assert!(rounds >= 3, "{rounds}");
    }
}
