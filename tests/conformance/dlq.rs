//! Conformance checks for [`DLQRepository`].

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use projections::dlq::{DLQFilter, FailedEvent};
use projections::{DLQEntry, DLQRepository, DLQStats, DLQStatus, StorageError};
use serde_json::json;
use uuid::Uuid;

use super::{
    assert_recent, assert_sorted_by_name, exclusive_dlq, now_micros, shared_dlq, unique_name,
};

/// The implementation under test.
pub type Repo = Arc<dyn DLQRepository>;

/// An id no backend hands out.
const UNKNOWN_ID: i64 = i64::MAX;

/// An error with a chain of sources, outermost first.
#[derive(Debug)]
struct ChainedError {
    message: String,
    source: Option<Box<ChainedError>>,
}

impl ChainedError {
    fn new(messages: &[&str]) -> Self {
        let (message, sources) = messages.split_first().expect("at least one message");
        Self {
            message: (*message).to_owned(),
            source: (!sources.is_empty()).then(|| Box::new(Self::new(sources))),
        }
    }
}

impl fmt::Display for ChainedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ChainedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A failure of `event_id` in `projection` at `at`; `messages` is the error then its sources.
fn failure(
    projection: &str,
    event_id: Uuid,
    at: DateTime<Utc>,
    attempts: u32,
    messages: &[&str],
) -> FailedEvent {
    let error = ChainedError::new(messages);
    let mut failure = FailedEvent::new(
        event_id,
        projection,
        "conformance.item_added",
        json!({
            "metadata": { "event_id": event_id.to_string(), "event_type": "conformance.item_added" },
            "payload": { "sku": "SKU-1", "quantity": 2 },
        }),
        &error,
        attempts,
    );
    failure.failed_at = at;
    failure
}

async fn add(repo: &Repo, failure: FailedEvent) -> i64 {
    repo.add_failed_event(failure)
        .await
        .unwrap_or_else(|e| panic!("add_failed_event failed: {e}"))
}

/// A first failure of a fresh event in `projection` at `at`, with one attempt.
async fn add_new(repo: &Repo, projection: &str, at: DateTime<Utc>) -> i64 {
    add(
        repo,
        failure(projection, Uuid::new_v4(), at, 1, &["handler failed"]),
    )
    .await
}

async fn entry(repo: &Repo, id: i64) -> DLQEntry {
    repo.get_by_id(id)
        .await
        .unwrap_or_else(|e| panic!("get_by_id({id}) failed: {e}"))
        .unwrap_or_else(|| panic!("dead-letter entry {id} not found"))
}

async fn list(repo: &Repo, filter: DLQFilter) -> Vec<DLQEntry> {
    repo.get_failed_events(filter.clone())
        .await
        .unwrap_or_else(|e| panic!("get_failed_events({filter:?}) failed: {e}"))
}

async fn list_ids(repo: &Repo, filter: DLQFilter) -> Vec<i64> {
    list(repo, filter).await.iter().map(|e| e.id).collect()
}

async fn stats(repo: &Repo) -> DLQStats {
    repo.get_stats()
        .await
        .unwrap_or_else(|e| panic!("get_stats failed: {e}"))
}

async fn retrying(repo: &Repo, id: i64) {
    repo.mark_retrying(id)
        .await
        .unwrap_or_else(|e| panic!("mark_retrying({id}) failed: {e}"));
}

async fn resolve(repo: &Repo, id: i64, by: &str) {
    repo.mark_resolved(id, by)
        .await
        .unwrap_or_else(|e| panic!("mark_resolved({id}) failed: {e}"));
}

fn assert_invalid_transition(
    result: Result<(), StorageError>,
    expected_id: i64,
    expected_from: &str,
    expected_to: &str,
) {
    match result {
        Err(StorageError::InvalidTransition { id, from, to }) => {
            assert_eq!(
                (id, from, to),
                (expected_id, expected_from, expected_to),
                "InvalidTransition names the wrong entry or statuses"
            );
        }
        other => panic!(
            "moving entry {expected_id} from {expected_from} to {expected_to} must be \
             StorageError::InvalidTransition, got {other:?}"
        ),
    }
}

