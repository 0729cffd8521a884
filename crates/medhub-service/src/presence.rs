//! Presence (issue 5 §1): a user's manual override (busy, in procedure, off shift,
//! available), stored so it holds across reconnects and nodes, and the poller that keeps
//! each node's hub in step with the store: an override set on another node, cleared, or
//! past its end is announced to the users following it within [`PRESENCE_POLL`].
//!
//! The rule deriving a state is pure (`medhub_core::presence`); connections are each node's
//! own (the hub).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use medhub_core::authz::Permission;
use medhub_core::presence::{self, PresenceState};
use medhub_core::{Clock, DomainError, UserId};
use medhub_store::DynStore;
use medhub_wire::frames::PresenceView;

use crate::hub::Hub;
use crate::{Principal, ServiceError};

/// How often each node re-reads the overrides in force: an override set on another node,
/// or one that ended, reaches followers on this node within this (plus a frame's delivery).
pub const PRESENCE_POLL: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Presence {
    store: DynStore,
    clock: Arc<dyn Clock>,
    hub: Arc<Hub>,
}

impl Presence {
    pub fn new(store: DynStore, clock: Arc<dyn Clock>, hub: Arc<Hub>) -> Self {
        Self { store, clock, hub }
    }

    /// Sets the caller's override for `minutes`.
    pub async fn set(&self, p: &Principal, state: &str, minutes: i64) -> Result<PresenceView, ServiceError> {
        p.require(Permission::OwnAccount)?;
        let state = PresenceState::parse(state).ok_or(DomainError::InvalidPresence {
            reason: "state must be available, busy, in_procedure or off_shift",
        })?;
        let o = presence::override_for(state, SignedDuration::from_mins(minutes), self.clock.now())?;
        self.store.set_presence_override(p.user.id, &o).await?;
        self.hub.set_override(p.user.id, Some(o));
        tracing::info!(target: "medhub::presence", user = %p.user.id, state = state.as_str(), "presence set");
        Ok(self.hub.presence(p.user.id))
    }

    /// Ends the caller's override now: the state is derived again.
    pub async fn clear(&self, p: &Principal) -> Result<PresenceView, ServiceError> {
        p.require(Permission::OwnAccount)?;
        self.store.clear_presence_override(p.user.id, self.clock.now()).await?;
        self.hub.set_override(p.user.id, None);
        Ok(self.hub.presence(p.user.id))
    }

    /// A user's presence, for users of the caller's organization (others: not found).
    pub async fn of(&self, p: &Principal, user: UserId) -> Result<PresenceView, ServiceError> {
        p.require(Permission::DirectoryRead)?;
        let u = self.store.user(user).await?.filter(|u| u.org == p.user.org);
        if u.is_none() {
            return Err(DomainError::UserNotFound.into());
        }
        Ok(self.hub.presence(user))
    }

    /// Reads the overrides in force into the hub now and then every [`PRESENCE_POLL`]. A
    /// failed read is logged and retried at the next tick; the hub keeps dropping expired
    /// overrides meanwhile.
    pub async fn run_poller(self) {
        let mut tick = tokio::time::interval(PRESENCE_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.store.active_presence_overrides(self.clock.now()).await {
                Ok(rows) => self.hub.refresh_overrides(Some(rows.into_iter().collect::<HashMap<_, _>>())),
                Err(e) => {
                    tracing::warn!(target: "medhub::presence", error = %e, "could not read presence overrides; retrying");
                    self.hub.refresh_overrides(None);
                }
            }
        }
    }
}
