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
use crate::{OnCall, Principal, ServiceError};

/// How often each node re-reads the overrides in force: an override set on another node,
/// or one that ended, reaches followers on this node within this (plus a frame's delivery).
pub const PRESENCE_POLL: Duration = Duration::from_secs(2);
/// How often each node recomputes who is on call (and who is off shift) from the schedules.
/// Hand-overs happen on the hour or half hour; a change shows within this.
pub const ON_CALL_REFRESH: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Presence {
    store: DynStore,
    clock: Arc<dyn Clock>,
    hub: Arc<Hub>,
    oncall: OnCall,
}

impl Presence {
    pub fn new(store: DynStore, clock: Arc<dyn Clock>, hub: Arc<Hub>, oncall: OnCall) -> Self {
        Self { store, clock, hub, oncall }
    }

    /// Who is on call now, from every organization's on-call directory: its holders now are
    /// on call (`true`), and those who hold a role next are off shift until then (`false`).
    /// Everyone else is on no schedule as far as presence goes.
    pub async fn on_call_flags(&self) -> Result<HashMap<UserId, bool>, ServiceError> {
        let mut flags = HashMap::new();
        for org in self.store.orgs().await? {
            let (_, roles) = self.oncall.directory_of(org.id, None).await?;
            for (_, n) in &roles {
                for h in n.next.iter().flat_map(|(_, hs)| hs) {
                    flags.entry(h.user).or_insert(false);
                }
            }
            for (_, n) in &roles {
                for h in &n.now {
                    flags.insert(h.user, true);
                }
            }
        }
        Ok(flags)
    }

    /// Recomputes [`on_call_flags`](Self::on_call_flags) into the hub now and every
    /// [`ON_CALL_REFRESH`]; followers of someone whose flag changed are told.
    pub async fn run_on_call_flags(self) {
        let mut tick = tokio::time::interval(ON_CALL_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.on_call_flags().await {
                Ok(flags) => self.hub.set_on_call(flags),
                Err(e) => {
                    tracing::warn!(target: "medhub::presence", error = %e, "could not compute who is on call; retrying")
                }
            }
        }
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
