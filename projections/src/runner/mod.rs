//! The runner: checkpoint tracking around a projection. Skip what is done, retry what fails,
//! tell failures apart, dead-letter or stop when the retry policy gives up, record progress.
//!
//! There is one runner, [`Runner`], and two ways of committing ([`CommitStrategy`]):
//!
//! | | [`ProjectionRunner`] (`Runner<P, Repositories>`) | [`TransactionalRunner`](crate::transactional::TransactionalRunner) (`Runner<P, Arc<U>>`) |
//! |---|---|---|
//! | handlers | take no connection | may take the batch's connection |
//! | a batch | handlers run, then one checkpoint write | one transaction: handlers, checkpoint, dead letters |
//! | after a crash | **at least once**: the events of the batch in hand (up to the batch size) whose checkpoint was not written are applied again | **exactly once**: a batch commits whole or not at all |
//! | a dead letter | written, then the checkpoint moves (a crash in between dead-letters the event again, same entry) | in the checkpoint's transaction |
//!
//! What happens to a failure depends on whose fault it is ([`FailureKind`]):
//! - the **event's** (the handler rejects it, it does not decode, the handler panics): the
//!   retry policy, then the [`FailurePolicy`]: dead letter and move past it, or stop before it;
//! - the **infrastructure's** (connection lost, database restarting, serialization failure):
//!   never dead-lettered, the checkpoint does not move; the runner returns
//!   [`RunnerError::Infrastructure`] (or a storage error of that kind) and the caller (the
//!   coordinator's worker) waits and tries the batch again;
//! - the **setup's** (missing table, permission denied): the projection stops before the event,
//!   durably, with the error; nothing is dead-lettered.
//!
//! A stop or a pause is stored with the checkpoint and survives a restart: a runner that
//! starts halted applies nothing until [`Runner::resume`].
//!
//! **Push mode.** Events handed in without a store position (through
//! [`ProjectionRegistry::dispatch`](crate::ProjectionRegistry::dispatch) or
//! [`dispatch_many`](crate::ProjectionRegistry::dispatch_many), or [`Runner::handle`] with
//! an event that was never appended) cannot be compared with the checkpoint. For them the
//! runner guarantees only this:
//! - an event whose id is that of the last event the runner moved past (applied, passed over
//!   or dead-lettered) is skipped: the immediate repeat, such as a delivery retried by the
//!   caller, or the same event twice in a row in one `dispatch_many`;
//! - any other repeat runs the handler again (at least once): the runner keeps no history
//!   of ids;
//! - the last event id lives in the runner; the stored checkpoint does not record it for an
//!   event without a position, so after a restart even the immediate repeat runs again.
//!
//! For exactly-once effects append events to an [`EventStore`] and let the coordinator read
//! them (a position is the identity of progress); otherwise make push-mode handlers
//! idempotent.
//!
//! **Set-based handlers** (`events: &[Envelope<E>]`): within a batch, each run of consecutive
//! events of the handler's type that the runner would apply goes to it in one call
//! ([`DatabaseProjection::handle_set`](crate::DatabaseProjection::handle_set)), in order; the
//! run ends at any other item. When the call fails the runner cannot tell which event is at
//! fault, so it narrows the run down: the events before it are committed, the run's first half
//! is tried on its own, and so on, each try in a commit of its own (a fresh transaction for a
//! transactional runner), until one event fails alone. That event, and only it, meets the
//! retry and failure policies; the others are applied exactly once (transactional) or at
//! least once (with [`Repositories`], whose failed calls may have done part of their work).
//! Trying halves is not retrying: the retry policy counts the attempts of the event alone. A
//! panic is a failure like any other. With [`EventOrder::PerAggregate`], a transactional
//! runner may gather the events of each type across a batch (see [`EventOrder`]).
//!
//! **Live-only handlers** (`#[handles(E, live_only)]`) do not run for replayed events: those
//! at or below the projection's *replay horizon*, stored with its checkpoint. On a first
//! start (no checkpoint, or one at position 0) the horizon is the store's head then (its last
//! readable position); on a rebuild ([`Runner::reset`]) it is the furthest the projection had
//! got, its checkpoint or horizon before the reset, so that the events it had already passed
//! are replayed and those it had not reached run their live-only handler once. Every other
//! event is live, including events without a position (push mode). The coordinator takes the
//! horizon before each batch it reads ([`Runner::prepare_replay`]); it is stored before the
//! first event is applied, so a process that dies in the middle of a replay comes back to the
//! same horizon. A replayed event counts in [`BatchOutcome::live_only_passed`]; the checkpoint
//! moves past it. A dead letter replayed by an operator runs its handler, live-only or not.
//! Stores that keep no horizon (the default of
//! [`CheckpointRepository::set_replay_horizon`](crate::CheckpointRepository::set_replay_horizon))
//! refuse to run a projection with live-only handlers from nothing, with a setup error.
//!
//! **Spans** (when [`tracing`](Runner::tracing) is on): `projection.batch` at INFO around
//! each batch (`projection`, `events`, `applied`, `skipped`, `not_subscribed`, `other_tenant`,
//! `dead_lettered`, `failed`, `checkpoint`, `checkpoint_written`, `error`);
//! `projection.handle` (`projection`, `event_type`, `event_id`, `position`, `handler`,
//! `attempts`, `outcome`) and `projection.handler` (`handler`, `attempt`) at DEBUG per event,
//! `projection.handle_set` (`projection`, `event_type`, `events`, `first_position`,
//! `last_position`) at DEBUG per call of a set-based handler,
//! so a service logging at INFO records one span per batch, not per event.

