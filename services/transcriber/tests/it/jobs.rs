//! Transcription jobs end to end: real Redis, real ffmpeg, transcriber processes, and the fake
//! Whisper server.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shared::bus::{Bus, Publish, Stream};
use shared::config::{BusConfig, Dsn, ServiceName};
use shared::proto::{
    Envelope, MediaRef, Payload, Transcript, TranscriptionJob, UsageRecord, transcript,
    usage_record,
};
use shared::testing::{KeyPrefix, ServiceEnv, ServiceProcess, voice_note};

use crate::BIN;
use shared::fake_whisper::{Answer, FakeWhisper};

/// A deployment: one prefix, the fake Whisper, and transcriber processes started on demand.
struct Rig {
    prefix: String,
    redis: String,
    bus: Bus,
    whisper: FakeWhisper,
    env: Vec<(String, String)>,
    dirs: Vec<ServiceEnv>,
    _keys: KeyPrefix,
}

impl Rig {
    fn new(whisper: FakeWhisper, extra: &[(&str, &str)]) -> Self {
        let prefix = shared::testing::unique_prefix();
        let redis = shared::testing::redis_url();
        let bus =
            Bus::with_parts(&Dsn::new(&redis), &prefix, BusConfig::default(), "test").unwrap();
        let mut env = vec![
            ("WHISPER_BASE_URL".to_owned(), whisper.base_url.clone()),
            ("WHISPER_API_KEY".to_owned(), "sk-test".to_owned()),
            ("LLM_RETRY_BASE_MS".to_owned(), "100".to_owned()),
            ("BUS_BLOCK_MS".to_owned(), "200".to_owned()),
        ];
        for (k, v) in extra {
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        Self {
            _keys: KeyPrefix::of(&redis, &prefix),
            prefix,
            redis,
            bus,
            whisper,
            env,
            dirs: Vec::new(),
        }
    }

    async fn spawn(&mut self) -> ServiceProcess {
        let mut senv = ServiceEnv::new(ServiceName::Transcriber, &self.redis, None);
        senv.use_prefix(&self.prefix);
        for (k, v) in &self.env {
            senv.env.insert(k.clone(), v.clone());
        }
        let p = senv.spawn_ready(BIN).await;
        self.dirs.push(senv);
        p
    }

    /// Stores audio the way the gateway does and publishes a job for it.
    async fn job(&self, message_id: &str, audio: &[u8]) -> String {
        let key = format!("{{{}}}:media:{}", self.prefix, blake3::hash(audio).to_hex());
        let mut c = self.bus.connection();
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(audio)
            .arg("EX")
            .arg(3600)
            .query_async(&mut c)
            .await
            .unwrap();
        self.publish_job(message_id, &key, audio.len() as u64).await;
        key
    }

    async fn publish_job(&self, message_id: &str, key: &str, size: u64) {
        let job = TranscriptionJob {
            message_id: message_id.to_owned(),
            media: Some(MediaRef {
                key: key.to_owned(),
                mime_type: "audio/ogg".into(),
                size_bytes: size,
                sha256: String::new(),
            }),
            contact_id: "contact-1".into(),
            deadline_at_ms: shared::ids::now_ms() + 60_000,
            language: String::new(),
            visitor: false,
        };
        self.bus
            .publisher()
            .publish(Publish::new(
                Stream::Transcribe,
                Envelope::new("test", Payload::TranscriptionJob(job)),
            ))
            .await
            .unwrap();
    }

    async fn events(&self, stream: Stream) -> Vec<Envelope> {
        shared::testing::read_envelopes(&self.bus, stream).await
    }

    async fn transcripts(&self) -> Vec<Transcript> {
        self.events(Stream::Transcripts)
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                Some(Payload::Transcript(t)) => Some(t),
                _ => None,
            })
            .collect()
    }

    async fn usage(&self) -> Vec<UsageRecord> {
        self.events(Stream::Usage)
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                Some(Payload::Usage(u)) => Some(u),
                _ => None,
            })
            .collect()
    }

    async fn wait_transcripts(&self, n: usize, timeout: Duration) -> Vec<Transcript> {
        let t = shared::testing::wait_for(timeout, async || {
            let t = self.transcripts().await;
            (t.len() >= n).then_some(t)
        })
        .await;
        match t {
            Some(t) => t,
            None => self.transcripts().await,
        }
    }

    async fn dead_letters(&self) -> Vec<shared::bus::DeadLetter> {
        self.bus.dlq().list(Stream::Transcribe, 100).await.unwrap()
    }
}

