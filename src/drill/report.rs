//! The drill report: outcome, RTO and RPO against the targets, each step's timing, the
//! timeline, and the scenario's expectations. Built from the run's log and the final world;
//! rendered as text for people or serialized as JSON.

use super::{DRILL_START, TimelineEntry};
use crate::config::Config;
use crate::core::decision::Decision;
use crate::core::ids::StepName;
use crate::core::plan::RunKind;
use crate::core::run::{RunStatus, StepStatus, Trigger};
use crate::core::time::{Timestamp, fmt_duration};
use crate::drill::scenario::Scenario;
use crate::provider::sim::World;
use crate::store::StoredRun;
use serde::Serialize;
use std::fmt::Write;
use std::time::Duration;

/// The seed's recovery time objective.
pub const RTO_TARGET: Duration = Duration::from_secs(15 * 60);

/// One step in the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepReport {
    /// Step name.
    pub name: StepName,
    /// Final status.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// Seconds since the scenario started.
    pub started_at: Option<f64>,
    /// Seconds since the scenario started.
    pub ended_at: Option<f64>,
    /// Its summary or error.
    pub summary: String,
}

/// One run in the drill.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunSummary {
    /// Run id.
    pub id: String,
    /// failover or switchover.
    pub kind: String,
    /// automatic, manual or drill.
    pub trigger: String,
    /// Writer's region it left.
    pub from: String,
    /// Target.
    pub to: String,
    /// Seconds since the scenario started.
    pub created_at: f64,
    /// When promote-db succeeded.
    pub promoted_at: Option<f64>,
    /// When the run finished.
    pub finished_at: Option<f64>,
    /// How it ended.
    pub outcome: Option<String>,
}

/// One decision of the daemon.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecisionReport {
    /// Seconds since the scenario started.
    pub at: f64,
    /// The decision.
    pub decision: Decision,
    /// For people.
    pub text: String,
}

/// One checked expectation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExpectationResult {
    /// What was checked.
    pub what: String,
    /// Expected.
    pub expected: String,
    /// Seen.
    pub actual: String,
    /// Whether it held.
    pub met: bool,
}

/// One mutating call that reached the simulated AWS.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MutationReport {
    /// Seconds since the scenario started.
    pub at: f64,
    /// API name.
    pub operation: String,
    /// Region.
    pub region: String,
    /// Resource.
    pub resource: String,
}

/// The whole report. Times are seconds since the scenario started.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DrillReport {
    /// Scenario name.
    pub scenario: String,
    /// What it rehearses.
    pub description: String,
    /// Seed of the simulated durations.
    pub seed: u64,
    /// Whether the plan ran serially (the seed's manual runbook).
    pub serial: bool,
    /// Scenario length.
    pub duration_seconds: f64,
    /// Run outcome, or `no-run`, `unfinished`, or the status a blocked run stopped in.
    pub outcome: String,
    /// The id of the (last) run.
    pub run_id: Option<String>,
    /// Writer's region at the end.
    pub writer_region: Option<String>,
    /// Regions DNS answers with at the end.
    pub dns_regions: Vec<String>,
    /// When the writer's region went down.
    pub outage_started_at: Option<f64>,
    /// When the run was created.
    pub run_started_at: Option<f64>,
    /// When the (last) run's verify succeeded.
    pub verified_at: Option<f64>,
    /// When the first run started after the outage verified: the end of the RTO.
    pub recovered_at: Option<f64>,
    /// Outage start to recovered.
    pub rto_seconds: Option<f64>,
    /// The (last) run's start to its verification.
    pub run_seconds: Option<f64>,
    /// Replication lag read immediately before the promotion call: the writes lost. None when
    /// unknown (nothing measured it), never a made-up zero.
    pub rpo_seconds: Option<f64>,
    /// RTO target (15 min).
    pub rto_target_seconds: f64,
    /// RPO target (the config's RPO budget).
    pub rpo_target_seconds: f64,
    /// RTO within target (None when not measured).
    pub rto_met: Option<bool>,
    /// RPO within target (None when not measured).
    pub rpo_met: Option<bool>,
    /// Steps.
    pub steps: Vec<StepReport>,
    /// Mutating calls that reached the simulated AWS.
    pub mutations: Vec<MutationReport>,
    /// What happened, in order.
    pub timeline: Vec<TimelineEntry>,
    /// Every run, oldest first.
    pub runs: Vec<RunSummary>,
    /// When the daemon started the first automatic failover.
    pub tripped_at: Option<f64>,
    /// From the trip to the verification of that run.
    pub trip_to_verified_seconds: Option<f64>,
    /// The daemon's decisions, each time it changed.
    pub decisions: Vec<DecisionReport>,
    /// Alerts the daemon raised (a failed region it cannot or need not fail over).
    pub alerts: Vec<String>,
    /// The scenario's expectations.
    pub expectations: Vec<ExpectationResult>,
    /// All expectations met.
    pub passed: bool,
}

