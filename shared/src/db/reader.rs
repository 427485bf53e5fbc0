//! Connections for reads kept between uses ([`Db::reader`]). The pool pings every connection
//! given back to it (on SQLite one more command to the connection's thread: a wake-up and a
//! context switch each way); a SQLite reader kept here goes back without one. A connection is
//! kept only when its user says its work finished ([`Reader::done`]): one whose query failed
//! or was cancelled is closed instead.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use sqlx::AnyConnection;
use sqlx::pool::PoolConnection;

use super::{Backend, Db};

/// Idle SQLite readers kept at most (more are closed when given back).
const KEEP: usize = 8;

/// The idle readers of a [`Db`].
pub(super) type Idle = Arc<Mutex<Vec<AnyConnection>>>;

/// A connection for reads: derefs to the connection (`query.fetch_all(&mut *r)`).
pub struct Reader {
    conn: Option<Conn>,
    idle: Idle,
    keep: bool,
}

enum Conn {
    /// A SQLite connection kept outside the pool.
    Kept(AnyConnection),
    /// PostgreSQL: the pool's own (its checks stay).
    Pooled(PoolConnection<sqlx::Any>),
}

impl Db {
    /// A connection for reads: on SQLite one kept from an earlier read when there is one
    /// (see the module docs), else the pool's.
    pub async fn reader(&self) -> Result<Reader, sqlx::Error> {
        let conn = match self.backend {
            Backend::Postgres => Conn::Pooled(self.pool.acquire().await?),
            Backend::Sqlite => {
                let kept = self.readers.lock().expect("readers").pop();
                match kept {
                    Some(c) => Conn::Kept(c),
                    None => Conn::Kept(self.pool.acquire().await?.detach()),
                }
            }
        };
        Ok(Reader {
            conn: Some(conn),
            idle: self.readers.clone(),
            keep: false,
        })
    }
}

impl Reader {
    /// Its reads finished well: it may serve the next one.
    pub fn done(mut self) {
        self.keep = true;
    }
}

impl Deref for Reader {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self.conn.as_ref().expect("connection") {
            Conn::Kept(c) => c,
            Conn::Pooled(c) => c,
        }
    }
}

impl DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self.conn.as_mut().expect("connection") {
            Conn::Kept(c) => c,
            Conn::Pooled(c) => c,
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(Conn::Kept(c)) = self.conn.take() {
            let mut idle = self.idle.lock().expect("readers");
            if self.keep && idle.len() < KEEP {
                idle.push(c);
            }
            // Otherwise dropped: sqlx closes it on its thread.
        }
    }
}
