//! Account lifecycle: bootstrap, invitation, activation, deactivation, password changes and
//! resets, role changes and second-factor resets. Every change that weakens a credential or
//! a privilege ends the sessions it concerns.

use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::Outcome;
use medhub_core::authz::Permission;
use medhub_core::model::{Org, SessionState, SystemRole, User};
use medhub_core::session as rules;
use medhub_core::{DomainError, OrgId, UserId, validate};
use medhub_store::UserRecord;

use super::{
    AuthService, ClientInfo, INVITATION_PREFIX, Principal, address_throttle_key, generate_password, new_token,
    token_hash,
};
use crate::ServiceError;

/// How long an invitation code can be redeemed.
const INVITATION_TTL: SignedDuration = SignedDuration::from_hours(7 * 24);

/// A user to create.
#[derive(Clone)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub role: SystemRole,
    /// `None` creates an account that cannot sign in with a password (yet).
    pub password: Option<String>,
    /// Force a password change at first sign-in (for passwords an administrator chose).
    pub must_change_password: bool,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser").field("username", &self.username).field("role", &self.role).finish_non_exhaustive()
    }
}

/// An invitation code, shown once to the administrator who hands it to the invitee.
#[derive(Clone)]
pub struct Invitation {
    pub code: String,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for Invitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invitation").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

impl AuthService {
    /// Creates the organization and an administrator on first start. Returns the
    /// administrator's one-time password, or `None` when the store was already bootstrapped.
    pub async fn bootstrap(
        &self,
        org_name: &str,
        admin_username: &str,
    ) -> Result<Option<(User, String)>, ServiceError> {
        if self.store.org().await?.is_some() {
            return Ok(None);
        }
        let (org, record, password) = self.new_org(org_name, admin_username).await?;
        if self.store.bootstrap(&org, &record).await? { Ok(Some((record.user, password))) } else { Ok(None) }
    }

    /// Creates a further organization (a tenant) with its first administrator: the
    /// operator's `medhub admin org create`. There is no HTTP route for it, since that would
    /// need a role above every tenant. Returns the administrator's one-time password, to be
    /// changed at first sign-in (and a second factor enrolled) like bootstrap's.
    pub async fn create_org(&self, name: &str, admin_username: &str) -> Result<(Org, User, String), ServiceError> {
        if self.store.org().await?.is_none() {
            return Err(ServiceError::InvalidRequest("not bootstrapped yet: start medhub once first".into()));
        }
        let (org, record, password) = self.new_org(name, admin_username).await?;
        let what = format!("{} admin={}", org.id, record.user.id);
        let created =
            self.audit.event("org.create", Outcome::Success).object("org", org.id).target(what).reason("operator");
        let created = medhub_core::audit::AuditRecord { org: Some(org.id), ..created };
        self.store.create_org(&org, &record, &[created]).await.map_err(|e| match e {
            medhub_store::StoreError::Conflict(m) => ServiceError::InvalidRequest(m.into()),
            other => other.into(),
        })?;
        tracing::info!(target: "medhub::auth", org = %org.id, admin = %record.user.id, "organization created");
        self.idle_timeouts.write().insert(org.id, org.idle_timeout);
        Ok((org, record.user, password))
    }

    /// An organization and its first administrator, with a generated one-time password.
    async fn new_org(&self, name: &str, admin_username: &str) -> Result<(Org, UserRecord, String), ServiceError> {
        let now = self.now();
        let org = Org {
            id: OrgId::new_v7(),
            name: validate::display_name(name)?,
            created_at: now,
            idle_timeout: rules::DEFAULT_IDLE_TIMEOUT,
        };
        let password = generate_password()?;
        let user = User {
            id: UserId::new_v7(),
            org: org.id,
            username: validate::username(admin_username)?,
            display_name: "Administrator".to_owned(),
            role: SystemRole::Admin,
            active: true,
            created_at: now,
        };
        let record =
            UserRecord { user, password_hash: Some(self.hash(password.clone()).await?), must_change_password: true };
        Ok((org, record, password))
    }

    /// Creates a user in the first organization (bootstrap's).
    pub async fn create_user(&self, new: NewUser) -> Result<User, ServiceError> {
        let org = self.store.org().await?.ok_or_else(|| ServiceError::InvalidRequest("not bootstrapped yet".into()))?;
        self.create_user_in(org.id, new).await
    }

    /// Creates a user in an organization. Usernames are unique on the whole server, so that
    /// signing in needs no choice of organization.
    pub async fn create_user_in(&self, org: OrgId, new: NewUser) -> Result<User, ServiceError> {
        let username = validate::username(&new.username)?;
        let display_name = validate::display_name(&new.display_name)?;
        let password_hash = match new.password {
            Some(p) => {
                self.check_password_rules(&p)?;
                Some(self.hash(p).await?)
            }
            None => None,
        };
        let user = User {
            id: UserId::new_v7(),
            org,
            username,
            display_name,
            role: new.role,
            active: true,
            created_at: self.now(),
        };
        self.store
            .create_user(&UserRecord {
                user: user.clone(),
                password_hash,
                must_change_password: new.must_change_password,
            })
            .await?;
        Ok(user)
    }

