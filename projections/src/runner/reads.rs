//! Reads every runner offers: the stored checkpoint, lag, failed dead letters. They take owned
//! handles, so their futures borrow nothing from the runner (and need no `Sync` projection):
//! a status read never waits for the runner's batch.

use std::sync::Arc;

use chrono::Utc;

use super::RunnerError;
use crate::checkpoint::{CheckpointData, CheckpointRepository, LagMetrics};
use crate::dlq::{DLQEntry, DLQFilter, DLQRepository, DLQStatus};
use crate::storage::StorageError;
use crate::store::{EventStore, ReadFilter};

fn storage(name: &str) -> impl FnOnce(StorageError) -> RunnerError + '_ {
    move |source| RunnerError::Storage {
        projection: name.to_owned(),
        source,
    }
}

pub(crate) async fn checkpoint_data(
    checkpoints: Arc<dyn CheckpointRepository>,
    name: String,
) -> Result<Option<CheckpointData>, RunnerError> {
    checkpoints
        .get_checkpoint_data(&name)
        .await
        .map_err(storage(&name))
}

pub(crate) async fn lag_metrics(
    checkpoints: Arc<dyn CheckpointRepository>,
    name: String,
    filter: ReadFilter,
    store: &dyn EventStore,
) -> Result<LagMetrics, RunnerError> {
    let checkpoint = checkpoints
        .get_checkpoint_data(&name)
        .await
        .map_err(storage(&name))?;
    let after = checkpoint.as_ref().map_or(0, |c| c.position);
    let backlog = store
        .backlog_filtered(after, &filter)
        .await
        .map_err(storage(&name))?;
    Ok(LagMetrics::compute(
        &name,
        checkpoint.as_ref(),
        &backlog,
        Utc::now(),
    ))
}

/// The entries of projection `name` whose event is not applied: `failed`, and `retrying` (a
/// replay under way, or one that was interrupted and left its entry so), oldest first.
pub(crate) async fn unresolved_dead_letters(
    dead_letters: Arc<dyn DLQRepository>,
    name: String,
) -> Result<Vec<DLQEntry>, RunnerError> {
    let mut entries = dead_letters
        .get_failed_events(DLQFilter::failed_in(&name))
        .await
        .map_err(storage(&name))?;
    let retrying = DLQFilter::all()
        .projection(&name)
        .status(DLQStatus::Retrying);
    entries.extend(
        dead_letters
            .get_failed_events(retrying)
            .await
            .map_err(storage(&name))?,
    );
    entries.sort_by(|a, b| {
        a.first_failed_at
            .cmp(&b.first_failed_at)
            .then(a.id.cmp(&b.id))
    });
    Ok(entries)
}

/// What it takes to read a runner's state from its storage, without the runner: owned, so
/// the reads can run in any task while the runner works.
#[derive(Clone)]
pub struct RunnerReads {
    pub(crate) name: String,
    /// What the projection reads; lag counts what it selects.
    pub(crate) filter: ReadFilter,
    pub(crate) checkpoints: Arc<dyn CheckpointRepository>,
    pub(crate) dead_letters: Arc<dyn DLQRepository>,
}

impl std::fmt::Debug for RunnerReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerReads")
            .field("name", &self.name)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl RunnerReads {
    /// The projection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stored checkpoint (with the halt, if any).
    pub async fn checkpoint_data(&self) -> Result<Option<CheckpointData>, RunnerError> {
        checkpoint_data(Arc::clone(&self.checkpoints), self.name.clone()).await
    }

    /// Lag behind `store`.
    pub async fn lag_metrics(&self, store: &dyn EventStore) -> Result<LagMetrics, RunnerError> {
        lag_metrics(
            Arc::clone(&self.checkpoints),
            self.name.clone(),
            self.filter.clone(),
            store,
        )
        .await
    }

    /// Dead-letter entries whose event is not applied (`failed`, or `retrying`: a replay
    /// under way or interrupted), oldest first.
    pub async fn unresolved_dead_letters(&self) -> Result<Vec<DLQEntry>, RunnerError> {
        unresolved_dead_letters(Arc::clone(&self.dead_letters), self.name.clone()).await
    }

    /// Former name of [`unresolved_dead_letters`](Self::unresolved_dead_letters).
    #[deprecated(note = "renamed `unresolved_dead_letters`, like the other `dead_letter` methods")]
    pub async fn failed_events(&self) -> Result<Vec<DLQEntry>, RunnerError> {
        self.unresolved_dead_letters().await
    }

    /// The number of dead-letter entries whose event is not applied (as
    /// [`unresolved_dead_letters`](Self::unresolved_dead_letters)).
    pub async fn dead_letter_count(&self) -> Result<u64, RunnerError> {
        Ok(self.unresolved_dead_letters().await?.len() as u64)
    }

    /// The checkpoint repository.
    pub fn checkpoints(&self) -> &Arc<dyn CheckpointRepository> {
        &self.checkpoints
    }

    /// The dead-letter repository.
    pub fn dead_letters(&self) -> &Arc<dyn DLQRepository> {
        &self.dead_letters
    }
}
