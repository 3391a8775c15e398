//! Conformance checks for [`CheckpointRepository`].

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use projections::checkpoint::{CheckpointData, CheckpointUpdate};
use projections::{CheckpointRepository, FailureKind, Halt, StoppedAt};
use uuid::Uuid;

use super::{assert_sorted_by_name, now_micros, unique_name};

/// The implementation under test.
pub type Repo = Arc<dyn CheckpointRepository>;

/// An update to `position` that applied `applied` events at `at`.
fn update(position: u64, applied: u64, at: DateTime<Utc>) -> CheckpointUpdate {
    let mut update = CheckpointUpdate::new(position).with_events_applied(applied);
    update.at = at;
    update
}

/// An update to `position` naming the event there.
fn update_with_event(
    position: u64,
    applied: u64,
    at: DateTime<Utc>,
    event_id: Uuid,
    event_type: &str,
) -> CheckpointUpdate {
    update(position, applied, at).with_event(event_id, event_type)
}

async fn apply(repo: &Repo, projection: &str, update: CheckpointUpdate) {
    repo.update_checkpoint(projection, update)
        .await
        .unwrap_or_else(|e| panic!("update_checkpoint({projection}) failed: {e}"));
}

async fn data(repo: &Repo, projection: &str) -> CheckpointData {
    repo.get_checkpoint_data(projection)
        .await
        .unwrap_or_else(|e| panic!("get_checkpoint_data({projection}) failed: {e}"))
        .unwrap_or_else(|| panic!("{projection} has no checkpoint"))
}

async fn position(repo: &Repo, projection: &str) -> Option<u64> {
    repo.get_checkpoint(projection)
        .await
        .unwrap_or_else(|e| panic!("get_checkpoint({projection}) failed: {e}"))
}

async fn all(repo: &Repo) -> Vec<CheckpointData> {
    repo.get_all_checkpoints()
        .await
        .unwrap_or_else(|e| panic!("get_all_checkpoints failed: {e}"))
}

/// A projection that never had a checkpoint has none, and is not listed.
pub async fn unknown_projection_has_no_checkpoint(repo: Repo) {
    let name = unique_name("checkpoint-unknown");
    assert_eq!(position(&repo, &name).await, None);
    assert_eq!(repo.get_checkpoint_data(&name).await.unwrap(), None);
    assert!(
        !all(&repo).await.iter().any(|c| c.projection_name == name),
        "get_all_checkpoints lists a projection that never had a checkpoint"
    );
}

/// An update is read back: position, event, counter, time.
pub async fn update_then_get(repo: Repo) {
    let name = unique_name("checkpoint-update");
    let event_id = Uuid::new_v4();
    let at = now_micros() - TimeDelta::seconds(30);
    apply(
        &repo,
        &name,
        update_with_event(5, 3, at, event_id, "conformance.item_added"),
    )
    .await;

    assert_eq!(position(&repo, &name).await, Some(5));
    let data = data(&repo, &name).await;
    assert_eq!(data.projection_name, name);
    assert_eq!(data.position, 5);
    assert_eq!(data.last_event_id, Some(event_id));
    assert_eq!(
        data.last_event_type.as_deref(),
        Some("conformance.item_added")
    );
    assert_eq!(data.events_processed, 3);
    assert_eq!(data.last_processed_at, Some(at));
}

/// An update at or below the stored position leaves the position (and the event shown with
/// it) alone, but its applied events still count.
pub async fn position_never_moves_back_but_counter_adds(repo: Repo) {
    let name = unique_name("checkpoint-monotonic");
    let at = now_micros();
    let at_ten = Uuid::new_v4();
    apply(&repo, &name, update_with_event(10, 2, at, at_ten, "ten")).await;

    apply(
        &repo,
        &name,
        update_with_event(7, 3, at, Uuid::new_v4(), "seven"),
    )
    .await;
    let after_lower = data(&repo, &name).await;
    assert_eq!(after_lower.position, 10, "a lower position moved it back");
    assert_eq!(after_lower.last_event_id, Some(at_ten));
    assert_eq!(after_lower.last_event_type.as_deref(), Some("ten"));
    assert_eq!(
        after_lower.events_processed, 5,
        "events applied with a lower position must still be counted"
    );

    apply(
        &repo,
        &name,
        update_with_event(10, 1, at, Uuid::new_v4(), "ten again"),
    )
    .await;
    let after_equal = data(&repo, &name).await;
    assert_eq!(after_equal.position, 10);
    assert_eq!(
        after_equal.last_event_id,
        Some(at_ten),
        "an update at the same position replaced the event shown with it"
    );
    assert_eq!(after_equal.events_processed, 6);

    apply(&repo, &name, update(0, 0, at)).await;
    assert_eq!(position(&repo, &name).await, Some(10));
    assert_eq!(data(&repo, &name).await.events_processed, 6);

    apply(&repo, &name, update(11, 0, at)).await;
    let after_higher = data(&repo, &name).await;
    assert_eq!(after_higher.position, 11);
    assert_eq!(after_higher.events_processed, 6);
}

