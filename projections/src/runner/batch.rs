//! A batch: applied in one commit, more only around a failure; each failure sent where its
//! kind says.

use tracing::Instrument;
use uuid::Uuid;

use super::panic::caught;
use super::progress::Progress;
use super::set;
use super::step::{DecodeFailure, Scope, Step, classify, event_data, follows, is_listed};
use super::{
    BatchItem, BatchOutcome, CommitStrategy, FailurePolicy, Runner, RunnerError, StoppedAt,
};
use crate::checkpoint::{CheckpointUpdate, Halt};
use crate::dlq::FailedEvent;
use crate::event::AnyEvent;
use crate::failure::FailureKind;
use crate::projection::{DatabaseProjection, HandlerError, HandlerInfo};
use crate::storage::StorageError;

/// How a segment of a batch ended.
enum Segment {
    /// Committed up to the segment's end.
    Committed,
    /// Committed up to an event of a followed aggregate type that the projection has no
    /// handler for, at this index: its unregistered-event policy decides, in a commit of its
    /// own (out of the batch loop, which stays as lean as without the policy).
    Unhandled(usize),
    /// Stopped at a failing item. An atomic strategy rolled the segment back; the other
    /// committed what came before the item.
    Failed(Failure),
}

/// An item that failed, or a run of a set-based handler whose call failed.
struct Failure {
    at: usize,
    /// The end (exclusive) of the failed run: `at + 1` for one item. A longer run does not
    /// say which of its events is at fault; the batch loop narrows it down.
    end: usize,
    error: HandlerError,
    kind: FailureKind,
    /// False for events that do not decode: trying again cannot help.
    retryable: bool,
}

impl Failure {
    fn new(at: usize, error: HandlerError, retryable: bool) -> Self {
        Self::run(at, at + 1, error, retryable)
    }

    fn run(at: usize, end: usize, error: HandlerError, retryable: bool) -> Self {
        Self {
            at,
            end,
            kind: error.kind(),
            error,
            retryable,
        }
    }

    /// Whether more than one event may be at fault.
    fn is_run(&self) -> bool {
        self.end > self.at + 1
    }
}

/// How committing the events before a failure ended.
enum Before {
    Committed,
    /// Committed up to an unhandled event at this index, which the first pass would have
    /// stopped at.
    Unhandled(usize),
    /// Committed up to an earlier failure (a handler that failed now where it had succeeded),
    /// which is the one to settle.
    Failed(Failure),
}

/// How one attempt in a commit of its own ended.
enum Attempt {
    Applied,
    /// Another runner of the projection had already passed the event.
    AlreadyDone,
    Failed(HandlerError),
}

/// The failing item, as the logs, the dead letter and the stop name it.
struct Subject<'a> {
    position: Option<u64>,
    event_id: Uuid,
    event_type: &'a str,
}

impl<'a> Subject<'a> {
    fn of<T: BatchItem>(item: &'a T) -> Self {
        match item.decoded() {
            Ok(event) => Self {
                position: event.position(),
                event_id: event.event_id(),
                event_type: event.event_type(),
            },
            Err(raw) => Self {
                position: Some(raw.position),
                event_id: raw.event_id,
                event_type: &raw.event_type,
            },
        }
    }
}

