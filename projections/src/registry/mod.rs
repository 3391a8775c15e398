//! Registries: where projections and handlers are gathered and events fanned out to them.

mod erased;
mod report;
mod subscriber;

/// The push-mode handlers a [`SubscriberRegistry`] holds (the Python library's names).
pub use crate::projection::{AsyncEventHandler, EventHandler, EventSubscriber, SyncEventHandler};
pub use erased::RegisteredProjection;
pub use report::{DispatchReport, HandlerDispatch, ProjectionDispatch};
pub use subscriber::{SubscriberId, SubscriberRegistry};

use tracing::Instrument;

use crate::event::AnyEvent;
use crate::join::join_all;
use crate::projection::Projection;
use crate::runner::{ProjectionRunner, RunnerError};
use crate::storage::BoxFuture;
use erased::{HandlerBox, RegisteredHandler};

/// Identifies a registered handler, for [`ProjectionRegistry::unregister_handler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(u64);

/// A second projection under a name already taken (they would share a checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a projection named `{0}` is already registered; give one of them another `#[projection(name = \"...\")]`"
)]
pub struct DuplicateProjection(pub String);

/// Projections (each behind its [`ProjectionRunner`]) and event handlers, with concurrent
/// fan-out.
///
/// Each projection only receives the events it subscribes to; handlers receive those their
/// `can_handle` accepts. Projections run concurrently; one failing never stops the others, and
/// every outcome is returned in a [`DispatchReport`].
#[derive(Default)]
pub struct ProjectionRegistry {
    projections: Vec<Box<dyn RegisteredProjection>>,
    handlers: Vec<(HandlerId, Box<dyn RegisteredHandler>)>,
    next_handler: u64,
    concurrency: Option<usize>,
    tracing: bool,
}

impl ProjectionRegistry {
    /// An empty registry, tracing on.
    pub fn new() -> Self {
        Self {
            tracing: true,
            ..Self::default()
        }
    }

    /// Runs at most `limit` projections and handlers at once.
    #[must_use]
    pub fn with_concurrency_limit(mut self, limit: usize) -> Self {
        self.concurrency = Some(limit.max(1));
        self
    }

    /// Whether dispatch opens `tracing` spans.
    #[must_use]
    pub fn with_tracing(mut self, enabled: bool) -> Self {
        self.tracing = enabled;
        self
    }

