//! `ops-cli COMMAND...`: a program embedding the command line (`projections::cli`), on the
//! SQLite file named by `OPS_DB`, for the tests that run it as a process (`tests/cli.rs`).
//!
//! Projections: `balances` (in memory; a withdrawal of 13 is refused, until `OPS_FIX=1`
//! deploys the fix) and `tally` (counts events); no retries, dead letters on failure.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use projections::cli::{Cli, Operator};
use projections::coordinator::ProjectionCoordinator;
use projections::runner::{ProjectionRunner, Repositories};
use projections::sqlite::{SqliteCheckpointRepository, SqliteDLQRepository, SqliteEventStore};
use projections::{Envelope, Event, NoRetryPolicy, ProjectionRegistry, projection};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "ops.deposited", aggregate = "Account")]
struct Deposited {
    amount: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "ops.withdrawn", aggregate = "Account")]
struct Withdrawn {
    amount: i64,
}

#[derive(Default)]
struct Balances {
    balances: HashMap<Uuid, i64>,
    fixed: bool,
}

#[projection(name = "balances")]
impl Balances {
    #[handles(Deposited)]
    async fn deposited(&mut self, event: &Envelope<Deposited>) {
        *self.balances.entry(event.aggregate_id()).or_default() += event.amount;
    }

    #[handles(Withdrawn)]
    async fn withdrawn(&mut self, event: &Envelope<Withdrawn>) -> Result<(), String> {
        if event.amount == 13 && !self.fixed {
            return Err(format!("unlucky withdrawal on {}", event.aggregate_id()));
        }
        *self.balances.entry(event.aggregate_id()).or_default() -= event.amount;
        Ok(())
    }

    #[reset]
    async fn clear(&mut self) {
        self.balances.clear();
    }
}

#[derive(Default)]
struct Tally(u64);

#[projection(name = "tally")]
impl Tally {
    #[handles(Deposited)]
    async fn deposited(&mut self, _event: &Envelope<Deposited>) {
        self.0 += 1;
    }

    #[reset]
    async fn clear(&mut self) {
        self.0 = 0;
    }
}

fn registry(
    storage: Repositories,
    fixed: bool,
) -> Result<ProjectionRegistry, projections::registry::DuplicateProjection> {
    let balances = Balances {
        fixed,
        ..Balances::default()
    };
    let mut registry = ProjectionRegistry::new();
    registry.register(
        ProjectionRunner::builder(balances)
            .storage(storage.clone())
            .retry_policy(NoRetryPolicy)
            .build(),
    )?;
    registry.register(
        ProjectionRunner::builder(Tally::default())
            .storage(storage)
            .build(),
    )?;
    Ok(registry)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let Ok(path) = std::env::var("OPS_DB") else {
        eprintln!("error: set OPS_DB to the database file");
        return ExitCode::from(2);
    };
    let pool = match projections::sqlite::open(&path).await {
        Ok(pool) => pool,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(1);
        }
    };
    let storage = Repositories::new(
        Arc::new(SqliteCheckpointRepository::new(pool.clone())),
        Arc::new(SqliteDLQRepository::new(pool.clone())),
    );
    let fixed = std::env::var("OPS_FIX").is_ok_and(|v| v == "1");
    let registry = match registry(storage, fixed) {
        Ok(registry) => registry,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(1);
        }
    };
    let store = Arc::new(SqliteEventStore::new(pool.clone()));
    let coordinator = ProjectionCoordinator::new(registry, store)
        .batch_size(2)
        .poll_interval(Duration::from_millis(50));
    Operator::new(coordinator)
        .migrate(move || async move {
            projections::sqlite::migrate(&pool).await?;
            Ok(())
        })
        .run(cli)
        .await
}
