//! Sign-in, session lookup with idle and absolute expiry, activity, listing and ending
//! sessions, WebSocket tickets, and the sweeper that closes sockets of ended sessions.

use std::collections::HashSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::Outcome;
use medhub_core::authz::Permission;
use medhub_core::model::{Session, SessionState, User};
use medhub_core::session as rules;
use medhub_core::{SessionId, UserId, validate};
use medhub_store::Ended;

use super::{
    AuthService, ClientInfo, IssuedSession, Principal, TICKET_PREFIX, TOKEN_PREFIX, new_token, throttle_keys,
    token_hash,
};
use crate::ServiceError;

/// How long a WebSocket ticket is valid.
pub const WS_TICKET_TTL: SignedDuration = SignedDuration::from_secs(30);

impl AuthService {
    /// Signs in with username and password. Unknown users, deactivated users and wrong
    /// passwords are indistinguishable, in answer and in work done: each runs one Argon2id
    /// verification. Failures are throttled per account name and per client address.
    ///
    /// The session starts in the state of its next step: a password alone never makes a
    /// session active (see [`rules::after_password`]).
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<IssuedSession, ServiceError> {
        let name: String = username.trim().to_ascii_lowercase().chars().take(64).collect();
        let keys = throttle_keys("login", &name, client);
        let ip = client.ip.map(|i| i.to_string());
        if let Err(e) = self.check_throttle(&keys).await {
            let mut locked = self.audit_record("auth.sign_in", None, None, Outcome::Failure, Some("rate_limited"), ip);
            // A lockout of an existing account belongs to its organization (its failed
            // sign-in report); a name that is nobody's belongs to none.
            let account = match validate::username(&name) {
                Ok(valid) => self.store.user_record_by_username(&valid).await?.filter(|r| r.user.active),
                Err(_) => None,
            };
            if let Some(r) = account {
                locked.org = Some(r.user.org);
                locked.actor = Some(r.user.id);
                locked = locked.object("user", r.user.id);
            }
            self.audit.write(vec![locked]).await?;
            return Err(e);
        }
        let record = match validate::username(&name) {
            Ok(valid) => self.store.user_record_by_username(&valid).await?,
            Err(_) => None,
        };
        let (phc, usable) = match &record {
            Some(r) if r.user.active => match &r.password_hash {
                Some(h) => (h.clone(), true),
                None => ((*self.dummy_hash).clone(), false),
            },
            _ => ((*self.dummy_hash).clone(), false),
        };
        let ok = self.verify(password.to_owned(), phc).await;
        let known = record.as_ref().filter(|r| r.user.active).map(|r| r.user.id);
        let Some(record) = record.clone().filter(|_| ok && usable) else {
            let mut failed = self.audit_record(
                "auth.sign_in",
                None,
                Some("password".into()),
                Outcome::Failure,
                Some("invalid_credentials"),
                ip,
            );
            if let Some(r) = known.and_then(|id| record.as_ref().filter(|r| r.user.id == id)) {
                failed.org = Some(r.user.org);
                failed.actor = Some(r.user.id);
                failed = failed.object("user", r.user.id);
            }
            self.audit.write(vec![failed]).await?;
            self.record_failure(&keys).await?;
            tracing::info!(target: "medhub::auth", outcome = "denied", "sign-in failed");
            return Err(ServiceError::InvalidCredentials);
        };
        self.store.clear_throttle(&keys[0]).await?;
        let enrolled = self.mfa_enrolled(record.user.id).await?;
        let state = rules::after_password(record.must_change_password, enrolled);
        let issued = self.new_session(&record.user, state, None, client, "password").await?;
        tracing::info!(target: "medhub::auth", user = %record.user.id, session = %issued.session.id,
            state = state.as_str(), "password accepted");
        Ok(issued)
    }

    /// Creates a fully signed-in session without any check. For the operator's tooling (CLI,
    /// load generator, tests) only; never reachable from the network.
    pub async fn issue_session(&self, user: &User, state: SessionState) -> Result<IssuedSession, ServiceError> {
        let mfa_at = (state == SessionState::Active).then(|| self.now());
        self.new_session(user, state, mfa_at, &ClientInfo::default(), "operator").await
    }

