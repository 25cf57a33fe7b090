//! The failover plan as data: a pure function from (topology, request, options) to steps.
//!
//! A plan names every resource, size and record its steps touch, so the executor makes no
//! choices. `Operation` is the one description of a mutating call: `dr plan` prints it, dry runs
//! print it instead of calling, and the executor issues exactly it.

use super::ids::{RegionName, RunId, StepName};
use super::time::fmt_duration;
use super::topology::{LatencyRecord, Sizes, Topology};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Unplanned failover (the writer's region is failing; data loss up to the lag is accepted) or
/// planned switchover (both regions are up; no data loss).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// `FailoverGlobalCluster` with `AllowDataLoss=true`.
    Failover,
    /// `SwitchoverGlobalCluster`.
    Switchover,
}

impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunKind::Failover => "failover",
            RunKind::Switchover => "switchover",
        })
    }
}

/// What to plan: move the writer and the traffic from `from` to `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRequest {
    /// The region that holds the writer now.
    pub from: RegionName,
    /// The region that will hold it.
    pub to: RegionName,
    /// Failover or switchover.
    pub kind: RunKind,
}

/// Per-step time limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTimeouts {
    /// Limit for preflight.
    #[serde(with = "super::time::duration_text")]
    pub preflight: Duration,
    /// Limit for promote-db.
    #[serde(with = "super::time::duration_text")]
    pub promote_db: Duration,
    /// Limit for scale-target.
    #[serde(with = "super::time::duration_text")]
    pub scale_target: Duration,
    /// Limit for repoint-dns; past it the step ends degraded, not failed.
    #[serde(with = "super::time::duration_text")]
    pub repoint_dns: Duration,
    /// Limit for verify.
    #[serde(with = "super::time::duration_text")]
    pub verify: Duration,
}

impl Default for StepTimeouts {
    fn default() -> Self {
        StepTimeouts {
            preflight: Duration::from_secs(120),
            promote_db: Duration::from_secs(600),
            scale_target: Duration::from_secs(900),
            repoint_dns: Duration::from_secs(300),
            verify: Duration::from_secs(300),
        }
    }
}

impl StepTimeouts {
    /// The limit of one step.
    pub fn of(&self, step: StepName) -> Duration {
        match step {
            StepName::Preflight => self.preflight,
            StepName::PromoteDb => self.promote_db,
            StepName::ScaleTarget => self.scale_target,
            StepName::RepointDns => self.repoint_dns,
            StepName::Verify => self.verify,
        }
    }
}

/// How verify decides the target serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyPolicy {
    /// `/health` must answer 200 this many times in a row.
    pub consecutive_successes: u32,
    /// Time between probes.
    #[serde(with = "super::time::duration_text")]
    pub interval: Duration,
    /// Timeout of one probe.
    #[serde(with = "super::time::duration_text")]
    pub probe_timeout: Duration,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        VerifyPolicy {
            consecutive_successes: 3,
            interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(5),
        }
    }
}

/// Settings the planner copies into the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanOptions {
    /// Largest acceptable replication lag for an unplanned failover; above it promote-db waits
    /// for an operator's approval.
    #[serde(with = "super::time::duration_text")]
    pub rpo_budget: Duration,
    /// Time limits per step.
    pub timeouts: StepTimeouts,
    /// Verification policy.
    pub verify: VerifyPolicy,
    /// Run every step one after another, as the seed's manual runbook does. For comparison only.
    pub serial: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            rpo_budget: Duration::from_secs(300),
            timeouts: StepTimeouts::default(),
            verify: VerifyPolicy::default(),
            serial: false,
        }
    }
}

/// Why a plan cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A region named in the request is not in the topology.
    #[error("region `{region}` is not in the config; known regions: {known}")]
    UnknownRegion {
        /// The unknown name.
        region: RegionName,
        /// The configured names, comma-separated.
        known: String,
    },
    /// Source and target are the same region.
    #[error("the target region `{0}` is the region the writer would leave; choose another --to")]
    SameRegion(RegionName),
}

