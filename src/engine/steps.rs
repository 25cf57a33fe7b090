//! The five steps, each as observe, then act, then wait.
//!
//! Steps take every id, size and record from their `StepSpec`; they make no choices. Running a
//! step again after a crash is safe because it looks first: what is already done is recorded and
//! skipped, and an operation already in flight toward the target is waited for, not repeated.
//! A mutation that fails transiently is never blindly retried: the step observes again first.

use super::StepCtx;
use crate::core::health::{
    HEALTH_RECORD_HEALTHY, HEALTH_RECORD_UNHEALTHY, Observation, classify_checkers, classify_probe,
};
use crate::core::ids::RegionName;
use crate::core::ids::StepName;
use crate::core::plan::{
    GroupTarget, Operation, RunKind, StepSpec, client_request_token, promote_operation,
    record_changes,
};
use crate::core::run::{Gate, Handle, RecordFollowUp, RunEvent, StepOutcome, promotion_gate};
use crate::core::time::fmt_duration;
use crate::core::topology::{LatencyRecord, health_record_name};
use crate::provider::{Answer, ChangeStatus, DnsType, ProviderError};
use futures::future::join_all;
use std::collections::BTreeSet;
use std::time::Duration;

/// How a step attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum StepResult {
    /// Reached its goal.
    Succeeded(StepOutcome),
    /// Could not; the error says why and what to do.
    Failed(String),
    /// Stopped by a pause, an abort or a shutdown.
    Interrupted(String),
    /// Stopped to wait for an operator's approval of this figure.
    Gated(Gate),
}

/// Why a step attempt stopped short of its goal.
#[derive(Clone, Debug, PartialEq)]
enum Stop {
    /// It could not reach it; the error says why and what to do.
    Failed(String),
    /// It needs an operator's approval first.
    Gated(Gate),
}

impl From<String> for Stop {
    fn from(error: String) -> Stop {
        Stop::Failed(error)
    }
}

/// Runs the step for `spec`.
pub async fn execute(ctx: &StepCtx, spec: &StepSpec) -> StepResult {
    let result = match spec {
        StepSpec::Preflight { .. } => preflight(ctx, spec).await,
        StepSpec::PromoteDb {
            global_cluster_id,
            target,
            target_db_cluster_id,
            kind,
            rpo_budget,
        } => {
            let promotion = Promotion {
                global_cluster_id,
                target,
                target_db_cluster_id,
                kind: *kind,
                rpo_budget: *rpo_budget,
            };
            return match promote_db(ctx, &promotion).await {
                Ok(outcome) => StepResult::Succeeded(outcome),
                Err(Stop::Failed(error)) => StepResult::Failed(error),
                Err(Stop::Gated(gate)) => StepResult::Gated(gate),
            };
        }
        StepSpec::ScaleTarget {
            target,
            eks_cluster,
            node_groups,
            autoscaling_groups,
        } => scale_target(ctx, target, eks_cluster, node_groups, autoscaling_groups).await,
        StepSpec::RepointDns {
            hosted_zone_id,
            record_name,
            desired,
            removed,
        } => repoint_dns(ctx, hosted_zone_id, record_name, desired, removed).await,
        StepSpec::Verify { .. } => verify(ctx, spec).await,
    };
    match result {
        Ok(outcome) => StepResult::Succeeded(outcome),
        Err(error) => StepResult::Failed(error),
    }
}

/// What the step does when its time limit passes.
pub fn on_timeout(step: StepName, limit: Duration, waiting_for: &str) -> StepResult {
    let waiting = if waiting_for.is_empty() {
        String::new()
    } else {
        format!(" while waiting for {waiting_for}")
    };
    if step == StepName::RepointDns {
        return StepResult::Succeeded(StepOutcome {
            summary: format!(
                "DEGRADED: the records could not be changed within {}{waiting}. Route53 health checks still take failed regions out of answers through the data plane; re-run `dr resume` or change the records by hand once Route53's control plane answers (runbooks/break-glass-route53.md)",
                fmt_duration(limit)
            ),
            degraded: true,
            ..StepOutcome::default()
        });
    }
    StepResult::Failed(format!(
        "timed out after {}{waiting}; `dr resume` tries again, `dr skip {step} --reason ...` goes on without it",
        fmt_duration(limit)
    ))
}

