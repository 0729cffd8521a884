//! The OpenAPI 3.1 document, generated from the handlers' annotations, and a self-contained
//! HTML reference page rendered from it (no CDN: hospitals run air-gapped networks).

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi};

use crate::AppState;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("Session token from /api/v1/auth/login"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "medhub API", description = "REST API of medhub. The real-time protocol (WebSocket at /api/v1/ws) is described in docs/protocol.md."),
    paths(
        crate::identity::login, crate::identity::logout, crate::identity::change_password,
        crate::identity::totp_enroll, crate::identity::totp_confirm, crate::identity::mfa_verify,
        crate::identity::regenerate_recovery_codes, crate::identity::step_up, crate::identity::my_sessions,
        crate::identity::end_my_session, crate::identity::ws_ticket, crate::identity::accept_invitation,
        crate::identity::all_sessions, crate::identity::kill_session, crate::identity::invite, crate::identity::reinvite,
        crate::identity::update_user, crate::identity::reset_mfa, crate::identity::get_settings,
        crate::identity::update_settings, crate::identity::list_roles, crate::identity::create_role,
        crate::identity::get_user_roles, crate::identity::set_user_roles,
        crate::sso::oidc_start, crate::sso::oidc_callback,
        crate::patients::care_team, crate::patients::add_to_care_team, crate::patients::remove_from_care_team,
        crate::patients::break_glass, crate::patients::grants, crate::patients::end_grant, crate::audit::inclusion, crate::audit::consistency, crate::audit::search,
        crate::retention::policies, crate::retention::set_policy, crate::retention::remove_policy,
        crate::retention::expire, crate::retention::holds, crate::retention::create_hold, crate::retention::lift_hold,
        crate::retention::erase,
        crate::presence::set, crate::presence::clear, crate::presence::of,
        crate::handoff::give, crate::handoff::list, crate::handoff::one, crate::handoff::accept, crate::handoff::cancel,
        crate::oncall::directory, crate::oncall::create_role, crate::oncall::role, crate::oncall::update_role,
        crate::oncall::create_schedule, crate::oncall::update_schedule, crate::oncall::delete_schedule,
        crate::oncall::add_override, crate::oncall::remove_override, crate::oncall::swap, crate::oncall::shifts,
        crate::oncall::export_calendar, crate::oncall::import_calendar, crate::oncall::send_to_role,
        crate::oncall::coverages, crate::oncall::add_coverage, crate::oncall::remove_coverage,
        crate::escalation::message_trace, crate::escalation::get_policy, crate::escalation::set_policy,
        crate::escalation::get_contact, crate::escalation::set_contact, crate::escalation::add_push_subscription,
        crate::escalation::remove_push_subscription,
        crate::audit_reports::report,
        crate::audit_export::export,
        crate::passkey::register_start, crate::passkey::register_finish, crate::passkey::verify_start,
        crate::passkey::verify_finish, crate::passkey::step_up_start, crate::passkey::step_up_finish,
        crate::passkey::list_passkeys, crate::passkey::delete_passkey,
        crate::sso::saml_start, crate::sso::saml_acs, crate::sso::saml_metadata,
        crate::rest::me,
        crate::rest::list_users, crate::rest::get_user,
        crate::rest::list_conversations, crate::rest::create_conversation, crate::rest::get_conversation,
        crate::rest::update_conversation, crate::rest::add_member, crate::rest::set_member_role, crate::rest::remove_member,
        crate::rest::history, crate::rest::send_message, crate::rest::receipt, crate::rest::typing,
        crate::rest::get_message, crate::rest::edit_message, crate::rest::recall_message, crate::rest::revisions,
        crate::rest::ack_message, crate::rest::message_status,
        crate::longpoll::events,
        crate::ops::healthz, crate::ops::readyz, crate::ops::metrics,
    ),
    components(schemas(medhub_wire::ClientFrame, medhub_wire::ServerFrame, medhub_wire::ErrorCode)),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Sign-in, second factors, step-up and sessions"),
        (name = "admin", description = "Accounts, sessions and settings, for administrators"),
        (name = "users", description = "The user directory"),
        (name = "conversations", description = "Conversations and membership"),
        (name = "messages", description = "History, sending, edits, recalls, receipts and acknowledgements"),
        (name = "patients", description = "Patient scope: care teams and break-glass emergency access"),
        (name = "audit", description = "The tamper-evident audit log: RFC 9162 proofs, search, exports (FHIR R4 AuditEvent, NDJSON, CSV) and compliance reports"),
        (name = "retention", description = "Retention policies, legal holds, expiry and GDPR erasure"),
        (name = "handoffs", description = "Shift handoff in the I-PASS format: give, read, accept with a synthesis, cancel"),
        (name = "oncall", description = "On-call roles and schedules, overrides, swaps, coverage, the on-call directory, iCalendar import and export, and messages addressed to a role"),
        (name = "realtime", description = "Long-polling fallback for the event stream"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

/// The OpenAPI document as JSON.
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|_| "{}".to_owned())
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(openapi_json))
        .route("/api/docs", get(reference_page))
        .route("/api/docs/style.css", get(reference_style))
}

