//! On-call schedules, the on-call directory, coverage and role addressing over REST
//! (docs/clinical.md "On-call directory and role addressing", docs/api.md).

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use jiff::{SignedDuration, Timestamp};
use medhub_core::{CoverageId, OverrideId, ScheduleId, UserId};
use medhub_service::oncall::{
    DEFAULT_EXPORT, DEFAULT_IMPORT, DEFAULT_TIMELINE, Holder, NewOverride, NowAndNext, RoleSchedules,
};
use medhub_store::{OnCallKind, OnCallRole, OverrideSource, StoredCoverage, StoredOverride, StoredSchedule};
use medhub_wire::oncall::{
    CoverageList, CoverageView, CreateCoverage, CreateOnCallRole, CreateOverride, DirectoryEntry, ImportReport,
    NextChange, OnCallDirectory, OnCallKindView, OnCallRoleDetail, OnCallRoleView, OverrideSourceView, OverrideView,
    RoleMessageRequest, RoleMessageResponse, RotationSpec, ScheduleSpec, ScheduleView, ShiftList, ShiftView,
    SourceView, SwapRequest, UpdateOnCallRole,
};
use medhub_wire::views::MessageView;
use medhub_wire::{ErrorBody, ErrorCode};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authed};

type ApiResult<T> = Result<T, ApiError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/oncall", get(directory).post(create_role))
        .route("/api/v1/oncall/{role}", get(role).patch(update_role))
        .route("/api/v1/oncall/{role}/schedules", post(create_schedule))
        .route("/api/v1/oncall/{role}/schedules/{id}", put(update_schedule).delete(delete_schedule))
        .route("/api/v1/oncall/{role}/schedules/{id}/overrides", post(add_override))
        .route("/api/v1/oncall/{role}/schedules/{id}/overrides/{override_id}", delete(remove_override))
        .route("/api/v1/oncall/{role}/schedules/{id}/swaps", post(swap))
        .route("/api/v1/oncall/{role}/shifts", get(shifts))
        .route("/api/v1/oncall/{role}/calendar.ics", get(export_calendar))
        .route("/api/v1/oncall/{role}/calendar", post(import_calendar))
        .route("/api/v1/oncall/{role}/messages", post(send_to_role))
        .route("/api/v1/coverages", get(coverages).post(add_coverage))
        .route("/api/v1/coverages/{id}", delete(remove_coverage))
}

fn kind_view(k: OnCallKind) -> OnCallKindView {
    match k {
        OnCallKind::Role => OnCallKindView::Role,
        OnCallKind::Team => OnCallKindView::Team,
    }
}

fn kind_of(k: OnCallKindView) -> OnCallKind {
    match k {
        OnCallKindView::Role => OnCallKind::Role,
        OnCallKindView::Team => OnCallKind::Team,
    }
}

fn role_view(r: &OnCallRole) -> OnCallRoleView {
    OnCallRoleView {
        key: r.key.clone(),
        name: r.name.clone(),
        kind: kind_view(r.kind),
        department: r.department.clone(),
        created_at: r.created_at,
    }
}

fn override_view(o: &StoredOverride) -> OverrideView {
    OverrideView {
        id: o.id.as_uuid(),
        user_id: o.user.as_uuid(),
        replaces: o.replaces.map(|u| u.as_uuid()),
        start: o.start,
        end: o.end,
        source: match o.source {
            OverrideSource::Manual => OverrideSourceView::Manual,
            OverrideSource::Swap => OverrideSourceView::Swap,
            OverrideSource::Import => OverrideSourceView::Import,
        },
        created_by: o.created_by.map(|u| u.as_uuid()),
        created_at: o.created_at,
    }
}

fn schedule_view(key: &str, s: &StoredSchedule, overrides: &[StoredOverride]) -> ApiResult<ScheduleView> {
    let rotations = medhub_wire::oncall::rotations_from_json(&s.rotations).map_err(|e| {
        let id = medhub_service::correlation_id();
        tracing::error!(correlation = %id, schedule = %s.id, error = %e, "stored rotations do not parse");
        ApiError(medhub_wire::WireError::internal(id))
    })?;
    Ok(ScheduleView {
        id: s.id.as_uuid(),
        role: key.to_owned(),
        name: s.name.clone(),
        time_zone: s.zone.clone(),
        rotations: rotations.iter().map(RotationSpec::from_rotation).collect(),
        overrides: overrides.iter().map(override_view).collect(),
        version: s.version,
        created_at: s.created_at,
        updated_at: s.updated_at,
    })
}

