//! Identity routes: sign-in and its second step, second factors, step-up, sessions,
//! WebSocket tickets, invitations, and the administrators' account and session controls.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, extract::State};
use medhub_core::{SessionId, UserId};
use medhub_service::ServiceError;
use medhub_service::auth::{MfaProof, WS_TICKET_TTL};
use medhub_wire::frames::Token;
use medhub_wire::identity::{
    AcceptInvitationRequest, CreateRoleRequest, InvitationResponse, InviteRequest, MfaProofRequest, OrgSettings,
    RecoveryCodesResponse, RoleList, RoleView, SessionList, SessionStateResponse, SessionStateView, SessionView,
    TotpConfirmRequest, TotpEnrollResponse, UpdateOrgSettings, UpdateUserRequest, UserRoles, WsTicketResponse,
};
use medhub_wire::rest::{ChangePasswordRequest, LoginRequest, LoginResponse};
use medhub_wire::views::UserView;
use medhub_wire::{ErrorBody, ErrorCode};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authed, AuthedPassive, Client};

type ApiResult<T> = Result<T, ApiError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/password", post(change_password))
        .route("/api/v1/auth/mfa/totp/enroll", post(totp_enroll))
        .route("/api/v1/auth/mfa/totp/confirm", post(totp_confirm))
        .route("/api/v1/auth/mfa/verify", post(mfa_verify))
        .route("/api/v1/auth/mfa/recovery-codes", post(regenerate_recovery_codes))
        .route("/api/v1/auth/step-up", post(step_up))
        .route("/api/v1/auth/sessions", get(my_sessions))
        .route("/api/v1/auth/sessions/{id}", delete(end_my_session))
        .route("/api/v1/auth/ws-ticket", post(ws_ticket))
        .route("/api/v1/auth/invitation", post(accept_invitation))
        .route("/api/v1/admin/sessions", get(all_sessions))
        .route("/api/v1/admin/sessions/{id}", delete(kill_session))
        .route("/api/v1/admin/users", post(invite))
        .route("/api/v1/admin/users/{id}", axum::routing::patch(update_user))
        .route("/api/v1/admin/users/{id}/invitation", post(reinvite))
        .route("/api/v1/admin/users/{id}/mfa-reset", post(reset_mfa))
        .route("/api/v1/admin/settings", get(get_settings).patch(update_settings))
        .route("/api/v1/admin/roles", get(list_roles).post(create_role))
        .route("/api/v1/admin/users/{id}/roles", get(get_user_roles).put(set_user_roles))
}

fn proof(req: MfaProofRequest) -> ApiResult<MfaProof> {
    match (req.code, req.recovery_code) {
        (Some(c), None) => Ok(MfaProof::Totp(c.0)),
        (None, Some(r)) => Ok(MfaProof::RecoveryCode(r.0)),
        _ => Err(ApiError::with_message(ErrorCode::InvalidRequest, "give exactly one of code and recovery_code")),
    }
}

/// Sign in with username and password. The answer's `state` says what comes next; only an
/// `active` session reaches conversations, and a password alone never makes one active.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, description = "invalid_credentials", body = ErrorBody),
              (status = 429, description = "rate_limited (with Retry-After)", body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let issued = state.services.auth.login(&req.username, &req.password.0, &client).await?;
    Ok(Json(LoginResponse {
        token: Token(issued.token),
        session_id: issued.session.id.as_uuid(),
        user: UserView::from(&issued.user),
        expires_at: issued.session.expires_at,
        password_change_required: issued.session.state == medhub_core::model::SessionState::PasswordChangeRequired,
        state: issued.session.state.into(),
        return_to: None,
    }))
}

/// End the current session; its live connections close with 4003.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn logout(State(state): State<AppState>, AuthedPassive(p): AuthedPassive) -> ApiResult<StatusCode> {
    state.services.auth.logout(&p).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change the password (required after signing in with a one-time password). Every other
