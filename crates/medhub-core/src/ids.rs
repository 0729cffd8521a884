//! Identifier newtypes, so that a bare UUID or integer never crosses a module boundary.

use std::fmt;

use uuid::Uuid;

use crate::error::DomainError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered (UUIDv7) identifier.
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }
            /// Wraps an existing UUID (from storage or the wire).
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }
            /// The inner UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
            /// The 16 raw bytes, as stored in SQLite.
            pub fn to_bytes(&self) -> [u8; 16] {
                *self.0.as_bytes()
            }
            /// Parses 16 raw bytes.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                Uuid::from_slice(bytes).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// An organization (a hospital network).
    OrgId
);
uuid_id!(
    /// A user account.
    UserId
);
uuid_id!(
    /// A direct, group or channel conversation.
    ConversationId
);
uuid_id!(
    /// A message. UUIDv7, so ids sort roughly by creation time.
    MessageId
);
uuid_id!(
    /// A sign-in session.
    SessionId
);
uuid_id!(
    /// A registered passkey (WebAuthn credential) of a user.
    PasskeyId
);
uuid_id!(
    /// A legal hold (retention, issue 4).
    LegalHoldId
);
uuid_id!(
    /// An on-call schedule (clinical workflows).
    ScheduleId
);
uuid_id!(
    /// An override of an on-call schedule: someone on call for an interval.
    OverrideId
);
uuid_id!(
    /// A shift handoff (I-PASS) from one clinician to another.
    HandoffId
);
uuid_id!(
    /// An on-call role or team of an organization ("cardiology on-call"), which schedules
    /// staff and messages are addressed to.
    OnCallRoleId
);
uuid_id!(
    /// A coverage: while one person is away, another takes what is addressed to them.
    CoverageId
);
uuid_id!(
    /// A durable timer (escalation steps).
    TimerId
);
uuid_id!(
    /// A delivery job of the notification outbox; also the idempotency key of its attempts.
    DeliveryId
);
uuid_id!(
    /// A user's Web Push subscription (one per browser or device).
    PushSubscriptionId
);

/// Position in the event log. Event ids are assigned gap-free, in commit order, across the
/// whole store; a client's resume cursor is the id of the last event it processed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct EventId(u64);

impl EventId {
    /// The position before the first event.
    pub const ZERO: EventId = EventId(0);

    pub const fn new(v: u64) -> Self {
        Self(v)
    }
    pub const fn get(self) -> u64 {
        self.0
    }
    /// The next id in the log.
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A message's gap-free, per-conversation sequence number. The first message is 1.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Seq(u64);

impl Seq {
    /// The position before the first message.
    pub const ZERO: Seq = Seq(0);

    pub const fn new(v: u64) -> Self {
        Self(v)
    }
    pub const fn get(self) -> u64 {
        self.0
    }
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A client transaction id: the sender's idempotency key for one send.
///
/// 1 to 64 characters from `[A-Za-z0-9_.:-]`. A UUID is the recommended choice.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ClientTxnId(String);

impl ClientTxnId {
    /// Longest accepted client transaction id, in bytes.
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if ok { Ok(Self(raw.to_owned())) } else { Err(DomainError::InvalidClientTxnId) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_txn_id_rules() {
        assert!(ClientTxnId::parse("0190f3c2-6a7b-7c3d-9e8f-0123456789ab").is_ok());
        assert!(ClientTxnId::parse("a").is_ok());
        assert!(ClientTxnId::parse(&"x".repeat(64)).is_ok());
        assert_eq!(ClientTxnId::parse(""), Err(DomainError::InvalidClientTxnId));
        assert_eq!(ClientTxnId::parse(&"x".repeat(65)), Err(DomainError::InvalidClientTxnId));
        assert_eq!(ClientTxnId::parse("a b"), Err(DomainError::InvalidClientTxnId));
        assert_eq!(ClientTxnId::parse("é"), Err(DomainError::InvalidClientTxnId));
    }

    #[test]
    fn uuid_ids_round_trip_through_bytes_and_text() {
        let id = MessageId::new_v7();
        assert_eq!(MessageId::from_slice(&id.to_bytes()), Some(id));
        assert_eq!(id.to_string().parse::<MessageId>().ok(), Some(id));
        assert_eq!(MessageId::from_slice(&[1, 2, 3]), None);
    }
}
