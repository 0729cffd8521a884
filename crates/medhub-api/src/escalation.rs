//! Escalation until acknowledged over REST (docs/clinical.md, docs/api.md): a message's
//! delivery trace, the organization's escalation policies (administrators), and one's own
//! contact points and Web Push subscriptions.

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router, extract::State};
use medhub_core::MessageId;
use medhub_core::escalation::Policy;
use medhub_core::model::Priority;
use medhub_service::escalation::{MessageTrace as TraceData, PolicyInForce};
use medhub_store::ContactPoints;
use medhub_wire::ErrorBody;
use medhub_wire::escalation::{
    ContactPointsView, EscalationPolicyView, EscalationStatusView, EscalationStepView, MessageTrace,
    PushSubscriptionBody, PushSubscriptionView, RemovePushSubscription, SetEscalationPolicy, TraceStepView,
};
use medhub_wire::views::RecipientStatusView;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Authed};

type ApiResult<T> = Result<T, ApiError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/messages/{id}/trace", get(message_trace))
        .route("/api/v1/admin/escalation-policies/{priority}", get(get_policy).put(set_policy))
        .route("/api/v1/me/contact", get(get_contact).put(set_contact))
        .route("/api/v1/me/push-subscriptions", post(add_push_subscription).delete(remove_push_subscription))
}

fn priority(s: &str) -> Result<Priority, ApiError> {
    match Priority::parse(s) {
        Some(p @ (Priority::Urgent | Priority::Critical)) => Ok(p),
        _ => Err(ApiError::from(medhub_service::ServiceError::InvalidRequest(
            "priority must be urgent or critical".into(),
        ))),
    }
}

fn policy_view(p: &PolicyInForce) -> EscalationPolicyView {
    EscalationPolicyView {
        priority: p.policy.priority.into(),
        steps: p.policy.steps.iter().map(EscalationStepView::from).collect(),
        stop_after_secs: p.policy.stop_after.as_secs(),
        shipped: p.stored.is_none(),
        set_by: p.stored.as_ref().and_then(|s| s.set_by.map(|u| u.as_uuid())),
        set_at: p.stored.as_ref().map(|s| s.set_at),
    }
}

/// The delivery trace in order: the message accepted, then what the escalation did (notified,
/// escalated, sent, retrying, failed, cancelled, …), the acknowledgements and a recall, by time.
pub(crate) fn trace_view(t: &TraceData) -> MessageTrace {
    let m = &t.message;
    let mut steps = vec![TraceStepView {
        at: m.created_at,
        kind: "accepted".into(),
        step: None,
        round: None,
        user_id: Some(m.sender.as_uuid()),
        channel: None,
        detail: None,
    }];
    steps.extend(t.rows.iter().map(|r| TraceStepView {
        at: r.at,
        kind: r.kind.as_str().to_owned(),
        step: r.level.map(|l| l.saturating_add(1)),
        round: r.round,
        user_id: r.user.map(|u| u.as_uuid()),
        channel: r.channel.map(Into::into),
        detail: r.detail.clone(),
    }));
    for a in t.recipients.iter().filter_map(|r| r.ack.as_ref()) {
        steps.push(TraceStepView {
            at: a.at,
            kind: "acknowledged".into(),
            step: None,
            round: None,
            user_id: Some(a.user.as_uuid()),
            channel: None,
            detail: Some(a.response.kind_str().to_owned()),
        });
    }
    if let Some(r) = m.recall {
        steps.push(TraceStepView {
            at: r.at,
            kind: "recalled".into(),
            step: None,
            round: None,
            user_id: r.by.map(|u| u.as_uuid()),
            channel: None,
            detail: None,
        });
    }
    // Stable: rows of one instant keep the order they were written in.
    steps.sort_by_key(|s| s.at);
    MessageTrace {
        message_id: m.id.as_uuid(),
        conversation_id: m.conversation.as_uuid(),
        priority: m.priority.into(),
        escalation: t.escalation.as_ref().map(|e| EscalationStatusView {
            state: e.closed.map_or("open", |c| c.reason.as_str()).to_owned(),
            step: e.state.last.map(|p| p.level.saturating_add(1)),
            closed_by: e.closed.and_then(|c| c.by).map(|u| u.as_uuid()),
            closed_at: e.closed.map(|c| c.at),
        }),
        steps,
        recipients: t
            .recipients
            .iter()
            .map(|r| RecipientStatusView::new(m.seq, r.user, r.member.as_ref(), r.ack.as_ref()))
            .collect(),
    }
}

