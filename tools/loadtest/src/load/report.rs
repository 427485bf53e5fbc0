//! The figures of a run: percentiles, the summary over the steady window, the timeline.

use super::*;

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(super) fn summarise(spec: &Spec, start: Instant, tallies: &[Arc<Mutex<Tally>>]) -> Report {
    let mut r = Report::default();
    let steady_from = start + spec.warmup;
    let steady_to = start + spec.duration;
    let window = spec
        .duration
        .saturating_sub(spec.warmup)
        .as_secs_f64()
        .max(0.001);
    let mut lat = Vec::new();
    let mut answered_in_window = 0u64;
    let mut offered_in_window = 0u64;
    for t in tallies {
        let t = t.lock().expect("tally");
        r.sent += t.sent;
        r.refused += t.refused;
        r.accepted += t.sent_at.len() as u64;
        r.replies += t.replies;
        r.notices += t.notices;
        for id in t.sent_at.keys() {
            let voice = t.voice.contains(id);
            let c = t.answers.get(id).copied().unwrap_or_default();
            if !c.done(voice) {
                r.lost += 1;
            } else if c.replies == 0 {
                r.notice_only += 1;
            }
            r.duplicated +=
                u64::from((c.replies + c.notices).saturating_sub(Counts::expected(voice)));
        }
        for at in t.sent_at.values() {
            if *at >= steady_from && *at < steady_to {
                offered_in_window += 1;
            }
        }
        r.samples.extend(
            t.latency_ids
                .iter()
                .cloned()
                .zip(t.latencies.iter().copied())
                .map(|(id, (sent, took))| (id, sent, took)),
        );
        for (sent, d) in &t.latencies {
            let answered = *sent + *d;
            if answered >= steady_from && answered < steady_to {
                answered_in_window += 1;
            }
            if *sent >= steady_from && *sent < steady_to {
                lat.push(d.saturating_sub(spec.model_delay).as_secs_f64() * 1000.0);
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    r.throughput = answered_in_window as f64 / window;
    r.offered = offered_in_window as f64 / window;
    r.p50_ms = percentile(&lat, 50.0);
    r.p95_ms = percentile(&lat, 95.0);
    r.p99_ms = percentile(&lat, 99.0);
    r.max_ms = lat.last().copied().unwrap_or(0.0);
    r.timeline = timeline(spec, start, &r.samples);
    r
}

/// Answers per second and p99 latency per 5-second slice of the run (until its end).
pub(super) fn timeline(
    spec: &Spec,
    start: Instant,
    samples: &[(String, Instant, Duration)],
) -> Vec<(u64, f64, f64)> {
    const SLICE: u64 = 5;
    let slices = spec.duration.as_secs().div_ceil(SLICE) as usize;
    let mut by_slice: Vec<Vec<f64>> = vec![Vec::new(); slices];
    for (_, sent, took) in samples {
        let at = (*sent + *took).saturating_duration_since(start).as_secs() / SLICE;
        if let Some(v) = by_slice.get_mut(at as usize) {
            v.push(took.saturating_sub(spec.model_delay).as_secs_f64() * 1000.0);
        }
    }
    by_slice
        .into_iter()
        .enumerate()
        .map(|(i, mut v)| {
            v.sort_by(f64::total_cmp);
            (
                i as u64 * SLICE,
                v.len() as f64 / SLICE as f64,
                percentile(&v, 99.0),
            )
        })
        .collect()
}
