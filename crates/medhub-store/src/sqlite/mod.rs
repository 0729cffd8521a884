//! The embedded store: SQLite in WAL mode with `synchronous=FULL`, in the data directory.
//!
//! rusqlite is synchronous, so the store owns its threads: one writer thread with the only
//! write connection (SQLite allows one writer at a time anyway), a few reader threads with
//! read-only connections, and a checkpointer that moves the WAL into the database file off
//! the commit path. Async callers hand closures to these threads and await the answer.

pub use rusqlite;

mod batch;
mod codec;
mod escalation;
mod handoff;
mod identity;
mod oncall;
mod patients;
mod presence;
mod read;
mod retention;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use medhub_core::audit::AuditRecord;
use medhub_core::model::{Conversation, Member, Message, Org, Session, User};
use medhub_core::plan::{Command, Limits, Plan, Revision};
use medhub_core::{ConversationId, Event, EventId, MessageId, OrgId, SessionId, UserId};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, oneshot};

use crate::{Backend, ConversationView, HistoryPage, RecipientRow, Store, StoreError, UserRecord};

/// Reader threads (and connections). Reads are short; two cores rarely need more.
const READERS: usize = 2;
/// Jobs queued for the writer, and for the readers, before callers wait. Bounded so that a
/// stalled disk pushes back on clients instead of growing memory.
const QUEUE_BOUND: usize = 4_096;
/// How often the checkpointer copies the WAL into the main database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_sessions_revoked_index.sql")),
    (3, include_str!("../../migrations/sqlite/0003_identity.sql")),
    (4, include_str!("../../migrations/sqlite/0004_sso.sql")),
    (5, include_str!("../../migrations/sqlite/0005_roles.sql")),
    (6, include_str!("../../migrations/sqlite/0006_audit.sql")),
    (7, include_str!("../../migrations/sqlite/0007_passkeys.sql")),
    (8, include_str!("../../migrations/sqlite/0008_saml.sql")),
    (9, include_str!("../../migrations/sqlite/0009_patient_scope.sql")),
    (10, include_str!("../../migrations/sqlite/0010_orgs.sql")),
    (11, include_str!("../../migrations/sqlite/0011_org_roles.sql")),
    (12, include_str!("../../migrations/sqlite/0012_audit_log.sql")),
    (13, include_str!("../../migrations/sqlite/0013_audit_fields.sql")),
    (14, include_str!("../../migrations/sqlite/0014_retention.sql")),
    (15, include_str!("../../migrations/sqlite/0015_oncall.sql")),
    (16, include_str!("../../migrations/sqlite/0016_escalation.sql")),
    (17, include_str!("../../migrations/sqlite/0017_handoff.sql")),
    (18, include_str!("../../migrations/sqlite/0018_presence.sql")),
];

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The SQLite-backed store.
pub struct SqliteStore {
    path: PathBuf,
    /// The checkpointer holds a weak reference and stops when the store is dropped.
    _alive: std::sync::Arc<()>,
    writer: Sender<Job>,
    writer_room: Arc<Semaphore>,
    readers: Sender<Job>,
    readers_room: Arc<Semaphore>,
}

impl SqliteStore {
    /// Opens (creating if needed) `medhub.db` in `data_dir`. The directory is created with
    /// mode 0700: it holds patient-related data.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let dir_err = |source| StoreError::DataDir { path: data_dir.display().to_string(), source };
        if !data_dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(data_dir).map_err(dir_err)?;
        }
        let path = data_dir.join("medhub.db");
        // The writer opens first and switches the file to WAL so readers find it so.
        let writer_conn = open_connection(&path, false)?;
        // The channels themselves are unbounded: the semaphores below bound them.
        let (writer, writer_rx) = std::sync::mpsc::channel::<Job>();
        spawn_worker("medhub-sqlite-writer", writer_conn, Arc::new(Mutex::new(writer_rx)))?;
        let (readers, readers_rx) = std::sync::mpsc::channel::<Job>();
        let readers_rx = Arc::new(Mutex::new(readers_rx));
        for i in 0..READERS {
            let conn = open_connection(&path, true)?;
            spawn_worker(&format!("medhub-sqlite-reader-{i}"), conn, readers_rx.clone())?;
        }
        let alive = std::sync::Arc::new(());
        spawn_checkpointer(&path, std::sync::Arc::downgrade(&alive))?;
        Ok(Self {
            path,
            _alive: alive,
            writer,
            writer_room: Arc::new(Semaphore::new(QUEUE_BOUND)),
            readers,
            readers_room: Arc::new(Semaphore::new(QUEUE_BOUND)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn run<T, F>(queue: &Sender<Job>, room: &Arc<Semaphore>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        // A permit per queued job: when the queue is full, callers wait here, asynchronously,
        // instead of tying up threads.
        let permit = room.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn));
            drop(permit);
        });
        queue.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        Self::run(&self.writer, &self.writer_room, f).await
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        Self::run(&self.readers, &self.readers_room, f).await
    }
}

