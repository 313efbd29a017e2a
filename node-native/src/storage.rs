//! The native peer's durable store: every [`Event::Stored`] of the core, kept in an embedded
//! crash-safe database ([redb]), and loaded back into a restarted peer with `Node::restore`
//! (the persistence contract is `node_core::persist`).
//!
//! # On disk
//! One file, `<data-dir>/store.redb`, with two tables:
//! - `entries`: key -> the winning `node_core::store::Entry` as JSON (last one per key; deletes
//!   are tombstones, and a key is removed only when the core collects its tombstone,
//!   `Event::Collected`, so this table is the whole store);
//! - `meta`: `peer_id` (the ring id the directory belongs to), `lamport` (the clock's
//!   high-water mark at the last commit) and `format_version` ([`FORMAT_VERSION`]).
//!
//! A data directory belongs to one peer id: opening it as another peer is refused, since the
//! entries were placed on the ring for that id. A file that is not a redb database, fails redb's
//! integrity check (run on every open, so a damaged file is an error rather than a panic) or
//! holds an entry that does not decode is an error naming the file, never a silent empty store.
//!
//! # Durability modes (`--durability`)
//! - [`Durability::Strict`] (default): every batch is committed with redb's
//!   `Durability::Immediate` (the commit returns after `fsync`). The driver persists the
//!   `Stored` events of one drain of the core in one transaction (group commit) *before* it
//!   carries out any other output of that drain, so a peer sends its `ReplicateAck`, and a leader
//!   its answer, only for writes already on disk: an acknowledged put survives a crash
//!   (`kill -9`, power loss) of every acknowledging replica.
//! - [`Durability::Relaxed`]: batches are committed with `Durability::None` (in the page cache
//!   and redb's memory, no `fsync`), and a durable commit follows at most
//!   [`RELAXED_FLUSH_INTERVAL`] (1 s) after the first non-durable one (the driver arms a timer
//!   from [`Storage::flush_deadline`]). Window of loss: a crash of the process or the machine
//!   loses the writes of the last second or so on this replica (redb reopens at its last durable
//!   commit). Other replicas and anti-entropy repair that as long as fewer than k replicas of a
//!   set lose the same writes; a put acknowledged by W replicas that all crash within that
//!   window can be lost. The clock never goes back: before the clock passes the last durable
//!   *reservation* (`meta.lamport_reserved`), a commit is made durable with a new reservation
//!   [`CLOCK_RESERVATION`] ahead, and a restarted peer's clock starts at the reservation. So a
//!   crash within the window never makes the peer stamp a timestamp it had already used (one
//!   `fsync` per [`CLOCK_RESERVATION`] / 2 stamps at most).
//!
//! A failed commit stops the peer (see the driver): a peer that cannot keep its promise behaves
//! like a crashed one and comes back from its last durable state.
//!
//! [`Event::Stored`]: node_core::node::Event::Stored

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use node_core::Id as PeerId;
use node_core::Id;
use node_core::store::Entry;
use redb::{
    ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _, TableDefinition,
};
use serde::Serialize;

/// The file inside a data directory.
pub const FILE_NAME: &str = "store.redb";

/// The layout this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// In relaxed mode, the longest a non-durable commit waits for a durable one.
pub const RELAXED_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

const ENTRIES: TableDefinition<&str, &str> = TableDefinition::new("entries");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_PEER_ID: &str = "peer_id";
const META_LAMPORT: &str = "lamport";
const META_RESERVED: &str = "lamport_reserved";

/// How far ahead of the clock relaxed mode reserves timestamps durably (see the module doc).
pub const CLOCK_RESERVATION: u64 = 100_000;
const META_FORMAT: &str = "format_version";

/// When a commit is made durable (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Durability {
    /// `fsync` on every commit, before the writes it holds are acknowledged.
    #[default]
    Strict,
    /// No `fsync` per commit; a durable commit at least every second.
    Relaxed,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Relaxed => "relaxed",
        }
    }
}

/// Why the store could not be opened, read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("cannot create data directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {}: {detail}", path.display())]
    Open { path: PathBuf, detail: String },
    #[error("{} is corrupted or unreadable: {detail}", path.display())]
    Corrupted { path: PathBuf, detail: String },
    #[error(
        "{} belongs to peer {found}, not {expected}: give this peer its own --data-dir",
        path.display()
    )]
    OtherPeer {
        path: PathBuf,
        found: Id,
        expected: Id,
    },
    #[error("{} has format version {found}; this build reads version {expected}", path.display())]
    Format {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("cannot write to {}: {detail}", path.display())]
    Write { path: PathBuf, detail: String },
}

/// What [`Storage::load`] read.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Every persisted key with its last entry, in key order.
    pub entries: Vec<(String, Entry)>,
    /// The Lamport clock's high-water mark at the last commit.
    pub lamport: u64,
    /// How long opening (with its integrity check) and reading took.
    pub took: Duration,
}

