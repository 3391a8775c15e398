use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use super::lock;
use crate::event::{AnyEvent, to_microseconds};
use crate::storage::{BoxFuture, StorageError};
use crate::store::{
    AppendError, AppendResult, Backlog, EventStore, ExpectedVersion, ReadFilter, ReadPage,
    StoredEvent, check_append,
};

/// An event store in memory. Events are decoded once, at append, and shared on every read.
///
/// It keeps the positions of each event type and of each aggregate type, so that a
/// [filtered read](EventStore::read_filtered) visits only the events of the filter's types.
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
    /// Positions of each event type's events, in position order.
    by_type: HashMap<&'static str, Vec<u64>>,
    /// Positions of each aggregate type's events, in position order.
    by_aggregate_type: HashMap<String, Vec<u64>>,
}

impl State {
    /// The events `filter` selects after `after`, at most `limit`.
    fn read_filtered(&self, after: u64, limit: usize, filter: &ReadFilter) -> ReadPage {
        let head = self.events.len() as u64;
        if limit == 0 {
            return ReadPage::new(Vec::new(), after, after >= head);
        }
        let mut events = Vec::new();
        let mut read_to = after.max(head);
        let Some(types) = filter.types() else {
            // Every type: a scan, for the tenant.
            let start = usize::try_from(after)
                .unwrap_or(usize::MAX)
                .min(self.events.len());
            for (event, _) in &self.events[start..] {
                if filter.tenant().admits(event.metadata().tenant_id) {
                    events.push(StoredEvent::Event(event.clone()));
                    if events.len() == limit {
                        read_to = event.position().unwrap_or(head);
                        break;
                    }
                }
            }
            return ReadPage::new(events, read_to, read_to >= head);
        };
        // The positions after `after` of each type and aggregate type, merged in order.
        let mut lists: Vec<&[u64]> = types
            .iter()
            .filter_map(|t| self.by_type.get(t))
            .chain(
                filter
                    .aggregate_types()
                    .iter()
                    .filter_map(|a| self.by_aggregate_type.get(a)),
            )
            .map(|positions| &positions[positions.partition_point(|&p| p <= after)..])
            .collect();
        while let Some(next) = lists.iter().filter_map(|l| l.first().copied()).min() {
            for list in &mut lists {
                if list.first() == Some(&next) {
                    *list = &list[1..];
                }
            }
            let Some((event, _)) = usize::try_from(next - 1)
                .ok()
                .and_then(|index| self.events.get(index))
            else {
                continue;
            };
            if !filter.tenant().admits(event.metadata().tenant_id) {
                continue;
            }
            events.push(StoredEvent::Event(event.clone()));
            if events.len() == limit {
                read_to = next;
                break;
            }
        }
        ReadPage::new(events, read_to, read_to >= head)
    }

    /// The events `filter` selects after `after`, counted.
    fn backlog_filtered(&self, after: u64, filter: &ReadFilter) -> Backlog {
        let head = self.events.len() as u64;
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(self.events.len());
        let mut events = 0;
        let mut oldest = None;
        for (event, stored_at) in &self.events[start..] {
            if filter.selects(event) {
                events += 1;
                oldest.get_or_insert(*stored_at);
            }
        }
        Backlog::new(head, events, oldest)
    }
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
            state
                .by_type
                .entry(stored.event_type())
                .or_default()
                .push(position);
            let aggregate_type = &stored.metadata().aggregate_type;
            match state.by_aggregate_type.get_mut(aggregate_type) {
                Some(list) => list.push(position),
                None => {
                    let key = aggregate_type.clone();
                    state.by_aggregate_type.insert(key, vec![position]);
                }
            }
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

    /// Visits only the events of the filter's event and aggregate types (a scan when it has
    /// none, for the tenant); reads up to the head when it finds fewer than `limit`.
    fn read_filtered<'a>(
        &'a self,
        after: u64,
        limit: usize,
        filter: &'a ReadFilter,
    ) -> BoxFuture<'a, Result<ReadPage, StorageError>> {
        let page = lock(&self.state).read_filtered(after, limit, filter);
        Box::pin(std::future::ready(Ok(page)))
    }

    fn backlog_filtered<'a>(
        &'a self,
        after: u64,
        filter: &'a ReadFilter,
    ) -> BoxFuture<'a, Result<Backlog, StorageError>> {
        let backlog = lock(&self.state).backlog_filtered(after, filter);
        Box::pin(std::future::ready(Ok(backlog)))
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
