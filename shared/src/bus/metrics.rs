//! Names of the bus metrics, and their registration at zero.

use super::keys::Stream;

/// Entries handed to a handler, by stream.
pub const CONSUMED: &str = "bus_consumed_total";
/// Entries acknowledged.
pub const ACKED: &str = "bus_acked_total";
/// Handler failures.
pub const FAILED: &str = "bus_failed_total";
/// Entries moved to the dead letters, by kind.
pub const DEAD_LETTERED: &str = "bus_dead_lettered_total";
/// Entries taken over from an idle consumer.
pub const RECLAIMED: &str = "bus_reclaimed_total";
/// Handler panics (caught; the entry is retried).
pub const PANICS: &str = "bus_handler_panics_total";
/// Retries because a dependency was busy (not counted as deliveries).
pub const BUSY: &str = "bus_busy_retries_total";
/// Consumers found stuck (the process exits).
pub const STUCK: &str = "bus_consumer_stuck_total";
/// Events published, by stream.
pub const PUBLISHED: &str = "bus_published_total";
/// Handler time.
pub const HANDLE_SECONDS: &str = "bus_handle_seconds";
/// Entries pending (read, not acknowledged).
pub const PENDING: &str = "bus_pending";
/// Entries in each stream.
pub const STREAM_LENGTH: &str = "bus_stream_length";
/// Entries not yet read by the group.
pub const CONSUMER_LAG: &str = "bus_consumer_lag";
/// Dead letters of each stream.
pub const DLQ_LENGTH: &str = "bus_dlq_length";
/// 1 while Redis answers.
pub const REDIS_UP: &str = "bus_redis_up";
/// Redis's used memory.
pub const REDIS_USED_MEMORY: &str = "bus_redis_used_memory_bytes";
/// Redis's `maxmemory` (0: unlimited).
pub const REDIS_MAXMEMORY: &str = "bus_redis_maxmemory_bytes";

/// Registers every bus metric for the streams this process consumes and publishes, at zero.
pub fn register(consumes: &[Stream], publishes: &[Stream]) {
    metrics::describe_counter!(CONSUMED, "Entries taken for handling (read or reclaimed)");
    metrics::describe_counter!(ACKED, "Entries acknowledged after their handler succeeded");
    metrics::describe_counter!(FAILED, "Handler failures (each attempt)");
    metrics::describe_counter!(DEAD_LETTERED, "Entries moved to the dead-letter stream");
    metrics::describe_counter!(RECLAIMED, "Entries taken over from idle consumers");
    metrics::describe_counter!(PANICS, "Handler panics (each retried like a failure)");
    metrics::describe_counter!(
        BUSY,
        "Attempts put back because a dependency was busy (backpressure, not failures)"
    );
    metrics::describe_counter!(
        STUCK,
        "Consumers found stuck (entries held, none finished); the process then exits"
    );
    metrics::describe_counter!(PUBLISHED, "Events published");
    metrics::describe_histogram!(HANDLE_SECONDS, metrics::Unit::Seconds, "Handler latency");

    metrics::describe_gauge!(
        PENDING,
        "Entries delivered to the group and not yet acknowledged"
    );
    metrics::describe_gauge!(
        STREAM_LENGTH,
        "Entries in the stream (acknowledged ones until trimmed)"
    );
    metrics::describe_gauge!(CONSUMER_LAG, "Entries not yet delivered to the group");
    metrics::describe_gauge!(DLQ_LENGTH, "Entries in the dead-letter stream");
    metrics::describe_gauge!(REDIS_UP, "1 when the last Redis command succeeded");
    metrics::describe_gauge!(REDIS_USED_MEMORY, "Redis used_memory (INFO memory)");
    metrics::describe_gauge!(REDIS_MAXMEMORY, "Redis maxmemory (0 = no limit)");
    for s in consumes {
        let n = s.name();
        metrics::counter!(CONSUMED, "stream" => n).absolute(0);
        metrics::counter!(ACKED, "stream" => n).absolute(0);
        metrics::counter!(FAILED, "stream" => n).absolute(0);
        metrics::counter!(RECLAIMED, "stream" => n).absolute(0);
        metrics::counter!(PANICS, "stream" => n).absolute(0);
        metrics::counter!(BUSY, "stream" => n).absolute(0);
        metrics::counter!(STUCK, "stream" => n).absolute(0);
        for r in super::DeadLetterKind::ALL {
            metrics::counter!(DEAD_LETTERED, "stream" => n, "reason" => r.label()).absolute(0);
        }
        let _ = metrics::histogram!(HANDLE_SECONDS, "stream" => n);
        metrics::gauge!(PENDING, "stream" => n).set(0.0);
        metrics::gauge!(STREAM_LENGTH, "stream" => n).set(0.0);
        metrics::gauge!(CONSUMER_LAG, "stream" => n).set(0.0);
        metrics::gauge!(DLQ_LENGTH, "stream" => n).set(0.0);
    }
    for s in publishes {
        metrics::counter!(PUBLISHED, "stream" => s.name()).absolute(0);
    }
    metrics::gauge!(REDIS_UP).set(0.0);
    metrics::gauge!(REDIS_USED_MEMORY).set(0.0);
    metrics::gauge!(REDIS_MAXMEMORY).set(0.0);
}
