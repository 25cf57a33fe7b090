//! The AWS emulator harness: starts `tests/python/moto_launcher.py` (moto plus the operations it
//! lacks) on a free loopback port with the seed's deployment created in it, writes a config
//! with `backend = "aws"` pointing at it, serves each region's `/health` on loopback, and talks
//! to the launcher's admin API. The launcher also serves Route53's data plane, real DNS over UDP
//! and TCP, on its own loopback port (`Moto::dns_addr`), and DynamoDB: `seed_world_with_table`
//! creates dr's store table, `Moto::dynamodb_client` talks to it as one client (one access key),
//! `Moto::client_fault` fails one client's calls, `Moto::dynamodb_requests` counts them.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The project's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test virtual environment's Python, made by `scripts/test.sh`.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("DR_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh, which makes the virtual environment from tests/python/requirements.txt",
        python.display()
    );
    python
}

/// A running emulator; stopped when dropped.
pub struct Moto {
    child: Child,
    _stdin: ChildStdin,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The UDP and TCP port of its DNS data plane on 127.0.0.1.
    pub dns_port: u16,
    /// The hosted zone id moto generated.
    pub hosted_zone_id: String,
    /// Health check id per region.
    pub health_checks: std::collections::BTreeMap<String, String>,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The deployment the seed describes, as the launcher creates it.
pub fn seed_world() -> Value {
    json!({
        "global_cluster_id": "yt-video-creator-global",
        "zone_name": "ytvideocreator.com",
        "record_name": "api.ytvideocreator.com",
        "ttl": 60,
        "regions": [
            {
                "name": "us-east-1", "db_cluster_id": "yt-video-creator-east",
                "eks_cluster": "yt-video-creator-prod", "set_identifier": "us-east-1",
                "record_values": ["203.0.113.10"],
                "node_groups": [{"name": "general", "min": 3, "max": 10, "desired": 3}],
                "autoscaling_groups": [{"name": "yt-video-creator-prod-spot-workers", "min": 0, "max": 50, "desired": 0}]
            },
            {
                "name": "us-west-2", "db_cluster_id": "yt-video-creator-west",
                "eks_cluster": "yt-video-creator-west", "set_identifier": "us-west-2",
                "record_values": ["198.51.100.20"],
                "node_groups": [{"name": "general", "min": 2, "max": 8, "desired": 2}],
                "autoscaling_groups": [{"name": "yt-video-creator-west-spot-workers", "min": 0, "max": 20, "desired": 0}]
            }
        ]
    })
}

/// The DynamoDB table of dr's shared store in `seed_world_with_table`, and its region.
pub const STORE_TABLE: &str = "dr-store";
/// The region of `STORE_TABLE`.
pub const STORE_REGION: &str = "us-east-2";

/// `seed_world()` plus dr's store table: `STORE_TABLE` in `STORE_REGION`, empty, keyed by `pk`
/// (String, HASH) and `sk` (String, RANGE), PAY_PER_REQUEST. Not in `seed_world()` itself:
/// loading moto's DynamoDB adds about a second to the launcher's start.
pub fn seed_world_with_table() -> Value {
    let mut world = seed_world();
    world["dynamodb_tables"] = json!([{"name": STORE_TABLE, "region": STORE_REGION}]);
    world
}

/// Requests the emulator received since its start or the last `Moto::reset_requests`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestCounts {
    /// How long since then.
    pub elapsed: Duration,
    /// Requests per (access key id, service, operation), e.g. `("daemon-east", "dynamodb",
    /// "GetItem")`. Faulted requests count too: they were received.
    pub counts: BTreeMap<(String, String, String), u64>,
}

