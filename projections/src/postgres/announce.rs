//! Announcing committed appends on [`APPEND_CHANNEL`](super::APPEND_CHANNEL), after the commit.
//!
//! A `NOTIFY` sent inside an appending transaction takes PostgreSQL's notification queue lock
//! at commit and keeps it through the commit's WAL flush, so every appending transaction would
//! commit after the previous one: appends would not overlap. Sent afterwards, from a
//! transaction that writes nothing, it holds that lock for microseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::PgPool;

use super::APPEND_CHANNEL;

/// Sends the highest position committed by this store's appends; appends committed while a
/// notification is on its way share the next one.
#[derive(Debug)]
pub(super) struct Announcer {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    prefix: String,
    /// The highest position to announce.
    wanted: AtomicU64,
    /// Whether a task is sending.
    sending: AtomicBool,
}

impl Announcer {
    pub(super) fn new(prefix: String) -> Self {
        Self {
            state: Arc::new(State {
                prefix,
                wanted: AtomicU64::new(0),
                sending: AtomicBool::new(false),
            }),
        }
    }

    /// Announces `position` (committed). Outside a Tokio runtime, or when no task can be
    /// spawned, it is sent before this returns; otherwise by a background task. A failure to
    /// notify is logged, not returned: the events are committed, and readers also poll.
    pub(super) async fn announce(&self, pool: &PgPool, position: u64) {
        let state = &self.state;
        state.wanted.fetch_max(position, Ordering::AcqRel);
        if state.sending.swap(true, Ordering::AcqRel) {
            // The sending task will see `wanted` before it stops.
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let state = Arc::clone(state);
                let pool = pool.clone();
                runtime.spawn(async move { state.send_all(&pool).await });
            }
            Err(_) => state.send_all(pool).await,
        }
    }
}

impl State {
    /// Sends until nothing newer is wanted, then lets the next append start a sender.
    async fn send_all(&self, pool: &PgPool) {
        let mut sent = 0;
        loop {
            let wanted = self.wanted.load(Ordering::Acquire);
            if wanted > sent {
                self.send(pool, wanted).await;
                sent = wanted;
                continue;
            }
            self.sending.store(false, Ordering::Release);
            // An append may have raised `wanted` after the load above and found `sending`
            // still set: take over again if nobody else has.
            if self.wanted.load(Ordering::Acquire) <= sent
                || self.sending.swap(true, Ordering::AcqRel)
            {
                return;
            }
        }
    }

    async fn send(&self, pool: &PgPool, position: u64) {
        let payload = format!("{}{position}", self.prefix);
        if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(APPEND_CHANNEL)
            .bind(&payload)
            .execute(pool)
            .await
        {
            tracing::warn!(%error, position, "cannot announce appended events; readers will poll");
        }
    }
}
