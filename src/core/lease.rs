//! The leader lease, judged: who may act when several daemons share one store.
//!
//! One record in the store says who holds the lease (`holder`), since which acquisition
//! (`epoch`, one more at every acquisition) and how often it was renewed (`beat`). It is only ever
//! replaced by a conditional write that names the record it replaces, so two daemons can never
//! both acquire the same epoch.
//!
//! No wall clocks are compared. The holder judges its own lease by its monotonic clock: it may
//! act until `period - margin` after it *sent* the last renewal that succeeded, so it stops before
//! any contender can think the lease lapsed. A contender judges the lease lapsed only after it has
//! seen the same record (same epoch and beat) for a whole period of its own monotonic clock. The
//! functions here are pure: the instants come from the caller.

use crate::core::ids::RegionName;
use crate::core::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The version of [`LeaseRecord`] this dr writes and reads.
pub const LEASE_VERSION: u32 = 1;

/// The lease as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Format version.
    pub version: u32,
    /// The daemon (or operator's command) that holds it.
    pub holder: String,
    /// The region it runs in, when it says.
    pub region: Option<RegionName>,
    /// Acquisitions so far: each one increments it. Every event a holder writes carries it.
    pub epoch: u64,
    /// Renewals within this epoch.
    pub beat: u64,
    /// The holder's lease period, milliseconds.
    pub period_ms: u64,
    /// Wall time of the write, for people. Never used to judge the lease.
    pub written_at: Timestamp,
    /// The holder gave the lease up (it shut down): anyone may take it at once.
    pub released: bool,
}

impl LeaseRecord {
    /// The record that acquires the lease after `previous` (none: the first ever).
    pub fn successor(
        previous: Option<&LeaseRecord>,
        holder: &str,
        region: Option<RegionName>,
        period: Duration,
        at: Timestamp,
    ) -> LeaseRecord {
        LeaseRecord {
            version: LEASE_VERSION,
            holder: holder.to_string(),
            region,
            epoch: previous.map_or(1, |p| p.epoch + 1),
            beat: 0,
            period_ms: period.as_millis() as u64,
            written_at: at,
            released: false,
        }
    }

    /// The same lease renewed.
    pub fn renewed(&self, at: Timestamp) -> LeaseRecord {
        LeaseRecord {
            beat: self.beat + 1,
            written_at: at,
            ..self.clone()
        }
    }

    /// The same lease given up.
    pub fn released(&self, at: Timestamp) -> LeaseRecord {
        LeaseRecord {
            beat: self.beat + 1,
            written_at: at,
            released: true,
            ..self.clone()
        }
    }

    /// Whether `other` is the same write of the lease (same epoch and beat).
    pub fn same_write(&self, other: &LeaseRecord) -> bool {
        self.epoch == other.epoch && self.beat == other.beat && self.holder == other.holder
    }

    /// The holder's period.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms)
    }
}

/// How long a lease lasts and how its holder keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTerms {
    /// A lease not renewed for this long may be taken over.
    pub period: Duration,
    /// The holder renews this often, and a contender reads the lease this often.
    pub renew_every: Duration,
    /// The holder stops acting this long before its lease could lapse for anyone else: room
    /// for a call in flight, clock rates that differ a little, and a store write that landed
    /// late.
    pub margin: Duration,
}

impl LeaseTerms {
    /// The terms of a period: renewals every fifth of it, a fifth of margin. With the default
    /// 10 s: renewals every 2 s, and the holder acts for at most 8 s after a renewal was sent,
    /// so three renewals may fail before it stops.
    pub fn new(period: Duration) -> LeaseTerms {
        LeaseTerms {
            period,
            renew_every: period / 5,
            margin: period / 5,
        }
    }

    /// Until when the holder may act after a renewal (or acquisition) sent at `sent`.
    pub fn valid_until(&self, sent: Instant) -> Instant {
        sent + self.period.saturating_sub(self.margin)
    }
}

/// The lease as its holder knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenure {
    /// The record last written.
    pub record: LeaseRecord,
    /// Until when it may act, on its monotonic clock.
    pub valid_until: Instant,
}

impl Tenure {
    /// Whether the holder may still act at `now`.
    pub fn valid(&self, now: Instant) -> bool {
        now < self.valid_until
    }
}

/// What a daemon that does not hold the lease has seen of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    /// The record seen.
    pub record: LeaseRecord,
    /// When it was first seen unchanged, on the watcher's monotonic clock.
    pub since: Instant,
}

/// Whether a daemon without the lease may take it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Nobody holds it (never taken, or released): it may be acquired at once.
    Free,
    /// Someone holds it and renewed it within a period, as far as this watcher has seen.
    Held {
        /// Who.
        holder: String,
        /// Its epoch.
        epoch: u64,
        /// How long this watcher has seen no renewal.
        silent_for: Duration,
    },
    /// No renewal seen for a whole period: it may be taken over.
    Lapsed {
        /// Who held it.
        holder: String,
        /// Its epoch.
        epoch: u64,
        /// How long this watcher has seen no renewal.
        silent_for: Duration,
    },
}

