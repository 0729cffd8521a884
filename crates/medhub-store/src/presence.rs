//! Storage of presence overrides (issue 5 §1): the state a user set by hand, until it
//! expires. Connections are not stored (each node knows its own); see docs/clinical.md
//! "Presence".

use async_trait::async_trait;
use jiff::Timestamp;
use medhub_core::UserId;
use medhub_core::presence::PresenceOverride;

use crate::StoreError;

/// The most overrides in force that one read returns: far more than the clinicians of the
/// largest deployment, so it only bounds a broken or hostile state.
pub const MAX_ACTIVE_OVERRIDES: u32 = 100_000;

#[async_trait]
pub trait PresenceStore: Send + Sync {
    /// Sets the user's override, replacing any earlier one.
    async fn set_presence_override(&self, user: UserId, o: &PresenceOverride) -> Result<(), StoreError>;
    /// Ends the user's override at `now` (if it was still in force).
    async fn clear_presence_override(&self, user: UserId, now: Timestamp) -> Result<(), StoreError>;
    /// Every override still in force at `now`, at most [`MAX_ACTIVE_OVERRIDES`].
    async fn active_presence_overrides(&self, now: Timestamp) -> Result<Vec<(UserId, PresenceOverride)>, StoreError>;
}
