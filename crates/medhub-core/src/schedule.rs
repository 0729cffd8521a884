//! On-call schedules (issue "Clinical workflows"): who holds a role or team's on-call duty at
//! an instant, the effective timeline over an interval, and when the holder next changes.
//! Plain types and plain functions; the service stores schedules and routes messages with
//! them, the wire crate turns timelines into iCalendar (`medhub_wire::ical`). The same text
//! for a hospital IT reader is in docs/clinical.md.
//!
//! # Data model
//!
//! - A [`Schedule`] belongs to an organization and names its [`Target`] (a team or a role,
//!   e.g. "cardiology on-call" or "4 West charge nurse") and its IANA time [`Zone`].
//! - It has up to [`MAX_ROTATIONS`] [`Rotation`]s (layers). A rotation is an ordered list of
//!   participants, a first hand-over (a *civil* date and time in the schedule's zone) and a
//!   shift length ([`RotationKind`]: daily, weekly, a number of days or a number of hours).
//!   Shift `k` goes to participant `k mod n`. An optional [`Restriction`] limits the layer to
//!   a daily window on some weekdays (a night layer 20:00–08:00, weekdays 08:00–18:00);
//!   outside it the layer has nobody, and the rotation keeps turning as if unrestricted.
//! - [`Override`]s put someone on call for an interval of instants. With `replaces: Some(u)`
//!   the override takes `u`'s place wherever a rotation has `u` on call (and does nothing
//!   where it does not); with `replaces: None` it adds a holder. A swap is two overrides
//!   ([`swap`]).
//! - [`Coverage`] is kept beside schedules (it is about a person, not a schedule): while Dr X
//!   is away, Dr Y takes whatever is addressed to X, on every schedule and in direct messages.
//!
//! # DST rule
//!
//! Hand-overs are civil times: shift `k` starts at `start + k × length` computed on the
//! calendar (no time zone), and only then is that civil time turned into an instant in the
//! zone. A daily 08:00 hand-over stays at 08:00 local, so the shift that spans the
//! spring-forward night is 23 hours long and the one that spans the fall-back night 25 hours;
//! 12-hour shifts at 07:00 and 19:00 stay at 07:00 and 19:00 (an 11-hour and a 13-hour night).
//! A civil time that does not exist or exists twice is resolved by [`local_to_instant`]:
//! RFC 5545 §3.3.5's rule, which is also jiff's `Disambiguation::Compatible`: a time in a gap
//! is read with the offset before the gap (02:30 on spring-forward day in New York becomes
//! 03:30 EDT), and a time in a fold is its first occurrence (01:30 on fall-back day is
//! 01:30 EDT). If a gap is as long as a shift (hourly shifts over a one-hour gap), two
//! consecutive hand-overs fall on the same instant and the skipped shift is empty: it never
//! appears in a timeline. Where a gap is longer than a shift (Antarctica/Troll jumps two
//! hours), hand-overs can resolve out of order; the shift in force at an instant is always
//! the latest-numbered one whose hand-over is not after it, so shifts never overlap.
//!
//! # Layering rule
//!
//! Every rotation whose shift (inside its restriction) contains the instant contributes its
//! holder; replacing overrides swap that holder for another person; adding overrides add
//! holders. [`on_call_at`] lists them in rotation order, then adding overrides in list order,
//! each person once. If two replacing overrides for the same person overlap, or two adding
//! overrides for the same person overlap, [`validate`] refuses the schedule; the resolution
//! functions still answer (the first in list order wins).
//!
//! # Coverage rule
//!
//! Each holder is followed through the coverages in force at the instant: X covered by Y
//! who is covered by Z gives Z, covering for Y and X. [`validate_coverage`] refuses a cycle
//! (X→Y→X at some common instant), a chain longer than [`MAX_COVERAGE_CHAIN`] and two
//! coverages of one person at once. Resolution never loops: a cycle or an over-long chain
//! (which validation would have refused) resolves to the scheduled holder, because
//! reaching the person on the rota is safer than reaching nobody.
//!
//! # Bounds
//!
//! Every bound is a constant below with the reason for its value. Queries over an interval
//! are bounded ([`MAX_QUERY_SPAN`], [`MAX_SHIFTS`]) so no request can make the server
//! enumerate years of hourly shifts.

use std::collections::HashMap;

