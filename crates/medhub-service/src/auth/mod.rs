//! Accounts and sessions: Argon2id passwords, opaque bearer tokens stored as SHA-256 hashes,
//! second factors, idle and absolute expiry, WebSocket tickets, throttling, and single sign-on:
//! OpenID Connect (`sso`) and SAML 2.0 (`saml`, behind the `saml` feature).
//!
//! [`Principal`] is what every handler receives. The session state gates what a session may
//! do in one place: a session is `active` only after the password *and* a second factor.
//! The rules themselves (expiry, state transitions, step-up, throttling) are pure functions in
//! `medhub_core::session`; this module does the I/O around them.

mod accounts;
mod mfa;
mod passkey;
mod roles;
#[cfg(feature = "saml")]
mod saml;
mod saml_config;
mod sessions;
mod sso;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use medhub_core::authz::{Permission, Permissions};
use medhub_core::model::{Session, SessionState, User};
use medhub_core::session::{self as rules, ThrottlePolicy};
use medhub_core::{Clock, OrgId, SessionId, UserId};
use medhub_store::DynStore;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::audit::AuditSink;
use crate::hub::Hub;
use crate::server_key::ServerKey;
use crate::{ServiceConfig, ServiceError};

pub use accounts::{Invitation, NewUser};
pub use mfa::{Enrolled, MfaProof, TotpEnrollment, totp_code};
pub use passkey::{CEREMONY_TTL, PasskeyChallenge, PasskeyConfig, PasskeyPurpose, PasskeyRegistered};
#[cfg(feature = "saml")]
pub use saml::MAX_SAML_RESPONSE_BYTES;
pub use saml_config::{DEFAULT_ACCEPTED_AUTHN_CONTEXTS, SamlConfig, pem_certificates};
pub use sessions::WS_TICKET_TTL;
pub use sso::{DEFAULT_ACCEPTED_AMR, OidcConfig, SsoSignIn, check_return_to, sso_username};

/// Prefix of every session token, so that leaked tokens are recognisable by scanners.
pub const TOKEN_PREFIX: &str = "mh_";
/// Prefix of WebSocket tickets.
pub const TICKET_PREFIX: &str = "mht_";
/// Prefix of invitation codes.
pub const INVITATION_PREFIX: &str = "mhi_";

/// A verified caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: User,
    pub session: Session,
    /// The union of the permissions of the user's roles, read with the session.
    pub permissions: Permissions,
}

impl Principal {
    pub fn user_id(&self) -> UserId {
        self.user.id
    }

    /// Fails unless the session is fully signed in (password and second factor).
    pub fn require_active(&self) -> Result<(), ServiceError> {
        match self.session.state {
            SessionState::Active => Ok(()),
            SessionState::PasswordChangeRequired => Err(ServiceError::PasswordChangeRequired),
            SessionState::MfaEnrollmentRequired => Err(ServiceError::MfaEnrollmentRequired),
            SessionState::MfaRequired => Err(ServiceError::MfaRequired),
        }
    }

    /// Fails unless the session is in one of `states`; the error names the step the session
    /// must take next.
    pub fn require_step(&self, states: &[SessionState]) -> Result<(), ServiceError> {
        if states.contains(&self.session.state) {
            return Ok(());
        }
        self.require_active()?;
        Err(medhub_core::DomainError::Forbidden.into())
    }

    /// Fails unless the session is active and one of the user's roles grants `p`.
    pub fn require(&self, p: Permission) -> Result<(), ServiceError> {
        self.require_active()?;
        if self.permissions.contains(p) { Ok(()) } else { Err(ServiceError::PermissionRequired) }
    }

    /// Fails unless the second factor was proven within the step-up window (5 minutes):
    /// sensitive actions ask for it again.
    pub fn require_step_up(&self, now: Timestamp) -> Result<(), ServiceError> {
        self.require_active()?;
        if rules::step_up_fresh(self.session.mfa_at, now) { Ok(()) } else { Err(ServiceError::StepUpRequired) }
    }
}

