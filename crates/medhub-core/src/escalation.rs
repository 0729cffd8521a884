//! Escalation until acknowledged (docs/clinical.md, "Escalation until acknowledged"): the
//! policies, their bounds, and the planner that says what is due.
//!
//! A [`Policy`] belongs to one organization and one priority (urgent or critical). It is a list
//! of [`Step`]s, each starting a fixed time after the message was sent: who is notified
//! ([`Target`]), on which channels ([`ChannelSet`]), and how often again until the next step
//! starts or someone acknowledges. The escalation ends unacknowledged at `stop_after`.
//!
//! The planner is two pure functions the store runs inside the transaction that fires a timer:
//! [`due`] says which points of the timeline have come (and when the next one is), and
//! [`notifications`] turns them into who is notified on which channel, given the facts the store
//! loaded (recipients, declines, on-call holders, who can be reached how). Nothing here reads a
//! clock: `now` is passed in, so a point is never fired before its time.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use crate::clock::from_micros;
use crate::ids::{OrgId, UserId};
use crate::model::{AckResponse, Message, Priority};

/// Most steps in a policy: the recipient, a backup, a head of department and a few more is the
/// real case; a longer chain is a configuration mistake.
pub const MAX_STEPS: usize = 10;
/// The shortest repeat interval. More often is noise that staff learn to silence, and every
/// repeat costs an SMS or a page.
pub const MIN_REPEAT: SignedDuration = SignedDuration::from_secs(30);
/// The longest an escalation may run (steps and `stop_after`). A message unacknowledged for a
/// day needs a person, not a timer; and it bounds the timers and deliveries one message makes.
pub const MAX_HORIZON: SignedDuration = SignedDuration::from_hours(24);
/// Most named users in one step: a named list is for a few people; a group is a conversation.
pub const MAX_NAMED_USERS: usize = 50;
/// Most people notified for one step of one message. A critical message to a large channel
/// would otherwise page hundreds of people every two minutes; the rest are not notified and
/// the trace says how many (`limited`).
pub const MAX_NOTIFIED_PER_STEP: usize = 200;

/// The shipped on-call role key of the backup (the second step of the default policies).
pub const DEFAULT_BACKUP_ROLE: &str = "backup_on_call";
/// The shipped on-call role key of the last step (the department head; an organization may name
/// its charge nurse's role instead).
pub const DEFAULT_HEAD_ROLE: &str = "department_head";

/// A way to reach someone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// The live connection (web client, app): an alert on top of the message itself.
    InApp,
    /// Web Push to a browser or phone.
    Push,
    Email,
    Sms,
    Pager,
}

impl Channel {
    pub const ALL: [Channel; 5] = [Channel::InApp, Channel::Push, Channel::Email, Channel::Sms, Channel::Pager];

    /// The stable name (policies, the delivery trace, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::InApp => "in_app",
            Channel::Push => "push",
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Pager => "pager",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of channels.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ChannelSet(u8);

impl ChannelSet {
    pub const NONE: ChannelSet = ChannelSet(0);
    /// Every channel at once.
    pub const ALL: ChannelSet = ChannelSet(0b1_1111);

    pub fn of(channels: &[Channel]) -> Self {
        ChannelSet(channels.iter().fold(0, |acc, c| acc | c.bit()))
    }

    pub fn contains(self, c: Channel) -> bool {
        self.0 & c.bit() != 0
    }

    pub fn with(self, c: Channel) -> Self {
        ChannelSet(self.0 | c.bit())
    }

    pub fn intersect(self, other: ChannelSet) -> Self {
        ChannelSet(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The channels, in [`Channel::ALL`] order.
    pub fn list(self) -> Vec<Channel> {
        Channel::ALL.into_iter().filter(|c| self.contains(*c)).collect()
    }

    /// The stored form: one bit per channel, in [`Channel::ALL`] order.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The inverse of [`bits`](Self::bits); unknown bits are refused.
    pub fn from_bits(bits: u8) -> Option<Self> {
        (bits & !Self::ALL.0 == 0).then_some(ChannelSet(bits))
    }
}

impl std::fmt::Debug for ChannelSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.list().iter().map(|c| c.as_str())).finish()
    }
}

