//! Two `dr daemon` processes sharing one checkpoint store on the emulator's DynamoDB: "east"
//! (`dr-east` in us-east-1) and "west" (`dr-west` in us-west-2), each signing its AWS calls with
//! its own access key (`daemon-east`, `daemon-west`) so the emulator tells their calls apart,
//! each with its own API port, on the example config turned to `backend = "aws"`, with fast
//! detection and the default 10 s lease. Used by `tests/ha.rs` and `benches/ha.rs` (which
//! include it with `moto.rs` by `#[path]`).
//!
//! Every child process is killed when the value that started it is dropped; every wait is
//! bounded; all traffic goes to 127.0.0.1.

use crate::moto::{HealthServer, Moto, STORE_REGION, STORE_TABLE, aws_config, dr};
use dr::api::view::{RunView, StatusView};
use dr::core::run::EventRecord;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The operate token's secret every daemon accepts.
pub const TOKEN: &str = "ha-test-token-0123456789";
/// `DR_API_TOKENS` of every daemon.
const TOKENS: &str = "oncall:operate:ha-test-token-0123456789";

/// The mutations an undisturbed failover from us-east-1 to us-west-2 applies on the example
/// deployment, each once (tests/aws.rs's end-to-end run applies the same).
pub const FAILOVER_MUTATIONS: [(&str, u64); 4] = [
    ("ChangeResourceRecordSets", 1),
    ("FailoverGlobalCluster", 1),
    ("UpdateAutoScalingGroup", 1),
    ("UpdateNodegroupConfig", 1),
];

/// The mutating operations the emulator counts.
pub const MUTATIONS: [&str; 5] = [
    "FailoverGlobalCluster",
    "SwitchoverGlobalCluster",
    "UpdateNodegroupConfig",
    "UpdateAutoScalingGroup",
    "ChangeResourceRecordSets",
];

/// `FAILOVER_MUTATIONS` as `Moto::applied` answers.
pub fn failover_mutations() -> std::collections::BTreeMap<String, u64> {
    FAILOVER_MUTATIONS
        .iter()
        .map(|(op, n)| (op.to_string(), *n))
        .collect()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Now, as Unix seconds (the emulator's call log uses the same clock).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One HTTP/1.1 request to 127.0.0.1:`port` with the operate token; `None` when nothing
/// answers within `limit` (no listener, or a stopped process whose kernel accepted the
/// connection).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    limit: Duration,
) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, limit).ok()?;
    stream.set_read_timeout(Some(limit)).ok()?;
    stream.set_write_timeout(Some(limit)).ok()?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let text = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, text))
}

