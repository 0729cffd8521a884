//! medhub's domain core: plain types and pure rules, with no I/O.
//!
//! Everything that decides something lives here so it can be tested exhaustively without a
//! database, a socket or a clock: validation, permissions, recipient selection and the
//! write planner that turns a batch of commands into rows and events.

pub mod audit;
pub mod authz;
pub mod clock;
pub mod error;
pub mod escalation;
pub mod event;
pub mod handoff;
pub mod ids;
pub mod merkle;
pub mod model;
pub mod patient;
pub mod plan;
pub mod policy;
pub mod preferences;
pub mod presence;
pub mod recipients;
pub mod retention;
pub mod schedule;
pub mod session;
pub mod validate;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::DomainError;
pub use event::{Event, EventKind};
pub use ids::{
    ClientTxnId, ConversationId, CoverageId, DeliveryId, EventId, HandoffId, LegalHoldId, MessageId, OnCallRoleId,
    OrgId, OverrideId, PasskeyId, PushSubscriptionId, ScheduleId, Seq, SessionId, TimerId, UserId,
};
pub use jiff::Timestamp;