    /// Invites a new user (administrators): the account exists at once but cannot sign in
    /// until the invitee sets a password with the code, within 7 days.
    pub async fn invite(
        &self,
        principal: &Principal,
        username: &str,
        display_name: &str,
        role: SystemRole,
    ) -> Result<(User, Invitation), ServiceError> {
        principal.require(Permission::UserAdmin)?;
        if role == SystemRole::Admin {
            principal.require_step_up(self.now())?;
        }
        let user = self
            .create_user_in(
                principal.user.org,
                NewUser {
                    username: username.to_owned(),
                    display_name: display_name.to_owned(),
                    role,
                    password: None,
                    must_change_password: false,
                },
            )
            .await?;
        let invitation = self.new_invitation(principal, user.id, "admin.invite").await?;
        tracing::info!(target: "medhub::auth", by = %principal.user.id, user = %user.id, "user invited");
        Ok((user, invitation))
    }

    /// A fresh invitation for an existing user (administrators): a lost code, or a password
    /// reset in person. Redeeming it replaces the password and ends every session.
    pub async fn reinvite(&self, principal: &Principal, user: UserId) -> Result<Invitation, ServiceError> {
        principal.require(Permission::UserAdmin)?;
        principal.require_step_up(self.now())?;
        let target = self.user_in_org(principal, user).await?;
        if !target.active {
            return Err(DomainError::UserNotFound.into());
        }
        self.new_invitation(principal, target.id, "admin.reinvite").await
    }

    /// An invitation for `user` by `principal`, committed with its `action` record.
    async fn new_invitation(
        &self,
        principal: &Principal,
        user: UserId,
        action: &str,
    ) -> Result<Invitation, ServiceError> {
        let code = new_token(INVITATION_PREFIX)?;
        let now = self.now();
        let expires_at = now.checked_add(INVITATION_TTL).unwrap_or(Timestamp::MAX);
        let r = self.audit_record(action, Some(principal), Some(user.to_string()), Outcome::Success, None, None);
        let r = r.object("user", user);
        self.store.create_invitation(&token_hash(&code), user, principal.user.id, now, expires_at, &[r]).await?;
        Ok(Invitation { code, expires_at })
    }