async fn metric(p: &ServiceProcess, name: &str) -> f64 {
    shared::testing::scrape_metric(&p.http, name).await
}

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_voice_note_becomes_a_transcript_and_a_usage_record() {
    let whisper = FakeWhisper::start(vec![Answer::Ok("Do you deliver on Sundays?")], None);
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = tmp.path().display().to_string();
    let mut rig = Rig::new(
        whisper,
        &[("WHISPER_LANGUAGE", "en"), ("TMPDIR", &tmp_path)],
    );
    let p = rig.spawn().await;
    rig.job("m1", &voice_note(3)).await;
    let t = rig.wait_transcripts(1, T).await;
    assert_eq!(t.len(), 1, "{}", p.log_text());
    assert_eq!(t[0].message_id, "m1");
    assert_eq!(t[0].outcome(), transcript::Outcome::Ok);
    assert_eq!(t[0].text, "Do you deliver on Sundays?");
    assert_eq!(t[0].language, "en");
    assert!(
        (t[0].audio_seconds - 3.0).abs() < 0.1,
        "{}",
        t[0].audio_seconds
    );
    let seen = rig.whisper.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].sample_rate, seen[0].channels), (16_000, 1));
    assert!((seen[0].seconds - 3.0).abs() < 0.1, "{}", seen[0].seconds);
    assert_eq!(seen[0].model, "whisper-1");
    assert_eq!(seen[0].language.as_deref(), Some("en"));
    assert!(rig.whisper.bad().is_empty(), "{:?}", rig.whisper.bad());
    // Usage is published in the same transaction as the transcript.
    let u = rig.usage().await;
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].operation(), usage_record::Operation::Transcription);
    assert_eq!(u[0].requested_model, "whisper-1");
    assert_eq!(u[0].message_id, "m1");
    assert_eq!(u[0].contact_id, "contact-1");
    assert!((u[0].audio_seconds - 3.0).abs() < 0.1);
    assert!(rig.dead_letters().await.is_empty());
    assert_eq!(
        metric(&p, "transcriber_jobs_total{outcome=\"ok\"}").await,
        1.0
    );
    // No temp file is left behind.
    let leftovers: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left in {tmp_path}: {leftovers:?}"
    );
}

#[tokio::test]
async fn corrupt_audio_and_missing_media_fail_clearly_and_are_dead_lettered() {
    let whisper = FakeWhisper::start(Vec::new(), None);
    let mut rig = Rig::new(whisper, &[]);
    let p = rig.spawn().await;
    let mut garbage = b"OggS".to_vec();
    garbage.extend(std::iter::repeat_n(0x5a, 4000));
    rig.job("bad", &garbage).await;
    rig.publish_job("gone", &format!("{{{}}}:media:expired", rig.prefix), 10)
        .await;
    let t = rig.wait_transcripts(2, T).await;
    assert_eq!(t.len(), 2, "{}", p.log_text());
    for t in &t {
        assert_eq!(t.outcome(), transcript::Outcome::Failed);
    }
    let by_id: HashMap<&str, &Transcript> = t.iter().map(|t| (t.message_id.as_str(), t)).collect();
    assert!(
        by_id["bad"].error.contains("ffmpeg"),
        "{}",
        by_id["bad"].error
    );
    assert!(by_id["gone"].error.contains("missing or expired"));
    // The failure transcript is published before the job is dead-lettered: wait for both.
    shared::testing::eventually("both dead letters", T, async || {
        (rig.dead_letters().await.len() == 2).then_some(())
    })
    .await;
    assert!(rig.whisper.seen().is_empty(), "nothing reached Whisper");
    assert!(rig.usage().await.is_empty());
}

