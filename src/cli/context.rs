//! What every command shares: the config, the output mode, the store, the backend (providers,
//! clock, simulator), an engine that prints progress, and the operator's confirmation.

use super::printer::Printer;
use super::{CliError, exit};
use crate::clock::Clock;
use crate::config::{Backend as BackendKind, Config};
use crate::core::ids::RegionName;
use crate::core::time::Timestamp;
use crate::engine::{Engine, EngineSettings};
use crate::observe::Observer;
use crate::provider::Providers;
use crate::provider::sim::SimProvider;
use crate::store::{Holder, MemoryStore, RedbStore, Store};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

/// How long `dr` waits for any one read of the world (the writer, a health check, a lag).
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// One command's context.
pub struct Ctx {
    /// The config, read and checked.
    pub config: Config,
    /// Print data as JSON on stdout.
    pub json: bool,
}

/// The configured backend: its providers, its clock, and the simulator when it is one.
pub struct Backend {
    /// Every provider.
    pub providers: Providers,
    /// Its time.
    pub clock: Arc<dyn Clock>,
    /// The simulator, with `backend = "sim"`.
    pub sim: Option<Arc<SimProvider>>,
}

impl Ctx {
    /// The providers and clock of the configured backend.
    pub async fn backend(&self) -> Result<Backend, CliError> {
        match self.config.backend {
            BackendKind::Sim => self.sim_backend(),
            BackendKind::Aws => Ok(Backend {
                providers: crate::provider::aws::connect(&self.config.aws, &self.config.topology)
                    .await,
                clock: Arc::new(crate::clock::WallClock::system()),
                sim: None,
            }),
        }
    }

    /// The simulator's providers, clock and world.
    pub fn sim_backend(&self) -> Result<Backend, CliError> {
        let (sim, clock) = SimProvider::open_file(
            &self.config.sim.state_path,
            &self.config.topology,
            self.config.sim.seed,
            self.config.sim.time_scale,
        )?;
        let sim = Arc::new(sim);
        Ok(Backend {
            providers: Providers::all_from(sim.clone()),
            clock,
            sim: Some(sim),
        })
    }

    /// The store, opened for writing (created when missing).
    pub fn store(&self) -> Result<Arc<dyn Store>, CliError> {
        Ok(Arc::new(RedbStore::open(&self.config.store_path)?))
    }

    /// The store for a command that only reads: never opened for writing, never created. With
    /// no store yet it is empty.
    pub fn store_read_only(&self) -> Result<Arc<dyn Store>, CliError> {
        Ok(match RedbStore::open_read_only(&self.config.store_path)? {
            Some(store) => Arc::new(store),
            None => Arc::new(MemoryStore::default()),
        })
    }

    /// The time to stamp an operator's command with: the simulator's when it is in use, else
    /// the system's. Reading it changes nothing.
    pub fn now(&self) -> Timestamp {
        match self.config.backend {
            BackendKind::Sim => self
                .sim_backend()
                .map(|b| b.clock.now())
                .unwrap_or_else(|_| Timestamp::from_system_time(std::time::SystemTime::now())),
            BackendKind::Aws => Timestamp::from_system_time(std::time::SystemTime::now()),
        }
    }

    /// A region of the config, or a bad-input error that lists the known ones.
    pub fn region(&self, name: &str) -> Result<RegionName, CliError> {
        let region = RegionName::new(name);
        if self.config.topology.region(&region).is_none() {
            let known: Vec<String> = self
                .config
                .topology
                .region_names()
                .iter()
                .map(|r| r.to_string())
                .collect();
            return Err(CliError::bad_input(format!(
                "region `{name}` is not in {}; known regions: {}",
                self.config.path.display(),
                known.join(", ")
            )));
        }
        Ok(region)
    }

    /// The observation pass the daemon makes, over this command's backend.
    pub fn observer<'a>(&'a self, backend: &'a Backend) -> Observer<'a> {
        Observer {
            providers: &backend.providers,
            topology: &self.config.topology,
            clock: backend.clock.clone(),
            call_timeout: READ_TIMEOUT,
            probe_timeout: self.config.plan.verify.probe_timeout,
        }
    }

    /// The writer's region, read from the global cluster through any region that answers.
    pub async fn writer(&self, backend: &Backend) -> Result<RegionName, CliError> {
        self.observer(backend).writer().await.map_err(|errors| {
            CliError::refused(format!(
                "cannot tell which region holds the writer ({}); name it with --from",
                errors.join("; ")
            ))
        })
    }

    /// An engine over `store` and `backend` that prints its progress (quiet with `--json`).
    pub fn engine(&self, store: Arc<dyn Store>, backend: &Backend) -> Engine {
        Engine {
            store,
            providers: backend.providers.clone(),
            clock: backend.clock.clone(),
            progress: Arc::new(Printer::new(backend.clock.clone(), self.json)),
            settings: EngineSettings::from_config(&self.config),
            fence: Default::default(),
        }
    }

    /// Prints `value` as JSON on stdout.
    pub fn print_json<T: serde::Serialize>(&self, value: &T) {
        print_json(value)
    }
}

/// Prints `value` as JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(err) => eprintln!("dr: cannot print JSON: {err}"),
    }
}

/// Asks the operator to type `expected`, unless `yes`. Refuses without a terminal.
pub fn confirm(question: &str, expected: &str, yes: bool) -> Result<(), CliError> {
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

/// This process, as the executor lock records it.
pub fn holder() -> Holder {
    let args: Vec<String> = std::env::args().collect();
    Holder {
        pid: std::process::id(),
        command: args.join(" "),
        since: Timestamp::from_system_time(std::time::SystemTime::now()),
    }
}

/// The operator's reason, required for `what`.
pub fn reason(given: &Option<String>, what: &str) -> Result<String, CliError> {
    match given {
        Some(reason) if !reason.trim().is_empty() => Ok(reason.trim().to_string()),
        _ => Err(CliError::bad_input(format!(
            "{what} needs --reason \"...\": it goes into the audit log"
        ))),
    }
}

/// A runtime error, as a command reports it.
pub fn internal(message: impl Into<String>) -> CliError {
    CliError::new(exit::INTERNAL, message)
}
