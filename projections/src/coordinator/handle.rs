//! The handle of a running coordinator: cloneable, `Send + Sync`, usable from any task while
//! the workers run.

use std::any::TypeId;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::report::{ProjectionReport, RunReport};
use super::status::{ProjectionSnapshot, WorkerState};
use super::worker::{Command, ReplayReport, WorkerExit};
use super::{CoordinatorError, HealthReport, ProjectionHealth, ProjectionStatus};
use crate::projection::Projection;
use crate::registry::RegisteredProjection;
use crate::runner::{ProjectionRunner, RunnerError};

/// One worker, as the handle sees it.
pub(crate) struct WorkerLink {
    pub(crate) name: String,
    pub(crate) runner_type: TypeId,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) status: watch::Receiver<ProjectionSnapshot>,
}

pub(crate) struct Running {
    pub(crate) workers: Vec<WorkerLink>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: Mutex<Vec<(String, JoinHandle<WorkerExit>)>>,
    /// On a node of a cluster: its view and its heartbeat task.
    #[cfg(feature = "postgres")]
    pub(crate) cluster: Option<crate::cluster::ClusterLink>,
}

impl Drop for Running {
    /// The last handle gone: the workers finish their batch in hand and end.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A running coordinator, from [`ProjectionCoordinator::start`](super::ProjectionCoordinator::start).
///
/// Clone it freely; every clone reaches the same workers. Commands (pause, resume, stop,
/// rebuild, replay, read) are answered by the projection's worker between two batches, so they
/// never interleave with a batch; status reads never wait. When the last clone is dropped the
/// workers shut down as by [`shutdown`](Self::shutdown), without a report.
#[derive(Clone)]
pub struct CoordinatorHandle {
    pub(crate) running: Arc<Running>,
}

impl std::fmt::Debug for CoordinatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorHandle")
            .field("projections", &self.names())
            .finish_non_exhaustive()
    }
}

