//! The coordinator: feeds each registered projection from the event store, in batches, each
//! at its own pace; rebuilds; live tailing; health.

mod health;

pub use health::{HealthReport, ProjectionHealth, ProjectionStatus};

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::event::AnyEvent;
use crate::join::join_all;
use crate::registry::{DispatchReport, ProjectionRegistry, RegisteredProjection};
use crate::runner::RunnerError;
use crate::storage::BoxFuture;
use crate::store::EventStore;

/// The coordinator's errors that are not one projection's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// No projection has this name.
    #[error("no projection named `{0}` is registered")]
    UnknownProjection(String),
    /// The named projection failed.
    #[error(transparent)]
    Runner(#[from] RunnerError),
}

/// What each projection did in one pass over the store.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct CatchUpReport {
    /// Per projection, in registration order: events applied, or the error that ended its pass.
    pub projections: Vec<(String, Result<u64, RunnerError>)>,
}

impl CatchUpReport {
    /// Events applied over all projections.
    pub fn applied(&self) -> u64 {
        self.projections
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .sum()
    }

    /// Whether every projection finished its pass.
    pub fn is_ok(&self) -> bool {
        self.projections.iter().all(|(_, r)| r.is_ok())
    }

    /// The projections that did not finish, with why.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &RunnerError)> {
        self.projections
            .iter()
            .filter_map(|(name, r)| r.as_ref().err().map(|e| (name.as_str(), e)))
    }
}

/// Feeds the projections of a [`ProjectionRegistry`] from an [`EventStore`].
///
/// Each projection reads the store from its own checkpoint in batches of `batch_size`, and the
/// projections run concurrently: a slow or failing one never holds back the others.
///
/// ```
/// # use std::sync::Arc;
/// # use projections::{Envelope, Event, EventStore, ExpectedVersion, InMemoryEventStore, ProjectionRegistry, projection};
/// # use projections::coordinator::ProjectionCoordinator;
/// # #[derive(Clone, serde::Serialize, serde::Deserialize, Event)] struct Ping;
/// # #[derive(Default)] struct Pings(u32);
/// # #[projection] impl Pings { #[handles(Ping)] async fn on(&mut self, _e: &Envelope<Ping>) { self.0 += 1 } }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = Arc::new(InMemoryEventStore::new());
/// let id = uuid::Uuid::new_v4();
/// store.append(id, ExpectedVersion::NoStream, vec![Envelope::new(id, Ping).into()]).await?;
///
/// let mut registry = ProjectionRegistry::new();
/// registry.register_projection(Pings::default())?;
/// let mut coordinator = ProjectionCoordinator::new(registry, store).batch_size(500);
/// let report = coordinator.catch_up().await;
/// assert_eq!(report.applied(), 1);
/// assert_eq!(coordinator.registry().projection::<Pings>().unwrap().0, 1);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct ProjectionCoordinator {
    registry: ProjectionRegistry,
    store: Arc<dyn EventStore>,
    batch_size: usize,
    poll_interval: Duration,
    tracing: bool,
}

impl ProjectionCoordinator {
    /// A coordinator with batches of 100 events and a 1 s poll interval.
    pub fn new(registry: ProjectionRegistry, store: Arc<dyn EventStore>) -> Self {
        Self {
            registry,
            store,
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            tracing: true,
        }
    }

