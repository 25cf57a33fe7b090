//! Game-day drills on the simulator, in virtual time: the scenario's events change the world or
//! run operator commands, the real engine carries runs out, and a report measures RTO and RPO
//! against the targets.
//!
//! Callers run `run` inside a tokio runtime started paused (`drill::runtime`), so idle time jumps
//! to the next timer and a 40-minute scenario takes milliseconds. The drill owns its world and
//! its in-memory store; it touches no file and no network.

pub mod report;
pub mod scenario;

use crate::clock::{Clock, VirtualClock};
use crate::config::Config;
use crate::core::decision::Decision;
use crate::core::detect::Signals;
use crate::core::ids::{Actor, RegionName, RunId, StepName};
use crate::core::plan::{Operation, PlanRequest, RunKind, build_plan};
use crate::core::run::{EventRecord, RunEvent, Trigger};
use crate::core::time::{Timestamp, fmt_duration};
use crate::daemon::{Daemon, DaemonSettings};
use crate::engine::{Engine, EngineSettings, ExecOutcome, NewRun, Progress, control};
use crate::provider::sim::world::Fault;
use crate::provider::sim::{SimProvider, World};
use crate::provider::{ProviderError, Providers};
use crate::store::{MemoryStore, Store};
pub use report::DrillReport;
use scenario::{Action, OperatorCommand, Scenario};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The drill's time zero: 2026-01-01T00:00:00Z, so times in the drill's texts read as dates.
pub const DRILL_START: Timestamp = Timestamp(1_767_225_600_000);

/// How to run a drill.
#[derive(Clone, Debug, Default)]
pub struct DrillOptions {
    /// Run plans serially, as the seed's manual runbook does (for comparison).
    pub serial: bool,
    /// Override the scenario's and the config's seed.
    pub seed: Option<u64>,
    /// Override the scenario's and the config's pre-warm setting.
    pub pre_warm: Option<bool>,
}

/// A current-thread tokio runtime whose clock starts paused: virtual time for drills.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
}

/// One line of the drill's timeline.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TimelineEntry {
    /// Seconds since the scenario started.
    pub at_seconds: f64,
    /// What happened.
    pub text: String,
}

/// Collects the engine's progress into a timeline.
struct Recorder {
    entries: Mutex<Vec<TimelineEntry>>,
    last_wait: Mutex<std::collections::BTreeMap<StepName, (String, Timestamp)>>,
    decisions: Mutex<Vec<(Timestamp, Decision)>>,
    observations: Mutex<Vec<Observed>>,
}

/// One round of the daemon's signals about one region, as it observed them.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// When.
    pub at: Timestamp,
    /// The region.
    pub region: RegionName,
    /// What each signal said.
    pub signals: Signals,
}

/// Everything a drill leaves behind besides its report, for tests that hold the drill to its
/// rules: the final simulated world (with every mutating call), every run's log, the daemon's
/// observations and decisions.
#[derive(Clone, Debug)]
pub struct Evidence {
    /// The simulated world at the end.
    pub world: World,
    /// Every run, oldest first.
    pub runs: Vec<crate::store::StoredRun>,
    /// Every round the daemon observed.
    pub observations: Vec<Observed>,
    /// The daemon's decisions, each time it changed.
    pub decisions: Vec<(Timestamp, Decision)>,
    /// The audit log, oldest first.
    pub audit: Vec<crate::store::AuditEntry>,
}

impl Recorder {
    fn push(&self, at: Timestamp, text: String) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(TimelineEntry {
                at_seconds: seconds(at),
                text,
            });
    }
}

fn seconds(at: Timestamp) -> f64 {
    at.since(DRILL_START).as_millis() as f64 / 1000.0
}

impl Progress for Recorder {
    fn event(&self, _run: &RunId, record: &EventRecord) {
        let text = match &record.event {
            RunEvent::StepStarted { step, attempt } if *attempt == 1 => format!("{step} started"),
            RunEvent::StepStarted { step, attempt } => {
                format!("{step} started (attempt {attempt})")
            }
            RunEvent::StepProgress { step, note } => format!("{step}: {note}"),
            event @ (RunEvent::StepGated { .. }
            | RunEvent::Promoting { .. }
            | RunEvent::Requested { .. }
            | RunEvent::TakenOver { .. }) => event.shared_text().unwrap_or_default(),
            RunEvent::StepSucceeded { step, outcome } => {
                format!("{step} done: {}", outcome.summary)
            }
            RunEvent::StepFailed { step, error } => format!("{step} FAILED: {error}"),
            RunEvent::StepInterrupted { step, reason } => format!("{step} interrupted: {reason}"),
            RunEvent::StepSkipped { step, reason } => format!("{step} skipped: {reason}"),
            RunEvent::Approved { step, reason, .. } => format!("{step} approved: {reason}"),
            RunEvent::Paused { reason } => format!("run paused: {reason}"),
            RunEvent::Resumed { reason } => format!("run resumed: {reason}"),
            RunEvent::AbortRequested { reason } => format!("abort requested: {reason}"),
            RunEvent::Finished { outcome } => format!("run finished: {outcome}"),
        };
        self.push(record.at, text);
    }