fn assert_not_found(result: Result<(), StorageError>, operation: &str) {
    match result {
        Err(StorageError::NotFound { .. }) => {}
        other => {
            panic!("{operation} on an unknown id must be StorageError::NotFound, got {other:?}")
        }
    }
}

/// `get_by_id` returns every field `add_failed_event` stored, and a new entry is failed with
/// no resolution.
pub async fn add_then_get_by_id_returns_every_field(repo: Repo) {
    let _queue = shared_dlq().await;
    let projection = unique_name("dlq-round-trip");
    let event_id = Uuid::new_v4();
    let at = now_micros() - TimeDelta::seconds(90);
    let event_data = json!({
        "metadata": {
            "event_id": event_id.to_string(),
            "event_type": "conformance.item_added",
            "aggregate_version": 7,
            "tags": ["a", "b"],
            "causation_id": null,
        },
        "payload": { "sku": "SKU-ÄÖ-✓", "quantity": 3, "gift": true, "nested": { "x": [1, 2, 3] } },
    });
    let error = ChainedError::new(&[
        "handler failed",
        "database unavailable",
        "connection reset by peer",
    ]);
    let mut new_failure = FailedEvent::new(
        event_id,
        &projection,
        "conformance.item_added",
        event_data.clone(),
        &error,
        3,
    )
    .with_position(Some(42));
    new_failure.failed_at = at;
    assert_eq!(
        new_failure.error_chain,
        ["database unavailable", "connection reset by peer"],
        "fixture: FailedEvent::new takes the chain from the error"
    );

    let id = add(&repo, new_failure).await;
    let stored = entry(&repo, id).await;
    assert_eq!(stored.id, id);
    assert_eq!(stored.event_id, event_id);
    assert_eq!(stored.position, Some(42));
    assert_eq!(stored.projection_name, projection);
    assert_eq!(stored.event_type, "conformance.item_added");
    assert_eq!(stored.event_data, event_data);
    assert_eq!(stored.error_message, "handler failed");
    assert_eq!(
        stored.error_chain,
        ["database unavailable", "connection reset by peer"],
        "the error chain must keep its order, outermost first"
    );
    assert_eq!(stored.attempts, 3);
    assert_eq!(stored.first_failed_at, at);
    assert_eq!(stored.last_failed_at, at);
    assert_eq!(stored.status, DLQStatus::Failed);
    assert_eq!(stored.resolved_at, None);
    assert_eq!(stored.resolved_by, None);

    // No position, no sources.
    let bare = add(
        &repo,
        failure(&projection, Uuid::new_v4(), at, 1, &["only message"]),
    )
    .await;
    assert_ne!(bare, id, "two events got one entry id");
    let bare = entry(&repo, bare).await;
    assert_eq!(bare.position, None);
    assert_eq!(bare.error_message, "only message");
    assert!(bare.error_chain.is_empty());
}

