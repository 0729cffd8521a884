//! Second factors: TOTP (RFC 6238) with replay protection, single-use recovery codes, the
//! sign-in second step, and step-up re-authentication for sensitive actions.

use medhub_core::UserId;
use medhub_core::audit::Outcome;
use medhub_core::model::SessionState;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use super::{AuthService, ClientInfo, Principal, TOKEN_PREFIX, new_token, random_bytes, throttle_keys, token_hash};
use crate::ServiceError;

/// RFC 6238 parameters every authenticator app understands: SHA-1, 6 digits, 30 s.
const DIGITS: usize = 6;
const STEP_SECS: u64 = 30;
/// Codes of the previous, current and next step are accepted (±1 step of clock drift).
const WINDOW: i64 = 1;
/// RFC 4226 recommends 160-bit secrets.
const SECRET_BYTES: usize = 20;
/// Recovery codes per set, and characters per code (50 bits each).
const RECOVERY_CODES: usize = 10;
const RECOVERY_CHARS: usize = 10;
/// Crockford's base32 alphabet: no I, L, O or U to misread.
const RECOVERY_ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// How the caller proves the second factor.
#[derive(Clone)]
pub enum MfaProof {
    /// A 6-digit code from the authenticator app.
    Totp(String),
    /// One of the recovery codes (used up by this).
    RecoveryCode(String),
}

impl std::fmt::Debug for MfaProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MfaProof::Totp(_) => "Totp(..)",
            MfaProof::RecoveryCode(_) => "RecoveryCode(..)",
        })
    }
}

/// A confirmed authenticator: the recovery codes, shown only now, and the session's new
/// token when enrolment finished sign-in.
#[derive(Clone)]
pub struct Enrolled {
    pub recovery_codes: Vec<String>,
    pub token: Option<String>,
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrolled(..)")
    }
}

/// What the user needs to add medhub to an authenticator app.
#[derive(Clone)]
pub struct TotpEnrollment {
    /// The secret in base32, for typing in by hand.
    pub secret: String,
    /// The `otpauth://totp/...` URI.
    pub uri: String,
    /// The URI as a QR code, an SVG document.
    pub qr_svg: String,
}

impl std::fmt::Debug for TotpEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrollment(..)")
    }
}

fn totp(secret: Vec<u8>, issuer: &str, account: &str) -> Result<TOTP, ServiceError> {
    // The otpauth label uses ':' as its separator; neither part may contain one.
    let issuer = issuer.replace(':', " ");
    TOTP::new(Algorithm::SHA1, DIGITS, 0, STEP_SECS, secret, Some(issuer), account.replace(':', " "))
        .map_err(|e| ServiceError::InvalidRequest(format!("authenticator setup failed: {e}")))
}

/// The time step of `code` within ±1 step of `unix_secs`, compared in constant time.
pub(crate) fn matching_step(t: &TOTP, code: &str, unix_secs: i64) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now_step = unix_secs.div_euclid(STEP_SECS as i64);
    let mut found = None;
    // Every candidate is computed and compared, so timing does not tell which one matched.
    for step in (now_step - WINDOW)..=(now_step + WINDOW) {
        let Ok(step) = u64::try_from(step) else { continue };
        let expected = t.generate(step * STEP_SECS);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step);
        }
    }
    found
}

fn recovery_code() -> Result<String, ServiceError> {
    let bytes = random_bytes::<RECOVERY_CHARS>()?;
    let chars: String = bytes.iter().map(|b| RECOVERY_ALPHABET[(*b & 31) as usize] as char).collect();
    Ok(format!("{}-{}", &chars[..5], &chars[5..]))
}

