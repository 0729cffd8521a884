//! iCalendar (RFC 5545) for on-call schedules: export a schedule's effective shifts as a
//! `VCALENDAR` for calendar clients, and import the shifts of a calendar published by another
//! rostering system. Pure: text in, values out (docs/clinical.md, "iCalendar").
//!
//! **Export.** One `VEVENT` per shift, times in UTC (`DTSTART:20260329T060000Z`): an instant
//! in UTC is unambiguous, needs no `VTIMEZONE` (which would have to be generated from the
//! zone's transitions) and every client shows it in its user's own zone. `UID` is the
//! schedule id, the layer and the shift's start, so a re-export updates events in place.
//! `SUMMARY` is "On call: <target> (<display name>)"; the person is an `ATTENDEE` (their
//! e-mail address as `mailto:`, or `urn:uuid:` of their user id) and `X-MEDHUB-USER` (the user
//! id). No patient data is ever written.
//!
//! **Import.** Who is on call is read from `X-MEDHUB-USER`, else from each `ATTENDEE` (one
//! shift per attendee); `ORGANIZER` is the person who made the roster, not who is on call, so
//! it is not used. The caller resolves the returned [`OnCallRef`] to a user. Times may be UTC,
//! floating (read in [`ImportOptions::default_zone`]) or `TZID=Area/City` (an IANA name, looked
//! up in the tz database; `VTIMEZONE` definitions are not read, so a non-IANA `TZID` is an
//! error rather than a guess). Local times use the core's DST rule
//! ([`medhub_core::schedule::local_to_instant`], which is also RFC 5545 §3.3.5's). `DURATION`,
//! all-day `VALUE=DATE` events, `RRULE` with `FREQ=DAILY|WEEKLY`, `INTERVAL`, `COUNT`,
//! `UNTIL`, `BYDAY` and `WKST`, `EXDATE`, and `RECURRENCE-ID` exceptions are supported;
//! other recurrence parts and `RDATE` are refused, not ignored, so no shift is silently lost.
//! Cancelled events (`STATUS:CANCELLED`) are skipped. Every refusal names its line.
//!
//! The parser is written here rather than taken from a crate: `icalendar`'s parser and the
//! `rrule` crate bring chrono and chrono-tz (the workspace keeps chrono out of its core types
//! and does time with jiff), `ical` has no recurrence support, and none of them reports line
//! numbers or bounds its input. RFC 5545's content-line grammar is small.

use std::collections::HashSet;

use jiff::civil::{self, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use medhub_core::UserId;
use medhub_core::schedule::{Schedule, Shift, ShiftSource, Zone, local_to_instant};

/// An imported calendar is at most 4 MiB: months of a large department's roster; a bigger
/// upload is refused before it is read.
pub const MAX_ICAL_BYTES: usize = 4 * 1024 * 1024;
/// At most 10,000 `VEVENT`s per calendar.
pub const MAX_EVENTS: usize = 10_000;
/// At most 20,000 shifts from one import, after recurrences are expanded.
pub const MAX_IMPORTED_SHIFTS: usize = 20_000;
/// A recurrence rule is followed for at most 10,000 steps (days or weeks), whatever its
/// `COUNT`, `UNTIL` or the window say; a rule that needs more is refused.
pub const MAX_RRULE_STEPS: usize = 10_000;
/// An unfolded content line is at most 16 KiB.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Components nest at most 8 deep (VCALENDAR › VEVENT › VALARM is 3).
pub const MAX_DEPTH: usize = 8;
/// At most 32 attendees per event.
pub const MAX_ATTENDEES: usize = 32;
/// The import window is at most 400 days, as a schedule query.
pub const MAX_IMPORT_WINDOW: SignedDuration = SignedDuration::from_hours(24 * 400);
/// RFC 5545 §3.1: lines are folded at 75 octets.
const FOLD_OCTETS: usize = 75;

/// Who a person is in an export: the name shown and, if known, their e-mail address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    pub display_name: String,
    pub email: Option<String>,
}

