//! Retention and legal hold (issue 4 §6): retention policies per organization and class of
//! conversation, the expiry job, legal holds, and GDPR erasure. docs/retention.md is the
//! design.
//!
//! The rules are pure functions in `medhub_core::retention`. This service reads the facts
//! (the organization's policies and active holds at a version, and a bounded page of
//! candidate messages), lets the rules decide, and hands the decisions to the store, which
//! applies them only if the version has not moved, together with their audit records, in one
//! transaction. A backlog of years is worked through page by page: no transaction holds more
//! than `batch` messages.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use medhub_core::audit::{AuditRecord, Outcome};
use medhub_core::authz::Permission;
use medhub_core::model::RemovalCause;
use medhub_core::patient::PatientRef;
use medhub_core::retention::{self as rules, Erasure, Expiry, HoldScope, RetentionClass, RetentionPolicy};
use medhub_core::{Clock, ConversationId, DomainError, LegalHoldId, OrgId, UserId};
use medhub_store::{ContentChange, DynStore, HoldLift, LegalHold, StoreError, StoredPolicy};

use crate::hub::Hub;
use crate::{AuditSink, Principal, ServiceError};

/// The largest batch the configuration may ask for.
pub const MAX_BATCH: u32 = 10_000;
/// How often one page is decided again when the organization's policies or holds, or one of
/// its messages, changed between reading and writing. Beyond that the run fails and the next
/// one starts over.
const RETRIES: usize = 5;

/// What to put a legal hold on, as a caller names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldTarget {
    Conversation(ConversationId),
    /// The EHR's patient id.
    Patient(String),
    User(UserId),
}

/// What an expiry run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    /// Messages whose content was removed.
    pub removed: u64,
    /// Earlier revisions deleted with them.
    pub revisions: u64,
    /// Messages past retention that a legal hold kept.
    pub held: u64,
    /// Messages of erased users removed or flagged by finishing an interrupted erasure.
    pub erasure_finished: u64,
}

impl ExpiryReport {
    fn add(&mut self, o: ExpiryReport) {
        self.removed += o.removed;
        self.revisions += o.revisions;
        self.held += o.held;
        self.erasure_finished += o.erasure_finished;
    }
}

/// What an erasure did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErasureReport {
    pub user: Option<UserId>,
    /// Messages whose content was removed (non-clinical, not held).
    pub removed: u64,
    pub revisions: u64,
    /// Messages kept and flagged: clinical content under retention, or held.
    pub flagged: u64,
    /// Live sessions ended.
    pub sessions_ended: usize,
    /// False when the account had been erased before (this call finished the work).
    pub first_time: bool,
}

/// Retention policies, legal holds, expiry and erasure.
#[derive(Clone)]
pub struct Retention {
    store: DynStore,
    clock: Arc<dyn Clock>,
    hub: Arc<Hub>,
    /// Most messages decided and changed in one transaction.
    batch: u32,
    audit: AuditSink,
}

/// Every audit record of retention is built here, and only here. Records hold ids, classes,
/// times and counts: never a body, a name or a reason someone typed (those stay in
/// `legal_holds`).
fn audit_record(
    sink: &AuditSink,
    org: OrgId,
    at: Timestamp,
    actor: Option<&Principal>,
    action: &str,
    target: String,
) -> AuditRecord {
    let r = match actor {
        Some(p) => sink.by(p, action, Outcome::Success),
        // The operator's CLI and the expiry job.
        None => sink.event(action, Outcome::Success),
    };
    AuditRecord { at, org: Some(org), ..r.object("org", org).target(target) }
}

impl Retention {
    pub fn new(store: DynStore, clock: Arc<dyn Clock>, hub: Arc<Hub>, batch: u32, audit: AuditSink) -> Self {
        Self { store, clock, hub, batch: batch.clamp(1, MAX_BATCH), audit }
    }

    // --- policies ---------------------------------------------------------------------------

    /// The caller's organization's policies (classes without one are kept for ever).
    pub async fn policies(&self, p: &Principal) -> Result<Vec<StoredPolicy>, ServiceError> {
        p.require_active()?;
        Ok(self.store.retention_state(p.user.org).await?.policies)
    }

    /// Sets (`Some(days)`) or removes (`None`: keep for ever) the retention of one class in
    /// the caller's organization. Administrators (`org.settings`), with a step-up.
    pub async fn set_policy(
        &self,
        p: &Principal,
        class: &str,
        days: Option<i64>,
    ) -> Result<Option<RetentionPolicy>, ServiceError> {
        p.require(Permission::OrgSettings)?;
        p.require_step_up(self.clock.now())?;
        self.set_policy_in(p.user.org, Some(p), class, days).await
    }

