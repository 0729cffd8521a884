//! Escalation until acknowledged (docs/clinical.md): the timer worker that fires due steps, the
//! delivery worker that sends the outbox, the policies, the delivery trace and a user's own
//! contact points.
//!
//! The rules are `medhub_core::escalation` (pure) and the exactly-once firing is the store's
//! (`medhub_store::escalation`). This service supplies what the store cannot know: the policy in
//! force, who holds an on-call role now ([`OnCallDirectory`]), which channels this server has,
//! and the sending itself.
//!
//! **Where the escalation starts.** A message's escalation row and first timer are written by
//! the store in the message's own batch transaction (and closed by an acknowledgement's), not
//! by a hook after the commit: there is no moment where the message is committed and its
//! escalation is not, so a crash cannot lose one, and an acknowledgement can never race ahead of
//! the escalation it ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::Outcome as AuditOutcome;
use medhub_core::authz::Permission;
use medhub_core::escalation::{self, Channel, ChannelSet, DefaultRoles, OnCallRole, Policy, Target, Why};
use medhub_core::model::{MemberRole, Message, Priority};
use medhub_core::{Clock, DomainError, MessageId, OrgId, PushSubscriptionId, UserId};
use medhub_notify::{
    ChannelKind, EmailAddress, GiveUp, IdempotencyKey, NextStep, Notice, NoticeKind, Notifier, PagerId, PhoneNumber,
    PushSubscription, Target as NotifyTarget,
};
use medhub_store::{
    AttemptResult, ContactPoints, DeliveryJob, DynStore, Escalation, FireInput, PushSubscriptionRow, RecipientRow,
    StoredEscalationPolicy, TraceRow,
};
use medhub_wire::ServerFrame;
use tokio::sync::{Notify, Semaphore};

use crate::hub::{Hub, frame_bytes};
use crate::metrics::Metrics;
use crate::{AuditSink, Principal, ServiceError};

/// How often the timer worker looks for due timers when nothing woke it. It also looks once at
/// start, so a timer that fell due while the server was down fires within this of the restart
/// (the issue asks for 5 s); and other nodes' new escalations are seen within it.
pub const TIMER_POLL: Duration = Duration::from_secs(1);
/// Timers fired per transaction. Short transactions: an acknowledgement's batch waits for the
/// escalation rows a firing holds, and the commit pipeline waits with it.
pub const FIRE_BATCH: u32 = 64;
/// How often the delivery worker looks for due jobs (retries fall due while it sleeps) when
/// nothing woke it.
pub const DELIVERY_POLL: Duration = Duration::from_secs(1);
/// Sends in flight per node. A slow SMTP relay or push service (timeouts up to 30 s) must not
/// hold up the others, and the node must not open unbounded connections to providers.
pub const SENDS_IN_FLIGHT: usize = 32;
/// How long a worker holds a job while sending. Longer than any channel's time limit (SMTP's
/// is at most 30 s by default), so a lease runs out only when its worker died; then another
/// worker sends it again with the same idempotency key.
pub const DELIVERY_LEASE: SignedDuration = SignedDuration::from_secs(120);

/// Who holds an on-call role of an organization at an instant. The on-call schedules service
/// implements it; until it is wired in, [`NoOnCallDirectory`] names nobody, and a step to an
/// on-call role is recorded in the trace as `no_target` ("nobody holds …").
#[async_trait]
pub trait OnCallDirectory: Send + Sync {
    /// The holders, in the directory's order (primary first). An error makes the timer wait
    /// for the next poll rather than skip the role.
    async fn holders(&self, org: OrgId, role: &OnCallRole, at: Timestamp) -> Result<Vec<UserId>, ServiceError>;
}

/// The directory of a server without on-call schedules: nobody holds any role.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoOnCallDirectory;

#[async_trait]
impl OnCallDirectory for NoOnCallDirectory {
    async fn holders(&self, _: OrgId, _: &OnCallRole, _: Timestamp) -> Result<Vec<UserId>, ServiceError> {
        Ok(Vec::new())
    }
}

