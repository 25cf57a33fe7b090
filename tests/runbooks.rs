//! Runbooks that cannot rot: every `dr` command in runbooks/*.md runs, in order, against the
//! simulator, and must succeed (or exit as its `# exit N` comment says) and print what the
//! runbook's `expect` blocks say. Also: the README links every runbook, and the IAM policy in
//! runbooks/iam-policy.md grants exactly the actions dr calls.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DR: &str = env!("CARGO_BIN_EXE_dr");
const TOKEN: &str = "oncall-operate-secret-0001";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Debug)]
struct Step {
    commands: Vec<(String, i32, bool)>,
    expect: Vec<String>,
    line: usize,
}

/// The `sh` blocks with their `dr` commands, each with the `expect` block that follows it.
fn steps(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let fence = line.trim();
        let (is_sh, is_expect) = (fence == "```sh", fence == "```expect");
        if !(is_sh || is_expect) {
            continue;
        }
        let mut body = Vec::new();
        for (_, inner) in lines.by_ref() {
            if inner.trim() == "```" {
                break;
            }
            body.push(inner.to_string());
        }
        if is_sh {
            let commands = body
                .iter()
                .map(|l| l.trim())
                .filter(|l| l.starts_with("dr ") || *l == "dr")
                .map(|l| {
                    let (command, comment) = match l.split_once('#') {
                        Some((c, comment)) => (c.trim(), comment.trim()),
                        None => (l, ""),
                    };
                    let code = comment
                        .strip_prefix("exit ")
                        .and_then(|c| c.trim().parse().ok())
                        .unwrap_or(0);
                    let background = command.ends_with('&');
                    (
                        command.trim_end_matches('&').trim().to_string(),
                        code,
                        background,
                    )
                })
                .collect();
            steps.push(Step {
                commands,
                expect: Vec::new(),
                line: number + 1,
            });
        } else if let Some(last) = steps.last_mut() {
            last.expect
                .extend(body.into_iter().filter(|l| !l.trim().is_empty()));
        }
    }
    steps
}

/// Splits a command line into words, honouring double quotes.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

struct World {
    dir: tempfile::TempDir,
    port: u16,
    background: Vec<Child>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = std::fs::read_to_string(root().join("config/example.toml"))
            .unwrap()
            .replace("time_scale = 60", "time_scale = 600")
            .replace(
                "listen = \"127.0.0.1:8080\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            );
        std::fs::write(dir.path().join("dr.toml"), config).unwrap();
        World {
            dir,
            port,
            background: Vec::new(),
        }
    }

    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(DR);
        command
            .args(args)
            .current_dir(root())
            .env("DR_CONFIG", self.dir.path().join("dr.toml"))
            .env("USER", "oncall")
            .env("DR_API_TOKENS", format!("oncall:operate:{TOKEN}"))
            .env("DR_API_TOKEN", TOKEN)
            .env_remove("DR_API_URL")
            .stdin(Stdio::null());
        command
    }

    fn wait_ready(&mut self, runbook: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self
                .command(&["healthcheck".into(), "--ready".into()])
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{runbook}: the daemon never became ready on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for child in &mut self.background {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

fn run_runbook(path: &Path) -> usize {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap();
    let mut world = World::new();
    let mut count = 0;
    for step in steps(&text) {
        let mut output = String::new();
        for (command, code, background) in &step.commands {
            count += 1;
            let args: Vec<String> = words(command).into_iter().skip(1).collect();
            if *background {
                let child = world
                    .command(&args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                world.background.push(child);
                if args.first().map(String::as_str) == Some("daemon") {
                    world.wait_ready(&name);
                }
                continue;
            }
            let out = world.command(&args).output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                out.status.code(),
                Some(*code),
                "{name}:{}: `{command}` exited {:?}, the runbook says {code}:\n{text}",
                step.line,
                out.status.code()
            );
            output.push_str(&text);
        }
        for line in &step.expect {
            assert!(
                output.contains(line.trim()),
                "{name}:{}: the output lacks `{}`:\n{output}",
                step.line,
                line.trim()
            );
        }
    }
    count
}

fn runbooks() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("runbooks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md") && !p.ends_with("README.md"))
        .collect();
    files.sort();
    files
}

fn check(name: &str) {
    let count = run_runbook(&root().join("runbooks").join(name));
    assert!(count >= 1, "{name} has no dr command");
}

