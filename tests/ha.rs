//! Two real `dr daemon` processes sharing one checkpoint store on the emulator's DynamoDB, with
//! the default 10 s leader lease: east (`dr-east`, us-east-1) leads, west (`dr-west`, us-west-2)
//! stands by. The leader is killed (SIGKILL) inside each of a failover's waits, stopped
//! (SIGSTOP) past its lease and woken again, and cut off from DynamoDB alone; the standby must
//! take over, finish the run with each mutation applied once, and the old leader must never act
//! again. The CLI's view of the pair (`dr status`, `/metrics`) and a manual `dr failover` beside
//! a live or a dead leader are checked too. tests/leader.rs does the same in virtual time.
//!
//! Each test starts its own emulator and daemons; the tests run one at a time, so that their
//! timings (all measured in real time) do not depend on each other's load. Every child process
//! is killed on exit, every wait is bounded, and all traffic stays on 127.0.0.1.

#[path = "common/ha.rs"]
#[allow(dead_code)]
mod ha;
#[path = "common/moto.rs"]
#[allow(dead_code)]
mod moto;

use dr::core::run::{EventRecord, RunOutcome, RunStatus};
use ha::{Ha, failover_mutations, taken_over_by, unix_now, wait_for};
use serde_json::{Value, json};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long the emulated wait the leader is killed in lasts, seconds: longer than a takeover.
const LONG_WAIT: f64 = 25.0;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Wait {
    /// The global cluster's promotion.
    Promotion,
    /// The target's node group update (the promotion done).
    NodeGroup,
    /// The record change, until INSYNC.
    Dns,
}

impl Wait {
    /// The launcher's timing that makes this wait long.
    fn timing(self) -> &'static str {
        match self {
            Wait::Promotion => "failover_running",
            Wait::NodeGroup => "nodegroup_update",
            Wait::Dns => "dns_change",
        }
    }
}

/// Whether the emulator shows the run inside `wait` now: the mutation was applied and the
/// operation is still in progress.
fn inside(ha: &Ha, wait: Wait) -> bool {
    let applied = ha.moto.applied();
    let state = ha.moto.state();
    match wait {
        Wait::Promotion => {
            applied.get("FailoverGlobalCluster") == Some(&1)
                && state["global_clusters"]["yt-video-creator-global"]["failover_state"]["Status"]
                    == "failing-over"
        }
        Wait::NodeGroup => {
            applied.get("UpdateNodegroupConfig") == Some(&1)
                && state["nodegroups"]["us-west-2/yt-video-creator-west/general"]["status"]
                    == "UPDATING"
                && ha.moto.writer() == "us-west-2"
        }
        Wait::Dns => {
            let calls = ha.moto.calls();
            let Some(change) = calls
                .iter()
                .find(|c| c["op"] == "ChangeResourceRecordSets" && c["outcome"] == "ok")
            else {
                return false;
            };
            let sent = change["t"].as_f64().unwrap();
            // Followed at least once, and well before the change goes INSYNC.
            applied.get("ChangeResourceRecordSets") == Some(&1)
                && calls.iter().any(|c| {
                    c["op"] == "GetChange"
                        && c["access_key"] == "daemon-east"
                        && c["t"].as_f64().unwrap() > sent
                })
                && unix_now() - sent < LONG_WAIT - 10.0
        }
    }
}

fn succeeded(view: &dr::api::view::RunView) -> bool {
    matches!(
        view.status,
        Some(RunStatus::Finished {
            outcome: RunOutcome::Succeeded
        })
    )
}

