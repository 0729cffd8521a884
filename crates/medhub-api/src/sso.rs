//! Single sign-on routes: `GET /api/v1/auth/oidc/start` sends the browser to the identity
//! provider, and `GET /api/v1/auth/oidc/callback` turns the provider's answer into a session
//! (the same JSON as a password sign-in).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use medhub_wire::frames::Token;
use medhub_wire::rest::LoginResponse;
use medhub_wire::views::UserView;
use medhub_wire::{ErrorBody, ErrorCode};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, Client};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/oidc/start", get(oidc_start))
        .route("/api/v1/auth/oidc/callback", get(oidc_callback))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StartQuery {
    /// A relative path on this server to come back to after signing in (`/conversations`).
    pub return_to: Option<String>,
}

/// What the identity provider appends to the redirect URI.
#[derive(Deserialize, IntoParams)]
pub struct CallbackQuery {
    /// The authorization code (single use, never logged).
    pub code: Option<String>,
    /// The `state` medhub sent with the browser.
    pub state: Option<String>,
    /// Set instead of `code` when the provider did not sign the user in (`access_denied`...).
    pub error: Option<String>,
}

/// Start single sign-on: answers `302 Found` to the identity provider's authorization page.
/// The sign-in must finish within 10 minutes.
#[utoipa::path(get, path = "/api/v1/auth/oidc/start", tag = "auth", params(StartQuery),
    responses((status = 302, description = "to the identity provider (Location)"),
              (status = 400, description = "invalid_request: return_to is not a relative path", body = ErrorBody),
              (status = 501, description = "sso_not_configured", body = ErrorBody),
              (status = 503, description = "sso_unavailable", body = ErrorBody)))]
pub async fn oidc_start(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<StartQuery>,
) -> Result<Response, ApiError> {
    let url = state.services.auth.oidc_begin(q.return_to.as_deref()).await?;
    Ok((StatusCode::FOUND, [(header::LOCATION, url)]).into_response())
}

/// Finish single sign-on with the `code` and `state` the identity provider sent back (the
/// web client's callback page forwards them). Answers like `POST /api/v1/auth/login`, plus
/// `return_to`; the session is `active` only when the provider's sign-in counts as a second
/// factor (`idp_enforces_mfa` and a matching `amr`), otherwise medhub's own factor follows.
#[utoipa::path(get, path = "/api/v1/auth/oidc/callback", tag = "auth", params(CallbackQuery),
    responses((status = 200, body = LoginResponse),
              (status = 401, description = "sso_failed", body = ErrorBody),
              (status = 409, description = "sso_account_conflict", body = ErrorBody),
              (status = 429, description = "rate_limited (with Retry-After)", body = ErrorBody),
              (status = 501, description = "sso_not_configured", body = ErrorBody),
              (status = 503, description = "sso_unavailable", body = ErrorBody)))]
pub async fn oidc_callback(
    State(state): State<AppState>,
    Client(client): Client,
    ApiQuery(q): ApiQuery<CallbackQuery>,
) -> Result<Json<LoginResponse>, ApiError> {
    let auth = &state.services.auth;
    if q.error.is_some() {
        // The provider said no (the user cancelled, or is not allowed to use medhub). Its
        // flow simply expires.
        auth.oidc_configured()?;
        return Err(ApiError::with_message(ErrorCode::SsoFailed, "the identity provider did not sign you in"));
    }
    let done = auth
        .oidc_finish(q.code.as_deref().unwrap_or_default(), q.state.as_deref().unwrap_or_default(), &client)
        .await?;
    let issued = done.issued;
    Ok(Json(LoginResponse {
        token: Token(issued.token),
        session_id: issued.session.id.as_uuid(),
        user: UserView::from(&issued.user),
        expires_at: issued.session.expires_at,
        password_change_required: false,
        state: issued.session.state.into(),
        return_to: done.return_to,
    }))
}