/// The event id and type shown are those of the update that set the position.
pub async fn last_event_follows_position(repo: Repo) {
    let name = unique_name("checkpoint-last-event");
    let at = now_micros();
    let (first, second, stale) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    apply(&repo, &name, update_with_event(1, 1, at, first, "first")).await;
    let data_one = data(&repo, &name).await;
    assert_eq!(data_one.last_event_id, Some(first));
    assert_eq!(data_one.last_event_type.as_deref(), Some("first"));

    apply(&repo, &name, update_with_event(2, 1, at, second, "second")).await;
    let data_two = data(&repo, &name).await;
    assert_eq!(data_two.last_event_id, Some(second));
    assert_eq!(data_two.last_event_type.as_deref(), Some("second"));

    apply(&repo, &name, update_with_event(1, 1, at, stale, "stale")).await;
    let data_stale = data(&repo, &name).await;
    assert_eq!(data_stale.position, 2);
    assert_eq!(data_stale.last_event_id, Some(second));
    assert_eq!(data_stale.last_event_type.as_deref(), Some("second"));
}

/// `last_processed_at` is the time the caller gave with the update that moved the position,
/// not the backend's clock.
pub async fn last_processed_at_is_the_update_time(repo: Repo) {
    let name = unique_name("checkpoint-processed-at");
    let earlier = now_micros() - TimeDelta::hours(1);
    let later = earlier + TimeDelta::minutes(10);

    apply(&repo, &name, update(3, 1, earlier)).await;
    assert_eq!(data(&repo, &name).await.last_processed_at, Some(earlier));

    apply(&repo, &name, update(4, 1, later)).await;
    assert_eq!(data(&repo, &name).await.last_processed_at, Some(later));
}

/// A reset deletes the checkpoint; the projection then starts from scratch, lower positions
/// and counter included. Resetting what is not there is not an error.
pub async fn reset_removes_checkpoint(repo: Repo) {
    let name = unique_name("checkpoint-reset");
    let at = now_micros();
    apply(
        &repo,
        &name,
        update_with_event(8, 8, at, Uuid::new_v4(), "eight"),
    )
    .await;

    repo.reset_checkpoint(&name).await.unwrap();
    assert_eq!(position(&repo, &name).await, None);
    assert_eq!(repo.get_checkpoint_data(&name).await.unwrap(), None);
    assert!(
        !all(&repo).await.iter().any(|c| c.projection_name == name),
        "a reset checkpoint is still listed"
    );

    repo.reset_checkpoint(&name).await.unwrap();
    repo.reset_checkpoint(&unique_name("checkpoint-never"))
        .await
        .unwrap();

    apply(&repo, &name, update(3, 1, at)).await;
    let restarted = data(&repo, &name).await;
    assert_eq!(restarted.position, 3, "after a reset, any position goes");
    assert_eq!(
        restarted.events_processed, 1,
        "the counter starts again after a reset"
    );
    assert_eq!(restarted.last_event_id, None);
}

