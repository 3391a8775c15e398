//! Fault injection for the transactional runner over a real database: [`Probe`] wraps a
//! backend's [`TransactionUnit`], counts every step of the runner's work and, at a chosen
//! occurrence of one, fails or hangs forever.
//!
//! A hang is a crash: the test waits until the step is reached ([`Faults::crashed`], a
//! [`Notify`], no timer), drops the runner's future and closes the crashed runner's own pool,
//! so the database rolls back its open transaction as it would when a process dies.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use projections::checkpoint::CheckpointUpdate;
use projections::dlq::FailedEvent;
use projections::storage::BoxFuture;
use projections::transactional::TransactionUnit;
use projections::{CheckpointRepository, DLQRepository, StorageError};
use tokio::sync::Notify;

/// A step of the runner's work where a fault can strike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Point {
    /// A transaction was opened (nothing run in it yet).
    AfterBegin,
    /// The checkpoint row was read and locked, before any handler.
    AfterLock,
    /// Inside the handler, between its two statements (the projection trips it).
    BetweenStatements,
    /// Before the checkpoint is written.
    BeforeWriteCheckpoint,
    /// Before a dead-letter row is written.
    BeforeDeadLetter,
    /// Before any commit.
    BeforeCommit,
    /// The commit succeeded, before the runner hears of it.
    AfterCommit,
    /// Before the commit of a transaction that wrote a dead letter.
    DeadLetterCommit,
    /// Before the commit of a transaction that reset the checkpoint.
    ResetCommit,
    /// A rollback (counted only).
    Rollback,
}

/// What happens at the planned step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Never complete: the process dies here.
    Crash,
    /// Return an error (a commit is rolled back first, as a server-side commit failure would).
    Fail,
}

#[derive(Default)]
struct FaultState {
    plan: Option<(Point, u32, Action)>,
    seen: BTreeMap<Point, u32>,
}

/// Counts every step and strikes at the planned occurrence of one.
#[derive(Default)]
pub struct Faults {
    state: Mutex<FaultState>,
    /// Notified when a planned crash is reached.
    pub crashed: Notify,
}

impl Faults {
    /// Counts only.
    pub fn none() -> Arc<Self> {
        Arc::default()
    }

    /// Strikes with `action` at the `occurrence`-th time (from 1) `point` is reached.
    pub fn at(point: Point, occurrence: u32, action: Action) -> Arc<Self> {
        let faults = Self::default();
        faults.state.lock().unwrap().plan = Some((point, occurrence, action));
        Arc::new(faults)
    }

    /// Fails the next occurrence of `point`.
    pub fn fail_next(&self, point: Point) {
        let mut state = self.state.lock().unwrap();
        let next = state.seen.get(&point).copied().unwrap_or(0) + 1;
        state.plan = Some((point, next, Action::Fail));
    }

    /// How often `point` was reached.
    pub fn count(&self, point: Point) -> u32 {
        self.state
            .lock()
            .unwrap()
            .seen
            .get(&point)
            .copied()
            .unwrap_or(0)
    }

    /// How often each point was reached.
    pub fn counts(&self) -> BTreeMap<Point, u32> {
        self.state.lock().unwrap().seen.clone()
    }

    fn strike(&self, point: Point) -> Option<Action> {
        let mut state = self.state.lock().unwrap();
        let seen = state.seen.entry(point).or_default();
        *seen += 1;
        let seen = *seen;
        match state.plan {
            Some((planned, occurrence, action)) if planned == point && occurrence == seen => {
                Some(action)
            }
            _ => None,
        }
    }

    /// Counts `point` and, when it is the planned occurrence, fails or never returns.
    pub async fn trip(&self, point: Point) -> Result<(), StorageError> {
        match self.strike(point) {
            None => Ok(()),
            Some(Action::Fail) => Err(StorageError::backend(format!(
                "injected failure at {point:?}"
            ))),
            Some(Action::Crash) => {
                self.crashed.notify_one();
                std::future::pending().await
            }
        }
    }
}

