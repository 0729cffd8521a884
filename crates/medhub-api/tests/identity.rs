//! Identity end to end, on both databases, with a clock the test controls: the idle timeout
//! (14:59 passes, 15:00 fails), what counts as activity, second factors and their replay
//! rules, step-up, throttling without user enumeration, WebSocket tickets and origins,
//! invitations, and every way a session ends (with its sockets).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use medhub_core::ManualClock;
use medhub_core::model::SystemRole;
use medhub_testkit::{Closed, Settings, TestServer, TestUser, each_backend};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

fn secs(s: i64) -> SignedDuration {
    SignedDuration::from_secs(s)
}

/// A server on a manual clock. `sweep` is how often the session sweeper runs: a long one
/// keeps it out of tests that check what a request itself sees.
async fn server(db: medhub_store::testdb::TestDb, clock: &Arc<ManualClock>, sweep: Duration) -> TestServer {
    TestServer::start_on(
        db,
        Settings {
            clock: clock.clone(),
            service: medhub_service::ServiceConfig { session_sweep_interval: sweep, ..Default::default() },
            ..Default::default()
        },
    )
    .await
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::now()))
}

/// Creates a user with a password (the organization is bootstrapped on first use).
async fn password_user(s: &TestServer, username: &str, role: SystemRole) {
    s.password_user(username, role, PASSWORD, false).await;
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

async fn me(s: &TestServer, u: &TestUser) -> (u16, String) {
    let (status, body) = s.get("/api/v1/me", u).await;
    (status, if status == 200 { "ok".to_owned() } else { code(&body).to_owned() })
}

// --- idle timeout and activity ------------------------------------------------------------

each_backend! {
    async fn the_idle_timeout_passes_at_14_59_and_fails_at_15_00(db) {
        let clock = clock();
        let s = server(db, &clock, Duration::from_secs(3600)).await;
        let alice = s.user("alice").await;
        let bob = s.user("bob").await;
        // 14:59 after sign-in the session works, and that request is activity...
        clock.advance(mins(15) - secs(1));
        assert_eq!(me(&s, &alice).await, (200, "ok".into()));
        // ...so another 14:59 later it still works.
        clock.advance(mins(15) - secs(1));
        assert_eq!(me(&s, &alice).await, (200, "ok".into()));
        // Bob did nothing since sign-in: 29:58 is far too long.
        assert_eq!(me(&s, &bob).await, (401, "session_expired".into()));
        assert_eq!(me(&s, &bob).await, (401, "unauthenticated".into()), "it stays ended");
        // Exactly 15:00 after Alice's last action, it ends.
        clock.advance(mins(15));
        assert_eq!(me(&s, &alice).await, (401, "session_expired".into()));
    }
}

each_backend! {
    async fn background_refreshes_long_polls_and_tickets_are_not_activity(db) {
        let clock = clock();
        let s = server(db, &clock, Duration::from_secs(3600)).await;
        let alice = s.user("alice").await;
        clock.advance(mins(10));
        let http = reqwest::Client::new();
        let bg = http
            .get(s.url("/api/v1/conversations"))
            .bearer_auth(&alice.token)
            .header("X-Medhub-Background", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(bg.status().as_u16(), 200);
        let (status, _) = s.get("/api/v1/events", &alice).await;
        assert_eq!(status, 200, "a long poll without a cursor answers at once");
        let _ticket = s.ws_ticket(&alice).await;
        // None of that restarted the idle timeout: 15:00 after sign-in, the session ends.
        clock.advance(mins(5));
        assert_eq!(me(&s, &alice).await, (401, "session_expired".into()));
    }
}

each_backend! {
    async fn idle_sockets_close_but_user_frames_keep_them_open(db) {
        let clock = clock();
        let s = server(db, &clock, Duration::from_millis(100)).await;
        let (alice, bob) = (s.user("alice").await, s.user("bob").await);
        let conv = s.conversation(&alice, "group", &[&bob]).await;
        let (mut a, _) = s.connect(&alice, None).await;
        let (mut b, _) = s.connect(&bob, None).await;
        // Alice types (a user action); Bob only answers heartbeats.
        clock.advance(mins(10));
        a.send(json!({"type": "typing", "conversation_id": conv})).await;
        assert_eq!(a.request(json!({"type": "ping"})).await["type"], "pong");
        assert_eq!(b.request(json!({"type": "ping"})).await["type"], "pong");
        clock.advance(mins(10));
        a.send(json!({"type": "typing", "conversation_id": conv})).await;
        assert_eq!(a.request(json!({"type": "ping"})).await["type"], "pong");
        // 20 minutes without a user action: the sweeper closed Bob's socket.
        assert_eq!(b.closed().await, Closed::Code(4003));
        assert_eq!(me(&s, &bob).await.0, 401);
        // Alice's last action was 10 minutes ago: still connected and signed in.
        assert_eq!(a.request(json!({"type": "ping"})).await["type"], "pong");
        assert_eq!(me(&s, &alice).await, (200, "ok".into()));
    }
}

each_backend! {
    async fn an_organization_chooses_its_idle_timeout(db) {
        let clock = clock();
        let s = server(db, &clock, Duration::from_secs(3600)).await;
        let admin = s.user_with_role("chief", SystemRole::Admin).await;
        let nurse = s.user("nurse").await;
        let (status, body) = s.get("/api/v1/admin/settings", &admin).await;
        assert_eq!((status, &body), (200, &json!({"idle_timeout_minutes": 15, "break_glass_minutes": 60})));
        for bad in [0, 721, -1] {
            let (status, body) = s.call(Method::PATCH, "/api/v1/admin/settings", Some(&admin), Some(json!({"idle_timeout_minutes": bad}))).await;
            assert_eq!((status, code(&body)), (400, "invalid_request"), "{bad}");
        }
        let (status, body) = s.call(Method::PATCH, "/api/v1/admin/settings", Some(&nurse), Some(json!({"idle_timeout_minutes": 60}))).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));
        let (status, body) = s.call(Method::PATCH, "/api/v1/admin/settings", Some(&admin), Some(json!({"idle_timeout_minutes": 5}))).await;
        assert_eq!((status, &body), (200, &json!({"idle_timeout_minutes": 5, "break_glass_minutes": 60})));
        let nurse2 = s.user("nurse2").await;
        clock.advance(mins(5) - secs(1));
        assert_eq!(me(&s, &nurse2).await, (200, "ok".into()));
        clock.advance(mins(5));
        assert_eq!(me(&s, &nurse2).await, (401, "session_expired".into()));
        // The shorter timeout applies to sessions that existed before the change, too.
        assert_eq!(me(&s, &nurse).await, (401, "session_expired".into()));
    }
}

