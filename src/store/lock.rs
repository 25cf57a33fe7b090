//! The executor lock: at most one process carries runs out against a store at a time.
//!
//! A sidecar file next to the store, held with an exclusive OS file lock for as long as the
//! process executes, and holding a description of the holder so others can say who it is. The
//! OS releases the lock when the process dies, so a SIGKILLed run can be resumed at once.

use crate::core::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Who holds the executor lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// The command it runs, such as `dr failover --to us-west-2`.
    pub command: String,
    /// Since when.
    pub since: Timestamp,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` (pid {}, since {})",
            self.command, self.pid, self.since
        )
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another dr process is carrying out runs on this store: {holder}; wait for it, or stop it (Ctrl-C pauses its run at the next checkpoint)"
    )]
    Held {
        /// Who, as far as the lock file says.
        holder: String,
    },
    /// The lock file could not be used.
    #[error("cannot use executor lock file {path}: {detail}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// A held executor lock; released on drop.
pub struct ExecutorLock {
    _file: File,
}

impl ExecutorLock {
    /// The lock file of a store.
    pub fn path_for(store: &Path) -> PathBuf {
        let mut name = store.file_name().unwrap_or_default().to_os_string();
        name.push(".executor");
        store.with_file_name(name)
    }

    /// Takes the lock for `holder`, or says who has it.
    pub fn acquire(store: &Path, holder: &Holder) -> Result<ExecutorLock, LockError> {
        let path = Self::path_for(store);
        let io = |detail: String| LockError::Io {
            path: path.clone(),
            detail,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io(e.to_string()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(e.to_string()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    holder: Self::describe_holder(&mut file),
                });
            }
            Err(std::fs::TryLockError::Error(err)) => return Err(io(err.to_string())),
        }
        let text = serde_json::to_string(holder).map_err(|e| io(e.to_string()))?;
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|_| file.sync_all())
            .map_err(|e| io(e.to_string()))?;
        Ok(ExecutorLock { _file: file })
    }

    /// The current holder, if any process holds the lock.
    pub fn holder(store: &Path) -> Option<String> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(Self::path_for(store))
            .ok()?;
        match file.try_lock() {
            Ok(()) => None,
            Err(_) => Some(Self::describe_holder(&mut file)),
        }
    }

    fn describe_holder(file: &mut File) -> String {
        let mut text = String::new();
        let _ = file.seek(SeekFrom::Start(0));
        let _ = file.read_to_string(&mut text);
        serde_json::from_str::<Holder>(&text)
            .map(|h| h.to_string())
            .unwrap_or_else(|_| "an unknown process".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_told_who_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store.redb");
        let holder = Holder {
            pid: 42,
            command: "dr failover --to us-west-2".into(),
            since: Timestamp(0),
        };
        let held = ExecutorLock::acquire(&store, &holder).unwrap();
        let err = ExecutorLock::acquire(&store, &holder).err().unwrap();
        assert!(err.to_string().contains("pid 42"), "{err}");
        assert!(
            ExecutorLock::holder(&store)
                .unwrap()
                .contains("dr failover")
        );
        drop(held);
        assert!(ExecutorLock::holder(&store).is_none());
        ExecutorLock::acquire(&store, &holder).unwrap();
    }
}
