//! The folder store: one redb database, `keyvalue.redb`, in the folder.
//!
//! redb (pure Rust, ACID, copy-on-write B-trees; no C to build, unlike
//! SQLite) commits a write transaction durably — its data on disk before
//! `commit` returns — so a write a guest was told succeeded survives the
//! process being killed. Reads run at once on a snapshot. Writes go to one
//! committer thread that takes every write waiting and commits them in one
//! transaction: a guest waits for its group's commit parked, and many
//! concurrent writers share one `fsync`.

use super::{apply, Bucket, Error, Limits, Op, Pending, Reply, Space, Store};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures_channel::oneshot;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

/// `service, bucket, key` (see [`prefix`]) → value.
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// `service, bucket` → how many keys the bucket holds.
const COUNTS: TableDefinition<&[u8], u64> = TableDefinition::new("counts");
/// service → bytes its buckets hold.
const USAGE: TableDefinition<&str, u64> = TableDefinition::new("usage");

/// The most writes waiting for the committer; past it a write is refused.
const QUEUE: usize = 4096;
/// The most writes committed in one transaction.
const GROUP: usize = 512;

pub(crate) struct Disk {
    db: Arc<Opened>,
    limits: Limits,
    writes: Option<Sender<Write>>,
    committer: Option<JoinHandle<()>>,
}

struct Write {
    bucket: Bucket,
    op: Op,
    reply: oneshot::Sender<Reply>,
}

