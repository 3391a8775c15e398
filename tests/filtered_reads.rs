//! Reads that fetch only what a projection needs, and the tenant filter, through the
//! coordinator and the runner: in memory and on SQLite (PostgreSQL's are in `postgres.rs`).
//!
//! A projection handling one event type in twenty reads its own events only, its checkpoint
//! still reaches the head over pages of other types, and its lag counts its own events. A
//! projection limited to a tenant applies that tenant's events only, whichever runner runs
//! it, and moves past the others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::sqlite::TempFile;
use projections::coordinator::ProjectionCoordinator;
use projections::runner::EventOutcome;
use projections::sqlite::SqliteEventStore;
use projections::store::{ReadFilter, TenantFilter};
use projections::transactional::{SqliteTransactionUnit, TransactionalRunner};
use projections::{
    AnyEvent, Envelope, Event, EventStore, ExpectedVersion, InMemoryEventStore, ProjectionRegistry,
    ProjectionRunner, SqliteConnection, projection,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Twenty event types of one aggregate type.
macro_rules! kinds {
    ($($kind:ident = $name:literal),* $(,)?) => {
        $(
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
            #[event(name = $name, aggregate = "Filtered")]
            pub struct $kind {
                pub n: u64,
            }
        )*

        /// An event of kind `kind` (0 to 19) numbered `n` on `aggregate`, of `tenant`.
        fn kind(kind: usize, aggregate: Uuid, n: u64, tenant: Option<Uuid>) -> AnyEvent {
            let mut index = 0;
            $(
                if kind == index {
                    let envelope = Envelope::new(aggregate, $kind { n });
                    return AnyEvent::new(match tenant {
                        Some(tenant) => envelope.with_tenant(tenant),
                        None => envelope,
                    });
                }
                index += 1;
            )*
            panic!("no kind {kind} of {index}");
        }
    };
}

kinds!(
    K0 = "filtered.k0",
    K1 = "filtered.k1",
    K2 = "filtered.k2",
    K3 = "filtered.k3",
    K4 = "filtered.k4",
    K5 = "filtered.k5",
    K6 = "filtered.k6",
    K7 = "filtered.k7",
    K8 = "filtered.k8",
    K9 = "filtered.k9",
    K10 = "filtered.k10",
    K11 = "filtered.k11",
    K12 = "filtered.k12",
    K13 = "filtered.k13",
    K14 = "filtered.k14",
    K15 = "filtered.k15",
    K16 = "filtered.k16",
    K17 = "filtered.k17",
    K18 = "filtered.k18",
    K19 = "filtered.k19",
);

/// Handles one kind of twenty: the numbers of its events, with their tenants.
#[derive(Debug, Default)]
struct Sevens {
    seen: Vec<(u64, Option<Uuid>)>,
}

#[projection(name = "sevens")]
impl Sevens {
    #[handles(K7)]
    async fn seven(&mut self, event: &Envelope<K7>) {
        self.seen.push((event.n, event.metadata.tenant_id));
    }
}

/// Appends `events` in batches of 100, each batch on a fresh aggregate, and returns the last
/// position.
async fn append_all(store: &dyn EventStore, events: Vec<AnyEvent>) -> u64 {
    let mut last = 0;
    for batch in events.chunks(100) {
        let aggregate = Uuid::new_v4();
        let batch = batch
            .iter()
            .map(|event| event.clone().map_metadata(|m| m.aggregate_id = aggregate))
            .collect();
        last = store
            .append(aggregate, ExpectedVersion::NoStream, batch)
            .await
            .unwrap()
            .last_position;
    }
    last
}

/// `count` events cycling through the twenty kinds, numbered from 0, of `tenant`.
fn cycle(count: u64, tenant: Option<Uuid>) -> Vec<AnyEvent> {
    (0..count)
        .map(|n| kind((n % 20) as usize, Uuid::nil(), n, tenant))
        .collect()
}

fn coordinator(
    store: Arc<dyn EventStore>,
    runner: ProjectionRunner<Sevens>,
) -> ProjectionCoordinator {
    let mut registry = ProjectionRegistry::new();
    registry.register_projection(runner).unwrap();
    ProjectionCoordinator::new(registry, store).batch_size(10)
}

async fn memory() -> Arc<dyn EventStore> {
    Arc::new(InMemoryEventStore::new())
}

/// A SQLite store on a fresh file (kept alive by the returned guard).
async fn sqlite() -> (
    Arc<dyn EventStore>,
    TempFile,
    projections::sqlite::SqlitePool,
) {
    let file = TempFile::new("filtered_reads");
    let pool = file.open().await;
    (Arc::new(SqliteEventStore::new(pool.clone())), file, pool)
}

async fn one_type_in_twenty(store: Arc<dyn EventStore>) {
    let head = append_all(&*store, cycle(400, None)).await;
    let runner = ProjectionRunner::new(Sevens::default());
    let before = runner.lag_metrics(&*store).await.unwrap();
    assert_eq!(before.events_behind, 20, "lag counts its own type only");

    let mut coordinator = coordinator(Arc::clone(&store), runner);
    let report = coordinator.catch_up_all().await.unwrap();
    let sevens = report.projection("sevens").unwrap();
    assert!(sevens.is_ok(), "{sevens:?}");
    assert_eq!(sevens.applied, 20);
    assert_eq!(
        (sevens.not_subscribed, sevens.skipped),
        (0, 0),
        "the events of other types are not read"
    );
    let runner = coordinator
        .registry()
        .projection_runner::<Sevens>()
        .unwrap();
    let seen: Vec<u64> = runner.projection().seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(seen, (0..20).map(|i| i * 20 + 7).collect::<Vec<_>>());
    let lag = runner.lag_metrics(&*store).await.unwrap();
    assert_eq!(
        lag.checkpoint_position, head,
        "the checkpoint reaches the head, past the other types' last events"
    );
    assert_eq!(lag.events_behind, 0);
}

#[tokio::test]
async fn a_projection_of_one_type_in_twenty_reads_its_own_and_reaches_the_head_in_memory() {
    one_type_in_twenty(memory().await).await;
}

#[tokio::test]
async fn a_projection_of_one_type_in_twenty_reads_its_own_and_reaches_the_head_on_sqlite() {
    let (store, _file, _pool) = sqlite().await;
    one_type_in_twenty(store).await;
}

/// The stored checkpoint of the coordinator's `sevens`.
async fn checkpoint(coordinator: &ProjectionCoordinator) -> Option<u64> {
    let runner = coordinator
        .registry()
        .projection_runner::<Sevens>()
        .unwrap();
    let data = runner.checkpoint_data().await.unwrap();
    data.map(|c| c.position)
}

async fn pages_of_other_types(store: Arc<dyn EventStore>) {
    // One of its events, then page after page of another type.
    let mut events = vec![kind(7, Uuid::nil(), 1, None)];
    events.extend((0..300).map(|n| kind(3, Uuid::nil(), n, None)));
    let head = append_all(&*store, events).await;
    let mut coordinator = coordinator(Arc::clone(&store), ProjectionRunner::new(Sevens::default()));
    let report = coordinator.catch_up_all().await.unwrap();
    assert_eq!(report.projection("sevens").unwrap().applied, 1);
    assert_eq!(checkpoint(&coordinator).await, Some(head));

    // More of the other type: nothing to apply, the checkpoint follows the head.
    let head = append_all(
        &*store,
        (0..50).map(|n| kind(3, Uuid::nil(), n, None)).collect(),
    )
    .await;
    let report = coordinator.catch_up_all().await.unwrap();
    assert_eq!(report.projection("sevens").unwrap().applied, 0);
    assert_eq!(checkpoint(&coordinator).await, Some(head));

    // Live: the worker does not stall on pages with nothing for it, and reports no lag.
    let handle = coordinator
        .poll_interval(Duration::from_millis(10))
        .start()
        .unwrap();
    let head = append_all(
        &*store,
        (0..120).map(|n| kind(3, Uuid::nil(), n, None)).collect(),
    )
    .await;
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        handle.wait_for_checkpoint("sevens", head),
    )
    .await
    .expect("the checkpoint follows the head over other types")
    .unwrap();
    assert_eq!(status.events_behind, 0);
    let head = append_all(&*store, vec![kind(7, Uuid::nil(), 2, None)]).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        handle.wait_for_checkpoint("sevens", head),
    )
    .await
    .expect("a new event of its type is applied")
    .unwrap();
    let report = handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.projection("sevens").unwrap().applied, 1);
}

