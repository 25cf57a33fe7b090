//! The automation switches: `dr pause`, `dr unpause`, `dr ack`.

use super::context::{Ctx, reason};
use super::runs::report_control;
use super::{CliResult, ControlArgs, exit};
use crate::core::ids::{Actor, RunId};
use crate::engine::control;

/// `dr pause`: automation off, and the active run paused; with --run, only that run.
pub fn pause(ctx: &Ctx, args: ControlArgs) -> CliResult {
    let why = reason(&args.reason, "pause")?;
    let store = ctx.store()?;
    let actor = Actor::new(&args.actor);
    if let Some(named) = &args.run {
        let run = control::resolve_run(store.as_ref(), Some(&RunId::new(named)))?;
        control::pause(store.as_ref(), &run, &actor, &why, ctx.now())?;
        return report_control(
            ctx,
            store.as_ref(),
            &run,
            "paused; `dr resume` continues it",
        );
    }
    let paused = control::pause_automation(store.as_ref(), &actor, &why, ctx.now())?;
    println!("automation paused: no automatic failover or pre-warm until `dr unpause`");
    match paused {
        Some(run) => report_control(
            ctx,
            store.as_ref(),
            &run,
            "paused; `dr resume` continues it",
        ),
        None => Ok(exit::OK),
    }
}

/// `dr unpause`.
pub fn unpause(ctx: &Ctx, args: ControlArgs) -> CliResult {
    let why = reason(&args.reason, "unpause")?;
    let store = ctx.store()?;
    control::unpause_automation(store.as_ref(), &Actor::new(&args.actor), &why, ctx.now())?;
    println!("automation on: the daemon fails over automatically again");
    if let Some(run) = store.active_run()? {
        println!("run {run} is unfinished; `dr resume` continues it if it is paused");
    }
    Ok(exit::OK)
}

/// `dr ack`.
pub fn ack(ctx: &Ctx, args: ControlArgs) -> CliResult {
    let why = reason(&args.reason, "ack")?;
    let store = ctx.store()?;
    control::ack_cooldown(store.as_ref(), &Actor::new(&args.actor), &why, ctx.now())?;
    println!("cooldown cleared: automatic failover may start again");
    Ok(exit::OK)
}
