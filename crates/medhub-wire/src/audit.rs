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
