//! The typed model of one `#[projection]` impl block.

use syn::{Ident, LitStr, ReturnType, Type};

/// What to do with an event that has no handler.
#[derive(Clone, Copy, Default)]
pub enum Policy {
    #[default]
    Ignore,
    Warn,
    Error,
}

/// The attribute's arguments, as written.
#[derive(Default)]
pub struct Args {
    pub name: Option<LitStr>,
    pub policy: Policy,
    pub sync: bool,
    /// `version = N`: the read model's version, at least 1.
    pub version: Option<u32>,
}

/// A method carrying `#[handles(..)]` or `#[reset]`, before its signature is checked.
pub struct MarkedMethod {
    pub sig: syn::Signature,
    pub role: Role,
}

pub enum Role {
    /// `#[handles(E)]` or `#[handles(E, live_only)]`.
    Handles {
        event: Box<Type>,
        /// The `live_only` argument, where it is written.
        live_only: Option<Ident>,
    },
    Reset,
}

/// A validated handler.
pub struct Handler {
    pub method: Ident,
    pub event: Type,
    /// The type of the event parameter as written: `&Envelope<E>` under any spelling the type
    /// system accepts (an alias, a renamed import), checked by a trait where it is written.
    pub event_param: Type,
    /// The connection type `C` of a `conn: &mut C` parameter.
    pub connection: Option<Type>,
    pub output: ReturnType,
    /// Takes the run of consecutive events of its type as a slice, `&[Envelope<E>]`.
    pub set_based: bool,
    /// `#[handles(E, live_only)]`: runs for live events only, never during a replay.
    pub live_only: bool,
}

/// A validated `#[reset]` method.
pub struct Reset {
    pub method: Ident,
    pub connection: Option<Type>,
    pub output: ReturnType,
}

/// A validated projection.
pub struct Model {
    pub name: String,
    pub policy: Policy,
    pub sync: bool,
    pub version: Option<u32>,
    pub handlers: Vec<Handler>,
    pub reset: Option<Reset>,
}

impl Model {
    /// The handlers that take a slice of events.
    pub fn set_handlers(&self) -> impl Iterator<Item = &Handler> {
        self.handlers.iter().filter(|h| h.set_based)
    }

    /// The connection type of the first handler that takes one.
    pub fn connection(&self) -> Option<&Type> {
        self.handlers
            .iter()
            .filter_map(|h| h.connection.as_ref())
            .chain(self.reset.as_ref().and_then(|r| r.connection.as_ref()))
            .next()
    }
}
