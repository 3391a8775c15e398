//! One projection's worker: its own task and loop. Catch up from the checkpoint, then follow
//! the store live; answer commands between batches; wait out a failing infrastructure; stay
//! halted while paused or stopped. Nothing it does delays another projection's worker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::InfrastructureBackoff;
use super::report::ProjectionReport;
use super::status::{ProjectionSnapshot, Throughput, WorkerState};
use crate::checkpoint::Halt;
use crate::failure::FailureKind;
use crate::registry::RegisteredProjection;
use crate::runner::{BatchOutcome, RunnerError, RunnerReads};
use crate::store::EventStore;

/// How soon a worker looks again when a pass ended short of an announced append (a database
/// store never reads past a transaction still in flight): at first after
/// [`HORIZON_RETRY_FIRST`], then twice as long each time the append is still in flight, up to
/// this. An append usually commits within a millisecond or two, and a catch-up under steady
/// appends meets one at almost every page: waiting the most at once would slow it down.
const HORIZON_RETRY: Duration = Duration::from_millis(50);

/// The first wait after a pass cut short by an append in flight.
const HORIZON_RETRY_FIRST: Duration = Duration::from_millis(1);

/// How often lag is measured while catching up.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// What a replay of every failed dead letter of a projection did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Entries replayed and resolved, in position order.
    pub replayed: Vec<i64>,
    /// Entries that failed again, with why.
    pub failed: Vec<(i64, String)>,
}

/// Something asked of a worker, answered between batches.
pub(crate) enum Command {
    Pause {
        reason: String,
        reply: oneshot::Sender<Result<(), RunnerError>>,
    },
    Resume {
        reply: oneshot::Sender<Result<(), RunnerError>>,
    },
    /// End the worker; the reply is its report.
    Stop,
    Rebuild {
        reply: oneshot::Sender<Result<ProjectionReport, RunnerError>>,
    },
    Replay {
        /// One entry, or every failed entry of the projection (`None`).
        entry_id: Option<i64>,
        reply: oneshot::Sender<Result<ReplayReport, RunnerError>>,
    },
    Resolve {
        entry_id: i64,
        resolved_by: String,
        reply: oneshot::Sender<Result<(), RunnerError>>,
    },
    Read(ReadRunner),
    /// Publish the status again (a blue/green version's role changed).
    Publish,
}

/// A read of a runner, run by its worker between batches.
pub(crate) type ReadRunner = Box<dyn FnOnce(&dyn RegisteredProjection) + Send>;

/// What every worker of a coordinator shares.
#[derive(Clone)]
pub(crate) struct WorkerConfig {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) batch_size: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) backoff: InfrastructureBackoff,
}

/// Whether a batch reached the readable head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    More,
    CaughtUp,
}

/// Reads one batch after the checkpoint and hands it to the runner, adding what it did to
/// `report`. Shared by the workers and by one-shot catch-ups, so they cannot disagree.
pub(crate) async fn step(
    runner: &mut dyn RegisteredProjection,
    store: &dyn EventStore,
    batch_size: usize,
    report: &mut ProjectionReport,
) -> Result<(Pass, BatchOutcome), RunnerError> {
    runner.prepare_replay(store).await?;
    let checkpoint = runner.checkpoint().await?;
    let after = checkpoint.unwrap_or(0);
    // Only what the projection needs: its types, followed aggregate types, tenants.
    let filter = runner.read_filter();
    let page = store
        .read_filtered(after, batch_size, &filter)
        .await
        .map_err(|source| RunnerError::Storage {
            projection: runner.name().to_owned(),
            source,
        })?;
    let pass = if page.at_head {
        Pass::CaughtUp
    } else {
        Pass::More
    };
    if page.events.is_empty() && page.read_to <= after {
        // Nothing new (a read that got nowhere is caught up, whatever it says): the checkpoint
        // is still worth publishing (a worker that starts caught up has read no batch that
        // would report it).
        let outcome = BatchOutcome {
            checkpoint,
            ..BatchOutcome::default()
        };
        return Ok((Pass::CaughtUp, outcome));
    }
    // The checkpoint moves on to where the read got, past events that were not its business.
    let mut outcome = BatchOutcome::default();
    let result = runner
        .handle_page(&page.events, page.read_to, &mut outcome)
        .await;
    report.add(&outcome);
    result?;
    Ok((pass, outcome))
}