mod batch;
mod builder;
mod gather;
mod item;
mod live;
mod outcome;
pub(crate) mod panic;
mod park;
mod partition;
mod progress;
pub(crate) mod reads;
mod replay;
mod set;
mod step;
mod strategy;

pub use builder::RunnerBuilder;
pub use gather::EventOrder;
pub use item::BatchItem;
pub use outcome::{BatchOutcome, EventOutcome, RunnerError, StoppedAt};
pub use partition::Partition;
pub use reads::RunnerReads;
pub use strategy::{CommitStrategy, NoTransaction, Repositories};

pub(crate) use step::is_listed;

use set::SpecialHandlers;

use std::future::Future;
use std::sync::Arc;

use uuid::Uuid;

use crate::checkpoint::{CheckpointData, Halt, LagMetrics};
use crate::event::{AnyEvent, EventMetadata, EventRegistry};
use crate::failure::FailureKind;
use crate::projection::{DatabaseProjection, Projection};
use crate::retry::{ExponentialBackoffRetryPolicy, RetryPolicy};
use crate::storage::StorageError;
use crate::store::{EventStore, ReadFilter, TenantFilter};

#[allow(unused_imports)] // for the docs
use crate::failure::FailureKind as _;

/// What the runner does when the retry policy gives up on an event that is at fault.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Record the event in the dead-letter queue and move the checkpoint past it (default).
    #[default]
    DeadLetter,
    /// Stop before the event, durably, until [`Runner::resume`]; the checkpoint stays
    /// before it.
    Stop,
    /// Park the event's aggregate: record the event in the dead-letter queue and move past
    /// it, as `DeadLetter` does, and hold back every later event of the same aggregate
    /// (recorded in the queue too, not applied) while the other aggregates go on.
    /// Replaying or resolving the first entry releases the held ones, in position order, so
    /// the order of events within an aggregate is never broken. See
    /// [`Runner::replay_dead_letter`] and [`Runner::resolve_dead_letter`].
    ParkAggregate,
}

