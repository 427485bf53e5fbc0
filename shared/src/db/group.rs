//! Group commit: many tasks' writes in one transaction ([`GroupCommit`]).

use std::sync::Arc;

use sqlx::pool::PoolConnection;

use super::{BoxFuture, Db};

/// Jobs per group commit (histogram, label `writer`).
pub const GROUP_COMMIT_SIZE: &str = "db_group_commit_size";

/// How [`GroupCommit`] applies one job inside a write transaction.
pub type ApplyFn<J, R> = Arc<
    dyn for<'c> Fn(&'c mut sqlx::AnyConnection, &'c J) -> BoxFuture<'c, Result<R, sqlx::Error>>
        + Send
        + Sync,
>;

/// How [`GroupCommit::spawn_batched`] applies a whole batch inside one write transaction: a
/// result per job, in order (one statement for many jobs where the writer can).
pub type BatchFn<J, R> = Arc<
    dyn for<'c> Fn(
            &'c mut sqlx::AnyConnection,
            &'c [J],
        ) -> BoxFuture<'c, Result<Vec<R>, sqlx::Error>>
        + Send
        + Sync,
>;

/// Group commit: jobs from any number of tasks go to one writer task, which applies everything
/// waiting (up to a batch) in one write transaction. One commit per batch instead of per job:
/// the writer lock is taken once, and SQLite writes its WAL once, however many messages arrive
/// together; with nothing else waiting a job is committed alone, at once. When a batch fails,
/// each of its jobs is tried again in a transaction of its own, so one bad job fails alone.
pub struct GroupCommit<J, R> {
    tx: tokio::sync::mpsc::Sender<Pending<J, R>>,
}

impl<J, R> Clone for GroupCommit<J, R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

struct Pending<J, R> {
    job: J,
    reply: tokio::sync::oneshot::Sender<Result<R, sqlx::Error>>,
}

impl<J: Send + Sync + 'static, R: Send + 'static> GroupCommit<J, R> {
    /// Starts the writer task named `writer` in metrics (it ends when the last handle is
    /// dropped).
    pub fn spawn(writer: &'static str, db: Db, max_batch: usize, apply: ApplyFn<J, R>) -> Self {
        let each: BatchFn<J, R> = Arc::new(move |conn, jobs| {
            let apply = apply.clone();
            Box::pin(async move {
                let mut out = Vec::with_capacity(jobs.len());
                for job in jobs {
                    out.push(apply(&mut *conn, job).await?);
                }
                Ok(out)
            })
        });
        Self::spawn_batched(writer, db, max_batch, each)
    }

    /// [`GroupCommit::spawn`] with a writer that applies a batch at once ([`BatchFn`]).
    pub fn spawn_batched(
        writer: &'static str,
        db: Db,
        max_batch: usize,
        apply: BatchFn<J, R>,
    ) -> Self {
        metrics::describe_histogram!(
            GROUP_COMMIT_SIZE,
            "Jobs committed together in one database transaction"
        );
        let _ = metrics::histogram!(GROUP_COMMIT_SIZE, "writer" => writer);
        let (tx, rx) = tokio::sync::mpsc::channel(max_batch.max(1) * 4);
        tokio::spawn(group_writer(writer, db, rx, max_batch.max(1), apply));
        Self { tx }
    }

    /// Applies `job` in the next batch and returns its result once that batch committed.
    pub async fn commit(&self, job: J) -> Result<R, sqlx::Error> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Pending { job, reply })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        rx.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn group_writer<J, R>(
    writer: &'static str,
    db: Db,
    mut rx: tokio::sync::mpsc::Receiver<Pending<J, R>>,
    max_batch: usize,
    apply: BatchFn<J, R>,
) {
    let mut batch: Vec<Pending<J, R>> = Vec::with_capacity(max_batch);
    // The writer keeps one connection for itself: no pool hand-over (and the ping sqlx runs
    // on every connection given back) per batch, and SQLite's page cache of that connection
    // stays warm. It is given back to the pool after a failure (a broken one is replaced).
    let mut conn: Option<PoolConnection<sqlx::Any>> = None;
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (jobs, replies): (Vec<J>, Vec<_>) = batch.drain(..).map(|p| (p.job, p.reply)).unzip();
        let results: Vec<Result<R, sqlx::Error>> =
            match apply_batch(&db, &mut conn, &jobs, &apply).await {
                Ok(all) => all.into_iter().map(Ok).collect(),
                Err(e) if jobs.len() == 1 => vec![Err(e)],
                Err(_) => {
                    let mut each = Vec::with_capacity(jobs.len());
                    for job in &jobs {
                        each.push(
                            apply_batch(&db, &mut conn, std::slice::from_ref(job), &apply)
                                .await
                                .map(|mut v| v.pop().expect("one result for one job")),
                        );
                    }
                    each
                }
            };
        metrics::histogram!(GROUP_COMMIT_SIZE, "writer" => writer).record(jobs.len() as f64);
        for (reply, r) in replies.into_iter().zip(results) {
            let _ = reply.send(r);
        }
    }
}

/// One write transaction for `batch` on the writer's connection (taken from the pool when it
/// has none). On a failure the connection goes back to the pool, which checks it.
async fn apply_batch<J, R>(
    db: &Db,
    conn: &mut Option<PoolConnection<sqlx::Any>>,
    batch: &[J],
    apply: &BatchFn<J, R>,
) -> Result<Vec<R>, sqlx::Error> {
    let result = apply_on(db, conn, batch, apply).await;
    if result.is_err() {
        *conn = None;
    }
    result
}

async fn apply_on<J, R>(
    db: &Db,
    conn: &mut Option<PoolConnection<sqlx::Any>>,
    batch: &[J],
    apply: &BatchFn<J, R>,
) -> Result<Vec<R>, sqlx::Error> {
    let turn = db.write_turn().await;
    let c = match conn {
        Some(c) => c,
        None => conn.insert(db.pool.acquire().await?),
    };
    let mut tx = sqlx::Connection::begin_with(&mut **c, db.begin_statement()).await?;
    let out = apply(&mut tx, batch).await?;
    debug_assert_eq!(out.len(), batch.len(), "one result per job");
    tx.commit().await?;
    drop(turn);
    Ok(out)
}