    /// Redeems an invitation: sets the password. The invitee then signs in and enrols a
    /// second factor. Unknown, used and expired codes get the same answer; attempts are
    /// throttled per client address.
    pub async fn accept_invitation(
        &self,
        code: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<User, ServiceError> {
        // Codes are 256-bit random, so guessing is hopeless; the per-address throttle only
        // keeps a host from hammering the endpoint. (No per-account key: the code names no
        // account, and a global key would let anyone block every invitation.)
        let keys: Vec<String> = address_throttle_key("invite", client).into_iter().collect();
        self.check_throttle(&keys).await?;
        if !code.starts_with(INVITATION_PREFIX) || code.len() > 128 {
            self.record_failure(&keys).await?;
            return Err(ServiceError::InvalidInvitation);
        }
        self.check_password_rules(password)?;
        let hash = self.hash(password.to_owned()).await?;
        let accepted = self.audit.event("auth.invite_accept", Outcome::Success).reason("password_set");
        let Some(user) = self.store.redeem_invitation(&token_hash(code), &hash, self.now(), Some(&accepted)).await?
        else {
            self.record_failure(&keys).await?;
            return Err(ServiceError::InvalidInvitation);
        };
        self.end_user_sessions(user, None, "password_reset").await?;
        tracing::info!(target: "medhub::auth", user = %user, "invitation accepted");
        self.store.user(user).await?.ok_or_else(|| DomainError::UserNotFound.into())
    }

    /// Sets a user's password (operator reset): must be changed at next sign-in, and every
    /// session of the user ends.
    pub async fn reset_password(&self, user: UserId, password: String) -> Result<(), ServiceError> {
        self.check_password_rules(&password)?;
        let target = self.store.user(user).await?.ok_or(DomainError::UserNotFound)?;
        let hash = self.hash(password).await?;
        let reset = self.audit.event("admin.password_reset", Outcome::Success).reason("operator");
        let reset = medhub_core::audit::AuditRecord { org: Some(target.org), ..reset.object("user", user) };
        self.store.set_password(user, &hash, true, &[reset]).await?;
        self.end_user_sessions(user, None, "password_reset").await?;
        Ok(())
    }

    /// Activates or deactivates a user: an administrator (`by`) or the operator (`None`).
    /// Deactivation ends every session and closes the user's connections at once on this
    /// node, within a sweep on the others. The change, its `admin.user_update` record and the
    /// `session.end` record of every ended session commit together.
    pub async fn set_active(&self, by: Option<&Principal>, user: UserId, active: bool) -> Result<(), ServiceError> {
        let target = self.store.user(user).await?.ok_or(DomainError::UserNotFound)?;
        let what = format!("{user} active={active}");
        let record = match by {
            Some(p) => self.audit_record("admin.user_update", Some(p), Some(what), Outcome::Success, None, None),
            None => medhub_core::audit::AuditRecord {
                org: Some(target.org),
                ..self.audit.event("admin.user_update", Outcome::Success).target(what).reason("operator")
            },
        }
        .object("user", user);
        let ended = self.session_end_template("deactivated");
        if !self.store.set_user_active(user, active, self.now(), &[record], Some(&ended)).await? {
            return Err(DomainError::UserNotFound.into());
        }
        if !active {
            self.hub.kick_user(user);
            tracing::info!(target: "medhub::auth", user = %user, "user deactivated");
        }
        Ok(())
    }

    /// Administrator changes to another account: activation and the system role. Both need a
    /// step-up. Deactivation and losing the administrator role end the user's sessions.
    pub async fn update_user(
        &self,
        principal: &Principal,
        user: UserId,
        active: Option<bool>,
        role: Option<SystemRole>,
    ) -> Result<User, ServiceError> {
        principal.require(Permission::UserAdmin)?;
        principal.require_step_up(self.now())?;
        let target = self.user_in_org(principal, user).await?;
        if user == principal.user.id && (active == Some(false) || role == Some(SystemRole::User)) {
            return Err(ServiceError::InvalidRequest("you cannot deactivate or demote yourself".into()));
        }
        if let Some(role) = role.filter(|r| *r != target.role) {
            let what = format!("{user} role={}", role.as_str());
            let record = self
                .audit_record("admin.user_update", Some(principal), Some(what), Outcome::Success, None, None)
                .object("user", user);
            self.store.set_user_role(user, role, &[record]).await?;
            if role == SystemRole::User {
                self.end_user_sessions(user, None, "role_removed").await?;
            }
            tracing::info!(target: "medhub::auth", by = %principal.user.id, user = %user, role = role.as_str(), "role changed");
        }
        if let Some(active) = active {
            self.set_active(Some(principal), user, active).await?;
        }
        self.store.user(user).await?.ok_or_else(|| DomainError::UserNotFound.into())
    }

    /// Removes a user's second factors (administrators, with step-up): the user enrols again
    /// at the next sign-in. Every session of the user ends.
    pub async fn reset_mfa(&self, principal: &Principal, user: UserId) -> Result<(), ServiceError> {
        principal.require(Permission::UserAdmin)?;
        principal.require_step_up(self.now())?;
        self.user_in_org(principal, user).await?;
        let r =
            self.audit_record("admin.mfa_reset", Some(principal), Some(user.to_string()), Outcome::Success, None, None);
        self.store.remove_second_factors(user, &[r.object("user", user)]).await?;
        self.end_user_sessions(user, None, "mfa_reset").await?;
        tracing::info!(target: "medhub::auth", by = %principal.user.id, user = %user, "second factors reset");
        Ok(())
    }

    /// Changes the caller's password after checking the current one. Every other session of
    /// the user ends. A session that signed in with a one-time password moves on to its
    /// second factor.
    pub async fn change_password(&self, principal: &Principal, current: &str, new: &str) -> Result<(), ServiceError> {
        principal.require_step(&[SessionState::Active, SessionState::PasswordChangeRequired])?;
        self.check_password_rules(new)?;
        // A stolen session must not become a way to guess the password: the check of the
        // current one is throttled like sign-in.
        let keys = vec![format!("password:acct:{}", principal.user.id)];
        self.check_throttle(&keys).await?;
        let record = self.store.user_record(principal.user.id).await?.ok_or(ServiceError::Unauthenticated)?;
        let phc = record.password_hash.unwrap_or_else(|| (*self.dummy_hash).clone());
        if !self.verify(current.to_owned(), phc).await {
            let reason = Some("invalid_credentials");
            self.audit_event("auth.password_change", Some(principal), None, Outcome::Failure, reason, None).await?;
            self.record_failure(&keys).await?;
            return Err(ServiceError::InvalidCredentials);
        }
        self.store.clear_throttle(&keys[0]).await?;
        if current == new {
            return Err(ServiceError::InvalidRequest("the new password must differ from the current one".into()));
        }
        let hash = self.hash(new.to_owned()).await?;
        let changed = self.audit_record("auth.password_change", Some(principal), None, Outcome::Success, None, None);
        self.store.set_password(principal.user.id, &hash, false, &[changed]).await?;
        self.end_user_sessions(principal.user.id, Some(principal.session.id), "password_changed").await?;
        let enrolled = self.mfa_enrolled(principal.user.id).await?;
        let next = rules::after_password_change(principal.session.state, enrolled);
        if next != principal.session.state {
            self.store.set_session_state(principal.session.id, next, None, &[]).await?;
        }
        tracing::info!(target: "medhub::auth", user = %principal.user.id, "password changed");
        Ok(())
    }

    /// Looks a user up by username (for the CLI).
    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>, ServiceError> {
        let name = validate::username(username)?;
        Ok(self.store.user_record_by_username(&name).await?.map(|r| r.user))
    }
}