/// Judges the lease from what a watcher read at `now`, given what it had seen before. Returns
/// the new sighting to keep. `period` is the watcher's own; the longer of it and the holder's
/// counts, so a holder with a longer lease is never cut short.
pub fn judge(
    previous: Option<&Sighting>,
    read: Option<&LeaseRecord>,
    now: Instant,
    period: Duration,
) -> (Option<Sighting>, Judgement) {
    let Some(record) = read else {
        return (None, Judgement::Free);
    };
    if record.released {
        return (None, Judgement::Free);
    }
    let since = match previous {
        Some(seen) if seen.record.same_write(record) => seen.since,
        _ => now,
    };
    let silent_for = now.saturating_duration_since(since);
    let period = period.max(record.period());
    let judgement = if silent_for >= period {
        Judgement::Lapsed {
            holder: record.holder.clone(),
            epoch: record.epoch,
            silent_for,
        }
    } else {
        Judgement::Held {
            holder: record.holder.clone(),
            epoch: record.epoch,
            silent_for,
        }
    };
    (
        Some(Sighting {
            record: record.clone(),
            since,
        }),
        judgement,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: &str, epoch: u64, beat: u64) -> LeaseRecord {
        LeaseRecord {
            version: LEASE_VERSION,
            holder: holder.into(),
            region: None,
            epoch,
            beat,
            period_ms: 10_000,
            written_at: Timestamp(0),
            released: false,
        }
    }

    #[test]
    fn a_contender_waits_a_whole_period_of_its_own_clock_without_a_renewal() {
        let t0 = Instant::now();
        let period = Duration::from_secs(10);
        let first = record("east", 3, 7);
        let (seen, judgement) = judge(None, Some(&first), t0, period);
        assert!(matches!(judgement, Judgement::Held { .. }));
        // Unchanged for 9.9 s: still held.
        let (seen, judgement) = judge(
            seen.as_ref(),
            Some(&first),
            t0 + Duration::from_millis(9_900),
            period,
        );
        assert!(matches!(judgement, Judgement::Held { .. }), "{judgement:?}");
        // A renewal restarts the count, whatever wall time it carries.
        let mut renewed = first.renewed(Timestamp(0));
        renewed.written_at = Timestamp(i64::MAX / 2);
        let (seen, judgement) = judge(
            seen.as_ref(),
            Some(&renewed),
            t0 + Duration::from_secs(15),
            period,
        );
        assert!(
            matches!(judgement, Judgement::Held { silent_for, .. } if silent_for.is_zero()),
            "{judgement:?}"
        );
        let (_, judgement) = judge(
            seen.as_ref(),
            Some(&renewed),
            t0 + Duration::from_secs(25),
            period,
        );
        assert!(
            matches!(judgement, Judgement::Lapsed { epoch: 3, .. }),
            "{judgement:?}"
        );
    }

    #[test]
    fn a_holder_with_a_longer_period_is_never_cut_short_and_a_release_frees_at_once() {
        let t0 = Instant::now();
        let mut long = record("east", 1, 0);
        long.period_ms = 60_000;
        let (seen, _) = judge(None, Some(&long), t0, Duration::from_secs(10));
        let (_, judgement) = judge(
            seen.as_ref(),
            Some(&long),
            t0 + Duration::from_secs(30),
            Duration::from_secs(10),
        );
        assert!(matches!(judgement, Judgement::Held { .. }), "{judgement:?}");
        let released = long.released(Timestamp(1));
        assert_eq!(
            judge(seen.as_ref(), Some(&released), t0, Duration::from_secs(10)).1,
            Judgement::Free
        );
        assert_eq!(
            judge(None, None, t0, Duration::from_secs(10)).1,
            Judgement::Free
        );
    }

    #[test]
    fn the_holder_stops_before_any_contender_can_judge_the_lease_lapsed() {
        // The holder sends a renewal at `sent`; the write lands, and a contender sees it no
        // earlier than `sent`. The holder's last moment to act comes a margin before the
        // contender's first moment to take over.
        let terms = LeaseTerms::new(Duration::from_secs(10));
        let sent = Instant::now();
        let holder_stops = terms.valid_until(sent);
        let renewal = record("east", 1, 1);
        let (seen, _) = judge(None, Some(&renewal), sent, terms.period);
        let mut t = sent;
        let takeover = loop {
            t += Duration::from_millis(100);
            if let (_, Judgement::Lapsed { .. }) =
                judge(seen.as_ref(), Some(&renewal), t, terms.period)
            {
                break t;
            }
        };
        assert!(holder_stops + terms.margin <= takeover);
        assert_eq!(terms.renew_every, Duration::from_secs(2));
        let successor =
            LeaseRecord::successor(Some(&renewal), "west", None, terms.period, Timestamp(5));
        assert_eq!((successor.epoch, successor.beat), (2, 0));
        assert_eq!(
            LeaseRecord::successor(None, "west", None, terms.period, Timestamp(5)).epoch,
            1
        );
    }
}