/// Writes `shifts` of `schedule` as an iCalendar stream (CRLF, folded at 75 octets).
/// `person` names each user; `dtstamp` is when the export was made.
pub fn export(schedule: &Schedule, shifts: &[Shift], person: impl Fn(UserId) -> Person, dtstamp: Timestamp) -> String {
    let mut out = String::with_capacity(256 + shifts.len() * 400);
    let target = schedule.target.name();
    line(&mut out, "BEGIN:VCALENDAR");
    line(&mut out, "PRODID:-//medhub//On-call schedule//EN");
    line(&mut out, "VERSION:2.0");
    line(&mut out, "CALSCALE:GREGORIAN");
    line(&mut out, "METHOD:PUBLISH");
    line(&mut out, &format!("X-WR-CALNAME:{}", text(&format!("On call: {target}"))));
    for shift in shifts {
        let who = person(shift.user);
        let layer = match shift.source {
            ShiftSource::Rotation { rotation } | ShiftSource::Override { rotation: Some(rotation), .. } => {
                format!("r{rotation}")
            }
            ShiftSource::Override { id, rotation: None, .. } => format!("o{id}"),
        };
        line(&mut out, "BEGIN:VEVENT");
        line(&mut out, &format!("UID:{}-{layer}-{}@medhub", schedule.id, utc(shift.start)));
        line(&mut out, &format!("DTSTAMP:{}", utc(dtstamp)));
        line(&mut out, &format!("DTSTART:{}", utc(shift.start)));
        line(&mut out, &format!("DTEND:{}", utc(shift.end)));
        line(&mut out, &format!("SUMMARY:{}", text(&format!("On call: {target} ({})", who.display_name))));
        let address = match who.email.as_deref().filter(|e| plausible_email(e)) {
            Some(email) => format!("mailto:{email}"),
            None => format!("urn:uuid:{}", shift.user),
        };
        line(&mut out, &format!("ATTENDEE;CN={};ROLE=REQ-PARTICIPANT:{address}", param(&who.display_name)));
        line(&mut out, &format!("X-MEDHUB-USER:{}", shift.user));
        line(&mut out, "TRANSP:OPAQUE");
        line(&mut out, "END:VEVENT");
    }
    line(&mut out, "END:VCALENDAR");
    out
}

/// How to read a calendar.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The zone of floating times and of all-day dates without `TZID` (usually the
    /// schedule's).
    pub default_zone: TimeZone,
    /// Only shifts overlapping `[from, to)` are returned; recurrences are expanded within it.
    pub from: Timestamp,
    pub to: Timestamp,
}

/// Who an imported event puts on call, for the caller to resolve to a user.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OnCallRef {
    /// `X-MEDHUB-USER`: a medhub user id, as written by [`export`].
    Medhub(String),
    /// `ATTENDEE:mailto:…`: an e-mail address.
    Email(String),
    /// Another `ATTENDEE` URI (e.g. `urn:uuid:…`), as given.
    Uri(String),
}

/// One shift read from a calendar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedShift {
    pub who: OnCallRef,
    /// The attendee's `CN`, if any.
    pub name: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
    pub uid: Option<String>,
    pub summary: Option<String>,
    /// The line of the event's `BEGIN:VEVENT`, for the caller's own messages.
    pub line: usize,
}

/// A refused calendar: what is wrong and on which line (1-based; 0 is the input as a whole).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct IcalError {
    pub line: usize,
    pub kind: IcalErrorKind,
}

/// Why a calendar was refused. Each variant is one cause.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IcalErrorKind {
    #[error("the calendar is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("the import window must be non-empty and at most 400 days")]
    InvalidWindow,
    #[error("not UTF-8")]
    NotUtf8,
    #[error("an unfolded line is longer than {max} bytes")]
    LineTooLong { max: usize },
    #[error("not a content line (NAME;PARAM=VALUE:VALUE)")]
    MalformedLine,
    #[error("a continuation line with nothing to continue")]
    StrayContinuation,
    #[error("the input does not start with BEGIN:VCALENDAR")]
    NotACalendar,
    #[error("BEGIN:{component} has no END")]
    MissingEnd { component: String },
    #[error("END:{found} where END:{expected} was expected")]
    MismatchedEnd { expected: String, found: String },
    #[error("content after END:VCALENDAR")]
    ContentAfterEnd,
    #[error("{component} is not allowed here")]
    MisplacedComponent { component: String },
    #[error("components nest deeper than {max}")]
    TooDeep { max: usize },
    #[error("more than {max} events")]
    TooManyEvents { max: usize },
    #[error("more than {max} shifts")]
    TooManyShifts { max: usize },
    #[error("the event has no DTSTART")]
    MissingStart,
    #[error("{property} appears more than once")]
    DuplicateProperty { property: String },
    #[error("{property} is not a valid date or date-time")]
    BadDateTime { property: String },
    #[error("TZID {tzid:?} is not an IANA time zone name")]
    UnknownTimeZone { tzid: String },
    #[error("DTSTART and {property} must both be dates or both be date-times")]
    MixedValueTypes { property: String },
    #[error("the event ends at or before its start")]
    EndNotAfterStart,
    #[error("DTEND and DURATION are both given")]
    EndAndDuration,
    #[error("DURATION is not a valid positive duration")]
    BadDuration,
    #[error("RRULE part {part:?} is not supported (FREQ=DAILY|WEEKLY, INTERVAL, COUNT, UNTIL, BYDAY, WKST are)")]
    UnsupportedRrule { part: String },
    #[error("RRULE part {part:?} is invalid")]
    BadRrule { part: String },
    #[error("the recurrence needs more than {max} steps")]
    RruleTooLarge { max: usize },
    #[error("{property} is not supported")]
    Unsupported { property: String },
    #[error("the event names nobody on call (no X-MEDHUB-USER or ATTENDEE)")]
    MissingAttendee,
    #[error("more than {max} attendees")]
    TooManyAttendees { max: usize },
}

