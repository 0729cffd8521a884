//! `medhub audit export`: an organization's audit records as FHIR R4 AuditEvent, NDJSON or
//! CSV (docs/audit-export.md), for operators. The same output as `GET /api/v1/audit/export`,
//! audited the same way (`audit.export`, no actor, reason `operator`) before anything is
//! written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use medhub_core::SystemClock;
use medhub_core::audit::Outcome;
use medhub_service::AuditSink;
use medhub_service::audit::Origin;
use medhub_service::audit_export::{Export, ExportFilter, begin};
use medhub_store::DynStore;
use medhub_wire::audit_export::ExportFormat;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The organization whose records to export (its name, letter case aside).
    #[arg(long)]
    org: String,
    /// `fhir` (a FHIR R4 Bundle of AuditEvent), `fhir-ndjson` (one AuditEvent per line),
    /// `ndjson` (the flat record per line) or `csv`.
    #[arg(long, value_parser = parse_format)]
    format: ExportFormat,
    /// Only the records of this user: a username (as `medhub audit search --user`) or a
    /// user id.
    #[arg(long)]
    user: Option<String>,
    /// Only the records about this patient (the EHR's patient id).
    #[arg(long)]
    patient: Option<String>,
    /// Only this action (`patient.read`, `break_glass.start`, `http`, …).
    #[arg(long)]
    action: Option<String>,
    /// Only records whose object is of this type (`conversation`, `user`, `grant`, …).
    #[arg(long)]
    object_type: Option<String>,
    /// Only records about this object id.
    #[arg(long)]
    object_id: Option<String>,
    /// Only this outcome: allow, deny, success, failure or error.
    #[arg(long, value_parser = parse_outcome)]
    outcome: Option<Outcome>,
    /// Records at or after this instant (RFC 3339, e.g. 2026-01-01T00:00:00Z).
    #[arg(long)]
    since: Option<jiff::Timestamp>,
    /// Records before this instant (RFC 3339).
    #[arg(long)]
    until: Option<jiff::Timestamp>,
    /// Write to this file (created with mode 0600; an existing file is not overwritten)
    /// instead of standard output. It appears only once the export is complete.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_format(s: &str) -> Result<ExportFormat, String> {
    ExportFormat::parse(s).ok_or_else(|| "expected fhir, fhir-ndjson, ndjson or csv".to_owned())
}

fn parse_outcome(s: &str) -> Result<Outcome, String> {
    Outcome::parse(s).ok_or_else(|| "expected allow, deny, success, failure or error".to_owned())
}

pub async fn run(store: &DynStore, origin: &Origin, args: ExportArgs) -> Result<()> {
    let orgs = store.orgs().await?;
    let Some(org) = orgs.into_iter().find(|o| o.is_named(&args.org)) else {
        bail!("no organization named {:?} (medhub admin org list shows them)", args.org)
    };
    let actor = match &args.user {
        None => None,
        Some(a) => Some(match uuid::Uuid::parse_str(a) {
            Ok(id) => medhub_core::UserId::from_uuid(id),
            Err(_) => {
                let name = medhub_core::validate::username(&a.trim().to_ascii_lowercase())
                    .map_err(|_| anyhow::anyhow!("no user named {a:?}"))?;
                match store.user_record_by_username(&name).await? {
                    Some(r) if r.user.org == org.id => r.user.id,
                    _ => bail!("no user named {a:?} in {}", org.name),
                }
            }
        }),
    };
    let filter = ExportFilter {
        actor,
        patient_ref: args.patient,
        action: args.action,
        object_type: args.object_type,
        object_id: args.object_id,
        outcome: args.outcome,
        since: args.since,
        until: args.until,
    };
    if let Some(out) = &args.out
        && out.exists()
    {
        bail!("{} exists: choose another file", out.display());
    }
    // The export's record goes through a sink of its own, committed before any output.
    let (sink, writer) = AuditSink::new(store.clone(), Arc::new(SystemClock), origin.clone());
    let writer = tokio::spawn(writer);
    let record = sink.event("audit.export", Outcome::Success).reason("operator");
    let started = begin(store.clone(), &sink, record, org.id, &filter, args.format).await;
    drop(sink);
    let _ = writer.await;
    let mut export = started.context("the export's audit record could not be stored: nothing was exported")?;
    let records = match &args.out {
        Some(out) => to_file(&mut export, out).await?,
        None => {
            let mut stdout = std::io::stdout().lock();
            copy(&mut export, &mut stdout).await?
        }
    };
    let to = args.out.as_ref().map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
    eprintln!(
        "medhub: exported {records} audit records of {} as {} to {to} (export {}, itself in the audit log)",
        org.name,
        args.format.as_str(),
        export.id()
    );
    Ok(())
}

/// Writes the whole export to `out` through a temporary file beside it, renamed only once
/// complete, so a failed export leaves no file that looks whole.
async fn to_file(export: &mut Export, out: &Path) -> Result<u64> {
    let file_name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "export".into());
    let partial = out.with_file_name(format!(".{file_name}.partial"));
    let written = async {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let mut w = std::io::BufWriter::new(file);
        let n = copy(export, &mut w).await?;
        let file = w.into_inner().map_err(|e| e.into_error()).context("writing the export")?;
        file.sync_all().context("writing the export")?;
        std::fs::rename(&partial, out).with_context(|| format!("renaming to {}", out.display()))?;
        Ok::<u64, anyhow::Error>(n)
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

async fn copy(export: &mut Export, w: &mut impl Write) -> Result<u64> {
    while let Some(chunk) = export.next_chunk().await.context("reading the audit log")? {
        w.write_all(&chunk).context("writing the export")?;
    }
    w.flush().context("writing the export")?;
    Ok(export.records())
}
