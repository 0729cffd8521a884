//! Tests of the escalation rules: validation bounds, the shipped policies, the timeline
//! (never early, never twice, catch-up after a pause, the end) and who is notified how.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn org() -> OrgId {
    OrgId::from_uuid(uuid::Uuid::from_u128(1))
}

fn user(n: u128) -> UserId {
    UserId::from_uuid(uuid::Uuid::from_u128(1000 + n))
}

fn t0() -> Timestamp {
    Timestamp::from_second(1_780_000_000).unwrap()
}

fn at(secs: i64) -> Timestamp {
    t0().checked_add(SignedDuration::from_secs(secs)).unwrap()
}

fn mins(m: i64) -> i64 {
    m * 60
}

fn critical() -> Policy {
    default_policy(org(), Priority::Critical, &DefaultRoles::default()).unwrap()
}

fn role(key: &str) -> OnCallRole {
    OnCallRole::parse(key).unwrap()
}

fn step(after_secs: i64, targets: Target, channels: ChannelSet, repeat_secs: Option<i64>) -> Step {
    Step {
        after: SignedDuration::from_secs(after_secs),
        targets,
        channels,
        repeat_every: repeat_secs.map(SignedDuration::from_secs),
    }
}

fn p(level: u16, round: u32) -> Point {
    Point { level, round }
}

// --- channels, roles, acknowledgements --------------------------------------------------------

