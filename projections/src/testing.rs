//! Testing your projections (cargo feature `testing`): given these events, when the projection
//! runs, then its read model (or its rows) and its dead letters are what you expect; and two
//! properties every projection should have: a rebuild equals incremental processing, and
//! redelivery changes nothing.
//!
//! Events go through the real runtime: an [`InMemoryEventStore`] gives them positions, and a
//! [`ProjectionCoordinator`] runs the projection's runner, so skips, retries, dead letters and
//! checkpoints behave as in production. Retries are off by default ([`NoRetryPolicy`]), so a
//! failing event is dead-lettered at once.
//!
//! ```rust,standalone_crate
//! use projections::testing::{given, event};
//! use projections::{Envelope, Event, projection};
//! # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Event)]
//! # struct Deposited { cents: i64 }
//! #[derive(Default, Debug, PartialEq, Clone)]
//! struct Balance(i64);
//!
//! #[projection(name = "balance")]
//! impl Balance {
//!     #[handles(Deposited)]
//!     async fn deposited(&mut self, e: &Envelope<Deposited>) -> Result<(), String> {
//!         if e.cents < 0 { return Err("negative deposit".into()); }
//!         self.0 += e.cents;
//!         Ok(())
//!     }
//!     #[reset]
//!     async fn clear(&mut self) { self.0 = 0; }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let account = uuid::Uuid::new_v4();
//! let events = vec![
//!     event(account, Deposited { cents: 5 }),
//!     event(account, Deposited { cents: -1 }),
//!     event(account, Deposited { cents: 7 }),
//! ];
//! let outcome = given(events.clone()).when(Balance::default()).await;
//! assert_eq!(outcome.read_model().0, 12);
//! assert_eq!(outcome.dead_letters().len(), 1);
//!
//! projections::testing::rebuild_equals_incremental(Balance::default, &events, |b| b.0).await;
//! projections::testing::redelivery_changes_nothing(Balance::default, &events, |b| b.0).await;
//! # });
//! ```

use std::fmt::Debug;
use std::sync::Arc;

use uuid::Uuid;

use crate::coordinator::{ProjectionCoordinator, ProjectionReport};
use crate::dlq::{DLQEntry, DLQFilter};
use crate::event::{AnyEvent, Envelope, Event};
use crate::memory::InMemoryEventStore;
use crate::projection::{DatabaseProjection, Projection};
use crate::registry::ProjectionRegistry;
use crate::retry::NoRetryPolicy;
use crate::runner::{CommitStrategy, ProjectionRunner, Runner};
use crate::store::{EventStore, ExpectedVersion, StoredEvent};

/// An event of `payload` on aggregate `aggregate_id`, ready to append.
pub fn event<E: Event>(aggregate_id: Uuid, payload: E) -> AnyEvent {
    Envelope::new(aggregate_id, payload).into()
}

/// The events a scenario starts from, in order.
#[derive(Debug, Clone)]
pub struct Given {
    events: Vec<AnyEvent>,
    batch_size: usize,
}

/// Starts a scenario from `events` (appended in this order, each to its own aggregate's
/// stream).
pub fn given(events: impl IntoIterator<Item = AnyEvent>) -> Given {
    Given {
        events: events.into_iter().collect(),
        batch_size: 100,
    }
}

impl Given {
    /// Events read and committed at a time (default 100).
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Runs `projection` over the events in a [`ProjectionRunner`] with in-memory storage and
    /// no retries.
    pub async fn when<P: Projection + 'static>(
        self,
        projection: P,
    ) -> Outcome<P, crate::runner::Repositories> {
        let runner = ProjectionRunner::new(projection).retry_policy(NoRetryPolicy);
        self.when_run(runner).await
    }

    /// Runs `runner` (any runner: a [`TransactionalRunner`](crate::transactional::TransactionalRunner)
    /// over your test database, a runner with your retry policy) over the events.
    ///
    /// # Panics
    ///
    /// If the events cannot be appended (two events with one id, say): the scenario is wrong.
    pub async fn when_run<P, S>(self, runner: Runner<P, S>) -> Outcome<P, S>
    where
        P: DatabaseProjection + 'static,
        S: CommitStrategy<Connection = P::Connection>,
    {
        let store = Arc::new(InMemoryEventStore::new());
        append_all(&store, &self.events).await;
        let name = runner.name().to_owned();
        let reads = runner.reads();
        let mut registry = ProjectionRegistry::new();
        #[allow(clippy::expect_used)] // one projection: no duplicate name
        registry
            .register(runner)
            .expect("a registry of one projection");
        let mut coordinator =
            ProjectionCoordinator::new(registry, store).batch_size(self.batch_size);
        let mut report = match coordinator.catch_up_all().await {
            Ok(report) => report,
            #[allow(clippy::panic)]
            Err(error) => panic!("the scenario cannot run: {error}"),
        };
        let report = report.projections.remove(0);
        let dead_letters = reads
            .dead_letters()
            .get_failed_events(DLQFilter::all().projection(name))
            .await
            .unwrap_or_default();
        Outcome {
            coordinator,
            report,
            dead_letters,
            _runner: std::marker::PhantomData,
        }
    }
}

/// What a scenario did.
pub struct Outcome<P, S> {
    coordinator: ProjectionCoordinator,
    report: ProjectionReport,
    dead_letters: Vec<DLQEntry>,
    _runner: std::marker::PhantomData<fn() -> (P, S)>,
}

