//! Audit records: one shape for every access decision and security event, so that an auditor
//! can answer "who did what, to what, when, from where, and was it allowed". Ids and route
//! patterns only: never message bodies, tokens, codes or passwords.

use jiff::Timestamp;

use crate::ids::{SessionId, UserId};

/// How an audited action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An access decision that let the request through.
    Allow,
    /// An access decision that refused it.
    Deny,
    /// A security event that happened (a sign-in, a role change).
    Success,
    /// A security event that was attempted and failed (a wrong password).
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Outcome::Allow, Outcome::Deny, Outcome::Success, Outcome::Failure].into_iter().find(|o| o.as_str() == s)
    }
}

/// One audited decision or event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub at: Timestamp,
    /// Who acted, when known.
    pub actor: Option<UserId>,
    pub session: Option<SessionId>,
    /// What was done: `http`, `ws.frame`, `auth.sign_in`, `auth.mfa`, `auth.step_up`,
    /// `session.end`, `user.update`, `role.grant`, ...
    pub action: String,
    /// What it was done to: `GET /api/v1/conversations/<id>`, a user id, a role key.
    pub target: Option<String>,
    pub outcome: Outcome,
    /// Why, in a word or two: the error code of a denial, the reason a session ended.
    pub reason: Option<String>,
    /// The client's address.
    pub ip: Option<String>,
}
