//! Parking an aggregate behind a dead letter ([`FailurePolicy::ParkAggregate`]): which
//! aggregates are parked, holding their later events back, and releasing them in order when
//! the first entry is replayed or resolved.

use uuid::Uuid;

use super::{CommitStrategy, FailurePolicy, Runner, RunnerError, reads};
use crate::dlq::{DLQEntry, DLQStatus};
use crate::projection::{DatabaseProjection, HandlerError};

/// An event held back because an earlier event of its aggregate is in the dead-letter queue.
#[derive(Debug, thiserror::Error)]
#[error(
    "held back: an earlier event of aggregate {aggregate} is in the dead-letter queue; replaying or resolving that entry releases this one"
)]
pub(crate) struct HeldBack {
    pub(crate) aggregate: Uuid,
}

impl HeldBack {
    pub(crate) fn error(aggregate: Uuid) -> HandlerError {
        HandlerError::event(Self { aggregate })
    }
}

/// The aggregate of a dead-letter entry's event, in either stored shape (a decoded event's
/// `metadata`, or the columns of a stored row).
pub(crate) fn entry_aggregate(data: &serde_json::Value) -> Option<Uuid> {
    let id = data
        .get("metadata")
        .and_then(|m| m.get("aggregate_id"))
        .or_else(|| data.get("aggregate_id"))?;
    id.as_str().and_then(|text| Uuid::parse_str(text).ok())
}

impl<P, S> Runner<P, S>
where
    P: DatabaseProjection,
    S: CommitStrategy<Connection = P::Connection>,
{
    /// Reads the parked aggregates from the dead-letter queue: those with an entry whose
    /// event is not applied.
    pub(super) async fn load_parked(&mut self) -> Result<(), RunnerError> {
        self.parked.clear();
        if self.on_failure != FailurePolicy::ParkAggregate {
            return Ok(());
        }
        let entries =
            reads::unresolved_dead_letters(self.storage.dead_letters(), self.name.clone()).await?;
        self.parked.extend(
            entries
                .iter()
                .filter_map(|e| entry_aggregate(&e.event_data)),
        );
        Ok(())
    }

    /// Parks the aggregate of a dead-lettered event, under the park policy.
    pub(super) fn park(&mut self, event_data: &serde_json::Value) {
        if self.on_failure == FailurePolicy::ParkAggregate
            && let Some(aggregate) = entry_aggregate(event_data)
        {
            self.parked.insert(aggregate);
        }
    }

    /// The entries of `aggregate` whose event is not applied, in position order.
    async fn parked_entries(&mut self, aggregate: Uuid) -> Result<Vec<DLQEntry>, RunnerError> {
        let mut entries =
            reads::unresolved_dead_letters(self.storage.dead_letters(), self.name.clone())
                .await?
                .into_iter()
                .filter(|e| entry_aggregate(&e.event_data) == Some(aggregate))
                .collect::<Vec<_>>();
        entries.sort_by_key(|e| (e.position.unwrap_or(u64::MAX), e.id));
        Ok(entries)
    }

    async fn entry(&mut self, entry_id: i64) -> Result<DLQEntry, RunnerError> {
        self.storage
            .dead_letters()
            .get_by_id(entry_id)
            .await
            .map_err(|e| self.storage_error(e))?
            .filter(|e| e.projection_name == self.name)
            .ok_or_else(|| RunnerError::Replay {
                projection: self.name.clone(),
                entry_id,
                reason: "no such entry".into(),
            })
    }

    /// The first entry of `entry`'s aggregate not applied, when it is not `entry` itself.
    async fn earlier(&mut self, entry: &DLQEntry) -> Result<Option<DLQEntry>, RunnerError> {
        let Some(aggregate) = entry_aggregate(&entry.event_data) else {
            return Ok(None);
        };
        let first = self.parked_entries(aggregate).await?.into_iter().next();
        Ok(first.filter(|first| first.id != entry.id))
    }

    /// [`replay_dead_letter`](Self::replay_dead_letter) under the park policy: in order
    /// within the aggregate, then releasing the entries held behind it.
    pub(super) async fn replay_parked(&mut self, entry_id: i64) -> Result<(), RunnerError> {
        let entry = self.entry(entry_id).await?;
        if entry.status != DLQStatus::Resolved
            && let Some(first) = self.earlier(&entry).await?
        {
            return Err(RunnerError::Replay {
                projection: self.name.clone(),
                entry_id,
                reason: format!(
                    "it is held behind entry {} (position {}) of the same aggregate; replay or \
                     resolve that one first",
                    first.id,
                    first
                        .position
                        .map_or_else(|| "-".to_owned(), |p| p.to_string())
                ),
            });
        }
        self.replay_entry(entry_id).await?;
        if let Some(aggregate) = entry_aggregate(&entry.event_data) {
            self.release(aggregate).await;
        }
        Ok(())
    }

    /// Replays the held entries of `aggregate` in position order, as long as they apply;
    /// unparks it when none is left. One that fails stays first in line, its aggregate
    /// parked.
    async fn release(&mut self, aggregate: Uuid) {
        loop {
            let next = match self.parked_entries(aggregate).await {
                Ok(entries) => entries.into_iter().next(),
                Err(error) => {
                    tracing::warn!(projection = %self.name, %aggregate, %error, "cannot read the held entries; they stay held");
                    return;
                }
            };
            let Some(next) = next else {
                self.parked.remove(&aggregate);
                tracing::info!(projection = %self.name, %aggregate, "aggregate released");
                return;
            };
            if let Err(error) = self.replay_entry(next.id).await {
                tracing::warn!(
                    projection = %self.name, %aggregate, entry_id = next.id, %error,
                    "a held event failed on release; its aggregate stays parked",
                );
                return;
            }
        }
    }

    /// Marks dead-letter entry `entry_id` done with, by `resolved_by`, without applying it.
    /// Under [`FailurePolicy::ParkAggregate`], resolving the first entry of a parked aggregate
    /// releases the events held behind it, in position order (replayed as by
    /// [`replay_dead_letter`](Self::replay_dead_letter)).
    pub async fn resolve_dead_letter(
        &mut self,
        entry_id: i64,
        resolved_by: &str,
    ) -> Result<(), RunnerError> {
        let entry = self.entry(entry_id).await?;
        let was_first = self.on_failure == FailurePolicy::ParkAggregate
            && entry.status != DLQStatus::Resolved
            && self.earlier(&entry).await?.is_none();
        self.storage
            .dead_letters()
            .mark_resolved(entry_id, resolved_by)
            .await
            .map_err(|e| self.storage_error(e))?;
        if was_first && let Some(aggregate) = entry_aggregate(&entry.event_data) {
            self.release(aggregate).await;
        }
        Ok(())
    }
}