use jiff::civil::{self, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::ids::{OrgId, OverrideId, ScheduleId, UserId};

/// At most 16 rotations (layers) per schedule: a primary, a backup and a few restricted
/// layers (nights, weekends) are the real cases; each layer costs time in every resolution.
pub const MAX_ROTATIONS: usize = 16;
/// At most 1,000 participants per rotation: larger than any department's rota, small enough
/// to keep a schedule row and its checks cheap.
pub const MAX_PARTICIPANTS: usize = 1_000;
/// At most 5,000 overrides per schedule: years of daily swaps. The service is expected to
/// drop overrides that ended long ago; this only stops a runaway import.
pub const MAX_OVERRIDES: usize = 5_000;
/// At most 2,000 coverages are validated together: [`validate_coverage`] is quadratic.
pub const MAX_COVERAGES: usize = 2_000;
/// A coverage chain (X covered by Y covered by Z …) follows at most 8 coverages. Longer
/// chains are a data-entry mistake, and the message must reach someone without a long walk.
pub const MAX_COVERAGE_CHAIN: usize = 8;
/// A custom shift of at most 336 hours (two weeks) when counted in hours.
pub const MAX_SHIFT_HOURS: u32 = 336;
/// A custom shift of at most 366 days when counted in days: a year's block is the longest
/// rotation anyone runs; the bound keeps hand-over arithmetic far from jiff's date limits.
pub const MAX_SHIFT_DAYS: u32 = 366;
/// [`shifts_between`] covers at most 400 days: a year's calendar export with margin.
pub const MAX_QUERY_SPAN: SignedDuration = SignedDuration::from_hours(24 * 400);
/// [`shifts_between`] returns at most 100,000 shifts (hourly shifts over a year on a few
/// layers); beyond that the caller must ask for a shorter interval.
pub const MAX_SHIFTS: usize = 100_000;
/// An override lasts at most 400 days; longer is a change of rotation, not an override.
pub const MAX_OVERRIDE_SPAN: SignedDuration = SignedDuration::from_hours(24 * 400);
/// [`next_change_after`] looks at most 400 days ahead and answers `None` beyond.
pub const NEXT_CHANGE_HORIZON: SignedDuration = SignedDuration::from_hours(24 * 400);
/// Names (schedule, target) are 1 to 200 characters without control characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Rotations start between 1970 and 2199: earlier dates have unreliable zone data, later
/// ones are typos; both keep hand-over arithmetic far from jiff's range (year 9999).
pub const MIN_START_YEAR: i16 = 1970;
pub const MAX_START_YEAR: i16 = 2199;
/// IANA zone names are at most 64 bytes (the longest in tzdb is about 30).
pub const MAX_ZONE_NAME_BYTES: usize = 64;

/// The largest difference between two UTC offsets jiff can represent (±25:59:59), rounded
/// up. Hand-over searches look this far either side of the civil estimate, so even a zone
/// that skipped a whole day (Pacific/Apia, 2011) is handled exactly.
const MAX_OFFSET_SPREAD: SignedDuration = SignedDuration::from_hours(52);

/// Why a schedule, a coverage set or a query was refused. Each variant is one cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The zone name is not in the IANA time zone database (or is not a zone name at all).
    #[error("unknown time zone {0:?}")]
    UnknownTimeZone(String),
    /// The schedule or target name is empty, too long or has control characters.
    #[error("names must be 1-{max} characters without control characters")]
    InvalidName { max: usize },
    /// More rotations than [`MAX_ROTATIONS`].
    #[error("a schedule has at most {max} rotations")]
    TooManyRotations { max: usize },
    /// A rotation without participants.
    #[error("rotation {rotation} has no participants")]
    EmptyRotation { rotation: usize },
    /// A rotation with more than [`MAX_PARTICIPANTS`] participants.
    #[error("rotation {rotation} has more than {max} participants")]
    TooManyParticipants { rotation: usize, max: usize },
    /// A custom shift length of zero or above [`MAX_SHIFT_HOURS`] / [`MAX_SHIFT_DAYS`].
    #[error("rotation {rotation} has a shift length out of range")]
    ShiftLengthOutOfRange { rotation: usize },
    /// A rotation starting outside [`MIN_START_YEAR`]..=[`MAX_START_YEAR`].
    #[error("rotation {rotation} starts outside {MIN_START_YEAR}-{MAX_START_YEAR}")]
    StartOutOfRange { rotation: usize },
    /// A restriction that names no weekday (the layer would never hold anyone).
    #[error("rotation {rotation} has a restriction without weekdays")]
    RestrictionWithoutDays { rotation: usize },
    /// A time with a fraction of a second. iCalendar and rostering tools count in whole
    /// seconds, so schedules do too (export then import gives the same instants).
    #[error("times are whole seconds")]
    SubsecondTime,
    /// More overrides than [`MAX_OVERRIDES`].
    #[error("a schedule has at most {max} overrides")]
    TooManyOverrides { max: usize },
    /// An override that ends at or before its start.
    #[error("override {id} ends at or before its start")]
    OverrideEndBeforeStart { id: OverrideId },
    /// An override longer than [`MAX_OVERRIDE_SPAN`].
    #[error("override {id} is longer than the maximum")]
    OverrideTooLong { id: OverrideId },
    /// An override that puts a person in their own place.
    #[error("override {id} replaces its own user")]
    OverrideReplacesSelf { id: OverrideId },
    /// Two overrides with the same id.
    #[error("override id {id} is used twice")]
    DuplicateOverrideId { id: OverrideId },
    /// Two overrides for the same slot at once: both replace the same person, or both add
    /// the same person.
    #[error("overrides {first} and {second} overlap for the same slot")]
    OverlappingOverrides { first: OverrideId, second: OverrideId },
    /// A swap of two shifts of the same person.
    #[error("a swap needs two different people")]
    SwapSameUser,
    /// A swap of shifts that overlap in time.
    #[error("a swap needs shifts that do not overlap")]
    SwapShiftsOverlap,
    /// A swap of a shift that is not a rotation's (an override already changed it).
    #[error("only rotation shifts can be swapped")]
    SwapNeedsRotationShifts,
    /// More coverages than [`MAX_COVERAGES`].
    #[error("at most {max} coverages are checked together")]
    TooManyCoverages { max: usize },
    /// A coverage that ends at or before its start.
    #[error("a coverage ends at or before its start")]
    CoverageEndBeforeStart,
    /// A coverage of a person by themselves.
    #[error("a person cannot cover themselves")]
    CoverageOfSelf,
    /// Two coverages of the same person at once: whom would the message go to?
    #[error("two coverages of one person overlap")]
    OverlappingCoverage { covered: UserId },
    /// Coverages that go round in a circle at `at`: `users` is the circle, in order.
    #[error("coverage goes round in a circle")]
    CoverageCycle { users: Vec<UserId>, at: Timestamp },
    /// A coverage chain longer than [`MAX_COVERAGE_CHAIN`] at `at`.
    #[error("a coverage chain is longer than {max}")]
    CoverageChainTooLong { max: usize, at: Timestamp },
    /// A query whose end is not after its start.
    #[error("the interval ends at or before its start")]
    EmptyInterval,
    /// A query longer than [`MAX_QUERY_SPAN`].
    #[error("the interval is longer than the maximum")]
    IntervalTooLong,
    /// A query whose answer would exceed [`MAX_SHIFTS`] shifts.
    #[error("more than {max} shifts: ask for a shorter interval")]
    TooManyShifts { max: usize },
    /// A civil time that jiff cannot place in the zone (out of range).
    #[error("a civil time could not be placed in the time zone")]
    CivilTimeOutOfRange,
}

