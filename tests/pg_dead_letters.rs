//! Dead letters on a real PostgreSQL server (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): events of a type an older build did not know
//! are dead-lettered by it (as stored rows, since they did not decode), and are replayed by the
//! build that knows the type; a transactional projection parks an aggregate behind its dead
//! letter and releases it in order.
//!
//! Run with `cargo test -p projections-tests --features postgres --test pg_dead_letters`
//! (cargo builds the `old-build` binary first). Fails, rather than skips, when the server
//! cannot be reached. Each test works in a schema of its own, dropped when it passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use projections::coordinator::ProjectionCoordinator;
use projections::dlq::DLQFilter;
use projections::postgres::{PostgreSQLEventStore, Schema, migrate_schema};
use projections::runner::Repositories;
use projections::transactional::{PostgreSQLTransactionUnit, TransactionalRunner};
use projections::{
    AnyEvent, DLQStatus, Envelope, Event, EventStore, ExpectedVersion, FailurePolicy,
    NoRetryPolicy, PgConnection, ProjectionRegistry, projection,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "cards.issued", aggregate = "Card")]
struct CardIssued {
    holder: String,
}

/// New in this build: `old-build` does not know it.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "cards.gift_card_loaded", aggregate = "Card")]
struct GiftCardLoaded {
    cents: i64,
}

/// Card balances in table `card_balances` of the test's schema.
struct Cards {
    schema: String,
}

#[projection(name = "cards")]
impl Cards {
    #[handles(CardIssued)]
    async fn issued(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<CardIssued>,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO \"{}\".card_balances (card, cents) VALUES ($1, 0)",
            self.schema
        );
        sqlx::query(&sql)
            .bind(event.aggregate_id())
            .execute(conn)
            .await?;
        Ok(())
    }

    #[handles(GiftCardLoaded)]
    async fn loaded(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<GiftCardLoaded>,
    ) -> Result<(), projections::projection::BoxError> {
        let sql = format!(
            "UPDATE \"{}\".card_balances SET cents = cents + $2 WHERE card = $1",
            self.schema
        );
        let updated = sqlx::query(&sql)
            .bind(event.aggregate_id())
            .bind(event.cents)
            .execute(conn)
            .await?;
        if updated.rows_affected() == 0 {
            return Err("a load on a card never issued".into());
        }
        Ok(())
    }
}

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

