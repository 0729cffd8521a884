//! Storage of the identity service: session expiry and listing, second factors, WebSocket
//! tickets, throttling, invitations, the server-key check, and single sign-on (pending flows
//! and IdP subject links). Only `medhub-service::auth` calls these.

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::AuditRecord;
use medhub_core::authz::Role;
use medhub_core::model::{Session, SessionState, SystemRole};
use medhub_core::session::Throttle;
use medhub_core::{OrgId, PasskeyId, SessionId, UserId};

use crate::{StoreError, UserRecord};

/// A user's TOTP enrolment. The secret is encrypted with the server key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TotpRecord {
    pub secret_enc: Vec<u8>,
    /// The newest time step accepted; codes of this step or earlier are refused.
    pub last_step: Option<u64>,
    /// `None` until the first valid code confirms the enrolment.
    pub confirmed_at: Option<Timestamp>,
}

/// A registered passkey: webauthn-rs's serialized `Passkey` (public key, signature counter,
/// flags) with medhub's bookkeeping. Nothing in it is secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasskeyRecord {
    pub id: PasskeyId,
    pub user: UserId,
    /// The WebAuthn credential id (raw bytes), unique across all users.
    pub credential_id: Vec<u8>,
    /// The serialized `Passkey` (JSON), rewritten after each use.
    pub passkey: String,
    /// What the user called it ("work laptop").
    pub name: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

/// What [`IdentityStore::delete_passkey`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasskeyDeletion {
    Deleted,
    /// No such passkey of this user.
    NotFound,
    /// It is the user's only second factor (no other passkey, no confirmed TOTP): kept.
    LastFactor,
}

/// A sign-in ceremony in progress (OpenID Connect, SAML, passkeys), stored so that any node can finish it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthFlow {
    /// SHA-256 of the `state` parameter: the flow is found by it, never by the state itself.
    pub state_hash: [u8; 32],
    /// `oidc`, `saml`, or `passkey_register`, `passkey_verify`, `passkey_step_up`. A SAML flow
    /// is keyed by the SHA-256 of its AuthnRequest ID, and its `nonce` and `verifier_enc` are
    /// empty. For passkey ceremonies `nonce` holds the session id the ceremony belongs to and
    /// `verifier_enc` the sealed ceremony state.
    pub kind: String,
    pub nonce: String,
    /// The PKCE verifier, encrypted with the server key.
    pub verifier_enc: Vec<u8>,
    /// A relative path the client returns to after signing in.
    pub return_to: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for AuthFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthFlow")
            .field("kind", &self.kind)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The audit log's head: how many records it holds, and the frontier of its Merkle tree (the
/// roots of its complete subtrees, largest first), from which the root follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditHead {
    pub size: u64,
    pub frontier: Vec<medhub_core::merkle::Hash>,
}

impl AuditHead {
    /// The tree the head describes.
    pub fn tree(&self) -> Result<medhub_core::merkle::Tree, StoreError> {
        medhub_core::merkle::Tree::from_frontier(self.size, self.frontier.clone())
            .map_err(|e| StoreError::Corrupt(format!("audit head: {e}")))
    }

    /// Reads a stored frontier: 32-byte hashes, concatenated.
    pub(crate) fn from_stored(size: i64, frontier: &[u8]) -> Result<Self, StoreError> {
        let size = u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("audit head size {size}")))?;
        if !frontier.len().is_multiple_of(32) {
            return Err(StoreError::Corrupt(format!("audit head frontier of {} bytes", frontier.len())));
        }
        let frontier = frontier.chunks_exact(32).map(|c| c.try_into().unwrap_or([0; 32])).collect();
        Ok(AuditHead { size, frontier })
    }

    /// The frontier as stored.
    pub(crate) fn stored_frontier(tree: &medhub_core::merkle::Tree) -> Vec<u8> {
        tree.frontier().concat()
    }
}

/// One record of the audit log, as stored: its leaf number and the leaf hash written with it.
/// `medhub audit verify` recomputes the hash from the record and compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: u64,
    pub record: AuditRecord,
    pub leaf_hash: Vec<u8>,
}

/// A signed tree head as kept in the database (its exported copy is what verification trusts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTreeHead {
    pub head: medhub_core::audit::TreeHead,
    /// Which key signed it: hex of the first 8 bytes of SHA-256 of the public key.
    pub key_id: String,
    pub signature: Vec<u8>,
}

/// Sessions ended by one call, with their users (to close their sockets).
pub type Ended = Vec<(SessionId, UserId)>;

