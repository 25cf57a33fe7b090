//! Crash and resume: the engine is stopped at every checkpoint boundary (before and after each
//! durable append), right after every provider call, and at points in time inside every step's
//! waits. The redb store is then reopened and the run resumed. Every time, the final world must
//! equal an uncrashed run's, and each mutation must have reached the world exactly once.

mod common;

use dr::core::decision::Automation;
use dr::core::ids::{Actor, RunId};
use dr::core::plan::RunKind;
use dr::core::run::{EventRecord, RunEvent, RunHeader, RunOutcome};
use dr::core::time::Timestamp;
use dr::engine::{ExecOutcome, control};
use dr::store::{AuditEntry, RedbStore, Store, StoreError, StoredRun};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Where the process "dies".
#[derive(Clone, Copy, Debug)]
enum Crash {
    /// Before the n-th append reaches the store.
    BeforeAppend(u64),
    /// After the n-th append is durable, before the engine hears back.
    AfterAppend(u64),
    /// Right after the n-th provider call took effect.
    AfterCall(u64),
    /// At this simulated time.
    At(Duration),
    /// Never (the reference run).
    Never,
}

/// A store that dies at a chosen append: from then on every call fails, as if the process
/// were gone.
struct CrashingStore {
    inner: Arc<dyn Store>,
    crash: Crash,
    appends: AtomicU64,
    dead: AtomicBool,
    died: Notify,
}

impl CrashingStore {
    fn die(&self) {
        self.dead.store(true, Ordering::SeqCst);
        self.died.notify_one();
    }

    fn alive(&self) -> Result<(), StoreError> {
        if self.dead.load(Ordering::SeqCst) {
            Err(StoreError::Io {
                path: "crashed".into(),
                detail: "the process is dead".into(),
            })
        } else {
            Ok(())
        }
    }
}

impl Store for CrashingStore {
    fn create_run_fenced(
        &self,
        header: &RunHeader,
        actor: &Actor,
        reason: &str,
        epoch: Option<u64>,
    ) -> Result<(), StoreError> {
        self.alive()?;
        self.inner.create_run_fenced(header, actor, reason, epoch)
    }

    fn append_fenced(
        &self,
        run: &RunId,
        at: Timestamp,
        actor: &Actor,
        event: RunEvent,
        epoch: Option<u64>,
    ) -> Result<EventRecord, StoreError> {
        self.alive()?;
        let n = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
        if matches!(self.crash, Crash::BeforeAppend(k) if k == n) {
            self.die();
            return self.alive().map(|_| unreachable!());
        }
        let record = self.inner.append_fenced(run, at, actor, event, epoch)?;
        if matches!(self.crash, Crash::AfterAppend(k) if k == n) {
            self.die();
            self.alive()?;
        }
        Ok(record)
    }

    fn load_run(&self, run: &RunId) -> Result<Option<StoredRun>, StoreError> {
        self.alive()?;
        self.inner.load_run(run)
    }

    fn list_runs(&self, limit: usize) -> Result<Vec<RunHeader>, StoreError> {
        self.alive()?;
        self.inner.list_runs(limit)
    }

    fn active_run(&self) -> Result<Option<RunId>, StoreError> {
        self.alive()?;
        self.inner.active_run()
    }

    fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.alive()?;
        self.inner.record_audit(entry)
    }

    fn audit(&self, run: Option<&RunId>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.alive()?;
        self.inner.audit(run, limit)
    }

    fn automation(&self) -> Result<Automation, StoreError> {
        self.alive()?;
        self.inner.automation()
    }

    fn set_automation(
        &self,
        automation: &Automation,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.alive()?;
        self.inner.set_automation(automation, audit)
    }

    fn daemon_statuses(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.alive()?;
        self.inner.daemon_statuses()
    }

    fn put_daemon_status(&self, daemon: &str, json: &str) -> Result<(), StoreError> {
        self.alive()?;
        self.inner.put_daemon_status(daemon, json)
    }

    fn lease(&self) -> Result<Option<dr::core::lease::LeaseRecord>, StoreError> {
        self.alive()?;
        self.inner.lease()
    }

    fn swap_lease(
        &self,
        expected: Option<&dr::core::lease::LeaseRecord>,
        next: &dr::core::lease::LeaseRecord,
    ) -> Result<bool, StoreError> {
        self.alive()?;
        self.inner.swap_lease(expected, next)
    }
}

