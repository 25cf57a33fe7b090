//! The durable store on redb: ACID, a stable file format, fsync on every commit.
//!
//! Chosen over sled (see ARCHITECTURE.md, "Why redb"). Opened in redb's multi-writer mode so the
//! CLI can read and append (approve, abort) while an executor process holds the same file; every
//! write transaction is serialised across processes by redb's file locks.
//!
//! A damaged file is never written. Before any open, the file is copied into memory and redb
//! checks every checksum of the copy there (`verify`); only a copy that passes is trusted, and
//! only then is the file itself opened for writing. Commands that only read never open the file
//! for writing at all: they read a verified copy in memory, taken again when the file changes.
//! A panic inside redb is caught, kept off the terminal, and reported as a damaged store.

use super::{
    AuditEntry, STORE_VERSION, Store, StoreError, StoredRun, check_fence, check_version,
    creation_audit, lease_matches, prepare_append, status_text,
};
use crate::core::decision::Automation;
use crate::core::ids::{Actor, RunId};
use crate::core::lease::LeaseRecord;
use crate::core::run::{EventRecord, RunEvent, RunHeader, Trigger};
use crate::core::time::Timestamp;
use redb::backends::InMemoryBackend;
use redb::{
    ConcurrencyMode, Database, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition,
};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const RUN_ORDER: TableDefinition<u64, &str> = TableDefinition::new("run_order");
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

const MAGIC: &[u8] = b"redb";

/// The META key of the leader lease.
const LEASE_KEY: &str = "lease";
/// The META keys of the daemons' statuses: this prefix and the daemon's id. A store written
/// before several daemons shared one holds a single status under `daemon_status`.
const STATUS_PREFIX: &str = "daemon_status/";
const LEGACY_STATUS_KEY: &str = "daemon_status";

/// How many times a copy that fails its check is taken again while the file keeps changing
/// (another process committing while it was read).
const COPY_ATTEMPTS: usize = 5;

/// The store in a redb file.
pub struct RedbStore {
    db: Db,
    path: PathBuf,
}

/// The file opened for writing, or a verified copy of it for a command that only reads.
enum Db {
    Writable(Arc<Database>),
    ReadOnly(Mutex<Snapshot>),
}

/// A verified in-memory copy of the file, and what the file looked like when it was taken.
struct Snapshot {
    db: Arc<Database>,
    stamp: Option<Stamp>,
}

/// Length and modification time: a commit changes at least one of them.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

