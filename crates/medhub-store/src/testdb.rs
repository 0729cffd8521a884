//! Throw-away databases for tests: a temporary SQLite data directory, or a fresh PostgreSQL
//! database created on the server named by `MEDHUB_TEST_DATABASE_URL`.
//!
//! The PostgreSQL suite never skips: if the server is unreachable the test fails and says why.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Backend, DynStore, Location, UserRecord};

/// Used when `MEDHUB_TEST_DATABASE_URL` is not set: the local server with trust auth.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// One test's database. Dropping it removes the data.
pub struct TestDb {
    backend: Backend,
    location: Location,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb").field("backend", &self.backend).finish()
    }
}

fn admin_url() -> String {
    std::env::var("MEDHUB_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned())
}

/// Replaces the database name in a `postgres://` URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end).unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..path_start], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[allow(clippy::expect_used, clippy::panic)]
impl TestDb {
    /// A fresh, empty database on `backend`.
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new().prefix("medhub-test-").tempdir().expect("create temp dir");
                let location = Location::Sqlite { data_dir: dir.path().join("data") };
                Self { backend, location, _dir: Some(dir), pg: None }
            }
            Backend::Postgres => {
                static COUNTER: AtomicU64 = AtomicU64::new(0);
                let admin = admin_url();
                let name = format!(
                    "medhub_test_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    uuid::Uuid::now_v7().simple()
                );
                let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL tests need a server: could not connect to {admin} ({e}). \
                         Set MEDHUB_TEST_DATABASE_URL or start PostgreSQL."
                    )
                });
                tokio::spawn(conn);
                client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create test database");
                let url = with_database(&admin, &name);
                // A node's own files (the server key) live beside the database, never in the
                // working directory.
                let dir = tempfile::Builder::new().prefix("medhub-test-").tempdir().expect("create temp dir");
                Self {
                    backend,
                    location: Location::Postgres { url, pool_size: 4 },
                    _dir: Some(dir),
                    pg: Some((admin, name)),
                }
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// A directory for the node's own files (`--data-dir`): the SQLite data directory, or a
    /// temporary one beside a PostgreSQL database.
    pub fn files_dir(&self) -> std::path::PathBuf {
        match (&self.location, &self._dir) {
            (Location::Sqlite { data_dir }, _) => data_dir.clone(),
            (Location::Postgres { .. }, Some(d)) => d.path().join("files"),
            (Location::Postgres { .. }, None) => std::env::temp_dir().join("medhub-test-files"),
        }
    }

    /// Opens and migrates the store.
    pub async fn open(&self) -> DynStore {
        let store = crate::open(&self.location).await.expect("open test store");
        store.migrate().await.expect("migrate test store");
        store
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else { return };
        // Drop runs outside any runtime guarantee, so use a private one on a plain thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}

/// Runs an async test body once on SQLite and once on PostgreSQL, as two tests named
/// `<name>::sqlite` and `<name>::postgres`. The body gets a fresh [`TestDb`] bound to `$db`.
#[macro_export]
macro_rules! each_backend {
    ($(#[$meta:meta])* async fn $name:ident($db:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $db = $crate::testdb::TestDb::new($crate::Backend::Sqlite).await;
                $body
            }

            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let $db = $crate::testdb::TestDb::new($crate::Backend::Postgres).await;
                $body
            }
        }
    };
}

/// A user for store tests: `username` in `org`, named "Dr {username}", created at `at`,
/// active, with no password.
pub fn user_record(org: medhub_core::OrgId, username: &str, at: jiff::Timestamp) -> UserRecord {
    UserRecord {
        user: medhub_core::model::User {
            id: medhub_core::UserId::new_v7(),
            org,
            username: username.into(),
            display_name: format!("Dr {username}"),
            role: medhub_core::model::SystemRole::User,
            active: true,
            created_at: at,
        },
        password_hash: None,
        must_change_password: false,
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_replaced_in_urls() {
        assert_eq!(with_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(with_database("postgres://u@h/postgres?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(with_database("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
    }
}
