//! `medhub-bench`: the command-line front end of the load generator.
// The summary on standard output is this tool's interface.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use medhub_bench::{Options, Scenario, Target, net, repo_root, say};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Open-loop load generator for medhub, Socket.IO and Synapse.
#[derive(Parser, Debug)]
#[command(name = "medhub-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// (a) N clients connect and authenticate as fast as possible.
    Storm(RunArgs),
    /// (b) A storm, then server memory per idle authenticated connection.
    Idle(RunArgs),
    /// (c) 1:1 messaging at a fixed rate with N connected.
    Direct(RunArgs),
    /// (d) One sender to channels of M members, paced and at maximum rate.
    Fanout(RunArgs),
    /// (e) Maximum acknowledged messages per second with many senders.
    Throughput(RunArgs),
    /// (f) N clients that each missed messages reconnect at once.
    Resume(RunArgs),
    /// The floor relay's server process (started by `fanout --target floor`).
    #[command(hide = true)]
    FloorServer {
        #[arg(long)]
        port: u16,
    },
    /// Medians of raw result files, and the latency plot.
    Summarize {
        /// Directory of raw per-run JSON files.
        #[arg(long)]
        raw: PathBuf,
        /// Summary JSON to write.
        #[arg(long)]
        out: PathBuf,
        /// SVG plot of the latency distributions to write.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Server under test.
    #[arg(long, value_enum, default_value = "medhub")]
    target: Target,
    /// Connected clients [default: 15000; Synapse: 100].
    #[arg(long)]
    clients: Option<usize>,
    /// 1:1 messages per second [default: 1000; Synapse: 20].
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of the 1:1 schedule or of the measured throughput phase [default: 30 (direct), 10 (throughput)].
    #[arg(long)]
    duration: Option<f64>,
    /// Fan-out channel sizes, comma-separated [default: 100,1000,15000; Synapse: 100].
    #[arg(long, value_delimiter = ',')]
    members: Option<Vec<usize>>,
    /// Paced fan-out messages per second [default: 30000/members, between 1 and 100; Synapse: 2].
    #[arg(long)]
    fanout_rate: Option<f64>,
    /// Seconds of each paced fan-out phase.
    #[arg(long, default_value_t = 20.0)]
    fanout_duration: f64,
    /// Messages of each max-rate fan-out phase [default: 3000000/members, between 50 and 5000; Synapse: 100].
    #[arg(long)]
    fanout_messages: Option<usize>,
    /// Unacknowledged sends of the max-rate fan-out sender.
    #[arg(long, default_value_t = 64)]
    fanout_window: usize,
    /// Messages not yet delivered to every member that the max-rate fan-out sender allows.
    #[arg(long, default_value_t = 256)]
    fanout_delivery_window: usize,
    /// Throughput: sending connections (in 1:1 pairs) [default: 64; Synapse: 32].
    #[arg(long)]
    senders: Option<usize>,
    /// Throughput: sends each sender keeps outstanding [default: 64; Synapse: 4].
    #[arg(long)]
    window: Option<usize>,
    /// Throughput: seconds of warm-up before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Resume: messages each client missed.
    #[arg(long, default_value_t = 50)]
    missed: usize,
    /// medhub on PostgreSQL: the admin URL of the server (a database medhub_bench_<pid>_<n> is created and dropped).
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// The medhub binary [default: $CARGO_TARGET_DIR/release/medhub or target/release/medhub].
    #[arg(long)]
    medhub_bin: Option<PathBuf>,
    /// Run medhub inside this process instead of the binary (CPU and memory then include the clients).
    #[arg(long)]
    in_process: bool,
    /// Handshakes in flight at most during a storm [default: 1024; Synapse: 8].
    #[arg(long)]
    handshake_concurrency: Option<usize>,
    /// Client source addresses: a range (127.0.0.2-127.0.0.9) or a comma-separated list.
    #[arg(long, default_value = "127.0.0.2-127.0.0.9")]
    sources: String,
    /// Idle: seconds to settle before reading the server's memory.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// Scratch directory (SQLite data, server logs).
    #[arg(long, default_value = "/var/tmp/medhub-bench/work")]
    work_dir: PathBuf,
    /// Keep the scratch directory after the run.
    #[arg(long)]
    keep_work: bool,
    /// Server port [default: a free one].
    #[arg(long)]
    port: Option<u16>,
    /// The repository (for bench/peers) [default: where this tool was built from].
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Reuse Synapse's database instead of starting from an empty one.
    #[arg(long)]
    synapse_reuse: bool,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
    /// Seconds one client may take to connect and authenticate.
    #[arg(long, default_value_t = 60.0)]
    connect_timeout: f64,
    /// Seconds to wait for outstanding acks and deliveries after a schedule ends.
    #[arg(long, default_value_t = 15.0)]
    drain_timeout: f64,
    /// medhub's limits.max_in_flight for the throughput and fan-out scenarios.
    #[arg(long, default_value_t = 256)]
    server_max_in_flight: usize,
    /// JSON result file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0))
}

