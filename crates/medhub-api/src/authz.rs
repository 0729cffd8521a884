//! The one authorization table: what every HTTP route and every WebSocket frame type needs
//! from its caller, enforced before any handler runs.
//!
//! A route missing from [`ROUTES`] is refused with an internal error (and the permission
//! matrix test fails), so a new route cannot ship without a decision. The table is checked
//! against `tests/permissions.csv` by calling every route and frame as every kind of caller.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use medhub_core::audit::Outcome;
use medhub_core::authz::{Need, Permission};
use medhub_core::model::SessionState;
use medhub_service::Principal;
use medhub_wire::{ClientFrame, ErrorCode};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::bearer_token;

use Permission::*;
use SessionState::*;

/// Every route: method, path pattern (as registered), and what it needs.
pub const ROUTES: &[(&str, &str, Need)] = &[
    // Signing in, and its next steps. The handlers check the session state they expect.
    ("POST", "/api/v1/auth/login", Need::Public),
    ("POST", "/api/v1/auth/invitation", Need::Public),
    ("GET", "/api/v1/auth/oidc/start", Need::Public),
    ("GET", "/api/v1/auth/oidc/callback", Need::Public),
    ("GET", "/api/v1/auth/saml/start", Need::Public),
    ("POST", "/api/v1/auth/saml/acs", Need::Public),
    ("GET", "/api/v1/auth/saml/metadata", Need::Public),
    ("POST", "/api/v1/auth/logout", Need::Session),
    ("POST", "/api/v1/auth/password", Need::Step(&[PasswordChangeRequired, Active])),
    ("POST", "/api/v1/auth/mfa/totp/enroll", Need::Step(&[MfaEnrollmentRequired, Active])),
    ("POST", "/api/v1/auth/mfa/totp/confirm", Need::Step(&[MfaEnrollmentRequired, Active])),
    ("POST", "/api/v1/auth/mfa/verify", Need::Step(&[MfaRequired, Active])),
    // Passkeys: registration is enrolment (or a further factor), verify is the second step.
    ("POST", "/api/v1/auth/mfa/passkey/register/start", Need::Step(&[MfaEnrollmentRequired, Active])),
    ("POST", "/api/v1/auth/mfa/passkey/register/finish", Need::Step(&[MfaEnrollmentRequired, Active])),
    ("POST", "/api/v1/auth/mfa/passkey/verify/start", Need::Step(&[MfaRequired, Active])),
    ("POST", "/api/v1/auth/mfa/passkey/verify/finish", Need::Step(&[MfaRequired, Active])),
    // One's own account.
    ("POST", "/api/v1/auth/mfa/recovery-codes", Need::Active(OwnAccount)),
    ("POST", "/api/v1/auth/step-up", Need::Active(OwnAccount)),
    ("POST", "/api/v1/auth/step-up/passkey/start", Need::Active(OwnAccount)),
    ("POST", "/api/v1/auth/step-up/passkey/finish", Need::Active(OwnAccount)),
    ("GET", "/api/v1/auth/mfa/passkeys", Need::Active(OwnAccount)),
    ("DELETE", "/api/v1/auth/mfa/passkeys/{id}", Need::Active(OwnAccount)),
    ("GET", "/api/v1/auth/sessions", Need::Active(OwnAccount)),
    ("DELETE", "/api/v1/auth/sessions/{id}", Need::Active(OwnAccount)),
    ("POST", "/api/v1/auth/ws-ticket", Need::Active(OwnAccount)),
    ("GET", "/api/v1/me", Need::Active(OwnAccount)),
    // Where one is notified outside medhub.
    ("GET", "/api/v1/me/contact", Need::Active(OwnAccount)),
    ("PUT", "/api/v1/me/contact", Need::Active(OwnAccount)),
    ("POST", "/api/v1/me/push-subscriptions", Need::Active(OwnAccount)),
    ("DELETE", "/api/v1/me/push-subscriptions", Need::Active(OwnAccount)),
    // Administration.
    ("GET", "/api/v1/admin/sessions", Need::Active(SessionAdmin)),
    ("DELETE", "/api/v1/admin/sessions/{id}", Need::Active(SessionAdmin)),
    ("POST", "/api/v1/admin/users", Need::Active(UserAdmin)),
    ("PATCH", "/api/v1/admin/users/{id}", Need::Active(UserAdmin)),
    ("POST", "/api/v1/admin/users/{id}/invitation", Need::Active(UserAdmin)),
    ("POST", "/api/v1/admin/users/{id}/mfa-reset", Need::Active(UserAdmin)),
    ("GET", "/api/v1/admin/settings", Need::Active(OrgSettings)),
    // Escalation policies (the service also demands a step-up to change one).
    ("GET", "/api/v1/admin/escalation-policies/{priority}", Need::Active(OrgSettings)),
    ("PUT", "/api/v1/admin/escalation-policies/{priority}", Need::Active(OrgSettings)),
    ("PATCH", "/api/v1/admin/settings", Need::Active(OrgSettings)),
    // Listing roles is for user administrators too (the service lets either in).
    ("GET", "/api/v1/admin/roles", Need::Active(UserAdmin)),
    ("POST", "/api/v1/admin/roles", Need::Active(RoleAdmin)),
    ("GET", "/api/v1/admin/users/{id}/roles", Need::Active(RoleAdmin)),
    ("PUT", "/api/v1/admin/users/{id}/roles", Need::Active(RoleAdmin)),
    // The directory.
    ("GET", "/api/v1/users", Need::Active(DirectoryRead)),
    ("GET", "/api/v1/users/{id}", Need::Active(DirectoryRead)),
    ("GET", "/api/v1/users/{id}/presence", Need::Active(DirectoryRead)),
    ("PUT", "/api/v1/me/presence", Need::Active(OwnAccount)),
    ("DELETE", "/api/v1/me/presence", Need::Active(OwnAccount)),
    // Conversations and messages (conversation roles apply on top, in the service).
    ("GET", "/api/v1/conversations", Need::Active(ConversationRead)),
    ("POST", "/api/v1/conversations", Need::Active(ConversationWrite)),
    ("GET", "/api/v1/conversations/{id}", Need::Active(ConversationRead)),
    ("PATCH", "/api/v1/conversations/{id}", Need::Active(ConversationWrite)),
    ("POST", "/api/v1/conversations/{id}/members", Need::Active(ConversationWrite)),
    ("PATCH", "/api/v1/conversations/{id}/members/{user_id}", Need::Active(ConversationWrite)),
    ("DELETE", "/api/v1/conversations/{id}/members/{user_id}", Need::Active(ConversationWrite)),
    ("GET", "/api/v1/conversations/{id}/messages", Need::Active(ConversationRead)),
    ("POST", "/api/v1/conversations/{id}/messages", Need::Active(MessageSend)),
    ("POST", "/api/v1/conversations/{id}/receipts", Need::Active(MessageSend)),
    ("POST", "/api/v1/conversations/{id}/typing", Need::Active(MessageSend)),
    ("GET", "/api/v1/messages/{id}", Need::Active(ConversationRead)),
    ("PATCH", "/api/v1/messages/{id}", Need::Active(MessageSend)),
    ("POST", "/api/v1/messages/{id}/recall", Need::Active(MessageSend)),
    ("GET", "/api/v1/messages/{id}/revisions", Need::Active(ConversationRead)),
    ("POST", "/api/v1/messages/{id}/ack", Need::Active(MessageSend)),
    ("GET", "/api/v1/messages/{id}/status", Need::Active(ConversationRead)),
    // The delivery trace: the sender, owners and administrators (checked by the service).
    ("GET", "/api/v1/messages/{id}/trace", Need::Active(ConversationRead)),
    // Patient scope: care teams, break-glass (the service also demands a step-up), and the
    // grants compliance officers review.
    ("GET", "/api/v1/patients/{patient_ref}/care-team", Need::Active(DirectoryRead)),
    ("PUT", "/api/v1/patients/{patient_ref}/care-team/{user_id}", Need::Active(CareTeamAdmin)),
    ("DELETE", "/api/v1/patients/{patient_ref}/care-team/{user_id}", Need::Active(CareTeamAdmin)),
    ("POST", "/api/v1/conversations/{id}/break-glass", Need::Active(BreakGlass)),
    ("GET", "/api/v1/break-glass", Need::Active(AuditRead)),
    // The audit log's proofs, for compliance officers.
    ("GET", "/api/v1/audit/proof/inclusion", Need::Active(AuditRead)),
    ("GET", "/api/v1/audit/proof/consistency", Need::Active(AuditRead)),
    // Compliance reports (docs/audit-reports.md).
    ("GET", "/api/v1/audit/reports/{kind}", Need::Active(AuditRead)),
    ("GET", "/api/v1/audit/events", Need::Active(AuditRead)),
    // Retention: everyone may read the policies; administrators set them; compliance
    // officers hold, lift, expire on demand and erase.
    ("GET", "/api/v1/retention/policies", Need::Active(DirectoryRead)),
    ("PUT", "/api/v1/retention/policies/{class}", Need::Active(OrgSettings)),
    ("DELETE", "/api/v1/retention/policies/{class}", Need::Active(OrgSettings)),
    ("POST", "/api/v1/retention/expire", Need::Active(RetentionManage)),
    ("GET", "/api/v1/handoffs", Need::Active(ConversationRead)),
    ("POST", "/api/v1/handoffs", Need::Active(ConversationWrite)),
    ("GET", "/api/v1/handoffs/{id}", Need::Active(ConversationRead)),
    ("POST", "/api/v1/handoffs/{id}/accept", Need::Active(ConversationRead)),
    ("POST", "/api/v1/handoffs/{id}/cancel", Need::Active(ConversationRead)),
    ("GET", "/api/v1/legal-holds", Need::Active(RetentionManage)),
    ("POST", "/api/v1/legal-holds", Need::Active(RetentionManage)),
    ("POST", "/api/v1/legal-holds/{id}/lift", Need::Active(RetentionManage)),
    ("POST", "/api/v1/users/{id}/erase", Need::Active(RetentionManage)),
    // On-call (docs/clinical.md): everyone with the directory reads who is on call and the
    // rotas; those who keep rotas (schedule.manage) change them; a message to a role is a
    // message.
    ("GET", "/api/v1/oncall", Need::Active(DirectoryRead)),
    ("POST", "/api/v1/oncall", Need::Active(ScheduleManage)),
    ("GET", "/api/v1/oncall/{role}", Need::Active(DirectoryRead)),
    ("PATCH", "/api/v1/oncall/{role}", Need::Active(ScheduleManage)),
    ("POST", "/api/v1/oncall/{role}/schedules", Need::Active(ScheduleManage)),
    ("PUT", "/api/v1/oncall/{role}/schedules/{id}", Need::Active(ScheduleManage)),
    ("DELETE", "/api/v1/oncall/{role}/schedules/{id}", Need::Active(ScheduleManage)),
    ("POST", "/api/v1/oncall/{role}/schedules/{id}/overrides", Need::Active(ScheduleManage)),
    ("DELETE", "/api/v1/oncall/{role}/schedules/{id}/overrides/{override_id}", Need::Active(ScheduleManage)),
    ("POST", "/api/v1/oncall/{role}/schedules/{id}/swaps", Need::Active(ScheduleManage)),
    ("GET", "/api/v1/oncall/{role}/shifts", Need::Active(DirectoryRead)),
    ("GET", "/api/v1/oncall/{role}/calendar.ics", Need::Active(DirectoryRead)),
    ("POST", "/api/v1/oncall/{role}/calendar", Need::Active(ScheduleManage)),
    ("POST", "/api/v1/oncall/{role}/messages", Need::Active(MessageSend)),
    ("GET", "/api/v1/coverages", Need::Active(DirectoryRead)),
    ("POST", "/api/v1/coverages", Need::Active(ScheduleManage)),
    ("DELETE", "/api/v1/coverages/{id}", Need::Active(ScheduleManage)),
    // The audit log's export: reading it here, taking it out (export.run) in the handler.
    ("GET", "/api/v1/audit/export", Need::Active(AuditRead)),
    // The grantee ends their own grant; a compliance officer any (checked by the service).
    ("POST", "/api/v1/break-glass/{id}/end", Need::Active(OwnAccount)),
    // The event stream. The WebSocket authenticates in `hello`; each frame is checked below.
    ("GET", "/api/v1/events", Need::Active(ConversationRead)),
    ("GET", "/api/v1/ws", Need::Public),
    // Operations and documentation.
    ("GET", "/healthz", Need::Public),
    ("GET", "/readyz", Need::Public),
    ("GET", "/metrics", Need::Public),
    ("GET", "/api/openapi.json", Need::Public),
    ("GET", "/api/docs", Need::Public),
    ("GET", "/api/docs/style.css", Need::Public),
];