pub(super) struct Inputs<'a> {
    pub scenario: &'a Scenario,
    pub config: &'a Config,
    pub serial: bool,
    pub seed: u64,
    pub world: &'a World,
    pub runs: &'a [StoredRun],
    pub unfinished: bool,
    pub outage_started_at: Option<Timestamp>,
    pub timeline: Vec<TimelineEntry>,
    pub decisions: Vec<(Timestamp, Decision)>,
}

fn secs(at: Timestamp) -> f64 {
    at.since(DRILL_START).as_millis() as f64 / 1000.0
}

/// The writes the recovery lost: the replication lag read immediately before the promotion call
/// that moved the writer, from the write-ahead `Promoting` record of `recovery` or, when it found
/// the target already the writer, of the latest earlier run toward the same target (one aborted
/// after AWS had accepted its promotion, say). A switchover with no such record loses nothing.
/// None means unknown, never zero: no promotion was recorded, or its lag could not be read.
fn data_loss_seconds(runs: &[StoredRun], recovery: &StoredRun) -> Option<f64> {
    let target = &recovery.header.plan.request.to;
    let promotion = runs
        .iter()
        .filter(|r| r.header.created_at <= recovery.header.created_at)
        .filter(|r| &r.header.plan.request.to == target && !r.header.dry_run)
        .filter_map(|r| {
            let state = r.state().ok()?;
            let last = state.promotions.last()?.clone();
            Some((r.header.kind, last))
        })
        .max_by_key(|(_, p)| p.at);
    match promotion {
        Some((RunKind::Switchover, _)) => Some(0.0),
        Some((RunKind::Failover, p)) => p.lag_ms.map(|ms| ms as f64 / 1000.0),
        None if recovery.header.kind == RunKind::Switchover => Some(0.0),
        None => None,
    }
}

fn summarize(run: &StoredRun) -> RunSummary {
    let state = run.state().ok();
    let promoted_at = state.as_ref().and_then(|s| {
        let promote = s.steps.get(&StepName::PromoteDb)?;
        (promote.status == StepStatus::Succeeded).then_some(secs(promote.finished_at?))
    });
    let outcome = state.as_ref().and_then(|s| s.outcome);
    let finished_at = outcome.and_then(|_| run.events.last().map(|e| secs(e.at)));
    RunSummary {
        id: run.header.id.to_string(),
        kind: run.header.kind.to_string(),
        trigger: match run.header.trigger {
            Trigger::Automatic { .. } => "automatic",
            Trigger::Manual { .. } => "manual",
            Trigger::Drill { .. } => "drill",
        }
        .to_string(),
        from: run.header.plan.request.from.to_string(),
        to: run.header.plan.request.to.to_string(),
        created_at: secs(run.header.created_at),
        promoted_at,
        finished_at,
        outcome: outcome.map(|o| o.to_string()),
    }
}

/// When a run's verify step succeeded.
fn verified(run: &StoredRun) -> Option<Timestamp> {
    let state = run.state().ok()?;
    let verify = state.steps.get(&StepName::Verify)?;
    (verify.status == StepStatus::Succeeded).then_some(verify.finished_at?)
}

