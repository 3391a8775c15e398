//! Runtime benchmark: the tracked path (checkpoint check, handler, checkpoint update) and the
//! registry fan-out to 3 projections, each beside a hand-written loop making the same
//! read-model updates.
//!
//! Run with `cargo run --release -p projections-benches --bin runtime`.
//!
//! One million events (3 types over 1,024 accounts) are built, with positions, before any
//! timing. Both sides take them in batches of 1,000 and write one in-memory checkpoint per
//! batch and per projection. Rounds alternate the order of the two sides; the best run of
//! each is reported with the median per-round ratio.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use projections::runner::Repositories;
use projections::{
    AnyEvent, CheckpointRepository, Envelope, Event, InMemoryCheckpointRepository, NoRetryPolicy,
    ProjectionRegistry, ProjectionRunner, projection,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const EVENTS: usize = 1_000_000;
const BATCH: usize = 1_000;
const ROUNDS: usize = 7;

#[derive(Clone, Serialize, Deserialize, Event)]
struct Deposited {
    amount: i64,
}

#[derive(Clone, Serialize, Deserialize, Event)]
struct Withdrawn {
    amount: i64,
}

#[derive(Clone, Serialize, Deserialize, Event)]
struct Renamed {
    len: u32,
}

#[derive(Default)]
struct Balances {
    balances: HashMap<Uuid, i64>,
}

#[projection]
impl Balances {
    #[handles(Deposited)]
    async fn deposited(&mut self, e: &Envelope<Deposited>) {
        *self.balances.entry(e.aggregate_id()).or_default() += e.amount;
    }
    #[handles(Withdrawn)]
    async fn withdrawn(&mut self, e: &Envelope<Withdrawn>) {
        *self.balances.entry(e.aggregate_id()).or_default() -= e.amount;
    }
}

#[derive(Default)]
struct Counts {
    deposits: u64,
    withdrawals: u64,
    renames: u64,
}

#[projection]
impl Counts {
    #[handles(Deposited)]
    async fn deposited(&mut self, _e: &Envelope<Deposited>) {
        self.deposits += 1;
    }
    #[handles(Withdrawn)]
    async fn withdrawn(&mut self, _e: &Envelope<Withdrawn>) {
        self.withdrawals += 1;
    }
    #[handles(Renamed)]
    async fn renamed(&mut self, _e: &Envelope<Renamed>) {
        self.renames += 1;
    }
}

#[derive(Default)]
struct NameLengths {
    lengths: HashMap<Uuid, u32>,
}

#[projection]
impl NameLengths {
    #[handles(Renamed)]
    async fn renamed(&mut self, e: &Envelope<Renamed>) {
        self.lengths.insert(e.aggregate_id(), e.len);
    }
}

fn events() -> Vec<AnyEvent> {
    let accounts: Vec<Uuid> = (0..1024).map(|_| Uuid::new_v4()).collect();
    (0..EVENTS)
        .map(|i| {
            let account = accounts[(i * 7919) % accounts.len()];
            let event: AnyEvent = match i % 3 {
                0 => Envelope::new(
                    account,
                    Deposited {
                        amount: (i % 100) as i64,
                    },
                )
                .into(),
                1 => Envelope::new(
                    account,
                    Withdrawn {
                        amount: (i % 7) as i64,
                    },
                )
                .into(),
                _ => Envelope::new(
                    account,
                    Renamed {
                        len: (i % 13) as u32,
                    },
                )
                .into(),
            };
            event.map_metadata(|m| m.position = Some(i as u64 + 1))
        })
        .collect()
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

/// Ours: a `ProjectionRunner` (tracing off), one `handle_batch` per batch.
fn tracked_ours(events: &[AnyEvent]) -> Duration {
    let mut runner = ProjectionRunner::builder(Balances::default())
        .retry_policy(NoRetryPolicy)
        .tracing(false)
        .build();
    let start = Instant::now();
    block_on(async {
        for batch in events.chunks(BATCH) {
            black_box(runner.handle_batch(batch).await.unwrap());
        }
    });
    let elapsed = start.elapsed();
    black_box(runner.projection().balances.len());
    elapsed
}

/// The same work by hand: skip at or below the checkpoint, type test, update, one checkpoint
/// write per batch.
fn tracked_by_hand(events: &[AnyEvent]) -> Duration {
    let checkpoints: Mutex<HashMap<String, (u64, u64)>> = Mutex::new(HashMap::new());
    let mut balances: HashMap<Uuid, i64> = HashMap::new();
    let mut checkpoint = 0u64;
    let start = Instant::now();
    for batch in events.chunks(BATCH) {
        let mut applied = 0;
        for event in batch {
            let position = event.position().unwrap_or(0);
            if position <= checkpoint {
                continue;
            }
            if let Some(e) = event.downcast::<Deposited>() {
                *balances.entry(e.aggregate_id()).or_default() += e.amount;
                applied += 1;
            } else if let Some(e) = event.downcast::<Withdrawn>() {
                *balances.entry(e.aggregate_id()).or_default() -= e.amount;
                applied += 1;
            }
            checkpoint = position;
        }
        let mut table = checkpoints.lock().unwrap();
        let entry = table.entry("balances".to_owned()).or_default();
        *entry = (checkpoint, entry.1 + applied);
    }
    let elapsed = start.elapsed();
    black_box(balances.len());
    elapsed
}

/// Ours: a registry of three projections sharing one checkpoint repository,
/// `dispatch_many` per batch.
fn fan_out_ours(events: &[AnyEvent]) -> Duration {
    let checkpoints: Arc<dyn CheckpointRepository> = Arc::new(InMemoryCheckpointRepository::new());
    let storage = Repositories::new(
        checkpoints,
        Arc::new(projections::InMemoryDLQRepository::new()),
    );
    let mut registry = ProjectionRegistry::new().with_tracing(false);
    registry
        .register_projection(
            ProjectionRunner::builder(Balances::default())
                .storage(storage.clone())
                .tracing(false)
                .build(),
        )
        .unwrap();
    registry
        .register_projection(
            ProjectionRunner::builder(Counts::default())
                .storage(storage.clone())
                .tracing(false)
                .build(),
        )
        .unwrap();
    registry
        .register_projection(
            ProjectionRunner::builder(NameLengths::default())
                .storage(storage)
                .tracing(false)
                .build(),
        )
        .unwrap();
    let start = Instant::now();
    block_on(async {
        for batch in events.chunks(BATCH) {
            let report = registry.dispatch_many(batch).await;
            debug_assert!(report.is_ok());
            let _ = black_box(report);
        }
    });
    let elapsed = start.elapsed();
    black_box(registry.projection::<Counts>().unwrap().deposits);
    elapsed
}

/// The same three read models by hand, each with its own checkpoint written once per batch.
fn fan_out_by_hand(events: &[AnyEvent]) -> Duration {
    let checkpoints: Mutex<HashMap<String, (u64, u64)>> = Mutex::new(HashMap::new());
    let mut balances: HashMap<Uuid, i64> = HashMap::new();
    let mut counts = (0u64, 0u64, 0u64);
    let mut lengths: HashMap<Uuid, u32> = HashMap::new();
    let mut positions = [0u64; 3];
    let start = Instant::now();
    for batch in events.chunks(BATCH) {
        let mut applied = [0u64; 3];
        for event in batch {
            let position = event.position().unwrap_or(0);
            if position > positions[0] {
                if let Some(e) = event.downcast::<Deposited>() {
                    *balances.entry(e.aggregate_id()).or_default() += e.amount;
                    applied[0] += 1;
                } else if let Some(e) = event.downcast::<Withdrawn>() {
                    *balances.entry(e.aggregate_id()).or_default() -= e.amount;
                    applied[0] += 1;
                }
                positions[0] = position;
            }
            if position > positions[1] {
                if event.is::<Deposited>() {
                    counts.0 += 1;
                } else if event.is::<Withdrawn>() {
                    counts.1 += 1;
                } else if event.is::<Renamed>() {
                    counts.2 += 1;
                }
                applied[1] += 1;
                positions[1] = position;
            }
            if position > positions[2] {
                if let Some(e) = event.downcast::<Renamed>() {
                    lengths.insert(e.aggregate_id(), e.len);
                    applied[2] += 1;
                }
                positions[2] = position;
            }
        }
        let mut table = checkpoints.lock().unwrap();
        for (i, name) in ["balances", "counts", "name-lengths"]
            .into_iter()
            .enumerate()
        {
            let entry = table.entry(name.to_owned()).or_default();
            *entry = (positions[i], entry.1 + applied[i]);
        }
    }
    let elapsed = start.elapsed();
    black_box((balances.len(), counts, lengths.len()));
    elapsed
}

fn per_second(d: Duration) -> f64 {
    EVENTS as f64 / d.as_secs_f64()
}

fn compare(
    name: &str,
    events: &[AnyEvent],
    ours: fn(&[AnyEvent]) -> Duration,
    by_hand: fn(&[AnyEvent]) -> Duration,
) {
    let mut best_ours = Duration::MAX;
    let mut best_hand = Duration::MAX;
    let mut ratios = Vec::new();
    for round in 0..ROUNDS {
        let (o, h) = if round % 2 == 0 {
            let o = ours(events);
            (o, by_hand(events))
        } else {
            let h = by_hand(events);
            (ours(events), h)
        };
        best_ours = best_ours.min(o);
        best_hand = best_hand.min(h);
        ratios.push(o.as_secs_f64() / h.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "{name:<28} ours {:>12.0} ev/s   hand-written {:>12.0} ev/s   ratio (time ours / hand) best {:.2}x, median {:.2}x",
        per_second(best_ours),
        per_second(best_hand),
        best_ours.as_secs_f64() / best_hand.as_secs_f64(),
        ratios[ratios.len() / 2],
    );
}

fn main() {
    let events = events();
    println!("{EVENTS} events, batches of {BATCH}, best of {ROUNDS} rounds\n");
    compare(
        "tracked path (1 projection)",
        &events,
        tracked_ours,
        tracked_by_hand,
    );
    compare(
        "registry fan-out (3)",
        &events,
        fan_out_ours,
        fan_out_by_hand,
    );
}
