//! Gathering the events of a type across a batch, for projections that depend only on the
//! order of each aggregate's events ([`EventOrder::PerAggregate`]).
//!
//! A batch of orders placed and shipped reads `placed A, shipped A, placed B, shipped B, ..`:
//! its runs of consecutive events of one type are one event long, and a set-based handler
//! gains nothing. When the projection says that only each aggregate's own order matters, the
//! runner may instead hand each handler all the events of its type in the batch, provided
//! every aggregate's events keep their order (here every `placed` comes before its `shipped`).
//! The types go in an order that keeps every aggregate's events in order, the order they first
//! appear where nothing decides: a batch that starts with `shipped Z` (its `placed Z` in the
//! previous batch, as concurrent appends interleave) still runs every `placed` first. When no
//! order of the types would do (an aggregate's events of two types interleave, `placed A,
//! shipped A, placed A`), the batch runs in log order.
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
    /// Per event type, in the order they run: its events, in log order.
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
    // Per group: the groups that must run after it (an aggregate has an event of this group
    // followed by one of that group).
    let mut before: Vec<Vec<usize>> = Vec::new();
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
                        before.push(Vec::new());
                        groups.len() - 1
                    }
                };
                let aggregate = event.metadata().aggregate_id;
                if let Some(earlier) = last_group.insert(aggregate, group)
                    && earlier != group
                    && !before[earlier].contains(&group)
                {
                    before[earlier].push(group);
                }
                groups[group].1.push(event);
            }
            _ => return None,
        }
    }
    let order = run_order(&before)?;
    let mut slots: Vec<Option<_>> = groups.into_iter().map(Some).collect();
    let groups = order.into_iter().filter_map(|g| slots[g].take()).collect();
    Some(Plan { groups })
}

/// An order of the groups `0..before.len()` in which each group runs before every group listed
/// in `before[group]`, taking the lowest group whose predecessors have all run at each step (so
/// the order of first appearance where no aggregate decides); `None` when the constraints make
/// a cycle.
fn run_order(before: &[Vec<usize>]) -> Option<Vec<usize>> {
    let mut waiting_on = vec![0usize; before.len()];
    for next in before.iter().flatten() {
        waiting_on[*next] += 1;
    }
    let mut order = Vec::with_capacity(before.len());
    let mut done = vec![false; before.len()];
    while order.len() < before.len() {
        let ready = (0..before.len()).find(|&g| !done[g] && waiting_on[g] == 0)?;
        done[ready] = true;
        order.push(ready);
        for next in &before[ready] {
            waiting_on[*next] -= 1;
        }
    }
    Some(order)
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

#[cfg(test)]
mod tests {
    use super::run_order;

    #[test]
    fn groups_keep_first_appearance_where_nothing_decides() {
        assert_eq!(run_order(&[vec![], vec![], vec![]]), Some(vec![0, 1, 2]));
    }

    #[test]
    fn a_group_that_an_aggregate_needs_first_runs_first() {
        // Group 1 (first seen second) must run before group 0.
        assert_eq!(run_order(&[vec![], vec![0]]), Some(vec![1, 0]));
        assert_eq!(run_order(&[vec![2], vec![0], vec![]]), Some(vec![1, 0, 2]));
    }

    #[test]
    fn constraints_that_make_a_cycle_have_no_order() {
        assert_eq!(run_order(&[vec![1], vec![0]]), None);
        assert_eq!(run_order(&[vec![1], vec![2], vec![0]]), None);
    }
}
