//! The commands that start or steer a run: `dr plan`, `dr failover`, `dr switchover`,
//! `dr resume`, `dr approve`, `dr skip`, `dr abort`.
//!
//! A run's plan is built once: the value printed and confirmed is the value stored and carried
//! out. If the writer moves while the operator reads it, the run is refused.

use super::context::{Backend, Ctx, Executor, confirm, reason};
use super::{CliError, CliResult, ControlArgs, PlanArgs, RunArgs, exit, remote, render};
use crate::core::ids::{Actor, RunId, StepName};
use crate::core::plan::{Operation, Plan, PlanRequest, RunKind, build_plan};
use crate::core::run::{Approval, EventRecord, RunEvent, RunStatus, Shown, StepStatus, Trigger};
use crate::core::time::fmt_duration;
use crate::engine::{Engine, ExecOutcome, NewRun, control, new_run_id};
use crate::store::{LockError, Store, StoreError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `dr plan`.
pub async fn plan(ctx: &Ctx, args: PlanArgs) -> CliResult {
    let to = ctx.region(&args.to)?;
    let from = match &args.from {
        Some(from) => ctx.region(from)?,
        None => ctx.writer(&ctx.backend().await?).await?,
    };
    let kind = if args.switchover {
        RunKind::Switchover
    } else {
        RunKind::Failover
    };
    let mut options = ctx.config.plan.clone();
    options.serial = args.serial;
    let plan = build_plan(
        &ctx.config.topology,
        &PlanRequest { from, to, kind },
        &options,
    )
    .map_err(|e| CliError::bad_input(e.to_string()))?;
    let preview = RunId::new("<run-id>");
    if ctx.json {
        let operations: Vec<Operation> = plan
            .steps
            .iter()
            .flat_map(|s| plan.operations(s.name, &preview))
            .collect();
        ctx.print_json(&PlanOutput {
            plan: &plan,
            operations,
        });
    } else {
        print!("{}", plan.render(&preview));
    }
    Ok(exit::OK)
}

/// `dr plan --json`: the plan and every mutating call it makes.
#[derive(serde::Serialize)]
struct PlanOutput<'a> {
    plan: &'a Plan,
    operations: Vec<Operation>,
}

/// A run about to start: its plan, built once, and the id its request tokens derive from.
pub struct Prepared {
    /// The run's id.
    pub id: RunId,
    /// The plan, as shown.
    pub plan: Plan,
    /// Whether the writer was read (not named with --from), so it is read again before start.
    pub writer_read: bool,
}

/// Builds the plan of `request` once, for showing and for running.
pub fn prepare(
    ctx: &Ctx,
    backend: &Backend,
    request: PlanRequest,
    writer_read: bool,
) -> Result<Prepared, CliError> {
    let plan = build_plan(&ctx.config.topology, &request, &ctx.config.plan)
        .map_err(|e| CliError::bad_input(e.to_string()))?;
    // The id is chosen before the plan is shown, so the request tokens shown are those sent.
    let id = new_run_id(backend.clock.now());
    Ok(Prepared {
        id,
        plan,
        writer_read,
    })
}

/// Checks that the world the plan was built for still holds: the writer it moves is still the
/// writer. Else nothing starts.
pub async fn still_current(
    ctx: &Ctx,
    backend: &Backend,
    prepared: &Prepared,
) -> Result<(), CliError> {
    if !prepared.writer_read {
        // Named with --from: preflight checks it against the global cluster.
        return Ok(());
    }
    let planned = &prepared.plan.request.from;
    let now = ctx.writer(backend).await?;
    if &now != planned {
        return Err(CliError::refused(format!(
            "the writer moved from {planned} to {now} while the plan was shown; nothing was started. Run the command again to see the plan for where the writer is now"
        )));
    }
    Ok(())
}