    fn waiting(&self, step: StepName, at: Timestamp, what: &str) {
        let mut last = self.last_wait.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = match last.get(&step) {
            Some((previous, since)) => {
                previous != what || at.since(*since) >= Duration::from_secs(60)
            }
            None => true,
        };
        if fresh {
            last.insert(step, (what.to_string(), at));
            drop(last);
            self.push(at, format!("{step} waiting for {what}"));
        }
    }

    fn calling(&self, step: StepName, at: Timestamp, operation: &Operation, dry_run: bool) {
        let verb = if dry_run { "would call" } else { "calls" };
        self.push(at, format!("{step} {verb} {operation}"));
    }

    fn retrying(&self, step: StepName, at: Timestamp, error: &ProviderError, after: Duration) {
        self.push(
            at,
            format!("{step}: {error}; retrying in {}", fmt_duration(after)),
        );
    }

    fn decided(&self, at: Timestamp, decision: &Decision) {
        self.decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((at, decision.clone()));
        self.push(at, format!("daemon: {decision}"));
    }

    fn observed(&self, at: Timestamp, region: &RegionName, signals: &Signals) {
        self.observations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Observed {
                at,
                region: region.clone(),
                signals: signals.clone(),
            });
    }
}

/// A drill that could not run.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// A scenario event names something the config lacks.
    #[error("scenario event at {at}: {message}")]
    Event {
        /// When.
        at: String,
        /// What.
        message: String,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

struct Drill {
    engine: Engine,
    sim: Arc<SimProvider>,
    config: Config,
    scenario: Scenario,
    options: DrillOptions,
    recorder: Arc<Recorder>,
    executor: Option<JoinHandle<Result<ExecOutcome, crate::engine::EngineError>>>,
    runs: Vec<RunId>,
    outage_started_at: Option<Timestamp>,
    daemon: Option<(
        JoinHandle<Result<(), crate::daemon::DaemonError>>,
        CancellationToken,
    )>,
}

/// Runs `scenario` on `config`'s topology. Must be called inside `runtime()`.
pub async fn run(
    config: &Config,
    scenario: &Scenario,
    options: &DrillOptions,
) -> Result<DrillReport, DrillError> {
    Ok(run_with_evidence(config, scenario, options).await?.0)
}

/// Runs `scenario` like `run`, and also returns what the drill left behind.
pub async fn run_with_evidence(
    config: &Config,
    scenario: &Scenario,
    options: &DrillOptions,
) -> Result<(DrillReport, Evidence), DrillError> {
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::starting_at(DRILL_START));
    let seed = options.seed.or(scenario.seed).unwrap_or(config.sim.seed);
    let world = World::new(&config.topology, seed, DRILL_START);
    let sim = Arc::new(SimProvider::in_memory(world, clock.clone()));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    for region in &scenario.requires_regions {
        if config.topology.region(&RegionName::new(region)).is_none() {
            return Err(DrillError::Event {
                at: "T+0s".into(),
                message: format!(
                    "scenario `{}` needs region {region} in the config; run it with a config that has it, such as config/three-region.toml",
                    scenario.name
                ),
            });
        }
    }
    let recorder = Arc::new(Recorder {
        entries: Mutex::new(Vec::new()),
        last_wait: Mutex::new(Default::default()),
        decisions: Mutex::new(Vec::new()),
        observations: Mutex::new(Vec::new()),
    });
    let engine = Engine {
        store,
        providers: Providers::all_from(sim.clone()),
        clock: clock.clone(),
        progress: recorder.clone(),
        settings: EngineSettings::from_config(config),
        fence: Default::default(),
    };
    let mut drill = Drill {
        engine,
        sim,
        config: config.clone(),
        scenario: scenario.clone(),
        options: options.clone(),
        recorder,
        executor: None,
        runs: Vec::new(),
        outage_started_at: None,
        daemon: None,
    };
    if scenario.daemon {
        let pre_warm = options.pre_warm.or(scenario.pre_warm);
        let settings = DaemonSettings::from_config(config, pre_warm);
        let daemon = Daemon::new(config.clone(), drill.engine.clone(), settings);
        let token = CancellationToken::new();
        let handle = tokio::spawn(daemon.run(token.clone()));
        drill.daemon = Some((handle, token));
    }
    for event in &scenario.events {
        let at = DRILL_START.plus(event.at);
        let now = clock.now();
        if at > now {
            clock.sleep(at.since(now)).await;
        }
        drill.apply(&event.action).await?;
    }
    let end = DRILL_START.plus(scenario.duration);
    let now = clock.now();
    if end > now {
        clock.sleep(end.since(now)).await;
    }
    drill.finish().await
}

