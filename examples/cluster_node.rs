//! One node of a cluster: run it in several terminals, each with its own `--node`, and the
//! nodes share the projections through PostgreSQL. Kill one (`Ctrl-\` or `kill -9`) and the
//! others take its projections within the lease (5 s); start it again and the work is shared
//! again; stop one with `Ctrl-C` and it hands its projections over at once.
//!
//! ```text
//! cargo run --example cluster_node --features postgres -- --node a
//! cargo run --example cluster_node --features postgres -- --node b
//! cargo run --example cluster_node --features postgres -- --node c
//! ```
//!
//! Against `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`), in the schema
//! `cluster_example` (`DROP SCHEMA cluster_example CASCADE` starts from nothing). Each node
//! also takes an order every 500 ms (`--orders-every-ms 0` for none), so there is always
//! something to apply. Every two seconds it prints who owns what, as it sees it.

use std::sync::Arc;
use std::time::Duration;

use projections::cluster::ClusterNode;
use projections::coordinator::{CoordinatorHandle, ProjectionCoordinator, WorkerState};
use projections::postgres::{self, PgPool, PostgreSQLEventStore, Schema};
use projections::transactional::{PostgreSQLTransactionUnit, TransactionalRunner};
use projections::{
    Envelope, Event, EventStore, ExpectedVersion, PgConnection, ProjectionRegistry, projection,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const SCHEMA: &str = "cluster_example";

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "Order")]
struct OrderPlaced {
    customer: String,
    total_cents: i64,
}

const CREATE_TABLES: &str = "
    CREATE TABLE IF NOT EXISTS cluster_example.customer_totals (
        customer    text   PRIMARY KEY,
        orders      bigint NOT NULL,
        total_cents bigint NOT NULL
    );
    CREATE TABLE IF NOT EXISTS cluster_example.daily_revenue (
        day         date   PRIMARY KEY,
        total_cents bigint NOT NULL
    );
    CREATE TABLE IF NOT EXISTS cluster_example.order_log (
        order_id   uuid PRIMARY KEY,
        applied_by text NOT NULL
    );";

/// Orders and spend per customer.
struct CustomerTotals;

