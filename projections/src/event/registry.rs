use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use super::upcast::{Upcaster, UpcasterError, Upcasters};
use super::{AnyEvent, Envelope, Event, EventMetadata};

/// How one event type decodes; `#[derive(Event)]` submits one per type.
#[derive(Clone, Copy)]
pub struct EventRegistration {
    /// The wire name.
    pub event_type: &'static str,
    /// The Rust path of the type, for error messages.
    pub type_name: &'static str,
    /// The current version of its payload; older stored versions are upcast to it.
    pub version: u32,
    // The identity of the type, and its full path for conflict reports: `type_name` is not
    // unique for types declared inside functions.
    type_id: fn() -> TypeId,
    full_type_name: fn() -> &'static str,
    decode_value: fn(EventMetadata, &serde_json::Value) -> Result<AnyEvent, serde_json::Error>,
    decode_str: fn(EventMetadata, &str) -> Result<AnyEvent, serde_json::Error>,
}

impl EventRegistration {
    /// The registration of `E`, named `type_name` in error messages.
    pub const fn of<E: Event>(type_name: &'static str) -> Self {
        Self {
            event_type: E::EVENT_TYPE,
            type_name,
            version: E::EVENT_VERSION,
            type_id: TypeId::of::<E>,
            full_type_name: std::any::type_name::<E>,
            decode_value: decode_value::<E>,
            decode_str: decode_str::<E>,
        }
    }
}

impl fmt::Debug for EventRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRegistration")
            .field("event_type", &self.event_type)
            .field("type_name", &self.type_name)
            .finish_non_exhaustive()
    }
}

fn decode_value<E: Event>(
    metadata: EventMetadata,
    payload: &serde_json::Value,
) -> Result<AnyEvent, serde_json::Error> {
    let payload = E::deserialize(payload)?;
    Ok(AnyEvent::new(Envelope::from_parts(metadata, payload)))
}

fn decode_str<E: Event>(
    metadata: EventMetadata,
    payload: &str,
) -> Result<AnyEvent, serde_json::Error> {
    let payload: E = serde_json::from_str(payload)?;
    Ok(AnyEvent::new(Envelope::from_parts(metadata, payload)))
}

inventory::collect!(EventRegistration);

/// Two Rust types claim one wire name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "event type `{event_type}` is claimed by several types: {}; give each its own `#[event(name = \"...\")]`",
    types.join(", ")
)]
#[non_exhaustive]
pub struct RegistryError {
    /// The contested wire name.
    pub event_type: String,
    /// The Rust types that claim it.
    pub types: Vec<&'static str>,
}

/// A stored event could not be decoded to its Rust type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No type is registered under this wire name.
    #[error("unknown event type `{event_type}`; known event types: {}", known.join(", "))]
    UnknownEventType {
        /// The wire name found in the store.
        event_type: String,
        /// Every registered wire name, sorted.
        known: Vec<&'static str>,
    },
    /// Several types claim this wire name, so which one to decode to is undecidable.
    #[error(transparent)]
    Ambiguous(#[from] RegistryError),
    /// The stored version is older than the type's current one and no chain of upcasters
    /// leads from it to the current version.
    #[error(
        "`{event_type}` version {stored} cannot be read as {type_name} (version {current}): {}",
        if readable.is_empty() {
            "no upcaster reads any older version".to_owned()
        } else {
            format!(
                "upcasters read versions {} only",
                readable.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            )
        }
    )]
    NoUpcastPath {
        /// The wire name.
        event_type: String,
        /// The Rust type it should decode to.
        type_name: &'static str,
        /// The version stored.
        stored: u32,
        /// The type's current version.
        current: u32,
        /// The older versions that upcast to the current one.
        readable: Vec<u32>,
    },
    /// An upcaster failed on this event's payload.
    #[error("upcaster {upcaster} failed on `{event_type}` version {from}: {source}")]
    Upcast {
        /// The wire name.
        event_type: String,
        /// The version it read.
        from: u32,
        /// The upcaster.
        upcaster: &'static str,
        /// What it reported.
        #[source]
        source: crate::projection::BoxError,
    },
    /// The payload does not match the registered type.
    #[error("payload of `{event_type}` does not decode as {type_name}: {source}")]
    Payload {
        /// The wire name.
        event_type: String,
        /// The Rust type it should decode to.
        type_name: &'static str,
        /// What serde reported.
        #[source]
        source: serde_json::Error,
    },
}

/// Maps wire names to decoders.
///
/// [`EventRegistry::global`] holds every type declared with `#[derive(Event)]` in the program;
/// [`EventRegistry::new`] plus [`EventRegistry::register`] builds a registry by hand, for tests
/// or to restrict what a reader accepts.
///
/// ```
/// # use projections::{Event, EventMetadata, EventRegistry};
/// # use serde::{Deserialize, Serialize};
/// #[derive(Clone, Serialize, Deserialize, Event)]
/// struct AccountOpened { owner: String }
///
/// let registry = EventRegistry::global();
/// let metadata = EventMetadata::new("AccountOpened", 1, uuid::Uuid::nil(), "Account");
/// let event = registry
///     .decode(metadata, &serde_json::json!({ "owner": "ada" }))
///     .unwrap();
/// assert_eq!(event.downcast::<AccountOpened>().unwrap().owner, "ada");
/// ```
#[derive(Debug, Default)]
pub struct EventRegistry {
    by_name: HashMap<&'static str, EventRegistration>,
    /// Contested wire names and their claimants, sorted by full type name.
    conflicts: HashMap<&'static str, Vec<EventRegistration>>,
    upcasters: Upcasters,
}

