//! On-call schedules as a running feature (issue "Clinical workflows", sections 2 and 3,
//! docs/clinical.md): on-call roles and their schedules, overrides, swaps and coverage; the
//! directory (who is on call now, why, and who is next); iCalendar import and export; role
//! addressing (a message to "cardiology-oncall" reaches whoever holds it when it is sent, and
//! the resolution is recorded); and the hand-over job, which moves open urgent and critical
//! items to a role's new holder when the holder changes.
//!
//! The rules are pure functions in `medhub_core::schedule`. This service reads the facts
//! (schedules with their overrides, the organization's coverages), lets the core decide, and
//! hands changes to the store with their audit records. Schedules are read per call, not
//! cached: a directory of a few hundred roles is a handful of indexed reads, and a cache would
//! have to be invalidated across nodes.
//!
//! Permissions: managing roles, schedules, overrides, swaps and coverage needs
//! `schedule.manage`; reading the directory, the timeline and the calendar needs
//! `directory.read` (every shipped clinical role); addressing a role needs `message.send`.
//! Another organization's role is answered as one that does not exist.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::{AuditRecord, Outcome};
use medhub_core::authz::Permission;
use medhub_core::model::{ConversationKind, MemberRole, Message, Priority, User};
use medhub_core::plan::Command;
use medhub_core::policy::Actor;
use medhub_core::schedule::{
    self as rules, Coverage, OnCall as RuleOnCall, Override, Schedule, ScheduleError, Shift, ShiftSource, Zone,
};
use medhub_core::{
    Clock, ConversationId, CoverageId, DomainError, MessageId, OnCallRoleId, OrgId, OverrideId, ScheduleId, UserId,
};
use medhub_store::{
    DynStore, OnCallKind, OnCallRole, OpenItem, OverrideSource, ResolutionKind, RoleResolution, StoreError,
    StoredCoverage, StoredOverride, StoredSchedule,
};
use medhub_wire::ical::{self, IcalError, ImportOptions, OnCallRef, Person};
use medhub_wire::oncall::{HolderView, RotationSpec, SourceView, holders_from_json, holders_json, rotations_json};

use crate::messaging::Messaging;
use crate::{AuditSink, Principal, ServiceError};

/// At most 500 on-call roles per organization: every department's roles and teams several
/// times over; the directory resolves each of them on every request.
pub const MAX_ROLES: usize = 500;
/// At most 8 schedules per role (a primary, a backup, a few special rotas): every resolution
/// reads and evaluates each.
pub const MAX_SCHEDULES_PER_ROLE: usize = 8;
/// An override that ended this long ago is dropped at the schedule's next override change, so
/// that years of swaps never reach the core's limit of 5,000 overrides per schedule.
pub const OVERRIDE_KEEP: SignedDuration = SignedDuration::from_hours(24 * 400);
/// How often a change is decided again when the schedule or the coverages moved between
/// reading and writing (another writer got there first). Beyond that the caller is told to
/// retry.
const RETRIES: usize = 5;
/// The role's next change is looked for over at most this many changes of its schedules that
/// leave the set of holders the same (two schedules handing over to the same person).
const MAX_NEXT_STEPS: usize = 64;
/// Names of roles and departments: 1-200 characters, as schedule names in the core.
const MAX_NAME_CHARS: usize = 200;
/// Role keys: 2-64 characters of `[a-z0-9-]`.
const MAX_KEY_CHARS: usize = 64;
/// Urgent and critical messages older than this are not moved to a new holder: a message
/// left open for three days is an escalation failure for people to look at, not a hand-over.
pub const OPEN_ITEM_MAX_AGE: SignedDuration = SignedDuration::from_hours(72);
/// The hand-over job reads open items in pages of 500 …
const HANDOVER_PAGE: u32 = 500;
/// … and at most 20 pages per tick (10,000 items); the rest waits for the next tick.
const HANDOVER_PAGES_PER_TICK: usize = 20;
/// The timeline shows a week when no interval is asked for.
pub const DEFAULT_TIMELINE: SignedDuration = SignedDuration::from_hours(24 * 7);
/// A calendar export covers 31 days when no interval is asked for: a month's rota.
pub const DEFAULT_EXPORT: SignedDuration = SignedDuration::from_hours(24 * 31);
/// An import reads 400 days from now when no window is given: a whole published roster (the
/// longest window the importer allows).
pub const DEFAULT_IMPORT: SignedDuration = ical::MAX_IMPORT_WINDOW;
/// The hand-over job sleeps at least this long between ticks, so a change due "now" cannot
/// make it spin.
const HANDOVER_MIN_SLEEP: Duration = Duration::from_millis(200);

/// Why an on-call request was refused. Each variant is one cause; the messages are safe to
/// show (ids, indices, limits and line numbers; never a name or a message).
#[derive(Debug, thiserror::Error)]
pub enum OnCallError {
    /// A role's key, name, kind or department is not acceptable.
    #[error("{0}")]
    InvalidRole(&'static str),
    /// The organization has a role with this key.
    #[error("an on-call role with this key exists")]
    KeyTaken,
    /// The core refused the schedule, an override, a swap, a coverage or an interval.
    #[error(transparent)]
    Rules(#[from] ScheduleError),
    /// A rotation's JSON does not describe a rotation.
    #[error(transparent)]
    Spec(#[from] medhub_wire::oncall::SpecError),
    /// A person named is not an active user of the organization.
    #[error("{0} is not an active user of your organization")]
    UnknownPerson(uuid::Uuid),
    /// The role has [`MAX_SCHEDULES_PER_ROLE`] schedules, or the organization [`MAX_ROLES`]
    /// roles.
    #[error("at most {0} allowed")]
    TooMany(&'static str),
    /// The role has no schedule (to import into or export).
    #[error("the on-call role has no schedule")]
    NoSchedule,
    /// The role has several schedules and the request did not name one.
    #[error("the on-call role has several schedules: name one with schedule=<id>")]
    ScheduleRequired,
    /// A swap names a shift that is not a rotation shift of the schedule.
    #[error("no shift of rotation {rotation} starts at {start}")]
    NoSuchShift { rotation: usize, start: Timestamp },
    /// A coverage that has ended already.
    #[error("a coverage must end in the future")]
    CoverageInPast,
    /// The calendar could not be read.
    #[error(transparent)]
    Ical(#[from] IcalError),
    /// Events name people who are not users of the organization: their lines.
    #[error("events on lines {} name people who are not users of your organization", lines_text(.0))]
    UnknownAttendees(Vec<usize>),
    /// Nobody holds the role now.
    #[error("nobody is on call for this role now")]
    NobodyOnCall,
    /// Only the sender holds the role now.
    #[error("you are the only one on call for this role now")]
    NobodyElseOnCall,
    /// The schedule kept changing under the request; try again.
    #[error("the schedule changed while the request was decided; try again")]
    Busy,
}

fn lines_text(lines: &[usize]) -> String {
    lines.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
}

impl From<OnCallError> for ServiceError {
    fn from(e: OnCallError) -> Self {
        ServiceError::OnCall(e)
    }
}

impl From<ScheduleError> for ServiceError {
    fn from(e: ScheduleError) -> Self {
        ServiceError::OnCall(OnCallError::Rules(e))
    }
}

/// Someone on call at an instant, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub user: UserId,
    pub display_name: String,
    pub schedule: ScheduleId,
    pub rule: RuleOnCall,
}

impl Holder {
    /// The wire view (with the name; [`holders_json`] drops it for storage).
    pub fn view(&self) -> HolderView {
        HolderView {
            user_id: self.user.as_uuid(),
            display_name: Some(self.display_name.clone()),
            scheduled_user_id: self.rule.scheduled.as_uuid(),
            schedule_id: self.schedule.as_uuid(),
            source: SourceView::from(self.rule.source),
            covering_for: self.rule.covering_for.iter().map(|u| u.as_uuid()).collect(),
        }
    }
}

/// Who is on call now and who is next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NowAndNext {
    pub now: Vec<Holder>,
    pub next: Option<(Timestamp, Vec<Holder>)>,
}

/// A role with its schedules and their overrides.
#[derive(Clone, Debug)]
pub struct RoleSchedules {
    pub role: OnCallRole,
    pub schedules: Vec<(StoredSchedule, Vec<StoredOverride>)>,
}

/// One shift of a role's timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineShift {
    pub schedule: ScheduleId,
    pub shift: Shift,
    pub display_name: String,
}

/// What an import changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportResult {
    pub schedule: ScheduleId,
    pub removed: usize,
    pub added: usize,
}

/// A message sent to a role.
#[derive(Clone, Debug)]
pub struct RoleSend {
    pub message: Message,
    pub conversation: ConversationId,
    pub holders: Vec<HolderView>,
    pub duplicate: bool,
}

/// An override to add: who, when, and in whose place (none: in addition).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewOverride {
    pub user: UserId,
    pub start: Timestamp,
    pub end: Timestamp,
    pub replaces: Option<UserId>,
}

