//! Voice notes to 16 kHz mono WAV with ffmpeg (a child process with a timeout, its stderr kept
//! for the error, its temp files removed whatever happens).

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

/// What Whisper works at internally; converting first keeps uploads small (32 KB/s).
const SAMPLE_RATE: u32 = 16_000;

/// 16-bit mono at [`SAMPLE_RATE`].
const BYTES_PER_SECOND: u32 = SAMPLE_RATE * 2;

/// The name every conversion's temporary directory starts with.
pub const TEMP_PREFIX: &str = "sb-transcriber-";

/// Removes conversion directories left in the temp directory by a process that was killed
/// (their own clean-up never ran), once older than `older_than` — a live replica's current
/// conversion is younger than its ffmpeg timeout. Returns how many were removed.
pub fn sweep_stale(older_than: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            && e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > older_than));
        if stale && std::fs::remove_dir_all(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A converted voice note.
#[derive(Debug)]
pub struct Wav {
    /// 16 kHz mono WAV, as Whisper takes it.
    pub bytes: Vec<u8>,
    /// The audio's length.
    pub seconds: f64,
    /// How long the conversion took.
    pub took: Duration,
}

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The bytes are not audio ffmpeg can decode (not retried).
    #[error("ffmpeg could not decode the audio: {0}")]
    Corrupt(String),
    /// ffmpeg ran past `FFMPEG_TIMEOUT_SECS` and was killed (retried).
    #[error("ffmpeg took longer than {0} s")]
    Timeout(u64),
    /// Longer than `max_seconds`: `seconds` long, or at least that when conversion stopped
    /// at the limit.
    #[error("{seconds:.0} s of audio is over the limit")]
    TooLong {
        /// How long the audio is (at least).
        seconds: f64,
    },
    /// Not one of the audio formats accepted (told from the first bytes, never from what the
    /// sender claims): playlists, concat scripts, images and the like never reach ffmpeg's
    /// other demuxers.
    #[error("not a supported audio format (OGG/Opus, MP3, M4A/AAC, WAV, WebM, FLAC, AMR)")]
    Unsupported,
    /// ffmpeg missing or the machine failing (retried): `what` failed, `source` says why.
    #[error("cannot run ffmpeg: {what}")]
    Io {
        /// What was being done (`temp dir`, `write input`, the ffmpeg path…).
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// [`AudioError::Io`] for a failure of `what`, the system's error kept as its source.
fn io(what: &str) -> impl FnOnce(std::io::Error) -> AudioError + '_ {
    move |source| AudioError::Io {
        what: what.to_owned(),
        source,
    }
}

/// The ffmpeg demuxer for `input`, from its first bytes; `None` when it is not an audio
/// container we accept.
pub fn demuxer(input: &[u8]) -> Option<&'static str> {
    let at = |i: usize, magic: &[u8]| input.get(i..i + magic.len()) == Some(magic);
    if at(0, b"OggS") {
        Some("ogg")
    } else if at(0, b"RIFF") && at(8, b"WAVE") {
        Some("wav")
    } else if at(0, b"fLaC") {
        Some("flac")
    } else if at(4, b"ftyp") {
        Some("mov")
    } else if at(0, &[0x1a, 0x45, 0xdf, 0xa3]) {
        Some("matroska")
    } else if at(0, b"#!AMR") {
        Some("amr")
    } else if at(0, b"ID3") {
        Some("mp3")
    } else if input.first() == Some(&0xff) {
        // ADTS (AAC) or an MPEG audio frame (MP3), by the sync word's layer bits.
        match input.get(1) {
            Some(b) if b & 0xf6 == 0xf0 => Some("aac"),
            Some(b) if b & 0xe0 == 0xe0 => Some("mp3"),
            _ => None,
        }
    } else {
        None
    }
}