#[test]
fn channels_round_trip_through_names_and_bits() {
    for c in Channel::ALL {
        assert_eq!(Channel::parse(c.as_str()), Some(c));
        assert!(ChannelSet::ALL.contains(c));
        assert!(!ChannelSet::NONE.contains(c));
    }
    assert_eq!(Channel::parse("fax"), None);
    let s = ChannelSet::of(&[Channel::Sms, Channel::InApp]);
    assert_eq!(s.list(), vec![Channel::InApp, Channel::Sms]);
    assert_eq!(ChannelSet::from_bits(s.bits()), Some(s));
    assert_eq!(ChannelSet::from_bits(0b10_0000), None);
    assert_eq!(ChannelSet::ALL.list(), Channel::ALL.to_vec());
    assert_eq!(s.intersect(ChannelSet::of(&[Channel::Sms, Channel::Pager])), ChannelSet::of(&[Channel::Sms]));
    assert!(ChannelSet::NONE.with(Channel::Push).contains(Channel::Push));
    assert_eq!(format!("{s:?}"), r#"{"in_app", "sms"}"#);
}

#[test]
fn on_call_roles_are_role_keys() {
    assert!(OnCallRole::parse("backup_on_call").is_some());
    assert!(OnCallRole::parse("4w_charge_nurse").is_some());
    for bad in ["", "Backup", "backup-on-call", &"x".repeat(65)] {
        assert!(OnCallRole::parse(bad).is_none(), "{bad}");
    }
}

#[test]
fn the_first_taking_on_closes_and_a_decline_does_not() {
    assert!(closes(AckResponse::Accept));
    assert!(closes(AckResponse::Done));
    assert!(closes(AckResponse::CallBack { minutes: 10 }));
    assert!(!closes(AckResponse::Decline));
    for r in [CloseReason::Acknowledged, CloseReason::Recalled, CloseReason::Exhausted] {
        assert_eq!(CloseReason::parse(r.as_str()), Some(r));
    }
    for w in [Why::Message, Why::Escalated] {
        assert_eq!(Why::parse(w.as_str()), Some(w));
    }
    for k in TraceKind::ALL {
        assert_eq!(TraceKind::parse(k.as_str()), Some(k));
    }
}

// --- the shipped policies -------------------------------------------------------------------

#[test]
fn the_shipped_critical_policy_is_the_issues_example() {
    let c = critical();
    validate(&c).unwrap();
    assert_eq!(c.steps.len(), 3);
    assert_eq!(c.steps[0], step(0, Target::Recipients, ChannelSet::ALL, Some(120)));
    assert_eq!(c.steps[1], step(mins(5), Target::OnCall(role(DEFAULT_BACKUP_ROLE)), ChannelSet::ALL, Some(120)));
    assert_eq!(c.steps[2], step(mins(10), Target::OnCall(role(DEFAULT_HEAD_ROLE)), ChannelSet::ALL, Some(120)));
    assert_eq!(c.stop_after, SignedDuration::from_hours(2));
}

#[test]
fn the_shipped_urgent_policy_is_gentler_and_routine_has_none() {
    let roles = DefaultRoles { backup: role("icu_backup"), head: role("4w_charge_nurse") };
    let u = default_policy(org(), Priority::Urgent, &roles).unwrap();
    validate(&u).unwrap();
    let c = default_policy(org(), Priority::Critical, &roles).unwrap();
    // Later steps, fewer channels, rarer repeats, a longer end.
    for (us, cs) in u.steps.iter().zip(&c.steps) {
        assert!(us.after >= cs.after);
        assert!(us.repeat_every.unwrap() >= cs.repeat_every.unwrap());
        assert!(us.channels.list().len() < cs.channels.list().len());
        assert!(us.channels.contains(Channel::InApp));
    }
    assert!(u.stop_after > c.stop_after);
    // The organization's role keys are used.
    assert_eq!(u.steps[1].targets, Target::OnCall(role("icu_backup")));
    assert_eq!(c.steps[2].targets, Target::OnCall(role("4w_charge_nurse")));
    assert_eq!(default_policy(org(), Priority::Routine, &roles), None);
}

// --- validation -------------------------------------------------------------------------------

#[test]
fn every_bound_is_checked() {
    let ok = critical();
    let with = |f: &dyn Fn(&mut Policy)| {
        let mut p = ok.clone();
        f(&mut p);
        validate(&p)
    };
    assert_eq!(with(&|p| p.priority = Priority::Routine), Err(PolicyError::RoutineNotEscalated));
    assert_eq!(with(&|p| p.steps.clear()), Err(PolicyError::NoSteps));
    assert_eq!(
        with(&|p| {
            p.steps = (0..11).map(|i| step(i * 60, Target::Recipients, ChannelSet::ALL, None)).collect();
        }),
        Err(PolicyError::TooManySteps { max: 10 })
    );
    // Exactly ten steps are fine.
    assert_eq!(
        with(&|p| {
            p.steps = (0..10).map(|i| step(i * 60, Target::Recipients, ChannelSet::ALL, None)).collect();
        }),
        Ok(())
    );
    assert_eq!(
        with(&|p| p.steps[1].after = SignedDuration::from_millis(300_500)),
        Err(PolicyError::NotWholeSeconds { step: 2 })
    );
    assert_eq!(
        with(&|p| p.steps[0].repeat_every = Some(SignedDuration::from_millis(45_500))),
        Err(PolicyError::NotWholeSeconds { step: 1 })
    );
    assert_eq!(
        with(&|p| p.steps[0].after = SignedDuration::from_secs(-1)),
        Err(PolicyError::NegativeAfter { step: 1 })
    );
    assert_eq!(with(&|p| p.steps[2].after = p.steps[1].after), Err(PolicyError::NotAscending { step: 3 }));
    assert_eq!(
        with(&|p| p.steps[1].repeat_every = Some(SignedDuration::from_secs(29))),
        Err(PolicyError::RepeatTooShort { step: 2, min_secs: 30 })
    );
    assert_eq!(with(&|p| p.steps[1].repeat_every = Some(SignedDuration::from_secs(30))), Ok(()));
    assert_eq!(with(&|p| p.steps[1].repeat_every = None), Ok(()));
    assert_eq!(with(&|p| p.steps[2].channels = ChannelSet::NONE), Err(PolicyError::NoChannels { step: 3 }));
    assert_eq!(
        with(&|p| p.steps[1].targets = Target::Users(vec![])),
        Err(PolicyError::BadUserCount { step: 2, max: 50 })
    );
    assert_eq!(
        with(&|p| p.steps[1].targets = Target::Users((0..51).map(user).collect())),
        Err(PolicyError::BadUserCount { step: 2, max: 50 })
    );
    assert_eq!(with(&|p| p.steps[1].targets = Target::Users((0..50).map(user).collect())), Ok(()));
    assert_eq!(with(&|p| p.stop_after = p.steps[2].after), Err(PolicyError::StopBeforeLastStep));
    assert_eq!(
        with(&|p| p.stop_after = SignedDuration::from_hours(24) + SignedDuration::from_secs(1)),
        Err(PolicyError::BeyondHorizon { max_hours: 24 })
    );
    assert_eq!(with(&|p| p.stop_after = SignedDuration::from_hours(24)), Ok(()));
    assert_eq!(
        with(&|p| p.stop_after = SignedDuration::from_millis(7_200_001)),
        Err(PolicyError::NotWholeSeconds { step: 3 })
    );
}

// --- the timeline -----------------------------------------------------------------------------

#[test]
fn the_first_notification_fires_at_the_send_and_repeats_every_two_minutes() {
    let c = critical();
    let d = due(&c, t0(), State::default(), t0());
    assert_eq!(d.fire, vec![p(0, 0)]);
    assert_eq!(d.state.last, Some(p(0, 0)));
    assert_eq!(d.next, Some(at(120)));
    assert!(!d.exhausted);
    // One microsecond before the repeat: nothing, and the same next time.
    let early = at(120).checked_sub(SignedDuration::from_micros(1)).unwrap();
    let d = due(&c, t0(), d.state, early);
    assert_eq!(d.fire, vec![]);
    assert_eq!(d.next, Some(at(120)));
    let d = due(&c, t0(), d.state, at(120));
    assert_eq!(d.fire, vec![p(0, 1)]);
    assert_eq!(d.next, Some(at(240)));
    // Firing again at the same instant fires nothing: a point is fired once.
    let again = due(&c, t0(), d.state, at(120));
    assert_eq!(again.fire, vec![]);
    assert_eq!(again.state, d.state);
}

#[test]
fn the_backup_is_reached_at_five_minutes_and_the_head_at_ten() {
    let c = critical();
    let s = State { last: Some(p(0, 2)) };
    // The repeat at 4 minutes is followed by the step at 5, not a repeat at 6.
    assert_eq!(due(&c, t0(), s, at(mins(4) + 30)).next, Some(at(mins(5))));
    let d = due(&c, t0(), s, at(mins(5)));
    assert_eq!(d.fire, vec![p(1, 0)]);
    assert_eq!(d.next, Some(at(mins(7))));
    let d = due(&c, t0(), State { last: Some(p(1, 2)) }, at(mins(10)));
    assert_eq!(d.fire, vec![p(2, 0)]);
    assert_eq!(d.next, Some(at(mins(12))));
}

#[test]
fn a_pause_catches_up_every_step_once_without_a_burst_of_repeats() {
    let c = critical();
    // Down from 1 minute to 11: the backup and the head are each reached once, now.
    let d = due(&c, t0(), State { last: Some(p(0, 0)) }, at(mins(11)));
    assert_eq!(d.fire, vec![p(1, 0), p(2, 0)]);
    assert_eq!(d.next, Some(at(mins(12))));
    // Down for 3 minutes within the first step: one repeat, not two.
    let d = due(&c, t0(), State { last: Some(p(0, 0)) }, at(mins(4) + 59));
    assert_eq!(d.fire, vec![p(0, 2)]);
    assert_eq!(d.next, Some(at(mins(5))));
    // Never fired at all (the server was down at the send): everyone, once.
    let d = due(&c, t0(), State::default(), at(mins(13)));
    assert_eq!(d.fire, vec![p(0, 0), p(1, 0), p(2, 1)]);
}

#[test]
fn the_escalation_ends_at_stop_after_and_a_long_outage_still_reaches_everyone_once() {
    let c = critical();
    let stop = at(2 * 3600);
    // The last repeat before the end: (120 - 10) / 2 = 55 rounds after the first, so round 54
    // is the last that starts strictly before the end.
    let last = State { last: Some(p(2, 54)) };
    let before = due(&c, t0(), last, stop.checked_sub(SignedDuration::from_micros(1)).unwrap());
    assert_eq!((before.fire.clone(), before.next, before.exhausted), (vec![], Some(stop), false));
    let end = due(&c, t0(), last, stop);
    assert_eq!((end.fire, end.next, end.exhausted), (vec![], None, true));
    let d = due(&c, t0(), State::default(), at(3 * 3600));
    assert_eq!(d.fire, vec![p(0, 0), p(1, 0), p(2, 54)]);
    assert!(d.exhausted);
    assert_eq!(d.next, None);
}

#[test]
fn before_the_first_step_nothing_fires() {
    let mut c = critical();
    c.steps[0].after = SignedDuration::from_secs(30);
    let d = due(&c, t0(), State::default(), at(29));
    assert_eq!((d.fire, d.next, d.state), (vec![], Some(at(30)), State::default()));
}

#[test]
fn steps_without_repeats_wait_for_the_next_step_or_the_end() {
    let policy = Policy {
        org: org(),
        priority: Priority::Urgent,
        steps: vec![
            step(0, Target::Recipients, ChannelSet::ALL, None),
            step(600, Target::Users(vec![user(9)]), ChannelSet::ALL, None),
        ],
        stop_after: SignedDuration::from_secs(900),
    };
    let d = due(&policy, t0(), State::default(), at(1));
    assert_eq!((d.fire.clone(), d.next), (vec![p(0, 0)], Some(at(600))));
    let d = due(&policy, t0(), d.state, at(600));
    assert_eq!((d.fire.clone(), d.next), (vec![p(1, 0)], Some(at(900))));
    let d = due(&policy, t0(), d.state, at(900));
    assert_eq!((d.fire, d.next, d.exhausted), (vec![], None, true));
}

#[test]
fn a_changed_policy_never_refires_what_was_fired() {
    // The state says step 3 round 5 was fired; the new policy has two steps.
    let mut c = critical();
    c.steps.truncate(2);
    let d = due(&c, t0(), State { last: Some(p(2, 5)) }, at(mins(30)));
    assert_eq!(d.fire, vec![]);
    assert_eq!(d.state.last, Some(p(2, 5)));
}

/// Every point of a policy's timeline with its time, by brute force.
fn timeline(policy: &Policy) -> Vec<(Point, Timestamp)> {
    let stop = t0().checked_add(policy.stop_after).unwrap();
    let mut out = Vec::new();
    for (i, s) in policy.steps.iter().enumerate() {
        let start = t0().checked_add(s.after).unwrap();
        let end = policy.steps.get(i + 1).map(|n| t0().checked_add(n.after).unwrap()).unwrap_or(stop);
        let mut k = 0u32;
        loop {
            let t = match s.repeat_every {
                Some(r) => start.checked_add(r * i32::try_from(k).unwrap()).unwrap(),
                None if k == 0 => start,
                None => break,
            };
            if t >= end {
                break;
            }
            out.push((p(u16::try_from(i).unwrap(), k), t));
            k += 1;
        }
    }
    out
}

fn random_policy(rng: &mut ChaCha8Rng) -> Policy {
    let n = rng.random_range(1..=4);
    let mut after = rng.random_range(0..120);
    let mut steps = Vec::new();
    for _ in 0..n {
        let repeat = rng.random_bool(0.7).then(|| rng.random_range(30..400));
        steps.push(step(after, Target::Recipients, ChannelSet::ALL, repeat));
        after += rng.random_range(1..900);
    }
    let stop_after = SignedDuration::from_secs(after + rng.random_range(0..600));
    let policy = Policy { org: org(), priority: Priority::Critical, steps, stop_after };
    validate(&policy).unwrap();
    policy
}

/// Firing exactly at each `next` fires every point of the timeline once, in order, at its time;
/// and whatever the instants the worker looks at, nothing fires early or twice.
#[test]
fn randomized_timelines_fire_every_point_once_and_never_early() {
    let seed: u64 = std::env::var("MEDHUB_ESCALATION_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for case in 0..300 {
        let policy = random_policy(&mut rng);
        let expected = timeline(&policy);
        let stop = t0().checked_add(policy.stop_after).unwrap();
        // On time: each firing at the previous `next`.
        let mut state = State::default();
        let mut now = t0();
        let mut fired = Vec::new();
        loop {
            let d = due(&policy, t0(), state, now);
            fired.extend(d.fire.iter().map(|pt| (*pt, now)));
            state = d.state;
            match d.next {
                Some(n) => {
                    assert!(n > now, "seed {seed} case {case}: next {n} not after {now}");
                    now = n;
                }
                None => {
                    assert!(d.exhausted && now >= stop, "seed {seed} case {case}");
                    break;
                }
            }
        }
        assert_eq!(fired, expected, "seed {seed} case {case}: {policy:?}");

        // At random instants (a worker that polls late, an outage): never early, never twice,
        // in order, and every step's first round is reached before the end.
        let mut state = State::default();
        let mut now = t0();
        let mut seen: BTreeSet<Point> = BTreeSet::new();
        let mut previous: Option<Point> = None;
        loop {
            let d = due(&policy, t0(), state, now);
            for pt in &d.fire {
                let when = expected.iter().find(|(q, _)| q == pt).map(|(_, t)| *t);
                let when = when.unwrap_or_else(|| panic!("seed {seed} case {case}: {pt:?} is not a point"));
                assert!(when <= now, "seed {seed} case {case}: {pt:?} due {when} fired at {now}");
                assert!(seen.insert(*pt), "seed {seed} case {case}: {pt:?} fired twice");
                assert!(previous.is_none_or(|q| *pt > q), "seed {seed} case {case}: out of order");
                previous = Some(*pt);
            }
            state = d.state;
            if d.exhausted {
                break;
            }
            now = now.checked_add(SignedDuration::from_secs(rng.random_range(1..700))).unwrap();
        }
        for level in 0..policy.steps.len() {
            let level = u16::try_from(level).unwrap();
            assert!(seen.iter().any(|q| q.level == level), "seed {seed} case {case}: step {level} never reached");
        }
    }
}

// --- who is notified how ----------------------------------------------------------------------

fn facts() -> Facts {
    Facts {
        sender: user(0),
        recipients: vec![user(1), user(2), user(3)],
        declined: BTreeSet::from([user(3)]),
        holders: BTreeMap::from([(role(DEFAULT_BACKUP_ROLE), vec![user(7), user(1)])]),
    }
}

fn everyone(channels: ChannelSet) -> BTreeMap<UserId, ChannelSet> {
    (0..10).map(|n| (user(n), channels)).collect()
}

#[test]
fn recipients_are_notified_on_every_channel_but_not_the_sender_or_who_declined() {
    let c = critical();
    let entries = notifications(&c, &[p(0, 0)], &facts(), &everyone(ChannelSet::ALL));
    let mut expected = Vec::new();
    for u in [user(1), user(2)] {
        for channel in Channel::ALL {
            expected.push(Entry::Notify { point: p(0, 0), user: u, channel, why: Why::Message });
        }
    }
    assert_eq!(entries, expected);
}

#[test]
fn an_escalation_names_whom_and_a_repeat_does_not() {
    let c = critical();
    let reach = everyone(ChannelSet::of(&[Channel::InApp, Channel::Sms]));
    let entries = notifications(&c, &[p(1, 0)], &facts(), &reach);
    let notify = |u, channel, why| Entry::Notify { point: p(1, 0), user: u, channel, why };
    assert_eq!(
        entries,
        vec![
            Entry::Escalated { point: p(1, 0), user: user(7) },
            notify(user(7), Channel::InApp, Why::Escalated),
            notify(user(7), Channel::Sms, Why::Escalated),
            // A recipient who is also on call is escalated to, for the message itself.
            Entry::Escalated { point: p(1, 0), user: user(1) },
            notify(user(1), Channel::InApp, Why::Message),
            notify(user(1), Channel::Sms, Why::Message),
        ]
    );
    let repeat = notifications(&c, &[p(1, 3)], &facts(), &reach);
    assert!(repeat.iter().all(|e| matches!(e, Entry::Notify { .. })), "{repeat:?}");
    assert_eq!(repeat.len(), 4);
}

#[test]
fn a_catch_up_notifies_each_person_once_per_channel() {
    let c = critical();
    let entries = notifications(&c, &[p(0, 0), p(1, 0)], &facts(), &everyone(ChannelSet::of(&[Channel::Push])));
    let pushes: Vec<(Point, UserId)> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Notify { point, user, .. } => Some((*point, *user)),
            _ => None,
        })
        .collect();
    assert_eq!(pushes, vec![(p(0, 0), user(1)), (p(0, 0), user(2)), (p(1, 0), user(7))]);
}