/// What a schedule is for: a team or a role.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A team, e.g. "cardiology on-call".
    Team(String),
    /// A role, e.g. "4 West charge nurse".
    Role(String),
}

impl Target {
    /// The team's or role's name.
    pub fn name(&self) -> &str {
        match self {
            Target::Team(n) | Target::Role(n) => n,
        }
    }
}

/// An IANA time zone, looked up once, with its name kept for storage and display.
#[derive(Clone, Debug)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    /// Looks an IANA name (e.g. "Europe/Berlin") up in jiff's database: the system's
    /// zoneinfo, or the bundled copy where the system has none. Only zone names are
    /// accepted, not POSIX TZ strings or fixed offsets.
    pub fn named(name: &str) -> Result<Zone, ScheduleError> {
        let plausible = !name.is_empty()
            && name.len() <= MAX_ZONE_NAME_BYTES
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'));
        if !plausible {
            return Err(ScheduleError::UnknownTimeZone(name.chars().take(MAX_ZONE_NAME_BYTES).collect()));
        }
        let tz = jiff::tz::db().get(name).map_err(|_| ScheduleError::UnknownTimeZone(name.to_owned()))?;
        // The database's own spelling ("europe/berlin" is found as "Europe/Berlin").
        let name = tz.iana_name().unwrap_or(name).to_owned();
        Ok(Zone { name, tz })
    }

    /// The IANA name, as the database spells it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The zone's rules.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Zone {}

/// Turns a civil time in a zone into an instant, with the DST rule of RFC 5545 §3.3.5 and
/// jiff's `Compatible`: a time in a gap is read with the offset before the gap (it comes out
/// later on the clock), a time in a fold is its first (earlier) occurrence.
pub fn local_to_instant(tz: &TimeZone, dt: civil::DateTime) -> Result<Timestamp, ScheduleError> {
    tz.to_ambiguous_timestamp(dt).compatible().map_err(|_| ScheduleError::CivilTimeOutOfRange)
}

/// An on-call schedule for one team or role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub id: ScheduleId,
    pub org: OrgId,
    pub name: String,
    pub target: Target,
    /// Hand-overs and restriction windows are civil times in this zone.
    pub zone: Zone,
    /// The layers, in order; on-call lists follow this order.
    pub rotations: Vec<Rotation>,
    pub overrides: Vec<Override>,
}

/// One layer: participants taking turns at civil hand-over times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The order of the rotation; a person may appear more than once.
    pub participants: Vec<UserId>,
    /// The first hand-over, in the schedule's zone, to `participants[0]`. Its time of day is
    /// the hand-over time of every day-based shift. Nobody holds this layer before it.
    pub start: civil::DateTime,
    pub kind: RotationKind,
    /// If set, the layer holds only inside these windows.
    pub restriction: Option<Restriction>,
}

/// How long each shift of a rotation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationKind {
    /// One calendar day per shift.
    Daily,
    /// Seven calendar days per shift.
    Weekly,
    /// Any number of calendar days or civil hours.
    Custom(ShiftLength),
}

/// A custom shift length, counted on the civil clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShiftLength {
    /// 1 to [`MAX_SHIFT_DAYS`] calendar days.
    Days(u32),
    /// 1 to [`MAX_SHIFT_HOURS`] civil hours: 12-hour shifts from 07:00 hand over at 07:00
    /// and 19:00 local every day, whatever DST does.
    Hours(u32),
}

