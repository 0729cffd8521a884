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
    /// The PostgreSQL URL's TLS settings (`sslmode`, `sslrootcert`) cannot be used.
    #[error("postgres TLS settings: {0}")]
    PostgresTls(String),
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
        // tokio-postgres keeps the reason (the server's message, why a TLS handshake failed)
        // in `source()`, not in its message: keep the whole chain, once each.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.ends_with(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        StoreError::Pool(message)
    }
}
