//! Conformance checks for [`EventStore`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, SubsecRound, TimeDelta, Utc};
use projections::store::{AppendError, AppendResult, ReadFilter, ReadPage, TenantFilter};
use projections::{
    AnyEvent, Envelope, Event, EventMetadata, EventStore, ExpectedVersion, StorageError,
    StoredEvent,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{assert_recent, now_micros};

/// The implementation under test.
pub type Store = Arc<dyn EventStore>;

/// How long a check waits for its own appends to become readable (a database store may hold
/// them back while an earlier append of another test is still in flight).
const READABLE_WITHIN: Duration = Duration::from_secs(30);

/// A large enough `limit` to read everything a check appended.
const ALL: usize = 100_000;

/// An item put in a cart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, projections::Event)]
#[event(
    name = "conformance.item_added",
    aggregate = "ConformanceCart",
    version = 2
)]
pub struct ItemAdded {
    /// The item.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// A gift note, if any.
    pub note: Option<String>,
}

/// A cart paid for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, projections::Event)]
#[event(name = "conformance.cart_checked_out", aggregate = "ConformanceCart")]
pub struct CartCheckedOut {
    /// What was paid.
    pub total_cents: i64,
    /// The items bought.
    pub skus: Vec<String>,
}

/// Appended only by [`backlog_counts_types_after_position`], so it can count them exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, projections::Event)]
#[event(name = "conformance.backlog_probe_a")]
pub struct BacklogProbeA {
    /// Which probe.
    pub n: u32,
}

/// The other event type of [`backlog_counts_types_after_position`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, projections::Event)]
#[event(name = "conformance.backlog_probe_b")]
pub struct BacklogProbeB {
    /// Which probe.
    pub n: u32,
}

/// Appended only by the filtered-read checks, so they can expect exactly their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, projections::Event)]
#[event(name = "conformance.filter_probe_a", aggregate = "ConformanceFilter")]
pub struct FilterProbeA {
    /// Which probe.
    pub n: u32,
}

/// The second type of the filtered-read checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, projections::Event)]
#[event(name = "conformance.filter_probe_b", aggregate = "ConformanceFilter")]
pub struct FilterProbeB {
    /// Which probe.
    pub n: u32,
}

/// The third type of the filtered-read checks, of another aggregate type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, projections::Event)]
#[event(
    name = "conformance.filter_probe_c",
    aggregate = "ConformanceFilterOther"
)]
pub struct FilterProbeC {
    /// Which probe.
    pub n: u32,
}

/// Appended only by [`read_filtered_reads_on_over_what_it_does_not_select`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, projections::Event)]
#[event(name = "conformance.filter_probe_d", aggregate = "ConformanceFilter")]
pub struct FilterProbeD {
    /// Which probe.
    pub n: u32,
}

/// Appended only by [`backlog_filtered_counts_what_the_filter_selects`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, projections::Event)]
#[event(name = "conformance.filter_probe_e", aggregate = "ConformanceFilter")]
pub struct FilterProbeE {
    /// Which probe.
    pub n: u32,
}

/// The other type of [`backlog_filtered_counts_what_the_filter_selects`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, projections::Event)]
#[event(name = "conformance.filter_probe_f", aggregate = "ConformanceFilter")]
pub struct FilterProbeF {
    /// Which probe.
    pub n: u32,
}

/// An [`ItemAdded`] on `aggregate`.
fn item(aggregate: Uuid, sku: &str) -> AnyEvent {
    AnyEvent::new(Envelope::new(
        aggregate,
        ItemAdded {
            sku: sku.to_owned(),
            quantity: 1,
            note: None,
        },
    ))
}

/// `count` [`ItemAdded`] events on `aggregate`.
fn items(aggregate: Uuid, count: usize) -> Vec<AnyEvent> {
    (0..count)
        .map(|n| item(aggregate, &format!("SKU-{n}")))
        .collect()
}

fn ids(events: &[AnyEvent]) -> Vec<Uuid> {
    events.iter().map(AnyEvent::event_id).collect()
}

async fn append(
    store: &Store,
    aggregate: Uuid,
    expected: ExpectedVersion,
    events: Vec<AnyEvent>,
) -> AppendResult {
    store
        .append(aggregate, expected, events)
        .await
        .unwrap_or_else(|e| panic!("append to {aggregate} expecting {expected:?} failed: {e}"))
}

async fn head(store: &Store) -> u64 {
    store
        .head_position()
        .await
        .unwrap_or_else(|e| panic!("head_position failed: {e}"))
}

