//! What the clients measure: HDR histograms of latencies, counters, and the per-message
//! bookkeeping of fan-out (which recipient was last).
//!
//! Every latency is measured from a message's *scheduled* send time (open loop), carried
//! inside the message itself (its client transaction id), so a recipient needs no shared state
//! to know when the message should have left.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Nanoseconds since the start of the run: the time base of every schedule and latency.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Self { epoch: Instant::now() }
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn instant(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Largest latency a histogram holds (larger values are clamped): one hour, in microseconds.
const HIST_MAX_US: u64 = 3_600_000_000;
/// Shards, so that the two runtime threads rarely contend on one lock.
const SHARDS: usize = 8;

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, HIST_MAX_US, 3)?)
}

/// A latency histogram in microseconds, sharded by a caller-chosen hint.
pub struct Hist {
    shards: Vec<Mutex<Histogram<u64>>>,
    empty: Histogram<u64>,
}

impl Hist {
    pub fn new() -> anyhow::Result<Self> {
        let empty = new_histogram()?;
        Ok(Self { shards: (0..SHARDS).map(|_| Mutex::new(empty.clone())).collect(), empty })
    }

    /// Records a latency given in nanoseconds.
    pub fn record_ns(&self, hint: usize, ns: u64) {
        let us = (ns / 1_000).max(1);
        if let Ok(mut h) = self.shards[hint % SHARDS].lock() {
            h.saturating_record(us);
        }
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut out = self.empty.clone();
        for s in &self.shards {
            if let Ok(h) = s.lock() {
                let _ = out.add(&*h);
            }
        }
        out
    }

    pub fn reset(&self) {
        for s in &self.shards {
            if let Ok(mut h) = s.lock() {
                h.reset();
            }
        }
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary::of(&self.merged())
    }
}

/// Percentiles of one latency distribution, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// `[percentile, latency_ms]` pairs for plotting the distribution.
    pub distribution: Vec<[f64; 2]>,
}

/// Percentiles kept for plots: dense toward the tail, as HDR plots are.
const PLOT_PERCENTILES: &[f64] =
    &[0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.99, 99.999, 100.0];

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1_000.0;
        let q = |p: f64| ms(h.value_at_quantile(p));
        LatencySummary {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1_000.0,
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: ms(h.max()),
            distribution: PLOT_PERCENTILES
                .iter()
                .map(|p| [*p, if *p >= 100.0 { ms(h.max()) } else { q(p / 100.0) }])
                .collect(),
        }
    }

    /// `p50 1.2 ms  p99 3.4 ms  p99.9 5.6 ms  max 7.8 ms (n=...)`.
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".to_owned();
        }
        format!(
            "p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  (n={})",
            self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms, self.count
        )
    }
}

/// Per-message bookkeeping of a fan-out phase: how many members got message `k`, and the
/// latency of the last one.
pub struct FanoutTrack {
    pub phase: u32,
    empty: Histogram<u64>,
    /// Deliveries that make a message complete (every member, the sender's echo included).
    pub expected: u32,
    counts: Vec<AtomicU32>,
    last_ns: Vec<AtomicU64>,
    /// Messages every member has received.
    pub complete: AtomicU64,
    /// Time of the newest delivery (ns on the run clock).
    pub last_delivery_ns: AtomicU64,
    /// Signalled whenever a message becomes complete.
    pub progress: Notify,
}

impl FanoutTrack {
    pub fn new(phase: u32, expected: u32, messages: usize) -> anyhow::Result<Self> {
        Ok(Self {
            phase,
            empty: new_histogram()?,
            expected,
            counts: (0..messages).map(|_| AtomicU32::new(0)).collect(),
            last_ns: (0..messages).map(|_| AtomicU64::new(0)).collect(),
            complete: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            progress: Notify::new(),
        })
    }

    /// One member received message `key` with this latency at `now`.
    pub fn deliver(&self, key: u64, latency_ns: u64, now: u64) {
        let k = key as usize;
        let (Some(count), Some(last)) = (self.counts.get(k), self.last_ns.get(k)) else { return };
        last.fetch_max(latency_ns, Ordering::Relaxed);
        self.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
        if count.fetch_add(1, Ordering::AcqRel) + 1 == self.expected {
            self.complete.fetch_add(1, Ordering::AcqRel);
            self.progress.notify_one();
        }
    }

    pub fn is_complete(&self, key: u64) -> bool {
        self.counts.get(key as usize).is_some_and(|c| c.load(Ordering::Acquire) >= self.expected)
    }

    /// Latency of the last recipient of every complete message among the first `sent`, and
    /// the number of messages that are still incomplete.
    pub fn last_recipient(&self, sent: usize) -> (Histogram<u64>, u64) {
        let mut h = self.empty.clone();
        let mut incomplete = 0;
        for k in 0..sent.min(self.counts.len()) {
            if self.counts[k].load(Ordering::Acquire) >= self.expected {
                h.saturating_record((self.last_ns[k].load(Ordering::Relaxed) / 1_000).max(1));
            } else {
                incomplete += 1;
            }
        }
        (h, incomplete)
    }

