//! The scenario library: every shipped drill passes its own expectations, and the behaviour each
//! one rehearses is checked in its report. Also the concurrency measurement of the reference
//! outage against the seed's serial runbook on the same simulated timings.

mod common;

use dr::config::Config;
use dr::drill::{self, DrillOptions, DrillReport};
use std::path::Path;

fn config() -> Config {
    common::shipped_config("example.toml")
}

/// The shipped three-region config.
fn three_region_config() -> Config {
    common::three_region_config()
}

fn drill(name: &str, options: DrillOptions) -> DrillReport {
    let path = format!("{}/runbooks/drills/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let scenario = drill::scenario::load(Path::new(&path)).unwrap();
    let config = if scenario.requires_regions.is_empty() {
        config()
    } else {
        three_region_config()
    };
    drill::runtime()
        .unwrap()
        .block_on(drill::run(&config, &scenario, &options))
        .unwrap()
}

fn step<'a>(report: &'a DrillReport, name: &str) -> &'a drill::report::StepReport {
    report
        .steps
        .iter()
        .find(|s| s.name.as_str() == name)
        .unwrap()
}

fn calls(report: &DrillReport, operation: &str) -> usize {
    report
        .mutations
        .iter()
        .filter(|m| m.operation == operation)
        .count()
}

#[test]
fn every_shipped_scenario_meets_its_expectations() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks/drills");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 17, "{names:?}");
    for name in names {
        let report = drill(&name, DrillOptions::default());
        assert!(
            !report.expectations.is_empty(),
            "{name} states no expectations"
        );
        assert!(report.passed, "{name} failed:\n{}", report.render());
    }
}

#[test]
fn the_reference_outage_fails_over_within_the_rto() {
    let report = drill("reference-outage", DrillOptions::default());
    assert_eq!(report.outcome, "succeeded");
    assert_eq!(report.outage_started_at, Some(120.0));
    assert_eq!(report.run_started_at, Some(420.0));
    let rto = report.rto_seconds.unwrap();
    assert!(rto < 900.0, "{rto}");
    assert_eq!(rto, report.verified_at.unwrap() - 120.0);
    assert_eq!(report.rpo_seconds, Some(2.0));
    // promote-db and scale-target overlap.
    let (promote, scale) = (step(&report, "promote-db"), step(&report, "scale-target"));
    assert!(promote.started_at.unwrap() < scale.ended_at.unwrap());
    assert!(scale.started_at.unwrap() < promote.ended_at.unwrap());
    // Each mutation once.
    for op in [
        "FailoverGlobalCluster",
        "UpdateNodegroupConfig",
        "UpdateAutoScalingGroup",
        "ChangeResourceRecordSets",
    ] {
        assert_eq!(calls(&report, op), 1, "{op}");
    }
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "outcome",
        "writer_region",
        "dns_regions",
        "outage_started_at",
        "run_started_at",
        "verified_at",
        "rto_seconds",
        "rpo_seconds",
        "steps",
    ] {
        assert!(json.get(key).is_some(), "the JSON report lacks {key}");
    }
}

#[test]
fn concurrent_steps_cut_the_run_to_at_most_0_7_of_the_serial_runbook() {
    let concurrent = drill("reference-outage", DrillOptions::default());
    let serial = drill(
        "reference-outage",
        DrillOptions {
            serial: true,
            seed: None,
            ..Default::default()
        },
    );
    assert!(serial.passed, "{}", serial.render());
    let ratio = concurrent.run_seconds.unwrap() / serial.run_seconds.unwrap();
    assert!(
        ratio <= 0.7,
        "ratio {ratio:.3}: {} vs {}",
        concurrent.run_seconds.unwrap(),
        serial.run_seconds.unwrap()
    );
    // Same simulated timings: the promotion took as long in both.
    let took = |r: &DrillReport| {
        let s = step(r, "promote-db");
        s.ended_at.unwrap() - s.started_at.unwrap()
    };
    assert_eq!(took(&concurrent), took(&serial));
}