/// Where a request came from: recorded on new sessions and used as a throttle key.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// The `User-Agent` is shown in session lists; it is cut to 200 characters.
    pub fn new(ip: Option<IpAddr>, user_agent: Option<&str>) -> Self {
        let user_agent = user_agent.map(|ua| ua.chars().filter(|c| !c.is_control()).take(200).collect());
        Self { ip, user_agent }
    }
}

/// A new session and its token. The token exists only here and in the client's hands.
#[derive(Clone)]
pub struct IssuedSession {
    pub token: String,
    pub session: Session,
    pub user: User,
}

impl std::fmt::Debug for IssuedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSession").field("session", &self.session.id).field("user", &self.user.id).finish()
    }
}

/// Sign-in, sessions, second factors and accounts.
#[derive(Clone)]
pub struct AuthService {
    store: DynStore,
    config: Arc<ServiceConfig>,
    clock: Arc<dyn Clock>,
    hub: Arc<Hub>,
    hashing: Arc<Semaphore>,
    /// Verified against when the username is unknown, so both cases take the same work.
    dummy_hash: Arc<String>,
    key: ServerKey,
    /// User activity not yet written to the store: session → newest activity. Written by
    /// the sweeper every few seconds; read together with the stored value, so expiry on this
    /// node is exact.
    activity: Arc<Mutex<HashMap<SessionId, Timestamp>>>,
    /// Each organization's idle timeout, refreshed by the sweeper.
    idle_timeouts: Arc<parking_lot::RwLock<HashMap<OrgId, SignedDuration>>>,
    /// Per account, and per client address.
    throttle: ThrottlePolicy,
    throttle_ip: ThrottlePolicy,
    /// Password verifications run (known and unknown users alike), for tests and metrics.
    password_checks: Arc<AtomicU64>,
    audit: AuditSink,
    /// The OpenID Connect provider, when configured.
    oidc: Option<Arc<sso::Oidc>>,
    /// The passkey relying party, when configured.
    webauthn: Option<Arc<webauthn_rs::Webauthn>>,
    /// The SAML identity provider, when configured.
    #[cfg(feature = "saml")]
    saml: Option<Arc<saml::Saml>>,
}

/// OWASP's recommended Argon2id parameters: 19 MiB, 2 iterations, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(password: &str) -> Result<String, ServiceError> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| ServiceError::InvalidRequest(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&raw).map_err(|e| ServiceError::InvalidRequest(format!("salt: {e}")))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::InvalidRequest(format!("password could not be hashed: {e}")))
}

fn verify_blocking(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// SHA-256 of a token: what the store keeps and looks up.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ServiceError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| ServiceError::InvalidRequest(format!("no randomness: {e}")))?;
    Ok(bytes)
}

