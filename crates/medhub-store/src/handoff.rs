//! Storage of shift handoffs (issue 5 §4, I-PASS). The rules are pure functions in
//! `medhub_core::handoff`; docs/clinical.md "Shift handoff" describes the design.
//!
//! A handoff is stored as its header (`handoffs`), one row per patient note
//! (`handoff_patients`) with its action list (`handoff_actions`), and its conversations
//! (`handoff_conversations`). Each write takes its audit records and appends them in its own
//! transaction.

use async_trait::async_trait;
use jiff::Timestamp;
use medhub_core::audit::AuditRecord;
use medhub_core::handoff::Handoff;
use medhub_core::{HandoffId, UserId};

use crate::StoreError;

/// The most handoffs one listing returns: a clinician gives or receives a few per shift, so
/// this covers weeks.
pub const MAX_HANDOFF_LIST: u32 = 100;

#[async_trait]
pub trait HandoffStore: Send + Sync {
    /// Stores a handoff as given, with `audit` in the same transaction.
    async fn create_handoff(&self, handoff: &Handoff, audit: &[AuditRecord]) -> Result<(), StoreError>;
    /// A handoff by id, whatever its state.
    async fn handoff(&self, id: HandoffId) -> Result<Option<Handoff>, StoreError>;
    /// The handoffs `user` gave or received, created at or after `since`, newest first, at
    /// most `limit` (capped at [`MAX_HANDOFF_LIST`]).
    async fn handoffs_for(&self, user: UserId, since: Timestamp, limit: u32) -> Result<Vec<Handoff>, StoreError>;
    /// Stores the closing of a handoff (accepted, with each patient's synthesis, or
    /// cancelled) only if it is still `given`: false when someone closed it first. `audit`
    /// is appended in the same transaction when it closes.
    async fn close_handoff(&self, closed: &Handoff, audit: &[AuditRecord]) -> Result<bool, StoreError>;
}
