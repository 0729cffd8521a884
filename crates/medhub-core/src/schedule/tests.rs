//! Tests of on-call schedule resolution: rotations, DST days asserted to the UTC second,
//! overrides, swaps, coverage, and seeded property tests of the timeline against point
//! queries.

use jiff::civil::{Time, Weekday, date, time};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use super::*;

fn user(n: u128) -> UserId {
    UserId::from_uuid(Uuid::from_u128(n))
}

fn oid(n: u128) -> OverrideId {
    OverrideId::from_uuid(Uuid::from_u128(n))
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap_or_else(|e| panic!("bad timestamp {s}: {e}"))
}

fn civil_at(y: i16, m: i8, d: i8, h: i8, min: i8) -> civil::DateTime {
    date(y, m, d).at(h, min, 0, 0)
}

const A: u128 = 0xA;
const B: u128 = 0xB;
const C: u128 = 0xC;

fn schedule(zone: &str, rotations: Vec<Rotation>) -> Schedule {
    Schedule {
        id: ScheduleId::from_uuid(Uuid::from_u128(0x5c)),
        org: OrgId::from_uuid(Uuid::from_u128(0x06)),
        name: "Cardiology".into(),
        target: Target::Team("cardiology on-call".into()),
        zone: Zone::named(zone).unwrap_or_else(|e| panic!("{zone}: {e}")),
        rotations,
        overrides: Vec::new(),
    }
}

fn rotation(people: &[u128], start: civil::DateTime, kind: RotationKind) -> Rotation {
    Rotation { participants: people.iter().map(|n| user(*n)).collect(), start, kind, restriction: None }
}

fn holders(s: &Schedule, at: &str) -> Vec<UserId> {
    on_call_at(s, &[], ts(at)).into_iter().map(|o| o.user).collect()
}

/// The (start, end) of the rotation-0 shifts overlapping the interval, as RFC 3339 strings.
fn spans(s: &Schedule, from: &str, to: &str) -> Vec<(String, String, UserId)> {
    shifts_between(s, ts(from), ts(to))
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|sh| (sh.start.to_string(), sh.end.to_string(), sh.user))
        .collect()
}

fn span(a: &str, b: &str, u: u128) -> (String, String, UserId) {
    (a.to_owned(), b.to_owned(), user(u))
}

fn hours(a: Timestamp, b: Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64() / 3600.0
}

// ---------------------------------------------------------------------------------------
// Rotations

#[test]
fn daily_rotation_hands_over_at_local_time_in_order() {
    let s = schedule("Europe/Berlin", vec![rotation(&[A, B, C], civil_at(2026, 3, 1, 8, 0), RotationKind::Daily)]);
    assert_eq!(validate(&s), Ok(()));
    assert_eq!(holders(&s, "2026-03-01T06:59:59Z"), vec![], "nobody before the first hand-over");
    assert_eq!(holders(&s, "2026-03-01T07:00:00Z"), vec![user(A)], "08:00 CET is 07:00 UTC");
    assert_eq!(holders(&s, "2026-03-02T06:59:59Z"), vec![user(A)]);
    assert_eq!(holders(&s, "2026-03-02T07:00:00Z"), vec![user(B)]);
    assert_eq!(holders(&s, "2026-03-03T07:00:00Z"), vec![user(C)]);
    assert_eq!(holders(&s, "2026-03-04T07:00:00Z"), vec![user(A)], "the rotation wraps around");
    let on = on_call_at(&s, &[], ts("2026-03-02T12:00:00Z"));
    assert_eq!(
        on,
        vec![OnCall {
            user: user(B),
            scheduled: user(B),
            source: ShiftSource::Rotation { rotation: 0 },
            covering_for: vec![]
        }]
    );
}

#[test]
fn weekly_rotation_and_its_spring_forward_week_is_167_hours() {
    let s = schedule("Europe/Berlin", vec![rotation(&[A, B], civil_at(2026, 3, 2, 9, 0), RotationKind::Weekly)]);
    assert_eq!(holders(&s, "2026-03-08T12:00:00Z"), vec![user(A)]);
    assert_eq!(holders(&s, "2026-03-09T07:59:59Z"), vec![user(A)]);
    assert_eq!(holders(&s, "2026-03-09T08:00:00Z"), vec![user(B)]);
    // Fourth week (k = 3): Monday 23 March 09:00 CET to Monday 30 March 09:00 CEST.
    let week = shifts_between(&s, ts("2026-03-25T00:00:00Z"), ts("2026-03-26T00:00:00Z")).unwrap_or_default();
    assert_eq!(week.len(), 1);
    assert_eq!(week[0].user, user(B));
    assert_eq!(week[0].start, ts("2026-03-23T08:00:00Z"));
    assert_eq!(week[0].end, ts("2026-03-30T07:00:00Z"));
    assert_eq!(hours(week[0].start, week[0].end), 167.0);
}

