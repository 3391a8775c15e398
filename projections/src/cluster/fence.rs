//! The fencing token a batch carries: proof, checked inside the batch's own transaction, that
//! this node still owns the projection it writes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What a node holds while it owns a lease: the lease's name, the node's id and the token
/// the lease was acquired with.
///
/// A transactional runner that carries a fence checks it in every batch's transaction, before
/// anything is written: the fence row must still name this node and this token. A takeover
/// writes a new token to that row, so once another node has taken the lease, no batch of the
/// old owner can commit (see [`StorageError::Fenced`](crate::StorageError::Fenced)).
#[derive(Clone, PartialEq, Eq)]
pub struct Fence {
    lease: Arc<str>,
    node: Arc<str>,
    token: i64,
    /// Where the token lives (a qualified table name) and how long a batch's transaction may
    /// sit idle before the server ends it: a paused owner must not hold a takeover back.
    table: Arc<str>,
    idle_timeout: Duration,
}

impl Fence {
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn new(
        lease: Arc<str>,
        node: Arc<str>,
        token: i64,
        table: Arc<str>,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            lease,
            node,
            token,
            table,
            idle_timeout,
        }
    }

    /// The lease: a projection's name, or a partition's.
    pub fn lease(&self) -> &str {
        &self.lease
    }

    /// The node that holds it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The fencing token: one more at every acquisition of the lease.
    pub fn token(&self) -> i64 {
        self.token
    }

    /// The table holding the token, qualified.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// How long a batch's transaction may sit idle before the server ends it.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fence")
            .field("lease", &self.lease)
            .field("node", &self.node)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}
