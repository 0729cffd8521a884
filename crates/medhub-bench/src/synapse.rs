//! The Matrix Synapse peer, driven over its client-server API: `PUT …/send/m.room.message/{txn}`
//! to send (the 200 answer means the event is persisted), long-polled `/sync` to receive.
//!
//! Set-up uses the scripts in `bench/peers/synapse` as their README describes. Provisioning is
//! slow (about 8 rooms/s and 25 joins/s), so Synapse runs use a few hundred users at most.
//! Synapse's listener has an accept queue of 50, so clients open their connections a few at
//! a time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Deserialize;

use crate::client::{ClientSetup, Cmd, Dest};
use crate::stats::Tag;

/// Long-poll timeout of one `/sync`.
const SYNC_TIMEOUT_MS: u64 = 10_000;

/// Provisioned users and rooms, as `provision.py` writes them.
#[derive(Debug, Deserialize)]
struct Provisioned {
    server: ServerInfo,
    sync_filter: serde_json::Value,
    users: Vec<ProvisionedUser>,
    rooms: Vec<ProvisionedRoom>,
    #[serde(default)]
    timings_s: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct ServerInfo {
    base_url: String,
}

#[derive(Debug, Deserialize)]
struct ProvisionedUser {
    access_token: String,
    #[serde(default)]
    since: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ProvisionedRoom {
    room_id: String,
    kind: String,
    members: Vec<usize>,
}

/// A provisioned, running Synapse.
pub struct SynapseEnv {
    pub dir: PathBuf,
    pub bench_dir: PathBuf,
    pub pid: u32,
    pub base_url: Arc<str>,
    pub filter: Arc<str>,
    pub users: Vec<(Arc<str>, Option<String>)>,
    /// Pair room of user `i` (both members of a pair share it).
    pub pair_room: Vec<Option<Arc<str>>>,
    /// The big room (channel 0) and its members.
    pub big_room: Option<(Arc<str>, Vec<usize>)>,
    /// Every command run to prepare it.
    pub commands: Vec<String>,
    pub provision_timings: serde_json::Value,
    pub provision_s: f64,
}

fn run_script(
    commands: &mut Vec<String>,
    dir: &Path,
    env: &[(&str, String)],
    program: &str,
    args: &[String],
) -> Result<String> {
    let shown_env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let line = format!("(cd {} && {} {} {})", dir.display(), shown_env.join(" "), program, args.join(" "));
    crate::say(&format!("+ {line}"));
    commands.push(line);
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().with_context(|| format!("run {program}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "{program} failed ({}):\n{}\n{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr).lines().rev().take(30).collect::<Vec<_>>().join("\n")
        );
    }
    Ok(stdout)
}

/// Percent-encodes a path segment or query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl SynapseEnv {
    /// Sets Synapse up (`setup.sh`), restarts it on an empty database unless `reuse`, and
    /// provisions `users` users in pairs plus one room of `big_room` members.
    pub async fn prepare(
        dir: &Path,
        bench_dir: &Path,
        work: &Path,
        users: usize,
        big_room: usize,
        reuse: bool,
    ) -> Result<Self> {
        let dir = dir.to_path_buf();
        let bench_dir = bench_dir.to_path_buf();
        let work = work.to_path_buf();
        tokio::task::spawn_blocking(move || Self::prepare_blocking(&dir, &bench_dir, &work, users, big_room, reuse))
            .await?
    }

