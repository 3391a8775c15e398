//! Temporary SQLite database files.

use std::path::{Path, PathBuf};

use projections::sqlite::{self, SqlitePool};
use uuid::Uuid;

/// A database file under the temporary directory, removed (with its `-wal`, `-shm` and
/// `-journal` companions) when dropped. Close its pools first.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// A new, unique path; `what` names the test binary in the file's name.
    pub fn new(what: &str) -> Self {
        Self {
            path: std::env::temp_dir().join(format!(
                "projections-{what}-{}-{}.db",
                std::process::id(),
                Uuid::new_v4().simple()
            )),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A pool of its own on the file, migrated, as a process of its own would open it.
    pub async fn open(&self) -> SqlitePool {
        sqlite::open(&self.path)
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.path.display()))
    }
}

impl TempFile {
    /// A pool built by hand from [`sqlite::connect_options`], as an application that sizes
    /// its own pool would, without [`sqlite::open`]'s other settings. The file must be
    /// migrated already.
    pub async fn connect(&self) -> SqlitePool {
        sqlx::sqlite::SqlitePoolOptions::new()
            .connect_with(sqlite::connect_options(&self.path))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.path.display()))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = self.path.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}
