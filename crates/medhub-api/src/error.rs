//! Turning service errors into wire errors: stable code, HTTP status, safe message, and a
//! correlation id for anything unexpected. Details go to the log, never to the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use medhub_service::ServiceError;
use medhub_wire::{ErrorBody, ErrorCode, WireError};

/// An error answered by a handler.
#[derive(Debug)]
pub struct ApiError(pub WireError);

impl ApiError {
    pub fn code(code: ErrorCode) -> Self {
        ApiError(WireError::new(code))
    }

    pub fn with_message(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(WireError::with_message(code, message))
    }
}

/// Maps a service error to what the client sees, logging what it must not see.
pub fn wire_error(e: &ServiceError) -> WireError {
    match e {
        ServiceError::Domain(d) => WireError::from(d),
        ServiceError::Unauthenticated => WireError::new(ErrorCode::Unauthenticated),
        ServiceError::InvalidCredentials => WireError::new(ErrorCode::InvalidCredentials),
        ServiceError::PasswordChangeRequired => WireError::new(ErrorCode::PasswordChangeRequired),
        ServiceError::MfaEnrollmentRequired => WireError::new(ErrorCode::MfaEnrollmentRequired),
        ServiceError::MfaRequired => WireError::new(ErrorCode::MfaRequired),
        ServiceError::StepUpRequired => WireError::new(ErrorCode::StepUpRequired),
        ServiceError::InvalidMfaCode => WireError::new(ErrorCode::InvalidMfaCode),
        ServiceError::MfaAlreadyEnrolled => WireError::new(ErrorCode::MfaAlreadyEnrolled),
        // The reason was logged by the service; the client gets the fixed message.
        ServiceError::InvalidPasskey(_) => WireError::new(ErrorCode::InvalidPasskey),
        ServiceError::PasskeysNotConfigured => WireError::new(ErrorCode::PasskeysNotConfigured),
        ServiceError::PasskeyNotFound => WireError::new(ErrorCode::NotFound),
        ServiceError::LastSecondFactor => WireError::new(ErrorCode::LastSecondFactor),
        ServiceError::InvalidInvitation => WireError::new(ErrorCode::InvalidInvitation),
        ServiceError::SessionExpired(_) => WireError::new(ErrorCode::SessionExpired),
        ServiceError::Throttled { retry_after_secs } => WireError {
            retry_after: Some(*retry_after_secs),
            ..WireError::with_message(ErrorCode::RateLimited, "too many failed attempts; wait and try again")
        },
        ServiceError::SsoNotConfigured => WireError::new(ErrorCode::SsoNotConfigured),
        // The reason was logged by the service; the client gets the fixed message.
        ServiceError::SsoFailed(_) => WireError::new(ErrorCode::SsoFailed),
        ServiceError::SsoUnavailable(_) => WireError::new(ErrorCode::SsoUnavailable),
        ServiceError::SsoAccountConflict => WireError::new(ErrorCode::SsoAccountConflict),
        ServiceError::ServerKeyMismatch => {
            let id = medhub_service::correlation_id();
            tracing::error!(correlation = %id, "the server key does not decrypt stored second factors");
            WireError::internal(id)
        }
        ServiceError::PermissionRequired => WireError::new(ErrorCode::Forbidden),
        ServiceError::InvalidRequest(m) => WireError::with_message(ErrorCode::InvalidRequest, m.clone()),
        ServiceError::CursorOutOfRange { .. } => WireError::with_message(ErrorCode::CursorOutOfRange, e.to_string()),
        ServiceError::SlowConsumer => WireError::new(ErrorCode::Overloaded),
        ServiceError::Unavailable(inner) => {
            let id = medhub_service::correlation_id();
            tracing::warn!(correlation = %id, error = %inner, "store unavailable");
            WireError { correlation_id: Some(id), ..WireError::new(ErrorCode::Unavailable) }
        }
        ServiceError::PipelineStopped => WireError::new(ErrorCode::Unavailable),
        ServiceError::CommitFailed { correlation, unavailable } => WireError {
            correlation_id: Some(correlation.clone()),
            ..WireError::new(if *unavailable { ErrorCode::Unavailable } else { ErrorCode::Internal })
        },
        ServiceError::Store(inner) => {
            let id = medhub_service::correlation_id();
            tracing::error!(correlation = %id, error = %inner, "internal error");
            WireError::internal(id)
        }
        ServiceError::OnCall(e) => oncall_error(e),
        ServiceError::AuditExport(why) => {
            let id = medhub_service::correlation_id();
            tracing::error!(correlation = %id, error = %why, "audit export failed");
            WireError::internal(id)
        }
    }
}

/// An on-call refusal: its code, and the service's message (ids, indices, limits and line
/// numbers only).
fn oncall_error(e: &medhub_service::oncall::OnCallError) -> WireError {
    use medhub_service::oncall::OnCallError as E;
    let code = match e {
        E::Rules(rule) => return WireError::from(rule),
        E::InvalidRole(_) => ErrorCode::InvalidOncallRole,
        E::KeyTaken => ErrorCode::OncallKeyTaken,
        E::Spec(_) => ErrorCode::InvalidRotation,
        E::UnknownPerson(_) => ErrorCode::UnknownPerson,
        E::TooMany(_) => ErrorCode::InvalidSchedule,
        E::NoSchedule => ErrorCode::NoSchedule,
        E::ScheduleRequired => ErrorCode::ScheduleRequired,
        E::NoSuchShift { .. } => ErrorCode::InvalidSwap,
        E::CoverageInPast => ErrorCode::InvalidCoverage,
        E::Ical(_) => ErrorCode::InvalidIcal,
        E::UnknownAttendees(_) => ErrorCode::UnknownAttendees,
        E::NobodyOnCall => ErrorCode::NobodyOnCall,
        E::NobodyElseOnCall => ErrorCode::NobodyElseOnCall,
        E::Busy => return WireError::with_message(ErrorCode::Unavailable, e.to_string()),
    };
    WireError::with_message(code, e.to_string())
}

impl From<medhub_core::DomainError> for ApiError {
    fn from(e: medhub_core::DomainError) -> Self {
        ApiError::from(ServiceError::from(e))
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError(wire_error(&e))
    }
}

/// Marks a response as an error with this code, for the metrics layer.
#[derive(Clone, Copy, Debug)]
pub struct ErrorTag(pub ErrorCode);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = self.0.code;
        let retry_after = self.0.retry_after;
        let mut resp = (status, Json(ErrorBody { error: self.0 })).into_response();
        resp.extensions_mut().insert(ErrorTag(code));
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

pub async fn not_found() -> ApiError {
    ApiError::code(ErrorCode::NotFound)
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::code(ErrorCode::MethodNotAllowed)
}

/// A handler panicked: answer like any internal error, with a correlation id.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let id = medhub_service::correlation_id();
    tracing::error!(correlation = %id, "handler panicked");
    ApiError(WireError::internal(id)).into_response()
}

/// Counts every REST error by code in `medhub_errors_total` (WebSocket errors are counted
/// where they are sent).
pub async fn count_errors(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    if let Some(ErrorTag(code)) = resp.extensions().get::<ErrorTag>() {
        state.services.metrics.error(code.as_str());
    }
    resp
}
