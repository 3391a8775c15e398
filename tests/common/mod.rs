//! Events and projections shared by the runtime tests.

#![allow(dead_code)]

pub mod captured;
#[cfg(feature = "postgres")]
pub mod cluster;
#[cfg(feature = "postgres")]
pub mod faults;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub mod probe;
#[cfg(feature = "postgres")]
pub mod rig;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use projections::{AnyEvent, Envelope, Event, projection};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(aggregate = "Account")]
pub struct Deposited {
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(aggregate = "Account")]
pub struct Withdrawn {
    pub amount: i64,
}

/// An event no test projection handles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(aggregate = "Account")]
pub struct Renamed {
    pub name: String,
}

/// A handler error that retry filters can recognise.
#[derive(Debug, thiserror::Error)]
#[error("transient failure")]
pub struct Transient;

/// A handler error that is not worth retrying.
#[derive(Debug, thiserror::Error)]
#[error("permanent failure: {0}")]
pub struct Permanent(pub String);

/// Balances per account. A withdrawal of `amount == 13` always fails (a poison event);
/// `fail_next` makes the next N handler calls fail with a transient error.
#[derive(Debug, Default)]
pub struct Balances {
    pub balances: HashMap<Uuid, i64>,
    pub calls: Arc<AtomicU32>,
    pub fail_next: u32,
}

#[projection(name = "balances")]
impl Balances {
    #[handles(Deposited)]
    async fn deposited(
        &mut self,
        event: &Envelope<Deposited>,
    ) -> Result<(), projections::projection::BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Err(Transient.into());
        }
        *self.balances.entry(event.aggregate_id()).or_default() += event.amount;
        Ok(())
    }

    #[handles(Withdrawn)]
    async fn withdrawn(
        &mut self,
        event: &Envelope<Withdrawn>,
    ) -> Result<(), projections::projection::BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if event.amount == 13 {
            return Err(
                Permanent(format!("unlucky withdrawal on {}", event.aggregate_id())).into(),
            );
        }
        *self.balances.entry(event.aggregate_id()).or_default() -= event.amount;
        Ok(())
    }

    #[reset]
    async fn clear(&mut self) {
        self.balances.clear();
    }
}

/// Counts events per type.
#[derive(Debug, Default)]
pub struct Tally {
    pub deposits: u32,
    pub withdrawals: u32,
}

#[projection(name = "tally")]
impl Tally {
    #[handles(Deposited)]
    async fn deposited(&mut self, _event: &Envelope<Deposited>) {
        self.deposits += 1;
    }

    #[handles(Withdrawn)]
    async fn withdrawn(&mut self, _event: &Envelope<Withdrawn>) {
        self.withdrawals += 1;
    }

    #[reset]
    async fn clear(&mut self) {
        *self = Self::default();
    }
}

pub fn deposit(account: Uuid, amount: i64) -> AnyEvent {
    Envelope::new(account, Deposited { amount }).into()
}

pub fn withdraw(account: Uuid, amount: i64) -> AnyEvent {
    Envelope::new(account, Withdrawn { amount }).into()
}

pub fn rename(account: Uuid) -> AnyEvent {
    Envelope::new(account, Renamed { name: "x".into() }).into()
}

/// Gives `events` positions from `first`, as a store would.
pub fn positioned(events: Vec<AnyEvent>, first: u64) -> Vec<AnyEvent> {
    events
        .into_iter()
        .zip(first..)
        .map(|(event, position)| event.map_metadata(|m| m.position = Some(position)))
        .collect()
}
