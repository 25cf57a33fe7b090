//! A run as a log of typed events, and the one pure transition function that folds them.
//!
//! The live executor and recovery after a crash use the same `RunState::apply` and
//! `RunState::next`: there is no second code path for resume. Illegal transitions are errors,
//! never panics. Nothing here does I/O or reads a clock.

use super::ids::{Actor, RunId, StepName};
use super::plan::{Operation, Plan, RunKind};
use super::time::Timestamp;
use super::topology::LatencyRecord;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Why a run was started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Trigger {
    /// An operator ran `dr failover` or `dr switchover`.
    Manual {
        /// Who.
        actor: Actor,
    },
    /// The daemon's decision policy tripped.
    Automatic {
        /// The decision's reason.
        reason: String,
    },
    /// A game-day drill.
    Drill {
        /// Scenario name.
        scenario: String,
    },
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Manual { actor } => write!(f, "manual by {actor}"),
            Trigger::Automatic { reason } => write!(f, "automatic: {reason}"),
            Trigger::Drill { scenario } => write!(f, "drill {scenario}"),
        }
    }
}

/// What never changes about a run: written once when it is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHeader {
    /// Schema version.
    pub version: u32,
    /// The run's id.
    pub id: RunId,
    /// Failover or switchover.
    pub kind: RunKind,
    /// Why it started.
    pub trigger: Trigger,
    /// When it was created.
    pub created_at: Timestamp,
    /// Whether mutations are printed instead of made.
    pub dry_run: bool,
    /// The plan it carries out.
    pub plan: Plan,
}

/// The current version of `RunHeader` and `EventRecord`. Version 2 added the `StepGated`,
/// `Promoting` and `Requested` events; version 3 the leader's epoch on events and `TakenOver`.
/// An older `dr` refuses such a log instead of misreading it.
pub const RUN_VERSION: u32 = 3;

/// A step that must wait for an operator's approval, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    /// The gated step.
    pub step: StepName,
    /// What the operator approves (for example, the data loss).
    pub reason: String,
    /// The replication lag the gate was raised for, in milliseconds: the figure an approval
    /// accepts. None when it could not be measured; an approval then accepts any figure.
    #[serde(default)]
    pub lag_ms: Option<u64>,
}

/// What operators' approvals of a gated step accepted, over all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The largest measured replication lag (writes lost) an approval accepted, in
    /// milliseconds.
    pub lag_ms: Option<u64>,
    /// An approval was given while the lag could not be measured. It accepts promoting while
    /// the lag still cannot be read, never a measured figure above `lag_ms`.
    #[serde(default)]
    pub unmeasured: bool,
}

impl Approval {
    /// Adds an approval of a gate shown with `lag_ms` (None: unmeasured).
    pub fn accept(&mut self, lag_ms: Option<u64>) {
        match lag_ms {
            Some(ms) => self.lag_ms = Some(self.lag_ms.map_or(ms, |m| m.max(ms))),
            None => self.unmeasured = true,
        }
    }

    /// Whether the approvals cover promoting at `lag_ms` (None: the lag cannot be read now).
    pub fn covers(&self, lag_ms: Option<u64>) -> bool {
        match lag_ms {
            Some(now) => self.lag_ms.is_some_and(|approved| now <= approved),
            None => self.unmeasured,
        }
    }
}

/// Whether a failover's promotion may be sent now, judged against the replication lag read
/// immediately before it: within the RPO budget, or covered by the step's approval. Otherwise the
/// gate to raise, with the figure an approval will accept. `lag` is the reading (None: no recent
/// datapoint) or why it could not be read.
pub fn promotion_gate(
    target: &super::ids::RegionName,
    lag: Result<Option<std::time::Duration>, String>,
    budget: std::time::Duration,
    approval: Option<&Approval>,
) -> Option<Gate> {
    use super::time::fmt_duration;
    let lag_ms = match &lag {
        Ok(Some(lag)) => Some(lag.as_millis() as u64),
        _ => None,
    };
    if let Ok(Some(lag)) = &lag
        && *lag <= budget
    {
        return None;
    }
    if approval.is_some_and(|a| a.covers(lag_ms)) {
        return None;
    }
    let reason = match (&lag, approval.and_then(|a| a.lag_ms)) {
        (Ok(Some(lag)), Some(approved)) => format!(
            "replication lag of {target} is now {}, worse than the {} approved (RPO budget {}): promoting may lose up to {} of writes; approve again to accept it",
            fmt_duration(*lag),
            fmt_duration(std::time::Duration::from_millis(approved)),
            fmt_duration(budget),
            fmt_duration(*lag)
        ),
        (Ok(Some(lag)), None) => format!(
            "replication lag of {target} is {}, over the RPO budget of {}: promoting may lose up to {} of writes",
            fmt_duration(*lag),
            fmt_duration(budget),
            fmt_duration(*lag)
        ),
        (Ok(None), _) => format!(
            "replication lag of {target} has no recent datapoint: the data loss cannot be bounded"
        ),
        (Err(err), _) => format!(
            "replication lag of {target} could not be read ({err}): the data loss cannot be bounded"
        ),
    };
    Some(Gate {
        step: StepName::PromoteDb,
        reason,
        lag_ms,
    })
}

/// The gate's figure as an operator saw it when approving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// The replication lag the gate showed, in milliseconds; None when it showed none.
    pub lag_ms: Option<u64>,
}

fn describe_lag(lag_ms: Option<u64>) -> String {
    match lag_ms {
        Some(ms) => format!(
            "a replication lag of {}",
            super::time::fmt_duration(std::time::Duration::from_millis(ms))
        ),
        None => "an unmeasured replication lag".to_string(),
    }
}

