//! The Socket.IO peer: `node bench/peers/socketio/server.js`, a relay with no persistence.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};

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
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg("server.js")
            .current_dir(dir)
            .env("PORT", port.to_string())
            .env_remove("PING_INTERVAL_MS")
            .env_remove("PING_TIMEOUT_MS");
        let (child, pid) = crate::spawn_until_ready(&mut cmd, "node", &log).await?;
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
