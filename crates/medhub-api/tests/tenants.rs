//! Organizations as tenants, end to end on both databases: a second organization created as
//! the operator does it never sees the first one's users, sessions, conversations, settings
//! or custom roles, and its administrator cannot act on them. Every probe uses real ids of the
//! other organization's objects (random ids would prove nothing), and each one is paired with
//! the same call inside the right organization, so a 404 cannot come from a broken route.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use medhub_core::model::SystemRole;
use medhub_testkit::{TestServer, TestUser, each_backend};
use reqwest::Method;
use serde_json::{Value, json};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

fn usernames(body: &Value) -> Vec<String> {
    body["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap().to_owned()).collect()
}

async fn session_id(s: &TestServer, user: &TestUser) -> String {
    let (status, me) = s.get("/api/v1/me", user).await;
    assert_eq!(status, 200, "{me}");
    me["session_id"].as_str().unwrap().to_owned()
}

struct Tenants {
    admin: TestUser,
    nurse: TestUser,
    river_admin: TestUser,
    river_nurse: TestUser,
}

async fn tenants(s: &TestServer) -> Tenants {
    let admin = s.user_with_role("gh.admin", SystemRole::Admin).await;
    let nurse = s.user("gh.nurse").await;
    let river = s.tenant("Riverside Clinic", "river.root").await;
    let river_admin = s.user_in_org(Some(river), "river.admin", SystemRole::Admin).await;
    let river_nurse = s.user_in_org(Some(river), "river.nurse", SystemRole::User).await;
    Tenants { admin, nurse, river_admin, river_nurse }
}

each_backend! {
    async fn the_directory_and_presence_show_only_the_callers_organization(db) {
        let s = TestServer::start_on(db, Default::default()).await;
        let t = tenants(&s).await;

        let (status, list) = s.get("/api/v1/users", &t.river_nurse).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(usernames(&list), vec!["river.admin", "river.nurse", "river.root"]);
        let (_, list) = s.get("/api/v1/users?limit=500", &t.nurse).await;
        let names = usernames(&list);
        assert!(names.contains(&"gh.admin".to_owned()) && names.contains(&"gh.nurse".to_owned()), "{names:?}");
        assert!(names.iter().all(|n| !n.starts_with("river.")), "{names:?}");

        // Another organization's user is not found, exactly like an unknown id.
        for caller in [&t.river_nurse, &t.river_admin] {
            let (status, body) = s.get(&format!("/api/v1/users/{}", t.nurse.id), caller).await;
            assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
        }
        let (status, body) = s.get(&format!("/api/v1/users/{}", t.river_admin.id), &t.river_nurse).await;
        assert_eq!((status, &body["username"]), (200, &json!("river.admin")), "{body}");

        // Presence follows only the caller's organization; the other one's users are left out.
        let (mut ws, _) = s.connect(&t.river_nurse, None).await;
        let _gh_online = s.connect(&t.nurse, None).await;
        let state = ws
            .request(json!({"type": "presence_subscribe", "user_ids": [t.nurse.id, t.river_admin.id]}))
            .await;
        assert_eq!(state["type"], "presence_state", "{state}");
        let followed: Vec<&Value> = state["users"].as_array().unwrap().iter().map(|u| &u["user_id"]).collect();
        assert_eq!(followed, vec![&json!(t.river_admin.id)], "{state}");

        // An authenticator app labels the code with the user's own organization.
        let (status, e) = s.post("/api/v1/auth/mfa/totp/enroll", &t.river_nurse, json!({})).await;
        assert_eq!(status, 200, "{e}");
        let uri = e["otpauth_uri"].as_str().unwrap();
        assert!(uri.contains("issuer=medhub%20Riverside%20Clinic"), "{uri}");
    }
}

each_backend! {
    async fn an_administrator_cannot_reach_another_organizations_users_or_sessions(db) {
        let s = TestServer::start_on(db, Default::default()).await;
        let t = tenants(&s).await;

        // Each administrative call on the first organization's nurse, by the second
        // organization's administrator, is not found; the same call on their own nurse is not.
        let probes: [(Method, &str, Option<Value>); 5] = [
            (Method::PATCH, "/api/v1/admin/users/{u}", Some(json!({"active": false}))),
            (Method::POST, "/api/v1/admin/users/{u}/invitation", None),
            (Method::POST, "/api/v1/admin/users/{u}/mfa-reset", None),
            (Method::GET, "/api/v1/admin/users/{u}/roles", None),
            (Method::PUT, "/api/v1/admin/users/{u}/roles", Some(json!({"roles": ["observer"]}))),
        ];
        for (method, path, body) in &probes {
            let theirs = path.replace("{u}", &t.nurse.id.to_string());
            let (status, answer) = s.call(method.clone(), &theirs, Some(&t.river_admin), body.clone()).await;
            assert_eq!((status, code(&answer)), (404, "not_found"), "{method} {theirs}: {answer}");
        }
        let (status, me) = s.get("/api/v1/me", &t.nurse).await;
        assert_eq!(status, 200, "the first organization's nurse was not touched: {me}");
        let (_, roles) = s.get(&format!("/api/v1/admin/users/{}/roles", t.nurse.id), &t.admin).await;
        assert_eq!(roles["roles"], json!(["clinician"]), "{roles}");
        // The same calls on the second organization's own nurse reach her (she stays active).
        for (method, path, body) in &probes {
            let own = path.replace("{u}", &t.river_nurse.id.to_string());
            let body = if *method == Method::PATCH { Some(json!({"active": true})) } else { body.clone() };
            let (status, answer) = s.call(method.clone(), &own, Some(&t.river_admin), body).await;
            assert!((200..300).contains(&status), "{method} {own}: {status} {answer}");
        }
        let nurse = s.new_session(&t.nurse).await;
        let nurse_session = session_id(&s, &nurse).await;
        let river_session = session_id(&s, &s.new_session(&t.river_nurse).await).await;

        // Sessions: the list holds only the administrator's organization; another
        // organization's session and user are not found, and killing it does nothing.
        let (status, list) = s.get("/api/v1/admin/sessions?limit=500", &t.river_admin).await;
        assert_eq!(status, 200, "{list}");
        let ids: Vec<&str> = list["sessions"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
        assert!(ids.contains(&river_session.as_str()) && !ids.contains(&nurse_session.as_str()), "{list}");
        let (status, body) = s.get(&format!("/api/v1/admin/sessions?user_id={}", t.nurse.id), &t.river_admin).await;
        assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
        let kill = format!("/api/v1/admin/sessions/{nurse_session}");
        let (status, body) = s.call(Method::DELETE, &kill, Some(&t.river_admin), None).await;
        assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
        let (status, me) = s.get("/api/v1/me", &nurse).await;
        assert_eq!((status, &me["session_id"]), (200, &json!(nurse_session)), "the session lives on");
        let (status, _) = s.call(Method::DELETE, &kill, Some(&t.admin), None).await;
        assert_eq!(status, 204, "its own administrator can end it");
        assert_eq!(s.get("/api/v1/me", &nurse).await.0, 401);
    }
}

each_backend! {
    async fn settings_and_conversations_stay_inside_their_organization(db) {
        let s = TestServer::start_on(db, Default::default()).await;
        let t = tenants(&s).await;

        // The idle timeout is per organization.
        let patch = json!({"idle_timeout_minutes": 30});
        let (status, body) = s.call(Method::PATCH, "/api/v1/admin/settings", Some(&t.river_admin), Some(patch)).await;
        assert_eq!((status, &body["idle_timeout_minutes"]), (200, &json!(30)), "{body}");
        let (_, mine) = s.get("/api/v1/admin/settings", &t.admin).await;
        assert_eq!(mine["idle_timeout_minutes"], 15, "{mine}");
        let (_, theirs) = s.get("/api/v1/admin/settings", &t.river_admin).await;
        assert_eq!(theirs["idle_timeout_minutes"], 30, "{theirs}");

        // A conversation never takes a member from another organization, and the other
        // organization cannot read, post to or break the glass on one.
        let body = json!({"kind": "group", "title": "Bed 3", "members": [{"user_id": t.nurse.id}]});
        let (status, answer) = s.post("/api/v1/conversations", &t.river_nurse, body).await;
        assert_eq!((status, code(&answer)), (404, "not_found"), "{answer}");
        let body = json!({"kind": "group", "title": "Bed 3", "members": [{"user_id": t.nurse.id}],
                          "patient_ref": "pat-7"});
        let (status, conv) = s.post("/api/v1/conversations", &t.admin, body).await;
        assert_eq!(status, 201, "{conv}");
        let conv = conv["conversation"]["id"].as_str().unwrap().to_owned();
        let (status, sent) = s
            .post(&format!("/api/v1/conversations/{conv}/messages"), &t.nurse, json!({"client_txn_id": "t1", "body": "BP 90/60"}))
            .await;
        assert_eq!(status, 201, "{sent}");
        let message = sent["message"]["id"].as_str().unwrap().to_owned();
        for path in [
            format!("/api/v1/conversations/{conv}"),
            format!("/api/v1/conversations/{conv}/messages"),
            format!("/api/v1/messages/{message}"),
        ] {
            for caller in [&t.river_admin, &t.river_nurse] {
                let (status, body) = s.get(&path, caller).await;
                assert_eq!((status, code(&body)), (404, "not_found"), "{path}: {body}");
            }
            assert_eq!(s.get(&path, &t.nurse).await.0, 200, "{path} for a member");
        }
        // Even with the break-glass permission.
        s.set_roles(&t.river_nurse, &["attending_physician"]).await;
        let reason = json!({"reason": "Patient deteriorating, need the ward's notes now"});
        let (status, body) = s.post(&format!("/api/v1/conversations/{conv}/break-glass"), &t.river_nurse, reason).await;
        assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
        let (_, team) = s.get("/api/v1/patients/pat-7/care-team", &t.river_admin).await;
        assert_eq!(team["members"], json!([]), "pat-7 of one organization is not pat-7 of another: {team}");
    }
}

/// The keys of `GET /api/v1/admin/roles` as the caller sees it, and the permissions of `key`.
async fn role_catalogue(s: &TestServer, caller: &TestUser, key: &str) -> (Vec<String>, Option<Value>) {
    let (status, list) = s.get("/api/v1/admin/roles", caller).await;
    assert_eq!(status, 200, "{list}");
    let roles = list["roles"].as_array().unwrap();
    let keys = roles.iter().map(|r| r["key"].as_str().unwrap().to_owned()).collect();
    (keys, roles.iter().find(|r| r["key"] == key).map(|r| r["permissions"].clone()))
}

each_backend! {
    async fn each_organization_has_its_own_custom_roles(db) {
        let s = TestServer::start_on(db, Default::default()).await;
        let t = tenants(&s).await;

        // The second organization's ward lead reads the directory but no conversation.
        let river_lead = json!({"key": "ward_lead", "name": "Ward lead",
                                "permissions": ["directory.read", "account.self"]});
        let (status, body) = s.post("/api/v1/admin/roles", &t.river_admin, river_lead).await;
        assert_eq!((status, &body["builtin"]), (201, &json!(false)), "{body}");
        let (keys, perms) = role_catalogue(&s, &t.river_admin, "ward_lead").await;
        assert_eq!(perms, Some(json!(["directory.read", "account.self"])), "{keys:?}");
        assert!(keys.contains(&"nurse".to_owned()), "the shipped roles are listed too: {keys:?}");

        // The first organization neither sees nor grants it: for it, the key is unknown.
        let (keys, perms) = role_catalogue(&s, &t.admin, "ward_lead").await;
        assert_eq!(perms, None, "{keys:?}");
        let nurse_roles = format!("/api/v1/admin/users/{}/roles", t.nurse.id);
        let grant = json!({"roles": ["ward_lead"]});
        let (status, body) = s.call(Method::PUT, &nurse_roles, Some(&t.admin), Some(grant.clone())).await;
        assert_eq!((status, code(&body), &body["error"]["message"]), (400, "invalid_request", &json!("unknown role")));
        assert_eq!(s.get(&nurse_roles, &t.admin).await.1, json!({"roles": ["clinician"]}), "nothing changed");

        // It can make its own `ward_lead`, with other permissions; a shipped key is refused.
        let gh_lead = json!({"key": "ward_lead", "name": "Ward lead",
                             "permissions": ["conversation.read", "directory.read", "account.self"]});
        let (status, body) = s.post("/api/v1/admin/roles", &t.admin, gh_lead.clone()).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = s.post("/api/v1/admin/roles", &t.admin, gh_lead).await;
        assert_eq!((status, code(&body)), (400, "invalid_request"), "taken in its organization: {body}");
        let shipped = json!({"key": "nurse", "name": "Our nurse", "permissions": ["conversation.read"]});
        let (status, body) = s.post("/api/v1/admin/roles", &t.river_admin, shipped).await;
        assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("built-in"), "{body}");
        let (_, perms) = role_catalogue(&s, &t.admin, "ward_lead").await;
        assert_eq!(perms, Some(json!(["conversation.read", "directory.read", "account.self"])));
        let (_, perms) = role_catalogue(&s, &t.river_admin, "ward_lead").await;
        assert_eq!(perms, Some(json!(["directory.read", "account.self"])), "the second one's is untouched");

        // Granting works in each organization, and each `ward_lead` gives its own permissions.
        let (status, body) = s.call(Method::PUT, &nurse_roles, Some(&t.admin), Some(grant.clone())).await;
        assert_eq!((status, &body), (200, &json!({"roles": ["ward_lead"]})));
        let river_nurse_roles = format!("/api/v1/admin/users/{}/roles", t.river_nurse.id);
        let (status, body) = s.call(Method::PUT, &river_nurse_roles, Some(&t.river_admin), Some(grant)).await;
        assert_eq!((status, &body), (200, &json!({"roles": ["ward_lead"]})));
        // (Losing the clinician role ended their sessions.)
        let (nurse, river_nurse) = (s.new_session(&t.nurse).await, s.new_session(&t.river_nurse).await);
        assert_eq!(s.get("/api/v1/conversations", &nurse).await.0, 200, "conversation.read in the first");
        let (status, body) = s.get("/api/v1/conversations", &river_nurse).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "no conversation.read in the second");
        assert_eq!(s.get("/api/v1/users", &river_nurse).await.0, 200, "directory.read in both");
        assert_eq!(s.get("/api/v1/users", &nurse).await.0, 200);
    }
}
