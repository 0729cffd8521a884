//! On-call schedules, the directory, coverage, iCalendar and role addressing through the real
//! server, on both databases: roles and schedules are managed by those who keep rotas and
//! read by everyone; the directory says who is on call now and why, and who is next; a daily
//! 08:00 rotation in Berlin shows 23- and 25-hour shifts across the daylight-saving changes;
//! a calendar exported from one role imports into another unchanged; a message to a role
//! reaches its holder live and its resolution is recorded; open urgent items follow the role
//! to its next holder. Time is a clock the test moves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use medhub_core::{ManualClock, MessageId, UserId};
use medhub_store::ResolutionKind;
use medhub_testkit::{Settings, TestServer, TestUser, each_backend};
use reqwest::Method;
use serde_json::{Value, json};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn at(v: &Value) -> Timestamp {
    v.as_str().unwrap_or_else(|| panic!("not a time: {v}")).parse().unwrap()
}

async fn server(db: medhub_store::testdb::TestDb, clock: &Arc<ManualClock>, handover: Duration) -> TestServer {
    TestServer::start_on(
        db,
        Settings {
            clock: clock.clone(),
            service: medhub_service::ServiceConfig { oncall_handover_interval: Some(handover), ..Default::default() },
            ..Default::default()
        },
    )
    .await
}

/// A user holding these catalogue roles.
async fn staff(s: &TestServer, name: &str, roles: &[&str]) -> TestUser {
    let u = s.user(name).await;
    s.set_roles(&u, roles).await;
    u
}

async fn call(s: &TestServer, m: Method, path: &str, u: &TestUser, body: Option<Value>) -> (u16, Value) {
    s.call(m, path, Some(u), body).await
}

/// A daily 08:00 rotation in Berlin from Monday 2 March 2026.
fn daily(people: &[&TestUser]) -> Value {
    json!({"participants": people.iter().map(|u| u.id).collect::<Vec<_>>(), "start": "2026-03-02T08:00:00", "kind": "daily"})
}

async fn role_with_schedule(s: &TestServer, keeper: &TestUser, key: &str, rotations: Value) -> String {
    let (status, body) =
        s.post("/api/v1/oncall", keeper, json!({"key": key, "name": format!("{key} name"), "kind": "team"})).await;
    assert_eq!(status, 201, "{body}");
    let spec = json!({"name": "Primary", "time_zone": "Europe/Berlin", "rotations": rotations});
    let (status, body) = s.post(&format!("/api/v1/oncall/{key}/schedules"), keeper, spec).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

fn holder_ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|h| h["user_id"].as_str().unwrap().to_owned()).collect()
}

fn id(u: &TestUser) -> String {
    u.id.to_string()
}