#[tokio::test]
async fn a_job_failing_on_every_delivery_tells_the_customer_once_then_is_dead_lettered_with_its_cause()
 {
    // ffmpeg cannot be run: the machine failing, worth another delivery each time.
    let whisper = FakeWhisper::start(Vec::new(), None);
    let mut rig = Rig::new(
        whisper,
        &[
            ("FFMPEG_PATH", "/nonexistent/ffmpeg"),
            ("MAX_DELIVERIES", "2"),
            ("BUS_RETRY_BASE_MS", "20"),
        ],
    );
    let p = rig.spawn().await;
    rig.job("v1", &voice_note(1)).await;
    let dead = shared::testing::eventually("the dead letter", T, async || {
        let dead = rig.dead_letters().await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    // Told on the last delivery, not before: one failure transcript.
    let t = rig.transcripts().await;
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].outcome(), transcript::Outcome::Failed);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].kind, shared::bus::DeadLetterKind::Permanent);
    assert_eq!(dead[0].deliveries, 2);
    // The reason keeps the system's error under what failed.
    assert_eq!(
        dead[0].reason,
        "after 2 deliveries; the customer was told: cannot run ffmpeg: /nonexistent/ffmpeg: \
         No such file or directory (os error 2)",
    );
    assert_eq!(
        metric(&p, "transcriber_jobs_total{outcome=\"retry\"}").await,
        1.0
    );
    assert_eq!(
        metric(&p, "transcriber_jobs_total{outcome=\"failed\"}").await,
        1.0
    );
    assert!(rig.whisper.seen().is_empty());
}

#[tokio::test]
async fn a_voice_note_over_the_limit_gets_too_long_without_calling_whisper() {
    let whisper = FakeWhisper::start(Vec::new(), None);
    let mut rig = Rig::new(whisper, &[("MAX_AUDIO_SECONDS", "2")]);
    let _p = rig.spawn().await;
    rig.job("long", &voice_note(3)).await;
    let t = rig.wait_transcripts(1, T).await;
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].outcome(), transcript::Outcome::TooLong);
    assert!(t[0].audio_seconds > 2.0, "{}", t[0].audio_seconds);
    assert!(rig.whisper.seen().is_empty());
    assert!(
        rig.dead_letters().await.is_empty(),
        "too long is an answer, not an incident"
    );
}

/// `seconds` of silence in `codec` (an ffmpeg encoder) and `format`, made by encoding one
/// minute and repeating it without re-encoding (encoding hours of Opus takes minutes).
fn silence(seconds: u32, codec: &str, format: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let minute = dir.path().join(format!("minute.{format}"));
    let out = dir.path().join(format!("long.{format}"));
    let ffmpeg = |args: &[&str]| {
        let status = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "ffmpeg {args:?}");
    };
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=16000:cl=mono",
        "-t",
        "60",
        "-c:a",
        codec,
        minute.to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-stream_loop",
        &(seconds / 60 - 1).to_string(),
        "-i",
        minute.to_str().unwrap(),
        "-c",
        "copy",
        out.to_str().unwrap(),
    ]);
    std::fs::read(out).unwrap()
}

fn peak_rss_mb(p: &ServiceProcess) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