// --- second factors -----------------------------------------------------------------------

each_backend! {
    async fn totp_codes_work_once_within_their_window_and_recovery_codes_once(db) {
        let clock = clock();
        let s = server(db, &clock, Duration::from_secs(3600)).await;
        password_user(&s, "resident", SystemRole::User).await;
        let first = s.sign_in("resident", PASSWORD, None).await;
        assert_eq!(first.recovery_codes.len(), 10);
        let secret = first.totp_secret.clone();
        // Enrolling again is refused while an authenticator exists.
        let (status, body) = s.post("/api/v1/auth/mfa/totp/enroll", &first.user, json!({})).await;
        assert_eq!((status, code(&body)), (409, "mfa_already_enrolled"));

        let (status, body) = s.login("resident", PASSWORD).await;
        assert_eq!((status, body["state"].as_str()), (200, Some("mfa_required")));
        let second = TestUser::from_login(&body);
        // Until the second factor is proven, nothing else works.
        assert_eq!(me(&s, &second).await, (403, "mfa_required".into()));
        let (status, body) = s.post("/api/v1/auth/ws-ticket", &second, json!({})).await;
        assert_eq!((status, code(&body)), (403, "mfa_required"));
        let verify = |c: String| json!({"code": c});
        // The code that confirmed enrolment was used: refused, though still in its window.
        let (status, body) = s.post("/api/v1/auth/mfa/verify", &second, verify(s.totp_code(&secret, 0))).await;
        assert_eq!((status, code(&body)), (401, "invalid_mfa_code"));
        // Two steps ahead is outside the ±1 window.
        let (status, body) = s.post("/api/v1/auth/mfa/verify", &second, verify(s.totp_code(&secret, 2))).await;
        assert_eq!((status, code(&body)), (401, "invalid_mfa_code"));
        let (status, body) = s.post("/api/v1/auth/mfa/verify", &second, verify(s.totp_code(&secret, 1))).await;
        assert_eq!((status, &body["state"]), (200, &json!("active")), "{body}");
        // Proving the second factor replaces the token (ASVS 3.2.1): the one that only knew
        // the password stops working, however it was obtained.
        let second_active = second.clone().with_token(&body);
        assert_eq!(me(&s, &second_active).await, (200, "ok".into()));
        assert_eq!(me(&s, &second).await, (401, "unauthenticated".into()));

        // Another sign-in with the same code: refused (replay), however fast.
        let (_, body) = s.login("resident", PASSWORD).await;
        let third = TestUser::from_login(&body);
        let (status, body) = s.post("/api/v1/auth/mfa/verify", &third, verify(s.totp_code(&secret, 1))).await;
        assert_eq!((status, code(&body)), (401, "invalid_mfa_code"));
        // A recovery code works, in any case and with spaces, once.
        let rc = first.recovery_codes[3].to_uppercase().replace('-', " ");
        let (status, body) = s.post("/api/v1/auth/mfa/verify", &third, json!({"recovery_code": rc})).await;
        assert_eq!(status, 200, "{body}");
        let (_, body) = s.login("resident", PASSWORD).await;
        let fourth = TestUser::from_login(&body);
        let (status, body) = s.post("/api/v1/auth/mfa/verify", &fourth, json!({"recovery_code": first.recovery_codes[3]})).await;
        assert_eq!((status, code(&body)), (401, "invalid_mfa_code"));
        let (status, body) = s.post("/api/v1/auth/mfa/verify", &fourth, json!({"code": "123456", "recovery_code": "x"})).await;
        assert_eq!((status, code(&body)), (400, "invalid_request"));
        // Time moves on: the next step's code works.
        clock.advance(secs(60));
        let (status, body) = s.post("/api/v1/auth/mfa/verify", &fourth, verify(s.totp_code(&secret, 0))).await;
        assert_eq!(status, 200, "{body}");
    }
}

