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

// Data-plane detection: each vantage point and the partitions between dr and one region.

/// Every round the daemon observed of `region`, as (time, route53, probe, database).
fn rounds_of(evidence: &Evidence, region: &str) -> Vec<(f64, String)> {
    evidence
        .observations
        .iter()
        .filter(|o| o.region.as_str() == region)
        .map(|o| (secs(o.at), o.signals.describe()))
        .collect()
}

const PARTITION_AND_ROUTE53_API_DOWN: &str = r#"
name = "partition-and-route53-api-down"
duration = "40m"
daemon = true
[[event]]
at = "2m"
partition = { region = "us-east-1", cut = true }
[[event]]
at = "3m"
route53_control_plane = "down"
[[event]]
at = "30m"
partition = { region = "us-east-1", cut = false }
"#;

#[test]
fn a_partition_between_dr_and_the_writer_never_trips_while_routes53s_name_servers_see_it_healthy() {
    // dr cannot reach us-east-1 at all (probes and APIs), and Route53's API is down too; the
    // name servers still answer us-east-1's health record "healthy": one vantage point says
    // unhealthy, another healthy. No failover, no pre-warm, for 28 minutes.
    let (report, evidence) = run(PARTITION_AND_ROUTE53_API_DOWN);
    assert!(report.runs.is_empty(), "{}", report.render());
    assert!(
        evidence.world.calls.is_empty(),
        "a mutating call was made: {:?}",
        evidence.world.calls
    );
    let rounds = rounds_of(&evidence, "us-east-1");
    let cut: Vec<_> = rounds
        .iter()
        .filter(|(t, _)| *t > 200.0 && *t < 1700.0)
        .collect();
    assert!(cut.len() > 100, "{cut:?}");
    for (t, round) in cut {
        assert!(
            round.contains("Route53's health check healthy")
                && round.contains("dr's own probe unhealthy"),
            "at {t}: {round}"
        );
    }
}

const EVERYTHING_UNKNOWN: &str = r#"
name = "everything-unknown"
duration = "40m"
daemon = true
[[event]]
at = "2m"
outage = { region = "us-east-1", kind = "full" }
[[event]]
at = "2m"
route53_control_plane = "down"
[[event]]
at = "2m"
route53_data_plane = "down"
[[event]]
at = "2m"
probes_blocked = true
"#;

#[test]
fn a_writer_that_no_vantage_point_can_read_is_never_failed_over() {
    // us-east-1 is really down, but dr reads nothing: Route53 on neither path, no probe. All
    // Unknown, for 38 minutes: no trip and no mutating call of any kind.
    let (report, evidence) = run(EVERYTHING_UNKNOWN);
    assert!(report.runs.is_empty(), "{}", report.render());
    assert!(evidence.world.calls.is_empty());
    let rounds = rounds_of(&evidence, "us-east-1");
    assert!(rounds.len() > 200);
    for (t, round) in rounds.iter().filter(|(t, _)| *t > 130.0) {
        assert!(!round.contains("unhealthy"), "at {t}: {round}");
    }
    assert!(
        !evidence.decisions.iter().any(|(_, d)| d.starts_failover()),
        "{:?}",
        evidence.decisions
    );
    // Once nothing has been read of the writer for the whole window, it says so: an alert.
    let unobserved: Vec<f64> = evidence
        .decisions
        .iter()
        .filter(|(_, d)| matches!(d, Decision::Nothing(Hold::WriterUnobserved { .. })))
        .map(|(at, _)| secs(*at))
        .collect();
    assert!(
        unobserved
            .first()
            .is_some_and(|t| *t >= 420.0 && *t <= 440.0),
        "{unobserved:?} {:?}",
        evidence.decisions
    );
    assert!(evidence.decisions.iter().any(|(_, d)| matches!(
        d,
        Decision::Nothing(Hold::WriterUnobserved { .. })
    ) && d.alert().is_some()));
}

