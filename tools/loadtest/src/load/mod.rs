//! Customers of the web chat API. Each customer follows its own conversation over server-sent
//! events (`?after=0`, so nothing is missed) and sends text messages — in a closed loop (the
//! next message when the reply arrived) or an open loop (one every interval, whatever the
//! replies do). Every accepted message must get exactly one answer: a `reply`, or a `notice`
//! (an apology when the model failed for good).

mod report;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use report::summarise;
use tokio::sync::mpsc;

/// How customers send.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// The next message as soon as the previous one is answered.
    Closed,
    /// One message every `interval` per customer (phases spread at random).
    Open { interval: Duration },
}

/// A load run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `http://host:port` of the gateway's public listener.
    pub base: String,
    pub customers: usize,
    pub mode: Mode,
    /// Sending stops after this long.
    pub duration: Duration,
    /// The first part of the run left out of throughput and latency (warming up).
    pub warmup: Duration,
    /// How long to wait for answers after sending stopped.
    pub drain: Duration,
    /// Subtracted from every latency: what the model itself took.
    pub model_delay: Duration,
    /// Closed loop: each customer stops after this many accepted messages.
    pub per_customer: Option<u64>,
    /// Counts accepted messages as they are accepted (for injecting faults mid-run).
    pub progress: Arc<AtomicU64>,
    /// Send some messages as voice notes.
    pub voice: Option<Voice>,
}

/// Voice notes among the messages: every `every`-th message of a customer is `note` (Ogg/Opus).
/// A voice note is answered by a "listening" notice and then the reply (or a second notice when
/// it could not be transcribed): two answers, not a duplicate.
#[derive(Debug, Clone)]
pub struct Voice {
    pub note: Arc<Vec<u8>>,
    pub every: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub sent: u64,
    pub accepted: u64,
    /// POSTs that were not accepted (an HTTP error, `rate_limited`, `duplicate`).
    pub refused: u64,
    pub replies: u64,
    pub notices: u64,
    /// Accepted messages with no answer at the end of the drain.
    pub lost: u64,
    /// Accepted messages answered by notices only, no reply (an apology, a failed
    /// transcription): with a healthy model these count as lost.
    pub notice_only: u64,
    /// Of the lost, how many have their answer in the conversation's history after all (the
    /// event stream did not bring it: a web chat fault, not a pipeline one).
    pub lost_but_in_history: u64,
    /// Answers beyond the first for one message.
    pub duplicated: u64,
    /// Answers per second in the steady window.
    pub throughput: f64,
    /// Offered messages per second in the steady window.
    pub offered: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The run in 5-second slices by when the answer arrived: (start of the slice in seconds,
    /// answers per second, p99 latency over the model in ms) — shows a rate that changes
    /// during the run.
    pub timeline: Vec<(u64, f64, f64)>,
    /// Every completed message: (id, sent at, answered after).
    #[serde(skip)]
    pub samples: Vec<(String, Instant, Duration)>,
}

impl Report {
    /// The longest wait for an answer counted from `t` (or from the POST, if later), and the
    /// message that waited.
    pub fn longest_wait_since(&self, t: Instant) -> (Duration, &str) {
        self.samples
            .iter()
            .map(|(id, sent, took)| {
                (
                    (*sent + *took).saturating_duration_since(t.max(*sent)),
                    id.as_str(),
                )
            })
            .max()
            .unwrap_or_default()
    }
}

impl Tally {
    fn is_done(&self, id: &str) -> bool {
        let voice = self.voice.contains(id);
        self.answers.get(id).is_some_and(|c| c.done(voice))
    }
}

struct Answer {
    in_reply_to: String,
    notice: bool,
    at: Instant,
}

/// Answers received for one message.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    replies: u32,
    notices: u32,
}

impl Counts {
    /// Answers a message of this kind gets when all goes well.
    fn expected(voice: bool) -> u32 {
        if voice { 2 } else { 1 }
    }

    /// Fully answered: a reply, or as many notices as it gets in all.
    fn done(self, voice: bool) -> bool {
        self.replies >= 1 || self.notices >= Self::expected(voice)
    }
}

#[derive(Default)]
struct Tally {
    /// Ids of the messages sent as voice notes.
    voice: std::collections::HashSet<String>,
    /// id → when it was sent (accepted messages only).
    sent_at: HashMap<String, Instant>,
    /// id → answers received.
    answers: HashMap<String, Counts>,
    notices: u64,
    replies: u64,
    /// (sent at, latency) of first answers.
    latencies: Vec<(Instant, Duration)>,
    /// Ids of `latencies`, in the same order.
    latency_ids: Vec<String>,
    sent: u64,
    refused: u64,
    /// First answers that arrived before their message's id was known.
    early: HashMap<String, Instant>,
}

