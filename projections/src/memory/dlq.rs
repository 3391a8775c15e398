use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use chrono::Utc;

use super::lock;
use crate::dlq::{DLQEntry, DLQFilter, DLQRepository, DLQStats, DLQStatus, FailedEvent};
use crate::storage::{BoxFuture, StorageError};

/// Dead letters in a map.
#[derive(Debug, Default)]
pub struct InMemoryDLQRepository {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: i64,
    entries: BTreeMap<i64, DLQEntry>,
}

impl InMemoryDLQRepository {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn transition(
        &self,
        id: i64,
        to: DLQStatus,
        resolved_by: Option<&str>,
    ) -> Result<(), StorageError> {
        let mut state = lock(&self.state);
        let entry = state
            .entries
            .get_mut(&id)
            .ok_or_else(|| StorageError::NotFound {
                what: format!("dead-letter entry {id}"),
            })?;
        if !entry.status.can_become(to) {
            return Err(StorageError::InvalidTransition {
                id,
                from: entry.status.as_str(),
                to: to.as_str(),
            });
        }
        entry.status = to;
        if to == DLQStatus::Resolved {
            entry.resolved_at = Some(Utc::now());
            entry.resolved_by = resolved_by.map(str::to_owned);
        }
        Ok(())
    }
}

impl DLQRepository for InMemoryDLQRepository {
    fn add_failed_event(&self, failure: FailedEvent) -> BoxFuture<'_, Result<i64, StorageError>> {
        let mut state = lock(&self.state);
        let existing = state.entries.values_mut().find(|e| {
            e.event_id == failure.event_id && e.projection_name == failure.projection_name
        });
        let id = match existing {
            Some(entry) => {
                entry.attempts = entry.attempts.saturating_add(failure.attempts);
                entry.error_message = failure.error_message;
                entry.error_chain = failure.error_chain;
                entry.last_failed_at = failure.failed_at;
                entry.status = DLQStatus::Failed;
                entry.resolved_at = None;
                entry.resolved_by = None;
                if failure.position.is_some() {
                    entry.position = failure.position;
                }
                entry.event_data = failure.event_data;
                entry.id
            }
            None => {
                state.next_id += 1;
                let id = state.next_id;
                state.entries.insert(
                    id,
                    DLQEntry {
                        id,
                        event_id: failure.event_id,
                        position: failure.position,
                        projection_name: failure.projection_name,
                        event_type: failure.event_type,
                        event_data: failure.event_data,
                        error_message: failure.error_message,
                        error_chain: failure.error_chain,
                        attempts: failure.attempts,
                        first_failed_at: failure.failed_at,
                        last_failed_at: failure.failed_at,
                        status: DLQStatus::Failed,
                        resolved_at: None,
                        resolved_by: None,
                    },
                );
                id
            }
        };
        Box::pin(std::future::ready(Ok(id)))
    }

    fn get_failed_events(
        &self,
        filter: DLQFilter,
    ) -> BoxFuture<'_, Result<Vec<DLQEntry>, StorageError>> {
        let state = lock(&self.state);
        let mut entries: Vec<DLQEntry> = state
            .entries
            .values()
            .filter(|e| {
                filter
                    .projection_name
                    .as_deref()
                    .is_none_or(|p| e.projection_name == p)
            })
            .filter(|e| filter.status.is_none_or(|s| e.status == s))
            .cloned()
            .collect();
        entries.sort_by(|a, b| {
            a.first_failed_at
                .cmp(&b.first_failed_at)
                .then(a.id.cmp(&b.id))
        });
        if let Some(limit) = filter.limit {
            entries.truncate(limit);
        }
        Box::pin(std::future::ready(Ok(entries)))
    }

    fn get_by_id(&self, id: i64) -> BoxFuture<'_, Result<Option<DLQEntry>, StorageError>> {
        let entry = lock(&self.state).entries.get(&id).cloned();
        Box::pin(std::future::ready(Ok(entry)))
    }

    fn mark_retrying(&self, id: i64) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(std::future::ready(self.transition(
            id,
            DLQStatus::Retrying,
            None,
        )))
    }

    fn mark_resolved<'a>(
        &'a self,
        id: i64,
        resolved_by: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(std::future::ready(self.transition(
            id,
            DLQStatus::Resolved,
            Some(resolved_by),
        )))
    }

    fn get_stats(&self) -> BoxFuture<'_, Result<DLQStats, StorageError>> {
        let state = lock(&self.state);
        let mut stats = DLQStats::default();
        let mut affected = BTreeSet::new();
        for entry in state.entries.values() {
            match entry.status {
                DLQStatus::Failed => stats.failed += 1,
                DLQStatus::Retrying => stats.retrying += 1,
                DLQStatus::Resolved => stats.resolved += 1,
            }
            if entry.status != DLQStatus::Resolved {
                affected.insert(entry.projection_name.as_str());
                stats.oldest_failure = Some(match stats.oldest_failure {
                    Some(oldest) => oldest.min(entry.first_failed_at),
                    None => entry.first_failed_at,
                });
            }
        }
        stats.affected_projections = affected.len() as u64;
        Box::pin(std::future::ready(Ok(stats)))
    }

    fn get_projection_counts(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StorageError>> {
        let state = lock(&self.state);
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for entry in state
            .entries
            .values()
            .filter(|e| e.status != DLQStatus::Resolved)
        {
            *counts.entry(entry.projection_name.clone()).or_default() += 1;
        }
        Box::pin(std::future::ready(Ok(counts.into_iter().collect())))
    }

    fn delete_resolved(&self, older_than_days: u32) -> BoxFuture<'_, Result<u64, StorageError>> {
        // A cutoff before the earliest representable time leaves nothing old enough to delete.
        let cutoff = chrono::TimeDelta::try_days(i64::from(older_than_days))
            .and_then(|age| Utc::now().checked_sub_signed(age));
        let mut state = lock(&self.state);
        let before = state.entries.len();
        state.entries.retain(|_, e| {
            let old_enough =
                cutoff.is_some_and(|cutoff| e.resolved_at.is_some_and(|at| at < cutoff));
            !(e.status == DLQStatus::Resolved && old_enough)
        });
        let deleted = (before - state.entries.len()) as u64;
        Box::pin(std::future::ready(Ok(deleted)))
    }
}
