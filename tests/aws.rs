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
use std::time::Duration;

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

/// `key=value` pairs of a printed operation.
fn pairs(text: &str) -> std::collections::BTreeMap<String, String> {
    text.split([' ', '(', ')'])
        .filter_map(|word| word.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One mutating call as a comparable line, from `dr`'s printed dry run.
fn printed_call(line: &str) -> String {
    let operation = line.split("would call ").nth(1).unwrap();
    let (name, rest) = operation.split_once(' ').unwrap();
    let op = name.split(':').nth(1).unwrap();
    let p = pairs(rest);
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    match op {
        "FailoverGlobalCluster" => format!(
            "{op} {} {} {} AllowDataLoss={}",
            get("region"),
            get("GlobalClusterIdentifier"),
            get("TargetDbClusterIdentifier"),
            get("AllowDataLoss")
        ),
        "SwitchoverGlobalCluster" => format!(
            "{op} {} {} {}",
            get("region"),
            get("GlobalClusterIdentifier"),
            get("TargetDbClusterIdentifier")
        ),
        "UpdateNodegroupConfig" => format!(
            "{op} {} {}/{} {}/{}/{}",
            get("region"),
            get("cluster"),
            get("nodegroup"),
            get("min"),
            get("max"),
            get("desired")
        ),
        "UpdateAutoScalingGroup" => format!(
            "{op} {} {} {}/{}/{}",
            get("region"),
            get("AutoScalingGroupName"),
            get("MinSize"),
            get("MaxSize"),
            get("DesiredCapacity")
        ),
        "ChangeResourceRecordSets" => {
            let mut changes: Vec<String> = rest
                .split('[')
                .skip(1)
                .map(|c| {
                    let action = c.split(' ').next().unwrap();
                    let id = pairs(c)["SetIdentifier"].clone();
                    format!("{action} SetIdentifier={id}")
                })
                .collect();
            changes.sort();
            format!("{op} global {} {}", get("HostedZoneId"), changes.join(";"))
        }
        other => panic!("unexpected operation {other} in {line}"),
    }
}

/// One mutating call as a comparable line, from the emulator's log.
fn received_call(call: &Value) -> String {
    let op = call["op"].as_str().unwrap();
    let region = call["region"].as_str().unwrap();
    let p = &call["params"];
    let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
    match op {
        "FailoverGlobalCluster" => format!(
            "{op} {region} {} {} AllowDataLoss={}",
            s("GlobalClusterIdentifier"),
            s("TargetDbClusterIdentifier"),
            s("AllowDataLoss")
        ),
        "SwitchoverGlobalCluster" => format!(
            "{op} {region} {} {}",
            s("GlobalClusterIdentifier"),
            s("TargetDbClusterIdentifier")
        ),
        "UpdateNodegroupConfig" => format!(
            "{op} {region} {}/{} {}/{}/{}",
            s("cluster"),
            s("nodegroup"),
            s("min"),
            s("max"),
            s("desired")
        ),
        "UpdateAutoScalingGroup" => format!(
            "{op} {region} {} {}/{}/{}",
            s("AutoScalingGroupName"),
            s("MinSize"),
            s("MaxSize"),
            s("DesiredCapacity")
        ),
        "ChangeResourceRecordSets" => {
            let changes: Vec<String> = p["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            format!("{op} global {} {}", s("HostedZoneId"), changes.join(";"))
        }
        other => panic!("unexpected mutation {other}"),
    }
}

const MUTATING: &[&str] = &[
    "FailoverGlobalCluster",
    "SwitchoverGlobalCluster",
    "UpdateNodegroupConfig",
    "UpdateAutoScalingGroup",
    "ChangeResourceRecordSets",
];

fn mutations_received(moto: &Moto) -> Vec<Value> {
    moto.calls()
        .into_iter()
        .filter(|c| MUTATING.contains(&c["op"].as_str().unwrap()))
        .collect()
}

#[test]
fn a_dry_run_reads_for_real_changes_nothing_and_prints_exactly_what_a_real_run_calls() {
    let s = setup();
    let before = serde_json::to_string(&s.moto.state()).unwrap();

    let dry = run(
        &s.config,
        &["failover", "--to", "us-west-2", "--dry-run", "--yes"],
    );
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));
    let after = serde_json::to_string(&s.moto.state()).unwrap();
    assert_eq!(before, after, "a dry run changed the emulator's state");
    assert!(
        mutations_received(&s.moto).is_empty(),
        "{:?}",
        s.moto.calls()
    );
    // Every read was made for real.
    let ops: std::collections::BTreeSet<String> = s
        .moto
        .calls()
        .iter()
        .map(|c| c["op"].as_str().unwrap().to_string())
        .collect();
    for read in [
        "DescribeGlobalClusters",
        "DescribeNodegroup",
        "DescribeAutoScalingGroups",
        "ListResourceRecordSets",
        "GetHealthCheckStatus",
        "GetMetricData",
    ] {
        assert!(
            ops.contains(read),
            "the dry run did not read {read}: {ops:?}"
        );
    }
    let stdout = String::from_utf8_lossy(&dry.stdout);
    let mut printed: Vec<String> = stdout
        .lines()
        .filter(|l| l.starts_with("DRY RUN") && l.contains("would call "))
        .map(printed_call)
        .collect();
    printed.sort();
    assert_eq!(printed.len(), 4, "{}", text(&dry));

    let real = run(&s.config, &["failover", "--to", "us-west-2", "--yes"]);
    assert_eq!(real.status.code(), Some(0), "{}", text(&real));
    let mut made: Vec<String> = mutations_received(&s.moto)
        .iter()
        .map(received_call)
        .collect();
    made.sort();
    assert_eq!(printed, made);
}

#[test]
fn a_dry_run_drill_rehearses_against_the_emulator_and_changes_nothing() {
    let s = setup();
    let before = serde_json::to_string(&s.moto.state()).unwrap();
    let scenario = common::moto::root().join("runbooks/drills/auto-primary-outage.toml");
    let out = run(
        &s.config,
        &[
            "drill",
            "--scenario",
            scenario.to_str().unwrap(),
            "--dry-run",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("against AWS"), "{stdout}");
    assert!(
        stdout.contains("dr failover --from us-east-1 --to us-west-2 --dry-run"),
        "{stdout}"
    );
    assert!(stdout.contains("not injected"), "{stdout}");
    let would: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("would call "))
        .collect();
    assert_eq!(would.len(), 4, "{stdout}");
    assert_eq!(before, serde_json::to_string(&s.moto.state()).unwrap());
    assert!(mutations_received(&s.moto).is_empty());
}

/// Where a kill lands: a request the emulator (or the `/health` server) holds unanswered, so
/// the `dr` process is known to be exactly there when it is killed.
enum KillPoint {
    /// Hold this emulator call (a fault rule).
    Moto(Value),
    /// Hold the target's `/health` once the record change has been applied.
    VerifyProbe,
}

/// Starts a failover, SIGKILLs `dr` at `point`, runs `dr resume`, and checks the final state and
/// that each mutation was applied once.
fn kill_and_resume(point: KillPoint) {
    let s = setup();
    if let KillPoint::Moto(rule) = &point {
        s.moto.fault(rule.clone());
    }
    let dir = s.config.parent().unwrap().to_path_buf();
    let mut child = dr(&s.config)
        .args([
            "failover",
            "--to",
            "us-west-2",
            "--yes",
            "--reason",
            "kill test",
        ])
        .stdout(std::fs::File::create(dir.join("killed.out")).unwrap())
        .stderr(std::fs::File::create(dir.join("killed.err")).unwrap())
        .spawn()
        .unwrap();
    let limit = Duration::from_secs(60);
    match point {
        KillPoint::Moto(rule) => s
            .moto
            .wait_until(limit, &format!("{rule}"), |m| m.holding() >= 1),
        KillPoint::VerifyProbe => {
            s.moto.wait_until(limit, "the record change", |m| {
                m.applied().get("ChangeResourceRecordSets") == Some(&1)
            });
            s.health
                .hold
                .store(true, std::sync::atomic::Ordering::SeqCst);
            s.moto.wait_until(limit, "a held verify probe", |_| {
                s.health.held.load(std::sync::atomic::Ordering::SeqCst) >= 1
            });
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = std::fs::read_to_string(dir.join("killed.err")).unwrap_or_default();
    assert!(
        !killed.contains("run finished"),
        "the run finished before the kill:\n{killed}"
    );
    s.moto.clear_faults();
    s.health
        .hold
        .store(false, std::sync::atomic::Ordering::SeqCst);

    let resumed = run(
        &s.config,
        &["resume", "--yes", "--reason", "after the kill"],
    );
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "killed run:\n{killed}\n{}",
        text(&resumed)
    );
    assert!(
        String::from_utf8_lossy(&resumed.stderr).contains("run finished: succeeded"),
        "{}",
        text(&resumed)
    );
    assert_eq!(s.moto.writer(), "us-west-2");
    assert_eq!(sizes(&s.moto), failed_over_sizes());
    assert_eq!(s.moto.dns_regions(), vec!["us-west-2"]);
    // Each mutation took effect exactly once. UpdateNodegroupConfig may be sent again with the
    // same request token (the launcher then returns the same update), which is what the token
    // allows; it never starts a second update.
    let applied = s.moto.applied();
    for op in [
        "FailoverGlobalCluster",
        "UpdateNodegroupConfig",
        "UpdateAutoScalingGroup",
        "ChangeResourceRecordSets",
    ] {
        assert_eq!(
            applied.get(op),
            Some(&1),
            "{op}: {applied:?}\nkilled run:\n{killed}"
        );
    }
    assert_eq!(s.moto.state()["eks_updates"], 1);
    // And issued no more often than idempotency allows. A request held and dropped by the
    // test never reached AWS's handler and may be sent again; of the rest, a change that is
    // not idempotent went out once, and node group updates all carried the same token.
    let received: Vec<Value> = mutations_received(&s.moto)
        .into_iter()
        .filter(|c| c["outcome"] == "ok")
        .collect();
    for op in [
        "FailoverGlobalCluster",
        "UpdateAutoScalingGroup",
        "ChangeResourceRecordSets",
    ] {
        let n = received.iter().filter(|c| c["op"] == op).count();
        assert_eq!(n, 1, "{op} issued {n} times\nkilled run:\n{killed}");
    }
    let tokens: std::collections::BTreeSet<String> = received
        .iter()
        .filter(|c| c["op"] == "UpdateNodegroupConfig")
        .map(|c| {
            c["params"]["clientRequestToken"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
}

#[test]
fn kill_at_the_start_of_the_run_then_resume() {
    // The run is stored and preflight has started: its first call is the target's health check.
    kill_and_resume(KillPoint::Moto(json!({
        "operation": "GetHealthCheckStatus", "kind": "hold", "count": 1
    })));
}

#[test]
fn kill_at_the_boundary_after_preflight_then_resume() {
    kill_and_resume(KillPoint::Moto(json!({
        "operation": "FailoverGlobalCluster", "kind": "hold", "count": 1
    })));
}

#[test]
fn kill_while_waiting_for_the_promotion_then_resume() {
    kill_and_resume(KillPoint::Moto(json!({
        "operation": "DescribeGlobalClusters", "kind": "hold", "count": 1,
        "after_op": "FailoverGlobalCluster"
    })));
}

#[test]
fn kill_while_waiting_for_the_node_group_update_then_resume() {
    kill_and_resume(KillPoint::Moto(json!({
        "operation": "DescribeUpdate", "kind": "hold", "count": 1
    })));
}

#[test]
fn kill_while_waiting_for_the_auto_scaling_group_then_resume() {
    kill_and_resume(KillPoint::Moto(json!({
        "operation": "DescribeAutoScalingGroups", "kind": "hold", "count": 1,
        "after_op": "UpdateAutoScalingGroup"
    })));
}

#[test]
fn kill_at_the_boundary_after_promotion_and_scaling_then_resume() {
    // The first record read is repoint-dns's: preflight, promote-db and scale-target are done.
    kill_and_resume(KillPoint::Moto(json!({
        "operation": "ListResourceRecordSets", "kind": "hold", "count": 1
    })));
}

#[test]
fn kill_while_waiting_for_the_dns_change_then_resume() {
    kill_and_resume(KillPoint::Moto(json!({
        "operation": "GetChange", "kind": "hold", "count": 1
    })));
}

#[test]
fn kill_at_the_boundary_after_repoint_then_resume() {
    // The first writer read after the record change is verify's.
    kill_and_resume(KillPoint::Moto(json!({
        "operation": "DescribeGlobalClusters", "kind": "hold", "count": 1,
        "after_op": "ChangeResourceRecordSets"
    })));
}

#[test]
fn kill_while_verify_probes_the_target_then_resume() {
    kill_and_resume(KillPoint::VerifyProbe);
}

/// The steps the last run recorded as succeeded.
fn steps_done(config: &Path) -> Vec<String> {
    let out = run(config, &["runs", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    runs[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"]["status"] == "succeeded")
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// Each step recorded done is done in the emulator.
fn assert_done_steps_are_true(moto: &Moto, done: &[String], to: &str, context: &str) {
    for step in done {
        match step.as_str() {
            "promote-db" => assert_eq!(moto.writer(), to, "{context}: promote-db done"),
            "scale-target" if to == "us-west-2" => {
                assert_eq!(
                    sizes(moto),
                    failed_over_sizes(),
                    "{context}: scale-target done"
                )
            }
            "repoint-dns" if to == "us-west-2" => {
                assert_eq!(
                    moto.dns_regions(),
                    vec!["us-west-2"],
                    "{context}: repoint-dns done"
                )
            }
            "repoint-dns" => assert_eq!(
                moto.dns_regions(),
                vec!["us-east-1", "us-west-2"],
                "{context}: repoint-dns done"
            ),
            _ => {}
        }
    }
}

/// Injects throttling, 5xx answers and 10 s of latency into `operation`, one kind per fresh
/// emulator, and runs a failover (or, for the switchover operation, a failover then a
/// switchover back) through each.
fn faults_in(operation: &str) {
    let kinds = [
        json!({"operation": operation, "kind": "throttle", "count": 4}),
        json!({"operation": operation, "kind": "error", "status": 500, "count": 2}),
        json!({"operation": operation, "kind": "error", "status": 503, "count": 1}),
        json!({"operation": operation, "kind": "latency", "seconds": 10, "count": 1}),
    ];
    let switchover = operation == "SwitchoverGlobalCluster";
    for rule in kinds {
        let s = setup();
        let (to, command) = if switchover {
            let out = run(&s.config, &["failover", "--to", "us-west-2", "--yes"]);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out));
            ("us-east-1", "switchover")
        } else {
            ("us-west-2", "failover")
        };
        s.moto.fault(rule.clone());
        let out = run(
            &s.config,
            &[command, "--to", to, "--yes", "--reason", "fault test"],
        );
        let context = format!("{rule}\n{}", text(&out));
        let fired = s.moto.admin("GET", "/_dr/faults", None)[0]["fired"]
            .as_u64()
            .unwrap_or(0);
        assert!(fired >= 1, "the fault never fired: {context}");
        let done = steps_done(&s.config);
        assert_done_steps_are_true(&s.moto, &done, to, &context);
        match out.status.code() {
            // Transient faults are ridden out: the run completes.
            Some(0) => {
                assert_eq!(done.len(), 5, "{context}");
                assert_eq!(s.moto.writer(), to, "{context}");
                let applied = s.moto.applied();
                let promotion = if switchover {
                    "SwitchoverGlobalCluster"
                } else {
                    "FailoverGlobalCluster"
                };
                assert_eq!(applied.get(promotion), Some(&1), "{context}: {applied:?}");
                assert_eq!(s.moto.state()["eks_updates"], 1, "{context}");
            }
            other => {
                panic!("the run did not complete ({other:?}) under a transient fault: {context}")
            }
        }
    }
}

#[test]
fn faults_in_failover_global_cluster_are_ridden_out() {
    faults_in("FailoverGlobalCluster");
}

#[test]
fn faults_in_switchover_global_cluster_are_ridden_out() {
    faults_in("SwitchoverGlobalCluster");
}

#[test]
fn faults_in_update_nodegroup_config_are_ridden_out() {
    faults_in("UpdateNodegroupConfig");
}

#[test]
fn faults_in_update_auto_scaling_group_are_ridden_out() {
    faults_in("UpdateAutoScalingGroup");
}

#[test]
fn faults_in_change_resource_record_sets_are_ridden_out() {
    faults_in("ChangeResourceRecordSets");
}

#[test]
fn access_denied_stops_the_run_naming_the_iam_action_and_resume_finishes_it() {
    let s = setup();
    s.moto
        .fault(json!({"operation": "UpdateNodegroupConfig", "kind": "denied"}));
    let out = run(&s.config, &["failover", "--to", "us-west-2", "--yes"]);
    let context = text(&out);
    assert_ne!(out.status.code(), Some(0), "{context}");
    assert!(
        context.contains("the credentials need IAM action eks:UpdateNodegroupConfig"),
        "{context}"
    );
    let done = steps_done(&s.config);
    assert!(!done.contains(&"scale-target".to_string()), "{context}");
    assert_done_steps_are_true(&s.moto, &done, "us-west-2", &context);
    assert_eq!(
        s.moto.dns_regions(),
        vec!["us-east-1", "us-west-2"],
        "no repoint before scaling"
    );

    // The policy is fixed: resume finishes the run.
    s.moto.clear_faults();
    let out = run(
        &s.config,
        &["resume", "--yes", "--reason", "IAM policy fixed"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(sizes(&s.moto), failed_over_sizes());
    assert_eq!(s.moto.dns_regions(), vec!["us-west-2"]);
    assert_eq!(s.moto.applied().get("FailoverGlobalCluster"), Some(&1));
}

#[test]
fn a_missing_resource_is_named_with_the_config_key_that_points_at_it() {
    let s = setup();
    let text_before = std::fs::read_to_string(&s.config).unwrap();
    // The secondary's node group is misspelt in the config.
    let at = text_before.find("name = \"us-west-2\"").unwrap();
    let group = at + text_before[at..].find("name = \"general\"").unwrap();
    let mut broken = text_before.clone();
    broken.replace_range(
        group..group + "name = \"general\"".len(),
        "name = \"genral\"",
    );
    std::fs::write(&s.config, broken).unwrap();
    let before = serde_json::to_string(&s.moto.state()).unwrap();
    let out = run(&s.config, &["failover", "--to", "us-west-2", "--yes"]);
    let context = text(&out);
    assert_ne!(out.status.code(), Some(0), "{context}");
    assert!(
        context.contains("node group genral of EKS cluster yt-video-creator-west"),
        "{context}"
    );
    assert!(
        context.contains("[[region]] name = \"us-west-2\": eks.node_group name = \"genral\""),
        "{context}"
    );
    // Preflight found it before any change.
    assert_eq!(before, serde_json::to_string(&s.moto.state()).unwrap());
}

#[test]
fn an_endpoint_that_is_down_leaves_signals_unknown_and_changes_nothing() {
    let s = setup();
    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let text_ok = std::fs::read_to_string(&s.config).unwrap();
    let down = text_ok.replace(
        &format!("endpoint_url = \"{}\"", s.moto.endpoint()),
        &format!("endpoint_url = \"http://127.0.0.1:{port}\""),
    );
    assert_ne!(down, text_ok);
    std::fs::write(&s.config, down).unwrap();
    let out = run(&s.config, &["status", "--json"]);
    // It prints what it could read, and exits 3: nobody can say whether to fail over.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["writer_region"], Value::Null, "{status}");
    for region in status["regions"].as_array().unwrap() {
        assert_eq!(region["route53"], "unknown", "{status}");
        // dr's own probe does not go through AWS and still answers.
        assert_eq!(region["probe"], "healthy", "{status}");
    }
    // A failover cannot even find the writer: refused, nothing stored, nothing changed.
    let out = run(&s.config, &["failover", "--to", "us-west-2", "--yes"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("unavailable"), "{}", text(&out));
    assert!(s.moto.calls().is_empty());
}

#[test]
fn aws_endpoint_url_from_the_environment_points_dr_at_the_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path(), &seed_world());
    let health = HealthServer::start();
    let config = aws_config(dir.path(), &moto, &health, None);
    let out = dr(&config)
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["writer_region"], "us-east-1", "{status}");
    assert!(!moto.calls().is_empty());
}

#[test]
fn route53_checker_reports_become_the_share_of_healthy_checkers() {
    let s = setup();
    let west = s.moto.health_checks["us-west-2"].clone();
    s.moto.admin(
        "POST",
        "/_dr/health",
        Some(json!({"health_check_id": west, "healthy": 5, "total": 16})),
    );
    let status = |s: &Setup| -> Value {
        let out = run(&s.config, &["status", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Route53 calls an endpoint healthy when more than 18% of its checkers do.
    let seen = status(&s);
    assert_eq!(seen["regions"][1]["checkers"], "5/16", "{seen}");
    assert_eq!(seen["regions"][1]["route53"], "healthy", "{seen}");
    assert_eq!(seen["regions"][0]["checkers"], "16/16", "{seen}");
    s.moto.admin(
        "POST",
        "/_dr/health",
        Some(json!({"health_check_id": west, "healthy": 2, "total": 16})),
    );
    let seen = status(&s);
    assert_eq!(seen["regions"][1]["checkers"], "2/16", "{seen}");
    assert_ne!(seen["regions"][1]["route53"], "healthy", "{seen}");
    assert_ne!(seen["regions"][1]["route53"], "unknown", "{seen}");
}

#[test]
fn missing_credentials_are_named_with_what_to_set() {
    let s = setup();
    let out = dr(&s.config)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = status["problems"].to_string();
    assert!(problems.contains("no usable AWS credentials"), "{status}");
    assert!(problems.contains("AWS_PROFILE"), "{status}");
    // Nothing reached the emulator: the SDK refuses to sign without credentials.
    assert!(s.moto.calls().is_empty(), "{:?}", s.moto.calls());

    let out = dr(&s.config)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["failover", "--to", "us-west-2", "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("no usable AWS credentials"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_dry_run_drill_refuses_what_it_cannot_rehearse() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dr.toml");
    std::fs::copy(common::moto::root().join("config/example.toml"), &config).unwrap();
    let scenario = |name: &str| {
        common::moto::root()
            .join("runbooks/drills")
            .join(name)
            .to_string_lossy()
            .into_owned()
    };
    // Simulation options make no sense against a real account.
    let out = run(
        &config,
        &[
            "drill",
            "--scenario",
            &scenario("reference-outage.toml"),
            "--dry-run",
            "--seed",
            "3",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--dry-run"), "{}", text(&out));
    // A scenario without a failover of the writer's region has nothing to rehearse.
    let out = run(
        &config,
        &[
            "drill",
            "--scenario",
            &scenario("auto-secondary-outage.toml"),
            "--dry-run",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("nothing") || text(&out).contains("no failover"),
        "{}",
        text(&out)
    );
    // A target that is down makes the rehearsal fail, with the reason.
    let out = run(&config, &["sim", "outage", "us-west-2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(
        &config,
        &[
            "drill",
            "--scenario",
            &scenario("reference-outage.toml"),
            "--dry-run",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(text(&out).contains("preflight"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route53_calls_stay_under_the_rate_limit_however_many_health_checks_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path(), &seed_world());
    let health = HealthServer::start();
    let config_path = aws_config(dir.path(), &moto, &health, Some(&moto.endpoint()));
    let config = dr::config::load(&config_path).unwrap();
    assert_eq!(config.aws.route53_requests_per_second, 5.0);
    // Static credentials for this process's clients (no environment is touched).
    let sdk = dr::provider::aws::sdk_config_loader(&config.aws)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_route53::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    let providers = dr::provider::aws::connect_with(&sdk, &config.aws, &config.topology);
    // Twelve readers at once, as a daemon watching twelve regions would be.
    let ids: Vec<String> = (0..12)
        .map(|i| moto.health_checks[if i % 2 == 0 { "us-east-1" } else { "us-west-2" }].clone())
        .collect();
    let reads = ids
        .iter()
        .map(|id| providers.health_checks.checker_report(id));
    for report in futures::future::join_all(reads).await {
        assert_eq!(report.unwrap().total, 16);
    }
    let mut times: Vec<f64> = moto
        .calls()
        .iter()
        .filter(|c| c["op"] == "GetHealthCheckStatus")
        .map(|c| c["t"].as_f64().unwrap())
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(times.len(), 12);
    // Never more than five in any one second: call i and call i + 5 are a second apart.
    for pair in times.windows(6) {
        assert!(
            pair[5] - pair[0] >= 0.95,
            "six Route53 calls within {:.3} s",
            pair[5] - pair[0]
        );
    }
}

/// A daemon on the emulator with a 4 s failure window and a 500 ms poll, its API on a free
/// port; `adjust` changes the config text further. Returns the process, the API port and the
/// path of its log, once it is ready.
fn start_fast_daemon(
    s: &Setup,
    adjust: impl Fn(String) -> String,
) -> (std::process::Child, u16, std::path::PathBuf) {
    let port = common::free_port();
    let text_ok = std::fs::read_to_string(&s.config).unwrap();
    let fast = adjust(
        text_ok
            .replace("failure_window = \"5m\"", "failure_window = \"4s\"")
            .replacen("poll_interval = \"10s\"", "poll_interval = \"500ms\"", 1)
            .replace(
                "listen = \"127.0.0.1:8080\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            ),
    );
    assert_ne!(fast, text_ok);
    std::fs::write(&s.config, fast).unwrap();
    let dir = s.config.parent().unwrap().to_path_buf();
    let daemon = dr(&s.config)
        .arg("daemon")
        .env("DR_API_TOKENS", "oncall:operate:test-token-0123456789")
        .stdout(std::fs::File::create(dir.join("daemon.out")).unwrap())
        .stderr(std::fs::File::create(dir.join("daemon.err")).unwrap())
        .spawn()
        .unwrap();
    s.moto
        .wait_until(Duration::from_secs(60), "the daemon to be ready", |_| {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && common::moto::http(port, "GET", "/ready", None).0 == 200
        });
    (daemon, port, dir.join("daemon.err"))
}

#[test]
fn the_daemon_fails_over_by_itself_on_the_emulator_when_both_signals_agree() {
    let s = setup();
    let (mut daemon, port, log_path) = start_fast_daemon(&s, |text| text);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // Healthy: the daemon watches (three rounds of health checks) and does nothing.
    s.moto
        .wait_until(Duration::from_secs(30), "three polls", |m| {
            m.calls()
                .iter()
                .filter(|c| c["op"] == "GetHealthCheckStatus")
                .count()
                >= 6
        });
    assert_eq!(
        s.moto.applied().get("FailoverGlobalCluster"),
        None,
        "{}",
        log()
    );

    // us-east-1 goes dark for Route53's checkers and for dr's own probe.
    let east = s.moto.health_checks["us-east-1"].clone();
    s.moto.admin(
        "POST",
        "/_dr/health",
        Some(json!({"health_check_id": east, "healthy": 0, "total": 16})),
    );
    s.health.failing.lock().unwrap().push("/east/".into());
    s.moto
        .wait_until(Duration::from_secs(90), "the automatic failover", |m| {
            m.writer() == "us-west-2" && m.dns_regions() == vec!["us-west-2".to_string()]
        });
    s.moto
        .wait_until(Duration::from_secs(30), "the run to finish", |_| {
            let out = run(&s.config, &["runs", "--json"]);
            let runs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            runs[0]["status"].to_string().contains("finished")
        });
    let status = common::moto::http(port, "GET", "/metrics", None);
    assert_eq!(status.0, 200);
    // SIGTERM: the daemon checkpoints and exits 0.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = daemon.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "{}", log());

    let out = run(&s.config, &["runs", "--json"]);
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert!(
        runs[0]["trigger"].to_string().contains("auto"),
        "{}",
        runs[0]["trigger"]
    );
    assert!(
        runs[0]["status"].to_string().contains("succeeded"),
        "{}",
        runs[0]["status"]
    );
    assert_eq!(sizes(&s.moto), failed_over_sizes());
    assert_eq!(s.moto.applied().get("FailoverGlobalCluster"), Some(&1));
}

#[test]
fn reads_that_keep_failing_mid_run_are_retried_until_the_endpoint_answers() {
    let s = setup();
    // After the promotion is requested, the next eight reads of the global cluster answer 503:
    // more than one call's attempts, so the step itself must keep trying.
    s.moto.fault(json!({
        "operation": "DescribeGlobalClusters", "kind": "error", "status": 503, "count": 8,
        "after_op": "FailoverGlobalCluster"
    }));
    let out = run(&s.config, &["failover", "--to", "us-west-2", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let faults = s.moto.admin("GET", "/_dr/faults", None);
    assert_eq!(faults[0]["fired"], 8, "{faults}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("retrying"),
        "the operator sees the retries: {}",
        text(&out)
    );
    assert_eq!(s.moto.writer(), "us-west-2");
    assert_eq!(s.moto.applied().get("FailoverGlobalCluster"), Some(&1));
}

/// Every Route53 API operation dr calls, failing as an endpoint that does not answer would.
const ROUTE53_API: [&str; 4] = [
    "GetHealthCheckStatus",
    "ListResourceRecordSets",
    "ChangeResourceRecordSets",
    "GetChange",
];

#[test]
fn with_every_route53_api_call_failing_the_daemon_fails_over_on_the_dns_data_plane() {
    let s = setup();
    // Route53's control plane is dark from the start: every call fails with a 503.
    for operation in ROUTE53_API {
        s.moto.fault(json!({
            "operation": operation, "kind": "error", "status": 503, "count": 1_000_000
        }));
    }
    let dns = s.moto.dns_addr();
    let (mut daemon, port, log_path) = start_fast_daemon(&s, |text| {
        let with = text.replace(
            "# name_servers = [",
            &format!("name_servers = [\"{dns}\"]\n# example: name_servers = ["),
        );
        assert!(with.contains("name_servers = [\"127.0.0.1:"), "{with}");
        with
    });
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // Healthy, read through DNS alone: several rounds of health-record queries, no failover.
    s.moto.wait_until(
        Duration::from_secs(30),
        "health records read over DNS",
        |m| {
            m.dns_queries()
                .iter()
                .filter(|q| q["name"].as_str().unwrap_or("").contains("dr-health"))
                .count()
                >= 8
        },
    );
    assert_eq!(
        s.moto.applied().get("FailoverGlobalCluster"),
        None,
        "{}",
        log()
    );
    let (code, status) = common::moto::http(port, "GET", "/metrics", None);
    assert_eq!(code, 200);
    assert!(status.contains("dr_dns_follow_ups_pending 0"), "{status}");

    // us-east-1 goes dark for Route53's checkers (seen only through the name servers) and for
    // dr's own probe.
    let east = s.moto.health_checks["us-east-1"].clone();
    s.moto.set_checkers(&east, 0, 16);
    s.health.failing.lock().unwrap().push("/east/".into());
    s.moto.wait_until(
        Duration::from_secs(90),
        "the failover on the data plane",
        |_| {
            let out = run(&s.config, &["runs", "--json"]);
            let runs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            runs[0]["status"].to_string().contains("finished")
        },
    );
    let out = run(&s.config, &["runs", "--json"]);
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(runs[0]["trigger"].to_string().contains("auto"), "{runs}");
    assert!(
        runs[0]["status"].to_string().contains("succeeded"),
        "{runs}\n{}",
        log()
    );
    assert_eq!(s.moto.writer(), "us-west-2");
    assert_eq!(s.moto.applied().get("FailoverGlobalCluster"), Some(&1));
    // No record change got through: it is a follow-up, shown in the metrics.
    assert_eq!(s.moto.applied().get("ChangeResourceRecordSets"), None);
    let repoint = runs[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["name"] == "repoint-dns")
        .unwrap()
        .clone();
    assert!(
        repoint["summary"]
            .as_str()
            .unwrap()
            .contains("name servers answer only us-west-2"),
        "{repoint}"
    );
    s.moto.wait_until(
        Duration::from_secs(30),
        "the follow-up in the metrics",
        |_| {
            common::moto::http(port, "GET", "/metrics", None)
                .1
                .contains("dr_dns_follow_ups_pending 1")
        },
    );

    // Route53's API answers again: the daemon makes the record change, once, and audits it.
    s.moto.clear_faults();
    s.moto
        .wait_until(Duration::from_secs(60), "the follow-up", |m| {
            m.dns_regions() == vec!["us-west-2".to_string()]
                && common::moto::http(port, "GET", "/metrics", None)
                    .1
                    .contains("dr_dns_follow_ups_pending 0")
        });
    assert_eq!(s.moto.applied().get("ChangeResourceRecordSets"), Some(&1));
    let id = runs[0]["id"].as_str().unwrap().to_string();
    let detail = run(&s.config, &["runs", &id, "--json"]);
    let detail: Value = serde_json::from_slice(&detail.stdout).unwrap();
    assert!(
        detail["audit"]
            .to_string()
            .contains("record follow-up done"),
        "{detail}"
    );
    let term = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert_eq!(daemon.wait().unwrap().code(), Some(0), "{}", log());
}
