//! The event store a coordinator reads from.

mod shared;

pub use shared::{SharedReader, SharedReads};
mod filter;

pub(crate) use filter::stored_tenant;
pub use filter::{ReadFilter, ReadPage, TenantFilter};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::{AnyEvent, DecodeError, EARLIEST_OCCURRED_AT_MICROS};
use crate::storage::{BoxFuture, StorageError};

/// What the appender expects the aggregate's version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Whatever it is.
    Any,
    /// The aggregate has no events yet.
    NoStream,
    /// Exactly this version (the number of its events).
    Exact(u64),
}

/// An append did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// Another writer got there first; nothing was written.
    #[error(
        "aggregate {aggregate_id} is at version {actual}, expected {expected:?}; nothing was written"
    )]
    Conflict {
        /// The aggregate.
        aggregate_id: Uuid,
        /// What the appender expected.
        expected: ExpectedVersion,
        /// What it was.
        actual: u64,
    },
    /// An event does not belong to the aggregate it was appended to.
    #[error("event {event_id} names aggregate {event_aggregate}, not {aggregate_id}")]
    WrongAggregate {
        /// The aggregate appended to.
        aggregate_id: Uuid,
        /// The event.
        event_id: Uuid,
        /// The aggregate the event names.
        event_aggregate: Uuid,
    },
    /// A projection run inline (in the append's transaction) failed on one of the events:
    /// nothing was written.
    #[error("inline projection `{projection}` failed, so nothing was appended: {source}")]
    Inline {
        /// The projection.
        projection: String,
        /// Its handler's error.
        #[source]
        source: crate::projection::HandlerError,
    },
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppendResult {
    /// Position of the first appended event (0 for an empty append).
    pub first_position: u64,
    /// Position of the last appended event (0 for an empty append).
    pub last_position: u64,
    /// The aggregate's version after the append.
    pub version: u64,
}

/// A stored event whose type is unknown or whose payload does not decode. It goes through the
/// runner's terminal-failure policy like any failed event.
#[derive(Debug)]
#[non_exhaustive]
pub struct UndecodableEvent {
    /// Its position.
    pub position: u64,
    /// Its id.
    pub event_id: Uuid,
    /// Its wire name as stored.
    pub event_type: String,
    /// The whole stored row as JSON, kept in the dead-letter entry.
    pub raw: serde_json::Value,
    /// Why it does not decode.
    pub error: DecodeError,
}

impl UndecodableEvent {
    /// A stored event at `position` that failed to decode with `error`.
    pub fn new(
        position: u64,
        event_id: Uuid,
        event_type: impl Into<String>,
        raw: serde_json::Value,
        error: DecodeError,
    ) -> Self {
        Self {
            position,
            event_id,
            event_type: event_type.into(),
            raw,
            error,
        }
    }
}

/// One event read from the store.
#[derive(Debug)]
pub enum StoredEvent {
    /// Decoded.
    Event(AnyEvent),
    /// Could not be decoded.
    Undecodable(UndecodableEvent),
}

impl StoredEvent {
    /// Its global position.
    pub fn position(&self) -> Option<u64> {
        match self {
            Self::Event(event) => event.position(),
            Self::Undecodable(raw) => Some(raw.position),
        }
    }

    /// Its wire name.
    pub fn event_type(&self) -> &str {
        match self {
            Self::Event(event) => event.event_type(),
            Self::Undecodable(raw) => &raw.event_type,
        }
    }

    /// The decoded event, if it decoded.
    pub fn event(&self) -> Option<&AnyEvent> {
        match self {
            Self::Event(event) => Some(event),
            Self::Undecodable(_) => None,
        }
    }
}

impl From<AnyEvent> for StoredEvent {
    fn from(event: AnyEvent) -> Self {
        Self::Event(event)
    }
}

