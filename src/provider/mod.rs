//! The I/O boundary to the cloud: one trait per kind of provider, and their shared types.
//!
//! Two implementations stand behind every trait: the simulator (`sim`) and AWS. Steps hold
//! `Arc<dyn Trait>` through `Providers` and never know which. Providers report what they see and
//! do what they are told; they make no decisions and keep no plan.
//!
//! `DnsAnswers` (Route53's data plane, asked over DNS) has only the AWS implementation so far,
//! `aws::Authoritative`, and is not part of `Providers` yet.

pub mod aws;
pub mod sim;

use crate::core::health::ProbeResult;
use crate::core::ids::RegionName;
use crate::core::plan::{Operation, RecordChange};
use crate::core::topology::{LatencyRecord, Sizes};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// A provider call that did not work, classified by what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProviderError {
    /// Rate limited; retry with backoff.
    #[error("{operation} in {region} was throttled: {detail}")]
    Throttled {
        /// API name.
        operation: String,
        /// Region (or `global`).
        region: String,
        /// The service's words.
        detail: String,
    },
    /// The endpoint did not answer or answered 5xx; retry.
    #[error("{operation} in {region} is unavailable: {detail}")]
    Unavailable {
        /// API name.
        operation: String,
        /// Region (or `global`).
        region: String,
        /// What failed.
        detail: String,
    },
    /// The credentials lack an IAM action.
    #[error("{operation} in {region} was denied: the credentials need IAM action {action}")]
    AccessDenied {
        /// API name.
        operation: String,
        /// Region (or `global`).
        region: String,
        /// The IAM action to grant.
        action: String,
    },
    /// No credentials could be found, or they were refused as invalid or expired.
    #[error(
        "{operation} in {region}: no usable AWS credentials ({detail}); set AWS_PROFILE (or [aws] profile), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with an IRSA web identity, then try again"
    )]
    NoCredentials {
        /// API name.
        operation: String,
        /// Region (or `global`).
        region: String,
        /// What the credential chain said.
        detail: String,
    },
    /// A resource named in the config does not exist.
    #[error("{operation} in {region}: {resource} does not exist; check {config_key} in the config")]
    NotFound {
        /// API name.
        operation: String,
        /// Region (or `global`).
        region: String,
        /// The missing resource.
        resource: String,
        /// The config key that names it.
        config_key: String,
    },
    /// The service refused the call in the resource's current state.
    #[error("{operation} in {region} was refused: {detail}")]
    InvalidState {
        /// API name.
        operation: String,
        /// Region (or `global`).
        region: String,
        /// The service's words.
        detail: String,
    },
    /// The endpoint does not serve the operation at all (HTTP 404 or 501 without a "no such
    /// resource" code): the endpoint or the service's availability is wrong, not a resource id.
    #[error(
        "{operation} in {region} is not served by the endpoint ({detail}); check [aws] endpoint_url (or AWS_ENDPOINT_URL) and that the service is offered in {region}, no resource id in the config is at fault"
    )]
    NotServed {
        /// API name.
        operation: String,
        /// Region (or `global`).
        region: String,
        /// The service's words.
        detail: String,
    },
}

impl ProviderError {
    /// True when trying again later may work.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProviderError::Throttled { .. } | ProviderError::Unavailable { .. }
        )
    }
}

/// One member of an Aurora global cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalMember {
    /// The member's region.
    pub region: RegionName,
    /// The member's cluster identifier.
    pub db_cluster_id: String,
    /// Whether it is the writer.
    pub is_writer: bool,
}

/// A failover or switchover in progress, as `DescribeGlobalClusters` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverState {
    /// `pending`, `failing-over`, `switching-over` or `cancelling`. Compared as a string: the
    /// SDK's enum lacks `switching-over`.
    pub status: String,
    /// Region the writer leaves.
    pub from_region: Option<RegionName>,
    /// Region the writer moves to.
    pub to_region: Option<RegionName>,
    /// True for an unplanned failover.
    pub is_data_loss_allowed: bool,
}

/// An Aurora global cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalCluster {
    /// Identifier.
    pub id: String,
    /// Status string (`available`, `failing-over`, ...).
    pub status: String,
    /// Members.
    pub members: Vec<GlobalMember>,
    /// The operation in flight, if any.
    pub failover_state: Option<FailoverState>,
}

impl GlobalCluster {
    /// The writer member.
    pub fn writer(&self) -> Option<&GlobalMember> {
        self.members.iter().find(|m| m.is_writer)
    }

