//! Two daemons sharing one store, in virtual time: one leads and acts, the other stands by and
//! observes. The leader is killed at points all through a run (inside every step's waits); the
//! standby must take the run over from the shared log and finish it with each mutation made
//! exactly once, within a lease period and a poll. The emulator tests (tests/ha.rs) do the
//! same with two real processes, SIGKILL and SIGSTOP.

mod common;

use dr::core::ids::RunId;
use dr::core::plan::RunKind;
use dr::core::run::{RunEvent, RunOutcome};
use dr::daemon::{Daemon, DaemonSettings, DaemonStatus};
use dr::engine::Engine;
use dr::leader::{Fence, Leadership};
use dr::store::{MemoryStore, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const LEASE: Duration = Duration::from_secs(10);

struct Pair {
    store: Arc<dyn Store>,
    sim: Arc<dr::provider::sim::SimProvider>,
    clock: Arc<dyn dr::clock::Clock>,
    run: RunId,
    east: Option<JoinHandle<Result<(), dr::daemon::DaemonError>>>,
    west: JoinHandle<Result<(), dr::daemon::DaemonError>>,
    east_stop: CancellationToken,
    stop: CancellationToken,
    west_lease: Arc<Leadership>,
}

fn daemon(
    config: &dr::config::Config,
    engine: &Engine,
    id: &str,
    region: &str,
) -> (Daemon, Arc<Leadership>) {
    let leadership = Arc::new(Leadership::new(id, Some(region.into()), LEASE));
    let mut engine = engine.clone();
    engine.fence = Fence(Some(leadership.clone()));
    let mut settings = DaemonSettings::from_config(config, Some(false));
    settings.exclusive = false;
    (Daemon::new(config.clone(), engine, settings), leadership)
}

/// East leads and carries a failover out; west stands by.
async fn start_pair(dir: &std::path::Path) -> Pair {
    let config = common::example_config(dir);
    let (sim, clock) = common::sim(&config);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = common::engine(store.clone(), &sim, &clock);
    let run = common::create_failover(
        &engine,
        &config,
        "r-1",
        RunKind::Failover,
        "us-east-1",
        "us-west-2",
    );
    let stop = CancellationToken::new();
    let east_stop = CancellationToken::new();
    let (east, east_lease) = daemon(&config, &engine, "dr-east", "us-east-1");
    let east = tokio::spawn(east.run(east_stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(east_lease.leads(), "the first daemon on a store leads");
    let (west, west_lease) = daemon(&config, &engine, "dr-west", "us-west-2");
    let west = tokio::spawn(west.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!west_lease.leads(), "the second one stands by");
    Pair {
        store,
        sim,
        clock,
        run,
        east: Some(east),
        west,
        east_stop,
        stop,
        west_lease,
    }
}

/// Waits (virtual time) for the run to finish; returns its outcome.
async fn finished(pair: &Pair) -> RunOutcome {
    for _ in 0..(4 * 3600) {
        let state = pair
            .store
            .load_run(&pair.run)
            .unwrap()
            .unwrap()
            .state()
            .unwrap();
        if let Some(outcome) = state.outcome {
            return outcome;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("the run did not finish within 4 hours");
}

#[tokio::test(start_paused = true)]
async fn a_leader_killed_anywhere_in_a_run_is_replaced_by_the_standby_with_each_mutation_once() {
    // The reference: nobody is killed.
    let dir = tempfile::tempdir().unwrap();
    let reference = start_pair(dir.path()).await;
    let started = reference.clock.now();
    assert_eq!(finished(&reference).await, RunOutcome::Succeeded);
    let duration = reference.clock.now().since(started);
    let world = reference.sim.snapshot().unwrap();
    let (outcome, counts) = (common::outcome_of(&world), common::mutation_counts(&world));
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let events = reference
        .store
        .load_run(&reference.run)
        .unwrap()
        .unwrap()
        .events
        .len();
    eprintln!("an undisturbed failover's log: {events} events");
    reference.stop.cancel();

    // Killed at points all through the run: in preflight, the promotion's wait, the node
    // group's wait, the record change's wait and verify.
    let mut kill = Duration::from_secs(2);
    let mut takeovers = Vec::new();
    while kill < duration {
        let dir = tempfile::tempdir().unwrap();
        let mut pair = start_pair(dir.path()).await;
        tokio::time::sleep(kill).await;
        let killed_at = pair.clock.now();
        pair.east.take().unwrap().abort();
        let result = finished(&pair).await;
        assert_eq!(result, RunOutcome::Succeeded, "killed at {kill:?}");
        let world = pair.sim.snapshot().unwrap();
        assert_eq!(
            common::mutation_counts(&world),
            counts,
            "mutations when killed at {kill:?}"
        );
        assert_eq!(
            common::outcome_of(&world),
            outcome,
            "world when killed at {kill:?}"
        );

        let stored = pair.store.load_run(&pair.run).unwrap().unwrap();
        let taken: Vec<_> = stored
            .events
            .iter()
            .filter(|e| matches!(&e.event, RunEvent::TakenOver { daemon } if daemon == "dr-west"))
            .collect();
        if let Some(taken) = taken.first() {
            // The run was still going: west took it over, under a newer epoch, and every
            // event after that carries west's epoch or none (operators').
            let west_epoch = taken.epoch.unwrap();
            assert!(west_epoch >= 2);
            assert!(
                stored
                    .events
                    .iter()
                    .filter(|e| e.seq > taken.seq)
                    .all(|e| e.epoch.is_none_or(|epoch| epoch == west_epoch)),
                "killed at {kill:?}"
            );
            takeovers.push(taken.at.since(killed_at));
        }
        let lease = pair.store.lease().unwrap().unwrap();
        assert_eq!(lease.holder, "dr-west", "killed at {kill:?}");
        let statuses = DaemonStatus::read_all(pair.store.as_ref()).unwrap();
        let west = statuses.iter().find(|s| s.daemon == "dr-west").unwrap();
        assert_eq!(west.lease.as_ref().unwrap().role, "leader");
        pair.stop.cancel();
        let _ = pair.west.await;
        kill += Duration::from_secs(23);
    }
    assert!(takeovers.len() >= 5, "{takeovers:?}");
    let mean = takeovers.iter().sum::<Duration>() / takeovers.len() as u32;
    eprintln!(
        "takeover after a kill, {} kills over a {:?} run: mean {:?}, slowest {:?}",
        takeovers.len(),
        duration,
        mean,
        takeovers.iter().max().unwrap()
    );
    // A lease period after the last renewal the standby could see, plus its reading interval
    // and a tick: never more than the lease and one poll (20 s with the defaults).
    let slowest = takeovers.iter().max().unwrap();
    assert!(
        *slowest <= LEASE + Duration::from_secs(10),
        "takeovers: {takeovers:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_standby_observes_but_never_acts_and_a_clean_shutdown_hands_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pair = start_pair(dir.path()).await;
    assert_eq!(finished(&pair).await, RunOutcome::Succeeded);
    let world = pair.sim.snapshot().unwrap();
    // Every mutating call of the run came from the leader's run; the standby made none.
    assert!(common::mutation_counts(&world).values().all(|&n| n == 1));
    let statuses = DaemonStatus::read_all(pair.store.as_ref()).unwrap();
    let west = statuses.iter().find(|s| s.daemon == "dr-west").unwrap();
    assert_eq!(west.lease.as_ref().unwrap().role, "standby");
    assert!(
        west.reason
            .starts_with("standing by: dr-east holds the leader lease"),
        "{}",
        west.reason
    );
    assert!(
        !west.regions.is_empty(),
        "a standby still observes every region"
    );
    assert!(!pair.west_lease.leads());

    // East shuts down cleanly: it releases the lease, and west takes it at its next reading
    // (every 2 s), not a lease period later.
    let stopped = pair.clock.now();
    pair.east_stop.cancel();
    let _ = pair.east.unwrap().await;
    let lease = pair.store.lease().unwrap().unwrap();
    assert!(lease.released, "{lease:?}");
    while !pair.west_lease.leads() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let handover = pair.clock.now().since(stopped);
    assert!(handover <= Duration::from_millis(2_100), "{handover:?}");
    assert_eq!(pair.store.lease().unwrap().unwrap().holder, "dr-west");
    pair.stop.cancel();
    let _ = pair.west.await;
}

#[tokio::test(start_paused = true)]
async fn a_lease_that_changes_hands_twice_between_ticks_leaves_each_mutation_once() {
    let dir = tempfile::tempdir().unwrap();
    let reference = start_pair(dir.path()).await;
    let started = reference.clock.now();
    assert_eq!(finished(&reference).await, RunOutcome::Succeeded);
    let duration = reference.clock.now().since(started);
    let counts = common::mutation_counts(&reference.sim.snapshot().unwrap());
    reference.stop.cancel();

    // Inside each step's waits, another process takes the lease and releases it at once: the
    // leader loses it and either daemon wins it again within two of its readings, often before
    // the next tick. Whatever ran under the old epoch must stop; the run ends once, each
    // mutation made once.
    let mut at = Duration::from_secs(5);
    let mut changed_hands = 0;
    while at < duration {
        let dir = tempfile::tempdir().unwrap();
        let pair = start_pair(dir.path()).await;
        tokio::time::sleep(at).await;
        let now = pair.clock.now();
        let held = pair.store.lease().unwrap().unwrap();
        let intruder =
            dr::core::lease::LeaseRecord::successor(Some(&held), "intruder", None, LEASE, now);
        assert!(pair.store.swap_lease(Some(&held), &intruder).unwrap());
        assert!(
            pair.store
                .swap_lease(Some(&intruder), &intruder.released(now))
                .unwrap()
        );
        changed_hands += 1;
        assert_eq!(finished(&pair).await, RunOutcome::Succeeded, "at {at:?}");
        let world = pair.sim.snapshot().unwrap();
        assert_eq!(common::mutation_counts(&world), counts, "at {at:?}");
        let lease = pair.store.lease().unwrap().unwrap();
        assert!(lease.epoch >= held.epoch + 2, "{lease:?}");
        assert_ne!(lease.holder, "intruder");
        pair.stop.cancel();
        pair.east_stop.cancel();
        let _ = pair.west.await;
        at += Duration::from_secs(29);
    }
    assert!(changed_hands >= 5, "{changed_hands}");
}
