//! Regression tests for the rules the daemon and engine broke under scenarios their own tests did
//! not contain: each scenario is written as a user would write a drill, runs the real daemon,
//! engine and simulator in virtual time, and checks the rule from what the drill left behind
//! (every mutating call, every run's log, the daemon's decisions). The property tests in
//! `daemon_properties.rs` generate the same kinds of events at random.

use dr::config::Config;
use dr::core::decision::{Decision, Hold, Would};
use dr::core::run::RunEvent;
use dr::drill::{self, DRILL_START, DrillOptions, DrillReport, Evidence};
use std::path::Path;

fn config() -> Config {
    dr::config::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/example.toml"
    )))
    .unwrap()
}

/// Runs a scenario given as drill TOML.
fn run(toml: &str) -> (DrillReport, Evidence) {
    let scenario = drill::scenario::parse(toml, Path::new("test.toml")).unwrap();
    drill::runtime()
        .unwrap()
        .block_on(drill::run_with_evidence(
            &config(),
            &scenario,
            &DrillOptions::default(),
        ))
        .unwrap()
}

fn secs(at: dr::core::time::Timestamp) -> f64 {
    at.since(DRILL_START).as_millis() as f64 / 1000.0
}

/// (time, true target lag in ms) of every FailoverGlobalCluster that reached the world.
fn promotions(evidence: &Evidence) -> Vec<(f64, u64)> {
    evidence
        .world
        .calls
        .iter()
        .filter(|c| c.operation == "FailoverGlobalCluster")
        .map(|c| (secs(c.at), c.lag_ms.unwrap_or(0)))
        .collect()
}

fn gates(evidence: &Evidence) -> Vec<(f64, Option<u64>)> {
    evidence
        .runs
        .iter()
        .flat_map(|r| r.events.iter())
        .filter_map(|e| match &e.event {
            RunEvent::StepGated { gate, .. } => Some((secs(e.at), gate.lag_ms)),
            _ => None,
        })
        .collect()
}

const OUTAGE_WITH_THROTTLED_PROMOTION: &str = r#"
name = "rpo-during-retries"
duration = "40m"
daemon = true
[[event]]
at = "2m"
outage = { region = "us-east-1", kind = "full" }
[[event]]
at = "6m50s"
fault = { operation = "FailoverGlobalCluster", kind = "throttle", count = 3 }
[[event]]
at = "7m30s"
lag = { region = "us-west-2", lag = "7m" }
"#;

#[test]
fn the_rpo_budget_is_judged_against_the_lag_read_immediately_before_each_promotion_call() {
    // Preflight reads 2 s; the promotion is throttled for minutes while the lag grows to 7 min.
    let (report, evidence) = run(OUTAGE_WITH_THROTTLED_PROMOTION);
    assert_eq!(report.runs.len(), 1, "{}", report.render());
    assert!(
        promotions(&evidence).is_empty(),
        "a promotion went out over the budget without approval: {:?}\n{}",
        promotions(&evidence),
        report.render()
    );
    let gated = gates(&evidence);
    assert_eq!(gated.len(), 1, "{gated:?}");
    assert_eq!(gated[0].1, Some(420_000), "the gate shows the figure");
    let status = evidence.runs[0].state().unwrap().status();
    assert!(
        matches!(
            status,
            dr::core::run::RunStatus::AwaitingApproval {
                step: dr::core::ids::StepName::PromoteDb,
                ..
            }
        ),
        "{status}"
    );
}

#[test]
fn an_approval_accepts_its_figure_and_a_worse_lag_is_gated_again() {
    // The operator approves 7 min at T+15m; by the time the promotion goes out the lag is 9 min,
    // so it waits again; the second approval (9 min) lets it through.
    let scenario = format!(
        "{OUTAGE_WITH_THROTTLED_PROMOTION}{}",
        r#"
[[event]]
at = "15m"
lag = { region = "us-west-2", lag = "9m" }
[[event]]
at = "15m1s"
command = "approve"
[[event]]
at = "20m"
command = "approve"
"#
    );
    let (report, evidence) = run(&scenario);
    let gated = gates(&evidence);
    assert_eq!(
        gated.iter().map(|g| g.1).collect::<Vec<_>>(),
        vec![Some(420_000), Some(540_000)],
        "{}",
        report.render()
    );
    let sent = promotions(&evidence);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].0 >= 1200.0,
        "promoted before the second approval: {sent:?}"
    );
    assert_eq!(sent[0].1, 540_000);
    assert_eq!(report.rpo_seconds, Some(540.0), "{}", report.render());
    assert_eq!(report.outcome, "succeeded", "{}", report.render());
}

