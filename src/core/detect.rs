//! Detection: turns each region's stream of observations into Healthy, Suspect or Failed.
//!
//! Each `Signal` is an independent vantage point on a region (today Route53's checkers and dr's
//! own probe). A region is suspect from the first round in which any signal says unhealthy, even
//! while another says healthy. It is failed when at least `quorum` signals have each observed it
//! unhealthy in every round for the whole failure window, and none says healthy now.
//!
//! Only observed time counts. A signal's streak is broken by any round in which it does not say
//! unhealthy: a healthy verdict, but also an Unknown one, because nobody saw the region during
//! that round and it may have recovered unseen. Two consecutive unhealthy rounds further apart
//! than `max_gap` (the daemon stalled) break it too. One healthy signal resets every streak.
//! Pure: the caller passes observations and times.

use super::health::Observation;
use super::ids::RegionName;
use super::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// An independent source of verdicts about a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    /// Route53's health check, from its checkers (`GetHealthCheckStatus`).
    Route53,
    /// dr's own probe of the region's `/health`.
    Probe,
}

impl Signal {
    /// Every signal, in display order.
    pub const ALL: [Signal; 2] = [Signal::Route53, Signal::Probe];

    /// The signal in words, for reasons and alerts.
    pub fn describe(self) -> &'static str {
        match self {
            Signal::Route53 => "Route53's health check",
            Signal::Probe => "dr's own probe",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Route53 => "route53",
            Signal::Probe => "probe",
        })
    }
}

/// One round of signals about one region. A signal missing from the round is Unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signals(pub BTreeMap<Signal, Observation>);

impl Signals {
    /// A round of Route53's and the probe's verdicts.
    pub fn of(route53: Observation, probe: Observation) -> Signals {
        Signals(BTreeMap::from([
            (Signal::Route53, route53),
            (Signal::Probe, probe),
        ]))
    }

    /// One signal's verdict; Unknown when the round lacks it.
    pub fn get(&self, signal: Signal) -> Observation {
        self.0.get(&signal).copied().unwrap_or(Observation::Unknown)
    }

    /// Some signal says healthy.
    pub fn any_healthy(&self) -> bool {
        self.0.values().any(|o| *o == Observation::Healthy)
    }

    /// Some signal says unhealthy.
    pub fn any_unhealthy(&self) -> bool {
        self.0.values().any(|o| *o == Observation::Unhealthy)
    }

    /// The signals that say `observation`.
    pub fn saying(&self, observation: Observation) -> Vec<Signal> {
        Signal::ALL
            .into_iter()
            .filter(|s| self.get(*s) == observation)
            .collect()
    }

    /// The round in words: "Route53's health check unhealthy, dr's own probe healthy".
    pub fn describe(&self) -> String {
        Signal::ALL
            .iter()
            .map(|s| format!("{} {}", s.describe(), self.get(*s)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where a region stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum RegionHealth {
    /// No observation yet, or only Unknowns since the start.
    Unknown,
    /// The last round had a healthy signal and no unhealthy one.
    Healthy,
    /// Some signal says unhealthy; not (yet) failed.
    Suspect {
        /// First unhealthy observation of this streak.
        since: Timestamp,
    },
    /// A quorum of signals observed it unhealthy in every round for the whole failure window.
    Failed {
        /// Start of the agreement: the time since which the quorum has agreed.
        since: Timestamp,
    },
}

impl RegionHealth {
    /// Short name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RegionHealth::Unknown => "unknown",
            RegionHealth::Healthy => "healthy",
            RegionHealth::Suspect { .. } => "suspect",
            RegionHealth::Failed { .. } => "failed",
        }
    }
}

/// Detection settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectPolicy {
    /// How long the quorum must agree.
    pub failure_window: Duration,
    /// Longest time between two consecutive unhealthy rounds of one signal that keeps its
    /// streak going (a slow tick); a round in between that is not unhealthy always breaks it.
    pub max_gap: Duration,
    /// How many independent signals must agree for the whole window.
    pub quorum: usize,
}

impl DetectPolicy {
    /// The policy for a failure window and poll interval: both signals must agree, and rounds up
    /// to three polls apart are consecutive.
    pub fn new(failure_window: Duration, poll_interval: Duration) -> DetectPolicy {
        DetectPolicy {
            failure_window,
            max_gap: poll_interval * 3,
            quorum: 2,
        }
    }
}

/// One signal's run of consecutive unhealthy rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Streak {
    /// The first round of the run.
    pub since: Timestamp,
    /// The latest round of the run.
    pub last: Timestamp,
}

