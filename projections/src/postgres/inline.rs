//! Inline projections: database projections whose handlers run inside each append's own
//! transaction, so their read model commits with the events, or neither does.

use std::sync::Arc;

use sqlx::PgConnection;

use crate::event::AnyEvent;
use crate::projection::{DatabaseProjection, HandlerError};
use crate::storage::BoxFuture;

/// A projection an append applies inside its transaction.
pub(super) trait Inline: Send + Sync {
    fn name(&self) -> &str;
    /// Applies `events` (positioned, in position order) through `conn`.
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [AnyEvent],
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
}

/// A projection run inline: cloned for each append, so appends never wait for each other
/// here (only in the database, on the rows they both write).
pub(super) struct InlineProjection<P> {
    name: String,
    projection: P,
}

impl<P: DatabaseProjection> InlineProjection<P> {
    pub(super) fn new(projection: P) -> Arc<Self> {
        Arc::new(Self {
            name: projection.name().to_owned(),
            projection,
        })
    }
}

impl<P> Inline for InlineProjection<P>
where
    P: DatabaseProjection<Connection = PgConnection> + Clone + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [AnyEvent],
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let mut projection = self.projection.clone();
            for event in events {
                if !projection
                    .subscribed_to()
                    .iter()
                    .any(|t| *t == event.event_type())
                {
                    continue;
                }
                // A panic is this append's failure, never the caller's process.
                crate::runner::panic::caught(|| projection.handle(&mut *conn, event)).await?;
            }
            Ok(())
        })
    }
}
