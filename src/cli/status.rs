//! The commands that only read: `dr status`, `dr runs`, `dr watch`. None of them writes to the
//! store or creates it.

use super::context::Ctx;
use super::runs::next_action_hint;
use super::{CliError, CliResult, exit, remote, render};
use crate::api::view::{RunView, Settled};
use crate::core::ids::{RunId, StepName};
use crate::core::run::StepStatus;
use crate::core::time::fmt_duration;
use crate::daemon::DaemonStatus;
use crate::store::StoreError;
use std::collections::BTreeMap;
use std::time::Duration;

/// `dr status`: the same observation pass the daemon makes, the store's runs and switches, and
/// the daemon's last published view. Exits 3 when the writer's region cannot be read.
pub async fn status(ctx: &Ctx) -> CliResult {
    let store = ctx.store_read_only()?;
    let backend = ctx.backend().await?;
    let config = &ctx.config;
    let mut problems: Vec<String> = Vec::new();
    let mut note = |problem: String| {
        if !problems.contains(&problem) {
            problems.push(problem);
        }
    };
    let observer = ctx.observer(&backend);
    let writer = match ctx.writer(&backend).await {
        Ok(writer) => Some(writer),
        Err(err) => {
            note(err.message);
            None
        }
    };
    let (round, records) = tokio::join!(
        observer.round(writer.as_ref()),
        backend.providers.dns.list_records(
            &config.topology.dns.hosted_zone_id,
            &config.topology.dns.record_name,
        )
    );
    let mut regions = Vec::new();
    for (region, reading) in config.topology.regions.iter().zip(&round.regions) {
        if let Err(err) = &reading.checkers {
            note(err.clone());
        }
        if let Err(err) = &reading.health_record {
            note(err.clone());
        }
        if let Some(Err(err)) = &reading.lag {
            note(err.clone());
        }
        let lag = reading.lag();
        let in_dns = match &records {
            Ok(records) => Some(
                records
                    .iter()
                    .any(|r| r.set_identifier == region.set_identifier),
            ),
            Err(_) => None,
        };
        regions.push(render::RegionStatus {
            name: region.name.to_string(),
            priority: region.priority,
            writer: writer.as_ref() == Some(&region.name),
            route53: reading.route53_api(),
            route53_dns: reading.route53_dns(),
            checkers: reading
                .checkers
                .as_ref()
                .ok()
                .map(|r| format!("{}/{}", r.healthy, r.total)),
            probe: round.probe_verdict(reading),
            probe_detail: reading.probe.to_string(),
            lag_seconds: lag.map(|l| l.as_secs_f64()),
            lag_alert: lag.is_some_and(|l| l > config.detection.lag_alert),
            in_dns,
        });
    }
    if let Err(err) = &records {
        note(err.to_string());
    }
    let active = match store.active_run()? {
        Some(id) => store.load_run(&id)?,
        None => None,
    };
    let last = store.list_runs(1)?.into_iter().next();
    let executor = ctx.executor_holder(store.as_ref());
    let daemon = match DaemonStatus::read(store.as_ref()) {
        Ok(daemon) => daemon,
        Err(problem) => {
            note(problem);
            None
        }
    };
    let automation = store.automation()?;
    let writer_unread = writer.is_none();
    let daemons = DaemonStatus::read_all(store.as_ref())
        .unwrap_or_default()
        .iter()
        .map(crate::api::view::DaemonView::of)
        .collect();
    let status = render::Status {
        daemon,
        automation,
        lease: store.lease()?,
        daemons,
        now: backend.clock.now(),
        backend: format!("{:?}", config.backend).to_lowercase(),
        writer_region: writer.map(|w| w.to_string()),
        regions,
        active_run: active.as_ref().map(|r| RunView::of(r, None)),
        last_run: last.map(|h| h.id.to_string()),
        executor,
        problems,
    };
    if ctx.json {
        ctx.print_json(&status);
    } else {
        print!("{}", render::status_text(&status, active.as_ref()));
    }
    // Without the writer's region nobody can say whether to fail over: not a healthy answer.
    if writer_unread {
        eprintln!(
            "the writer's region could not be read (see the problems above); fix access, or find the writer in the RDS console of a region that answers"
        );
        return Ok(exit::REFUSED);
    }
    Ok(exit::OK)
}