/// What one tick of the hand-over job did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandoverReport {
    /// Open items recorded as moved to a new holder.
    pub moved: usize,
    /// When a role with open items next changes holder, if within the horizon.
    pub next: Option<Timestamp>,
    /// Where the next tick resumes, when this one stopped at its bound with items left.
    pub more: Option<(Timestamp, MessageId)>,
}

/// Which actor a change is recorded for: a signed-in user, or the operator's CLI.
#[derive(Clone, Copy)]
enum By<'a> {
    User(&'a Principal),
    Operator,
}

impl By<'_> {
    fn user(&self) -> Option<UserId> {
        match self {
            By::User(p) => Some(p.user.id),
            By::Operator => None,
        }
    }
}

/// On-call roles, schedules, the directory, role addressing and hand-overs.
#[derive(Clone)]
pub struct OnCall {
    store: DynStore,
    clock: Arc<dyn Clock>,
    audit: AuditSink,
    messaging: Messaging,
    /// Held while a role conversation is created, so that two first messages of one sender
    /// to one role on this node make one conversation (creation is rare: one per sender and
    /// role).
    creating: Arc<tokio::sync::Mutex<()>>,
}

/// Every audit record of on-call is built here, and only here: ids, keys, counts, never a
/// name or a message.
fn record(
    sink: &AuditSink,
    org: OrgId,
    by: By<'_>,
    action: &str,
    object: (&str, String),
    target: String,
) -> AuditRecord {
    let r = match by {
        By::User(p) => sink.by(p, action, Outcome::Success),
        By::Operator => sink.event(action, Outcome::Success),
    };
    AuditRecord { org: Some(org), ..r.object(object.0, object.1).target(target) }
}

fn check_key(key: &str) -> Result<(), OnCallError> {
    let ok = (2..=MAX_KEY_CHARS).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && key.bytes().next().is_some_and(|b| b != b'-');
    if ok { Ok(()) } else { Err(OnCallError::InvalidRole("the key must be 2-64 characters of [a-z0-9-]")) }
}

fn check_text(s: &str, what: &'static str) -> Result<(), OnCallError> {
    if s.trim().is_empty() || s.chars().count() > MAX_NAME_CHARS || s.chars().any(char::is_control) {
        return Err(OnCallError::InvalidRole(what));
    }
    Ok(())
}

/// A department given as text: empty means none.
fn department(d: Option<String>) -> Result<Option<String>, OnCallError> {
    match d.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()) {
        None => Ok(None),
        Some(d) => {
            check_text(&d, "the department must be at most 200 characters without control characters")?;
            Ok(Some(d))
        }
    }
}

fn corrupt(what: String) -> ServiceError {
    ServiceError::Store(StoreError::Corrupt(what))
}

/// The core's schedule of a stored one.
fn rule_schedule(
    role: &OnCallRole,
    s: &StoredSchedule,
    overrides: &[StoredOverride],
) -> Result<Schedule, ServiceError> {
    let rotations = medhub_wire::oncall::rotations_from_json(&s.rotations)
        .map_err(|e| corrupt(format!("schedule {} rotations: {e}", s.id)))?;
    let zone = Zone::named(&s.zone).map_err(|e| corrupt(format!("schedule {} zone: {e}", s.id)))?;
    Ok(Schedule {
        id: s.id,
        org: s.org,
        name: s.name.clone(),
        target: role.target(),
        zone,
        rotations,
        overrides: overrides.iter().filter(|o| o.schedule == s.id).map(StoredOverride::rule).collect(),
    })
}

/// The holders of several schedules at `at`, each person once, in schedule order.
fn union_at(schedules: &[Schedule], coverages: &[Coverage], at: Timestamp) -> Vec<(ScheduleId, RuleOnCall)> {
    let mut out: Vec<(ScheduleId, RuleOnCall)> = Vec::new();
    for s in schedules {
        for o in rules::on_call_at(s, coverages, at) {
            if out.iter().all(|(_, x)| x.user != o.user) {
                out.push((s.id, o));
            }
        }
    }
    out
}

/// When the set of people holding a role with these schedules next changes after `at`. Each
/// schedule's changes come from the core's `next_change_after`; a change of one schedule that
/// another schedule makes up for (the same person on both) is passed over.
fn role_next_change(schedules: &[Schedule], coverages: &[Coverage], at: Timestamp) -> Option<Timestamp> {
    let people = |t: Timestamp| -> BTreeSet<UserId> {
        union_at(schedules, coverages, t).into_iter().map(|(_, o)| o.user).collect()
    };
    let now = people(at);
    let horizon = at.checked_add(rules::NEXT_CHANGE_HORIZON).unwrap_or(Timestamp::MAX);
    let mut cur = at;
    for _ in 0..MAX_NEXT_STEPS {
        let t = schedules.iter().filter_map(|s| rules::next_change_after(s, coverages, cur)).min()?;
        if t > horizon {
            return None;
        }
        if people(t) != now {
            return Some(t);
        }
        cur = t;
    }
    None
}

impl OnCall {
    pub fn new(store: DynStore, clock: Arc<dyn Clock>, audit: AuditSink, messaging: Messaging) -> Self {
        Self { store, clock, audit, messaging, creating: Arc::new(tokio::sync::Mutex::new(())) }
    }

    // --- reading -----------------------------------------------------------------------------

    /// The organization's role with this key, or not found (another organization's too).
    async fn role_in(&self, org: OrgId, key: &str) -> Result<OnCallRole, ServiceError> {
        self.store.oncall_role(org, key).await?.ok_or_else(|| DomainError::ConversationNotFound.into())
    }

    async fn schedules_of(&self, role: &OnCallRole) -> Result<RoleSchedules, ServiceError> {
        let stored = self.store.schedules(role.org, Some(role.id)).await?;
        let ids: Vec<ScheduleId> = stored.iter().map(|s| s.id).collect();
        let overrides = self.store.overrides(&ids).await?;
        let schedules = stored
            .into_iter()
            .map(|s| {
                let own = overrides.iter().filter(|o| o.schedule == s.id).cloned().collect();
                (s, own)
            })
            .collect();
        Ok(RoleSchedules { role: role.clone(), schedules })
    }

    fn rules_of(&self, rs: &RoleSchedules) -> Result<Vec<Schedule>, ServiceError> {
        rs.schedules.iter().map(|(s, o)| rule_schedule(&rs.role, s, o)).collect()
    }

    async fn coverages(&self, org: OrgId, at: Timestamp) -> Result<Vec<Coverage>, ServiceError> {
        Ok(self.store.coverage_state(org, at).await?.coverages.iter().map(StoredCoverage::rule).collect())
    }

    /// Display names of these users (active or not), for answers.
    async fn names(&self, ids: impl IntoIterator<Item = UserId>) -> Result<HashMap<UserId, User>, ServiceError> {
        let ids: Vec<UserId> = ids.into_iter().collect::<HashSet<_>>().into_iter().collect();
        Ok(self.store.users(&ids).await?.into_iter().map(|u| (u.id, u)).collect())
    }

