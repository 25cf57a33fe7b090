//! The providers on real AWS, through the official AWS SDK for Rust.
//!
//! One client per service per region, built once from one loaded SDK config (the standard
//! credential and endpoint chain). Every call goes through `call::Policy`, which sets the
//! attempt time limit and the retries by what the call does, and turns errors into
//! `ProviderError`s that name the IAM action or the config key at fault. Route53 is global:
//! one client, and one rate limiter that keeps every Route53 call, `GetHealthCheckStatus`
//! included, under the configured rate whatever the number of regions.
//!
//! The SDK operations this module calls are exactly the ones in `runbooks/iam-policy.json`;
//! `tests/runbooks.rs` reads this folder's source to hold that true.
//!
//! `authoritative` is the exception to the SDK: Route53's data plane, read with DNS queries to
//! the hosted zone's name servers, which keep answering when the control plane is dark.

pub mod authoritative;
pub mod call;
mod cloudwatch;
mod compute;
pub mod data_plane;
mod database;
mod dns;
pub mod probe;

pub use authoritative::Authoritative;
pub use cloudwatch::CloudWatchLag;
pub use compute::EksAutoScaling;
pub use database::Aurora;
pub use dns::Route53;
pub use probe::HttpProbe;

use crate::config::AwsSettings;
use crate::core::ids::RegionName;
use crate::core::topology::Topology;
use crate::provider::Providers;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use call::Policy;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Every AWS operation `dr` calls, as (IAM service prefix, operation). `runbooks/iam-policy.json`
/// grants exactly these, and `tests/runbooks.rs` checks this list against the SDK calls in this
/// folder's source.
pub const OPERATIONS: &[(&str, &str)] = &[
    ("rds", "DescribeGlobalClusters"),
    ("rds", "FailoverGlobalCluster"),
    ("rds", "SwitchoverGlobalCluster"),
    ("eks", "DescribeNodegroup"),
    ("eks", "UpdateNodegroupConfig"),
    ("eks", "DescribeUpdate"),
    ("autoscaling", "DescribeAutoScalingGroups"),
    ("autoscaling", "UpdateAutoScalingGroup"),
    ("route53", "ListResourceRecordSets"),
    ("route53", "ChangeResourceRecordSets"),
    ("route53", "GetChange"),
    ("route53", "GetHealthCheckStatus"),
    ("cloudwatch", "GetMetricData"),
];

/// The SDK config loader: the standard credential and endpoint chain, the configured profile and
/// endpoint, and no SDK-level retries (the policy in `call` retries instead).
pub fn sdk_config_loader(settings: &AwsSettings) -> aws_config::ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        // The attempt time limit is `call::Policy`'s alone, so a timeout is always known as one.
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3).min(settings.attempt_timeout))
                .build(),
        );
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader
}

/// The shared retry and timeout policy from the config.
pub fn policy(settings: &AwsSettings) -> Policy {
    Policy {
        max_attempts: settings.max_attempts,
        attempt_timeout: settings.attempt_timeout,
        ..Policy::default()
    }
}

/// Every provider on AWS for `topology`: clients for each configured region, built once.
pub async fn connect(settings: &AwsSettings, topology: &Topology) -> Providers {
    let sdk = sdk_config_loader(settings).load().await;
    connect_with(&sdk, settings, topology)
}

/// Every provider on AWS, from an already loaded SDK config.
pub fn connect_with(sdk: &SdkConfig, settings: &AwsSettings, topology: &Topology) -> Providers {
    let policy = policy(settings);
    let resources = Arc::new(Resources::new(topology));
    let mut rds = BTreeMap::new();
    let mut eks = BTreeMap::new();
    let mut asg = BTreeMap::new();
    let mut cw = BTreeMap::new();
    for region in &topology.regions {
        let r = Region::new(region.name.to_string());
        rds.insert(
            region.name.clone(),
            aws_sdk_rds::Client::from_conf(
                aws_sdk_rds::config::Builder::from(sdk)
                    .region(r.clone())
                    .build(),
            ),
        );
        eks.insert(
            region.name.clone(),
            aws_sdk_eks::Client::from_conf(
                aws_sdk_eks::config::Builder::from(sdk)
                    .region(r.clone())
                    .build(),
            ),
        );
        asg.insert(
            region.name.clone(),
            aws_sdk_autoscaling::Client::from_conf(
                aws_sdk_autoscaling::config::Builder::from(sdk)
                    .region(r.clone())
                    .build(),
            ),
        );
        cw.insert(
            region.name.clone(),
            aws_sdk_cloudwatch::Client::from_conf(
                aws_sdk_cloudwatch::config::Builder::from(sdk)
                    .region(r)
                    .build(),
            ),
        );
    }
    // Route53's control plane lives in us-east-1.
    let route53 = aws_sdk_route53::Client::from_conf(
        aws_sdk_route53::config::Builder::from(sdk)
            .region(Region::new("us-east-1"))
            .build(),
    );
    let dns = Arc::new(Route53::new(
        route53,
        policy.clone(),
        settings.route53_requests_per_second,
        resources.clone(),
    ));
    Providers {
        database: Arc::new(Aurora::new(rds, policy.clone(), resources.clone())),
        compute: Arc::new(EksAutoScaling::new(
            eks,
            asg,
            policy.clone(),
            resources.clone(),
        )),
        dns: dns.clone(),
        health_checks: dns,
        probe: Arc::new(HttpProbe::new()),
        lag: Arc::new(CloudWatchLag::new(cw, policy, resources)),
        answers: Arc::new(data_plane::NameServers::new(
            topology.dns.name_servers.clone(),
            data_plane::PER_SERVER_TIMEOUT,
        )),
    }
}

