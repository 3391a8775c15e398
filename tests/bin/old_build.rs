//! `old-build DATABASE_URL SCHEMA EXPECTED`: a build of the program that does not know the
//! event type `cards.gift_card_loaded` yet (as one node of a rolling deploy), for the test of
//! replaying what it dead-lettered (`tests/pg_dead_letters.rs`). It catches projection `cards`
//! up (its read model: table `SCHEMA.card_balances`) until it has dead-lettered EXPECTED events
//! or 30 s have passed (a read stops before a transaction still in flight, possibly another
//! test's), prints `dead_lettered N` and exits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use projections::coordinator::ProjectionCoordinator;
use projections::postgres::{PostgreSQLEventStore, Schema};
use projections::transactional::{PostgreSQLTransactionUnit, TransactionalRunner};
use projections::{Envelope, Event, NoRetryPolicy, PgConnection, ProjectionRegistry, projection};
use serde::{Deserialize, Serialize};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The one card event this build knows.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "cards.issued", aggregate = "Card")]
struct CardIssued {
    holder: String,
}

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
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(name), Some(expected)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: old-build DATABASE_URL SCHEMA EXPECTED".into());
    };
    let expected: usize = expected.parse()?;
    let schema = Schema::named(&name)?;
    let pool = sqlx::PgPool::connect(&url).await?;
    let unit = Arc::new(PostgreSQLTransactionUnit::with_schema(
        pool.clone(),
        &schema,
    ));
    let runner = TransactionalRunner::new(Cards { schema: name }, unit).retry_policy(NoRetryPolicy);
    let mut registry = ProjectionRegistry::new();
    registry.register(runner)?;
    let store = Arc::new(PostgreSQLEventStore::with_schema(pool, schema));
    let mut coordinator = ProjectionCoordinator::new(registry, store);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dead_lettered = 0;
    while dead_lettered < expected && Instant::now() < deadline {
        let report = coordinator.catch_up_all().await?;
        for projection in &report.projections {
            if let Some(error) = &projection.error {
                eprintln!("{}: {error}", projection.name);
            }
        }
        dead_lettered += report.dead_lettered();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("dead_lettered {dead_lettered}");
    Ok(())
}
