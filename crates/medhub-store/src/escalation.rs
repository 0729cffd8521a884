//! Storage of escalation until acknowledged (docs/clinical.md): policies, escalations and their
//! durable timers, the delivery trace, the notification outbox, and users' contact points.
//! Both backends implement [`EscalationStore`]; the rules are the pure functions of
//! `medhub_core::escalation`, which the store runs inside the transaction that fires a timer.
//!
//! **Invariant: a timer fires at most once, never before it is due.** Firing claims due timers
//! (`due_at <= now`, not fired, not cancelled) and writes their effects (the next timer, the
//! delivery jobs, the trace, the audit record, the escalation's new state) in one transaction;
//! PostgreSQL claims with `FOR UPDATE SKIP LOCKED`, so concurrent workers on several nodes take
//! disjoint timers, and SQLite's single writer serialises them. A crash before the commit leaves
//! the timer due; after it, fired.
//!
//! **Invariant: nothing is notified after an acknowledgement commits.** The message's own
//! batch transaction creates the escalation and its first timer, and an acknowledgement that
//! takes the message on (`escalation::closes`) closes it in the acknowledgement's transaction.
//! Firing locks the escalation's row and re-reads it, so a firing that commits after the
//! acknowledgement sees it closed and does nothing; a worker claiming a delivery job of a closed
//! escalation cancels it instead of sending.

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::AuditRecord;
use medhub_core::escalation::{
    self, Channel, ChannelSet, CloseReason, Due, Entry, Facts, OnCallRole, Point, Policy, State, Step, Target,
    TraceKind, Why,
};
use medhub_core::model::Priority;
use medhub_core::{ConversationId, DeliveryId, MessageId, OrgId, PushSubscriptionId, TimerId, UserId};

use crate::StoreError;

/// A policy an organization set, with who set it and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEscalationPolicy {
    pub policy: Policy,
    pub set_by: Option<UserId>,
    pub set_at: Timestamp,
}

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// The next point of an escalation; `ref_id` is the message.
    Escalation,
}

impl TimerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::Escalation => "escalation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        (s == "escalation").then_some(TimerKind::Escalation)
    }
}

/// A timer that was due when read (not claimed: firing claims it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueTimer {
    pub id: TimerId,
    pub kind: TimerKind,
    /// The escalation's message.
    pub message: MessageId,
    pub org: OrgId,
    pub priority: Priority,
    pub due_at: Timestamp,
}

/// What firing one escalation's timer needs besides what its transaction reads: the policy in
/// force and who holds its on-call roles now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FireInput {
    pub timer: TimerId,
    pub policy: Policy,
    pub holders: BTreeMap<OnCallRole, Vec<UserId>>,
}

/// What one fired timer did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fired {
    pub timer: TimerId,
    pub message: MessageId,
    /// Delivery jobs queued.
    pub jobs: u32,
    /// The escalation ended with this firing (or was found ended: the timer was cancelled).
    pub closed: Option<CloseReason>,
    /// The timer was cancelled, not fired: its escalation had ended before.
    pub cancelled: bool,
}

/// An escalation as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escalation {
    pub message: MessageId,
    pub org: OrgId,
    pub conversation: ConversationId,
    pub sender: UserId,
    pub priority: Priority,
    pub sent_at: Timestamp,
    pub state: State,
    pub closed: Option<Closed>,
}

/// How and when an escalation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    pub at: Timestamp,
    pub reason: CloseReason,
    /// Who acknowledged.
    pub by: Option<UserId>,
}

/// One row of the delivery trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceRow {
    pub at: Timestamp,
    pub kind: TraceKind,
    pub level: Option<u16>,
    pub round: Option<u32>,
    pub user: Option<UserId>,
    pub channel: Option<Channel>,
    /// A fixed reason or a count: never an address, a number or text a user typed.
    pub detail: Option<String>,
}

/// A user's contact points outside medhub, as the user set them (checked by the service).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ContactPoints {
    pub email: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    pub pager: Option<String>,
}

impl std::fmt::Debug for ContactPoints {
    /// Which are set, never what they are (personal data stays out of logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactPoints")
            .field("email", &self.email.is_some())
            .field("phone", &self.phone.is_some())
            .field("pager", &self.pager.is_some())
            .finish()
    }
}

