//! Where the crate's tables live, and the validated identifiers that name them.

use std::fmt;

use crate::storage::StorageError;

/// The PostgreSQL schema that holds the crate's tables.
///
/// [`Schema::default`] leaves table names unqualified, so they resolve through the
/// connection's `search_path` (usually `public`). [`Schema::named`] qualifies every table with a
/// validated schema name, which [`migrate_schema`](super::migrate_schema) creates if needed:
/// several independent sets of projections (or test runs) can then share one database.
///
/// ```
/// use projections::postgres::Schema;
///
/// let schema = Schema::named("read_side").unwrap();
/// assert_eq!(schema.name(), Some("read_side"));
/// assert!(Schema::named("Robert'); DROP TABLE students;--").is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Schema {
    name: Option<String>,
}

impl Schema {
    /// The schema called `name`, which must match `^[a-z_][a-z0-9_]{0,62}$` and must not start
    /// with `pg_` (reserved by PostgreSQL); otherwise [`StorageError::Invalid`].
    pub fn named(name: &str) -> Result<Self, StorageError> {
        validate_identifier(name, "schema name")?;
        if name.starts_with("pg_") {
            return Err(StorageError::Invalid {
                what: "schema name",
                reason: format!("`{name}` starts with `pg_`, which PostgreSQL reserves"),
            });
        }
        Ok(Self {
            name: Some(name.to_owned()),
        })
    }

    /// The schema's name; `None` for the connection's `search_path`.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// `table` qualified with this schema, ready to be formatted into SQL.
    pub(crate) fn table(&self, table: &str) -> String {
        match &self.name {
            Some(schema) => format!("\"{schema}\".{table}"),
            None => table.to_owned(),
        }
    }

    /// What precedes the position in this schema's append notifications.
    pub(crate) fn notify_prefix(&self) -> String {
        match &self.name {
            Some(schema) => format!("{schema}:"),
            None => String::new(),
        }
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => f.write_str(name),
            None => f.write_str("(search_path)"),
        }
    }
}

/// Checks that `name` is a plain lower-case SQL identifier, safe to format into SQL:
/// `^[a-z_][a-z0-9_]{0,62}$`.
pub(crate) fn validate_identifier(name: &str, what: &'static str) -> Result<(), StorageError> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(StorageError::Invalid {
            what,
            reason: format!(
                "`{name}` is not a lower-case SQL identifier of at most 63 characters \
                 (`^[a-z_][a-z0-9_]{{0,62}}$`)"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated() {
        for good in ["a", "_", "read_side", "x1", &"a".repeat(63)] {
            assert!(Schema::named(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "Upper",
            "with space",
            "semi;colon",
            "quote\"",
            "dash-ed",
            "pg_catalog",
            "é",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(Schema::named(bad), Err(StorageError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn tables_are_qualified_only_for_named_schemas() {
        assert_eq!(Schema::default().table("t"), "t");
        let named = Schema::named("s").ok();
        assert_eq!(named.map(|s| s.table("t")).as_deref(), Some("\"s\".t"));
    }
}
