//! The `dr` command line: argument parsing, the commands, output, and exit codes.
//!
//! An edge: it wires config, providers, store and engine together for one command, prints for
//! people (stderr progress, stdout results, `--json` for data) and maps every error to a
//! documented exit code. Decisions stay in the core and the engine.

//!
//! One module per command family, over one shared context (`context::Ctx`: config, output mode,
//! store, backend, engine, confirmation): `runs` starts and steers runs, `remote` goes through a
//! running daemon's API, `automation` holds the switches, `status` only reads, `daemon` serves,
//! `drill` and `sim` rehearse. `printer` shows progress and `render` shapes output.

mod automation;
mod context;
mod daemon;
mod drill;
mod printer;
mod remote;
mod render;
mod runs;
mod sim;
mod status;

use crate::config::{self, ConfigError};
use crate::core::plan::RunKind;
use crate::core::time::fmt_duration;
use crate::engine::EngineError;
use crate::provider::sim::SimError;
use crate::store::{LockError, StoreError};
use clap::{Parser, Subcommand};
use context::Ctx;
use std::path::PathBuf;

/// Exit codes. Stable: scripts and runbooks depend on them.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// An unexpected internal error.
    pub const INTERNAL: u8 = 1;
    /// Bad input: config, arguments, scenario, or a mutation without confirmation.
    pub const BAD_INPUT: u8 = 2;
    /// Refused in the current state: another run active, the store held by another process,
    /// an operator command that does not fit the run, a writer that cannot be read.
    pub const REFUSED: u8 = 3;
    /// The run waits for an operator: approval, a failed step, a pause.
    pub const NEEDS_OPERATOR: u8 = 4;
    /// The run ended without reaching its goal: failed verification, or aborted.
    pub const RUN_FAILED: u8 = 5;
    /// The store or the simulator's state file is damaged or unreadable, or a shared store
    /// cannot be reached.
    pub const STORE_DAMAGED: u8 = 6;
    /// A drill ran but its expectations were not met.
    pub const DRILL_FAILED: u8 = 7;
    /// The outcome is unknown: a request reached the daemon's API but no answer came back.
    /// `dr status` and `dr runs` show whether it was carried out.
    pub const OUTCOME_UNKNOWN: u8 = 8;
    /// Interrupted by SIGINT or SIGTERM; the run is paused and resumable.
    pub const INTERRUPTED: u8 = 130;
}

/// The exit codes, as `dr --help` lists them (README.md has the same table).
const EXIT_CODES_HELP: &str = "Exit codes:
  0  success
  1  unexpected internal error
  2  bad input (config, arguments, scenario, no confirmation); nothing was changed
  3  refused in the current state, or the daemon's API could not be reached; nothing was changed
  4  the run waits for an operator (approval, a failed step, a pause)
  5  the run ended without reaching its goal (failed verification, aborted)
  6  the store or the simulator's state file is damaged or unreadable; it was left untouched
  7  a drill's expectations were not met
  8  outcome unknown: the daemon's API took the request but did not answer; see `dr status`, `dr runs`
130  interrupted by SIGINT or SIGTERM; the run is paused and resumable";

