//! Classifies an error by what it is made of.

use super::FailureKind;
use crate::projection::HandlerError;
use crate::storage::StorageError;

/// The kind of `error`, decided by the first link of its source chain that says:
/// - a [`HandlerError`] built with an explicit kind, or a panic (an event failure);
/// - a database error (with the `postgres` feature): by its SQLSTATE class, or by what failed
///   (I/O, TLS, pool timeout or closed: infrastructure; configuration: setup);
/// - a [`std::io::Error`]: infrastructure;
/// - a [`StorageError`] that is not a backend error: `Invalid` is setup, `NotFound` and
///   `InvalidTransition` are the event's.
///
/// Anything else is the event's fault ([`FailureKind::Event`]).
pub fn classify(error: &(dyn std::error::Error + 'static)) -> FailureKind {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(link) = current {
        if let Some(kind) = kind_of(link) {
            return kind;
        }
        current = link.source();
    }
    FailureKind::Event
}

/// The kind `link` itself states, if any.
fn kind_of(link: &(dyn std::error::Error + 'static)) -> Option<FailureKind> {
    if let Some(handler) = link.downcast_ref::<HandlerError>() {
        return handler.stated_kind();
    }
    if let Some(storage) = link.downcast_ref::<StorageError>() {
        return match storage {
            StorageError::Invalid { .. } | StorageError::Unreadable(_) => Some(FailureKind::Setup),
            StorageError::NotFound { .. } | StorageError::InvalidTransition { .. } => {
                Some(FailureKind::Event)
            }
            // Not the event's fault, and not a broken setup: the node steps back and the
            // owner of the lease goes on.
            StorageError::Fenced { .. } => Some(FailureKind::Infrastructure),
            StorageError::Backend(_) => None,
        };
    }
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    if let Some(database) = link.downcast_ref::<sqlx::Error>() {
        return Some(sqlx_kind(database));
    }
    // Behind `#[error(transparent)]`, a wrapped `sqlx::Error::Database` hands on its inner
    // database error directly: the chain never shows the `sqlx::Error` itself.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    if let Some(database) = link.downcast_ref::<Box<dyn sqlx::error::DatabaseError>>() {
        return Some(database_kind(database.as_ref()));
    }
    if link.is::<std::io::Error>() {
        return Some(FailureKind::Infrastructure);
    }
    None
}

/// The kind of an SQLSTATE code, by its class (the first two characters).
pub fn sqlstate_kind(code: &str) -> FailureKind {
    match code.get(..2).unwrap_or("") {
        // connection exception; transaction rollback (serialization failure, deadlock);
        // insufficient resources; object not in prerequisite state (lock not available);
        // operator intervention (shutdown, cancel); system error; internal error;
        // invalid transaction state (idle-in-transaction timeout).
        "08" | "40" | "53" | "55" | "57" | "58" | "XX" | "25" => FailureKind::Infrastructure,
        // syntax error or access rule violation (undefined table or column, permission
        // denied); invalid authorization; invalid catalog or schema name; feature not
        // supported.
        "42" | "28" | "3D" | "3F" | "0A" => FailureKind::Setup,
        _ => FailureKind::Event,
    }
}

/// The kind of a SQLite result code (sqlx reports the extended code, in decimal), by its
/// primary code (the low byte).
pub fn sqlite_code_kind(code: &str) -> FailureKind {
    let Ok(code) = code.parse::<i32>() else {
        return FailureKind::Event;
    };
    match code & 0xff {
        // ABORT, BUSY (database is locked), LOCKED, NOMEM, INTERRUPT, IOERR, FULL, PROTOCOL:
        // another writer, the disk or the machine; waited out.
        4 | 5 | 6 | 7 | 9 | 10 | 13 | 15 => FailureKind::Infrastructure,
        // ERROR (no such table or column, a syntax error), PERM, READONLY, CORRUPT, CANTOPEN,
        // SCHEMA, AUTH, FORMAT, NOTADB: the file or the SQL must be fixed.
        1 | 3 | 8 | 11 | 14 | 17 | 23 | 24 | 26 => FailureKind::Setup,
        // CONSTRAINT, TOOBIG, MISMATCH, RANGE and the rest: this event's data.
        _ => FailureKind::Event,
    }
}

