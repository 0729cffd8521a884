//! On-call storage on both databases: roles are unique per organization and kept apart
//! between organizations, schedule and coverage writes apply only at the version they were
//! decided at, overrides are rows that can be listed and removed, role conversations and
//! resolutions are idempotent, the open-items query follows the acknowledgement model, and
//! every change commits with its audit record or not at all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::{SignedDuration, Timestamp};
use medhub_core::audit::{AuditRecord, Outcome};
use medhub_core::model::{AckResponse, ConversationKind, MemberRole, Org, Priority};
use medhub_core::plan::{Command, CreateConversation, Limits, Outcome as PlanOutcome, SendMessage};
use medhub_core::policy::Actor;
use medhub_core::{
    ClientTxnId, ConversationId, CoverageId, MessageId, OnCallRoleId, OrgId, OverrideId, ScheduleId, UserId,
};
use medhub_store::testdb::TestDb;
use medhub_store::{
    Backend, DynStore, Location, OnCallKind, OnCallRole, OverrideSource, ResolutionKind, RoleResolution, StoreError,
    StoredCoverage, StoredOverride, StoredSchedule, each_backend,
};

fn at() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn hours(h: i64) -> SignedDuration {
    SignedDuration::from_hours(h)
}

async fn tamper(db: &TestDb, sql: &str) {
    match (db.backend(), db.location()) {
        (Backend::Sqlite, Location::Sqlite { data_dir }) => {
            let c = rusqlite::Connection::open(data_dir.join("medhub.db")).unwrap();
            c.execute_batch(sql).unwrap();
        }
        (Backend::Postgres, Location::Postgres { url, .. }) => {
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            let conn = tokio::spawn(conn);
            c.batch_execute(sql).await.unwrap();
            drop(c);
            conn.await.unwrap().unwrap();
        }
        _ => panic!("unexpected test database"),
    }
}

struct World {
    store: DynStore,
    org: OrgId,
    other: OrgId,
    admin: UserId,
    alice: UserId,
    bob: UserId,
}

async fn world(db: &TestDb) -> World {
    let store = db.open().await;
    let org = Org {
        id: OrgId::new_v7(),
        name: "General".into(),
        created_at: at(),
        idle_timeout: medhub_core::session::DEFAULT_IDLE_TIMEOUT,
    };
    let admin = medhub_store::testdb::user_record(org.id, "gh.admin", at());
    assert!(store.bootstrap(&org, &admin).await.unwrap());
    let alice = medhub_store::testdb::user_record(org.id, "gh.alice", at());
    let bob = medhub_store::testdb::user_record(org.id, "gh.bob", at());
    store.create_user(&alice).await.unwrap();
    store.create_user(&bob).await.unwrap();
    let river = Org { id: OrgId::new_v7(), name: "River".into(), ..org.clone() };
    let river_admin = medhub_store::testdb::user_record(river.id, "river.admin", at());
    store.create_org(&river, &river_admin, &[]).await.unwrap();
    World { store, org: org.id, other: river.id, admin: admin.user.id, alice: alice.user.id, bob: bob.user.id }
}

fn rec(w: &World, action: &str) -> AuditRecord {
    AuditRecord { org: Some(w.org), actor: Some(w.admin), ..AuditRecord::new(at(), action, Outcome::Success) }
}

fn role(org: OrgId, key: &str) -> OnCallRole {
    OnCallRole {
        id: OnCallRoleId::new_v7(),
        org,
        key: key.into(),
        name: format!("{key} (name)"),
        kind: OnCallKind::Team,
        department: Some("Cardiology".into()),
        created_by: None,
        created_at: at(),
    }
}

fn schedule(w: &World, role: OnCallRoleId) -> StoredSchedule {
    StoredSchedule {
        id: ScheduleId::new_v7(),
        org: w.org,
        role,
        name: "Primary".into(),
        zone: "Europe/Berlin".into(),
        rotations: "[]".into(),
        version: 0,
        created_by: Some(w.admin),
        created_at: at(),
        updated_at: at(),
    }
}

fn over(schedule: ScheduleId, user: UserId, from_h: i64, to_h: i64, source: OverrideSource) -> StoredOverride {
    StoredOverride {
        id: OverrideId::new_v7(),
        schedule,
        user,
        replaces: None,
        start: at() + hours(from_h),
        end: at() + hours(to_h),
        source,
        created_by: None,
        created_at: at(),
    }
}