/// A node group or Auto Scaling group and the size the step sets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTarget {
    /// Group name.
    pub name: String,
    /// Size to set.
    pub sizes: Sizes,
}

/// What each step does, with every id and value it needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum StepSpec {
    /// Read-only checks of the target.
    Preflight {
        /// Target region.
        target: RegionName,
        /// The region the writer leaves.
        source: RegionName,
        /// Target's Route53 health check.
        target_health_check_id: String,
        /// Target's `/health`.
        target_health_url: String,
        /// Source's `/health`, which a switchover needs healthy.
        source_health_url: String,
        /// Global cluster whose target member must exist.
        global_cluster_id: String,
        /// Target's Aurora cluster.
        target_db_cluster_id: String,
        /// Target's EKS cluster.
        eks_cluster: String,
        /// Node groups that must exist.
        node_groups: Vec<String>,
        /// Auto Scaling groups that must exist.
        autoscaling_groups: Vec<String>,
        /// Lag limit: above it promote-db waits for approval (failover only).
        #[serde(with = "super::time::duration_text")]
        rpo_budget: Duration,
        /// Failover or switchover.
        kind: RunKind,
    },
    /// Moves the global writer to the target.
    PromoteDb {
        /// Global cluster.
        global_cluster_id: String,
        /// Region the call is sent to (the target).
        target: RegionName,
        /// Target's Aurora cluster.
        target_db_cluster_id: String,
        /// Failover (data loss allowed) or switchover.
        kind: RunKind,
        /// Lag limit, judged against the lag read immediately before each promotion call; above
        /// it the step waits for an approval of that figure (failover only). Plans stored
        /// before this field read the default 5 min.
        #[serde(with = "super::time::duration_text", default = "default_rpo_budget")]
        rpo_budget: Duration,
    },
    /// Sets failover sizes on the target's groups.
    ScaleTarget {
        /// Target region.
        target: RegionName,
        /// EKS cluster of the node groups.
        eks_cluster: String,
        /// Node groups and sizes.
        node_groups: Vec<GroupTarget>,
        /// Auto Scaling groups and sizes.
        autoscaling_groups: Vec<GroupTarget>,
    },
    /// Makes the latency record set equal `desired`.
    RepointDns {
        /// Hosted zone.
        hosted_zone_id: String,
        /// Record name.
        record_name: String,
        /// The records that must exist, one per serving region.
        desired: Vec<LatencyRecord>,
        /// Records that must not exist (regions that stop serving), as configured; matched by
        /// set identifier and deleted as found.
        removed: Vec<LatencyRecord>,
    },
    /// Confirms the target serves, is the writer, and DNS is as planned.
    Verify {
        /// Target region.
        target: RegionName,
        /// Target's `/health`.
        health_url: String,
        /// Probe policy.
        policy: VerifyPolicy,
        /// Global cluster.
        global_cluster_id: String,
        /// Target's Aurora cluster, which must be the writer.
        target_db_cluster_id: String,
        /// Hosted zone.
        hosted_zone_id: String,
        /// Record name.
        record_name: String,
        /// The records that must exist.
        desired: Vec<LatencyRecord>,
        /// Records that must be gone.
        removed: Vec<LatencyRecord>,
    },
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// Which step.
    pub name: StepName,
    /// Steps that must be done (succeeded or skipped) before this one starts.
    pub after: Vec<StepName>,
    /// Time limit.
    #[serde(with = "super::time::duration_text")]
    pub timeout: Duration,
    /// What it does.
    pub spec: StepSpec,
}

/// A whole plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Schema version of this serialized type.
    pub version: u32,
    /// What was asked.
    pub request: PlanRequest,
    /// Steps in plan order.
    pub steps: Vec<PlannedStep>,
}

/// The current version of the serialized plan.
pub const PLAN_VERSION: u32 = 1;

