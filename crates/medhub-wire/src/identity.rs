//! REST bodies of sign-in, second factors, sessions and account administration.

use jiff::Timestamp;
use medhub_core::model::{Session, SessionState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::frames::Token;
use crate::views::UserView;

/// Where a session is in sign-in. Only `active` reaches patient data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStateView {
    /// Password and second factor proven.
    Active,
    /// Signed in with a one-time password: `POST /api/v1/auth/password` next.
    PasswordChangeRequired,
    /// No second factor yet: `POST /api/v1/auth/mfa/totp/enroll`, then `.../confirm`.
    MfaEnrollmentRequired,
    /// `POST /api/v1/auth/mfa/verify` next.
    MfaRequired,
}

impl From<SessionState> for SessionStateView {
    fn from(s: SessionState) -> Self {
        match s {
            SessionState::Active => SessionStateView::Active,
            SessionState::PasswordChangeRequired => SessionStateView::PasswordChangeRequired,
            SessionState::MfaEnrollmentRequired => SessionStateView::MfaEnrollmentRequired,
            SessionState::MfaRequired => SessionStateView::MfaRequired,
        }
    }
}

/// `POST /api/v1/auth/mfa/verify` and `POST /api/v1/auth/step-up`: exactly one of the two.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaProofRequest {
    /// The 6-digit code from the authenticator app.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub code: Option<Token>,
    /// One of the recovery codes; each works once.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub recovery_code: Option<Token>,
}

impl std::fmt::Debug for MfaProofRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MfaProofRequest { .. }")
    }
}

/// The session after a step of sign-in.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionStateResponse {
    pub state: SessionStateView,
    /// When this step finished sign-in (`POST /api/v1/auth/mfa/verify`): the session's new
    /// bearer token. The token used for this request no longer works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl std::fmt::Debug for SessionStateResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStateResponse").field("state", &self.state).finish_non_exhaustive()
    }
}

/// `POST /api/v1/auth/mfa/totp/enroll`: add medhub to an authenticator app.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct TotpEnrollResponse {
    /// The secret in base32, for typing in by hand.
    pub secret: String,
    /// `otpauth://totp/...`
    pub otpauth_uri: String,
    /// The same URI as a QR code (an SVG document).
    pub qr_svg: String,
}

impl std::fmt::Debug for TotpEnrollResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrollResponse { .. }")
    }
}

/// `POST /api/v1/auth/mfa/totp/confirm`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirmRequest {
    #[schema(value_type = String)]
    pub code: Token,
}

impl std::fmt::Debug for TotpConfirmRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpConfirmRequest { .. }")
    }
}

/// Recovery codes, shown only in this response.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct RecoveryCodesResponse {
    pub recovery_codes: Vec<String>,
    pub state: SessionStateView,
    /// When this finished sign-in: the session's new bearer token. The token used for this
    /// request no longer works (a new token at every change of privilege).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl std::fmt::Debug for RecoveryCodesResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryCodesResponse { .. }")
    }
}

/// One live session.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub state: SessionStateView,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// The last user action (heartbeats and background refreshes do not count).
    #[schema(value_type = String, format = DateTime)]
    pub last_activity_at: Timestamp,
    /// The absolute end, 12 hours after sign-in.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// The address the session signed in from.
    pub ip: Option<String>,
    /// The browser or app that signed in.
    pub user_agent: Option<String>,
    /// This is the session making the request.
    pub current: bool,
}

impl SessionView {
    pub fn new(s: &Session, current: Option<medhub_core::SessionId>) -> Self {
        SessionView {
            id: s.id.as_uuid(),
            user_id: s.user.as_uuid(),
            state: s.state.into(),
            created_at: s.created_at,
            last_activity_at: s.last_activity_at,
            expires_at: s.expires_at,
            ip: s.ip.clone(),
            user_agent: s.user_agent.clone(),
            current: current == Some(s.id),
        }
    }
}

/// `GET /api/v1/auth/sessions` and `GET /api/v1/admin/sessions`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// `POST /api/v1/auth/ws-ticket`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct WsTicketResponse {
    /// Send it in `hello {"ticket": ...}` within `expires_in` seconds; it works once.
    #[schema(value_type = String)]
    pub ticket: Token,
    pub expires_in: u64,
}

impl std::fmt::Debug for WsTicketResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTicketResponse").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

/// A system role: `admin` manages accounts and settings; `user` is everyone else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SystemRoleView {
    Admin,
    User,
}

impl From<SystemRoleView> for medhub_core::model::SystemRole {
    fn from(r: SystemRoleView) -> Self {
        match r {
            SystemRoleView::Admin => medhub_core::model::SystemRole::Admin,
            SystemRoleView::User => medhub_core::model::SystemRole::User,
        }
    }
}

/// `POST /api/v1/admin/users`: invite a user.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    pub username: String,
    pub display_name: String,
    #[serde(default = "default_role")]
    pub role: SystemRoleView,
}

fn default_role() -> SystemRoleView {
    SystemRoleView::User
}

