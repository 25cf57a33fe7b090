//! `DynamoStore` against the emulator's DynamoDB: the store contract, consistent reads only, a
//! missing table or a wrong schema, faults of this client (500, throttling, a held request,
//! write conflicts between regions), writes cut off halfway, damaged items, and two processes
//! appending to one run at once.
//!
//! Each test starts its own emulator. The two-process test runs this binary again as its
//! children (`concurrent_append_child`, a no-op without its environment).

mod common;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use common::moto::{Moto, STORE_REGION, STORE_TABLE, seed_world_with_table};
use dr::core::ids::{Actor, RunId, StepName};
use dr::core::lease::LeaseRecord;
use dr::core::run::{RunEvent, RunOutcome, StepOutcome, Trigger};
use dr::core::time::Timestamp;
use dr::store::{DynamoSettings, DynamoStore, Store, StoreError, contract};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The access key the store under test signs with; faults name it.
const KEY: &str = "dr-store";
/// The access key of the raw client that writes items behind the store's back.
const RAW: &str = "raw";
/// A second table, for a second fresh store in one emulator.
const LEASE_TABLE: &str = "dr-store-lease";

fn setup() -> (tempfile::TempDir, Moto) {
    let dir = tempfile::tempdir().unwrap();
    let mut world = seed_world_with_table();
    world["dynamodb_tables"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": LEASE_TABLE, "region": STORE_REGION}));
    let moto = Moto::start(dir.path(), &world);
    (dir, moto)
}

fn settings(moto: &Moto, table: &str) -> DynamoSettings {
    DynamoSettings {
        table: table.into(),
        region: STORE_REGION.into(),
        endpoint_url: Some(moto.endpoint()),
        profile: None,
        attempt_timeout: Duration::from_millis(500),
        call_timeout: Duration::from_secs(3),
    }
}

fn store(moto: &Moto, table: &str) -> DynamoStore {
    DynamoStore::connect_with_credentials(&settings(moto, table), KEY, "testing").unwrap()
}

/// Runs `f` with the raw client (it never retries), on a runtime of its own.
fn raw<T>(moto: &Moto, f: impl AsyncFnOnce(aws_sdk_dynamodb::Client) -> T) -> T {
    let client = moto.dynamodb_client(RAW, STORE_REGION);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f(client))
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_string())
}

/// Sets attribute `attr` of item (`pk`, `sk`) to `value`, behind the store's back.
fn scribble(moto: &Moto, pk: &str, sk: &str, attr: &str, value: AttributeValue) {
    raw(moto, async |c| {
        c.update_item()
            .table_name(STORE_TABLE)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression("SET #a = :v")
            .expression_attribute_names("#a", attr)
            .expression_attribute_values(":v", value)
            .send()
            .await
            .unwrap();
    });
}

/// Item (`pk`, `sk`), read by the raw client.
fn item(moto: &Moto, pk: &str, sk: &str) -> Option<HashMap<String, AttributeValue>> {
    raw(moto, async |c| {
        c.get_item()
            .table_name(STORE_TABLE)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
    })
}

fn started(attempt: u32) -> RunEvent {
    RunEvent::StepStarted {
        step: StepName::Preflight,
        attempt,
    }
}

