//! The events, read model and projections of the fault tests, shared by the tests
//! (`pg_faults`, `pg_process_kills`) and the `fault-node` binary they start and kill
//! (`#[path]`-included there), so that both sides agree on wire names and tables.
//!
//! The read model is one table, [`APPLIED_TABLE`], with one row per (projection, event) under
//! a primary key and written with a plain `INSERT`: an event applied twice fails loudly (a
//! unique violation), so "every event applied exactly once" is "one row per event, and no
//! dead letter".

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use projections::postgres::{PostgreSQLEventStore, migrate};
use projections::store::AppendError;
use projections::{
    AnyEvent, Envelope, Event, EventStore, ExpectedVersion, PgConnection, StorageError, projection,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// The read model: `(projection, event_id)` is the primary key.
pub const APPLIED_TABLE: &str = "faults_applied";

/// A table nobody creates: a handler writing to it has a wrong setup.
pub const MISSING_TABLE: &str = "faults_missing_audit";

/// A tick whose `n` is [`POISON`] is the poison event of [`Ledger`].
pub const POISON: i64 = 13;

/// The events: one per append in most tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "faults.ticked", aggregate = "Clock")]
pub struct Ticked {
    pub n: i64,
}

/// An event only [`MissingTableAudit`] handles, by writing to [`MISSING_TABLE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "faults.audited", aggregate = "Clock")]
pub struct Audited {
    pub n: i64,
}

pub fn tick(n: i64) -> AnyEvent {
    Envelope::new(Uuid::new_v4(), Ticked { n }).into()
}

/// `ns` as ticks of one new aggregate, for one append.
pub fn ticks_of(aggregate: Uuid, ns: impl IntoIterator<Item = i64>) -> Vec<AnyEvent> {
    ns.into_iter()
        .map(|n| Envelope::new(aggregate, Ticked { n }).into())
        .collect()
}

pub fn audited(n: i64) -> AnyEvent {
    Envelope::new(Uuid::new_v4(), Audited { n }).into()
}

/// Appends ticks `ns`, `per_append` to an append (each append a new aggregate); returns the
/// last position.
pub async fn append_ticks(
    store: &PostgreSQLEventStore,
    ns: impl IntoIterator<Item = i64>,
    per_append: usize,
) -> Result<u64, AppendError> {
    let ns: Vec<i64> = ns.into_iter().collect();
    let mut last = 0;
    for chunk in ns.chunks(per_append.max(1)) {
        let aggregate = Uuid::new_v4();
        let appended = store
            .append(
                aggregate,
                ExpectedVersion::NoStream,
                ticks_of(aggregate, chunk.iter().copied()),
            )
            .await?;
        last = appended.last_position;
    }
    Ok(last)
}

/// The crate's tables (in the `search_path`) and the read model.
pub async fn prepare(pool: &PgPool) -> Result<(), StorageError> {
    migrate(pool).await?;
    sqlx::raw_sql(&format!(
        "CREATE TABLE IF NOT EXISTS {APPLIED_TABLE} (
             projection text   NOT NULL,
             event_id   uuid   NOT NULL,
             position   bigint NOT NULL,
             n          bigint NOT NULL,
             PRIMARY KEY (projection, event_id)
         )"
    ))
    .execute(pool)
    .await
    .map_err(StorageError::backend)?;
    Ok(())
}

/// One row of the read model, for `projection`.
pub async fn insert(
    conn: &mut PgConnection,
    projection: &str,
    event: &Envelope<Ticked>,
) -> Result<(), sqlx::Error> {
    let position = event
        .position()
        .and_then(|p| i64::try_from(p).ok())
        .unwrap_or(-1);
    sqlx::query(&format!(
        "INSERT INTO {APPLIED_TABLE} (projection, event_id, position, n) VALUES ($1, $2, $3, $4)"
    ))
    .bind(projection)
    .bind(event.event_id())
    .bind(position)
    .bind(event.n)
    .execute(conn)
    .await?;
    Ok(())
}

/// What [`Ledger`] does with the poison tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPoison {
    /// Nothing special: a row like any other.
    Apply,
    /// The handler returns an error (an event failure).
    Fail,
    /// The handler panics.
    Panic,
}

/// The poison tick was rejected, or the database failed. The database error is this error's
/// source (not `transparent`), so the runtime finds it in the source chain and classifies it by
/// its SQLSTATE (see `pg_faults::a_transparent_database_error_is_still_infrastructure` for a
/// transparent wrapper).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("tick {0} is poison")]
    Poison(i64),
    #[error("writing the ledger: {0}")]
    Sql(#[from] sqlx::Error),
}

/// A transactional projection: one row per tick, through the batch's transaction.
#[derive(Debug)]
pub struct Ledger {
    /// How long a handler call sleeps before writing (so that batches are in flight)...
    pub pace: Duration,
    /// ... at every event whose position is a multiple of this.
    pub pace_every: u64,
    /// Whether each call prints `handled ledger <position>` (and `panicking ledger
    /// <position>`) on stdout, for a test reading a node's output.
    pub announce: bool,
    pub on_poison: OnPoison,
    /// Handler calls.
    pub calls: Arc<AtomicU32>,
}

impl Ledger {
    pub fn new(on_poison: OnPoison) -> Self {
        Self {
            pace: Duration::ZERO,
            pace_every: 1,
            announce: false,
            on_poison,
            calls: Arc::default(),
        }
    }

