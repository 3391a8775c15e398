//! The statements behind a cluster node: announce, renew, acquire, release, and the fence
//! check a batch makes in its own transaction. Times come from the database's clock
//! (`now()`), so nodes with skewed clocks still agree on who holds a lease.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};

use super::fence::Fence;
use crate::postgres::Schema;
use crate::storage::StorageError;

fn backend(error: sqlx::Error) -> StorageError {
    StorageError::backend(error)
}

/// An interval literal PostgreSQL reads, in whole milliseconds.
fn millis(duration: Duration) -> String {
    format!("{} milliseconds", duration.as_millis().max(1))
}

/// The qualified tables of one schema.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    nodes: String,
    leases: String,
    pub(crate) fences: String,
}

impl Tables {
    pub(crate) fn new(schema: &Schema) -> Self {
        Self {
            nodes: schema.table("projection_nodes"),
            leases: schema.table("projection_leases"),
            fences: schema.table("projection_fences"),
        }
    }
}

/// A live node, as the database last heard from it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct NodeInfo {
    /// Its id.
    pub id: String,
    /// When this incarnation announced itself.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// When it counts as gone unless it beats again.
    pub expires_at: DateTime<Utc>,
    /// The host it runs on, as it said.
    pub host: Option<String>,
    /// Its process id, as it said.
    pub pid: Option<i32>,
}

/// One lease as stored.
#[derive(Debug, Clone)]
pub(crate) struct LeaseRow {
    pub(crate) name: String,
    pub(crate) owner: Option<String>,
    pub(crate) token: i64,
    pub(crate) acquired_at: Option<DateTime<Utc>>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    /// Whether it is held now (an owner and an expiry in the future).
    pub(crate) live: bool,
}

/// Records (or refreshes) this node and returns the live nodes, in id order.
pub(crate) async fn announce(
    pool: &PgPool,
    tables: &Tables,
    node: &str,
    incarnation: uuid::Uuid,
    lease: Duration,
    host: Option<&str>,
) -> Result<Vec<NodeInfo>, StorageError> {
    let upsert = format!(
        "INSERT INTO {nodes} (node_id, incarnation, started_at, heartbeat_at, expires_at, host, pid) \
         VALUES ($1, $2, now(), now(), now() + $3::interval, $4, $5) \
         ON CONFLICT (node_id) DO UPDATE SET \
           started_at = CASE WHEN {nodes}.incarnation = EXCLUDED.incarnation \
                             THEN {nodes}.started_at ELSE now() END, \
           incarnation = EXCLUDED.incarnation, heartbeat_at = now(), \
           expires_at = EXCLUDED.expires_at, host = EXCLUDED.host, pid = EXCLUDED.pid",
        nodes = tables.nodes
    );
    sqlx::query(&upsert)
        .bind(node)
        .bind(incarnation)
        .bind(millis(lease))
        .bind(host)
        .bind(i32::try_from(std::process::id()).ok())
        .execute(pool)
        .await
        .map_err(backend)?;
    let select = format!(
        "SELECT node_id, started_at, heartbeat_at, expires_at, host, pid FROM {} \
         WHERE expires_at > now() ORDER BY node_id",
        tables.nodes
    );
    let rows = sqlx::query(&select)
        .fetch_all(pool)
        .await
        .map_err(backend)?;
    rows.iter()
        .map(|row| {
            Ok(NodeInfo {
                id: row.try_get("node_id").map_err(backend)?,
                started_at: row.try_get("started_at").map_err(backend)?,
                heartbeat_at: row.try_get("heartbeat_at").map_err(backend)?,
                expires_at: row.try_get("expires_at").map_err(backend)?,
                host: row.try_get("host").map_err(backend)?,
                pid: row.try_get("pid").map_err(backend)?,
            })
        })
        .collect()
}