fn open_connection(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Plans never depend on bound values, so statements are never re-prepared when values
    // change (without this, every `LIMIT ?` query is parsed and planned again on each run).
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // WAL with synchronous=FULL: a commit returns only after the WAL is fsynced, so an
    // acknowledged write survives power loss. The writer checkpoints nothing itself.
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         PRAGMA foreign_keys=ON;
         PRAGMA temp_store=MEMORY;
         PRAGMA wal_autocheckpoint=0;
         PRAGMA mmap_size=0;",
    )?;
    // No memory map: mapped pages count as the server's resident memory once touched. The
    // readers' own caches stay small (2 MiB each; misses are served from the kernel's
    // page cache) and the writer's holds 16 MiB, where dirty pages live until commit.
    if read_only {
        conn.execute_batch("PRAGMA query_only=ON; PRAGMA cache_size=-2048;")?;
    } else {
        conn.execute_batch("PRAGMA cache_size=-16384;")?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// A worker thread: takes the next job (readers share one queue; the one waiting in `recv`
/// holds the lock, the others wait for it, all parked rather than spinning).
fn spawn_worker(name: &str, mut conn: Connection, jobs: Arc<Mutex<Receiver<Job>>>) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            loop {
                let next = match jobs.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                match next {
                    Ok(job) => job(&mut conn),
                    Err(_) => return,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| StoreError::DataDir { path: "worker thread".into(), source: e })
}

/// Copies the WAL into the database in the background, so that commits never pay for it.
/// It stops when the store is dropped.
fn spawn_checkpointer(path: &Path, alive: std::sync::Weak<()>) -> Result<(), StoreError> {
    let conn = open_connection(path, false)?;
    std::thread::Builder::new()
        .name("medhub-sqlite-checkpoint".into())
        .spawn(move || {
            loop {
                std::thread::sleep(CHECKPOINT_EVERY);
                if alive.strong_count() == 0 {
                    return;
                }
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "sqlite checkpoint failed");
                }
            }
        })
        .map(|_| ())
        .map_err(|e| StoreError::DataDir { path: "checkpoint thread".into(), source: e })
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let current: i64 = tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?;
    let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if current > known {
        return Err(StoreError::SchemaTooNew { found: current, known });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            rusqlite::params![version, Timestamp::now().as_microsecond()],
        )?;
        tracing::info!(version, "applied sqlite migration");
    }
    // Records from before the audit log (0012) become its first leaves.
    identity::append_leaves(&tx, &[])?;
    tx.commit()?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.write(migrate).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    async fn apply_batch_audited(
        &self,
        cmds: Vec<Command>,
        audit: Vec<Option<AuditRecord>>,
        now: Timestamp,
        limits: Limits,
    ) -> Result<Plan, StoreError> {
        self.write(move |c| batch::apply(c, &cmds, &audit, now, &limits)).await
    }

    async fn org(&self) -> Result<Option<Org>, StoreError> {
        self.read(read::org).await
    }

    async fn orgs(&self) -> Result<Vec<Org>, StoreError> {
        self.read(read::orgs).await
    }

    async fn bootstrap(&self, org: &Org, admin: &UserRecord) -> Result<bool, StoreError> {
        let (org, admin) = (org.clone(), admin.clone());
        self.write(move |c| batch::bootstrap(c, &org, &admin)).await
    }

    async fn create_org(&self, org: &Org, admin: &UserRecord, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let (org, admin, audit) = (org.clone(), admin.clone(), audit.to_vec());
        self.write(move |c| batch::create_org(c, &org, &admin, &audit)).await
    }

    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let user = user.clone();
        self.write(move |c| batch::create_user(c, &user)).await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.read(move |c| Ok(read::user_record(c, id)?.map(|r| r.user))).await
    }

    async fn user_record_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let username = username.to_owned();
        self.read(move |c| read::user_record_by_username(c, &username)).await
    }

    async fn user_record(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.read(move |c| read::user_record(c, id)).await
    }

    async fn users(&self, ids: &[UserId]) -> Result<Vec<User>, StoreError> {
        let ids = ids.to_vec();
        self.read(move |c| read::users(c, &ids)).await
    }

    async fn list_users(&self, org: OrgId, after: Option<&str>, limit: u32) -> Result<Vec<User>, StoreError> {
        let after = after.map(str::to_owned);
        self.read(move |c| read::list_users(c, org, after.as_deref(), limit)).await
    }

    async fn set_password(
        &self,
        id: UserId,
        hash: &str,
        must_change: bool,
        audit: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let (hash, audit) = (hash.to_owned(), audit.to_vec());
        self.write(move |c| batch::set_password(c, id, &hash, must_change, &audit)).await
    }

    async fn set_user_active(
        &self,
        id: UserId,
        active: bool,
        now: Timestamp,
        audit: &[AuditRecord],
        session_end: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        let (audit, session_end) = (audit.to_vec(), session_end.cloned());
        self.write(move |c| batch::set_user_active(c, id, active, now, &audit, session_end.as_ref())).await
    }

    async fn create_session(&self, session: &Session, audit: &[AuditRecord]) -> Result<(), StoreError> {
        let audit = audit.to_vec();
        let session = session.clone();
        self.write(move |c| batch::create_session(c, &session, &audit)).await
    }

    async fn session_by_token_hash(&self, hash: &[u8; 32]) -> Result<Option<(Session, User)>, StoreError> {
        let hash = *hash;
        self.read(move |c| read::session_by_token_hash(c, &hash)).await
    }

    async fn revoked_sessions_since(&self, since: Timestamp) -> Result<Vec<SessionId>, StoreError> {
        self.read(move |c| read::revoked_sessions_since(c, since)).await
    }

    async fn last_event_id(&self) -> Result<EventId, StoreError> {
        self.read(read::last_event_id).await
    }

    async fn events_range(&self, after: EventId, up_to: EventId, limit: u32) -> Result<Vec<Event>, StoreError> {
        self.read(move |c| read::events_range(c, after, up_to, limit)).await
    }

    async fn events_for_user(
        &self,
        user: UserId,
        after: EventId,
        up_to: EventId,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.read(move |c| read::events_for_user(c, user, after, up_to, limit)).await
    }

    async fn members_before(&self, conversation: ConversationId, at: EventId) -> Result<Vec<UserId>, StoreError> {
        self.read(move |c| read::members_before(c, conversation, at)).await
    }

    async fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>, StoreError> {
        self.read(move |c| read::conversation(c, id)).await
    }

    async fn member(&self, conversation: ConversationId, user: UserId) -> Result<Option<Member>, StoreError> {
        self.read(move |c| read::member(c, conversation, user)).await
    }

    async fn members(&self, conversation: ConversationId) -> Result<Vec<Member>, StoreError> {
        self.read(move |c| read::members(c, conversation)).await
    }

    async fn conversations_for_user(&self, user: UserId) -> Result<Vec<ConversationView>, StoreError> {
        self.read(move |c| read::conversations_for_user(c, user)).await
    }

    async fn messages(
        &self,
        conversation: ConversationId,
        page: HistoryPage,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        self.read(move |c| read::messages(c, conversation, page, limit)).await
    }

    async fn message(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        self.read(move |c| read::message(c, id)).await
    }

    async fn revisions(&self, id: MessageId) -> Result<Vec<Revision>, StoreError> {
        self.read(move |c| read::revisions(c, id)).await
    }

    async fn recipients(&self, message: &Message) -> Result<Vec<RecipientRow>, StoreError> {
        let (id, conversation, sender, event) = (message.id, message.conversation, message.sender, message.event);
        self.read(move |c| read::recipients(c, id, conversation, sender, event)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the query planner stability guarantee on, a statement is never re-planned because
    /// a bound value changed (SQLite would otherwise re-prepare a `LIMIT ?` query on every
    /// execution: parse and plan again, for nothing).
    #[test]
    fn statements_are_not_re_prepared_when_bindings_change() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("t.db"), false).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, k BLOB, v TEXT); CREATE INDEX t_k ON t(k, id);")
            .unwrap();
        for i in 0..100 {
            conn.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", rusqlite::params![vec![(i % 3) as u8], "x"]).unwrap();
        }
        let mut st =
            conn.prepare_cached("SELECT id FROM t WHERE k = ?1 AND id > ?2 AND id <= ?3 ORDER BY id LIMIT ?4").unwrap();
        for n in 0..20i64 {
            let _ = st
                .query_map(rusqlite::params![vec![(n % 3) as u8], n, n + 50, 10 + n], |r| r.get::<_, i64>(0))
                .unwrap()
                .count();
        }
        assert_eq!(st.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    /// The bundled SQLite is built with `.cargo/config.toml`'s flags: no global page-cache
    /// group and no memory statistics, whose global mutexes serialised the writer and the
    /// readers. A build that lost the flags fails here, not in a benchmark.
    #[test]
    fn sqlite_is_built_without_global_cache_and_memory_mutexes() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("t.db"), false).unwrap();
        let options: Vec<String> = conn
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(options.iter().any(|o| o == "THREADSAFE=1"), "{options:?}");
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
    }
}
