//! EKS managed node groups (`DescribeNodegroup`, `UpdateNodegroupConfig`, `DescribeUpdate`) and
//! Auto Scaling groups (`DescribeAutoScalingGroups`, `UpdateAutoScalingGroup`).

use super::Resources;
use super::call::{Call, Kind, Policy};
use crate::core::ids::RegionName;
use crate::core::topology::Sizes;
use crate::provider::{AsgState, Compute, NodegroupState, ProviderError, UpdateState};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `Compute` on EKS and Auto Scaling, with clients per region.
pub struct EksAutoScaling {
    eks: BTreeMap<RegionName, aws_sdk_eks::Client>,
    autoscaling: BTreeMap<RegionName, aws_sdk_autoscaling::Client>,
    policy: Policy,
    resources: Arc<Resources>,
}

fn size(value: Option<i32>) -> u32 {
    value.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

fn int(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

impl EksAutoScaling {
    /// From clients per region.
    pub fn new(
        eks: BTreeMap<RegionName, aws_sdk_eks::Client>,
        autoscaling: BTreeMap<RegionName, aws_sdk_autoscaling::Client>,
        policy: Policy,
        resources: Arc<Resources>,
    ) -> EksAutoScaling {
        EksAutoScaling {
            eks,
            autoscaling,
            policy,
            resources,
        }
    }

    fn nodegroup_call(
        &self,
        operation: &'static str,
        region: &RegionName,
        cluster: &str,
        nodegroup: &str,
    ) -> Call {
        Call {
            service: "eks",
            operation,
            region: region.to_string(),
            resource: format!("node group {nodegroup} of EKS cluster {cluster}"),
            config_key: format!(
                "{} (and {})",
                self.resources.regional_key("nodegroup", region, nodegroup),
                self.resources.regional_key("eks-cluster", region, cluster)
            ),
        }
    }

    fn asg_call(&self, operation: &'static str, region: &RegionName, group: &str) -> Call {
        Call {
            service: "autoscaling",
            operation,
            region: region.to_string(),
            resource: format!("Auto Scaling group {group}"),
            config_key: self.resources.regional_key("asg", region, group),
        }
    }

    fn eks(&self, call: &Call, region: &RegionName) -> Result<&aws_sdk_eks::Client, ProviderError> {
        self.eks
            .get(region)
            .ok_or_else(|| call.invalid(format!("{region} is not a region in the config")))
    }

    fn asg(
        &self,
        call: &Call,
        region: &RegionName,
    ) -> Result<&aws_sdk_autoscaling::Client, ProviderError> {
        self.autoscaling
            .get(region)
            .ok_or_else(|| call.invalid(format!("{region} is not a region in the config")))
    }
}

#[async_trait]
impl Compute for EksAutoScaling {
    async fn describe_nodegroup(
        &self,
        region: &RegionName,
        cluster: &str,
        nodegroup: &str,
    ) -> Result<NodegroupState, ProviderError> {
        let call = self.nodegroup_call("DescribeNodegroup", region, cluster, nodegroup);
        let client = self.eks(&call, region)?;
        let out = self
            .policy
            .run(&call, Kind::Read, || {
                client
                    .describe_nodegroup()
                    .cluster_name(cluster)
                    .nodegroup_name(nodegroup)
                    .send()
            })
            .await?;
        let group = out.nodegroup().ok_or_else(|| call.not_found())?;
        let scaling = group.scaling_config();
        Ok(NodegroupState {
            sizes: Sizes {
                min: size(scaling.and_then(|s| s.min_size())),
                max: size(scaling.and_then(|s| s.max_size())),
                desired: size(scaling.and_then(|s| s.desired_size())),
            },
            status: group
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "UNKNOWN".into()),
        })
    }

    async fn update_nodegroup_config(
        &self,
        region: &RegionName,
        cluster: &str,
        nodegroup: &str,
        sizes: Sizes,
        client_request_token: &str,
    ) -> Result<String, ProviderError> {
        let call = self.nodegroup_call("UpdateNodegroupConfig", region, cluster, nodegroup);
        let client = self.eks(&call, region)?;
        let scaling = aws_sdk_eks::types::NodegroupScalingConfig::builder()
            .min_size(int(sizes.min))
            .max_size(int(sizes.max))
            .desired_size(int(sizes.desired))
            .build();
        // The request token makes a repeat return the same update, so every transient error
        // may be retried.
        let out = self
            .policy
            .run(&call, Kind::Idempotent, || {
                client
                    .update_nodegroup_config()
                    .cluster_name(cluster)
                    .nodegroup_name(nodegroup)
                    .scaling_config(scaling.clone())
                    .client_request_token(client_request_token)
                    .send()
            })
            .await?;
        out.update()
            .and_then(|u| u.id())
            .map(str::to_string)
            .ok_or_else(|| call.invalid("the answer has no update id"))
    }

    async fn describe_update(
        &self,
        region: &RegionName,
        cluster: &str,
        nodegroup: &str,
        update_id: &str,
    ) -> Result<UpdateState, ProviderError> {
        let call = self.nodegroup_call("DescribeUpdate", region, cluster, nodegroup);
        let client = self.eks(&call, region)?;
        let out = self
            .policy
            .run(&call, Kind::Read, || {
                client
                    .describe_update()
                    .name(cluster)
                    .nodegroup_name(nodegroup)
                    .update_id(update_id)
                    .send()
            })
            .await?;
        let update = out.update().ok_or_else(|| call.not_found())?;
        Ok(UpdateState {
            status: update
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "Unknown".into()),
            errors: update
                .errors()
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.error_code().map(|c| c.as_str()).unwrap_or("error"),
                        e.error_message().unwrap_or("")
                    )
                })
                .collect(),
        })
    }

    async fn describe_autoscaling_group(
        &self,
        region: &RegionName,
        group: &str,
    ) -> Result<AsgState, ProviderError> {
        let call = self.asg_call("DescribeAutoScalingGroups", region, group);
        let client = self.asg(&call, region)?;
        let out = self
            .policy
            .run(&call, Kind::Read, || {
                client
                    .describe_auto_scaling_groups()
                    .auto_scaling_group_names(group)
                    .send()
            })
            .await?;
        // A missing group is an empty list, not an error.
        let found = out
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(group))
            .ok_or_else(|| call.not_found())?;
        let in_service = found
            .instances()
            .iter()
            .filter(|i| {
                i.lifecycle_state().map(|s| s.as_str()) == Some("InService")
                    && i.health_status()
                        .is_none_or(|h| h.eq_ignore_ascii_case("healthy"))
            })
            .count();
        Ok(AsgState {
            sizes: Sizes {
                min: size(found.min_size()),
                max: size(found.max_size()),
                desired: size(found.desired_capacity()),
            },
            in_service: u32::try_from(in_service).unwrap_or(u32::MAX),
        })
    }

    async fn update_autoscaling_group(
        &self,
        region: &RegionName,
        group: &str,
        sizes: Sizes,
    ) -> Result<(), ProviderError> {
        let call = self.asg_call("UpdateAutoScalingGroup", region, group);
        let client = self.asg(&call, region)?;
        // Setting sizes is idempotent: applying it twice leaves the same group.
        self.policy
            .run(&call, Kind::Idempotent, || {
                client
                    .update_auto_scaling_group()
                    .auto_scaling_group_name(group)
                    .min_size(int(sizes.min))
                    .max_size(int(sizes.max))
                    .desired_capacity(int(sizes.desired))
                    .send()
            })
            .await?;
        Ok(())
    }
}