#[test]
fn the_daemon_fails_over_on_data_planes_and_finishes_the_record_change_when_route53s_api_returns() {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/runbooks/drills/auto-route53-blind.toml"
    ))
    .unwrap();
    let (report, evidence) = run(&shipped);
    assert!(report.passed, "{}", report.render());
    assert_eq!(report.runs.len(), 1);
    assert_eq!(report.runs[0].trigger, "automatic");
    let rto = report.rto_seconds.expect("an RTO");
    assert!(rto <= 600.0, "RTO {rto}s over 10 minutes");
    // The trip rested on the name servers' answer and the probe, with the API unreadable.
    let trip = secs(evidence.runs[0].header.created_at);
    let rounds = rounds_of(&evidence, "us-east-1");
    let deciding = rounds
        .iter()
        .rev()
        .find(|(t, _)| *t <= trip)
        .expect("a round before the trip");
    assert!(
        deciding.1.contains("Route53's health check unhealthy")
            && deciding.1.contains("dr's own probe unhealthy"),
        "{deciding:?}"
    );
    // repoint-dns went on without the control plane and left a follow-up.
    let state = evidence.runs[0].state().unwrap();
    let repoint = &state.steps[&dr::core::ids::StepName::RepointDns];
    let follow_up = repoint
        .outcome
        .as_ref()
        .and_then(|o| o.follow_up.clone())
        .expect("the record change is a follow-up");
    assert!(
        follow_up.reason.contains("ListResourceRecordSets"),
        "{}",
        follow_up.reason
    );
    // The control plane answered at T+30m: the daemon made the change, once, and audited it.
    let changes: Vec<_> = evidence
        .world
        .calls
        .iter()
        .filter(|c| c.operation == "ChangeResourceRecordSets")
        .collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(secs(changes[0].at) >= 1800.0, "{changes:?}");
    let east = evidence
        .world
        .records
        .iter()
        .any(|r| r.region.as_str() == "us-east-1");
    assert!(
        !east,
        "us-east-1's record is still there: {:?}",
        evidence.world.records
    );
    let done: Vec<_> = evidence
        .audit
        .iter()
        .filter(|e| e.action == dr::daemon::follow_up::DONE)
        .collect();
    assert_eq!(done.len(), 1, "{:?}", evidence.audit);
    assert_eq!(done[0].run.as_ref(), Some(&evidence.runs[0].header.id));
    assert!(secs(done[0].at) >= 1800.0);
}

const PARTITION_STALL_AND_ROUTE53_BLIND: &str = r#"
name = "partition-stall-route53-blind"
duration = "30m"
daemon = true
[[event]]
at = "2m"
partition = { region = "us-east-1", cut = true }
[[event]]
at = "2m"
replication = { region = "us-west-2", stalled = true }
[[event]]
at = "2m"
route53_control_plane = "down"
[[event]]
at = "2m"
route53_data_plane = "down"
"#;

#[test]
fn a_live_writer_that_looks_dead_from_every_vantage_point_is_never_promoted_without_approval() {
    // us-east-1 is up and serving, but dr cannot reach it, replication to us-west-2 has
    // stalled (the same cut between the regions), and Route53 cannot be read on either path.
    // Two vantage points (the probe and the database's view) agree: from dr's side this is an
    // outage, and the daemon trips. But the lag grew for the whole window, over the RPO budget:
    // writes may go on in us-east-1, so the promotion waits for an operator. No promotion call.
    let (report, evidence) = run(PARTITION_STALL_AND_ROUTE53_BLIND);
    assert_eq!(report.runs.len(), 1, "{}", report.render());
    assert!(
        promotions(&evidence).is_empty(),
        "{:?}",
        promotions(&evidence)
    );
    let state = evidence.runs[0].state().unwrap();
    match &state.steps[&dr::core::ids::StepName::PromoteDb].status {
        dr::core::run::StepStatus::AwaitingApproval { lag_ms, .. } => {
            assert!(lag_ms.is_some_and(|ms| ms > 300_000), "gated on {lag_ms:?}")
        }
        other => panic!("promote-db is {other:?}:\n{}", report.render()),
    }
    assert_eq!(
        evidence.world.writer_region().unwrap().as_str(),
        "us-east-1"
    );
}