/// The store's DynamoDB calls in the emulator's log: (op, consistent_read, outcome).
fn store_calls(moto: &Moto, key: &str) -> Vec<(String, Option<bool>, String)> {
    moto.calls()
        .iter()
        .filter(|c| c["service"] == "dynamodb" && c["access_key"] == key)
        .map(|c| {
            (
                c["op"].as_str().unwrap().to_string(),
                c["consistent_read"].as_bool(),
                c["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_contract_holds_with_consistent_reads_and_the_policys_operations_only() {
    let (_dir, moto) = setup();
    let main = store(&moto, STORE_TABLE);
    assert_eq!(main.table(), STORE_TABLE);
    contract::check(&main);
    let lease = store(&moto, LEASE_TABLE);
    contract::check_lease(&lease);

    let calls = store_calls(&moto, KEY);
    assert!(calls.len() > 50, "{calls:?}");
    let allowed = ["GetItem", "PutItem", "UpdateItem", "Query", "DescribeTable"];
    for (op, consistent, outcome) in &calls {
        assert!(allowed.contains(&op.as_str()), "{op} is not in the policy");
        if op == "GetItem" || op == "Query" {
            assert_eq!(*consistent, Some(true), "an eventually consistent {op}");
        }
        // Refused conditional writes answer 400; nothing else failed.
        assert!(
            outcome == "ok" || (outcome == "HTTP 400" && op != "GetItem" && op != "Query"),
            "{op}: {outcome}"
        );
    }
    // Each store checked its table once.
    let described = calls.iter().filter(|c| c.0 == "DescribeTable").count();
    assert_eq!(described, 2);
}

#[test]
fn a_missing_table_or_a_wrong_schema_is_a_clear_error() {
    let (_dir, moto) = setup();
    let err = DynamoStore::connect_with_credentials(&settings(&moto, "nope"), KEY, "testing")
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Io { .. }), "{text}");
    for part in [
        "dynamodb://nope",
        "no DynamoDB table nope in us-east-2",
        "deploy/dynamodb/",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    // The table exists, in another region.
    let mut elsewhere = settings(&moto, STORE_TABLE);
    elsewhere.region = "us-west-2".into();
    let err = DynamoStore::connect_with_credentials(&elsewhere, KEY, "testing")
        .err()
        .unwrap();
    assert!(err.to_string().contains("in us-west-2"), "{err}");

    raw(&moto, async |c| {
        c.create_table()
            .table_name("wrong")
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("id")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    });
    let err = DynamoStore::connect_with_credentials(&settings(&moto, "wrong"), KEY, "testing")
        .err()
        .unwrap();
    let text = err.to_string();
    for part in [
        "keyed by id (HASH)",
        "`pk` (string)",
        "`sk` (string)",
        "deploy/dynamodb/",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    // Denied: the IAM policy is missing; the error says who was refused what.
    moto.client_fault(
        KEY,
        json!({"service": "dynamodb", "operation": "DescribeTable", "kind": "denied"}),
    );
    let err = DynamoStore::connect_with_credentials(&settings(&moto, STORE_TABLE), KEY, "testing")
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("AccessDeniedException"), "{err}");
}

/// Runs `f` and checks it fails `Unavailable` within the call limit, naming `parts`.
fn unavailable<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    parts: &[&str],
    f: impl FnOnce() -> Result<T, StoreError>,
) {
    let start = Instant::now();
    let result = f();
    let took = start.elapsed();
    let err = result.expect_err(what);
    assert!(
        matches!(err, StoreError::Unavailable { .. }),
        "{what}: {err}"
    );
    let text = err.to_string();
    for part in parts {
        assert!(text.contains(part), "{what}: {part} is not in: {text}");
    }
    assert!(
        took < limit + Duration::from_millis(500),
        "{what} took {took:?}"
    );
}

#[test]
fn faults_of_this_client_are_unavailable_within_the_call_limit_and_break_nothing() {
    let (_dir, moto) = setup();
    let mut tight = settings(&moto, STORE_TABLE);
    tight.attempt_timeout = Duration::from_millis(300);
    tight.call_timeout = Duration::from_millis(1_500);
    let limit = tight.call_timeout;
    let store = DynamoStore::connect_with_credentials(&tight, KEY, "testing").unwrap();
    let other = DynamoStore::connect_with_credentials(&tight, "other", "testing").unwrap();
    let alice = Actor::new("alice");

    // A 500 on every call: retried by the SDK, then Unavailable naming the call and the code.
    moto.client_fault(KEY, json!({"service": "dynamodb", "kind": "error"}));
    moto.reset_requests();
    unavailable(
        "500",
        limit,
        &["GetItem", "InternalServerError", STORE_TABLE],
        || store.active_run(),
    );
    let requests = moto.dynamodb_requests();
    assert_eq!(
        requests.get(&(KEY.to_string(), "GetItem".to_string())),
        Some(&3),
        "{requests:?}"
    );
    // The other client is served meanwhile.
    assert_eq!(other.active_run().unwrap(), None);
    unavailable("500 on a write", limit, &["InternalServerError"], || {
        store.create_run(&contract::header("r-1"), &alice, "x")
    });
    moto.clear_faults();
    assert_eq!(store.active_run().unwrap(), None);

    moto.client_fault(KEY, json!({"service": "dynamodb", "kind": "throttle"}));
    unavailable(
        "throttled",
        limit,
        &["ProvisionedThroughputExceededException"],
        || store.lease(),
    );
    moto.clear_faults();

    // Held unanswered: the call gives up at its limit.
    moto.client_fault(KEY, json!({"service": "dynamodb", "kind": "hold"}));
    unavailable("held", limit, &["no answer"], || {
        store.append(&RunId::new("r-1"), Timestamp(1), &alice, started(1))
    });
    moto.clear_faults();
    assert_eq!(store.lease().unwrap(), None);

    // Cut off after the claim: the run exists, its header only in the control item until the
    // next write completes the copy. Reads see it meanwhile.
    moto.client_fault(
        KEY,
        json!({"service": "dynamodb", "operation": "PutItem", "kind": "error"}),
    );
    store
        .create_run(&contract::header("r-1"), &alice, "east is down")
        .unwrap();
    assert!(item(&moto, "run#r-1", "header").is_none());
    assert_eq!(store.active_run().unwrap(), Some(RunId::new("r-1")));
    assert_eq!(
        store.load_run(&RunId::new("r-1")).unwrap().unwrap().header,
        contract::header("r-1")
    );
    let listed: Vec<RunId> = store
        .list_runs(10)
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(listed, vec![RunId::new("r-1")]);
    for audit in [
        store.audit(None, 10).unwrap(),
        store.audit(Some(&RunId::new("r-1")), 10).unwrap(),
    ] {
        assert_eq!(audit.len(), 1, "{audit:?}");
        assert!(audit[0].action.contains("created"), "{audit:?}");
    }
    moto.clear_faults();
    let run = RunId::new("r-1");
    store
        .append(&run, Timestamp(2_000), &Actor::engine(), started(1))
        .unwrap();
    assert!(item(&moto, "run#r-1", "header").is_some());
    assert!(
        !item(&moto, "control", "control")
            .unwrap()
            .contains_key("creating")
    );
    assert!(matches!(
        other.create_run(&contract::header("r-2"), &alice, "y"),
        Err(StoreError::RunActive { .. })
    ));
    assert_eq!(store.list_runs(10).unwrap().len(), 1);

    // The event's audit line fails after the event is stored: the append succeeds (its event is
    // there); the line is in the run's audit at once, and in the whole log after the next append.
    moto.client_fault(
        KEY,
        json!({"service": "dynamodb", "operation": "PutItem", "kind": "error", "skip": 1}),
    );
    let progress = RunEvent::StepProgress {
        step: StepName::Preflight,
        note: "checking".into(),
    };
    let record = store
        .append(&run, Timestamp(3_000), &Actor::engine(), progress)
        .unwrap();
    assert_eq!(record.seq, 2);
    moto.clear_faults();
    let whole = |store: &DynamoStore| {
        store
            .audit(None, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect::<Vec<_>>()
    };
    assert_eq!(whole(&store).len(), 2, "{:?}", whole(&store));
    assert_eq!(store.audit(Some(&run), 100).unwrap().len(), 3);
    store
        .append(
            &run,
            Timestamp(4_000),
            &Actor::engine(),
            RunEvent::StepSucceeded {
                step: StepName::Preflight,
                outcome: StepOutcome::default(),
            },
        )
        .unwrap();
    assert_eq!(
        whole(&store),
        store
            .audit(Some(&run), 100)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect::<Vec<_>>()
    );
    assert_eq!(whole(&store).len(), 4);

    // The finished run's pointer is not cleared: it counts as no active run, and the next run
    // is created.
    moto.client_fault(
        KEY,
        json!({"service": "dynamodb", "operation": "UpdateItem", "kind": "error"}),
    );
    store
        .append(
            &run,
            Timestamp(5_000),
            &alice,
            RunEvent::Finished {
                outcome: RunOutcome::Aborted,
            },
        )
        .unwrap();
    moto.clear_faults();
    assert!(
        item(&moto, "control", "control")
            .unwrap()
            .contains_key("active_run")
    );
    assert_eq!(store.active_run().unwrap(), None);
    assert_eq!(other.active_run().unwrap(), None);
    other
        .create_run(&contract::header("r-2"), &alice, "again")
        .unwrap();
    assert_eq!(store.active_run().unwrap(), Some(RunId::new("r-2")));
    let listed: Vec<String> = store
        .list_runs(10)
        .unwrap()
        .into_iter()
        .map(|h| h.id.to_string())
        .collect();
    assert_eq!(listed, ["r-2", "r-1"]);
    assert_eq!(whole(&store).len(), 6, "{:?}", whole(&store));
}

#[test]
fn write_conflicts_between_regions_are_retried_then_reported() {
    let (_dir, moto) = setup();
    let store = store(&moto, STORE_TABLE);
    let conflict = |count: Option<u32>| {
        let mut rule = json!({
            "service": "dynamodb", "operation": "UpdateItem", "kind": "error", "status": 400,
            "code": "ReplicatedWriteConflictException"
        });
        if let Some(count) = count {
            rule["count"] = json!(count);
        }
        moto.client_fault(KEY, rule);
    };
    let east = LeaseRecord::successor(None, "east", None, Duration::from_secs(10), Timestamp(1));
    // More conflicts than the SDK's own attempts: the store sends again, and the write lands.
    conflict(Some(4));
    moto.reset_requests();
    assert!(store.swap_lease(None, &east).unwrap());
    assert_eq!(store.lease().unwrap(), Some(east.clone()));
    let updates = moto.dynamodb_requests()[&(KEY.to_string(), "UpdateItem".to_string())];
    assert_eq!(updates, 5);
    moto.clear_faults();

    // Conflicts without end: Unavailable, naming the error, within the call limit.
    conflict(None);
    let renewed = east.renewed(Timestamp(2));
    unavailable(
        "conflicts",
        Duration::from_secs(3),
        &["ReplicatedWriteConflictException", "another region"],
        || store.swap_lease(Some(&east), &renewed),
    );
    moto.clear_faults();
    assert_eq!(store.lease().unwrap(), Some(east.clone()));
    assert!(store.swap_lease(Some(&east), &renewed).unwrap());
}

/// Checks that `result` is `Damaged`, naming each of `parts`.
fn damaged<T: std::fmt::Debug>(result: Result<T, StoreError>, parts: &[&str]) {
    let err = result.expect_err("damaged");
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("dynamodb://dr-store"), "{text}");
    for part in parts {
        assert!(text.contains(part), "{part} is not in: {text}");
    }
}

#[test]
fn damaged_items_are_reported_naming_the_item_and_never_panic() {
    let (_dir, moto) = setup();
    let store = store(&moto, STORE_TABLE);
    let alice = Actor::new("alice");
    let run = RunId::new("r-1");
    store
        .create_run(&contract::header("r-1"), &alice, "x")
        .unwrap();
    for attempt in 1..=3 {
        store
            .append(&run, Timestamp(2_000), &Actor::engine(), started(attempt))
            .unwrap();
    }
    let events = item(&moto, "run#r-1", "ev#0000000002").unwrap();

    // An event that is not JSON.
    scribble(&moto, "run#r-1", "ev#0000000002", "record", s("{not json"));
    for result in [
        store.load_run(&run).map(|_| ()),
        store
            .append(&run, Timestamp(3_000), &alice, started(4))
            .map(|_| ()),
        store.audit(Some(&run), 10).map(|_| ()),
    ] {
        damaged(result, &["pk=run#r-1 sk=ev#0000000002", "record"]);
    }
    // Of a newer dr.
    let mut newer: Value = serde_json::from_str(match &events["record"] {
        AttributeValue::S(text) => text,
        other => panic!("{other:?}"),
    })
    .unwrap();
    newer["version"] = json!(99);
    scribble(
        &moto,
        "run#r-1",
        "ev#0000000002",
        "record",
        s(&newer.to_string()),
    );
    let err = store.load_run(&run).unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedVersion { found: 99, .. }),
        "{err}"
    );
    // Another event's record under this key, and an attribute of the wrong type.
    newer["version"] = json!(3);
    newer["seq"] = json!(3);
    scribble(
        &moto,
        "run#r-1",
        "ev#0000000002",
        "record",
        s(&newer.to_string()),
    );
    damaged(store.load_run(&run), &["sk=ev#0000000002", "holds event 3"]);
    scribble(
        &moto,
        "run#r-1",
        "ev#0000000002",
        "record",
        AttributeValue::N("7".into()),
    );
    damaged(store.load_run(&run), &["record is not a string (N)"]);
    // A gap in the log.
    let mut fifth = newer.clone();
    fifth["seq"] = json!(5);
    raw(&moto, async |c| {
        let mut gap = events.clone();
        gap.insert("sk".into(), s("ev#0000000005"));
        gap.insert("record".into(), s(&fifth.to_string()));
        c.put_item()
            .table_name(STORE_TABLE)
            .set_item(Some(gap))
            .send()
            .await
            .unwrap();
    });
    raw(&moto, async |c| {
        c.put_item()
            .table_name(STORE_TABLE)
            .set_item(Some(events.clone()))
            .send()
            .await
            .unwrap();
    });
    damaged(store.load_run(&run), &["run r-1's log has no event 4"]);

    // The control item: automation, version, lease.
    scribble(&moto, "control", "control", "automation", s("[1, 2"));
    damaged(store.automation(), &["pk=control sk=control", "automation"]);
    let mut automatic = contract::header("r-auto");
    automatic.trigger = Trigger::Automatic {
        reason: "east failed".into(),
    };
    damaged(store.create_run(&automatic, &alice, "x"), &["automation"]);
    let east = LeaseRecord::successor(None, "east", None, Duration::from_secs(10), Timestamp(1));
    assert!(store.swap_lease(None, &east).unwrap());
    scribble(
        &moto,
        "control",
        "control",
        "lease_epoch",
        AttributeValue::N("9".into()),
    );
    damaged(store.lease(), &["disagrees with lease_holder"]);
    scribble(&moto, "control", "control", "lease", s("\u{0}"));
    damaged(store.lease(), &["lease"]);
    scribble(
        &moto,
        "control",
        "control",
        "active_run",
        AttributeValue::N("1".into()),
    );
    damaged(store.active_run(), &["active_run is not a string (N)"]);
    scribble(
        &moto,
        "control",
        "control",
        "layout",
        AttributeValue::N("2".into()),
    );
    let err = store.active_run().unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedVersion { found: 2, .. }),
        "{err}"
    );

    // The runs index and the whole audit log.
    let index = raw(&moto, async |c| {
        c.query()
            .table_name(STORE_TABLE)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s("runs"))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .items
            .unwrap()
    });
    let sk = match &index[0]["sk"] {
        AttributeValue::S(sk) => sk.clone(),
        other => panic!("{other:?}"),
    };
    scribble(&moto, "runs", &sk, "header", s("{}"));
    damaged(store.list_runs(5), &["pk=runs", "header"]);
    scribble(&moto, "audit", "x", "entry", s("nope"));
    damaged(store.audit(None, 1), &["pk=audit sk=x", "entry"]);
    scribble(
        &moto,
        "daemon",
        "east",
        "status",
        AttributeValue::Bool(true),
    );
    damaged(store.daemon_statuses(), &["pk=daemon sk=east"]);
}

