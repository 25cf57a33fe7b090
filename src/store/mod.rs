//! The checkpoint store: runs, their event logs, and the audit log. The single truth for the
//! daemon, the CLI and the API.
//!
//! `Store` is a small synchronous trait with two implementations: `RedbStore` (durable, every
//! commit fsynced) and `MemoryStore` (tests and drills). Both check each appended event with the
//! core's transition function inside the same transaction that writes it, and both enforce one
//! unfinished run at a time. The store never decides what a run does next.

mod lock;
mod memory;
mod redb_store;

pub use lock::{ExecutorLock, Holder, LockError};
pub use memory::MemoryStore;
pub use redb_store::RedbStore;

use crate::core::decision::Automation;
use crate::core::ids::{Actor, RunId};
use crate::core::run::{
    EventRecord, RUN_VERSION, RunEvent, RunHeader, RunState, RunStatus, TransitionError,
};
use crate::core::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Version of the store's layout and records.
pub const STORE_VERSION: u32 = 1;

/// What the store could not do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file is not a readable dr store. It has not been changed.
    #[error(
        "store {path} is damaged or is not a dr store ({detail}); it was left untouched: move it aside to start a new store, or restore it from a backup"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The file could not be opened or written.
    #[error("store {path} cannot be used: {detail}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A record is of a version this build does not read.
    #[error("{what} is version {found}; this dr reads version {supported}: upgrade dr")]
    UnsupportedVersion {
        /// Which record.
        what: String,
        /// Its version.
        found: u32,
        /// What this build reads.
        supported: u32,
    },
    /// Another run has not finished.
    #[error(
        "run {run} is not finished ({status}); resume it with `dr resume` or end it with `dr abort` before starting another"
    )]
    RunActive {
        /// The unfinished run.
        run: RunId,
        /// Its status.
        status: String,
    },
    /// A write through a store a read-only command opened: a bug in that command.
    #[error("store {0} was opened read-only by a command that only reads; nothing was written")]
    ReadOnly(PathBuf),
    /// No run with this id.
    #[error("there is no run {0}; `dr runs` lists them")]
    NoSuchRun(RunId),
    /// A run id is taken.
    #[error("a run with id {0} already exists")]
    DuplicateRun(RunId),
    /// The event is not allowed in the run's state.
    #[error("refused: {0}")]
    Refused(#[from] TransitionError),
    /// An automatic run was not created: automation was paused, in the same transaction.
    #[error(
        "automation is paused, so the automatic run {0} was not started; `dr unpause` turns automation back on"
    )]
    AutomationPaused(RunId),
}

impl StoreError {
    /// Whether the store itself cannot be used (damaged, unreadable, unwritable), as opposed to
    /// refusing one request.
    pub fn is_unusable(&self) -> bool {
        matches!(
            self,
            StoreError::Damaged { .. }
                | StoreError::Io { .. }
                | StoreError::UnsupportedVersion { .. }
                | StoreError::ReadOnly(_)
        )
    }
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Schema version.
    pub version: u32,
    /// When.
    pub at: Timestamp,
    /// Who.
    pub actor: Actor,
    /// The run it concerns, if any.
    pub run: Option<RunId>,
    /// What was done or decided.
    pub action: String,
    /// Why.
    pub reason: String,
}

