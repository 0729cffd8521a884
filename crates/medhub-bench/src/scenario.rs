//! One run: prepare the target (seed and start medhub, or start a peer), connect the clients,
//! drive the scenario's load phases, measure, tear down, and check the figures.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::Semaphore;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientSetup, Cmd, Dest, MedhubClient, ResumeExpect, SocketIoClient};
use crate::floor::FloorServer;
use crate::medhub::{Launch, MedhubServer, SeedPlan, Seeded, Storage, Tuning};
use crate::net::{Dialer, free_port};
use crate::procfs::{Machine, Probe, cpu_seconds_of_command, listen_counters};
use crate::report::{
    DirectReport, FanoutReport, IdleReport, Report, ResumeReport, ServerInfo, StormReport, TargetCheck,
    ThroughputReport,
};
use crate::socketio::NodeServer;
use crate::stats::{Clock, FanoutTrack, LatencySummary, Recorder, Tag};
use crate::synapse::{SynapseClient, SynapseEnv};
use crate::{Options, Scenario, Target, say, shell_join};

/// The server under test.
enum Server {
    Medhub(MedhubServer),
    Node(NodeServer),
    Synapse(SynapseEnv),
    Floor(FloorServer),
}

/// How to create client `i` for the target.
enum Spawner {
    Medhub { seeded: Seeded },
    SocketIo { rooms: Arc<Vec<Arc<str>>>, members: Vec<usize> },
    Synapse { clients: Vec<SynapseClient> },
}

struct Env {
    server: Server,
    spawner: Spawner,
    dialer: Arc<Dialer>,
    probe: Probe,
    storage: Option<Storage>,
    body: Arc<str>,
    /// Channel sizes, by channel number.
    channels: Vec<usize>,
    missed: u64,
}

/// The connected clients and their command channels.
struct Fleet {
    cmds: Arc<Vec<UnboundedSender<Cmd>>>,
    tasks: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Fleet {
    async fn close(mut self, rec: &Recorder) {
        rec.stopping.store(true, Ordering::Release);
        self.stop.cancel();
        let all = futures_util::future::join_all(self.tasks.iter_mut());
        if tokio::time::timeout(Duration::from_secs(15), all).await.is_err() {
            for t in &self.tasks {
                t.abort();
            }
        }
    }
}

impl Env {
    fn pid(&self) -> u32 {
        match &self.server {
            Server::Medhub(s) => s.pid(),
            Server::Node(n) => n.pid,
            Server::Synapse(s) => s.pid,
            Server::Floor(f) => f.pid,
        }
    }