/// One region's detector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionTracker {
    /// The region.
    pub region: RegionName,
    /// Current verdict.
    pub health: RegionHealth,
    /// The last round's signals.
    pub last: Option<Signals>,
    /// When the last round was observed.
    pub last_at: Option<Timestamp>,
    /// Each signal's current unhealthy streak.
    pub streaks: BTreeMap<Signal, Streak>,
    suspect_since: Option<Timestamp>,
}

impl RegionTracker {
    /// A tracker that has seen nothing.
    pub fn new(region: RegionName) -> RegionTracker {
        RegionTracker {
            region,
            health: RegionHealth::Unknown,
            last: None,
            last_at: None,
            streaks: BTreeMap::new(),
            suspect_since: None,
        }
    }

    /// Folds one round of signals observed at `at`.
    pub fn observe(&mut self, signals: Signals, at: Timestamp, policy: &DetectPolicy) {
        let healthy = signals.any_healthy();
        let unhealthy = signals.any_unhealthy();
        let mut streaks = BTreeMap::new();
        if !healthy {
            for signal in signals.saying(Observation::Unhealthy) {
                let since = match self.streaks.get(&signal) {
                    Some(streak) if at.since(streak.last) <= policy.max_gap => streak.since,
                    _ => at,
                };
                streaks.insert(signal, Streak { since, last: at });
            }
        }
        // A signal that did not say unhealthy this round (healthy, or Unknown: unobserved)
        // loses its streak.
        self.streaks = streaks;
        if unhealthy {
            self.suspect_since.get_or_insert(at);
        } else if healthy {
            self.suspect_since = None;
        }
        self.health = if unhealthy {
            match self.agreement_since(policy.quorum) {
                Some(since) if !healthy && at.since(since) >= policy.failure_window => {
                    RegionHealth::Failed { since }
                }
                _ => RegionHealth::Suspect {
                    since: self.suspect_since.unwrap_or(at),
                },
            }
        } else if healthy {
            RegionHealth::Healthy
        } else {
            // Only Unknowns: keep what was known, but nothing unobserved keeps a region failed.
            match self.health {
                RegionHealth::Failed { since } => RegionHealth::Suspect { since },
                other => other,
            }
        };
        self.last = Some(signals);
        self.last_at = Some(at);
    }

    /// The time since which `quorum` signals have each been unhealthy in every round, if they
    /// have: the start of the quorum-th oldest streak.
    pub fn agreement_since(&self, quorum: usize) -> Option<Timestamp> {
        if quorum == 0 {
            return None;
        }
        let mut starts: Vec<Timestamp> = self.streaks.values().map(|s| s.since).collect();
        starts.sort();
        starts.get(quorum - 1).copied()
    }

    /// Whether the last round has a healthy signal (the writer may recover: no pre-warm).
    pub fn seen_healthy(&self) -> bool {
        self.last.as_ref().is_some_and(Signals::any_healthy)
    }