    /// Events read (and checkpointed) at a time, at least 1.
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// How often [`run`](Self::run) looks for new events when the store does not notify.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Whether to open `tracing` spans.
    #[must_use]
    pub fn tracing(mut self, enabled: bool) -> Self {
        self.tracing = enabled;
        self
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
    /// outcome.
    pub async fn dispatch_events(&mut self, events: &[AnyEvent]) -> (u64, DispatchReport) {
        let report = self.registry.dispatch_many(events).await;
        (report.applied(), report)
    }

    /// One pass: every projection reads from its checkpoint to the store's head, concurrently.
    pub async fn catch_up(&mut self) -> CatchUpReport {
        self.catch_up_until(&CancellationToken::new()).await
    }

    async fn catch_up_until(&mut self, shutdown: &CancellationToken) -> CatchUpReport {
        let store = &*self.store;
        let batch_size = self.batch_size;
        let span = self.tracing.then(|| {
            tracing::debug_span!(
                "projection.coordinate",
                projections = self.registry.projection_count()
            )
        });
        let work: Vec<BoxFuture<'_, (String, Result<u64, RunnerError>)>> = self
            .registry
            .projections_mut()
            .map(|projection| {
                let future: BoxFuture<'_, _> = Box::pin(async move {
                    let result = catch_up_one(&mut **projection, store, batch_size, shutdown).await;
                    (projection.name().to_owned(), result)
                });
                future
            })
            .collect();
        let projections = match span {
            Some(span) => join_all(work, None).instrument(span).await,
            None => join_all(work, None).await,
        };
        CatchUpReport { projections }
    }

    /// Catches up one projection from its checkpoint (no reset); returns events applied.
    pub async fn catchup(&mut self, name: &str) -> Result<u64, CoordinatorError> {
        let store = &*self.store;
        let batch_size = self.batch_size;
        let projection = self
            .registry
            .get_mut(name)
            .ok_or_else(|| CoordinatorError::UnknownProjection(name.to_owned()))?;
        Ok(catch_up_one(
            &mut **projection,
            store,
            batch_size,
            &CancellationToken::new(),
        )
        .await?)
    }

    /// Resets one projection (checkpoint and read model) and replays the store from the
    /// beginning; returns events applied.
    pub async fn rebuild_projection(&mut self, name: &str) -> Result<u64, CoordinatorError> {
        let projection = self
            .registry
            .get_mut(name)
            .ok_or_else(|| CoordinatorError::UnknownProjection(name.to_owned()))?;
        projection.reset().await?;
        self.catchup(name).await
    }

    /// Resets every projection and replays the store from the beginning.
    pub async fn rebuild_all(&mut self) -> CatchUpReport {
        let mut failed_resets = Vec::new();
        for (name, result) in self.registry.reset_all().await {
            if let Err(error) = result {
                failed_resets.push((name, error));
            }
        }
        let mut report = self.catch_up().await;
        for (name, error) in failed_resets {
            if let Some(entry) = report.projections.iter_mut().find(|(n, _)| *n == name) {
                entry.1 = Err(error);
            }
        }
        report
    }

    /// The status, checkpoint, lag and dead-letter count of every projection.
    pub async fn health_check(&self) -> HealthReport {
        let store = &*self.store;
        let mut projections = Vec::with_capacity(self.registry.projection_count());
        for projection in self.registry.projections() {
            projections.push(health_of(projection, store).await);
        }
        HealthReport::new(projections)
    }

    /// Catches up, then follows the store live (woken by its notifications, or every
    /// `poll_interval`) until `shutdown` is cancelled. A batch in hand is finished before
    /// returning. Projection failures are logged and reported by [`health_check`](Self::health_check);
    /// a stopped projection stays stopped, the others go on.
    pub async fn run(&mut self, shutdown: CancellationToken) {
        let mut notifications = self.store.subscribe();
        loop {
            let report = self.catch_up_until(&shutdown).await;
            for (name, error) in report.failures() {
                tracing::error!(projection = name, %error, "projection pass failed");
            }
            if shutdown.is_cancelled() {
                return;
            }
            // A pass can end short of an announced append: a database store never reads past a
            // transaction still in flight anywhere. Then look again soon rather than waiting
            // for the next notification or the poll interval.
            let announced = notifications.as_ref().map_or(0, |r| *r.borrow());
            let wait = if self.behind(announced).await {
                self.poll_interval.min(HORIZON_RETRY)
            } else {
                self.poll_interval
            };
            let changed = async {
                match notifications.as_mut() {
                    Some(receiver) => {
                        if receiver.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = changed => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Whether a projection that is not stopped has its checkpoint below `position`.
    async fn behind(&mut self, position: u64) -> bool {
        if position == 0 {
            return false;
        }
        for projection in self.registry.projections_mut() {
            if projection.stopped().is_some() {
                continue;
            }
            match projection.checkpoint().await {
                Ok(checkpoint) if checkpoint.unwrap_or(0) >= position => {}
                _ => return true,
            }
        }
        false
    }
}

/// How soon [`ProjectionCoordinator::run`] looks again when a pass ended short of an
/// announced append.
const HORIZON_RETRY: Duration = Duration::from_millis(50);

async fn catch_up_one(
    projection: &mut dyn RegisteredProjection,
    store: &dyn EventStore,
    batch_size: usize,
    shutdown: &CancellationToken,
) -> Result<u64, RunnerError> {
    let mut after = projection.checkpoint().await?.unwrap_or(0);
    let mut applied = 0;
    while !shutdown.is_cancelled() {
        let events =
            store
                .read_all(after, batch_size)
                .await
                .map_err(|source| RunnerError::Storage {
                    projection: projection.name().to_owned(),
                    source,
                })?;
        let Some(last) = events.last().and_then(|e| e.position()) else {
            break;
        };
        let outcome = projection.handle_stored(&events).await?;
        applied += outcome.applied;
        after = after.max(last);
        if events.len() < batch_size {
            break;
        }
    }
    Ok(applied)
}

async fn health_of(
    projection: &dyn RegisteredProjection,
    store: &dyn EventStore,
) -> ProjectionHealth {
    let name = projection.name().to_owned();
    let state = async {
        let checkpoint = projection.checkpoint_data().await?;
        let lag = projection.lag_metrics(store).await?;
        let dead_letters = projection.dead_letter_count().await?;
        Ok::<_, RunnerError>((checkpoint, lag, dead_letters))
    };
    match state.await {
        Ok((checkpoint, lag, dead_letters)) => ProjectionHealth {
            status: ProjectionStatus::of(projection.stopped(), dead_letters, &lag),
            name,
            checkpoint,
            lag: Some(lag),
            dead_letters,
        },
        Err(error) => ProjectionHealth {
            status: match projection.stopped() {
                Some(at) => ProjectionStatus::Stopped {
                    reason: at.to_string(),
                },
                None => ProjectionStatus::Unknown {
                    error: error.to_string(),
                },
            },
            name,
            checkpoint: None,
            lag: None,
            dead_letters: 0,
        },
    }
}