    fn spawn(&self, i: usize, setup: ClientSetup, resume: bool) -> JoinHandle<()> {
        let dialer = self.dialer.clone();
        match &self.spawner {
            Spawner::Medhub { seeded } => {
                let client = MedhubClient {
                    token: seeded.tokens[i].clone(),
                    cursor: resume.then_some(seeded.cursor),
                    pair: seeded.pairs.get(i / 2).cloned(),
                    channels: Arc::new(seeded.channels.clone()),
                    resume: if resume {
                        seeded.pairs.get(i / 2).map(|c| ResumeExpect { conversation: c.clone(), messages: self.missed })
                    } else {
                        None
                    },
                    body: self.body.clone(),
                };
                tokio::spawn(client.run(dialer, setup))
            }
            Spawner::SocketIo { rooms, members } => {
                let client = SocketIoClient {
                    rooms: rooms.clone(),
                    join: members.iter().enumerate().filter(|(_, m)| i < **m).map(|(n, _)| n).collect(),
                    body: self.body.clone(),
                };
                tokio::spawn(client.run(dialer, setup))
            }
            Spawner::Synapse { clients } => match clients.get(i).cloned() {
                Some(c) => tokio::spawn(c.run(setup)),
                None => tokio::spawn(async move {
                    setup.rec.error("no such Synapse user");
                    setup.rec.storm_result(false, setup.started_ns, i);
                }),
            },
        }
    }
}

/// Runs one scenario against one target and returns its report.
pub async fn run(opts: Options) -> Result<Report> {
    let started = Instant::now();
    let clock = Clock::new();
    let rec = Arc::new(Recorder::new(clock)?);
    let me = Probe::new(std::process::id());
    let bench_cpu0 = me.cpu();
    let work = opts.work_dir.join(format!(
        "{}-{}-{}-{}",
        opts.scenario.name(),
        opts.target.name(),
        std::process::id(),
        clock.now_ns() % 1_000_000
    ));
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let mut report = Report {
        tool: format!("medhub-bench {}", env!("CARGO_PKG_VERSION")),
        scenario: opts.scenario.name().to_owned(),
        target: opts.target.name().to_owned(),
        backend: match opts.target {
            Target::Medhub => if opts.postgres.is_some() { "postgres" } else { "sqlite" }.to_owned(),
            Target::Socketio => "memory".to_owned(),
            Target::Synapse => "sqlite".to_owned(),
            Target::Floor => "memory".to_owned(),
        },
        command: shell_join(&opts.command_line),
        command_line: opts.command_line.clone(),
        git_revision: crate::git_revision(&opts.repo),
        started_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        wall_s: 0.0,
        machine: Machine::read(),
        params: serde_json::to_value(&opts)?,
        server: ServerInfo::default(),
        seed: None,
        storm: None,
        idle: None,
        direct: None,
        fanout: Vec::new(),
        throughput: None,
        resume: None,
        load_generator_cpu_s: 0.0,
        targets: Vec::new(),
        notes: Vec::new(),
        problems: Vec::new(),
    };
    check_limits(&opts, &mut report)?;
    let mut env = match prepare(&opts, &rec, &work, &mut report).await {
        Ok(env) => env,
        Err(e) => {
            if !opts.keep_work {
                let _ = std::fs::remove_dir_all(&work);
            }
            return Err(e);
        }
    };
    let result = drive(&opts, &rec, &env, &mut report).await;
    say("stopping the server");
    match &mut env.server {
        Server::Medhub(s) => s.stop().await,
        Server::Node(n) => n.stop().await,
        Server::Synapse(s) => {
            if let Err(e) = s.stop().await {
                report.notes.push(format!("stopping Synapse failed: {e:#}"));
            }
        }
        Server::Floor(f) => f.stop().await,
    }
    if let Some(storage) = &env.storage
        && let Err(e) = storage.remove().await
    {
        report.notes.push(format!("could not remove the benchmark database: {e:#}"));
    }
    if !opts.keep_work {
        let _ = std::fs::remove_dir_all(&work);
    }
    result?;
    report.load_generator_cpu_s = me.cpu() - bench_cpu0;
    report.wall_s = started.elapsed().as_secs_f64();
    check(&opts, &rec, &mut report);
    Ok(report)
}

fn check_limits(opts: &Options, report: &mut Report) -> Result<()> {
    let clients = match opts.scenario {
        Scenario::Throughput => opts.senders,
        Scenario::Fanout => opts.members.iter().copied().max().unwrap_or(0),
        _ => opts.clients,
    };
    let limit = report.machine.open_files_limit.unwrap_or(0) as usize;
    report.notes.push(format!(
        "machine: {} cores shared by the server and the load generator; at most {} open files per process \
         (the load generator holds {clients} client sockets, the server as many plus its own files)",
        report.machine.cores, limit
    ));
    if limit > 0 && clients + 200 > limit {
        bail!("{clients} clients need more than the {limit} open files this process may have");
    }
    if opts.target == Target::Synapse && clients > 200 {
        report
            .notes
            .push(format!("Synapse with {clients} users: provisioning is slow (about 8 rooms/s and 25 joins/s here)"));
    }
    Ok(())
}

async fn prepare(opts: &Options, rec: &Arc<Recorder>, work: &std::path::Path, report: &mut Report) -> Result<Env> {
    let body: Arc<str> = Arc::from("x".repeat(opts.body_bytes.max(1)));
    let max_members = opts.members.iter().copied().max().unwrap_or(0);
    let users = match opts.scenario {
        Scenario::Throughput => opts.senders,
        Scenario::Fanout => max_members,
        _ => opts.clients,
    };
    let port = match opts.port {
        Some(p) => p,
        None => free_port()?,
    };
    let mut channels = Vec::new();
    let mut storage = None;
    let (server, spawner) = match opts.target {
        Target::Medhub => {
            if !opts.in_process && !opts.medhub_bin.exists() {
                bail!(
                    "no medhub binary at {} (build it with `cargo build --release -p medhub`, or pass --medhub-bin)",
                    opts.medhub_bin.display()
                );
            }
            let s = match &opts.postgres {
                Some(url) => Storage::fresh_postgres(url, (rec.clock.now_ns() % 1_000_000) as u32).await?,
                None => Storage::fresh_sqlite(work)?,
            };
            if opts.scenario == Scenario::Fanout {
                channels = opts.members.clone();
            }
            let plan = SeedPlan {
                users,
                pairs: matches!(opts.scenario, Scenario::Direct | Scenario::Throughput | Scenario::Resume),
                channels: channels.clone(),
                missed_per_pair: if opts.scenario == Scenario::Resume { opts.missed } else { 0 },
                body: body.to_string(),
            };
            let tuning = match opts.scenario {
                Scenario::Throughput | Scenario::Fanout => Tuning::throughput(opts.server_max_in_flight),
                _ => Tuning::default(),
            };
            let launch = if opts.in_process {
                Launch::InProcess
            } else {
                Launch::Binary { path: opts.medhub_bin.clone(), port, work: work.to_path_buf() }
            };
            say(&format!("seeding {} ({users} users) and starting medhub", s.backend()));
            let (seeded, server) = match crate::medhub::seed_and_start(&s, plan, &launch, &tuning).await {
                Ok(started) => started,
                Err(e) => {
                    let _ = s.remove().await;
                    return Err(e);
                }
            };
            say(&format!("seeded in {:.1} s; server {} at {}", seeded.report.total_s, server.command(), server.addr()));
            report.seed = Some(seeded.report.clone());
            report.server = ServerInfo {
                kind: "medhub".into(),
                command: server.command(),
                pid: server.pid(),
                in_process: opts.in_process,
                setup_commands: Vec::new(),
                log: server.log().map(|p| p.display().to_string()),
            };
            if opts.in_process {
                report.notes.push(
                    "the server ran inside the load generator: its CPU and memory figures include the clients'".into(),
                );
            }
            storage = Some(s);
            (Server::Medhub(server), Spawner::Medhub { seeded })
        }
        Target::Socketio => {
            if opts.scenario == Scenario::Resume {
                bail!("Socket.IO keeps no messages: it has no resume to measure");
            }
            if opts.scenario == Scenario::Fanout {
                channels = opts.members.clone();
            }
            let node = NodeServer::start(&opts.socketio_dir, port, work).await?;
            say(&format!("started {}", node.command));
            report.server = ServerInfo {
                kind: "socketio".into(),
                command: node.command.clone(),
                pid: node.pid,
                in_process: false,
                setup_commands: vec![node.command.clone()],
                log: Some(node.log.display().to_string()),
            };
            report.notes.push(
                "Socket.IO has no durability: its ack means the relay emitted the message; nothing is stored".into(),
            );
            let rooms: Vec<Arc<str>> =
                channels.iter().enumerate().map(|(n, m)| Arc::from(format!("fanout-{n}-{m}"))).collect();
            (Server::Node(node), Spawner::SocketIo { rooms: Arc::new(rooms), members: channels.clone() })
        }
        Target::Synapse => {
            if matches!(opts.scenario, Scenario::Storm | Scenario::Idle | Scenario::Resume) {
                bail!(
                    "the Synapse peer is measured for direct, fanout and throughput only (HTTP, no persistent connections)"
                );
            }
            let big = if opts.scenario == Scenario::Fanout { max_members } else { 0 };
            if opts.scenario == Scenario::Fanout {
                channels = vec![max_members];
                if opts.members.len() > 1 {
                    report.notes.push(format!("Synapse fan-out uses one room of {max_members} members"));
                }
            }
            say(&format!("preparing Synapse with {users} users (slow: provisioning goes through its API)"));
            let env =
                SynapseEnv::prepare(&opts.synapse_dir, &opts.synapse_bench_dir, work, users, big, opts.synapse_reuse)
                    .await?;
            report.notes.push(format!(
                "Synapse was provisioned with {users} users{} in {:.1} s; user counts stay small because provisioning is slow",
                if big > 0 { format!(" and a room of {big}") } else { String::new() },
                env.provision_s
            ));
            report.server = ServerInfo {
                kind: "synapse".into(),
                command: format!("{}/start.sh (Synapse, SQLite)", opts.synapse_dir.display()),
                pid: env.pid,
                in_process: false,
                setup_commands: env.commands.clone(),
                log: Some(env.bench_dir.join("synapse/homeserver.log").display().to_string()),
            };
            let http = SynapseEnv::http()?;
            let big_room: Arc<Vec<Arc<str>>> = Arc::new(env.big_room.iter().map(|(r, _)| r.clone()).collect());
            let clients = env
                .users
                .iter()
                .enumerate()
                .map(|(i, (token, since))| SynapseClient {
                    http: http.clone(),
                    base: env.base_url.clone(),
                    token: token.clone(),
                    since: since.clone(),
                    filter: env.filter.clone(),
                    pair_room: env.pair_room.get(i).cloned().flatten(),
                    channels: big_room.clone(),
                    body: body.clone(),
                })
                .collect();
            (Server::Synapse(env), Spawner::Synapse { clients })
        }
        Target::Floor => {
            if opts.scenario != Scenario::Fanout {
                bail!("the floor relay is measured for fan-out only");
            }
            channels = opts.members.clone();
            let floor = FloorServer::start(opts.floor_bin.as_deref(), port, work).await?;
            say(&format!("started {}", floor.command));
            report.server = ServerInfo {
                kind: "floor".into(),
                command: floor.command.clone(),
                pid: floor.pid,
                in_process: false,
                setup_commands: vec![floor.command.clone()],
                log: Some(floor.log.display().to_string()),
            };
            report.notes.push(
                "the floor relay stores nothing and checks nothing: one thread writes each event, built once, \
                 to every member's socket"
                    .into(),
            );
            let seeded = crate::floor::seeded(users, &channels);
            (Server::Floor(floor), Spawner::Medhub { seeded })
        }
    };
    let server_addr = match &server {
        Server::Medhub(s) => s.addr(),
        Server::Node(n) => format!("127.0.0.1:{}", n.port).parse()?,
        Server::Synapse(_) => "127.0.0.1:8008".parse()?,
        Server::Floor(f) => format!("127.0.0.1:{}", f.port).parse()?,
    };
    let dialer = Arc::new(Dialer { server: server_addr, sources: opts.sources.clone(), timeout: opts.connect_timeout });
    let mut env =
        Env { server, spawner, dialer, probe: Probe::new(0), storage, body, channels, missed: opts.missed as u64 };
    env.probe = Probe::new(env.pid());
    Ok(env)
}

async fn drive(opts: &Options, rec: &Arc<Recorder>, env: &Env, report: &mut Report) -> Result<()> {
    let me = Probe::new(std::process::id());
    match opts.scenario {
        Scenario::Storm | Scenario::Idle => {
            let (fleet, storm) = storm(opts, rec, env, opts.clients, false).await?;
            let connected = storm.ready;
            let rss_before = storm.server_rss_before_bytes;
            report.storm = Some(storm);
            if opts.scenario == Scenario::Idle {
                say(&format!("settling for {:.0} s", opts.settle.as_secs_f64()));
                let cpu0 = env.probe.cpu();
                tokio::time::sleep(opts.settle).await;
                let cpu1 = env.probe.cpu();
                let rss_after = env.probe.rss();
                report.idle = Some(IdleReport {
                    connections: connected,
                    settle_s: opts.settle.as_secs_f64(),
                    server_rss_before_bytes: rss_before,
                    server_rss_after_bytes: rss_after,
                    rss_per_connection_bytes: if connected > 0 {
                        (rss_after as f64 - rss_before as f64) / connected as f64
                    } else {
                        0.0
                    },
                    idle_cpu_per_s: (cpu1 - cpu0) / opts.settle.as_secs_f64().max(0.001),
                });
            }
            fleet.close(rec).await;
        }
        Scenario::Direct => {
            let (fleet, storm) = storm(opts, rec, env, opts.clients, false).await?;
            report.storm = Some(storm);
            tokio::time::sleep(Duration::from_secs(2)).await;
            report.direct = Some(direct(opts, rec, env, &fleet, &me).await?);
            fleet.close(rec).await;
        }
        Scenario::Fanout => {
            let n = env.channels.iter().copied().max().unwrap_or(0);
            let (fleet, storm) = storm(opts, rec, env, n, false).await?;
            report.storm = Some(storm);
            tokio::time::sleep(Duration::from_secs(2)).await;
            for (channel, &members) in env.channels.iter().enumerate() {
                let phase = 1 + 2 * channel as u32;
                report.fanout.push(fanout_paced(opts, rec, env, &fleet, &me, channel, members, phase).await?);
                report.fanout.push(fanout_max(opts, rec, env, &fleet, &me, channel, members, phase + 1).await?);
            }
            fleet.close(rec).await;
        }
        Scenario::Throughput => {
            let (fleet, storm) = storm(opts, rec, env, opts.senders, false).await?;
            report.storm = Some(storm);
            tokio::time::sleep(Duration::from_secs(1)).await;
            report.throughput = Some(throughput(opts, rec, env, &fleet, &me).await?);
            fleet.close(rec).await;
        }
        Scenario::Resume => {
            let cpu0 = env.probe.cpu();
            let bench0 = me.cpu();
            rec.resume.expected_clients.store(opts.clients as u64, Ordering::Release);
            let t0 = rec.clock.now_ns();
            let (fleet, storm) = storm(opts, rec, env, opts.clients, true).await?;
            let deadline = Instant::now() + opts.drain_timeout + Duration::from_secs(60);
            while rec.resume.complete.load(Ordering::Acquire) < opts.clients as u64 && Instant::now() < deadline {
                let _ = tokio::time::timeout(Duration::from_millis(200), rec.resume.done.notified()).await;
            }
            let server_cpu_s = env.probe.cpu() - cpu0;
            let load_generator_cpu_s = me.cpu() - bench0;
            let rss_current = env.probe.rss();
            say(&format!("settling for {:.0} s", opts.settle.as_secs_f64()));
            tokio::time::sleep(opts.settle).await;
            let rss_settled = env.probe.rss();
            let r = &rec.resume;
            let complete = r.complete.load(Ordering::Acquire);
            let last = r.last_complete_ns.load(Ordering::Acquire);
            report.resume = Some(ResumeReport {
                clients: opts.clients,
                missed_per_client: env.missed,
                ready: storm.ready,
                failed: storm.failed,
                all_ready_s: storm.all_ready_s,
                all_current_s: (complete == opts.clients as u64).then(|| last.saturating_sub(t0) as f64 / 1e9),
                current_clients: complete,
                events: r.events.load(Ordering::Acquire),
                expected_events: opts.clients as u64 * env.missed,
                gaps: r.gaps.load(Ordering::Acquire),
                duplicates: r.duplicates.load(Ordering::Acquire),
                foreign: r.foreign.load(Ordering::Acquire),
                out_of_order: r.out_of_order.load(Ordering::Acquire),
                handshake: storm.handshake.clone(),
                listen_queue: storm.listen_queue,
                server_cpu_s,
                load_generator_cpu_s,
                server_rss_before_bytes: storm.server_rss_before_bytes,
                server_rss_current_bytes: rss_current,
                server_rss_settled_bytes: rss_settled,
                errors: rec.errors(),
            });
            report.storm = Some(storm);
            fleet.close(rec).await;
        }
    }
    Ok(())
}

async fn storm(opts: &Options, rec: &Arc<Recorder>, env: &Env, n: usize, resume: bool) -> Result<(Fleet, StormReport)> {
    let me = Probe::new(std::process::id());
    rec.ready.store(0, Ordering::Release);
    rec.failed.store(0, Ordering::Release);
    rec.last_ready_ns.store(0, Ordering::Release);
    rec.storm_size.store(n as u64, Ordering::Release);
    rec.handshake.reset();
    let listen0 = listen_counters().unwrap_or_default();
    let rss0 = env.probe.rss();
    let cpu0 = env.probe.cpu();
    let bench0 = me.cpu();
    say(&format!("connecting {n} clients ({} handshakes in flight at most)", opts.handshake_concurrency));
    let sem = Arc::new(Semaphore::new(opts.handshake_concurrency.max(1)));
    let stop = CancellationToken::new();
    let t0 = rec.clock.now_ns();
    let mut cmds = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.map_err(|_| anyhow!("semaphore closed"))?;
        let (tx, rx) = unbounded_channel();
        let setup = ClientSetup {
            idx: i,
            rec: rec.clone(),
            permit: Some(permit),
            started_ns: rec.clock.now_ns(),
            cmds: rx,
            stop: stop.child_token(),
        };
        tasks.push(env.spawn(i, setup, resume));
        cmds.push(tx);
    }
    let deadline = Instant::now() + opts.connect_timeout + Duration::from_secs(30);
    loop {
        let done = rec.ready.load(Ordering::Acquire) + rec.failed.load(Ordering::Acquire);
        if done >= n as u64 || Instant::now() > deadline {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), rec.storm_done.notified()).await;
    }
    let ready = rec.ready.load(Ordering::Acquire);
    let failed = rec.failed.load(Ordering::Acquire);
    let last_ready_s = rec.last_ready_ns.load(Ordering::Acquire).saturating_sub(t0) as f64 / 1e9;
    let listen1 = listen_counters().unwrap_or_default();
    let report = StormReport {
        clients: n,
        handshake_concurrency: opts.handshake_concurrency,
        source_addrs: opts.sources.len(),
        ready,
        failed,
        all_ready_s: (ready == n as u64).then_some(last_ready_s),
        last_ready_s,
        ready_per_s: if last_ready_s > 0.0 { ready as f64 / last_ready_s } else { 0.0 },
        handshake: rec.handshake.summary(),
        listen_queue: listen1.since(&listen0),
        errors: rec.errors(),
        server_cpu_s: env.probe.cpu() - cpu0,
        load_generator_cpu_s: me.cpu() - bench0,
        server_rss_before_bytes: rss0,
        server_rss_after_bytes: env.probe.rss(),
    };
    say(&format!("{ready} ready, {failed} failed, last ready after {last_ready_s:.3} s"));
    Ok((Fleet { cmds: Arc::new(cmds), tasks, stop }, report))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A stride coprime with `n`, so that `k * stride mod n` visits every sender in turn while