/// Catches `runner` up to the readable head once (no waiting out failures).
pub(crate) async fn pass(
    runner: &mut dyn RegisteredProjection,
    store: &dyn EventStore,
    batch_size: usize,
    shutdown: &CancellationToken,
) -> ProjectionReport {
    let mut report = ProjectionReport::named(runner.name());
    while !shutdown.is_cancelled() {
        match step(runner, store, batch_size, &mut report).await {
            Ok((Pass::More, _)) => {}
            Ok((Pass::CaughtUp, _)) => break,
            Err(error) => {
                report.error = Some(error);
                break;
            }
        }
    }
    report.stopped = runner.stopped().cloned();
    report
}

pub(crate) struct Worker {
    pub(crate) runner: Box<dyn RegisteredProjection>,
    pub(crate) config: WorkerConfig,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) status: watch::Sender<ProjectionSnapshot>,
    pub(crate) shutdown: CancellationToken,
    report: ProjectionReport,
    reads: RunnerReads,
    throughput: Throughput,
    notifications: Option<watch::Receiver<u64>>,
    /// Consecutive infrastructure failures.
    failures: u32,
    /// The store's head position when lag was last measured (for a version's progress).
    head: Option<u64>,
    lag_measured: Option<Instant>,
    /// When the stored halt was last read.
    halt_checked: Instant,
    /// The worker was asked to end.
    stopping: bool,
    /// Passes in a row cut short by an append in flight (see [`HORIZON_RETRY`]).
    horizon_waits: u32,
    /// A stop that storage could not record (its own setup is wrong, say the checkpoint table
    /// is missing): held in this process until resumed.
    unrecorded_stop: Option<crate::runner::StoppedAt>,
    /// On a node of a cluster: the projection's lease, which the worker must hold to write.
    #[cfg(feature = "postgres")]
    lease: Option<crate::cluster::WorkerLease>,
}

/// What a worker hands back when it ends.
pub(crate) struct WorkerExit {
    pub(crate) runner: Box<dyn RegisteredProjection>,
    pub(crate) report: ProjectionReport,
}

impl Worker {
    pub(crate) fn new(
        runner: Box<dyn RegisteredProjection>,
        config: WorkerConfig,
        commands: mpsc::UnboundedReceiver<Command>,
        status: watch::Sender<ProjectionSnapshot>,
        shutdown: CancellationToken,
    ) -> Self {
        let notifications = config.store.subscribe();
        Self {
            report: ProjectionReport::named(runner.name()),
            reads: runner.reads(),
            runner,
            config,
            commands,
            status,
            shutdown,
            throughput: Throughput::new(),
            notifications,
            failures: 0,
            head: None,
            lag_measured: None,
            halt_checked: Instant::now(),
            stopping: false,
            horizon_waits: 0,
            unrecorded_stop: None,
            #[cfg(feature = "postgres")]
            lease: None,
        }
    }