#[tokio::test(flavor = "current_thread")]
async fn the_store_is_called_and_dropped_inside_a_current_thread_runtime() {
    let (_dir, moto) = setup();
    let store = store(&moto, STORE_TABLE);
    store
        .create_run(&contract::header("r-1"), &Actor::new("a"), "x")
        .unwrap();
    // The runtime's other tasks go on between calls.
    let ticker = tokio::spawn(async { tokio::time::sleep(Duration::from_millis(10)).await });
    let record = store
        .append(
            &RunId::new("r-1"),
            Timestamp(2),
            &Actor::engine(),
            started(1),
        )
        .unwrap();
    assert_eq!(record.seq, 1);
    ticker.await.unwrap();
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_shared_by_tasks_of_a_multi_thread_runtime() {
    let (_dir, moto) = setup();
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(store(&moto, STORE_TABLE));
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put_daemon_status(&format!("d{i}"), &format!("{{\"i\":{i}}}"))
                    .unwrap();
                store.daemon_statuses().unwrap().len()
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap() >= 1);
    }
    assert_eq!(store.daemon_statuses().unwrap().len(), 4);
}

// ---------------------------------------------------------------------------------------------
// Two processes

const CHILD_ROLE: &str = "DR_STORE_TEST_ROLE";
const CHILD_ENDPOINT: &str = "DR_STORE_TEST_ENDPOINT";
const CHILD_START: &str = "DR_STORE_TEST_START_MS";
const CHILD_OUT: &str = "DR_STORE_TEST_OUT";
const ROUNDS: u32 = 50;
const ROUND_MS: u64 = 200;
const RACE_RUN: &str = "r-race";

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn sleep_until_unix_ms(at: u64) {
    let now = unix_ms();
    if at > now {
        std::thread::sleep(Duration::from_millis(at - now));
    }
}

