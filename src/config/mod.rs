//! The one TOML config file: parsing, validation, and the typed `Config` the rest of `dr` uses.
//!
//! Unknown keys are errors and every error names the key and its line. Secrets never live here:
//! tokens and webhook URLs come from the environment or files. This module reads one file and
//! does nothing else.

use crate::core::detect::{DEFAULT_QUORUM, Signal};
use crate::core::ids::RegionName;
use crate::core::plan::{PlanOptions, StepTimeouts, VerifyPolicy};
use crate::core::time::duration_text;
use crate::core::topology::{DnsTopology, Region, ScalableGroup, Sizes, Topology};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The config schema version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid, with the key and line at fault.
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The key at fault, as a dotted path.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// Which providers `dr` drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The built-in simulator, whose world lives in `sim.state_path`.
    Sim,
    /// Real AWS through the official SDK.
    Aws,
}

/// Where runs, their logs, the audit log and the leader lease are kept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum StoreBackend {
    /// The redb file at `store_path`: one daemon (a laptop, drills, tests).
    Redb,
    /// A DynamoDB table shared by the daemons of several regions; one of them leads.
    Dynamodb {
        /// The table's name.
        table: String,
        /// The region whose endpoint is called; `None`: the daemon's own region.
        table_region: Option<String>,
    },
}

/// The daemon's identity among those sharing a store, and its lease.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DaemonIdentity {
    /// Its name, unique among the daemons sharing the store; `DR_DAEMON_ID` overrides it.
    /// `None`: the host's name and the region.
    pub id: Option<String>,
    /// The region it runs in and observes from; `DR_DAEMON_REGION` overrides it.
    pub region: Option<RegionName>,
    /// How long its leader lease lasts without a renewal.
    pub lease: Duration,
}

/// Detection settings, used by the daemon.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Detection {
    /// How long a region must fail, by two signals, before it counts as failed.
    pub failure_window: Duration,
    /// Time between observations.
    pub poll_interval: Duration,
    /// Replication lag above which a warning is raised.
    pub lag_alert: Duration,
    /// Quiet time after a failover before another may start automatically.
    pub cooldown: Duration,
    /// Scale the target up while the writer's region is suspect.
    pub pre_warm: bool,
    /// How many independent vantage points must each see a region unhealthy for the whole
    /// window, with none seeing it healthy, before it counts as failed.
    pub quorum: usize,
}

/// Checks one `dns.name_servers` entry: a host name or an address, with an optional port.
fn check_name_server(text: &str) -> Result<(), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an entry is empty; list the hosted zone's name servers, such as \"ns-123.awsdns-45.com\"".into());
    }
    let bracketed = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .is_some_and(|t| t.parse::<std::net::Ipv6Addr>().is_ok());
    if bracketed
        || text.parse::<std::net::SocketAddr>().is_ok()
        || text.parse::<std::net::IpAddr>().is_ok()
    {
        return Ok(());
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    if let Some(port) = port
        && port.parse::<u16>().map(|p| p == 0).unwrap_or(true)
    {
        return Err(format!(
            "name server `{text}`: the port must be a number from 1 to 65535 (IPv6 addresses go in brackets: \"[2001:db8::1]:53\")"
        ));
    }
    let valid_host = !host.is_empty()
        && host.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid_host {
        Ok(())
    } else {
        Err(format!(
            "name server `{text}` is not a host name or an address; list the hosted zone's name servers, such as \"ns-123.awsdns-45.com\" or \"192.0.2.53:53\""
        ))
    }
}

/// Settings of the built-in simulator.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SimSettings {
    /// The file the simulated world persists in between commands.
    pub state_path: PathBuf,
    /// How many simulated seconds pass per wall-clock second.
    pub time_scale: f64,
    /// Seed of the simulated durations.
    pub seed: u64,
}

/// How `dr` reaches AWS when `backend = "aws"`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AwsSettings {
    /// One endpoint for every service, for an emulator (`AWS_ENDPOINT_URL` does the same).
    pub endpoint_url: Option<String>,
    /// A shared-config profile; `None` uses the standard chain (environment, `AWS_PROFILE`,
    /// web identity on EKS, instance metadata).
    pub profile: Option<String>,
    /// Tries per read (and per idempotent change) before the step sees the error.
    pub max_attempts: u32,
    /// Time limit of one HTTP attempt.
    pub attempt_timeout: Duration,
    /// Route53 calls per second, at most, across every region (Route53 allows five per
    /// second per account).
    pub route53_requests_per_second: f64,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            endpoint_url: None,
            profile: None,
            max_attempts: 3,
            attempt_timeout: Duration::from_secs(10),
            route53_requests_per_second: 2.0,
        }
    }
}

