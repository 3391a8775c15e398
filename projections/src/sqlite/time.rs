//! Times as SQLite stores them here: integer microseconds since 1970-01-01 00:00:00 UTC, the
//! precision of an event's `occurred_at`, so a time reads back exactly as it was written.

use chrono::{DateTime, Utc};

use crate::event::to_microseconds;
use crate::storage::StorageError;

/// `time` as stored (truncated to the microsecond, as every store does).
pub(super) fn to_stored(time: DateTime<Utc>) -> i64 {
    to_microseconds(time).timestamp_micros()
}

/// Now, as stored.
pub(crate) fn now() -> i64 {
    to_stored(Utc::now())
}

/// A stored time, `None` when chrono cannot hold it.
pub(super) fn parse(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
}

/// A stored time that must be readable; `what` names it in the error.
pub(super) fn from_stored(
    micros: i64,
    what: &dyn std::fmt::Display,
) -> Result<DateTime<Utc>, StorageError> {
    parse(micros).ok_or_else(|| {
        StorageError::Unreadable(format!(
            "the stored {what} is {micros} microseconds from 1970, outside the range of a \
             DateTime<Utc>"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extremes_round_trip_and_beyond_is_none() {
        for time in [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            Utc::now(),
        ] {
            assert_eq!(parse(to_stored(time)), Some(to_microseconds(time)));
        }
        assert_eq!(parse(i64::MAX), None);
    }
}
