//! The simulated AWS world: Aurora, EKS, Auto Scaling, Route53 and the regions' health, with the
//! seed's timings.
//!
//! Pure data and functions of `now`: every call first advances the world to `now`, then answers
//! or mutates, as AWS would. Durations are drawn from the seed and the resource, not from a
//! shared random stream, so a serial and a concurrent plan see the same timings. No I/O here;
//! `super` persists the world and implements the provider traits on it.

use crate::core::health::ProbeResult;
use crate::core::ids::RegionName;
use crate::core::plan::{ChangeAction, RecordChange};
use crate::core::time::Timestamp;
use crate::core::topology::{LatencyRecord, Sizes, Topology};
use crate::provider::{
    AsgState, ChangeStatus, CheckerReport, DnsType, FailoverState, GlobalCluster, GlobalMember,
    NodegroupState, ProviderError, UpdateState,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Version of the serialized world.
pub const WORLD_VERSION: u32 = 1;

/// Route53 runs this many checkers per health check in the simulator.
pub const CHECKERS: u32 = 16;

/// The region whose outage also takes down Route53's control plane, when configured so.
const GLOBAL: &str = "global";

/// How long things take, as ranges drawn from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimTimings {
    /// Aurora failover or switchover: from the call until the writer flips (seed: 2-3 min).
    pub promotion: (Duration, Duration),
    /// Time in `pending` before `failing-over` starts.
    pub promotion_pending: Duration,
    /// Node group scale-up until the update is Successful (seed: 2-5 min).
    pub nodegroup_scale_up: (Duration, Duration),
    /// Node group config change that adds no node.
    pub nodegroup_other: Duration,
    /// Auto Scaling instances reaching InService.
    pub asg_scale_up: (Duration, Duration),
    /// Route53 change until INSYNC (seed: up to 60 s).
    pub dns_propagation: (Duration, Duration),
}

impl Default for SimTimings {
    fn default() -> Self {
        let secs = Duration::from_secs;
        SimTimings {
            promotion: (secs(120), secs(180)),
            promotion_pending: secs(10),
            nodegroup_scale_up: (secs(120), secs(300)),
            nodegroup_other: secs(30),
            asg_scale_up: (secs(60), secs(180)),
            dns_propagation: (secs(20), secs(60)),
        }
    }
}

/// How a region is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutageKind {
    /// The region is dark: health checks and `/health` fail, regional APIs error.
    Full,
    /// Only the application fails: health checks and `/health` fail, APIs work.
    App,
}

/// An error kind injected into calls of one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// `Throttling`.
    Throttle,
    /// HTTP 5xx / connection failure.
    Unavailable,
    /// `AccessDenied`.
    AccessDenied,
    /// The service answers, slowly (the sim waits `latency` first).
    Latency,
}

/// Pending faults for one operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// API name, such as `FailoverGlobalCluster`.
    pub operation: String,
    /// What goes wrong.
    pub kind: FaultKind,
    /// How many more calls it affects.
    pub remaining: u32,
    /// For latency faults: how long each affected call takes.
    #[serde(default)]
    pub latency_ms: u64,
}

/// One EKS update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodegroupUpdate {
    /// Update id.
    pub id: String,
    /// The request token it was made with.
    pub token: String,
    /// `InProgress` or `Successful`.
    pub status: String,
    /// When it completes.
    pub completes_at: Timestamp,
}

/// One node group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodegroupWorld {
    /// Scaling config.
    pub sizes: Sizes,
    /// Nodes that are Ready.
    pub ready_nodes: u32,
    /// Updates, oldest first.
    pub updates: Vec<NodegroupUpdate>,
}

/// One Auto Scaling group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsgWorld {
    /// Sizes.
    pub sizes: Sizes,
    /// Instances InService.
    pub in_service: u32,
    /// When `in_service` reaches `desired`.
    pub settles_at: Option<Timestamp>,
}

/// One region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionWorld {
    /// Current outage, if any.
    pub outage: Option<OutageKind>,
    /// Share of Route53 checkers that see the region fail while it is up (0.0-1.0).
    pub failing_checkers: f64,
    /// Replication lag of this region's cluster when it is a secondary, ms.
    pub lag_ms: u64,
    /// Replication to this region's cluster stopped at this time (the writer lives on): the
    /// lag, and the data at risk, grow as time passes.
    #[serde(default)]
    pub stalled_since: Option<Timestamp>,
    /// The region's Route53 health check.
    pub health_check_id: String,
    /// EKS cluster name.
    pub eks_cluster: String,
    /// Node groups by name.
    pub nodegroups: BTreeMap<String, NodegroupWorld>,
    /// Auto Scaling groups by name.
    pub asgs: BTreeMap<String, AsgWorld>,
}

/// A promotion in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionWorld {
    /// Region the writer leaves.
    pub from: RegionName,
    /// Region it moves to.
    pub to: RegionName,
    /// Unplanned failover (true) or switchover.
    pub allow_data_loss: bool,
    /// When it was requested.
    pub started_at: Timestamp,
    /// When the writer flips and FailoverState clears.
    pub completes_at: Timestamp,
}

/// A finished promotion, for reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionRecord {
    /// Region the writer left.
    pub from: RegionName,
    /// Region it moved to.
    pub to: RegionName,
    /// When the writer flipped.
    pub at: Timestamp,
    /// Writes lost: the target's replication lag when it was promoted.
    pub data_loss_ms: u64,
}

/// One Aurora member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberWorld {
    /// Region.
    pub region: RegionName,
    /// Cluster id.
    pub db_cluster_id: String,
    /// Writer or not.
    pub is_writer: bool,
}

