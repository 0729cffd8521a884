//! The audit log's proofs over REST, on both databases: a compliance officer gets RFC 9162
//! inclusion and consistency proofs that verify against the log's roots; nobody else gets
//! them; out-of-range requests are refused with a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use medhub_core::merkle;
use medhub_core::model::SystemRole;
use medhub_testkit::{TestServer, each_backend};
use reqwest::Method;
use serde_json::Value;
use serde_json::json;

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

fn hash(v: &Value) -> merkle::Hash {
    let s = v.as_str().unwrap();
    let bytes: Vec<u8> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect();
    bytes.try_into().unwrap()
}

fn hashes(v: &Value) -> Vec<merkle::Hash> {
    v.as_array().unwrap().iter().map(hash).collect()
}

each_backend! {
    async fn a_compliance_officer_gets_proofs_that_verify(db) {
        let s = TestServer::start_on(db, Default::default()).await;
        let officer = s.user("privacy.pat").await;
        s.set_roles(&officer, &["compliance_officer"]).await;
        let clerk = s.user("clerk.sam").await;
        s.set_roles(&clerk, &["unit_clerk"]).await;
        // Every authenticated request is an audited decision: make some, and wait for them.
        for _ in 0..6 {
            s.get("/api/v1/me", &clerk).await;
        }
        s.audit_until(|r| r.len() >= 6).await;
        let store = s.services.store.clone();
        let head = s.on_server(async move { store.audit_head().await.unwrap() }).await;
        let size = head.size;
        assert!(size >= 6, "{size}");
        let root = head.tree().unwrap().root();

        for seq in [0, size / 2, size - 1] {
            let (status, p) = s.get(&format!("/api/v1/audit/proof/inclusion?seq={seq}&size={size}"), &officer).await;
            assert_eq!(status, 200, "{p}");
            assert_eq!(hash(&p["root"]), root);
            merkle::verify_inclusion(&hash(&p["leaf_hash"]), seq, size, &hashes(&p["proof"]), &root).unwrap();
        }
        for from in [1, 3, size - 1, size] {
            let (status, p) = s.get(&format!("/api/v1/audit/proof/consistency?from={from}&to={size}"), &officer).await;
            assert_eq!(status, 200, "{p}");
            assert_eq!(hash(&p["to_root"]), root);
            merkle::verify_consistency(from, size, &hash(&p["from_root"]), &root, &hashes(&p["proof"])).unwrap();
        }

        // Out of range, and not for everybody.
        let too_big = size + 1_000_000;
        for bad in [
            format!("/api/v1/audit/proof/inclusion?seq={size}&size={size}"),
            format!("/api/v1/audit/proof/inclusion?seq=0&size={too_big}"),
            format!("/api/v1/audit/proof/consistency?from={size}&to=1"),
            format!("/api/v1/audit/proof/consistency?from=1&to={too_big}"),
        ] {
            let (status, body) = s.get(&bad, &officer).await;
            assert_eq!((status, code(&body)), (400, "invalid_request"), "{bad}: {body}");
        }
        let (status, body) = s.get(&format!("/api/v1/audit/proof/inclusion?seq=0&size={size}"), &clerk).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    }
}

/// Every page of a search, following `next` until the last.
async fn search_all(s: &TestServer, officer: &medhub_testkit::TestUser, query: &str, limit: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let cursor = before.as_ref().map(|b| format!("&before={b}")).unwrap_or_default();
        let (status, page) = s.get(&format!("/api/v1/audit/events?limit={limit}{query}{cursor}"), officer).await;
        assert_eq!(status, 200, "{page}");
        out.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(n) => before = Some(n.to_owned()),
            None => return out,
        }
    }
}