/// An invitation code, shown only in this response.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct InvitationResponse {
    pub user: UserView,
    /// Hand it to the invitee; it sets a password with `POST /api/v1/auth/invitation`.
    #[schema(value_type = String)]
    pub invitation_code: Token,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for InvitationResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvitationResponse").field("user", &self.user.id).finish_non_exhaustive()
    }
}

/// `POST /api/v1/auth/invitation`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitationRequest {
    #[schema(value_type = String)]
    pub code: Token,
    #[schema(value_type = String, format = Password)]
    pub password: Token,
}

impl std::fmt::Debug for AcceptInvitationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcceptInvitationRequest { .. }")
    }
}

/// `PATCH /api/v1/admin/users/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default)]
    pub role: Option<SystemRoleView>,
}

/// `GET /api/v1/admin/settings`, and the answer to `PATCH`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgSettings {
    /// Minutes without user activity after which a session ends (1-720; 15 by default).
    pub idle_timeout_minutes: i64,
    /// How long break-glass access lasts, in minutes (5-1440; 60 by default).
    pub break_glass_minutes: i64,
}

/// `PATCH /api/v1/admin/settings`: the settings to change (at least one).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrgSettings {
    /// 1-720.
    #[serde(default)]
    pub idle_timeout_minutes: Option<i64>,
    /// 5-1440.
    #[serde(default)]
    pub break_glass_minutes: Option<i64>,
}

/// A role: a named set of permissions.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RoleView {
    /// Stable key, `[a-z0-9_]`.
    pub key: String,
    pub name: String,
    /// Permission names, for example `message.send`, `break_glass.use`.
    pub permissions: Vec<String>,
    /// Shipped with medhub (kept current by medhub, not editable).
    pub builtin: bool,
}

impl From<&medhub_core::authz::Role> for RoleView {
    fn from(r: &medhub_core::authz::Role) -> Self {
        RoleView {
            key: r.key.clone(),
            name: r.name.clone(),
            permissions: r.permissions.list().iter().map(|p| p.as_str().to_owned()).collect(),
            builtin: r.builtin,
        }
    }
}

/// `GET /api/v1/admin/roles`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RoleList {
    pub roles: Vec<RoleView>,
}

/// `POST /api/v1/admin/roles`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleRequest {
    pub key: String,
    pub name: String,
    pub permissions: Vec<String>,
}

/// `GET` and `PUT /api/v1/admin/users/{id}/roles`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRoles {
    pub roles: Vec<String>,
}

/// A started passkey ceremony: `POST /api/v1/auth/mfa/passkey/register/start`,
/// `.../passkey/verify/start` and `/api/v1/auth/step-up/passkey/start`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct PasskeyChallengeResponse {
    /// Send it back with the authenticator's answer within 5 minutes; it works once.
    pub ceremony_id: String,
    /// WebAuthn options, `{"publicKey": {...}}` with binary fields in unpadded base64url:
    /// decode them and pass the result to `navigator.credentials.create()` (registration) or
    /// `navigator.credentials.get()` (sign-in and step-up).
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

impl std::fmt::Debug for PasskeyChallengeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasskeyChallengeResponse { .. }")
    }
}

/// `POST /api/v1/auth/mfa/passkey/register/finish`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyRegisterRequest {
    pub ceremony_id: String,
    /// What to call it ("work laptop"): 1-64 characters. Default: "Passkey".
    #[serde(default)]
    pub name: Option<String>,
    /// The `PublicKeyCredential` that `navigator.credentials.create()` returned, as JSON
    /// (`id`, `rawId`, `type`, `response.attestationObject`, `response.clientDataJSON`;
    /// binary fields in unpadded base64url).
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

impl std::fmt::Debug for PasskeyRegisterRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasskeyRegisterRequest { .. }")
    }
}

/// `POST /api/v1/auth/mfa/passkey/verify/finish` and `/api/v1/auth/step-up/passkey/finish`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyAssertionRequest {
    pub ceremony_id: String,
    /// The `PublicKeyCredential` that `navigator.credentials.get()` returned, as JSON
    /// (`id`, `rawId`, `type`, `response.authenticatorData`, `response.clientDataJSON`,
    /// `response.signature`; binary fields in unpadded base64url).
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

impl std::fmt::Debug for PasskeyAssertionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasskeyAssertionRequest { .. }")
    }
}

/// One of the caller's passkeys (the public key itself stays on the server).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PasskeyView {
    pub id: Uuid,
    pub name: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<Timestamp>,
}

/// `POST /api/v1/auth/mfa/passkey/register/finish`: the new passkey, and the recovery codes
/// when it is the account's first second factor (shown only now; empty otherwise).
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct PasskeyRegisteredResponse {
    pub passkey: PasskeyView,
    pub recovery_codes: Vec<String>,
    pub state: SessionStateView,
    /// When this finished sign-in: the session's new bearer token. The token used for this
    /// request no longer works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl std::fmt::Debug for PasskeyRegisteredResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasskeyRegisteredResponse").field("passkey", &self.passkey).finish_non_exhaustive()
    }
}

/// `GET /api/v1/auth/mfa/passkeys`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PasskeyList {
    pub passkeys: Vec<PasskeyView>,
}