/// An on-call role of the organization ("backup_on_call", "4w_charge_nurse"): whoever holds it
/// at the moment a step fires is notified. `[a-z0-9_]`, 1-64 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OnCallRole(String);

impl OnCallRole {
    pub fn parse(key: &str) -> Option<Self> {
        crate::authz::valid_role_key(key).then(|| OnCallRole(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who a step notifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The message's recipients: the members when it was sent (still members), the sender
    /// excluded, and without those who declined it.
    Recipients,
    /// These users of the organization.
    Users(Vec<UserId>),
    /// Whoever holds this on-call role when the step fires.
    OnCall(OnCallRole),
}

impl Target {
    /// The stored kind.
    pub fn kind_str(&self) -> &'static str {
        match self {
            Target::Recipients => "recipients",
            Target::Users(_) => "users",
            Target::OnCall(_) => "on_call",
        }
    }
}

/// One step of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// When the step starts, counted from the message's send.
    pub after: SignedDuration,
    pub targets: Target,
    pub channels: ChannelSet,
    /// Notify the step's targets again this often until the next step starts (or, for the last
    /// step, until `stop_after`), unless acknowledged first.
    pub repeat_every: Option<SignedDuration>,
}

/// An organization's escalation policy for one priority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub org: OrgId,
    pub priority: Priority,
    pub steps: Vec<Step>,
    /// The escalation ends unacknowledged this long after the send (the trace says
    /// `exhausted`).
    pub stop_after: SignedDuration,
}

/// Why a policy is refused. Each variant is one cause; steps are numbered from 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("routine messages are not escalated; policies are for urgent and critical messages")]
    RoutineNotEscalated,
    #[error("a policy needs at least one step")]
    NoSteps,
    #[error("a policy has at most {max} steps")]
    TooManySteps { max: usize },
    #[error("step {step}: times are whole seconds")]
    NotWholeSeconds { step: usize },
    #[error("step {step}: `after` must not be negative")]
    NegativeAfter { step: usize },
    #[error("step {step}: steps start strictly one after the other")]
    NotAscending { step: usize },
    #[error("step {step}: a repeat must be at least {min_secs} seconds")]
    RepeatTooShort { step: usize, min_secs: i64 },
    #[error("step {step}: choose at least one channel")]
    NoChannels { step: usize },
    #[error("step {step}: name between 1 and {max} users")]
    BadUserCount { step: usize, max: usize },
    #[error("`stop_after` must come after the last step starts")]
    StopBeforeLastStep,
    #[error("an escalation runs for at most {max_hours} hours")]
    BeyondHorizon { max_hours: i64 },
}

/// Checks a policy against the bounds above.
pub fn validate(policy: &Policy) -> Result<(), PolicyError> {
    if policy.priority == Priority::Routine {
        return Err(PolicyError::RoutineNotEscalated);
    }
    if policy.steps.is_empty() {
        return Err(PolicyError::NoSteps);
    }
    if policy.steps.len() > MAX_STEPS {
        return Err(PolicyError::TooManySteps { max: MAX_STEPS });
    }
    let whole = |d: SignedDuration| d.subsec_nanos() == 0;
    let mut previous: Option<SignedDuration> = None;
    for (i, s) in policy.steps.iter().enumerate() {
        let step = i + 1;
        if !whole(s.after) || !s.repeat_every.is_none_or(whole) {
            return Err(PolicyError::NotWholeSeconds { step });
        }
        if s.after.is_negative() {
            return Err(PolicyError::NegativeAfter { step });
        }
        if previous.is_some_and(|p| s.after <= p) {
            return Err(PolicyError::NotAscending { step });
        }
        previous = Some(s.after);
        if s.repeat_every.is_some_and(|r| r < MIN_REPEAT) {
            return Err(PolicyError::RepeatTooShort { step, min_secs: MIN_REPEAT.as_secs() });
        }
        if s.channels.is_empty() {
            return Err(PolicyError::NoChannels { step });
        }
        if let Target::Users(users) = &s.targets
            && (users.is_empty() || users.len() > MAX_NAMED_USERS)
        {
            return Err(PolicyError::BadUserCount { step, max: MAX_NAMED_USERS });
        }
    }
    if !whole(policy.stop_after) {
        return Err(PolicyError::NotWholeSeconds { step: policy.steps.len() });
    }
    if policy.stop_after > MAX_HORIZON {
        return Err(PolicyError::BeyondHorizon { max_hours: MAX_HORIZON.as_hours() });
    }
    if previous.is_some_and(|last| policy.stop_after <= last) {
        return Err(PolicyError::StopBeforeLastStep);
    }
    Ok(())
}