impl RotationKind {
    /// The shift length in civil seconds (calendar days are 86,400 civil seconds; the zone
    /// is applied only afterwards).
    fn civil_seconds(self) -> i64 {
        match self {
            RotationKind::Daily => 86_400,
            RotationKind::Weekly => 7 * 86_400,
            RotationKind::Custom(ShiftLength::Days(d)) => i64::from(d) * 86_400,
            RotationKind::Custom(ShiftLength::Hours(h)) => i64::from(h) * 3_600,
        }
    }

    fn in_range(self) -> bool {
        match self {
            RotationKind::Daily | RotationKind::Weekly => true,
            RotationKind::Custom(ShiftLength::Days(d)) => (1..=MAX_SHIFT_DAYS).contains(&d),
            RotationKind::Custom(ShiftLength::Hours(h)) => (1..=MAX_SHIFT_HOURS).contains(&h),
        }
    }
}

/// A set of weekdays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Weekdays(u8);

impl Weekdays {
    pub const ALL: Weekdays = Weekdays(0b111_1111);
    pub const MONDAY_TO_FRIDAY: Weekdays = Weekdays(0b001_1111);
    pub const WEEKEND: Weekdays = Weekdays(0b110_0000);
    pub const NONE: Weekdays = Weekdays(0);

    /// The set of the given days.
    pub fn of(days: &[Weekday]) -> Weekdays {
        Weekdays(days.iter().fold(0, |bits, d| bits | Self::bit(*d)))
    }

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & Self::bit(day) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn bit(day: Weekday) -> u8 {
        1 << day.to_monday_zero_offset()
    }
}

/// A daily window in the schedule's zone, on some weekdays, outside which a layer holds
/// nobody.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restriction {
    /// The weekdays on which a window *starts* (a Friday night window ends on Saturday).
    pub days: Weekdays,
    /// Window start, civil time.
    pub from: civil::Time,
    /// Window end, civil time. Before `from`: the window ends the next day (20:00–08:00).
    /// Equal to `from`: the window lasts until the same time the next day.
    pub to: civil::Time,
}

/// Someone on call for an interval, in place of a person or in addition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Override {
    pub id: OverrideId,
    /// Who is on call.
    pub user: UserId,
    pub start: Timestamp,
    /// Exclusive.
    pub end: Timestamp,
    /// `Some(u)`: takes `u`'s place wherever a rotation has `u` on call in the interval.
    /// `None`: adds `user` as a holder for the whole interval.
    pub replaces: Option<UserId>,
}

/// While `covered` is away, anything addressed to them goes to `by`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coverage {
    pub covered: UserId,
    pub by: UserId,
    pub start: Timestamp,
    /// Exclusive.
    pub end: Timestamp,
}

/// Why someone holds a shift.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShiftSource {
    /// Their turn in rotation `rotation` (an index into `Schedule::rotations`).
    Rotation { rotation: usize },
    /// An override. `rotation` and `replaced` are set for a replacing override (the layer
    /// and person it stands in for), `None` for an adding one.
    Override { id: OverrideId, rotation: Option<usize>, replaced: Option<UserId> },
}

impl ShiftSource {
    /// The rotation (layer) this shift belongs to, if any.
    pub fn rotation(self) -> Option<usize> {
        match self {
            ShiftSource::Rotation { rotation } => Some(rotation),
            ShiftSource::Override { rotation, .. } => rotation,
        }
    }
}

/// One piece of the effective timeline: `user` holds from `start` (inclusive) to `end`
/// (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shift {
    pub user: UserId,
    pub start: Timestamp,
    pub end: Timestamp,
    pub source: ShiftSource,
}

/// A person on call at an instant, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnCall {
    /// Who receives what is addressed to the schedule.
    pub user: UserId,
    /// Who the schedule names (after overrides), before coverage.
    pub scheduled: UserId,
    pub source: ShiftSource,
    /// The people `user` covers for, from `scheduled` along the chain; empty when `user` is
    /// the scheduled holder.
    pub covering_for: Vec<UserId>,
}

/// Where something addressed to a person goes at an instant, after coverage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Covered {
    /// The final recipient.
    pub user: UserId,
    /// The people `user` stands in for, in chain order starting with the addressee; empty
    /// when nobody covers the addressee.
    pub covering_for: Vec<UserId>,
}

