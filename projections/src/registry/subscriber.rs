use std::collections::HashMap;

use crate::event::AnyEvent;
use crate::projection::{EventSubscriber, HandlerError};
use crate::storage::BoxFuture;

/// Identifies a registered subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(u64);

trait ErasedSubscriber: Send {
    fn handle<'a>(&'a mut self, event: &'a AnyEvent) -> BoxFuture<'a, Result<(), HandlerError>>;
    fn type_name(&self) -> &'static str;
}

struct SubscriberBox<S>(S);

impl<S: EventSubscriber> ErasedSubscriber for SubscriberBox<S> {
    fn handle<'a>(&'a mut self, event: &'a AnyEvent) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(self.0.handle(event))
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<S>()
    }
}

/// [`EventSubscriber`]s indexed by the event types they subscribe to; events go only to the
/// interested ones, in registration order.
///
/// Subscribers have no checkpoint, retry or dead letter: a failure is returned (the dispatch
/// methods are `#[must_use]`) and logged at `warn`, and delivery goes on to the others.
#[derive(Default)]
pub struct SubscriberRegistry {
    subscribers: Vec<(SubscriberId, Box<dyn ErasedSubscriber>)>,
    by_type: HashMap<&'static str, Vec<SubscriberId>>,
    next: u64,
}

impl SubscriberRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a subscriber.
    pub fn register<S: EventSubscriber + 'static>(&mut self, subscriber: S) -> SubscriberId {
        self.next += 1;
        let id = SubscriberId(self.next);
        for &event_type in subscriber.subscribed_to() {
            let ids = self.by_type.entry(event_type).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        self.subscribers
            .push((id, Box::new(SubscriberBox(subscriber))));
        id
    }

    /// Removes a subscriber; whether it was registered.
    pub fn unregister(&mut self, id: SubscriberId) -> bool {
        let before = self.subscribers.len();
        self.subscribers.retain(|(s, _)| *s != id);
        for ids in self.by_type.values_mut() {
            ids.retain(|s| *s != id);
        }
        self.by_type.retain(|_, ids| !ids.is_empty());
        self.subscribers.len() != before
    }

    /// The subscribers of `event_type`, in registration order.
    pub fn subscribers_for(&self, event_type: &str) -> &[SubscriberId] {
        self.by_type.get(event_type).map_or(&[], Vec::as_slice)
    }

    /// The number of subscribers.
    pub fn len(&self) -> usize {
        self.subscribers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }

    /// Delivers `event` to each interested subscriber in turn; returns each outcome. A failure
    /// is logged at `warn` (subscriber, event, error) and does not stop delivery to the
    /// others; nothing retries it.
    #[must_use = "a subscriber's failure is only reported here: look at the outcomes"]
    pub async fn dispatch(
        &mut self,
        event: &AnyEvent,
    ) -> Vec<(SubscriberId, Result<(), HandlerError>)> {
        let interested = self.subscribers_for(event.event_type()).to_vec();
        let mut results = Vec::with_capacity(interested.len());
        for id in interested {
            if let Some((_, subscriber)) = self.subscribers.iter_mut().find(|(s, _)| *s == id) {
                let result = subscriber.handle(event).await;
                if let Err(error) = &result {
                    tracing::warn!(
                        subscriber = subscriber.type_name(),
                        subscriber_id = id.0,
                        event_type = event.event_type(),
                        event_id = %event.event_id(),
                        position = event.position(),
                        %error,
                        "subscriber failed",
                    );
                }
                results.push((id, result));
            }
        }
        results
    }

    /// Delivers events in order, each only to interested subscribers; as
    /// [`dispatch`](Self::dispatch), every failure is logged and returned.
    #[must_use = "a subscriber's failure is only reported here: look at the outcomes"]
    pub async fn dispatch_many(
        &mut self,
        events: &[AnyEvent],
    ) -> Vec<(SubscriberId, Result<(), HandlerError>)> {
        let mut results = Vec::new();
        for event in events {
            results.extend(self.dispatch(event).await);
        }
        results
    }
}