    fn holders(pairs: Vec<(ScheduleId, RuleOnCall)>, users: &HashMap<UserId, User>) -> Vec<Holder> {
        pairs
            .into_iter()
            .map(|(schedule, rule)| Holder {
                user: rule.user,
                display_name: users.get(&rule.user).map(|u| u.display_name.clone()).unwrap_or_default(),
                schedule,
                rule,
            })
            .collect()
    }

    fn now_and_next(&self, schedules: &[Schedule], coverages: &[Coverage], at: Timestamp) -> NowAndNext0 {
        let now = union_at(schedules, coverages, at);
        let next = role_next_change(schedules, coverages, at).map(|t| (t, union_at(schedules, coverages, t)));
        NowAndNext0 { now, next }
    }

    async fn named(&self, raw: Vec<(OnCallRole, NowAndNext0)>) -> Result<Vec<(OnCallRole, NowAndNext)>, ServiceError> {
        let ids = raw
            .iter()
            .flat_map(|(_, n)| n.now.iter().chain(n.next.iter().flat_map(|(_, h)| h.iter())).map(|(_, o)| o.user));
        let users = self.names(ids.collect::<Vec<_>>()).await?;
        Ok(raw
            .into_iter()
            .map(|(role, n)| {
                let now = Self::holders(n.now, &users);
                let next = n.next.map(|(t, h)| (t, Self::holders(h, &users)));
                (role, NowAndNext { now, next })
            })
            .collect())
    }

    /// Who is on call for the organization's role `key` at `at` (after overrides and
    /// coverage), with why: the holders of every schedule of the role, each person once.
    pub async fn holders_at(&self, org: OrgId, key: &str, at: Timestamp) -> Result<Vec<Holder>, ServiceError> {
        let role = self.role_in(org, key).await?;
        let rs = self.schedules_of(&role).await?;
        let schedules = self.rules_of(&rs)?;
        let coverages = self.coverages(org, at).await?;
        let pairs = union_at(&schedules, &coverages, at);
        let users = self.names(pairs.iter().map(|(_, o)| o.user).collect::<Vec<_>>()).await?;
        Ok(Self::holders(pairs, &users))
    }

    /// The directory: every on-call role of the caller's organization, who holds it at `at`
    /// (now if not given) and who is next, and when.
    pub async fn directory(
        &self,
        p: &Principal,
        at: Option<Timestamp>,
    ) -> Result<(Timestamp, Vec<(OnCallRole, NowAndNext)>), ServiceError> {
        p.require(Permission::DirectoryRead)?;
        self.directory_of(p.user.org, at).await
    }

    /// [`directory`](Self::directory) of an organization, for the operator's CLI.
    pub async fn directory_of(
        &self,
        org: OrgId,
        at: Option<Timestamp>,
    ) -> Result<(Timestamp, Vec<(OnCallRole, NowAndNext)>), ServiceError> {
        let at = at.unwrap_or_else(|| self.clock.now());
        let roles = self.store.oncall_roles(org).await?;
        let stored = self.store.schedules(org, None).await?;
        let ids: Vec<ScheduleId> = stored.iter().map(|s| s.id).collect();
        let overrides = self.store.overrides(&ids).await?;
        let coverages = self.coverages(org, at).await?;
        let mut raw = Vec::with_capacity(roles.len());
        for role in roles {
            let schedules = stored
                .iter()
                .filter(|s| s.role == role.id)
                .map(|s| rule_schedule(&role, s, &overrides))
                .collect::<Result<Vec<_>, _>>()?;
            let n = self.now_and_next(&schedules, &coverages, at);
            raw.push((role, n));
        }
        Ok((at, self.named(raw).await?))
    }

    /// One role with its schedules, and who holds it now and next.
    pub async fn role(&self, p: &Principal, key: &str) -> Result<(RoleSchedules, NowAndNext), ServiceError> {
        p.require(Permission::DirectoryRead)?;
        self.role_of(p.user.org, key).await
    }

    /// [`role`](Self::role) for the operator's CLI.
    pub async fn role_of(&self, org: OrgId, key: &str) -> Result<(RoleSchedules, NowAndNext), ServiceError> {
        let at = self.clock.now();
        let role = self.role_in(org, key).await?;
        let rs = self.schedules_of(&role).await?;
        let schedules = self.rules_of(&rs)?;
        let coverages = self.coverages(org, at).await?;
        let n = self.now_and_next(&schedules, &coverages, at);
        let mut named = self.named(vec![(role, n)]).await?;
        let (_, n) = named.pop().ok_or_else(|| corrupt("directory entry lost".into()))?;
        Ok((rs, n))
    }

    /// The organization's roles, for the operator's CLI.
    pub async fn roles_of(&self, org: OrgId) -> Result<Vec<OnCallRole>, ServiceError> {
        Ok(self.store.oncall_roles(org).await?)
    }