#[projection(name = "customer-totals")]
impl CustomerTotals {
    #[handles(OrderPlaced)]
    async fn placed(
        &mut self,
        conn: &mut PgConnection,
        e: &Envelope<OrderPlaced>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO cluster_example.customer_totals VALUES ($1, 1, $2)
             ON CONFLICT (customer) DO UPDATE SET orders = customer_totals.orders + 1,
                 total_cents = customer_totals.total_cents + EXCLUDED.total_cents",
        )
        .bind(&e.customer)
        .bind(e.total_cents)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Revenue per day.
struct DailyRevenue;

#[projection(name = "daily-revenue")]
impl DailyRevenue {
    #[handles(OrderPlaced)]
    async fn placed(
        &mut self,
        conn: &mut PgConnection,
        e: &Envelope<OrderPlaced>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO cluster_example.daily_revenue VALUES ($1::timestamptz::date, $2)
             ON CONFLICT (day) DO UPDATE SET total_cents = daily_revenue.total_cents + EXCLUDED.total_cents",
        )
        .bind(e.metadata.occurred_at)
        .bind(e.total_cents)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Which node applied each order: a plain `INSERT`, so an order applied twice would fail.
struct OrderLog {
    node: String,
}

#[projection(name = "order-log")]
impl OrderLog {
    #[handles(OrderPlaced)]
    async fn placed(
        &mut self,
        conn: &mut PgConnection,
        e: &Envelope<OrderPlaced>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO cluster_example.order_log VALUES ($1, $2)")
            .bind(e.aggregate_id())
            .bind(&self.node)
            .execute(conn)
            .await?;
        Ok(())
    }
}

struct Args {
    node: String,
    orders_every: Duration,
}

fn args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        node: String::new(),
        orders_every: Duration::from_millis(500),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--node" => parsed.node = args.next().unwrap_or_default(),
            "--orders-every-ms" => {
                parsed.orders_every =
                    Duration::from_millis(args.next().unwrap_or_default().parse()?)
            }
            other => anyhow::bail!(
                "unknown argument `{other}`; usage: cluster_node --node ID [--orders-every-ms N]"
            ),
        }
    }
    if parsed.node.is_empty() {
        anyhow::bail!("usage: cluster_node --node ID [--orders-every-ms N]");
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = PgPool::connect(&url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach PostgreSQL at {url}: {e}"))?;
    let schema = Schema::named(SCHEMA)?;
    postgres::migrate_schema(&pool, &schema).await?;
    sqlx::raw_sql(CREATE_TABLES).execute(&pool).await?;

    let unit = Arc::new(PostgreSQLTransactionUnit::with_schema(
        pool.clone(),
        &schema,
    ));
    let mut registry = ProjectionRegistry::new();
    registry.register(TransactionalRunner::new(CustomerTotals, unit.clone()))?;
    registry.register(TransactionalRunner::new(DailyRevenue, unit.clone()))?;
    registry.register(TransactionalRunner::new(
        OrderLog {
            node: args.node.clone(),
        },
        unit,
    ))?;

    // The one line that makes this process a node: the same id must not run twice.
    let node = ClusterNode::new(pool.clone(), args.node.clone())?.schema(&schema);
    let store = Arc::new(PostgreSQLEventStore::with_schema(pool, schema));
    let handle = ProjectionCoordinator::new(registry, store.clone())
        .poll_interval(Duration::from_millis(250))
        .cluster(node)
        .start()?;
    println!(
        "node {} started; Ctrl-C hands its projections over and stops",
        args.node
    );

    let mut report = tokio::time::interval(Duration::from_secs(2));
    let mut orders = tokio::time::interval(args.orders_every.max(Duration::from_millis(1)));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = report.tick() => print_status(&handle),
            _ = orders.tick(), if !args.orders_every.is_zero() => place_order(&*store).await?,
        }
    }
    println!(
        "node {} leaving: finishing its batches and giving its projections back",
        args.node
    );
    let report = handle.shutdown(Duration::from_secs(10)).await;
    println!(
        "node {} left ({} events applied here)",
        args.node,
        report.projections.iter().map(|p| p.applied).sum::<u64>()
    );
    Ok(())
}

async fn place_order(store: &dyn EventStore) -> anyhow::Result<()> {
    let id = Uuid::new_v4();
    let customers = ["ada", "grace", "edsger", "barbara"];
    let event = OrderPlaced {
        customer: customers[id.as_bytes()[0] as usize % customers.len()].to_owned(),
        total_cents: 500 + i64::from(id.as_bytes()[1]) * 10,
    };
    store
        .append(
            id,
            ExpectedVersion::NoStream,
            vec![Envelope::new(id, event).into()],
        )
        .await?;
    Ok(())
}

fn print_status(handle: &CoordinatorHandle) {
    if let Some(view) = handle.cluster() {
        let nodes: Vec<&str> = view.nodes.iter().map(|n| n.id.as_str()).collect();
        println!(
            "node {}: live nodes [{}], holds {} of its share {}{}",
            view.node,
            nodes.join(", "),
            view.held,
            view.target,
            view.last_error
                .map(|e| format!(" (heartbeat failing: {e})"))
                .unwrap_or_default()
        );
    }
    for status in handle.status() {
        let owner = status
            .owner
            .as_ref()
            .and_then(|o| o.node.clone())
            .unwrap_or_else(|| "nobody".to_owned());
        let what = match &status.state {
            WorkerState::Standby { .. } => format!("standby, owned by {owner}"),
            state => format!(
                "{state} here, checkpoint {}",
                status.checkpoint.unwrap_or(0)
            ),
        };
        println!("  {:<16} {what}", status.name);
    }
}
