//! REST handlers under `/api/v1`: everything that is not real time.

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, extract::State};
use medhub_core::model::{ConversationKind, MemberRole};
use medhub_core::patient::PatientRef;
use medhub_core::plan::Command;
use medhub_core::policy::Actor;
use medhub_core::{ConversationId, MessageId, Seq, UserId};
use medhub_store::HistoryPage;
use medhub_wire::rest::{
    AckRequest, AckResponseBody, AddMemberRequest, ChangeResponse, ConversationDetail, ConversationList,
    CreateConversationRequest, EditMessageRequest, MeResponse, MessagePage, MessageResponse, MessageStatus,
    ReceiptRequest, ReceiptResponse, RevisionList, RevisionView, SendMessageRequest, SendMessageResponse,
    SetRoleRequest, UpdateConversationRequest, UserList,
};
use medhub_wire::views::{AckView, ConversationView, MemberView, MessageView, RecipientStatusView, UserView};
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
        .route("/api/v1/me", get(me))
        .route("/api/v1/users", get(list_users))
        .route("/api/v1/users/{id}", get(get_user))
        .route("/api/v1/conversations", get(list_conversations).post(create_conversation))
        .route("/api/v1/conversations/{id}", get(get_conversation).patch(update_conversation))
        .route("/api/v1/conversations/{id}/members", post(add_member))
        .route("/api/v1/conversations/{id}/members/{user_id}", patch(set_member_role).delete(remove_member))
        .route("/api/v1/conversations/{id}/messages", get(history).post(send_message))
        .route("/api/v1/conversations/{id}/receipts", post(receipt))
        .route("/api/v1/conversations/{id}/typing", post(typing))
        .route("/api/v1/messages/{id}", get(get_message).patch(edit_message))
        .route("/api/v1/messages/{id}/recall", post(recall_message))
        .route("/api/v1/messages/{id}/revisions", get(revisions))
        .route("/api/v1/messages/{id}/ack", post(ack_message))
        .route("/api/v1/messages/{id}/status", get(message_status))
}

/// The signed-in user and session.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub async fn me(Authed(p): Authed) -> ApiResult<Json<MeResponse>> {
    p.require_active()?;
    Ok(Json(MeResponse {
        user: UserView::from(&p.user),
        session_id: p.session.id.as_uuid(),
        expires_at: p.session.expires_at,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UserListQuery {
    /// Return users whose username sorts after this one (paging).
    after: Option<String>,
    /// At most this many (1-500, default 100).
    limit: Option<u32>,
}

/// The user directory of the caller's organization, by username.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])), params(UserListQuery),
    responses((status = 200, body = UserList), (status = 401, body = ErrorBody)))]
pub async fn list_users(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiQuery(q): ApiQuery<UserListQuery>,
) -> ApiResult<Json<UserList>> {
    p.require_active()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::with_message(ErrorCode::InvalidRequest, "limit must be between 1 and 500"));
    }
    let store = &state.services.store;
    let users =
        store.list_users(p.user.org, q.after.as_deref(), limit).await.map_err(medhub_service::ServiceError::from)?;
    Ok(Json(UserList { users: users.iter().map(UserView::from).collect() }))
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = UserView), (status = 404, body = ErrorBody)))]
pub async fn get_user(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<UserView>> {
    p.require_active()?;
    let user = state.services.auth.user_in_org(&p, UserId::from_uuid(id)).await?;
    Ok(Json(UserView::from(&user)))
}

/// The caller's conversations, with unread counts.
#[utoipa::path(get, path = "/api/v1/conversations", tag = "conversations", security(("bearer" = [])),
    responses((status = 200, body = ConversationList), (status = 401, body = ErrorBody)))]
pub async fn list_conversations(State(state): State<AppState>, Authed(p): Authed) -> ApiResult<Json<ConversationList>> {
    let views = state.services.messaging.conversations(&p).await?;
    Ok(Json(ConversationList {
        conversations: views.iter().map(|v| ConversationView::new(&v.conversation, &v.me, v.unread)).collect(),
    }))
}

async fn detail(state: &AppState, p: &medhub_service::Principal, id: ConversationId) -> ApiResult<ConversationDetail> {
    let (conv, me, access, members) = state.services.messaging.conversation(p, id).await?;
    let view = match me {
        Some(me) => {
            let unread = state
                .services
                .messaging
                .conversations(p)
                .await?
                .into_iter()
                .find(|v| v.conversation.id == id)
                .map(|v| v.unread)
                .unwrap_or(0);
            ConversationView::new(&conv, &me, unread)
        }
        None => ConversationView::for_reader(&conv, access),
    };
    Ok(ConversationDetail { conversation: view, members: members.iter().map(MemberView::from).collect() })
}

