//! REST bodies of on-call schedules, the on-call directory and role addressing
//! (docs/clinical.md, docs/api.md), and the canonical JSON of a schedule's rotations, which
//! is also how the store keeps them.
//!
//! Rotations are written by people (administrators, charge nurses, the CLI), so their JSON is
//! plain: a civil start such as `"2026-03-02T08:00:00"` in the schedule's IANA zone, a kind
//! (`daily`, `weekly`, or `custom` with `days` or `hours`) and an optional weekday window
//! (`{"days": ["mon", "tue"], "from": "20:00", "to": "08:00"}`). [`RotationSpec::to_rotation`]
//! and [`RotationSpec::from_rotation`] convert to and from the core's types; the core then
//! checks the rules.

use jiff::Timestamp;
use jiff::civil::{self, Weekday};
use medhub_core::UserId;
use medhub_core::schedule::{Restriction, Rotation, RotationKind, ShiftLength, ShiftSource, Weekdays};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::views::{MessageView, PriorityView};

/// Why a rotation's JSON does not describe a rotation (before the core's rules are checked).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rotation {rotation}: {why}")]
pub struct SpecError {
    /// The rotation's index in the list.
    pub rotation: usize,
    pub why: &'static str,
}

/// The kind of a rotation's shifts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RotationKindName {
    /// One calendar day per shift, handed over at the start's time of day.
    Daily,
    /// Seven calendar days per shift.
    Weekly,
    /// `days` calendar days (1-366) or `hours` civil hours (1-336) per shift.
    Custom,
}

/// A day of the week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WeekdayName {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl WeekdayName {
    const ALL: [(WeekdayName, Weekday); 7] = [
        (WeekdayName::Mon, Weekday::Monday),
        (WeekdayName::Tue, Weekday::Tuesday),
        (WeekdayName::Wed, Weekday::Wednesday),
        (WeekdayName::Thu, Weekday::Thursday),
        (WeekdayName::Fri, Weekday::Friday),
        (WeekdayName::Sat, Weekday::Saturday),
        (WeekdayName::Sun, Weekday::Sunday),
    ];

    fn weekday(self) -> Weekday {
        Self::ALL.iter().find(|(n, _)| *n == self).map_or(Weekday::Monday, |(_, d)| *d)
    }
}

/// A daily window outside which a rotation holds nobody.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// The days on which a window starts (a Friday night window ends on Saturday).
    pub days: Vec<WeekdayName>,
    /// Local start, `HH:MM` or `HH:MM:SS`.
    #[schema(example = "20:00")]
    pub from: String,
    /// Local end; before `from` it is the next day (`20:00`-`08:00`), equal to `from` a whole
    /// day.
    #[schema(example = "08:00")]
    pub to: String,
}

/// One rotation (layer) of a schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotationSpec {
    /// User ids in turn order; someone may appear twice. Shift k goes to participant k mod n.
    pub participants: Vec<Uuid>,
    /// The first hand-over, a civil date and time in the schedule's zone, to the first
    /// participant.
    #[schema(example = "2026-03-02T08:00:00")]
    pub start: String,
    pub kind: RotationKindName,
    /// For `custom`: shifts of this many calendar days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// For `custom`: shifts of this many civil hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpec>,
}

fn civil_time(s: &str) -> Option<civil::Time> {
    s.parse::<civil::Time>().ok()
}

fn show_time(t: civil::Time) -> String {
    if t.second() == 0 && t.subsec_nanosecond() == 0 {
        format!("{:02}:{:02}", t.hour(), t.minute())
    } else {
        t.to_string()
    }
}