/// A child of `concurrent_appends_from_two_processes_never_both_succeed`: a no-op unless that
/// test started it. At each round's instant, appends attempt `round` of preflight, which only
/// one writer can append (the other's is then out of order), and writes what happened.
#[test]
fn concurrent_append_child() {
    let Ok(role) = std::env::var(CHILD_ROLE) else {
        return;
    };
    let endpoint = std::env::var(CHILD_ENDPOINT).unwrap();
    let start: u64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    let out = std::env::var(CHILD_OUT).unwrap();
    // The standard credential chain, from this process's environment.
    let store = DynamoStore::connect(&DynamoSettings {
        table: STORE_TABLE.into(),
        region: STORE_REGION.into(),
        endpoint_url: Some(endpoint),
        ..DynamoSettings::default()
    })
    .unwrap();
    let actor = Actor::new(format!("child-{role}"));
    let run = RunId::new(RACE_RUN);
    let mut outcomes = Vec::new();
    for round in 1..=ROUNDS {
        sleep_until_unix_ms(start + u64::from(round) * ROUND_MS);
        let outcome = match store.append(
            &run,
            Timestamp(1_000 + i64::from(round)),
            &actor,
            started(round),
        ) {
            Ok(record) => json!({"round": round, "won": record}),
            Err(StoreError::Refused(why)) => json!({"round": round, "refused": why.to_string()}),
            Err(other) => json!({"round": round, "error": other.to_string()}),
        };
        outcomes.push(outcome);
    }
    std::fs::write(out, Value::Array(outcomes).to_string()).unwrap();
}