    /// Registers a projection: a configured [`ProjectionRunner`], or a bare projection that
    /// gets a runner with every default.
    pub fn register_projection<P: Projection + 'static>(
        &mut self,
        projection: impl IntoProjectionRunner<P>,
    ) -> Result<(), DuplicateProjection> {
        self.register(projection.into_runner())
    }

    /// Registers any runner, for example a
    /// [`TransactionalRunner`](crate::transactional::TransactionalRunner).
    pub fn register<R: RegisteredProjection>(
        &mut self,
        runner: R,
    ) -> Result<(), DuplicateProjection> {
        if self.projections.iter().any(|p| p.name() == runner.name()) {
            return Err(DuplicateProjection(runner.name().to_owned()));
        }
        self.projections.push(Box::new(runner));
        Ok(())
    }

    /// The first registered runner of type `R`, mutably.
    pub fn runner_mut<R: RegisteredProjection>(&mut self) -> Option<&mut R> {
        self.projections
            .iter_mut()
            .find_map(|p| p.as_any_mut().downcast_mut::<R>())
    }

    /// The first registered runner of type `R`.
    pub fn runner_of<R: RegisteredProjection>(&self) -> Option<&R> {
        self.projections
            .iter()
            .find_map(|p| p.as_any().downcast_ref::<R>())
    }

    /// Removes the projection named `name` and returns it.
    pub fn unregister_projection(&mut self, name: &str) -> Option<Box<dyn RegisteredProjection>> {
        let index = self.projections.iter().position(|p| p.name() == name)?;
        Some(self.projections.remove(index))
    }

    /// Takes every projection out (for the coordinator's workers).
    pub(crate) fn take_projections(&mut self) -> Vec<Box<dyn RegisteredProjection>> {
        std::mem::take(&mut self.projections)
    }

    /// Puts projections back (when the workers end).
    pub(crate) fn restore_projections(&mut self, projections: Vec<Box<dyn RegisteredProjection>>) {
        self.projections.extend(projections);
    }

    /// Registers a handler.
    pub fn register_handler<H: EventHandler + 'static>(&mut self, handler: H) -> HandlerId {
        self.next_handler += 1;
        let id = HandlerId(self.next_handler);
        self.handlers.push((id, Box::new(HandlerBox(handler))));
        id
    }

    /// Removes a handler; whether it was registered.
    pub fn unregister_handler(&mut self, id: HandlerId) -> bool {
        let before = self.handlers.len();
        self.handlers.retain(|(h, _)| *h != id);
        self.handlers.len() != before
    }

    /// The number of projections.
    pub fn projection_count(&self) -> usize {
        self.projections.len()
    }

    /// The number of handlers.
    pub fn handler_count(&self) -> usize {
        self.handlers.len()
    }

    /// The projections' names, in registration order.
    pub fn projection_names(&self) -> Vec<&str> {
        self.projections.iter().map(|p| p.name()).collect()
    }

    /// The registered projections.
    pub fn projections(&self) -> impl Iterator<Item = &dyn RegisteredProjection> {
        self.projections.iter().map(|p| &**p)
    }

    /// The registered projections, mutably.
    pub fn projections_mut(&mut self) -> impl Iterator<Item = &mut Box<dyn RegisteredProjection>> {
        self.projections.iter_mut()
    }

    /// The projection named `name`.
    pub fn get(&self, name: &str) -> Option<&dyn RegisteredProjection> {
        self.projections
            .iter()
            .find(|p| p.name() == name)
            .map(|p| &**p)
    }

    /// The projection named `name`, mutably.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Box<dyn RegisteredProjection>> {
        self.projections.iter_mut().find(|p| p.name() == name)
    }

    /// The runner of the first projection of type `P` (a projection type, where
    /// [`runner_of`](Self::runner_of) and [`runner_mut`](Self::runner_mut) take a runner type).
    pub fn projection_runner<P: Projection + 'static>(&self) -> Option<&ProjectionRunner<P>> {
        self.projections
            .iter()
            .find_map(|p| p.as_any().downcast_ref::<ProjectionRunner<P>>())
    }

    /// The former name of [`projection_runner`](Self::projection_runner).
    #[deprecated(
        note = "renamed `projection_runner`: it takes a projection type, where \
                         `runner_of` and `runner_mut` take a runner type"
    )]
    pub fn runner<P: Projection + 'static>(&self) -> Option<&ProjectionRunner<P>> {
        self.projection_runner::<P>()
    }

    /// The first projection of type `P` (its read model).
    pub fn projection<P: Projection + 'static>(&self) -> Option<&P> {
        self.projection_runner::<P>()
            .map(ProjectionRunner::projection)
    }

    /// Delivers one event to the projections subscribed to its type and to the handlers that
    /// accept it, concurrently. An event without a position is delivered at least once: a
    /// runner skips only the immediate repeat of the last event it moved past (see "Push
    /// mode" in the [runner documentation](crate::runner)).
    pub async fn dispatch(&mut self, event: &AnyEvent) -> DispatchReport {
        let span = self.tracing.then(|| {
            tracing::debug_span!(
                "projection.registry.dispatch",
                event_type = event.event_type(),
                event_id = %event.event_id(),
                position = event.position(),
            )
        });
        let work = self.fan_out(std::slice::from_ref(event), true);
        match span {
            Some(span) => work.instrument(span).await,
            None => work.await,
        }
    }

    /// Delivers events in order: each projection and handler sees them in the order given,
    /// and projections progress independently of each other. The same guarantees as
    /// [`dispatch`](Self::dispatch).
    pub async fn dispatch_many(&mut self, events: &[AnyEvent]) -> DispatchReport {
        let span = self.tracing.then(|| {
            tracing::debug_span!("projection.registry.dispatch", event_count = events.len())
        });
        let work = self.fan_out(events, false);
        match span {
            Some(span) => work.instrument(span).await,
            None => work.await,
        }
    }

    async fn fan_out(&mut self, events: &[AnyEvent], only_subscribed: bool) -> DispatchReport {
        enum Done {
            Projection(ProjectionDispatch),
            Handlers(Vec<HandlerDispatch>),
        }
        let mut work: Vec<BoxFuture<'_, Done>> = Vec::new();
        for projection in &mut self.projections {
            if only_subscribed && !events.iter().any(|e| concerns(&**projection, e)) {
                continue;
            }
            work.push(Box::pin(async move {
                let result = projection.handle_events(events).await;
                Done::Projection(ProjectionDispatch {
                    name: projection.name().to_owned(),
                    result,
                })
            }));
        }
        for (_, handler) in &mut self.handlers {
            if !events.iter().any(|e| handler.can_handle(e)) {
                continue;
            }
            work.push(Box::pin(async move {
                let mut results = Vec::new();
                for event in events {
                    if !handler.can_handle(event) {
                        continue;
                    }
                    let result = handler.handle(event).await;
                    results.push(HandlerDispatch {
                        handler: handler.type_name(),
                        event_id: event.event_id(),
                        result,
                    });
                }
                Done::Handlers(results)
            }));
        }
        let mut report = DispatchReport::default();
        for done in join_all(work, self.concurrency).await {
            match done {
                Done::Projection(p) => report.projections.push(p),
                Done::Handlers(h) => report.handlers.extend(h),
            }
        }
        for failure in report.failures() {
            tracing::warn!(%failure, "dispatch failure");
        }
        report
    }

    /// Resets every projection (checkpoint, then read model); returns each outcome.
    pub async fn reset_all(&mut self) -> Vec<(String, Result<(), RunnerError>)> {
        let mut results = Vec::with_capacity(self.projections.len());
        for projection in &mut self.projections {
            let result = projection.reset().await;
            results.push((projection.name().to_owned(), result));
        }
        results
    }
}

