//! One read of the log for several readers: the coordinator's workers read through
//! [`SharedReads`], which keeps the pages it has read (complete ranges of positions) for a
//! while, so that projections catching up over the same range read the store about once
//! between them, each still at its own pace.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

use super::{
    AppendError, AppendResult, Backlog, EventStore, ExpectedVersion, ReadFilter, ReadPage,
    StoredEvent,
};
use crate::event::AnyEvent;
use crate::storage::{BoxFuture, StorageError};

/// How many events a read of the store asks for at least: pages of the readers' own size
/// would make a reader ahead of the others read alone, page by page.
const CHUNK: usize = 1_000;

/// A reader catching up this close behind (or ahead of) a read, in positions, will want the
/// same range soon.
const NEAR: u64 = 2 * CHUNK as u64;

/// An [`EventStore`] that shares its reads of `read_all` among its readers.
///
/// Each read of the store covers a range of positions completely (a store never returns a
/// page with a hole an append in flight could still fill), so the events of that range can be
/// handed to any later reader of it without asking the store again. The ranges are kept, most
/// recent first, up to a capacity in events; a reader behind them reads from the store, as it
/// would alone. Reads of the store through it go one at a time, so readers asking for the same
/// range at once wait for one read instead of making one each.
///
/// Pages with an event that does not decode are handed out and not kept: each reader meets
/// that event on its own.
///
/// ```
/// # use std::sync::Arc;
/// # use projections::{EventStore, InMemoryEventStore};
/// use projections::store::SharedReads;
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
/// let shared = SharedReads::new(store, 10_000);
/// assert!(shared.read_all(0, 100).await?.is_empty());
/// assert_eq!(shared.events_read(), 0);
/// # Ok::<_, projections::StorageError>(())
/// # }).unwrap();
/// ```
pub struct SharedReads {
    inner: Arc<dyn EventStore>,
    capacity: usize,
    cache: Mutex<Cache>,
    /// Held while the store is read, so that readers of one range make one read.
    fetching: tokio::sync::Mutex<()>,
    events_read: AtomicU64,
    events_served: AtomicU64,
    /// Where each reader got to with its last filtered read: `None` before its first read
    /// (it may be anywhere), else the position and whether it was at the head.
    readers: Mutex<std::collections::HashMap<u64, Option<(u64, bool)>>>,
    next_reader: AtomicU64,
}

/// One reader of a [`SharedReads`]: the coordinator gives one to each worker, so the shared
/// reader can tell readers that read together from one reading alone.
pub struct SharedReader {
    shared: Arc<SharedReads>,
    id: u64,
}

/// The kept ranges, by their lower bound (exclusive).
#[derive(Default)]
struct Cache {
    ranges: BTreeMap<u64, Range>,
    events: usize,
}

/// The events of positions `(after, to]`, every one the store has there.
struct Range {
    to: u64,
    events: Arc<[AnyEvent]>,
}

impl std::fmt::Debug for SharedReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedReads")
            .field("capacity", &self.capacity)
            .field("events_read", &self.events_read())
            .field("events_served", &self.events_served())
            .finish_non_exhaustive()
    }
}

impl SharedReads {
    /// Shares the reads of `store`, keeping at most `capacity` events (at least one read's
    /// worth).
    pub fn new(store: Arc<dyn EventStore>, capacity: usize) -> Self {
        Self {
            inner: store,
            capacity: capacity.max(CHUNK),
            cache: Mutex::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
            events_read: AtomicU64::new(0),
            events_served: AtomicU64::new(0),
            readers: Mutex::new(std::collections::HashMap::new()),
            next_reader: AtomicU64::new(1),
        }
    }

    /// A reader of its own (see [`SharedReader`]).
    pub fn reader(self: &Arc<Self>) -> SharedReader {
        let id = self.next_reader.fetch_add(1, Ordering::Relaxed);
        self.readers().insert(id, None);
        SharedReader {
            shared: Arc::clone(self),
            id,
        }
    }