/// A Route53 change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeWorld {
    /// Change id.
    pub id: String,
    /// When it becomes INSYNC.
    pub insync_at: Timestamp,
}

/// A mutating call that reached the simulated AWS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// When.
    pub at: Timestamp,
    /// API name.
    pub operation: String,
    /// Region or `global`.
    pub region: String,
    /// The resource, for counting per resource.
    pub resource: String,
    /// For a promotion that allows data loss: the target's true replication lag when the call
    /// arrived, in milliseconds (the writes it may lose).
    #[serde(default)]
    pub lag_ms: Option<u64>,
}

impl RegionWorld {
    /// What Route53's checkers report about this region: every checker fails during an
    /// outage, otherwise the failing share rounded to whole checkers. `GetHealthCheckStatus` and
    /// the simulated DNS answers both read this, so they never disagree.
    pub fn checker_report(&self) -> CheckerReport {
        let failing = if self.outage.is_some() {
            CHECKERS
        } else {
            ((self.failing_checkers.clamp(0.0, 1.0) * f64::from(CHECKERS)).round()) as u32
        };
        CheckerReport {
            healthy: CHECKERS - failing,
            total: CHECKERS,
        }
    }
}

/// The whole simulated world.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct World {
    /// Schema version.
    pub version: u32,
    /// Seed of the durations.
    pub seed: u64,
    /// The latest time the world has been advanced to.
    pub now: Timestamp,
    /// Wall time at which the world's clock read `sim_epoch` (file-backed worlds).
    pub wall_epoch: Timestamp,
    /// See `wall_epoch`.
    pub sim_epoch: Timestamp,
    /// Simulated seconds per wall second (file-backed worlds).
    pub time_scale: f64,
    /// Timings.
    pub timings: SimTimings,
    /// Regions by name.
    pub regions: BTreeMap<RegionName, RegionWorld>,
    /// Global cluster id.
    pub global_cluster_id: String,
    /// Aurora members.
    pub members: Vec<MemberWorld>,
    /// Promotion in flight.
    pub promotion: Option<PromotionWorld>,
    /// Finished promotions.
    pub promotions: Vec<PromotionRecord>,
    /// Hosted zone.
    pub hosted_zone_id: String,
    /// Latency records.
    pub records: Vec<LatencyRecord>,
    /// Route53 changes.
    pub changes: Vec<ChangeWorld>,
    /// Whether Route53's control plane answers.
    pub dns_control_plane_up: bool,
    /// dr itself is cut off: every API call fails and every probe times out.
    #[serde(default)]
    pub isolated: bool,
    /// Only dr's own probes are blocked (a firewall on its path to the regions): every probe
    /// times out while the APIs answer.
    #[serde(default)]
    pub probes_blocked: bool,
    /// Regions dr is cut off from (a partition between dr and the region alone): dr's probes
    /// and its calls to the region's endpoints get no answer, while Route53's checkers and the
    /// rest of the world still reach it.
    #[serde(default)]
    pub cut_off: BTreeSet<RegionName>,
    /// Whether the hosted zone's name servers (Route53's data plane) answer dr.
    #[serde(default = "up")]
    pub dns_data_plane_up: bool,
    /// Each region's health record name (a failover pair of TXT records on its health check),
    /// lowercase, without the trailing dot.
    #[serde(default)]
    pub health_records: BTreeMap<String, RegionName>,
    /// Injected faults.
    pub faults: Vec<Fault>,
    /// Every mutating call, in order.
    pub calls: Vec<CallRecord>,
    next_id: u64,
}

type Answer<T> = Result<T, ProviderError>;

fn up() -> bool {
    true
}