fn holders(h: &[Holder]) -> Vec<medhub_wire::oncall::HolderView> {
    h.iter().map(Holder::view).collect()
}

fn next_view(n: &NowAndNext) -> Option<NextChange> {
    n.next.as_ref().map(|(at, h)| NextChange { at: *at, holders: holders(h) })
}

fn coverage_view(c: &StoredCoverage) -> CoverageView {
    CoverageView {
        id: c.id.as_uuid(),
        covered_user_id: c.covered.as_uuid(),
        by_user_id: c.by.as_uuid(),
        start: c.start,
        end: c.end,
        created_by: c.created_by.map(|u| u.as_uuid()),
        created_at: c.created_at,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AtQuery {
    /// The instant to look at (RFC 3339; default now).
    #[param(value_type = Option<String>, format = DateTime)]
    at: Option<Timestamp>,
}

/// The on-call directory: every on-call role and team of your organization, who is on call
/// now (and why: rotation, override, covering for whom) and who is next, and when.
#[utoipa::path(get, path = "/api/v1/oncall", tag = "oncall", security(("bearer" = [])), params(AtQuery),
    responses((status = 200, body = OnCallDirectory), (status = 403, body = ErrorBody)))]
pub async fn directory(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiQuery(q): ApiQuery<AtQuery>,
) -> ApiResult<Json<OnCallDirectory>> {
    let (at, roles) = state.services.oncall.directory(&p, q.at).await?;
    Ok(Json(OnCallDirectory {
        at,
        roles: roles
            .iter()
            .map(|(r, n)| DirectoryEntry { role: role_view(r), now: holders(&n.now), next: next_view(n) })
            .collect(),
    }))
}

/// Create an on-call role or team (`schedule.manage`).
#[utoipa::path(post, path = "/api/v1/oncall", tag = "oncall", security(("bearer" = [])),
    request_body = CreateOnCallRole,
    responses((status = 201, body = OnCallRoleView),
              (status = 400, description = "invalid_oncall_role", body = ErrorBody),
              (status = 403, body = ErrorBody),
              (status = 409, description = "oncall_key_taken", body = ErrorBody)))]
pub async fn create_role(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(req): ApiJson<CreateOnCallRole>,
) -> ApiResult<(StatusCode, Json<OnCallRoleView>)> {
    let role = state.services.oncall.create_role(&p, &req.key, &req.name, kind_of(req.kind), req.department).await?;
    Ok((StatusCode::CREATED, Json(role_view(&role))))
}

fn detail(key: &str, rs: &RoleSchedules, n: &NowAndNext) -> ApiResult<OnCallRoleDetail> {
    Ok(OnCallRoleDetail {
        role: role_view(&rs.role),
        schedules: rs.schedules.iter().map(|(s, o)| schedule_view(key, s, o)).collect::<Result<_, _>>()?,
        now: holders(&n.now),
        next: next_view(n),
    })
}

/// One on-call role: its schedules with their overrides, and who is on call now and next.
#[utoipa::path(get, path = "/api/v1/oncall/{role}", tag = "oncall", security(("bearer" = [])),
    params(("role" = String, Path, description = "The role's key")),
    responses((status = 200, body = OnCallRoleDetail), (status = 404, body = ErrorBody)))]
