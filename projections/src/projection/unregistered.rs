use crate::event::AnyEvent;

use super::{HandlerError, UnhandledEventError};

/// What a projection does with an event it has no handler for
/// (`#[projection(unregistered = ...)]`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum UnregisteredEventPolicy {
    /// Skip it silently (the default).
    #[default]
    Ignore,
    /// Skip it with a `tracing` warning naming the event type, the projection and the handled
    /// types.
    Warn,
    /// Fail with [`HandlerError::Unhandled`].
    Error,
}

impl UnregisteredEventPolicy {
    /// Applies the policy to `event`, which `projection` (handling `handled`) has no handler
    /// for.
    #[cold]
    pub fn apply(
        self,
        projection: &str,
        handled: &'static [&'static str],
        event: &AnyEvent,
    ) -> Result<(), HandlerError> {
        match self {
            Self::Ignore => Ok(()),
            Self::Warn => {
                tracing::warn!(
                    event_type = event.event_type(),
                    event_id = %event.event_id(),
                    projection,
                    handled_types = ?handled,
                    "projection `{projection}` has no handler for event type `{}`; it handles {handled:?}",
                    event.event_type(),
                );
                Ok(())
            }
            Self::Error => Err(HandlerError::from(UnhandledEventError {
                event_type: event.event_type().to_owned(),
                event_id: event.event_id(),
                projection: projection.to_owned(),
                handled_types: handled.to_vec(),
            })),
        }
    }
}