#[test]
fn custom_rotation_of_three_days() {
    let kind = RotationKind::Custom(ShiftLength::Days(3));
    let s = schedule("UTC", vec![rotation(&[A, B], civil_at(2026, 1, 1, 0, 0), kind)]);
    assert_eq!(
        spans(&s, "2026-01-01T00:00:00Z", "2026-01-07T00:00:01Z"),
        vec![
            span("2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z", A),
            span("2026-01-04T00:00:00Z", "2026-01-07T00:00:00Z", B),
            span("2026-01-07T00:00:00Z", "2026-01-10T00:00:00Z", A),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Daylight-saving time

#[test]
fn berlin_daily_0800_spring_forward_shift_is_23_hours_and_fall_back_25() {
    let s = schedule("Europe/Berlin", vec![rotation(&[A, B], civil_at(2026, 3, 1, 8, 0), RotationKind::Daily)]);
    // 28 March 08:00 CET (+01) to 29 March 08:00 CEST (+02).
    let spring = spans(&s, "2026-03-28T12:00:00Z", "2026-03-29T12:00:00Z");
    assert_eq!(
        spring,
        vec![
            span("2026-03-28T07:00:00Z", "2026-03-29T06:00:00Z", B),
            span("2026-03-29T06:00:00Z", "2026-03-30T06:00:00Z", A),
        ]
    );
    assert_eq!(hours(ts(&spring[0].0), ts(&spring[0].1)), 23.0);
    assert_eq!(hours(ts(&spring[1].0), ts(&spring[1].1)), 24.0);
    // 24 October 08:00 CEST to 25 October 08:00 CET.
    let fall = spans(&s, "2026-10-24T12:00:00Z", "2026-10-24T12:00:01Z");
    assert_eq!(fall.len(), 1);
    assert_eq!((fall[0].0.as_str(), fall[0].1.as_str()), ("2026-10-24T06:00:00Z", "2026-10-25T07:00:00Z"));
    assert_eq!(hours(ts(&fall[0].0), ts(&fall[0].1)), 25.0);
    assert_eq!(holders(&s, "2026-10-25T06:59:59Z"), vec![fall[0].2]);
    assert_ne!(holders(&s, "2026-10-25T07:00:00Z"), vec![fall[0].2]);
}

#[test]
fn new_york_daily_0800_spring_forward_and_fall_back() {
    let s = schedule("America/New_York", vec![rotation(&[A, B], civil_at(2026, 3, 1, 8, 0), RotationKind::Daily)]);
    // 7 March 08:00 EST (13:00Z) to 8 March 08:00 EDT (12:00Z): 23 h.
    let spring = spans(&s, "2026-03-07T20:00:00Z", "2026-03-07T20:00:01Z");
    assert_eq!(spring, vec![span("2026-03-07T13:00:00Z", "2026-03-08T12:00:00Z", A)]);
    // 31 October 08:00 EDT (12:00Z) to 1 November 08:00 EST (13:00Z): 25 h.
    let fall = spans(&s, "2026-10-31T20:00:00Z", "2026-10-31T20:00:01Z");
    assert_eq!(fall.len(), 1);
    assert_eq!((fall[0].0.as_str(), fall[0].1.as_str()), ("2026-10-31T12:00:00Z", "2026-11-01T13:00:00Z"));
    assert_eq!(hours(ts(&fall[0].0), ts(&fall[0].1)), 25.0);
}

#[test]
fn handover_in_the_spring_forward_gap_moves_later_by_the_gap() {
    // 02:30 does not exist on 8 March 2026 in New York: read with EST, it is 03:30 EDT.
    let ny = schedule("America/New_York", vec![rotation(&[A, B], civil_at(2026, 3, 6, 2, 30), RotationKind::Daily)]);
    assert_eq!(
        spans(&ny, "2026-03-07T12:00:00Z", "2026-03-09T12:00:00Z"),
        vec![
            span("2026-03-07T07:30:00Z", "2026-03-08T07:30:00Z", B),
            span("2026-03-08T07:30:00Z", "2026-03-09T06:30:00Z", A),
            span("2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z", B),
        ]
    );
    assert_eq!(
        local_to_instant(ny.zone.time_zone(), civil_at(2026, 3, 8, 2, 30)),
        Ok(ts("2026-03-08T07:30:00Z")),
        "07:30Z is 03:30 EDT"
    );
    // Same in Berlin on 29 March: 02:30 becomes 03:30 CEST = 01:30Z.
    let berlin = schedule("Europe/Berlin", vec![rotation(&[A, B], civil_at(2026, 3, 28, 2, 30), RotationKind::Daily)]);
    assert_eq!(
        spans(&berlin, "2026-03-29T12:00:00Z", "2026-03-29T12:00:01Z"),
        vec![span("2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z", B)]
    );
}

#[test]
fn handover_in_the_fall_back_fold_takes_the_first_occurrence() {
    // 01:30 happens twice on 1 November 2026 in New York; the first is 01:30 EDT = 05:30Z.
    let s = schedule("America/New_York", vec![rotation(&[A, B], civil_at(2026, 10, 31, 1, 30), RotationKind::Daily)]);
    assert_eq!(
        spans(&s, "2026-10-31T12:00:00Z", "2026-11-01T12:00:00Z"),
        vec![
            span("2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", A),
            span("2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z", B),
        ]
    );
    assert_eq!(holders(&s, "2026-11-01T05:29:59Z"), vec![user(A)]);
    assert_eq!(holders(&s, "2026-11-01T05:30:00Z"), vec![user(B)], "first 01:30, not the second (06:30Z)");
}

#[test]
fn twelve_hour_shifts_stay_at_0700_and_1900_local() {
    let kind = RotationKind::Custom(ShiftLength::Hours(12));
    let s = schedule("Europe/Berlin", vec![rotation(&[A, B], civil_at(2026, 3, 27, 7, 0), kind)]);
    // 28 March 19:00 CET (18:00Z) to 29 March 07:00 CEST (05:00Z): an 11-hour night.
    let spring = spans(&s, "2026-03-28T12:00:00Z", "2026-03-29T12:00:00Z");
    assert_eq!(
        spring,
        vec![
            span("2026-03-28T06:00:00Z", "2026-03-28T18:00:00Z", A),
            span("2026-03-28T18:00:00Z", "2026-03-29T05:00:00Z", B),
            span("2026-03-29T05:00:00Z", "2026-03-29T17:00:00Z", A),
        ]
    );
    // 24 October 19:00 CEST (17:00Z) to 25 October 07:00 CET (06:00Z): 13 hours.
    let fall = spans(&s, "2026-10-24T20:00:00Z", "2026-10-24T20:00:01Z");
    assert_eq!(fall.len(), 1);
    assert_eq!((fall[0].0.as_str(), fall[0].1.as_str()), ("2026-10-24T17:00:00Z", "2026-10-25T06:00:00Z"));
}

#[test]
fn night_layer_over_spring_forward_is_eleven_hours_and_empty_by_day() {
    let mut r = rotation(&[A, B], civil_at(2026, 3, 1, 20, 0), RotationKind::Daily);
    r.restriction = Some(Restriction { days: Weekdays::ALL, from: time(20, 0, 0, 0), to: time(8, 0, 0, 0) });
    let s = schedule("America/New_York", vec![r]);
    assert_eq!(validate(&s), Ok(()));
    // 7 March 20:00 EST (8 March 01:00Z) to 8 March 08:00 EDT (12:00Z).
    let nights = spans(&s, "2026-03-08T03:00:00Z", "2026-03-09T03:00:00Z");
    assert_eq!(
        nights,
        vec![
            span("2026-03-08T01:00:00Z", "2026-03-08T12:00:00Z", A),
            span("2026-03-09T00:00:00Z", "2026-03-09T12:00:00Z", B),
        ]
    );
    assert_eq!(hours(ts(&nights[0].0), ts(&nights[0].1)), 11.0);
    assert_eq!(holders(&s, "2026-03-08T11:59:59Z"), vec![user(A)]);
    assert_eq!(holders(&s, "2026-03-08T12:00:00Z"), vec![], "daytime: the night layer holds nobody");
    assert_eq!(holders(&s, "2026-03-09T00:00:00Z"), vec![user(B)], "20:00 EDT on 8 March");
}

#[test]
fn weekday_daytime_restriction_leaves_weekends_empty() {
    let mut r = rotation(&[A, B], civil_at(2026, 3, 2, 8, 0), RotationKind::Weekly);
    r.restriction =
        Some(Restriction { days: Weekdays::MONDAY_TO_FRIDAY, from: time(8, 0, 0, 0), to: time(18, 0, 0, 0) });
    let s = schedule("UTC", vec![r]);
    let week = spans(&s, "2026-03-02T00:00:00Z", "2026-03-09T00:00:00Z");
    assert_eq!(week.len(), 5, "one piece per weekday");
    assert_eq!(week[0], span("2026-03-02T08:00:00Z", "2026-03-02T18:00:00Z", A));
    assert_eq!(week[4], span("2026-03-06T08:00:00Z", "2026-03-06T18:00:00Z", A));
    assert_eq!(holders(&s, "2026-03-07T12:00:00Z"), vec![], "Saturday");
    assert_eq!(holders(&s, "2026-03-09T12:00:00Z"), vec![user(B)]);
    // A whole-day window (from == to) on weekdays merges into one piece Monday to Saturday.
    let mut whole = s.clone();
    whole.rotations[0].restriction =
        Some(Restriction { days: Weekdays::MONDAY_TO_FRIDAY, from: Time::midnight(), to: Time::midnight() });
    assert_eq!(
        spans(&whole, "2026-03-02T00:00:00Z", "2026-03-09T00:00:00Z"),
        vec![span("2026-03-02T08:00:00Z", "2026-03-07T00:00:00Z", A)]
    );
}

#[test]
fn lord_howe_half_hour_dst_gives_24_and_a_half_and_23_and_a_half_hour_days() {
    let s = schedule("Australia/Lord_Howe", vec![rotation(&[A, B], civil_at(2026, 4, 1, 8, 0), RotationKind::Daily)]);
    // DST ends on 5 April 2026 (+11 to +10:30).
    let autumn = spans(&s, "2026-04-04T00:00:00Z", "2026-04-04T00:00:01Z");
    assert_eq!(autumn, vec![span("2026-04-03T21:00:00Z", "2026-04-04T21:30:00Z", B)]);
    assert_eq!(hours(ts(&autumn[0].0), ts(&autumn[0].1)), 24.5);
    // DST starts on 4 October 2026 (+10:30 to +11).
    let spring = spans(&s, "2026-10-03T00:00:00Z", "2026-10-03T00:00:01Z");
    assert_eq!(spring.len(), 1);
    assert_eq!((spring[0].0.as_str(), spring[0].1.as_str()), ("2026-10-02T21:30:00Z", "2026-10-03T21:00:00Z"));
    assert_eq!(hours(ts(&spring[0].0), ts(&spring[0].1)), 23.5);
    // 02:15 is in the half-hour gap; read with +10:30 it is 02:45 +11.
    assert_eq!(local_to_instant(s.zone.time_zone(), civil_at(2026, 10, 4, 2, 15)), Ok(ts("2026-10-03T15:45:00Z")));
}

#[test]
fn southern_hemisphere_santiago_days_are_25_in_april_and_23_in_september() {
    let s = schedule("America/Santiago", vec![rotation(&[A, B], civil_at(2026, 4, 1, 8, 0), RotationKind::Daily)]);
    let april = shifts_between(&s, ts("2026-04-04T12:00:00Z"), ts("2026-04-04T12:00:01Z")).unwrap_or_default();
    assert_eq!((april[0].start, april[0].end), (ts("2026-04-04T11:00:00Z"), ts("2026-04-05T12:00:00Z")));
    let sept = shifts_between(&s, ts("2026-09-05T12:00:00Z"), ts("2026-09-05T12:00:01Z")).unwrap_or_default();
    assert_eq!((sept[0].start, sept[0].end), (ts("2026-09-05T12:00:00Z"), ts("2026-09-06T11:00:00Z")));
}

#[test]
fn hourly_shifts_over_a_two_hour_gap_skip_the_shifts_that_never_happen() {
    // Antarctica/Troll jumps from +00 to +02 at 01:00 UTC on 29 March 2026. Civil 01:00 and
    // 02:00 are in the gap (read as 01:00Z and 02:00Z) and civil 03:00 is 01:00Z again:
    // hand-overs out of order. The shift in force is the latest-numbered one that has
    // started, so the 01:00 and 02:00 shifts are empty and 03:00 runs 01:00Z to 02:00Z.
    let kind = RotationKind::Custom(ShiftLength::Hours(1));
    let s = schedule("Antarctica/Troll", vec![rotation(&[A, B, C], civil_at(2026, 3, 29, 0, 0), kind)]);
    assert_eq!(
        spans(&s, "2026-03-29T00:00:00Z", "2026-03-29T03:00:00Z"),
        vec![
            span("2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", A),
            // k = 3 (civil 03:00) is participant 0 again.
            span("2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z", A),
            span("2026-03-29T02:00:00Z", "2026-03-29T03:00:00Z", B),
        ]
    );
    assert_eq!(holders(&s, "2026-03-29T01:30:00Z"), vec![user(A)]);
    assert_eq!(holders(&s, "2026-03-29T02:30:00Z"), vec![user(B)]);
}

// ---------------------------------------------------------------------------------------
// Layers and overrides

#[test]
fn two_layers_give_two_holders_and_a_person_on_both_is_listed_once() {
    let primary = rotation(&[A, B], civil_at(2026, 1, 1, 8, 0), RotationKind::Daily);
    let backup = rotation(&[C, A], civil_at(2026, 1, 1, 8, 0), RotationKind::Daily);
    let s = schedule("UTC", vec![primary, backup]);
    let on = on_call_at(&s, &[], ts("2026-01-01T12:00:00Z"));
    assert_eq!(
        on.iter().map(|o| (o.user, o.source)).collect::<Vec<_>>(),
        vec![(user(A), ShiftSource::Rotation { rotation: 0 }), (user(C), ShiftSource::Rotation { rotation: 1 }),]
    );
    let mut same = s.clone();
    same.rotations[1].participants = vec![user(A)];
    assert_eq!(holders(&same, "2026-01-01T12:00:00Z"), vec![user(A)]);
    assert_eq!(shifts_between(&same, ts("2026-01-01T12:00:00Z"), ts("2026-01-01T13:00:00Z")).map(|v| v.len()), Ok(2));
}

#[test]
fn replacing_override_splits_the_shift_and_adding_override_adds_a_holder() {
    let mut s = schedule("UTC", vec![rotation(&[A, B], civil_at(2026, 1, 1, 8, 0), RotationKind::Daily)]);
    s.overrides = vec![
        Override {
            id: oid(1),
            user: user(C),
            start: ts("2026-01-01T12:00:00Z"),
            end: ts("2026-01-01T14:00:00Z"),
            replaces: Some(user(A)),
        },
        // B is not on call during this one: it changes nothing.
        Override {
            id: oid(2),
            user: user(C),
            start: ts("2026-01-01T15:00:00Z"),
            end: ts("2026-01-01T16:00:00Z"),
            replaces: Some(user(B)),
        },
        Override {
            id: oid(3),
            user: user(0xD),
            start: ts("2026-01-01T20:00:00Z"),
            end: ts("2026-01-02T09:00:00Z"),
            replaces: None,
        },
    ];
    assert_eq!(validate(&s), Ok(()));
    assert_eq!(
        spans(&s, "2026-01-01T08:00:00Z", "2026-01-02T08:00:00Z"),
        vec![
            span("2026-01-01T08:00:00Z", "2026-01-01T12:00:00Z", A),
            span("2026-01-01T12:00:00Z", "2026-01-01T14:00:00Z", C),
            span("2026-01-01T14:00:00Z", "2026-01-02T08:00:00Z", A),
            span("2026-01-01T20:00:00Z", "2026-01-02T09:00:00Z", 0xD),
        ]
    );
    let on = on_call_at(&s, &[], ts("2026-01-01T13:00:00Z"));
    assert_eq!(on.len(), 1);
    assert_eq!(on[0].user, user(C));
    assert_eq!(on[0].source, ShiftSource::Override { id: oid(1), rotation: Some(0), replaced: Some(user(A)) });
    assert_eq!(holders(&s, "2026-01-01T15:30:00Z"), vec![user(A)]);
    assert_eq!(holders(&s, "2026-01-01T21:00:00Z"), vec![user(A), user(0xD)]);
    assert_eq!(holders(&s, "2026-01-02T08:30:00Z"), vec![user(B), user(0xD)]);
}

#[test]
fn swap_exchanges_two_shifts() {
    let mut s = schedule("Europe/Berlin", vec![rotation(&[A, B], civil_at(2026, 3, 1, 8, 0), RotationKind::Daily)]);
    let shifts = shifts_between(&s, ts("2026-03-28T12:00:00Z"), ts("2026-03-29T12:00:00Z")).unwrap_or_default();
    assert_eq!(shifts.iter().map(|s| s.user).collect::<Vec<_>>(), vec![user(B), user(A)]);
    let pair = swap(&shifts[0], &shifts[1], [oid(1), oid(2)]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pair[0].user, user(A));
    assert_eq!(pair[0].replaces, Some(user(B)));
    assert_eq!((pair[0].start, pair[0].end), (shifts[0].start, shifts[0].end));
    s.overrides.extend(pair);
    assert_eq!(validate(&s), Ok(()));
    assert_eq!(holders(&s, "2026-03-28T12:00:00Z"), vec![user(A)]);
    assert_eq!(holders(&s, "2026-03-29T12:00:00Z"), vec![user(B)]);
    assert_eq!(holders(&s, "2026-03-30T12:00:00Z"), vec![user(B)], "the next day is untouched");
    // Refusals.
    assert_eq!(swap(&shifts[0], &shifts[0], [oid(3), oid(4)]), Err(ScheduleError::SwapSameUser));
    let overlapping = Shift { user: user(C), start: shifts[0].start, ..shifts[0] };
    assert_eq!(swap(&shifts[0], &overlapping, [oid(3), oid(4)]), Err(ScheduleError::SwapShiftsOverlap));
    let swapped = shifts_between(&s, ts("2026-03-28T12:00:00Z"), ts("2026-03-28T12:00:01Z")).unwrap_or_default();
    assert_eq!(swap(&swapped[0], &shifts[1], [oid(3), oid(4)]), Err(ScheduleError::SwapNeedsRotationShifts));
}

// ---------------------------------------------------------------------------------------
// Coverage

fn cover(covered: u128, by: u128, start: &str, end: &str) -> Coverage {
    Coverage { covered: user(covered), by: user(by), start: ts(start), end: ts(end) }
}

#[test]
fn coverage_chain_is_followed_and_named() {
    let s = schedule("UTC", vec![rotation(&[A], civil_at(2026, 1, 1, 0, 0), RotationKind::Daily)]);
    let cov = [
        cover(A, B, "2026-01-05T00:00:00Z", "2026-01-10T00:00:00Z"),
        cover(B, C, "2026-01-07T00:00:00Z", "2026-01-08T00:00:00Z"),
    ];
    assert_eq!(validate_coverage(&cov), Ok(()));
    assert_eq!(on_call_at(&s, &cov, ts("2026-01-04T12:00:00Z"))[0].user, user(A));
    let one = on_call_at(&s, &cov, ts("2026-01-06T12:00:00Z"));
    assert_eq!((one[0].user, one[0].scheduled, one[0].covering_for.clone()), (user(B), user(A), vec![user(A)]));
    let two = on_call_at(&s, &cov, ts("2026-01-07T12:00:00Z"));
    assert_eq!(two[0].user, user(C));
    assert_eq!(two[0].covering_for, vec![user(A), user(B)]);
    assert_eq!(two[0].source, ShiftSource::Rotation { rotation: 0 });
    assert_eq!(on_call_at(&s, &cov, ts("2026-01-10T00:00:00Z"))[0].user, user(A), "end is exclusive");
    assert_eq!(covering(&cov, user(B), ts("2026-01-07T00:00:00Z")).user, user(C));
}

#[test]
fn coverage_cycle_is_refused_and_resolution_does_not_loop() {
    let cov = [
        cover(A, B, "2026-01-01T00:00:00Z", "2026-01-10T00:00:00Z"),
        cover(B, C, "2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z"),
        cover(C, A, "2026-01-03T00:00:00Z", "2026-01-08T00:00:00Z"),
    ];
    match validate_coverage(&cov) {
        Err(ScheduleError::CoverageCycle { users, at }) => {
            assert_eq!(at, ts("2026-01-05T00:00:00Z"), "the first instant all three are in force");
            let mut sorted = users.clone();
            sorted.sort();
            assert_eq!(sorted, vec![user(A), user(B), user(C)]);
        }
        other => panic!("expected a cycle, got {other:?}"),
    }
    // The same links never all in force at once are not a cycle.
    let apart = [
        cover(A, B, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"),
        cover(B, A, "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"),
    ];
    assert_eq!(validate_coverage(&apart), Ok(()));
    // Resolution inside the cycle falls back to the scheduled holder.
    let s = schedule("UTC", vec![rotation(&[A], civil_at(2026, 1, 1, 0, 0), RotationKind::Daily)]);
    let on = on_call_at(&s, &cov, ts("2026-01-05T12:00:00Z"));
    assert_eq!((on[0].user, on[0].covering_for.len()), (user(A), 0));
    // Outside the cycle's window the chain resolves normally.
    assert_eq!(on_call_at(&s, &cov, ts("2026-01-04T12:00:00Z"))[0].user, user(B));
}

#[test]
fn coverage_refusals() {
    let t0 = "2026-01-01T00:00:00Z";
    let t1 = "2026-01-02T00:00:00Z";
    assert_eq!(validate_coverage(&[cover(A, A, t0, t1)]), Err(ScheduleError::CoverageOfSelf));
    assert_eq!(validate_coverage(&[cover(A, B, t1, t0)]), Err(ScheduleError::CoverageEndBeforeStart));
    assert_eq!(validate_coverage(&[cover(A, B, t0, t0)]), Err(ScheduleError::CoverageEndBeforeStart));
    // A long coverage overlapping a later, non-adjacent one of the same person.
    let long = [
        cover(A, B, "2026-01-01T00:00:00Z", "2026-01-30T00:00:00Z"),
        cover(A, C, "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"),
    ];
    assert_eq!(validate_coverage(&long), Err(ScheduleError::OverlappingCoverage { covered: user(A) }));
    let back_to_back = [cover(A, B, t0, t1), cover(A, C, t1, "2026-01-03T00:00:00Z")];
    assert_eq!(validate_coverage(&back_to_back), Ok(()));
    // A chain of MAX_COVERAGE_CHAIN links is fine, one more is not.
    let chain = |links: u128| (0..links).map(|i| cover(100 + i, 101 + i, t0, t1)).collect::<Vec<_>>();
    let max = MAX_COVERAGE_CHAIN as u128;
    assert_eq!(validate_coverage(&chain(max)), Ok(()));
    assert_eq!(covering(&chain(max), user(100), ts(t0)).user, user(100 + max));
    assert_eq!(
        validate_coverage(&chain(max + 1)),
        Err(ScheduleError::CoverageChainTooLong { max: MAX_COVERAGE_CHAIN, at: ts(t0) })
    );
    assert_eq!(covering(&chain(max + 1), user(100), ts(t0)).user, user(100), "falls back to the addressee");
    let too_many = vec![cover(A, B, t0, t1); MAX_COVERAGES + 1];
    assert_eq!(validate_coverage(&too_many), Err(ScheduleError::TooManyCoverages { max: MAX_COVERAGES }));
}

// ---------------------------------------------------------------------------------------
// Next change

#[test]
fn next_change_is_the_next_handover_to_someone_else() {
    let s = schedule("Europe/Berlin", vec![rotation(&[A, B], civil_at(2026, 3, 1, 8, 0), RotationKind::Daily)]);
    assert_eq!(next_change_after(&s, &[], ts("2026-03-28T12:00:00Z")), Some(ts("2026-03-29T06:00:00Z")));
    assert_eq!(
        next_change_after(&s, &[], ts("2026-03-29T06:00:00Z")),
        Some(ts("2026-03-30T06:00:00Z")),
        "strictly after"
    );
    assert_eq!(next_change_after(&s, &[], ts("2026-02-01T00:00:00Z")), Some(ts("2026-03-01T07:00:00Z")));
    // One person: the holder never changes.
    let solo = schedule("Europe/Berlin", vec![rotation(&[A], civil_at(2026, 3, 1, 8, 0), RotationKind::Daily)]);
    assert_eq!(next_change_after(&solo, &[], ts("2026-03-10T00:00:00Z")), None);
    // A, A, B: the change is after two days, not at the first hand-over.
    let aab = schedule("UTC", vec![rotation(&[A, A, B], civil_at(2026, 1, 1, 8, 0), RotationKind::Daily)]);
    assert_eq!(next_change_after(&aab, &[], ts("2026-01-01T09:00:00Z")), Some(ts("2026-01-03T08:00:00Z")));
    // Coverage starting in the middle of a shift is a change; so is an override.
    let cov = [cover(A, C, "2026-03-10T15:00:00Z", "2026-03-10T16:00:00Z")];
    assert_eq!(next_change_after(&solo, &cov, ts("2026-03-10T00:00:00Z")), Some(ts("2026-03-10T15:00:00Z")));
    assert_eq!(next_change_after(&solo, &cov, ts("2026-03-10T15:00:00Z")), Some(ts("2026-03-10T16:00:00Z")));
    let mut with_override = solo.clone();
    with_override.overrides.push(Override {
        id: oid(1),
        user: user(B),
        start: ts("2026-03-20T00:00:00Z"),
        end: ts("2026-03-21T00:00:00Z"),
        replaces: None,
    });
    assert_eq!(next_change_after(&with_override, &[], ts("2026-03-10T00:00:00Z")), Some(ts("2026-03-20T00:00:00Z")));
    // A change more than the horizon away is not reported.
    let far = schedule("UTC", vec![rotation(&[A], civil_at(2028, 1, 1, 0, 0), RotationKind::Daily)]);
    assert_eq!(next_change_after(&far, &[], ts("2026-01-01T00:00:00Z")), None);
    assert_eq!(next_change_after(&far, &[], ts("2027-06-01T00:00:00Z")), Some(ts("2028-01-01T00:00:00Z")));
}

// ---------------------------------------------------------------------------------------
// Validation

#[test]
fn validation_refusals_name_their_cause() {
    let base = schedule("UTC", vec![rotation(&[A, B], civil_at(2026, 1, 1, 8, 0), RotationKind::Daily)]);
    let check = |f: &dyn Fn(&mut Schedule), want: ScheduleError| {
        let mut s = base.clone();
        f(&mut s);
        assert_eq!(validate(&s), Err(want));
    };
    check(&|s| s.name = " ".into(), ScheduleError::InvalidName { max: MAX_NAME_CHARS });
    check(&|s| s.target = Target::Role("a\nb".into()), ScheduleError::InvalidName { max: MAX_NAME_CHARS });
    check(&|s| s.name = "x".repeat(MAX_NAME_CHARS + 1), ScheduleError::InvalidName { max: MAX_NAME_CHARS });
    check(&|s| s.rotations[0].participants.clear(), ScheduleError::EmptyRotation { rotation: 0 });
    check(
        &|s| s.rotations[0].participants = vec![user(A); MAX_PARTICIPANTS + 1],
        ScheduleError::TooManyParticipants { rotation: 0, max: MAX_PARTICIPANTS },
    );
    check(
        &|s| s.rotations = vec![s.rotations[0].clone(); MAX_ROTATIONS + 1],
        ScheduleError::TooManyRotations { max: MAX_ROTATIONS },
    );
    for bad in [ShiftLength::Hours(0), ShiftLength::Days(0), ShiftLength::Hours(337), ShiftLength::Days(367)] {
        check(
            &|s| s.rotations[0].kind = RotationKind::Custom(bad),
            ScheduleError::ShiftLengthOutOfRange { rotation: 0 },
        );
    }
    check(&|s| s.rotations[0].start = civil_at(1969, 12, 31, 0, 0), ScheduleError::StartOutOfRange { rotation: 0 });
    check(&|s| s.rotations[0].start = civil_at(2200, 1, 1, 0, 0), ScheduleError::StartOutOfRange { rotation: 0 });
    check(&|s| s.rotations[0].start = date(2026, 1, 1).at(8, 0, 0, 5), ScheduleError::SubsecondTime);
    check(
        &|s| {
            s.rotations[0].restriction =
                Some(Restriction { days: Weekdays::NONE, from: Time::midnight(), to: Time::midnight() })
        },
        ScheduleError::RestrictionWithoutDays { rotation: 0 },
    );
    let o = Override {
        id: oid(1),
        user: user(C),
        start: ts("2026-01-02T00:00:00Z"),
        end: ts("2026-01-03T00:00:00Z"),
        replaces: Some(user(A)),
    };
    check(
        &|s| s.overrides = vec![Override { end: o.start, ..o }],
        ScheduleError::OverrideEndBeforeStart { id: oid(1) },
    );
    check(
        &|s| {
            s.overrides = vec![Override {
                end: o.start.checked_add(MAX_OVERRIDE_SPAN + SignedDuration::from_secs(1)).unwrap_or(o.end),
                ..o
            }]
        },
        ScheduleError::OverrideTooLong { id: oid(1) },
    );
    check(
        &|s| s.overrides = vec![Override { replaces: Some(user(C)), ..o }],
        ScheduleError::OverrideReplacesSelf { id: oid(1) },
    );
    check(
        &|s| s.overrides = vec![o, Override { start: o.end, end: ts("2026-01-04T00:00:00Z"), ..o }],
        ScheduleError::DuplicateOverrideId { id: oid(1) },
    );
    check(&|s| s.overrides = vec![Override { start: ts("2026-01-02T00:00:00.5Z"), ..o }], ScheduleError::SubsecondTime);
    // Same replaced person, overlapping (not adjacent): refused, even with a long one in between.
    check(
        &|s| {
            s.overrides = vec![
                Override { end: ts("2026-01-30T00:00:00Z"), ..o },
                Override {
                    id: oid(2),
                    user: user(0xD),
                    start: ts("2026-01-10T00:00:00Z"),
                    end: ts("2026-01-11T00:00:00Z"),
                    ..o
                },
            ]
        },
        ScheduleError::OverlappingOverrides { first: oid(1), second: oid(2) },
    );
    // Same added person, overlapping: refused.
    check(
        &|s| {
            s.overrides = vec![
                Override { replaces: None, ..o },
                Override {
                    id: oid(2),
                    replaces: None,
                    start: ts("2026-01-02T12:00:00Z"),
                    end: ts("2026-01-05T00:00:00Z"),
                    ..o
                },
            ]
        },
        ScheduleError::OverlappingOverrides { first: oid(1), second: oid(2) },
    );
    // Adjacent overrides of one slot, and overlapping ones of different slots, are fine.
    let mut fine = base.clone();
    fine.overrides = vec![
        o,
        Override { id: oid(2), start: o.end, end: ts("2026-01-04T00:00:00Z"), ..o },
        Override { id: oid(3), replaces: Some(user(B)), ..o },
        Override { id: oid(4), replaces: None, ..o },
    ];
    assert_eq!(validate(&fine), Ok(()));
}

#[test]
fn zones_are_iana_names_only() {
    assert_eq!(Zone::named("Europe/Berlin").map(|z| z.name().to_owned()), Ok("Europe/Berlin".to_owned()));
    assert!(Zone::named("UTC").is_ok());
    assert_eq!(Zone::named("europe/berlin").map(|z| z.name().to_owned()), Ok("Europe/Berlin".to_owned()));
    for bad in ["", "Mars/Olympus_Mons", "../../etc/passwd", "EST5EDT,M3.2.0,M11.1.0", "+02:00", "Europe/Berlin "] {
        assert!(matches!(Zone::named(bad), Err(ScheduleError::UnknownTimeZone(_))), "{bad:?}");
    }
    assert!(Zone::named(&"A".repeat(MAX_ZONE_NAME_BYTES + 1)).is_err());
}

#[test]
fn queries_are_bounded() {
    let s = schedule("UTC", vec![rotation(&[A, B], civil_at(2026, 1, 1, 8, 0), RotationKind::Daily)]);
    let t = ts("2026-01-01T00:00:00Z");
    assert_eq!(shifts_between(&s, t, t), Err(ScheduleError::EmptyInterval));
    let too_far = t.checked_add(MAX_QUERY_SPAN + SignedDuration::from_secs(1)).unwrap_or(t);
    assert_eq!(shifts_between(&s, t, too_far), Err(ScheduleError::IntervalTooLong));
    let just = t.checked_add(MAX_QUERY_SPAN).unwrap_or(t);
    assert_eq!(shifts_between(&s, t, just).map(|v| v.len()), Ok(400));
    // Extreme instants answer without panicking.
    assert_eq!(on_call_at(&s, &[], Timestamp::MIN), vec![]);
    assert_eq!(on_call_at(&s, &[], Timestamp::MAX).len(), 1);
    assert!(
        shifts_between(&s, Timestamp::MAX.checked_sub(SignedDuration::from_hours(48)).unwrap_or(t), Timestamp::MAX)
            .is_ok()
    );
    assert_eq!(next_change_after(&s, &[], Timestamp::MAX), None);
}

// ---------------------------------------------------------------------------------------
// Property tests: the timeline agrees with point queries.

/// Zones with a change (or none) and the days just before it: most intervals cross it.
const CHANGES: [(&str, i16, i8, std::ops::Range<i8>); 12] = [
    ("Europe/Berlin", 2026, 3, 23..30),
    ("Europe/London", 2026, 10, 19..26),
    ("Europe/Berlin", 2026, 10, 19..26),
    ("America/New_York", 2026, 3, 2..9),
    ("America/New_York", 2026, 10, 26..32),
    ("Antarctica/Troll", 2026, 3, 23..30),
    ("Antarctica/Troll", 2026, 10, 19..26),
    ("Australia/Lord_Howe", 2026, 4, 1..6),
    ("Australia/Lord_Howe", 2026, 9, 28..31),
    ("America/Santiago", 2026, 9, 1..7),
    ("Pacific/Apia", 2011, 12, 24..30),
    ("Asia/Kolkata", 2026, 3, 1..28),
];

/// A random schedule that starts shortly before a DST change (or Samoa's skipped day).
fn random_schedule(rng: &mut ChaCha8Rng) -> Schedule {
    let (zone, y, m, days) = CHANGES[rng.random_range(0..CHANGES.len())].clone();
    let d = rng.random_range(days);
    let mut rotations = Vec::new();
    for _ in 0..rng.random_range(1..4) {
        let people: Vec<u128> = (0..rng.random_range(1..5)).map(|_| rng.random_range(1..6)).collect();
        let kind = match rng.random_range(0..4) {
            0 => RotationKind::Daily,
            1 => RotationKind::Weekly,
            2 => RotationKind::Custom(ShiftLength::Days(rng.random_range(1..4))),
            _ => RotationKind::Custom(ShiftLength::Hours(
                [1, 1, 2, 3, 8, 12, 25, rng.random_range(1..49)][rng.random_range(0..8)],
            )),
        };
        let start = civil_at(y, m, d, rng.random_range(0..24), [0, 15, 30, 45][rng.random_range(0..4)]);
        let mut r = rotation(&people, start, kind);
        if rng.random_bool(0.4) {
            let days = Weekdays::of(
                &[
                    Weekday::Monday,
                    Weekday::Tuesday,
                    Weekday::Wednesday,
                    Weekday::Thursday,
                    Weekday::Friday,
                    Weekday::Saturday,
                    Weekday::Sunday,
                ]
                .into_iter()
                .filter(|_| rng.random_bool(0.6))
                .collect::<Vec<_>>(),
            );
            let t = |rng: &mut ChaCha8Rng| time(rng.random_range(0..24), [0, 30][rng.random_range(0..2)], 0, 0);
            r.restriction = Some(Restriction {
                days: if days.is_empty() { Weekdays::ALL } else { days },
                from: t(rng),
                to: t(rng),
            });
        }
        rotations.push(r);
    }
    let mut s = schedule(zone, rotations);
    let base = local_to_instant(s.zone.time_zone(), civil_at(y, m, d, 0, 0)).unwrap_or(Timestamp::UNIX_EPOCH);
    for i in 0..rng.random_range(0..6) {
        let start = base.checked_add(SignedDuration::from_mins(rng.random_range(0..60 * 24 * 6))).unwrap_or(base);
        let end = start.checked_add(SignedDuration::from_mins(rng.random_range(1..60 * 30))).unwrap_or(base);
        let replaces = if rng.random_bool(0.7) { Some(user(rng.random_range(1..6))) } else { None };
        s.overrides.push(Override { id: oid(i), user: user(rng.random_range(6..9)), start, end, replaces });
    }
    s
}

#[test]
fn property_timeline_tiles_each_layer_and_agrees_with_on_call_at() {
    let seed: u64 = std::env::var("MEDHUB_SCHEDULE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_0ca1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for case in 0..600 {
        let s = random_schedule(&mut rng);
        let ctx = format!("seed {seed:#x} case {case}: {s:#?}");
        let tz = s.zone.time_zone();
        let from = s.rotations[0]
            .start
            .checked_sub(SignedDuration::from_hours(30))
            .ok()
            .and_then(|d| local_to_instant(tz, d).ok())
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let from = from.checked_add(SignedDuration::from_mins(rng.random_range(0..600))).unwrap_or(from);
        let to = from.checked_add(SignedDuration::from_hours(rng.random_range(1..24 * 10))).unwrap_or(from);
        let shifts = shifts_between(&s, from, to).unwrap_or_else(|e| panic!("{e}\n{ctx}"));
        for sh in &shifts {
            assert!(sh.start < sh.end, "empty shift {sh:?}\n{ctx}");
            assert!(sh.end > from && sh.start < to, "shift outside the interval {sh:?}\n{ctx}");
        }
        // Per layer: sorted, no overlaps; without a restriction, no gaps from the layer's
        // first instant (or `from`) to `to`.
        for (layer, r) in s.rotations.iter().enumerate() {
            let mine: Vec<&Shift> = shifts.iter().filter(|sh| sh.source.rotation() == Some(layer)).collect();
            for pair in mine.windows(2) {
                assert!(pair[0].end <= pair[1].start, "overlap in layer {layer}: {pair:?}\n{ctx}");
                if r.restriction.is_none() {
                    assert_eq!(pair[0].end, pair[1].start, "gap in layer {layer}: {pair:?}\n{ctx}");
                }
            }
            if r.restriction.is_none() {
                let first = handover(r, tz, 0).unwrap_or(Timestamp::MAX);
                match (mine.first(), mine.last()) {
                    (Some(f), Some(l)) => {
                        assert!(f.start <= from.max(first), "layer {layer} starts late\n{ctx}");
                        assert!(l.end >= to, "layer {layer} ends early\n{ctx}");
                    }
                    _ => assert!(first >= to, "layer {layer} has no shifts\n{ctx}"),
                }
            }
        }
        // At random instants (and at every boundary), the timeline and the point query name
        // the same holders for the same reasons.
        let span_secs = to.duration_since(from).as_secs();
        let mut instants: Vec<Timestamp> = (0..40)
            .map(|_| from.checked_add(SignedDuration::from_secs(rng.random_range(0..span_secs))).unwrap_or(from))
            .collect();
        instants.extend(shifts.iter().flat_map(|s| [s.start, s.end]).filter(|t| *t >= from && *t < to));
        for at in instants {
            let mut from_timeline: Vec<(UserId, ShiftSource)> =
                shifts.iter().filter(|sh| sh.start <= at && at < sh.end).map(|sh| (sh.user, sh.source)).collect();
            let mut from_point = scheduled_at(&s, at);
            from_timeline.sort_by_key(|(u, src)| (*u, format!("{src:?}")));
            from_point.sort_by_key(|(u, src)| (*u, format!("{src:?}")));
            assert_eq!(from_timeline, from_point, "at {at}\n{ctx}");
        }
        // next_change_after: holders constant until the answer, different at it.
        let at = from.checked_add(SignedDuration::from_secs(rng.random_range(0..span_secs))).unwrap_or(from);
        let users = |t: Timestamp| {
            let mut v: Vec<UserId> = on_call_at(&s, &[], t).into_iter().map(|o| o.user).collect();
            v.sort();
            v
        };
        let next = next_change_after(&s, &[], at);
        let stop = next.unwrap_or(to.max(at));
        for _ in 0..10 {
            let gap = stop.duration_since(at).as_secs();
            if gap <= 0 {
                break;
            }
            let t = at.checked_add(SignedDuration::from_secs(rng.random_range(0..gap))).unwrap_or(at);
            assert_eq!(users(t), users(at), "holders changed at {t} before next change {next:?}\n{ctx}");
        }
        if let Some(n) = next {
            assert_ne!(users(n), users(at), "no change at {n}\n{ctx}");
        }
    }
}

#[test]
fn property_coverage_validation_matches_resolution() {
    // Random coverage sets: when validation passes, resolution at any instant ends at a
    // person nobody covers, through a chain without repeats; when it reports a cycle, the
    // cycle is really in force at the reported instant.
    let mut rng = ChaCha8Rng::seed_from_u64(0xc07e_4a9e);
    let t0 = ts("2026-01-01T00:00:00Z");
    let at_hour = |h: i64| t0.checked_add(SignedDuration::from_hours(h)).unwrap_or(t0);
    for _ in 0..500 {
        let cov: Vec<Coverage> = (0..rng.random_range(1..7))
            .map(|_| {
                let start = rng.random_range(0..48);
                let covered = rng.random_range(1..6);
                let by = (covered + rng.random_range(1..5)) % 6;
                Coverage {
                    covered: user(covered),
                    by: user(by.max(1)),
                    start: at_hour(start),
                    end: at_hour(start + rng.random_range(1..24)),
                }
            })
            .filter(|c| c.covered != c.by)
            .collect();
        match validate_coverage(&cov) {
            Ok(()) => {
                for h in 0..72 {
                    let at = at_hour(h);
                    for u in 1..6 {
                        let r = covering(&cov, user(u), at);
                        assert!(!cov.iter().any(|c| c.covered == r.user && c.start <= at && at < c.end), "{cov:?}");
                        let mut seen = r.covering_for.clone();
                        seen.push(r.user);
                        let n = seen.len();
                        seen.sort();
                        seen.dedup();
                        assert_eq!(seen.len(), n, "repeat in chain");
                    }
                }
            }
            Err(ScheduleError::CoverageCycle { users, at }) => {
                for (i, u) in users.iter().enumerate() {
                    let next = users[(i + 1) % users.len()];
                    assert!(cov.iter().any(|c| c.covered == *u && c.by == next && c.start <= at && at < c.end));
                }
                for u in &users {
                    assert_eq!(covering(&cov, *u, at).user, *u, "a cycle resolves to the addressee");
                }
            }
            Err(ScheduleError::OverlappingCoverage { covered }) => {
                let mine: Vec<&Coverage> = cov.iter().filter(|c| c.covered == covered).collect();
                assert!(
                    mine.iter()
                        .any(|a| mine.iter().any(|b| !std::ptr::eq(*a, *b) && a.start < b.end && b.start < a.end))
                );
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn bundled_tzdb_fallback_is_built_in_and_agrees_with_the_database_in_use() {
    // Machines without tzdata (Debian container images) fall back to jiff's bundled copy
    // (feature `tzdb-bundle-always` in Cargo.toml). Check it is there and gives the same
    // hand-over instants as the database the schedule used.
    let bundled = jiff::tz::TimeZoneDatabase::bundled();
    for (zone, when) in [
        ("Europe/Berlin", civil_at(2026, 3, 29, 8, 0)),
        ("America/New_York", civil_at(2026, 11, 1, 1, 30)),
        ("America/New_York", civil_at(2026, 3, 8, 2, 30)),
        ("Australia/Lord_Howe", civil_at(2026, 10, 4, 2, 15)),
    ] {
        let tz = bundled.get(zone).unwrap_or_else(|e| panic!("{zone} not bundled: {e}"));
        let used = Zone::named(zone).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(local_to_instant(&tz, when), local_to_instant(used.time_zone(), when), "{zone} {when}");
    }
}
