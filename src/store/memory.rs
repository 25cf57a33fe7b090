//! The in-memory twin of the redb store, for drills and tests. Same contract, no durability.

use super::{
    AuditEntry, Store, StoreError, StoredRun, check_fence, creation_audit, lease_matches,
    prepare_append, status_text,
};
use crate::core::decision::Automation;
use crate::core::ids::{Actor, RunId};
use crate::core::lease::LeaseRecord;
use crate::core::run::{EventRecord, RunEvent, RunHeader, Trigger};
use crate::core::time::Timestamp;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    runs: BTreeMap<RunId, StoredRun>,
    order: Vec<RunId>,
    active: Option<RunId>,
    audit: Vec<AuditEntry>,
    automation: Automation,
    daemon_statuses: BTreeMap<String, String>,
    lease: Option<LeaseRecord>,
}

/// A store that lives and dies with the process.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemoryStore {
    fn create_run_fenced(
        &self,
        header: &RunHeader,
        actor: &Actor,
        reason: &str,
        epoch: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner();
        check_fence(epoch, inner.lease.as_ref())?;
        if matches!(header.trigger, Trigger::Automatic { .. }) && inner.automation.paused {
            return Err(StoreError::AutomationPaused(header.id.clone()));
        }
        if let Some(active) = &inner.active {
            let status = status_text(&inner.runs[active]);
            return Err(StoreError::RunActive {
                run: active.clone(),
                status,
            });
        }
        if inner.runs.contains_key(&header.id) {
            return Err(StoreError::DuplicateRun(header.id.clone()));
        }
        inner.runs.insert(
            header.id.clone(),
            StoredRun {
                header: header.clone(),
                events: Vec::new(),
            },
        );
        inner.order.push(header.id.clone());
        inner.active = Some(header.id.clone());
        inner.audit.push(creation_audit(header, actor, reason));
        Ok(())
    }

    fn append_fenced(
        &self,
        run: &RunId,
        at: Timestamp,
        actor: &Actor,
        event: RunEvent,
        epoch: Option<u64>,
    ) -> Result<EventRecord, StoreError> {
        let mut inner = self.inner();
        check_fence(epoch, inner.lease.as_ref())?;
        let stored = inner
            .runs
            .get(run)
            .ok_or_else(|| StoreError::NoSuchRun(run.clone()))?;
        let (record, finished) = prepare_append(stored, at, actor, event, epoch)?;
        inner
            .runs
            .get_mut(run)
            .expect("checked above")
            .events
            .push(record.clone());
        if finished && inner.active.as_ref() == Some(run) {
            inner.active = None;
        }
        inner.audit.push(AuditEntry::of_event(run, &record));
        Ok(record)
    }

    fn load_run(&self, run: &RunId) -> Result<Option<StoredRun>, StoreError> {
        Ok(self.inner().runs.get(run).cloned())
    }

    fn list_runs(&self, limit: usize) -> Result<Vec<RunHeader>, StoreError> {
        let inner = self.inner();
        Ok(inner
            .order
            .iter()
            .rev()
            .take(limit)
            .map(|id| inner.runs[id].header.clone())
            .collect())
    }

    fn active_run(&self) -> Result<Option<RunId>, StoreError> {
        Ok(self.inner().active.clone())
    }

    fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.inner().audit.push(entry.clone());
        Ok(())
    }

    fn audit(&self, run: Option<&RunId>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let inner = self.inner();
        let matching: Vec<AuditEntry> = inner
            .audit
            .iter()
            .filter(|e| run.is_none() || e.run.as_ref() == run)
            .cloned()
            .collect();
        let skip = matching.len().saturating_sub(limit);
        Ok(matching.into_iter().skip(skip).collect())
    }

    fn automation(&self) -> Result<Automation, StoreError> {
        Ok(self.inner().automation.clone())
    }

    fn set_automation(
        &self,
        automation: &Automation,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner();
        inner.automation = automation.clone();
        inner.audit.push(audit.clone());
        Ok(())
    }

    fn daemon_statuses(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .inner()
            .daemon_statuses
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn put_daemon_status(&self, daemon: &str, json: &str) -> Result<(), StoreError> {
        self.inner()
            .daemon_statuses
            .insert(daemon.to_string(), json.to_string());
        Ok(())
    }

    fn lease(&self) -> Result<Option<LeaseRecord>, StoreError> {
        Ok(self.inner().lease.clone())
    }

    fn swap_lease(
        &self,
        expected: Option<&LeaseRecord>,
        next: &LeaseRecord,
    ) -> Result<bool, StoreError> {
        let mut inner = self.inner();
        if !lease_matches(inner.lease.as_ref(), expected) {
            return Ok(false);
        }
        inner.lease = Some(next.clone());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_meets_the_contract() {
        super::super::contract::check(&super::MemoryStore::new());
        super::super::contract::check_lease(&super::MemoryStore::new());
    }
}