/// session of the user ends.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", security(("bearer" = [])), request_body = ChangePasswordRequest,
    responses((status = 200, body = SessionStateResponse), (status = 400, description = "password_length", body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> ApiResult<Json<SessionStateResponse>> {
    state.services.auth.change_password(&p, &req.current_password.0, &req.new_password.0).await?;
    let p = state.services.auth.principal_for_session(p.session.id).await?;
    Ok(Json(SessionStateResponse { state: p.session.state.into(), token: None }))
}

/// Start enrolling an authenticator app: a new secret, as an `otpauth://` URI and a QR
/// code. It takes effect with the first code (`/auth/mfa/totp/confirm`).
#[utoipa::path(post, path = "/api/v1/auth/mfa/totp/enroll", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = TotpEnrollResponse), (status = 409, description = "mfa_already_enrolled", body = ErrorBody)))]
pub async fn totp_enroll(State(state): State<AppState>, Authed(p): Authed) -> ApiResult<Json<TotpEnrollResponse>> {
    let e = state.services.auth.begin_totp(&p).await?;
    Ok(Json(TotpEnrollResponse { secret: e.secret, otpauth_uri: e.uri, qr_svg: e.qr_svg }))
}

/// Confirm the authenticator with its first code. Answers the recovery codes, shown only
/// now; a session waiting for enrolment becomes active under a new token (in the answer).
#[utoipa::path(post, path = "/api/v1/auth/mfa/totp/confirm", tag = "auth", security(("bearer" = [])), request_body = TotpConfirmRequest,
    responses((status = 200, body = RecoveryCodesResponse), (status = 401, description = "invalid_mfa_code", body = ErrorBody),
              (status = 429, description = "rate_limited", body = ErrorBody)))]
pub async fn totp_confirm(
    State(state): State<AppState>,
    Authed(p): Authed,
    Client(client): Client,
    ApiJson(req): ApiJson<TotpConfirmRequest>,
) -> ApiResult<Json<RecoveryCodesResponse>> {
    let enrolled = state.services.auth.confirm_totp(&p, &req.code.0, &client).await?;
    let p = state.services.auth.principal_for_session(p.session.id).await?;
    Ok(Json(RecoveryCodesResponse {
        recovery_codes: enrolled.recovery_codes,
        state: p.session.state.into(),
        token: enrolled.token,
    }))
}

/// The second step of sign-in: an authenticator code or a recovery code. The session
/// becomes active under a new token (in the answer); the one used here stops working.
#[utoipa::path(post, path = "/api/v1/auth/mfa/verify", tag = "auth", security(("bearer" = [])), request_body = MfaProofRequest,
    responses((status = 200, body = SessionStateResponse), (status = 401, description = "invalid_mfa_code", body = ErrorBody),
              (status = 429, description = "rate_limited", body = ErrorBody)))]
pub async fn mfa_verify(
    State(state): State<AppState>,
    Authed(p): Authed,
    Client(client): Client,
    ApiJson(req): ApiJson<MfaProofRequest>,
) -> ApiResult<Json<SessionStateResponse>> {
    let token = state.services.auth.verify_mfa(&p, &proof(req)?, &client).await?;
    Ok(Json(SessionStateResponse { state: SessionStateView::Active, token: Some(token) }))
}

/// Prove the second factor again: sensitive actions (role and account changes, MFA resets,
/// settings; break-glass and exports when they exist) are allowed for 5 minutes after.
#[utoipa::path(post, path = "/api/v1/auth/step-up", tag = "auth", security(("bearer" = [])), request_body = MfaProofRequest,
    responses((status = 204), (status = 401, description = "invalid_mfa_code", body = ErrorBody),
              (status = 429, description = "rate_limited", body = ErrorBody)))]