impl Drill {
    fn now(&self) -> Timestamp {
        self.engine.clock.now()
    }

    fn event_error(&self, message: String) -> DrillError {
        DrillError::Event {
            at: format!("T+{}", fmt_duration(self.now().since(DRILL_START))),
            message,
        }
    }

    fn world(&self) -> World {
        self.sim.snapshot().expect("in-memory worlds always read")
    }

    fn change(
        &self,
        what: String,
        change: impl FnOnce(&mut World) -> Result<(), String>,
    ) -> Result<(), DrillError> {
        self.sim
            .update(change)
            .expect("in-memory worlds always update")
            .map_err(|message| self.event_error(message))?;
        self.recorder.push(self.now(), what);
        Ok(())
    }

    async fn apply(&mut self, action: &Action) -> Result<(), DrillError> {
        match action {
            Action::Outage { region, kind } => {
                let writer = self.world().writer_region();
                if writer.as_ref() == Some(region) && self.outage_started_at.is_none() {
                    self.outage_started_at = Some(self.now());
                }
                let kind = *kind;
                self.change(
                    format!(
                        "{region}: {} outage begins",
                        match kind {
                            crate::provider::sim::OutageKind::Full => "full",
                            crate::provider::sim::OutageKind::App => "application",
                        }
                    ),
                    |w| w.set_outage(region, Some(kind)),
                )
            }
            Action::Recover { region } => self.change(format!("{region}: recovers"), |w| {
                w.set_outage(region, None)
            }),
            Action::CheckersFailing { region, share } => self.change(
                format!(
                    "{region}: {:.0}% of Route53 checkers see it fail",
                    share * 100.0
                ),
                |w| w.set_failing_checkers(region, *share),
            ),
            Action::Lag { region, lag } => self.change(
                format!("{region}: replication lag is now {}", fmt_duration(*lag)),
                |w| w.set_lag(region, *lag),
            ),
            Action::Fault {
                operation,
                kind,
                count,
                latency,
            } => self.change(
                format!("fault: the next {count} {operation} call(s) get {kind:?}"),
                |w| {
                    w.faults.push(Fault {
                        operation: operation.clone(),
                        kind: *kind,
                        remaining: *count,
                        latency_ms: latency.as_millis() as u64,
                    });
                    Ok(())
                },
            ),
            Action::Isolate { cut_off } => self.change(
                if *cut_off {
                    "dr is cut off from every API and probe".to_string()
                } else {
                    "dr's network is back".to_string()
                },
                |w| {
                    w.isolated = *cut_off;
                    Ok(())
                },
            ),
            Action::BlockProbes { blocked } => self.change(
                if *blocked {
                    "dr's probes are blocked (APIs still answer)".to_string()
                } else {
                    "dr's probes get through again".to_string()
                },
                |w| {
                    w.probes_blocked = *blocked;
                    Ok(())
                },
            ),
            Action::Partition { region, cut } => self.change(
                if *cut {
                    format!("dr is cut off from {region} (Route53's checkers still reach it)")
                } else {
                    format!("dr reaches {region} again")
                },
                |w| {
                    if !w.regions.contains_key(region) {
                        return Err(format!("region `{region}` is not in the simulated world"));
                    }
                    if *cut {
                        w.cut_off.insert(region.clone());
                    } else {
                        w.cut_off.remove(region);
                    }
                    Ok(())
                },
            ),
            Action::Route53DataPlane { up } => self.change(
                format!(
                    "Route53's name servers {} answering dr",
                    if *up { "start" } else { "stop" }
                ),
                |w| {
                    w.dns_data_plane_up = *up;
                    Ok(())
                },
            ),
            Action::Replication { region, stalled } => self.change(
                if *stalled {
                    format!("replication to {region} stalls")
                } else {
                    format!("replication to {region} flows again")
                },
                |w| w.set_stalled(region, *stalled),
            ),
            Action::Route53ControlPlane { up } => self.change(
                format!(
                    "Route53 control plane {}",
                    if *up {
                        "answers again"
                    } else {
                        "stops answering"
                    }
                ),
                |w| {
                    w.dns_control_plane_up = *up;
                    Ok(())
                },
            ),
            Action::Command(command) => self.command(command).await,
        }
    }

