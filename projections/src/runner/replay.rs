//! Replaying a dead letter, and resetting for a rebuild.

use super::{CommitStrategy, Runner, RunnerError, decode_dead_letter};
use crate::dlq::{DLQStatus, FailedEvent};
use crate::failure::FailureKind;
use crate::projection::DatabaseProjection;

impl<P, S> Runner<P, S>
where
    P: DatabaseProjection,
    S: CommitStrategy<Connection = P::Connection>,
{
    /// Clears the checkpoint (with any pause or stop) and the read model, in one transaction
    /// where the strategy has them.
    ///
    /// With [`Repositories`](super::Repositories) the checkpoint goes first: if the process
    /// dies in between, the projection restarts from the beginning over a stale read model,
    /// which the next reset repairs; the other order would leave an empty read model behind a
    /// checkpoint that claims it is full.
    pub async fn reset(&mut self) -> Result<(), RunnerError> {
        self.refuse_if_ambiguous()?;
        let horizon = self.horizon_after_reset().await?;
        // Every partition (and any earlier partitioning) shares the read model: all reset
        // together.
        let mut names: Vec<String> = self
            .group_checkpoints()
            .await?
            .into_iter()
            .map(|c| c.projection_name)
            .collect();
        if !names.contains(&self.name) {
            names.push(self.name.clone());
        }
        let mut tx = self
            .begin_fenced()
            .await
            .map_err(|e| self.storage_error(e))?;
        for name in &names {
            if let Err(error) = self.storage.reset_checkpoint(&mut tx, name).await {
                self.rollback(tx).await;
                return Err(self.storage_error(error));
            }
        }
        let reset = super::panic::caught(|| self.projection.reset(&mut *tx)).await;
        if let Err(source) = reset {
            self.rollback(tx).await;
            return Err(RunnerError::Reset {
                projection: self.name.clone(),
                source,
            });
        }
        self.storage
            .commit(tx)
            .await
            .map_err(|e| self.storage_error(e))?;
        self.known = Some(None);
        self.last_event = None;
        // The horizon went with the checkpoint: carry it over (see `live`), or let the next
        // start take one.
        self.replay_until = None;
        if let Some(horizon) = horizon {
            self.start_replay(horizon).await?;
        }
        self.loaded = true;
        self.halt = None;
        self.halt_unrecorded = false;
        Ok(())
    }

    /// Runs dead-letter entry `entry_id` through the projection again, under the retry
    /// policy, and marks it resolved by `"replay"` in the same commit as its effect. On
    /// failure the entry goes back to `failed` with the attempts added, and the error is
    /// returned.
    ///
    /// The entry is marked `retrying` (durably) before its handler runs, so an operator sees
    /// the replay under way. An entry left `retrying` by a replay that was interrupted (the
    /// process killed, the task cancelled) is replayed again like a `failed` one, and counts
    /// as not applied meanwhile
    /// ([`unresolved_dead_letters`](Self::unresolved_dead_letters), health, status).
    /// With one transaction per batch an interrupted replay left nothing applied; with
    /// [`Repositories`](super::Repositories), a crash between the handler and the resolution
    /// leaves the entry unresolved although applied: a second replay applies it again (at
    /// least once).
    ///
    /// An entry of an event that did not decode when it failed (its type unknown then) is
    /// decoded now, with the event types this build knows.
    ///
    /// Under [`FailurePolicy::ParkAggregate`](super::FailurePolicy::ParkAggregate) an entry
    /// held behind an earlier entry of its aggregate is refused (replay or resolve that one
    /// first), and a replay that applies releases the entries held behind it, in position
    /// order, as long as they apply.
    pub async fn replay_dead_letter(&mut self, entry_id: i64) -> Result<(), RunnerError> {
        self.refuse_if_ambiguous()?;
        if self.on_failure == super::FailurePolicy::ParkAggregate {
            return self.replay_parked(entry_id).await;
        }
        self.replay_entry(entry_id).await
    }

    /// Replays one entry, whatever the policy.
    pub(super) async fn replay_entry(&mut self, entry_id: i64) -> Result<(), RunnerError> {
        let replay_error = |name: &str, reason: String| RunnerError::Replay {
            projection: name.to_owned(),
            entry_id,
            reason,
        };
        let entry = self
            .storage
            .dead_letters()
            .get_by_id(entry_id)
            .await
            .map_err(|e| self.storage_error(e))?
            .ok_or_else(|| replay_error(&self.name, "no such entry".into()))?;
        if entry.projection_name != self.name {
            let reason = format!("it belongs to projection `{}`", entry.projection_name);
            return Err(replay_error(&self.name, reason));
        }
        if entry.status == DLQStatus::Resolved {
            return Err(replay_error(&self.name, "it is already resolved".into()));
        }
        let event =
            decode_dead_letter(&entry.event_data).map_err(|e| replay_error(&self.name, e))?;
        if entry.status == DLQStatus::Failed {
            self.storage
                .dead_letters()
                .mark_retrying(entry_id)
                .await
                .map_err(|e| self.storage_error(e))?;
        }
        let max_retries = self.retry.max_retries();
        let mut attempts = 0;
        let error = loop {
            attempts += 1;
            let mut tx = self
                .begin_fenced()
                .await
                .map_err(|e| self.storage_error(e))?;
            match self.apply(&mut tx, &event, attempts).await {
                Ok(()) => {
                    self.storage
                        .resolve_dead_letter(&mut tx, entry_id, "replay")
                        .await
                        .map_err(|e| self.storage_error(e))?;
                    return self
                        .storage
                        .commit(tx)
                        .await
                        .map_err(|e| self.storage_error(e));
                }
                Err(error) => {
                    self.rollback(tx).await;
                    if error.kind() == FailureKind::Infrastructure {
                        return Err(RunnerError::Infrastructure {
                            projection: self.name.clone(),
                            event_id: Some(entry.event_id),
                            source: error,
                        });
                    }
                    let retry = error.kind() == FailureKind::Event
                        && attempts <= max_retries
                        && self.retry.should_retry(attempts - 1, &error);
                    if !retry {
                        break error;
                    }
                    tokio::time::sleep(self.retry.backoff(attempts - 1)).await;
                    crate::metrics::retried(&self.name);
                }
            }
        };
        let failure = FailedEvent::new(
            entry.event_id,
            &self.name,
            &entry.event_type,
            entry.event_data.clone(),
            &error,
            attempts,
        )
        .with_position(entry.position);
        self.storage
            .dead_letters()
            .add_failed_event(failure)
            .await
            .map_err(|e| self.storage_error(e))?;
        Err(replay_error(&self.name, error.to_string()))
    }
}