impl RotationSpec {
    /// The core's rotation, or what is wrong with the JSON. The rules (participants, lengths,
    /// years, whole seconds) are then the core's to check.
    pub fn to_rotation(&self, index: usize) -> Result<Rotation, SpecError> {
        let bad = |why| SpecError { rotation: index, why };
        // A date alone would mean midnight, which is rarely what a rota means: ask for the time.
        let start: civil::DateTime = Some(&self.start)
            .filter(|s| s.contains('T'))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("start must be a local date and time such as 2026-03-02T08:00:00"))?;
        let kind = match (self.kind, self.days, self.hours) {
            (RotationKindName::Daily, None, None) => RotationKind::Daily,
            (RotationKindName::Weekly, None, None) => RotationKind::Weekly,
            (RotationKindName::Custom, Some(d), None) => RotationKind::Custom(ShiftLength::Days(d)),
            (RotationKindName::Custom, None, Some(h)) => RotationKind::Custom(ShiftLength::Hours(h)),
            (RotationKindName::Custom, _, _) => return Err(bad("a custom rotation needs either days or hours")),
            _ => return Err(bad("days and hours belong to custom rotations only")),
        };
        let restriction = match &self.window {
            None => None,
            Some(w) => {
                let days: Vec<Weekday> = w.days.iter().map(|d| d.weekday()).collect();
                let from = civil_time(&w.from).ok_or_else(|| bad("window.from must be a time such as 20:00"))?;
                let to = civil_time(&w.to).ok_or_else(|| bad("window.to must be a time such as 08:00"))?;
                Some(Restriction { days: Weekdays::of(&days), from, to })
            }
        };
        Ok(Rotation {
            participants: self.participants.iter().map(|u| UserId::from_uuid(*u)).collect(),
            start,
            kind,
            restriction,
        })
    }

    /// The JSON of a core rotation, in canonical form (times without zero seconds, days in
    /// week order).
    pub fn from_rotation(r: &Rotation) -> Self {
        let (kind, days, hours) = match r.kind {
            RotationKind::Daily => (RotationKindName::Daily, None, None),
            RotationKind::Weekly => (RotationKindName::Weekly, None, None),
            RotationKind::Custom(ShiftLength::Days(d)) => (RotationKindName::Custom, Some(d), None),
            RotationKind::Custom(ShiftLength::Hours(h)) => (RotationKindName::Custom, None, Some(h)),
        };
        RotationSpec {
            participants: r.participants.iter().map(|u| u.as_uuid()).collect(),
            start: r.start.to_string(),
            kind,
            days,
            hours,
            window: r.restriction.map(|w| WindowSpec {
                days: WeekdayName::ALL.iter().filter(|(_, d)| w.days.contains(*d)).map(|(n, _)| *n).collect(),
                from: show_time(w.from),
                to: show_time(w.to),
            }),
        }
    }
}

/// The canonical JSON of a schedule's rotations, as stored.
pub fn rotations_json(rotations: &[Rotation]) -> String {
    let specs: Vec<RotationSpec> = rotations.iter().map(RotationSpec::from_rotation).collect();
    serde_json::to_string(&specs).unwrap_or_else(|_| "[]".to_owned())
}

/// Reads stored rotations back; an error means the row was not written by medhub.
pub fn rotations_from_json(json: &str) -> Result<Vec<Rotation>, String> {
    let specs: Vec<RotationSpec> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    specs.iter().enumerate().map(|(i, s)| s.to_rotation(i).map_err(|e| e.to_string())).collect()
}

// ---------------------------------------------------------------------------------------
// Roles

/// Whether an address names a role (one duty) or a team.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnCallKindView {
    Role,
    Team,
}

/// `POST /api/v1/oncall`: a new on-call role or team.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOnCallRole {
    /// The stable address: 2-64 characters of `[a-z0-9-]`, starting with a letter or digit.
    #[schema(example = "cardiology-oncall")]
    pub key: String,
    /// What people read, 1-200 characters.
    #[schema(example = "Cardiology on-call")]
    pub name: String,
    pub kind: OnCallKindView,
    /// The department, for reports (at most 200 characters).
    #[serde(default)]
    pub department: Option<String>,
}

/// `PATCH /api/v1/oncall/{role}`: what to change (the key never changes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOnCallRole {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: Option<OnCallKindView>,
    /// The new department; an empty string removes it.
    #[serde(default)]
    pub department: Option<String>,
}

/// An on-call role or team.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OnCallRoleView {
    pub key: String,
    pub name: String,
    pub kind: OnCallKindView,
    pub department: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

// ---------------------------------------------------------------------------------------
// Schedules

/// `POST /api/v1/oncall/{role}/schedules` and `PUT …/schedules/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// 1-200 characters.
    #[schema(example = "Cardiology primary")]
    pub name: String,
    /// An IANA zone name; hand-overs and windows are local times there.
    #[schema(example = "Europe/Berlin")]
    pub time_zone: String,
    /// The layers, in order (at most 16).
    pub rotations: Vec<RotationSpec>,
}

/// Where an override came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverrideSourceView {
    Manual,
    Swap,
    Import,
}

