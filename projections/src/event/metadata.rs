use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// Everything known about an event besides its payload.
///
/// Fresh envelopes get a new event id and correlation id, the current UTC time, aggregate
/// version 1 and no position; the store assigns the position when the event is appended.
///
/// An event read back from any store equals the event appended (with the position and
/// aggregate version the store assigned): `occurred_at` is kept to the microsecond, the
/// precision of PostgreSQL's `timestamptz`, from the moment the metadata is made (see
/// [`occurred_at`](Self::occurred_at)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventMetadata {
    /// Unique id of this event. [`EventMetadata::new`] makes a time-ordered one (UUID version
    /// 7), so that a store's index of event ids grows at its end instead of at random pages.
    pub event_id: Uuid,
    /// The wire name of the payload type.
    pub event_type: String,
    /// The schema version of the payload.
    pub event_version: u32,
    /// When the event happened (UTC), in whole microseconds.
    ///
    /// [`EventMetadata::new`], [`Envelope::with_occurred_at`](crate::Envelope::with_occurred_at)
    /// and deserialisation truncate to the microsecond (towards the past; a leap second counts
    /// as the second after it, as PostgreSQL does), so an event equals itself after a round
    /// trip through any store. A finer time assigned to this field directly is truncated by
    /// the stores when the event is appended. Stores accept times from
    /// 4714-11-24 00:00:00 UTC BC (where PostgreSQL's `timestamptz` begins) to the end of
    /// chrono's range (year 262142); an earlier one makes the append fail with
    /// [`StorageError::Invalid`](crate::StorageError::Invalid), on every store.
    #[serde(deserialize_with = "deserialize_occurred_at")]
    pub occurred_at: DateTime<Utc>,
    /// The aggregate (stream) this event belongs to.
    pub aggregate_id: Uuid,
    /// The aggregate's type, for example `"Order"`.
    pub aggregate_type: String,
    /// The aggregate's version after this event, starting at 1.
    pub aggregate_version: u64,
    /// The tenant, for multi-tenant stores.
    pub tenant_id: Option<Uuid>,
    /// Who caused the event.
    pub actor_id: Option<String>,
    /// Groups the events of one business transaction.
    pub correlation_id: Uuid,
    /// The event that caused this one.
    pub causation_id: Option<Uuid>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// The global position, once stored. Positions start at 1 and increase in the order readers
    /// see them; a database store may leave gaps where an append failed.
    pub position: Option<u64>,
}

impl EventMetadata {
    /// Metadata for a new event of `event_type` on `aggregate_id`.
    pub fn new(
        event_type: impl Into<String>,
        event_version: u32,
        aggregate_id: Uuid,
        aggregate_type: impl Into<String>,
    ) -> Self {
        Self {
            // Time-ordered: appends of fresh events write the event-id index at its end, which
            // PostgreSQL does with far fewer page writes than at random places.
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            event_version,
            occurred_at: to_microseconds(Utc::now()),
            aggregate_id,
            aggregate_type: aggregate_type.into(),
            aggregate_version: 1,
            tenant_id: None,
            actor_id: None,
            correlation_id: Uuid::new_v4(),
            causation_id: None,
            metadata: BTreeMap::new(),
            position: None,
        }
    }
}

/// Microseconds from the Unix epoch to 4714-11-24 00:00:00 UTC BC, the earliest time
/// PostgreSQL's `timestamptz` holds, and so the earliest `occurred_at` a store accepts.
pub(crate) const EARLIEST_OCCURRED_AT_MICROS: i64 = -210_866_803_200_000_000;

/// `time` in whole microseconds, as every store keeps it: truncated towards the past, a leap
/// second carried into the following second (what PostgreSQL makes of both).
pub(crate) fn to_microseconds(time: DateTime<Utc>) -> DateTime<Utc> {
    // Every time chrono holds is a whole number of microseconds that fits in an i64 and
    // converts back, so the fallback is never taken.
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

fn deserialize_occurred_at<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<DateTime<Utc>, D::Error> {
    DateTime::<Utc>::deserialize(deserializer).map(to_microseconds)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::{NaiveDate, SubsecRound, TimeZone};

    use super::*;

    fn at(date: (i32, u32, u32), time: (u32, u32, u32), nanos: u32) -> DateTime<Utc> {
        let naive = NaiveDate::from_ymd_opt(date.0, date.1, date.2)
            .unwrap()
            .and_hms_nano_opt(time.0, time.1, time.2, nanos)
            .unwrap();
        Utc.from_utc_datetime(&naive)
    }

    #[test]
    fn fresh_metadata_is_in_microseconds() {
        let metadata = EventMetadata::new("t", 1, Uuid::nil(), "a");
        assert_eq!(metadata.occurred_at.timestamp_subsec_nanos() % 1_000, 0);
    }

    #[test]
    fn truncates_towards_the_past() {
        let after_2000 = at((2024, 2, 29), (12, 0, 0), 123_456_789);
        assert_eq!(
            to_microseconds(after_2000),
            at((2024, 2, 29), (12, 0, 0), 123_456_000)
        );
        let before_1970 = at((1969, 12, 31), (23, 59, 59), 999_999_999);
        assert_eq!(
            to_microseconds(before_1970),
            at((1969, 12, 31), (23, 59, 59), 999_999_000)
        );
        assert_eq!(to_microseconds(before_1970), before_1970.trunc_subsecs(6));
    }

    #[test]
    fn a_leap_second_becomes_the_next_second() {
        let leap = at((2016, 12, 31), (23, 59, 59), 1_500_000_500);
        assert_eq!(
            to_microseconds(leap),
            at((2017, 1, 1), (0, 0, 0), 500_000_000)
        );
    }

    #[test]
    fn chrono_extremes_survive() {
        for time in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            assert_eq!(to_microseconds(time), time.trunc_subsecs(6));
        }
    }

    #[test]
    fn earliest_is_where_postgresql_begins() {
        assert_eq!(
            at((-4713, 11, 24), (0, 0, 0), 0).timestamp_micros(),
            EARLIEST_OCCURRED_AT_MICROS
        );
    }

    #[test]
    fn deserialising_truncates() {
        let mut metadata = EventMetadata::new("t", 1, Uuid::nil(), "a");
        metadata.occurred_at = at((2024, 1, 1), (0, 0, 0), 999_999_999);
        let json = serde_json::to_string(&metadata).unwrap();
        let read: EventMetadata = serde_json::from_str(&json).unwrap();
        assert_eq!(read.occurred_at, at((2024, 1, 1), (0, 0, 0), 999_999_000));
        let again: EventMetadata =
            serde_json::from_str(&serde_json::to_string(&read).unwrap()).unwrap();
        assert_eq!(again, read);
    }
}
