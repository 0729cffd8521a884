//! Passkeys (WebAuthn, `webauthn-rs`) as the phishing-resistant second factor: registration
//! (which satisfies forced enrolment), the sign-in second step, step-up, listing and deleting.
//!
//! Every ceremony is two requests. `start` answers the options for the browser's
//! `navigator.credentials.create/get` and a ceremony id; the ceremony state (its challenge)
//! is sealed with the server key, bound to the session, and kept in `auth_flows` for five
//! minutes, single use, so any node can finish it. `finish` takes the authenticator's answer.
//! User verification is required; the origin and RP id come from configuration, so an answer
//! made for another site (a phishing page relaying our challenge) is refused. A signature
//! counter that does not move forward (a cloned authenticator) is refused, checked against
//! the stored credential at finish time, and the credential is written back compare-and-set.
//! Refusals answer `invalid_passkey`, count against the same throttle as wrong TOTP codes,
//! and reach the audit interface; the reason goes to the log only.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::Outcome;
use medhub_core::model::SessionState;
use medhub_core::{PasskeyId, UserId};
use medhub_store::{AuthFlow, PasskeyDeletion, PasskeyRecord, StoreError};
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url,
    Webauthn, WebauthnBuilder, WebauthnError,
};

use super::{AuthService, ClientInfo, Principal, new_token, throttle_keys, token_hash};
use crate::ServiceError;

/// How long a started ceremony can be finished.
pub const CEREMONY_TTL: SignedDuration = SignedDuration::from_mins(5);
/// Prefix of ceremony ids.
pub const CEREMONY_PREFIX: &str = "mhp_";
/// Longest passkey name, in characters.
const MAX_NAME_CHARS: usize = 64;

const KIND_REGISTER: &str = "passkey_register";
const KIND_VERIFY: &str = "passkey_verify";
const KIND_STEP_UP: &str = "passkey_step_up";

/// The relying party: who passkeys are bound to. Changing `rp_id` later makes every
/// registered passkey useless, so it is set once, to the domain users see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasskeyConfig {
    /// The RP id: a domain, equal to or a parent of every origin's host (`medhub.example.org`).
    pub rp_id: String,
    /// Shown by the browser and the authenticator.
    pub rp_name: String,
    /// The web origins the client runs on (`https://medhub.example.org`); an answer made on
    /// any other origin is refused.
    pub origins: Vec<String>,
}

impl PasskeyConfig {
    /// The webauthn-rs relying party, or why the settings do not make one.
    pub fn relying_party(&self) -> Result<Webauthn, String> {
        let mut origins = self.origins.iter().map(|o| Url::parse(o).map_err(|e| format!("origin {o:?}: {e}")));
        let first = origins.next().ok_or("at least one origin is needed")??;
        let mut builder = WebauthnBuilder::new(&self.rp_id, &first)
            .map_err(|_| format!("the RP id {:?} is not the host of {first} or a parent of it", self.rp_id))?
            .rp_name(&self.rp_name);
        for o in origins {
            let o = o?;
            let host = o.host_str().unwrap_or_default();
            if !(host == self.rp_id || host.ends_with(&format!(".{}", self.rp_id))) {
                return Err(format!("the RP id {:?} is not the host of {o} or a parent of it", self.rp_id));
            }
            builder = builder.append_allowed_origin(&o);
        }
        builder.build().map_err(|e| format!("relying party: {e}"))
    }
}

/// A started ceremony: what the browser needs, and the id to finish it with.
#[derive(Clone)]
pub struct PasskeyChallenge {
    pub ceremony_id: String,
    /// `{"publicKey": ...}`: the options for `navigator.credentials.create()` or `.get()`.
    pub options: serde_json::Value,
}

impl std::fmt::Debug for PasskeyChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasskeyChallenge(..)")
    }
}

/// A registered passkey, with the recovery codes when it was the account's first factor.
#[derive(Clone)]
pub struct PasskeyRegistered {
    pub passkey: PasskeyRecord,
    /// Shown only now; empty when the account already had a second factor (its codes stay).
    pub recovery_codes: Vec<String>,
    /// When this finished sign-in: the session's new token (the old one stops working).
    pub token: Option<String>,
}

impl std::fmt::Debug for PasskeyRegistered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasskeyRegistered").field("passkey", &self.passkey.id).finish_non_exhaustive()
    }
}

/// What a passkey assertion proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasskeyPurpose {
    /// The second step of sign-in (`mfa_required` → `active`).
    SignIn,
    /// Step-up in an active session.
    StepUp,
}