/// The on-call roles an organization's shipped policies escalate to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultRoles {
    /// The second step: the backup on call.
    pub backup: OnCallRole,
    /// The third step: the department head (or the charge nurse).
    pub head: OnCallRole,
}

impl Default for DefaultRoles {
    fn default() -> Self {
        DefaultRoles {
            backup: OnCallRole(DEFAULT_BACKUP_ROLE.to_owned()),
            head: OnCallRole(DEFAULT_HEAD_ROLE.to_owned()),
        }
    }
}

/// The policy an organization has until it sets its own (`None` for routine messages).
///
/// - Critical: the recipients on every channel at once, again every 2 minutes; the backup on
///   call at 5 minutes and the department head at 10, on every channel, every 2 minutes;
///   ends unacknowledged after 2 hours.
/// - Urgent: the recipients in the app and by push, again every 5 minutes; the backup on call
///   at 15 minutes (adding SMS), the department head at 30 (app, push, e-mail, every 10
///   minutes); ends unacknowledged after 4 hours.
pub fn default_policy(org: OrgId, priority: Priority, roles: &DefaultRoles) -> Option<Policy> {
    use Channel::*;
    let min = |m: i64| SignedDuration::from_mins(m);
    let step = |after: i64, targets: Target, channels: ChannelSet, repeat: i64| Step {
        after: min(after),
        targets,
        channels,
        repeat_every: Some(min(repeat)),
    };
    let (steps, stop_after) = match priority {
        Priority::Routine => return None,
        Priority::Critical => (
            vec![
                step(0, Target::Recipients, ChannelSet::ALL, 2),
                step(5, Target::OnCall(roles.backup.clone()), ChannelSet::ALL, 2),
                step(10, Target::OnCall(roles.head.clone()), ChannelSet::ALL, 2),
            ],
            SignedDuration::from_hours(2),
        ),
        Priority::Urgent => (
            vec![
                step(0, Target::Recipients, ChannelSet::of(&[InApp, Push]), 5),
                step(15, Target::OnCall(roles.backup.clone()), ChannelSet::of(&[InApp, Push, Sms]), 5),
                step(30, Target::OnCall(roles.head.clone()), ChannelSet::of(&[InApp, Push, Email]), 10),
            ],
            SignedDuration::from_hours(4),
        ),
    };
    Some(Policy { org, priority, steps, stop_after })
}

/// Whether a message is escalated until acknowledged: urgent and critical ones are.
pub fn escalates(message: &Message) -> bool {
    message.priority.requires_ack()
}

/// Whether an acknowledgement ends the escalation. "Accept", "done" and "call back in N
/// minutes" take the message on: the first of them, by any recipient, ends it for everyone (for
/// a message to a group or role, one person answering is what was asked). "Decline" does not:
/// the escalation goes on, and the one who declined is not notified again.
pub fn closes(response: AckResponse) -> bool {
    !matches!(response, AckResponse::Decline)
}

/// A point of an escalation's timeline: round `round` (0 for the first notification, then one
/// per repeat) of step `level` (0 for the first step).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Point {
    pub level: u16,
    pub round: u32,
}

/// Where an escalation stands: the last point it fired, if any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub last: Option<Point>,
}

/// What [`due`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// Points to fire now, in order: after a pause (an outage), the first round of every step
    /// that started meanwhile and was never notified, then the latest due point. Repeats missed
    /// in a pause are not sent in a burst.
    pub fire: Vec<Point>,
    /// The state after firing them.
    pub state: State,
    /// When the next timer is due: the next point, or the end (`stop_after`); `None` once ended.
    pub next: Option<Timestamp>,
    /// The escalation ends now, unacknowledged.
    pub exhausted: bool,
}