/// The events as lines, for failure messages.
fn show(events: &[EventRecord]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{:>3} epoch {:?} {} {}",
                e.seq,
                e.epoch,
                e.actor,
                serde_json::to_string(&e.event).unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The checks every takeover of a run shares: `TakenOver` by dr-west with epoch 2, no event of
/// an older epoch after it, the run succeeded, each mutation applied once (and the changes
/// that are not idempotent sent once), and the world failed over. Returns the `TakenOver`'s
/// time, Unix seconds.
fn assert_taken_over_and_finished_once(ha: &Ha, run: &str) -> f64 {
    let view = ha.wait_finished("west", run, Duration::from_secs(120));
    let events = ha.events(run);
    assert!(
        succeeded(&view),
        "{view:?}\n{}\n{}",
        show(&events),
        ha.logs()
    );
    let taken = taken_over_by(&events, "dr-west")
        .unwrap_or_else(|| panic!("no TakenOver by dr-west\n{}", show(&events)))
        .clone();
    assert_eq!(taken.epoch, Some(2), "{}", show(&events));
    for event in events.iter().filter(|e| e.seq > taken.seq) {
        assert!(
            event.epoch.is_none_or(|epoch| epoch >= 2),
            "an event of an older epoch after the takeover: {event:?}\n{}",
            show(&events)
        );
    }
    for event in events.iter().filter(|e| e.seq < taken.seq) {
        assert!(
            event.epoch.is_none_or(|epoch| epoch == 1),
            "{event:?}\n{}",
            show(&events)
        );
    }
    let applied = ha.moto.applied();
    assert_eq!(applied, failover_mutations(), "{}", ha.logs());
    assert_eq!(ha.moto.state()["eks_updates"], 1);
    let sent_ok: Vec<Value> = ha
        .moto
        .calls()
        .into_iter()
        .filter(|c| ha::MUTATIONS.contains(&c["op"].as_str().unwrap_or("")))
        .filter(|c| c["outcome"] == "ok")
        .collect();
    for op in [
        "FailoverGlobalCluster",
        "UpdateAutoScalingGroup",
        "ChangeResourceRecordSets",
    ] {
        let n = sent_ok.iter().filter(|c| c["op"] == op).count();
        assert_eq!(n, 1, "{op} sent {n} times: {sent_ok:?}");
    }
    let tokens: std::collections::BTreeSet<&str> = sent_ok
        .iter()
        .filter(|c| c["op"] == "UpdateNodegroupConfig")
        .map(|c| c["params"]["clientRequestToken"].as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 1, "{sent_ok:?}");
    assert_eq!(ha.moto.writer(), "us-west-2");
    assert_eq!(ha.moto.dns_regions(), vec!["us-west-2"]);
    let lease = ha.west.status().and_then(|s| s.lease).unwrap();
    assert_eq!(
        (lease.role.as_str(), lease.leader.as_deref(), lease.epoch),
        ("leader", Some("dr-west"), Some(2))
    );
    taken.at.millis() as f64 / 1000.0
}

#[test]
fn the_leader_carries_a_failover_out_and_the_standby_only_watches() {
    let _one = serial();
    let started = Instant::now();
    let ha = Ha::start();

    // The standby refuses to start a run: it does not hold the lease.
    let (code, text) = ha::request(
        ha.west.port,
        "POST",
        "/api/v1/failover",
        Some(&json!({"to": "us-west-2", "reason": "to the standby"})),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(code, 409, "{text}");
    assert!(
        text.contains("leader lease") && text.contains("dr-east holds it"),
        "{text}"
    );

    let run = ha.east.failover("us-west-2", "undisturbed");
    let view = ha.wait_finished("east", &run, Duration::from_secs(90));
    let events = ha.events(&run);
    assert!(succeeded(&view), "{view:?}\n{}", show(&events));
    assert_eq!(ha.moto.applied(), failover_mutations(), "{}", ha.logs());
    assert!(ha.mutations_by("daemon-west", 0.0).is_empty());
    assert!(ha.mutations_by("operator", 0.0).is_empty());
    assert_eq!(ha.mutations_by("daemon-east", 0.0).len(), 4);
    assert!(taken_over_by(&events, "dr-west").is_none());
    assert!(
        events
            .iter()
            .all(|e| e.epoch.is_none_or(|epoch| epoch == 1)),
        "{}",
        show(&events)
    );
    assert!(events.iter().any(|e| e.epoch == Some(1)));
    assert_eq!(ha.moto.writer(), "us-west-2");
    assert_eq!(ha.west.role().as_deref(), Some("standby"));
    assert!(ha.east.leads());
    println!(
        "undisturbed run through the leader: {:.1?}",
        started.elapsed()
    );
}

/// Starts a failover through east, SIGKILLs east inside `wait`, and checks that west takes the
/// run over and finishes it, each mutation once. Prints the takeover time.
fn sigkill_the_leader_during(wait: Wait) {
    let _one = serial();
    let started = Instant::now();
    let mut ha = Ha::start();
    ha.moto.timings(json!({ wait.timing(): LONG_WAIT }));
    let run = ha.east.failover("us-west-2", "kill the leader");
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(100),
        &format!("the run inside the {wait:?} wait"),
        || inside(&ha, wait),
        || ha.logs(),
    );
    let before = ha.moto.applied();
    let killed_at = unix_now();
    ha.east.sigkill();
    let to_leader = ha.wait_leads("west", Duration::from_secs(30));
    let taken_at = assert_taken_over_and_finished_once(&ha, &run);
    let to_taken_over = taken_at - killed_at;
    // The mutation whose wait east died in had been applied, by east; west followed it.
    let op = match wait {
        Wait::Promotion => "FailoverGlobalCluster",
        Wait::NodeGroup => "UpdateNodegroupConfig",
        Wait::Dns => "ChangeResourceRecordSets",
    };
    assert_eq!(before.get(op), Some(&1));
    // West cannot have taken over before east's lease ran out: east renewed at most 2 s before
    // it died, and west waits a whole lease period after the last renewal it saw.
    assert!(
        to_leader >= Duration::from_millis(7_500),
        "west led {to_leader:?} after the kill"
    );
    assert!(to_leader <= Duration::from_secs(20), "{to_leader:?}");
    assert!((7.5..=20.0).contains(&to_taken_over), "{to_taken_over}");
    println!(
        "SIGKILL during the {wait:?} wait: west leads {:.2} s after the kill, TakenOver {:.2} s after it; test {:.1?}",
        to_leader.as_secs_f64(),
        to_taken_over,
        started.elapsed()
    );
}

#[test]
fn sigkill_of_the_leader_during_the_promotion_wait() {
    sigkill_the_leader_during(Wait::Promotion);
}

#[test]
fn sigkill_of_the_leader_during_the_node_group_wait() {
    sigkill_the_leader_during(Wait::NodeGroup);
}

#[test]
fn sigkill_of_the_leader_during_the_dns_wait() {
    sigkill_the_leader_during(Wait::Dns);
}

#[test]
fn a_leader_stopped_past_its_lease_never_acts_again_once_woken() {
    let _one = serial();
    let started = Instant::now();
    let ha = Ha::start();
    // The promotion lasts past the takeover, and past the moment west finishes.
    ha.moto.timings(json!({"failover_running": 20.0}));
    let run = ha.east.failover("us-west-2", "stop the leader");
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(100),
        "the run inside the promotion wait",
        || inside(&ha, Wait::Promotion),
        || ha.logs(),
    );
    ha.east.signal("-STOP");
    let to_leader = ha.wait_leads("west", Duration::from_secs(30));
    assert!(to_leader >= Duration::from_millis(7_500), "{to_leader:?}");
    assert_taken_over_and_finished_once(&ha, &run);

    // East wakes up, its lease long gone on its own clock.
    let log_before = ha.east.log_text().len();
    let woken_at = unix_now();
    let woken = Instant::now();
    ha.east.signal("-CONT");
    ha.wait_standby("east", Duration::from_secs(15));
    // For 15 s, it never says it leads, and it makes no change.
    while woken.elapsed() < Duration::from_secs(15) {
        let status = ha.east.status();
        if let Some(lease) = status.and_then(|s| s.lease) {
            assert_eq!(lease.role, "standby", "{lease:?}\n{}", ha.logs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let made = ha.mutations_by("daemon-east", woken_at);
    assert!(made.is_empty(), "east acted after waking: {made:?}");
    let log = ha.east.log_text();
    let after = &log[log_before.min(log.len())..];
    assert!(
        after.contains("lost the leader lease")
            || after.contains("standing by: no longer the leader"),
        "east's log does not say it stood down:\n{}",
        ha::tail(after)
    );
    println!(
        "east after SIGCONT:\n{}",
        after
            .lines()
            .filter(|l| l.contains("lease") || l.contains("standing") || l.contains("refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let lease = ha.east.status().and_then(|s| s.lease).unwrap();
    assert_eq!(
        (lease.role.as_str(), lease.leader.as_deref(), lease.epoch),
        ("standby", Some("dr-west"), Some(2))
    );
    // Nothing of epoch 1 after west's TakenOver, now that east had every chance to write.
    let events = ha.events(&run);
    let taken = taken_over_by(&events, "dr-west").unwrap();
    assert!(
        events
            .iter()
            .filter(|e| e.seq > taken.seq)
            .all(|e| e.epoch != Some(1)),
        "{}",
        show(&events)
    );
    assert_eq!(ha.moto.applied(), failover_mutations());
    assert!(ha.west.leads());
    println!(
        "SIGSTOP past the lease: west leads {:.2} s after the stop; test {:.1?}",
        to_leader.as_secs_f64(),
        started.elapsed()
    );
}

#[test]
fn dynamodb_failing_for_the_leader_alone_hands_the_lease_and_the_run_to_the_standby() {
    let _one = serial();
    let started = Instant::now();
    let ha = Ha::start();
    ha.moto.timings(json!({"failover_running": 20.0}));
    let run = ha.east.failover("us-west-2", "the leader loses its store");
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(100),
        "the run inside the promotion wait",
        || inside(&ha, Wait::Promotion),
        || ha.logs(),
    );
    let faulted_at = unix_now();
    let faulted = Instant::now();
    ha.moto.client_fault(
        "daemon-east",
        json!({"service": "dynamodb", "kind": "error", "count": 1_000_000}),
    );
    // East stops acting on its own clock, store or not: its log says it stands by, and its
    // /health fails while its store does. West takes over once the lease lapsed.
    let (mut stood_down, mut unhealthy, mut west_leads) = (None, None, None);
    wait_for(
        Duration::from_secs(40),
        Duration::from_millis(100),
        "east to stand down and west to lead",
        || {
            if stood_down.is_none()
                && ha
                    .east
                    .log_text()
                    .contains("standing by: no longer the leader")
            {
                stood_down = Some(faulted.elapsed());
            }
            if unhealthy.is_none()
                && ha::request(ha.east.port, "GET", "/health", None, Duration::from_secs(2))
                    .is_some_and(|(code, _)| code == 503)
            {
                unhealthy = Some(faulted.elapsed());
            }
            if west_leads.is_none() && ha.west.leads() {
                west_leads = Some(faulted.elapsed());
            }
            stood_down.is_some() && unhealthy.is_some() && west_leads.is_some()
        },
        || ha.logs(),
    );
    let (stood_down, unhealthy, west_leads) =
        (stood_down.unwrap(), unhealthy.unwrap(), west_leads.unwrap());
    assert!(
        stood_down <= Duration::from_secs(16),
        "east stood down {stood_down:?} after its store failed"
    );
    // East renewed at most 2 s before the fault; west waits a whole lease after that.
    assert!(
        west_leads >= Duration::from_millis(7_500),
        "west took over {west_leads:?} after the fault"
    );
    assert_taken_over_and_finished_once(&ha, &run);
    let made = ha.mutations_by("daemon-east", faulted_at);
    assert!(
        made.is_empty(),
        "east acted with its store failing: {made:?}"
    );

    // The store answers east again: it comes back as a standby.
    ha.moto.clear_faults();
    let back = Instant::now();
    ha.wait_standby("east", Duration::from_secs(30));
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(100),
        "east's /health to recover",
        || {
            ha::request(ha.east.port, "GET", "/health", None, Duration::from_secs(2))
                .is_some_and(|(code, _)| code == 200)
        },
        || ha.logs(),
    );
    while back.elapsed() < Duration::from_secs(6) {
        assert_ne!(ha.east.role().as_deref(), Some("leader"), "{}", ha.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let lease = ha.west.status().and_then(|s| s.lease).unwrap();
    assert_eq!(
        (lease.leader.as_deref(), lease.epoch),
        (Some("dr-west"), Some(2))
    );
    assert!(ha.mutations_by("daemon-east", faulted_at).is_empty());
    assert_status_names(&ha, "dr-west (us-west-2)", 2, "dr-east (us-east-1)");
    println!(
        "DynamoDB failing for the leader: east's /health failed {:.2} s after, east stood down {:.2} s after, west leads {:.2} s after; test {:.1?}",
        unhealthy.as_secs_f64(),
        stood_down.as_secs_f64(),
        west_leads.as_secs_f64(),
        started.elapsed()
    );
}

/// `dr status` on the shared store names the leader with its epoch and the standby, and both
/// daemons' `/metrics` agree.
fn assert_status_names(ha: &Ha, leader: &str, epoch: u64, standby: &str) {
    let last = std::cell::RefCell::new(String::new());
    wait_for(
        Duration::from_secs(15),
        Duration::from_millis(500),
        "dr status to name the leader and the standby",
        || {
            let out = ha.cli().arg("status").output().unwrap();
            let text = output_text(&out);
            let named = out.status.code() == Some(0)
                && text.contains(&format!("Leader: {leader}, lease epoch {epoch}"))
                && text.contains(&format!("Standby: {standby}"));
            *last.borrow_mut() = text;
            named
        },
        || last.borrow().clone(),
    );
    let (leader_member, standby_member) = if leader.starts_with("dr-west") {
        (&ha.west, &ha.east)
    } else {
        (&ha.east, &ha.west)
    };
    let metrics = leader_member.metrics().unwrap();
    for line in [
        format!(
            "dr_leader{{daemon=\"{}\",region=\"{}\"}} 1",
            leader_member.id, leader_member.region
        ),
        format!("dr_lease_epoch {epoch}"),
        "dr_daemons{role=\"leader\"} 1".to_string(),
        "dr_daemons{role=\"standby\"} 1".to_string(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in the leader's metrics:\n{metrics}"
        );
    }
    let metrics = standby_member.metrics().unwrap();
    let line = format!(
        "dr_leader{{daemon=\"{}\",region=\"{}\"}} 0",
        standby_member.id, standby_member.region
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} not in the standby's metrics:\n{metrics}"
    );
    let status = leader_member.status().unwrap();
    let mut daemons: Vec<(String, String)> = status
        .daemons
        .iter()
        .map(|d| (d.daemon.clone(), d.role.clone()))
        .collect();
    daemons.sort();
    let mut expected = vec![
        (leader_member.id.to_string(), "leader".to_string()),
        (standby_member.id.to_string(), "standby".to_string()),
    ];
    expected.sort();
    assert_eq!(daemons, expected);
}

#[test]
fn status_and_metrics_name_the_leader_and_a_clean_shutdown_hands_over_at_once() {
    let _one = serial();
    let started = Instant::now();
    let mut ha = Ha::start();
    assert_status_names(&ha, "dr-east (us-east-1)", 1, "dr-west (us-west-2)");

    // SIGTERM: east releases the lease, and west takes it at its next round (every 2 s).
    let stopped = Instant::now();
    assert_eq!(ha.east.sigterm(), Some(0), "{}", ha.logs());
    ha.wait_leads("west", Duration::from_secs(10));
    let handover = stopped.elapsed();
    assert!(handover <= Duration::from_secs(6), "{handover:?}");

    ha.east.start();
    ha.wait_standby("east", Duration::from_secs(30));
    assert_status_names(&ha, "dr-west (us-west-2)", 2, "dr-east (us-east-1)");
    println!(
        "clean shutdown: west leads {:.2} s after SIGTERM; test {:.1?}",
        handover.as_secs_f64(),
        started.elapsed()
    );
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_manual_failover_goes_to_the_leading_daemon_and_runs_locally_only_once_both_are_gone() {
    let _one = serial();
    let started = Instant::now();
    let mut ha = Ha::start();

    // No API token: refused, naming the daemon; nothing started, nothing changed.
    let asked = Instant::now();
    let out = ha
        .cli()
        .args([
            "failover",
            "--to",
            "us-west-2",
            "--yes",
            "--reason",
            "by hand",
        ])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("the daemon dr-east (leader lease epoch 1) carries out runs"),
        "{text}"
    );
    assert!(text.contains("DR_API_TOKEN"), "{text}");
    println!(
        "without a token: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "{:?}",
        asked.elapsed()
    );
    let runs = ha::request(
        ha.east.port,
        "GET",
        "/api/v1/runs",
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(runs.0, 200);
    assert_eq!(serde_json::from_str::<Value>(&runs.1).unwrap(), json!([]));
    assert!(ha.moto.applied().is_empty());

    // With the token: sent to the leader's API; the leader carries it out.
    let out = ha
        .cli()
        .env("DR_API_URL", format!("http://127.0.0.1:{}", ha.east.port))
        .env("DR_API_TOKEN", ha::TOKEN)
        .args([
            "failover",
            "--to",
            "us-west-2",
            "--yes",
            "--reason",
            "by hand",
        ])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", ha.logs());
    assert_eq!(ha.moto.applied(), failover_mutations());
    assert_eq!(ha.mutations_by("daemon-east", 0.0).len(), 4);
    assert!(ha.mutations_by("operator", 0.0).is_empty());
    assert!(ha.mutations_by("daemon-west", 0.0).is_empty());
    assert_eq!(ha.moto.writer(), "us-west-2");

    // Both daemons die. The CLI watches the lease for a lease period, sees nobody renew it,
    // takes it, and carries the run out itself.
    ha.east.sigkill();
    ha.west.sigkill();
    let killed_at = unix_now();
    let asked = Instant::now();
    let out = ha
        .cli()
        .args([
            "failover",
            "--to",
            "us-east-1",
            "--yes",
            "--reason",
            "nobody leads",
        ])
        .output()
        .unwrap();
    let took = asked.elapsed();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("watching it"), "{text}");
    assert!(
        (Duration::from_secs(7)..=Duration::from_secs(40)).contains(&took),
        "{took:?}\n{text}"
    );
    let by_cli = ha.mutations_by("operator", killed_at);
    assert_eq!(
        by_cli
            .iter()
            .filter(|c| c["op"] == "FailoverGlobalCluster" && c["outcome"] == "ok")
            .count(),
        1,
        "{by_cli:?}"
    );
    assert!(ha.mutations_by("daemon-east", killed_at).is_empty());
    assert!(ha.mutations_by("daemon-west", killed_at).is_empty());
    assert_eq!(ha.moto.writer(), "us-east-1");
    assert_eq!(ha.moto.applied().get("FailoverGlobalCluster"), Some(&2));
    // It released the lease at the end.
    let out = ha.cli().arg("status").output().unwrap();
    let text = output_text(&out);
    assert!(text.contains("released the lease"), "{text}");
    println!(
        "CLI beside dead daemons: carried the run out {:.2} s after asking; test {:.1?}",
        took.as_secs_f64(),
        started.elapsed()
    );
}