/// `dr failover` and `dr switchover`.
pub async fn start(ctx: &Ctx, args: RunArgs, kind: RunKind) -> CliResult {
    let to = ctx.region(&args.to)?;
    let store = ctx.store()?;
    let lock = match ctx.executor(&store).await {
        Ok(lock) => lock,
        Err(LockError::Held { holder }) if holder.contains(" daemon") => {
            return remote::start(ctx, &args, kind, &holder).await;
        }
        Err(err) => return Err(err.into()),
    };
    if let Some(active) = store.active_run()? {
        let status = store
            .load_run(&active)?
            .map(|r| {
                r.state()
                    .map(|s| s.status().to_string())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        return Err(CliError::refused(format!(
            "run {active} is not finished ({status}); `dr resume` continues it, `dr abort` ends it"
        )));
    }
    let backend = ctx.backend().await?;
    let (from, writer_read) = match &args.from {
        Some(from) => (ctx.region(from)?, false),
        None => (ctx.writer(&backend).await?, true),
    };
    let request = PlanRequest {
        from: from.clone(),
        to: to.clone(),
        kind,
    };
    let prepared = prepare(ctx, &backend, request, writer_read)?;
    if !args.dry_run {
        let what = match kind {
            RunKind::Failover => format!(
                "UNPLANNED FAILOVER from {from} to {to}: promotes {to}'s database with AllowDataLoss=true (writes not yet replicated are lost), scales {to} up and removes {from} from DNS.",
            ),
            RunKind::Switchover => format!(
                "Planned switchover from {from} to {to}: moves the writer with no data loss and scales {to} up.",
            ),
        };
        eprint!("{}", prepared.plan.render(&prepared.id));
        confirm(&what, to.as_str(), args.yes)?;
        still_current(ctx, &backend, &prepared).await?;
    }
    let mut engine = ctx.engine(store.clone(), &backend);
    engine.fence = lock.fence();
    let id = prepared.id.clone();
    let header = engine.create_run(
        prepared.plan,
        NewRun {
            id: id.clone(),
            trigger: Trigger::Manual {
                actor: Actor::new(&args.actor),
            },
            actor: Actor::new(&args.actor),
            reason: args.reason.clone(),
            dry_run: args.dry_run,
        },
    )?;
    if !ctx.json {
        eprintln!(
            "run {id}: {}{kind} from {from} to {to} started",
            if header.dry_run { "dry-run " } else { "" }
        );
    }
    execute_foreground(ctx, &engine, &id, lock).await
}

/// Carries `run` out in this process until it ends, needs an operator, or a signal stops it.
async fn execute_foreground(ctx: &Ctx, engine: &Engine, run: &RunId, _lock: Executor) -> CliResult {
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        super::wait_for_signal().await;
        eprintln!(
            "dr: stopping: the steps in flight are checkpointed and the run is paused; `dr resume` continues it"
        );
        signals.cancel();
    });
    let outcome = engine.execute(run, &shutdown).await?;
    let stored = engine
        .store
        .load_run(run)?
        .ok_or_else(|| StoreError::NoSuchRun(run.clone()))?;
    if ctx.json {
        ctx.print_json(&crate::api::view::RunView::of(&stored, None));
    } else {
        eprint!("{}", render::run_summary(&stored));
    }
    Ok(match outcome {
        ExecOutcome::Finished(outcome) if outcome.is_success() => exit::OK,
        ExecOutcome::Finished(_) => exit::RUN_FAILED,
        ExecOutcome::Blocked(status) => {
            eprintln!("{}", render::safe_block(&next_action_hint(run, &status)));
            exit::NEEDS_OPERATOR
        }
        ExecOutcome::ShutDown => exit::INTERRUPTED,
    })
}

/// What an operator can do about a run that waits for one.
pub fn next_action_hint(run: &RunId, status: &RunStatus) -> String {
    match status {
        RunStatus::AwaitingApproval { step, reason } => format!(
            "run {run} waits for approval of {step}: {reason}\n  approve: dr approve --run {run} --reason \"...\"\n  or end it: dr abort --run {run} --reason \"...\""
        ),
        RunStatus::Stopped { step, error } => format!(
            "run {run} stopped: {step} failed: {error}\n  retry: dr resume --run {run}\n  skip (audited): dr skip {step} --run {run} --reason \"...\"\n  or end it: dr abort --run {run} --reason \"...\""
        ),
        RunStatus::Paused => {
            format!("run {run} is paused; continue it with: dr resume --run {run}")
        }
        other => format!("run {run}: {other}"),
    }
}

fn named_run(store: &dyn Store, args: &ControlArgs) -> Result<RunId, CliError> {
    Ok(control::resolve_run(
        store,
        args.run.as_ref().map(RunId::new).as_ref(),
    )?)
}