/// A mutating AWS call, exactly as the executor would make it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "operation")]
pub enum Operation {
    /// `rds:FailoverGlobalCluster`.
    FailoverGlobalCluster {
        /// Region the request is sent to.
        region: RegionName,
        /// Global cluster.
        global_cluster_id: String,
        /// The member to promote.
        target_db_cluster_id: String,
        /// Always true for an unplanned failover.
        allow_data_loss: bool,
    },
    /// `rds:SwitchoverGlobalCluster`.
    SwitchoverGlobalCluster {
        /// Region the request is sent to.
        region: RegionName,
        /// Global cluster.
        global_cluster_id: String,
        /// The member to promote.
        target_db_cluster_id: String,
    },
    /// `eks:UpdateNodegroupConfig`.
    UpdateNodegroupConfig {
        /// Region.
        region: RegionName,
        /// EKS cluster.
        cluster: String,
        /// Node group.
        nodegroup: String,
        /// New scaling config.
        sizes: Sizes,
        /// Idempotency token derived from run and step.
        client_request_token: String,
    },
    /// `autoscaling:UpdateAutoScalingGroup`.
    UpdateAutoScalingGroup {
        /// Region.
        region: RegionName,
        /// Group name.
        group: String,
        /// New sizes.
        sizes: Sizes,
    },
    /// `route53:ChangeResourceRecordSets`.
    ChangeResourceRecordSets {
        /// Hosted zone.
        hosted_zone_id: String,
        /// The change batch.
        changes: Vec<RecordChange>,
    },
}

impl Operation {
    /// The AWS API name of the call.
    pub fn api_name(&self) -> &'static str {
        match self {
            Operation::FailoverGlobalCluster { .. } => "FailoverGlobalCluster",
            Operation::SwitchoverGlobalCluster { .. } => "SwitchoverGlobalCluster",
            Operation::UpdateNodegroupConfig { .. } => "UpdateNodegroupConfig",
            Operation::UpdateAutoScalingGroup { .. } => "UpdateAutoScalingGroup",
            Operation::ChangeResourceRecordSets { .. } => "ChangeResourceRecordSets",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::FailoverGlobalCluster {
                region,
                global_cluster_id,
                target_db_cluster_id,
                allow_data_loss,
            } => write!(
                f,
                "rds:FailoverGlobalCluster region={region} GlobalClusterIdentifier={global_cluster_id} TargetDbClusterIdentifier={target_db_cluster_id} AllowDataLoss={allow_data_loss}"
            ),
            Operation::SwitchoverGlobalCluster {
                region,
                global_cluster_id,
                target_db_cluster_id,
            } => write!(
                f,
                "rds:SwitchoverGlobalCluster region={region} GlobalClusterIdentifier={global_cluster_id} TargetDbClusterIdentifier={target_db_cluster_id}"
            ),
            Operation::UpdateNodegroupConfig {
                region,
                cluster,
                nodegroup,
                sizes,
                client_request_token,
            } => write!(
                f,
                "eks:UpdateNodegroupConfig region={region} cluster={cluster} nodegroup={nodegroup} scalingConfig=({sizes}) clientRequestToken={client_request_token}"
            ),
            Operation::UpdateAutoScalingGroup {
                region,
                group,
                sizes,
            } => write!(
                f,
                "autoscaling:UpdateAutoScalingGroup region={region} AutoScalingGroupName={group} MinSize={} MaxSize={} DesiredCapacity={}",
                sizes.min, sizes.max, sizes.desired
            ),
            Operation::ChangeResourceRecordSets {
                hosted_zone_id,
                changes,
            } => {
                write!(
                    f,
                    "route53:ChangeResourceRecordSets HostedZoneId={hosted_zone_id}"
                )?;
                for change in changes {
                    write!(f, " [{change}]")?;
                }
                Ok(())
            }
        }
    }
}

/// UPSERT or DELETE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeAction {
    /// Create or replace.
    Upsert,
    /// Remove; the record must match exactly.
    Delete,
}

/// One change of a change batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordChange {
    /// UPSERT or DELETE.
    pub action: ChangeAction,
    /// The record (for DELETE, as it exists now).
    pub record: LatencyRecord,
}

