//! Reading a storage URL: which backend, and where.

use std::path::PathBuf;

use super::ConnectError;

/// What a storage URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// `memory:`: the in-memory store and repositories.
    Memory,
    /// `sqlite::memory:`: a SQLite database in memory.
    SqliteMemory,
    /// `sqlite://PATH` or `sqlite:PATH`: a SQLite file.
    SqliteFile(PathBuf),
    /// `postgres://...` or `postgresql://...`: passed to the driver as it is.
    Postgres(String),
}

impl Target {
    /// Reads `url`. Errors never repeat the URL past its scheme: it may hold a password.
    pub(super) fn parse(url: &str) -> Result<Self, ConnectError> {
        let url = url.trim();
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme.to_ascii_lowercase().as_str() {
            "memory" if matches!(url, "memory" | "memory:" | "memory://") => Ok(Self::Memory),
            "memory" => Err(ConnectError::InvalidUrl {
                scheme: "memory",
                reason: "the in-memory backend takes no path; write `memory:`".into(),
            }),
            "sqlite" => Self::sqlite(&url[scheme.len() + 1..]),
            "postgres" | "postgresql" => Ok(Self::Postgres(url.to_owned())),
            _ => Err(ConnectError::UnknownScheme {
                scheme: scheme.to_owned(),
            }),
        }
    }

    /// The part of a SQLite URL after `sqlite:`.
    fn sqlite(rest: &str) -> Result<Self, ConnectError> {
        if rest == ":memory:" || rest == "//:memory:" {
            return Ok(Self::SqliteMemory);
        }
        if rest.contains('?') {
            return Err(ConnectError::InvalidUrl {
                scheme: "sqlite",
                reason: "options after `?` are not read; open the file with \
                         projections::sqlite::connect_options and change them there"
                    .into(),
            });
        }
        // `sqlite://orders.db` is relative, `sqlite:///var/lib/orders.db` absolute.
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err(ConnectError::InvalidUrl {
                scheme: "sqlite",
                reason: "no file named; write sqlite://orders.db (relative) or \
                         sqlite:///var/lib/app/orders.db (absolute)"
                    .into(),
            });
        }
        Ok(Self::SqliteFile(PathBuf::from(path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_names_its_backend() {
        let cases = [
            ("memory:", Target::Memory),
            ("memory", Target::Memory),
            ("sqlite::memory:", Target::SqliteMemory),
            ("sqlite://orders.db", Target::SqliteFile("orders.db".into())),
            ("sqlite:orders.db", Target::SqliteFile("orders.db".into())),
            (
                "sqlite:///var/lib/app/orders.db",
                Target::SqliteFile("/var/lib/app/orders.db".into()),
            ),
            ("SQLITE://data/o.db", Target::SqliteFile("data/o.db".into())),
            (
                "postgres://u:secret@db/app",
                Target::Postgres("postgres://u:secret@db/app".into()),
            ),
            (
                "postgresql://db/app",
                Target::Postgres("postgresql://db/app".into()),
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(Target::parse(url).ok(), Some(expected), "{url}");
        }
    }

    #[test]
    fn unknown_schemes_and_empty_paths_are_refused_without_repeating_the_url() {
        let error = Target::parse("mysql://root:secret@db/app").err();
        let text = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("`mysql`"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(matches!(
            Target::parse("sqlite://"),
            Err(ConnectError::InvalidUrl { .. })
        ));
        assert!(matches!(
            Target::parse("sqlite://o.db?mode=ro"),
            Err(ConnectError::InvalidUrl { .. })
        ));
        assert!(matches!(
            Target::parse("memory:elsewhere"),
            Err(ConnectError::InvalidUrl { .. })
        ));
    }
}