    fn region(&self, name: &str) -> Result<RegionName, DrillError> {
        let region = RegionName::new(name);
        if self.config.topology.region(&region).is_none() {
            return Err(self.event_error(format!("region `{name}` is not in the config")));
        }
        Ok(region)
    }

    fn executor_running(&self) -> bool {
        self.daemon.is_some() || self.executor.as_ref().is_some_and(|h| !h.is_finished())
    }

    fn spawn_executor(&mut self, run: RunId) {
        if self.daemon.is_some() {
            // The daemon carries runs out; it sees this one at its next tick.
            return;
        }
        let engine = self.engine.clone();
        self.executor = Some(tokio::spawn(async move {
            engine.execute(&run, &CancellationToken::new()).await
        }));
    }

    /// The run an operator command means: the unfinished one (which the daemon may have
    /// started), else the last one the drill started. With none, the command is refused in the
    /// timeline, as `dr` refuses it.
    fn current_run(&self, now: Timestamp) -> Option<RunId> {
        if let Ok(Some(run)) = self.engine.store.active_run() {
            return Some(run);
        }
        if let Ok(headers) = self.engine.store.list_runs(1)
            && let Some(last) = headers.into_iter().next()
        {
            return Some(last.id);
        }
        let last = self.runs.last().cloned();
        if last.is_none() {
            self.recorder
                .push(now, "refused: no run has been started".into());
        }
        last
    }

