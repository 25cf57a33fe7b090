//! The decision policy: given what was observed, the run and automation state, the policy and
//! `now`, what should the daemon do, and why. A pure function returning a value.
//!
//! Automatic failover starts only when the writer's region has failed, a target is healthy,
//! automation is on, no run is active and the cooldown is over. Lag over the RPO budget still
//! starts the run, whose promotion then waits for an operator. Failback is never automatic.

use super::detect::{RegionHealth, RegionTracker};
use super::health::Observation;
use super::ids::{Actor, RegionName, RunId};
use super::time::{Timestamp, fmt_duration};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Automation switches, kept in the store and changed by `dr pause`, `dr unpause` and `dr ack`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Automation {
    /// Schema version.
    #[serde(default)]
    pub version: u32,
    /// No automatic failover or pre-warm while paused.
    pub paused: bool,
    /// Who paused or unpaused last, and why.
    pub changed_by: Option<Actor>,
    /// Why.
    pub reason: Option<String>,
    /// Since when.
    pub changed_at: Option<Timestamp>,
    /// `dr ack` clears the cooldown of failovers that finished before this time.
    pub cooldown_cleared_at: Option<Timestamp>,
}

/// The policy's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Largest lag an automatic promotion accepts without approval.
    pub rpo_budget: Duration,
    /// Quiet time after a failover.
    pub cooldown: Duration,
    /// Scale the target up while the writer's region is suspect.
    pub pre_warm: bool,
    /// How long both signals must agree; a suspect writer past it without agreement is an alert.
    pub failure_window: Duration,
}

/// What the policy sees of one region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionView {
    /// The region and its verdict.
    pub tracker: RegionTracker,
    /// Preference as a target (lower first).
    pub priority: u32,
    /// Last known replication lag (secondaries).
    pub lag: Option<Duration>,
}

/// Everything the policy decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Situation {
    /// Every region.
    pub regions: Vec<RegionView>,
    /// The writer's region, as last read.
    pub writer: Option<RegionName>,
    /// The unfinished run, if any.
    pub active_run: Option<RunId>,
    /// When the latest run (automatic or manual, however it ended) issued a promotion, if any.
    pub last_failover_at: Option<Timestamp>,
    /// Automation switches.
    pub automation: Automation,
    /// The region the daemon pre-warmed, if any.
    pub prewarmed: Option<RegionName>,
}

/// Why the daemon does nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "hold", rename_all = "kebab-case")]
pub enum Hold {
    /// Every region is healthy (or unknown).
    AllHealthy,
    /// The writer's region is suspect; the window has not filled.
    WriterSuspect {
        /// The region.
        region: RegionName,
        /// Since when.
        since: Timestamp,
        /// The last round's signals, in words.
        signals: String,
    },
    /// Automation is paused.
    AutomationPaused {
        /// What it would have done.
        would: Would,
    },
    /// A run is active; its executor carries on.
    RunActive {
        /// The run.
        run: RunId,
    },
    /// A run that issued a promotion did so too recently.
    Cooldown {
        /// When the cooldown ends.
        until: Timestamp,
        /// What it would have done.
        would: Would,
    },
    /// The writer's region failed and no target is healthy.
    NoHealthyTarget {
        /// The failed region.
        region: RegionName,
    },
    /// A region that does not hold the writer failed: an alert, not a failover.
    FailedRegionNotWriter {
        /// The failed region.
        region: RegionName,
    },
    /// The writer's region is not known.
    WriterUnknown,
    /// No vantage point has given a verdict on the writer's region for the whole failure
    /// window: dr cannot tell whether it serves. An alert, never a failover.
    WriterUnobserved {
        /// The region.
        region: RegionName,
        /// Since when every read of it was Unknown.
        since: Timestamp,
    },
    /// This daemon does not hold the leader lease: it observes and publishes what it sees, and
    /// the leader decides and acts.
    Standby {
        /// The leader, as far as this daemon knows.
        leader: Option<String>,
        /// The leader's epoch.
        epoch: Option<u64>,
    },
    /// The writer's region has been suspect longer than the failure window, but one signal
    /// cannot be read, so the two can never agree: no automatic failover. An alert.
    CannotConfirm {
        /// The region.
        region: RegionName,
        /// Since when it is suspect.
        since: Timestamp,
        /// The signals that read Unknown, in words.
        unknown: String,
    },
}

