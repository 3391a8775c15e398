use std::collections::BTreeMap;
use std::sync::Mutex;

use super::lock;
use crate::checkpoint::{CheckpointData, CheckpointRepository, CheckpointUpdate, Halt};
use crate::storage::{BoxFuture, StorageError};

/// Checkpoints in a map.
#[derive(Debug, Default)]
pub struct InMemoryCheckpointRepository {
    checkpoints: Mutex<BTreeMap<String, CheckpointData>>,
    /// Replay horizons, deleted with their checkpoint.
    horizons: Mutex<BTreeMap<String, u64>>,
}

impl InMemoryCheckpointRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }
}

impl CheckpointRepository for InMemoryCheckpointRepository {
    fn get_checkpoint<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        let position = lock(&self.checkpoints).get(projection).map(|c| c.position);
        Box::pin(std::future::ready(Ok(position)))
    }

    fn get_checkpoint_data<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<CheckpointData>, StorageError>> {
        let data = lock(&self.checkpoints).get(projection).cloned();
        Box::pin(std::future::ready(Ok(data)))
    }

    fn update_checkpoint<'a>(
        &'a self,
        projection: &'a str,
        update: CheckpointUpdate,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        let mut checkpoints = lock(&self.checkpoints);
        let entry = checkpoints
            .entry(projection.to_owned())
            .or_insert_with(|| at_zero(projection));
        entry.events_processed += update.events_applied;
        if update.position > entry.position {
            entry.position = update.position;
            entry.last_event_id = update.event_id;
            entry.last_event_type = update.event_type;
            entry.last_processed_at = Some(update.at);
        } else if update.events_applied > 0 {
            entry.last_processed_at = Some(update.at);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn set_halt<'a>(
        &'a self,
        projection: &'a str,
        halt: Option<&'a Halt>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        let halt = halt.map(Halt::storable);
        let mut checkpoints = lock(&self.checkpoints);
        match checkpoints.get_mut(projection) {
            Some(entry) => entry.halt = halt,
            None if halt.is_some() => {
                let entry = CheckpointData {
                    halt,
                    ..at_zero(projection)
                };
                checkpoints.insert(projection.to_owned(), entry);
            }
            None => {}
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn reset_checkpoint<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        lock(&self.checkpoints).remove(projection);
        lock(&self.horizons).remove(projection);
        Box::pin(std::future::ready(Ok(())))
    }

    fn get_replay_horizon<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        let horizon = lock(&self.horizons).get(projection).copied();
        Box::pin(std::future::ready(Ok(horizon)))
    }

    fn set_replay_horizon<'a>(
        &'a self,
        projection: &'a str,
        head: u64,
    ) -> BoxFuture<'a, Result<u64, StorageError>> {
        lock(&self.checkpoints)
            .entry(projection.to_owned())
            .or_insert_with(|| at_zero(projection));
        let stored = *lock(&self.horizons)
            .entry(projection.to_owned())
            .or_insert(head);
        Box::pin(std::future::ready(Ok(stored)))
    }

    fn get_all_checkpoints(&self) -> BoxFuture<'_, Result<Vec<CheckpointData>, StorageError>> {
        let all = lock(&self.checkpoints).values().cloned().collect();
        Box::pin(std::future::ready(Ok(all)))
    }
}

/// A new checkpoint of `projection`, at position 0.
fn at_zero(projection: &str) -> CheckpointData {
    CheckpointData {
        projection_name: projection.to_owned(),
        last_event_id: None,
        last_event_type: None,
        position: 0,
        last_processed_at: None,
        events_processed: 0,
        halt: None,
    }
}