impl fmt::Display for RecordChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            ChangeAction::Upsert => "UPSERT",
            ChangeAction::Delete => "DELETE",
        };
        write!(
            f,
            "{action} {} {} SetIdentifier={} Region={} TTL={} values={} HealthCheckId={}",
            self.record.name,
            self.record.record_type,
            self.record.set_identifier,
            self.record.region,
            self.record.ttl,
            self.record.values.join(","),
            self.record.health_check_id.as_deref().unwrap_or("-")
        )
    }
}

/// The change batch that turns `current` into `desired` (with `removed` gone).
/// Records of other names and unrelated set identifiers are left alone. Empty when nothing
/// needs to change, which is how repoint-dns recognises it is already done.
pub fn record_changes(
    current: &[LatencyRecord],
    desired: &[LatencyRecord],
    removed: &[LatencyRecord],
) -> Vec<RecordChange> {
    let mut changes = Vec::new();
    for want in desired {
        let present = current
            .iter()
            .find(|have| have.name == want.name && have.set_identifier == want.set_identifier);
        if present != Some(want) {
            changes.push(RecordChange {
                action: ChangeAction::Upsert,
                record: want.clone(),
            });
        }
    }
    for have in current {
        let is_removed = removed
            .iter()
            .any(|gone| gone.name == have.name && gone.set_identifier == have.set_identifier);
        let is_desired = desired
            .iter()
            .any(|want| want.name == have.name && want.set_identifier == have.set_identifier);
        if is_removed && !is_desired {
            changes.push(RecordChange {
                action: ChangeAction::Delete,
                record: have.clone(),
            });
        }
    }
    changes
}

/// The idempotency token for one node group update of one run: stable across retries and
/// resumes of that run, different for every other run. At most 36 characters.
pub fn client_request_token(run: &RunId, step: StepName, group: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{run}/{step}/{group}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("dr-{hash:016x}")
}