pub async fn step_up(
    State(state): State<AppState>,
    Authed(p): Authed,
    Client(client): Client,
    ApiJson(req): ApiJson<MfaProofRequest>,
) -> ApiResult<StatusCode> {
    state.services.auth.step_up(&p, &proof(req)?, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace the recovery codes (needs a step-up). Every other session of the user ends.
#[utoipa::path(post, path = "/api/v1/auth/mfa/recovery-codes", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = RecoveryCodesResponse), (status = 403, description = "step_up_required", body = ErrorBody)))]
pub async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    Authed(p): Authed,
) -> ApiResult<Json<RecoveryCodesResponse>> {
    let codes = state.services.auth.regenerate_recovery_codes(&p).await?;
    Ok(Json(RecoveryCodesResponse { recovery_codes: codes, state: SessionStateView::Active, token: None }))
}

fn session_list(sessions: &[medhub_core::model::Session], current: Option<SessionId>) -> SessionList {
    SessionList { sessions: sessions.iter().map(|s| SessionView::new(s, current)).collect() }
}

/// The caller's live sessions: device, address and last activity.
#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = SessionList), (status = 401, body = ErrorBody)))]
pub async fn my_sessions(State(state): State<AppState>, Authed(p): Authed) -> ApiResult<Json<SessionList>> {
    let sessions = state.services.auth.my_sessions(&p).await?;
    Ok(Json(session_list(&sessions, Some(p.session.id))))
}

/// End one of the caller's sessions (a lost phone, a shared workstation).
#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Session id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn end_my_session(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    state.services.auth.end_my_session(&p, SessionId::from_uuid(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A single-use ticket for `hello`, valid for 30 seconds. Fetching one is not user activity.
#[utoipa::path(post, path = "/api/v1/auth/ws-ticket", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = WsTicketResponse), (status = 401, body = ErrorBody)))]
pub async fn ws_ticket(
    State(state): State<AppState>,
    AuthedPassive(p): AuthedPassive,
) -> ApiResult<Json<WsTicketResponse>> {
    let ticket = state.services.auth.ws_ticket(&p).await?;
    Ok(Json(WsTicketResponse { ticket: Token(ticket), expires_in: WS_TICKET_TTL.as_secs() as u64 }))
}

/// Set a password with an invitation code. Then sign in and enrol a second factor.
#[utoipa::path(post, path = "/api/v1/auth/invitation", tag = "auth", request_body = AcceptInvitationRequest,
    responses((status = 200, body = UserView), (status = 400, description = "invalid_invitation or password_length", body = ErrorBody),
              (status = 429, description = "rate_limited", body = ErrorBody)))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(req): ApiJson<AcceptInvitationRequest>,
) -> ApiResult<Json<UserView>> {
    let user = state.services.auth.accept_invitation(&req.code.0, &req.password.0, &client).await?;
    Ok(Json(UserView::from(&user)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// Only this user's sessions.
    user_id: Option<Uuid>,
    /// Sessions older than this one (paging).
    before: Option<Uuid>,
    /// At most this many (1-500, default 100).
    limit: Option<u32>,
}

/// Every live session (administrators).
#[utoipa::path(get, path = "/api/v1/admin/sessions", tag = "admin", security(("bearer" = [])), params(SessionQuery),
    responses((status = 200, body = SessionList), (status = 403, body = ErrorBody)))]
pub async fn all_sessions(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiQuery(q): ApiQuery<SessionQuery>,
) -> ApiResult<Json<SessionList>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::with_message(ErrorCode::InvalidRequest, "limit must be 1-500"));
    }
    let sessions = state
        .services
        .auth
        .all_sessions(&p, q.user_id.map(UserId::from_uuid), q.before.map(SessionId::from_uuid), limit)
        .await?;
    Ok(Json(session_list(&sessions, Some(p.session.id))))
}

/// End any session (administrators); its sockets close within 5 seconds.
#[utoipa::path(delete, path = "/api/v1/admin/sessions/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Session id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn kill_session(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    state.services.auth.kill_session(&p, SessionId::from_uuid(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Invite a user (administrators; inviting an administrator needs a step-up). Answers the
/// invitation code, shown only now.
#[utoipa::path(post, path = "/api/v1/admin/users", tag = "admin", security(("bearer" = [])), request_body = InviteRequest,
    responses((status = 201, body = InvitationResponse), (status = 403, body = ErrorBody), (status = 409, description = "username_taken", body = ErrorBody)))]
pub async fn invite(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(req): ApiJson<InviteRequest>,
) -> ApiResult<(StatusCode, Json<InvitationResponse>)> {
    let (user, inv) = state.services.auth.invite(&p, &req.username, &req.display_name, req.role.into()).await?;
    Ok((
        StatusCode::CREATED,
        Json(InvitationResponse {
            user: UserView::from(&user),
            invitation_code: Token(inv.code),
            expires_at: inv.expires_at,
        }),
    ))
}

/// A new invitation code for an existing user (administrators, step-up). Redeeming it sets
/// a new password and ends every session of the user.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/invitation", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, body = InvitationResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn reinvite(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<InvitationResponse>> {
    let user = UserId::from_uuid(id);
    let inv = state.services.auth.reinvite(&p, user).await?;
    let u = state.services.store.user(user).await.map_err(ServiceError::from)?;
    let u = u.ok_or_else(|| ApiError::code(ErrorCode::NotFound))?;
    Ok(Json(InvitationResponse {
        user: UserView::from(&u),
        invitation_code: Token(inv.code),
        expires_at: inv.expires_at,
    }))
}

