//! What each version of a blue/green projection is doing, shared between the
//! [`BlueGreen`](super::BlueGreen) that changes it and the worker that publishes it.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// The part a version of a projection plays, as recorded in the versions ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum VersionRole {
    /// Being built beside the serving version (or caught up and waiting to be promoted):
    /// readers do not see it yet.
    Building,
    /// Readers see this version through the stable views.
    Serving,
    /// Was serving, replaced by a newer version; still kept up to date until it is retired,
    /// so promoting it again is a rollback with no rebuild.
    Replaced,
    /// Its tables and checkpoint are gone.
    Retired,
}

impl VersionRole {
    /// The word stored in the ledger.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Serving => "serving",
            Self::Replaced => "replaced",
            Self::Retired => "retired",
        }
    }

    /// The role stored as `text`, if it is one.
    #[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "building" => Some(Self::Building),
            "serving" => Some(Self::Serving),
            "replaced" => Some(Self::Replaced),
            "retired" => Some(Self::Retired),
            _ => None,
        }
    }
}

impl fmt::Display for VersionRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One version of a blue/green projection, as its worker publishes it in its
/// [`ProjectionSnapshot`](crate::coordinator::ProjectionSnapshot).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct VersionStatus {
    /// The projection's name (without the version).
    pub projection: String,
    /// The version.
    pub version: u32,
    /// Its part, as last known to this process.
    pub role: VersionRole,
    /// How far it has got through the store: its checkpoint over the store's head position
    /// when last measured, from 0 to 1; 1 once caught up. `None` until measured.
    pub progress: Option<f64>,
}

/// The version of one runner, with its role; the [`BlueGreen`](super::BlueGreen) that made
/// the runner holds the same tag and changes the role on promotion and retirement.
#[derive(Debug)]
pub(crate) struct VersionTag {
    pub(crate) projection: String,
    pub(crate) version: u32,
    role: Mutex<VersionRole>,
}

impl VersionTag {
    pub(crate) fn new(projection: &str, version: u32, role: VersionRole) -> Arc<Self> {
        Arc::new(Self {
            projection: projection.to_owned(),
            version,
            role: Mutex::new(role),
        })
    }

    pub(crate) fn role(&self) -> VersionRole {
        *self.role.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_role(&self, role: VersionRole) {
        *self.role.lock().unwrap_or_else(PoisonError::into_inner) = role;
    }

    /// The status, without progress (the worker measures that).
    pub(crate) fn status(&self) -> VersionStatus {
        VersionStatus {
            projection: self.projection.clone(),
            version: self.version,
            role: self.role(),
            progress: None,
        }
    }
}

/// The name a version's runner, worker, checkpoint and dead letters go by:
/// `orders@v2` for version 2 of `orders`.
///
/// ```
/// assert_eq!(projections::bluegreen::versioned_name("orders", 2), "orders@v2");
/// ```
pub fn versioned_name(projection: &str, version: u32) -> String {
    format!("{projection}@v{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_stored_words() {
        for role in [
            VersionRole::Building,
            VersionRole::Serving,
            VersionRole::Replaced,
            VersionRole::Retired,
        ] {
            assert_eq!(VersionRole::parse(role.as_str()), Some(role));
        }
        assert_eq!(VersionRole::parse("active"), None);
    }

    #[test]
    fn a_tag_shares_its_role() {
        let tag = VersionTag::new("orders", 2, VersionRole::Building);
        let other = Arc::clone(&tag);
        other.set_role(VersionRole::Serving);
        assert_eq!(tag.status().role, VersionRole::Serving);
        assert_eq!(tag.status().version, 2);
    }
}