    /// Whether the last round says the region can take the load: a healthy signal and no
    /// unhealthy one.
    pub fn is_healthy(&self) -> bool {
        self.last
            .as_ref()
            .is_some_and(|s| s.any_healthy() && !s.any_unhealthy())
            && self.health == RegionHealth::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Observation::{Healthy as H, Unhealthy as U, Unknown as X};

    const POLL: u64 = 10;

    fn policy() -> DetectPolicy {
        DetectPolicy::new(Duration::from_secs(300), Duration::from_secs(POLL))
    }

    /// Feeds one round every poll interval from t=0 and returns the tracker.
    fn feed(rounds: &[(Observation, Observation)]) -> RegionTracker {
        let mut tracker = RegionTracker::new("r".into());
        for (i, (route53, probe)) in rounds.iter().enumerate() {
            tracker.observe(
                Signals::of(*route53, *probe),
                Timestamp(i as i64 * POLL as i64 * 1000),
                &policy(),
            );
        }
        tracker
    }

    fn rounds(n: usize, s: (Observation, Observation)) -> Vec<(Observation, Observation)> {
        vec![s; n]
    }

    #[test]
    fn both_signals_for_the_whole_window_fail_the_region() {
        // 31 rounds span 300 s.
        let t = feed(&rounds(31, (U, U)));
        assert_eq!(
            t.health,
            RegionHealth::Failed {
                since: Timestamp(0)
            }
        );
        let t = feed(&rounds(30, (U, U)));
        assert_eq!(
            t.health,
            RegionHealth::Suspect {
                since: Timestamp(0)
            }
        );
    }

    #[test]
    fn one_signal_alone_never_fails_the_region_but_makes_it_suspect() {
        // The probe fails while Route53 says healthy: suspect (the README's rule), never failed.
        let t = feed(&rounds(100, (H, U)));
        assert_eq!(
            t.health,
            RegionHealth::Suspect {
                since: Timestamp(0)
            }
        );
        assert!(!t.is_healthy());
        assert!(t.seen_healthy());
        let t = feed(&rounds(100, (U, X)));
        assert_eq!(
            t.health,
            RegionHealth::Suspect {
                since: Timestamp(0)
            }
        );
    }

    #[test]
    fn unknowns_never_fail_a_region() {
        let t = feed(&rounds(100, (X, X)));
        assert_eq!(t.health, RegionHealth::Unknown);
    }

    #[test]
    fn one_healthy_observation_resets_the_window() {
        let mut r = rounds(20, (U, U));
        r.push((H, U));
        r.extend(rounds(30, (U, U)));
        let t = feed(&r);
        assert!(
            matches!(t.health, RegionHealth::Suspect { .. }),
            "{:?}",
            t.health
        );
        r.push((U, U));
        assert!(matches!(feed(&r).health, RegionHealth::Failed { .. }));
    }

    #[test]
    fn an_unknown_round_restarts_the_streak_because_nobody_saw_the_region() {
        // 15 agreeing rounds, two unobserved rounds (the region may have recovered unseen), then
        // 29 more: the window counts from the first round after the gap.
        let mut r = rounds(15, (U, U));
        r.extend(rounds(2, (X, X)));
        r.extend(rounds(30, (U, U)));
        let t = feed(&r);
        assert!(
            matches!(t.health, RegionHealth::Suspect { .. }),
            "{:?}",
            t.health
        );
        r.push((U, U));
        assert_eq!(
            feed(&r).health,
            RegionHealth::Failed {
                since: Timestamp(170_000)
            }
        );
        // One signal unread for one round restarts that signal's streak, and so the agreement.
        let mut r = rounds(15, (U, U));
        r.push((U, X));
        r.extend(rounds(30, (U, U)));
        assert!(matches!(feed(&r).health, RegionHealth::Suspect { .. }));
    }

    #[test]
    fn rounds_further_apart_than_the_gap_are_not_consecutive() {
        let mut tracker = RegionTracker::new("r".into());
        let p = policy();
        tracker.observe(Signals::of(U, U), Timestamp(0), &p);
        // The daemon stalled for five minutes: nothing was observed in between.
        tracker.observe(Signals::of(U, U), Timestamp(300_000), &p);
        assert!(matches!(tracker.health, RegionHealth::Suspect { .. }));
    }

    #[test]
    fn a_failed_region_that_turns_unknown_is_no_longer_failed() {
        let mut r = rounds(31, (U, U));
        r.push((X, X));
        let t = feed(&r);
        assert!(matches!(t.health, RegionHealth::Suspect { .. }));
    }

    #[test]
    fn the_quorum_is_the_number_of_agreeing_signals() {
        let mut tracker = RegionTracker::new("r".into());
        let p = DetectPolicy {
            quorum: 1,
            ..policy()
        };
        for i in 0..31 {
            tracker.observe(Signals::of(U, X), Timestamp(i * 10_000), &p);
        }
        assert!(matches!(tracker.health, RegionHealth::Failed { .. }));
        assert_eq!(tracker.agreement_since(2), None);
    }
}
