//! Drill scenario files: a duration, timed events that change the simulated world or run an
//! operator command, and optional expectations that make the drill pass or fail.
//!
//! Parsing and validation only; `super` runs scenarios.

use crate::core::ids::RegionName;
use crate::core::time::duration_text;
use crate::provider::sim::{FaultKind, OutageKind};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Unreadable.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Invalid, with the line.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// What an event does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// A region goes down.
    Outage {
        /// Which.
        region: RegionName,
        /// How.
        kind: OutageKind,
    },
    /// A region comes back.
    Recover {
        /// Which.
        region: RegionName,
    },
    /// A share of Route53's checkers see the region fail.
    CheckersFailing {
        /// Which.
        region: RegionName,
        /// Share, 0 to 1.
        share: f64,
    },
    /// A secondary's replication lag changes.
    Lag {
        /// Which.
        region: RegionName,
        /// New lag.
        lag: Duration,
    },
    /// The next `count` calls of `operation` fail (or are slow).
    Fault {
        /// API name.
        operation: String,
        /// What goes wrong.
        kind: FaultKind,
        /// How many calls.
        count: u32,
        /// For latency faults.
        latency: Duration,
    },
    /// Route53's control plane stops or starts answering.
    Route53ControlPlane {
        /// Up or down.
        up: bool,
    },
    /// dr itself loses (true) or regains (false) its network: every call and probe fails.
    Isolate {
        /// Cut off or not.
        cut_off: bool,
    },
    /// Only dr's probes are blocked (true) or unblocked (false); the APIs still answer.
    BlockProbes {
        /// Blocked or not.
        blocked: bool,
    },
    /// dr is cut off from one region (true) or reconnected (false): its probes and its calls
    /// to that region's endpoints get no answer, while Route53's checkers still reach it.
    Partition {
        /// Which.
        region: RegionName,
        /// Cut off or not.
        cut: bool,
    },
    /// The hosted zone's name servers (Route53's data plane) stop (false) or start (true)
    /// answering dr.
    Route53DataPlane {
        /// Up or down.
        up: bool,
    },
    /// Replication to a secondary stops (true: its lag grows as time passes) or flows again.
    Replication {
        /// The secondary.
        region: RegionName,
        /// Stalled or not.
        stalled: bool,
    },
    /// An operator command, as typed after `dr`.
    Command(OperatorCommand),
}

/// Operator commands a scenario can run, with the CLI's syntax.
#[derive(Clone, Debug, PartialEq, clap::Parser)]
#[command(no_binary_name = true, name = "command")]
pub enum OperatorCommand {
    /// `failover --to R [--from R]`.
    Failover {
        /// Target region.
        #[arg(long)]
        to: String,
        /// Writer's region (default: the current writer).
        #[arg(long)]
        from: Option<String>,
    },
    /// `switchover --to R [--from R]`.
    Switchover {
        /// Target region.
        #[arg(long)]
        to: String,
        /// Writer's region (default: the current writer).
        #[arg(long)]
        from: Option<String>,
    },
    /// `approve [--step S]`.
    Approve {
        /// Step to approve.
        #[arg(long)]
        step: Option<String>,
    },
    /// `skip STEP --reason R`.
    Skip {
        /// Step to skip.
        step: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `abort`.
    Abort,
    /// `unpause`: automation back on.
    Unpause,
    /// `ack`: clear the cooldown.
    Ack,
}

/// One timed event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Offset from the scenario's start.
    pub at: Duration,
    /// What happens.
    pub action: Action,
}

/// What a passing drill shows.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Run outcome (`succeeded`, `degraded`, `failed-verification`, `aborted`, `no-run`,
    /// `unfinished`).
    pub outcome: Option<String>,
    /// Writer's region at the end.
    pub writer_region: Option<String>,
    /// Regions DNS answers with at the end.
    pub dns_regions: Option<Vec<String>>,
    /// Largest acceptable RTO.
    #[serde(default, with = "optional_duration")]
    pub max_rto: Option<Duration>,
    /// Largest acceptable RPO.
    #[serde(default, with = "optional_duration")]
    pub max_rpo: Option<Duration>,
    /// How many runs the drill must have seen.
    pub runs: Option<usize>,
    /// Text one of the daemon's alerts must contain.
    pub alert: Option<String>,
}

