//! Upcasting: stored events of older versions decode to the current type through the chain of
//! `#[upcast]` functions, in memory (the registry) and read back from SQLite and PostgreSQL
//! (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`, a schema of this
//! test's own); a version with no chain, or an upcaster that fails, is an event that does not
//! decode and goes through the failure policy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use projections::event::UpcasterError;
use projections::postgres::{PostgreSQLEventStore, Schema};
use projections::sqlite::SqliteEventStore;
use projections::{
    DecodeError, Envelope, Event, EventMetadata, EventRegistry, EventStore, ExpectedVersion,
    ProjectionRunner, StoredEvent, projection, upcast,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version 3. Version 1 was `{ "customer_id", "total" }`, version 2
/// `{ "customer_id", "cents" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(aggregate = "Order", version = 3)]
struct OrderPlaced {
    customer: String,
    cents: i64,
    currency: String,
}

/// JSON form: `total` renamed to `cents`.
#[upcast(OrderPlaced, from = 1)]
fn total_renamed(mut payload: serde_json::Value) -> serde_json::Value {
    if let Some(total) = payload.get_mut("total").map(serde_json::Value::take) {
        payload["cents"] = total;
    }
    payload
}

#[derive(Deserialize)]
struct OrderPlacedV2 {
    customer_id: String,
    cents: i64,
}

/// Typed form, fallible: negative amounts were never valid.
#[upcast(OrderPlaced, from = 2)]
fn with_currency(old: OrderPlacedV2) -> Result<OrderPlaced, String> {
    if old.cents < 0 {
        return Err(format!("a negative amount: {}", old.cents));
    }
    Ok(OrderPlaced {
        customer: old.customer_id,
        cents: old.cents,
        currency: "EUR".into(),
    })
}

/// Version 4; versions 1 and 2 were never read by this build (only 3 upcasts).
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "Cart", version = 4)]
struct ItemAdded {
    sku: String,
    quantity: u32,
}

#[upcast(ItemAdded, from = 3)]
fn quantity_added(mut payload: serde_json::Value) -> serde_json::Value {
    payload["quantity"] = 1.into();
    payload
}

/// Version 2; version 1 had no unit. Its upcaster panics on a negative weight (a bug in user
/// code, which must not take the reader down).
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "Parcel", version = 2)]
struct ParcelWeighed {
    weight: i64,
    unit: String,
}

#[upcast(ParcelWeighed, from = 1)]
fn unit_added(mut payload: serde_json::Value) -> serde_json::Value {
    if payload["weight"].as_i64().is_some_and(|w| w < 0) {
        panic!("a negative weight");
    }
    payload["unit"] = "g".into();
    payload
}

fn v1() -> serde_json::Value {
    serde_json::json!({ "customer_id": "ada", "total": 1200 })
}

fn v2() -> serde_json::Value {
    serde_json::json!({ "customer_id": "bob", "cents": 500 })
}

fn current(customer: &str, cents: i64) -> OrderPlaced {
    OrderPlaced {
        customer: customer.into(),
        cents,
        currency: "EUR".into(),
    }
}

fn metadata(version: u32) -> EventMetadata {
    EventMetadata::new("OrderPlaced", version, Uuid::new_v4(), "Order")
}

#[test]
fn the_upcasters_of_this_program_form_whole_chains() {
    EventRegistry::global().check_upcasters().unwrap();
}

#[test]
fn version_1_and_2_decode_to_version_3_in_memory() {
    let registry = EventRegistry::global();
    for (version, payload, expected) in [
        (1, v1(), current("ada", 1200)),
        (2, v2(), current("bob", 500)),
    ] {
        let event = registry.decode(metadata(version), &payload).unwrap();
        let order = event.downcast::<OrderPlaced>().unwrap();
        assert_eq!(&order.payload, &expected);
        assert_eq!(order.metadata.event_version, 3);
        // From text, as the stores read it.
        let event = registry
            .decode_str(metadata(version), &payload.to_string())
            .unwrap();
        assert_eq!(event.downcast::<OrderPlaced>().unwrap().payload, expected);
    }
    // The current version decodes as it always did.
    let payload = serde_json::to_value(current("cy", 1)).unwrap();
    let event = registry.decode(metadata(3), &payload).unwrap();
    assert_eq!(
        event.downcast::<OrderPlaced>().unwrap().payload,
        current("cy", 1)
    );
}

#[test]
fn a_version_with_no_chain_names_the_type_and_the_versions_that_can_be_read() {
    let metadata = EventMetadata::new("ItemAdded", 2, Uuid::new_v4(), "Cart");
    let error = EventRegistry::global()
        .decode(metadata, &serde_json::json!({ "sku": "x" }))
        .err()
        .unwrap();
    let DecodeError::NoUpcastPath {
        stored,
        current,
        readable,
        ..
    } = &error
    else {
        panic!("expected NoUpcastPath, got {error:?}");
    };
    assert_eq!((*stored, *current, readable.as_slice()), (2, 4, &[3][..]));
    let message = error.to_string();
    assert!(message.contains("`ItemAdded` version 2"), "{message}");
    assert!(
        message.contains("upcasters read versions 3 only"),
        "{message}"
    );
}

