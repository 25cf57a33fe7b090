//! The `dr` command line: argument parsing, the commands, output, and exit codes.
//!
//! An edge: it wires config, providers, store and engine together for one command, prints for
//! people (stderr progress, stdout results, `--json` for data) and maps every error to a
//! documented exit code. Decisions stay in the core and the engine.

mod render;

use crate::clock::Clock;
use crate::config::{self, Backend, Config, ConfigError};
use crate::core::health::{Observation, ProbeResult, classify_checkers, classify_probe};
use crate::core::ids::{Actor, RegionName, RunId, StepName};
use crate::core::plan::{Operation, PlanRequest, RunKind, build_plan};
use crate::core::run::{Approval, EventRecord, RunEvent, RunStatus, Shown, StepStatus, Trigger};
use crate::core::time::{Timestamp, fmt_duration};
use crate::drill::{self, DrillOptions, scenario};
use crate::engine::{
    Engine, EngineError, EngineSettings, ExecOutcome, NewRun, Progress, control, new_run_id,
};
use crate::provider::sim::{FaultKind, OutageKind, SimError, SimProvider};
use crate::provider::{ProviderError, Providers};
use crate::store::{ExecutorLock, Holder, LockError, RedbStore, Store, StoreError};
use clap::{Parser, Subcommand};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
    /// The store or the simulator's state file is damaged or unreadable.
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
    fn new(code: u8, message: impl Into<String>) -> CliError {
        CliError {
            code,
            message: message.into(),
        }
    }
    fn bad_input(message: impl Into<String>) -> CliError {
        CliError::new(exit::BAD_INPUT, message)
    }
    fn refused(message: impl Into<String>) -> CliError {
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
            | StoreError::UnsupportedVersion { .. } => exit::STORE_DAMAGED,
            StoreError::NoSuchRun(_) => exit::BAD_INPUT,
            StoreError::ReadOnly(_) => exit::INTERNAL,
            StoreError::RunActive { .. }
            | StoreError::DuplicateRun(_)
            | StoreError::Refused(_)
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
        Command::Drill(args) => drill_command(&cli.config, args, json),
        command => {
            let config = config::load(&cli.config)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    CliError::new(exit::INTERNAL, format!("cannot start the runtime: {e}"))
                })?;
            runtime.block_on(dispatch(config, command, json))
        }
    }
}

async fn dispatch(config: Config, command: Command, json: bool) -> CliResult {
    match command {
        Command::Plan(args) => plan(&config, args, json).await,
        Command::Failover(args) => start_run(&config, args, RunKind::Failover, json).await,
        Command::Switchover(args) => start_run(&config, args, RunKind::Switchover, json).await,
        Command::Status => status(&config, json).await,
        Command::Runs { id, limit } => runs(&config, id, limit, json),
        Command::Resume(args) => resume(&config, args, json).await,
        Command::Abort(args) => abort(&config, args, json),
        Command::Approve { control, step } => approve(&config, control, step, json).await,
        Command::Pause(args) => pause(&config, args, json),
        Command::Unpause(args) => unpause(&config, args),
        Command::Ack(args) => ack(&config, args),
        Command::Daemon(args) => daemon(config, args).await,
        Command::Healthcheck { ready, url } => healthcheck(&config, ready, url).await,
        Command::Watch { timeout } => watch(&config, &timeout, json).await,
        Command::Skip { step, control } => skip(&config, step, control, json),
        Command::Sim(command) => sim(&config, command, json),
        Command::Validate { .. } | Command::Drill(_) => {
            unreachable!("handled before the runtime starts")
        }
    }
}

fn validate(file: PathBuf, json: bool) -> CliResult {
    let config = config::load(&file)?;
    if json {
        print_json(&config);
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
    }
    Ok(exit::OK)
}

fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(err) => eprintln!("dr: cannot print JSON: {err}"),
    }
}

/// The configured backend: its providers, its clock, and the simulator when it is one.
type Backend3 = (Providers, Arc<dyn Clock>, Option<Arc<SimProvider>>);

/// The providers and clock of the configured backend.
async fn backend(config: &Config) -> Result<Backend3, CliError> {
    match config.backend {
        Backend::Sim => sim_backend(config),
        Backend::Aws => {
            let providers = crate::provider::aws::connect(&config.aws, &config.topology).await;
            let clock: Arc<dyn Clock> = Arc::new(crate::clock::WallClock::system());
            Ok((providers, clock, None))
        }
    }
}

/// The simulator's providers, clock and world.
fn sim_backend(config: &Config) -> Result<Backend3, CliError> {
    let (sim, clock) = SimProvider::open_file(
        &config.sim.state_path,
        &config.topology,
        config.sim.seed,
        config.sim.time_scale,
    )?;
    let sim = Arc::new(sim);
    Ok((Providers::all_from(sim.clone()), clock, Some(sim)))
}

fn open_store(config: &Config) -> Result<Arc<dyn Store>, CliError> {
    Ok(Arc::new(RedbStore::open(&config.store_path)?))
}