    /// Sleeps `pace` at each event.
    #[must_use]
    pub fn pace(self, pace: Duration) -> Self {
        self.pace_every(pace, 1)
    }

    /// Sleeps `pace` at each event whose position is a multiple of `every`.
    #[must_use]
    pub fn pace_every(mut self, pace: Duration, every: u64) -> Self {
        self.pace = pace;
        self.pace_every = every.max(1);
        self
    }

    #[must_use]
    pub fn announce(mut self) -> Self {
        self.announce = true;
        self
    }
}

#[projection(name = "ledger")]
impl Ledger {
    #[handles(Ticked)]
    async fn ticked(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<Ticked>,
    ) -> Result<(), LedgerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let position = event.position().unwrap_or(0);
        if self.announce {
            println!("handled ledger {position}");
        }
        if !self.pace.is_zero() && position.is_multiple_of(self.pace_every) {
            tokio::time::sleep(self.pace).await;
        }
        if event.n == POISON {
            match self.on_poison {
                OnPoison::Apply => {}
                OnPoison::Fail => return Err(LedgerError::Poison(event.n)),
                OnPoison::Panic => {
                    if self.announce {
                        println!("panicking ledger {position}");
                    }
                    #[allow(clippy::panic)] // the fault under test
                    {
                        panic!("tick {} is poison", event.n);
                    }
                }
            }
        }
        insert(conn, "ledger", event).await?;
        Ok(())
    }

    #[reset]
    async fn clear(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "DELETE FROM {APPLIED_TABLE} WHERE projection = 'ledger'"
        ))
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// A second transactional projection with nothing wrong with it.
#[derive(Debug, Default)]
pub struct Steady {
    pub announce: bool,
}

#[projection(name = "steady")]
impl Steady {
    #[handles(Ticked)]
    async fn ticked(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<Ticked>,
    ) -> Result<(), sqlx::Error> {
        if self.announce {
            println!("handled steady {}", event.position().unwrap_or(0));
        }
        insert(conn, "steady", event).await
    }
}

/// Writes ticks to the read model, and audits to [`MISSING_TABLE`], which does not exist.
#[derive(Debug, Default)]
pub struct MissingTableAudit {
    /// Calls of the audit handler.
    pub audit_calls: Arc<AtomicU32>,
}

#[projection(name = "missing_table_audit")]
impl MissingTableAudit {
    #[handles(Ticked)]
    async fn ticked(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<Ticked>,
    ) -> Result<(), sqlx::Error> {
        insert(conn, "missing_table_audit", event).await
    }

    #[handles(Audited)]
    async fn audited(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope<Audited>,
    ) -> Result<(), sqlx::Error> {
        self.audit_calls.fetch_add(1, Ordering::SeqCst);
        sqlx::query(&format!("INSERT INTO {MISSING_TABLE} (n) VALUES ($1)"))
            .bind(event.n)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// What the read model and the crate's tables hold, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Rows of the read model for the projection.
    pub rows: i64,
    /// Events in the store.
    pub events: i64,
    /// The store's highest position.
    pub head: i64,
    /// Events of the store with no row for the projection (up to `head`).
    pub missing: i64,
    /// Dead letters of any projection.
    pub dead_letters: i64,
    /// The projection's stored checkpoint.
    pub checkpoint: Option<i64>,
    /// Events applied, as the checkpoint counts them.
    pub events_processed: Option<i64>,
}

pub async fn tally(pool: &PgPool, projection: &str) -> Result<Tally, sqlx::Error> {
    let (rows, events, head, missing, dead_letters): (i64, i64, i64, i64, i64) =
        sqlx::query_as(&format!(
            "SELECT
                 (SELECT count(*) FROM {APPLIED_TABLE} WHERE projection = $1),
                 (SELECT count(*) FROM projection_events),
                 (SELECT coalesce(max(position), 0) FROM projection_events),
                 (SELECT count(*) FROM projection_events e WHERE NOT EXISTS (
                      SELECT 1 FROM {APPLIED_TABLE} a
                      WHERE a.projection = $1 AND a.event_id = e.event_id)),
                 (SELECT count(*) FROM projection_dead_letters)"
        ))
        .bind(projection)
        .fetch_one(pool)
        .await?;
    let checkpoint: Option<(i64, i64)> = sqlx::query_as(
        "SELECT position, events_processed FROM projection_checkpoints WHERE projection_name = $1",
    )
    .bind(projection)
    .fetch_optional(pool)
    .await?;
    Ok(Tally {
        rows,
        events,
        head,
        missing,
        dead_letters,
        checkpoint: checkpoint.map(|c| c.0),
        events_processed: checkpoint.map(|c| c.1),
    })
}

/// The positions with a row for `projection`, in order.
pub async fn applied_positions(pool: &PgPool, projection: &str) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT position FROM {APPLIED_TABLE} WHERE projection = $1 ORDER BY position"
    ))
    .bind(projection)
    .fetch_all(pool)
    .await
}

/// Every dead letter: projection, position, attempts and error, oldest first.
pub async fn dead_letter_summary(
    pool: &PgPool,
) -> Result<Vec<(String, Option<i64>, i32, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT projection_name, position, attempts, error_message \
         FROM projection_dead_letters ORDER BY id",
    )
    .fetch_all(pool)
    .await
}