each_backend! {
    async fn enrolment_is_forced_and_gives_a_scannable_uri(db) {
        let clock = clock();
        let s = server(db, &clock, Duration::from_secs(3600)).await;
        password_user(&s, "clerk", SystemRole::User).await;
        let (_, body) = s.login("clerk", PASSWORD).await;
        assert_eq!(body["state"], "mfa_enrollment_required");
        let u = TestUser::from_login(&body);
        for (method, path) in [(Method::GET, "/api/v1/conversations"), (Method::GET, "/api/v1/auth/sessions"), (Method::GET, "/api/v1/events")] {
            let (status, body) = s.call(method, path, Some(&u), None).await;
            assert_eq!((status, code(&body)), (403, "mfa_enrollment_required"), "{path}");
        }
        let (status, e) = s.post("/api/v1/auth/mfa/totp/enroll", &u, json!({})).await;
        assert_eq!(status, 200, "{e}");
        let uri = e["otpauth_uri"].as_str().unwrap();
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(uri.contains(&format!("secret={}", e["secret"].as_str().unwrap())), "{uri}");
        assert!(uri.contains(":clerk?") && uri.contains("issuer=medhub%20Test%20Hospital"), "{uri}");
        // SHA-1, 6 digits and 30 s: the defaults every app assumes when the URI leaves them out.
        for other in ["algorithm=SHA256", "algorithm=SHA512", "digits=8", "period=60"] {
            assert!(!uri.contains(other), "{uri}");
        }
        assert!(e["qr_svg"].as_str().unwrap().contains("<svg"), "an SVG QR code");
        // A wrong first code does not enrol.
        let (status, body) = s.post("/api/v1/auth/mfa/totp/confirm", &u, json!({"code": "000000"})).await;
        assert_eq!((status, code(&body)), (401, "invalid_mfa_code"));
        assert_eq!(me(&s, &u).await, (403, "mfa_enrollment_required".into()));
        let good = s.totp_code(e["secret"].as_str().unwrap(), 0);
        let (status, body) = s.post("/api/v1/auth/mfa/totp/confirm", &u, json!({"code": good})).await;
        assert_eq!((status, &body["state"]), (200, &json!("active")));
        // Enrolment finished sign-in: a new token, and the old one is dead.
        assert_eq!(me(&s, &u.clone().with_token(&body)).await, (200, "ok".into()));
        assert_eq!(me(&s, &u).await, (401, "unauthenticated".into()));
    }
}

each_backend! {
    async fn sensitive_actions_need_a_step_up_within_five_minutes(db) {
        let clock = clock();
        let s = server(db, &clock, Duration::from_secs(3600)).await;
        password_user(&s, "chief", SystemRole::Admin).await;
        let admin = s.sign_in("chief", PASSWORD, None).await;
        let target = s.user("target").await;
        let path = format!("/api/v1/admin/users/{}", target.id);
        let deactivate = json!({"active": false});
        clock.advance(mins(5));
        let (status, body) = s.call(Method::PATCH, &path, Some(&admin.user), Some(deactivate.clone())).await;
        assert_eq!((status, code(&body)), (403, "step_up_required"));
        let (status, body) = s.post("/api/v1/auth/mfa/recovery-codes", &admin.user, json!({})).await;
        assert_eq!((status, code(&body)), (403, "step_up_required"));
        let (status, body) = s.post("/api/v1/auth/step-up", &admin.user, json!({"code": "999999"})).await;
        assert_eq!((status, code(&body)), (401, "invalid_mfa_code"));
        let (status, body) = s.post("/api/v1/auth/step-up", &admin.user, json!({"code": s.totp_code(&admin.totp_secret, 0)})).await;
        assert_eq!(status, 204, "{body}");
        clock.advance(mins(5) - secs(1));
        let (status, body) = s.call(Method::PATCH, &path, Some(&admin.user), Some(deactivate.clone())).await;
        assert_eq!((status, &body["active"]), (200, &json!(false)), "{body}");
        clock.advance(secs(1));
        let (status, body) = s.call(Method::PATCH, &path, Some(&admin.user), Some(json!({"active": true}))).await;
        assert_eq!((status, code(&body)), (403, "step_up_required"));
    }
}

// --- throttling and enumeration -----------------------------------------------------------

