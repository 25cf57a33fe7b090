//! The values the API answers and accepts, typed once and shared: the handlers serialize them,
//! `dr --json` prints the same shapes, and the CLI reads the daemon's answers into them instead
//! of picking through string-keyed JSON.

use crate::core::decision::{Automation, Decision};
use crate::core::ids::{RegionName, RunId, StepName};
use crate::core::plan::RunKind;
use crate::core::run::{RunStatus, StepOutcome, StepStatus, Trigger};
use crate::core::time::Timestamp;
use crate::daemon::RegionStatus;
use crate::store::{AuditEntry, StoredRun};
use serde::{Deserialize, Serialize};

/// A run as `dr --json` and the API show it: header, status, and each step in plan order with
/// its dependencies, times, outcome and notes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    /// The run.
    pub id: RunId,
    /// Failover or switchover.
    pub kind: RunKind,
    /// The writer's region when the run was planned.
    pub from: RegionName,
    /// The target.
    pub to: RegionName,
    /// Why it started.
    pub trigger: Trigger,
    /// Whether mutations are printed instead of made.
    pub dry_run: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// Its status; `None` when its log cannot be folded (a damaged run).
    pub status: Option<RunStatus>,
    /// Its steps, in plan order.
    pub steps: Vec<StepView>,
    /// Its audit trail, where asked for (`dr runs ID`, `GET /api/v1/runs/ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Vec<AuditEntry>>,
}

/// One step of a [`RunView`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    /// The step.
    pub name: StepName,
    /// The steps it waits for.
    pub after: Vec<StepName>,
    /// Where it stands.
    pub status: StepStatus,
    /// How many times it started.
    pub attempts: u32,
    /// When it first started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// Its outcome in one line.
    pub summary: Option<String>,
    /// Its outcome.
    pub outcome: Option<StepOutcome>,
    /// Its progress notes.
    pub notes: Vec<String>,
}

impl RunView {
    /// The view of a stored run, with its audit trail when given.
    pub fn of(run: &StoredRun, audit: Option<Vec<AuditEntry>>) -> RunView {
        let state = run.state().ok();
        let steps = state
            .as_ref()
            .map(|s| {
                run.header
                    .plan
                    .steps
                    .iter()
                    .filter_map(|planned| {
                        let step = s.steps.get(&planned.name)?;
                        Some(StepView {
                            name: planned.name,
                            after: planned.after.clone(),
                            status: step.status.clone(),
                            attempts: step.attempts,
                            started_at: step.started_at,
                            finished_at: step.finished_at,
                            summary: step.outcome.as_ref().map(|o| o.summary.clone()),
                            outcome: step.outcome.clone(),
                            notes: step.notes.clone(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        RunView {
            id: run.header.id.clone(),
            kind: run.header.kind,
            from: run.header.plan.request.from.clone(),
            to: run.header.plan.request.to.clone(),
            trigger: run.header.trigger.clone(),
            dry_run: run.header.dry_run,
            created_at: run.header.created_at,
            status: state.as_ref().map(|s| s.status()),
            steps,
            audit,
        }
    }

    /// Whether the run has ended or waits for an operator, and the exit code that says which;
    /// `None` while it goes on.
    pub fn settled(&self) -> Option<Settled> {
        match self.status.as_ref()? {
            RunStatus::Finished { outcome } if outcome.is_success() => Some(Settled::Succeeded),
            RunStatus::Finished { .. } => Some(Settled::Failed),
            RunStatus::AwaitingApproval { .. } | RunStatus::Stopped { .. } | RunStatus::Paused => {
                Some(Settled::NeedsOperator)
            }
            RunStatus::Running | RunStatus::Aborting => None,
        }
    }
}

/// How a run came to rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Finished, succeeded or degraded.
    Succeeded,
    /// Finished without reaching its goal.
    Failed,
    /// Waits for approval, a retry or a resume.
    NeedsOperator,
}

/// `GET /api/v1/status`: the daemon's latest view and the store's switches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// The daemon's clock.
    pub now: Timestamp,
    /// The writer's region, as last read.
    pub writer: Option<RegionName>,
    /// Each region, as the daemon last saw it.
    pub regions: Vec<RegionStatus>,
    /// The last decision.
    pub decision: Option<Decision>,
    /// The last decision, for people.
    pub reason: Option<String>,
    /// When the daemon last observed.
    pub observed_at: Option<Timestamp>,
    /// Automation switches.
    pub automation: Automation,
    /// When the cooldown ends, if in force.
    pub cooldown_until: Option<Timestamp>,
    /// The pre-warmed region.
    pub prewarmed: Option<RegionName>,
    /// The unfinished run.
    pub active_run: Option<RunView>,
    /// Record changes a run left for when Route53's control plane answers again.
    #[serde(default)]
    pub follow_ups: Vec<crate::daemon::follow_up::FollowUpStatus>,
    /// The daemon that answers, and the lease as it sees it: leader or standby, the epoch, the
    /// leader.
    #[serde(default)]
    pub daemon: Option<String>,
    /// Its region.
    #[serde(default)]
    pub daemon_region: Option<RegionName>,
    /// The lease as it sees it.
    #[serde(default)]
    pub lease: Option<crate::leader::LeaseStatus>,
    /// Every daemon sharing the store, as each last published.
    #[serde(default)]
    pub daemons: Vec<DaemonView>,
}

/// One daemon sharing the store, as it last published its status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DaemonView {
    /// Its id.
    pub daemon: String,
    /// Its region.
    pub region: Option<RegionName>,
    /// `leader` or `standby`, as it last said.
    pub role: String,
    /// The lease epoch it last saw.
    pub epoch: Option<u64>,
    /// When it last published, on its clock.
    pub observed_at: Timestamp,
    /// Its ticks so far.
    pub tick: u64,
}

impl DaemonView {
    /// The view of a published status.
    pub fn of(status: &crate::daemon::DaemonStatus) -> DaemonView {
        DaemonView {
            daemon: status.daemon.clone(),
            region: status.region.clone(),
            role: status
                .lease
                .as_ref()
                .map(|l| l.role.clone())
                .unwrap_or_else(|| "leader".into()),
            epoch: status.lease.as_ref().and_then(|l| l.epoch),
            observed_at: status.at,
            tick: status.tick,
        }
    }
}

/// The answer of pause, unpause and ack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutomationAnswer {
    /// The switches as they now are.
    pub automation: Automation,
    /// The run the pause also paused.
    pub paused_run: Option<RunId>,
}

/// Body of failover and switchover.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Target region.
    pub to: String,
    /// Writer's region (default: as the daemon last read it).
    pub from: Option<String>,
    /// Why, for the audit log.
    pub reason: String,
    /// Print mutations instead of making them.
    #[serde(default)]
    pub dry_run: bool,
}

/// Body of the other actions.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Why, for the audit log.
    pub reason: String,
    /// The step (approve).
    pub step: Option<String>,
}

/// Every error the API answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// The HTTP status code.
    pub status: u16,
}