/// The audit record of one ended session: `template` (its action, reason and node) with
/// the session, its user as the actor and the user's organization.
pub fn session_end_record(template: &AuditRecord, session: SessionId, user: UserId, org: Option<OrgId>) -> AuditRecord {
    AuditRecord { org, actor: Some(user), session: Some(session), ..template.clone().object("session", session) }
}

/// The audit record of a change to one user's account: `template` with the user as its
/// actor and object, and the user's organization.
pub fn user_record_of(template: &AuditRecord, user: UserId, org: OrgId) -> AuditRecord {
    AuditRecord { org: Some(org), actor: Some(user), ..template.clone().object("user", user) }
}

/// Identity storage. Every method is one transaction.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    // --- sessions ---------------------------------------------------------------------------

    /// A live (unrevoked) session by id.
    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError>;
    /// A user's live sessions, newest first.
    async fn sessions_for_user(&self, user: UserId) -> Result<Vec<Session>, StoreError>;
    /// The live sessions of an organization's users, newest first, after `before` (for
    /// paging), at most `limit`.
    async fn live_sessions(
        &self,
        org: OrgId,
        before: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<Session>, StoreError>;
    /// Ends one live session. Returns whether it was live. With `audit`, the end's record
    /// ([`session_end_record`] of it) is appended in the same transaction, and so are `also`
    /// (an administrator's own record of the kill) when the session was live.
    async fn end_session(
        &self,
        id: SessionId,
        now: Timestamp,
        reason: &str,
        audit: Option<&AuditRecord>,
        also: &[AuditRecord],
    ) -> Result<bool, StoreError>;
    /// Ends every live session of `user` except `keep`, each with its record as
    /// [`end_session`](Self::end_session) does.
    async fn end_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        now: Timestamp,
        reason: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<Ended, StoreError>;
    /// Moves a session to `state`; `mfa_at` is set when given (a factor was just proven).
    /// `audit` is appended in the same transaction.
    async fn set_session_state(
        &self,
        id: SessionId,
        state: SessionState,
        mfa_at: Option<Timestamp>,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError>;
    /// Finishes sign-in: the session becomes `active` with its factor proven at `now`, and
    /// its token is replaced by the one hashed as `token_hash` (a new token at every change
    /// of privilege, ASVS 3.2.1). False when the session had ended meanwhile; otherwise
    /// `audit` is appended in the same transaction.
    async fn activate_session(
        &self,
        id: SessionId,
        token_hash: &[u8; 32],
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError>;
    /// Records user activity; a session's `last_activity_at` only moves forward.
    async fn record_activity(&self, activity: &[(SessionId, Timestamp)]) -> Result<(), StoreError>;
    /// Ends every live session idle for its user's organization's idle timeout, or past its
    /// absolute lifetime, with `idle_timeout` or `absolute_lifetime` as the reason.
    /// Each with its record as [`end_session`](Self::end_session) does (the template's reason
    /// is kept: `expired`).
    async fn end_expired_sessions(&self, now: Timestamp, audit: Option<&AuditRecord>) -> Result<Ended, StoreError>;

    /// Changes a user's system role, and with it the administrator role (a demoted user
    /// without other roles keeps the clinician role), with `audit` in the same transaction.
    async fn set_user_role(&self, user: UserId, role: SystemRole, audit: &[AuditRecord]) -> Result<(), StoreError>;

    /// Sets one organization's idle timeout.
    async fn set_idle_timeout(
        &self,
        org: OrgId,
        idle_timeout: SignedDuration,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError>;

    // --- second factors ---------------------------------------------------------------------

    async fn totp(&self, user: UserId) -> Result<Option<TotpRecord>, StoreError>;
    /// Stores a new, unconfirmed secret, replacing an unconfirmed one. Fails with
    /// [`StoreError::Conflict`] when a confirmed secret exists.
    async fn put_pending_totp(&self, user: UserId, secret_enc: &[u8], now: Timestamp) -> Result<(), StoreError>;
    /// Confirms the pending secret with the step of its first code and stores the recovery
    /// codes (Argon2id hashes), replacing any earlier set. Returns `false` if there was no
    /// pending secret or the step was not newer. `audit` is appended in the same transaction
    /// when it confirms.
    async fn confirm_totp(
        &self,
        user: UserId,
        step: u64,
        recovery_hashes: &[String],
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError>;
    /// Accepts `step` only if it is newer than the last accepted one (a used code is refused,
    /// also when two requests race).
    async fn advance_totp_step(&self, user: UserId, step: u64) -> Result<bool, StoreError>;
    /// Removes the TOTP secret, the passkeys and the recovery codes (an administrator's MFA
    /// reset).
    async fn remove_second_factors(&self, user: UserId, audit: &[AuditRecord]) -> Result<(), StoreError>;
    /// Unused recovery codes: `(index, hash)`.
    async fn recovery_codes(&self, user: UserId) -> Result<Vec<(u32, String)>, StoreError>;
    /// Marks a recovery code used, if it still was unused.
    async fn use_recovery_code(&self, user: UserId, idx: u32, now: Timestamp) -> Result<bool, StoreError>;
    /// Replaces every recovery code, with `audit` in the same transaction.
    async fn replace_recovery_codes(
        &self,
        user: UserId,
        hashes: &[String],
        audit: &[AuditRecord],
    ) -> Result<(), StoreError>;

    // --- passkeys ---------------------------------------------------------------------------

    /// Adds a passkey; [`StoreError::Conflict`] if its credential id is registered already
    /// (to anyone). `audit` is appended in the same transaction.
    async fn add_passkey(&self, passkey: &PasskeyRecord, audit: &[AuditRecord]) -> Result<(), StoreError>;
    /// A user's passkeys, oldest first.
    async fn passkeys(&self, user: UserId) -> Result<Vec<PasskeyRecord>, StoreError>;
    /// The passkey with this credential id, whoever it belongs to.
    async fn passkey_by_credential(&self, credential_id: &[u8]) -> Result<Option<PasskeyRecord>, StoreError>;
    /// Stores the passkey after a use (new counter) and `last_used_at`, only if the stored
    /// value is still `old` (compare-and-set: of two concurrent uses of one credential, one
    /// wins). Returns whether it was written.
    async fn update_passkey(&self, id: PasskeyId, old: &str, new: &str, used_at: Timestamp)
    -> Result<bool, StoreError>;
    /// Deletes one of the user's passkeys, unless it is the user's last second factor; the
    /// check and the deletion are one transaction (serialised per user), with `audit`
    /// appended when it deletes.
    async fn delete_passkey(
        &self,
        user: UserId,
        id: PasskeyId,
        audit: &[AuditRecord],
    ) -> Result<PasskeyDeletion, StoreError>;

    // --- WebSocket tickets ------------------------------------------------------------------

    async fn create_ws_ticket(
        &self,
        hash: &[u8; 32],
        session: SessionId,
        expires_at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Uses a ticket once: the session it was issued to, if the ticket exists, is unused and
    /// unexpired. Also deletes expired tickets.
    async fn consume_ws_ticket(&self, hash: &[u8; 32], now: Timestamp) -> Result<Option<SessionId>, StoreError>;

    // --- throttling -------------------------------------------------------------------------

    async fn throttles(&self, keys: &[String]) -> Result<Vec<(String, Throttle)>, StoreError>;
    async fn put_throttle(&self, key: &str, t: &Throttle) -> Result<(), StoreError>;
    async fn clear_throttle(&self, key: &str) -> Result<(), StoreError>;

    // --- invitations ------------------------------------------------------------------------

    async fn create_invitation(
        &self,
        hash: &[u8; 32],
        user: UserId,
        by: UserId,
        now: Timestamp,
        expires_at: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError>;
    /// Redeems an unused, unexpired invitation of an active user: sets the password and marks
    /// the invitation (and the user's other invitations) used. Returns the user. With
    /// `audit`, the template is appended in the same transaction with the user as its actor
    /// and object and the user's organization.
    async fn redeem_invitation(
        &self,
        hash: &[u8; 32],
        password_hash: &str,
        now: Timestamp,
        audit: Option<&AuditRecord>,
    ) -> Result<Option<UserId>, StoreError>;
    /// Whether the user has an unused, unexpired invitation.
    async fn has_open_invitation(&self, user: UserId, now: Timestamp) -> Result<bool, StoreError>;

    // --- roles ------------------------------------------------------------------------------

    // A role is shipped (every organization sees it) or an organization's own. Keys are
    // unique among the shipped roles and within an organization; a key is resolved for an
    // organization by its own role first, then the shipped one, so an organization's role
    // keeps its key should a later release ship a role with the same key.

    /// Inserts or updates the shipped roles (organizations' own roles are not touched).
    async fn upsert_builtin_roles(&self, roles: &[Role], now: Timestamp) -> Result<(), StoreError>;
    /// An organization's catalogue by key: the shipped roles and its own.
    async fn roles(&self, org: OrgId) -> Result<Vec<Role>, StoreError>;
    /// Adds an organization's own role; [`StoreError::Conflict`] if a shipped role or one of
    /// the organization's has the key.
    async fn create_role(
        &self,
        org: OrgId,
        role: &Role,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError>;
    /// The keys of a user's roles, sorted.
    async fn user_roles(&self, user: UserId) -> Result<Vec<String>, StoreError>;
    /// Replaces a user's roles, keys of the user's organization's catalogue
    /// ([`StoreError::Conflict`] on any other key, or an unknown user), and keeps the system
    /// role in step: `admin` exactly when the administrator role is held.
    async fn set_user_roles(
        &self,
        user: UserId,
        keys: &[String],
        by: UserId,
        now: Timestamp,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError>;
    /// The permission lists (space-separated names) of every role the user holds.
    async fn user_permission_names(&self, user: UserId) -> Result<Vec<String>, StoreError>;

    // --- audit ------------------------------------------------------------------------------

    /// Appends audit records to the Merkle log in one transaction: each gets the next `seq`
    /// and its leaf hash, and the head moves on. Records from before the log (migration
    /// 0012) are sealed into it first, in their original order.
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError>;
    /// The audit log's head.
    async fn audit_head(&self) -> Result<AuditHead, StoreError>;
    /// Audit log entries with `seq >= from`, in `seq` order, at most `limit`: what the
    /// verifier streams. Tampering is not hidden: rows come back as stored.
    async fn audit_log(&self, from: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
    /// The stored leaf hashes of records `from..to` (by `seq`), in order: what proofs are
    /// made of.
    async fn audit_leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Keeps a signed tree head; a second head of the same size is ignored (`false`).
    async fn put_tree_head(&self, head: &StoredTreeHead) -> Result<bool, StoreError>;
    /// The newest signed tree head, if any.
    async fn latest_tree_head(&self) -> Result<Option<StoredTreeHead>, StoreError>;
    /// One organization's audit records matching `q`, newest first (docs/audit.md, search).
    async fn search_audit(&self, q: &crate::audit::AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;
    /// Audit records with an id above `after`, oldest first, at most `limit`.
    async fn audit_events(&self, after: i64, limit: u32) -> Result<Vec<(i64, AuditRecord)>, StoreError>;

    // --- server key -------------------------------------------------------------------------

    /// The stored key check value. With a `candidate`, inserts it first if there is none.
    async fn key_check(&self, candidate: Option<&[u8]>, now: Timestamp) -> Result<Option<Vec<u8>>, StoreError>;

    // --- SSO --------------------------------------------------------------------------------

    /// Stores a new flow, and deletes every expired one.
    async fn create_auth_flow(&self, flow: &AuthFlow) -> Result<(), StoreError>;
    /// Uses a flow once: one `UPDATE ... WHERE used_at IS NULL AND expires_at > now RETURNING`,
    /// so of two concurrent callbacks only one gets it. Unknown, used, expired and other-kind
    /// flows are all `None`.
    async fn consume_auth_flow(
        &self,
        state_hash: &[u8; 32],
        kind: &str,
        now: Timestamp,
    ) -> Result<Option<AuthFlow>, StoreError>;
    /// The user linked to an IdP subject.
    async fn sso_identity(&self, issuer: &str, subject: &str) -> Result<Option<UserId>, StoreError>;
    /// Creates a user and links it to an IdP subject, in one transaction. Fails with
    /// [`StoreError::UsernameTaken`] when the username exists (nothing is linked then), and with
    /// [`StoreError::Conflict`] when the subject is already linked.
    async fn create_sso_user(
        &self,
        user: &UserRecord,
        issuer: &str,
        subject: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Records a SAML assertion as used, keeping it until `expires_at`, and deletes the
    /// expired ones. `false` when it was already recorded (a replay): one
    /// `INSERT ... ON CONFLICT DO NOTHING`, so of two concurrent uses only one gets `true`.
    async fn record_saml_assertion(
        &self,
        assertion_hash: &[u8; 32],
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
}

/// A stored tree head from its columns.
pub(crate) fn stored_tree_head(
    size: i64,
    root: &[u8],
    at: Timestamp,
    key_id: String,
    signature: Vec<u8>,
) -> Result<StoredTreeHead, StoreError> {
    let size = u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("tree head size {size}")))?;
    let root = root.try_into().map_err(|_| StoreError::Corrupt(format!("tree head root of {} bytes", root.len())))?;
    Ok(StoredTreeHead { head: medhub_core::audit::TreeHead { size, root, at }, key_id, signature })
}
