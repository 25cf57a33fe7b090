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

/// The length of one datapoint of the lag metric.
pub const LAG_PERIOD: Duration = Duration::from_secs(60);

/// The largest lag there can be now, from a datapoint (the maximum over the minute starting at
/// `start`): the lag grows by at most a second per second, so a stale datapoint is aged by the
/// time since its minute ended. A stalled replication whose last datapoint said 1 s therefore
/// reads as minutes, not as 1 s.
pub fn lag_bound(max_ms: f64, start: SystemTime, now: SystemTime) -> Duration {
    let end = start + LAG_PERIOD;
    let age = now.duration_since(end).unwrap_or(Duration::ZERO);
    Duration::from_secs_f64(max_ms / 1000.0) + age
}

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
            .map(|(at, ms)| (*at, *ms));
        match newest {
            None => Ok(None),
            Some((at, ms)) if ms.is_finite() && ms >= 0.0 => {
                let start = SystemTime::try_from(at).unwrap_or(now);
                Ok(Some(lag_bound(ms, start, now)))
            }
            Some((_, ms)) => Err(call.invalid(format!("CloudWatch answered a lag of {ms} ms"))),
        }
    }
}

#[cfg(test)]
mod tests {
    //! CloudWatch at the SDK boundary, with `aws-smithy-mocks`: the Rust client speaks Smithy
    //! RPC v2 CBOR, which moto does not.