/// The on-call directory the services use (in [`crate::ServiceConfig`]).
#[derive(Clone)]
pub struct OnCallHandle(pub Arc<dyn OnCallDirectory>);

impl Default for OnCallHandle {
    fn default() -> Self {
        OnCallHandle(Arc::new(NoOnCallDirectory))
    }
}

impl std::fmt::Debug for OnCallHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnCallHandle")
    }
}

/// A message's delivery trace, for the sender (see [`Escalations::trace`]).
#[derive(Clone, Debug)]
pub struct MessageTrace {
    pub message: Message,
    pub escalation: Option<Escalation>,
    pub rows: Vec<TraceRow>,
    pub recipients: Vec<RecipientRow>,
}

/// The policy in force for a priority, and whether it is the organization's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyInForce {
    pub policy: Policy,
    /// `None`: the shipped policy.
    pub stored: Option<StoredEscalationPolicy>,
}

/// Escalation: the workers and the operations the API calls.
#[derive(Clone)]
pub struct Escalations {
    store: DynStore,
    clock: Arc<dyn Clock>,
    audit: AuditSink,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    notifier: Option<Arc<Notifier>>,
    directory: Arc<dyn OnCallDirectory>,
    timers_wake: Arc<Notify>,
    deliveries_wake: Arc<Notify>,
}

impl Escalations {
    pub fn new(
        store: DynStore,
        clock: Arc<dyn Clock>,
        audit: AuditSink,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        notifier: Option<Arc<Notifier>>,
        directory: Arc<dyn OnCallDirectory>,
    ) -> Self {
        Self {
            store,
            clock,
            audit,
            hub,
            metrics,
            notifier,
            directory,
            timers_wake: Arc::new(Notify::new()),
            deliveries_wake: Arc::new(Notify::new()),
        }
    }

    /// Wakes the timer worker (a new urgent or critical message's first timer is due now).
    pub fn wake(&self) {
        self.timers_wake.notify_one();
    }

    /// A handle that wakes the timer worker, for the messaging service.
    pub(crate) fn waker(&self) -> Arc<Notify> {
        self.timers_wake.clone()
    }

    /// The channels this server can send on: in the app always, the others when configured.
    pub fn enabled_channels(&self) -> ChannelSet {
        let mut set = ChannelSet::of(&[Channel::InApp]);
        if let Some(n) = &self.notifier {
            for k in n.channels() {
                set = set.with(channel_of(k));
            }
        }
        set
    }

    // --- the timer worker ---------------------------------------------------------------------