/// An override: someone on call for an interval, in someone's place or in addition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OverrideView {
    pub id: Uuid,
    pub user_id: Uuid,
    /// Whose place is taken; `null` adds a holder.
    pub replaces: Option<Uuid>,
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub end: Timestamp,
    pub source: OverrideSourceView,
    pub created_by: Option<Uuid>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// A schedule with its overrides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    pub id: Uuid,
    pub role: String,
    pub name: String,
    pub time_zone: String,
    pub rotations: Vec<RotationSpec>,
    pub overrides: Vec<OverrideView>,
    /// Rises with every change to the schedule or its overrides.
    pub version: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// `POST /api/v1/oncall/{role}/schedules/{id}/overrides`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOverride {
    pub user_id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub end: Timestamp,
    /// Take this person's place wherever a rotation has them on call; without it, the user
    /// is added as a holder for the whole interval.
    #[serde(default)]
    pub replaces: Option<Uuid>,
}

/// A rotation shift, as the timeline lists it: its layer and start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShiftRef {
    /// The rotation (layer) index.
    pub rotation: usize,
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
}

/// `POST /api/v1/oncall/{role}/schedules/{id}/swaps`: the holders of two rotation shifts
/// exchange them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwapRequest {
    pub first: ShiftRef,
    pub second: ShiftRef,
}

/// Why someone holds a shift or is on call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceView {
    /// Their turn in rotation `rotation`.
    Rotation { rotation: usize },
    /// An override; `rotation` and `replaced` are set when it takes someone's place.
    Override {
        override_id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rotation: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaced: Option<Uuid>,
    },
}

impl From<ShiftSource> for SourceView {
    fn from(s: ShiftSource) -> Self {
        match s {
            ShiftSource::Rotation { rotation } => SourceView::Rotation { rotation },
            ShiftSource::Override { id, rotation, replaced } => {
                SourceView::Override { override_id: id.as_uuid(), rotation, replaced: replaced.map(|u| u.as_uuid()) }
            }
        }
    }
}

/// One shift of the effective timeline (after overrides; coverage is about people and shows
/// in who is on call).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShiftView {
    pub schedule_id: Uuid,
    pub user_id: Uuid,
    pub display_name: String,
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub end: Timestamp,
    pub source: SourceView,
}

/// `GET /api/v1/oncall/{role}/shifts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShiftList {
    pub role: String,
    #[schema(value_type = String, format = DateTime)]
    pub from: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub to: Timestamp,
    pub shifts: Vec<ShiftView>,
}

/// `POST /api/v1/oncall/{role}/calendar`: what an import changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    pub schedule_id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub from: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub to: Timestamp,
    /// Overrides of an earlier import starting in the window, replaced.
    pub removed: usize,
    /// Events starting in the window, now overrides.
    pub added: usize,
}

// ---------------------------------------------------------------------------------------
// Coverage

/// `POST /api/v1/coverages`: while `covered_user_id` is away, `by_user_id` takes what is
/// addressed to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCoverage {
    pub covered_user_id: Uuid,
    pub by_user_id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub end: Timestamp,
}

/// A coverage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CoverageView {
    pub id: Uuid,
    pub covered_user_id: Uuid,
    pub by_user_id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub end: Timestamp,
    pub created_by: Option<Uuid>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// `GET /api/v1/coverages`: those not yet ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CoverageList {
    pub coverages: Vec<CoverageView>,
}

// ---------------------------------------------------------------------------------------
// The directory and role addressing

/// Someone on call, and why. In a stored resolution `display_name` is left out (ids only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HolderView {
    /// Who receives what is addressed to the role.
    pub user_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Who the schedule names (after overrides), before coverage.
    pub scheduled_user_id: Uuid,
    pub schedule_id: Uuid,
    pub source: SourceView,
    /// The people `user_id` covers for, from the scheduled one along the chain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub covering_for: Vec<Uuid>,
}

/// When the holders next change, and who they are then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NextChange {
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub holders: Vec<HolderView>,
}

/// One role of the directory: on call now, and next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DirectoryEntry {
    pub role: OnCallRoleView,
    /// Empty when nobody is on call.
    pub now: Vec<HolderView>,
    /// `null` when nothing changes within 400 days.
    pub next: Option<NextChange>,
}

/// `GET /api/v1/oncall`: every on-call role of the organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OnCallDirectory {
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub roles: Vec<DirectoryEntry>,
}

/// `GET /api/v1/oncall/{role}`: the role, its schedules, and who is on call now and next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OnCallRoleDetail {
    pub role: OnCallRoleView,
    pub schedules: Vec<ScheduleView>,
    pub now: Vec<HolderView>,
    pub next: Option<NextChange>,
}

/// `POST /api/v1/oncall/{role}/messages`: a message to whoever holds the role now.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleMessageRequest {
    pub client_txn_id: String,
    pub body: String,
    #[serde(default)]
    pub priority: PriorityView,
}