/// A second failure of the same event in the same projection updates its entry: attempts add
/// up, the last error replaces the previous one, the first failure time stays, and a resolved
/// or retrying entry is failed again with its resolution cleared.
pub async fn second_failure_updates_the_same_entry(repo: Repo) {
    let _queue = shared_dlq().await;
    let projection = unique_name("dlq-upsert");
    let event_id = Uuid::new_v4();
    let first_at = now_micros() - TimeDelta::minutes(10);
    let second_at = first_at + TimeDelta::minutes(5);

    let id = add(
        &repo,
        failure(
            &projection,
            event_id,
            first_at,
            2,
            &["first error", "cause one"],
        ),
    )
    .await;
    let same = add(
        &repo,
        failure(
            &projection,
            event_id,
            second_at,
            3,
            &["second error", "cause two", "root two"],
        ),
    )
    .await;
    assert_eq!(
        same, id,
        "a second failure must update the entry, not add one"
    );
    let updated = entry(&repo, id).await;
    assert_eq!(updated.attempts, 5, "attempts must add up");
    assert_eq!(updated.error_message, "second error");
    assert_eq!(updated.error_chain, ["cause two", "root two"]);
    assert_eq!(updated.first_failed_at, first_at);
    assert_eq!(updated.last_failed_at, second_at);
    assert_eq!(updated.status, DLQStatus::Failed);
    assert_eq!(updated.event_id, event_id);
    assert_eq!(updated.projection_name, projection);
    assert_eq!(
        list_ids(&repo, DLQFilter::all().projection(&projection)).await,
        [id]
    );

    resolve(&repo, id, "operator").await;
    let third_at = second_at + TimeDelta::minutes(1);
    let again = add(
        &repo,
        failure(&projection, event_id, third_at, 1, &["third error"]),
    )
    .await;
    assert_eq!(again, id);
    let refailed = entry(&repo, id).await;
    assert_eq!(
        refailed.status,
        DLQStatus::Failed,
        "a new failure reopens it"
    );
    assert_eq!(
        refailed.resolved_at, None,
        "a new failure clears resolved_at"
    );
    assert_eq!(
        refailed.resolved_by, None,
        "a new failure clears resolved_by"
    );
    assert_eq!(refailed.attempts, 6);
    assert_eq!(refailed.error_message, "third error");
    assert!(refailed.error_chain.is_empty());
    assert_eq!(refailed.first_failed_at, first_at);
    assert_eq!(refailed.last_failed_at, third_at);

    retrying(&repo, id).await;
    let fourth_at = third_at + TimeDelta::minutes(1);
    assert_eq!(
        add(
            &repo,
            failure(&projection, event_id, fourth_at, 1, &["fourth error"])
        )
        .await,
        id
    );
    let after_retry = entry(&repo, id).await;
    assert_eq!(after_retry.status, DLQStatus::Failed);
    assert_eq!(after_retry.attempts, 7);
    assert_eq!(after_retry.last_failed_at, fourth_at);
}

/// The same event failing in two projections gives each projection its own entry.
pub async fn same_event_in_two_projections_gives_two_entries(repo: Repo) {
    let _queue = shared_dlq().await;
    let first = unique_name("dlq-two-projections-a");
    let second = unique_name("dlq-two-projections-b");
    let event_id = Uuid::new_v4();
    let at = now_micros();

    let first_id = add(&repo, failure(&first, event_id, at, 2, &["a failed"])).await;
    let second_id = add(&repo, failure(&second, event_id, at, 5, &["b failed"])).await;
    assert_ne!(first_id, second_id);

    let first_entry = entry(&repo, first_id).await;
    let second_entry = entry(&repo, second_id).await;
    assert_eq!(
        (first_entry.projection_name.as_str(), first_entry.attempts),
        (first.as_str(), 2)
    );
    assert_eq!(
        (second_entry.projection_name.as_str(), second_entry.attempts),
        (second.as_str(), 5)
    );
    assert_eq!(first_entry.event_id, event_id);
    assert_eq!(second_entry.event_id, event_id);
    assert_eq!(first_entry.error_message, "a failed");
    assert_eq!(second_entry.error_message, "b failed");

    resolve(&repo, first_id, "operator").await;
    assert_eq!(entry(&repo, second_id).await.status, DLQStatus::Failed);
    assert_eq!(
        list_ids(&repo, DLQFilter::all().projection(&second)).await,
        [second_id]
    );
}