impl Disk {
    pub(crate) fn open(dir: &Path, limits: Limits) -> Result<Self, String> {
        let fail = |e: &dyn std::fmt::Display| {
            format!("cannot open the key-value folder '{}': {e}", dir.display())
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        let path = std::fs::canonicalize(dir)
            .map_err(|e| fail(&e))?
            .join("keyvalue.redb");
        let registered = Registered::claim(path.clone()).map_err(|e| fail(&e))?;
        let db = Database::create(&path).map_err(|e| fail(&e))?;
        let txn = db.begin_write().map_err(|e| fail(&e))?;
        txn.open_table(ENTRIES).map_err(|e| fail(&e))?;
        txn.open_table(COUNTS).map_err(|e| fail(&e))?;
        txn.open_table(USAGE).map_err(|e| fail(&e))?;
        txn.commit().map_err(|e| fail(&e))?;
        let db = Arc::new(Opened {
            db,
            _registered: registered,
        });
        let (writes, queue) = crossbeam_channel::bounded(QUEUE);
        let committer = {
            let db = db.clone();
            std::thread::Builder::new()
                .name("wasmpool-keyvalue".into())
                .spawn(move || commit_groups(&db.db, &limits, &queue))
                .map_err(|e| fail(&e))?
        };
        Ok(Disk {
            db,
            limits,
            writes: Some(writes),
            committer: Some(committer),
        })
    }

    fn read(&self, bucket: &Bucket, op: Op) -> Reply {
        let txn = self.db.db.begin_read().map_err(storage)?;
        let mut space = Tables {
            entries: txn.open_table(ENTRIES).map_err(storage)?,
            counts: txn.open_table(COUNTS).map_err(storage)?,
            usage: txn.open_table(USAGE).map_err(storage)?,
            service: bucket.service.clone(),
            failed: false,
        };
        apply(&mut space, &self.limits, &bucket.name, op)
    }
}

impl Store for Disk {
    fn submit(&self, bucket: &Bucket, op: Op) -> Pending {
        if op.reads_only() {
            return Pending::Ready(self.read(bucket, op));
        }
        let (reply, answer) = oneshot::channel();
        let write = Write {
            bucket: bucket.clone(),
            op,
            reply,
        };
        let sent = match &self.writes {
            Some(writes) => writes.try_send(write),
            None => return Pending::Ready(Err(Error("the store is closed".into()))),
        };
        match sent {
            Ok(()) => Pending::Later(answer),
            Err(TrySendError::Full(_)) => Pending::Ready(Err(Error(format!(
                "the key-value store is busy: {QUEUE} writes are waiting"
            )))),
            Err(TrySendError::Disconnected(_)) => {
                Pending::Ready(Err(Error("the store is closed".into())))
            }
        }
    }
}

impl Drop for Disk {
    /// Waits for the writes already queued, so the folder can be opened again at once.
    fn drop(&mut self) {
        self.writes = None;
        if let Some(committer) = self.committer.take() {
            // The last reference may go on the committer itself (a reply's
            // waker held the last task of a dropped runtime): it ends by
            // itself once its queue is closed.
            if committer.thread().id() != std::thread::current().id() {
                let _ = committer.join();
            }
        }
    }
}

/// How long an open waits for a store of this process that still has the
/// folder (one closing: its committer ends after the last reply it sent).
const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The database files this process's stores have open, and a signal each time one closes.
static OPEN: parking_lot::Mutex<Vec<PathBuf>> = parking_lot::Mutex::new(Vec::new());
static CLOSED: parking_lot::Condvar = parking_lot::Condvar::new();

/// An open database, shared by its store and its committer; the file is
/// given back (and a waiting open woken) only once the database is closed.
struct Opened {
    db: Database,
    // Dropped after `db`: fields drop in order.
    _registered: Registered,
}

/// A database file this process has open.
struct Registered(PathBuf);

impl Registered {
    /// Claims `path`, waiting up to [`REOPEN_WAIT`] for a store of this
    /// process that still has it to close.
    fn claim(path: PathBuf) -> Result<Self, String> {
        let deadline = std::time::Instant::now() + REOPEN_WAIT;
        let mut open = OPEN.lock();
        while open.contains(&path) {
            if CLOSED.wait_until(&mut open, deadline).timed_out() && open.contains(&path) {
                return Err("another runtime of this process has it open".into());
            }
        }
        open.push(path.clone());
        Ok(Registered(path))
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        OPEN.lock().retain(|path| *path != self.0);
        CLOSED.notify_all();
    }
}

/// The committer: every write waiting, up to [`GROUP`], in one durable transaction.
fn commit_groups(db: &Database, limits: &Limits, queue: &Receiver<Write>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < GROUP {
            match queue.try_recv() {
                Ok(write) => group.push(write),
                Err(_) => break,
            }
        }
        let mut replies = Vec::with_capacity(group.len());
        let committed = (|| -> Result<(), Error> {
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut space = Tables {
                    entries: txn.open_table(ENTRIES).map_err(storage)?,
                    counts: txn.open_table(COUNTS).map_err(storage)?,
                    usage: txn.open_table(USAGE).map_err(storage)?,
                    service: Arc::from(""),
                    failed: false,
                };
                for write in &mut group {
                    let op = std::mem::replace(&mut write.op, Op::ListKeys(0));
                    space.service = write.bucket.service.clone();
                    let reply = apply(&mut space, limits, &write.bucket.name, op);
                    if space.failed {
                        // A half-made write: the whole group is given up.
                        return Err(reply.err().unwrap_or_else(|| storage("write")));
                    }
                    replies.push(reply);
                }
            }
            txn.commit().map_err(storage)
        })();
        let mut replies = replies.into_iter();
        for write in group {
            let reply = match &committed {
                Ok(()) => replies.next().unwrap_or_else(|| Err(storage("no reply"))),
                Err(error) => Err(error.clone()),
            };
            let _ = write.reply.send(reply);
        }
    }
}

fn storage(error: impl std::fmt::Display) -> Error {
    Error(format!("the key-value store failed: {error}"))
}

/// `service` and `bucket`, length-prefixed so no name can run into another.
fn prefix(service: &str, bucket: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + service.len() + bucket.len());
    for part in [service, bucket] {
        key.extend_from_slice(&(part.len() as u32).to_be_bytes());
        key.extend_from_slice(part.as_bytes());
    }
    key
}