#[tokio::test]
async fn three_hours_of_compressed_silence_are_refused_at_the_limit_with_bounded_memory() {
    let whisper = FakeWhisper::start(Vec::new(), None);
    // The default limit (600 s).
    let mut rig = Rig::new(whisper, &[]);
    let p = rig.spawn().await;
    let opus = silence(3 * 3600, "libopus", "ogg");
    let flac = silence(3600, "flac", "flac");
    assert!(opus.len() < 4 << 20 && flac.len() < 8 << 20);
    let started = Instant::now();
    rig.job("opus", &opus).await;
    rig.job("flac", &flac).await;
    let t = rig.wait_transcripts(2, T).await;
    assert_eq!(t.len(), 2, "{}", p.log_text());
    for t in &t {
        assert_eq!(t.outcome(), transcript::Outcome::TooLong, "{t:?}");
        assert!(
            t.audio_seconds > 600.0 && t.audio_seconds < 700.0,
            "converting stops just past the limit: {}",
            t.audio_seconds
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(rig.whisper.seen().is_empty());
    // Before the limit, the whole three hours were converted: ~350 MB of WAV in memory.
    let peak = peak_rss_mb(&p);
    assert!(peak < 100.0, "peak RSS {peak:.0} MB");
}

#[tokio::test]
async fn playlists_and_other_non_audio_never_reach_ffmpeg_and_are_refused() {
    let whisper = FakeWhisper::start(Vec::new(), None);
    let mut rig = Rig::new(whisper, &[]);
    let p = rig.spawn().await;
    let secret = tempfile::NamedTempFile::new().unwrap();
    let path = secret.path().display().to_string();
    // An HLS playlist and an ffconcat script pointing at a local file, an SDP description
    // (it makes ffmpeg open network sockets), a PNG: each would be opened by a demuxer
    // ffmpeg probes when not told the format.
    rig.job(
        "m3u8",
        format!("#EXTM3U\n#EXTINF:10,\nfile://{path}\n#EXT-X-ENDLIST\n").as_bytes(),
    )
    .await;
    rig.job(
        "concat",
        format!("ffconcat version 1.0\nfile '{path}'\n").as_bytes(),
    )
    .await;
    rig.job(
        "sdp",
        b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 9 RTP/AVP 0\n",
    )
    .await;
    rig.job("png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").await;
    let t = rig.wait_transcripts(4, T).await;
    assert_eq!(t.len(), 4, "{}", p.log_text());
    for t in &t {
        assert_eq!(t.outcome(), transcript::Outcome::Failed, "{t:?}");
        assert!(
            t.error.contains("not a supported audio format"),
            "{}",
            t.error
        );
    }
    assert!(rig.whisper.seen().is_empty());
}

#[tokio::test]
async fn conversion_files_a_killed_transcriber_left_are_swept_at_start() {
    let whisper = FakeWhisper::start(Vec::new(), None);
    let tmp = tempfile::tempdir().unwrap();
    let stale = tmp.path().join("sb-transcriber-stale");
    let fresh = tmp.path().join("sb-transcriber-fresh");
    let other = tmp.path().join("someone-elses");
    for d in [&stale, &fresh, &other] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("in"), b"OggS").unwrap();
    }
    let old = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    for d in [&stale, &other] {
        std::fs::File::open(d).unwrap().set_modified(old).unwrap();
    }
    let tmp_path = tmp.path().display().to_string();
    let mut rig = Rig::new(whisper, &[("TMPDIR", &tmp_path)]);
    let p = rig.spawn().await;
    assert!(!stale.exists(), "{}", p.log_text());
    assert!(fresh.exists(), "a live replica's conversion is left alone");
    assert!(other.exists(), "only our own files are touched");
}

#[tokio::test]
async fn whisper_errors_are_retried_honouring_retry_after_then_succeed() {
    let whisper = FakeWhisper::start(
        vec![
            Answer::Status(500),
            Answer::RateLimited(1),
            Answer::Ok("third time lucky"),
        ],
        None,
    );
    let mut rig = Rig::new(whisper, &[]);
    let p = rig.spawn().await;
    rig.job("r1", &voice_note(1)).await;
    let t = rig.wait_transcripts(1, T).await;
    assert_eq!(t[0].text, "third time lucky", "{}", p.log_text());
    let seen = rig.whisper.seen();
    assert_eq!(seen.len(), 3);
    let waited = seen[2].at - seen[1].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After not honoured: {waited:?}"
    );
    assert_eq!(
        metric(&p, "llm_retries_total{upstream=\"whisper\"}").await,
        2.0
    );
    assert_eq!(rig.usage().await.len(), 1);
}

#[tokio::test]
async fn whisper_down_opens_the_circuit_and_every_customer_is_told() {
    let whisper = FakeWhisper::start(Vec::new(), Some(Answer::Status(503)));
    let mut rig = Rig::new(
        whisper,
        &[
            ("LLM_RETRIES", "1"),
            ("BREAKER_FAILURES", "3"),
            ("BREAKER_OPEN_SECS", "60"),
        ],
    );
    let p = rig.spawn().await;
    let audio = voice_note(1);
    // One at a time: how many calls reach Whisper before the circuit opens is then fixed
    // (jobs in flight together may all be calling when the third failure opens it).
    for i in 0..3 {
        rig.job(&format!("d{i}"), &audio).await;
        assert_eq!(rig.wait_transcripts(i + 1, T).await.len(), i + 1);
    }
    let t = rig.wait_transcripts(3, T).await;
    assert_eq!(t.len(), 3, "{}", p.log_text());
    assert!(t.iter().all(|t| t.outcome() == transcript::Outcome::Failed));
    // 2 attempts, then 1 (the circuit opens), then none: the third fails fast.
    assert_eq!(rig.whisper.seen().len(), 3);
    assert!(t[2].error.contains("circuit open"), "{}", t[2].error);
    assert_eq!(
        metric(&p, "llm_circuit_state{upstream=\"whisper\"}").await,
        1.0
    );
    assert_eq!(rig.dead_letters().await.len(), 3);
}