/// Lower case without separators or spaces, so `ABCDE-FGHJK` and `abcde fghjk` are the same.
fn normalize_recovery(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

impl AuthService {
    /// Whether the user has a confirmed second factor: a confirmed TOTP secret or a passkey.
    pub async fn mfa_enrolled(&self, user: UserId) -> Result<bool, ServiceError> {
        if self.store.totp(user).await?.is_some_and(|t| t.confirmed_at.is_some()) {
            return Ok(true);
        }
        Ok(!self.store.passkeys(user).await?.is_empty())
    }

    fn aad(user: UserId) -> [u8; 16] {
        user.as_uuid().into_bytes()
    }

    /// Starts TOTP enrolment: a new secret, pending until [`confirm_totp`](Self::confirm_totp)
    /// sees a first valid code. Starting again replaces a pending secret. An account that
    /// already has a confirmed authenticator gets `mfa_already_enrolled`: an administrator
    /// resets it first.
    pub async fn begin_totp(&self, principal: &Principal) -> Result<TotpEnrollment, ServiceError> {
        principal.require_step(&[SessionState::MfaEnrollmentRequired, SessionState::Active])?;
        self.pin_server_key().await?;
        let secret = random_bytes::<SECRET_BYTES>()?.to_vec();
        let sealed = self.key.seal(&secret, &Self::aad(principal.user.id))?;
        self.store.put_pending_totp(principal.user.id, &sealed, self.now()).await.map_err(|e| match e {
            medhub_store::StoreError::Conflict(_) => ServiceError::MfaAlreadyEnrolled,
            other => other.into(),
        })?;
        // The authenticator app shows the user's own organization.
        let orgs = self.store.orgs().await?;
        let issuer =
            orgs.into_iter().find(|o| o.id == principal.user.org).map_or_else(|| "medhub".to_owned(), |o| o.name);
        let t = totp(secret, &format!("medhub {issuer}"), &principal.user.username)?;
        let uri = t.get_url();
        let qr = qrcode::QrCode::new(uri.as_bytes())
            .map_err(|e| ServiceError::InvalidRequest(format!("QR code: {e}")))?
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build();
        tracing::info!(target: "medhub::auth", user = %principal.user.id, "authenticator enrolment started");
        Ok(TotpEnrollment { secret: t.get_secret_base32(), uri, qr_svg: qr })
    }

    /// Confirms enrolment with a first code. Returns the recovery codes, shown only now.
    /// A session waiting for enrolment becomes active, with the factor counted as proven.
    pub async fn confirm_totp(
        &self,
        principal: &Principal,
        code: &str,
        client: &ClientInfo,
    ) -> Result<Enrolled, ServiceError> {
        principal.require_step(&[SessionState::MfaEnrollmentRequired, SessionState::Active])?;
        let user = principal.user.id;
        let keys = throttle_keys("mfa", &user.to_string(), client);
        self.check_throttle(&keys).await?;
        let pending = self.store.totp(user).await?.filter(|t| t.confirmed_at.is_none());
        let Some(pending) = pending else {
            return Err(if self.mfa_enrolled(user).await? {
                ServiceError::MfaAlreadyEnrolled
            } else {
                ServiceError::InvalidRequest("start enrolment first".into())
            });
        };
        let secret = self.key.open(&pending.secret_enc, &Self::aad(user)).ok_or(ServiceError::ServerKeyMismatch)?;
        let t = totp(secret, "medhub", &principal.user.username)?;
        let ip = client.ip.map(|i| i.to_string());
        let Some(step) = matching_step(&t, code, self.now().as_second()) else {
            self.audit_event("auth.mfa_enrol", Some(principal), None, Outcome::Failure, Some("invalid_mfa_code"), ip)
                .await?;
            self.record_failure(&keys).await?;
            return Err(ServiceError::InvalidMfaCode);
        };
        let (codes, hashes) = self.new_recovery_codes().await?;
        let enrolled =
            self.audit_record("auth.mfa_enrol", Some(principal), Some("totp".into()), Outcome::Success, None, ip);
        if !self.store.confirm_totp(user, step, &hashes, self.now(), &[enrolled]).await? {
            self.record_failure(&keys).await?;
            return Err(ServiceError::InvalidMfaCode);
        }
        self.store.clear_throttle(&keys[0]).await?;
        let token = self.factor_enrolled(principal).await?;
        tracing::info!(target: "medhub::auth", user = %user, "authenticator enrolled");
        Ok(Enrolled { recovery_codes: codes, token })
    }

    /// After a second factor was enrolled (TOTP or passkey): this is an MFA change, so every
    /// other session of the user ends, and a session waiting for enrolment becomes active
    /// under a new token, which is returned.
    pub(super) async fn factor_enrolled(&self, principal: &Principal) -> Result<Option<String>, ServiceError> {
        self.end_user_sessions(principal.user.id, Some(principal.session.id), "mfa_changed").await?;
        match principal.session.state {
            // The enrolment's own record, committed with it, covers the activation.
            SessionState::MfaEnrollmentRequired => Ok(Some(self.activate(principal, &[]).await?)),
            _ => Ok(None),
        }
    }

    /// Finishes sign-in for a session whose second factor was just proven: it becomes
    /// active under a new token (the one it was created with stops working, ASVS 3.2.1).
    /// Returns the new token.
    /// Activates the session under a new token; `audit` commits with the activation.
    pub(super) async fn activate(
        &self,
        principal: &Principal,
        audit: &[medhub_core::audit::AuditRecord],
    ) -> Result<String, ServiceError> {
        let token = new_token(TOKEN_PREFIX)?;
        if !self.store.activate_session(principal.session.id, &token_hash(&token), self.now(), audit).await? {
            return Err(ServiceError::Unauthenticated);
        }
        Ok(token)
    }

    /// The second step of sign-in: a session in `mfa_required` becomes active under a new
    /// token, which is returned.
    pub async fn verify_mfa(
        &self,
        principal: &Principal,
        proof: &MfaProof,
        client: &ClientInfo,
    ) -> Result<String, ServiceError> {
        if principal.session.state != SessionState::MfaRequired {
            return match principal.require_active() {
                Ok(()) => Err(ServiceError::InvalidRequest("this session already proved its second factor".into())),
                Err(e) => Err(e),
            };
        }
        let proven = self.prove(principal, "auth.mfa", proof, client).await?;
        let token = self.activate(principal, &[proven]).await?;
        tracing::info!(target: "medhub::auth", user = %principal.user.id, session = %principal.session.id, "signed in");
        Ok(token)
    }

    /// Step-up: proves the second factor again in an active session, which allows sensitive
    /// actions for the next 5 minutes.
    pub async fn step_up(
        &self,
        principal: &Principal,
        proof: &MfaProof,
        client: &ClientInfo,
    ) -> Result<(), ServiceError> {
        principal.require_active()?;
        let proven = self.prove(principal, "auth.step_up", proof, client).await?;
        self.store.set_session_state(principal.session.id, SessionState::Active, Some(self.now()), &[proven]).await?;
        tracing::info!(target: "medhub::auth", user = %principal.user.id, session = %principal.session.id, "stepped up");
        Ok(())
    }

    /// Replaces the caller's recovery codes (needs a step-up). The old set stops working and
    /// every other session of the user ends: this is an MFA change.
    pub async fn regenerate_recovery_codes(&self, principal: &Principal) -> Result<Vec<String>, ServiceError> {
        principal.require_step_up(self.now())?;
        if !self.mfa_enrolled(principal.user.id).await? {
            return Err(ServiceError::InvalidRequest("enrol an authenticator first".into()));
        }
        let (codes, hashes) = self.new_recovery_codes().await?;
        let replaced = self.audit_record("auth.recovery_codes", Some(principal), None, Outcome::Success, None, None);
        self.store.replace_recovery_codes(principal.user.id, &hashes, &[replaced]).await?;
        self.end_user_sessions(principal.user.id, Some(principal.session.id), "mfa_changed").await?;
        tracing::info!(target: "medhub::auth", user = %principal.user.id, "recovery codes replaced");
        Ok(codes)
    }

    /// How many unused recovery codes the caller has left.
    pub async fn recovery_codes_left(&self, principal: &Principal) -> Result<usize, ServiceError> {
        Ok(self.store.recovery_codes(principal.user.id).await?.len())
    }

    pub(super) async fn new_recovery_codes(&self) -> Result<(Vec<String>, Vec<String>), ServiceError> {
        let mut codes = Vec::with_capacity(RECOVERY_CODES);
        let mut hashes = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            let code = recovery_code()?;
            hashes.push(self.hash(normalize_recovery(&code)).await?);
            codes.push(code);
        }
        Ok((codes, hashes))
    }

    /// Checks a proof, throttled per user and per client address.
    /// A refusal is recorded here; a success returns its record, for the caller to commit
    /// with the session's change.
    async fn prove(
        &self,
        principal: &Principal,
        action: &str,
        proof: &MfaProof,
        client: &ClientInfo,
    ) -> Result<medhub_core::audit::AuditRecord, ServiceError> {
        let user = principal.user.id;
        let keys = throttle_keys("mfa", &user.to_string(), client);
        let ip = client.ip.map(|i| i.to_string());
        let kind = match proof {
            MfaProof::Totp(_) => "totp",
            MfaProof::RecoveryCode(_) => "recovery_code",
        };
        self.check_factor_throttle(&keys, action, principal, kind, &ip).await?;
        let ok = match proof {
            MfaProof::Totp(code) => self.check_totp(user, code).await?,
            MfaProof::RecoveryCode(code) => self.use_recovery_code(user, code).await?,
        };
        if !ok {
            let reason = Some("invalid_mfa_code");
            self.audit_event(action, Some(principal), Some(kind.into()), Outcome::Failure, reason, ip).await?;
            self.record_failure(&keys).await?;
            tracing::info!(target: "medhub::auth", user = %user, outcome = "denied", "second factor refused");
            return Err(ServiceError::InvalidMfaCode);
        }
        self.store.clear_throttle(&keys[0]).await?;
        Ok(self.audit_record(action, Some(principal), Some(kind.into()), Outcome::Success, None, ip))
    }

    /// A code of an unused step within the window. A code whose step was already accepted
    /// (the same code again, or an older one) is refused, also when two requests race: the
    /// store moves `last_step` forward only once.
    async fn check_totp(&self, user: UserId, code: &str) -> Result<bool, ServiceError> {
        let Some(rec) = self.store.totp(user).await?.filter(|t| t.confirmed_at.is_some()) else {
            return Ok(false);
        };
        let secret = self.key.open(&rec.secret_enc, &Self::aad(user)).ok_or(ServiceError::ServerKeyMismatch)?;
        let t = totp(secret, "medhub", "user")?;
        match matching_step(&t, code, self.now().as_second()) {
            Some(step) => Ok(self.store.advance_totp_step(user, step).await?),
            None => Ok(false),
        }
    }

    async fn use_recovery_code(&self, user: UserId, code: &str) -> Result<bool, ServiceError> {
        let code = normalize_recovery(code);
        if code.len() != RECOVERY_CHARS {
            return Ok(false);
        }
        for (idx, phc) in self.store.recovery_codes(user).await? {
            if self.verify_hash(code.clone(), phc).await {
                let used = self.store.use_recovery_code(user, idx, self.now()).await?;
                if used {
                    tracing::info!(target: "medhub::auth", user = %user, "recovery code used");
                }
                return Ok(used);
            }
        }
        Ok(false)
    }
}

