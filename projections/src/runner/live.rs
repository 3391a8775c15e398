//! Live-only handlers (`#[handles(E, live_only)]`): they run for events that arrive live and
//! never for replayed ones, so a rebuild does not send the e-mails and webhooks again.
//!
//! **Replayed** means: at or below the projection's *replay horizon*, a position stored with
//! its checkpoint:
//! - on a first start (no checkpoint, or one at position 0, and no horizon), the head of the
//!   store then (its last readable position): the history that was there before the
//!   projection existed;
//! - on a rebuild (a reset), the furthest the projection had got: its checkpoint or its
//!   horizon before the reset, whichever is further. Events it had already passed are
//!   replayed; events it had not reached yet have never run their live-only handler, and run
//!   it once during the rebuild.
//!
//! Every other event is **live**, whether the projection reads it while catching up or while
//! tailing; events handed in without a position (push mode) are live too.
//!
//! The horizon is stored before the first event is applied, so a process that dies in the
//! middle of a replay comes back to the same horizon and fires nothing for the rest of it. A
//! reset deletes it with the checkpoint and stores the new one right after; a crash between
//! the two leaves no horizon, and the next start takes the store's head (nothing fires twice;
//! events the projection had not reached before the reset then do not fire at all). A
//! projection that already has a checkpoint when it gains a live-only handler has no horizon:
//! everything after its checkpoint is live.

use super::{CommitStrategy, Runner, RunnerError};
use crate::event::AnyEvent;
use crate::projection::DatabaseProjection;
use crate::store::EventStore;

impl<P, S> Runner<P, S>
where
    P: DatabaseProjection,
    S: CommitStrategy<Connection = P::Connection>,
{
    /// The replay horizon: events at or below it are replayed, and live-only handlers do not
    /// run for them. `None` when the projection has none (see the module documentation of
    /// [`runner`](super), "Live-only handlers").
    pub fn replay_horizon(&self) -> Option<u64> {
        self.replay_until
    }

    /// Takes the replay horizon from `store` when the projection needs one: it has a
    /// live-only handler, no horizon yet, and starts from nothing (no checkpoint, or one at
    /// position 0). Then the store's head now is the horizon, stored with the checkpoint
    /// before any event is applied. Otherwise nothing happens (no round trip for a projection
    /// without live-only handlers).
    ///
    /// The coordinator calls it before each batch it reads. A runner driven by hand
    /// ([`handle_batch`](Self::handle_batch)) calls it before its batches; without a
    /// horizon every event counts as live.
    pub async fn prepare_replay(&mut self, store: &dyn EventStore) -> Result<(), RunnerError> {
        if !self.needs_replay_horizon().await? {
            return Ok(());
        }
        let head = store
            .head_position()
            .await
            .map_err(|e| self.storage_error(e))?;
        self.start_replay(head).await
    }

    /// Whether the runner needs a replay horizon before its next batch.
    async fn needs_replay_horizon(&mut self) -> Result<bool, RunnerError> {
        if self.handlers.live_only.is_empty() {
            return Ok(false);
        }
        self.load().await?;
        Ok(self.replay_until.is_none() && self.checkpoint().await?.unwrap_or(0) == 0)
    }

    /// Records `head` as the replay horizon, unless one is stored already (another process of
    /// the projection took it first): the stored one wins.
    pub(super) async fn start_replay(&mut self, head: u64) -> Result<(), RunnerError> {
        let stored = self
            .storage
            .checkpoints()
            .set_replay_horizon(&self.name, head)
            .await
            .map_err(|e| self.storage_error(e))?;
        self.replay_until = Some(stored);
        Ok(())
    }

    /// The horizon to keep across a reset: the furthest the projection had got, if anywhere.
    pub(super) async fn horizon_after_reset(&mut self) -> Result<Option<u64>, RunnerError> {
        if self.handlers.live_only.is_empty() {
            return Ok(None);
        }
        self.load().await?;
        let checkpoint = self.checkpoint().await?.unwrap_or(0);
        let furthest = checkpoint.max(self.replay_until.unwrap_or(0));
        Ok((furthest > 0).then_some(furthest))
    }

    /// Whether `event` goes to a live-only handler while it is replayed: then the handler
    /// does not run.
    #[inline]
    pub(super) fn is_replayed_live_only(&self, event: &AnyEvent) -> bool {
        match (event.position(), self.replay_until) {
            (Some(position), Some(horizon)) => {
                position <= horizon && self.handlers.is_live_only(event.event_type())
            }
            _ => false,
        }
    }
}