/// The tables of one transaction as one service's [`Space`].
struct Tables<E, C, U> {
    entries: E,
    counts: C,
    usage: U,
    service: Arc<str>,
    /// Set when redb failed mid-write.
    failed: bool,
}

impl<E, C, U> Tables<E, C, U>
where
    E: ReadableTable<&'static [u8], &'static [u8]>,
    C: ReadableTable<&'static [u8], u64>,
    U: ReadableTable<&'static str, u64>,
{
    fn read_value(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let mut at = prefix(&self.service, bucket);
        at.extend_from_slice(key.as_bytes());
        let value = self.entries.get(at.as_slice()).map_err(storage)?;
        Ok(value.map(|value| value.value().to_vec()))
    }

    fn read_keys(&self, bucket: &str, from: u64, n: usize) -> Result<Vec<String>, Error> {
        let start = prefix(&self.service, bucket);
        let mut keys = Vec::new();
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        for entry in self
            .entries
            .range(start.as_slice()..)
            .map_err(storage)?
            .skip(from)
        {
            let (key, _) = entry.map_err(storage)?;
            let Some(rest) = key.value().strip_prefix(start.as_slice()) else {
                break;
            };
            keys.push(String::from_utf8_lossy(rest).into_owned());
            if keys.len() == n {
                break;
            }
        }
        Ok(keys)
    }

    fn read_count(&self, bucket: &str) -> Result<u64, Error> {
        let at = prefix(&self.service, bucket);
        let count = self.counts.get(at.as_slice()).map_err(storage)?;
        Ok(count.map_or(0, |count| count.value()))
    }

    fn read_bytes(&self) -> Result<u64, Error> {
        let bytes = self.usage.get(&*self.service).map_err(storage)?;
        Ok(bytes.map_or(0, |bytes| bytes.value()))
    }
}

macro_rules! readable_space {
    () => {
        fn get(&mut self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
            self.read_value(bucket, key)
        }
        fn keys(&mut self, bucket: &str, from: u64, n: usize) -> Result<Vec<String>, Error> {
            self.read_keys(bucket, from, n)
        }
        fn count(&mut self, bucket: &str) -> Result<u64, Error> {
            self.read_count(bucket)
        }
        fn bytes(&mut self) -> Result<u64, Error> {
            self.read_bytes()
        }
    };
}

type ReadTables = Tables<
    redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    redb::ReadOnlyTable<&'static [u8], u64>,
    redb::ReadOnlyTable<&'static str, u64>,
>;

impl Space for ReadTables {
    readable_space!();

    fn put(&mut self, _: &str, _: &str, _: Option<Vec<u8>>, _: u64, _: u64) -> Result<(), Error> {
        Err(Error("a read cannot write".into()))
    }
}

type WriteTables<'t> = Tables<
    redb::Table<'t, &'static [u8], &'static [u8]>,
    redb::Table<'t, &'static [u8], u64>,
    redb::Table<'t, &'static str, u64>,
>;

impl Space for WriteTables<'_> {
    readable_space!();

    fn put(
        &mut self,
        bucket: &str,
        key: &str,
        value: Option<Vec<u8>>,
        count: u64,
        bytes: u64,
    ) -> Result<(), Error> {
        self.failed = true;
        let at = prefix(&self.service, bucket);
        let mut entry = at.clone();
        entry.extend_from_slice(key.as_bytes());
        match value {
            Some(value) => {
                self.entries
                    .insert(entry.as_slice(), value.as_slice())
                    .map_err(storage)?;
            }
            None => {
                self.entries.remove(entry.as_slice()).map_err(storage)?;
            }
        }
        if count == 0 {
            self.counts.remove(at.as_slice()).map_err(storage)?;
        } else {
            self.counts.insert(at.as_slice(), count).map_err(storage)?;
        }
        self.usage.insert(&*self.service, bytes).map_err(storage)?;
        self.failed = false;
        Ok(())
    }
}