/// Create a conversation. A direct conversation that already exists between the two people is
/// returned with 200 instead of 201.
#[utoipa::path(post, path = "/api/v1/conversations", tag = "conversations", security(("bearer" = [])), request_body = CreateConversationRequest,
    responses((status = 201, body = ConversationDetail), (status = 200, body = ConversationDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_conversation(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiJson(req): ApiJson<CreateConversationRequest>,
) -> ApiResult<Response> {
    p.require_active()?;
    let members = req.members.iter().map(|m| (UserId::from_uuid(m.user_id), MemberRole::from(m.role))).collect();
    let kind: ConversationKind = req.kind.into();
    let patient =
        req.patient_ref.as_deref().map(PatientRef::parse).transpose().map_err(medhub_service::ServiceError::from)?;
    let (conv, created) =
        state.services.messaging.create_conversation_by(&p, kind, req.title, members, patient).await?;
    let body = detail(&state, &p, conv.id).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(body)).into_response())
}

/// A conversation and its members.
#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = ConversationDetail), (status = 404, body = ErrorBody)))]
pub async fn get_conversation(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<ConversationDetail>> {
    Ok(Json(detail(&state, &p, ConversationId::from_uuid(id)).await?))
}

/// Rename a group or channel (owners).
#[utoipa::path(patch, path = "/api/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = UpdateConversationRequest,
    responses((status = 200, body = ConversationDetail), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_conversation(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateConversationRequest>,
) -> ApiResult<Json<ConversationDetail>> {
    p.require_active()?;
    let id = ConversationId::from_uuid(id);
    state.services.messaging.update_conversation(Actor::User(p.user_id()), id, req.title).await?;
    Ok(Json(detail(&state, &p, id).await?))
}

/// Add a member (owners of groups and channels).
#[utoipa::path(post, path = "/api/v1/conversations/{id}/members", tag = "conversations", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = AddMemberRequest,
    responses((status = 201, body = ChangeResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_member(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<AddMemberRequest>,
) -> ApiResult<(StatusCode, Json<ChangeResponse>)> {
    p.require_active()?;
    let cmd = Command::AddMember {
        actor: Actor::User(p.user_id()),
        conversation: ConversationId::from_uuid(id),
        user: UserId::from_uuid(req.user_id),
        role: req.role.into(),
    };
    let event = state.services.messaging.change_membership_by(Some(&p), cmd).await?;
    Ok((StatusCode::CREATED, Json(ChangeResponse { cursor: event.map(|e| e.get()) })))
}

/// Change a member's role (owners).
#[utoipa::path(patch, path = "/api/v1/conversations/{id}/members/{user_id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path), ("user_id" = Uuid, Path)), request_body = SetRoleRequest,
    responses((status = 200, body = ChangeResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn set_member_role(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath((id, user)): ApiPath<(Uuid, Uuid)>,
    ApiJson(req): ApiJson<SetRoleRequest>,
) -> ApiResult<Json<ChangeResponse>> {
    p.require_active()?;
    let cmd = Command::SetMemberRole {
        actor: Actor::User(p.user_id()),
        conversation: ConversationId::from_uuid(id),
        user: UserId::from_uuid(user),
        role: req.role.into(),
    };
    let event = state.services.messaging.change_membership_by(Some(&p), cmd).await?;
    Ok(Json(ChangeResponse { cursor: event.map(|e| e.get()) }))
}

/// Remove a member (owners), or leave (your own id).
#[utoipa::path(delete, path = "/api/v1/conversations/{id}/members/{user_id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 200, body = ChangeResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove_member(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath((id, user)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<Json<ChangeResponse>> {
    p.require_active()?;
    let cmd = Command::RemoveMember {
        actor: Actor::User(p.user_id()),
        conversation: ConversationId::from_uuid(id),
        user: UserId::from_uuid(user),
    };
    let event = state.services.messaging.change_membership_by(Some(&p), cmd).await?;
    Ok(Json(ChangeResponse { cursor: event.map(|e| e.get()) }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Messages with a lower sequence number (older), newest `limit` of them.
    before: Option<u64>,
    /// Messages with a higher sequence number (newer), oldest `limit` of them.
    after: Option<u64>,
    /// Page size, 1-200 (default 50). Without `before`/`after`: the newest messages.
    limit: Option<u32>,
}

/// A page of history, ascending by sequence number. Recalled messages have a `null` body.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(("id" = Uuid, Path), HistoryQuery),
    responses((status = 200, body = MessagePage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<MessagePage>> {
    let page = match (q.before, q.after) {
        (Some(_), Some(_)) => {
            return Err(ApiError::with_message(ErrorCode::InvalidRequest, "give before or after, not both"));
        }
        (Some(b), None) => HistoryPage::Before(Seq::new(b)),
        (None, Some(a)) => HistoryPage::After(Seq::new(a)),
        (None, None) => HistoryPage::Latest,
    };
    let (messages, has_more) =
        state.services.messaging.history(&p, ConversationId::from_uuid(id), page, q.limit.unwrap_or(50)).await?;
    Ok(Json(MessagePage { messages: messages.iter().map(MessageView::from).collect(), has_more }))
}

/// Send a message (the REST twin of the `send` frame, for long-polling clients). 201 when
/// created, 200 when this `client_txn_id` was already committed.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = SendMessageRequest,
    responses((status = 201, body = SendMessageResponse), (status = 200, body = SendMessageResponse),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn send_message(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<SendMessageRequest>,
) -> ApiResult<(StatusCode, Json<SendMessageResponse>)> {
    let (message, duplicate) = state
        .services
        .messaging
        .send(
            &p,
            ConversationId::from_uuid(id),
            &req.client_txn_id,
            req.body,
            req.priority.into(),
            req.reply_to.map(MessageId::from_uuid),
        )
        .await?;
    let status = if duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(SendMessageResponse { message: MessageView::from(&message), duplicate })))
}

/// Move the caller's delivered and read watermarks (they only move forward).
#[utoipa::path(post, path = "/api/v1/conversations/{id}/receipts", tag = "messages", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = ReceiptRequest,
    responses((status = 200, body = ReceiptResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn receipt(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<ReceiptRequest>,
) -> ApiResult<Json<ReceiptResponse>> {
    let (d, r) = state
        .services
        .messaging
        .receipt(&p, ConversationId::from_uuid(id), req.delivered_seq.map(Seq::new), req.read_seq.map(Seq::new))
        .await?;
    Ok(Json(ReceiptResponse { delivered_seq: d.get(), read_seq: r.get() }))
}

/// Signal "typing" (ephemeral; not delivered in channels).
#[utoipa::path(post, path = "/api/v1/conversations/{id}/typing", tag = "messages", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn typing(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    state.services.messaging.typing(&p, 0, ConversationId::from_uuid(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One message.
#[utoipa::path(get, path = "/api/v1/messages/{id}", tag = "messages", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = MessageResponse), (status = 404, body = ErrorBody)))]
pub async fn get_message(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<MessageResponse>> {
    let (m, _) = state.services.messaging.message(&p, MessageId::from_uuid(id)).await?;
    Ok(Json(MessageResponse { message: MessageView::from(&m) }))
}

/// Replace a message's text (sender only; refused once acknowledged). The old text is kept.
#[utoipa::path(patch, path = "/api/v1/messages/{id}", tag = "messages", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = EditMessageRequest,
    responses((status = 200, body = MessageResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn edit_message(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<EditMessageRequest>,
) -> ApiResult<Json<MessageResponse>> {
    let m = state.services.messaging.edit(&p, MessageId::from_uuid(id), req.body).await?;
    Ok(Json(MessageResponse { message: MessageView::from(&m) }))
}

/// Recall a message (sender or owner): members no longer see its text; it is kept for audit.
#[utoipa::path(post, path = "/api/v1/messages/{id}/recall", tag = "messages", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = MessageResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn recall_message(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<MessageResponse>> {
    let m = state.services.messaging.recall(Actor::User(p.user_id()), Some(&p), MessageId::from_uuid(id)).await?;
    Ok(Json(MessageResponse { message: MessageView::from(&m) }))
}

/// Every revision of a message's text, oldest first (not available once recalled).
#[utoipa::path(get, path = "/api/v1/messages/{id}/revisions", tag = "messages", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = RevisionList), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revisions(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<RevisionList>> {
    let revs = state.services.messaging.revisions(&p, MessageId::from_uuid(id)).await?;
    Ok(Json(RevisionList {
        revisions: revs
            .into_iter()
            .map(|r| RevisionView { revision: r.revision, body: r.body, written_at: r.at })
            .collect(),
    }))
}

/// Acknowledge an urgent or critical message with a typed response.
#[utoipa::path(post, path = "/api/v1/messages/{id}/ack", tag = "messages", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = AckRequest,
    responses((status = 200, body = AckResponseBody), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn ack_message(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<AckRequest>,
) -> ApiResult<Json<AckResponseBody>> {
    let ack = state.services.messaging.ack(&p, MessageId::from_uuid(id), req.response.into()).await?;
    Ok(Json(AckResponseBody { ack: AckView::from(&ack) }))
}

/// Per-recipient status of a message: sent, delivered, read or acknowledged (sender and
/// owners only).
#[utoipa::path(get, path = "/api/v1/messages/{id}/status", tag = "messages", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = MessageStatus), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn message_status(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<MessageStatus>> {
    let (m, rows) = state.services.messaging.status(&p, MessageId::from_uuid(id)).await?;
    Ok(Json(MessageStatus {
        message_id: m.id.as_uuid(),
        seq: m.seq.get(),
        requires_ack: m.priority.requires_ack(),
        recipients: rows
            .iter()
            .map(|r| RecipientStatusView::new(m.seq, r.user, r.member.as_ref(), r.ack.as_ref()))
            .collect(),
    }))
}