/// What happened to a message: accepted, each notification (who, which channel, why), each
/// escalation (to whom), what each channel did (sent, retrying, failed with the reason,
/// cancelled once acknowledged), the acknowledgements, and where each recipient stands
/// (delivered, read, acknowledged). For the sender, the conversation's owners and the
/// organization's administrators; another member gets `forbidden`, anyone else `not_found`.
#[utoipa::path(get, path = "/api/v1/messages/{id}/trace", tag = "messages", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The message")),
    responses((status = 200, body = MessageTrace), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn message_trace(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<MessageTrace>> {
    let t = state.services.escalation.trace(&p, MessageId::from_uuid(id)).await?;
    Ok(Json(trace_view(&t)))
}

/// The organization's escalation policy for `urgent` or `critical` messages: its own, or the
/// shipped one (`shipped: true`). Administrators.
#[utoipa::path(get, path = "/api/v1/admin/escalation-policies/{priority}", tag = "admin", security(("bearer" = [])),
    params(("priority" = String, Path, description = "urgent or critical")),
    responses((status = 200, body = EscalationPolicyView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn get_policy(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(prio): ApiPath<String>,
) -> ApiResult<Json<EscalationPolicyView>> {
    let found = state.services.escalation.policy(&p, priority(&prio)?).await?;
    Ok(Json(policy_view(&found)))
}

/// Replace the organization's escalation policy for `urgent` or `critical` messages
/// (administrators, with a step-up; audited `admin.escalation_policy`). Open escalations follow
/// it from their next step or repeat.
#[utoipa::path(put, path = "/api/v1/admin/escalation-policies/{priority}", tag = "admin", security(("bearer" = [])),
    params(("priority" = String, Path, description = "urgent or critical")),
    request_body = SetEscalationPolicy,
    responses((status = 200, body = EscalationPolicyView),
              (status = 400, description = "invalid_escalation_policy or invalid_request", body = ErrorBody),
              (status = 403, description = "forbidden or step_up_required", body = ErrorBody),
              (status = 404, description = "a named user is not a user of the organization", body = ErrorBody)))]
pub async fn set_policy(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(prio): ApiPath<String>,
    ApiJson(req): ApiJson<SetEscalationPolicy>,
) -> ApiResult<Json<EscalationPolicyView>> {
    let priority = priority(&prio)?;
    let steps = req.steps.iter().map(|s| s.to_step()).collect::<Option<Vec<_>>>().ok_or_else(|| {
        ApiError::from(medhub_service::ServiceError::InvalidRequest(
            "an on-call role is `[a-z0-9_]`, 1-64 characters".into(),
        ))
    })?;
    let policy =
        Policy { org: p.user.org, priority, steps, stop_after: jiff::SignedDuration::from_secs(req.stop_after_secs) };
    let found = state.services.escalation.set_policy(&p, policy).await?;
    Ok(Json(policy_view(&found)))
}

fn contact_view(c: ContactPoints) -> ContactPointsView {
    ContactPointsView { email: c.email, phone: c.phone, pager: c.pager }
}

/// Where the caller is notified outside medhub.
#[utoipa::path(get, path = "/api/v1/me/contact", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = ContactPointsView)))]
pub async fn get_contact(State(state): State<AppState>, Authed(p): Authed) -> ApiResult<Json<ContactPointsView>> {
    Ok(Json(contact_view(state.services.escalation.contact(&p).await?)))
}

/// Set where the caller is notified outside medhub: an e-mail address, a mobile number (E.164)
/// and a pager number; `null` or a missing field removes it (audited `account.contact`, which
/// names which are set, never the values).
#[utoipa::path(put, path = "/api/v1/me/contact", tag = "auth", security(("bearer" = [])),
    request_body = ContactPointsView,
    responses((status = 200, body = ContactPointsView), (status = 400, description = "invalid_contact_point", body = ErrorBody)))]
pub async fn set_contact(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(req): ApiJson<ContactPointsView>,
) -> ApiResult<Json<ContactPointsView>> {
    let c = ContactPoints { email: req.email, phone: req.phone, pager: req.pager };
    Ok(Json(contact_view(state.services.escalation.set_contact(&p, c).await?)))
}

/// Register this browser's Web Push subscription (`PushSubscription.toJSON()`). The endpoint
/// must be one of the push services the server allows; registering an endpoint again replaces
/// it; a user keeps at most 10 (the oldest goes).
#[utoipa::path(post, path = "/api/v1/me/push-subscriptions", tag = "auth", security(("bearer" = [])),
    request_body = PushSubscriptionBody,
    responses((status = 201, body = PushSubscriptionView), (status = 400, description = "invalid_contact_point", body = ErrorBody)))]
pub async fn add_push_subscription(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(req): ApiJson<PushSubscriptionBody>,
) -> ApiResult<(StatusCode, Json<PushSubscriptionView>)> {
    let row =
        state.services.escalation.add_push_subscription(&p, &req.endpoint, &req.keys.p256dh, &req.keys.auth).await?;
    Ok((StatusCode::CREATED, Json(PushSubscriptionView { id: row.id.as_uuid(), created_at: row.created_at })))
}

/// Forget one of the caller's push subscriptions (the browser unsubscribed).
#[utoipa::path(delete, path = "/api/v1/me/push-subscriptions", tag = "auth", security(("bearer" = [])),
    request_body = RemovePushSubscription,
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove_push_subscription(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(req): ApiJson<RemovePushSubscription>,
) -> ApiResult<StatusCode> {
    state.services.escalation.remove_push_subscription(&p, &req.endpoint).await?;
    Ok(StatusCode::NO_CONTENT)
}
