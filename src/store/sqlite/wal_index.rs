//! [`WalIndex`]: the header of a database file's WAL index, read to tell whether
//! anything was committed to the file since a moment this process knows.
//!
//! In WAL mode, SQLite keeps an index of the log in a file beside the database (its name
//! with `-shm` added), which every connection to the file, in any process, maps into
//! memory. Its first 48 bytes are a header that each commit rewrites, and whose bytes no
//! two states of the file share: `iChange`, counted up by one at every commit, the
//! number of the log's last frame, the salts the log was last restarted with, and
//! checksums (the layout is SQLite's file format, documented in "The WAL-Index File
//! Format", `walformat.html`). SQLite's own connections compare this header with the one
//! they last saw to tell whether their page cache is still good; the store does the
//! same to tell whether a history it holds is still the file's (see
//! [`CommitChain`](super::commit_chain::CommitChain)).
//!
//! The header is read with one `pread` of the file, not through SQLite, and never
//! written. SQLite writes it twice, the second copy first, and a reader that finds the
//! copies different caught a commit halfway: such a read counts as no header at all, as
//! does a file that is not a WAL index of this version. A database whose index is not
//! that file (not in WAL mode, a VFS that keeps the index in heap memory, a path that is
//! not the one SQLite opened) has no such file, or one that no commit changes: no write
//! of it is then a link. A read whose header is trusted as the file's (before a write,
//! before a history is spliced) first checks that the file at the path is still the one
//! held open: when the last connection to a database closes, SQLite deletes the file,
//! and the next one creates another.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// The size of one copy of the header.
const HEADER: usize = 48;
/// `iVersion`, the header's first field, in every WAL index SQLite has written since
/// 3.7.0.
const VERSION: u32 = 3_007_000;

/// The `-shm` file of a database, opened at the first read.
pub(super) struct WalIndex {
    /// `None` for a database that is not a file.
    database: Option<PathBuf>,
    open: Mutex<Option<Open>>,
}

/// The file read, and which file it is.
struct Open {
    path: PathBuf,
    file: File,
    /// The file's device and inode numbers, to tell it from one made at the same path.
    identity: (u64, u64),
}

/// One copy of the header, as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header([u8; HEADER]);

impl Header {
    /// `iChange`: how many commits the index has seen since it was last rebuilt.
    fn commits(&self) -> u32 {
        u32::from_ne_bytes([self.0[8], self.0[9], self.0[10], self.0[11]])
    }

    /// Whether exactly one commit lies between `before` and this header: `iChange` one
    /// higher. A rebuilt index starts counting from 0 again, so a count that was 0
    /// before proves nothing (a rebuild and a commit would read the same).
    pub(super) fn follows(&self, before: &Header) -> bool {
        before.commits() != 0 && self.commits() == before.commits().wrapping_add(1)
    }
}

impl WalIndex {
    /// The index of the database file `database`; `None` for a database that is not a
    /// file (its header is never read).
    pub(super) fn new(database: Option<&Path>) -> Self {
        Self {
            database: database.map(Path::to_path_buf),
            open: Mutex::new(None),
        }
    }

    /// The header as it is now; `None` when it cannot be read whole (see the module's
    /// documentation).
    pub(super) fn header(&self) -> Option<Header> {
        self.read(Identity::Checked)
    }

    /// The header of the file held open, without first checking that it is still the
    /// one at the path: for the read after a write, which need not. A file SQLite
    /// deleted no longer changes, so a write whose header after is read from it does
    /// not move its count by one, and is no link (see [`Header::follows`]).
    pub(super) fn header_after_a_write(&self) -> Option<Header> {
        self.read(Identity::Trusted)
    }

    fn read(&self, identity: Identity) -> Option<Header> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let current = open.as_ref().and_then(|open| open.header(identity));
        if current.is_some() {
            return current;
        }
        // Not open yet, or the file at the path is another one by now.
        *open = Open::at(self.database.as_deref()?);
        open.as_ref().and_then(|open| open.header(identity))
    }
}

