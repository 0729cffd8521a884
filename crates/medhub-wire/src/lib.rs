//! medhub's wire types: every JSON frame and REST body, and the table of error codes.
//!
//! Only this crate knows JSON. Domain types are converted to wire types explicitly (the
//! `From` impls in [`views`]), so no field reaches a client by accident.

pub mod audit;
pub mod audit_export;
pub mod error;
pub mod escalation;
pub mod frames;
pub mod handoff;
pub mod ical;
pub mod identity;
pub mod oncall;
pub mod patients;
pub mod rest;
pub mod retention;
pub mod views;

pub use error::{ErrorBody, ErrorCode, WireError};
pub use frames::{ClientFrame, ServerFrame};

/// Protocol version announced in `ready`. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;