/// Listing filters by projection and status, returns the oldest first failure first (not
/// the first inserted), and stops at the limit.
pub async fn list_filters_orders_oldest_first_and_limits(repo: Repo) {
    let _queue = shared_dlq().await;
    let projection = unique_name("dlq-list");
    let other = unique_name("dlq-list-other");
    let base = now_micros() - TimeDelta::hours(1);

    // Inserted out of time order, so that id order and age order differ.
    let second = add_new(&repo, &projection, base + TimeDelta::minutes(2)).await;
    let first = add_new(&repo, &projection, base + TimeDelta::minutes(1)).await;
    let fourth = add_new(&repo, &projection, base + TimeDelta::minutes(4)).await;
    let third = add_new(&repo, &projection, base + TimeDelta::minutes(3)).await;
    let elsewhere = add_new(&repo, &other, base).await;
    resolve(&repo, second, "operator").await;
    retrying(&repo, third).await;

    let ours = DLQFilter::all().projection(&projection);
    assert_eq!(
        list_ids(&repo, ours.clone()).await,
        [first, second, third, fourth],
        "entries must come oldest first failure first"
    );
    assert_eq!(
        list_ids(&repo, ours.clone().status(DLQStatus::Failed)).await,
        [first, fourth]
    );
    assert_eq!(
        list_ids(&repo, DLQFilter::failed_in(&projection)).await,
        [first, fourth]
    );
    assert_eq!(
        list_ids(&repo, ours.clone().status(DLQStatus::Retrying)).await,
        [third]
    );
    assert_eq!(
        list_ids(&repo, ours.clone().status(DLQStatus::Resolved)).await,
        [second]
    );
    assert_eq!(
        list_ids(&repo, ours.clone().limit(2)).await,
        [first, second]
    );
    assert_eq!(
        list_ids(&repo, ours.clone().status(DLQStatus::Failed).limit(1)).await,
        [first]
    );
    assert_eq!(list_ids(&repo, ours.clone().limit(0)).await, [0_i64; 0]);
    assert_eq!(
        list_ids(&repo, ours.limit(100)).await,
        [first, second, third, fourth]
    );
    assert_eq!(
        list_ids(&repo, DLQFilter::all().projection(&other)).await,
        [elsewhere]
    );
    assert!(
        list(
            &repo,
            DLQFilter::all().projection(unique_name("dlq-list-none"))
        )
        .await
        .is_empty()
    );

    // Without a projection: every projection, still filtered by status and oldest first.
    let failed = list(&repo, DLQFilter::all().status(DLQStatus::Failed)).await;
    assert!(failed.iter().all(|e| e.status == DLQStatus::Failed));
    let failed_ids: Vec<i64> = failed.iter().map(|e| e.id).collect();
    for id in [first, fourth, elsewhere] {
        assert!(failed_ids.contains(&id), "failed entry {id} not listed");
    }
    for id in [second, third] {
        assert!(!failed_ids.contains(&id), "entry {id} listed as failed");
    }
    let everything = list(&repo, DLQFilter::all()).await;
    assert!(
        everything
            .windows(2)
            .all(|pair| pair[0].first_failed_at <= pair[1].first_failed_at),
        "the whole queue must come oldest first"
    );
    let everything: Vec<i64> = everything.iter().map(|e| e.id).collect();
    for id in [first, second, third, fourth, elsewhere] {
        assert!(everything.contains(&id), "entry {id} not listed");
    }
}

/// `mark_retrying` moves a failed entry to retrying and changes nothing else; a retrying
/// entry may then be resolved.
pub async fn mark_retrying(repo: Repo) {
    let _queue = shared_dlq().await;
    let projection = unique_name("dlq-retrying");
    let id = add_new(&repo, &projection, now_micros()).await;
    let before = entry(&repo, id).await;

    retrying(&repo, id).await;
    let after = entry(&repo, id).await;
    assert_eq!(after.status, DLQStatus::Retrying);
    assert_eq!(after.resolved_at, None);
    assert_eq!(after.resolved_by, None);
    assert_eq!(after.attempts, before.attempts);
    assert_eq!(after.first_failed_at, before.first_failed_at);
    assert_eq!(after.last_failed_at, before.last_failed_at);
    assert_eq!(after.error_message, before.error_message);
    assert_eq!(
        list_ids(
            &repo,
            DLQFilter::all()
                .projection(&projection)
                .status(DLQStatus::Retrying)
        )
        .await,
        [id]
    );
    assert!(
        list(&repo, DLQFilter::failed_in(&projection))
            .await
            .is_empty()
    );

    resolve(&repo, id, "replayer").await;
    let resolved = entry(&repo, id).await;
    assert_eq!(resolved.status, DLQStatus::Resolved);
    assert_eq!(resolved.resolved_by.as_deref(), Some("replayer"));
}