/// Whether a read first checks that the file held open is still the one at its path.
#[derive(Clone, Copy)]
enum Identity {
    Checked,
    Trusted,
}

impl Open {
    /// SQLite names the file after the database's full path with links followed, as
    /// `canonicalize` gives it.
    #[cfg(unix)]
    fn at(database: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let mut path = std::fs::canonicalize(database).ok()?.into_os_string();
        path.push("-shm");
        let path = PathBuf::from(path);
        let file = File::open(&path).ok()?;
        let held = file.metadata().ok()?;
        Some(Self {
            path,
            file,
            identity: (held.dev(), held.ino()),
        })
    }

    /// The header, if the file at the path is still this one or need not be.
    #[cfg(unix)]
    fn header(&self, identity: Identity) -> Option<Header> {
        use std::os::unix::fs::{FileExt, MetadataExt};
        if let Identity::Checked = identity {
            let now = std::fs::metadata(&self.path).ok()?;
            if (now.dev(), now.ino()) != self.identity {
                return None;
            }
        }
        let mut both = [0; 2 * HEADER];
        self.file.read_exact_at(&mut both, 0).ok()?;
        let (first, second) = both.split_at(HEADER);
        let header = Header(first.try_into().ok()?);
        let version = u32::from_ne_bytes([first[0], first[1], first[2], first[3]]);
        // `isInit`: 0 until the header was written whole once.
        let written = first[12] != 0;
        (first == second && version == VERSION && written).then_some(header)
    }

    /// Elsewhere the file is not read: every history is checked with the database.
    #[cfg(not(unix))]
    fn at(_: &Path) -> Option<Self> {
        None
    }

    #[cfg(not(unix))]
    fn header(&self, _: Identity) -> Option<Header> {
        let _ = (&self.path, &self.file, self.identity);
        None
    }
}

#[cfg(test)]
mod tests {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    use sqlx::{Connection, SqliteConnection};

    use super::super::test_file::TestFile;

    use super::*;

    fn header(commits: u32) -> Header {
        let mut bytes = [0; HEADER];
        bytes[8..12].copy_from_slice(&commits.to_ne_bytes());
        Header(bytes)
    }

    #[test]
    fn one_commit_moves_the_count_by_one_unless_it_was_zero() {
        assert!(header(6).follows(&header(5)));
        assert!(header(0).follows(&header(u32::MAX)));
        assert!(!header(7).follows(&header(5)), "two commits");
        assert!(!header(5).follows(&header(5)), "none");
        assert!(!header(1).follows(&header(0)), "a rebuilt index reads 0");
    }

    /// The header as SQLite writes it: read whole, and one count on at every commit.
    #[tokio::test]
    async fn each_commit_of_sqlite_is_one_count_on_in_the_header_read() {
        let file = TestFile::new("wal-index");
        let options = SqliteConnectOptions::new()
            .filename(file.path())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let mut connection = SqliteConnection::connect_with(&options)
            .await
            .expect("open");
        let index = WalIndex::new(Some(file.path()));
        let mut last = None;
        for statement in [
            "CREATE TABLE t (x INTEGER)",
            "INSERT INTO t VALUES (1)",
            "INSERT INTO t VALUES (2)",
        ] {
            sqlx::query(statement)
                .execute(&mut connection)
                .await
                .expect("write");
            let now = index.header().expect("a header");
            if let Some(before) = last {
                assert!(now.follows(&before), "{statement}: {before:?} then {now:?}");
            }
            last = Some(now);
        }
        // A read commits nothing.
        sqlx::query("SELECT count(*) FROM t")
            .fetch_one(&mut connection)
            .await
            .expect("read");
        assert_eq!(index.header(), last);
        assert_eq!(WalIndex::new(None).header(), None, "no file, no header");
        connection.close().await.expect("close");
    }
}