/// A DNS name as compared: lowercase, without the trailing dot.
pub fn dns_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl World {
    /// The seed's world for `topology`: the first region by priority holds the writer, every
    /// group is at its baseline, every region answers in DNS, secondaries lag 2 s.
    pub fn new(topology: &Topology, seed: u64, now: Timestamp) -> World {
        let writer = topology.regions.first().map(|r| r.name.clone());
        let regions = topology
            .regions
            .iter()
            .map(|region| {
                let nodegroups = region
                    .node_groups
                    .iter()
                    .map(|g| {
                        (
                            g.name.clone(),
                            NodegroupWorld {
                                sizes: g.baseline,
                                ready_nodes: g.baseline.desired,
                                updates: Vec::new(),
                            },
                        )
                    })
                    .collect();
                let asgs = region
                    .autoscaling_groups
                    .iter()
                    .map(|g| {
                        (
                            g.name.clone(),
                            AsgWorld {
                                sizes: g.baseline,
                                in_service: g.baseline.desired,
                                settles_at: None,
                            },
                        )
                    })
                    .collect();
                (
                    region.name.clone(),
                    RegionWorld {
                        outage: None,
                        failing_checkers: 0.0,
                        lag_ms: 2_000,
                        stalled_since: None,
                        health_check_id: region.health_check_id.clone(),
                        eks_cluster: region.eks_cluster.clone(),
                        nodegroups,
                        asgs,
                    },
                )
            })
            .collect();
        World {
            version: WORLD_VERSION,
            seed,
            now,
            wall_epoch: now,
            sim_epoch: now,
            time_scale: 1.0,
            timings: SimTimings::default(),
            regions,
            global_cluster_id: topology.global_cluster_id.clone(),
            members: topology
                .regions
                .iter()
                .map(|r| MemberWorld {
                    region: r.name.clone(),
                    db_cluster_id: r.db_cluster_id.clone(),
                    is_writer: Some(&r.name) == writer.as_ref(),
                })
                .collect(),
            promotion: None,
            promotions: Vec::new(),
            hosted_zone_id: topology.dns.hosted_zone_id.clone(),
            records: topology
                .regions
                .iter()
                .map(|r| LatencyRecord::for_region(&topology.dns, r))
                .collect(),
            changes: Vec::new(),
            dns_control_plane_up: true,
            isolated: false,
            probes_blocked: false,
            cut_off: BTreeSet::new(),
            dns_data_plane_up: true,
            health_records: topology
                .regions
                .iter()
                .map(|r| (dns_name(&topology.dns.health_record(r)), r.name.clone()))
                .collect(),
            faults: Vec::new(),
            calls: Vec::new(),
            next_id: 1,
        }
    }

    /// A duration in `range`, fixed by the seed and `key`.
    fn draw(&self, key: &str, range: (Duration, Duration)) -> Duration {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for byte in key.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        // splitmix64 finaliser for a well-spread value.
        hash ^= hash >> 30;
        hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        hash ^= hash >> 27;
        hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
        hash ^= hash >> 31;
        let (lo, hi) = (range.0.as_millis() as u64, range.1.as_millis() as u64);
        let span = hi.saturating_sub(lo);
        let offset = if span == 0 { 0 } else { hash % (span + 1) };
        // Whole seconds keep reports readable.
        Duration::from_secs((lo + offset).div_ceil(1000))
    }

    fn next_id(&mut self, prefix: &str) -> String {
        let id = format!("{prefix}{:06}", self.next_id);
        self.next_id += 1;
        id
    }

    /// Moves the world forward to `now`, completing whatever is due.
    pub fn advance(&mut self, now: Timestamp) {
        if now <= self.now {
            return;
        }
        self.now = now;
        if let Some(promotion) = self.promotion.clone()
            && promotion.completes_at <= now
        {
            {
                let data_loss_ms = if promotion.allow_data_loss {
                    self.true_lag_ms(&promotion.to)
                } else {
                    0
                };
                for member in &mut self.members {
                    member.is_writer = member.region == promotion.to;
                }
                self.promotions.push(PromotionRecord {
                    from: promotion.from.clone(),
                    to: promotion.to.clone(),
                    at: promotion.completes_at,
                    data_loss_ms,
                });
                self.promotion = None;
            }
        }
        for region in self.regions.values_mut() {
            for group in region.nodegroups.values_mut() {
                for update in &mut group.updates {
                    if update.status == "InProgress" && update.completes_at <= now {
                        update.status = "Successful".to_string();
                        group.ready_nodes = group.sizes.desired;
                    }
                }
            }
            for group in region.asgs.values_mut() {
                if group.settles_at.is_some_and(|at| at <= now) {
                    group.in_service = group.sizes.desired;
                    group.settles_at = None;
                }
            }
        }
    }

    /// Takes one matching fault, if any. Latency faults return their delay instead of failing.
    /// While dr is isolated every call fails as unreachable.
    pub fn take_fault(&mut self, operation: &str, region: &str) -> Result<Duration, ProviderError> {
        if self.isolated {
            return Err(ProviderError::Unavailable {
                operation: operation.to_string(),
                region: region.to_string(),
                detail: "could not connect: dr's own network is cut off".into(),
            });
        }
        let Some(fault) = self
            .faults
            .iter_mut()
            .find(|f| f.operation == operation && f.remaining > 0)
        else {
            return Ok(Duration::ZERO);
        };
        fault.remaining -= 1;
        let (operation, region) = (operation.to_string(), region.to_string());
        match fault.kind {
            FaultKind::Latency => Ok(Duration::from_millis(fault.latency_ms)),
            FaultKind::Throttle => Err(ProviderError::Throttled {
                operation,
                region,
                detail: "Rate exceeded (injected)".into(),
            }),
            FaultKind::Unavailable => Err(ProviderError::Unavailable {
                operation,
                region,
                detail: "HTTP 503 (injected)".into(),
            }),
            FaultKind::AccessDenied => {
                let action = iam_action(&operation);
                Err(ProviderError::AccessDenied {
                    operation,
                    region,
                    action,
                })
            }
        }
    }

    fn regional(&self, operation: &str, region: &RegionName) -> Answer<&RegionWorld> {
        let world = self
            .regions
            .get(region)
            .ok_or_else(|| ProviderError::Unavailable {
                operation: operation.into(),
                region: region.to_string(),
                detail: "the simulator has no such region".into(),
            })?;
        if world.outage == Some(OutageKind::Full) {
            return Err(ProviderError::Unavailable {
                operation: operation.into(),
                region: region.to_string(),
                detail: format!(
                    "could not connect to the {operation} endpoint in {region} (regional outage)"
                ),
            });
        }
        if self.cut_off.contains(region) {
            return Err(ProviderError::Unavailable {
                operation: operation.into(),
                region: region.to_string(),
                detail: format!(
                    "could not connect to the {operation} endpoint in {region} (dr is cut off from {region})"
                ),
            });
        }
        Ok(world)
    }

    fn route53(&self, operation: &str) -> Answer<()> {
        if self.dns_control_plane_up {
            Ok(())
        } else {
            Err(ProviderError::Unavailable {
                operation: operation.into(),
                region: GLOBAL.into(),
                detail: "Route53's control plane (us-east-1) does not answer".into(),
            })
        }
    }

    fn record_call(&mut self, operation: &str, region: &str, resource: &str) {
        self.calls.push(CallRecord {
            at: self.now,
            operation: operation.into(),
            region: region.into(),
            resource: resource.into(),
            lag_ms: None,
        });
    }

    /// `DescribeGlobalClusters`.
    pub fn describe_global_cluster(&self, region: &RegionName, id: &str) -> Answer<GlobalCluster> {
        let op = "DescribeGlobalClusters";
        self.regional(op, region)?;
        if id != self.global_cluster_id {
            return Err(not_found(
                op,
                region,
                &format!("global cluster {id}"),
                "database.global_cluster_id",
            ));
        }
        let failover_state = self.promotion.as_ref().map(|p| FailoverState {
            status: if self.now < p.started_at.plus(self.timings.promotion_pending) {
                "pending".to_string()
            } else if p.allow_data_loss {
                "failing-over".to_string()
            } else {
                "switching-over".to_string()
            },
            from_region: Some(p.from.clone()),
            to_region: Some(p.to.clone()),
            is_data_loss_allowed: p.allow_data_loss,
        });
        Ok(GlobalCluster {
            id: id.to_string(),
            status: failover_state
                .as_ref()
                .map(|f| f.status.clone())
                .unwrap_or_else(|| "available".to_string()),
            members: self
                .members
                .iter()
                .map(|m| GlobalMember {
                    region: m.region.clone(),
                    db_cluster_id: m.db_cluster_id.clone(),
                    is_writer: m.is_writer,
                })
                .collect(),
            failover_state,
        })
    }

    /// `FailoverGlobalCluster` or `SwitchoverGlobalCluster`.
    pub fn promote(
        &mut self,
        region: &RegionName,
        id: &str,
        target_db_cluster_id: &str,
        allow_data_loss: bool,
    ) -> Answer<()> {
        let op = if allow_data_loss {
            "FailoverGlobalCluster"
        } else {
            "SwitchoverGlobalCluster"
        };
        self.regional(op, region)?;
        if id != self.global_cluster_id {
            return Err(not_found(
                op,
                region,
                &format!("global cluster {id}"),
                "database.global_cluster_id",
            ));
        }
        let Some(target) = self
            .members
            .iter()
            .find(|m| m.db_cluster_id == target_db_cluster_id)
            .cloned()
        else {
            return Err(not_found(
                op,
                region,
                &format!("cluster {target_db_cluster_id}"),
                "region.database.cluster_id",
            ));
        };
        let invalid = |detail: String| ProviderError::InvalidState {
            operation: op.into(),
            region: region.to_string(),
            detail,
        };
        if self.promotion.is_some() {
            return Err(invalid(
                "InvalidGlobalClusterStateFault: a failover or switchover is already in progress"
                    .into(),
            ));
        }
        if target.is_writer {
            return Err(invalid(format!(
                "InvalidDBClusterStateFault: {target_db_cluster_id} is already the primary cluster"
            )));
        }
        let writer = self.members.iter().find(|m| m.is_writer).cloned();
        let from = writer
            .as_ref()
            .map(|w| w.region.clone())
            .unwrap_or_else(|| target.region.clone());
        if !allow_data_loss {
            let writer_down = self
                .regions
                .get(&from)
                .is_some_and(|r| r.outage == Some(OutageKind::Full));
            if writer_down {
                return Err(invalid(format!(
                    "InvalidGlobalClusterStateFault: a switchover needs the primary in {from} available; use a failover"
                )));
            }
        }
        let key = format!("promote/{}/{}", target.region, self.promotions.len());
        let duration = self.draw(&key, self.timings.promotion);
        self.promotion = Some(PromotionWorld {
            from,
            to: target.region.clone(),
            allow_data_loss,
            started_at: self.now,
            completes_at: self.now.plus(duration),
        });
        self.record_call(op, region.as_str(), target_db_cluster_id);
        let true_lag = self
            .regions
            .contains_key(&target.region)
            .then(|| self.true_lag_ms(&target.region));
        if allow_data_loss && let Some(call) = self.calls.last_mut() {
            call.lag_ms = true_lag;
        }
        Ok(())
    }

    fn nodegroup(
        &self,
        op: &str,
        region: &RegionName,
        cluster: &str,
        name: &str,
    ) -> Answer<&NodegroupWorld> {
        let world = self.regional(op, region)?;
        if world.eks_cluster != cluster {
            return Err(not_found(
                op,
                region,
                &format!("EKS cluster {cluster}"),
                "region.eks.cluster",
            ));
        }
        world.nodegroups.get(name).ok_or_else(|| {
            not_found(
                op,
                region,
                &format!("node group {cluster}/{name}"),
                "region.eks.node_group.name",
            )
        })
    }

    /// `DescribeNodegroup`.
    pub fn describe_nodegroup(
        &self,
        region: &RegionName,
        cluster: &str,
        name: &str,
    ) -> Answer<NodegroupState> {
        let group = self.nodegroup("DescribeNodegroup", region, cluster, name)?;
        let updating = group.updates.iter().any(|u| u.status == "InProgress");
        Ok(NodegroupState {
            sizes: group.sizes,
            status: if updating { "UPDATING" } else { "ACTIVE" }.to_string(),
        })
    }

    /// `UpdateNodegroupConfig`.
    pub fn update_nodegroup(
        &mut self,
        region: &RegionName,
        cluster: &str,
        name: &str,
        sizes: Sizes,
        token: &str,
    ) -> Answer<String> {
        let op = "UpdateNodegroupConfig";
        let group = self.nodegroup(op, region, cluster, name)?;
        if let Some(existing) = group.updates.iter().find(|u| u.token == token) {
            return Ok(existing.id.clone());
        }
        if group.updates.iter().any(|u| u.status == "InProgress") {
            return Err(ProviderError::InvalidState {
                operation: op.into(),
                region: region.to_string(),
                detail: format!(
                    "ResourceInUseException: node group {name} has an update in progress"
                ),
            });
        }
        let adds_nodes = sizes.desired > group.ready_nodes;
        let key = format!("nodegroup/{region}/{name}/{}", group.updates.len());
        let duration = if adds_nodes {
            self.draw(&key, self.timings.nodegroup_scale_up)
        } else {
            self.timings.nodegroup_other
        };
        let id = self.next_id("upd-");
        let completes_at = self.now.plus(duration);
        let group = self
            .regions
            .get_mut(region)
            .and_then(|r| r.nodegroups.get_mut(name))
            .expect("checked above");
        group.sizes = sizes;
        group.updates.push(NodegroupUpdate {
            id: id.clone(),
            token: token.to_string(),
            status: "InProgress".into(),
            completes_at,
        });
        self.record_call(op, region.as_str(), &format!("{cluster}/{name}"));
        Ok(id)
    }

    /// `DescribeUpdate`.
    pub fn describe_update(
        &self,
        region: &RegionName,
        cluster: &str,
        name: &str,
        update_id: &str,
    ) -> Answer<UpdateState> {
        let op = "DescribeUpdate";
        let group = self.nodegroup(op, region, cluster, name)?;
        let update = group
            .updates
            .iter()
            .find(|u| u.id == update_id)
            .ok_or_else(|| {
                not_found(
                    op,
                    region,
                    &format!("update {update_id}"),
                    "(none: the id came from UpdateNodegroupConfig)",
                )
            })?;
        Ok(UpdateState {
            status: update.status.clone(),
            errors: Vec::new(),
        })
    }

    fn asg(&self, op: &str, region: &RegionName, name: &str) -> Answer<&AsgWorld> {
        self.regional(op, region)?.asgs.get(name).ok_or_else(|| {
            not_found(
                op,
                region,
                &format!("Auto Scaling group {name}"),
                "region.autoscaling_group.name",
            )
        })
    }

    /// `DescribeAutoScalingGroups`.
    pub fn describe_asg(&self, region: &RegionName, name: &str) -> Answer<AsgState> {
        let group = self.asg("DescribeAutoScalingGroups", region, name)?;
        Ok(AsgState {
            sizes: group.sizes,
            in_service: group.in_service,
        })
    }

    /// `UpdateAutoScalingGroup`.
    pub fn update_asg(&mut self, region: &RegionName, name: &str, sizes: Sizes) -> Answer<()> {
        let op = "UpdateAutoScalingGroup";
        let group = self.asg(op, region, name)?;
        let earlier = self.calls.iter().filter(|c| c.resource == name).count();
        let key = format!("asg/{region}/{name}/{earlier}");
        let settles_at = if sizes.desired > group.in_service {
            Some(self.now.plus(self.draw(&key, self.timings.asg_scale_up)))
        } else {
            None
        };
        let group = self
            .regions
            .get_mut(region)
            .and_then(|r| r.asgs.get_mut(name))
            .expect("checked above");
        group.sizes = sizes;
        match settles_at {
            Some(at) => group.settles_at = Some(at),
            None => group.in_service = sizes.desired,
        }
        self.record_call(op, region.as_str(), name);
        Ok(())
    }

    /// `ListResourceRecordSets` for one name.
    pub fn list_records(&self, zone: &str, name: &str) -> Answer<Vec<LatencyRecord>> {
        let op = "ListResourceRecordSets";
        self.route53(op)?;
        if zone != self.hosted_zone_id {
            return Err(not_found(
                op,
                &RegionName::new(GLOBAL),
                &format!("hosted zone {zone}"),
                "dns.hosted_zone_id",
            ));
        }
        Ok(self
            .records
            .iter()
            .filter(|r| r.name == name)
            .cloned()
            .collect())
    }

    /// `ChangeResourceRecordSets`: all changes apply, or none.
    pub fn change_records(&mut self, zone: &str, changes: &[RecordChange]) -> Answer<String> {
        let op = "ChangeResourceRecordSets";
        self.route53(op)?;
        if zone != self.hosted_zone_id {
            return Err(not_found(
                op,
                &RegionName::new(GLOBAL),
                &format!("hosted zone {zone}"),
                "dns.hosted_zone_id",
            ));
        }
        let mut records = self.records.clone();
        for change in changes {
            let position = records.iter().position(|r| {
                r.name == change.record.name && r.set_identifier == change.record.set_identifier
            });
            match (change.action, position) {
                (ChangeAction::Upsert, Some(i)) => records[i] = change.record.clone(),
                (ChangeAction::Upsert, None) => records.push(change.record.clone()),
                (ChangeAction::Delete, Some(i)) if records[i] == change.record => {
                    records.remove(i);
                }
                (ChangeAction::Delete, _) => {
                    return Err(ProviderError::InvalidState {
                        operation: op.into(),
                        region: GLOBAL.into(),
                        detail: format!(
                            "InvalidChangeBatch: tried to delete record set {} ({}) but it was not found or its values differ",
                            change.record.name, change.record.set_identifier
                        ),
                    });
                }
            }
        }
        self.records = records;
        let key = format!("dns/{}", self.changes.len());
        let insync_at = self.now.plus(self.draw(&key, self.timings.dns_propagation));
        let id = self.next_id("C");
        self.changes.push(ChangeWorld {
            id: id.clone(),
            insync_at,
        });
        self.record_call(op, GLOBAL, zone);
        Ok(id)
    }

    /// `GetChange`.
    pub fn get_change(&self, id: &str) -> Answer<ChangeStatus> {
        let op = "GetChange";
        self.route53(op)?;
        let change = self.changes.iter().find(|c| c.id == id).ok_or_else(|| {
            not_found(
                op,
                &RegionName::new(GLOBAL),
                &format!("change {id}"),
                "(none: the id came from ChangeResourceRecordSets)",
            )
        })?;
        Ok(if change.insync_at <= self.now {
            ChangeStatus::Insync
        } else {
            ChangeStatus::Pending
        })
    }

    fn region_by_check(&self, health_check_id: &str) -> Option<(&RegionName, &RegionWorld)> {
        self.regions
            .iter()
            .find(|(_, r)| r.health_check_id == health_check_id)
    }

    /// `GetHealthCheckStatus`: Route53's checkers' view.
    pub fn checker_report(&self, health_check_id: &str) -> Answer<CheckerReport> {
        let op = "GetHealthCheckStatus";
        self.route53(op)?;
        let (_, region) = self.region_by_check(health_check_id).ok_or_else(|| {
            not_found(
                op,
                &RegionName::new(GLOBAL),
                &format!("health check {health_check_id}"),
                "region.health_check_id",
            )
        })?;
        Ok(region.checker_report())
    }

    /// `dr`'s probe of a region's `/health`.
    pub fn probe(&self, region: &RegionName) -> ProbeResult {
        if self.isolated || self.probes_blocked || self.cut_off.contains(region) {
            return ProbeResult::Timeout;
        }
        match self.regions.get(region).and_then(|r| r.outage) {
            None if self.regions.contains_key(region) => ProbeResult::Status { code: 200 },
            None => ProbeResult::Refused,
            Some(OutageKind::App) => ProbeResult::Status { code: 503 },
            Some(OutageKind::Full) => ProbeResult::Timeout,
        }
    }

    /// `AuroraGlobalDBRPOLag` of a secondary, read in its own region.
    pub fn lag(&self, region: &RegionName, db_cluster_id: &str) -> Answer<Option<Duration>> {
        self.regional("GetMetricData", region)?;
        let member = self
            .members
            .iter()
            .find(|m| m.db_cluster_id == db_cluster_id);
        Ok(match member {
            Some(m) if !m.is_writer => Some(Duration::from_millis(self.true_lag_ms(region))),
            _ => None,
        })
    }

    /// A secondary's lag now: its set lag, plus the time since its replication stalled.
    pub fn true_lag_ms(&self, region: &RegionName) -> u64 {
        self.regions
            .get(region)
            .map(|r| {
                let stalled = r
                    .stalled_since
                    .map(|since| self.now.since(since).as_millis() as u64)
                    .unwrap_or(0);
                r.lag_ms + stalled
            })
            .unwrap_or(0)
    }

    /// Stops (true) or restarts (false) replication to a secondary.
    pub fn set_stalled(&mut self, region: &RegionName, stalled: bool) -> Result<(), String> {
        let now = self.now;
        let world = self
            .regions
            .get_mut(region)
            .ok_or_else(|| format!("region `{region}` is not in the simulated world"))?;
        world.stalled_since = if stalled {
            world.stalled_since.or(Some(now))
        } else {
            None
        };
        Ok(())
    }

    /// What the hosted zone's name servers answer dr for `name` and `rtype`: Route53's data
    /// plane, computed from the records and the health checks, whether or not the control plane
    /// answers. A region's health record answers "healthy" or "unhealthy" by its health check;
    /// the latency records answer the values of every record whose health check is healthy (all
    /// of them when none is).
    pub fn dns_answers(&self, name: &str, rtype: DnsType) -> Answer<Vec<String>> {
        if self.isolated || !self.dns_data_plane_up {
            return Err(ProviderError::Unavailable {
                operation: "DNS query".into(),
                region: "route53-data-plane".into(),
                detail: if self.isolated {
                    "no name server answered: dr's own network is cut off".into()
                } else {
                    "no name server answered".into()
                },
            });
        }
        let name = dns_name(name);
        if let Some(region) = self.health_records.get(&name) {
            if rtype != DnsType::Txt {
                return Ok(Vec::new());
            }
            let healthy = self.regions.get(region).is_some_and(|r| {
                let report = r.checker_report();
                crate::core::health::route53_counts_healthy(report.healthy, report.total)
            });
            return Ok(vec![
                if healthy {
                    crate::core::health::HEALTH_RECORD_HEALTHY
                } else {
                    crate::core::health::HEALTH_RECORD_UNHEALTHY
                }
                .to_string(),
            ]);
        }
        let records: Vec<&LatencyRecord> = self
            .records
            .iter()
            .filter(|r| dns_name(&r.name) == name && DnsType::parse(&r.record_type) == Some(rtype))
            .collect();
        let healthy: Vec<&LatencyRecord> = records
            .iter()
            .copied()
            .filter(|r| {
                self.regions.get(&r.region).is_some_and(|w| {
                    let report = w.checker_report();
                    crate::core::health::route53_counts_healthy(report.healthy, report.total)
                })
            })
            .collect();
        let answering = if healthy.is_empty() { records } else { healthy };
        let mut values: Vec<String> = answering
            .iter()
            .flat_map(|r| r.values.iter().cloned())
            .collect();
        values.sort();
        values.dedup();
        Ok(values)
    }

    /// Regions Route53 answers with: records present and health check healthy.
    pub fn answering_regions(&self) -> Vec<RegionName> {
        let mut answering: Vec<RegionName> = self
            .records
            .iter()
            .filter(|record| {
                self.regions.get(&record.region).is_some_and(|r| {
                    let report = r.checker_report();
                    crate::core::health::route53_counts_healthy(report.healthy, report.total)
                })
            })
            .map(|r| r.region.clone())
            .collect();
        if answering.is_empty() {
            // Route53 answers with every record when all health checks fail ("fail open").
            answering = self.records.iter().map(|r| r.region.clone()).collect();
        }
        answering.sort();
        answering.dedup();
        answering
    }

    /// The writer's region.
    pub fn writer_region(&self) -> Option<RegionName> {
        self.members
            .iter()
            .find(|m| m.is_writer)
            .map(|m| m.region.clone())
    }

    /// How many times an operation reached the world.
    pub fn call_count(&self, operation: &str) -> usize {
        self.calls
            .iter()
            .filter(|c| c.operation == operation)
            .count()
    }

    /// Starts or ends an outage.
    pub fn set_outage(
        &mut self,
        region: &RegionName,
        outage: Option<OutageKind>,
    ) -> Result<(), String> {
        let world = self
            .regions
            .get_mut(region)
            .ok_or_else(|| format!("region `{region}` is not in the simulated world"))?;
        world.outage = outage;
        Ok(())
    }

    /// Sets the share of Route53 checkers that see a region fail.
    pub fn set_failing_checkers(&mut self, region: &RegionName, share: f64) -> Result<(), String> {
        if !(0.0..=1.0).contains(&share) {
            return Err(format!("share {share} must be between 0 and 1"));
        }
        let world = self
            .regions
            .get_mut(region)
            .ok_or_else(|| format!("region `{region}` is not in the simulated world"))?;
        world.failing_checkers = share;
        Ok(())
    }

    /// Sets a secondary region's replication lag.
    pub fn set_lag(&mut self, region: &RegionName, lag: Duration) -> Result<(), String> {
        let world = self
            .regions
            .get_mut(region)
            .ok_or_else(|| format!("region `{region}` is not in the simulated world"))?;
        world.lag_ms = lag.as_millis() as u64;
        Ok(())
    }
}