    /// The effective timeline of a role's schedules over `[from, to)`, by start.
    pub async fn shifts(
        &self,
        p: &Principal,
        key: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<TimelineShift>, ServiceError> {
        p.require(Permission::DirectoryRead)?;
        let role = self.role_in(p.user.org, key).await?;
        let rs = self.schedules_of(&role).await?;
        let mut out: Vec<(ScheduleId, Shift)> = Vec::new();
        for s in self.rules_of(&rs)? {
            for shift in rules::shifts_between(&s, from, to)? {
                out.push((s.id, shift));
                if out.len() > rules::MAX_SHIFTS {
                    return Err(ScheduleError::TooManyShifts { max: rules::MAX_SHIFTS }.into());
                }
            }
        }
        if rs.schedules.is_empty() {
            // Still check the interval, so a bad one is refused the same way.
            if to <= from {
                return Err(ScheduleError::EmptyInterval.into());
            }
            if to.duration_since(from) > rules::MAX_QUERY_SPAN {
                return Err(ScheduleError::IntervalTooLong.into());
            }
        }
        out.sort_by_key(|(s, shift)| (shift.start, *s, shift.source.rotation().unwrap_or(usize::MAX)));
        let users = self.names(out.iter().map(|(_, s)| s.user).collect::<Vec<_>>()).await?;
        Ok(out
            .into_iter()
            .map(|(schedule, shift)| TimelineShift {
                schedule,
                display_name: users.get(&shift.user).map(|u| u.display_name.clone()).unwrap_or_default(),
                shift,
            })
            .collect())
    }

    /// The role's schedule to import into or export: the one named, or the only one.
    fn pick(rs: &RoleSchedules, wanted: Option<ScheduleId>) -> Result<usize, ServiceError> {
        match wanted {
            Some(id) => rs
                .schedules
                .iter()
                .position(|(s, _)| s.id == id)
                .ok_or_else(|| DomainError::ConversationNotFound.into()),
            None => match rs.schedules.len() {
                0 => Err(OnCallError::NoSchedule.into()),
                1 => Ok(0),
                _ => Err(OnCallError::ScheduleRequired.into()),
            },
        }
    }

    /// The shifts of one of the role's schedules over `[from, to)` as an iCalendar stream.
    pub async fn export(
        &self,
        p: &Principal,
        key: &str,
        schedule: Option<ScheduleId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<String, ServiceError> {
        p.require(Permission::DirectoryRead)?;
        self.export_of(p.user.org, key, schedule, from, to).await
    }

    /// [`export`](Self::export) for the operator's CLI.
    pub async fn export_of(
        &self,
        org: OrgId,
        key: &str,
        schedule: Option<ScheduleId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<String, ServiceError> {
        let role = self.role_in(org, key).await?;
        let rs = self.schedules_of(&role).await?;
        let i = Self::pick(&rs, schedule)?;
        let (stored, overrides) = &rs.schedules[i];
        let s = rule_schedule(&role, stored, overrides)?;
        let shifts = rules::shifts_between(&s, from, to)?;
        let users = self.names(shifts.iter().map(|s| s.user).collect::<Vec<_>>()).await?;
        let person = |u: UserId| Person {
            display_name: users.get(&u).map(|u| u.display_name.clone()).unwrap_or_else(|| u.to_string()),
            email: None,
        };
        Ok(ical::export(&s, &shifts, person, self.clock.now()))
    }

    // --- roles --------------------------------------------------------------------------------

    /// Creates an on-call role or team in the caller's organization.
    pub async fn create_role(
        &self,
        p: &Principal,
        key: &str,
        name: &str,
        kind: OnCallKind,
        dept: Option<String>,
    ) -> Result<OnCallRole, ServiceError> {
        p.require(Permission::ScheduleManage)?;
        self.create_role_in(p.user.org, By::User(p), key, name, kind, dept).await
    }

    /// [`create_role`](Self::create_role) by the operator.
    pub async fn create_role_as_operator(
        &self,
        org: OrgId,
        key: &str,
        name: &str,
        kind: OnCallKind,
        dept: Option<String>,
    ) -> Result<OnCallRole, ServiceError> {
        self.create_role_in(org, By::Operator, key, name, kind, dept).await
    }

    async fn create_role_in(
        &self,
        org: OrgId,
        by: By<'_>,
        key: &str,
        name: &str,
        kind: OnCallKind,
        dept: Option<String>,
    ) -> Result<OnCallRole, ServiceError> {
        check_key(key)?;
        check_text(name, "the name must be 1-200 characters without control characters")?;
        let department = department(dept)?;
        if self.store.oncall_roles(org).await?.len() >= MAX_ROLES {
            return Err(OnCallError::TooMany("500 on-call roles per organization").into());
        }
        let role = OnCallRole {
            id: OnCallRoleId::new_v7(),
            org,
            key: key.to_owned(),
            name: name.trim().to_owned(),
            kind,
            department,
            created_by: by.user(),
            created_at: self.clock.now(),
        };
        let audit = [record(
            &self.audit,
            org,
            by,
            "oncall.role_create",
            ("oncall_role", role.id.to_string()),
            format!("oncall:{key}"),
        )];
        match self.store.create_oncall_role(&role, &audit).await {
            Ok(()) => Ok(role),
            Err(StoreError::Conflict(_)) => Err(OnCallError::KeyTaken.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Changes a role's name, kind or department (`Some("")` removes the department).
    pub async fn update_role(
        &self,
        p: &Principal,
        key: &str,
        name: Option<String>,
        kind: Option<OnCallKind>,
        dept: Option<String>,
    ) -> Result<OnCallRole, ServiceError> {
        p.require(Permission::ScheduleManage)?;
        let org = p.user.org;
        let mut role = self.role_in(org, key).await?;
        if let Some(n) = name {
            check_text(&n, "the name must be 1-200 characters without control characters")?;
            role.name = n.trim().to_owned();
        }
        if let Some(k) = kind {
            role.kind = k;
        }
        if dept.is_some() {
            role.department = department(dept)?;
        }
        let audit = [record(
            &self.audit,
            org,
            By::User(p),
            "oncall.role_update",
            ("oncall_role", role.id.to_string()),
            format!("oncall:{key}"),
        )];
        if !self.store.update_oncall_role(&role, &audit).await? {
            return Err(DomainError::ConversationNotFound.into());
        }
        Ok(role)
    }

    // --- schedules ----------------------------------------------------------------------------

    /// Checks that every user is an active user of the organization.
    async fn people_of(&self, org: OrgId, ids: impl IntoIterator<Item = UserId>) -> Result<(), ServiceError> {
        let ids: Vec<UserId> = ids.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
        let found = self.names(ids.iter().copied()).await?;
        for id in ids {
            if !found.get(&id).is_some_and(|u| u.active && u.org == org) {
                return Err(OnCallError::UnknownPerson(id.as_uuid()).into());
            }
        }
        Ok(())
    }

    fn parse_rotations(specs: &[RotationSpec]) -> Result<Vec<rules::Rotation>, ServiceError> {
        if specs.len() > rules::MAX_ROTATIONS {
            return Err(ScheduleError::TooManyRotations { max: rules::MAX_ROTATIONS }.into());
        }
        Ok(specs
            .iter()
            .enumerate()
            .map(|(i, s)| s.to_rotation(i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(OnCallError::from)?)
    }

    /// Adds a schedule to a role.
    pub async fn create_schedule(
        &self,
        p: &Principal,
        key: &str,
        name: &str,
        time_zone: &str,
        rotations: &[RotationSpec],
    ) -> Result<StoredSchedule, ServiceError> {
        p.require(Permission::ScheduleManage)?;
        self.create_schedule_in(p.user.org, By::User(p), key, name, time_zone, rotations).await
    }

    /// [`create_schedule`](Self::create_schedule) by the operator.
    pub async fn create_schedule_as_operator(
        &self,
        org: OrgId,
        key: &str,
        name: &str,
        time_zone: &str,
        rotations: &[RotationSpec],
    ) -> Result<StoredSchedule, ServiceError> {
        self.create_schedule_in(org, By::Operator, key, name, time_zone, rotations).await
    }

    async fn create_schedule_in(
        &self,
        org: OrgId,
        by: By<'_>,
        key: &str,
        name: &str,
        time_zone: &str,
        rotations: &[RotationSpec],
    ) -> Result<StoredSchedule, ServiceError> {
        let role = self.role_in(org, key).await?;
        let rotations = Self::parse_rotations(rotations)?;
        let zone = Zone::named(time_zone)?;
        let id = ScheduleId::new_v7();
        let rule =
            Schedule { id, org, name: name.to_owned(), target: role.target(), zone, rotations, overrides: vec![] };
        rules::validate(&rule)?;
        self.people_of(org, rule.rotations.iter().flat_map(|r| r.participants.iter().copied())).await?;
        if self.store.schedules(org, Some(role.id)).await?.len() >= MAX_SCHEDULES_PER_ROLE {
            return Err(OnCallError::TooMany("8 schedules per on-call role").into());
        }
        let now = self.clock.now();
        let stored = StoredSchedule {
            id,
            org,
            role: role.id,
            name: rule.name.clone(),
            zone: rule.zone.name().to_owned(),
            rotations: rotations_json(&rule.rotations),
            version: 0,
            created_by: by.user(),
            created_at: now,
            updated_at: now,
        };
        let audit = [record(
            &self.audit,
            org,
            by,
            "schedule.create",
            ("schedule", id.to_string()),
            format!("oncall_role:{}", role.id),
        )];
        self.store.create_schedule(&stored, &audit).await?;
        Ok(stored)
    }

    /// The role's schedule `id` with its overrides, or not found.
    async fn schedule_in(
        &self,
        org: OrgId,
        key: &str,
        id: ScheduleId,
    ) -> Result<(OnCallRole, StoredSchedule, Vec<StoredOverride>), ServiceError> {
        let role = self.role_in(org, key).await?;
        let stored = self
            .store
            .schedules(org, Some(role.id))
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or(DomainError::ConversationNotFound)?;
        let overrides = self.store.overrides(&[id]).await?;
        Ok((role, stored, overrides))
    }

    /// Replaces a schedule's name, zone and rotations (its overrides stay, and must still be
    /// valid).
    pub async fn update_schedule(
        &self,
        p: &Principal,
        key: &str,
        id: ScheduleId,
        name: &str,
        time_zone: &str,
        rotations: &[RotationSpec],
    ) -> Result<StoredSchedule, ServiceError> {
        p.require(Permission::ScheduleManage)?;
        let org = p.user.org;
        let rotations = Self::parse_rotations(rotations)?;
        let zone = Zone::named(time_zone)?;
        for _ in 0..RETRIES {
            let (role, stored, overrides) = self.schedule_in(org, key, id).await?;
            let rule = Schedule {
                id,
                org,
                name: name.to_owned(),
                target: role.target(),
                zone: zone.clone(),
                rotations: rotations.clone(),
                overrides: overrides.iter().map(StoredOverride::rule).collect(),
            };
            rules::validate(&rule)?;
            self.people_of(org, rule.rotations.iter().flat_map(|r| r.participants.iter().copied())).await?;
            let updated = StoredSchedule {
                name: rule.name.clone(),
                zone: rule.zone.name().to_owned(),
                rotations: rotations_json(&rule.rotations),
                updated_at: self.clock.now(),
                version: stored.version + 1,
                ..stored.clone()
            };
            let audit = [record(
                &self.audit,
                org,
                By::User(p),
                "schedule.update",
                ("schedule", id.to_string()),
                format!("oncall_role:{}", role.id),
            )];
            if self.store.update_schedule(&updated, stored.version, &audit).await? {
                return Ok(updated);
            }
        }
        Err(OnCallError::Busy.into())
    }

    /// Deletes a schedule and its overrides.
    pub async fn delete_schedule(&self, p: &Principal, key: &str, id: ScheduleId) -> Result<(), ServiceError> {
        p.require(Permission::ScheduleManage)?;
        let org = p.user.org;
        let (role, _, _) = self.schedule_in(org, key, id).await?;
        let audit = [record(
            &self.audit,
            org,
            By::User(p),
            "schedule.delete",
            ("schedule", id.to_string()),
            format!("oncall_role:{}", role.id),
        )];
        if self.store.delete_schedule(org, id, &audit).await? {
            Ok(())
        } else {
            Err(DomainError::ConversationNotFound.into())
        }
    }

    /// Decides and writes a change to a schedule's overrides at the version it was read at,
    /// again if the schedule moved meanwhile. `change` gets the role, the schedule and its
    /// overrides and returns the ids to remove, the overrides to add and the audit record;
    /// overrides that ended long ago are removed with it. The core checks the result.
    async fn change<F>(
        &self,
        org: OrgId,
        key: &str,
        id: ScheduleId,
        change: F,
    ) -> Result<(usize, Vec<StoredOverride>), ServiceError>
    where
        F: Fn(
            &OnCallRole,
            &Schedule,
            &[StoredOverride],
        ) -> Result<(Vec<OverrideId>, Vec<StoredOverride>, AuditRecord), ServiceError>,
    {
        for _ in 0..RETRIES {
            let (role, stored, overrides) = self.schedule_in(org, key, id).await?;
            let current = rule_schedule(&role, &stored, &overrides)?;
            let (mut remove, add, audit) = change(&role, &current, &overrides)?;
            let cutoff = self.clock.now().checked_sub(OVERRIDE_KEEP).unwrap_or(Timestamp::MIN);
            remove.extend(overrides.iter().filter(|o| o.end < cutoff).map(|o| o.id));
            let gone: HashSet<OverrideId> = remove.iter().copied().collect();
            let mut after = current.clone();
            after.overrides = overrides
                .iter()
                .filter(|o| !gone.contains(&o.id))
                .map(StoredOverride::rule)
                .chain(add.iter().map(StoredOverride::rule))
                .collect();
            rules::validate(&after)?;
            if let Some(removed) =
                self.store.change_overrides(org, id, Some(stored.version), &remove, &add, &[audit]).await?
            {
                return Ok((removed, add));
            }
        }
        Err(OnCallError::Busy.into())
    }

    fn new_override(&self, p: By<'_>, schedule: ScheduleId, o: Override, source: OverrideSource) -> StoredOverride {
        StoredOverride {
            id: o.id,
            schedule,
            user: o.user,
            replaces: o.replaces,
            start: o.start,
            end: o.end,
            source,
            created_by: p.user(),
            created_at: self.clock.now(),
        }
    }

    /// Puts `user` on call for `[start, end)` on a schedule, in `replaces`'s place or in
    /// addition.
    pub async fn add_override(
        &self,
        p: &Principal,
        key: &str,
        schedule: ScheduleId,
        wanted: NewOverride,
    ) -> Result<StoredOverride, ServiceError> {
        let NewOverride { user, start, end, replaces } = wanted;
        p.require(Permission::ScheduleManage)?;
        let org = p.user.org;
        // Another organization's schedule is not found, whoever the body names.
        self.schedule_in(org, key, schedule).await?;
        self.people_of(org, std::iter::once(user).chain(replaces)).await?;
        let o = Override { id: OverrideId::new_v7(), user, start, end, replaces };
        let new = self.new_override(By::User(p), schedule, o, OverrideSource::Manual);
        let (_, added) = self
            .change(org, key, schedule, |_, _, _| {
                let audit = record(
                    &self.audit,
                    org,
                    By::User(p),
                    "schedule.override_add",
                    ("override", new.id.to_string()),
                    format!("schedule:{schedule}"),
                );
                Ok((vec![], vec![new.clone()], audit))
            })
            .await?;
        added.into_iter().next().ok_or_else(|| corrupt("override lost".into()))
    }

    /// Removes an override of a schedule.
    pub async fn remove_override(
        &self,
        p: &Principal,
        key: &str,
        schedule: ScheduleId,
        id: OverrideId,
    ) -> Result<(), ServiceError> {
        p.require(Permission::ScheduleManage)?;
        let org = p.user.org;
        self.schedule_in(org, key, schedule).await?;
        let audit = [record(
            &self.audit,
            org,
            By::User(p),
            "schedule.override_remove",
            ("override", id.to_string()),
            format!("schedule:{schedule}"),
        )];
        match self.store.change_overrides(org, schedule, None, &[id], &[], &audit).await? {
            Some(1..) => Ok(()),
            _ => Err(DomainError::ConversationNotFound.into()),
        }
    }

    /// Swaps two rotation shifts of a schedule, named by layer and start as the timeline
    /// lists them: two replacing overrides.
    pub async fn swap(
        &self,
        p: &Principal,
        key: &str,
        schedule: ScheduleId,
        first: (usize, Timestamp),
        second: (usize, Timestamp),
    ) -> Result<[StoredOverride; 2], ServiceError> {
        p.require(Permission::ScheduleManage)?;
        let org = p.user.org;
        let ids = [OverrideId::new_v7(), OverrideId::new_v7()];
        let (_, added) = self
            .change(org, key, schedule, |_, current, _| {
                let find = |(rotation, start): (usize, Timestamp)| -> Result<Shift, ServiceError> {
                    let end = start.checked_add(SignedDuration::from_secs(1)).unwrap_or(start);
                    rules::shifts_between(current, start, end)
                        .ok()
                        .into_iter()
                        .flatten()
                        .find(|s| s.start == start && s.source == ShiftSource::Rotation { rotation })
                        .ok_or_else(|| OnCallError::NoSuchShift { rotation, start }.into())
                };
                let pair = rules::swap(&find(first)?, &find(second)?, ids)?;
                let add: Vec<StoredOverride> =
                    pair.iter().map(|o| self.new_override(By::User(p), schedule, *o, OverrideSource::Swap)).collect();
                let audit = record(
                    &self.audit,
                    org,
                    By::User(p),
                    "schedule.swap",
                    ("schedule", schedule.to_string()),
                    format!("overrides:{},{}", ids[0], ids[1]),
                );
                Ok((vec![], add, audit))
            })
            .await?;
        match <[StoredOverride; 2]>::try_from(added) {
            Ok(pair) => Ok(pair),
            Err(_) => Err(corrupt("swap lost an override".into())),
        }
    }

    /// Imports a calendar into one of the role's schedules: the events starting in
    /// `[from, to)` become overrides adding their attendees, in place of the overrides an
    /// earlier import put in that window. All or nothing.
    pub async fn import(
        &self,
        p: &Principal,
        key: &str,
        schedule: Option<ScheduleId>,
        body: &[u8],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<ImportResult, ServiceError> {
        p.require(Permission::ScheduleManage)?;
        self.import_in(p.user.org, By::User(p), key, schedule, body, from, to).await
    }

    /// [`import`](Self::import) by the operator.
    pub async fn import_as_operator(
        &self,
        org: OrgId,
        key: &str,
        schedule: Option<ScheduleId>,
        body: &[u8],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<ImportResult, ServiceError> {
        self.import_in(org, By::Operator, key, schedule, body, from, to).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn import_in(
        &self,
        org: OrgId,
        by: By<'_>,
        key: &str,
        schedule: Option<ScheduleId>,
        body: &[u8],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<ImportResult, ServiceError> {
        let role = self.role_in(org, key).await?;
        let rs = self.schedules_of(&role).await?;
        let (target, _) = &rs.schedules[Self::pick(&rs, schedule)?];
        let id = target.id;
        let zone = Zone::named(&target.zone).map_err(|e| corrupt(format!("schedule {id} zone: {e}")))?;
        let options = ImportOptions { default_zone: zone.time_zone().clone(), from, to };
        let shifts = ical::import(body, &options).map_err(OnCallError::from)?;
        // Only events that start in the window: those are the ones this import owns.
        let shifts: Vec<_> = shifts.into_iter().filter(|s| s.start >= from && s.start < to).collect();
        let mut who: HashMap<OnCallRef, Option<UserId>> = HashMap::new();
        for s in &shifts {
            if !who.contains_key(&s.who) {
                let user = self.resolve_attendee(org, &s.who).await?;
                who.insert(s.who.clone(), user);
            }
        }
        let mut unknown: Vec<usize> =
            shifts.iter().filter(|s| who.get(&s.who).is_none_or(Option::is_none)).map(|s| s.line).collect();
        unknown.sort_unstable();
        unknown.dedup();
        if !unknown.is_empty() {
            return Err(OnCallError::UnknownAttendees(unknown).into());
        }
        let new: Vec<StoredOverride> = shifts
            .iter()
            .filter_map(|s| {
                let user = (*who.get(&s.who)?)?;
                let o = Override { id: OverrideId::new_v7(), user, start: s.start, end: s.end, replaces: None };
                Some(self.new_override(by, id, o, OverrideSource::Import))
            })
            .collect();
        let added = new.len();
        let (removed, _) = self
            .change(org, key, id, |_, _, overrides| {
                let remove: Vec<OverrideId> = overrides
                    .iter()
                    .filter(|o| o.source == OverrideSource::Import && o.start >= from && o.start < to)
                    .map(|o| o.id)
                    .collect();
                let audit = record(
                    &self.audit,
                    org,
                    by,
                    "schedule.import",
                    ("schedule", id.to_string()),
                    format!("added:{added} replaced:{}", remove.len()),
                );
                Ok((remove, new.clone(), audit))
            })
            .await?;
        Ok(ImportResult { schedule: id, removed, added })
    }

    /// The organization's active user an imported event names: `X-MEDHUB-USER` or
    /// `urn:uuid:` by id, an e-mail address by username (the whole address or the part before
    /// `@`), another URI by username.
    async fn resolve_attendee(&self, org: OrgId, r: &OnCallRef) -> Result<Option<UserId>, ServiceError> {
        let by_id = |s: &str| s.trim().parse::<uuid::Uuid>().ok().map(UserId::from_uuid);
        let (ids, names): (Vec<UserId>, Vec<String>) = match r {
            OnCallRef::Medhub(s) => (by_id(s).into_iter().collect(), vec![]),
            OnCallRef::Email(addr) => {
                let addr = addr.trim().to_lowercase();
                let local = addr.split('@').next().unwrap_or_default().to_owned();
                (vec![], vec![addr, local])
            }
            OnCallRef::Uri(u) => {
                let lower = u.trim().to_lowercase();
                match lower.strip_prefix("urn:uuid:") {
                    Some(id) => (by_id(id).into_iter().collect(), vec![]),
                    None => (vec![], vec![lower]),
                }
            }
        };
        let ok = |u: &User| u.active && u.org == org;
        if let Some(u) = self.store.users(&ids).await?.into_iter().find(ok) {
            return Ok(Some(u.id));
        }
        for name in names {
            if let Some(r) = self.store.user_record_by_username(&name).await?
                && ok(&r.user)
            {
                return Ok(Some(r.user.id));
            }
        }
        Ok(None)
    }

    // --- coverage -----------------------------------------------------------------------------

    /// The organization's coverages that have not ended.
    pub async fn coverage_list(&self, p: &Principal) -> Result<Vec<StoredCoverage>, ServiceError> {
        p.require(Permission::DirectoryRead)?;
        Ok(self.store.coverage_state(p.user.org, self.clock.now()).await?.coverages)
    }

    /// While `covered` is away (`[start, end)`), `by` takes what is addressed to them.
    pub async fn add_coverage(
        &self,
        p: &Principal,
        covered: UserId,
        by: UserId,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<StoredCoverage, ServiceError> {
        p.require(Permission::ScheduleManage)?;
        let org = p.user.org;
        let now = self.clock.now();
        if start.subsec_nanosecond() != 0 || end.subsec_nanosecond() != 0 {
            return Err(ScheduleError::SubsecondTime.into());
        }
        let new = StoredCoverage {
            id: CoverageId::new_v7(),
            org,
            covered,
            by,
            start,
            end,
            created_by: Some(p.user.id),
            created_at: now,
        };
        rules::validate_coverage(&[new.rule()])?;
        if end <= now {
            return Err(OnCallError::CoverageInPast.into());
        }
        self.people_of(org, [covered, by]).await?;
        for _ in 0..RETRIES {
            let state = self.store.coverage_state(org, now).await?;
            let mut all: Vec<Coverage> = state.coverages.iter().map(StoredCoverage::rule).collect();
            all.push(new.rule());
            rules::validate_coverage(&all)?;
            let audit = [record(
                &self.audit,
                org,
                By::User(p),
                "coverage.add",
                ("coverage", new.id.to_string()),
                format!("covered:{covered} by:{by}"),
            )];
            if self.store.add_coverage(&new, state.version, &audit).await? {
                return Ok(new);
            }
        }
        Err(OnCallError::Busy.into())
    }

    /// Removes a coverage.
    pub async fn remove_coverage(&self, p: &Principal, id: CoverageId) -> Result<StoredCoverage, ServiceError> {
        p.require(Permission::ScheduleManage)?;
        let org = p.user.org;
        let audit =
            [record(&self.audit, org, By::User(p), "coverage.remove", ("coverage", id.to_string()), String::new())];
        self.store.remove_coverage(org, id, &audit).await?.ok_or_else(|| DomainError::ConversationNotFound.into())
    }

    // --- role addressing ----------------------------------------------------------------------

    /// The holders of a role at `at` who can receive messages (active users of the
    /// organization), with names. A schedule may still name someone since deactivated.
    async fn reachable(&self, role: &OnCallRole, at: Timestamp) -> Result<Vec<Holder>, ServiceError> {
        let rs = self.schedules_of(role).await?;
        let schedules = self.rules_of(&rs)?;
        let coverages = self.coverages(role.org, at).await?;
        self.reachable_in(role, &schedules, &coverages, at).await
    }

    /// [`reachable`](Self::reachable) on schedules and coverages already read.
    async fn reachable_in(
        &self,
        role: &OnCallRole,
        schedules: &[Schedule],
        coverages: &[Coverage],
        at: Timestamp,
    ) -> Result<Vec<Holder>, ServiceError> {
        let pairs = union_at(schedules, coverages, at);
        let users = self.names(pairs.iter().map(|(_, o)| o.user).collect::<Vec<_>>()).await?;
        let reachable: Vec<_> = pairs
            .into_iter()
            .filter(|(_, o)| users.get(&o.user).is_some_and(|u| u.active && u.org == role.org))
            .collect();
        Ok(Self::holders(reachable, &users))
    }

    /// Sends a message to whoever holds the role now: the holders are resolved at send time,
    /// the message goes into the conversation between the sender and the role (created, or
    /// with the current holders added, through the commit pipeline), and the resolution is
    /// recorded with its `oncall.resolve` audit record. Nobody on call: nothing is sent.
    ///
    /// The resolution is recorded just after the message commits. If that fails the caller
    /// gets an error and retries with the same `client_txn_id`: the resend is recognised and
    /// the resolution recorded then (once: it is keyed by the message).
    pub async fn send_to_role(
        &self,
        p: &Principal,
        key: &str,
        client_txn_id: &str,
        body: String,
        priority: Priority,
    ) -> Result<RoleSend, ServiceError> {
        p.require(Permission::MessageSend)?;
        let org = p.user.org;
        let role = self.role_in(org, key).await?;
        let now = self.clock.now();
        let holders = self.reachable(&role, now).await?;
        if holders.is_empty() {
            return Err(OnCallError::NobodyOnCall.into());
        }
        let me = p.user.id;
        let others: Vec<UserId> = holders.iter().map(|h| h.user).filter(|u| *u != me).collect();
        if others.is_empty() {
            return Err(OnCallError::NobodyElseOnCall.into());
        }
        let conversation = self.role_conversation(p, &role, &others).await?;
        let (message, duplicate) = self.messaging.send(p, conversation, client_txn_id, body, priority, None).await?;
        let views: Vec<HolderView> = holders.iter().map(Holder::view).collect();
        let resolution = RoleResolution {
            id: uuid::Uuid::now_v7(),
            org,
            role: role.id,
            message: message.id,
            conversation,
            kind: ResolutionKind::Send,
            at: now,
            holders: holders_json(&views),
            dedupe: format!("send:{}", message.id),
        };
        let audit = [record(
            &self.audit,
            org,
            By::User(p),
            "oncall.resolve",
            ("message", message.id.to_string()),
            format!("oncall_role:{} conversation:{conversation} holders:{}", role.id, holders.len()),
        )];
        let recorded = self.store.record_resolution(&resolution, &audit).await?;
        let views = if recorded {
            views
        } else {
            // A resend: answer with who it went to the first time.
            let first = self.store.resolutions(message.id).await?.into_iter().find(|r| r.kind == ResolutionKind::Send);
            match first.map(|r| holders_from_json(&r.holders)) {
                Some(Ok(stored)) => self.with_names(stored).await?,
                Some(Err(e)) => return Err(corrupt(format!("resolution of {}: {e}", message.id))),
                None => views,
            }
        };
        Ok(RoleSend { message, conversation, holders: views, duplicate })
    }

    async fn with_names(&self, mut views: Vec<HolderView>) -> Result<Vec<HolderView>, ServiceError> {
        let users = self.names(views.iter().map(|h| UserId::from_uuid(h.user_id)).collect::<Vec<_>>()).await?;
        for h in &mut views {
            h.display_name = users.get(&UserId::from_uuid(h.user_id)).map(|u| u.display_name.clone());
        }
        Ok(views)
    }

    /// The conversation between the sender and the role, with `holders` among its members:
    /// the linked one if the sender is still in it, else a new group titled with the role's
    /// name, linked in its place.
    async fn role_conversation(
        &self,
        p: &Principal,
        role: &OnCallRole,
        holders: &[UserId],
    ) -> Result<ConversationId, ServiceError> {
        let me = p.user.id;
        if let Some(c) = self.usable_link(role, me).await? {
            self.add_members(c, holders).await?;
            return Ok(c);
        }
        let _creating = self.creating.lock().await;
        // Another request may have linked one while this one waited.
        let linked = self.store.role_conversation(role.id, me).await?;
        if let Some(c) = self.usable_link(role, me).await? {
            self.add_members(c, holders).await?;
            return Ok(c);
        }
        let members = holders.iter().map(|u| (*u, MemberRole::Member)).collect();
        let (created, _) = self
            .messaging
            .create_conversation_by(p, ConversationKind::Group, Some(role.name.clone()), members, None)
            .await?;
        let now = self.clock.now();
        let kept = self.store.link_role_conversation(role.org, role.id, me, created.id, linked, now).await?;
        if kept != created.id {
            // Another request of the same sender linked its conversation first: use that one.
            self.add_members(kept, holders).await?;
        }
        Ok(kept)
    }

    /// The conversation linked between `me` and the role, if `me` is still in it.
    async fn usable_link(&self, role: &OnCallRole, me: UserId) -> Result<Option<ConversationId>, ServiceError> {
        match self.store.role_conversation(role.id, me).await? {
            Some(c) if self.store.member(c, me).await?.is_some() => Ok(Some(c)),
            _ => Ok(None),
        }
    }

    /// Adds each user not yet a member (as the system: routing to a role is medhub's doing,
    /// not a member's); returns those added. Someone added meanwhile is simply skipped.
    async fn add_members(&self, conversation: ConversationId, users: &[UserId]) -> Result<Vec<UserId>, ServiceError> {
        let mut added = Vec::new();
        for u in users {
            if self.store.member(conversation, *u).await?.is_some() {
                continue;
            }
            let cmd = Command::AddMember { actor: Actor::System, conversation, user: *u, role: MemberRole::Member };
            match self.messaging.change_membership(cmd).await {
                Ok(_) => added.push(*u),
                Err(ServiceError::Domain(DomainError::AlreadyMember)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(added)
    }

    /// A message's resolutions, oldest first (for the sender and the conversation's readers:
    /// the caller must be able to see the message).
    pub async fn resolutions(&self, message: MessageId) -> Result<Vec<RoleResolution>, ServiceError> {
        Ok(self.store.resolutions(message).await?)
    }

    // --- hand-over ----------------------------------------------------------------------------

    /// One tick of the hand-over job: for every open urgent or critical item of a role
    /// conversation (sent in the last [`OPEN_ITEM_MAX_AGE`], not recalled, and not taken by
    /// any holder: no `accept`, `call_back` or `done`), the role's current holders who are not
    /// members and were never routed the item are added to its conversation, and the move is
    /// recorded (a `handover` resolution and its `oncall.handover` record) once per item and
    /// set of people added. Safe to run on several nodes at once: adding a member twice is
    /// refused by the planner, and a resolution is recorded once.
    pub async fn handover_tick(&self) -> Result<HandoverReport, ServiceError> {
        self.handover_from(None).await
    }

    /// [`handover_tick`](Self::handover_tick) starting after `after` in the open items'
    /// order; the report's `more` says where the next tick resumes when this one stopped at
    /// its bound.
    pub async fn handover_from(&self, after: Option<(Timestamp, MessageId)>) -> Result<HandoverReport, ServiceError> {
        let now = self.clock.now();
        let since = now.checked_sub(OPEN_ITEM_MAX_AGE).unwrap_or(Timestamp::MIN);
        let mut items: Vec<OpenItem> = Vec::new();
        let mut after = after;
        let mut more = None;
        for page_no in 0..HANDOVER_PAGES_PER_TICK {
            let page = self.store.open_role_items(since, after, HANDOVER_PAGE).await?;
            let full = page.len() == HANDOVER_PAGE as usize;
            after = page.last().map(|i| (i.created_at, i.message));
            items.extend(page);
            if !full {
                break;
            }
            if page_no + 1 == HANDOVER_PAGES_PER_TICK {
                more = after;
            }
        }
        let mut by_role: HashMap<OnCallRoleId, Vec<OpenItem>> = HashMap::new();
        for item in items {
            by_role.entry(item.role).or_default().push(item);
        }
        let mut report = HandoverReport { more, ..HandoverReport::default() };
        for (role_id, items) in by_role {
            let Some(role) = self.store.oncall_role_by_id(role_id).await? else { continue };
            match self.hand_over(&role, &items, now).await {
                Ok((moved, next)) => {
                    report.moved += moved;
                    report.next = match (report.next, next) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                // One role's trouble does not stop the others; it is tried again next tick.
                Err(e) => tracing::warn!(role = %role_id, error = %e, "on-call hand-over failed"),
            }
        }
        Ok(report)
    }

    /// Moves one role's open items to its current holders; returns how many were recorded and
    /// when the role next changes holder.
    async fn hand_over(
        &self,
        role: &OnCallRole,
        items: &[OpenItem],
        now: Timestamp,
    ) -> Result<(usize, Option<Timestamp>), ServiceError> {
        let rs = self.schedules_of(role).await?;
        let schedules = self.rules_of(&rs)?;
        let coverages = self.coverages(role.org, now).await?;
        let next = role_next_change(&schedules, &coverages, now);
        let holders = self.reachable_in(role, &schedules, &coverages, now).await?;
        let mut moved = 0;
        let mut by_conv: HashMap<ConversationId, Vec<&OpenItem>> = HashMap::new();
        for i in items {
            by_conv.entry(i.conversation).or_default().push(i);
        }
        for (conversation, items) in by_conv {
            let members: HashSet<UserId> =
                self.store.members(conversation).await?.into_iter().map(|m| m.user).collect();
            // Usually every holder is a member already: nothing more to read.
            if holders.iter().all(|h| members.contains(&h.user)) {
                continue;
            }
            // Who each item was routed to already: someone who left after being routed an item
            // is not pulled back in for it.
            let mut routed: HashMap<MessageId, HashSet<UserId>> = HashMap::new();
            for i in &items {
                let mut people = HashSet::new();
                for r in self.store.resolutions(i.message).await? {
                    let hs = holders_from_json(&r.holders).map_err(|e| corrupt(format!("resolution {}: {e}", r.id)))?;
                    people.extend(hs.into_iter().map(|h| UserId::from_uuid(h.user_id)));
                }
                routed.insert(i.message, people);
            }
            let wanted: Vec<UserId> = holders
                .iter()
                .map(|h| h.user)
                .filter(|u| !members.contains(u))
                .filter(|u| {
                    items.iter().any(|i| i.sender != *u && !routed.get(&i.message).is_some_and(|r| r.contains(u)))
                })
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let added = self.add_members(conversation, &wanted).await?;
            if added.is_empty() {
                continue;
            }
            let mut key: Vec<String> = added.iter().map(UserId::to_string).collect();
            key.sort();
            let views: Vec<HolderView> = holders.iter().map(Holder::view).collect();
            for i in &items {
                let resolution = RoleResolution {
                    id: uuid::Uuid::now_v7(),
                    org: role.org,
                    role: role.id,
                    message: i.message,
                    conversation,
                    kind: ResolutionKind::Handover,
                    at: now,
                    holders: holders_json(&views),
                    dedupe: format!("handover:{}:{}", i.message, key.join(",")),
                };
                let audit = [record(
                    &self.audit,
                    role.org,
                    By::Operator,
                    "oncall.handover",
                    ("message", i.message.to_string()),
                    format!("oncall_role:{} conversation:{conversation} added:{}", role.id, key.join(",")),
                )];
                if self.store.record_resolution(&resolution, &audit).await? {
                    moved += 1;
                }
            }
        }
        Ok((moved, next))
    }

    /// The hand-over job: a tick, then sleep until the next change of a role with open items
    /// or `max_tick`, whichever is sooner (new items and schedule edits are picked up within
    /// `max_tick`).
    pub async fn run_handover(self, max_tick: Duration) {
        let mut resume = None;
        loop {
            let wait = match self.handover_from(resume).await {
                Ok(report) => {
                    if report.moved > 0 {
                        tracing::info!(moved = report.moved, "open on-call items moved to new holders");
                    }
                    resume = report.more;
                    let now = self.clock.now();
                    report
                        .next
                        .and_then(|t| Duration::try_from(t.duration_since(now)).ok())
                        .map_or(max_tick, |d| d.min(max_tick))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "on-call hand-over tick failed");
                    max_tick
                }
            };
            tokio::time::sleep(wait.max(HANDOVER_MIN_SLEEP)).await;
        }
    }
}

/// Holders before names are looked up.
struct NowAndNext0 {
    now: Vec<(ScheduleId, RuleOnCall)>,
    next: Option<(Timestamp, Vec<(ScheduleId, RuleOnCall)>)>,
}

#[cfg(test)]
mod tests {
    use jiff::civil::date;
    use medhub_core::schedule::{Rotation, RotationKind, Target};

    use super::*;

    fn daily(id: ScheduleId, people: &[UserId], hour: i8) -> Schedule {
        Schedule {
            id,
            org: OrgId::from_uuid(uuid::Uuid::from_u128(1)),
            name: "s".into(),
            target: Target::Team("t".into()),
            zone: Zone::named("Europe/Berlin").unwrap(),
            rotations: vec![Rotation {
                participants: people.to_vec(),
                start: date(2026, 3, 2).at(hour, 0, 0, 0),
                kind: RotationKind::Daily,
                restriction: None,
            }],
            overrides: vec![],
        }
    }

    #[test]
    fn a_role_changes_holder_when_the_union_of_its_schedules_does() {
        let [a, b, c] = [1u128, 2, 3].map(|n| UserId::from_uuid(uuid::Uuid::from_u128(n)));
        let t = |d: i8, h: i8| date(2026, 3, d).at(h, 0, 0, 0).in_tz("Europe/Berlin").unwrap().timestamp();
        // Schedule 1 hands over at 08:00 between a and b; schedule 2 holds a all the time
        // except on alternate days at 20:00, when c takes over.
        let s1 = daily(ScheduleId::from_uuid(uuid::Uuid::from_u128(10)), &[a, b], 8);
        let s2 = daily(ScheduleId::from_uuid(uuid::Uuid::from_u128(11)), &[a, c], 20);
        // 3 March 10:00: s1 has b (day 1), s2 has a (started 2 March 20:00, day 0).
        let at = t(3, 10);
        let now: Vec<UserId> = union_at(&[s1.clone(), s2.clone()], &[], at).into_iter().map(|(_, o)| o.user).collect();
        assert_eq!(now, vec![b, a]);
        // s2 hands over to c at 20:00: the union changes.
        assert_eq!(role_next_change(&[s1.clone(), s2.clone()], &[], at), Some(t(3, 20)));
        // With one schedule only, the next change is its own.
        assert_eq!(role_next_change(std::slice::from_ref(&s1), &[], at), Some(t(4, 8)));
        // Changes of one schedule that another makes up for are passed over: with s3 holding
        // both a and b all the time (two layers), s1's daily hand-overs between a and b change
        // nothing; the first change is when s3 adds c, on 6 March at 00:00.
        let mut s3 = daily(ScheduleId::from_uuid(uuid::Uuid::from_u128(12)), &[a], 8);
        let mut second = s3.rotations[0].clone();
        second.participants = vec![b];
        s3.rotations.push(second);
        s3.overrides.push(Override {
            id: OverrideId::from_uuid(uuid::Uuid::from_u128(20)),
            user: c,
            start: t(6, 0),
            end: t(7, 0),
            replaces: None,
        });
        assert_eq!(rules::next_change_after(&s1, &[], at), Some(t(4, 8)));
        assert_eq!(role_next_change(&[s1.clone(), s3.clone()], &[], at), Some(t(6, 0)));
        // No schedules: never.
        assert_eq!(role_next_change(&[], &[], at), None);
    }

    #[test]
    fn role_keys_and_names_are_checked() {
        for ok in ["cardiology-oncall", "4west-charge", "ab"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in ["a", "-cardio", "Cardio", "car dio", "cardio_oncall", &"x".repeat(65)] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        assert!(check_text("Cardiology on-call", "x").is_ok());
        assert!(check_text("  ", "x").is_err());
        assert!(check_text("a\nb", "x").is_err());
        assert_eq!(department(Some("  ".into())).unwrap(), None);
        assert_eq!(department(Some(" Cardiology ".into())).unwrap().as_deref(), Some("Cardiology"));
    }
}
