//! An orders service with everything an operator needs: the command line
//! (`projections::cli`), health and readiness over HTTP, Prometheus metrics, and the
//! dead-letter workflow, on a SQLite file or on PostgreSQL.
//!
//! ```text
//! cargo run --example orders_service -- status
//! cargo run --example orders_service -- run              # live, http://127.0.0.1:9464/ready
//! cargo run --example orders_service -- dlq list
//! cargo run --example orders_service -- rebuild --all
//! cargo run --example orders_service --features postgres -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/test status
//! ```
//!
//! The first start writes sample orders into an empty store, among them one shipment of an
//! order never placed: `order_timeline` parks that order behind its dead letter (its later
//! events wait, the other orders go on), `revenue` is untouched by it. Storage: the SQLite file
//! `orders.db` (`--db PATH`), or PostgreSQL with `--database-url URL` or `DATABASE_URL` (built
//! with `--features postgres`). Checkpoints, halts and dead letters are durable; the read
//! models are kept in the memory of the process that runs them (`run`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use projections::cli::{Cli, Operator};
use projections::coordinator::ProjectionCoordinator;
use projections::http::HttpOptions;
use projections::metrics::PrometheusRecorder;
use projections::runner::Repositories;
use projections::{
    Envelope, Event, EventStore, ExpectedVersion, FailurePolicy, NoRetryPolicy, ProjectionRegistry,
    ProjectionRunner, projection,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ---- Events ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "orders.placed", aggregate = "Order")]
struct OrderPlaced {
    customer: String,
    cents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "orders.shipped", aggregate = "Order")]
struct OrderShipped {
    carrier: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(name = "orders.delivered", aggregate = "Order")]
struct OrderDelivered;

// ---- Projections ----------------------------------------------------------------------------

/// What happened to each order, in order. A shipment of an order never placed is an error:
/// with `FailurePolicy::ParkAggregate` that order waits behind its dead letter.
#[derive(Default)]
struct OrderTimeline {
    steps: HashMap<Uuid, Vec<&'static str>>,
}

#[projection(name = "order_timeline")]
impl OrderTimeline {
    #[handles(OrderPlaced)]
    async fn placed(&mut self, event: &Envelope<OrderPlaced>) {
        self.steps
            .entry(event.aggregate_id())
            .or_default()
            .push("placed");
    }

    #[handles(OrderShipped)]
    async fn shipped(&mut self, event: &Envelope<OrderShipped>) -> Result<(), String> {
        let steps = self
            .steps
            .get_mut(&event.aggregate_id())
            .ok_or_else(|| format!("order {} was never placed", event.aggregate_id()))?;
        steps.push("shipped");
        Ok(())
    }

    #[handles(OrderDelivered)]
    async fn delivered(&mut self, event: &Envelope<OrderDelivered>) -> Result<(), String> {
        let steps = self
            .steps
            .get_mut(&event.aggregate_id())
            .ok_or_else(|| format!("order {} was never placed", event.aggregate_id()))?;
        steps.push("delivered");
        Ok(())
    }

    #[reset]
    async fn clear(&mut self) {
        self.steps.clear();
    }
}

/// Revenue per customer.
#[derive(Default)]
struct Revenue {
    cents: BTreeMap<String, u64>,
}

#[projection(name = "revenue")]
impl Revenue {
    #[handles(OrderPlaced)]
    async fn placed(&mut self, event: &Envelope<OrderPlaced>) {
        *self.cents.entry(event.customer.clone()).or_default() += event.cents;
    }

    #[reset]
    async fn clear(&mut self) {
        self.cents.clear();
    }
}

// ---- The program ----------------------------------------------------------------------------

#[derive(Debug, Parser)]
#[command(
    name = "orders_service",
    about = "An orders service and its projections"
)]
struct Args {
    /// The SQLite file (used unless a PostgreSQL URL is given).
    #[arg(long, global = true, default_value = "orders.db")]
    db: PathBuf,
    /// PostgreSQL instead of SQLite (also from `DATABASE_URL`); needs `--features postgres`.
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Where `run` serves /health, /ready, /metrics and /projections.
    #[arg(long, global = true, default_value = "127.0.0.1:9464")]
    http: SocketAddr,
    #[command(flatten)]
    cli: Cli,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let database_url = args
        .database_url
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok());
    let (store, repositories, backend) = match open(&args, database_url.as_deref()).await {
        Ok(storage) => storage,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(1);
        }
    };
    if let Err(error) = seed(&*store).await {
        eprintln!("error: cannot write the sample orders: {error}");
        return ExitCode::from(1);
    }

    let registry = match projections_on(repositories) {
        Ok(registry) => registry,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(1);
        }
    };
    let coordinator =
        ProjectionCoordinator::new(registry, store).poll_interval(Duration::from_millis(200));

    let mut operator = Operator::new(coordinator);
    if matches!(args.cli.command, projections::cli::Command::Run) {
        // Metrics are recorded only when a recorder is installed: here, for `run`.
        match PrometheusRecorder::install_once() {
            Ok(metrics) => {
                let options = HttpOptions::new().max_lag_events(1_000).metrics(metrics);
                operator = operator.serve_http(args.http, options);
            }
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(1);
            }
        }
    }
    operator
        .migrate(move || async move {
            // Opening the storage migrates too; this is the same step, on its own.
            backend.migrate().await
        })
        .run(args.cli)
        .await
}