fn coverage(w: &World, covered: UserId, by: UserId, from_h: i64, to_h: i64) -> StoredCoverage {
    StoredCoverage {
        id: CoverageId::new_v7(),
        org: w.org,
        covered,
        by,
        start: at() + hours(from_h),
        end: at() + hours(to_h),
        created_by: Some(w.admin),
        created_at: at(),
    }
}

async fn audit_actions(store: &DynStore) -> Vec<String> {
    store.audit_events(0, 10_000).await.unwrap().into_iter().map(|(_, r)| r.action).collect()
}

each_backend! {
    async fn roles_are_unique_per_organization_and_kept_apart(db) {
        let w = world(&db).await;
        let s = &w.store;
        let cardio = role(w.org, "cardiology-oncall");
        s.create_oncall_role(&cardio, &[rec(&w, "oncall.role_create")]).await.unwrap();
        let again = role(w.org, "cardiology-oncall");
        assert!(matches!(s.create_oncall_role(&again, &[]).await, Err(StoreError::Conflict(_))));
        // Another organization may use the same key; each sees only its own.
        let theirs = role(w.other, "cardiology-oncall");
        s.create_oncall_role(&theirs, &[]).await.unwrap();
        s.create_oncall_role(&role(w.org, "4west-charge"), &[]).await.unwrap();
        let keys: Vec<String> = s.oncall_roles(w.org).await.unwrap().into_iter().map(|r| r.key).collect();
        assert_eq!(keys, ["4west-charge", "cardiology-oncall"]);
        assert_eq!(s.oncall_role(w.org, "cardiology-oncall").await.unwrap(), Some(cardio.clone()));
        assert_eq!(s.oncall_role(w.other, "cardiology-oncall").await.unwrap().unwrap().id, theirs.id);
        assert_eq!(s.oncall_role(w.other, "4west-charge").await.unwrap(), None);
        assert_eq!(s.oncall_role_by_id(cardio.id).await.unwrap(), Some(cardio.clone()));

        // An update changes name, kind and department, in its own organization only.
        let renamed = OnCallRole { name: "Cardiology on call".into(), kind: OnCallKind::Role, department: None, ..cardio.clone() };
        assert!(s.update_oncall_role(&renamed, &[rec(&w, "oncall.role_update")]).await.unwrap());
        assert_eq!(s.oncall_role(w.org, "cardiology-oncall").await.unwrap(), Some(renamed.clone()));
        let foreign = OnCallRole { org: w.other, ..renamed.clone() };
        assert!(!s.update_oncall_role(&foreign, &[rec(&w, "oncall.role_update")]).await.unwrap());
        let actions = audit_actions(s).await;
        assert_eq!(actions.iter().filter(|a| *a == "oncall.role_create").count(), 1);
        assert_eq!(actions.iter().filter(|a| *a == "oncall.role_update").count(), 1, "none for the refused one");
    }
}