/// The relevant events after a position, for lag metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backlog {
    /// The store's last committed position, whether readers may pass it yet or not.
    pub head_position: u64,
    /// Relevant committed events after the position, including those readers cannot see yet.
    pub events: u64,
    /// When the store recorded the oldest of them.
    pub oldest_stored_at: Option<DateTime<Utc>>,
    /// What keeps some of them from readers, if anything does.
    pub held_back: Option<ReadHold>,
}

impl Backlog {
    /// A backlog that nothing holds back.
    pub fn new(head_position: u64, events: u64, oldest_stored_at: Option<DateTime<Utc>>) -> Self {
        Self {
            head_position,
            events,
            oldest_stored_at,
            held_back: None,
        }
    }

    /// The same backlog, with some of its events held back by `hold`.
    #[must_use]
    pub fn with_hold(mut self, hold: ReadHold) -> Self {
        self.held_back = Some(hold);
        self
    }
}

/// A transaction that keeps committed events from readers: on PostgreSQL, an append still in
/// flight (readers never pass a position it could still fill).
///
/// ```
/// use projections::store::ReadHold;
///
/// let hold = ReadHold::new(1_041, 12, Some(4242), None, Some("BEGIN; INSERT ...".into()));
/// assert_eq!(
///     hold.to_string(),
///     "12 committed events from position 1041 on wait for backend 4242 (BEGIN; INSERT ...)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ReadHold {
    /// The first position readers may not reach yet.
    pub position: u64,
    /// Relevant committed events at or after it, which readers cannot see yet.
    pub events: u64,
    /// The database backend (PostgreSQL process id) whose transaction holds them; `None` for
    /// a prepared transaction, which has no backend.
    pub pid: Option<i32>,
    /// When that transaction started.
    pub since: Option<DateTime<Utc>>,
    /// The first characters of its current or last statement.
    pub query: Option<String>,
}

impl ReadHold {
    /// A hold at `position` of `events` events by backend `pid`.
    pub fn new(
        position: u64,
        events: u64,
        pid: Option<i32>,
        since: Option<DateTime<Utc>>,
        query: Option<String>,
    ) -> Self {
        Self {
            position,
            events,
            pid,
            since,
            query,
        }
    }
}

impl std::fmt::Display for ReadHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} committed events from position {} on wait for ",
            self.events, self.position
        )?;
        match self.pid {
            Some(pid) => write!(f, "backend {pid}")?,
            None => f.write_str("a prepared transaction")?,
        }
        if let Some(since) = self.since {
            write!(f, ", in a transaction since {}", since.to_rfc3339())?;
        }
        if let Some(query) = &self.query {
            write!(f, " ({query})")?;
        }
        Ok(())
    }
}

/// What every store checks before it writes anything: every event names `aggregate_id`, and
/// every event can be stored ([`check_storable`]). One function, so the stores agree.
pub(crate) fn check_append(aggregate_id: Uuid, events: &[AnyEvent]) -> Result<(), AppendError> {
    if let Some(stranger) = events
        .iter()
        .find(|e| e.metadata().aggregate_id != aggregate_id)
    {
        return Err(AppendError::WrongAggregate {
            aggregate_id,
            event_id: stranger.event_id(),
            event_aggregate: stranger.metadata().aggregate_id,
        });
    }
    Ok(check_storable(events)?)
}

/// Refuses, before anything is written, an event that some store could not give back exactly:
/// one that happened before PostgreSQL's `timestamptz` begins (see
/// [`EventMetadata::occurred_at`](crate::EventMetadata::occurred_at)). Every store calls it,
/// so that they all accept the same events.
pub(crate) fn check_storable(events: &[AnyEvent]) -> Result<(), StorageError> {
    for event in events {
        let metadata = event.metadata();
        if metadata.occurred_at.timestamp_micros() < EARLIEST_OCCURRED_AT_MICROS {
            return Err(StorageError::Invalid {
                what: "event occurred_at",
                reason: format!(
                    "event {} ({}) happened at {}, before 4714-11-24 00:00:00 UTC BC, the \
                     earliest time a store keeps",
                    metadata.event_id, metadata.event_type, metadata.occurred_at
                ),
            });
        }
    }
    Ok(())
}