/// Checkpoint tracking around a projection (the Python library's `CheckpointTrackingProjection`), with
/// the commit strategy `S`. See the [module documentation](self) for what each strategy
/// guarantees after a crash.
///
/// For each event of a batch:
/// - at or below the checkpoint: skipped, nothing runs; an event without a position whose id
///   is that of the last event the runner moved past is skipped too (see "Push mode" in the
///   [module documentation](self));
/// - of a tenant the projection is not limited to ([`tenant`](Self::tenant)): passed over (the
///   checkpoint moves), whatever its type;
/// - of a type the projection does not subscribe to: passed over (the checkpoint moves),
///   unless its aggregate type is one the projection
///   [follows](Self::follows_aggregates): then its unregistered-event policy decides;
/// - otherwise the handler runs (a panic is caught and is that event's failure); a failure
///   goes where its [`FailureKind`] says.
///
/// The coordinator reads only what the projection selects ([`read_filter`](Self::read_filter))
/// and hands each page to [`handle_page_into`](Self::handle_page_into), which also moves the
/// checkpoint over the events the read left out.
///
/// A runner refuses to run (every batch, reset and replay fails with
/// [`RunnerError::AmbiguousEventType`]) while two event types of the program claim one wire
/// name.
///
/// A runner drives one projection from one ordered loop; it takes `&mut self` and no lock.
pub struct Runner<P, S> {
    projection: P,
    name: String,
    storage: S,
    retry: Arc<dyn RetryPolicy>,
    on_failure: FailurePolicy,
    tracing: bool,
    /// Aggregate types whose events the projection has no handler for meet its
    /// unregistered-event policy.
    followed: Vec<String>,
    /// Event types of followed aggregates that the projection has no handler for and whose
    /// policy accepted them (`ignore`, `warn`): passed over from then on, so `warn` logs
    /// once per type.
    passed_over: Vec<&'static str>,
    /// The id of the last event the runner moved past (applied, passed over or
    /// dead-lettered), as committed: how a repeated event without a position is recognised.
    last_event: Option<Uuid>,
    /// Checkpoint writes committed so far, so a batch can tell whether it wrote one.
    checkpoint_writes: u64,
    /// The checkpoint as last read or written (`None` until then), so a batch reports its
    /// checkpoint without another round trip.
    known: Option<Option<u64>>,
    /// Whether the halt and checkpoint were read from storage.
    loaded: bool,
    halt: Option<Halt>,
    /// Progress whose checkpoint write failed, to be written with the next commit (only for
    /// strategies whose handlers' effects do not roll back).
    unwritten: Option<crate::checkpoint::CheckpointUpdate>,
    /// Aggregates parked behind a dead letter ([`FailurePolicy::ParkAggregate`]): their events
    /// are held back, as read from the dead-letter queue at load and kept since.
    parked: std::collections::HashSet<Uuid>,
    /// The halt is this process's only (storage refused to record it): a refresh from
    /// storage must not lift it.
    halt_unrecorded: bool,
    /// Event types whose handler is set-based or live-only: the batch loop looks closer at
    /// their events only.
    handlers: SpecialHandlers,
    /// Events at or below it are replayed: live-only handlers do not run for them.
    replay_until: Option<u64>,
    /// The order of events the projection depends on.
    event_order: EventOrder,
    /// The version this runner builds, when it is one of a blue/green projection.
    version: Option<Arc<crate::bluegreen::VersionTag>>,
    /// The lease this runner writes under, on a node of a cluster: checked in every
    /// transaction it begins.
    fence: Option<crate::cluster::Fence>,
    /// The partition of the projection this runner applies, if it is partitioned.
    partition: Option<Partition>,
    /// The tenants whose events the projection sees.
    tenant: TenantFilter,
    /// Where the read of the batch in hand got to ([`Runner::handle_page_into`]): the batch's
    /// last commit takes the checkpoint there.
    read_to: Option<u64>,
}

/// A runner whose handlers take no connection, with checkpoints and dead letters in
/// [`Repositories`]: **at least once** (see the [module documentation](self)).
pub type ProjectionRunner<P> = Runner<P, Repositories>;

impl<P: Projection> From<P> for ProjectionRunner<P> {
    fn from(projection: P) -> Self {
        Self::new(projection)
    }
}

impl<P: Projection> Runner<P, Repositories> {
    /// A runner with every default (see [`RunnerBuilder`]): in-memory repositories.
    pub fn new(projection: P) -> Self {
        Self::with_storage(projection, Repositories::in_memory())
    }

    /// Configures a runner.
    pub fn builder(projection: P) -> RunnerBuilder<P> {
        RunnerBuilder::new(projection)
    }
}

impl<P: DatabaseProjection, S> Runner<P, S> {
    /// A runner committing through `storage`, with the default retry policy
    /// ([`ExponentialBackoffRetryPolicy`]), dead-lettering on terminal failure, tracing on.
    pub(crate) fn with_storage(projection: P, storage: S) -> Self {
        let name = projection.name().to_owned();
        let handlers = SpecialHandlers::of(projection.handlers());
        let followed = projection
            .aggregates()
            .iter()
            .map(|&aggregate| aggregate.to_owned())
            .collect();
        Self {
            projection,
            name,
            storage,
            retry: Arc::new(ExponentialBackoffRetryPolicy::default()),
            on_failure: FailurePolicy::DeadLetter,
            tracing: true,
            followed,
            passed_over: Vec::new(),
            last_event: None,
            checkpoint_writes: 0,
            known: None,
            loaded: false,
            halt: None,
            unwritten: None,
            parked: std::collections::HashSet::new(),
            halt_unrecorded: false,
            handlers,
            replay_until: None,
            event_order: EventOrder::Global,
            version: None,
            fence: None,
            partition: None,
            tenant: TenantFilter::any(),
            read_to: None,
        }
    }

