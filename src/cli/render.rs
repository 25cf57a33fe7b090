//! Text and JSON shapes of the CLI's output. Formatting only: no I/O, no decisions.
//!
//! Every free text that reaches a terminal (reasons, errors, summaries, actors, the daemon's
//! reason) goes through `safe` first: control characters (newlines included) and the Unicode
//! bidirectional and invisible formatting characters are escaped, so a stored text can neither
//! forge a line nor send escape sequences. JSON output is left exact.

use crate::core::health::Observation;
use crate::core::run::StepStatus;
use crate::core::time::{Timestamp, fmt_duration};
use crate::provider::sim::World;
use crate::store::{AuditEntry, StoredRun};
use serde::Serialize;
use std::fmt::Write;

/// Whether `c` must not reach a terminal as itself: a control character, or a character that
/// reorders or hides text (bidirectional overrides, isolates and marks, zero-width characters,
/// line and paragraph separators).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// `text` for one line of a terminal: every unsafe character escaped (`\n`, `\u{1b}`,
/// `\u{202e}`).
pub fn safe(text: &str) -> String {
    if !text.chars().any(unsafe_char) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A block of text for a terminal: its own line breaks kept, every other unsafe character
/// escaped. For whole reports whose fields were not escaped one by one.
pub fn safe_block(text: &str) -> String {
    text.split('\n').map(safe).collect::<Vec<_>>().join("\n")
}

/// One region in `dr status`.
#[derive(Debug, Serialize)]
pub struct RegionStatus {
    pub name: String,
    pub priority: u32,
    pub writer: bool,
    pub route53: Observation,
    pub checkers: Option<String>,
    /// Route53's verdict through its data plane (the region's health record over DNS).
    pub route53_dns: Observation,
    pub probe: Observation,
    pub probe_detail: String,
    pub lag_seconds: Option<f64>,
    pub lag_alert: bool,
    pub in_dns: Option<bool>,
}

/// `dr status`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub now: Timestamp,
    pub backend: String,
    pub writer_region: Option<String>,
    pub regions: Vec<RegionStatus>,
    pub active_run: Option<crate::api::view::RunView>,
    pub last_run: Option<String>,
    pub executor: Option<String>,
    /// The daemon's last published status, if a daemon ever ran on this store.
    pub daemon: Option<crate::daemon::DaemonStatus>,
    /// Automation switches.
    pub automation: crate::core::decision::Automation,
    /// The leader lease as stored.
    pub lease: Option<crate::core::lease::LeaseRecord>,
    /// Every daemon sharing the store, as each last published.
    pub daemons: Vec<crate::api::view::DaemonView>,
    /// Why some of the world could not be read (each distinct error once).
    pub problems: Vec<String>,
}

