//! The daemon: watches every region, decides with the core's policy, and acts.
//!
//! Each tick re-reads the world and the store and acts on no hints; the next tick is the retry.
//! A tick observes every region's Route53 health check, probe and lag, folds them into the
//! detectors, asks `core::decision::decide`, then does what it says: starts an automatic
//! failover, pre-warms or scales back a target, or records why it does nothing. Runs are carried
//! out by the engine in a task; operator requests reach the daemon through the store. The
//! daemon never decides anything itself, and never fails back.

pub mod follow_up;

use crate::clock::Clock;
use crate::config::Config;
use crate::core::decision::{Automation, Decision, Hold, Policy, RegionView, Situation, decide};
use crate::core::detect::{DetectPolicy, LagTrend, RegionTracker, Signal};
use crate::core::health::Observation;
use crate::core::ids::{Actor, RegionName, RunId};
use crate::core::plan::{GroupTarget, PlanRequest, RunKind, build_plan};
use crate::core::run::{RunEvent, RunStatus, Trigger};
use crate::core::time::{Timestamp, fmt_duration};
use crate::engine::{Engine, EngineError, ExecOutcome, NewRun, steps};
use crate::leader::{Change, Leadership, LeaseStatus};
use crate::observe::Observer;
use crate::store::{AuditEntry, STORE_VERSION, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How many of the latest runs the cooldown looks at: far more than a cooldown can hold, so
/// dry runs and short runs cannot push a promotion out of sight.
const COOLDOWN_LOOKBACK_RUNS: usize = 500;

/// What stops the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The daemon's timings and policy.
#[derive(Clone, Copy, Debug)]
pub struct DaemonSettings {
    /// Time between ticks.
    pub poll_interval: Duration,
    /// Timeout of one observation call.
    pub call_timeout: Duration,
    /// Timeout of one probe.
    pub probe_timeout: Duration,
    /// Detection.
    pub detect: DetectPolicy,
    /// Decision.
    pub policy: Policy,
    /// Lag above which a warning is raised.
    pub lag_alert: Duration,
    /// The leader lease's period.
    pub lease: Duration,
    /// The process holds an exclusive lock on its store (a file store's executor lock): no
    /// other daemon can share it, so a lease its predecessor left is taken at once.
    pub exclusive: bool,
}

impl DaemonSettings {
    /// The settings of a config; `pre_warm` overrides the config's when given.
    pub fn from_config(config: &Config, pre_warm: Option<bool>) -> DaemonSettings {
        let d = &config.detection;
        DaemonSettings {
            poll_interval: d.poll_interval,
            call_timeout: Duration::from_secs(5).min(d.poll_interval),
            probe_timeout: config.plan.verify.probe_timeout.min(d.poll_interval),
            detect: DetectPolicy::new(d.failure_window, d.poll_interval).with_quorum(d.quorum),
            policy: Policy {
                rpo_budget: config.plan.rpo_budget,
                cooldown: d.cooldown,
                pre_warm: pre_warm.unwrap_or(d.pre_warm),
                failure_window: d.failure_window,
            },
            lag_alert: d.lag_alert,
            lease: config.daemon.lease,
            exclusive: matches!(config.store, crate::config::StoreBackend::Redb),
        }
    }
}

/// One region in the published status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionStatus {
    /// Region.
    pub region: RegionName,
    /// healthy, suspect, failed, unknown.
    pub state: String,
    /// Since when (suspect, failed).
    pub since: Option<Timestamp>,
    /// Route53's verdict.
    pub route53: Option<Observation>,
    /// dr's probe's verdict.
    pub probe: Option<Observation>,
    /// The database's view (from the other regions), when it witnessed a stall.
    #[serde(default)]
    pub database: Option<Observation>,
    /// The other daemons' probes, when another daemon shares the store.
    #[serde(default)]
    pub peer: Option<Observation>,
    /// Last known lag, seconds.
    pub lag_seconds: Option<f64>,
    /// Lag above the alert threshold.
    pub lag_alert: bool,
}

/// The format of [`DaemonStatus`] this dr writes and reads. A status of another version was
/// written by another dr: `dr status` says so instead of guessing at it.
pub const DAEMON_STATUS_VERSION: u32 = 1;

/// What the daemon publishes to the store at every tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Its format ([`DAEMON_STATUS_VERSION`]). Statuses written before it carried one are the
    /// first format.
    #[serde(default = "first_version")]
    pub version: u32,
    /// When.
    pub at: Timestamp,
    /// The daemon's process id.
    pub pid: u32,
    /// The writer's region, as last read.
    pub writer: Option<RegionName>,
    /// Each region.
    pub regions: Vec<RegionStatus>,
    /// The decision.
    pub decision: Decision,
    /// The decision, for people.
    pub reason: String,
    /// The pre-warmed region.
    pub prewarmed: Option<RegionName>,
    /// Automation switches.
    pub automation: Automation,
    /// The unfinished run, if any.
    pub active_run: Option<RunId>,
    /// When the cooldown after the last failover ends, if it is in force.
    pub cooldown_until: Option<Timestamp>,
    /// Record changes a run left for when Route53's control plane answers again.
    #[serde(default)]
    pub follow_ups: Vec<follow_up::FollowUpStatus>,
    /// The daemon's id among those sharing the store.
    #[serde(default = "unnamed")]
    pub daemon: String,
    /// The region it runs in and observes from.
    #[serde(default)]
    pub region: Option<RegionName>,
    /// The leader lease as this daemon sees it.
    #[serde(default)]
    pub lease: Option<LeaseStatus>,
    /// Its ticks so far. Another daemon judges the status fresh by seeing this change on its
    /// own clock, never by comparing `at` with its own time.
    #[serde(default)]
    pub tick: u64,
}

