//! The audit log's proofs over REST, on both databases: a compliance officer gets RFC 9162
//! inclusion and consistency proofs that verify against the log's roots; nobody else gets
//! them; out-of-range requests are refused with a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use medhub_core::merkle;
use medhub_testkit::{TestServer, each_backend};
use serde_json::Value;

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
