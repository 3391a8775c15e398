//! Several nodes in one process, on a real PostgreSQL server (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): fair shares, owners in the status, fencing of
//! a node whose lease was taken, a graceful leave, and commands that need the owner. The
//! tests with real processes (kill, pause, join) are in `cluster_processes.rs`.
//!
//! Run with `cargo test -p projections-tests --features postgres --test cluster`. Each test
//! works in a schema of its own (`cl_<random>`), dropped when it passes; it fails, rather
//! than skips, when the server cannot be reached, and every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "common/fixture.rs"]
mod fixture;
#[path = "common/nodes.rs"]
mod nodes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use nodes::{
    Beat, Count0, Count1, Count2, Count3, Count4, Count5, Counting, PROJECTIONS, Sequenced,
};
use projections::cluster::ClusterNode;
use projections::coordinator::{
    CoordinatorError, CoordinatorHandle, ProjectionCoordinator, WorkerState,
};
use projections::runner::{Partition, RunnerError};
use projections::transactional::{PostgreSQLTransactionUnit, TransactionalRunner};
use projections::{AnyEvent, Envelope, EventStore, ExpectedVersion, ProjectionRegistry};
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(2);
const HEARTBEAT: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {WAIT:?}"))
}

/// Polls `check` every 50 ms until it answers `true`, at most [`WAIT`].
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// A schema of the test's own (`common::fixture::Fixture`), and the nodes the test runs on it.
struct Test(fixture::Fixture);

impl std::ops::Deref for Test {
    type Target = fixture::Fixture;
    fn deref(&self) -> &fixture::Fixture {
        &self.0
    }
}

impl Test {
    async fn new() -> Self {
        Self(fixture::Fixture::new("cl", 12).await)
    }

    /// A node running the first `projections` counters.
    fn node(&self, id: &str, projections: usize) -> CoordinatorHandle {
        let unit = Arc::new(PostgreSQLTransactionUnit::with_schema(
            self.pool.clone(),
            &self.schema,
        ));
        let counting = Counting::new(&self.schema, id);
        let mut registry = ProjectionRegistry::new();
        macro_rules! register {
            ($($index:literal => $ty:ident),*) => {
                $(
                    if $index < projections {
                        registry
                            .register(TransactionalRunner::new($ty(counting.clone()), unit.clone()))
                            .unwrap();
                    }
                )*
            };
        }
        register!(0 => Count0, 1 => Count1, 2 => Count2, 3 => Count3, 4 => Count4, 5 => Count5);
        let node = ClusterNode::new(self.pool.clone(), id)
            .unwrap()
            .schema(&self.schema)
            .lease(LEASE)
            .heartbeat(HEARTBEAT);
        ProjectionCoordinator::new(registry, self.store.clone() as Arc<dyn EventStore>)
            .batch_size(20)
            .poll_interval(Duration::from_millis(100))
            .cluster(node)
            .start()
            .unwrap()
    }

    /// A node (or, with no id, a plain coordinator) running `count` partitions of
    /// [`Sequenced`].
    fn partitioned(&self, id: Option<&str>, count: u32) -> CoordinatorHandle {
        let unit = Arc::new(PostgreSQLTransactionUnit::with_schema(
            self.pool.clone(),
            &self.schema,
        ));
        let projection = Sequenced(Counting::new(&self.schema, id.unwrap_or("solo")));
        let mut registry = ProjectionRegistry::new();
        for partition in Partition::all(count).unwrap() {
            registry
                .register(
                    TransactionalRunner::new(projection.clone(), unit.clone()).partition(partition),
                )
                .unwrap();
        }
        let coordinator =
            ProjectionCoordinator::new(registry, self.store.clone() as Arc<dyn EventStore>)
                .batch_size(20)
                .poll_interval(Duration::from_millis(100));
        let coordinator = match id {
            Some(id) => coordinator.cluster(
                ClusterNode::new(self.pool.clone(), id)
                    .unwrap()
                    .schema(&self.schema)
                    .lease(LEASE)
                    .heartbeat(HEARTBEAT),
            ),
            None => coordinator,
        };
        coordinator.start().unwrap()
    }

