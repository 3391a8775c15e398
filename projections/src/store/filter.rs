//! What a reader wants from the store: [`ReadFilter`] (event types, aggregate types, tenants),
//! and what a filtered read gives back: [`ReadPage`].

use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

use super::{StoredEvent, UndecodableEvent};
use crate::event::{AnyEvent, EventRegistry};

/// Which tenants' events a projection sees, by
/// [`EventMetadata::tenant_id`](crate::EventMetadata::tenant_id).
///
/// Set where the projection is registered ([`Runner::tenant`](crate::runner::Runner::tenant),
/// [`RunnerBuilder::tenant`](crate::runner::RunnerBuilder::tenant)). The runner passes over
/// the events of every other tenant, whatever their type and whichever runner or handler
/// kind (transactional or not, per event or set-based): the checkpoint moves past them and
/// they count in [`BatchOutcome::other_tenant`](crate::runner::BatchOutcome::other_tenant).
/// A store that can ([`only`](Self::only) and [`one_of`](Self::one_of) on PostgreSQL, SQLite
/// and in memory) leaves them out of the read already.
///
/// Events without a tenant (system events, events written before tenants existed) are
/// another tenant too, unless [`with_untenanted`](Self::with_untenanted) lets them in.
///
/// ```
/// use projections::store::TenantFilter;
/// use uuid::Uuid;
///
/// let acme = Uuid::new_v4();
/// let only_acme = TenantFilter::only(acme);
/// assert!(only_acme.admits(Some(acme)));
/// assert!(!only_acme.admits(Some(Uuid::new_v4())));
/// assert!(!only_acme.admits(None));
/// assert!(only_acme.with_untenanted().admits(None));
///
/// // A predicate, for rules a list cannot say (evaluated in the runner, per event).
/// let even = TenantFilter::matching(|tenant: Uuid| tenant.as_u128() % 2 == 0);
/// assert!(even.admits(Some(Uuid::from_u128(4))));
/// assert!(TenantFilter::any().admits(None));
/// ```
#[derive(Clone, Default)]
pub struct TenantFilter {
    rule: TenantRule,
    untenanted: bool,
}

#[derive(Clone, Default)]
enum TenantRule {
    /// Every tenant, and events without one.
    #[default]
    Any,
    /// These tenants (sorted, no repeats).
    OneOf(Vec<Uuid>),
    /// The tenants the predicate accepts.
    Matching(Arc<dyn Fn(Uuid) -> bool + Send + Sync>),
}

impl TenantFilter {
    /// Every tenant, and events without one: no filter (the default).
    pub fn any() -> Self {
        Self::default()
    }

    /// One tenant's events.
    pub fn only(tenant: Uuid) -> Self {
        Self::one_of([tenant])
    }

    /// The events of these tenants. An empty list admits no tenant (only untenanted events,
    /// with [`with_untenanted`](Self::with_untenanted)).
    pub fn one_of(tenants: impl IntoIterator<Item = Uuid>) -> Self {
        let mut tenants: Vec<Uuid> = tenants.into_iter().collect();
        tenants.sort_unstable();
        tenants.dedup();
        Self {
            rule: TenantRule::OneOf(tenants),
            untenanted: false,
        }
    }

    /// The events of the tenants `predicate` accepts.
    ///
    /// The runner asks it once per event read, and the checkpoint moves past the events it
    /// refuses: a predicate that later changes its mind does not bring back events it
    /// refused (rebuild the projection for that). No store can evaluate it, so the store reads
    /// every tenant's events of the projection's types and the runner passes over the others;
    /// prefer [`only`](Self::only) or [`one_of`](Self::one_of) where a list will do. Lag
    /// counts the events of every tenant.
    pub fn matching(predicate: impl Fn(Uuid) -> bool + Send + Sync + 'static) -> Self {
        Self {
            rule: TenantRule::Matching(Arc::new(predicate)),
            untenanted: false,
        }
    }

    /// Lets events without a tenant in as well (they are left out by default, so that an
    /// event whose writer forgot the tenant never lands in some tenant's read model).
    #[must_use]
    pub fn with_untenanted(mut self) -> Self {
        self.untenanted = true;
        self
    }

    /// Whether this filter admits every event (it filters nothing).
    pub fn is_any(&self) -> bool {
        matches!(self.rule, TenantRule::Any)
    }