/// What the daemon would have done, had a pause or the cooldown not held it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Would {
    /// Fail the writer's failed region over: a held trip, which is an alert.
    FailOver {
        /// The failed writer's region.
        from: RegionName,
        /// The target.
        to: RegionName,
    },
    /// Pre-warm a target.
    PreWarm {
        /// The target.
        region: RegionName,
    },
    /// Scale a pre-warmed target back.
    ScaleBack {
        /// The pre-warmed region.
        region: RegionName,
    },
}

impl fmt::Display for Would {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Would::FailOver { from, to } => write!(f, "fail over from {from} to {to}"),
            Would::PreWarm { region } => write!(f, "pre-warm {region}"),
            Would::ScaleBack { region } => write!(f, "scale {region} back to its baseline"),
        }
    }
}

/// How loudly a decision must be heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertLevel {
    /// Someone should look soon.
    Warning,
    /// Someone must act now: the company may be down and dr is not fixing it.
    Critical,
}

/// What the daemon should do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// Start an automatic failover.
    Failover {
        /// The failed writer's region.
        from: RegionName,
        /// The target.
        to: RegionName,
        /// The trip, for the audit log.
        reason: String,
    },
    /// Start the failover, whose promotion will wait for an operator: lag is over budget.
    FailoverAwaitingApproval {
        /// The failed writer's region.
        from: RegionName,
        /// The target.
        to: RegionName,
        /// Why approval is needed.
        reason: String,
    },
    /// Scale the target up ahead of a likely trip.
    PreWarm {
        /// The target.
        region: RegionName,
        /// Why.
        reason: String,
    },
    /// The suspect region recovered: scale the pre-warmed target back to its baseline.
    ScaleBack {
        /// The pre-warmed region.
        region: RegionName,
        /// Why.
        reason: String,
    },
    /// Nothing, and why.
    Nothing(Hold),
}

impl Decision {
    /// Whether this decision is an alert, and how loud. A trip that a pause or the cooldown
    /// holds back is critical: the writer's region failed and nobody is failing it over.
    pub fn alert(&self) -> Option<AlertLevel> {
        match self {
            Decision::Nothing(
                Hold::NoHealthyTarget { .. }
                | Hold::CannotConfirm { .. }
                | Hold::AutomationPaused {
                    would: Would::FailOver { .. },
                }
                | Hold::Cooldown {
                    would: Would::FailOver { .. },
                    ..
                },
            ) => Some(AlertLevel::Critical),
            Decision::Nothing(
                Hold::FailedRegionNotWriter { .. } | Hold::WriterUnobserved { .. },
            ) => Some(AlertLevel::Warning),
            _ => None,
        }
    }