    /// Fires the timers due now (at most [`FIRE_BATCH`]); returns how many were due. Timers
    /// another worker fires meanwhile are skipped by the store.
    pub async fn fire_due(&self) -> Result<usize, ServiceError> {
        let now = self.clock.now();
        let due = self.store.due_timers(now, FIRE_BATCH).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut policies: HashMap<(OrgId, Priority), Option<Policy>> = HashMap::new();
        let mut holders: HashMap<(OrgId, OnCallRole), Vec<UserId>> = HashMap::new();
        let mut inputs = Vec::with_capacity(due.len());
        'timers: for t in &due {
            let policy = match policies.get(&(t.org, t.priority)) {
                Some(p) => p.clone(),
                None => {
                    let p = self.policy_in_force(t.org, t.priority).await?.map(|p| p.policy);
                    policies.insert((t.org, t.priority), p.clone());
                    p
                }
            };
            let Some(policy) = policy else { continue };
            let mut held = BTreeMap::new();
            for role in roles(&policy) {
                let key = (t.org, role.clone());
                let users = match holders.get(&key) {
                    Some(u) => u.clone(),
                    None => match self.directory.holders(t.org, &role, now).await {
                        Ok(u) => {
                            holders.insert(key, u.clone());
                            u
                        }
                        Err(e) => {
                            tracing::warn!(message = %t.message, role = role.as_str(), error = %e,
                                "on-call directory failed; the escalation step waits for the next poll");
                            continue 'timers;
                        }
                    },
                };
                held.insert(role, users);
            }
            inputs.push(FireInput { timer: t.id, policy, holders: held });
        }
        let template = self.audit.event("escalation.step", AuditOutcome::Success);
        let fired = self.store.fire_timers(now, &inputs, self.enabled_channels(), &template).await?;
        let mut jobs = 0;
        for f in &fired {
            if !f.cancelled {
                self.metrics.escalation_firings.inc();
            }
            jobs += f.jobs;
            if let Some(c) = f.closed {
                tracing::info!(message = %f.message, closed = c.as_str(), "escalation ended");
            }
        }
        if jobs > 0 {
            self.deliveries_wake.notify_one();
        }
        Ok(due.len())
    }

    /// The timer worker: fires at start, then whenever woken or every [`TIMER_POLL`].
    pub async fn run_timers(self) {
        loop {
            let more = match self.fire_due().await {
                Ok(n) => n >= FIRE_BATCH as usize,
                Err(e) => {
                    tracing::warn!(error = %e, "escalation timers: firing failed; retrying");
                    false
                }
            };
            if more {
                continue;
            }
            tokio::select! {
                _ = self.timers_wake.notified() => {}
                _ = tokio::time::sleep(TIMER_POLL) => {}
            }
        }
    }

    // --- the delivery worker ------------------------------------------------------------------

    /// Claims the deliveries due now (at most `limit`) and sends them one after the other;
    /// returns how many were claimed. The worker ([`run_deliveries`](Self::run_deliveries))
    /// sends concurrently instead.
    pub async fn deliver_due(&self, limit: u32) -> Result<usize, ServiceError> {
        let jobs = self.store.claim_deliveries(self.clock.now(), DELIVERY_LEASE, limit).await?;
        let n = jobs.len();
        for job in jobs {
            self.deliver(job).await;
        }
        Ok(n)
    }

    /// The delivery worker: at most [`SENDS_IN_FLIGHT`] sends at once; claims whenever a slot
    /// is free and something is due, when woken, or every [`DELIVERY_POLL`].
    pub async fn run_deliveries(self) {
        let slots = Arc::new(Semaphore::new(SENDS_IN_FLIGHT));
        loop {
            let free = slots.available_permits();
            let mut full = false;
            if free > 0 {
                let limit = u32::try_from(free).unwrap_or(u32::MAX);
                match self.store.claim_deliveries(self.clock.now(), DELIVERY_LEASE, limit).await {
                    Ok(jobs) => {
                        full = jobs.len() == free;
                        for job in jobs {
                            let Ok(permit) = slots.clone().acquire_owned().await else { return };
                            let me = self.clone();
                            tokio::spawn(async move {
                                me.deliver(job).await;
                                drop(permit);
                                me.deliveries_wake.notify_one();
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "deliveries: claiming failed; retrying"),
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = self.deliveries_wake.notified() => {}
                _ = tokio::time::sleep(DELIVERY_POLL) => {}
            }
        }
    }

    /// One attempt of one job, its result recorded (trace, metrics). Never dropped: a job ends
    /// sent, retried later, or failed with its reason.
    async fn deliver(&self, job: DeliveryJob) {
        let result = match self.attempt(&job).await {
            Ok(r) => r,
            // The store is away: the lease runs out and the job is tried again.
            Err(e) => {
                tracing::warn!(job = %job.id, channel = job.channel.as_str(), error = %e, "delivery attempt not made");
                return;
            }
        };
        let outcome = match &result {
            AttemptResult::Sent => "sent",
            AttemptResult::Retry { .. } => "retrying",
            AttemptResult::Failed { .. } => "failed",
            AttemptResult::Gone { .. } => "gone",
        };
        self.metrics.notification(job.channel.as_str(), outcome);
        match self.store.finish_delivery(&job, &result, self.clock.now()).await {
            Ok(true) => {}
            Ok(false) => tracing::info!(job = %job.id, "delivery lease lost; another worker has the job"),
            Err(e) => tracing::warn!(job = %job.id, error = %e, "delivery result not recorded; the job is retried"),
        }
    }

    async fn attempt(&self, job: &DeliveryJob) -> Result<AttemptResult, ServiceError> {
        let failed = |reason: &str| Ok(AttemptResult::Failed { reason: reason.to_owned() });
        let Some(message) = self.store.message(job.message).await? else { return failed("message not found") };
        if job.channel == Channel::InApp {
            let frame = ServerFrame::Notice {
                message_id: message.id.as_uuid(),
                conversation_id: message.conversation.as_uuid(),
                sender_id: message.sender.as_uuid(),
                priority: message.priority.into(),
                reason: job.why.as_str().to_owned(),
                step: job.level.saturating_add(1),
                round: job.round,
            };
            let n = self.hub.send_ephemeral([job.user], None, frame_bytes(&frame));
            return if n > 0 { Ok(AttemptResult::Sent) } else { failed("no live connection on this node") };
        }
        let Some(notifier) = &self.notifier else { return failed("channel not configured") };
        let Some(target) = self.target(job).await? else {
            return failed(match job.channel {
                Channel::Push => "push subscription removed",
                Channel::Email => "no e-mail address on file",
                Channel::Sms => "no mobile number on file",
                Channel::Pager => "no pager number on file",
                Channel::InApp => "no live connection on this node",
            });
        };
        let Some(conversation) = self.store.conversation(message.conversation).await? else {
            return failed("conversation not found");
        };
        let sender = self.store.user(message.sender).await?;
        let kind = match job.why {
            Why::Message => NoticeKind::NewMessage,
            Why::Escalated => NoticeKind::EscalatedToYou,
        };
        let notice = Notice::new(notifier.settings(), sender.as_ref(), &conversation, message.priority, kind);
        let key = IdempotencyKey::from_uuid(job.id.as_uuid());
        let delivery = notifier.send(&notice, &target, &key).await;
        let Err(e) = delivery.result else { return Ok(AttemptResult::Sent) };
        let now = self.clock.now();
        Ok(match notifier.retry_policy().next(job.attempts + 1, &e, random()) {
            NextStep::Retry { after } => AttemptResult::Retry {
                at: now.checked_add(SignedDuration::try_from(after).unwrap_or(SignedDuration::MAX)).unwrap_or(now),
                reason: e.reason().to_owned(),
            },
            NextStep::GiveUp(GiveUp::Gone) => AttemptResult::Gone { reason: "push subscription gone".to_owned() },
            NextStep::GiveUp(GiveUp::Permanent) => AttemptResult::Failed { reason: e.reason().to_owned() },
            NextStep::GiveUp(GiveUp::Exhausted) => {
                AttemptResult::Failed { reason: format!("{} (attempts exhausted)", e.reason()) }
            }
        })
    }

    /// Where a job goes: the user's contact point of its channel, read now (a corrected address
    /// is used by the next attempt). `None` when the user has none (any more).
    async fn target(&self, job: &DeliveryJob) -> Result<Option<NotifyTarget>, ServiceError> {
        if job.channel == Channel::Push {
            let Some(id) = job.subscription else { return Ok(None) };
            let sub = self.store.push_subscription(id).await?.filter(|s| s.user == job.user);
            return Ok(sub
                .and_then(|s| PushSubscription::new(&s.endpoint, &s.p256dh, &s.auth).ok())
                .map(NotifyTarget::WebPush));
        }
        let c = self.store.contact_points(job.user).await?;
        Ok(match job.channel {
            Channel::Email => c.email.and_then(|e| EmailAddress::parse(&e).ok()).map(NotifyTarget::Email),
            Channel::Sms => c.phone.and_then(|p| PhoneNumber::parse(&p).ok()).map(NotifyTarget::Sms),
            Channel::Pager => c.pager.and_then(|p| PagerId::parse(&p).ok()).map(NotifyTarget::Pager),
            Channel::InApp | Channel::Push => None,
        })
    }

    // --- policies -----------------------------------------------------------------------------

    /// The organization's own policy for `priority`, else the shipped one; `None` for routine.
    pub async fn policy_in_force(&self, org: OrgId, priority: Priority) -> Result<Option<PolicyInForce>, ServiceError> {
        if let Some(stored) = self.store.escalation_policy(org, priority).await? {
            return Ok(Some(PolicyInForce { policy: stored.policy.clone(), stored: Some(stored) }));
        }
        Ok(escalation::default_policy(org, priority, &DefaultRoles::default())
            .map(|policy| PolicyInForce { policy, stored: None }))
    }

    /// The policy in force for `priority` (administrators: `org.settings`).
    pub async fn policy(&self, p: &Principal, priority: Priority) -> Result<PolicyInForce, ServiceError> {
        p.require(Permission::OrgSettings)?;
        let Some(found) = self.policy_in_force(p.user.org, priority).await? else {
            return Err(DomainError::InvalidEscalationPolicy(escalation::PolicyError::RoutineNotEscalated).into());
        };
        Ok(found)
    }

    /// Sets the organization's policy for the policy's priority (administrators, with a step-up), with its
    /// `admin.escalation_policy` record. Named users must be users of the organization. Open
    /// escalations follow the new policy from their next point.
    pub async fn set_policy(&self, p: &Principal, mut policy: Policy) -> Result<PolicyInForce, ServiceError> {
        p.require(Permission::OrgSettings)?;
        // Who is paged for critical results is as sensitive as a retention policy: a step-up.
        p.require_step_up(self.clock.now())?;
        policy.org = p.user.org;
        escalation::validate(&policy).map_err(DomainError::InvalidEscalationPolicy)?;
        for step in &policy.steps {
            if let Target::Users(users) = &step.targets {
                let found = self.store.users(users).await?;
                if users.iter().any(|u| !found.iter().any(|f| f.id == *u && f.org == p.user.org && f.active)) {
                    return Err(DomainError::UserNotFound.into());
                }
            }
        }
        let record = self
            .audit
            .by(p, "admin.escalation_policy", AuditOutcome::Success)
            .object("org", p.user.org)
            .target(format!("priority={} steps={}", policy.priority.as_str(), policy.steps.len()));
        self.store.set_escalation_policy(&policy, Some(p.user.id), self.clock.now(), &[record]).await?;
        self.policy(p, policy.priority).await
    }

    // --- the delivery trace -------------------------------------------------------------------

    /// A message's delivery trace: for its sender, the conversation's owners and the
    /// organization's administrators (`org.settings`). Another member is refused; anyone else is
    /// answered as for a message that does not exist.
    pub async fn trace(&self, p: &Principal, id: MessageId) -> Result<MessageTrace, ServiceError> {
        p.require_active()?;
        let message = self.store.message(id).await?.ok_or(DomainError::MessageNotFound)?;
        let conversation = self.store.conversation(message.conversation).await?.ok_or(DomainError::MessageNotFound)?;
        if conversation.org != p.user.org {
            return Err(DomainError::MessageNotFound.into());
        }
        let admin = p.permissions.contains(Permission::OrgSettings);
        if message.sender != p.user.id && !admin {
            match self.store.member(message.conversation, p.user.id).await? {
                Some(m) if m.role == MemberRole::Owner => {}
                Some(_) => return Err(DomainError::Forbidden.into()),
                None => return Err(DomainError::MessageNotFound.into()),
            }
        }
        let escalation = self.store.escalation(id).await?;
        let rows = self.store.escalation_trace(id).await?;
        let recipients = self.store.recipients(&message).await?;
        Ok(MessageTrace { message, escalation, rows, recipients })
    }

    // --- one's own contact points -------------------------------------------------------------

    pub async fn contact(&self, p: &Principal) -> Result<ContactPoints, ServiceError> {
        p.require_active()?;
        Ok(self.store.contact_points(p.user.id).await?)
    }

    /// Replaces the caller's contact points (each checked; white space trimmed; empty is none),
    /// with an `account.contact` record naming which are set, never what they are.
    pub async fn set_contact(&self, p: &Principal, c: ContactPoints) -> Result<ContactPoints, ServiceError> {
        p.require_active()?;
        let clean = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let c = ContactPoints { email: clean(c.email), phone: clean(c.phone), pager: clean(c.pager) };
        let bad = |what: &'static str| ServiceError::from(DomainError::InvalidContactPoint(what));
        if let Some(e) = &c.email {
            EmailAddress::parse(e).map_err(|_| bad("email is not an e-mail address"))?;
        }
        if let Some(ph) = &c.phone {
            PhoneNumber::parse(ph).map_err(|_| bad("phone is not a mobile number in E.164 form (+447700900123)"))?;
        }
        if let Some(pg) = &c.pager {
            PagerId::parse(pg).map_err(|_| bad("pager is not a pager number"))?;
        }
        let set: Vec<&str> = [("email", c.email.is_some()), ("phone", c.phone.is_some()), ("pager", c.pager.is_some())]
            .into_iter()
            .filter_map(|(n, on)| on.then_some(n))
            .collect();
        let record = self
            .audit
            .by(p, "account.contact", AuditOutcome::Success)
            .object("user", p.user.id)
            .target(format!("set={}", if set.is_empty() { "none".to_owned() } else { set.join(",") }));
        self.store.set_contact_points(p.user.id, &c, self.clock.now(), &[record]).await?;
        Ok(c)
    }

    /// Registers a browser's push subscription for the caller. Web Push must be on, and the
    /// endpoint must be one of the allowed push services.
    pub async fn add_push_subscription(
        &self,
        p: &Principal,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
    ) -> Result<PushSubscriptionRow, ServiceError> {
        p.require_active()?;
        let bad = |what: &'static str| ServiceError::from(DomainError::InvalidContactPoint(what));
        let Some(webpush) = self.notifier.as_ref().and_then(|n| n.webpush()) else {
            return Err(bad("Web Push is not configured on this server"));
        };
        let sub = PushSubscription::new(endpoint, p256dh, auth).map_err(|_| bad("not a valid push subscription"))?;
        webpush.check_endpoint(&sub).map_err(|_| bad("the push service is not allowed on this server"))?;
        let row = PushSubscriptionRow {
            id: PushSubscriptionId::new_v7(),
            user: p.user.id,
            endpoint: endpoint.to_owned(),
            p256dh: p256dh.to_owned(),
            auth: auth.to_owned(),
            created_at: self.clock.now(),
        };
        let record =
            self.audit.by(p, "account.push_subscribe", AuditOutcome::Success).object("push_subscription", row.id);
        self.store.add_push_subscription(&row, &[record]).await?;
        Ok(row)
    }

    /// Forgets the caller's subscription with this endpoint; `not_found` if there is none.
    pub async fn remove_push_subscription(&self, p: &Principal, endpoint: &str) -> Result<(), ServiceError> {
        p.require_active()?;
        let record = self.audit.by(p, "account.push_unsubscribe", AuditOutcome::Success).object("user", p.user.id);
        if self.store.remove_push_subscription(p.user.id, endpoint, &[record]).await? {
            Ok(())
        } else {
            Err(DomainError::PushSubscriptionNotFound.into())
        }
    }
}

/// The on-call roles a policy's steps name.
fn roles(policy: &Policy) -> Vec<OnCallRole> {
    let mut out: Vec<OnCallRole> = policy
        .steps
        .iter()
        .filter_map(|s| match &s.targets {
            Target::OnCall(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn channel_of(k: ChannelKind) -> Channel {
    match k {
        ChannelKind::WebPush => Channel::Push,
        ChannelKind::Email => Channel::Email,
        ChannelKind::Sms => Channel::Sms,
        ChannelKind::Pager => Channel::Pager,
    }
}

/// A random number for the backoff's jitter.
fn random() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // Without randomness the wait is the ceiling's half: still bounded, still a retry.
        return u64::MAX / 2;
    }
    u64::from_le_bytes(b)
}