/// Builds the plan for `request` on `topology`.
///
/// Preflight first; promote-db and scale-target concurrently (one after another when
/// `options.serial`); then repoint-dns; then verify.
pub fn build_plan(
    topology: &Topology,
    request: &PlanRequest,
    options: &PlanOptions,
) -> Result<Plan, PlanError> {
    let known = || {
        topology
            .region_names()
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let source = topology
        .region(&request.from)
        .ok_or_else(|| PlanError::UnknownRegion {
            region: request.from.clone(),
            known: known(),
        })?;
    let target = topology
        .region(&request.to)
        .ok_or_else(|| PlanError::UnknownRegion {
            region: request.to.clone(),
            known: known(),
        })?;
    if source.name == target.name {
        return Err(PlanError::SameRegion(target.name.clone()));
    }

    // After a failover every region but the failed one serves; after a planned switchover every
    // region serves (this is also how a failback puts the old region back into DNS).
    let serving = topology
        .regions
        .iter()
        .filter(|region| request.kind == RunKind::Switchover || region.name != source.name);
    let desired: Vec<LatencyRecord> = serving
        .map(|region| LatencyRecord::for_region(&topology.dns, region))
        .collect();
    let removed: Vec<LatencyRecord> = match request.kind {
        RunKind::Failover => vec![LatencyRecord::for_region(&topology.dns, source)],
        RunKind::Switchover => Vec::new(),
    };

    let groups = |pick: fn(&super::topology::Region) -> &Vec<super::topology::ScalableGroup>| {
        pick(target)
            .iter()
            .map(|group| GroupTarget {
                name: group.name.clone(),
                sizes: group.failover,
            })
            .collect::<Vec<_>>()
    };

    let timeouts = &options.timeouts;
    let step = |name: StepName, after: Vec<StepName>, spec: StepSpec| PlannedStep {
        name,
        after,
        timeout: timeouts.of(name),
        spec,
    };
    let scale_after = if options.serial {
        vec![StepName::PromoteDb]
    } else {
        vec![StepName::Preflight]
    };
    let steps = vec![
        step(
            StepName::Preflight,
            vec![],
            StepSpec::Preflight {
                target: target.name.clone(),
                source: source.name.clone(),
                target_health_check_id: target.health_check_id.clone(),
                target_health_url: target.health_url.clone(),
                source_health_url: source.health_url.clone(),
                global_cluster_id: topology.global_cluster_id.clone(),
                target_db_cluster_id: target.db_cluster_id.clone(),
                eks_cluster: target.eks_cluster.clone(),
                node_groups: target.node_groups.iter().map(|g| g.name.clone()).collect(),
                autoscaling_groups: target
                    .autoscaling_groups
                    .iter()
                    .map(|g| g.name.clone())
                    .collect(),
                rpo_budget: options.rpo_budget,
                kind: request.kind,
            },
        ),
        step(
            StepName::PromoteDb,
            vec![StepName::Preflight],
            StepSpec::PromoteDb {
                global_cluster_id: topology.global_cluster_id.clone(),
                target: target.name.clone(),
                target_db_cluster_id: target.db_cluster_id.clone(),
                kind: request.kind,
                rpo_budget: options.rpo_budget,
            },
        ),
        step(
            StepName::ScaleTarget,
            scale_after,
            StepSpec::ScaleTarget {
                target: target.name.clone(),
                eks_cluster: target.eks_cluster.clone(),
                node_groups: groups(|r| &r.node_groups),
                autoscaling_groups: groups(|r| &r.autoscaling_groups),
            },
        ),
        step(
            StepName::RepointDns,
            vec![StepName::PromoteDb, StepName::ScaleTarget],
            StepSpec::RepointDns {
                hosted_zone_id: topology.dns.hosted_zone_id.clone(),
                record_name: topology.dns.record_name.clone(),
                desired: desired.clone(),
                removed: removed.clone(),
            },
        ),
        step(
            StepName::Verify,
            vec![StepName::RepointDns],
            StepSpec::Verify {
                target: target.name.clone(),
                health_url: target.health_url.clone(),
                policy: options.verify,
                global_cluster_id: topology.global_cluster_id.clone(),
                target_db_cluster_id: target.db_cluster_id.clone(),
                hosted_zone_id: topology.dns.hosted_zone_id.clone(),
                record_name: topology.dns.record_name.clone(),
                desired,
                removed,
            },
        ),
    ];
    Ok(Plan {
        version: PLAN_VERSION,
        request: request.clone(),
        steps,
    })
}

impl Plan {
    /// The step with this name.
    pub fn step(&self, name: StepName) -> Option<&PlannedStep> {
        self.steps.iter().find(|step| step.name == name)
    }

    /// The mutating calls a step would make if nothing were in place yet. `run` fills the
    /// idempotency tokens; the DNS batch lists every record it may write or delete (a real run
    /// sends only the difference from what it finds).
    pub fn operations(&self, step: StepName, run: &RunId) -> Vec<Operation> {
        let Some(planned) = self.step(step) else {
            return Vec::new();
        };
        match &planned.spec {
            StepSpec::Preflight { .. } | StepSpec::Verify { .. } => Vec::new(),
            StepSpec::PromoteDb {
                global_cluster_id,
                target,
                target_db_cluster_id,
                kind,
                ..
            } => vec![promote_operation(
                *kind,
                target,
                global_cluster_id,
                target_db_cluster_id,
            )],
            StepSpec::ScaleTarget {
                target,
                eks_cluster,
                node_groups,
                autoscaling_groups,
            } => {
                node_groups
                    .iter()
                    .map(|group| Operation::UpdateNodegroupConfig {
                        region: target.clone(),
                        cluster: eks_cluster.clone(),
                        nodegroup: group.name.clone(),
                        sizes: group.sizes,
                        client_request_token: client_request_token(run, step, &group.name),
                    })
                    .chain(autoscaling_groups.iter().map(|group| {
                        Operation::UpdateAutoScalingGroup {
                            region: target.clone(),
                            group: group.name.clone(),
                            sizes: group.sizes,
                        }
                    }))
                    .collect()
            }
            StepSpec::RepointDns {
                hosted_zone_id,
                desired,
                removed,
                ..
            } => {
                let mut changes: Vec<RecordChange> = desired
                    .iter()
                    .map(|record| RecordChange {
                        action: ChangeAction::Upsert,
                        record: record.clone(),
                    })
                    .collect();
                changes.extend(removed.iter().map(|record| RecordChange {
                    action: ChangeAction::Delete,
                    record: record.clone(),
                }));
                vec![Operation::ChangeResourceRecordSets {
                    hosted_zone_id: hosted_zone_id.clone(),
                    changes,
                }]
            }
        }
    }

    /// Renders the plan for `dr plan`: steps, order and concurrency, and every operation.
    pub fn render(&self, run: &RunId) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let request = &self.request;
        let _ = writeln!(
            out,
            "{} plan: writer and traffic from {} to {}",
            request.kind, request.from, request.to
        );
        for (index, step) in self.steps.iter().enumerate() {
            let after = if step.after.is_empty() {
                "starts first".to_string()
            } else {
                format!(
                    "after {}",
                    step.after
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" + ")
                )
            };
            let parallel: Vec<&str> = self
                .steps
                .iter()
                .filter(|other| other.name != step.name && other.after == step.after)
                .map(|other| other.name.as_str())
                .collect();
            let together = if parallel.is_empty() {
                String::new()
            } else {
                format!(", concurrently with {}", parallel.join(", "))
            };
            let _ = writeln!(
                out,
                "\n{}. {} ({after}{together}; timeout {})",
                index + 1,
                step.name,
                fmt_duration(step.timeout)
            );
            for line in describe_step(&step.spec) {
                let _ = writeln!(out, "   {line}");
            }
            for operation in self.operations(step.name, run) {
                let _ = writeln!(out, "   mutates: {operation}");
            }
        }
        out
    }
}