/// The points due at `now` for an escalation of a message sent at `sent_at`. Never a point
/// whose time is after `now`.
pub fn due(policy: &Policy, sent_at: Timestamp, state: State, now: Timestamp) -> Due {
    let us = |d: SignedDuration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    let sent = sent_at.as_microsecond();
    let stop = sent.saturating_add(us(policy.stop_after));
    let now_us = now.as_microsecond();
    let starts: Vec<i64> = policy.steps.iter().map(|s| sent.saturating_add(us(s.after))).collect();
    // Points strictly before the stop only: at the stop itself the escalation ends.
    let cut = now_us.min(stop.saturating_sub(1));
    let current = (0..policy.steps.len()).rev().find(|i| starts[*i] <= cut).map(|i| {
        let round = match policy.steps[i].repeat_every.map(us) {
            Some(r) if r > 0 => u32::try_from((cut - starts[i]) / r).unwrap_or(u32::MAX),
            _ => 0,
        };
        Point { level: u16::try_from(i).unwrap_or(u16::MAX), round }
    });
    let mut fire = Vec::new();
    let mut last = state.last;
    if let Some(cur) = current
        && last.is_none_or(|l| cur > l)
    {
        let first_new = last.map_or(0, |l| l.level.saturating_add(1));
        fire.extend((first_new..cur.level).map(|level| Point { level, round: 0 }));
        fire.push(cur);
        last = Some(cur);
    }
    let exhausted = now_us >= stop;
    let next = if exhausted {
        None
    } else {
        let at = match current {
            None => starts.first().copied().unwrap_or(stop),
            Some(Point { level, round }) => {
                let i = usize::from(level);
                let end = starts.get(i + 1).copied().unwrap_or(stop).min(stop);
                let again = policy.steps[i]
                    .repeat_every
                    .map(us)
                    .filter(|r| *r > 0)
                    .map(|r| starts[i].saturating_add(r.saturating_mul(i64::from(round).saturating_add(1))));
                match again {
                    Some(t) if t < end => t,
                    _ => end,
                }
            }
        };
        Some(from_micros(at))
    };
    Due { fire, state: State { last }, next, exhausted }
}

/// What the store loads for [`notifications`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub sender: UserId,
    /// The message's recipients: members when it was sent who are still members, the sender
    /// excluded.
    pub recipients: Vec<UserId>,
    /// Recipients whose latest answer is "decline".
    pub declined: BTreeSet<UserId>,
    /// Who holds each on-call role of the policy now, in the directory's order.
    pub holders: BTreeMap<OnCallRole, Vec<UserId>>,
}

/// Why someone is notified: the message itself (a recipient), or an escalation to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Why {
    Message,
    Escalated,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Message => "new_message",
            Why::Escalated => "escalated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Why::Message, Why::Escalated].into_iter().find(|w| w.as_str() == s)
    }
}

/// One thing a firing does, in the order it happens; each is also a row of the delivery trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The step reached a new person (its first round, from the second step on).
    Escalated { point: Point, user: UserId },
    /// Notify `user` on `channel` (a delivery job).
    Notify { point: Point, user: UserId, channel: Channel, why: Why },
    /// The step's targets resolved to nobody (no holder of the role, no active user named).
    NoTarget { point: Point },
    /// `user` has none of the step's channels (no contact point, or the channels are off).
    Unreachable { point: Point, user: UserId },
    /// More than [`MAX_NOTIFIED_PER_STEP`] people: this many were not notified.
    Limited { point: Point, left_out: u32 },
}

/// The users each fired point targets, before checking who can be reached: whom the store must
/// look up. The sender is never among them, nor a recipient who declined.
pub fn audience(policy: &Policy, fire: &[Point], facts: &Facts) -> Vec<(Point, Vec<UserId>)> {
    fire.iter()
        .filter_map(|p| policy.steps.get(usize::from(p.level)).map(|s| (*p, s)))
        .map(|(p, step)| {
            let raw: Vec<UserId> = match &step.targets {
                Target::Recipients => facts.recipients.clone(),
                Target::Users(users) => users.clone(),
                Target::OnCall(role) => facts.holders.get(role).cloned().unwrap_or_default(),
            };
            let mut seen = BTreeSet::new();
            let users = raw
                .into_iter()
                .filter(|u| *u != facts.sender && !facts.declined.contains(u) && seen.insert(*u))
                .collect();
            (p, users)
        })
        .collect()
}