impl<P, S> Runner<P, S>
where
    P: DatabaseProjection,
    S: CommitStrategy<Connection = P::Connection>,
{
    /// Handles events in order, adding what was done to `outcome`, also when it returns an
    /// error (what was committed before the error is counted).
    ///
    /// Errors:
    /// - [`RunnerError::Paused`] or [`RunnerError::Stopped`] when the projection is halted
    ///   (nothing runs), or when this batch stopped it;
    /// - [`RunnerError::Infrastructure`], or a storage error whose
    ///   [`kind`](RunnerError::kind) is [`FailureKind::Infrastructure`]: nothing was
    ///   dead-lettered and the checkpoint is before the event that could not be applied; try
    ///   the batch again later.
    /// - [`RunnerError::AmbiguousEventType`] while two event types of the program claim one
    ///   wire name: nothing runs.
    ///
    /// With [`tracing`](Runner::tracing) on, a batch with events runs in an INFO span
    /// `projection.batch` that records what it did and whether it wrote the checkpoint.
    pub async fn handle_batch_into<T: BatchItem>(
        &mut self,
        events: &[T],
        outcome: &mut BatchOutcome,
    ) -> Result<(), RunnerError> {
        self.refuse_if_ambiguous()?;
        if events.is_empty() {
            return self.run_batch(events, outcome).await;
        }
        #[cfg(feature = "metrics")]
        {
            let started = std::time::Instant::now();
            let before = crate::metrics::BatchCounts::of(outcome);
            let result = self.traced_batch(events, outcome).await;
            crate::metrics::batch(&self.name, before.since(outcome), started.elapsed());
            result
        }
        #[cfg(not(feature = "metrics"))]
        self.traced_batch(events, outcome).await
    }

    /// Handles the events of a page read up to `read_to` (a
    /// [`ReadPage`](crate::store::ReadPage) of [`read_filtered`](crate::EventStore::read_filtered)),
    /// as [`handle_batch_into`](Self::handle_batch_into) does, then moves the checkpoint on to
    /// `read_to`: the read found nothing else for the projection up to there. The move
    /// commits with the batch's last commit when it can, in a commit of its own otherwise (a
    /// page without events, or one whose last event was dead-lettered); not at all when the
    /// batch ends with an error or the projection is halted.
    pub async fn handle_page_into<T: BatchItem>(
        &mut self,
        events: &[T],
        read_to: u64,
        outcome: &mut BatchOutcome,
    ) -> Result<(), RunnerError> {
        if events.is_empty() {
            self.refuse_if_ambiguous()?;
            self.load().await?;
            if let Some(halted) = self.halted() {
                return Err(halted);
            }
        } else {
            self.read_to = Some(read_to);
            let result = self.handle_batch_into(events, outcome).await;
            self.read_to = None;
            result?;
        }
        if self
            .known
            .flatten()
            .is_none_or(|checkpoint| read_to > checkpoint)
        {
            let (tx, checkpoint) = self.begin_locked().await?;
            if checkpoint.is_none_or(|checkpoint| read_to > checkpoint) {
                let mut progress = Progress::from(checkpoint, self.last_event);
                progress.reach(read_to);
                self.commit(tx, &progress).await?;
            } else {
                self.rollback(tx).await;
            }
        }
        outcome.checkpoint = self.checkpoint().await?;
        Ok(())
    }

    /// [`handle_batch_into`](Self::handle_batch_into) in its span, when tracing is on.
    async fn traced_batch<T: BatchItem>(
        &mut self,
        events: &[T],
        outcome: &mut BatchOutcome,
    ) -> Result<(), RunnerError> {
        if !self.tracing {
            return self.run_batch(events, outcome).await;
        }
        let span = tracing::info_span!(
            "projection.batch",
            projection = %self.name,
            events = events.len(),
            applied = tracing::field::Empty,
            skipped = tracing::field::Empty,
            not_subscribed = tracing::field::Empty,
            other_tenant = tracing::field::Empty,
            dead_lettered = tracing::field::Empty,
            failed = tracing::field::Empty,
            checkpoint = tracing::field::Empty,
            checkpoint_written = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        if span.is_disabled() {
            return self.run_batch(events, outcome).await;
        }
        let before = (
            outcome.applied,
            outcome.skipped,
            outcome.not_subscribed,
            outcome.dead_lettered.len(),
            outcome.failed,
            self.checkpoint_writes,
            outcome.other_tenant,
        );
        let result = self
            .run_batch(events, outcome)
            .instrument(span.clone())
            .await;
        span.record("applied", outcome.applied - before.0);
        span.record("skipped", outcome.skipped - before.1);
        span.record("not_subscribed", outcome.not_subscribed - before.2);
        span.record("other_tenant", outcome.other_tenant - before.6);
        span.record("dead_lettered", outcome.dead_lettered.len() - before.3);
        span.record("failed", outcome.failed - before.4);
        span.record("checkpoint", self.known.flatten());
        span.record("checkpoint_written", self.checkpoint_writes > before.5);
        if let Err(error) = &result {
            span.record("error", tracing::field::display(error));
        }
        result
    }

    /// [`handle_batch_into`](Self::handle_batch_into) without its check and span.
    async fn run_batch<T: BatchItem>(
        &mut self,
        events: &[T],
        outcome: &mut BatchOutcome,
    ) -> Result<(), RunnerError> {
        self.load().await?;
        if let Some(halted) = self.halted() {
            return Err(halted);
        }
        let mut from = 0;
        // The end of the next segment: the batch's, or the first half of a failed run of a
        // set-based handler while the failing event is narrowed down.
        let mut until = events.len();
        // Tried once per batch, before anything else: a failure there runs the batch in log
        // order.
        if self.gathers() && self.gathered(events, (0, events.len()), outcome).await? {
            outcome.checkpoint = self.checkpoint().await?;
            return Ok(());
        }
        while from < events.len() {
            let (mut failure, before_committed) =
                match self.segment(events, from, until, outcome).await? {
                    Segment::Committed => {
                        from = until;
                        until = events.len();
                        continue;
                    }
                    Segment::Unhandled(at) => match self.meet_policy(events, at, outcome).await? {
                        None => {
                            from = at + 1;
                            until = until.max(from);
                            continue;
                        }
                        Some(failure) => (failure, true),
                    },
                    Segment::Failed(failure) => (failure, false),
                };
            if S::ATOMIC && !before_committed && failure.kind != FailureKind::Infrastructure {
                match self
                    .commit_before(events, from, failure.at, outcome)
                    .await?
                {
                    Before::Committed => {}
                    Before::Unhandled(unhandled) => {
                        // Go on from it; the failure after it is met again in order.
                        from = unhandled;
                        until = events.len();
                        continue;
                    }
                    Before::Failed(earlier) => failure = earlier,
                }
            }
            if failure.is_run() && failure.kind == FailureKind::Event {
                // Everything before the run is committed: try the run's first half alone.
                from = failure.at;
                until = failure.at + (failure.end - failure.at) / 2;
                continue;
            }
            let at = failure.at;
            self.settle(&events[at], failure, outcome).await?;
            from = at + 1;
            until = events.len();
        }
        outcome.checkpoint = self.checkpoint().await?;
        Ok(())
    }

    /// Applies `events[from..until]` in one commit, or up to the first failure.
    async fn segment<T: BatchItem>(
        &mut self,
        events: &[T],
        from: usize,
        until: usize,
        outcome: &mut BatchOutcome,
    ) -> Result<Segment, RunnerError> {
        let (mut tx, checkpoint) = self.begin_locked().await?;
        let mut progress = Progress::from(checkpoint, self.last_event);
        let (mut applied, mut skipped, mut not_subscribed) = (0, 0, 0);
        let (mut live_only_passed, mut other_tenant) = (0, 0);
        let mut failure = None;
        let mut unhandled = None;
        let following = !self.followed.is_empty();
        // Loop-invariant: parking holds events back only while some aggregate is parked.
        let holding = !self.parked.is_empty();
        let mut index = from;
        while index < until {
            let item = &events[index];
            let scope = Scope {
                subscribed: self.projection.subscribed_to(),
                following,
                tenant: &self.tenant,
                partition: self.partition,
            };
            match classify(item, &progress, scope) {
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
                Step::Undecodable(raw) => {
                    let error = HandlerError::new(DecodeFailure(raw.error.to_string()));
                    failure = Some(Failure::new(index, error, false));
                    break;
                }
                Step::NotHandled(event) => {
                    if follows(&self.followed, &self.passed_over, event) {
                        unhandled = Some(index);
                        break;
                    }
                    progress.advance(
                        event.position(),
                        event.event_id(),
                        event.event_type(),
                        false,
                    );
                    not_subscribed += 1;
                }
                // Parked behind a dead letter of its aggregate: held back, recorded.
                Step::Apply(event)
                    if holding && self.parked.contains(&event.metadata().aggregate_id) =>
                {
                    let error = super::park::HeldBack::error(event.metadata().aggregate_id);
                    failure = Some(Failure::new(index, error, false));
                    break;
                }
                // Live-only and set-based handlers, out of the common case's way.
                Step::Apply(event) if self.handlers.any() => {
                    if self.is_replayed_live_only(event) {
                        progress.advance(
                            event.position(),
                            event.event_id(),
                            event.event_type(),
                            false,
                        );
                        live_only_passed += 1;
                    } else if self.handlers.is_set_based(event.event_type()) {
                        let end = set::run_end(events, index, until, event);
                        let run = (index, end);
                        match self.apply_run(&mut tx, events, run, &mut progress).await {
                            Ok(()) => {
                                applied += (end - index) as u64;
                                index = end;
                                continue;
                            }
                            Err(error) => {
                                failure = Some(Failure::run(index, end, error, true));
                                break;
                            }
                        }
                    } else {
                        match self.apply(&mut tx, event, 1).await {
                            Ok(()) => {
                                progress.advance(
                                    event.position(),
                                    event.event_id(),
                                    event.event_type(),
                                    true,
                                );
                                applied += 1;
                            }
                            Err(error) => {
                                failure = Some(Failure::new(index, error, true));
                                break;
                            }
                        }
                    }
                }
                // The common case inline, without the tracing machinery's future.
                Step::Apply(event) => match if self.tracing {
                    self.apply(&mut tx, event, 1).await
                } else {
                    let (projection, conn) = (&mut self.projection, &mut *tx);
                    caught(|| projection.handle(conn, event)).await
                } {
                    Ok(()) => {
                        progress.advance(
                            event.position(),
                            event.event_id(),
                            event.event_type(),
                            true,
                        );
                        applied += 1;
                    }
                    Err(error) => {
                        failure = Some(Failure::new(index, error, true));
                        break;
                    }
                },
            }
            index += 1;
        }
        if S::ATOMIC && failure.is_some() {
            self.rollback(tx).await;
        } else {
            if index == events.len() && failure.is_none() && unhandled.is_none() {
                // The batch's last commit: it takes the checkpoint to where the read got.
                if let Some(read_to) = self.read_to.take() {
                    progress.reach(read_to);
                }
            }
            self.commit(tx, &progress).await?;
            outcome.applied += applied;
            outcome.skipped += skipped;
            outcome.not_subscribed += not_subscribed;
            outcome.live_only_passed += live_only_passed;
            outcome.other_tenant += other_tenant;
        }
        Ok(match (failure, unhandled) {
            (Some(failure), _) => Segment::Failed(failure),
            (None, Some(at)) => Segment::Unhandled(at),
            (None, None) => Segment::Committed,
        })
    }

    /// Hands `events[at]`, of a followed aggregate type the projection has no handler for,
    /// to the projection's `handle`, where its unregistered-event policy decides, in a commit
    /// of its own. `None` when it passed (`ignore`, `warn`): from then on the events of its
    /// type are passed over without asking (or warning) again. A failure is returned to be
    /// settled; an `Unhandled` error is not retried, since trying again cannot add a handler.
    async fn meet_policy<T: BatchItem>(
        &mut self,
        events: &[T],
        at: usize,
        outcome: &mut BatchOutcome,
    ) -> Result<Option<Failure>, RunnerError> {
        // `classify` finds only decoded events unhandled.
        let Ok(event) = events[at].decoded() else {
            return Ok(None);
        };
        let (mut tx, checkpoint) = self.begin_locked().await?;
        if let (Some(position), Some(checkpoint)) = (event.position(), checkpoint)
            && position <= checkpoint
        {
            self.rollback(tx).await;
            outcome.skipped += 1;
            return Ok(None);
        }
        match self.apply(&mut tx, event, 1).await {
            Ok(()) => {
                self.passed_over.push(event.event_type());
                let mut progress = Progress::from(checkpoint, self.last_event);
                progress.advance(
                    event.position(),
                    event.event_id(),
                    event.event_type(),
                    false,
                );
                self.commit(tx, &progress).await?;
                outcome.not_subscribed += 1;
                Ok(None)
            }
            Err(error) => {
                self.rollback(tx).await;
                let retryable = !matches!(error, HandlerError::Unhandled(_));
                Ok(Some(Failure::new(at, error, retryable)))
            }
        }
    }

    /// Commits the events before a failure at `at` (atomic strategies, whose segment rolled
    /// back). A handler that fails now where it had succeeded moves the failure earlier, and
    /// that earlier failure is returned to be settled instead (the later one is met again in
    /// order); the range shrinks each time, so this ends.
    async fn commit_before<T: BatchItem>(
        &mut self,
        events: &[T],
        from: usize,
        mut at: usize,
        outcome: &mut BatchOutcome,
    ) -> Result<Before, RunnerError> {
        let mut earlier = None;
        while at > from {
            match self.segment(events, from, at, outcome).await? {
                Segment::Committed => break,
                Segment::Unhandled(unhandled) => return Ok(Before::Unhandled(unhandled)),
                Segment::Failed(failure) => {
                    at = failure.at;
                    earlier = Some(failure);
                }
            }
        }
        Ok(earlier.map_or(Before::Committed, Before::Failed))
    }

    /// Sends a failed item where its kind says: retries (each attempt in a commit of its own)
    /// then the failure policy for an event at fault; an error for the infrastructure; a stop
    /// for the setup.
    async fn settle<T: BatchItem>(
        &mut self,
        item: &T,
        failure: Failure,
        outcome: &mut BatchOutcome,
    ) -> Result<(), RunnerError> {
        let Failure {
            mut error,
            mut kind,
            retryable,
            ..
        } = failure;
        let subject = Subject::of(item);
        let event = item.decoded().ok().filter(|_| retryable);
        let max_retries = self.retry.max_retries();
        let mut attempts: u32 = 1;
        loop {
            match kind {
                FailureKind::Infrastructure => {
                    tracing::warn!(
                        projection = %self.name, event_type = subject.event_type,
                        event_id = %subject.event_id, %error,
                        "infrastructure failure: the event is not at fault and will be tried again",
                    );
                    outcome.failed += 1;
                    return Err(RunnerError::Infrastructure {
                        projection: self.name.clone(),
                        event_id: Some(subject.event_id),
                        source: error,
                    });
                }
                FailureKind::Setup => {
                    outcome.failed += 1;
                    return self.stop_at(&subject, error, kind, attempts).await;
                }
                FailureKind::Event => {}
            }
            let delay = match event {
                Some(_)
                    if attempts <= max_retries && self.retry.should_retry(attempts - 1, &error) =>
                {
                    Some(self.retry.backoff(attempts - 1))
                }
                _ => None,
            };
            tracing::warn!(
                projection = %self.name,
                event_type = subject.event_type,
                event_id = %subject.event_id,
                position = subject.position,
                attempt = attempts,
                max_attempts = if event.is_some() { max_retries + 1 } else { 1 },
                next_delay_ms = delay.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                %error,
                "projection handler failed",
            );
            let (Some(event), Some(delay)) = (event, delay) else {
                break;
            };
            tokio::time::sleep(delay).await;
            attempts += 1;
            crate::metrics::retried(&self.name);
            match self.attempt_alone(event, attempts).await? {
                Attempt::Applied => {
                    outcome.applied += 1;
                    return Ok(());
                }
                Attempt::AlreadyDone => {
                    outcome.skipped += 1;
                    return Ok(());
                }
                Attempt::Failed(again) => {
                    kind = again.kind();
                    error = again;
                }
            }
        }
        match self.on_failure {
            FailurePolicy::DeadLetter | FailurePolicy::ParkAggregate => {
                let data = match item.decoded() {
                    Ok(event) => event_data(event),
                    Err(raw) => raw.raw.clone(),
                };
                let failure = FailedEvent::new(
                    subject.event_id,
                    &self.name,
                    subject.event_type,
                    data,
                    &error,
                    attempts,
                )
                .with_position(subject.position);
                match self
                    .dead_letter_and_advance(&failure, subject.position)
                    .await
                {
                    Ok(Some(entry_id)) => {
                        self.park(&failure.event_data);
                        tracing::error!(
                            projection = %self.name, event_id = %subject.event_id,
                            event_type = subject.event_type, attempts, entry_id, %error,
                            "event sent to the dead-letter queue",
                        );
                        outcome.dead_lettered.push(entry_id);
                        Ok(())
                    }
                    Ok(None) => {
                        outcome.skipped += 1;
                        Ok(())
                    }
                    Err(source) => Err(RunnerError::DeadLetter {
                        projection: self.name.clone(),
                        event_id: subject.event_id,
                        handler_error: error.to_string(),
                        source,
                    }),
                }
            }
            FailurePolicy::Stop => {
                outcome.failed += 1;
                self.stop_at(&subject, error, kind, attempts).await
            }
        }
    }

    /// Stops before `subject`, durably where storage allows.
    async fn stop_at(
        &mut self,
        subject: &Subject<'_>,
        error: HandlerError,
        kind: FailureKind,
        attempts: u32,
    ) -> Result<(), RunnerError> {
        let at = StoppedAt::new(kind, error.to_string())
            .with_event(subject.position, subject.event_id, subject.event_type)
            .with_attempts(attempts);
        let halt = Halt::Stopped(at.clone());
        let recorded = self
            .storage
            .checkpoints()
            .set_halt(&self.name, Some(&halt))
            .await;
        if let Err(source) = recorded {
            if source.kind() == FailureKind::Infrastructure {
                // Not recorded: stay unhalted, so the event is tried again once storage is
                // back, and stops then, durably.
                return Err(self.storage_error(source));
            }
            tracing::error!(projection = %self.name, error = %source, "could not record the stop; it holds in this process only");
            self.halt_unrecorded = true;
        }
        tracing::error!(projection = %self.name, stopped_at = %at, "projection stopped");
        self.halt = Some(halt);
        Err(RunnerError::Stopped {
            projection: self.name.clone(),
            at,
            source: Some(error),
        })
    }

    /// Applies `event` alone, in a commit of its own.
    async fn attempt_alone(
        &mut self,
        event: &AnyEvent,
        attempt: u32,
    ) -> Result<Attempt, RunnerError> {
        let (mut tx, checkpoint) = self.begin_locked().await?;
        if let (Some(position), Some(checkpoint)) = (event.position(), checkpoint)
            && position <= checkpoint
        {
            self.rollback(tx).await;
            return Ok(Attempt::AlreadyDone);
        }
        match self.apply(&mut tx, event, attempt).await {
            Ok(()) => {
                let mut progress = Progress::from(checkpoint, self.last_event);
                progress.advance(event.position(), event.event_id(), event.event_type(), true);
                self.commit(tx, &progress).await?;
                Ok(Attempt::Applied)
            }
            Err(error) => {
                self.rollback(tx).await;
                Ok(Attempt::Failed(error))
            }
        }
    }

    /// Records the dead letter and moves the checkpoint past it, in one commit. `None` when
    /// another runner had already passed the event.
    async fn dead_letter_and_advance(
        &mut self,
        failure: &FailedEvent,
        position: Option<u64>,
    ) -> Result<Option<i64>, StorageError> {
        let mut tx = self.begin_fenced().await?;
        let checkpoint = self
            .storage
            .lock_checkpoint(&mut tx, &self.name, self.known)
            .await?;
        self.known = Some(checkpoint);
        if let (Some(position), Some(checkpoint)) = (position, checkpoint)
            && position <= checkpoint
        {
            self.rollback(tx).await;
            return Ok(None);
        }
        let entry_id = self.storage.dead_letter(&mut tx, failure).await?;
        if let Some(position) = position {
            let update = CheckpointUpdate::new(position)
                .with_event(failure.event_id, failure.event_type.clone());
            self.storage
                .write_checkpoint(&mut tx, &self.name, &update)
                .await?;
        }
        self.storage.commit(tx).await?;
        self.known = Some(checkpoint.max(position));
        self.last_event = Some(failure.event_id);
        if position.is_some() {
            self.checkpoint_writes += 1;
        }
        Ok(Some(entry_id))
    }

    /// Opens a transaction and, on a node of a cluster, checks in it first that this node
    /// still owns the projection: nothing is written under a lost lease.
    pub(super) async fn begin_fenced(&mut self) -> Result<S::Transaction, StorageError> {
        let mut tx = self.storage.begin().await?;
        if let Some(fence) = &self.fence
            && let Err(error) = self.storage.check_fence(&mut tx, fence).await
        {
            if let Err(rollback) = self.storage.rollback(tx).await {
                tracing::debug!(projection = %self.name, error = %rollback, "rollback failed");
            }
            return Err(error);
        }
        Ok(tx)
    }

    /// Opens a transaction and locks the projection's checkpoint in it.
    pub(super) async fn begin_locked(
        &mut self,
    ) -> Result<(S::Transaction, Option<u64>), RunnerError> {
        let mut tx = self
            .begin_fenced()
            .await
            .map_err(|e| self.storage_error(e))?;
        let checkpoint = self
            .storage
            .lock_checkpoint(&mut tx, &self.name, self.known)
            .await
            .map_err(|e| self.storage_error(e))?;
        let previous = self.known.flatten();
        self.known = Some(checkpoint);
        if let Some(previous) = previous
            && checkpoint.is_none_or(|now| now < previous)
        {
            // Reset elsewhere (a rebuild by another process, or of another partition): the
            // events in hand were read after the old checkpoint. Read again from the new one.
            self.rollback(tx).await;
            self.loaded = false;
            return Err(RunnerError::CheckpointMovedBack {
                projection: self.name.clone(),
                from: previous,
                to: checkpoint,
            });
        }
        Ok((tx, checkpoint))
    }

    /// Writes `progress` and commits.
    pub(super) async fn commit(
        &mut self,
        mut tx: S::Transaction,
        progress: &Progress,
    ) -> Result<(), RunnerError> {
        let checkpoint_error = |name: &str, source| RunnerError::Checkpoint {
            projection: name.to_owned(),
            position: progress.position,
            source,
        };
        let mut update = progress.update();
        let wrote = update.is_some() || self.unwritten.is_some();
        if !S::ATOMIC
            && let Some(unwritten) = self.unwritten.take()
        {
            update = Some(unwritten.merged(update));
        }
        if let Some(update) = update
            && let Err(error) = self
                .storage
                .write_checkpoint(&mut tx, &self.name, &update)
                .await
        {
            if !S::ATOMIC {
                // The handlers' effects happened: remember the progress, so this process
                // does not apply those events again, and write it with the next commit.
                self.unwritten = Some(update);
                self.known = Some(progress.position);
                self.last_event = progress.last_event();
            }
            return Err(checkpoint_error(&self.name, error));
        }
        self.storage
            .commit(tx)
            .await
            .map_err(|e| checkpoint_error(&self.name, e))?;
        self.known = Some(progress.position);
        self.last_event = progress.last_event();
        if wrote {
            self.checkpoint_writes += 1;
        }
        Ok(())
    }

    /// Rolls back; a failure to roll back is only logged (the transaction is gone either way,
    /// and the failure that led here is the one to report).
    pub(super) async fn rollback(&mut self, tx: S::Transaction) {
        if let Err(error) = self.storage.rollback(tx).await {
            tracing::debug!(projection = %self.name, %error, "rollback failed");
        }
    }

    /// Runs the handler for `event` through `tx`; a panic is this event's failure. With
    /// tracing on, in the DEBUG spans `projection.handle` and `projection.handler`, built only
    /// when DEBUG is enabled for them.
    #[inline]
    pub(super) async fn apply(
        &mut self,
        tx: &mut S::Transaction,
        event: &AnyEvent,
        attempt: u32,
    ) -> Result<(), HandlerError> {
        if !self.tracing {
            let (projection, conn) = (&mut self.projection, &mut **tx);
            return caught(|| projection.handle(conn, event)).await;
        }
        let span = tracing::debug_span!(
            "projection.handle",
            projection = %self.name,
            event_type = event.event_type(),
            event_id = %event.event_id(),
            position = event.position(),
            handler = tracing::field::Empty,
            attempts = attempt,
            outcome = tracing::field::Empty,
        );
        if span.is_disabled() {
            let (projection, conn) = (&mut self.projection, &mut **tx);
            return caught(|| projection.handle(conn, event)).await;
        }
        let subscribed = is_listed(self.projection.subscribed_to(), event.event_type());
        let method = handler_method(self.projection.handlers(), event.event_type());
        span.record("handler", method);
        let handler = tracing::debug_span!(
            parent: &span,
            "projection.handler",
            handler = method,
            attempt,
        );
        let (projection, conn) = (&mut self.projection, &mut **tx);
        let result = caught(|| projection.handle(conn, event))
            .instrument(handler)
            .await;
        let outcome = match (&result, subscribed) {
            (Ok(()), true) => "applied",
            (Ok(()), false) => "passed_over",
            (Err(_), _) => "failed",
        };
        span.record("outcome", outcome);
        result
    }
}

/// The `#[handles]` method for `event_type`, if the projection lists one.
fn handler_method(handlers: &[HandlerInfo], event_type: &str) -> Option<&'static str> {
    handlers
        .iter()
        .find(|h| std::ptr::eq(h.event_type, event_type) || h.event_type == event_type)
        .map(|h| h.method)
}
