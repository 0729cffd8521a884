//! Exports of the audit log (docs/audit-export.md): one organization's records, filtered like
//! a search, as FHIR R4 AuditEvent, NDJSON or CSV, for the REST route and `medhub audit
//! export`.
//!
//! An export is itself audited: its `audit.export` record (the format and the filters, ids
//! only) is committed before the first byte is produced, and an export whose record cannot be
//! stored does not start (fail closed). The records are read a page at a time with the store's
//! keyset cursor and encoded page by page, so memory stays the same for a million records.

use bytes::Bytes;
use jiff::Timestamp;
use medhub_core::audit::{AuditRecord, Outcome};
use medhub_core::{OrgId, UserId};
use medhub_store::DynStore;
use medhub_store::audit::AuditQuery;
use medhub_wire::audit_export::{ExportEntry, ExportFormat};

use crate::{AuditSink, ServiceError};

/// Records read and encoded per chunk.
pub const PAGE: u32 = 500;

/// The longest filter value accepted (ids, codes and patient references are far shorter).
const MAX_FILTER_LEN: usize = 128;

/// Which records an export holds, within the caller's organization. Empty means every record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportFilter {
    pub actor: Option<UserId>,
    pub patient_ref: Option<String>,
    pub action: Option<String>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub outcome: Option<Outcome>,
    /// Records at or after this instant.
    pub since: Option<Timestamp>,
    /// Records before this instant.
    pub until: Option<Timestamp>,
}

impl ExportFilter {
    /// Checks the values: short, printable, and a time range that is not reversed.
    pub fn validate(&self) -> Result<(), ServiceError> {
        let fields = [
            ("patient", &self.patient_ref),
            ("action", &self.action),
            ("object_type", &self.object_type),
            ("object_id", &self.object_id),
        ];
        for (name, value) in fields {
            if let Some(v) = value
                && (v.is_empty() || v.len() > MAX_FILTER_LEN || v.chars().any(|c| c.is_control() || c.is_whitespace()))
            {
                return Err(ServiceError::InvalidRequest(format!(
                    "{name} must be 1 to {MAX_FILTER_LEN} characters without spaces"
                )));
            }
        }
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since >= until
        {
            return Err(ServiceError::InvalidRequest("since must be before until".into()));
        }
        Ok(())
    }

    /// The store query of the first page, in `org`.
    pub fn query(&self, org: OrgId) -> AuditQuery {
        AuditQuery {
            actor: self.actor,
            patient_ref: self.patient_ref.clone(),
            action: self.action.clone(),
            object_type: self.object_type.clone(),
            object_id: self.object_id.clone(),
            outcome: self.outcome,
            since: self.since,
            until: self.until,
            ..AuditQuery::org(org, PAGE)
        }
    }

    /// The export's `target` in its audit record: the format and each filter set, as
    /// `name=value` separated by spaces (`patient` alone: the patient is the record's
    /// `patient_ref`). Ids, codes and times only.
    pub fn summary(&self, format: ExportFormat) -> String {
        let mut parts = vec![format!("format={}", format.as_str())];
        if let Some(a) = self.actor {
            parts.push(format!("actor={a}"));
        }
        if self.patient_ref.is_some() {
            // The id itself goes in the record's `patient_ref` (as the search's record does).
            parts.push("patient".to_owned());
        }
        for (name, v) in [("action", &self.action), ("object_type", &self.object_type), ("object_id", &self.object_id)]
        {
            if let Some(v) = v {
                parts.push(format!("{name}={v}"));
            }
        }
        if let Some(o) = self.outcome {
            parts.push(format!("outcome={}", o.as_str()));
        }
        if let Some(t) = self.since {
            parts.push(format!("since={t}"));
        }
        if let Some(t) = self.until {
            parts.push(format!("until={t}"));
        }
        parts.join(" ")
    }
}

/// Where an export is in its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Nothing produced yet: the next chunk starts with the format's prefix.
    Start,
    /// Entries produced; more may follow.
    Entries,
    /// The suffix is out.
    Done,
}

/// An export that has been audited and is ready to produce its output, chunk by chunk.
pub struct Export {
    id: uuid::Uuid,
    format: ExportFormat,
    generated: Timestamp,
    query: AuditQuery,
    store: DynStore,
    stage: Stage,
    records: u64,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export").field("id", &self.id).field("format", &self.format).finish_non_exhaustive()
    }
}

/// Audits an export and returns it, ready to stream. `record` is the `audit.export` record of
/// whoever asks (a user's, or the operator's with the reason `operator`); it gets the export's
/// id as its object, the organization, the filtered patient and the filter summary as its
/// target, and is committed before this returns. If it cannot be, the export does not start.
pub async fn begin(
    store: DynStore,
    audit: &AuditSink,
    mut record: AuditRecord,
    org: OrgId,
    filter: &ExportFilter,
    format: ExportFormat,
) -> Result<Export, ServiceError> {
    filter.validate()?;
    let id = uuid::Uuid::now_v7();
    record.org = Some(org);
    record = record.object("export", id).target(filter.summary(format));
    if let Some(p) = &filter.patient_ref {
        record = record.patient(p);
    }
    let generated = record.at;
    audit.write(vec![record]).await?;
    Ok(Export { id, format, generated, query: filter.query(org), store, stage: Stage::Start, records: 0 })
}

/// The `audit.export` record of a refused export (a caller without the export permission).
pub fn refused(mut record: AuditRecord, org: OrgId, filter: &ExportFilter, format: ExportFormat) -> AuditRecord {
    record.org = Some(org);
    record.outcome = Outcome::Deny;
    record.object_type = Some("export".into());
    let mut record = record.target(filter.summary(format)).reason("forbidden");
    if let Some(p) = &filter.patient_ref {
        record = record.patient(p);
    }
    record
}

impl Export {
    /// The export's id: the object id of its audit record.
    pub fn id(&self) -> uuid::Uuid {
        self.id
    }

    pub fn format(&self) -> ExportFormat {
        self.format
    }

    /// Records produced so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The next chunk of output: the prefix with the first page, then a page at a time, the
    /// last with the suffix; `None` once everything is out. Newest records first (the
    /// search's order). An error leaves the output unfinished: the caller must not present it
    /// as complete.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ServiceError> {
        if self.stage == Stage::Done {
            return Ok(None);
        }
        let mut out = String::new();
        let first = self.stage == Stage::Start;
        if first {
            out.push_str(&self.format.prefix(self.generated));
            self.stage = Stage::Entries;
        }
        let page = self.store.search_audit(&self.query).await?;
        for (i, e) in page.iter().enumerate() {
            let entry = ExportEntry { seq: e.seq, record: &e.record, leaf_hash: &e.leaf_hash };
            self.format.push(&mut out, &entry, first && i == 0);
        }
        self.records += page.len() as u64;
        match page.last() {
            Some(last) if page.len() as u64 >= u64::from(self.query.limit) => {
                self.query.before = Some((last.record.at, last.seq));
            }
            _ => {
                out.push_str(self.format.suffix());
                self.stage = Stage::Done;
            }
        }
        Ok(Some(Bytes::from(out)))
    }
}
