//! Reading `timestamptz` columns without panicking.
//!
//! PostgreSQL's `timestamptz` holds `'infinity'`, `'-infinity'` and years up to 294276; chrono's
//! `DateTime<Utc>` ends in year 262142. sqlx's decoder for `DateTime<Utc>` adds the stored
//! microseconds to 2000-01-01 with chrono's `+`, which panics when the result does not fit, so
//! one such row would panic every reader of it. Every timestamp this crate reads goes through
//! [`Timestamptz`] instead, and a value out of range becomes an undecodable event or a
//! [`StorageError`]. Migration 5 refuses such values in new rows.

use std::fmt;

use chrono::{DateTime, Utc};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgRow, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::{Decode, Postgres, Row, Type};

use super::backend;
use crate::storage::StorageError;

/// Microseconds from the Unix epoch to 2000-01-01 00:00:00 UTC, where PostgreSQL counts from.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` as stored: a `DateTime<Utc>`, or a value chrono cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timestamptz {
    /// A time chrono holds.
    InRange(DateTime<Utc>),
    /// Infinite, or beyond chrono's range.
    OutOfRange(OutOfRange),
}

/// A stored `timestamptz` that no `DateTime<Utc>` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OutOfRange {
    /// Microseconds from 2000-01-01 00:00:00 UTC, as PostgreSQL stores it: `i64::MAX` is
    /// `'infinity'`, `i64::MIN` is `'-infinity'`.
    micros_since_2000: i64,
}

impl fmt::Display for OutOfRange {
    /// As PostgreSQL writes it: `infinity`, `-infinity`, or `294276-12-31 23:59:59+00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MICROS_PER_DAY: i128 = 86_400_000_000;
        match self.micros_since_2000 {
            i64::MAX => f.write_str("infinity"),
            i64::MIN => f.write_str("-infinity"),
            micros => {
                let unix = i128::from(micros) + i128::from(POSTGRES_EPOCH_MICROS);
                let (days, micros_of_day) = (
                    unix.div_euclid(MICROS_PER_DAY),
                    unix.rem_euclid(MICROS_PER_DAY),
                );
                let (year, month, day) = civil_from_days(days);
                let seconds = micros_of_day / 1_000_000;
                write!(
                    f,
                    "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
                    seconds / 3600,
                    seconds / 60 % 60,
                    seconds % 60
                )?;
                match micros_of_day % 1_000_000 {
                    0 => f.write_str("+00"),
                    fraction => write!(f, ".{fraction:06}+00"),
                }
            }
        }
    }
}

/// The proleptic Gregorian date `days` after 1970-01-01, for dates chrono cannot hold
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i128) -> (i128, i128, i128) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    (year, month, day)
}

impl Timestamptz {
    /// The value stored as `micros_since_2000`, PostgreSQL's binary form.
    fn from_postgres_micros(micros_since_2000: i64) -> Self {
        micros_since_2000
            .checked_add(POSTGRES_EPOCH_MICROS)
            .and_then(DateTime::from_timestamp_micros)
            .map_or(
                Self::OutOfRange(OutOfRange { micros_since_2000 }),
                Self::InRange,
            )
    }

    /// The time, or a [`StorageError`] naming `what` when chrono cannot hold it.
    pub(super) fn in_range(self, what: &dyn fmt::Display) -> Result<DateTime<Utc>, StorageError> {
        match self {
            Self::InRange(time) => Ok(time),
            Self::OutOfRange(value) => Err(out_of_range(what, value)),
        }
    }

    /// The time as JSON: as serde writes a `DateTime<Utc>`, or the description of a value out
    /// of range.
    pub(super) fn to_json(self) -> serde_json::Value {
        match self {
            Self::InRange(time) => serde_json::to_value(time).unwrap_or(serde_json::Value::Null),
            Self::OutOfRange(value) => serde_json::Value::String(value.to_string()),
        }
    }
}

/// The error of a stored `what` that is `value`.
fn out_of_range(what: &dyn fmt::Display, value: OutOfRange) -> StorageError {
    StorageError::Unreadable(format!(
        "the stored {what} is {value}, outside the range of a DateTime<Utc> (finite, up to the \
         year 262142); migration 5 refuses such values in new rows, correct or delete the row"
    ))
}