pub(super) fn build(input: Inputs<'_>) -> DrillReport {
    let run = input.runs.last();
    let state = run.and_then(|run| run.state().ok());
    let outcome = match (&state, run) {
        (None, _) | (_, None) => "no-run".to_string(),
        (Some(state), Some(_)) => match state.status() {
            RunStatus::Finished { outcome } => outcome.to_string(),
            _ if input.unfinished => "unfinished".to_string(),
            other => other.to_string(),
        },
    };
    let verified_at = run.and_then(verified);
    let run_started_at = run.map(|r| r.header.created_at);
    // RTO and RPO belong to the first run started after the outage that verified (a later
    // failback does not count against them); without an outage, to the last run.
    let recovery = input.outage_started_at.and_then(|start| {
        input
            .runs
            .iter()
            .filter(|r| r.header.created_at >= start)
            .find(|r| verified(r).is_some())
    });
    let recovered_at = recovery.and_then(verified);
    let rpo = recovery
        .or(run)
        .and_then(|r| data_loss_seconds(input.runs, r));
    let rto = match (input.outage_started_at, recovered_at) {
        (Some(start), Some(end)) => Some(end.since(start).as_millis() as f64 / 1000.0),
        _ => None,
    };
    let run_seconds = match (run_started_at, verified_at) {
        (Some(start), Some(end)) => Some(end.since(start).as_millis() as f64 / 1000.0),
        _ => None,
    };
    let rpo_target = input.config.plan.rpo_budget.as_secs_f64();
    let automatic = input
        .runs
        .iter()
        .find(|r| matches!(r.header.trigger, Trigger::Automatic { .. }));
    let tripped_at = automatic.map(|r| r.header.created_at);
    let trip_to_verified = automatic
        .and_then(|r| Some(verified(r)?.since(r.header.created_at).as_millis() as f64 / 1000.0));
    let mut alerts: Vec<String> = Vec::new();
    for (_, decision) in &input.decisions {
        if decision.alert().is_some() {
            let text = decision.to_string();
            if !alerts.contains(&text) {
                alerts.push(text);
            }
        }
    }
    let steps = state
        .as_ref()
        .map(|s| {
            s.steps
                .iter()
                .map(|(name, step)| StepReport {
                    name: *name,
                    status: match &step.status {
                        StepStatus::Succeeded
                            if step.outcome.as_ref().is_some_and(|o| o.degraded) =>
                        {
                            "degraded".into()
                        }
                        other => serde_json::to_value(other)
                            .ok()
                            .and_then(|v| {
                                v.get("status").and_then(|s| s.as_str()).map(str::to_string)
                            })
                            .unwrap_or_default(),
                    },
                    attempts: step.attempts,
                    started_at: step.started_at.map(secs),
                    ended_at: step.finished_at.map(secs),
                    summary: match &step.status {
                        StepStatus::Failed { error } => error.clone(),
                        StepStatus::Skipped { reason } => reason.clone(),
                        StepStatus::AwaitingApproval { reason, .. } => reason.clone(),
                        _ => step
                            .outcome
                            .as_ref()
                            .map(|o| o.summary.clone())
                            .unwrap_or_default(),
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    let writer_region = input.world.writer_region().map(|r| r.to_string());
    let dns_regions: Vec<String> = input
        .world
        .answering_regions()
        .iter()
        .map(|r| r.to_string())
        .collect();

    let mut expectations = Vec::new();
    let expect = &input.scenario.expect;
    let mut check = |what: &str, expected: String, actual: String, met: bool| {
        expectations.push(ExpectationResult {
            what: what.into(),
            expected,
            actual,
            met,
        });
    };
    if let Some(want) = &expect.outcome {
        check("outcome", want.clone(), outcome.clone(), *want == outcome);
    }
    if let Some(want) = &expect.writer_region {
        let actual = writer_region.clone().unwrap_or_else(|| "none".into());
        check(
            "writer_region",
            want.clone(),
            actual.clone(),
            *want == actual,
        );
    }
    if let Some(want) = &expect.dns_regions {
        let mut want = want.clone();
        want.sort();
        check(
            "dns_regions",
            want.join(","),
            dns_regions.join(","),
            want == dns_regions,
        );
    }
    if let Some(max) = expect.max_rto {
        let actual = rto
            .map(|s| fmt_duration(Duration::from_secs_f64(s)))
            .unwrap_or_else(|| "unknown".into());
        check(
            "rto",
            format!("<= {}", fmt_duration(max)),
            actual,
            rto.is_some_and(|s| s <= max.as_secs_f64()),
        );
    }
    if let Some(max) = expect.max_rpo {
        let actual = rpo
            .map(|s| fmt_duration(Duration::from_secs_f64(s)))
            .unwrap_or_else(|| "unknown".into());
        check(
            "rpo",
            format!("<= {}", fmt_duration(max)),
            actual,
            rpo.is_some_and(|s| s <= max.as_secs_f64()),
        );
    }
    if let Some(want) = expect.runs {
        let actual = input.runs.len();
        expectations.push(ExpectationResult {
            what: "runs".into(),
            expected: want.to_string(),
            actual: actual.to_string(),
            met: want == actual,
        });
    }
    if let Some(want) = &expect.alert {
        let found = alerts.iter().find(|a| a.contains(want.as_str()));
        expectations.push(ExpectationResult {
            what: "alert".into(),
            expected: format!("an alert containing `{want}`"),
            actual: found.cloned().unwrap_or_else(|| "no such alert".into()),
            met: found.is_some(),
        });
    }
    let passed = expectations.iter().all(|e| e.met);
    DrillReport {
        scenario: input.scenario.name.clone(),
        description: input.scenario.description.clone(),
        seed: input.seed,
        serial: input.serial,
        duration_seconds: input.scenario.duration.as_secs_f64(),
        outcome,
        run_id: run.map(|r| r.header.id.to_string()),
        writer_region,
        dns_regions,
        outage_started_at: input.outage_started_at.map(secs),
        run_started_at: run_started_at.map(secs),
        verified_at: verified_at.map(secs),
        recovered_at: recovered_at.map(secs),
        rto_seconds: rto,
        run_seconds,
        rpo_seconds: rpo,
        rto_target_seconds: RTO_TARGET.as_secs_f64(),
        rpo_target_seconds: rpo_target,
        rto_met: rto.map(|s| s <= RTO_TARGET.as_secs_f64()),
        rpo_met: rpo.map(|s| s <= rpo_target),
        steps,
        mutations: input
            .world
            .calls
            .iter()
            .map(|c| MutationReport {
                at: secs(c.at),
                operation: c.operation.clone(),
                region: c.region.clone(),
                resource: c.resource.clone(),
            })
            .collect(),
        timeline: input.timeline,
        runs: input.runs.iter().map(summarize).collect(),
        tripped_at: tripped_at.map(secs),
        trip_to_verified_seconds: trip_to_verified,
        decisions: input
            .decisions
            .iter()
            .map(|(at, decision)| DecisionReport {
                at: secs(*at),
                decision: decision.clone(),
                text: decision.to_string(),
            })
            .collect(),
        alerts,
        expectations,
        passed,
    }
}

fn clock(seconds: f64) -> String {
    let total = seconds.round() as u64;
    format!("T+{:02}:{:02}", total / 60, total % 60)
}

fn span(seconds: f64) -> String {
    fmt_duration(Duration::from_secs_f64(seconds.max(0.0)))
}

impl DrillReport {
    /// The report for people: headline, RTO/RPO against targets, a step chart, the timeline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Drill: {}{}",
            self.scenario,
            if self.serial {
                " (serial plan, as the seed's manual runbook)"
            } else {
                ""
            }
        );
        if !self.description.is_empty() {
            let _ = writeln!(out, "  {}", self.description);
        }
        let _ = writeln!(
            out,
            "Outcome: {}   writer: {}   DNS answers from: {}",
            self.outcome.to_uppercase(),
            self.writer_region.as_deref().unwrap_or("none"),
            if self.dns_regions.is_empty() {
                "nothing".to_string()
            } else {
                self.dns_regions.join(", ")
            }
        );
        let verdict = |met: Option<bool>| match met {
            Some(true) => "MET",
            Some(false) => "MISSED",
            None => "not measured",
        };
        match (self.rto_seconds, self.outage_started_at, self.recovered_at) {
            (Some(rto), Some(start), Some(end)) => {
                let _ = writeln!(
                    out,
                    "RTO {:<8} outage {} -> verified {}   target {}   {}",
                    span(rto),
                    clock(start),
                    clock(end),
                    span(self.rto_target_seconds),
                    verdict(self.rto_met)
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "RTO not measured (no outage of the writer's region, or no verified run)"
                );
            }
        }
        match self.rpo_seconds {
            Some(rpo) => {
                let _ = writeln!(
                    out,
                    "RPO {:<8} replication lag at promotion              target {}    {}",
                    span(rpo),
                    span(self.rpo_target_seconds),
                    verdict(self.rpo_met)
                );
            }
            None if self.run_id.is_some() => {
                let _ = writeln!(
                    out,
                    "RPO unknown: no replication lag was read before a promotion (never 0 unless measured)"
                );
            }
            None => {
                let _ = writeln!(out, "RPO not measured (no run)");
            }
        }
        if let (Some(trip), Some(took)) = (self.tripped_at, self.trip_to_verified_seconds) {
            let _ = writeln!(
                out,
                "Trip {} (automatic failover started); verified {} later",
                clock(trip),
                span(took)
            );
        }
        for alert in &self.alerts {
            let _ = writeln!(out, "{alert}");
        }
        if let (Some(run), Some(start), Some(end)) =
            (self.run_seconds, self.run_started_at, self.verified_at)
        {
            let _ = writeln!(
                out,
                "Run {:<8} started {} -> verified {}",
                span(run),
                clock(start),
                clock(end)
            );
        }
        if !self.steps.is_empty() {
            let first = self
                .steps
                .iter()
                .filter_map(|s| s.started_at)
                .fold(f64::MAX, f64::min);
            let last = self
                .steps
                .iter()
                .filter_map(|s| s.ended_at.or(s.started_at))
                .fold(0.0f64, f64::max);
            let width = 40.0;
            let scale = if last > first {
                width / (last - first)
            } else {
                1.0
            };
            let _ = writeln!(out, "\nSteps           start    end      took     status");
            for step in &self.steps {
                let (bar, times) = match (step.started_at, step.ended_at) {
                    (Some(s), Some(e)) => {
                        let lead = ((s - first) * scale).round() as usize;
                        let len = (((e - s) * scale).round() as usize).max(1);
                        (
                            format!("{}{}", " ".repeat(lead), "#".repeat(len)),
                            format!("{}  {}  {:<8}", clock(s), clock(e), span(e - s)),
                        )
                    }
                    (Some(s), None) => (
                        String::new(),
                        format!("{}  {:<7}  {:<8}", clock(s), "-", "-"),
                    ),
                    _ => (String::new(), format!("{:<7}  {:<7}  {:<8}", "-", "-", "-")),
                };
                let _ = writeln!(
                    out,
                    "{:<15} {times} {:<12} |{bar:<40}|",
                    step.name.as_str(),
                    step.status
                );
            }
            let _ = writeln!(out);
            for step in &self.steps {
                if !step.summary.is_empty() {
                    let _ = writeln!(out, "  {}: {}", step.name, step.summary);
                }
            }
        }
        let _ = writeln!(out, "\nTimeline");
        for entry in &self.timeline {
            let _ = writeln!(out, "  {}  {}", clock(entry.at_seconds), entry.text);
        }
        if !self.expectations.is_empty() {
            let _ = writeln!(out, "\nExpectations");
            for e in &self.expectations {
                let _ = writeln!(
                    out,
                    "  [{}] {}: expected {}, got {}",
                    if e.met { "pass" } else { "FAIL" },
                    e.what,
                    e.expected,
                    e.actual
                );
            }
            let _ = writeln!(
                out,
                "Drill {}",
                if self.passed { "PASSED" } else { "FAILED" }
            );
        }
        out
    }
}