impl AuditEntry {
    /// The audit line of a run event.
    pub fn of_event(run: &RunId, record: &EventRecord) -> AuditEntry {
        let (action, reason) = match &record.event {
            RunEvent::StepStarted { step, attempt } => (
                format!("step {step} started (attempt {attempt})"),
                String::new(),
            ),
            RunEvent::StepProgress { step, note } => {
                (format!("step {step}: {note}"), String::new())
            }
            RunEvent::StepSucceeded { step, outcome } => (
                format!(
                    "step {step} {}",
                    if outcome.degraded {
                        "ended degraded"
                    } else {
                        "succeeded"
                    }
                ),
                outcome.summary.clone(),
            ),
            RunEvent::StepFailed { step, error } => (format!("step {step} failed"), error.clone()),
            RunEvent::StepInterrupted { step, reason } => {
                (format!("step {step} interrupted"), reason.clone())
            }
            RunEvent::StepSkipped { step, reason } => {
                (format!("step {step} skipped"), reason.clone())
            }
            RunEvent::Approved { step, reason, .. } => {
                (format!("step {step} approved"), reason.clone())
            }
            RunEvent::Paused { reason } => ("run paused".into(), reason.clone()),
            RunEvent::Resumed { reason } => ("run resumed".into(), reason.clone()),
            RunEvent::AbortRequested { reason } => ("abort requested".into(), reason.clone()),
            RunEvent::Requested { step, handle } => (
                format!("step {step} requested a change"),
                handle.to_string(),
            ),
            RunEvent::StepGated { step, gate } => (
                format!("step {step} waits for approval"),
                gate.reason.clone(),
            ),
            RunEvent::Promoting { step, lag_ms } => (
                format!("step {step} sends the promotion"),
                match lag_ms {
                    Some(ms) => format!(
                        "replication lag read immediately before: {}",
                        crate::core::time::fmt_duration(std::time::Duration::from_millis(*ms))
                    ),
                    None => "replication lag not measured".into(),
                },
            ),
            RunEvent::Finished { outcome } => (format!("run finished: {outcome}"), String::new()),
        };
        AuditEntry {
            version: STORE_VERSION,
            at: record.at,
            actor: record.actor.clone(),
            run: Some(run.clone()),
            action,
            reason,
        }
    }
}

/// A run as stored: its header and its whole log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRun {
    /// Header.
    pub header: RunHeader,
    /// Events, in order.
    pub events: Vec<EventRecord>,
}

impl StoredRun {
    /// The folded state.
    pub fn state(&self) -> Result<RunState, StoreError> {
        Ok(RunState::replay(&self.header.plan, &self.events)?)
    }
}

/// Durable storage of runs and the audit log.
pub trait Store: Send + Sync {
    /// Stores a new run. Fails with `RunActive` while another run is unfinished.
    fn create_run(&self, header: &RunHeader, actor: &Actor, reason: &str)
    -> Result<(), StoreError>;

    /// Checks `event` against the run's state and appends it, with its audit line, in one
    /// durable transaction. Returns the stored record.
    fn append(
        &self,
        run: &RunId,
        at: Timestamp,
        actor: &Actor,
        event: RunEvent,
    ) -> Result<EventRecord, StoreError>;

    /// One run with its log.
    fn load_run(&self, run: &RunId) -> Result<Option<StoredRun>, StoreError>;

    /// Run headers, newest first.
    fn list_runs(&self, limit: usize) -> Result<Vec<RunHeader>, StoreError>;

    /// The unfinished run, if any.
    fn active_run(&self) -> Result<Option<RunId>, StoreError>;

