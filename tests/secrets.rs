//! No secret in any output: the daemon runs with every secret set (API tokens, a Slack webhook
//! URL whose path is the credential, a PagerDuty routing key), with both receivers down so every
//! delivery fails and is logged, in text and in JSON logs; its stdout, stderr, `/metrics`,
//! `/api/v1/status`, `/api/v1/runs`, the status page and `dr status` are searched for every
//! secret. A token line with its fields swapped is refused without showing the secret.

mod common;

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DR: &str = env!("CARGO_BIN_EXE_dr");
const OPERATE: &str = "op-token-secret-7f3a9c-0001";
const READ: &str = "read-token-secret-5b2e8d-0002";
const SLACK_PATH: &str = "T0SECRET/B0SECRET/slack-path-secret-4c1d";
const ROUTING_KEY: &str = "pd-routing-key-secret-9e6f";

fn setup(port: u16) -> tempfile::TempDir {
    common::fast_sim_dir(port)
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(DR);
    command
        .args(args)
        .current_dir(dir)
        .env("DR_CONFIG", dir.join("dr.toml"))
        .env("USER", "tester")
        .stdin(Stdio::null());
    command
}

/// One HTTP/1.0 GET on loopback; the whole answer, headers included.
fn get(port: u16, path: &str, token: Option<&str>) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n{auth}\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [OPERATE, READ, SLACK_PATH, ROUTING_KEY, "slack-path-secret"] {
        assert!(
            !text.contains(secret),
            "{what} shows the secret `{secret}`:\n{text}"
        );
    }
}

fn run_with_every_secret(log_format: &str) {
    let port = common::free_port();
    let dir = setup(port);
    let slack_down = common::free_port();
    let pagerduty_down = common::free_port();
    let mut daemon = command(dir.path(), &["daemon", "--log-format", log_format])
        .env(
            "DR_API_TOKENS",
            format!("oncall:operate:{OPERATE},grafana:read:{READ}"),
        )
        .env(
            "DR_SLACK_WEBHOOK_URL",
            format!("http://127.0.0.1:{slack_down}/services/{SLACK_PATH}"),
        )
        .env("DR_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
        .env(
            "DR_PAGERDUTY_URL",
            format!("http://127.0.0.1:{pagerduty_down}/v2/enqueue"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    for stream in [
        Box::new(daemon.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(daemon.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the daemon's API did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A failover through the API: run start, step and end notices, all failing to deliver.
    let failover = command(dir.path(), &["failover", "--to", "us-west-2", "--yes"])
        .env("DR_API_TOKEN", OPERATE)
        .output()
        .unwrap();
    let mut outputs = vec![(
        "dr failover".to_string(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&failover.stdout),
            String::from_utf8_lossy(&failover.stderr)
        ),
    )];
    assert_eq!(failover.status.code(), Some(0), "{}", outputs[0].1);
    let mut log = String::new();
    let mut failures = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Both receivers' failed deliveries are logged before the test goes on.
    while failures < 2 {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no failed delivery was logged:\n{log}"));
        if line.contains("notification not delivered") {
            failures += 1;
        }
        log.push_str(&line);
        log.push('\n');
    }
    for (path, token) in [
        ("/metrics", None),
        ("/health", None),
        ("/ready", None),
        ("/", None),
        ("/api/v1/status", Some(READ)),
        ("/api/v1/runs", Some(READ)),
        ("/api/v1/status", Some("wrong-token-0000000000")),
    ] {
        outputs.push((format!("GET {path}"), get(port, path, token)));
    }
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["runs", "--json"],
    ] {
        let out = command(dir.path(), &args).output().unwrap();
        outputs.push((
            format!("dr {}", args.join(" ")),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    daemon.wait().unwrap();
    log.extend(lines.iter().map(|l| l + "\n"));
    assert!(log.contains("notification not delivered"), "{log}");
    assert_no_secret(&format!("the daemon's {log_format} log"), &log);
    for (what, text) in outputs {
        assert_no_secret(&what, &text);
    }
}

#[test]
fn no_secret_reaches_a_text_log_or_any_answer() {
    run_with_every_secret("text");
}

#[test]
fn no_secret_reaches_a_json_log_or_any_answer() {
    run_with_every_secret("json");
}

#[test]
fn a_token_line_with_swapped_fields_is_refused_without_the_secret() {
    let dir = setup(common::free_port());
    for line in [
        format!("oncall:{OPERATE}:operate"),
        format!("{OPERATE}:operate:oncall"),
        format!("operate:oncall:{OPERATE}"),
    ] {
        let out = command(dir.path(), &["daemon"])
            .env("DR_API_TOKENS", &line)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{line}: {text}");
        assert!(text.contains("DR_API_TOKENS:1"), "{text}");
        assert_no_secret(&line, &text);
    }
}

#[test]
fn two_tokens_with_one_secret_stop_the_daemon_at_start_naming_both() {
    let dir = setup(common::free_port());
    let mut daemon = command(dir.path(), &["daemon"])
        .env(
            "DR_API_TOKENS",
            format!("grafana:read:{OPERATE},oncall:operate:{OPERATE}"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Refused at start: a daemon still running after 20 s accepted the tokens.
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = daemon.kill();
            panic!("the daemon started with two tokens sharing a secret");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = daemon.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("`grafana`") && text.contains("`oncall`"),
        "{text}"
    );
    assert_no_secret("the refusal", &text);
}