/// A prefixed random token of 256 bits.
fn new_token(prefix: &str) -> Result<String, ServiceError> {
    let bytes = random_bytes::<32>()?;
    Ok(format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// A random password for bootstrap and resets: 20 characters from an unambiguous alphabet
/// (about 113 bits).
pub fn generate_password() -> Result<String, ServiceError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(20);
    while out.len() < 20 {
        for b in random_bytes::<64>()? {
            // Rejection sampling keeps the choice uniform.
            if (b as usize) < ALPHABET.len() * (256 / ALPHABET.len()) && out.len() < 20 {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

impl AuthService {
    pub fn new(
        store: DynStore,
        config: Arc<ServiceConfig>,
        clock: Arc<dyn Clock>,
        hub: Arc<Hub>,
        key: ServerKey,
        audit: AuditSink,
    ) -> Self {
        let dummy = hash_blocking("medhub-dummy-password-for-timing").unwrap_or_default();
        let permits = config.max_concurrent_hashes.max(1);
        let oidc = config.oidc.clone().and_then(|c| match sso::Oidc::new(c) {
            Ok(o) => Some(Arc::new(o)),
            Err(e) => {
                tracing::error!(error = %e, "no HTTP client for the identity provider");
                None
            }
        });
        let webauthn = config.passkeys.as_ref().and_then(|c| match c.relying_party() {
            Ok(w) => Some(Arc::new(w)),
            Err(e) => {
                tracing::error!(error = %e, "the passkey relying party is misconfigured");
                None
            }
        });
        #[cfg(feature = "saml")]
        let saml = config.saml.clone().and_then(|c| match saml::Saml::new(c) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::error!(error = %e, "the SAML identity provider's certificate is unusable");
                None
            }
        });
        Self {
            webauthn,
            store,
            config,
            clock,
            hub,
            hashing: Arc::new(Semaphore::new(permits)),
            dummy_hash: Arc::new(dummy),
            key,
            activity: Arc::new(Mutex::new(HashMap::new())),
            idle_timeouts: Arc::default(),
            throttle: ThrottlePolicy::default(),
            throttle_ip: ThrottlePolicy::per_address(),
            password_checks: Arc::new(AtomicU64::new(0)),
            audit,
            oidc,
            #[cfg(feature = "saml")]
            saml,
        }
    }

    /// Checks the server key against the value stored with the first secret it protected, and
    /// loads the organization's settings. A different key would make every second factor
    /// unreadable: the server refuses to start instead.
    pub async fn start(&self) -> Result<(), ServiceError> {
        if self.config.oidc.is_some() && self.oidc.is_none() {
            return Err(ServiceError::SsoUnavailable("the HTTP client for the identity provider failed".into()));
        }
        if self.config.passkeys.is_some() && self.webauthn.is_none() {
            return Err(ServiceError::InvalidRequest(
                "passkeys: the relying party is misconfigured (see the log)".into(),
            ));
        }
        #[cfg(feature = "saml")]
        let saml_ready = self.config.saml.is_none() || self.saml.is_some();
        #[cfg(not(feature = "saml"))]
        let saml_ready = self.config.saml.is_none();
        if !saml_ready {
            return Err(ServiceError::SsoUnavailable(
                "SAML is configured, but this build has no SAML support or the IdP certificate is unusable".into(),
            ));
        }
        if let Some(stored) = self.store.key_check(None, self.clock.now()).await?
            && !self.key.matches(&stored)
        {
            return Err(ServiceError::ServerKeyMismatch);
        }
        // The shipped catalogue is kept current; custom roles are the organization's.
        self.store.upsert_builtin_roles(&medhub_core::authz::builtin_roles(), self.clock.now()).await?;
        self.refresh_settings().await?;
        // A provider bound to an organization that does not exist (yet: the operator may be
        // about to create it) refuses every sign-in; say so now rather than at the first one.
        let orgs = self.store.orgs().await?;
        let named = [
            ("oidc", self.config.oidc.as_ref().and_then(|c| c.organization.as_deref())),
            ("saml", self.config.saml.as_ref().and_then(|c| c.organization.as_deref())),
        ];
        for (provider, name) in named {
            if let Some(name) = name
                && !orgs.is_empty()
                && !orgs.iter().any(|o| o.is_named(name))
            {
                tracing::warn!(target: "medhub::auth", provider, organization = name,
                    "the SSO provider's organization does not exist; its sign-ins are refused until it does");
            }
        }
        Ok(())
    }

    /// Pins the server key in the store before it protects its first secret.
    async fn pin_server_key(&self) -> Result<(), ServiceError> {
        let stored = self.store.key_check(Some(&self.key.check_value()?), self.clock.now()).await?;
        match stored {
            Some(v) if self.key.matches(&v) => Ok(()),
            _ => Err(ServiceError::ServerKeyMismatch),
        }
    }

    /// The permissions a user's roles grant.
    pub(crate) async fn permissions_of(&self, user: UserId) -> Result<Permissions, ServiceError> {
        let mut out = Permissions::NONE;
        for names in self.store.user_permission_names(user).await? {
            out = out.union(Permissions::from_names(&names).map_err(|n| {
                ServiceError::Store(medhub_store::StoreError::Corrupt(format!("unknown permission {n:?} in a role")))
            })?);
        }
        Ok(out)
    }

    async fn refresh_settings(&self) -> Result<(), ServiceError> {
        let timeouts = self.store.orgs().await?.into_iter().map(|o| (o.id, o.idle_timeout)).collect();
        *self.idle_timeouts.write() = timeouts;
        Ok(())
    }

    /// A user of the principal's organization. Another organization's user is
    /// `user_not_found`, exactly like an unknown id: tenants never learn of each other.
    pub async fn user_in_org(&self, principal: &Principal, user: UserId) -> Result<User, ServiceError> {
        let found = self.store.user(user).await?.filter(|u| u.org == principal.user.org);
        found.ok_or_else(|| medhub_core::DomainError::UserNotFound.into())
    }

    /// Those of `users` who belong to the principal's organization, in the order given;
    /// unknown ids and other organizations' users are left out.
    pub async fn users_in_org(&self, principal: &Principal, users: &[UserId]) -> Result<Vec<UserId>, ServiceError> {
        let own: std::collections::HashSet<UserId> =
            self.store.users(users).await?.into_iter().filter(|u| u.org == principal.user.org).map(|u| u.id).collect();
        Ok(users.iter().copied().filter(|u| own.contains(u)).collect())
    }

    /// An organization's idle timeout as this node knows it (re-read at every sweep, so a
    /// change made on another node holds here within one sweep interval).
    pub fn idle_timeout(&self, org: OrgId) -> SignedDuration {
        self.idle_timeouts.read().get(&org).copied().unwrap_or(rules::DEFAULT_IDLE_TIMEOUT)
    }

    /// How many password verifications ran since start (unknown users included).
    pub fn password_checks(&self) -> u64 {
        self.password_checks.load(Ordering::Relaxed)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A record of a security event by `principal` (or by nobody yet), now.
    fn audit_record(
        &self,
        action: &str,
        principal: Option<&Principal>,
        target: Option<String>,
        outcome: medhub_core::audit::Outcome,
        reason: Option<&str>,
        ip: Option<String>,
    ) -> medhub_core::audit::AuditRecord {
        let mut r = match principal {
            Some(p) => self.audit.by(p, action, outcome),
            None => self.audit.event(action, outcome),
        };
        r.target = target;
        r.reason = reason.map(str::to_owned);
        if ip.is_some() {
            r.ip = ip;
        }
        r
    }

    /// Writes a security event by `principal` (or by nobody yet) to the audit log before
    /// returning; an error means it is not stored and the caller refuses (fail closed).
    async fn audit_event(
        &self,
        action: &str,
        principal: Option<&Principal>,
        target: Option<String>,
        outcome: medhub_core::audit::Outcome,
        reason: Option<&str>,
        ip: Option<String>,
    ) -> Result<(), ServiceError> {
        self.audit.write(vec![self.audit_record(action, principal, target, outcome, reason, ip)]).await
    }

    async fn hash(&self, password: String) -> Result<String, ServiceError> {
        let _permit = self.hashing.acquire().await.map_err(|_| ServiceError::PipelineStopped)?;
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(|_| ServiceError::InvalidRequest("password hashing was interrupted".into()))?
    }

    /// Checks a password against its Argon2id hash (counted in `password_checks`).
    async fn verify(&self, password: String, phc: String) -> bool {
        self.password_checks.fetch_add(1, Ordering::Relaxed);
        self.verify_hash(password, phc).await
    }

    /// Argon2id verification off the runtime, at most `max_concurrent_hashes` at a time.
    async fn verify_hash(&self, secret: String, phc: String) -> bool {
        let Ok(_permit) = self.hashing.acquire().await else { return false };
        tokio::task::spawn_blocking(move || verify_blocking(&secret, &phc)).await.unwrap_or(false)
    }

    fn check_password_rules(&self, password: &str) -> Result<(), ServiceError> {
        medhub_core::validate::password(password, self.config.min_password_chars, self.config.max_password_chars)?;
        Ok(())
    }

    // --- throttling -------------------------------------------------------------------------

    /// Fails with `rate_limited` while any of `keys` is locked out.
    async fn check_throttle(&self, keys: &[String]) -> Result<(), ServiceError> {
        let now = self.now();
        let mut wait = SignedDuration::ZERO;
        for (k, t) in self.store.throttles(keys).await? {
            if let Err(w) = self.policy(&k).check(Some(&t), now) {
                wait = wait.max(w);
            }
        }
        if wait.is_positive() {
            let secs = (wait.as_millis() + 999) / 1000;
            return Err(ServiceError::Throttled { retry_after_secs: secs.max(1) as u64 });
        }
        Ok(())
    }

    /// [`check_throttle`](Self::check_throttle) for a second-factor step: a refusal is also
    /// audited, as `action` on `what` (the factor), with the reason `rate_limited`.
    async fn check_factor_throttle(
        &self,
        keys: &[String],
        action: &str,
        principal: &Principal,
        what: &str,
        ip: &Option<String>,
    ) -> Result<(), ServiceError> {
        let checked = self.check_throttle(keys).await;
        if checked.is_err() {
            let (outcome, reason) = (medhub_core::audit::Outcome::Failure, Some("rate_limited"));
            self.audit_event(action, Some(principal), Some(what.into()), outcome, reason, ip.clone()).await?;
        }
        checked
    }

    fn policy(&self, key: &str) -> &ThrottlePolicy {
        if key.contains(":ip:") { &self.throttle_ip } else { &self.throttle }
    }

    /// Counts one failure against every key.
    async fn record_failure(&self, keys: &[String]) -> Result<(), ServiceError> {
        let now = self.now();
        let current: HashMap<String, _> = self.store.throttles(keys).await?.into_iter().collect();
        for k in keys {
            let next = self.policy(k).failure(current.get(k), now);
            self.store.put_throttle(k, &next).await?;
        }
        Ok(())
    }
}

/// The throttle keys of an attempt: the account first, then the client's address.
fn throttle_keys(kind: &str, account: &str, client: &ClientInfo) -> Vec<String> {
    let mut keys = vec![format!("{kind}:acct:{account}")];
    keys.extend(address_throttle_key(kind, client));
    keys
}

/// The per-address throttle key alone, for attempts that name no account.
/// Without the `saml` feature, SAML sign-in is never configured.
#[cfg(not(feature = "saml"))]
impl AuthService {
    pub fn saml_configured(&self) -> Result<(), ServiceError> {
        Err(ServiceError::SsoNotConfigured)
    }

    pub fn saml_metadata(&self) -> Result<String, ServiceError> {
        Err(ServiceError::SsoNotConfigured)
    }

    pub async fn saml_begin(&self, _return_to: Option<&str>) -> Result<String, ServiceError> {
        Err(ServiceError::SsoNotConfigured)
    }

    pub async fn saml_finish(&self, _saml_response: &str, _client: &ClientInfo) -> Result<SsoSignIn, ServiceError> {
        Err(ServiceError::SsoNotConfigured)
    }
}

fn address_throttle_key(kind: &str, client: &ClientInfo) -> Option<String> {
    client.ip.map(|ip| format!("{kind}:ip:{ip}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let a = new_token(TOKEN_PREFIX).unwrap();
        let b = new_token(TOKEN_PREFIX).unwrap();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn generated_passwords_are_long_and_varied() {
        let p = generate_password().unwrap();
        assert_eq!(p.chars().count(), 20);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(p, generate_password().unwrap());
    }

    #[test]
    fn argon2id_hashes_verify_and_use_owasp_parameters() {
        let h = hash_blocking("correct horse battery staple").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_blocking("correct horse battery staple", &h));
        assert!(!verify_blocking("Correct horse battery staple", &h));
        assert!(!verify_blocking("x", "not a phc string"));
    }
}