impl EventRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event type of the program, collected from `#[derive(Event)]`.
    pub fn global() -> &'static EventRegistry {
        static GLOBAL: OnceLock<EventRegistry> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let mut registry = EventRegistry::new();
            for registration in inventory::iter::<EventRegistration> {
                registry.insert(*registration);
            }
            for upcaster in inventory::iter::<Upcaster> {
                registry.upcasters.insert(*upcaster);
            }
            registry
        })
    }

    /// Registers `E`. Registering one type twice is harmless; a second type under a taken
    /// wire name is an error, and the name stays unusable until the conflict is fixed.
    pub fn register<E: Event>(&mut self) -> Result<(), RegistryError> {
        self.insert(EventRegistration::of::<E>(std::any::type_name::<E>()));
        self.check_name(E::EVENT_TYPE)
    }

    /// Adds an upcaster (the [global](Self::global) registry has every `#[upcast]` function
    /// of the program). Problems show in [`check_upcasters`](Self::check_upcasters).
    pub fn register_upcaster(&mut self, upcaster: Upcaster) {
        self.upcasters.insert(upcaster);
    }

    /// Fails with the first problem of the upcasters (in wire-name order): a gap in a chain,
    /// two upcasters of one version, an upcaster of a version that is not older than the
    /// current one. The coordinator and every runner call it on the [global](Self::global)
    /// registry before they start, and refuse to run when it fails: a missing upcaster is
    /// reported before any event is read.
    pub fn check_upcasters(&self) -> Result<(), UpcasterError> {
        match self.upcasters.problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// [`check_upcasters`](Self::check_upcasters) of the [global](Self::global) registry,
    /// computed once; every problem is logged at `error`.
    pub(crate) fn check_global_upcasters() -> Result<(), &'static UpcasterError> {
        static CHECKED: OnceLock<Result<(), UpcasterError>> = OnceLock::new();
        let checked = CHECKED.get_or_init(|| {
            let problems = Self::global().upcasters.problems();
            for problem in &problems {
                tracing::error!("{problem}; projections refuse to run until it is fixed");
            }
            match problems.into_iter().next() {
                Some(first) => Err(first),
                None => Ok(()),
            }
        });
        match checked {
            Ok(()) => Ok(()),
            Err(problem) => Err(problem),
        }
    }

    /// Whether a payload stored as `version` goes through upcasters: it is older than the
    /// current version and the type has upcasters. A type with none decodes every version
    /// directly, as before upcasting existed: its changes are additive (ADR 0005).
    fn needs_upcast(&self, registration: &EventRegistration, version: u32) -> bool {
        version < registration.version && self.upcasters.declares(registration.event_type)
    }

    /// `payload`, stored as `version` of `registration`'s type, brought to its current
    /// version through the chain of upcasters.
    fn upcast(
        &self,
        registration: &EventRegistration,
        version: u32,
        mut payload: serde_json::Value,
    ) -> Result<serde_json::Value, DecodeError> {
        let event_type = registration.event_type;
        let no_path = || DecodeError::NoUpcastPath {
            event_type: event_type.to_owned(),
            type_name: registration.type_name,
            stored: version,
            current: registration.version,
            readable: self.upcasters.readable(event_type, registration.version),
        };
        let mut at = version;
        while at < registration.version {
            let step = self.upcasters.step(event_type, at).ok_or_else(no_path)?;
            // An upcaster is user code: its panic makes this event undecodable (dead-lettered
            // or stopped before, per policy), never the reader's or the process's end.
            let apply = step.apply;
            let applied =
                std::panic::catch_unwind(move || apply(payload)).unwrap_or_else(|panic| {
                    let message = crate::failure::panic_message(panic.as_ref());
                    Err(format!("panicked: {message}").into())
                });
            payload = applied.map_err(|source| DecodeError::Upcast {
                event_type: event_type.to_owned(),
                from: at,
                upcaster: step.name,
                source,
            })?;
            at += 1;
        }
        Ok(payload)
    }

    fn insert(&mut self, registration: EventRegistration) {
        let name = registration.event_type;
        let same_type = |other: &EventRegistration| (other.type_id)() == (registration.type_id)();
        if let Some(claimants) = self.conflicts.get_mut(name) {
            if !claimants.iter().any(same_type) {
                claimants.push(registration);
                claimants.sort_by_key(|c| (c.full_type_name)());
            }
            return;
        }
        match self.by_name.get(name) {
            Some(existing) if !same_type(existing) => {
                let mut claimants = vec![*existing, registration];
                claimants.sort_by_key(|c| (c.full_type_name)());
                self.by_name.remove(name);
                self.conflicts.insert(name, claimants);
            }
            Some(_) => {}
            None => {
                self.by_name.insert(name, registration);
            }
        }
    }

    fn check_name(&self, name: &str) -> Result<(), RegistryError> {
        match self.conflicts.get(name) {
            Some(claimants) => Err(RegistryError {
                event_type: name.to_owned(),
                types: claimants.iter().map(|c| (c.full_type_name)()).collect(),
            }),
            None => Ok(()),
        }
    }

    /// Fails with the first wire name (in sorted order) claimed by several types. The
    /// coordinator and every runner call it on the [global](Self::global) registry before
    /// they start, and refuse to run when it fails.
    pub fn check(&self) -> Result<(), RegistryError> {
        match self.conflicts().into_iter().next() {
            Some(conflict) => Err(conflict),
            None => Ok(()),
        }
    }

    /// Every wire name claimed by several types, with its claimants, sorted by wire name.
    pub fn conflicts(&self) -> Vec<RegistryError> {
        let mut names: Vec<_> = self.conflicts.keys().copied().collect();
        names.sort_unstable();
        names
            .into_iter()
            .filter_map(|name| self.check_name(name).err())
            .collect()
    }

    /// Whether `event_type` decodes.
    pub fn contains(&self, event_type: &str) -> bool {
        self.by_name.contains_key(event_type)
    }

    /// The registered wire names, sorted.
    pub fn event_types(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.by_name.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// The number of usable wire names.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no wire name is registered.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// [`check`](Self::check) of the [global](Self::global) registry, computed once; the first
    /// failure is logged at `error` with every conflict.
    pub(crate) fn check_global() -> Result<(), &'static RegistryError> {
        static CHECKED: OnceLock<Result<(), RegistryError>> = OnceLock::new();
        let checked = CHECKED.get_or_init(|| {
            let conflicts = Self::global().conflicts();
            for conflict in &conflicts {
                tracing::error!(
                    event_type = %conflict.event_type,
                    types = ?conflict.types,
                    "{conflict}; projections refuse to run until it is fixed",
                );
            }
            match conflicts.into_iter().next() {
                Some(first) => Err(first),
                None => Ok(()),
            }
        });
        match checked {
            Ok(()) => Ok(()),
            Err(conflict) => Err(conflict),
        }
    }

    fn lookup(&self, event_type: &str) -> Result<&EventRegistration, DecodeError> {
        if let Some(registration) = self.by_name.get(event_type) {
            return Ok(registration);
        }
        self.check_name(event_type)?;
        Err(DecodeError::UnknownEventType {
            event_type: event_type.to_owned(),
            known: self.event_types(),
        })
    }

    /// Decodes a payload held as a JSON value; the wire name is `metadata.event_type`.
    ///
    /// A payload stored at an older version (`metadata.event_version`) than the type's
    /// current one goes through the type's upcasters first, and the event's metadata then
    /// carries the current version; a type that declares no upcaster decodes older versions
    /// directly (its changes are additive: new fields have defaults). A newer stored version
    /// decodes as the current type (fields this build does not know are ignored, see
    /// [`Event`]).
    pub fn decode(
        &self,
        mut metadata: EventMetadata,
        payload: &serde_json::Value,
    ) -> Result<AnyEvent, DecodeError> {
        let registration = self.lookup(&metadata.event_type)?;
        // The registered wire name is the metadata's (it was looked up by it): named only
        // when decoding fails, rather than copied for every event.
        let payload_error = |source| DecodeError::Payload {
            event_type: registration.event_type.to_owned(),
            type_name: registration.type_name,
            source,
        };
        if !self.needs_upcast(registration, metadata.event_version) {
            return (registration.decode_value)(metadata, payload).map_err(payload_error);
        }
        let current = self.upcast(registration, metadata.event_version, payload.clone())?;
        metadata.event_version = registration.version;
        (registration.decode_value)(metadata, &current).map_err(payload_error)
    }

    /// Decodes a payload held as JSON text; the wire name is `metadata.event_type`. Older
    /// versions are upcast as in [`decode`](Self::decode).
    pub fn decode_str(
        &self,
        mut metadata: EventMetadata,
        payload: &str,
    ) -> Result<AnyEvent, DecodeError> {
        let registration = self.lookup(&metadata.event_type)?;
        // The registered wire name is the metadata's (it was looked up by it): named only
        // when decoding fails, rather than copied for every event.
        let payload_error = |source| DecodeError::Payload {
            event_type: registration.event_type.to_owned(),
            type_name: registration.type_name,
            source,
        };
        if !self.needs_upcast(registration, metadata.event_version) {
            return (registration.decode_str)(metadata, payload).map_err(payload_error);
        }
        let stored: serde_json::Value = serde_json::from_str(payload).map_err(payload_error)?;
        let current = self.upcast(registration, metadata.event_version, stored)?;
        metadata.event_version = registration.version;
        (registration.decode_value)(metadata, &current).map_err(payload_error)
    }
}