const FOLLOW_UP_THEN_A_RUN_THAT_NEVER_TOUCHES_DNS: &str = r#"
name = "follow-up-outlives-a-stopped-run"
duration = "45m"
daemon = true
[[event]]
at = "2m"
outage = { region = "us-east-1", kind = "full" }
[[event]]
at = "2m"
route53_control_plane = "down"
[[event]]
at = "20m"
command = "failover --to us-east-1 --from us-west-2"
[[event]]
at = "22m"
command = "abort"
[[event]]
at = "35m"
route53_control_plane = "up"
"#;

#[test]
fn a_later_run_that_never_reaches_dns_does_not_cancel_a_pending_follow_up() {
    // The blind failover leaves the record change as a follow-up. An operator then tries to
    // move back to us-east-1, which is still down: that run stops in preflight, never touches
    // DNS, and is aborted. The follow-up waits while that run is unfinished, stays pending
    // after it, and is made once the API answers.
    let (report, evidence) = run(FOLLOW_UP_THEN_A_RUN_THAT_NEVER_TOUCHES_DNS);
    assert_eq!(report.runs.len(), 2, "{}", report.render());
    let second = evidence.runs[1].state().unwrap();
    assert!(
        second.steps[&dr::core::ids::StepName::RepointDns]
            .started_at
            .is_none(),
        "{}",
        report.render()
    );
    let superseded = evidence
        .audit
        .iter()
        .any(|e| e.action == dr::daemon::follow_up::SUPERSEDED);
    assert!(!superseded, "{:?}", evidence.audit);
    let done: Vec<_> = evidence
        .audit
        .iter()
        .filter(|e| e.action == dr::daemon::follow_up::DONE)
        .collect();
    assert_eq!(done.len(), 1, "{:?}", evidence.audit);
    assert_eq!(done[0].run.as_ref(), Some(&evidence.runs[0].header.id));
    assert!(secs(done[0].at) >= 2100.0);
    assert!(
        !evidence
            .world
            .records
            .iter()
            .any(|r| r.region.as_str() == "us-east-1"),
        "{:?}",
        evidence.world.records
    );
}

const FOLLOW_UP_WHILE_PAUSED: &str = r#"
name = "follow-up-while-paused"
duration = "45m"
daemon = true
[[event]]
at = "2m"
outage = { region = "us-east-1", kind = "full" }
[[event]]
at = "2m"
route53_control_plane = "down"
[[event]]
at = "25m"
command = "pause"
[[event]]
at = "30m"
route53_control_plane = "up"
[[event]]
at = "38m"
command = "unpause"
"#;

#[test]
fn a_pending_follow_up_is_not_made_while_automation_is_paused() {
    // The API answers again at T+30m, but automation is paused from T+25m to T+38m: paused
    // means no automatic change, the follow-up's record change included. It is made, once,
    // after the unpause.
    let (report, evidence) = run(FOLLOW_UP_WHILE_PAUSED);
    assert_eq!(report.runs.len(), 1, "{}", report.render());
    let changes: Vec<f64> = evidence
        .world
        .calls
        .iter()
        .filter(|c| c.operation == "ChangeResourceRecordSets")
        .map(|c| secs(c.at))
        .collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(changes[0] >= 2280.0, "made while paused: {changes:?}");
    let done = evidence
        .audit
        .iter()
        .filter(|e| e.action == dr::daemon::follow_up::DONE)
        .count();
    assert_eq!(done, 1, "{:?}", evidence.audit);
}
