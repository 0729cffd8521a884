//! The medhub target: a fresh store seeded fast through the library crates, then the real
//! `medhub serve` process (or, for the smoke test, the same server in process).
//!
//! Seeding links the services directly: users without passwords (no Argon2), sessions
//! minted with `issue_session`, conversations and missed messages through the commit
//! pipeline, many at once so that the group commit batches them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{StreamExt, TryStreamExt};
use medhub_core::model::{ConversationKind, MemberRole, Priority, SessionState, SystemRole};
use medhub_core::plan::{Command, SendMessage};
use medhub_core::policy::Actor;
use medhub_core::{ClientTxnId, ConversationId, MessageId, SystemClock, UserId};
use medhub_service::auth::NewUser;
use medhub_service::{ServiceConfig, Services};
use medhub_store::Location;
use serde::Serialize;
use tokio::runtime::Runtime;

/// Where the run's data lives.
#[derive(Clone, Debug)]
pub enum Storage {
    Sqlite { data_dir: PathBuf },
    Postgres { admin_url: String, database: String, url: String },
}

impl Storage {
    pub fn backend(&self) -> &'static str {
        match self {
            Storage::Sqlite { .. } => "sqlite",
            Storage::Postgres { .. } => "postgres",
        }
    }

    fn location(&self) -> Location {
        match self {
            Storage::Sqlite { data_dir } => Location::Sqlite { data_dir: data_dir.clone() },
            Storage::Postgres { url, .. } => Location::Postgres { url: url.clone(), pool_size: 16 },
        }
    }

    /// A fresh SQLite data directory under `work`.
    pub fn fresh_sqlite(work: &Path) -> Result<Self> {
        let data_dir = work.join("medhub-data");
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir).with_context(|| format!("clear {}", data_dir.display()))?;
        }
        Ok(Storage::Sqlite { data_dir })
    }

    /// A fresh PostgreSQL database `medhub_bench_<pid>_<n>` on the server of `admin_url`.
    pub async fn fresh_postgres(admin_url: &str, n: u32) -> Result<Self> {
        let database = format!("medhub_bench_{}_{}", std::process::id(), n);
        let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connect to PostgreSQL at {}", redact_url(admin_url)))?;
        let task = tokio::spawn(conn);
        client.batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).await?;
        client.batch_execute(&format!("CREATE DATABASE {database}")).await.context("create the database")?;
        drop(client);
        let _ = task.await;
        Ok(Storage::Postgres { admin_url: admin_url.to_owned(), url: with_database(admin_url, &database), database })
    }

    /// Removes the data (drops the PostgreSQL database; SQLite directories are removed with the
    /// work directory).
    pub async fn remove(&self) -> Result<()> {
        if let Storage::Postgres { admin_url, database, .. } = self {
            let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
            let task = tokio::spawn(conn);
            client.batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).await?;
            drop(client);
            let _ = task.await;
        }
        Ok(())
    }
}

/// Replaces the database name in a `postgres://` URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end).unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..path_start], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A URL with any password replaced, for output.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let rest = &url[scheme_end..];
    match (rest.find('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}{}:<redacted>{}", &url[..scheme_end], &rest[..colon], &rest[at..])
        }
        _ => url.to_owned(),
    }
}

/// What to create before the server starts.
#[derive(Clone, Debug, Default)]
pub struct SeedPlan {
    pub users: usize,
    /// One direct conversation per pair of users (0,1), (2,3), ...
    pub pairs: bool,
    /// Channels of these sizes; channel `n` holds users `0..sizes[n]`, user 0 its owner.
    pub channels: Vec<usize>,
    /// Messages to commit in every pair conversation after `cursor` is taken (alternating
    /// senders), so that every client has missed this many on reconnect.
    pub missed_per_pair: usize,
    pub body: String,
}

/// What seeding produced.
#[derive(Clone, Debug)]
pub struct Seeded {
    pub tokens: Vec<Arc<str>>,
    pub pairs: Vec<Arc<str>>,
    pub channels: Vec<Arc<str>>,
    /// The newest event before the missed messages: every resuming client's cursor.
    pub cursor: u64,
    pub report: SeedReport,
}

/// How long seeding took.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SeedReport {
    pub users: usize,
    pub conversations: usize,
    pub channel_members: usize,
    pub missed_messages: usize,
    pub users_and_sessions_s: f64,
    pub conversations_s: f64,
    pub missed_messages_s: f64,
    pub total_s: f64,
}

/// In-flight service calls while seeding: deep enough to fill the commit pipeline's batches.
const SEED_CONCURRENCY: usize = 1024;

