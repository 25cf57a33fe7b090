//! The executor: carries a run's plan out, checkpointing every step through the store.
//!
//! Each turn of the loop re-reads the run's log from the store, folds it with the core's
//! `RunState`, and does what `RunState::next` says: start steps (writing their intent first),
//! wait, finish, or stop for an operator. A fresh executor after a crash runs the same loop on
//! the same log; there is no separate recovery path. Operator requests from other processes
//! (pause, abort, approve) arrive through the store and are seen within `control_interval`.
//! The executor never decides what a step does: steps are in `steps`, plans come from the core.

pub mod control;
pub mod steps;

use crate::clock::Clock;
use crate::core::ids::{Actor, RunId, StepName};
use crate::core::plan::{Operation, Plan, PlanError, PlannedStep};
use crate::core::run::{
    Approval, EventRecord, Handle, Next, RUN_VERSION, RunEvent, RunHeader, RunOutcome, RunStatus,
    StepStatus, Trigger,
};
use crate::core::time::Timestamp;
use crate::provider::{Answer, ProviderError, Providers};
use crate::store::{Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use steps::{Mutation, StepResult};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What the engine could not do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The plan could not be built.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// An operator command does not fit the run's state.
    #[error("{0}")]
    Refused(String),
}

/// Reports what the engine does, for people (CLI output, drill timelines, logs).
pub trait Progress: Send + Sync {
    /// An event was stored.
    fn event(&self, _run: &RunId, _record: &EventRecord) {}
    /// A step waits for something.
    fn waiting(&self, _step: StepName, _at: Timestamp, _what: &str) {}
    /// A step makes (or, in a dry run, would make) a mutating call.
    fn calling(&self, _step: StepName, _at: Timestamp, _operation: &Operation, _dry_run: bool) {}
    /// A call failed transiently and will be tried again.
    fn retrying(&self, _step: StepName, _at: Timestamp, _error: &ProviderError, _after: Duration) {}
    /// The daemon decided (called when the decision changes).
    fn decided(&self, _at: Timestamp, _decision: &crate::core::decision::Decision) {}
    /// The daemon observed one region's signals in a round.
    fn observed(
        &self,
        _at: Timestamp,
        _region: &crate::core::ids::RegionName,
        _signals: &crate::core::detect::Signals,
    ) {
    }
    /// The daemon's store stopped working (called once, when it starts failing).
    fn store_failed(&self, _at: Timestamp, _error: &str) {}
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}

/// Timing of the engine's own loops.
#[derive(Clone, Copy, Debug)]
pub struct EngineSettings {
    /// Time between observations while a step waits.
    pub poll_interval: Duration,
    /// Time between re-reads of the store for operator requests.
    pub control_interval: Duration,
    /// Timeout of preflight's `/health` probes.
    pub probe_timeout: Duration,
}

impl EngineSettings {
    /// The settings of a config: the one place they are derived, for the CLI, the daemon and
    /// drills alike.
    pub fn from_config(config: &crate::config::Config) -> EngineSettings {
        EngineSettings {
            poll_interval: config.step_poll_interval,
            control_interval: config.step_poll_interval.min(Duration::from_secs(5)),
            probe_timeout: config.plan.verify.probe_timeout,
        }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            poll_interval: Duration::from_secs(10),
            control_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(5),
        }
    }
}

/// How `execute` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The run is over.
    Finished(RunOutcome),
    /// The run waits for an operator (approval, a failed step, a pause).
    Blocked(RunStatus),
    /// The shutdown token fired; steps in flight were checkpointed as interrupted and the run
    /// is paused.
    ShutDown,
}

/// A run to create, besides its plan.
#[derive(Clone, Debug)]
pub struct NewRun {
    /// Its id.
    pub id: RunId,
    /// Why.
    pub trigger: Trigger,
    /// Who asked.
    pub actor: Actor,
    /// Their reason, for the audit log.
    pub reason: String,
    /// Print mutations instead of making them.
    pub dry_run: bool,
}

/// The executor with everything it talks to.
#[derive(Clone)]
pub struct Engine {
    /// The checkpoint store.
    pub store: Arc<dyn Store>,
    /// The cloud.
    pub providers: Providers,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Who hears about progress.
    pub progress: Arc<dyn Progress>,
    /// Loop timings.
    pub settings: EngineSettings,
    /// Whether this process may act: when it shares its store with other daemons, only while
    /// it holds the leader lease, and everything it writes carries its epoch.
    pub fence: crate::leader::Fence,
}