    fn prepare_blocking(
        dir: &Path,
        bench_dir: &Path,
        work: &Path,
        users: usize,
        big_room: usize,
        reuse: bool,
    ) -> Result<Self> {
        let env = [("MEDHUB_BENCH_DIR", bench_dir.display().to_string())];
        let mut commands = Vec::new();
        run_script(&mut commands, dir, &env, "./setup.sh", &[])?;
        let syn_dir = bench_dir.join("synapse");
        if !reuse {
            run_script(&mut commands, dir, &env, "./stop.sh", &[])?;
            for f in ["homeserver.db", "homeserver.db-wal", "homeserver.db-shm", "homeserver.db-journal"] {
                let p = syn_dir.join(f);
                if p.exists() {
                    std::fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))?;
                }
            }
            let log = syn_dir.join("homeserver.log");
            let log_len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            commands.push(format!("rm -f {}/homeserver.db*", syn_dir.display()));
            run_script(&mut commands, dir, &env, "./start.sh", &[])?;
            // A fresh database runs background updates for a few seconds after the first start.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let text = std::fs::read(&log).unwrap_or_default();
                let fresh = String::from_utf8_lossy(text.get(log_len as usize..).unwrap_or_default()).to_string();
                if fresh.contains("No more background updates to do") || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        } else {
            run_script(&mut commands, dir, &env, "./start.sh", &[])?;
        }
        let out = work.join("synapse-users.json");
        let python = bench_dir.join("synapse-venv/bin/python");
        let mut args = vec![
            "provision.py".to_owned(),
            users.to_string(),
            "--pairs".to_owned(),
            "--initial-sync".to_owned(),
            "--out".to_owned(),
            out.display().to_string(),
        ];
        if big_room > 1 {
            args.push("--big-room".to_owned());
            args.push(big_room.to_string());
        }
        let started = Instant::now();
        run_script(&mut commands, dir, &env, &python.display().to_string(), &args)?;
        let provision_s = started.elapsed().as_secs_f64();
        let text = std::fs::read_to_string(&out).with_context(|| format!("read {}", out.display()))?;
        let p: Provisioned = serde_json::from_str(&text).context("parse provision.py output")?;
        let pid: u32 = std::fs::read_to_string(syn_dir.join("synapse.pid"))
            .context("read synapse.pid")?
            .trim()
            .parse()
            .context("parse synapse.pid")?;
        let mut pair_room = vec![None; p.users.len()];
        let mut big = None;
        for r in &p.rooms {
            let id: Arc<str> = Arc::from(r.room_id.as_str());
            match r.kind.as_str() {
                "pair" => {
                    for &m in &r.members {
                        if let Some(slot) = pair_room.get_mut(m) {
                            *slot = Some(id.clone());
                        }
                    }
                }
                "big" => big = Some((id, r.members.clone())),
                _ => {}
            }
        }
        let filter = serde_json::to_string(&p.sync_filter)?;
        Ok(SynapseEnv {
            dir: dir.to_path_buf(),
            bench_dir: bench_dir.to_path_buf(),
            pid,
            base_url: Arc::from(p.server.base_url.trim_end_matches('/')),
            filter: Arc::from(encode(&filter)),
            users: p.users.into_iter().map(|u| (Arc::<str>::from(u.access_token), u.since)).collect(),
            pair_room,
            big_room: big,
            commands,
            provision_timings: p.timings_s,
            provision_s,
        })
    }

    /// Stops Synapse (`stop.sh`).
    pub async fn stop(&self) -> Result<()> {
        let dir = self.dir.clone();
        let env = [("MEDHUB_BENCH_DIR", self.bench_dir.display().to_string())];
        tokio::task::spawn_blocking(move || {
            let mut ignored = Vec::new();
            run_script(&mut ignored, &dir, &env, "./stop.sh", &[]).map(|_| ())
        })
        .await?
    }

    /// An HTTP/1.1 client with keep-alive for every simulated user.
    pub fn http() -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .pool_max_idle_per_host(4096)
            .pool_idle_timeout(Duration::from_secs(300))
            .timeout(Duration::from_millis(SYNC_TIMEOUT_MS + 60_000))
            .tcp_nodelay(true)
            .build()
            .context("build the HTTP client")
    }
}

#[derive(Deserialize)]
struct SyncResponse {
    next_batch: String,
    #[serde(default)]
    rooms: Option<SyncRooms>,
}

#[derive(Deserialize)]
struct SyncRooms {
    #[serde(default)]
    join: HashMap<String, JoinedRoom>,
}

#[derive(Deserialize)]
struct JoinedRoom {
    timeline: Timeline,
}

#[derive(Deserialize)]
struct Timeline {
    #[serde(default)]
    events: Vec<TimelineEvent>,
    #[serde(default)]
    limited: bool,
}

#[derive(Deserialize)]
struct TimelineEvent {
    #[serde(default)]
    content: Content,
}

#[derive(Deserialize, Default)]
struct Content {
    /// The benchmark tag of the message (see [`Tag`]).
    #[serde(default)]
    k: Option<String>,
}

/// One simulated Matrix user: a `/sync` long-poll loop plus its sends.
#[derive(Clone)]
pub struct SynapseClient {
    pub http: reqwest::Client,
    pub base: Arc<str>,
    pub token: Arc<str>,
    pub since: Option<String>,
    pub filter: Arc<str>,
    pub pair_room: Option<Arc<str>>,
    pub channels: Arc<Vec<Arc<str>>>,
    pub body: Arc<str>,
}

enum Answer {
    Ok,
    Err(String),
}

