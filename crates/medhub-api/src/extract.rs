//! Extractors whose failures answer in medhub's error format: the bearer session, JSON
//! bodies, path ids and query strings.

use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
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

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let ip = request_ip(&parts.extensions, &parts.headers, state);
        let ua = parts.headers.get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok());
        Ok(Client(ClientInfo::new(ip, ua)))
    }
}

/// The address a request came from, as [`client_ip`] decides with the configured proxies.
pub fn request_ip(extensions: &Extensions, headers: &HeaderMap, state: &AppState) -> Option<IpAddr> {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    client_ip(headers, peer, &state.config.trusted_proxies)
}

/// The client's address: the peer's, unless the peer is one of the `trusted` reverse proxies.
/// Then it is the nearest address of `X-Forwarded-For` that is not a trusted proxy, walking
/// from the right (each proxy appends the address it saw, and only the part our own proxies
/// wrote can be believed; anything to its left was sent by the client). A header that does
/// not parse is ignored and the peer's address used: a wrong guess would let a client choose
/// the address its sign-in failures are throttled under.
pub fn client_ip(headers: &HeaderMap, peer: Option<IpAddr>, trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else { return Some(peer) };
        for part in text.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip.to_canonical()),
                Err(_) => return Some(peer),
            }
        }
    }
    Some(hops.iter().rev().find(|ip| !is_trusted(ip)).or(hops.first()).copied().unwrap_or(peer))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forwarded_addresses_are_believed_from_trusted_proxies_only() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.4.0/24".parse().unwrap(), "192.0.2.1/32".parse().unwrap()];
        let h = forwarded(&["198.51.100.9, 203.0.113.7", "192.0.2.1"]);
        // From a stranger, the header means nothing.
        assert_eq!(client_ip(&h, ip("203.0.113.99"), &trusted), ip("203.0.113.99"));
        // From a proxy: the nearest hop that is not a proxy, across repeated headers.
        assert_eq!(client_ip(&h, ip("10.0.4.2"), &trusted), ip("203.0.113.7"));
        // An IPv4 peer seen through an IPv6 socket is the same peer.
        assert_eq!(client_ip(&h, ip("::ffff:10.0.4.2"), &trusted), ip("203.0.113.7"));
        // Only proxies in the chain (an internal client): the first hop.
        assert_eq!(client_ip(&forwarded(&["10.0.4.7, 10.0.4.8"]), ip("10.0.4.2"), &trusted), ip("10.0.4.7"));
        // No header, or one that does not parse: the proxy's own address.
        assert_eq!(client_ip(&HeaderMap::new(), ip("10.0.4.2"), &trusted), ip("10.0.4.2"));
        assert_eq!(client_ip(&forwarded(&["203.0.113.7, bogus"]), ip("10.0.4.2"), &trusted), ip("10.0.4.2"));
        assert_eq!(client_ip(&forwarded(&["203.0.113.7:4711"]), ip("10.0.4.2"), &trusted), ip("10.0.4.2"));
        // Nothing trusted: never the header.
        assert_eq!(client_ip(&h, ip("10.0.4.2"), &[]), ip("10.0.4.2"));
        assert_eq!(client_ip(&h, None, &trusted), None);
    }
}