/// Answer to a message addressed to a role.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RoleMessageResponse {
    pub message: MessageView,
    /// The conversation between the sender and the role.
    pub conversation_id: Uuid,
    /// Who it was resolved to when it was sent, and why.
    pub holders: Vec<HolderView>,
    /// A resend of an earlier message with the same `client_txn_id`.
    pub duplicate: bool,
}

/// The stored form of a resolution's holders: ids only.
pub fn holders_json(holders: &[HolderView]) -> String {
    let stored: Vec<HolderView> = holders.iter().map(|h| HolderView { display_name: None, ..h.clone() }).collect();
    serde_json::to_string(&stored).unwrap_or_else(|_| "[]".to_owned())
}

/// Reads a stored resolution's holders.
pub fn holders_from_json(json: &str) -> Result<Vec<HolderView>, String> {
    serde_json::from_str(json).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_round_trip_through_their_canonical_json() {
        let json = r#"[{"participants":["0190c3a2-7d41-7b9e-9a53-2f1c0e8d4b11"],"start":"2026-03-02T08:00:00","kind":"daily"},
            {"participants":["0190c3a2-7d41-7b9e-9a53-2f1c0e8d4b11","0190c3a2-7d41-7b9e-9a53-2f1c0e8d4b12"],
             "start":"2026-03-02T07:00","kind":"custom","hours":12,
             "window":{"days":["sat","mon"],"from":"20:00:00","to":"08:00"}}]"#;
        let rotations = rotations_from_json(json).unwrap();
        assert_eq!(rotations[1].kind, RotationKind::Custom(ShiftLength::Hours(12)));
        let w = rotations[1].restriction.unwrap();
        assert!(w.days.contains(Weekday::Saturday) && w.days.contains(Weekday::Monday));
        assert!(!w.days.contains(Weekday::Sunday));
        let canonical = rotations_json(&rotations);
        assert_eq!(
            canonical,
            r#"[{"participants":["0190c3a2-7d41-7b9e-9a53-2f1c0e8d4b11"],"start":"2026-03-02T08:00:00","kind":"daily"},{"participants":["0190c3a2-7d41-7b9e-9a53-2f1c0e8d4b11","0190c3a2-7d41-7b9e-9a53-2f1c0e8d4b12"],"start":"2026-03-02T07:00:00","kind":"custom","hours":12,"window":{"days":["mon","sat"],"from":"20:00","to":"08:00"}}]"#
        );
        assert_eq!(rotations_from_json(&canonical).unwrap(), rotations);
    }

    #[test]
    fn a_rotation_spec_says_what_is_wrong() {
        let spec = |kind: RotationKindName, days: Option<u32>, hours: Option<u32>, start: &str| RotationSpec {
            participants: vec![],
            start: start.into(),
            kind,
            days,
            hours,
            window: None,
        };
        let why = |s: RotationSpec| s.to_rotation(3).unwrap_err();
        assert_eq!(why(spec(RotationKindName::Daily, None, None, "tomorrow")).rotation, 3);
        assert!(why(spec(RotationKindName::Daily, None, None, "2026-03-02")).why.contains("local date and time"));
        assert!(why(spec(RotationKindName::Custom, None, None, "2026-03-02T08:00")).why.contains("days or hours"));
        assert!(
            why(spec(RotationKindName::Custom, Some(1), Some(2), "2026-03-02T08:00")).why.contains("days or hours")
        );
        assert!(why(spec(RotationKindName::Weekly, Some(2), None, "2026-03-02T08:00")).why.contains("custom"));
        let mut windowed = spec(RotationKindName::Daily, None, None, "2026-03-02T08:00");
        windowed.window = Some(WindowSpec { days: vec![WeekdayName::Mon], from: "8pm".into(), to: "08:00".into() });
        assert!(why(windowed).why.contains("window.from"));
        assert!(serde_json::from_str::<RotationSpec>(r#"{"participants":[],"start":"x","kind":"hourly"}"#).is_err());
    }

    #[test]
    fn stored_holders_carry_ids_only() {
        let h = HolderView {
            user_id: Uuid::from_u128(1),
            display_name: Some("Dr Alice Smith".into()),
            scheduled_user_id: Uuid::from_u128(2),
            schedule_id: Uuid::from_u128(3),
            source: SourceView::Rotation { rotation: 0 },
            covering_for: vec![Uuid::from_u128(2)],
        };
        let json = holders_json(std::slice::from_ref(&h));
        assert!(!json.contains("Alice"), "{json}");
        assert_eq!(holders_from_json(&json).unwrap(), vec![HolderView { display_name: None, ..h }]);
    }
}