    /// Total deliveries counted.
    pub fn deliveries(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed) as u64).sum()
    }
}

/// Everything the clients of one run record.
pub struct Recorder {
    pub clock: Clock,
    /// Messages carry the phase they were sent in; frames of other phases are stale.
    pub phase: AtomicU32,
    /// Latencies are recorded only while this is set (after warm-up, before drain).
    pub recording: AtomicBool,
    /// In fan-out the sender's own echo counts as a delivery; in 1:1 it does not.
    pub echo_is_delivery: AtomicBool,
    pub handshake: Hist,
    pub ack: Hist,
    pub delivery: Hist,
    /// Time from a message's scheduled send to the moment its client wrote it: the load
    /// generator's own lag, reported so that it is not mistaken for the server's.
    pub send_lag: Hist,
    pub ready: AtomicU64,
    pub failed: AtomicU64,
    /// Time (ns on the run clock) when the last client of a storm became ready.
    pub last_ready_ns: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub ack_errors: AtomicU64,
    pub delivered: AtomicU64,
    pub echoes: AtomicU64,
    pub stale: AtomicU64,
    pub unparsed: AtomicU64,
    /// Connections that ended while the run still needed them.
    pub dropped: AtomicU64,
    pub stopping: AtomicBool,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Signalled when every client of a storm is ready or failed.
    pub storm_done: Notify,
    pub storm_size: AtomicU64,
    /// Signalled on every ack (the max-rate fan-out driver waits on it).
    pub ack_progress: Notify,
    fanout: Mutex<Option<std::sync::Arc<FanoutTrack>>>,
    pub resume: ResumeCounters,
}

/// What resuming clients found.
#[derive(Default)]
pub struct ResumeCounters {
    pub complete: AtomicU64,
    pub events: AtomicU64,
    pub gaps: AtomicU64,
    pub duplicates: AtomicU64,
    /// Events of a conversation the client is not in: a leak.
    pub foreign: AtomicU64,
    pub out_of_order: AtomicU64,
    /// Time (ns on the run clock) when the last client became current.
    pub last_complete_ns: AtomicU64,
    pub done: Notify,
    pub expected_clients: AtomicU64,
}

impl Recorder {
    pub fn new(clock: Clock) -> anyhow::Result<Self> {
        Ok(Self {
            clock,
            phase: AtomicU32::new(0),
            recording: AtomicBool::new(false),
            echo_is_delivery: AtomicBool::new(false),
            handshake: Hist::new()?,
            ack: Hist::new()?,
            delivery: Hist::new()?,
            send_lag: Hist::new()?,
            ready: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_ready_ns: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            ack_errors: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            echoes: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            unparsed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            errors: Mutex::new(BTreeMap::new()),
            storm_done: Notify::new(),
            storm_size: AtomicU64::new(0),
            ack_progress: Notify::new(),
            fanout: Mutex::new(None),
            resume: ResumeCounters::default(),
        })
    }

    pub fn phase(&self) -> u32 {
        self.phase.load(Ordering::Acquire)
    }

    pub fn recording(&self) -> bool {
        self.recording.load(Ordering::Acquire)
    }

    /// Counts an error by a short code (`rate_limited`, `connect: refused`, `close 4008`).
    pub fn error(&self, code: &str) {
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(code.to_owned()).or_insert(0) += 1;
        }
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub fn set_fanout(&self, track: Option<std::sync::Arc<FanoutTrack>>) {
        if let Ok(mut f) = self.fanout.lock() {
            *f = track;
        }
    }

    fn fanout(&self) -> Option<std::sync::Arc<FanoutTrack>> {
        self.fanout.lock().ok().and_then(|f| f.clone())
    }

    /// A client finished its handshake (`ok`) or gave up.
    pub fn storm_result(&self, ok: bool, started_ns: u64, hint: usize) {
        if ok {
            let now = self.clock.now_ns();
            self.handshake.record_ns(hint, now.saturating_sub(started_ns));
            self.last_ready_ns.fetch_max(now, Ordering::AcqRel);
            self.ready.fetch_add(1, Ordering::AcqRel);
        } else {
            self.failed.fetch_add(1, Ordering::AcqRel);
        }
        let done = self.ready.load(Ordering::Acquire) + self.failed.load(Ordering::Acquire);
        if done >= self.storm_size.load(Ordering::Acquire) {
            self.storm_done.notify_one();
        }
    }

