//! Leadership: which of the daemons (or operator commands) sharing a store may act, and the
//! fence that stops every other one.
//!
//! A `Leadership` keeps the lease of `core::lease` in the store: the holder renews it every
//! `renew_every`; anyone else reads it as often and takes it once it is free or lapsed. Whether
//! this process may act is judged on its own monotonic clock (`epoch`), so a process that was
//! paused, partitioned, or could not reach the store stops on its own before anyone can take
//! over. Everything it writes carries its epoch, and the store refuses a write of an older
//! epoch: a leader that wakes up after a takeover cannot write a step's intent, so it makes no
//! call.

use crate::core::ids::RegionName;
use crate::core::lease::{Judgement, LeaseRecord, LeaseTerms, Sighting, Tenure, judge};
use crate::core::time::Timestamp;
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// This process's monotonic clock: tokio's, so that tests in paused virtual time judge leases
/// in virtual time.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// This process's part in the lease.
#[derive(Clone, Debug)]
enum Role {
    /// It holds the lease.
    Leader(Tenure),
    /// It does not; what it last saw of the lease.
    Standby {
        sighting: Option<Sighting>,
        judgement: Option<Judgement>,
    },
}

/// What a round of the lease changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    None,
    /// This process acquired the lease, with this epoch.
    Won(u64),
    /// This process no longer holds the lease, and why.
    Lost(String),
}

/// The lease as a status shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// `leader` or `standby`.
    pub role: String,
    /// The epoch of the lease as this process last saw it (its own, when it leads).
    pub epoch: Option<u64>,
    /// Who holds it, as far as this process knows.
    pub leader: Option<String>,
    /// The holder's region.
    pub leader_region: Option<RegionName>,
    /// For a standby: how long it has seen no renewal.
    pub silent_for_ms: Option<u64>,
    /// The lease period.
    pub period_ms: u64,
    /// The last error of the store while keeping the lease, if the last round failed.
    pub store_error: Option<String>,
}

/// The lease kept by one process.
pub struct Leadership {
    /// This process's name among those sharing the store.
    pub id: String,
    /// The region it runs in.
    pub region: Option<RegionName>,
    /// The lease's terms.
    pub terms: LeaseTerms,
    /// The process holds an exclusive lock on the store that rules out any other holder (the
    /// executor lock of a file store): a lease left by a process that died is taken at once.
    exclusive: bool,
    role: Mutex<Role>,
    last_error: Mutex<Option<String>>,
}

impl Leadership {
    /// A process that does not hold the lease yet.
    pub fn new(id: &str, region: Option<RegionName>, period: Duration) -> Leadership {
        Leadership {
            id: id.to_string(),
            region,
            terms: LeaseTerms::new(period),
            exclusive: false,
            role: Mutex::new(Role::Standby {
                sighting: None,
                judgement: None,
            }),
            last_error: Mutex::new(None),
        }
    }

    /// The same, for a process that holds an exclusive lock on its store.
    pub fn exclusive(mut self) -> Leadership {
        self.exclusive = true;
        self
    }

    fn role(&self) -> std::sync::MutexGuard<'_, Role> {
        self.role.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The epoch this process may act under now, judged on its monotonic clock; `NotLeader`
    /// if it does not hold the lease or its lease may have lapsed for others.
    pub fn epoch(&self) -> Result<u64, StoreError> {
        match &*self.role() {
            Role::Leader(tenure) if tenure.valid(now()) => Ok(tenure.record.epoch),
            Role::Leader(tenure) => Err(StoreError::NotLeader {
                holder: self.id.clone(),
                why: format!(
                    "its lease of epoch {} was not renewed in time",
                    tenure.record.epoch
                ),
            }),
            Role::Standby { judgement, .. } => Err(StoreError::NotLeader {
                holder: self.id.clone(),
                why: match judgement {
                    Some(Judgement::Held { holder, epoch, .. })
                    | Some(Judgement::Lapsed { holder, epoch, .. }) => {
                        format!("{holder} holds it, epoch {epoch}")
                    }
                    _ => "it has not acquired it".into(),
                },
            }),
        }
    }

    /// Whether this process may act now.
    pub fn leads(&self) -> bool {
        self.epoch().is_ok()
    }

