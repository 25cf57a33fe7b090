//! Checkpoint latency by store: the time of one `append` (a step's intent or outcome, written
//! before the engine goes on) and of one lease renewal, for the memory store, the redb store in
//! a temporary folder and the DynamoDB store against the emulator, in one run so that they
//! compare as ratios. Run with `cargo bench --bench store` after `scripts/test.sh` has made
//! `.venv`.
//!
//! The emulator is moto on loopback, serving one call at a time: its figures are the store's
//! own cost (requests, SDK, JSON, the runtime's hand-off) plus moto's, not DynamoDB's; a real
//! table adds a network round trip per request (a cross-region one per write on an MRSC table).

#[path = "../tests/common/moto.rs"]
#[allow(dead_code)]
mod moto;

use dr::core::ids::{Actor, RunId, StepName};
use dr::core::lease::LeaseRecord;
use dr::core::run::RunEvent;
use dr::core::time::Timestamp;
use dr::store::{DynamoSettings, DynamoStore, MemoryStore, RedbStore, Store, contract};
use moto::{Moto, STORE_REGION, STORE_TABLE, seed_world_with_table};
use std::time::{Duration, Instant};

const APPENDS: usize = 200;
const RENEWALS: usize = 200;

struct Figures {
    append: Vec<Duration>,
    renew: Vec<Duration>,
}

/// Appends `APPENDS` events to a new run (the log grows as a run's does), then renews a lease
/// `RENEWALS` times.
fn measure(store: &dyn Store) -> Figures {
    let run = RunId::new("r-bench");
    store
        .create_run(&contract::header("r-bench"), &Actor::new("bench"), "bench")
        .unwrap();
    let mut append = Vec::with_capacity(APPENDS);
    for i in 0..APPENDS {
        let event = if i == 0 {
            RunEvent::StepStarted {
                step: StepName::Preflight,
                attempt: 1,
            }
        } else {
            RunEvent::StepProgress {
                step: StepName::Preflight,
                note: format!("checked {i} of {APPENDS}"),
            }
        };
        let start = Instant::now();
        store
            .append(&run, Timestamp(1_000 + i as i64), &Actor::engine(), event)
            .unwrap();
        append.push(start.elapsed());
    }
    let mut lease =
        LeaseRecord::successor(None, "bench", None, Duration::from_secs(10), Timestamp(0));
    assert!(store.swap_lease(None, &lease).unwrap());
    let mut renew = Vec::with_capacity(RENEWALS);
    for i in 0..RENEWALS {
        let next = lease.renewed(Timestamp(i as i64));
        let start = Instant::now();
        assert!(store.swap_lease(Some(&lease), &next).unwrap());
        renew.push(start.elapsed());
        lease = next;
    }
    Figures { append, renew }
}

fn percentile(times: &[Duration], p: f64) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000_000.0
}

/// One line: p50, p95 and max, and the p50 as a multiple of `base`'s.
fn line(name: &str, times: &[Duration], base: &[Duration]) {
    let p50 = percentile(times, 0.5);
    println!(
        "  {name:<20} {:>10.1} {:>10.1} {:>10.1}   x{:.2}",
        us(p50),
        us(percentile(times, 0.95)),
        us(*times.iter().max().unwrap()),
        p50.as_secs_f64() / percentile(base, 0.5).as_secs_f64(),
    );
}

fn main() {
    let memory = MemoryStore::new();
    let memory = measure(&memory);

    let dir = tempfile::tempdir().unwrap();
    let redb = RedbStore::open(&dir.path().join("store.redb")).unwrap();
    let redb = measure(&redb);

    let moto = Moto::start(dir.path(), &seed_world_with_table());
    let dynamo = DynamoStore::connect_with_credentials(
        &DynamoSettings {
            table: STORE_TABLE.into(),
            region: STORE_REGION.into(),
            endpoint_url: Some(moto.endpoint()),
            ..DynamoSettings::default()
        },
        "bench",
        "testing",
    )
    .unwrap();
    moto.reset_requests();
    let dynamo = measure(&dynamo);
    let requests = moto.dynamodb_requests();

    let rows = [
        ("memory", &memory),
        ("redb", &redb),
        ("dynamodb (emulator)", &dynamo),
    ];
    let header = |what: &str| {
        println!("{what}");
        println!(
            "  {:<20} {:>10} {:>10} {:>10}   p50 / redb's p50",
            "µs", "p50", "p95", "max"
        );
    };
    header(&format!("append, {APPENDS} to one run"));
    for (name, f) in rows {
        line(name, &f.append, &redb.append);
    }
    let early = APPENDS / 4;
    header(&format!(
        "append, the first {early} (a log of up to {early} events)"
    ));
    for (name, f) in rows {
        line(name, &f.append[..early], &redb.append[..early]);
    }
    header(&format!(
        "append, the last {early} (a log of {} to {APPENDS} events)",
        APPENDS - early
    ));
    for (name, f) in rows {
        line(
            name,
            &f.append[APPENDS - early..],
            &redb.append[APPENDS - early..],
        );
    }
    header(&format!("lease renewal, {RENEWALS}"));
    for (name, f) in rows {
        line(name, &f.renew, &redb.renew);
    }
    let count = |op: &str| {
        requests
            .get(&("bench".to_string(), op.to_string()))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "dynamodb requests for the run's creation, {APPENDS} appends and {} lease writes: GetItem {}, Query {}, PutItem {}, UpdateItem {}",
        RENEWALS + 1,
        count("GetItem"),
        count("Query"),
        count("PutItem"),
        count("UpdateItem"),
    );
}