    /// True for the two failover decisions.
    pub fn starts_failover(&self) -> bool {
        matches!(
            self,
            Decision::Failover { .. } | Decision::FailoverAwaitingApproval { .. }
        )
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Failover { from, to, reason } => {
                write!(f, "fail over from {from} to {to}: {reason}")
            }
            Decision::FailoverAwaitingApproval { from, to, reason } => write!(
                f,
                "fail over from {from} to {to}, promotion waiting for approval: {reason}"
            ),
            Decision::PreWarm { region, reason } => write!(f, "pre-warm {region}: {reason}"),
            Decision::ScaleBack { region, reason } => write!(f, "scale {region} back: {reason}"),
            Decision::Nothing(hold) => match hold {
                Hold::AllHealthy => f.write_str(
                    "nothing to do: the writer's region is healthy and no region has failed",
                ),
                Hold::WriterSuspect {
                    region,
                    since,
                    signals,
                } => write!(
                    f,
                    "watching: the writer's region {region} is suspect since {since} ({signals}); a quorum of independent vantage points (detection.quorum) must each observe it unhealthy in every round for the whole failure window, and none healthy"
                ),
                Hold::AutomationPaused {
                    would: Would::FailOver { from, to },
                } => write!(
                    f,
                    "ALERT: the writer's region {from} failed and automation is paused, so dr will not fail it over to {to}; `dr unpause` lets it, or fail over by hand (`dr failover --to {to}`)"
                ),
                Hold::AutomationPaused { would } => {
                    write!(
                        f,
                        "automation is paused (`dr unpause` resumes it); would {would}"
                    )
                }
                Hold::RunActive { run } => write!(f, "run {run} is active"),
                Hold::Cooldown {
                    until,
                    would: Would::FailOver { from, to },
                } => write!(
                    f,
                    "ALERT: the writer's region {from} failed, but a promotion was sent less than the cooldown ago, so dr will not fail it over to {to} before {until}; `dr ack` clears the cooldown, or fail over by hand (`dr failover --to {to}`)"
                ),
                Hold::Cooldown { until, would } => write!(
                    f,
                    "in cooldown after the last promotion until {until} (`dr ack` clears it); would {would}"
                ),
                Hold::NoHealthyTarget { region } => write!(
                    f,
                    "ALERT: the writer's region {region} failed and no other region is healthy: manual intervention needed"
                ),
                Hold::FailedRegionNotWriter { region } => write!(
                    f,
                    "ALERT: {region} failed; it does not hold the writer, so there is nothing to fail over"
                ),
                Hold::WriterUnobserved { region, since } => write!(
                    f,
                    "ALERT: no vantage point has read the writer's region {region} since {since} (Route53, the probe and the database's view all unknown): dr cannot tell whether it serves and will not fail over by itself while it cannot see it; check dr's own network and access (`dr status` lists what could not be read)"
                ),
                Hold::WriterUnknown => f.write_str(
                    "the writer's region is unknown: no region answered DescribeGlobalClusters",
                ),
                Hold::Standby { leader, epoch } => match (leader, epoch) {
                    (Some(leader), Some(epoch)) => write!(
                        f,
                        "standing by: {leader} holds the leader lease (epoch {epoch}) and decides; this daemon observes and takes over if the lease lapses"
                    ),
                    _ => f.write_str(
                        "standing by: this daemon does not hold the leader lease (it has not yet seen who does); it observes, and takes the lease once it is free or lapsed",
                    ),
                },
                Hold::CannotConfirm {
                    region,
                    since,
                    unknown,
                } => write!(
                    f,
                    "ALERT: the writer's region {region} is suspect since {since}, but {unknown} cannot be read, so not enough vantage points can agree and dr will not fail over by itself; check {region} and fail over by hand if it is down (`dr failover --to ...`; runbooks/break-glass-route53.md)"
                ),
            },
        }
    }
}

fn healthy_target<'a>(situation: &'a Situation, writer: &RegionName) -> Option<&'a RegionView> {
    situation
        .regions
        .iter()
        .filter(|r| &r.tracker.region != writer && r.tracker.is_healthy())
        .min_by_key(|r| r.priority)
}

