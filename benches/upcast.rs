//! The cost of upcasting: decoding stored payloads of the current version beside decoding
//! payloads two versions older through a JSON upcaster and a typed one.
//!
//! Run with `cargo run --release -p projections-benches --bin upcast`.
//!
//! Each side decodes the same number of payloads, from JSON text (as the stores read them),
//! through `EventRegistry::global().decode_str`: version 3 directly; version 1 through
//! `1 -> 2` (JSON: a field renamed) and `2 -> 3` (typed: an old struct into the new one). The
//! best of several rounds is reported, sides alternating, with the time per event.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use projections::{Event, EventMetadata, EventRegistry, upcast};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const EVENTS: usize = 200_000;
const ROUNDS: usize = 5;

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(aggregate = "Order", version = 3)]
struct OrderPlaced {
    customer: String,
    cents: i64,
    currency: String,
}

#[upcast(OrderPlaced, from = 1)]
fn total_renamed(mut payload: serde_json::Value) -> serde_json::Value {
    if let Some(total) = payload.get_mut("total").map(serde_json::Value::take) {
        payload["cents"] = total;
    }
    payload
}

#[derive(Deserialize)]
struct OrderPlacedV2 {
    customer_id: String,
    cents: i64,
}

#[upcast(OrderPlaced, from = 2)]
fn with_currency(old: OrderPlacedV2) -> OrderPlaced {
    OrderPlaced {
        customer: old.customer_id,
        cents: old.cents,
        currency: "EUR".into(),
    }
}

fn decode_all(version: u32, payloads: &[String]) -> Duration {
    let registry = EventRegistry::global();
    let metadata = EventMetadata::new("OrderPlaced", version, Uuid::nil(), "Order");
    let start = Instant::now();
    for payload in payloads {
        let event = registry.decode_str(metadata.clone(), payload).unwrap();
        black_box(event);
    }
    start.elapsed()
}

fn main() {
    EventRegistry::global().check_upcasters().unwrap();
    let current: Vec<String> = (0..EVENTS)
        .map(|n| {
            serde_json::json!({ "customer": format!("customer-{n}"), "cents": n, "currency": "EUR" })
                .to_string()
        })
        .collect();
    let old: Vec<String> = (0..EVENTS)
        .map(|n| {
            serde_json::json!({ "customer_id": format!("customer-{n}"), "total": n }).to_string()
        })
        .collect();
    let mut best = [Duration::MAX; 2];
    let mut ratios = Vec::new();
    for round in 0..ROUNDS {
        let mut times = [Duration::ZERO; 2];
        for step in 0..2 {
            let side = (step + round) % 2;
            times[side] = if side == 0 {
                decode_all(3, &current)
            } else {
                decode_all(1, &old)
            };
        }
        for (best, time) in best.iter_mut().zip(times) {
            *best = (*best).min(time);
        }
        ratios.push(times[1].as_secs_f64() / times[0].as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let per_event = |d: Duration| d.as_nanos() as f64 / EVENTS as f64;
    println!("Decoding {EVENTS} stored payloads (best of {ROUNDS} rounds, sides alternating)");
    println!(
        "  version 3, no upcasting                        {:>8.0} ns/event",
        per_event(best[0])
    );
    println!(
        "  version 1, upcast 1 -> 2 (JSON) -> 3 (typed)   {:>8.0} ns/event",
        per_event(best[1])
    );
    println!(
        "  upcast / direct, median of rounds              {:>8.2}x",
        ratios[ratios.len() / 2]
    );
}