async fn schema(pool: &PgPool) -> (Schema, String) {
    let name = format!("dl_{}", Uuid::new_v4().simple());
    let schema = Schema::named(&name).unwrap();
    migrate_schema(pool, &schema).await.unwrap();
    sqlx::raw_sql(&format!(
        "CREATE TABLE \"{name}\".card_balances (card uuid PRIMARY KEY, cents bigint NOT NULL)"
    ))
    .execute(pool)
    .await
    .unwrap();
    (schema, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_a_type_unknown_to_an_older_build_replay_once_it_is_known() {
    let url = database_url();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}; set DATABASE_URL"));
    let (schema, name) = schema(&pool).await;
    let store = Arc::new(PostgreSQLEventStore::with_schema(
        pool.clone(),
        schema.clone(),
    ));

    // Two cards, then 14 loads spread over them.
    let cards = [Uuid::new_v4(), Uuid::new_v4()];
    for card in cards {
        let issued = Envelope::new(
            card,
            CardIssued {
                holder: "ada".into(),
            },
        )
        .into();
        store
            .append(card, ExpectedVersion::NoStream, vec![issued])
            .await
            .unwrap();
    }
    for n in 0..14_i64 {
        let card = cards[(n % 2) as usize];
        let load = Envelope::new(card, GiftCardLoaded { cents: 100 + n }).into();
        store
            .append(card, ExpectedVersion::Any, vec![load])
            .await
            .unwrap();
    }

    // The old build catches up: every load is dead-lettered, as the row it could not decode.
    let old = Command::new(env!("CARGO_BIN_EXE_old-build"))
        .args([url.as_str(), name.as_str(), "14"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&old.stdout);
    assert!(
        old.status.success(),
        "old-build failed: {said}{}",
        String::from_utf8_lossy(&old.stderr)
    );
    assert_eq!(said.trim(), "dead_lettered 14");
    let storage = Repositories::postgres_in(pool.clone(), &schema);
    let entries = storage
        .dead_letter_repository()
        .get_failed_events(DLQFilter::failed_in("cards"))
        .await
        .unwrap();
    assert_eq!(entries.len(), 14);
    assert!(
        entries
            .iter()
            .all(|e| e.error_message.contains("unknown event type")),
        "{:?}",
        entries[0].error_message
    );

    // The new build replays them all, in position order.
    let unit = Arc::new(PostgreSQLTransactionUnit::with_schema(
        pool.clone(),
        &schema,
    ));
    let runner = TransactionalRunner::new(
        Cards {
            schema: name.clone(),
        },
        unit,
    )
    .retry_policy(NoRetryPolicy);
    let mut registry = ProjectionRegistry::new();
    registry.register(runner).unwrap();
    let handle = ProjectionCoordinator::new(registry, store.clone())
        .start()
        .unwrap();
    handle.wait_for_checkpoint("cards", 16).await.unwrap();
    let report = handle.replay_dead_letters("cards").await.unwrap();
    assert_eq!(report.replayed.len(), 14, "failed: {:?}", report.failed);
    assert!(report.failed.is_empty());
    let left = storage
        .dead_letter_repository()
        .get_failed_events(DLQFilter::all().projection("cards"))
        .await
        .unwrap();
    assert!(left.iter().all(|e| e.status == DLQStatus::Resolved));
    assert_eq!(handle.projection_status("cards").unwrap().dead_letters, 0);

    // The read model equals that of a build that knew the type all along.
    let balances: BTreeMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(&format!(
        "SELECT card, cents FROM \"{name}\".card_balances"
    ))
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut expected = BTreeMap::new();
    for (n, card) in (0..14_i64).map(|n| (n, cards[(n % 2) as usize])) {
        *expected.entry(card).or_insert(0) += 100 + n;
    }
    assert_eq!(balances, expected);

    let _ = handle.shutdown(Duration::from_secs(5)).await;
    sqlx::raw_sql(&format!("DROP SCHEMA \"{name}\" CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}

/// Card balances that apply loads only in position order (`last_position`), and cannot read
/// a load of 5000 while `broken` is set.
struct OrderedCards {
    schema: String,
    broken: Arc<AtomicBool>,
}

#[projection(name = "ordered_cards")]
impl OrderedCards {
    #[handles(CardIssued)]
    async fn issued(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<CardIssued>,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO \"{}\".ordered_balances (card, cents, last_position) VALUES ($1, 0, $2)",
            self.schema
        );
        sqlx::query(&sql)
            .bind(event.aggregate_id())
            .bind(event.position().unwrap_or(0) as i64)
            .execute(conn)
            .await?;
        Ok(())
    }

    #[handles(GiftCardLoaded)]
    async fn loaded(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<GiftCardLoaded>,
    ) -> Result<(), projections::projection::BoxError> {
        if event.cents == 5000 && self.broken.load(Ordering::SeqCst) {
            return Err("a load this build cannot read".into());
        }
        let sql = format!(
            "UPDATE \"{}\".ordered_balances SET cents = cents + $2, last_position = $3 \
             WHERE card = $1 AND last_position < $3",
            self.schema
        );
        let updated = sqlx::query(&sql)
            .bind(event.aggregate_id())
            .bind(event.cents)
            .bind(event.position().unwrap_or(0) as i64)
            .execute(conn)
            .await?;
        if updated.rows_affected() == 0 {
            return Err("applied out of order, or on a card never issued".into());
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_projection_parks_an_aggregate_and_releases_it_in_order() {
    let url = database_url();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}; set DATABASE_URL"));
    let (schema, name) = schema(&pool).await;
    sqlx::raw_sql(&format!(
        "CREATE TABLE \"{name}\".ordered_balances \
         (card uuid PRIMARY KEY, cents bigint NOT NULL, last_position bigint NOT NULL)"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let store = Arc::new(PostgreSQLEventStore::with_schema(
        pool.clone(),
        schema.clone(),
    ));
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let issued = |card: Uuid| -> AnyEvent {
        let holder = "ada".to_owned();
        Envelope::new(card, CardIssued { holder }).into()
    };
    let loaded = |card: Uuid, cents: i64| -> AnyEvent {
        Envelope::new(card, GiftCardLoaded { cents }).into()
    };
    let events = [
        (a, issued(a)),       // 1
        (b, issued(b)),       // 2
        (a, loaded(a, 5000)), // 3: unreadable
        (b, loaded(b, 10)),   // 4
        (a, loaded(a, 7)),    // 5: held
        (b, loaded(b, 1)),    // 6
    ];
    for (card, event) in events {
        store
            .append(card, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }
    let broken = Arc::new(AtomicBool::new(true));
    let unit = Arc::new(PostgreSQLTransactionUnit::with_schema(
        pool.clone(),
        &schema,
    ));
    let runner = TransactionalRunner::new(
        OrderedCards {
            schema: name.clone(),
            broken: Arc::clone(&broken),
        },
        unit,
    )
    .retry_policy(NoRetryPolicy)
    .on_failure(FailurePolicy::ParkAggregate);
    let mut registry = ProjectionRegistry::new();
    registry.register(runner).unwrap();
    let handle = ProjectionCoordinator::new(registry, store)
        .poll_interval(Duration::from_millis(20))
        .start()
        .unwrap();
    handle
        .wait_for_checkpoint("ordered_cards", 6)
        .await
        .unwrap();

    let balances = || async {
        sqlx::query_as::<_, (Uuid, i64)>(&format!(
            "SELECT card, cents FROM \"{name}\".ordered_balances"
        ))
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect::<BTreeMap<_, _>>()
    };
    let parked = balances().await;
    assert_eq!((parked[&a], parked[&b]), (0, 11));
    let storage = Repositories::postgres_in(pool.clone(), &schema);
    let mut held = storage
        .dead_letter_repository()
        .get_failed_events(DLQFilter::failed_in("ordered_cards"))
        .await
        .unwrap();
    held.sort_by_key(|e| e.position);
    let positions: Vec<_> = held.iter().map(|e| e.position).collect();
    assert_eq!(positions, [Some(3), Some(5)]);
    assert!(held[1].error_message.starts_with("held back"));

    broken.store(false, Ordering::SeqCst);
    let report = handle.replay_dead_letters("ordered_cards").await.unwrap();
    assert_eq!(report.replayed.len(), 2, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    let released = balances().await;
    assert_eq!((released[&a], released[&b]), (5007, 11));

    let _ = handle.shutdown(Duration::from_secs(5)).await;
    sqlx::raw_sql(&format!("DROP SCHEMA \"{name}\" CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}