pub fn status_text(status: &Status, active: Option<&StoredRun>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Writer: {}   (backend {}, {})",
        status
            .writer_region
            .as_deref()
            .unwrap_or("UNKNOWN: no region answered"),
        status.backend,
        status.now
    );
    let _ = writeln!(
        out,
        "\n{:<16} {:<4} {:<20} {:<22} {:<14} {:<10} health record (DNS)",
        "region", "prio", "Route53 checkers", "/health (dr probe)", "lag", "DNS record"
    );
    for r in &status.regions {
        let lag = match (r.writer, r.lag_seconds) {
            (true, _) => "writer".to_string(),
            (false, Some(s)) => format!(
                "{}{}",
                fmt_duration(std::time::Duration::from_secs_f64(s)),
                if r.lag_alert { " ALERT" } else { "" }
            ),
            (false, None) => "unknown".to_string(),
        };
        let dns = match r.in_dns {
            Some(true) => "present",
            Some(false) => "absent",
            None => "unknown",
        };
        let _ = writeln!(
            out,
            "{:<16} {:<4} {:<20} {:<22} {:<14} {:<10} {}",
            r.name,
            r.priority,
            format!("{} {}", r.route53, r.checkers.as_deref().unwrap_or("")),
            format!("{} ({})", r.probe, safe(&r.probe_detail)),
            lag,
            dns,
            r.route53_dns
        );
    }
    if !status.problems.is_empty() {
        let _ = writeln!(out, "\nCould not read:");
        for problem in &status.problems {
            let _ = writeln!(out, "  - {}", safe(problem));
        }
    }
    match active {
        Some(run) => {
            let _ = writeln!(out, "\nActive run:");
            out.push_str(&run_summary(run));
        }
        None => {
            let _ = writeln!(
                out,
                "\nNo active run{}",
                status
                    .last_run
                    .as_ref()
                    .map(|r| format!("; last run {r}"))
                    .unwrap_or_default()
            );
        }
    }
    if let Some(executor) = &status.executor {
        let _ = writeln!(out, "Executor: {}", safe(executor));
    }
    if status.automation.paused {
        let _ = writeln!(
            out,
            "Automation: PAUSED by {} ({}); `dr unpause` turns it back on",
            status
                .automation
                .changed_by
                .as_ref()
                .map(|a| safe(a.as_str()))
                .unwrap_or_default(),
            safe(&status.automation.reason.clone().unwrap_or_default())
        );
    }
    match &status.lease {
        Some(lease) if !lease.released => {
            let _ = writeln!(
                out,
                "Leader: {}{}, lease epoch {} (renewed {} times)",
                safe(&lease.holder),
                lease
                    .region
                    .as_ref()
                    .map(|r| format!(" ({})", safe(r.as_str())))
                    .unwrap_or_default(),
                lease.epoch,
                lease.beat
            );
        }
        Some(lease) => {
            let _ = writeln!(
                out,
                "Leader: none; {} released the lease (epoch {}), and the next daemon takes it at once",
                safe(&lease.holder),
                lease.epoch
            );
        }
        None => {}
    }
    for standby in status.daemons.iter().filter(|d| {
        d.role != "leader"
            && status
                .lease
                .as_ref()
                .is_none_or(|l| l.released || l.holder != d.daemon)
    }) {
        let _ = writeln!(
            out,
            "Standby: {}{}, last published {} ago",
            safe(&standby.daemon),
            standby
                .region
                .as_ref()
                .map(|r| format!(" ({})", safe(r.as_str())))
                .unwrap_or_default(),
            fmt_duration(status.now.since(standby.observed_at))
        );
    }
    match &status.daemon {
        Some(daemon) => {
            let age = fmt_duration(status.now.since(daemon.at));
            let _ = writeln!(out, "Daemon decision ({age} ago): {}", safe(&daemon.reason));
            if !daemon.regions.is_empty() {
                let states: Vec<String> = daemon
                    .regions
                    .iter()
                    .map(|r| safe(&format!("{} {}", r.region, r.state)))
                    .collect();
                let _ = writeln!(out, "Daemon's view: {}", states.join(", "));
            }
            for f in &daemon.follow_ups {
                let _ = writeln!(
                    out,
                    "DNS follow-up (run {}, since {}): {} must answer {}; waits for Route53's control plane: {}",
                    safe(f.run.as_str()),
                    f.since,
                    safe(&f.record_name),
                    safe(&f.serving.join(", ")),
                    safe(f.last_attempt.as_deref().unwrap_or(&f.reason))
                );
            }
        }
        None => {
            let _ = writeln!(out, "Daemon: none has run on this store");
        }
    }
    out
}

fn step_status(status: &StepStatus) -> String {
    match status {
        StepStatus::Pending => "pending".into(),
        StepStatus::AwaitingApproval { .. } => "awaiting-approval".into(),
        StepStatus::Running => "running".into(),
        StepStatus::Succeeded => "succeeded".into(),
        StepStatus::Failed { .. } => "FAILED".into(),
        StepStatus::Interrupted => "interrupted".into(),
        StepStatus::Skipped { .. } => "skipped".into(),
    }
}

/// A run's headline and steps.
pub fn run_summary(run: &StoredRun) -> String {
    let mut out = String::new();
    let header = &run.header;
    let status = run
        .state()
        .map(|s| s.status().to_string())
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    let _ = writeln!(
        out,
        "run {}: {}{} {} -> {} ({}) created {}: {}",
        safe(header.id.as_str()),
        if header.dry_run { "dry-run " } else { "" },
        header.kind,
        header.plan.request.from,
        header.plan.request.to,
        safe(&header.trigger.to_string()),
        header.created_at,
        safe(&status)
    );
    if let Ok(state) = run.state() {
        for (name, step) in &state.steps {
            let took = match (step.started_at, step.finished_at) {
                (Some(s), Some(e)) if e >= s => fmt_duration(e.since(s)),
                _ => "-".into(),
            };
            let detail = match &step.status {
                StepStatus::Failed { error } => error.clone(),
                StepStatus::Skipped { reason } | StepStatus::AwaitingApproval { reason, .. } => {
                    reason.clone()
                }
                _ => step
                    .outcome
                    .as_ref()
                    .map(|o| o.summary.clone())
                    .unwrap_or_default(),
            };
            let _ = writeln!(
                out,
                "  {:<13} {:<18} {:<8} {}",
                name.as_str(),
                step_status(&step.status),
                took,
                safe(&detail)
            );
            if let Some(outcome) = &step.outcome {
                for op in &outcome.would_mutate {
                    let _ = writeln!(out, "  {:<13} would call {}", "", safe(&op.to_string()));
                }
            }
        }
    }
    out
}