each_backend! {
    async fn schedule_writes_apply_only_at_the_version_they_were_decided_at(db) {
        let w = world(&db).await;
        let s = &w.store;
        let r = role(w.org, "cardiology-oncall");
        s.create_oncall_role(&r, &[]).await.unwrap();
        let sched = schedule(&w, r.id);
        s.create_schedule(&sched, &[rec(&w, "schedule.create")]).await.unwrap();
        assert_eq!(s.schedules(w.org, Some(r.id)).await.unwrap(), vec![sched.clone()]);
        assert_eq!(s.schedules(w.other, None).await.unwrap(), vec![]);

        // Overrides at version 0: applied, the version rises.
        let o1 = over(sched.id, w.alice, 0, 12, OverrideSource::Manual);
        assert_eq!(s.change_overrides(w.org, sched.id, Some(0), &[], std::slice::from_ref(&o1), &[rec(&w, "schedule.override_add")]).await.unwrap(), Some(0));
        // A second decision made at version 0 is refused: it must be decided again.
        let o2 = over(sched.id, w.alice, 6, 18, OverrideSource::Manual);
        assert_eq!(s.change_overrides(w.org, sched.id, Some(0), &[], std::slice::from_ref(&o2), &[rec(&w, "schedule.override_add")]).await.unwrap(), None);
        assert_eq!(s.overrides(&[sched.id]).await.unwrap(), vec![o1.clone()]);
        // Another organization cannot touch the schedule.
        assert_eq!(s.change_overrides(w.other, sched.id, None, &[o1.id], &[], &[]).await.unwrap(), None);

        // The schedule's own update follows the same rule.
        let current = s.schedules(w.org, None).await.unwrap().remove(0);
        assert_eq!(current.version, 1);
        let edited = StoredSchedule { name: "Primary (edited)".into(), zone: "America/New_York".into(), rotations: "[{}]".into(), updated_at: at() + hours(1), ..current.clone() };
        assert!(!s.update_schedule(&edited, 0, &[rec(&w, "schedule.update")]).await.unwrap(), "stale");
        assert!(s.update_schedule(&edited, 1, &[rec(&w, "schedule.update")]).await.unwrap());
        let stored = s.schedules(w.org, None).await.unwrap().remove(0);
        assert_eq!((stored.name.as_str(), stored.zone.as_str(), stored.rotations.as_str(), stored.version), ("Primary (edited)", "America/New_York", "[{}]", 2));

        // An import replaces the overrides it names and adds its own, in one change.
        let imported = [over(sched.id, w.bob, 24, 48, OverrideSource::Import), over(sched.id, w.alice, 48, 72, OverrideSource::Import)];
        assert_eq!(s.change_overrides(w.org, sched.id, Some(2), &[o1.id], &imported, &[rec(&w, "schedule.import")]).await.unwrap(), Some(1));
        let listed = s.overrides(&[sched.id]).await.unwrap();
        assert_eq!(listed, imported.to_vec());
        // Removing something that is not there changes nothing and records nothing.
        let before = audit_actions(s).await.len();
        assert_eq!(s.change_overrides(w.org, sched.id, None, &[OverrideId::new_v7()], &[], &[rec(&w, "schedule.override_remove")]).await.unwrap(), Some(0));
        assert_eq!(audit_actions(s).await.len(), before);
        assert_eq!(s.schedules(w.org, None).await.unwrap()[0].version, 3, "the version did not move");

        // Deleting the schedule takes its overrides with it; a second delete finds nothing.
        assert!(!s.delete_schedule(w.other, sched.id, &[rec(&w, "schedule.delete")]).await.unwrap());
        assert!(s.delete_schedule(w.org, sched.id, &[rec(&w, "schedule.delete")]).await.unwrap());
        assert!(!s.delete_schedule(w.org, sched.id, &[rec(&w, "schedule.delete")]).await.unwrap());
        assert!(s.overrides(&[sched.id]).await.unwrap().is_empty());
        let actions = audit_actions(s).await;
        for (action, n) in [("schedule.create", 1), ("schedule.override_add", 1), ("schedule.update", 1), ("schedule.import", 1), ("schedule.delete", 1), ("schedule.override_remove", 0)] {
            assert_eq!(actions.iter().filter(|a| *a == action).count(), n, "{action}");
        }
    }
}

each_backend! {
    async fn coverage_changes_apply_at_their_version_and_are_kept_per_organization(db) {
        let w = world(&db).await;
        let s = &w.store;
        let state = s.coverage_state(w.org, at()).await.unwrap();
        assert_eq!((state.version, state.coverages.len()), (0, 0));
        let c1 = coverage(&w, w.alice, w.bob, 0, 48);
        assert!(s.add_coverage(&c1, 0, &[rec(&w, "coverage.add")]).await.unwrap());
        // Decided before c1 was there: refused.
        let c2 = coverage(&w, w.bob, w.alice, 0, 48);
        assert!(!s.add_coverage(&c2, 0, &[rec(&w, "coverage.add")]).await.unwrap());
        let state = s.coverage_state(w.org, at()).await.unwrap();
        assert_eq!((state.version, state.coverages.clone()), (1, vec![c1.clone()]));
        // Ended coverages are left out; another organization sees none.
        assert!(s.coverage_state(w.org, at() + hours(48)).await.unwrap().coverages.is_empty());
        assert!(s.coverage_state(w.other, at()).await.unwrap().coverages.is_empty());
        let c3 = coverage(&w, w.admin, w.bob, 50, 60);
        assert!(s.add_coverage(&c3, 1, &[rec(&w, "coverage.add")]).await.unwrap());
        assert_eq!(s.coverage_state(w.org, at()).await.unwrap().version, 2);

        assert_eq!(s.remove_coverage(w.other, c1.id, &[rec(&w, "coverage.remove")]).await.unwrap(), None);
        assert_eq!(s.remove_coverage(w.org, c1.id, &[rec(&w, "coverage.remove")]).await.unwrap(), Some(c1.clone()));
        assert_eq!(s.remove_coverage(w.org, c1.id, &[rec(&w, "coverage.remove")]).await.unwrap(), None);
        let actions = audit_actions(s).await;
        assert_eq!(actions.iter().filter(|a| *a == "coverage.add").count(), 2);
        assert_eq!(actions.iter().filter(|a| *a == "coverage.remove").count(), 1);
    }
}

