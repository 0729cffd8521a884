//! The permission matrix: every route and every frame type, called by every kind of caller
//! (anonymous, a pending sign-in, a deactivated user, a user of another organization, and a
//! user of each role of the shipped catalogue) against a real server, must be allowed or
//! denied exactly as `permissions.csv` says. A route or frame missing from the CSV (or listed
//! there but not in the authorization table) fails, and so does a catalogue role without its
//! column.
//!
//! The other organization's user holds every role of the catalogue, and is called with real
//! ids of the first organization's objects (a conversation about a patient, a message in it,
//! a user, her session, a break-glass grant and a legal hold on the conversation): `hidden` means the answer
//! is exactly the one for a missing object.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use medhub_core::UserId;
use medhub_core::model::SystemRole;
use medhub_service::auth::NewUser;
use medhub_testkit::{Settings, TestServer, TestUser, WsClient, each_backend};
use reqwest::Method;
use serde_json::{Value, json};

/// The callers that are not a role of the catalogue; the CSV's other columns are role keys.
const FIXED_CALLERS: [&str; 4] = ["anonymous", "pending", "deactivated", OTHER_ORG];
/// A user of another organization holding every role, probing the first one's objects.
const OTHER_ORG: &str = "other_org";
const PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Past authentication and authorization.
    Allow,
    /// 401, or 403 for a missing permission or sign-in step.
    Deny,
    /// Answered as if the object did not exist (404 `not_found`; for `presence_subscribe`,
    /// a state without the user). Only in the other organization's column.
    Hidden,
}

struct Row {
    kind: String,
    method: String,
    target: String,
    expect: Vec<Expect>,
}

/// The caller columns, in order.
fn callers() -> Vec<String> {
    let text = include_str!("permissions.csv");
    let header = text.lines().find(|l| !l.starts_with('#') && !l.trim().is_empty()).unwrap();
    header.split(',').skip(3).map(str::to_owned).collect()
}

fn matrix() -> Vec<Row> {
    let text = include_str!("permissions.csv");
    let columns = callers().len();
    let mut lines = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    lines.next();
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 3 + columns, "{l}");
            let expect = f[3..]
                .iter()
                .zip(callers())
                .map(|(v, caller)| match *v {
                    "allow" => Expect::Allow,
                    "deny" => Expect::Deny,
                    "hidden" if caller == OTHER_ORG => Expect::Hidden,
                    other => panic!("{other:?} for {caller} in {l}"),
                })
                .collect();
            Row { kind: f[0].into(), method: f[1].into(), target: f[2].into(), expect }
        })
        .collect()
}

#[test]
fn the_csv_has_a_column_for_every_role_of_the_catalogue() {
    let callers = callers();
    assert_eq!(callers[..FIXED_CALLERS.len()], FIXED_CALLERS);
    let mut in_csv: Vec<String> = callers[FIXED_CALLERS.len()..].to_vec();
    let mut catalogue: Vec<String> = medhub_core::authz::builtin_roles().into_iter().map(|r| r.key).collect();
    in_csv.sort();
    catalogue.sort();
    assert_eq!(in_csv, catalogue);
}

#[test]
fn the_csv_lists_exactly_the_routes_and_frames_of_the_authorization_table() {
    let rows = matrix();
    let in_csv: BTreeSet<(String, String)> =
        rows.iter().filter(|r| r.kind == "route").map(|r| (r.method.clone(), r.target.clone())).collect();
    let in_table: BTreeSet<(String, String)> =
        medhub_api::authz::ROUTES.iter().map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(in_csv.difference(&in_table).collect::<Vec<_>>(), Vec::<&(String, String)>::new(), "in the CSV only");
    assert_eq!(
        in_table.difference(&in_csv).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "missing from the CSV"
    );
    let frames_csv: BTreeSet<&str> = rows.iter().filter(|r| r.kind == "frame").map(|r| r.target.as_str()).collect();
    let frames_table: BTreeSet<&str> = medhub_api::authz::FRAMES.iter().map(|(t, _)| *t).collect();
    assert_eq!(frames_csv, frames_table);
    // And the table covers every frame type the protocol declares.
    for ty in ["hello", "send", "edit", "recall", "receipt", "ack", "typing", "presence_subscribe", "ping"] {
        assert!(frames_table.contains(ty), "{ty}");
    }
}

