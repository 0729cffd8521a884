//! REST bodies of patient scope: care teams and break-glass.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// One person on a patient's care team.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CareTeamMemberView {
    pub user_id: Uuid,
    /// Who put them on it.
    pub added_by: Option<Uuid>,
    #[schema(value_type = String, format = DateTime)]
    pub added_at: Timestamp,
}

/// `GET /api/v1/patients/{patient_ref}/care-team`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CareTeam {
    pub patient_ref: String,
    pub members: Vec<CareTeamMemberView>,
}

/// `POST /api/v1/conversations/{id}/break-glass`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassRequest {
    /// Why access is needed now, for the compliance review (10-1000 characters).
    pub reason: String,
}

impl std::fmt::Debug for BreakGlassRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BreakGlassRequest { .. }")
    }
}

/// One break-glass grant: who opened which patient's conversation, why, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BreakGlassGrantView {
    pub id: Uuid,
    pub user_id: Uuid,
    /// The session it was opened in.
    pub session_id: Uuid,
    pub conversation_id: Uuid,
    pub patient_ref: String,
    pub reason: String,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    /// Access ends at this instant.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// When the end was recorded in the audit trail (shortly after `expires_at`).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
}

/// `GET /api/v1/break-glass`: newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BreakGlassList {
    pub grants: Vec<BreakGlassGrantView>,
}
