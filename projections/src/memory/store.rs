use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use super::lock;
use crate::event::{AnyEvent, to_microseconds};
use crate::storage::{BoxFuture, StorageError};
use crate::store::{
    AppendError, AppendResult, Backlog, EventStore, ExpectedVersion, StoredEvent, check_append,
};

/// An event store in memory. Events are decoded once, at append, and shared on every read.
#[derive(Debug)]
pub struct InMemoryEventStore {
    state: Mutex<State>,
    head: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    /// Index `i` holds position `i + 1`.
    events: Vec<(AnyEvent, DateTime<Utc>)>,
    /// Positions of each aggregate's events, in version order.
    streams: HashMap<Uuid, Vec<u64>>,
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            head: watch::Sender::new(0),
        }
    }
}

impl InMemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends synchronously (the store never waits).
    pub fn append_now(
        &self,
        aggregate_id: Uuid,
        expected: ExpectedVersion,
        events: Vec<AnyEvent>,
    ) -> Result<AppendResult, AppendError> {
        check_append(aggregate_id, &events)?;
        let mut state = lock(&self.state);
        let actual = state
            .streams
            .get(&aggregate_id)
            .map_or(0, |s| s.len() as u64);
        let conflict = match expected {
            ExpectedVersion::Any => false,
            ExpectedVersion::NoStream => actual != 0,
            ExpectedVersion::Exact(version) => actual != version,
        };
        if conflict {
            return Err(AppendError::Conflict {
                aggregate_id,
                expected,
                actual,
            });
        }
        let now = Utc::now();
        let first_position = state.events.len() as u64 + 1;
        let mut version = actual;
        let mut positions = Vec::with_capacity(events.len());
        for event in events {
            version += 1;
            let position = state.events.len() as u64 + 1;
            let stored = event.map_metadata(|m| {
                m.position = Some(position);
                m.aggregate_version = version;
                // As PostgreSQL keeps it, for a time assigned to the field directly.
                m.occurred_at = to_microseconds(m.occurred_at);
            });
            state.events.push((stored, now));
            positions.push(position);
        }
        let last_position = state.events.len() as u64;
        let appended = !positions.is_empty();
        state
            .streams
            .entry(aggregate_id)
            .or_default()
            .extend(positions);
        drop(state);
        if appended {
            self.head.send_replace(last_position);
        }
        Ok(AppendResult {
            first_position: if appended { first_position } else { 0 },
            last_position: if appended { last_position } else { 0 },
            version,
        })
    }

    /// Reads synchronously; see [`EventStore::read_all`].
    pub fn read_all_now(&self, after: u64, limit: usize) -> Vec<AnyEvent> {
        let state = lock(&self.state);
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(state.events.len());
        state.events[start..]
            .iter()
            .take(limit)
            .map(|(event, _)| event.clone())
            .collect()
    }

    /// The number of stored events.
    pub fn len(&self) -> usize {
        lock(&self.state).events.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl EventStore for InMemoryEventStore {
    fn append(
        &self,
        aggregate_id: Uuid,
        expected: ExpectedVersion,
        events: Vec<AnyEvent>,
    ) -> BoxFuture<'_, Result<AppendResult, AppendError>> {
        Box::pin(std::future::ready(self.append_now(
            aggregate_id,
            expected,
            events,
        )))
    }

    fn read_stream(
        &self,
        aggregate_id: Uuid,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>> {
        let state = lock(&self.state);
        let events = state
            .streams
            .get(&aggregate_id)
            .into_iter()
            .flatten()
            .filter_map(|&p| state.events.get((p - 1) as usize))
            .map(|(event, _)| StoredEvent::Event(event.clone()))
            .collect();
        Box::pin(std::future::ready(Ok(events)))
    }

    fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>> {
        let events = self
            .read_all_now(after, limit)
            .into_iter()
            .map(StoredEvent::Event)
            .collect();
        Box::pin(std::future::ready(Ok(events)))
    }

    fn head_position(&self) -> BoxFuture<'_, Result<u64, StorageError>> {
        let head = lock(&self.state).events.len() as u64;
        Box::pin(std::future::ready(Ok(head)))
    }

    fn backlog<'a>(
        &'a self,
        after: u64,
        event_types: &'a [&'static str],
    ) -> BoxFuture<'a, Result<Backlog, StorageError>> {
        let state = lock(&self.state);
        let head = state.events.len() as u64;
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(state.events.len());
        let mut events = 0;
        let mut oldest = None;
        for (event, stored_at) in &state.events[start..] {
            if event_types.is_empty() || event_types.contains(&event.event_type()) {
                events += 1;
                oldest.get_or_insert(*stored_at);
            }
        }
        Box::pin(std::future::ready(Ok(Backlog::new(head, events, oldest))))
    }

    fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        Some(self.head.subscribe())
    }
}