#[test]
fn concurrent_appends_from_two_processes_never_both_succeed() {
    let (dir, moto) = setup();
    let store = store(&moto, STORE_TABLE);
    store
        .create_run(&contract::header(RACE_RUN), &Actor::new("alice"), "race")
        .unwrap();
    let start = unix_ms() + 4_000;
    let mut children = Vec::new();
    for role in ["a", "b"] {
        let out = dir.path().join(format!("child-{role}.json"));
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "concurrent_append_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ROLE, role)
            .env(CHILD_ENDPOINT, moto.endpoint())
            .env(CHILD_START, start.to_string())
            .env(CHILD_OUT, &out)
            .env("AWS_ACCESS_KEY_ID", format!("child-{role}"))
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent/dr-test-aws-config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/dr-test-aws-credentials",
            )
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_ENDPOINT_URL")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        children.push((role, child, out));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut wins: BTreeMap<u64, Vec<(String, Value)>> = BTreeMap::new();
    let mut refusals = 0;
    for (role, mut child, out) in children {
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("child {role} did not finish");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "child {role}: {status}");
        let outcomes: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(outcomes.len(), ROUNDS as usize);
        for outcome in outcomes {
            if let Some(record) = outcome.get("won") {
                let seq = record["seq"].as_u64().unwrap();
                wins.entry(seq)
                    .or_default()
                    .push((role.to_string(), record.clone()));
            } else {
                assert!(
                    outcome.get("refused").is_some(),
                    "child {role}: not a clean refusal: {outcome}"
                );
                refusals += 1;
            }
        }
    }
    // Each event won by exactly one child, the other refused.
    assert_eq!(wins.len(), ROUNDS as usize, "{wins:?}");
    for (seq, winners) in &wins {
        assert_eq!(winners.len(), 1, "event {seq}: {winners:?}");
    }
    assert_eq!(refusals, ROUNDS);
    // The stored log: no gap, no duplicate, and exactly the winners' records.
    let stored = store.load_run(&RunId::new(RACE_RUN)).unwrap().unwrap();
    assert_eq!(stored.events.len(), ROUNDS as usize);
    for (i, record) in stored.events.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(record.seq, seq);
        assert_eq!(serde_json::to_value(record).unwrap(), wins[&seq][0].1);
        assert_eq!(
            record.event,
            started(seq as u32),
            "event {seq} is attempt {seq}"
        );
    }
    // The children did race for the same event: some conditional puts were refused.
    let races = moto
        .calls()
        .iter()
        .filter(|c| {
            c["op"] == "PutItem"
                && c["outcome"] == "HTTP 400"
                && c["access_key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("child-"))
        })
        .count();
    let won_by: BTreeMap<String, usize> = wins.values().fold(BTreeMap::new(), |mut m, w| {
        *m.entry(w[0].0.clone()).or_default() += 1;
        m
    });
    eprintln!("{races} of {ROUNDS} rounds raced to the same event; wins {won_by:?}");
    assert!(races >= 1, "no round raced");
    assert_eq!(
        store
            .audit(Some(&RunId::new(RACE_RUN)), 1000)
            .unwrap()
            .len(),
        51
    );
}