#[test]
fn an_abort_after_the_promotion_was_sent_starts_the_cooldown() {
    // The promotion goes out at the trip (about T+7m10s); the operator aborts during its wait.
    // us-east-1 stays down and still held the writer at the next polls: no second failover.
    let (report, evidence) = run(r#"
name = "abort-during-promotion"
duration = "40m"
daemon = true
[[event]]
at = "2m"
outage = { region = "us-east-1", kind = "full" }
[[event]]
at = "7m33s"
command = "abort"
"#);
    assert_eq!(promotions(&evidence).len(), 1, "{}", report.render());
    assert_eq!(
        report.runs.len(),
        1,
        "a new failover started inside the cooldown:\n{}",
        report.render()
    );
    assert_eq!(report.runs[0].outcome.as_deref(), Some("aborted"));
}

#[test]
fn a_pause_during_pre_warm_stops_every_automatic_change_including_scale_back() {
    // us-east-1 is suspect from T+2m (pre-warm of us-west-2), the operator pauses at T+2m33s,
    // us-east-1 recovers at T+4m: the scale-back waits until the unpause at T+15m.
    let (report, evidence) = run(r#"
name = "pause-during-prewarm"
duration = "30m"
daemon = true
pre_warm = true
[[event]]
at = "2m"
outage = { region = "us-east-1", kind = "full" }
[[event]]
at = "2m33s"
command = "pause"
[[event]]
at = "4m"
recover = { region = "us-east-1" }
[[event]]
at = "15m3s"
command = "unpause"
"#);
    let while_paused: Vec<_> = evidence
        .world
        .calls
        .iter()
        .filter(|c| secs(c.at) > 153.0 && secs(c.at) < 903.0)
        .map(|c| (secs(c.at), c.operation.clone()))
        .collect();
    assert!(
        while_paused.is_empty(),
        "changed while paused: {while_paused:?}\n{}",
        report.render()
    );
    assert!(
        evidence.decisions.iter().any(|(_, d)| matches!(
            d,
            Decision::Nothing(Hold::AutomationPaused {
                would: Would::ScaleBack { .. }
            })
        )),
        "the status says what the pause holds back"
    );
    let after: Vec<_> = evidence
        .world
        .calls
        .iter()
        .filter(|c| secs(c.at) >= 903.0)
        .collect();
    assert!(
        !after.is_empty(),
        "the scale-back happens after the unpause"
    );
    assert!(report.runs.is_empty());
}

#[test]
fn unobserved_time_never_counts_toward_the_failure_window() {
    // us-east-1 fails at T+2m; dr is cut off from T+4m to T+4m50s, and meanwhile us-east-1 is
    // back for 18 s. The window restarts after the gap: no trip before T+4m50s + 5m.
    let (report, _) = run(r#"
name = "hidden-recovery"
duration = "30m"
daemon = true
[[event]]
at = "2m"
outage = { region = "us-east-1", kind = "full" }
[[event]]
at = "4m"
isolate = true
[[event]]
at = "4m10s"
recover = { region = "us-east-1" }
[[event]]
at = "4m28s"
outage = { region = "us-east-1", kind = "full" }
[[event]]
at = "4m50s"
isolate = false
"#);
    let trip = report
        .tripped_at
        .expect("a trip once the window fills again");
    assert!(
        trip >= 290.0 + 300.0,
        "tripped at {trip}s, counting time nobody observed\n{}",
        report.render()
    );
    assert!(trip <= 290.0 + 300.0 + 30.0, "tripped late, at {trip}s");
}

#[test]
fn rpo_is_the_measured_lag_after_a_pause_and_resume_never_zero() {
    // The promotion goes out with a lag of 3 min; the run is paused during its wait and resumed
    // after the writer moved, so promote-db finds the target already the writer.
    let (report, evidence) = run(r#"
name = "rpo-after-resume"
duration = "40m"
[[event]]
at = "1m"
lag = { region = "us-west-2", lag = "3m" }
[[event]]
at = "2m"
outage = { region = "us-east-1", kind = "full" }
[[event]]
at = "7m"
command = "failover --to us-west-2"
[[event]]
at = "7m40s"
command = "pause"
[[event]]
at = "14m"
command = "resume"
"#);
    assert_eq!(promotions(&evidence).len(), 1);
    assert_eq!(report.outcome, "succeeded", "{}", report.render());
    assert_eq!(report.rpo_seconds, Some(180.0), "{}", report.render());
}

#[test]
fn rpo_after_an_abort_comes_from_the_promotion_that_moved_the_writer() {
    let (report, _) = run(r#"
name = "rpo-after-abort"
duration = "40m"
[[event]]
at = "1m"
lag = { region = "us-west-2", lag = "3m" }
[[event]]
at = "2m"
outage = { region = "us-east-1", kind = "full" }
[[event]]
at = "7m"
command = "failover --to us-west-2"
[[event]]
at = "7m40s"
command = "abort"
[[event]]
at = "12m"
command = "failover --to us-west-2 --from us-east-1"
"#);
    assert_eq!(report.runs.len(), 2, "{}", report.render());
    assert_eq!(report.rpo_seconds, Some(180.0), "{}", report.render());
}

#[test]
fn a_held_trip_is_an_alert_every_time_its_reason_changes() {
    // A failover, a switchover home, then us-east-1 fails again while automation is paused: the
    // held trip is an alert. After the unpause the switchover's cooldown holds it: a new reason,
    // a new alert.
    let (report, evidence) = run(r#"
name = "held-trip"
duration = "45m"
daemon = true
[[event]]
at = "2m"
outage = { region = "us-east-1", kind = "full" }
[[event]]
at = "15m"
recover = { region = "us-east-1" }
[[event]]
at = "16m"
command = "switchover --to us-east-1"
[[event]]
at = "24m3s"
command = "pause"
[[event]]
at = "25m"
outage = { region = "us-east-1", kind = "full" }
[[event]]
at = "33m3s"
command = "unpause"
"#);
    let held: Vec<&Decision> = evidence
        .decisions
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d.alert() == Some(dr::core::decision::AlertLevel::Critical))
        .collect();
    assert!(
        matches!(
            held.as_slice(),
            [
                Decision::Nothing(Hold::AutomationPaused {
                    would: Would::FailOver { .. }
                }),
                Decision::Nothing(Hold::Cooldown {
                    would: Would::FailOver { .. },
                    ..
                }),
            ]
        ),
        "{held:#?}\n{}",
        report.render()
    );
    let held_alerts = report
        .alerts
        .iter()
        .filter(|a| a.starts_with("ALERT: the writer's region us-east-1 failed"))
        .count();
    assert_eq!(held_alerts, 2, "{:?}", report.alerts);
    assert_eq!(report.runs.len(), 2, "{}", report.render());
}

#[test]
fn an_operator_abort_of_an_automatic_run_is_not_overruled_one_poll_later() {
    // The lag is over the budget, so the automatic run waits for approval; the operator aborts
    // it. us-east-1 is still down, but the daemon holds (and alerts) instead of starting again.
    let (report, evidence) = run(r#"
name = "abort-before-promotion"
duration = "30m"
daemon = true
[[event]]
at = "1m"
lag = { region = "us-west-2", lag = "7m" }
[[event]]
at = "2m"
outage = { region = "us-east-1", kind = "full" }
[[event]]
at = "8m3s"
command = "abort"
"#);
    assert_eq!(report.runs.len(), 1, "{}", report.render());
    assert!(
        evidence.decisions.iter().any(|(_, d)| matches!(
            d,
            Decision::Nothing(Hold::Cooldown {
                would: Would::FailOver { .. },
                ..
            })
        )),
        "{}",
        report.render()
    );
}