    /// The member in `region`.
    pub fn member_in(&self, region: &RegionName) -> Option<&GlobalMember> {
        self.members.iter().find(|m| &m.region == region)
    }
}

/// The Aurora global database.
#[async_trait]
pub trait Database: Send + Sync {
    /// `DescribeGlobalClusters`, sent to `region`'s endpoint.
    async fn describe_global_cluster(
        &self,
        region: &RegionName,
        global_cluster_id: &str,
    ) -> Result<GlobalCluster, ProviderError>;

    /// `FailoverGlobalCluster` with `AllowDataLoss`, sent to the target `region`.
    async fn failover_global_cluster(
        &self,
        region: &RegionName,
        global_cluster_id: &str,
        target_db_cluster_id: &str,
        allow_data_loss: bool,
    ) -> Result<(), ProviderError>;

    /// `SwitchoverGlobalCluster`, sent to the target `region`.
    async fn switchover_global_cluster(
        &self,
        region: &RegionName,
        global_cluster_id: &str,
        target_db_cluster_id: &str,
    ) -> Result<(), ProviderError>;
}

/// An EKS node group as `DescribeNodegroup` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodegroupState {
    /// Current scaling config.
    pub sizes: Sizes,
    /// `ACTIVE`, `UPDATING`, ...
    pub status: String,
}

/// An EKS update as `DescribeUpdate` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateState {
    /// `InProgress`, `Successful`, `Failed` or `Cancelled`.
    pub status: String,
    /// Error messages of a failed update.
    pub errors: Vec<String>,
}

/// An Auto Scaling group as `DescribeAutoScalingGroups` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsgState {
    /// Current sizes.
    pub sizes: Sizes,
    /// Instances InService.
    pub in_service: u32,
}

/// EKS node groups and Auto Scaling groups.
#[async_trait]
pub trait Compute: Send + Sync {
    /// `DescribeNodegroup`.
    async fn describe_nodegroup(
        &self,
        region: &RegionName,
        cluster: &str,
        nodegroup: &str,
    ) -> Result<NodegroupState, ProviderError>;

    /// `UpdateNodegroupConfig`; returns the update id. The same token returns the same update.
    async fn update_nodegroup_config(
        &self,
        region: &RegionName,
        cluster: &str,
        nodegroup: &str,
        sizes: Sizes,
        client_request_token: &str,
    ) -> Result<String, ProviderError>;

    /// `DescribeUpdate`.
    async fn describe_update(
        &self,
        region: &RegionName,
        cluster: &str,
        nodegroup: &str,
        update_id: &str,
    ) -> Result<UpdateState, ProviderError>;

    /// `DescribeAutoScalingGroups` for one group.
    async fn describe_autoscaling_group(
        &self,
        region: &RegionName,
        group: &str,
    ) -> Result<AsgState, ProviderError>;

    /// `UpdateAutoScalingGroup`.
    async fn update_autoscaling_group(
        &self,
        region: &RegionName,
        group: &str,
        sizes: Sizes,
    ) -> Result<(), ProviderError>;
}

/// Whether a Route53 change has reached every authoritative server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeStatus {
    /// Still propagating.
    Pending,
    /// Done.
    Insync,
}

/// Route53 records.
#[async_trait]
pub trait Dns: Send + Sync {
    /// `ListResourceRecordSets`, the latency records of `record_name`.
    async fn list_records(
        &self,
        hosted_zone_id: &str,
        record_name: &str,
    ) -> Result<Vec<LatencyRecord>, ProviderError>;

    /// `ChangeResourceRecordSets`; returns the change id.
    async fn change_records(
        &self,
        hosted_zone_id: &str,
        changes: &[RecordChange],
    ) -> Result<String, ProviderError>;

    /// `GetChange`.
    async fn get_change(&self, change_id: &str) -> Result<ChangeStatus, ProviderError>;
}

/// Route53's checkers' view of one health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckerReport {
    /// Checkers that report healthy.
    pub healthy: u32,
    /// Checkers that report at all.
    pub total: u32,
}

/// A record type read from Route53's data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsType {
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    Aaaa,
    /// An alias to another name.
    Cname,
    /// Text; dr's health records are TXT.
    Txt,
}

impl DnsType {
    /// Every type, in this order.
    pub const ALL: [DnsType; 4] = [DnsType::A, DnsType::Aaaa, DnsType::Cname, DnsType::Txt];

