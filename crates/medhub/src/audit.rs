//! `medhub audit`: the auditor's tools. `verify` recomputes the audit log from its records
//! (docs/audit.md): every leaf hash from the record's canonical bytes, the numbering, and the
//! RFC 9162 Merkle tree, which must come out as the log's head says.

use std::io::{IsTerminal, Write};

use anyhow::{Result, bail};
use clap::Subcommand;
use medhub_core::audit::LogFault;
use medhub_store::DynStore;
use medhub_store::audit::{Verdict, verify_log};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the whole audit log: each record against its leaf hash, the numbering without
    /// gaps, and the Merkle tree against the log's head. Reports the first bad entry and
    /// exits with status 1 if there is one.
    Verify {
        /// Print the result as one JSON line.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(store: &DynStore, command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify { json } => verify(store, json).await,
    }
}

async fn verify(store: &DynStore, json: bool) -> Result<()> {
    let mut progress = Progress::new();
    let verdict = verify_log(store.as_ref(), |done, total| progress.show(done, total)).await?;
    progress.finish();
    match verdict {
        Verdict::Good(v) => {
            let root = hex(&v.root);
            if json {
                println!("{}", json!({"ok": true, "records": v.size, "root": root}));
            } else {
                println!("audit log verified: {} records, root {root}", v.size);
            }
            Ok(())
        }
        Verdict::Bad { fault, checked } => {
            if json {
                println!(
                    "{}",
                    json!({"ok": false, "records_checked": checked, "fault": describe(&fault), "error": fault.to_string()})
                );
            }
            bail!("audit log verification failed: {fault}")
        }
    }
}

/// The fault as data, for scripts.
fn describe(f: &LogFault) -> serde_json::Value {
    match f {
        LogFault::Gap { expected, found } => json!({"kind": "gap", "expected": expected, "found": found}),
        LogFault::LeafMismatch { seq } => json!({"kind": "leaf_mismatch", "seq": seq}),
        LogFault::Truncated { size, head } => json!({"kind": "truncated", "size": size, "head": head}),
        LogFault::Longer { size, head } => json!({"kind": "longer", "size": size, "head": head}),
        LogFault::RootMismatch { size } => json!({"kind": "root_mismatch", "size": size}),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A progress bar on standard error when it is a terminal; otherwise a line at each tenth.
struct Progress {
    terminal: bool,
    shown: u64,
}

impl Progress {
    fn new() -> Self {
        Progress { terminal: std::io::stderr().is_terminal(), shown: 0 }
    }

    fn show(&mut self, done: u64, total: u64) {
        let tenths = |n: u64| (n.min(total) * 10).checked_div(total).unwrap_or(10);
        let mut err = std::io::stderr();
        if self.terminal {
            let width = 40u64;
            let filled = (done.min(total) * width).checked_div(total).unwrap_or(width);
            let bar: String = (0..width).map(|i| if i < filled { '#' } else { '.' }).collect();
            let _ = write!(err, "\r[{bar}] {done}/{total} records");
        } else if tenths(done) > tenths(self.shown) {
            let _ = writeln!(err, "verified {done}/{total} records");
        }
        self.shown = done;
    }

    fn finish(&mut self) {
        if self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}