/// The handle of a change a step requested, recorded as soon as AWS returns it, so that an
/// attempt after a crash follows the same change instead of requesting another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "handle", rename_all = "kebab-case")]
pub enum Handle {
    /// An EKS node group update (`DescribeUpdate` follows it).
    NodegroupUpdate {
        /// The node group.
        nodegroup: String,
        /// The update's id.
        update_id: String,
    },
    /// A Route53 change batch (`GetChange` follows it).
    RecordChange {
        /// The change's id.
        change_id: String,
    },
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Handle::NodegroupUpdate {
                nodegroup,
                update_id,
            } => write!(f, "node group {nodegroup}: update {update_id} requested"),
            Handle::RecordChange { change_id } => write!(f, "change {change_id} submitted"),
        }
    }
}

/// A promotion call a run sent (or was about to send when it stopped), as its write-ahead
/// record says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionIntent {
    /// When.
    pub at: Timestamp,
    /// The replication lag read immediately before the call, in milliseconds, if it could be.
    pub lag_ms: Option<u64>,
}

/// What a finished step reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// One line for people.
    pub summary: String,
    /// The step did not fully reach its goal but the run may go on (repoint-dns when Route53's
    /// control plane is unreachable).
    #[serde(default)]
    pub degraded: bool,
    /// Steps that must now wait for approval.
    #[serde(default)]
    pub gates: Vec<Gate>,
    /// The replication lag the step read, in milliseconds: preflight's reading, or the one
    /// promote-db read immediately before its last promotion call.
    #[serde(default)]
    pub lag_ms: Option<u64>,
    /// In a dry run, the mutations the step would have made.
    #[serde(default)]
    pub would_mutate: Vec<Operation>,
    /// A record change the step could not make because Route53's control plane did not answer,
    /// while its data plane already answered as planned: the daemon makes it once the control
    /// plane answers again.
    #[serde(default)]
    pub follow_up: Option<RecordFollowUp>,
}

/// A record change left for later (see `StepOutcome::follow_up`): the records to reach, as the
/// plan has them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordFollowUp {
    /// Hosted zone.
    pub hosted_zone_id: String,
    /// Record name.
    pub record_name: String,
    /// The records that must exist.
    pub desired: Vec<LatencyRecord>,
    /// The records that must not.
    pub removed: Vec<LatencyRecord>,
    /// Why it was left: the control plane's error.
    pub reason: String,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    /// Every step did its work and verification passed.
    Succeeded,
    /// Verification passed, but a step was skipped or ended degraded.
    Degraded,
    /// The target did not verify: the run is over and people must act.
    FailedVerification,
    /// An operator aborted it.
    Aborted,
}

impl RunOutcome {
    /// True when the writer and traffic are where the run meant them to be.
    pub fn is_success(self) -> bool {
        matches!(self, RunOutcome::Succeeded | RunOutcome::Degraded)
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Degraded => "degraded",
            RunOutcome::FailedVerification => "failed-verification",
            RunOutcome::Aborted => "aborted",
        })
    }
}

/// One thing that happened to a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum RunEvent {
    /// Write-ahead intent: the step is about to observe and act.
    StepStarted {
        /// Which step.
        step: StepName,
        /// 1 for the first try.
        attempt: u32,
    },
    /// A running step stopped to wait for an operator's approval (promote-db, when the lag read
    /// immediately before the promotion is over the RPO budget and no approval covers it).
    StepGated {
        /// Which step.
        step: StepName,
        /// What the operator must approve, with the figure.
        gate: Gate,
    },
    /// Write-ahead: promote-db is about to send the promotion call. A run with this event may
    /// have moved the writer, so it starts the cooldown whatever its end, and the report's RPO
    /// is this lag.
    Promoting {
        /// Which step.
        step: StepName,
        /// The replication lag read immediately before the call, in milliseconds.
        lag_ms: Option<u64>,
    },
    /// A change the step requested, with the handle AWS returned for it.
    Requested {
        /// Which step.
        step: StepName,
        /// The handle.
        handle: Handle,
    },
    /// Something a step did or saw that a person should know.
    StepProgress {
        /// Which step.
        step: StepName,
        /// What happened.
        note: String,
    },
    /// The step reached its goal.
    StepSucceeded {
        /// Which step.
        step: StepName,
        /// Its report.
        outcome: StepOutcome,
    },
    /// The step could not reach its goal; the run stops until an operator retries or skips it.
    StepFailed {
        /// Which step.
        step: StepName,
        /// Why, for people.
        error: String,
    },
    /// The process stopped while the step was in flight; resume runs it again.
    StepInterrupted {
        /// Which step.
        step: StepName,
        /// Why it stopped.
        reason: String,
    },
    /// An operator skipped a failed, interrupted or gated step.
    StepSkipped {
        /// Which step.
        step: StepName,
        /// Why (required, audited).
        reason: String,
    },
    /// An operator approved a gated step.
    Approved {
        /// Which step.
        step: StepName,
        /// Why.
        reason: String,
        /// The figure the operator was shown, when the approval was given for one: refused if
        /// the gate now shows another.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shown: Option<Shown>,
    },
    /// No new step starts and steps in flight stop at their next wait.
    Paused {
        /// Why.
        reason: String,
    },
    /// The run continues; failed steps are tried again.
    Resumed {
        /// Why.
        reason: String,
    },
    /// An operator asked the executor to stop the run for good.
    AbortRequested {
        /// Why.
        reason: String,
    },
    /// The run is over.
    Finished {
        /// How.
        outcome: RunOutcome,
    },
    /// A daemon that won the leader lease took the unfinished run over; its record carries the
    /// new epoch, so from here on the log refuses every write of an older leader.
    TakenOver {
        /// The daemon.
        daemon: String,
    },
}

