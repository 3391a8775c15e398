//! One storage value from a URL: each backend opens, migrates and keeps events, checkpoints
//! and dead letters together; bad URLs are refused with errors that name the fix and never
//! repeat a password. PostgreSQL: the server at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), in a schema of this test's own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::deposit;
use projections::backend::{Backend, ConnectError};
use projections::checkpoint::CheckpointUpdate;
use projections::{ExpectedVersion, Storage};
use uuid::Uuid;

/// Appends one event, reads it back, moves a checkpoint and reads it back.
async fn round_trip(storage: &Storage) {
    let store = storage.event_store();
    let account = Uuid::new_v4();
    let result = store
        .append(
            account,
            ExpectedVersion::NoStream,
            vec![deposit(account, 5)],
        )
        .await
        .unwrap();
    // PostgreSQL's reads are gap-safe: a transaction elsewhere on the server may hold them
    // back a while.
    let mut events = Vec::new();
    for _ in 0..600 {
        events = store.read_all(result.first_position - 1, 10).await.unwrap();
        // Other tests may append to the same store meanwhile.
        events.retain(|e| {
            e.event()
                .is_some_and(|e| e.metadata().aggregate_id == account)
        });
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(events.len(), 1, "{storage}");
    let checkpoints = storage.repositories().checkpoint_repository().clone();
    let name = format!("p-{}", Uuid::new_v4().simple());
    checkpoints
        .update_checkpoint(&name, CheckpointUpdate::new(result.last_position))
        .await
        .unwrap();
    assert_eq!(
        checkpoints.get_checkpoint(&name).await.unwrap(),
        Some(result.last_position)
    );
}

#[tokio::test]
async fn memory_keeps_everything_in_the_process() {
    let storage = Storage::connect("memory:").await.unwrap();
    assert!(matches!(storage.backend(), Backend::Memory));
    assert_eq!(storage.to_string(), "memory");
    round_trip(&storage).await;
}

#[tokio::test]
async fn a_sqlite_url_opens_the_file_and_a_second_open_sees_what_the_first_wrote() {
    let path = std::env::temp_dir().join(format!(
        "projections-storage-url-{}.db",
        Uuid::new_v4().simple()
    ));
    let url = format!("sqlite://{}", path.display());
    let storage = Storage::connect(&url).await.unwrap();
    assert_eq!(
        storage.to_string(),
        format!("SQLite file {}", path.display())
    );
    round_trip(&storage).await;

    let again = Storage::connect(&url).await.unwrap();
    assert_eq!(again.event_store().head_position().await.unwrap(), 1);
    drop((storage, again));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn sqlite_in_memory_runs_the_sqlite_code_with_nothing_on_disk() {
    let storage = Storage::connect("sqlite::memory:").await.unwrap();
    assert_eq!(storage.to_string(), "SQLite in memory");
    round_trip(&storage).await;
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_error() {
    let path = std::env::temp_dir().join(format!(
        "projections-storage-url-{}.txt",
        Uuid::new_v4().simple()
    ));
    std::fs::write(&path, "not a database, just some text that is long enough").unwrap();
    let error = Storage::connect(&format!("sqlite://{}", path.display()))
        .await
        .err()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(matches!(error, ConnectError::Sqlite(_)), "{error:?}");
    assert!(
        error.to_string().contains("is not a SQLite database"),
        "{error}"
    );
}

#[tokio::test]
async fn unknown_schemes_are_refused_without_the_rest_of_the_url() {
    let error = Storage::connect("mysql://root:hunter2@db/app")
        .await
        .err()
        .unwrap();
    assert!(matches!(error, ConnectError::UnknownScheme { .. }));
    let text = error.to_string();
    assert!(
        text.contains("`mysql`") && text.contains("sqlite://"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn a_postgres_url_migrates_and_works_in_the_schema_it_names() {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("storage_url_{}", Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&base)
        .await
        .expect("PostgreSQL must be running for this test (set DATABASE_URL)");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();

    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-csearch_path%3D{schema}");
    let storage = Storage::connect(&url).await.unwrap();
    assert!(matches!(storage.backend(), Backend::Postgres { .. }));
    assert!(
        storage.to_string().starts_with("PostgreSQL database "),
        "{storage}"
    );
    round_trip(&storage).await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(&schema)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(
        tables >= 3,
        "the migrations made {tables} tables in {schema}"
    );

    drop(storage);
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}