/// Decides what to do now.
pub fn decide(situation: &Situation, policy: &Policy, now: Timestamp) -> Decision {
    if let Some(run) = &situation.active_run {
        return Decision::Nothing(Hold::RunActive { run: run.clone() });
    }
    let Some(writer) = &situation.writer else {
        return Decision::Nothing(Hold::WriterUnknown);
    };
    let writer_view = situation
        .regions
        .iter()
        .find(|r| &r.tracker.region == writer);
    let writer_health = writer_view
        .map(|r| r.tracker.health)
        .unwrap_or(RegionHealth::Unknown);
    let cooldown_until = situation.last_failover_at.and_then(|at| {
        let cleared = situation
            .automation
            .cooldown_cleared_at
            .is_some_and(|cleared| cleared >= at);
        let until = at.plus(policy.cooldown);
        (!cleared && now < until).then_some(until)
    });

    match writer_health {
        RegionHealth::Failed { since } => {
            let Some(target) = healthy_target(situation, writer) else {
                return Decision::Nothing(Hold::NoHealthyTarget {
                    region: writer.clone(),
                });
            };
            let to = target.tracker.region.clone();
            let agreeing = writer_view
                .map(|w| {
                    w.tracker
                        .streaks
                        .keys()
                        .map(|s| s.describe())
                        .collect::<Vec<_>>()
                        .join(" and ")
                })
                .unwrap_or_default();
            let trip = format!(
                "{writer} failed: {agreeing} observed it unhealthy in every round since {since} ({} ago)",
                fmt_duration(now.since(since))
            );
            let would = Would::FailOver {
                from: writer.clone(),
                to: to.clone(),
            };
            if situation.automation.paused {
                return Decision::Nothing(Hold::AutomationPaused { would });
            }
            if let Some(until) = cooldown_until {
                return Decision::Nothing(Hold::Cooldown { until, would });
            }
            match target.lag {
                Some(lag) if lag <= policy.rpo_budget => Decision::Failover {
                    from: writer.clone(),
                    to,
                    reason: format!(
                        "{trip}; {} lag {} is within the RPO budget",
                        target.tracker.region,
                        fmt_duration(lag)
                    ),
                },
                Some(lag) => Decision::FailoverAwaitingApproval {
                    from: writer.clone(),
                    to,
                    reason: format!(
                        "{trip}; last known lag {} is over the RPO budget of {}",
                        fmt_duration(lag),
                        fmt_duration(policy.rpo_budget)
                    ),
                },
                None => Decision::FailoverAwaitingApproval {
                    from: writer.clone(),
                    to,
                    reason: format!("{trip}; the replication lag is unknown"),
                },
            }
        }
        RegionHealth::Suspect { since } => {
            let tracker = writer_view.map(|w| &w.tracker);
            let last = tracker.and_then(|t| t.last.clone()).unwrap_or_default();
            let seen_healthy = last.any_healthy();
            let unknown = last.saying(Observation::Unknown);
            if !unknown.is_empty() && !seen_healthy && now.since(since) >= policy.failure_window {
                return Decision::Nothing(Hold::CannotConfirm {
                    region: writer.clone(),
                    since,
                    unknown: unknown
                        .iter()
                        .map(|s| s.describe())
                        .collect::<Vec<_>>()
                        .join(" and "),
                });
            }
            if seen_healthy {
                // One signal says healthy: the region may be fine. Nothing is warmed up, and a
                // target warmed earlier goes back.
                if let Some(region) = &situation.prewarmed {
                    return scale_back(situation, writer, region, "has a healthy signal again");
                }
            } else if policy.pre_warm
                && cooldown_until.is_none()
                && situation.prewarmed.is_none()
                && let Some(target) = healthy_target(situation, writer)
            {
                if situation.automation.paused {
                    return Decision::Nothing(Hold::AutomationPaused {
                        would: Would::PreWarm {
                            region: target.tracker.region.clone(),
                        },
                    });
                }
                return Decision::PreWarm {
                    region: target.tracker.region.clone(),
                    reason: format!("the writer's region {writer} is suspect since {since}"),
                };
            }
            Decision::Nothing(Hold::WriterSuspect {
                region: writer.clone(),
                since,
                signals: last.describe(),
            })
        }
        RegionHealth::Healthy | RegionHealth::Unknown => {
            if let Some(region) = &situation.prewarmed
                && writer_health == RegionHealth::Healthy
            {
                return scale_back(
                    situation,
                    writer,
                    region,
                    "recovered before the failure window filled",
                );
            }
            if let Some(since) = writer_view.and_then(|w| w.tracker.blind_since)
                && now.since(since) >= policy.failure_window
            {
                return Decision::Nothing(Hold::WriterUnobserved {
                    region: writer.clone(),
                    since,
                });
            }
            let failed = situation
                .regions
                .iter()
                .find(|r| matches!(r.tracker.health, RegionHealth::Failed { .. }));
            match failed {
                Some(region) => Decision::Nothing(Hold::FailedRegionNotWriter {
                    region: region.tracker.region.clone(),
                }),
                None => Decision::Nothing(Hold::AllHealthy),
            }
        }
    }
}

