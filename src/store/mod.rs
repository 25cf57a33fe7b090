//! The checkpoint store: runs, their event logs, and the audit log. The single truth for the
//! daemon, the CLI and the API.
//!
//! `Store` is a small synchronous trait with three implementations: `RedbStore` (durable, every
//! commit fsynced), `MemoryStore` (tests and drills) and `DynamoStore` (a DynamoDB table the
//! daemons of several regions share). Each checks every appended event with the core's
//! transition function before writing it, and each enforces one unfinished run at a time. The
//! store never decides what a run does next.

mod dynamo;
mod lock;
mod memory;
mod redb_store;

pub use dynamo::{DynamoSettings, DynamoStore, OPERATIONS as DYNAMODB_OPERATIONS};
pub use lock::{ExecutorLock, Holder, LockError};
pub use memory::MemoryStore;
pub use redb_store::RedbStore;

use crate::core::decision::Automation;
use crate::core::ids::{Actor, RunId};
use crate::core::lease::LeaseRecord;
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
    /// The store could not be reached or answered an error (a shared store over the network);
    /// nothing is known to have been written.
    #[error("store {store} cannot be reached: {detail}")]
    Unavailable {
        /// Which store (its table).
        store: String,
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
    /// A write of a leader whose lease was taken over: a newer epoch is in the lease or in the
    /// run's log. Nothing was written.
    #[error(
        "refused: this write comes from lease epoch {epoch}, and epoch {newer} has taken over since; a newer leader acts now, and nothing was written"
    )]
    Fenced {
        /// The writer's epoch.
        epoch: u64,
        /// The newer one.
        newer: u64,
    },
    /// The writer does not hold the leader lease now (it lapsed on its own clock, or it never
    /// held it). Nothing was written.
    #[error(
        "refused: {holder} does not hold the leader lease now ({why}), so it writes nothing and acts on nothing"
    )]
    NotLeader {
        /// The would-be writer.
        holder: String,
        /// Why not.
        why: String,
    },
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
                | StoreError::Unavailable { .. }
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
            RunEvent::TakenOver { daemon } => (
                format!("daemon {daemon} took the run over"),
                match record.epoch {
                    Some(epoch) => format!("it won the leader lease, epoch {epoch}"),
                    None => "it won the leader lease".into(),
                },
            ),
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

/// Durable storage of runs and the audit log, and the leader lease of the daemons sharing it.
///
/// Writes of a leader carry its lease epoch (`epoch: Some`): the store refuses them
/// (`Fenced`) once a newer epoch is in the lease or in the run's log. Operators' writes carry
/// none.
pub trait Store: Send + Sync {
    /// Stores a new run. Fails with `RunActive` while another run is unfinished.
    fn create_run(
        &self,
        header: &RunHeader,
        actor: &Actor,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.create_run_fenced(header, actor, reason, None)
    }

    /// `create_run` by the holder of lease `epoch`: also refused once a newer epoch holds the
    /// lease.
    fn create_run_fenced(
        &self,
        header: &RunHeader,
        actor: &Actor,
        reason: &str,
        epoch: Option<u64>,
    ) -> Result<(), StoreError>;

    /// Checks `event` against the run's state and appends it, with its audit line, in one
    /// durable transaction. Returns the stored record.
    fn append(
        &self,
        run: &RunId,
        at: Timestamp,
        actor: &Actor,
        event: RunEvent,
    ) -> Result<EventRecord, StoreError> {
        self.append_fenced(run, at, actor, event, None)
    }

