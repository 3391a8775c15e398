//! A blue/green rebuild on SQLite: version 2 of an orders read model (a new column, a new
//! table) is built beside version 1 while version 1 keeps serving readers, then readers are
//! switched to it in one transaction and version 1 is retired.
//!
//! Run it with `cargo run --example bluegreen`. It works in a fresh database file under the
//! temporary directory (`projections-bluegreen-example.db`), removed at the start of each run.
//!
//! Readers query the views `orders` and (from version 2 on) `order_sizes`; each version's
//! handlers write to its own tables, `orders_v1` and `orders_v2` / `order_sizes_v2`.

use std::sync::Arc;
use std::time::Duration;

use projections::bluegreen::{BlueGreen, SqliteReadModelVersions};
use projections::coordinator::{CoordinatorHandle, ProjectionCoordinator};
use projections::sqlite::{self, SqliteEventStore, SqlitePool};
use projections::{
    AnyEvent, Envelope, Event, EventStore, ExpectedVersion, ProjectionRegistry, SqliteConnection,
    projection, sqlx,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "Order")]
struct OrderPlaced {
    customer: String,
    cents: i64,
}

// ---- Version 1: one row per order --------------------------------------------------------

const ORDERS_V1: &str = "CREATE TABLE orders_v1 (
    id TEXT PRIMARY KEY, customer TEXT NOT NULL, cents INTEGER NOT NULL)";

struct OrdersV1;

#[projection(name = "orders", version = 1)]
impl OrdersV1 {
    #[handles(OrderPlaced)]
    async fn placed(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<OrderPlaced>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO orders_v1 (id, customer, cents) VALUES (?1, ?2, ?3)")
            .bind(event.aggregate_id().to_string())
            .bind(&event.customer)
            .bind(event.cents)
            .execute(conn)
            .await?;
        Ok(())
    }
}

// ---- Version 2: a size band per order, and a count per band -------------------------------

const ORDERS_V2: &str = "
    CREATE TABLE orders_v2 (
        id TEXT PRIMARY KEY, customer TEXT NOT NULL, cents INTEGER NOT NULL, size TEXT NOT NULL);
    CREATE TABLE order_sizes_v2 (size TEXT PRIMARY KEY, orders INTEGER NOT NULL);";

struct OrdersV2;

#[projection(name = "orders", version = 2)]
impl OrdersV2 {
    #[handles(OrderPlaced)]
    async fn placed(
        &mut self,
        conn: &mut SqliteConnection,
        event: &Envelope<OrderPlaced>,
    ) -> Result<(), sqlx::Error> {
        let size = if event.cents >= 10_000 {
            "large"
        } else {
            "small"
        };
        sqlx::query("INSERT INTO orders_v2 (id, customer, cents, size) VALUES (?1, ?2, ?3, ?4)")
            .bind(event.aggregate_id().to_string())
            .bind(&event.customer)
            .bind(event.cents)
            .bind(size)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO order_sizes_v2 (size, orders) VALUES (?1, 1)
             ON CONFLICT (size) DO UPDATE SET orders = orders + 1",
        )
        .bind(size)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

// ---- The deployment -----------------------------------------------------------------------

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::temp_dir().join("projections-bluegreen-example.db");
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    let pool = sqlite::open(&path).await?;
    let store = Arc::new(SqliteEventStore::new(pool.clone()));
    append_orders(&store, 0, 1_000).await?;
    let orders = Arc::new(BlueGreen::new(
        SqliteReadModelVersions::new(pool.clone()),
        "orders",
    ));

    println!("== Release 1: version 1 is built and serves ==");
    let mut registry = ProjectionRegistry::new();
    registry.register(orders.runner(OrdersV1, ORDERS_V1).await?)?;
    let release_1 = coordinator(registry, &store)?;
    orders.promote(&release_1, 1).await?;
    print_readers_view(&pool).await?;

    println!("\n== Release 2: version 2 is built beside version 1 ==");
    let mut registry = ProjectionRegistry::new();
    registry.register(orders.runner(OrdersV2, ORDERS_V2).await?)?;
    let release_2 = coordinator(registry, &store)?;
    // Orders keep coming in; version 1 applies them and readers see them meanwhile.
    append_orders(&store, 1_000, 200).await?;
    print_status(&release_1, &release_2);
    print_readers_view(&pool).await?;

    let replaced = orders.promote(&release_2, 2).await?;
    // Both versions go on applying new orders; wait for them, for a tidy printout.
    let head = store.head_position().await?;
    release_1.wait_for_checkpoint("orders@v1", head).await?;
    release_2.wait_for_checkpoint("orders@v2", head).await?;
    println!("\n== Readers switched to version 2 (replaced: {replaced:?}) ==");
    print_readers_view(&pool).await?;
    let sizes: Vec<(String, i64)> =
        sqlx::query_as("SELECT size, orders FROM order_sizes ORDER BY size")
            .fetch_all(&pool)
            .await?;
    println!("  order_sizes: {sizes:?}");

    println!("\n== Version 1 retired (on command; `retire_after` waits a grace period) ==");
    orders.retire(Some(&release_1), 1).await?;
    print_status(&release_1, &release_2);
    println!("  versions: {:?}", orders.versions().await?);

    release_1.shutdown(Duration::from_secs(5)).await;
    release_2.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

fn coordinator(
    registry: ProjectionRegistry,
    store: &Arc<SqliteEventStore>,
) -> anyhow::Result<CoordinatorHandle> {
    Ok(ProjectionCoordinator::new(registry, store.clone())
        .batch_size(100)
        .poll_interval(Duration::from_millis(100))
        .start()?)
}

async fn append_orders(store: &SqliteEventStore, from: usize, count: usize) -> anyhow::Result<()> {
    for n in from..from + count {
        let id = Uuid::new_v4();
        let event: AnyEvent = Envelope::new(
            id,
            OrderPlaced {
                customer: format!("customer {}", n % 37),
                cents: (n as i64 * 7_919) % 20_000,
            },
        )
        .into();
        store
            .append(id, ExpectedVersion::NoStream, vec![event])
            .await?;
    }
    Ok(())
}

async fn print_readers_view(pool: &SqlitePool) -> anyhow::Result<()> {
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(pool)
        .await?;
    // Readers name the columns they read: the shape behind the view changes at the switch.
    let columns: i64 = sqlx::query_scalar("SELECT count(*) FROM pragma_table_info('orders')")
        .fetch_one(pool)
        .await?;
    println!("  readers see {rows} orders of {columns} columns in `orders`");
    Ok(())
}

fn print_status(release_1: &CoordinatorHandle, release_2: &CoordinatorHandle) {
    for snapshot in release_1.status().into_iter().chain(release_2.status()) {
        let version = snapshot.version.as_ref();
        println!(
            "  {:<10} {:<12} checkpoint {:>5}  role {:<9} progress {}",
            snapshot.name,
            snapshot.state.to_string(),
            snapshot.checkpoint.map_or("-".into(), |c| c.to_string()),
            version.map_or("-".into(), |v| v.role.to_string()),
            version
                .and_then(|v| v.progress)
                .map_or("-".into(), |p| format!("{:.0} %", p * 100.0)),
        );
    }
}
