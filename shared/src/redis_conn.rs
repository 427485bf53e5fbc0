//! Redis connections: one shared auto-reconnecting manager for commands, and dedicated
//! connections without a response timeout for blocking reads (redis-rs's default 500 ms
//! response timeout would cut every `BLOCK` short, and a `BLOCK` on the shared connection
//! would stall every command queued behind it).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client};

use crate::config::Dsn;

/// A Redis client for `url`.
pub fn client(url: &Dsn) -> redis::RedisResult<Client> {
    Client::open(url.expose())
}

/// The shared, auto-reconnecting connection. Lazy: the service starts (and reports not ready)
/// while Redis is down, and reconnects with capped exponential backoff.
pub fn manager(client: &Client) -> redis::RedisResult<ConnectionManager> {
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(3);
    ConnectionManager::new_lazy_with_config(client.clone(), cfg)
}

/// A dedicated connection for blocking reads: no response timeout.
pub async fn blocking_connection(client: &Client) -> redis::RedisResult<MultiplexedConnection> {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}

/// Deletes every key under the hash tag `{prefix}` with `SCAN` + `DEL` (never `FLUSH*`). For
/// tests and benchmarks that run under a prefix of their own; services never call it.
pub async fn delete_prefix(url: &str, prefix: &str) -> redis::RedisResult<u64> {
    let client = Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let pattern = format!("{{{prefix}}}*");
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            deleted += redis::cmd("DEL")
                .arg(&keys)
                .query_async::<u64>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// A random 32-byte secret (64 hex digits) kept in Redis under `key`: created by the first
/// caller (`SET NX`), read by every other service and replica, so they all agree.
pub async fn shared_secret<C>(conn: &mut C, key: &str) -> redis::RedisResult<String>
where
    C: redis::aio::ConnectionLike + Send,
{
    let fresh = hex::encode(rand::random::<[u8; 32]>());
    let (kept,): (String,) = redis::pipe()
        .cmd("SET")
        .arg(key)
        .arg(&fresh)
        .arg("NX")
        .ignore()
        .cmd("GET")
        .arg(key)
        .query_async(conn)
        .await?;
    Ok(kept)
}