/// A TOTP code for `secret_base32` at `unix_secs` (for tests and the load generator).
pub fn totp_code(secret_base32: &str, unix_secs: i64) -> Option<String> {
    let secret = totp_rs::Secret::Encoded(secret_base32.to_owned()).to_bytes().ok()?;
    let t = TOTP::new(Algorithm::SHA1, DIGITS, 0, STEP_SECS, secret, None, "x".into()).ok()?;
    Some(t.generate(u64::try_from(unix_secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B test vectors for SHA-1 (8 digits there; the last 6 here).
    #[test]
    fn codes_match_the_rfc_6238_vectors() {
        let secret = b"12345678901234567890".to_vec();
        let t = TOTP::new(Algorithm::SHA1, 8, 0, 30, secret, None, "x".into()).unwrap();
        for (time, code) in
            [(59u64, "94287082"), (1_111_111_109, "07081804"), (1_111_111_111, "14050471"), (1_234_567_890, "89005924")]
        {
            assert_eq!(t.generate(time), code);
        }
    }

    #[test]
    fn a_code_matches_its_step_and_the_neighbours_only() {
        let t = totp(vec![7u8; SECRET_BYTES], "medhub Test", "alice").unwrap();
        let now = 1_800_000_000i64;
        let step = (now / 30) as u64;
        for (offset, expect) in [(-2i64, None), (-1, Some(step - 1)), (0, Some(step)), (1, Some(step + 1)), (2, None)] {
            let code = t.generate((step as i64 + offset) as u64 * 30);
            // Codes of other steps can collide by chance (1 in a million); skip that case.
            if expect.is_none() && matching_step(&t, &code, now).is_some() {
                continue;
            }
            assert_eq!(matching_step(&t, &code, now), expect, "offset {offset}");
        }
        assert_eq!(matching_step(&t, "12345", now), None);
        assert_eq!(matching_step(&t, "abcdef", now), None);
        assert_eq!(matching_step(&t, "1234567", now), None);
    }

    #[test]
    fn the_otpauth_uri_names_issuer_account_and_parameters() {
        let t = totp(vec![1u8; SECRET_BYTES], "medhub St: Mary", "alice").unwrap();
        let uri = t.get_url();
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(uri.contains("secret="), "{uri}");
        assert!(uri.contains("alice"), "{uri}");
        assert!(!uri.contains("St:"), "issuer colon must be removed: {uri}");
    }

    #[test]
    fn recovery_codes_are_random_readable_and_normalized() {
        let a = recovery_code().unwrap();
        assert_eq!(a.len(), 11);
        assert_eq!(&a[5..6], "-");
        assert!(a.chars().filter(|c| *c != '-').all(|c| RECOVERY_ALPHABET.contains(&(c as u8))));
        assert_ne!(a, recovery_code().unwrap());
        assert_eq!(normalize_recovery(" ABCDE-fghjk "), "abcdefghjk");
    }

    #[test]
    fn the_test_helper_agrees_with_the_verifier() {
        let t = totp(vec![9u8; SECRET_BYTES], "medhub", "bob").unwrap();
        let secret = t.get_secret_base32();
        let code = totp_code(&secret, 1_800_000_000).unwrap();
        assert_eq!(matching_step(&t, &code, 1_800_000_000), Some(1_800_000_000 / 30));
    }
}