    /// Makes this runner apply one partition of the projection: the events of the aggregates
    /// in `partition` (see [`Partition`]); the others are passed over (the checkpoint moves).
    /// The runner is named for the partition (`orders#2/4`), so its checkpoint, dead letters,
    /// worker and, on a cluster, lease are its own. Register one runner per partition:
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use projections::runner::Partition;
    /// # use projections::transactional::{PostgreSQLTransactionUnit, TransactionalRunner};
    /// # fn run<P: projections::DatabaseProjection<Connection = projections::PgConnection> + Clone + 'static>(
    /// #     projection: P, unit: Arc<PostgreSQLTransactionUnit>, registry: &mut projections::ProjectionRegistry,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// for partition in Partition::all(4)? {
    ///     registry.register(TransactionalRunner::new(projection.clone(), unit.clone()).partition(partition))?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// The partitions share the read model: a reset of any one ([`reset`](Self::reset), a
    /// rebuild) resets them all, in one transaction. A runner refuses to start (a setup error)
    /// while checkpoints of the projection with another partitioning exist (another count,
    /// or none): changing the count is an explicit rebuild.
    ///
    /// An event that does not decode cannot be placed in a partition: each partition meets it
    /// (and dead-letters it, by default).
    #[must_use]
    pub fn partition(mut self, partition: Partition) -> Self {
        let base = self.base_name().to_owned();
        self.name = partition.name_for(&base);
        self.partition = Some(partition);
        self
    }

    /// The partition this runner applies, if the projection is partitioned.
    pub fn partition_of(&self) -> Option<Partition> {
        self.partition
    }

    /// The name without the partition (`orders` for `orders#2/4`).
    pub(crate) fn base_name(&self) -> &str {
        match self.partition {
            Some(_) => Partition::parse(&self.name).map_or(self.name.as_str(), |(base, _)| base),
            None => &self.name,
        }
    }

    /// Makes the runner write under `fence` (this node took the projection's lease), or under
    /// none (it gave the lease up). Either way its checkpoint, halt and parked aggregates are
    /// read from storage again before the next batch: another node may have moved them.
    pub(crate) fn set_fence(&mut self, fence: Option<crate::cluster::Fence>) {
        self.fence = fence;
        self.loaded = false;
        self.known = None;
        self.unwritten = None;
    }

    /// The lease this runner writes under, if any.
    pub(crate) fn fence(&self) -> Option<&crate::cluster::Fence> {
        self.fence.as_ref()
    }

    /// Makes this the runner of one version of a blue/green projection: named for the
    /// version (`orders@v2`), so its checkpoint, dead letters and worker are its own.
    pub(crate) fn versioned(mut self, tag: Arc<crate::bluegreen::VersionTag>) -> Self {
        self.name = crate::bluegreen::versioned_name(&tag.projection, tag.version);
        self.version = Some(tag);
        self
    }

    /// The version this runner builds and its role, when it is one of a blue/green
    /// projection ([`BlueGreen::runner`](crate::bluegreen::BlueGreen::runner)).
    pub fn version_status(&self) -> Option<crate::bluegreen::VersionStatus> {
        self.version.as_ref().map(|tag| tag.status())
    }

    /// Sets the retry policy (for an event that is at fault).
    #[must_use]
    pub fn retry_policy(mut self, policy: impl RetryPolicy + 'static) -> Self {
        self.retry = Arc::new(policy);
        self
    }