#[test]
fn over_many_seeds_the_concurrent_plan_averages_well_under_0_7() {
    let mut ratios = Vec::new();
    for seed in 1..=50 {
        let c = drill(
            "reference-outage",
            DrillOptions {
                serial: false,
                seed: Some(seed),
                ..Default::default()
            },
        );
        let s = drill(
            "reference-outage",
            DrillOptions {
                serial: true,
                seed: Some(seed),
                ..Default::default()
            },
        );
        ratios.push(c.run_seconds.unwrap() / s.run_seconds.unwrap());
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    let worst = ratios.iter().cloned().fold(0.0, f64::max);
    assert!(mean <= 0.7, "mean {mean:.3}");
    // The concurrent plan never beats its longest step: when scaling takes its full 5 minutes and
    // promotion its shortest 2, the ratio passes 0.7. It is never worse than the serial plan.
    assert!(worst < 0.8, "worst {worst:.3}");
}

#[test]
fn a_route53_control_plane_outage_is_verified_on_the_data_plane_without_waiting_out_the_timeout() {
    let report = drill("route53-control-plane-down", DrillOptions::default());
    assert_eq!(report.outcome, "succeeded");
    let repoint = step(&report, "repoint-dns");
    assert_eq!(repoint.status, "succeeded");
    assert!(
        repoint
            .summary
            .contains("name servers answer only us-west-2"),
        "{}",
        repoint.summary
    );
    assert!(repoint.summary.contains("follow-up"), "{}", repoint.summary);
    // It took seconds, not its 5-minute timeout.
    let took = repoint.ended_at.unwrap() - repoint.started_at.unwrap();
    assert!(took < 30.0, "repoint-dns took {took}s");
    assert!(step(&report, "verify").summary.contains("name servers"));
    assert_eq!(calls(&report, "ChangeResourceRecordSets"), 0);
    // The data plane answers only from the healthy region.
    assert_eq!(report.dns_regions, vec!["us-west-2"]);
}

#[test]
fn lag_over_the_budget_holds_promotion_until_approved() {
    let report = drill("lag-over-budget", DrillOptions::default());
    let promote = step(&report, "promote-db");
    assert_eq!(
        promote.started_at,
        Some(600.0),
        "promote-db starts at the approval"
    );
    let scale = step(&report, "scale-target");
    assert_eq!(
        scale.started_at,
        Some(420.0),
        "scaling does not wait for the approval"
    );
    assert_eq!(report.rpo_seconds, Some(420.0));
    assert_eq!(report.rpo_met, Some(false));
    assert!(
        report
            .timeline
            .iter()
            .any(|e| e.text.contains("promote-db approved"))
    );
}

#[test]
fn throttled_and_failing_apis_are_retried_without_repeating_mutations() {
    let report = drill("throttled-apis", DrillOptions::default());
    assert_eq!(report.outcome, "succeeded");
    for op in [
        "FailoverGlobalCluster",
        "UpdateNodegroupConfig",
        "ChangeResourceRecordSets",
    ] {
        assert_eq!(calls(&report, op), 1, "{op}");
    }
    assert!(
        report
            .timeline
            .iter()
            .filter(|e| e.text.contains("throttled"))
            .count()
            >= 5
    );
}

#[test]
fn an_unhealthy_target_stops_the_run_before_any_change() {
    let report = drill("target-unhealthy", DrillOptions::default());
    assert_eq!(report.outcome, "aborted");
    assert!(report.mutations.is_empty(), "{:?}", report.mutations);
    assert!(
        step(&report, "preflight")
            .summary
            .contains("no change was made")
    );
    assert_eq!(step(&report, "promote-db").status, "pending");
}

#[test]
fn failback_moves_the_writer_home_without_data_loss() {
    let report = drill("failback", DrillOptions::default());
    assert_eq!(report.writer_region.as_deref(), Some("us-east-1"));
    assert_eq!(calls(&report, "FailoverGlobalCluster"), 1);
    assert_eq!(calls(&report, "SwitchoverGlobalCluster"), 1);
    assert_eq!(report.run_id.as_deref(), Some("drill-2"));
    // RTO and RPO are the outage's, not the failback's.
    assert_eq!(report.rto_seconds, Some(660.0));
    assert_eq!(report.rpo_seconds, Some(2.0));
}

#[test]
fn the_same_drill_gives_the_same_report() {
    let a = drill("throttled-apis", DrillOptions::default());
    let b = drill("throttled-apis", DrillOptions::default());
    assert_eq!(a, b);
}

fn decided(report: &DrillReport, kind: &str) -> bool {
    report.decisions.iter().any(|d| {
        serde_json::to_value(&d.decision)
            .unwrap()
            .to_string()
            .contains(kind)
    })
}

#[test]
fn the_daemon_trips_within_the_window_plus_two_polls_and_fails_over_by_itself() {
    let report = drill("auto-primary-outage", DrillOptions::default());
    assert_eq!(report.outcome, "succeeded");
    let (outage, trip) = (
        report.outage_started_at.unwrap(),
        report.tripped_at.unwrap(),
    );
    assert!(
        trip >= outage + 300.0,
        "tripped at {trip}, before the window filled"
    );
    assert!(
        trip <= outage + 300.0 + 20.0,
        "tripped at {trip}, later than window + 2 polls"
    );
    assert!(report.rto_seconds.unwrap() < 900.0);
    assert!(decided(&report, "pre-warm"));
}

#[test]
fn pre_warm_cuts_trip_to_verified_to_at_most_0_55_of_the_serial_runbook() {
    let warm = drill(
        "auto-primary-outage",
        DrillOptions {
            pre_warm: Some(true),
            ..Default::default()
        },
    );
    let cold = drill(
        "auto-primary-outage",
        DrillOptions {
            pre_warm: Some(false),
            ..Default::default()
        },
    );
    let serial = drill(
        "reference-outage",
        DrillOptions {
            serial: true,
            ..Default::default()
        },
    );
    let serial_run = serial.run_seconds.unwrap();
    let warm_run = warm.trip_to_verified_seconds.unwrap();
    let cold_run = cold.trip_to_verified_seconds.unwrap();
    assert!(warm_run / serial_run <= 0.55, "{warm_run} / {serial_run}");
    assert!(
        warm_run < cold_run,
        "pre-warm {warm_run} vs none {cold_run}"
    );
    assert!(warm.rto_seconds.unwrap() < cold.rto_seconds.unwrap());
    assert!(!decided(&cold, "pre-warm"));
}

#[test]
fn flapping_never_fails_over_and_each_recovery_scales_back() {
    let report = drill("auto-flapping", DrillOptions::default());
    assert_eq!(report.outcome, "no-run");
    assert!(
        !report
            .decisions
            .iter()
            .any(|d| d.decision.starts_failover())
    );
    assert!(decided(&report, "scale-back"));
    // Up and back down at least twice.
    assert!(
        calls(&report, "UpdateNodegroupConfig") >= 4,
        "{}",
        calls(&report, "UpdateNodegroupConfig")
    );
}

#[test]
fn unknown_signals_alone_never_fail_over() {
    let report = drill("auto-isolated", DrillOptions::default());
    assert_eq!(report.outcome, "no-run");
    assert!(report.mutations.is_empty(), "{:?}", report.mutations);
    assert!(
        !report
            .decisions
            .iter()
            .any(|d| d.decision.starts_failover())
    );
}

#[test]
fn a_minority_view_of_route53_checkers_changes_nothing() {
    let report = drill("auto-checker-minority", DrillOptions::default());
    assert_eq!(report.outcome, "no-run");
    assert!(report.mutations.is_empty(), "{:?}", report.mutations);
}

#[test]
fn the_cooldown_holds_a_second_failover_until_acknowledged() {
    let report = drill("auto-cooldown", DrillOptions::default());
    assert!(decided(&report, "cooldown"), "{:?}", report.decisions);
    let automatic: Vec<f64> = report
        .timeline
        .iter()
        .filter(|e| e.text.starts_with("daemon: fail over from us-east-1"))
        .map(|e| e.at_seconds)
        .collect();
    assert_eq!(automatic.len(), 2, "{automatic:?}");
    assert!(
        automatic[1] >= 2400.0,
        "the second failover waited for dr ack at T+40m: {automatic:?}"
    );
}

#[test]
fn a_recovery_during_pre_warm_scales_the_target_back_to_its_baseline() {
    let report = drill("auto-recovery-during-prewarm", DrillOptions::default());
    assert!(decided(&report, "pre-warm") && decided(&report, "scale-back"));
    assert_eq!(calls(&report, "UpdateNodegroupConfig"), 2);
    assert_eq!(report.outcome, "no-run");
}

#[test]
fn a_paused_daemon_says_what_it_would_do_and_does_nothing() {
    let report = drill("auto-paused", DrillOptions::default());
    assert!(decided(&report, "automation-paused"));
    assert!(
        report.tripped_at.unwrap() >= 720.0,
        "{:?}",
        report.tripped_at
    );
}

#[test]
fn a_scenario_that_needs_a_third_region_says_so_on_a_two_region_config() {
    let path = format!(
        "{}/runbooks/drills/auto-three-region.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let scenario = drill::scenario::load(Path::new(&path)).unwrap();
    let err = drill::runtime()
        .unwrap()
        .block_on(drill::run(&config(), &scenario, &DrillOptions::default()))
        .unwrap_err();
    assert!(err.to_string().contains("needs region eu-west-1"), "{err}");
}

#[test]
fn the_shipped_three_region_config_is_the_example_plus_its_third_region() {
    // config/three-region.toml is its own file so that the three-region drills run as shipped;
    // it must not drift from the example it extends.
    let shipped = common::three_region_config();
    let derived = common::example_with_third_region();
    let view = |c: &Config| {
        let mut value = serde_json::to_value(c).unwrap();
        for key in ["path", "store_path"] {
            value.as_object_mut().unwrap().remove(key);
        }
        value["sim"].as_object_mut().unwrap().remove("state_path");
        value
    };
    assert_eq!(view(&shipped), view(&derived));
    assert_eq!(shipped.topology.regions.len(), 3);
    // Its store and world are its own, so it never reuses the two-region deployment's.
    assert_ne!(
        shipped.store_path.file_name(),
        common::shipped_config("example.toml")
            .store_path
            .file_name()
    );
}
