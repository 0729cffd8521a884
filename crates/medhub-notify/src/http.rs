//! What the two HTTP channels (Web Push and SMS) share: the client, the classification of
//! answers and transport errors, and `Retry-After`.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::channel::{Reason, SendError};
use crate::error::NotifyError;

/// A client that never follows redirects (a push endpoint or provider URL that redirects
/// elsewhere is not followed into the hospital network), with a timeout for the whole
/// request, the system's roots and, optionally, one more CA.
pub(crate) fn client(
    timeout: Duration,
    extra_root_ca: Option<(&'static str, &Path)>,
) -> Result<reqwest::Client, NotifyError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("medhub/", env!("CARGO_PKG_VERSION")));
    if let Some((field, path)) = extra_root_ca {
        let pem = std::fs::read(path).map_err(|source| NotifyError::ConfigFile { field, source })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|_| NotifyError::Config { field, problem: "is not a PEM certificate" })?;
        if certs.is_empty() {
            return Err(NotifyError::Config { field, problem: "holds no PEM certificate" });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|_| NotifyError::Config { field: "notify", problem: "the HTTP client could not be built" })
}

/// A transport failure: every one may work later.
pub(crate) fn transport_error(prefix: Prefix, e: &reqwest::Error) -> SendError {
    let reason = if e.is_timeout() {
        prefix.timeout
    } else if e.is_connect() {
        prefix.connect
    } else {
        prefix.other
    };
    SendError::retry(reason)
}

/// The fixed reasons of one channel's transport failures.
pub(crate) struct Prefix {
    pub timeout: &'static str,
    pub connect: &'static str,
    pub other: &'static str,
    /// "push http status", "sms http status".
    pub status: &'static str,
}

/// 429 and 5xx may work later (after `Retry-After` when given); other statuses do not.
pub(crate) fn status_error(prefix: &Prefix, status: StatusCode, headers: &HeaderMap, now: Timestamp) -> SendError {
    let reason = Reason::code(prefix.status, status.as_u16());
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        SendError::Retryable { reason, retry_after: retry_after(headers, now) }
    } else {
        SendError::Permanent { reason }
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP date; a date in the past is no
/// wait.
pub(crate) fn retry_after(headers: &HeaderMap, now: Timestamp) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = at.duration_since(now);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_forms() {
        let now: Timestamp = "2026-01-05T10:00:00Z".parse().unwrap();
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
            retry_after(&h, now)
        };
        assert_eq!(with("120"), Some(Duration::from_secs(120)));
        assert_eq!(with("Mon, 05 Jan 2026 10:01:30 GMT"), Some(Duration::from_secs(90)));
        assert_eq!(with("Mon, 05 Jan 2026 09:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(with("soon"), None);
        assert_eq!(with("-5"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn statuses() {
        let p = Prefix { timeout: "t", connect: "c", other: "o", status: "sms http status" };
        let now = Timestamp::UNIX_EPOCH;
        let h = HeaderMap::new();
        assert_eq!(status_error(&p, StatusCode::BAD_REQUEST, &h, now).outcome(), crate::Outcome::Permanent);
        assert_eq!(status_error(&p, StatusCode::SERVICE_UNAVAILABLE, &h, now).outcome(), crate::Outcome::Retryable);
        assert_eq!(status_error(&p, StatusCode::TOO_MANY_REQUESTS, &h, now).reason(), "sms http status 429");
    }
}
