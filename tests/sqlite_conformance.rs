//! The storage conformance suite against the SQLite backends (feature `sqlite`), on temporary
//! database files, plus what only SQLite has: opening a file that is not a database or that a
//! newer build migrated, events that survive reopening the file, rows that do not decode.
//!
//! As for the in-memory backends, each check runs twice: against a fresh file of its own, and
//! against one file that every check running at the same time shares and that already holds
//! unrelated data (several connections writing at once, through SQLite's busy timeout). Every
//! file is removed when the last store or repository on it is dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod conformance;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use chrono::{TimeDelta, Utc};
use projections::checkpoint::{CheckpointData, CheckpointUpdate, Halt};
use projections::dlq::{DLQEntry, DLQFilter, DLQStats, FailedEvent};
use projections::sqlite::{
    self, OpenError, SqliteCheckpointRepository, SqliteDLQRepository, SqliteEventStore, SqlitePool,
};
use projections::storage::BoxFuture;
use projections::store::{AppendError, AppendResult, Backlog, ReadFilter, ReadPage};
use projections::{
    AnyEvent, CheckpointRepository, DLQRepository, Envelope, EventStore, ExpectedVersion,
    StorageError, StoredEvent,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

conformance::checkpoint_tests!(checkpoint, async {
    let db = TempDb::open().await;
    Arc::new(Temp::checkpoints(db))
});
conformance::dlq_tests!(dlq, async {
    let db = TempDb::open().await;
    Arc::new(Temp::dead_letters(db))
});
conformance::store_tests!(store, async {
    let db = TempDb::open().await;
    Arc::new(Temp::store(db))
});

conformance::checkpoint_tests!(shared_checkpoint, async {
    Arc::new(Temp::checkpoints(shared_db().await))
});
conformance::dlq_tests!(shared_dlq, async {
    Arc::new(Temp::dead_letters(shared_db().await))
});
conformance::store_tests!(shared_store, async {
    Arc::new(Temp::store(shared_db().await))
});

/// A migrated database file under the temporary directory, removed (with its `-wal` and
/// `-shm` files) when dropped.
#[derive(Debug)]
struct TempDb {
    path: PathBuf,
    pool: SqlitePool,
}

impl TempDb {
    fn unique_path() -> PathBuf {
        std::env::temp_dir().join(format!(
            "projections-sqlite-conformance-{}-{}.db",
            std::process::id(),
            Uuid::new_v4().simple()
        ))
    }

    async fn open() -> Arc<Self> {
        let path = Self::unique_path();
        let pool = sqlite::open(&path).await.unwrap();
        Arc::new(Self { path, pool })
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        remove_database(&self.path);
    }
}

fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

/// A store or repository on a [`TempDb`], which it keeps alive.
struct Temp<T> {
    inner: T,
    _db: Arc<TempDb>,
}

impl Temp<SqliteEventStore> {
    fn store(db: Arc<TempDb>) -> Self {
        Self {
            inner: SqliteEventStore::new(db.pool.clone()),
            _db: db,
        }
    }
}

impl Temp<SqliteCheckpointRepository> {
    fn checkpoints(db: Arc<TempDb>) -> Self {
        Self {
            inner: SqliteCheckpointRepository::new(db.pool.clone()),
            _db: db,
        }
    }
}

impl Temp<SqliteDLQRepository> {
    fn dead_letters(db: Arc<TempDb>) -> Self {
        Self {
            inner: SqliteDLQRepository::new(db.pool.clone()),
            _db: db,
        }
    }
}

impl<T: EventStore> EventStore for Temp<T> {
    fn append(
        &self,
        aggregate_id: Uuid,
        expected: ExpectedVersion,
        events: Vec<AnyEvent>,
    ) -> BoxFuture<'_, Result<AppendResult, AppendError>> {
        self.inner.append(aggregate_id, expected, events)
    }
    fn read_stream(
        &self,
        aggregate_id: Uuid,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>> {
        self.inner.read_stream(aggregate_id)
    }
    fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StorageError>> {
        self.inner.read_all(after, limit)
    }
    fn head_position(&self) -> BoxFuture<'_, Result<u64, StorageError>> {
        self.inner.head_position()
    }
    fn backlog<'a>(
        &'a self,
        after: u64,
        event_types: &'a [&'static str],
    ) -> BoxFuture<'a, Result<Backlog, StorageError>> {
        self.inner.backlog(after, event_types)
    }
    fn read_filtered<'a>(
        &'a self,
        after: u64,
        limit: usize,
        filter: &'a ReadFilter,
    ) -> BoxFuture<'a, Result<ReadPage, StorageError>> {
        self.inner.read_filtered(after, limit, filter)
    }
    fn backlog_filtered<'a>(
        &'a self,
        after: u64,
        filter: &'a ReadFilter,
    ) -> BoxFuture<'a, Result<Backlog, StorageError>> {
        self.inner.backlog_filtered(after, filter)
    }
    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.subscribe()
    }
}

