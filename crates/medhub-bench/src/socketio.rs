//! The Socket.IO peer: `node bench/peers/socketio/server.js`, a relay with no persistence.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The running Node.js process.
pub struct NodeServer {
    child: tokio::process::Child,
    pub pid: u32,
    pub port: u16,
    pub command: String,
    pub log: PathBuf,
}

impl NodeServer {
    /// Starts `node server.js` in `dir` on `port` and waits for its `ready <port>` line.
    pub async fn start(dir: &Path, port: u16, work: &Path) -> Result<Self> {
        let script = dir.join("server.js");
        if !script.exists() {
            bail!("no Socket.IO peer at {}", script.display());
        }
        if !dir.join("node_modules").exists() {
            bail!("run `npm ci` in {} first", dir.display());
        }
        let log = work.join("socketio-server.log");
        let log_file = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut child = tokio::process::Command::new("node")
            .arg("server.js")
            .current_dir(dir)
            .env("PORT", port.to_string())
            .env_remove("PING_INTERVAL_MS")
            .env_remove("PING_TIMEOUT_MS")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawn node (is Node.js installed?)")?;
        let pid = child.id().ok_or_else(|| anyhow!("node exited at once"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| anyhow!("node did not print `ready` within 30 s; see {}", log.display()))??;
        match ready {
            Some(l) if l.starts_with("ready") => {}
            other => bail!("node printed {other:?} instead of `ready`; see {}", log.display()),
        }
        // Keep draining stdout so that the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let command = format!("cd {} && PORT={port} node server.js", dir.display());
        Ok(Self { child, pid, port, command, log })
    }

    pub async fn stop(&mut self) {
        crate::signal_term(self.pid);
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}
