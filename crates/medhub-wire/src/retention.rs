//! REST bodies of retention and legal hold (issue 4 §6, docs/retention.md).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// One class's retention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RetentionPolicyView {
    /// `clinical` (linked to a patient), `direct`, `group` or `channel`.
    pub class: String,
    /// Messages older than this many days (of 24 hours) lose their content.
    pub days: u32,
    /// Who set it; `null` for the operator.
    pub set_by: Option<Uuid>,
    #[schema(value_type = String, format = DateTime)]
    pub set_at: Timestamp,
}

/// `GET /api/v1/retention/policies`: the classes with a policy. A class not listed is kept for
/// ever.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RetentionPolicies {
    pub policies: Vec<RetentionPolicyView>,
}

/// `PUT /api/v1/retention/policies/{class}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRetentionPolicy {
    /// 1 to 36500 days; at least 2190 (6 years) for `clinical`.
    pub days: i64,
}

/// What a legal hold covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HoldScopeView {
    /// Every message of the conversation.
    Conversation { conversation_id: Uuid },
    /// Every message of the organization's conversations about the patient.
    Patient { patient_ref: String },
    /// What the user sent and what they could see (messages of conversations they were a
    /// member of when the message was sent); their personal data cannot be erased.
    User { user_id: Uuid },
}

/// `POST /api/v1/legal-holds`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLegalHold {
    pub scope: HoldScopeView,
    /// The matter or case reference and why (10-1000 characters). Kept with the hold, shown
    /// to compliance officers; never in the audit log or the server log.
    pub reason: String,
}

impl std::fmt::Debug for CreateLegalHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateLegalHold").field("scope", &self.scope).finish_non_exhaustive()
    }
}

/// `POST /api/v1/legal-holds/{id}/lift`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiftLegalHold {
    /// Why the hold ends (10-1000 characters): the matter closed, settled, ...
    pub reason: String,
}

impl std::fmt::Debug for LiftLegalHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiftLegalHold { .. }")
    }
}

/// A legal hold, active or lifted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LegalHoldView {
    pub id: Uuid,
    pub scope: HoldScopeView,
    pub reason: String,
    pub created_by: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    pub lifted_by: Option<Uuid>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub lifted_at: Option<Timestamp>,
    pub lift_reason: Option<String>,
}

/// `GET /api/v1/legal-holds`: newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LegalHoldList {
    pub holds: Vec<LegalHoldView>,
}

/// `POST /api/v1/retention/expire`: what the run did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExpiryReportView {
    /// Messages whose content was removed.
    pub removed: u64,
    /// Earlier revisions deleted with them.
    pub revisions: u64,
    /// Messages past retention kept by a legal hold.
    pub held: u64,
    /// Messages of erased users removed or flagged by finishing an interrupted erasure.
    pub erasure_finished: u64,
}

/// `POST /api/v1/users/{id}/erase`: what the erasure did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErasureReportView {
    pub user_id: Uuid,
    /// The account's new (pseudonymous) display name.
    pub display_name: String,
    /// Messages whose content was removed (non-clinical, not held).
    pub removed: u64,
    pub revisions: u64,
    /// Messages kept and flagged `erasure_requested_at`: clinical content under retention,
    /// or content under a legal hold.
    pub flagged: u64,
    pub sessions_ended: u64,
    /// False when the account had been erased before (this call finished the work).
    pub first_time: bool,
}
