//! `dr sim`: the built-in simulator's world, shown and changed by hand.

use super::context::Ctx;
use super::{CliError, CliResult, SimCommand, exit, render};
use crate::config::Backend;
use crate::core::time::fmt_duration;
use crate::drill::scenario;
use crate::provider::sim::{FaultKind, OutageKind};

/// `dr sim`: changes the simulated world, then shows it.
pub fn sim(ctx: &Ctx, command: SimCommand) -> CliResult {
    let config = &ctx.config;
    if config.backend != Backend::Sim {
        return Err(CliError::refused(
            "`dr sim` changes the built-in simulator; this config uses backend = \"aws\"",
        ));
    }
    if let SimCommand::Reset = command {
        let path = &config.sim.state_path;
        if path.exists() {
            std::fs::remove_file(path).map_err(|e| {
                CliError::new(
                    exit::STORE_DAMAGED,
                    format!("cannot remove {}: {e}", path.display()),
                )
            })?;
        }
    }
    let backend = ctx.sim_backend()?;
    let clock = backend.clock;
    let sim_provider = backend
        .sim
        .ok_or_else(|| CliError::refused("the simulator is not in use"))?;
    let check_region = |name: &str| ctx.region(name);
    let change: Result<String, String> = match command {
        SimCommand::Show | SimCommand::Reset => Ok(String::new()),
        SimCommand::Outage { region, kind } => {
            let region = check_region(&region)?;
            let kind = match kind.as_str() {
                "full" => OutageKind::Full,
                "app" => OutageKind::App,
                other => {
                    return Err(CliError::bad_input(format!(
                        "outage kind is `full` or `app`, not `{other}`"
                    )));
                }
            };
            sim_provider
                .update(|w| w.set_outage(&region, Some(kind)))?
                .map(|_| format!("{region}: {kind:?} outage"))
        }
        SimCommand::Recover { region } => {
            let region = check_region(&region)?;
            sim_provider
                .update(|w| w.set_outage(&region, None))?
                .map(|_| format!("{region}: recovered"))
        }
        SimCommand::Checkers { region, share } => {
            let region = check_region(&region)?;
            sim_provider
                .update(|w| w.set_failing_checkers(&region, share))?
                .map(|_| format!("{region}: {share} of checkers failing"))
        }
        SimCommand::Lag { region, lag } => {
            let region = check_region(&region)?;
            let lag = humantime::parse_duration(&lag).map_err(|e| {
                CliError::bad_input(format!(
                    "`{lag}` is not a duration ({e}); write it like \"3s\" or \"7m\""
                ))
            })?;
            sim_provider
                .update(|w| w.set_lag(&region, lag))?
                .map(|_| format!("{region}: lag {}", fmt_duration(lag)))
        }
        SimCommand::Route53 { state } => {
            let up = match state.as_str() {
                "up" => true,
                "down" => false,
                other => {
                    return Err(CliError::bad_input(format!(
                        "route53 state is `up` or `down`, not `{other}`"
                    )));
                }
            };
            sim_provider.update(|w| w.dns_control_plane_up = up)?;
            Ok(format!("Route53 control plane {state}"))
        }
        SimCommand::Fault {
            operation,
            kind,
            count,
        } => {
            if !scenario::FAULTABLE.contains(&operation.as_str()) {
                return Err(CliError::bad_input(format!(
                    "`{operation}` is not an operation dr calls; use one of: {}",
                    scenario::FAULTABLE.join(", ")
                )));
            }
            let kind: FaultKind = serde_json::from_value(kind.clone().into()).map_err(|_| {
                CliError::bad_input(format!(
                    "fault kind `{kind}` is not throttle, unavailable, access-denied or latency"
                ))
            })?;
            sim_provider.update(|w| {
                w.faults.push(crate::provider::sim::world::Fault {
                    operation: operation.clone(),
                    kind,
                    remaining: count,
                    latency_ms: 10_000,
                })
            })?;
            Ok(format!("the next {count} {operation} call(s) get {kind:?}"))
        }
    };
    let message = change.map_err(CliError::bad_input)?;
    let world = sim_provider.snapshot()?;
    if ctx.json {
        ctx.print_json(&world);
    } else {
        if !message.is_empty() {
            println!("{message}");
        }
        print!("{}", render::world_text(&world, clock.now()));
    }
    Ok(exit::OK)
}