    /// Whether an event of `tenant` (`None`: without a tenant) gets through.
    #[inline]
    pub fn admits(&self, tenant: Option<Uuid>) -> bool {
        match (&self.rule, tenant) {
            (TenantRule::Any, _) => true,
            (_, None) => self.untenanted,
            (TenantRule::OneOf(tenants), Some(tenant)) => tenants.binary_search(&tenant).is_ok(),
            (TenantRule::Matching(predicate), Some(tenant)) => predicate(tenant),
        }
    }

    /// The tenants admitted, when the filter is a list a store can look up (`only`, `one_of`);
    /// `None` for [`any`](Self::any) and [`matching`](Self::matching).
    pub fn tenants(&self) -> Option<&[Uuid]> {
        match &self.rule {
            TenantRule::OneOf(tenants) => Some(tenants),
            TenantRule::Any | TenantRule::Matching(_) => None,
        }
    }

    /// Whether events without a tenant get through.
    pub fn admits_untenanted(&self) -> bool {
        self.admits(None)
    }
}

impl fmt::Debug for TenantFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            TenantRule::Any => f.write_str("TenantFilter::any()"),
            TenantRule::OneOf(tenants) => f
                .debug_struct("TenantFilter")
                .field("one_of", tenants)
                .field("untenanted", &self.untenanted)
                .finish(),
            TenantRule::Matching(_) => f
                .debug_struct("TenantFilter")
                .field("matching", &format_args!("<predicate>"))
                .field("untenanted", &self.untenanted)
                .finish(),
        }
    }
}

impl fmt::Display for TenantFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            TenantRule::Any => return f.write_str("every tenant"),
            TenantRule::OneOf(tenants) if tenants.len() == 1 => write!(f, "tenant {}", tenants[0])?,
            TenantRule::OneOf(tenants) => write!(f, "{} tenants", tenants.len())?,
            TenantRule::Matching(_) => f.write_str("tenants matching a predicate")?,
        }
        if self.untenanted {
            f.write_str(" and events without a tenant")?;
        }
        Ok(())
    }
}

/// Which events a read returns: the events of some types, or of some aggregate types, of the
/// tenants a [`TenantFilter`] admits. A projection's reads carry its own
/// ([`RegisteredProjection::read_filter`](crate::registry::RegisteredProjection::read_filter)):
/// the types it handles, the aggregate types it follows, its tenant filter.
///
/// An event is selected when its tenant is admitted, and
/// - no event types are given ([`all`](Self::all)), or
/// - its type is one of the event types, or
/// - its aggregate type is one of the aggregate types, or
/// - its type is not known to this program ([`EventRegistry::global`]): such an event may
///   concern the reader, which cannot tell (the runner then routes it through its failure
///   policy rather than pass it over silently).
///
/// ```
/// use projections::store::{ReadFilter, TenantFilter};
/// # let tenant = uuid::Uuid::new_v4();
///
/// let filter = ReadFilter::event_types(["OrderPlaced", "OrderShipped"])
///     .with_aggregate_types(["Parcel"])
///     .with_tenant(TenantFilter::only(tenant));
/// assert!(!filter.is_all());
/// assert_eq!(filter.types(), Some(&["OrderPlaced", "OrderShipped"][..]));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ReadFilter {
    /// `None`: every type.
    event_types: Option<Vec<&'static str>>,
    aggregate_types: Vec<String>,
    tenant: TenantFilter,
}

impl ReadFilter {
    /// Every event: what [`read_all`](super::EventStore::read_all) returns.
    pub fn all() -> Self {
        Self::default()
    }

    /// The events of these types (and of types unknown to this program). No types: no
    /// known type at all.
    pub fn event_types(types: impl IntoIterator<Item = &'static str>) -> Self {
        let mut list: Vec<&'static str> = Vec::new();
        for event_type in types {
            if !list.contains(&event_type) {
                list.push(event_type);
            }
        }
        Self {
            event_types: Some(list),
            ..Self::default()
        }
    }

    /// Also the events of these aggregate types, whatever their event type (for a projection
    /// that follows them: see
    /// [`Runner::follows_aggregates`](crate::runner::Runner::follows_aggregates)). Nothing
    /// changes for a filter of every type.
    #[must_use]
    pub fn with_aggregate_types<I>(mut self, aggregates: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        for aggregate in aggregates {
            let aggregate = aggregate.into();
            // An event without an aggregate type belongs to no stream anyone follows.
            if !aggregate.is_empty() && !self.aggregate_types.contains(&aggregate) {
                self.aggregate_types.push(aggregate);
            }
        }
        self
    }