each_backend! {
    async fn failed_sign_ins_are_throttled_alike_for_known_and_unknown_users(db) {
        let clock = clock();
        let s = server(db, &clock, Duration::from_secs(3600)).await;
        password_user(&s, "nurse", SystemRole::User).await;
        let checks = || s.services.auth.password_checks();
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for _ in 0..7 {
            let before = checks();
            let k = s.login("nurse", "wrong password!").await;
            let verified_known = checks() - before;
            let before = checks();
            let u = s.login("ghost", "wrong password!").await;
            let verified_unknown = checks() - before;
            // Each ran the password verifier the same number of times (once, or not at all
            // when throttled before it).
            assert_eq!(verified_known, verified_unknown, "{k:?} {u:?}");
            known.push(k);
            unknown.push(u);
        }
        // Identical answers, byte for byte: nothing tells a real account from a made-up one.
        assert_eq!(known, unknown);
        let statuses: Vec<u16> = known.iter().map(|(s, _)| *s).collect();
        assert_eq!(statuses, [401, 401, 401, 401, 401, 401, 429]);
        let locked = &known[6].1;
        assert_eq!((code(locked), locked["error"]["retry_after"].as_u64()), ("rate_limited", Some(1)));
        // While locked, even the right password waits (and is not checked).
        let resp = reqwest::Client::new()
            .post(s.url("/api/v1/auth/login"))
            .json(&json!({"username": "nurse", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 429);
        assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
        // After the wait the right password works and clears the account's failures.
        clock.advance(secs(1));
        let (status, body) = s.login("nurse", PASSWORD).await;
        assert_eq!(status, 200, "{body}");
        // The next failures double the wait: 6 more wrong ones are needed for a lock again.
        for _ in 0..5 {
            assert_eq!(s.login("nurse", "wrong password!").await.0, 401);
        }
    }
}

each_backend! {
    async fn wrong_second_factor_codes_are_throttled(db) {
        let clock = clock();
        let s = server(db, &clock, Duration::from_secs(3600)).await;
        password_user(&s, "tech", SystemRole::User).await;
        let enrolled = s.sign_in("tech", PASSWORD, None).await;
        let (_, body) = s.login("tech", PASSWORD).await;
        let u = TestUser::from_login(&body);
        let mut statuses = Vec::new();
        for _ in 0..7 {
            statuses.push(s.post("/api/v1/auth/mfa/verify", &u, json!({"code": "000000"})).await.0);
        }
        assert_eq!(statuses, [401, 401, 401, 401, 401, 401, 429]);
        // Even the right code waits until the lock ends.
        let good = json!({"code": s.totp_code(&enrolled.totp_secret, 1)});
        assert_eq!(s.post("/api/v1/auth/mfa/verify", &u, good.clone()).await.0, 429);
        clock.advance(secs(1));
        let good = json!({"code": s.totp_code(&enrolled.totp_secret, 1)});
        assert_eq!(s.post("/api/v1/auth/mfa/verify", &u, good).await.0, 200);
    }
}

// --- sessions: listing and ending -----------------------------------------------------------

each_backend! {
    async fn sessions_are_listed_and_ended_by_their_owner_and_administrators(db) {
        let clock = clock();
        let s = server(db, &clock, Duration::from_millis(100)).await;
        password_user(&s, "alice", SystemRole::User).await;
        let desk = s.sign_in("alice", PASSWORD, None).await;
        let resp = reqwest::Client::new()
            .post(s.url("/api/v1/auth/login"))
            .header("User-Agent", "Ward 7 tablet")
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        let tablet = TestUser::from_login(&resp.json::<Value>().await.unwrap());
        let code1 = json!({"code": s.totp_code(&desk.totp_secret, 1)});
        let (status, body) = s.post("/api/v1/auth/mfa/verify", &tablet, code1).await;
        assert_eq!(status, 200, "{body}");
        let tablet = tablet.with_token(&body);
        let (mut tablet_ws, _) = s.connect(&tablet, None).await;

        let (status, list) = s.get("/api/v1/auth/sessions", &desk.user).await;
        assert_eq!(status, 200, "{list}");
        let sessions = list["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 2, "{list}");
        let t = sessions.iter().find(|x| x["user_agent"] == "Ward 7 tablet").expect("the tablet's session");
        assert_eq!((t["ip"].as_str(), &t["current"], &t["state"]), (Some("127.0.0.1"), &json!(false), &json!("active")));
        assert!(sessions.iter().any(|x| x["current"] == true));
        let tablet_session = t["id"].as_str().unwrap().to_owned();

        // Another user cannot end it, and cannot tell it exists.
        let bob = s.user("bob").await;
        let (status, body) = s.call(Method::DELETE, &format!("/api/v1/auth/sessions/{tablet_session}"), Some(&bob), None).await;
        assert_eq!((status, code(&body)), (404, "not_found"));
        let (status, body) = s.get("/api/v1/admin/sessions", &bob).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));
        // The owner ends it: its socket closes, its token stops working.
        let (status, _) = s.call(Method::DELETE, &format!("/api/v1/auth/sessions/{tablet_session}"), Some(&desk.user), None).await;
        assert_eq!(status, 204);
        assert_eq!(tablet_ws.closed().await, Closed::Code(4003));
        assert_eq!(me(&s, &tablet).await.0, 401);
        assert_eq!(me(&s, &desk.user).await.0, 200);

        // An administrator sees every session and kills one.
        let admin = s.user_with_role("chief", SystemRole::Admin).await;
        let (mut desk_ws, _) = s.connect(&desk.user, None).await;
        let (status, all) = s.get(&format!("/api/v1/admin/sessions?user_id={}", desk.user.id), &admin).await;
        assert_eq!(status, 200, "{all}");
        let ids: Vec<&str> = all["sessions"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 1, "{all}");
        let (status, _) = s.call(Method::DELETE, &format!("/api/v1/admin/sessions/{}", ids[0]), Some(&admin), None).await;
        assert_eq!(status, 204);
        assert_eq!(desk_ws.closed().await, Closed::Code(4003));
        assert_eq!(me(&s, &desk.user).await.0, 401);
        let (status, _) = s.call(Method::DELETE, &format!("/api/v1/admin/sessions/{}", ids[0]), Some(&admin), None).await;
        assert_eq!(status, 404, "already ended");
    }
}

each_backend! {
    async fn password_role_and_account_changes_end_other_sessions(db) {
        let clock = clock();
        let s = server(db, &clock, Duration::from_millis(100)).await;
        password_user(&s, "alice", SystemRole::User).await;
        let one = s.sign_in("alice", PASSWORD, None).await;
        let two = s.sign_in("alice", PASSWORD, Some(&one.totp_secret)).await;
        let (mut two_ws, _) = s.connect(&two.user, None).await;
        let new_password = "an even better passphrase";
        let change = json!({"current_password": PASSWORD, "new_password": new_password});
        let (status, body) = s.post("/api/v1/auth/password", &one.user, change).await;
        assert_eq!((status, &body["state"]), (200, &json!("active")), "{body}");
        assert_eq!(two_ws.closed().await, Closed::Code(4003));
        assert_eq!(me(&s, &two.user).await.0, 401);
        assert_eq!(me(&s, &one.user).await.0, 200, "the session that changed it stays");

        // Losing the administrator role ends the user's sessions; so does deactivation.
        let admin = s.user_with_role("chief", SystemRole::Admin).await;
        let carol = s.user_with_role("carol", SystemRole::Admin).await;
        let (status, body) = s.call(Method::PATCH, &format!("/api/v1/admin/users/{}", carol.id), Some(&admin), Some(json!({"role": "user"}))).await;
        assert_eq!((status, &body["role"]), (200, &json!("user")), "{body}");
        assert_eq!(me(&s, &carol).await.0, 401);
        let (mut one_ws, _) = s.connect(&one.user, None).await;
        let (status, _) = s.call(Method::PATCH, &format!("/api/v1/admin/users/{}", one.user.id), Some(&admin), Some(json!({"active": false}))).await;
        assert_eq!(status, 200);
        assert_eq!(one_ws.closed().await, Closed::Code(4003));
        assert_eq!(me(&s, &one.user).await.0, 401);
        assert_eq!(s.login("alice", new_password).await.0, 401, "deactivated accounts cannot sign in");
        // Administrators cannot lock themselves out.
        let (status, body) = s.call(Method::PATCH, &format!("/api/v1/admin/users/{}", admin.id), Some(&admin), Some(json!({"active": false}))).await;
        assert_eq!((status, code(&body)), (400, "invalid_request"));
    }
}

each_backend! {
    async fn an_administrator_resets_a_lost_authenticator(db) {
        let clock = clock();
        let s = server(db, &clock, Duration::from_millis(100)).await;
        password_user(&s, "alice", SystemRole::User).await;
        let alice = s.sign_in("alice", PASSWORD, None).await;
        let (mut ws, _) = s.connect(&alice.user, None).await;
        let admin = s.user_with_role("chief", SystemRole::Admin).await;
        let (status, _) = s.post(&format!("/api/v1/admin/users/{}/mfa-reset", alice.user.id), &admin, json!({})).await;
        assert_eq!(status, 204);
        assert_eq!(ws.closed().await, Closed::Code(4003));
        let (_, body) = s.login("alice", PASSWORD).await;
        assert_eq!(body["state"], "mfa_enrollment_required", "a new authenticator is needed");
        let again = s.sign_in("alice", PASSWORD, None).await;
        assert_ne!(again.totp_secret, alice.totp_secret);
    }
}

// --- WebSocket tickets and origins ----------------------------------------------------------

async fn hello_with(s: &TestServer, ticket: &str) -> (Value, Closed) {
    let mut c = medhub_testkit::WsClient::open(&s.ws_url()).await.unwrap();
    c.send(json!({"type": "hello", "ticket": ticket})).await;
    let first = c.next().await.unwrap();
    if first["type"] == "ready" {
        return (first, Closed::Code(0));
    }
    (first, c.closed().await)
}

each_backend! {
    async fn tickets_work_once_and_for_thirty_seconds(db) {
        let clock = clock();
        let s = server(db, &clock, Duration::from_secs(3600)).await;
        let alice = s.user("alice").await;
        let ticket = s.ws_ticket(&alice).await;
        assert!(ticket.starts_with("mht_"));
        let (ready, _) = hello_with(&s, &ticket).await;
        assert_eq!(ready["type"], "ready");
        let (err, closed) = hello_with(&s, &ticket).await;
        assert_eq!((code(&err), closed), ("unauthenticated", Closed::Code(4001)), "used once");
        let late = s.ws_ticket(&alice).await;
        let fresh = s.ws_ticket(&alice).await;
        clock.advance(secs(29));
        assert_eq!(hello_with(&s, &fresh).await.0["type"], "ready", "29 s old");
        clock.advance(secs(1));
        let (err, closed) = hello_with(&s, &late).await;
        assert_eq!((code(&err), closed), ("unauthenticated", Closed::Code(4001)), "30 s old");
        // The session token itself is not a ticket.
        let (err, _) = hello_with(&s, &alice.token).await;
        assert_eq!(code(&err), "unauthenticated");
    }
}

async fn upgrade_status(s: &TestServer, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = s.ws_url().into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

each_backend! {
    async fn only_allowed_origins_may_open_a_websocket(db) {
        let s = TestServer::start_on(db, Settings {
            api: medhub_api::ApiConfig { allowed_origins: vec!["https://portal.example.org".into()], ..Default::default() },
            ..Default::default()
        })
        .await;
        let own = format!("http://{}", s.addr);
        assert_eq!(upgrade_status(&s, None).await, 101, "no Origin: not a browser");
        assert_eq!(upgrade_status(&s, Some(&own)).await, 101, "medhub's own pages");
        assert_eq!(upgrade_status(&s, Some("https://portal.example.org")).await, 101, "listed");
        for bad in ["https://evil.example", "null", "https://portal.example.org.evil.example", "http://127.0.0.2:1"] {
            assert_eq!(upgrade_status(&s, Some(bad)).await, 403, "{bad}");
        }
        let resp = reqwest::Client::new()
            .get(s.ws_url().replace("ws://", "http://"))
            .header("Origin", "https://evil.example")
            .header("Connection", "upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(code(&body), "origin_not_allowed");
    }
}

// --- invitations ------------------------------------------------------------------------------

each_backend! {
    async fn invitations_create_accounts_that_set_a_password_then_enrol(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let admin = s.user_with_role("chief", SystemRole::Admin).await;
        let nurse = s.user("nurse").await;
        let invite = json!({"username": "new.nurse", "display_name": "New Nurse"});
        let (status, body) = s.post("/api/v1/admin/users", &nurse, invite.clone()).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));
        let (status, body) = s.post("/api/v1/admin/users", &admin, invite.clone()).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!((&body["user"]["username"], &body["user"]["role"]), (&json!("new.nurse"), &json!("user")));
        let code_ = body["invitation_code"].as_str().unwrap().to_owned();
        assert!(code_.starts_with("mhi_"));
        let (status, body) = s.post("/api/v1/admin/users", &admin, invite).await;
        assert_eq!((status, code(&body)), (409, "username_taken"));
        // No password yet: nothing signs in.
        assert_eq!(s.login("new.nurse", PASSWORD).await.0, 401);
        let accept = |c: &str, p: &str| json!({"code": c, "password": p});
        let anon = |b: Value| s.call(Method::POST, "/api/v1/auth/invitation", None, Some(b));
        let (status, body) = anon(accept(&code_, "short")).await;
        assert_eq!((status, code(&body)), (400, "password_length"));
        let (status, body) = anon(accept(&code_, &"p".repeat(129))).await;
        assert_eq!((status, code(&body)), (400, "password_length"), "ASVS 2.1.2: above 128 refused");
        let (status, body) = anon(accept("mhi_made_up", PASSWORD)).await;
        assert_eq!((status, code(&body)), (400, "invalid_invitation"));
        let long = "p".repeat(128);
        let (status, body) = anon(accept(&code_, &long)).await;
        assert_eq!((status, &body["username"]), (200, &json!("new.nurse")), "{body}");
        let (status, body) = anon(accept(&code_, "another fine passphrase")).await;
        assert_eq!((status, code(&body)), (400, "invalid_invitation"), "single use");
        let signed_in = s.sign_in("new.nurse", &long, None).await;
        assert_eq!(me(&s, &signed_in.user).await, (200, "ok".into()));
    }
}

each_backend! {
    async fn guessing_the_current_password_from_a_session_is_throttled(db) {
        let clock = clock();
        let s = server(db, &clock, Duration::from_secs(3600)).await;
        password_user(&s, "alice", SystemRole::User).await;
        let alice = s.sign_in("alice", PASSWORD, None).await;
        let guess = json!({"current_password": "a wrong guess!!", "new_password": "an even better passphrase"});
        let mut statuses = Vec::new();
        for _ in 0..7 {
            statuses.push(s.post("/api/v1/auth/password", &alice.user, guess.clone()).await.0);
        }
        assert_eq!(statuses, [401, 401, 401, 401, 401, 401, 429]);
        clock.advance(secs(1));
        let right = json!({"current_password": PASSWORD, "new_password": "an even better passphrase"});
        assert_eq!(s.post("/api/v1/auth/password", &alice.user, right).await.0, 200);
    }
}

// --- roles as data ----------------------------------------------------------------------------

each_backend! {
    async fn roles_are_data_and_grant_exactly_their_permissions(db) {
        let clock = clock();
        let s = server(db, &clock, Duration::from_millis(100)).await;
        let admin = s.user_with_role("chief", SystemRole::Admin).await;
        let (status, list) = s.get("/api/v1/admin/roles", &admin).await;
        assert_eq!(status, 200, "{list}");
        let roles = list["roles"].as_array().unwrap();
        for key in ["attending_physician", "nurse", "charge_nurse", "pharmacist", "compliance_officer", "it_support", "administrator"] {
            assert!(roles.iter().any(|r| r["key"] == key && r["builtin"] == true), "{key} in {list}");
        }
        let auditor_role = roles.iter().find(|r| r["key"] == "compliance_officer").unwrap();
        assert!(auditor_role["permissions"].as_array().unwrap().contains(&json!("audit.read")));
        assert!(!auditor_role["permissions"].as_array().unwrap().contains(&json!("message.send")));

        // A new user starts as a clinician; making them a compliance officer removes that role,
        // which ends their sessions.
        let auditor = s.user("auditor").await;
        let path = format!("/api/v1/admin/users/{}/roles", auditor.id);
        assert_eq!(s.get(&path, &admin).await.1, json!({"roles": ["clinician"]}));
        assert_eq!(s.get("/api/v1/conversations", &auditor).await.0, 200);
        let (status, body) = s.call(Method::PUT, &path, Some(&admin), Some(json!({"roles": ["compliance_officer"]}))).await;
        assert_eq!((status, &body), (200, &json!({"roles": ["compliance_officer"]})));
        assert_eq!(me(&s, &auditor).await.0, 401, "a removed role ends the sessions");
        let auditor = s.new_session(&auditor).await;
        let (status, body) = s.get("/api/v1/conversations", &auditor).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "no conversation.read");
        assert_eq!(s.get("/api/v1/users", &auditor).await.0, 200, "directory.read");

        // An organization's own role; granting it takes effect at the next request.
        let (status, body) = s.post("/api/v1/admin/roles", &admin, json!({"key": "night_float", "name": "Night float",
            "permissions": ["conversation.read", "directory.read", "account.self"]})).await;
        assert_eq!((status, &body["builtin"]), (201, &json!(false)), "{body}");
        for (bad, why) in [
            (json!({"key": "night_float", "name": "Again", "permissions": []}), "duplicate key"),
            (json!({"key": "Night Float", "name": "x", "permissions": []}), "bad key"),
            (json!({"key": "root", "name": "Root", "permissions": ["everything"]}), "unknown permission"),
        ] {
            let (status, body) = s.post("/api/v1/admin/roles", &admin, bad).await;
            assert_eq!((status, code(&body)), (400, "invalid_request"), "{why}");
        }
        let grant = json!({"roles": ["compliance_officer", "night_float"]});
        let (status, _) = s.call(Method::PUT, &path, Some(&admin), Some(grant)).await;
        assert_eq!(status, 200);
        assert_eq!(s.get("/api/v1/conversations", &auditor).await.0, 200, "granted at once, session kept");
        let (status, body) = s.call(Method::PUT, &path, Some(&admin), Some(json!({"roles": ["no_such_role"]}))).await;
        assert_eq!((status, code(&body)), (400, "invalid_request"));

        // IT support ends sessions but cannot manage users.
        let it = s.user("it").await;
        let it_path = format!("/api/v1/admin/users/{}/roles", it.id);
        assert_eq!(s.call(Method::PUT, &it_path, Some(&admin), Some(json!({"roles": ["it_support"]}))).await.0, 200);
        let it = s.new_session(&it).await;
        assert_eq!(s.get("/api/v1/admin/sessions", &it).await.0, 200);
        let (status, body) = s.post("/api/v1/admin/users", &it, json!({"username": "x", "display_name": "X"})).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));

        // Administrators cannot drop their own administrator role, and changes need a step-up.
        let own = format!("/api/v1/admin/users/{}/roles", admin.id);
        let (status, body) = s.call(Method::PUT, &own, Some(&admin), Some(json!({"roles": ["nurse"]}))).await;
        assert_eq!((status, code(&body)), (400, "invalid_request"));
        clock.advance(mins(5));
        let (status, body) = s.call(Method::PUT, &path, Some(&admin), Some(json!({"roles": ["nurse"]}))).await;
        assert_eq!((status, code(&body)), (403, "step_up_required"));
    }
}