pub async fn role(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<OnCallRoleDetail>> {
    let (rs, n) = state.services.oncall.role(&p, &key).await?;
    Ok(Json(detail(&key, &rs, &n)?))
}

/// Change an on-call role's name, kind or department (`schedule.manage`).
#[utoipa::path(patch, path = "/api/v1/oncall/{role}", tag = "oncall", security(("bearer" = [])),
    params(("role" = String, Path)), request_body = UpdateOnCallRole,
    responses((status = 200, body = OnCallRoleView), (status = 400, description = "invalid_oncall_role", body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_role(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(key): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateOnCallRole>,
) -> ApiResult<Json<OnCallRoleView>> {
    let role = state.services.oncall.update_role(&p, &key, req.name, req.kind.map(kind_of), req.department).await?;
    Ok(Json(role_view(&role)))
}

async fn one_schedule(
    state: &AppState,
    p: &medhub_service::Principal,
    key: &str,
    id: ScheduleId,
) -> ApiResult<ScheduleView> {
    let (rs, _) = state.services.oncall.role(p, key).await?;
    let (s, o) = rs.schedules.iter().find(|(s, _)| s.id == id).ok_or_else(|| ApiError::code(ErrorCode::NotFound))?;
    schedule_view(key, s, o)
}

/// Add a schedule to an on-call role (`schedule.manage`): an IANA zone and rotations with
/// local hand-over times.
#[utoipa::path(post, path = "/api/v1/oncall/{role}/schedules", tag = "oncall", security(("bearer" = [])),
    params(("role" = String, Path)), request_body = ScheduleSpec,
    responses((status = 201, body = ScheduleView),
              (status = 400, description = "invalid_schedule, invalid_rotation, unknown_time_zone, subsecond_time or unknown_person", body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_schedule(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(key): ApiPath<String>,
    ApiJson(req): ApiJson<ScheduleSpec>,
) -> ApiResult<(StatusCode, Json<ScheduleView>)> {
    let s = state.services.oncall.create_schedule(&p, &key, &req.name, &req.time_zone, &req.rotations).await?;
    Ok((StatusCode::CREATED, Json(schedule_view(&key, &s, &[])?)))
}

/// Replace a schedule's name, zone and rotations (`schedule.manage`); its overrides stay.
#[utoipa::path(put, path = "/api/v1/oncall/{role}/schedules/{id}", tag = "oncall", security(("bearer" = [])),
    params(("role" = String, Path), ("id" = Uuid, Path)), request_body = ScheduleSpec,
    responses((status = 200, body = ScheduleView),
              (status = 400, description = "invalid_schedule, invalid_rotation, unknown_time_zone, subsecond_time or unknown_person", body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_schedule(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath((key, id)): ApiPath<(String, Uuid)>,
    ApiJson(req): ApiJson<ScheduleSpec>,
) -> ApiResult<Json<ScheduleView>> {
    let id = ScheduleId::from_uuid(id);
    state.services.oncall.update_schedule(&p, &key, id, &req.name, &req.time_zone, &req.rotations).await?;
    Ok(Json(one_schedule(&state, &p, &key, id).await?))
}

/// Delete a schedule and its overrides (`schedule.manage`).
#[utoipa::path(delete, path = "/api/v1/oncall/{role}/schedules/{id}", tag = "oncall", security(("bearer" = [])),
    params(("role" = String, Path), ("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_schedule(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath((key, id)): ApiPath<(String, Uuid)>,
) -> ApiResult<StatusCode> {
    state.services.oncall.delete_schedule(&p, &key, ScheduleId::from_uuid(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Put someone on call for an interval (`schedule.manage`): in place of `replaces` wherever a
/// rotation has them on call, or in addition.
#[utoipa::path(post, path = "/api/v1/oncall/{role}/schedules/{id}/overrides", tag = "oncall", security(("bearer" = [])),
    params(("role" = String, Path), ("id" = Uuid, Path)), request_body = CreateOverride,
    responses((status = 201, body = OverrideView),
              (status = 400, description = "invalid_override, subsecond_time or unknown_person", body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "overlapping_overrides", body = ErrorBody)))]
pub async fn add_override(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath((key, id)): ApiPath<(String, Uuid)>,
    ApiJson(req): ApiJson<CreateOverride>,
) -> ApiResult<(StatusCode, Json<OverrideView>)> {
    let o = state
        .services
        .oncall
        .add_override(
            &p,
            &key,
            ScheduleId::from_uuid(id),
            NewOverride {
                user: UserId::from_uuid(req.user_id),
                start: req.start,
                end: req.end,
                replaces: req.replaces.map(UserId::from_uuid),
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(override_view(&o))))
}

/// Remove an override (`schedule.manage`).
#[utoipa::path(delete, path = "/api/v1/oncall/{role}/schedules/{id}/overrides/{override_id}", tag = "oncall",
    security(("bearer" = [])), params(("role" = String, Path), ("id" = Uuid, Path), ("override_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_override(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath((key, id, override_id)): ApiPath<(String, Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    state
        .services
        .oncall
        .remove_override(&p, &key, ScheduleId::from_uuid(id), OverrideId::from_uuid(override_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Swap two rotation shifts (`schedule.manage`), named by layer and start as the timeline
/// lists them: each holder takes the other's shift. Stored as two replacing overrides.
#[utoipa::path(post, path = "/api/v1/oncall/{role}/schedules/{id}/swaps", tag = "oncall", security(("bearer" = [])),
    params(("role" = String, Path), ("id" = Uuid, Path)), request_body = SwapRequest,
    responses((status = 201, body = Vec<OverrideView>),
              (status = 400, description = "invalid_swap", body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "overlapping_overrides", body = ErrorBody)))]
pub async fn swap(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath((key, id)): ApiPath<(String, Uuid)>,
    ApiJson(req): ApiJson<SwapRequest>,
) -> ApiResult<(StatusCode, Json<Vec<OverrideView>>)> {
    let pair = state
        .services
        .oncall
        .swap(
            &p,
            &key,
            ScheduleId::from_uuid(id),
            (req.first.rotation, req.first.start),
            (req.second.rotation, req.second.start),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(pair.iter().map(override_view).collect())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct IntervalQuery {
    /// Start (RFC 3339; default now).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<Timestamp>,
    /// End, exclusive (default: a week after `from` for the timeline, 31 days for an export,
    /// 400 days for an import).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<Timestamp>,
    /// Which of the role's schedules (needed when it has several; calendar routes only).
    #[param(value_type = Option<Uuid>)]
    schedule: Option<Uuid>,
}

impl IntervalQuery {
    fn window(&self, now: Timestamp, default: SignedDuration) -> (Timestamp, Timestamp) {
        let from = self.from.unwrap_or(now);
        (from, self.to.unwrap_or_else(|| from.checked_add(default).unwrap_or(Timestamp::MAX)))
    }
}

/// The role's effective timeline over `[from, to)`: every shift of its schedules after
/// overrides, whole (the first may start before `from`), by start. A day across a
/// daylight-saving change shows its true length (23 or 25 hours for a daily hand-over).
#[utoipa::path(get, path = "/api/v1/oncall/{role}/shifts", tag = "oncall", security(("bearer" = [])),
    params(("role" = String, Path), IntervalQuery),
    responses((status = 200, body = ShiftList),
              (status = 400, description = "invalid_interval", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn shifts(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<IntervalQuery>,
) -> ApiResult<Json<ShiftList>> {
    let (from, to) = q.window(state.services.clock.now(), DEFAULT_TIMELINE);
    let list = state.services.oncall.shifts(&p, &key, from, to).await?;
    Ok(Json(ShiftList {
        role: key,
        from,
        to,
        shifts: list
            .into_iter()
            .map(|t| ShiftView {
                schedule_id: t.schedule.as_uuid(),
                user_id: t.shift.user.as_uuid(),
                display_name: t.display_name,
                start: t.shift.start,
                end: t.shift.end,
                source: SourceView::from(t.shift.source),
            })
            .collect(),
    }))
}

/// The shifts of one of the role's schedules as an iCalendar (RFC 5545) file, times in UTC,
/// for calendar clients and pager systems.
#[utoipa::path(get, path = "/api/v1/oncall/{role}/calendar.ics", tag = "oncall", security(("bearer" = [])),
    params(("role" = String, Path), IntervalQuery),
    responses((status = 200, content_type = "text/calendar", body = String),
              (status = 400, description = "invalid_interval or schedule_required", body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, description = "no_schedule", body = ErrorBody)))]
pub async fn export_calendar(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<IntervalQuery>,
) -> ApiResult<Response> {
    let (from, to) = q.window(state.services.clock.now(), DEFAULT_EXPORT);
    let text = state.services.oncall.export(&p, &key, q.schedule.map(ScheduleId::from_uuid), from, to).await?;
    let mut resp = text.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/calendar; charset=utf-8"));
    // The key is `[a-z0-9-]`, so it needs no quoting beyond the quotes.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{key}.ics\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// Import another rostering system's calendar into one of the role's schedules
/// (`schedule.manage`; body `text/calendar`, at most 4 MiB). Events starting in
/// `[from, to)` become overrides adding their attendees, in place of the overrides an earlier
/// import put in that window. All or nothing: an attendee who is not a user of your
/// organization refuses the whole import (`422 unknown_attendees`, with the lines).
#[utoipa::path(post, path = "/api/v1/oncall/{role}/calendar", tag = "oncall", security(("bearer" = [])),
    params(("role" = String, Path), IntervalQuery),
    request_body(content = String, content_type = "text/calendar"),
    responses((status = 200, body = ImportReport),
              (status = 400, description = "invalid_ical, invalid_interval or schedule_required", body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "no_schedule or overlapping_overrides", body = ErrorBody),
              (status = 413, description = "payload_too_large", body = ErrorBody),
              (status = 415, description = "unsupported_media_type", body = ErrorBody),
              (status = 422, description = "unknown_attendees", body = ErrorBody)))]
pub async fn import_calendar(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<IntervalQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ImportReport>> {
    let calendar = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("text/calendar")));
    if !calendar {
        return Err(ApiError::code(ErrorCode::UnsupportedMediaType));
    }
    let bytes = axum::body::to_bytes(body, medhub_wire::ical::MAX_ICAL_BYTES)
        .await
        .map_err(|_| ApiError::code(ErrorCode::PayloadTooLarge))?;
    let (from, to) = q.window(state.services.clock.now(), DEFAULT_IMPORT);
    let r = state.services.oncall.import(&p, &key, q.schedule.map(ScheduleId::from_uuid), &bytes, from, to).await?;
    Ok(Json(ImportReport { schedule_id: r.schedule.as_uuid(), from, to, removed: r.removed, added: r.added }))
}

/// Send a message to whoever holds the on-call role now (`message.send`). The holders are
/// resolved at send time; the message goes into the conversation between you and the role
/// (created the first time, titled with the role's name; the current holders are added); the
/// resolution is recorded. Nobody on call: `409 nobody_on_call`, and nothing is sent.
#[utoipa::path(post, path = "/api/v1/oncall/{role}/messages", tag = "oncall", security(("bearer" = [])),
    params(("role" = String, Path)), request_body = RoleMessageRequest,
    responses((status = 201, body = RoleMessageResponse), (status = 200, description = "a resend", body = RoleMessageResponse),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "nobody_on_call, nobody_else_on_call or idempotency_key_reused", body = ErrorBody)))]
pub async fn send_to_role(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(key): ApiPath<String>,
    ApiJson(req): ApiJson<RoleMessageRequest>,
) -> ApiResult<(StatusCode, Json<RoleMessageResponse>)> {
    let sent = state.services.oncall.send_to_role(&p, &key, &req.client_txn_id, req.body, req.priority.into()).await?;
    let status = if sent.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((
        status,
        Json(RoleMessageResponse {
            message: MessageView::from(&sent.message),
            conversation_id: sent.conversation.as_uuid(),
            holders: sent.holders,
            duplicate: sent.duplicate,
        }),
    ))
}

/// The organization's coverages that have not ended.
#[utoipa::path(get, path = "/api/v1/coverages", tag = "oncall", security(("bearer" = [])),
    responses((status = 200, body = CoverageList), (status = 403, body = ErrorBody)))]
pub async fn coverages(State(state): State<AppState>, Authed(p): Authed) -> ApiResult<Json<CoverageList>> {
    let list = state.services.oncall.coverage_list(&p).await?;
    Ok(Json(CoverageList { coverages: list.iter().map(coverage_view).collect() }))
}

/// While someone is away, someone else takes what is addressed to them, through every
/// schedule (`schedule.manage`).
#[utoipa::path(post, path = "/api/v1/coverages", tag = "oncall", security(("bearer" = [])),
    request_body = CreateCoverage,
    responses((status = 201, body = CoverageView),
              (status = 400, description = "invalid_coverage, subsecond_time or unknown_person", body = ErrorBody),
              (status = 403, body = ErrorBody),
              (status = 409, description = "coverage_conflict", body = ErrorBody)))]
pub async fn add_coverage(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(req): ApiJson<CreateCoverage>,
) -> ApiResult<(StatusCode, Json<CoverageView>)> {
    let c = state
        .services
        .oncall
        .add_coverage(&p, UserId::from_uuid(req.covered_user_id), UserId::from_uuid(req.by_user_id), req.start, req.end)
        .await?;
    Ok((StatusCode::CREATED, Json(coverage_view(&c))))
}

/// Remove a coverage (`schedule.manage`).
#[utoipa::path(delete, path = "/api/v1/coverages/{id}", tag = "oncall", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_coverage(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    state.services.oncall.remove_coverage(&p, CoverageId::from_uuid(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
