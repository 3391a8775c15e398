//! The statements of filtered reads and backlogs ([`ReadFilter`]), built per filter.
//!
//! A read takes one of two shapes:
//!
//! - **by type** (a filter of event types, perhaps of tenants): one ordered index scan per event
//!   type (per tenant and type, on the tenant index of migration 10, when the filter lists a
//!   few tenants), merged in position order under the page's `LIMIT`. PostgreSQL pulls from
//!   each scan only as far as the page goes (a `Merge Append`), so a projection of one type in
//!   twenty reads its own rows and no others. Events of types this program does not know are
//!   looked for the same way, one scan per such type found among the stored types (a skip scan
//!   of the type index).
//! - **by position** (every type, for a tenant; or aggregate types to follow; or too many
//!   tenant and type pairs): one scan of the primary key with the filter as a condition. The
//!   database reads the rows it passes over, but none is sent or decoded.
//!
//! Both read positions above `$1` and below `$2` (the read horizon, or the end of the read's
//! window), at most `$3` rows.

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
    binds: Vec<Bind>,
}

impl Statement {
    fn new() -> Self {
        Self {
            sql: String::new(),
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

/// The wire names this program knows, and those the filter lists: a type outside them is
/// unknown.
fn known_types(filter: &ReadFilter) -> Vec<String> {
    let mut known: Vec<String> = EventRegistry::global()
        .event_types()
        .into_iter()
        .map(str::to_owned)
        .collect();
    for listed in filter.types().unwrap_or_default() {
        if !known.iter().any(|k| k == listed) {
            known.push((*listed).to_owned());
        }
    }
    known
}

/// The statement of a filtered page of `events` (qualified table name), returning
/// `columns`, with `$1` (after), `$2` (before) and `$3` (limit) bound by the caller.
pub(super) fn read(events: &str, columns: &str, filter: &ReadFilter) -> Statement {
    const FIRST: usize = 3;
    let mut statement = Statement::new();
    let range = "position > $1 AND position < $2";
    let Some(types) = filter.types() else {
        // Every type, perhaps of some tenants.
        let tenant = tenant_condition(&mut statement, FIRST, filter)
            .map(|condition| format!(" AND {condition}"))
            .unwrap_or_default();
        statement.sql = format!(
            "SELECT {columns} FROM {events} WHERE {range}{tenant} ORDER BY position LIMIT $3"
        );
        return statement;
    };
    let tenants = filter.tenant().tenants();
    let pairs = types.len()
        * tenants.map_or(1, |t| {
            t.len() + usize::from(filter.tenant().admits_untenanted())
        });
    if !filter.aggregate_types().is_empty() || pairs > MAX_SCANS {
        return by_position(statement, events, columns, filter);
    }

    // One scan per type, or per tenant and type. Each bounds the position by a row
    // comparison on its index's columns: a generic plan (which cannot see how wide the range
    // is) then still scans that index, never the primary key.
    let mut scans = Vec::new();
    // A predicate over tenants is the reader's to evaluate; events without a tenant are left
    // out here unless it lets them in.
    let predicate_tenants = if tenants.is_none() && !filter.tenant().admits_untenanted() {
        " AND tenant_id IS NOT NULL"
    } else {
        ""
    };
    for event_type in types {
        let t = statement.param(FIRST, Bind::Text((*event_type).to_owned()));
        match tenants {
            None => scans.push(format!(
                "(SELECT * FROM {events}
                  WHERE event_type = {t}{predicate_tenants}
                    AND (event_type, position) > ({t}, $1) AND (event_type, position) < ({t}, $2)
                  ORDER BY position LIMIT $3)"
            )),
            Some(tenants) => {
                for tenant in tenants {
                    let id = statement.param(FIRST, Bind::Tenant(*tenant));
                    scans.push(format!(
                        "(SELECT * FROM {events}
                          WHERE tenant_id = {id} AND event_type = {t}
                            AND (tenant_id, event_type, position) > ({id}, {t}, $1)
                            AND (tenant_id, event_type, position) < ({id}, {t}, $2)
                          ORDER BY position LIMIT $3)"
                    ));
                }
                if filter.tenant().admits_untenanted() {
                    scans.push(format!(
                        "(SELECT * FROM {events}
                          WHERE event_type = {t} AND tenant_id IS NULL
                            AND (event_type, position) > ({t}, $1)
                            AND (event_type, position) < ({t}, $2)
                          ORDER BY position LIMIT $3)"
                    ));
                }
            }
        }
    }
    // Types this program does not know: found by a skip scan of the type index, each read like
    // the others (there are usually none).
    let known = statement.param(FIRST, Bind::Texts(known_types(filter)));
    let tenant = tenant_condition(&mut statement, FIRST, filter)
        .map(|condition| format!(" AND {condition}"))
        .unwrap_or_default();
    scans.push(format!(
        "(SELECT found.* FROM unknown CROSS JOIN LATERAL (
              SELECT * FROM {events}
              WHERE event_type = unknown.event_type{tenant}
                AND (event_type, position) > (unknown.event_type, $1)
                AND (event_type, position) < (unknown.event_type, $2)
              ORDER BY position LIMIT $3
          ) found
          ORDER BY found.position LIMIT $3)"
    ));
    // The scans are merged in position order, each read only as far as the page needs.
    statement.sql = format!(
        "WITH RECURSIVE stored_types(event_type) AS (
             SELECT min(event_type) FROM {events}
             UNION ALL
             SELECT (SELECT min(event_type) FROM {events} WHERE event_type > s.event_type)
             FROM stored_types s WHERE s.event_type IS NOT NULL
         ),
         unknown AS (
             SELECT event_type FROM stored_types
             WHERE event_type IS NOT NULL AND event_type <> ALL({known}::text[])
         )
         SELECT {columns} FROM (
             {scans}
         ) page
         ORDER BY position LIMIT $3",
        scans = scans.join("\n             UNION ALL\n             "),
    );
    statement
}

/// A scan of the primary key with the whole filter as its condition.
fn by_position(
    mut statement: Statement,
    events: &str,
    columns: &str,
    filter: &ReadFilter,
) -> Statement {
    const FIRST: usize = 3;
    let mut conditions = Vec::new();
    if let Some(types) = filter.types() {
        let types_param = statement.param(
            FIRST,
            Bind::Texts(types.iter().map(|t| (*t).to_owned()).collect()),
        );
        let aggregates = statement.param(FIRST, Bind::Texts(filter.aggregate_types().to_vec()));
        let known = statement.param(FIRST, Bind::Texts(known_types(filter)));
        conditions.push(format!(
            "(event_type = ANY({types_param}::text[]) OR aggregate_type = ANY({aggregates}::text[]) \
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