/// A browser's Web Push subscription.
#[derive(Clone, PartialEq, Eq)]
pub struct PushSubscriptionRow {
    pub id: PushSubscriptionId,
    pub user: UserId,
    /// The push service URL: a capability, never logged.
    pub endpoint: String,
    /// The browser's P-256 public key, base64url.
    pub p256dh: String,
    /// The browser's authentication secret, base64url.
    pub auth: String,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for PushSubscriptionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSubscriptionRow")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Most Web Push subscriptions one user keeps: a phone, a work station or two, a tablet. Adding
/// one more removes the oldest, so a user's browsers cannot grow the table (or a firing's jobs)
/// without bound.
pub const MAX_PUSH_SUBSCRIPTIONS: usize = 10;

/// A leased delivery job: what the worker sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryJob {
    /// Also the idempotency key of every attempt.
    pub id: DeliveryId,
    pub org: OrgId,
    pub message: MessageId,
    pub user: UserId,
    pub channel: Channel,
    /// For push: which subscription.
    pub subscription: Option<PushSubscriptionId>,
    pub why: Why,
    /// The escalation step (from 0) and repeat that queued it.
    pub level: u16,
    pub round: u32,
    /// Attempts made before this one.
    pub attempts: u32,
    /// Proves the lease when finishing: a job whose lease ran out and was taken by another
    /// worker cannot be finished twice.
    pub lease: uuid::Uuid,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    Sent,
    /// Try again at `at`; `reason` is a fixed text with codes.
    Retry {
        at: Timestamp,
        reason: String,
    },
    /// Given up: final.
    Failed {
        reason: String,
    },
    /// The push subscription is gone (404/410): delete it; final.
    Gone {
        reason: String,
    },
}

#[async_trait]
pub trait EscalationStore: Send + Sync {
    // --- policies -----------------------------------------------------------------------------

    /// The organization's own policy for `priority`, if it set one.
    async fn escalation_policy(
        &self,
        org: OrgId,
        priority: Priority,
    ) -> Result<Option<StoredEscalationPolicy>, StoreError>;

    /// Replaces the organization's policy for the policy's priority (checked by the caller) and
    /// appends `audit`, in one transaction.
    async fn set_escalation_policy(
        &self,
        policy: &Policy,
        by: Option<UserId>,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError>;

    // --- timers -------------------------------------------------------------------------------

    /// Timers due at `now` (not fired, not cancelled), oldest first, at most `limit`. Reading
    /// does not claim them.
    async fn due_timers(&self, now: Timestamp, limit: u32) -> Result<Vec<DueTimer>, StoreError>;

    /// Fires the named timers that are still due at `now`, in one transaction: each claimed
    /// timer is marked fired (or cancelled, when its escalation has ended) and its effects
    /// written: the escalation's new state, the next timer, delivery jobs on the channels in
    /// `enabled` (the server's; in-app always), the trace, and per firing a record from the
    /// `audit` template (`escalation.step`). Timers another worker claimed or fired, or that are
    /// not due, are skipped. Returns what each claimed timer did.
    async fn fire_timers(
        &self,
        now: Timestamp,
        inputs: &[FireInput],
        enabled: ChannelSet,
        audit: &AuditRecord,
    ) -> Result<Vec<Fired>, StoreError>;

    /// The escalation of a message, if it has one.
    async fn escalation(&self, message: MessageId) -> Result<Option<Escalation>, StoreError>;

    /// The message's delivery trace, in order.
    async fn escalation_trace(&self, message: MessageId) -> Result<Vec<TraceRow>, StoreError>;

    /// The timers of a message's escalation: (due, fired, cancelled), in order of creation.
    async fn escalation_timers(
        &self,
        message: MessageId,
    ) -> Result<Vec<(Timestamp, Option<Timestamp>, Option<Timestamp>)>, StoreError>;

    // --- the outbox ---------------------------------------------------------------------------

    /// Leases up to `limit` pending jobs due at `now` for `lease_for`, oldest first. Jobs of an
    /// escalation that has ended are cancelled instead (traced `cancelled`) and not returned.
    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_for: SignedDuration,
        limit: u32,
    ) -> Result<Vec<DeliveryJob>, StoreError>;