/// Counters for `GET /metrics` -> `driver.storage`: node-core's, the same shape a tab reports.
pub use node_core::peer::stats::StorageStats;

/// One peer's open database.
pub struct Storage {
    db: redb::Database,
    path: PathBuf,
    durability: Durability,
    /// Relaxed mode: when the oldest commit not yet durable was made.
    not_durable_since: Option<Instant>,
    /// The clock value of the last commit (written again by a relaxed flush).
    lamport: u64,
    /// The durable clock reservation: this peer never stamped a timestamp above it.
    reserved: u64,
    stats: StorageStats,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// Opens (creating if needed) `<dir>/store.redb` for peer `peer`. Refuses a file written by
    /// another peer id or in another format, and a damaged file.
    pub fn open(dir: &Path, peer: Id, durability: Durability) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = open_database(&path)?;
        let mut storage = Self {
            db,
            path,
            durability,
            not_durable_since: None,
            lamport: 0,
            reserved: 0,
            stats: StorageStats {
                durability: durability.name().into(),
                ..StorageStats::default()
            },
        };
        storage.stats.path = storage.path.display().to_string();
        storage.check_owner(peer)?;
        Ok(storage)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub fn stats(&self) -> &StorageStats {
        &self.stats
    }

    /// Records what the node took from [`Storage::load`] and how long the whole start took.
    pub fn note_restored(&mut self, entries: usize, took: Duration) {
        self.stats.restored_entries = entries as u64;
        self.stats.restore_ms = took.as_secs_f64() * 1_000.0;
    }

    /// A new file gets this peer's id and the format version; an existing one must carry them.
    fn check_owner(&mut self, peer: Id) -> Result<(), StorageError> {
        let (owner, format, lamport, reserved) = {
            let read = self.db.begin_read().map_err(|e| self.corrupted(e))?;
            match read.open_table(META) {
                Ok(meta) => {
                    let get = |name: &str| -> Result<Option<u64>, StorageError> {
                        Ok(meta
                            .get(name)
                            .map_err(|e| self.corrupted(e))?
                            .map(|v| v.value()))
                    };
                    (
                        get(META_PEER_ID)?,
                        get(META_FORMAT)?,
                        get(META_LAMPORT)?,
                        get(META_RESERVED)?,
                    )
                }
                Err(redb::TableError::TableDoesNotExist(_)) => (None, None, None, None),
                Err(e) => return Err(self.corrupted(e)),
            }
        };
        match (owner, format) {
            (Some(owner), Some(format)) => {
                if format != FORMAT_VERSION {
                    return Err(StorageError::Format {
                        path: self.path.clone(),
                        found: format,
                        expected: FORMAT_VERSION,
                    });
                }
                let found = Id(owner as u32);
                if owner > u64::from(u32::MAX) || found != peer {
                    return Err(StorageError::OtherPeer {
                        path: self.path.clone(),
                        found,
                        expected: peer,
                    });
                }
                self.lamport = lamport.unwrap_or(0);
                self.reserved = reserved.unwrap_or(0);
                Ok(())
            }
            (None, None) => self.initialize(peer),
            _ => Err(StorageError::Corrupted {
                path: self.path.clone(),
                detail: "the meta table lacks the peer id or the format version".into(),
            }),
        }
    }

    fn initialize(&mut self, peer: Id) -> Result<(), StorageError> {
        let write = self.db.begin_write().map_err(|e| self.write_error(e))?;
        {
            let mut meta = write.open_table(META).map_err(|e| self.write_error(e))?;
            for (name, value) in [
                (META_PEER_ID, u64::from(peer.0)),
                (META_FORMAT, FORMAT_VERSION),
                (META_LAMPORT, 0),
            ] {
                meta.insert(name, value).map_err(|e| self.write_error(e))?;
            }
            write.open_table(ENTRIES).map_err(|e| self.write_error(e))?;
        }
        write.commit().map_err(|e| self.write_error(e))
    }

    /// Every persisted entry and the saved clock, for `Node::restore`.
    pub fn load(&self) -> Result<Loaded, StorageError> {
        let started = Instant::now();
        let read = self.db.begin_read().map_err(|e| self.corrupted(e))?;
        let table = read.open_table(ENTRIES).map_err(|e| self.corrupted(e))?;
        let mut entries = Vec::with_capacity(table.len().unwrap_or(0) as usize);
        for row in table.iter().map_err(|e| self.corrupted(e))? {
            let (key, value) = row.map_err(|e| self.corrupted(e))?;
            let key = key.value().to_string();
            let entry: Entry =
                serde_json::from_str(value.value()).map_err(|e| StorageError::Corrupted {
                    path: self.path.clone(),
                    detail: format!("entry of key {key:?} does not decode: {e}"),
                })?;
            entries.push((key, entry));
        }
        Ok(Loaded {
            entries,
            // Relaxed mode: the last non-durable commits (and their clock) may be gone, but no
            // stamp ever went past the durable reservation.
            lamport: self.lamport.max(self.reserved),
            took: started.elapsed(),
        })
    }

