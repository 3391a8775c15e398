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
            StorageError::Backend(_) => None,
        };
    }
    #[cfg(feature = "postgres")]
    if let Some(database) = link.downcast_ref::<sqlx::Error>() {
        return Some(sqlx_kind(database));
    }
    // Behind `#[error(transparent)]`, a wrapped `sqlx::Error::Database` hands on its inner
    // database error directly: the chain never shows the `sqlx::Error` itself.
    #[cfg(feature = "postgres")]
    if let Some(database) = link.downcast_ref::<Box<dyn sqlx::error::DatabaseError>>() {
        return Some(
            database
                .code()
                .map_or(FailureKind::Event, |code| sqlstate_kind(&code)),
        );
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

#[cfg(feature = "postgres")]
fn sqlx_kind(error: &sqlx::Error) -> FailureKind {
    use sqlx::Error;
    match error {
        Error::Database(database) => match database.code() {
            Some(code) => sqlstate_kind(&code),
            None => FailureKind::Event,
        },
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