    fn readers(&self) -> MutexGuard<'_, std::collections::HashMap<u64, Option<(u64, bool)>>> {
        self.readers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a filtered read by `reader` at `after`, which no kept range holds, should read
    /// the range for everyone: another reader is catching up near it or behind it (or has not
    /// read yet, so may be anywhere), and will want it too. A reader alone in catching up, the
    /// others at the head, reads with its own filter instead.
    fn read_together(&self, reader: u64, after: u64) -> bool {
        self.readers().iter().any(|(other, state)| {
            *other != reader
                && match state {
                    None => true,
                    Some((position, at_head)) => !at_head && *position <= after + NEAR,
                }
        })
    }

    fn read_by(&self, reader: u64, page: &ReadPage) {
        if reader != 0 {
            self.readers()
                .insert(reader, Some((page.read_to, page.at_head)));
        }
    }

    /// A filtered read: from the kept ranges (or read for everyone) when readers read
    /// together, else the store's own filtered read, which leaves out what the reader does not
    /// need.
    async fn read_filtered_by(
        &self,
        reader: u64,
        after: u64,
        limit: usize,
        filter: &ReadFilter,
    ) -> Result<ReadPage, StorageError> {
        let held = {
            let cache = self.cache();
            cache
                .ranges
                .range(..=after)
                .next_back()
                .is_some_and(|(_, range)| range.to > after)
        };
        let page = if filter.is_all() || held || self.read_together(reader, after) {
            let events = self.read_shared(after, limit).await?;
            filter.page_of(after, limit, events)
        } else {
            self.inner.read_filtered(after, limit, filter).await?
        };
        self.read_by(reader, &page);
        Ok(page)
    }

    /// The store it reads.
    pub fn inner(&self) -> &Arc<dyn EventStore> {
        &self.inner
    }

    /// Events read from the store so far.
    pub fn events_read(&self) -> u64 {
        self.events_read.load(Ordering::Relaxed)
    }

