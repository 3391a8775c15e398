//! The statements of filtered reads and backlogs ([`ReadFilter`]), built per filter.
//!
//! A read takes one of two shapes:
//!
//! - **by type** (a filter of event types, perhaps of tenants): one ordered scan of the type
//!   index per event type (of the tenant index of migration 10 per tenant and type, when the
//!   filter lists a few tenants), merged in position order under the page's `LIMIT`.
//!   PostgreSQL pulls from each scan only as far as the page goes (a `Merge Append`), so a
//!   projection of one type in twenty reads its own rows and no others. Stored types that this
//!   program does not know are read the same way, as if the filter listed them.
//! - **by position** (every type, for a tenant; or aggregate types to follow; or too many
//!   tenant and type pairs): one scan of the primary key with the filter as a condition. The
//!   database reads the rows it passes over, but none is sent or decoded.
//!
//! Both read positions above `$1` and below `$2` (the read horizon, or the end of the read's
//! window), at most `$3` rows. The store runs them as unnamed statements, planned afresh with
//! the page's bounds: a generic plan, which cannot see how wide `$1 .. $2` is, takes the range
//! for a narrow one and scans the primary key instead of the type index.
//!
//! A range no wider than a page (a live read) is read by position with a prepared statement
//! ([`read_narrow`]), the types this program does not know selected by its condition: no more
//! round trips than `read_all`.

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use uuid::Uuid;

use crate::event::EventRegistry;
use crate::store::ReadFilter;

/// More tenant and type pairs than this read by position.
const MAX_SCANS: usize = 64;

/// A value bound after `$1`..`$3`.
#[derive(Debug)]
enum Bind {
    Text(String),
    Texts(Vec<String>),
    Tenant(Uuid),
    Tenants(Vec<Uuid>),
}

/// A statement and what it binds after its first parameters.
#[derive(Debug)]
pub(super) struct Statement {
    pub(super) sql: String,
    /// Whether it has conditions that no index bounds, so that it may scan every row it passes
    /// over: the reader then bounds `$2` by a window of positions.
    pub(super) windowed: bool,
    binds: Vec<Bind>,
}

impl Statement {
    fn new() -> Self {
        Self {
            sql: String::new(),
            windowed: true,
            binds: Vec::new(),
        }
    }

    /// Binds `value` as the next parameter and returns its placeholder, counting `first`
    /// parameters bound before.
    fn param(&mut self, first: usize, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", first + self.binds.len())
    }

    /// `query` (with its first parameters bound) with the rest bound.
    pub(super) fn bind<'q>(
        &'q self,
        mut query: Query<'q, sqlx::Postgres, PgArguments>,
    ) -> Query<'q, sqlx::Postgres, PgArguments> {
        for bind in &self.binds {
            query = match bind {
                Bind::Text(text) => query.bind(text.as_str()),
                Bind::Texts(texts) => query.bind(texts.as_slice()),
                Bind::Tenant(tenant) => query.bind(*tenant),
                Bind::Tenants(tenants) => query.bind(tenants.as_slice()),
            };
        }
        query
    }
}

/// The tenant condition of `filter` as SQL on column `tenant_id`, binding what it needs;
/// `None` for every tenant. Of a predicate, only whether events without a tenant are in.
fn tenant_condition(
    statement: &mut Statement,
    first: usize,
    filter: &ReadFilter,
) -> Option<String> {
    let untenanted = filter.tenant().admits_untenanted();
    let Some(tenants) = filter.tenant().tenants() else {
        return (!untenanted).then(|| "tenant_id IS NOT NULL".to_owned());
    };
    let listed = if tenants.is_empty() {
        "false".to_owned()
    } else {
        let param = statement.param(first, Bind::Tenants(tenants.to_vec()));
        format!("tenant_id = ANY({param}::uuid[])")
    };
    Some(if untenanted {
        format!("({listed} OR tenant_id IS NULL)")
    } else {
        listed
    })
}

/// The statement of a filtered page of `events` (qualified table name), returning
/// `columns`, with `$1` (after), `$2` (before) and `$3` (limit) bound by the caller. `unknown`:
/// stored types this program does not know, read as if the filter listed them.
pub(super) fn read(
    events: &str,
    columns: &str,
    filter: &ReadFilter,
    unknown: &[String],
) -> Statement {
    const FIRST: usize = 3;
    let mut statement = Statement::new();
    let range = "position > $1 AND position < $2";
    let Some(listed) = filter.types() else {
        // Every type, perhaps of some tenants.
        let tenant = tenant_condition(&mut statement, FIRST, filter)
            .map(|condition| format!(" AND {condition}"))
            .unwrap_or_default();
        statement.sql = format!(
            "SELECT {columns} FROM {events} WHERE {range}{tenant} ORDER BY position LIMIT $3"
        );
        return statement;
    };
    let types: Vec<&str> = listed
        .iter()
        .copied()
        .chain(unknown.iter().map(String::as_str))
        .collect();
    let tenants = filter.tenant().tenants();
    let pairs = types.len()
        * tenants.map_or(1, |t| {
            t.len() + usize::from(filter.tenant().admits_untenanted())
        });
    // No scan at all (no type, or an empty list of tenants): the scan by position selects
    // nothing, and still reads to the end of the window.
    if !filter.aggregate_types().is_empty() || pairs > MAX_SCANS || pairs == 0 {
        return by_position(statement, events, columns, filter, &types);
    }

    // One scan per type, or per tenant and type, each in position order: the indexes bound
    // them, except where a condition on the tenant is left to the rows (events without a
    // tenant, the untenanted ones of a predicate's filter).
    let untenanted = filter.tenant().admits_untenanted();
    statement.windowed = match tenants {
        // `tenant_id IS NULL` beside the listed tenants' scans.
        Some(_) => untenanted,
        // `tenant_id IS NOT NULL` for a predicate that leaves untenanted events out.
        None => !untenanted,
    };
    let mut scans = Vec::new();
    // A predicate over tenants is the reader's to evaluate; events without a tenant are left
    // out here unless it lets them in.
    let predicate_tenants = if tenants.is_none() && !filter.tenant().admits_untenanted() {
        " AND tenant_id IS NOT NULL"
    } else {
        ""
    };
    for event_type in types {
        let t = statement.param(FIRST, Bind::Text(event_type.to_owned()));
        let mut scan = |condition: &str| {
            scans.push(format!(
                "(SELECT * FROM {events} WHERE event_type = {t}{condition} AND {range}
                  ORDER BY position LIMIT $3)"
            ));
        };
        match tenants {
            None => scan(predicate_tenants),
            Some(tenants) => {
                for tenant in tenants {
                    let id = statement.param(FIRST, Bind::Tenant(*tenant));
                    scan(&format!(" AND tenant_id = {id}"));
                }
                if filter.tenant().admits_untenanted() {
                    scan(" AND tenant_id IS NULL");
                }
            }
        }
    }
    statement.sql = if scans.len() == 1 {
        format!("SELECT {columns} FROM {} page", scans.concat())
    } else {
        // Merged in position order, each scan read only as far as the page needs.
        format!(
            "SELECT {columns} FROM ({}) page ORDER BY position LIMIT $3",
            scans.join(" UNION ALL ")
        )
    };
    statement
}