/// `dr runs [ID]`.
pub fn runs(ctx: &Ctx, id: Option<String>, limit: usize) -> CliResult {
    let store = ctx.store_read_only()?;
    match id {
        Some(id) => {
            let id = RunId::new(id);
            let stored = store
                .load_run(&id)?
                .ok_or_else(|| StoreError::NoSuchRun(id.clone()))?;
            let audit = store.audit(Some(&id), 1000)?;
            if ctx.json {
                ctx.print_json(&RunView::of(&stored, Some(audit)));
            } else {
                print!("{}", render::run_detail(&stored, &audit));
            }
        }
        None => {
            let headers = store.list_runs(limit)?;
            let mut rows = Vec::new();
            for header in headers {
                if let Some(stored) = store.load_run(&header.id)? {
                    rows.push(RunView::of(&stored, None));
                }
            }
            if ctx.json {
                ctx.print_json(&rows);
            } else if rows.is_empty() {
                println!("no runs yet");
            } else {
                print!("{}", render::runs_table(&rows));
            }
        }
    }
    Ok(exit::OK)
}

/// `dr watch`: follows the active run, waiting for one to start, until it ends or needs an
/// operator.
pub async fn watch(ctx: &Ctx, timeout: &str) -> CliResult {
    let timeout = humantime::parse_duration(timeout).map_err(|e| {
        CliError::bad_input(format!("--timeout `{timeout}` is not a duration ({e})"))
    })?;
    let mut store = ctx.store_read_only()?;
    let mut store_exists = ctx.config.store_path.exists();
    let deadline = std::time::Instant::now() + timeout;
    let mut followed: Option<RunId> = None;
    let mut seen: BTreeMap<StepName, String> = Default::default();
    loop {
        let active = store.active_run()?;
        let run = match (&followed, active) {
            (Some(run), _) => run.clone(),
            (None, Some(run)) => {
                if !ctx.json {
                    eprintln!("following run {run}");
                }
                followed = Some(run.clone());
                run
            }
            (None, None) => {
                if std::time::Instant::now() > deadline {
                    return Err(CliError::refused(format!(
                        "no run started within {}",
                        fmt_duration(timeout)
                    )));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                if !store_exists && ctx.config.store_path.exists() {
                    store = ctx.store_read_only()?;
                    store_exists = true;
                }
                continue;
            }
        };
        let stored = store
            .load_run(&run)?
            .ok_or_else(|| StoreError::NoSuchRun(run.clone()))?;
        let state = stored.state()?;
        for (step, step_state) in &state.steps {
            let text = match &step_state.status {
                StepStatus::Succeeded => format!(
                    "succeeded: {}",
                    step_state
                        .outcome
                        .as_ref()
                        .map(|o| o.summary.as_str())
                        .unwrap_or("")
                ),
                other => remote::step_status_word(other),
            };
            if seen.get(step) != Some(&text) {
                if !ctx.json {
                    eprintln!("{step}: {}", render::safe(&text));
                }
                seen.insert(*step, text);
            }
        }
        let view = RunView::of(&stored, None);
        if let Some(settled) = view.settled() {
            if ctx.json {
                ctx.print_json(&view);
            } else {
                println!("run {run}: {}", render::safe(&state.status().to_string()));
                if settled == Settled::NeedsOperator {
                    eprintln!(
                        "{}",
                        render::safe_block(&next_action_hint(&run, &state.status()))
                    );
                }
            }
            return Ok(match settled {
                Settled::Succeeded => exit::OK,
                Settled::Failed => exit::RUN_FAILED,
                Settled::NeedsOperator => exit::NEEDS_OPERATOR,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