impl<T: CheckpointRepository> CheckpointRepository for Temp<T> {
    fn get_checkpoint<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        self.inner.get_checkpoint(projection)
    }
    fn get_checkpoint_data<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<CheckpointData>, StorageError>> {
        self.inner.get_checkpoint_data(projection)
    }
    fn update_checkpoint<'a>(
        &'a self,
        projection: &'a str,
        update: CheckpointUpdate,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.update_checkpoint(projection, update)
    }
    fn set_halt<'a>(
        &'a self,
        projection: &'a str,
        halt: Option<&'a Halt>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.set_halt(projection, halt)
    }
    fn reset_checkpoint<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.reset_checkpoint(projection)
    }
    fn get_all_checkpoints(&self) -> BoxFuture<'_, Result<Vec<CheckpointData>, StorageError>> {
        self.inner.get_all_checkpoints()
    }
}

impl<T: DLQRepository> DLQRepository for Temp<T> {
    fn add_failed_event(&self, failure: FailedEvent) -> BoxFuture<'_, Result<i64, StorageError>> {
        self.inner.add_failed_event(failure)
    }
    fn get_failed_events(
        &self,
        filter: DLQFilter,
    ) -> BoxFuture<'_, Result<Vec<DLQEntry>, StorageError>> {
        self.inner.get_failed_events(filter)
    }
    fn get_by_id(&self, id: i64) -> BoxFuture<'_, Result<Option<DLQEntry>, StorageError>> {
        self.inner.get_by_id(id)
    }
    fn mark_retrying(&self, id: i64) -> BoxFuture<'_, Result<(), StorageError>> {
        self.inner.mark_retrying(id)
    }
    fn mark_resolved<'a>(
        &'a self,
        id: i64,
        resolved_by: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.mark_resolved(id, resolved_by)
    }
    fn get_stats(&self) -> BoxFuture<'_, Result<DLQStats, StorageError>> {
        self.inner.get_stats()
    }
    fn get_projection_counts(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StorageError>> {
        self.inner.get_projection_counts()
    }
    fn delete_resolved(&self, older_than_days: u32) -> BoxFuture<'_, Result<u64, StorageError>> {
        self.inner.delete_resolved(older_than_days)
    }
}

/// Data that belongs to no check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, projections::Event)]
#[event(name = "sqlite_conformance.unrelated")]
struct Unrelated {
    n: u32,
}

#[derive(Debug)]
struct UnrelatedError;

impl std::fmt::Display for UnrelatedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unrelated failure")
    }
}

impl std::error::Error for UnrelatedError {}

/// The file that the checks running at the same time share, seeded with unrelated data;
/// created by the first of them, removed when the last one ends.
async fn shared_db() -> Arc<TempDb> {
    static SHARED: tokio::sync::Mutex<Weak<TempDb>> = tokio::sync::Mutex::const_new(Weak::new());
    let mut shared = SHARED.lock().await;
    if let Some(db) = shared.upgrade() {
        return db;
    }
    let db = TempDb::open().await;
    seed(&db.pool).await;
    *shared = Arc::downgrade(&db);
    db
}

async fn seed(pool: &SqlitePool) {
    let checkpoints = SqliteCheckpointRepository::new(pool.clone());
    for (position, name) in (1..).zip(["Zeta", "alpha", "_unrelated", "conformance"]) {
        checkpoints
            .update_checkpoint(name, CheckpointUpdate::new(position))
            .await
            .unwrap();
    }
    let dead_letters = SqliteDLQRepository::new(pool.clone());
    for (n, projection) in ["Unrelated", "unrelated", "Unrelated"].iter().enumerate() {
        let mut failure = FailedEvent::new(
            Uuid::new_v4(),
            *projection,
            "sqlite_conformance.unrelated",
            serde_json::json!({}),
            &UnrelatedError,
            1,
        );
        failure.failed_at = Utc::now() - TimeDelta::days(2);
        let id = dead_letters.add_failed_event(failure).await.unwrap();
        if n == 2 {
            dead_letters.mark_resolved(id, "someone").await.unwrap();
        }
    }
    let store = SqliteEventStore::new(pool.clone());
    let aggregate = Uuid::new_v4();
    let events = (0..3)
        .map(|n| AnyEvent::new(Envelope::new(aggregate, Unrelated { n })))
        .collect();
    store
        .append(aggregate, ExpectedVersion::NoStream, events)
        .await
        .unwrap();
}

/// What only SQLite has.
mod sqlite_only {
    use super::*;

    /// A path that is removed (with its companions) when dropped, whatever was made of it.
    struct TempPath(PathBuf);

    impl Drop for TempPath {
        fn drop(&mut self) {
            remove_database(&self.0);
        }
    }