each_backend! {
    async fn roles_schedules_overrides_swaps_and_coverage_make_the_directory(db) {
        // Tuesday 3 March 2026, 10:00 in Berlin.
        let clock = Arc::new(ManualClock::new(ts("2026-03-03T09:00:00Z")));
        let s = server(db, &clock, Duration::from_secs(30)).await;
        let charge = staff(&s, "charge.kim", &["charge_nurse"]).await;
        let nurse = staff(&s, "nurse.joy", &["nurse"]).await;
        let (alice, bob, carol) = (s.user("dr.alice").await, s.user("dr.bob").await, s.user("dr.carol").await);

        // Only those who keep rotas create roles; keys and names are checked.
        let role = json!({"key": "cardiology-oncall", "name": "Cardiology on-call", "kind": "team", "department": "Cardiology"});
        let (status, body) = s.post("/api/v1/oncall", &nurse, role.clone()).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));
        let (status, body) = s.post("/api/v1/oncall", &charge, role.clone()).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!((body["key"].as_str(), body["department"].as_str()), (Some("cardiology-oncall"), Some("Cardiology")));
        let (status, body) = s.post("/api/v1/oncall", &charge, role).await;
        assert_eq!((status, code(&body)), (409, "oncall_key_taken"));
        let (status, body) = s.post("/api/v1/oncall", &charge, json!({"key": "Cardio On Call", "name": "x", "kind": "team"})).await;
        assert_eq!((status, code(&body)), (400, "invalid_oncall_role"));

        // Schedules: each bad input has its code.
        let path = "/api/v1/oncall/cardiology-oncall/schedules";
        let spec = |zone: &str, rotations: Value| json!({"name": "Primary", "time_zone": zone, "rotations": rotations});
        let (status, body) = s.post(path, &charge, spec("Mars/Olympus", json!([daily(&[&alice])]))).await;
        assert_eq!((status, code(&body)), (400, "unknown_time_zone"));
        let (status, body) = s.post(path, &charge, spec("+01:00", json!([daily(&[&alice])]))).await;
        assert_eq!((status, code(&body)), (400, "unknown_time_zone"), "fixed offsets are not zones");
        let (status, body) = s.post(path, &charge, spec("Europe/Berlin", json!([{"participants": [alice.id], "start": "2026-03-02", "kind": "daily"}]))).await;
        assert_eq!((status, code(&body)), (400, "invalid_rotation"), "{body}");
        let (status, body) = s.post(path, &charge, spec("Europe/Berlin", json!([{"participants": [alice.id], "start": "2026-03-02T08:00:00", "kind": "custom", "hours": 400}]))).await;
        assert_eq!((status, code(&body)), (400, "invalid_rotation"), "{body}");
        let (status, body) = s.post(path, &charge, spec("Europe/Berlin", json!([{"participants": [], "start": "2026-03-02T08:00:00", "kind": "daily"}]))).await;
        assert_eq!((status, code(&body)), (400, "invalid_rotation"), "{body}");
        let other = s.tenant("River Clinic", "river.root").await;
        let outsider = s.user_in_org(Some(other), "river.doc", medhub_core::model::SystemRole::User).await;
        let (status, body) = s.post(path, &charge, spec("Europe/Berlin", json!([daily(&[&alice, &outsider])]))).await;
        assert_eq!((status, code(&body)), (400, "unknown_person"), "another organization's user is nobody here");
        let (status, body) = s.post(path, &charge, spec("europe/berlin", json!([daily(&[&alice, &bob])]))).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["time_zone"], "Europe/Berlin", "the tz database's spelling");
        assert_eq!(body["rotations"][0], json!({"participants": [alice.id, bob.id], "start": "2026-03-02T08:00:00", "kind": "daily"}));
        let schedule = body["id"].as_str().unwrap().to_owned();

        // The directory: on 3 March it is Bob's turn (day 1), Alice takes over at 08:00 on the 4th.
        let (status, dir) = s.get("/api/v1/oncall", &nurse).await;
        assert_eq!(status, 200, "{dir}");
        let entry = &dir["roles"][0];
        assert_eq!(entry["role"]["key"], "cardiology-oncall");
        assert_eq!(holder_ids(&entry["now"]), [id(&bob)]);
        assert_eq!(entry["now"][0]["display_name"], "dr.bob");
        assert_eq!(entry["now"][0]["source"], json!({"kind": "rotation", "rotation": 0}));
        assert_eq!(entry["now"][0]["schedule_id"], json!(schedule));
        assert_eq!(at(&entry["next"]["at"]), ts("2026-03-04T07:00:00Z"));
        assert_eq!(holder_ids(&entry["next"]["holders"]), [id(&alice)]);

        // An override: Carol stands in for Bob this afternoon. Overlapping and backwards ones
        // are refused.
        let overrides = format!("/api/v1/oncall/cardiology-oncall/schedules/{schedule}/overrides");
        let o = json!({"user_id": carol.id, "replaces": bob.id, "start": "2026-03-03T11:00:00Z", "end": "2026-03-03T17:00:00Z"});
        let (status, body) = s.post(&overrides, &nurse, o.clone()).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));
        let (status, created) = s.post(&overrides, &charge, o).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["source"], "manual");
        let clash = json!({"user_id": alice.id, "replaces": bob.id, "start": "2026-03-03T16:00:00Z", "end": "2026-03-03T18:00:00Z"});
        let (status, body) = s.post(&overrides, &charge, clash).await;
        assert_eq!((status, code(&body)), (409, "overlapping_overrides"), "{body}");
        let backwards = json!({"user_id": alice.id, "start": "2026-03-03T18:00:00Z", "end": "2026-03-03T16:00:00Z"});
        let (status, body) = s.post(&overrides, &charge, backwards).await;
        assert_eq!((status, code(&body)), (400, "invalid_override"), "{body}");
        let subsecond = json!({"user_id": alice.id, "start": "2026-03-03T18:00:00.5Z", "end": "2026-03-03T19:00:00Z"});
        let (status, body) = s.post(&overrides, &charge, subsecond).await;
        assert_eq!((status, code(&body)), (400, "subsecond_time"), "{body}");
        let (_, dir) = s.get("/api/v1/oncall?at=2026-03-03T12:00:00Z", &nurse).await;
        let now = &dir["roles"][0]["now"][0];
        assert_eq!(now["user_id"], json!(carol.id));
        assert_eq!(now["scheduled_user_id"], json!(carol.id));
        assert_eq!(now["source"], json!({"kind": "override", "override_id": created["id"], "rotation": 0, "replaced": bob.id}));
        assert_eq!(at(&dir["roles"][0]["next"]["at"]), ts("2026-03-03T17:00:00Z"), "back to Bob at 18:00");

        // A swap of two shifts from the timeline: Alice's Wednesday for Bob's Thursday.
        let (status, tl) = s.get("/api/v1/oncall/cardiology-oncall/shifts?from=2026-03-04T00:00:00Z&to=2026-03-06T00:00:00Z", &nurse).await;
        assert_eq!(status, 200, "{tl}");
        let shifts = tl["shifts"].as_array().unwrap();
        assert_eq!(shifts.iter().map(|x| x["user_id"].as_str().unwrap().to_owned()).collect::<Vec<_>>(), [id(&bob), id(&alice), id(&bob)]);
        let (wed, thu) = (&shifts[1], &shifts[2]);
        let swaps = format!("/api/v1/oncall/cardiology-oncall/schedules/{schedule}/swaps");
        let (status, body) = s.post(&swaps, &charge, json!({"first": {"rotation": 0, "start": wed["start"]}, "second": {"rotation": 0, "start": wed["start"]}})).await;
        assert_eq!((status, code(&body)), (400, "invalid_swap"), "{body}");
        let (status, body) = s.post(&swaps, &charge, json!({"first": {"rotation": 0, "start": "2026-03-04T08:00:00Z"}, "second": {"rotation": 0, "start": thu["start"]}})).await;
        assert_eq!((status, code(&body)), (400, "invalid_swap"), "no shift starts then: {body}");
        let (status, pair) = s.post(&swaps, &charge, json!({"first": {"rotation": 0, "start": wed["start"]}, "second": {"rotation": 0, "start": thu["start"]}})).await;
        assert_eq!(status, 201, "{pair}");
        assert_eq!(pair.as_array().unwrap().iter().map(|o| o["source"].as_str().unwrap()).collect::<Vec<_>>(), ["swap", "swap"]);
        let (_, tl) = s.get("/api/v1/oncall/cardiology-oncall/shifts?from=2026-03-04T12:00:00Z&to=2026-03-06T00:00:00Z", &nurse).await;
        let after: Vec<(String, String)> = tl["shifts"].as_array().unwrap().iter()
            .map(|x| (x["user_id"].as_str().unwrap().to_owned(), x["source"]["kind"].as_str().unwrap().to_owned())).collect();
        assert_eq!(after, [(id(&bob), "override".to_owned()), (id(&alice), "override".to_owned())]);

        // Coverage: while Bob is away Carol takes his calls; the directory says so. A circle or
        // a coverage that has ended is refused.
        let cover = json!({"covered_user_id": bob.id, "by_user_id": carol.id, "start": "2026-03-03T17:00:00Z", "end": "2026-03-03T23:00:00Z"});
        let (status, body) = s.post("/api/v1/coverages", &nurse, cover.clone()).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));
        let (status, coverage) = s.post("/api/v1/coverages", &charge, cover).await;
        assert_eq!(status, 201, "{coverage}");
        let circle = json!({"covered_user_id": carol.id, "by_user_id": bob.id, "start": "2026-03-03T18:00:00Z", "end": "2026-03-03T19:00:00Z"});
        let (status, body) = s.post("/api/v1/coverages", &charge, circle).await;
        assert_eq!((status, code(&body)), (409, "coverage_conflict"), "{body}");
        let past = json!({"covered_user_id": carol.id, "by_user_id": bob.id, "start": "2026-03-01T18:00:00Z", "end": "2026-03-01T19:00:00Z"});
        let (status, body) = s.post("/api/v1/coverages", &charge, past).await;
        assert_eq!((status, code(&body)), (400, "invalid_coverage"), "{body}");
        let (_, dir) = s.get("/api/v1/oncall?at=2026-03-03T20:00:00Z", &nurse).await;
        let now = &dir["roles"][0]["now"][0];
        assert_eq!((&now["user_id"], &now["scheduled_user_id"]), (&json!(carol.id), &json!(bob.id)));
        assert_eq!(now["covering_for"], json!([bob.id]));
        let (status, list) = s.get("/api/v1/coverages", &nurse).await;
        assert_eq!((status, list["coverages"].as_array().unwrap().len()), (200, 1));

        // Another organization's role is not found; its own directory is empty.
        let river_admin = s.user_in_org(Some(other), "river.admin2", medhub_core::model::SystemRole::Admin).await;
        s.set_roles(&river_admin, &["administrator"]).await;
        let (status, body) = s.get("/api/v1/oncall/cardiology-oncall", &river_admin).await;
        assert_eq!((status, code(&body)), (404, "not_found"));
        let (_, theirs) = s.get("/api/v1/oncall", &river_admin).await;
        assert_eq!(theirs["roles"], json!([]));
        let (status, _) = call(&s, Method::DELETE, &format!("/api/v1/coverages/{}", coverage["id"].as_str().unwrap()), &river_admin, None).await;
        assert_eq!(status, 404);

        // The role's page lists its schedule with its overrides; removing one works once.
        let (status, detail) = s.get("/api/v1/oncall/cardiology-oncall", &nurse).await;
        assert_eq!(status, 200, "{detail}");
        assert_eq!(detail["schedules"][0]["overrides"].as_array().unwrap().len(), 3);
        let gone = format!("{overrides}/{}", created["id"].as_str().unwrap());
        assert_eq!(call(&s, Method::DELETE, &gone, &charge, None).await.0, 204);
        let (status, body) = call(&s, Method::DELETE, &gone, &charge, None).await;
        assert_eq!((status, code(&body)), (404, "not_found"));
        let (status, body) = call(&s, Method::PATCH, "/api/v1/oncall/cardiology-oncall", &charge, Some(json!({"name": "Cardiology (on call)", "department": ""}))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!((body["name"].as_str(), &body["department"]), (Some("Cardiology (on call)"), &Value::Null));

        // Every change is in the audit log.
        let records = s.audit_until(|r| r.iter().any(|a| a.action == "schedule.override_remove")).await;
        for action in ["oncall.role_create", "oncall.role_update", "schedule.create", "schedule.override_add", "schedule.swap", "coverage.add", "schedule.override_remove"] {
            let r = records.iter().find(|a| a.action == action).unwrap_or_else(|| panic!("no {action}"));
            assert_eq!(r.actor, Some(UserId::from_uuid(charge.id)), "{action}");
        }
    }
}