#[tokio::test]
async fn the_checkpoint_moves_over_pages_of_other_types_in_memory() {
    pages_of_other_types(memory().await).await;
}

#[tokio::test]
async fn the_checkpoint_moves_over_pages_of_other_types_on_sqlite() {
    let (store, _file, _pool) = sqlite().await;
    pages_of_other_types(store).await;
}

/// 60 events of kind 7: 20 of each of two tenants and 20 without one, interleaved with other
/// kinds; returns the tenants and the head.
async fn tenants(store: &dyn EventStore) -> (Uuid, Uuid, u64) {
    let (acme, globex) = (Uuid::new_v4(), Uuid::new_v4());
    let mut events = Vec::new();
    for n in 0..60 {
        let tenant = [Some(acme), Some(globex), None][(n % 3) as usize];
        events.push(kind(7, Uuid::nil(), n, tenant));
        events.push(kind(2, Uuid::nil(), n, tenant));
    }
    let head = append_all(store, events).await;
    (acme, globex, head)
}

async fn limited_to(
    store: Arc<dyn EventStore>,
    filter: TenantFilter,
    expect_tenants: &[Option<Uuid>],
    head: u64,
) -> u64 {
    let runner = ProjectionRunner::builder(Sevens::default())
        .tenant(filter)
        .build();
    let mut coordinator = coordinator(Arc::clone(&store), runner);
    let report = coordinator.catch_up_all().await.unwrap();
    let sevens = report.projection("sevens").unwrap();
    assert!(sevens.is_ok(), "{sevens:?}");
    let runner = coordinator
        .registry()
        .projection_runner::<Sevens>()
        .unwrap();
    let seen = &runner.projection().seen;
    assert_eq!(sevens.applied, seen.len() as u64);
    assert_eq!(seen.len(), 20 * expect_tenants.len());
    assert!(
        seen.iter()
            .all(|(_, tenant)| expect_tenants.contains(tenant)),
        "only the tenants let in: {seen:?}"
    );
    let lag = runner.lag_metrics(&*store).await.unwrap();
    assert_eq!(
        lag.checkpoint_position, head,
        "past every other tenant's events"
    );
    assert_eq!(lag.events_behind, 0);
    sevens.other_tenant
}