/// Checks a schedule's rules: names, rotations, restrictions, overrides and their overlaps.
pub fn validate(schedule: &Schedule) -> Result<(), ScheduleError> {
    check_name(&schedule.name)?;
    check_name(schedule.target.name())?;
    if schedule.rotations.len() > MAX_ROTATIONS {
        return Err(ScheduleError::TooManyRotations { max: MAX_ROTATIONS });
    }
    for (rotation, r) in schedule.rotations.iter().enumerate() {
        if r.participants.is_empty() {
            return Err(ScheduleError::EmptyRotation { rotation });
        }
        if r.participants.len() > MAX_PARTICIPANTS {
            return Err(ScheduleError::TooManyParticipants { rotation, max: MAX_PARTICIPANTS });
        }
        if !r.kind.in_range() {
            return Err(ScheduleError::ShiftLengthOutOfRange { rotation });
        }
        if !(MIN_START_YEAR..=MAX_START_YEAR).contains(&r.start.year()) {
            return Err(ScheduleError::StartOutOfRange { rotation });
        }
        if r.start.subsec_nanosecond() != 0 {
            return Err(ScheduleError::SubsecondTime);
        }
        if let Some(w) = r.restriction {
            if w.days.is_empty() {
                return Err(ScheduleError::RestrictionWithoutDays { rotation });
            }
            if w.from.subsec_nanosecond() != 0 || w.to.subsec_nanosecond() != 0 {
                return Err(ScheduleError::SubsecondTime);
            }
        }
    }
    validate_overrides(&schedule.overrides)
}

fn check_name(name: &str) -> Result<(), ScheduleError> {
    let n = name.chars().count();
    if name.trim().is_empty() || n > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ScheduleError::InvalidName { max: MAX_NAME_CHARS });
    }
    Ok(())
}

fn validate_overrides(overrides: &[Override]) -> Result<(), ScheduleError> {
    if overrides.len() > MAX_OVERRIDES {
        return Err(ScheduleError::TooManyOverrides { max: MAX_OVERRIDES });
    }
    let mut ids = HashMap::with_capacity(overrides.len());
    for o in overrides {
        if ids.insert(o.id, ()).is_some() {
            return Err(ScheduleError::DuplicateOverrideId { id: o.id });
        }
        if o.end <= o.start {
            return Err(ScheduleError::OverrideEndBeforeStart { id: o.id });
        }
        if o.end.duration_since(o.start) > MAX_OVERRIDE_SPAN {
            return Err(ScheduleError::OverrideTooLong { id: o.id });
        }
        if o.replaces == Some(o.user) {
            return Err(ScheduleError::OverrideReplacesSelf { id: o.id });
        }
        if o.start.subsec_nanosecond() != 0 || o.end.subsec_nanosecond() != 0 {
            return Err(ScheduleError::SubsecondTime);
        }
    }
    // The slot of an override: the person it replaces, or the person it adds. Two overrides
    // of one slot must not overlap. Sorted by slot and start, an overlap shows up against
    // the latest end seen so far in the slot.
    let mut by_slot: Vec<(bool, UserId, Timestamp, Timestamp, OverrideId)> = overrides
        .iter()
        .map(|o| match o.replaces {
            Some(u) => (true, u, o.start, o.end, o.id),
            None => (false, o.user, o.start, o.end, o.id),
        })
        .collect();
    by_slot.sort_by_key(|s| (s.0, s.1, s.2));
    let mut open: Option<(bool, UserId, Timestamp, OverrideId)> = None;
    for (replacing, user, start, end, id) in by_slot {
        match open {
            Some((r, u, open_end, open_id)) if r == replacing && u == user => {
                if start < open_end {
                    return Err(ScheduleError::OverlappingOverrides { first: open_id, second: id });
                }
                if end > open_end {
                    open = Some((replacing, user, end, id));
                }
            }
            _ => open = Some((replacing, user, end, id)),
        }
    }
    Ok(())
}

/// Checks a set of coverages: each has a positive interval and two different people, one
/// person is covered by at most one other at a time, and at no instant do the coverages in
/// force form a circle or a chain longer than [`MAX_COVERAGE_CHAIN`].
pub fn validate_coverage(coverages: &[Coverage]) -> Result<(), ScheduleError> {
    if coverages.len() > MAX_COVERAGES {
        return Err(ScheduleError::TooManyCoverages { max: MAX_COVERAGES });
    }
    for c in coverages {
        if c.end <= c.start {
            return Err(ScheduleError::CoverageEndBeforeStart);
        }
        if c.covered == c.by {
            return Err(ScheduleError::CoverageOfSelf);
        }
    }
    // Sorted by person and start, an overlap shows up against the latest end seen so far
    // for the same person.
    let mut sorted: Vec<&Coverage> = coverages.iter().collect();
    sorted.sort_by_key(|c| (c.covered, c.start));
    let mut running: Option<(UserId, Timestamp)> = None;
    for c in &sorted {
        if let Some((u, end)) = running
            && u == c.covered
            && c.start < end
        {
            return Err(ScheduleError::OverlappingCoverage { covered: c.covered });
        }
        running = match running {
            Some((u, end)) if u == c.covered && end > c.end => Some((u, end)),
            _ => Some((c.covered, c.end)),
        };
    }
    // The coverages in force change only at starts and ends; a circle or a long chain that
    // exists at some instant exists at the latest start among its links. So checking the
    // graph at every start finds them all.
    let mut starts: Vec<Timestamp> = coverages.iter().map(|c| c.start).collect();
    starts.sort();
    starts.dedup();
    for at in starts {
        let edges: HashMap<UserId, UserId> =
            coverages.iter().filter(|c| c.start <= at && at < c.end).map(|c| (c.covered, c.by)).collect();
        for &first in edges.keys() {
            let mut chain = vec![first];
            let mut cur = first;
            while let Some(&next) = edges.get(&cur) {
                if let Some(pos) = chain.iter().position(|u| *u == next) {
                    return Err(ScheduleError::CoverageCycle { users: chain[pos..].to_vec(), at });
                }
                chain.push(next);
                if chain.len() > MAX_COVERAGE_CHAIN + 1 {
                    return Err(ScheduleError::CoverageChainTooLong { max: MAX_COVERAGE_CHAIN, at });
                }
                cur = next;
            }
        }
    }
    Ok(())
}

