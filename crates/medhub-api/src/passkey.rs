//! Passkey routes: registration (forced enrolment or a further factor), the sign-in second
//! step, step-up, and the caller's list. Each ceremony is `start` (options for the browser and
//! a ceremony id) then `finish` (the authenticator's answer); the checks are in
//! `medhub_service::auth` (`passkey.rs`).

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, extract::State};
use medhub_core::PasskeyId;
use medhub_service::auth::{PasskeyChallenge, PasskeyPurpose};
use medhub_store::PasskeyRecord;
use medhub_wire::ErrorBody;
use medhub_wire::identity::{
    PasskeyAssertionRequest, PasskeyChallengeResponse, PasskeyList, PasskeyRegisterRequest, PasskeyRegisteredResponse,
    PasskeyView, SessionStateResponse, SessionStateView,
};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Authed, Client};

type ApiResult<T> = Result<T, ApiError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/mfa/passkey/register/start", post(register_start))
        .route("/api/v1/auth/mfa/passkey/register/finish", post(register_finish))
        .route("/api/v1/auth/mfa/passkey/verify/start", post(verify_start))
        .route("/api/v1/auth/mfa/passkey/verify/finish", post(verify_finish))
        .route("/api/v1/auth/step-up/passkey/start", post(step_up_start))
        .route("/api/v1/auth/step-up/passkey/finish", post(step_up_finish))
        .route("/api/v1/auth/mfa/passkeys", get(list_passkeys))
        .route("/api/v1/auth/mfa/passkeys/{id}", delete(delete_passkey))
}

fn challenge(c: PasskeyChallenge) -> Json<PasskeyChallengeResponse> {
    Json(PasskeyChallengeResponse { ceremony_id: c.ceremony_id, options: c.options })
}

/// The wire view drops the stored credential: only id, name and times leave the server.
fn view(p: &PasskeyRecord) -> PasskeyView {
    PasskeyView { id: p.id.as_uuid(), name: p.name.clone(), created_at: p.created_at, last_used_at: p.last_used_at }
}

/// Start registering a passkey: at first sign-in (`mfa_enrollment_required`), or to add one
/// in an active session (needs a step-up when the account already has a second factor).
#[utoipa::path(post, path = "/api/v1/auth/mfa/passkey/register/start", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = PasskeyChallengeResponse), (status = 403, description = "step_up_required", body = ErrorBody),
              (status = 501, description = "passkeys_not_configured", body = ErrorBody)))]
pub async fn register_start(
    State(state): State<AppState>,
    Authed(p): Authed,
) -> ApiResult<Json<PasskeyChallengeResponse>> {
    Ok(challenge(state.services.auth.begin_passkey_registration(&p).await?))
}

/// Finish the registration with `navigator.credentials.create()`'s answer. The account's
/// first second factor comes with recovery codes (shown only now), a session waiting for
/// enrolment becomes active, and every other session of the user ends.
#[utoipa::path(post, path = "/api/v1/auth/mfa/passkey/register/finish", tag = "auth", security(("bearer" = [])),
    request_body = PasskeyRegisterRequest,
    responses((status = 200, body = PasskeyRegisteredResponse), (status = 401, description = "invalid_passkey", body = ErrorBody),
              (status = 429, description = "rate_limited", body = ErrorBody)))]
pub async fn register_finish(
    State(state): State<AppState>,
    Authed(p): Authed,
    Client(client): Client,
    ApiJson(req): ApiJson<PasskeyRegisterRequest>,
) -> ApiResult<Json<PasskeyRegisteredResponse>> {
    let auth = &state.services.auth;
    let done =
        auth.finish_passkey_registration(&p, &req.ceremony_id, req.name.as_deref(), req.credential, &client).await?;
    let p = auth.principal_for_session(p.session.id).await?;
    Ok(Json(PasskeyRegisteredResponse {
        passkey: view(&done.passkey),
        recovery_codes: done.recovery_codes,
        state: p.session.state.into(),
        token: done.token,
    }))
}