async fn seed_on(services: Services, plan: SeedPlan) -> Result<Seeded> {
    let started = Instant::now();
    let auth = services.auth.clone();
    auth.bootstrap("medhub-bench", "admin").await.map_err(|e| anyhow!("bootstrap: {e}"))?;
    let mut users: Vec<(usize, UserId, Arc<str>)> = futures_util::stream::iter(0..plan.users)
        .map(|i| {
            let auth = auth.clone();
            async move {
                let name = format!("bench{i}");
                let user = auth
                    .create_user(NewUser {
                        username: name.clone(),
                        display_name: name,
                        role: SystemRole::User,
                        password: None,
                        must_change_password: false,
                    })
                    .await
                    .map_err(|e| anyhow!("create user {i}: {e}"))?;
                let issued = auth
                    .issue_session(&user, SessionState::Active)
                    .await
                    .map_err(|e| anyhow!("session for user {i}: {e}"))?;
                Ok::<_, anyhow::Error>((i, user.id, Arc::<str>::from(issued.token)))
            }
        })
        .buffer_unordered(SEED_CONCURRENCY)
        .try_collect()
        .await?;
    users.sort_by_key(|u| u.0);
    let users_s = started.elapsed().as_secs_f64();

    let conv_started = Instant::now();
    let messaging = services.messaging.clone();
    let mut pairs: Vec<(usize, ConversationId)> = Vec::new();
    if plan.pairs {
        pairs = futures_util::stream::iter(0..plan.users / 2)
            .map(|p| {
                let messaging = messaging.clone();
                let (a, b) = (users[2 * p].1, users[2 * p + 1].1);
                async move {
                    let (c, _) = messaging
                        .create_conversation(
                            Actor::System,
                            ConversationKind::Direct,
                            None,
                            vec![(a, MemberRole::Member), (b, MemberRole::Member)],
                            None,
                        )
                        .await
                        .map_err(|e| anyhow!("create pair {p}: {e}"))?;
                    Ok::<_, anyhow::Error>((p, c.id))
                }
            })
            .buffer_unordered(SEED_CONCURRENCY)
            .try_collect()
            .await?;
        pairs.sort_by_key(|p| p.0);
    }
    let mut channels = Vec::new();
    let mut channel_members = 0;
    for (n, &size) in plan.channels.iter().enumerate() {
        if size > users.len() || size == 0 {
            bail!("a channel of {size} members needs {size} users; only {} were seeded", users.len());
        }
        let members: Vec<(UserId, MemberRole)> = users[..size]
            .iter()
            .enumerate()
            .map(|(i, u)| (u.1, if i == 0 { MemberRole::Owner } else { MemberRole::Member }))
            .collect();
        let (c, _) = messaging
            .create_conversation(
                Actor::System,
                ConversationKind::Channel,
                Some(format!("bench channel {n} ({size})")),
                members,
                None,
            )
            .await
            .map_err(|e| anyhow!("create channel of {size}: {e}"))?;
        channels.push(Arc::<str>::from(c.id.to_string()));
        channel_members += size;
    }
    let conversations_s = conv_started.elapsed().as_secs_f64();
    let cursor = services.store.last_event_id().await.map_err(|e| anyhow!("read the event log head: {e}"))?.get();

    let missed_started = Instant::now();
    let missed = pairs.len() * plan.missed_per_pair;
    if plan.missed_per_pair > 0 {
        let per = plan.missed_per_pair;
        let body = plan.body.clone();
        let pipeline = services.pipeline.clone();
        let users = &users;
        let pairs = &pairs;
        futures_util::stream::iter(0..missed)
            .map(|n| {
                let pipeline = pipeline.clone();
                let body = body.clone();
                // Message j of every pair is submitted before message j + 1 of any pair, so a
                // conversation's messages commit in submission order and alternate senders.
                let (j, p) = (n / pairs.len(), n % pairs.len());
                let sender = users[2 * p + (j % 2)].1;
                let conversation = pairs[p].1;
                async move {
                    let cmd = Command::SendMessage(SendMessage {
                        id: MessageId::new_v7(),
                        actor: sender,
                        conversation,
                        client_txn_id: ClientTxnId::parse(&format!("r.{p}.{j}"))?,
                        body,
                        priority: Priority::Routine,
                        reply_to: None,
                    });
                    pipeline.submit(cmd).await.map_err(|e| anyhow!("missed message {j} of pair {p}: {e}"))?;
                    Ok::<_, anyhow::Error>(())
                }
            })
            .buffer_unordered(SEED_CONCURRENCY.min(per * pairs.len()).max(1))
            .try_collect::<()>()
            .await?;
    }
    let missed_messages_s = missed_started.elapsed().as_secs_f64();
    Ok(Seeded {
        tokens: users.into_iter().map(|u| u.2).collect(),
        pairs: pairs.into_iter().map(|p| Arc::<str>::from(p.1.to_string())).collect(),
        channels,
        cursor,
        report: SeedReport {
            users: plan.users,
            conversations: plan.users / 2 * usize::from(plan.pairs) + plan.channels.len(),
            channel_members,
            missed_messages: missed,
            users_and_sessions_s: users_s,
            conversations_s,
            missed_messages_s,
            total_s: started.elapsed().as_secs_f64(),
        },
    })
}