/// Where something addressed to `user` goes at `at`: along the coverages in force (the first
/// in list order per person), at most [`MAX_COVERAGE_CHAIN`] steps. A circle or an over-long
/// chain (refused by [`validate_coverage`]) resolves to `user` itself.
pub fn covering(coverages: &[Coverage], user: UserId, at: Timestamp) -> Covered {
    let mut chain = vec![user];
    let mut cur = user;
    while let Some(c) = coverages.iter().find(|c| c.covered == cur && c.start <= at && at < c.end) {
        if chain.contains(&c.by) || chain.len() > MAX_COVERAGE_CHAIN {
            return Covered { user, covering_for: Vec::new() };
        }
        chain.push(c.by);
        cur = c.by;
    }
    let last = chain.pop().unwrap_or(user);
    Covered { user: last, covering_for: chain }
}

/// Who is on call at `at`, after overrides and coverage: one entry per person, in rotation
/// order and then adding overrides in list order.
pub fn on_call_at(schedule: &Schedule, coverages: &[Coverage], at: Timestamp) -> Vec<OnCall> {
    let mut out: Vec<OnCall> = Vec::new();
    for (scheduled, source) in scheduled_at(schedule, at) {
        let covered = covering(coverages, scheduled, at);
        if out.iter().all(|o| o.user != covered.user) {
            out.push(OnCall { user: covered.user, scheduled, source, covering_for: covered.covering_for });
        }
    }
    out
}

/// The holders at `at` before coverage, with why; may repeat a person held on two layers.
fn scheduled_at(schedule: &Schedule, at: Timestamp) -> Vec<(UserId, ShiftSource)> {
    let tz = schedule.zone.time_zone();
    let mut out = Vec::new();
    for (rotation, r) in schedule.rotations.iter().enumerate() {
        let Some(k) = shift_index_at(r, tz, at) else { continue };
        if let Some(w) = r.restriction
            && !in_window(&w, tz, at)
        {
            continue;
        }
        let Some(holder) = participant(r, k) else { continue };
        let replacing = schedule.overrides.iter().find(|o| o.replaces == Some(holder) && o.start <= at && at < o.end);
        out.push(match replacing {
            Some(o) => (o.user, ShiftSource::Override { id: o.id, rotation: Some(rotation), replaced: Some(holder) }),
            None => (holder, ShiftSource::Rotation { rotation }),
        });
    }
    for o in schedule.overrides.iter().filter(|o| o.replaces.is_none() && o.start <= at && at < o.end) {
        out.push((o.user, ShiftSource::Override { id: o.id, rotation: None, replaced: None }));
    }
    out
}

/// The effective timeline of shifts that overlap `[from, to)`, after overrides (coverage is
/// about people and is applied by [`on_call_at`]). Shifts are whole: the first may start
/// before `from` and the last end after `to`. Per rotation the shifts never overlap and,
/// without a restriction, leave no gap from the rotation's start on. Sorted by start, then
/// rotation (adding overrides last).
pub fn shifts_between(schedule: &Schedule, from: Timestamp, to: Timestamp) -> Result<Vec<Shift>, ScheduleError> {
    if to <= from {
        return Err(ScheduleError::EmptyInterval);
    }
    if to.duration_since(from) > MAX_QUERY_SPAN {
        return Err(ScheduleError::IntervalTooLong);
    }
    let tz = schedule.zone.time_zone();
    let mut out: Vec<Shift> = Vec::new();
    for (rotation, r) in schedule.rotations.iter().enumerate() {
        for (k, start, end) in rotation_shifts(r, tz, from, to) {
            let Some(holder) = participant(r, k) else { continue };
            let pieces = match r.restriction {
                Some(w) => window_pieces(&w, tz, start, end),
                None => vec![(start, end)],
            };
            for (a, b) in pieces {
                let source = ShiftSource::Rotation { rotation };
                for shift in apply_replacements(&schedule.overrides, rotation, holder, a, b, source) {
                    if shift.end > from && shift.start < to {
                        out.push(shift);
                        if out.len() > MAX_SHIFTS {
                            return Err(ScheduleError::TooManyShifts { max: MAX_SHIFTS });
                        }
                    }
                }
            }
        }
    }
    for o in schedule.overrides.iter().filter(|o| o.replaces.is_none() && o.end > from && o.start < to) {
        out.push(Shift {
            user: o.user,
            start: o.start,
            end: o.end,
            source: ShiftSource::Override { id: o.id, rotation: None, replaced: None },
        });
        if out.len() > MAX_SHIFTS {
            return Err(ScheduleError::TooManyShifts { max: MAX_SHIFTS });
        }
    }
    out.sort_by_key(|s| (s.start, s.source.rotation().unwrap_or(usize::MAX)));
    Ok(out)
}