fn err(line: usize, kind: IcalErrorKind) -> IcalError {
    IcalError { line, kind }
}

/// Reads the shifts of a calendar that overlap the window.
pub fn import(input: &[u8], options: &ImportOptions) -> Result<Vec<ImportedShift>, IcalError> {
    if input.len() > MAX_ICAL_BYTES {
        return Err(err(0, IcalErrorKind::TooLarge { max: MAX_ICAL_BYTES }));
    }
    if options.to <= options.from || options.to.duration_since(options.from) > MAX_IMPORT_WINDOW {
        return Err(err(0, IcalErrorKind::InvalidWindow));
    }
    let lines = unfold(input)?;
    let events = components(&lines)?;
    let mut parsed = Vec::with_capacity(events.len());
    for event in &events {
        if let Some(e) = parse_event(event, options)? {
            parsed.push(e);
        }
    }
    // RECURRENCE-ID events replace one occurrence of the recurring event with the same UID.
    let exceptions: HashSet<(String, Timestamp)> =
        parsed.iter().filter_map(|e| Some((e.uid.clone()?, e.recurrence_id?))).collect();
    let mut out = Vec::new();
    for e in &parsed {
        for (start, end) in occurrences(e, options)? {
            if e.recurrence_id.is_none()
                && e.rrule.is_some()
                && e.uid.as_ref().is_some_and(|u| exceptions.contains(&(u.clone(), start)))
            {
                continue;
            }
            if end <= options.from || start >= options.to {
                continue;
            }
            for (who, name) in &e.who {
                if out.len() >= MAX_IMPORTED_SHIFTS {
                    return Err(err(e.line, IcalErrorKind::TooManyShifts { max: MAX_IMPORTED_SHIFTS }));
                }
                out.push(ImportedShift {
                    who: who.clone(),
                    name: name.clone(),
                    start,
                    end,
                    uid: e.uid.clone(),
                    summary: e.summary.clone(),
                    line: e.line,
                });
            }
        }
    }
    out.sort_by_key(|s| (s.start, s.line));
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Writing

fn line(out: &mut String, content: &str) {
    // Fold: the first line holds 75 octets, each continuation a space and 74; never cut
    // inside a UTF-8 character.
    let mut rest = content;
    let mut limit = FOLD_OCTETS;
    let mut first = true;
    while !rest.is_empty() {
        let mut cut = rest.len().min(limit);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if !first {
            out.push(' ');
        }
        let (head, tail) = rest.split_at(cut);
        out.push_str(head);
        out.push_str("\r\n");
        rest = tail;
        limit = FOLD_OCTETS - 1;
        first = false;
    }
    if content.is_empty() {
        out.push_str("\r\n");
    }
}

/// RFC 5545 TEXT: backslash, semicolon, comma and newline escaped; other control characters
/// (not allowed in TEXT) dropped.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A quoted parameter value: DQUOTE cannot be escaped in one, so it becomes an apostrophe;
/// control characters are dropped.
fn param(s: &str) -> String {
    let inner: String = s.chars().filter(|c| !c.is_control()).map(|c| if c == '"' { '\'' } else { c }).collect();
    format!("\"{inner}\"")
}

/// An address safe to put in a `mailto:` URI without escaping.
fn plausible_email(e: &str) -> bool {
    e.contains('@')
        && e.len() <= 254
        && e.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'<' | b'>' | b'\\' | b',' | b';' | b':'))
}