/// Server tuning passed to the process through `MEDHUB__…` variables.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tuning {
    /// `(variable, value)` pairs.
    pub env: Vec<(String, String)>,
}

impl Tuning {
    /// Limits that let a few connections send as fast as the server commits.
    pub fn throughput(max_in_flight: usize) -> Self {
        Self {
            env: vec![
                ("MEDHUB__LIMITS__FRAMES_PER_SECOND".into(), "1000000".into()),
                ("MEDHUB__LIMITS__FRAME_BURST".into(), "1000000".into()),
                ("MEDHUB__LIMITS__MAX_IN_FLIGHT".into(), max_in_flight.to_string()),
            ],
        }
    }

    fn get<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.env.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.parse().ok())
    }

    fn api_config(&self) -> medhub_api::ApiConfig {
        // Clients say `hello` with their session token, as with the binary (see spawn_binary).
        let mut c = medhub_api::ApiConfig { allow_token_hello: true, ..Default::default() };
        if let Some(v) = self.get("MEDHUB__LIMITS__FRAMES_PER_SECOND") {
            c.frames_per_second = v;
        }
        if let Some(v) = self.get("MEDHUB__LIMITS__FRAME_BURST") {
            c.frame_burst = v;
        }
        if let Some(v) = self.get("MEDHUB__LIMITS__MAX_IN_FLIGHT") {
            c.max_in_flight = v;
        }
        c
    }
}

/// A running medhub server.
pub enum MedhubServer {
    /// `medhub serve` as a child process: its CPU and memory are the server's alone.
    Process { child: tokio::process::Child, pid: u32, addr: SocketAddr, log: PathBuf, command: String },
    /// The server in this process (smoke tests): correct, but CPU and memory are shared.
    InProcess { runtime: Option<Runtime>, addr: SocketAddr, shutdown: medhub_api::Shutdown },
}

/// How to run the server.
#[derive(Clone, Debug)]
pub enum Launch {
    Binary { path: PathBuf, port: u16, work: PathBuf },
    InProcess,
}

fn seed_runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("medhub-bench-server")
        .enable_all()
        .build()
        .context("start the seeding runtime")
}

/// Seeds a fresh store and starts the server on it.
pub async fn seed_and_start(
    storage: &Storage,
    plan: SeedPlan,
    launch: &Launch,
    tuning: &Tuning,
) -> Result<(Seeded, MedhubServer)> {
    let runtime = seed_runtime()?;
    let location = storage.location();
    let api = tuning.api_config();
    let in_process = matches!(launch, Launch::InProcess);
    let (seeded, state) = runtime
        .spawn(async move {
            let store = medhub_store::open(&location).await.map_err(|e| anyhow!("open the store: {e}"))?;
            store.migrate().await.map_err(|e| anyhow!("migrate: {e}"))?;
            let (services, background) = Services::start(store, ServiceConfig::default(), Arc::new(SystemClock))
                .await
                .map_err(|e| anyhow!("start services: {e}"))?;
            let seeded = seed_on(services.clone(), plan).await?;
            if in_process {
                let state = medhub_api::AppState::new(services, api);
                let listener = medhub_api::bind("127.0.0.1:0".parse()?, 4096)?;
                let addr = listener.local_addr()?;
                tokio::spawn(medhub_api::serve(listener, state.clone()));
                Ok::<_, anyhow::Error>((seeded, Some((state, addr))))
            } else {
                background.abort();
                drop(services);
                Ok((seeded, None))
            }
        })
        .await
        .context("seeding task")??;
    match (launch, state) {
        (Launch::InProcess, Some((state, addr))) => {
            Ok((seeded, MedhubServer::InProcess { runtime: Some(runtime), addr, shutdown: state.shutdown.clone() }))
        }
        (Launch::Binary { path, port, work }, _) => {
            // Let the seeding store's threads and connections close before the server opens it.
            tokio::task::spawn_blocking(move || runtime.shutdown_timeout(Duration::from_secs(5))).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let server = spawn_binary(path, *port, work, storage, tuning).await?;
            Ok((seeded, server))
        }
        (Launch::InProcess, None) => Err(anyhow!("in-process server did not start")),
    }
}