/// Settings whose attempts outlast a `latency` fault of `seconds`, so the delayed request is the
/// only one sent.
fn patient(moto: &Moto) -> DynamoSettings {
    DynamoSettings {
        attempt_timeout: Duration::from_secs(4),
        call_timeout: Duration::from_secs(8),
        ..settings(moto, STORE_TABLE)
    }
}

/// Delays this client's next `operation` by 1.5 s; `during` runs meanwhile, from another client.
fn delayed<T: Send>(
    moto: &Moto,
    operation: &str,
    call: impl FnOnce() -> T + Send,
    during: impl FnOnce(),
) -> T {
    moto.client_fault(
        KEY,
        json!({"service": "dynamodb", "operation": operation, "kind": "latency", "seconds": 1.5, "count": 1}),
    );
    std::thread::scope(|scope| {
        let handle = scope.spawn(call);
        std::thread::sleep(Duration::from_millis(600));
        during();
        handle.join().unwrap()
    })
}

#[test]
fn a_takeover_between_a_leaders_read_and_its_write_fences_the_write() {
    let (_dir, moto) = setup();
    let east = DynamoStore::connect_with_credentials(&patient(&moto), KEY, "testing").unwrap();
    let west = DynamoStore::connect_with_credentials(&patient(&moto), "west", "testing").unwrap();
    let period = Duration::from_secs(10);
    let first = LeaseRecord::successor(None, "east", None, period, Timestamp(1));
    assert!(east.swap_lease(None, &first).unwrap());
    let second = LeaseRecord::successor(Some(&first), "west", None, period, Timestamp(2));

    // A run created by epoch 1 while west takes the lease: the claim is conditional on the
    // lease's epoch in the same write, so it is refused, and nothing of the run is stored.
    let created = delayed(
        &moto,
        "UpdateItem",
        || {
            east.create_run_fenced(
                &contract::header("r-old"),
                &Actor::new("east"),
                "x",
                Some(1),
            )
        },
        || assert!(west.swap_lease(Some(&first), &second).unwrap()),
    );
    assert!(
        matches!(created, Err(StoreError::Fenced { epoch: 1, newer: 2 })),
        "{created:?}"
    );
    assert!(west.load_run(&RunId::new("r-old")).unwrap().is_none());
    assert_eq!(west.active_run().unwrap(), None);
    assert!(west.list_runs(5).unwrap().is_empty());

    // An event of epoch 2 written while epoch 1's event N is in flight: one of the two is event
    // N; east's, checked again against the log, is refused.
    let third = LeaseRecord::successor(Some(&second), "east", None, period, Timestamp(3));
    assert!(east.swap_lease(Some(&second), &third).unwrap());
    let run = RunId::new("r-1");
    east.create_run_fenced(&contract::header("r-1"), &Actor::new("east"), "x", Some(3))
        .unwrap();
    east.append_fenced(
        &run,
        Timestamp(2_000),
        &Actor::engine(),
        started(1),
        Some(3),
    )
    .unwrap();
    let fourth = LeaseRecord::successor(Some(&third), "west", None, period, Timestamp(4));
    let appended = delayed(
        &moto,
        "PutItem",
        || {
            east.append_fenced(
                &run,
                Timestamp(3_000),
                &Actor::engine(),
                RunEvent::StepSucceeded {
                    step: StepName::Preflight,
                    outcome: StepOutcome::default(),
                },
                Some(3),
            )
        },
        || {
            assert!(west.swap_lease(Some(&third), &fourth).unwrap());
            let taken = west
                .append_fenced(
                    &run,
                    Timestamp(2_500),
                    &Actor::new("west"),
                    RunEvent::TakenOver {
                        daemon: "west".into(),
                    },
                    Some(4),
                )
                .unwrap();
            assert_eq!(taken.seq, 2);
        },
    );
    assert!(
        matches!(appended, Err(StoreError::Fenced { epoch: 3, newer: 4 })),
        "{appended:?}"
    );
    let events = west.load_run(&run).unwrap().unwrap().events;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].epoch, Some(4));
}