thread_local! {
    static QUIET: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f`, turning a panic inside it (redb reading a damaged file) into `Damaged`. The panic
/// message is kept off stderr: the error says what happened and what to do.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) == 0 {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(q.get() + 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(q.get() - 1));
    result.unwrap_or_else(|_| {
        Err(StoreError::Damaged {
            path: path.to_path_buf(),
            detail: "redb could not read its structure".into(),
        })
    })
}

impl RedbStore {
    /// Opens the store at `path` for reading and writing, creating it (and its folder) if it does
    /// not exist. An existing file is verified first and refused, untouched, if it is damaged.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        if !path.exists() {
            Self::create_atomically(path)?;
        }
        guarded(path, || {
            Self::load_verified(path)?;
            Self::open_existing(path)
        })
    }

    /// Opens the store at `path` for a command that only reads: the file is never opened for
    /// writing, and every read comes from a verified copy. `Ok(None)` if there is no store yet.
    pub fn open_read_only(path: &Path) -> Result<Option<RedbStore>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let (db, stamp) = guarded(path, || Self::load_verified(path))?;
        Ok(Some(RedbStore {
            db: Db::ReadOnly(Mutex::new(Snapshot {
                db: Arc::new(db),
                stamp,
            })),
            path: path.to_path_buf(),
        }))
    }

    /// Checks the file at `path` without writing it: every checksum, the schema, and every
    /// record. The error says what is wrong.
    pub fn verify(path: &Path) -> Result<(), StoreError> {
        guarded(path, || Self::load_verified(path).map(|_| ()))
    }

    /// Creates a complete, empty store at `path` without ever showing a half-made file: it is
    /// built under a temporary name and linked into place only if nothing is there yet. Two
    /// processes starting at once both end up opening the one that won.
    fn create_atomically(path: &Path) -> Result<(), StoreError> {
        let io = |detail: String| StoreError::Io {
            path: path.to_path_buf(),
            detail,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| io(format!("cannot create its folder: {e}")))?;
        }
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        static CREATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = CREATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        name.push(format!(".new-{}-{n}", std::process::id()));
        let fresh = path.with_file_name(name);
        let _ = std::fs::remove_file(&fresh);
        {
            let mut builder = Database::builder();
            builder.set_concurrency_mode(ConcurrencyMode::MultiWriter);
            let db = builder
                .create(&fresh)
                .map_err(|e| io(format!("cannot create it: {e}")))?;
            let store = RedbStore {
                db: Db::Writable(Arc::new(db)),
                path: fresh.clone(),
            };
            store.initialise()?;
        }
        let linked = std::fs::hard_link(&fresh, path);
        let _ = std::fs::remove_file(&fresh);
        match linked {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(err) => Err(io(format!("cannot put it in place: {err}"))),
        }
    }

    /// A verified in-memory copy of the file. A copy that fails is taken again while the file
    /// changes under it; a file that fails twice with the same bytes is damaged.
    fn load_verified(path: &Path) -> Result<(Database, Option<Stamp>), StoreError> {
        let mut previous: Option<Vec<u8>> = None;
        let mut last_error = None;
        for _ in 0..COPY_ATTEMPTS {
            let before = stamp(path);
            let bytes = std::fs::read(path).map_err(|e| StoreError::Io {
                path: path.to_path_buf(),
                detail: format!("cannot read it: {e}"),
            })?;
            match guarded(path, || Self::verify_copy(path, &bytes)) {
                Ok(db) => return Ok((db, before)),
                Err(err @ StoreError::Damaged { .. }) => {
                    if previous.as_deref() == Some(bytes.as_slice()) {
                        return Err(err);
                    }
                    previous = Some(bytes);
                    last_error = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_error.unwrap_or_else(|| StoreError::Damaged {
            path: path.to_path_buf(),
            detail: "it kept changing while it was checked".into(),
        }))
    }

    /// Opens `bytes` as a database in memory and checks it: redb's integrity check (every
    /// checksum of the committed trees), the schema, and every record.
    fn verify_copy(path: &Path, bytes: &[u8]) -> Result<Database, StoreError> {
        let damaged = |detail: String| StoreError::Damaged {
            path: path.to_path_buf(),
            detail,
        };
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(damaged("it does not start with redb's header".into()));
        }
        let backend = InMemoryBackend::new();
        backend
            .set_len(bytes.len() as u64)
            .and_then(|()| backend.write(0, bytes))
            .map_err(|e| damaged(format!("cannot copy it: {e}")))?;
        let mut db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| damaged(e.to_string()))?;
        match db.check_integrity() {
            Ok(true) => {}
            Ok(false) => {
                return Err(damaged(
                    "its checksums do not match what redb committed".into(),
                ));
            }
            Err(err) => return Err(damaged(err.to_string())),
        }
        let store = RedbStore {
            db: Db::Writable(Arc::new(db)),
            path: path.to_path_buf(),
        };
        store.check_schema()?;
        store.check_records()?;
        let Db::Writable(db) = store.db else {
            unreachable!("built writable above")
        };
        Arc::into_inner(db).ok_or_else(|| damaged("the copy is still in use".into()))
    }

    fn open_existing(path: &Path) -> Result<RedbStore, StoreError> {
        let damaged = |detail: String| StoreError::Damaged {
            path: path.to_path_buf(),
            detail,
        };
        let io = |detail: String| StoreError::Io {
            path: path.to_path_buf(),
            detail,
        };
        let mut builder = Database::builder();
        builder.set_concurrency_mode(ConcurrencyMode::MultiWriter);
        let db = match builder.open(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(err))) => {
                return Err(io(err.to_string()));
            }
            Err(err) => return Err(damaged(err.to_string())),
        };
        let store = RedbStore {
            db: Db::Writable(Arc::new(db)),
            path: path.to_path_buf(),
        };
        store.check_schema()?;
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn damaged(&self, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Damaged {
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }

    fn io(&self, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }

    /// The database to read: the file, or the verified copy, taken again if the file changed.
    fn reader(&self) -> Result<Arc<Database>, StoreError> {
        match &self.db {
            Db::Writable(db) => Ok(db.clone()),
            Db::ReadOnly(snapshot) => {
                let mut snapshot = snapshot.lock().unwrap_or_else(|p| p.into_inner());
                let now = stamp(&self.path);
                if now.is_none() || now != snapshot.stamp {
                    let (db, stamp) = Self::load_verified(&self.path)?;
                    snapshot.db = Arc::new(db);
                    snapshot.stamp = stamp;
                }
                Ok(snapshot.db.clone())
            }
        }
    }

    /// The database to write; refused when the store was opened read-only.
    fn writer(&self) -> Result<&Database, StoreError> {
        match &self.db {
            Db::Writable(db) => Ok(db),
            Db::ReadOnly(_) => Err(StoreError::ReadOnly(self.path.clone())),
        }
    }

    /// Decodes every record, so a damaged value is found before anything trusts the file.
    fn check_records(&self) -> Result<(), StoreError> {
        let db = self.reader()?;
        let txn = db.begin_read().map_err(|e| self.damaged(e))?;
        let runs = txn.open_table(RUNS).map_err(|e| self.damaged(e))?;
        for item in runs.iter().map_err(|e| self.damaged(e))? {
            let (_, bytes) = item.map_err(|e| self.damaged(e))?;
            self.decode::<RunHeader>("run header", bytes.value())?;
        }
        let events = txn.open_table(EVENTS).map_err(|e| self.damaged(e))?;
        for item in events.iter().map_err(|e| self.damaged(e))? {
            let (_, bytes) = item.map_err(|e| self.damaged(e))?;
            self.decode::<EventRecord>("run event", bytes.value())?;
        }
        let audit = txn.open_table(AUDIT).map_err(|e| self.damaged(e))?;
        for item in audit.iter().map_err(|e| self.damaged(e))? {
            let (_, bytes) = item.map_err(|e| self.damaged(e))?;
            self.decode::<AuditEntry>("audit entry", bytes.value())?;
        }
        let order = txn.open_table(RUN_ORDER).map_err(|e| self.damaged(e))?;
        for item in order.iter().map_err(|e| self.damaged(e))? {
            let (_, id) = item.map_err(|e| self.damaged(e))?;
            if runs.get(id.value()).map_err(|e| self.damaged(e))?.is_none() {
                return Err(self.damaged(format!("run {} is listed but missing", id.value())));
            }
        }
        let meta = txn.open_table(META).map_err(|e| self.damaged(e))?;
        if let Some(text) = meta.get("automation").map_err(|e| self.damaged(e))? {
            self.decode::<Automation>("automation", text.value().as_bytes())?;
        }
        for item in meta
            .range(LEGACY_STATUS_KEY..)
            .map_err(|e| self.damaged(e))?
        {
            let (key, text) = item.map_err(|e| self.damaged(e))?;
            if !key.value().starts_with(LEGACY_STATUS_KEY) {
                break;
            }
            serde_json::from_str::<serde_json::Value>(text.value())
                .map_err(|e| self.damaged(format!("daemon status: {e}")))?;
        }
        if let Some(text) = meta.get(LEASE_KEY).map_err(|e| self.damaged(e))? {
            self.decode::<LeaseRecord>("lease", text.value().as_bytes())?;
        }
        Ok(())
    }

    fn initialise(&self) -> Result<(), StoreError> {
        let txn = self.writer()?.begin_write().map_err(|e| self.io(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
            if meta.get("schema").map_err(|e| self.io(e))?.is_none() {
                meta.insert("schema", STORE_VERSION.to_string().as_str())
                    .map_err(|e| self.io(e))?;
            }
            txn.open_table(RUNS).map_err(|e| self.io(e))?;
            txn.open_table(RUN_ORDER).map_err(|e| self.io(e))?;
            txn.open_table(EVENTS).map_err(|e| self.io(e))?;
            txn.open_table(AUDIT).map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let db = self.reader()?;
        let txn = db.begin_read().map_err(|e| self.damaged(e))?;
        let meta = txn
            .open_table(META)
            .map_err(|e| self.damaged(format!("no dr tables: {e}")))?;
        let schema = meta
            .get("schema")
            .map_err(|e| self.damaged(e))?
            .ok_or_else(|| self.damaged("no schema version"))?
            .value()
            .parse::<u32>()
            .map_err(|e| self.damaged(format!("schema version: {e}")))?;
        check_version("the store", schema)?;
        for result in [
            txn.open_table(RUNS).map(|_| ()),
            txn.open_table(RUN_ORDER).map(|_| ()),
            txn.open_table(EVENTS).map(|_| ()),
            txn.open_table(AUDIT).map(|_| ()),
        ] {
            result.map_err(|e| self.damaged(e))?;
        }
        Ok(())
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| self.damaged(format!("{what}: {e}")))?;
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        check_version(what, version)?;
        serde_json::from_value(value).map_err(|e| self.damaged(format!("{what}: {e}")))
    }

    fn encode<T: serde::Serialize>(&self, value: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|e| self.io(e))
    }

    fn read_run(
        &self,
        txn: &impl ReadTables,
        run: &RunId,
    ) -> Result<Option<StoredRun>, StoreError> {
        let Some(header_bytes) = txn.run_header(run).map_err(|e| self.io(e))? else {
            return Ok(None);
        };
        let header: RunHeader = self.decode("run header", &header_bytes)?;
        let events = txn
            .run_events(run)
            .map_err(|e| self.io(e))?
            .iter()
            .map(|bytes| self.decode::<EventRecord>("run event", bytes))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(StoredRun { header, events }))
    }

    fn next_audit_key(table: &redb::Table<u64, &[u8]>) -> Result<u64, redb::StorageError> {
        Ok(table.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1))
    }
}

/// Reads shared by read and write transactions.
trait ReadTables {
    fn run_header(&self, run: &RunId) -> Result<Option<Vec<u8>>, redb::Error>;
    fn run_events(&self, run: &RunId) -> Result<Vec<Vec<u8>>, redb::Error>;
}

impl ReadTables for redb::ReadTransaction {
    fn run_header(&self, run: &RunId) -> Result<Option<Vec<u8>>, redb::Error> {
        let table = self.open_table(RUNS)?;
        Ok(table.get(run.as_str())?.map(|v| v.value().to_vec()))
    }
    fn run_events(&self, run: &RunId) -> Result<Vec<Vec<u8>>, redb::Error> {
        let table = self.open_table(EVENTS)?;
        let range = table.range((run.as_str(), 0)..=(run.as_str(), u64::MAX))?;
        range
            .map(|item| {
                item.map(|(_, v)| v.value().to_vec())
                    .map_err(redb::Error::from)
            })
            .collect()
    }
}

impl ReadTables for redb::WriteTransaction {
    fn run_header(&self, run: &RunId) -> Result<Option<Vec<u8>>, redb::Error> {
        let table = self.open_table(RUNS)?;
        let value = table.get(run.as_str())?.map(|v| v.value().to_vec());
        Ok(value)
    }
    fn run_events(&self, run: &RunId) -> Result<Vec<Vec<u8>>, redb::Error> {
        let table = self.open_table(EVENTS)?;
        let range = table.range((run.as_str(), 0)..=(run.as_str(), u64::MAX))?;
        // Collected into a local so the range's borrow of the table ends before `table` drops.
        let values: Result<Vec<Vec<u8>>, redb::Error> = range
            .map(|item| {
                item.map(|(_, v)| v.value().to_vec())
                    .map_err(redb::Error::from)
            })
            .collect();
        drop(table);
        values
    }
}

/// The store's operations, unguarded; `Store` runs each inside `guarded`.
impl RedbStore {
    fn read_lease(
        &self,
        meta: &impl ReadableTable<&'static str, &'static str>,
    ) -> Result<Option<LeaseRecord>, StoreError> {
        match meta.get(LEASE_KEY).map_err(|e| self.io(e))? {
            Some(text) => Ok(Some(self.decode("lease", text.value().as_bytes())?)),
            None => Ok(None),
        }
    }

    fn raw_create_run(
        &self,
        header: &RunHeader,
        actor: &Actor,
        reason: &str,
        epoch: Option<u64>,
    ) -> Result<(), StoreError> {
        let txn = self.writer()?.begin_write().map_err(|e| self.io(e))?;
        {
            let meta = txn.open_table(META).map_err(|e| self.io(e))?;
            check_fence(epoch, self.read_lease(&meta)?.as_ref())?;
        }
        // A pause recorded after the daemon decided still stops its run: checked in the same
        // write transaction that creates the run.
        if matches!(header.trigger, Trigger::Automatic { .. }) {
            let paused = match txn
                .open_table(META)
                .map_err(|e| self.io(e))?
                .get("automation")
                .map_err(|e| self.io(e))?
            {
                Some(text) => {
                    self.decode::<Automation>("automation", text.value().as_bytes())?
                        .paused
                }
                None => false,
            };
            if paused {
                return Err(StoreError::AutomationPaused(header.id.clone()));
            }
        }
        let active = txn
            .open_table(META)
            .map_err(|e| self.io(e))?
            .get("active_run")
            .map_err(|e| self.io(e))?
            .map(|v| RunId::new(v.value()));
        if let Some(active) = active {
            let status = match self.read_run(&txn, &active)? {
                Some(stored) => status_text(&stored),
                None => "missing".to_string(),
            };
            return Err(StoreError::RunActive {
                run: active,
                status,
            });
        }
        if txn
            .run_header(&header.id)
            .map_err(|e| self.io(e))?
            .is_some()
        {
            return Err(StoreError::DuplicateRun(header.id.clone()));
        }
        let header_bytes = self.encode(header)?;
        let audit_bytes = self.encode(&creation_audit(header, actor, reason))?;
        {
            let mut runs = txn.open_table(RUNS).map_err(|e| self.io(e))?;
            runs.insert(header.id.as_str(), header_bytes.as_slice())
                .map_err(|e| self.io(e))?;
            let mut order = txn.open_table(RUN_ORDER).map_err(|e| self.io(e))?;
            let next = order
                .last()
                .map_err(|e| self.io(e))?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(1);
            order
                .insert(next, header.id.as_str())
                .map_err(|e| self.io(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
            meta.insert("active_run", header.id.as_str())
                .map_err(|e| self.io(e))?;
            let mut audit = txn.open_table(AUDIT).map_err(|e| self.io(e))?;
            let key = Self::next_audit_key(&audit).map_err(|e| self.io(e))?;
            audit
                .insert(key, audit_bytes.as_slice())
                .map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    fn raw_append(
        &self,
        run: &RunId,
        at: Timestamp,
        actor: &Actor,
        event: RunEvent,
        epoch: Option<u64>,
    ) -> Result<EventRecord, StoreError> {
        let txn = self.writer()?.begin_write().map_err(|e| self.io(e))?;
        {
            let meta = txn.open_table(META).map_err(|e| self.io(e))?;
            check_fence(epoch, self.read_lease(&meta)?.as_ref())?;
        }
        let stored = self
            .read_run(&txn, run)?
            .ok_or_else(|| StoreError::NoSuchRun(run.clone()))?;
        let (record, finished) = prepare_append(&stored, at, actor, event, epoch)?;
        let record_bytes = self.encode(&record)?;
        let audit_bytes = self.encode(&AuditEntry::of_event(run, &record))?;
        {
            let mut events = txn.open_table(EVENTS).map_err(|e| self.io(e))?;
            events
                .insert((run.as_str(), record.seq), record_bytes.as_slice())
                .map_err(|e| self.io(e))?;
            if finished {
                let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
                let is_active = meta
                    .get("active_run")
                    .map_err(|e| self.io(e))?
                    .is_some_and(|v| v.value() == run.as_str());
                if is_active {
                    meta.remove("active_run").map_err(|e| self.io(e))?;
                }
            }
            let mut audit = txn.open_table(AUDIT).map_err(|e| self.io(e))?;
            let key = Self::next_audit_key(&audit).map_err(|e| self.io(e))?;
            audit
                .insert(key, audit_bytes.as_slice())
                .map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))?;
        Ok(record)
    }

    fn raw_load_run(&self, run: &RunId) -> Result<Option<StoredRun>, StoreError> {
        let txn = self.reader()?.begin_read().map_err(|e| self.io(e))?;
        self.read_run(&txn, run)
    }

    fn raw_list_runs(&self, limit: usize) -> Result<Vec<RunHeader>, StoreError> {
        let txn = self.reader()?.begin_read().map_err(|e| self.io(e))?;
        let order = txn.open_table(RUN_ORDER).map_err(|e| self.io(e))?;
        let runs = txn.open_table(RUNS).map_err(|e| self.io(e))?;
        let mut headers = Vec::new();
        for item in order.iter().map_err(|e| self.io(e))?.rev().take(limit) {
            let (_, id) = item.map_err(|e| self.io(e))?;
            let bytes = runs
                .get(id.value())
                .map_err(|e| self.io(e))?
                .ok_or_else(|| self.damaged(format!("run {} is listed but missing", id.value())))?;
            headers.push(self.decode("run header", bytes.value())?);
        }
        Ok(headers)
    }

    fn raw_active_run(&self) -> Result<Option<RunId>, StoreError> {
        let txn = self.reader()?.begin_read().map_err(|e| self.io(e))?;
        let meta = txn.open_table(META).map_err(|e| self.io(e))?;
        let active = meta
            .get("active_run")
            .map_err(|e| self.io(e))?
            .map(|v| RunId::new(v.value()));
        Ok(active)
    }

    fn raw_record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let bytes = self.encode(entry)?;
        let txn = self.writer()?.begin_write().map_err(|e| self.io(e))?;
        {
            let mut audit = txn.open_table(AUDIT).map_err(|e| self.io(e))?;
            let key = Self::next_audit_key(&audit).map_err(|e| self.io(e))?;
            audit
                .insert(key, bytes.as_slice())
                .map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    fn raw_audit(&self, run: Option<&RunId>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let txn = self.reader()?.begin_read().map_err(|e| self.io(e))?;
        let audit = txn.open_table(AUDIT).map_err(|e| self.io(e))?;
        let mut entries = Vec::new();
        for item in audit.iter().map_err(|e| self.io(e))?.rev() {
            if entries.len() >= limit {
                break;
            }
            let (_, bytes) = item.map_err(|e| self.io(e))?;
            let entry: AuditEntry = self.decode("audit entry", bytes.value())?;
            if run.is_none() || entry.run.as_ref() == run {
                entries.push(entry);
            }
        }
        entries.reverse();
        Ok(entries)
    }

    fn raw_automation(&self) -> Result<Automation, StoreError> {
        let txn = self.reader()?.begin_read().map_err(|e| self.io(e))?;
        let meta = txn.open_table(META).map_err(|e| self.io(e))?;
        let value = meta.get("automation").map_err(|e| self.io(e))?;
        match value {
            Some(text) => self.decode("automation", text.value().as_bytes()),
            None => Ok(Automation::default()),
        }
    }

    fn raw_set_automation(
        &self,
        automation: &Automation,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut automation = automation.clone();
        automation.version = STORE_VERSION;
        let text = String::from_utf8(self.encode(&automation)?).map_err(|e| self.io(e))?;
        let audit_bytes = self.encode(audit)?;
        let txn = self.writer()?.begin_write().map_err(|e| self.io(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
            meta.insert("automation", text.as_str())
                .map_err(|e| self.io(e))?;
            let mut table = txn.open_table(AUDIT).map_err(|e| self.io(e))?;
            let key = Self::next_audit_key(&table).map_err(|e| self.io(e))?;
            table
                .insert(key, audit_bytes.as_slice())
                .map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    fn raw_daemon_statuses(&self) -> Result<Vec<(String, String)>, StoreError> {
        let txn = self.reader()?.begin_read().map_err(|e| self.io(e))?;
        let meta = txn.open_table(META).map_err(|e| self.io(e))?;
        let mut statuses = Vec::new();
        for item in meta.range(LEGACY_STATUS_KEY..).map_err(|e| self.io(e))? {
            let (key, text) = item.map_err(|e| self.io(e))?;
            let key = key.value();
            if key == LEGACY_STATUS_KEY {
                statuses.push(("daemon".to_string(), text.value().to_string()));
            } else if let Some(id) = key.strip_prefix(STATUS_PREFIX) {
                statuses.push((id.to_string(), text.value().to_string()));
            } else if !key.starts_with(LEGACY_STATUS_KEY) {
                break;
            }
        }
        Ok(statuses)
    }

    fn raw_put_daemon_status(&self, daemon: &str, json: &str) -> Result<(), StoreError> {
        let txn = self.writer()?.begin_write().map_err(|e| self.io(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
            // The status of a daemon that ran before statuses were kept per daemon is replaced.
            meta.remove(LEGACY_STATUS_KEY).map_err(|e| self.io(e))?;
            meta.insert(format!("{STATUS_PREFIX}{daemon}").as_str(), json)
                .map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    fn raw_lease(&self) -> Result<Option<LeaseRecord>, StoreError> {
        let txn = self.reader()?.begin_read().map_err(|e| self.io(e))?;
        let meta = txn.open_table(META).map_err(|e| self.io(e))?;
        self.read_lease(&meta)
    }

    fn raw_swap_lease(
        &self,
        expected: Option<&LeaseRecord>,
        next: &LeaseRecord,
    ) -> Result<bool, StoreError> {
        let text = String::from_utf8(self.encode(next)?).map_err(|e| self.io(e))?;
        let txn = self.writer()?.begin_write().map_err(|e| self.io(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
            if !lease_matches(self.read_lease(&meta)?.as_ref(), expected) {
                return Ok(false);
            }
            meta.insert(LEASE_KEY, text.as_str())
                .map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))?;
        Ok(true)
    }
}

impl Store for RedbStore {
    fn create_run_fenced(
        &self,
        header: &RunHeader,
        actor: &Actor,
        reason: &str,
        epoch: Option<u64>,
    ) -> Result<(), StoreError> {
        guarded(&self.path, || {
            self.raw_create_run(header, actor, reason, epoch)
        })
    }

    fn append_fenced(
        &self,
        run: &RunId,
        at: Timestamp,
        actor: &Actor,
        event: RunEvent,
        epoch: Option<u64>,
    ) -> Result<EventRecord, StoreError> {
        guarded(&self.path, || self.raw_append(run, at, actor, event, epoch))
    }

    fn load_run(&self, run: &RunId) -> Result<Option<StoredRun>, StoreError> {
        guarded(&self.path, || self.raw_load_run(run))
    }

    fn list_runs(&self, limit: usize) -> Result<Vec<RunHeader>, StoreError> {
        guarded(&self.path, || self.raw_list_runs(limit))
    }

    fn active_run(&self) -> Result<Option<RunId>, StoreError> {
        guarded(&self.path, || self.raw_active_run())
    }

    fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        guarded(&self.path, || self.raw_record_audit(entry))
    }

    fn audit(&self, run: Option<&RunId>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        guarded(&self.path, || self.raw_audit(run, limit))
    }

    fn automation(&self) -> Result<Automation, StoreError> {
        guarded(&self.path, || self.raw_automation())
    }

    fn set_automation(
        &self,
        automation: &Automation,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        guarded(&self.path, || self.raw_set_automation(automation, audit))
    }

    fn daemon_statuses(&self) -> Result<Vec<(String, String)>, StoreError> {
        guarded(&self.path, || self.raw_daemon_statuses())
    }

    fn put_daemon_status(&self, daemon: &str, json: &str) -> Result<(), StoreError> {
        guarded(&self.path, || self.raw_put_daemon_status(daemon, json))
    }

    fn lease(&self) -> Result<Option<LeaseRecord>, StoreError> {
        guarded(&self.path, || self.raw_lease())
    }

    fn swap_lease(
        &self,
        expected: Option<&LeaseRecord>,
        next: &LeaseRecord,
    ) -> Result<bool, StoreError> {
        guarded(&self.path, || self.raw_swap_lease(expected, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redb_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("store.redb")).unwrap();
        super::super::contract::check(&store);
        let store = RedbStore::open(&dir.path().join("lease.redb")).unwrap();
        super::super::contract::check_lease(&store);
    }

    #[test]
    fn runs_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/store.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            store
                .create_run(
                    &super::super::contract::header("r-1"),
                    &Actor::new("a"),
                    "x",
                )
                .unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.active_run().unwrap(), Some(RunId::new("r-1")));
        assert!(store.load_run(&RunId::new("r-1")).unwrap().is_some());
    }

    fn assert_refused_untouched(bytes: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        std::fs::write(&path, bytes).unwrap();
        let err = RedbStore::open(&path).err().expect("refused");
        assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("left untouched"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file was changed");
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused_and_left_untouched() {
        assert_refused_untouched(b"");
        assert_refused_untouched(b"hello, this is a text file\n");
        assert_refused_untouched(&[0u8; 8192]);
    }

    #[test]
    fn a_truncated_or_scribbled_store_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("good.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            super::super::contract::check(&store);
        }
        let good = std::fs::read(&path).unwrap();
        assert_refused_untouched(&good[..good.len().min(700)]);
        let mut scribbled = good.clone();
        for byte in scribbled.iter_mut().skip(9).take(4000) {
            *byte ^= 0x5a;
        }
        assert_refused_untouched(&scribbled);
    }

    #[test]
    fn processes_that_create_the_store_at_once_all_open_the_same_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || RedbStore::open(&path).map(|_| ()))
            })
            .collect();
        for handle in handles {
            handle.join().unwrap().unwrap();
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary files were left behind");
    }

    #[test]
    fn two_handles_on_one_file_see_each_others_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let a = RedbStore::open(&path).unwrap();
        let b = RedbStore::open(&path).unwrap();
        a.create_run(
            &super::super::contract::header("r-1"),
            &Actor::new("a"),
            "x",
        )
        .unwrap();
        assert_eq!(b.active_run().unwrap(), Some(RunId::new("r-1")));
        let err = b
            .create_run(
                &super::super::contract::header("r-2"),
                &Actor::new("b"),
                "y",
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::RunActive { .. }));
    }
}
