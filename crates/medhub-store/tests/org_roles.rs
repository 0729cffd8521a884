//! Custom roles per organization, on SQLite and PostgreSQL: each organization lists and grants
//! the shipped roles and its own, two organizations may use the same key for different roles,
//! and migration 0011 moves a database's existing custom roles and grants over without losing
//! one.

// Tests panic on anything unexpected; that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::{SignedDuration, Timestamp};
use medhub_core::authz::{BUILTIN_ROLES, Permission, Permissions, Role, builtin_roles};
use medhub_core::model::{Org, SystemRole};
use medhub_core::{OrgId, UserId};
use medhub_store::testdb::TestDb;
use medhub_store::{Backend, DynStore, Location, StoreError, UserRecord, each_backend};

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn new_org(name: &str, created_at: Timestamp) -> Org {
    Org { id: OrgId::new_v7(), name: name.into(), created_at, idle_timeout: medhub_core::session::DEFAULT_IDLE_TIMEOUT }
}

fn record(org: OrgId, username: &str) -> UserRecord {
    medhub_store::testdb::user_record(org, username, now())
}

fn role(key: &str, permissions: &[Permission]) -> Role {
    Role { key: key.into(), name: format!("Role {key}"), permissions: Permissions::of(permissions), builtin: false }
}

/// The keys of an organization's catalogue, and its role `key` if listed.
async fn catalogue(store: &DynStore, org: OrgId, key: &str) -> (Vec<String>, Option<Role>) {
    let roles = store.roles(org).await.unwrap();
    let found = roles.iter().find(|r| r.key == key).cloned();
    (roles.into_iter().map(|r| r.key).collect(), found)
}

/// The union of the permissions of a user's roles.
async fn permissions(store: &DynStore, user: UserId) -> Permissions {
    Permissions::from_names(&store.user_permission_names(user).await.unwrap().join(" ")).unwrap()
}

fn shipped_keys_and(extra: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> =
        BUILTIN_ROLES.iter().map(|(k, _, _)| (*k).to_owned()).chain(extra.iter().map(|k| (*k).to_owned())).collect();
    keys.sort();
    keys
}

