//! medhub-bench: an open-loop load generator for medhub and its peers (Socket.IO, Synapse).
//!
//! Messages are scheduled at fixed times whatever the server answers, and every latency is
//! measured from the scheduled time, so a slow server cannot hide its slowness by slowing the
//! load down (coordinated omission). Latencies go into HDR histograms; the server's CPU and
//! memory are read from `/proc` for its process alone.
//!
//! The binary (`src/main.rs`) is the command-line front end; [`run`] is what it and the smoke
//! test call.

pub mod client;
pub mod floor;
pub mod frame;
pub mod medhub;
pub mod net;
pub mod procfs;
pub mod report;
mod scenario;
pub mod socketio;
pub mod stats;
pub mod summarize;
pub mod synapse;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use report::Report;
pub use scenario::run;

/// The scenarios of the issue's benchmark table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// (a) N clients connect and authenticate as fast as possible.
    Storm,
    /// (b) Server memory per authenticated idle connection, after a storm.
    Idle,
    /// (c) 1:1 messaging at a fixed rate with N connected: ack and delivery latency.
    Direct,
    /// (d) One sender to channels of M members: deliveries/s and last-recipient latency.
    Fanout,
    /// (e) Maximum durable (acknowledged) messages per second with many senders.
    Throughput,
    /// (f) N clients that each missed messages reconnect at once with their cursor.
    Resume,
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Storm => "storm",
            Scenario::Idle => "idle",
            Scenario::Direct => "direct",
            Scenario::Fanout => "fanout",
            Scenario::Throughput => "throughput",
            Scenario::Resume => "resume",
        }
    }
}

/// The server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Medhub,
    Socketio,
    Synapse,
    /// A bare single-threaded relay (fan-out only): the floor of this machine.
    Floor,
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Medhub => "medhub",
            Target::Socketio => "socketio",
            Target::Synapse => "synapse",
            Target::Floor => "floor",
        }
    }
}

/// Everything a run needs, resolved (no defaults left to apply).
#[derive(Clone, Debug, Serialize)]
pub struct Options {
    pub scenario: Scenario,
    pub target: Target,
    /// Connected clients (storm, idle, direct, resume).
    pub clients: usize,
    /// Messages per second of the 1:1 scenario.
    pub rate: f64,
    /// Length of the 1:1 scenario's schedule.
    pub duration: Duration,
    /// Channel sizes of the fan-out scenario.
    pub members: Vec<usize>,
    /// Paced fan-out rate per channel size (msg/s); `None` picks one from the size.
    pub fanout_rate: Option<f64>,
    pub fanout_duration: Duration,
    /// Messages of the max-rate fan-out per channel size; `None` picks one from the size.
    pub fanout_messages: Option<usize>,
    /// Unacknowledged sends of the max-rate fan-out sender.
    pub fanout_window: usize,
    /// Messages not yet delivered to every member that the max-rate sender allows.
    pub fanout_delivery_window: usize,
    /// Throughput: sending connections and the sends each keeps outstanding.
    pub senders: usize,
    pub window: usize,
    pub warmup: Duration,
    /// Resume: messages each client missed.
    pub missed: usize,
    /// Use PostgreSQL on this server (admin URL) instead of SQLite.
    pub postgres: Option<String>,
    pub medhub_bin: PathBuf,
    /// The `medhub-bench` binary that runs the floor relay (default: this executable).
    #[serde(skip)]
    pub floor_bin: Option<PathBuf>,
    /// Run medhub inside this process (smoke tests).
    pub in_process: bool,
    pub handshake_concurrency: usize,
    pub sources: Vec<IpAddr>,
    /// Idle: how long to let the server settle before reading its memory.
    pub settle: Duration,
    pub work_dir: PathBuf,
    pub keep_work: bool,
    /// Server port; `None` picks a free one.
    pub port: Option<u16>,
    /// The repository (peers, and the commit recorded in results).
    pub repo: PathBuf,
    pub socketio_dir: PathBuf,
    pub synapse_dir: PathBuf,
    pub synapse_bench_dir: PathBuf,
    pub synapse_reuse: bool,
    pub body_bytes: usize,
    pub connect_timeout: Duration,
    /// How long to wait for outstanding acks and deliveries after a schedule ends.
    pub drain_timeout: Duration,
    /// medhub's `limits.max_in_flight` in the throughput and fan-out scenarios.
    pub server_max_in_flight: usize,
    #[serde(skip)]
    pub command_line: Vec<String>,
    #[serde(skip)]
    pub quiet: bool,
}