fn utc(t: Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

// ---------------------------------------------------------------------------------------
// Reading: lines and components

/// A content line after unfolding, with the number of its first physical line.
struct ContentLine {
    line: usize,
    text: String,
}

fn unfold(input: &[u8]) -> Result<Vec<ContentLine>, IcalError> {
    let mut logical: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, raw) in input.split(|b| *b == b'\n').enumerate() {
        let n = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        match raw.first() {
            Some(b' ' | b'\t') => {
                let Some((_, current)) = logical.last_mut() else {
                    return Err(err(n, IcalErrorKind::StrayContinuation));
                };
                current.extend_from_slice(raw.get(1..).unwrap_or_default());
                if current.len() > MAX_LINE_BYTES {
                    return Err(err(n, IcalErrorKind::LineTooLong { max: MAX_LINE_BYTES }));
                }
            }
            // Blank lines are not allowed by the RFC but are common at the end; skip them.
            None => {}
            Some(_) => {
                if raw.len() > MAX_LINE_BYTES {
                    return Err(err(n, IcalErrorKind::LineTooLong { max: MAX_LINE_BYTES }));
                }
                logical.push((n, raw.to_vec()));
            }
        }
    }
    // Folding may have split a multi-byte character across physical lines (RFC 5545 allows
    // it), so UTF-8 is checked only after unfolding.
    logical
        .into_iter()
        .map(|(line, bytes)| {
            String::from_utf8(bytes)
                .map(|text| ContentLine { line, text })
                .map_err(|_| err(line, IcalErrorKind::NotUtf8))
        })
        .collect()
}

/// A property: upper-cased name, parameters (upper-cased names, values unquoted) and value.
struct Property {
    line: usize,
    name: String,
    params: Vec<(String, Vec<String>)>,
    value: String,
}

impl Property {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.first()).map(String::as_str)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

fn parse_property(cl: &ContentLine) -> Result<Property, IcalError> {
    let bad = || err(cl.line, IcalErrorKind::MalformedLine);
    let s = cl.text.as_str();
    let name_end = s.find(|c: char| !is_name_char(c)).ok_or_else(bad)?;
    if name_end == 0 {
        return Err(bad());
    }
    let name = s[..name_end].to_ascii_uppercase();
    let mut rest = &s[name_end..];
    let mut params = Vec::new();
    while let Some(after) = rest.strip_prefix(';') {
        let pname_end = after.find(|c: char| !is_name_char(c)).ok_or_else(bad)?;
        if pname_end == 0 {
            return Err(bad());
        }
        let pname = after[..pname_end].to_ascii_uppercase();
        let mut r = after[pname_end..].strip_prefix('=').ok_or_else(bad)?;
        let mut values = Vec::new();
        loop {
            if let Some(q) = r.strip_prefix('"') {
                let close = q.find('"').ok_or_else(bad)?;
                values.push(q[..close].to_owned());
                r = &q[close + 1..];
            } else {
                let end = r.find([';', ':', ',', '"']).ok_or_else(bad)?;
                values.push(r[..end].to_owned());
                r = &r[end..];
            }
            match r.strip_prefix(',') {
                Some(more) => r = more,
                None => break,
            }
        }
        params.push((pname, values));
        rest = r;
    }
    let value = rest.strip_prefix(':').ok_or_else(bad)?;
    Ok(Property { line: cl.line, name, params, value: value.to_owned() })
}

/// A `VEVENT`: its `BEGIN` line and its own properties (nested components left out).
struct RawEvent {
    line: usize,
    props: Vec<Property>,
}

fn components(lines: &[ContentLine]) -> Result<Vec<RawEvent>, IcalError> {
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut events: Vec<RawEvent> = Vec::new();
    let mut current: Option<RawEvent> = None;
    let mut ended = false;
    let mut last_line = 0;
    for cl in lines {
        last_line = cl.line;
        if ended {
            return Err(err(cl.line, IcalErrorKind::ContentAfterEnd));
        }
        let prop = parse_property(cl)?;
        if stack.is_empty() && !(prop.name == "BEGIN" && prop.value.eq_ignore_ascii_case("VCALENDAR")) {
            return Err(err(cl.line, IcalErrorKind::NotACalendar));
        }
        match prop.name.as_str() {
            "BEGIN" => {
                let component = prop.value.trim().to_ascii_uppercase();
                if component.is_empty() || !component.chars().all(is_name_char) {
                    return Err(err(cl.line, IcalErrorKind::MalformedLine));
                }
                let allowed = match component.as_str() {
                    "VCALENDAR" => stack.is_empty(),
                    "VEVENT" => stack.len() == 1,
                    _ => true,
                };
                if !allowed {
                    return Err(err(cl.line, IcalErrorKind::MisplacedComponent { component }));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(err(cl.line, IcalErrorKind::TooDeep { max: MAX_DEPTH }));
                }
                if component == "VEVENT" {
                    if events.len() >= MAX_EVENTS {
                        return Err(err(cl.line, IcalErrorKind::TooManyEvents { max: MAX_EVENTS }));
                    }
                    current = Some(RawEvent { line: cl.line, props: Vec::new() });
                }
                stack.push((component, cl.line));
            }
            "END" => {
                let found = prop.value.trim().to_ascii_uppercase();
                let Some((expected, _)) = stack.pop() else {
                    return Err(err(cl.line, IcalErrorKind::ContentAfterEnd));
                };
                if found != expected {
                    return Err(err(cl.line, IcalErrorKind::MismatchedEnd { expected, found }));
                }
                if found == "VEVENT"
                    && let Some(e) = current.take()
                {
                    events.push(e);
                }
                ended = stack.is_empty();
            }
            _ => {
                if stack.len() == 2
                    && let Some(e) = current.as_mut()
                {
                    e.props.push(prop);
                }
            }
        }
    }
    if let Some((component, line)) = stack.pop() {
        // Name the innermost unclosed component, at its BEGIN line.
        return Err(err(line, IcalErrorKind::MissingEnd { component }));
    }
    if !ended {
        return Err(err(last_line.max(1), IcalErrorKind::NotACalendar));
    }
    Ok(events)
}