    /// Sets what happens when the retry policy gives up.
    #[must_use]
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.on_failure = policy;
        self
    }

    /// Whether to open `tracing` spans (on by default): `projection.batch` at INFO per batch,
    /// `projection.handle` and `projection.handler` at DEBUG per event. Off saves a little
    /// per batch; a span whose level is disabled costs no allocation either way.
    #[must_use]
    pub fn tracing(mut self, enabled: bool) -> Self {
        self.tracing = enabled;
        self
    }

    /// The aggregate types (stream categories, `EventMetadata::aggregate_type`) this
    /// projection follows, replacing [`DatabaseProjection::aggregates`].
    ///
    /// An event of a followed aggregate type that the projection has no handler for is handed
    /// to the projection's `handle`, where `#[projection(unregistered = ...)]` decides:
    /// - `error`: it fails like a handler error, without retries (trying again cannot add a
    ///   handler), and the [`FailurePolicy`] decides: dead letter (the default) or stop;
    /// - `warn`: a warning naming the event type, the projection and its handled types, once
    ///   per event type (later events of that type are passed over without asking again);
    /// - `ignore` (the default): passed over.
    ///
    /// Events of other aggregate types that the projection does not handle are passed over
    /// silently, whatever the policy: they are not its business.
    ///
    /// ```
    /// # use projections::{Envelope, Event, projection};
    /// # use projections::runner::ProjectionRunner;
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize, Event)]
    /// # #[event(aggregate = "Parcel")] struct ParcelSent;
    /// # #[derive(Default)] struct Parcels(u32);
    /// #[projection(unregistered = error)]
    /// impl Parcels {
    ///     #[handles(ParcelSent)]
    ///     async fn sent(&mut self, _e: &Envelope<ParcelSent>) { self.0 += 1 }
    /// }
    /// // A `Parcel` event without a handler (say `ParcelLost`) is dead-lettered.
    /// let runner = ProjectionRunner::new(Parcels::default()).follows_aggregates(["Parcel"]);
    /// assert_eq!(runner.followed_aggregates(), ["Parcel"]);
    /// ```
    #[must_use]
    pub fn follows_aggregates<I>(mut self, aggregates: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.followed = aggregates.into_iter().map(Into::into).collect();
        self.passed_over.clear();
        self
    }

    /// The aggregate types this projection follows (see
    /// [`follows_aggregates`](Self::follows_aggregates)).
    pub fn followed_aggregates(&self) -> &[String] {
        &self.followed
    }

    /// Limits the projection to the events of the tenants `filter` admits
    /// ([`EventMetadata::tenant_id`](crate::EventMetadata::tenant_id)); every tenant by default.
    ///
    /// Every other event is passed over, whatever its type, before any handler, set-based or
    /// not, and before the unregistered-event policy of a followed aggregate type: nothing
    /// runs, the checkpoint moves past it, and it counts in
    /// [`BatchOutcome::other_tenant`]. That holds for events the coordinator reads and for
    /// events handed in ([`Runner::handle_batch`],
    /// [`ProjectionRegistry::dispatch`](crate::ProjectionRegistry::dispatch)) alike. The
    /// coordinator's reads carry the filter into the store ([`read_filter`](Self::read_filter)),
    /// which leaves a listed tenant's others out of the read already, and lag counts the
    /// listed tenants' events only.
    ///
    /// Events without a tenant are passed over too unless the filter lets them in
    /// ([`TenantFilter::with_untenanted`]). Changing the filter of a projection that has
    /// already passed events does not bring them back: rebuild it.
    ///
    /// ```
    /// # use projections::{Envelope, Event, projection};
    /// # use projections::runner::ProjectionRunner;
    /// use projections::store::TenantFilter;
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize, Event)] struct Ping;
    /// # #[derive(Default)] struct Pings(u32);
    /// # #[projection] impl Pings { #[handles(Ping)] async fn on(&mut self, _e: &Envelope<Ping>) { self.0 += 1 } }
    /// let acme = uuid::Uuid::new_v4();
    /// let runner = ProjectionRunner::new(Pings::default()).tenant(TenantFilter::only(acme));
    /// assert!(runner.tenant_filter().admits(Some(acme)));
    /// ```
    #[must_use]
    pub fn tenant(mut self, filter: TenantFilter) -> Self {
        self.tenant = filter;
        self
    }

    /// The tenants whose events the projection sees (see [`tenant`](Self::tenant)).
    pub fn tenant_filter(&self) -> &TenantFilter {
        &self.tenant
    }

    /// What the projection's reads select: the event types it handles, the aggregate types it
    /// follows, its tenants. The coordinator reads with it
    /// ([`EventStore::read_filtered`]).
    pub fn read_filter(&self) -> ReadFilter {
        ReadFilter::event_types(self.projection.subscribed_to().iter().copied())
            .with_aggregate_types(self.followed.iter().cloned())
            .with_tenant(self.tenant.clone())
    }

    /// The projection's scope, for [`classify`](step::classify).
    fn scope(&self) -> step::Scope<'_> {
        step::Scope {
            subscribed: self.projection.subscribed_to(),
            following: !self.followed.is_empty(),
            tenant: &self.tenant,
            partition: self.partition,
        }
    }

    /// The projection's stable name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The projection (its read model).
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The projection, mutably.
    pub fn projection_mut(&mut self) -> &mut P {
        &mut self.projection
    }

    /// The projection, giving up the runner.
    pub fn into_inner(self) -> P {
        self.projection
    }

    /// The wire names the projection subscribes to.
    pub fn subscribed_to(&self) -> &[&'static str] {
        self.projection.subscribed_to()
    }

    /// The storage it commits through.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Paused or stopped, as last read from or written to storage.
    pub fn halt(&self) -> Option<&Halt> {
        self.halt.as_ref()
    }

    /// Where the projection stopped, if it is stopped.
    pub fn stopped(&self) -> Option<&StoppedAt> {
        self.halt.as_ref().and_then(Halt::stopped)
    }

    fn storage_error(&self, source: StorageError) -> RunnerError {
        RunnerError::Storage {
            projection: self.name.clone(),
            source,
        }
    }
}