each_backend! {
    async fn each_organization_lists_and_grants_the_shipped_roles_and_its_own(db) {
        let store = db.open().await;
        store.upsert_builtin_roles(&builtin_roles(), now()).await.unwrap();
        let general = new_org("General Hospital", now());
        assert!(store.bootstrap(&general, &record(general.id, "gh.admin")).await.unwrap());
        let river = new_org("Riverside Clinic", now() + SignedDuration::from_secs(1));
        store.create_org(&river, &record(river.id, "river.admin"), &[]).await.unwrap();
        let (gh_nurse, river_nurse) = (record(general.id, "gh.nurse"), record(river.id, "river.nurse"));
        store.create_user(&gh_nurse).await.unwrap();
        store.create_user(&river_nurse).await.unwrap();
        let (gh_nurse, river_nurse) = (gh_nurse.user.id, river_nurse.user.id);

        // The same key in two organizations, with different permissions.
        use Permission::*;
        let gh_lead = role("ward_lead", &[ConversationRead, DirectoryRead, OwnAccount, CareTeamAdmin]);
        let river_lead = role("ward_lead", &[ConversationRead, ConversationWrite, MessageSend, OwnAccount]);
        store.create_role(general.id, &gh_lead, now(), &[]).await.unwrap();
        store.create_role(river.id, &river_lead, now(), &[]).await.unwrap();
        store.create_role(general.id, &role("night_float", &[ConversationRead]), now(), &[]).await.unwrap();

        // Each lists the shipped roles and its own only.
        let (keys, lead) = catalogue(&store, general.id, "ward_lead").await;
        assert_eq!((keys, lead), (shipped_keys_and(&["night_float", "ward_lead"]), Some(gh_lead.clone())));
        let (keys, lead) = catalogue(&store, river.id, "ward_lead").await;
        assert_eq!((keys, lead), (shipped_keys_and(&["ward_lead"]), Some(river_lead.clone())));
        let (_, nurse) = catalogue(&store, river.id, "nurse").await;
        assert!(nurse.unwrap().builtin, "shipped roles are listed as built in");

        // A key taken in the organization, or by a shipped role, cannot be created.
        let taken =
            [(general.id, "ward_lead"), (river.id, "ward_lead"), (river.id, "nurse"), (general.id, "administrator")];
        for (org, key) in taken {
            let e = store.create_role(org, &role(key, &[ConversationRead]), now(), &[]).await.unwrap_err();
            assert!(matches!(e, StoreError::Conflict(_)), "{key}: {e:?}");
        }
        let shipped_nurse = builtin_roles().into_iter().find(|r| r.key == "nurse");
        assert_eq!(catalogue(&store, river.id, "nurse").await.1, shipped_nurse, "left as shipped");

        // A grant resolves keys in the user's organization: the same key gives each
        // organization's permissions, and a key only another organization has is unknown
        // (nothing changes).
        store.set_user_roles(gh_nurse, &["ward_lead".into()], gh_nurse, now(), &[]).await.unwrap();
        store.set_user_roles(river_nurse, &["ward_lead".into(), "observer".into()], river_nurse, now(), &[]).await.unwrap();
        assert_eq!(store.user_roles(gh_nurse).await.unwrap(), ["ward_lead"]);
        assert_eq!(store.user_roles(river_nurse).await.unwrap(), ["observer", "ward_lead"]);
        assert_eq!(permissions(&store, gh_nurse).await, gh_lead.permissions);
        let with_observer = river_lead.permissions.union(Permissions::of(&[DirectoryRead]));
        assert_eq!(permissions(&store, river_nurse).await, with_observer);
        let e = store.set_user_roles(river_nurse, &["night_float".into()], river_nurse, now(), &[]).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict("unknown role")), "{e:?}");
        assert_eq!(store.user_roles(river_nurse).await.unwrap(), ["observer", "ward_lead"]);
        let e = store.set_user_roles(UserId::new_v7(), &["nurse".into()], gh_nurse, now(), &[]).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict("unknown user")), "{e:?}");

        // Who holds a permission is per organization too.
        assert_eq!(store.users_with_permission(general.id, "care_team.manage").await.unwrap(), [gh_nurse]);
        assert_eq!(store.users_with_permission(river.id, "care_team.manage").await.unwrap(), Vec::<UserId>::new());

        // The system role still grants and takes the shipped administrator role.
        store.set_user_role(river_nurse, SystemRole::Admin, &[]).await.unwrap();
        assert_eq!(store.user_roles(river_nurse).await.unwrap(), ["administrator", "observer", "ward_lead"]);
        store.set_user_role(river_nurse, SystemRole::User, &[]).await.unwrap();
        assert_eq!(store.user_roles(river_nurse).await.unwrap(), ["observer", "ward_lead"]);

        // Start-up keeps the shipped roles current and leaves organizations' roles alone. Should
        // a later release ship a key an organization already uses, the organization keeps its
        // own role under that key (and its holders their permissions); others get the shipped one.
        let mut shipped = builtin_roles();
        let later = role("night_float", &[ConversationRead, MessageSend]);
        shipped.push(Role { builtin: true, ..later.clone() });
        store.upsert_builtin_roles(&shipped, now()).await.unwrap();
        store.upsert_builtin_roles(&shipped, now()).await.unwrap();
        let (keys, night) = catalogue(&store, general.id, "night_float").await;
        let own = Permissions::of(&[ConversationRead]);
        assert_eq!((keys, night.map(|r| r.permissions)), (shipped_keys_and(&["night_float", "ward_lead"]), Some(own)));
        let (keys, night) = catalogue(&store, river.id, "night_float").await;
        assert_eq!((keys, night.map(|r| r.builtin)), (shipped_keys_and(&["night_float", "ward_lead"]), Some(true)));
        store.set_user_roles(river_nurse, &["night_float".into()], river_nurse, now(), &[]).await.unwrap();
        assert_eq!(permissions(&store, river_nurse).await, later.permissions);
        store.set_user_roles(gh_nurse, &["night_float".into()], gh_nurse, now(), &[]).await.unwrap();
        assert_eq!(permissions(&store, gh_nurse).await, Permissions::of(&[ConversationRead]));
    }
}