#[tokio::test]
async fn two_replicas_share_a_burst_and_each_job_is_done_once() {
    let whisper = FakeWhisper::start(
        Vec::new(),
        Some(Answer::Slow(Duration::from_millis(150), "ok")),
    );
    let mut rig = Rig::new(whisper, &[("BUS_CONCURRENCY", "4")]);
    let a = rig.spawn().await;
    let b = rig.spawn().await;
    let audio = voice_note(1);
    for i in 0..24 {
        rig.job(&format!("b{i:02}"), &audio).await;
    }
    let t = rig.wait_transcripts(24, Duration::from_secs(60)).await;
    let mut ids: Vec<&str> = t.iter().map(|t| t.message_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 24);
    assert_eq!(t.len(), 24, "a job was done twice");
    assert_eq!(rig.whisper.seen().len(), 24);
    let (na, nb) = (
        metric(&a, "transcriber_jobs_total{outcome=\"ok\"}").await,
        metric(&b, "transcriber_jobs_total{outcome=\"ok\"}").await,
    );
    assert_eq!(na + nb, 24.0);
    assert!(
        na > 0.0 && nb > 0.0,
        "one replica did everything: {na} / {nb}"
    );
}

#[tokio::test]
async fn a_job_of_a_killed_replica_is_finished_by_another_within_the_reclaim_time() {
    // The first request hangs (the replica is killed while waiting for it).
    let whisper = FakeWhisper::start(
        vec![Answer::Slow(Duration::from_secs(60), "never")],
        Some(Answer::Ok("recovered")),
    );
    let mut rig = Rig::new(whisper, &[("RECLAIM_IDLE_SECS", "2")]);
    let mut a = rig.spawn().await;
    let b = rig.spawn().await;
    rig.job("k1", &voice_note(1)).await;
    shared::testing::eventually("the job at Whisper", T, async || {
        (!rig.whisper.seen().is_empty()).then_some(())
    })
    .await;
    assert_eq!(rig.whisper.seen().len(), 1);
    // Whoever took it: kill it. If it was b, swap roles.
    let killed_at = Instant::now();
    let a_has_it = metric(&a, "bus_consumed_total{stream=\"transcribe\"}").await >= 1.0;
    let survivor = if a_has_it {
        a.kill9();
        b
    } else {
        let mut b = b;
        b.kill9();
        a
    };
    let t = rig.wait_transcripts(1, T).await;
    let took = killed_at.elapsed();
    assert_eq!(t.len(), 1, "{}", survivor.log_text());
    assert_eq!(t[0].text, "recovered");
    assert!(
        took <= Duration::from_secs(4) + Duration::from_millis(500),
        "took {took:?}"
    );
}

#[tokio::test]
async fn a_slow_whisper_answer_is_not_stolen_by_the_other_replica() {
    let whisper = FakeWhisper::start(
        vec![Answer::Slow(Duration::from_secs(4), "slow but sure")],
        None,
    );
    let mut rig = Rig::new(whisper, &[("RECLAIM_IDLE_SECS", "1")]);
    let _a = rig.spawn().await;
    let _b = rig.spawn().await;
    rig.job("s1", &voice_note(1)).await;
    let t = rig.wait_transcripts(1, T).await;
    // The point: past RECLAIM_IDLE_SECS (1 s) nobody took the job over and did it again
    // (nothing happens to wait for).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.transcripts().await.len(), 1);
    assert_eq!(t[0].text, "slow but sure");
    assert_eq!(
        rig.whisper.seen().len(),
        1,
        "the job was stolen and sent twice"
    );
}
