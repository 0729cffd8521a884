//! REST bodies of escalation until acknowledged (docs/clinical.md, docs/api.md): policies,
//! the delivery trace, and a user's own contact points and Web Push subscriptions.

use jiff::Timestamp;
use medhub_core::UserId;
use medhub_core::escalation::{Channel, ChannelSet, OnCallRole, Step, Target};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::views::{PriorityView, RecipientStatusView};

/// A way to reach someone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelView {
    /// The live connection: the `notice` frame.
    InApp,
    Push,
    Email,
    Sms,
    Pager,
}

impl From<Channel> for ChannelView {
    fn from(c: Channel) -> Self {
        match c {
            Channel::InApp => ChannelView::InApp,
            Channel::Push => ChannelView::Push,
            Channel::Email => ChannelView::Email,
            Channel::Sms => ChannelView::Sms,
            Channel::Pager => ChannelView::Pager,
        }
    }
}

impl From<ChannelView> for Channel {
    fn from(c: ChannelView) -> Self {
        match c {
            ChannelView::InApp => Channel::InApp,
            ChannelView::Push => Channel::Push,
            ChannelView::Email => Channel::Email,
            ChannelView::Sms => Channel::Sms,
            ChannelView::Pager => Channel::Pager,
        }
    }
}

/// Who a step notifies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EscalationTargetView {
    /// The message's recipients (not the sender, not those who declined).
    Recipients,
    /// These users of the organization (1 to 50).
    Users { user_ids: Vec<Uuid> },
    /// Whoever holds this on-call role when the step fires (`[a-z0-9_]`, 1-64 characters).
    OnCall { role: String },
}

/// One step of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EscalationStepView {
    /// Seconds after the message was sent; strictly increasing from step to step.
    pub after_secs: i64,
    pub targets: EscalationTargetView,
    /// At least one.
    pub channels: Vec<ChannelView>,
    /// Notify again this often (at least 30 s) until the next step or the end, unless
    /// acknowledged first; `null` for once.
    #[serde(default)]
    pub repeat_every_secs: Option<i64>,
}

impl From<&Step> for EscalationStepView {
    fn from(s: &Step) -> Self {
        EscalationStepView {
            after_secs: s.after.as_secs(),
            targets: match &s.targets {
                Target::Recipients => EscalationTargetView::Recipients,
                Target::Users(u) => EscalationTargetView::Users { user_ids: u.iter().map(|u| u.as_uuid()).collect() },
                Target::OnCall(r) => EscalationTargetView::OnCall { role: r.as_str().to_owned() },
            },
            channels: s.channels.list().into_iter().map(ChannelView::from).collect(),
            repeat_every_secs: s.repeat_every.map(|r| r.as_secs()),
        }
    }
}

impl EscalationStepView {
    /// The domain step; `None` for an on-call role that is not a role key. Bounds are checked by
    /// `medhub_core::escalation::validate`.
    pub fn to_step(&self) -> Option<Step> {
        let targets = match &self.targets {
            EscalationTargetView::Recipients => Target::Recipients,
            EscalationTargetView::Users { user_ids } => {
                Target::Users(user_ids.iter().map(|u| UserId::from_uuid(*u)).collect())
            }
            EscalationTargetView::OnCall { role } => Target::OnCall(OnCallRole::parse(role)?),
        };
        let channels = self.channels.iter().fold(ChannelSet::NONE, |s, c| s.with((*c).into()));
        Some(Step {
            after: jiff::SignedDuration::from_secs(self.after_secs),
            targets,
            channels,
            repeat_every: self.repeat_every_secs.map(jiff::SignedDuration::from_secs),
        })
    }
}

/// `GET /api/v1/admin/escalation-policies/{priority}`: the policy in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EscalationPolicyView {
    pub priority: PriorityView,
    pub steps: Vec<EscalationStepView>,
    /// The escalation ends unacknowledged this many seconds after the send.
    pub stop_after_secs: i64,
    /// `true`: medhub's shipped policy (the organization has not set its own).
    pub shipped: bool,
    pub set_by: Option<Uuid>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub set_at: Option<Timestamp>,
}

/// `PUT /api/v1/admin/escalation-policies/{priority}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEscalationPolicy {
    /// 1 to 10 steps.
    pub steps: Vec<EscalationStepView>,
    /// After the last step starts, at most 86400 (24 hours).
    pub stop_after_secs: i64,
}

