//! The node's own task: announce, renew, rebalance, and tell each worker whether it may
//! write. Workers never talk to the lease tables; they read a watch and hold a batch guard.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fence::Fence;
use super::node::ClusterNode;
use super::sql::{self, LeaseRow, NodeInfo, Tables};
use super::{Ownership, assign};
use crate::storage::StorageError;

/// This node and the others, as this node last saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ClusterView {
    /// This node's id.
    pub node: String,
    /// The live nodes, this one included once it has announced itself, in id order.
    pub nodes: Vec<NodeInfo>,
    /// How many leases this node should hold: its fair share.
    pub target: usize,
    /// How many it holds.
    pub held: usize,
    /// The last heartbeat's error, until one succeeds.
    pub last_error: Option<String>,
}

/// What a worker is told about its lease.
#[derive(Debug, Clone)]
pub(crate) struct LeaseState {
    /// Who owns it, for the status.
    pub(crate) view: Ownership,
    /// Set while this node holds the lease and may write under it.
    pub(crate) fence: Option<Fence>,
    /// Until when, by this machine's clock, the lease is surely still this node's (renewed
    /// silently, without waking the worker).
    pub(crate) valid_until: Option<Instant>,
}

impl LeaseState {
    /// The fence, while the lease is surely this node's.
    pub(crate) fn usable_fence(&self) -> Option<&Fence> {
        match (&self.fence, self.valid_until) {
            (Some(fence), Some(until)) if Instant::now() < until => Some(fence),
            _ => None,
        }
    }
}

/// A worker's end of its lease.
pub(crate) struct WorkerLease {
    pub(crate) state: watch::Receiver<LeaseState>,
    batch: Arc<Mutex<()>>,
    lost: mpsc::UnboundedSender<Arc<str>>,
    name: Arc<str>,
    /// The node's heartbeat: how soon a worker whose lease lapsed locally looks again.
    pub(crate) heartbeat: Duration,
}

impl WorkerLease {
    /// Held while a batch runs: the node gives the lease back only between batches.
    pub(crate) async fn batch_guard(&self) -> OwnedMutexGuard<()> {
        Arc::clone(&self.batch).lock_owned().await
    }

    /// The worker found itself fenced: the node looks again at once.
    pub(crate) fn report_lost(&self) {
        let _ = self.lost.send(Arc::clone(&self.name));
    }
}

/// The handle's end: the cluster view and the task to wait for at shutdown.
pub(crate) struct ClusterLink {
    pub(crate) view: watch::Receiver<ClusterView>,
    pub(crate) task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A lease this node holds.
#[derive(Debug, Clone)]
struct Held {
    token: i64,
    acquired_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    /// The order of acquisition on this node (the latest are given back first).
    order: i64,
    valid_until: Instant,
    /// Being given back: the worker writes no more; released once its batch is done.
    releasing: bool,
}

struct Slot {
    name: Arc<str>,
    state: watch::Sender<LeaseState>,
    batch: Arc<Mutex<()>>,
    held: Option<Held>,
}

/// The node's task: one round per heartbeat.
pub(crate) struct Membership {
    node: ClusterNode,
    incarnation: uuid::Uuid,
    tables: Tables,
    fences: Arc<str>,
    slots: Vec<Slot>,
    lost: mpsc::UnboundedReceiver<Arc<str>>,
    view: watch::Sender<ClusterView>,
    ensured: bool,
    acquisitions: i64,
}

impl Membership {
    /// The task for `node` over the leases `names` (one per worker, in order), the workers'
    /// ends, and the handle's.
    pub(crate) fn new(
        node: ClusterNode,
        names: &[String],
    ) -> (Self, Vec<WorkerLease>, watch::Receiver<ClusterView>) {
        let tables = Tables::new(&node.schema);
        let fences: Arc<str> = Arc::from(tables.fences.as_str());
        let (lost_tx, lost) = mpsc::unbounded_channel();
        let mut slots = Vec::with_capacity(names.len());
        let mut leases = Vec::with_capacity(names.len());
        for name in names {
            let name: Arc<str> = Arc::from(name.as_str());
            let (state, receiver) = watch::channel(LeaseState {
                view: Ownership {
                    node: None,
                    mine: false,
                    since: None,
                    expires_at: None,
                    token: 0,
                },
                fence: None,
                valid_until: None,
            });
            let batch = Arc::new(Mutex::new(()));
            leases.push(WorkerLease {
                state: receiver,
                batch: Arc::clone(&batch),
                lost: lost_tx.clone(),
                name: Arc::clone(&name),
                heartbeat: node.effective_heartbeat(),
            });
            slots.push(Slot {
                name,
                state,
                batch,
                held: None,
            });
        }
        let (view, view_rx) = watch::channel(ClusterView {
            node: node.id.to_string(),
            ..ClusterView::default()
        });
        let membership = Self {
            node,
            incarnation: uuid::Uuid::new_v4(),
            tables,
            fences,
            slots,
            lost,
            view,
            ensured: false,
            acquisitions: 0,
        };
        (membership, leases, view_rx)
    }