/// `mark_resolved` records when and by whom, and changes nothing else.
pub async fn mark_resolved(repo: Repo) {
    let _queue = shared_dlq().await;
    let projection = unique_name("dlq-resolved");
    let id = add_new(&repo, &projection, now_micros() - TimeDelta::minutes(3)).await;
    let before = entry(&repo, id).await;

    resolve(&repo, id, "alice@ops").await;
    let after = entry(&repo, id).await;
    assert_eq!(after.status, DLQStatus::Resolved);
    assert_eq!(after.resolved_by.as_deref(), Some("alice@ops"));
    let resolved_at = after.resolved_at.expect("mark_resolved sets resolved_at");
    assert_recent(resolved_at, "resolved_at");
    assert_eq!(after.attempts, before.attempts);
    assert_eq!(after.first_failed_at, before.first_failed_at);
    assert_eq!(after.last_failed_at, before.last_failed_at);
    assert_eq!(after.error_message, before.error_message);
    assert_eq!(after.event_data, before.event_data);
    assert!(
        list(&repo, DLQFilter::failed_in(&projection))
            .await
            .is_empty()
    );
    assert_eq!(
        list_ids(
            &repo,
            DLQFilter::all()
                .projection(&projection)
                .status(DLQStatus::Resolved)
        )
        .await,
        [id]
    );
}

/// Moves the status rules forbid are `InvalidTransition` and change nothing: a resolved
/// entry can be neither retried nor resolved again, a retrying one not retried again.
pub async fn invalid_transitions_are_rejected(repo: Repo) {
    let _queue = shared_dlq().await;
    let projection = unique_name("dlq-transitions");

    let resolved = add_new(&repo, &projection, now_micros()).await;
    resolve(&repo, resolved, "first").await;
    let before = entry(&repo, resolved).await;
    assert_invalid_transition(
        repo.mark_retrying(resolved).await,
        resolved,
        "resolved",
        "retrying",
    );
    assert_invalid_transition(
        repo.mark_resolved(resolved, "second").await,
        resolved,
        "resolved",
        "resolved",
    );
    assert_eq!(
        entry(&repo, resolved).await,
        before,
        "a rejected move changed the entry"
    );

    let in_retry = add_new(&repo, &projection, now_micros()).await;
    retrying(&repo, in_retry).await;
    assert_invalid_transition(
        repo.mark_retrying(in_retry).await,
        in_retry,
        "retrying",
        "retrying",
    );
    assert_eq!(entry(&repo, in_retry).await.status, DLQStatus::Retrying);
}

/// An id that does not exist is `NotFound` for every move, and `None` for `get_by_id`.
pub async fn unknown_id_is_not_found(repo: Repo) {
    let _queue = shared_dlq().await;
    for id in [UNKNOWN_ID, -1] {
        assert_eq!(repo.get_by_id(id).await.unwrap(), None);
        assert_not_found(repo.mark_retrying(id).await, "mark_retrying");
        assert_not_found(repo.mark_resolved(id, "operator").await, "mark_resolved");
    }
}

fn delta(after: u64, before: u64) -> i128 {
    i128::from(after) - i128::from(before)
}

/// Stats count entries per status, projections with unresolved entries, and the first
/// failure among unresolved entries. Checked as changes, the queue may hold other entries.
pub async fn stats_count_statuses_projections_and_oldest_failure(repo: Repo) {
    let _queue = exclusive_dlq().await;
    let first = unique_name("dlq-stats-a");
    let second = unique_name("dlq-stats-b");
    let now = now_micros();
    let before = stats(&repo).await;

    let failed = add_new(&repo, &first, now).await;
    let in_retry = add_new(&repo, &first, now).await;
    let resolved = add_new(&repo, &first, now).await;
    let other = add_new(&repo, &second, now).await;
    retrying(&repo, in_retry).await;
    resolve(&repo, resolved, "operator").await;

    let after = stats(&repo).await;
    let deltas = |after: &DLQStats| {
        (
            delta(after.failed, before.failed),
            delta(after.retrying, before.retrying),
            delta(after.resolved, before.resolved),
            delta(after.affected_projections, before.affected_projections),
        )
    };
    assert_eq!(
        deltas(&after),
        (2, 1, 1, 2),
        "(failed, retrying, resolved, affected projections) changed wrongly"
    );

    // A projection whose entries are all resolved is no longer affected.
    resolve(&repo, failed, "operator").await;
    resolve(&repo, in_retry, "operator").await;
    assert_eq!(deltas(&stats(&repo).await), (1, 0, 3, 1));

    // The oldest failure is the first failure of the oldest failed or retrying entry.
    let oldest_before = before.oldest_failure.map_or(now, |t| t.min(now));
    let ancient = oldest_before - TimeDelta::days(1);
    let old = add_new(&repo, &second, ancient).await;
    let with_old = stats(&repo).await;
    assert_eq!(with_old.oldest_failure, Some(ancient));
    assert_eq!(deltas(&with_old), (2, 0, 3, 1));
    retrying(&repo, old).await;
    assert_eq!(
        stats(&repo).await.oldest_failure,
        Some(ancient),
        "retrying entries count for the oldest failure"
    );
    resolve(&repo, old, "operator").await;
    let expected = before.oldest_failure.map_or(now, |t| t.min(now));
    assert_eq!(
        stats(&repo).await.oldest_failure,
        Some(expected),
        "resolved entries must not count for the oldest failure"
    );

    resolve(&repo, other, "operator").await;
    let done = stats(&repo).await;
    assert_eq!(deltas(&done), (0, 0, 5, 0));
    assert_eq!(done.oldest_failure, before.oldest_failure);
}