/// Every WebSocket frame type and what it needs (after `hello`).
pub const FRAMES: &[(&str, Need)] = &[
    ("hello", Need::Public),
    ("ping", Need::Session),
    ("send", Need::Active(MessageSend)),
    ("edit", Need::Active(MessageSend)),
    ("recall", Need::Active(MessageSend)),
    ("receipt", Need::Active(MessageSend)),
    ("ack", Need::Active(MessageSend)),
    ("typing", Need::Active(MessageSend)),
    ("presence_subscribe", Need::Active(DirectoryRead)),
];

/// What `method path` needs, if the route is in the table.
pub fn route_need(method: &Method, path: &str) -> Option<Need> {
    // HEAD is served by GET handlers, so it needs what GET needs.
    let method = if method == Method::HEAD { "GET" } else { method.as_str() };
    ROUTES.iter().find(|(m, p, _)| *m == method && *p == path).map(|(_, _, n)| *n)
}

/// The `type` of a client frame.
pub fn frame_type(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Hello { .. } => "hello",
        ClientFrame::Ping { .. } => "ping",
        ClientFrame::Send { .. } => "send",
        ClientFrame::Edit { .. } => "edit",
        ClientFrame::Recall { .. } => "recall",
        ClientFrame::Receipt { .. } => "receipt",
        ClientFrame::Ack { .. } => "ack",
        ClientFrame::Typing { .. } => "typing",
        ClientFrame::PresenceSubscribe { .. } => "presence_subscribe",
    }
}