    /// Only the events of the tenants `tenant` admits.
    #[must_use]
    pub fn with_tenant(mut self, tenant: TenantFilter) -> Self {
        self.tenant = tenant;
        self
    }

    /// The event types, or `None` for every type.
    pub fn types(&self) -> Option<&[&'static str]> {
        self.event_types.as_deref()
    }

    /// The aggregate types whose every event is selected.
    pub fn aggregate_types(&self) -> &[String] {
        &self.aggregate_types
    }

    /// The tenant filter.
    pub fn tenant(&self) -> &TenantFilter {
        &self.tenant
    }

    /// Whether the filter selects every event.
    pub fn is_all(&self) -> bool {
        self.event_types.is_none() && self.tenant.is_any()
    }

    /// Whether a decoded event is selected.
    pub fn selects(&self, event: &AnyEvent) -> bool {
        let metadata = event.metadata();
        self.tenant.admits(metadata.tenant_id)
            && self.selects_kind(
                event.event_type(),
                &metadata.aggregate_type,
                // It decoded, so its type is known.
                true,
            )
    }

    /// Whether a stored event is selected. One that did not decode is judged by its stored
    /// row (its tenant and aggregate type as stored).
    pub fn selects_stored(&self, stored: &StoredEvent) -> bool {
        match stored {
            StoredEvent::Event(event) => self.selects(event),
            StoredEvent::Undecodable(raw) => {
                // A tenant that cannot be read is let in: better a failure the runner reports
                // than an event passed over silently.
                stored_tenant(raw).is_none_or(|tenant| self.tenant.admits(tenant))
                    && self.selects_kind(
                        &raw.event_type,
                        raw.raw
                            .get("aggregate_type")
                            .and_then(serde_json::Value::as_str)
                            .unwrap_or_default(),
                        EventRegistry::global().contains(&raw.event_type),
                    )
            }
        }
    }

    /// Whether an event of `event_type` and `aggregate_type` is selected, tenants aside.
    fn selects_kind(&self, event_type: &str, aggregate_type: &str, known: bool) -> bool {
        let Some(types) = &self.event_types else {
            return true;
        };
        !known
            || crate::runner::is_listed(types, event_type)
            || (!aggregate_type.is_empty()
                && self.aggregate_types.iter().any(|a| a == aggregate_type))
    }

    /// The page a reader gets from an unfiltered page `events` of `read_all(after, limit)`:
    /// the selected events, read up to the last event of the page, at the head when the page
    /// was short. What the default [`read_filtered`](super::EventStore::read_filtered) does.
    pub fn page_of(&self, after: u64, limit: usize, events: Vec<StoredEvent>) -> ReadPage {
        let at_head = events.len() < limit;
        let read_to = events
            .iter()
            .filter_map(StoredEvent::position)
            .max()
            .unwrap_or(after)
            .max(after);
        let events = if self.is_all() {
            events
        } else {
            events
                .into_iter()
                .filter(|event| self.selects_stored(event))
                .collect()
        };
        ReadPage {
            events,
            read_to,
            at_head,
        }
    }
}

/// The tenant of a stored event that did not decode, from its stored row: `Some(None)` when it
/// has none, `None` when the row's tenant cannot be read.
pub(crate) fn stored_tenant(raw: &UndecodableEvent) -> Option<Option<Uuid>> {
    match raw.raw.get("tenant_id") {
        None | Some(serde_json::Value::Null) => Some(None),
        Some(serde_json::Value::String(text)) => Uuid::parse_str(text).ok().map(Some),
        Some(_) => None,
    }
}

/// What a filtered read ([`read_filtered`](super::EventStore::read_filtered)) gives back: the
/// selected events, and how far the read looked, so that a reader whose page held nothing for
/// it can still move its checkpoint on.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ReadPage {
    /// The selected events after the read's `after`, in position order, at most its `limit`.
    pub events: Vec<StoredEvent>,
    /// How far the read looked: every event the filter selects with a position above `after`
    /// and at or below `read_to` is in [`events`](Self::events), and no position at or below
    /// it can appear later (no append in flight can still fill it). A reader may move its
    /// checkpoint here once it has handled the events. At least `after`.
    pub read_to: u64,
    /// Whether the read reached the last readable position: nothing more to read for now.
    pub at_head: bool,
}

impl ReadPage {
    /// A page of `events`, read up to `read_to`.
    pub fn new(events: Vec<StoredEvent>, read_to: u64, at_head: bool) -> Self {
        Self {
            events,
            read_to,
            at_head,
        }
    }
}