impl Type<Postgres> for Timestamptz {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl<'r> Decode<'r, Postgres> for Timestamptz {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => {
                let micros_since_2000 = <i64 as Decode<'r, Postgres>>::decode(value)?;
                Ok(Self::from_postgres_micros(micros_since_2000))
            }
            // Only simple-protocol queries (`raw_sql`) read text; sqlx parses finite values
            // without panicking.
            PgValueFormat::Text => match value.as_str()? {
                "infinity" => Ok(Self::from_postgres_micros(i64::MAX)),
                "-infinity" => Ok(Self::from_postgres_micros(i64::MIN)),
                _ => <DateTime<Utc> as Decode<'r, Postgres>>::decode(value).map(Self::InRange),
            },
        }
    }
}

/// The `timestamptz` column `column` of `row`, which must be in range; `what` names it (and
/// its row) in the error.
pub(super) fn get(
    row: &PgRow,
    column: &str,
    what: &dyn fmt::Display,
) -> Result<DateTime<Utc>, StorageError> {
    row.try_get::<Timestamptz, _>(column)
        .map_err(backend)?
        .in_range(what)
}

/// The nullable `timestamptz` column `column` of `row`; see [`get`].
pub(super) fn get_optional(
    row: &PgRow,
    column: &str,
    what: &dyn fmt::Display,
) -> Result<Option<DateTime<Utc>>, StorageError> {
    row.try_get::<Option<Timestamptz>, _>(column)
        .map_err(backend)?
        .map(|time| time.in_range(what))
        .transpose()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn postgres_extremes_are_out_of_range_not_a_panic() {
        // PostgreSQL's binary forms, as it sends them, of its extremes, and the first
        // microsecond chrono cannot hold.
        let first_unreadable =
            DateTime::<Utc>::MAX_UTC.timestamp_micros() + 1 - POSTGRES_EPOCH_MICROS;
        for (micros, shown) in [
            (i64::MAX, "infinity"),
            (i64::MIN, "-infinity"),
            (9_223_371_331_199_999_999, "294276-12-31 23:59:59.999999+00"),
            (9_223_371_331_199_000_000, "294276-12-31 23:59:59+00"),
            (first_unreadable, "262143-01-01 00:00:00+00"),
        ] {
            match Timestamptz::from_postgres_micros(micros) {
                Timestamptz::OutOfRange(value) => assert_eq!(value.to_string(), shown),
                other => panic!("{shown} read as {other:?}"),
            }
        }
    }

    #[test]
    fn dates_agree_with_chrono() {
        for time in [
            DateTime::<Utc>::MAX_UTC,
            DateTime::UNIX_EPOCH,
            DateTime::from_timestamp_micros(POSTGRES_EPOCH_MICROS).unwrap(),
            DateTime::from_timestamp_micros(951_782_400_123_456).unwrap(), // 2000-02-29
            DateTime::from_timestamp_micros(-11_670_912_000_000_001).unwrap(), // 1600-02-29
            DateTime::from_timestamp_micros(253_402_300_799_999_999).unwrap(), // 9999-12-31
        ] {
            let time = crate::event::to_microseconds(time);
            let shown = OutOfRange {
                micros_since_2000: time.timestamp_micros() - POSTGRES_EPOCH_MICROS,
            }
            .to_string();
            // chrono signs years past 9999.
            let expected = time.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string();
            assert_eq!(
                shown,
                expected.trim_start_matches('+').replace(".000000", "")
            );
        }
    }

    #[test]
    fn chrono_extremes_are_in_range() {
        for time in [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            DateTime::UNIX_EPOCH,
        ] {
            let micros = time.timestamp_micros() - POSTGRES_EPOCH_MICROS;
            assert_eq!(
                Timestamptz::from_postgres_micros(micros),
                Timestamptz::InRange(crate::event::to_microseconds(time))
            );
        }
        assert_eq!(
            Timestamptz::from_postgres_micros(0),
            Timestamptz::InRange(DateTime::from_timestamp_micros(POSTGRES_EPOCH_MICROS).unwrap())
        );
    }

    /// Migration 5's checks name the first instant chrono cannot hold.
    #[test]
    fn migration_5_bounds_the_end_of_chrono() {
        use chrono::Datelike;
        let max = DateTime::<Utc>::MAX_UTC;
        assert_eq!((max.year(), max.month(), max.day()), (262_142, 12, 31));
        let first_unreadable = max.timestamp_micros() + 1 - POSTGRES_EPOCH_MICROS;
        assert!(matches!(
            Timestamptz::from_postgres_micros(first_unreadable),
            Timestamptz::OutOfRange(_)
        ));
        assert!(
            include_str!("../../migrations/0005_readable_timestamps.sql")
                .contains("< '262143-01-01 00:00:00+00'")
        );
    }
}