// --- migration 0011 on a database that has custom roles and grants ---------------------------

/// Migrations 1 to 10 as files, in order.
fn migrations_before_0011(backend: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap() < "0011")
        .collect();
    files.sort();
    assert_eq!(files.len(), 10, "{files:?}");
    files.into_iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
}

/// The ids of the version-10 fixture.
struct Before {
    general: OrgId,
    river: OrgId,
    admin: UserId,
    gh_nurse: UserId,
    river_nurse: UserId,
}

/// A version-10 database with two organizations, two custom roles (`ward_lead`, held in both
/// organizations, and `night_float`, held by nobody) and grants of shipped and custom roles.
/// `id` and `flag` write a literal of each backend.
fn fixture(b: &Before, id: impl Fn(uuid::Uuid) -> String, flag: impl Fn(bool) -> String) -> String {
    let (t, f) = (flag(true), flag(false));
    let (general, river) = (id(b.general.as_uuid()), id(b.river.as_uuid()));
    let user = |u: UserId, org: &str, name: &str, role: &str| {
        format!(
            "INSERT INTO users
               (id, org_id, username, display_name, role, active, password_hash, must_change_password, created_at)
             VALUES ({}, {org}, '{name}', '{name}', '{role}', {t}, NULL, {f}, 5);",
            id(u.as_uuid())
        )
    };
    let grant = |u: UserId, key: &str| {
        format!(
            "INSERT INTO user_roles (user_id, role_key, granted_by, granted_at) VALUES ({}, '{key}', NULL, 6);",
            id(u.as_uuid())
        )
    };
    [
        // The river clinic is created first but later in time: the oldest organization wins.
        format!("INSERT INTO orgs (id, name, created_at) VALUES ({river}, 'Riverside Clinic', 2);"),
        format!("INSERT INTO orgs (id, name, created_at) VALUES ({general}, 'General Hospital', 1);"),
        user(b.admin, &general, "gh.admin", "admin"),
        user(b.gh_nurse, &general, "gh.nurse", "user"),
        user(b.river_nurse, &river, "river.nurse", "user"),
        format!(
            "INSERT INTO roles (key, name, permissions, builtin, created_at) VALUES
               ('ward_lead', 'Ward lead', 'conversation.read care_team.manage', {f}, 3),
               ('night_float', 'Night float', 'conversation.read', {f}, 4);"
        ),
        grant(b.admin, "administrator"),
        grant(b.gh_nurse, "clinician"),
        grant(b.gh_nurse, "ward_lead"),
        grant(b.river_nurse, "ward_lead"),
    ]
    .join("\n")
}

/// Builds the version-10 database with the fixture directly, as an older medhub left it.
async fn at_version_10(db: &TestDb, b: &Before) {
    let versions: String =
        (1..=10).map(|v| format!("INSERT INTO schema_migrations (version, applied_at) VALUES ({v}, 0);")).collect();
    match (db.backend(), db.location()) {
        (Backend::Sqlite, Location::Sqlite { data_dir }) => {
            std::fs::create_dir_all(data_dir).unwrap();
            let mut c = rusqlite::Connection::open(data_dir.join("medhub.db")).unwrap();
            c.execute_batch("PRAGMA foreign_keys=ON;").unwrap();
            let tx = c.transaction().unwrap();
            tx.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
            )
            .unwrap();
            for sql in migrations_before_0011("sqlite") {
                tx.execute_batch(&sql).unwrap();
            }
            tx.execute_batch(&versions).unwrap();
            let fixture = fixture(b, |u| format!("X'{}'", u.simple()), |v| if v { "1" } else { "0" }.to_owned());
            tx.execute_batch(&fixture).unwrap();
            tx.commit().unwrap();
        }
        (Backend::Postgres, Location::Postgres { url, .. }) => {
            let (mut c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            let conn = tokio::spawn(conn);
            let tx = c.transaction().await.unwrap();
            tx.batch_execute("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
                .await
                .unwrap();
            for sql in migrations_before_0011("postgres") {
                tx.batch_execute(&sql).await.unwrap();
            }
            tx.batch_execute(&versions).await.unwrap();
            let fixture = fixture(b, |u| format!("'{u}'"), |v| if v { "TRUE" } else { "FALSE" }.to_owned());
            tx.batch_execute(&fixture).await.unwrap();
            tx.commit().await.unwrap();
            drop(c);
            conn.await.unwrap().unwrap();
        }
        _ => panic!("unexpected test database"),
    }
}

/// The names of the indexes on the two role tables after migrating (primary keys aside).
async fn role_indexes(db: &TestDb) -> Vec<String> {
    let mut names: Vec<String> = match (db.backend(), db.location()) {
        (Backend::Sqlite, Location::Sqlite { data_dir }) => {
            let c = rusqlite::Connection::open(data_dir.join("medhub.db")).unwrap();
            // Nothing refers to a missing row.
            let broken: i64 = c.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).unwrap();
            assert_eq!(broken, 0);
            let mut st = c
                .prepare(
                    "SELECT name FROM sqlite_master
                     WHERE type = 'index' AND tbl_name IN ('roles', 'user_roles') AND sql IS NOT NULL",
                )
                .unwrap();
            st.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
        }
        (Backend::Postgres, Location::Postgres { url, .. }) => {
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            let rows = c
                .query(
                    "SELECT indexname::text FROM pg_indexes
                     WHERE tablename IN ('roles', 'user_roles') AND indexname NOT LIKE '%_pkey'",
                    &[],
                )
                .await
                .unwrap();
            rows.iter().map(|r| r.get(0)).collect()
        }
        _ => panic!("unexpected test database"),
    };
    names.sort();
    names
}

