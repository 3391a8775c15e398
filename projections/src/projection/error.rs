use uuid::Uuid;

use crate::failure::FailureKind;

/// Any error, boxed; what handler errors are converted to.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a projection did not apply an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The handler returned an error.
    #[error("{0}")]
    Failed(#[source] BoxError),
    /// The projection has no handler for the event and its policy is `error`. Boxed, so that
    /// the `Result` every handler returns stays small on the hot path.
    #[error(transparent)]
    Unhandled(Box<UnhandledEventError>),
    /// The handler said the event is bad ([`HandlerError::event`]).
    #[error("{0}")]
    Rejected(#[source] BoxError),
    /// The handler said the infrastructure is failing ([`HandlerError::infrastructure`]).
    #[error("{0}")]
    Infrastructure(#[source] BoxError),
    /// The handler said the setup is wrong ([`HandlerError::setup`]).
    #[error("{0}")]
    Setup(#[source] BoxError),
    /// The handler panicked; the panic's message. A failure of the event, like any other.
    #[error("handler panicked: {0}")]
    Panicked(String),
}

impl HandlerError {
    /// Wraps any error.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self::Failed(error.into())
    }

    /// An error that is the event's fault, whatever it is made of: retried, then
    /// dead-lettered or stopped at ([`FailureKind::Event`]).
    pub fn event(error: impl Into<BoxError>) -> Self {
        Self::Rejected(error.into())
    }

    /// An error of the infrastructure (a broker or service away, a connection lost): never
    /// dead-lettered, retried until it clears ([`FailureKind::Infrastructure`]).
    pub fn infrastructure(error: impl Into<BoxError>) -> Self {
        Self::Infrastructure(error.into())
    }

    /// An error of the setup (a missing table, a permission): the projection stops until an
    /// operator resumes it ([`FailureKind::Setup`]).
    pub fn setup(error: impl Into<BoxError>) -> Self {
        Self::Setup(error.into())
    }

    /// Whose fault this error is: the kind it was built with, else what
    /// [`classify`](crate::failure::classify) finds in its source chain.
    pub fn kind(&self) -> FailureKind {
        match self.stated_kind() {
            Some(kind) => kind,
            None => crate::failure::classify(self.inner()),
        }
    }

    /// The kind this error was built with, if any.
    pub(crate) fn stated_kind(&self) -> Option<FailureKind> {
        match self {
            Self::Rejected(_) | Self::Panicked(_) | Self::Unhandled(_) => Some(FailureKind::Event),
            Self::Infrastructure(_) => Some(FailureKind::Infrastructure),
            Self::Setup(_) => Some(FailureKind::Setup),
            Self::Failed(_) => None,
        }
    }

    /// The error this one wraps (itself for a panic).
    fn inner(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            Self::Failed(inner)
            | Self::Rejected(inner)
            | Self::Infrastructure(inner)
            | Self::Setup(inner) => inner.as_ref(),
            Self::Unhandled(inner) => &**inner,
            Self::Panicked(_) => self,
        }
    }

    /// Whether this error, or one in its source chain, is an `E`.
    pub fn is<E: std::error::Error + 'static>(&self) -> bool {
        self.find::<E>().is_some()
    }

    /// The first error of type `E` in this error's chain.
    pub fn find<E: std::error::Error + 'static>(&self) -> Option<&E> {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(self.inner());
        while let Some(error) = current {
            if let Some(found) = error.downcast_ref::<E>() {
                return Some(found);
            }
            current = error.source();
        }
        None
    }
}

impl From<UnhandledEventError> for HandlerError {
    fn from(error: UnhandledEventError) -> Self {
        Self::Unhandled(Box::new(error))
    }
}

/// An event reached a projection that has no handler for it, under the `error` policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "projection `{projection}` has no handler for event `{event_type}` ({event_id}); it handles {handled_types:?}"
)]
#[non_exhaustive]
pub struct UnhandledEventError {
    /// The wire name of the event.
    pub event_type: String,
    /// The event's id.
    pub event_id: Uuid,
    /// The projection's name.
    pub projection: String,
    /// The wire names the projection handles.
    pub handled_types: Vec<&'static str>,
}

/// What a handler may return: `()` or `Result<(), E>` for any error `E` that converts into a
/// [`BoxError`] (every `std::error::Error + Send + Sync`, `anyhow::Error`, `String`, ...).
#[diagnostic::on_unimplemented(
    message = "a projection handler must return `()` or `Result<(), E>`, not `{Self}`",
    label = "unsupported return type",
    note = "`E` may be any error that converts into `Box<dyn std::error::Error + Send + Sync>`"
)]
pub trait IntoHandlerResult {
    /// Converts into the runner's result.
    fn into_handler_result(self) -> Result<(), HandlerError>;
}

// `do_not_recommend` on both impls: a wrong return type is reported with the trait's own
// message, at the user's return type, instead of a list of these impls or a note about
// `Into<BoxError>` that points into this file.
#[diagnostic::do_not_recommend]
impl IntoHandlerResult for () {
    #[inline]
    fn into_handler_result(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[diagnostic::do_not_recommend]
impl<E: Into<BoxError>> IntoHandlerResult for Result<(), E> {
    #[inline]
    fn into_handler_result(self) -> Result<(), HandlerError> {
        self.map_err(|error| HandlerError::Failed(error.into()))
    }
}
