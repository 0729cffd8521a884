//! The store's error type.

/// Why a store call failed. Each variant is one cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite database returned an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL returned an error or the connection failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be taken from the pool.
    #[error("postgres pool: {0}")]
    Pool(String),
    /// The data directory could not be created or opened.
    #[error("data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    /// A stored value could not be decoded; the database holds something medhub did not write.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The username is already taken.
    #[error("username is already taken")]
    UsernameTaken,
    /// The change conflicts with what is stored (the caller's message says what).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The store's worker threads have stopped (the process is shutting down).
    #[error("store is shut down")]
    Closed,
    /// The database schema is newer than this binary understands.
    #[error("database schema version {found} is newer than this medhub (knows up to {known})")]
    SchemaTooNew { found: i64, known: i64 },
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Pool(e.to_string())
    }
}