async fn spawn_binary(path: &Path, port: u16, work: &Path, storage: &Storage, tuning: &Tuning) -> Result<MedhubServer> {
    if !path.exists() {
        bail!("no medhub binary at {} (build it with `cargo build --release -p medhub`)", path.display());
    }
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let log = work.join("medhub-server.log");
    let log_file = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let mut cmd = tokio::process::Command::new(path);
    // The load generator's clients say `hello` with their session token: 15,000 ticket
    // requests per storm would measure ticket issuance, not the real-time path.
    cmd.arg("serve").env("MEDHUB__SERVER__LISTEN", addr.to_string()).env("MEDHUB__AUTH__ALLOW_TOKEN_HELLO", "true");
    let mut shown = vec![format!("MEDHUB__SERVER__LISTEN={addr}"), "MEDHUB__AUTH__ALLOW_TOKEN_HELLO=true".to_owned()];
    match storage {
        Storage::Sqlite { data_dir } => {
            cmd.env("MEDHUB__STORAGE__DATA_DIR", data_dir);
            shown.push(format!("MEDHUB__STORAGE__DATA_DIR={}", data_dir.display()));
        }
        Storage::Postgres { url, .. } => {
            cmd.env("MEDHUB__STORAGE__DATABASE_URL", url);
            // The node's own files (its server key) go to the work directory, not the cwd.
            cmd.env("MEDHUB__STORAGE__DATA_DIR", work.join("node-files"));
            shown.push(format!("MEDHUB__STORAGE__DATABASE_URL={}", redact_url(url)));
        }
    }
    for (k, v) in &tuning.env {
        cmd.env(k, v);
        shown.push(format!("{k}={v}"));
    }
    let command = format!("{} {} serve", shown.join(" "), path.display());
    cmd.stdout(Stdio::from(log_file.try_clone()?))
        .stderr(Stdio::from(log_file))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let child = cmd.spawn().with_context(|| format!("spawn {}", path.display()))?;
    let pid = child.id().ok_or_else(|| anyhow!("medhub exited at once; see {}", log.display()))?;
    let mut server = MedhubServer::Process { child, pid, addr, log: log.clone(), command };
    if let Err(e) = wait_ready(addr, &mut server).await {
        server.stop().await;
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(20).collect();
        bail!("{e}; last lines of {}:\n{}", log.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    Ok(server)
}

async fn wait_ready(addr: SocketAddr, server: &mut MedhubServer) -> Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let url = format!("http://{addr}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let MedhubServer::Process { child, .. } = server
            && let Some(status) = child.try_wait()?
        {
            bail!("medhub exited with {status} before it was ready");
        }
        if let Ok(r) = http.get(&url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("medhub did not answer {url} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl MedhubServer {
    pub fn addr(&self) -> SocketAddr {
        match self {
            MedhubServer::Process { addr, .. } | MedhubServer::InProcess { addr, .. } => *addr,
        }
    }

    /// The server's process id (this process when in process).
    pub fn pid(&self) -> u32 {
        match self {
            MedhubServer::Process { pid, .. } => *pid,
            MedhubServer::InProcess { .. } => std::process::id(),
        }
    }

    pub fn command(&self) -> String {
        match self {
            MedhubServer::Process { command, .. } => command.clone(),
            MedhubServer::InProcess { .. } => "in-process: medhub_api::serve on a 2-thread runtime".to_owned(),
        }
    }

    pub fn log(&self) -> Option<&Path> {
        match self {
            MedhubServer::Process { log, .. } => Some(log),
            MedhubServer::InProcess { .. } => None,
        }
    }

    /// SIGTERM, then SIGKILL after 15 s.
    pub async fn stop(&mut self) {
        match self {
            MedhubServer::Process { child, pid, .. } => {
                crate::signal_term(*pid);
                if tokio::time::timeout(Duration::from_secs(15), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
            }
            MedhubServer::InProcess { runtime, shutdown, .. } => {
                shutdown.cancel();
                if let Some(rt) = runtime.take() {
                    let _ = tokio::task::spawn_blocking(move || rt.shutdown_timeout(Duration::from_secs(5))).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_rewritten_and_redacted() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://u@h/db?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:<redacted>@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
