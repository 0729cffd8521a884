//! Accounts and sessions: Argon2id passwords, opaque bearer tokens stored as SHA-256 hashes.
//!
//! Shaped for the identity issue: [`Principal`] is what every handler receives, and the
//! session state already gates what a session may do (`password_change_required` now; MFA
//! enrolment and step-up later) in one place, [`AuthService::authenticate`].

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use medhub_core::model::{Org, Session, SessionState, SystemRole, User};
use medhub_core::{Clock, DomainError, OrgId, SessionId, UserId, validate};
use medhub_store::{DynStore, UserRecord};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::{ServiceConfig, ServiceError};

/// Prefix of every session token, so that leaked tokens are recognisable by scanners.
pub const TOKEN_PREFIX: &str = "mh_";

/// A verified caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: User,
    pub session: Session,
}

impl Principal {
    pub fn user_id(&self) -> UserId {
        self.user.id
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == SystemRole::Admin
    }

    /// Fails unless the session is fully signed in.
    pub fn require_active(&self) -> Result<(), ServiceError> {
        match self.session.state {
            SessionState::Active => Ok(()),
            SessionState::PasswordChangeRequired => Err(ServiceError::PasswordChangeRequired),
        }
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

/// Sign-in, sessions and accounts.
#[derive(Clone)]
pub struct AuthService {
    store: DynStore,
    config: Arc<ServiceConfig>,
    clock: Arc<dyn Clock>,
    hashing: Arc<Semaphore>,
    /// Verified against when the username is unknown, so both cases take the same time.
    dummy_hash: Arc<String>,
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

fn new_token() -> Result<String, ServiceError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ServiceError::InvalidRequest(format!("no randomness: {e}")))?;
    Ok(format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// A random password for bootstrap and resets: 20 characters from an unambiguous alphabet
/// (about 113 bits).
pub fn generate_password() -> Result<String, ServiceError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(20);
    let mut buf = [0u8; 64];
    while out.len() < 20 {
        getrandom::fill(&mut buf).map_err(|e| ServiceError::InvalidRequest(format!("no randomness: {e}")))?;
        for b in buf {
            // Rejection sampling keeps the choice uniform.
            if (b as usize) < ALPHABET.len() * (256 / ALPHABET.len()) && out.len() < 20 {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

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

impl AuthService {
    pub fn new(store: DynStore, config: Arc<ServiceConfig>, clock: Arc<dyn Clock>) -> Self {
        let dummy = hash_blocking("medhub-dummy-password-for-timing").unwrap_or_default();
        let permits = config.max_concurrent_hashes.max(1);
        Self { store, config, clock, hashing: Arc::new(Semaphore::new(permits)), dummy_hash: Arc::new(dummy) }
    }

    async fn hash(&self, password: String) -> Result<String, ServiceError> {
        let _permit = self.hashing.acquire().await.map_err(|_| ServiceError::PipelineStopped)?;
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(|_| ServiceError::InvalidRequest("password hashing was interrupted".into()))?
    }

    async fn verify(&self, password: String, phc: String) -> bool {
        let Ok(_permit) = self.hashing.acquire().await else { return false };
        tokio::task::spawn_blocking(move || verify_blocking(&password, &phc)).await.unwrap_or(false)
    }

    fn check_password_rules(&self, password: &str) -> Result<(), ServiceError> {
        validate::password(password, self.config.min_password_chars, self.config.max_password_chars)?;
        Ok(())
    }

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
        let now = self.clock.now();
        let org = Org { id: OrgId::new_v7(), name: org_name.to_owned(), created_at: now };
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
        let record = UserRecord {
            user: user.clone(),
            password_hash: Some(self.hash(password.clone()).await?),
            must_change_password: true,
        };
        if self.store.bootstrap(&org, &record).await? { Ok(Some((user, password))) } else { Ok(None) }
    }

    /// Creates a user in the organization.
    pub async fn create_user(&self, new: NewUser) -> Result<User, ServiceError> {
        let org = self.store.org().await?.ok_or_else(|| ServiceError::InvalidRequest("not bootstrapped yet".into()))?;
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
            org: org.id,
            username,
            display_name,
            role: new.role,
            active: true,
            created_at: self.clock.now(),
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

    /// Sets a user's password (administrator reset); the user must change it at next sign-in.
    pub async fn reset_password(&self, user: UserId, password: String) -> Result<(), ServiceError> {
        self.check_password_rules(&password)?;
        if self.store.user(user).await?.is_none() {
            return Err(DomainError::UserNotFound.into());
        }
        let hash = self.hash(password).await?;
        self.store.set_password(user, &hash, true).await?;
        Ok(())
    }

    /// Activates or deactivates a user. Deactivation revokes every session.
    pub async fn set_active(&self, user: UserId, active: bool) -> Result<(), ServiceError> {
        if self.store.set_user_active(user, active, self.clock.now()).await? {
            Ok(())
        } else {
            Err(DomainError::UserNotFound.into())
        }
    }

    /// Signs in with username and password. Unknown users, deactivated users and wrong
    /// passwords are indistinguishable, in answer and in timing.
    pub async fn login(&self, username: &str, password: &str) -> Result<IssuedSession, ServiceError> {
        let username = username.trim().to_ascii_lowercase();
        let record = match validate::username(&username) {
            Ok(name) => self.store.user_record_by_username(&name).await?,
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
        let Some(record) = record.filter(|_| ok && usable) else {
            tracing::info!(target: "medhub::auth", outcome = "denied", "sign-in failed");
            return Err(ServiceError::InvalidCredentials);
        };
        let state =
            if record.must_change_password { SessionState::PasswordChangeRequired } else { SessionState::Active };
        let issued = self.issue_session(&record.user, state).await?;
        tracing::info!(target: "medhub::auth", user = %record.user.id, session = %issued.session.id, "signed in");
        Ok(issued)
    }

    /// Creates a session for a user without a password check. For the operator's tooling
    /// (CLI, load generator, tests) only; never reachable from the network.
    pub async fn issue_session(&self, user: &User, state: SessionState) -> Result<IssuedSession, ServiceError> {
        let token = new_token()?;
        let now = self.clock.now();
        let ttl = SignedDuration::try_from(self.config.session_ttl).unwrap_or(SignedDuration::from_hours(12));
        let session = Session {
            id: SessionId::new_v7(),
            user: user.id,
            token_hash: token_hash(&token),
            state,
            created_at: now,
            last_seen_at: now,
            expires_at: now.checked_add(ttl).unwrap_or(Timestamp::MAX),
            revoked_at: None,
        };
        self.store.create_session(&session).await?;
        Ok(IssuedSession { token, session, user: user.clone() })
    }

    /// Resolves a bearer token to a principal. Any session state is accepted here; handlers
    /// call [`Principal::require_active`] for everything but the password change.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, ServiceError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Err(ServiceError::Unauthenticated);
        }
        match self.store.session_by_token_hash(&token_hash(token), self.clock.now()).await? {
            Some((session, user)) => Ok(Principal { user, session }),
            None => Err(ServiceError::Unauthenticated),
        }
    }

    /// Ends a session.
    pub async fn logout(&self, principal: &Principal) -> Result<(), ServiceError> {
        self.store.revoke_session(principal.session.id, self.clock.now()).await?;
        Ok(())
    }

    /// Changes the caller's password after checking the current one; a session that signed
    /// in with a one-time password becomes fully active.
    pub async fn change_password(&self, principal: &Principal, current: &str, new: &str) -> Result<(), ServiceError> {
        self.check_password_rules(new)?;
        let record = self.store.user_record(principal.user.id).await?.ok_or(ServiceError::Unauthenticated)?;
        let phc = record.password_hash.unwrap_or_else(|| (*self.dummy_hash).clone());
        if !self.verify(current.to_owned(), phc).await {
            return Err(ServiceError::InvalidCredentials);
        }
        if current == new {
            return Err(ServiceError::InvalidRequest("the new password must differ from the current one".into()));
        }
        let hash = self.hash(new.to_owned()).await?;
        self.store.set_password(principal.user.id, &hash, false).await?;
        self.store.activate_session(principal.session.id).await?;
        tracing::info!(target: "medhub::auth", user = %principal.user.id, "password changed");
        Ok(())
    }

    /// Looks a user up by username (for the CLI).
    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>, ServiceError> {
        let name = validate::username(username)?;
        Ok(self.store.user_record_by_username(&name).await?.map(|r| r.user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
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
