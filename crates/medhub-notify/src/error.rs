//! The crate's error: what is wrong with a configuration or a target. What happens to one
//! send is not an error of this kind but a [`crate::SendError`], classified for retries.

/// Why a channel, a notice's settings or a target could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A configuration field has a value medhub refuses. The message names the field and the
    /// rule, never the value (it may be a secret).
    #[error("{field} {problem}")]
    Config { field: &'static str, problem: &'static str },
    /// A file named by the configuration could not be read.
    #[error("{field}: cannot read the file: {source}")]
    ConfigFile {
        field: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A target (push subscription, e-mail address, phone number, pager id) is malformed.
    /// The message says which rule it breaks, never the target itself.
    #[error("invalid {what}: {problem}")]
    InvalidTarget { what: &'static str, problem: &'static str },
    /// An idempotency key is empty, longer than 64 characters or has characters other than
    /// ASCII letters, digits, `-` and `_`.
    #[error("an idempotency key is 1-64 characters of A-Z, a-z, 0-9, - and _")]
    InvalidIdempotencyKey,
}
