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

    /// The store, opened for writing (a file store is created when missing).
    pub fn store(&self) -> Result<Arc<dyn Store>, CliError> {
        match &self.config.store {
            crate::config::StoreBackend::Redb => {
                Ok(Arc::new(RedbStore::open(&self.config.store_path)?))
            }
            crate::config::StoreBackend::Dynamodb { .. } => self.shared_store(),
        }
    }

    /// The store for a command that only reads: never opened for writing, never created. With
    /// no store yet it is empty. A shared store is the table itself; these commands only read
    /// it.
    pub fn store_read_only(&self) -> Result<Arc<dyn Store>, CliError> {
        match &self.config.store {
            crate::config::StoreBackend::Redb => {
                Ok(match RedbStore::open_read_only(&self.config.store_path)? {
                    Some(store) => Arc::new(store),
                    None => Arc::new(MemoryStore::default()),
                })
            }
            crate::config::StoreBackend::Dynamodb { .. } => self.shared_store(),
        }
    }

    /// The DynamoDB store: the table in `[store] table_region`, else in this daemon's region.
    fn shared_store(&self) -> Result<Arc<dyn Store>, CliError> {
        let crate::config::StoreBackend::Dynamodb {
            table,
            table_region,
        } = &self.config.store
        else {
            return Err(internal("not a shared store"));
        };
        let region = table_region
            .clone()
            .or_else(|| self.config.daemon.region.as_ref().map(|r| r.to_string()))
            .ok_or_else(|| {
                CliError::bad_input(format!(
                    "the DynamoDB store's region is not known: set [store] table_region in {}, or DR_DAEMON_REGION to the region this runs in (its replica of a global table)",
                    self.config.path.display()
                ))
            })?;
        let settings = crate::store::DynamoSettings {
            table: table.clone(),
            region,
            endpoint_url: self.config.aws.endpoint_url.clone(),
            profile: self.config.aws.profile.clone(),
            ..crate::store::DynamoSettings::default()
        };
        Ok(Arc::new(crate::store::DynamoStore::connect(&settings)?))
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

/// What lets this process carry runs out: the file store's executor lock (no other process can
/// act on that store), or the shared store's leader lease, kept renewed while it is held.
pub enum Executor {
    /// The executor lock of the redb file, held for as long as this value lives.
    File(#[allow(dead_code)] crate::store::ExecutorLock),
    /// The leader lease of a shared store.
    Lease(LeaseGuard),
}

impl Executor {
    /// The fence the engine writes under: none behind a file lock, the lease's epoch otherwise.
    pub fn fence(&self) -> crate::leader::Fence {
        match self {
            Executor::File(_) => crate::leader::Fence(None),
            Executor::Lease(guard) => crate::leader::Fence(Some(guard.leadership.clone())),
        }
    }
}

/// A leader lease this command holds: renewed in the background, released when dropped.
pub struct LeaseGuard {
    leadership: Arc<crate::leader::Leadership>,
    store: Arc<dyn Store>,
    stop: tokio_util::sync::CancellationToken,
    keeper: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
        self.leadership.release(
            self.store.as_ref(),
            Timestamp::from_system_time(std::time::SystemTime::now()),
        );
    }
}

impl Ctx {
    /// Takes what lets this command carry runs out on `store`, or says who has it. On a shared
    /// store that is the leader lease: free or released, it is taken at once; held, this
    /// command watches it for up to a lease period, and takes it only if nobody renews it (its
    /// holder is gone). A live holder is named, as the file lock's holder is.
    pub async fn executor(
        &self,
        store: &Arc<dyn Store>,
    ) -> Result<Executor, crate::store::LockError> {
        use crate::leader::{Change, Leadership};
        use crate::store::LockError;
        if matches!(self.config.store, crate::config::StoreBackend::Redb) {
            return crate::store::ExecutorLock::acquire(&self.config.store_path, &holder())
                .map(Executor::File);
        }
        let id = format!("dr command (pid {})", std::process::id());
        let leadership = Arc::new(Leadership::new(
            &id,
            self.config.daemon.region.clone(),
            self.config.daemon.lease,
        ));
        let unusable = |detail: String| LockError::Io {
            path: std::path::PathBuf::from("the shared store's leader lease"),
            detail,
        };
        let first = store.lease().map_err(|e| unusable(e.to_string()))?;
        let started = std::time::Instant::now();
        let patience = leadership.terms.period + leadership.terms.renew_every * 2;
        let mut told = false;
        loop {
            let now = Timestamp::from_system_time(std::time::SystemTime::now());
            if let Change::Won(_) = leadership.round(store.as_ref(), now) {
                break;
            }
            if let Some(error) = leadership.status().store_error {
                return Err(unusable(error));
            }
            let current = store.lease().map_err(|e| unusable(e.to_string()))?;
            let holder_text = |l: &crate::core::lease::LeaseRecord| {
                let what = if l.holder.starts_with("dr command") {
                    "the"
                } else {
                    "the daemon"
                };
                format!("{what} {} (leader lease epoch {})", l.holder, l.epoch)
            };
            match (&first, &current) {
                (Some(first), Some(now)) if !now.released && !first.same_write(now) => {
                    return Err(LockError::Held {
                        holder: holder_text(now),
                    });
                }
                (None, Some(now)) if !now.released => {
                    return Err(LockError::Held {
                        holder: holder_text(now),
                    });
                }
                _ => {}
            }
            if started.elapsed() > patience {
                return Err(LockError::Held {
                    holder: current
                        .as_ref()
                        .map(holder_text)
                        .unwrap_or_else(|| "another process".into()),
                });
            }
            if !told && let Some(current) = &current {
                eprintln!(
                    "dr: {} holds the leader lease; watching it for up to {} to see whether it is still renewed",
                    render_safe(&current.holder),
                    crate::core::time::fmt_duration(leadership.terms.period)
                );
                told = true;
            }
            tokio::time::sleep(leadership.terms.renew_every / 2).await;
        }
        let stop = tokio_util::sync::CancellationToken::new();
        let keeper = {
            let (leadership, store, stop) = (leadership.clone(), store.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(leadership.terms.renew_every) => {}
                        _ = stop.cancelled() => break,
                    }
                    let now = Timestamp::from_system_time(std::time::SystemTime::now());
                    if let Change::Lost(why) = leadership.round(store.as_ref(), now) {
                        // Never taken again by this command: what it read before no longer
                        // holds, and a daemon may have carried the run on meanwhile.
                        eprintln!(
                            "dr: lost the leader lease ({why}); this command makes no further change: see `dr status`"
                        );
                        break;
                    }
                }
            })
        };
        Ok(Executor::Lease(LeaseGuard {
            leadership,
            store: store.clone(),
            stop,
            keeper: Some(keeper),
        }))
    }

    /// Who carries runs out on `store` now, if anyone: the file lock's holder, or the leader
    /// lease's.
    pub fn executor_holder(&self, store: &dyn Store) -> Option<String> {
        match self.config.store {
            crate::config::StoreBackend::Redb => {
                crate::store::ExecutorLock::holder(&self.config.store_path)
            }
            crate::config::StoreBackend::Dynamodb { .. } => store
                .lease()
                .ok()
                .flatten()
                .filter(|l| !l.released)
                .map(|l| format!("{} (leader lease epoch {})", l.holder, l.epoch)),
        }
    }
}

fn render_safe(text: &str) -> String {
    super::render::safe(text)
}