fn options(scenario: Scenario, a: RunArgs) -> Result<(Options, Option<PathBuf>)> {
    let repo = a.repo.clone().unwrap_or_else(repo_root);
    let mut o = Options::new(scenario, a.target, &repo);
    if let Some(v) = a.clients {
        o.clients = v;
    }
    if let Some(v) = a.rate {
        o.rate = v;
    }
    o.duration = secs(a.duration.unwrap_or(if scenario == Scenario::Throughput { 10.0 } else { 30.0 }));
    if let Some(v) = a.members {
        o.members = v;
    }
    o.fanout_rate = a.fanout_rate;
    o.fanout_duration = secs(a.fanout_duration);
    o.fanout_messages = a.fanout_messages;
    o.fanout_window = a.fanout_window;
    o.fanout_delivery_window = a.fanout_delivery_window;
    if let Some(v) = a.senders {
        o.senders = v;
    }
    if let Some(v) = a.window {
        o.window = v;
    }
    o.warmup = secs(a.warmup);
    o.missed = a.missed;
    o.postgres = a.postgres;
    if let Some(v) = a.medhub_bin {
        o.medhub_bin = v;
    }
    o.in_process = a.in_process;
    if let Some(v) = a.handshake_concurrency {
        o.handshake_concurrency = v;
    }
    o.sources = net::parse_sources(&a.sources)?;
    o.settle = secs(a.settle);
    o.work_dir = a.work_dir;
    o.keep_work = a.keep_work;
    o.port = a.port;
    o.synapse_reuse = a.synapse_reuse;
    o.body_bytes = a.body_bytes;
    o.connect_timeout = secs(a.connect_timeout);
    o.drain_timeout = secs(a.drain_timeout);
    o.server_max_in_flight = a.server_max_in_flight;
    if o.postgres.is_some() && o.target != Target::Medhub {
        bail!("--postgres applies to medhub only");
    }
    Ok((o, a.out))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::FloorServer { port } = cli.command {
        return match medhub_bench::floor::serve(port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("medhub-bench floor-server: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("medhub-bench").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("medhub-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("medhub-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let (scenario, args) = match cli.command {
        Command::Summarize { raw, out, plot } => {
            let summary = medhub_bench::summarize::summarize(&raw)?;
            std::fs::write(&out, serde_json::to_string_pretty(&summary)? + "\n")
                .with_context(|| format!("write {}", out.display()))?;
            say(&format!("wrote {} ({} runs)", out.display(), summary["runs"]));
            if let Some(p) = plot {
                std::fs::write(&p, medhub_bench::summarize::plot(&raw)?)
                    .with_context(|| format!("write {}", p.display()))?;
                say(&format!("wrote {}", p.display()));
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Storm(a) => (Scenario::Storm, a),
        Command::Idle(a) => (Scenario::Idle, a),
        Command::Direct(a) => (Scenario::Direct, a),
        Command::Fanout(a) => (Scenario::Fanout, a),
        Command::Throughput(a) => (Scenario::Throughput, a),
        Command::Resume(a) => (Scenario::Resume, a),
        Command::FloorServer { .. } => return Ok(ExitCode::FAILURE),
    };
    let (opts, out) = options(scenario, args)?;
    let report = medhub_bench::run(opts).await?;
    println!("{}", report.summary());
    if let Some(out) = out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("write {}", out.display()))?;
        say(&format!("wrote {}", out.display()));
    }
    // Problems mean the run did not measure what it claims; missed targets are results.
    Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