#[test]
fn an_upcaster_that_fails_is_a_decode_error_naming_it() {
    let payload = serde_json::json!({ "customer_id": "eve", "cents": -5 });
    let error = EventRegistry::global()
        .decode(metadata(2), &payload)
        .err()
        .unwrap();
    assert!(
        matches!(error, DecodeError::Upcast { from: 2, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("with_currency") && message.contains("negative"),
        "{message}"
    );
}

#[test]
fn a_registry_made_by_hand_reports_gaps_and_duplicates() {
    fn step(
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, projections::projection::BoxError> {
        Ok(payload)
    }
    let mut registry = EventRegistry::new();
    registry.register::<OrderPlaced>().unwrap();
    registry.register_upcaster(projections::event::Upcaster::new::<OrderPlaced>(
        1, "one", step,
    ));
    assert_eq!(
        registry.check_upcasters(),
        Err(UpcasterError::Gap {
            event_type: "OrderPlaced",
            current: 3,
            lowest: 1,
            missing: 2
        })
    );
    registry.register_upcaster(projections::event::Upcaster::new::<OrderPlaced>(
        2, "two", step,
    ));
    registry.check_upcasters().unwrap();
    registry.register_upcaster(projections::event::Upcaster::new::<OrderPlaced>(
        2, "again", step,
    ));
    let error = registry.check_upcasters().err().unwrap();
    assert!(
        matches!(error, UpcasterError::Duplicate { from: 2, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("again and two"), "{error}");
}

/// Appends `v3` events through `store`, then the test rewrites the rows of the first two as
/// versions 1 and 2 (what an older build wrote).
async fn append_three(store: &dyn EventStore) -> Uuid {
    let order = Uuid::new_v4();
    let events = ["a", "b", "c"]
        .into_iter()
        .map(|c| Envelope::new(order, current(c, 1)).into())
        .collect();
    store
        .append(order, ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    order
}

fn assert_upcast(events: &[StoredEvent]) {
    let orders: Vec<OrderPlaced> = events
        .iter()
        .map(|e| {
            let event = e.event().unwrap_or_else(|| panic!("undecodable: {e:?}"));
            let order = event.downcast::<OrderPlaced>().unwrap();
            assert_eq!(order.metadata.event_version, 3);
            order.payload.clone()
        })
        .collect();
    assert_eq!(
        orders,
        [current("ada", 1200), current("bob", 500), current("c", 1)]
    );
}

#[tokio::test]
async fn stored_versions_1_and_2_read_back_as_version_3_from_sqlite() {
    let path =
        std::env::temp_dir().join(format!("projections-upcast-{}.db", Uuid::new_v4().simple()));
    let store = SqliteEventStore::open(&path).await.unwrap();
    append_three(&store).await;
    for (position, version, payload) in [(1, 1, v1()), (2, 2, v2())] {
        sqlx::query(
            "UPDATE projection_events SET event_version = ?1, payload = ?2 WHERE position = ?3",
        )
        .bind(version)
        .bind(payload.to_string())
        .bind(position)
        .execute(store.pool())
        .await
        .unwrap();
    }
    assert_upcast(&store.read_all(0, 10).await.unwrap());
    store.pool().close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// A PostgreSQL store in a schema of the test's own.
async fn postgres_store() -> (sqlx::PgPool, Schema, PostgreSQLEventStore) {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let pool = sqlx::PgPool::connect(&url)
        .await
        .expect("PostgreSQL must be running for this test (set DATABASE_URL)");
    let schema = Schema::named(&format!("upcast_{}", Uuid::new_v4().simple())).unwrap();
    projections::postgres::migrate_schema(&pool, &schema)
        .await
        .unwrap();
    let store = PostgreSQLEventStore::with_schema(pool.clone(), schema.clone());
    (pool, schema, store)
}

async fn drop_schema(pool: &sqlx::PgPool, schema: &Schema) {
    sqlx::query(&format!("DROP SCHEMA {} CASCADE", schema.name().unwrap()))
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn stored_versions_1_and_2_read_back_as_version_3_from_postgres() {
    let (pool, schema, store) = postgres_store().await;
    append_three(&store).await;
    for (position, version, payload) in [(1i64, 1i32, v1()), (2, 2, v2())] {
        sqlx::query(&format!(
            "UPDATE {}.projection_events SET event_version = $1, payload = $2 WHERE position = $3",
            schema.name().unwrap()
        ))
        .bind(version)
        .bind(&payload)
        .bind(position)
        .execute(&pool)
        .await
        .unwrap();
    }
    // Reads are gap-safe: a transaction elsewhere on the server may hold them back a while.
    let mut events = Vec::new();
    for _ in 0..600 {
        events = store.read_all(0, 10).await.unwrap();
        if events.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_upcast(&events);
    drop_schema(&pool, &schema).await;
}

#[test]
fn an_upcaster_that_panics_is_a_decode_error_not_a_panic() {
    let metadata = EventMetadata::new(ParcelWeighed::EVENT_TYPE, 1, Uuid::new_v4(), "Parcel");
    let error = EventRegistry::global()
        .decode_str(metadata, r#"{ "weight": -3 }"#)
        .err()
        .unwrap();
    assert!(
        matches!(error, DecodeError::Upcast { from: 1, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("unit_added") && message.contains("panicked: a negative weight"),
        "{message}"
    );
}

/// In a page of a thousand upcast rows read from PostgreSQL, a row whose upcaster panics is that
/// event's failure alone: the read returns, every other event decodes, in order.
#[tokio::test]
async fn a_panicking_upcaster_fails_its_event_only_and_the_page_reads_whole() {
    let (pool, schema, store) = postgres_store().await;
    let parcel = Uuid::new_v4();
    let events = (0..1_000)
        .map(|n| {
            Envelope::new(
                parcel,
                ParcelWeighed {
                    weight: n,
                    unit: "g".into(),
                },
            )
            .into()
        })
        .collect();
    store
        .append(parcel, ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    // Every row rewritten as version 1; the 700th with a weight its upcaster panics on.
    sqlx::query(&format!(
        "UPDATE {0}.projection_events
         SET event_version = 1,
             payload = CASE WHEN aggregate_version = 700 THEN '{{\"weight\": -1}}'::jsonb
                            ELSE payload - 'unit' END",
        schema.name().unwrap()
    ))
    .execute(&pool)
    .await
    .unwrap();
    let mut page = Vec::new();
    for _ in 0..600 {
        page = store.read_all(0, 1_000).await.unwrap();
        if page.len() == 1_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(page.len(), 1_000);
    let positions: Vec<u64> = page.iter().filter_map(StoredEvent::position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "out of order");
    for (n, stored) in page.iter().enumerate() {
        if n == 699 {
            let StoredEvent::Undecodable(undecodable) = stored else {
                panic!("the 700th event decoded: {stored:?}");
            };
            assert!(
                undecodable.error.to_string().contains("panicked"),
                "{}",
                undecodable.error
            );
            continue;
        }
        let event = stored
            .event()
            .unwrap_or_else(|| panic!("undecodable: {stored:?}"));
        let weighed = event.downcast::<ParcelWeighed>().unwrap();
        assert_eq!((weighed.weight, weighed.unit.as_str()), (n as i64, "g"));
    }
    drop_schema(&pool, &schema).await;
}

#[derive(Default)]
struct Revenue {
    cents: i64,
}

#[projection(name = "upcast-revenue")]
impl Revenue {
    #[handles(OrderPlaced)]
    async fn placed(&mut self, event: &Envelope<OrderPlaced>) {
        self.cents += event.cents;
    }
}

#[tokio::test]
async fn an_event_whose_upcaster_fails_is_dead_lettered_and_the_rest_applied() {
    let path =
        std::env::temp_dir().join(format!("projections-upcast-{}.db", Uuid::new_v4().simple()));
    let store = Arc::new(SqliteEventStore::open(&path).await.unwrap());
    append_three(store.as_ref()).await;
    // Position 2: a version-2 payload the upcaster refuses.
    sqlx::query("UPDATE projection_events SET event_version = 2, payload = ?1 WHERE position = 2")
        .bind(serde_json::json!({ "customer_id": "eve", "cents": -5 }).to_string())
        .execute(store.pool())
        .await
        .unwrap();
    let mut runner =
        ProjectionRunner::new(Revenue::default()).retry_policy(projections::NoRetryPolicy);
    let events = store.read_all(0, 10).await.unwrap();
    let outcome = runner.handle_batch(&events).await.unwrap();
    assert_eq!(outcome.applied, 2);
    assert_eq!(runner.projection().cents, 2);
    let dead = runner.unresolved_dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].position, Some(2));
    assert!(
        dead[0].error_message.contains("with_currency"),
        "{}",
        dead[0].error_message
    );
    store.pool().close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// Version 2 added a field with a default; no upcaster is declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(version = 2)]
struct ProfileRenamed {
    name: String,
    #[serde(default)]
    nickname: Option<String>,
}

#[test]
fn a_type_with_no_upcasters_decodes_older_versions_directly() {
    let metadata = EventMetadata::new("ProfileRenamed", 1, Uuid::new_v4(), "");
    let event = EventRegistry::global()
        .decode(metadata, &serde_json::json!({ "name": "ada" }))
        .unwrap();
    let renamed = event.downcast::<ProfileRenamed>().unwrap();
    assert_eq!(renamed.payload.name, "ada");
    assert_eq!(renamed.metadata.event_version, 1);
}