    #[tokio::test]
    async fn events_survive_reopening_the_file() {
        let path = TempPath(TempDb::unique_path());
        let aggregate = Uuid::new_v4();
        {
            let store = SqliteEventStore::open(&path.0).await.unwrap();
            let events = (0..2)
                .map(|n| AnyEvent::new(Envelope::new(aggregate, Unrelated { n })))
                .collect();
            let result = store
                .append(aggregate, ExpectedVersion::NoStream, events)
                .await
                .unwrap();
            assert_eq!((result.first_position, result.last_position), (1, 2));
            store.pool().close().await;
        }
        let store = SqliteEventStore::open(&path.0).await.unwrap();
        let events = store.read_all(0, 10).await.unwrap();
        let read: Vec<u32> = events
            .iter()
            .map(|e| {
                e.event()
                    .unwrap()
                    .downcast::<Unrelated>()
                    .unwrap()
                    .payload
                    .n
            })
            .collect();
        assert_eq!(read, [0, 1]);
        assert_eq!(store.head_position().await.unwrap(), 2);
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        store.pool().close().await;
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_a_clear_error() {
        let path = TempPath(TempDb::unique_path());
        std::fs::write(&path.0, vec![b'x'; 4096]).unwrap();
        match sqlite::open(&path.0).await {
            Err(error @ OpenError::NotADatabase { .. }) => {
                let message = error.to_string();
                assert!(message.contains("is not a SQLite database"), "{message}");
                assert!(message.contains(&*path.0.to_string_lossy()), "{message}");
            }
            other => panic!("expected NotADatabase, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_written_is_a_clear_error() {
        let missing_dir = std::env::temp_dir()
            .join(format!(
                "projections-no-such-dir-{}",
                Uuid::new_v4().simple()
            ))
            .join("app.db");
        // A directory where the file should be.
        let a_dir = std::env::temp_dir();
        for path in [missing_dir, a_dir] {
            match sqlite::open(&path).await {
                Err(error @ OpenError::NotWritable { .. }) => {
                    let message = error.to_string();
                    assert!(message.contains("cannot open"), "{message}");
                    assert!(message.contains(&*path.to_string_lossy()), "{message}");
                }
                other => panic!("expected NotWritable for {path:?}, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_database_of_a_newer_build_is_a_clear_error() {
        let db = TempDb::open().await;
        sqlx::query(&format!(
            "INSERT INTO {} (version, description, checksum, applied_at)
             VALUES (999, 'from the future', '0', 0)",
            sqlite::MIGRATIONS_TABLE
        ))
        .execute(&db.pool)
        .await
        .unwrap();
        match sqlite::migrate(&db.pool).await {
            Err(OpenError::NewerSchema { found: 999, known }) => assert!(known < 999),
            other => panic!("expected NewerSchema, got {other:?}"),
        }
        // Migrating twice is harmless otherwise.
        let again = TempDb::open().await;
        sqlite::migrate(&again.pool).await.unwrap();
    }

    #[tokio::test]
    async fn rows_that_do_not_decode_are_undecodable_events() {
        let db = TempDb::open().await;
        let store = SqliteEventStore::new(db.pool.clone());
        let insert = "INSERT INTO projection_events (
                position, event_id, aggregate_id, aggregate_type, aggregate_version, event_type,
                event_version, payload, metadata, correlation_id, occurred_at, stored_at
            ) VALUES (?1, ?2, ?3, 'Cart', ?4, ?5, 1, ?6, ?7, ?8, ?9, 0)";
        let aggregate = Uuid::new_v4().to_string();
        let id = || Uuid::new_v4().to_string();
        let rows: [(&str, &str, &str, String, i64); 5] = [
            ("sqlite_conformance.nobody_knows", "{}", "{}", id(), 0),
            (
                "sqlite_conformance.unrelated",
                "{\"n\": \"x\"}",
                "{}",
                id(),
                0,
            ),
            ("sqlite_conformance.unrelated", "{\"n\": 1}", "[]", id(), 0),
            (
                "sqlite_conformance.unrelated",
                "{\"n\": 1}",
                "{}",
                "not-a-uuid".into(),
                0,
            ),
            (
                "sqlite_conformance.unrelated",
                "{\"n\": 1}",
                "{}",
                id(),
                i64::MAX,
            ),
        ];
        for (n, (event_type, payload, metadata, correlation, occurred_at)) in (1..).zip(rows.iter())
        {
            sqlx::query(insert)
                .bind(n)
                .bind(id())
                .bind(&aggregate)
                .bind(n)
                .bind(event_type)
                .bind(payload)
                .bind(metadata)
                .bind(correlation)
                .bind(occurred_at)
                .execute(&db.pool)
                .await
                .unwrap();
        }
        let read = store.read_all(0, 10).await.unwrap();
        assert_eq!(read.len(), rows.len());
        for (event, (event_type, ..)) in read.iter().zip(rows.iter()) {
            let StoredEvent::Undecodable(undecodable) = event else {
                panic!("decoded a row that should not decode: {event:?}");
            };
            assert_eq!(undecodable.event_type, *event_type);
            assert_eq!(undecodable.raw["aggregate_id"], aggregate.as_str());
        }
    }
}