    async fn command(&mut self, command: &OperatorCommand) -> Result<(), DrillError> {
        let actor = Actor::new("drill-operator");
        let now = self.now();
        let store = self.engine.store.clone();
        match command {
            OperatorCommand::Failover { to, from } | OperatorCommand::Switchover { to, from } => {
                let kind = if matches!(command, OperatorCommand::Failover { .. }) {
                    RunKind::Failover
                } else {
                    RunKind::Switchover
                };
                let to = self.region(to)?;
                let from = match from {
                    Some(from) => self.region(from)?,
                    None => self.world().writer_region().ok_or_else(|| {
                        self.event_error("the simulated global cluster has no writer".into())
                    })?,
                };
                self.recorder
                    .push(now, format!("operator: dr {kind} --to {to}"));
                let id = RunId::new(format!("drill-{}", self.runs.len() + 1));
                let mut options = self.config.plan.clone();
                options.serial = self.options.serial;
                let request = PlanRequest { from, to, kind };
                let created = build_plan(&self.config.topology, &request, &options)
                    .map_err(crate::engine::EngineError::from)
                    .and_then(|plan| {
                        self.engine.create_run(
                            plan,
                            NewRun {
                                id: id.clone(),
                                trigger: Trigger::Drill {
                                    scenario: self.scenario.name.clone(),
                                },
                                actor,
                                reason: format!("drill {}", self.scenario.name),
                                dry_run: false,
                            },
                        )
                    });
                match created {
                    Ok(_) => {
                        self.runs.push(id.clone());
                        self.spawn_executor(id);
                    }
                    Err(err) => self.recorder.push(now, format!("refused: {err}")),
                }
            }
            OperatorCommand::Approve { step } => {
                let Some(run) = self.current_run(now) else {
                    return Ok(());
                };
                let step = step.as_deref().and_then(StepName::parse);
                self.recorder.push(now, "operator: dr approve".into());
                match control::approve(
                    store.as_ref(),
                    &run,
                    step,
                    None,
                    &actor,
                    "approved in drill",
                    now,
                ) {
                    Ok(record) => {
                        self.recorder.event(&run, &record);
                        if !self.executor_running() {
                            self.spawn_executor(run);
                        }
                    }
                    Err(err) => self.recorder.push(now, format!("refused: {err}")),
                }
            }
            OperatorCommand::Skip { step, reason } => {
                let Some(run) = self.current_run(now) else {
                    return Ok(());
                };
                let step = StepName::parse(step)
                    .ok_or_else(|| self.event_error(format!("`{step}` is not a step")))?;
                self.recorder.push(now, format!("operator: dr skip {step}"));
                match control::skip(store.as_ref(), &run, step, &actor, reason, now) {
                    Ok(record) => self.recorder.event(&run, &record),
                    Err(err) => self.recorder.push(now, format!("refused: {err}")),
                }
            }
            OperatorCommand::Pause => {
                self.recorder.push(now, "operator: dr pause".into());
                let paused = crate::engine::control::pause_automation(
                    store.as_ref(),
                    &actor,
                    "paused in drill",
                    now,
                );
                if let Err(err) = paused {
                    self.recorder.push(now, format!("refused: {err}"));
                }
            }
            OperatorCommand::Unpause => {
                self.recorder.push(now, "operator: dr unpause".into());
                let unpaused = crate::engine::control::unpause_automation(
                    store.as_ref(),
                    &actor,
                    "unpaused in drill",
                    now,
                );
                if let Err(err) = unpaused {
                    self.recorder.push(now, format!("refused: {err}"));
                }
            }
            OperatorCommand::Ack => {
                self.recorder.push(now, "operator: dr ack".into());
                let acked = crate::engine::control::ack_cooldown(
                    store.as_ref(),
                    &actor,
                    "acknowledged in drill",
                    now,
                );
                if let Err(err) = acked {
                    self.recorder.push(now, format!("refused: {err}"));
                }
            }
            OperatorCommand::Resume => {
                let Some(run) = self.current_run(now) else {
                    return Ok(());
                };
                self.recorder.push(now, "operator: dr resume".into());
                if let Some(handle) = self.executor.take() {
                    // Let a pausing executor finish its checkpoint first.
                    let _ = handle.await;
                }
                match control::resume(store.as_ref(), &run, &actor, "resumed in drill", now) {
                    Ok(_) => self.spawn_executor(run),
                    Err(err) => self.recorder.push(now, format!("refused: {err}")),
                }
            }
            OperatorCommand::Abort => {
                let Some(run) = self.current_run(now) else {
                    return Ok(());
                };
                self.recorder.push(now, "operator: dr abort".into());
                let running = self.executor_running();
                if let Err(err) = control::abort(
                    store.as_ref(),
                    &run,
                    &actor,
                    "aborted in drill",
                    now,
                    running,
                ) {
                    self.recorder.push(now, format!("refused: {err}"));
                }
            }
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(DrillReport, Evidence), DrillError> {
        let unfinished_run = self.engine.store.active_run().ok().flatten().is_some();
        if let Some((handle, token)) = self.daemon.take() {
            token.cancel();
            let _ = handle.await;
        }
        let unfinished = unfinished_run || self.executor.as_ref().is_some_and(|h| !h.is_finished());
        if let Some(handle) = self.executor.take() {
            handle.abort();
        }
        // Runs the daemon started belong in the report too, in creation order.
        let headers = self
            .engine
            .store
            .list_runs(1000)
            .map_err(crate::engine::EngineError::from)?;
        self.runs = headers.into_iter().rev().map(|h| h.id).collect();
        let decisions = self
            .recorder
            .decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let world = self.world();
        let mut runs = Vec::new();
        for id in &self.runs {
            let stored = self.engine.store.load_run(id);
            if let Some(run) = stored.map_err(crate::engine::EngineError::from)? {
                runs.push(run);
            }
        }
        let entries = self
            .recorder
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let report = report::build(report::Inputs {
            scenario: &self.scenario,
            config: &self.config,
            serial: self.options.serial,
            seed: world.seed,
            world: &world,
            runs: &runs,
            unfinished,
            outage_started_at: self.outage_started_at,
            timeline: entries,
            decisions: decisions.clone(),
        });
        let observations = std::mem::take(
            &mut *self
                .recorder
                .observations
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut audit = self.engine.store.audit(None, 100_000).unwrap_or_default();
        audit.sort_by_key(|e| e.at);
        Ok((
            report,
            Evidence {
                world,
                runs,
                observations,
                decisions,
                audit,
            },
        ))
    }
}

/// The runs a dry-run drill rehearses against the configured backend, and the scripted events it
/// cannot inject there (nothing in a real account is broken on purpose).
///
/// Operator `failover` and `switchover` commands become dry runs, in order. A scenario without
/// one (an automatic scenario) rehearses what the daemon would do when the writer's region
/// fails: a failover from `writer` to the most preferred other region, taken from the first
/// outage of the writer's region.
pub fn dry_run_requests(
    scenario: &Scenario,
    topology: &crate::core::topology::Topology,
    writer: &RegionName,
) -> Result<(Vec<PlanRequest>, Vec<String>), String> {
    let known = |name: &str| -> Result<RegionName, String> {
        let region = RegionName::new(name);
        if topology.region(&region).is_none() {
            return Err(format!(
                "scenario `{}` names region `{name}`, which is not in the config",
                scenario.name
            ));
        }
        Ok(region)
    };
    let mut requests = Vec::new();
    let mut not_injected = Vec::new();
    let has_commands = scenario.events.iter().any(|e| {
        matches!(
            e.action,
            Action::Command(OperatorCommand::Failover { .. })
                | Action::Command(OperatorCommand::Switchover { .. })
        )
    });
    for event in &scenario.events {
        let at = format!("T+{}", fmt_duration(event.at));
        match &event.action {
            Action::Command(OperatorCommand::Failover { to, from }) => requests.push(PlanRequest {
                from: from
                    .as_deref()
                    .map(known)
                    .transpose()?
                    .unwrap_or(writer.clone()),
                to: known(to)?,
                kind: RunKind::Failover,
            }),
            Action::Command(OperatorCommand::Switchover { to, from }) => {
                requests.push(PlanRequest {
                    from: from
                        .as_deref()
                        .map(known)
                        .transpose()?
                        .unwrap_or(writer.clone()),
                    to: known(to)?,
                    kind: RunKind::Switchover,
                })
            }
            Action::Outage { region, .. }
                if !has_commands && scenario.daemon && region == writer && requests.is_empty() =>
            {
                let target = topology
                    .regions
                    .iter()
                    .find(|r| &r.name != writer)
                    .ok_or("the config has no region to fail over to")?;
                not_injected.push(format!(
                    "{at}: outage of {region} (rehearsing the failover the daemon would start once the failure window fills)"
                ));
                requests.push(PlanRequest {
                    from: writer.clone(),
                    to: target.name.clone(),
                    kind: RunKind::Failover,
                });
            }
            Action::Command(other) => not_injected.push(format!(
                "{at}: operator command `{}` (a dry run never waits for an operator)",
                format!("{other:?}").to_lowercase()
            )),
            other => not_injected.push(format!(
                "{at}: {} (scripted faults are not injected into a real account)",
                describe(other)
            )),
        }
    }
    if requests.is_empty() {
        return Err(format!(
            "scenario `{}` has no failover or switchover to rehearse, and no outage of the writer's region {writer}",
            scenario.name
        ));
    }
    Ok((requests, not_injected))
}

/// A scripted event in words.
fn describe(action: &Action) -> String {
    match action {
        Action::Outage { region, kind } => {
            format!(
                "outage of {region} ({})",
                format!("{kind:?}").to_lowercase()
            )
        }
        Action::Recover { region } => format!("{region} recovers"),
        Action::CheckersFailing { region, share } => format!(
            "{:.0}% of Route53's checkers see {region} fail",
            share * 100.0
        ),
        Action::Lag { region, lag } => {
            format!("replication lag of {region} becomes {}", fmt_duration(*lag))
        }
        Action::Fault {
            operation,
            kind,
            count,
            ..
        } => format!(
            "{} fault in the next {count} {operation} call(s)",
            format!("{kind:?}").to_lowercase()
        ),
        Action::Route53ControlPlane { up } => format!(
            "Route53's control plane goes {}",
            if *up { "up" } else { "down" }
        ),
        Action::Isolate { cut_off } => {
            if *cut_off {
                "dr loses its network".into()
            } else {
                "dr gets its network back".into()
            }
        }
        Action::BlockProbes { blocked } => {
            if *blocked {
                "dr's probes are blocked".into()
            } else {
                "dr's probes are unblocked".into()
            }
        }
        Action::Partition { region, cut } => {
            if *cut {
                format!("dr is cut off from {region}")
            } else {
                format!("dr reaches {region} again")
            }
        }
        Action::Route53DataPlane { up } => format!(
            "Route53's name servers go {}",
            if *up { "up" } else { "down" }
        ),
        Action::Replication { region, stalled } => {
            if *stalled {
                format!("replication to {region} stalls")
            } else {
                format!("replication to {region} flows again")
            }
        }
        Action::Command(command) => format!("operator command {command:?}"),
    }
}