    /// `beats` numbered beats for each of `aggregates` new aggregates, appended interleaved
    /// (one event an append, aggregate after aggregate); returns the head.
    async fn append_sequences(&self, aggregates: usize, beats: i64) -> u64 {
        let ids: Vec<Uuid> = (0..aggregates).map(|_| Uuid::new_v4()).collect();
        let mut last = 0;
        for n in 0..beats {
            for id in &ids {
                let expected = if n == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(n as u64)
                };
                last = self
                    .store
                    .append(*id, expected, vec![Envelope::new(*id, Beat { n }).into()])
                    .await
                    .unwrap()
                    .last_position;
            }
        }
        last
    }

    async fn dead_letters(&self) -> i64 {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{}\".projection_dead_letters",
            self.schema.name().unwrap()
        ))
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    async fn append(&self, count: usize) -> u64 {
        let mut last = 0;
        for chunk in 0..count.div_ceil(10) {
            let aggregate = Uuid::new_v4();
            let events: Vec<AnyEvent> = (0..10.min(count - chunk * 10))
                .map(|i| {
                    Envelope::new(
                        aggregate,
                        Beat {
                            n: (chunk * 10 + i) as i64,
                        },
                    )
                    .into()
                })
                .collect();
            last = self
                .store
                .append(aggregate, ExpectedVersion::NoStream, events)
                .await
                .unwrap()
                .last_position;
        }
        last
    }

    /// Live owners by lease.
    async fn owners(&self) -> Vec<(String, Option<String>)> {
        nodes::owners(&self.pool, &self.schema).await.unwrap()
    }

    async fn held_by(&self, node: &str) -> usize {
        self.owners()
            .await
            .iter()
            .filter(|(_, owner)| owner.as_deref() == Some(node))
            .count()
    }

    /// Every projection of `names` has its checkpoint at `head`.
    async fn caught_up(&self, names: &[&str], head: u64) -> bool {
        for name in names {
            if self.checkpoint(name).await < head as i64 {
                return false;
            }
        }
        true
    }

    /// (rows, rows applied more than once, applications) per projection.
    async fn tally(&self) -> Vec<(String, i64, i64, i64)> {
        nodes::tally(&self.pool, &self.schema).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_six_projections_and_apply_each_event_once() {
    let test = Test::new().await;
    let handles = [test.node("a", 6), test.node("b", 6), test.node("c", 6)];
    until("each node holding two leases", || async {
        let owners = test.owners().await;
        owners.len() == 6
            && ["a", "b", "c"].iter().all(|node| {
                owners
                    .iter()
                    .filter(|(_, o)| o.as_deref() == Some(*node))
                    .count()
                    == 2
            })
    })
    .await;
    let head = test.append(300).await;
    until("every projection caught up", || {
        test.caught_up(&PROJECTIONS, head)
    })
    .await;
    let tally = test.tally().await;
    assert_eq!(tally.len(), 6, "{tally:?}");
    for (projection, rows, repeated, applications) in &tally {
        assert_eq!(
            (*rows, *repeated, *applications),
            (300, 0, 300),
            "{projection}"
        );
    }

    // The status of each projection names its owner on every node; only the owner works.
    let owners = test.owners().await;
    for (lease, owner) in owners {
        let owner = owner.unwrap();
        until("every node seeing the owner", || async {
            handles.iter().all(|handle| {
                let status = handle.projection_status(&lease).unwrap();
                status
                    .owner
                    .as_ref()
                    .and_then(|o| o.node.clone())
                    .as_deref()
                    == Some(&owner)
            })
        })
        .await;
        for (handle, node) in handles.iter().zip(["a", "b", "c"]) {
            let status = handle.projection_status(&lease).unwrap();
            let ownership = status.owner.unwrap();
            assert_eq!(ownership.mine, node == owner, "{lease} on {node}");
            assert!(ownership.expires_at.is_some() && ownership.since.is_some());
            if node == owner {
                assert_eq!(
                    status.state,
                    WorkerState::Live,
                    "{lease} on its owner {node}"
                );
            } else {
                assert_eq!(
                    status.state,
                    WorkerState::Standby {
                        owner: Some(owner.clone())
                    },
                    "{lease} on {node}"
                );
            }
        }
    }
    let view = handles[0].cluster().unwrap();
    assert_eq!(view.node, "a");
    let ids: Vec<&str> = view.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!((view.target, view.held), (2, 2));

    for handle in &handles {
        assert!(handle.shutdown(Duration::from_secs(10)).await.is_ok());
    }
    test.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lease_was_taken_commits_nothing_and_stands_by() {
    let test = Test::new().await;
    let handle = test.node("a", 1);
    until("a holding the lease", || async {
        test.held_by("a").await == 1
    })
    .await;
    let head = test.append(10).await;
    until("a applying the first events", || {
        test.caught_up(&["count_0"], head)
    })
    .await;

    // Another node ("z", not running) takes the lease over, as a takeover would: a new token
    // in the lease and in its fence, in one transaction.
    let schema = test.schema.name().unwrap();
    sqlx::raw_sql(&format!(
        "BEGIN;
         UPDATE \"{schema}\".projection_leases SET owner = 'z', token = token + 1,
                acquired_at = now(), expires_at = now() + interval '1 hour'
          WHERE lease_name = 'count_0';
         UPDATE \"{schema}\".projection_fences SET owner = 'z', token = token + 1
          WHERE lease_name = 'count_0';
         COMMIT;"
    ))
    .execute(&test.pool)
    .await
    .unwrap();
    let head = test.append(10).await;
    until("a standing by for z", || async {
        handle.projection_status("count_0").unwrap().state
            == WorkerState::Standby {
                owner: Some("z".to_owned()),
            }
    })
    .await;
    // Well past a heartbeat and a poll: still nothing of the new events.
    tokio::time::sleep(LEASE).await;
    assert_eq!(
        test.tally().await[0].1,
        10,
        "a committed under a lost lease"
    );
    assert!(test.checkpoint("count_0").await < head as i64);

    // z gives the lease back: a takes it again and applies the rest, once.
    sqlx::raw_sql(&format!(
        "UPDATE \"{schema}\".projection_leases SET owner = NULL, expires_at = NULL
          WHERE lease_name = 'count_0'"
    ))
    .execute(&test.pool)
    .await
    .unwrap();
    until("a catching up again", || test.caught_up(&["count_0"], head)).await;
    assert_eq!(test.tally().await[0].1..=test.tally().await[0].3, 20..=20);
    assert_eq!(test.tally().await[0].2, 0);
    assert!(handle.shutdown(Duration::from_secs(10)).await.is_ok());
    test.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_hands_its_projections_over_at_once() {
    let test = Test::new().await;
    let a = test.node("a", 2);
    let b = test.node("b", 2);
    until("one lease each", || async {
        test.held_by("a").await == 1 && test.held_by("b").await == 1
    })
    .await;
    // b leaves gracefully: its lease is given back, not left to expire.
    assert!(b.shutdown(Duration::from_secs(10)).await.is_ok());
    let left = tokio::time::Instant::now();
    until("a holding both", || async { test.held_by("a").await == 2 }).await;
    assert!(
        left.elapsed() < LEASE,
        "the takeover waited {:?}, as long as an expiry",
        left.elapsed()
    );
    let head = test.append(40).await;
    until("a applying both", || {
        test.caught_up(&["count_0", "count_1"], head)
    })
    .await;
    assert!(a.cluster().unwrap().nodes.iter().all(|n| n.id == "a"));
    assert!(a.shutdown(Duration::from_secs(10)).await.is_ok());
    test.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_is_asked_of_the_owner() {
    let test = Test::new().await;
    let a = test.node("a", 1);
    until("a holding the lease", || async {
        test.held_by("a").await == 1
    })
    .await;
    let b = test.node("b", 1);
    until("b standing by for a", || async {
        b.projection_status("count_0").unwrap().state
            == WorkerState::Standby {
                owner: Some("a".to_owned()),
            }
    })
    .await;
    let refused = b.rebuild("count_0").await.unwrap_err();
    assert!(
        matches!(&refused, CoordinatorError::Runner(error) if matches!(**error, RunnerError::NotOwner { ref owner, .. } if owner.as_deref() == Some("a"))),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("node `a`"), "{refused}");
    let head = test.append(10).await;
    until("a applying", || test.caught_up(&["count_0"], head)).await;
    let rebuilt = a.rebuild("count_0").await.unwrap();
    assert_eq!(rebuilt.applied, 10);
    for handle in [a, b] {
        assert!(handle.shutdown(Duration::from_secs(10)).await.is_ok());
    }
    test.drop_schema().await;
}

const PARTITIONS: [&str; 4] = [
    "sequenced#0/4",
    "sequenced#1/4",
    "sequenced#2/4",
    "sequenced#3/4",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_partitions_on_two_nodes_keep_each_aggregates_order_and_apply_each_event_once() {
    let test = Test::new().await;
    nodes::prepare_sequences(&test.pool, &test.schema)
        .await
        .unwrap();
    let a = test.partitioned(Some("a"), 4);
    let b = test.partitioned(Some("b"), 4);
    until("two partitions each", || async {
        test.held_by("a").await == 2 && test.held_by("b").await == 2
    })
    .await;
    let head = test.append_sequences(40, 10).await;
    until("every partition caught up", || {
        test.caught_up(&PARTITIONS, head)
    })
    .await;
    // Every aggregate's ten beats, in order, once each; nothing dead-lettered.
    assert_eq!(
        nodes::sequences(&test.pool, &test.schema, 9).await.unwrap(),
        (40, 40, 400)
    );
    assert_eq!(test.dead_letters().await, 0);

    // A rebuild asked of one node by the projection's name resets every partition, on both
    // nodes, in one transaction; they all replay.
    let rebuilt = a.rebuild("sequenced").await.unwrap();
    assert!(rebuilt.name.starts_with("sequenced#"), "{}", rebuilt.name);
    until("every partition replayed", || async {
        nodes::sequences(&test.pool, &test.schema, 9).await.unwrap() == (40, 40, 400)
            && test.caught_up(&PARTITIONS, head).await
    })
    .await;
    assert_eq!(test.dead_letters().await, 0);
    for handle in [a, b] {
        assert!(handle.shutdown(Duration::from_secs(10)).await.is_ok());
    }
    test.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_partition_count_is_refused_until_a_rebuild() {
    let test = Test::new().await;
    nodes::prepare_sequences(&test.pool, &test.schema)
        .await
        .unwrap();
    let head = test.append_sequences(12, 5).await;
    let four = test.partitioned(None, 4);
    until("four partitions caught up", || {
        test.caught_up(&PARTITIONS, head)
    })
    .await;
    assert!(four.shutdown(Duration::from_secs(10)).await.is_ok());

    let two = test.partitioned(None, 2);
    until("the two partitions stopping", || async {
        two.status()
            .iter()
            .all(|s| matches!(s.state, WorkerState::Stopped { .. }))
    })
    .await;
    let status = two.projection_status("sequenced#0/2").unwrap();
    let error = status.last_error.unwrap_or_default();
    assert!(
        error.contains("partitioning") && error.contains("sequenced#0/4"),
        "{error}"
    );
    // Nothing was applied twice meanwhile.
    assert_eq!(
        nodes::sequences(&test.pool, &test.schema, 4).await.unwrap(),
        (12, 12, 60)
    );

    two.rebuild("sequenced").await.unwrap();
    for name in ["sequenced#0/2", "sequenced#1/2"] {
        // The stop went with the old checkpoints; the other partition's worker finds out at
        // its next look at storage.
        let _ = two.resume(name).await;
    }
    until("two partitions caught up", || {
        test.caught_up(&["sequenced#0/2", "sequenced#1/2"], head)
    })
    .await;
    assert_eq!(
        nodes::sequences(&test.pool, &test.schema, 4).await.unwrap(),
        (12, 12, 60)
    );
    assert!(two.shutdown(Duration::from_secs(10)).await.is_ok());
    test.drop_schema().await;
}
