//! PostgreSQL: the event store, checkpoint and dead-letter repositories, and transactional
//! database projections (cargo feature `postgres`).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use projections::postgres::{
//!     PostgreSQLCheckpointRepository, PostgreSQLDLQRepository, PostgreSQLEventStore,
//! };
//!
//! // Connects and applies the crate's migrations.
//! let store = PostgreSQLEventStore::connect("postgres://postgres@127.0.0.1/app").await?;
//! let checkpoints = PostgreSQLCheckpointRepository::new(store.pool().clone());
//! let dead_letters = PostgreSQLDLQRepository::new(store.pool().clone());
//! # Ok(()) }
//! ```
//!
//! # Tables and migrations
//!
//! [`migrate`] (or [`migrate_schema`]) creates `projection_events`, `projection_checkpoints`
//! and `projection_dead_letters`, recording what it applied in its own ledger,
//! [`MIGRATIONS_TABLE`]; a user's own `sqlx::migrate!` is not disturbed. The SQL ships in the
//! crate's `migrations/` folder. Every type here works on the connection's `search_path` unless
//! given a [`Schema`].
//!
//! # Positions and the read horizon
//!
//! Positions come from a sequence, so appends overlap and commit together; they are unique and
//! increase in the order readers see them, and a failed append leaves a gap (lag counts events,
//! not position differences). Before it takes a position, each appending transaction registers
//! itself with a shared advisory lock that carries a lower bound of its positions. Readers
//! ([`PostgreSQLEventStore`]'s `read_all`, `read_filtered`, `head_position`, `backlog`) read the sequence, then the
//! registrations, and never pass the lowest bound: an append still in flight holds them back,
//! and nothing else does. A long transaction that writes no events, in this database or
//! another, delays no reader. `backlog` counts every committed event, and names the backend,
//! start time and statement of an append that keeps some of them from readers
//! ([`ReadHold`](crate::store::ReadHold)). Rows inserted by hand without a position are
//! registered the same way (the column's default, `projection_next_position()`). See
//! `docs/adr/0011-appends-that-overlap.md`.
//!
//! # Inside the caller's transaction
//!
//! [`get_checkpoint_for_update`], [`update_checkpoint_in`], [`set_halt_in`],
//! [`reset_checkpoint_in`], [`add_failed_event_in`], [`mark_resolved_in`] and
//! [`mark_retrying_in`] take a `&mut PgConnection` and commit nothing, so that a transactional
//! runner writes the checkpoint (and its halt) and dead letters in the same transaction as the
//! read model. They work in the connection's `search_path`; the repositories have methods of
//! the same names that work in their [`Schema`].

mod announce;
mod checkpoint;
mod dlq;
mod filtered;
mod inline;
mod listen;
mod migrate;
mod schema;
mod store;
mod timestamp;

pub use checkpoint::{
    PostgreSQLCheckpointRepository, get_checkpoint_for_update, reset_checkpoint_in, set_halt_in,
    update_checkpoint_in,
};
pub use dlq::{PostgreSQLDLQRepository, add_failed_event_in, mark_resolved_in, mark_retrying_in};
pub use migrate::{MIGRATIONS_TABLE, migrate, migrate_schema};
pub use schema::Schema;
pub use sqlx::{PgConnection, PgPool};
pub use store::{ACQUIRE_TIMEOUT, PostgreSQLEventStore, READ_WINDOW_PAGES};
/// The former name of [`PostgreSQLEventStore`].
#[deprecated(note = "renamed `PostgreSQLEventStore`, like the other PostgreSQL types")]
pub type PostgresEventStore = PostgreSQLEventStore;

/// The `LISTEN`/`NOTIFY` channel on which appends are announced, once committed, by the
/// process that made them (appends in quick succession share one notification).
///
/// The payload is the append's last position, as decimal text, prefixed with `schema:` when
/// the store works in a named [`Schema`] (for example `"42"` or `"read_side:42"`). A
/// notification is a wake-up: the announced position may still be behind the read horizon, so
/// readers also poll.
pub const APPEND_CHANNEL: &str = "projection_events_appended";

use crate::storage::StorageError;

/// Wraps a database error.
fn backend(error: sqlx::Error) -> StorageError {
    StorageError::backend(error)
}

/// A position or count from Rust, as PostgreSQL's `bigint`.
fn to_i64(value: u64, what: &'static str) -> Result<i64, StorageError> {
    i64::try_from(value).map_err(|_| StorageError::Invalid {
        what,
        reason: format!("{value} does not fit in a PostgreSQL bigint"),
    })
}

/// A stored `bigint` that must not be negative.
fn to_u64(value: i64, what: &'static str) -> Result<u64, StorageError> {
    u64::try_from(value)
        .map_err(|_| StorageError::Unreadable(format!("stored {what} is negative: {value}")))
}

/// Every public future can be spawned on a multi-threaded runtime.
#[cfg(test)]
mod send_checks {
    use super::*;
    use crate::checkpoint::{CheckpointUpdate, Halt};
    use crate::dlq::FailedEvent;

    fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}

    #[allow(dead_code)]
    fn futures_are_spawnable(pool: PgPool, failure: FailedEvent) {
        let p = pool.clone();
        spawnable(async move { migrate(&p).await });
        let p = pool.clone();
        spawnable(async move { migrate_schema(&p, &Schema::default()).await });
        spawnable(async move { PostgreSQLEventStore::connect("").await });
        let store = PostgreSQLEventStore::new(pool.clone());
        spawnable(async move { store.stream_version(uuid::Uuid::nil()).await });
        let checkpoints = PostgreSQLCheckpointRepository::new(pool.clone());
        let dead_letters = PostgreSQLDLQRepository::new(pool.clone());
        spawnable(async move {
            let mut conn = pool.acquire().await.map_err(backend)?;
            let update = CheckpointUpdate::new(1);
            let halt = Halt::paused("maintenance");
            get_checkpoint_for_update(&mut conn, "p").await?;
            update_checkpoint_in(&mut conn, "p", &update).await?;
            set_halt_in(&mut conn, "p", Some(&halt)).await?;
            reset_checkpoint_in(&mut conn, "p").await?;
            checkpoints
                .get_checkpoint_for_update(&mut conn, "p")
                .await?;
            checkpoints
                .update_checkpoint_in(&mut conn, "p", &update)
                .await?;
            checkpoints.set_halt_in(&mut conn, "p", None).await?;
            checkpoints.reset_checkpoint_in(&mut conn, "p").await?;
            add_failed_event_in(&mut conn, &failure).await?;
            mark_retrying_in(&mut conn, 1).await?;
            mark_resolved_in(&mut conn, 1, "me").await?;
            dead_letters
                .add_failed_event_in(&mut conn, &failure)
                .await?;
            dead_letters.mark_retrying_in(&mut conn, 1).await?;
            dead_letters.mark_resolved_in(&mut conn, 1, "me").await?;
            Ok::<_, StorageError>(())
        });
    }
}