/// Every checkpoint is listed, with its data, sorted by name in byte order.
pub async fn get_all_sorted_by_name_and_complete(repo: Repo) {
    let prefix = unique_name("checkpoint-all");
    // Byte order puts upper case first: "C" < "a" < "b", unlike a locale collation.
    let names = [
        format!("{prefix}-b"),
        format!("{prefix}-a"),
        format!("{prefix}-C"),
    ];
    let at = now_micros();
    for (position, name) in (1..).zip(&names) {
        apply(&repo, name, update(position * 10, position, at)).await;
    }

    let listed = all(&repo).await;
    assert_sorted_by_name(
        listed.iter().map(|c| c.projection_name.as_str()),
        "get_all_checkpoints",
    );
    let ours: Vec<(&str, u64, u64)> = listed
        .iter()
        .filter(|c| c.projection_name.starts_with(&prefix))
        .map(|c| (c.projection_name.as_str(), c.position, c.events_processed))
        .collect();
    assert_eq!(
        ours,
        [
            (names[2].as_str(), 30, 3),
            (names[1].as_str(), 20, 2),
            (names[0].as_str(), 10, 1),
        ]
    );
    for listed in listed
        .iter()
        .filter(|c| c.projection_name.starts_with(&prefix))
    {
        assert_eq!(
            Some(listed),
            repo.get_checkpoint_data(&listed.projection_name)
                .await
                .unwrap()
                .as_ref(),
            "get_all_checkpoints and get_checkpoint_data disagree"
        );
    }
}

/// One projection's updates and resets leave every other projection's checkpoint alone.
pub async fn projections_are_independent(repo: Repo) {
    let first = unique_name("checkpoint-independent-a");
    let second = unique_name("checkpoint-independent-b");
    let at = now_micros();
    let (first_event, second_event) = (Uuid::new_v4(), Uuid::new_v4());

    apply(&repo, &first, update_with_event(5, 5, at, first_event, "a")).await;
    apply(
        &repo,
        &second,
        update_with_event(9, 2, at, second_event, "b"),
    )
    .await;

    let first_data = data(&repo, &first).await;
    let second_data = data(&repo, &second).await;
    assert_eq!(
        (
            first_data.position,
            first_data.events_processed,
            first_data.last_event_id
        ),
        (5, 5, Some(first_event))
    );
    assert_eq!(
        (
            second_data.position,
            second_data.events_processed,
            second_data.last_event_id
        ),
        (9, 2, Some(second_event))
    );

    repo.reset_checkpoint(&first).await.unwrap();
    assert_eq!(position(&repo, &first).await, None);
    assert_eq!(data(&repo, &second).await, second_data);

    apply(&repo, &second, update(12, 1, at)).await;
    assert_eq!(position(&repo, &first).await, None);
    assert_eq!(position(&repo, &second).await, Some(12));
}

/// A pause at `at`, given to the nearest microsecond so that every backend keeps it exactly.
fn pause(reason: &str, at: DateTime<Utc>) -> Halt {
    Halt::Paused {
        reason: reason.to_owned(),
        at,
    }
}

/// A stop with every field set.
fn full_stop(at: DateTime<Utc>) -> StoppedAt {
    let mut stopped = StoppedAt::new(FailureKind::Event, "handler failed: ä✓ quantity < 0")
        .with_event(Some(41), Uuid::new_v4(), "conformance.item_added")
        .with_attempts(4);
    stopped.at = at;
    stopped
}

async fn set_halt(repo: &Repo, projection: &str, halt: Option<&Halt>) {
    repo.set_halt(projection, halt)
        .await
        .unwrap_or_else(|e| panic!("set_halt({projection}, {halt:?}) failed: {e}"));
}

async fn halt(repo: &Repo, projection: &str) -> Option<Halt> {
    data(repo, projection).await.halt
}

/// A pause is read back as set, and leaves the checkpoint where it was.
pub async fn pause_round_trips(repo: Repo) {
    let name = unique_name("checkpoint-pause");
    let at = now_micros() - TimeDelta::seconds(5);
    let event_id = Uuid::new_v4();
    apply(&repo, &name, update_with_event(7, 7, at, event_id, "seven")).await;
    let before = data(&repo, &name).await;
    assert_eq!(before.halt, None, "a new checkpoint is not halted");

    let paused = pause("maintenance: reindexing ä✓", at);
    set_halt(&repo, &name, Some(&paused)).await;
    let mut after = data(&repo, &name).await;
    assert_eq!(after.halt.take(), Some(paused));
    assert_eq!(after, before, "set_halt changed the checkpoint itself");
}

