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
    let route53: Vec<f64> = moto
        .calls()
        .iter()
        .filter(|c| c["service"] == "route53")
        .map(|c| c["t"].as_f64().unwrap())
        .collect();
    // Within one process the limiter spaces calls; across processes each starts afresh, so look
    // at gaps inside each `dr status` (gaps under 1 s apart from process starts).
    let mut gaps: Vec<f64> = route53
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g < 1.0)
        .collect();
    gaps.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "Route53 at route53_requests_per_second = 2: {} calls in 3 `dr status`, smallest gap within a process {:.3} s",
        route53.len(),
        gaps.first().copied().unwrap_or(f64::NAN)
    );
}
