use std::future::Future;

use crate::event::AnyEvent;

use super::HandlerError;

/// Anything that declares the event types it wants and handles them.
pub trait EventSubscriber: Send {
    /// The wire names of the events it wants.
    fn subscribed_to(&self) -> &[&'static str];

    /// Handles one event.
    fn handle(&mut self, event: &AnyEvent)
    -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<P: super::Projection> EventSubscriber for P {
    fn subscribed_to(&self) -> &[&'static str] {
        super::Projection::subscribed_to(self)
    }

    fn handle(
        &mut self,
        event: &AnyEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        super::Projection::handle(self, event)
    }
}

/// A handler that decides per event whether it wants it (side effects such as notifications,
/// rather than read models).
pub trait EventHandler: Send {
    /// Whether this handler wants `event`.
    fn can_handle(&self, event: &AnyEvent) -> bool;

    /// Handles one event.
    fn handle(&mut self, event: &AnyEvent)
    -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// The synchronous form of [`EventHandler`].
pub trait SyncEventHandler: Send {
    /// Whether this handler wants `event`.
    fn can_handle(&self, event: &AnyEvent) -> bool;

    /// Handles one event.
    fn handle(&mut self, event: &AnyEvent) -> Result<(), HandlerError>;
}

/// An [`EventHandler`] defined by a list of event types; `can_handle` accepts exactly those.
/// Every one is an [`EventHandler`].
pub trait AsyncEventHandler: Send {
    /// The wire names this handler wants.
    fn event_types(&self) -> &[&'static str];

    /// Whether this handler wants `event`: by default, whether its type is listed.
    fn can_handle(&self, event: &AnyEvent) -> bool {
        self.event_types().contains(&event.event_type())
    }

    /// Handles one event.
    fn handle(&mut self, event: &AnyEvent)
    -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<H: AsyncEventHandler> EventHandler for H {
    fn can_handle(&self, event: &AnyEvent) -> bool {
        AsyncEventHandler::can_handle(self, event)
    }

    fn handle(
        &mut self,
        event: &AnyEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        AsyncEventHandler::handle(self, event)
    }
}