/// A stop is read back with every field, for every kind of failure, and with none of the
/// optional fields; a second halt replaces the first.
pub async fn stop_round_trips_every_field(repo: Repo) {
    let name = unique_name("checkpoint-stop");
    let at = now_micros() - TimeDelta::minutes(3);

    let stopped = Halt::Stopped(full_stop(at));
    set_halt(&repo, &name, Some(&stopped)).await;
    assert_eq!(halt(&repo, &name).await, Some(stopped));

    for kind in [
        FailureKind::Event,
        FailureKind::Infrastructure,
        FailureKind::Setup,
    ] {
        let mut bare = StoppedAt::new(kind, format!("{kind} failure"));
        bare.at = at + TimeDelta::microseconds(1);
        let bare = Halt::Stopped(bare);
        set_halt(&repo, &name, Some(&bare)).await;
        assert_eq!(
            halt(&repo, &name).await,
            Some(bare),
            "a {kind} stop without event"
        );
    }

    // A stop at the largest position and attempt counts a backend must keep.
    let mut far = full_stop(at);
    far.position = Some(i64::MAX as u64);
    far.attempts = i32::MAX as u32;
    let far = Halt::Stopped(far);
    set_halt(&repo, &name, Some(&far)).await;
    assert_eq!(halt(&repo, &name).await, Some(far));

    let paused = pause("replaced", at);
    set_halt(&repo, &name, Some(&paused)).await;
    assert_eq!(
        halt(&repo, &name).await,
        Some(paused),
        "a pause after a stop must leave nothing of the stop"
    );
}

/// Moving the checkpoint never clears its halt, and setting a halt never moves the checkpoint.
pub async fn update_keeps_the_halt(repo: Repo) {
    let name = unique_name("checkpoint-halt-update");
    let at = now_micros();
    apply(&repo, &name, update(5, 5, at)).await;
    let stopped = Halt::Stopped(full_stop(at));
    set_halt(&repo, &name, Some(&stopped)).await;
    assert_eq!(position(&repo, &name).await, Some(5));

    let event_id = Uuid::new_v4();
    apply(&repo, &name, update_with_event(9, 4, at, event_id, "nine")).await;
    apply(&repo, &name, update(3, 1, at)).await;
    let after = data(&repo, &name).await;
    assert_eq!(
        (after.position, after.events_processed, after.last_event_id),
        (9, 10, Some(event_id))
    );
    assert_eq!(
        after.halt,
        Some(stopped),
        "update_checkpoint cleared or changed the halt"
    );
}

/// Clearing a halt leaves the checkpoint as it was; clearing what is not halted, or a
/// projection without checkpoint, does nothing (and creates nothing).
pub async fn clearing_the_halt(repo: Repo) {
    let name = unique_name("checkpoint-halt-clear");
    let at = now_micros();
    apply(
        &repo,
        &name,
        update_with_event(4, 2, at, Uuid::new_v4(), "four"),
    )
    .await;
    let before = data(&repo, &name).await;
    set_halt(&repo, &name, Some(&pause("for a moment", at))).await;

    set_halt(&repo, &name, None).await;
    assert_eq!(
        data(&repo, &name).await,
        before,
        "clearing changed more than the halt"
    );
    set_halt(&repo, &name, None).await;
    assert_eq!(data(&repo, &name).await, before);

    let never = unique_name("checkpoint-halt-never");
    set_halt(&repo, &never, None).await;
    assert_eq!(
        repo.get_checkpoint_data(&never).await.unwrap(),
        None,
        "clearing the halt of a projection without checkpoint created one"
    );
}

/// A reset deletes the halt with the checkpoint; the projection starts again unhalted.
pub async fn reset_removes_the_halt(repo: Repo) {
    let name = unique_name("checkpoint-halt-reset");
    let at = now_micros();
    apply(&repo, &name, update(6, 6, at)).await;
    set_halt(&repo, &name, Some(&Halt::Stopped(full_stop(at)))).await;

    repo.reset_checkpoint(&name).await.unwrap();
    assert_eq!(repo.get_checkpoint_data(&name).await.unwrap(), None);

    apply(&repo, &name, update(1, 1, at)).await;
    assert_eq!(
        halt(&repo, &name).await,
        None,
        "the halt came back after a reset"
    );
}

