//! Operator commands: on a run (approve, skip, pause, resume, abort) and on automation (pause,
//! unpause, acknowledge the cooldown).
//!
//! Each is one checked append to the store, so it works from any process: the executor that
//! carries the run out sees it at its next turn. Nothing here talks to the cloud.

use super::EngineError;
use crate::core::decision::Automation;
use crate::core::ids::{Actor, RunId, StepName};
use crate::core::run::{EventRecord, RunEvent, RunOutcome, RunStatus, Shown, StepStatus};
use crate::core::time::Timestamp;
use crate::store::{AuditEntry, STORE_VERSION, Store, StoreError};

/// The run an operator means: the one named, or else the unfinished one.
pub fn resolve_run(store: &dyn Store, named: Option<&RunId>) -> Result<RunId, EngineError> {
    match named {
        Some(run) => {
            if store.load_run(run)?.is_none() {
                return Err(StoreError::NoSuchRun(run.clone()).into());
            }
            Ok(run.clone())
        }
        None => store.active_run()?.ok_or_else(|| {
            EngineError::Refused(
                "no run is in progress; `dr runs` lists past runs, name one with --run".into(),
            )
        }),
    }
}

/// Approves the step that waits for approval (or the one named). With `shown`, the approval is
/// for that figure only and is refused if the gate now shows another.
pub fn approve(
    store: &dyn Store,
    run: &RunId,
    step: Option<StepName>,
    shown: Option<Shown>,
    actor: &Actor,
    reason: &str,
    at: Timestamp,
) -> Result<EventRecord, EngineError> {
    let stored = store
        .load_run(run)?
        .ok_or_else(|| StoreError::NoSuchRun(run.clone()))?;
    let state = stored.state()?;
    let waiting: Vec<StepName> = state
        .steps
        .iter()
        .filter(|(_, s)| matches!(s.status, StepStatus::AwaitingApproval { .. }))
        .map(|(name, _)| *name)
        .collect();
    let step = match (step, waiting.as_slice()) {
        (Some(step), _) if waiting.contains(&step) => step,
        (Some(step), _) => {
            return Err(EngineError::Refused(format!(
                "step {step} of run {run} is not waiting for approval (status: {})",
                state.status()
            )));
        }
        (None, [only]) => *only,
        (None, []) => {
            return Err(EngineError::Refused(format!(
                "run {run} has no step waiting for approval (status: {})",
                state.status()
            )));
        }
        (None, _) => {
            return Err(EngineError::Refused(
                "several steps wait for approval; name one with --step".into(),
            ));
        }
    };
    Ok(store.append(
        run,
        at,
        actor,
        RunEvent::Approved {
            step,
            reason: reason.to_string(),
            shown,
        },
    )?)
}

/// Skips a failed, interrupted or gated step. The reason is required and audited.
pub fn skip(
    store: &dyn Store,
    run: &RunId,
    step: StepName,
    actor: &Actor,
    reason: &str,
    at: Timestamp,
) -> Result<EventRecord, EngineError> {
    Ok(store.append(
        run,
        at,
        actor,
        RunEvent::StepSkipped {
            step,
            reason: reason.to_string(),
        },
    )?)
}

/// Pauses a run: no new step starts, steps in flight stop at their next wait.
pub fn pause(
    store: &dyn Store,
    run: &RunId,
    actor: &Actor,
    reason: &str,
    at: Timestamp,
) -> Result<EventRecord, EngineError> {
    let stored = store
        .load_run(run)?
        .ok_or_else(|| StoreError::NoSuchRun(run.clone()))?;
    let status = stored.state()?.status();
    if matches!(status, RunStatus::Paused) {
        return Err(EngineError::Refused(format!("run {run} is already paused")));
    }
    Ok(store.append(
        run,
        at,
        actor,
        RunEvent::Paused {
            reason: reason.to_string(),
        },
    )?)
}

/// Records that the run continues; failed steps will be tried again.
pub fn resume(
    store: &dyn Store,
    run: &RunId,
    actor: &Actor,
    reason: &str,
    at: Timestamp,
) -> Result<EventRecord, EngineError> {
    Ok(store.append(
        run,
        at,
        actor,
        RunEvent::Resumed {
            reason: reason.to_string(),
        },
    )?)
}

/// Aborts a run. When no executor holds it, the run is finished here; otherwise the executor
/// stops its steps and finishes it. Nothing is rolled back: AWS operations already requested
/// go on.
pub fn abort(
    store: &dyn Store,
    run: &RunId,
    actor: &Actor,
    reason: &str,
    at: Timestamp,
    executor_running: bool,
) -> Result<EventRecord, EngineError> {
    let record = store.append(
        run,
        at,
        actor,
        RunEvent::AbortRequested {
            reason: reason.to_string(),
        },
    )?;
    if executor_running {
        return Ok(record);
    }
    Ok(store.append(
        run,
        at,
        actor,
        RunEvent::Finished {
            outcome: RunOutcome::Aborted,
        },
    )?)
}

/// Changes the automation switches in one audited write.
fn change_automation(
    store: &dyn Store,
    actor: &Actor,
    reason: &str,
    now: Timestamp,
    action: &str,
    change: impl FnOnce(&mut Automation),
) -> Result<(), EngineError> {
    let mut automation = store.automation()?;
    change(&mut automation);
    store.set_automation(&automation, &audit(actor, now, action, reason))?;
    Ok(())
}

/// Pauses automation (and the active run, if any); used by `dr pause`, the API and drills.
pub fn pause_automation(
    store: &dyn Store,
    actor: &Actor,
    reason: &str,
    now: Timestamp,
) -> Result<Option<RunId>, EngineError> {
    change_automation(store, actor, reason, now, "automation paused", |a| {
        a.paused = true;
        a.changed_by = Some(actor.clone());
        a.reason = Some(reason.to_string());
        a.changed_at = Some(now);
    })?;
    let run = store.active_run()?;
    if let Some(run) = &run {
        let status = store
            .load_run(run)?
            .map(|r| r.state().map(|s| s.status()))
            .transpose()?;
        if !matches!(status, Some(RunStatus::Paused)) {
            pause(store, run, actor, reason, now)?;
        }
    }
    Ok(run)
}

/// Turns automation back on; used by `dr unpause`, the API and drills.
pub fn unpause_automation(
    store: &dyn Store,
    actor: &Actor,
    reason: &str,
    now: Timestamp,
) -> Result<(), EngineError> {
    change_automation(store, actor, reason, now, "automation unpaused", |a| {
        a.paused = false;
        a.changed_by = Some(actor.clone());
        a.reason = Some(reason.to_string());
        a.changed_at = Some(now);
    })
}

/// Clears the cooldown of the last failover; used by `dr ack`, the API and drills.
pub fn ack_cooldown(
    store: &dyn Store,
    actor: &Actor,
    reason: &str,
    now: Timestamp,
) -> Result<(), EngineError> {
    change_automation(store, actor, reason, now, "cooldown cleared", |a| {
        a.cooldown_cleared_at = Some(now);
    })
}

fn audit(actor: &Actor, now: Timestamp, action: &str, reason: &str) -> AuditEntry {
    AuditEntry {
        version: STORE_VERSION,
        at: now,
        actor: actor.clone(),
        run: None,
        action: action.to_string(),
        reason: reason.to_string(),
    }
}