/// The store for a command that only reads: never opened for writing, never created. With no
/// store yet it is empty.
fn open_store_read_only(config: &Config) -> Result<Arc<dyn Store>, CliError> {
    Ok(match RedbStore::open_read_only(&config.store_path)? {
        Some(store) => Arc::new(store),
        None => Arc::new(crate::store::MemoryStore::default()),
    })
}

fn region(config: &Config, name: &str) -> Result<RegionName, CliError> {
    let region = RegionName::new(name);
    if config.topology.region(&region).is_none() {
        let known: Vec<String> = config
            .topology
            .region_names()
            .iter()
            .map(|r| r.to_string())
            .collect();
        return Err(CliError::bad_input(format!(
            "region `{name}` is not in {}; known regions: {}",
            config.path.display(),
            known.join(", ")
        )));
    }
    Ok(region)
}

/// The writer's region, read from the global cluster through any region that answers.
async fn current_writer(config: &Config, providers: &Providers) -> Result<RegionName, CliError> {
    let mut errors = Vec::new();
    for region in &config.topology.regions {
        let read = tokio::time::timeout(
            Duration::from_secs(20),
            providers
                .database
                .describe_global_cluster(&region.name, &config.topology.global_cluster_id),
        )
        .await;
        match read {
            Ok(Ok(cluster)) => match cluster.writer() {
                Some(writer) => return Ok(writer.region.clone()),
                None => errors.push(format!("{}: the global cluster has no writer", region.name)),
            },
            Ok(Err(err)) => errors.push(err.to_string()),
            Err(_) => errors.push(format!("{}: no answer within 20s", region.name)),
        }
    }
    Err(CliError::refused(format!(
        "cannot tell which region holds the writer ({}); name it with --from",
        errors.join("; ")
    )))
}

async fn plan(config: &Config, args: PlanArgs, json: bool) -> CliResult {
    let to = region(config, &args.to)?;
    let from = match &args.from {
        Some(from) => region(config, from)?,
        None => {
            let (providers, _, _) = backend(config).await?;
            current_writer(config, &providers).await?
        }
    };
    let kind = if args.switchover {
        RunKind::Switchover
    } else {
        RunKind::Failover
    };
    let mut options = config.plan.clone();
    options.serial = args.serial;
    let plan = build_plan(&config.topology, &PlanRequest { from, to, kind }, &options)
        .map_err(|e| CliError::bad_input(e.to_string()))?;
    let preview = RunId::new("<run-id>");
    if json {
        let operations: Vec<Operation> = plan
            .steps
            .iter()
            .flat_map(|s| plan.operations(s.name, &preview))
            .collect();
        print_json(&serde_json::json!({ "plan": plan, "operations": operations }));
    } else {
        print!("{}", plan.render(&preview));
    }
    Ok(exit::OK)
}

fn confirm(question: &str, expected: &str, yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::bad_input(
            "refusing to change anything without confirmation: stdin is not a terminal; pass --yes",
        ));
    }
    eprint!("{question}\nType `{expected}` to confirm: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::bad_input(format!("cannot read the confirmation: {e}")))?;
    if answer.trim() == expected {
        Ok(())
    } else {
        Err(CliError::bad_input("not confirmed; nothing was changed"))
    }
}

fn holder() -> Holder {
    let args: Vec<String> = std::env::args().collect();
    Holder {
        pid: std::process::id(),
        command: args.join(" "),
        since: Timestamp::from_system_time(std::time::SystemTime::now()),
    }
}