async fn group(store: &DynStore, owner: UserId, members: &[UserId]) -> ConversationId {
    let id = ConversationId::new_v7();
    let cmd = Command::CreateConversation(CreateConversation {
        id,
        actor: Actor::User(owner),
        kind: ConversationKind::Group,
        title: Some("Cardiology on call".into()),
        members: members.iter().map(|u| (*u, MemberRole::Member)).collect(),
        patient: None,
    });
    let plan = store.apply_batch(vec![cmd], at(), Limits::default()).await.unwrap();
    assert!(matches!(plan.results[0], Ok(PlanOutcome::Conversation { created: true, .. })), "{:?}", plan.results);
    id
}

async fn send(
    store: &DynStore,
    actor: UserId,
    conv: ConversationId,
    txn: &str,
    priority: Priority,
    when: Timestamp,
) -> MessageId {
    let cmd = Command::SendMessage(SendMessage {
        id: MessageId::new_v7(),
        actor,
        conversation: conv,
        client_txn_id: ClientTxnId::parse(txn).unwrap(),
        body: "K+ 6.9".into(),
        priority,
        reply_to: None,
    });
    match &store.apply_batch(vec![cmd], when, Limits::default()).await.unwrap().results[0] {
        Ok(PlanOutcome::MessageSent { message, .. }) => message.id,
        other => panic!("{other:?}"),
    }
}