impl PasskeyPurpose {
    fn kind(self) -> &'static str {
        match self {
            PasskeyPurpose::SignIn => KIND_VERIFY,
            PasskeyPurpose::StepUp => KIND_STEP_UP,
        }
    }

    fn action(self) -> &'static str {
        match self {
            PasskeyPurpose::SignIn => "auth.mfa",
            PasskeyPurpose::StepUp => "auth.step_up",
        }
    }
}

/// The signature counter stored in a serialized `Passkey` (0 for authenticators without one).
fn stored_counter(passkey_json: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(passkey_json).ok()?;
    v.get("cred")?.get("counter")?.as_u64().and_then(|c| u32::try_from(c).ok())
}

/// Whether a use with `counter` is refused after `stored`: WebAuthn §7.2 step 21. Counters of
/// 0 on both sides mean the authenticator has none (most synced passkeys).
fn counter_went_backwards(counter: u32, stored: u32) -> bool {
    (counter > 0 || stored > 0) && counter <= stored
}

fn passkey_name(name: Option<&str>) -> Result<String, ServiceError> {
    let name = name.map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Ok("Passkey".to_owned());
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ServiceError::InvalidRequest(format!(
            "a passkey name is 1-{MAX_NAME_CHARS} characters without control characters"
        )));
    }
    Ok(name.to_owned())
}

/// A credential that failed a check. The reason is logged, never sent.
fn refused(reason: impl Into<String>) -> ServiceError {
    ServiceError::InvalidPasskey(reason.into())
}

impl AuthService {
    fn webauthn(&self) -> Result<&Arc<Webauthn>, ServiceError> {
        self.webauthn.as_ref().ok_or(ServiceError::PasskeysNotConfigured)
    }

    /// The associated data a ceremony's state is sealed with: its id's hash and the session,
    /// so the state cannot be moved to another ceremony or session.
    fn ceremony_aad(state_hash: &[u8; 32], principal: &Principal) -> Vec<u8> {
        let mut aad = state_hash.to_vec();
        aad.extend_from_slice(&principal.session.id.to_bytes());
        aad
    }

    /// Stores a new ceremony's state and answers the challenge for the client: the ceremony id
    /// and the WebAuthn options.
    async fn challenge<S: serde::Serialize, O: serde::Serialize>(
        &self,
        principal: &Principal,
        kind: &str,
        state: &S,
        options: &O,
    ) -> Result<PasskeyChallenge, ServiceError> {
        let options =
            serde_json::to_value(options).map_err(|e| ServiceError::InvalidRequest(format!("passkey options: {e}")))?;
        self.pin_server_key().await?;
        let ceremony_id = new_token(CEREMONY_PREFIX)?;
        let state_hash = token_hash(&ceremony_id);
        let json = serde_json::to_vec(state)
            .map_err(|e| ServiceError::InvalidRequest(format!("passkey ceremony state: {e}")))?;
        let sealed = self.key.seal(&json, &Self::ceremony_aad(&state_hash, principal))?;
        let now = self.now();
        self.store
            .create_auth_flow(&AuthFlow {
                state_hash,
                kind: kind.into(),
                nonce: principal.session.id.to_string(),
                verifier_enc: sealed,
                return_to: None,
                created_at: now,
                expires_at: now.checked_add(CEREMONY_TTL).unwrap_or(Timestamp::MAX),
            })
            .await?;
        Ok(PasskeyChallenge { ceremony_id, options })
    }

    /// Uses a ceremony once. Unknown, used, expired, other-kind and other-session ceremonies
    /// are all refused alike.
    async fn take_ceremony<S: serde::de::DeserializeOwned>(
        &self,
        principal: &Principal,
        kind: &str,
        ceremony_id: &str,
    ) -> Result<S, ServiceError> {
        let state_hash = token_hash(ceremony_id);
        let flow = self
            .store
            .consume_auth_flow(&state_hash, kind, self.now())
            .await?
            .ok_or_else(|| refused("unknown, used or expired ceremony"))?;
        if flow.nonce != principal.session.id.to_string() {
            return Err(refused("the ceremony belongs to another session"));
        }
        let json = self
            .key
            .open(&flow.verifier_enc, &Self::ceremony_aad(&state_hash, principal))
            .ok_or_else(|| refused("the ceremony state does not decrypt"))?;
        serde_json::from_slice(&json).map_err(|e| refused(format!("ceremony state: {e}")))
    }