fn not_found(
    operation: &str,
    region: &RegionName,
    resource: &str,
    config_key: &str,
) -> ProviderError {
    ProviderError::NotFound {
        operation: operation.into(),
        region: region.to_string(),
        resource: resource.into(),
        config_key: config_key.into(),
    }
}

/// The IAM action an API operation needs.
pub fn iam_action(operation: &str) -> String {
    let service = match operation {
        "DescribeGlobalClusters" | "FailoverGlobalCluster" | "SwitchoverGlobalCluster" => "rds",
        "DescribeNodegroup" | "UpdateNodegroupConfig" | "DescribeUpdate" => "eks",
        "DescribeAutoScalingGroups" | "UpdateAutoScalingGroup" => "autoscaling",
        "GetMetricData" => "cloudwatch",
        _ => "route53",
    };
    format!("{service}:{operation}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::path::Path;

    fn topology() -> Topology {
        config::parse(
            include_str!("../../../config/example.toml"),
            Path::new("x.toml"),
        )
        .unwrap()
        .topology
    }

    fn world() -> World {
        World::new(&topology(), 1, Timestamp(0))
    }

    #[test]
    fn a_failover_flips_the_writer_after_two_to_three_minutes() {
        let mut w = world();
        let west = RegionName::new("us-west-2");
        w.promote(
            &west,
            "yt-video-creator-global",
            "yt-video-creator-west",
            true,
        )
        .unwrap();
        let state = w
            .describe_global_cluster(&west, "yt-video-creator-global")
            .unwrap();
        assert_eq!(state.failover_state.unwrap().status, "pending");
        w.advance(Timestamp(60_000));
        let state = w
            .describe_global_cluster(&west, "yt-video-creator-global")
            .unwrap();
        assert_eq!(
            state.failover_state.as_ref().unwrap().status,
            "failing-over"
        );
        assert_eq!(state.writer().unwrap().region.as_str(), "us-east-1");
        w.advance(Timestamp(180_000));
        let state = w
            .describe_global_cluster(&west, "yt-video-creator-global")
            .unwrap();
        assert!(state.failover_state.is_none());
        assert_eq!(state.writer().unwrap().region, west);
        assert_eq!(w.promotions[0].data_loss_ms, 2_000);
        let took = w.promotions[0].at.since(Timestamp(0)).as_secs();
        assert!((120..=180).contains(&took), "{took}");
    }

    #[test]
    fn a_regional_outage_fails_that_regions_apis_and_probes() {
        let mut w = world();
        let east = RegionName::new("us-east-1");
        w.set_outage(&east, Some(OutageKind::Full)).unwrap();
        assert!(matches!(
            w.describe_global_cluster(&east, "yt-video-creator-global"),
            Err(ProviderError::Unavailable { .. })
        ));
        assert_eq!(w.probe(&east), ProbeResult::Timeout);
        let report = w
            .checker_report("0f1e2d3c-east-4b5a-8c7d-000000000001")
            .unwrap();
        assert_eq!(report.healthy, 0);
        assert_eq!(w.answering_regions(), vec![RegionName::new("us-west-2")]);
    }

    #[test]
    fn the_same_token_returns_the_same_update() {
        let mut w = world();
        let west = RegionName::new("us-west-2");
        let sizes = Sizes {
            min: 3,
            max: 10,
            desired: 3,
        };
        let a = w
            .update_nodegroup(&west, "yt-video-creator-west", "general", sizes, "t1")
            .unwrap();
        let b = w
            .update_nodegroup(&west, "yt-video-creator-west", "general", sizes, "t1")
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(w.call_count("UpdateNodegroupConfig"), 1);
        assert!(
            w.update_nodegroup(&west, "yt-video-creator-west", "general", sizes, "t2")
                .is_err()
        );
    }

    #[test]
    fn a_minority_of_failing_checkers_keeps_the_region_healthy() {
        let mut w = world();
        let east = RegionName::new("us-east-1");
        w.set_failing_checkers(&east, 0.5).unwrap();
        let report = w
            .checker_report("0f1e2d3c-east-4b5a-8c7d-000000000001")
            .unwrap();
        assert_eq!((report.healthy, report.total), (8, 16));
        assert_eq!(w.answering_regions().len(), 2);
    }

    #[test]
    fn the_checker_report_and_the_dns_answers_never_disagree() {
        // At every failing share, including the ones that round to the 18% threshold, the
        // report dr reads and the simulated DNS apply the one integer rule.
        let east = RegionName::new("us-east-1");
        for percent in 0..=100 {
            let mut w = world();
            w.set_failing_checkers(&east, f64::from(percent) / 100.0)
                .unwrap();
            let report = w
                .checker_report("0f1e2d3c-east-4b5a-8c7d-000000000001")
                .unwrap();
            let healthy = crate::core::health::classify_checkers(report.healthy, report.total)
                == crate::core::health::Observation::Healthy;
            assert_eq!(
                healthy,
                w.answering_regions().contains(&east),
                "{percent}% failing: report {}/{}",
                report.healthy,
                report.total
            );
        }
    }

    #[test]
    fn deleting_a_record_that_differs_is_refused_and_changes_nothing() {
        let mut w = world();
        let mut record = w.records[0].clone();
        record.values = vec!["192.0.2.99".into()];
        let before = w.records.clone();
        let err = w.change_records(
            &w.hosted_zone_id.clone(),
            &[RecordChange {
                action: ChangeAction::Delete,
                record,
            }],
        );
        assert!(matches!(err, Err(ProviderError::InvalidState { .. })));
        assert_eq!(w.records, before);
    }

    #[test]
    fn draws_are_fixed_by_seed_and_key() {
        let w = world();
        let range = (Duration::from_secs(120), Duration::from_secs(300));
        assert_eq!(w.draw("k", range), w.draw("k", range));
        let spread: std::collections::BTreeSet<_> =
            (0..50).map(|i| w.draw(&format!("k{i}"), range)).collect();
        assert!(spread.len() > 10);
        assert!(spread.iter().all(|d| *d >= range.0 && *d <= range.1));
    }

    #[test]
    fn the_name_servers_answer_from_health_checks_whether_or_not_the_control_plane_answers() {
        use crate::provider::DnsType;
        let topology = topology();
        let mut world = World::new(&topology, 1, Timestamp(0));
        let east_record = topology.dns.health_record(&topology.regions[0]);
        assert_eq!(east_record, "us-east-1.dr-health.api.ytvideocreator.com");
        let txt = |w: &World| {
            w.dns_answers(&format!("{east_record}."), DnsType::Txt)
                .unwrap()
        };
        let serving = |w: &World| w.dns_answers("API.ytvideocreator.com", DnsType::A).unwrap();
        assert_eq!(txt(&world), vec!["healthy"]);
        assert_eq!(serving(&world), vec!["198.51.100.20", "203.0.113.10"]);
        world.dns_control_plane_up = false;
        assert!(
            world
                .checker_report(&topology.regions[0].health_check_id)
                .is_err()
        );
        assert_eq!(txt(&world), vec!["healthy"]);
        // Route53's 18% rule, through the data plane too: 13 of 16 failing leaves 3 healthy
        // (18.75%), 14 leaves 2 (12.5%).
        world
            .set_failing_checkers(&"us-east-1".into(), 13.0 / 16.0)
            .unwrap();
        assert_eq!(txt(&world), vec!["healthy"]);
        world
            .set_failing_checkers(&"us-east-1".into(), 14.0 / 16.0)
            .unwrap();
        assert_eq!(txt(&world), vec!["unhealthy"]);
        assert_eq!(serving(&world), vec!["198.51.100.20"]);
        world
            .set_outage(&"us-west-2".into(), Some(OutageKind::Full))
            .unwrap();
        // Every health check failing: Route53 answers every record.
        assert_eq!(serving(&world), vec!["198.51.100.20", "203.0.113.10"]);
        assert_eq!(
            world.dns_answers("nothing.example", DnsType::A).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            world.dns_answers(&east_record, DnsType::A).unwrap(),
            Vec::<String>::new()
        );
        world.dns_data_plane_up = false;
        assert!(world.dns_answers(&east_record, DnsType::Txt).is_err());
    }

    #[test]
    fn a_partition_from_one_region_cuts_dr_only() {
        let topology = topology();
        let mut world = World::new(&topology, 1, Timestamp(0));
        let east: RegionName = "us-east-1".into();
        world.cut_off.insert(east.clone());
        assert_eq!(world.probe(&east), ProbeResult::Timeout);
        assert_eq!(
            world.probe(&"us-west-2".into()),
            ProbeResult::Status { code: 200 }
        );
        assert!(world.lag(&east, "yt-video-creator-east").is_err());
        // Route53's checkers still reach it.
        let report = world
            .checker_report(&topology.regions[0].health_check_id)
            .unwrap();
        assert_eq!(report.healthy, report.total);
    }

    #[test]
    fn a_stalled_replication_grows_the_lag_and_the_data_at_risk() {
        let topology = topology();
        let mut world = World::new(&topology, 1, Timestamp(0));
        let west: RegionName = "us-west-2".into();
        world.set_stalled(&west, true).unwrap();
        world.advance(Timestamp(60_000));
        assert_eq!(world.true_lag_ms(&west), 62_000);
        world.set_stalled(&west, false).unwrap();
        assert_eq!(world.true_lag_ms(&west), 2_000);
        assert!(world.set_stalled(&"nowhere".into(), true).is_err());
    }
}
