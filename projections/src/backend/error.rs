//! Why a [`Storage`](super::Storage) could not be opened.

/// A [`Storage`](super::Storage) could not be opened. Messages name the URL's scheme, never
/// the rest of it (it may hold a password).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL's scheme names no backend.
    #[error(
        "unknown storage scheme `{scheme}`: use memory:, sqlite://FILE, sqlite::memory: or \
         postgres://..."
    )]
    UnknownScheme {
        /// The scheme, as written.
        scheme: String,
    },
    /// The URL names a backend but not in a form this crate reads.
    #[error("invalid {scheme} storage URL: {reason}")]
    InvalidUrl {
        /// The backend.
        scheme: &'static str,
        /// What is wrong, and how to write it.
        reason: String,
    },
    /// The backend is compiled out.
    #[error(
        "{scheme} storage needs the cargo feature `{feature}` of projections \
         (features = [\"{feature}\"] in Cargo.toml)"
    )]
    FeatureDisabled {
        /// The backend.
        scheme: &'static str,
        /// The feature that brings it.
        feature: &'static str,
    },
    /// The SQLite file could not be opened or migrated.
    #[cfg(feature = "sqlite")]
    #[error(transparent)]
    Sqlite(#[from] crate::sqlite::OpenError),
    /// PostgreSQL could not be reached or migrated.
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    Postgres(crate::storage::StorageError),
}