/// Who is notified on which channel for the fired points. `reachable` holds the users who may be
/// notified at all (active users of the organization) with the channels each can be reached on;
/// anyone else is left out. A person reached by two points of one firing is notified once per
/// channel.
pub fn notifications(
    policy: &Policy,
    fire: &[Point],
    facts: &Facts,
    reachable: &BTreeMap<UserId, ChannelSet>,
) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut done: BTreeSet<(UserId, Channel)> = BTreeSet::new();
    for (point, users) in audience(policy, fire, facts) {
        let step = &policy.steps[usize::from(point.level)];
        let users: Vec<UserId> = users.into_iter().filter(|u| reachable.contains_key(u)).collect();
        if users.is_empty() {
            out.push(Entry::NoTarget { point });
            continue;
        }
        if users.len() > MAX_NOTIFIED_PER_STEP {
            let left_out = u32::try_from(users.len() - MAX_NOTIFIED_PER_STEP).unwrap_or(u32::MAX);
            out.push(Entry::Limited { point, left_out });
        }
        for user in users.into_iter().take(MAX_NOTIFIED_PER_STEP) {
            let channels = step.channels.intersect(reachable.get(&user).copied().unwrap_or_default());
            if point.level > 0 && point.round == 0 {
                out.push(Entry::Escalated { point, user });
            }
            if channels.is_empty() {
                out.push(Entry::Unreachable { point, user });
                continue;
            }
            let why = if facts.recipients.contains(&user) { Why::Message } else { Why::Escalated };
            for channel in channels.list() {
                if done.insert((user, channel)) {
                    out.push(Entry::Notify { point, user, channel, why });
                }
            }
        }
    }
    out
}

/// How an escalation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// A recipient took it on (see [`closes`]).
    Acknowledged,
    /// The sender (or an owner) recalled the message.
    Recalled,
    /// `stop_after` passed without an acknowledgement.
    Exhausted,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Acknowledged => "acknowledged",
            CloseReason::Recalled => "recalled",
            CloseReason::Exhausted => "exhausted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [CloseReason::Acknowledged, CloseReason::Recalled, CloseReason::Exhausted].into_iter().find(|r| r.as_str() == s)
    }
}

/// What a row of the delivery trace records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TraceKind {
    /// A notification to a person on a channel was queued (a firing).
    Notified,
    /// The escalation reached a new person (a step's first round, from the second step on).
    Escalated,
    /// A step's targets resolved to nobody.
    NoTarget,
    /// A person has none of the step's channels.
    Unreachable,
    /// More people than a step notifies; `detail` is how many were left out.
    Limited,
    /// The escalation ended unacknowledged.
    Exhausted,
    /// A channel accepted a notification (SMTP, the push service, the SMS provider; in the app,
    /// a live connection).
    Sent,
    /// An attempt failed and will be retried; `detail` is the reason.
    Retrying,
    /// The notification was given up; `detail` is the reason.
    Failed,
    /// The notification was not sent because the escalation had ended (acknowledged first).
    Cancelled,
}

impl TraceKind {
    pub const ALL: [TraceKind; 10] = [
        TraceKind::Notified,
        TraceKind::Escalated,
        TraceKind::NoTarget,
        TraceKind::Unreachable,
        TraceKind::Limited,
        TraceKind::Exhausted,
        TraceKind::Sent,
        TraceKind::Retrying,
        TraceKind::Failed,
        TraceKind::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TraceKind::Notified => "notified",
            TraceKind::Escalated => "escalated",
            TraceKind::NoTarget => "no_target",
            TraceKind::Unreachable => "unreachable",
            TraceKind::Limited => "limited",
            TraceKind::Exhausted => "exhausted",
            TraceKind::Sent => "sent",
            TraceKind::Retrying => "retrying",
            TraceKind::Failed => "failed",
            TraceKind::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[cfg(test)]
mod tests;
