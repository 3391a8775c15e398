//! The coordinator: a supervisor that runs one worker task per projection. Each worker
//! catches up from its checkpoint, then follows the store live, at its own pace: a slow,
//! retrying, backing-off, paused or stopped projection never delays another. A
//! [`CoordinatorHandle`] reads status and steers the workers while they run.

mod backoff;
mod handle;
mod health;
mod report;
mod status;
pub(crate) mod worker;

pub use backoff::InfrastructureBackoff;
pub use handle::{CoordinatorHandle, Waited};
pub use health::{HealthReport, ProjectionHealth, ProjectionStatus};
pub use report::{CatchUpReport, ProjectionReport, RunReport};
pub use status::{ProjectionSnapshot, WorkerState};
pub use worker::ReplayReport;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::event::{AnyEvent, EventRegistry, RegistryError, UpcasterError};
use crate::join::join_all;
use crate::registry::{DispatchReport, ProjectionRegistry, RegisteredProjection};
use crate::runner::RunnerError;
use crate::storage::BoxFuture;
use crate::store::{EventStore, SharedReads};
use handle::{Running, WorkerLink};

/// Events the workers' shared reads keep by default.
const DEFAULT_SHARED_READS: usize = 20_000;
use worker::{Worker, WorkerConfig};

/// The coordinator's errors that are not one projection's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// No projection has this name (or type).
    #[error("no projection named `{0}` is registered")]
    UnknownProjection(String),
    /// The projection's worker has ended (shutdown or stop).
    #[error("the worker of projection `{0}` is not running")]
    NotRunning(String),
    /// The named projection failed.
    #[error(transparent)]
    Runner(Box<RunnerError>),
    /// Two event types of the program claim one wire name, so stored events of that name
    /// cannot be decoded and an event of one type would be taken for the other: nothing
    /// starts until each has a wire name of its own (`#[event(name = "...")]`).
    #[error("the projections refuse to start: {0}")]
    AmbiguousEventType(#[source] RegistryError),
    /// The upcasters of an event type are wrong (a gap in a chain, two for one version), so
    /// stored events of older versions could not be read: nothing starts until they are fixed.
    #[error("the projections refuse to start: {0}")]
    InvalidUpcasters(#[source] UpcasterError),
}

/// Refuses to start while two event types of the program claim one wire name, or the
/// upcasters of one are wrong.
pub(crate) fn refuse_if_ambiguous() -> Result<(), CoordinatorError> {
    EventRegistry::check_global().map_err(|conflict| {
        tracing::error!(
            event_type = %conflict.event_type, types = ?conflict.types,
            "the projections refuse to start: {conflict}",
        );
        CoordinatorError::AmbiguousEventType(conflict.clone())
    })?;
    EventRegistry::check_global_upcasters()
        .map_err(|problem| CoordinatorError::InvalidUpcasters(problem.clone()))
}

impl From<RunnerError> for CoordinatorError {
    fn from(error: RunnerError) -> Self {
        Self::Runner(Box::new(error))
    }
}

/// Feeds the projections of a [`ProjectionRegistry`] from an [`EventStore`].
///
/// - [`start`](Self::start): one worker task per projection, live until shut down; returns a
///   [`CoordinatorHandle`].
/// - [`run`](Self::run): the same until a token is cancelled, then the projections are back in
///   the registry.
/// - [`catch_up`](Self::catch_up), [`catchup`](Self::catchup),
///   [`rebuild_projection`](Self::rebuild_projection), [`rebuild_all`](Self::rebuild_all): one
///   pass to the store's head, concurrently, without workers.
///
/// ```standalone_crate
/// # use std::sync::Arc;
/// # use projections::{Envelope, Event, EventStore, ExpectedVersion, InMemoryEventStore, ProjectionRegistry, projection};
/// # use projections::coordinator::ProjectionCoordinator;
/// # #[derive(Clone, serde::Serialize, serde::Deserialize, Event)] struct Ping;
/// # #[derive(Default)] struct Pings(u32);
/// # #[projection] impl Pings { #[handles(Ping)] async fn on(&mut self, _e: &Envelope<Ping>) { self.0 += 1 } }
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let store = Arc::new(InMemoryEventStore::new());
/// let id = uuid::Uuid::new_v4();
/// store.append(id, ExpectedVersion::NoStream, vec![Envelope::new(id, Ping).into()]).await?;
///
/// let mut registry = ProjectionRegistry::new();
/// registry.register_projection(Pings::default())?;
/// let handle = ProjectionCoordinator::new(registry, store).start()?;
/// handle.wait_for_checkpoint("Pings", 1).await?;
/// assert_eq!(handle.read(|pings: &Pings| pings.0).await?, 1);
/// let report = handle.shutdown(std::time::Duration::from_secs(5)).await;
/// assert!(report.is_ok());
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct ProjectionCoordinator {
    registry: ProjectionRegistry,
    store: Arc<dyn EventStore>,
    batch_size: usize,
    poll_interval: Duration,
    backoff: InfrastructureBackoff,
    tracing: bool,
    /// Events the workers' shared reads keep (0: each worker reads alone).
    shared_reads: usize,
    #[cfg(feature = "postgres")]
    cluster: Option<crate::cluster::ClusterNode>,
}

impl ProjectionCoordinator {
    /// A coordinator with batches of 100 events and a 1 s poll interval.
    pub fn new(registry: ProjectionRegistry, store: Arc<dyn EventStore>) -> Self {
        Self {
            registry,
            store,
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            backoff: InfrastructureBackoff::default(),
            tracing: true,
            shared_reads: DEFAULT_SHARED_READS,
            #[cfg(feature = "postgres")]
            cluster: None,
        }
    }

    /// How many recently read events the workers share (20,000 by default; 0 turns sharing
    /// off): projections catching up over the same range then read the store about once
    /// between them, each at its own pace (see [`SharedReads`]). Sharing applies when two
    /// projections or more run.
    #[must_use]
    pub fn shared_reads(mut self, events: usize) -> Self {
        self.shared_reads = events;
        self
    }

    /// The stores `projections` workers read, one each: readers of one [`SharedReads`] when
    /// several projections run, else the store itself.
    fn worker_stores(&self, projections: usize) -> Vec<Arc<dyn EventStore>> {
        if self.shared_reads == 0 || projections < 2 {
            return vec![Arc::clone(&self.store); projections];
        }
        let shared = Arc::new(SharedReads::new(Arc::clone(&self.store), self.shared_reads));
        (0..projections)
            .map(|_| Arc::new(shared.reader()) as Arc<dyn EventStore>)
            .collect()
    }

    /// Runs the workers as one node of a cluster (feature `postgres`): each applies its
    /// projection only while this node holds the projection's lease, shared fairly with the
    /// other nodes running the same projections against the same database, and taken over
    /// when a node dies. See [`cluster`](crate::cluster) for what is guaranteed.
    ///
    /// Affects [`start`](Self::start) and [`run`](Self::run); the one-pass methods
    /// ([`catch_up`](Self::catch_up), the rebuilds) take no lease: run them on a stopped
    /// cluster.
    #[cfg(feature = "postgres")]
    #[must_use]
    pub fn cluster(mut self, node: crate::cluster::ClusterNode) -> Self {
        self.cluster = Some(node);
        self
    }

    /// Events read (and committed) at a time, at least 1.
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// How often a live worker looks for new events when the store does not notify (and as a
    /// safety net when it does).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How a worker waits out a failing infrastructure.
    #[must_use]
    pub fn infrastructure_backoff(mut self, backoff: InfrastructureBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Whether to open `tracing` spans.
    #[must_use]
    pub fn tracing(mut self, enabled: bool) -> Self {
        self.tracing = enabled;
        self
    }

    /// Events read (and committed) at a time.
    #[cfg(feature = "cli")]
    pub(crate) fn configured_batch_size(&self) -> usize {
        self.batch_size
    }

    /// On a node of a cluster: who holds each projection's lease now (owner, seconds left),
    /// read from the database; `None` outside a cluster or when it cannot be read.
    #[cfg(all(feature = "cli", feature = "postgres"))]
    pub(crate) async fn lease_holders(
        &self,
    ) -> Option<std::collections::HashMap<String, (String, f64)>> {
        let node = self.cluster.as_ref()?;
        let names: Vec<String> = self
            .registry
            .projections()
            .map(|p| p.name().to_owned())
            .collect();
        crate::cluster::holders(node, &names).await.ok()
    }

    /// The registry.
    pub fn registry(&self) -> &ProjectionRegistry {
        &self.registry
    }

    /// The registry, mutably.
    pub fn registry_mut(&mut self) -> &mut ProjectionRegistry {
        &mut self.registry
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Delivers `events` (not read from the store) to the registry, in order; returns the
    /// number of applications (an event applied by two projections counts twice) and every
    /// outcome. Events without a position are delivered at least once: see "Push mode" in
    /// the [runner documentation](crate::runner).
    pub async fn dispatch_events(&mut self, events: &[AnyEvent]) -> (u64, DispatchReport) {
        let report = self.registry.dispatch_many(events).await;
        (report.applied(), report)
    }

    /// Starts one worker task per projection and returns the handle. Needs a tokio runtime
    /// (with time enabled).
    ///
    /// Refuses to start, with [`CoordinatorError::AmbiguousEventType`] naming the Rust types,
    /// while two event types of the program claim one wire name.
    pub fn start(mut self) -> Result<CoordinatorHandle, CoordinatorError> {
        refuse_if_ambiguous()?;
        let projections = self.registry.take_projections();
        Ok(self.spawn(projections, CancellationToken::new()))
    }

    fn spawn(
        &self,
        projections: Vec<Box<dyn RegisteredProjection>>,
        shutdown: CancellationToken,
    ) -> CoordinatorHandle {
        let mut stores = self.worker_stores(projections.len());
        let config = WorkerConfig {
            store: Arc::clone(&self.store),
            batch_size: self.batch_size,
            poll_interval: self.poll_interval,
            backoff: self.backoff,
        };
        let mut workers = Vec::with_capacity(projections.len());
        let mut tasks = Vec::with_capacity(projections.len());
        #[cfg(feature = "postgres")]
        let (mut leases, cluster) = match &self.cluster {
            Some(node) => {
                let names: Vec<String> = projections.iter().map(|p| p.name().to_owned()).collect();
                let (membership, leases, view) =
                    crate::cluster::Membership::new(node.clone(), &names);
                let task = tokio::spawn(membership.run(shutdown.clone()));
                let link = crate::cluster::ClusterLink {
                    view,
                    task: Mutex::new(Some(task)),
                };
                (leases.into_iter().map(Some).collect::<Vec<_>>(), Some(link))
            }
            None => (Vec::new(), None),
        };
        #[cfg(feature = "postgres")]
        leases.reverse();
        for runner in projections {
            let name = runner.name().to_owned();
            let runner_type = (*runner).as_any().type_id();
            let (commands, receiver) = mpsc::unbounded_channel();
            let mut snapshot = status::ProjectionSnapshot::new(&name);
            snapshot.version = runner.version();
            let (status, watcher) = watch::channel(snapshot);
            let mut worker_config = config.clone();
            if let Some(store) = stores.pop() {
                worker_config.store = store;
            }
            let worker = Worker::new(runner, worker_config, receiver, status, shutdown.clone());
            #[cfg(feature = "postgres")]
            let worker = match leases.pop().flatten() {
                Some(lease) => worker.leased(lease),
                None => worker,
            };
            let task = if self.tracing {
                let span = tracing::info_span!("projection.worker", projection = %name);
                tokio::spawn(worker.run().instrument(span))
            } else {
                tokio::spawn(worker.run())
            };
            tasks.push((name.clone(), task));
            workers.push(WorkerLink {
                name,
                runner_type,
                commands,
                status: watcher,
            });
        }
        CoordinatorHandle {
            running: Arc::new(Running {
                workers,
                shutdown,
                tasks: Mutex::new(tasks),
                #[cfg(feature = "postgres")]
                cluster,
            }),
        }
    }

    /// Runs every projection in its own worker (as [`start`](Self::start)) until `shutdown`
    /// is cancelled; each finishes its batch in hand. The projections are then back in the
    /// registry. Returns what each did.
    ///
    /// Refuses to start, at once, as [`start`](Self::start) does.
    pub async fn run(
        &mut self,
        shutdown: CancellationToken,
    ) -> Result<RunReport, CoordinatorError> {
        refuse_if_ambiguous()?;
        let projections = self.registry.take_projections();
        let handle = self.spawn(projections, shutdown.child_token());
        shutdown.cancelled().await;
        let mut reports = Vec::new();
        let mut runners = Vec::new();
        for (_, report, runner) in handle.shutdown_workers(None).await {
            reports.push(report);
            runners.extend(runner);
        }
        self.registry.restore_projections(runners);
        Ok(RunReport {
            projections: reports,
        })
    }

    /// One pass: every projection reads from its checkpoint to the store's head,
    /// concurrently.
    ///
    /// Refuses to start as [`start`](Self::start) does; a projection's failure is in its
    /// report, not an error.
    pub async fn catch_up_all(&mut self) -> Result<CatchUpReport, CoordinatorError> {
        refuse_if_ambiguous()?;
        let stores = self.worker_stores(self.registry.projection_count());
        let batch_size = self.batch_size;
        let never = CancellationToken::new();
        let never = &never;
        let span = self.tracing.then(|| {
            tracing::info_span!(
                "projection.coordinate",
                projections = self.registry.projection_count()
            )
        });
        let work: Vec<BoxFuture<'_, ProjectionReport>> = self
            .registry
            .projections_mut()
            .zip(&stores)
            .map(|(projection, store)| {
                let future: BoxFuture<'_, _> =
                    Box::pin(worker::pass(&mut **projection, &**store, batch_size, never));
                future
            })
            .collect();
        let projections = match span {
            Some(span) => join_all(work, None).instrument(span).await,
            None => join_all(work, None).await,
        };
        Ok(CatchUpReport { projections })
    }

    /// The former name of [`catch_up_all`](Self::catch_up_all) (beside `catchup(name)`,
    /// the Python library's name for one projection, it read as a typo).
    #[deprecated(note = "renamed `catch_up_all`, as `rebuild_all`")]
    pub async fn catch_up(&mut self) -> Result<CatchUpReport, CoordinatorError> {
        self.catch_up_all().await
    }

    /// Catches up one projection from its checkpoint (no reset).
    pub async fn catchup(&mut self, name: &str) -> Result<ProjectionReport, CoordinatorError> {
        refuse_if_ambiguous()?;
        let store = &*self.store;
        let batch_size = self.batch_size;
        let projection = self
            .registry
            .get_mut(name)
            .ok_or_else(|| CoordinatorError::UnknownProjection(name.to_owned()))?;
        Ok(worker::pass(
            &mut **projection,
            store,
            batch_size,
            &CancellationToken::new(),
        )
        .await)
    }

    /// Resets one projection (checkpoint, halt and read model) and replays the store from the
    /// beginning.
    ///
    /// A partitioned projection is reset whole (`name` may be the projection's or one
    /// partition's) and every partition registered here replays: the report adds them up.
    pub async fn rebuild_projection(
        &mut self,
        name: &str,
    ) -> Result<ProjectionReport, CoordinatorError> {
        refuse_if_ambiguous()?;
        let base = crate::runner::Partition::parse(name).map_or(name, |(base, _)| base);
        let partitions: Vec<String> = self
            .registry
            .projections()
            .map(|p| p.name().to_owned())
            .filter(|n| crate::runner::Partition::parse(n).is_some_and(|(b, _)| b == base))
            .collect();
        if partitions.is_empty() {
            let projection = self
                .registry
                .get_mut(name)
                .ok_or_else(|| CoordinatorError::UnknownProjection(name.to_owned()))?;
            projection.reset().await?;
            return self.catchup(name).await;
        }
        if let Some(first) = self.registry.get_mut(&partitions[0]) {
            first.reset().await?;
        }
        let mut total = ProjectionReport::named(base);
        for partition in &partitions {
            let report = self.catchup(partition).await?;
            total.applied += report.applied;
            total.skipped += report.skipped;
            total.not_subscribed += report.not_subscribed;
            total.live_only_passed += report.live_only_passed;
            total.failed += report.failed;
            total.dead_lettered.extend(report.dead_lettered);
            total.stopped = total.stopped.or(report.stopped);
            total.error = total.error.or(report.error);
        }
        Ok(total)
    }

    /// Resets every projection and replays the store from the beginning.
    ///
    /// Refuses to start (and resets nothing) as [`start`](Self::start) does.
    pub async fn rebuild_all(&mut self) -> Result<CatchUpReport, CoordinatorError> {
        refuse_if_ambiguous()?;
        let mut failed_resets = Vec::new();
        for (name, result) in self.registry.reset_all().await {
            if let Err(error) = result {
                failed_resets.push((name, error));
            }
        }
        let mut report = self.catch_up_all().await?;
        for (name, error) in failed_resets {
            if let Some(entry) = report.projections.iter_mut().find(|p| p.name == name) {
                entry.error = Some(error);
            }
        }
        Ok(report)
    }

    /// The status, checkpoint, lag and dead-letter count of every projection, read from
    /// storage. The future is `Send`: it holds nothing of the registry.
    pub fn health_check(&self) -> impl std::future::Future<Output = HealthReport> + Send + '_ {
        let projections: Vec<_> = self
            .registry
            .projections()
            .map(|p| (p.reads(), p.halt().cloned()))
            .collect();
        let store = &*self.store;
        async move {
            let mut health = Vec::with_capacity(projections.len());
            for (reads, halt) in projections {
                health.push(health::health_of(&reads, halt.as_ref(), store).await);
            }
            HealthReport::new(health)
        }
    }
}