    /// Adds an audit line that is not a run event (a decision, a refused command).
    fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// Audit lines, oldest first, of one run or of everything; at most `limit`, the newest.
    fn audit(&self, run: Option<&RunId>, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// The automation switches (paused, cooldown cleared).
    fn automation(&self) -> Result<Automation, StoreError>;

    /// Replaces the automation switches and records why, in one transaction.
    fn set_automation(&self, automation: &Automation, audit: &AuditEntry)
    -> Result<(), StoreError>;

    /// The daemon's last published status (JSON), for `dr status` in other processes.
    fn daemon_status(&self) -> Result<Option<String>, StoreError>;

    /// Publishes the daemon's status (JSON).
    fn put_daemon_status(&self, json: &str) -> Result<(), StoreError>;
}

/// The checks both implementations make before appending: returns the record to write and
/// whether it finishes the run.
fn prepare_append(
    stored: &StoredRun,
    at: Timestamp,
    actor: &Actor,
    event: RunEvent,
) -> Result<(EventRecord, bool), StoreError> {
    let mut state = stored.state()?;
    let record = EventRecord {
        version: RUN_VERSION,
        seq: state.last_seq + 1,
        at,
        actor: actor.clone(),
        event,
    };
    state.apply(&record)?;
    Ok((record, state.outcome.is_some()))
}

/// Checks a record's version.
fn check_version(what: &str, found: u32) -> Result<(), StoreError> {
    if found > STORE_VERSION.max(RUN_VERSION) {
        return Err(StoreError::UnsupportedVersion {
            what: what.to_string(),
            found,
            supported: STORE_VERSION,
        });
    }
    Ok(())
}

/// The audit line of a new run.
fn creation_audit(header: &RunHeader, actor: &Actor, reason: &str) -> AuditEntry {
    let request = &header.plan.request;
    AuditEntry {
        version: STORE_VERSION,
        at: header.created_at,
        actor: actor.clone(),
        run: Some(header.id.clone()),
        action: format!(
            "{}{} from {} to {} created ({})",
            if header.dry_run { "dry-run " } else { "" },
            header.kind,
            request.from,
            request.to,
            header.trigger
        ),
        reason: reason.to_string(),
    }
}

/// Status text of an unfinished run, for `RunActive`.
fn status_text(stored: &StoredRun) -> String {
    stored
        .state()
        .map(|s| s.status())
        .map(|s: RunStatus| s.to_string())
        .unwrap_or_else(|e| format!("unreadable: {e}"))
}

#[cfg(test)]
pub(crate) mod contract {
    //! One behavioural test suite that every `Store` implementation must pass.

    use super::*;
    use crate::core::ids::StepName;
    use crate::core::plan::{PlanOptions, PlanRequest, RunKind, build_plan};
    use crate::core::run::{RunOutcome, StepOutcome, Trigger};

    pub(crate) fn header(id: &str) -> RunHeader {
        let config = crate::config::parse(
            include_str!("../../config/example.toml"),
            std::path::Path::new("x.toml"),
        )
        .unwrap();
        let plan = build_plan(
            &config.topology,
            &PlanRequest {
                from: "us-east-1".into(),
                to: "us-west-2".into(),
                kind: RunKind::Failover,
            },
            &PlanOptions::default(),
        )
        .unwrap();
        RunHeader {
            version: RUN_VERSION,
            id: RunId::new(id),
            kind: RunKind::Failover,
            trigger: Trigger::Manual {
                actor: Actor::new("alice"),
            },
            created_at: Timestamp(1_000),
            dry_run: false,
            plan,
        }
    }

