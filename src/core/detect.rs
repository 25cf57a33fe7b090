//! Detection: turns each region's stream of observations into Healthy, Suspect or Failed.
//!
//! Each `Signal` is an independent vantage point on a region: Route53's checkers (read through
//! DNS, the data plane, or `GetHealthCheckStatus`), dr's own probe, and the database's
//! replication seen from the healthy side. A region is suspect from the first round in which any signal says unhealthy, even
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
    /// Route53's health check, from its checkers: the answer of the region's health record from
    /// the hosted zone's name servers (the data plane), or `GetHealthCheckStatus`.
    Route53,
    /// dr's own probe of the region's `/health`.
    Probe,
    /// The writer's database seen from the other regions: replication to them stalled, the lag
    /// growing as fast as time passes. It only ever witnesses a failure: replication that flows
    /// shows the database alive, not the region serving, so it is never a healthy vote.
    Database,
    /// The probes of the other daemons sharing the store, each from its own region: healthy if
    /// any of them reached `/health`, unhealthy if all that answered could not. Present only
    /// when another daemon published a fresh status.
    Peer,
}

impl Signal {
    /// Every signal, in display order.
    pub const ALL: [Signal; 4] = [
        Signal::Route53,
        Signal::Probe,
        Signal::Database,
        Signal::Peer,
    ];

    /// The signal in words, for reasons and alerts.
    pub fn describe(self) -> &'static str {
        match self {
            Signal::Route53 => "Route53's health check",
            Signal::Probe => "dr's own probe",
            Signal::Database => "the database's replication",
            Signal::Peer => "the other daemons' probes",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Route53 => "route53",
            Signal::Probe => "probe",
            Signal::Database => "database",
            Signal::Peer => "peer",
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

    /// The round with one more signal's verdict.
    pub fn with(mut self, signal: Signal, observation: Observation) -> Signals {
        self.0.insert(signal, observation);
        self
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

    /// The signals of this round that say `observation` (a signal the round lacks says
    /// nothing: the database's view is in a round only when it saw a stall).
    pub fn saying(&self, observation: Observation) -> Vec<Signal> {
        self.0
            .iter()
            .filter(|(_, o)| **o == observation)
            .map(|(s, _)| *s)
            .collect()
    }

    /// The round in words: "Route53's health check unhealthy, dr's own probe healthy".
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(s, o)| format!("{} {o}", s.describe()))
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
    /// The policy for a failure window and poll interval: two signals must agree, and rounds up
    /// to three polls apart are consecutive.
    pub fn new(failure_window: Duration, poll_interval: Duration) -> DetectPolicy {
        DetectPolicy {
            failure_window,
            max_gap: poll_interval * 3,
            quorum: DEFAULT_QUORUM,
        }
    }

    /// The same policy with another quorum.
    pub fn with_quorum(mut self, quorum: usize) -> DetectPolicy {
        self.quorum = quorum;
        self
    }
}

/// How many independent signals must agree by default. Never fewer than two: one vantage point
/// alone (dr's own probe, say) cannot tell a dead region from a cut between dr and the region.
pub const DEFAULT_QUORUM: usize = 2;

/// The replication from the writer to one secondary, as its lag moves: a lag that grows about as
/// fast as time passes (nothing is being applied) and is at least `stall_after` is a stall.
/// Pure: the caller passes each reading and its time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagTrend {
    last: Option<(Timestamp, Duration)>,
}

impl LagTrend {
    /// The least lag that can be a stall. CloudWatch publishes a datapoint one to three
    /// minutes late, and dr ages the newest one by the time since its minute ended (a stale low
    /// figure never passes for a fresh one), so a healthy replication can read as a lag growing
    /// with time for up to about four minutes between datapoints; only beyond that is it a
    /// stall.
    pub const STALL_AFTER: Duration = Duration::from_secs(240);

