//! `medhub audit`: the auditor's tools. `verify` recomputes the audit log from its records
//! (docs/audit.md): every leaf hash from the record's canonical bytes, the numbering, and the
//! RFC 9162 Merkle tree, which must come out as the log's head says.

use std::io::{IsTerminal, Write};

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use medhub_core::SystemClock;
use medhub_core::audit::{AuditRecord, LogFault, Outcome};
use medhub_service::tree_heads::{
    HeadExport, TreeHeadSigner, export_line, hex, parse_public_key, read_exported, sign_if_grown,
};
use medhub_store::DynStore;
use medhub_store::audit::AuditQuery;
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
    /// Make a compliance report (docs/audit-reports.md): patient-access, user-activity,
    /// break-glass, failed-sign-ins, permission-changes or exports, as HTML or CSV. The
    /// report is recorded in the audit log as the operator's.
    Report(crate::reports::ReportArgs),
    /// Search an organization's audit records, newest first. The search is itself recorded.
    Search {
        /// The organization (its name).
        #[arg(long)]
        org: String,
        /// Records of this user (a username).
        #[arg(long)]
        user: Option<String>,
        /// Records about this patient (the EHR's patient id).
        #[arg(long)]
        patient: Option<String>,
        /// Records of this action (patient.read, auth.sign_in, break_glass.start, …).
        #[arg(long)]
        action: Option<String>,
        /// Records about objects of this type (conversation, message, user, grant, …).
        #[arg(long)]
        object_type: Option<String>,
        /// Records about this object (with --object-type).
        #[arg(long, requires = "object_type")]
        object_id: Option<String>,
        /// allow, deny, success, failure or error.
        #[arg(long)]
        outcome: Option<String>,
        /// Records at or after this instant (RFC 3339).
        #[arg(long)]
        since: Option<medhub_core::Timestamp>,
        /// Records before this instant (RFC 3339).
        #[arg(long)]
        until: Option<medhub_core::Timestamp>,
        /// Continue after this cursor (printed after a full page).
        #[arg(long)]
        before: Option<String>,
        /// Records to print, 1 to 500.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object per line (the REST API's shape) instead of a table.
        #[arg(long)]
        json: bool,
    },
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
        AuditCommand::Report(args) => crate::reports::run(store, args).await,
        AuditCommand::Search {
            org,
            user,
            patient,
            action,
            object_type,
            object_id,
            outcome,
            since,
            until,
            before,
            limit,
            json,
        } => {
            let orgs = store.orgs().await?;
            let Some(org) = orgs.into_iter().find(|o| o.is_named(&org)) else {
                bail!("no organization named {org:?} (medhub admin org list shows them)");
            };
            let actor = match user {
                None => None,
                Some(name) => match store.user_record_by_username(&name.to_ascii_lowercase()).await? {
                    Some(r) if r.user.org == org.id => Some(r.user.id),
                    _ => bail!("no user named {name:?} in {}", org.name),
                },
            };
            let outcome = match outcome.as_deref() {
                None => None,
                Some(o) => Some(Outcome::parse(o).context("--outcome must be allow, deny, success, failure or error")?),
            };
            let before = before.as_deref().map(medhub_service::audit::parse_search_cursor).transpose()?;
            let query = AuditQuery {
                actor,
                patient_ref: patient,
                action,
                object_type,
                object_id,
                outcome,
                since,
                until,
                before,
                ..AuditQuery::org(org.id, limit)
            };
            medhub_service::audit::check_search(&query)?;
            // The operator's search is recorded like a compliance officer's.
            let mut r = AuditRecord::new(medhub_core::Timestamp::now(), "audit.search", Outcome::Success)
                .object("audit_log", org.id)
                .target(medhub_service::audit::search_summary(&query))
                .reason("operator");
            r.org = Some(org.id);
            r.patient_ref = query.patient_ref.clone();
            let entries = store.search_audit(&query).await?;
            // Recorded before the answer, after the query, so that a search does not find itself.
            store.append_audit(&[r]).await?;
            let mut out = std::io::stdout().lock();
            for e in &entries {
                if json {
                    writeln!(out, "{}", serde_json::to_string(&medhub_api::audit_event_view(e))?)?;
                } else {
                    let r = &e.record;
                    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                    writeln!(
                        out,
                        "{:>8} {} {:<20} {:<8} actor={} object={}:{} patient={} {}",
                        e.seq,
                        r.at,
                        r.action,
                        r.outcome.as_str(),
                        r.actor.map_or_else(|| "-".into(), |a| a.to_string()),
                        show(&r.object_type),
                        show(&r.object_id),
                        show(&r.patient_ref),
                        show(&r.target),
                    )?;
                }
            }
            if entries.len() == limit as usize
                && let Some(last) = entries.last()
            {
                eprintln!("more: --before {}", medhub_service::audit::search_cursor(last));
            }
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
