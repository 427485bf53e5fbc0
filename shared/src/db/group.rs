//! Group commit: many tasks' writes in one transaction ([`GroupCommit`]); and its reading
//! twin, many tasks' reads in one statement ([`GroupRead`]).

use std::sync::Arc;

use sqlx::pool::PoolConnection;

use super::{BoxFuture, Db};

/// Jobs per group commit (histogram, label `writer`).
pub const GROUP_COMMIT_SIZE: &str = "db_group_commit_size";

/// Reads per group read (histogram, label `reader`).
pub const GROUP_READ_SIZE: &str = "db_group_read_size";

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
        Self {
            tx: spawn_group(Mode::Write(writer), db, max_batch, apply),
        }
    }

    /// Applies `job` in the next batch and returns its result once that batch committed.
    pub async fn commit(&self, job: J) -> Result<R, sqlx::Error> {
        ask(&self.tx, job).await
    }
}

/// Group read: reads from any number of tasks go to one reader task, which runs everything
/// waiting (up to a batch) at once — in one statement where the reader can — on a connection
/// it keeps. On SQLite every statement is a hop to the connection's thread and back, and a
/// pooled connection given back costs one more (sqlx pings it): a group of reads costs one
/// statement, however many tasks asked. With nothing else waiting a read runs alone, at once.
/// When a batch fails, each read is tried again on its own, so one bad read fails alone.
pub struct GroupRead<J, R> {
    tx: tokio::sync::mpsc::Sender<Pending<J, R>>,
}

impl<J, R> Clone for GroupRead<J, R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<J: Send + Sync + 'static, R: Send + 'static> GroupRead<J, R> {
    /// Starts the reader task named `reader` in metrics (it ends when the last handle is
    /// dropped); `read` answers a batch, a result per job, in order.
    pub fn spawn(reader: &'static str, db: Db, max_batch: usize, read: BatchFn<J, R>) -> Self {
        metrics::describe_histogram!(GROUP_READ_SIZE, "Reads answered together in one go");
        let _ = metrics::histogram!(GROUP_READ_SIZE, "reader" => reader);
        Self {
            tx: spawn_group(Mode::Read(reader), db, max_batch, read),
        }
    }

    /// Reads `job` in the next batch.
    pub async fn read(&self, job: J) -> Result<R, sqlx::Error> {
        ask(&self.tx, job).await
    }
}

/// Hands `job` to a group's task and waits for its result.
async fn ask<J, R>(
    tx: &tokio::sync::mpsc::Sender<Pending<J, R>>,
    job: J,
) -> Result<R, sqlx::Error> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    tx.send(Pending { job, reply })
        .await
        .map_err(|_| sqlx::Error::PoolClosed)?;
    rx.await.map_err(|_| sqlx::Error::PoolClosed)?
}

/// What a group's task does with a batch: write it in a transaction, or read it.
#[derive(Clone, Copy)]
enum Mode {
    Write(&'static str),
    Read(&'static str),
}

impl Mode {
    fn record(self, jobs: usize) {
        match self {
            Mode::Write(w) => metrics::histogram!(GROUP_COMMIT_SIZE, "writer" => w),
            Mode::Read(r) => metrics::histogram!(GROUP_READ_SIZE, "reader" => r),
        }
        .record(jobs as f64);
    }
}

fn spawn_group<J: Send + Sync + 'static, R: Send + 'static>(
    mode: Mode,
    db: Db,
    max_batch: usize,
    apply: BatchFn<J, R>,
) -> tokio::sync::mpsc::Sender<Pending<J, R>> {
    let (tx, rx) = tokio::sync::mpsc::channel(max_batch.max(1) * 4);
    tokio::spawn(group_task(mode, db, rx, max_batch.max(1), apply));
    tx
}

async fn group_task<J, R>(
    mode: Mode,
    db: Db,
    mut rx: tokio::sync::mpsc::Receiver<Pending<J, R>>,
    max_batch: usize,
    apply: BatchFn<J, R>,
) {
    let mut batch: Vec<Pending<J, R>> = Vec::with_capacity(max_batch);
    // The task keeps one connection for itself: no pool hand-over (and the ping sqlx runs
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
            match apply_batch(mode, &db, &mut conn, &jobs, &apply).await {
                Ok(all) => all.into_iter().map(Ok).collect(),
                Err(e) if jobs.len() == 1 => vec![Err(e)],
                Err(_) => {
                    let mut each = Vec::with_capacity(jobs.len());
                    for job in &jobs {
                        each.push(
                            apply_batch(mode, &db, &mut conn, std::slice::from_ref(job), &apply)
                                .await
                                .map(|mut v| v.pop().expect("one result for one job")),
                        );
                    }
                    each
                }
            };
        mode.record(jobs.len());
        for (reply, r) in replies.into_iter().zip(results) {
            let _ = reply.send(r);
        }
    }
}

/// `batch` on the task's connection (taken from the pool when it has none), in a write
/// transaction for a writer. On a failure the connection goes back to the pool, which checks
/// it.
async fn apply_batch<J, R>(
    mode: Mode,
    db: &Db,
    conn: &mut Option<PoolConnection<sqlx::Any>>,
    batch: &[J],
    apply: &BatchFn<J, R>,
) -> Result<Vec<R>, sqlx::Error> {
    let result = match mode {
        Mode::Write(_) => apply_on(db, conn, batch, apply).await,
        Mode::Read(_) => read_on(db, conn, batch, apply).await,
    };
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

async fn read_on<J, R>(
    db: &Db,
    conn: &mut Option<PoolConnection<sqlx::Any>>,
    batch: &[J],
    read: &BatchFn<J, R>,
) -> Result<Vec<R>, sqlx::Error> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(db.pool.acquire().await?),
    };
    let out = read(c, batch).await?;
    debug_assert_eq!(out.len(), batch.len(), "one result per job");
    Ok(out)
}
