//! `dr drill`: game-day scenarios on the simulator, or as dry runs against the configured
//! backend.

use super::context::{Ctx, internal};
use super::{CliError, CliResult, DrillArgs, Switch, exit, render};
use crate::config::Backend;
use crate::core::ids::{Actor, RunId};
use crate::core::plan::build_plan;
use crate::core::run::Trigger;
use crate::drill::{self, DrillOptions, scenario};
use crate::engine::{EngineError, ExecOutcome, NewRun};
use crate::store::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// `dr drill`: a scenario on the simulator in virtual time, or with --dry-run against the
/// configured backend.
pub fn drill(ctx: &Ctx, args: DrillArgs) -> CliResult {
    let config = &ctx.config;
    let scenario =
        scenario::load(&args.scenario).map_err(|e| CliError::bad_input(e.to_string()))?;
    if args.dry_run {
        if args.serial || args.seed.is_some() || args.pre_warm.is_some() {
            return Err(CliError::bad_input(
                "--serial, --seed and --pre-warm shape the simulation; a --dry-run drill runs against the configured backend and takes none of them",
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| internal(format!("cannot start the runtime: {e}")))?;
        return runtime.block_on(dry_run(ctx, &scenario));
    }
    let runtime =
        drill::runtime().map_err(|e| internal(format!("cannot start the runtime: {e}")))?;
    let pre_warm = args.pre_warm.map(|switch| switch == Switch::On);
    let options = DrillOptions {
        serial: args.serial,
        seed: args.seed,
        pre_warm,
    };
    let report = runtime
        .block_on(drill::run(config, &scenario, &options))
        .map_err(|e| CliError::bad_input(e.to_string()))?;
    if ctx.json {
        ctx.print_json(&report);
    } else {
        print!("{}", render::safe_block(&report.render()));
    }
    Ok(if report.passed {
        exit::OK
    } else {
        exit::DRILL_FAILED
    })
}

/// `dr drill --dry-run`: the scenario's failovers as dry runs against the configured backend.
async fn dry_run(ctx: &Ctx, scenario: &scenario::Scenario) -> CliResult {
    let config = &ctx.config;
    let backend = ctx.backend().await?;
    let writer = ctx.writer(&backend).await?;
    let (requests, not_injected) = drill::dry_run_requests(scenario, &config.topology, &writer)
        .map_err(CliError::bad_input)?;
    let backend_name = match config.backend {
        Backend::Sim => "the simulator's world",
        Backend::Aws => "AWS",
    };
    println!(
        "DRY RUN of drill `{}` against {backend_name}: every read is real; no mutating call is made",
        scenario.name
    );
    for line in &not_injected {
        println!("not injected: {line}");
    }
    let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
    let engine = ctx.engine(store, &backend);
    let mut failed = 0;
    for (index, request) in requests.into_iter().enumerate() {
        let id = RunId::new(format!("dry-run-{}", index + 1));
        println!(
            "run {id}: dr {} --from {} --to {} --dry-run",
            request.kind, request.from, request.to
        );
        let created = build_plan(&config.topology, &request, &config.plan)
            .map_err(EngineError::from)
            .and_then(|plan| {
                engine.create_run(
                    plan,
                    NewRun {
                        id: id.clone(),
                        trigger: Trigger::Drill {
                            scenario: scenario.name.clone(),
                        },
                        actor: Actor::new("dry-run-drill"),
                        reason: format!("dry-run drill {}", scenario.name),
                        dry_run: true,
                    },
                )
            });
        if let Err(err) = created {
            failed += 1;
            println!("run {id}: refused: {}", render::safe(&err.to_string()));
            continue;
        }
        match engine.execute(&id, &CancellationToken::new()).await? {
            ExecOutcome::Finished(outcome) => {
                println!("run {id}: the dry run finished: {outcome}")
            }
            other => {
                failed += 1;
                println!(
                    "run {id}: the dry run stopped: {other:?}; a real run would stop there too"
                );
            }
        }
    }
    Ok(if failed == 0 {
        exit::OK
    } else {
        exit::DRILL_FAILED
    })
}