impl CoordinatorHandle {
    /// The projections' names, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.running
            .workers
            .iter()
            .map(|w| w.name.as_str())
            .collect()
    }

    fn worker(&self, name: &str) -> Result<&WorkerLink, CoordinatorError> {
        self.running
            .workers
            .iter()
            .find(|w| w.name == name)
            .ok_or_else(|| CoordinatorError::UnknownProjection(name.to_owned()))
    }

    /// Every projection's status, as its worker last published it. Never waits.
    pub fn status(&self) -> Vec<ProjectionSnapshot> {
        self.running
            .workers
            .iter()
            .map(|w| w.status.borrow().clone())
            .collect()
    }

    /// One projection's status.
    pub fn projection_status(&self, name: &str) -> Result<ProjectionSnapshot, CoordinatorError> {
        Ok(self.worker(name)?.status.borrow().clone())
    }

    /// A receiver of one projection's status, changed each time its worker publishes: to
    /// wait for a checkpoint, a state, a count.
    pub fn watch(
        &self,
        name: &str,
    ) -> Result<watch::Receiver<ProjectionSnapshot>, CoordinatorError> {
        Ok(self.worker(name)?.status.clone())
    }

    /// Waits until projection `name` has its checkpoint at or past `position`.
    pub async fn wait_for_checkpoint(
        &self,
        name: &str,
        position: u64,
    ) -> Result<ProjectionSnapshot, CoordinatorError> {
        let mut status = self.watch(name)?;
        let snapshot = status
            .wait_for(|s| s.checkpoint.is_some_and(|c| c >= position))
            .await
            .map_err(|_| CoordinatorError::NotRunning(name.to_owned()))?;
        Ok(snapshot.clone())
    }

    /// Read-your-writes: waits until projection `name` has applied (or moved past) the event
    /// at `position`, typically the `last_position` an append returned, for at most
    /// `timeout`. Returns as soon as the worker publishes the checkpoint; also returns, with
    /// what it saw, when the projection is stopped or paused (it will not get there by itself)
    /// or when `timeout` passes.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn run(handle: projections::coordinator::CoordinatorHandle, store: &dyn projections::EventStore, event: projections::AnyEvent, id: uuid::Uuid) -> Result<(), Box<dyn std::error::Error>> {
    /// use projections::coordinator::Waited;
    /// let appended = store.append(id, projections::ExpectedVersion::Any, vec![event]).await?;
    /// match handle.wait_for("order-summary", appended.last_position, Duration::from_secs(2)).await? {
    ///     Waited::Reached(_) => { /* the read model has the order */ }
    ///     Waited::Halted(status) => eprintln!("order-summary is {}", status.state),
    ///     Waited::TimedOut(status) => eprintln!("still at {:?}", status.checkpoint),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_for(
        &self,
        name: &str,
        position: u64,
        timeout: Duration,
    ) -> Result<Waited, CoordinatorError> {
        let mut status = self.watch(name)?;
        let reached = |s: &ProjectionSnapshot| s.checkpoint.is_some_and(|c| c >= position);
        let halted = |s: &ProjectionSnapshot| {
            matches!(
                s.state,
                WorkerState::Stopped { .. } | WorkerState::Paused { .. } | WorkerState::Finished
            )
        };
        let waited = tokio::time::timeout(timeout, async {
            status
                .wait_for(|s| reached(s) || halted(s))
                .await
                .map(|snapshot| snapshot.clone())
        })
        .await;
        let snapshot = match waited {
            Ok(Ok(snapshot)) => snapshot,
            Ok(Err(_)) => return Err(CoordinatorError::NotRunning(name.to_owned())),
            Err(_) => return Ok(Waited::TimedOut(status.borrow().clone())),
        };
        if reached(&snapshot) {
            Ok(Waited::Reached(snapshot))
        } else {
            Ok(Waited::Halted(snapshot))
        }
    }

    /// Asks projection `name`'s worker to publish its status again, between batches (its
    /// blue/green role changed). Does nothing when it is not running.
    pub(crate) fn republish(&self, name: &str) {
        if let Ok(worker) = self.worker(name) {
            let _ = worker.commands.send(Command::Publish);
        }
    }

    /// Health, from the workers' snapshots (no database round trip).
    pub fn health(&self) -> HealthReport {
        let projections = self
            .status()
            .into_iter()
            .map(|s| ProjectionHealth {
                status: ProjectionStatus::of_snapshot(&s),
                name: s.name,
                checkpoint: None,
                lag: None,
                dead_letters: s.dead_letters,
            })
            .collect();
        HealthReport::new(projections)
    }

    async fn ask<T>(
        &self,
        name: &str,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, CoordinatorError> {
        let worker = self.worker(name)?;
        let (reply, answer) = oneshot::channel();
        worker
            .commands
            .send(command(reply))
            .map_err(|_| CoordinatorError::NotRunning(name.to_owned()))?;
        answer
            .await
            .map_err(|_| CoordinatorError::NotRunning(name.to_owned()))
    }

    /// Pauses projection `name`, durably (it stays paused across restarts), after the batch
    /// in hand.
    pub async fn pause(&self, name: &str, reason: &str) -> Result<(), CoordinatorError> {
        let reason = reason.to_owned();
        Ok(self
            .ask(name, |reply| Command::Pause { reason, reply })
            .await??)
    }

    /// Resumes a paused or stopped projection: it tries the event it stopped at again.
    pub async fn resume(&self, name: &str) -> Result<(), CoordinatorError> {
        Ok(self.ask(name, |reply| Command::Resume { reply }).await??)
    }

    /// Resets projection `name` and replays the store from the beginning; returns what the
    /// replay did, once caught up. The projection then goes on live.
    ///
    /// A partitioned projection ([`Partition`](crate::runner::Partition)) is reset whole, its
    /// partitions together, whether `name` is the projection's (`orders`) or one partition's
    /// (`orders#2/4`): the report is that of the partition that ran the reset, and the other
    /// partitions replay in their own workers (on their own nodes, on a cluster).
    pub async fn rebuild(&self, name: &str) -> Result<ProjectionReport, CoordinatorError> {
        let name = self.partition_of(name).unwrap_or(name).to_owned();
        Ok(self
            .ask(&name, |reply| Command::Rebuild { reply })
            .await??)
    }

    /// The first partition of projection `base` running here, when no projection has that
    /// name (`base` names a partitioned projection). On a cluster, one this node owns if any.
    fn partition_of(&self, base: &str) -> Option<&str> {
        if self.running.workers.iter().any(|w| w.name == base) {
            return None;
        }
        let partitions =
            self.running.workers.iter().filter(|w| {
                crate::runner::Partition::parse(&w.name).is_some_and(|(b, _)| b == base)
            });
        let mut first = None;
        for worker in partitions {
            if worker.status.borrow().owner.as_ref().is_none_or(|o| o.mine) {
                return Some(&worker.name);
            }
            first.get_or_insert(worker.name.as_str());
        }
        first
    }

    /// Replays one dead-letter entry of projection `name`.
    pub async fn replay_dead_letter(
        &self,
        name: &str,
        entry_id: i64,
    ) -> Result<(), CoordinatorError> {
        self.ask(name, |reply| Command::Replay {
            entry_id: Some(entry_id),
            reply,
        })
        .await??;
        Ok(())
    }

    /// Marks dead-letter entry `entry_id` of projection `name` done with, by `resolved_by`,
    /// without applying it; under the park policy, resolving the first entry of a parked
    /// aggregate releases the events held behind it, in order.
    pub async fn resolve_dead_letter(
        &self,
        name: &str,
        entry_id: i64,
        resolved_by: &str,
    ) -> Result<(), CoordinatorError> {
        let resolved_by = resolved_by.to_owned();
        Ok(self
            .ask(name, |reply| Command::Resolve {
                entry_id,
                resolved_by,
                reply,
            })
            .await??)
    }

    /// Replays every failed dead-letter entry of projection `name`, in position order.
    pub async fn replay_dead_letters(&self, name: &str) -> Result<ReplayReport, CoordinatorError> {
        Ok(self
            .ask(name, |reply| Command::Replay {
                entry_id: None,
                reply,
            })
            .await??)
    }

    /// Reads the read model of the in-memory projection of type `P` (run by a
    /// [`ProjectionRunner`]) between two of its batches.
    pub async fn read<P, R>(
        &self,
        read: impl FnOnce(&P) -> R + Send + 'static,
    ) -> Result<R, CoordinatorError>
    where
        P: Projection + 'static,
        R: Send + 'static,
    {
        let wanted = TypeId::of::<ProjectionRunner<P>>();
        let worker = self
            .running
            .workers
            .iter()
            .find(|w| w.runner_type == wanted)
            .ok_or_else(|| {
                CoordinatorError::UnknownProjection(std::any::type_name::<P>().to_owned())
            })?;
        Self::read_worker(worker, read).await
    }

    /// Reads the read model of the in-memory projection named `name` (of type `P`, run by a
    /// [`ProjectionRunner`]) between two of its batches: one partition of a partitioned
    /// projection, say, whose partitions are all of one type.
    pub async fn read_named<P, R>(
        &self,
        name: &str,
        read: impl FnOnce(&P) -> R + Send + 'static,
    ) -> Result<R, CoordinatorError>
    where
        P: Projection + 'static,
        R: Send + 'static,
    {
        let worker = self.worker(name)?;
        if worker.runner_type != TypeId::of::<ProjectionRunner<P>>() {
            return Err(CoordinatorError::UnknownProjection(format!(
                "{name} (as {})",
                std::any::type_name::<P>()
            )));
        }
        Self::read_worker(worker, read).await
    }

    async fn read_worker<P, R>(
        worker: &WorkerLink,
        read: impl FnOnce(&P) -> R + Send + 'static,
    ) -> Result<R, CoordinatorError>
    where
        P: Projection + 'static,
        R: Send + 'static,
    {
        let name = worker.name.clone();
        let (reply, answer) = oneshot::channel();
        let command = Command::Read(Box::new(move |runner: &dyn RegisteredProjection| {
            if let Some(runner) = runner.as_any().downcast_ref::<ProjectionRunner<P>>() {
                let _ = reply.send(read(runner.projection()));
            }
        }));
        worker
            .commands
            .send(command)
            .map_err(|_| CoordinatorError::NotRunning(name.clone()))?;
        answer.await.map_err(|_| CoordinatorError::NotRunning(name))
    }

    /// Ends projection `name`'s worker in this process after the batch in hand, its
    /// checkpoint written; returns what it did. Not durable: it runs again at the next start
    /// (use [`pause`](Self::pause) to hold it across restarts).
    pub async fn stop(&self, name: &str) -> Result<ProjectionReport, CoordinatorError> {
        let worker = self.worker(name)?;
        let _ = worker.commands.send(Command::Stop);
        let task = {
            let mut tasks = lock(&self.running.tasks);
            let index = tasks.iter().position(|(n, _)| n == name);
            index.map(|i| tasks.remove(i).1)
        };
        match task {
            Some(task) => match task.await {
                Ok(exit) => Ok(exit.report),
                Err(_) => Err(CoordinatorError::NotRunning(name.to_owned())),
            },
            None => Err(CoordinatorError::NotRunning(name.to_owned())),
        }
    }

    /// Shuts every worker down: each finishes the batch in hand and writes its checkpoint,
    /// then ends. A worker still busy after `deadline` is aborted: a transactional batch in
    /// hand rolls back (nothing lost); with repositories, the events of that batch applied
    /// before the abort are applied again at the next start (at least once). Returns what each
    /// projection did since the start; an aborted one has `error` set.
    pub async fn shutdown(&self, deadline: Duration) -> RunReport {
        let exits = self.shutdown_workers(Some(deadline)).await;
        RunReport {
            projections: exits.into_iter().map(|(_, report, _)| report).collect(),
        }
    }

    /// Cancels, waits (up to `deadline`), and returns per worker its report and runner (if it
    /// ended by itself).
    pub(crate) async fn shutdown_workers(
        &self,
        deadline: Option<Duration>,
    ) -> Vec<(
        String,
        ProjectionReport,
        Option<Box<dyn RegisteredProjection>>,
    )> {
        self.running.shutdown.cancel();
        let tasks = std::mem::take(&mut *lock(&self.running.tasks));
        let limit = deadline.map(|d| tokio::time::Instant::now() + d);
        let mut exits = Vec::with_capacity(tasks.len());
        for (name, mut task) in tasks {
            let ended = match limit {
                Some(limit) => tokio::time::timeout_at(limit, &mut task).await.ok(),
                None => Some((&mut task).await),
            };
            match ended {
                Some(Ok(exit)) => exits.push((name, exit.report, Some(exit.runner))),
                Some(Err(join)) => {
                    let mut report = ProjectionReport::named(&name);
                    report.error = Some(RunnerError::Aborted {
                        projection: name.clone(),
                        reason: format!("its task ended abnormally: {join}"),
                    });
                    exits.push((name, report, None));
                }
                None => {
                    task.abort();
                    tracing::warn!(projection = %name, "worker aborted at the shutdown deadline");
                    let mut report = ProjectionReport::named(&name);
                    report.error = Some(RunnerError::Aborted {
                        projection: name.clone(),
                        reason: "at the shutdown deadline, its batch in hand unfinished".to_owned(),
                    });
                    exits.push((name, report, None));
                }
            }
        }
        // The node gives its leases back once its workers are done, so that the others
        // take over at once.
        #[cfg(feature = "postgres")]
        if let Some(cluster) = &self.running.cluster {
            let task = lock(&cluster.task).take();
            if let Some(mut task) = task {
                let ended = match limit {
                    Some(limit) => tokio::time::timeout_at(limit, &mut task).await.is_ok(),
                    None => (&mut task).await.is_ok(),
                };
                if !ended {
                    task.abort();
                }
            }
        }
        exits
    }

    /// On a node of a [cluster](crate::cluster): this node and the live ones, as the node
    /// last saw them. `None` outside a cluster.
    #[cfg(feature = "postgres")]
    pub fn cluster(&self) -> Option<crate::cluster::ClusterView> {
        self.running
            .cluster
            .as_ref()
            .map(|cluster| cluster.view.borrow().clone())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What [`CoordinatorHandle::wait_for`] saw, with the projection's status at that moment.
#[derive(Debug, Clone)]
#[must_use]
pub enum Waited {
    /// The checkpoint is at or past the position.
    Reached(ProjectionSnapshot),
    /// The projection is stopped, paused or finished short of the position.
    Halted(ProjectionSnapshot),
    /// The time ran out first.
    TimedOut(ProjectionSnapshot),
}

impl Waited {
    /// Whether the position was reached.
    pub fn reached(&self) -> bool {
        matches!(self, Self::Reached(_))
    }

    /// The status when the wait ended.
    pub fn status(&self) -> &ProjectionSnapshot {
        match self {
            Self::Reached(s) | Self::Halted(s) | Self::TimedOut(s) => s,
        }
    }
}