impl Options {
    /// Defaults for a scenario and target, with the repository at `repo`.
    pub fn new(scenario: Scenario, target: Target, repo: &std::path::Path) -> Self {
        let synapse = target == Target::Synapse;
        Options {
            scenario,
            target,
            clients: if synapse { 100 } else { 15_000 },
            rate: if synapse { 20.0 } else { 1_000.0 },
            duration: Duration::from_secs(30),
            members: if synapse { vec![100] } else { vec![100, 1_000, 15_000] },
            fanout_rate: None,
            fanout_duration: Duration::from_secs(20),
            fanout_messages: None,
            fanout_window: 64,
            fanout_delivery_window: 256,
            senders: if synapse { 32 } else { 64 },
            window: if synapse { 4 } else { 64 },
            warmup: Duration::from_secs(2),
            missed: 50,
            postgres: None,
            medhub_bin: default_medhub_bin(repo),
            floor_bin: None,
            in_process: false,
            handshake_concurrency: if synapse { 8 } else { 1024 },
            sources: (2..=9).map(|i| IpAddr::from([127, 0, 0, i])).collect(),
            settle: Duration::from_secs(5),
            work_dir: PathBuf::from("/var/tmp/medhub-bench/work"),
            keep_work: false,
            port: None,
            repo: repo.to_path_buf(),
            socketio_dir: repo.join("bench/peers/socketio"),
            synapse_dir: repo.join("bench/peers/synapse"),
            synapse_bench_dir: PathBuf::from(
                std::env::var("MEDHUB_BENCH_DIR").unwrap_or_else(|_| "/var/tmp/medhub-bench".to_owned()),
            ),
            synapse_reuse: false,
            body_bytes: 64,
            connect_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(15),
            server_max_in_flight: 256,
            command_line: std::env::args().collect(),
            quiet: false,
        }
    }
}

/// The repository root this crate was built from.
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().and_then(|p| p.parent()).map(PathBuf::from).unwrap_or(manifest)
}

/// `$CARGO_TARGET_DIR/release/medhub` if set, else `target/release/medhub` in the repository.
pub fn default_medhub_bin(repo: &std::path::Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("release/medhub"),
        None => repo.join("target/release/medhub"),
    }
}

/// The commit the repository is at, with `-dirty` when the working tree has changes.
pub fn git_revision(repo: &std::path::Path) -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(repo)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

/// Progress output (standard error, so that standard output stays the summary).
pub fn say(line: &str) {
    eprintln!("medhub-bench: {line}");
}

/// Spawns a peer server process, its standard error going to `log`, and waits up to 30 s
/// for the `ready …` line it prints on standard output; later output is drained so that the
/// process never blocks on a full pipe. Returns the child and its pid.
pub async fn spawn_until_ready(
    cmd: &mut tokio::process::Command,
    what: &str,
    log: &std::path::Path,
) -> anyhow::Result<(tokio::process::Child, u32)> {
    use anyhow::{Context, anyhow, bail};
    use tokio::io::{AsyncBufReadExt, BufReader};
    let log_file = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(log_file))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn {what}"))?;
    let pid = child.id().ok_or_else(|| anyhow!("{what} exited at once"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout from {what}"))?;
    let mut lines = BufReader::new(stdout).lines();
    match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
        Ok(Ok(Some(l))) if l.starts_with("ready") => {}
        Err(_) => bail!("{what} did not print `ready` within 30 s; see {}", log.display()),
        Ok(other) => bail!("{what} printed {other:?} instead of `ready`; see {}", log.display()),
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, pid))
}

/// Sends SIGTERM to a process (through `kill(1)`: the workspace forbids unsafe code).
pub fn signal_term(pid: u32) {
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
}

/// Quotes a command line for a POSIX shell.
pub fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_quoted_for_the_shell() {
        let args = vec!["medhub-bench".to_owned(), "direct".to_owned(), "--note".to_owned(), "it's x".to_owned()];
        assert_eq!(shell_join(&args), r"medhub-bench direct --note 'it'\''s x'");
    }
}