/// `dr`: disaster-recovery failover orchestrator.
#[derive(Debug, Parser)]
#[command(
    name = "dr",
    version,
    about = "Disaster-recovery failover orchestrator for multi-region AWS deployments",
    long_about = None,
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// The config file.
    #[arg(long, global = true, env = "DR_CONFIG", default_value = "dr.toml")]
    pub config: PathBuf,
    /// Print data as JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a config file; exit 2 with the key and line of the first problem.
    Validate {
        /// The config file (defaults to --config).
        file: Option<PathBuf>,
    },
    /// Print the plan for moving the writer and traffic to a region, without running it.
    Plan(PlanArgs),
    /// Unplanned failover: promote the target with data loss up to the replication lag.
    Failover(RunArgs),
    /// Planned switchover: move the writer with no data loss (both regions must be up).
    Switchover(RunArgs),
    /// Regions, their signals, the writer, DNS and the current run.
    Status,
    /// List runs, or show one run with its steps and audit trail.
    Runs {
        /// Show this run.
        id: Option<String>,
        /// How many runs to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Continue a paused, stopped or interrupted run (a failed step is tried again).
    Resume(ControlArgs),
    /// Stop a run for good. Nothing is rolled back; AWS operations already requested go on.
    Abort(ControlArgs),
    /// Approve the step that waits for approval, then continue the run.
    Approve {
        /// Common options.
        #[command(flatten)]
        control: ControlArgs,
        /// The step to approve, if several wait.
        #[arg(long)]
        step: Option<String>,
    },
    /// Pause automation, and the active run if any: no automatic failover or pre-warm, no new
    /// step; steps in flight stop at their next wait.
    Pause(ControlArgs),
    /// Turn automation back on (a paused run continues with `dr resume`).
    Unpause(ControlArgs),
    /// Clear the cooldown after a failover, so automatic failover may start again.
    Ack(ControlArgs),
    /// Watch every region and fail over automatically when the writer's region fails.
    Daemon(DaemonArgs),
    /// Follow the active run (waiting for one to start) until it ends or needs an operator.
    Watch {
        /// Give up waiting for a run after this long (wall time).
        #[arg(long, default_value = "10m")]
        timeout: String,
    },
    /// Ask a running daemon's /health (or /ready): exit 0 if it answers 200, 1 otherwise. For
    /// container health checks: needs no shell tools.
    Healthcheck {
        /// Ask /ready (the daemon has observed and its store answers) instead of /health.
        #[arg(long)]
        ready: bool,
        /// The daemon's base URL (default: from [api] listen in the config).
        #[arg(long, env = "DR_API_URL")]
        url: Option<String>,
    },
    /// Skip a failed, interrupted or gated step (audited; a reason is required).
    Skip {
        /// The step.
        step: String,
        /// Common options.
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Run a game-day scenario on the simulator in virtual time and report RTO and RPO.
    Drill(DrillArgs),
    /// Change the built-in simulator's world (backend = "sim" only).
    #[command(subcommand)]
    Sim(SimCommand),
}

/// Arguments of `dr plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Target region.
    #[arg(long)]
    pub to: String,
    /// Region that holds the writer now (default: read from the global cluster).
    #[arg(long)]
    pub from: Option<String>,
    /// Plan a switchover instead of a failover.
    #[arg(long)]
    pub switchover: bool,
    /// Plan every step one after another, as the seed's manual runbook.
    #[arg(long)]
    pub serial: bool,
}

/// Arguments of `dr failover` and `dr switchover`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Target region.
    #[arg(long)]
    pub to: String,
    /// Region that holds the writer now (default: read from the global cluster).
    #[arg(long)]
    pub from: Option<String>,
    /// Make every read, print every mutation, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Why, for the audit log.
    #[arg(long, default_value = "operator request")]
    pub reason: String,
    /// Who, for the audit log (default: $USER).
    #[arg(long, env = "USER", default_value = "operator")]
    pub actor: String,
}

/// Common arguments of the run-control commands.
#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// The run (default: the unfinished one).
    #[arg(long)]
    pub run: Option<String>,
    /// Why, for the audit log.
    #[arg(long)]
    pub reason: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Who, for the audit log (default: $USER).
    #[arg(long, env = "USER", default_value = "operator")]
    pub actor: String,
}

/// On or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// Arguments of `dr daemon`.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Log format: `text` or `json` (structured, one object per line).
    #[arg(long, default_value = "text")]
    pub log_format: String,
    /// Pre-warm the target while the writer's region is suspect (default: the config's
    /// detection.pre_warm).
    #[arg(long, value_enum)]
    pub pre_warm: Option<Switch>,
}

/// Arguments of `dr drill`.
#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// The scenario file (see runbooks/drills/).
    #[arg(long)]
    pub scenario: PathBuf,
    /// Run the plan serially, as the seed's manual runbook, for comparison.
    #[arg(long)]
    pub serial: bool,
    /// Seed of the simulated durations (default: the scenario's, else the config's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Pre-warm the target while the writer is suspect (default: the scenario's, else the
    /// config's detection.pre_warm). Daemon scenarios only.
    #[arg(long, value_enum)]
    pub pre_warm: Option<Switch>,
    /// Rehearse against the configured backend (real AWS with backend = "aws"): every read is
    /// made for real and every mutating call is printed instead of made. Scripted faults are
    /// not injected.
    #[arg(long)]
    pub dry_run: bool,
}

/// `dr sim` subcommands.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Show the simulated world: writer, regions, groups, records, calls made.
    Show,
    /// Start an outage in a region.
    Outage {
        /// Region.
        region: String,
        /// `full` (region dark) or `app` (application only).
        #[arg(long, default_value = "full")]
        kind: String,
    },
    /// End a region's outage.
    Recover {
        /// Region.
        region: String,
    },
    /// Set the share of Route53 checkers that see a region fail.
    Checkers {
        /// Region.
        region: String,
        /// Share from 0 to 1.
        share: f64,
    },
    /// Set a secondary region's replication lag.
    Lag {
        /// Region.
        region: String,
        /// Lag, such as "3s" or "7m".
        lag: String,
    },
    /// Make Route53's control plane stop (down) or start (up) answering.
    Route53 {
        /// `up` or `down`.
        state: String,
    },
    /// Inject a fault into the next COUNT calls of an operation.
    Fault {
        /// API name, such as FailoverGlobalCluster.
        operation: String,
        /// throttle, unavailable, access-denied or latency.
        kind: String,
        /// How many calls.
        count: u32,
    },
    /// Start the world over from the config (the store is not touched).
    Reset,
}

