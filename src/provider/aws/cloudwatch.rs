//! Replication lag: CloudWatch `GetMetricData` of `AuroraGlobalDBRPOLag`, read in the
//! secondary's own region.

use super::Resources;
use super::call::{Call, Kind, Policy};
use crate::core::ids::RegionName;
use crate::provider::{ProviderError, ReplicationLag};
use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use aws_smithy_types::DateTime;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How far back a datapoint still counts as recent.
pub const LAG_LOOKBACK: Duration = Duration::from_secs(300);

/// `ReplicationLag` on CloudWatch, with a client per region.
pub struct CloudWatchLag {
    clients: BTreeMap<RegionName, aws_sdk_cloudwatch::Client>,
    policy: Policy,
    resources: Arc<Resources>,
}

impl CloudWatchLag {
    /// From one client per region.
    pub fn new(
        clients: BTreeMap<RegionName, aws_sdk_cloudwatch::Client>,
        policy: Policy,
        resources: Arc<Resources>,
    ) -> CloudWatchLag {
        CloudWatchLag {
            clients,
            policy,
            resources,
        }
    }
}

#[async_trait]
impl ReplicationLag for CloudWatchLag {
    async fn lag(
        &self,
        region: &RegionName,
        db_cluster_id: &str,
    ) -> Result<Option<Duration>, ProviderError> {
        let call = Call {
            service: "cloudwatch",
            operation: "GetMetricData",
            region: region.to_string(),
            resource: format!("AuroraGlobalDBRPOLag of cluster {db_cluster_id}"),
            config_key: self
                .resources
                .regional_key("db-cluster", region, db_cluster_id),
        };
        let client = self
            .clients
            .get(region)
            .ok_or_else(|| call.invalid(format!("{region} is not a region in the config")))?;
        let query = MetricDataQuery::builder()
            .id("lag")
            .metric_stat(
                MetricStat::builder()
                    .metric(
                        Metric::builder()
                            .namespace("AWS/RDS")
                            .metric_name("AuroraGlobalDBRPOLag")
                            .dimensions(
                                Dimension::builder()
                                    .name("DBClusterIdentifier")
                                    .value(db_cluster_id)
                                    .build(),
                            )
                            .build(),
                    )
                    .period(60)
                    .stat("Maximum")
                    .build(),
            )
            .return_data(true)
            .build();
        let now = SystemTime::now();
        let start = now.checked_sub(LAG_LOOKBACK).unwrap_or(now);
        let out = self
            .policy
            .run(&call, Kind::Read, || {
                client
                    .get_metric_data()
                    .metric_data_queries(query.clone())
                    .start_time(DateTime::from(start))
                    .end_time(DateTime::from(now))
                    .scan_by(ScanBy::TimestampDescending)
                    .send()
            })
            .await?;
        // The newest datapoint, in milliseconds.
        let newest = out
            .metric_data_results()
            .iter()
            .filter(|r| r.id() == Some("lag"))
            .flat_map(|r| r.timestamps().iter().zip(r.values()))
            .max_by(|a, b| a.0.cmp(b.0))
            .map(|(_, ms)| *ms);
        match newest {
            None => Ok(None),
            Some(ms) if ms.is_finite() && ms >= 0.0 => {
                Ok(Some(Duration::from_secs_f64(ms / 1000.0)))
            }
            Some(ms) => Err(call.invalid(format!("CloudWatch answered a lag of {ms} ms"))),
        }
    }
}