impl<P, S> Runner<P, S>
where
    P: DatabaseProjection,
    S: CommitStrategy<Connection = P::Connection>,
{
    /// Reads the checkpoint and the halt from storage, the first time.
    pub async fn load(&mut self) -> Result<(), RunnerError> {
        if !self.loaded {
            self.refuse_other_partitioning().await?;
            let data = self
                .storage
                .checkpoints()
                .get_checkpoint_data(&self.name)
                .await
                .map_err(|e| self.storage_error(e))?;
            self.known = Some(data.as_ref().map(|d| d.position));
            self.last_event = data.as_ref().and_then(|d| d.last_event_id);
            self.halt = data.and_then(|d| d.halt);
            self.load_parked().await?;
            if !self.handlers.live_only.is_empty() {
                self.replay_until = self
                    .storage
                    .checkpoints()
                    .get_replay_horizon(&self.name)
                    .await
                    .map_err(|e| self.storage_error(e))?;
            }
            self.loaded = true;
        }
        Ok(())
    }

    /// The checkpoints of this projection under any partitioning (none, or any count), by
    /// name: what a reset clears.
    async fn group_checkpoints(
        &mut self,
    ) -> Result<Vec<crate::checkpoint::CheckpointData>, RunnerError> {
        let base = self.base_name();
        let all = self
            .storage
            .checkpoints()
            .get_all_checkpoints()
            .await
            .map_err(|e| self.storage_error(e))?;
        Ok(all
            .into_iter()
            .filter(|c| {
                c.projection_name == base
                    || Partition::parse(&c.projection_name).is_some_and(|(b, _)| b == base)
            })
            .collect())
    }

    /// Refuses to run (a setup error) while the projection has progress under another
    /// partitioning: the read model was built by partitions of another count (or by none),
    /// and only a rebuild may change that.
    async fn refuse_other_partitioning(&mut self) -> Result<(), RunnerError> {
        let mine = self.partition.map(|p| p.count());
        let others: Vec<String> = self
            .group_checkpoints()
            .await?
            .into_iter()
            .filter(|c| c.position > 0)
            .filter(|c| Partition::parse(&c.projection_name).map(|(_, p)| p.count()) != mine)
            .map(|c| c.projection_name)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let now = match mine {
            Some(count) => format!("{count} partitions"),
            None => "no partitions".to_owned(),
        };
        Err(self.storage_error(StorageError::Invalid {
            what: "partitioning",
            reason: format!(
                "projection `{}` runs with {now} but has progress under another partitioning ({}): \
                 changing the partitioning is a rebuild; rebuild it",
                self.base_name(),
                others.join(", ")
            ),
        }))
    }

    /// The checkpoint position, as last read or written.
    pub async fn checkpoint(&mut self) -> Result<Option<u64>, RunnerError> {
        self.load().await?;
        match self.known {
            Some(known) => Ok(known),
            None => {
                let stored = self.storage.checkpoints().get_checkpoint(&self.name).await;
                let stored = stored.map_err(|e| self.storage_error(e))?;
                self.known = Some(stored);
                Ok(stored)
            }
        }
    }

    /// Owned handles to read this runner's state from storage while it works.
    pub fn reads(&self) -> RunnerReads {
        RunnerReads {
            name: self.name.clone(),
            filter: self.read_filter(),
            checkpoints: self.storage.checkpoints(),
            dead_letters: self.storage.dead_letters(),
        }
    }

    /// The stored checkpoint.
    pub fn checkpoint_data(
        &self,
    ) -> impl Future<Output = Result<Option<CheckpointData>, RunnerError>> + Send + 'static {
        reads::checkpoint_data(self.storage.checkpoints(), self.name.clone())
    }

    /// How far the projection is behind `store`; see [`LagMetrics`] for the definitions.
    pub fn lag_metrics<'a>(
        &self,
        store: &'a dyn EventStore,
    ) -> impl Future<Output = Result<LagMetrics, RunnerError>> + Send + 'a {
        reads::lag_metrics(
            self.storage.checkpoints(),
            self.name.clone(),
            self.read_filter(),
            store,
        )
    }

    /// The dead-letter entries of this projection whose event is not applied, oldest first:
    /// `failed`, and `retrying` (a replay under way, or one that was interrupted).
    pub fn unresolved_dead_letters(
        &self,
    ) -> impl Future<Output = Result<Vec<crate::dlq::DLQEntry>, RunnerError>> + Send + 'static {
        reads::unresolved_dead_letters(self.storage.dead_letters(), self.name.clone())
    }

    /// Former name of [`unresolved_dead_letters`](Self::unresolved_dead_letters).
    #[deprecated(note = "renamed `unresolved_dead_letters`, like the other `dead_letter` methods")]
    pub fn failed_events(
        &self,
    ) -> impl Future<Output = Result<Vec<crate::dlq::DLQEntry>, RunnerError>> + Send + 'static {
        self.unresolved_dead_letters()
    }

    /// The number of dead-letter entries of this projection whose event is not applied (as
    /// [`unresolved_dead_letters`](Self::unresolved_dead_letters)).
    pub fn dead_letter_count(
        &self,
    ) -> impl Future<Output = Result<u64, RunnerError>> + Send + 'static {
        let failed = self.unresolved_dead_letters();
        async move { Ok(failed.await?.len() as u64) }
    }

    /// Handles one event (a batch of one).
    pub async fn handle(&mut self, event: &AnyEvent) -> Result<EventOutcome, RunnerError> {
        let outcome = self.handle_batch(std::slice::from_ref(event)).await?;
        Ok(outcome.single())
    }

    /// Handles events in order, committing once for the batch (more only around failures).
    ///
    /// On an error, what was done before the failing event is committed and counted; use
    /// [`handle_batch_into`](Self::handle_batch_into) to keep those counts.
    pub async fn handle_batch<T: BatchItem>(
        &mut self,
        events: &[T],
    ) -> Result<BatchOutcome, RunnerError> {
        let mut outcome = BatchOutcome::default();
        self.handle_batch_into(events, &mut outcome).await?;
        Ok(outcome)
    }

    /// Pauses the projection, durably: it applies nothing until [`resume`](Self::resume),
    /// across restarts.
    pub async fn pause(&mut self, reason: impl Into<String>) -> Result<(), RunnerError> {
        self.halt_with(Halt::paused(reason)).await
    }

    /// Stops the projection, durably, as an operator: like a stop by the failure policy.
    pub async fn stop(&mut self, reason: impl Into<String>) -> Result<(), RunnerError> {
        let at = StoppedAt::new(FailureKind::Setup, reason);
        self.halt_with(Halt::Stopped(at)).await
    }

    /// Lets a paused or stopped projection go on: the next batch tries the event it stopped
    /// at again.
    pub async fn resume(&mut self) -> Result<(), RunnerError> {
        self.storage
            .checkpoints()
            .set_halt(&self.name, None)
            .await
            .map_err(|e| self.storage_error(e))?;
        self.loaded = true;
        self.halt = None;
        self.halt_unrecorded = false;
        Ok(())
    }

    /// Reads the stored halt again, so that a pause, stop or resume recorded by another
    /// process (an operator's command line) takes effect in this one.
    pub async fn refresh_halt(&mut self) -> Result<(), RunnerError> {
        let data = self
            .storage
            .checkpoints()
            .get_checkpoint_data(&self.name)
            .await
            .map_err(|e| self.storage_error(e))?;
        // A checkpoint behind the one this runner wrote: the projection was reset elsewhere
        // (a rebuild by another process, or of another partition). Read it all again.
        let position = data.as_ref().map(|d| d.position).filter(|p| *p > 0);
        if self.unwritten.is_none()
            && let Some(Some(known)) = self.known
            && position.is_none_or(|stored| stored < known)
        {
            tracing::info!(projection = %self.name, from = known, to = ?position, "reset elsewhere: reading again");
            self.loaded = false;
            self.known = None;
            return Ok(());
        }
        let stored = data.and_then(|d| d.halt);
        let same_kind = matches!(
            (&self.halt, &stored),
            (Some(Halt::Paused { .. }), Some(Halt::Paused { .. }))
                | (Some(Halt::Stopped(_)), Some(Halt::Stopped(_)))
        );
        // The halt held is kept when storage has the same kind: the stored copy of it differs
        // only in what storage rounds (times to the microsecond).
        if !self.halt_unrecorded && !same_kind {
            self.halt = stored;
        }
        // A dead letter resolved or replayed by another process releases its aggregate here.
        self.load_parked().await
    }

    /// Records `halt` in storage, then keeps it.
    pub(crate) async fn halt_with(&mut self, halt: Halt) -> Result<(), RunnerError> {
        self.load().await?;
        self.storage
            .checkpoints()
            .set_halt(&self.name, Some(&halt))
            .await
            .map_err(|e| self.storage_error(e))?;
        self.halt = Some(halt);
        self.halt_unrecorded = false;
        Ok(())
    }

    /// Refuses to run while two event types of the program claim one wire name, or the
    /// upcasters of one are wrong.
    // The runner's own error, as every (async) method of the runner returns it.
    #[allow(clippy::result_large_err)]
    fn refuse_if_ambiguous(&self) -> Result<(), RunnerError> {
        EventRegistry::check_global().map_err(|conflict| RunnerError::AmbiguousEventType {
            projection: self.name.clone(),
            source: conflict.clone(),
        })?;
        EventRegistry::check_global_upcasters().map_err(|problem| RunnerError::InvalidUpcasters {
            projection: self.name.clone(),
            source: problem.clone(),
        })
    }

    /// The error a halted runner answers a batch with.
    fn halted(&self) -> Option<RunnerError> {
        match self.halt.as_ref()? {
            Halt::Paused { reason, .. } => Some(RunnerError::Paused {
                projection: self.name.clone(),
                reason: reason.clone(),
            }),
            Halt::Stopped(at) => Some(RunnerError::Stopped {
                projection: self.name.clone(),
                at: at.clone(),
                source: None,
            }),
        }
    }
}