/// Splits `holder`'s piece `[a, b)` of `rotation` by the replacing overrides for `holder`,
/// in list order (the first override wins where two overlap, as in [`on_call_at`]).
fn apply_replacements(
    overrides: &[Override],
    rotation: usize,
    holder: UserId,
    a: Timestamp,
    b: Timestamp,
    source: ShiftSource,
) -> Vec<Shift> {
    let mut pieces = vec![Shift { user: holder, start: a, end: b, source }];
    for o in overrides.iter().filter(|o| o.replaces == Some(holder) && o.start < b && o.end > a) {
        let mut next = Vec::with_capacity(pieces.len() + 2);
        for p in pieces {
            if p.source != source || o.end <= p.start || o.start >= p.end {
                next.push(p);
                continue;
            }
            if p.start < o.start {
                next.push(Shift { end: o.start, ..p });
            }
            next.push(Shift {
                user: o.user,
                start: p.start.max(o.start),
                end: p.end.min(o.end),
                source: ShiftSource::Override { id: o.id, rotation: Some(rotation), replaced: Some(holder) },
            });
            if o.end < p.end {
                next.push(Shift { start: o.end, ..p });
            }
        }
        pieces = next;
    }
    pieces
}

/// The next instant after `at` at which the set of people on call (after overrides and
/// coverage) is different, within [`NEXT_CHANGE_HORIZON`]; `None` if it stays the same.
pub fn next_change_after(schedule: &Schedule, coverages: &[Coverage], at: Timestamp) -> Option<Timestamp> {
    let holders = |t: Timestamp| {
        let mut users: Vec<UserId> = on_call_at(schedule, coverages, t).into_iter().map(|o| o.user).collect();
        users.sort();
        users
    };
    let now = holders(at);
    let horizon = at.checked_add(NEXT_CHANGE_HORIZON).unwrap_or(Timestamp::MAX);
    // The holders can only change where a shift, an override or a coverage starts or ends.
    // Look a month at a time so a schedule that changes hands daily is answered quickly.
    let step = SignedDuration::from_hours(24 * 31);
    let mut lo = at;
    while lo < horizon {
        let hi = lo.checked_add(step).unwrap_or(Timestamp::MAX).min(horizon);
        let mut candidates: Vec<Timestamp> = Vec::new();
        if let Ok(shifts) = shifts_between(schedule, lo, hi) {
            candidates.extend(shifts.iter().flat_map(|s| [s.start, s.end]));
        }
        candidates.extend(coverages.iter().flat_map(|c| [c.start, c.end]));
        candidates.extend(schedule.overrides.iter().flat_map(|o| [o.start, o.end]));
        candidates.retain(|t| *t > lo && *t <= hi);
        candidates.sort();
        candidates.dedup();
        for t in candidates {
            if holders(t) != now {
                return Some(t);
            }
        }
        lo = hi;
    }
    None
}

/// Swaps two rotation shifts: the holder of `first` takes `second` and the other way round.
/// Returns the two replacing overrides (ids from `ids`, in order) to add to the schedule.
pub fn swap(first: &Shift, second: &Shift, ids: [OverrideId; 2]) -> Result<[Override; 2], ScheduleError> {
    let is_rotation = |s: &Shift| matches!(s.source, ShiftSource::Rotation { .. });
    if !is_rotation(first) || !is_rotation(second) {
        return Err(ScheduleError::SwapNeedsRotationShifts);
    }
    if first.user == second.user {
        return Err(ScheduleError::SwapSameUser);
    }
    if first.start < second.end && second.start < first.end {
        return Err(ScheduleError::SwapShiftsOverlap);
    }
    Ok([
        Override { id: ids[0], user: second.user, start: first.start, end: first.end, replaces: Some(first.user) },
        Override { id: ids[1], user: first.user, start: second.start, end: second.end, replaces: Some(second.user) },
    ])
}

fn participant(r: &Rotation, k: i64) -> Option<UserId> {
    let n = i64::try_from(r.participants.len()).ok().filter(|n| *n > 0)?;
    let i = usize::try_from(k.rem_euclid(n)).ok()?;
    r.participants.get(i).copied()
}

/// Hand-over `k`'s instant, or `None` if it cannot be placed (out of jiff's range), which
/// counts as "never".
fn handover(r: &Rotation, tz: &TimeZone, k: i64) -> Option<Timestamp> {
    let secs = k.checked_mul(r.kind.civil_seconds())?;
    let dt = r.start.checked_add(SignedDuration::from_secs(secs)).ok()?;
    local_to_instant(tz, dt).ok()
}

/// How many hand-overs ahead to look for an earlier one: beyond this, the civil times are
/// far enough apart that no offset change can reorder them.
fn lookahead(r: &Rotation) -> i64 {
    2 * MAX_OFFSET_SPREAD.as_secs() / r.kind.civil_seconds().max(1) + 1
}

