//! The durable store on redb: ACID, a stable file format, fsync on every commit.
//!
//! Chosen over sled (see ARCHITECTURE.md, "Why redb"). Opened in redb's multi-writer mode so the
//! CLI can read and append (approve, abort) while an executor process holds the same file; every
//! write transaction is serialised across processes by redb's file locks.
//! A file that is not a readable dr store is refused and never written: the magic bytes are
//! checked before redb sees the file, and a panic inside redb's open is caught.

use super::{
    AuditEntry, STORE_VERSION, Store, StoreError, StoredRun, check_version, creation_audit,
    prepare_append, status_text,
};
use crate::core::decision::Automation;
use crate::core::ids::{Actor, RunId};
use crate::core::run::{EventRecord, RunEvent, RunHeader, Trigger};
use crate::core::time::Timestamp;
use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::io::Read;
use std::path::{Path, PathBuf};

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const RUN_ORDER: TableDefinition<u64, &str> = TableDefinition::new("run_order");
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

const MAGIC: &[u8] = b"redb";

/// The store in a redb file.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl RedbStore {
    /// Opens the store at `path`, creating it (and its folder) if it does not exist.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        if !path.exists() {
            Self::create_atomically(path)?;
        }
        Self::open_existing(path)
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
                db,
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

    fn open_existing(path: &Path) -> Result<RedbStore, StoreError> {
        let damaged = |detail: String| StoreError::Damaged {
            path: path.to_path_buf(),
            detail,
        };
        let io = |detail: String| StoreError::Io {
            path: path.to_path_buf(),
            detail,
        };
        let mut head = [0u8; 4];
        let mut file = std::fs::File::open(path).map_err(|e| io(format!("cannot read it: {e}")))?;
        let read = file
            .read(&mut head)
            .map_err(|e| io(format!("cannot read it: {e}")))?;
        if read < MAGIC.len() || head != MAGIC {
            return Err(damaged("it does not start with redb's header".into()));
        }
        let mut builder = Database::builder();
        builder.set_concurrency_mode(ConcurrencyMode::MultiWriter);
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.open(path)));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(err)))) => {
                return Err(io(err.to_string()));
            }
            Ok(Err(err)) => return Err(damaged(err.to_string())),
            Err(_) => return Err(damaged("redb could not read its structure".into())),
        };
        let store = RedbStore {
            db,
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

    fn initialise(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
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
        let txn = self.db.begin_read().map_err(|e| self.damaged(e))?;
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

impl Store for RedbStore {
    fn create_run(
        &self,
        header: &RunHeader,
        actor: &Actor,
        reason: &str,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
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

    fn append(
        &self,
        run: &RunId,
        at: Timestamp,
        actor: &Actor,
        event: RunEvent,
    ) -> Result<EventRecord, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        let stored = self
            .read_run(&txn, run)?
            .ok_or_else(|| StoreError::NoSuchRun(run.clone()))?;
        let (record, finished) = prepare_append(&stored, at, actor, event)?;
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

    fn load_run(&self, run: &RunId) -> Result<Option<StoredRun>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        self.read_run(&txn, run)
    }

    fn list_runs(&self, limit: usize) -> Result<Vec<RunHeader>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
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

    fn active_run(&self) -> Result<Option<RunId>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let meta = txn.open_table(META).map_err(|e| self.io(e))?;
        let active = meta
            .get("active_run")
            .map_err(|e| self.io(e))?
            .map(|v| RunId::new(v.value()));
        Ok(active)
    }

    fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let bytes = self.encode(entry)?;
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut audit = txn.open_table(AUDIT).map_err(|e| self.io(e))?;
            let key = Self::next_audit_key(&audit).map_err(|e| self.io(e))?;
            audit
                .insert(key, bytes.as_slice())
                .map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    fn audit(&self, run: Option<&RunId>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
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

    fn automation(&self) -> Result<Automation, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let meta = txn.open_table(META).map_err(|e| self.io(e))?;
        let value = meta.get("automation").map_err(|e| self.io(e))?;
        match value {
            Some(text) => self.decode("automation", text.value().as_bytes()),
            None => Ok(Automation::default()),
        }
    }

    fn set_automation(
        &self,
        automation: &Automation,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut automation = automation.clone();
        automation.version = STORE_VERSION;
        let text = String::from_utf8(self.encode(&automation)?).map_err(|e| self.io(e))?;
        let audit_bytes = self.encode(audit)?;
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
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

    fn daemon_status(&self) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let meta = txn.open_table(META).map_err(|e| self.io(e))?;
        let value = meta
            .get("daemon_status")
            .map_err(|e| self.io(e))?
            .map(|v| v.value().to_string());
        Ok(value)
    }

    fn put_daemon_status(&self, json: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
            meta.insert("daemon_status", json).map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
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