// ---------------------------------------------------------------------------------------
// Reading: events

/// A date or date-time as written: in UTC, or local (floating or `TZID`) with its zone.
#[derive(Clone, Debug)]
enum When {
    Utc(Timestamp),
    Local(civil::DateTime, TimeZone),
    Date(civil::Date, TimeZone),
}

impl When {
    fn instant(&self, line: usize, property: &str) -> Result<Timestamp, IcalError> {
        let placed = match self {
            When::Utc(t) => Ok(*t),
            When::Local(dt, tz) => local_to_instant(tz, *dt),
            When::Date(d, tz) => local_to_instant(tz, d.to_datetime(civil::Time::midnight())),
        };
        placed.map_err(|_| err(line, IcalErrorKind::BadDateTime { property: property.to_owned() }))
    }

    fn is_date(&self) -> bool {
        matches!(self, When::Date(..))
    }

    /// The civil date-time in the value's own frame (UTC for UTC values).
    fn civil(&self) -> civil::DateTime {
        match self {
            When::Utc(t) => TimeZone::UTC.to_datetime(*t),
            When::Local(dt, _) => *dt,
            When::Date(d, _) => d.to_datetime(civil::Time::midnight()),
        }
    }

    /// The same kind of value at another civil date-time (recurrences keep local time).
    fn at(&self, dt: civil::DateTime) -> When {
        match self {
            When::Utc(_) => When::Local(dt, TimeZone::UTC),
            When::Local(_, tz) => When::Local(dt, tz.clone()),
            When::Date(_, tz) => When::Date(dt.date(), tz.clone()),
        }
    }
}

/// How long each occurrence lasts: calendar days (kept in local time) plus exact time.
#[derive(Clone, Copy, Debug)]
struct Length {
    days: i64,
    exact: SignedDuration,
}

#[derive(Clone, Debug)]
struct Rule {
    weekly: bool,
    interval: i64,
    count: Option<usize>,
    until: Option<When>,
    by_day: Option<Vec<Weekday>>,
    week_start: Weekday,
}

struct Event {
    line: usize,
    uid: Option<String>,
    summary: Option<String>,
    who: Vec<(OnCallRef, Option<String>)>,
    start: When,
    length: Length,
    rrule: Option<Rule>,
    exdates: Vec<Timestamp>,
    recurrence_id: Option<Timestamp>,
}