impl SynapseClient {
    async fn sync(&self, since: Option<String>, timeout_ms: u64) -> Result<SyncResponse> {
        let mut url = format!("{}/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}", self.base, self.filter);
        if let Some(s) = since {
            url.push_str("&since=");
            url.push_str(&encode(&s));
        }
        let r = self.http.get(&url).bearer_auth(&*self.token).send().await.map_err(|e| anyhow!("sync: {e}"))?;
        if !r.status().is_success() {
            bail!("sync: http {}", r.status().as_u16());
        }
        let bytes = r.bytes().await.map_err(|e| anyhow!("sync body: {e}"))?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    fn put(&self, room: Arc<str>, tag: Tag) -> impl std::future::Future<Output = (Tag, Answer)> + Send + 'static {
        let url = format!(
            "{}/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            self.base,
            encode(&room),
            encode(&tag.encode())
        );
        let body = format!(r#"{{"msgtype":"m.text","body":"{}","k":"{}"}}"#, self.body, tag.encode());
        let req = self.http.put(url).bearer_auth(&*self.token).header("content-type", "application/json").body(body);
        async move {
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes().await;
                    (tag, Answer::Ok)
                }
                Ok(r) => (tag, Answer::Err(format!("http {}", r.status().as_u16()))),
                Err(e) => (tag, Answer::Err(if e.is_timeout() { "timeout".into() } else { "request error".into() })),
            }
        }
    }

    fn room(&self, dest: Dest) -> Option<Arc<str>> {
        match dest {
            Dest::Pair => self.pair_room.clone(),
            Dest::Channel(n) => self.channels.get(n).cloned(),
        }
    }

    pub async fn run(self, setup: ClientSetup) {
        let ClientSetup { idx, rec, permit, started_ns, mut cmds, stop } = setup;
        // The "handshake": a first, immediate sync opens the connection and moves `since` to
        // now, so that nothing sent before the run is counted.
        let mut since = match tokio::time::timeout(Duration::from_secs(60), self.sync(self.since.clone(), 0)).await {
            Ok(Ok(r)) => r.next_batch,
            Ok(Err(e)) => {
                rec.error(&format!("{e}"));
                rec.storm_result(false, started_ns, idx);
                return;
            }
            Err(_) => {
                rec.error("first sync timeout");
                rec.storm_result(false, started_ns, idx);
                return;
            }
        };
        rec.storm_result(true, started_ns, idx);
        drop(permit);
        let this = Arc::new(self);
        let mut sync = next_sync(this.clone(), since.clone());
        let mut puts = FuturesUnordered::new();
        let mut window: Option<(usize, u64, Dest, u64, usize)> = None;
        let mut cmds_open = true;
        loop {
            let mut outgoing: Vec<(Tag, Dest)> = Vec::new();
            tokio::select! {
                _ = stop.cancelled() => break,
                r = &mut sync => {
                    match r {
                        Ok(resp) => {
                            since = resp.next_batch;
                            for room in resp.rooms.into_iter().flat_map(|r| r.join.into_values()) {
                                if room.timeline.limited {
                                    rec.error("sync limited (messages skipped)");
                                }
                                for ev in room.timeline.events {
                                    if let Some(tag) = ev.content.k.as_deref().and_then(Tag::parse) {
                                        rec.on_delivery(idx, &tag);
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            if rec.stopping.load(std::sync::atomic::Ordering::Acquire) {
                                break;
                            }
                            rec.error(&format!("{e}"));
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    sync = next_sync(this.clone(), since.clone());
                }
                cmd = cmds.recv(), if cmds_open => match cmd {
                    None => cmds_open = false,
                    Some(Cmd::Send { tag, dest }) => outgoing.push((tag, dest)),
                    Some(Cmd::Window { window: w, until_ns, dest }) => {
                        let state = window.get_or_insert((w, until_ns, dest, 0, 0));
                        state.0 = w;
                        state.1 = until_ns;
                        state.2 = dest;
                        while state.4 < state.0 && rec.clock.now_ns() < state.1 {
                            state.3 += 1;
                            state.4 += 1;
                            outgoing.push((Tag { phase: rec.phase(), key: state.3, sched: rec.clock.now_ns(), sender: idx as u32 }, state.2));
                        }
                    }
                },
                Some((tag, answer)) = puts.next(), if !puts.is_empty() => {
                    match answer {
                        Answer::Ok => rec.on_ack(idx, &tag),
                        Answer::Err(code) => rec.on_ack_error(&code),
                    }
                    if let Some(state) = window.as_mut() {
                        state.4 = state.4.saturating_sub(1);
                        if rec.clock.now_ns() < state.1 {
                            state.3 += 1;
                            state.4 += 1;
                            outgoing.push((Tag { phase: rec.phase(), key: state.3, sched: rec.clock.now_ns(), sender: idx as u32 }, state.2));
                        }
                    }
                }
            }
            for (tag, dest) in outgoing {
                let Some(room) = this.room(dest) else {
                    rec.error("no such destination");
                    continue;
                };
                puts.push(this.put(room, tag));
                rec.on_sent(idx, tag.sched);
            }
        }
    }
}

type SyncFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<SyncResponse>> + Send>>;

/// The next long poll of a client.
fn next_sync(client: Arc<SynapseClient>, since: String) -> SyncFuture {
    Box::pin(async move { client.sync(Some(since), SYNC_TIMEOUT_MS).await })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_percent_encoded() {
        assert_eq!(encode("!abc:bench.local"), "%21abc%3Abench.local");
        assert_eq!(encode("1.2.3.4"), "1.2.3.4");
    }
}