each_backend! {
    async fn a_berlin_daily_rotation_shows_23_and_25_hour_days_in_the_timeline(db) {
        let clock = Arc::new(ManualClock::new(ts("2026-03-03T09:00:00Z")));
        let s = server(db, &clock, Duration::from_secs(30)).await;
        let keeper = staff(&s, "dept.head", &["department_head"]).await;
        let (alice, bob) = (s.user("dr.alice").await, s.user("dr.bob").await);
        role_with_schedule(&s, &keeper, "icu-oncall", json!([daily(&[&alice, &bob])])).await;
        let length = |x: &Value| at(&x["end"]).duration_since(at(&x["start"]));
        for (from, to, short_or_long, start, end) in [
            // Spring forward, the night of 28 to 29 March: 08:00 CET to 08:00 CEST is 23 hours.
            ("2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z", 23, "2026-03-28T07:00:00Z", "2026-03-29T06:00:00Z"),
            // Fall back, the night of 24 to 25 October: 08:00 CEST to 08:00 CET is 25 hours.
            ("2026-10-23T12:00:00Z", "2026-10-26T12:00:00Z", 25, "2026-10-24T06:00:00Z", "2026-10-25T07:00:00Z"),
        ] {
            let (status, tl) = s.get(&format!("/api/v1/oncall/icu-oncall/shifts?from={from}&to={to}"), &bob).await;
            assert_eq!(status, 200, "{tl}");
            let shifts = tl["shifts"].as_array().unwrap();
            assert_eq!(shifts.len(), 4, "{tl}");
            let hours: Vec<i64> = shifts.iter().map(|x| length(x).as_hours()).collect();
            assert_eq!(hours, [24, short_or_long, 24, 24], "{tl}");
            assert_eq!((at(&shifts[1]["start"]), at(&shifts[1]["end"])), (ts(start), ts(end)));
            // Every hand-over is at 08:00 on the wall clock in Berlin.
            for x in shifts {
                let local = at(&x["start"]).in_tz("Europe/Berlin").unwrap();
                assert_eq!((local.hour(), local.minute()), (8, 0), "{x}");
            }
            // Consecutive: each shift ends where the next begins, people alternate.
            for w in shifts.windows(2) {
                assert_eq!(w[0]["end"], w[1]["start"]);
                assert_ne!(w[0]["user_id"], w[1]["user_id"]);
            }
        }
        // The calendar export says the same, in UTC.
        let resp = reqwest::Client::new()
            .get(s.url("/api/v1/oncall/icu-oncall/calendar.ics?from=2026-03-28T12:00:00Z&to=2026-03-29T12:00:00Z"))
            .bearer_auth(&bob.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/calendar"));
        let ics = resp.text().await.unwrap();
        assert!(ics.contains("DTSTART:20260328T070000Z\r\nDTEND:20260329T060000Z\r\n"), "{ics}");
        // A bad interval is refused with its code.
        let (status, body) = s.get("/api/v1/oncall/icu-oncall/shifts?from=2026-03-29T00:00:00Z&to=2026-03-28T00:00:00Z", &bob).await;
        assert_eq!((status, code(&body)), (400, "invalid_interval"));
        let (status, body) = s.get("/api/v1/oncall/icu-oncall/shifts?from=2026-01-01T00:00:00Z&to=2027-06-01T00:00:00Z", &bob).await;
        assert_eq!((status, code(&body)), (400, "invalid_interval"));
    }
}

async fn import(s: &TestServer, u: &TestUser, path: &str, content_type: &str, body: String) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(s.url(path))
        .bearer_auth(&u.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

each_backend! {
    async fn a_calendar_exported_from_one_role_imports_into_another_unchanged(db) {
        let clock = Arc::new(ManualClock::new(ts("2026-03-03T09:00:00Z")));
        let s = server(db, &clock, Duration::from_secs(30)).await;
        let keeper = staff(&s, "charge.kim", &["charge_nurse"]).await;
        let (alice, bob, carol) = (s.user("dr.alice").await, s.user("bob.h").await, s.user("dr.carol").await);
        // Twelve-hour shifts at 07:00 and 19:00 across the spring change, three people.
        let rotation = json!({"participants": [alice.id, bob.id, carol.id], "start": "2026-03-02T07:00:00", "kind": "custom", "hours": 12});
        role_with_schedule(&s, &keeper, "icu-oncall", json!([rotation])).await;
        // The other role's schedule has no rotation: it is filled by imports.
        let target = role_with_schedule(&s, &keeper, "icu-mirror", json!([])).await;
        let window = "from=2026-03-27T00:00:00Z&to=2026-04-02T00:00:00Z";
        let resp = reqwest::Client::new()
            .get(s.url(&format!("/api/v1/oncall/icu-oncall/calendar.ics?{window}")))
            .bearer_auth(&alice.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let ics = resp.text().await.unwrap();
        assert!(ics.starts_with("BEGIN:VCALENDAR\r\n") && ics.contains("X-MEDHUB-USER:"), "{ics}");

        // Import: every exported shift starting in the window becomes an override.
        let path = format!("/api/v1/oncall/icu-mirror/calendar?{window}");
        let (status, body) = import(&s, &alice, &path, "text/calendar", ics.clone()).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "only rota keepers import");
        let (status, report) = import(&s, &keeper, &path, "text/calendar", ics.clone()).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["schedule_id"], json!(target));
        let (_, a) = s.get(&format!("/api/v1/oncall/icu-oncall/shifts?{window}"), &alice).await;
        let (_, b) = s.get(&format!("/api/v1/oncall/icu-mirror/shifts?{window}"), &alice).await;
        let pick = |v: &Value, whole: bool| -> Vec<(String, String, String)> {
            v["shifts"].as_array().unwrap().iter()
                .filter(|x| !whole || at(&x["start"]) >= ts("2026-03-27T00:00:00Z"))
                .map(|x| (x["user_id"].as_str().unwrap().to_owned(), x["start"].as_str().unwrap().to_owned(), x["end"].as_str().unwrap().to_owned()))
                .collect()
        };
        let exported = pick(&a, true);
        assert_eq!(report["added"], json!(exported.len()));
        assert_eq!(report["removed"], 0);
        assert_eq!(pick(&b, false), exported, "the same people at the same instants");
        // The spring-forward night is an 11-hour shift in both.
        assert!(exported.iter().any(|(_, s0, e0)| ts(e0).duration_since(ts(s0)) == SignedDuration::from_hours(11)));
        // Importing again replaces the earlier import's overrides: nothing doubles.
        let (status, again) = import(&s, &keeper, &path, "text/calendar", ics.clone()).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!((&again["removed"], &again["added"]), (&report["added"], &report["added"]));
        let (_, b2) = s.get(&format!("/api/v1/oncall/icu-mirror/shifts?{window}"), &alice).await;
        assert_eq!(pick(&b2, false), exported);

        // Another system's calendar names people by e-mail (matched to usernames) or id.
        let outside = [
            "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Rota//EN",
            "BEGIN:VEVENT", "UID:a@rota", "DTSTART;TZID=Europe/Berlin:20260401T080000", "DTEND;TZID=Europe/Berlin:20260401T200000",
            "ATTENDEE;CN=Bob:mailto:bob.h@hospital.example", "END:VEVENT",
            "BEGIN:VEVENT", "UID:b@rota", "DTSTART:20260401T180000Z", "DURATION:PT12H",
            "ATTENDEE;CN=Nobody:mailto:nobody@hospital.example", "END:VEVENT",
            "BEGIN:VEVENT", "UID:c@rota", "DTSTART:20260401T180000Z", "DURATION:PT12H",
            "ATTENDEE:urn:uuid:00000000-0000-0000-0000-000000000001", "END:VEVENT",
            "END:VCALENDAR", "",
        ].join("\r\n");
        let (status, body) = import(&s, &keeper, &path, "text/calendar", outside.clone()).await;
        assert_eq!((status, code(&body)), (422, "unknown_attendees"), "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("lines 10, 16"), "{message}");
        // All or nothing: the earlier import is untouched.
        let (_, b3) = s.get(&format!("/api/v1/oncall/icu-mirror/shifts?{window}"), &alice).await;
        assert_eq!(pick(&b3, false), exported);
        let known = outside.replace("mailto:nobody@hospital.example", &format!("urn:uuid:{}", carol.id))
            .replace("urn:uuid:00000000-0000-0000-0000-000000000001", &format!("mailto:{}@elsewhere.example", alice.username));
        let (status, body) = import(&s, &keeper, "/api/v1/oncall/icu-mirror/calendar?from=2026-04-01T00:00:00Z&to=2026-04-03T00:00:00Z", "text/calendar", known).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["added"], 3);
        let (_, apr) = s.get("/api/v1/oncall/icu-mirror/shifts?from=2026-04-01T07:00:00Z&to=2026-04-01T07:00:01Z", &alice).await;
        assert_eq!(apr["shifts"][0]["user_id"], json!(bob.id));
        assert_eq!(at(&apr["shifts"][0]["start"]), ts("2026-04-01T06:00:00Z"), "08:00 CEST");

        // Bad input, each with its code.
        let (status, body) = import(&s, &keeper, &path, "application/json", ics.clone()).await;
        assert_eq!((status, code(&body)), (415, "unsupported_media_type"));
        let broken = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:20260401T180000Z\r\nATTENDEE:mailto:x@y\r\nEND:VCALENDAR\r\n".to_owned();
        let (status, body) = import(&s, &keeper, &path, "text/calendar", broken).await;
        assert_eq!((status, code(&body)), (400, "invalid_ical"), "{body}");
        assert!(body["error"]["message"].as_str().unwrap().starts_with("line "), "{body}");
        let (status, body) = import(&s, &keeper, &path, "text/calendar", "x".repeat(medhub_wire::ical::MAX_ICAL_BYTES + 1)).await;
        assert_eq!((status, code(&body)), (413, "payload_too_large"));
        let (status, body) = s.post("/api/v1/oncall", &keeper, json!({"key": "empty-role", "name": "Empty", "kind": "role"})).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = import(&s, &keeper, "/api/v1/oncall/empty-role/calendar", "text/calendar", ics.clone()).await;
        assert_eq!((status, code(&body)), (409, "no_schedule"));
        let (status, body) = s.post("/api/v1/oncall/icu-mirror/schedules", &keeper, json!({"name": "Backup", "time_zone": "Europe/Berlin", "rotations": []})).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = import(&s, &keeper, &path, "text/calendar", ics.clone()).await;
        assert_eq!((status, code(&body)), (400, "schedule_required"));
        let (status, body) = import(&s, &keeper, &format!("{path}&schedule={target}"), "text/calendar", ics).await;
        assert_eq!(status, 200, "{body}");
        // A large roster (more than a JSON body's 64 KiB) is read whole.
        let mut big = vec!["BEGIN:VCALENDAR".to_owned(), "VERSION:2.0".into(), "PRODID:-//Rota//EN".into()];
        for n in 0..200 {
            let start = ts("2026-04-10T00:00:00Z") + SignedDuration::from_hours(2 * n);
            big.push("BEGIN:VEVENT".into());
            big.push(format!("UID:big-{n}@rota"));
            big.push(format!("DTSTART:{}", start.strftime("%Y%m%dT%H%M%SZ")));
            big.push("DURATION:PT1H".into());
            big.push(format!("DESCRIPTION:{}", "x".repeat(400)));
            big.push(format!("X-MEDHUB-USER:{}", alice.id));
            big.push("END:VEVENT".into());
        }
        big.extend(["END:VCALENDAR".to_owned(), String::new()]);
        let big = big.join("\r\n");
        assert!(big.len() > 64 * 1024);
        let path = format!("/api/v1/oncall/icu-mirror/calendar?from=2026-04-10T00:00:00Z&to=2026-04-30T00:00:00Z&schedule={target}");
        let (status, body) = import(&s, &keeper, &path, "text/calendar", big).await;
        assert_eq!((status, &body["added"]), (200, &json!(200)), "{body}");
        let records = s.audit_until(|r| r.iter().filter(|a| a.action == "schedule.import").count() >= 5).await;
        assert!(records.iter().filter(|a| a.action == "schedule.import").all(|a| a.object_id.as_deref().is_some_and(|o| !o.is_empty())));
    }
}

each_backend! {
    async fn a_message_to_a_role_reaches_its_holder_now_and_the_resolution_is_recorded(db) {
        let clock = Arc::new(ManualClock::new(ts("2026-03-03T09:00:00Z")));
        let s = server(db, &clock, Duration::from_secs(30)).await;
        let keeper = staff(&s, "charge.kim", &["charge_nurse"]).await;
        let sender = staff(&s, "ed.nurse", &["nurse"]).await;
        let (alice, bob) = (s.user("dr.alice").await, s.user("dr.bob").await);
        role_with_schedule(&s, &keeper, "cardiology-oncall", json!([daily(&[&alice, &bob])])).await;

        // Bob holds it today; his connection receives the message.
        let (mut b, _) = s.connect(&bob, None).await;
        let send = json!({"client_txn_id": "t1", "body": "STEMI in bay 3, please come", "priority": "critical"});
        let (status, sent) = s.post("/api/v1/oncall/cardiology-oncall/messages", &sender, send.clone()).await;
        assert_eq!(status, 201, "{sent}");
        assert_eq!(holder_ids(&sent["holders"]), [id(&bob)]);
        assert_eq!(sent["holders"][0]["source"], json!({"kind": "rotation", "rotation": 0}));
        assert_eq!(sent["duplicate"], false);
        let conversation = sent["conversation_id"].as_str().unwrap().to_owned();
        let created = b.next_event().await;
        assert_eq!(created["kind"], "conversation.created", "{created}");
        let e = b.next_event().await;
        assert_eq!((e["kind"].as_str(), e["message"]["body"].as_str()), (Some("message.created"), Some("STEMI in bay 3, please come")));
        assert_eq!(e["message"]["priority"], "critical");
        // The conversation is titled with the role's name; sender and holder are its members.
        let (status, conv) = s.get(&format!("/api/v1/conversations/{conversation}"), &bob).await;
        assert_eq!(status, 200, "{conv}");
        assert_eq!(conv["conversation"]["title"], "cardiology-oncall name");
        let message = MessageId::from_uuid(sent["message"]["id"].as_str().unwrap().parse().unwrap());

        // The resolution row and its audit record.
        let store = s.services.store.clone();
        let rows = s.on_server(async move { store.resolutions(message).await.unwrap() }).await;
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].kind, rows[0].conversation.to_string()), (ResolutionKind::Send, conversation.clone()));
        assert!(rows[0].holders.contains(&bob.id.to_string()) && !rows[0].holders.contains("dr.bob"), "ids only: {}", rows[0].holders);
        let records = s.audit_until(|r| r.iter().any(|a| a.action == "oncall.resolve")).await;
        let rec = records.iter().find(|a| a.action == "oncall.resolve").unwrap();
        assert_eq!((rec.object_type.as_deref(), rec.object_id.as_deref()), (Some("message"), Some(message.to_string().as_str())));
        assert_eq!(rec.actor, Some(UserId::from_uuid(sender.id)));
        assert!(!format!("{rec:?}").contains("STEMI"), "no message text in the audit record");

        // A resend is recognised, answers with the same holders, records nothing new.
        let (status, again) = s.post("/api/v1/oncall/cardiology-oncall/messages", &sender, send).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!((&again["duplicate"], &again["message"]["id"]), (&json!(true), &sent["message"]["id"]));
        assert_eq!(holder_ids(&again["holders"]), [id(&bob)]);
        let store = s.services.store.clone();
        assert_eq!(s.on_server(async move { store.resolutions(message).await.unwrap() }).await.len(), 1);

        // Tomorrow Alice holds it: the next message goes into the same conversation, to her.
        clock.advance(SignedDuration::from_hours(24));
        let (sender, alice, keeper) = (s.new_session(&sender).await, s.new_session(&alice).await, s.new_session(&keeper).await);
        let (status, next) = s.post("/api/v1/oncall/cardiology-oncall/messages", &sender,
            json!({"client_txn_id": "t2", "body": "Troponin back", "priority": "urgent"})).await;
        assert_eq!(status, 201, "{next}");
        assert_eq!(holder_ids(&next["holders"]), [id(&alice)]);
        assert_eq!(next["conversation_id"], json!(conversation));
        let (status, history) = s.get(&format!("/api/v1/conversations/{conversation}/messages"), &alice).await;
        assert_eq!(status, 200, "{history}");
        assert_eq!(history["messages"].as_array().unwrap().len(), 2);

        // If the resolution cannot be recorded after the message committed, the sender is told
        // so; the resend (same client_txn_id) sends nothing twice and records it, once.
        s.sql("ALTER TABLE role_resolutions RENAME TO role_resolutions_away").await;
        let urgent = json!({"client_txn_id": "t7", "body": "BP 70/40", "priority": "critical"});
        let (status, body) = s.post("/api/v1/oncall/cardiology-oncall/messages", &sender, urgent.clone()).await;
        assert_eq!((status, code(&body)), (500, "internal"), "{body}");
        s.sql("ALTER TABLE role_resolutions_away RENAME TO role_resolutions").await;
        let (status, again) = s.post("/api/v1/oncall/cardiology-oncall/messages", &sender, urgent).await;
        assert_eq!((status, &again["duplicate"]), (200, &json!(true)), "{again}");
        assert_eq!(holder_ids(&again["holders"]), [id(&alice)]);
        let late = MessageId::from_uuid(again["message"]["id"].as_str().unwrap().parse().unwrap());
        let store = s.services.store.clone();
        let rows = s.on_server(async move { store.resolutions(late).await.unwrap() }).await;
        assert_eq!(rows.len(), 1);
        let (_, history) = s.get(&format!("/api/v1/conversations/{conversation}/messages"), &alice).await;
        assert_eq!(history["messages"].as_array().unwrap().len(), 3, "sent once");

        // Nobody on call: a clear refusal, and nothing is sent.
        let (status, body) = s.post("/api/v1/oncall", &keeper, json!({"key": "night-float", "name": "Night float", "kind": "role"})).await;
        assert_eq!(status, 201, "{body}");
        let before = s.get("/api/v1/conversations", &sender).await.1["conversations"].as_array().unwrap().len();
        let (status, body) = s.post("/api/v1/oncall/night-float/messages", &sender,
            json!({"client_txn_id": "t3", "body": "anyone?", "priority": "urgent"})).await;
        assert_eq!((status, code(&body)), (409, "nobody_on_call"), "{body}");
        assert_eq!(s.get("/api/v1/conversations", &sender).await.1["conversations"].as_array().unwrap().len(), before);
        // The only holder writing to their own role reaches nobody else: refused too.
        let (status, body) = s.post("/api/v1/oncall/cardiology-oncall/messages", &alice,
            json!({"client_txn_id": "t4", "body": "note to self", "priority": "routine"})).await;
        assert_eq!((status, code(&body)), (409, "nobody_else_on_call"), "{body}");
        // Unknown roles, and roles without the permission to send.
        let (status, body) = s.post("/api/v1/oncall/no-such-role/messages", &sender, json!({"client_txn_id": "t5", "body": "x"})).await;
        assert_eq!((status, code(&body)), (404, "not_found"));
        let observer = staff(&s, "obs.ray", &["observer"]).await;
        let (status, body) = s.post("/api/v1/oncall/cardiology-oncall/messages", &observer, json!({"client_txn_id": "t6", "body": "x"})).await;
        assert_eq!((status, code(&body)), (403, "forbidden"));
    }
}

