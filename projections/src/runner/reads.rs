//! Reads every runner offers: the stored checkpoint, lag, failed dead letters. They take owned
//! handles, so their futures borrow nothing from the runner (and need no `Sync` projection).

use std::sync::Arc;

use chrono::Utc;

use super::RunnerError;
use crate::checkpoint::{CheckpointData, CheckpointRepository, LagMetrics};
use crate::dlq::{DLQEntry, DLQFilter, DLQRepository};
use crate::storage::StorageError;
use crate::store::EventStore;

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
    subscribed: Vec<&'static str>,
    store: &dyn EventStore,
) -> Result<LagMetrics, RunnerError> {
    let checkpoint = checkpoints
        .get_checkpoint_data(&name)
        .await
        .map_err(storage(&name))?;
    let after = checkpoint.as_ref().map_or(0, |c| c.position);
    let backlog = store
        .backlog(after, &subscribed)
        .await
        .map_err(storage(&name))?;
    Ok(LagMetrics::compute(
        &name,
        checkpoint.as_ref(),
        &backlog,
        Utc::now(),
    ))
}

pub(crate) async fn failed_events(
    dead_letters: Arc<dyn DLQRepository>,
    name: String,
) -> Result<Vec<DLQEntry>, RunnerError> {
    dead_letters
        .get_failed_events(DLQFilter::failed_in(&name))
        .await
        .map_err(storage(&name))
}