/// Waits until `position` is readable, and returns the head.
async fn wait_readable(store: &Store, position: u64) -> u64 {
    let waited = tokio::time::timeout(READABLE_WITHIN, async {
        loop {
            let head = head(store).await;
            if head >= position {
                return head;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| {
        panic!("position {position} did not become readable within {READABLE_WITHIN:?}")
    })
}

async fn read_all(store: &Store, after: u64, limit: usize) -> Vec<StoredEvent> {
    store
        .read_all(after, limit)
        .await
        .unwrap_or_else(|e| panic!("read_all({after}, {limit}) failed: {e}"))
}

async fn read_stream(store: &Store, aggregate: Uuid) -> Vec<AnyEvent> {
    store
        .read_stream(aggregate)
        .await
        .unwrap_or_else(|e| panic!("read_stream({aggregate}) failed: {e}"))
        .into_iter()
        .map(|stored| decoded(&stored).clone())
        .collect()
}

fn decoded(stored: &StoredEvent) -> &AnyEvent {
    stored.event().unwrap_or_else(|| {
        panic!("a conformance event did not decode: {stored:?}");
    })
}

fn position(stored: &StoredEvent) -> u64 {
    stored
        .position()
        .unwrap_or_else(|| panic!("a stored event has no position: {stored:?}"))
}

fn positions(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(position).collect()
}

/// The events among `events` whose id is one of `wanted`, as (position, id).
fn find(events: &[StoredEvent], wanted: &[Uuid]) -> Vec<(u64, Uuid)> {
    events
        .iter()
        .filter_map(|stored| {
            let event = stored.event()?;
            wanted
                .contains(&event.event_id())
                .then(|| (position(stored), event.event_id()))
        })
        .collect()
}

fn versions(events: &[AnyEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.metadata().aggregate_version)
        .collect()
}

/// The positions of one append increase from its first to its last event. They are
/// consecutive in memory and on SQLite; on PostgreSQL concurrent appends may interleave
/// (ADR 0011), so only the span is checked.
fn assert_consecutive(result: &AppendResult, count: u64, what: &str) {
    assert!(result.first_position >= 1, "{what}: positions start at 1");
    assert!(
        result.last_position - result.first_position + 1 >= count,
        "{what}: the positions of one append span at least its {count} events: {result:?}"
    );
}

fn assert_conflict(
    result: Result<AppendResult, AppendError>,
    aggregate: Uuid,
    expected: ExpectedVersion,
    actual: u64,
) {
    match result {
        Err(AppendError::Conflict {
            aggregate_id,
            expected: reported_expected,
            actual: reported_actual,
        }) => assert_eq!(
            (aggregate_id, reported_expected, reported_actual),
            (aggregate, expected, actual),
            "the conflict names the wrong aggregate or versions"
        ),
        other => panic!(
            "appending to {aggregate} at version {actual} expecting {expected:?} must be \
             AppendError::Conflict, got {other:?}"
        ),
    }
}

/// Positions are assigned by the store, consecutive within an append and gap-free across
/// the store: reading from the head seen before gives every position after it.
pub async fn positions_are_gap_free_and_consecutive(store: Store) {
    let head_before = head(&store).await;
    let (first_aggregate, second_aggregate) = (Uuid::new_v4(), Uuid::new_v4());
    let first_events = items(first_aggregate, 3);
    let second_events = items(second_aggregate, 2);

    let first = append(
        &store,
        first_aggregate,
        ExpectedVersion::NoStream,
        first_events.clone(),
    )
    .await;
    assert_consecutive(&first, 3, "first append");
    assert!(first.first_position > head_before);
    let second = append(
        &store,
        second_aggregate,
        ExpectedVersion::NoStream,
        second_events.clone(),
    )
    .await;
    assert_consecutive(&second, 2, "second append");
    assert!(second.first_position > first.last_position);

    wait_readable(&store, second.last_position).await;
    let read = read_all(&store, head_before, ALL).await;
    let read_positions = positions(&read);
    let expected: Vec<u64> = (head_before + 1..).take(read_positions.len()).collect();
    assert_eq!(
        read_positions, expected,
        "positions after {head_before} must have no gaps"
    );
    for stored in &read {
        if let Some(event) = stored.event() {
            assert_eq!(event.position(), Some(position(stored)));
        }
    }
    let ours = find(&read, &[ids(&first_events), ids(&second_events)].concat());
    let expected: Vec<(u64, Uuid)> = (first.first_position..)
        .zip(ids(&first_events))
        .chain((second.first_position..).zip(ids(&second_events)))
        .collect();
    assert_eq!(
        ours, expected,
        "events must be stored in append order at their reported positions"
    );

    let from_start = read_all(&store, 0, 1).await;
    assert_eq!(positions(&from_start), [1], "the first position is 1");
}

/// `NoStream`, `Exact(n)` and `Any` append when the aggregate is as expected; the store
/// assigns aggregate versions 1..n whatever the envelopes say.
pub async fn versions_follow_expected_version(store: Store) {
    let aggregate = Uuid::new_v4();
    let events = items(aggregate, 5);

    let result = append(
        &store,
        aggregate,
        ExpectedVersion::NoStream,
        events[..2].to_vec(),
    )
    .await;
    assert_eq!(result.version, 2);
    let result = append(
        &store,
        aggregate,
        ExpectedVersion::Exact(2),
        events[2..3].to_vec(),
    )
    .await;
    assert_eq!(result.version, 3);
    let result = append(
        &store,
        aggregate,
        ExpectedVersion::Any,
        events[3..].to_vec(),
    )
    .await;
    assert_eq!(result.version, 5);

    let stream = read_stream(&store, aggregate).await;
    assert_eq!(versions(&stream), [1, 2, 3, 4, 5]);
    assert_eq!(ids(&stream), ids(&events));

    let fresh_any = Uuid::new_v4();
    let result = append(&store, fresh_any, ExpectedVersion::Any, items(fresh_any, 2)).await;
    assert_eq!(result.version, 2, "Any appends to a new aggregate");
    assert_eq!(versions(&read_stream(&store, fresh_any).await), [1, 2]);

    let fresh_exact = Uuid::new_v4();
    let result = append(
        &store,
        fresh_exact,
        ExpectedVersion::Exact(0),
        items(fresh_exact, 1),
    )
    .await;
    assert_eq!(result.version, 1, "Exact(0) is a new aggregate");
}

/// An append whose expected version is wrong is a `Conflict` reporting the actual version,
/// and writes none of its events.
pub async fn conflicting_append_writes_nothing(store: Store) {
    let aggregate = Uuid::new_v4();
    let original = items(aggregate, 2);
    let appended = append(
        &store,
        aggregate,
        ExpectedVersion::NoStream,
        original.clone(),
    )
    .await;
    let head_before = wait_readable(&store, appended.last_position).await;

    let rejected = items(aggregate, 3);
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(3),
    ] {
        assert_conflict(
            store.append(aggregate, expected, rejected.clone()).await,
            aggregate,
            expected,
            2,
        );
    }
    let stream = read_stream(&store, aggregate).await;
    assert_eq!(
        ids(&stream),
        ids(&original),
        "a conflicting append changed the stream"
    );
    assert_eq!(versions(&stream), [1, 2]);
    assert!(
        find(&read_all(&store, head_before, ALL).await, &ids(&rejected)).is_empty(),
        "a conflicting append stored some of its events"
    );

    let fresh = Uuid::new_v4();
    assert_conflict(
        store
            .append(fresh, ExpectedVersion::Exact(1), items(fresh, 1))
            .await,
        fresh,
        ExpectedVersion::Exact(1),
        0,
    );
    assert!(read_stream(&store, fresh).await.is_empty());

    // The rejected events were not written, so they can still be appended, as versions 3..5.
    let retried = append(
        &store,
        aggregate,
        ExpectedVersion::Exact(2),
        rejected.clone(),
    )
    .await;
    assert_eq!(retried.version, 5);
    let stream = read_stream(&store, aggregate).await;
    assert_eq!(ids(&stream), [ids(&original), ids(&rejected)].concat());
    assert_eq!(versions(&stream), [1, 2, 3, 4, 5]);
}

/// An append with an event of another aggregate is rejected and writes nothing.
pub async fn event_of_another_aggregate_is_rejected(store: Store) {
    let head_before = head(&store).await;
    let (aggregate, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let stray = item(stranger, "SKU-STRAY");
    let events = vec![
        item(aggregate, "SKU-1"),
        stray.clone(),
        item(aggregate, "SKU-2"),
    ];

    match store
        .append(aggregate, ExpectedVersion::NoStream, events.clone())
        .await
    {
        Err(AppendError::WrongAggregate {
            aggregate_id,
            event_id,
            event_aggregate,
        }) => assert_eq!(
            (aggregate_id, event_id, event_aggregate),
            (aggregate, stray.event_id(), stranger)
        ),
        other => panic!("an event of another aggregate must be WrongAggregate, got {other:?}"),
    }
    assert!(read_stream(&store, aggregate).await.is_empty());
    assert!(read_stream(&store, stranger).await.is_empty());
    assert!(
        find(&read_all(&store, head_before, ALL).await, &ids(&events)).is_empty(),
        "a rejected append stored some of its events"
    );

    let result = append(
        &store,
        aggregate,
        ExpectedVersion::NoStream,
        items(aggregate, 1),
    )
    .await;
    assert_eq!(result.version, 1);
}

/// Appending no events succeeds when the version is as expected, reports positions 0 and
/// the current version, and writes nothing.
pub async fn empty_append_writes_nothing(store: Store) {
    let aggregate = Uuid::new_v4();
    let original = items(aggregate, 2);
    append(
        &store,
        aggregate,
        ExpectedVersion::NoStream,
        original.clone(),
    )
    .await;

    let result = append(&store, aggregate, ExpectedVersion::Exact(2), Vec::new()).await;
    assert_eq!(
        (result.first_position, result.last_position, result.version),
        (0, 0, 2)
    );
    assert_eq!(ids(&read_stream(&store, aggregate).await), ids(&original));

    let fresh = Uuid::new_v4();
    let result = append(&store, fresh, ExpectedVersion::NoStream, Vec::new()).await;
    assert_eq!(
        (result.first_position, result.last_position, result.version),
        (0, 0, 0)
    );
    assert!(read_stream(&store, fresh).await.is_empty());
}

/// `read_stream` returns the events as appended: the typed payload and every metadata field,
/// plus the position and version the store assigned. `read_all` returns the same events.
pub async fn read_stream_keeps_metadata_and_payload(store: Store) {
    let aggregate = Uuid::new_v4();
    let added = Envelope::new(
        aggregate,
        ItemAdded {
            sku: "SKU-ÄÖ-✓".to_owned(),
            quantity: 3,
            note: Some("for \"you\"\n".to_owned()),
        },
    )
    .with_actor("conformance-user")
    .with_tenant(Uuid::new_v4())
    .with_metadata("source", "conformance")
    .with_metadata("attempt", 3)
    .with_metadata("tags", serde_json::json!(["a", "b"]))
    .with_occurred_at(now_micros() - TimeDelta::hours(1));
    let checked_out = Envelope::new(
        aggregate,
        CartCheckedOut {
            total_cents: -1_234,
            skus: vec!["SKU-ÄÖ-✓".to_owned(), String::new()],
        },
    )
    .with_causation(&added)
    .with_occurred_at(now_micros() - TimeDelta::minutes(59));

    let result = append(
        &store,
        aggregate,
        ExpectedVersion::NoStream,
        vec![
            AnyEvent::new(added.clone()),
            AnyEvent::new(checked_out.clone()),
        ],
    )
    .await;

    let stream = read_stream(&store, aggregate).await;
    assert_eq!(stream.len(), 2);
    let stored_added = stream[0]
        .downcast::<ItemAdded>()
        .expect("the first event decodes to ItemAdded");
    let stored_checked_out = stream[1]
        .downcast::<CartCheckedOut>()
        .expect("the second event decodes to CartCheckedOut");

    let mut expected_added = added.metadata.clone();
    expected_added.position = Some(result.first_position);
    expected_added.aggregate_version = 1;
    let mut expected_checked_out = checked_out.metadata.clone();
    // Appends may interleave on PostgreSQL: the append's last position, not its first + 1.
    expected_checked_out.position = Some(result.last_position);
    expected_checked_out.aggregate_version = 2;

    assert_eq!(stored_added.payload, added.payload);
    assert_eq!(stored_added.metadata, expected_added);
    assert_eq!(stored_added.event_type(), ItemAdded::EVENT_TYPE);
    assert_eq!(stored_added.metadata.event_version, 2);
    assert_eq!(stored_added.metadata.aggregate_type, "ConformanceCart");
    assert_eq!(stored_checked_out.payload, checked_out.payload);
    assert_eq!(stored_checked_out.metadata, expected_checked_out);
    assert!(stored_checked_out.is_caused_by(stored_added));
    assert!(stored_checked_out.is_correlated_with(stored_added));

    wait_readable(&store, result.last_position).await;
    // Appends of other checks sharing the store may take positions between these two.
    let span = usize::try_from(result.last_position - result.first_position + 1).unwrap();
    let read: Vec<StoredEvent> = read_all(&store, result.first_position - 1, span)
        .await
        .into_iter()
        .filter(|e| decoded(e).metadata().aggregate_id == aggregate)
        .collect();
    assert_eq!(read.len(), 2);
    let read_added = decoded(&read[0])
        .downcast::<ItemAdded>()
        .expect("read_all decodes ItemAdded");
    assert_eq!(read_added.payload, added.payload);
    assert_eq!(read_added.metadata, expected_added);
    let read_checked_out = decoded(&read[1])
        .downcast::<CartCheckedOut>()
        .expect("read_all decodes CartCheckedOut");
    assert_eq!(read_checked_out.payload, checked_out.payload);
    assert_eq!(read_checked_out.metadata, expected_checked_out);
}

/// 4714-11-24 00:00:00 UTC BC, the earliest time PostgreSQL's `timestamptz` holds.
fn earliest_storable() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(-4713, 11, 24)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
}

/// Events made the ordinary way, fresh (`Envelope::new`, whose time has nanoseconds on most
/// clocks) or with a time given (`with_occurred_at`, nanoseconds included), come back from
/// `read_stream` and `read_all` equal to the envelopes appended, `occurred_at` included, with
/// the position and version the store assigned. So do the extremes every store keeps. A time
/// with nanoseconds assigned to the field directly comes back truncated to the microsecond,
/// the same on every store.
pub async fn events_read_back_exactly_as_appended(store: Store) {
    let aggregate = Uuid::new_v4();
    let added = |sku: &str| ItemAdded {
        sku: sku.to_owned(),
        quantity: 1,
        note: None,
    };
    let nanos = |date: (i32, u32, u32), nano: u32| {
        NaiveDate::from_ymd_opt(date.0, date.1, date.2)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, nano)
            .unwrap()
            .and_utc()
    };
    let fresh = Envelope::new(aggregate, added("fresh"));
    let fresh_too = Envelope::new(
        aggregate,
        CartCheckedOut {
            total_cents: 1,
            skus: vec!["fresh".to_owned()],
        },
    );
    let now = Envelope::new(aggregate, added("now")).with_occurred_at(Utc::now());
    let after_2000 =
        Envelope::new(aggregate, added("after-2000")).with_occurred_at(nanos((2024, 2, 29), 1));
    let before_1970 = Envelope::new(aggregate, added("before-1970"))
        .with_occurred_at(nanos((1969, 12, 31), 999_999_999));
    let earliest =
        Envelope::new(aggregate, added("earliest")).with_occurred_at(earliest_storable());
    let latest =
        Envelope::new(aggregate, added("latest")).with_occurred_at(DateTime::<Utc>::MAX_UTC);
    let mut assigned = Envelope::new(aggregate, added("assigned"));
    let assigned_at = nanos((2001, 9, 9), 123_456_789);
    assigned.metadata.occurred_at = assigned_at;

    let mut expected: Vec<EventMetadata> = [
        &fresh.metadata,
        &fresh_too.metadata,
        &now.metadata,
        &after_2000.metadata,
        &before_1970.metadata,
        &earliest.metadata,
        &latest.metadata,
        &assigned.metadata,
    ]
    .into_iter()
    .cloned()
    .collect();
    let events = vec![
        AnyEvent::new(fresh.clone()),
        AnyEvent::new(fresh_too.clone()),
        AnyEvent::new(now),
        AnyEvent::new(after_2000),
        AnyEvent::new(before_1970),
        AnyEvent::new(earliest),
        AnyEvent::new(latest),
        AnyEvent::new(assigned),
    ];
    let result = append(&store, aggregate, ExpectedVersion::NoStream, events).await;
    // The positions of one append increase from its first to its last; on PostgreSQL a
    // concurrent append may take some in between (ADR 0011), so they are taken as read.
    let stored = read_stream(&store, aggregate).await;
    let stored_positions: Vec<u64> = stored
        .iter()
        .map(|event| event.position().expect("a stored event has a position"))
        .collect();
    assert!(
        stored_positions.windows(2).all(|p| p[0] < p[1]),
        "positions out of order: {stored_positions:?}"
    );
    assert_eq!(stored_positions.first(), Some(&result.first_position));
    assert_eq!(stored_positions.last(), Some(&result.last_position));
    for ((metadata, position), version) in expected.iter_mut().zip(stored_positions).zip(1..) {
        metadata.position = Some(position);
        metadata.aggregate_version = version;
    }
    if let Some(last) = expected.last_mut() {
        last.occurred_at = assigned_at.trunc_subsecs(6);
    }

    let assert_as_appended = |read: &[&AnyEvent], how: &str| {
        let read: Vec<&EventMetadata> = read.iter().map(|event| event.metadata()).collect();
        for (read, expected) in read.iter().zip(&expected) {
            assert_eq!(
                *read, expected,
                "{how} gave back other metadata than appended (occurred_at {} appended, {} read)",
                expected.occurred_at, read.occurred_at
            );
        }
        assert_eq!(
            read.len(),
            expected.len(),
            "{how} gave back another number of events"
        );
    };

    let stream = read_stream(&store, aggregate).await;
    assert_as_appended(&stream.iter().collect::<Vec<_>>(), "read_stream");
    // Whole envelopes: a fresh one equals itself once stored, with what the store assigned.
    let fresh = Envelope::from_parts(expected[0].clone(), fresh.payload);
    let fresh_too = Envelope::from_parts(expected[1].clone(), fresh_too.payload);
    assert_eq!(stream[0].downcast::<ItemAdded>(), Some(&fresh));
    assert_eq!(stream[1].downcast::<CartCheckedOut>(), Some(&fresh_too));

    wait_readable(&store, result.last_position).await;
    // Appends of other checks sharing the store may take positions between these.
    let span = usize::try_from(result.last_position - result.first_position + 1).unwrap();
    let read = read_all(&store, result.first_position - 1, span).await;
    let read: Vec<&AnyEvent> = read
        .iter()
        .map(decoded)
        .filter(|e| e.metadata().aggregate_id == aggregate)
        .collect();
    assert_as_appended(&read, "read_all");
    assert_eq!(read[0].downcast::<ItemAdded>(), Some(&fresh));
    assert_eq!(read[1].downcast::<CartCheckedOut>(), Some(&fresh_too));
}

/// An event that happened before 4714-11-24 BC, where PostgreSQL's `timestamptz` begins, is
/// refused by every store as invalid, and nothing of its append is written; the earliest time
/// itself is kept (see [`events_read_back_exactly_as_appended`]).
pub async fn occurred_at_before_every_store_is_refused(store: Store) {
    let aggregate = Uuid::new_v4();
    let too_early = AnyEvent::new(
        Envelope::new(
            aggregate,
            ItemAdded {
                sku: "too-early".to_owned(),
                quantity: 1,
                note: None,
            },
        )
        .with_occurred_at(earliest_storable() - TimeDelta::microseconds(1)),
    );
    let batch = vec![item(aggregate, "SKU-1"), too_early];
    match store
        .append(aggregate, ExpectedVersion::NoStream, batch)
        .await
    {
        Err(AppendError::Storage(StorageError::Invalid {
            what: "event occurred_at",
            ..
        })) => {}
        other => panic!(
            "an occurred_at before 4714-11-24 BC must be StorageError::Invalid on every store, \
             got {other:?}"
        ),
    }
    assert!(
        read_stream(&store, aggregate).await.is_empty(),
        "a refused append wrote some of its events"
    );
}

/// `read_stream` returns exactly one aggregate's events, in version order, even when other
/// aggregates were appended in between; an unknown aggregate has none.
pub async fn read_stream_returns_one_aggregate_in_version_order(store: Store) {
    let (mine, other) = (Uuid::new_v4(), Uuid::new_v4());
    let mut appended = Vec::new();
    for round in 0..3_u64 {
        let batch = items(mine, 2);
        let expected = if round == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(round * 2)
        };
        append(&store, mine, expected, batch.clone()).await;
        append(&store, other, ExpectedVersion::Any, items(other, 1)).await;
        appended.extend(batch);
    }

    let stream = read_stream(&store, mine).await;
    assert_eq!(ids(&stream), ids(&appended));
    assert_eq!(versions(&stream), [1, 2, 3, 4, 5, 6]);
    assert!(stream.iter().all(|e| e.metadata().aggregate_id == mine));
    let stream_positions: Vec<u64> = stream
        .iter()
        .map(|e| e.position().expect("a stored event has a position"))
        .collect();
    assert!(
        stream_positions.windows(2).all(|p| p[0] < p[1]),
        "a stream's positions must increase with its versions: {stream_positions:?}"
    );
    assert_eq!(read_stream(&store, other).await.len(), 3);
    assert!(read_stream(&store, Uuid::new_v4()).await.is_empty());
}