    /// Records an attempt's result (and its trace row) if the job is still leased by `job.lease`;
    /// `false` when the lease was lost. `Gone` also deletes the push subscription.
    async fn finish_delivery(
        &self,
        job: &DeliveryJob,
        result: &AttemptResult,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    // --- contact points -----------------------------------------------------------------------

    async fn contact_points(&self, user: UserId) -> Result<ContactPoints, StoreError>;

    /// Replaces the user's contact points and appends `audit`, in one transaction.
    async fn set_contact_points(
        &self,
        user: UserId,
        contact: &ContactPoints,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError>;

    /// The user's push subscriptions, oldest first.
    async fn push_subscriptions(&self, user: UserId) -> Result<Vec<PushSubscriptionRow>, StoreError>;

    async fn push_subscription(&self, id: PushSubscriptionId) -> Result<Option<PushSubscriptionRow>, StoreError>;

    /// Stores a subscription (an endpoint registered again, by anyone, is replaced: a browser
    /// belongs to whoever subscribed last), keeps the user's newest
    /// [`MAX_PUSH_SUBSCRIPTIONS`], and appends `audit`, in one transaction.
    async fn add_push_subscription(&self, sub: &PushSubscriptionRow, audit: &[AuditRecord]) -> Result<(), StoreError>;

    /// Deletes the user's subscription with this endpoint and appends `audit`; `false` (nothing
    /// written) when the user has none.
    async fn remove_push_subscription(
        &self,
        user: UserId,
        endpoint: &str,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError>;
}

// --- shared by both backends ------------------------------------------------------------------

/// A policy step as stored: after, target kind, users, role, channel bits, repeat.
pub(crate) struct StepRow {
    pub after_secs: i64,
    pub target: String,
    pub users: Option<String>,
    pub role: Option<String>,
    pub channels: i64,
    pub repeat_secs: Option<i64>,
}

impl StepRow {
    pub(crate) fn of(s: &Step) -> Self {
        let (users, role) = match &s.targets {
            Target::Recipients => (None, None),
            Target::Users(list) => (Some(list.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(" ")), None),
            Target::OnCall(r) => (None, Some(r.as_str().to_owned())),
        };
        StepRow {
            after_secs: s.after.as_secs(),
            target: s.targets.kind_str().to_owned(),
            users,
            role,
            channels: i64::from(s.channels.bits()),
            repeat_secs: s.repeat_every.map(|r| r.as_secs()),
        }
    }

    pub(crate) fn step(self) -> Result<Step, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("escalation policy step: {what}"));
        let targets = match (self.target.as_str(), self.users, self.role) {
            ("recipients", _, _) => Target::Recipients,
            ("users", Some(list), _) => Target::Users(
                list.split_whitespace()
                    .map(|u| u.parse::<UserId>().map_err(|_| corrupt("bad user id")))
                    .collect::<Result<_, _>>()?,
            ),
            ("on_call", _, Some(role)) => Target::OnCall(OnCallRole::parse(&role).ok_or_else(|| corrupt("bad role"))?),
            _ => return Err(corrupt("bad target")),
        };
        let channels =
            u8::try_from(self.channels).ok().and_then(ChannelSet::from_bits).ok_or_else(|| corrupt("bad channels"))?;
        Ok(Step {
            after: SignedDuration::from_secs(self.after_secs),
            targets,
            channels,
            repeat_every: self.repeat_secs.map(SignedDuration::from_secs),
        })
    }
}

/// What the firing transaction loaded about one escalation's people.
pub(crate) struct Reach {
    /// Active users of the organization among the audience, with their reachable channels.
    pub channels: BTreeMap<UserId, ChannelSet>,
    /// Their push subscriptions.
    pub subscriptions: BTreeMap<UserId, Vec<PushSubscriptionId>>,
}

/// A trace row to insert.
pub(crate) struct NewTrace {
    pub kind: TraceKind,
    pub point: Option<Point>,
    pub user: Option<UserId>,
    pub channel: Option<Channel>,
    pub detail: Option<String>,
}

/// A delivery job to insert.
pub(crate) struct NewJob {
    pub id: DeliveryId,
    pub user: UserId,
    pub channel: Channel,
    pub subscription: Option<PushSubscriptionId>,
    pub why: Why,
    pub point: Point,
}

/// Everything one firing writes, decided from what was loaded (the same for both backends).
pub(crate) struct FiringWrites {
    pub trace: Vec<NewTrace>,
    pub jobs: Vec<NewJob>,
    pub due: Due,
    pub audit: Option<AuditRecord>,
}

/// What one firing decides from.
pub(crate) struct FiringContext<'a> {
    pub esc: &'a Escalation,
    pub policy: &'a Policy,
    pub facts: &'a Facts,
    pub reach: &'a Reach,
    /// The conversation's patient, for the audit record.
    pub patient: Option<&'a str>,
}