fn first_version() -> u32 {
    1
}

fn unnamed() -> String {
    "daemon".to_string()
}

impl DaemonStatus {
    /// The status a store holds, read: `Ok(None)` when no daemon ever published one, an error
    /// naming the version when another dr wrote it or the text does not parse.
    pub fn read(store: &dyn crate::store::Store) -> Result<Option<DaemonStatus>, String> {
        let all = Self::read_all(store)?;
        let leader = store
            .lease()
            .map_err(|e| e.to_string())?
            .filter(|l| !l.released)
            .map(|l| l.holder);
        let pick = all
            .iter()
            .position(|s| Some(&s.daemon) == leader.as_ref())
            .or_else(|| {
                all.iter()
                    .enumerate()
                    .max_by_key(|(_, s)| s.at)
                    .map(|(i, _)| i)
            });
        Ok(pick.map(|i| all[i].clone()))
    }

    /// Every daemon's published status, by daemon id; an error names a status another dr
    /// wrote or that does not parse.
    pub fn read_all(store: &dyn crate::store::Store) -> Result<Vec<DaemonStatus>, String> {
        let mut statuses = Vec::new();
        for (id, text) in store.daemon_statuses().map_err(|e| e.to_string())? {
            let mut status: DaemonStatus = serde_json::from_str(&text)
                .map_err(|e| format!("the status daemon {id} published cannot be read ({e})"))?;
            if status.version != DAEMON_STATUS_VERSION {
                return Err(format!(
                    "daemon {id}'s published status is format {}, and this dr reads format {DAEMON_STATUS_VERSION}: a daemon of another version runs on this store",
                    status.version
                ));
            }
            status.daemon = id;
            statuses.push(status);
        }
        Ok(statuses)
    }
}

/// What the daemon shares with the HTTP API in its process: its latest status (every tick), a
/// way to make it tick at once (after an operator action), and whether it has ticked yet.
#[derive(Clone, Default)]
pub struct DaemonHandle {
    /// The status of the last tick.
    pub live: Arc<std::sync::RwLock<Option<DaemonStatus>>>,
    /// Wakes the loop for an immediate tick.
    pub nudge: Arc<tokio::sync::Notify>,
    /// Why the store cannot be used, while it cannot: the daemon is then unhealthy.
    pub store_failure: Arc<std::sync::RwLock<Option<String>>>,
}