fn outcome(summary: impl Into<String>) -> StepOutcome {
    StepOutcome {
        summary: summary.into(),
        ..StepOutcome::default()
    }
}

async fn preflight(ctx: &StepCtx, spec: &StepSpec) -> Result<StepOutcome, String> {
    let StepSpec::Preflight {
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
    } = spec
    else {
        return Err("preflight was given another step's spec".into());
    };
    let p = &ctx.providers;
    let mut failed: Vec<String> = Vec::new();
    let mut passed: Vec<String> = Vec::new();
    let mut gates: Vec<Gate> = Vec::new();
    let mut lag_read: Option<u64> = None;

    match ctx.read_bounded(|| p.health_checks.checker_report(target_health_check_id)).await {
        Ok(report) => match classify_checkers(report.healthy, report.total) {
            Observation::Healthy => passed.push(format!(
                "Route53 health check of {target}: {}/{} checkers healthy",
                report.healthy, report.total
            )),
            _ => failed.push(format!(
                "Route53 health check of {target} is unhealthy: {}/{} checkers healthy (needs more than 18%)",
                report.healthy, report.total
            )),
        },
        Err(err) if err.is_transient() => passed.push(format!(
            "Route53 health check of {target} could not be read ({err}); relying on dr's own probe"
        )),
        Err(err) => failed.push(err.to_string()),
    }

    let probe = p
        .probe
        .probe(target, target_health_url, ctx.probe_timeout)
        .await;
    match classify_probe(&probe, false) {
        Observation::Healthy => passed.push(format!("GET {target_health_url}: 200")),
        _ => failed.push(format!(
            "the target's {target_health_url} is not healthy ({})",
            probe
        )),
    }

    let mut target_is_writer = false;
    match ctx.read_bounded(|| p.database.describe_global_cluster(target, global_cluster_id)).await {
        Ok(cluster) => match cluster.member_in(target) {
            Some(member) if member.db_cluster_id == *target_db_cluster_id && member.is_writer => {
                target_is_writer = true;
                passed.push(format!(
                    "{target_db_cluster_id} in {target} is already the writer: promotion has nothing to do and loses nothing"
                ));
            }
            Some(member) if member.db_cluster_id == *target_db_cluster_id => passed.push(format!(
                "{target_db_cluster_id} is a member of {global_cluster_id} in {target}{}",
                if member.is_writer { " (already the writer)" } else { "" }
            )),
            Some(member) => failed.push(format!(
                "the member of {global_cluster_id} in {target} is {}, but region.database.cluster_id says {target_db_cluster_id}",
                member.db_cluster_id
            )),
            None => failed.push(format!(
                "{global_cluster_id} has no member in {target}; check region.database.cluster_id"
            )),
        },
        Err(err) => failed.push(err.to_string()),
    }

    for group in node_groups {
        if let Err(err) = ctx
            .read_bounded(|| p.compute.describe_nodegroup(target, eks_cluster, group))
            .await
        {
            failed.push(err.to_string());
        }
    }
    for group in autoscaling_groups {
        if let Err(err) = ctx
            .read_bounded(|| p.compute.describe_autoscaling_group(target, group))
            .await
        {
            failed.push(err.to_string());
        }
    }
    if failed.is_empty() {
        passed.push(format!(
            "{} node group(s) and {} Auto Scaling group(s) found in {target}",
            node_groups.len(),
            autoscaling_groups.len()
        ));
    }

    match kind {
        RunKind::Failover if target_is_writer => {}
        RunKind::Failover => {
            let lag = ctx
                .read_bounded(|| p.lag.lag(target, target_db_cluster_id))
                .await
                .map_err(|e| e.to_string());
            if let Ok(Some(lag)) = &lag {
                lag_read = Some(lag.as_millis() as u64);
            }
            match promotion_gate(target, lag.clone(), *rpo_budget, None) {
                Some(gate) if ctx.dry_run => passed.push(format!(
                    "a real run would wait for approval: {}",
                    gate.reason
                )),
                Some(gate) => gates.push(gate),
                None => {
                    if let Ok(Some(lag)) = lag {
                        passed.push(format!(
                            "replication lag {} is within the RPO budget of {}",
                            fmt_duration(lag),
                            fmt_duration(*rpo_budget)
                        ));
                    }
                }
            }
        }
        RunKind::Switchover => {
            let probe = p
                .probe
                .probe(source, source_health_url, ctx.probe_timeout)
                .await;
            match classify_probe(&probe, true) {
                Observation::Healthy => passed.push(format!("the writer's region {source} is up")),
                _ => failed.push(format!(
                    "a switchover needs the writer's region {source} up, and {source_health_url} is not healthy ({}); use `dr failover` for an unplanned move",
                    probe
                )),
            }
        }
    }

    if !failed.is_empty() {
        return Err(format!(
            "preflight found {} problem(s), no change was made: {}",
            failed.len(),
            failed.join("; ")
        ));
    }
    Ok(StepOutcome {
        summary: passed.join("; "),
        gates,
        lag_ms: lag_read,
        ..StepOutcome::default()
    })
}