#[test]
fn automatic_failover_runbook() {
    check("automatic-failover.md");
}

#[test]
fn manual_failover_runbook() {
    check("manual-failover.md");
}

#[test]
fn switchover_and_failback_runbook() {
    check("switchover-and-failback.md");
}

#[test]
fn game_day_runbook() {
    check("game-day.md");
}

#[test]
fn break_glass_route53_runbook() {
    check("break-glass-route53.md");
}

#[test]
fn iam_policy_runbook() {
    check("iam-policy.md");
}

#[test]
fn every_runbook_is_tested_and_linked_from_the_readme() {
    let tested = [
        "automatic-failover.md",
        "break-glass-route53.md",
        "game-day.md",
        "iam-policy.md",
        "manual-failover.md",
        "switchover-and-failback.md",
    ];
    let found: Vec<String> = runbooks()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        found, tested,
        "a runbook was added without a test, or removed"
    );
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for name in tested {
        assert!(
            readme.contains(&format!("runbooks/{name}")),
            "README.md does not link runbooks/{name}"
        );
    }
}

/// `snake_case` to `PascalCase`, as the SDK names operations.
fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// Every SDK operation the AWS providers call: each `client.<operation>()` in their source.
fn sdk_calls_in_source() -> std::collections::BTreeSet<String> {
    let paths = std::fs::read_dir(root().join("src/provider/aws"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect::<Vec<_>>();
    sdk_calls_in(&paths)
}

/// The SDK operations `client.<operation>()` called in `paths`, outside their test modules.
fn sdk_calls_in(paths: &[std::path::PathBuf]) -> std::collections::BTreeSet<String> {
    let mut calls = std::collections::BTreeSet::new();
    for path in paths {
        let source = std::fs::read_to_string(path).unwrap();
        // Test modules call mocks, not AWS.
        let source = source.split("#[cfg(test)]").next().unwrap();
        let code: String = source
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect();
        let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        for (at, _) in compact.match_indices("client.") {
            let rest = &compact[at + "client.".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && rest[name.len()..].starts_with("()") {
                calls.insert(pascal(&name));
            }
        }
    }
    calls
}

#[test]
fn the_aws_code_calls_exactly_the_operations_it_declares() {
    let declared: std::collections::BTreeSet<String> = dr::provider::aws::OPERATIONS
        .iter()
        .map(|(_, op)| op.to_string())
        .collect();
    let called = sdk_calls_in_source();
    assert!(
        called.len() >= 10,
        "the source scan found too little: {called:?}"
    );
    assert_eq!(
        called, declared,
        "src/provider/aws calls an SDK operation that dr::provider::aws::OPERATIONS (and so the IAM policy) lacks, or the list names one never called"
    );
}

#[test]
fn the_dynamodb_store_calls_exactly_the_operations_its_table_policy_grants() {
    let called = sdk_calls_in(&[root().join("src/store/dynamo.rs")]);
    let declared: std::collections::BTreeSet<String> = dr::store::DYNAMODB_OPERATIONS
        .iter()
        .map(|op| op.to_string())
        .collect();
    assert!(
        !called.is_empty(),
        "no DynamoDB call found in src/store/dynamo.rs"
    );
    assert_eq!(
        called, declared,
        "src/store/dynamo.rs calls a DynamoDB operation that dr::store::DYNAMODB_OPERATIONS (and so the table's policy in deploy/dynamodb/) lacks, or the list names one never called"
    );
}

#[test]
fn the_iam_policy_grants_exactly_the_actions_dr_calls() {
    let text = std::fs::read_to_string(root().join("runbooks/iam-policy.json")).unwrap();
    let policy: serde_json::Value =
        serde_json::from_str(&text).expect("runbooks/iam-policy.json is valid JSON");
    let mut granted: Vec<String> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["Action"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
        })
        .collect();
    granted.sort();
    let mut called: Vec<String> = dr::provider::aws::OPERATIONS
        .iter()
        .map(|(service, op)| format!("{service}:{op}"))
        .collect();
    called.sort();
    assert_eq!(granted, called, "runbooks/iam-policy.json");
    // The simulator names the same actions, and drills can fault exactly these operations.
    let mut simulated: Vec<String> = dr::drill::scenario::FAULTABLE
        .iter()
        .map(|op| dr::provider::sim::world::iam_action(op))
        .collect();
    simulated.sort();
    assert_eq!(simulated, called);
}