fn parse_event(raw: &RawEvent, options: &ImportOptions) -> Result<Option<Event>, IcalError> {
    let single = |name: &str| -> Result<Option<&Property>, IcalError> {
        let mut found = raw.props.iter().filter(|p| p.name == name);
        let first = found.next();
        if let Some(dup) = found.next() {
            return Err(err(dup.line, IcalErrorKind::DuplicateProperty { property: name.to_owned() }));
        }
        Ok(first)
    };
    if single("STATUS")?.is_some_and(|p| p.value.trim().eq_ignore_ascii_case("CANCELLED")) {
        return Ok(None);
    }
    if let Some(p) = raw.props.iter().find(|p| p.name == "RDATE") {
        return Err(err(p.line, IcalErrorKind::Unsupported { property: "RDATE".into() }));
    }
    let start_prop = single("DTSTART")?.ok_or_else(|| err(raw.line, IcalErrorKind::MissingStart))?;
    let start = when(start_prop, &options.default_zone)?;
    let start_at = start.instant(start_prop.line, "DTSTART")?;
    let length = match (single("DTEND")?, single("DURATION")?) {
        (Some(_), Some(d)) => return Err(err(d.line, IcalErrorKind::EndAndDuration)),
        (Some(end_prop), None) => {
            let end = when(end_prop, &options.default_zone)?;
            if end.is_date() != start.is_date() {
                return Err(err(end_prop.line, IcalErrorKind::MixedValueTypes { property: "DTEND".into() }));
            }
            match (&start, &end) {
                // All-day events recur as whole days.
                (When::Date(a, _), When::Date(b, _)) => Length {
                    days: i64::from(b.since(*a).map(|s| s.get_days()).unwrap_or(0)),
                    exact: SignedDuration::ZERO,
                },
                // RFC 5545 §3.8.5.3: with DTEND, every occurrence has the same exact duration.
                _ => Length { days: 0, exact: end.instant(end_prop.line, "DTEND")?.duration_since(start_at) },
            }
        }
        (None, Some(d)) => duration(d)?,
        (None, None) if start.is_date() => Length { days: 1, exact: SignedDuration::ZERO },
        (None, None) => Length { days: 0, exact: SignedDuration::ZERO },
    };
    let end_at = occurrence_end(&start, length, start_prop.line)?;
    if end_at <= start_at {
        return Err(err(start_prop.line, IcalErrorKind::EndNotAfterStart));
    }
    let rrule = match single("RRULE")? {
        Some(p) => Some(rule(p, &options.default_zone)?),
        None => None,
    };
    let mut exdates = Vec::new();
    for p in raw.props.iter().filter(|p| p.name == "EXDATE") {
        for v in p.value.split(',') {
            let one = Property { line: p.line, name: p.name.clone(), params: p.params.clone(), value: v.to_owned() };
            exdates.push(when(&one, &options.default_zone)?.instant(p.line, "EXDATE")?);
        }
    }
    let recurrence_id = match single("RECURRENCE-ID")? {
        Some(p) => {
            if p.param("RANGE").is_some() {
                return Err(err(p.line, IcalErrorKind::Unsupported { property: "RECURRENCE-ID;RANGE".into() }));
            }
            if rrule.is_some() {
                return Err(err(p.line, IcalErrorKind::Unsupported { property: "RRULE with RECURRENCE-ID".into() }));
            }
            Some(when(p, &options.default_zone)?.instant(p.line, "RECURRENCE-ID")?)
        }
        None => None,
    };
    let mut who = Vec::new();
    if let Some(p) = single("X-MEDHUB-USER")? {
        who.push((OnCallRef::Medhub(unescape(p.value.trim())), None));
    } else {
        for p in raw.props.iter().filter(|p| p.name == "ATTENDEE") {
            if who.len() >= MAX_ATTENDEES {
                return Err(err(p.line, IcalErrorKind::TooManyAttendees { max: MAX_ATTENDEES }));
            }
            let v = p.value.trim();
            let reference = match v.get(..7) {
                Some(scheme) if scheme.eq_ignore_ascii_case("mailto:") => OnCallRef::Email(v[7..].trim().to_owned()),
                _ => OnCallRef::Uri(v.to_owned()),
            };
            who.push((reference, p.param("CN").map(str::to_owned)));
        }
    }
    if who.is_empty() {
        return Err(err(raw.line, IcalErrorKind::MissingAttendee));
    }
    Ok(Some(Event {
        line: raw.line,
        uid: single("UID")?.map(|p| unescape(&p.value)),
        summary: single("SUMMARY")?.map(|p| unescape(&p.value)),
        who,
        start,
        length,
        rrule,
        exdates,
        recurrence_id,
    }))
}

