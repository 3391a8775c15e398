//! Inline projections on a real PostgreSQL server (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): a projection run in each append's transaction
//! (`PostgreSQLEventStore::inline`) has its read model written when `append` returns; a handler
//! that fails or panics fails the append and nothing is stored; concurrent writers each apply
//! their own events once, with the positions the store gave them.
//!
//! Run with `cargo test -p projections-tests --features postgres --test pg_inline`. Each test
//! works in a schema of its own, dropped when it passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use projections::postgres::{PostgreSQLEventStore, Schema, migrate_schema};
use projections::store::AppendError;
use projections::{
    AnyEvent, Envelope, Event, EventStore, ExpectedVersion, HandlerError, PgConnection,
    StoredEvent, projection,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "inline.deposited", aggregate = "Account")]
struct Deposited {
    cents: i64,
}

/// A refused deposit: the handler fails on negative amounts and panics on one of -666.
#[derive(Clone)]
struct Balances {
    table: String,
}

#[projection(name = "balances")]
impl Balances {
    #[handles(Deposited)]
    async fn deposited(
        &mut self,
        conn: &mut PgConnection,
        e: &Envelope<Deposited>,
    ) -> Result<(), HandlerError> {
        if e.cents == -666 {
            panic!("the handler of a cursed deposit panics");
        }
        if e.cents < 0 {
            return Err(HandlerError::event(format!(
                "a negative deposit: {}",
                e.cents
            )));
        }
        let position = e.position().and_then(|p| i64::try_from(p).ok());
        sqlx::query(&format!(
            "INSERT INTO {} (event_id, account, cents, position, version) VALUES ($1, $2, $3, $4, $5)",
            self.table
        ))
        .bind(e.event_id())
        .bind(e.metadata.aggregate_id)
        .bind(e.cents)
        .bind(position)
        .bind(i64::try_from(e.metadata.aggregate_version).unwrap_or(-1))
        .execute(conn)
        .await
        .map_err(HandlerError::infrastructure)?;
        Ok(())
    }
}

struct Test {
    pool: PgPool,
    schema: String,
    store: PostgreSQLEventStore,
}

impl Test {
    async fn new() -> Self {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}; set DATABASE_URL"));
        let name = format!("inl_{}", Uuid::new_v4().simple())[..24].to_owned();
        let schema = Schema::named(&name).unwrap();
        migrate_schema(&pool, &schema).await.unwrap();
        sqlx::raw_sql(&format!(
            "CREATE TABLE \"{name}\".balances (
                 event_id uuid PRIMARY KEY, account uuid NOT NULL, cents bigint NOT NULL,
                 position bigint, version bigint NOT NULL)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        let store = PostgreSQLEventStore::with_schema(pool.clone(), schema).inline(Balances {
            table: format!("\"{name}\".balances"),
        });
        Self {
            pool,
            schema: name,
            store,
        }
    }

    /// (rows, their cents) of the read model.
    async fn balances(&self) -> (i64, i64) {
        sqlx::query_as(&format!(
            "SELECT count(*), coalesce(sum(cents), 0)::bigint FROM \"{}\".balances",
            self.schema
        ))
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    async fn drop_schema(&self) {
        sqlx::raw_sql(&format!("DROP SCHEMA \"{}\" CASCADE", self.schema))
            .execute(&self.pool)
            .await
            .unwrap();
    }
}

fn deposits(account: Uuid, cents: &[i64]) -> Vec<AnyEvent> {
    cents
        .iter()
        .map(|c| Envelope::new(account, Deposited { cents: *c }).into())
        .collect()
}

#[tokio::test]
async fn the_read_model_is_written_when_the_append_returns() {
    let test = Test::new().await;
    let account = Uuid::new_v4();
    let appended = test
        .store
        .append(
            account,
            ExpectedVersion::NoStream,
            deposits(account, &[100, 250, 50]),
        )
        .await
        .unwrap();
    // No coordinator, no waiting: the rows committed with the events.
    assert_eq!(test.balances().await, (3, 400));
    // With the positions and versions the store gave the events.
    let stored: Vec<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT position, version FROM \"{}\".balances ORDER BY position",
        test.schema
    ))
    .fetch_all(&test.pool)
    .await
    .unwrap();
    let read = test.store.read_stream(account).await.unwrap();
    let expected: Vec<(i64, i64)> = read
        .iter()
        .map(|e| match e {
            StoredEvent::Event(e) => (
                e.position().unwrap() as i64,
                e.metadata().aggregate_version as i64,
            ),
            StoredEvent::Undecodable(raw) => panic!("{raw:?}"),
        })
        .collect();
    assert_eq!(stored, expected);
    assert_eq!(stored.last().unwrap().0 as u64, appended.last_position);
    test.drop_schema().await;
}

#[tokio::test]
async fn a_failing_or_panicking_handler_fails_the_append_and_nothing_is_stored() {
    let test = Test::new().await;
    let account = Uuid::new_v4();
    test.store
        .append(
            account,
            ExpectedVersion::NoStream,
            deposits(account, &[100]),
        )
        .await
        .unwrap();
    for bad in [-5, -666] {
        let refused = test
            .store
            .append(
                account,
                ExpectedVersion::Exact(1),
                deposits(account, &[20, bad]),
            )
            .await
            .unwrap_err();
        match &refused {
            AppendError::Inline { projection, source } => {
                assert_eq!(projection, "balances");
                let text = source.to_string();
                assert!(
                    text.contains("negative deposit") || text.contains("panic"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            refused.to_string().contains("nothing was appended"),
            "{refused}"
        );
        // Neither the events nor their rows: the first deposit of the append is gone too.
        assert_eq!(test.store.read_stream(account).await.unwrap().len(), 1);
        assert_eq!(test.balances().await, (1, 100));
    }
    // The aggregate goes on at version 1.
    test.store
        .append(account, ExpectedVersion::Exact(1), deposits(account, &[1]))
        .await
        .unwrap();
    assert_eq!(test.balances().await, (2, 101));
    test.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_apply_each_of_their_events_once() {
    let test = Arc::new(Test::new().await);
    let mut writers = Vec::new();
    for _ in 0..4 {
        let test = Arc::clone(&test);
        writers.push(tokio::spawn(async move {
            for _ in 0..25 {
                let account = Uuid::new_v4();
                test.store
                    .append(
                        account,
                        ExpectedVersion::NoStream,
                        deposits(account, &[1, 2]),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(test.balances().await, (200, 300));
    // Every row's position is its event's position in the store.
    let mismatched: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{s}\".balances b JOIN \"{s}\".projection_events e USING (event_id)
          WHERE e.position IS DISTINCT FROM b.position",
        s = test.schema
    ))
    .fetch_one(&test.pool)
    .await
    .unwrap();
    assert_eq!(mismatched, 0);
    test.drop_schema().await;
}