each_backend! {
    async fn role_conversations_resolutions_and_open_items(db) {
        let w = world(&db).await;
        let s = &w.store;
        let r = role(w.org, "cardiology-oncall");
        s.create_oncall_role(&r, &[]).await.unwrap();

        // Linking keeps the first conversation; replacing needs the one linked.
        let first = group(s, w.admin, &[w.alice]).await;
        let second = group(s, w.admin, &[w.alice]).await;
        assert_eq!(s.role_conversation(r.id, w.admin).await.unwrap(), None);
        assert_eq!(s.link_role_conversation(w.org, r.id, w.admin, first, None, at()).await.unwrap(), first);
        assert_eq!(s.link_role_conversation(w.org, r.id, w.admin, second, None, at()).await.unwrap(), first, "a racing link keeps the first");
        assert_eq!(s.link_role_conversation(w.org, r.id, w.admin, second, Some(second), at()).await.unwrap(), first, "replacing names the wrong one");
        assert_eq!(s.link_role_conversation(w.org, r.id, w.admin, second, Some(first), at()).await.unwrap(), second);
        assert_eq!(s.role_conversation(r.id, w.admin).await.unwrap(), Some(second));
        assert_eq!(s.conversation_role(second).await.unwrap(), Some(r.id));
        assert_eq!(s.conversation_role(first).await.unwrap(), None);

        // Open items: urgent and critical, not recalled, not taken; a decline leaves it open.
        let t0 = at();
        let routine = send(s, w.admin, second, "m1", Priority::Routine, t0).await;
        let urgent = send(s, w.admin, second, "m2", Priority::Urgent, t0 + hours(1)).await;
        let critical = send(s, w.admin, second, "m3", Priority::Critical, t0 + hours(2)).await;
        let declined = send(s, w.admin, second, "m4", Priority::Urgent, t0 + hours(3)).await;
        let taken = send(s, w.admin, second, "m5", Priority::Critical, t0 + hours(4)).await;
        let recalled = send(s, w.admin, second, "m6", Priority::Critical, t0 + hours(5)).await;
        // Not a role conversation: never an open role item.
        let elsewhere = send(s, w.admin, first, "m7", Priority::Critical, t0 + hours(5)).await;
        let acks = vec![
            Command::Acknowledge { actor: w.alice, message: declined, response: AckResponse::Decline },
            Command::Acknowledge { actor: w.alice, message: taken, response: AckResponse::CallBack { minutes: 10 } },
            Command::RecallMessage { actor: Actor::User(w.admin), message: recalled },
        ];
        let plan = s.apply_batch(acks, t0 + hours(6), Limits::default()).await.unwrap();
        assert!(plan.results.iter().all(Result::is_ok), "{:?}", plan.results);
        let open: Vec<MessageId> = s.open_role_items(t0, None, 100).await.unwrap().into_iter().map(|i| i.message).collect();
        assert_eq!(open, vec![urgent, critical, declined]);
        assert!(!open.contains(&routine) && !open.contains(&elsewhere));
        // Paged in (created_at, id) order, and bounded by age.
        let page = s.open_role_items(t0, None, 2).await.unwrap();
        assert_eq!(page.len(), 2);
        let last = page.last().unwrap();
        assert_eq!((page[0].role, page[0].org, page[0].conversation, page[0].sender), (r.id, w.org, second, w.admin));
        let rest = s.open_role_items(t0, Some((last.created_at, last.message)), 2).await.unwrap();
        assert_eq!(rest.into_iter().map(|i| i.message).collect::<Vec<_>>(), vec![declined]);
        let recent: Vec<MessageId> = s.open_role_items(t0 + hours(2), None, 100).await.unwrap().into_iter().map(|i| i.message).collect();
        assert_eq!(recent, vec![critical, declined]);

        // A resolution is recorded once per dedupe key, with its record.
        let res = RoleResolution {
            id: uuid::Uuid::now_v7(),
            org: w.org,
            role: r.id,
            message: urgent,
            conversation: second,
            kind: ResolutionKind::Send,
            at: t0 + hours(1),
            holders: r#"[{"user_id":"x"}]"#.into(),
            dedupe: format!("send:{urgent}"),
        };
        assert!(s.record_resolution(&res, &[rec(&w, "oncall.resolve")]).await.unwrap());
        let retry = RoleResolution { id: uuid::Uuid::now_v7(), ..res.clone() };
        assert!(!s.record_resolution(&retry, &[rec(&w, "oncall.resolve")]).await.unwrap());
        let handover = RoleResolution { id: uuid::Uuid::now_v7(), kind: ResolutionKind::Handover, at: t0 + hours(8), dedupe: format!("handover:{urgent}:b"), ..res.clone() };
        assert!(s.record_resolution(&handover, &[rec(&w, "oncall.handover")]).await.unwrap());
        assert_eq!(s.resolutions(urgent).await.unwrap(), vec![res, handover]);
        let actions = audit_actions(s).await;
        assert_eq!(actions.iter().filter(|a| *a == "oncall.resolve").count(), 1);
        assert_eq!(actions.iter().filter(|a| *a == "oncall.handover").count(), 1);
    }
}