each_backend! {
    async fn migration_0011_moves_custom_roles_into_organizations_and_keeps_every_grant(db) {
        let b = Before {
            general: OrgId::new_v7(),
            river: OrgId::new_v7(),
            admin: UserId::new_v7(),
            gh_nurse: UserId::new_v7(),
            river_nurse: UserId::new_v7(),
        };
        at_version_10(&db, &b).await;
        let store = db.open().await;
        store.upsert_builtin_roles(&builtin_roles(), now()).await.unwrap();
        assert_eq!(role_indexes(&db).await, ["roles_by_org", "roles_shipped_by_key", "user_roles_by_role"]);

        // The custom roles belong to the first organization; the river clinic gets a copy of
        // the one its nurse holds, and only that one.
        use Permission::*;
        let ward_lead = Role {
            key: "ward_lead".into(),
            name: "Ward lead".into(),
            permissions: Permissions::of(&[ConversationRead, CareTeamAdmin]),
            builtin: false,
        };
        let (keys, lead) = catalogue(&store, b.general, "ward_lead").await;
        assert_eq!((keys, lead), (shipped_keys_and(&["night_float", "ward_lead"]), Some(ward_lead.clone())));
        let (keys, lead) = catalogue(&store, b.river, "ward_lead").await;
        assert_eq!((keys, lead), (shipped_keys_and(&["ward_lead"]), Some(ward_lead.clone())));

        // Every grant is kept, with its permissions.
        assert_eq!(store.user_roles(b.admin).await.unwrap(), ["administrator"]);
        assert_eq!(store.user_roles(b.gh_nurse).await.unwrap(), ["clinician", "ward_lead"]);
        assert_eq!(store.user_roles(b.river_nurse).await.unwrap(), ["ward_lead"]);
        assert_eq!(permissions(&store, b.river_nurse).await, ward_lead.permissions);
        assert!(permissions(&store, b.admin).await.contains(RoleAdmin));

        // The copies are separate roles from now on: the river clinic can grant its own, and
        // create `night_float`, which only the first organization had.
        store.set_user_roles(b.river_nurse, &["ward_lead".into(), "nurse".into()], b.river_nurse, now(), &[]).await.unwrap();
        store.create_role(b.river, &role("night_float", &[DirectoryRead]), now(), &[]).await.unwrap();
        let e = store.create_role(b.general, &role("ward_lead", &[DirectoryRead]), now(), &[]).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        // New users still get their default role.
        let late = record(b.river, "river.late");
        store.create_user(&late).await.unwrap();
        assert_eq!(store.user_roles(late.user.id).await.unwrap(), ["clinician"]);
    }
}