#[test]
fn nobody_to_reach_is_recorded_not_skipped() {
    let c = critical();
    // The head's role has no holder.
    assert_eq!(
        notifications(&c, &[p(2, 0)], &facts(), &everyone(ChannelSet::ALL)),
        vec![Entry::NoTarget { point: p(2, 0) }]
    );
    // Holders who are not active users of the organization are not notified.
    let reach: BTreeMap<UserId, ChannelSet> = [(user(2), ChannelSet::ALL)].into();
    assert_eq!(notifications(&c, &[p(1, 0)], &facts(), &reach), vec![Entry::NoTarget { point: p(1, 0) }]);
    // Someone with none of the step's channels.
    let mut urgent = default_policy(org(), Priority::Urgent, &DefaultRoles::default()).unwrap();
    urgent.steps[0].channels = ChannelSet::of(&[Channel::Pager]);
    let reach: BTreeMap<UserId, ChannelSet> =
        [(user(1), ChannelSet::of(&[Channel::InApp])), (user(2), ChannelSet::of(&[Channel::Pager, Channel::InApp]))]
            .into();
    assert_eq!(
        notifications(&urgent, &[p(0, 0)], &facts(), &reach),
        vec![
            Entry::Unreachable { point: p(0, 0), user: user(1) },
            Entry::Notify { point: p(0, 0), user: user(2), channel: Channel::Pager, why: Why::Message },
        ]
    );
}

#[test]
fn named_users_are_deduplicated_and_the_sender_never_notified() {
    let mut c = critical();
    c.steps[1].targets = Target::Users(vec![user(5), user(0), user(5), user(6)]);
    let who = audience(&c, &[p(1, 0)], &facts());
    assert_eq!(who, vec![(p(1, 0), vec![user(5), user(6)])]);
    // A point beyond a shortened policy targets nobody and is skipped.
    assert_eq!(audience(&c, &[p(9, 0)], &facts()), vec![]);
}

#[test]
fn a_step_notifies_at_most_its_bound_and_says_how_many_were_left_out() {
    let c = critical();
    let mut f = facts();
    f.recipients = (1..=250).map(user).collect();
    f.declined.clear();
    let reach: BTreeMap<UserId, ChannelSet> = (1..=250).map(|n| (user(n), ChannelSet::of(&[Channel::InApp]))).collect();
    let entries = notifications(&c, &[p(0, 0)], &f, &reach);
    assert_eq!(entries[0], Entry::Limited { point: p(0, 0), left_out: 50 });
    let notified: Vec<UserId> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Notify { user, .. } => Some(*user),
            _ => None,
        })
        .collect();
    assert_eq!(notified, (1..=200).map(user).collect::<Vec<_>>());
}
