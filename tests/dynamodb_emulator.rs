//! The emulator's DynamoDB, as dr's shared checkpoint store relies on it, through the Rust SDK:
//! the store table from the seed, conditional writes with exactly one winner, conditional
//! updates that compare numbers, consistent queries newest first in pages, expression
//! attributes checked as DynamoDB checks them, faults that fail one client (one access key) and
//! leave the other alone, and requests counted per client.
//!
//! Each test starts its own emulator, so the tests run in parallel and share nothing. Every
//! wait is a bounded loop.

mod common;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, BillingMode, KeyType, ReturnValue, ScalarAttributeType, TableStatus,
};
use common::moto::{Moto, STORE_REGION, STORE_TABLE, seed_world_with_table};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const EAST: &str = "daemon-east";
const WEST: &str = "daemon-west";

struct Setup {
    _dir: tempfile::TempDir,
    moto: Moto,
    east: Client,
    west: Client,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path(), &seed_world_with_table());
    let east = moto.dynamodb_client(EAST, STORE_REGION);
    let west = moto.dynamodb_client(WEST, STORE_REGION);
    Setup {
        _dir: dir,
        moto,
        east,
        west,
    }
}

fn string(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

fn number(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn values(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// The item at (`pk`, `sk`), read consistently; None when there is none.
async fn get(client: &Client, pk: &str, sk: &str) -> Option<HashMap<String, AttributeValue>> {
    client
        .get_item()
        .table_name(STORE_TABLE)
        .key("pk", string(pk))
        .key("sk", string(sk))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> String {
    match &item[name] {
        AttributeValue::S(v) | AttributeValue::N(v) => v.clone(),
        other => panic!("{name} is {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_makes_the_store_table_and_a_conditional_put_has_one_winner() {
    let s = setup();

    let table = s
        .east
        .describe_table()
        .table_name(STORE_TABLE)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    assert_eq!(table.table_status, Some(TableStatus::Active));
    let schema: Vec<(String, KeyType)> = table
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_string(), k.key_type().clone()))
        .collect();
    assert_eq!(
        schema,
        vec![("pk".into(), KeyType::Hash), ("sk".into(), KeyType::Range)]
    );
    let mut types: Vec<(String, ScalarAttributeType)> = table
        .attribute_definitions()
        .iter()
        .map(|d| (d.attribute_name().to_string(), d.attribute_type().clone()))
        .collect();
    types.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        types,
        vec![
            ("pk".into(), ScalarAttributeType::S),
            ("sk".into(), ScalarAttributeType::S)
        ]
    );
    assert_eq!(
        table
            .billing_mode_summary()
            .and_then(|b| b.billing_mode().cloned()),
        Some(BillingMode::PayPerRequest)
    );
    // The table is in its region only.
    let elsewhere = s
        .moto
        .dynamodb_client(EAST, "us-east-1")
        .describe_table()
        .table_name(STORE_TABLE)
        .send()
        .await;
    assert!(
        elsewhere
            .as_ref()
            .err()
            .and_then(|e| e.as_service_error())
            .is_some_and(|e| e.is_resource_not_found_exception()),
        "{elsewhere:?}"
    );

    // Four writers per key, two per client, all at once: one wins each key, the others are
    // told the condition failed.
    const KEYS: usize = 16;
    const WRITERS: usize = 4;
    let mut tasks = Vec::new();
    for key in 0..KEYS {
        for writer in 0..WRITERS {
            let client = if writer % 2 == 0 {
                s.east.clone()
            } else {
                s.west.clone()
            };
            tasks.push(tokio::spawn(async move {
                let result = client
                    .put_item()
                    .table_name(STORE_TABLE)
                    .item("pk", string(&format!("lease#{key}")))
                    .item("sk", string("leader"))
                    .item("writer", number(writer as i64))
                    .condition_expression("attribute_not_exists(pk)")
                    .send()
                    .await;
                (key, writer, result)
            }));
        }
    }
    let mut winners: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for task in tasks {
        let (key, writer, result) = task.await.unwrap();
        match result {
            Ok(_) => winners.entry(key).or_default().push(writer),
            Err(e) => assert!(
                e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()),
                "lease#{key}, writer {writer}: {e:?}"
            ),
        }
    }
    for key in 0..KEYS {
        let won = winners.get(&key).cloned().unwrap_or_default();
        assert_eq!(won.len(), 1, "lease#{key}: winners {won:?}");
        let item = get(&s.west, &format!("lease#{key}"), "leader")
            .await
            .unwrap();
        assert_eq!(text(&item, "writer"), won[0].to_string(), "lease#{key}");
    }
    // A second put of a taken key fails, whoever tries.
    let again = s
        .west
        .put_item()
        .table_name(STORE_TABLE)
        .item("pk", string("lease#0"))
        .item("sk", string("leader"))
        .item("writer", number(99))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    assert!(
        again
            .as_ref()
            .err()
            .and_then(|e| e.as_service_error())
            .is_some_and(|e| e.is_conditional_check_failed_exception()),
        "{again:?}"
    );
    assert_ne!(
        text(&get(&s.east, "lease#0", "leader").await.unwrap(), "writer"),
        "99"
    );
}

/// Sets the lease to (`epoch`, `holder`, `expires`) if `condition` holds; the item after, or
/// None when the condition failed (any other error panics).
async fn take_lease(
    client: &Client,
    condition: &str,
    epoch: i64,
    holder: &str,
    expires: i64,
    extra: &[(&str, AttributeValue)],
) -> Option<HashMap<String, AttributeValue>> {
    let mut bound = values(extra);
    bound.insert(":n".into(), number(epoch));
    bound.insert(":h".into(), string(holder));
    bound.insert(":x".into(), number(expires));
    let result = client
        .update_item()
        .table_name(STORE_TABLE)
        .key("pk", string("lease"))
        .key("sk", string("leader"))
        .update_expression("SET epoch = :n, holder = :h, #expires = :x")
        .condition_expression(condition)
        .expression_attribute_names("#expires", "expires")
        .set_expression_attribute_values(Some(bound))
        .return_values(ReturnValue::AllNew)
        .send()
        .await;
    match result {
        Ok(out) => Some(out.attributes.unwrap()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            None
        }
        Err(e) => panic!("{condition}: {e:?}"),
    }
}

fn lease(item: &HashMap<String, AttributeValue>) -> (String, String, String) {
    (
        text(item, "epoch"),
        text(item, "holder"),
        text(item, "expires"),
    )
}

fn lease_of(epoch: i64, holder: &str, expires: i64) -> (String, String, String) {
    (epoch.to_string(), holder.to_string(), expires.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_update_compares_numbers() {
    let s = setup();
    let (east, west) = (&s.east, &s.west);

    // No lease yet: an update conditioned on its epoch creates nothing.
    assert_eq!(
        take_lease(west, "epoch = :e", 1, WEST, 100, &[(":e", number(0))]).await,
        None
    );
    assert_eq!(get(east, "lease", "leader").await, None);

    let first = take_lease(east, "attribute_not_exists(pk)", 9, EAST, 1000, &[]).await;
    assert_eq!(first.as_ref().map(lease), Some(lease_of(9, EAST, 1000)));

    // `=` on the epoch: the wrong one fails and changes nothing, the right one succeeds.
    assert_eq!(
        take_lease(west, "epoch = :e", 10, WEST, 2000, &[(":e", number(8))]).await,
        None
    );
    assert_eq!(
        lease(&get(east, "lease", "leader").await.unwrap()),
        lease_of(9, EAST, 1000)
    );
    let renewed = take_lease(east, "epoch = :e", 10, EAST, 1500, &[(":e", number(9))]).await;
    assert_eq!(renewed.as_ref().map(lease), Some(lease_of(10, EAST, 1500)));
    // The same epoch again: it moved on, so this fails.
    assert_eq!(
        take_lease(east, "epoch = :e", 10, EAST, 1600, &[(":e", number(9))]).await,
        None
    );

    // `<` compares numbers, not strings ("10" < "9" as strings).
    assert_eq!(
        take_lease(west, "epoch < :e", 11, WEST, 1500, &[(":e", number(9))]).await,
        None
    );
    let numeric = take_lease(east, "epoch < :e", 11, EAST, 1500, &[(":e", number(100))]).await;
    assert_eq!(numeric.as_ref().map(lease), Some(lease_of(11, EAST, 1500)));

    // A takeover: the lease expired OR the taker already holds it.
    let takeover = "#expires < :now OR holder = :me";
    let not_yet = [(":now", number(1500)), (":me", string(WEST))];
    assert_eq!(
        take_lease(west, takeover, 12, WEST, 3000, &not_yet).await,
        None
    );
    let expired = [(":now", number(1501)), (":me", string(WEST))];
    let taken = take_lease(west, takeover, 12, WEST, 3000, &expired).await;
    assert_eq!(taken.as_ref().map(lease), Some(lease_of(12, WEST, 3000)));
    let holder = [(":now", number(0)), (":me", string(WEST))];
    let kept = take_lease(west, takeover, 13, WEST, 3100, &holder).await;
    assert_eq!(kept.as_ref().map(lease), Some(lease_of(13, WEST, 3100)));

    // AND: both must hold.
    let both = "epoch = :e AND #expires < :now";
    let stale_epoch = [(":e", number(12)), (":now", number(5000))];
    assert_eq!(
        take_lease(east, both, 14, EAST, 6000, &stale_epoch).await,
        None
    );
    let live = [(":e", number(13)), (":now", number(3100))];
    assert_eq!(take_lease(east, both, 14, EAST, 6000, &live).await, None);
    let both_hold = [(":e", number(13)), (":now", number(3101))];
    let won = take_lease(east, both, 14, EAST, 6000, &both_hold).await;
    assert_eq!(won.as_ref().map(lease), Some(lease_of(14, EAST, 6000)));
    assert_eq!(
        lease(&get(west, "lease", "leader").await.unwrap()),
        lease_of(14, EAST, 6000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expression_attributes_are_checked_as_dynamodb_checks_them() {
    let s = setup();
    let put = |values: Option<HashMap<String, AttributeValue>>, condition: &str| {
        s.east
            .put_item()
            .table_name(STORE_TABLE)
            .item("pk", string("k"))
            .item("sk", string("s"))
            .condition_expression(condition)
            .set_expression_attribute_values(values)
            .send()
    };
    // A value no expression uses, a value an expression uses but the call leaves out, an
    // empty map: each is rejected, and nothing is written.
    let unused = values(&[(":unused", number(1))]);
    assert_rejected(
        put(Some(unused), "attribute_not_exists(pk)")
            .await
            .unwrap_err(),
        "unused in expressions: keys: {:unused}",
    );
    assert_rejected(
        put(None, "epoch = :e").await.unwrap_err(),
        "attribute value: :e",
    );
    assert_rejected(
        put(Some(HashMap::new()), "attribute_not_exists(pk)")
            .await
            .unwrap_err(),
        "ExpressionAttributeValues must not be empty",
    );
    let names = s
        .east
        .put_item()
        .table_name(STORE_TABLE)
        .item("pk", string("k"))
        .item("sk", string("s"))
        .condition_expression("attribute_not_exists(#p)")
        .send()
        .await
        .unwrap_err();
    assert_rejected(names, "attribute name: #p");
    assert_eq!(get(&s.west, "k", "s").await, None);
    let query = s
        .west
        .query()
        .table_name(STORE_TABLE)
        .key_condition_expression("pk = :p")
        .set_expression_attribute_values(Some(values(&[
            (":p", string("k")),
            (":s", string("ev#")),
        ])))
        .send()
        .await
        .unwrap_err();
    assert_rejected(query, "unused in expressions: keys: {:s}");
    // The same calls, right: accepted.
    put(None, "attribute_not_exists(pk)").await.unwrap();
    put(
        Some(values(&[(":e", number(1))])),
        "attribute_exists(pk) OR epoch = :e",
    )
    .await
    .unwrap();
    assert!(get(&s.west, "k", "s").await.is_some());
}

/// The sort keys of one query's page, and the key it says to start the next page after.
async fn page(
    client: &Client,
    condition: &str,
    bound: &[(&str, AttributeValue)],
    limit: i32,
    start: Option<HashMap<String, AttributeValue>>,
) -> (Vec<String>, Option<HashMap<String, AttributeValue>>) {
    let out = client
        .query()
        .table_name(STORE_TABLE)
        .key_condition_expression(condition)
        .set_expression_attribute_values(Some(values(bound)))
        .consistent_read(true)
        .scan_index_forward(false)
        .limit(limit)
        .set_exclusive_start_key(start)
        .send()
        .await
        .unwrap();
    let keys = out.items().iter().map(|i| text(i, "sk")).collect();
    (keys, out.last_evaluated_key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistent_query_answers_newest_first_in_pages() {
    let s = setup();
    let put = |pk: &str, sk: &str| {
        s.east
            .put_item()
            .table_name(STORE_TABLE)
            .item("pk", string(pk))
            .item("sk", string(sk))
            .send()
    };
    // Written out of order, with neighbours the query must leave out: another prefix in the
    // same partition, and partitions whose keys share a prefix with it.
    for i in [3, 0, 6, 1, 5, 2, 4] {
        put("run#1", &format!("ev#{i:04}")).await.unwrap();
    }
    put("run#1", "meta").await.unwrap();
    put("run#1", "ckpt#0001").await.unwrap();
    put("run#10", "ev#9999").await.unwrap();
    put("run#2", "ev#0007").await.unwrap();

    let events = "pk = :p AND begins_with(sk, :s)";
    let bound = [(":p", string("run#1")), (":s", string("ev#"))];
    let (first, cursor) = page(&s.west, events, &bound, 3, None).await;
    assert_eq!(first, ["ev#0006", "ev#0005", "ev#0004"]);
    let cursor = cursor.expect("a full page says where the next starts");
    assert_eq!(
        cursor,
        values(&[("pk", string("run#1")), ("sk", string("ev#0004"))])
    );

    // Every page, following the cursor: all seven, newest first, none twice.
    let mut all = first;
    let mut next = Some(cursor);
    let mut pages = 1;
    while let Some(start) = next.take() {
        let (keys, cursor) = page(&s.west, events, &bound, 3, Some(start)).await;
        assert!(keys.len() <= 3, "{keys:?}");
        all.extend(keys);
        next = cursor;
        pages += 1;
        assert!(pages <= 5, "no end to the pages: {all:?}");
    }
    let expected: Vec<String> = (0..7).rev().map(|i| format!("ev#{i:04}")).collect();
    assert_eq!(all, expected);

    // `sk > :x`, newest first: what sorts after ev#0004 in the partition.
    let after = "pk = :p AND sk > :x";
    let bound = [(":p", string("run#1")), (":x", string("ev#0004"))];
    let (keys, _) = page(&s.west, after, &bound, 10, None).await;
    assert_eq!(keys, ["meta", "ev#0006", "ev#0005"]);
    let (keys, cursor) = page(&s.west, after, &bound, 2, None).await;
    assert_eq!(keys, ["meta", "ev#0006"]);
    assert!(cursor.is_some());

    // The whole partition, newest first.
    let (keys, _) = page(&s.west, "pk = :p", &[(":p", string("run#1"))], 100, None).await;
    assert_eq!(
        keys,
        [
            "meta",
            "ev#0006",
            "ev#0005",
            "ev#0004",
            "ev#0003",
            "ev#0002",
            "ev#0001",
            "ev#0000",
            "ckpt#0001"
        ]
    );

    // The call log tells which reads asked for consistency (moto's are all consistent).
    s.east
        .query()
        .table_name(STORE_TABLE)
        .key_condition_expression("pk = :p")
        .expression_attribute_values(":p", string("run#1"))
        .send()
        .await
        .unwrap();
    let queries: Vec<(String, bool)> = s
        .moto
        .calls()
        .iter()
        .filter(|c| c["op"] == "Query")
        .map(|c| {
            (
                c["access_key"].as_str().unwrap().to_string(),
                c["consistent_read"].as_bool().unwrap(),
            )
        })
        .collect();
    let (last, earlier) = queries.split_last().unwrap();
    assert_eq!(last, &(EAST.to_string(), false));
    assert!(!earlier.is_empty());
    assert!(
        earlier.iter().all(|q| q == &(WEST.to_string(), true)),
        "{earlier:?}"
    );
}

/// The HTTP status an error was answered with.
fn status<E>(error: &SdkError<E, HttpResponse>) -> Option<u16> {
    error.raw_response().map(|r| r.status().as_u16())
}

/// Asserts that DynamoDB would reject the call: a ValidationException saying `message`.
fn assert_rejected<E: ProvideErrorMetadata + std::fmt::Debug>(
    error: SdkError<E, HttpResponse>,
    message: &str,
) {
    assert_eq!(status(&error), Some(400), "{error:?}");
    assert_eq!(error.code(), Some("ValidationException"), "{error:?}");
    assert!(
        error.message().unwrap_or_default().contains(message),
        "{message}: {error:?}"
    );
}

/// The call log's DynamoDB entries: (access key, op, region, outcome).
fn dynamodb_calls(moto: &Moto) -> Vec<(String, String, String, String)> {
    moto.calls()
        .iter()
        .filter(|c| c["service"] == "dynamodb")
        .map(|c| {
            let f = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            assert_eq!(c["table"], STORE_TABLE, "{c}");
            (f("access_key"), f("op"), f("region"), f("outcome"))
        })
        .collect()
}

fn call(key: &str, op: &str, outcome: &str) -> (String, String, String, String) {
    (
        key.to_string(),
        op.to_string(),
        STORE_REGION.to_string(),
        outcome.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_for_one_client_leaves_the_other_alone() {
    let s = setup();
    let put = |client: &Client, sk: &str| {
        client
            .put_item()
            .table_name(STORE_TABLE)
            .item("pk", string("k"))
            .item("sk", string(sk))
            .send()
    };
    put(&s.east, "before").await.unwrap();

    // A 500 for east's calls only.
    s.moto
        .client_fault(EAST, json!({"service": "dynamodb", "kind": "error"}));
    let failed = s
        .east
        .get_item()
        .table_name(STORE_TABLE)
        .key("pk", string("k"))
        .key("sk", string("before"))
        .consistent_read(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&failed), Some(500), "{failed:?}");
    assert!(
        failed
            .as_service_error()
            .is_some_and(|e| e.is_internal_server_error()),
        "{failed:?}"
    );
    let failed = put(&s.east, "during").await.unwrap_err();
    assert_eq!(failed.code(), Some("InternalServerError"), "{failed:?}");
    assert!(get(&s.west, "k", "before").await.is_some());
    put(&s.west, "west").await.unwrap();
    assert!(get(&s.west, "k", "during").await.is_none());
    s.moto.clear_faults();
    assert!(get(&s.east, "k", "west").await.is_some());

    // Throttling, as DynamoDB spells it, for east's PutItem only.
    s.moto.client_fault(
        EAST,
        json!({"service": "dynamodb", "operation": "PutItem", "kind": "throttle", "count": 1}),
    );
    let throttled = put(&s.east, "throttled").await.unwrap_err();
    assert_eq!(status(&throttled), Some(400));
    assert!(
        throttled
            .as_service_error()
            .is_some_and(|e| e.is_provisioned_throughput_exceeded_exception()),
        "{throttled:?}"
    );
    put(&s.east, "after-one").await.unwrap();
    s.moto.client_fault(
        EAST,
        json!({"service": "dynamodb", "kind": "throttle", "code": "ThrottlingException"}),
    );
    let throttled = put(&s.east, "throttled").await.unwrap_err();
    assert_eq!(status(&throttled), Some(400));
    assert_eq!(
        throttled.code(),
        Some("ThrottlingException"),
        "{throttled:?}"
    );
    put(&s.west, "west-2").await.unwrap();
    s.moto.clear_faults();

    // Held: east's write hangs, west's calls go through meanwhile; released, east's fails
    // unapplied.
    s.moto
        .client_fault(EAST, json!({"service": "dynamodb", "kind": "hold"}));
    let east = s.east.clone();
    let held = tokio::spawn(async move {
        east.put_item()
            .table_name(STORE_TABLE)
            .item("pk", string("k"))
            .item("sk", string("held"))
            .send()
            .await
    });
    s.moto
        .wait_until(Duration::from_secs(10), "east's write held", |m| {
            m.holding() == 1
        });
    put(&s.west, "west-3").await.unwrap();
    assert!(get(&s.west, "k", "west-3").await.is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished());
    assert_eq!(s.moto.holding(), 1);
    s.moto.clear_faults();
    let start = Instant::now();
    let dropped = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("released")
        .unwrap()
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(status(&dropped), Some(503), "{dropped:?}");
    assert!(get(&s.west, "k", "held").await.is_none());

    assert_eq!(
        dynamodb_calls(&s.moto),
        vec![
            call(EAST, "PutItem", "ok"),
            call(EAST, "GetItem", "error"),
            call(EAST, "PutItem", "error"),
            call(WEST, "GetItem", "ok"),
            call(WEST, "PutItem", "ok"),
            call(WEST, "GetItem", "ok"),
            call(EAST, "GetItem", "ok"),
            call(EAST, "PutItem", "throttle"),
            call(EAST, "PutItem", "ok"),
            call(EAST, "PutItem", "throttle"),
            call(WEST, "PutItem", "ok"),
            call(EAST, "PutItem", "held, then dropped"),
            call(WEST, "PutItem", "ok"),
            call(WEST, "GetItem", "ok"),
            call(WEST, "GetItem", "ok"),
        ]
    );
}

fn counts(pairs: &[(&str, &str, u64)]) -> BTreeMap<(String, String), u64> {
    pairs
        .iter()
        .map(|(k, op, n)| ((k.to_string(), op.to_string()), *n))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_per_client_and_operation() {
    let s = setup();
    // The seed's calls are not counted.
    assert_eq!(s.moto.dynamodb_requests(), BTreeMap::new());

    let read = |client: &Client| {
        client
            .get_item()
            .table_name(STORE_TABLE)
            .key("pk", string("k"))
            .key("sk", string("s"))
            .consistent_read(true)
            .send()
    };
    for _ in 0..3 {
        read(&s.east).await.unwrap();
    }
    // A faulted call is counted too: it was received.
    s.moto.client_fault(
        EAST,
        json!({"service": "dynamodb", "operation": "PutItem", "kind": "error"}),
    );
    s.east
        .put_item()
        .table_name(STORE_TABLE)
        .item("pk", string("k"))
        .item("sk", string("s"))
        .send()
        .await
        .unwrap_err();
    for _ in 0..2 {
        s.west
            .query()
            .table_name(STORE_TABLE)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", string("k"))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(
        s.moto.dynamodb_requests(),
        counts(&[
            (EAST, "GetItem", 3),
            (EAST, "PutItem", 1),
            (WEST, "Query", 2)
        ])
    );
    let all = s.moto.requests();
    assert_eq!(all.counts.values().sum::<u64>(), 6, "{all:?}");

    // Counting afresh: from zero, and the time since restarts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = s.moto.requests().elapsed;
    assert!(before >= Duration::from_millis(300), "{before:?}");
    s.moto.reset_requests();
    assert_eq!(s.moto.dynamodb_requests(), BTreeMap::new());
    assert!(s.moto.requests().elapsed < before);
    read(&s.west).await.unwrap();
    assert_eq!(s.moto.dynamodb_requests(), counts(&[(WEST, "GetItem", 1)]));
    // One service's counts only.
    let listed: Value = s.moto.admin("GET", "/_dr/requests?service=dynamodb", None);
    assert_eq!(listed["requests"].as_array().unwrap().len(), 1, "{listed}");
}
