//! The `dr` binary as a process: exit codes, bad input that changes nothing, a damaged store,
//! the executor lock, operator flows, SIGTERM, and SIGKILL in the middle of a failover followed
//! by `dr resume`, all against the simulator's state file.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DR: &str = env!("CARGO_BIN_EXE_dr");

struct Env {
    dir: tempfile::TempDir,
    /// The daemon's API port, free when the environment was made: tests run in parallel.
    port: u16,
}

impl Env {
    /// A folder with the example config at `time_scale` simulated seconds per second.
    fn new(time_scale: u32) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
                .unwrap()
                .replace("time_scale = 60", &format!("time_scale = {time_scale}"))
                .replace(
                    "listen = \"127.0.0.1:8080\"",
                    &format!("listen = \"127.0.0.1:{port}\""),
                );
        assert!(
            text.contains(&format!("127.0.0.1:{port}")),
            "the example config's [api] listen moved"
        );
        std::fs::write(dir.path().join("dr.toml"), text).unwrap();
        Env { dir, port }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(DR);
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("DR_CONFIG", self.path("dr.toml"))
            .env("USER", "tester")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn world(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.path("sim-world.json")).unwrap()).unwrap()
    }

    fn calls(&self, operation: &str) -> usize {
        let world = self.world();
        world["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["operation"] == operation)
            .count()
    }

    /// Waits (bounded) until `operation` has reached the simulated world.
    fn wait_for_call(&self, operation: &str, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.path("sim-world.json").exists() && self.calls(operation) > 0 {
                return;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "dr exited before calling {operation}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{operation} was not called within 60 s");
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn expect(out: &Output, want: i32, fragment: &str) {
    let text = format!("{}{}", stdout(out), stderr(out));
    assert_eq!(code(out), want, "{text}");
    assert!(text.contains(fragment), "`{fragment}` not in:\n{text}");
}

#[test]
fn validate_accepts_the_example_and_names_key_and_line_of_problems() {
    let env = Env::new(60);
    expect(&env.run(&["validate"]), 0, "valid");
    let example = std::fs::read_to_string(env.path("dr.toml")).unwrap();
    let cases = [
        (
            "priority = 2",
            "priority = \"second\"",
            "priority",
            "invalid type",
        ),
        (
            "[detection]\n",
            "[detection]\nfailure_windw = \"5m\"\n",
            "failure_windw",
            "unknown field",
        ),
        (
            "failure_window = \"5m\"",
            "failure_window = \"five\"",
            "failure_window",
            "not a duration",
        ),
        (
            "name = \"us-west-2\"",
            "name = \"us-east-1\"",
            "region[1].name",
            "listed twice",
        ),
        (
            "priority = 2",
            "priority = 1",
            "region[1].priority",
            "used by another region",
        ),
        ("ttl = 60", "ttl = -1", "ttl", "invalid value"),
    ];
    for (from, to, key, message) in cases {
        let broken = example.replacen(from, to, 1);
        assert_ne!(broken, example, "{from}");
        let file = env.path("broken.toml");
        std::fs::write(&file, &broken).unwrap();
        let out = env.run(&["validate", file.to_str().unwrap()]);
        let line = broken
            .lines()
            .position(|l| l.contains(to.lines().last().unwrap()))
            .unwrap()
            + 1;
        let located = if key.starts_with("region[1]") {
            // The duplicate is the second occurrence.
            broken
                .lines()
                .enumerate()
                .filter(|(_, l)| l.contains(to))
                .map(|(i, _)| i + 1)
                .last()
                .unwrap()
        } else {
            line
        };
        expect(&out, 2, &format!("broken.toml:{located}: {key}: "));
        assert!(stderr(&out).contains(message), "{}", stderr(&out));
    }
    // Missing regions.
    let cut = example.find("[[region]]").unwrap();
    std::fs::write(env.path("none.toml"), &example[..cut]).unwrap();
    expect(
        &env.run(&["validate", "none.toml"]),
        2,
        "a failover needs at least two regions",
    );
    // A file that is not there.
    expect(
        &env.run(&["validate", "absent.toml"]),
        2,
        "cannot read config",
    );
}

#[test]
fn bad_arguments_exit_2_and_change_nothing() {
    let env = Env::new(600);
    expect(&env.run(&["failover"]), 2, "--to");
    expect(
        &env.run(&["fail-over", "--to", "us-west-2"]),
        2,
        "unrecognized subcommand",
    );
    expect(
        &env.run(&["failover", "--to", "mars-west-9", "--yes"]),
        2,
        "region `mars-west-9` is not in",
    );
    expect(
        &env.run(&["plan", "--to", "us-west-2", "--from", "us-west-2"]),
        2,
        "choose another --to",
    );
    expect(
        &env.run(&["drill", "--scenario", "absent.toml"]),
        2,
        "cannot read scenario",
    );
    expect(
        &env.run(&["--config", "absent.toml", "status"]),
        2,
        "cannot read config",
    );
    assert!(
        !env.path("dr-store.redb").exists(),
        "a refused command created the store"
    );
    // The writer's own region is refused before anything changes.
    expect(
        &env.run(&["failover", "--to", "us-east-1", "--yes"]),
        2,
        "the region the writer would leave",
    );
    assert_eq!(env.json(&["runs"]).as_array().unwrap().len(), 0);
    assert!(env.world()["calls"].as_array().unwrap().is_empty());
    // A mutation with no terminal to confirm on is refused.
    expect(
        &env.run(&["failover", "--to", "us-west-2"]),
        2,
        "pass --yes",
    );
    assert_eq!(env.json(&["runs"]).as_array().unwrap().len(), 0);
    assert!(env.world()["calls"].as_array().unwrap().is_empty());
    // Operator commands with nothing to act on.
    expect(
        &env.run(&["approve", "--reason", "x", "--yes"]),
        3,
        "no run is in progress",
    );
    expect(
        &env.run(&["skip", "promote", "--reason", "x", "--yes"]),
        2,
        "not a step",
    );
    expect(&env.run(&["runs", "r-nope"]), 2, "there is no run r-nope");
}

#[test]
fn a_damaged_store_is_refused_with_exit_6_and_left_untouched() {
    let env = Env::new(600);
    let garbage = b"this is not a store, and dr must not write over it\n".repeat(50);
    std::fs::write(env.path("dr-store.redb"), &garbage).unwrap();
    for args in [
        vec!["status"],
        vec!["runs"],
        vec!["failover", "--to", "us-west-2", "--yes"],
    ] {
        let out = env.run(&args);
        expect(&out, 6, "damaged or is not a dr store");
        assert!(stderr(&out).contains("left untouched"));
    }
    assert_eq!(std::fs::read(env.path("dr-store.redb")).unwrap(), garbage);
}

#[test]
fn a_failover_from_the_cli_ends_with_the_writer_and_traffic_in_the_target() {
    let env = Env::new(600);
    let plan = env.run(&["plan", "--to", "us-west-2"]);
    expect(&plan, 0, "concurrently with scale-target");
    let out = env.run(&[
        "failover",
        "--to",
        "us-west-2",
        "--yes",
        "--reason",
        "game day",
    ]);
    expect(&out, 0, "run finished: succeeded");
    let status = env.json(&["status"]);
    assert_eq!(status["writer_region"], "us-west-2");
    let runs = env.json(&["runs"]);
    assert_eq!(runs[0]["status"]["outcome"], "succeeded");
    let detail = env.run(&["runs", runs[0]["id"].as_str().unwrap()]);
    expect(&detail, 0, "tester");
    assert!(stdout(&detail).contains("game day"));
    for op in [
        "FailoverGlobalCluster",
        "UpdateNodegroupConfig",
        "UpdateAutoScalingGroup",
        "ChangeResourceRecordSets",
    ] {
        assert_eq!(env.calls(op), 1, "{op}");
    }
    // Failing over again to the same place is refused.
    expect(
        &env.run(&["failover", "--to", "us-west-2", "--yes"]),
        2,
        "the region the writer would leave",
    );
    // Failback: a switchover home, loss-free.
    expect(
        &env.run(&["switchover", "--to", "us-east-1", "--yes"]),
        0,
        "run finished: succeeded",
    );
    assert_eq!(env.json(&["status"])["writer_region"], "us-east-1");
}

#[test]
fn a_dry_run_prints_the_mutations_a_real_run_makes_and_makes_none() {
    let dry = Env::new(600);
    let out = dry.run(&["failover", "--to", "us-west-2", "--dry-run"]);
    expect(&out, 0, "DRY RUN");
    assert!(
        dry.world()["calls"].as_array().unwrap().is_empty(),
        "a dry run mutated the world"
    );
    let printed: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| l.starts_with("DRY RUN"))
        .map(|l| {
            l.split("would call ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let real = Env::new(600);
    expect(
        &real.run(&["failover", "--to", "us-west-2", "--yes"]),
        0,
        "succeeded",
    );
    let mut made: Vec<String> = real.world()["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let op = c["operation"].as_str().unwrap();
            let service = match op {
                "FailoverGlobalCluster" => "rds",
                "UpdateNodegroupConfig" => "eks",
                "UpdateAutoScalingGroup" => "autoscaling",
                _ => "route53",
            };
            format!("{service}:{op}")
        })
        .collect();
    let mut printed_sorted = printed.clone();
    printed_sorted.sort();
    made.sort();
    assert_eq!(printed_sorted, made);
}

#[test]
fn lag_over_budget_waits_for_approval_with_exit_4_then_approve_finishes() {
    let env = Env::new(600);
    expect(&env.run(&["sim", "lag", "us-west-2", "7m"]), 0, "lag 7m");
    let out = env.run(&["failover", "--to", "us-west-2", "--yes"]);
    expect(&out, 4, "waits for approval of promote-db");
    assert!(stderr(&out).contains("dr approve"));
    assert_eq!(env.calls("FailoverGlobalCluster"), 0);
    // Another failover is refused while this one is unfinished.
    expect(
        &env.run(&["failover", "--to", "us-west-2", "--yes"]),
        3,
        "is not finished",
    );
    expect(&env.run(&["approve", "--yes"]), 2, "needs --reason");
    let out = env.run(&["approve", "--reason", "accept 7m of loss", "--yes"]);
    expect(&out, 0, "run finished: succeeded");
    assert!(
        stderr(&out).contains("approved, for a replication lag of up to 7m00s"),
        "the approval names the figure it accepts: {}",
        stderr(&out)
    );
    assert_eq!(env.calls("FailoverGlobalCluster"), 1);
}

#[test]
fn status_exits_3_when_the_writer_cannot_be_read() {
    let env = Env::new(600);
    expect(&env.run(&["status"]), 0, "us-east-1");
    expect(
        &env.run(&[
            "sim",
            "fault",
            "DescribeGlobalClusters",
            "unavailable",
            "10",
        ]),
        0,
        "DescribeGlobalClusters",
    );
    let out = env.run(&["status"]);
    expect(&out, 3, "writer's region could not be read");
    assert!(
        stdout(&out).contains("us-west-2"),
        "the rest is still shown"
    );
}

#[test]
fn a_drill_longer_than_a_day_is_refused_with_exit_2() {
    let env = Env::new(600);
    let scenario = env.dir.path().join("forever.toml");
    std::fs::write(
        &scenario,
        "name = \"forever\"\ndaemon = true\nduration = \"99999h\"\n",
    )
    .unwrap();
    let out = env.run(&["drill", "--scenario", scenario.to_str().unwrap()]);
    expect(&out, 2, "longer than a drill may run");
}

#[test]
fn a_failed_preflight_stops_with_exit_4_and_can_be_skipped_or_aborted() {
    let env = Env::new(600);
    expect(
        &env.run(&["sim", "outage", "us-west-2", "--kind", "app"]),
        0,
        "outage",
    );
    let out = env.run(&["failover", "--to", "us-west-2", "--yes"]);
    expect(&out, 4, "preflight failed");
    assert!(env.world()["calls"].as_array().unwrap().is_empty());
    // Skipping preflight goes on; the unhealthy target then fails verification: exit 5.
    expect(
        &env.run(&["skip", "preflight", "--reason", "checked by hand", "--yes"]),
        0,
        "skipped",
    );
    expect(&env.run(&["resume"]), 5, "failed-verification");
    let runs = env.json(&["runs"]);
    assert_eq!(runs[0]["status"]["outcome"], "failed-verification");
    let audit = env.json(&["runs", runs[0]["id"].as_str().unwrap()]);
    assert!(
        audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "step preflight skipped"
                && e["actor"] == "tester"
                && e["reason"] == "checked by hand")
    );

    // A second stopped run is aborted instead; nothing is rolled back and the slot frees.
    let out = env.run(&["switchover", "--to", "us-east-1", "--yes"]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    expect(
        &env.run(&["abort", "--reason", "stand down", "--yes"]),
        0,
        "aborted",
    );
    expect(&env.run(&["resume"]), 3, "no run is in progress");
}

fn kill(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigkill_in_the_middle_of_a_failover_then_resume_applies_each_mutation_once() {
    for kill_after in [
        "FailoverGlobalCluster",
        "UpdateNodegroupConfig",
        "ChangeResourceRecordSets",
    ] {
        let env = Env::new(60);
        let mut child = env.spawn(&["failover", "--to", "us-west-2", "--yes"]);
        env.wait_for_call(kill_after, &mut child);
        kill(&mut child);
        let status = env.json(&["status"]);
        assert!(
            status["active_run"].is_object(),
            "the killed run is still active"
        );
        assert!(
            status["executor"].is_null(),
            "the dead process still holds the executor lock"
        );
        expect(
            &env.run(&["failover", "--to", "us-west-2", "--yes"]),
            3,
            "is not finished",
        );
        let out = env.run(&["resume"]);
        expect(&out, 0, "run finished: succeeded");
        for op in [
            "FailoverGlobalCluster",
            "UpdateNodegroupConfig",
            "UpdateAutoScalingGroup",
            "ChangeResourceRecordSets",
        ] {
            assert_eq!(env.calls(op), 1, "{op} after a kill after {kill_after}");
        }
        let world = env.world();
        let writer = world["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["is_writer"] == true)
            .unwrap();
        assert_eq!(writer["region"], "us-west-2");
        let records: Vec<&str> = world["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["set_identifier"].as_str().unwrap())
            .collect();
        assert_eq!(records, vec!["us-west-2"]);
    }
}

#[test]
fn sigterm_checkpoints_pauses_and_exits_130_and_a_second_executor_is_refused() {
    let env = Env::new(60);
    let mut child = env.spawn(&["failover", "--to", "us-west-2", "--yes"]);
    env.wait_for_call("FailoverGlobalCluster", &mut child);
    // The store is shared: status works while the run is carried out, and names the holder.
    let status = env.json(&["status"]);
    assert!(
        status["executor"].as_str().unwrap().contains("failover"),
        "{status}"
    );
    expect(
        &env.run(&["resume"]),
        3,
        "another dr process is carrying out runs",
    );
    signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let runs = env.json(&["runs"]);
    assert_eq!(runs[0]["status"]["status"], "paused");
    let steps = runs[0]["steps"].as_array().unwrap();
    assert!(
        steps.iter().any(|s| s["status"]["status"] == "interrupted"),
        "{steps:?}"
    );
    expect(&env.run(&["resume"]), 0, "run finished: succeeded");
    assert_eq!(env.calls("FailoverGlobalCluster"), 1);
}

#[test]
fn drill_runs_the_reference_outage_and_reports_rto_against_the_target() {
    let env = Env::new(60);
    let scenario =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/drills/reference-outage.toml");
    let out = env.run(&["drill", "--scenario", scenario.to_str().unwrap()]);
    expect(&out, 0, "Drill PASSED");
    assert!(stdout(&out).contains("target 15m00s"));
    let out = env.run(&["drill", "--scenario", scenario.to_str().unwrap(), "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "succeeded");
    assert!(report["rto_seconds"].as_f64().unwrap() < 900.0);
    // A drill whose expectations fail exits 7.
    let strict = std::fs::read_to_string(&scenario)
        .unwrap()
        .replace("max_rto = \"15m\"", "max_rto = \"1m\"");
    std::fs::write(env.path("strict.toml"), strict).unwrap();
    expect(
        &env.run(&["drill", "--scenario", "strict.toml"]),
        7,
        "Drill FAILED",
    );
    // The drill touches neither the store nor the simulator's state file.
    assert!(!env.path("dr-store.redb").exists());
    assert!(!env.path("sim-world.json").exists());
}

#[test]
fn pause_and_abort_from_another_process_reach_the_running_executor() {
    let env = Env::new(60);
    let mut child = env.spawn(&["failover", "--to", "us-west-2", "--yes"]);
    env.wait_for_call("UpdateNodegroupConfig", &mut child);
    expect(&env.run(&["pause", "--reason", "hold on"]), 0, "paused");
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(4), "{text}");
    assert!(text.contains("is paused"), "{text}");
    let runs = env.json(&["runs"]);
    assert_eq!(runs[0]["status"]["status"], "paused");

    let mut child = env.spawn(&["resume"]);
    env.wait_for_call("ChangeResourceRecordSets", &mut child);
    expect(
        &env.run(&["abort", "--reason", "wrong target", "--yes"]),
        0,
        "abort requested",
    );
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let runs = env.json(&["runs"]);
    assert_eq!(runs[0]["status"]["outcome"], "aborted");
    // Nothing was repeated across the pause and the resume.
    for op in [
        "FailoverGlobalCluster",
        "UpdateNodegroupConfig",
        "ChangeResourceRecordSets",
    ] {
        assert_eq!(env.calls(op), 1, "{op}");
    }
}

impl Env {
    /// Waits (bounded) until `dr runs --json` satisfies `done`.
    fn wait_for_runs(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = self.run(&["runs", "--json"]);
            if code(&out) == 0 {
                let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
                if done(&runs) {
                    return runs;
                }
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn stop(mut child: Child) -> (i32, String) {
    signal(&child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_daemon_fails_over_by_itself_and_refuses_a_second_daemon() {
    let env = Env::new(60);
    let daemon = env.spawn(&["daemon", "--log-format", "json"]);
    // Wait until the daemon has published its first decision.
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.json(&["status"])["daemon"].is_null() {
        assert!(Instant::now() < deadline, "no daemon status");
        std::thread::sleep(Duration::from_millis(50));
    }
    expect(
        &env.run(&["daemon"]),
        3,
        "another dr process is carrying out runs",
    );
    expect(&env.run(&["sim", "outage", "us-east-1"]), 0, "outage");
    let runs = env.wait_for_runs("an automatic failover to finish", |runs| {
        runs.as_array()
            .unwrap()
            .first()
            .is_some_and(|r| r["status"]["outcome"] == "succeeded")
    });
    assert_eq!(runs[0]["trigger"]["type"], "automatic");
    let status = env.json(&["status"]);
    assert_eq!(status["writer_region"], "us-west-2");
    let (code, logs) = stop(daemon);
    assert_eq!(code, 0, "{logs}");
    // Structured logs: one JSON object per line.
    let decision = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "automatic failover started");
    assert!(decision.is_some(), "{logs}");
    // The decision and its reason are in the audit log.
    let audit = env.json(&["runs", runs[0]["id"].as_str().unwrap()]);
    assert!(
        audit["trigger"]["reason"]
            .as_str()
            .unwrap()
            .contains("observed it unhealthy in every round")
    );
}

#[test]
fn a_daemon_stopped_mid_run_resumes_it_when_it_starts_again() {
    let env = Env::new(60);
    expect(&env.run(&["sim", "outage", "us-east-1"]), 0, "outage");
    let mut daemon = env.spawn(&["daemon"]);
    env.wait_for_call("FailoverGlobalCluster", &mut daemon);
    let (code, logs) = stop(daemon);
    assert_eq!(code, 0, "{logs}");
    let runs = env.json(&["runs"]);
    assert_eq!(runs[0]["status"]["status"], "paused", "{runs}");
    let daemon = env.spawn(&["daemon"]);
    env.wait_for_runs("the resumed run to finish", |runs| {
        runs[0]["status"]["outcome"] == "succeeded"
    });
    let _ = stop(daemon);
    assert_eq!(env.calls("FailoverGlobalCluster"), 1);
    assert_eq!(env.json(&["runs"]).as_array().unwrap().len(), 1);
}

#[test]
fn pause_unpause_and_ack_act_through_the_store() {
    let env = Env::new(60);
    expect(
        &env.run(&["pause", "--reason", "maintenance"]),
        0,
        "automation paused",
    );
    let status = env.run(&["status"]);
    expect(&status, 0, "Automation: PAUSED by tester (maintenance)");
    let daemon = env.spawn(&["daemon"]);
    expect(&env.run(&["sim", "outage", "us-east-1"]), 0, "outage");
    // The window is 5 simulated minutes (5 s here): wait past it and see the daemon hold.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = env.json(&["status"]);
        let decision = status["daemon"]["decision"]["decision"].clone();
        if status["daemon"]["decision"]["hold"] == "automation-paused" {
            break;
        }
        assert!(decision != "failover", "failed over while paused");
        assert!(
            Instant::now() < deadline,
            "the daemon never said it was paused: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(env.json(&["runs"]).as_array().unwrap().is_empty());
    expect(
        &env.run(&["unpause", "--reason", "done"]),
        0,
        "automation on",
    );
    env.wait_for_runs("the failover after unpause", |runs| {
        runs.as_array()
            .unwrap()
            .first()
            .is_some_and(|r| r["status"]["outcome"] == "succeeded")
    });
    expect(
        &env.run(&["ack", "--reason", "reviewed"]),
        0,
        "cooldown cleared",
    );
    expect(&env.run(&["ack"]), 2, "needs --reason");
    let _ = stop(daemon);
}

#[test]
fn dr_failover_goes_through_the_daemons_api_when_a_daemon_holds_the_store() {
    let env = Env::new(60);
    let port = env.port;
    let operate = "oncall-operate-secret-0001";
    let mut command = env.command(&["daemon"]);
    command.env("DR_API_TOKENS", format!("oncall:operate:{operate}"));
    let daemon = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the daemon's API did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Without a token the CLI says what to do.
    expect(
        &env.run(&["failover", "--to", "us-west-2", "--yes"]),
        3,
        "set DR_API_TOKEN",
    );
    // With a wrong one the API refuses it.
    let mut wrong = env.command(&["failover", "--to", "us-west-2", "--yes"]);
    wrong.env("DR_API_TOKEN", "not-the-right-secret-000");
    expect(&wrong.output().unwrap(), 3, "401");
    let mut right = env.command(&[
        "failover",
        "--to",
        "us-west-2",
        "--yes",
        "--reason",
        "planned drill",
    ]);
    right.env("DR_API_TOKEN", operate);
    let out = right.output().unwrap();
    expect(&out, 0, "started through the daemon's API");
    assert!(
        stderr(&out).contains("verify: succeeded"),
        "{}",
        stderr(&out)
    );
    let runs = env.json(&["runs"]);
    assert_eq!(runs[0]["trigger"]["actor"], "api:oncall");
    assert_eq!(runs[0]["status"]["outcome"], "succeeded");
    let _ = stop(daemon);
}

#[test]
fn a_request_the_cli_gave_up_on_is_never_carried_out_later() {
    let env = Env::new(60);
    let operate = "oncall-operate-secret-0001";
    let mut command = env.command(&["daemon"]);
    command.env("DR_API_TOKENS", format!("oncall:operate:{operate}"));
    let mut daemon = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The daemon's log, line by line, as it comes.
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let log = daemon.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", env.port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the daemon's API did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The daemon stops answering; the kernel still takes the request.
    signal(&daemon, "STOP");
    let mut failover = env.command(&["failover", "--to", "us-west-2", "--yes"]);
    failover
        .env("DR_API_TOKEN", operate)
        .env("DR_API_TIMEOUT", "1s");
    let out = failover.output().unwrap();
    expect(&out, 8, "outcome is unknown");
    assert!(stderr(&out).contains("dr status") && stderr(&out).contains("dr runs"));
    // Once it runs again it reads the request, finds it past its deadline, and does nothing.
    signal(&daemon, "CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the daemon never refused the late request");
        if line.contains("read after its deadline") {
            break;
        }
    }
    assert_eq!(env.json(&["runs"]).as_array().unwrap().len(), 0);
    assert!(env.world()["calls"].as_array().unwrap().is_empty());
    drop(lines);
    let _ = stop(daemon);
}

#[test]
fn the_plan_shown_before_a_failover_carries_the_request_tokens_that_are_sent() {
    let env = Env::new(3000);
    let out = env.run(&["failover", "--to", "us-west-2", "--yes"]);
    expect(&out, 0, "started");
    let text = stderr(&out);
    assert!(!text.contains("<run-id>"), "{text}");
    let shown: Vec<&str> = text
        .split("clientRequestToken=")
        .skip(1)
        .map(|rest| {
            rest.split(|c: char| c.is_whitespace() || c == ')')
                .next()
                .unwrap()
        })
        .collect();
    assert!(
        !shown.is_empty(),
        "the plan shows no request token:\n{text}"
    );
    let world = env.world().to_string();
    for token in shown {
        assert!(
            world.contains(token),
            "token {token} was shown but not sent"
        );
    }
    // The plan stored for the run, rendered, is exactly the plan that was shown and confirmed.
    let id = text
        .lines()
        .filter(|l| l.ends_with(" started"))
        .find_map(|l| l.strip_prefix("run ")?.split(':').next())
        .expect("the run's id is printed");
    let store = dr::store::RedbStore::open_read_only(&env.path("dr-store.redb"))
        .unwrap()
        .expect("the run's store exists");
    let stored = dr::store::Store::load_run(&store, &dr::core::ids::RunId::new(id))
        .unwrap()
        .expect("the run is stored");
    let rendered = stored.header.plan.render(&stored.header.id);
    assert!(
        text.contains(&rendered),
        "the stored plan differs from the one shown:\nstored:\n{rendered}\nshown:\n{text}"
    );
}