each_backend! {
    async fn a_compliance_officer_searches_the_organizations_audit_log(db) {
        const PATIENT: &str = "MRN-42";
        let s = TestServer::start_on(db, Default::default()).await;
        let officer = s.user("privacy.pat").await;
        s.set_roles(&officer, &["compliance_officer"]).await;
        let charge = s.user("charge.kim").await;
        s.set_roles(&charge, &["charge_nurse"]).await;
        let clerk = s.user("clerk.sam").await;
        s.set_roles(&clerk, &["unit_clerk"]).await;
        let team = format!("/api/v1/patients/{PATIENT}/care-team");
        // Activity about the patient: a care team change and reads of the team.
        assert_eq!(s.call(Method::PUT, &format!("{team}/{}", clerk.id), Some(&charge), None).await.0, 201);
        for u in [&charge, &clerk, &charge] {
            assert_eq!(s.get(&team, u).await.0, 200);
        }
        // Denials: the clerk tries the audit log.
        for _ in 0..2 {
            assert_eq!(s.get("/api/v1/audit/events", &clerk).await.0, 403);
        }
        // Another organization, with the same patient id and its own officer: never seen here.
        let river = s.tenant("River Clinic", "river.admin").await;
        let river_nurse = s.user_in_org(Some(river), "river.nurse", SystemRole::User).await;
        s.set_roles(&river_nurse, &["charge_nurse"]).await;
        assert_eq!(s.get(&team, &river_nurse).await.0, 200);
        let river_officer = s.user_in_org(Some(river), "river.officer", SystemRole::User).await;
        s.set_roles(&river_officer, &["compliance_officer"]).await;

        // Everything about the patient: the care team change and the three reads, newest
        // first, nobody else's.
        let about = search_all(&s, &officer, &format!("&patient={PATIENT}"), 500).await;
        let actions: Vec<(&str, &str)> = about.iter().map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap())).collect();
        let (c, k) = (charge.id.to_string(), clerk.id.to_string());
        assert_eq!(
            actions,
            vec![("http", c.as_str()), ("http", k.as_str()), ("http", c.as_str()), ("care_team.add", c.as_str()), ("http", c.as_str())],
            "{about:?}"
        );
        assert!(about.iter().all(|e| e["patient_ref"] == PATIENT));
        let add = &about[3];
        assert_eq!((&add["object_type"], &add["object_id"], &add["outcome"]), (&json!("user"), &json!(k), &json!("success")));
        assert_eq!(add["version"], 2);
        assert!(add["device"].is_null() || add["device"].as_str().unwrap().len() == 32);
        let river_about = search_all(&s, &river_officer, &format!("&patient={PATIENT}"), 500).await;
        assert_eq!(river_about.len(), 1, "{river_about:?}");
        assert_eq!(river_about[0]["actor"], json!(river_nurse.id.to_string()));

        // By user, action and outcome.
        let denied = search_all(&s, &officer, &format!("&user={}&outcome=deny", clerk.id), 500).await;
        assert_eq!(denied.len(), 2, "{denied:?}");
        assert!(denied.iter().all(|e| e["target"] == "GET /api/v1/audit/events" && e["reason"] == "forbidden"));
        let adds = search_all(&s, &officer, "&action=care_team.add", 500).await;
        assert_eq!(adds.len(), 1);
        let objects = search_all(&s, &officer, &format!("&object_type=user&object_id={k}"), 500).await;
        assert_eq!(objects.len(), 1);

        // Pages of 2 give the same records as one page, in the same order, each once.
        let all = search_all(&s, &officer, "", 500).await;
        let paged = search_all(&s, &officer, "", 2).await;
        let seqs = |v: &[Value]| v.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>();
        // The paged run adds its own audit.search and http records, newer than the first run's.
        let tail: Vec<u64> = seqs(&paged).into_iter().filter(|q| seqs(&all).contains(q)).collect();
        assert_eq!(tail, seqs(&all));
        let mut sorted = seqs(&paged);
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(seqs(&paged), sorted, "newest first");

        // A period: nothing before the log began, everything since.
        let (status, page) = s.get("/api/v1/audit/events?until=2000-01-01T00:00:00Z", &officer).await;
        assert_eq!((status, page["events"].as_array().unwrap().len()), (200, 0), "{page}");

        // The searches themselves are recorded, with the patient they named.
        let searched = search_all(&s, &officer, &format!("&action=audit.search&patient={PATIENT}"), 500).await;
        assert!(!searched.is_empty() && searched.iter().all(|e| e["actor"] == json!(officer.id.to_string())));

        // Bad requests are refused with a clear error.
        for bad in [
            "outcome=maybe",
            "limit=0",
            "limit=501",
            "before=yesterday",
            "object_id=x",
            "since=2030-01-01T00:00:00Z&until=2020-01-01T00:00:00Z",
            "colour=blue",
        ] {
            let (status, body) = s.get(&format!("/api/v1/audit/events?{bad}"), &officer).await;
            assert_eq!((status, code(&body)), (400, "invalid_request"), "{bad}: {body}");
        }
    }
}