/// Projection counts give the failed and retrying entries per projection, sorted by name in
/// byte order, and leave out projections whose entries are all resolved.
pub async fn projection_counts_cover_unresolved_entries(repo: Repo) {
    let _queue = shared_dlq().await;
    let prefix = unique_name("dlq-counts");
    let busy = format!("{prefix}-b");
    let single = format!("{prefix}-C");
    let settled = format!("{prefix}-a");
    let at = now_micros();

    add_new(&repo, &busy, at).await;
    add_new(&repo, &busy, at).await;
    let busy_retrying = add_new(&repo, &busy, at).await;
    retrying(&repo, busy_retrying).await;
    let busy_resolved = add_new(&repo, &busy, at).await;
    resolve(&repo, busy_resolved, "operator").await;
    add_new(&repo, &single, at).await;
    let settled_id = add_new(&repo, &settled, at).await;
    resolve(&repo, settled_id, "operator").await;

    let counts = repo.get_projection_counts().await.unwrap();
    assert_sorted_by_name(
        counts.iter().map(|(name, _)| name.as_str()),
        "get_projection_counts",
    );
    let ours: Vec<(&str, u64)> = counts
        .iter()
        .filter(|(name, _)| name.starts_with(&prefix))
        .map(|(name, count)| (name.as_str(), *count))
        .collect();
    assert_eq!(ours, [(single.as_str(), 1), (busy.as_str(), 3)]);
}

/// `delete_resolved(0)` deletes every entry resolved before now, and no unresolved entry.
pub async fn delete_resolved_zero_days_deletes_only_resolved(repo: Repo) {
    let _queue = exclusive_dlq().await;
    let projection = unique_name("dlq-delete-now");
    let at = now_micros();
    let resolved = add_new(&repo, &projection, at).await;
    let failed = add_new(&repo, &projection, at + TimeDelta::seconds(1)).await;
    let in_retry = add_new(&repo, &projection, at + TimeDelta::seconds(2)).await;
    resolve(&repo, resolved, "operator").await;
    retrying(&repo, in_retry).await;

    let deleted = repo.delete_resolved(0).await.unwrap();
    assert!(deleted >= 1, "delete_resolved(0) deleted {deleted} entries");
    assert_eq!(
        repo.get_by_id(resolved).await.unwrap(),
        None,
        "a resolved entry survived delete_resolved(0)"
    );
    assert_eq!(entry(&repo, failed).await.status, DLQStatus::Failed);
    assert_eq!(entry(&repo, in_retry).await.status, DLQStatus::Retrying);
    assert_eq!(
        list_ids(&repo, DLQFilter::all().projection(&projection)).await,
        [failed, in_retry]
    );
    assert_eq!(stats(&repo).await.resolved, 0);
}

