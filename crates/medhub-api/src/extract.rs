//! Extractors whose failures answer in medhub's error format: the bearer session, JSON
//! bodies, path ids and query strings.

use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use medhub_service::Principal;
use medhub_service::auth::ClientInfo;
use medhub_wire::ErrorCode;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// The caller's verified session, from `Authorization: Bearer <token>`. The request counts
/// as user activity (it restarts the idle timeout) unless the client marks it as background
/// with `X-Medhub-Background: 1` (automatic refreshes).
pub struct Authed(pub Principal);

/// Like [`Authed`], but never user activity: long-poll waits and WebSocket ticket fetches
/// happen without the user doing anything.
pub struct AuthedPassive(pub Principal);

/// The header a client sets on requests the user did not ask for.
pub const BACKGROUND_HEADER: &str = "x-medhub-background";

/// Reads the bearer token from the `Authorization` header.
pub fn bearer(parts: &Parts) -> Option<&str> {
    bearer_token(&parts.headers)
}

/// The bearer token of a request's headers.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let AuthedPassive(p) = AuthedPassive::from_request_parts(parts, state).await?;
        let background = parts.headers.get(BACKGROUND_HEADER).is_some_and(|v| v.as_bytes() == b"1");
        if !background {
            state.services.auth.touch(p.session.id);
        }
        Ok(Authed(p))
    }
}

impl FromRequestParts<AppState> for AuthedPassive {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Routes that need a permission were authenticated by the authorization layer.
        if let Some(crate::authz::Authorized(p)) = parts.extensions.get::<crate::authz::Authorized>() {
            return Ok(AuthedPassive((**p).clone()));
        }
        let token = bearer(parts).ok_or_else(|| ApiError::code(ErrorCode::Unauthenticated))?;
        Ok(AuthedPassive(state.services.auth.authenticate(token).await?))
    }
}

/// Where the request came from: the peer address and `User-Agent`.
pub struct Client(pub ClientInfo);

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let ua = parts.headers.get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok());
        Ok(Client(ClientInfo::new(ip, ua)))
    }
}

/// A JSON body; malformed bodies answer `bad_frame`, oversized ones `payload_too_large`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::BytesRejection(e)) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::code(ErrorCode::PayloadTooLarge))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(ApiError::with_message(ErrorCode::BadFrame, "expected Content-Type: application/json"))
            }
            Err(e) => Err(ApiError::with_message(ErrorCode::BadFrame, e.body_text())),
        }
    }
}

/// A path parameter. Malformed ids answer `not_found`, like ids that do not exist.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::code(ErrorCode::NotFound)),
            Err(e) => Err(ApiError::with_message(ErrorCode::InvalidRequest, e.body_text())),
        }
    }
}

/// A query string; malformed ones answer `invalid_request`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::with_message(ErrorCode::InvalidRequest, e.body_text()))
            }
            Err(e) => Err(ApiError::with_message(ErrorCode::InvalidRequest, e.body_text())),
        }
    }
}

/// A form body (`application/x-www-form-urlencoded`), as a browser posts it: the SAML
/// HTTP-POST binding. Malformed bodies answer `invalid_request`, oversized ones
/// `payload_too_large`.
pub struct ApiForm<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(ApiForm(v)),
            Err(FormRejection::BytesRejection(e)) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::code(ErrorCode::PayloadTooLarge))
            }
            Err(e) => Err(ApiError::with_message(ErrorCode::InvalidRequest, e.body_text())),
        }
    }
}
