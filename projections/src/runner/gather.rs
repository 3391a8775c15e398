//! Gathering the events of a type across a batch, for projections that depend only on the
//! order of each aggregate's events ([`EventOrder::PerAggregate`]).
//!
//! A batch of orders placed and shipped reads `placed A, shipped A, placed B, shipped B, ..`:
//! its runs of consecutive events of one type are one event long, and a set-based handler
//! gains nothing. When the projection says that only each aggregate's own order matters, the
//! runner may instead hand each handler all the events of its type in the batch, types in the
//! order they first appear, provided every aggregate's events keep their order (here every
//! `placed` comes before its `shipped`). When they would not (an aggregate's events of two
//! types interleave, `placed A, shipped A, placed A`), the batch runs in log order.
//!
//! Only with an atomic commit strategy (one transaction per batch): the gathered batch commits
//! whole or not at all, so the checkpoint never claims an event whose effect is missing. When
//! a gathered call fails, the transaction rolls back and the batch runs again in log order,
//! where the failing event is found exactly as usual.

use std::collections::HashMap;

use uuid::Uuid;

use super::progress::Progress;
use super::step::{Scope, Step, classify};
use super::{BatchItem, BatchOutcome, CommitStrategy, Runner, RunnerError};
use crate::event::AnyEvent;
use crate::projection::DatabaseProjection;

/// The order of events a projection depends on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EventOrder {
    /// The order of the log: every handler sees every event in position order (default).
    #[default]
    Global,
    /// The order of each aggregate's events only: the runner may gather the events of one
    /// type across a batch for a set-based handler, as long as every aggregate's events keep
    /// their order. For projections whose effects on one aggregate depend only on that
    /// aggregate's events, and whose totals across aggregates commute (counts, sums). Used by
    /// transactional runners only; see the [`Runner`] documentation.
    PerAggregate,
}

/// A batch segment in gathered order.
struct Plan<'a> {
    /// Per event type, in the order the types first appear: its events, in log order.
    groups: Vec<(&'static str, Vec<&'a AnyEvent>)>,
}

/// The gathered plan of `events[from..until]`, or `None` when it cannot be gathered: an item
/// the runner would not simply apply, skip or pass over (undecodable, unhandled of a followed
/// aggregate, replayed for a live-only handler, without a position, out of order), or an
/// aggregate whose events would change order.
fn plan<'a, T: BatchItem>(
    events: &'a [T],
    (from, until): (usize, usize),
    progress: &Progress,
    scope: Scope<'_>,
    live_only: impl Fn(&AnyEvent) -> bool,
) -> Option<Plan<'a>> {
    let mut groups: Vec<(&'static str, Vec<&'a AnyEvent>)> = Vec::new();
    // Per aggregate: the group of its last event so far.
    let mut last_group: HashMap<Uuid, usize> = HashMap::new();
    let mut previous: Option<u64> = None;
    for item in &events[from..until] {
        let event = item.decoded().ok()?;
        let position = event.position()?;
        if previous.is_some_and(|p| position <= p) {
            return None;
        }
        previous = Some(position);
        match classify(item, progress, scope) {
            Step::Skip | Step::PassOver { .. } | Step::OtherTenant { .. } => continue,
            Step::Apply(event) if !live_only(event) => {
                let group = match groups
                    .iter()
                    .position(|(t, _)| std::ptr::eq(*t, event.event_type()))
                {
                    Some(group) => group,
                    None => {
                        groups.push((event.event_type(), Vec::new()));
                        groups.len() - 1
                    }
                };
                let aggregate = event.metadata().aggregate_id;
                if last_group
                    .insert(aggregate, group)
                    .is_some_and(|before| before > group)
                {
                    return None;
                }
                groups[group].1.push(event);
            }
            _ => return None,
        }
    }
    Some(Plan { groups })
}

impl<P, S> Runner<P, S>
where
    P: DatabaseProjection,
    S: CommitStrategy<Connection = P::Connection>,
{
    /// Sets the order of events the projection depends on ([`EventOrder::Global`] by
    /// default). With [`EventOrder::PerAggregate`] and a transactional runner, a set-based
    /// handler may take all the events of its type in a batch in one call; see
    /// [`EventOrder`].
    #[must_use]
    pub fn event_order(mut self, order: EventOrder) -> Self {
        self.event_order = order;
        self
    }

    /// Whether a batch may be tried in gathered order.
    pub(super) fn gathers(&self) -> bool {
        S::ATOMIC
            && self.event_order == EventOrder::PerAggregate
            && !self.handlers.set_based.is_empty()
            && self.followed.is_empty()
    }

    /// Applies `events[from..until]` in gathered order in one transaction and commits it.
    /// `false` when the segment cannot be gathered or a call failed (then nothing of it is
    /// committed, and the caller runs it in log order).
    pub(super) async fn gathered<T: BatchItem>(
        &mut self,
        events: &[T],
        (from, until): (usize, usize),
        outcome: &mut BatchOutcome,
    ) -> Result<bool, RunnerError> {
        // Planned first from the checkpoint as last known, so that a batch that cannot be
        // gathered costs no round trip; then again from the locked checkpoint.
        let known = Progress::from(self.known.flatten(), self.last_event);
        let live_only = |e: &AnyEvent| self.is_replayed_live_only(e);
        if plan(events, (from, until), &known, self.scope(), live_only).is_none() {
            return Ok(false);
        }
        let (mut tx, checkpoint) = self.begin_locked().await?;
        let mut progress = Progress::from(checkpoint, self.last_event);
        let live_only = |e: &AnyEvent| self.is_replayed_live_only(e);
        let Some(plan) = plan(events, (from, until), &progress, self.scope(), live_only) else {
            self.rollback(tx).await;
            return Ok(false);
        };
        for (event_type, group) in &plan.groups {
            let result = if self.handlers.is_set_based(event_type) {
                let (projection, conn) = (&mut self.projection, &mut *tx);
                super::panic::caught(|| projection.handle_set(conn, group)).await
            } else {
                let mut result = Ok(());
                for event in group {
                    result = self.apply(&mut tx, event, 1).await;
                    if result.is_err() {
                        break;
                    }
                }
                result
            };
            if let Err(error) = result {
                tracing::debug!(
                    projection = %self.name, event_type, %error,
                    "a gathered call failed; the batch runs again in log order",
                );
                self.rollback(tx).await;
                return Ok(false);
            }
        }
        let (mut applied, mut skipped, mut not_subscribed, mut other_tenant) = (0, 0, 0, 0);
        for item in &events[from..until] {
            match classify(item, &progress, self.scope()) {
                Step::Skip => skipped += 1,
                Step::PassOver {
                    position,
                    event_id,
                    event_type,
                } => {
                    progress.advance(position, event_id, event_type, false);
                    not_subscribed += 1;
                }
                Step::OtherTenant {
                    position,
                    event_id,
                    event_type,
                } => {
                    progress.advance(position, event_id, event_type, false);
                    other_tenant += 1;
                }
                Step::Apply(event) => {
                    progress.advance(event.position(), event.event_id(), event.event_type(), true);
                    applied += 1;
                }
                // `plan` accepted only the three above.
                Step::NotHandled(_) | Step::Undecodable(_) => {}
            }
        }
        if until == events.len()
            && let Some(read_to) = self.read_to.take()
        {
            // The batch's last commit: it takes the checkpoint to where the read got.
            progress.reach(read_to);
        }
        self.commit(tx, &progress).await?;
        outcome.applied += applied;
        outcome.skipped += skipped;
        outcome.not_subscribed += not_subscribed;
        outcome.other_tenant += other_tenant;
        Ok(true)
    }
}
