//! The deployment as data: regions with their database, compute and DNS resources.
//!
//! Built from the config by `config::load`; read by the planner, the simulator and the providers.
//! It holds no behaviour beyond look-ups, and never names a region.

use super::ids::RegionName;
use serde::{Deserialize, Serialize};

/// Minimum, maximum and desired size of a node group or Auto Scaling group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizes {
    /// Lower bound.
    pub min: u32,
    /// Upper bound.
    pub max: u32,
    /// Size to run at.
    pub desired: u32,
}

impl std::fmt::Display for Sizes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "min={} max={} desired={}",
            self.min, self.max, self.desired
        )
    }
}

/// A scalable group (EKS node group or Auto Scaling group) with its two sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalableGroup {
    /// The group's name in AWS.
    pub name: String,
    /// Size in normal operation.
    pub baseline: Sizes,
    /// Size when this region carries the whole load.
    pub failover: Sizes,
}

/// One region of the deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// The AWS region.
    pub name: RegionName,
    /// Lower is preferred as a failover target.
    pub priority: u32,
    /// The region's Aurora cluster, a member of the global cluster.
    pub db_cluster_id: String,
    /// The region's EKS cluster.
    pub eks_cluster: String,
    /// EKS managed node groups of `eks_cluster`.
    pub node_groups: Vec<ScalableGroup>,
    /// Auto Scaling groups (spot workers).
    pub autoscaling_groups: Vec<ScalableGroup>,
    /// The Route53 health check on this region's `/health`.
    pub health_check_id: String,
    /// The latency record's set identifier.
    pub set_identifier: String,
    /// The values the region's latency record answers with.
    pub record_values: Vec<String>,
    /// The region's `/health` URL, probed by `dr` itself.
    pub health_url: String,
}

/// The hosted zone and latency record set that route users to regions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsTopology {
    /// Route53 hosted zone id.
    pub hosted_zone_id: String,
    /// Fully qualified record name, such as `api.example.com`.
    pub record_name: String,
    /// Record type of the latency records (`A`, `AAAA` or `CNAME`).
    pub record_type: String,
    /// TTL of the latency records, seconds.
    pub ttl: u32,
    /// The hosted zone's authoritative name servers (host or address, optional port), asked
    /// directly: Route53's data plane. Empty: dr reads Route53 through its API only.
    #[serde(default)]
    pub name_servers: Vec<String>,
}

impl DnsTopology {
    /// The name of a region's health record: a failover pair of TXT records that answers
    /// `"healthy"` while the region's health check is healthy and `"unhealthy"` otherwise
    /// (README.md, "Route53's data plane").
    pub fn health_record(&self, region: &Region) -> String {
        health_record_name(&region.set_identifier, &self.record_name)
    }
}

/// The health record of the region whose latency record has `set_identifier` under
/// `record_name` (see `DnsTopology::health_record`).
pub fn health_record_name(set_identifier: &str, record_name: &str) -> String {
    format!(
        "{set_identifier}.dr-health.{}",
        record_name.trim_end_matches('.')
    )
}

/// The whole deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Aurora global cluster identifier.
    pub global_cluster_id: String,
    /// Route53 records.
    pub dns: DnsTopology,
    /// Regions, sorted by priority (most preferred first).
    pub regions: Vec<Region>,
}

impl Topology {
    /// The region with this name.
    pub fn region(&self, name: &RegionName) -> Option<&Region> {
        self.regions.iter().find(|region| &region.name == name)
    }

    /// Region names, in priority order.
    pub fn region_names(&self) -> Vec<RegionName> {
        self.regions.iter().map(|r| r.name.clone()).collect()
    }
}

/// One latency record as the plan wants it, or as Route53 holds it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LatencyRecord {
    /// Record name.
    pub name: String,
    /// Record type.
    pub record_type: String,
    /// Set identifier, unique within the name.
    pub set_identifier: String,
    /// The latency region of the record.
    pub region: RegionName,
    /// TTL in seconds.
    pub ttl: u32,
    /// Answer values.
    pub values: Vec<String>,
    /// The health check that takes the record out of answers when failing.
    pub health_check_id: Option<String>,
}

impl LatencyRecord {
    /// The record a region answers with.
    pub fn for_region(dns: &DnsTopology, region: &Region) -> LatencyRecord {
        LatencyRecord {
            name: dns.record_name.clone(),
            record_type: dns.record_type.clone(),
            set_identifier: region.set_identifier.clone(),
            region: region.name.clone(),
            ttl: dns.ttl,
            values: region.record_values.clone(),
            health_check_id: Some(region.health_check_id.clone()),
        }
    }
}
