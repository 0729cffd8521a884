//! The services' error type.

use medhub_core::DomainError;
use medhub_store::StoreError;

/// Why a service call failed. Each variant is one cause.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The domain refused the command (validation, permissions, not found).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// No valid session.
    #[error("unauthenticated")]
    Unauthenticated,
    /// Wrong username or password.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The session may only change its one-time password.
    #[error("password change required")]
    PasswordChangeRequired,
    /// The account has no second factor yet: only enrolment is allowed.
    #[error("second factor enrolment required")]
    MfaEnrollmentRequired,
    /// The password was right; the second factor is still to be proven.
    #[error("second factor required")]
    MfaRequired,
    /// A sensitive action needs the second factor proven within the last 5 minutes.
    #[error("step-up required")]
    StepUpRequired,
    /// The TOTP or recovery code is wrong, already used, or out of its time window.
    #[error("invalid second-factor code")]
    InvalidMfaCode,
    /// A passkey answer was refused: unknown, used or expired ceremony, wrong challenge, origin
    /// or RP id, a credential that is not the caller's, no user verification, or a signature
    /// counter that went backwards. The reason is for the log; clients get a fixed message.
    #[error("passkey refused: {0}")]
    InvalidPasskey(String),
    /// Passkeys are not configured on this server (no relying party).
    #[error("passkeys are not configured")]
    PasskeysNotConfigured,
    /// The caller has no passkey with this id.
    #[error("passkey not found")]
    PasskeyNotFound,
    /// Deleting this passkey would leave the account without a second factor.
    #[error("the last second factor cannot be deleted")]
    LastSecondFactor,
    /// The account already has a confirmed authenticator.
    #[error("authenticator already enrolled")]
    MfaAlreadyEnrolled,
    /// Too many failures: wait this long.
    #[error("throttled for {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    /// The session ended: idle timeout or absolute lifetime.
    #[error("session expired ({})", .0.as_str())]
    SessionExpired(medhub_core::session::Expiry),
    /// The invitation code is unknown, used or expired.
    #[error("invalid invitation")]
    InvalidInvitation,
    /// OpenID Connect sign-in is not configured on this server.
    #[error("SSO is not configured")]
    SsoNotConfigured,
    /// The SSO sign-in was refused: bad or used `state`, a code the provider refused, or an ID
    /// token that failed a check. The reason is for the log; clients get a fixed message.
    #[error("SSO sign-in refused: {0}")]
    SsoFailed(String),
    /// The identity provider is unreachable, slow, or answered something unusable.
    #[error("identity provider unavailable: {0}")]
    SsoUnavailable(String),
    /// The provider's username belongs to a local account, which is never linked silently.
    #[error("a local account has this username")]
    SsoAccountConflict,
    /// The server key does not decrypt what it encrypted earlier.
    #[error("the server key does not match the one this database was set up with")]
    ServerKeyMismatch,
    /// None of the caller's roles grants the permission this needs.
    #[error("permission required")]
    PermissionRequired,
    /// A parameter is malformed; the message is safe to show.
    #[error("{0}")]
    InvalidRequest(String),
    /// The resume cursor is ahead of the log.
    #[error("cursor {cursor} is ahead of the newest event {head}")]
    CursorOutOfRange { cursor: u64, head: u64 },
    /// The database is unreachable or the process is shutting down.
    #[error("store unavailable: {0}")]
    Unavailable(StoreError),
    /// An unexpected storage failure.
    #[error("store failure: {0}")]
    Store(StoreError),
    /// A signed audit tree head could not be written to its export file.
    #[error("{0}")]
    AuditExport(String),
    /// The commit pipeline has stopped (shutdown).
    #[error("commit pipeline stopped")]
    PipelineStopped,
    /// The batch this command was in did not commit; details were logged under `correlation`.
    /// Nothing was written: the client may retry with the same client transaction id.
    #[error("commit failed (correlation id {correlation})")]
    CommitFailed { correlation: String, unavailable: bool },
    /// The connection fell too far behind and must reconnect and resume.
    #[error("slow consumer")]
    SlowConsumer,
    /// An on-call request was refused (docs/clinical.md); the variant says why.
    #[error(transparent)]
    OnCall(crate::oncall::OnCallError),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => ServiceError::Domain(DomainError::UsernameTaken),
            StoreError::Closed | StoreError::Pool(_) => ServiceError::Unavailable(e),
            StoreError::Postgres(ref pg) if pg.is_closed() || pg.as_db_error().is_none() => {
                ServiceError::Unavailable(e)
            }
            StoreError::Sqlite(rusqlite_err) if is_sqlite_unavailable(&rusqlite_err) => {
                ServiceError::Unavailable(StoreError::Sqlite(rusqlite_err))
            }
            other => ServiceError::Store(other),
        }
    }
}

fn is_sqlite_unavailable(e: &rusqlite_error::Error) -> bool {
    use rusqlite_error::ErrorCode as C;
    matches!(e, rusqlite_error::Error::SqliteFailure(f, _) if matches!(f.code, C::DatabaseBusy | C::DatabaseLocked | C::DiskFull | C::SystemIoFailure | C::CannotOpen))
}

/// Re-export path for rusqlite's error types without a direct dependency.
mod rusqlite_error {
    pub use medhub_store::sqlite::rusqlite::{Error, ErrorCode};
}