/// Removes this node's row: it has left (its leases are released first).
pub(crate) async fn leave(pool: &PgPool, tables: &Tables, node: &str) -> Result<(), StorageError> {
    let delete = format!("DELETE FROM {} WHERE node_id = $1", tables.nodes);
    sqlx::query(&delete)
        .bind(node)
        .execute(pool)
        .await
        .map_err(backend)?;
    Ok(())
}

/// Creates the lease rows that do not exist yet (free).
pub(crate) async fn ensure_leases(
    pool: &PgPool,
    tables: &Tables,
    names: &[String],
) -> Result<(), StorageError> {
    let insert = format!(
        "INSERT INTO {} (lease_name) SELECT unnest($1::text[]) ON CONFLICT (lease_name) DO NOTHING",
        tables.leases
    );
    sqlx::query(&insert)
        .bind(names)
        .execute(pool)
        .await
        .map_err(backend)?;
    Ok(())
}

/// Extends the leases this node holds (name and token); returns those still its own, with
/// their new expiry. A lease missing from the answer was taken by another node.
pub(crate) async fn renew(
    pool: &PgPool,
    tables: &Tables,
    node: &str,
    held: &[(String, i64)],
    lease: Duration,
) -> Result<Vec<(String, DateTime<Utc>)>, StorageError> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let (names, tokens): (Vec<&str>, Vec<i64>) = held
        .iter()
        .map(|(name, token)| (name.as_str(), *token))
        .unzip();
    let update = format!(
        "UPDATE {} l SET expires_at = now() + $4::interval \
         FROM unnest($2::text[], $3::bigint[]) AS h(name, token) \
         WHERE l.lease_name = h.name AND l.token = h.token AND l.owner = $1 \
         RETURNING l.lease_name, l.expires_at",
        tables.leases
    );
    let rows = sqlx::query(&update)
        .bind(node)
        .bind(&names)
        .bind(&tokens)
        .bind(millis(lease))
        .fetch_all(pool)
        .await
        .map_err(backend)?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("lease_name").map_err(backend)?,
                row.try_get("expires_at").map_err(backend)?,
            ))
        })
        .collect()
}

/// Every lease among `names`, as stored.
pub(crate) async fn leases(
    pool: &PgPool,
    tables: &Tables,
    names: &[String],
) -> Result<Vec<LeaseRow>, StorageError> {
    let select = format!(
        "SELECT lease_name, owner, token, acquired_at, expires_at, \
                (owner IS NOT NULL AND expires_at > now()) AS live \
         FROM {} WHERE lease_name = ANY($1) ORDER BY lease_name",
        tables.leases
    );
    let rows = sqlx::query(&select)
        .bind(names)
        .fetch_all(pool)
        .await
        .map_err(backend)?;
    rows.iter()
        .map(|row| {
            Ok(LeaseRow {
                name: row.try_get("lease_name").map_err(backend)?,
                owner: row.try_get("owner").map_err(backend)?,
                token: row.try_get("token").map_err(backend)?,
                acquired_at: row.try_get("acquired_at").map_err(backend)?,
                expires_at: row.try_get("expires_at").map_err(backend)?,
                live: row.try_get("live").map_err(backend)?,
            })
        })
        .collect()
}

/// A lease just acquired.
#[derive(Debug, Clone)]
pub(crate) struct Acquired {
    pub(crate) token: i64,
    pub(crate) acquired_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
}