/// consecutive messages come from far-apart clients.
fn spread_stride(n: u64) -> u64 {
    if n <= 1 {
        return 1;
    }
    (7919..).find(|s| gcd(*s, n) == 1).unwrap_or(1)
}

/// The open-loop schedule: message `k` is due at `start + k / rate`, whatever happened to
/// earlier ones. A plain thread keeps time (sub-millisecond sleeps) and hands each message to
/// its client's task.
fn open_loop(
    cmds: Arc<Vec<UnboundedSender<Cmd>>>,
    clock: Clock,
    phase: u32,
    start_ns: u64,
    rate: f64,
    total: u64,
    pick: impl Fn(u64) -> (usize, Dest) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let period = 1e9 / rate.max(0.001);
        for k in 0..total {
            let sched = start_ns + (k as f64 * period) as u64;
            let now = clock.now_ns();
            if sched > now {
                std::thread::sleep(Duration::from_nanos(sched - now));
            }
            let (i, dest) = pick(k);
            if let Some(tx) = cmds.get(i) {
                let _ = tx.send(Cmd::Send { tag: Tag { phase, key: k, sched, sender: i as u32 }, dest });
            }
        }
    })
}

/// Waits until `done()` or the drain timeout; returns the seconds waited.
async fn drain(opts: &Options, done: impl Fn() -> bool) -> f64 {
    let started = Instant::now();
    while !done() && started.elapsed() < opts.drain_timeout {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed().as_secs_f64()
}

fn begin_phase(rec: &Recorder, phase: u32, echo_is_delivery: bool) {
    rec.recording.store(false, Ordering::Release);
    rec.phase.store(phase, Ordering::Release);
    rec.reset_messages();
    rec.echo_is_delivery.store(echo_is_delivery, Ordering::Release);
}

async fn direct(opts: &Options, rec: &Arc<Recorder>, env: &Env, fleet: &Fleet, me: &Probe) -> Result<DirectReport> {
    let n = fleet.cmds.len() - fleet.cmds.len() % 2;
    if n < 2 {
        bail!("direct messaging needs at least 2 connected clients");
    }
    begin_phase(rec, 1, false);
    rec.recording.store(true, Ordering::Release);
    let total = (opts.rate * opts.duration.as_secs_f64()).round() as u64;
    say(&format!("direct: {total} messages at {} msg/s across {n} clients", opts.rate));
    let cpu0 = env.probe.cpu();
    let bench0 = me.cpu();
    let stride = spread_stride(n as u64);
    let start = rec.clock.now_ns() + 50_000_000;
    let sched = open_loop(fleet.cmds.clone(), rec.clock, 1, start, opts.rate, total, move |k| {
        (((k * stride) % n as u64) as usize, Dest::Pair)
    });
    tokio::task::spawn_blocking(move || sched.join()).await?.map_err(|_| anyhow!("scheduler thread panicked"))?;
    let drain_s = drain(opts, || {
        let c = rec.counts();
        c.acked + c.ack_errors >= total && c.delivered >= c.acked
    })
    .await;
    rec.recording.store(false, Ordering::Release);
    let cpu = env.probe.cpu() - cpu0;
    let c = rec.counts();
    Ok(DirectReport {
        connected: rec.ready.load(Ordering::Acquire),
        rate_per_s: opts.rate,
        duration_s: opts.duration.as_secs_f64(),
        scheduled: total,
        counts: c,
        missing_acks: total.saturating_sub(c.acked + c.ack_errors),
        missing_deliveries: c.acked.saturating_sub(c.delivered),
        ack: rec.ack.summary(),
        delivery: rec.delivery.summary(),
        send_lag: rec.send_lag.summary(),
        ack_is_durable: matches!(opts.target, Target::Medhub | Target::Synapse),
        drain_s,
        server_cpu_s: cpu,
        cpu_s_per_1000_msgs: if c.acked > 0 { cpu / c.acked as f64 * 1000.0 } else { 0.0 },
        load_generator_cpu_s: me.cpu() - bench0,
        errors: rec.errors(),
    })
}

/// Paced fan-out rate when none is given: about 30,000 deliveries/s (a fifth of what the
/// two cores sustain in this mode, so the last-recipient latency is not queueing behind the
/// previous message), between 1 and 100 msg/s.
fn default_fanout_rate(target: Target, members: usize) -> f64 {
    if target == Target::Synapse {
        return 2.0;
    }
    (30_000.0 / members.max(1) as f64).clamp(1.0, 100.0)
}

/// Max-rate fan-out messages when none is given: about 3 million deliveries.
fn default_fanout_messages(target: Target, members: usize) -> usize {
    if target == Target::Synapse {
        return 100;
    }
    (3_000_000 / members.max(1)).clamp(50, 5_000)
}

#[allow(clippy::too_many_arguments)]
fn fanout_report(
    rec: &Recorder,
    track: &FanoutTrack,
    members: usize,
    messages: u64,
    first_send_ns: u64,
    cpu: f64,
    bench_cpu: f64,
    mode: &str,
) -> FanoutReport {
    let (last, incomplete) = track.last_recipient(messages as usize);
    let deliveries = track.deliveries();
    let elapsed_s = track.last_delivery_ns.load(Ordering::Acquire).saturating_sub(first_send_ns) as f64 / 1e9;
    FanoutReport {
        members,
        mode: mode.to_owned(),
        messages,
        counts: rec.counts(),
        expected_deliveries: messages * members as u64,
        deliveries,
        incomplete_messages: incomplete,
        elapsed_s,
        deliveries_per_s: if elapsed_s > 0.0 { deliveries as f64 / elapsed_s } else { 0.0 },
        last_recipient: LatencySummary::of(&last),
        all_recipients: rec.delivery.summary(),
        ack: rec.ack.summary(),
        send_lag: rec.send_lag.summary(),
        server_cpu_s: cpu,
        cpu_s_per_1000_msgs: if messages > 0 { cpu / messages as f64 * 1000.0 } else { 0.0 },
        cpu_s_per_1000_deliveries: if deliveries > 0 { cpu / deliveries as f64 * 1000.0 } else { 0.0 },
        load_generator_cpu_s: bench_cpu,
        errors: rec.errors(),
        ..FanoutReport::default()
    }
}

#[allow(clippy::too_many_arguments)]
async fn fanout_paced(
    opts: &Options,
    rec: &Arc<Recorder>,
    env: &Env,
    fleet: &Fleet,
    me: &Probe,
    channel: usize,
    members: usize,
    phase: u32,
) -> Result<FanoutReport> {
    let rate = opts.fanout_rate.unwrap_or_else(|| default_fanout_rate(opts.target, members));
    let total = (rate * opts.fanout_duration.as_secs_f64()).round().max(1.0) as u64;
    say(&format!("fanout to {members}: paced, {total} messages at {rate} msg/s"));
    begin_phase(rec, phase, true);
    let track = Arc::new(FanoutTrack::new(phase, members as u32, total as usize)?);
    rec.set_fanout(Some(track.clone()));
    rec.recording.store(true, Ordering::Release);
    let cpu0 = env.probe.cpu();
    let bench0 = me.cpu();
    let start = rec.clock.now_ns() + 50_000_000;
    let sched =
        open_loop(fleet.cmds.clone(), rec.clock, phase, start, rate, total, move |_| (0, Dest::Channel(channel)));
    tokio::task::spawn_blocking(move || sched.join()).await?.map_err(|_| anyhow!("scheduler thread panicked"))?;
    drain(opts, || track.complete.load(Ordering::Acquire) >= total).await;
    rec.recording.store(false, Ordering::Release);
    let mut r = fanout_report(rec, &track, members, total, start, env.probe.cpu() - cpu0, me.cpu() - bench0, "paced");
    r.rate_per_s = Some(rate);
    rec.set_fanout(None);
    Ok(r)
}

#[allow(clippy::too_many_arguments)]
async fn fanout_max(
    opts: &Options,
    rec: &Arc<Recorder>,
    env: &Env,
    fleet: &Fleet,
    me: &Probe,
    channel: usize,
    members: usize,
    phase: u32,
) -> Result<FanoutReport> {
    let total = opts.fanout_messages.unwrap_or_else(|| default_fanout_messages(opts.target, members)) as u64;
    let window = opts.fanout_window.max(1) as u64;
    let delivery_window = opts.fanout_delivery_window.max(1) as u64;
    say(&format!(
        "fanout to {members}: max rate, {total} messages, {window} unacked and {delivery_window} undelivered at most"
    ));
    begin_phase(rec, phase, true);
    let track = Arc::new(FanoutTrack::new(phase, members as u32, total as usize)?);
    rec.set_fanout(Some(track.clone()));
    rec.recording.store(true, Ordering::Release);
    let cpu0 = env.probe.cpu();
    let bench0 = me.cpu();
    let first = rec.clock.now_ns();
    let mut sent = 0u64;
    let mut stalled_since = Instant::now();
    let mut progress = (0u64, 0u64);
    while sent < total {
        let c = rec.counts();
        let answered = c.acked + c.ack_errors;
        let ack_ok = sent - answered.min(sent) < window;
        let delivery_ok = sent < delivery_window || track.is_complete(sent - delivery_window);
        if ack_ok && delivery_ok {
            let tag = Tag { phase, key: sent, sched: rec.clock.now_ns(), sender: 0 };
            fleet.cmds[0].send(Cmd::Send { tag, dest: Dest::Channel(channel) }).map_err(|_| anyhow!("sender gone"))?;
            sent += 1;
            continue;
        }
        let now_progress = (answered, track.complete.load(Ordering::Acquire));
        if now_progress != progress {
            progress = now_progress;
            stalled_since = Instant::now();
        } else if stalled_since.elapsed() > opts.drain_timeout {
            say("fanout: no progress; giving up on this phase");
            break;
        }
        tokio::select! {
            _ = rec.ack_progress.notified() => {}
            _ = track.progress.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    drain(opts, || track.complete.load(Ordering::Acquire) >= sent).await;
    rec.recording.store(false, Ordering::Release);
    let mut r = fanout_report(rec, &track, members, sent, first, env.probe.cpu() - cpu0, me.cpu() - bench0, "max");
    r.window = Some(window as usize);
    r.delivery_window = Some(delivery_window as usize);
    rec.set_fanout(None);
    Ok(r)
}

async fn throughput(
    opts: &Options,
    rec: &Arc<Recorder>,
    env: &Env,
    fleet: &Fleet,
    me: &Probe,
) -> Result<ThroughputReport> {
    let senders = fleet.cmds.len() - fleet.cmds.len() % 2;
    begin_phase(rec, 1, false);
    say(&format!(
        "throughput: {senders} senders × {} in flight, {:.0} s warm-up + {:.0} s measured",
        opts.window,
        opts.warmup.as_secs_f64(),
        opts.duration.as_secs_f64()
    ));
    let until = rec.clock.now_ns() + (opts.warmup + opts.duration).as_nanos() as u64;
    for tx in fleet.cmds.iter().take(senders) {
        let _ = tx.send(Cmd::Window { window: opts.window, until_ns: until, dest: Dest::Pair });
    }
    tokio::time::sleep(opts.warmup).await;
    rec.ack.reset();
    let c0 = rec.counts();
    let postgres = opts.postgres.is_some() && opts.target == Target::Medhub;
    let db0 = postgres.then(|| cpu_seconds_of_command("postgres", env.probe.ticks));
    let cpu0 = env.probe.cpu();
    let bench0 = me.cpu();
    let t0 = Instant::now();
    rec.recording.store(true, Ordering::Release);
    tokio::time::sleep(opts.duration).await;
    rec.recording.store(false, Ordering::Release);
    let c1 = rec.counts();
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = env.probe.cpu() - cpu0;
    let bench = me.cpu() - bench0;
    let database_cpu_s = db0.map(|d| cpu_seconds_of_command("postgres", env.probe.ticks) - d);
    drain(opts, || {
        let c = rec.counts();
        c.acked + c.ack_errors >= c.sent
    })
    .await;
    let acked = c1.acked - c0.acked;
    Ok(ThroughputReport {
        senders,
        window: opts.window,
        warmup_s: opts.warmup.as_secs_f64(),
        duration_s: elapsed,
        acked,
        acked_per_s: acked as f64 / elapsed,
        deliveries_per_s: (c1.delivered - c0.delivered) as f64 / elapsed,
        ack: rec.ack.summary(),
        ack_errors: rec.counts().ack_errors,
        ack_is_durable: matches!(opts.target, Target::Medhub | Target::Synapse),
        server_cpu_s: cpu,
        cpu_s_per_1000_msgs: if acked > 0 { cpu / acked as f64 * 1000.0 } else { 0.0 },
        database_cpu_s,
        load_generator_cpu_s: bench,
        errors: rec.errors(),
    })
}

/// Fills in the problems found and, for medhub, the targets.
fn check(opts: &Options, rec: &Recorder, report: &mut Report) {
    let mut problems = Vec::new();
    if let Some(s) = &report.storm
        && (s.failed > 0 || s.ready < s.clients as u64)
    {
        problems.push(format!(
            "{} of {} clients did not connect: {:?}",
            s.clients as u64 - s.ready,
            s.clients,
            s.errors
        ));
    }
    let dropped = rec.dropped.load(Ordering::Acquire);
    if dropped > 0 {
        problems.push(format!("{dropped} connections ended during the run: {:?}", rec.errors()));
    }
    let unparsed = rec.unparsed.load(Ordering::Acquire);
    if unparsed > 0 {
        problems.push(format!("{unparsed} frames could not be read"));
    }
    if let Some(d) = &report.direct {
        if d.missing_acks > 0 || d.counts.ack_errors > 0 {
            problems.push(format!("direct: {} sends unanswered, {} refused", d.missing_acks, d.counts.ack_errors));
        }
        if d.missing_deliveries > 0 {
            problems.push(format!("direct: {} acknowledged messages never reached the partner", d.missing_deliveries));
        }
    }
    for f in &report.fanout {
        if f.incomplete_messages > 0 || f.counts.ack_errors > 0 {
            problems.push(format!(
                "fanout {} ({}): {} messages not delivered to every member, {} sends refused",
                f.members, f.mode, f.incomplete_messages, f.counts.ack_errors
            ));
        }
    }
    if let Some(t) = &report.throughput {
        if t.ack_errors > 0 {
            problems.push(format!("throughput: {} sends refused: {:?}", t.ack_errors, t.errors));
        }
        if t.acked == 0 {
            problems.push("throughput: nothing was acknowledged".to_owned());
        }
    }
    if let Some(r) = &report.resume {
        if r.all_current_s.is_none() {
            problems
                .push(format!("resume: only {} of {} clients got every missed message", r.current_clients, r.clients));
        }
        if r.gaps + r.duplicates + r.foreign + r.out_of_order > 0 {
            problems.push(format!(
                "resume: {} gaps, {} duplicates, {} foreign events, {} out of order",
                r.gaps, r.duplicates, r.foreign, r.out_of_order
            ));
        }
    }
    report.problems = problems;
    if opts.target == Target::Medhub {
        report.targets = targets(report);
    }
    report.notes.push(
        "latencies are measured from each message's scheduled send time (open loop), except in the closed-loop \
         throughput and max-rate fan-out phases, where they start when the message was written"
            .to_owned(),
    );
    report.notes.push(
        "server CPU is user + system time of the server process from /proc; on loopback the sender's system time \
         includes the kernel's TCP receive processing for the other end, for every target alike"
            .to_owned(),
    );
    if report.backend == "postgres" {
        report.notes.push(
            "server CPU counts medhub's process only; PostgreSQL's processes are reported separately where measured"
                .to_owned(),
        );
    }
}

fn targets(report: &Report) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let full =
        |n: usize, want: usize| if n >= want { String::new() } else { format!(" [at {n}, below the target's {want}]") };
    if let (Some(s), "storm" | "idle") = (&report.storm, report.scenario.as_str()) {
        out.push(TargetCheck {
            measure: format!("connection storm of {} clients{}", s.clients, full(s.clients, 15_000)),
            target: "15,000 connections in ≤ 2 s, zero listen-queue overflows".into(),
            value: format!(
                "{} ready in {}, {} overflows, {} drops",
                s.ready,
                s.all_ready_s.map_or("— (not all)".into(), |v| format!("{v:.2} s")),
                s.listen_queue.listen_overflows,
                s.listen_queue.listen_drops
            ),
            applicable: s.clients >= 15_000,
            met: s.clients >= 15_000
                && s.all_ready_s.is_some_and(|v| v <= 2.0)
                && s.listen_queue.listen_overflows == 0
                && s.listen_queue.listen_drops == 0,
        });
    }
    if let Some(i) = &report.idle {
        out.push(TargetCheck {
            measure: format!("idle memory at {} connections{}", i.connections, full(i.connections as usize, 15_000)),
            target: "≤ 5 KB (5,000 bytes) per authenticated connection".into(),
            value: format!("{:.0} bytes per connection", i.rss_per_connection_bytes),
            applicable: i.connections >= 15_000,
            met: i.connections >= 15_000 && i.rss_per_connection_bytes <= 5_000.0,
        });
    }
    if let Some(d) = &report.direct {
        let at_size = d.connected >= 15_000 && d.rate_per_s >= 1_000.0;
        out.push(TargetCheck {
            measure: format!("1:1 at {:.0} msg/s with {} connected: durable ack p99", d.rate_per_s, d.connected),
            target: "p99 ≤ 5 ms (at 1,000 msg/s, 15,000 connected)".into(),
            value: format!("{:.2} ms", d.ack.p99_ms),
            applicable: at_size,
            met: at_size && d.ack.count > 0 && d.ack.p99_ms <= 5.0 && d.missing_acks == 0,
        });
        out.push(TargetCheck {
            measure: format!("1:1 at {:.0} msg/s with {} connected: delivery p99", d.rate_per_s, d.connected),
            target: "p99 ≤ 10 ms (at 1,000 msg/s, 15,000 connected)".into(),
            value: format!("{:.2} ms", d.delivery.p99_ms),
            applicable: at_size,
            met: at_size && d.delivery.count > 0 && d.delivery.p99_ms <= 10.0 && d.missing_deliveries == 0,
        });
    }
    if !report.fanout.is_empty() {
        let best = report.fanout.iter().map(|f| f.deliveries_per_s).fold(0.0, f64::max);
        out.push(TargetCheck {
            measure: "fan-out deliveries per second (best phase)".into(),
            target: "≥ 300,000 deliveries/s".into(),
            value: format!("{best:.0} deliveries/s"),
            applicable: report.fanout.iter().any(|f| f.members >= 15_000),
            met: best >= 300_000.0,
        });
        if let Some(f) = report.fanout.iter().find(|f| f.members >= 15_000 && f.mode == "paced") {
            out.push(TargetCheck {
                measure: format!(
                    "fan-out to {}: last recipient p99 (paced {:.0} msg/s)",
                    f.members,
                    f.rate_per_s.unwrap_or(0.0)
                ),
                target: "p99 ≤ 75 ms".into(),
                value: format!("{:.1} ms", f.last_recipient.p99_ms),
                applicable: true,
                met: f.last_recipient.count > 0 && f.last_recipient.p99_ms <= 75.0 && f.incomplete_messages == 0,
            });
        }
    }
    if let Some(t) = &report.throughput {
        let want = if report.backend == "postgres" { 25_000.0 } else { 50_000.0 };
        out.push(TargetCheck {
            measure: format!("durable throughput on {}", report.backend),
            target: format!("≥ {want:.0} msg/s"),
            value: format!("{:.0} msg/s", t.acked_per_s),
            applicable: true,
            met: t.acked_per_s >= want && t.ack_errors == 0,
        });
    }
    if let Some(r) = &report.resume {
        out.push(TargetCheck {
            measure: format!(
                "resume of {} clients × {} missed{}",
                r.clients,
                r.missed_per_client,
                full(r.clients, 15_000)
            ),
            target: "all current within 5 s, zero gaps, zero duplicates".into(),
            value: format!(
                "{} , {} gaps, {} duplicates",
                r.all_current_s.map_or("not all current".into(), |v| format!("{v:.2} s")),
                r.gaps,
                r.duplicates
            ),
            applicable: r.clients >= 15_000,
            met: r.clients >= 15_000 && r.all_current_s.is_some_and(|v| v <= 5.0) && r.gaps == 0 && r.duplicates == 0,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_coprime_with_the_sender_count() {
        for n in [2u64, 50, 7919, 15_000, 15_838] {
            assert_eq!(gcd(spread_stride(n), n), 1, "{n}");
        }
    }
}