/// Activate or deactivate an account, or change its system role (administrators, step-up).
/// Deactivation and losing the administrator role end the user's sessions at once.
#[utoipa::path(patch, path = "/api/v1/admin/users/{id}", tag = "admin", security(("bearer" = [])), request_body = UpdateUserRequest,
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, body = UserView), (status = 403, description = "forbidden or step_up_required", body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn update_user(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> ApiResult<Json<UserView>> {
    let user = state.services.auth.update_user(&p, UserId::from_uuid(id), req.active, req.role.map(Into::into)).await?;
    Ok(Json(UserView::from(&user)))
}

/// Remove a user's second factors (administrators, step-up): a lost phone. The user enrols
/// again at the next sign-in; every session of the user ends.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/mfa-reset", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn reset_mfa(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    state.services.auth.reset_mfa(&p, UserId::from_uuid(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn settings(state: &AppState, p: &medhub_service::Principal) -> ApiResult<OrgSettings> {
    Ok(OrgSettings {
        idle_timeout_minutes: state.services.auth.idle_timeout(p.user.org).as_mins(),
        break_glass_minutes: state.services.patients.break_glass_minutes(p).await?,
    })
}

/// The organization's session and break-glass settings (administrators).
#[utoipa::path(get, path = "/api/v1/admin/settings", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = OrgSettings), (status = 403, body = ErrorBody)))]
pub async fn get_settings(State(state): State<AppState>, Authed(p): Authed) -> ApiResult<Json<OrgSettings>> {
    p.require(medhub_core::authz::Permission::OrgSettings)?;
    Ok(Json(settings(&state, &p).await?))
}

/// Change the idle timeout (1-720 minutes) or the break-glass duration (5-1440 minutes)
/// (administrators, step-up).
#[utoipa::path(patch, path = "/api/v1/admin/settings", tag = "admin", security(("bearer" = [])), request_body = UpdateOrgSettings,
    responses((status = 200, body = OrgSettings), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn update_settings(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(req): ApiJson<UpdateOrgSettings>,
) -> ApiResult<Json<OrgSettings>> {
    if req.idle_timeout_minutes.is_none() && req.break_glass_minutes.is_none() {
        return Err(ServiceError::InvalidRequest("give idle_timeout_minutes or break_glass_minutes".into()).into());
    }
    if let Some(m) = req.idle_timeout_minutes {
        state.services.auth.set_idle_timeout(&p, m).await?;
    }
    if let Some(m) = req.break_glass_minutes {
        state.services.patients.set_break_glass_minutes(&p, m).await?;
    }
    Ok(Json(settings(&state, &p).await?))
}

/// The caller's organization's role catalogue: the shipped roles and its own.
#[utoipa::path(get, path = "/api/v1/admin/roles", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = RoleList), (status = 403, body = ErrorBody)))]
pub async fn list_roles(State(state): State<AppState>, Authed(p): Authed) -> ApiResult<Json<RoleList>> {
    let roles = state.services.auth.roles(&p).await?;
    Ok(Json(RoleList { roles: roles.iter().map(RoleView::from).collect() }))
}

/// Add a role to the caller's organization (role administrators, step-up).
#[utoipa::path(post, path = "/api/v1/admin/roles", tag = "admin", security(("bearer" = [])), request_body = CreateRoleRequest,
    responses((status = 201, body = RoleView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_role(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(req): ApiJson<CreateRoleRequest>,
) -> ApiResult<(StatusCode, Json<RoleView>)> {
    let role = state.services.auth.create_role(&p, &req.key, &req.name, &req.permissions).await?;
    Ok((StatusCode::CREATED, Json(RoleView::from(&role))))
}

/// A user's roles (role administrators).
#[utoipa::path(get, path = "/api/v1/admin/users/{id}/roles", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, body = UserRoles), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_user_roles(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<UserRoles>> {
    Ok(Json(UserRoles { roles: state.services.auth.user_roles(&p, UserId::from_uuid(id)).await? }))
}

/// Replace a user's roles (role administrators, step-up). Removing a role ends the user's
/// sessions at once; a granted role works at the user's next request.
#[utoipa::path(put, path = "/api/v1/admin/users/{id}/roles", tag = "admin", security(("bearer" = [])), request_body = UserRoles,
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, body = UserRoles), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn set_user_roles(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UserRoles>,
) -> ApiResult<Json<UserRoles>> {
    Ok(Json(UserRoles { roles: state.services.auth.set_user_roles(&p, UserId::from_uuid(id), &req.roles).await? }))
}