    /// A client wrote a message scheduled at `sched`.
    pub fn on_sent(&self, hint: usize, sched: u64) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if self.recording() {
            self.send_lag.record_ns(hint, self.clock.now_ns().saturating_sub(sched));
        }
    }

    /// The server acknowledged (durably, for medhub) message `tag`.
    pub fn on_ack(&self, hint: usize, tag: &Tag) {
        if tag.phase != self.phase() {
            self.stale.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.acked.fetch_add(1, Ordering::AcqRel);
        if self.recording() {
            self.ack.record_ns(hint, self.clock.now_ns().saturating_sub(tag.sched));
        }
        self.ack_progress.notify_one();
    }

    pub fn on_ack_error(&self, code: &str) {
        self.ack_errors.fetch_add(1, Ordering::AcqRel);
        self.error(code);
        self.ack_progress.notify_one();
    }

    /// Client `me` received message `tag`.
    pub fn on_delivery(&self, me: usize, tag: &Tag) {
        if tag.phase != self.phase() {
            self.stale.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = self.clock.now_ns();
        let latency = now.saturating_sub(tag.sched);
        let echo = tag.sender as usize == me;
        if echo {
            self.echoes.fetch_add(1, Ordering::Relaxed);
            if !self.echo_is_delivery.load(Ordering::Relaxed) {
                return;
            }
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if self.recording() {
            self.delivery.record_ns(me, latency);
        }
        if let Some(track) = self.fanout()
            && track.phase == tag.phase
        {
            track.deliver(tag.key, latency, now);
        }
    }

    /// A connection ended; `why` names how (close code or error).
    pub fn on_closed(&self, why: &str) {
        if !self.stopping.load(Ordering::Acquire) {
            self.dropped.fetch_add(1, Ordering::AcqRel);
            self.error(why);
        }
    }

    /// Zeroes the counters of the message phases (not the storm's).
    pub fn reset_messages(&self) {
        for c in [&self.sent, &self.acked, &self.ack_errors, &self.delivered, &self.echoes, &self.stale] {
            c.store(0, Ordering::Release);
        }
        self.ack.reset();
        self.delivery.reset();
        self.send_lag.reset();
    }

    pub fn counts(&self) -> Counts {
        Counts {
            sent: self.sent.load(Ordering::Acquire),
            acked: self.acked.load(Ordering::Acquire),
            ack_errors: self.ack_errors.load(Ordering::Acquire),
            delivered: self.delivered.load(Ordering::Acquire),
            echoes: self.echoes.load(Ordering::Acquire),
            stale: self.stale.load(Ordering::Acquire),
        }
    }
}

/// A snapshot of the message counters.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub acked: u64,
    pub ack_errors: u64,
    pub delivered: u64,
    pub echoes: u64,
    pub stale: u64,
}

/// What a benchmark message carries in its client transaction id: the phase it belongs to,
/// its key (index within the phase), its scheduled send time and its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub phase: u32,
    pub key: u64,
    pub sched: u64,
    pub sender: u32,
}

impl Tag {
    /// `phase.key.sched.sender`: at most 4 + 20 + 20 + 10 digits and 3 dots, within the 64
    /// bytes medhub allows for a client transaction id and a request id.
    pub fn encode(&self) -> String {
        format!("{}.{}.{}.{}", self.phase, self.key, self.sched, self.sender)
    }

    pub fn parse(s: &str) -> Option<Tag> {
        let mut it = s.split('.');
        let tag = Tag {
            phase: it.next()?.parse().ok()?,
            key: it.next()?.parse().ok()?,
            sched: it.next()?.parse().ok()?,
            sender: it.next()?.parse().ok()?,
        };
        if it.next().is_some() { None } else { Some(tag) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_fit_in_64_bytes() {
        let t = Tag { phase: 9999, key: u64::MAX, sched: u64::MAX, sender: u32::MAX };
        assert!(t.encode().len() <= 64, "{}", t.encode());
        assert_eq!(Tag::parse(&t.encode()), Some(t));
        assert_eq!(Tag::parse("1.2.3"), None);
        assert_eq!(Tag::parse("1.2.3.4.5"), None);
        assert_eq!(Tag::parse("r.1"), None);
    }

    #[test]
    fn summaries_report_percentiles_in_ms() {
        let h = Hist::new().unwrap();
        for i in 1..=1000u64 {
            h.record_ns(i as usize, i * 1_000_000);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.0, "{s:?}");
        assert_eq!(s.distribution.len(), PLOT_PERCENTILES.len());
    }

    #[test]
    fn fanout_tracks_the_last_recipient() {
        let t = FanoutTrack::new(1, 3, 2).unwrap();
        t.deliver(0, 1_000_000, 10);
        t.deliver(0, 5_000_000, 11);
        assert!(!t.is_complete(0));
        t.deliver(0, 2_000_000, 12);
        assert!(t.is_complete(0));
        t.deliver(1, 1_000_000, 13);
        let (h, incomplete) = t.last_recipient(2);
        assert_eq!((h.len(), incomplete), (1, 1));
        assert_eq!(h.max() / 1000, 5);
        assert_eq!(t.deliveries(), 4);
    }
}