/// `read_all(after, limit)` returns at most `limit` events with positions above `after`,
/// in position order.
pub async fn read_all_after_position_with_limit(store: Store) {
    let aggregate = Uuid::new_v4();
    let events = items(aggregate, 5);
    let result = append(&store, aggregate, ExpectedVersion::NoStream, events.clone()).await;
    assert_consecutive(&result, 5, "append");
    wait_readable(&store, result.last_position).await;
    let first = result.first_position;
    let event_ids = ids(&events);

    let read_ids = |read: &[StoredEvent]| -> Vec<Uuid> {
        read.iter()
            .map(|stored| decoded(stored).event_id())
            .collect()
    };

    let page = read_all(&store, first - 1, 2).await;
    assert_eq!(positions(&page), [first, first + 1]);
    assert_eq!(read_ids(&page), event_ids[..2]);
    let page = read_all(&store, first + 1, 2).await;
    assert_eq!(positions(&page), [first + 2, first + 3]);
    assert_eq!(read_ids(&page), event_ids[2..4]);
    let page = read_all(&store, first + 3, 1).await;
    assert_eq!(positions(&page), [first + 4]);
    assert_eq!(read_ids(&page), event_ids[4..]);
    let page = read_all(&store, first - 1, 5).await;
    assert_eq!(read_ids(&page), event_ids);
    assert!(read_all(&store, first - 1, 0).await.is_empty());

    let rest = read_all(&store, first - 1, ALL).await;
    let rest_positions = positions(&rest);
    assert!(rest_positions.len() >= 5);
    assert!(
        rest_positions.windows(2).all(|p| p[0] < p[1]),
        "read_all must return positions in order: {rest_positions:?}"
    );
    assert_eq!(read_ids(&rest[..5]), event_ids);
    let after_ours = read_all(&store, result.last_position, ALL).await;
    assert!(
        positions(&after_ours)
            .iter()
            .all(|&p| p > result.last_position),
        "read_all returned a position at or below `after`"
    );
}

