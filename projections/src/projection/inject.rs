/// A type that a `#[handles]` method may take as its connection parameter
/// (`conn: &mut PgConnection`). The runner passes the connection of the transaction it holds
/// for the current batch.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be injected into a projection handler",
    label = "not injectable",
    note = "a handler takes `(&mut self, event: &Envelope<E>)` or `(&mut self, conn: &mut C, event: &Envelope<E>)`",
    note = "`C` is a database connection: `projections::PgConnection` (cargo feature `postgres`) or `projections::SqliteConnection` (cargo feature `sqlite`)"
)]
pub trait Injectable: Send {}

/// The connection of projections whose handlers take none.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NoConnection;

// `do_not_recommend`: a type that is not injectable is reported with the trait's own message,
// not with a pointer to this impl.
#[diagnostic::do_not_recommend]
impl Injectable for NoConnection {}

#[cfg(feature = "postgres")]
#[diagnostic::do_not_recommend]
impl Injectable for sqlx::PgConnection {}

#[cfg(feature = "sqlite")]
#[diagnostic::do_not_recommend]
impl Injectable for sqlx::SqliteConnection {}