    pub(super) async fn new_session(
        &self,
        user: &User,
        state: SessionState,
        mfa_at: Option<Timestamp>,
        client: &ClientInfo,
        method: &str,
    ) -> Result<IssuedSession, ServiceError> {
        let token = new_token(TOKEN_PREFIX)?;
        let now = self.now();
        let ttl = SignedDuration::try_from(self.config.session_ttl).unwrap_or(rules::ABSOLUTE_LIFETIME);
        let session = Session {
            id: SessionId::new_v7(),
            user: user.id,
            token_hash: token_hash(&token),
            state,
            created_at: now,
            last_activity_at: now,
            expires_at: now.checked_add(ttl).unwrap_or(Timestamp::MAX),
            revoked_at: None,
            mfa_at,
            ip: client.ip.map(|ip| ip.to_string()),
            user_agent: client.user_agent.clone(),
        };
        // The sign-in's audit record commits with the session, or neither does.
        let signed_in = self.audit.in_session(user, &session, "auth.sign_in", Outcome::Success);
        let signed_in = signed_in.object("session", session.id).target(method).reason(state.as_str());
        self.store.create_session(&session, &[signed_in]).await?;
        Ok(IssuedSession { token, session, user: user.clone() })
    }

    /// Resolves a bearer token to a principal, in any session state (handlers call
    /// [`Principal::require_active`]). An idle or too old session is ended here, at once, with
    /// `session_expired`. This lookup is not activity: call [`touch`](Self::touch) for that.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, ServiceError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Err(ServiceError::Unauthenticated);
        }
        match self.store.session_by_token_hash(&token_hash(token)).await? {
            Some((session, user)) => self.live(session, user).await,
            None => Err(ServiceError::Unauthenticated),
        }
    }

    /// The principal of a live session, by id (after a WebSocket ticket).
    pub async fn principal_for_session(&self, id: SessionId) -> Result<Principal, ServiceError> {
        let session = self.store.session(id).await?.ok_or(ServiceError::Unauthenticated)?;
        let user = self.store.user(session.user).await?.filter(|u| u.active).ok_or(ServiceError::Unauthenticated)?;
        self.live(session, user).await
    }

    async fn live(&self, mut session: Session, user: User) -> Result<Principal, ServiceError> {
        let now = self.now();
        if let Some(pending) = self.activity.lock().get(&session.id) {
            session.last_activity_at = session.last_activity_at.max(*pending);
        }
        if rules::expiry(session.last_activity_at, session.expires_at, self.idle_timeout(user.org), now).is_some() {
            // The sweeper may have written this session's activity and dropped it from memory
            // between the read above and the look at memory: read it again before ending it.
            if let Some(fresh) = self.store.session(session.id).await? {
                session.last_activity_at = session.last_activity_at.max(fresh.last_activity_at);
            }
        }
        if let Some(why) = rules::expiry(session.last_activity_at, session.expires_at, self.idle_timeout(user.org), now)
        {
            self.end_sessions_now(&[(session.id, session.user)], now, why.as_str()).await?;
            tracing::info!(target: "medhub::auth", session = %session.id, reason = why.as_str(), "session expired");
            return Err(ServiceError::SessionExpired(why));
        }
        let permissions = self.permissions_of(user.id).await?;
        Ok(Principal { user, session, permissions })
    }

    /// Records a user action in this session: it restarts the idle timeout. Heartbeats,
    /// long-poll waits, ticket fetches and requests the client marks as background do not
    /// call this.
    pub fn touch(&self, session: SessionId) {
        let now = self.now();
        let mut pending = self.activity.lock();
        let at = pending.entry(session).or_insert(now);
        *at = (*at).max(now);
    }

    /// Writes pending activity to the store. What was written is forgotten only if no newer
    /// activity arrived meanwhile, so a concurrent lookup never sees an older value.
    pub async fn flush_activity(&self) -> Result<(), ServiceError> {
        let batch: Vec<(SessionId, Timestamp)> = self.activity.lock().iter().map(|(k, v)| (*k, *v)).collect();
        if batch.is_empty() {
            return Ok(());
        }
        self.store.record_activity(&batch).await?;
        let mut pending = self.activity.lock();
        for (id, at) in batch {
            if pending.get(&id).is_some_and(|p| *p <= at) {
                pending.remove(&id);
            }
        }
        Ok(())
    }

    /// Ends sessions and closes their connections on this node at once (other nodes close
    /// theirs at their next sweep).
    async fn end_sessions_now(
        &self,
        ended: &[(SessionId, UserId)],
        now: Timestamp,
        why: &str,
    ) -> Result<(), ServiceError> {
        // Each end commits with its `session.end` record.
        let template = self.session_end_template(why);
        for (id, _) in ended {
            self.store.end_session(*id, now, why, Some(&template), &[]).await?;
        }
        self.kick(ended);
        Ok(())
    }

    /// The template of `session.end` records: the store adds each session, its user and the
    /// user's organization, in the transaction that ends it.
    pub(super) fn session_end_template(&self, why: &str) -> medhub_core::audit::AuditRecord {
        self.audit.event("session.end", Outcome::Success).reason(why)
    }

    pub(super) fn kick(&self, ended: &[(SessionId, UserId)]) {
        if ended.is_empty() {
            return;
        }
        let set: HashSet<SessionId> = ended.iter().map(|(s, _)| *s).collect();
        self.hub.kick_sessions(&set);
        let mut pending = self.activity.lock();
        for id in &set {
            pending.remove(id);
        }
    }

    /// Ends every session of a user except `keep`, closing their connections.
    pub(super) async fn end_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        why: &str,
    ) -> Result<Ended, ServiceError> {
        let template = self.session_end_template(why);
        let ended = self.store.end_user_sessions(user, keep, self.now(), why, Some(&template)).await?;
        self.kick(&ended);
        if !ended.is_empty() {
            tracing::info!(target: "medhub::auth", user = %user, count = ended.len(), reason = why, "sessions ended");
        }
        Ok(ended)
    }

    /// Ends the caller's session.
    pub async fn logout(&self, principal: &Principal) -> Result<(), ServiceError> {
        self.end_sessions_now(&[(principal.session.id, principal.user.id)], self.now(), "logout").await
    }

    /// The caller's live sessions, newest first.
    pub async fn my_sessions(&self, principal: &Principal) -> Result<Vec<Session>, ServiceError> {
        principal.require_active()?;
        Ok(self.with_pending_activity(self.store.sessions_for_user(principal.user.id).await?))
    }

    /// Ends one of the caller's own sessions (a lost phone, a shared workstation). Another
    /// user's session id answers `not_found`, like an unknown one.
    pub async fn end_my_session(&self, principal: &Principal, id: SessionId) -> Result<(), ServiceError> {
        principal.require_active()?;
        match self.store.session(id).await? {
            Some(s) if s.user == principal.user.id => {
                self.end_sessions_now(&[(s.id, s.user)], self.now(), "logout_elsewhere").await
            }
            _ => Err(medhub_core::DomainError::SessionNotFound.into()),
        }
    }

    /// Every live session of the administrator's organization, newest first; `user` narrows
    /// to one user (another organization's user is `user_not_found`).
    pub async fn all_sessions(
        &self,
        principal: &Principal,
        user: Option<UserId>,
        before: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<Session>, ServiceError> {
        principal.require(Permission::SessionAdmin)?;
        let sessions = match user {
            Some(u) => {
                self.user_in_org(principal, u).await?;
                self.store.sessions_for_user(u).await?
            }
            None => self.store.live_sessions(principal.user.org, before, limit).await?,
        };
        Ok(self.with_pending_activity(sessions))
    }

    /// Ends any session of the administrator's organization (administrators); another
    /// organization's session is `session_not_found`, like an unknown one.
    pub async fn kill_session(&self, principal: &Principal, id: SessionId) -> Result<(), ServiceError> {
        principal.require(Permission::SessionAdmin)?;
        let s = self.store.session(id).await?.ok_or(medhub_core::DomainError::SessionNotFound)?;
        if self.user_in_org(principal, s.user).await.is_err() {
            return Err(medhub_core::DomainError::SessionNotFound.into());
        }
        // The end, its `session.end` record and the administrator's own record commit together.
        let kill = self
            .audit_record("admin.session_kill", Some(principal), Some(id.to_string()), Outcome::Success, None, None)
            .object("session", id);
        self.store.end_session(s.id, self.now(), "killed", Some(&self.session_end_template("killed")), &[kill]).await?;
        self.kick(&[(s.id, s.user)]);
        tracing::info!(target: "medhub::auth", by = %principal.user.id, session = %id, "session killed");
        Ok(())
    }

    fn with_pending_activity(&self, mut sessions: Vec<Session>) -> Vec<Session> {
        let pending = self.activity.lock();
        for s in &mut sessions {
            if let Some(at) = pending.get(&s.id) {
                s.last_activity_at = s.last_activity_at.max(*at);
            }
        }
        sessions
    }

    /// Sets the caller's organization's idle timeout (administrators, whole minutes, 1 to 720).
    pub async fn set_idle_timeout(&self, principal: &Principal, minutes: i64) -> Result<(), ServiceError> {
        principal.require(Permission::OrgSettings)?;
        principal.require_step_up(self.now())?;
        let d = rules::idle_timeout_from_minutes(minutes)
            .ok_or_else(|| ServiceError::InvalidRequest("idle_timeout_minutes must be between 1 and 720".into()))?;
        let what = format!("idle_timeout_minutes={minutes}");
        let r = self.audit_record("admin.settings", Some(principal), Some(what), Outcome::Success, None, None);
        self.store.set_idle_timeout(principal.user.org, d, &[r.object("org", principal.user.org)]).await?;
        self.idle_timeouts.write().insert(principal.user.org, d);
        tracing::info!(target: "medhub::auth", by = %principal.user.id, minutes, "idle timeout changed");
        Ok(())
    }

    // --- WebSocket tickets ------------------------------------------------------------------

    /// A single-use ticket for opening a WebSocket, valid for 30 seconds. The long-lived token
    /// then never travels on the WebSocket, and never in a URL.
    pub async fn ws_ticket(&self, principal: &Principal) -> Result<String, ServiceError> {
        principal.require_active()?;
        let ticket = new_token(TICKET_PREFIX)?;
        let expires = self.now().checked_add(WS_TICKET_TTL).unwrap_or(Timestamp::MAX);
        self.store.create_ws_ticket(&token_hash(&ticket), principal.session.id, expires).await?;
        Ok(ticket)
    }

    /// Uses a ticket: the principal of its session. Unknown, used and expired tickets are
    /// refused alike.
    pub async fn redeem_ws_ticket(&self, ticket: &str) -> Result<Principal, ServiceError> {
        if !ticket.starts_with(TICKET_PREFIX) || ticket.len() > 128 {
            return Err(ServiceError::Unauthenticated);
        }
        let session = self.store.consume_ws_ticket(&token_hash(ticket), self.now()).await?;
        self.principal_for_session(session.ok_or(ServiceError::Unauthenticated)?).await
    }

    // --- sweeper ----------------------------------------------------------------------------

    /// Every `interval`: writes pending activity, ends idle and too old sessions, and closes
    /// the connections of sessions ended anywhere (another node, `medhub admin`). With the
    /// default 5 s, a socket of an ended session closes within 5 s.
    pub async fn run_sweeper(self, interval: Duration) {
        // Overlap successive windows generously: a revocation is never missed because of a
        // small clock difference between nodes, and kicking twice is harmless.
        let overlap = SignedDuration::from_secs(60);
        let mut since = self.now().checked_sub(overlap).unwrap_or(self.now());
        loop {
            tokio::time::sleep(interval).await;
            let now = self.now();
            if let Err(e) = self.sweep_once(since, now).await {
                tracing::warn!(error = %e, "session sweep failed; retrying");
                continue;
            }
            since = now.checked_sub(overlap).unwrap_or(now);
        }
    }

    async fn sweep_once(&self, since: Timestamp, now: Timestamp) -> Result<(), ServiceError> {
        self.refresh_settings().await?;
        self.flush_activity().await?;
        let expired = self.store.end_expired_sessions(now, Some(&self.session_end_template("expired"))).await?;
        if !expired.is_empty() {
            tracing::info!(target: "medhub::auth", count = expired.len(), "sessions expired");
        }
        self.kick(&expired);
        let ended = self.store.revoked_sessions_since(since).await?;
        if !ended.is_empty() {
            let set: HashSet<SessionId> = ended.into_iter().collect();
            let kicked = self.hub.kick_sessions(&set);
            if kicked > 0 {
                tracing::info!(kicked, "closed connections of ended sessions");
            }
        }
        Ok(())
    }
}