/// The promotion call for a kind of run.
pub fn promote_operation(
    kind: RunKind,
    target: &RegionName,
    global_cluster_id: &str,
    target_db_cluster_id: &str,
) -> Operation {
    match kind {
        RunKind::Failover => Operation::FailoverGlobalCluster {
            region: target.clone(),
            global_cluster_id: global_cluster_id.to_string(),
            target_db_cluster_id: target_db_cluster_id.to_string(),
            allow_data_loss: true,
        },
        RunKind::Switchover => Operation::SwitchoverGlobalCluster {
            region: target.clone(),
            global_cluster_id: global_cluster_id.to_string(),
            target_db_cluster_id: target_db_cluster_id.to_string(),
        },
    }
}

fn describe_step(spec: &StepSpec) -> Vec<String> {
    match spec {
        StepSpec::Preflight {
            target,
            source,
            target_health_check_id,
            target_health_url,
            source_health_url,
            global_cluster_id,
            target_db_cluster_id,
            eks_cluster,
            node_groups,
            autoscaling_groups,
            rpo_budget,
            kind,
        } => {
            let mut lines = vec![
                format!(
                    "reads: route53:GetHealthCheckStatus {target_health_check_id} (more than 18% of checkers healthy)"
                ),
                format!("reads: GET {target_health_url} (200)"),
                format!(
                    "reads: rds:DescribeGlobalClusters {global_cluster_id} in {target} (member {target_db_cluster_id} present)"
                ),
                format!(
                    "reads: eks:DescribeNodegroup {eks_cluster}/[{}], autoscaling:DescribeAutoScalingGroups [{}]",
                    node_groups.join(", "),
                    autoscaling_groups.join(", ")
                ),
            ];
            match kind {
                RunKind::Failover => lines.push(format!(
                    "reads: cloudwatch AuroraGlobalDBRPOLag of {target_db_cluster_id} in {target}; above {} promote-db waits for `dr approve`",
                    fmt_duration(*rpo_budget)
                )),
                RunKind::Switchover => lines.push(format!(
                    "reads: GET {source_health_url} (the writer's region {source} must be up for a switchover)"
                )),
            }
            lines.push("makes no change; any failed check stops the run here".to_string());
            lines
        }
        StepSpec::PromoteDb {
            global_cluster_id,
            target,
            ..
        } => vec![format!(
            "observes: rds:DescribeGlobalClusters {global_cluster_id} in {target}; done when the target is writer and FailoverState is gone"
        )],
        StepSpec::ScaleTarget {
            target,
            eks_cluster,
            ..
        } => vec![format!(
            "observes: eks:DescribeNodegroup/DescribeUpdate ({eks_cluster}) and autoscaling:DescribeAutoScalingGroups in {target}; groups already at size are left alone"
        )],
        StepSpec::RepointDns {
            hosted_zone_id,
            record_name,
            desired,
            removed,
        } => {
            let serving: Vec<&str> = desired.iter().map(|r| r.region.as_str()).collect();
            let mut lines = vec![
                format!(
                    "observes: route53:ListResourceRecordSets {hosted_zone_id} {record_name}; then route53:GetChange until INSYNC"
                ),
                format!("afterwards answering: {}", serving.join(", ")),
            ];
            if !removed.is_empty() {
                let ids: Vec<&str> = removed.iter().map(|r| r.set_identifier.as_str()).collect();
                lines.push(format!("removes set identifiers: {}", ids.join(", ")));
            }
            lines.push(
                "if Route53's control plane is unreachable until the timeout, the step ends degraded: health checks still steer traffic".to_string(),
            );
            lines
        }
        StepSpec::Verify {
            target,
            health_url,
            policy,
            target_db_cluster_id,
            ..
        } => vec![
            format!(
                "reads: GET {health_url} until {} consecutive 200s, every {}",
                policy.consecutive_successes,
                fmt_duration(policy.interval)
            ),
            format!(
                "reads: the writer is {target_db_cluster_id} in {target}; DNS records are as planned"
            ),
        ],
    }
}