async fn tenant_filters(store: Arc<dyn EventStore>) {
    let (acme, globex, head) = tenants(&*store).await;
    limited_to(
        Arc::clone(&store),
        TenantFilter::only(acme),
        &[Some(acme)],
        head,
    )
    .await;
    limited_to(
        Arc::clone(&store),
        TenantFilter::one_of([acme, globex]),
        &[Some(acme), Some(globex)],
        head,
    )
    .await;
    limited_to(
        Arc::clone(&store),
        TenantFilter::only(globex).with_untenanted(),
        &[Some(globex), None],
        head,
    )
    .await;
    limited_to(
        Arc::clone(&store),
        TenantFilter::any(),
        &[Some(acme), Some(globex), None],
        head,
    )
    .await;
    // A predicate: the store cannot evaluate it (on SQLite it reads every tenant of the type),
    // the runner passes over the others.
    let other_tenant = limited_to(
        Arc::clone(&store),
        TenantFilter::matching(move |tenant| tenant == acme),
        &[Some(acme)],
        head,
    )
    .await;
    assert!(
        other_tenant <= 20,
        "events without a tenant are left out by the store"
    );
}

#[tokio::test]
async fn a_projection_limited_to_tenants_applies_theirs_only_in_memory() {
    tenant_filters(memory().await).await;
}

#[tokio::test]
async fn a_projection_limited_to_tenants_applies_theirs_only_on_sqlite() {
    let (store, _file, _pool) = sqlite().await;
    tenant_filters(store).await;
}

#[tokio::test]
async fn lag_counts_the_events_of_its_tenants_only() {
    let store = memory().await;
    let (acme, _, _) = tenants(&*store).await;
    let runner = ProjectionRunner::builder(Sevens::default())
        .tenant(TenantFilter::only(acme))
        .build();
    assert_eq!(runner.lag_metrics(&*store).await.unwrap().events_behind, 20);
    let filter = runner.read_filter();
    assert_eq!(filter.types(), Some(&[K7::EVENT_TYPE][..]));
    assert_eq!(filter.tenant().tenants(), Some(&[acme][..]));
}