/// Converts `input` (OGG/Opus, MP3, M4A/AAC, WAV, WebM, FLAC, AMR) to 16 kHz mono 16-bit WAV.
/// At most `max_seconds` of audio are accepted: ffmpeg stops one second past it (`-t`, and
/// `-fs` on the output's size), so a long or highly compressed input (three hours of silence
/// fit in 3 MB) costs a bounded time and memory, and the output is read only when within it.
/// ffmpeg reads only the local file (`-protocol_whitelist file`) with the demuxer the first
/// bytes name (`-f`).
pub async fn to_wav(
    ffmpeg: &str,
    input: &[u8],
    max_seconds: f64,
    timeout: Duration,
) -> Result<Wav, AudioError> {
    let started = Instant::now();
    let format = demuxer(input).ok_or(AudioError::Unsupported)?;
    // Removed on drop, also when this future is cancelled or panics.
    let dir = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempdir()
        .map_err(io("temp dir"))?;
    let src = dir.path().join("in");
    let dst = dir.path().join("out.wav");
    tokio::fs::write(&src, input)
        .await
        .map_err(io("write input"))?;
    let cap_seconds = max_seconds.ceil() as u64 + 1;
    let cap_bytes = cap_seconds * u64::from(BYTES_PER_SECOND) + 4096;
    let child = tokio::process::Command::new(ffmpeg)
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(["-threads", "1", "-protocol_whitelist", "file", "-f", format])
        .arg("-i")
        .arg(&src)
        .args(["-vn", "-ac", "1", "-ar", &SAMPLE_RATE.to_string()])
        .args([
            "-c:a",
            "pcm_s16le",
            "-map_metadata",
            "-1",
            "-fflags",
            "+bitexact",
            "-t",
            &cap_seconds.to_string(),
            "-fs",
            &cap_bytes.to_string(),
            "-f",
            "wav",
        ])
        .arg(&dst)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(io(ffmpeg))?;
    finish(child, timeout).await?;
    let len = tokio::fs::metadata(&dst)
        .await
        .map_err(io("read output"))?
        .len();
    let approx_seconds = len.saturating_sub(44) as f64 / f64::from(BYTES_PER_SECOND);
    if approx_seconds > max_seconds + 0.5 {
        return Err(AudioError::TooLong {
            seconds: approx_seconds,
        });
    }
    let bytes = tokio::fs::read(&dst).await.map_err(io("read output"))?;
    let seconds = wav_seconds(&bytes)
        .ok_or_else(|| AudioError::Corrupt("no audio in the file".to_owned()))?;
    if seconds > max_seconds {
        return Err(AudioError::TooLong { seconds });
    }
    Ok(Wav {
        bytes,
        seconds,
        took: started.elapsed(),
    })
}

/// Waits for ffmpeg (at most `timeout`); its failure is the audio's fault, with the end of
/// what it said.
async fn finish(mut child: tokio::process::Child, timeout: Duration) -> Result<(), AudioError> {
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
    let status = status.map_err(io("wait for ffmpeg"))?;
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
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ffmpeg_missing_is_an_io_error_that_keeps_the_system_error_as_its_source() {
        let e = to_wav(
            "/nonexistent/ffmpeg",
            b"OggS\0\x02",
            60.0,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "cannot run ffmpeg: /nonexistent/ffmpeg");
        let source = std::error::Error::source(&e).expect("the system's error");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn the_demuxer_comes_from_the_first_bytes_and_anything_else_is_refused() {
        let cases: [(&[u8], Option<&str>); 14] = [
            (b"OggS\0\x02", Some("ogg")),
            (b"RIFF\x24\0\0\0WAVEfmt ", Some("wav")),
            (b"fLaC\0\0\0\x22", Some("flac")),
            (b"\0\0\0\x20ftypM4A ", Some("mov")),
            (&[0x1a, 0x45, 0xdf, 0xa3, 0x9f], Some("matroska")),
            (b"#!AMR\n", Some("amr")),
            (b"ID3\x04\0", Some("mp3")),
            (&[0xff, 0xfb, 0x90, 0x64], Some("mp3")),
            (&[0xff, 0xf1, 0x50, 0x80], Some("aac")),
            (b"#EXTM3U\n", None),
            (b"ffconcat version 1.0\n", None),
            (b"\x89PNG\r\n\x1a\n", None),
            (b"RIFF\x24\0\0\0AVI LIST", None),
            (b"", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(demuxer(bytes), want, "{bytes:?}");
        }
    }
}