// --- the audit interface ---------------------------------------------------------------------

/// An expected audit record: action, actor, target prefix, outcome, reason.
type Expected<'a> = (&'a str, Option<uuid::Uuid>, &'a str, &'a str, Option<&'a str>);

/// Waits until the audit writer has stored records matching every `want`, and returns all
/// records.
async fn audited(s: &TestServer, want: &[Expected<'_>]) -> Vec<medhub_core::audit::AuditRecord> {
    let matches = |r: &medhub_core::audit::AuditRecord, (action, actor, target, outcome, reason): &Expected<'_>| {
        r.action == *action
            && r.actor.map(|a| a.as_uuid()) == *actor
            && r.target.as_deref().unwrap_or("").starts_with(target)
            && r.outcome.as_str() == *outcome
            && r.reason.as_deref() == *reason
    };
    s.audit_until(|all| want.iter().all(|w| all.iter().any(|r| matches(r, w)))).await
}

each_backend! {
    async fn every_access_decision_and_security_event_is_audited(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        password_user(&s, "nurse", SystemRole::User).await;
        let nurse = s.sign_in("nurse", PASSWORD, None).await;
        let admin = s.user_with_role("chief", SystemRole::Admin).await;
        let (nurse_id, admin_id) = (Some(nurse.user.id), Some(admin.id));
        assert_eq!(s.get("/api/v1/conversations", &nurse.user).await.0, 200);
        assert_eq!(s.get("/api/v1/admin/sessions", &nurse.user).await.0, 403);
        let anon = reqwest::get(s.url("/api/v1/me")).await.unwrap();
        assert_eq!(anon.status().as_u16(), 401);
        assert_eq!(s.login("nurse", "wrong password!").await.0, 401);
        assert_eq!(s.login("nobody", "wrong password!").await.0, 401);
        let (_, body) = s.login("nurse", PASSWORD).await;
        let pending = TestUser::from_login(&body);
        assert_eq!(s.post("/api/v1/auth/mfa/verify", &pending, json!({"code": "000000"})).await.0, 401);
        let (_, list) = s.get(&format!("/api/v1/admin/sessions?user_id={}", nurse.user.id), &admin).await;
        let victim = list["sessions"][0]["id"].as_str().unwrap().to_owned();
        assert_eq!(s.call(Method::DELETE, &format!("/api/v1/admin/sessions/{victim}"), Some(&admin), None).await.0, 204);

        let all = audited(&s, &[
            ("auth.sign_in", nurse_id, "", "success", Some("mfa_enrollment_required")),
            ("auth.mfa_enrol", nurse_id, "totp", "success", None),
            ("http", nurse_id, "GET /api/v1/conversations", "allow", None),
            ("http", nurse_id, "GET /api/v1/admin/sessions", "deny", Some("forbidden")),
            ("http", None, "GET /api/v1/me", "deny", Some("unauthenticated")),
            ("auth.sign_in", nurse_id, "", "failure", Some("invalid_credentials")),
            ("auth.sign_in", None, "", "failure", Some("invalid_credentials")),
            ("auth.mfa", nurse_id, "totp", "failure", Some("invalid_mfa_code")),
            ("admin.session_kill", admin_id, &victim, "success", None),
            ("session.end", nurse_id, "", "success", Some("killed")),
        ]).await;
        // Addresses are recorded; secrets never are.
        assert!(all.iter().filter(|r| r.action == "http").all(|r| r.ip.as_deref() == Some("127.0.0.1")));
        let text = format!("{all:?}");
        for secret in [PASSWORD, "wrong password!", nurse.totp_secret.as_str(), nurse.user.token.as_str(), pending.token.as_str()] {
            assert!(!text.contains(secret), "an audit record holds a secret");
        }
    }
}

