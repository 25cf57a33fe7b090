//! Route53: `ListResourceRecordSets`, `ChangeResourceRecordSets`, `GetChange` and
//! `GetHealthCheckStatus`, every one through one rate limiter.

use super::Resources;
use super::call::{Call, Kind, Policy, RateLimiter};
use crate::core::ids::RegionName;
use crate::core::plan::{ChangeAction, RecordChange};
use crate::core::topology::LatencyRecord;
use crate::provider::{ChangeStatus, CheckerReport, Dns, HealthChecks, ProviderError};
use async_trait::async_trait;
use aws_sdk_route53::types::{
    Change, ChangeBatch, ResourceRecord, ResourceRecordSet, ResourceRecordSetRegion, RrType,
};
use std::sync::Arc;

/// `Dns` and `HealthChecks` on Route53.
pub struct Route53 {
    client: aws_sdk_route53::Client,
    policy: Policy,
    limiter: RateLimiter,
    resources: Arc<Resources>,
}

/// A record name as `dr` compares it: lower case, no trailing dot.
fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Route53 {
    /// From the one Route53 client; at most `per_second` calls per second go out.
    pub fn new(
        client: aws_sdk_route53::Client,
        policy: Policy,
        per_second: f64,
        resources: Arc<Resources>,
    ) -> Route53 {
        Route53 {
            client,
            policy,
            limiter: RateLimiter::per_second(per_second),
            resources,
        }
    }

    fn zone_call(&self, operation: &'static str, zone: &str) -> Call {
        Call {
            service: "route53",
            operation,
            region: "global".into(),
            resource: format!("hosted zone {zone}"),
            config_key: self.resources.key("hosted-zone", zone),
        }
    }
}

