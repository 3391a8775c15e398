//! The storage conformance suite: one set of behavioural checks that every implementation of
//! [`CheckpointRepository`](projections::CheckpointRepository),
//! [`DLQRepository`](projections::DLQRepository) and [`EventStore`](projections::EventStore)
//! must pass, so the in-memory and database backends cannot drift apart.
//!
//! Each check is a `pub async fn` taking the implementation as an `Arc<dyn Trait>`. The
//! [`checkpoint_tests!`], [`dlq_tests!`] and [`store_tests!`] macros turn every check into its
//! own `#[tokio::test]`, so a failure names the behaviour:
//!
//! ```ignore
//! mod conformance;
//!
//! conformance::checkpoint_tests!(checkpoint, async {
//!     Arc::new(InMemoryCheckpointRepository::new())
//! });
//! ```
//!
//! The factory is an expression evaluating to a future; it is evaluated once per test and
//! must give an instance the check may write to. The checks never assume that the instance is
//! empty or private to them: they use projection names and aggregate ids that are fresh per
//! check, read global numbers as deltas under [`exclusive_dlq`], and compare store positions
//! relative to the head they saw, so one shared database serves every check of a test binary
//! while they run concurrently. Two *processes* running the DLQ or store suites against one
//! database at the same time can still disturb the queue-wide DLQ counts and the backlog
//! counts; run test binaries one after the other (what `cargo test` does).
//!
//! Timestamps handed to a backend are truncated to microseconds, the precision of PostgreSQL's
//! `timestamptz`, and must come back exactly. Timestamps a backend takes from its own clock are
//! compared with this process's clock within [`CLOCK_TOLERANCE`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod checkpoint;
pub mod dlq;
pub mod store;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use uuid::Uuid;

/// How far a time taken from a backend's clock may be from this process's clock. Wide enough
/// for a database on another host, narrow enough to catch a time-zone or unit mistake.
pub const CLOCK_TOLERANCE: TimeDelta = TimeDelta::minutes(5);

/// A name that no other check, run or process uses.
pub fn unique_name(what: &str) -> String {
    format!("conformance-{what}-{}", Uuid::new_v4().simple())
}

/// Now, truncated to microseconds so that every backend can store it exactly.
pub fn now_micros() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Asserts that `time`, taken from the backend's clock, is close to now.
pub fn assert_recent(time: DateTime<Utc>, what: &str) {
    let now = Utc::now();
    let distance = (now - time).abs();
    assert!(
        distance <= CLOCK_TOLERANCE,
        "{what} is {time}, {distance} away from now ({now}): a time-zone or unit mistake?"
    );
}

/// Asserts that `names` is sorted the way Rust orders strings (byte order). On PostgreSQL
/// that takes `ORDER BY name COLLATE "C"`: a locale collation orders case and punctuation
/// differently.
pub fn assert_sorted_by_name<'a>(names: impl IntoIterator<Item = &'a str>, what: &str) {
    let names: Vec<&str> = names.into_iter().collect();
    for pair in names.windows(2) {
        assert!(
            pair[0] < pair[1],
            "{what} must be sorted by name in byte order (COLLATE \"C\" on PostgreSQL), \
             but {:?} comes before {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// Serialises the dead-letter checks that read or change queue-wide numbers (stats,
/// `delete_resolved(0)`) against the other dead-letter checks of the same test binary.
static DLQ_QUEUE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Held by a dead-letter check that only reads and writes its own entries.
pub async fn shared_dlq() -> tokio::sync::RwLockReadGuard<'static, ()> {
    DLQ_QUEUE.read().await
}

/// Held by a dead-letter check that reads or changes numbers over the whole queue.
pub async fn exclusive_dlq() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    DLQ_QUEUE.write().await
}

/// Generates one `#[tokio::test]` per check, in a module of its own. Not for direct use: call
/// [`checkpoint_tests!`], [`dlq_tests!`] or [`store_tests!`].
#[doc(hidden)]
macro_rules! __conformance_tests {
    (
        $attrs:tt $module:ident, $make:expr, $subject:ty, $suite:ident,
        [$($check:ident),* $(,)?]
    ) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $(
                $crate::conformance::__conformance_tests!(
                    @one $attrs $make, $subject, $suite, $check
                );
            )*
        }
    };
    (@one [$($attr:tt)*] $make:expr, $subject:ty, $suite:ident, $check:ident) => {
        #[::tokio::test]
        $($attr)*
        async fn $check() {
            let subject: ::std::sync::Arc<$subject> = $make.await;
            $crate::conformance::$suite::$check(subject).await;
        }
    };
}
pub(crate) use __conformance_tests;

