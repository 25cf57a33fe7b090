//! Safety and liveness of automatic failover, as properties over 10,000 seeded random scenarios
//! run by the real daemon, engine and simulator in virtual time.
//!
//! Each scenario draws outages (full or application), Route53 checker trouble, periods when dr
//! is cut off from everything (some hiding a brief recovery of the writer's region), Route53
//! control-plane outages, replication lag that changes while a promotion is being retried,
//! throttling and 5xx on every read and on the promotion, two or three regions, pre-warm on or
//! off, and operators who pause and unpause (during pre-warm and during runs), abort (at any
//! step), resume, approve (early and late) and acknowledge the cooldown. The checker keeps the
//! ground truth of the scenario and everything the drill left behind (every mutating call with
//! the target's true lag, every run's log, every round the daemon observed), and holds the daemon
//! to:
//! - safety: an automatic failover starts only from the writer's region, only when that region
//!   was down for the whole failure window and both signals observed it unhealthy in every round
//!   of it, only toward a healthy target, and never while another run is unfinished;
//! - the RPO budget: no promotion whose target lag (read immediately before the call) exceeds
//!   the budget without an approval given for that figure;
//! - pause: no mutating call while automation is paused (unless an operator resumed the run),
//!   and no call by a run after its abort was requested;
//! - cooldown: no automatic failover within the cooldown of any run that issued a promotion,
//!   however that run ended, unless an operator acknowledged it;
//! - RPO: a reported RPO is a lag some promotion measured, or it is unknown, never made up;
//! - liveness: every outage of the writer's region that lasts past the window, with a healthy
//!   target, dr able to see, nothing injected, automation on and no cooldown, starts a failover
//!   within the window plus two poll intervals of the outage start.
//!
//! Event times fall 3 s after a poll tick, so "what the daemon could see at its tick" is exact.
//! The counts of scenarios that exercised each rule are printed and recorded in BENCHMARKS.md.

mod common;

use dr::config::Config;
use dr::core::detect::Signal;
use dr::core::health::Observation;
use dr::core::ids::{RegionName, StepName};
use dr::core::run::{RunEvent, RunState};
use dr::drill::scenario::{Action, Event, Expectations, OperatorCommand, Scenario};
use dr::drill::{self, DrillOptions, DrillReport, Evidence};
use dr::provider::sim::{FaultKind, OutageKind};
use std::time::Duration;

const WINDOW: f64 = 300.0;
const POLL: f64 = 10.0;
const DURATION: f64 = 1800.0;
const BUDGET_MS: u64 = 300_000;
const COOLDOWN: f64 = 3600.0;

/// Reads the daemon makes, each of which a scenario may throttle or fail.
const READS: [&str; 8] = [
    "DescribeGlobalClusters",
    "GetHealthCheckStatus",
    "GetMetricData",
    "DescribeNodegroup",
    "DescribeUpdate",
    "DescribeAutoScalingGroups",
    "ListResourceRecordSets",
    "GetChange",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// A time `lo..hi` seconds, 3 s after a tick.
    fn time(&mut self, lo: f64, hi: f64) -> f64 {
        let ticks = ((hi - lo) / POLL).max(1.0) as u64;
        lo + (self.below(ticks) as f64) * POLL + 3.0
    }
}

