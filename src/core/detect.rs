//! Detection: turns each region's stream of observations into Healthy, Suspect or Failed.
//!
//! A region is suspect from its first unhealthy signal. It is failed when both independent
//! signals (Route53's checkers and dr's own probe) have agreed it is unhealthy, continuously,
//! for the whole failure window. One healthy signal resets it. Unknown never counts toward
//! failure, and an agreement streak with a gap of Unknowns longer than `max_gap` starts over:
//! nobody saw the region during the gap. Pure: the caller passes observations and times.

use super::health::Observation;
use super::ids::RegionName;
use super::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One round of signals about one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signals {
    /// Route53's health check, from its checkers.
    pub route53: Observation,
    /// dr's own probe of `/health`.
    pub probe: Observation,
}

impl Signals {
    /// Both signals say unhealthy.
    pub fn agree_unhealthy(&self) -> bool {
        self.route53 == Observation::Unhealthy && self.probe == Observation::Unhealthy
    }

    /// Some signal says healthy.
    pub fn any_healthy(&self) -> bool {
        self.route53 == Observation::Healthy || self.probe == Observation::Healthy
    }

    /// Some signal says unhealthy.
    pub fn any_unhealthy(&self) -> bool {
        self.route53 == Observation::Unhealthy || self.probe == Observation::Unhealthy
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
    /// Both signals agreed it is unhealthy for the whole failure window.
    Failed {
        /// Start of the agreement streak.
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
    /// How long both signals must agree.
    pub failure_window: Duration,
    /// Longest gap between two agreeing rounds that keeps a streak going.
    pub max_gap: Duration,
}

impl DetectPolicy {
    /// The policy for a failure window and poll interval: gaps of up to three polls are bridged.
    pub fn new(failure_window: Duration, poll_interval: Duration) -> DetectPolicy {
        DetectPolicy {
            failure_window,
            max_gap: poll_interval * 3,
        }
    }
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
    suspect_since: Option<Timestamp>,
    agree_since: Option<Timestamp>,
    last_agree: Option<Timestamp>,
}

impl RegionTracker {
    /// A tracker that has seen nothing.
    pub fn new(region: RegionName) -> RegionTracker {
        RegionTracker {
            region,
            health: RegionHealth::Unknown,
            last: None,
            last_at: None,
            suspect_since: None,
            agree_since: None,
            last_agree: None,
        }
    }

    /// Folds one round of signals observed at `at`.
    pub fn observe(&mut self, signals: Signals, at: Timestamp, policy: &DetectPolicy) {
        self.last = Some(signals);
        self.last_at = Some(at);
        if signals.any_healthy() {
            self.suspect_since = None;
            self.agree_since = None;
            self.last_agree = None;
            self.health = RegionHealth::Healthy;
            return;
        }
        if signals.agree_unhealthy() {
            let bridged = self
                .last_agree
                .is_some_and(|previous| at.since(previous) <= policy.max_gap);
            if !bridged {
                self.agree_since = Some(at);
            }
            self.last_agree = Some(at);
        } else if self
            .last_agree
            .is_some_and(|previous| at.since(previous) > policy.max_gap)
        {
            // Too long without both signals agreeing: the streak is no longer continuous.
            self.agree_since = None;
            self.last_agree = None;
        }
        if signals.any_unhealthy() && self.suspect_since.is_none() {
            self.suspect_since = Some(at);
        }
        self.health = match (self.agree_since, self.suspect_since) {
            (Some(since), _)
                if signals.agree_unhealthy() && at.since(since) >= policy.failure_window =>
            {
                RegionHealth::Failed { since }
            }
            (_, Some(since)) => RegionHealth::Suspect { since },
            (Some(since), None) => RegionHealth::Suspect { since },
            (None, None) => match self.health {
                // Only Unknowns: keep what was known.
                RegionHealth::Failed { since } => RegionHealth::Suspect { since },
                other => other,
            },
        };
    }

    /// Whether the last round says the region can take the load: a healthy signal and no
    /// unhealthy one.
    pub fn is_healthy(&self) -> bool {
        self.last
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
                Signals {
                    route53: *route53,
                    probe: *probe,
                },
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
    fn one_signal_alone_never_fails_the_region() {
        let t = feed(&rounds(100, (U, H)));
        assert_eq!(t.health, RegionHealth::Healthy);
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
    fn short_unknown_gaps_are_bridged_and_long_ones_restart_the_streak() {
        let mut r = rounds(15, (U, U));
        r.extend(rounds(2, (X, X)));
        r.extend(rounds(14, (U, U)));
        assert!(matches!(
            feed(&r).health,
            RegionHealth::Failed {
                since: Timestamp(0)
            }
        ));
        let mut r = rounds(15, (U, U));
        r.extend(rounds(10, (U, X)));
        r.extend(rounds(20, (U, U)));
        let t = feed(&r);
        assert!(
            matches!(t.health, RegionHealth::Suspect { .. }),
            "{:?}",
            t.health
        );
    }

    #[test]
    fn a_failed_region_that_turns_unknown_is_no_longer_failed() {
        let mut r = rounds(31, (U, U));
        r.push((X, X));
        let t = feed(&r);
        assert!(matches!(t.health, RegionHealth::Suspect { .. }));
    }
}