    /// Sets a policy as the operator (`medhub retention policy set`).
    pub async fn set_policy_as_operator(
        &self,
        org: OrgId,
        class: &str,
        days: Option<i64>,
    ) -> Result<Option<RetentionPolicy>, ServiceError> {
        self.set_policy_in(org, None, class, days).await
    }

    /// The policies of an organization, for the operator.
    pub async fn policies_of(&self, org: OrgId) -> Result<Vec<StoredPolicy>, ServiceError> {
        Ok(self.store.retention_state(org).await?.policies)
    }

    async fn set_policy_in(
        &self,
        org: OrgId,
        actor: Option<&Principal>,
        class: &str,
        days: Option<i64>,
    ) -> Result<Option<RetentionPolicy>, ServiceError> {
        let class = parse_class(class)?;
        let policy = days.map(|d| RetentionPolicy::new(class, d)).transpose()?;
        let now = self.clock.now();
        let shown = policy.map_or_else(|| "none".to_owned(), |p| p.days.to_string());
        let audit = [audit_record(
            &self.audit,
            org,
            now,
            actor,
            "retention.policy_set",
            format!("org:{org} class:{} days:{shown}", class.as_str()),
        )];
        let by = actor.map(|p| p.user.id);
        self.store.set_retention_policy(org, class, policy.map(|p| p.days), by, now, &audit).await?;
        tracing::info!(target: "medhub::audit", org = %org, class = class.as_str(), days = %shown, "retention policy set");
        Ok(policy)
    }

    // --- legal holds ------------------------------------------------------------------------

    /// The caller's organization's holds, newest first; lifted ones too if asked.
    pub async fn holds(&self, p: &Principal, include_lifted: bool) -> Result<Vec<LegalHold>, ServiceError> {
        p.require(Permission::RetentionManage)?;
        Ok(self.store.legal_holds(p.user.org, include_lifted).await?)
    }

    /// The holds of an organization, for the operator.
    pub async fn holds_of(&self, org: OrgId, include_lifted: bool) -> Result<Vec<LegalHold>, ServiceError> {
        Ok(self.store.legal_holds(org, include_lifted).await?)
    }

    /// Puts a legal hold on a conversation, a patient or a user of the caller's organization.
    /// Compliance officers (`retention.manage`). A conversation or user of another
    /// organization is `not_found`, as if it did not exist.
    pub async fn set_hold(&self, p: &Principal, target: HoldTarget, reason: &str) -> Result<LegalHold, ServiceError> {
        p.require(Permission::RetentionManage)?;
        let org = p.user.org;
        let scope = match target {
            HoldTarget::Conversation(id) => {
                if self.store.conversation(id).await?.is_none_or(|c| c.org != org) {
                    return Err(DomainError::ConversationNotFound.into());
                }
                HoldScope::Conversation(id)
            }
            HoldTarget::Patient(raw) => HoldScope::Patient(PatientRef::parse(&raw)?),
            HoldTarget::User(id) => {
                if self.store.user(id).await?.is_none_or(|u| u.org != org) {
                    return Err(DomainError::UserNotFound.into());
                }
                HoldScope::User(id)
            }
        };
        let reason = rules::hold_reason(reason)?;
        let now = self.clock.now();
        let hold = LegalHold {
            id: LegalHoldId::new_v7(),
            org,
            scope,
            reason,
            created_by: p.user.id,
            created_at: now,
            lifted: None,
        };
        let audit = [audit_record(
            &self.audit,
            org,
            now,
            Some(p),
            "legal_hold.set",
            format!("org:{org} hold:{} scope:{}:{}", hold.id, hold.scope.kind_str(), hold.scope.subject()),
        )
        .object("hold", hold.id)];
        self.store.create_legal_hold(&hold, &audit).await?;
        tracing::info!(target: "medhub::audit", hold = %hold.id, by = %p.user.id, scope = hold.scope.kind_str(), "legal hold set");
        Ok(hold)
    }

    /// Lifts an active hold of the caller's organization, with a reason and a step-up (what
    /// it kept may then be removed). The hold stays on record. Anything else (unknown, another
    /// organization's, lifted already) is `not_found`.
    pub async fn lift_hold(&self, p: &Principal, id: LegalHoldId, reason: &str) -> Result<LegalHold, ServiceError> {
        p.require(Permission::RetentionManage)?;
        let reason = rules::hold_reason(reason)?;
        let org = p.user.org;
        if !self.store.legal_holds(org, false).await?.iter().any(|h| h.id == id) {
            return Err(DomainError::HoldNotFound.into());
        }
        p.require_step_up(self.clock.now())?;
        let now = self.clock.now();
        let audit = [audit_record(&self.audit, org, now, Some(p), "legal_hold.lift", format!("org:{org} hold:{id}"))
            .object("hold", id)];
        let lift = HoldLift { by: p.user.id, at: now, reason };
        let Some(hold) = self.store.lift_legal_hold(org, id, &lift, &audit).await? else {
            return Err(DomainError::HoldNotFound.into());
        };
        tracing::info!(target: "medhub::audit", hold = %id, by = %p.user.id, "legal hold lifted");
        Ok(hold)
    }

