//! Benchmarks of the drill and the store, printed as a table for BENCHMARKS.md.
//!
//! `cargo bench --bench drill`. Wall times are of this machine at this moment: compare the
//! ratios within one run, not absolute times across runs.

use dr::drill::{self, DrillOptions};
use dr::store::{RedbStore, Store};
use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = dr::config::load(&root.join("config/example.toml")).unwrap();
    let runtime = drill::runtime().unwrap();
    let scenario = |name: &str| {
        drill::scenario::load(&root.join(format!("runbooks/drills/{name}.toml"))).unwrap()
    };

    // 1. Wall time of whole drills in virtual time.
    println!("## Drill wall time (virtual clock)");
    println!("| scenario | simulated | runs | wall min | wall median | wall max |");
    println!("|---|---|---|---|---|---|");
    for name in ["reference-outage", "throttled-apis", "failback"] {
        let s = scenario(name);
        let mut times = Vec::new();
        for _ in 0..30 {
            let start = Instant::now();
            let report = runtime
                .block_on(drill::run(&config, &s, &DrillOptions::default()))
                .unwrap();
            times.push(start.elapsed());
            assert!(report.passed);
        }
        times.sort();
        println!(
            "| {name} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
            humantime::format_duration(s.duration),
            times.len(),
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }

    // 2. Concurrent plan against the seed's serial runbook, same simulated timings.
    println!("\n## Run time (start to verified), concurrent / serial, reference outage");
    let s = scenario("reference-outage");
    let mut ratios = Vec::new();
    let mut reference = None;
    for seed in 1..=200u64 {
        let c = runtime
            .block_on(drill::run(
                &config,
                &s,
                &DrillOptions {
                    serial: false,
                    seed: Some(seed),
                    ..Default::default()
                },
            ))
            .unwrap();
        let r = runtime
            .block_on(drill::run(
                &config,
                &s,
                &DrillOptions {
                    serial: true,
                    seed: Some(seed),
                    ..Default::default()
                },
            ))
            .unwrap();
        let (cs, rs) = (c.run_seconds.unwrap(), r.run_seconds.unwrap());
        if seed == config.sim.seed {
            reference = Some((cs, rs));
        }
        ratios.push(cs / rs);
    }
    ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (cs, rs) = reference.unwrap();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| reference drill (seed {}), concurrent | {cs:.0} s |",
        config.sim.seed
    );
    println!(
        "| reference drill (seed {}), serial | {rs:.0} s |",
        config.sim.seed
    );
    println!("| reference drill ratio | {:.3} |", cs / rs);
    println!(
        "| 200 seeds: min / median / mean / max ratio | {:.3} / {:.3} / {:.3} / {:.3} |",
        ratios[0],
        ratios[ratios.len() / 2],
        ratios.iter().sum::<f64>() / ratios.len() as f64,
        ratios[ratios.len() - 1]
    );
    println!(
        "| 200 seeds: share at or under 0.7 | {:.0}% |",
        100.0 * ratios.iter().filter(|r| **r <= 0.7).count() as f64 / ratios.len() as f64
    );

    // 3. The durable store: one checkpoint (checked append, fsynced commit).
    println!("\n## Checkpoint store (redb, fsync per commit)");
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("bench.redb")).unwrap();
    let mut times = Vec::new();
    for i in 0..200 {
        let header = header(&config, &format!("r-{i:04}"));
        let start = Instant::now();
        store
            .create_run(&header, &dr::core::ids::Actor::new("bench"), "bench")
            .unwrap();
        for event in events() {
            store
                .append(
                    &header.id,
                    dr::core::time::Timestamp(0),
                    &dr::core::ids::Actor::engine(),
                    event,
                )
                .unwrap();
        }
        times.push(start.elapsed() / 7);
    }
    times.sort();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| one durable write (create or append), median of 1400 | {:.2} ms |",
        ms(times[times.len() / 2])
    );
    println!("| p95 | {:.2} ms |", ms(times[times.len() * 95 / 100]));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn header(config: &dr::config::Config, id: &str) -> dr::core::run::RunHeader {
    use dr::core::plan::{PlanRequest, RunKind, build_plan};
    let plan = build_plan(
        &config.topology,
        &PlanRequest {
            from: "us-east-1".into(),
            to: "us-west-2".into(),
            kind: RunKind::Failover,
        },
        &config.plan,
    )
    .unwrap();
    dr::core::run::RunHeader {
        version: dr::core::run::RUN_VERSION,
        id: dr::core::ids::RunId::new(id),
        kind: RunKind::Failover,
        trigger: dr::core::run::Trigger::Drill {
            scenario: "bench".into(),
        },
        created_at: dr::core::time::Timestamp(0),
        dry_run: false,
        plan,
    }
}

/// A short complete log: the whole run, six appends.
fn events() -> Vec<dr::core::run::RunEvent> {
    use dr::core::ids::StepName;
    use dr::core::run::{RunEvent, RunOutcome, StepOutcome};
    vec![
        RunEvent::StepStarted {
            step: StepName::Preflight,
            attempt: 1,
        },
        RunEvent::StepSucceeded {
            step: StepName::Preflight,
            outcome: StepOutcome::default(),
        },
        RunEvent::StepStarted {
            step: StepName::PromoteDb,
            attempt: 1,
        },
        RunEvent::StepStarted {
            step: StepName::ScaleTarget,
            attempt: 1,
        },
        RunEvent::Paused {
            reason: "bench".into(),
        },
        RunEvent::Finished {
            outcome: RunOutcome::Aborted,
        },
    ]
}
