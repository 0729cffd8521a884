//! Single sign-on storage, on SQLite and PostgreSQL: sign-in flows are single use and expire,
//! also under concurrent callbacks; IdP subjects link to users atomically and never through a
//! taken username; SAML assertions are recorded once (the replay cache).

// Tests panic on anything unexpected; that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::{SignedDuration, Timestamp};
use medhub_core::OrgId;
use medhub_core::model::Org;
use medhub_store::{AuthFlow, DynStore, StoreError, UserRecord, each_backend};

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn secs(s: i64) -> SignedDuration {
    SignedDuration::from_secs(s)
}

async fn org(store: &DynStore) -> OrgId {
    let org = Org {
        id: OrgId::new_v7(),
        name: "General Hospital".into(),
        created_at: now(),
        idle_timeout: medhub_core::session::DEFAULT_IDLE_TIMEOUT,
    };
    assert!(store.bootstrap(&org, &record(org.id, "admin")).await.unwrap());
    org.id
}

fn record(org: OrgId, username: &str) -> UserRecord {
    medhub_store::testdb::user_record(org, username, now())
}

fn flow(tag: u8, created: Timestamp) -> AuthFlow {
    AuthFlow {
        state_hash: [tag; 32],
        kind: "oidc".into(),
        nonce: format!("nonce-{tag}"),
        verifier_enc: vec![tag; 40],
        return_to: Some("/conversations".into()),
        created_at: created,
        expires_at: created + secs(600),
    }
}

each_backend! {
    async fn a_flow_is_used_once_and_only_before_it_expires(db) {
        let store = db.open().await;
        let f = flow(1, now());
        store.create_auth_flow(&f).await.unwrap();
        assert_eq!(store.consume_auth_flow(&[9; 32], "oidc", now()).await.unwrap(), None, "unknown state");
        assert_eq!(store.consume_auth_flow(&f.state_hash, "saml", now()).await.unwrap(), None, "another kind");
        let got = store.consume_auth_flow(&f.state_hash, "oidc", now() + secs(5)).await.unwrap();
        assert_eq!(got, Some(f.clone()), "the first callback gets everything that was stored");
        assert_eq!(store.consume_auth_flow(&f.state_hash, "oidc", now() + secs(6)).await.unwrap(), None, "replay");

        // 9:59 after it began a flow works, 10:00 after it does not.
        let g = flow(2, now());
        store.create_auth_flow(&g).await.unwrap();
        assert_eq!(store.consume_auth_flow(&g.state_hash, "oidc", g.expires_at).await.unwrap(), None);
        let h = flow(3, now());
        store.create_auth_flow(&h).await.unwrap();
        assert!(store.consume_auth_flow(&h.state_hash, "oidc", h.expires_at - secs(1)).await.unwrap().is_some());
    }
}

each_backend! {
    async fn of_concurrent_callbacks_exactly_one_gets_the_flow(db) {
        let store = db.open().await;
        let f = flow(4, now());
        store.create_auth_flow(&f).await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, hash) = (store.clone(), f.state_hash);
                tokio::spawn(async move { store.consume_auth_flow(&hash, "oidc", now()).await.unwrap() })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.unwrap().is_some());
        }
        assert_eq!(won, 1);
    }
}

each_backend! {
    async fn expired_flows_are_deleted_when_a_new_one_begins(db) {
        let store = db.open().await;
        let old = flow(5, now());
        store.create_auth_flow(&old).await.unwrap();
        // A new flow after the old one expired removes it; a late callback cannot revive it.
        store.create_auth_flow(&flow(6, old.expires_at)).await.unwrap();
        assert_eq!(store.consume_auth_flow(&old.state_hash, "oidc", now()).await.unwrap(), None);
        assert!(store.consume_auth_flow(&[6; 32], "oidc", old.expires_at).await.unwrap().is_some());
    }
}

each_backend! {
    async fn subjects_link_to_new_users_and_never_through_a_taken_username(db) {
        let store = db.open().await;
        let org = org(&store).await;
        let iss = "https://idp.example/realms/h";
        assert_eq!(store.sso_identity(iss, "sub-1").await.unwrap(), None);

        let alice = record(org, "alice");
        store.create_sso_user(&alice, iss, "sub-1", now()).await.unwrap();
        assert_eq!(store.sso_identity(iss, "sub-1").await.unwrap(), Some(alice.user.id));
        assert_eq!(store.sso_identity("https://other.example", "sub-1").await.unwrap(), None, "per issuer");
        assert_eq!(store.sso_identity(iss, "SUB-1").await.unwrap(), None, "subjects are exact");
        let stored = store.user_record_by_username("alice").await.unwrap().unwrap();
        assert_eq!((stored.user.id, stored.password_hash), (alice.user.id, None));

        // A local account named bob exists: an IdP subject called bob gets no user and no link.
        store.create_user(&record(org, "bob")).await.unwrap();
        let e = store.create_sso_user(&record(org, "bob"), iss, "sub-2", now()).await.unwrap_err();
        assert!(matches!(e, StoreError::UsernameTaken), "{e}");
        assert_eq!(store.sso_identity(iss, "sub-2").await.unwrap(), None);

        // The same subject twice (two first sign-ins racing): the second creates nothing.
        let dup = record(org, "alice2");
        let e = store.create_sso_user(&dup, iss, "sub-1", now()).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        assert!(store.user_record_by_username("alice2").await.unwrap().is_none(), "rolled back");
    }
}

each_backend! {
    async fn a_saml_assertion_is_recorded_once_and_forgotten_only_after_it_expires(db) {
        let store = db.open().await;
        let until = now() + secs(300);
        assert!(store.record_saml_assertion(&[1; 32], until, now()).await.unwrap(), "first use");
        assert!(!store.record_saml_assertion(&[1; 32], until, now() + secs(1)).await.unwrap(), "replay");
        assert!(store.record_saml_assertion(&[2; 32], until, now()).await.unwrap(), "another assertion");
        // Still remembered the second before it expires; forgotten (and usable: the service's
        // own expiry check refuses it by then) once it has.
        assert!(!store.record_saml_assertion(&[1; 32], until, until - secs(1)).await.unwrap());
        assert!(store.record_saml_assertion(&[1; 32], until + secs(300), until).await.unwrap());

        // Of concurrent uses exactly one wins.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.record_saml_assertion(&[3; 32], until, now()).await.unwrap() })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1);
    }
}