/// Decodes the event of a dead-letter entry, with the event types this build knows.
///
/// Two shapes are stored: a decoded event as `{"metadata": EventMetadata, "payload"}`, and
/// the whole stored row of an event that did not decode when it failed (its type unknown to
/// the build that read it, say, during a rolling deploy), whose columns are the metadata's
/// fields beside `payload`, with `metadata` holding only the free-form part. The second is
/// decoded from its columns, so such an entry replays once the reader knows its type.
pub(crate) fn decode_dead_letter(data: &serde_json::Value) -> Result<AnyEvent, String> {
    let payload = data.get("payload").ok_or("its event data has no payload")?;
    let metadata = match data.get("metadata") {
        // A decoded event: its metadata in full.
        Some(metadata) if metadata.get("event_id").is_some() => {
            serde_json::from_value::<EventMetadata>(metadata.clone())
                .map_err(|e| format!("its metadata does not decode: {e}"))?
        }
        // A stored row: the metadata's fields are its columns.
        _ if data.get("event_id").is_some() => {
            serde_json::from_value::<EventMetadata>(data.clone())
                .map_err(|e| format!("its stored row does not decode as metadata: {e}"))?
        }
        _ => return Err("its event data has no metadata".to_owned()),
    };
    EventRegistry::global()
        .decode(metadata, payload)
        .map_err(|e| e.to_string())
}