/// Parses a DATE or DATE-TIME property value in its three forms.
fn when(p: &Property, default_zone: &TimeZone) -> Result<When, IcalError> {
    let bad = || err(p.line, IcalErrorKind::BadDateTime { property: p.name.clone() });
    let zone = match p.param("TZID") {
        Some(tzid) => Zone::named(tzid)
            .map(|z| z.time_zone().clone())
            .map_err(|_| err(p.line, IcalErrorKind::UnknownTimeZone { tzid: tzid.chars().take(64).collect() }))?,
        None => default_zone.clone(),
    };
    let v = p.value.trim();
    let is_date = p.param("VALUE").is_some_and(|t| t.eq_ignore_ascii_case("DATE"));
    if is_date || v.len() == 8 {
        return parse_date(v).map(|d| When::Date(d, zone)).ok_or_else(bad);
    }
    let (body, utc) = match v.strip_suffix('Z') {
        Some(b) => (b, true),
        None => (v, false),
    };
    if utc && p.param("TZID").is_some() {
        return Err(bad());
    }
    let dt = parse_date_time(body).ok_or_else(bad)?;
    if utc {
        let t = TimeZone::UTC.to_timestamp(dt).map_err(|_| bad())?;
        Ok(When::Utc(t))
    } else {
        Ok(When::Local(dt, zone))
    }
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_date(s: &str) -> Option<civil::Date> {
    if s.len() != 8 || !s.is_ascii() {
        return None;
    }
    let y = i16::try_from(digits(&s[0..4])?).ok()?;
    let m = i8::try_from(digits(&s[4..6])?).ok()?;
    let d = i8::try_from(digits(&s[6..8])?).ok()?;
    civil::Date::new(y, m, d).ok()
}

fn parse_date_time(s: &str) -> Option<civil::DateTime> {
    if s.len() != 15 || !s.is_ascii() || s.as_bytes().get(8) != Some(&b'T') {
        return None;
    }
    let date = parse_date(&s[0..8])?;
    let h = i8::try_from(digits(&s[9..11])?).ok()?;
    let m = i8::try_from(digits(&s[11..13])?).ok()?;
    let sec = i8::try_from(digits(&s[13..15])?).ok()?;
    civil::Time::new(h, m, sec, 0).ok().map(|t| date.to_datetime(t))
}

/// RFC 5545 §3.3.6 DURATION: `P[n]W` or `P[n]D[T[n]H[n]M[n]S]`; weeks and days are nominal
/// (calendar days in local time), hours, minutes and seconds exact.
fn duration(p: &Property) -> Result<Length, IcalError> {
    let bad = || err(p.line, IcalErrorKind::BadDuration);
    let v = p.value.trim();
    let v = v.strip_prefix('+').unwrap_or(v);
    let body = v.strip_prefix('P').ok_or_else(bad)?;
    let (mut days, mut secs) = (0i64, 0i64);
    let mut in_time = false;
    let mut number = String::new();
    let mut any = false;
    for c in body.chars() {
        match c {
            '0'..='9' => {
                if number.len() >= 9 {
                    return Err(bad());
                }
                number.push(c);
            }
            'T' if !in_time && number.is_empty() => in_time = true,
            unit => {
                let n: i64 = number.parse().map_err(|_| bad())?;
                number.clear();
                any = true;
                match (in_time, unit) {
                    (false, 'W') => days += 7 * n,
                    (false, 'D') => days += n,
                    (true, 'H') => secs += 3600 * n,
                    (true, 'M') => secs += 60 * n,
                    (true, 'S') => secs += n,
                    _ => return Err(bad()),
                }
            }
        }
    }
    if !number.is_empty() || !any || days > 366 || secs > 366 * 86_400 {
        return Err(bad());
    }
    Ok(Length { days, exact: SignedDuration::from_secs(secs) })
}

fn occurrence_end(start: &When, length: Length, line: usize) -> Result<Timestamp, IcalError> {
    let bad = || err(line, IcalErrorKind::BadDateTime { property: "DTEND".into() });
    let shifted = start.civil().checked_add(SignedDuration::from_hours(24 * length.days)).map_err(|_| bad())?;
    start.at(shifted).instant(line, "DTEND")?.checked_add(length.exact).map_err(|_| bad())
}

fn weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "MO" => Weekday::Monday,
        "TU" => Weekday::Tuesday,
        "WE" => Weekday::Wednesday,
        "TH" => Weekday::Thursday,
        "FR" => Weekday::Friday,
        "SA" => Weekday::Saturday,
        "SU" => Weekday::Sunday,
        _ => return None,
    })
}

fn rule(p: &Property, default_zone: &TimeZone) -> Result<Rule, IcalError> {
    let bad = |part: &str| err(p.line, IcalErrorKind::BadRrule { part: part.chars().take(64).collect() });
    let mut seen = HashSet::new();
    let mut freq = None;
    let mut r =
        Rule { weekly: false, interval: 1, count: None, until: None, by_day: None, week_start: Weekday::Monday };
    for part in p.value.trim().split(';').filter(|s| !s.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| bad(part))?;
        let key = key.to_ascii_uppercase();
        if !seen.insert(key.clone()) {
            return Err(bad(part));
        }
        let value = value.to_ascii_uppercase();
        match key.as_str() {
            "FREQ" => match value.as_str() {
                "DAILY" => freq = Some(false),
                "WEEKLY" => freq = Some(true),
                _ => {
                    return Err(err(p.line, IcalErrorKind::UnsupportedRrule { part: part.chars().take(64).collect() }));
                }
            },
            "INTERVAL" => r.interval = digits(&value).filter(|n| (1..=1000).contains(n)).ok_or_else(|| bad(part))?,
            "COUNT" => {
                let n = digits(&value).filter(|n| *n >= 1).ok_or_else(|| bad(part))?;
                let n = usize::try_from(n).map_err(|_| bad(part))?;
                if n > MAX_RRULE_STEPS {
                    return Err(err(p.line, IcalErrorKind::RruleTooLarge { max: MAX_RRULE_STEPS }));
                }
                r.count = Some(n);
            }
            "UNTIL" => {
                let until = Property { line: p.line, name: "UNTIL".into(), params: Vec::new(), value: value.clone() };
                r.until = Some(when(&until, default_zone)?);
            }
            "BYDAY" => {
                let days: Option<Vec<Weekday>> = value.split(',').map(weekday).collect();
                r.by_day = Some(days.filter(|d| !d.is_empty()).ok_or_else(|| bad(part))?);
            }
            "WKST" => r.week_start = weekday(&value).ok_or_else(|| bad(part))?,
            _ => return Err(err(p.line, IcalErrorKind::UnsupportedRrule { part: part.chars().take(64).collect() })),
        }
    }
    if r.count.is_some() && r.until.is_some() {
        return Err(bad("COUNT and UNTIL"));
    }
    r.weekly = freq.ok_or_else(|| bad("FREQ"))?;
    Ok(r)
}