/// An append-only log of events with increasing global positions.
///
/// Positions start at 1 and only grow. The in-memory store has no gaps; a database store may
/// have gaps where an append rolled back, but a reader never passes a position that an
/// unfinished append could still fill.
pub trait EventStore: Send + Sync {
    /// Appends `events` to `aggregate_id` if its version is as `expected`, all or nothing.
    /// The store assigns positions and aggregate versions, and keeps `occurred_at` to the
    /// microsecond (see [`EventMetadata::occurred_at`](crate::EventMetadata::occurred_at)):
    /// reads give back exactly the events appended, with their positions and versions.
    fn append(
        &self,
        aggregate_id: Uuid,
        expected: ExpectedVersion,
        events: Vec<AnyEvent>,
    ) -> BoxFuture<'_, Result<AppendResult, AppendError>>;

    /// Every event of one aggregate, in version order.
    fn read_stream(
        &self,
        aggregate_id: Uuid,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>>;

    /// Up to `limit` events with a position above `after`, in position order. Never returns
    /// a position that an unfinished append could still precede.
    fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>>;

    /// Up to `limit` events with a position above `after` that `filter` selects, in position
    /// order, and how far the read looked ([`ReadPage::read_to`]). Never returns, nor reads
    /// up to, a position that an unfinished append could still precede.
    ///
    /// A reader that handles the page's events may move its checkpoint to `read_to`, also when
    /// the page holds no event: a projection that handles one type of twenty moves on over
    /// pages of other types without reading them.
    ///
    /// The default reads one page of [`read_all`](Self::read_all) and keeps the events the
    /// filter selects ([`ReadFilter::page_of`]): correct for every store, as slow as reading
    /// everything. The stores of this crate select in the query.
    fn read_filtered<'a>(
        &'a self,
        after: u64,
        limit: usize,
        filter: &'a ReadFilter,
    ) -> BoxFuture<'a, Result<ReadPage, StorageError>> {
        Box::pin(async move {
            let events = self.read_all(after, limit).await?;
            Ok(filter.page_of(after, limit, events))
        })
    }

    /// The last readable position (0 when empty).
    fn head_position(&self) -> BoxFuture<'_, Result<u64, StorageError>>;

    /// The events of `event_types` after `after` (all types if empty), for lag metrics.
    fn backlog<'a>(
        &'a self,
        after: u64,
        event_types: &'a [&'static str],
    ) -> BoxFuture<'a, Result<Backlog, StorageError>>;

    /// The events `filter` selects after `after`, for lag metrics: what
    /// [`read_filtered`](Self::read_filtered) would still return, counting those the read
    /// horizon holds back (see [`backlog`](Self::backlog)). Events of types unknown to the
    /// program are not counted; the tenants of a [`TenantFilter::matching`] predicate are all
    /// counted.
    ///
    /// The default counts the filter's event types with [`backlog`](Self::backlog), every
    /// tenant and aggregate type alike. The stores of this crate count exactly.
    fn backlog_filtered<'a>(
        &'a self,
        after: u64,
        filter: &'a ReadFilter,
    ) -> BoxFuture<'a, Result<Backlog, StorageError>> {
        Box::pin(async move {
            match filter.types() {
                None => self.backlog(after, &[]).await,
                Some(types) if !types.is_empty() => self.backlog(after, types).await,
                // No type at all: nothing to count but the head.
                Some(_) => {
                    let head = self.backlog(after, &[]).await?.head_position;
                    Ok(Backlog::new(head, 0, None))
                }
            }
        })
    }

    /// A receiver that changes whenever events are appended (carrying the new head), for
    /// live tailing; `None` if the store cannot notify, in which case readers poll.
    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}