    /// Events handed to readers so far (from the store or kept ranges).
    pub fn events_served(&self) -> u64 {
        self.events_served.load(Ordering::Relaxed)
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Up to `limit` events after `after` from the kept ranges, following ranges that touch;
    /// and where it stopped: the position up to which the answer is complete, or `None` when
    /// no range holds `after`.
    fn kept(&self, after: u64, limit: usize, page: &mut Vec<StoredEvent>) -> Option<u64> {
        let cache = self.cache();
        let mut cursor = after;
        let mut found = false;
        while page.len() < limit {
            // The range whose lower bound is the highest at or below the cursor.
            let Some((_, range)) = cache.ranges.range(..=cursor).next_back() else {
                break;
            };
            if range.to <= cursor {
                break;
            }
            found = true;
            let start = range
                .events
                .partition_point(|e| e.position().unwrap_or(0) <= cursor);
            let take = (limit - page.len()).min(range.events.len() - start);
            page.extend(
                range.events[start..start + take]
                    .iter()
                    .cloned()
                    .map(StoredEvent::Event),
            );
            cursor = if start + take == range.events.len() {
                range.to
            } else {
                page.last()
                    .and_then(StoredEvent::position)
                    .unwrap_or(cursor)
            };
        }
        found.then_some(cursor)
    }

    fn keep(&self, after: u64, events: &[StoredEvent]) {
        let decoded: Option<Vec<AnyEvent>> = events
            .iter()
            .map(|e| match e {
                StoredEvent::Event(event) if event.position().is_some() => Some(event.clone()),
                _ => None,
            })
            .collect();
        let (Some(decoded), Some(to)) = (decoded, events.last().and_then(StoredEvent::position))
        else {
            return;
        };
        let mut cache = self.cache();
        cache.events += decoded.len();
        if let Some(old) = cache.ranges.insert(
            after,
            Range {
                to,
                events: decoded.into(),
            },
        ) {
            cache.events -= old.events.len();
        }
        // Other ranges make room for this one, the lowest first: readers that far behind
        // read on their own (this one's reader among them, when it is the lowest).
        while cache.events > self.capacity && cache.ranges.len() > 1 {
            let lowest = cache.ranges.first_key_value().map(|(key, _)| *key);
            let evicted = if lowest == Some(after) {
                cache.ranges.pop_last()
            } else {
                cache.ranges.pop_first()
            };
            let Some((_, range)) = evicted else {
                break;
            };
            cache.events -= range.events.len();
        }
    }

    async fn read_shared(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        let mut page = Vec::with_capacity(limit.min(CHUNK));
        let mut cursor = after;
        while page.len() < limit {
            if let Some(to) = self.kept(cursor, limit, &mut page) {
                cursor = to;
                continue;
            }
            let _one_at_a_time = self.fetching.lock().await;
            // Another reader may have read this range meanwhile.
            if self.kept(cursor, limit, &mut page).is_some() {
                continue;
            }
            let want = (limit - page.len()).max(CHUNK);
            let read = self.inner.read_all(cursor, want).await?;
            self.events_read
                .fetch_add(read.len() as u64, Ordering::Relaxed);
            let complete = read.len() < want;
            self.keep(cursor, &read);
            let Some(last) = read.last().and_then(StoredEvent::position) else {
                break;
            };
            let room = limit - page.len();
            let taken = read.len().min(room);
            page.extend(read.into_iter().take(taken));
            cursor = last;
            if complete || taken < room {
                break;
            }
        }
        self.events_served
            .fetch_add(page.len() as u64, Ordering::Relaxed);
        Ok(page)
    }
}

macro_rules! forward_to_store {
    ($shared:ident, $reader:expr) => {
        fn append(
            &self,
            aggregate_id: Uuid,
            expected: ExpectedVersion,
            events: Vec<AnyEvent>,
        ) -> BoxFuture<'_, Result<AppendResult, AppendError>> {
            self.$shared().inner.append(aggregate_id, expected, events)
        }

        fn read_stream(
            &self,
            aggregate_id: Uuid,
        ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>> {
            self.$shared().inner.read_stream(aggregate_id)
        }

        fn read_all(
            &self,
            after: u64,
            limit: usize,
        ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>> {
            Box::pin(self.$shared().read_shared(after, limit))
        }

        fn read_filtered<'a>(
            &'a self,
            after: u64,
            limit: usize,
            filter: &'a ReadFilter,
        ) -> BoxFuture<'a, Result<ReadPage, StorageError>> {
            let reader = $reader(self);
            Box::pin(
                self.$shared()
                    .read_filtered_by(reader, after, limit, filter),
            )
        }

        fn head_position(&self) -> BoxFuture<'_, Result<u64, StorageError>> {
            self.$shared().inner.head_position()
        }

        fn backlog<'a>(
            &'a self,
            after: u64,
            event_types: &'a [&'static str],
        ) -> BoxFuture<'a, Result<Backlog, StorageError>> {
            self.$shared().inner.backlog(after, event_types)
        }

        fn backlog_filtered<'a>(
            &'a self,
            after: u64,
            filter: &'a ReadFilter,
        ) -> BoxFuture<'a, Result<Backlog, StorageError>> {
            self.$shared().inner.backlog_filtered(after, filter)
        }

        fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
            self.$shared().inner.subscribe()
        }
    };
}

impl SharedReads {
    fn this(&self) -> &Self {
        self
    }
}

impl SharedReader {
    fn shared(&self) -> &SharedReads {
        &self.shared
    }
}

impl Drop for SharedReader {
    /// A reader gone (its worker ended) is no longer waited for.
    fn drop(&mut self) {
        self.shared.readers().remove(&self.id);
    }
}

impl std::fmt::Debug for SharedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedReader")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl EventStore for SharedReader {
    forward_to_store!(shared, |reader: &SharedReader| reader.id);
}

impl EventStore for SharedReads {
    forward_to_store!(this, |_: &SharedReads| 0);
}