/// Halting a projection that has no checkpoint creates one at position 0, with nothing
/// processed.
pub async fn halt_without_checkpoint_creates_it_at_zero(repo: Repo) {
    let name = unique_name("checkpoint-halt-new");
    let at = now_micros();
    let stopped = Halt::Stopped(full_stop(at));
    set_halt(&repo, &name, Some(&stopped)).await;

    assert_eq!(position(&repo, &name).await, Some(0));
    let created = data(&repo, &name).await;
    assert_eq!(created.projection_name, name);
    assert_eq!(created.position, 0);
    assert_eq!(created.events_processed, 0);
    assert_eq!(created.last_event_id, None);
    assert_eq!(created.last_event_type, None);
    assert_eq!(created.last_processed_at, None);
    assert_eq!(created.halt, Some(stopped));

    // The first update then moves it as usual.
    apply(&repo, &name, update(2, 2, at)).await;
    let moved = data(&repo, &name).await;
    assert_eq!((moved.position, moved.events_processed), (2, 2));
    assert!(moved.halt.is_some());
}

/// `get_all_checkpoints` shows each checkpoint's halt, as `get_checkpoint_data` does.
pub async fn get_all_shows_halts(repo: Repo) {
    let prefix = unique_name("checkpoint-halt-all");
    let (running, paused, stopped) = (
        format!("{prefix}-a"),
        format!("{prefix}-b"),
        format!("{prefix}-c"),
    );
    let at = now_micros();
    apply(&repo, &running, update(1, 1, at)).await;
    apply(&repo, &paused, update(2, 2, at)).await;
    let pause = pause("operator", at);
    set_halt(&repo, &paused, Some(&pause)).await;
    let stop = Halt::Stopped(full_stop(at));
    set_halt(&repo, &stopped, Some(&stop)).await;

    let listed = all(&repo).await;
    let ours: Vec<(&str, u64, Option<&Halt>)> = listed
        .iter()
        .filter(|c| c.projection_name.starts_with(&prefix))
        .map(|c| (c.projection_name.as_str(), c.position, c.halt.as_ref()))
        .collect();
    assert_eq!(
        ours,
        [
            (running.as_str(), 1, None),
            (paused.as_str(), 2, Some(&pause)),
            (stopped.as_str(), 0, Some(&stop)),
        ]
    );
    for listed in listed
        .iter()
        .filter(|c| c.projection_name.starts_with(&prefix))
    {
        assert_eq!(
            Some(listed),
            repo.get_checkpoint_data(&listed.projection_name)
                .await
                .unwrap()
                .as_ref(),
            "get_all_checkpoints and get_checkpoint_data disagree on a halt"
        );
    }
}

/// A halt whose texts hold NUL characters, or whose reason is megabytes long, is recorded
/// anyway, as every backend can store it: NUL becomes U+FFFD, the reason is cut to 16 KiB.
pub async fn halt_texts_are_made_storable(repo: Repo) {
    let name = unique_name("checkpoint-halt-text");
    let at = now_micros();
    let huge = format!("bad\0input {}", "x".repeat(5 * 1024 * 1024));
    set_halt(&repo, &name, Some(&pause(&huge, at))).await;
    let Some(Halt::Paused {
        reason,
        at: read_at,
    }) = halt(&repo, &name).await
    else {
        panic!("the pause was not recorded");
    };
    assert_eq!(read_at, at);
    assert!(
        reason.starts_with("bad\u{FFFD}input xxx"),
        "{}",
        &reason[..40]
    );
    assert!(!reason.contains('\0'));
    assert!(
        reason.len() <= 16 * 1024,
        "a reason of {} bytes was kept",
        reason.len()
    );
    assert!(reason.ends_with(" more bytes]"), "no note on the cut");

    let mut stopped = full_stop(at);
    stopped.error = "nul\0here".to_owned();
    stopped.event_type = Some("type\0".to_owned());
    set_halt(&repo, &name, Some(&Halt::Stopped(stopped.clone()))).await;
    let Some(Halt::Stopped(read)) = halt(&repo, &name).await else {
        panic!("the stop was not recorded");
    };
    assert_eq!(read.error, "nul\u{FFFD}here");
    assert_eq!(read.event_type.as_deref(), Some("type\u{FFFD}"));
    assert_eq!(
        (
            read.position,
            read.event_id,
            read.kind,
            read.attempts,
            read.at
        ),
        (
            stopped.position,
            stopped.event_id,
            stopped.kind,
            stopped.attempts,
            stopped.at
        )
    );
}