/// The head is the position of the last readable event, and never goes back.
pub async fn head_position_is_the_last_readable_event(store: Store) {
    let head_before = head(&store).await;
    let aggregate = Uuid::new_v4();
    let result = append(
        &store,
        aggregate,
        ExpectedVersion::NoStream,
        items(aggregate, 2),
    )
    .await;
    assert!(result.first_position > head_before);

    let head_after = wait_readable(&store, result.last_position).await;
    assert!(head_after >= result.last_position);
    let at_head = read_all(&store, head_after - 1, 1).await;
    assert_eq!(
        positions(&at_head),
        [head_after],
        "the head must be the position of a readable event"
    );
    let later = head(&store).await;
    assert!(
        later >= head_after,
        "the head went back from {head_after} to {later}"
    );
}

/// The backlog counts the events of the given types (every type when none is given) after a
/// position, and reports when the oldest of them was stored.
pub async fn backlog_counts_types_after_position(store: Store) {
    const A: &str = BacklogProbeA::EVENT_TYPE;
    const B: &str = BacklogProbeB::EVENT_TYPE;
    let probe_a = |aggregate, n| AnyEvent::new(Envelope::new(aggregate, BacklogProbeA { n }));
    let probe_b = |aggregate, n| AnyEvent::new(Envelope::new(aggregate, BacklogProbeB { n }));

    let head_before = head(&store).await;
    let aggregate = Uuid::new_v4();
    let first = append(
        &store,
        aggregate,
        ExpectedVersion::NoStream,
        vec![
            probe_a(aggregate, 1),
            probe_b(aggregate, 1),
            probe_a(aggregate, 2),
        ],
    )
    .await;
    let second = append(
        &store,
        aggregate,
        ExpectedVersion::Exact(3),
        vec![probe_b(aggregate, 2), probe_a(aggregate, 3)],
    )
    .await;
    wait_readable(&store, second.last_position).await;

    let backlog = |after: u64, types: &'static [&'static str]| {
        let store = Arc::clone(&store);
        async move {
            store
                .backlog(after, types)
                .await
                .unwrap_or_else(|e| panic!("backlog({after}, {types:?}) failed: {e}"))
        }
    };

    let of_a = backlog(head_before, &[A]).await;
    assert_eq!(of_a.events, 3);
    assert!(of_a.head_position >= second.last_position);
    let oldest_a = of_a
        .oldest_stored_at
        .expect("a backlog has an oldest event");
    assert_recent(oldest_a, "the backlog's oldest_stored_at");
    assert_eq!(backlog(head_before, &[B]).await.events, 2);
    assert_eq!(backlog(head_before, &[A, B]).await.events, 5);
    let everything = backlog(head_before, &[]).await;
    assert!(
        everything.events >= 5,
        "an empty type list counts every type: {everything:?}"
    );
    assert!(everything.head_position >= second.last_position);
    assert!(everything.oldest_stored_at.is_some());

    // After the first probe: the two later A events; the oldest is no older than before.
    let after_first = backlog(first.first_position, &[A]).await;
    assert_eq!(after_first.events, 2);
    let oldest_later = after_first
        .oldest_stored_at
        .expect("a backlog has an oldest event");
    assert!(oldest_later >= oldest_a);
    assert_eq!(backlog(first.last_position, &[A]).await.events, 1);
    assert_eq!(backlog(first.last_position, &[B]).await.events, 1);

    let caught_up = backlog(second.last_position, &[A, B]).await;
    assert_eq!(caught_up.events, 0);
    assert_eq!(caught_up.oldest_stored_at, None);
    assert!(caught_up.head_position >= second.last_position);
    let unknown = backlog(head_before, &["conformance.no_such_type"]).await;
    assert_eq!((unknown.events, unknown.oldest_stored_at), (0, None));
}