/// What promote-db moves, from its spec.
struct Promotion<'a> {
    global_cluster_id: &'a str,
    target: &'a RegionName,
    target_db_cluster_id: &'a str,
    kind: RunKind,
    rpo_budget: Duration,
}

async fn promote_db(ctx: &StepCtx, promotion: &Promotion<'_>) -> Result<StepOutcome, Stop> {
    let Promotion {
        global_cluster_id,
        target,
        target_db_cluster_id,
        kind,
        rpo_budget,
    } = *promotion;
    let p = &ctx.providers;
    let mut requested = false;
    // A refused request is looked at once more: the refusal may be for a promotion toward the
    // target already in flight (an earlier request whose answer was lost), which is progress.
    let mut refusal: Option<String> = None;
    let mut lag_read: Option<u64> = None;
    let mut settle = 0u32;
    loop {
        let cluster = ctx
            .read(|| {
                p.database
                    .describe_global_cluster(target, global_cluster_id)
            })
            .await
            .map_err(|e| e.to_string())?;
        let member = cluster
            .member_in(target)
            .ok_or_else(|| Stop::from(format!("{global_cluster_id} has no member in {target}")))?;
        match &cluster.failover_state {
            None if member.is_writer => {
                let summary = if requested {
                    format!("{target_db_cluster_id} in {target} is the writer")
                } else {
                    format!(
                        "{target_db_cluster_id} in {target} was already the writer; nothing to do"
                    )
                };
                return Ok(StepOutcome {
                    summary,
                    lag_ms: lag_read,
                    ..StepOutcome::default()
                });
            }
            Some(state) if state.to_region.as_ref() == Some(target) => {
                ctx.wait(&format!(
                    "the {} toward {target} (FailoverState {})",
                    if state.is_data_loss_allowed {
                        "failover"
                    } else {
                        "switchover"
                    },
                    state.status
                ))
                .await;
            }
            Some(state) => {
                return Err(Stop::Failed(format!(
                    "a {} toward {} is already in flight on {global_cluster_id}; let it finish, then `dr resume`",
                    state.status,
                    state
                        .to_region
                        .as_ref()
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "another region".into())
                )));
            }
            None if requested => {
                ctx.wait("FailoverState to appear after the request").await;
            }
            None if settle > 0 => {
                settle -= 1;
                ctx.wait(
                    "the outcome of a promotion call that failed (it may have been applied; FailoverState can take a moment to show)",
                )
                .await;
            }
            None => {
                if let Some(refusal) = refusal.take() {
                    return Err(Stop::Failed(format!(
                        "{refusal}; no promotion toward {target} is in flight, so the refusal stands"
                    )));
                }
                // The RPO budget is judged against the lag read immediately before each call,
                // not the one preflight read: the lag may have grown while the call was retried.
                let mut lag_ms = None;
                if kind == RunKind::Failover {
                    let lag = ctx
                        .read_bounded(|| p.lag.lag(target, target_db_cluster_id))
                        .await
                        .map_err(|e| e.to_string());
                    if let Ok(Some(lag)) = &lag {
                        lag_ms = Some(lag.as_millis() as u64);
                        lag_read = Some(lag.as_millis() as u64);
                    }
                    if !ctx.dry_run
                        && let Some(gate) =
                            promotion_gate(target, lag, rpo_budget, ctx.approval.as_ref())
                    {
                        return Err(Stop::Gated(gate));
                    }
                }
                let operation =
                    promote_operation(kind, target, global_cluster_id, target_db_cluster_id);
                // Write ahead: a run that may have sent a promotion starts the cooldown, and
                // its report's RPO is this figure, whatever happens next.
                if let Some(why) = ctx.blocked() {
                    // Paused or aborting: look again (and read the lag again) after the wait.
                    ctx.wait(&format!("permission to act ({why})")).await;
                    continue;
                }
                if !ctx.dry_run {
                    ctx.checkpoint(RunEvent::Promoting {
                        step: ctx.step,
                        lag_ms,
                    })?;
                }
                match ctx.mutate(&operation).await {
                    Mutation::DryRun => {
                        return Ok(StepOutcome {
                            summary: format!(
                                "dry run: would promote {target_db_cluster_id} in {target}"
                            ),
                            would_mutate: vec![operation],
                            lag_ms: lag_read,
                            ..StepOutcome::default()
                        });
                    }
                    Mutation::Done(_) => requested = true,
                    Mutation::Retry { .. } => {}
                    Mutation::Failed(err @ ProviderError::InvalidState { .. }) => {
                        refusal = Some(err.to_string());
                    }
                    Mutation::Failed(err) => return Err(Stop::Failed(err.to_string())),
                }
            }
        }
    }
}

