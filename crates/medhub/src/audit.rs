//! `medhub audit`: the auditor's tools. `verify` recomputes the audit log from its records
//! (docs/audit.md): every leaf hash from the record's canonical bytes, the numbering, and the
//! RFC 9162 Merkle tree, which must come out as the log's head says.

use std::io::{IsTerminal, Write};

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use medhub_core::SystemClock;
use medhub_core::audit::LogFault;
use medhub_service::tree_heads::{
    HeadExport, TreeHeadSigner, export_line, hex, parse_public_key, read_exported, sign_if_grown,
};
use medhub_store::DynStore;
use medhub_store::audit::{Verdict, verify_log};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the whole audit log: each record against its leaf hash, the numbering without
    /// gaps, the Merkle tree against the log's head, and the log against every exported
    /// signed tree head. Reports the first bad entry and exits with status 1 if there is one.
    Verify {
        /// The exported tree heads (one JSON line each). Default: `audit.tree_head_file`, if
        /// it exists.
        #[arg(long)]
        heads: Option<PathBuf>,
        /// The public key the heads were signed with, in hex (`medhub audit public-key`).
        /// Default: the key derived from this server's key file.
        #[arg(long)]
        public_key: Option<String>,
        /// Print the result as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Sign the log's current tree head now (if the log grew), append it to
    /// `audit.tree_head_file` and print it.
    SignHead,
    /// Print the public key that verifies this server's tree heads, in hex: give it to the
    /// auditors, who then need nothing from the server to check exported heads.
    PublicKey,
    /// Export an organization's audit records as FHIR R4 AuditEvent, NDJSON or CSV
    /// (docs/audit-export.md). The export is itself audited.
    Export(crate::audit_export::ExportArgs),
}

/// What the audit commands need besides the store.
pub struct AuditContext {
    pub signer: TreeHeadSigner,
    /// Where heads go; its file is also where `verify` looks for them by default.
    pub export: HeadExport,
    /// This server's node and region, for the records the commands write (`export`).
    pub origin: medhub_service::audit::Origin,
}

pub async fn run(store: &DynStore, ctx: &AuditContext, command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify { heads, public_key, json } => {
            verify(store, ctx, heads.as_deref(), public_key.as_deref(), json).await
        }
        AuditCommand::SignHead => {
            match sign_if_grown(store, &ctx.signer, &ctx.export, &SystemClock).await? {
                Some(h) => println!("{}", export_line(&h)),
                None => match store.latest_tree_head().await? {
                    Some(h) => println!("{}", export_line(&h)),
                    None => println!("the audit log is empty: nothing to sign"),
                },
            }
            Ok(())
        }
        AuditCommand::PublicKey => {
            println!("{}", hex(&ctx.signer.public_key()));
            Ok(())
        }
        AuditCommand::Export(args) => crate::audit_export::run(store, &ctx.origin, args).await,
    }
}

async fn verify(
    store: &DynStore,
    ctx: &AuditContext,
    heads: Option<&Path>,
    public_key: Option<&str>,
    json: bool,
) -> Result<()> {
    let key = match public_key {
        Some(k) => parse_public_key(k)?,
        None => ctx.signer.public_key(),
    };
    let default = ctx.export.file.as_deref();
    let file = heads.or_else(|| default.filter(|f| f.exists()));
    let exported = match file {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading the tree heads in {}", f.display()))?;
            read_exported(&text, &key)?
        }
        None => {
            let shown = default.map_or_else(
                || "no export file is configured".to_owned(),
                |f| format!("{} does not exist", f.display()),
            );
            eprintln!(
                "medhub: no exported tree heads ({shown}): edits, gaps and a cut tail are found, \
                 but not a rewrite of the whole log together with its head"
            );
            Vec::new()
        }
    };
    let mut progress = Progress::new();
    let verdict = verify_log(store.as_ref(), &exported, |done, total| progress.show(done, total)).await?;
    progress.finish();
    match verdict {
        Verdict::Good(v) => {
            let root = hex(&v.root);
            if json {
                println!("{}", json!({"ok": true, "records": v.size, "root": root, "tree_heads": exported.len()}));
            } else {
                println!(
                    "audit log verified: {} records, root {root}, against {} exported tree heads",
                    v.size,
                    exported.len()
                );
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