/// What a frame type needs; `None` (a type missing from the table) is refused.
pub fn frame_need(ty: &str) -> Option<Need> {
    FRAMES.iter().find(|(t, _)| *t == ty).map(|(_, n)| *n)
}

/// Whether a signed-in principal may do what `need` asks.
pub fn check(principal: &Principal, need: Need) -> Result<(), ApiError> {
    match need {
        Need::Public | Need::Session => Ok(()),
        Need::Step(states) => Ok(principal.require_step(states)?),
        Need::Active(p) => Ok(principal.require(p)?),
    }
}

/// Answers a refusal once its audit record is written. Refused either way: a record that
/// could not be written is logged by the sink.
async fn refuse(audit: &medhub_service::AuditSink, record: medhub_core::audit::AuditRecord, e: ApiError) -> Response {
    let _ = audit.write(vec![record]).await;
    e.into_response()
}

/// What an HTTP audit record names as its object, read from the route's path parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RouteObject {
    Patient(String),
    Object(&'static str, String),
}

/// The object of a request on `route` (its pattern) at `path`: the first path parameter,
/// named after the collection before it.
fn route_object(route: &str, path: &str) -> Option<RouteObject> {
    let (mut prev, mut parts) = ("", route.split('/').zip(path.split('/')));
    parts.find_map(|(pattern, value)| {
        if !pattern.starts_with('{') {
            prev = pattern;
            return None;
        }
        let value = value.to_owned();
        Some(match prev {
            "patients" => RouteObject::Patient(value),
            "conversations" => RouteObject::Object("conversation", value),
            "messages" => RouteObject::Object("message", value),
            "users" => RouteObject::Object("user", value),
            "sessions" => RouteObject::Object("session", value),
            "break-glass" => RouteObject::Object("grant", value),
            "passkeys" => RouteObject::Object("passkey", value),
            "oncall" => RouteObject::Object("oncall_role", value),
            "coverages" => RouteObject::Object("coverage", value),
            _ => return None,
        })
    })
}

