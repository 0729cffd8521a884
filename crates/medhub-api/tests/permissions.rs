//! The permission matrix: every route and every frame type, called by every kind of caller
//! (anonymous, a pending sign-in, a deactivated user, and a user of each role of the shipped
//! catalogue) against a real server, must be allowed or denied exactly as `permissions.csv`
//! says. A route or frame missing from the CSV (or listed there but not in the authorization
//! table) fails, and so does a catalogue role without its column.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use medhub_core::UserId;
use medhub_core::model::SystemRole;
use medhub_service::auth::NewUser;
use medhub_testkit::{Settings, TestServer, TestUser, WsClient, each_backend};
use reqwest::Method;
use serde_json::{Value, json};

/// The callers that are not a role of the catalogue; the CSV's other columns are role keys.
const FIXED_CALLERS: [&str; 3] = ["anonymous", "pending", "deactivated"];
const PASSWORD: &str = "correct horse battery staple";

struct Row {
    kind: String,
    method: String,
    target: String,
    expect: Vec<bool>,
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
                .map(|v| match *v {
                    "allow" => true,
                    "deny" => false,
                    other => panic!("{other:?} in {l}"),
                })
                .collect();
            Row { kind: f[0].into(), method: f[1].into(), target: f[2].into(), expect }
        })
        .collect()
}

#[test]
fn the_csv_has_a_column_for_every_role_of_the_catalogue() {
    let callers = callers();
    assert_eq!(callers[..3], FIXED_CALLERS);
    let mut in_csv: Vec<String> = callers[3..].to_vec();
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
        s.on_server(async move { auth.set_active(id, false).await.unwrap() }).await;
        Callers { roles, pending_name: "m.pending".into(), gone }
    }

    /// The caller's token for one request; sessions are fresh, because some calls end them.
    async fn token(&self, s: &TestServer, caller: &str) -> Option<String> {
        match caller {
            "anonymous" => None,
            "deactivated" => Some(self.gone.token.clone()),
            "pending" => {
                let (status, body) = s.login(&self.pending_name, PASSWORD).await;
                assert_eq!((status, &body["state"]), (200, &json!("mfa_required")), "{body}");
                Some(body["token"].as_str().unwrap().to_owned())
            }
            role => Some(s.new_session(&self.roles[role]).await.token),
        }
    }
}

fn concrete(path: &str) -> String {
    path.replace("{id}", &uuid::Uuid::now_v7().to_string())
        .replace("{user_id}", &uuid::Uuid::now_v7().to_string())
        .replace("{patient_ref}", "pat-1")
}

/// Whether an answer got past authentication and authorization.
fn allowed(status: u16, body: &Value) -> bool {
    let code = body["error"]["code"].as_str().unwrap_or("");
    let denied_403 = ["forbidden", "mfa_required", "mfa_enrollment_required", "password_change_required"];
    !(status == 401 || (status == 403 && denied_403.contains(&code)))
}

async fn call_route(s: &TestServer, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let method: Method = method.parse().unwrap();
    let mut req = reqwest::Client::new().request(method.clone(), s.url(&concrete(path)));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if method == Method::POST || method == Method::PATCH {
        req = req.json(&json!({}));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

fn frame(ty: &str) -> Value {
    let id = uuid::Uuid::now_v7();
    match ty {
        "hello" => json!({"type": "hello", "ticket": "mht_again"}),
        "ping" => json!({"type": "ping"}),
        "send" => json!({"type": "send", "conversation_id": id, "client_txn_id": "t", "body": "x"}),
        "edit" => json!({"type": "edit", "message_id": id, "body": "x"}),
        "recall" => json!({"type": "recall", "message_id": id}),
        "receipt" => json!({"type": "receipt", "conversation_id": id, "read_seq": 1}),
        "ack" => json!({"type": "ack", "message_id": id, "response": {"kind": "accept"}}),
        "typing" => json!({"type": "typing", "conversation_id": id}),
        "presence_subscribe" => json!({"type": "presence_subscribe", "user_ids": [id]}),
        other => panic!("no example for frame {other}"),
    }
}

/// Sends one frame as `caller` and says whether it was allowed.
async fn call_frame(s: &TestServer, ty: &str, caller: &str, token: Option<&str>) -> bool {
    let mut c = WsClient::open(&s.ws_url()).await.unwrap();
    let ticket = match token {
        Some(t) => {
            let resp =
                reqwest::Client::new().post(s.url("/api/v1/auth/ws-ticket")).bearer_auth(t).send().await.unwrap();
            if resp.status().as_u16() != 200 {
                return false; // No ticket: no connection, no frames.
            }
            resp.json::<Value>().await.unwrap()["ticket"].as_str().unwrap().to_owned()
        }
        None => {
            // Anonymous: the frame is the first thing sent; anything but a valid hello closes
            // the connection with 4001.
            c.send(frame(ty)).await;
            let answer = c.next().await.unwrap();
            assert_eq!(answer["type"], "error", "{ty}: {answer}");
            return c.closed().await != medhub_testkit::Closed::Code(4001);
        }
    };
    c.send(json!({"type": "hello", "ticket": ticket})).await;
    assert_eq!(c.next().await.unwrap()["type"], "ready", "{caller}");
    let mut f = frame(ty);
    if ty != "typing" && ty != "hello" {
        f["id"] = json!("probe");
    }
    c.send(f).await;
    // Typing has no answer: a ping behind it shows whether an error came first.
    let pong = c.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    !c.backlog().iter().any(|e| e["type"] == "error" && e["error"]["code"] == "forbidden")
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
                if row.kind == "route" {
                    let (status, body) = call_route(&s, &row.method, &row.target, token.as_deref()).await;
                    if allowed(status, &body) != row.expect[i] {
                        wrong.push(format!("{caller}: {} {} -> {status} {body}", row.method, row.target));
                    }
                } else {
                    let got = call_frame(&s, &row.target, caller, token.as_deref()).await;
                    if got != row.expect[i] {
                        wrong.push(format!("{caller}: frame {} allowed={got}", row.target));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "not as permissions.csv says:\n{}", wrong.join("\n"));
    }
}
