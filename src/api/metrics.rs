//! Prometheus metrics in the text exposition format, built from the daemon's last status and the
//! store. Uses the seed's names where they fit (`route53_health_check_status`,
//! `postgres_replication_lag_seconds`) and `dr_*` for the rest. Formatting only.
//!
//! A scrape is unauthenticated, so it must cost little: the totals over past runs are read from
//! the store at most once per `RUN_TOTALS_TTL` and kept in a `Cache`; every other figure comes
//! from the daemon's status in memory and two single-key reads.

use super::{ApiError, ApiState};
use crate::core::health::Observation;
use crate::core::run::{StepStatus, Trigger};
use std::collections::BTreeMap;
use std::fmt::Write;

/// How long the totals over past runs are served before they are read again.
pub const RUN_TOTALS_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs by (kind, trigger, result), and step durations by (step, result): (sum, count).
#[derive(Clone, Default)]
struct RunTotals {
    runs: BTreeMap<(String, String, String), u64>,
    steps: BTreeMap<(String, String), (f64, u64)>,
}

/// The last totals over past runs, and when they were read.
#[derive(Default)]
pub struct Cache(std::sync::Mutex<Option<(std::time::Instant, RunTotals)>>);

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

pub(super) fn render(state: &ApiState, cache: &Cache) -> Result<String, ApiError> {
    let mut out = String::new();
    let status = state.daemon.status();
    let store = &state.engine.store;

    family(
        &mut out,
        "route53_health_check_status",
        "gauge",
        "Route53 health check of the region as dr last read it: 1 healthy, 0 unhealthy; absent while unknown.",
    );
    family(
        &mut out,
        "dr_probe_status",
        "gauge",
        "dr's own probe of the region's /health: 1 healthy, 0 unhealthy; absent while unknown.",
    );
    family(
        &mut out,
        "postgres_replication_lag_seconds",
        "gauge",
        "Aurora global replication lag from the writer's region (source) to a secondary (target).",
    );
    family(
        &mut out,
        "dr_region_state",
        "gauge",
        "1 for the region's current detection state.",
    );
    if let Some(status) = &status {
        for region in &status.regions {
            let name = label(region.region.as_str());
            let as_number = |o: Option<Observation>| match o {
                Some(Observation::Healthy) => Some(1),
                Some(Observation::Unhealthy) => Some(0),
                _ => None,
            };
            if let Some(v) = as_number(region.route53) {
                let _ = writeln!(out, "route53_health_check_status{{region=\"{name}\"}} {v}");
            }
            if let Some(v) = as_number(region.probe) {
                let _ = writeln!(out, "dr_probe_status{{region=\"{name}\"}} {v}");
            }
            if let (Some(lag), Some(writer)) = (region.lag_seconds, &status.writer) {
                let _ = writeln!(
                    out,
                    "postgres_replication_lag_seconds{{source=\"{}\",target=\"{name}\"}} {lag}",
                    label(writer.as_str())
                );
            }
            for state in ["healthy", "suspect", "failed", "unknown"] {
                let v = u8::from(region.state == state);
                let _ = writeln!(
                    out,
                    "dr_region_state{{region=\"{name}\",state=\"{state}\"}} {v}"
                );
            }
        }
    }

    family(
        &mut out,
        "dr_decision",
        "gauge",
        "1 for the daemon's current decision.",
    );
    if let Some(status) = &status {
        let kind = serde_json::to_value(&status.decision)
            .ok()
            .and_then(|v| {
                let decision = v.get("decision")?.as_str()?.to_string();
                Some(match v.get("hold").and_then(|h| h.as_str()) {
                    Some(hold) => format!("{decision}:{hold}"),
                    None => decision,
                })
            })
            .unwrap_or_default();
        let _ = writeln!(out, "dr_decision{{decision=\"{}\"}} 1", label(&kind));
        let _ = writeln!(
            out,
            "# HELP dr_last_observation_timestamp_seconds When the daemon last observed every region."
        );
        let _ = writeln!(out, "# TYPE dr_last_observation_timestamp_seconds gauge");
        let _ = writeln!(
            out,
            "dr_last_observation_timestamp_seconds {}",
            status.at.millis() as f64 / 1000.0
        );
    }

    family(
        &mut out,
        "dr_leader",
        "gauge",
        "1 while this daemon holds the leader lease and acts, 0 while it stands by.",
    );
    if let Some(status) = &status {
        let leads = status.lease.as_ref().is_none_or(|l| l.role == "leader");
        let _ = writeln!(
            out,
            "dr_leader{{daemon=\"{}\",region=\"{}\"}} {}",
            label(&status.daemon),
            label(
                &status
                    .region
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_default()
            ),
            u8::from(leads)
        );
        family(
            &mut out,
            "dr_lease_epoch",
            "gauge",
            "The leader lease's epoch as this daemon last saw it: it grows by one at every takeover.",
        );
        let _ = writeln!(
            out,
            "dr_lease_epoch {}",
            status.lease.as_ref().and_then(|l| l.epoch).unwrap_or(0)
        );
    }
    let daemons = crate::daemon::DaemonStatus::read_all(store.as_ref()).unwrap_or_default();
    family(
        &mut out,
        "dr_daemons",
        "gauge",
        "Daemons sharing the store, by the role each last published.",
    );
    for role in ["leader", "standby"] {
        let count = daemons
            .iter()
            .filter(|d| d.lease.as_ref().map_or("leader", |l| l.role.as_str()) == role)
            .count();
        let _ = writeln!(out, "dr_daemons{{role=\"{role}\"}} {count}");
    }

    let automation = store.automation()?;
    family(
        &mut out,
        "dr_automation_paused",
        "gauge",
        "1 while automatic failover is paused.",
    );
    let _ = writeln!(out, "dr_automation_paused {}", u8::from(automation.paused));
    family(
        &mut out,
        "dr_dns_follow_ups_pending",
        "gauge",
        "Record changes a run left for when Route53's control plane answers again (its data plane already answered as planned); the daemon makes them and audits each.",
    );
    let _ = writeln!(
        out,
        "dr_dns_follow_ups_pending {}",
        status.as_ref().map(|s| s.follow_ups.len()).unwrap_or(0)
    );
    family(
        &mut out,
        "dr_active_run",
        "gauge",
        "1 while a run is unfinished.",
    );
    let _ = writeln!(
        out,
        "dr_active_run {}",
        u8::from(store.active_run()?.is_some())
    );

    let totals = {
        let mut cached = cache.0.lock().unwrap_or_else(|p| p.into_inner());
        match &*cached {
            Some((at, totals)) if at.elapsed() < RUN_TOTALS_TTL => totals.clone(),
            _ => {
                let totals = run_totals(state)?;
                *cached = Some((std::time::Instant::now(), totals.clone()));
                totals
            }
        }
    };
    let RunTotals { runs, steps } = totals;
    family(
        &mut out,
        "dr_runs_total",
        "counter",
        "Runs by kind, trigger and result (the last 1000 runs in the store, read at most once a minute).",
    );
    for ((kind, trigger, result), count) in &runs {
        let _ = writeln!(
            out,
            "dr_runs_total{{kind=\"{kind}\",trigger=\"{trigger}\",result=\"{result}\"}} {count}"
        );
    }
    family(
        &mut out,
        "dr_step_duration_seconds",
        "summary",
        "Time from a step's first start to its end, by step and result.",
    );
    for ((step, result), (sum, count)) in &steps {
        let _ = writeln!(
            out,
            "dr_step_duration_seconds_sum{{step=\"{step}\",result=\"{result}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "dr_step_duration_seconds_count{{step=\"{step}\",result=\"{result}\"}} {count}"
        );
    }
    Ok(out)
}

/// The totals over the last 1000 runs, from the store.
fn run_totals(state: &ApiState) -> Result<RunTotals, ApiError> {
    let store = &state.engine.store;
    let mut runs: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut steps: BTreeMap<(String, String), (f64, u64)> = BTreeMap::new();
    for header in store.list_runs(1000)? {
        let Some(stored) = store.load_run(&header.id)? else {
            continue;
        };
        let Ok(run_state) = stored.state() else {
            continue;
        };
        let trigger = match header.trigger {
            Trigger::Automatic { .. } => "automatic",
            Trigger::Manual { .. } => "manual",
            Trigger::Drill { .. } => "drill",
        };
        let result = run_state
            .outcome
            .map(|o| o.to_string())
            .unwrap_or_else(|| "unfinished".into());
        *runs
            .entry((header.kind.to_string(), trigger.to_string(), result))
            .or_default() += 1;
        for (name, step) in &run_state.steps {
            if let (Some(start), Some(end)) = (step.started_at, step.finished_at) {
                let result = match step.status {
                    StepStatus::Succeeded => "succeeded",
                    StepStatus::Failed { .. } => "failed",
                    StepStatus::Skipped { .. } => "skipped",
                    _ => continue,
                };
                let entry = steps
                    .entry((name.to_string(), result.to_string()))
                    .or_default();
                entry.0 += end.since(start).as_secs_f64();
                entry.1 += 1;
            }
        }
    }
    Ok(RunTotals { runs, steps })
}
