//! REST bodies of the audit log's proofs (docs/audit.md): hashes in lower-case hex.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /api/v1/audit/proof/inclusion`: record `seq` is in the log of `size` records. Check
/// it with RFC 9162 §2.1.3.2 against a signed tree head of that size, whose root must equal
/// `root`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InclusionProof {
    pub seq: u64,
    pub size: u64,
    /// The record's leaf hash.
    pub leaf_hash: String,
    /// The root of the log's first `size` records.
    pub root: String,
    /// The audit path, leaf to root.
    pub proof: Vec<String>,
}

/// `GET /api/v1/audit/proof/consistency`: the log of `from` records is a prefix of the log
/// of `to` records (RFC 9162 §2.1.4.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    pub from_root: String,
    pub to_root: String,
    pub proof: Vec<String>,
}

/// One audit record as search answers it (docs/audit.md, the record). Ids and hashes only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEventView {
    /// The record's leaf number in the Merkle log: what `GET /api/v1/audit/proof/inclusion` takes.
    pub seq: u64,
    /// The record's leaf hash.
    pub leaf_hash: String,
    /// The leaf encoding it was hashed with.
    pub version: u8,
    #[schema(value_type = String, format = DateTime)]
    pub at: jiff::Timestamp,
    pub actor: Option<uuid::Uuid>,
    pub session: Option<uuid::Uuid>,
    /// 16 bytes of SHA-256 of the client's user agent, in hex.
    pub device: Option<String>,
    pub ip: Option<String>,
    pub action: String,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub patient_ref: Option<String>,
    pub target: Option<String>,
    /// `allow`, `deny`, `success`, `failure` or `error`.
    pub outcome: String,
    pub reason: Option<String>,
    pub node: Option<String>,
    pub region: Option<String>,
}

/// `GET /api/v1/audit/events`: a page of records, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditSearchPage {
    pub events: Vec<AuditEventView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next: Option<String>,
}
