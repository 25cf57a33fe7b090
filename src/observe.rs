//! One observation pass over every region: the reads that the daemon's tick and `dr status` both
//! make, in one place, so that what an operator sees is what the daemon judged.
//!
//! An edge, not the core: it calls the providers, bounds every call in time, and returns what
//! each read gave (a value, or why not). Turning a round into verdicts is the core's business
//! (`core::health`, `core::detect`); [`Round::signals`] applies it.

use crate::clock::Clock;
use crate::core::detect::{Signal, Signals};
use crate::core::health::{
    Observation, ProbeResult, classify_checkers, classify_health_record, classify_probe,
    combine_route53,
};
use crate::core::ids::RegionName;
use crate::core::topology::{Region, Topology};
use crate::provider::{CheckerReport, DnsType, Providers};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What one read gave: its value, or why it has none (an error, or no answer in time).
pub type Read<T> = Result<T, String>;

/// What one pass read of one region.
#[derive(Clone, Debug)]
pub struct RegionReading {
    /// The region.
    pub region: RegionName,
    /// Route53's checkers through the control plane (`GetHealthCheckStatus`).
    pub checkers: Read<CheckerReport>,
    /// Route53's checkers through the data plane: what the hosted zone's name servers answer
    /// for the region's health record.
    pub health_record: Read<Vec<String>>,
    /// dr's own `/health` probe.
    pub probe: ProbeResult,
    /// The replication lag of the region's cluster; `None` for the writer's region, which has
    /// no lag of its own. `Ok(None)` when no recent datapoint exists.
    pub lag: Option<Read<Option<Duration>>>,
}

impl RegionReading {
    /// Route53's verdict through its control plane: Unknown when the checkers could not be
    /// read.
    pub fn route53_api(&self) -> Observation {
        match &self.checkers {
            Ok(report) => classify_checkers(report.healthy, report.total),
            Err(_) => Observation::Unknown,
        }
    }

    /// Route53's verdict through its data plane: Unknown when the name servers did not answer
    /// or the health record is missing.
    pub fn route53_dns(&self) -> Observation {
        match &self.health_record {
            Ok(answers) => classify_health_record(answers),
            Err(_) => Observation::Unknown,
        }
    }

    /// Route53's one verdict from both paths (`core::health::combine_route53`).
    pub fn route53(&self) -> Observation {
        combine_route53(self.route53_dns(), self.route53_api())
    }

    /// The lag, when it was read and a recent datapoint exists.
    pub fn lag(&self) -> Option<Duration> {
        match &self.lag {
            Some(Ok(lag)) => *lag,
            _ => None,
        }
    }
}

/// One pass over every region.
#[derive(Clone, Debug)]
pub struct Round {
    /// Each region, in the config's order.
    pub regions: Vec<RegionReading>,
}

impl Round {
    /// Whether any region's `/health` answered at all: when none did, dr's own network is the
    /// likelier fault, and a failed probe says nothing of the region.
    pub fn peer_answered(&self) -> bool {
        self.regions
            .iter()
            .any(|r| matches!(r.probe, ProbeResult::Status { .. }))
    }

    /// The probe's verdict of one region, judged against the rest of the round.
    pub fn probe_verdict(&self, reading: &RegionReading) -> Observation {
        classify_probe(&reading.probe, self.peer_answered())
    }

    /// Every signal of one region in this round, for the detector. `replication_stalled`:
    /// the other regions see replication from this one stalled (the caller follows the lag over
    /// rounds); only then is the database's view in the round, as a witness of failure.
    pub fn signals(&self, reading: &RegionReading, replication_stalled: bool) -> Signals {
        let signals = Signals::of(reading.route53(), self.probe_verdict(reading));
        if replication_stalled {
            signals.with(Signal::Database, Observation::Unhealthy)
        } else {
            signals
        }
    }
}

/// Reads regions through the providers, every call bounded by `call_timeout`.
pub struct Observer<'a> {
    /// The cloud.
    pub providers: &'a Providers,
    /// The regions and their resources.
    pub topology: &'a Topology,
    /// Time, for the bound of each call.
    pub clock: Arc<dyn Clock>,
    /// The longest any one read may take.
    pub call_timeout: Duration,
    /// Timeout of one `/health` probe.
    pub probe_timeout: Duration,
}

impl Observer<'_> {
    /// Waits for `call` at most `call_timeout`. The limit must pass on the clock and in real
    /// time both: a simulator whose clock runs faster than real time must not turn a call that
    /// waits for its state file into a missing answer (a missing answer restarts the daemon's
    /// failure window).
    async fn bounded<T, F>(&self, what: String, call: F) -> Read<T>
    where
        F: Future<Output = Result<T, crate::provider::ProviderError>>,
    {
        let limit = async {
            tokio::join!(
                self.clock.sleep(self.call_timeout),
                tokio::time::sleep(self.call_timeout)
            )
        };
        tokio::select! {
            value = call => value.map_err(|e| e.to_string()),
            _ = limit => Err(format!(
                "{what}: no answer within {}",
                crate::core::time::fmt_duration(self.call_timeout)
            )),
        }
    }

    /// The writer's region, read from the global cluster through every region at once: the
    /// first region to answer with a writer wins (the global cluster's view is the same from
    /// each), so a dark region's timeout never delays the answer. Else why none did.
    pub async fn writer(&self) -> Result<RegionName, Vec<String>> {
        use futures::StreamExt;
        let mut reads: futures::stream::FuturesUnordered<_> = self
            .topology
            .regions
            .iter()
            .map(|region| async move {
                let read = self
                    .bounded(
                        format!("DescribeGlobalClusters in {}", region.name),
                        self.providers.database.describe_global_cluster(
                            &region.name,
                            &self.topology.global_cluster_id,
                        ),
                    )
                    .await;
                (region, read)
            })
            .collect();
        let mut errors = Vec::new();
        while let Some((region, read)) = reads.next().await {
            match read {
                Ok(cluster) => match cluster.writer() {
                    Some(writer) => return Ok(writer.region.clone()),
                    None => {
                        errors.push(format!("{}: the global cluster has no writer", region.name))
                    }
                },
                Err(err) => errors.push(err),
            }
        }
        Err(errors)
    }

    /// Every region, each region's reads made together and the regions side by side.
    pub async fn round(&self, writer: Option<&RegionName>) -> Round {
        let regions =
            futures::future::join_all(self.topology.regions.iter().map(|r| self.region(r, writer)))
                .await;
        Round { regions }
    }

    async fn region(&self, region: &Region, writer: Option<&RegionName>) -> RegionReading {
        let p = self.providers;
        let lag = async {
            if writer == Some(&region.name) {
                None
            } else {
                Some(
                    self.bounded(
                        format!("the replication lag of {}", region.name),
                        p.lag.lag(&region.name, &region.db_cluster_id),
                    )
                    .await,
                )
            }
        };
        let record = self.topology.dns.health_record(region);
        let (checkers, health_record, probe, lag) = tokio::join!(
            self.bounded(
                format!("GetHealthCheckStatus of {}", region.name),
                p.health_checks.checker_report(&region.health_check_id)
            ),
            self.bounded(
                format!("the health record {record}"),
                p.answers.answers(&record, DnsType::Txt)
            ),
            p.probe
                .probe(&region.name, &region.health_url, self.probe_timeout),
            lag,
        );
        RegionReading {
            region: region.name.clone(),
            checkers,
            health_record,
            probe,
            lag,
        }
    }
}