    /// Registering a further factor in an active session is an MFA change: it needs a recent
    /// step-up when the account already has a factor (as replacing recovery codes does). A
    /// session waiting for enrolment, or an active one without any factor (SSO whose provider
    /// enforces MFA), registers without.
    async fn require_registration_step(&self, principal: &Principal) -> Result<(), ServiceError> {
        principal.require_step(&[SessionState::MfaEnrollmentRequired, SessionState::Active])?;
        if principal.session.state == SessionState::Active && self.mfa_enrolled(principal.user.id).await? {
            principal.require_step_up(self.now())?;
        }
        Ok(())
    }

    /// Starts registering a passkey. The user's existing passkeys are excluded, so an
    /// authenticator is not registered twice.
    pub async fn begin_passkey_registration(&self, principal: &Principal) -> Result<PasskeyChallenge, ServiceError> {
        let webauthn = self.webauthn()?.clone();
        self.require_registration_step(principal).await?;
        let user = &principal.user;
        let exclude: Vec<_> = self.store.passkeys(user.id).await?.into_iter().map(|p| p.credential_id).collect();
        let (options, state) = webauthn
            .start_passkey_registration(user.id.as_uuid(), &user.username, &user.display_name, Some(exclude))
            .map_err(|e| ServiceError::InvalidRequest(format!("passkey registration could not start: {e}")))?;
        self.challenge(principal, KIND_REGISTER, &state, &options).await
    }

