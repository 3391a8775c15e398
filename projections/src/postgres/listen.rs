//! The background listener that turns append notifications into a `watch` of the head.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{APPEND_CHANNEL, Schema};

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts the listener with the first subscriber and stops it with the store.
#[derive(Debug)]
pub(super) struct Notifier {
    slot: Arc<Mutex<Option<Live>>>,
    shutdown: CancellationToken,
    prefix: String,
    head_sql: Arc<str>,
}

/// A running listener.
#[derive(Debug)]
struct Live {
    sender: watch::Sender<u64>,
    task: JoinHandle<()>,
    generation: u64,
}

impl Notifier {
    pub(super) fn new(schema: &Schema, head_sql: String) -> Self {
        Self {
            slot: Arc::new(Mutex::new(None)),
            shutdown: CancellationToken::new(),
            prefix: schema.notify_prefix(),
            head_sql: head_sql.into(),
        }
    }

    /// Tells the current subscribers, if any, that `position` is committed (an append of
    /// this store), without waiting for the notification to come back from the server.
    pub(super) fn publish(&self, position: u64) {
        if let Some(live) = lock(&self.slot).as_ref() {
            live.sender.send_if_modified(|head| {
                let moved = position > *head;
                if moved {
                    *head = position;
                }
                moved
            });
        }
    }

    /// A receiver of the head; starts the listener on the current Tokio runtime if none runs.
    pub(super) fn subscribe(&self, pool: &PgPool) -> Option<watch::Receiver<u64>> {
        let mut slot = lock(&self.slot);
        if let Some(live) = slot.as_ref()
            && !live.task.is_finished()
        {
            return Some(live.sender.subscribe());
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (initial, generation) = slot
            .as_ref()
            .map_or((0, 0), |live| (*live.sender.borrow(), live.generation + 1));
        let (sender, receiver) = watch::channel(initial);
        let listener = Listener {
            pool: pool.clone(),
            prefix: self.prefix.clone(),
            head_sql: Arc::clone(&self.head_sql),
            sender: sender.clone(),
            slot: Arc::clone(&self.slot),
            generation,
            shutdown: self.shutdown.clone(),
        };
        let task = runtime.spawn(listener.run());
        *slot = Some(Live {
            sender,
            task,
            generation,
        });
        Some(receiver)
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The state of the listening task.
struct Listener {
    pool: PgPool,
    prefix: String,
    head_sql: Arc<str>,
    sender: watch::Sender<u64>,
    slot: Arc<Mutex<Option<Live>>>,
    generation: u64,
    shutdown: CancellationToken,
}

/// Why the listening loop stopped.
enum Stop {
    /// For good.
    Done,
    /// The connection failed; reconnect after a pause.
    Failed,
    /// Reconnect at once.
    Restart,
}

impl Listener {
    async fn run(self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            match self.listen().await {
                Stop::Done => return,
                Stop::Restart => backoff = MIN_BACKOFF,
                Stop::Failed => {
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Listens on one connection until it fails or the listener is no longer wanted.
    async fn listen(&self) -> Stop {
        let connected = tokio::select! {
            () = self.shutdown.cancelled() => return Stop::Done,
            connected = self.connect() => connected,
        };
        let mut listener = match connected {
            Ok(listener) => listener,
            Err(sqlx::Error::PoolClosed) => return Stop::Done,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for appended events; retrying");
                return Stop::Failed;
            }
        };
        // Appends made before LISTEN took effect were not announced to us.
        self.publish_head().await;
        loop {
            // Dropping `try_recv` part-way may leave the connection mid-message, so every
            // branch that interrupts it also drops the listener.
            tokio::select! {
                () = self.shutdown.cancelled() => return Stop::Done,
                () = self.sender.closed() => return self.on_unwatched(),
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => {
                        if let Some(position) = parse_payload(notification.payload(), &self.prefix) {
                            self.publish(position);
                        }
                    }
                    // The connection was lost and re-established: notifications were missed.
                    Ok(None) => self.publish_head().await,
                    Err(sqlx::Error::PoolClosed) => return Stop::Done,
                    Err(error) => {
                        tracing::warn!(%error, "lost the connection listening for appended events; reconnecting");
                        return Stop::Failed;
                    }
                },
            }
        }
    }

    async fn connect(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(APPEND_CHANNEL).await?;
        Ok(listener)
    }

    /// Every receiver is gone: stop, unless a subscriber arrived meanwhile.
    fn on_unwatched(&self) -> Stop {
        let mut slot = lock(&self.slot);
        if self.sender.receiver_count() > 0 {
            return Stop::Restart;
        }
        if slot
            .as_ref()
            .is_some_and(|live| live.generation == self.generation)
        {
            *slot = None;
        }
        Stop::Done
    }

    async fn publish_head(&self) {
        match sqlx::query_scalar::<_, i64>(&self.head_sql)
            .fetch_one(&self.pool)
            .await
        {
            Ok(head) => {
                if let Ok(head) = u64::try_from(head) {
                    self.publish(head);
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the head position"),
        }
    }

    fn publish(&self, position: u64) {
        self.sender.send_if_modified(|head| {
            let moved = position > *head;
            if moved {
                *head = position;
            }
            moved
        });
    }
}

/// The position in a notification for the schema whose payloads start with `prefix`.
fn parse_payload(payload: &str, prefix: &str) -> Option<u64> {
    payload.strip_prefix(prefix)?.parse().ok()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::parse_payload;

    #[test]
    fn payloads_are_filtered_by_schema() {
        assert_eq!(parse_payload("42", ""), Some(42));
        assert_eq!(parse_payload("s:42", ""), None);
        assert_eq!(parse_payload("s:42", "s:"), Some(42));
        assert_eq!(parse_payload("42", "s:"), None);
        assert_eq!(parse_payload("s2:42", "s:"), None);
        assert_eq!(parse_payload("x", ""), None);
    }
}