    /// Commits one batch of `Stored` entries and the clock, durably or not as the mode says.
    /// An empty batch commits nothing.
    pub fn persist<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (&'a str, &'a Entry)>,
        lamport: u64,
    ) -> Result<(), StorageError> {
        let durable = match self.durability {
            Durability::Strict => true,
            // A batch that comes after the deadline doubles as the flush.
            Durability::Relaxed => self.flush_deadline().is_some_and(|at| at <= Instant::now()),
        };
        let mut entries = entries.into_iter().peekable();
        if entries.peek().is_none() {
            return Ok(());
        }
        self.commit(entries, &[], lamport, durable)
    }

    /// Deletes the keys whose tombstones the core collected (`Event::Collected`), durably or
    /// not as the mode says. A deletion lost in a crash only brings the tombstone back, which
    /// the core collects again.
    pub fn forget(&mut self, keys: &[&str], lamport: u64) -> Result<(), StorageError> {
        if keys.is_empty() {
            return Ok(());
        }
        let durable = match self.durability {
            Durability::Strict => true,
            Durability::Relaxed => self.flush_deadline().is_some_and(|at| at <= Instant::now()),
        };
        self.commit(std::iter::empty(), keys, lamport, durable)
    }

    /// Relaxed mode: when the driver must call [`Storage::flush`]. `None` when every commit is
    /// durable already.
    pub fn flush_deadline(&self) -> Option<Instant> {
        self.not_durable_since
            .map(|since| since + RELAXED_FLUSH_INTERVAL)
    }

    /// Makes every earlier commit durable (with the clock value `lamport`).
    pub fn flush(&mut self, lamport: u64) -> Result<(), StorageError> {
        if self.not_durable_since.is_none() {
            return Ok(());
        }
        self.commit(std::iter::empty(), &[], lamport, true)
    }

    fn commit<'a>(
        &mut self,
        entries: impl Iterator<Item = (&'a str, &'a Entry)>,
        removed: &[&str],
        lamport: u64,
        durable: bool,
    ) -> Result<(), StorageError> {
        let started = Instant::now();
        // The clock may not pass the durable reservation: reserve further, durably, first.
        let reserve = self.durability == Durability::Relaxed && lamport > self.reserved;
        let durable = durable || reserve;
        let mut write = self.db.begin_write().map_err(|e| self.write_error(e))?;
        let level = if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        write
            .set_durability(level)
            .map_err(|e| self.write_error(e))?;
        let mut count = 0;
        {
            let mut table = write.open_table(ENTRIES).map_err(|e| self.write_error(e))?;
            let mut json = String::new();
            for (key, entry) in entries {
                json.clear();
                json.push_str(&serde_json::to_string(entry).expect("entries serialize"));
                table
                    .insert(key, json.as_str())
                    .map_err(|e| self.write_error(e))?;
                count += 1;
            }
            for key in removed {
                table.remove(*key).map_err(|e| self.write_error(e))?;
                count += 1;
            }
            self.lamport = self.lamport.max(lamport);
            let mut meta = write.open_table(META).map_err(|e| self.write_error(e))?;
            meta.insert(META_LAMPORT, self.lamport)
                .map_err(|e| self.write_error(e))?;
            if reserve {
                meta.insert(META_RESERVED, self.lamport + CLOCK_RESERVATION)
                    .map_err(|e| self.write_error(e))?;
            }
        }
        write.commit().map_err(|e| self.write_error(e))?;
        if reserve {
            self.reserved = self.lamport + CLOCK_RESERVATION;
        }
        if durable {
            self.not_durable_since = None;
        } else {
            self.not_durable_since.get_or_insert(started);
        }
        self.stats
            .record_commit(started.elapsed().as_secs_f64() * 1_000.0, count, durable);
        Ok(())
    }

    fn corrupted(&self, e: impl std::fmt::Display) -> StorageError {
        StorageError::Corrupted {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    fn write_error(&self, e: impl std::fmt::Display) -> StorageError {
        StorageError::Write {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }
}

impl Drop for Storage {
    /// A clean stop (relaxed mode) makes the last commits durable.
    fn drop(&mut self) {
        if let Err(e) = self.flush(self.lamport) {
            tracing::warn!(%e, "cannot make the last commits durable");
        }
    }
}

/// Opens the file with redb's integrity check, so a damaged file is an error (a plain open
/// trusts the file and may panic on garbage). A panic inside redb is turned into an error too.
fn open_database(path: &Path) -> Result<redb::Database, StorageError> {
    let opened = std::panic::catch_unwind(|| {
        redb::Builder::new()
            .set_check_integrity_on_open(true)
            .create(path)
    });
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if e.kind() != std::io::ErrorKind::InvalidData =>
        {
            Err(StorageError::Open {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })
        }
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => Err(StorageError::Open {
            path: path.to_path_buf(),
            detail: "another process has it open (is this peer already running?)".into(),
        }),
        Ok(Err(e)) => Err(StorageError::Corrupted {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
        Err(panic) => Err(StorageError::Corrupted {
            path: path.to_path_buf(),
            detail: panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "the database library panicked while opening it".into()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("chord-kv-storage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn entries_and_clock_come_back_after_reopening() {
        let dir = dir("reopen");
        let peer = Id(0x1234_5678);
        {
            let mut storage = Storage::open(&dir, peer, Durability::Strict).unwrap();
            let a = Entry::live("1", 5, "w");
            let b = Entry::tombstone(9, "w");
            storage.persist([("a", &a), ("b", &b)], 12).unwrap();
            let a2 = Entry::live("2", 10, "w");
            storage.persist([("a", &a2)], 14).unwrap();
            assert_eq!(storage.stats().commits, 2);
            assert_eq!(storage.stats().entries_persisted, 3);
        }
        let storage = Storage::open(&dir, peer, Durability::Strict).unwrap();
        let loaded = storage.load().unwrap();
        assert_eq!(loaded.lamport, 14);
        assert_eq!(
            loaded.entries,
            vec![
                ("a".to_string(), Entry::live("2", 10, "w")),
                ("b".to_string(), Entry::tombstone(9, "w")),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn another_peers_directory_is_refused() {
        let dir = dir("owner");
        drop(Storage::open(&dir, Id(1), Durability::Strict).unwrap());
        let err = Storage::open(&dir, Id(2), Durability::Strict).unwrap_err();
        assert!(matches!(err, StorageError::OtherPeer { .. }), "{err}");
        assert!(err.to_string().contains(FILE_NAME), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_garbage_file_is_an_error_naming_it() {
        let dir = dir("garbage");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        std::fs::write(&path, vec![0xA5u8; 64 * 1024]).unwrap();
        let err = Storage::open(&dir, Id(1), Durability::Strict).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn relaxed_commits_wait_for_a_flush() {
        let dir = dir("relaxed");
        let mut storage = Storage::open(&dir, Id(1), Durability::Relaxed).unwrap();
        assert_eq!(storage.flush_deadline(), None);
        // The first commit reserves clock values durably (see the next test); later ones,
        // within the reservation, wait for a flush.
        let a = Entry::live("1", 1, "w");
        storage.persist([("a", &a)], 1).unwrap();
        assert_eq!(storage.stats().durable_commits, 1);
        let b = Entry::live("2", 2, "w");
        storage.persist([("b", &b)], 2).unwrap();
        assert!(storage.flush_deadline().is_some());
        assert_eq!(storage.stats().durable_commits, 1);
        storage.flush(2).unwrap();
        assert_eq!(storage.flush_deadline(), None);
        assert_eq!(storage.stats().durable_commits, 2);
        drop(storage);
        let storage = Storage::open(&dir, Id(1), Durability::Relaxed).unwrap();
        assert_eq!(storage.load().unwrap().entries.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Relaxed mode never lets the clock pass what is durably reserved, and a reopened store
    /// starts the clock at the reservation: a crash that loses the last non-durable commits
    /// cannot make the peer stamp a timestamp again. Reserving costs one durable commit per
    /// reservation, not one per batch.
    #[test]
    fn relaxed_clock_stays_below_a_durable_reservation() {
        let dir = dir("reserve");
        let mut storage = Storage::open(&dir, Id(1), Durability::Relaxed).unwrap();
        let mut durable_floor = 0;
        for (i, lamport) in [3, 50, 900, 60_000, 99_999, 100_003, 150_000]
            .into_iter()
            .enumerate()
        {
            let entry = Entry::live("v", lamport, "w");
            storage.persist([("k", &entry)], lamport).unwrap();
            assert!(
                storage.reserved >= lamport,
                "batch {i}: clock {lamport} above the durable reservation {}",
                storage.reserved
            );
            durable_floor = storage.reserved;
        }
        // 3 reserves (up to 100_003), 100_003 reserves again (up to 200_003): two fsyncs for
        // seven batches.
        assert_eq!(storage.stats().durable_commits, 2);
        drop(storage);
        let storage = Storage::open(&dir, Id(1), Durability::Relaxed).unwrap();
        assert_eq!(storage.load().unwrap().lamport, durable_floor);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