/// Whether `event` concerns `projection`: it handles its type, or follows its aggregate type
/// (then its unregistered-event policy decides).
fn concerns(projection: &dyn RegisteredProjection, event: &AnyEvent) -> bool {
    projection.subscribed_to().contains(&event.event_type())
        || projection
            .followed_aggregates()
            .iter()
            .any(|aggregate| *aggregate == event.metadata().aggregate_type)
}

/// What [`ProjectionRegistry::register_projection`] takes: a projection whose handlers take no
/// connection (it gets a [`ProjectionRunner`] with every default), or a configured
/// [`ProjectionRunner`] of one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be registered with `register_projection`",
    label = "not a projection without a database connection, nor a `ProjectionRunner` of one",
    note = "a projection whose handlers take a database connection runs in a transaction per batch: register it with `registry.register(TransactionalRunner::new(projection, unit))`"
)]
pub trait IntoProjectionRunner<P> {
    /// The runner.
    fn into_runner(self) -> ProjectionRunner<P>;
}

#[diagnostic::do_not_recommend]
impl<P: Projection> IntoProjectionRunner<P> for P {
    fn into_runner(self) -> ProjectionRunner<P> {
        ProjectionRunner::new(self)
    }
}

#[diagnostic::do_not_recommend]
impl<P: Projection> IntoProjectionRunner<P> for ProjectionRunner<P> {
    fn into_runner(self) -> ProjectionRunner<P> {
        self
    }
}