impl Moto {
    /// Starts the launcher with `world` created in it.
    pub fn start(dir: &Path, world: &Value) -> Moto {
        let seed = dir.join("world.json");
        std::fs::write(&seed, world.to_string()).unwrap();
        let mut child = Command::new(python())
            .arg(root().join("tests/python/moto_launcher.py"))
            .arg("--seed")
            .arg(&seed)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("moto.log")).unwrap(),
            ))
            .spawn()
            .expect("start the moto launcher");
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(rest) = line.strip_prefix("READY ") else {
            let log = std::fs::read_to_string(dir.join("moto.log")).unwrap_or_default();
            panic!("the moto launcher did not start: {line:?}\n{log}");
        };
        // `READY <port> dns=<dns port> <ids>`.
        let (port, rest) = rest.trim().split_once(' ').unwrap();
        let (dns_port, ids) = rest
            .strip_prefix("dns=")
            .and_then(|r| r.split_once(' '))
            .unwrap_or_else(|| panic!("no dns=<port> in the launcher's READY line: {line:?}"));
        let ids: Value = serde_json::from_str(ids).unwrap();
        Moto {
            child,
            _stdin: stdin,
            port: port.parse().unwrap(),
            dns_port: dns_port.parse().unwrap(),
            hosted_zone_id: ids["hosted_zone_id"].as_str().unwrap().to_string(),
            health_checks: ids["health_checks"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
        }
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its DNS data plane's address, for UDP and TCP.
    pub fn dns_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.dns_port))
    }

    /// Sets what Route53's checkers report about a health check: GetHealthCheckStatus answers
    /// it, and the DNS data plane judges the check's records by it.
    pub fn set_checkers(&self, health_check_id: &str, healthy: u32, total: u32) {
        self.admin(
            "POST",
            "/_dr/health",
            Some(json!({"health_check_id": health_check_id, "healthy": healthy, "total": total})),
        );
    }

    /// Adds a fault rule of the DNS server (see the launcher's "Route53's data plane").
    pub fn dns_fault(&self, rule: Value) {
        self.admin("POST", "/_dr/dns/faults", Some(rule));
    }

    /// Removes every fault rule of the DNS server.
    pub fn clear_dns_faults(&self) {
        self.admin("DELETE", "/_dr/dns/faults", None);
    }

    /// Every DNS query the data plane received: name, type, transport, rcode, answers, fault.
    pub fn dns_queries(&self) -> Vec<Value> {
        self.admin("GET", "/_dr/dns/queries", None)["queries"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// An admin call; panics unless it answers 200.
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, text) = http(self.port, method, path, body.map(|b| b.to_string()));
        assert_eq!(status, 200, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The whole emulated state, as the launcher dumps it.
    pub fn state(&self) -> Value {
        self.admin("GET", "/_dr/state", None)
    }

    /// Every call the emulator received.
    pub fn calls(&self) -> Vec<Value> {
        self.admin("GET", "/_dr/calls", None)["calls"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Mutations applied, by operation.
    pub fn applied(&self) -> std::collections::BTreeMap<String, u64> {
        self.admin("GET", "/_dr/applied", None)
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect()
    }

    /// Adds a fault rule (see the launcher's docstring).
    pub fn fault(&self, rule: Value) {
        self.admin("POST", "/_dr/faults", Some(rule));
    }

    /// Adds a fault rule that fires only on calls signed with `access_key` (its `access_key` is
    /// set to it), e.g. `client_fault("daemon-east", json!({"service": "dynamodb", "kind":
    /// "error"}))`: every DynamoDB call of that client answers 500, the others' are served.
    pub fn client_fault(&self, access_key: &str, mut rule: Value) {
        rule["access_key"] = json!(access_key);
        self.fault(rule);
    }

    /// Requests received since the start or the last `reset_requests`, per access key, service
    /// and operation.
    pub fn requests(&self) -> RequestCounts {
        let answer = self.admin("GET", "/_dr/requests", None);
        RequestCounts {
            elapsed: Duration::from_secs_f64(answer["seconds"].as_f64().unwrap().max(0.0)),
            counts: answer["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let s = |k: &str| r[k].as_str().unwrap().to_string();
                    (
                        (s("access_key"), s("service"), s("op")),
                        r["count"].as_u64().unwrap(),
                    )
                })
                .collect(),
        }
    }

    /// DynamoDB requests received since the start or the last `reset_requests`, per (access
    /// key, operation).
    pub fn dynamodb_requests(&self) -> BTreeMap<(String, String), u64> {
        self.requests()
            .counts
            .into_iter()
            .filter(|((_, service, _), _)| service == "dynamodb")
            .map(|((key, _, op), n)| ((key, op), n))
            .collect()
    }

    /// Starts counting requests afresh.
    pub fn reset_requests(&self) {
        self.admin("DELETE", "/_dr/requests", None);
    }

    /// A DynamoDB client of the emulator in `region`, signing with `access_key` (the secret is
    /// `testing`). It never retries, so each call is one request: faults reach the caller and
    /// the counts are exact.
    pub fn dynamodb_client(&self, access_key: &str, region: &str) -> aws_sdk_dynamodb::Client {
        use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region, retry::RetryConfig};
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new(access_key, "testing", None, None, "test"))
            .retry_config(RetryConfig::disabled())
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// Removes every fault rule, the DNS server's too, and lets held requests go (unapplied).
    pub fn clear_faults(&self) {
        self.admin("DELETE", "/_dr/faults", None);
    }

    /// Sets the slow operations' durations, in seconds.
    pub fn timings(&self, timings: Value) {
        self.admin("POST", "/_dr/timings", Some(timings));
    }

    /// Requests being held by a `hold` fault right now.
    pub fn holding(&self) -> u64 {
        self.admin("GET", "/_dr/calls", None)["holding"]
            .as_u64()
            .unwrap()
    }

    /// Waits until `condition` holds, for at most `limit`.
    pub fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        mut condition: impl FnMut(&Moto) -> bool,
    ) {
        let start = Instant::now();
        while !condition(self) {
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Who is the writer of the global cluster.
    pub fn writer(&self) -> String {
        let state = self.state();
        let members = state["global_clusters"]["yt-video-creator-global"]["members"]
            .as_array()
            .unwrap()
            .clone();
        members
            .iter()
            .find(|m| m[1].as_bool().unwrap())
            .map(|m| {
                m[0].as_str()
                    .unwrap()
                    .split(':')
                    .nth(3)
                    .unwrap()
                    .to_string()
            })
            .unwrap_or_default()
    }

    /// The regions the latency records answer from.
    pub fn dns_regions(&self) -> Vec<String> {
        let state = self.state();
        let zone = &state["zones"][&self.hosted_zone_id];
        let mut regions: Vec<String> = zone
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("api.ytvideocreator.com")
            })
            .filter_map(|r| r["region"].as_str().map(str::to_string))
            .collect();
        regions.sort();
        regions
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port`, bounded by a 30 s timeout.
pub fn http(port: u16, method: &str, path: &str, body: Option<String>) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let text = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, text)
}

/// A loopback HTTP server answering every request with 200, standing in for each region's
/// `/health`. Counts the requests; stops when dropped.
pub struct HealthServer {
    /// Its port.
    pub port: u16,
    /// Requests answered.
    pub hits: Arc<AtomicU32>,
    /// While set, requests are held unanswered (for at most 60 s each).
    pub hold: Arc<AtomicBool>,
    /// Requests being held now.
    pub held: Arc<AtomicU32>,
    /// Paths that start with one of these answer 503.
    pub failing: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl HealthServer {
    /// Starts it.
    pub fn start() -> HealthServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let hold = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicU32::new(0));
        let failing: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let (h, s, hd, hl, f) = (
            hits.clone(),
            stop.clone(),
            hold.clone(),
            held.clone(),
            failing.clone(),
        );
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 2048];
                        let n = stream.read(&mut buf).unwrap_or(0);
                        let request = String::from_utf8_lossy(&buf[..n]).to_string();
                        let path = request.split(' ').nth(1).unwrap_or("").to_string();
                        if f.lock()
                            .unwrap()
                            .iter()
                            .any(|p| path.starts_with(p.as_str()))
                        {
                            let _ = stream.write_all(
                                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown",
                            );
                            continue;
                        }
                        if hd.load(Ordering::SeqCst) {
                            hl.fetch_add(1, Ordering::SeqCst);
                            let start = Instant::now();
                            while hd.load(Ordering::SeqCst)
                                && start.elapsed() < Duration::from_secs(60)
                            {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            hl.fetch_sub(1, Ordering::SeqCst);
                            continue;
                        }
                        h.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        HealthServer {
            port,
            hits,
            hold,
            held,
            failing,
            stop,
        }
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Writes `dr.toml` in `dir`: the example config with `backend = "aws"`, the emulator's ids,
/// `/health` on `health`, and fast polling. `endpoint` goes in `[aws] endpoint_url` when given.
pub fn aws_config(
    dir: &Path,
    moto: &Moto,
    health: &HealthServer,
    endpoint: Option<&str>,
) -> PathBuf {
    let mut text = std::fs::read_to_string(root().join("config/example.toml")).unwrap();
    let replace = |text: &mut String, from: &str, to: &str| {
        assert!(text.contains(from), "example.toml lacks {from}");
        *text = text.replacen(from, to, 1);
    };
    replace(&mut text, "backend = \"sim\"", "backend = \"aws\"");
    replace(
        &mut text,
        "hosted_zone_id = \"Z0431234ABCDEFGHIJKL\"",
        &format!("hosted_zone_id = \"{}\"", moto.hosted_zone_id),
    );
    replace(
        &mut text,
        "health_check_id = \"0f1e2d3c-east-4b5a-8c7d-000000000001\"",
        &format!("health_check_id = \"{}\"", moto.health_checks["us-east-1"]),
    );
    replace(
        &mut text,
        "health_check_id = \"0f1e2d3c-west-4b5a-8c7d-000000000002\"",
        &format!("health_check_id = \"{}\"", moto.health_checks["us-west-2"]),
    );
    replace(
        &mut text,
        "health_url = \"https://api-east.ytvideocreator.com/health\"",
        &format!(
            "health_url = \"http://127.0.0.1:{}/east/health\"",
            health.port
        ),
    );
    replace(
        &mut text,
        "health_url = \"https://api-west.ytvideocreator.com/health\"",
        &format!(
            "health_url = \"http://127.0.0.1:{}/west/health\"",
            health.port
        ),
    );
    // The step poll interval is the one under [failover].
    let failover = text.find("[failover]").unwrap();
    let at = failover + text[failover..].find("poll_interval = \"10s\"").unwrap();
    text.replace_range(
        at..at + "poll_interval = \"10s\"".len(),
        "poll_interval = \"250ms\"",
    );
    replace(&mut text, "interval = \"5s\"", "interval = \"200ms\"");
    replace(
        &mut text,
        "attempt_timeout = \"10s\"",
        "attempt_timeout = \"3s\"",
    );
    replace(
        &mut text,
        "route53_requests_per_second = 2",
        "route53_requests_per_second = 5",
    );
    if let Some(endpoint) = endpoint {
        replace(
            &mut text,
            "# endpoint_url = \"http://127.0.0.1:5000\"",
            &format!("endpoint_url = \"{endpoint}\""),
        );
    }
    let path = dir.join("dr.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A `dr` command with fake credentials and nothing from the caller's AWS environment.
pub fn dr(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dr"));
    for var in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_SESSION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "DR_API_URL",
        "DR_API_TOKEN",
    ] {
        command.env_remove(var);
    }
    command
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/dr-test-aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/dr-test-aws-credentials",
        )
        .env("NO_COLOR", "1")
        .arg("--config")
        .arg(config);
    command
}
