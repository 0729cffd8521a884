//! iCalendar export and import of on-call shifts: the text written (CRLF, folding, escaping),
//! export → import round trips, a realistic roster export from another tool, DST, recurrence,
//! every refusal with its line, and a seeded fuzz test that must never panic.

use jiff::Timestamp;
use jiff::civil::date;
use jiff::tz::TimeZone;
use medhub_core::schedule::{
    Override, Restriction, Rotation, RotationKind, Schedule, ShiftLength, Target, Weekdays, Zone, shifts_between,
};
use medhub_core::{OrgId, OverrideId, ScheduleId, UserId};
use medhub_wire::ical::{
    IcalError, IcalErrorKind, ImportOptions, ImportedShift, MAX_EVENTS, MAX_ICAL_BYTES, MAX_RRULE_STEPS, OnCallRef,
    Person, export, import,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap_or_else(|e| panic!("bad timestamp {s}: {e}"))
}

fn user(n: u128) -> UserId {
    UserId::from_uuid(Uuid::from_u128(n))
}

fn zone(name: &str) -> TimeZone {
    Zone::named(name).map(|z| z.time_zone().clone()).unwrap_or_else(|e| panic!("{e}"))
}

fn options(zone_name: &str, from: &str, to: &str) -> ImportOptions {
    ImportOptions { default_zone: zone(zone_name), from: ts(from), to: ts(to) }
}

fn people(u: UserId) -> Person {
    match u.as_uuid().as_u128() {
        0xA => Person {
            display_name: "Dr. Ana Ferreira, MD; \"Cardio\"\\Nights".into(),
            email: Some("ana@hospital.example".into()),
        },
        0xB => Person {
            display_name: "Dr. Jürgen Müller-Lüdenscheidt von und zu Großwürdenhausen-Überbrückungsdienst".into(),
            email: None,
        },
        _ => Person { display_name: "Nurse 測試 🏥".into(), email: Some("not an address".into()) },
    }
}

fn cardiology() -> Schedule {
    let mut night = Rotation {
        participants: vec![user(0xC), user(0xB)],
        start: date(2026, 3, 1).at(20, 0, 0, 0),
        kind: RotationKind::Daily,
        restriction: None,
    };
    night.restriction = Some(Restriction {
        days: Weekdays::ALL,
        from: jiff::civil::time(20, 0, 0, 0),
        to: jiff::civil::time(8, 0, 0, 0),
    });
    Schedule {
        id: ScheduleId::from_uuid(Uuid::from_u128(0x5c4e_d01e)),
        org: OrgId::from_uuid(Uuid::from_u128(1)),
        name: "Cardiology".into(),
        target: Target::Team("cardiology on-call".into()),
        zone: Zone::named("Europe/Berlin").unwrap_or_else(|e| panic!("{e}")),
        rotations: vec![
            Rotation {
                participants: vec![user(0xA), user(0xB)],
                start: date(2026, 3, 2).at(8, 0, 0, 0),
                kind: RotationKind::Custom(ShiftLength::Hours(12)),
                restriction: None,
            },
            night,
        ],
        overrides: vec![Override {
            id: OverrideId::from_uuid(Uuid::from_u128(0x0e)),
            user: user(0xA),
            start: ts("2026-03-28T10:00:00Z"),
            end: ts("2026-03-28T12:00:00Z"),
            replaces: None,
        }],
    }
}

fn physical_lines(text: &str) -> Vec<&str> {
    let body = text.strip_suffix("\r\n").unwrap_or_else(|| panic!("does not end with CRLF"));
    body.split("\r\n").collect()
}