/// One run with its audit trail.
pub fn run_detail(run: &StoredRun, audit: &[AuditEntry]) -> String {
    let mut out = run_summary(run);
    let _ = writeln!(out, "\nAudit trail:");
    for entry in audit {
        let reason = if entry.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", safe(&entry.reason))
        };
        let _ = writeln!(
            out,
            "  {}  {:<14} {}{reason}",
            entry.at,
            safe(entry.actor.as_str()),
            safe(&entry.action)
        );
    }
    out
}

/// `dr runs`.
pub fn runs_table(rows: &[crate::api::view::RunView]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:<11} {:<24} {:<22} status",
        "run", "kind", "from -> to", "created"
    );
    for row in rows {
        let status = row
            .status
            .as_ref()
            .map(|st| {
                let value = serde_json::to_value(st).unwrap_or_default();
                let kind = value.get("status").and_then(|v| v.as_str()).unwrap_or("");
                match value.get("outcome").and_then(|v| v.as_str()) {
                    Some(outcome) => safe(&format!("{kind}: {outcome}")),
                    None => safe(kind),
                }
            })
            .unwrap_or_default();
        let dry = if row.dry_run { " (dry)" } else { "" };
        let _ = writeln!(
            out,
            "{:<28} {:<11} {:<24} {:<22} {}",
            safe(row.id.as_str()),
            format!("{}{dry}", row.kind),
            safe(&format!("{} -> {}", row.from, row.to)),
            row.created_at,
            status
        );
    }
    out
}

/// `dr sim show`.
pub fn world_text(world: &World, now: Timestamp) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "simulated time {now} (x{} wall speed); writer: {}",
        world.time_scale,
        world
            .writer_region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "none".into())
    );
    if let Some(p) = &world.promotion {
        let _ = writeln!(
            out,
            "promotion in flight: {} -> {} completes {}",
            p.from, p.to, p.completes_at
        );
    }
    for (name, region) in &world.regions {
        let outage = region
            .outage
            .map(|o| format!("{o:?} outage"))
            .unwrap_or_else(|| "up".into());
        let _ = writeln!(
            out,
            "{name}: {outage}; {:.0}% checkers failing; lag {}",
            region.failing_checkers * 100.0,
            fmt_duration(std::time::Duration::from_millis(region.lag_ms))
        );
        for (group, ng) in &region.nodegroups {
            let _ = writeln!(
                out,
                "  node group {group}: {} ({} ready)",
                ng.sizes, ng.ready_nodes
            );
        }
        for (group, asg) in &region.asgs {
            let _ = writeln!(
                out,
                "  auto scaling group {group}: {} ({} InService)",
                asg.sizes, asg.in_service
            );
        }
    }
    let answering: Vec<String> = world
        .answering_regions()
        .iter()
        .map(|r| r.to_string())
        .collect();
    let _ = writeln!(
        out,
        "DNS records: {}; answering: {}; Route53 control plane {}",
        world
            .records
            .iter()
            .map(|r| r.set_identifier.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        answering.join(", "),
        if world.dns_control_plane_up {
            "up"
        } else {
            "DOWN"
        }
    );
    let _ = writeln!(out, "mutating calls so far: {}", world.calls.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::{Actor, RunId};
    use crate::core::time::Timestamp;

    const FORGED: &str = "east is down\n2026-12-03T12:00:00Z  alice          AUDIT run approved\u{1b}[2J\u{202e}evil\u{2066}";

    #[test]
    fn unsafe_characters_are_escaped_and_safe_text_is_kept() {
        assert_eq!(safe("plain text: ok"), "plain text: ok");
        assert_eq!(safe("a\nb"), "a\\nb");
        assert_eq!(safe("\u{1b}[31m"), "\\u{1b}[31m");
        assert_eq!(safe("x\u{202e}y\u{2069}"), "x\\u{202e}y\\u{2069}");
        assert_eq!(safe("\u{9b}\u{7f}"), "\\u{9b}\\u{7f}");
        assert_eq!(safe_block("a\nb\u{1b}"), "a\nb\\u{1b}");
    }

    #[test]
    fn a_reason_cannot_forge_an_audit_line_or_reach_the_terminal_raw() {
        let header = crate::store::contract::header("r-1");
        let run = StoredRun {
            header,
            events: vec![],
        };
        let audit = vec![AuditEntry {
            version: 1,
            at: Timestamp(0),
            actor: Actor::new("mallory\u{202e}"),
            run: Some(RunId::new("r-1")),
            action: "run paused".into(),
            reason: FORGED.into(),
        }];
        let text = run_detail(&run, &audit);
        for bad in ['\u{1b}', '\u{202e}', '\u{2066}'] {
            assert!(!text.contains(bad), "{text}");
        }
        assert!(
            !text
                .lines()
                .any(|l| l.trim_start().starts_with("2026-12-03T12:00:00Z")),
            "a line was forged:\n{text}"
        );
        // JSON stays exact.
        let json = serde_json::to_value(&audit).unwrap();
        assert_eq!(json[0]["reason"], FORGED);
    }
}