/// The reference page's style sheet: a file of its own, because the Content-Security-Policy
/// (`default-src 'self'`) refuses inline styles.
const REFERENCE_CSS: &str = "body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;line-height:1.4}\
code,pre{background:#f4f4f4;padding:.1rem .3rem}pre{padding:.6rem;overflow:auto}\
.op{border-top:1px solid #ddd;padding:.6rem 0}.m{font-weight:bold;text-transform:uppercase;margin-right:.5rem}\n";

async fn reference_style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], REFERENCE_CSS).into_response()
}

async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn schema_name(r: &RefOr<Schema>) -> String {
    match r {
        RefOr::Ref(r) => r.ref_location.rsplit('/').next().unwrap_or_default().to_owned(),
        RefOr::T(_) => "inline".to_owned(),
    }
}

/// Renders the reference page: every operation with its parameters, body and responses, and
/// every schema as JSON.
pub fn render_reference() -> String {
    let doc = ApiDoc::openapi();
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>medhub API reference</title>\
         <link rel=\"stylesheet\" href=\"/api/docs/style.css\">\
         </head><body><h1>medhub API reference</h1><p>Generated from the server's OpenAPI 3.1 document \
         (<a href=\"/api/openapi.json\">/api/openapi.json</a>). Authenticated operations take \
         <code>Authorization: Bearer &lt;token&gt;</code>. Errors always have the body \
         <code>{\"error\":{\"code\",\"message\",\"correlation_id\"?}}</code>.</p>",
    );
    html.push_str("<h2>Operations</h2>");
    for (path, item) in &doc.paths.paths {
        let ops = [
            ("get", &item.get),
            ("post", &item.post),
            ("put", &item.put),
            ("patch", &item.patch),
            ("delete", &item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            html.push_str(&format!("<div class=\"op\"><span class=\"m\">{method}</span><code>{}</code>", esc(path)));
            if let Some(s) = &op.summary {
                html.push_str(&format!("<p>{}</p>", esc(s)));
            }
            if let Some(d) = &op.description {
                html.push_str(&format!("<p>{}</p>", esc(d)));
            }
            if op.security.is_some() {
                html.push_str("<p><em>Requires a session.</em></p>");
            }
            if let Some(params) = &op.parameters {
                html.push_str("<ul>");
                for p in params {
                    let loc = serde_json::to_value(&p.parameter_in)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    html.push_str(&format!(
                        "<li><code>{}</code> ({loc}{}) {}</li>",
                        esc(&p.name),
                        if matches!(p.required, utoipa::openapi::Required::True) { ", required" } else { "" },
                        esc(p.description.as_deref().unwrap_or(""))
                    ));
                }
                html.push_str("</ul>");
            }
            if let Some(body) = &op.request_body {
                for (ct, content) in &body.content {
                    html.push_str(&format!(
                        "<p>Body ({}): <a href=\"#s-{n}\">{n}</a></p>",
                        esc(ct),
                        n = esc(&schema_name(&content.schema.clone().unwrap_or(RefOr::T(Schema::default()))))
                    ));
                }
            }
            html.push_str("<p>Responses:</p><ul>");
            for (status, resp) in &op.responses.responses {
                let (desc, body) = match resp {
                    RefOr::T(r) => (
                        r.description.clone(),
                        r.content.values().next().and_then(|c| c.schema.as_ref()).map(schema_name),
                    ),
                    RefOr::Ref(r) => (r.ref_location.clone(), None),
                };
                html.push_str(&format!("<li><code>{}</code> {}", esc(status), esc(&desc)));
                if let Some(b) = body {
                    html.push_str(&format!(" <a href=\"#s-{b}\">{b}</a>", b = esc(&b)));
                }
                html.push_str("</li>");
            }
            html.push_str("</ul></div>");
        }
    }
    html.push_str("<h2>Schemas</h2>");
    if let Some(components) = &doc.components {
        for (name, schema) in &components.schemas {
            let json = serde_json::to_string_pretty(schema).unwrap_or_default();
            html.push_str(&format!("<h3 id=\"s-{n}\">{n}</h3><pre>{}</pre>", esc(&json), n = esc(name)));
        }
    }
    html.push_str("</body></html>");
    html
}

async fn reference_page() -> Html<String> {
    Html(render_reference())
}