/// A store that can notify (`subscribe` is `Some`) changes the receiver after an append, to
/// a head at or past the appended events.
pub async fn subscribe_changes_after_append(store: Store) {
    let Some(mut receiver) = store.subscribe() else {
        return;
    };
    receiver.borrow_and_update();
    let aggregate = Uuid::new_v4();
    let result = append(
        &store,
        aggregate,
        ExpectedVersion::NoStream,
        items(aggregate, 2),
    )
    .await;

    let notified = tokio::time::timeout(READABLE_WITHIN, async {
        loop {
            receiver
                .changed()
                .await
                .expect("the store dropped its notifier");
            if *receiver.borrow_and_update() >= result.last_position {
                return;
            }
        }
    })
    .await;
    assert!(
        notified.is_ok(),
        "no notification of position {} within {READABLE_WITHIN:?}",
        result.last_position
    );
}

/// A probe of the filtered-read checks: `payload` on `aggregate`, of `tenant`.
fn probe<E: Event>(aggregate: Uuid, payload: E, tenant: Option<Uuid>) -> AnyEvent {
    let envelope = Envelope::new(aggregate, payload);
    AnyEvent::new(match tenant {
        Some(tenant) => envelope.with_tenant(tenant),
        None => envelope,
    })
}

async fn read_filtered(store: &Store, after: u64, limit: usize, filter: &ReadFilter) -> ReadPage {
    store
        .read_filtered(after, limit, filter)
        .await
        .unwrap_or_else(|e| panic!("read_filtered({after}, {limit}, {filter:?}) failed: {e}"))
}