struct Observed {
    appends: u64,
    calls: u64,
    ended_at: Duration,
    outcome: serde_json::Value,
    counts: std::collections::BTreeMap<String, usize>,
}

/// Runs a failover that dies at `crash`, then reopens the store and resumes it.
async fn crash_and_resume(crash: Crash, kind: RunKind) -> Observed {
    let dir = tempfile::tempdir().unwrap();
    let config = common::example_config(dir.path());
    let (sim, clock) = common::sim(&config);
    let path = dir.path().join("store.redb");
    let (from, to) = ("us-east-1", "us-west-2");
    let run;
    let crashing;
    {
        crashing = Arc::new(CrashingStore {
            inner: Arc::new(RedbStore::open(&path).unwrap()),
            crash,
            appends: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            died: Notify::new(),
        });
        let engine = common::engine(crashing.clone(), &sim, &clock);
        run = common::create_failover(&engine, &config, "r-1", kind, from, to);
        let calls = Arc::new(AtomicU64::new(0));
        {
            let calls = calls.clone();
            let crashing = crashing.clone();
            sim.observe_calls(Some(Arc::new(move |_op: &str| {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if matches!(crash, Crash::AfterCall(k) if k == n) {
                    crashing.die();
                }
            })));
        }
        let deadline = match crash {
            Crash::At(t) => t,
            _ => Duration::from_secs(24 * 3600),
        };
        let token = CancellationToken::new();
        let start = clock.now();
        tokio::select! {
            result = engine.execute(&run, &token) => {
                if let Crash::Never = crash {
                    assert_eq!(result.unwrap(), ExecOutcome::Finished(RunOutcome::Succeeded));
                    sim.observe_calls(None);
                    let world = sim.snapshot().unwrap();
                    return Observed {
                        appends: crashing.appends.load(Ordering::SeqCst),
                        calls: calls.load(Ordering::SeqCst),
                        ended_at: clock.now().since(start),
                        outcome: common::outcome_of(&world),
                        counts: common::mutation_counts(&world),
                    };
                }
            }
            _ = crashing.died.notified() => {}
            _ = clock.sleep(deadline) => {}
        }
        sim.observe_calls(None);
    }
    // The process is gone; a new one opens the store and resumes, as `dr resume` does.
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&path).unwrap());
    let engine = common::engine(store.clone(), &sim, &clock);
    let state = store.load_run(&run).unwrap().unwrap().state().unwrap();
    if state.outcome.is_none() {
        control::resume(
            store.as_ref(),
            &run,
            &Actor::new("test"),
            "after crash",
            clock.now(),
        )
        .unwrap();
    }
    let result = engine
        .execute(&run, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        result,
        ExecOutcome::Finished(RunOutcome::Succeeded),
        "after {crash:?}"
    );
    let world = sim.snapshot().unwrap();
    Observed {
        appends: crashing.appends.load(Ordering::SeqCst),
        calls: 0,
        ended_at: Duration::ZERO,
        outcome: common::outcome_of(&world),
        counts: common::mutation_counts(&world),
    }
}

async fn every_crash_point(kind: RunKind) {
    let reference = crash_and_resume(Crash::Never, kind).await;
    assert!(reference.appends >= 10, "{}", reference.appends);
    assert!(
        reference.counts.values().all(|&n| n == 1),
        "{:?}",
        reference.counts
    );
    let mut points = Vec::new();
    for n in 1..=reference.appends {
        points.push(Crash::BeforeAppend(n));
        points.push(Crash::AfterAppend(n));
    }
    for n in 1..=reference.calls {
        points.push(Crash::AfterCall(n));
    }
    let mut t = Duration::from_secs(3);
    while t < reference.ended_at {
        points.push(Crash::At(t));
        t += Duration::from_secs(17);
    }
    for crash in points {
        let observed = crash_and_resume(crash, kind).await;
        assert_eq!(
            observed.outcome, reference.outcome,
            "final world after {crash:?}"
        );
        assert_eq!(
            observed.counts, reference.counts,
            "mutations after {crash:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_failover_killed_anywhere_resumes_to_the_same_world_with_each_mutation_once() {
    every_crash_point(RunKind::Failover).await;
}

#[tokio::test(start_paused = true)]
async fn a_switchover_killed_anywhere_resumes_to_the_same_world_with_each_mutation_once() {
    every_crash_point(RunKind::Switchover).await;
}