/// `dr resume`.
pub async fn resume(ctx: &Ctx, args: ControlArgs) -> CliResult {
    let store = ctx.store()?;
    let run = named_run(store.as_ref(), &args)?;
    let why = args
        .reason
        .clone()
        .unwrap_or_else(|| "resumed by operator".into());
    let lock = match ctx.executor(&store).await {
        Ok(lock) => lock,
        Err(LockError::Held { holder }) if holder.contains(" daemon") => {
            // The daemon carries runs out: record the resume, it continues the run.
            control::resume(
                store.as_ref(),
                &run,
                &Actor::new(&args.actor),
                &why,
                ctx.now(),
            )?;
            println!(
                "run {run}: resumed; {} continues it",
                remote::the_daemon(&holder)
            );
            return Ok(exit::OK);
        }
        Err(err) => return Err(err.into()),
    };
    let backend = ctx.backend().await?;
    let stored = store
        .load_run(&run)?
        .ok_or_else(|| StoreError::NoSuchRun(run.clone()))?;
    if let RunStatus::Finished { outcome } = stored.state()?.status() {
        return Err(CliError::refused(format!(
            "run {run} is already finished ({outcome})"
        )));
    }
    let record = control::resume(
        store.as_ref(),
        &run,
        &Actor::new(&args.actor),
        &why,
        backend.clock.now(),
    )?;
    let mut engine = ctx.engine(store.clone(), &backend);
    engine.fence = lock.fence();
    engine.progress.event(&run, &record);
    execute_foreground(ctx, &engine, &run, lock).await
}

/// The step an `Approved` record approves.
fn record_step(record: &EventRecord) -> Option<StepName> {
    match record.event {
        RunEvent::Approved { step, .. } => Some(step),
        _ => None,
    }
}

/// A step named on the command line.
fn step_named(name: &str) -> Result<StepName, CliError> {
    StepName::parse(name).ok_or_else(|| {
        CliError::bad_input(format!(
            "`{name}` is not a step; steps are: {}",
            StepName::ALL.map(|s| s.as_str()).join(", ")
        ))
    })
}

/// `dr approve`.
pub async fn approve(ctx: &Ctx, args: ControlArgs, step: Option<String>) -> CliResult {
    let step = step.as_deref().map(step_named).transpose()?;
    let why = reason(&args.reason, "approval")?;
    let store = ctx.store()?;
    let run = named_run(store.as_ref(), &args)?;
    let stored = store
        .load_run(&run)?
        .ok_or_else(|| StoreError::NoSuchRun(run.clone()))?;
    // The gate as it stands now, from the step itself (the run may still be running its other
    // steps): the operator approves this figure, and the store refuses the approval if the gate
    // shows another by the time it is written.
    let state = stored.state()?;
    let gated: Vec<(StepName, String, Option<u64>)> = state
        .steps
        .iter()
        .filter_map(|(name, s)| match &s.status {
            StepStatus::AwaitingApproval { reason, lag_ms } if step.is_none_or(|n| n == *name) => {
                Some((*name, reason.clone(), *lag_ms))
            }
            _ => None,
        })
        .collect();
    let mut shown = None;
    if let [(gated_step, gate_reason, lag_ms)] = gated.as_slice() {
        confirm(
            &format!("Approve {gated_step} of run {run}: {gate_reason}"),
            run.as_str(),
            args.yes,
        )?;
        shown = Some(Shown { lag_ms: *lag_ms });
    }
    let record = control::approve(
        store.as_ref(),
        &run,
        step,
        shown,
        &Actor::new(&args.actor),
        &why,
        ctx.now(),
    )?;
    if !ctx.json {
        let accepted = store
            .load_run(&run)?
            .and_then(|r| r.state().ok())
            .and_then(|s| s.steps.get(&record_step(&record)?)?.approval.clone());
        match accepted {
            Some(Approval {
                lag_ms: Some(ms), ..
            }) => eprintln!(
                "run {run}: approved, for a replication lag of up to {} (the writes a promotion may lose); if the lag is worse when the promotion is sent, it waits for approval again",
                fmt_duration(Duration::from_millis(ms))
            ),
            Some(Approval { lag_ms: None, .. }) => eprintln!(
                "run {run}: approved, with the replication lag unmeasured: the promotion goes ahead whatever it is"
            ),
            None => eprintln!("run {run}: approved"),
        }
    }
    // Continue the run here unless another process carries it out; that one sees the approval.
    match ctx.executor(&store).await {
        Ok(lock) => {
            let backend = ctx.backend().await?;
            let mut engine = ctx.engine(store.clone(), &backend);
            engine.fence = lock.fence();
            engine.progress.event(&run, &record);
            execute_foreground(ctx, &engine, &run, lock).await
        }
        Err(LockError::Held { holder }) => {
            eprintln!("the run is carried out by {holder}, which continues it");
            Ok(exit::OK)
        }
        Err(err) => Err(err.into()),
    }
}

/// `dr abort`.
pub fn abort(ctx: &Ctx, args: ControlArgs) -> CliResult {
    let why = reason(&args.reason, "abort")?;
    let store = ctx.store()?;
    let run = named_run(store.as_ref(), &args)?;
    confirm(
        &format!(
            "Abort run {run}? Nothing is rolled back: AWS operations already requested go on."
        ),
        run.as_str(),
        args.yes,
    )?;
    let executor_running = ctx.executor_holder(store.as_ref()).is_some();
    control::abort(
        store.as_ref(),
        &run,
        &Actor::new(&args.actor),
        &why,
        ctx.now(),
        executor_running,
    )?;
    report_control(
        ctx,
        store.as_ref(),
        &run,
        if executor_running {
            "abort requested; the executing process stops the run at its next checkpoint"
        } else {
            "aborted"
        },
    )
}