mod optional_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "crate::core::time::duration_text")] Duration);
        Option::<Wrap>::deserialize(d).map(|o| o.map(|w| w.0))
    }
}

/// A parsed scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What it rehearses.
    pub description: String,
    /// How long it runs, in simulated time.
    pub duration: Duration,
    /// Seed of the simulated durations, if the scenario fixes one.
    pub seed: Option<u64>,
    /// Run the daemon: automatic detection and decision.
    pub daemon: bool,
    /// Override the config's pre-warm setting.
    pub pre_warm: Option<bool>,
    /// Regions the config must have for this scenario.
    pub requires_regions: Vec<String>,
    /// Events in time order.
    pub events: Vec<Event>,
    /// Pass criteria.
    pub expect: Expectations,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(with = "duration_text")]
    duration: Duration,
    seed: Option<u64>,
    #[serde(default)]
    daemon: bool,
    pre_warm: Option<bool>,
    #[serde(default)]
    requires_regions: Vec<String>,
    #[serde(default)]
    event: Vec<Spanned<RawEvent>>,
    #[serde(default)]
    expect: Expectations,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    #[serde(with = "duration_text")]
    at: Duration,
    outage: Option<RawOutage>,
    recover: Option<RawRegion>,
    checkers_failing: Option<RawShare>,
    lag: Option<RawLag>,
    fault: Option<RawFault>,
    route53_control_plane: Option<String>,
    isolate: Option<bool>,
    probes_blocked: Option<bool>,
    partition: Option<RawPartition>,
    route53_data_plane: Option<String>,
    replication: Option<RawReplication>,
    command: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartition {
    region: String,
    cut: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplication {
    region: String,
    stalled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutage {
    region: String,
    kind: OutageKind,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    region: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShare {
    region: String,
    share: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLag {
    region: String,
    #[serde(with = "duration_text")]
    lag: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    operation: String,
    kind: FaultKind,
    count: u32,
    #[serde(default, with = "optional_duration")]
    latency: Option<Duration>,
}

/// A switch written "up" or "down".
fn up_or_down(state: &str, key: &str) -> Result<bool, String> {
    match state {
        "up" => Ok(true),
        "down" => Ok(false),
        other => Err(format!("{key} is \"up\" or \"down\", not \"{other}\"")),
    }
}

/// Operations a fault can be injected into.
pub const FAULTABLE: &[&str] = &[
    "DescribeGlobalClusters",
    "FailoverGlobalCluster",
    "SwitchoverGlobalCluster",
    "DescribeNodegroup",
    "UpdateNodegroupConfig",
    "DescribeUpdate",
    "DescribeAutoScalingGroups",
    "UpdateAutoScalingGroup",
    "ListResourceRecordSets",
    "ChangeResourceRecordSets",
    "GetChange",
    "GetHealthCheckStatus",
    "GetMetricData",
];

/// The longest simulated time a drill runs: a day, so that a daemon drill ends in seconds.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The most events a scenario may have.
pub const MAX_EVENTS: usize = 10_000;

/// Reads a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses scenario text.
pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let invalid = |offset: usize, message: String| ScenarioError::Invalid {
        path: path.to_path_buf(),
        line: line_of(offset),
        message,
    };
    let raw: RawScenario = toml::from_str(text).map_err(|err| {
        invalid(
            err.span().map(|s| s.start).unwrap_or(0),
            err.message().trim().to_string(),
        )
    })?;
    let duration_at = text.find("duration").unwrap_or(0);
    if raw.duration.is_zero() {
        return Err(invalid(
            duration_at,
            "duration must be longer than zero".into(),
        ));
    }
    if raw.duration > MAX_DURATION {
        return Err(invalid(
            duration_at,
            format!(
                "duration {} is longer than a drill may run ({}); split the scenario into shorter ones",
                crate::core::time::fmt_duration(raw.duration),
                crate::core::time::fmt_duration(MAX_DURATION)
            ),
        ));
    }
    if raw.event.len() > MAX_EVENTS {
        return Err(invalid(
            raw.event[MAX_EVENTS].span().start,
            format!(
                "the scenario has {} events; a drill takes at most {MAX_EVENTS}",
                raw.event.len()
            ),
        ));
    }
    let mut events = Vec::new();
    for spanned in &raw.event {
        let offset = spanned.span().start;
        let e = spanned.get_ref();
        let mut actions = Vec::new();
        if let Some(o) = &e.outage {
            actions.push(Action::Outage {
                region: RegionName::new(&o.region),
                kind: o.kind,
            });
        }
        if let Some(r) = &e.recover {
            actions.push(Action::Recover {
                region: RegionName::new(&r.region),
            });
        }
        if let Some(c) = &e.checkers_failing {
            if !(0.0..=1.0).contains(&c.share) {
                return Err(invalid(
                    offset,
                    format!("checkers_failing.share {} must be between 0 and 1", c.share),
                ));
            }
            actions.push(Action::CheckersFailing {
                region: RegionName::new(&c.region),
                share: c.share,
            });
        }
        if let Some(l) = &e.lag {
            actions.push(Action::Lag {
                region: RegionName::new(&l.region),
                lag: l.lag,
            });
        }
        if let Some(f) = &e.fault {
            if !FAULTABLE.contains(&f.operation.as_str()) {
                return Err(invalid(
                    offset,
                    format!(
                        "fault.operation `{}` is not an operation dr calls; use one of: {}",
                        f.operation,
                        FAULTABLE.join(", ")
                    ),
                ));
            }
            if f.kind == FaultKind::Latency && f.latency.is_none() {
                return Err(invalid(
                    offset,
                    "a latency fault needs `latency`, such as \"10s\"".into(),
                ));
            }
            actions.push(Action::Fault {
                operation: f.operation.clone(),
                kind: f.kind,
                count: f.count,
                latency: f.latency.unwrap_or_default(),
            });
        }
        if let Some(state) = &e.route53_control_plane {
            let up = up_or_down(state, "route53_control_plane").map_err(|m| invalid(offset, m))?;
            actions.push(Action::Route53ControlPlane { up });
        }
        if let Some(cut_off) = e.isolate {
            actions.push(Action::Isolate { cut_off });
        }
        if let Some(blocked) = e.probes_blocked {
            actions.push(Action::BlockProbes { blocked });
        }
        if let Some(p) = &e.partition {
            actions.push(Action::Partition {
                region: RegionName::new(&p.region),
                cut: p.cut,
            });
        }
        if let Some(state) = &e.route53_data_plane {
            let up = up_or_down(state, "route53_data_plane").map_err(|m| invalid(offset, m))?;
            actions.push(Action::Route53DataPlane { up });
        }
        if let Some(r) = &e.replication {
            actions.push(Action::Replication {
                region: RegionName::new(&r.region),
                stalled: r.stalled,
            });
        }
        if let Some(command) = &e.command {
            use clap::Parser;
            let words = command.split_whitespace().map(str::to_string);
            let parsed = OperatorCommand::try_parse_from(words).map_err(|err| {
                let first = err.to_string();
                let first = first.lines().next().unwrap_or("").trim_start_matches("error: ").to_string();
                invalid(offset, format!("command `{command}`: {first}; drills run failover, switchover, approve, skip, pause, unpause, ack, resume and abort"))
            })?;
            if let OperatorCommand::Skip { step, .. }
            | OperatorCommand::Approve { step: Some(step) } = &parsed
                && crate::core::ids::StepName::parse(step).is_none()
            {
                return Err(invalid(
                    offset,
                    format!("command `{command}`: `{step}` is not a step"),
                ));
            }
            actions.push(Action::Command(parsed));
        }
        if actions.len() != 1 {
            return Err(invalid(
                offset,
                format!(
                    "each [[event]] does exactly one thing (outage, recover, checkers_failing, lag, fault, route53_control_plane, route53_data_plane, isolate, probes_blocked, partition, replication or command); this one has {}",
                    actions.len()
                ),
            ));
        }
        if e.at > raw.duration {
            return Err(invalid(
                offset,
                "the event is after the scenario's duration".into(),
            ));
        }
        events.push(Event {
            at: e.at,
            action: actions.remove(0),
        });
    }
    events.sort_by_key(|e| e.at);
    Ok(Scenario {
        name: raw.name,
        description: raw.description,
        duration: raw.duration,
        seed: raw.seed,
        daemon: raw.daemon,
        pre_warm: raw.pre_warm,
        requires_regions: raw.requires_regions,
        events,
        expect: raw.expect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Scenario, ScenarioError> {
        parse(text, Path::new("s.toml"))
    }

    #[test]
    fn events_parse_and_sort_by_time() {
        let s = check(
            r#"
name = "x"
duration = "40m"
[[event]]
at = "7m"
command = "failover --to us-west-2"
[[event]]
at = "2m"
outage = { region = "us-east-1", kind = "full" }
[expect]
outcome = "succeeded"
max_rto = "15m"
"#,
        )
        .unwrap();
        assert_eq!(s.events.len(), 2);
        assert_eq!(s.events[0].at, Duration::from_secs(120));
        assert_eq!(s.expect.max_rto, Some(Duration::from_secs(900)));
    }

    #[test]
    fn an_event_with_two_actions_is_refused_with_its_line() {
        let err = check("name = \"x\"\nduration = \"5m\"\n[[event]]\nat = \"1m\"\ncommand = \"abort\"\nrecover = { region = \"us-east-1\" }\n").unwrap_err();
        let ScenarioError::Invalid { line, message, .. } = err else {
            panic!()
        };
        assert!(message.contains("exactly one thing"), "{message}");
        assert!(line >= 3, "{line}");
    }

    #[test]
    fn commands_are_parsed_when_the_scenario_is_read() {
        let ok = check("name = \"x\"\nduration = \"5m\"\n[[event]]\nat = \"1m\"\ncommand = \"failover --to us-west-2\"\n").unwrap();
        assert!(
            matches!(&ok.events[0].action, Action::Command(OperatorCommand::Failover { to, from: None }) if to == "us-west-2")
        );
        let err = check("name = \"x\"\nduration = \"5m\"\n[[event]]\nat = \"1m\"\ncommand = \"failover --too us-west-2\"\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("command `failover --too us-west-2`"),
            "{err}"
        );
        let err = check("name = \"x\"\nduration = \"5m\"\n[[event]]\nat = \"1m\"\ncommand = \"skip promote --reason x\"\n").unwrap_err();
        assert!(err.to_string().contains("not a step"), "{err}");
    }

    #[test]
    fn unknown_operations_and_keys_are_refused() {
        let err = check("name = \"x\"\nduration = \"5m\"\n[[event]]\nat = \"1m\"\nfault = { operation = \"DeleteEverything\", kind = \"throttle\", count = 1 }\n").unwrap_err();
        assert!(
            err.to_string().contains("not an operation dr calls"),
            "{err}"
        );
        let err = check("name = \"x\"\nduration = \"5m\"\nsurprise = 1\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn a_drill_that_would_run_for_days_or_forever_is_refused() {
        let err = check("name = \"x\"\ndaemon = true\nduration = \"99999h\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains(".toml:3:"), "{text}");
        assert!(text.contains("longer than a drill may run"), "{text}");
        check("name = \"x\"\nduration = \"24h\"\n").expect("a day is allowed");
        let mut many = String::from("name = \"x\"\nduration = \"1h\"\n");
        for _ in 0..=MAX_EVENTS {
            many.push_str("[[event]]\nat = \"1m\"\nisolate = false\n");
        }
        let err = check(&many).unwrap_err().to_string();
        assert!(err.contains("at most 10000"), "{err}");
    }
}
