//! Contracts and plumbing shared by every Switchboard service: the protobuf events, the Redis
//! Streams bus, typed configuration helpers, telemetry (logs, traces, metrics), the internal
//! health/metrics listener, the database pool and migrations, and shutdown handling.
//!
//! No one service's business logic lives here.

// Every public item says what it is for; the lint keeps it so.
#![warn(missing_docs)]

pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod db;
pub mod events;
pub mod files;
pub mod http;
pub mod http_client;
pub mod ids;
pub mod lang;
pub mod liveness;
#[cfg(feature = "llm")]
pub mod llm;
pub mod metrics;
pub mod net;
pub mod phone;
pub mod proto;
pub mod redact;
pub mod redis_conn;
pub mod service;
pub mod shutdown;
pub mod tasks;
pub mod telemetry;
pub mod usage;
pub mod webhook;

/// The crate version, for `build_info` and the envelope's `producer`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(feature = "test-utils")]
pub mod fake_chat;
#[cfg(feature = "test-utils")]
pub mod fake_whisper;
#[cfg(feature = "test-utils")]
pub mod testing;
