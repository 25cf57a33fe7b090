//! Aurora global database: `DescribeGlobalClusters`, `FailoverGlobalCluster`,
//! `SwitchoverGlobalCluster`.

use super::call::{Call, Kind, Policy};
use super::{Resources, arn_name, arn_region};
use crate::core::ids::RegionName;
use crate::provider::{Database, FailoverState, GlobalCluster, GlobalMember, ProviderError};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// `Database` on Aurora, with an RDS client per region.
pub struct Aurora {
    clients: BTreeMap<RegionName, aws_sdk_rds::Client>,
    policy: Policy,
    resources: Arc<Resources>,
    /// Member cluster ARNs seen in `DescribeGlobalClusters`, by (region, cluster id).
    arns: Mutex<BTreeMap<(RegionName, String), String>>,
}

impl Aurora {
    /// From one client per region.
    pub fn new(
        clients: BTreeMap<RegionName, aws_sdk_rds::Client>,
        policy: Policy,
        resources: Arc<Resources>,
    ) -> Aurora {
        Aurora {
            clients,
            policy,
            resources,
            arns: Mutex::new(BTreeMap::new()),
        }
    }

    fn client(
        &self,
        call: &Call,
        region: &RegionName,
    ) -> Result<&aws_sdk_rds::Client, ProviderError> {
        self.clients
            .get(region)
            .ok_or_else(|| call.invalid(format!("{region} is not a region in the config")))
    }

    fn call(&self, operation: &'static str, region: &RegionName, global_cluster_id: &str) -> Call {
        Call {
            service: "rds",
            operation,
            region: region.to_string(),
            resource: format!("global cluster {global_cluster_id}"),
            config_key: self.resources.key("global-cluster", global_cluster_id),
        }
    }

    /// The ARN of `db_cluster_id` in `region`, which the promotion calls need so Aurora can find
    /// the cluster in its region.
    async fn member_arn(
        &self,
        call: &Call,
        region: &RegionName,
        global_cluster_id: &str,
        db_cluster_id: &str,
    ) -> Result<String, ProviderError> {
        let key = (region.clone(), db_cluster_id.to_string());
        if let Some(arn) = self.arns.lock().expect("arn cache").get(&key) {
            return Ok(arn.clone());
        }
        self.describe_global_cluster(region, global_cluster_id)
            .await?;
        self.arns
            .lock()
            .expect("arn cache")
            .get(&key)
            .cloned()
            .ok_or_else(|| ProviderError::NotFound {
                operation: call.operation.to_string(),
                region: region.to_string(),
                resource: format!("cluster {db_cluster_id} as a member of {global_cluster_id}"),
                config_key: self
                    .resources
                    .regional_key("db-cluster", region, db_cluster_id),
            })
    }
}

#[async_trait]
impl Database for Aurora {
    async fn describe_global_cluster(
        &self,
        region: &RegionName,
        global_cluster_id: &str,
    ) -> Result<GlobalCluster, ProviderError> {
        let call = self.call("DescribeGlobalClusters", region, global_cluster_id);
        let client = self.client(&call, region)?;
        let out = self
            .policy
            .run(&call, Kind::Read, || {
                client
                    .describe_global_clusters()
                    .global_cluster_identifier(global_cluster_id)
                    .send()
            })
            .await?;
        let Some(cluster) = out
            .global_clusters()
            .iter()
            .find(|c| c.global_cluster_identifier() == Some(global_cluster_id))
        else {
            return Err(call.not_found());
        };
        let mut members = Vec::new();
        let mut arns = Vec::new();
        for member in cluster.global_cluster_members() {
            let Some(arn) = member.db_cluster_arn() else {
                continue;
            };
            let Some(member_region) = arn_region(arn) else {
                continue;
            };
            let member_region = RegionName::new(member_region);
            let id = arn_name(arn).to_string();
            arns.push(((member_region.clone(), id.clone()), arn.to_string()));
            members.push(GlobalMember {
                region: member_region,
                db_cluster_id: id,
                is_writer: member.is_writer().unwrap_or(false),
            });
        }
        self.arns.lock().expect("arn cache").extend(arns);
        // Status values are compared as strings: the SDK's enums lag behind the service.
        let failover_state = cluster.failover_state().and_then(|state| {
            let status = state.status()?.as_str().to_string();
            Some(FailoverState {
                status,
                from_region: state
                    .from_db_cluster_arn()
                    .and_then(arn_region)
                    .map(RegionName::new),
                to_region: state
                    .to_db_cluster_arn()
                    .and_then(arn_region)
                    .map(RegionName::new),
                is_data_loss_allowed: state.is_data_loss_allowed().unwrap_or(false),
            })
        });
        Ok(GlobalCluster {
            id: global_cluster_id.to_string(),
            status: cluster.status().unwrap_or("unknown").to_string(),
            members,
            failover_state,
        })
    }

    async fn failover_global_cluster(
        &self,
        region: &RegionName,
        global_cluster_id: &str,
        target_db_cluster_id: &str,
        allow_data_loss: bool,
    ) -> Result<(), ProviderError> {
        let call = self.call("FailoverGlobalCluster", region, global_cluster_id);
        let client = self.client(&call, region)?;
        let arn = self
            .member_arn(&call, region, global_cluster_id, target_db_cluster_id)
            .await?;
        self.policy
            .run(&call, Kind::NotIdempotent, || {
                client
                    .failover_global_cluster()
                    .global_cluster_identifier(global_cluster_id)
                    .target_db_cluster_identifier(&arn)
                    .allow_data_loss(allow_data_loss)
                    .send()
            })
            .await?;
        Ok(())
    }

    async fn switchover_global_cluster(
        &self,
        region: &RegionName,
        global_cluster_id: &str,
        target_db_cluster_id: &str,
    ) -> Result<(), ProviderError> {
        let call = self.call("SwitchoverGlobalCluster", region, global_cluster_id);
        let client = self.client(&call, region)?;
        let arn = self
            .member_arn(&call, region, global_cluster_id, target_db_cluster_id)
            .await?;
        self.policy
            .run(&call, Kind::NotIdempotent, || {
                client
                    .switchover_global_cluster()
                    .global_cluster_identifier(global_cluster_id)
                    .target_db_cluster_identifier(&arn)
                    .send()
            })
            .await?;
        Ok(())
    }
}
