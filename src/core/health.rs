//! Turning raw signals into observations: Healthy, Unhealthy or Unknown.
//!
//! Unknown (an API error, a throttle, no answer) never counts as failure: a `dr` that loses its
//! own network must not fail the company over.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One signal's verdict about one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Observation {
    /// The signal says the region serves.
    Healthy,
    /// The signal says the region does not serve.
    Unhealthy,
    /// The signal could not be read.
    Unknown,
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Observation::Healthy => "healthy",
            Observation::Unhealthy => "unhealthy",
            Observation::Unknown => "unknown",
        })
    }
}

/// Route53 calls an endpoint healthy when more than this percentage of its checkers do.
pub const ROUTE53_HEALTHY_PERCENT: u32 = 18;

/// Route53's rule, in integers so that a share of exactly 18% is decided the same way
/// everywhere: healthy when `healthy / total > 18 / 100`. The simulator's DNS answers and the
/// checker report dr reads both use this one function.
pub fn route53_counts_healthy(healthy: u32, total: u32) -> bool {
    total > 0 && u64::from(healthy) * 100 > u64::from(total) * u64::from(ROUTE53_HEALTHY_PERCENT)
}

/// Route53's verdict from its checkers' reports, as `GetHealthCheckStatus` returns them.
pub fn classify_checkers(healthy: u32, total: u32) -> Observation {
    if total == 0 {
        return Observation::Unknown;
    }
    if route53_counts_healthy(healthy, total) {
        Observation::Healthy
    } else {
        Observation::Unhealthy
    }
}

/// The TXT value a region's health record answers while its health check is healthy (the
/// primary of a failover pair), and the one it answers otherwise (the secondary).
pub const HEALTH_RECORD_HEALTHY: &str = "healthy";
/// See [`HEALTH_RECORD_HEALTHY`].
pub const HEALTH_RECORD_UNHEALTHY: &str = "unhealthy";

/// Route53's verdict read through its data plane: what the hosted zone's name servers answer
/// for a region's health record. Anything but exactly one of the two values is Unknown (a
/// missing record says nothing about the region).
pub fn classify_health_record(answers: &[String]) -> Observation {
    match answers {
        [one] if one == HEALTH_RECORD_HEALTHY => Observation::Healthy,
        [one] if one == HEALTH_RECORD_UNHEALTHY => Observation::Unhealthy,
        _ => Observation::Unknown,
    }
}

/// Route53's one verdict from its two paths, the data plane (DNS) and the control plane
/// (`GetHealthCheckStatus`): the same checkers, so one vantage point. Healthy if either path
/// says so (the two can differ while a change propagates; doubt never fails a region), else
/// Unhealthy if either says so, else Unknown.
pub fn combine_route53(dns: Observation, api: Observation) -> Observation {
    use Observation::{Healthy, Unhealthy, Unknown};
    match (dns, api) {
        (Healthy, _) | (_, Healthy) => Healthy,
        (Unhealthy, _) | (_, Unhealthy) => Unhealthy,
        (Unknown, Unknown) => Unknown,
    }
}

/// What a probe of `/health` got back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum ProbeResult {
    /// An HTTP answer with this status.
    Status {
        /// The HTTP status code.
        code: u16,
    },
    /// The connection was refused or reset: something answered, and it was not the service.
    Refused,
    /// No answer within the timeout.
    Timeout,
}

impl fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeResult::Status { code } => write!(f, "HTTP {code}"),
            ProbeResult::Refused => f.write_str("connection refused"),
            ProbeResult::Timeout => f.write_str("no answer"),
        }
    }
}

/// The verdict of one probe. A timeout on its own cannot tell a dead region from a dead local
/// network, so it is Unknown unless `peer_answered`: some other region answered a probe in the
/// same round, which shows this side's network works.
pub fn classify_probe(result: &ProbeResult, peer_answered: bool) -> Observation {
    match result {
        ProbeResult::Status { code: 200..=299 } => Observation::Healthy,
        ProbeResult::Status { .. } | ProbeResult::Refused => Observation::Unhealthy,
        ProbeResult::Timeout if peer_answered => Observation::Unhealthy,
        ProbeResult::Timeout => Observation::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_eighteen_percent_of_checkers_is_healthy() {
        assert_eq!(classify_checkers(3, 16), Observation::Healthy); // 18.75%
        assert_eq!(classify_checkers(2, 16), Observation::Unhealthy); // 12.5%
        assert_eq!(classify_checkers(18, 100), Observation::Unhealthy); // exactly 18%
        assert_eq!(classify_checkers(0, 0), Observation::Unknown);
        assert_eq!(classify_checkers(9, 50), Observation::Unhealthy); // exactly 18%
        assert_eq!(classify_checkers(10, 50), Observation::Healthy); // 20%
    }

    #[test]
    fn probe_timeouts_are_unknown_unless_a_peer_answered() {
        let ok = ProbeResult::Status { code: 200 };
        assert_eq!(classify_probe(&ok, false), Observation::Healthy);
        let down = ProbeResult::Status { code: 503 };
        assert_eq!(classify_probe(&down, false), Observation::Unhealthy);
        assert_eq!(
            classify_probe(&ProbeResult::Refused, false),
            Observation::Unhealthy
        );
        assert_eq!(
            classify_probe(&ProbeResult::Timeout, false),
            Observation::Unknown
        );
        assert_eq!(
            classify_probe(&ProbeResult::Timeout, true),
            Observation::Unhealthy
        );
    }

    #[test]
    fn the_health_record_answers_route53s_verdict_and_anything_else_is_unknown() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            classify_health_record(&words(&["healthy"])),
            Observation::Healthy
        );
        assert_eq!(
            classify_health_record(&words(&["unhealthy"])),
            Observation::Unhealthy
        );
        for other in [
            words(&[]),
            words(&["healthy", "unhealthy"]),
            words(&["HEALTHY"]),
            words(&["192.0.2.1"]),
        ] {
            assert_eq!(
                classify_health_record(&other),
                Observation::Unknown,
                "{other:?}"
            );
        }
    }

    #[test]
    fn route53s_two_paths_are_one_vantage_point_and_doubt_never_fails_a_region() {
        use Observation::{Healthy as H, Unhealthy as U, Unknown as X};
        for (dns, api, want) in [
            (H, H, H),
            (H, U, H),
            (U, H, H),
            (H, X, H),
            (X, H, H),
            (U, U, U),
            (U, X, U),
            (X, U, U),
            (X, X, X),
        ] {
            assert_eq!(combine_route53(dns, api), want, "dns {dns}, api {api}");
        }
    }
}