/// The two projections, on `repositories`.
fn projections_on(
    repositories: Repositories,
) -> Result<ProjectionRegistry, projections::registry::DuplicateProjection> {
    let mut registry = ProjectionRegistry::new();
    registry.register(
        ProjectionRunner::builder(OrderTimeline::default())
            .storage(repositories.clone())
            .retry_policy(NoRetryPolicy)
            .on_failure(FailurePolicy::ParkAggregate)
            .build(),
    )?;
    registry.register(
        ProjectionRunner::builder(Revenue::default())
            .storage(repositories)
            .build(),
    )?;
    Ok(registry)
}

/// The database, for `migrate`.
enum Backend {
    Sqlite(projections::sqlite::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

impl Backend {
    async fn migrate(self) -> Result<(), projections::projection::BoxError> {
        match self {
            Self::Sqlite(pool) => projections::sqlite::migrate(&pool).await?,
            #[cfg(feature = "postgres")]
            Self::Postgres(pool) => projections::postgres::migrate(&pool).await?,
        }
        Ok(())
    }
}

type Opened = (Arc<dyn EventStore>, Repositories, Backend);

/// Opens (and migrates) the storage: PostgreSQL when a URL is given, else the SQLite file.
async fn open(args: &Args, database_url: Option<&str>) -> anyhow::Result<Opened> {
    match database_url {
        Some(url) => open_postgres(url).await,
        None => {
            use projections::sqlite::{
                SqliteCheckpointRepository, SqliteDLQRepository, SqliteEventStore,
            };
            let pool = projections::sqlite::open(&args.db).await?;
            let repositories = Repositories::new(
                Arc::new(SqliteCheckpointRepository::new(pool.clone())),
                Arc::new(SqliteDLQRepository::new(pool.clone())),
            );
            let store = Arc::new(SqliteEventStore::new(pool.clone()));
            Ok((store, repositories, Backend::Sqlite(pool)))
        }
    }
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> anyhow::Result<Opened> {
    use projections::postgres::PostgreSQLEventStore;
    let store = PostgreSQLEventStore::connect(url).await?;
    let pool = store.pool().clone();
    let repositories = Repositories::postgres(pool.clone());
    Ok((Arc::new(store), repositories, Backend::Postgres(pool)))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str) -> anyhow::Result<Opened> {
    anyhow::bail!(
        "a PostgreSQL URL was given (--database-url or DATABASE_URL) but this build has no \
         PostgreSQL: run with `--features postgres`, or unset DATABASE_URL to use SQLite"
    )
}

/// Writes sample orders into an empty store: twelve orders placed, shipped and delivered,
/// and one shipment (with its delivery) of an order never placed.
async fn seed(store: &dyn EventStore) -> anyhow::Result<()> {
    if store.head_position().await? > 0 {
        return Ok(());
    }
    let customers = ["ada", "grace", "edsger", "barbara"];
    for n in 0..12_u64 {
        let order = Uuid::new_v4();
        let customer = customers[(n % 4) as usize].to_owned();
        let events = vec![
            Envelope::new(
                order,
                OrderPlaced {
                    customer,
                    cents: 1_000 + n * 250,
                },
            )
            .into(),
            Envelope::new(
                order,
                OrderShipped {
                    carrier: "post".into(),
                },
            )
            .into(),
            Envelope::new(order, OrderDelivered).into(),
        ];
        store
            .append(order, ExpectedVersion::NoStream, events)
            .await?;
    }
    let stray = Uuid::new_v4();
    let events = vec![
        Envelope::new(
            stray,
            OrderShipped {
                carrier: "post".into(),
            },
        )
        .into(),
        Envelope::new(stray, OrderDelivered).into(),
    ];
    store
        .append(stray, ExpectedVersion::NoStream, events)
        .await?;
    Ok(())
}