    /// One round: the holder renews; anyone else reads the lease, judges it, and takes it if
    /// it is free or lapsed. `at` is the wall time written for people.
    pub fn round(&self, store: &dyn Store, at: Timestamp) -> Change {
        let result = self.try_round(store, at);
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(change) => {
                *last = None;
                change
            }
            Err(err) => {
                *last = Some(err.to_string());
                drop(last);
                // A holder that cannot reach the store keeps its lease only until it lapses on
                // its own clock.
                let mut role = self.role();
                if let Role::Leader(tenure) = &*role
                    && !tenure.valid(now())
                {
                    let epoch = tenure.record.epoch;
                    *role = Role::Standby {
                        sighting: None,
                        judgement: None,
                    };
                    return Change::Lost(format!(
                        "the lease of epoch {epoch} could not be renewed before it lapsed ({err})"
                    ));
                }
                Change::None
            }
        }
    }

    fn try_round(&self, store: &dyn Store, at: Timestamp) -> Result<Change, StoreError> {
        let current = self.role().clone();
        match current {
            Role::Leader(tenure) => {
                if !tenure.valid(now()) {
                    // Paused, or slow: it may already be someone else's. Stop first; a later
                    // round may take it again the ordinary way.
                    *self.role() = Role::Standby {
                        sighting: None,
                        judgement: None,
                    };
                    return Ok(Change::Lost(format!(
                        "the lease of epoch {} lapsed on this process's clock before it was renewed",
                        tenure.record.epoch
                    )));
                }
                let sent = now();
                let next = tenure.record.renewed(at);
                if store.swap_lease(Some(&tenure.record), &next)? {
                    *self.role() = Role::Leader(Tenure {
                        record: next,
                        valid_until: self.terms.valid_until(sent),
                    });
                    return Ok(Change::None);
                }
                // Someone else wrote the lease, unless an earlier renewal of ours landed after
                // its answer was lost.
                let stored = store.lease()?;
                match stored {
                    Some(record)
                        if record.holder == self.id
                            && record.epoch == tenure.record.epoch
                            && !record.released =>
                    {
                        let next = record.renewed(at);
                        let sent = now();
                        if store.swap_lease(Some(&record), &next)? {
                            *self.role() = Role::Leader(Tenure {
                                record: next,
                                valid_until: self.terms.valid_until(sent),
                            });
                            return Ok(Change::None);
                        }
                        self.step_down(None);
                        Ok(Change::Lost(
                            "the lease changed hands while it was renewed".into(),
                        ))
                    }
                    other => {
                        let why = match &other {
                            Some(record) => format!(
                                "{} took the lease over with epoch {}",
                                record.holder, record.epoch
                            ),
                            None => "the lease is gone from the store".into(),
                        };
                        self.step_down(other.as_ref());
                        Ok(Change::Lost(why))
                    }
                }
            }
            Role::Standby { sighting, .. } => {
                let read = store.lease()?;
                let at_now = now();
                let (sighting, mut judgement) =
                    judge(sighting.as_ref(), read.as_ref(), at_now, self.terms.period);
                if self.exclusive
                    && let Judgement::Held {
                        holder,
                        epoch,
                        silent_for,
                    } = judgement
                {
                    judgement = Judgement::Lapsed {
                        holder,
                        epoch,
                        silent_for,
                    };
                }
                let takeable = matches!(judgement, Judgement::Free | Judgement::Lapsed { .. });
                if takeable {
                    let next = LeaseRecord::successor(
                        read.as_ref(),
                        &self.id,
                        self.region.clone(),
                        self.terms.period,
                        at,
                    );
                    let sent = now();
                    if store.swap_lease(read.as_ref(), &next)? {
                        let epoch = next.epoch;
                        *self.role() = Role::Leader(Tenure {
                            record: next,
                            valid_until: self.terms.valid_until(sent),
                        });
                        return Ok(Change::Won(epoch));
                    }
                }
                *self.role() = Role::Standby {
                    sighting,
                    judgement: Some(judgement),
                };
                Ok(Change::None)
            }
        }
    }

    fn step_down(&self, seen: Option<&LeaseRecord>) {
        *self.role() = Role::Standby {
            sighting: None,
            judgement: seen.map(|r| Judgement::Held {
                holder: r.holder.clone(),
                epoch: r.epoch,
                silent_for: Duration::ZERO,
            }),
        };
    }

    /// Gives the lease up, if held, so that a standby takes over at once (a clean shutdown).
    pub fn release(&self, store: &dyn Store, at: Timestamp) {
        let current = self.role().clone();
        if let Role::Leader(tenure) = current {
            self.step_down(None);
            match store.swap_lease(Some(&tenure.record), &tenure.record.released(at)) {
                Ok(true) => tracing::info!(epoch = tenure.record.epoch, "leader lease released"),
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "the leader lease could not be released; a standby takes over once it lapses")
                }
            }
        }
    }

    /// The lease as this process sees it, for status pages.
    pub fn status(&self) -> LeaseStatus {
        let store_error = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let period_ms = self.terms.period.as_millis() as u64;
        let role = self.role().clone();
        match role {
            Role::Leader(tenure) if tenure.valid(now()) => LeaseStatus {
                role: "leader".into(),
                epoch: Some(tenure.record.epoch),
                leader: Some(self.id.clone()),
                leader_region: self.region.clone(),
                silent_for_ms: None,
                period_ms,
                store_error,
            },
            Role::Leader(tenure) => LeaseStatus {
                role: "standby".into(),
                epoch: Some(tenure.record.epoch),
                leader: None,
                leader_region: None,
                silent_for_ms: None,
                period_ms,
                store_error,
            },
            Role::Standby {
                sighting,
                judgement,
            } => {
                let (epoch, silent) = match &judgement {
                    Some(Judgement::Held {
                        epoch, silent_for, ..
                    })
                    | Some(Judgement::Lapsed {
                        epoch, silent_for, ..
                    }) => (Some(*epoch), Some(silent_for.as_millis() as u64)),
                    _ => (None, None),
                };
                LeaseStatus {
                    role: "standby".into(),
                    epoch,
                    leader: sighting.as_ref().map(|s| s.record.holder.clone()),
                    leader_region: sighting.and_then(|s| s.record.region),
                    silent_for_ms: silent,
                    period_ms,
                    store_error,
                }
            }
        }
    }
}

