//! REST bodies of shift handoffs in the I-PASS format (issue 5 §4, docs/clinical.md "Shift
//! handoff"). The notes are clinical content: their `Debug` prints no text.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// One to-do item for the receiver (I-PASS "A").
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionItemView {
    /// 1-500 characters.
    pub text: String,
    #[serde(default)]
    pub done: bool,
}

/// The I-PASS note about one patient.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatientNoteView {
    /// The EHR's patient id (1-64 characters of `[A-Za-z0-9.-]`).
    pub patient_ref: String,
    /// "I": `stable`, `watcher` or `unstable`.
    pub severity: String,
    /// "P": the patient summary, 1-4000 characters.
    pub summary: String,
    /// "A": at most 30 items.
    #[serde(default)]
    pub actions: Vec<ActionItemView>,
    /// "S": situation awareness and contingency planning, at most 4000 characters.
    #[serde(default)]
    pub awareness: String,
    /// "S": the receiver's synthesis, once accepted (absent in a request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthesis: Option<String>,
}

/// `POST /api/v1/handoffs`: give a handoff.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GiveHandoff {
    /// The incoming clinician.
    pub to: Uuid,
    /// At most 60; each patient once.
    #[serde(default)]
    pub patients: Vec<PatientNoteView>,
    /// Conversations handed over with the shift (at most 100), of which the giver is a member.
    #[serde(default)]
    pub conversations: Vec<Uuid>,
}

/// The receiver's synthesis of one patient.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SynthesisView {
    pub patient_ref: String,
    /// 1-4000 characters.
    pub synthesis: String,
}

/// `POST /api/v1/handoffs/{id}/accept`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptHandoff {
    /// One for every patient in the handoff.
    #[serde(default)]
    pub synthesis: Vec<SynthesisView>,
}

/// A handoff with its notes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HandoffView {
    pub id: Uuid,
    pub from: Uuid,
    pub to: Uuid,
    /// `given`, `accepted`, `cancelled` or `expired`.
    pub state: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// Until when the receiver can accept it.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub closed_at: Option<Timestamp>,
    pub patients: Vec<PatientNoteView>,
    pub conversations: Vec<Uuid>,
}

/// A handoff in a listing: no notes and no patient references (a listing is not a read of
/// patient data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HandoffSummary {
    pub id: Uuid,
    pub from: Uuid,
    pub to: Uuid,
    pub state: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    pub patient_count: usize,
    pub conversation_count: usize,
}

/// `GET /api/v1/handoffs`: the caller's handoffs of the last 7 days, given and received,
/// newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HandoffList {
    pub handoffs: Vec<HandoffSummary>,
}

macro_rules! no_text_debug {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($t), " { .. }"))
            }
        }
    )*};
}
no_text_debug!(ActionItemView, PatientNoteView, GiveHandoff, SynthesisView, AcceptHandoff, HandoffView);
