//! Single sign-on routes. OpenID Connect: `GET /api/v1/auth/oidc/start` sends the browser to
//! the identity provider, and `GET /api/v1/auth/oidc/callback` turns the provider's answer into
//! a session (the same JSON as a password sign-in). SAML 2.0: `GET /api/v1/auth/saml/start`
//! sends the browser to the IdP with an AuthnRequest (HTTP-Redirect binding), the IdP's page
//! posts the signed response to `POST /api/v1/auth/saml/acs` (HTTP-POST binding, a form, so no
//! JSON content type or bearer token is asked for there), and `GET /api/v1/auth/saml/metadata`
//! is the SP metadata for the IdP's administrator.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use medhub_service::auth::SsoSignIn;
use medhub_wire::frames::Token;
use medhub_wire::rest::LoginResponse;
use medhub_wire::views::UserView;
use medhub_wire::{ErrorBody, ErrorCode};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiForm, ApiQuery, Client};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/oidc/start", get(oidc_start))
        .route("/api/v1/auth/oidc/callback", get(oidc_callback))
        .route("/api/v1/auth/saml/start", get(saml_start))
        .route("/api/v1/auth/saml/acs", post(saml_acs))
        .route("/api/v1/auth/saml/metadata", get(saml_metadata))
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
    Ok(Json(login_response(done)))
}

/// The answer to a finished SSO sign-in, whatever the protocol.
fn login_response(done: SsoSignIn) -> LoginResponse {
    let issued = done.issued;
    LoginResponse {
        token: Token(issued.token),
        session_id: issued.session.id.as_uuid(),
        user: UserView::from(&issued.user),
        expires_at: issued.session.expires_at,
        password_change_required: false,
        state: issued.session.state.into(),
        return_to: done.return_to,
    }
}

/// Start SAML single sign-on: answers `302 Found` to the IdP's single sign-on URL with an
/// AuthnRequest (HTTP-Redirect binding). The IdP must answer within 10 minutes.
#[utoipa::path(get, path = "/api/v1/auth/saml/start", tag = "auth", params(StartQuery),
    responses((status = 302, description = "to the identity provider (Location, with SAMLRequest)"),
              (status = 400, description = "invalid_request: return_to is not a relative path", body = ErrorBody),
              (status = 501, description = "sso_not_configured", body = ErrorBody)))]
pub async fn saml_start(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<StartQuery>,
) -> Result<Response, ApiError> {
    let url = state.services.auth.saml_begin(q.return_to.as_deref()).await?;
    Ok((StatusCode::FOUND, [(header::LOCATION, url)]).into_response())
}

/// What the IdP's page posts (`application/x-www-form-urlencoded`).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct AcsForm {
    /// The IdP's Response, base64 (never logged).
    #[serde(rename = "SAMLResponse")]
    pub saml_response: Option<String>,
    /// Accepted and ignored: medhub sends none, and keeps `return_to` with the request.
    #[serde(rename = "RelayState")]
    #[allow(dead_code, reason = "listed for the OpenAPI document; never read")]
    pub relay_state: Option<String>,
}

/// The assertion consumer service (HTTP-POST binding). Answers like `POST /api/v1/auth/login`,
/// plus `return_to`. The response must be signed by the IdP's certificate, answer a sign-in
/// medhub started (InResponseTo, single use, 10 minutes), name medhub as audience and
/// recipient, be unexpired (60 s of skew) and never used before. The session is `active` only
/// when the IdP's sign-in counts as a second factor (`idp_enforces_mfa` and an accepted
/// AuthnContextClassRef); otherwise medhub's own factor follows.
#[utoipa::path(post, path = "/api/v1/auth/saml/acs", tag = "auth",
    request_body(content = AcsForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = LoginResponse),
              (status = 401, description = "sso_failed", body = ErrorBody),
              (status = 409, description = "sso_account_conflict", body = ErrorBody),
              (status = 429, description = "rate_limited (with Retry-After)", body = ErrorBody),
              (status = 501, description = "sso_not_configured", body = ErrorBody)))]
pub async fn saml_acs(
    State(state): State<AppState>,
    Client(client): Client,
    ApiForm(form): ApiForm<AcsForm>,
) -> Result<Json<LoginResponse>, ApiError> {
    let done = state.services.auth.saml_finish(form.saml_response.as_deref().unwrap_or_default(), &client).await?;
    Ok(Json(login_response(done)))
}

/// The SP metadata (entity id, ACS URL and binding, persistent NameID, signed assertions
/// wanted), for the IdP's administrator to import.
#[utoipa::path(get, path = "/api/v1/auth/saml/metadata", tag = "auth",
    responses((status = 200, description = "SAML 2.0 metadata", content_type = "application/samlmetadata+xml", body = String),
              (status = 501, description = "sso_not_configured", body = ErrorBody)))]
pub async fn saml_metadata(State(state): State<AppState>) -> Result<Response, ApiError> {
    let xml = state.services.auth.saml_metadata()?;
    Ok(([(header::CONTENT_TYPE, "application/samlmetadata+xml")], xml).into_response())
}