/// Takes `name` if it is free, expired, or held by an earlier incarnation of this node: one
/// more token, written to the lease and to its fence in one transaction. Writing the fence
/// waits for a batch of the old owner still in flight (it holds the fence row), at most
/// `wait`; `None` when the lease is not free or the wait ran out.
pub(crate) async fn acquire(
    pool: &PgPool,
    tables: &Tables,
    node: &str,
    name: &str,
    lease: Duration,
    wait: Duration,
) -> Result<Option<Acquired>, StorageError> {
    let mut tx = pool.begin().await.map_err(backend)?;
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(format!("{}ms", wait.as_millis().max(1)))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    let take = format!(
        "UPDATE {} SET owner = $2, token = token + 1, acquired_at = now(), \
                expires_at = now() + $3::interval, released_at = NULL \
         WHERE lease_name = $1 AND (owner IS NULL OR expires_at IS NULL OR expires_at <= now() OR owner = $2) \
         RETURNING token, acquired_at, expires_at",
        tables.leases
    );
    let taken = match sqlx::query(&take)
        .bind(name)
        .bind(node)
        .bind(millis(lease))
        .fetch_optional(&mut *tx)
        .await
    {
        Ok(row) => row,
        Err(error) if lock_not_available(&error) => return Ok(None),
        Err(error) => return Err(backend(error)),
    };
    let Some(row) = taken else {
        return Ok(None);
    };
    let acquired = Acquired {
        token: row.try_get("token").map_err(backend)?,
        acquired_at: row.try_get("acquired_at").map_err(backend)?,
        expires_at: row.try_get("expires_at").map_err(backend)?,
    };
    let fence = format!(
        "INSERT INTO {} (lease_name, owner, token) VALUES ($1, $2, $3) \
         ON CONFLICT (lease_name) DO UPDATE SET owner = EXCLUDED.owner, token = EXCLUDED.token",
        tables.fences
    );
    match sqlx::query(&fence)
        .bind(name)
        .bind(node)
        .bind(acquired.token)
        .execute(&mut *tx)
        .await
    {
        Ok(_) => {}
        Err(error) if lock_not_available(&error) => return Ok(None),
        Err(error) => return Err(backend(error)),
    }
    match tx.commit().await {
        Ok(()) => Ok(Some(acquired)),
        Err(error) if lock_not_available(&error) => Ok(None),
        Err(error) => Err(backend(error)),
    }
}

/// Gives `name` back, if this node still holds it with `token`.
pub(crate) async fn release(
    pool: &PgPool,
    tables: &Tables,
    node: &str,
    name: &str,
    token: i64,
) -> Result<(), StorageError> {
    let update = format!(
        "UPDATE {} SET owner = NULL, expires_at = NULL, released_at = now() \
         WHERE lease_name = $1 AND owner = $2 AND token = $3",
        tables.leases
    );
    sqlx::query(&update)
        .bind(name)
        .bind(node)
        .bind(token)
        .execute(pool)
        .await
        .map_err(backend)?;
    Ok(())
}

/// Checks, inside a batch's transaction, that `fence` still holds: its row names this node
/// and this token. The row stays locked (`FOR SHARE`) until the transaction ends, so a
/// takeover waits for this batch, and the transaction is ended by the server if it sits idle
/// longer than the fence allows (a paused node must not hold a takeover back).
pub(crate) async fn check_fence(
    conn: &mut PgConnection,
    fence: &Fence,
) -> Result<(), StorageError> {
    let select = format!(
        "SELECT f.owner, f.token FROM {} f, \
                set_config('idle_in_transaction_session_timeout', $2, true) AS s \
         WHERE f.lease_name = $1 FOR SHARE OF f",
        fence.table()
    );
    let row = sqlx::query(&select)
        .bind(fence.lease())
        .bind(format!("{}ms", fence.idle_timeout().as_millis().max(1)))
        .fetch_optional(conn)
        .await
        .map_err(backend)?;
    let (owner, token) = match row {
        Some(row) => (
            Some(row.try_get::<String, _>("owner").map_err(backend)?),
            Some(row.try_get::<i64, _>("token").map_err(backend)?),
        ),
        None => (None, None),
    };
    if owner.as_deref() == Some(fence.node()) && token == Some(fence.token()) {
        return Ok(());
    }
    Err(StorageError::Fenced {
        lease: fence.lease().to_owned(),
        node: fence.node().to_owned(),
        token: fence.token(),
        owner,
        current: token,
    })
}

/// `lock_timeout` ran out (SQLSTATE 55P03).
fn lock_not_available(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "55P03")
}