/// A principal already authenticated by [`enforce`], for the handler's extractor.
#[derive(Clone)]
pub struct Authorized(pub Arc<Principal>);

/// Route layer: looks the matched route up in [`ROUTES`] and, for routes that need an
/// active session with a permission or a sign-in step, authenticates and checks it before
/// the handler runs (and before its body is read).
pub async fn enforce(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let need = matched.as_deref().and_then(|p| route_need(req.method(), p));
    let Some(need) = need else {
        if matched.as_deref().is_some_and(|m| ROUTES.iter().any(|(_, p, _)| *p == m)) {
            // A known path with another method: the router answers 405.
            return next.run(req).await;
        }
        let id = medhub_service::correlation_id();
        tracing::error!(correlation = %id, method = %req.method(), path = ?matched, "route missing from the authorization table");
        return ApiError(medhub_wire::WireError::internal(id)).into_response();
    };
    if matches!(need, Need::Active(_) | Need::Step(_)) {
        // Every decision on a protected route is audited, allowed or denied.
        // Written before the answer or the handler: a decision that cannot be recorded lets
        // nothing through (fail closed).
        let audit = &state.services.audit;
        let ip = crate::extract::request_ip(req.extensions(), req.headers(), &state).map(|ip| ip.to_string());
        let target = format!("{} {}", req.method(), req.uri().path());
        let object = matched.as_deref().and_then(|m| route_object(m, req.uri().path()));
        let decision = |actor: Option<&Principal>, outcome: Outcome| {
            let mut r = match actor {
                Some(p) => audit.by(p, "http", outcome),
                None => audit.event("http", outcome),
            };
            if ip.is_some() {
                r.ip = ip.clone();
            }
            let r = r.target(target.clone());
            match &object {
                Some(RouteObject::Patient(p)) => r.patient(p),
                Some(RouteObject::Object(kind, id)) => r.object(kind, id),
                None => r,
            }
        };
        let denial = |actor: Option<&Principal>, e: &ApiError| decision(actor, Outcome::Deny).reason(e.0.code.as_str());
        let Some(token) = bearer_token(req.headers()) else {
            let e = ApiError::code(ErrorCode::Unauthenticated);
            return refuse(audit, denial(None, &e), e).await;
        };
        let principal = match state.services.auth.authenticate(token).await {
            Ok(p) => p,
            Err(e) => {
                let e = ApiError::from(e);
                return refuse(audit, denial(None, &e), e).await;
            }
        };
        if let Err(e) = check(&principal, need) {
            return refuse(audit, denial(Some(&principal), &e), e).await;
        }
        if let Err(e) = audit.write(vec![decision(Some(&principal), Outcome::Allow)]).await {
            return ApiError::from(e).into_response();
        }
        req.extensions_mut().insert(Authorized(Arc::new(principal)));
    }
    next.run(req).await
}