struct Callers {
    /// One user per role column, holding exactly that role.
    roles: std::collections::HashMap<String, TestUser>,
    pending_name: String,
    gone: TestUser,
    /// Of another organization, holding every role.
    outsider: TestUser,
    /// Real objects of the first organization.
    ids: Ids,
}

/// Ids to put into paths: real objects of the first organization for the other
/// organization's caller, fresh random ones for everybody else.
#[derive(Clone)]
struct Ids {
    conversation: String,
    message: String,
    user: String,
    session: String,
    grant: String,
    hold: String,
    /// An on-call role's key, one of its schedules with an override, and a coverage.
    oncall_role: String,
    schedule: String,
    override_id: String,
    coverage: String,
}

impl Ids {
    fn random() -> Self {
        let r = || uuid::Uuid::now_v7().to_string();
        Ids {
            conversation: r(),
            message: r(),
            user: r(),
            session: r(),
            grant: r(),
            hold: r(),
            oncall_role: "no-such-role".into(),
            schedule: r(),
            override_id: r(),
            coverage: r(),
        }
    }
}

impl Callers {
    async fn setup(s: &TestServer) -> Self {
        let mut roles = std::collections::HashMap::new();
        for key in callers().into_iter().skip(FIXED_CALLERS.len()) {
            let system = if key == medhub_core::authz::ADMINISTRATOR { SystemRole::Admin } else { SystemRole::User };
            let u = s.user_with_role(&format!("m.{key}"), system).await;
            s.set_roles(&u, &[key.as_str()]).await;
            roles.insert(key, u);
        }
        let auth = s.services.auth.clone();
        s.on_server(async move {
            auth.create_user(NewUser {
                username: "m.pending".into(),
                display_name: "Pending".into(),
                role: SystemRole::User,
                password: Some(PASSWORD.into()),
                must_change_password: false,
            })
            .await
            .unwrap();
        })
        .await;
        // Enrol an authenticator once, so later sign-ins stop at `mfa_required`.
        s.sign_in("m.pending", PASSWORD, None).await;
        let gone = s.user("m.gone").await;
        let auth = s.services.auth.clone();
        let id = UserId::from_uuid(gone.id);
        s.on_server(async move { auth.set_active(None, id, false).await.unwrap() }).await;

        // The first organization's objects: a conversation about patient pat-1 with a
        // message, its member, and her session.
        let target = s.user("m.target").await;
        let owner = &roles[medhub_core::authz::ADMINISTRATOR];
        let body =
            json!({"kind": "group", "title": "Bed 1", "members": [{"user_id": target.id}], "patient_ref": "pat-1"});
        let (status, conv) = s.post("/api/v1/conversations", owner, body).await;
        assert_eq!(status, 201, "{conv}");
        let conversation = conv["conversation"]["id"].as_str().unwrap().to_owned();
        let (status, sent) = s
            .post(
                &format!("/api/v1/conversations/{conversation}/messages"),
                &target,
                json!({"client_txn_id": "m1", "body": "K+ 6.1"}),
            )
            .await;
        assert_eq!(status, 201, "{sent}");
        let (status, me) = s.get("/api/v1/me", &target).await;
        assert_eq!(status, 200, "{me}");
        let reason = json!({"reason": "Patient crashing, attending needs the thread now"});
        let attending = &roles["attending_physician"];
        let (status, grant) =
            s.post(&format!("/api/v1/conversations/{conversation}/break-glass"), attending, reason).await;
        assert_eq!(status, 201, "{grant}");
        let officer = &roles["compliance_officer"];
        let scope = json!({"kind": "conversation", "conversation_id": conversation});
        let hold_body = json!({"scope": scope, "reason": "Matter 2026-7: preserve the bed 1 thread"});
        let (status, hold) = s.post("/api/v1/legal-holds", officer, hold_body).await;
        assert_eq!(status, 201, "{hold}");
        // An on-call role with a schedule, an override and a coverage.
        let role = json!({"key": "perm-oncall", "name": "Permissions on-call", "kind": "team"});
        let (status, body) = s.post("/api/v1/oncall", owner, role).await;
        assert_eq!(status, 201, "{body}");
        let rotation = json!({"participants": [target.id], "start": "2026-01-05T08:00:00", "kind": "daily"});
        let spec = json!({"name": "Primary", "time_zone": "Europe/Berlin", "rotations": [rotation]});
        let (status, schedule) = s.post("/api/v1/oncall/perm-oncall/schedules", owner, spec).await;
        assert_eq!(status, 201, "{schedule}");
        let schedule = schedule["id"].as_str().unwrap().to_owned();
        let cover = json!({"user_id": owner.id, "start": "2098-01-01T00:00:00Z", "end": "2098-01-02T00:00:00Z"});
        let (status, o) =
            s.post(&format!("/api/v1/oncall/perm-oncall/schedules/{schedule}/overrides"), owner, cover).await;
        assert_eq!(status, 201, "{o}");
        let away = json!({"covered_user_id": target.id, "by_user_id": owner.id, "start": "2098-01-01T00:00:00Z", "end": "2098-01-02T00:00:00Z"});
        let (status, c) = s.post("/api/v1/coverages", owner, away).await;
        assert_eq!(status, 201, "{c}");
        let ids = Ids {
            conversation,
            message: sent["message"]["id"].as_str().unwrap().to_owned(),
            user: target.id.to_string(),
            session: me["session_id"].as_str().unwrap().to_owned(),
            grant: grant["id"].as_str().unwrap().to_owned(),
            hold: hold["id"].as_str().unwrap().to_owned(),
            oncall_role: "perm-oncall".into(),
            schedule,
            override_id: o["id"].as_str().unwrap().to_owned(),
            coverage: c["id"].as_str().unwrap().to_owned(),
        };

        let other = s.tenant("Other Hospital", "other.root").await;
        let outsider = s.user_in_org(Some(other), "m.outsider", SystemRole::Admin).await;
        let every: Vec<String> = medhub_core::authz::builtin_roles().into_iter().map(|r| r.key).collect();
        s.set_roles(&outsider, &every.iter().map(String::as_str).collect::<Vec<_>>()).await;
        Callers { roles, pending_name: "m.pending".into(), gone, outsider, ids }
    }

