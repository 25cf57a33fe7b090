//! Two daemons sharing one checkpoint store on the emulator's DynamoDB (tests/common/ha.rs):
//! how long the standby takes to lead after the leader is killed, at rest and inside a run's
//! promotion wait, and how many DynamoDB requests the pair makes per minute when nothing
//! happens. Run with `cargo bench --bench ha` after `scripts/test.sh` has made `.venv`. Prints
//! the figures recorded in BENCHMARKS.md, as Markdown.

#[path = "../tests/common/ha.rs"]
#[allow(dead_code)]
mod ha;
#[path = "../tests/common/moto.rs"]
#[allow(dead_code)]
mod moto;

use ha::{Ha, taken_over_by, unix_now, wait_for};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Kills per case.
const REPS: usize = 5;
/// How long the pair is watched at rest, after it settled.
const REST: Duration = Duration::from_secs(120);
/// How long the pair runs before the counting starts.
const SETTLE: Duration = Duration::from_secs(15);

/// min / median / max, seconds.
fn spread(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "{:.1} / {:.1} / {:.1} s",
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    )
}

/// Kills the leader of a settled pair `REPS` times, alternating: each time the killed daemon is
/// started again as the standby. Returns kill → the other leads, seconds.
fn at_rest() -> Vec<f64> {
    let mut ha = Ha::new();
    ha.start_both();
    let mut leader = "east";
    let mut times = Vec::new();
    for _ in 0..REPS {
        let standby = if leader == "east" { "west" } else { "east" };
        // A few renewals seen by the standby, and the kill at no particular moment.
        std::thread::sleep(Duration::from_millis(4_000 + 370 * times.len() as u64));
        ha.member_mut(leader).sigkill();
        let took = ha.wait_leads(standby, Duration::from_secs(40));
        times.push(took.as_secs_f64());
        ha.member_mut(leader).start();
        ha.wait_standby(leader, Duration::from_secs(30));
        leader = standby;
    }
    times
}

/// A fresh pair per kill: a failover through east, east killed inside the promotion wait.
/// Returns (kill → west leads, kill → west's TakenOver), seconds.
fn during_a_run() -> (Vec<f64>, Vec<f64>) {
    let (mut leads, mut taken) = (Vec::new(), Vec::new());
    for _ in 0..REPS {
        let mut ha = Ha::start();
        ha.moto.timings(json!({"failover_running": 25.0}));
        let run = ha.east.failover("us-west-2", "takeover bench");
        wait_for(
            Duration::from_secs(60),
            Duration::from_millis(100),
            "the promotion in progress",
            || {
                ha.moto.applied().get("FailoverGlobalCluster") == Some(&1)
                    && ha.moto.state()["global_clusters"]["yt-video-creator-global"]["failover_state"]
                        ["Status"]
                        == "failing-over"
            },
            || ha.logs(),
        );
        let killed_at = unix_now();
        ha.east.sigkill();
        leads.push(ha.wait_leads("west", Duration::from_secs(40)).as_secs_f64());
        let view = ha.wait_finished("west", &run, Duration::from_secs(120));
        assert!(
            matches!(
                view.status,
                Some(dr::core::run::RunStatus::Finished {
                    outcome: dr::core::run::RunOutcome::Succeeded
                })
            ),
            "{view:?}"
        );
        assert_eq!(ha.moto.applied(), ha::failover_mutations());
        let events = ha.events(&run);
        let event = taken_over_by(&events, "dr-west").expect("a TakenOver by dr-west");
        taken.push(event.at.millis() as f64 / 1000.0 - killed_at);
    }
    (leads, taken)
}

/// DynamoDB requests per minute of each daemon, by operation, over `REST` with nothing
/// happening, `poll` between observations.
fn requests_at_rest(poll: &str) -> (f64, BTreeMap<String, BTreeMap<String, u64>>) {
    let mut ha = Ha::with_poll(poll);
    ha.start_both();
    std::thread::sleep(SETTLE);
    ha.moto.reset_requests();
    let start = Instant::now();
    std::thread::sleep(REST);
    let counts = ha.moto.requests();
    assert!(start.elapsed() >= REST);
    assert!(ha.east.leads(), "{}", ha.logs());
    assert_eq!(ha.west.role().as_deref(), Some("standby"));
    let minutes = counts.elapsed.as_secs_f64() / 60.0;
    let mut by_key: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ((key, service, op), n) in counts.counts {
        if service == "dynamodb" {
            *by_key.entry(key).or_default().entry(op).or_default() += n;
        }
    }
    (minutes, by_key)
}

fn main() {
    let started = Instant::now();
    let rest = at_rest();
    let (run_leads, run_taken) = during_a_run();
    let fast = requests_at_rest("500ms");
    let shipped = requests_at_rest("10s");

    println!();
    println!("## Two daemons: takeover and the shared store's requests");
    println!();
    println!(
        "`cargo bench --bench ha` (release build), {}; two `dr daemon` processes against the AWS emulator (tests/python/moto_launcher.py) on loopback, sharing the store table on its DynamoDB, with the default 10 s lease (renewed every 2 s).",
        ha::machine()
    );
    println!();
    println!(
        "**Takeover.** The leader is killed with SIGKILL; the standby's `/api/v1/status` is read every 100 ms until it says it leads. {REPS} kills per row; 500 ms polls."
    );
    println!();
    println!(
        "| leader killed | kill → standby leads (min / median / max) | kill → `TakenOver` in the run's log |"
    );
    println!("|---|---|---|");
    println!("| at rest (no run) | {} | no run |", spread(&rest));
    println!(
        "| inside a failover's promotion wait | {} | {} |",
        spread(&run_leads),
        spread(&run_taken)
    );
    println!();
    println!(
        "The standby takes over once it has seen the same lease item for a whole lease (10 s of its own clock) and reads it every 2 s; the leader renewed at most 2 s before it died. So kill → leads is between 8 and about 12 s, plus the tick that publishes it. Every run above finished with each mutation applied once."
    );
    println!();
    println!(
        "**DynamoDB requests at rest.** Both daemons watching, nothing happening, counted by the emulator per access key for {} s after {} s of settling:",
        REST.as_secs(),
        SETTLE.as_secs()
    );
    println!();
    println!("| polls | daemon | role | requests/min | by operation (per minute) |");
    println!("|---|---|---|---|---|");
    for (poll, (minutes, by_key)) in [("500 ms", &fast), ("10 s (shipped)", &shipped)] {
        for (key, daemon, role) in [
            ("daemon-east", "dr-east", "leader"),
            ("daemon-west", "dr-west", "standby"),
        ] {
            let ops = by_key.get(key).cloned().unwrap_or_default();
            let total: u64 = ops.values().sum();
            let detail: Vec<String> = ops
                .iter()
                .map(|(op, n)| format!("{op} {:.1}", *n as f64 / minutes))
                .collect();
            println!(
                "| {poll} | {daemon} | {role} | {:.1} | {} |",
                total as f64 / minutes,
                detail.join(", ")
            );
        }
    }
    println!();
    println!("```sh\nscripts/test.sh   # makes .venv, once\ncargo bench --bench ha\n```");
    println!();
    println!("(bench wall time {:.0} s)", started.elapsed().as_secs_f64());
}