/// Scales a pre-warmed target back, unless automation is paused: paused means no automatic
/// change of any kind.
fn scale_back(
    situation: &Situation,
    writer: &RegionName,
    region: &RegionName,
    why: &str,
) -> Decision {
    if situation.automation.paused {
        return Decision::Nothing(Hold::AutomationPaused {
            would: Would::ScaleBack {
                region: region.clone(),
            },
        });
    }
    Decision::ScaleBack {
        region: region.clone(),
        reason: format!("the writer's region {writer} {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::detect::{DetectPolicy, Signals};
    use crate::core::health::Observation::{Healthy as H, Unhealthy as U};

    const MIN: i64 = 60_000;

    fn tracker(name: &str, rounds: usize, signals: Signals) -> RegionTracker {
        let policy = DetectPolicy::new(Duration::from_secs(300), Duration::from_secs(10));
        let mut t = RegionTracker::new(name.into());
        for i in 0..rounds {
            t.observe(signals.clone(), Timestamp(i as i64 * 10_000), &policy);
        }
        t
    }

    fn healthy(name: &str, priority: u32) -> RegionView {
        RegionView {
            tracker: tracker(name, 1, Signals::of(H, H)),
            priority,
            lag: Some(Duration::from_secs(2)),
        }
    }

    fn failed(name: &str) -> RegionView {
        RegionView {
            tracker: tracker(name, 31, Signals::of(U, U)),
            priority: 1,
            lag: None,
        }
    }

    fn suspect(name: &str) -> RegionView {
        RegionView {
            tracker: tracker(name, 5, Signals::of(U, U)),
            priority: 1,
            lag: None,
        }
    }

    fn situation(regions: Vec<RegionView>) -> Situation {
        Situation {
            regions,
            writer: Some("east".into()),
            active_run: None,
            last_failover_at: None,
            automation: Automation::default(),
            prewarmed: None,
        }
    }

    fn policy() -> Policy {
        Policy {
            rpo_budget: Duration::from_secs(300),
            cooldown: Duration::from_secs(3600),
            pre_warm: true,
            failure_window: Duration::from_secs(300),
        }
    }

    const NOW: Timestamp = Timestamp(5 * MIN);

    #[test]
    fn a_failed_writer_with_a_healthy_target_fails_over_by_priority() {
        let s = situation(vec![failed("east"), healthy("eu", 3), healthy("west", 2)]);
        match decide(&s, &policy(), NOW) {
            Decision::Failover { from, to, reason } => {
                assert_eq!((from.as_str(), to.as_str()), ("east", "west"));
                assert!(reason.contains("in every round"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_blocker_is_named() {
        let base = situation(vec![failed("east"), healthy("west", 2)]);
        let mut s = base.clone();
        s.active_run = Some(RunId::new("r-1"));
        assert!(matches!(
            decide(&s, &policy(), NOW),
            Decision::Nothing(Hold::RunActive { .. })
        ));
        let mut s = base.clone();
        s.automation.paused = true;
        assert!(matches!(
            decide(&s, &policy(), NOW),
            Decision::Nothing(Hold::AutomationPaused { .. })
        ));
        let mut s = base.clone();
        s.last_failover_at = Some(Timestamp(0));
        assert!(matches!(
            decide(&s, &policy(), NOW),
            Decision::Nothing(Hold::Cooldown { .. })
        ));
        s.automation.cooldown_cleared_at = Some(Timestamp(1));
        assert!(
            decide(&s, &policy(), NOW).starts_failover(),
            "ack clears the cooldown"
        );
        let s = situation(vec![failed("east"), failed("west")]);
        assert!(matches!(
            decide(&s, &policy(), NOW),
            Decision::Nothing(Hold::NoHealthyTarget { .. })
        ));
        let s = situation(vec![healthy("east", 1), failed("west")]);
        assert!(matches!(
            decide(&s, &policy(), NOW),
            Decision::Nothing(Hold::FailedRegionNotWriter { .. })
        ));
        let mut s = base.clone();
        s.writer = None;
        assert_eq!(
            decide(&s, &policy(), NOW),
            Decision::Nothing(Hold::WriterUnknown)
        );
    }

    #[test]
    fn lag_over_budget_or_unknown_needs_approval() {
        let mut west = healthy("west", 2);
        west.lag = Some(Duration::from_secs(420));
        let s = situation(vec![failed("east"), west.clone()]);
        assert!(matches!(
            decide(&s, &policy(), NOW),
            Decision::FailoverAwaitingApproval { .. }
        ));
        west.lag = None;
        let s = situation(vec![failed("east"), west]);
        assert!(matches!(
            decide(&s, &policy(), NOW),
            Decision::FailoverAwaitingApproval { .. }
        ));
    }

    #[test]
    fn a_suspect_writer_pre_warms_once_and_a_recovery_scales_back() {
        let s = situation(vec![suspect("east"), healthy("west", 2)]);
        assert!(
            matches!(decide(&s, &policy(), NOW), Decision::PreWarm { region, .. } if region.as_str() == "west")
        );
        let mut warmed = s.clone();
        warmed.prewarmed = Some("west".into());
        assert!(matches!(
            decide(&warmed, &policy(), NOW),
            Decision::Nothing(Hold::WriterSuspect { .. })
        ));
        let no_prewarm = Policy {
            pre_warm: false,
            ..policy()
        };
        assert!(matches!(
            decide(&s, &no_prewarm, NOW),
            Decision::Nothing(Hold::WriterSuspect { .. })
        ));
        let mut recovered = situation(vec![healthy("east", 1), healthy("west", 2)]);
        recovered.prewarmed = Some("west".into());
        assert!(matches!(
            decide(&recovered, &policy(), NOW),
            Decision::ScaleBack { .. }
        ));
    }

    #[test]
    fn a_writer_suspect_past_the_window_with_a_blind_signal_raises_an_alert() {
        let view = RegionView {
            tracker: tracker(
                "east",
                40,
                Signals::of(crate::core::health::Observation::Unknown, U),
            ),
            priority: 1,
            lag: None,
        };
        let s = situation(vec![view, healthy("west", 2)]);
        let decision = decide(&s, &policy(), Timestamp(7 * MIN));
        assert!(
            matches!(decision, Decision::Nothing(Hold::CannotConfirm { .. })),
            "{decision:?}"
        );
        assert!(decision.to_string().contains("fail over by hand"));
        // Inside the window it is only suspect (and worth a pre-warm).
        let decision = decide(&s, &policy(), Timestamp(2 * MIN));
        assert!(matches!(decision, Decision::PreWarm { .. }), "{decision:?}");
    }

    #[test]
    fn failback_is_never_automatic() {
        // After a failover the writer is west; east healthy again: nothing happens.
        let mut s = situation(vec![healthy("east", 1), healthy("west", 2)]);
        s.writer = Some("west".into());
        assert_eq!(
            decide(&s, &policy(), NOW),
            Decision::Nothing(Hold::AllHealthy)
        );
    }

    #[test]
    fn paused_means_no_automatic_change_of_any_kind() {
        let mut recovered = situation(vec![healthy("east", 1), healthy("west", 2)]);
        recovered.prewarmed = Some("west".into());
        recovered.automation.paused = true;
        assert_eq!(
            decide(&recovered, &policy(), NOW),
            Decision::Nothing(Hold::AutomationPaused {
                would: Would::ScaleBack {
                    region: "west".into()
                }
            })
        );
        let mut s = situation(vec![suspect("east"), healthy("west", 2)]);
        s.automation.paused = true;
        assert!(matches!(
            decide(&s, &policy(), NOW),
            Decision::Nothing(Hold::AutomationPaused {
                would: Would::PreWarm { .. }
            })
        ));
    }

    #[test]
    fn a_held_trip_is_a_critical_alert_and_other_holds_are_not() {
        let mut s = situation(vec![failed("east"), healthy("west", 2)]);
        s.automation.paused = true;
        let paused = decide(&s, &policy(), NOW);
        assert_eq!(paused.alert(), Some(AlertLevel::Critical), "{paused}");
        assert!(paused.to_string().starts_with("ALERT"), "{paused}");
        let mut s = situation(vec![failed("east"), healthy("west", 2)]);
        s.last_failover_at = Some(Timestamp(0));
        let cooling = decide(&s, &policy(), NOW);
        assert_eq!(cooling.alert(), Some(AlertLevel::Critical), "{cooling}");
        assert_ne!(
            paused, cooling,
            "a changed reason is a new decision, so a new notice"
        );
        let mut s = situation(vec![suspect("east"), healthy("west", 2)]);
        s.automation.paused = true;
        assert_eq!(decide(&s, &policy(), NOW).alert(), None);
    }

    #[test]
    fn a_single_failing_signal_is_suspect_and_says_which() {
        let view = RegionView {
            tracker: tracker("east", 40, Signals::of(H, U)),
            priority: 1,
            lag: None,
        };
        let s = situation(vec![view.clone(), healthy("west", 2)]);
        let decision = decide(&s, &policy(), Timestamp(7 * MIN));
        match &decision {
            Decision::Nothing(Hold::WriterSuspect { signals, .. }) => {
                assert!(signals.contains("dr's own probe unhealthy"), "{signals}");
                assert!(
                    signals.contains("Route53's health check healthy"),
                    "{signals}"
                );
            }
            other => panic!("{other:?}"),
        }
        // A target warmed earlier goes back while a signal says the writer is healthy.
        let mut warmed = s.clone();
        warmed.prewarmed = Some("west".into());
        assert!(matches!(
            decide(&warmed, &policy(), NOW),
            Decision::ScaleBack { .. }
        ));
    }
}