/// Every [`CheckpointRepository`](projections::CheckpointRepository) check as a test in
/// module `$module`. `$make` is evaluated in each test and must be a future of an
/// `Arc<impl CheckpointRepository>` (or an `Arc<dyn CheckpointRepository>`). Attributes
/// before the module name (`#[ignore = "..."]`) go on every test.
macro_rules! checkpoint_tests {
    ($(#[$attr:meta])* $module:ident, $make:expr $(,)?) => {
        $crate::conformance::__conformance_tests!(
            [$(#[$attr])*] $module, $make, dyn ::projections::CheckpointRepository, checkpoint,
            [
                unknown_projection_has_no_checkpoint,
                update_then_get,
                position_never_moves_back_but_counter_adds,
                last_event_follows_position,
                last_processed_at_is_the_update_time,
                reset_removes_checkpoint,
                get_all_sorted_by_name_and_complete,
                projections_are_independent,
                pause_round_trips,
                stop_round_trips_every_field,
                update_keeps_the_halt,
                clearing_the_halt,
                reset_removes_the_halt,
                halt_without_checkpoint_creates_it_at_zero,
                get_all_shows_halts,
                halt_texts_are_made_storable,
            ]
        );
    };
}
pub(crate) use checkpoint_tests;

/// Every [`DLQRepository`](projections::DLQRepository) check as a test in module `$module`;
/// see [`checkpoint_tests!`].
macro_rules! dlq_tests {
    ($(#[$attr:meta])* $module:ident, $make:expr $(,)?) => {
        $crate::conformance::__conformance_tests!(
            [$(#[$attr])*] $module, $make, dyn ::projections::DLQRepository, dlq,
            [
                add_then_get_by_id_returns_every_field,
                second_failure_updates_the_same_entry,
                same_event_in_two_projections_gives_two_entries,
                list_filters_orders_oldest_first_and_limits,
                mark_retrying,
                mark_resolved,
                invalid_transitions_are_rejected,
                unknown_id_is_not_found,
                stats_count_statuses_projections_and_oldest_failure,
                projection_counts_cover_unresolved_entries,
                delete_resolved_zero_days_deletes_only_resolved,
                delete_resolved_keeps_recently_resolved,
                failure_with_nul_and_huge_message_is_recorded,
            ]
        );
    };
}
pub(crate) use dlq_tests;

/// Every [`EventStore`](projections::EventStore) check as a test in module `$module`; see
/// [`checkpoint_tests!`].
macro_rules! store_tests {
    ($(#[$attr:meta])* $module:ident, $make:expr $(,)?) => {
        $crate::conformance::__conformance_tests!(
            [$(#[$attr])*] $module, $make, dyn ::projections::EventStore, store,
            [
                positions_are_gap_free_and_consecutive,
                versions_follow_expected_version,
                conflicting_append_writes_nothing,
                event_of_another_aggregate_is_rejected,
                empty_append_writes_nothing,
                read_stream_keeps_metadata_and_payload,
                events_read_back_exactly_as_appended,
                occurred_at_before_every_store_is_refused,
                read_stream_returns_one_aggregate_in_version_order,
                read_all_after_position_with_limit,
                head_position_is_the_last_readable_event,
                backlog_counts_types_after_position,
                read_filtered_selects_types_aggregates_and_tenants,
                read_filtered_reads_on_over_what_it_does_not_select,
                backlog_filtered_counts_what_the_filter_selects,
                subscribe_changes_after_append,
            ]
        );
    };
}
pub(crate) use store_tests;