/// Events handed in (push mode) meet the tenant filter too: the others are passed over, and
/// their positions move the checkpoint.
#[tokio::test]
async fn events_handed_in_meet_the_tenant_filter() {
    let (acme, globex) = (Uuid::new_v4(), Uuid::new_v4());
    let mut registry = ProjectionRegistry::new();
    registry
        .register_projection(
            ProjectionRunner::builder(Sevens::default())
                .tenant(TenantFilter::only(acme))
                .build(),
        )
        .unwrap();
    let events = common::positioned(
        vec![
            kind(7, Uuid::nil(), 1, Some(acme)),
            kind(7, Uuid::nil(), 2, Some(globex)),
            kind(7, Uuid::nil(), 3, None),
            kind(7, Uuid::nil(), 4, Some(acme)),
        ],
        1,
    );
    let report = registry.dispatch_many(&events).await;
    let outcome = report.projections[0].result.as_ref().unwrap();
    assert_eq!((outcome.applied, outcome.other_tenant), (2, 2));
    assert_eq!(outcome.checkpoint, Some(4));
    let seen: Vec<u64> = registry
        .projection::<Sevens>()
        .unwrap()
        .seen
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(seen, [1, 4]);

    // One event of another tenant: passed over, said so.
    let runner = registry.runner_mut::<ProjectionRunner<Sevens>>().unwrap();
    let another = common::positioned(vec![kind(7, Uuid::nil(), 5, Some(globex))], 5);
    assert_eq!(
        runner.handle(&another[0]).await.unwrap(),
        EventOutcome::OtherTenant
    );
    assert_eq!(runner.checkpoint().await.unwrap(), Some(5));
}

/// A projection whose handlers write through the batch's transaction keeps to its tenant
/// (upstream's database projection applied every tenant's events that it had a handler for).
#[derive(Debug, Default)]
struct TenantRows;

#[projection(name = "tenant_rows")]
impl TenantRows {
    #[handles(K7)]
    async fn seven(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<K7>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO filtered_rows (n, tenant) VALUES (?1, ?2)")
            .bind(i64::try_from(event.n).unwrap())
            .bind(event.metadata.tenant_id.map(|t| t.to_string()))
            .execute(conn)
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_transactional_projection_keeps_to_its_tenant() {
    let (store, _file, pool) = sqlite().await;
    sqlx::query("CREATE TABLE filtered_rows (n INTEGER NOT NULL, tenant TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    let (acme, _, head) = tenants(&*store).await;
    for filter in [
        TenantFilter::only(acme),
        TenantFilter::matching(move |tenant| tenant == acme),
    ] {
        sqlx::query("DELETE FROM filtered_rows")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("DELETE FROM projection_checkpoints")
            .execute(&pool)
            .await
            .unwrap();
        let mut registry = ProjectionRegistry::new();
        registry
            .register(
                TransactionalRunner::new(
                    TenantRows,
                    Arc::new(SqliteTransactionUnit::new(pool.clone())),
                )
                .tenant(filter),
            )
            .unwrap();
        let mut coordinator =
            ProjectionCoordinator::new(registry, Arc::clone(&store)).batch_size(7);
        let report = coordinator.catch_up_all().await.unwrap();
        let rows = report.projection("tenant_rows").unwrap();
        assert!(rows.is_ok(), "{rows:?}");
        assert_eq!(rows.applied, 20);
        let tenants: Vec<Option<String>> =
            sqlx::query_scalar("SELECT DISTINCT tenant FROM filtered_rows")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(tenants, [Some(acme.to_string())]);
        let checkpoint: i64 = sqlx::query_scalar(
            "SELECT position FROM projection_checkpoints WHERE projection_name = 'tenant_rows'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(checkpoint, i64::try_from(head).unwrap());
    }
}

/// A stored event of a type this program does not know still reaches a projection whose reads
/// are filtered: it may be the projection's (a newer build's type), so it goes through the
/// failure policy (here: dead-lettered) instead of being passed over silently.
#[tokio::test]
async fn an_unknown_stored_type_is_not_filtered_away() {
    let (store, _file, pool) = sqlite().await;
    append_all(&*store, vec![kind(7, Uuid::nil(), 1, None)]).await;
    sqlx::query(
        "INSERT INTO projection_events (
             position, event_id, aggregate_id, aggregate_type, aggregate_version, event_type,
             event_version, payload, metadata, correlation_id, occurred_at, stored_at
         )
         VALUES (2, ?1, ?2, 'Filtered', 1, 'filtered.from_a_newer_build', 1, '{}', '{}', ?3,
                 0, 0)",
    )
    .bind(Uuid::new_v4().to_string())
    .bind(Uuid::new_v4().to_string())
    .bind(Uuid::new_v4().to_string())
    .execute(&pool)
    .await
    .unwrap();
    let page = store
        .read_filtered(0, 10, &ReadFilter::event_types([K7::EVENT_TYPE]))
        .await
        .unwrap();
    assert_eq!(page.events.len(), 2);
    assert_eq!(page.events[1].event_type(), "filtered.from_a_newer_build");
    let mut coordinator = coordinator(store, ProjectionRunner::new(Sevens::default()));
    let report = coordinator.catch_up_all().await.unwrap();
    let sevens = report.projection("sevens").unwrap();
    assert_eq!((sevens.applied, sevens.dead_lettered.len()), (1, 1));
}
