//! The SQLite event store under concurrent writers that are separate processes: each writer
//! has a pool of its own on one file, as separate programs would, so SQLite's file locks (not
//! a pool) are all that orders them. The single-process checks are in `sqlite_conformance`.
//!
//! Run with `cargo test -p projections-tests --features sqlite --test sqlite_store`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::sqlite::TempFile;
use projections::sqlite::{self, SqliteEventStore};
use projections::store::AppendError;
use projections::{AnyEvent, Envelope, Event, EventStore, ExpectedVersion};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "sqs.deposited", aggregate = "Account")]
struct Deposited {
    amount: i64,
}

fn deposits(aggregate: Uuid, count: usize) -> Vec<AnyEvent> {
    (0..count)
        .map(|n| Envelope::new(aggregate, Deposited { amount: n as i64 }).into())
        .collect()
}

/// What one writer did.
#[derive(Default)]
struct Written {
    /// Ids of the events its successful appends stored.
    stored: Vec<Uuid>,
    /// Ids of the events its conflicting appends carried.
    refused: Vec<Uuid>,
    /// Its own aggregates and their final versions.
    streams: Vec<(Uuid, u64)>,
    /// Successful appends to the contested aggregate.
    contested_wins: u64,
}

/// Six writers, each a process of its own (its own pool, opened at the same time as the
/// others, migrating the same new file), append 150 events each in batches of 1 to 7 over
/// three aggregates of their own, and in between race for one contested aggregate with the
/// version they last saw, so many of those appends conflict. A reader, a process of its own
/// too, tails `read_all(after, 7)` meanwhile. The reader sees positions 1, 2, 3, ... with no
/// gap and never one out of order; it sees every stored event exactly once and none of the
/// refused ones; every stream's versions are consecutive; the contested stream holds exactly
/// the events of the appends that won.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_in_separate_processes_get_gap_free_positions_seen_in_order() {
    const WRITERS: usize = 6;
    const PER_WRITER: usize = 150;
    const AGGREGATES: usize = 3;
    const CONTESTED_BATCH: usize = 2;
    let file = TempFile::new("sqlite-store");
    let contested = Uuid::new_v4();

    // Every process opens (and migrates) the new file at the same time.
    let opening: Vec<_> = (0..=WRITERS)
        .map(|_| tokio::spawn(sqlite::open(file.path().to_owned())))
        .collect();
    let mut stores = Vec::new();
    for open in opening {
        stores.push(SqliteEventStore::new(open.await.unwrap().unwrap()));
    }
    let reader_store = stores.pop().unwrap();

    let writers: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(writer, store)| {
            tokio::spawn(async move {
                let aggregates: Vec<Uuid> = (0..AGGREGATES).map(|_| Uuid::new_v4()).collect();
                let mut versions = vec![0_u64; AGGREGATES];
                let mut done = Written::default();
                let mut written = 0;
                let mut round = 0;
                while written < PER_WRITER {
                    let slot = round % AGGREGATES;
                    let size = (1 + (writer + round) % 7).min(PER_WRITER - written);
                    let batch = deposits(aggregates[slot], size);
                    let ids: Vec<Uuid> = batch.iter().map(AnyEvent::event_id).collect();
                    let expected = match versions[slot] {
                        0 => ExpectedVersion::NoStream,
                        version => ExpectedVersion::Exact(version),
                    };
                    let result = store
                        .append(aggregates[slot], expected, batch)
                        .await
                        .unwrap();
                    assert_eq!(
                        result.last_position - result.first_position + 1,
                        size as u64
                    );
                    versions[slot] = result.version;
                    done.stored.extend(ids);
                    written += size;

                    // The contested aggregate, at the version this writer believes it has.
                    let seen = store.stream_version(contested).await.unwrap();
                    let batch = deposits(contested, CONTESTED_BATCH);
                    let ids: Vec<Uuid> = batch.iter().map(AnyEvent::event_id).collect();
                    let expected = match seen {
                        0 => ExpectedVersion::NoStream,
                        version => ExpectedVersion::Exact(version),
                    };
                    match store.append(contested, expected, batch).await {
                        Ok(result) => {
                            assert_eq!(result.version, seen + CONTESTED_BATCH as u64);
                            done.stored.extend(ids);
                            done.contested_wins += 1;
                        }
                        Err(AppendError::Conflict { actual, .. }) => {
                            assert!(actual > seen, "conflict at {actual}, seen {seen}");
                            done.refused.extend(ids);
                        }
                        Err(other) => panic!("unexpected append error: {other}"),
                    }
                    round += 1;
                }
                done.streams = aggregates.into_iter().zip(versions).collect();
                done
            })
        })
        .collect();

    let stop = tokio_util::sync::CancellationToken::new();
    let reader = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut after = 0;
            let mut seen = HashSet::new();
            loop {
                // One last full read after the writers are done.
                let last_round = stop.is_cancelled();
                let page = reader_store.read_all(after, 7).await.unwrap();
                assert!(page.len() <= 7);
                for stored in &page {
                    let position = stored.position().unwrap();
                    assert_eq!(
                        position,
                        after + 1,
                        "after {after} the reader saw {position}: a gap, a repeat or out of \
                         order"
                    );
                    let id = stored.event().expect("the test's events decode").event_id();
                    assert!(seen.insert(id), "event {id} read twice");
                    after = position;
                }
                if page.is_empty() {
                    if last_round {
                        return (after, seen, reader_store);
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };

    let mut stored = HashSet::new();
    let mut refused = Vec::new();
    let mut streams = Vec::new();
    let mut contested_wins = 0;
    for writer in writers {
        let done = tokio::time::timeout(Duration::from_secs(120), writer)
            .await
            .expect("the writers finish within 120 s")
            .unwrap();
        stored.extend(done.stored);
        refused.extend(done.refused);
        streams.extend(done.streams);
        contested_wins += done.contested_wins;
    }
    stop.cancel();
    let (last, seen, store) = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("the reader finishes within 120 s")
        .unwrap();

    let total = (WRITERS * PER_WRITER) as u64 + contested_wins * CONTESTED_BATCH as u64;
    assert!(
        contested_wins > 0,
        "no append to the contested aggregate won"
    );
    assert!(
        !refused.is_empty(),
        "no append to the contested aggregate conflicted"
    );
    println!(
        "{total} events; contested: {contested_wins} appends won, {} conflicted",
        refused.len() / CONTESTED_BATCH
    );
    assert_eq!(last, total);
    assert_eq!(seen, stored);
    assert!(
        refused.iter().all(|id| !seen.contains(id)),
        "a refused event was stored"
    );
    assert_eq!(store.head_position().await.unwrap(), total);

    for (aggregate, version) in streams {
        let versions: Vec<u64> = store
            .read_stream(aggregate)
            .await
            .unwrap()
            .iter()
            .map(|e| e.event().unwrap().metadata().aggregate_version)
            .collect();
        assert_eq!(versions, (1..=version).collect::<Vec<_>>());
    }
    let contested_stream = store.read_stream(contested).await.unwrap();
    assert_eq!(
        contested_stream
            .iter()
            .map(|e| e.event().unwrap().metadata().aggregate_version)
            .collect::<Vec<_>>(),
        (1..=contested_wins * CONTESTED_BATCH as u64).collect::<Vec<_>>()
    );
    store.pool().close().await;
}

/// A statement can make SQLite end an append's transaction by itself (here a trigger's
/// `RAISE(ROLLBACK, ...)`, as some I/O errors also do). That append fails and writes nothing;
/// the connection it ran on goes back to the pool, and the appends after it, on the same pool,
/// succeed at the next positions: on a pool of `sqlite::open` and on one built by hand.
#[tokio::test]
async fn an_append_whose_transaction_sqlite_ended_leaves_the_pool_usable() {
    let file = TempFile::new("sqlite-store");
    let opened = file.open().await;
    sqlx::raw_sql(
        "CREATE TRIGGER refuse_thirteen BEFORE INSERT ON projection_events
         WHEN json_extract(NEW.payload, '$.amount') = 13
         BEGIN SELECT RAISE(ROLLBACK, 'thirteen refused'); END;",
    )
    .execute(&opened)
    .await
    .unwrap();
    let by_hand = file.connect().await;
    let mut head = 0;
    for (pool, what) in [(opened, "sqlite::open"), (by_hand, "built by hand")] {
        let store = SqliteEventStore::new(pool);
        let aggregate = Uuid::new_v4();
        let first = store
            .append(aggregate, ExpectedVersion::NoStream, deposits(aggregate, 2))
            .await
            .unwrap();
        assert_eq!(first.last_position, head + 2);

        let refused = Envelope::new(aggregate, Deposited { amount: 13 }).into();
        let error = store
            .append(aggregate, ExpectedVersion::Exact(2), vec![refused])
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("thirteen refused"),
            "{what}: {error}"
        );

        for round in 0..3 {
            let result = store
                .append(
                    aggregate,
                    ExpectedVersion::Exact(2 + round),
                    deposits(aggregate, 1),
                )
                .await
                .unwrap_or_else(|e| panic!("{what}: append {round} after the refused one: {e:?}"));
            assert_eq!(result.last_position, head + 3 + round);
        }
        head += 5;
        assert_eq!(store.head_position().await.unwrap(), head);
        store.pool().close().await;
    }
}

/// A pool of `sqlite::open` never hands out a connection left counted as inside a transaction:
/// here an application's own transaction, which a statement under `OR ROLLBACK` made SQLite
/// end, is dropped rather than rolled back; every transaction after it on the pool begins.
#[tokio::test]
async fn an_opened_pool_replaces_a_connection_left_inside_a_dead_transaction() {
    let file = TempFile::new("sqlite-store");
    let pool = file.open().await;
    sqlx::raw_sql(
        "CREATE TABLE app_rows (id INTEGER PRIMARY KEY); INSERT INTO app_rows VALUES (1);",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("INSERT OR ROLLBACK INTO app_rows VALUES (1)")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    drop(tx);
    for round in 0..3 {
        let tx = pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .unwrap_or_else(|e| panic!("transaction {round} after the dead one: {e:?}"));
        tx.commit().await.unwrap();
    }
    let store = SqliteEventStore::new(pool);
    let aggregate = Uuid::new_v4();
    store
        .append(aggregate, ExpectedVersion::NoStream, deposits(aggregate, 1))
        .await
        .unwrap();
    store.pool().close().await;
}