    /// Finishes a registration. The first second factor of an account comes with recovery
    /// codes, and a session waiting for enrolment becomes active (as after confirming TOTP).
    /// Every other session of the user ends: this is an MFA change.
    pub async fn finish_passkey_registration(
        &self,
        principal: &Principal,
        ceremony_id: &str,
        name: Option<&str>,
        credential: serde_json::Value,
        client: &ClientInfo,
    ) -> Result<PasskeyRegistered, ServiceError> {
        let webauthn = self.webauthn()?.clone();
        self.require_registration_step(principal).await?;
        let name = passkey_name(name)?;
        let user = principal.user.id;
        let keys = throttle_keys("mfa", &user.to_string(), client);
        let ip = client.ip.map(|i| i.to_string());
        self.check_factor_throttle(&keys, "auth.mfa_enrol", principal, "passkey", &ip).await?;
        let checked = async {
            let state: PasskeyRegistration = self.take_ceremony(principal, KIND_REGISTER, ceremony_id).await?;
            let credential: RegisterPublicKeyCredential =
                serde_json::from_value(credential).map_err(|e| refused(format!("not a registration response: {e}")))?;
            webauthn.finish_passkey_registration(&credential, &state).map_err(|e| refused(e.to_string()))
        }
        .await;
        let passkey = match checked {
            Ok(p) => p,
            Err(e) => return Err(self.passkey_refused(principal, "auth.mfa_enrol", e, &keys, ip).await),
        };
        let was_enrolled = self.mfa_enrolled(user).await?;
        let now = self.now();
        let record = PasskeyRecord {
            id: PasskeyId::new_v7(),
            user,
            credential_id: passkey.cred_id().to_vec(),
            passkey: serde_json::to_string(&passkey)
                .map_err(|e| ServiceError::InvalidRequest(format!("passkey could not be stored: {e}")))?,
            name,
            created_at: now,
            last_used_at: None,
        };
        let enrolled = self
            .audit_record("auth.mfa_enrol", Some(principal), Some("passkey".into()), Outcome::Success, None, ip.clone())
            .object("passkey", record.id);
        match self.store.add_passkey(&record, &[enrolled]).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                let e = refused("the credential is registered already");
                return Err(self.passkey_refused(principal, "auth.mfa_enrol", e, &keys, ip).await);
            }
            Err(e) => return Err(e.into()),
        }
        let recovery_codes = if was_enrolled {
            Vec::new()
        } else {
            let (codes, hashes) = self.new_recovery_codes().await?;
            // The first factor's codes: its `auth.mfa_enrol` record committed with it.
            self.store.replace_recovery_codes(user, &hashes, &[]).await?;
            codes
        };
        self.store.clear_throttle(&keys[0]).await?;
        let token = self.factor_enrolled(principal).await?;
        tracing::info!(target: "medhub::auth", user = %user, passkey = %record.id, "passkey registered");
        Ok(PasskeyRegistered { passkey: record, recovery_codes, token })
    }

    fn check_assertion_step(&self, principal: &Principal, purpose: PasskeyPurpose) -> Result<(), ServiceError> {
        match purpose {
            PasskeyPurpose::StepUp => principal.require_active(),
            PasskeyPurpose::SignIn if principal.session.state == SessionState::MfaRequired => Ok(()),
            PasskeyPurpose::SignIn => match principal.require_active() {
                Ok(()) => Err(ServiceError::InvalidRequest("this session already proved its second factor".into())),
                Err(e) => Err(e),
            },
        }
    }

    /// Starts proving the second factor with one of the user's passkeys (sign-in or step-up).
    pub async fn begin_passkey_assertion(
        &self,
        principal: &Principal,
        purpose: PasskeyPurpose,
        client: &ClientInfo,
    ) -> Result<PasskeyChallenge, ServiceError> {
        let webauthn = self.webauthn()?.clone();
        self.check_assertion_step(principal, purpose)?;
        self.check_throttle(&throttle_keys("mfa", &principal.user.id.to_string(), client)).await?;
        let passkeys = self
            .store
            .passkeys(principal.user.id)
            .await?
            .iter()
            .map(|r| serde_json::from_str::<Passkey>(&r.passkey))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Corrupt(format!("a stored passkey: {e}")))?;
        if passkeys.is_empty() {
            return Err(ServiceError::InvalidRequest("no passkey is registered for this account".into()));
        }
        let (options, state) = webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|e| ServiceError::InvalidRequest(format!("passkey sign-in could not start: {e}")))?;
        self.challenge(principal, purpose.kind(), &state, &options).await
    }

    /// Finishes a passkey assertion: in `mfa_required` the session becomes active under a
    /// new token, which is returned; in an active session (step-up) the second factor counts
    /// as just proven, for 5 minutes, and the token stays.
    pub async fn finish_passkey_assertion(
        &self,
        principal: &Principal,
        purpose: PasskeyPurpose,
        ceremony_id: &str,
        credential: serde_json::Value,
        client: &ClientInfo,
    ) -> Result<Option<String>, ServiceError> {
        let webauthn = self.webauthn()?.clone();
        self.check_assertion_step(principal, purpose)?;
        let user = principal.user.id;
        let keys = throttle_keys("mfa", &user.to_string(), client);
        let ip = client.ip.map(|i| i.to_string());
        let action = purpose.action();
        self.check_factor_throttle(&keys, action, principal, "passkey", &ip).await?;
        let checked = self.check_assertion(&webauthn, principal, purpose, ceremony_id, credential).await;
        let passkey = match checked {
            Ok(id) => id,
            Err(e) => return Err(self.passkey_refused(principal, action, e, &keys, ip).await),
        };
        self.store.clear_throttle(&keys[0]).await?;
        // The proof's record commits with the session's change.
        let proven = self.audit_record(action, Some(principal), Some("passkey".into()), Outcome::Success, None, ip);
        let token = match purpose {
            PasskeyPurpose::SignIn => Some(self.activate(principal, &[proven]).await?),
            PasskeyPurpose::StepUp => {
                let at = Some(self.now());
                self.store.set_session_state(principal.session.id, SessionState::Active, at, &[proven]).await?;
                None
            }
        };
        tracing::info!(target: "medhub::auth", user = %user, session = %principal.session.id, passkey = %passkey,
            purpose = ?purpose, "passkey accepted");
        Ok(token)
    }

    /// Every check of an assertion; the stored credential is updated (counter, last use) on
    /// success. Returns the passkey used.
    async fn check_assertion(
        &self,
        webauthn: &Webauthn,
        principal: &Principal,
        purpose: PasskeyPurpose,
        ceremony_id: &str,
        credential: serde_json::Value,
    ) -> Result<PasskeyId, ServiceError> {
        let state: PasskeyAuthentication = self.take_ceremony(principal, purpose.kind(), ceremony_id).await?;
        let credential: PublicKeyCredential =
            serde_json::from_value(credential).map_err(|e| refused(format!("not an assertion: {e}")))?;
        let record =
            self.store.passkey_by_credential(&credential.raw_id).await?.ok_or_else(|| refused("unknown credential"))?;
        if record.user != principal.user.id {
            return Err(refused(format!("a credential of another user ({})", record.user)));
        }
        let result = webauthn.finish_passkey_authentication(&credential, &state).map_err(|e| match e {
            WebauthnError::CredentialPossibleCompromise => {
                refused("the signature counter went backwards (cloned authenticator?)")
            }
            other => refused(other.to_string()),
        })?;
        if !result.user_verified() {
            return Err(refused("user verification missing"));
        }
        // The ceremony's copy of the credential dates from `start`; the stored one may have
        // moved on since (another use), so the counter is checked against it again.
        let stored = stored_counter(&record.passkey)
            .ok_or_else(|| StoreError::Corrupt("a stored passkey has no counter".into()))?;
        if counter_went_backwards(result.counter(), stored) {
            return Err(refused("the signature counter went backwards (cloned authenticator?)"));
        }
        let mut passkey: Passkey =
            serde_json::from_str(&record.passkey).map_err(|e| StoreError::Corrupt(format!("a stored passkey: {e}")))?;
        passkey.update_credential(&result);
        let updated = serde_json::to_string(&passkey)
            .map_err(|e| ServiceError::InvalidRequest(format!("passkey could not be stored: {e}")))?;
        if !self.store.update_passkey(record.id, &record.passkey, &updated, self.now()).await? {
            return Err(refused("the credential was used concurrently"));
        }
        Ok(record.id)
    }

    /// Records a refused passkey: audit (reason `invalid_passkey`), log (the real reason),
    /// throttle. Returns the error to answer.
    async fn passkey_refused(
        &self,
        principal: &Principal,
        action: &str,
        e: ServiceError,
        keys: &[String],
        ip: Option<String>,
    ) -> ServiceError {
        let ServiceError::InvalidPasskey(reason) = &e else { return e };
        let recorded = self
            .audit_event(action, Some(principal), Some("passkey".into()), Outcome::Failure, Some("invalid_passkey"), ip)
            .await;
        if let Err(unrecorded) = recorded {
            return unrecorded;
        }
        tracing::info!(target: "medhub::auth", user = %principal.user.id, outcome = "denied", reason = %reason,
            "passkey refused");
        if let Err(t) = self.record_failure(keys).await {
            return t;
        }
        e
    }

    /// The caller's passkeys, oldest first.
    pub async fn my_passkeys(&self, principal: &Principal) -> Result<Vec<PasskeyRecord>, ServiceError> {
        principal.require_active()?;
        Ok(self.store.passkeys(principal.user.id).await?)
    }

    /// Deletes one of the caller's passkeys (needs a step-up). The last second factor is never
    /// deleted (`last_second_factor`): enrol another first. Every other session of the user
    /// ends: this is an MFA change.
    pub async fn delete_passkey(&self, principal: &Principal, id: PasskeyId) -> Result<(), ServiceError> {
        principal.require_step_up(self.now())?;
        let user: UserId = principal.user.id;
        let deleted = self
            .audit_record("auth.passkey_delete", Some(principal), Some(id.to_string()), Outcome::Success, None, None)
            .object("passkey", id);
        match self.store.delete_passkey(user, id, &[deleted]).await? {
            PasskeyDeletion::Deleted => {}
            PasskeyDeletion::NotFound => return Err(ServiceError::PasskeyNotFound),
            PasskeyDeletion::LastFactor => return Err(ServiceError::LastSecondFactor),
        }
        self.end_user_sessions(user, Some(principal.session.id), "mfa_changed").await?;
        tracing::info!(target: "medhub::auth", user = %user, passkey = %id, "passkey deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_must_move_forward_unless_the_authenticator_has_none() {
        assert!(!counter_went_backwards(0, 0), "no counter on either side");
        assert!(!counter_went_backwards(3, 2));
        assert!(counter_went_backwards(2, 2), "a repeated counter");
        assert!(counter_went_backwards(1, 2), "a lower counter");
        assert!(counter_went_backwards(0, 5), "a counter that vanished");
    }

    #[test]
    fn names_default_and_are_bounded() {
        assert_eq!(passkey_name(None).unwrap(), "Passkey");
        assert_eq!(passkey_name(Some("  work laptop ")).unwrap(), "work laptop");
        assert!(passkey_name(Some(&"x".repeat(65))).is_err());
        assert!(passkey_name(Some("a\u{7}b")).is_err());
    }

    #[test]
    fn the_relying_party_needs_origins_under_its_id() {
        let ok = PasskeyConfig {
            rp_id: "medhub.example.org".into(),
            rp_name: "medhub".into(),
            origins: vec!["https://medhub.example.org".into(), "https://ward.medhub.example.org".into()],
        };
        assert!(ok.relying_party().is_ok());
        let elsewhere = PasskeyConfig { origins: vec!["https://evil.example".into()], ..ok.clone() };
        assert!(elsewhere.relying_party().is_err());
        let second = PasskeyConfig {
            origins: vec!["https://medhub.example.org".into(), "https://medhub.example.org.evil.example".into()],
            ..ok.clone()
        };
        assert!(second.relying_party().is_err());
        assert!(PasskeyConfig { origins: vec![], ..ok }.relying_party().is_err());
    }
}