/// Waits until `condition` holds, polling every `every`, for at most `limit`; panics naming
/// `what` (and what `context` says then) otherwise. Returns how long it took.
pub fn wait_for(
    limit: Duration,
    every: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
    context: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    loop {
        if condition() {
            return start.elapsed();
        }
        if start.elapsed() >= limit {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(every);
    }
}

/// One of the two daemons.
pub struct Member {
    /// "east" or "west".
    pub name: &'static str,
    /// `DR_DAEMON_ID`.
    pub id: &'static str,
    /// `DR_DAEMON_REGION`.
    pub region: &'static str,
    /// The access key id its AWS calls are signed with.
    pub access_key: &'static str,
    /// Its API port.
    pub port: u16,
    /// Its config file.
    pub config: PathBuf,
    /// The log (stderr) of its latest start.
    pub log: PathBuf,
    starts: u32,
    child: Option<Child>,
}

impl Member {
    fn new(name: &'static str, dir: &Path, base: &str, poll: &str) -> Member {
        let (id, region, access_key) = match name {
            "east" => ("dr-east", "us-east-1", "daemon-east"),
            _ => ("dr-west", "us-west-2", "daemon-west"),
        };
        let port = free_port();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, daemon_config(base, port, poll)).unwrap();
        Member {
            name,
            id,
            region,
            access_key,
            port,
            config,
            log: dir.join(format!("{name}.0.err")),
            starts: 0,
            child: None,
        }
    }

    /// Starts the daemon process; returns at once.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let dir = self.config.parent().unwrap().to_path_buf();
        self.log = dir.join(format!("{}.{}.err", self.name, self.starts));
        let child = dr(&self.config)
            .arg("daemon")
            .env("DR_DAEMON_ID", self.id)
            .env("DR_DAEMON_REGION", self.region)
            .env("AWS_ACCESS_KEY_ID", self.access_key)
            .env("DR_API_TOKENS", TOKENS)
            .stdout(
                std::fs::File::create(dir.join(format!("{}.{}.out", self.name, self.starts)))
                    .unwrap(),
            )
            .stderr(std::fs::File::create(&self.log).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Starts the daemon and waits until its `/ready` answers 200.
    pub fn start(&mut self) {
        self.spawn();
        let port = self.port;
        wait_for(
            Duration::from_secs(60),
            Duration::from_millis(100),
            &format!("{} to be ready", self.id),
            || {
                request(port, "GET", "/ready", None, Duration::from_secs(2))
                    .is_some_and(|(code, _)| code == 200)
            },
            || self.log_text(),
        );
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon runs").id()
    }

    /// Sends `signal` (`-KILL`, `-STOP`, `-CONT`, `-TERM`) to it.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {}", self.pid());
    }

    /// SIGKILL, and reaps it.
    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits (at most 30 s) for it to exit; returns its exit code.
    pub fn sigterm(&mut self) -> Option<i32> {
        self.signal("-TERM");
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within 30 s of SIGTERM\n{}",
                    self.id,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its log so far (of its latest start).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/status`, typed; `None` when it does not answer 200 within 2 s.
    pub fn status(&self) -> Option<StatusView> {
        match request(
            self.port,
            "GET",
            "/api/v1/status",
            None,
            Duration::from_secs(2),
        ) {
            Some((200, text)) => {
                Some(serde_json::from_str(&text).unwrap_or_else(|e| {
                    panic!("{}'s status does not parse ({e}): {text}", self.id)
                }))
            }
            _ => None,
        }
    }

    /// Its role as its status says: `leader` or `standby`; `None` when it does not answer.
    pub fn role(&self) -> Option<String> {
        self.status().and_then(|s| s.lease).map(|l| l.role)
    }

    /// Whether it says it leads.
    pub fn leads(&self) -> bool {
        self.status()
            .and_then(|s| s.lease)
            .is_some_and(|l| l.role == "leader" && l.leader.as_deref() == Some(self.id))
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> Option<String> {
        match request(self.port, "GET", "/metrics", None, Duration::from_secs(5)) {
            Some((200, text)) => Some(text),
            _ => None,
        }
    }

    /// `GET /api/v1/runs/{id}`, typed.
    pub fn run(&self, id: &str) -> Option<RunView> {
        match request(
            self.port,
            "GET",
            &format!("/api/v1/runs/{id}"),
            None,
            Duration::from_secs(5),
        ) {
            Some((200, text)) => Some(serde_json::from_str(&text).unwrap()),
            _ => None,
        }
    }

    /// `POST /api/v1/failover` to `to`; returns the run's id.
    pub fn failover(&self, to: &str, reason: &str) -> String {
        let (code, text) = request(
            self.port,
            "POST",
            "/api/v1/failover",
            Some(&json!({"to": to, "reason": reason})),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("{} did not answer the failover", self.id));
        assert_eq!(code, 202, "{text}\n{}", self.log_text());
        let run: RunView = serde_json::from_str(&text).unwrap();
        run.id.to_string()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// The config of a daemon: the emulator's example config with the shared store on DynamoDB,
/// `poll` between observations (under the shipped 10 s: with a 4 s failure window, as
/// tests/aws.rs's fast daemon), the default lease, and its API on `port`.
fn daemon_config(base: &str, port: u16, poll: &str) -> String {
    let replace = |text: String, from: &str, to: &str| {
        assert!(text.contains(from), "the config lacks {from}");
        text.replacen(from, to, 1)
    };
    let text = replace(
        base.to_string(),
        "backend = \"redb\"",
        &format!(
            "backend = \"dynamodb\"\ntable = \"{STORE_TABLE}\"\ntable_region = \"{STORE_REGION}\""
        ),
    );
    let text = if poll == "10s" {
        text
    } else {
        replace(text, "failure_window = \"5m\"", "failure_window = \"4s\"")
    };
    // The first poll_interval is [detection]'s.
    let text = replace(
        text,
        "poll_interval = \"10s\"",
        &format!("poll_interval = \"{poll}\""),
    );
    let text = replace(
        text,
        "listen = \"127.0.0.1:8080\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    assert!(text.contains("lease = \"10s\""), "the default lease");
    text
}

/// An emulator with dr's store table, the regions' `/health`, and the two daemons' configs.
/// Members are killed when dropped, before the emulator.
pub struct Ha {
    /// East (started first, leads).
    pub east: Member,
    /// West.
    pub west: Member,
    /// The emulator.
    pub moto: Moto,
    /// The regions' `/health`.
    pub health: HealthServer,
    /// The folder of every config and log.
    pub dir: tempfile::TempDir,
}

impl Ha {
    /// The emulator and the configs (500 ms polls); no daemon started.
    pub fn new() -> Ha {
        Ha::with_poll("500ms")
    }

    /// The emulator and the configs, with `poll` between the daemons' observations; no daemon
    /// started.
    pub fn with_poll(poll: &str) -> Ha {
        let dir = tempfile::tempdir().unwrap();
        let moto = Moto::start(dir.path(), &crate::moto::seed_world_with_table());
        let health = HealthServer::start();
        let base = aws_config(dir.path(), &moto, &health, Some(&moto.endpoint()));
        let base = std::fs::read_to_string(base).unwrap();
        Ha {
            east: Member::new("east", dir.path(), &base, poll),
            west: Member::new("west", dir.path(), &base, poll),
            moto,
            health,
            dir,
        }
    }

    /// East started and leading, then west started and standing by, both having published.
    pub fn start() -> Ha {
        let mut ha = Ha::new();
        ha.start_both();
        ha
    }

    /// Starts east and waits until it leads, then west and waits until it stands by.
    pub fn start_both(&mut self) {
        let ha = self;
        ha.east.start();
        ha.wait_leads("east", Duration::from_secs(30));
        ha.west.start();
        ha.wait_standby("west", Duration::from_secs(30));
    }

    /// The member named `name`.
    pub fn member(&self, name: &str) -> &Member {
        match name {
            "east" => &self.east,
            _ => &self.west,
        }
    }

    /// The member named `name`, to start or kill it.
    pub fn member_mut(&mut self, name: &str) -> &mut Member {
        match name {
            "east" => &mut self.east,
            _ => &mut self.west,
        }
    }

    /// Waits until `name` says it leads (polling every 100 ms); returns how long it took.
    pub fn wait_leads(&self, name: &str, limit: Duration) -> Duration {
        let member = self.member(name);
        wait_for(
            limit,
            Duration::from_millis(100),
            &format!("{} to lead", member.id),
            || member.leads(),
            || self.logs(),
        )
    }

    /// Waits until `name` says it stands by and names the other daemon as the leader.
    pub fn wait_standby(&self, name: &str, limit: Duration) -> Duration {
        let member = self.member(name);
        let other = if name == "east" { "dr-west" } else { "dr-east" };
        wait_for(
            limit,
            Duration::from_millis(100),
            &format!("{} to stand by for {other}", member.id),
            || {
                member
                    .status()
                    .and_then(|s| s.lease)
                    .is_some_and(|l| l.role == "standby" && l.leader.as_deref() == Some(other))
            },
            || self.logs(),
        )
    }

    /// Both daemons' logs and the emulator's faults, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- east ({})\n{}\n--- west ({})\n{}",
            self.east.log.display(),
            tail(&self.east.log_text()),
            self.west.log.display(),
            tail(&self.west.log_text())
        )
    }

    /// The config a CLI process uses: the same as the daemons' (east's API port).
    pub fn cli_config(&self) -> &Path {
        &self.east.config
    }

    /// A `dr` CLI process on the shared store, as an operator in us-east-1 (access key
    /// `operator`).
    pub fn cli(&self) -> Command {
        let mut command = dr(self.cli_config());
        command
            .env("AWS_ACCESS_KEY_ID", "operator")
            .env("DR_DAEMON_REGION", "us-east-1");
        command
    }

    /// The run's log as stored, read from the table directly (the events with their epochs),
    /// with the test's own access key.
    pub fn events(&self, run: &str) -> Vec<EventRecord> {
        read_events(&self.moto, run)
    }

    /// Waits until the run has finished (through `name`'s API); returns the view.
    pub fn wait_finished(&self, name: &str, run: &str, limit: Duration) -> RunView {
        let member = self.member(name);
        let mut last = None;
        wait_for(
            limit,
            Duration::from_millis(200),
            &format!("run {run} to finish (through {})", member.id),
            || {
                last = member.run(run);
                last.as_ref().is_some_and(|r| {
                    matches!(r.status, Some(dr::core::run::RunStatus::Finished { .. }))
                })
            },
            || format!("{:?}\n{}", member.run(run), self.logs()),
        );
        last.unwrap()
    }

    /// Mutating calls the emulator received from `access_key` at or after `since` (Unix
    /// seconds), with their outcome.
    pub fn mutations_by(&self, access_key: &str, since: f64) -> Vec<Value> {
        self.moto
            .calls()
            .into_iter()
            .filter(|c| MUTATIONS.contains(&c["op"].as_str().unwrap_or("")))
            .filter(|c| c["access_key"] == access_key)
            .filter(|c| c["t"].as_f64().unwrap_or(0.0) >= since)
            .collect()
    }
}

impl Drop for Ha {
    fn drop(&mut self) {
        // Stopped processes die of SIGKILL too.
        self.east.sigkill();
        self.west.sigkill();
    }
}

/// The last 60 lines of a log.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// A run's events as the shared store keeps them: items `run#<id>` / `ev#<seq>`, each with the
/// event record as JSON in `record`. Read consistently, every page.
pub fn read_events(moto: &Moto, run: &str) -> Vec<EventRecord> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let client = moto.dynamodb_client("ha-test-reader", STORE_REGION);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut events = Vec::new();
        let mut start = None;
        loop {
            let page = client
                .query()
                .table_name(STORE_TABLE)
                .key_condition_expression("pk = :pk AND begins_with(sk, :ev)")
                .expression_attribute_values(":pk", AttributeValue::S(format!("run#{run}")))
                .expression_attribute_values(":ev", AttributeValue::S("ev#".into()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            for item in page.items() {
                let Some(AttributeValue::S(text)) = item.get("record") else {
                    panic!("an event item without its record: {item:?}");
                };
                let record: EventRecord = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("an event that does not parse ({e}): {text}"));
                events.push(record);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        events.sort_by_key(|e| e.seq);
        events
    })
}

/// The first `TakenOver` event of `daemon` in `events`.
pub fn taken_over_by<'a>(events: &'a [EventRecord], daemon: &str) -> Option<&'a EventRecord> {
    events.iter().find(
        |e| matches!(&e.event, dr::core::run::RunEvent::TakenOver { daemon: d } if d == daemon),
    )
}

/// `nproc` and the CPU model, for benchmark reports.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs (nproc), {model}")
}