fn default_rpo_budget() -> Duration {
    PlanOptions::default().rpo_budget
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::topology::{DnsTopology, Region, ScalableGroup};

    fn region(name: &str, priority: u32) -> Region {
        let sizes = Sizes {
            min: 2,
            max: 8,
            desired: 2,
        };
        Region {
            name: RegionName::new(name),
            priority,
            db_cluster_id: format!("db-{name}"),
            eks_cluster: format!("eks-{name}"),
            node_groups: vec![ScalableGroup {
                name: "general".into(),
                baseline: sizes,
                failover: Sizes {
                    min: 3,
                    max: 10,
                    desired: 3,
                },
            }],
            autoscaling_groups: vec![],
            health_check_id: format!("hc-{name}"),
            set_identifier: name.to_string(),
            record_values: vec!["192.0.2.1".into()],
            health_url: format!("https://{name}.example/health"),
        }
    }

    fn topology(names: &[&str]) -> Topology {
        Topology {
            global_cluster_id: "global".into(),
            dns: DnsTopology {
                hosted_zone_id: "Z1".into(),
                record_name: "api.example.com".into(),
                record_type: "A".into(),
                ttl: 60,
                name_servers: Vec::new(),
            },
            regions: names
                .iter()
                .enumerate()
                .map(|(i, n)| region(n, i as u32 + 1))
                .collect(),
        }
    }

    fn request(from: &str, to: &str, kind: RunKind) -> PlanRequest {
        PlanRequest {
            from: from.into(),
            to: to.into(),
            kind,
        }
    }

    #[test]
    fn promote_and_scale_run_together_after_preflight() {
        let plan = build_plan(
            &topology(&["a", "b"]),
            &request("a", "b", RunKind::Failover),
            &PlanOptions::default(),
        )
        .unwrap();
        let after = |s| plan.step(s).unwrap().after.clone();
        assert_eq!(after(StepName::PromoteDb), vec![StepName::Preflight]);
        assert_eq!(after(StepName::ScaleTarget), vec![StepName::Preflight]);
        assert_eq!(
            after(StepName::RepointDns),
            vec![StepName::PromoteDb, StepName::ScaleTarget]
        );
        assert_eq!(after(StepName::Verify), vec![StepName::RepointDns]);
    }

    #[test]
    fn serial_option_chains_every_step() {
        let options = PlanOptions {
            serial: true,
            ..PlanOptions::default()
        };
        let plan = build_plan(
            &topology(&["a", "b"]),
            &request("a", "b", RunKind::Failover),
            &options,
        )
        .unwrap();
        assert_eq!(
            plan.step(StepName::ScaleTarget).unwrap().after,
            vec![StepName::PromoteDb]
        );
    }

    #[test]
    fn failover_removes_only_the_source_from_dns_with_three_regions() {
        let plan = build_plan(
            &topology(&["a", "b", "c"]),
            &request("a", "b", RunKind::Failover),
            &PlanOptions::default(),
        )
        .unwrap();
        let StepSpec::RepointDns {
            desired, removed, ..
        } = &plan.step(StepName::RepointDns).unwrap().spec
        else {
            panic!("repoint-dns spec expected");
        };
        let serving: Vec<&str> = desired.iter().map(|r| r.region.as_str()).collect();
        assert_eq!(serving, vec!["b", "c"]);
        let ids: Vec<&str> = removed.iter().map(|r| r.set_identifier.as_str()).collect();
        assert_eq!(ids, vec!["a"]);
    }

    #[test]
    fn switchover_keeps_every_region_in_dns() {
        let plan = build_plan(
            &topology(&["a", "b"]),
            &request("b", "a", RunKind::Switchover),
            &PlanOptions::default(),
        )
        .unwrap();
        let ops = plan.operations(StepName::PromoteDb, &RunId::new("r1"));
        assert!(matches!(
            ops.as_slice(),
            [Operation::SwitchoverGlobalCluster { region, .. }] if region.as_str() == "a"
        ));
        let StepSpec::RepointDns { removed, .. } = &plan.step(StepName::RepointDns).unwrap().spec
        else {
            panic!("repoint-dns spec expected");
        };
        assert!(removed.is_empty());
    }

    #[test]
    fn bad_requests_are_refused() {
        let topo = topology(&["a", "b"]);
        let opts = PlanOptions::default();
        assert_eq!(
            build_plan(&topo, &request("a", "a", RunKind::Failover), &opts),
            Err(PlanError::SameRegion("a".into()))
        );
        assert!(matches!(
            build_plan(&topo, &request("a", "z", RunKind::Failover), &opts),
            Err(PlanError::UnknownRegion { .. })
        ));
    }

    #[test]
    fn record_changes_are_empty_when_records_match() {
        let topo = topology(&["a", "b"]);
        let rec_a = LatencyRecord::for_region(&topo.dns, &topo.regions[0]);
        let rec_b = LatencyRecord::for_region(&topo.dns, &topo.regions[1]);
        let changes = record_changes(
            &[rec_a.clone(), rec_b.clone()],
            std::slice::from_ref(&rec_b),
            std::slice::from_ref(&rec_a),
        );
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].action, ChangeAction::Delete);
        assert_eq!(changes[0].record, rec_a);
        assert!(
            record_changes(
                std::slice::from_ref(&rec_b),
                std::slice::from_ref(&rec_b),
                std::slice::from_ref(&rec_a)
            )
            .is_empty()
        );
    }

    #[test]
    fn tokens_are_stable_per_run_and_differ_between_runs() {
        let a = client_request_token(&RunId::new("r1"), StepName::ScaleTarget, "general");
        assert_eq!(
            a,
            client_request_token(&RunId::new("r1"), StepName::ScaleTarget, "general")
        );
        assert_ne!(
            a,
            client_request_token(&RunId::new("r2"), StepName::ScaleTarget, "general")
        );
        assert!(a.len() <= 36);
    }
}