/// The ids of a page's events, in order.
fn page_ids(page: &ReadPage) -> Vec<Uuid> {
    page.events.iter().map(|e| decoded(e).event_id()).collect()
}

/// The first page of one event after `after` that holds an event, reading on over empty ones.
async fn first_selected(store: &Store, mut after: u64, filter: &ReadFilter) -> ReadPage {
    for _ in 0..10_000 {
        let page = read_filtered(store, after, 1, filter).await;
        assert_page(&page, after, 1, &format!("{filter:?}"));
        if !page.events.is_empty() {
            return page;
        }
        assert!(!page.at_head, "{filter:?}: nothing selected after {after}");
        assert!(
            page.read_to > after,
            "{filter:?}: an empty page did not move on"
        );
        after = page.read_to;
    }
    panic!("{filter:?}: no event within 10,000 pages");
}

/// Checks what every page promises: events after `after`, in position order, at most `limit`,
/// none past `read_to`, which is at least `after`.
fn assert_page(page: &ReadPage, after: u64, limit: usize, what: &str) {
    let at = positions(&page.events);
    assert!(
        at.len() <= limit,
        "{what}: more than {limit} events: {at:?}"
    );
    assert!(
        at.windows(2).all(|p| p[0] < p[1]),
        "{what}: positions out of order: {at:?}"
    );
    assert!(
        at.iter().all(|&p| p > after && p <= page.read_to),
        "{what}: a position outside ({after}, {}]: {at:?}",
        page.read_to
    );
    assert!(page.read_to >= after, "{what}: read_to went back");
}

