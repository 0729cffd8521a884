//! The result of one run: every figure, the exact command line, the machine, and the
//! problems found. Written as JSON (`--out`) and summarised for people on standard output.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::medhub::SeedReport;
use crate::procfs::{ListenCounters, Machine};
use crate::stats::{Counts, LatencySummary};

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: String,
    pub scenario: String,
    pub target: String,
    /// `sqlite` or `postgres` for medhub; `memory` for Socket.IO; `sqlite` for Synapse.
    pub backend: String,
    /// The exact command line, argument by argument, and as one shell-quoted string.
    pub command_line: Vec<String>,
    pub command: String,
    /// The repository's commit when the run started (`-dirty`: with uncommitted changes).
    pub git_revision: Option<String>,
    pub started_unix_s: u64,
    pub wall_s: f64,
    pub machine: Machine,
    pub params: serde_json::Value,
    pub server: ServerInfo,
    pub seed: Option<SeedReport>,
    pub storm: Option<StormReport>,
    pub idle: Option<IdleReport>,
    pub direct: Option<DirectReport>,
    pub fanout: Vec<FanoutReport>,
    pub throughput: Option<ThroughputReport>,
    pub resume: Option<ResumeReport>,
    /// CPU seconds the load generator itself used over the whole run.
    pub load_generator_cpu_s: f64,
    /// The targets, checked against this run's figures (medhub only).
    pub targets: Vec<TargetCheck>,
    pub notes: Vec<String>,
    /// Correctness problems: lost or refused connections, missing acks or deliveries, gaps,
    /// duplicates. A run with problems did not measure what it claims.
    pub problems: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct ServerInfo {
    pub kind: String,
    pub command: String,
    pub pid: u32,
    /// The server ran inside the load generator (smoke tests): CPU and memory figures are
    /// not the server's alone.
    pub in_process: bool,
    pub setup_commands: Vec<String>,
    pub log: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct StormReport {
    pub clients: usize,
    pub handshake_concurrency: usize,
    pub source_addrs: usize,
    pub ready: u64,
    pub failed: u64,
    /// From the first connect to the last client's `ready` (only when all succeeded).
    pub all_ready_s: Option<f64>,
    pub last_ready_s: f64,
    pub ready_per_s: f64,
    /// Per connection: TCP connect + WebSocket upgrade + hello → ready.
    pub handshake: LatencySummary,
    pub listen_queue: ListenCounters,
    pub errors: BTreeMap<String, u64>,
    pub server_cpu_s: f64,
    pub load_generator_cpu_s: f64,
    pub server_rss_before_bytes: u64,
    pub server_rss_after_bytes: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct IdleReport {
    pub connections: u64,
    pub settle_s: f64,
    pub server_rss_before_bytes: u64,
    pub server_rss_after_bytes: u64,
    /// (after − before) / connections.
    pub rss_per_connection_bytes: f64,
    /// Server CPU while idle, in CPU-seconds per second (heartbeats, timers).
    pub idle_cpu_per_s: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct DirectReport {
    pub connected: u64,
    pub rate_per_s: f64,
    pub duration_s: f64,
    pub scheduled: u64,
    pub counts: Counts,
    pub missing_acks: u64,
    pub missing_deliveries: u64,
    /// Send → `sent` (medhub: durably committed). Socket.IO's ack is not durable.
    pub ack: LatencySummary,
    /// Send → the partner's `event`.
    pub delivery: LatencySummary,
    /// Scheduled time → the client wrote the frame (the load generator's own lag).
    pub send_lag: LatencySummary,
    pub ack_is_durable: bool,
    pub drain_s: f64,
    pub server_cpu_s: f64,
    pub cpu_s_per_1000_msgs: f64,
    pub load_generator_cpu_s: f64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct FanoutReport {
    pub members: usize,
    /// `paced` (open loop at `rate_per_s`) or `max` (closed loop: `window` sends unacked and
    /// at most `delivery_window` messages not yet delivered to every member).
    pub mode: String,
    pub rate_per_s: Option<f64>,
    pub window: Option<usize>,
    pub delivery_window: Option<usize>,
    pub messages: u64,
    pub counts: Counts,
    pub expected_deliveries: u64,
    pub deliveries: u64,
    pub incomplete_messages: u64,
    /// First send → last delivery.
    pub elapsed_s: f64,
    pub deliveries_per_s: f64,
    /// Per message, the latency of the member that got it last.
    pub last_recipient: LatencySummary,
    /// Every member's latency (the sender's own echo included).
    pub all_recipients: LatencySummary,
    pub ack: LatencySummary,
    pub send_lag: LatencySummary,
    pub server_cpu_s: f64,
    pub cpu_s_per_1000_msgs: f64,
    pub cpu_s_per_1000_deliveries: f64,
    pub load_generator_cpu_s: f64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct ThroughputReport {
    pub senders: usize,
    pub window: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub acked: u64,
    pub acked_per_s: f64,
    pub deliveries_per_s: f64,
    /// Send → ack, closed loop (each sender keeps `window` sends outstanding).
    pub ack: LatencySummary,
    pub ack_errors: u64,
    pub ack_is_durable: bool,
    pub server_cpu_s: f64,
    pub cpu_s_per_1000_msgs: f64,
    /// PostgreSQL's own processes (all `postgres` processes on the machine), when used.
    pub database_cpu_s: Option<f64>,
    pub load_generator_cpu_s: f64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct ResumeReport {
    pub clients: usize,
    pub missed_per_client: u64,
    pub ready: u64,
    pub failed: u64,
    pub all_ready_s: Option<f64>,
    /// From the first reconnect to the moment the last client had every missed message.
    pub all_current_s: Option<f64>,
    pub current_clients: u64,
    pub events: u64,
    pub expected_events: u64,
    pub gaps: u64,
    pub duplicates: u64,
    /// Events of conversations the client is not in (would be a leak).
    pub foreign: u64,
    pub out_of_order: u64,
    pub handshake: LatencySummary,
    pub listen_queue: ListenCounters,
    pub server_cpu_s: f64,
    pub load_generator_cpu_s: f64,
    pub server_rss_before_bytes: u64,
    /// Right after every client was current, and after a further settle period.
    pub server_rss_current_bytes: u64,
    pub server_rss_settled_bytes: u64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct TargetCheck {
    pub measure: String,
    pub target: String,
    pub value: String,
    /// The run had the target's size (15,000 clients, 1,000 msg/s, ...); smaller runs are
    /// reported but not judged.
    pub applicable: bool,
    pub met: bool,
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Report {
    /// The human summary.
    pub fn summary(&self) -> String {
        let mut o = Vec::new();
        o.push(format!("== medhub-bench {} · target {} ({}) ==", self.scenario, self.target, self.backend));
        o.push(format!("command: {}", self.command));
        o.push(format!(
            "server:  {} (pid {}{})",
            self.server.command,
            self.server.pid,
            if self.server.in_process { ", IN PROCESS" } else { "" }
        ));
        if let Some(s) = &self.seed {
            o.push(format!(
                "seed: {} users+sessions in {:.1} s, {} conversations ({} channel members) in {:.1} s, {} missed messages in {:.1} s",
                s.users, s.users_and_sessions_s, s.conversations, s.channel_members, s.conversations_s, s.missed_messages, s.missed_messages_s
            ));
        }
        if let Some(s) = &self.storm {
            o.push(format!(
                "storm: {}/{} ready, {} failed; all ready in {}; {:.0} ready/s; listen overflows {} drops {}",
                s.ready,
                s.clients,
                s.failed,
                s.all_ready_s.map_or("— (not all ready)".to_owned(), |v| format!("{v:.3} s")),
                s.ready_per_s,
                s.listen_queue.listen_overflows,
                s.listen_queue.listen_drops
            ));
            o.push(format!("  handshake: {}", s.handshake.line()));
            o.push(format!(
                "  server CPU {:.2} s, RSS {:.1} → {:.1} MiB; load generator CPU {:.2} s",
                s.server_cpu_s,
                mb(s.server_rss_before_bytes),
                mb(s.server_rss_after_bytes),
                s.load_generator_cpu_s
            ));
            if !s.errors.is_empty() {
                o.push(format!("  errors: {:?}", s.errors));
            }
        }
        if let Some(i) = &self.idle {
            o.push(format!(
                "idle: {} connections, RSS {:.1} → {:.1} MiB = {:.0} bytes ({:.2} KB) per connection; idle CPU {:.3} CPU-s/s",
                i.connections,
                mb(i.server_rss_before_bytes),
                mb(i.server_rss_after_bytes),
                i.rss_per_connection_bytes,
                i.rss_per_connection_bytes / 1000.0,
                i.idle_cpu_per_s
            ));
        }
        if let Some(d) = &self.direct {
            o.push(format!(
                "direct: {} connected, {:.0} msg/s for {:.0} s: {} scheduled, {} sent, {} acked, {} delivered (missing: {} acks, {} deliveries)",
                d.connected, d.rate_per_s, d.duration_s, d.scheduled, d.counts.sent, d.counts.acked, d.counts.delivered, d.missing_acks, d.missing_deliveries
            ));
            o.push(format!(
                "  ack{}: {}",
                if d.ack_is_durable { " (durable)" } else { " (NOT durable)" },
                d.ack.line()
            ));
            o.push(format!("  delivery: {}", d.delivery.line()));
            o.push(format!("  load generator send lag: {}", d.send_lag.line()));
            o.push(format!(
                "  server CPU {:.2} s = {:.3} CPU-s per 1,000 msgs; load generator CPU {:.2} s",
                d.server_cpu_s, d.cpu_s_per_1000_msgs, d.load_generator_cpu_s
            ));
            if !d.errors.is_empty() {
                o.push(format!("  errors: {:?}", d.errors));
            }
        }
        for f in &self.fanout {
            let how = match f.mode.as_str() {
                "paced" => format!("paced {:.1} msg/s", f.rate_per_s.unwrap_or(0.0)),
                _ => format!(
                    "max rate (window {}, delivery window {})",
                    f.window.unwrap_or(0),
                    f.delivery_window.unwrap_or(0)
                ),
            };
            o.push(format!(
                "fanout {} members, {how}: {} msgs, {}/{} deliveries in {:.2} s = {:.0} deliveries/s; {} incomplete",
                f.members,
                f.messages,
                f.deliveries,
                f.expected_deliveries,
                f.elapsed_s,
                f.deliveries_per_s,
                f.incomplete_messages
            ));
            o.push(format!("  last recipient: {}", f.last_recipient.line()));
            o.push(format!("  all recipients: {}", f.all_recipients.line()));
            o.push(format!(
                "  server CPU {:.2} s = {:.3} CPU-s per 1,000 msgs, {:.4} per 1,000 deliveries; load generator CPU {:.2} s",
                f.server_cpu_s, f.cpu_s_per_1000_msgs, f.cpu_s_per_1000_deliveries, f.load_generator_cpu_s
            ));
            if !f.errors.is_empty() {
                o.push(format!("  errors: {:?}", f.errors));
            }
        }
        if let Some(t) = &self.throughput {
            o.push(format!(
                "throughput: {} senders × window {}: {:.0} acked msg/s{} over {:.0} s ({} acked, {} errors); {:.0} deliveries/s",
                t.senders,
                t.window,
                t.acked_per_s,
                if t.ack_is_durable { " (durable)" } else { " (NOT durable)" },
                t.duration_s,
                t.acked,
                t.ack_errors,
                t.deliveries_per_s
            ));
            o.push(format!("  ack: {}", t.ack.line()));
            o.push(format!(
                "  server CPU {:.2} s = {:.3} CPU-s per 1,000 msgs{}; load generator CPU {:.2} s",
                t.server_cpu_s,
                t.cpu_s_per_1000_msgs,
                t.database_cpu_s.map_or(String::new(), |d| format!(" (+ PostgreSQL processes {d:.2} s)")),
                t.load_generator_cpu_s
            ));
            if !t.errors.is_empty() {
                o.push(format!("  errors: {:?}", t.errors));
            }
        }
        if let Some(r) = &self.resume {
            o.push(format!(
                "resume: {} clients × {} missed: all ready in {}, all current in {}; {}/{} events, {} gaps, {} duplicates, {} foreign, {} out of order",
                r.clients,
                r.missed_per_client,
                r.all_ready_s.map_or("—".to_owned(), |v| format!("{v:.3} s")),
                r.all_current_s.map_or("— (not all current)".to_owned(), |v| format!("{v:.3} s")),
                r.events,
                r.expected_events,
                r.gaps,
                r.duplicates,
                r.foreign,
                r.out_of_order
            ));
            o.push(format!("  handshake: {}", r.handshake.line()));
            o.push(format!(
                "  server CPU {:.2} s; RSS {:.1} MiB before, {:.1} MiB when all were current, {:.1} MiB after settling; \
                 load generator CPU {:.2} s",
                r.server_cpu_s,
                mb(r.server_rss_before_bytes),
                mb(r.server_rss_current_bytes),
                mb(r.server_rss_settled_bytes),
                r.load_generator_cpu_s
            ));
            if !r.errors.is_empty() {
                o.push(format!("  errors: {:?}", r.errors));
            }
        }
        if !self.targets.is_empty() {
            o.push("targets:".to_owned());
            for t in &self.targets {
                let verdict = match (t.applicable, t.met) {
                    (false, _) => "n/a: smaller than the target's size",
                    (true, true) => "met",
                    (true, false) => "MISSED",
                };
                o.push(format!("  [{verdict}] {}: {} (target {})", t.measure, t.value, t.target));
            }
        }
        for n in &self.notes {
            o.push(format!("note: {n}"));
        }
        if self.problems.is_empty() {
            o.push("correctness: no problems found".to_owned());
        } else {
            for p in &self.problems {
                o.push(format!("PROBLEM: {p}"));
            }
        }
        o.join("\n")
    }
}