    /// Rounds until `shutdown`, then gives every lease back and leaves.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let heartbeat = self.node.effective_heartbeat();
        let mut ticker = tokio::time::interval(heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(node = %self.node.id, leases = self.slots.len(), "cluster node starting");
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
                Some(name) = self.lost.recv() => self.forget(&name),
            }
            match self.round().await {
                Ok(()) => self
                    .view
                    .send_if_modified(|view| view.last_error.take().is_some()),
                Err(error) => {
                    let message = crate::coordinator::worker::error_chain(&error);
                    tracing::warn!(node = %self.node.id, error = %message, "cluster heartbeat failed; leases lapse unless renewed");
                    self.view
                        .send_modify(|view| view.last_error = Some(message));
                    false
                }
            };
        }
        self.leave().await;
    }

    /// A worker found its lease taken: drop it here too.
    fn forget(&mut self, name: &str) {
        if let Some(slot) = self.slots.iter_mut().find(|s| &*s.name == name)
            && slot.held.take().is_some()
        {
            tracing::warn!(node = %self.node.id, lease = name, "lost ownership (fenced); standing by");
            publish(slot, None, &self.node, &self.fences);
        }
    }

    async fn round(&mut self) -> Result<(), StorageError> {
        let started = Instant::now();
        let pool = &self.node.pool.clone();
        let node_id = Arc::clone(&self.node.id);
        let me: &str = &node_id;
        let nodes = sql::announce(
            pool,
            &self.tables,
            me,
            self.incarnation,
            self.node.lease,
            self.node.host.as_deref(),
        )
        .await?;
        let names: Vec<String> = self.slots.iter().map(|s| s.name.to_string()).collect();
        if !self.ensured {
            sql::ensure_leases(pool, &self.tables, &names).await?;
            self.ensured = true;
        }

        // Renew what this node holds; what is not renewed was taken.
        let held: Vec<(String, i64)> = self
            .slots
            .iter()
            .filter_map(|s| s.held.as_ref().map(|h| (s.name.to_string(), h.token)))
            .collect();
        let renewed: HashMap<String, DateTime<Utc>> =
            sql::renew(pool, &self.tables, me, &held, self.node.lease)
                .await?
                .into_iter()
                .collect();
        let valid_until = started + self.node.lease;
        for slot in &mut self.slots {
            let Some(lease) = slot.held.as_mut() else {
                continue;
            };
            match renewed.get(&*slot.name) {
                Some(expires_at) => {
                    lease.expires_at = Some(*expires_at);
                    lease.valid_until = valid_until;
                }
                None => {
                    tracing::warn!(node = me, lease = %slot.name, "lease taken by another node; standing by");
                    slot.held = None;
                }
            }
        }

        // Rebalance toward this node's share.
        let rows = sql::leases(pool, &self.tables, &names).await?;
        let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        let target = assign::target(self.slots.len(), &ids, me);
        self.give_back_above(target);
        self.finish_releases().await?;
        self.take_up_to(target, &rows, started).await?;

        // Tell the workers and the handle.
        let rows = sql::leases(pool, &self.tables, &names).await?;
        let by_name: HashMap<&str, &LeaseRow> = rows.iter().map(|r| (r.name.as_str(), r)).collect();
        for slot in &self.slots {
            publish(
                slot,
                by_name.get(&*slot.name).copied(),
                &self.node,
                &self.fences,
            );
        }
        let held = self
            .slots
            .iter()
            .filter(|s| s.held.as_ref().is_some_and(|h| !h.releasing))
            .count();
        self.view.send_if_modified(|view| {
            let changed = view.nodes != nodes || view.target != target || view.held != held;
            view.nodes = nodes;
            view.target = target;
            view.held = held;
            changed
        });
        Ok(())
    }

    /// Above the share: mark the latest acquisitions for giving back (the workers stop
    /// writing under them now). Below it: cancel pending give-backs first.
    fn give_back_above(&mut self, target: usize) {
        let active: Vec<(String, i64)> = self
            .slots
            .iter()
            .filter_map(|s| {
                s.held
                    .as_ref()
                    .filter(|h| !h.releasing)
                    .map(|h| (s.name.to_string(), h.order))
            })
            .collect();
        if active.len() > target {
            let excess = active.len() - target;
            let chosen: Vec<String> = assign::to_release(&active, excess)
                .into_iter()
                .map(str::to_owned)
                .collect();
            for slot in &mut self.slots {
                if chosen.iter().any(|c| c == &*slot.name)
                    && let Some(held) = slot.held.as_mut()
                {
                    tracing::info!(node = %self.node.id, lease = %slot.name, target, "giving a lease back after its batch in hand");
                    held.releasing = true;
                    let _ = slot.state.send_if_modified(|state| {
                        let had = state.fence.is_some();
                        state.fence = None;
                        had
                    });
                }
            }
        } else {
            let mut missing = target - active.len();
            for slot in &mut self.slots {
                if missing == 0 {
                    break;
                }
                if let Some(held) = slot.held.as_mut()
                    && held.releasing
                {
                    held.releasing = false;
                    missing -= 1;
                }
            }
        }
    }

    /// Releases the leases being given back whose worker is between batches.
    async fn finish_releases(&mut self) -> Result<(), StorageError> {
        for slot in &mut self.slots {
            let Some(held) = slot.held.as_ref().filter(|h| h.releasing) else {
                continue;
            };
            // Between batches only; else next round.
            let Ok(_guard) = Arc::clone(&slot.batch).try_lock_owned() else {
                continue;
            };
            sql::release(
                &self.node.pool,
                &self.tables,
                &self.node.id,
                &slot.name,
                held.token,
            )
            .await?;
            tracing::info!(node = %self.node.id, lease = %slot.name, token = held.token, "lease given back");
            slot.held = None;
        }
        Ok(())
    }

    /// Takes free or expired leases until this node holds `target`, starting at a place
    /// that differs between nodes so that they do not all reach for the same lease.
    async fn take_up_to(
        &mut self,
        target: usize,
        rows: &[LeaseRow],
        started: Instant,
    ) -> Result<(), StorageError> {
        let mut holding = self.slots.iter().filter(|s| s.held.is_some()).count();
        if holding >= target {
            return Ok(());
        }
        let me: &str = &self.node.id;
        let mut candidates: Vec<&LeaseRow> = rows
            .iter()
            .filter(|row| !row.live || row.owner.as_deref() == Some(me))
            .filter(|row| {
                self.slots
                    .iter()
                    .any(|s| *s.name == row.name && s.held.is_none())
            })
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let offset = me.bytes().map(usize::from).sum::<usize>() % candidates.len();
        candidates.rotate_left(offset);
        let wait = self.node.effective_heartbeat() / 2;
        for row in candidates {
            if holding >= target {
                break;
            }
            let Some(acquired) = sql::acquire(
                &self.node.pool,
                &self.tables,
                me,
                &row.name,
                self.node.lease,
                wait,
            )
            .await?
            else {
                continue;
            };
            let previous = row.owner.as_deref().unwrap_or("nobody");
            tracing::info!(node = me, lease = %row.name, token = acquired.token, from = previous, "took a lease");
            self.acquisitions += 1;
            if let Some(slot) = self.slots.iter_mut().find(|s| *s.name == row.name) {
                slot.held = Some(Held {
                    token: acquired.token,
                    acquired_at: Some(acquired.acquired_at),
                    expires_at: Some(acquired.expires_at),
                    order: self.acquisitions,
                    valid_until: started + self.node.lease,
                    releasing: false,
                });
            }
            holding += 1;
        }
        Ok(())
    }

    /// Gives every lease back (after the batch in hand) and removes the node's row, so the
    /// others take over at once instead of after the lease.
    async fn leave(&mut self) {
        for slot in &mut self.slots {
            let Some(held) = slot.held.take() else {
                continue;
            };
            let _ = slot.state.send_if_modified(|state| {
                let had = state.fence.is_some();
                state.fence = None;
                had
            });
            let guard =
                tokio::time::timeout(self.node.lease, Arc::clone(&slot.batch).lock_owned()).await;
            if guard.is_err() {
                // A batch still running past the lease: its fence holds until it ends; the
                // lease lapses by itself.
                continue;
            }
            if let Err(error) = sql::release(
                &self.node.pool,
                &self.tables,
                &self.node.id,
                &slot.name,
                held.token,
            )
            .await
            {
                tracing::warn!(node = %self.node.id, lease = %slot.name, %error, "could not give a lease back; it lapses by itself");
            }
        }
        if let Err(error) = sql::leave(&self.node.pool, &self.tables, &self.node.id).await {
            tracing::warn!(node = %self.node.id, %error, "could not remove the node's row; it lapses by itself");
        }
        tracing::info!(node = %self.node.id, "cluster node left");
    }
}

