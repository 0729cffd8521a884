//! The error-code table: every error a client can receive, with its HTTP status and a safe
//! message. Codes are stable; messages may improve.

use medhub_core::DomainError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! codes {
    ($($variant:ident = ($code:literal, $status:literal, $doc:literal)),* $(,)?) => {
        /// A stable, machine-readable error code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $(#[doc = $doc] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status used when this error answers a REST request.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// What the code means, for documentation.
            pub fn description(self) -> &'static str {
                match self { $(ErrorCode::$variant => $doc,)* }
            }
        }
    };
}

codes! {
    BadFrame = ("bad_frame", 400, "The frame or body is not valid JSON, has an unknown `type`, a missing or unknown field, or a field of the wrong type."),
    UnsupportedFrame = ("unsupported_frame", 400, "A binary WebSocket frame; medhub speaks JSON text frames only."),
    MessageTooLarge = ("message_too_large", 413, "The message body is larger than the configured maximum (default 16 KiB of UTF-8)."),
    PayloadTooLarge = ("payload_too_large", 413, "The HTTP request body is larger than the configured maximum."),
    EmptyBody = ("empty_body", 400, "The message body is empty or only white space."),
    BodyControlCharacter = ("body_control_character", 400, "The message body contains a control character other than tab, line feed or carriage return."),
    InvalidClientTxnId = ("invalid_client_txn_id", 400, "`client_txn_id` must be 1-64 characters of `[A-Za-z0-9_.:-]`."),
    IdempotencyKeyReused = ("idempotency_key_reused", 409, "This `client_txn_id` was already used by you for a different message."),
    InvalidReplyTo = ("invalid_reply_to", 400, "`reply_to` must name a message in the same conversation."),
    MessageRecalled = ("message_recalled", 409, "The message was recalled; it can no longer be edited or acknowledged."),
    NotSender = ("not_sender", 403, "Only the sender may edit a message."),
    MessageAcknowledged = ("message_acknowledged", 409, "The message was already acknowledged and can no longer be edited; send a new message."),
    AckNotRequired = ("ack_not_required", 400, "Only urgent and critical messages take acknowledgements."),
    AckBySender = ("ack_by_sender", 400, "The sender cannot acknowledge its own message."),
    InvalidCallBackMinutes = ("invalid_call_back_minutes", 400, "`call_back` minutes must be between 1 and 1440."),
    ReceiptBeyondLastMessage = ("receipt_beyond_last_message", 400, "A receipt names a sequence number beyond the conversation's last message."),
    EmptyReceipt = ("empty_receipt", 400, "A receipt needs `delivered_seq` or `read_seq`."),
    InvalidTitle = ("invalid_title", 400, "The title is too long (200 characters) or contains control characters."),
    DirectNeedsTwoMembers = ("direct_needs_two_members", 400, "A direct conversation has exactly two distinct members and no title."),
    DirectMembersFixed = ("direct_members_fixed", 409, "The members of a direct conversation cannot change."),
    TooManyMembers = ("too_many_members", 409, "The conversation would exceed its member limit."),
    AlreadyMember = ("already_member", 409, "The user is already a member."),
    NotMember = ("not_member", 404, "The user is not a member of the conversation."),
    LastOwner = ("last_owner", 409, "The last owner cannot leave or be demoted while others remain."),
    InvalidUsername = ("invalid_username", 400, "Usernames are 1-64 characters of `[a-z0-9._-]`."),
    InvalidDisplayName = ("invalid_display_name", 400, "Display names are 1-128 characters without control characters."),
    UsernameTaken = ("username_taken", 409, "The username is already taken."),
    PasswordLength = ("password_length", 400, "The new password is too short or too long."),
    NoMembers = ("no_members", 400, "A conversation needs at least one member."),
    InvalidPatientRef = ("invalid_patient_ref", 400, "`patient_ref` must be 1-64 characters of `[A-Za-z0-9.-]` (a FHIR Patient id or the hospital's patient number)."),
    PatientLinkNotAllowed = ("patient_link_not_allowed", 400, "Only group conversations can be linked to a patient."),
    InvalidReason = ("invalid_reason", 400, "A break-glass reason must be 10 to 1000 characters saying why access is needed."),
    InvalidBreakGlassDuration = ("invalid_break_glass_duration", 400, "Break-glass access must last between 5 and 1440 minutes."),
    BreakGlassNotNeeded = ("break_glass_not_needed", 409, "You can already read this conversation (as a member or on the patient's care team); no emergency access is recorded."),
    MessageRemoved = ("message_removed", 409, "The message's content was removed under the organization's retention policy or a GDPR erasure; it can no longer be edited or acknowledged."),
    InvalidRetention = ("invalid_retention", 400, "A retention period must be 1 to 36500 days, and at least 2190 days (6 years) for clinical conversations (those linked to a patient)."),
    InvalidHoldReason = ("invalid_hold_reason", 400, "A legal hold's reason, and the reason for lifting one, must be 10 to 1000 characters (a matter or case reference and why)."),
    UnderLegalHold = ("under_legal_hold", 409, "The user is under a legal hold; their personal data cannot be erased until the hold is lifted."),
    InvalidHandoff = ("invalid_handoff", 400, "A handoff or its acceptance breaks a rule: it goes to someone else, names at least one patient or conversation, each once, within the limits, and the receiver gives a synthesis of every patient (the message says which rule)."),
    HandoffClosed = ("handoff_closed", 409, "The handoff was already accepted, cancelled or has expired (16 hours after it was given)."),
    InvalidPresence = ("invalid_presence", 400, "A presence override is `available`, `busy`, `in_procedure` or `off_shift`, for 1 to 960 minutes."),
    InvalidPreferences = ("invalid_preferences", 400, "Urgent and critical messages must keep push, SMS or pager; quiet hours start and end at different times and last at most 14 hours."),
    InvalidOncallRole = ("invalid_oncall_role", 400, "An on-call role's key must be 2-64 characters of `[a-z0-9-]` starting with a letter or digit; its name 1-200 characters and its department at most 200, without control characters; its kind `role` or `team`."),
    OncallKeyTaken = ("oncall_key_taken", 409, "The organization already has an on-call role with this key."),
    UnknownTimeZone = ("unknown_time_zone", 400, "`time_zone` is not an IANA time zone name such as `Europe/Berlin` (fixed offsets and Windows zone names are refused)."),
    InvalidSchedule = ("invalid_schedule", 400, "A schedule's name must be 1-200 characters without control characters, it has at most 16 rotations, and a role has at most 8 schedules."),
    InvalidRotation = ("invalid_rotation", 400, "A rotation is malformed or breaks a rule: the message names the rotation and says what (participants 1-1000, a local start between 1970 and 2199, `custom` with `days` 1-366 or `hours` 1-336, a window with at least one day)."),
    SubsecondTime = ("subsecond_time", 400, "Times are whole seconds (calendars count in seconds)."),
    UnknownPerson = ("unknown_person", 400, "A user named in the request is not an active user of your organization."),
    InvalidOverride = ("invalid_override", 400, "An override must end after it starts, last at most 400 days and not replace its own user; a schedule has at most 5000 overrides."),
    OverlappingOverrides = ("overlapping_overrides", 409, "Two overrides would replace the same person, or add the same person, at the same time."),
    InvalidSwap = ("invalid_swap", 400, "A swap needs two rotation shifts (named by layer and start, as the timeline lists them) of two different people that do not overlap."),
    InvalidCoverage = ("invalid_coverage", 400, "A coverage must end after it starts and in the future, and name two different people; at most 2000 are in force together."),
    CoverageConflict = ("coverage_conflict", 409, "The coverage would make someone covered by two people at once, a circle (X covers Y covers X) or a chain longer than 8."),
    InvalidInterval = ("invalid_interval", 400, "`from` must be before `to`, at most 400 days apart, and the answer at most 100,000 shifts."),
    NoSchedule = ("no_schedule", 409, "The on-call role has no schedule yet; create one first."),
    ScheduleRequired = ("schedule_required", 400, "The on-call role has several schedules: name one with `schedule=<id>`."),
    InvalidIcal = ("invalid_ical", 400, "The calendar is not one medhub can read; the message names the line and what is wrong (docs/clinical.md, iCalendar)."),
    UnknownAttendees = ("unknown_attendees", 422, "Some events name people who are not users of your organization (by `X-MEDHUB-USER`, `urn:uuid:` or username); the message lists their lines. Nothing was imported."),
    UnsupportedMediaType = ("unsupported_media_type", 415, "The body must be `text/calendar`."),
    NobodyOnCall = ("nobody_on_call", 409, "Nobody is on call for this role now; nothing was sent. Call the department or choose another role."),
    NobodyElseOnCall = ("nobody_else_on_call", 409, "You are the only one on call for this role now; nothing was sent."),
    InvalidEscalationPolicy = ("invalid_escalation_policy", 400, "The escalation policy is outside its bounds: 1-10 steps starting at strictly increasing times from 0, at least one channel each, repeats of at least 30 s, 1-50 named users, on-call roles of `[a-z0-9_]`, and an end after the last step within 24 hours (the message says which)."),
    InvalidContactPoint = ("invalid_contact_point", 400, "A contact point is not valid: an e-mail address, a mobile number in E.164 form (`+447700900123`), a pager number, or a push subscription of an allowed push service (the message says which)."),
    InvalidRequest = ("invalid_request", 400, "A parameter is out of range or malformed (the message says which)."),
    CursorOutOfRange = ("cursor_out_of_range", 400, "The resume cursor is ahead of the newest event; the client must resynchronise."),
    Unauthenticated = ("unauthenticated", 401, "No valid session: the token is missing, unknown, expired or revoked."),
    InvalidCredentials = ("invalid_credentials", 401, "The username or password is wrong (the two are not told apart)."),
    PasswordChangeRequired = ("password_change_required", 403, "This session signed in with a one-time password; change it first."),
    MfaEnrollmentRequired = ("mfa_enrollment_required", 403, "The account has no second factor yet; enrol an authenticator first."),
    MfaRequired = ("mfa_required", 403, "The password was right; prove the second factor with `POST /api/v1/auth/mfa/verify`."),
    StepUpRequired = ("step_up_required", 403, "This action needs the second factor proven in the last 5 minutes: `POST /api/v1/auth/step-up`."),
    InvalidMfaCode = ("invalid_mfa_code", 401, "The authenticator or recovery code is wrong, already used, or outside its time window."),
    MfaAlreadyEnrolled = ("mfa_already_enrolled", 409, "The account already has an authenticator; an administrator can reset it."),
    InvalidPasskey = ("invalid_passkey", 401, "The passkey answer was refused: the ceremony is unknown, used or older than 5 minutes, it answers another challenge, was made for another site (origin or RP id), names a credential that is not yours, lacks user verification, or its signature counter went backwards (a cloned authenticator). Start the ceremony again."),
    PasskeysNotConfigured = ("passkeys_not_configured", 501, "Passkeys are not configured on this server (no relying party); use an authenticator app."),
    LastSecondFactor = ("last_second_factor", 409, "This is the account's only second factor; enrol another passkey or an authenticator app before deleting it."),
    SessionExpired = ("session_expired", 401, "The session ended: no activity for the idle timeout, or 12 hours since sign-in. Sign in again."),
    InvalidInvitation = ("invalid_invitation", 400, "The invitation code is unknown, used or expired; ask an administrator for a new one."),
    SsoNotConfigured = ("sso_not_configured", 501, "Single sign-on (OpenID Connect) is not configured on this server; sign in with a password."),
    SsoFailed = ("sso_failed", 401, "Single sign-on failed: the sign-in link expired or was already used, or the identity provider's answer did not pass medhub's checks. Start again."),
    SsoUnavailable = ("sso_unavailable", 503, "The identity provider is unreachable or too slow; try again later, or sign in with a password and second factor."),
    SsoAccountConflict = ("sso_account_conflict", 409, "A local account already has the username the identity provider gave; it is never linked automatically. Ask an administrator."),
    OriginNotAllowed = ("origin_not_allowed", 403, "The page's origin is not allowed to open a WebSocket to this server."),
    Forbidden = ("forbidden", 403, "Your role does not allow this action."),
    NotFound = ("not_found", 404, "The object does not exist or you cannot see it (the two are not told apart)."),
    MethodNotAllowed = ("method_not_allowed", 405, "The HTTP method is not allowed on this path."),
    RateLimited = ("rate_limited", 429, "Too many requests or frames; slow down and retry."),
    Overloaded = ("overloaded", 503, "The server is at its connection limit; retry with back-off."),
    Unavailable = ("unavailable", 503, "The database is unreachable; retry with back-off (sends are idempotent)."),
    Internal = ("internal", 500, "An unexpected error. The response carries a correlation id that is also in the server log."),
}