/// Everything one step attempt needs.
pub struct StepCtx {
    /// The cloud.
    pub providers: Providers,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The run.
    pub run: RunId,
    /// The step.
    pub step: StepName,
    /// Print mutations instead of making them.
    pub dry_run: bool,
    /// Time between observations.
    pub poll_interval: Duration,
    /// Timeout of preflight probes.
    pub probe_timeout: Duration,
    /// Changes this step requested in earlier attempts, to be followed, not requested again.
    pub earlier_handles: Vec<Handle>,
    /// repoint-dns ended degraded, so verify does not insist on the records.
    pub dns_degraded: bool,
    /// repoint-dns left the record change as a follow-up, so verify checks the data plane.
    pub dns_follow_up: bool,
    /// The operator's approval of this step, with the figure it accepted.
    pub approval: Option<Approval>,
    fence: crate::leader::Fence,
    /// The epoch the step started under: it acts under that one or not at all.
    epoch: Option<u64>,
    store: Arc<dyn Store>,
    progress: Arc<dyn Progress>,
    waiting_for: Mutex<String>,
    guard: Guard,
    failures: AtomicU32,
}

/// What must hold, read from the store right before every mutating call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guard {
    /// A step of a run: the run is neither paused nor being aborted.
    Run,
    /// The daemon's pre-warm or scale-back: automation is not paused.
    Automation,
}