/// Start the second step of sign-in with a passkey (`mfa_required`).
#[utoipa::path(post, path = "/api/v1/auth/mfa/passkey/verify/start", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = PasskeyChallengeResponse), (status = 400, description = "no passkey registered", body = ErrorBody),
              (status = 429, description = "rate_limited", body = ErrorBody)))]
pub async fn verify_start(
    State(state): State<AppState>,
    Authed(p): Authed,
    Client(client): Client,
) -> ApiResult<Json<PasskeyChallengeResponse>> {
    Ok(challenge(state.services.auth.begin_passkey_assertion(&p, PasskeyPurpose::SignIn, &client).await?))
}

/// Finish the second step with `navigator.credentials.get()`'s answer: the session becomes
/// active.
#[utoipa::path(post, path = "/api/v1/auth/mfa/passkey/verify/finish", tag = "auth", security(("bearer" = [])),
    request_body = PasskeyAssertionRequest,
    responses((status = 200, body = SessionStateResponse), (status = 401, description = "invalid_passkey", body = ErrorBody),
              (status = 429, description = "rate_limited", body = ErrorBody)))]
pub async fn verify_finish(
    State(state): State<AppState>,
    Authed(p): Authed,
    Client(client): Client,
    ApiJson(req): ApiJson<PasskeyAssertionRequest>,
) -> ApiResult<Json<SessionStateResponse>> {
    let auth = &state.services.auth;
    let token =
        auth.finish_passkey_assertion(&p, PasskeyPurpose::SignIn, &req.ceremony_id, req.credential, &client).await?;
    Ok(Json(SessionStateResponse { state: SessionStateView::Active, token }))
}

/// Start a step-up with a passkey (an active session).
#[utoipa::path(post, path = "/api/v1/auth/step-up/passkey/start", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = PasskeyChallengeResponse), (status = 400, description = "no passkey registered", body = ErrorBody),
              (status = 429, description = "rate_limited", body = ErrorBody)))]
pub async fn step_up_start(
    State(state): State<AppState>,
    Authed(p): Authed,
    Client(client): Client,
) -> ApiResult<Json<PasskeyChallengeResponse>> {
    Ok(challenge(state.services.auth.begin_passkey_assertion(&p, PasskeyPurpose::StepUp, &client).await?))
}

/// Finish the step-up: sensitive actions are allowed for the next 5 minutes.
#[utoipa::path(post, path = "/api/v1/auth/step-up/passkey/finish", tag = "auth", security(("bearer" = [])),
    request_body = PasskeyAssertionRequest,
    responses((status = 204), (status = 401, description = "invalid_passkey", body = ErrorBody),
              (status = 429, description = "rate_limited", body = ErrorBody)))]
pub async fn step_up_finish(
    State(state): State<AppState>,
    Authed(p): Authed,
    Client(client): Client,
    ApiJson(req): ApiJson<PasskeyAssertionRequest>,
) -> ApiResult<StatusCode> {
    let auth = &state.services.auth;
    auth.finish_passkey_assertion(&p, PasskeyPurpose::StepUp, &req.ceremony_id, req.credential, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's passkeys: id, name, when registered and last used.
#[utoipa::path(get, path = "/api/v1/auth/mfa/passkeys", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = PasskeyList), (status = 401, body = ErrorBody)))]
pub async fn list_passkeys(State(state): State<AppState>, Authed(p): Authed) -> ApiResult<Json<PasskeyList>> {
    let passkeys = state.services.auth.my_passkeys(&p).await?;
    Ok(Json(PasskeyList { passkeys: passkeys.iter().map(view).collect() }))
}

/// Delete one of the caller's passkeys (needs a step-up). The account's last second factor is
/// kept (`409 last_second_factor`); every other session of the user ends.
#[utoipa::path(delete, path = "/api/v1/auth/mfa/passkeys/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Passkey id")),
    responses((status = 204), (status = 403, description = "step_up_required", body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, description = "last_second_factor", body = ErrorBody)))]
pub async fn delete_passkey(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    state.services.auth.delete_passkey(&p, PasskeyId::from_uuid(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
