//! Conformance checks for [`CheckpointRepository`].

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use projections::CheckpointRepository;
use projections::checkpoint::{CheckpointData, CheckpointUpdate};
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