/// Runs the load and reports.
pub async fn run(spec: Spec) -> anyhow::Result<Report> {
    let client = shared::http_client::builder()
        .pool_max_idle_per_host(spec.customers * 2)
        .build()?;
    let run_id: u32 = rand::random::<u32>() % 1_000_000;
    let start = Instant::now();
    let stop_at = start + spec.duration;
    let tallies: Vec<Arc<Mutex<Tally>>> = (0..spec.customers)
        .map(|_| Arc::new(Mutex::new(Tally::default())))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, tally) in tallies.iter().enumerate() {
        // A fresh number per customer and run: +1 555 RRRRRR CCCC.
        let contact = format!("1555{run_id:06}{i:04}");
        let (tx, rx) = mpsc::unbounded_channel();
        let listener = tokio::spawn(listen(
            client.clone(),
            spec.base.clone(),
            contact.clone(),
            tx,
        ));
        let customer = Customer {
            client: client.clone(),
            url: format!("{}/chat/api/{contact}/messages", spec.base),
            tally: tally.clone(),
            answers: rx,
            progress: spec.progress.clone(),
            voice: spec.voice.clone(),
        };
        let spec = spec.clone();
        tasks.spawn(async move {
            let r = customer.run(&spec, stop_at).await;
            listener.abort();
            r
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let mut report = summarise(&spec, start, &tallies);
    if report.lost > 0 {
        report.lost_but_in_history = lost_in_history(&client, &spec.base, run_id, &tallies).await;
    }
    Ok(report)
}

/// Looks up every lost message's answer in its conversation's listing.
async fn lost_in_history(
    client: &reqwest::Client,
    base: &str,
    run_id: u32,
    tallies: &[Arc<Mutex<Tally>>],
) -> u64 {
    let mut found = 0;
    for (i, t) in tallies.iter().enumerate() {
        let lost: Vec<String> = {
            let t = t.lock().expect("tally");
            t.sent_at
                .keys()
                .filter(|id| !t.is_done(id))
                .cloned()
                .collect()
        };
        if lost.is_empty() {
            continue;
        }
        let url = format!("{base}/chat/api/1555{run_id:06}{i:04}/messages");
        let Ok(r) = client.get(url).send().await else {
            continue;
        };
        let Ok(list) = r.json::<Vec<serde_json::Value>>().await else {
            continue;
        };
        for id in &lost {
            if let Some(m) = list.iter().find(|m| m["in_reply_to"] == id.as_str()) {
                found += 1;
                eprintln!(
                    "lost: {id} (customer {i}) is answered in the history by {} at {}, but no event stream brought it",
                    m["id"], m["at"]
                );
            } else {
                eprintln!("lost: {id} has no answer in the history of customer {i}");
            }
        }
    }
    found
}

struct Customer {
    client: reqwest::Client,
    url: String,
    tally: Arc<Mutex<Tally>>,
    answers: mpsc::UnboundedReceiver<Answer>,
    progress: Arc<AtomicU64>,
    voice: Option<Voice>,
}

impl Customer {
    async fn run(mut self, spec: &Spec, stop_at: Instant) -> anyhow::Result<()> {
        let mut seq = 0u64;
        match spec.mode {
            Mode::Closed => {
                let mut accepted = 0u64;
                while Instant::now() < stop_at && spec.per_customer.is_none_or(|n| accepted < n) {
                    seq += 1;
                    let Some(id) = self.send(seq).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    accepted += 1;
                    // Wait for this message's answer (others are tallied on the way).
                    let deadline = tokio::time::Instant::now() + spec.drain;
                    loop {
                        match tokio::time::timeout_at(deadline, self.answers.recv()).await {
                            Ok(Some(a)) => {
                                self.record(a);
                                if self.tally.lock().expect("tally").is_done(&id) {
                                    break;
                                }
                            }
                            _ => return Ok(()),
                        }
                    }
                }
            }
            Mode::Open { interval } => {
                let phase = interval.mul_f64(rand::random_range(0.0..1.0));
                let mut next = tokio::time::Instant::now() + phase;
                let mut sending = tokio::task::JoinSet::new();
                while Instant::now() < stop_at {
                    tokio::select! {
                        () = tokio::time::sleep_until(next) => {
                            next += interval;
                            seq += 1;
                            // Sent in the background: a slow POST must not slow the schedule.
                            let me = self.sender();
                            sending.spawn(async move { me.send(seq).await });
                        }
                        Some(_) = sending.join_next(), if !sending.is_empty() => {}
                        a = self.answers.recv() => match a {
                            Some(a) => self.record(a),
                            None => return Ok(()),
                        },
                    }
                }
                // Every POST has its answer (its id) before the drain counts what is missing.
                while !sending.is_empty() {
                    tokio::select! {
                        _ = sending.join_next() => {}
                        a = self.answers.recv() => match a {
                            Some(a) => self.record(a),
                            None => return Ok(()),
                        },
                    }
                }
            }
        }
        // Drain: wait for every accepted message's answer (or the drain deadline).
        let deadline = tokio::time::Instant::now() + spec.drain;
        while !self.all_answered() {
            match tokio::time::timeout_at(deadline, self.answers.recv()).await {
                Ok(Some(a)) => self.record(a),
                _ => break,
            }
        }
        // Late duplicates show up shortly after the first answer.
        let settle = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(a)) = tokio::time::timeout_at(settle, self.answers.recv()).await {
            self.record(a);
        }
        Ok(())
    }

    fn sender(&self) -> Sender {
        Sender {
            client: self.client.clone(),
            url: self.url.clone(),
            tally: self.tally.clone(),
            progress: self.progress.clone(),
            voice: self.voice.clone(),
        }
    }

    async fn send(&self, seq: u64) -> Option<String> {
        self.sender().send(seq).await
    }

    fn record(&mut self, a: Answer) {
        let Answer {
            in_reply_to,
            notice,
            at,
        } = a;
        let mut t = self.tally.lock().expect("tally");
        if notice {
            t.notices += 1;
        } else {
            t.replies += 1;
        }
        let sent = t.sent_at.get(&in_reply_to).copied();
        let was_done = t.is_done(&in_reply_to);
        let id = in_reply_to.clone();
        let c = t.answers.entry(in_reply_to).or_default();
        if notice {
            c.notices += 1;
        } else {
            c.replies += 1;
        }
        // Latency to the answer that completes the message (a voice note's reply).
        if !was_done && t.is_done(&id) {
            match sent {
                Some(sent) => {
                    t.latencies.push((sent, at.duration_since(sent)));
                    t.latency_ids.push(id);
                }
                // Answered before the POST's own answer was read (open loop): matched when
                // the sender records the id.
                None => {
                    t.early.insert(id, at);
                }
            }
        }
    }

    fn all_answered(&self) -> bool {
        let t = self.tally.lock().expect("tally");
        t.sent_at.keys().all(|id| t.is_done(id))
    }
}

#[derive(Clone)]
struct Sender {
    client: reqwest::Client,
    url: String,
    tally: Arc<Mutex<Tally>>,
    progress: Arc<AtomicU64>,
    voice: Option<Voice>,
}

impl Sender {
    /// POSTs one message; its id when accepted.
    async fn send(&self, seq: u64) -> Option<String> {
        let at = Instant::now();
        self.tally.lock().expect("tally").sent += 1;
        let voice = self
            .voice
            .as_ref()
            .filter(|v| seq.is_multiple_of(v.every.max(1)));
        let req = self.client.post(&self.url);
        let req = match voice {
            // multipart/form-data with the note as the `file` part, as the chat page sends it.
            Some(v) => {
                let boundary = "sbloadtestboundary7d1f";
                let mut body = format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"voice.ogg\"\r\nContent-Type: audio/ogg\r\n\r\n"
                )
                .into_bytes();
                body.extend_from_slice(&v.note);
                body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
                req.header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body)
            }
            None => req.json(&serde_json::json!({"text": format!("question number {seq}")})),
        };
        let res = req.send().await;
        let body: Option<serde_json::Value> = match res {
            Ok(r) if r.status().as_u16() == 202 => r.json().await.ok(),
            _ => None,
        };
        let id = body
            .filter(|b| b["status"] == "accepted")
            .and_then(|b| b["id"].as_str().map(str::to_owned));
        let mut t = self.tally.lock().expect("tally");
        match &id {
            Some(id) => {
                self.progress.fetch_add(1, Ordering::Relaxed);
                t.sent_at.insert(id.clone(), at);
                if voice.is_some() {
                    t.voice.insert(id.clone());
                }
                if let Some(answered) = t.early.remove(id) {
                    t.latencies.push((at, answered.duration_since(at)));
                    t.latency_ids.push(id.clone());
                }
            }
            None => t.refused += 1,
        }
        id
    }
}