/// A loaded, validated config.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// Which providers to use.
    pub backend: Backend,
    /// The checkpoint store file (the redb store).
    pub store_path: PathBuf,
    /// Which store.
    pub store: StoreBackend,
    /// The daemon's identity and lease.
    pub daemon: DaemonIdentity,
    /// Detection settings.
    pub detection: Detection,
    /// Plan settings: RPO budget, step timeouts, verification.
    pub plan: PlanOptions,
    /// The deployment.
    pub topology: Topology,
    /// Simulator settings.
    pub sim: SimSettings,
    /// AWS settings.
    pub aws: AwsSettings,
    /// Time between observations while a failover step waits.
    pub step_poll_interval: Duration,
    /// Where the daemon serves its HTTP API.
    pub api_listen: std::net::SocketAddr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: Spanned<u32>,
    backend: Option<Spanned<Backend>>,
    store_path: Option<Spanned<String>>,
    #[serde(default)]
    detection: RawDetection,
    #[serde(default)]
    failover: RawFailover,
    database: RawDatabase,
    dns: RawDns,
    #[serde(default)]
    sim: RawSim,
    #[serde(default)]
    aws: RawAws,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    region: Vec<Spanned<RawRegion>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    backend: Option<Spanned<String>>,
    table: Option<Spanned<String>>,
    table_region: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    id: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    lease: Option<Spanned<DurationText>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDetection {
    failure_window: Option<Spanned<DurationText>>,
    poll_interval: Option<Spanned<DurationText>>,
    lag_alert: Option<Spanned<DurationText>>,
    cooldown: Option<Spanned<DurationText>>,
    pre_warm: Option<bool>,
    quorum: Option<Spanned<usize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFailover {
    rpo_budget: Option<Spanned<DurationText>>,
    poll_interval: Option<Spanned<DurationText>>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    verify: RawVerify,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    preflight: Option<Spanned<DurationText>>,
    promote_db: Option<Spanned<DurationText>>,
    scale_target: Option<Spanned<DurationText>>,
    repoint_dns: Option<Spanned<DurationText>>,
    verify: Option<Spanned<DurationText>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    consecutive_successes: Option<Spanned<u32>>,
    interval: Option<Spanned<DurationText>>,
    probe_timeout: Option<Spanned<DurationText>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    global_cluster_id: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    hosted_zone_id: Spanned<String>,
    record_name: Spanned<String>,
    record_type: Option<Spanned<String>>,
    ttl: Option<Spanned<u32>>,
    name_servers: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAws {
    endpoint_url: Option<Spanned<String>>,
    profile: Option<Spanned<String>>,
    max_attempts: Option<Spanned<u32>>,
    attempt_timeout: Option<Spanned<DurationText>>,
    route53_requests_per_second: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSim {
    state_path: Option<Spanned<String>>,
    time_scale: Option<Spanned<f64>>,
    seed: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    name: Spanned<String>,
    priority: Spanned<u32>,
    health_url: Spanned<String>,
    health_check_id: Spanned<String>,
    set_identifier: Option<Spanned<String>>,
    record_values: Spanned<Vec<String>>,
    database: RawRegionDatabase,
    eks: RawEks,
    #[serde(default)]
    autoscaling_group: Vec<Spanned<RawGroup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegionDatabase {
    cluster_id: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEks {
    cluster: Spanned<String>,
    #[serde(default)]
    node_group: Vec<Spanned<RawGroup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Spanned<String>,
    baseline: Spanned<RawSizes>,
    failover: Spanned<RawSizes>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawSizes {
    min: u32,
    max: u32,
    desired: u32,
}

#[derive(Clone, Copy)]
struct DurationText(Duration);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        duration_text::deserialize(deserializer).map(DurationText)
    }
}

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validates config text; `path` is used for messages and to resolve relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let checker = Checker { text, path };
    let raw: RawConfig = toml::from_str(text).map_err(|err| checker.toml_error(&err))?;
    checker.build(raw)
}

struct Checker<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Checker<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text[..offset].matches('\n').count() + 1
    }

    fn invalid(&self, offset: usize, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line_of(offset),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn at<T>(&self, value: &Spanned<T>, key: &str, message: impl Into<String>) -> ConfigError {
        self.invalid(value.span().start, key, message)
    }

    fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let offset = err.span().map(|s| s.start).unwrap_or(0);
        let message = err.message().trim().to_string();
        // The span points at the offending value (or key); the key is the name before the
        // nearest `=` to its left on the same line.
        let key = err
            .span()
            .and_then(|span| key_before(self.text, span.start))
            .unwrap_or_else(|| "(document)".to_string());
        let hint = if message.starts_with("unknown field") {
            "; every key is documented in config/example.toml"
        } else {
            ""
        };
        self.invalid(offset, &key, format!("{message}{hint}"))
    }

    fn resolve(&self, file: &str) -> PathBuf {
        let file = Path::new(file);
        if file.is_absolute() {
            file.to_path_buf()
        } else {
            self.path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(file)
        }
    }

    fn duration(
        &self,
        value: &Option<Spanned<DurationText>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(spanned) if spanned.get_ref().0.is_zero() => {
                Err(self.at(spanned, key, "must be longer than zero"))
            }
            Some(spanned) => Ok(spanned.get_ref().0),
        }
    }

    fn non_empty(&self, value: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        let text = value.get_ref().trim();
        if text.is_empty() {
            Err(self.at(value, key, "must not be empty"))
        } else {
            Ok(text.to_string())
        }
    }

    fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        if *raw.version.get_ref() != CONFIG_VERSION {
            return Err(self.at(
                &raw.version,
                "version",
                format!(
                    "config version {} is not supported; this dr reads version {CONFIG_VERSION}",
                    raw.version.get_ref()
                ),
            ));
        }
        let d = &raw.detection;
        let detection = Detection {
            failure_window: self.duration(
                &d.failure_window,
                "detection.failure_window",
                Duration::from_secs(300),
            )?,
            poll_interval: self.duration(
                &d.poll_interval,
                "detection.poll_interval",
                Duration::from_secs(10),
            )?,
            lag_alert: self.duration(
                &d.lag_alert,
                "detection.lag_alert",
                Duration::from_secs(10),
            )?,
            cooldown: self.duration(
                &d.cooldown,
                "detection.cooldown",
                Duration::from_secs(3600),
            )?,
            pre_warm: d.pre_warm.unwrap_or(true),
            quorum: match &d.quorum {
                None => DEFAULT_QUORUM,
                Some(q) if (2..=Signal::ALL.len()).contains(q.get_ref()) => *q.get_ref(),
                Some(q) => {
                    return Err(self.at(
                        q,
                        "detection.quorum",
                        format!(
                            "must be from 2 to {}: one vantage point alone cannot tell a dead region from a cut between dr and the region, and there are {} kinds (route53, probe, database, and peer: the other daemons' probes when several share the store)",
                            Signal::ALL.len(),
                            Signal::ALL.len()
                        ),
                    ));
                }
            },
        };
        if detection.poll_interval >= detection.failure_window {
            let span = d
                .poll_interval
                .as_ref()
                .map(|s| s.span().start)
                .unwrap_or(0);
            return Err(self.invalid(
                span,
                "detection.poll_interval",
                "must be shorter than detection.failure_window, or no window can ever fill",
            ));
        }

        let f = &raw.failover;
        let defaults = StepTimeouts::default();
        let t = &f.timeouts;
        let timeouts = StepTimeouts {
            preflight: self.duration(
                &t.preflight,
                "failover.timeouts.preflight",
                defaults.preflight,
            )?,
            promote_db: self.duration(
                &t.promote_db,
                "failover.timeouts.promote_db",
                defaults.promote_db,
            )?,
            scale_target: self.duration(
                &t.scale_target,
                "failover.timeouts.scale_target",
                defaults.scale_target,
            )?,
            repoint_dns: self.duration(
                &t.repoint_dns,
                "failover.timeouts.repoint_dns",
                defaults.repoint_dns,
            )?,
            verify: self.duration(&t.verify, "failover.timeouts.verify", defaults.verify)?,
        };
        let verify_defaults = VerifyPolicy::default();
        let consecutive_successes = match &f.verify.consecutive_successes {
            Some(n) if *n.get_ref() == 0 => {
                return Err(self.at(
                    n,
                    "failover.verify.consecutive_successes",
                    "must be at least 1",
                ));
            }
            Some(n) => *n.get_ref(),
            None => verify_defaults.consecutive_successes,
        };
        let plan = PlanOptions {
            rpo_budget: self.duration(
                &f.rpo_budget,
                "failover.rpo_budget",
                Duration::from_secs(300),
            )?,
            timeouts,
            verify: VerifyPolicy {
                consecutive_successes,
                interval: self.duration(
                    &f.verify.interval,
                    "failover.verify.interval",
                    verify_defaults.interval,
                )?,
                probe_timeout: self.duration(
                    &f.verify.probe_timeout,
                    "failover.verify.probe_timeout",
                    verify_defaults.probe_timeout,
                )?,
            },
            serial: false,
        };

        let record_type = match &raw.dns.record_type {
            None => "A".to_string(),
            Some(t) if ["A", "AAAA", "CNAME"].contains(&t.get_ref().as_str()) => {
                t.get_ref().clone()
            }
            Some(t) => {
                return Err(self.at(
                    t,
                    "dns.record_type",
                    format!(
                        "`{}` is not supported; use \"A\", \"AAAA\" or \"CNAME\"",
                        t.get_ref()
                    ),
                ));
            }
        };
        let dns = DnsTopology {
            hosted_zone_id: self.non_empty(&raw.dns.hosted_zone_id, "dns.hosted_zone_id")?,
            record_name: self.non_empty(&raw.dns.record_name, "dns.record_name")?,
            record_type,
            ttl: raw.dns.ttl.as_ref().map(|t| *t.get_ref()).unwrap_or(60),
            name_servers: match &raw.dns.name_servers {
                None => Vec::new(),
                Some(list) => {
                    for server in list.get_ref() {
                        if let Err(why) = check_name_server(server) {
                            return Err(self.at(list, "dns.name_servers", why));
                        }
                    }
                    list.get_ref()
                        .iter()
                        .map(|s| s.trim().to_string())
                        .collect()
                }
            },
        };

        let regions = self.regions(&raw.region)?;

        let time_scale = match &raw.sim.time_scale {
            None => 60.0,
            Some(scale) if scale.get_ref().is_finite() && *scale.get_ref() > 0.0 => {
                *scale.get_ref()
            }
            Some(scale) => {
                return Err(self.at(
                    scale,
                    "sim.time_scale",
                    "must be a number above zero (1 is real time, 60 is a minute per second)",
                ));
            }
        };
        let sim = SimSettings {
            state_path: self.resolve(
                raw.sim
                    .state_path
                    .as_ref()
                    .map(|p| p.get_ref().as_str())
                    .unwrap_or("sim-world.json"),
            ),
            time_scale,
            seed: raw.sim.seed.unwrap_or(1),
        };
        let store_path = match &raw.store_path {
            None => self.resolve("dr-store.redb"),
            Some(p) => self.resolve(&self.non_empty(p, "store_path")?),
        };
        let api_listen = match &raw.api.listen {
            None => std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(text) => text.get_ref().parse().map_err(|_| {
                self.at(text, "api.listen", format!(
                    "`{}` is not an address and port such as \"127.0.0.1:8080\" or \"0.0.0.0:8080\"",
                    text.get_ref()
                ))
            })?,
        };
        let aws = self.aws(&raw.aws)?;
        let store = self.store(&raw.store)?;
        let daemon = self.daemon(&raw.daemon)?;
        let step_poll_interval = self.duration(
            &raw.failover.poll_interval,
            "failover.poll_interval",
            Duration::from_secs(10),
        )?;
        Ok(Config {
            aws,
            step_poll_interval,
            api_listen,
            path: self.path.to_path_buf(),
            backend: raw.backend.map(|b| *b.get_ref()).unwrap_or(Backend::Sim),
            store_path,
            store,
            daemon,
            detection,
            plan,
            topology: Topology {
                global_cluster_id: self.non_empty(
                    &raw.database.global_cluster_id,
                    "database.global_cluster_id",
                )?,
                dns,
                regions,
            },
            sim,
        })
    }

    fn store(&self, raw: &RawStore) -> Result<StoreBackend, ConfigError> {
        let backend = match &raw.backend {
            None => "redb".to_string(),
            Some(b) => b.get_ref().trim().to_string(),
        };
        match backend.as_str() {
            "redb" => {
                for (value, key) in [
                    (&raw.table, "store.table"),
                    (&raw.table_region, "store.table_region"),
                ] {
                    if let Some(value) = value {
                        return Err(self.at(
                            value,
                            key,
                            "is only read with backend = \"dynamodb\"; remove it, or set [store] backend = \"dynamodb\"",
                        ));
                    }
                }
                Ok(StoreBackend::Redb)
            }
            "dynamodb" => {
                let table = match &raw.table {
                    None => "dr-store".to_string(),
                    Some(t) => {
                        let text = self.non_empty(t, "store.table")?;
                        let valid = (3..=255).contains(&text.len())
                            && text
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
                        if !valid {
                            return Err(self.at(
                                t,
                                "store.table",
                                "must be a DynamoDB table name: 3 to 255 letters, digits, '_', '-' or '.'",
                            ));
                        }
                        text
                    }
                };
                let table_region = match &raw.table_region {
                    None => None,
                    Some(r) => Some(self.region_name(r, "store.table_region")?),
                };
                Ok(StoreBackend::Dynamodb {
                    table,
                    table_region,
                })
            }
            other => Err(self.at(
                raw.backend.as_ref().expect("set"),
                "store.backend",
                format!(
                    "`{other}` is not a store; use \"redb\" (a file, one daemon) or \"dynamodb\" (a table the daemons of several regions share)"
                ),
            )),
        }
    }

    fn region_name(&self, value: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        let text = self.non_empty(value, key)?;
        let valid = text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && text.contains('-');
        if valid {
            Ok(text)
        } else {
            Err(self.at(
                value,
                key,
                format!("`{text}` is not an AWS region name such as \"us-west-2\""),
            ))
        }
    }

    fn daemon(&self, raw: &RawDaemon) -> Result<DaemonIdentity, ConfigError> {
        let id = match &raw.id {
            None => None,
            Some(id) => {
                let text = self.non_empty(id, "daemon.id")?;
                if text.len() > 128 || text.chars().any(|c| c.is_control() || c == '/') {
                    return Err(self.at(
                        id,
                        "daemon.id",
                        "must be at most 128 printable characters, without '/'",
                    ));
                }
                Some(text)
            }
        };
        let region = match &raw.region {
            None => None,
            Some(r) => Some(RegionName::new(self.region_name(r, "daemon.region")?)),
        };
        let lease = self.duration(&raw.lease, "daemon.lease", Duration::from_secs(10))?;
        if let Some(spanned) = &raw.lease
            && !(Duration::from_secs(3)..=Duration::from_secs(300)).contains(&lease)
        {
            return Err(self.at(
                spanned,
                "daemon.lease",
                "must be from 3s to 5m: a standby takes over a lease period after the leader's last renewal",
            ));
        }
        Ok(DaemonIdentity { id, region, lease })
    }

    fn aws(&self, raw: &RawAws) -> Result<AwsSettings, ConfigError> {
        let defaults = AwsSettings::default();
        let endpoint_url = match &raw.endpoint_url {
            None => None,
            Some(url) => {
                let text = self.non_empty(url, "aws.endpoint_url")?;
                if !(text.starts_with("http://") || text.starts_with("https://")) {
                    return Err(self.at(
                        url,
                        "aws.endpoint_url",
                        "must be an http:// or https:// URL such as \"http://127.0.0.1:5000\"",
                    ));
                }
                Some(text)
            }
        };
        let profile = match &raw.profile {
            None => None,
            Some(p) => Some(self.non_empty(p, "aws.profile")?),
        };
        let max_attempts = match &raw.max_attempts {
            None => defaults.max_attempts,
            Some(n) if (1..=10).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                return Err(self.at(n, "aws.max_attempts", "must be from 1 to 10"));
            }
        };
        let route53_requests_per_second = match &raw.route53_requests_per_second {
            None => defaults.route53_requests_per_second,
            Some(r) if r.get_ref().is_finite() && *r.get_ref() > 0.0 && *r.get_ref() <= 5.0 => {
                *r.get_ref()
            }
            Some(r) => {
                return Err(self.at(
                    r,
                    "aws.route53_requests_per_second",
                    "must be above 0 and at most 5, Route53's limit per account",
                ));
            }
        };
        Ok(AwsSettings {
            endpoint_url,
            profile,
            max_attempts,
            attempt_timeout: self.duration(
                &raw.attempt_timeout,
                "aws.attempt_timeout",
                defaults.attempt_timeout,
            )?,
            route53_requests_per_second,
        })
    }

    fn regions(&self, raw: &[Spanned<RawRegion>]) -> Result<Vec<Region>, ConfigError> {
        if raw.len() < 2 {
            let offset = raw
                .first()
                .map(|r| r.span().start)
                .unwrap_or(self.text.len());
            return Err(self.invalid(
                offset,
                "region",
                format!(
                    "{} [[region]] table(s) found; a failover needs at least two regions",
                    raw.len()
                ),
            ));
        }
        let mut regions = Vec::new();
        let mut names = BTreeSet::new();
        let mut priorities = BTreeSet::new();
        let mut set_ids = BTreeSet::new();
        let mut checks = BTreeSet::new();
        for (index, spanned) in raw.iter().enumerate() {
            let r = spanned.get_ref();
            let key = |field: &str| format!("region[{index}].{field}");
            let name = self.non_empty(&r.name, &key("name"))?;
            if !looks_like_region(&name) {
                return Err(self.at(
                    &r.name,
                    &key("name"),
                    format!("`{name}` is not an AWS region name such as \"us-west-2\""),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(self.at(
                    &r.name,
                    &key("name"),
                    format!("region `{name}` is listed twice; each region appears once"),
                ));
            }
            if !priorities.insert(*r.priority.get_ref()) {
                return Err(self.at(&r.priority, &key("priority"), format!(
                    "priority {} is used by another region; priorities decide the failover target and must differ",
                    r.priority.get_ref()
                )));
            }
            let health_url = self.non_empty(&r.health_url, &key("health_url"))?;
            if !(health_url.starts_with("http://") || health_url.starts_with("https://")) {
                return Err(self.at(
                    &r.health_url,
                    &key("health_url"),
                    "must be an http:// or https:// URL",
                ));
            }
            let health_check_id = self.non_empty(&r.health_check_id, &key("health_check_id"))?;
            if !checks.insert(health_check_id.clone()) {
                return Err(self.at(
                    &r.health_check_id,
                    &key("health_check_id"),
                    "is used by another region; each region has its own health check",
                ));
            }
            let set_identifier = match &r.set_identifier {
                Some(s) => self.non_empty(s, &key("set_identifier"))?,
                None => name.clone(),
            };
            if !set_ids.insert(set_identifier.clone()) {
                let offset = r
                    .set_identifier
                    .as_ref()
                    .map(|s| s.span().start)
                    .unwrap_or(r.name.span().start);
                return Err(self.invalid(
                    offset,
                    &key("set_identifier"),
                    "is used by another region; set identifiers must be unique",
                ));
            }
            if r.record_values.get_ref().is_empty()
                || r.record_values
                    .get_ref()
                    .iter()
                    .any(|v| v.trim().is_empty())
            {
                return Err(self.at(
                    &r.record_values,
                    &key("record_values"),
                    "must list at least one non-empty value",
                ));
            }
            let node_groups = self.groups(
                &r.eks.node_group,
                &format!("region[{index}].eks.node_group"),
            )?;
            let autoscaling_groups =
                self.groups(&r.autoscaling_group, &key("autoscaling_group"))?;
            regions.push(Region {
                name: RegionName::new(name),
                priority: *r.priority.get_ref(),
                db_cluster_id: self
                    .non_empty(&r.database.cluster_id, &key("database.cluster_id"))?,
                eks_cluster: self.non_empty(&r.eks.cluster, &key("eks.cluster"))?,
                node_groups,
                autoscaling_groups,
                health_check_id,
                set_identifier,
                record_values: r.record_values.get_ref().clone(),
                health_url,
            });
        }
        regions.sort_by_key(|r| r.priority);
        Ok(regions)
    }

    fn groups(
        &self,
        raw: &[Spanned<RawGroup>],
        prefix: &str,
    ) -> Result<Vec<ScalableGroup>, ConfigError> {
        let mut names = BTreeSet::new();
        let mut groups = Vec::new();
        for (index, spanned) in raw.iter().enumerate() {
            let g = spanned.get_ref();
            let key = |field: &str| format!("{prefix}[{index}].{field}");
            let name = self.non_empty(&g.name, &key("name"))?;
            if !names.insert(name.clone()) {
                return Err(self.at(
                    &g.name,
                    &key("name"),
                    format!("group `{name}` is listed twice in this region"),
                ));
            }
            let sizes = |s: &Spanned<RawSizes>, field: &str| {
                let v = *s.get_ref();
                if v.min <= v.desired && v.desired <= v.max && v.max > 0 {
                    Ok(Sizes {
                        min: v.min,
                        max: v.max,
                        desired: v.desired,
                    })
                } else {
                    Err(self.at(s, &key(field), format!(
                        "min={} desired={} max={} must satisfy min <= desired <= max, with max above zero",
                        v.min, v.desired, v.max
                    )))
                }
            };
            groups.push(ScalableGroup {
                name,
                baseline: sizes(&g.baseline, "baseline")?,
                failover: sizes(&g.failover, "failover")?,
            });
        }
        Ok(groups)
    }
}

/// The key whose value starts at `offset`: the bare key before the nearest `=` to the left on
/// the same line, or the key starting at `offset` itself.
fn key_before(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    let before = &text[line_start..offset];
    let key = match before.rfind('=') {
        Some(eq) => {
            let left = before[..eq].trim_end();
            let start = left
                .rfind(|c: char| !is_key_char(c))
                .map(|i| i + 1)
                .unwrap_or(0);
            left[start..].to_string()
        }
        None => text[offset..]
            .chars()
            .take_while(|c| is_key_char(*c))
            .collect(),
    };
    (!key.is_empty()).then_some(key)
}

fn looks_like_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../config/example.toml");

    fn check(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("/etc/dr/test.toml"))
    }

    fn expect_error(text: &str, key: &str, line: usize, fragment: &str) {
        match check(text) {
            Err(ConfigError::Invalid {
                key: k,
                line: l,
                message,
                ..
            }) => {
                assert_eq!(k, key, "key (message: {message})");
                assert_eq!(l, line, "line (message: {message})");
                assert!(message.contains(fragment), "`{message}` lacks `{fragment}`");
            }
            other => panic!("expected an error at {key}, got {other:?}"),
        }
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text.lines()
            .position(|l| l.contains(needle))
            .expect("needle present")
            + 1
    }

    #[test]
    fn the_example_config_is_valid_and_describes_the_seed() {
        let config = check(EXAMPLE).unwrap();
        let names: Vec<&str> = config
            .topology
            .regions
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, vec!["us-east-1", "us-west-2"]);
        assert_eq!(config.detection.failure_window, Duration::from_secs(300));
        assert_eq!(config.detection.poll_interval, Duration::from_secs(10));
        assert_eq!(config.plan.rpo_budget, Duration::from_secs(300));
        assert_eq!(
            config.topology.regions[0].eks_cluster,
            "yt-video-creator-prod"
        );
        assert_eq!(
            config.topology.regions[1].eks_cluster,
            "yt-video-creator-west"
        );
        assert_eq!(config.store_path, Path::new("/etc/dr/dr-store.redb"));
    }

    #[test]
    fn a_quorum_below_two_or_above_the_vantage_points_is_refused_with_its_line() {
        for bad in ["1", "0", "5"] {
            let text = EXAMPLE.replace("quorum = 2", &format!("quorum = {bad}"));
            expect_error(
                &text,
                "detection.quorum",
                line_of(&text, "quorum ="),
                "cannot tell a dead region from a cut",
            );
        }
        let text = EXAMPLE.replace("quorum = 2", "quorum = 3");
        assert_eq!(check(&text).unwrap().detection.quorum, 3);
        let text = EXAMPLE.replace("quorum = 2", "quorum = 4");
        assert_eq!(check(&text).unwrap().detection.quorum, 4);
        assert_eq!(check(EXAMPLE).unwrap().detection.quorum, 2);
    }

    #[test]
    fn name_servers_are_host_names_or_addresses() {
        let with = |list: &str| {
            EXAMPLE.replace(
                "# name_servers = [",
                &format!("name_servers = {list}\n# was = ["),
            )
        };
        let good = with(
            r#"["ns-1.awsdns-01.org", "192.0.2.53", "127.0.0.1:5353", "[2001:db8::1]:53", "[2001:db8::2]", "2001:db8::3"]"#,
        );
        assert_eq!(check(&good).unwrap().topology.dns.name_servers.len(), 6);
        for bad in [
            r#"["ns 1.example"]"#,
            r#"["ns.example:0"]"#,
            r#"["ns.example:dns"]"#,
            r#"[""]"#,
        ] {
            let text = with(bad);
            expect_error(
                &text,
                "dns.name_servers",
                line_of(&text, "name_servers ="),
                "name server",
            );
        }
    }

    #[test]
    fn the_commented_third_region_is_valid_when_uncommented() {
        let text = EXAMPLE
            .lines()
            .map(|l| {
                l.strip_prefix("# ~ ")
                    .or(l.strip_prefix("# ~"))
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = check(&text).unwrap();
        assert_eq!(config.topology.regions.len(), 3);
        assert_eq!(config.topology.regions[2].name.as_str(), "eu-west-1");
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let text = EXAMPLE.replacen("[detection]\n", "[detection]\nfailure_windw = \"5m\"\n", 1);
        expect_error(
            &text,
            "failure_windw",
            line_of(&text, "failure_windw"),
            "unknown field",
        );
    }

    #[test]
    fn the_store_and_the_daemon_identity_are_checked_key_by_key() {
        let shared = EXAMPLE.replacen(
            "backend = \"redb\"",
            "backend = \"dynamodb\"\ntable = \"dr-store\"\ntable_region = \"us-east-2\"",
            1,
        );
        let config = check(&shared).unwrap();
        assert_eq!(
            config.store,
            StoreBackend::Dynamodb {
                table: "dr-store".into(),
                table_region: Some("us-east-2".into())
            }
        );
        assert_eq!(config.daemon.lease, Duration::from_secs(10));
        assert_eq!(check(EXAMPLE).unwrap().store, StoreBackend::Redb);

        let bad = EXAMPLE.replacen("backend = \"redb\"", "backend = \"etcd\"", 1);
        expect_error(
            &bad,
            "store.backend",
            line_of(&bad, "\"etcd\""),
            "\"dynamodb\"",
        );
        let stray = EXAMPLE.replacen(
            "backend = \"redb\"",
            "backend = \"redb\"\ntable = \"dr-store\"",
            1,
        );
        expect_error(
            &stray,
            "store.table",
            line_of(&stray, "table = \"dr-store\""),
            "only read with backend = \"dynamodb\"",
        );
        let name = shared.replacen("table = \"dr-store\"", "table = \"dr store!\"", 1);
        expect_error(
            &name,
            "store.table",
            line_of(&name, "dr store!"),
            "3 to 255",
        );
        let region = shared.replacen("\"us-east-2\"", "\"Ohio\"", 1);
        expect_error(
            &region,
            "store.table_region",
            line_of(&region, "\"Ohio\""),
            "not an AWS region name",
        );
        let lease = EXAMPLE.replacen("lease = \"10s\"", "lease = \"1s\"", 1);
        expect_error(
            &lease,
            "daemon.lease",
            line_of(&lease, "lease = \"1s\""),
            "from 3s to 5m",
        );
        let lease = EXAMPLE.replacen("lease = \"10s\"", "lease = \"1h\"", 1);
        expect_error(
            &lease,
            "daemon.lease",
            line_of(&lease, "lease = \"1h\""),
            "from 3s to 5m",
        );
        let id = EXAMPLE.replacen("lease = \"10s\"", "lease = \"10s\"\nid = \"a/b\"", 1);
        expect_error(&id, "daemon.id", line_of(&id, "\"a/b\""), "without '/'");
        let unknown = EXAMPLE.replacen("lease = \"10s\"", "leese = \"10s\"", 1);
        expect_error(
            &unknown,
            "leese",
            line_of(&unknown, "leese"),
            "unknown field",
        );
        let quorum = EXAMPLE.replacen("quorum = 2", "quorum = 5", 1);
        expect_error(
            &quorum,
            "detection.quorum",
            line_of(&quorum, "quorum = 5"),
            "from 2 to 4",
        );
    }

    #[test]
    fn wrong_types_are_named_with_their_line() {
        let text = EXAMPLE.replacen("priority = 2", "priority = \"two\"", 1);
        expect_error(&text, "priority", line_of(&text, "\"two\""), "invalid type");
    }

    #[test]
    fn bad_durations_say_how_to_write_one() {
        let text = EXAMPLE.replacen("poll_interval = \"10s\"", "poll_interval = \"ten\"", 1);
        expect_error(&text, "poll_interval", line_of(&text, "\"ten\""), "\"90s\"");
    }

    #[test]
    fn duplicate_regions_are_refused() {
        let text = EXAMPLE.replacen("name = \"us-west-2\"", "name = \"us-east-1\"", 1);
        let second = text
            .lines()
            .collect::<Vec<_>>()
            .iter()
            .rposition(|l| l.contains("name = \"us-east-1\""))
            .unwrap()
            + 1;
        expect_error(&text, "region[1].name", second, "listed twice");
    }

    #[test]
    fn missing_regions_are_refused() {
        let cut = EXAMPLE.find("[[region]]").unwrap();
        let second = cut + 1 + EXAMPLE[cut + 1..].find("[[region]]").unwrap();
        let end = EXAMPLE[second..]
            .find("# ~")
            .map(|i| second + i)
            .unwrap_or(EXAMPLE.len());
        let text = format!("{}{}", &EXAMPLE[..second], &EXAMPLE[end..]);
        match check(&text) {
            Err(ConfigError::Invalid { key, message, .. }) => {
                assert_eq!(key, "region");
                assert!(message.contains("at least two regions"), "{message}");
            }
            other => panic!("expected missing-region error, got {other:?}"),
        }
    }

    #[test]
    fn sizes_must_be_ordered() {
        let text = EXAMPLE.replacen(
            "baseline = { min = 2, max = 8, desired = 2 }",
            "baseline = { min = 5, max = 8, desired = 2 }",
            1,
        );
        assert_ne!(text, EXAMPLE);
        expect_error(
            &text,
            "region[1].eks.node_group[0].baseline",
            line_of(&text, "min = 5"),
            "min <= desired <= max",
        );
    }

    #[test]
    fn poll_interval_must_fit_in_the_window() {
        let text = EXAMPLE.replacen("poll_interval = \"10s\"", "poll_interval = \"10m\"", 1);
        expect_error(
            &text,
            "detection.poll_interval",
            line_of(&text, "\"10m\""),
            "shorter than",
        );
    }

    #[test]
    fn region_names_must_look_like_regions() {
        let text = EXAMPLE.replacen("name = \"us-west-2\"", "name = \"west\"", 1);
        expect_error(
            &text,
            "region[1].name",
            line_of(&text, "\"west\""),
            "not an AWS region",
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let text = EXAMPLE.replacen("ttl = 60", "ttl = = 60", 1);
        match check(&text) {
            Err(ConfigError::Invalid { line, .. }) => {
                assert_eq!(line, line_of(&text, "ttl = = 60"))
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn region_names_are_recognised() {
        assert!(looks_like_region("us-east-1"));
        assert!(looks_like_region("ap-southeast-1"));
        assert!(looks_like_region("us-gov-west-1"));
        assert!(!looks_like_region("useast1"));
        assert!(!looks_like_region("us-east-"));
        assert!(!looks_like_region("US-east-1"));
    }
}