    /// The ids a caller's requests carry.
    fn ids(&self, caller: &str) -> Ids {
        if caller == OTHER_ORG { self.ids.clone() } else { Ids::random() }
    }

    /// The caller's token for one request; sessions are fresh, because some calls end them.
    async fn token(&self, s: &TestServer, caller: &str) -> Option<String> {
        match caller {
            "anonymous" => None,
            "deactivated" => Some(self.gone.token.clone()),
            OTHER_ORG => Some(s.new_session(&self.outsider).await.token),
            "pending" => {
                let (status, body) = s.login(&self.pending_name, PASSWORD).await;
                assert_eq!((status, &body["state"]), (200, &json!("mfa_required")), "{body}");
                Some(body["token"].as_str().unwrap().to_owned())
            }
            role => Some(s.new_session(&self.roles[role]).await.token),
        }
    }
}

fn concrete(path: &str, ids: &Ids) -> String {
    let id = if path.starts_with("/api/v1/conversations/") {
        &ids.conversation
    } else if path.starts_with("/api/v1/messages/") {
        &ids.message
    } else if path.starts_with("/api/v1/admin/users/") || path.starts_with("/api/v1/users/") {
        &ids.user
    } else if path.contains("/sessions/") {
        &ids.session
    } else if path.starts_with("/api/v1/break-glass/") {
        &ids.grant
    } else if path.starts_with("/api/v1/legal-holds/") {
        &ids.hold
    } else if path.starts_with("/api/v1/oncall/") {
        &ids.schedule
    } else if path.starts_with("/api/v1/coverages/") {
        &ids.coverage
    } else {
        &uuid::Uuid::now_v7().to_string()
    };
    path.replace("{id}", id)
        .replace("{user_id}", &ids.user)
        .replace("{patient_ref}", "pat-1")
        .replace("{kind}", "break-glass")
        .replace("{role}", &ids.oncall_role)
        .replace("{override_id}", &ids.override_id)
        .replace("{priority}", "critical")
}