    /// `append` by the holder of lease `epoch`: the record carries it, and the append is
    /// refused if the lease or the run's log holds a newer one. The append is conditional on
    /// its sequence number: of two writers of event N, one succeeds.
    fn append_fenced(
        &self,
        run: &RunId,
        at: Timestamp,
        actor: &Actor,
        event: RunEvent,
        epoch: Option<u64>,
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

    /// Every daemon's last published status (JSON), by daemon id, for `dr status` in other
    /// processes and for the leader to read its standbys' vantage points.
    fn daemon_statuses(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// Publishes daemon `daemon`'s status (JSON), replacing its last one.
    fn put_daemon_status(&self, daemon: &str, json: &str) -> Result<(), StoreError>;

    /// The leader lease, if anyone ever took it.
    fn lease(&self) -> Result<Option<LeaseRecord>, StoreError>;

    /// Replaces the lease with `next` if it is still `expected` (`None`: nobody ever took it),
    /// compared by holder, epoch and beat, in one conditional write. `Ok(false)`: it changed,
    /// and nothing was written.
    fn swap_lease(
        &self,
        expected: Option<&LeaseRecord>,
        next: &LeaseRecord,
    ) -> Result<bool, StoreError>;
}

/// Whether a stored lease is the one a conditional write expects.
fn lease_matches(stored: Option<&LeaseRecord>, expected: Option<&LeaseRecord>) -> bool {
    match (stored, expected) {
        (None, None) => true,
        (Some(stored), Some(expected)) => stored.same_write(expected),
        _ => false,
    }
}

/// Refuses a write of lease `epoch` when the lease has moved on to a newer one.
fn check_fence(epoch: Option<u64>, lease: Option<&LeaseRecord>) -> Result<(), StoreError> {
    match (epoch, lease) {
        (Some(epoch), Some(lease)) if lease.epoch > epoch => Err(StoreError::Fenced {
            epoch,
            newer: lease.epoch,
        }),
        _ => Ok(()),
    }
}

/// The checks both implementations make before appending: returns the record to write and
/// whether it finishes the run.
fn prepare_append(
    stored: &StoredRun,
    at: Timestamp,
    actor: &Actor,
    event: RunEvent,
    epoch: Option<u64>,
) -> Result<(EventRecord, bool), StoreError> {
    let mut state = stored.state()?;
    if let (Some(epoch), Some(newer)) = (epoch, state.epoch)
        && newer > epoch
    {
        return Err(StoreError::Fenced { epoch, newer });
    }
    let record = EventRecord {
        version: RUN_VERSION,
        seq: state.last_seq + 1,
        at,
        actor: actor.clone(),
        event,
        epoch,
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

#[doc(hidden)]
pub mod contract {
    //! One behavioural test suite that every `Store` implementation must pass. Public so that
    //! the tests of the DynamoDB store against the AWS emulator run it too.

    use super::*;
    use crate::core::ids::StepName;
    use crate::core::plan::{PlanOptions, PlanRequest, RunKind, build_plan};
    use crate::core::run::{RunOutcome, StepOutcome, Trigger};

    /// A run header for the contract's runs.
    pub fn header(id: &str) -> RunHeader {
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
    pub fn check(store: &dyn Store) {
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
        assert_eq!(store.daemon_statuses().unwrap(), Vec::new());
        store
            .put_daemon_status("east", "{\"decision\":\"nothing\"}")
            .unwrap();
        store.put_daemon_status("west", "{\"w\":1}").unwrap();
        store.put_daemon_status("west", "{\"w\":2}").unwrap();
        let mut statuses = store.daemon_statuses().unwrap();
        statuses.sort();
        assert_eq!(
            statuses,
            vec![
                ("east".to_string(), "{\"decision\":\"nothing\"}".to_string()),
                ("west".to_string(), "{\"w\":2}".to_string())
            ]
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

    /// The lease and the fence: conditional swaps, and writes of an old epoch refused.
    pub fn check_lease(store: &dyn Store) {
        use crate::core::lease::LeaseRecord;
        let period = std::time::Duration::from_secs(10);
        assert_eq!(store.lease().unwrap(), None);
        let east = LeaseRecord::successor(None, "east", None, period, Timestamp(1));
        // Taking a lease nobody took: only one of two contenders gets epoch 1.
        assert!(store.swap_lease(None, &east).unwrap());
        let west_too = LeaseRecord::successor(None, "west", None, period, Timestamp(1));
        assert!(!store.swap_lease(None, &west_too).unwrap());
        assert_eq!(store.lease().unwrap(), Some(east.clone()));
        // Renewals name the write they replace; a stale one is refused.
        let renewed = east.renewed(Timestamp(2));
        assert!(store.swap_lease(Some(&east), &renewed).unwrap());
        assert!(
            !store
                .swap_lease(Some(&east), &east.renewed(Timestamp(3)))
                .unwrap()
        );

        let alice = Actor::new("alice");
        let run = RunId::new("r-lease");
        store
            .create_run_fenced(
                &header("r-lease"),
                &Actor::new("daemon"),
                "east failed",
                Some(1),
            )
            .unwrap();
        let started = store
            .append_fenced(
                &run,
                Timestamp(2_000),
                &Actor::engine(),
                RunEvent::StepStarted {
                    step: StepName::Preflight,
                    attempt: 1,
                },
                Some(1),
            )
            .unwrap();
        assert_eq!(started.epoch, Some(1));

        // West takes over: epoch 2. East's writes are refused from now on, and write nothing.
        let west = LeaseRecord::successor(Some(&renewed), "west", None, period, Timestamp(9));
        assert!(!store.swap_lease(Some(&east), &west).unwrap());
        assert!(store.swap_lease(Some(&renewed), &west).unwrap());
        let refused = store
            .append_fenced(
                &run,
                Timestamp(3_000),
                &Actor::engine(),
                RunEvent::StepSucceeded {
                    step: StepName::Preflight,
                    outcome: StepOutcome::default(),
                },
                Some(1),
            )
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::Fenced { epoch: 1, newer: 2 }),
            "{refused}"
        );
        assert_eq!(store.load_run(&run).unwrap().unwrap().events.len(), 1);
        let taken = store
            .append_fenced(
                &run,
                Timestamp(3_000),
                &Actor::new("daemon"),
                RunEvent::TakenOver {
                    daemon: "west".into(),
                },
                Some(2),
            )
            .unwrap();
        assert_eq!(taken.seq, 2);
        assert!(
            store
                .audit(Some(&run), 10)
                .unwrap()
                .iter()
                .any(|e| e.action.contains("west took the run over"))
        );
        // Even if the lease moved on again, the log remembers epoch 2: epoch 1 stays refused.
        assert!(matches!(
            store.append_fenced(
                &run,
                Timestamp(3_500),
                &Actor::engine(),
                RunEvent::Paused { reason: "x".into() },
                Some(1)
            ),
            Err(StoreError::Fenced { .. })
        ));
        // An operator's write carries no epoch and is not fenced.
        let abort = store
            .append(
                &run,
                Timestamp(4_000),
                &alice,
                RunEvent::AbortRequested {
                    reason: "by hand".into(),
                },
            )
            .unwrap();
        assert_eq!(abort.epoch, None);
        store
            .append_fenced(
                &run,
                Timestamp(4_500),
                &Actor::engine(),
                RunEvent::StepInterrupted {
                    step: StepName::Preflight,
                    reason: "aborted".into(),
                },
                Some(2),
            )
            .unwrap();
        store
            .append_fenced(
                &run,
                Timestamp(5_000),
                &Actor::engine(),
                RunEvent::Finished {
                    outcome: RunOutcome::Aborted,
                },
                Some(2),
            )
            .unwrap();
        // A run created by the old epoch is refused and not stored.
        let err = store
            .create_run_fenced(&header("r-old"), &Actor::new("daemon"), "stale", Some(1))
            .unwrap_err();
        assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
        assert!(store.load_run(&RunId::new("r-old")).unwrap().is_none());
        assert_eq!(store.active_run().unwrap(), None);
        // A release is a swap like any other.
        let released = west.released(Timestamp(10));
        assert!(store.swap_lease(Some(&west), &released).unwrap());
        assert!(store.lease().unwrap().unwrap().released);
    }
}