each_backend! {
    async fn every_on_call_change_commits_with_its_audit_record_or_not_at_all(db) {
        let w = world(&db).await;
        let s = &w.store;
        let kept = role(w.org, "kept");
        s.create_oncall_role(&kept, &[]).await.unwrap();
        let sched = schedule(&w, kept.id);
        s.create_schedule(&sched, &[]).await.unwrap();
        let o1 = over(sched.id, w.alice, 0, 12, OverrideSource::Manual);
        s.change_overrides(w.org, sched.id, Some(0), &[], std::slice::from_ref(&o1), &[]).await.unwrap();
        let c1 = coverage(&w, w.alice, w.bob, 0, 48);
        assert!(s.add_coverage(&c1, 0, &[]).await.unwrap());
        let conv = group(s, w.admin, &[w.alice]).await;
        s.link_role_conversation(w.org, kept.id, w.admin, conv, None, at()).await.unwrap();
        let message = send(s, w.admin, conv, "m1", Priority::Urgent, at()).await;
        let size = s.audit_head().await.unwrap().size;

        let fresh = role(w.org, "fresh");
        let renamed = OnCallRole { name: "Renamed".into(), ..kept.clone() };
        let second = schedule(&w, kept.id);
        let edited = StoredSchedule { name: "Edited".into(), version: 1, ..sched.clone() };
        let o2 = over(sched.id, w.bob, 24, 36, OverrideSource::Swap);
        let c2 = coverage(&w, w.bob, w.admin, 100, 110);
        let res = RoleResolution {
            id: uuid::Uuid::now_v7(),
            org: w.org,
            role: kept.id,
            message,
            conversation: conv,
            kind: ResolutionKind::Send,
            at: at(),
            holders: "[]".into(),
            dedupe: format!("send:{message}"),
        };

        tamper(&db, "ALTER TABLE audit_head RENAME TO audit_head_away").await;
        assert!(s.create_oncall_role(&fresh, &[rec(&w, "oncall.role_create")]).await.is_err());
        assert!(s.update_oncall_role(&renamed, &[rec(&w, "oncall.role_update")]).await.is_err());
        assert!(s.create_schedule(&second, &[rec(&w, "schedule.create")]).await.is_err());
        assert!(s.update_schedule(&edited, 1, &[rec(&w, "schedule.update")]).await.is_err());
        assert!(s.change_overrides(w.org, sched.id, Some(1), &[], std::slice::from_ref(&o2), &[rec(&w, "schedule.swap")]).await.is_err());
        assert!(s.change_overrides(w.org, sched.id, None, &[o1.id], &[], &[rec(&w, "schedule.override_remove")]).await.is_err());
        assert!(s.add_coverage(&c2, 1, &[rec(&w, "coverage.add")]).await.is_err());
        assert!(s.remove_coverage(w.org, c1.id, &[rec(&w, "coverage.remove")]).await.is_err());
        assert!(s.record_resolution(&res, &[rec(&w, "oncall.resolve")]).await.is_err());
        assert!(s.delete_schedule(w.org, sched.id, &[rec(&w, "schedule.delete")]).await.is_err());
        tamper(&db, "ALTER TABLE audit_head_away RENAME TO audit_head").await;

        // Nothing of it is left behind.
        assert_eq!(s.audit_head().await.unwrap().size, size);
        assert_eq!(s.oncall_roles(w.org).await.unwrap(), vec![kept.clone()]);
        assert_eq!(s.schedules(w.org, None).await.unwrap(), vec![StoredSchedule { version: 1, ..sched.clone() }]);
        assert_eq!(s.overrides(&[sched.id]).await.unwrap(), vec![o1.clone()]);
        let cov = s.coverage_state(w.org, at()).await.unwrap();
        assert_eq!((cov.version, cov.coverages), (1, vec![c1.clone()]));
        assert!(s.resolutions(message).await.unwrap().is_empty());

        // With the log back, each lands with its record.
        s.create_oncall_role(&fresh, &[rec(&w, "oncall.role_create")]).await.unwrap();
        assert!(s.update_oncall_role(&renamed, &[rec(&w, "oncall.role_update")]).await.unwrap());
        s.create_schedule(&second, &[rec(&w, "schedule.create")]).await.unwrap();
        assert!(s.update_schedule(&edited, 1, &[rec(&w, "schedule.update")]).await.unwrap());
        assert_eq!(s.change_overrides(w.org, sched.id, Some(2), &[], std::slice::from_ref(&o2), &[rec(&w, "schedule.swap")]).await.unwrap(), Some(0));
        assert_eq!(s.change_overrides(w.org, sched.id, None, &[o1.id], &[], &[rec(&w, "schedule.override_remove")]).await.unwrap(), Some(1));
        assert!(s.add_coverage(&c2, 1, &[rec(&w, "coverage.add")]).await.unwrap());
        assert!(s.remove_coverage(w.org, c1.id, &[rec(&w, "coverage.remove")]).await.unwrap().is_some());
        assert!(s.record_resolution(&res, &[rec(&w, "oncall.resolve")]).await.unwrap());
        assert!(s.delete_schedule(w.org, sched.id, &[rec(&w, "schedule.delete")]).await.unwrap());
        assert_eq!(s.audit_head().await.unwrap().size, size + 10);
        let tail: Vec<String> = audit_actions(s).await.into_iter().rev().take(10).rev().collect();
        assert_eq!(tail, ["oncall.role_create", "oncall.role_update", "schedule.create", "schedule.update", "schedule.swap",
            "schedule.override_remove", "coverage.add", "coverage.remove", "oncall.resolve", "schedule.delete"]);
        assert!(matches!(medhub_store::audit::verify_log(s.as_ref(), &[], |_, _| {}).await.unwrap(), medhub_store::audit::Verdict::Good(_)));
    }
}