/// `delete_resolved(days)` keeps entries resolved within the last `days` days, however large
/// `days` is, and every unresolved entry.
pub async fn delete_resolved_keeps_recently_resolved(repo: Repo) {
    let _queue = shared_dlq().await;
    let projection = unique_name("dlq-delete-old");
    let at = now_micros();
    let resolved = add_new(&repo, &projection, at).await;
    let failed = add_new(&repo, &projection, at + TimeDelta::seconds(1)).await;
    resolve(&repo, resolved, "operator").await;

    for days in [1, 30, 36_500, u32::MAX] {
        repo.delete_resolved(days)
            .await
            .unwrap_or_else(|e| panic!("delete_resolved({days}) failed: {e}"));
        assert_eq!(
            list_ids(&repo, DLQFilter::all().projection(&projection)).await,
            [resolved, failed],
            "delete_resolved({days}) deleted an entry resolved just now"
        );
    }
    assert_eq!(entry(&repo, resolved).await.status, DLQStatus::Resolved);
}

/// A failure whose message, source chain, event data and names hold NUL characters, and whose
/// message is 5 MB long, is recorded anyway, as a first failure and as a repeated one:
/// `FailedEvent::new` makes it storable for every backend (NUL becomes U+FFFD, a message is
/// cut to 16 KiB with a note), and it reads back as made.
pub async fn failure_with_nul_and_huge_message_is_recorded(repo: Repo) {
    let _queue = shared_dlq().await;
    let projection = unique_name("dlq-storable");
    let event_id = Uuid::new_v4();
    let at = now_micros();
    let huge = format!("bad\0input {}", "y".repeat(5 * 1024 * 1024));
    let error = ChainedError::new(&[&huge, "cause\0one", "root"]);
    let mut new_failure = FailedEvent::new(
        event_id,
        format!("{projection}\0"),
        "conformance.nul\0type",
        json!({
            "metadata": { "event_id": event_id.to_string(), "note\0": "a\0b" },
            "payload": { "raw": ["\0\0", 1, { "k\0": null }], "clean": "ä✓" },
        }),
        &error,
        2,
    );
    new_failure.failed_at = at;

    let stored_projection = format!("{projection}\u{FFFD}");
    let id = add(&repo, new_failure.clone()).await;
    let stored = entry(&repo, id).await;
    assert!(
        stored.error_message.starts_with("bad\u{FFFD}input yyy"),
        "{:?}",
        &stored.error_message[..40]
    );
    assert!(
        stored.error_message.len() <= 16 * 1024,
        "a message of {} bytes was kept",
        stored.error_message.len()
    );
    assert!(
        stored.error_message.ends_with(" more bytes]"),
        "no note on the cut"
    );
    assert_eq!(stored.error_message, new_failure.error_message);
    assert_eq!(stored.error_chain, ["cause\u{FFFD}one", "root"]);
    assert_eq!(stored.projection_name, stored_projection);
    assert_eq!(stored.event_type, "conformance.nul\u{FFFD}type");
    assert_eq!(
        stored.event_data,
        json!({
            "metadata": { "event_id": event_id.to_string(), "note\u{FFFD}": "a\u{FFFD}b" },
            "payload": { "raw": ["\u{FFFD}\u{FFFD}", 1, { "k\u{FFFD}": null }], "clean": "ä✓" },
        })
    );
    assert_eq!((stored.attempts, stored.first_failed_at), (2, at));

    // Failing again updates the same entry, just as storably.
    let again = ChainedError::new(&["again\0", &huge]);
    let mut second = FailedEvent::new(
        event_id,
        format!("{projection}\0"),
        "conformance.nul\0type",
        json!({ "payload": "\0" }),
        &again,
        1,
    );
    second.failed_at = at + TimeDelta::seconds(1);
    assert_eq!(add(&repo, second.clone()).await, id);
    let updated = entry(&repo, id).await;
    assert_eq!(updated.error_message, "again\u{FFFD}");
    assert_eq!(updated.error_chain, second.error_chain);
    assert!(updated.error_chain[0].len() <= 16 * 1024);
    assert_eq!(updated.event_data, json!({ "payload": "\u{FFFD}" }));
    assert_eq!(updated.attempts, 3);
    assert_eq!(
        list_ids(&repo, DLQFilter::all().projection(&stored_projection)).await,
        [id]
    );
}