/// `read_filtered` returns the events of the filter's types, of its aggregate types and of its
/// tenants, in position order, up to `limit`; a full page reads to its last event.
pub async fn read_filtered_selects_types_aggregates_and_tenants(store: Store) {
    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    let head_before = head(&store).await;
    let cart = Uuid::new_v4();
    let events = vec![
        probe(cart, FilterProbeA { n: 1 }, Some(t1)),
        probe(cart, FilterProbeB { n: 2 }, Some(t1)),
        probe(cart, FilterProbeA { n: 3 }, Some(t2)),
        probe(cart, FilterProbeB { n: 4 }, None),
        probe(cart, FilterProbeA { n: 5 }, None),
    ];
    let other = Uuid::new_v4();
    let others = vec![
        probe(other, FilterProbeC { n: 6 }, Some(t1)),
        probe(other, FilterProbeC { n: 7 }, None),
    ];
    let id = |event: &AnyEvent| event.event_id();
    let [a1, b2, a3, b4, a5] = [0, 1, 2, 3, 4].map(|i| id(&events[i]));
    let [c6, c7] = [0, 1].map(|i| id(&others[i]));
    append(&store, cart, ExpectedVersion::NoStream, events).await;
    let last = append(&store, other, ExpectedVersion::NoStream, others).await;
    wait_readable(&store, last.last_position).await;

    const A: &str = FilterProbeA::EVENT_TYPE;
    const B: &str = FilterProbeB::EVENT_TYPE;
    const C: &str = FilterProbeC::EVENT_TYPE;
    let read = |filter: ReadFilter, limit: usize| {
        let store = Arc::clone(&store);
        async move {
            let page = read_filtered(&store, head_before, limit, &filter).await;
            assert_page(&page, head_before, limit, &format!("{filter:?}"));
            page
        }
    };

    let of_a = read(ReadFilter::event_types([A]), ALL).await;
    assert_eq!(page_ids(&of_a), [a1, a3, a5], "the events of type A");
    assert!(of_a.read_to >= last.last_position, "a short page reads on");
    assert!(of_a.at_head, "a short page is at the head");
    let of_a_and_b = read(ReadFilter::event_types([A, B]), ALL).await;
    assert_eq!(page_ids(&of_a_and_b), [a1, b2, a3, b4, a5]);

    // A full page reads to its last event; the next one goes on from there. (A page may hold
    // fewer events than its limit before the head: the store may stop early.)
    let first = first_selected(&store, head_before, &ReadFilter::event_types([A])).await;
    assert_eq!(page_ids(&first), [a1]);
    assert_eq!(first.read_to, position(&first.events[0]));
    assert!(!first.at_head, "a full page may not be the last");
    let next = first_selected(&store, first.read_to, &ReadFilter::event_types([A])).await;
    assert_eq!(page_ids(&next), [a3]);
    assert_eq!(next.read_to, position(&next.events[0]));
    let none = read(ReadFilter::event_types([A]), 0).await;
    assert!(none.events.is_empty(), "a limit of 0 reads nothing");

    // Aggregate types: every event of theirs, whatever its type.
    let followed = read(
        ReadFilter::event_types([A]).with_aggregate_types(["ConformanceFilterOther"]),
        ALL,
    )
    .await;
    assert_eq!(page_ids(&followed), [a1, a3, a5, c6, c7]);
    let only_c = read(ReadFilter::event_types([C]), ALL).await;
    assert_eq!(page_ids(&only_c), [c6, c7]);

    // Tenants: one, several, with the untenanted ones, a predicate (a store may leave the
    // predicate to the reader, so only what it must return is checked).
    let tenant = |filter: TenantFilter| ReadFilter::event_types([A, B, C]).with_tenant(filter);
    assert_eq!(
        page_ids(&read(tenant(TenantFilter::only(t1)), ALL).await),
        [a1, b2, c6]
    );
    assert_eq!(
        page_ids(&read(tenant(TenantFilter::one_of([t1, t2])), ALL).await),
        [a1, b2, a3, c6]
    );
    assert_eq!(
        page_ids(&read(tenant(TenantFilter::only(t2).with_untenanted()), ALL).await),
        [a3, b4, a5, c7]
    );
    assert_eq!(
        page_ids(&read(tenant(TenantFilter::one_of([])), ALL).await),
        Vec::<Uuid>::new()
    );
    let t1_of_a = first_selected(
        &store,
        head_before,
        &ReadFilter::event_types([A]).with_tenant(TenantFilter::only(t1)),
    )
    .await;
    assert_eq!(page_ids(&t1_of_a), [a1]);
    let predicate = read(tenant(TenantFilter::matching(move |t| t == t2)), ALL).await;
    let ids = page_ids(&predicate);
    assert!(ids.contains(&a3), "the predicate's tenant: {ids:?}");
    assert!(
        !ids.contains(&b4) && !ids.contains(&a5),
        "no untenanted event: {ids:?}"
    );

    // Every type of one tenant, among whatever else the store holds.
    let all_of_t1 = read(ReadFilter::all().with_tenant(TenantFilter::only(t1)), ALL).await;
    assert_eq!(page_ids(&all_of_t1), [a1, b2, c6]);
    // Every event: what read_all returns.
    let everything = read(ReadFilter::all(), ALL).await;
    assert_eq!(
        find(&everything.events, &[a1, b2, a3, b4, a5, c6, c7]).len(),
        7
    );
}