/// Follows a contact's conversation and passes on every answer (`out` messages).
async fn listen(
    client: reqwest::Client,
    base: String,
    contact: String,
    tx: mpsc::UnboundedSender<Answer>,
) {
    let url = format!("{base}/chat/api/{contact}/events");
    let mut last: Option<String> = None;
    loop {
        let req = match &last {
            Some(id) => client.get(&url).header("last-event-id", id.as_str()),
            None => client.get(format!("{url}?after=0")),
        };
        // A refused stream (a limit, a restarting gateway) is asked for again shortly, never in
        // a tight loop.
        let mut resp = match req.send().await {
            Ok(r) if r.status().is_success() => r,
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut buf = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let mut data = None;
                for line in event.lines() {
                    if let Some(d) = line.strip_prefix("data:") {
                        data = Some(d.trim().to_owned());
                    } else if let Some(id) = line.strip_prefix("id:") {
                        last = Some(id.trim().to_owned());
                    }
                }
                let Some(v) = data.and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
                else {
                    continue;
                };
                if v["direction"] != "out" {
                    continue;
                }
                let Some(reply_to) = v["in_reply_to"].as_str() else {
                    continue;
                };
                let answer = Answer {
                    in_reply_to: reply_to.to_owned(),
                    notice: v["kind"] == "notice",
                    at: Instant::now(),
                };
                if tx.send(answer).is_err() {
                    return;
                }
            }
        }
    }
}