each_backend! {
    async fn open_urgent_items_follow_the_role_to_its_next_holder(db) {
        let clock = Arc::new(ManualClock::new(ts("2026-03-03T09:00:00Z")));
        // A short hand-over tick: the job itself must do it, the test only moves the clock.
        let s = server(db, &clock, Duration::from_millis(200)).await;
        let keeper = staff(&s, "charge.kim", &["charge_nurse"]).await;
        let sender = staff(&s, "ed.nurse", &["nurse"]).await;
        let (alice, bob, carol) = (s.user("dr.alice").await, s.user("dr.bob").await, s.user("dr.carol").await);
        role_with_schedule(&s, &keeper, "cardiology-oncall", json!([daily(&[&alice, &bob])])).await;
        let post = |txn: &str, priority: &str| json!({"client_txn_id": txn, "body": format!("item {txn}"), "priority": priority});
        let path = "/api/v1/oncall/cardiology-oncall/messages";
        let mut ids = Vec::new();
        for (txn, priority) in [("open", "urgent"), ("declined", "critical"), ("taken", "critical"), ("routine", "routine")] {
            let (status, body) = s.post(path, &sender, post(txn, priority)).await;
            assert_eq!(status, 201, "{body}");
            ids.push(body["message"]["id"].as_str().unwrap().to_owned());
        }
        let conversation = s.post(path, &sender, post("open", "urgent")).await.1["conversation_id"].as_str().unwrap().to_owned();
        // Bob declines one ("I can't take this": still open) and takes another.
        let (status, _) = s.post(&format!("/api/v1/messages/{}/ack", ids[1]), &bob, json!({"response": {"kind": "decline"}})).await;
        assert_eq!(status, 200);
        let (status, _) = s.post(&format!("/api/v1/messages/{}/ack", ids[2]), &bob, json!({"response": {"kind": "accept"}})).await;
        assert_eq!(status, 200);

        // Nothing moves while Bob holds the role.
        let service = s.services.oncall.clone();
        let report = s.on_server(async move { service.handover_tick().await.unwrap() }).await;
        assert_eq!(report.moved, 0);
        assert_eq!(report.next, Some(ts("2026-03-04T07:00:00Z")), "the job knows when the holder changes");

        // 08:00 on the 4th: Alice holds it. The job adds her to the conversation, and records
        // the two open items (the urgent one, and the declined critical one) as moved to her.
        clock.set(ts("2026-03-04T07:00:00Z"));
        let alice = s.new_session(&alice).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if s.get(&format!("/api/v1/conversations/{conversation}"), &alice).await.0 == 200 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "Alice was never added to the conversation");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let records = s.audit_until(|r| r.iter().filter(|a| a.action == "oncall.handover").count() >= 2).await;
        let moved: Vec<String> = records.iter().filter(|a| a.action == "oncall.handover").filter_map(|a| a.object_id.clone()).collect();
        let mut want = vec![ids[0].clone(), ids[1].clone()];
        want.sort();
        let mut got = moved.clone();
        got.sort();
        assert_eq!(got, want, "only the open urgent and critical items");
        for m in [&ids[0], &ids[1]] {
            let store = s.services.store.clone();
            let mid = MessageId::from_uuid(m.parse().unwrap());
            let rows = s.on_server(async move { store.resolutions(mid).await.unwrap() }).await;
            let kinds: Vec<ResolutionKind> = rows.iter().map(|r| r.kind).collect();
            assert_eq!(kinds, [ResolutionKind::Send, ResolutionKind::Handover], "{m}");
            assert!(rows[1].holders.contains(&alice.id.to_string()));
            assert_eq!(rows[1].at, ts("2026-03-04T07:00:00Z"));
        }
        // Alice sees them and can act on them.
        let (status, _) = s.post(&format!("/api/v1/messages/{}/ack", ids[0]), &alice, json!({"response": {"kind": "accept"}})).await;
        assert_eq!(status, 200);

        // Ticks are idempotent: running again (as another node would) records nothing more.
        let service = s.services.oncall.clone();
        let report = s.on_server(async move { service.handover_tick().await.unwrap() }).await;
        assert_eq!(report.moved, 0);

        // Coverage counts as a change of holder too: Carol covers Alice; the declined item
        // (still open) follows to Carol, the accepted one does not.
        let cover = json!({"covered_user_id": alice.id, "by_user_id": carol.id, "start": "2026-03-04T08:00:00Z", "end": "2026-03-04T12:00:00Z"});
        let keeper = s.new_session(&keeper).await;
        let (status, body) = s.post("/api/v1/coverages", &keeper, cover).await;
        assert_eq!(status, 201, "{body}");
        clock.set(ts("2026-03-04T08:00:00Z"));
        let service = s.services.oncall.clone();
        let _ = s.on_server(async move { service.handover_tick().await.unwrap() }).await;
        let records = s.audit_until(|r| r.iter().filter(|a| a.action == "oncall.handover").count() >= 3).await;
        let last = records.iter().filter(|a| a.action == "oncall.handover").nth(2).unwrap();
        assert_eq!(last.object_id.as_deref(), Some(ids[1].as_str()));
        assert!(last.target.as_deref().is_some_and(|t| t.contains(&carol.id.to_string())));
        assert_eq!(records.iter().filter(|a| a.action == "oncall.handover").count(), 3);
    }
}