/// Tells a worker about its lease: wakes it only when the owner or the fence changed.
fn publish(slot: &Slot, row: Option<&LeaseRow>, node: &ClusterNode, fences: &Arc<str>) {
    let held = slot.held.as_ref();
    let fence = held.filter(|h| !h.releasing).map(|h| {
        Fence::new(
            Arc::clone(&slot.name),
            Arc::clone(&node.id),
            h.token,
            Arc::clone(fences),
            node.batch_idle_timeout,
        )
    });
    let view = match (held, row) {
        (Some(h), _) => Ownership {
            node: Some(node.id.to_string()),
            mine: true,
            since: h.acquired_at,
            expires_at: h.expires_at,
            token: h.token,
        },
        (None, Some(row)) => Ownership {
            node: row.owner.clone().filter(|_| row.live),
            mine: false,
            since: row.acquired_at.filter(|_| row.live),
            expires_at: row.expires_at.filter(|_| row.live),
            token: row.token,
        },
        (None, None) => Ownership {
            node: None,
            mine: false,
            since: None,
            expires_at: None,
            token: 0,
        },
    };
    let valid_until = held.map(|h| h.valid_until);
    slot.state.send_if_modified(|state| {
        let wake = state.fence != fence || state.view.node != view.node;
        state.fence = fence;
        state.view = view;
        state.valid_until = valid_until;
        // Expiry renewals update silently; a new owner or fence wakes the worker.
        wake
    });
}