/// Sets sizes on a region's node groups and Auto Scaling groups and waits for them: the
/// scale-target step, and the daemon's pre-warm and scale-back.
pub async fn scale_target(
    ctx: &StepCtx,
    target: &RegionName,
    eks_cluster: &str,
    node_groups: &[GroupTarget],
    autoscaling_groups: &[GroupTarget],
) -> Result<StepOutcome, String> {
    let node_futures = node_groups
        .iter()
        .map(|group| scale_nodegroup(ctx, target, eks_cluster, group));
    let asg_futures = autoscaling_groups
        .iter()
        .map(|group| scale_asg(ctx, target, group));
    let (nodes, asgs) = tokio::join!(join_all(node_futures), join_all(asg_futures));
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut would = Vec::new();
    for result in nodes.into_iter().chain(asgs) {
        match result {
            Ok(GroupResult { line, would_mutate }) => {
                lines.push(line);
                would.extend(would_mutate);
            }
            Err(error) => errors.push(error),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    Ok(StepOutcome {
        summary: if lines.is_empty() {
            format!("{target} has no groups to scale")
        } else {
            lines.join("; ")
        },
        would_mutate: would,
        ..StepOutcome::default()
    })
}

struct GroupResult {
    line: String,
    would_mutate: Vec<Operation>,
}

async fn scale_nodegroup(
    ctx: &StepCtx,
    target: &RegionName,
    cluster: &str,
    group: &GroupTarget,
) -> Result<GroupResult, String> {
    let p = &ctx.providers;
    let name = group.name.as_str();
    let token = client_request_token(&ctx.run, StepName::ScaleTarget, name);
    // An update an earlier attempt of this step requested is waited for, not requested again.
    let mut update_id: Option<String> = ctx.earlier_handles.iter().rev().find_map(|h| match h {
        Handle::NodegroupUpdate {
            nodegroup,
            update_id,
        } if nodegroup == name => Some(update_id.clone()),
        _ => None,
    });
    let mut acted = update_id.is_some();
    loop {
        if let Some(id) = &update_id {
            let update = ctx
                .read(|| p.compute.describe_update(target, cluster, name, id))
                .await
                .map_err(|e| e.to_string())?;
            match update.status.as_str() {
                "Successful" => {
                    let state = ctx
                        .read(|| p.compute.describe_nodegroup(target, cluster, name))
                        .await
                        .map_err(|e| e.to_string())?;
                    if state.sizes == group.sizes {
                        return Ok(GroupResult {
                            line: format!("node group {name} at {} (update {id})", group.sizes),
                            would_mutate: Vec::new(),
                        });
                    }
                    // Something else resized it since: look again from the start.
                    update_id = None;
                    continue;
                }
                "Failed" | "Cancelled" => {
                    return Err(format!(
                        "node group {name} update {id} ended {}: {}",
                        update.status,
                        update.errors.join(", ")
                    ));
                }
                _ => {
                    ctx.wait(&format!(
                        "node group {name} update {id} ({})",
                        update.status
                    ))
                    .await;
                    continue;
                }
            }
        }
        let state = ctx
            .read(|| p.compute.describe_nodegroup(target, cluster, name))
            .await
            .map_err(|e| e.to_string())?;
        if state.sizes == group.sizes {
            if state.status == "ACTIVE" {
                let how = if acted { "scaled" } else { "already" };
                return Ok(GroupResult {
                    line: format!("node group {name} {how} at {}", group.sizes),
                    would_mutate: Vec::new(),
                });
            }
            ctx.wait(&format!("node group {name} ({})", state.status))
                .await;
            continue;
        }
        if state.status != "ACTIVE" {
            ctx.wait(&format!(
                "node group {name} to finish another update ({}) before resizing it",
                state.status
            ))
            .await;
            continue;
        }
        let operation = Operation::UpdateNodegroupConfig {
            region: target.clone(),
            cluster: cluster.to_string(),
            nodegroup: name.to_string(),
            sizes: group.sizes,
            client_request_token: token.clone(),
        };
        match ctx.mutate(&operation).await {
            Mutation::DryRun => {
                return Ok(GroupResult {
                    line: format!(
                        "dry run: node group {name} is at {}, would set {}",
                        state.sizes, group.sizes
                    ),
                    would_mutate: vec![operation],
                });
            }
            Mutation::Done(answer) => {
                if let Answer::Update(id) = answer {
                    ctx.record_handle(Handle::NodegroupUpdate {
                        nodegroup: name.to_string(),
                        update_id: id.clone(),
                    });
                    update_id = Some(id);
                }
                acted = true;
            }
            Mutation::Retry { .. } => {}
            Mutation::Failed(err) => return Err(err.to_string()),
        }
    }
}

async fn scale_asg(
    ctx: &StepCtx,
    target: &RegionName,
    group: &GroupTarget,
) -> Result<GroupResult, String> {
    let p = &ctx.providers;
    let name = group.name.as_str();
    let mut acted = false;
    loop {
        let state = ctx
            .read(|| p.compute.describe_autoscaling_group(target, name))
            .await
            .map_err(|e| e.to_string())?;
        if state.sizes == group.sizes {
            if state.in_service >= group.sizes.desired {
                let how = if acted { "scaled" } else { "already" };
                return Ok(GroupResult {
                    line: format!("Auto Scaling group {name} {how} at {}", group.sizes),
                    would_mutate: Vec::new(),
                });
            }
            ctx.wait(&format!(
                "Auto Scaling group {name}: {}/{} instances InService",
                state.in_service, group.sizes.desired
            ))
            .await;
            continue;
        }
        let operation = Operation::UpdateAutoScalingGroup {
            region: target.clone(),
            group: name.to_string(),
            sizes: group.sizes,
        };
        match ctx.mutate(&operation).await {
            Mutation::DryRun => {
                return Ok(GroupResult {
                    line: format!(
                        "dry run: Auto Scaling group {name} is at {}, would set {}",
                        state.sizes, group.sizes
                    ),
                    would_mutate: vec![operation],
                });
            }
            Mutation::Done(_) => acted = true,
            Mutation::Retry { .. } => {}
            Mutation::Failed(err) => return Err(err.to_string()),
        }
    }
}

async fn repoint_dns(
    ctx: &StepCtx,
    hosted_zone_id: &str,
    record_name: &str,
    desired: &[LatencyRecord],
    removed: &[LatencyRecord],
) -> Result<StepOutcome, String> {
    let p = &ctx.providers;
    // A change submitted by an earlier attempt of this step is waited for, not repeated.
    // A change an earlier attempt submitted is followed, not submitted again.
    let mut change_id: Option<String> = ctx.earlier_handles.iter().rev().find_map(|h| match h {
        Handle::RecordChange { change_id } => Some(change_id.clone()),
        _ => None,
    });
    let mut submitted = change_id.is_some();
    let mut refusal: Option<String> = None;
    loop {
        if let Some(id) = &change_id {
            let status = match ctx.read_bounded(|| p.dns.get_change(id)).await {
                Ok(status) => status,
                Err(err @ ProviderError::Unavailable { .. }) => {
                    // The control plane went dark after the change was sent: the data plane
                    // may show it (or the health checks may) already.
                    if let Some(done) =
                        on_data_plane(ctx, hosted_zone_id, record_name, desired, removed, &err)
                            .await
                    {
                        return Ok(done);
                    }
                    ctx.wait(&format!(
                        "Route53 change {id} to be INSYNC, or the name servers to answer as planned ({err})"
                    ))
                    .await;
                    continue;
                }
                Err(err) if err.is_transient() => {
                    ctx.wait(&format!("Route53 change {id} to be INSYNC ({err})"))
                        .await;
                    continue;
                }
                Err(err) => return Err(err.to_string()),
            };
            match status {
                ChangeStatus::Insync => {
                    return Ok(outcome(format!(
                        "change {id} is INSYNC; answering: {}",
                        serving(desired)
                    )));
                }
                ChangeStatus::Pending => {
                    ctx.wait(&format!("Route53 change {id} to be INSYNC")).await;
                    continue;
                }
            }
        }
        let current = match ctx
            .read_bounded(|| p.dns.list_records(hosted_zone_id, record_name))
            .await
        {
            Ok(current) => current,
            Err(err @ ProviderError::Unavailable { .. }) => {
                // Route53's control plane does not answer (it lives in us-east-1). If its data
                // plane already answers as planned, the run does not wait for it: the change is
                // left for the daemon to make when the control plane answers again.
                if let Some(done) =
                    on_data_plane(ctx, hosted_zone_id, record_name, desired, removed, &err).await
                {
                    return Ok(done);
                }
                ctx.wait(&format!(
                    "Route53's control plane to answer, or its name servers to stop answering for the regions leaving ({err})"
                ))
                .await;
                continue;
            }
            Err(err) => return Err(err.to_string()),
        };
        let changes = record_changes(&current, desired, removed);
        if !changes.is_empty()
            && let Some(refusal) = refusal.take()
        {
            return Err(format!(
                "{refusal}; the records still need {} change(s), so the refusal stands",
                changes.len()
            ));
        }
        if changes.is_empty() {
            let how = if submitted { "are" } else { "were already" };
            return Ok(outcome(format!(
                "records {how} as planned; answering: {}",
                serving(desired)
            )));
        }
        let operation = Operation::ChangeResourceRecordSets {
            hosted_zone_id: hosted_zone_id.to_string(),
            changes: changes.clone(),
        };
        match ctx.mutate(&operation).await {
            Mutation::DryRun => {
                return Ok(StepOutcome {
                    summary: format!("dry run: would make {} record change(s)", changes.len()),
                    would_mutate: vec![operation],
                    ..StepOutcome::default()
                });
            }
            Mutation::Done(answer) => {
                if let Answer::Change(id) = answer {
                    ctx.record_handle(Handle::RecordChange {
                        change_id: id.clone(),
                    });
                    change_id = Some(id);
                }
                submitted = true;
            }
            Mutation::Retry { .. } => {}
            // Refused (a DELETE of a record already gone, say, after an earlier attempt whose
            // answer was lost): look again before giving up.
            Mutation::Failed(err @ ProviderError::InvalidState { .. }) => {
                refusal = Some(err.to_string());
            }
            Mutation::Failed(err) => return Err(err.to_string()),
        }
    }
}

/// What the hosted zone's name servers answer, compared with the plan, in evidence that is the
/// same from everywhere: each leaving region's health record answers "unhealthy" (so Route53
/// answers its latency record to nobody, wherever the asker is), each staying region's answers
/// "healthy", and the serving record answers only the plan's values (only from where dr asks:
/// a latency set answers the region nearest the asker). `Ok(answers)` when all of that holds,
/// `Err(why not)` otherwise.
pub async fn data_plane_as_planned(
    ctx: &StepCtx,
    record_name: &str,
    desired: &[LatencyRecord],
    removed: &[LatencyRecord],
) -> Result<Vec<String>, String> {
    let Some(rtype) = desired
        .iter()
        .chain(removed)
        .find_map(|r| DnsType::parse(&r.record_type))
    else {
        return Err("the records' type cannot be asked for".into());
    };
    let wanted: BTreeSet<String> = desired
        .iter()
        .flat_map(|r| r.values.iter().map(|v| dns_value(v)))
        .collect();
    for (record, want) in removed
        .iter()
        .map(|r| (r, HEALTH_RECORD_UNHEALTHY))
        .chain(desired.iter().map(|r| (r, HEALTH_RECORD_HEALTHY)))
    {
        if want == HEALTH_RECORD_UNHEALTHY
            && record.values.iter().all(|v| wanted.contains(&dns_value(v)))
        {
            // The record answers the same values as a staying region: it moves no traffic.
            continue;
        }
        let name = health_record_name(&record.set_identifier, record_name);
        let answer = ctx
            .read_bounded(|| ctx.providers.answers.answers(&name, DnsType::Txt))
            .await
            .map_err(|e| e.to_string())?;
        if answer.len() != 1 || answer[0] != want {
            return Err(format!(
                "{}'s health record {name} answers {}, not \"{want}\"",
                record.region,
                if answer.is_empty() {
                    "nothing".to_string()
                } else {
                    answer.join(", ")
                }
            ));
        }
    }
    let answers: Vec<String> = ctx
        .read_bounded(|| ctx.providers.answers.answers(record_name, rtype))
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|a| dns_value(a))
        .collect();
    let leaving: BTreeSet<String> = removed
        .iter()
        .flat_map(|r| r.values.iter().map(|v| dns_value(v)))
        .filter(|v| !wanted.contains(v))
        .collect();
    if answers.is_empty() {
        return Err(format!("the name servers answer nothing for {record_name}"));
    }
    if let Some(stale) = answers.iter().find(|a| leaving.contains(*a)) {
        return Err(format!(
            "the name servers still answer {stale} for {record_name}, a value of a region that leaves"
        ));
    }
    if let Some(other) = answers.iter().find(|a| !wanted.contains(*a)) {
        return Err(format!(
            "the name servers answer {other} for {record_name}, which the plan does not have"
        ));
    }
    Ok(answers)
}

/// A record value as DNS compares it: an address in its canonical form, a name in lower case
/// without its trailing dot.
fn dns_value(value: &str) -> String {
    match value.trim().parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => value.trim().trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// The repoint's outcome when the control plane does not answer but the data plane answers as
/// planned; `None` while it does not.
async fn on_data_plane(
    ctx: &StepCtx,
    hosted_zone_id: &str,
    record_name: &str,
    desired: &[LatencyRecord],
    removed: &[LatencyRecord],
    control_plane: &ProviderError,
) -> Option<StepOutcome> {
    if ctx.dry_run {
        return None;
    }
    match data_plane_as_planned(ctx, record_name, desired, removed).await {
        Ok(answers) => Some(StepOutcome {
            summary: format!(
                "Route53's control plane does not answer ({control_plane}), but its name servers answer only {} for {record_name} ({}), and the health records of the regions that leave answer unhealthy, so no one is answered them: traffic is where the plan puts it. The record change is a follow-up the daemon makes when the control plane answers again",
                serving(desired),
                answers.join(", ")
            ),
            follow_up: Some(RecordFollowUp {
                hosted_zone_id: hosted_zone_id.to_string(),
                record_name: record_name.to_string(),
                desired: desired.to_vec(),
                removed: removed.to_vec(),
                reason: control_plane.to_string(),
            }),
            ..StepOutcome::default()
        }),
        Err(why) => {
            ctx.set_waiting(&why);
            None
        }
    }
}

fn serving(desired: &[LatencyRecord]) -> String {
    desired
        .iter()
        .map(|r| r.region.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn verify(ctx: &StepCtx, spec: &StepSpec) -> Result<StepOutcome, String> {
    let StepSpec::Verify {
        target,
        health_url,
        policy,
        global_cluster_id,
        target_db_cluster_id,
        hosted_zone_id,
        record_name,
        desired,
        removed,
    } = spec
    else {
        return Err("verify was given another step's spec".into());
    };
    if ctx.dry_run {
        return Ok(outcome(format!(
            "dry run: would verify {health_url} answers 200 {} times in a row, the writer is {target_db_cluster_id} in {target}, and DNS answers from {}",
            policy.consecutive_successes,
            serving(desired)
        )));
    }
    let p = &ctx.providers;
    loop {
        let mut streak = 0;
        while streak < policy.consecutive_successes {
            let result = p
                .probe
                .probe(target, health_url, policy.probe_timeout)
                .await;
            if classify_probe(&result, false) == Observation::Healthy {
                streak += 1;
                if streak < policy.consecutive_successes {
                    ctx.clock.sleep(policy.interval).await;
                }
            } else {
                streak = 0;
                ctx.wait_for(
                    &format!("{health_url} to answer 200 (got {})", result),
                    policy.interval,
                )
                .await;
            }
        }
        let cluster = ctx
            .read(|| {
                p.database
                    .describe_global_cluster(target, global_cluster_id)
            })
            .await
            .map_err(|e| e.to_string())?;
        let writer_ok = cluster.failover_state.is_none()
            && cluster
                .writer()
                .is_some_and(|w| &w.region == target && w.db_cluster_id == *target_db_cluster_id);
        if !writer_ok {
            let writer = cluster
                .writer()
                .map(|w| format!("{} in {}", w.db_cluster_id, w.region))
                .unwrap_or_else(|| "none".into());
            ctx.wait(&format!(
                "the writer to be {target_db_cluster_id} in {target} (now {writer})"
            ))
            .await;
            continue;
        }
        if ctx.dns_follow_up {
            // The records are a follow-up: the data plane is what serves traffic now.
            match data_plane_as_planned(ctx, record_name, desired, removed).await {
                Ok(answers) => {
                    return Ok(outcome(format!(
                        "{health_url} answered 200 {} times in a row; the writer is {target_db_cluster_id} in {target}; Route53's name servers answer only {} ({}); the record change is a follow-up",
                        policy.consecutive_successes,
                        serving(desired),
                        answers.join(", ")
                    )));
                }
                Err(why) => {
                    ctx.wait(&format!(
                        "Route53's name servers to answer as planned ({why})"
                    ))
                    .await;
                    continue;
                }
            }
        }
        let dns = match ctx.read_bounded(|| p.dns.list_records(hosted_zone_id, record_name)).await {
            Ok(current) if record_changes(&current, desired, removed).is_empty() => {
                format!("DNS answers from {}", serving(desired))
            }
            Ok(_) if ctx.dns_degraded => {
                "DNS records were not changed (repoint-dns ended degraded); health checks steer traffic".to_string()
            }
            Ok(_) => {
                ctx.wait("DNS records to be as planned").await;
                continue;
            }
            Err(err) if err.is_transient() && ctx.dns_degraded => {
                format!("DNS records could not be read ({err}); repoint-dns ended degraded")
            }
            Err(err) if err.is_transient() => {
                ctx.wait(&format!("Route53 to answer ({err})")).await;
                continue;
            }
            Err(err) => return Err(err.to_string()),
        };
        return Ok(outcome(format!(
            "{health_url} answered 200 {} times in a row; the writer is {target_db_cluster_id} in {target}; {dns}",
            policy.consecutive_successes
        )));
    }
}

/// What became of one mutating call.
pub enum Mutation<T> {
    /// Dry run: printed, not made.
    DryRun,
    /// Made.
    Done(T),
    /// Not made, or failed transiently; observe again before deciding to call again.
    Retry {
        /// The call may have been applied all the same (a 5xx or a timeout, not a throttle or
        /// a pause): its effect may take a moment to show.
        unsure: bool,
    },
    /// Failed for good.
    Failed(ProviderError),
}

#[cfg(test)]
mod tests {
    use super::dns_value;

    #[test]
    fn record_values_compare_as_dns_answers_them() {
        assert_eq!(dns_value("2001:DB8::0001"), dns_value("2001:db8::1"));
        assert_eq!(dns_value("Api-West.Example.com."), "api-west.example.com");
        assert_eq!(dns_value(" 192.0.2.1 "), "192.0.2.1");
        assert_ne!(dns_value("192.0.2.1"), dns_value("192.0.2.10"));
    }
}