fn unfold(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in physical_lines(text) {
        match l.strip_prefix(' ') {
            Some(rest) => out.last_mut().unwrap_or_else(|| panic!("fold at start")).push_str(rest),
            None => out.push(l.to_owned()),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Export

#[test]
fn export_writes_a_publishable_calendar_with_crlf_folding_and_escaping() {
    let s = cardiology();
    let shifts = shifts_between(&s, ts("2026-03-28T00:00:00Z"), ts("2026-03-30T00:00:00Z")).unwrap_or_default();
    assert!(shifts.len() >= 6, "{shifts:?}");
    let text = export(&s, &shifts, people, ts("2026-03-01T09:30:00Z"));
    assert!(!text.replace("\r\n", "").contains('\n') && !text.replace("\r\n", "").contains('\r'), "bare LF or CR");
    for l in physical_lines(&text) {
        assert!(l.len() <= 75, "line longer than 75 octets: {l:?}");
    }
    let lines = unfold(&text);
    assert_eq!(
        &lines[..6],
        [
            "BEGIN:VCALENDAR",
            "PRODID:-//medhub//On-call schedule//EN",
            "VERSION:2.0",
            "CALSCALE:GREGORIAN",
            "METHOD:PUBLISH",
            "X-WR-CALNAME:On call: cardiology on-call"
        ]
    );
    assert_eq!(lines.last().map(String::as_str), Some("END:VCALENDAR"));
    assert_eq!(lines.iter().filter(|l| *l == "BEGIN:VEVENT").count(), shifts.len());
    assert_eq!(lines.iter().filter(|l| *l == "END:VEVENT").count(), shifts.len());
    assert_eq!(lines.iter().filter(|l| *l == "DTSTAMP:20260301T093000Z").count(), shifts.len());
    // The spring-forward night of layer 1: 28 March 20:00 CET to 29 March 08:00 CEST.
    let first_night = shifts.iter().position(|sh| sh.start == ts("2026-03-28T19:00:00Z"));
    assert!(first_night.is_some(), "{shifts:?}");
    assert!(lines.contains(&"DTSTART:20260328T190000Z".to_owned()));
    assert!(lines.contains(&"DTEND:20260329T060000Z".to_owned()));
    assert!(lines.contains(&format!("UID:{}-r1-20260328T190000Z@medhub", s.id)));
    assert!(lines.contains(&format!("UID:{}-o{}-20260328T100000Z@medhub", s.id, s.overrides[0].id)));
    // TEXT escaping of \ ; , and the quoted CN.
    assert!(
        lines.contains(
            &"SUMMARY:On call: cardiology on-call (Dr. Ana Ferreira\\, MD\\; \"Cardio\"\\\\Nights)".to_owned()
        )
    );
    assert!(
        lines.contains(
            &"ATTENDEE;CN=\"Dr. Ana Ferreira, MD; 'Cardio'\\Nights\";ROLE=REQ-PARTICIPANT:mailto:ana@hospital.example"
                .to_owned()
        ),
        "{lines:#?}"
    );
    // No e-mail, or one unsafe in a URI: the user id as urn:uuid.
    assert!(lines.iter().any(|l| l.ends_with(&format!(":urn:uuid:{}", user(0xB)))));
    assert!(lines.iter().any(|l| l.ends_with(&format!(":urn:uuid:{}", user(0xC)))));
    assert!(!text.contains("not an address"));
    assert_eq!(lines.iter().filter(|l| l.starts_with("X-MEDHUB-USER:")).count(), shifts.len());
}

#[test]
fn folding_never_splits_a_character_and_unfolds_to_the_original() {
    let mut s = cardiology();
    s.target = Target::Role("Station 4 West — Pflegeleitung Nachtdienst 🌙 Überwachung ".repeat(3).trim().to_owned());
    let shifts = shifts_between(&s, ts("2026-03-28T00:00:00Z"), ts("2026-03-28T01:00:00Z")).unwrap_or_default();
    let text = export(&s, &shifts, people, ts("2026-03-01T00:00:00Z"));
    let mut folded = 0;
    for l in physical_lines(&text) {
        assert!(l.len() <= 75);
        // Every physical line is valid UTF-8 on its own: `text` is a String split at CRLF.
        if l.starts_with(' ') {
            folded += 1;
        }
    }
    assert!(folded > 5, "expected long lines to be folded");
    let summaries: Vec<String> = unfold(&text).into_iter().filter(|l| l.starts_with("SUMMARY:")).collect();
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    let name = s.target.name();
    assert!(summaries.contains(&format!("SUMMARY:On call: {name} (Nurse 測試 🏥)")), "{summaries:?}");
    let long = "Dr. Jürgen Müller-Lüdenscheidt von und zu Großwürdenhausen-Überbrückungsdienst";
    assert!(summaries.contains(&format!("SUMMARY:On call: {name} ({long})")), "{summaries:?}");
}

#[test]
fn export_then_import_gives_the_same_shifts() {
    let s = cardiology();
    let (from, to) = (ts("2026-03-20T00:00:00Z"), ts("2026-04-05T00:00:00Z"));
    let shifts = shifts_between(&s, from, to).unwrap_or_default();
    let text = export(&s, &shifts, people, ts("2026-03-01T00:00:00Z"));
    let back = import(text.as_bytes(), &ImportOptions { default_zone: TimeZone::UTC, from, to })
        .unwrap_or_else(|e| panic!("{e}"));
    let mut want: Vec<(UserId, Timestamp, Timestamp)> = shifts.iter().map(|s| (s.user, s.start, s.end)).collect();
    let mut got: Vec<(UserId, Timestamp, Timestamp)> = back
        .iter()
        .map(|i| match &i.who {
            OnCallRef::Medhub(id) => (id.parse().unwrap_or_else(|e| panic!("{id}: {e}")), i.start, i.end),
            other => panic!("expected X-MEDHUB-USER, got {other:?}"),
        })
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(back[0].summary.as_deref().map(|s| s.starts_with("On call: cardiology on-call (")), Some(true));
    assert!(back.iter().any(
        |i| i.summary.as_deref() == Some("On call: cardiology on-call (Dr. Ana Ferreira, MD; \"Cardio\"\\Nights)")
    ));
}

// ---------------------------------------------------------------------------------------
// Import of another tool's roster

#[test]
fn imports_a_rostering_tools_calendar_with_vtimezone_rrule_exdate_exception_and_folds() {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/roster-kardiologie.ics"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(std::str::from_utf8(&bytes).is_err(), "the fixture folds inside a UTF-8 character on purpose");
    let got = import(&bytes, &options("Europe/Berlin", "2026-03-20T00:00:00Z", "2026-04-20T00:00:00Z"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mueller = OnCallRef::Email("j.mueller@klinikum.example".into());
    let schmidt = OnCallRef::Email("l.schmidt@klinikum.example".into());
    let yilmaz = OnCallRef::Email("a.yilmaz@klinikum.example".into());
    let table: Vec<(OnCallRef, Timestamp, Timestamp)> = got.iter().map(|s| (s.who.clone(), s.start, s.end)).collect();
    let row = |w: &OnCallRef, a: &str, b: &str| (w.clone(), ts(a), ts(b));
    assert_eq!(
        table,
        vec![
            // Nights Monday to Thursday, 20:00-08:00 Berlin: CET (UTC+1) until 29 March...
            row(&mueller, "2026-03-23T19:00:00Z", "2026-03-24T07:00:00Z"),
            row(&mueller, "2026-03-24T19:00:00Z", "2026-03-25T07:00:00Z"),
            row(&mueller, "2026-03-25T19:00:00Z", "2026-03-26T07:00:00Z"),
            row(&mueller, "2026-03-26T19:00:00Z", "2026-03-27T07:00:00Z"),
            // The all-day weekend over the spring-forward night: 47 hours.
            row(&schmidt, "2026-03-27T23:00:00Z", "2026-03-29T22:00:00Z"),
            // ...then CEST (UTC+2), local times unchanged.
            row(&mueller, "2026-03-30T18:00:00Z", "2026-03-31T06:00:00Z"),
            row(&mueller, "2026-03-31T18:00:00Z", "2026-04-01T06:00:00Z"),
            // 1 April is an EXDATE.
            row(&mueller, "2026-04-02T18:00:00Z", "2026-04-03T06:00:00Z"),
            row(&mueller, "2026-04-06T18:00:00Z", "2026-04-07T06:00:00Z"),
            // 7 April: the RECURRENCE-ID exception replaces Müller with Yılmaz.
            row(&yilmaz, "2026-04-07T18:00:00Z", "2026-04-08T06:00:00Z"),
            row(&mueller, "2026-04-08T18:00:00Z", "2026-04-09T06:00:00Z"),
            // UNTIL=20260409T220000Z includes 9 April 20:00 CEST (18:00Z).
            row(&mueller, "2026-04-09T18:00:00Z", "2026-04-10T06:00:00Z"),
            // Floating 08:00 read in the default zone, DURATION:PT24H.
            row(&schmidt, "2026-04-11T06:00:00Z", "2026-04-12T06:00:00Z"),
            // Two attendees: two shifts.
            row(&mueller, "2026-04-12T06:00:00Z", "2026-04-13T06:00:00Z"),
            row(&schmidt, "2026-04-12T06:00:00Z", "2026-04-13T06:00:00Z"),
            // The cancelled event is not imported.
        ]
    );
    let first = &got[0];
    assert_eq!(first.name.as_deref(), Some("Dr. Jürgen Müller"), "CN unfolded across the fold");
    assert_eq!(first.summary.as_deref(), Some("Rufdienst Nacht – Kardiologie, Station 4 West"));
    assert_eq!(first.uid.as_deref(), Some("night-2026-mueller@roster.example"));
    let text = String::from_utf8_lossy(&bytes);
    let begin_line = text.split("\r\n").position(|l| l == "BEGIN:VEVENT").map(|i| i + 1);
    assert_eq!(Some(first.line), begin_line);
    // A narrower window expands only what it needs.
    let april = import(&bytes, &options("Europe/Berlin", "2026-04-06T00:00:00Z", "2026-04-07T00:00:00Z"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(april.iter().map(|s| s.start).collect::<Vec<_>>(), vec![ts("2026-04-06T18:00:00Z")]);
}

// ---------------------------------------------------------------------------------------
// Dates, times and recurrence

fn cal(body: &str) -> Vec<u8> {
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n{}END:VCALENDAR\r\n", body.replace('\n', "\r\n"))
        .into_bytes()
}

fn event(props: &str) -> String {
    format!("BEGIN:VEVENT\nUID:t@test\n{props}\nATTENDEE:mailto:x@test\nEND:VEVENT\n")
}

fn starts_ends(got: &[ImportedShift]) -> Vec<(Timestamp, Timestamp)> {
    got.iter().map(|s| (s.start, s.end)).collect()
}

fn run(body: &str, zone_name: &str, from: &str, to: &str) -> Result<Vec<ImportedShift>, IcalError> {
    import(&cal(body), &options(zone_name, from, to))
}

fn ok(body: &str, zone_name: &str, from: &str, to: &str) -> Vec<(Timestamp, Timestamp)> {
    starts_ends(&run(body, zone_name, from, to).unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn three_forms_of_date_time_and_the_dst_rule() {
    let from = "2026-03-01T00:00:00Z";
    let to = "2026-04-01T00:00:00Z";
    // UTC.
    assert_eq!(
        ok(&event("DTSTART:20260308T060000Z\nDTEND:20260308T180000Z"), "Europe/Berlin", from, to),
        vec![(ts("2026-03-08T06:00:00Z"), ts("2026-03-08T18:00:00Z"))]
    );
    // TZID, across New York's spring-forward night: 7 March 20:00 EST to 8 March 08:00 EDT.
    assert_eq!(
        ok(
            &event("DTSTART;TZID=America/New_York:20260307T200000\nDTEND;TZID=America/New_York:20260308T080000"),
            "UTC",
            from,
            to
        ),
        vec![(ts("2026-03-08T01:00:00Z"), ts("2026-03-08T12:00:00Z"))]
    );
    // Floating, read in the default zone; 02:30 does not exist that night and reads as 03:30 EDT.
    assert_eq!(
        ok(&event("DTSTART:20260308T023000\nDURATION:PT1H"), "America/New_York", from, to),
        vec![(ts("2026-03-08T07:30:00Z"), ts("2026-03-08T08:30:00Z"))]
    );
    // A TZID in quotes, and lower-case property and parameter names.
    assert_eq!(
        ok(&event("dtstart;tzid=\"Europe/Berlin\":20260329T080000\nduration:PT12H"), "UTC", from, to),
        vec![(ts("2026-03-29T06:00:00Z"), ts("2026-03-29T18:00:00Z"))]
    );
}

#[test]
fn durations_are_nominal_in_days_and_exact_in_hours() {
    let from = "2026-03-01T00:00:00Z";
    let to = "2026-04-01T00:00:00Z";
    // P1D from 7 March 08:00 EST is 8 March 08:00 EDT: 23 hours.
    assert_eq!(
        ok(&event("DTSTART;TZID=America/New_York:20260307T080000\nDURATION:P1D"), "UTC", from, to),
        vec![(ts("2026-03-07T13:00:00Z"), ts("2026-03-08T12:00:00Z"))]
    );
    // PT24H is exactly 24 hours: 09:00 EDT.
    assert_eq!(
        ok(&event("DTSTART;TZID=America/New_York:20260307T080000\nDURATION:PT24H"), "UTC", from, to),
        vec![(ts("2026-03-07T13:00:00Z"), ts("2026-03-08T13:00:00Z"))]
    );
    assert_eq!(
        ok(&event("DTSTART:20260310T080000Z\nDURATION:P1W2DT3H4M5S"), "UTC", from, to),
        vec![(ts("2026-03-10T08:00:00Z"), ts("2026-03-19T11:04:05Z"))]
    );
    // All-day event without DTEND: one day (23 hours on spring-forward day in Berlin).
    assert_eq!(
        ok(&event("DTSTART;VALUE=DATE:20260329"), "Europe/Berlin", from, to),
        vec![(ts("2026-03-28T23:00:00Z"), ts("2026-03-29T22:00:00Z"))]
    );
}

#[test]
fn weekly_rule_keeps_local_time_across_dst_and_dtend_gives_the_exact_duration() {
    let from = "2026-03-01T00:00:00Z";
    let to = "2026-04-01T00:00:00Z";
    // Sundays 08:00 New York: 13:00Z in EST, 12:00Z in EDT.
    let weekly = ok(
        &event("DTSTART;TZID=America/New_York:20260301T080000\nDURATION:PT12H\nRRULE:FREQ=WEEKLY;COUNT=3"),
        "UTC",
        from,
        to,
    );
    assert_eq!(
        weekly,
        vec![
            (ts("2026-03-01T13:00:00Z"), ts("2026-03-02T01:00:00Z")),
            (ts("2026-03-08T12:00:00Z"), ts("2026-03-09T00:00:00Z")),
            (ts("2026-03-15T12:00:00Z"), ts("2026-03-16T00:00:00Z")),
        ]
    );
    // RFC 5545 §3.8.5.3: with DTEND, every occurrence lasts the same *exact* duration as the
    // first. The first (7 to 8 March) is 23 hours, so the next one ends at 07:00 local.
    let exact = ok(
        &event(
            "DTSTART;TZID=America/New_York:20260307T080000\nDTEND;TZID=America/New_York:20260308T080000\nRRULE:FREQ=WEEKLY;COUNT=2",
        ),
        "UTC",
        from,
        to,
    );
    assert_eq!(
        exact,
        vec![
            (ts("2026-03-07T13:00:00Z"), ts("2026-03-08T12:00:00Z")),
            (ts("2026-03-14T12:00:00Z"), ts("2026-03-15T11:00:00Z")),
        ]
    );
    // With DURATION:P1D each occurrence is one calendar day instead.
    let nominal = ok(
        &event("DTSTART;TZID=America/New_York:20260307T080000\nDURATION:P1D\nRRULE:FREQ=WEEKLY;COUNT=2"),
        "UTC",
        from,
        to,
    );
    assert_eq!(nominal[1], (ts("2026-03-14T12:00:00Z"), ts("2026-03-15T12:00:00Z")));
}

#[test]
fn rfc_5545_examples_of_wkst_interval_count_and_byday() {
    let window = ("1997-08-01T00:00:00Z", "1997-10-01T00:00:00Z");
    let dates = |rule: &str| -> Vec<String> {
        let body = event(&format!("DTSTART;TZID=America/New_York:19970805T090000\nDURATION:PT1H\nRRULE:{rule}"));
        let zone_ny = zone("America/New_York");
        ok(&body, "UTC", window.0, window.1)
            .into_iter()
            .map(|(s, _)| zone_ny.to_datetime(s).strftime("%Y-%m-%d %H:%M").to_string())
            .collect()
    };
    // RFC 5545 §3.3.10: "an example where the days generated makes a difference because of WKST".
    assert_eq!(
        dates("FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=MO"),
        ["1997-08-05 09:00", "1997-08-10 09:00", "1997-08-19 09:00", "1997-08-24 09:00"]
    );
    assert_eq!(
        dates("FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=SU"),
        ["1997-08-05 09:00", "1997-08-17 09:00", "1997-08-19 09:00", "1997-08-31 09:00"]
    );
    assert_eq!(
        dates("FREQ=DAILY;INTERVAL=2;COUNT=5"),
        ["1997-08-05 09:00", "1997-08-07 09:00", "1997-08-09 09:00", "1997-08-11 09:00", "1997-08-13 09:00"]
    );
    // DAILY with BYDAY: weekdays only (8 August 1997 was a Friday).
    assert_eq!(
        dates("FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR;UNTIL=19970812T235959Z"),
        [
            "1997-08-05 09:00",
            "1997-08-06 09:00",
            "1997-08-07 09:00",
            "1997-08-08 09:00",
            "1997-08-11 09:00",
            "1997-08-12 09:00"
        ]
    );
    // UNTIL as a date is inclusive.
    assert_eq!(dates("FREQ=WEEKLY;UNTIL=19970819").len(), 3);
}

#[test]
fn an_endless_rule_from_years_ago_is_expanded_only_in_the_window() {
    let body = event("DTSTART;TZID=Europe/Berlin:20100104T080000\nDURATION:PT24H\nRRULE:FREQ=DAILY");
    let got = ok(&body, "UTC", "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z");
    assert_eq!(
        got,
        vec![
            (ts("2026-03-28T07:00:00Z"), ts("2026-03-29T07:00:00Z")),
            (ts("2026-03-29T06:00:00Z"), ts("2026-03-30T06:00:00Z")),
            (ts("2026-03-30T06:00:00Z"), ts("2026-03-31T06:00:00Z")),
        ]
    );
    let weekly =
        event("DTSTART;TZID=Europe/Berlin:19800107T080000\nDURATION:PT1H\nRRULE:FREQ=WEEKLY;INTERVAL=3;BYDAY=MO,FR");
    assert!(!ok(&weekly, "UTC", "2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z").is_empty());
}

// ---------------------------------------------------------------------------------------
// Refusals, each with its line

fn refused(body: &[u8], zone_name: &str) -> IcalError {
    match import(body, &options(zone_name, "2026-01-01T00:00:00Z", "2026-12-01T00:00:00Z")) {
        Err(e) => e,
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

#[test]
fn every_refusal_names_its_cause_and_line() {
    use IcalErrorKind as K;
    let e = |line: usize, kind: K| IcalError { line, kind };
    let good = "DTSTART:20260308T060000Z\nDTEND:20260308T180000Z";
    // The event's lines: 4 BEGIN:VEVENT, 5 UID, 6 and on the given properties.
    let unclosed = without_tail(cal("BEGIN:VEVENT\nUID:x\n"), "END:VCALENDAR\r\n");
    assert_eq!(refused(&unclosed, "UTC"), e(4, K::MissingEnd { component: "VEVENT".into() }));
    assert_eq!(
        refused(&cal("BEGIN:VEVENT\nUID:x\n"), "UTC"),
        e(6, K::MismatchedEnd { expected: "VEVENT".into(), found: "VCALENDAR".into() })
    );
    assert_eq!(
        refused(&cal("BEGIN:VEVENT\nUID:x\nEND:VTODO\n"), "UTC"),
        e(6, K::MismatchedEnd { expected: "VEVENT".into(), found: "VTODO".into() })
    );
    assert_eq!(
        refused(&cal(&event("DTSTART:20260230T060000Z\nDURATION:PT1H")), "UTC"),
        e(6, K::BadDateTime { property: "DTSTART".into() })
    );
    assert_eq!(
        refused(&cal(&event("DTSTART:2026030T060000Z\nDURATION:PT1H")), "UTC"),
        e(6, K::BadDateTime { property: "DTSTART".into() })
    );
    assert_eq!(
        refused(&cal(&event("DTSTART;TZID=W. Europe Standard Time:20260308T060000\nDURATION:PT1H")), "UTC"),
        e(6, K::UnknownTimeZone { tzid: "W. Europe Standard Time".into() })
    );
    assert_eq!(
        refused(&cal(&event("DTSTART:20260308T060000Z\nDURATION:PT1H\nRRULE:FREQ=DAILY;COUNT=100000")), "UTC"),
        e(8, K::RruleTooLarge { max: MAX_RRULE_STEPS })
    );
    // Every day of the week filtered out by a weekly BYDAY that never matches after 1 year:
    // the step bound stops it.
    assert_eq!(
        refused(
            &cal(&event("DTSTART:20260105T060000Z\nDURATION:PT1H\nRRULE:FREQ=DAILY;INTERVAL=7;BYDAY=TU;COUNT=2")),
            "UTC"
        ),
        e(4, K::RruleTooLarge { max: MAX_RRULE_STEPS })
    );
    assert_eq!(
        refused(&cal(&event("DTSTART:20260308T060000Z\nDURATION:PT1H\nRRULE:FREQ=MONTHLY")), "UTC"),
        e(8, K::UnsupportedRrule { part: "FREQ=MONTHLY".into() })
    );
    assert_eq!(
        refused(&cal(&event("DTSTART:20260308T060000Z\nDURATION:PT1H\nRRULE:FREQ=WEEKLY;BYDAY=1MO")), "UTC"),
        e(8, K::BadRrule { part: "BYDAY=1MO".into() })
    );
    assert_eq!(
        refused(&cal(&event("DTSTART:20260308T060000Z\nDURATION:PT1H\nRRULE:FREQ=DAILY;BYHOUR=8")), "UTC"),
        e(8, K::UnsupportedRrule { part: "BYHOUR=8".into() })
    );
    assert_eq!(
        refused(&cal(&event("DTSTART:20260308T060000Z\nDURATION:PT1H\nRDATE:20260309T060000Z")), "UTC"),
        e(8, K::Unsupported { property: "RDATE".into() })
    );
    assert_eq!(
        refused(&cal(&event("DTSTART:20260308T060000Z\nDTEND:20260308T050000Z")), "UTC"),
        e(6, K::EndNotAfterStart)
    );
    assert_eq!(refused(&cal(&event("DTSTART:20260308T060000Z")), "UTC"), e(6, K::EndNotAfterStart));
    assert_eq!(
        refused(&cal(&event("DTSTART:20260308T060000Z\nDTEND:20260308T070000Z\nDURATION:PT1H")), "UTC"),
        e(8, K::EndAndDuration)
    );
    assert_eq!(
        refused(&cal(&event("DTSTART;VALUE=DATE:20260308\nDTEND:20260309T070000Z")), "UTC"),
        e(7, K::MixedValueTypes { property: "DTEND".into() })
    );
    assert_eq!(refused(&cal(&event("DTSTART:20260308T060000Z\nDURATION:-PT1H")), "UTC"), e(7, K::BadDuration));
    assert_eq!(refused(&cal(&event("DTSTART:20260308T060000Z\nDURATION:PT")), "UTC"), e(7, K::BadDuration));
    assert_eq!(
        refused(&cal(&event("DTSTART:20260308T060000Z\nDTSTART:20260309T060000Z\nDURATION:PT1H")), "UTC"),
        e(7, K::DuplicateProperty { property: "DTSTART".into() })
    );
    assert_eq!(
        refused(&cal("BEGIN:VEVENT\nUID:x\nDURATION:PT1H\nATTENDEE:mailto:a@b\nEND:VEVENT\n"), "UTC"),
        e(4, K::MissingStart)
    );
    assert_eq!(
        refused(
            &cal("BEGIN:VEVENT\nUID:x\nDTSTART:20260308T060000Z\nDURATION:PT1H\nORGANIZER:mailto:a@b\nEND:VEVENT\n"),
            "UTC"
        ),
        e(4, K::MissingAttendee)
    );
    assert_eq!(refused(b"BEGIN:VEVENT\r\nEND:VEVENT\r\n", "UTC"), e(1, K::NotACalendar));
    assert_eq!(refused(b"", "UTC"), e(1, K::NotACalendar));
    assert_eq!(refused(b" folded\r\n", "UTC"), e(1, K::StrayContinuation));
    assert_eq!(refused(&[cal(""), b"X-AFTER:1\r\n".to_vec()].concat(), "UTC"), e(5, K::ContentAfterEnd));
    assert_eq!(
        refused(&cal("BEGIN:VCALENDAR\nEND:VCALENDAR\n"), "UTC"),
        e(4, K::MisplacedComponent { component: "VCALENDAR".into() })
    );
    assert_eq!(refused(&cal("NO COLON HERE\n"), "UTC"), e(4, K::MalformedLine));
    assert_eq!(refused(&cal("X-P;PARAM=\"unterminated:value\n"), "UTC"), e(4, K::MalformedLine));
    assert_eq!(
        refused(&cal("X-P:\u{FFFD}\n").iter().map(|b| if *b == 0xEF { 0xFF } else { *b }).collect::<Vec<_>>(), "UTC"),
        e(4, K::NotUtf8)
    );
    let nested = "BEGIN:X-A\n".repeat(10);
    assert_eq!(refused(&cal(&nested), "UTC"), e(11, K::TooDeep { max: 8 }));
    // Size bounds.
    let big = vec![b'X'; MAX_ICAL_BYTES + 1];
    assert_eq!(refused(&big, "UTC"), e(0, K::TooLarge { max: MAX_ICAL_BYTES }));
    let many = event(good).repeat(MAX_EVENTS + 1);
    assert_eq!(refused(&cal(&many), "UTC"), e(4 + 6 * MAX_EVENTS, K::TooManyEvents { max: MAX_EVENTS }));
    assert_eq!(
        import(&cal(&event(good)), &options("UTC", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z")),
        Err(e(0, K::InvalidWindow))
    );
    assert_eq!(
        import(&cal(&event(good)), &options("UTC", "2026-01-01T00:00:00Z", "2027-03-01T00:00:00Z")),
        Err(e(0, K::InvalidWindow))
    );
    // The error's text names the line.
    assert_eq!(e(6, K::EndNotAfterStart).to_string(), "line 6: the event ends at or before its start");
}

/// `bytes` without `tail` at its end (to make a calendar without its last END).
fn without_tail(mut bytes: Vec<u8>, tail: &str) -> Vec<u8> {
    assert!(bytes.ends_with(tail.as_bytes()));
    bytes.truncate(bytes.len() - tail.len());
    bytes
}

#[test]
fn missing_end_of_the_calendar_names_its_begin_line() {
    let text = without_tail(cal(""), "END:VCALENDAR\r\n");
    assert_eq!(
        refused(&text, "UTC"),
        IcalError { line: 1, kind: IcalErrorKind::MissingEnd { component: "VCALENDAR".into() } }
    );
}

// ---------------------------------------------------------------------------------------
// Fuzz

#[test]
fn mutated_calendars_never_panic() {
    let seed: u64 = std::env::var("MEDHUB_ICAL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x1ca1_f022);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let fixture = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/roster-kardiologie.ics"))
        .unwrap_or_else(|e| panic!("{e}"));
    let s = cardiology();
    let shifts = shifts_between(&s, ts("2026-03-28T00:00:00Z"), ts("2026-03-31T00:00:00Z")).unwrap_or_default();
    let exported = export(&s, &shifts, people, ts("2026-03-01T00:00:00Z")).into_bytes();
    let tokens: [&[u8]; 16] = [
        b"\r\n",
        b"\r\n ",
        b":",
        b";",
        b"=",
        b"\"",
        b",",
        b"BEGIN:VEVENT\r\n",
        b"END:VEVENT\r\n",
        b"RRULE:FREQ=DAILY;COUNT=9999\r\n",
        b"RRULE:FREQ=WEEKLY;INTERVAL=1000;BYDAY=MO,SU\r\n",
        b"DTSTART;VALUE=DATE:99991231\r\n",
        b"DURATION:P999999999W\r\n",
        b"EXDATE:20260329T000000Z,\r\n",
        b"\xc3",
        b"TZID=",
    ];
    let opts = options("Europe/Berlin", "2026-03-01T00:00:00Z", "2026-05-01T00:00:00Z");
    let mut outcomes = [0usize; 2];
    for case in 0..3000 {
        let mut bytes = if case % 2 == 0 { fixture.clone() } else { exported.clone() };
        for _ in 0..rng.random_range(1..6) {
            let len = bytes.len();
            let at = rng.random_range(0..=len);
            match rng.random_range(0..6) {
                0 if len > 0 => {
                    let i = rng.random_range(0..len);
                    bytes[i] = rng.random();
                }
                1 => {
                    let end = (at + rng.random_range(0..40)).min(len);
                    bytes.drain(at..end);
                }
                2 => {
                    let t = tokens[rng.random_range(0..tokens.len())];
                    bytes.splice(at..at, t.iter().copied());
                }
                3 => bytes.truncate(at),
                4 => {
                    // Duplicate a slice somewhere else.
                    let end = (at + rng.random_range(0..200)).min(len);
                    let chunk = bytes[at..end].to_vec();
                    let to = rng.random_range(0..=bytes.len());
                    bytes.splice(to..to, chunk);
                }
                _ => {
                    let i = rng.random_range(0..=len);
                    bytes.insert(i, b"0123456789TZ-+PWDHMS"[rng.random_range(0..20)]);
                }
            }
        }
        match import(&bytes, &opts) {
            Ok(shifts) => {
                outcomes[0] += 1;
                for sh in shifts {
                    assert!(sh.start < sh.end, "seed {seed:#x} case {case}: {sh:?}");
                }
            }
            Err(e) => {
                outcomes[1] += 1;
                let lines = bytes.split(|b| *b == b'\n').count();
                assert!(e.line <= lines, "seed {seed:#x} case {case}: line {} of {lines}", e.line);
            }
        }
    }
    // Both outcomes happen: the mutations are neither all harmless nor all fatal.
    assert!(outcomes[0] > 100 && outcomes[1] > 100, "{outcomes:?}");
}