#[derive(Default, Debug)]
struct Truth {
    regions: Vec<String>,
    outages: Vec<(String, f64, f64)>,
    checkers: Vec<(String, f64, f64, f64)>,
    isolated: Vec<(f64, f64)>,
    probes_blocked: Vec<(f64, f64)>,
    route53_down: Vec<(f64, f64)>,
    /// dr cut off from the writer's region alone, Route53's checkers still reaching it.
    partitions: Vec<(f64, f64)>,
    /// The hosted zone's name servers not answering dr.
    data_plane_down: Vec<(f64, f64)>,
    /// Replication to a secondary stalled (never together with a partition: see `make`).
    stalls: Vec<(String, f64, f64)>,
    paused: Vec<(f64, f64)>,
    /// Operator commands other than pause and unpause: (time, command).
    commands: Vec<(f64, &'static str)>,
    /// Injected faults: (time, operation).
    faults: Vec<(f64, String)>,
    /// A brief recovery of the writer's region while dr was cut off.
    hidden_recovery: bool,
}

/// Route53's verdict with the simulator's 16 checkers: healthy when more than 18% of them are.
fn route53_unhealthy(failing_share: f64) -> bool {
    let checkers = dr::provider::sim::world::CHECKERS;
    let failing = (failing_share * f64::from(checkers)).round() as u32;
    !dr::core::health::route53_counts_healthy(checkers - failing.min(checkers), checkers)
}

fn overlaps(intervals: &[(f64, f64)], a: f64, b: f64) -> bool {
    intervals.iter().any(|(s, e)| *s < b && a < *e)
}

impl Truth {
    fn down_at(&self, region: &str, t: f64) -> bool {
        self.outages
            .iter()
            .any(|(r, s, e)| r == region && *s <= t && t < *e)
    }
    fn checkers_share_at(&self, region: &str, t: f64) -> f64 {
        self.checkers
            .iter()
            .filter(|(r, s, e, _)| r == region && *s <= t && t < *e)
            .map(|(_, _, _, share)| *share)
            .fold(0.0, f64::max)
    }
    /// Healthy by ground truth throughout [a, b].
    fn healthy_throughout(&self, region: &str, a: f64, b: f64) -> bool {
        !self
            .outages
            .iter()
            .any(|(r, s, e)| r == region && *s < b && a < *e)
            && !self
                .checkers
                .iter()
                .any(|(r, s, e, share)| r == region && *s < b && a < *e && *share >= 0.5)
    }
    /// The pause in force at `t`, if any: its start.
    fn paused_since(&self, t: f64) -> Option<f64> {
        self.paused
            .iter()
            .find(|(s, e)| *s < t && t < *e)
            .map(|(s, _)| *s)
    }
    fn command_between(&self, command: &str, a: f64, b: f64) -> bool {
        self.commands
            .iter()
            .any(|(t, c)| *c == command && a <= *t && *t <= b)
    }
}

fn region(name: &str) -> RegionName {
    RegionName::new(name)
}

fn make(seed: u64) -> (Scenario, Truth, bool, bool) {
    let mut rng = Rng(seed);
    let three = rng.chance(30);
    let mut truth = Truth {
        regions: if three {
            vec!["us-east-1".into(), "us-west-2".into(), "eu-west-1".into()]
        } else {
            vec!["us-east-1".into(), "us-west-2".into()]
        },
        ..Truth::default()
    };
    let mut events = Vec::new();
    let mut push = |at: f64, action: Action| {
        events.push(Event {
            at: Duration::from_secs_f64(at),
            action,
        })
    };
    for (index, name) in truth.regions.clone().iter().enumerate() {
        // The first region holds the writer; it fails most often and longest.
        let count = if index == 0 {
            rng.below(3) + usize::from(rng.chance(50)) as u64
        } else {
            rng.below(2)
        };
        let mut t = rng.time(0.0, 600.0);
        for _ in 0..count {
            if t >= DURATION - 60.0 {
                break;
            }
            let long = rng.chance(55);
            let length = if long {
                rng.time(WINDOW + 40.0, 900.0)
            } else {
                rng.time(30.0, 280.0)
            };
            let end = (t + length).min(DURATION + 1.0);
            let kind = if rng.chance(70) {
                OutageKind::Full
            } else {
                OutageKind::App
            };
            push(
                t,
                Action::Outage {
                    region: region(name),
                    kind,
                },
            );
            if end < DURATION {
                push(
                    end,
                    Action::Recover {
                        region: region(name),
                    },
                );
            }
            truth.outages.push((name.clone(), t, end));
            t = end + rng.time(60.0, 400.0);
        }
        if rng.chance(20) {
            let s = rng.time(0.0, 1500.0);
            let e = s + rng.time(30.0, 900.0);
            let share = rng.below(101) as f64 / 100.0;
            push(
                s,
                Action::CheckersFailing {
                    region: region(name),
                    share,
                },
            );
            if e < DURATION {
                push(
                    e,
                    Action::CheckersFailing {
                        region: region(name),
                        share: 0.0,
                    },
                );
            }
            truth.checkers.push((name.clone(), s, e, share));
        }
        if index > 0 && rng.chance(20) {
            let lag = Duration::from_secs(rng.below(600));
            push(
                rng.time(0.0, 1200.0),
                Action::Lag {
                    region: region(name),
                    lag,
                },
            );
        }
    }
    let writer = truth.regions[0].clone();
    let first_outage = truth
        .outages
        .iter()
        .find(|(r, _, _)| *r == writer)
        .map(|(_, s, e)| (*s, *e));

    // dr cut off, and while it is, the writer's region recovers briefly and fails again: the
    // streak must not span the time nobody saw.
    if let Some((a, b)) = first_outage
        && b - a > WINDOW + 120.0
        && rng.chance(12)
    {
        let s = a + rng.time(60.0, 200.0);
        let up = s + 10.0 + rng.below(3) as f64 * 2.0;
        let down = up + 18.0;
        let e = down + rng.time(20.0, 60.0);
        if e < b {
            push(s, Action::Isolate { cut_off: true });
            push(
                up,
                Action::Recover {
                    region: region(&writer),
                },
            );
            push(
                down,
                Action::Outage {
                    region: region(&writer),
                    kind: OutageKind::Full,
                },
            );
            push(e, Action::Isolate { cut_off: false });
            truth.isolated.push((s, e));
            let index = truth
                .outages
                .iter()
                .position(|(r, x, _)| *r == writer && *x == a)
                .expect("the first outage");
            truth.outages[index].2 = up;
            truth.outages.push((writer.clone(), down, b));
            truth.hidden_recovery = true;
        }
    }
    if rng.chance(15) {
        let s = rng.time(0.0, 1500.0);
        let e = s + rng.time(30.0, 600.0);
        push(s, Action::Isolate { cut_off: true });
        if e < DURATION {
            push(e, Action::Isolate { cut_off: false });
        }
        truth.isolated.push((s, e));
    }
    if rng.chance(15) {
        // dr's probes blocked while the APIs answer: a Route53 false alarm must not trip alone.
        let s = rng.time(0.0, 1200.0);
        let e = s + rng.time(300.0, 900.0);
        push(s, Action::BlockProbes { blocked: true });
        if e < DURATION {
            push(e, Action::BlockProbes { blocked: false });
        }
        truth.probes_blocked.push((s, e));
        if rng.chance(60) {
            let share = 0.85 + rng.below(16) as f64 / 100.0;
            push(
                s,
                Action::CheckersFailing {
                    region: region(&writer),
                    share,
                },
            );
            push(
                e.min(DURATION - 1.0),
                Action::CheckersFailing {
                    region: region(&writer),
                    share: 0.0,
                },
            );
            truth.checkers.push((writer.clone(), s, e, share));
        }
    }
    if rng.chance(10) {
        let s = rng.time(0.0, 1500.0);
        let e = s + rng.time(30.0, 600.0);
        push(s, Action::Route53ControlPlane { up: false });
        if e < DURATION {
            push(e, Action::Route53ControlPlane { up: true });
        }
        truth.route53_down.push((s, e));
    }
    // dr cut off from the writer's region alone while Route53's checkers still reach it: one
    // vantage point says unhealthy, another healthy; never a trip on its own.
    if rng.chance(15) {
        let s = rng.time(0.0, 1500.0);
        let e = s + rng.time(60.0, 900.0);
        push(
            s,
            Action::Partition {
                region: region(&writer),
                cut: true,
            },
        );
        if e < DURATION {
            push(
                e,
                Action::Partition {
                    region: region(&writer),
                    cut: false,
                },
            );
        }
        truth.partitions.push((s, e));
    }
    // The name servers stop answering dr (Route53's data plane), with or without its API.
    if rng.chance(12) {
        let s = rng.time(0.0, 1500.0);
        let e = s + rng.time(30.0, 900.0);
        push(s, Action::Route53DataPlane { up: false });
        if e < DURATION {
            push(e, Action::Route53DataPlane { up: true });
        }
        truth.data_plane_down.push((s, e));
    }
    // Replication to a secondary stalls: the database's view then witnesses a failure of the
    // writer's region. Not together with a partition: dr cut off from a live writer whose
    // replication also stalled, with Route53 unreadable on both paths, is what a real outage
    // looks like from dr's side (tests/safety.rs covers that case: the RPO gate holds the
    // promotion for an operator).
    if truth.partitions.is_empty() && rng.chance(10) {
        let secondary =
            truth.regions[1 + rng.below(truth.regions.len() as u64 - 1) as usize].clone();
        let s = rng.time(0.0, 1500.0);
        let e = s + rng.time(60.0, 900.0);
        push(
            s,
            Action::Replication {
                region: region(&secondary),
                stalled: true,
            },
        );
        if e < DURATION {
            push(
                e,
                Action::Replication {
                    region: region(&secondary),
                    stalled: false,
                },
            );
        }
        truth.stalls.push((secondary, s, e));
    }
    // Operators pause and unpause, at any time or during the pre-warm and the run; some resume
    // the paused run afterwards.
    if rng.chance(22) {
        let s = match first_outage {
            Some((a, _)) if rng.chance(70) => a + rng.time(0.0, WINDOW + 300.0),
            _ => rng.time(0.0, 1500.0),
        };
        let e = s + rng.time(30.0, 600.0);
        push(s, Action::Command(OperatorCommand::Pause));
        if rng.chance(30) {
            // The operator resumes the paused run while automation stays paused.
            let r = s + rng.time(0.0, e - s);
            push(r, Action::Command(OperatorCommand::Resume));
            truth.commands.push((r, "resume"));
        }
        if e < DURATION {
            push(e, Action::Command(OperatorCommand::Unpause));
            if rng.chance(50) {
                let r = e + rng.time(0.0, 120.0);
                push(r, Action::Command(OperatorCommand::Resume));
                truth.commands.push((r, "resume"));
            }
        }
        truth.paused.push((s, e));
    }
    // Operators abort the run, at any step.
    if let Some((a, _)) = first_outage
        && rng.chance(20)
    {
        let t = a + WINDOW + rng.time(0.0, 500.0);
        push(t, Action::Command(OperatorCommand::Abort));
        truth.commands.push((t, "abort"));
    }
    // The target's lag changes while the promotion is throttled or refused with 5xx.
    if let Some((a, _)) = first_outage
        && rng.chance(22)
    {
        let kind = if rng.chance(50) {
            FaultKind::Throttle
        } else {
            FaultKind::Unavailable
        };
        let at = a + WINDOW - 7.0 + rng.below(4) as f64 * POLL;
        push(
            at,
            Action::Fault {
                operation: "FailoverGlobalCluster".into(),
                kind,
                count: 1 + rng.below(12) as u32,
                latency: Duration::ZERO,
            },
        );
        truth.faults.push((at, "FailoverGlobalCluster".into()));
        for target in truth.regions.clone().iter().skip(1) {
            for _ in 0..1 + rng.below(3) {
                push(
                    a + WINDOW + rng.time(0.0, 300.0),
                    Action::Lag {
                        region: region(target),
                        lag: Duration::from_secs(rng.below(600)),
                    },
                );
            }
        }
    }
    // Throttling or 5xx on any read.
    if rng.chance(20) {
        let operation = READS[rng.below(READS.len() as u64) as usize].to_string();
        let at = match first_outage {
            Some((a, _)) if rng.chance(60) => a + rng.time(0.0, WINDOW + 400.0),
            _ => rng.time(0.0, 1500.0),
        };
        push(
            at,
            Action::Fault {
                operation: operation.clone(),
                kind: if rng.chance(50) {
                    FaultKind::Throttle
                } else {
                    FaultKind::Unavailable
                },
                count: 1 + rng.below(20) as u32,
                latency: Duration::ZERO,
            },
        );
        truth.faults.push((at, operation));
    }
    // Approvals, early (before anything waits for one: refused) and late.
    if rng.chance(25) {
        for _ in 0..1 + rng.below(3) {
            let t = match first_outage {
                Some((a, _)) => a + rng.time(0.0, WINDOW + 900.0),
                None => rng.time(0.0, 1500.0),
            }
            .min(DURATION - 7.0);
            push(t, Action::Command(OperatorCommand::Approve { step: None }));
            truth.commands.push((t, "approve"));
        }
    }
    if rng.chance(8) {
        let t = rng.time(300.0, 1500.0);
        push(t, Action::Command(OperatorCommand::Ack));
        truth.commands.push((t, "ack"));
    }
    events.sort_by_key(|e| e.at);
    let pre_warm = rng.chance(50);
    let scenario = Scenario {
        name: format!("property-{seed}"),
        description: String::new(),
        duration: Duration::from_secs_f64(DURATION),
        seed: Some(seed),
        daemon: true,
        pre_warm: Some(pre_warm),
        requires_regions: Vec::new(),
        events,
        expect: Expectations::default(),
    };
    (scenario, truth, three, pre_warm)
}

fn configs() -> (Config, Config) {
    let two = common::shipped_config("example.toml");
    let three = common::three_region_config();
    assert_eq!(two.plan.rpo_budget.as_millis() as u64, BUDGET_MS);
    assert_eq!(two.detection.cooldown.as_secs_f64(), COOLDOWN);
    (two, three)
}

/// The writer's region at time `t`, from the promotions the runs made.
fn writer_at(report: &DrillReport, truth: &Truth, t: f64) -> String {
    let mut writer = truth.regions[0].clone();
    for run in &report.runs {
        if run.promoted_at.is_some_and(|p| p <= t) {
            writer = run.to.clone();
        }
    }
    writer
}

fn secs(at: dr::core::time::Timestamp) -> f64 {
    at.since(drill::DRILL_START).as_millis() as f64 / 1000.0
}

/// How many scenarios exercised each rule.
#[derive(Default)]
struct Tally {
    scenarios: usize,
    automatic_runs: usize,
    trips_checked_against_observations: usize,
    liveness_cases: usize,
    promotions_checked: usize,
    promotions_over_budget_approved: usize,
    gated_at_promotion: usize,
    calls_checked_against_pause: usize,
    paused_scenarios_with_activity: usize,
    held_trips: usize,
    held_by_cooldown: usize,
    cooldown_cases: usize,
    aborted_runs: usize,
    aborted_after_promotion: usize,
    rpo_measured: usize,
    rpo_unknown: usize,
    hidden_recoveries: usize,
    read_faults: usize,
    late_approvals: usize,
    /// Trips by the set of vantage points that agreed.
    trips_by_signals: std::collections::BTreeMap<String, usize>,
    partition_scenarios: usize,
    /// Trips of a live region that two vantage points, both wrong, agreed on.
    two_wrong_trips: usize,
    data_plane_down_scenarios: usize,
    stall_scenarios: usize,
}

fn check(
    report: &DrillReport,
    evidence: &Evidence,
    truth: &Truth,
    tally: &mut Tally,
) -> Result<(), String> {
    tally.scenarios += 1;
    tally.hidden_recoveries += usize::from(truth.hidden_recovery);
    tally.partition_scenarios += usize::from(!truth.partitions.is_empty());
    tally.data_plane_down_scenarios += usize::from(!truth.data_plane_down.is_empty());
    tally.stall_scenarios += usize::from(!truth.stalls.is_empty());
    tally.read_faults += usize::from(
        truth
            .faults
            .iter()
            .any(|(_, op)| op != "FailoverGlobalCluster"),
    );
    // Never two runs at once.
    for pair in report.runs.windows(2) {
        let end = pair[0].finished_at.unwrap_or(f64::INFINITY);
        if pair[1].created_at < end {
            return Err(format!("runs {} and {} overlap", pair[0].id, pair[1].id));
        }
    }
    // Every run's promotions, from their write-ahead records.
    let promotions: Vec<(f64, &str, Option<u64>)> = evidence
        .runs
        .iter()
        .flat_map(|run| {
            run.state()
                .map(|s| s.promotions)
                .unwrap_or_default()
                .into_iter()
                .map(move |p| (secs(p.at), run.header.id.as_str(), p.lag_ms))
        })
        .collect();

    // Safety of every automatic failover.
    for run in report.runs.iter().filter(|r| r.trigger == "automatic") {
        tally.automatic_runs += 1;
        let c = run.created_at;
        let tick = (c / POLL).floor() * POLL;
        let writer = writer_at(report, truth, tick);
        if run.from != writer {
            return Err(format!(
                "run {} left {} but the writer was {writer}",
                run.id, run.from
            ));
        }
        // The deciding round read Route53 and started its probes up to a probe timeout (5 s)
        // before it was stamped; a recovery after those reads cannot have been seen.
        let read = c - 5.0;
        let covered = truth
            .outages
            .iter()
            .any(|(r, s, e)| *r == run.from && *s <= c - WINDOW && *e > read);
        // Two vantage points wrong at once (Route53's checkers failing a live region while dr
        // is cut off from it, or while replication stalls) is what an outage looks like from
        // dr's side: a quorum of two trips on it by design (README.md, "The daemon"). Those
        // trips are counted, and still held to every other rule (the agreeing rounds below,
        // the RPO gate on every promotion).
        // Each vantage point's reason to read the region unhealthy at `t`: the outage itself,
        // or a fault of that vantage point alone.
        let down = |t: f64| truth.down_at(&run.from, t);
        let route53_bad =
            |t: f64| down(t) || route53_unhealthy(truth.checkers_share_at(&run.from, t));
        let probe_bad = |t: f64| down(t) || truth.partitions.iter().any(|(s, e)| *s <= t && t < *e);
        let database_bad = |t: f64| truth.stalls.iter().any(|(_, s, e)| *s <= t && t < *e);
        // Judged at the rounds the daemon observed in the window (a cause that lapsed between
        // two rounds was not seen to lapse).
        let round_times: Vec<f64> = evidence
            .observations
            .iter()
            .filter(|o| o.region.as_str() == run.from)
            .map(|o| secs(o.at))
            .filter(|t| *t >= c - WINDOW && *t <= c)
            .collect();
        let throughout = |bad: &dyn Fn(f64) -> bool| {
            !round_times.is_empty() && round_times.iter().all(|t| bad(*t) || bad(*t - 5.0))
        };
        let two_wrong = usize::from(throughout(&route53_bad))
            + usize::from(throughout(&probe_bad))
            + usize::from(throughout(&database_bad))
            >= 2;
        if !covered && two_wrong {
            tally.two_wrong_trips += 1;
        } else if !covered {
            return Err(format!(
                "run {} at {c}: {} was not down for the whole window before it",
                run.id, run.from
            ));
        }
        if truth.down_at(&run.to, tick) || route53_unhealthy(truth.checkers_share_at(&run.to, tick))
        {
            return Err(format!(
                "run {} at {c} went to unhealthy {}",
                run.id, run.to
            ));
        }
        // Both signals observed the region unhealthy in every round of the window, with no
        // round missing.
        // The rounds up to the one that decided: the daemon ticks again at once when a run it
        // executes stops (for approval, say), so a later round may share the run's instant.
        let mut rounds: Vec<_> = evidence
            .observations
            .iter()
            .filter(|o| o.region.as_str() == run.from && secs(o.at) <= c)
            .collect();
        while rounds.len() > 1
            && secs(rounds[rounds.len() - 1].at) == c
            && secs(rounds[rounds.len() - 2].at) == c
        {
            rounds.pop();
        }
        let first = rounds
            .iter()
            .rposition(|o| secs(o.at) <= c - WINDOW)
            .ok_or_else(|| format!("run {} at {c}: no round before the window", run.id))?;
        let window = &rounds[first..];
        for pair in window.windows(2) {
            if secs(pair[1].at) - secs(pair[0].at) > 3.0 * POLL {
                return Err(format!(
                    "run {} at {c}: nobody observed {} between {} and {}",
                    run.id,
                    run.from,
                    secs(pair[0].at),
                    secs(pair[1].at)
                ));
            }
        }
        // A quorum (two) of vantage points each said unhealthy in every round of the window,
        // and none said healthy in any.
        let agreeing: Vec<Signal> = Signal::ALL
            .into_iter()
            .filter(|signal| {
                window
                    .iter()
                    .all(|round| round.signals.get(*signal) == Observation::Unhealthy)
            })
            .collect();
        if agreeing.len() < 2 {
            return Err(format!(
                "run {} at {c}: only {agreeing:?} said {} was unhealthy in every round of the window",
                run.id, run.from
            ));
        }
        for round in window {
            if let Some(healthy) = round.signals.saying(Observation::Healthy).first() {
                return Err(format!(
                    "run {} at {c}: {healthy} said {} was healthy at {}, inside the window",
                    run.id,
                    run.from,
                    secs(round.at)
                ));
            }
        }
        tally
            .trips_by_signals
            .entry(format!("{agreeing:?}"))
            .and_modify(|n| *n += 1)
            .or_insert(1);
        tally.trips_checked_against_observations += 1;
        // Never within the cooldown of a run that issued a promotion, unless acknowledged.
        for (p, id, _) in &promotions {
            if *id != run.id && *p < c {
                tally.cooldown_cases += 1;
                if c - p < COOLDOWN && !truth.command_between("ack", *p, c) {
                    return Err(format!(
                        "automatic run {} at {c} started within the cooldown of run {id}'s promotion at {p}",
                        run.id
                    ));
                }
            }
        }
        // Never while paused.
        if truth.paused_since(c).is_some() {
            return Err(format!(
                "automatic run {} started at {c} while paused",
                run.id
            ));
        }
    }
    tally.held_trips += evidence
        .decisions
        .iter()
        .filter(|(_, d)| {
            matches!(
                d,
                dr::core::decision::Decision::Nothing(
                    dr::core::decision::Hold::AutomationPaused {
                        would: dr::core::decision::Would::FailOver { .. }
                    } | dr::core::decision::Hold::Cooldown {
                        would: dr::core::decision::Would::FailOver { .. },
                        ..
                    }
                )
            )
        })
        .count()
        .min(1);
    tally.held_by_cooldown += evidence
        .decisions
        .iter()
        .filter(|(_, d)| {
            matches!(
                d,
                dr::core::decision::Decision::Nothing(dr::core::decision::Hold::Cooldown {
                    would: dr::core::decision::Would::FailOver { .. },
                    ..
                })
            )
        })
        .count()
        .min(1);

    // Every promotion call that reached AWS was written ahead: the cooldown rests on it.
    for call in evidence.world.calls.iter().filter(|c| {
        c.operation == "FailoverGlobalCluster" || c.operation == "SwitchoverGlobalCluster"
    }) {
        if !promotions.iter().any(|(p, _, _)| *p == secs(call.at)) {
            return Err(format!(
                "{} at {} has no write-ahead Promoting record",
                call.operation,
                secs(call.at)
            ));
        }
    }
    // No promotion over the RPO budget without an approval of that figure.
    for call in evidence
        .world
        .calls
        .iter()
        .filter(|c| c.operation == "FailoverGlobalCluster")
    {
        tally.promotions_checked += 1;
        let lag = call.lag_ms.ok_or("a promotion without the target's lag")?;
        let run = evidence
            .runs
            .iter()
            .find(|r| {
                r.state()
                    .is_ok_and(|s| s.promotions.iter().any(|p| p.at == call.at))
            })
            .ok_or_else(|| {
                format!(
                    "FailoverGlobalCluster at {} has no write-ahead record",
                    secs(call.at)
                )
            })?;
        let before: Vec<_> = run
            .events
            .iter()
            .filter(|e| e.at <= call.at)
            .cloned()
            .collect();
        let state = RunState::replay(&run.header.plan, &before).map_err(|e| e.to_string())?;
        let approval = state.steps[&StepName::PromoteDb].approval.clone();
        if lag > BUDGET_MS {
            if !approval.as_ref().is_some_and(|a| a.covers(Some(lag))) {
                return Err(format!(
                    "run {} promoted at {} with lag {lag} ms over the budget, approval {approval:?}",
                    run.header.id,
                    secs(call.at)
                ));
            }
            tally.promotions_over_budget_approved += 1;
        }
    }
    tally.gated_at_promotion += evidence
        .runs
        .iter()
        .filter(|r| {
            r.events
                .iter()
                .any(|e| matches!(e.event, RunEvent::StepGated { .. }))
        })
        .count()
        .min(1);
    tally.late_approvals += evidence
        .runs
        .iter()
        .filter(|r| {
            r.events.iter().any(|e| {
                matches!(e.event, RunEvent::Approved { .. }) && e.actor.as_str() != "daemon"
            })
        })
        .count()
        .min(1);

    // No mutating call while paused (unless an operator resumed the run since), and none by a
    // run after its abort was requested.
    // A call during a pause is excused only for a run an operator resumed (a `Resumed` by the
    // operator, since the pause) that was still unfinished when the call was made.
    let resumed_run_active = |since: f64, t: f64| {
        evidence.runs.iter().any(|run| {
            let resumed = run.events.iter().any(|e| {
                matches!(e.event, RunEvent::Resumed { .. })
                    && e.actor.as_str() == "drill-operator"
                    && since <= secs(e.at)
                    && secs(e.at) <= t
            });
            let finished = run
                .events
                .iter()
                .find(|e| matches!(e.event, RunEvent::Finished { .. }))
                .is_some_and(|e| secs(e.at) < t);
            resumed && !finished
        })
    };
    let mut active_while_paused = false;
    for call in &evidence.world.calls {
        let t = secs(call.at);
        if let Some(since) = truth.paused_since(t) {
            tally.calls_checked_against_pause += 1;
            active_while_paused = true;
            if !resumed_run_active(since, t) {
                return Err(format!(
                    "{} {} at {t} while automation was paused since {since}",
                    call.operation, call.resource
                ));
            }
        }
    }
    if !truth.paused.is_empty()
        && (active_while_paused
            || report.timeline.iter().any(|e| {
                e.text.contains("daemon: automation is paused")
                    || e.text.contains("and automation is paused")
            }))
    {
        tally.paused_scenarios_with_activity += 1;
    }
    for run in &evidence.runs {
        let Some(abort) = run
            .events
            .iter()
            .find(|e| matches!(e.event, RunEvent::AbortRequested { .. }))
        else {
            continue;
        };
        tally.aborted_runs += 1;
        if run
            .state()
            .is_ok_and(|s| s.promotions.iter().any(|p| p.at <= abort.at))
        {
            tally.aborted_after_promotion += 1;
        }
        let end = run
            .events
            .iter()
            .find(|e| matches!(e.event, RunEvent::Finished { .. }))
            .map(|e| e.at);
        if let Some(call) = evidence
            .world
            .calls
            .iter()
            // The next run may start at the very instant this one finishes.
            .find(|c| c.at > abort.at && end.is_none_or(|end| c.at < end))
        {
            return Err(format!(
                "run {} called {} at {} after its abort at {}",
                run.header.id,
                call.operation,
                secs(call.at),
                secs(abort.at)
            ));
        }
    }

    // A reported RPO is a lag a promotion measured, or unknown.
    match report.rpo_seconds {
        Some(rpo) => {
            tally.rpo_measured += 1;
            let ms = (rpo * 1000.0).round() as u64;
            if !promotions.iter().any(|(_, _, lag)| *lag == Some(ms)) {
                return Err(format!(
                    "the report says RPO {rpo}s, which no promotion measured: {promotions:?}"
                ));
            }
        }
        None if !promotions.is_empty() => tally.rpo_unknown += 1,
        None => {}
    }

    // Liveness of every eligible outage of the writer's region.
    for (name, a, b) in &truth.outages {
        let (a, b) = (*a, *b);
        let deadline = a + WINDOW + 2.0 * POLL + 5.0;
        if deadline + 10.0 > DURATION || b < deadline + 10.0 {
            continue;
        }
        if writer_at(report, truth, a) != *name
            || report.runs.iter().any(|r| r.created_at <= a)
            || overlaps(&truth.isolated, a, deadline)
            || overlaps(&truth.probes_blocked, a, deadline)
            || overlaps(&truth.route53_down, a, deadline)
            || overlaps(&truth.paused, a, deadline)
            || truth.faults.iter().any(|(t, _)| *t < deadline)
            || !truth
                .regions
                .iter()
                .any(|other| other != name && truth.healthy_throughout(other, a, deadline))
        {
            continue;
        }
        tally.liveness_cases += 1;
        let started = report.runs.iter().any(|r| {
            // A trip earlier than the window is possible when two vantage points were wrong
            // before the outage began (checked above); it counts as the failover.
            r.trigger == "automatic"
                && r.from == *name
                && r.created_at >= a
                && r.created_at <= deadline
        });
        if !started {
            return Err(format!(
                "{name} down from {a} to {b} with a healthy target: no failover started by {deadline}"
            ));
        }
    }
    Ok(())
}

fn run_seeds(seeds: std::ops::Range<u64>) -> Tally {
    let (two, three) = configs();
    let runtime = drill::runtime().unwrap();
    let mut tally = Tally::default();
    for seed in seeds {
        let (scenario, truth, is_three, _) = make(seed);
        let config = if is_three { &three } else { &two };
        let (report, evidence) = runtime
            .block_on(drill::run_with_evidence(
                config,
                &scenario,
                &DrillOptions::default(),
            ))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        if let Err(problem) = check(&report, &evidence, &truth, &mut tally) {
            panic!(
                "seed {seed}: {problem}\ntruth: {truth:#?}\nruns: {:#?}\n{}",
                report.runs,
                report.render()
            );
        }
    }
    tally
}

fn assert_not_vacuous(tally: &Tally) {
    eprintln!(
        "{} scenarios; automatic failovers {}, checked against every observed round {}; liveness cases {}; \
         promotions checked {} (over budget with an approval of the figure {}); scenarios with a promotion gated at the call {}; \
         scenarios with operator approvals {}; calls checked against a pause {}; paused scenarios with something held or done {}; \
         scenarios with a held trip {} (by the cooldown {}); trips checked against an earlier promotion's cooldown {}; aborted runs {} (after their promotion {}); \
         RPO measured {} / unknown {}; hidden recoveries {}; scenarios with read faults {}",
        tally.scenarios,
        tally.automatic_runs,
        tally.trips_checked_against_observations,
        tally.liveness_cases,
        tally.promotions_checked,
        tally.promotions_over_budget_approved,
        tally.gated_at_promotion,
        tally.late_approvals,
        tally.calls_checked_against_pause,
        tally.paused_scenarios_with_activity,
        tally.held_trips,
        tally.held_by_cooldown,
        tally.cooldown_cases,
        tally.aborted_runs,
        tally.aborted_after_promotion,
        tally.rpo_measured,
        tally.rpo_unknown,
        tally.hidden_recoveries,
        tally.read_faults,
    );
    eprintln!(
        "scenarios with dr cut off from the writer's region alone {}; with the name servers down {}; with a replication stall {}; trips by agreeing vantage points {:?}; trips of a live region on two wrong vantage points {}",
        tally.partition_scenarios,
        tally.data_plane_down_scenarios,
        tally.stall_scenarios,
        tally.trips_by_signals,
        tally.two_wrong_trips
    );
    assert_eq!(tally.scenarios, 2500);
    let at_least = |what: &str, count: usize, floor: usize| {
        assert!(
            count >= floor,
            "only {count} {what} (at least {floor} expected)"
        );
    };
    at_least("automatic failovers", tally.automatic_runs, 300);
    at_least(
        "trips checked against observations",
        tally.trips_checked_against_observations,
        300,
    );
    at_least("liveness cases", tally.liveness_cases, 150);
    at_least("promotions checked", tally.promotions_checked, 300);
    at_least(
        "approved promotions over budget",
        tally.promotions_over_budget_approved,
        5,
    );
    at_least("promotions gated at the call", tally.gated_at_promotion, 5);
    at_least(
        "paused scenarios with activity",
        tally.paused_scenarios_with_activity,
        50,
    );
    at_least(
        "calls checked against a pause",
        tally.calls_checked_against_pause,
        3,
    );
    at_least("held trips", tally.held_trips, 20);
    at_least("trips held by the cooldown", tally.held_by_cooldown, 20);
    at_least("aborted runs", tally.aborted_runs, 50);
    at_least(
        "aborts after a promotion",
        tally.aborted_after_promotion,
        10,
    );
    at_least("RPO figures", tally.rpo_measured, 100);
    at_least("hidden recoveries", tally.hidden_recoveries, 20);
    at_least("scenarios with read faults", tally.read_faults, 200);
    at_least(
        "scenarios with dr cut off from the writer's region",
        tally.partition_scenarios,
        200,
    );
    at_least(
        "scenarios with the name servers down",
        tally.data_plane_down_scenarios,
        150,
    );
    at_least(
        "scenarios with a replication stall",
        tally.stall_scenarios,
        100,
    );
}

#[test]
fn properties_hold_for_seeds_0_to_2500() {
    assert_not_vacuous(&run_seeds(0..2500));
}

#[test]
fn properties_hold_for_seeds_2500_to_5000() {
    assert_not_vacuous(&run_seeds(2500..5000));
}

#[test]
fn properties_hold_for_seeds_5000_to_7500() {
    assert_not_vacuous(&run_seeds(5000..7500));
}

#[test]
fn properties_hold_for_seeds_7500_to_10000() {
    assert_not_vacuous(&run_seeds(7500..10000));
}