/// A scan of the primary key with the whole filter as its condition; `types`: the listed
/// types and the unknown ones.
fn by_position(
    mut statement: Statement,
    events: &str,
    columns: &str,
    filter: &ReadFilter,
    types: &[&str],
) -> Statement {
    const FIRST: usize = 3;
    let mut conditions = Vec::new();
    let types_param = statement.param(
        FIRST,
        Bind::Texts(types.iter().map(|t| (*t).to_owned()).collect()),
    );
    let aggregates = statement.param(FIRST, Bind::Texts(filter.aggregate_types().to_vec()));
    conditions.push(format!(
        "(event_type = ANY({types_param}::text[]) OR aggregate_type = ANY({aggregates}::text[]))"
    ));
    if let Some(tenant) = tenant_condition(&mut statement, FIRST, filter) {
        conditions.push(tenant);
    }
    let conditions: String = conditions
        .iter()
        .map(|condition| format!(" AND {condition}"))
        .collect();
    statement.sql = format!(
        "SELECT {columns} FROM {events}
         WHERE position > $1 AND position < $2{conditions}
         ORDER BY position LIMIT $3"
    );
    statement
}

/// The statement of a filtered page over a range no wider than a page (a live read): a scan
/// of the primary key over the range with the filter as its condition, types unknown to the
/// program selected by the condition itself. Its text depends only on the filter's shape, so
/// it is prepared once, and a generic plan of it scans the primary key, which is right for a
/// narrow range.
pub(super) fn read_narrow(events: &str, columns: &str, filter: &ReadFilter) -> Statement {
    const FIRST: usize = 3;
    let mut statement = Statement::new();
    statement.windowed = false;
    let mut conditions = Vec::new();
    if let Some(listed) = filter.types() {
        let types = statement.param(
            FIRST,
            Bind::Texts(listed.iter().map(|t| (*t).to_owned()).collect()),
        );
        let aggregates = statement.param(FIRST, Bind::Texts(filter.aggregate_types().to_vec()));
        let mut known: Vec<String> = EventRegistry::global()
            .event_types()
            .into_iter()
            .map(str::to_owned)
            .collect();
        known.extend(listed.iter().map(|t| (*t).to_owned()));
        let known = statement.param(FIRST, Bind::Texts(known));
        conditions.push(format!(
            "(event_type = ANY({types}::text[]) OR aggregate_type = ANY({aggregates}::text[]) \
             OR event_type <> ALL({known}::text[]))"
        ));
    }
    if let Some(tenant) = tenant_condition(&mut statement, FIRST, filter) {
        conditions.push(tenant);
    }
    let conditions: String = conditions
        .iter()
        .map(|condition| format!(" AND {condition}"))
        .collect();
    statement.sql = format!(
        "SELECT {columns} FROM {events}
         WHERE position > $1 AND position < $2{conditions}
         ORDER BY position LIMIT $3"
    );
    statement
}

/// The condition of a backlog of `filter` (after `WHERE position > $1`), counting `first`
/// parameters bound before; empty for every event.
pub(super) fn backlog_condition(first: usize, filter: &ReadFilter) -> Statement {
    let mut statement = Statement::new();
    if let Some(types) = filter.types() {
        let types_param = statement.param(
            first,
            Bind::Texts(types.iter().map(|t| (*t).to_owned()).collect()),
        );
        if filter.aggregate_types().is_empty() {
            statement.sql = format!(" AND event_type = ANY({types_param}::text[])");
        } else {
            let aggregates = statement.param(first, Bind::Texts(filter.aggregate_types().to_vec()));
            statement.sql = format!(
                " AND (event_type = ANY({types_param}::text[]) \
                 OR aggregate_type = ANY({aggregates}::text[]))"
            );
        }
    }
    if let Some(tenant) = tenant_condition(&mut statement, first, filter) {
        statement.sql.push_str(" AND ");
        statement.sql.push_str(&tenant);
    }
    statement
}