/// A page with nothing for the reader still reads on: `read_to` passes the events it does not
/// select, so a reader's checkpoint moves past them.
pub async fn read_filtered_reads_on_over_what_it_does_not_select(store: Store) {
    const D: &str = FilterProbeD::EVENT_TYPE;
    let head_before = head(&store).await;
    let aggregate = Uuid::new_v4();
    let filler = append(
        &store,
        aggregate,
        ExpectedVersion::NoStream,
        items(aggregate, 25),
    )
    .await;
    let head_after = wait_readable(&store, filler.last_position).await;

    // A type nobody appended: every page is empty, and the reads move on to the head.
    let filter = ReadFilter::event_types(["conformance.filter_nothing"]);
    let mut after = head_before;
    let mut pages = 0;
    loop {
        let page = read_filtered(&store, after, 10, &filter).await;
        assert_page(&page, after, 10, "an empty filter");
        assert!(page.events.is_empty(), "nothing of that type: {page:?}");
        pages += 1;
        assert!(pages < 1_000, "the reads do not move on: stuck at {after}");
        if page.at_head {
            assert!(
                page.read_to >= head_after,
                "at the head, the read got to {} of {head_after}",
                page.read_to
            );
            break;
        }
        assert!(
            page.read_to > after,
            "a page that is not at the head moves on"
        );
        after = page.read_to;
    }

    // Then one event of the type after the filler: found, and nothing of it missed by a
    // reader that starts where the empty reads stopped.
    let probe_event = probe(aggregate, FilterProbeD { n: 1 }, None);
    let probe_id = probe_event.event_id();
    let at = append(
        &store,
        aggregate,
        ExpectedVersion::Exact(25),
        vec![probe_event],
    )
    .await;
    wait_readable(&store, at.last_position).await;
    let mut found = Vec::new();
    let filter = ReadFilter::event_types([D]);
    let mut after = head_before;
    loop {
        let page = read_filtered(&store, after, 10, &filter).await;
        found.extend(page.events.iter().map(|e| decoded(e).event_id()));
        if page.at_head {
            break;
        }
        after = page.read_to;
    }
    assert!(
        found.contains(&probe_id),
        "the event after the filler is found"
    );
}

/// `backlog_filtered` counts the events after a position that the filter selects: its types,
/// aggregate types and listed tenants.
pub async fn backlog_filtered_counts_what_the_filter_selects(store: Store) {
    const A: &str = FilterProbeE::EVENT_TYPE;
    const B: &str = FilterProbeF::EVENT_TYPE;
    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    let head_before = head(&store).await;
    let aggregate = Uuid::new_v4();
    let result = append(
        &store,
        aggregate,
        ExpectedVersion::NoStream,
        vec![
            probe(aggregate, FilterProbeE { n: 1 }, Some(t1)),
            probe(aggregate, FilterProbeE { n: 2 }, Some(t2)),
            probe(aggregate, FilterProbeF { n: 3 }, Some(t1)),
            probe(aggregate, FilterProbeE { n: 4 }, None),
        ],
    )
    .await;
    wait_readable(&store, result.last_position).await;
    let count = |filter: ReadFilter| {
        let store = Arc::clone(&store);
        async move {
            store
                .backlog_filtered(head_before, &filter)
                .await
                .unwrap_or_else(|e| panic!("backlog_filtered({filter:?}) failed: {e}"))
        }
    };
    let of_t1 = count(ReadFilter::event_types([A, B]).with_tenant(TenantFilter::only(t1))).await;
    assert_eq!(of_t1.events, 2);
    assert!(of_t1.head_position >= result.last_position);
    assert!(of_t1.oldest_stored_at.is_some());
    assert_eq!(
        count(ReadFilter::event_types([A]).with_tenant(TenantFilter::only(t2).with_untenanted()))
            .await
            .events,
        2
    );
    assert_eq!(count(ReadFilter::event_types([A])).await.events, 3);
    assert_eq!(count(ReadFilter::event_types([A, B])).await.events, 4);
    let nothing = count(ReadFilter::event_types(["conformance.filter_nothing"])).await;
    assert_eq!((nothing.events, nothing.oldest_stored_at), (0, None));
    let none_of_them =
        count(ReadFilter::event_types([A]).with_tenant(TenantFilter::one_of([]))).await;
    assert_eq!(none_of_them.events, 0);
}