/// Which config key names each resource, so a missing one is reported with the key to fix.
#[derive(Debug, Default)]
pub struct Resources {
    keys: BTreeMap<String, String>,
}

impl Resources {
    /// The resources of `topology`.
    pub fn new(topology: &Topology) -> Resources {
        let mut keys = BTreeMap::new();
        keys.insert(
            format!("global-cluster:{}", topology.global_cluster_id),
            "database.global_cluster_id".to_string(),
        );
        keys.insert(
            format!("hosted-zone:{}", topology.dns.hosted_zone_id),
            "dns.hosted_zone_id".to_string(),
        );
        for region in &topology.regions {
            let at = |what: &str| format!("[[region]] name = \"{}\": {what}", region.name);
            keys.insert(
                format!("db-cluster:{}:{}", region.name, region.db_cluster_id),
                at("database.cluster_id"),
            );
            keys.insert(
                format!("eks-cluster:{}:{}", region.name, region.eks_cluster),
                at("eks.cluster"),
            );
            for group in &region.node_groups {
                keys.insert(
                    format!("nodegroup:{}:{}", region.name, group.name),
                    at(&format!("eks.node_group name = \"{}\"", group.name)),
                );
            }
            for group in &region.autoscaling_groups {
                keys.insert(
                    format!("asg:{}:{}", region.name, group.name),
                    at(&format!("autoscaling_group name = \"{}\"", group.name)),
                );
            }
            keys.insert(
                format!("health-check:{}", region.health_check_id),
                at("health_check_id"),
            );
        }
        Resources { keys }
    }

    /// The config key of resource `kind:id`, or a generic pointer at the config.
    pub fn key(&self, kind: &str, id: &str) -> String {
        self.keys
            .get(&format!("{kind}:{id}"))
            .cloned()
            .unwrap_or_else(|| format!("the config entry that names {id}"))
    }

    /// The config key of a regional resource.
    pub fn regional_key(&self, kind: &str, region: &RegionName, id: &str) -> String {
        self.key(kind, &format!("{region}:{id}"))
    }
}

/// The region in an ARN (`arn:aws:rds:us-west-2:123456789012:cluster:name`).
pub fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

/// The last part of an ARN (`name` in `...:cluster:name`).
pub fn arn_name(arn: &str) -> &str {
    arn.rsplit(':').next().unwrap_or(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_are_split_into_region_and_name() {
        let arn = "arn:aws:rds:us-west-2:123456789012:cluster:yt-video-creator-west";
        assert_eq!(arn_region(arn), Some("us-west-2"));
        assert_eq!(arn_name(arn), "yt-video-creator-west");
        assert_eq!(arn_region("arn:aws:rds::123:global-cluster:g"), None);
    }

    #[test]
    fn a_resource_maps_to_the_config_key_that_names_it() {
        let config = crate::config::parse(
            include_str!("../../../config/example.toml"),
            std::path::Path::new("x.toml"),
        )
        .unwrap();
        let resources = Resources::new(&config.topology);
        assert_eq!(
            resources.regional_key("nodegroup", &RegionName::new("us-west-2"), "general"),
            "[[region]] name = \"us-west-2\": eks.node_group name = \"general\""
        );
        assert_eq!(
            resources.key("global-cluster", "yt-video-creator-global"),
            "database.global_cluster_id"
        );
    }
}