/// Decides one firing: who is notified how (core) for the due points, and the rows that
/// follow. `template` is the service's `escalation.step` record.
pub(crate) fn firing_writes(ctx: &FiringContext<'_>, due: Due, now: Timestamp, template: &AuditRecord) -> FiringWrites {
    let FiringContext { esc, policy, facts, reach, patient } = *ctx;
    let entries = escalation::notifications(policy, &due.fire, facts, &reach.channels);
    let mut trace = Vec::new();
    let mut jobs = Vec::new();
    let mut notified = std::collections::BTreeSet::new();
    for e in &entries {
        match *e {
            Entry::Escalated { point, user } => trace.push(NewTrace {
                kind: TraceKind::Escalated,
                point: Some(point),
                user: Some(user),
                channel: None,
                detail: None,
            }),
            Entry::Notify { point, user, channel, why } => {
                notified.insert(user);
                trace.push(NewTrace {
                    kind: TraceKind::Notified,
                    point: Some(point),
                    user: Some(user),
                    channel: Some(channel),
                    detail: Some(why.as_str().to_owned()),
                });
                let subs: Vec<Option<PushSubscriptionId>> = if channel == Channel::Push {
                    reach.subscriptions.get(&user).map(|l| l.iter().copied().map(Some).collect()).unwrap_or_default()
                } else {
                    vec![None]
                };
                for subscription in subs {
                    jobs.push(NewJob { id: DeliveryId::new_v7(), user, channel, subscription, why, point });
                }
            }
            Entry::NoTarget { point } => {
                let step = &policy.steps[usize::from(point.level)];
                let detail = match &step.targets {
                    Target::OnCall(r) => format!("nobody holds {}", r.as_str()),
                    Target::Users(_) => "no active user named".to_owned(),
                    Target::Recipients => "no recipient left to notify".to_owned(),
                };
                trace.push(NewTrace {
                    kind: TraceKind::NoTarget,
                    point: Some(point),
                    user: None,
                    channel: None,
                    detail: Some(detail),
                });
            }
            Entry::Unreachable { point, user } => trace.push(NewTrace {
                kind: TraceKind::Unreachable,
                point: Some(point),
                user: Some(user),
                channel: None,
                detail: Some("no contact point for the step's channels".to_owned()),
            }),
            Entry::Limited { point, left_out } => trace.push(NewTrace {
                kind: TraceKind::Limited,
                point: Some(point),
                user: None,
                channel: None,
                detail: Some(format!("{left_out} not notified")),
            }),
        }
    }
    if due.exhausted {
        trace.push(NewTrace {
            kind: TraceKind::Exhausted,
            point: due.state.last,
            user: None,
            channel: None,
            detail: Some("not acknowledged before the policy's end".to_owned()),
        });
    }
    let audit = (!due.fire.is_empty() || due.exhausted).then(|| {
        let mut r = template.clone();
        r.at = now;
        r.org = Some(esc.org);
        let points: Vec<String> = due.fire.iter().map(|p| format!("{}.{}", p.level + 1, p.round)).collect();
        let mut r = r
            .object("message", esc.message)
            .target(format!("steps {}; notified {}", points.join(","), notified.len()))
            .reason(if due.exhausted { "exhausted" } else { "notified" });
        if let Some(p) = patient {
            r = r.patient(p);
        }
        r
    });
    FiringWrites { trace, jobs, due, audit }
}

/// The trace row of an attempt's result.
pub(crate) fn attempt_trace(result: &AttemptResult, attempts: u32) -> (TraceKind, Option<String>) {
    match result {
        AttemptResult::Sent => (TraceKind::Sent, None),
        AttemptResult::Retry { reason, .. } => (TraceKind::Retrying, Some(format!("attempt {attempts}: {reason}"))),
        AttemptResult::Failed { reason } | AttemptResult::Gone { reason } => {
            (TraceKind::Failed, Some(format!("attempt {attempts}: {reason}")))
        }
    }
}