/// An error as sent to a client: stable code, safe message, and for internal errors the
/// correlation id under which details were logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// For `rate_limited`: seconds to wait before trying again (also in `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl WireError {
    /// An error with the code's standard description as its message.
    pub fn new(code: ErrorCode) -> Self {
        Self { code, message: code.description().to_owned(), correlation_id: None, retry_after: None }
    }

    /// An error with a specific (safe) message.
    pub fn with_message(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), correlation_id: None, retry_after: None }
    }

    /// An internal error: opaque message, correlation id for the log.
    pub fn internal(correlation_id: String) -> Self {
        Self {
            code: ErrorCode::Internal,
            message: "internal error; quote the correlation id to your administrator".to_owned(),
            correlation_id: Some(correlation_id),
            retry_after: None,
        }
    }
}

impl From<&medhub_core::schedule::ScheduleError> for WireError {
    fn from(e: &medhub_core::schedule::ScheduleError) -> Self {
        use medhub_core::schedule::ScheduleError as S;
        let code = match e {
            S::UnknownTimeZone(_) => ErrorCode::UnknownTimeZone,
            S::InvalidName { .. } | S::TooManyRotations { .. } => ErrorCode::InvalidSchedule,
            S::EmptyRotation { .. }
            | S::TooManyParticipants { .. }
            | S::ShiftLengthOutOfRange { .. }
            | S::StartOutOfRange { .. }
            | S::RestrictionWithoutDays { .. }
            | S::CivilTimeOutOfRange => ErrorCode::InvalidRotation,
            S::SubsecondTime => ErrorCode::SubsecondTime,
            S::TooManyOverrides { .. }
            | S::OverrideEndBeforeStart { .. }
            | S::OverrideTooLong { .. }
            | S::OverrideReplacesSelf { .. }
            | S::DuplicateOverrideId { .. } => ErrorCode::InvalidOverride,
            S::OverlappingOverrides { .. } => ErrorCode::OverlappingOverrides,
            S::SwapSameUser | S::SwapShiftsOverlap | S::SwapNeedsRotationShifts => ErrorCode::InvalidSwap,
            S::TooManyCoverages { .. } | S::CoverageEndBeforeStart | S::CoverageOfSelf => ErrorCode::InvalidCoverage,
            S::OverlappingCoverage { .. } | S::CoverageCycle { .. } | S::CoverageChainTooLong { .. } => {
                ErrorCode::CoverageConflict
            }
            S::EmptyInterval | S::IntervalTooLong | S::TooManyShifts { .. } => ErrorCode::InvalidInterval,
        };
        // The core's messages name indices, override ids and limits: nothing a client did not send.
        WireError::with_message(code, e.to_string())
    }
}