impl RunEvent {
    /// The line people read for the events that the CLI's and the drill's timelines word alike
    /// (a gate raised by a running step, a promotion sent, a change requested); None for the
    /// others, which each surface words its own way.
    pub fn shared_text(&self) -> Option<String> {
        Some(match self {
            RunEvent::StepGated { step, gate } => {
                format!("{step} waits for approval: {}", gate.reason)
            }
            RunEvent::Promoting { step, lag_ms } => match lag_ms {
                Some(ms) => format!(
                    "{step}: sending the promotion; replication lag read just before: {}",
                    super::time::fmt_duration(std::time::Duration::from_millis(*ms))
                ),
                None => format!("{step}: sending the promotion (replication lag not measured)"),
            },
            RunEvent::Requested { step, handle } => format!("{step}: {handle}"),
            RunEvent::TakenOver { daemon } => {
                format!("daemon {daemon} won the leader lease and took the run over")
            }
            _ => return None,
        })
    }
}

/// An event with its sequence number, time and actor, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Schema version.
    pub version: u32,
    /// 1-based position in the run's log.
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// Who.
    pub actor: Actor,
    /// What.
    pub event: RunEvent,
    /// The leader lease's epoch of the daemon (or command) that wrote it, when a lease was
    /// held: the store refuses an event whose epoch is older than one already in the log or in
    /// the lease. None for operators' events, which any process may write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// Where a step stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Waiting for `dr approve`.
    AwaitingApproval {
        /// What is approved.
        reason: String,
        /// The lag figure an approval accepts (see `Gate::lag_ms`).
        #[serde(default)]
        lag_ms: Option<u64>,
    },
    /// Started and not finished (in flight, or orphaned by a crash).
    Running,
    /// Done.
    Succeeded,
    /// Stopped with an error; retried on resume.
    Failed {
        /// Why.
        error: String,
    },
    /// Stopped by a pause or shutdown; started again on resume.
    Interrupted,
    /// Skipped by an operator.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// One step's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepState {
    /// Status.
    pub status: StepStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// When the first attempt started.
    pub started_at: Option<Timestamp>,
    /// When it last finished (succeeded, failed or skipped).
    pub finished_at: Option<Timestamp>,
    /// The outcome, once succeeded.
    pub outcome: Option<StepOutcome>,
    /// Progress notes of every attempt, oldest first (a resumed step reads them).
    pub notes: Vec<String>,
    /// The latest approval of this step, with the figure it accepted.
    #[serde(default)]
    pub approval: Option<Approval>,
    /// Changes requested by every attempt, oldest first (a resumed step follows them).
    #[serde(default)]
    pub handles: Vec<Handle>,
}

impl StepState {
    fn new() -> Self {
        StepState {
            status: StepStatus::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            outcome: None,
            notes: Vec::new(),
            approval: None,
            handles: Vec::new(),
        }
    }

    /// Succeeded or skipped: later steps may start.
    pub fn is_done(&self) -> bool {
        matches!(
            self.status,
            StepStatus::Succeeded | StepStatus::Skipped { .. }
        )
    }
}

/// Where the run stands, derived from its log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RunStatus {
    /// Steps are running or ready to run.
    Running,
    /// Paused by an operator or a shutdown.
    Paused,
    /// A step waits for `dr approve`.
    AwaitingApproval {
        /// The step.
        step: StepName,
        /// What is approved.
        reason: String,
    },
    /// A step failed; `dr resume` retries it, `dr skip` skips it, `dr abort` ends the run.
    Stopped {
        /// The step.
        step: StepName,
        /// Its error.
        error: String,
    },
    /// Abort requested; the executor is stopping.
    Aborting,
    /// Over.
    Finished {
        /// How.
        outcome: RunOutcome,
    },
}

impl RunStatus {
    /// True for a run that no longer holds the one-run-at-a-time slot.
    pub fn is_finished(&self) -> bool {
        matches!(self, RunStatus::Finished { .. })
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunStatus::Running => f.write_str("running"),
            RunStatus::Paused => f.write_str("paused"),
            RunStatus::AwaitingApproval { step, reason } => {
                write!(f, "awaiting approval of {step}: {reason}")
            }
            RunStatus::Stopped { step, error } => write!(f, "stopped: {step} failed: {error}"),
            RunStatus::Aborting => f.write_str("aborting"),
            RunStatus::Finished { outcome } => write!(f, "finished: {outcome}"),
        }
    }
}

/// A transition the log does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransitionError(pub String);

/// What the executor should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Start these steps (new, retried, or orphaned by a crash).
    Start(Vec<StepName>),
    /// Steps are in flight; wait for one to finish.
    Wait,
    /// Nothing can happen without an operator; in-flight steps (if any) should be stopped.
    Blocked(RunStatus),
    /// Append `Finished` with this outcome.
    Finish(RunOutcome),
    /// The run is already over.
    Over(RunOutcome),
}

/// The folded state of one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// The steps, by name.
    pub steps: BTreeMap<StepName, StepState>,
    /// Paused by an operator or shutdown.
    pub paused: bool,
    /// Abort requested.
    pub abort_requested: bool,
    /// Outcome, once finished.
    pub outcome: Option<RunOutcome>,
    /// Every promotion call this run sent or was about to send, oldest first.
    #[serde(default)]
    pub promotions: Vec<PromotionIntent>,
    /// Seq of the last applied event.
    pub last_seq: u64,
    /// When the last event happened.
    pub last_at: Option<Timestamp>,
    /// The newest leader epoch in the log: an event of an older one is refused.
    #[serde(default)]
    pub epoch: Option<u64>,
    dependencies: BTreeMap<StepName, Vec<StepName>>,
}