/// Signs `alice` in from loopback with `X-Forwarded-For: forwarded` and a second-factor
/// `proof`; returns the address her new session was given.
async fn forwarded_session_ip(s: &TestServer, forwarded: &str, proof: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(s.url("/api/v1/auth/login"))
        .header("X-Forwarded-For", forwarded)
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let pending = TestUser::from_login(&resp.json::<Value>().await.unwrap());
    let (status, body) = s.post("/api/v1/auth/mfa/verify", &pending, proof).await;
    assert_eq!(status, 200, "{body}");
    let session = pending.with_token(&body);
    let (_, list) = s.get("/api/v1/auth/sessions", &session).await;
    let mine = list["sessions"].as_array().unwrap().iter().find(|x| x["current"] == true).cloned();
    mine.unwrap_or_else(|| panic!("no current session in {list}"))["ip"].clone()
}

each_backend! {
    async fn behind_a_trusted_proxy_the_forwarded_address_is_the_clients(db) {
        let api = medhub_api::ApiConfig { trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()], ..Default::default() };
        let s = TestServer::start_on(db, Settings { api, ..Default::default() }).await;
        password_user(&s, "alice", SystemRole::User).await;
        let desk = s.sign_in("alice", PASSWORD, None).await;
        // The nearest untrusted hop: what the client wrote on the left is not believed.
        let code = json!({"code": s.totp_code(&desk.totp_secret, 1)});
        assert_eq!(forwarded_session_ip(&s, "198.51.100.9, 203.0.113.7, 127.0.0.1", code).await, "203.0.113.7");
        // A header that does not parse is ignored: the peer's address stands.
        let recovery = json!({"recovery_code": desk.recovery_codes[0]});
        assert_eq!(forwarded_session_ip(&s, "203.0.113.7, not-an-address", recovery).await, "127.0.0.1");

        // The audit trail records the same address for every decision.
        let resp = reqwest::Client::new()
            .get(s.url("/api/v1/me"))
            .header("X-Forwarded-For", "203.0.113.44")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        s.audit_until(|all| all.iter().any(|r| r.action == "http" && r.ip.as_deref() == Some("203.0.113.44"))).await;
    }
}

each_backend! {
    async fn without_trusted_proxies_x_forwarded_for_is_ignored(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        password_user(&s, "alice", SystemRole::User).await;
        let desk = s.sign_in("alice", PASSWORD, None).await;
        let code = json!({"code": s.totp_code(&desk.totp_secret, 1)});
        assert_eq!(forwarded_session_ip(&s, "203.0.113.7", code).await, "127.0.0.1");
    }
}