    use super::*;
    use aws_sdk_cloudwatch::Client;
    use aws_sdk_cloudwatch::error::ErrorMetadata;
    use aws_sdk_cloudwatch::operation::get_metric_data::{GetMetricDataError, GetMetricDataOutput};
    use aws_sdk_cloudwatch::types::MetricDataResult;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    /// A mocked client configured as `load_sdk_config` configures the real ones: no SDK
    /// retries, so every attempt is the policy's.
    macro_rules! client {
        ($rule:expr) => {
            mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, [$rule], |conf| {
                conf.retry_config(
                    aws_smithy_types::retry::RetryConfig::standard().with_max_attempts(1),
                )
            })
        };
    }

    fn lag_for(client: Client) -> CloudWatchLag {
        let mut clients = BTreeMap::new();
        clients.insert(RegionName::new("us-west-2"), client);
        CloudWatchLag::new(
            clients,
            Policy {
                first_backoff: Duration::from_millis(1),
                ..Policy::default()
            },
            Arc::new(Resources::default()),
        )
    }

    /// An answer with these (second, milliseconds) datapoints, moved in time so that the
    /// newest one is the minute in progress.
    fn datapoints(points: &[(i64, f64)]) -> GetMetricDataOutput {
        let mut result = MetricDataResult::builder()
            .id("lag")
            .label("AuroraGlobalDBRPOLag");
        let newest = points.iter().map(|(s, _)| *s).max().unwrap_or(0);
        let now = DateTime::from(SystemTime::now()).secs();
        for (seconds, ms) in points {
            let at = now - 30 - (newest - seconds);
            result = result.timestamps(DateTime::from_secs(at)).values(*ms);
        }
        GetMetricDataOutput::builder()
            .metric_data_results(result.build())
            .build()
    }

    #[tokio::test]
    async fn the_newest_datapoint_of_the_secondarys_rpo_lag_is_the_lag() {
        let rule = mock!(Client::get_metric_data)
            .match_requests(|req| {
                let query = &req.metric_data_queries()[0];
                let stat = query.metric_stat().unwrap();
                let metric = stat.metric().unwrap();
                metric.namespace() == Some("AWS/RDS")
                    && metric.metric_name() == Some("AuroraGlobalDBRPOLag")
                    && metric.dimensions()[0].name() == Some("DBClusterIdentifier")
                    && metric.dimensions()[0].value() == Some("yt-video-creator-west")
                    && stat.stat() == Some("Maximum")
                    && req.start_time().is_some()
                    && req.end_time().is_some()
            })
            .then_output(|| datapoints(&[(1_000, 900.0), (1_060, 2_500.0), (1_030, 4_000.0)]));
        let lag = lag_for(client!(&rule));
        let read = lag
            .lag(&RegionName::new("us-west-2"), "yt-video-creator-west")
            .await
            .unwrap();
        assert_eq!(read, Some(Duration::from_millis(2_500)));
        assert_eq!(rule.num_calls(), 1);
    }

    #[test]
    fn a_stale_datapoint_is_aged_by_the_time_since_its_minute_ended() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        // Still inside its minute, or just ended: the value as read.
        let fresh = lag_bound(1_000.0, start, start + Duration::from_secs(30));
        assert_eq!(fresh, Duration::from_secs(1));
        // Four minutes after its minute ended, replication may have stalled since.
        let stale = lag_bound(1_000.0, start, start + Duration::from_secs(300));
        assert_eq!(stale, Duration::from_secs(241));
    }

    #[tokio::test]
    async fn no_recent_datapoint_is_no_lag_reading() {
        let rule = mock!(Client::get_metric_data).then_output(|| datapoints(&[]));
        let lag = lag_for(client!(&rule));
        let read = lag
            .lag(&RegionName::new("us-west-2"), "yt-video-creator-west")
            .await
            .unwrap();
        assert_eq!(read, None);
    }

    #[tokio::test]
    async fn a_5xx_is_retried_and_then_read() {
        let rule = mock!(Client::get_metric_data)
            .sequence()
            .http_status(503, None)
            .times(2)
            .output(|| datapoints(&[(1_000, 1_200.0)]))
            .build();
        let lag = lag_for(client!(&rule));
        let read = lag
            .lag(&RegionName::new("us-west-2"), "yt-video-creator-west")
            .await
            .unwrap();
        assert_eq!(read, Some(Duration::from_millis(1_200)));
        assert_eq!(rule.num_calls(), 3);
    }

    #[tokio::test]
    async fn a_cloudwatch_that_keeps_failing_is_a_transient_error() {
        let rule = mock!(Client::get_metric_data)
            .sequence()
            .http_status(500, None)
            .times(5)
            .output(|| datapoints(&[(1_000, 1_200.0)]))
            .build();
        let lag = lag_for(client!(&rule));
        let err = lag
            .lag(&RegionName::new("us-west-2"), "yt-video-creator-west")
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert_eq!(rule.num_calls(), 3, "three attempts, as configured");
    }

    #[tokio::test]
    async fn access_denied_names_the_iam_action() {
        let rule = mock!(Client::get_metric_data).then_error(|| {
            GetMetricDataError::generic(
                ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message("not authorized to perform cloudwatch:GetMetricData")
                    .build(),
            )
        });
        let lag = lag_for(client!(&rule));
        let err = lag
            .lag(&RegionName::new("us-west-2"), "yt-video-creator-west")
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("the credentials need IAM action cloudwatch:GetMetricData"),
            "{err}"
        );
        assert_eq!(rule.num_calls(), 1, "a denial is not retried");
    }

    #[tokio::test]
    async fn an_endpoint_that_does_not_serve_the_metric_is_not_a_config_mistake() {
        let rule = mock!(Client::get_metric_data).then_error(|| {
            GetMetricDataError::generic(
                ErrorMetadata::builder()
                    .code("UnknownOperationException")
                    .message("the operation is not supported by this endpoint")
                    .build(),
            )
        });
        let lag = lag_for(client!(&rule));
        let err = lag
            .lag(&RegionName::new("us-west-2"), "yt-video-creator-west")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProviderError::NotServed { .. }), "{err:?}");
        assert!(text.contains("endpoint_url"), "{text}");
        assert!(!text.contains("region.database.cluster_id"), "{text}");
        assert_eq!(rule.num_calls(), 1, "not served is not retried");
    }

    #[tokio::test]
    async fn a_region_without_a_client_is_refused() {
        let rule = mock!(Client::get_metric_data).then_output(|| datapoints(&[]));
        let lag = lag_for(client!(&rule));
        let err = lag
            .lag(&RegionName::new("eu-west-1"), "yt-video-creator-eu")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("not a region in the config"),
            "{err}"
        );
        assert_eq!(rule.num_calls(), 0);
    }
}