/// A transaction of [`Probe`]: the backend's, plus what it did.
pub struct ProbeTx<U: TransactionUnit> {
    tx: U::Transaction,
    dead_lettered: bool,
    reset: bool,
}

impl<U: TransactionUnit> Deref for ProbeTx<U> {
    type Target = U::Connection;
    fn deref(&self) -> &U::Connection {
        &self.tx
    }
}

impl<U: TransactionUnit> DerefMut for ProbeTx<U> {
    fn deref_mut(&mut self) -> &mut U::Connection {
        &mut self.tx
    }
}

/// A backend's [`TransactionUnit`] with every step counted and faults injected.
pub struct Probe<U> {
    inner: U,
    faults: Arc<Faults>,
}

impl<U: TransactionUnit> Probe<U> {
    /// `inner`, striking as `faults` plans.
    pub fn new(inner: U, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
    }
}

impl<U: TransactionUnit> TransactionUnit for Probe<U> {
    type Connection = U::Connection;
    type Transaction = ProbeTx<U>;

    fn begin(&self) -> BoxFuture<'_, Result<ProbeTx<U>, StorageError>> {
        Box::pin(async move {
            let tx = ProbeTx {
                tx: self.inner.begin().await?,
                dead_lettered: false,
                reset: false,
            };
            self.faults.trip(Point::AfterBegin).await?;
            Ok(tx)
        })
    }

    fn commit(&self, tx: ProbeTx<U>) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let mut points = vec![Point::BeforeCommit];
            if tx.dead_lettered {
                points.push(Point::DeadLetterCommit);
            }
            if tx.reset {
                points.push(Point::ResetCommit);
            }
            for point in points {
                if let Err(error) = self.faults.trip(point).await {
                    self.inner.rollback(tx.tx).await?;
                    return Err(error);
                }
            }
            self.inner.commit(tx.tx).await?;
            self.faults.trip(Point::AfterCommit).await
        })
    }

    fn rollback(&self, tx: ProbeTx<U>) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            self.inner.rollback(tx.tx).await?;
            self.faults.trip(Point::Rollback).await
        })
    }

    fn lock_checkpoint<'a>(
        &'a self,
        tx: &'a mut ProbeTx<U>,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        Box::pin(async move {
            let position = self.inner.lock_checkpoint(&mut tx.tx, projection).await?;
            self.faults.trip(Point::AfterLock).await?;
            Ok(position)
        })
    }

    fn write_checkpoint<'a>(
        &'a self,
        tx: &'a mut ProbeTx<U>,
        projection: &'a str,
        update: &'a CheckpointUpdate,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            self.faults.trip(Point::BeforeWriteCheckpoint).await?;
            self.inner
                .write_checkpoint(&mut tx.tx, projection, update)
                .await
        })
    }

    fn reset_checkpoint<'a>(
        &'a self,
        tx: &'a mut ProbeTx<U>,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            self.inner.reset_checkpoint(&mut tx.tx, projection).await?;
            tx.reset = true;
            Ok(())
        })
    }

    fn dead_letter<'a>(
        &'a self,
        tx: &'a mut ProbeTx<U>,
        failure: &'a FailedEvent,
    ) -> BoxFuture<'a, Result<i64, StorageError>> {
        Box::pin(async move {
            self.faults.trip(Point::BeforeDeadLetter).await?;
            let id = self.inner.dead_letter(&mut tx.tx, failure).await?;
            tx.dead_lettered = true;
            Ok(id)
        })
    }

    fn resolve_dead_letter<'a>(
        &'a self,
        tx: &'a mut ProbeTx<U>,
        entry_id: i64,
        resolved_by: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner
            .resolve_dead_letter(&mut tx.tx, entry_id, resolved_by)
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointRepository> {
        self.inner.checkpoints()
    }

    fn dead_letters(&self) -> Arc<dyn DLQRepository> {
        self.inner.dead_letters()
    }
}