impl RunState {
    /// The state of a run that has just been created.
    pub fn new(plan: &Plan) -> RunState {
        RunState {
            steps: plan
                .steps
                .iter()
                .map(|s| (s.name, StepState::new()))
                .collect(),
            paused: false,
            abort_requested: false,
            outcome: None,
            promotions: Vec::new(),
            last_seq: 0,
            last_at: None,
            epoch: None,
            dependencies: plan
                .steps
                .iter()
                .map(|s| (s.name, s.after.clone()))
                .collect(),
        }
    }

    /// Folds a whole log.
    pub fn replay<'a>(
        plan: &Plan,
        events: impl IntoIterator<Item = &'a EventRecord>,
    ) -> Result<RunState, TransitionError> {
        let mut state = RunState::new(plan);
        for record in events {
            state.apply(record)?;
        }
        Ok(state)
    }

    fn step_mut(&mut self, step: StepName) -> Result<&mut StepState, TransitionError> {
        self.steps
            .get_mut(&step)
            .ok_or_else(|| TransitionError(format!("step {step} is not in this run's plan")))
    }

    /// Applies one event; an illegal one leaves the state unchanged and is an error.
    pub fn apply(&mut self, record: &EventRecord) -> Result<(), TransitionError> {
        if record.seq != self.last_seq + 1 {
            return Err(TransitionError(format!(
                "event {} follows event {}: the log has a gap or a duplicate",
                record.seq, self.last_seq
            )));
        }
        if let (Some(epoch), Some(newest)) = (record.epoch, self.epoch)
            && epoch < newest
        {
            return Err(TransitionError(format!(
                "event {} was written under lease epoch {epoch}, after epoch {newest} took the run over",
                record.seq
            )));
        }
        let mut next = self.clone();
        next.apply_event(&record.event, record.at)?;
        next.epoch = next.epoch.max(record.epoch);
        next.last_seq = record.seq;
        next.last_at = Some(record.at);
        *self = next;
        Ok(())
    }

    /// Checks an event against the state without applying it.
    pub fn check(&self, event: &RunEvent) -> Result<(), TransitionError> {
        self.clone().apply_event(event, Timestamp(0))
    }

    fn apply_event(&mut self, event: &RunEvent, at: Timestamp) -> Result<(), TransitionError> {
        if let Some(outcome) = self.outcome {
            return Err(TransitionError(format!(
                "the run is already finished ({outcome})"
            )));
        }
        match event {
            RunEvent::StepStarted { step, attempt } => {
                let deps_done = self.deps_done(*step);
                let (paused, aborting) = (self.paused, self.abort_requested);
                let state = self.step_mut(*step)?;
                let startable = matches!(
                    state.status,
                    StepStatus::Pending | StepStatus::Interrupted | StepStatus::Running
                );
                if !startable {
                    return Err(illegal(*step, &state.status, "start"));
                }
                if !deps_done {
                    return Err(TransitionError(format!(
                        "step {step} cannot start before the steps it follows are done"
                    )));
                }
                if paused || aborting {
                    return Err(TransitionError(format!(
                        "step {step} cannot start while the run is paused or aborting"
                    )));
                }
                if *attempt != state.attempts + 1 {
                    return Err(TransitionError(format!(
                        "step {step} attempt {attempt} follows attempt {}",
                        state.attempts
                    )));
                }
                state.status = StepStatus::Running;
                state.attempts = *attempt;
                state.started_at.get_or_insert(at);
            }
            RunEvent::StepGated { step, gate } => {
                if gate.step != *step {
                    return Err(TransitionError(format!(
                        "step {step} cannot gate another step ({})",
                        gate.step
                    )));
                }
                let state = self.step_mut(*step)?;
                if state.status != StepStatus::Running {
                    return Err(illegal(*step, &state.status, "wait for approval"));
                }
                state.status = StepStatus::AwaitingApproval {
                    reason: gate.reason.clone(),
                    lag_ms: gate.lag_ms,
                };
            }
            RunEvent::Promoting { step, lag_ms } => {
                let state = self.step_mut(*step)?;
                if state.status != StepStatus::Running {
                    return Err(illegal(*step, &state.status, "promote"));
                }
                self.promotions.push(PromotionIntent {
                    at,
                    lag_ms: *lag_ms,
                });
            }
            RunEvent::Requested { step, handle } => {
                let state = self.step_mut(*step)?;
                if state.status != StepStatus::Running {
                    return Err(illegal(*step, &state.status, "request a change"));
                }
                state.handles.push(handle.clone());
            }
            RunEvent::StepProgress { step, note } => {
                let state = self.step_mut(*step)?;
                if state.status != StepStatus::Running {
                    return Err(illegal(*step, &state.status, "report progress"));
                }
                state.notes.push(note.clone());
            }
            RunEvent::StepSucceeded { step, outcome } => {
                let state = self.step_mut(*step)?;
                if state.status != StepStatus::Running {
                    return Err(illegal(*step, &state.status, "succeed"));
                }
                state.status = StepStatus::Succeeded;
                state.finished_at = Some(at);
                state.outcome = Some(outcome.clone());
                for gate in &outcome.gates {
                    let gated = self.step_mut(gate.step)?;
                    if gated.status != StepStatus::Pending {
                        return Err(illegal(gate.step, &gated.status, "be gated"));
                    }
                    gated.status = StepStatus::AwaitingApproval {
                        reason: gate.reason.clone(),
                        lag_ms: gate.lag_ms,
                    };
                }
            }
            RunEvent::StepFailed { step, error } => {
                let state = self.step_mut(*step)?;
                if state.status != StepStatus::Running {
                    return Err(illegal(*step, &state.status, "fail"));
                }
                state.status = StepStatus::Failed {
                    error: error.clone(),
                };
                state.finished_at = Some(at);
            }
            RunEvent::StepInterrupted { step, .. } => {
                let state = self.step_mut(*step)?;
                if state.status != StepStatus::Running {
                    return Err(illegal(*step, &state.status, "be interrupted"));
                }
                state.status = StepStatus::Interrupted;
            }
            RunEvent::StepSkipped { step, reason } => {
                let state = self.step_mut(*step)?;
                let skippable = matches!(
                    state.status,
                    StepStatus::Failed { .. }
                        | StepStatus::Interrupted
                        | StepStatus::AwaitingApproval { .. }
                );
                if !skippable {
                    return Err(illegal(*step, &state.status, "be skipped"));
                }
                if reason.trim().is_empty() {
                    return Err(TransitionError(
                        "a skip needs a reason; it goes into the audit log".to_string(),
                    ));
                }
                state.status = StepStatus::Skipped {
                    reason: reason.clone(),
                };
                state.finished_at = Some(at);
            }
            RunEvent::Approved { step, shown, .. } => {
                let state = self.step_mut(*step)?;
                let StepStatus::AwaitingApproval { lag_ms, .. } = state.status else {
                    return Err(illegal(*step, &state.status, "be approved"));
                };
                if let Some(shown) = shown
                    && shown.lag_ms != lag_ms
                {
                    return Err(TransitionError(format!(
                        "the approval was for {}, but {step} now waits for approval of {}; look again (`dr status`) and approve what it shows",
                        describe_lag(shown.lag_ms),
                        describe_lag(lag_ms)
                    )));
                }
                // The approval is for the figure the gate showed, no more.
                state
                    .approval
                    .get_or_insert_with(Approval::default)
                    .accept(lag_ms);
                state.status = if state.attempts > 0 {
                    StepStatus::Interrupted
                } else {
                    StepStatus::Pending
                };
            }
            RunEvent::Paused { .. } => {
                self.paused = true;
            }
            RunEvent::Resumed { .. } => {
                if self.abort_requested {
                    return Err(TransitionError(
                        "the run is being aborted and cannot be resumed".to_string(),
                    ));
                }
                self.paused = false;
                for state in self.steps.values_mut() {
                    if matches!(state.status, StepStatus::Failed { .. }) {
                        state.status = StepStatus::Pending;
                    }
                }
            }
            RunEvent::AbortRequested { .. } => {
                self.abort_requested = true;
            }
            RunEvent::Finished { outcome } => {
                self.check_finish(*outcome)?;
                self.outcome = Some(*outcome);
            }
            RunEvent::TakenOver { .. } => {}
        }
        Ok(())
    }

    fn check_finish(&self, outcome: RunOutcome) -> Result<(), TransitionError> {
        let all_done = self.steps.values().all(StepState::is_done);
        let verify_failed = matches!(
            self.steps.get(&StepName::Verify).map(|s| &s.status),
            Some(StepStatus::Failed { .. })
        );
        let legal = match outcome {
            RunOutcome::Aborted => true,
            RunOutcome::Succeeded | RunOutcome::Degraded => all_done,
            RunOutcome::FailedVerification => verify_failed,
        };
        if legal {
            Ok(())
        } else {
            Err(TransitionError(format!(
                "the run cannot finish as {outcome} in its current state"
            )))
        }
    }

    fn deps_done(&self, step: StepName) -> bool {
        self.dependencies
            .get(&step)
            .map(|deps| {
                deps.iter()
                    .all(|dep| self.steps.get(dep).is_some_and(StepState::is_done))
            })
            .unwrap_or(false)
    }

    /// The status a person sees.
    pub fn status(&self) -> RunStatus {
        if let Some(outcome) = self.outcome {
            return RunStatus::Finished { outcome };
        }
        if self.abort_requested {
            return RunStatus::Aborting;
        }
        if self.paused {
            return RunStatus::Paused;
        }
        for (step, state) in &self.steps {
            if let StepStatus::Failed { error } = &state.status {
                return RunStatus::Stopped {
                    step: *step,
                    error: error.clone(),
                };
            }
        }
        for (step, state) in &self.steps {
            if let StepStatus::AwaitingApproval { reason, .. } = &state.status
                && !self.steps.values().any(|s| s.status == StepStatus::Running)
            {
                return RunStatus::AwaitingApproval {
                    step: *step,
                    reason: reason.clone(),
                };
            }
        }
        RunStatus::Running
    }

    /// What the executor should do, given the steps it has in flight in this process.
    pub fn next(&self, in_flight: &BTreeSet<StepName>) -> Next {
        if let Some(outcome) = self.outcome {
            return Next::Over(outcome);
        }
        if self.abort_requested {
            return if in_flight.is_empty() {
                Next::Finish(RunOutcome::Aborted)
            } else {
                Next::Blocked(RunStatus::Aborting)
            };
        }
        if self.paused {
            return Next::Blocked(RunStatus::Paused);
        }
        let verify_failed = matches!(
            self.steps.get(&StepName::Verify).map(|s| &s.status),
            Some(StepStatus::Failed { .. })
        );
        if verify_failed && in_flight.is_empty() {
            return Next::Finish(RunOutcome::FailedVerification);
        }
        if let RunStatus::Stopped { .. } = self.status() {
            return if in_flight.is_empty() {
                Next::Blocked(self.status())
            } else {
                Next::Wait
            };
        }
        let ready: Vec<StepName> = self
            .steps
            .iter()
            .filter(|(step, state)| {
                !in_flight.contains(step)
                    && matches!(
                        state.status,
                        StepStatus::Pending | StepStatus::Interrupted | StepStatus::Running
                    )
                    && self.deps_done(**step)
            })
            .map(|(step, _)| *step)
            .collect();
        if !ready.is_empty() {
            return Next::Start(ready);
        }
        if !in_flight.is_empty() {
            return Next::Wait;
        }
        if self.steps.values().all(StepState::is_done) {
            let degraded = self.steps.values().any(|s| {
                matches!(s.status, StepStatus::Skipped { .. })
                    || s.outcome.as_ref().is_some_and(|o| o.degraded)
            });
            return Next::Finish(if degraded {
                RunOutcome::Degraded
            } else {
                RunOutcome::Succeeded
            });
        }
        Next::Blocked(self.status())
    }

    /// Steps recorded as running (in flight somewhere, or orphaned).
    pub fn running_steps(&self) -> Vec<StepName> {
        self.steps
            .iter()
            .filter(|(_, s)| s.status == StepStatus::Running)
            .map(|(step, _)| *step)
            .collect()
    }
}