/// A well-formed body, so that an allowed call reaches the object it names.
fn body(method: &Method, path: &str, ids: &Ids) -> Option<Value> {
    let b = match (method.as_str(), path) {
        ("PATCH", "/api/v1/admin/users/{id}") => json!({"active": false}),
        ("PUT", "/api/v1/admin/users/{id}/roles") => json!({"roles": ["observer"]}),
        ("PATCH", "/api/v1/conversations/{id}") => json!({"title": "Renamed"}),
        ("POST", "/api/v1/conversations/{id}/members") => json!({"user_id": ids.user}),
        ("PATCH", "/api/v1/conversations/{id}/members/{user_id}") => json!({"role": "read_only"}),
        ("POST", "/api/v1/conversations/{id}/messages") => json!({"client_txn_id": "p1", "body": "x"}),
        ("POST", "/api/v1/conversations/{id}/receipts") => json!({"read_seq": 1}),
        ("PATCH", "/api/v1/messages/{id}") => json!({"body": "y"}),
        ("POST", "/api/v1/messages/{id}/ack") => json!({"response": {"kind": "accept"}}),
        ("POST", "/api/v1/legal-holds/{id}/lift") => json!({"reason": "Matter closed, hold no longer needed"}),
        ("POST", "/api/v1/conversations/{id}/break-glass") => {
            json!({"reason": "Patient unresponsive, the attending is in theatre"})
        }
        ("POST", "/api/v1/oncall/{role}/schedules") | ("PUT", "/api/v1/oncall/{role}/schedules/{id}") => {
            json!({"name": "Night", "time_zone": "Europe/Berlin", "rotations": []})
        }
        ("POST", "/api/v1/oncall/{role}/schedules/{id}/overrides") => {
            json!({"user_id": ids.user, "start": "2099-01-01T00:00:00Z", "end": "2099-01-02T00:00:00Z"})
        }
        ("POST", "/api/v1/oncall/{role}/schedules/{id}/swaps") => json!({
            "first": {"rotation": 0, "start": "2099-01-01T07:00:00Z"},
            "second": {"rotation": 0, "start": "2099-01-02T07:00:00Z"}
        }),
        ("POST", "/api/v1/oncall/{role}/messages") => json!({"client_txn_id": "p1", "body": "x"}),
        ("POST" | "PATCH" | "PUT", _) => json!({}),
        _ => return None,
    };
    Some(b)
}

/// What an answer shows: past authentication and authorization, or not, or (for calls naming
/// an object) as if the object did not exist.
fn outcome(status: u16, body: &Value, expect: Expect) -> Expect {
    let code = body["error"]["code"].as_str().unwrap_or("");
    let denied_403 = ["forbidden", "mfa_required", "mfa_enrollment_required", "password_change_required"];
    if status == 401 || (status == 403 && denied_403.contains(&code)) {
        Expect::Deny
    } else if expect == Expect::Hidden && status == 404 && code == "not_found" {
        Expect::Hidden
    } else {
        Expect::Allow
    }
}

