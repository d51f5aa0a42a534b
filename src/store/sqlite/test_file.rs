//! A database file of a test's own.

use std::path::{Path, PathBuf};

use uuid::Uuid;

/// A file name in the temporary directory no other test uses; the file and SQLite's WAL
/// files beside it are removed on drop.
pub(super) struct TestFile {
    path: PathBuf,
}

impl TestFile {
    /// A new name beginning with `name`.
    pub(super) fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{name}-{}.db", Uuid::now_v7()));
        Self { path }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            // Left by a test that failed before it made the file: nothing to remove.
            let _ = std::fs::remove_file(path);
        }
    }
}