/// The body of every REST error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: WireError,
}

impl From<&DomainError> for WireError {
    fn from(e: &DomainError) -> Self {
        let code = match e {
            DomainError::ConversationNotFound
            | DomainError::MessageNotFound
            | DomainError::UserNotFound
            | DomainError::SessionNotFound
            | DomainError::GrantNotFound
            | DomainError::HoldNotFound
            | DomainError::HandoffNotFound => ErrorCode::NotFound,
            DomainError::PushSubscriptionNotFound => ErrorCode::NotFound,
            DomainError::Forbidden => ErrorCode::Forbidden,
            DomainError::EmptyBody => ErrorCode::EmptyBody,
            DomainError::BodyTooLarge { .. } => ErrorCode::MessageTooLarge,
            DomainError::BodyControlCharacter => ErrorCode::BodyControlCharacter,
            DomainError::InvalidClientTxnId => ErrorCode::InvalidClientTxnId,
            DomainError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            DomainError::InvalidReplyTo => ErrorCode::InvalidReplyTo,
            DomainError::MessageRecalled => ErrorCode::MessageRecalled,
            DomainError::NotSender => ErrorCode::NotSender,
            DomainError::MessageAcknowledged => ErrorCode::MessageAcknowledged,
            DomainError::AckNotRequired => ErrorCode::AckNotRequired,
            DomainError::AckBySender => ErrorCode::AckBySender,
            DomainError::InvalidCallBackMinutes => ErrorCode::InvalidCallBackMinutes,
            DomainError::ReceiptBeyondLastMessage => ErrorCode::ReceiptBeyondLastMessage,
            DomainError::EmptyReceipt => ErrorCode::EmptyReceipt,
            DomainError::InvalidTitle { .. } => ErrorCode::InvalidTitle,
            DomainError::DirectNeedsTwoMembers => ErrorCode::DirectNeedsTwoMembers,
            DomainError::DirectMembersFixed => ErrorCode::DirectMembersFixed,
            DomainError::TooManyMembers { .. } => ErrorCode::TooManyMembers,
            DomainError::AlreadyMember => ErrorCode::AlreadyMember,
            DomainError::NotMember => ErrorCode::NotMember,
            DomainError::LastOwner => ErrorCode::LastOwner,
            DomainError::InvalidUsername => ErrorCode::InvalidUsername,
            DomainError::InvalidDisplayName => ErrorCode::InvalidDisplayName,
            DomainError::UsernameTaken => ErrorCode::UsernameTaken,
            DomainError::PasswordLength { .. } => ErrorCode::PasswordLength,
            DomainError::NoMembers => ErrorCode::NoMembers,
            DomainError::InvalidPatientRef => ErrorCode::InvalidPatientRef,
            DomainError::PatientLinkNotAllowed => ErrorCode::PatientLinkNotAllowed,
            DomainError::InvalidReason { .. } => ErrorCode::InvalidReason,
            DomainError::InvalidBreakGlassDuration { .. } => ErrorCode::InvalidBreakGlassDuration,
            DomainError::BreakGlassNotNeeded => ErrorCode::BreakGlassNotNeeded,
            DomainError::MessageRemoved => ErrorCode::MessageRemoved,
            DomainError::InvalidRetention { .. } => ErrorCode::InvalidRetention,
            DomainError::InvalidHoldReason { .. } => ErrorCode::InvalidHoldReason,
            DomainError::UnderLegalHold => ErrorCode::UnderLegalHold,
            DomainError::InvalidHandoff { .. } => ErrorCode::InvalidHandoff,
            DomainError::HandoffClosed => ErrorCode::HandoffClosed,
            DomainError::InvalidPresence { .. } => ErrorCode::InvalidPresence,
            DomainError::InvalidPreferences { .. } => ErrorCode::InvalidPreferences,
            DomainError::InvalidEscalationPolicy(_) => ErrorCode::InvalidEscalationPolicy,
            DomainError::InvalidContactPoint(_) => ErrorCode::InvalidContactPoint,
        };
        // "Not found" never says which object, so nothing leaks through the message either.
        match code {
            ErrorCode::NotFound => WireError::new(code),
            _ => WireError::with_message(code, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn codes_are_unique_and_serialize_as_their_names() {
        let names: HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for c in ErrorCode::ALL {
            assert_eq!(serde_json::to_string(c).unwrap(), format!("\"{}\"", c.as_str()));
            assert!((400..600).contains(&c.status()));
        }
    }

    #[test]
    fn not_found_hides_which_object() {
        for e in [DomainError::ConversationNotFound, DomainError::MessageNotFound, DomainError::UserNotFound] {
            let w = WireError::from(&e);
            assert_eq!(w, WireError::new(ErrorCode::NotFound));
        }
    }

    #[test]
    fn internal_errors_are_opaque() {
        let w = WireError::internal("c0ffee".into());
        assert_eq!(w.code, ErrorCode::Internal);
        assert!(!w.message.contains("sql"));
        assert_eq!(w.correlation_id.as_deref(), Some("c0ffee"));
    }
}