fn illegal(step: StepName, status: &StepStatus, what: &str) -> TransitionError {
    let status = match status {
        StepStatus::Pending => "pending",
        StepStatus::AwaitingApproval { .. } => "awaiting approval",
        StepStatus::Running => "running",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed { .. } => "failed",
        StepStatus::Interrupted => "interrupted",
        StepStatus::Skipped { .. } => "skipped",
    };
    TransitionError(format!("step {step} is {status} and cannot {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::plan::{PlanOptions, PlanRequest, build_plan};
    use crate::core::topology::{DnsTopology, Region, Topology};
    use proptest::prelude::*;

    fn plan() -> Plan {
        let region = |name: &str| Region {
            name: name.into(),
            priority: 1,
            db_cluster_id: format!("db-{name}"),
            eks_cluster: "eks".into(),
            node_groups: vec![],
            autoscaling_groups: vec![],
            health_check_id: "hc".into(),
            set_identifier: name.into(),
            record_values: vec!["192.0.2.1".into()],
            health_url: "http://h/health".into(),
        };
        let topology = Topology {
            global_cluster_id: "g".into(),
            dns: DnsTopology {
                hosted_zone_id: "Z".into(),
                record_name: "api".into(),
                record_type: "A".into(),
                ttl: 60,
                name_servers: Vec::new(),
            },
            regions: vec![region("a"), region("b")],
        };
        build_plan(
            &topology,
            &PlanRequest {
                from: "a".into(),
                to: "b".into(),
                kind: RunKind::Failover,
            },
            &PlanOptions::default(),
        )
        .unwrap()
    }

    struct Log {
        state: RunState,
        seq: u64,
    }

    impl Log {
        fn new() -> Self {
            Log {
                state: RunState::new(&plan()),
                seq: 0,
            }
        }
        fn push(&mut self, event: RunEvent) -> Result<(), TransitionError> {
            let record = EventRecord {
                version: RUN_VERSION,
                seq: self.seq + 1,
                at: Timestamp(self.seq as i64 * 1000),
                actor: Actor::engine(),
                event,
                epoch: None,
            };
            self.state.apply(&record)?;
            self.seq += 1;
            Ok(())
        }
        fn ok(&mut self, event: RunEvent) {
            self.push(event).unwrap();
        }
    }

    fn started(step: StepName, attempt: u32) -> RunEvent {
        RunEvent::StepStarted { step, attempt }
    }
    fn succeeded(step: StepName) -> RunEvent {
        RunEvent::StepSucceeded {
            step,
            outcome: StepOutcome::default(),
        }
    }

    #[test]
    fn a_clean_run_walks_the_plan_and_finishes_succeeded() {
        let mut log = Log::new();
        let none = BTreeSet::new();
        assert_eq!(
            log.state.next(&none),
            Next::Start(vec![StepName::Preflight])
        );
        log.ok(started(StepName::Preflight, 1));
        log.ok(succeeded(StepName::Preflight));
        assert_eq!(
            log.state.next(&none),
            Next::Start(vec![StepName::PromoteDb, StepName::ScaleTarget])
        );
        for step in [StepName::PromoteDb, StepName::ScaleTarget] {
            log.ok(started(step, 1));
        }
        let both: BTreeSet<_> = [StepName::PromoteDb, StepName::ScaleTarget].into();
        assert_eq!(log.state.next(&both), Next::Wait);
        log.ok(succeeded(StepName::PromoteDb));
        log.ok(succeeded(StepName::ScaleTarget));
        log.ok(started(StepName::RepointDns, 1));
        log.ok(succeeded(StepName::RepointDns));
        log.ok(started(StepName::Verify, 1));
        log.ok(succeeded(StepName::Verify));
        assert_eq!(log.state.next(&none), Next::Finish(RunOutcome::Succeeded));
        log.ok(RunEvent::Finished {
            outcome: RunOutcome::Succeeded,
        });
        assert_eq!(log.state.next(&none), Next::Over(RunOutcome::Succeeded));
        assert!(log.push(started(StepName::Verify, 2)).is_err());
    }

    #[test]
    fn a_step_cannot_start_before_its_dependencies() {
        let mut log = Log::new();
        let err = log.push(started(StepName::RepointDns, 1)).unwrap_err();
        assert!(err.0.contains("cannot start before"), "{err}");
        assert_eq!(log.state.last_seq, 0, "a refused event changes nothing");
    }

    #[test]
    fn an_orphaned_running_step_is_started_again_on_resume() {
        let mut log = Log::new();
        log.ok(started(StepName::Preflight, 1));
        // The process died here. A new executor has nothing in flight.
        assert_eq!(
            log.state.next(&BTreeSet::new()),
            Next::Start(vec![StepName::Preflight])
        );
        log.ok(started(StepName::Preflight, 2));
        assert_eq!(log.state.steps[&StepName::Preflight].attempts, 2);
    }

    #[test]
    fn gates_hold_the_step_until_approved() {
        let mut log = Log::new();
        log.ok(started(StepName::Preflight, 1));
        log.ok(RunEvent::StepSucceeded {
            step: StepName::Preflight,
            outcome: StepOutcome {
                gates: vec![Gate {
                    step: StepName::PromoteDb,
                    reason: "lag 7m over budget".into(),
                    lag_ms: Some(420_000),
                }],
                ..StepOutcome::default()
            },
        });
        let none = BTreeSet::new();
        assert_eq!(
            log.state.next(&none),
            Next::Start(vec![StepName::ScaleTarget])
        );
        assert!(log.push(started(StepName::PromoteDb, 1)).is_err());
        log.ok(started(StepName::ScaleTarget, 1));
        log.ok(succeeded(StepName::ScaleTarget));
        assert!(matches!(
            log.state.next(&none),
            Next::Blocked(RunStatus::AwaitingApproval {
                step: StepName::PromoteDb,
                ..
            })
        ));
        log.ok(RunEvent::Approved {
            step: StepName::PromoteDb,
            reason: "accept".into(),
            shown: None,
        });
        assert_eq!(
            log.state.next(&none),
            Next::Start(vec![StepName::PromoteDb])
        );
    }

    #[test]
    fn a_running_promotion_can_gate_itself_and_an_approval_accepts_its_figure() {
        let mut log = Log::new();
        log.ok(started(StepName::Preflight, 1));
        log.ok(succeeded(StepName::Preflight));
        log.ok(started(StepName::PromoteDb, 1));
        // Only a running step gates itself, and only itself.
        assert!(
            log.push(RunEvent::StepGated {
                step: StepName::PromoteDb,
                gate: Gate {
                    step: StepName::Verify,
                    reason: "x".into(),
                    lag_ms: None,
                },
            })
            .is_err()
        );
        log.ok(RunEvent::StepGated {
            step: StepName::PromoteDb,
            gate: Gate {
                step: StepName::PromoteDb,
                reason: "lag 7m over budget".into(),
                lag_ms: Some(420_000),
            },
        });
        assert!(matches!(
            log.state.status(),
            RunStatus::AwaitingApproval {
                step: StepName::PromoteDb,
                ..
            }
        ));
        assert!(log.push(started(StepName::PromoteDb, 2)).is_err());
        // An approval of a figure the gate no longer shows is refused.
        let stale = log
            .push(RunEvent::Approved {
                step: StepName::PromoteDb,
                reason: "accept".into(),
                shown: Some(Shown {
                    lag_ms: Some(300_000),
                }),
            })
            .unwrap_err();
        assert!(stale.0.contains("now waits for approval of"), "{stale}");
        log.ok(RunEvent::Approved {
            step: StepName::PromoteDb,
            reason: "accept".into(),
            shown: Some(Shown {
                lag_ms: Some(420_000),
            }),
        });
        let promote = &log.state.steps[&StepName::PromoteDb];
        assert_eq!(
            promote.approval,
            Some(Approval {
                lag_ms: Some(420_000),
                unmeasured: false,
            })
        );
        assert_eq!(
            log.state.next(&BTreeSet::new()),
            Next::Start(vec![StepName::PromoteDb, StepName::ScaleTarget])
        );
        log.ok(started(StepName::PromoteDb, 2));
        log.ok(RunEvent::Promoting {
            step: StepName::PromoteDb,
            lag_ms: Some(400_000),
        });
        assert_eq!(log.state.promotions.len(), 1);
        assert_eq!(log.state.promotions[0].lag_ms, Some(400_000));
    }

    #[test]
    fn the_promotion_gate_judges_the_last_reading_against_budget_and_approval() {
        let target = super::super::ids::RegionName::new("west");
        let budget = std::time::Duration::from_secs(300);
        let secs = |s: u64| Ok(Some(std::time::Duration::from_secs(s)));
        assert_eq!(promotion_gate(&target, secs(2), budget, None), None);
        assert_eq!(promotion_gate(&target, secs(300), budget, None), None);
        let gate = promotion_gate(&target, secs(420), budget, None).expect("over budget");
        assert_eq!(gate.lag_ms, Some(420_000));
        let approved = Approval {
            lag_ms: Some(420_000),
            unmeasured: false,
        };
        assert_eq!(
            promotion_gate(&target, secs(400), budget, Some(&approved)),
            None
        );
        let worse = promotion_gate(&target, secs(480), budget, Some(&approved)).expect("worse");
        assert_eq!(worse.lag_ms, Some(480_000));
        assert!(
            worse.reason.contains("worse than the 7m00s approved"),
            "{}",
            worse.reason
        );
        let unread = promotion_gate(&target, Err("throttled".into()), budget, Some(&approved));
        assert!(unread.is_some_and(|g| g.lag_ms.is_none()));
        assert!(promotion_gate(&target, Ok(None), budget, None).is_some());
        // An approval given while the lag could not be read accepts an unreadable lag, never
        // a measured one above what was approved with a figure.
        let mut blind = Approval::default();
        blind.accept(None);
        assert!(promotion_gate(&target, secs(9999), budget, Some(&blind)).is_some());
        assert_eq!(
            promotion_gate(&target, Ok(None), budget, Some(&blind)),
            None
        );
        let mut both = approved.clone();
        both.accept(None);
        assert_eq!(
            promotion_gate(&target, secs(400), budget, Some(&both)),
            None
        );
        assert!(promotion_gate(&target, secs(7200), budget, Some(&both)).is_some());
    }

    #[test]
    fn a_failed_step_stops_the_run_until_resumed_or_skipped() {
        let mut log = Log::new();
        log.ok(started(StepName::Preflight, 1));
        log.ok(RunEvent::StepFailed {
            step: StepName::Preflight,
            error: "target unhealthy".into(),
        });
        assert!(matches!(
            log.state.next(&BTreeSet::new()),
            Next::Blocked(RunStatus::Stopped { .. })
        ));
        assert!(log.push(started(StepName::Preflight, 2)).is_err());
        log.ok(RunEvent::Resumed {
            reason: "retry".into(),
        });
        log.ok(started(StepName::Preflight, 2));
        log.ok(RunEvent::StepFailed {
            step: StepName::Preflight,
            error: "still".into(),
        });
        assert!(
            log.push(RunEvent::StepSkipped {
                step: StepName::Preflight,
                reason: " ".into()
            })
            .is_err(),
            "a skip needs a reason"
        );
        log.ok(RunEvent::StepSkipped {
            step: StepName::Preflight,
            reason: "health check misconfigured; target checked by hand".into(),
        });
        assert_eq!(
            log.state.next(&BTreeSet::new()),
            Next::Start(vec![StepName::PromoteDb, StepName::ScaleTarget])
        );
    }

    #[test]
    fn failed_verification_ends_the_run() {
        let mut log = Log::new();
        for step in [
            StepName::Preflight,
            StepName::PromoteDb,
            StepName::ScaleTarget,
            StepName::RepointDns,
        ] {
            log.ok(started(step, 1));
            log.ok(succeeded(step));
        }
        log.ok(started(StepName::Verify, 1));
        log.ok(RunEvent::StepFailed {
            step: StepName::Verify,
            error: "503".into(),
        });
        assert_eq!(
            log.state.next(&BTreeSet::new()),
            Next::Finish(RunOutcome::FailedVerification)
        );
    }

    #[test]
    fn abort_waits_for_steps_in_flight() {
        let mut log = Log::new();
        log.ok(started(StepName::Preflight, 1));
        log.ok(RunEvent::AbortRequested {
            reason: "wrong region".into(),
        });
        let flying: BTreeSet<_> = [StepName::Preflight].into();
        assert_eq!(log.state.next(&flying), Next::Blocked(RunStatus::Aborting));
        assert_eq!(
            log.state.next(&BTreeSet::new()),
            Next::Finish(RunOutcome::Aborted)
        );
        assert!(log.push(RunEvent::Resumed { reason: "x".into() }).is_err());
    }

    #[test]
    fn sequence_gaps_are_refused() {
        let mut state = RunState::new(&plan());
        let record = EventRecord {
            version: RUN_VERSION,
            seq: 2,
            at: Timestamp(0),
            actor: Actor::engine(),
            event: RunEvent::Paused { reason: "x".into() },
            epoch: None,
        };
        assert!(state.apply(&record).is_err());
    }

    fn any_event() -> impl Strategy<Value = RunEvent> {
        let step = prop::sample::select(StepName::ALL.to_vec());
        prop_oneof![
            (step.clone(), 1u32..4)
                .prop_map(|(step, attempt)| RunEvent::StepStarted { step, attempt }),
            step.clone().prop_map(succeeded),
            step.clone().prop_map(|step| RunEvent::StepFailed {
                step,
                error: "e".into()
            }),
            step.clone().prop_map(|step| RunEvent::StepInterrupted {
                step,
                reason: "r".into()
            }),
            step.clone().prop_map(|step| RunEvent::StepSkipped {
                step,
                reason: "r".into()
            }),
            (
                step.clone(),
                prop::option::of(prop::option::of(0u64..600_000))
            )
                .prop_map(|(step, shown)| RunEvent::Approved {
                    step,
                    reason: "r".into(),
                    shown: shown.map(|lag_ms| Shown { lag_ms }),
                }),
            (step.clone(), prop::option::of(0u64..600_000)).prop_map(|(step, lag_ms)| {
                RunEvent::StepGated {
                    step,
                    gate: Gate {
                        step,
                        reason: "g".into(),
                        lag_ms,
                    },
                }
            }),
            (step.clone(), prop::option::of(0u64..600_000))
                .prop_map(|(step, lag_ms)| RunEvent::Promoting { step, lag_ms }),
            step.clone().prop_map(|step| RunEvent::Requested {
                step,
                handle: Handle::RecordChange {
                    change_id: "C1".into()
                }
            }),
            Just(RunEvent::Paused { reason: "p".into() }),
            Just(RunEvent::Resumed { reason: "p".into() }),
            Just(RunEvent::AbortRequested { reason: "p".into() }),
            prop::sample::select(vec![
                RunOutcome::Succeeded,
                RunOutcome::Degraded,
                RunOutcome::FailedVerification,
                RunOutcome::Aborted
            ])
            .prop_map(|outcome| RunEvent::Finished { outcome }),
        ]
    }

    proptest! {
        /// Whatever events arrive, applying never panics, refused events change nothing, and a
        /// step never runs before the steps it follows are done.
        #[test]
        fn random_logs_keep_the_invariants(events in prop::collection::vec(any_event(), 0..60)) {
            let mut log = Log::new();
            for event in events {
                let before = log.state.clone();
                if log.push(event.clone()).is_err() {
                    prop_assert_eq!(&log.state, &before);
                    continue;
                }
                if let RunEvent::StepStarted { step, .. } = event {
                    prop_assert!(log.state.deps_done(step));
                    prop_assert!(!before.paused && !before.abort_requested);
                }
                if let RunEvent::Finished { outcome: RunOutcome::Succeeded } = event {
                    prop_assert!(log.state.steps.values().all(StepState::is_done));
                }
            }
        }
    }
}