/// The occurrences `(start, end)` of an event, in order: the event itself, or its
/// recurrences up to the window's end, without its `EXDATE`s.
fn occurrences(e: &Event, options: &ImportOptions) -> Result<Vec<(Timestamp, Timestamp)>, IcalError> {
    let first = e.start.instant(e.line, "DTSTART")?;
    let Some(rule) = &e.rrule else {
        return Ok(vec![(first, occurrence_end(&e.start, e.length, e.line)?)]);
    };
    let too_large = || err(e.line, IcalErrorKind::RruleTooLarge { max: MAX_RRULE_STEPS });
    let base = e.start.civil();
    let base_date = base.date();
    let step_days = if rule.weekly { 7 * rule.interval } else { rule.interval };
    // The days of each period (a day, or a week from WKST) that have an occurrence.
    let period_start = if rule.weekly {
        let back = (base_date.weekday().to_monday_zero_offset() - rule.week_start.to_monday_zero_offset() + 7) % 7;
        base_date.checked_sub(SignedDuration::from_hours(24 * i64::from(back))).map_err(|_| too_large())?
    } else {
        base_date
    };
    let wanted = |d: civil::Date| match &rule.by_day {
        Some(days) => days.contains(&d.weekday()),
        None => !rule.weekly || d.weekday() == base_date.weekday(),
    };
    // Without COUNT, nothing before the window matters: skip whole periods up to a few days
    // before it (occurrences last at most 367 days, see `duration`).
    let mut period: i64 = 0;
    if rule.count.is_none() {
        let window_date = TimeZone::UTC.to_datetime(options.from).date();
        let lead = window_date.since(period_start).map(|s| i64::from(s.get_days())).unwrap_or(0) - 370;
        if lead > 0 {
            period = lead / step_days;
        }
    }
    let mut out = Vec::new();
    let mut produced = 0usize;
    let mut seen_first = false;
    for _ in 0..=MAX_RRULE_STEPS {
        let offset = period.checked_mul(step_days).ok_or_else(too_large)?;
        let Ok(day0) = period_start.checked_add(SignedDuration::from_hours(24 * offset)) else {
            return Ok(out);
        };
        let days_in_period = if rule.weekly { 7 } else { 1 };
        for i in 0..days_in_period {
            let Ok(day) = day0.checked_add(SignedDuration::from_hours(24 * i)) else { return Ok(out) };
            if day < base_date || !(wanted(day) || (day == base_date && !seen_first)) {
                continue;
            }
            seen_first = true;
            let at = e.start.at(day.to_datetime(base.time()));
            let start = at.instant(e.line, "DTSTART")?;
            if let Some(until) = &rule.until {
                let past = match until {
                    When::Utc(t) => start > *t,
                    When::Local(dt, _) => at.civil() > *dt,
                    When::Date(d, _) => day > *d,
                };
                if past {
                    return Ok(out);
                }
            }
            if rule.count.is_some_and(|c| produced >= c) || start >= options.to {
                return Ok(out);
            }
            produced += 1;
            if !e.exdates.contains(&start) {
                out.push((start, occurrence_end(&at, e.length, e.line)?));
                if out.len() > MAX_IMPORTED_SHIFTS {
                    return Err(err(e.line, IcalErrorKind::TooManyShifts { max: MAX_IMPORTED_SHIFTS }));
                }
            }
        }
        period += 1;
    }
    Err(too_large())
}

/// Undoes TEXT escaping; an unknown escape keeps the escaped character.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}