/// What may write as an executor: any process (`None`: a process with an exclusive lock on its
/// store, a drill, a test), or the holder of the lease, whose writes carry its epoch.
#[derive(Clone, Default)]
pub struct Fence(pub Option<Arc<Leadership>>);

impl Fence {
    /// The epoch to write under now; `NotLeader` if this process may not act.
    pub fn epoch(&self) -> Result<Option<u64>, StoreError> {
        match &self.0 {
            None => Ok(None),
            Some(leadership) => leadership.epoch().map(Some),
        }
    }
}

/// A default daemon id: `DR_DAEMON_ID`'s job when it is not set: the host's name, with the
/// region when there is one (pods of the two clusters' StatefulSets share their names).
pub fn default_id(region: Option<&RegionName>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "dr".to_string());
    match region {
        Some(region) => format!("{host}@{region}"),
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test(start_paused = true)]
    async fn one_of_two_leads_and_the_other_takes_over_a_period_after_the_last_renewal() {
        let store = MemoryStore::new();
        let period = Duration::from_secs(10);
        let east = Leadership::new("east", Some("us-east-1".into()), period);
        let west = Leadership::new("west", Some("us-west-2".into()), period);
        assert_eq!(east.round(&store, Timestamp(0)), Change::Won(1));
        assert_eq!(west.round(&store, Timestamp(0)), Change::None);
        assert_eq!(east.epoch().unwrap(), 1);
        assert!(west.epoch().is_err());
        assert_eq!(west.status().leader.as_deref(), Some("east"));

        // East renews every 2 s for a minute: west never takes over.
        for _ in 0..30 {
            tokio::time::advance(Duration::from_secs(2)).await;
            assert_eq!(east.round(&store, Timestamp(0)), Change::None);
            assert_eq!(west.round(&store, Timestamp(0)), Change::None);
        }
        // East stops (killed, or stopped with SIGSTOP): it stops acting on its own clock 8 s
        // after its last renewal was sent; west takes over 10 s after it saw it.
        let stopped = now();
        let mut east_stopped_acting = None;
        let mut west_won = None;
        while west_won.is_none() {
            tokio::time::advance(Duration::from_millis(500)).await;
            if east_stopped_acting.is_none() && !east.leads() {
                east_stopped_acting = Some(now().duration_since(stopped));
            }
            if let Change::Won(epoch) = west.round(&store, Timestamp(0)) {
                assert_eq!(epoch, 2);
                west_won = Some(now().duration_since(stopped));
            }
        }
        let (east_stopped, west_won) = (east_stopped_acting.unwrap(), west_won.unwrap());
        assert!(east_stopped <= Duration::from_secs(8), "{east_stopped:?}");
        assert!(west_won >= Duration::from_secs(10), "{west_won:?}");
        assert!(east_stopped < west_won);

        // East wakes up: its round sees it lapsed and steps down; its epoch is refused.
        assert!(matches!(east.round(&store, Timestamp(0)), Change::Lost(_)));
        assert!(east.epoch().is_err());
        assert_eq!(east.round(&store, Timestamp(0)), Change::None);
        assert_eq!(east.status().leader.as_deref(), Some("west"));
        assert_eq!(west.status().role, "leader");
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_hands_over_at_once_and_an_exclusive_holder_need_not_wait() {
        let store = MemoryStore::new();
        let period = Duration::from_secs(10);
        let east = Leadership::new("east", None, period);
        let west = Leadership::new("west", None, period);
        assert_eq!(east.round(&store, Timestamp(0)), Change::Won(1));
        west.round(&store, Timestamp(0));
        east.release(&store, Timestamp(1));
        assert!(!east.leads());
        assert_eq!(west.round(&store, Timestamp(2)), Change::Won(2));

        // A process restarted on a file store it holds exclusively takes its old lease at once.
        let restarted = Leadership::new("west", None, period).exclusive();
        assert_eq!(restarted.round(&store, Timestamp(3)), Change::Won(3));
        // And the process it replaced, if it were still there, would be fenced.
        assert!(matches!(west.round(&store, Timestamp(4)), Change::Lost(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_cannot_reach_the_store_stops_within_its_lease() {
        let store = MemoryStore::new();
        let east = Leadership::new("east", None, Duration::from_secs(10));
        assert_eq!(east.round(&store, Timestamp(0)), Change::Won(1));
        // No renewal gets through from now on (the store is unreachable; the emulator tests
        // make it so for real): the monotonic clock alone ends its right to act.
        tokio::time::advance(Duration::from_millis(7_900)).await;
        assert!(east.leads());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(
            !east.leads(),
            "a lease not renewed for 8 s no longer lets it act"
        );
    }
}