/// `dr skip`.
pub fn skip(ctx: &Ctx, step: String, args: ControlArgs) -> CliResult {
    let step = step_named(&step)?;
    let why = reason(&args.reason, "skip")?;
    let store = ctx.store()?;
    let run = named_run(store.as_ref(), &args)?;
    confirm(
        &format!("Skip {step} of run {run}? The run goes on as if it had succeeded."),
        step.as_str(),
        args.yes,
    )?;
    control::skip(
        store.as_ref(),
        &run,
        step,
        &Actor::new(&args.actor),
        &why,
        ctx.now(),
    )?;
    report_control(
        ctx,
        store.as_ref(),
        &run,
        "skipped; `dr resume` continues the run",
    )
}

/// Prints a run after an operator's command changed it.
pub fn report_control(ctx: &Ctx, store: &dyn Store, run: &RunId, what: &str) -> CliResult {
    let stored = store
        .load_run(run)?
        .ok_or_else(|| StoreError::NoSuchRun(run.clone()))?;
    if ctx.json {
        ctx.print_json(&crate::api::view::RunView::of(&stored, None));
    } else {
        println!(
            "run {run}: {what} (status: {})",
            render::safe(&stored.state()?.status().to_string())
        );
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, VirtualClock};
    use crate::core::time::Timestamp;
    use crate::provider::Providers;
    use crate::provider::sim::{SimProvider, World};
    use std::sync::Arc;

    fn ctx_and_backend() -> (Ctx, Backend) {
        let text = include_str!("../../config/example.toml");
        let config = crate::config::parse(text, std::path::Path::new("/nowhere/dr.toml")).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(VirtualClock::starting_at(Timestamp(0)));
        let world = World::new(&config.topology, config.sim.seed, Timestamp(0));
        let sim = Arc::new(SimProvider::in_memory(world, clock.clone()));
        let backend = Backend {
            providers: Providers::all_from(sim.clone()),
            clock,
            sim: Some(sim),
        };
        (Ctx { config, json: true }, backend)
    }

    fn request(from: &str, to: &str) -> PlanRequest {
        PlanRequest {
            from: from.into(),
            to: to.into(),
            kind: RunKind::Failover,
        }
    }

    #[tokio::test]
    async fn a_plan_whose_writer_moved_while_it_was_shown_is_refused() {
        let (ctx, backend) = ctx_and_backend();
        // Shown as moving the writer out of us-west-2, but the writer is in us-east-1 now.
        let prepared = prepare(&ctx, &backend, request("us-west-2", "us-east-1"), true).unwrap();
        let err = still_current(&ctx, &backend, &prepared)
            .await
            .expect_err("a stale plan must not start");
        assert_eq!(err.code, exit::REFUSED);
        assert!(
            err.message
                .contains("the writer moved from us-west-2 to us-east-1"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("nothing was started"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn a_plan_whose_writer_still_holds_starts_and_a_named_from_is_left_to_preflight() {
        let (ctx, backend) = ctx_and_backend();
        let current = prepare(&ctx, &backend, request("us-east-1", "us-west-2"), true).unwrap();
        still_current(&ctx, &backend, &current).await.unwrap();
        let named = prepare(&ctx, &backend, request("us-west-2", "us-east-1"), false).unwrap();
        still_current(&ctx, &backend, &named).await.unwrap();
    }

    #[tokio::test]
    async fn the_stored_plan_is_the_prepared_value() {
        let (ctx, backend) = ctx_and_backend();
        let prepared = prepare(&ctx, &backend, request("us-east-1", "us-west-2"), true).unwrap();
        let shown = prepared.plan.render(&prepared.id);
        let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
        let engine = ctx.engine(store.clone(), &backend);
        engine
            .create_run(
                prepared.plan.clone(),
                NewRun {
                    id: prepared.id.clone(),
                    trigger: Trigger::Manual {
                        actor: Actor::new("test"),
                    },
                    actor: Actor::new("test"),
                    reason: "test".into(),
                    dry_run: true,
                },
            )
            .unwrap();
        let stored = store.load_run(&prepared.id).unwrap().unwrap();
        assert_eq!(stored.header.plan, prepared.plan);
        assert_eq!(stored.header.plan.render(&stored.header.id), shown);
    }
}