#[test]
fn a_leaders_event_that_reaches_the_table_before_the_new_leaders_first_event_is_kept() {
    // Without transactions, an append reads the lease and writes its event in two requests.
    // If the lease changes hands in between and the new leader has not yet written to the
    // run, the old leader's event lands (the holder's own clock stops it from acting long
    // before; see leader.rs). The new leader's first event follows it, and fences every later
    // write of the old epoch.
    let (_dir, moto) = setup();
    let east = DynamoStore::connect_with_credentials(&patient(&moto), KEY, "testing").unwrap();
    let west = DynamoStore::connect_with_credentials(&patient(&moto), "west", "testing").unwrap();
    let period = Duration::from_secs(10);
    let first = LeaseRecord::successor(None, "east", None, period, Timestamp(1));
    assert!(east.swap_lease(None, &first).unwrap());
    let run = RunId::new("r-1");
    east.create_run_fenced(&contract::header("r-1"), &Actor::new("east"), "x", Some(1))
        .unwrap();
    let second = LeaseRecord::successor(Some(&first), "west", None, period, Timestamp(2));
    let appended = delayed(
        &moto,
        "PutItem",
        || {
            east.append_fenced(
                &run,
                Timestamp(2_000),
                &Actor::engine(),
                started(1),
                Some(1),
            )
        },
        || assert!(west.swap_lease(Some(&first), &second).unwrap()),
    );
    assert_eq!(appended.unwrap().seq, 1);
    let taken = west
        .append_fenced(
            &run,
            Timestamp(2_500),
            &Actor::new("west"),
            RunEvent::TakenOver {
                daemon: "west".into(),
            },
            Some(2),
        )
        .unwrap();
    assert_eq!(taken.seq, 2);
    assert!(matches!(
        east.append_fenced(
            &run,
            Timestamp(3_000),
            &Actor::engine(),
            started(2),
            Some(1)
        ),
        Err(StoreError::Fenced { epoch: 1, newer: 2 })
    ));
}

#[test]
fn audit_lines_of_automation_and_notes_about_a_run_are_read_where_expected() {
    let (_dir, moto) = setup();
    let store = store(&moto, STORE_TABLE);
    let alice = Actor::new("alice");
    let line = |at: i64, run: Option<&str>, action: &str| dr::store::AuditEntry {
        version: dr::store::STORE_VERSION,
        at: Timestamp(at),
        actor: alice.clone(),
        run: run.map(RunId::new),
        action: action.into(),
        reason: "why".into(),
    };
    let actions =
        |lines: Vec<dr::store::AuditEntry>| lines.into_iter().map(|e| e.action).collect::<Vec<_>>();
    store
        .create_run(&contract::header("r-1"), &alice, "x")
        .unwrap();
    let run = RunId::new("r-1");
    // A note about the run: in its audit and in the whole log.
    store
        .record_audit(&line(1_500, Some("r-1"), "follow-up done"))
        .unwrap();
    store.record_audit(&line(1_600, None, "decision")).unwrap();
    assert_eq!(
        actions(store.audit(Some(&run), 10).unwrap()),
        [
            "failover from us-east-1 to us-west-2 created (manual by alice)",
            "follow-up done"
        ]
    );
    assert_eq!(actions(store.audit(None, 10).unwrap()).len(), 3);
    // A note about a run that does not exist does not make it exist.
    store
        .record_audit(&line(1_700, Some("r-9"), "refused"))
        .unwrap();
    assert!(store.load_run(&RunId::new("r-9")).unwrap().is_none());
    assert_eq!(
        actions(store.audit(Some(&RunId::new("r-9")), 10).unwrap()),
        ["refused"]
    );

    // The switches change, and the line's own write fails: the line is read from the control
    // item, and written out by the next change.
    moto.client_fault(
        KEY,
        json!({"service": "dynamodb", "operation": "PutItem", "kind": "error"}),
    );
    let paused = dr::core::decision::Automation {
        paused: true,
        ..Default::default()
    };
    store
        .set_automation(&paused, &line(2_000, None, "automation paused"))
        .unwrap();
    moto.clear_faults();
    assert!(store.automation().unwrap().paused);
    let whole = actions(store.audit(None, 10).unwrap());
    assert_eq!(whole.last().map(String::as_str), Some("automation paused"));
    assert_eq!(whole.len(), 5, "{whole:?}");
    assert_eq!(
        actions(store.audit(None, 1).unwrap()),
        ["automation paused"]
    );
    store
        .set_automation(
            &Default::default(),
            &line(3_000, None, "automation unpaused"),
        )
        .unwrap();
    let whole = actions(store.audit(None, 10).unwrap());
    assert_eq!(&whole[4..], ["automation paused", "automation unpaused"]);
    let written = raw(&moto, async |c| {
        c.query()
            .table_name(STORE_TABLE)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s("audit"))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .items
            .unwrap()
            .len()
    });
    assert_eq!(written, 6);
}

