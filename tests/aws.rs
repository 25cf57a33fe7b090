//! The AWS providers, driven by the `dr` binary with `backend = "aws"`, against moto (with the
//! launcher in `tests/python/moto_launcher.py` filling moto's gaps).
//!
//! Each test starts its own emulator on a free loopback port and its own `/health` server on
//! another, so the tests run in parallel and share nothing.

mod common;

use common::moto::{HealthServer, Moto, aws_config, dr, seed_world};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Output;

fn run(config: &Path, args: &[&str]) -> Output {
    dr(config).args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    moto: Moto,
    health: HealthServer,
    config: std::path::PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path(), &seed_world());
    let health = HealthServer::start();
    let config = aws_config(dir.path(), &moto, &health, Some(&moto.endpoint()));
    Setup {
        _dir: dir,
        moto,
        health,
        config,
    }
}

/// Node group and Auto Scaling group sizes in the emulator, by `region/name`.
fn sizes(moto: &Moto) -> Value {
    let state = moto.state();
    let mut out = serde_json::Map::new();
    for (key, group) in state["nodegroups"].as_object().unwrap() {
        out.insert(
            key.clone(),
            json!([
                group["scaling"]["minSize"],
                group["scaling"]["maxSize"],
                group["scaling"]["desiredSize"],
                group["status"]
            ]),
        );
    }
    for (key, group) in state["autoscaling_groups"].as_object().unwrap() {
        out.insert(
            key.clone(),
            json!([group["min"], group["max"], group["desired"]]),
        );
    }
    Value::Object(out)
}

fn failed_over_sizes() -> Value {
    json!({
        "us-east-1/yt-video-creator-prod/general": [3, 10, 3, "ACTIVE"],
        "us-west-2/yt-video-creator-west/general": [3, 10, 3, "ACTIVE"],
        "us-east-1/yt-video-creator-prod-spot-workers": [0, 50, 0],
        "us-west-2/yt-video-creator-west-spot-workers": [0, 50, 0],
    })
}

#[test]
fn a_failover_then_a_switchover_back_run_end_to_end_on_the_emulator() {
    let s = setup();
    assert_eq!(s.moto.writer(), "us-east-1");
    assert_eq!(s.moto.dns_regions(), vec!["us-east-1", "us-west-2"]);

    let out = run(
        &s.config,
        &[
            "failover",
            "--to",
            "us-west-2",
            "--yes",
            "--reason",
            "moto e2e",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(s.moto.writer(), "us-west-2");
    assert_eq!(sizes(&s.moto), failed_over_sizes());
    assert_eq!(s.moto.dns_regions(), vec!["us-west-2"]);
    assert!(
        s.health.hits.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "verify probed /health"
    );
    let applied = s.moto.applied();
    assert_eq!(
        applied.get("FailoverGlobalCluster"),
        Some(&1),
        "{applied:?}"
    );
    assert_eq!(
        applied.get("UpdateNodegroupConfig"),
        Some(&1),
        "{applied:?}"
    );
    assert_eq!(
        applied.get("UpdateAutoScalingGroup"),
        Some(&1),
        "{applied:?}"
    );
    assert_eq!(
        applied.get("ChangeResourceRecordSets"),
        Some(&1),
        "{applied:?}"
    );
    // The promotion was sent to the target region, with AllowDataLoss.
    let calls = s.moto.calls();
    let failover: Vec<&Value> = calls
        .iter()
        .filter(|c| c["op"] == "FailoverGlobalCluster")
        .collect();
    assert_eq!(failover.len(), 1);
    assert_eq!(failover[0]["region"], "us-west-2");

    let out = run(
        &s.config,
        &[
            "switchover",
            "--to",
            "us-east-1",
            "--yes",
            "--reason",
            "failback",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(s.moto.writer(), "us-east-1");
    // A planned switchover keeps every healthy region answering.
    assert_eq!(s.moto.dns_regions(), vec!["us-east-1", "us-west-2"]);
    let applied = s.moto.applied();
    assert_eq!(
        applied.get("SwitchoverGlobalCluster"),
        Some(&1),
        "{applied:?}"
    );
    // us-east-1 was already at its failover sizes: nothing to scale.
    assert_eq!(
        applied.get("UpdateNodegroupConfig"),
        Some(&1),
        "{applied:?}"
    );

    let out = run(&s.config, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["writer_region"], "us-east-1", "{status}");
    // Every signal was read for real: Route53's checkers, the /health probe, and the lag from
    // CloudWatch (answered by the launcher in the SDK's CBOR protocol) for the secondary only.
    let west = &status["regions"][1];
    assert_eq!(west["name"], "us-west-2");
    assert_eq!(west["checkers"], "16/16", "{status}");
    assert_eq!(west["probe"], "healthy", "{status}");
    assert_eq!(west["lag_seconds"], 1.5, "{status}");
    assert_eq!(status["regions"][0]["lag_seconds"], Value::Null, "{status}");
}
