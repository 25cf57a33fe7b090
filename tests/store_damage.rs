//! A damaged store, for every command: each corruption class (truncation, a zeroed tail, flipped
//! bytes in the data pages, a flipped header) gets exit 6, never a panic, and leaves the file
//! byte for byte as it was. Commands that only read never write even a healthy store.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const DR: &str = env!("CARGO_BIN_EXE_dr");

/// A folder with the example config on the simulator, its API on a free loopback port.
fn setup() -> tempfile::TempDir {
    common::fast_sim_dir(common::free_port())
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(DR)
        .args(args)
        .current_dir(dir)
        .env("DR_CONFIG", dir.join("dr.toml"))
        .env("USER", "tester")
        .env_remove("DR_API_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn store(dir: &Path) -> PathBuf {
    dir.join("dr-store.redb")
}

/// A store with a finished failover, an unfinished one and automation changes in it.
fn healthy_store(dir: &Path) -> Vec<u8> {
    let out = run(
        dir,
        &[
            "failover",
            "--to",
            "us-west-2",
            "--yes",
            "--reason",
            "first",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for args in [
        vec!["pause", "--reason", "game day"],
        vec!["unpause", "--reason", "game day over"],
        vec!["ack", "--reason", "reviewed"],
    ] {
        let out = run(dir, &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
    std::fs::read(store(dir)).unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const PAGE: usize = 4096;

/// Every corruption class, by name.
fn damaged_copies(good: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let truncated = good[..good.len() / 2].to_vec();
    let mut zeroed_tail = good.to_vec();
    let tail = (1 << 20).min(good.len() / 2);
    let len = zeroed_tail.len();
    zeroed_tail[len - tail..].fill(0);
    // One byte in the middle of every page after the header: every live data page is hit.
    let mut flipped_pages = good.to_vec();
    for page in (PAGE..flipped_pages.len()).step_by(PAGE) {
        flipped_pages[page + PAGE / 2] ^= 0xa5;
    }
    // The header past the magic bytes: page size, region layout, commit slots.
    let mut flipped_header = good.to_vec();
    for byte in &mut flipped_header[9..512] {
        *byte ^= 0x5a;
    }
    vec![
        ("truncated", truncated),
        ("zeroed tail", zeroed_tail),
        ("flipped data pages", flipped_pages),
        ("flipped header", flipped_header),
    ]
}

/// Every command that opens the store, read-only ones and writers, the daemon included.
fn commands(run_id: &str) -> Vec<Vec<String>> {
    [
        vec!["status"],
        vec!["status", "--json"],
        vec!["runs"],
        vec!["runs", "--json"],
        vec!["runs", run_id],
        vec!["watch", "--timeout", "1s"],
        vec!["failover", "--to", "us-east-1", "--yes"],
        vec!["switchover", "--to", "us-east-1", "--yes"],
        vec!["resume", "--yes"],
        vec!["abort", "--reason", "x", "--yes"],
        vec!["approve", "--reason", "x", "--yes"],
        vec!["skip", "verify", "--reason", "x", "--yes"],
        vec!["pause", "--reason", "x"],
        vec!["unpause", "--reason", "x"],
        vec!["ack", "--reason", "x"],
        vec!["daemon"],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(str::to_string).collect())
    .collect()
}

#[test]
fn every_command_refuses_every_kind_of_damage_with_exit_6_and_writes_nothing() {
    let dir = setup();
    let good = healthy_store(dir.path());
    let listed = run(dir.path(), &["runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let run_id = runs[0]["id"].as_str().unwrap().to_string();
    let mut failures = Vec::new();
    for (class, bytes) in damaged_copies(&good) {
        for args in commands(&run_id) {
            std::fs::write(store(dir.path()), &bytes).unwrap();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run(dir.path(), &args);
            let after = std::fs::read(store(dir.path())).unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.code() != Some(6) {
                failures.push(format!(
                    "{class}: dr {}: exit {:?}, not 6\n{}",
                    args.join(" "),
                    out.status.code(),
                    text(&out)
                ));
            }
            if stderr.contains("panicked") {
                failures.push(format!("{class}: dr {}: panicked", args.join(" ")));
            }
            if after != bytes {
                let changed = after.iter().zip(&bytes).filter(|(a, b)| a != b).count();
                failures.push(format!(
                    "{class}: dr {}: the file changed ({changed} bytes, length {} -> {})",
                    args.join(" "),
                    bytes.len(),
                    after.len()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn read_only_commands_leave_a_healthy_store_byte_for_byte() {
    let dir = setup();
    let good = healthy_store(dir.path());
    let listed = run(dir.path(), &["runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let run_id = runs[0]["id"].as_str().unwrap();
    for args in [
        vec!["status"],
        vec!["runs"],
        vec!["runs", run_id],
        vec!["runs", "--json"],
    ] {
        let out = run(dir.path(), &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        assert_eq!(
            std::fs::read(store(dir.path())).unwrap(),
            good,
            "dr {} wrote the store",
            args.join(" ")
        );
    }
    // `dr watch` with no active run gives up, and writes nothing either.
    let out = run(dir.path(), &["watch", "--timeout", "300ms"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(std::fs::read(store(dir.path())).unwrap(), good);
}

#[test]
fn read_only_commands_do_not_create_a_store() {
    let dir = setup();
    let out = run(dir.path(), &["runs"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no runs yet"));
    assert!(!store(dir.path()).exists());
}