async fn call_route(s: &TestServer, method: &str, path: &str, token: Option<&str>, ids: &Ids) -> (u16, Value) {
    let method: Method = method.parse().unwrap();
    let mut req = reqwest::Client::new().request(method.clone(), s.url(&concrete(path, ids)));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if path == "/api/v1/oncall/{role}/calendar" {
        // An import takes a calendar, not JSON.
        let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nEND:VCALENDAR\r\n";
        req = req.header("content-type", "text/calendar").body(ics);
    } else if let Some(b) = body(&method, path, ids) {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

fn frame(ty: &str, ids: &Ids) -> Value {
    let (conv, msg) = (&ids.conversation, &ids.message);
    match ty {
        "hello" => json!({"type": "hello", "ticket": "mht_again"}),
        "ping" => json!({"type": "ping"}),
        "send" => json!({"type": "send", "conversation_id": conv, "client_txn_id": "t", "body": "x"}),
        "edit" => json!({"type": "edit", "message_id": msg, "body": "x"}),
        "recall" => json!({"type": "recall", "message_id": msg}),
        "receipt" => json!({"type": "receipt", "conversation_id": conv, "read_seq": 1}),
        "ack" => json!({"type": "ack", "message_id": msg, "response": {"kind": "accept"}}),
        "typing" => json!({"type": "typing", "conversation_id": conv}),
        "presence_subscribe" => json!({"type": "presence_subscribe", "user_ids": [ids.user]}),
        other => panic!("no example for frame {other}"),
    }
}

/// Sends one frame as `caller` and says what it showed.
async fn call_frame(s: &TestServer, ty: &str, token: Option<&str>, ids: &Ids) -> Expect {
    let mut c = WsClient::open(&s.ws_url()).await.unwrap();
    let ticket = match token {
        Some(t) => {
            let resp =
                reqwest::Client::new().post(s.url("/api/v1/auth/ws-ticket")).bearer_auth(t).send().await.unwrap();
            if resp.status().as_u16() != 200 {
                return Expect::Deny; // No ticket: no connection, no frames.
            }
            resp.json::<Value>().await.unwrap()["ticket"].as_str().unwrap().to_owned()
        }
        None => {
            // Anonymous: the frame is the first thing sent; anything but a valid hello closes
            // the connection with 4001.
            c.send(frame(ty, ids)).await;
            let answer = c.next().await.unwrap();
            assert_eq!(answer["type"], "error", "{ty}: {answer}");
            let closed = c.closed().await == medhub_testkit::Closed::Code(4001);
            return if closed { Expect::Deny } else { Expect::Allow };
        }
    };
    c.send(json!({"type": "hello", "ticket": ticket})).await;
    assert_eq!(c.next().await.unwrap()["type"], "ready", "{ty}");
    let mut f = frame(ty, ids);
    if ty != "typing" && ty != "hello" {
        f["id"] = json!("probe");
    }
    c.send(f).await;
    // Typing has no answer: a ping behind it shows whether an error came first.
    let pong = c.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    let backlog = c.backlog();
    let error = |code: &str| backlog.iter().any(|e| e["type"] == "error" && e["error"]["code"] == code);
    if error("forbidden") {
        Expect::Deny
    } else if error("not_found") {
        Expect::Hidden
    } else if let Some(state) = backlog.iter().find(|e| e["type"] == "presence_state") {
        let shown = state["users"].as_array().is_some_and(|u| u.iter().any(|v| v["user_id"] == json!(ids.user)));
        if shown { Expect::Allow } else { Expect::Hidden }
    } else {
        Expect::Allow
    }
}

each_backend! {
    async fn every_route_and_frame_allows_exactly_whom_the_matrix_says(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let setup = Callers::setup(&s).await;
        let mut wrong = Vec::new();
        let columns = callers();
        for row in matrix() {
            for (i, caller) in columns.iter().enumerate() {
                let token = setup.token(&s, caller).await;
                let ids = setup.ids(caller);
                if row.kind == "route" {
                    let (status, body) = call_route(&s, &row.method, &row.target, token.as_deref(), &ids).await;
                    if outcome(status, &body, row.expect[i]) != row.expect[i] {
                        wrong.push(format!("{caller}: {} {} -> {status} {body}", row.method, row.target));
                    }
                } else {
                    let got = match call_frame(&s, &row.target, token.as_deref(), &ids).await {
                        // A random id is missing for everybody: that is `allow` in the matrix.
                        Expect::Hidden if row.expect[i] != Expect::Hidden => Expect::Allow,
                        other => other,
                    };
                    if got != row.expect[i] {
                        wrong.push(format!("{caller}: frame {} {got:?}", row.target));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "not as permissions.csv says:\n{}", wrong.join("\n"));
    }
}