/// How an escalation stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EscalationStatusView {
    /// `open`, or how it closed: `acknowledged`, `recalled`, `exhausted`.
    pub state: String,
    /// The last step notified (from 1), `null` before the first.
    pub step: Option<u16>,
    /// Who acknowledged.
    pub closed_by: Option<Uuid>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub closed_at: Option<Timestamp>,
}

/// One entry of the delivery trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TraceStepView {
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// `accepted` (the server committed the message), `notified` (a notification to a person on
    /// a channel was queued), `escalated` (a step reached a new person), `sent` (the channel
    /// accepted it), `retrying`, `failed`, `cancelled` (not sent: acknowledged first),
    /// `no_target`, `unreachable`, `limited`, `exhausted`, `acknowledged` (with the response),
    /// `recalled`.
    pub kind: String,
    /// The policy step (from 1).
    pub step: Option<u16>,
    /// The repeat within the step (0 for the first notification).
    pub round: Option<u32>,
    pub user_id: Option<Uuid>,
    pub channel: Option<ChannelView>,
    /// A fixed reason or a count (`attempt 2: smtp reply 451`); for `notified`, why
    /// (`new_message` or `escalated`); for `acknowledged`, the response's kind.
    pub detail: Option<String>,
}

/// `GET /api/v1/messages/{id}/trace`: what happened to a message, in order, and where each
/// recipient stands (delivered and read come from the receipts, which carry no time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageTrace {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub priority: PriorityView,
    /// `null` for a routine message (it is not escalated).
    pub escalation: Option<EscalationStatusView>,
    pub steps: Vec<TraceStepView>,
    pub recipients: Vec<RecipientStatusView>,
}

/// `GET` and `PUT /api/v1/me/contact`: where the caller is notified outside medhub. Each is
/// optional; `null` removes it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactPointsView {
    /// An e-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// A mobile number in E.164 form (`+447700900123`), for SMS.
    #[serde(default)]
    pub phone: Option<String>,
    /// The pager number the paging gateway knows.
    #[serde(default)]
    pub pager: Option<String>,
}

impl std::fmt::Debug for ContactPointsView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactPointsView")
            .field("email", &self.email.is_some())
            .field("phone", &self.phone.is_some())
            .field("pager", &self.pager.is_some())
            .finish()
    }
}

/// The keys of a push subscription, as the browser gives them (base64url).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushKeysView {
    pub p256dh: String,
    pub auth: String,
}

/// `POST /api/v1/me/push-subscriptions`: the browser's `PushSubscription.toJSON()`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PushSubscriptionBody {
    pub endpoint: String,
    pub keys: PushKeysView,
    /// Sent by some browsers; ignored.
    #[serde(default, rename = "expirationTime")]
    #[schema(value_type = Option<f64>)]
    pub expiration_time: Option<serde_json::Value>,
}

impl std::fmt::Debug for PushSubscriptionBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSubscriptionBody").finish_non_exhaustive()
    }
}

/// `DELETE /api/v1/me/push-subscriptions`: the subscription to forget.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemovePushSubscription {
    pub endpoint: String,
}

impl std::fmt::Debug for RemovePushSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemovePushSubscription").finish_non_exhaustive()
    }
}

/// The answer to a push subscription registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PushSubscriptionView {
    pub id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_through_the_wire() {
        let json = serde_json::json!({
            "after_secs": 300,
            "targets": {"kind": "on_call", "role": "backup_on_call"},
            "channels": ["in_app", "sms"],
            "repeat_every_secs": 120
        });
        let v: EscalationStepView = serde_json::from_value(json.clone()).unwrap();
        let step = v.to_step().unwrap();
        assert_eq!(step.channels, ChannelSet::of(&[Channel::InApp, Channel::Sms]));
        assert_eq!(EscalationStepView::from(&step), v);
        assert_eq!(serde_json::to_value(&v).unwrap(), json);
        let bad_role = serde_json::json!({"after_secs": 0, "targets": {"kind": "on_call", "role": "Head Nurse"}, "channels": ["push"]});
        let v: EscalationStepView = serde_json::from_value(bad_role).unwrap();
        assert_eq!(v.to_step(), None);
        let unknown = serde_json::json!({"after_secs": 0, "targets": {"kind": "recipients"}, "channels": ["fax"]});
        assert!(serde_json::from_value::<EscalationStepView>(unknown).is_err());
    }

    #[test]
    fn contact_points_never_show_in_debug_output() {
        let c =
            ContactPointsView { email: Some("a@h.example".into()), phone: Some("+447700900123".into()), pager: None };
        let shown = format!("{c:?}");
        assert!(!shown.contains("h.example") && !shown.contains("7700"), "{shown}");
    }
}