/// The wait before repeating a call that failed `failures` times in a row: `base` doubled per
/// failure up to `MAX_RETRY_DELAY` (or `base`, when larger), less up to a quarter of jitter
/// drawn from `salt`, so that retries spread out and a call failing for ever is repeated a few
/// times a minute at most, never in a tight loop.
pub fn retry_delay(base: Duration, failures: u32, salt: &str) -> Duration {
    let cap = MAX_RETRY_DELAY.max(base);
    let doubled = base.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let delay = doubled.min(cap);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in salt.bytes().chain(failures.to_le_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let jitter = delay.mul_f64((hash % 1000) as f64 / 4000.0);
    delay - jitter
}

/// The longest wait between repeats of a failing call.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

impl StepCtx {
    /// Reads, retrying transient errors with backoff until the step's limit; permanent errors
    /// are returned.
    pub async fn read<T, F, Fut>(&self, call: F) -> Result<T, ProviderError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut failures = 0;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(err) if err.is_transient() => {
                    failures += 1;
                    let backoff = retry_delay(Duration::from_secs(1), failures, &self.salt());
                    tracing::info!(run = %self.run, step = %self.step, error = %err, "transient error; retrying");
                    self.set_waiting(&format!("a retry after: {err}"));
                    self.progress
                        .retrying(self.step, self.clock.now(), &err, backoff);
                    self.clock.sleep(backoff).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Reads with three tries at most, for checks that must not hold the run up.
    pub async fn read_bounded<T, F, Fut>(&self, call: F) -> Result<T, ProviderError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(err) if err.is_transient() && attempt < 3 => {
                    let backoff = retry_delay(Duration::from_secs(1), attempt, &self.salt());
                    self.progress
                        .retrying(self.step, self.clock.now(), &err, backoff);
                    self.clock.sleep(backoff).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Makes one mutating call (or prints it in a dry run). Right before it, the store is read
    /// again: while the run is paused or being aborted (or, outside a run, automation is
    /// paused) no call is made; the step waits a poll interval and gets `Retry`, so it observes
    /// again (its executor interrupts it meanwhile). A transient failure waits with a growing,
    /// jittered backoff (`retry_delay`, from a poll interval) and returns `Retry` too.
    pub async fn mutate(&self, operation: &Operation) -> Mutation<Answer> {
        if self.dry_run {
            self.progress
                .calling(self.step, self.clock.now(), operation, true);
            return Mutation::DryRun;
        }
        if let Some(why) = self.blocked() {
            self.wait(&format!("permission to act ({why})")).await;
            return Mutation::Retry { unsure: false };
        }
        self.progress
            .calling(self.step, self.clock.now(), operation, false);
        match self.providers.execute(operation).await {
            Ok(value) => {
                self.failures.store(0, Ordering::Relaxed);
                Mutation::Done(value)
            }
            Err(err) if err.is_transient() => {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                let backoff = retry_delay(self.poll_interval, failures, &self.salt());
                self.progress
                    .retrying(self.step, self.clock.now(), &err, backoff);
                self.set_waiting(&format!("a retry after: {err}"));
                self.clock.sleep(backoff).await;
                Mutation::Retry {
                    unsure: !matches!(err, ProviderError::Throttled { .. }),
                }
            }
            Err(err) => Mutation::Failed(err),
        }
    }

    /// Why no mutating call may be made now, read from the store: the run is paused or being
    /// aborted (outside a run: automation is paused), or the store cannot say. None: it may.
    /// Synchronous, so that nothing changes between this check and the call that follows it.
    pub fn blocked(&self) -> Option<String> {
        if self.dry_run {
            return None;
        }
        // Leadership first, on this process's own clock: a daemon whose lease may have lapsed
        // (it was paused, or could not renew) makes no call, whatever the store says; nor does
        // a step started under an epoch this process no longer holds.
        let epoch = match self.leads() {
            Ok(epoch) => epoch,
            Err(why) => return Some(why),
        };
        let blocked = self.blocked_by_store(epoch);
        if blocked.is_some() {
            return blocked;
        }
        // Again after the store's read, which can be slow on a shared store: the call goes
        // out only if the lease still holds now.
        self.leads().err()
    }

    /// The epoch this step may act under now, or why it may not.
    fn leads(&self) -> Result<Option<u64>, String> {
        let epoch = self.fence.epoch().map_err(|e| e.to_string())?;
        if epoch != self.epoch {
            return Err(format!(
                "the lease epoch changed since this step started (epoch {:?}, now {:?})",
                self.epoch, epoch
            ));
        }
        Ok(epoch)
    }

    fn blocked_by_store(&self, epoch: Option<u64>) -> Option<String> {
        match self.guard {
            Guard::Run => match self.store.load_run(&self.run) {
                Ok(Some(stored)) => match stored.state() {
                    Ok(state)
                        if epoch.is_some_and(|mine| state.epoch.is_some_and(|e| e > mine)) =>
                    {
                        Some(format!(
                            "the run was taken over by lease epoch {}",
                            state.epoch.unwrap_or_default()
                        ))
                    }
                    Ok(state) if state.abort_requested => Some("the run is being aborted".into()),
                    Ok(state) if state.paused => Some("the run is paused".into()),
                    Ok(_) => None,
                    Err(err) => Some(format!("the run's log cannot be read: {err}")),
                },
                Ok(None) => Some(format!("run {} is not in the store", self.run)),
                Err(err) => Some(format!("the store cannot be read: {err}")),
            },
            Guard::Automation => match self.store.automation() {
                Ok(automation) if automation.paused => Some("automation is paused".into()),
                Ok(_) => None,
                Err(err) => Some(format!("the store cannot be read: {err}")),
            },
        }
    }

    /// Appends `event` to the run's log durably, before the call it announces; an error means
    /// the call must not be made.
    pub fn checkpoint(&self, event: RunEvent) -> Result<(), String> {
        let record = self
            .fence
            .epoch()
            .and_then(|epoch| {
                self.store.append_fenced(
                    &self.run,
                    self.clock.now(),
                    &Actor::engine(),
                    event,
                    epoch,
                )
            })
            .map_err(|e| format!("could not checkpoint before the call, so none was made: {e}"))?;
        self.progress.event(&self.run, &record);
        Ok(())
    }

    fn salt(&self) -> String {
        format!("{}/{}", self.run, self.step)
    }

    /// Waits one poll interval for `what`.
    pub async fn wait(&self, what: &str) {
        self.wait_for(what, self.poll_interval).await;
    }

    /// Waits `duration` for `what`.
    pub async fn wait_for(&self, what: &str, duration: Duration) {
        self.set_waiting(what);
        self.progress.waiting(self.step, self.clock.now(), what);
        self.clock.sleep(duration).await;
    }

    /// Records the handle of a change just requested, durably, so a later attempt follows it.
    /// Best effort: if the store refuses, a later attempt observes the resource instead, which
    /// is safe (node group updates carry an idempotency token; record changes are recomputed
    /// from the records as they are).
    pub fn record_handle(&self, handle: Handle) {
        let event = RunEvent::Requested {
            step: self.step,
            handle,
        };
        match self.fence.epoch().and_then(|epoch| {
            self.store
                .append_fenced(&self.run, self.clock.now(), &Actor::engine(), event, epoch)
        }) {
            Ok(record) => self.progress.event(&self.run, &record),
            Err(err) => {
                tracing::warn!(run = %self.run, step = %self.step, error = %err, "could not record a change's handle")
            }
        }
    }

    pub(crate) fn set_waiting(&self, what: &str) {
        *self.waiting_for.lock().unwrap_or_else(|p| p.into_inner()) = what.to_string();
    }

    fn waiting_for(&self) -> String {
        self.waiting_for
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A run id from the time and some process-local entropy, sortable by creation time.
pub fn new_run_id(now: Timestamp) -> RunId {
    let stamp = humantime::format_rfc3339_seconds(now.to_system_time())
        .to_string()
        .replace([':', '-'], "");
    let entropy = std::process::id() as u64
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0));
    RunId::new(format!("r-{stamp}-{:04x}", entropy & 0xffff))
}

impl Engine {
    /// Stores a new run of exactly `plan`, the value built once by the caller: what an operator
    /// was shown and confirmed is what is stored and carried out. Fails while another run is
    /// unfinished.
    pub fn create_run(&self, plan: Plan, new: NewRun) -> Result<RunHeader, EngineError> {
        let header = RunHeader {
            version: RUN_VERSION,
            id: new.id,
            kind: plan.request.kind,
            trigger: new.trigger,
            created_at: self.clock.now(),
            dry_run: new.dry_run,
            plan,
        };
        self.store
            .create_run_fenced(&header, &new.actor, &new.reason, self.fence.epoch()?)?;
        Ok(header)
    }

    fn append(&self, run: &RunId, event: RunEvent) -> Result<EventRecord, StoreError> {
        let record = self.store.append_fenced(
            run,
            self.clock.now(),
            &Actor::engine(),
            event,
            self.fence.epoch()?,
        )?;
        let entry = crate::store::AuditEntry::of_event(run, &record);
        tracing::info!(run = %run, seq = record.seq, action = %entry.action, reason = %entry.reason, "checkpoint");
        self.progress.event(run, &record);
        Ok(record)
    }

    /// Carries the run out until it finishes, blocks on an operator, or `shutdown` fires.
    pub async fn execute(
        &self,
        run: &RunId,
        shutdown: &CancellationToken,
    ) -> Result<ExecOutcome, EngineError> {
        let mut tasks: JoinSet<(StepName, StepResult)> = JoinSet::new();
        let mut in_flight: BTreeMap<StepName, CancellationToken> = BTreeMap::new();
        let mut task_steps: BTreeMap<tokio::task::Id, StepName> = BTreeMap::new();
        let mut stop_reason: Option<String> = None;
        let mut cancel_reason = String::new();
        loop {
            let stored = self
                .store
                .load_run(run)?
                .ok_or_else(|| StoreError::NoSuchRun(run.clone()))?;
            let state = stored.state()?;
            let flying: BTreeSet<StepName> = in_flight.keys().copied().collect();

            if stop_reason.is_none() && shutdown.is_cancelled() {
                let reason =
                    "dr was stopped (signal); the run resumes with `dr resume`".to_string();
                for token in in_flight.values() {
                    token.cancel();
                }
                cancel_reason = reason.clone();
                stop_reason = Some(reason);
            }
            if let Some(reason) = &stop_reason {
                if flying.is_empty() {
                    if state.outcome.is_none() && !state.paused && !state.abort_requested {
                        self.append(
                            run,
                            RunEvent::Paused {
                                reason: reason.clone(),
                            },
                        )?;
                    }
                    return Ok(ExecOutcome::ShutDown);
                }
            } else {
                match state.next(&flying) {
                    Next::Over(outcome) => return Ok(ExecOutcome::Finished(outcome)),
                    Next::Finish(outcome) => {
                        self.append(run, RunEvent::Finished { outcome })?;
                        return Ok(ExecOutcome::Finished(outcome));
                    }
                    Next::Start(ready) => {
                        for step in ready {
                            let attempt = state.steps[&step].attempts + 1;
                            self.append(run, RunEvent::StepStarted { step, attempt })?;
                            let Some(planned) = stored.header.plan.step(step).cloned() else {
                                continue;
                            };
                            let token = CancellationToken::new();
                            let ctx = self.step_ctx(&stored.header, &state, step);
                            let handle = tasks.spawn(run_step(ctx, planned, token.clone()));
                            task_steps.insert(handle.id(), step);
                            in_flight.insert(step, token);
                        }
                        continue;
                    }
                    Next::Wait => {}
                    Next::Blocked(status) => {
                        if flying.is_empty() {
                            return Ok(ExecOutcome::Blocked(status));
                        }
                        if matches!(status, RunStatus::Paused | RunStatus::Aborting) {
                            cancel_reason = match status {
                                RunStatus::Paused => "the run was paused".to_string(),
                                _ => "the run is being aborted".to_string(),
                            };
                            for token in in_flight.values() {
                                token.cancel();
                            }
                        }
                    }
                }
            }

            tokio::select! {
                Some(joined) = tasks.join_next() => {
                    let (step, result) = match joined {
                        Ok(done) => done,
                        Err(err) => {
                            // A panicking step is a bug; it must not take the run with it.
                            let Some(step) = task_steps.get(&err.id()).copied() else { continue };
                            (step, StepResult::Failed(format!("internal error in step: {err}")))
                        }
                    };
                    in_flight.remove(&step);
                    let event = match result {
                        StepResult::Succeeded(outcome) => RunEvent::StepSucceeded { step, outcome },
                        StepResult::Failed(error) => RunEvent::StepFailed { step, error },
                        StepResult::Interrupted(_) => RunEvent::StepInterrupted {
                            step,
                            reason: cancel_reason.clone(),
                        },
                        StepResult::Gated(gate) => RunEvent::StepGated { step, gate },
                    };
                    match self.append(run, event) {
                        Ok(_) | Err(StoreError::Refused(_)) => {}
                        Err(err) => return Err(err.into()),
                    }
                }
                _ = self.clock.sleep(self.settings.control_interval) => {}
                _ = shutdown.cancelled(), if stop_reason.is_none() => {}
            }
        }
    }

    /// A context for scaling outside a run (the daemon's pre-warm and scale-back). `label`
    /// names the action in idempotency tokens; its notes go nowhere.
    pub fn side_ctx(&self, label: &str) -> StepCtx {
        StepCtx {
            providers: self.providers.clone(),
            clock: self.clock.clone(),
            run: RunId::new(label),
            step: StepName::ScaleTarget,
            dry_run: false,
            poll_interval: self.settings.poll_interval,
            probe_timeout: self.settings.probe_timeout,
            earlier_handles: Vec::new(),
            dns_degraded: false,
            dns_follow_up: false,
            approval: None,
            fence: self.fence.clone(),
            epoch: self.fence.epoch().ok().flatten(),
            store: self.store.clone(),
            progress: Arc::new(Silent),
            waiting_for: Mutex::new(String::new()),
            guard: Guard::Automation,
            failures: AtomicU32::new(0),
        }
    }

    fn step_ctx(
        &self,
        header: &RunHeader,
        state: &crate::core::run::RunState,
        step: StepName,
    ) -> StepCtx {
        let dns_degraded = state
            .steps
            .get(&StepName::RepointDns)
            .map(|s| {
                matches!(s.status, StepStatus::Skipped { .. })
                    || s.outcome.as_ref().is_some_and(|o| o.degraded)
            })
            .unwrap_or(false);
        let dns_follow_up = state
            .steps
            .get(&StepName::RepointDns)
            .is_some_and(|s| s.outcome.as_ref().is_some_and(|o| o.follow_up.is_some()));
        StepCtx {
            providers: self.providers.clone(),
            clock: self.clock.clone(),
            run: header.id.clone(),
            step,
            dry_run: header.dry_run,
            poll_interval: self.settings.poll_interval,
            probe_timeout: self.settings.probe_timeout,
            earlier_handles: state
                .steps
                .get(&step)
                .map(|s| s.handles.clone())
                .unwrap_or_default(),
            dns_degraded,
            dns_follow_up,
            approval: state.steps.get(&step).and_then(|s| s.approval.clone()),
            fence: self.fence.clone(),
            epoch: self.fence.epoch().ok().flatten(),
            store: self.store.clone(),
            progress: self.progress.clone(),
            waiting_for: Mutex::new(String::new()),
            guard: Guard::Run,
            failures: AtomicU32::new(0),
        }
    }
}

async fn run_step(
    ctx: StepCtx,
    planned: PlannedStep,
    cancel: CancellationToken,
) -> (StepName, StepResult) {
    let step = planned.name;
    let result = tokio::select! {
        result = steps::execute(&ctx, &planned.spec) => result,
        _ = ctx.clock.sleep(planned.timeout) => {
            steps::on_timeout(step, planned.timeout, &ctx.waiting_for())
        }
        _ = cancel.cancelled() => StepResult::Interrupted(String::new()),
    };
    (step, result)
}
