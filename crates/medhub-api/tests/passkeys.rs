//! Passkeys end to end, on both databases, with real WebAuthn ceremonies driven by a software
//! authenticator (`webauthn-authenticator-rs`'s `SoftToken`): enrolment at first sign-in, the
//! sign-in second step, step-up, and every refusal (another site's origin or RP id, a replayed
//! or mismatched answer, another user's credential, a cloned authenticator whose counter went
//! backwards, no user verification, an expired ceremony), throttling, audit, listing and
//! deleting (never the last factor; other sessions end).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use medhub_core::ManualClock;
use medhub_core::model::SystemRole;
use medhub_service::auth::PasskeyConfig;
use medhub_testkit::{Settings, TestServer, TestUser, each_backend};
use reqwest::Method;
use serde_json::{Value, json};
use webauthn_authenticator_rs::AuthenticatorBackend;
use webauthn_authenticator_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};
use webauthn_authenticator_rs::softtoken::SoftToken;

const PASSWORD: &str = "correct horse battery staple";
const RP_ID: &str = "medhub.test";
const ORIGIN: &str = "https://medhub.test";
/// A phishing page relaying medhub's challenges.
const PHISHING_ORIGIN: &str = "https://medhub.test.evil.example";

const REGISTER_START: &str = "/api/v1/auth/mfa/passkey/register/start";
const REGISTER_FINISH: &str = "/api/v1/auth/mfa/passkey/register/finish";
const VERIFY_START: &str = "/api/v1/auth/mfa/passkey/verify/start";
const VERIFY_FINISH: &str = "/api/v1/auth/mfa/passkey/verify/finish";
const STEP_UP_START: &str = "/api/v1/auth/step-up/passkey/start";
const STEP_UP_FINISH: &str = "/api/v1/auth/step-up/passkey/finish";
const PASSKEYS: &str = "/api/v1/auth/mfa/passkeys";

fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::now()))
}