/// The kind of an error the database reported, read by the backend's own codes.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn database_kind(database: &dyn sqlx::error::DatabaseError) -> FailureKind {
    let Some(code) = database.code() else {
        return FailureKind::Event;
    };
    #[cfg(feature = "sqlite")]
    if database
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        return sqlite_code_kind(&code);
    }
    sqlstate_kind(&code)
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn sqlx_kind(error: &sqlx::Error) -> FailureKind {
    use sqlx::Error;
    match error {
        Error::Database(database) => database_kind(database.as_ref()),
        Error::Io(_)
        | Error::Tls(_)
        | Error::Protocol(_)
        | Error::PoolTimedOut
        | Error::PoolClosed
        | Error::WorkerCrashed
        | Error::BeginFailed => FailureKind::Infrastructure,
        Error::Configuration(_)
        | Error::ColumnNotFound(_)
        | Error::TypeNotFound { .. }
        | Error::ColumnIndexOutOfBounds { .. }
        | Error::Migrate(_)
        | Error::InvalidArgument(_) => FailureKind::Setup,
        _ => FailureKind::Event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes() {
        for (code, kind) in [
            ("08006", FailureKind::Infrastructure),
            ("40001", FailureKind::Infrastructure),
            ("40P01", FailureKind::Infrastructure),
            ("57P01", FailureKind::Infrastructure),
            ("53300", FailureKind::Infrastructure),
            ("42P01", FailureKind::Setup),
            ("42703", FailureKind::Setup),
            ("42501", FailureKind::Setup),
            ("28P01", FailureKind::Setup),
            ("23505", FailureKind::Event),
            ("22P02", FailureKind::Event),
            ("P0001", FailureKind::Event),
            ("", FailureKind::Event),
        ] {
            assert_eq!(sqlstate_kind(code), kind, "{code}");
        }
    }

    #[test]
    fn sqlite_codes() {
        for (code, kind) in [
            ("5", FailureKind::Infrastructure), // SQLITE_BUSY: database is locked
            ("517", FailureKind::Infrastructure), // SQLITE_BUSY_SNAPSHOT
            ("6", FailureKind::Infrastructure), // SQLITE_LOCKED
            ("10", FailureKind::Infrastructure), // SQLITE_IOERR
            ("13", FailureKind::Infrastructure), // SQLITE_FULL
            ("1", FailureKind::Setup),          // no such table
            ("8", FailureKind::Setup),          // SQLITE_READONLY
            ("26", FailureKind::Setup),         // SQLITE_NOTADB
            ("2067", FailureKind::Event),       // SQLITE_CONSTRAINT_UNIQUE
            ("1555", FailureKind::Event),       // SQLITE_CONSTRAINT_PRIMARYKEY
            ("275", FailureKind::Event),        // SQLITE_CONSTRAINT_CHECK
            ("x", FailureKind::Event),
        ] {
            assert_eq!(sqlite_code_kind(code), kind, "{code}");
        }
    }

    /// Real errors from a real SQLite file, through the whole chain: a missing table, a
    /// duplicate key, and a writer that finds the file locked by another.
    #[cfg(feature = "sqlite")]
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn sqlite_errors_are_read_by_their_own_codes() {
        use sqlx::Connection;
        use sqlx::sqlite::SqliteConnectOptions;
        let path = std::env::temp_dir().join(format!(
            "projections-classify-{}.db",
            uuid::Uuid::new_v4().simple()
        ));
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::ZERO);
        let mut first = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        let mut second = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        let kind = |error: Option<sqlx::Error>| error.map(|e| HandlerError::new(e).kind());

        let missing = sqlx::query("SELECT * FROM nowhere")
            .execute(&mut first)
            .await
            .err();
        assert_eq!(kind(missing), Some(FailureKind::Setup));

        sqlx::raw_sql("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
            .execute(&mut first)
            .await
            .unwrap();
        let duplicate = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut first)
            .await
            .err();
        assert_eq!(kind(duplicate), Some(FailureKind::Event));

        let held = first.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let locked = sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut second)
            .await
            .err();
        assert_eq!(kind(locked), Some(FailureKind::Infrastructure));
        drop(held);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn io_errors_are_infrastructure_anywhere_in_the_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let wrapped = StorageError::backend(io);
        assert_eq!(classify(&wrapped), FailureKind::Infrastructure);
        let handler = HandlerError::new(wrapped);
        assert_eq!(handler.kind(), FailureKind::Infrastructure);
    }

    #[test]
    fn a_stated_kind_wins_and_plain_errors_are_the_events() {
        let plain = HandlerError::new("insufficient funds");
        assert_eq!(plain.kind(), FailureKind::Event);
        let io = std::io::Error::other("disk");
        assert_eq!(HandlerError::event(io).kind(), FailureKind::Event);
        assert_eq!(
            HandlerError::setup("no such table").kind(),
            FailureKind::Setup
        );
        // Stated inside a user's own error chain.
        let inner = HandlerError::infrastructure("broker away");
        assert_eq!(HandlerError::new(inner).kind(), FailureKind::Infrastructure);
    }
}
