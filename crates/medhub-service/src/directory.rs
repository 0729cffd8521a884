//! The on-call service as escalation's directory of role holders.
//!
//! Escalation is built before the on-call service: the on-call service sends through
//! messaging, and messaging wakes escalation when a message commits. So the link is made
//! empty and bound to the on-call service as soon as both exist, inside `Services::start`,
//! before any timer can fire.

use std::sync::OnceLock;

use async_trait::async_trait;
use jiff::Timestamp;
use medhub_core::escalation::OnCallRole;
use medhub_core::{DomainError, OrgId, UserId};

use crate::{OnCall, OnCallDirectory, ServiceError};

#[derive(Default)]
pub struct OnCallLink(OnceLock<OnCall>);

impl OnCallLink {
    pub fn bind(&self, oncall: OnCall) {
        if self.0.set(oncall).is_err() {
            tracing::warn!(target: "medhub::escalation", "the on-call directory was bound twice; keeping the first");
        }
    }
}

#[async_trait]
impl OnCallDirectory for OnCallLink {
    /// The role's holders now, primary first. A role the organization does not have holds
    /// nobody (the step is recorded as reaching nobody, and the next step follows); any other
    /// failure makes the timer retry at the next poll.
    async fn holders(&self, org: OrgId, role: &OnCallRole, at: Timestamp) -> Result<Vec<UserId>, ServiceError> {
        let Some(oncall) = self.0.get() else {
            return Err(ServiceError::InvalidRequest("the on-call directory is not ready yet".into()));
        };
        match oncall.holders_at(org, role.as_str(), at).await {
            Ok(holders) => Ok(holders.into_iter().map(|h| h.user).collect()),
            Err(ServiceError::Domain(DomainError::ConversationNotFound)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}