impl<P, S> Outcome<P, S>
where
    P: DatabaseProjection + 'static,
    S: CommitStrategy<Connection = P::Connection>,
{
    /// The runner, after the events.
    ///
    /// # Panics
    ///
    /// Never: the scenario registered exactly this runner.
    pub fn runner(&self) -> &Runner<P, S> {
        #[allow(clippy::expect_used)]
        self.coordinator
            .registry()
            .runner_of::<Runner<P, S>>()
            .expect("the scenario's runner")
    }

    /// The projection (its read model), after the events.
    pub fn read_model(&self) -> &P {
        self.runner().projection()
    }

    /// Runs `check` on the read model; for chaining.
    #[must_use]
    pub fn then(self, check: impl FnOnce(&P)) -> Self {
        check(self.read_model());
        self
    }

    /// What the run did: applied, skipped, dead-lettered, stopped.
    pub fn report(&self) -> &ProjectionReport {
        &self.report
    }

    /// The dead-letter entries the run wrote, oldest first.
    pub fn dead_letters(&self) -> &[DLQEntry] {
        &self.dead_letters
    }
}

async fn append_all(store: &InMemoryEventStore, events: &[AnyEvent]) {
    for event in events {
        let aggregate = event.metadata().aggregate_id;
        if let Err(error) = store
            .append(aggregate, ExpectedVersion::Any, vec![event.clone()])
            .await
        {
            #[allow(clippy::panic)]
            {
                panic!("the scenario's events cannot be appended: {error}");
            }
        }
    }
}

/// The events as a store gives them back: with positions.
async fn stored(events: &[AnyEvent]) -> (Arc<InMemoryEventStore>, Vec<AnyEvent>) {
    let store = Arc::new(InMemoryEventStore::new());
    append_all(&store, events).await;
    let read = store
        .read_all(0, usize::MAX)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|stored| match stored {
            StoredEvent::Event(event) => Some(event),
            StoredEvent::Undecodable(_) => None,
        })
        .collect();
    (store, read)
}

/// Checks that processing `events`, resetting, and processing them again in one pass gives
/// the same read model (as `state` sees it) as processing them incrementally in batches of
/// every size from 1 to the number of events, appended in chunks split at random places.
/// Failing events go to the dead-letter queue in both.
///
/// # Panics
///
/// When they differ, naming the batch size.
pub async fn rebuild_equals_incremental<P, T>(
    make: impl Fn() -> P,
    events: &[AnyEvent],
    state: impl Fn(&P) -> T,
) where
    P: Projection + 'static,
    T: PartialEq + Debug,
{
    let (store, _) = stored(events).await;
    // Built once, then rebuilt: the reset must clear everything the first pass built.
    let mut rebuilt = single(make(), &store, events.len().max(1)).await;
    passed(rebuilt.catch_up_all().await);
    passed(rebuilt.rebuild_all().await);
    let expected = state(projection_of::<P>(&rebuilt));
    let mut rng = fastrand::Rng::with_seed(events.len() as u64);
    for batch_size in 1..=events.len().max(1) {
        // Appended in chunks of random size, caught up after each.
        let incremental_store = Arc::new(InMemoryEventStore::new());
        let mut coordinator = single(make(), &incremental_store, batch_size).await;
        let mut rest = events;
        while !rest.is_empty() {
            let take = rng.usize(1..=rest.len());
            append_all(&incremental_store, &rest[..take]).await;
            rest = &rest[take..];
            passed(coordinator.catch_up_all().await);
        }
        let actual = state(projection_of::<P>(&coordinator));
        assert_eq!(
            actual, expected,
            "batches of {batch_size}: incremental processing differs from a rebuild"
        );
    }
}

/// Checks that delivering `events` again (all of them, then each alone), after they were
/// processed, changes nothing in the read model (as `state` sees it) and runs no handler.
///
/// # Panics
///
/// When redelivery changes the read model.
pub async fn redelivery_changes_nothing<P, T>(
    make: impl Fn() -> P,
    events: &[AnyEvent],
    state: impl Fn(&P) -> T,
) where
    P: Projection + 'static,
    T: PartialEq + Debug,
{
    let (store, positioned) = stored(events).await;
    let mut coordinator = single(make(), &store, 100).await;
    passed(coordinator.catch_up_all().await);
    let expected = state(projection_of::<P>(&coordinator));
    let _ = coordinator.dispatch_events(&positioned).await;
    assert_eq!(
        state(projection_of::<P>(&coordinator)),
        expected,
        "delivering every event again changed the read model"
    );
    for event in &positioned {
        let _ = coordinator
            .dispatch_events(std::slice::from_ref(event))
            .await;
        assert_eq!(
            state(projection_of::<P>(&coordinator)),
            expected,
            "delivering event {} ({}) again changed the read model",
            event.event_id(),
            event.event_type()
        );
    }
}

async fn single<P: Projection + 'static>(
    projection: P,
    store: &Arc<InMemoryEventStore>,
    batch_size: usize,
) -> ProjectionCoordinator {
    let mut registry = ProjectionRegistry::new();
    #[allow(clippy::expect_used)] // one projection: no duplicate name
    registry
        .register(ProjectionRunner::new(projection).retry_policy(NoRetryPolicy))
        .expect("a registry of one projection");
    ProjectionCoordinator::new(registry, Arc::clone(store) as Arc<dyn EventStore>)
        .batch_size(batch_size)
}

fn projection_of<P: Projection + 'static>(coordinator: &ProjectionCoordinator) -> &P {
    #[allow(clippy::expect_used)] // `single` registered exactly this runner
    coordinator
        .registry()
        .projection::<P>()
        .expect("the projection under test")
}

/// A pass that could not run at all (two event types of one wire name) fails the check.
fn passed<T>(pass: Result<T, crate::coordinator::CoordinatorError>) {
    if let Err(error) = pass {
        #[allow(clippy::panic)]
        {
            panic!("the projection cannot run: {error}");
        }
    }
}
