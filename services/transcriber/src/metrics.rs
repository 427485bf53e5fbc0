//! The transcriber's metrics, registered at zero at startup.

/// Jobs by outcome.
pub const JOBS: &str = "transcriber_jobs_total";
/// Time spent converting with ffmpeg.
pub const FFMPEG_SECONDS: &str = "transcriber_ffmpeg_seconds";
/// Whisper call latency.
pub const WHISPER_SECONDS: &str = "transcriber_whisper_latency_seconds";
/// Length of the voice notes transcribed.
pub const AUDIO_SECONDS: &str = "transcriber_audio_seconds";

/// Describes every metric and registers it at zero.
pub fn register() {
    metrics::describe_counter!(
        JOBS,
        "Transcription jobs by outcome (ok, too_long, visitor_budget, failed, retry)"
    );
    metrics::describe_histogram!(FFMPEG_SECONDS, "Seconds one ffmpeg conversion took");
    metrics::describe_histogram!(
        WHISPER_SECONDS,
        "Seconds one Whisper transcription took, retries included"
    );
    metrics::describe_histogram!(AUDIO_SECONDS, "Seconds of audio per voice note");
    for h in [FFMPEG_SECONDS, WHISPER_SECONDS, AUDIO_SECONDS] {
        let _ = metrics::histogram!(h);
    }
    for outcome in ["ok", "too_long", "visitor_budget", "failed", "retry"] {
        metrics::counter!(JOBS, "outcome" => outcome).absolute(0);
    }
}