/// The civil estimate of the shift index at `at`, floor((civil(at) + bias − start) / length).
fn estimate(r: &Rotation, tz: &TimeZone, at: Timestamp, bias: SignedDuration) -> i64 {
    let civil_at = tz.to_datetime(at);
    let since = civil_at.duration_since(r.start).as_secs().saturating_add(bias.as_secs());
    since.div_euclid(r.kind.civil_seconds().max(1))
}

/// The shift in force at `at`: the largest `k ≥ 0` whose hand-over is not after `at`.
fn shift_index_at(r: &Rotation, tz: &TimeZone, at: Timestamp) -> Option<i64> {
    // A hand-over whose civil time is more than the largest offset spread after civil(at)
    // is after `at`, and one more than that before it is not: scan between the two.
    let hi = estimate(r, tz, at, MAX_OFFSET_SPREAD).saturating_add(1);
    let lo = estimate(r, tz, at, -MAX_OFFSET_SPREAD).saturating_sub(1).max(0);
    let mut k = hi;
    while k >= lo {
        if handover(r, tz, k).is_some_and(|t| t <= at) {
            return Some(k);
        }
        k -= 1;
    }
    None
}

/// The rotation's shifts `(k, start, end)` that overlap `[from, to)`, non-empty, in order.
/// Shift `k` runs from the earliest hand-over numbered `k` or later to the earliest one
/// numbered `k + 1` or later, which is the same as "the largest `k` whose hand-over is not
/// after the instant" and agrees with [`shift_index_at`].
fn rotation_shifts(r: &Rotation, tz: &TimeZone, from: Timestamp, to: Timestamp) -> Vec<(i64, Timestamp, Timestamp)> {
    let first = shift_index_at(r, tz, from).unwrap_or(0);
    let Some(last) = to.checked_sub(SignedDuration::from_nanos(1)).ok().and_then(|t| shift_index_at(r, tz, t)) else {
        return Vec::new();
    };
    let ahead = lookahead(r);
    let top = last.saturating_add(ahead).saturating_add(1);
    let raw: Vec<Option<Timestamp>> = (first..=top).map(|k| handover(r, tz, k)).collect();
    // Suffix minimum: effective[i] = min(raw[i..]); `None` is "never".
    let mut effective = raw.clone();
    let mut min: Option<Timestamp> = None;
    for slot in effective.iter_mut().rev() {
        min = match (min, *slot) {
            (Some(m), Some(t)) => Some(m.min(t)),
            (m, t) => m.or(t),
        };
        *slot = min;
    }
    let mut out = Vec::new();
    for (i, k) in (first..=last).enumerate() {
        let (Some(Some(start)), Some(end)) = (effective.get(i), effective.get(i + 1)) else { continue };
        let end = end.unwrap_or(Timestamp::MAX);
        if *start < end && end > from && *start < to {
            out.push((k, *start, end));
        }
    }
    out
}

/// The window starting on `date`, if the restriction has one that day and it is non-empty.
fn window_on(w: &Restriction, tz: &TimeZone, date: civil::Date) -> Option<(Timestamp, Timestamp)> {
    if !w.days.contains(date.weekday()) {
        return None;
    }
    let end_date = if w.to <= w.from { date.tomorrow().ok()? } else { date };
    let start = local_to_instant(tz, date.to_datetime(w.from)).ok()?;
    let end = local_to_instant(tz, end_date.to_datetime(w.to)).ok()?;
    (start < end).then_some((start, end))
}

/// The civil dates whose windows can touch `[a, b)`: a window starts on its date and lasts
/// at most a day, so a few days of margin either side cover any offset change.
fn window_dates(tz: &TimeZone, a: Timestamp, b: Timestamp) -> impl Iterator<Item = civil::Date> {
    let first = tz.to_datetime(a).date().checked_sub(SignedDuration::from_hours(24 * 4)).ok();
    let last = tz.to_datetime(b).date().checked_add(SignedDuration::from_hours(24 * 3)).ok();
    let mut next = first;
    std::iter::from_fn(move || {
        let d = next?;
        if last.is_none_or(|l| d > l) {
            return None;
        }
        next = d.tomorrow().ok();
        Some(d)
    })
}

fn in_window(w: &Restriction, tz: &TimeZone, at: Timestamp) -> bool {
    window_dates(tz, at, at).filter_map(|d| window_on(w, tz, d)).any(|(s, e)| s <= at && at < e)
}

/// `[a, b)` intersected with the restriction's windows, merged where they touch.
fn window_pieces(w: &Restriction, tz: &TimeZone, a: Timestamp, b: Timestamp) -> Vec<(Timestamp, Timestamp)> {
    let mut pieces: Vec<(Timestamp, Timestamp)> = window_dates(tz, a, b)
        .filter_map(|d| window_on(w, tz, d))
        .map(|(s, e)| (s.max(a), e.min(b)))
        .filter(|(s, e)| s < e)
        .collect();
    pieces.sort();
    let mut merged: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(pieces.len());
    for (s, e) in pieces {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

#[cfg(test)]
mod tests;