    /// Runs the whole contract against a fresh store.
    pub(crate) fn check(store: &dyn Store) {
        let alice = Actor::new("alice");
        let run = RunId::new("r-1");
        store
            .create_run(&header("r-1"), &alice, "east is down")
            .unwrap();
        assert_eq!(store.active_run().unwrap(), Some(run.clone()));

        // One run at a time.
        let err = store
            .create_run(&header("r-2"), &alice, "again")
            .unwrap_err();
        assert!(matches!(err, StoreError::RunActive { .. }), "{err}");
        assert!(matches!(
            store.create_run(&header("r-1"), &alice, "dup").unwrap_err(),
            StoreError::DuplicateRun(_) | StoreError::RunActive { .. }
        ));

        // Appends are checked against the run's state; a refused one writes nothing.
        let refused = store.append(
            &run,
            Timestamp(2_000),
            &Actor::engine(),
            RunEvent::StepStarted {
                step: StepName::Verify,
                attempt: 1,
            },
        );
        assert!(matches!(refused, Err(StoreError::Refused(_))));
        assert!(store.load_run(&run).unwrap().unwrap().events.is_empty());

        let record = store
            .append(
                &run,
                Timestamp(2_000),
                &Actor::engine(),
                RunEvent::StepStarted {
                    step: StepName::Preflight,
                    attempt: 1,
                },
            )
            .unwrap();
        assert_eq!(record.seq, 1);
        store
            .append(
                &run,
                Timestamp(3_000),
                &Actor::engine(),
                RunEvent::StepSucceeded {
                    step: StepName::Preflight,
                    outcome: StepOutcome::default(),
                },
            )
            .unwrap();
        let stored = store.load_run(&run).unwrap().unwrap();
        assert_eq!(stored.events.len(), 2);
        assert_eq!(stored.header, header("r-1"));

        assert!(matches!(
            store.append(
                &RunId::new("nope"),
                Timestamp(0),
                &alice,
                RunEvent::Paused { reason: "x".into() }
            ),
            Err(StoreError::NoSuchRun(_))
        ));

        // Finishing frees the slot.
        store
            .append(
                &run,
                Timestamp(4_000),
                &alice,
                RunEvent::Finished {
                    outcome: RunOutcome::Aborted,
                },
            )
            .unwrap();
        assert_eq!(store.active_run().unwrap(), None);
        store.create_run(&header("r-2"), &alice, "second").unwrap();
        let listed: Vec<String> = store
            .list_runs(10)
            .unwrap()
            .into_iter()
            .map(|h| h.id.to_string())
            .collect();
        assert_eq!(listed, vec!["r-2", "r-1"]);

        // Every event and creation is audited, with its actor.
        let audit = store.audit(Some(&run), 100).unwrap();
        assert_eq!(audit.len(), 4, "{audit:?}");
        assert_eq!(audit[0].actor, alice);
        assert!(
            audit[0]
                .action
                .contains("failover from us-east-1 to us-west-2")
        );
        assert!(audit[3].action.contains("aborted"));
        store
            .record_audit(&AuditEntry {
                version: STORE_VERSION,
                at: Timestamp(9_000),
                actor: alice.clone(),
                run: None,
                action: "automation paused".into(),
                reason: "game day".into(),
            })
            .unwrap();
        let all = store.audit(None, 100).unwrap();
        assert_eq!(all.last().unwrap().action, "automation paused");
        assert_eq!(store.audit(None, 2).unwrap().len(), 2);

        // Automation switches and the daemon's status round-trip.
        assert!(!store.automation().unwrap().paused);
        let paused = Automation {
            paused: true,
            changed_by: Some(alice.clone()),
            reason: Some("game day".into()),
            changed_at: Some(Timestamp(10_000)),
            ..Automation::default()
        };
        let entry = AuditEntry {
            version: STORE_VERSION,
            at: Timestamp(10_000),
            actor: alice.clone(),
            run: None,
            action: "automation paused".into(),
            reason: "game day".into(),
        };
        store.set_automation(&paused, &entry).unwrap();
        let read = store.automation().unwrap();
        assert!(read.paused);
        assert_eq!(read.reason.as_deref(), Some("game day"));
        assert_eq!(store.daemon_status().unwrap(), None);
        store
            .put_daemon_status("{\"decision\":\"nothing\"}")
            .unwrap();
        assert_eq!(
            store.daemon_status().unwrap().as_deref(),
            Some("{\"decision\":\"nothing\"}")
        );

        // With automation paused, an automatic run is refused in the creating transaction, so
        // a pause recorded after the daemon decided still wins; an operator's run is not.
        let mut automatic = header("r-auto");
        automatic.trigger = Trigger::Automatic {
            reason: "east failed".into(),
        };
        let err = store
            .create_run(&automatic, &Actor::new("daemon"), "east failed")
            .unwrap_err();
        assert!(matches!(err, StoreError::AutomationPaused(_)), "{err}");
        assert!(store.load_run(&RunId::new("r-auto")).unwrap().is_none());
        let err = store
            .create_run(&header("r-manual"), &alice, "by hand")
            .unwrap_err();
        assert!(!matches!(err, StoreError::AutomationPaused(_)), "{err}");
    }
}
