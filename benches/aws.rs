//! The AWS providers against the emulator: what a failover costs in calls and in time beyond the
//! emulated waits, and how the Route53 rate limit spaces calls. Run with `cargo bench --bench
//! aws` after `scripts/test.sh` has made `.venv`. Prints the figures recorded in BENCHMARKS.md.

#[path = "../tests/common/moto.rs"]
#[allow(dead_code)]
mod moto;

use moto::{HealthServer, Moto, aws_config, dr, seed_world};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const RUNS: usize = 5;

/// How long the daemon watches the emulator for its footprint.
const DAEMON_SECONDS: u64 = 65;

/// (utime + stime in seconds, VmHWM in KiB) of a process.
fn footprint(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After the command name: state is field 3, utime 14, stime 15 (1-based, in the full line).
    let ticks = |i: usize| fields[i - 3].parse::<f64>().unwrap();
    let clk = 100.0; // CLK_TCK on Linux x86_64
    let cpu = (ticks(14) + ticks(15)) / clk;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    (cpu, hwm)
}

fn main() {
    let mut walls = Vec::new();
    let mut calls: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut total_calls = Vec::new();
    for _ in 0..RUNS {
        let dir = tempfile::tempdir().unwrap();
        let moto = Moto::start(dir.path(), &seed_world());
        let health = HealthServer::start();
        let config = aws_config(dir.path(), &moto, &health, Some(&moto.endpoint()));
        let start = Instant::now();
        let out = dr(&config)
            .args(["failover", "--to", "us-west-2", "--yes"])
            .output()
            .unwrap();
        let wall = start.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        walls.push(wall);
        let log = moto.calls();
        total_calls.push(log.len());
        let mut by_op: BTreeMap<String, usize> = BTreeMap::new();
        for call in &log {
            *by_op
                .entry(call["op"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        for (op, n) in by_op {
            calls.entry(op).or_default().push(n);
        }
    }
    walls.sort();
    total_calls.sort();
    // The launcher's emulated durations on the critical path: promotion 1 s pending + 2 s
    // failing over, in parallel with the node group's 2 s; then the DNS change's 1 s; then
    // verify's three probes 200 ms apart.
    let critical = Duration::from_millis(3_000 + 1_000 + 400);
    println!("failover against the emulator, {RUNS} runs (fresh emulator each)");
    println!(
        "  wall: min {:.2} s, median {:.2} s, max {:.2} s (emulated waits on the critical path: {:.1} s)",
        walls[0].as_secs_f64(),
        walls[RUNS / 2].as_secs_f64(),
        walls[RUNS - 1].as_secs_f64(),
        critical.as_secs_f64()
    );
    println!(
        "  AWS calls per failover: median {} (min {}, max {})",
        total_calls[RUNS / 2],
        total_calls[0],
        total_calls[RUNS - 1]
    );
    for (op, mut counts) in calls {
        counts.sort();
        println!("    {op}: median {}", counts[counts.len() / 2]);
    }

    // Route53's rate limit: `dr status` with many health checks in one account. The example's
    // two regions make four Route53 calls; the spacing between them is the limiter's.
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path(), &seed_world());
    let health = HealthServer::start();
    let config = aws_config(dir.path(), &moto, &health, Some(&moto.endpoint()));
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "route53_requests_per_second = 5",
        "route53_requests_per_second = 2",
    );
    std::fs::write(&config, text).unwrap();
    for _ in 0..3 {
        let out = dr(&config).args(["status"]).output().unwrap();
        assert!(out.status.success());
    }
    // Each `dr status` starts with DescribeGlobalClusters; gaps are measured between Route53
    // calls of one process only (each process has its own limiter).
    let mut gaps: Vec<f64> = Vec::new();
    let mut last: Option<f64> = None;
    let mut route53 = 0;
    for call in moto.calls() {
        let t = call["t"].as_f64().unwrap();
        if call["op"] == "DescribeGlobalClusters" {
            last = None;
        } else if call["service"] == "route53" {
            route53 += 1;
            if let Some(previous) = last {
                gaps.push(t - previous);
            }
            last = Some(t);
        }
    }
    gaps.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "Route53 at route53_requests_per_second = 2: {} calls in 3 `dr status`, smallest gap within a process {:.3} s",
        route53,
        gaps.first().copied().unwrap_or(f64::NAN)
    );

    // The daemon's own cost against the emulator: two regions, 10 s polls, real time.
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path(), &seed_world());
    let health = HealthServer::start();
    let config = aws_config(dir.path(), &moto, &health, Some(&moto.endpoint()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "listen = \"127.0.0.1:8080\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&config, text).unwrap();
    let mut daemon = dr(&config)
        .arg("daemon")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(DAEMON_SECONDS));
    let (cpu, hwm) = footprint(daemon.id());
    let ticks = moto
        .calls()
        .iter()
        .filter(|c| c["op"] == "GetHealthCheckStatus")
        .count();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    println!(
        "daemon on the emulator, 2 regions, 10 s polls, {DAEMON_SECONDS} s: CPU {cpu:.2} s ({:.3}% of one core), peak RSS {hwm} KiB, {} AWS calls ({ticks} GetHealthCheckStatus)",
        100.0 * cpu / DAEMON_SECONDS as f64,
        moto.calls().len()
    );
}
