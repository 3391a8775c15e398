//! Upcasting: stored events of an older version of a type, brought to its current shape one
//! version at a time before they decode.
//!
//! An upcaster is a function marked [`#[upcast(Event, from = N)]`](macro@crate::upcast): it
//! takes the payload of version `N` and gives the payload of version `N + 1`, either as JSON
//! (`serde_json::Value` in and out, for renamed or moved fields without keeping the old
//! struct) or typed (an old struct in, the next one out). The attribute registers it at
//! compile time, like `#[derive(Event)]` registers the event; decoding chains the upcasters
//! from the stored version to the current one.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Event;
use crate::projection::BoxError;

/// One step from version `from` to `from + 1` of an event type; `#[upcast]` submits one per
/// function. Build one by hand with [`Upcaster::new`] for a registry made with
/// [`EventRegistry::new`](super::EventRegistry::new).
#[derive(Clone, Copy)]
pub struct Upcaster {
    pub(super) event_type: &'static str,
    pub(super) current: u32,
    pub(super) from: u32,
    pub(super) name: &'static str,
    pub(super) apply: fn(Value) -> Result<Value, BoxError>,
}

impl Upcaster {
    /// The step of `E`'s payload from version `from` to `from + 1`, named `name` in errors.
    pub const fn new<E: Event>(
        from: u32,
        name: &'static str,
        apply: fn(Value) -> Result<Value, BoxError>,
    ) -> Self {
        Self {
            event_type: E::EVENT_TYPE,
            current: E::EVENT_VERSION,
            from,
            name,
            apply,
        }
    }

    /// What `#[upcast]` generates: the step of the type named `event_type`, at version
    /// `current`, from version `from`.
    #[doc(hidden)]
    pub const fn from_parts(
        event_type: &'static str,
        current: u32,
        from: u32,
        name: &'static str,
        apply: fn(Value) -> Result<Value, BoxError>,
    ) -> Self {
        Self {
            event_type,
            current,
            from,
            name,
            apply,
        }
    }

    /// The wire name of the event type.
    pub fn event_type(&self) -> &'static str {
        self.event_type
    }

    /// The version it reads.
    pub fn from(&self) -> u32 {
        self.from
    }

    /// Its name (the function's path).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl fmt::Debug for Upcaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upcaster")
            .field("event_type", &self.event_type)
            .field("from", &self.from)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

inventory::collect!(Upcaster);

/// The upcasters of one event type are wrong: found at start-up, before any event is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpcasterError {
    /// Versions below the current one have upcasters, but the chain breaks: stored events of
    /// the versions before the gap can never reach the current shape.
    #[error(
        "event type `{event_type}` is at version {current} and has upcasters from version \
         {lowest}, but none from version {missing} to {}: add `#[upcast({event_type}, from = \
         {missing})]`",
        missing + 1
    )]
    Gap {
        /// The wire name.
        event_type: &'static str,
        /// Its current version.
        current: u32,
        /// The lowest version an upcaster reads.
        lowest: u32,
        /// The version no upcaster reads.
        missing: u32,
    },
    /// Two upcasters read the same version of one type.
    #[error(
        "event type `{event_type}` has two upcasters from version {from}: {}",
        names.join(" and ")
    )]
    Duplicate {
        /// The wire name.
        event_type: &'static str,
        /// The version both read.
        from: u32,
        /// Their names.
        names: Vec<&'static str>,
    },
    /// An upcaster reads a version that is not older than the type's current one.
    #[error(
        "upcaster {name} reads version {from} of `{event_type}`, whose current version is \
         {current}: an upcaster reads an older version"
    )]
    NotOlder {
        /// The wire name.
        event_type: &'static str,
        /// The upcaster.
        name: &'static str,
        /// The version it reads.
        from: u32,
        /// The type's current version.
        current: u32,
    },
}

/// The upcasters of every event type, by wire name, then by the version they read.
#[derive(Debug, Default)]
pub(super) struct Upcasters {
    by_type: BTreeMap<&'static str, BTreeMap<u32, Vec<Upcaster>>>,
}

impl Upcasters {
    pub(super) fn insert(&mut self, upcaster: Upcaster) {
        let steps = self
            .by_type
            .entry(upcaster.event_type)
            .or_default()
            .entry(upcaster.from)
            .or_default();
        // One function submitted twice (a registry filled by hand and from the program) is
        // one upcaster: names are full paths.
        if !steps.iter().any(|s| s.name == upcaster.name) {
            steps.push(upcaster);
        }
    }

    /// Every problem, in wire-name order.
    pub(super) fn problems(&self) -> Vec<UpcasterError> {
        let mut problems = Vec::new();
        for (&event_type, steps) in &self.by_type {
            for (&from, upcasters) in steps {
                if upcasters.len() > 1 {
                    let mut names: Vec<_> = upcasters.iter().map(|u| u.name).collect();
                    names.sort_unstable();
                    problems.push(UpcasterError::Duplicate {
                        event_type,
                        from,
                        names,
                    });
                }
                for upcaster in upcasters.iter().filter(|u| u.from >= u.current) {
                    problems.push(UpcasterError::NotOlder {
                        event_type,
                        name: upcaster.name,
                        from,
                        current: upcaster.current,
                    });
                }
            }
            let Some((&lowest, first)) = steps.first_key_value() else {
                continue;
            };
            let current = first.first().map_or(lowest, |u| u.current);
            if let Some(missing) = (lowest..current).find(|v| !steps.contains_key(v)) {
                problems.push(UpcasterError::Gap {
                    event_type,
                    current,
                    lowest,
                    missing,
                });
            }
        }
        problems
    }

    /// Whether `event_type` has any upcaster.
    pub(super) fn declares(&self, event_type: &str) -> bool {
        self.by_type.contains_key(event_type)
    }

    /// The versions of `event_type` below `current` that reach it, sorted.
    pub(super) fn readable(&self, event_type: &str, current: u32) -> Vec<u32> {
        let Some(steps) = self.by_type.get(event_type) else {
            return Vec::new();
        };
        let mut versions: Vec<u32> = Vec::new();
        let mut version = current;
        while version > 0 && steps.contains_key(&(version - 1)) {
            version -= 1;
            versions.push(version);
        }
        versions.reverse();
        versions
    }

    /// The step that reads `version` of `event_type`, if there is exactly one.
    pub(super) fn step(&self, event_type: &str, version: u32) -> Option<&Upcaster> {
        match self.by_type.get(event_type)?.get(&version)?.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// What `#[upcast]` generates for a typed upcaster: the payload decoded as `Old`, converted,
/// encoded again.
#[doc(hidden)]
pub fn typed_step<Old, New, E>(
    payload: Value,
    convert: impl FnOnce(Old) -> Result<New, E>,
) -> Result<Value, BoxError>
where
    Old: DeserializeOwned,
    New: Serialize,
    E: Into<BoxError>,
{
    let old: Old = serde_json::from_value(payload)?;
    let new = convert(old).map_err(Into::into)?;
    Ok(serde_json::to_value(new)?)
}

/// What `#[upcast]` generates for a JSON upcaster.
#[doc(hidden)]
pub fn json_step<E: Into<BoxError>>(
    payload: Value,
    convert: impl FnOnce(Value) -> Result<Value, E>,
) -> Result<Value, BoxError> {
    convert(payload).map_err(Into::into)
}
