//! Record changes a run left as follow-ups: repoint-dns found Route53's control plane dark and
//! its data plane already answering as planned, so the run went on; the daemon makes the change
//! once the control plane answers again, and audits it.
//!
//! A follow-up is found in the run's log (`StepOutcome::follow_up` of repoint-dns) and is done
//! when the audit log says so. Only the follow-up of the newest run that touched DNS is pending:
//! a later run that repointed planned the records afresh, so an earlier follow-up is superseded
//! (and audited as such); a later run that never reached DNS changes nothing. The change is
//! made from the records as they are (list, diff, change), so a crash between the change and
//! its audit entry only means the next attempt finds nothing left to change.

use crate::core::ids::{Actor, RunId, StepName};
use crate::core::plan::{Operation, record_changes};
use crate::core::run::{RecordFollowUp, RunStatus};
use crate::core::time::Timestamp;
use crate::engine::StepCtx;
use crate::engine::steps::Mutation;
use crate::provider::Answer;
use crate::store::{AuditEntry, STORE_VERSION, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// The audit action that closes a follow-up.
pub const DONE: &str = "record follow-up done";
/// The audit action that closes a follow-up a later run made moot.
pub const SUPERSEDED: &str = "record follow-up superseded";

/// How many of the latest runs are searched for a pending follow-up.
const LOOKBACK_RUNS: usize = 50;

/// A pending follow-up, as status, the page and metrics show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUpStatus {
    /// The run that left it.
    pub run: RunId,
    /// When repoint-dns left it.
    pub since: Timestamp,
    /// The record.
    pub record_name: String,
    /// The regions the record must answer for.
    pub serving: Vec<String>,
    /// Why it was left.
    pub reason: String,
    /// The latest attempt's result, if one was made.
    pub last_attempt: Option<String>,
}

/// The pending follow-up, if any. Runs are read newest first:
/// - while a run is unfinished, nothing is decided (it may repoint DNS itself);
/// - a run whose repoint-dns never started (stopped or aborted before it) is passed over: it
///   changed nothing about DNS;
/// - the newest run whose repoint-dns started decides. If it left a follow-up not yet closed in
///   the audit log, that is the pending one. Any older open follow-up is closed as superseded:
///   a later run planned the records afresh.
pub fn pending(
    store: &dyn Store,
    actor: &Actor,
    now: Timestamp,
) -> Result<Option<(FollowUpStatus, RecordFollowUp)>, StoreError> {
    let mut newer_repoint = None::<RunId>;
    for header in store.list_runs(LOOKBACK_RUNS)? {
        if header.dry_run {
            continue;
        }
        let Some(stored) = store.load_run(&header.id)? else {
            continue;
        };
        let Ok(state) = stored.state() else {
            continue;
        };
        if !matches!(state.status(), RunStatus::Finished { .. }) {
            return Ok(None);
        }
        let Some(step) = state.steps.get(&StepName::RepointDns) else {
            continue;
        };
        if step.started_at.is_none() {
            continue;
        }
        let follow_up = step.outcome.as_ref().and_then(|o| o.follow_up.clone());
        let closed = || -> Result<bool, StoreError> {
            Ok(store
                .audit(Some(&header.id), 1000)?
                .iter()
                .any(|e| e.action == DONE || e.action == SUPERSEDED))
        };
        match (follow_up, &newer_repoint) {
            // The newest repoint changed the records itself (or ended degraded): look for an
            // older open follow-up to close.
            (None, None) => {
                newer_repoint = Some(header.id.clone());
            }
            (None, Some(_)) => {}
            (Some(_), _) if closed()? => return Ok(None),
            (Some(_), Some(newer)) => {
                store.record_audit(&audit(
                    actor,
                    now,
                    &header.id,
                    SUPERSEDED,
                    &format!("run {newer} repointed the records after it"),
                ))?;
                return Ok(None);
            }
            (Some(follow_up), None) => {
                let status = FollowUpStatus {
                    run: header.id.clone(),
                    since: step.finished_at.unwrap_or(header.created_at),
                    record_name: follow_up.record_name.clone(),
                    serving: follow_up
                        .desired
                        .iter()
                        .map(|r| r.region.to_string())
                        .collect(),
                    reason: follow_up.reason.clone(),
                    last_attempt: None,
                };
                return Ok(Some((status, follow_up)));
            }
        }
    }
    Ok(None)
}

fn audit(actor: &Actor, now: Timestamp, run: &RunId, action: &str, reason: &str) -> AuditEntry {
    AuditEntry {
        version: STORE_VERSION,
        at: now,
        actor: actor.clone(),
        run: Some(run.clone()),
        action: action.to_string(),
        reason: reason.to_string(),
    }
}

/// One attempt at a follow-up: list the records, change what differs, and close it in the audit
/// log once nothing differs. Returns what happened, in words. `last` is where the daemon's
/// status reads the latest attempt.
pub async fn attempt(
    ctx: &StepCtx,
    store: Arc<dyn Store>,
    actor: &Actor,
    run: &RunId,
    follow_up: &RecordFollowUp,
    last: Arc<Mutex<Option<String>>>,
) -> Result<bool, StoreError> {
    let p = &ctx.providers;
    let note = |text: String| {
        tracing::info!(run = %run, "{text}");
        *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
    };
    let current = match ctx
        .read_bounded(|| {
            p.dns
                .list_records(&follow_up.hosted_zone_id, &follow_up.record_name)
        })
        .await
    {
        Ok(current) => current,
        Err(err) => {
            note(format!(
                "Route53's control plane still does not answer ({err})"
            ));
            return Ok(false);
        }
    };
    let changes = record_changes(&current, &follow_up.desired, &follow_up.removed);
    if changes.is_empty() {
        store.record_audit(&audit(
            actor,
            ctx.clock.now(),
            run,
            DONE,
            &format!(
                "the records of {} are as the run planned",
                follow_up.record_name
            ),
        ))?;
        note("the records are as planned; the follow-up is done".into());
        return Ok(true);
    }
    if let Some(active) = store.active_run()? {
        // A run may be repointing the records itself: never race it with an older plan.
        note(format!(
            "run {active} is active; the follow-up waits for it"
        ));
        return Ok(false);
    }
    let operation = Operation::ChangeResourceRecordSets {
        hosted_zone_id: follow_up.hosted_zone_id.clone(),
        changes,
    };
    match ctx.mutate(&operation).await {
        Mutation::Done(answer) => {
            let id = match answer {
                Answer::Change(id) => format!(" (change {id})"),
                _ => String::new(),
            };
            store.record_audit(&AuditEntry {
                version: STORE_VERSION,
                at: ctx.clock.now(),
                actor: actor.clone(),
                run: Some(run.clone()),
                action: "record follow-up: change sent".into(),
                reason: format!("{operation}{id}"),
            })?;
            note(format!("change sent{id}; checking the records next"));
        }
        Mutation::Retry { .. } | Mutation::DryRun => {
            note("the change did not go through; trying again".into());
        }
        Mutation::Failed(err) => note(format!("the change was refused: {err}")),
    }
    Ok(false)
}