fn record_set(record: &LatencyRecord) -> Result<ResourceRecordSet, String> {
    let mut builder = ResourceRecordSet::builder()
        .name(&record.name)
        .r#type(RrType::from(record.record_type.as_str()))
        .set_identifier(&record.set_identifier)
        .region(ResourceRecordSetRegion::from(record.region.as_str()))
        .ttl(i64::from(record.ttl));
    for value in &record.values {
        builder = builder.resource_records(
            ResourceRecord::builder()
                .value(value)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    if let Some(id) = &record.health_check_id {
        builder = builder.health_check_id(id);
    }
    builder.build().map_err(|e| e.to_string())
}

#[async_trait]
impl Dns for Route53 {
    async fn list_records(
        &self,
        hosted_zone_id: &str,
        record_name: &str,
    ) -> Result<Vec<LatencyRecord>, ProviderError> {
        let call = self.zone_call("ListResourceRecordSets", hosted_zone_id);
        let wanted = normal(record_name);
        let mut records = Vec::new();
        let mut start: Option<(String, RrType, Option<String>)> = None;
        // Bounded: a zone is read in pages of 300 and only this name's records are wanted.
        for _page in 0..100 {
            let out = self
                .policy
                .run(&call, Kind::Read, || async {
                    self.limiter.acquire().await;
                    let mut request = self
                        .client
                        .list_resource_record_sets()
                        .hosted_zone_id(hosted_zone_id);
                    request = match &start {
                        None => request.start_record_name(record_name),
                        Some((name, kind, id)) => request
                            .start_record_name(name)
                            .start_record_type(kind.clone())
                            .set_start_record_identifier(id.clone()),
                    };
                    request.send().await
                })
                .await?;
            let mut past = false;
            for set in out.resource_record_sets() {
                if normal(set.name()) != wanted {
                    past = true;
                    continue;
                }
                let (Some(set_identifier), Some(region)) = (set.set_identifier(), set.region())
                else {
                    continue;
                };
                records.push(LatencyRecord {
                    name: normal(set.name()),
                    record_type: set.r#type().as_str().to_string(),
                    set_identifier: set_identifier.to_string(),
                    region: RegionName::new(region.as_str()),
                    ttl: set
                        .ttl()
                        .and_then(|t| u32::try_from(t).ok())
                        .unwrap_or_default(),
                    values: set
                        .resource_records()
                        .iter()
                        .map(|r| r.value().to_string())
                        .collect(),
                    health_check_id: set.health_check_id().map(str::to_string),
                });
            }
            if past || !out.is_truncated() {
                break;
            }
            match (out.next_record_name(), out.next_record_type()) {
                (Some(name), Some(kind)) if normal(name) == wanted => {
                    start = Some((
                        name.to_string(),
                        kind.clone(),
                        out.next_record_identifier().map(str::to_string),
                    ));
                }
                _ => break,
            }
        }
        records.sort();
        Ok(records)
    }

    async fn change_records(
        &self,
        hosted_zone_id: &str,
        changes: &[RecordChange],
    ) -> Result<String, ProviderError> {
        let call = self.zone_call("ChangeResourceRecordSets", hosted_zone_id);
        let mut batch = ChangeBatch::builder().comment("dr failover");
        for change in changes {
            let action = match change.action {
                ChangeAction::Upsert => aws_sdk_route53::types::ChangeAction::Upsert,
                ChangeAction::Delete => aws_sdk_route53::types::ChangeAction::Delete,
            };
            let set = record_set(&change.record).map_err(|e| call.invalid(e))?;
            batch = batch.changes(
                Change::builder()
                    .action(action)
                    .resource_record_set(set)
                    .build()
                    .map_err(|e| call.invalid(e.to_string()))?,
            );
        }
        let batch = batch.build().map_err(|e| call.invalid(e.to_string()))?;
        // Not idempotent (a repeated DELETE fails): retried only when throttled, including
        // PriorRequestNotComplete, which Route53 answers while an earlier change is applied.
        let out = self
            .policy
            .run(&call, Kind::NotIdempotent, || async {
                self.limiter.acquire().await;
                self.client
                    .change_resource_record_sets()
                    .hosted_zone_id(hosted_zone_id)
                    .change_batch(batch.clone())
                    .send()
                    .await
            })
            .await?;
        let id = out
            .change_info()
            .map(|info| info.id().trim_start_matches("/change/").to_string())
            .ok_or_else(|| call.invalid("the answer has no change id"))?;
        Ok(id)
    }

    async fn get_change(&self, change_id: &str) -> Result<ChangeStatus, ProviderError> {
        let call = Call {
            service: "route53",
            operation: "GetChange",
            region: "global".into(),
            resource: format!("change {change_id}"),
            config_key: "(none: the change id comes from Route53)".into(),
        };
        let out = self
            .policy
            .run(&call, Kind::Read, || async {
                self.limiter.acquire().await;
                self.client.get_change().id(change_id).send().await
            })
            .await?;
        let status = out
            .change_info()
            .map(|info| info.status().as_str().to_string())
            .unwrap_or_default();
        Ok(if status == "INSYNC" {
            ChangeStatus::Insync
        } else {
            ChangeStatus::Pending
        })
    }
}

#[async_trait]
impl HealthChecks for Route53 {
    async fn checker_report(&self, health_check_id: &str) -> Result<CheckerReport, ProviderError> {
        let call = Call {
            service: "route53",
            operation: "GetHealthCheckStatus",
            region: "global".into(),
            resource: format!("health check {health_check_id}"),
            config_key: self.resources.key("health-check", health_check_id),
        };
        let out = self
            .policy
            .run(&call, Kind::Read, || async {
                self.limiter.acquire().await;
                self.client
                    .get_health_check_status()
                    .health_check_id(health_check_id)
                    .send()
                    .await
            })
            .await?;
        let observations = out.health_check_observations();
        // Each checker reports "Success: ..." or "Failure: ..." as free text.
        let healthy = observations
            .iter()
            .filter(|o| {
                o.status_report()
                    .and_then(|r| r.status())
                    .is_some_and(|s| s.starts_with("Success"))
            })
            .count();
        Ok(CheckerReport {
            healthy: u32::try_from(healthy).unwrap_or(u32::MAX),
            total: u32::try_from(observations.len()).unwrap_or(u32::MAX),
        })
    }
}