async fn start_run(config: &Config, args: RunArgs, kind: RunKind, json: bool) -> CliResult {
    let to = region(config, &args.to)?;
    let store = open_store(config)?;
    let lock = match ExecutorLock::acquire(&config.store_path, &holder()) {
        Ok(lock) => lock,
        Err(LockError::Held { holder }) if holder.contains(" daemon") => {
            return start_via_api(config, &args, kind, json, &holder).await;
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
    let (providers, clock, _) = backend(config).await?;
    let from = match &args.from {
        Some(from) => region(config, from)?,
        None => current_writer(config, &providers).await?,
    };
    let request = PlanRequest {
        from: from.clone(),
        to: to.clone(),
        kind,
    };
    let plan = build_plan(&config.topology, &request, &config.plan)
        .map_err(|e| CliError::bad_input(e.to_string()))?;
    let what = (!args.dry_run).then(|| match kind {
            RunKind::Failover => format!(
                "UNPLANNED FAILOVER from {from} to {to}: promotes {to}'s database with AllowDataLoss=true (writes not yet replicated are lost), scales {to} up and removes {from} from DNS.",
            ),
            RunKind::Switchover => format!(
                "Planned switchover from {from} to {to}: moves the writer with no data loss and scales {to} up.",
            ),
    });
    // The id is chosen before the plan is shown, so the request tokens shown are those sent.
    let id = new_run_id(clock.now());
    if let Some(what) = &what {
        eprint!("{}", plan.render(&id));
        confirm(what, to.as_str(), args.yes)?;
    }
    let engine = engine(config, store.clone(), providers, clock.clone(), json);
    let header = engine.create_run(
        &config.topology,
        &config.plan,
        NewRun {
            id: id.clone(),
            request,
            trigger: Trigger::Manual {
                actor: Actor::new(&args.actor),
            },
            actor: Actor::new(&args.actor),
            reason: args.reason.clone(),
            dry_run: args.dry_run,
        },
    )?;
    if !json {
        eprintln!(
            "run {id}: {}{kind} from {from} to {to} started",
            if header.dry_run { "dry-run " } else { "" }
        );
    }
    execute_foreground(&engine, store.as_ref(), &id, json, lock).await
}

/// How long the CLI waits for the daemon's API to answer, unless DR_API_TIMEOUT says otherwise.
const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(15);

/// A fresh key for one request: random where the system offers it, else time and process.
fn idempotency_key() -> String {
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if random {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    } else {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{}-{nanos}", std::process::id())
    }
}

/// Starts a run through the daemon's API and follows it until it finishes or needs an operator.
async fn start_via_api(
    config: &Config,
    args: &RunArgs,
    kind: RunKind,
    json: bool,
    holder: &str,
) -> CliResult {
    let base =
        std::env::var("DR_API_URL").unwrap_or_else(|_| format!("http://{}", config.api_listen));
    let token = std::env::var("DR_API_TOKEN").map_err(|_| {
        CliError::refused(format!(
            "the daemon {holder} carries out runs on this store; set DR_API_TOKEN to a token with the operate role so this command goes through its API at {base}"
        ))
    })?;
    if !args.dry_run {
        confirm(
            &format!("{kind} to {} through the daemon's API at {base}.", args.to),
            &args.to,
            args.yes,
        )?;
    }
    let timeout = match std::env::var("DR_API_TIMEOUT") {
        Ok(text) => humantime::parse_duration(&text).map_err(|e| {
            CliError::bad_input(format!("DR_API_TIMEOUT `{text}` is not a duration ({e})"))
        })?,
        Err(_) => DEFAULT_API_TIMEOUT,
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| CliError::new(exit::INTERNAL, e.to_string()))?;
    let path = match kind {
        RunKind::Failover => "failover",
        RunKind::Switchover => "switchover",
    };
    let body = serde_json::json!({ "to": args.to, "from": args.from, "reason": args.reason, "dry_run": args.dry_run });
    // The daemon refuses the request if it reads it after the deadline, so a request this
    // command gave up on can never start a run later; the key makes a repeat harmless.
    let sent_at = std::time::SystemTime::now();
    let deadline = sent_at + timeout;
    let deadline_ms = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let response = client
        .post(format!("{base}/api/v1/{path}"))
        .bearer_auth(&token)
        .header(crate::api::guard::IDEMPOTENCY_HEADER, idempotency_key())
        .header(crate::api::guard::DEADLINE_HEADER, deadline_ms.to_string())
        .json(&body)
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                CliError::refused(format!(
                    "cannot reach the daemon's API at {base}: {e}; nothing was sent"
                ))
            } else {
                CliError::new(
                    exit::OUTCOME_UNKNOWN,
                    format!(
                        "the daemon's API at {base} took the request but did not answer ({e}); the outcome is unknown. The daemon refuses it if it reads it after {}, so nothing starts later than that; see whether a run started with `dr status` and `dr runs` before trying again",
                        Timestamp::from_system_time(deadline)
                    ),
                )
            }
        })?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    if status != reqwest::StatusCode::ACCEPTED {
        let message = answer
            .get("error")
            .and_then(|v| v.as_str())
            .unwrap_or("no message")
            .to_string();
        let code = match status.as_u16() {
            400 | 413 | 422 => exit::BAD_INPUT,
            _ => exit::REFUSED,
        };
        return Err(CliError::new(
            code,
            format!("the daemon's API answered {status}: {message}"),
        ));
    }
    let id = answer
        .get("id")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    if !json {
        eprintln!(
            "run {id}: started through the daemon's API; following it (Ctrl-C stops following, not the run)"
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3600);
    let mut seen: std::collections::BTreeMap<String, String> = Default::default();
    loop {
        let run: serde_json::Value = client
            .get(format!("{base}/api/v1/runs/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .map_err(|e| {
                CliError::new(
                    exit::OUTCOME_UNKNOWN,
                    format!(
                        "run {id} started, then the daemon's API at {base} stopped answering ({e}); follow the run with `dr status` and `dr runs {id}`"
                    ),
                )
            })?
            .json()
            .await
            .unwrap_or_default();
        for step in run
            .get("steps")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
        {
            let name = step["name"].as_str().unwrap_or("").to_string();
            let status = step["status"]["status"].as_str().unwrap_or("").to_string();
            if seen.get(&name) != Some(&status) && !json {
                let summary = step["summary"]
                    .as_str()
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                eprintln!("{}", render::safe(&format!("{name}: {status}{summary}")));
            }
            seen.insert(name, status);
        }
        let run_status = run["status"]["status"].as_str().unwrap_or("");
        let finished = match run_status {
            "finished" => Some(
                if matches!(
                    run["status"]["outcome"].as_str(),
                    Some("succeeded" | "degraded")
                ) {
                    exit::OK
                } else {
                    exit::RUN_FAILED
                },
            ),
            "awaiting-approval" | "stopped" | "paused" => Some(exit::NEEDS_OPERATOR),
            _ => None,
        };
        if let Some(code) = finished {
            if json {
                print_json(&run);
            } else {
                eprintln!("{}", render::safe(&format!("run {id}: {}", run["status"])));
            }
            return Ok(code);
        }
        if std::time::Instant::now() > deadline {
            return Err(CliError::refused(format!(
                "run {id} is still going after an hour; follow it with `dr status`"
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn engine(
    config: &Config,
    store: Arc<dyn Store>,
    providers: Providers,
    clock: Arc<dyn Clock>,
    json: bool,
) -> Engine {
    Engine {
        store,
        providers,
        clock: clock.clone(),
        progress: Arc::new(Printer::new(clock, json)),
        settings: EngineSettings {
            probe_timeout: config.plan.verify.probe_timeout,
            poll_interval: config.step_poll_interval,
            control_interval: config.step_poll_interval.min(Duration::from_secs(5)),
        },
    }
}

async fn execute_foreground(
    engine: &Engine,
    store: &dyn Store,
    run: &RunId,
    json: bool,
    _lock: ExecutorLock,
) -> CliResult {
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!(
            "dr: stopping: the steps in flight are checkpointed and the run is paused; `dr resume` continues it"
        );
        signals.cancel();
    });
    let outcome = engine.execute(run, &shutdown).await?;
    let stored = store
        .load_run(run)?
        .ok_or_else(|| StoreError::NoSuchRun(run.clone()))?;
    if json {
        print_json(&render::run_json(&stored, None));
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

fn next_action_hint(run: &RunId, status: &RunStatus) -> String {
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

/// Prints progress to stderr: events, throttled waits, calls, retries.
struct Printer {
    started: Timestamp,
    quiet: bool,
    waits: Mutex<std::collections::BTreeMap<StepName, Wait>>,
}

/// What a step has been waiting for, since when, and when it was last printed.
struct Wait {
    what: String,
    since: Timestamp,
    printed: Option<Timestamp>,
}

impl Printer {
    fn new(clock: Arc<dyn Clock>, quiet: bool) -> Printer {
        Printer {
            started: clock.now(),
            quiet,
            waits: Mutex::new(Default::default()),
        }
    }

    fn line(&self, at: Timestamp, text: &str) {
        if !self.quiet {
            let elapsed = at.since(self.started).as_secs();
            eprintln!(
                "[+{:02}:{:02}] {}",
                elapsed / 60,
                elapsed % 60,
                render::safe(text)
            );
        }
    }
}

impl Progress for Printer {
    fn event(&self, _run: &RunId, record: &EventRecord) {
        let text = match &record.event {
            RunEvent::StepStarted { step, attempt: 1 } => format!("{step}: started"),
            RunEvent::StepStarted { step, attempt } => {
                format!("{step}: started again (attempt {attempt})")
            }
            RunEvent::StepProgress { step, note } => format!("{step}: {note}"),
            event @ (RunEvent::StepGated { .. }
            | RunEvent::Promoting { .. }
            | RunEvent::Requested { .. }) => event.shared_text().unwrap_or_default(),
            RunEvent::StepSucceeded { step, outcome } => {
                format!("{step}: done: {}", outcome.summary)
            }
            RunEvent::StepFailed { step, error } => format!("{step}: FAILED: {error}"),
            RunEvent::StepInterrupted { step, reason } => format!("{step}: interrupted: {reason}"),
            RunEvent::StepSkipped { step, reason } => format!("{step}: skipped: {reason}"),
            RunEvent::Approved { step, reason, .. } => format!("{step}: approved: {reason}"),
            RunEvent::Paused { reason } => format!("run paused: {reason}"),
            RunEvent::Resumed { reason } => format!("run resumed: {reason}"),
            RunEvent::AbortRequested { reason } => format!("abort requested: {reason}"),
            RunEvent::Finished { outcome } => format!("run finished: {outcome}"),
        };
        self.line(record.at, &text);
    }

    fn waiting(&self, step: StepName, at: Timestamp, what: &str) {
        let mut waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        let wait = waits.entry(step).or_insert_with(|| Wait {
            what: String::new(),
            since: at,
            printed: None,
        });
        if wait.what != what {
            *wait = Wait {
                what: what.to_string(),
                since: at,
                printed: None,
            };
        }
        let due = wait
            .printed
            .is_none_or(|printed| at.since(printed) >= Duration::from_secs(30));
        if due {
            wait.printed = Some(at);
            let waited = at.since(wait.since);
            drop(waits);
            let so_far = if waited.is_zero() {
                String::new()
            } else {
                format!(" ({} so far)", fmt_duration(waited))
            };
            self.line(at, &format!("{step}: waiting for {what}{so_far}"));
        }
    }

    fn calling(&self, step: StepName, at: Timestamp, operation: &Operation, dry_run: bool) {
        if dry_run {
            // Dry-run mutations go to stdout: they are the command's result.
            println!(
                "DRY RUN {step}: would call {}",
                render::safe(&operation.to_string())
            );
        } else {
            self.line(at, &format!("{step}: calling {operation}"));
        }
    }

    fn retrying(&self, step: StepName, at: Timestamp, error: &ProviderError, after: Duration) {
        self.line(
            at,
            &format!("{step}: {error}; retrying in {}", fmt_duration(after)),
        );
    }
}

async fn status(config: &Config, json: bool) -> CliResult {
    let store = open_store_read_only(config)?;
    let (providers, clock, _) = backend(config).await?;
    let mut problems: Vec<String> = Vec::new();
    let mut note = |problem: String| {
        if !problems.contains(&problem) {
            problems.push(problem);
        }
    };
    let writer = match current_writer(config, &providers).await {
        Ok(writer) => Some(writer),
        Err(err) => {
            note(err.message);
            None
        }
    };
    let probes = futures::future::join_all(config.topology.regions.iter().map(|r| {
        providers
            .probe
            .probe(&r.name, &r.health_url, config.plan.verify.probe_timeout)
    }))
    .await;
    let peer_answered = probes
        .iter()
        .any(|p| matches!(p, ProbeResult::Status { .. }));
    let records = providers
        .dns
        .list_records(
            &config.topology.dns.hosted_zone_id,
            &config.topology.dns.record_name,
        )
        .await;
    let mut regions = Vec::new();
    for (region, probe) in config.topology.regions.iter().zip(probes) {
        let checkers = providers
            .health_checks
            .checker_report(&region.health_check_id)
            .await;
        let route53 = match &checkers {
            Ok(r) => classify_checkers(r.healthy, r.total),
            Err(err) => {
                note(err.to_string());
                Observation::Unknown
            }
        };
        let lag = if writer.as_ref() == Some(&region.name) {
            None
        } else {
            match providers.lag.lag(&region.name, &region.db_cluster_id).await {
                Ok(lag) => lag,
                Err(err) => {
                    note(err.to_string());
                    None
                }
            }
        };
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
            route53,
            checkers: checkers
                .as_ref()
                .ok()
                .map(|r| format!("{}/{}", r.healthy, r.total)),
            probe: classify_probe(&probe, peer_answered),
            probe_detail: probe.to_string(),
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
    let executor = ExecutorLock::holder(&config.store_path);
    let daemon = store
        .daemon_status()?
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
    let automation = store.automation()?;
    let writer_unread = writer.is_none();
    let status = render::Status {
        daemon,
        automation,
        now: clock.now(),
        backend: format!("{:?}", config.backend).to_lowercase(),
        writer_region: writer.map(|w| w.to_string()),
        regions,
        active_run: active.as_ref().map(|r| render::run_json(r, None)),
        last_run: last.map(|h| h.id.to_string()),
        executor,
        problems,
    };
    if json {
        print_json(&status);
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

fn runs(config: &Config, id: Option<String>, limit: usize, json: bool) -> CliResult {
    let store = open_store_read_only(config)?;
    match id {
        Some(id) => {
            let id = RunId::new(id);
            let stored = store
                .load_run(&id)?
                .ok_or_else(|| StoreError::NoSuchRun(id.clone()))?;
            let audit = store.audit(Some(&id), 1000)?;
            if json {
                print_json(&render::run_json(&stored, Some(&audit)));
            } else {
                print!("{}", render::run_detail(&stored, &audit));
            }
        }
        None => {
            let headers = store.list_runs(limit)?;
            let mut rows = Vec::new();
            for header in headers {
                if let Some(stored) = store.load_run(&header.id)? {
                    rows.push(render::run_json(&stored, None));
                }
            }
            if json {
                print_json(&rows);
            } else if rows.is_empty() {
                println!("no runs yet");
            } else {
                print!("{}", render::runs_table(&rows));
            }
        }
    }
    Ok(exit::OK)
}

fn reason(args: &ControlArgs, what: &str) -> Result<String, CliError> {
    match &args.reason {
        Some(reason) if !reason.trim().is_empty() => Ok(reason.trim().to_string()),
        _ => Err(CliError::bad_input(format!(
            "{what} needs --reason \"...\": it goes into the audit log"
        ))),
    }
}

fn now_for(config: &Config) -> Timestamp {
    match config.backend {
        Backend::Sim => SimProvider::open_file(
            &config.sim.state_path,
            &config.topology,
            config.sim.seed,
            config.sim.time_scale,
        )
        .map(|(_, clock)| clock.now())
        .unwrap_or_else(|_| Timestamp::from_system_time(std::time::SystemTime::now())),
        Backend::Aws => Timestamp::from_system_time(std::time::SystemTime::now()),
    }
}

async fn resume(config: &Config, args: ControlArgs, json: bool) -> CliResult {
    let store = open_store(config)?;
    let run = control::resolve_run(store.as_ref(), args.run.as_ref().map(RunId::new).as_ref())?;
    let lock = match ExecutorLock::acquire(&config.store_path, &holder()) {
        Ok(lock) => lock,
        Err(LockError::Held { holder }) if holder.contains(" daemon") => {
            // The daemon carries runs out: record the resume, it continues the run.
            let why = args
                .reason
                .clone()
                .unwrap_or_else(|| "resumed by operator".into());
            control::resume(
                store.as_ref(),
                &run,
                &Actor::new(&args.actor),
                &why,
                now_for(config),
            )?;
            println!("run {run}: resumed; the daemon {holder} continues it");
            return Ok(exit::OK);
        }
        Err(err) => return Err(err.into()),
    };
    let (providers, clock, _) = backend(config).await?;
    let stored = store
        .load_run(&run)?
        .ok_or_else(|| StoreError::NoSuchRun(run.clone()))?;
    if let RunStatus::Finished { outcome } = stored.state()?.status() {
        return Err(CliError::refused(format!(
            "run {run} is already finished ({outcome})"
        )));
    }
    let why = args
        .reason
        .clone()
        .unwrap_or_else(|| "resumed by operator".into());
    let record = control::resume(
        store.as_ref(),
        &run,
        &Actor::new(&args.actor),
        &why,
        clock.now(),
    )?;
    let engine = engine(config, store.clone(), providers, clock, json);
    engine.progress.event(&run, &record);
    execute_foreground(&engine, store.as_ref(), &run, json, lock).await
}

/// The step an `Approved` record approves.
fn record_step(record: &EventRecord) -> Option<StepName> {
    match record.event {
        RunEvent::Approved { step, .. } => Some(step),
        _ => None,
    }
}

async fn approve(
    config: &Config,
    args: ControlArgs,
    step: Option<String>,
    json: bool,
) -> CliResult {
    let step = match step {
        Some(name) => Some(StepName::parse(&name).ok_or_else(|| {
            CliError::bad_input(format!(
                "`{name}` is not a step; steps are: {}",
                StepName::ALL.map(|s| s.as_str()).join(", ")
            ))
        })?),
        None => None,
    };
    let why = reason(&args, "approval")?;
    let store = open_store(config)?;
    let run = control::resolve_run(store.as_ref(), args.run.as_ref().map(RunId::new).as_ref())?;
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
        now_for(config),
    )?;
    if !json {
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
    match ExecutorLock::acquire(&config.store_path, &holder()) {
        Ok(lock) => {
            let (providers, clock, _) = backend(config).await?;
            let engine = engine(config, store.clone(), providers, clock, json);
            engine.progress.event(&run, &record);
            execute_foreground(&engine, store.as_ref(), &run, json, lock).await
        }
        Err(LockError::Held { holder }) => {
            eprintln!("the run is carried out by {holder}, which continues it");
            Ok(exit::OK)
        }
        Err(err) => Err(err.into()),
    }
}

fn abort(config: &Config, args: ControlArgs, json: bool) -> CliResult {
    let why = reason(&args, "abort")?;
    let store = open_store(config)?;
    let run = control::resolve_run(store.as_ref(), args.run.as_ref().map(RunId::new).as_ref())?;
    confirm(
        &format!(
            "Abort run {run}? Nothing is rolled back: AWS operations already requested go on."
        ),
        run.as_str(),
        args.yes,
    )?;
    let executor_running = ExecutorLock::holder(&config.store_path).is_some();
    control::abort(
        store.as_ref(),
        &run,
        &Actor::new(&args.actor),
        &why,
        now_for(config),
        executor_running,
    )?;
    report_control(
        store.as_ref(),
        &run,
        json,
        if executor_running {
            "abort requested; the executing process stops the run at its next checkpoint"
        } else {
            "aborted"
        },
    )
}

fn pause(config: &Config, args: ControlArgs, json: bool) -> CliResult {
    let why = reason(&args, "pause")?;
    let store = open_store(config)?;
    let actor = Actor::new(&args.actor);
    if let Some(named) = &args.run {
        // A named run: pause just that run.
        let run = control::resolve_run(store.as_ref(), Some(&RunId::new(named)))?;
        control::pause(store.as_ref(), &run, &actor, &why, now_for(config))?;
        return report_control(
            store.as_ref(),
            &run,
            json,
            "paused; `dr resume` continues it",
        );
    }
    let paused = crate::daemon::pause_automation(store.as_ref(), &actor, &why, now_for(config))?;
    println!("automation paused: no automatic failover or pre-warm until `dr unpause`");
    match paused {
        Some(run) => report_control(
            store.as_ref(),
            &run,
            json,
            "paused; `dr resume` continues it",
        ),
        None => Ok(exit::OK),
    }
}

fn unpause(config: &Config, args: ControlArgs) -> CliResult {
    let why = reason(&args, "unpause")?;
    let store = open_store(config)?;
    crate::daemon::unpause_automation(
        store.as_ref(),
        &Actor::new(&args.actor),
        &why,
        now_for(config),
    )?;
    println!("automation on: the daemon fails over automatically again");
    if let Some(run) = store.active_run()? {
        println!("run {run} is unfinished; `dr resume` continues it if it is paused");
    }
    Ok(exit::OK)
}

fn ack(config: &Config, args: ControlArgs) -> CliResult {
    let why = reason(&args, "ack")?;
    let store = open_store(config)?;
    crate::daemon::ack_cooldown(
        store.as_ref(),
        &Actor::new(&args.actor),
        &why,
        now_for(config),
    )?;
    println!("cooldown cleared: automatic failover may start again");
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

async fn watch(config: &Config, timeout: &str, json: bool) -> CliResult {
    let timeout = humantime::parse_duration(timeout).map_err(|e| {
        CliError::bad_input(format!("--timeout `{timeout}` is not a duration ({e})"))
    })?;
    let mut store = open_store_read_only(config)?;
    let mut store_exists = config.store_path.exists();
    let deadline = std::time::Instant::now() + timeout;
    let mut followed: Option<RunId> = None;
    let mut seen: std::collections::BTreeMap<StepName, String> = Default::default();
    loop {
        let active = store.active_run()?;
        let run = match (&followed, active) {
            (Some(run), _) => run.clone(),
            (None, Some(run)) => {
                if !json {
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
                if !store_exists && config.store_path.exists() {
                    store = open_store_read_only(config)?;
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
                crate::core::run::StepStatus::Succeeded => format!(
                    "succeeded: {}",
                    step_state
                        .outcome
                        .as_ref()
                        .map(|o| o.summary.as_str())
                        .unwrap_or("")
                ),
                other => serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_string))
                    .unwrap_or_default(),
            };
            if seen.get(step) != Some(&text) {
                if !json {
                    eprintln!("{step}: {}", render::safe(&text));
                }
                seen.insert(*step, text);
            }
        }
        let code = match state.status() {
            RunStatus::Finished { outcome } if outcome.is_success() => Some(exit::OK),
            RunStatus::Finished { .. } => Some(exit::RUN_FAILED),
            RunStatus::AwaitingApproval { .. } | RunStatus::Stopped { .. } | RunStatus::Paused => {
                Some(exit::NEEDS_OPERATOR)
            }
            RunStatus::Running | RunStatus::Aborting => None,
        };
        if let Some(code) = code {
            if json {
                print_json(&render::run_json(&stored, None));
            } else {
                println!("run {run}: {}", render::safe(&state.status().to_string()));
                if code == exit::NEEDS_OPERATOR {
                    eprintln!(
                        "{}",
                        render::safe_block(&next_action_hint(&run, &state.status()))
                    );
                }
            }
            return Ok(code);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn healthcheck(config: &Config, ready: bool, url: Option<String>) -> CliResult {
    let base = url.unwrap_or_else(|| {
        let mut address = config.api_listen;
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{address}")
    });
    let path = if ready { "ready" } else { "health" };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| CliError::new(exit::INTERNAL, e.to_string()))?;
    match client.get(format!("{base}/{path}")).send().await {
        Ok(response) if response.status().is_success() => {
            println!("{base}/{path}: {}", response.status());
            Ok(exit::OK)
        }
        Ok(response) => Err(CliError::new(
            exit::INTERNAL,
            format!("{base}/{path} answered {}", response.status()),
        )),
        Err(err) => Err(CliError::new(
            exit::INTERNAL,
            format!("{base}/{path} did not answer: {err}"),
        )),
    }
}

async fn daemon(config: Config, args: DaemonArgs) -> CliResult {
    init_logging(&args.log_format, "info")?;
    let pre_warm = args.pre_warm.map(|switch| switch == Switch::On);
    let tokens = crate::api::auth::Tokens::from_env()
        .map_err(|e| CliError::bad_input(format!("API tokens: {e}")))?;
    let sinks = crate::notify::Sinks::from_env()
        .map_err(|e| CliError::bad_input(format!("notifications: {e}")))?;
    let store = open_store(&config)?;
    let lock = ExecutorLock::acquire(&config.store_path, &holder())?;
    let (providers, clock, _) = backend(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.api_listen)
        .await
        .map_err(|e| {
            CliError::refused(format!(
                "cannot serve the API on {} ({e}); free the port or set [api] listen",
                config.api_listen
            ))
        })?;
    if tokens.is_empty() {
        tracing::warn!(
            "no API tokens are configured (DR_API_TOKENS_FILE or DR_API_TOKENS): the API answers 401 to everything but /health, /ready and /metrics"
        );
    }
    if sinks.is_empty() {
        tracing::warn!(
            "no notification webhooks are configured (DR_SLACK_WEBHOOK_URL, DR_PAGERDUTY_ROUTING_KEY)"
        );
    }
    let (notifier, _delivery) =
        crate::notify::Notifier::start(sinks, crate::notify::Retry::default());
    let engine = Engine {
        store,
        providers,
        clock,
        progress: Arc::new(crate::notify::Fanout(vec![Arc::new(notifier)])),
        settings: EngineSettings {
            probe_timeout: config.plan.verify.probe_timeout,
            poll_interval: config.step_poll_interval,
            control_interval: config.step_poll_interval.min(Duration::from_secs(5)),
        },
    };
    let settings = crate::daemon::DaemonSettings::from_config(&config, pre_warm);
    let daemon = crate::daemon::Daemon::new(config.clone(), engine.clone(), settings);
    let state = crate::api::ApiState {
        config: Arc::new(config),
        engine,
        daemon: daemon.handle(),
        tokens: Arc::new(tokens),
    };
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: stopping at the next checkpoint");
        signals.cancel();
    });
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(address = %address, "serving the API, the status page and /metrics");
    let server_stop = shutdown.clone();
    let server = tokio::spawn(crate::api::serve::serve(
        listener,
        crate::api::app(state),
        crate::api::serve::Limits::default(),
        server_stop,
    ));
    daemon
        .run(shutdown)
        .await
        .map_err(|e| CliError::new(exit::STORE_DAMAGED, e.to_string()))?;
    let _ = server.await;
    drop(lock);
    Ok(exit::OK)
}

fn skip(config: &Config, step: String, args: ControlArgs, json: bool) -> CliResult {
    let step = StepName::parse(&step).ok_or_else(|| {
        CliError::bad_input(format!(
            "`{step}` is not a step; steps are: {}",
            StepName::ALL.map(|s| s.as_str()).join(", ")
        ))
    })?;
    let why = reason(&args, "skip")?;
    let store = open_store(config)?;
    let run = control::resolve_run(store.as_ref(), args.run.as_ref().map(RunId::new).as_ref())?;
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
        now_for(config),
    )?;
    report_control(
        store.as_ref(),
        &run,
        json,
        "skipped; `dr resume` continues the run",
    )
}

fn report_control(store: &dyn Store, run: &RunId, json: bool, what: &str) -> CliResult {
    let stored = store
        .load_run(run)?
        .ok_or_else(|| StoreError::NoSuchRun(run.clone()))?;
    if json {
        print_json(&render::run_json(&stored, None));
    } else {
        println!(
            "run {run}: {what} (status: {})",
            render::safe(&stored.state()?.status().to_string())
        );
    }
    Ok(exit::OK)
}

fn drill_command(config_path: &std::path::Path, args: DrillArgs, json: bool) -> CliResult {
    let config = config::load(config_path)?;
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
            .map_err(|e| CliError::new(exit::INTERNAL, format!("cannot start the runtime: {e}")))?;
        return runtime.block_on(drill_dry_run(&config, &scenario, json));
    }
    let runtime = drill::runtime()
        .map_err(|e| CliError::new(exit::INTERNAL, format!("cannot start the runtime: {e}")))?;
    let pre_warm = args.pre_warm.map(|switch| switch == Switch::On);
    let options = DrillOptions {
        serial: args.serial,
        seed: args.seed,
        pre_warm,
    };
    let report = runtime
        .block_on(drill::run(&config, &scenario, &options))
        .map_err(|e| CliError::bad_input(e.to_string()))?;
    if json {
        print_json(&report);
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
async fn drill_dry_run(config: &Config, scenario: &scenario::Scenario, json: bool) -> CliResult {
    let (providers, clock, _) = backend(config).await?;
    let writer = current_writer(config, &providers).await?;
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
    let engine = engine(config, store.clone(), providers, clock, json);
    let mut failed = 0;
    for (index, request) in requests.into_iter().enumerate() {
        let id = RunId::new(format!("dry-run-{}", index + 1));
        println!(
            "run {id}: dr {} --from {} --to {} --dry-run",
            request.kind, request.from, request.to
        );
        let created = engine.create_run(
            &config.topology,
            &config.plan,
            NewRun {
                id: id.clone(),
                request,
                trigger: Trigger::Drill {
                    scenario: scenario.name.clone(),
                },
                actor: Actor::new("dry-run-drill"),
                reason: format!("dry-run drill {}", scenario.name),
                dry_run: true,
            },
        );
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

fn sim(config: &Config, command: SimCommand, json: bool) -> CliResult {
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
    let (_, clock, sim_provider) = sim_backend(config)?;
    let sim_provider =
        sim_provider.ok_or_else(|| CliError::refused("the simulator is not in use"))?;
    let check_region = |name: &str| region(config, name);
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
            let kind: FaultKind = serde_json::from_value(serde_json::Value::String(kind.clone()))
                .map_err(|_| {
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
    if json {
        print_json(&world);
    } else {
        if !message.is_empty() {
            println!("{message}");
        }
        print!("{}", render::world_text(&world, clock.now()));
    }
    Ok(exit::OK)
}