    /// Makes the worker write only while this node holds the projection's lease.
    #[cfg(feature = "postgres")]
    pub(crate) fn leased(mut self, lease: crate::cluster::WorkerLease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The worker's loop, until shutdown or a stop command.
    pub(crate) async fn run(mut self) -> WorkerExit {
        self.refresh_dead_letters().await;
        while !self.shutdown.is_cancelled() && !self.stopping {
            while let Ok(command) = self.commands.try_recv() {
                self.obey(command).await;
            }
            if self.stopping {
                break;
            }
            if !self.holds_lease().await {
                continue;
            }
            if let Some(at) = self.unrecorded_stop.clone() {
                self.publish_halt(&Halt::Stopped(at));
                self.idle(None).await;
                continue;
            }
            if let Err(error) = self.runner.load().await {
                self.failed(error).await;
                continue;
            }
            if self.halt_checked.elapsed() >= self.config.poll_interval {
                self.refresh_halt().await;
            }
            if let Some(halt) = self.runner.halt().cloned() {
                self.publish_checkpoint().await;
                self.publish_halt(&halt);
                // Until a command, or the time to look at the stored halt again.
                self.idle(Some(self.config.poll_interval)).await;
                continue;
            }
            // What was announced before this read: a later announcement means look again.
            let announced = self.announced();
            let store = Arc::clone(&self.config.store);
            // The node gives a lease back between batches only.
            let guard = self.batch_guard().await;
            let result = step(
                &mut *self.runner,
                &*store,
                self.config.batch_size,
                &mut self.report,
            )
            .await;
            drop(guard);
            match result {
                Ok((pass, outcome)) => {
                    self.failures = 0;
                    self.after_batch(&outcome, pass).await;
                    if pass == Pass::CaughtUp {
                        if let Some(wait) = self.live_wait(announced).await {
                            self.idle(Some(wait)).await;
                        }
                    } else {
                        // Let the other tasks of this thread run between full batches.
                        tokio::task::yield_now().await;
                    }
                }
                Err(error) => self.failed(error).await,
            }
        }
        self.report.stopped = self.runner.stopped().cloned();
        self.publish(|s| s.state = WorkerState::Finished);
        WorkerExit {
            runner: self.runner,
            report: self.report,
        }
    }

    /// Reads the stored halt again: another process (an operator's command line) may have
    /// paused or resumed the projection.
    async fn refresh_halt(&mut self) {
        self.halt_checked = Instant::now();
        let was_halted = self.runner.halt().is_some();
        if self.runner.refresh_halt().await.is_ok() && was_halted && self.runner.halt().is_none() {
            tracing::info!(projection = %self.runner.name(), "resumed by another process");
            self.publish(|s| {
                s.state = WorkerState::CatchingUp;
                s.last_error = None;
            });
        }
    }

    /// A batch ended with `error`: wait out the infrastructure, stop on a wrong setup.
    async fn failed(&mut self, error: RunnerError) {
        if error.is_fenced() {
            self.fenced(&error).await;
            return;
        }
        if let RunnerError::CheckpointMovedBack { .. } = &error {
            // Reset elsewhere: the next batch reads from the new checkpoint.
            tracing::info!(projection = %self.runner.name(), %error, "reading again after a reset");
            self.publish_checkpoint().await;
            return;
        }
        // What was committed before the failure counts.
        self.publish_checkpoint().await;
        if error.is_halt() {
            // The runner stopped (and recorded it); the loop shows the halt.
            self.set_error(&error);
            return;
        }
        if matches!(
            error,
            RunnerError::AmbiguousEventType { .. } | RunnerError::InvalidUpcasters { .. }
        ) {
            // A fault of the program, not of its storage: hold in this process, record
            // nothing (the coordinator refuses to start first, so this is a safety net).
            let at = crate::runner::StoppedAt::new(FailureKind::Setup, error_chain(&error));
            self.unrecorded_stop = Some(at);
            self.set_error(&error);
            return;
        }
        match error.kind() {
            FailureKind::Infrastructure => self.degraded(error).await,
            _ => {
                // A storage failure of the setup's kind (a missing table, a permission):
                // stop, with the error, until an operator resumes.
                let at = crate::runner::StoppedAt::new(FailureKind::Setup, error_chain(&error));
                tracing::error!(projection = %self.runner.name(), %error, "projection stopped: wrong setup");
                match self.runner.halt_with(Halt::Stopped(at.clone())).await {
                    Ok(()) => {}
                    Err(record) if record.kind() == FailureKind::Infrastructure => {
                        // Not recorded yet: wait, try again, and stop then.
                        self.set_error(&error);
                        self.degraded(record).await;
                        return;
                    }
                    Err(record) => {
                        tracing::error!(projection = %self.runner.name(), error = %record, "could not record the stop; it holds in this process only");
                        self.unrecorded_stop = Some(at);
                    }
                }
                self.set_error(&error);
            }
        }
    }

    /// Reports degraded and waits (backing off), answering commands meanwhile.
    async fn degraded(&mut self, error: RunnerError) {
        self.failures += 1;
        let delay = self.config.backoff.delay(self.failures);
        let failures = self.failures;
        let message = error_chain(&error);
        tracing::warn!(
            projection = %self.runner.name(), failures, retry_in_ms = delay.as_millis() as u64,
            error = %message, "infrastructure failing; waiting to try again",
        );
        self.publish(|s| {
            s.state = WorkerState::Degraded {
                error: message.clone(),
                failures,
            };
            s.last_error = Some(message.clone());
        });
        self.idle(Some(delay)).await;
    }

    fn set_error(&mut self, error: &RunnerError) {
        let message = error_chain(error);
        self.publish(|s| s.last_error = Some(message));
    }

    /// Waits for a command, shutdown, or (when given) the end of `wait` or a notification.
    async fn idle(&mut self, wait: Option<Duration>) {
        let sleep = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        #[cfg(feature = "postgres")]
        let lease_changed = {
            let lease = self.lease.as_mut().map(|lease| &mut lease.state);
            async move {
                match lease {
                    Some(state) => {
                        if state.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            }
        };
        #[cfg(not(feature = "postgres"))]
        let lease_changed = std::future::pending::<()>();
        let (notifications, commands, shutdown) =
            (&mut self.notifications, &mut self.commands, &self.shutdown);
        let notified = async {
            match (wait, notifications.as_mut()) {
                (Some(_), Some(receiver)) => {
                    if receiver.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                _ => std::future::pending().await,
            }
        };
        let command = tokio::select! {
            () = shutdown.cancelled() => None,
            () = sleep => None,
            () = notified => None,
            () = lease_changed => None,
            command = commands.recv() => command,
        };
        if let Some(command) = command {
            self.obey(command).await;
        }
    }

    /// The last position the store announced, marking it seen.
    fn announced(&mut self) -> u64 {
        self.notifications
            .as_mut()
            .map_or(0, |receiver| *receiver.borrow_and_update())
    }

    /// How long to wait once caught up: not at all when an append was announced during the
    /// read; a little when one announced before it is not readable yet (a database store
    /// never reads past a transaction still in flight); else until a notification or the poll
    /// interval.
    async fn live_wait(&mut self, announced: u64) -> Option<Duration> {
        if self
            .notifications
            .as_ref()
            .is_some_and(|receiver| receiver.has_changed().unwrap_or(false))
        {
            return None;
        }
        let checkpoint = self.runner.checkpoint().await.ok().flatten().unwrap_or(0);
        Some(if announced > checkpoint {
            let wait = HORIZON_RETRY_FIRST
                .saturating_mul(1 << self.horizon_waits.min(6))
                .min(HORIZON_RETRY);
            self.horizon_waits += 1;
            self.config.poll_interval.min(wait)
        } else {
            self.horizon_waits = 0;
            self.config.poll_interval
        })
    }

    async fn after_batch(&mut self, outcome: &BatchOutcome, pass: Pass) {
        if outcome.checkpoint.is_some() && outcome.checkpoint != self.status.borrow().checkpoint {
            // Progress: an append that held the reads back has committed.
            self.horizon_waits = 0;
        }
        self.throughput.record(outcome.applied);
        let eps = self.throughput.per_second();
        let dead = outcome.dead_lettered.len() as u64;
        let lag = match pass {
            Pass::CaughtUp => Some((0, 0.0)),
            Pass::More => self.measure_lag().await,
        };
        let applied = self.report.applied;
        self.publish(|s| {
            s.state = match pass {
                Pass::CaughtUp => WorkerState::Live,
                Pass::More => WorkerState::CatchingUp,
            };
            s.checkpoint = outcome.checkpoint.or(s.checkpoint);
            s.dead_letters += dead;
            s.events_per_second = eps;
            s.applied = applied;
            if let Some((events, seconds)) = lag {
                s.events_behind = events;
                s.seconds_behind = seconds;
            }
            if !matches!(s.state, WorkerState::Stopped { .. }) && dead == 0 {
                s.last_error = None;
            }
        });
    }

    /// Lag in relevant events and seconds, at most once per [`LAG_EVERY`].
    async fn measure_lag(&mut self) -> Option<(u64, f64)> {
        if self.lag_measured.is_some_and(|at| at.elapsed() < LAG_EVERY) {
            return None;
        }
        self.lag_measured = Some(Instant::now());
        let lag = self.reads.lag_metrics(&*self.config.store).await.ok()?;
        self.head = Some(lag.head_position);
        let seconds = lag
            .oldest_unprocessed_age
            .map_or(0.0, |age| age.as_secs_f64());
        Some((lag.events_behind, seconds))
    }

    /// Publishes the runner's checkpoint as it knows it (no round trip once known).
    async fn publish_checkpoint(&mut self) {
        if let Ok(checkpoint) = self.runner.checkpoint().await {
            let applied = self.report.applied;
            self.publish(|s| {
                s.checkpoint = checkpoint;
                s.applied = applied;
            });
        }
    }

    async fn refresh_dead_letters(&mut self) {
        if let Ok(count) = self.reads.dead_letter_count().await {
            self.publish(|s| s.dead_letters = count);
        }
    }

    fn publish_halt(&mut self, halt: &Halt) {
        let state = match halt {
            Halt::Paused { reason, .. } => WorkerState::Paused {
                reason: reason.clone(),
            },
            Halt::Stopped(at) => WorkerState::Stopped { at: at.clone() },
        };
        self.publish(|s| {
            if s.state != state {
                s.state = state;
            }
        });
    }

    fn publish(&mut self, change: impl FnOnce(&mut ProjectionSnapshot)) {
        let version = self.runner.version();
        let head = self.head;
        self.status.send_modify(|snapshot| {
            change(snapshot);
            snapshot.version = version.map(|mut version| {
                version.progress = progress(snapshot, head);
                version
            });
            snapshot.updated_at = chrono::Utc::now();
            crate::metrics::snapshot(snapshot);
        });
    }

    async fn obey(&mut self, command: Command) {
        match command {
            Command::Pause { reason, reply } => {
                let result = self.runner.halt_with(Halt::paused(reason)).await;
                let _ = reply.send(result);
            }
            Command::Resume { reply } => {
                let result = match self.unrecorded_stop.take() {
                    Some(_) => Ok(()),
                    None => self.runner.resume().await,
                };
                if result.is_ok() {
                    self.publish(|s| {
                        s.state = WorkerState::CatchingUp;
                        s.last_error = None;
                    });
                }
                let _ = reply.send(result);
            }
            Command::Stop => self.stopping = true,
            Command::Rebuild { reply } => {
                let result = match self.not_owner() {
                    Some(error) => Err(error),
                    None => {
                        let guard = self.batch_guard().await;
                        let result = self.rebuild().await;
                        drop(guard);
                        result
                    }
                };
                let _ = reply.send(result);
            }
            Command::Resolve {
                entry_id,
                resolved_by,
                reply,
            } => {
                let result = self
                    .runner
                    .resolve_dead_letter(entry_id, &resolved_by)
                    .await;
                self.refresh_dead_letters().await;
                let _ = reply.send(result);
            }
            Command::Replay { entry_id, reply } => {
                let result = match self.not_owner() {
                    Some(error) => Err(error),
                    None => {
                        let guard = self.batch_guard().await;
                        let result = self.replay(entry_id).await;
                        drop(guard);
                        result
                    }
                };
                self.refresh_dead_letters().await;
                let _ = reply.send(result);
            }
            Command::Read(read) => read(&*self.runner),
            Command::Publish => self.publish(|_| {}),
        }
    }

    /// Resets, then catches up to the head; the worker then goes on live.
    async fn rebuild(&mut self) -> Result<ProjectionReport, RunnerError> {
        self.publish(|s| s.state = WorkerState::Rebuilding);
        self.runner.reset().await?;
        self.publish(|s| {
            s.checkpoint = None;
            s.last_error = None;
        });
        let store = Arc::clone(&self.config.store);
        let report = pass(
            &mut *self.runner,
            &*store,
            self.config.batch_size,
            &self.shutdown,
        )
        .await;
        self.refresh_dead_letters().await;
        self.report.applied += report.applied;
        let checkpoint = self.runner.checkpoint().await.ok().flatten();
        self.publish(|s| s.checkpoint = checkpoint);
        Ok(report)
    }

    async fn replay(&mut self, entry_id: Option<i64>) -> Result<ReplayReport, RunnerError> {
        let ids = match entry_id {
            Some(id) => vec![id],
            None => {
                let mut entries = self.reads.unresolved_dead_letters().await?;
                entries.sort_by_key(|e| (e.position.unwrap_or(u64::MAX), e.id));
                entries.into_iter().map(|e| e.id).collect()
            }
        };
        let mut report = ReplayReport::default();
        for id in ids {
            if self.released(id).await {
                // Applied already: released with an entry replayed before it (park policy).
                report.replayed.push(id);
                continue;
            }
            match self.runner.replay_dead_letter(id).await {
                Ok(()) => report.replayed.push(id),
                Err(error) if error.kind() == FailureKind::Infrastructure => return Err(error),
                Err(error) if entry_id.is_some() => return Err(error),
                Err(error) => report.failed.push((id, error.to_string())),
            }
        }
        Ok(report)
    }
}

/// Ownership on a node of a cluster (nothing to do elsewhere).
impl Worker {
    /// Whether this worker may write now: always, outside a cluster; on a node, while the
    /// node holds the projection's lease. Otherwise it publishes `standby` and waits for the
    /// lease (or a command) before answering `false`.
    #[cfg(feature = "postgres")]
    async fn holds_lease(&mut self) -> bool {
        let Some(lease) = self.lease.as_mut() else {
            return true;
        };
        let state = lease.state.borrow_and_update().clone();
        let heartbeat = lease.heartbeat;
        let owner = state.view.clone();
        if let Some(fence) = state.usable_fence() {
            if self.runner.fence() != Some(fence) {
                tracing::info!(
                    projection = %self.runner.name(), node = fence.node(), token = fence.token(),
                    "this node owns the projection now",
                );
                self.runner.set_fence(Some(fence.clone()));
                self.publish(|s| {
                    if matches!(s.state, WorkerState::Standby { .. }) {
                        s.state = WorkerState::Starting;
                    }
                });
            }
            self.publish(|s| s.owner = Some(owner));
            return true;
        }
        if self.runner.fence().is_some() {
            tracing::info!(
                projection = %self.runner.name(), owner = ?owner.node,
                "this node no longer owns the projection; standing by",
            );
            self.runner.set_fence(None);
        }
        self.publish(|s| {
            s.state = WorkerState::Standby {
                owner: owner.node.clone(),
            };
            s.owner = Some(owner);
        });
        // A lease that lapsed here (no heartbeat got through) may be renewed without a
        // change of owner: look again after a heartbeat.
        let recheck = state.fence.is_some().then_some(heartbeat);
        self.idle(recheck).await;
        false
    }

    #[cfg(not(feature = "postgres"))]
    async fn holds_lease(&mut self) -> bool {
        true
    }

    /// Held while a batch runs, on a node of a cluster.
    #[cfg(feature = "postgres")]
    async fn batch_guard(&mut self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.lease {
            Some(lease) => Some(lease.batch_guard().await),
            None => None,
        }
    }

    #[cfg(not(feature = "postgres"))]
    async fn batch_guard(&mut self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        None
    }

    /// What a command that writes (a rebuild, a replay) answers on a node that does not own
    /// the projection.
    fn not_owner(&self) -> Option<RunnerError> {
        #[cfg(feature = "postgres")]
        if let Some(lease) = &self.lease
            && self.runner.fence().is_none()
        {
            return Some(RunnerError::NotOwner {
                projection: self.runner.name().to_owned(),
                owner: lease.state.borrow().view.node.clone(),
            });
        }
        None
    }

    /// Another node took the lease while this one wrote: nothing of the batch committed.
    async fn fenced(&mut self, error: &RunnerError) {
        let message = error_chain(error);
        tracing::warn!(projection = %self.runner.name(), error = %message, "fenced: another node owns the projection; standing by");
        self.runner.set_fence(None);
        #[cfg(feature = "postgres")]
        if let Some(lease) = &self.lease {
            lease.report_lost();
            let heartbeat = lease.heartbeat;
            self.publish(|s| {
                s.state = WorkerState::Standby { owner: None };
                s.last_error = Some(message);
            });
            self.idle(Some(heartbeat)).await;
        }
    }

    /// Whether entry `id` is resolved by now.
    async fn released(&mut self, id: i64) -> bool {
        matches!(
            self.reads.dead_letters().get_by_id(id).await,
            Ok(Some(entry)) if entry.status == crate::dlq::DLQStatus::Resolved
        )
    }
}

/// How far a version has got: 1 once live, else its checkpoint over the last measured head.
fn progress(snapshot: &ProjectionSnapshot, head: Option<u64>) -> Option<f64> {
    if snapshot.state == WorkerState::Live {
        return Some(1.0);
    }
    match (snapshot.checkpoint, head) {
        (_, Some(0)) => Some(1.0),
        (checkpoint, Some(head)) => Some((checkpoint.unwrap_or(0) as f64 / head as f64).min(1.0)),
        (_, None) => None,
    }
}

/// An error and its sources, as one line.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