impl DaemonHandle {
    /// The status of the last tick, if any.
    pub fn status(&self) -> Option<DaemonStatus> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Why the store cannot be used, if it cannot.
    pub fn store_failure(&self) -> Option<String> {
        self.store_failure
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The watching daemon.
pub struct Daemon {
    config: Config,
    engine: Engine,
    settings: DaemonSettings,
    trackers: BTreeMap<RegionName, RegionTracker>,
    lags: BTreeMap<RegionName, Duration>,
    trends: BTreeMap<RegionName, LagTrend>,
    lag_alerting: std::collections::BTreeSet<RegionName>,
    writer: Option<RegionName>,
    prewarmed: Option<RegionName>,
    executor: Option<JoinHandle<Result<ExecOutcome, EngineError>>>,
    executor_stop: CancellationToken,
    scaler: Option<JoinHandle<()>>,
    follow_up: Option<JoinHandle<()>>,
    follow_up_pending: Option<follow_up::FollowUpStatus>,
    follow_up_last: Arc<std::sync::Mutex<Option<String>>>,
    last_decision: Option<Decision>,
    actor: Actor,
    handle: DaemonHandle,
    leadership: Arc<Leadership>,
    /// The epoch this daemon acts under, once it has taken over as leader.
    acting: Option<u64>,
    ticks: u64,
    /// The other daemons' published ticks, and when each last changed on this daemon's clock.
    peers: BTreeMap<String, (u64, Option<tokio::time::Instant>)>,
    /// The lease is kept by a task of `run`; without it (a test ticking by hand) each tick
    /// keeps it.
    keeper: bool,
    /// What each finished run counts for the cooldown (its last promotion or operator's abort).
    finished_runs: BTreeMap<RunId, Option<Timestamp>>,
}

impl Daemon {
    /// A daemon over `engine` for `config`'s regions. It acts only while it holds the leader
    /// lease of its store: the engine's fence is the daemon's lease (one is made from
    /// `config.daemon` if the engine has none).
    pub fn new(config: Config, mut engine: Engine, mut settings: DaemonSettings) -> Daemon {
        let leadership = match &engine.fence.0 {
            Some(leadership) => leadership.clone(),
            None => {
                let region = config.daemon.region.clone();
                let id = config
                    .daemon
                    .id
                    .clone()
                    .unwrap_or_else(|| crate::leader::default_id(region.as_ref()));
                let leadership = Leadership::new(&id, region, settings.lease);
                let leadership = if settings.exclusive {
                    leadership.exclusive()
                } else {
                    leadership
                };
                Arc::new(leadership)
            }
        };
        engine.fence = crate::leader::Fence(Some(leadership.clone()));
        // A stall is judged in real time: under a simulator whose clock runs faster than real
        // time, a tick that is late by a fraction of a real second is not a blind spell.
        let rate = engine.clock.rate();
        if rate > 1.0 {
            settings.detect.max_gap = settings.detect.max_gap.mul_f64(rate);
        }
        let trackers = config
            .topology
            .regions
            .iter()
            .map(|r| (r.name.clone(), RegionTracker::new(r.name.clone())))
            .collect();
        Daemon {
            config,
            engine,
            settings,
            trackers,
            lags: BTreeMap::new(),
            trends: BTreeMap::new(),
            lag_alerting: Default::default(),
            writer: None,
            prewarmed: None,
            executor: None,
            executor_stop: CancellationToken::new(),
            scaler: None,
            follow_up: None,
            follow_up_pending: None,
            follow_up_last: Default::default(),
            last_decision: None,
            actor: Actor::new("daemon"),
            handle: DaemonHandle::default(),
            leadership,
            acting: None,
            ticks: 0,
            peers: BTreeMap::new(),
            keeper: false,
            finished_runs: BTreeMap::new(),
        }
    }

    /// The other daemons' probes of each region, from their fresh statuses: healthy if any
    /// reached it, unhealthy if every one that answered could not. A status is fresh while its
    /// tick keeps changing on this daemon's clock (no wall clocks compared): at most two polls
    /// without a change.
    fn peer_probes(&mut self) -> Result<BTreeMap<RegionName, Observation>, DaemonError> {
        let mut verdicts: BTreeMap<RegionName, Observation> = BTreeMap::new();
        let statuses = match DaemonStatus::read_all(self.engine.store.as_ref()) {
            Ok(statuses) => statuses,
            Err(problem) => {
                tracing::warn!(problem = %problem, "the other daemons' statuses cannot be read");
                return Ok(verdicts);
            }
        };
        let now = tokio::time::Instant::now();
        let stale_after = self.settings.poll_interval * 2;
        for status in statuses {
            if status.daemon == self.leadership.id {
                continue;
            }
            // A status counts once its tick has been seen to change: a daemon long dead left
            // its last status behind, and that is not a vantage point.
            let Some(seen) = self.peers.get_mut(&status.daemon) else {
                self.peers
                    .insert(status.daemon.clone(), (status.tick, None));
                continue;
            };
            if seen.0 != status.tick {
                *seen = (status.tick, Some(now));
            }
            if seen
                .1
                .is_none_or(|changed| now.saturating_duration_since(changed) > stale_after)
            {
                continue;
            }
            for region in &status.regions {
                let Some(probe) = region.probe else { continue };
                let merged = match (verdicts.get(&region.region), probe) {
                    (Some(Observation::Healthy), _) | (_, Observation::Healthy) => {
                        Observation::Healthy
                    }
                    (Some(Observation::Unhealthy), _) | (_, Observation::Unhealthy) => {
                        Observation::Unhealthy
                    }
                    _ => Observation::Unknown,
                };
                verdicts.insert(region.region.clone(), merged);
            }
        }
        Ok(verdicts)
    }

    /// This daemon's lease.
    pub fn leadership(&self) -> Arc<Leadership> {
        self.leadership.clone()
    }

    /// Keeps the lease in the background: a round every `renew_every`, and an immediate tick
    /// when this daemon wins or loses it.
    fn keep_lease(&self, stop: CancellationToken) -> JoinHandle<()> {
        let leadership = self.leadership.clone();
        let store = self.engine.store.clone();
        let clock = self.clock();
        let nudge = self.handle.nudge.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(leadership.terms.renew_every) => {}
                    _ = stop.cancelled() => break,
                }
                match leadership.round(store.as_ref(), clock.now()) {
                    Change::None => {}
                    Change::Won(epoch) => {
                        tracing::info!(daemon = %leadership.id, epoch, "won the leader lease");
                        nudge.notify_one();
                    }
                    Change::Lost(why) => {
                        tracing::warn!(daemon = %leadership.id, why = %why, "lost the leader lease: standing down");
                        nudge.notify_one();
                    }
                }
            }
        })
    }

    /// Follows the lease: takes over as leader when it won it (the unfinished run first), or
    /// stops everything it was doing when it lost it.
    fn follow_lease(&mut self, now: Timestamp) -> Result<(), DaemonError> {
        let leading = self.leadership.epoch().ok();
        if leading == self.acting {
            return Ok(());
        }
        if self.acting.is_some() {
            // Lost, or lost and won again between two ticks: whatever ran under the old epoch
            // stops first, so that nothing started then acts under the new one.
            self.stand_down();
        }
        match leading {
            Some(epoch) => {
                self.last_decision = None;
                tracing::info!(daemon = %self.leadership.id, epoch, "leading: taking over");
                self.engine.store.record_audit(&AuditEntry {
                    version: STORE_VERSION,
                    at: now,
                    actor: self.actor.clone(),
                    run: None,
                    action: format!("daemon {} leads", self.leadership.id),
                    reason: format!("it won the leader lease, epoch {epoch}"),
                })?;
                // Acting only once the run is taken over: if the store fails on the way, the
                // next tick takes over again instead of leaving the run without an executor.
                self.take_over(epoch)?;
                self.acting = Some(epoch);
            }
            None => {
                tracing::warn!(daemon = %self.leadership.id, "standing by: no longer the leader")
            }
        }
        Ok(())
    }

    /// Stops everything this daemon was doing as leader. Crash-like: nothing is written (the
    /// store would refuse it), the calls in flight are dropped, and the leader resumes from the
    /// log.
    fn stand_down(&mut self) {
        self.acting = None;
        self.last_decision = None;
        if let Some(handle) = self.executor.take() {
            handle.abort();
        }
        if let Some(handle) = self.scaler.take() {
            handle.abort();
        }
        if let Some(handle) = self.follow_up.take() {
            handle.abort();
        }
        self.prewarmed = None;
    }

    /// Marks the unfinished run as this leader's, so that the log refuses every write of an
    /// older one, then resumes it.
    fn take_over(&mut self, epoch: u64) -> Result<(), DaemonError> {
        // Still this epoch's, on this process's clock, right before it writes.
        if self.leadership.epoch()? != epoch {
            return Ok(());
        }
        let store = self.engine.store.clone();
        if let Some(run) = store.active_run()?
            && let Some(stored) = store.load_run(&run)?
            && stored.state()?.outcome.is_none()
        {
            match store.append_fenced(
                &run,
                self.clock().now(),
                &self.actor,
                RunEvent::TakenOver {
                    daemon: self.leadership.id.clone(),
                },
                Some(epoch),
            ) {
                Ok(record) => self.engine.progress.event(&run, &record),
                Err(StoreError::Refused(_)) => {}
                Err(err) => return Err(err.into()),
            }
        }
        self.resume_unfinished()
    }

    /// The handle the HTTP API uses.
    pub fn handle(&self) -> DaemonHandle {
        self.handle.clone()
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.engine.clock.clone()
    }

    /// Watches until `shutdown` fires; then stops the run in flight at a checkpoint.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), DaemonError> {
        let clock = self.clock();
        // The first round at once: a daemon alone on its store leads from its first tick.
        self.leadership
            .round(self.engine.store.as_ref(), clock.now());
        let keeper_stop = CancellationToken::new();
        let keeper = AbortOnDrop(Some(self.keep_lease(keeper_stop.clone())));
        self.keeper = true;
        tracing::info!(daemon = %self.leadership.id, regions = self.trackers.len(), poll = %fmt_duration(self.settings.poll_interval), "daemon watching");
        loop {
            // Ticks start every poll interval, however long the last one took.
            let next = clock.now().plus(self.settings.poll_interval);
            let ticked = self.tick().await;
            self.note_store_health(&ticked);
            if let Err(err) = ticked {
                // A failing store is the one thing the daemon cannot work around; say so and retry.
                tracing::error!(error = %err, "tick failed; retrying at the next poll");
            }
            let wait = next.since(clock.now());
            let nudge = self.handle.nudge.clone();
            tokio::select! {
                _ = clock.sleep(wait) => {}
                _ = nudge.notified() => {}
                _ = shutdown.cancelled() => break,
            }
        }
        self.stop().await;
        keeper_stop.cancel();
        keeper.join().await;
        // Handing over at once instead of a lease period later (a rolling update, a drain).
        self.leadership
            .release(self.engine.store.as_ref(), clock.now());
        Ok(())
    }

    /// Marks the daemon unhealthy while its store fails, and alerts once when it starts failing.
    fn note_store_health(&self, ticked: &Result<Decision, DaemonError>) {
        let failure = match ticked {
            Err(DaemonError::Store(err) | DaemonError::Engine(EngineError::Store(err)))
                if err.is_unusable() =>
            {
                Some(err.to_string())
            }
            _ => None,
        };
        let mut current = self
            .handle
            .store_failure
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match (&*current, &failure) {
            (None, Some(error)) => {
                tracing::error!(error = %error, "the store cannot be used: /health now fails and no run is started");
                self.engine.progress.store_failed(self.clock().now(), error);
            }
            (Some(_), None) => tracing::info!("the store answers again: /health is back to 200"),
            _ => {}
        }
        *current = failure;
    }

    /// Stops the run in flight (checkpointed, paused) and any scaling.
    pub async fn stop(&mut self) {
        self.executor_stop.cancel();
        if let Some(handle) = self.executor.take() {
            let _ = handle.await;
        }
        if let Some(handle) = self.scaler.take() {
            handle.abort();
        }
        if let Some(handle) = self.follow_up.take() {
            handle.abort();
        }
        tracing::info!("daemon stopped");
    }

    /// Resumes a run left unfinished by a crash or by a daemon shutdown. A run an operator
    /// paused, a stopped run and a run awaiting approval stay as they are.
    fn resume_unfinished(&mut self) -> Result<(), DaemonError> {
        let store = self.engine.store.clone();
        let Some(run) = store.active_run()? else {
            return Ok(());
        };
        let Some(stored) = store.load_run(&run)? else {
            return Ok(());
        };
        let state = stored.state()?;
        let paused_by_engine = stored
            .events
            .iter()
            .rev()
            .find(|e| matches!(e.event, RunEvent::Paused { .. }))
            .is_some_and(|e| e.actor == Actor::engine());
        match state.status() {
            RunStatus::Running => {
                tracing::info!(run = %run, "resuming the unfinished run");
                self.spawn_executor(run);
            }
            RunStatus::Paused if paused_by_engine => {
                store.append_fenced(
                    &run,
                    self.clock().now(),
                    &self.actor,
                    RunEvent::Resumed {
                        reason: "the daemon restarted".into(),
                    },
                    self.engine.fence.epoch()?,
                )?;
                tracing::info!(run = %run, "resuming the run the last shutdown paused");
                self.spawn_executor(run);
            }
            other => {
                tracing::warn!(run = %run, status = %other, "unfinished run waits for an operator")
            }
        }
        Ok(())
    }

    fn spawn_executor(&mut self, run: RunId) {
        let engine = self.engine.clone();
        let stop = self.executor_stop.clone();
        // When the run ends, tick at once so the published status stops showing it as active.
        let nudge = self.handle.nudge.clone();
        self.executor = Some(tokio::spawn(async move {
            let outcome = engine.execute(&run, &stop).await;
            nudge.notify_one();
            outcome
        }));
    }

    fn executor_running(&self) -> bool {
        self.executor.as_ref().is_some_and(|h| !h.is_finished())
    }

    fn observer(&self) -> Observer<'_> {
        Observer {
            providers: &self.engine.providers,
            topology: &self.config.topology,
            clock: self.clock(),
            call_timeout: self.settings.call_timeout,
            probe_timeout: self.settings.probe_timeout,
        }
    }

    /// One observation, decision and action. Returns the decision.
    pub async fn tick(&mut self) -> Result<Decision, DaemonError> {
        self.ticks += 1;
        if !self.keeper {
            self.leadership
                .round(self.engine.store.as_ref(), self.clock().now());
        }
        self.follow_lease(self.clock().now())?;
        let observer = self.observer();
        let writer = observer.writer().await.ok();
        let round = observer
            .round(writer.as_ref().or(self.writer.as_ref()))
            .await;
        if let Some(writer) = writer {
            self.writer = Some(writer);
        }
        let regions = self.config.topology.regions.clone();
        let now = self.clock().now();
        // The database's view of the writer, from the other regions: replication to every
        // secondary that could be read has stalled (its lag grows as fast as time passes).
        let mut secondaries_read = 0;
        let mut secondaries_stalled = 0;
        for reading in &round.regions {
            if self.writer.as_ref() == Some(&reading.region) {
                self.trends.remove(&reading.region);
                continue;
            }
            let trend = self.trends.entry(reading.region.clone()).or_default();
            let lag = reading.lag();
            let stalled = trend.observe(now, lag);
            if lag.is_some() {
                secondaries_read += 1;
                secondaries_stalled += usize::from(stalled);
            }
        }
        let writer_stalled = secondaries_read > 0 && secondaries_stalled == secondaries_read;
        // The other daemons' probes are vantage points for the leader, which decides.
        let peers = if self.acting.is_some() {
            self.peer_probes()?
        } else {
            BTreeMap::new()
        };
        for (region, reading) in regions.iter().zip(&round.regions) {
            let stalled = writer_stalled && self.writer.as_ref() == Some(&region.name);
            let mut signals = round.signals(reading, stalled);
            if let Some(peer) = peers.get(&region.name) {
                signals = signals.with(Signal::Peer, *peer);
            }
            self.engine.progress.observed(now, &region.name, &signals);
            if let Some(tracker) = self.trackers.get_mut(&region.name) {
                tracker.observe(signals, now, &self.settings.detect);
            }
            if let Some(lag) = reading.lag() {
                let over = lag > self.settings.lag_alert;
                // Say so when the lag crosses the threshold, not on every poll.
                if over && self.lag_alerting.insert(region.name.clone()) {
                    tracing::warn!(region = %region.name, lag = %fmt_duration(lag), "replication lag above the alert threshold");
                } else if !over && self.lag_alerting.remove(&region.name) {
                    tracing::info!(region = %region.name, lag = %fmt_duration(lag), "replication lag back under the alert threshold");
                }
                self.lags.insert(region.name.clone(), lag);
            }
        }

        let store = self.engine.store.clone();
        let active_run = store.active_run()?;
        let automation = store.automation()?;
        if self.acting.is_none() {
            // A standby observes and publishes what it sees; the leader decides and acts.
            let lease = self.leadership.status();
            let decision = Decision::Nothing(Hold::Standby {
                leader: lease.leader,
                epoch: lease.epoch,
            });
            if self.last_decision.as_ref() != Some(&decision) {
                self.engine.progress.decided(now, &decision);
                tracing::info!(decision = %decision, "decision");
            }
            self.last_decision = Some(decision.clone());
            self.follow_up_pending = None;
            self.publish(&decision, &automation, now, active_run, None)?;
            return Ok(decision);
        }
        if automation.paused
            && let Some(handle) = self.scaler.take()
        {
            // Paused means no automatic change of any kind: a pre-warm or scale-back in flight
            // stops here (its calls also check the pause right before they go out).
            if !handle.is_finished() {
                handle.abort();
                tracing::info!("automation paused: the pre-warm or scale-back in flight stopped");
            }
        }
        if active_run.is_none() && !self.executor_running() && self.executor.is_some() {
            // The run finished: whatever was pre-warmed is now the run's business.
            self.executor = None;
            self.prewarmed = None;
        }
        if let Some(run) = &active_run
            && !self.executor_running()
        {
            self.continue_if_unblocked(run)?;
        }
        let last_failover_at = self.last_failover_at()?;
        let situation = Situation {
            regions: regions
                .iter()
                .map(|r| RegionView {
                    tracker: self.trackers[&r.name].clone(),
                    priority: r.priority,
                    lag: self.lags.get(&r.name).copied(),
                })
                .collect(),
            writer: self.writer.clone(),
            active_run,
            last_failover_at,
            automation: automation.clone(),
            prewarmed: self.prewarmed.clone(),
        };
        let decision = decide(&situation, &self.settings.policy, now);
        let changed = self.last_decision.as_ref() != Some(&decision);
        if changed {
            self.engine.progress.decided(now, &decision);
            tracing::info!(decision = %decision, "decision");
            if !matches!(decision, Decision::Nothing(Hold::RunActive { .. })) {
                store.record_audit(&AuditEntry {
                    version: STORE_VERSION,
                    at: now,
                    actor: self.actor.clone(),
                    run: None,
                    action: format!("decision: {}", decision_kind(&decision)),
                    reason: decision.to_string(),
                })?;
            }
        }
        self.act(&decision, now)?;
        self.last_decision = Some(decision.clone());
        self.follow_up(&situation, &automation, now)?;
        let cooldown_until = last_failover_at
            .map(|at| at.plus(self.settings.policy.cooldown))
            .filter(|until| {
                *until > now
                    && automation
                        .cooldown_cleared_at
                        .is_none_or(|c| Some(c) < last_failover_at)
            });
        self.publish(
            &decision,
            &automation,
            now,
            situation.active_run.clone(),
            cooldown_until,
        )?;
        Ok(decision)
    }

    /// Publishes this tick's status to the API in this process and to the store.
    fn publish(
        &self,
        decision: &Decision,
        automation: &Automation,
        now: Timestamp,
        active_run: Option<RunId>,
        cooldown_until: Option<Timestamp>,
    ) -> Result<(), DaemonError> {
        let status = self.status(decision, automation, now, active_run, cooldown_until);
        *self.handle.live.write().unwrap_or_else(|p| p.into_inner()) = Some(status.clone());
        // Every tick, so `dr status` in another process is never more than a poll behind; a
        // write costs under a millisecond on redb (BENCHMARKS.md).
        let json = serde_json::to_string(&status).unwrap_or_default();
        self.engine
            .store
            .put_daemon_status(&self.leadership.id, &json)?;
        Ok(())
    }

    /// Makes a record change a run left as a follow-up, one attempt per tick at most, while no
    /// run is active and automation is on.
    fn follow_up(
        &mut self,
        situation: &Situation,
        automation: &Automation,
        now: Timestamp,
    ) -> Result<(), DaemonError> {
        if (automation.paused || situation.active_run.is_some())
            && let Some(handle) = self.follow_up.take()
        {
            // Paused means no automatic change; a run may be repointing the records itself.
            handle.abort();
        }
        let busy = self.follow_up.as_ref().is_some_and(|h| !h.is_finished());
        let pending = follow_up::pending(self.engine.store.as_ref(), &self.actor, now)?;
        let Some((mut status, record)) = pending else {
            self.follow_up_pending = None;
            return Ok(());
        };
        status.last_attempt = self
            .follow_up_last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let run = status.run.clone();
        self.follow_up_pending = Some(status);
        if busy || automation.paused || situation.active_run.is_some() {
            return Ok(());
        }
        let ctx = self
            .engine
            .side_ctx(&format!("follow-up-{run}-{}", now.millis()));
        let store = self.engine.store.clone();
        let actor = self.actor.clone();
        let last = self.follow_up_last.clone();
        self.follow_up = Some(tokio::spawn(async move {
            if let Err(err) = follow_up::attempt(&ctx, store, &actor, &run, &record, last).await {
                tracing::warn!(run = %run, error = %err, "the record follow-up could not be audited");
            }
        }));
        Ok(())
    }

    /// Restarts the executor of an active run that an operator unblocked (approved, resumed)
    /// or asked to abort: the executor is what finishes an aborted run.
    fn continue_if_unblocked(&mut self, run: &RunId) -> Result<(), DaemonError> {
        let Some(stored) = self.engine.store.load_run(run)? else {
            return Ok(());
        };
        let status = stored.state()?.status();
        if matches!(status, RunStatus::Running | RunStatus::Aborting) {
            tracing::info!(run = %run, status = %status, "continuing the run");
            self.spawn_executor(run.clone());
        }
        Ok(())
    }

    /// When the latest run issued (or was about to issue) a promotion: any run, automatic or
    /// manual, failover or switchover, however it ended. Its write-ahead `Promoting` event says
    /// so even when the run was aborted or stopped right after the call. A run an operator
    /// aborted counts from the abort, promotion or not. A run stored before
    /// that event existed counts from its creation if its promote-db started. The look-back
    /// skips dry runs and reaches far past any cooldown.
    fn last_failover_at(&mut self) -> Result<Option<Timestamp>, DaemonError> {
        let store = self.engine.store.clone();
        let mut latest: Option<Timestamp> = None;
        for header in store.list_runs(COOLDOWN_LOOKBACK_RUNS)? {
            if header.dry_run {
                continue;
            }
            // A finished run's log never changes: read once, not every poll (on a shared
            // store each read is a request).
            if let Some(known) = self.finished_runs.get(&header.id) {
                latest = latest.max(*known);
                continue;
            }
            let Some(stored) = store.load_run(&header.id)? else {
                continue;
            };
            let state = stored.state()?;
            let promoted = match state.promotions.last() {
                Some(promotion) => Some(promotion.at),
                None if header.version < 2 => state
                    .steps
                    .get(&crate::core::ids::StepName::PromoteDb)
                    .filter(|s| s.attempts > 0)
                    .map(|_| header.created_at),
                None => None,
            };
            // An operator who aborts a run has overruled it: automation does not start the
            // same failover again one poll later, but holds (and alerts) for the cooldown.
            let aborted = stored
                .events
                .iter()
                .filter(|e| {
                    matches!(e.event, RunEvent::AbortRequested { .. }) && e.actor != Actor::engine()
                })
                .map(|e| e.at)
                .next_back();
            if state.outcome.is_some() {
                self.finished_runs
                    .insert(header.id.clone(), promoted.max(aborted));
            }
            latest = latest.max(promoted).max(aborted);
        }
        Ok(latest)
    }

    fn act(&mut self, decision: &Decision, now: Timestamp) -> Result<(), DaemonError> {
        match decision {
            Decision::Failover { from, to, reason }
            | Decision::FailoverAwaitingApproval { from, to, reason } => {
                if let Some(handle) = self.scaler.take() {
                    // The run's scale-target takes over from a pre-warm in flight.
                    handle.abort();
                }
                let id = crate::engine::new_run_id(now);
                let request = PlanRequest {
                    from: from.clone(),
                    to: to.clone(),
                    kind: RunKind::Failover,
                };
                let created = build_plan(&self.config.topology, &request, &self.config.plan)
                    .map_err(EngineError::from)
                    .and_then(|plan| {
                        self.engine.create_run(
                            plan,
                            NewRun {
                                id: id.clone(),
                                trigger: Trigger::Automatic {
                                    reason: reason.clone(),
                                },
                                actor: self.actor.clone(),
                                reason: reason.clone(),
                                dry_run: false,
                            },
                        )
                    });
                match created {
                    Ok(_) => {
                        tracing::info!(run = %id, from = %from, to = %to, "automatic failover started");
                        self.spawn_executor(id);
                    }
                    // Another process started a run first: the next tick sees it.
                    Err(EngineError::Store(StoreError::RunActive { .. })) => {}
                    // Paused after this tick read the switch: the next tick holds and alerts.
                    Err(EngineError::Store(StoreError::AutomationPaused(_))) => {
                        tracing::info!(run = %id, "automation was paused before the run could start; not started");
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            Decision::PreWarm { region, reason } => {
                self.scale(region, true, reason, now)?;
                self.prewarmed = Some(region.clone());
            }
            Decision::ScaleBack { region, reason } => {
                self.scale(region, false, reason, now)?;
                self.prewarmed = None;
            }
            Decision::Nothing(_) => {}
        }
        Ok(())
    }

    /// Starts scaling `region` to its failover (`up`) or baseline sizes in the background.
    fn scale(
        &mut self,
        region: &RegionName,
        up: bool,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), DaemonError> {
        let Some(spec) = self.config.topology.region(region).cloned() else {
            return Ok(());
        };
        let pick = |groups: &[crate::core::topology::ScalableGroup]| {
            groups
                .iter()
                .map(|g| GroupTarget {
                    name: g.name.clone(),
                    sizes: if up { g.failover } else { g.baseline },
                })
                .collect::<Vec<_>>()
        };
        let (node_groups, asgs) = (pick(&spec.node_groups), pick(&spec.autoscaling_groups));
        let label = format!(
            "{}-{}-{}",
            if up { "prewarm" } else { "scaleback" },
            region,
            now.millis()
        );
        let ctx = self.engine.side_ctx(&label);
        let what = if up { "pre-warm" } else { "scale back" };
        self.engine.store.record_audit(&AuditEntry {
            version: STORE_VERSION,
            at: now,
            actor: self.actor.clone(),
            run: None,
            action: format!("{what} {region}"),
            reason: reason.to_string(),
        })?;
        if let Some(handle) = self.scaler.take() {
            handle.abort();
        }
        let region = region.clone();
        let eks = spec.eks_cluster.clone();
        self.scaler = Some(tokio::spawn(async move {
            match steps::scale_target(&ctx, &region, &eks, &node_groups, &asgs).await {
                Ok(outcome) => {
                    tracing::info!(region = %region, summary = %outcome.summary, "{what} done")
                }
                Err(err) => tracing::warn!(region = %region, error = %err, "{what} failed"),
            }
        }));
        Ok(())
    }

    fn status(
        &self,
        decision: &Decision,
        automation: &Automation,
        now: Timestamp,
        active_run: Option<RunId>,
        cooldown_until: Option<Timestamp>,
    ) -> DaemonStatus {
        DaemonStatus {
            version: DAEMON_STATUS_VERSION,
            at: now,
            pid: std::process::id(),
            writer: self.writer.clone(),
            regions: self
                .config
                .topology
                .regions
                .iter()
                .map(|r| {
                    let tracker = &self.trackers[&r.name];
                    let since = match tracker.health {
                        crate::core::detect::RegionHealth::Suspect { since }
                        | crate::core::detect::RegionHealth::Failed { since } => Some(since),
                        _ => None,
                    };
                    let lag = self.lags.get(&r.name).copied();
                    RegionStatus {
                        region: r.name.clone(),
                        state: tracker.health.label().to_string(),
                        since,
                        route53: tracker.last.as_ref().map(|s| s.get(Signal::Route53)),
                        probe: tracker.last.as_ref().map(|s| s.get(Signal::Probe)),
                        database: tracker
                            .last
                            .as_ref()
                            .and_then(|s| s.0.get(&Signal::Database).copied()),
                        peer: tracker
                            .last
                            .as_ref()
                            .and_then(|s| s.0.get(&Signal::Peer).copied()),
                        lag_seconds: lag.map(|l| l.as_secs_f64()),
                        lag_alert: lag.is_some_and(|l| l > self.settings.lag_alert),
                    }
                })
                .collect(),
            decision: decision.clone(),
            reason: decision.to_string(),
            prewarmed: self.prewarmed.clone(),
            automation: automation.clone(),
            active_run,
            cooldown_until,
            follow_ups: self.follow_up_pending.iter().cloned().collect(),
            daemon: self.leadership.id.clone(),
            region: self.leadership.region.clone(),
            lease: Some(self.leadership.status()),
            tick: self.ticks,
        }
    }
}

/// A task that dies with its owner: the daemon's lease keeper stops when the daemon's future is
/// dropped (its task aborted), as it would with the process.
struct AbortOnDrop(Option<JoinHandle<()>>);

impl AbortOnDrop {
    async fn join(mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.await;
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

impl Drop for Daemon {
    /// A daemon dropped without `stop` (its task aborted: the process died) takes its tasks
    /// with it: the run it was executing stops where it is, as with SIGKILL.
    fn drop(&mut self) {
        for handle in [self.scaler.take(), self.follow_up.take()]
            .into_iter()
            .flatten()
        {
            handle.abort();
        }
        if let Some(handle) = self.executor.take() {
            handle.abort();
        }
    }
}

fn decision_kind(decision: &Decision) -> &'static str {
    if let Decision::Nothing(Hold::Standby { .. }) = decision {
        return "stand by";
    }
    match decision {
        Decision::Failover { .. } => "fail over",
        Decision::FailoverAwaitingApproval { .. } => "fail over, awaiting approval",
        Decision::PreWarm { .. } => "pre-warm",
        Decision::ScaleBack { .. } => "scale back",
        Decision::Nothing(_) => "nothing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, Store};

    fn published() -> DaemonStatus {
        DaemonStatus {
            version: DAEMON_STATUS_VERSION,
            at: Timestamp(5),
            pid: 7,
            writer: Some("us-east-1".into()),
            regions: Vec::new(),
            decision: Decision::Nothing(Hold::AllHealthy),
            reason: "all healthy".into(),
            prewarmed: None,
            automation: Automation::default(),
            active_run: None,
            cooldown_until: None,
            follow_ups: Vec::new(),
            daemon: "daemon".into(),
            region: None,
            lease: None,
            tick: 3,
        }
    }

    #[test]
    fn a_published_status_reads_back_and_another_version_is_named_not_guessed() {
        let store = MemoryStore::new();
        assert_eq!(DaemonStatus::read(&store).unwrap(), None);
        let status = published();
        store
            .put_daemon_status("daemon", &serde_json::to_string(&status).unwrap())
            .unwrap();
        assert_eq!(DaemonStatus::read(&store).unwrap(), Some(status.clone()));

        // Written before statuses carried a version: the same shape, read as the first format.
        let mut old = serde_json::to_value(&status).unwrap();
        old.as_object_mut().unwrap().remove("version");
        store.put_daemon_status("daemon", &old.to_string()).unwrap();
        assert_eq!(DaemonStatus::read(&store).unwrap(), Some(status.clone()));

        let mut newer = serde_json::to_value(&status).unwrap();
        newer["version"] = 2.into();
        store
            .put_daemon_status("daemon", &newer.to_string())
            .unwrap();
        let err = DaemonStatus::read(&store).unwrap_err();
        assert!(err.contains("format 2"), "{err}");
        assert!(err.contains("another version"), "{err}");

        store.put_daemon_status("daemon", "{not json").unwrap();
        assert!(
            DaemonStatus::read(&store)
                .unwrap_err()
                .contains("cannot be read")
        );
    }
}