/// A command's failure: what to print and which exit code.
#[derive(Debug)]
pub struct CliError {
    /// Exit code.
    pub code: u8,
    /// Message for stderr.
    pub message: String,
}

impl CliError {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> CliError {
        CliError {
            code,
            message: message.into(),
        }
    }
    pub(crate) fn bad_input(message: impl Into<String>) -> CliError {
        CliError::new(exit::BAD_INPUT, message)
    }
    pub(crate) fn refused(message: impl Into<String>) -> CliError {
        CliError::new(exit::REFUSED, message)
    }
}

impl From<ConfigError> for CliError {
    fn from(err: ConfigError) -> Self {
        CliError::bad_input(err.to_string())
    }
}

impl From<StoreError> for CliError {
    fn from(err: StoreError) -> Self {
        let code = match &err {
            StoreError::Damaged { .. }
            | StoreError::Io { .. }
            | StoreError::Unavailable { .. }
            | StoreError::UnsupportedVersion { .. } => exit::STORE_DAMAGED,
            StoreError::NoSuchRun(_) => exit::BAD_INPUT,
            StoreError::ReadOnly(_) => exit::INTERNAL,
            StoreError::RunActive { .. }
            | StoreError::DuplicateRun(_)
            | StoreError::Refused(_)
            | StoreError::Fenced { .. }
            | StoreError::NotLeader { .. }
            | StoreError::AutomationPaused(_) => exit::REFUSED,
        };
        CliError::new(code, err.to_string())
    }
}

impl From<EngineError> for CliError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Store(err) => err.into(),
            EngineError::Plan(err) => CliError::bad_input(err.to_string()),
            EngineError::Refused(message) => CliError::refused(message),
        }
    }
}

impl From<SimError> for CliError {
    fn from(err: SimError) -> Self {
        CliError::new(exit::STORE_DAMAGED, err.to_string())
    }
}

impl From<LockError> for CliError {
    fn from(err: LockError) -> Self {
        let code = match err {
            LockError::Held { .. } => exit::REFUSED,
            LockError::Io { .. } => exit::STORE_DAMAGED,
        };
        CliError::new(code, err.to_string())
    }
}

type CliResult = Result<u8, CliError>;

/// Runs `dr` with these arguments; returns the exit code. Printing happens here.
pub fn main_with(args: Vec<std::ffi::OsString>) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => {
            match cli.command {
                Command::Daemon(_) => {}
                // A drill's report says everything; logs would only interleave with it.
                Command::Drill(_) => {
                    let _ = init_logging("text", "error");
                }
                _ => {
                    let _ = init_logging("text", "warn");
                }
            }
            cli
        }
        Err(err) => {
            let _ = err.print();
            return match err.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ => exit::BAD_INPUT,
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("dr: {}", render::safe_block(&err.message));
            err.code
        }
    }
}

fn run(cli: Cli) -> CliResult {
    let json = cli.json;
    match cli.command {
        Command::Validate { file } => validate(file.unwrap_or(cli.config), json),
        Command::Drill(args) => {
            let ctx = Ctx {
                config: load_config(&cli.config)?,
                json,
            };
            drill::drill(&ctx, args)
        }
        command => {
            let ctx = Ctx {
                config: load_config(&cli.config)?,
                json,
            };
            // The daemon keeps its lease, watches, executes and serves its API at once, and a
            // shared store's calls block while they wait on the network: more than one thread.
            let runtime = if matches!(command, Command::Daemon(_)) {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            }
            .map_err(|e| context::internal(format!("cannot start the runtime: {e}")))?;
            runtime.block_on(dispatch(ctx, command))
        }
    }
}

/// The config, with the daemon's identity from the environment when it is set there
/// (`DR_DAEMON_ID`, `DR_DAEMON_REGION`): one config file serves the daemons of every region.
fn load_config(path: &std::path::Path) -> Result<config::Config, CliError> {
    let mut config = config::load(path)?;
    if let Some(id) = std::env::var("DR_DAEMON_ID")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        let id = id.trim().to_string();
        if id.len() > 128 || id.chars().any(|c| c.is_control() || c == '/') {
            return Err(CliError::bad_input(
                "DR_DAEMON_ID must be at most 128 printable characters, without '/'",
            ));
        }
        config.daemon.id = Some(id);
    }
    if let Some(region) = std::env::var("DR_DAEMON_REGION")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        let region = region.trim();
        let valid = region.contains('-')
            && region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(CliError::bad_input(format!(
                "DR_DAEMON_REGION `{}` is not an AWS region name such as \"us-west-2\"",
                render::safe(region)
            )));
        }
        config.daemon.region = Some(crate::core::ids::RegionName::new(region));
    }
    Ok(config)
}

