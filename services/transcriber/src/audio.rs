//! Voice notes to 16 kHz mono WAV with ffmpeg (a child process with a timeout, its stderr kept
//! for the error, its temp files removed whatever happens).

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

/// What Whisper works at internally; converting first keeps uploads small (32 KB/s).
const SAMPLE_RATE: u32 = 16_000;

/// A converted voice note.
#[derive(Debug)]
pub struct Wav {
    pub bytes: Vec<u8>,
    pub seconds: f64,
    pub took: Duration,
}

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The bytes are not audio ffmpeg can decode (not retried).
    #[error("ffmpeg could not decode the audio: {0}")]
    Corrupt(String),
    #[error("ffmpeg took longer than {0} s")]
    Timeout(u64),
    /// ffmpeg missing or the machine failing (retried).
    #[error("cannot run ffmpeg: {0}")]
    Io(String),
}

/// Converts `input` (OGG/Opus, MP3, M4A/AAC, WAV, WebM…) to 16 kHz mono 16-bit WAV.
pub async fn to_wav(ffmpeg: &str, input: &[u8], timeout: Duration) -> Result<Wav, AudioError> {
    let started = Instant::now();
    // Removed on drop, also when this future is cancelled or panics.
    let dir = tempfile::Builder::new()
        .prefix("sb-transcriber-")
        .tempdir()
        .map_err(|e| AudioError::Io(format!("temp dir: {e}")))?;
    let src = dir.path().join("in");
    let dst = dir.path().join("out.wav");
    tokio::fs::write(&src, input)
        .await
        .map_err(|e| AudioError::Io(format!("write input: {e}")))?;
    let mut child = tokio::process::Command::new(ffmpeg)
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(&src)
        .args(["-vn", "-ac", "1", "-ar", &SAMPLE_RATE.to_string()])
        .args([
            "-c:a",
            "pcm_s16le",
            "-map_metadata",
            "-1",
            "-fflags",
            "+bitexact",
            "-f",
            "wav",
        ])
        .arg(&dst)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| AudioError::Io(format!("{ffmpeg}: {e}")))?;
    let mut stderr = child.stderr.take().expect("stderr piped");
    let run = async {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err).await;
        let status = child.wait().await;
        (status, err)
    };
    let Ok((status, err)) = tokio::time::timeout(timeout, run).await else {
        return Err(AudioError::Timeout(timeout.as_secs()));
    };
    let status = status.map_err(|e| AudioError::Io(e.to_string()))?;
    if !status.success() {
        let tail: String = err
            .trim()
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(AudioError::Corrupt(if tail.is_empty() {
            format!("exit status {status}")
        } else {
            tail
        }));
    }
    let bytes = tokio::fs::read(&dst)
        .await
        .map_err(|e| AudioError::Io(format!("read output: {e}")))?;
    let seconds = wav_seconds(&bytes)
        .ok_or_else(|| AudioError::Corrupt("no audio in the file".to_owned()))?;
    Ok(Wav {
        bytes,
        seconds,
        took: started.elapsed(),
    })
}

/// Duration of a PCM WAV from its `data` chunk and format.
pub fn wav_seconds(wav: &[u8]) -> Option<f64> {
    if wav.len() < 12 || &wav[0..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        return None;
    }
    let mut pos = 12;
    let mut byte_rate = None;
    while pos + 8 <= wav.len() {
        let id = &wav[pos..pos + 4];
        let size = u32::from_le_bytes(wav[pos + 4..pos + 8].try_into().ok()?) as usize;
        let body = pos + 8;
        if id == b"fmt " && body + 12 <= wav.len() {
            byte_rate = Some(u32::from_le_bytes(
                wav[body + 8..body + 12].try_into().ok()?,
            ));
        }
        if id == b"data" {
            let len = size.min(wav.len() - body);
            let rate = byte_rate.filter(|r| *r > 0)?;
            return (len > 0).then(|| len as f64 / f64::from(rate));
        }
        pos = body + size + (size & 1);
    }
    None
}