    // --- expiry -----------------------------------------------------------------------------

    /// Runs the expiry for the caller's organization now (compliance officers).
    pub async fn expire_now(&self, p: &Principal) -> Result<ExpiryReport, ServiceError> {
        p.require(Permission::RetentionManage)?;
        self.expire_org(p.user.org, Some(p)).await
    }

    /// Runs the expiry for every organization: what the periodic job does. An organization
    /// whose run fails does not stop the others; the first failure is returned at the end.
    pub async fn expire_all(&self) -> Result<ExpiryReport, ServiceError> {
        let mut total = ExpiryReport::default();
        let mut first_error = None;
        for org in self.store.orgs().await? {
            match self.expire_org(org.id, None).await {
                Ok(r) => total.add(r),
                Err(e) => {
                    tracing::warn!(org = %org.id, error = %e, "retention expiry failed for an organization");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// Removes the content of the organization's messages past their class's retention, unless
    /// a legal hold covers them, and finishes erasures a crash interrupted. Page by page, each
    /// page one transaction with its audit record; running it again changes nothing.
    pub async fn expire_org(&self, org: OrgId, actor: Option<&Principal>) -> Result<ExpiryReport, ServiceError> {
        let now = self.clock.now();
        let mut report = ExpiryReport::default();
        for class in RetentionClass::ALL {
            report.add(self.expire_class(org, actor, class, now).await?);
        }
        for user in self.store.unfinished_erasures(org).await? {
            let done = self.erase_messages(org, actor, user, now).await?;
            report.erasure_finished += done.removed + done.flagged;
        }
        if report != ExpiryReport::default() {
            tracing::info!(
                target: "medhub::audit",
                org = %org,
                removed = report.removed,
                held = report.held,
                erasure_finished = report.erasure_finished,
                "retention expiry"
            );
        }
        Ok(report)
    }

    async fn expire_class(
        &self,
        org: OrgId,
        actor: Option<&Principal>,
        class: RetentionClass,
        now: Timestamp,
    ) -> Result<ExpiryReport, ServiceError> {
        let mut report = ExpiryReport::default();
        let mut after = None;
        let mut conflicts = 0;
        loop {
            let state = self.store.retention_state(org).await?;
            let policies = state.policies();
            let Some(policy) = rules::policy_for(&policies, class) else {
                return Ok(report);
            };
            let cutoff = policy.cutoff(now);
            let page = self.store.expiry_candidates(org, class, cutoff, after, self.batch, &state.held_users()).await?;
            let Some(last) = page.last().map(|c| (c.facts.created_at, c.message)) else {
                return Ok(report);
            };
            let mut remove = Vec::new();
            let mut held = 0;
            for c in &page {
                match rules::expiry(&c.facts, &policies, &state.holds, now) {
                    Expiry::Remove => remove.push(c.message),
                    Expiry::Keep(rules::Kept::Held(_)) => held += 1,
                    Expiry::Keep(_) => {}
                }
            }
            if !remove.is_empty() {
                let audit = [audit_record(
                    &self.audit,
                    org,
                    now,
                    actor,
                    "retention.expire",
                    format!("org:{org} class:{} before:{cutoff} removed:{}", class.as_str(), remove.len()),
                )];
                let change = ContentChange { remove, cause: RemovalCause::Retention, flag: Vec::new() };
                match self.store.apply_content_change(org, state.version, &change, now, &audit).await {
                    Ok(done) => {
                        report.removed += done.removed;
                        report.revisions += done.revisions;
                        conflicts = 0;
                    }
                    Err(StoreError::Conflict(why)) => {
                        // Decide this page again from what is stored now.
                        conflicts += 1;
                        if conflicts > RETRIES {
                            return Err(StoreError::Conflict(why).into());
                        }
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            report.held += held;
            if page.len() < self.batch as usize {
                return Ok(report);
            }
            after = Some(last);
        }
    }

    /// Runs [`Self::expire_all`] every `interval` (the first run one interval after start),
    /// until the task is aborted. A failed run is logged; the next one starts over.
    pub async fn run_job(self, interval: Duration) {
        let start = tokio::time::Instant::now() + interval;
        let mut tick = tokio::time::interval_at(start, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.expire_all().await {
                tracing::warn!(error = %e, "retention expiry failed; it runs again at the next interval");
            }
        }
    }

    // --- GDPR erasure -----------------------------------------------------------------------

    /// Erases a user's non-clinical personal data (GDPR art. 17): compliance officers
    /// (`retention.manage`), with a step-up. The account is deactivated and pseudonymous, its
    /// sessions end, its credentials and links go; the messages it wrote are removed, except
    /// clinical content under retention and content under a legal hold, which are kept and
    /// flagged. A user of another organization is `not_found`; a user under a legal hold is
    /// refused (`under_legal_hold`). Running it again finishes an interrupted erasure.
    pub async fn erase(&self, p: &Principal, user: UserId) -> Result<ErasureReport, ServiceError> {
        p.require(Permission::RetentionManage)?;
        if self.store.user(user).await?.is_none_or(|u| u.org != p.user.org) {
            return Err(DomainError::UserNotFound.into());
        }
        if user == p.user.id {
            return Err(ServiceError::InvalidRequest("you cannot erase your own account".into()));
        }
        p.require_step_up(self.clock.now())?;
        self.erase_in(p.user.org, Some(p), user).await
    }

    async fn erase_in(
        &self,
        org: OrgId,
        actor: Option<&Principal>,
        user: UserId,
    ) -> Result<ErasureReport, ServiceError> {
        let now = self.clock.now();
        let (username, display) = rules::pseudonym(user);
        let mut conflicts = 0;
        let account = loop {
            let state = self.store.retention_state(org).await?;
            if state.holds.iter().any(|h| h.scope == HoldScope::User(user)) {
                return Err(DomainError::UnderLegalHold.into());
            }
            let audit =
                [audit_record(&self.audit, org, now, actor, "gdpr.erase", format!("org:{org} user:{user} account"))
                    .object("user", user)];
            match self.store.erase_account(org, state.version, user, (&username, &display), now, &audit).await {
                Ok(Some(a)) => break a,
                Ok(None) => return Err(DomainError::UserNotFound.into()),
                Err(StoreError::Conflict(why)) => {
                    conflicts += 1;
                    if conflicts > RETRIES {
                        return Err(StoreError::Conflict(why).into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.hub.kick_user(user);
        let mut report = self.erase_messages(org, actor, user, now).await?;
        report.user = Some(user);
        report.sessions_ended = account.ended_sessions.len();
        report.first_time = account.first_time;
        tracing::warn!(
            target: "medhub::audit",
            user = %user,
            by = ?actor.map(|p| p.user.id),
            removed = report.removed,
            flagged = report.flagged,
            "personal data erased"
        );
        Ok(report)
    }

    /// Removes or flags the messages an erased user wrote, page by page.
    async fn erase_messages(
        &self,
        org: OrgId,
        actor: Option<&Principal>,
        user: UserId,
        now: Timestamp,
    ) -> Result<ErasureReport, ServiceError> {
        let mut report = ErasureReport::default();
        let mut conflicts = 0;
        loop {
            let state = self.store.retention_state(org).await?;
            let policies = state.policies();
            // Every page is either removed or flagged, so it leaves the candidates: no cursor.
            let page = self.store.erasure_candidates(user, None, self.batch, &state.held_users()).await?;
            if page.is_empty() {
                return Ok(report);
            }
            let mut change = ContentChange { remove: Vec::new(), cause: RemovalCause::Erasure, flag: Vec::new() };
            for c in &page {
                match rules::erasure(&c.facts, &policies, &state.holds, now) {
                    Erasure::Remove => change.remove.push(c.message),
                    Erasure::KeepClinical | Erasure::KeepHeld(_) => change.flag.push(c.message),
                }
            }
            let audit = [audit_record(
                &self.audit,
                org,
                now,
                actor,
                "gdpr.erase",
                format!("org:{org} user:{user} removed:{} flagged:{}", change.remove.len(), change.flag.len()),
            )
            .object("user", user)];
            match self.store.apply_content_change(org, state.version, &change, now, &audit).await {
                Ok(done) => {
                    report.removed += done.removed;
                    report.revisions += done.revisions;
                    report.flagged += done.flagged;
                    conflicts = 0;
                }
                Err(StoreError::Conflict(why)) => {
                    conflicts += 1;
                    if conflicts > RETRIES {
                        return Err(StoreError::Conflict(why).into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn parse_class(raw: &str) -> Result<RetentionClass, ServiceError> {
    RetentionClass::parse(raw)
        .ok_or_else(|| ServiceError::InvalidRequest("class must be clinical, direct, group or channel".into()))
}