async fn dispatch(ctx: Ctx, command: Command) -> CliResult {
    match command {
        Command::Plan(args) => runs::plan(&ctx, args).await,
        Command::Failover(args) => runs::start(&ctx, args, RunKind::Failover).await,
        Command::Switchover(args) => runs::start(&ctx, args, RunKind::Switchover).await,
        Command::Status => status::status(&ctx).await,
        Command::Runs { id, limit } => status::runs(&ctx, id, limit),
        Command::Resume(args) => runs::resume(&ctx, args).await,
        Command::Abort(args) => runs::abort(&ctx, args),
        Command::Approve { control, step } => runs::approve(&ctx, control, step).await,
        Command::Pause(args) => automation::pause(&ctx, args),
        Command::Unpause(args) => automation::unpause(&ctx, args),
        Command::Ack(args) => automation::ack(&ctx, args),
        Command::Daemon(args) => daemon::daemon(ctx, args).await,
        Command::Healthcheck { ready, url } => daemon::healthcheck(&ctx, ready, url).await,
        Command::Watch { timeout } => status::watch(&ctx, &timeout).await,
        Command::Skip { step, control } => runs::skip(&ctx, step, control),
        Command::Sim(command) => sim::sim(&ctx, command),
        Command::Validate { .. } | Command::Drill(_) => {
            unreachable!("handled before the runtime starts")
        }
    }
}

/// `dr validate`.
fn validate(file: PathBuf, json: bool) -> CliResult {
    let config = config::load(&file)?;
    if json {
        context::print_json(&config);
    } else {
        let regions: Vec<String> = config
            .topology
            .regions
            .iter()
            .map(|r| format!("{} (priority {})", r.name, r.priority))
            .collect();
        println!(
            "{}: valid; backend {:?}, {} regions: {}; failure window {}, RPO budget {}",
            file.display(),
            config.backend,
            regions.len(),
            regions.join(", "),
            fmt_duration(config.detection.failure_window),
            fmt_duration(config.plan.rpo_budget)
        );
        let dns = &config.topology.dns;
        match (config.backend, dns.name_servers.is_empty()) {
            (config::Backend::Aws, true) => eprintln!(
                "warning: [dns] name_servers is empty: Route53 is read through its API only, so an outage that takes the API down with us-east-1 cannot trip by itself (README.md, \"Pointing dr at real AWS\")"
            ),
            (_, _) => println!(
                "Route53's data plane: {}; health records: {}",
                if dns.name_servers.is_empty() {
                    "the simulator's name servers".to_string()
                } else {
                    dns.name_servers.join(", ")
                },
                config
                    .topology
                    .regions
                    .iter()
                    .map(|r| dns.health_record(r))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        match &config.store {
            config::StoreBackend::Redb => println!(
                "store: {} (one daemon; its executor lock keeps every other process off it)",
                config.store_path.display()
            ),
            config::StoreBackend::Dynamodb {
                table,
                table_region,
            } => {
                println!(
                    "store: DynamoDB table {table} in {}, shared by the daemons; leader lease {}",
                    table_region
                        .as_deref()
                        .unwrap_or("each daemon's own region (DR_DAEMON_REGION)"),
                    fmt_duration(config.daemon.lease)
                );
                if table_region.is_none() && config.daemon.region.is_none() {
                    eprintln!(
                        "warning: neither [store] table_region nor [daemon] region is set: each daemon needs DR_DAEMON_REGION in its environment to find the table (deploy/kubernetes/ha/ sets it)"
                    );
                }
            }
        }
        let stall = crate::core::detect::LagTrend::STALL_AFTER;
        if config.plan.rpo_budget >= config.detection.failure_window + stall {
            eprintln!(
                "warning: failover.rpo_budget ({}) is not shorter than detection.failure_window plus {} ({}): a live writer that dr is cut off from, whose replication stalls while Route53 cannot be read, would be promoted without approval (README.md, \"The daemon\"); lower the budget or lengthen the window",
                fmt_duration(config.plan.rpo_budget),
                fmt_duration(stall),
                fmt_duration(config.detection.failure_window + stall)
            );
        }
    }
    Ok(exit::OK)
}

/// Sets up logging to stderr as `text` or `json`, at the level in DR_LOG, else at `default`.
fn init_logging(format: &str, default: &str) -> Result<(), CliError> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("DR_LOG").unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        "text" => builder.try_init(),
        "json" => builder.json().try_init(),
        other => {
            return Err(CliError::bad_input(format!(
                "--log-format is `text` or `json`, not `{other}`"
            )));
        }
    };
    // A second install (tests calling main_with twice) keeps the first.
    let _ = installed;
    Ok(())
}

/// Waits for SIGTERM or SIGINT.
#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