#[test]
fn items_over_dynamodbs_limit_are_refused_and_nothing_is_written() {
    let (_dir, moto) = setup();
    let store = store(&moto, STORE_TABLE);
    let alice = Actor::new("alice");
    let big = "x".repeat(450 * 1024);
    let mut header = contract::header("r-big");
    header.trigger = Trigger::Automatic {
        reason: big.clone(),
    };
    let err = store.create_run(&header, &alice, "x").unwrap_err();
    assert!(err.to_string().contains("item limit"), "{err}");
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert!(store.load_run(&RunId::new("r-big")).unwrap().is_none());
    assert_eq!(store.active_run().unwrap(), None);

    store
        .create_run(&contract::header("r-1"), &alice, "x")
        .unwrap();
    let run = RunId::new("r-1");
    store
        .append(&run, Timestamp(2_000), &Actor::engine(), started(1))
        .unwrap();
    let err = store
        .append(
            &run,
            Timestamp(3_000),
            &Actor::engine(),
            RunEvent::StepProgress {
                step: StepName::Preflight,
                note: big.clone(),
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("sk=ev#0000000002"), "{err}");
    assert_eq!(store.load_run(&run).unwrap().unwrap().events.len(), 1);
    let err = store.put_daemon_status("east", &big).unwrap_err();
    assert!(err.to_string().contains("pk=daemon sk=east"), "{err}");
    assert!(store.put_daemon_status("", "{}").is_err());
    // A run id too long for a key: refused, and never found.
    let long = "r".repeat(2_000);
    assert!(
        store
            .create_run(&contract::header(&long), &alice, "x")
            .is_err()
    );
    assert!(store.load_run(&RunId::new(long.clone())).unwrap().is_none());
    assert!(matches!(
        store.append(&RunId::new(long), Timestamp(1), &alice, started(1)),
        Err(StoreError::NoSuchRun(_))
    ));
    // The store goes on.
    store
        .append(&run, Timestamp(4_000), &Actor::engine(), started(2))
        .unwrap();
}

#[test]
fn a_write_applied_but_unanswered_is_recognised_as_its_own_when_its_retry_fails_its_condition() {
    let (_dir, moto) = setup();
    // The first attempt is answered after the attempt limit (applied at 1 s); the SDK sends it
    // again, and the retry, held 0.5 s, is judged after the first was applied: its condition
    // fails.
    let settings = DynamoSettings {
        attempt_timeout: Duration::from_millis(900),
        call_timeout: Duration::from_secs(6),
        ..settings(&moto, STORE_TABLE)
    };
    let store = DynamoStore::connect_with_credentials(&settings, KEY, "testing").unwrap();
    let slow_then_slower = |operation: &str| {
        for seconds in [1.0, 0.5] {
            moto.client_fault(
                KEY,
                json!({"service": "dynamodb", "operation": operation, "kind": "latency", "seconds": seconds, "count": 1}),
            );
        }
    };
    // (first attempts applied late, retries whose condition failed) of `op` so far.
    let late_and_refused = |op: &str| {
        let calls = store_calls(&moto, KEY);
        let count = |want: &str| {
            calls
                .iter()
                .filter(|(o, _, outcome)| o == op && outcome == want)
                .count()
        };
        (count("latency"), count("HTTP 400"))
    };

    // The claim of a new run.
    slow_then_slower("UpdateItem");
    store
        .create_run(&contract::header("r-1"), &Actor::new("alice"), "x")
        .unwrap();
    assert_eq!(late_and_refused("UpdateItem"), (1, 1));
    let run = RunId::new("r-1");
    assert_eq!(store.active_run().unwrap(), Some(run.clone()));
    assert_eq!(store.list_runs(10).unwrap().len(), 1);

    // An event: stored once, not again as the next one.
    store
        .append(&run, Timestamp(2_000), &Actor::engine(), started(1))
        .unwrap();
    slow_then_slower("PutItem");
    let record = store
        .append(
            &run,
            Timestamp(3_000),
            &Actor::engine(),
            RunEvent::StepProgress {
                step: StepName::Preflight,
                note: "once".into(),
            },
        )
        .unwrap();
    assert_eq!(late_and_refused("PutItem"), (1, 1));
    assert_eq!(record.seq, 2);
    assert_eq!(store.load_run(&run).unwrap().unwrap().events.len(), 2);

    // A lease swap.
    let lease = LeaseRecord::successor(None, "east", None, Duration::from_secs(10), Timestamp(1));
    slow_then_slower("UpdateItem");
    assert!(store.swap_lease(None, &lease).unwrap());
    assert_eq!(late_and_refused("UpdateItem"), (2, 2));
    assert_eq!(store.lease().unwrap(), Some(lease));
}
