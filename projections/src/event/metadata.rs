use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Everything known about an event besides its payload.
///
/// Fresh envelopes get a new event id and correlation id, the current UTC time, aggregate
/// version 1 and no position; the store assigns the position when the event is appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventMetadata {
    /// Unique id of this event.
    pub event_id: Uuid,
    /// The wire name of the payload type.
    pub event_type: String,
    /// The schema version of the payload.
    pub event_version: u32,
    /// When the event happened (UTC).
    pub occurred_at: DateTime<Utc>,
    /// The aggregate (stream) this event belongs to.
    pub aggregate_id: Uuid,
    /// The aggregate's type, for example `"Order"`.
    pub aggregate_type: String,
    /// The aggregate's version after this event, starting at 1.
    pub aggregate_version: u64,
    /// The tenant, for multi-tenant stores.
    pub tenant_id: Option<Uuid>,
    /// Who caused the event.
    pub actor_id: Option<String>,
    /// Groups the events of one business transaction.
    pub correlation_id: Uuid,
    /// The event that caused this one.
    pub causation_id: Option<Uuid>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// The global position, once stored. Positions start at 1 and have no gaps.
    pub position: Option<u64>,
}

impl EventMetadata {
    /// Metadata for a new event of `event_type` on `aggregate_id`.
    pub fn new(
        event_type: impl Into<String>,
        event_version: u32,
        aggregate_id: Uuid,
        aggregate_type: impl Into<String>,
    ) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            event_version,
            occurred_at: Utc::now(),
            aggregate_id,
            aggregate_type: aggregate_type.into(),
            aggregate_version: 1,
            tenant_id: None,
            actor_id: None,
            correlation_id: Uuid::new_v4(),
            causation_id: None,
            metadata: BTreeMap::new(),
            position: None,
        }
    }
}