/// A server with passkeys on (RP `medhub.test`), on a manual clock.
async fn server(db: medhub_store::testdb::TestDb, clock: &Arc<ManualClock>) -> TestServer {
    let passkeys = PasskeyConfig { rp_id: RP_ID.into(), rp_name: "medhub test".into(), origins: vec![ORIGIN.into()] };
    TestServer::start_on(
        db,
        Settings {
            clock: clock.clone(),
            service: medhub_service::ServiceConfig {
                passkeys: Some(passkeys),
                session_sweep_interval: Duration::from_secs(3600),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
}

/// A user with a password (the organization is bootstrapped on first use).
async fn password_user(s: &TestServer, username: &str, role: SystemRole) {
    s.password_user(username, role, PASSWORD, false).await;
}

/// A software authenticator that claims user verification (as a platform authenticator with
/// a fingerprint reader would).
fn authenticator() -> SoftToken {
    SoftToken::new(true).unwrap().0
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

async fn me(s: &TestServer, u: &TestUser) -> (u16, String) {
    let (status, body) = s.get("/api/v1/me", u).await;
    (status, if status == 200 { "ok".to_owned() } else { code(&body).to_owned() })
}

/// Signs in with the password; returns the session (in whatever state).
async fn login(s: &TestServer, username: &str) -> (TestUser, String) {
    let (status, body) = s.login(username, PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    (TestUser::from_login(&body), body["state"].as_str().unwrap().to_owned())
}

/// `register/start`: the ceremony id and the options, as JSON.
async fn register_start_json(s: &TestServer, u: &TestUser) -> (String, Value) {
    let (status, body) = s.post(REGISTER_START, u, json!({})).await;
    assert_eq!(status, 200, "register/start: {body}");
    (body["ceremony_id"].as_str().unwrap().to_owned(), body["options"].clone())
}

/// `register/start`: the ceremony id and the options.
async fn register_start(s: &TestServer, u: &TestUser) -> (String, CreationChallengeResponse) {
    let (ceremony, options) = register_start_json(s, u).await;
    (ceremony, serde_json::from_value(options).unwrap())
}

/// What the authenticator answers to `options` on a page at `origin`.
fn create(a: &mut impl AuthenticatorBackend, origin: &str, options: CreationChallengeResponse) -> Value {
    let cred = a.perform_register(Url::parse(origin).unwrap(), options.public_key, 60_000).unwrap();
    serde_json::to_value(cred).unwrap()
}

fn get(a: &mut impl AuthenticatorBackend, origin: &str, options: RequestChallengeResponse) -> Value {
    let cred = a.perform_auth(Url::parse(origin).unwrap(), options.public_key, 60_000).unwrap();
    serde_json::to_value(cred).unwrap()
}

/// Registers a passkey of `a` for the session `u`; returns the finish answer.
async fn register(s: &TestServer, u: &TestUser, a: &mut impl AuthenticatorBackend, name: &str) -> (u16, Value) {
    let (ceremony, options) = register_start(s, u).await;
    let credential = create(a, ORIGIN, options);
    s.post(REGISTER_FINISH, u, json!({"ceremony_id": ceremony, "name": name, "credential": credential})).await
}

/// `start` of an assertion ceremony (`VERIFY_START` or `STEP_UP_START`), options as JSON.
async fn assertion_start_json(s: &TestServer, u: &TestUser, path: &str) -> (String, Value) {
    let (status, body) = s.post(path, u, json!({})).await;
    assert_eq!(status, 200, "{path}: {body}");
    (body["ceremony_id"].as_str().unwrap().to_owned(), body["options"].clone())
}

async fn assertion_start(s: &TestServer, u: &TestUser, path: &str) -> (String, RequestChallengeResponse) {
    let (ceremony, options) = assertion_start_json(s, u, path).await;
    (ceremony, serde_json::from_value(options).unwrap())
}

async fn finish(s: &TestServer, u: &TestUser, path: &str, ceremony: &str, credential: &Value) -> (u16, Value) {
    s.post(path, u, json!({"ceremony_id": ceremony, "credential": credential})).await
}

/// The second step of sign-in with `a`: start, sign on the real origin, finish.
async fn verify(s: &TestServer, u: &TestUser, a: &mut impl AuthenticatorBackend) -> (u16, Value) {
    let (ceremony, options) = assertion_start(s, u, VERIFY_START).await;
    let credential = get(a, ORIGIN, options);
    finish(s, u, VERIFY_FINISH, &ceremony, &credential).await
}

/// A user enrolled with a passkey at first sign-in; returns the active session.
async fn enrolled(s: &TestServer, username: &str, role: SystemRole, a: &mut impl AuthenticatorBackend) -> TestUser {
    password_user(s, username, role).await;
    let (u, state) = login(s, username).await;
    assert_eq!(state, "mfa_enrollment_required");
    let (status, body) = register(s, &u, a, "laptop").await;
    assert_eq!((status, &body["state"]), (200, &json!("active")), "{body}");
    u.with_token(&body)
}

/// A fresh session of an enrolled user, signed in with password and passkey.
async fn signed_in(s: &TestServer, username: &str, a: &mut impl AuthenticatorBackend) -> TestUser {
    let (u, state) = login(s, username).await;
    assert_eq!(state, "mfa_required");
    let (status, body) = verify(s, &u, a).await;
    assert_eq!((status, &body["state"]), (200, &json!("active")), "{body}");
    u.with_token(&body)
}

// --- enrolment, sign-in, step-up ----------------------------------------------------------

each_backend! {
    async fn enrolment_at_first_sign_in_with_a_passkey_makes_the_session_active(db) {
        let clock = clock();
        let s = server(db, &clock).await;
        password_user(&s, "nurse", SystemRole::User).await;
        let (u, state) = login(&s, "nurse").await;
        assert_eq!(state, "mfa_enrollment_required");
        assert_eq!(me(&s, &u).await, (403, "mfa_enrollment_required".to_owned()));
        let mut key = authenticator();
        let (ceremony, options) = register_start_json(&s, &u).await;
        assert_eq!(options["publicKey"]["rp"]["id"], RP_ID);
        let uv = &options["publicKey"]["authenticatorSelection"]["userVerification"];
        assert_eq!(uv, "required", "user verification is required");
        let credential = create(&mut key, ORIGIN, serde_json::from_value(options).unwrap());
        let (status, body) = s
            .post(REGISTER_FINISH, &u, json!({"ceremony_id": ceremony, "name": "ward laptop", "credential": credential}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "active");
        assert_eq!(body["passkey"]["name"], "ward laptop");
        // The first factor comes with recovery codes, as TOTP enrolment does.
        assert_eq!(body["recovery_codes"].as_array().unwrap().len(), 10);
        // Sign-in finished: a new token, and the one that only knew the password is dead.
        let old = u.clone();
        let u = u.with_token(&body);
        assert_eq!(me(&s, &u).await, (200, "ok".to_owned()));
        assert_eq!(me(&s, &old).await, (401, "unauthenticated".to_owned()));
        let (status, list) = s.get(PASSKEYS, &u).await;
        assert_eq!(status, 200);
        assert_eq!(list["passkeys"].as_array().unwrap().len(), 1);
        assert_eq!(list["passkeys"][0]["id"], body["passkey"]["id"]);
        assert!(list["passkeys"][0].get("passkey").is_none(), "the stored credential stays on the server");
        // The passkey counts as enrolled: the next sign-in asks for the second factor.
        let (_, state) = login(&s, "nurse").await;
        assert_eq!(state, "mfa_required");
        // The ceremony was used up: finishing it again is refused.
        let (status, body) = finish(&s, &u, REGISTER_FINISH, &ceremony, &credential).await;
        assert_eq!((status, code(&body)), (401, "invalid_passkey"));
    }
}

each_backend! {
    async fn a_passkey_is_the_second_step_of_sign_in(db) {
        let clock = clock();
        let s = server(db, &clock).await;
        let mut key = authenticator();
        let first = enrolled(&s, "resident", SystemRole::User, &mut key).await;
        let (u, state) = login(&s, "resident").await;
        assert_eq!(state, "mfa_required");
        assert_eq!(me(&s, &u).await, (403, "mfa_required".to_owned()));
        let (status, body) = verify(&s, &u, &mut key).await;
        assert_eq!((status, &body["state"]), (200, &json!("active")), "{body}");
        let old = u.clone();
        let u = u.with_token(&body);
        assert_eq!(me(&s, &u).await, (200, "ok".to_owned()));
        assert_eq!(me(&s, &old).await, (401, "unauthenticated".to_owned()), "a new token at sign-in");
        // Signing in is no MFA change: the first session lives on.
        assert_eq!(me(&s, &first).await, (200, "ok".to_owned()));
        // An active session has nothing left to verify.
        let (status, body) = s.post(VERIFY_START, &u, json!({})).await;
        assert_eq!((status, code(&body)), (400, "invalid_request"));
        let (_, list) = s.get(PASSKEYS, &u).await;
        assert!(list["passkeys"][0]["last_used_at"].is_string(), "{list}");
        // Audited like the TOTP events.
        let user = Some(medhub_core::UserId::from_uuid(u.id));
        s.audit_until(|all| {
            let has = |action: &str| {
                all.iter().any(|r| {
                    r.action == action
                        && r.actor == user
                        && r.target.as_deref() == Some("passkey")
                        && r.outcome.as_str() == "success"
                })
            };
            has("auth.mfa_enrol") && has("auth.mfa")
        })
        .await;
    }
}

each_backend! {
    async fn a_passkey_step_up_unlocks_a_step_up_protected_route(db) {
        let clock = clock();
        let s = server(db, &clock).await;
        let mut key = authenticator();
        let admin = enrolled(&s, "chief", SystemRole::Admin, &mut key).await;
        let target = s.user("target").await;
        let path = format!("/api/v1/admin/users/{}", target.id);
        clock.advance(mins(5));
        let (status, body) = s.call(Method::PATCH, &path, Some(&admin), Some(json!({"active": false}))).await;
        assert_eq!((status, code(&body)), (403, "step_up_required"));
        let (ceremony, options) = assertion_start(&s, &admin, STEP_UP_START).await;
        let credential = get(&mut key, ORIGIN, options);
        let (status, body) = finish(&s, &admin, STEP_UP_FINISH, &ceremony, &credential).await;
        assert_eq!(status, 204, "{body}");
        let (status, body) = s.call(Method::PATCH, &path, Some(&admin), Some(json!({"active": false}))).await;
        assert_eq!((status, &body["active"]), (200, &json!(false)), "{body}");
        // The step-up lasts 5 minutes, as with a TOTP code.
        clock.advance(mins(5));
        let (status, body) = s.call(Method::PATCH, &path, Some(&admin), Some(json!({"active": true}))).await;
        assert_eq!((status, code(&body)), (403, "step_up_required"));
        // A step-up ceremony cannot be finished as a sign-in one, nor the other way round.
        let (ceremony, options) = assertion_start(&s, &admin, STEP_UP_START).await;
        let credential = get(&mut key, ORIGIN, options);
        let (other, _) = login(&s, "chief").await;
        let (status, body) = finish(&s, &other, VERIFY_FINISH, &ceremony, &credential).await;
        assert_eq!((status, code(&body)), (401, "invalid_passkey"));
    }
}

// --- refusals ---------------------------------------------------------------------------------

each_backend! {
    async fn an_answer_made_for_another_site_is_refused(db) {
        let clock = clock();
        let s = server(db, &clock).await;
        let mut key = authenticator();
        password_user(&s, "clerk", SystemRole::User).await;
        let (u, _) = login(&s, "clerk").await;
        // Registration relayed through a phishing page: the browser puts that page's origin
        // in the client data.
        let (ceremony, options) = register_start(&s, &u).await;
        let credential = create(&mut key, PHISHING_ORIGIN, options);
        let (status, body) = finish(&s, &u, REGISTER_FINISH, &ceremony, &credential).await;
        assert_eq!((status, code(&body)), (401, "invalid_passkey"));
        // A credential made for another site's RP id, presented on medhub's own origin.
        let (ceremony, mut options) = register_start(&s, &u).await;
        options.public_key.rp.id = "evil.example".into();
        let credential = create(&mut key, ORIGIN, options);
        let (status, body) = finish(&s, &u, REGISTER_FINISH, &ceremony, &credential).await;
        assert_eq!((status, code(&body)), (401, "invalid_passkey"));
        assert_eq!(me(&s, &u).await, (403, "mfa_enrollment_required".to_owned()), "nothing was enrolled");
        let (status, _) = register(&s, &u, &mut key, "laptop").await;
        assert_eq!(status, 200);

        let (pending, _) = login(&s, "clerk").await;
        let (ceremony, options) = assertion_start(&s, &pending, VERIFY_START).await;
        let credential = get(&mut key, PHISHING_ORIGIN, options);
        let (status, body) = finish(&s, &pending, VERIFY_FINISH, &ceremony, &credential).await;
        assert_eq!((status, code(&body)), (401, "invalid_passkey"));
        let (ceremony, mut options) = assertion_start(&s, &pending, VERIFY_START).await;
        options.public_key.rp_id = "evil.example".into();
        let credential = get(&mut key, ORIGIN, options);
        let (status, body) = finish(&s, &pending, VERIFY_FINISH, &ceremony, &credential).await;
        assert_eq!((status, code(&body)), (401, "invalid_passkey"));
        assert_eq!(me(&s, &pending).await, (403, "mfa_required".to_owned()));
        let (status, _) = verify(&s, &pending, &mut key).await;
        assert_eq!(status, 200, "the real site still works");
    }
}

each_backend! {
    async fn a_replayed_or_mismatched_assertion_is_refused(db) {
        let clock = clock();
        let s = server(db, &clock).await;
        let mut key = authenticator();
        enrolled(&s, "pharm", SystemRole::User, &mut key).await;
        let (first, _) = login(&s, "pharm").await;
        let (ceremony, options) = assertion_start(&s, &first, VERIFY_START).await;
        let answer = get(&mut key, ORIGIN, options);
        assert_eq!(finish(&s, &first, VERIFY_FINISH, &ceremony, &answer).await.0, 200);
        // The same answer again, in a new sign-in: with the used ceremony, and with a fresh one
        // (whose challenge it does not answer).
        let (second, _) = login(&s, "pharm").await;
        let (status, body) = finish(&s, &second, VERIFY_FINISH, &ceremony, &answer).await;
        assert_eq!((status, code(&body)), (401, "invalid_passkey"));
        let (fresh, _) = assertion_start(&s, &second, VERIFY_START).await;
        let (status, body) = finish(&s, &second, VERIFY_FINISH, &fresh, &answer).await;
        assert_eq!((status, code(&body)), (401, "invalid_passkey"));
        // Two ceremonies, answers swapped: each answers the other's challenge.
        let (a_id, a_options) = assertion_start(&s, &second, VERIFY_START).await;
        let (b_id, b_options) = assertion_start(&s, &second, VERIFY_START).await;
        let a_answer = get(&mut key, ORIGIN, a_options);
        let b_answer = get(&mut key, ORIGIN, b_options);
        assert_eq!(finish(&s, &second, VERIFY_FINISH, &a_id, &b_answer).await.0, 401);
        assert_eq!(finish(&s, &second, VERIFY_FINISH, &b_id, &a_answer).await.0, 401);
        // A ceremony started by another session cannot be finished here.
        let (third, _) = login(&s, "pharm").await;
        let (c_id, c_options) = assertion_start(&s, &third, VERIFY_START).await;
        let c_answer = get(&mut key, ORIGIN, c_options);
        assert_eq!(finish(&s, &second, VERIFY_FINISH, &c_id, &c_answer).await.0, 401);
        assert_eq!(me(&s, &second).await, (403, "mfa_required".to_owned()));
        // A ceremony lasts 5 minutes.
        let (d_id, d_options) = assertion_start(&s, &second, VERIFY_START).await;
        let d_answer = get(&mut key, ORIGIN, d_options);
        clock.advance(mins(5));
        assert_eq!(finish(&s, &second, VERIFY_FINISH, &d_id, &d_answer).await.0, 401);
    }
}

each_backend! {
    async fn another_users_credential_is_refused(db) {
        let clock = clock();
        let s = server(db, &clock).await;
        let (mut alice_key, mut bob_key) = (authenticator(), authenticator());
        enrolled(&s, "alice", SystemRole::User, &mut alice_key).await;
        enrolled(&s, "bob", SystemRole::User, &mut bob_key).await;
        let (alice, _) = login(&s, "alice").await;
        let (_, alice_options) = assertion_start(&s, &alice, VERIFY_START).await;
        let (bob, _) = login(&s, "bob").await;
        // Bob's challenge, answered with Alice's credential (a valid signature by a registered
        // passkey, only not Bob's).
        let (ceremony, mut options) = assertion_start(&s, &bob, VERIFY_START).await;
        options.public_key.allow_credentials = alice_options.public_key.allow_credentials.clone();
        let answer = get(&mut alice_key, ORIGIN, options);
        let (status, body) = finish(&s, &bob, VERIFY_FINISH, &ceremony, &answer).await;
        assert_eq!((status, code(&body)), (401, "invalid_passkey"));
        assert_eq!(me(&s, &bob).await, (403, "mfa_required".to_owned()));
        // A credential nobody registered.
        let (ceremony, options) = assertion_start(&s, &bob, VERIFY_START).await;
        let mut answer = get(&mut bob_key, ORIGIN, options);
        answer["rawId"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        answer["id"] = answer["rawId"].clone();
        let (status, body) = finish(&s, &bob, VERIFY_FINISH, &ceremony, &answer).await;
        assert_eq!((status, code(&body)), (401, "invalid_passkey"));
        let bob_id = Some(medhub_core::UserId::from_uuid(bob.id));
        s.audit_until(|all| {
            all.iter().filter(|r| {
                r.action == "auth.mfa" && r.actor == bob_id && r.reason.as_deref() == Some("invalid_passkey")
            }).count() >= 2
        })
        .await;
        assert_eq!(verify(&s, &bob, &mut bob_key).await.0, 200, "Bob's own passkey works");
    }
}

each_backend! {
    async fn a_cloned_authenticator_whose_counter_went_backwards_is_refused(db) {
        let clock = clock();
        let s = server(db, &clock).await;
        let mut key = authenticator();
        enrolled(&s, "tech", SystemRole::User, &mut key).await;
        // A copy of the authenticator as it was right after registration (counter 0).
        let mut clone = SoftToken::from_cbor(&key.to_cbor().unwrap()).unwrap();
        signed_in(&s, "tech", &mut key).await;
        signed_in(&s, "tech", &mut key).await;
        // The copy signs with counter 1; medhub has seen 2.
        let (u, _) = login(&s, "tech").await;
        let (status, body) = verify(&s, &u, &mut clone).await;
        assert_eq!((status, code(&body)), (401, "invalid_passkey"));
        assert_eq!(me(&s, &u).await, (403, "mfa_required".to_owned()));
        // Even at the counter medhub has seen (2), it is refused; the original moves on (3).
        let (status, _) = verify(&s, &u, &mut clone).await;
        assert_eq!(status, 401);
        assert_eq!(verify(&s, &u, &mut key).await.0, 200);
    }
}

each_backend! {
    async fn user_verification_is_required(db) {
        let clock = clock();
        let s = server(db, &clock).await;
        // An authenticator that only proves presence (a security key without PIN).
        let mut presence_only = SoftToken::new(false).unwrap().0;
        password_user(&s, "porter", SystemRole::User).await;
        let (u, _) = login(&s, "porter").await;
        let (ceremony, mut options) = register_start_json(&s, &u).await;
        options["publicKey"]["authenticatorSelection"]["userVerification"] = json!("discouraged");
        let credential = create(&mut presence_only, ORIGIN, serde_json::from_value(options).unwrap());
        let (status, body) = finish(&s, &u, REGISTER_FINISH, &ceremony, &credential).await;
        assert_eq!((status, code(&body)), (401, "invalid_passkey"));
        // Registered with verification, then used without.
        let mut key = authenticator();
        assert_eq!(register(&s, &u, &mut key, "phone").await.0, 200);
        let mut unverified = SoftToken::from_cbor(&key.to_cbor().unwrap()).unwrap();
        let (pending, _) = login(&s, "porter").await;
        let (ceremony, mut options) = assertion_start_json(&s, &pending, VERIFY_START).await;
        assert_eq!(options["publicKey"]["userVerification"], "required");
        // The token claims verification whenever asked; a page asking it not to gets none.
        options["publicKey"]["userVerification"] = json!("discouraged");
        let credential = get(&mut unverified, ORIGIN, serde_json::from_value(options).unwrap());
        let (status, body) = finish(&s, &pending, VERIFY_FINISH, &ceremony, &credential).await;
        assert_eq!((status, code(&body)), (401, "invalid_passkey"));
    }
}

each_backend! {
    async fn wrong_passkey_answers_are_throttled_like_wrong_codes(db) {
        let clock = clock();
        let s = server(db, &clock).await;
        let mut key = authenticator();
        enrolled(&s, "lab", SystemRole::User, &mut key).await;
        let (u, _) = login(&s, "lab").await;
        let mut statuses = Vec::new();
        for _ in 0..6 {
            let (ceremony, options) = assertion_start(&s, &u, VERIFY_START).await;
            let answer = get(&mut key, PHISHING_ORIGIN, options);
            statuses.push(finish(&s, &u, VERIFY_FINISH, &ceremony, &answer).await.0);
        }
        assert_eq!(statuses, [401, 401, 401, 401, 401, 401]);
        // An unknown ceremony counts too, and now waits.
        let bogus = json!({"ceremony_id": "mhp_unknown", "credential": {}});
        let (status, body) = s.post(VERIFY_FINISH, &u, bogus).await;
        assert_eq!((status, code(&body)), (429, "rate_limited"));
        // Locked: starting and finishing wait, even with a good answer.
        let (status, body) = s.post(VERIFY_START, &u, json!({})).await;
        assert_eq!((status, code(&body)), (429, "rate_limited"));
        clock.advance(SignedDuration::from_secs(1));
        let (ceremony, options) = assertion_start(&s, &u, VERIFY_START).await;
        let answer = get(&mut key, ORIGIN, options);
        assert_eq!(finish(&s, &u, VERIFY_FINISH, &ceremony, &answer).await.0, 200);
    }
}

// --- listing and deleting -----------------------------------------------------------------------

each_backend! {
    async fn the_last_factor_is_kept_and_deleting_a_passkey_ends_other_sessions(db) {
        let clock = clock();
        let s = server(db, &clock).await;
        let (mut laptop, mut phone) = (authenticator(), authenticator());
        let u = enrolled(&s, "head", SystemRole::User, &mut laptop).await;
        let (_, list) = s.get(PASSKEYS, &u).await;
        let first = list["passkeys"][0]["id"].as_str().unwrap().to_owned();
        let delete = |id: String| {
            let (s, u) = (&s, u.clone());
            async move { s.call(Method::DELETE, &format!("{PASSKEYS}/{id}"), Some(&u), None).await }
        };
        let (status, body) = delete(first.clone()).await;
        assert_eq!((status, code(&body)), (409, "last_second_factor"));
        // A second passkey, added in the active session (the step-up of the enrolment is fresh);
        // it is no first factor, so no new recovery codes.
        let (status, body) = register(&s, &u, &mut phone, "phone").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["recovery_codes"], json!([]));
        // Another device signs in with the phone.
        let other = signed_in(&s, "head", &mut phone).await;
        assert_eq!(me(&s, &other).await, (200, "ok".to_owned()));
        // Deleting needs a step-up.
        clock.advance(mins(5));
        let (status, body) = delete(first.clone()).await;
        assert_eq!((status, code(&body)), (403, "step_up_required"));
        let (ceremony, options) = assertion_start(&s, &u, STEP_UP_START).await;
        let both = options.public_key.allow_credentials.clone();
        assert_eq!(both.len(), 2);
        let answer = get(&mut laptop, ORIGIN, options);
        assert_eq!(finish(&s, &u, STEP_UP_FINISH, &ceremony, &answer).await.0, 204);
        assert_eq!(delete(uuid::Uuid::now_v7().to_string()).await.0, 404);
        assert_eq!(delete(first.clone()).await.0, 204);
        // An MFA change: the other session ended, this one lives.
        assert_eq!(me(&s, &other).await.0, 401);
        assert_eq!(me(&s, &u).await, (200, "ok".to_owned()));
        let (_, list) = s.get(PASSKEYS, &u).await;
        let left: Vec<&str> = list["passkeys"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(left, ["phone"]);
        // The deleted passkey no longer signs in.
        let (pending, _) = login(&s, "head").await;
        let (ceremony, mut options) = assertion_start(&s, &pending, VERIFY_START).await;
        assert_eq!(options.public_key.allow_credentials.len(), 1);
        options.public_key.allow_credentials = both;
        let answer = get(&mut laptop, ORIGIN, options);
        let (status, body) = finish(&s, &pending, VERIFY_FINISH, &ceremony, &answer).await;
        assert_eq!((status, code(&body)), (401, "invalid_passkey"));
        let phone_id = list["passkeys"][0]["id"].as_str().unwrap().to_owned();
        let (status, body) = delete(phone_id).await;
        assert_eq!((status, code(&body)), (409, "last_second_factor"));
    }
}

each_backend! {
    async fn without_a_relying_party_the_routes_answer_passkeys_not_configured(db) {
        let s = TestServer::start_on(db, Settings::default()).await;
        let u = s.user("plain").await;
        for path in [REGISTER_START, STEP_UP_START] {
            let (status, body) = s.post(path, &u, json!({})).await;
            assert_eq!((status, code(&body)), (501, "passkeys_not_configured"), "{path}");
        }
    }
}
