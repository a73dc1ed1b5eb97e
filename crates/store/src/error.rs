use crate::crypto::CryptoError;

/// What went wrong in the store, in kinds a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist for this tenant (another tenant's row is indistinguishable from none).
    #[error("{entity} not found")]
    NotFound { entity: &'static str },
    /// An optimistic-concurrency check failed: the caller's version is stale.
    #[error("{entity} was changed meanwhile (expected version {expected}, current {current:?})")]
    PreconditionFailed {
        entity: &'static str,
        expected: i64,
        /// The version now stored, when the row still exists.
        current: Option<i64>,
    },
    /// A uniqueness or reference rule refused the write (duplicate UID, key prefix, calendar in use...).
    #[error("{0}")]
    Conflict(String),
    /// A job lease was taken over by another worker (expired, or a newer fencing token exists).
    #[error("the lease on job {job} is no longer held with fencing token {token}")]
    LeaseLost { job: String, token: i64 },
    /// The caller passed something the store cannot accept (bad URL, empty value, inverted window...).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A stored value could not be read back (a bug or a hand-edited database).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            if db.is_unique_violation() {
                return StoreError::Conflict(format!("already exists: {}", db.message()));
            }
            if db.is_foreign_key_violation() {
                return StoreError::Conflict(format!(
                    "still referenced or missing reference: {}",
                    db.message()
                ));
            }
        }
        StoreError::Database(err)
    }
}