    /// Folds one reading; says whether replication looks stalled now. A missing reading (no
    /// datapoint, no answer) forgets the last one: a stall must be seen in consecutive readings.
    pub fn observe(&mut self, at: Timestamp, lag: Option<Duration>) -> bool {
        let Some(lag) = lag else {
            self.last = None;
            return false;
        };
        let stalled = match self.last {
            Some((then, before)) if at > then => {
                let elapsed = at.since(then);
                let grew = lag.saturating_sub(before);
                // Growing at least four fifths as fast as time passes.
                lag >= Self::STALL_AFTER && grew * 5 >= elapsed * 4
            }
            _ => false,
        };
        self.last = Some((at, lag));
        stalled
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
    /// The first of the latest rounds in which no vantage point gave a verdict (all Unknown);
    /// `None` once one does.
    #[serde(default)]
    pub blind_since: Option<Timestamp>,
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
            blind_since: None,
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
        if healthy || unhealthy {
            self.blind_since = None;
        } else {
            self.blind_since.get_or_insert(at);
        }
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

    #[test]
    fn a_lag_growing_as_fast_as_time_is_a_stall_and_a_gap_forgets_it() {
        let at = |s: i64| Timestamp(s * 1000);
        let secs = Duration::from_secs;
        let stall = LagTrend::STALL_AFTER.as_secs() as i64;
        let mut trend = LagTrend::default();
        // Flowing replication: small, steady lags.
        assert!(!trend.observe(at(0), Some(secs(2))));
        assert!(!trend.observe(at(10), Some(secs(3))));
        // Growing with time (a stall, or CloudWatch's late datapoint aged), but not yet past
        // what a late datapoint can explain.
        assert!(!trend.observe(at(stall - 20), Some(secs(stall as u64 - 30))));
        assert!(!trend.observe(at(stall - 10), Some(secs(stall as u64 - 20))));
        // Past it and still growing with time: a stall.
        assert!(trend.observe(at(stall + 20), Some(secs(stall as u64 + 10))));
        assert!(trend.observe(at(stall + 30), Some(secs(stall as u64 + 20))));
        // A big lag that is shrinking (catching up) is not a stall.
        assert!(!trend.observe(at(stall + 40), Some(secs(stall as u64 + 15))));
        // A big lag growing slower than time (replicating, behind) is not a stall.
        assert!(!trend.observe(at(stall + 50), Some(secs(stall as u64 + 17))));
        // No reading: forgotten; the next reading alone cannot be a stall.
        assert!(!trend.observe(at(stall + 60), None));
        assert!(!trend.observe(at(stall + 70), Some(secs(stall as u64 + 400))));
        assert!(trend.observe(at(stall + 80), Some(secs(stall as u64 + 410))));
    }

    #[test]
    fn the_databases_view_joins_a_quorum_but_is_never_a_healthy_vote() {
        // Route53 unreadable; the probe and the stalled replication agree for the window.
        let policy = policy();
        let mut tracker = RegionTracker::new("r".into());
        for i in 0..31 {
            let round = Signals::of(X, U).with(Signal::Database, U);
            tracker.observe(round, Timestamp(i * POLL as i64 * 1000), &policy);
        }
        assert!(matches!(tracker.health, RegionHealth::Failed { .. }));
        // Without the database's view the probe alone never fails it.
        let mut alone = RegionTracker::new("r".into());
        for i in 0..61 {
            alone.observe(
                Signals::of(X, U),
                Timestamp(i * POLL as i64 * 1000),
                &policy,
            );
        }
        assert!(matches!(alone.health, RegionHealth::Suspect { .. }));
        // A round lacking the database's view says nothing about it.
        let round = Signals::of(U, U);
        assert_eq!(round.saying(X), Vec::<Signal>::new());
        assert_eq!(round.get(Signal::Database), X);
    }

    #[test]
    fn a_higher_quorum_needs_every_vantage_point() {
        let policy = policy().with_quorum(3);
        let mut tracker = RegionTracker::new("r".into());
        for i in 0..61 {
            tracker.observe(
                Signals::of(U, U),
                Timestamp(i * POLL as i64 * 1000),
                &policy,
            );
        }
        assert!(matches!(tracker.health, RegionHealth::Suspect { .. }));
        for i in 61..93 {
            let round = Signals::of(U, U).with(Signal::Database, U);
            tracker.observe(round, Timestamp(i * POLL as i64 * 1000), &policy);
        }
        assert!(matches!(tracker.health, RegionHealth::Failed { .. }));
    }

    #[test]
    fn rounds_with_no_verdict_are_counted_from_the_first_and_any_verdict_ends_them() {
        let policy = policy();
        let mut tracker = RegionTracker::new("r".into());
        let t = |i: i64| Timestamp(i * POLL as i64 * 1000);
        tracker.observe(Signals::of(H, H), t(0), &policy);
        assert_eq!(tracker.blind_since, None);
        for i in 1..10 {
            tracker.observe(Signals::of(X, X), t(i), &policy);
        }
        assert_eq!(tracker.blind_since, Some(t(1)));
        // What was known is kept: blindness alone never fails or heals a region.
        assert_eq!(tracker.health, RegionHealth::Healthy);
        tracker.observe(Signals::of(X, U), t(10), &policy);
        assert_eq!(tracker.blind_since, None);
    }
}