    /// The type as DNS writes it: `A`, `AAAA`, `CNAME` or `TXT`.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsType::A => "A",
            DnsType::Aaaa => "AAAA",
            DnsType::Cname => "CNAME",
            DnsType::Txt => "TXT",
        }
    }

    /// Parses a type as DNS or the config writes it, in any case (`A`, `aaaa`, `Cname`, `txt`).
    pub fn parse(text: &str) -> Option<DnsType> {
        DnsType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

impl std::fmt::Display for DnsType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Route53's data plane: what the hosted zone's authoritative name servers answer.
#[async_trait]
pub trait DnsAnswers: Send + Sync {
    /// The values answered for `name` and `rtype`; empty when the name has none.
    async fn answers(&self, name: &str, rtype: DnsType) -> Result<Vec<String>, ProviderError>;
}

/// Route53 health checks.
#[async_trait]
pub trait HealthChecks: Send + Sync {
    /// `GetHealthCheckStatus`.
    async fn checker_report(&self, health_check_id: &str) -> Result<CheckerReport, ProviderError>;
}

/// `dr`'s own HTTP probe of a region's `/health`.
#[async_trait]
pub trait Probe: Send + Sync {
    /// One GET of `url` (the `/health` of `region`) with a timeout. Every failure is a result.
    async fn probe(&self, region: &RegionName, url: &str, timeout: Duration) -> ProbeResult;
}

/// Aurora global replication lag.
#[async_trait]
pub trait ReplicationLag: Send + Sync {
    /// `AuroraGlobalDBRPOLag` of a secondary cluster, read in its own region. `None` when there
    /// is no recent datapoint (for example, the cluster is the writer).
    async fn lag(
        &self,
        region: &RegionName,
        db_cluster_id: &str,
    ) -> Result<Option<Duration>, ProviderError>;
}

/// Every provider the engine needs, behind its trait.
#[derive(Clone)]
pub struct Providers {
    /// Aurora.
    pub database: Arc<dyn Database>,
    /// EKS and Auto Scaling.
    pub compute: Arc<dyn Compute>,
    /// Route53 records.
    pub dns: Arc<dyn Dns>,
    /// Route53 health checks.
    pub health_checks: Arc<dyn HealthChecks>,
    /// `/health` probes.
    pub probe: Arc<dyn Probe>,
    /// CloudWatch replication lag.
    pub lag: Arc<dyn ReplicationLag>,
}

/// What a mutating call answered: the handle to wait on, when it gives one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Accepted; progress is observed on the resource itself.
    Accepted,
    /// An EKS update was started: `DescribeUpdate` follows it.
    Update(String),
    /// A Route53 change was submitted: `GetChange` follows it.
    Change(String),
}

impl Providers {
    /// Makes exactly the call `operation` describes: the value `dr plan` and a dry run print is
    /// the value executed, so the three cannot drift apart.
    pub async fn execute(&self, operation: &Operation) -> Result<Answer, ProviderError> {
        match operation {
            Operation::FailoverGlobalCluster {
                region,
                global_cluster_id,
                target_db_cluster_id,
                allow_data_loss,
            } => self
                .database
                .failover_global_cluster(
                    region,
                    global_cluster_id,
                    target_db_cluster_id,
                    *allow_data_loss,
                )
                .await
                .map(|()| Answer::Accepted),
            Operation::SwitchoverGlobalCluster {
                region,
                global_cluster_id,
                target_db_cluster_id,
            } => self
                .database
                .switchover_global_cluster(region, global_cluster_id, target_db_cluster_id)
                .await
                .map(|()| Answer::Accepted),
            Operation::UpdateNodegroupConfig {
                region,
                cluster,
                nodegroup,
                sizes,
                client_request_token,
            } => self
                .compute
                .update_nodegroup_config(region, cluster, nodegroup, *sizes, client_request_token)
                .await
                .map(Answer::Update),
            Operation::UpdateAutoScalingGroup {
                region,
                group,
                sizes,
            } => self
                .compute
                .update_autoscaling_group(region, group, *sizes)
                .await
                .map(|()| Answer::Accepted),
            Operation::ChangeResourceRecordSets {
                hosted_zone_id,
                changes,
            } => self
                .dns
                .change_records(hosted_zone_id, changes)
                .await
                .map(Answer::Change),
        }
    }

    /// All six roles played by one value (the simulator implements every trait).
    pub fn all_from<P>(provider: Arc<P>) -> Providers
    where
        P: Database + Compute + Dns + HealthChecks + Probe + ReplicationLag + 'static,
    {
        Providers {
            database: provider.clone(),
            compute: provider.clone(),
            dns: provider.clone(),
            health_checks: provider.clone(),
            probe: provider.clone(),
            lag: provider,
        }
    }
}
