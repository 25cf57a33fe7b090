//! The checkpoint store on DynamoDB: one table that the daemons of several regions share, with
//! the same contract as the redb store, built from single-item conditional writes and strongly
//! consistent reads only (no transactions, no scans), so it runs on a multi-Region strongly
//! consistent global table.
//!
//! The table (partition key `pk`, sort key `sk`, both strings):
//!
//! | pk | sk | what |
//! |---|---|---|
//! | `control` | `control` | the active run, the automation switches, the lease, `version` |
//! | `run#<id>` | `header` | a run's header and its creation audit line |
//! | `run#<id>` | `ev#<seq, 10 digits>` | one event of its log |
//! | `run#<id>` | `audit#<audit key>` | an audit line about the run that is not one of its events |
//! | `runs` | `<creation order, 20 digits>#<id>` | the runs index, with each header |
//! | `audit` | `<audit key>` | every audit line, for the whole log |
//! | `daemon` | `<daemon id>` | a daemon's status |
//!
//! The control item's `version` goes up by one at every change of the active run or the
//! automation switches; writes that decide on them are conditional on it. The lease lives in
//! the same item under its own attributes (`lease_holder`, `lease_epoch`, `lease_beat`) and a
//! swap is conditional on those alone, so renewals never conflict with runs being created.
//!
//! Creating a run is one conditional write, the claim of the control item: it sets the active
//! run, conditional on `version` (and, for a leader, on the lease's epoch), and carries the new
//! run's header (`creating`). Nothing about a refused run is ever written. The header, index and
//! audit items are copied out after the claim, and `creating` removed; whoever next finds
//! `creating` still there (an append, the next creation) completes the copy, and reads merge it
//! in meanwhile.
//!
//! Appending event N is a put of `ev#N` conditional on its absence: of two writers of event N,
//! one succeeds; the other reads the log again and is checked against it. The audit line is
//! written after the event; a line missing after a crash is written by the next append to the
//! run (or, for its last event, by the next run's creation). An event that finishes the run
//! clears the active run after its audit line; a pointer to a finished run counts as no active
//! run.
//!
//! Conditional writes carry a random token (an event's and a header's `writer`, the lease's
//! `lease_writer`, a claim's `creating.writer`), so a write whose first attempt was applied but
//! unanswered, and whose retry then failed its condition, is recognised as its own.
//!
//! The trait is synchronous and called from inside tokio runtimes; the SDK is async. The store
//! owns a small runtime: each call is spawned onto it and the caller waits on a channel, bounded
//! by the call time limit.

use super::{
    AuditEntry, STORE_VERSION, Store, StoreError, StoredRun, check_fence, check_version,
    creation_audit, prepare_append, status_text,
};
use crate::core::decision::Automation;
use crate::core::ids::{Actor, RunId};
use crate::core::lease::LeaseRecord;
use crate::core::run::{EventRecord, RunEvent, RunHeader, Trigger};
use crate::core::time::Timestamp;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, KeyType, ReturnValue, ScalarAttributeType, TableStatus,
};
use aws_smithy_types::error::display::DisplayErrorContext;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Every DynamoDB operation the store calls: exactly what the table's IAM policy grants
/// (`deploy/dynamodb/`). `tests/runbooks.rs` checks the source calls these and no other, and
/// `tests/deploy.rs` that the templates' policies grant exactly these.
pub const OPERATIONS: &[&str] = &["DescribeTable", "GetItem", "PutItem", "UpdateItem", "Query"];

/// Where the store's table is and how long its calls may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamoSettings {
    /// The table's name.
    pub table: String,
    /// The region whose endpoint is called.
    pub region: String,
    /// Another endpoint (an emulator); `None`: AWS's.
    pub endpoint_url: Option<String>,
    /// The AWS profile; `None`: the standard credential chain.
    pub profile: Option<String>,
    /// The time limit of one HTTP attempt.
    pub attempt_timeout: Duration,
    /// The time limit of one store call, every request and retry in it included.
    pub call_timeout: Duration,
}

impl Default for DynamoSettings {
    /// The shipped table name and time limits: 2 s per attempt (the lease is renewed every 2 s),
    /// 5 s per call.
    fn default() -> DynamoSettings {
        DynamoSettings {
            table: "dr-store".into(),
            region: "us-east-1".into(),
            endpoint_url: None,
            profile: None,
            attempt_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
        }
    }
}

/// The layout of the table this build writes and reads (the control item's `layout`).
const LAYOUT: u64 = 1;
/// HTTP attempts per request (the SDK's standard retry mode): 5xx, throttling, timeouts and
/// `ReplicatedWriteConflictException` are retried.
const MAX_ATTEMPTS: u32 = 3;
/// Further sends of a write refused with `ReplicatedWriteConflictException` after the SDK's own
/// attempts, each after a short jittered pause.
const CONFLICT_RETRIES: u32 = 3;
/// Rounds of read, check and conditional write before a write that keeps losing to other
/// writers gives up.
const WRITE_ROUNDS: usize = 8;
/// How much longer than the call limit the caller waits for the runtime's answer.
const GRACE: Duration = Duration::from_secs(2);
/// DynamoDB's largest item.
const MAX_ITEM_BYTES: usize = 400 * 1024;
/// Room left in the control item for what it holds besides a new run's header.
const CONTROL_HEADROOM: usize = 16 * 1024;
/// The longest run id: it is part of keys (a sort key holds at most 1024 bytes).
const MAX_ID_BYTES: usize = 512;
/// The largest sequence number of an event (ten digits in its key).
const MAX_SEQ: u64 = 9_999_999_999;
/// Items asked for per page of a query.
const PAGE: usize = 1000;

const PK: &str = "pk";
const SK: &str = "sk";
const CONTROL: &str = "control";
const HEADER_SK: &str = "header";
const RUNS_PK: &str = "runs";
const AUDIT_PK: &str = "audit";
const DAEMON_PK: &str = "daemon";
const EVENT_PREFIX: &str = "ev#";
const NOTE_PREFIX: &str = "audit#";

type Item = HashMap<String, AttributeValue>;

/// The store in a DynamoDB table.
pub struct DynamoStore {
    inner: Arc<Inner>,
    runtime: OwnRuntime,
    call_timeout: Duration,
}

/// The store's runtime, shut down without waiting when the store is dropped (dropping a runtime
/// inside another one's async context would panic).
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(|r| r.handle())
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What the calls share: the client, and what errors name.
struct Inner {
    client: Client,
    table: String,
    region: String,
    attempt_timeout: Duration,
    call_timeout: Duration,
}

impl DynamoStore {
    /// Connects and checks the table exists with the pk/sk key schema (DescribeTable): a missing
    /// table or a wrong schema is a clear error naming the table, region and what to do
    /// (deploy/dynamodb/).
    pub fn connect(settings: &DynamoSettings) -> Result<DynamoStore, StoreError> {
        Self::open(settings, None)
    }

    /// `connect` signing with the given static credentials instead of the standard chain (the
    /// tests' clients of the emulator, one access key each).
    #[doc(hidden)]
    pub fn connect_with_credentials(
        settings: &DynamoSettings,
        access_key: &str,
        secret: &str,
    ) -> Result<DynamoStore, StoreError> {
        let credentials =
            aws_sdk_dynamodb::config::Credentials::new(access_key, secret, None, None, "dr-static");
        Self::open(settings, Some(credentials))
    }

    /// The table, for messages.
    pub fn table(&self) -> &str {
        &self.inner.table
    }

    fn open(
        settings: &DynamoSettings,
        credentials: Option<aws_sdk_dynamodb::config::Credentials>,
    ) -> Result<DynamoStore, StoreError> {
        let io = |detail: String| StoreError::Io {
            path: table_path(&settings.table),
            detail,
        };
        if settings.table.trim().is_empty() {
            return Err(io("no table name is set".into()));
        }
        if settings.region.trim().is_empty() {
            return Err(io("no region is set".into()));
        }
        if settings.attempt_timeout.is_zero() || settings.call_timeout.is_zero() {
            return Err(io(
                "the attempt and call time limits must be above zero".into()
            ));
        }
        let runtime = OwnRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("dr-dynamodb")
                .enable_all()
                .build()
                .map_err(|e| io(format!("cannot start its runtime: {e}")))?,
        ));
        let handle = runtime.handle().expect("just built").clone();
        let settings_owned = settings.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let limit = settings.call_timeout;
        handle.spawn(async move {
            let connected = tokio::time::timeout(limit, async {
                let inner = Arc::new(Inner::new(&settings_owned, credentials).await);
                inner.describe().await?;
                Ok(inner)
            })
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable {
                    store: settings_owned.table.clone(),
                    detail: format!(
                        "DescribeTable in {}: no answer within {limit:?}",
                        settings_owned.region
                    ),
                })
            });
            let _ = tx.send(connected);
        });
        let inner = match rx.recv_timeout(limit.saturating_add(GRACE)) {
            Ok(result) => result?,
            Err(_) => {
                return Err(StoreError::Unavailable {
                    store: settings.table.clone(),
                    detail: format!(
                        "DescribeTable in {}: no answer within {limit:?}",
                        settings.region
                    ),
                });
            }
        };
        Ok(DynamoStore {
            inner,
            runtime,
            call_timeout: settings.call_timeout,
        })
    }

    /// Runs one store call on the store's runtime and waits for it, at most the call limit.
    fn call<T, F>(
        &self,
        what: &'static str,
        body: impl FnOnce(Arc<Inner>) -> F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let limit = self.call_timeout;
        let late = || {
            self.inner
                .unavailable(format!("{what}: no answer within {limit:?}"))
        };
        let Some(handle) = self.runtime.handle() else {
            return Err(late());
        };
        let future = body(self.inner.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let inner = self.inner.clone();
        handle.spawn(async move {
            let result = tokio::time::timeout(limit, future)
                .await
                .unwrap_or_else(|_| {
                    Err(inner.unavailable(format!("{what}: no answer within {limit:?}")))
                });
            let _ = tx.send(result);
        });
        rx.recv_timeout(limit.saturating_add(GRACE))
            .unwrap_or_else(|_| Err(late()))
    }
}

/// The path `Damaged` and `Io` name for a table.
fn table_path(table: &str) -> PathBuf {
    PathBuf::from(format!("dynamodb://{table}"))
}

// ---------------------------------------------------------------------------------------------
// Keys

/// A timestamp as a sort key part: 20 digits whose text order is the numbers' order, negative
/// ones included.
fn time_key(at: Timestamp) -> String {
    format!("{:020}", (at.0 as u64) ^ (1u64 << 63))
}

fn run_pk(run: &RunId) -> String {
    format!("run#{run}")
}

fn event_sk(seq: u64) -> String {
    format!("{EVENT_PREFIX}{seq:010}")
}

/// The sequence number in an event's sort key.
fn event_seq(sk: &str) -> Option<u64> {
    let digits = sk.strip_prefix(EVENT_PREFIX)?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn index_sk(order: u64, run: &RunId) -> String {
    format!("{order:020}#{run}")
}

/// The creation order in a runs index key.
fn index_order(sk: &str) -> Option<u64> {
    let (digits, _) = sk.split_at_checked(20)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !sk[20..].starts_with('#') {
        return None;
    }
    digits.parse().ok()
}

/// The audit key of a run's event `seq` (0: its creation). Rewriting it writes the same item.
fn run_audit_key(at: Timestamp, run: &RunId, seq: u64) -> String {
    format!("{}#run#{run}#{seq:010}", time_key(at))
}

/// The audit key of a line that is not a run event: its time, then what it is, the wall clock's
/// nanoseconds (lines of one process at one instant keep their order) and a random token.
fn note_key(at: Timestamp, kind: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    note_key_with(at, kind, nanos, &nonce())
}

fn note_key_with(at: Timestamp, kind: &str, nanos: u128, token: &str) -> String {
    format!("{}#{kind}#{nanos:020}#{token}", time_key(at))
}

/// 64 random bits: std's randomly keyed hasher over a counter, the time and the process.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A token no other write carries.
fn nonce() -> String {
    format!("{:016x}{:016x}", random(), random())
}

/// A pause of about `base` (from half of it to one and a half), jittered.
fn jittered(base: Duration) -> Duration {
    let half = base / 2;
    half + Duration::from_nanos(random() % (base.as_nanos().max(1) as u64))
}

/// Roughly the size DynamoDB counts for an item: names and values.
fn item_bytes(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_bytes(v)).sum()
}

fn value_bytes(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
        AttributeValue::B(b) => b.as_ref().len(),
        _ => 8,
    }
}

fn s(text: impl Into<String>) -> AttributeValue {
    AttributeValue::S(text.into())
}

fn n(number: u64) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

fn key(pk: &str, sk: &str) -> Item {
    HashMap::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])
}

// ---------------------------------------------------------------------------------------------
// Errors

/// What an error code means to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// The write's condition did not hold: nothing was written.
    ConditionFailed,
    /// Another region wrote the item at the same moment (MRSC): nothing was written; retry.
    WriteConflict,
    /// The table is not there.
    NoTable,
    /// Anything else: the store cannot be used now.
    Other,
}

fn classify(code: Option<&str>) -> Class {
    match code {
        Some("ConditionalCheckFailedException") => Class::ConditionFailed,
        Some("ReplicatedWriteConflictException") => Class::WriteConflict,
        Some("ResourceNotFoundException") => Class::NoTable,
        _ => Class::Other,
    }
}

/// A request that failed.
enum Failure {
    /// Its condition did not hold.
    Condition,
    /// Anything else, as the store reports it.
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Failure {
        Failure::Store(err)
    }
}

/// An expression's placeholders: only those used are sent (DynamoDB refuses unused ones).
#[derive(Default)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    /// `#attr`, for the attribute `attr`.
    fn n(&mut self, attr: &str) -> String {
        let placeholder = format!("#{attr}");
        self.names.insert(placeholder.clone(), attr.to_string());
        placeholder
    }

    /// `:name`, bound to `value`.
    fn v(&mut self, name: &str, value: AttributeValue) -> String {
        let placeholder = format!(":{name}");
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// What a conditional update did.
enum Updated {
    /// It was applied; the attributes asked for, if any.
    Done(Option<Item>),
    /// Its condition did not hold.
    ConditionFailed,
}

// ---------------------------------------------------------------------------------------------
// Records kept in the control item

/// A run whose creation is being completed: its header and audit line, in the control item from
/// the claim until they are copied out.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Creating {
    version: u32,
    /// Its place in the creation order.
    order: u64,
    header: RunHeader,
    created: AuditEntry,
    /// The token of the write that created it, copied to the header item.
    writer: String,
}

/// The audit line of the last change of the automation switches, kept in the control item so
/// that a line whose own write was lost is still read.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PendingAudit {
    version: u32,
    key: String,
    entry: AuditEntry,
}

/// The control item as read.
struct Control {
    item: Option<Item>,
}

/// A run's partition as read: its header, its creation line and its log.
struct Partition {
    header: Option<(RunHeader, Option<AuditEntry>)>,
    events: Vec<EventRecord>,
    notes: Vec<(String, AuditEntry)>,
}

// ---------------------------------------------------------------------------------------------
// The calls

impl Inner {
    async fn new(
        settings: &DynamoSettings,
        credentials: Option<aws_sdk_dynamodb::config::Credentials>,
    ) -> Inner {
        use aws_config::{BehaviorVersion, Region};
        use aws_smithy_types::retry::RetryConfig;
        use aws_smithy_types::timeout::TimeoutConfig;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(50))
                    .with_max_backoff(Duration::from_millis(500)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.attempt_timeout)
                    .operation_attempt_timeout(settings.attempt_timeout)
                    .operation_timeout(settings.call_timeout)
                    .build(),
            );
        if let Some(profile) = &settings.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let sdk = loader.load().await;
        Inner {
            client: Client::new(&sdk),
            table: settings.table.clone(),
            region: settings.region.clone(),
            attempt_timeout: settings.attempt_timeout,
            call_timeout: settings.call_timeout,
        }
    }

    fn unavailable(&self, detail: String) -> StoreError {
        StoreError::Unavailable {
            store: self.table.clone(),
            detail,
        }
    }

    fn damaged(&self, detail: String) -> StoreError {
        StoreError::Damaged {
            path: table_path(&self.table),
            detail,
        }
    }

    /// A write this table cannot hold (too large, a key too long): refused, nothing written.
    fn refused(&self, detail: String) -> StoreError {
        StoreError::Io {
            path: table_path(&self.table),
            detail: format!("{detail}; nothing was written"),
        }
    }

    fn no_table(&self) -> String {
        format!(
            "there is no DynamoDB table {} in {}: create it from a template in deploy/dynamodb/ (see deploy/dynamodb/README.md), or set [store] table and table_region to where it is",
            self.table, self.region
        )
    }

    /// Sends one request (`make` builds and sends it); a write conflict between regions is sent
    /// again a few times after a short jittered pause.
    async fn send<T, E, F, Fut>(&self, op: &'static str, make: F) -> Result<T, Failure>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut conflicts = 0;
        loop {
            let err = match make().await {
                Ok(out) => return Ok(out),
                Err(err) => err,
            };
            let detail = self.error_detail(&err);
            match classify(err.code()) {
                Class::ConditionFailed => return Err(Failure::Condition),
                Class::WriteConflict if conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    tokio::time::sleep(jittered(Duration::from_millis(25 << conflicts))).await;
                }
                Class::WriteConflict => {
                    return Err(Failure::Store(self.unavailable(format!(
                        "{op} in {}: {detail} (the item kept being written from another region; tried {} times)",
                        self.region,
                        conflicts + 1
                    ))));
                }
                Class::NoTable => {
                    return Err(Failure::Store(
                        self.unavailable(format!("{op}: {detail}; {}", self.no_table())),
                    ));
                }
                Class::Other => {
                    return Err(Failure::Store(
                        self.unavailable(format!("{op} in {}: {detail}", self.region)),
                    ));
                }
            }
        }
    }

    /// What went wrong with a request: the error code and message AWS answered, or why there
    /// was no answer.
    fn error_detail<E>(&self, err: &SdkError<E, HttpResponse>) -> String
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match err {
            SdkError::ServiceError(_) => format!(
                "{}: {}",
                err.code().unwrap_or("an unnamed error"),
                err.message().unwrap_or("no message")
            ),
            SdkError::TimeoutError(_) => format!(
                "no answer within the time limits ({:?} per attempt, {:?} per call)",
                self.attempt_timeout, self.call_timeout
            ),
            _ => DisplayErrorContext(err).to_string(),
        }
    }

    /// `send` for a request without a condition.
    async fn send_plain<T, E, F, Fut>(&self, op: &'static str, make: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.send(op, make).await.map_err(|failure| match failure {
            Failure::Store(err) => err,
            Failure::Condition => self.unavailable(format!("{op}: a condition failed")),
        })
    }

    /// Checks the table: there, usable, keyed by `pk` and `sk`, both strings.
    async fn describe(&self) -> Result<(), StoreError> {
        let io = |detail: String| StoreError::Io {
            path: table_path(&self.table),
            detail,
        };
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await;
        let table = match out {
            Ok(out) => out.table,
            Err(err) if classify(err.code()) == Class::NoTable => return Err(io(self.no_table())),
            Err(err) => {
                return Err(self.unavailable(format!(
                    "DescribeTable in {}: {}",
                    self.region,
                    self.error_detail(&err)
                )));
            }
        };
        let Some(table) = table else {
            return Err(io(self.no_table()));
        };
        let expected = "dr's store needs partition key `pk` (string) and sort key `sk` (string); create its table from a template in deploy/dynamodb/";
        let mut keys: Vec<(String, KeyType)> = table
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name().to_string(), k.key_type().clone()))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        let want = vec![
            (PK.to_string(), KeyType::Hash),
            (SK.to_string(), KeyType::Range),
        ];
        if keys != want {
            let found: Vec<String> = keys
                .iter()
                .map(|(name, kind)| format!("{name} ({})", kind.as_str()))
                .collect();
            return Err(io(format!(
                "table {} in {} is keyed by {}: {expected}",
                self.table,
                self.region,
                if found.is_empty() {
                    "nothing".to_string()
                } else {
                    found.join(", ")
                }
            )));
        }
        for name in [PK, SK] {
            let kind = table
                .attribute_definitions()
                .iter()
                .find(|d| d.attribute_name() == name)
                .map(|d| d.attribute_type().clone());
            if kind != Some(ScalarAttributeType::S) {
                return Err(io(format!(
                    "table {} in {}: key {name} is {}: {expected}",
                    self.table,
                    self.region,
                    kind.map_or("undefined".to_string(), |k| format!(
                        "of type {}",
                        k.as_str()
                    ))
                )));
            }
        }
        match table.table_status() {
            None | Some(TableStatus::Active) | Some(TableStatus::Updating) => Ok(()),
            Some(TableStatus::Creating) => Err(self.unavailable(format!(
                "table {} in {} is still being created; try again once it is ACTIVE",
                self.table, self.region
            ))),
            Some(other) => Err(io(format!(
                "table {} in {} is {}: it cannot be used; see deploy/dynamodb/README.md",
                self.table,
                self.region,
                other.as_str()
            ))),
        }
    }

    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .send_plain("GetItem", || {
                self.client
                    .get_item()
                    .table_name(&self.table)
                    .set_key(Some(key(pk, sk)))
                    .consistent_read(true)
                    .send()
            })
            .await?;
        Ok(out.item)
    }

    /// Puts `item`, if `condition` (with its placeholders in `expr`) holds: false if it did
    /// not, and nothing was written.
    async fn put(
        &self,
        item: Item,
        condition: Option<String>,
        expr: Expr,
    ) -> Result<bool, StoreError> {
        let size = item_bytes(&item);
        if size > MAX_ITEM_BYTES {
            return Err(self.refused(format!(
                "item {} is {size} bytes, over DynamoDB's limit of {MAX_ITEM_BYTES}",
                item_name(&item)
            )));
        }
        let result = self
            .send("PutItem", || {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item.clone()))
                    .set_condition_expression(condition.clone())
                    .set_expression_attribute_names(expr.names())
                    .set_expression_attribute_values(expr.values())
                    .send()
            })
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(Failure::Condition) => Ok(false),
            Err(Failure::Store(err)) => Err(err),
        }
    }

    /// Puts `item` unconditionally.
    async fn put_plain(&self, item: Item) -> Result<(), StoreError> {
        self.put(item, None, Expr::default()).await.map(|_| ())
    }

    /// Updates the control item.
    async fn update_control(
        &self,
        update: String,
        condition: Option<String>,
        expr: Expr,
        returning: Option<ReturnValue>,
    ) -> Result<Updated, StoreError> {
        let result = self
            .send("UpdateItem", || {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key(CONTROL, CONTROL)))
                    .update_expression(update.clone())
                    .set_condition_expression(condition.clone())
                    .set_expression_attribute_names(expr.names())
                    .set_expression_attribute_values(expr.values())
                    .set_return_values(returning.clone())
                    .send()
            })
            .await;
        match result {
            Ok(out) => Ok(Updated::Done(out.attributes)),
            Err(Failure::Condition) => Ok(Updated::ConditionFailed),
            Err(Failure::Store(err)) => Err(err),
        }
    }

    /// The items of partition `pk`, in sort key order (`forward`) or the reverse, at most
    /// `limit`; with `from`, only sort keys from it on; with `prefix`, only those starting so.
    async fn query(
        &self,
        pk: &str,
        from: Option<&str>,
        prefix: Option<&str>,
        forward: bool,
        limit: Option<usize>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut expr = Expr::default();
        let mut condition = format!("{} = {}", expr.n(PK), expr.v("pk", s(pk)));
        if let Some(from) = from {
            condition = format!(
                "{condition} AND {} >= {}",
                expr.n(SK),
                expr.v("from", s(from))
            );
        }
        if let Some(prefix) = prefix {
            condition = format!(
                "{condition} AND begins_with({}, {})",
                expr.n(SK),
                expr.v("prefix", s(prefix))
            );
        }
        let mut items: Vec<Item> = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = limit.map(|l| l.saturating_sub(items.len()).clamp(1, PAGE) as i32);
            let out = self
                .send_plain("Query", || {
                    self.client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression(condition.clone())
                        .set_expression_attribute_names(expr.names())
                        .set_expression_attribute_values(expr.values())
                        .consistent_read(true)
                        .scan_index_forward(forward)
                        .set_limit(page)
                        .set_exclusive_start_key(start.clone())
                        .send()
                })
                .await?;
            items.extend(out.items.unwrap_or_default());
            if limit.is_some_and(|l| items.len() >= l) {
                items.truncate(limit.unwrap_or(usize::MAX));
                break;
            }
            match out.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
        Ok(items)
    }

    // --- reading items -----------------------------------------------------------------------

    /// A string attribute: None when absent, `Damaged` when of another type.
    fn text<'a>(&self, item: &'a Item, attr: &str) -> Result<Option<&'a str>, StoreError> {
        match item.get(attr) {
            None => Ok(None),
            Some(AttributeValue::S(text)) => Ok(Some(text)),
            Some(other) => Err(self.damaged(format!(
                "item {}: {attr} is not a string ({})",
                item_name(item),
                kind_of(other)
            ))),
        }
    }

    /// A number attribute that is a whole number from 0.
    fn number(&self, item: &Item, attr: &str) -> Result<Option<u64>, StoreError> {
        match item.get(attr) {
            None => Ok(None),
            Some(AttributeValue::N(text)) => text.parse().map(Some).map_err(|_| {
                self.damaged(format!(
                    "item {}: {attr} is {text}, not a whole number",
                    item_name(item)
                ))
            }),
            Some(other) => Err(self.damaged(format!(
                "item {}: {attr} is not a number ({})",
                item_name(item),
                kind_of(other)
            ))),
        }
    }

    /// Decodes the JSON in attribute `attr`, checking its version first.
    fn decode<T: DeserializeOwned>(
        &self,
        item: &Item,
        attr: &str,
        what: &str,
    ) -> Result<T, StoreError> {
        let text = self
            .text(item, attr)?
            .ok_or_else(|| self.damaged(format!("item {}: it has no {attr}", item_name(item))))?;
        self.decode_text(item, attr, what, text)
    }

    fn decode_text<T: DeserializeOwned>(
        &self,
        item: &Item,
        attr: &str,
        what: &str,
        text: &str,
    ) -> Result<T, StoreError> {
        let damaged = |e: serde_json::Error| {
            self.damaged(format!("item {}: {attr} ({what}): {e}", item_name(item)))
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(damaged)?;
        check_versions(what, &value)?;
        serde_json::from_value(value).map_err(damaged)
    }

    // --- the control item --------------------------------------------------------------------

    async fn control(&self) -> Result<Control, StoreError> {
        let item = self.get(CONTROL, CONTROL).await?;
        if let Some(item) = &item
            && let Some(layout) = self.number(item, "layout")?
            && layout > LAYOUT
        {
            return Err(StoreError::UnsupportedVersion {
                what: format!("the layout of table {}", self.table),
                found: layout.min(u32::MAX as u64) as u32,
                supported: LAYOUT as u32,
            });
        }
        Ok(Control { item })
    }

    fn version(&self, control: &Control) -> Result<Option<u64>, StoreError> {
        match &control.item {
            Some(item) => self.number(item, "version"),
            None => Ok(None),
        }
    }

    fn writer<'a>(&self, control: &'a Control, attr: &str) -> Result<Option<&'a str>, StoreError> {
        match &control.item {
            Some(item) => self.text(item, attr),
            None => Ok(None),
        }
    }

    fn active(&self, control: &Control) -> Result<Option<RunId>, StoreError> {
        match &control.item {
            Some(item) => Ok(self.text(item, "active_run")?.map(RunId::new)),
            None => Ok(None),
        }
    }

    fn creating(&self, control: &Control) -> Result<Option<Creating>, StoreError> {
        match &control.item {
            Some(item) if item.contains_key("creating") => {
                Ok(Some(self.decode(item, "creating", "run header")?))
            }
            _ => Ok(None),
        }
    }

    fn automation_of(&self, control: &Control) -> Result<Automation, StoreError> {
        match &control.item {
            Some(item) if item.contains_key("automation") => {
                self.decode(item, "automation", "automation")
            }
            _ => Ok(Automation::default()),
        }
    }

    fn automation_audit(&self, control: &Control) -> Result<Option<PendingAudit>, StoreError> {
        match &control.item {
            Some(item) if item.contains_key("automation_audit") => Ok(Some(self.decode(
                item,
                "automation_audit",
                "audit entry",
            )?)),
            _ => Ok(None),
        }
    }

    /// The lease, checked against the attributes conditions compare.
    fn lease_of(&self, control: &Control) -> Result<Option<LeaseRecord>, StoreError> {
        let Some(item) = &control.item else {
            return Ok(None);
        };
        if !item.contains_key("lease") {
            if item.contains_key("lease_epoch") {
                return Err(self.damaged(format!(
                    "item {}: lease_epoch without a lease",
                    item_name(item)
                )));
            }
            return Ok(None);
        }
        let lease: LeaseRecord = self.decode(item, "lease", "lease")?;
        let holder = self.text(item, "lease_holder")?;
        let epoch = self.number(item, "lease_epoch")?;
        let beat = self.number(item, "lease_beat")?;
        if holder != Some(lease.holder.as_str())
            || epoch != Some(lease.epoch)
            || beat != Some(lease.beat)
        {
            return Err(self.damaged(format!(
                "item {}: the lease ({} epoch {} beat {}) disagrees with lease_holder, lease_epoch and lease_beat ({holder:?}, {epoch:?}, {beat:?})",
                item_name(item),
                lease.holder,
                lease.epoch,
                lease.beat
            )));
        }
        Ok(Some(lease))
    }

    // --- runs --------------------------------------------------------------------------------

    /// A run's partition: header and log (`notes`: its other audit lines too).
    async fn read_run(&self, run: &RunId, notes: bool) -> Result<Partition, StoreError> {
        // "audit#…" < "ev#…" < "header": without notes, from "ev#" on.
        let from = (!notes).then_some(EVENT_PREFIX);
        let items = self.query(&run_pk(run), from, None, true, None).await?;
        let mut part = Partition {
            header: None,
            events: Vec::new(),
            notes: Vec::new(),
        };
        for item in &items {
            let sk = self.text(item, SK)?.unwrap_or_default();
            if sk == HEADER_SK {
                let header: RunHeader = self.decode(item, "header", "run header")?;
                if header.id != *run {
                    return Err(self.damaged(format!(
                        "item {}: the header is run {}'s",
                        item_name(item),
                        header.id
                    )));
                }
                let created = match item.contains_key("created") {
                    true => Some(self.decode(item, "created", "audit entry")?),
                    false => None,
                };
                part.header = Some((header, created));
            } else if sk.starts_with(EVENT_PREFIX) {
                let seq = event_seq(sk).ok_or_else(|| {
                    self.damaged(format!("item {}: not an event's key", item_name(item)))
                })?;
                let record: EventRecord = self.decode(item, "record", "run event")?;
                if record.seq != seq {
                    return Err(self.damaged(format!(
                        "item {}: it holds event {}",
                        item_name(item),
                        record.seq
                    )));
                }
                let expected = part.events.len() as u64 + 1;
                if seq != expected {
                    return Err(self.damaged(format!(
                        "run {run}'s log has no event {expected}: the next one is {seq}"
                    )));
                }
                part.events.push(record);
            } else if let Some(audit_key) = sk.strip_prefix(NOTE_PREFIX)
                && notes
            {
                let entry: AuditEntry = self.decode(item, "entry", "audit entry")?;
                part.notes.push((audit_key.to_string(), entry));
            }
        }
        if part.header.is_none() && !part.events.is_empty() {
            // An event is only appended to a run whose header is stored or in the control item.
            let control = self.control().await?;
            match self.creating(&control)? {
                Some(c) if c.header.id == *run => {}
                _ => {
                    return Err(self.damaged(format!(
                        "run {run} has {} events but no header",
                        part.events.len()
                    )));
                }
            }
        }
        Ok(part)
    }

    /// The header of `run` from its partition, or from the control item while its creation is
    /// being completed.
    async fn header_of(
        &self,
        run: &RunId,
        part: &mut Partition,
    ) -> Result<Option<(RunHeader, Option<AuditEntry>)>, StoreError> {
        if let Some(header) = part.header.take() {
            return Ok(Some(header));
        }
        let control = self.control().await?;
        Ok(self
            .creating(&control)?
            .filter(|c| c.header.id == *run)
            .map(|c| (c.header, Some(c.created))))
    }

    /// Copies a claimed run's header, index entry and creation line out of the control item,
    /// then removes them from it. Every write is idempotent: any process may do it, again.
    async fn complete(&self, creating: &Creating) -> Result<(), StoreError> {
        let run = &creating.header.id;
        let header = json(&creating.header);
        let created = json(&creating.created);
        let mut header_item = key(&run_pk(run), HEADER_SK);
        header_item.insert("header".into(), s(&header));
        header_item.insert("created".into(), s(&created));
        header_item.insert("writer".into(), s(&creating.writer));
        let mut index_item = key(RUNS_PK, &index_sk(creating.order, run));
        index_item.insert("header".into(), s(&header));
        let audit_key = run_audit_key(creating.created.at, run, 0);
        let (a, b, c) = tokio::join!(
            self.put_plain(header_item),
            self.put_plain(index_item),
            self.put_audit(&audit_key, &creating.created, false),
        );
        a?;
        b?;
        c?;
        let mut expr = Expr::default();
        let update = format!("REMOVE {}", expr.n("creating"));
        let condition = format!(
            "{} = {} AND attribute_exists({})",
            expr.n("active_run"),
            expr.v("run", s(run.as_str())),
            expr.n("creating")
        );
        // Condition failed: someone else completed it, or a newer run is active.
        self.update_control(update, Some(condition), expr, None)
            .await
            .map(|_| ())
    }

    /// Writes an audit line under `audit_key`; a line about a run that is not one of its events
    /// (`note`) is also kept in the run's partition.
    async fn put_audit(
        &self,
        audit_key: &str,
        entry: &AuditEntry,
        note: bool,
    ) -> Result<(), StoreError> {
        let text = json(entry);
        let mut global = key(AUDIT_PK, audit_key);
        global.insert("entry".into(), s(&text));
        match (&entry.run, note) {
            (Some(run), true) if run.as_str().len() <= MAX_ID_BYTES => {
                let mut local = key(&run_pk(run), &format!("{NOTE_PREFIX}{audit_key}"));
                local.insert("entry".into(), s(&text));
                let (a, b) = tokio::join!(self.put_plain(local), self.put_plain(global));
                a.and(b)
            }
            _ => self.put_plain(global).await,
        }
    }

    /// Writes the audit line of `record` unless it is there.
    async fn ensure_event_audit(
        &self,
        run: &RunId,
        record: &EventRecord,
    ) -> Result<(), StoreError> {
        let audit_key = run_audit_key(record.at, run, record.seq);
        if self.get(AUDIT_PK, &audit_key).await?.is_none() {
            self.put_audit(&audit_key, &AuditEntry::of_event(run, record), false)
                .await?;
        }
        Ok(())
    }

    async fn create_run(
        &self,
        header: RunHeader,
        actor: Actor,
        reason: String,
        epoch: Option<u64>,
    ) -> Result<(), StoreError> {
        let id = header.id.clone();
        if id.as_str().len() > MAX_ID_BYTES {
            return Err(self.refused(format!(
                "run id {}… is {} bytes; ids of at most {MAX_ID_BYTES} fit in the table's keys",
                id.as_str().chars().take(32).collect::<String>(),
                id.as_str().len()
            )));
        }
        let created = creation_audit(&header, &actor, &reason);
        let token = nonce();
        for _ in 0..WRITE_ROUNDS {
            let pk = run_pk(&id);
            let (control, existing) = tokio::join!(self.control(), self.get(&pk, HEADER_SK));
            let control = control?;
            check_fence(epoch, self.lease_of(&control)?.as_ref())?;
            if matches!(header.trigger, Trigger::Automatic { .. })
                && self.automation_of(&control)?.paused
            {
                return Err(StoreError::AutomationPaused(id));
            }
            // A creation still being completed is completed first: the claim below replaces it.
            let pending = self.creating(&control)?;
            if let Some(pending) = &pending {
                self.complete(pending).await?;
            }
            if let Some(active) = self.active(&control)? {
                let mut part = self.read_run(&active, false).await?;
                let Some((active_header, _)) = self.header_of(&active, &mut part).await? else {
                    return Err(self.damaged(format!(
                        "the control item names run {active} as active, and it has no header"
                    )));
                };
                let stored = StoredRun {
                    header: active_header,
                    events: part.events,
                };
                let finished = stored.state().is_ok_and(|state| state.outcome.is_some());
                if !finished {
                    return Err(StoreError::RunActive {
                        run: active,
                        status: status_text(&stored),
                    });
                }
                // It finished, and its pointer was not cleared: its last line may be missing too.
                if let Some(last) = stored.events.last() {
                    self.ensure_event_audit(&active, last).await?;
                }
            }
            if existing?.is_some() || pending.is_some_and(|c| c.header.id == id) {
                return Err(StoreError::DuplicateRun(id));
            }

            let version = self.version(&control)?;
            let order = version.unwrap_or(0) + 1;
            let creating = Creating {
                version: STORE_VERSION,
                order,
                header: header.clone(),
                created: created.clone(),
                writer: token.clone(),
            };
            let text = json(&creating);
            if text.len() + CONTROL_HEADROOM > MAX_ITEM_BYTES {
                return Err(self.refused(format!(
                    "run {id}'s header is {} bytes; with the rest of the control item it would pass DynamoDB's item limit of {MAX_ITEM_BYTES} bytes",
                    text.len()
                )));
            }
            let mut expr = Expr::default();
            let update = format!(
                "SET {} = {}, {} = {}, {} = {}, {} = {}, {} = {}",
                expr.n("active_run"),
                expr.v("run", s(id.as_str())),
                expr.n("active_order"),
                expr.v("order", n(order)),
                expr.n("creating"),
                expr.v("creating", s(&text)),
                expr.n("version"),
                expr.v("next", n(order)),
                expr.n("layout"),
                expr.v("layout", n(LAYOUT)),
            );
            let mut condition = match version {
                Some(v) => format!("{} = {}", expr.n("version"), expr.v("version", n(v))),
                None => format!("attribute_not_exists({})", expr.n("version")),
            };
            if let Some(epoch) = epoch {
                // The fence, as `check_fence` judges it, in the same write.
                let e = expr.n("lease_epoch");
                condition = format!(
                    "{condition} AND (attribute_not_exists({e}) OR {e} <= {})",
                    expr.v("epoch", n(epoch))
                );
            }
            let claimed = match self
                .update_control(update, Some(condition), expr, None)
                .await?
            {
                Updated::Done(_) => true,
                // Our own earlier attempt, applied but unanswered?
                Updated::ConditionFailed => self.created_by(&id, &token).await?,
            };
            if claimed {
                // The run exists from here on; the copy is completed by whoever comes next if
                // it fails now.
                if let Err(err) = self.complete(&creating).await {
                    tracing::warn!(run = %id, error = %err, "the new run's header is still only in the control item");
                }
                return Ok(());
            }
        }
        Err(self.unavailable(format!(
            "run {id} was not created: the control item changed under each of {WRITE_ROUNDS} attempts"
        )))
    }

    /// Whether run `run` was created by the write with `token`: the token is in the control
    /// item while its creation is completed, and on its header item after.
    async fn created_by(&self, run: &RunId, token: &str) -> Result<bool, StoreError> {
        let pk = run_pk(run);
        let (control, header) = tokio::join!(self.control(), self.get(&pk, HEADER_SK));
        if self
            .creating(&control?)?
            .is_some_and(|c| c.header.id == *run && c.writer == token)
        {
            return Ok(true);
        }
        Ok(match header? {
            Some(item) => self.text(&item, "writer")? == Some(token),
            None => false,
        })
    }

    async fn append(
        &self,
        run: RunId,
        at: Timestamp,
        actor: Actor,
        event: RunEvent,
        epoch: Option<u64>,
    ) -> Result<EventRecord, StoreError> {
        if run.as_str().len() > MAX_ID_BYTES {
            return Err(StoreError::NoSuchRun(run));
        }
        let token = nonce();
        for _ in 0..WRITE_ROUNDS {
            let (control, part) = tokio::join!(self.control(), self.read_run(&run, false));
            let control = control?;
            check_fence(epoch, self.lease_of(&control)?.as_ref())?;
            let mut part = part?;
            if let Some(pending) = self.creating(&control)?.filter(|c| c.header.id == run) {
                self.complete(&pending).await?;
                if part.header.is_none() {
                    part.header = Some((pending.header, Some(pending.created)));
                }
            }
            let Some((header, _)) = part.header else {
                return Err(StoreError::NoSuchRun(run));
            };
            let stored = StoredRun {
                header,
                events: part.events,
            };
            let (record, finished) = prepare_append(&stored, at, &actor, event.clone(), epoch)?;
            if record.seq > MAX_SEQ {
                return Err(self.refused(format!("run {run} has {MAX_SEQ} events already")));
            }
            let mut item = key(&run_pk(&run), &event_sk(record.seq));
            item.insert("record".into(), s(json(&record)));
            item.insert("writer".into(), s(&token));
            let mut expr = Expr::default();
            let condition = format!("attribute_not_exists({})", expr.n(PK));
            let previous = stored.events.last();
            let (written, _) = tokio::join!(self.put(item, Some(condition), expr), async {
                // The previous event's line, in case its writer died before writing it.
                if let Some(previous) = previous
                    && let Err(err) = self.ensure_event_audit(&run, previous).await
                {
                    tracing::warn!(run = %run, error = %err, "could not check the previous event's audit line");
                }
            });
            let ours = match written? {
                true => true,
                false => {
                    // Event N is taken: by us (an earlier attempt, applied but unanswered), or
                    // by another writer, and then this one is checked again against the log.
                    let now = self.get(&run_pk(&run), &event_sk(record.seq)).await?;
                    match &now {
                        Some(item) => self.text(item, "writer")? == Some(token.as_str()),
                        None => false,
                    }
                }
            };
            if !ours {
                continue;
            }
            // The event is stored: what follows is completed later if it fails now.
            let audit_key = run_audit_key(record.at, &run, record.seq);
            match self
                .put_audit(&audit_key, &AuditEntry::of_event(&run, &record), false)
                .await
            {
                Ok(()) if finished => {
                    if let Err(err) = self.clear_active(&run).await {
                        tracing::warn!(run = %run, error = %err, "the finished run is still named active");
                    }
                }
                Ok(()) => {}
                Err(err) => {
                    tracing::warn!(run = %run, seq = record.seq, error = %err, "the event's audit line is not written yet");
                }
            }
            return Ok(record);
        }
        Err(self.unavailable(format!(
            "the event was not appended to run {run}: other writers appended before it {WRITE_ROUNDS} times"
        )))
    }

    /// Clears the active run if it is `run`.
    async fn clear_active(&self, run: &RunId) -> Result<(), StoreError> {
        let mut expr = Expr::default();
        let version = expr.n("version");
        let update = format!(
            "REMOVE {}, {} SET {version} = if_not_exists({version}, {}) + {}",
            expr.n("active_run"),
            expr.n("active_order"),
            expr.v("zero", n(0)),
            expr.v("one", n(1)),
        );
        let condition = format!(
            "{} = {}",
            expr.n("active_run"),
            expr.v("run", s(run.as_str()))
        );
        self.update_control(update, Some(condition), expr, None)
            .await
            .map(|_| ())
    }

    async fn load_run(&self, run: RunId) -> Result<Option<StoredRun>, StoreError> {
        if run.as_str().len() > MAX_ID_BYTES {
            return Ok(None);
        }
        let mut part = self.read_run(&run, false).await?;
        let Some((header, _)) = self.header_of(&run, &mut part).await? else {
            return Ok(None);
        };
        Ok(Some(StoredRun {
            header,
            events: part.events,
        }))
    }

    async fn list_runs(&self, limit: usize) -> Result<Vec<RunHeader>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (items, control) = tokio::join!(
            self.query(RUNS_PK, None, None, false, Some(limit)),
            self.control()
        );
        let mut runs: Vec<(u64, RunHeader)> = Vec::new();
        for item in items? {
            let sk = self.text(&item, SK)?.unwrap_or_default();
            let order = index_order(sk).ok_or_else(|| {
                self.damaged(format!("item {}: not a runs index key", item_name(&item)))
            })?;
            runs.push((order, self.decode(&item, "header", "run header")?));
        }
        if let Some(pending) = self.creating(&control?)?
            && !runs.iter().any(|(_, h)| h.id == pending.header.id)
        {
            runs.push((pending.order, pending.header));
        }
        runs.sort_by_key(|r| std::cmp::Reverse(r.0));
        runs.truncate(limit);
        Ok(runs.into_iter().map(|(_, h)| h).collect())
    }

    async fn active_run(&self) -> Result<Option<RunId>, StoreError> {
        let control = self.control().await?;
        let Some(active) = self.active(&control)? else {
            return Ok(None);
        };
        // A pointer to a finished run (its writer died before clearing it) counts as none.
        let last = self
            .query(&run_pk(&active), None, Some(EVENT_PREFIX), false, Some(1))
            .await?;
        if let Some(item) = last.first() {
            let record: EventRecord = self.decode(item, "record", "run event")?;
            if matches!(record.event, RunEvent::Finished { .. }) {
                return Ok(None);
            }
        }
        Ok(Some(active))
    }

    async fn audit(&self, run: Option<RunId>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut lines: Vec<(String, AuditEntry)> = Vec::new();
        match run {
            Some(run) => {
                if run.as_str().len() > MAX_ID_BYTES {
                    return Ok(Vec::new());
                }
                // A run's lines are its creation, its events and its notes, all in its
                // partition: read there, not filtered out of the whole log.
                let mut part = self.read_run(&run, true).await?;
                if let Some((header, created)) = self.header_of(&run, &mut part).await? {
                    let created = created.ok_or_else(|| {
                        self.damaged(format!("run {run}'s header has no creation line"))
                    })?;
                    lines.push((run_audit_key(header.created_at, &run, 0), created));
                }
                for record in &part.events {
                    lines.push((
                        run_audit_key(record.at, &run, record.seq),
                        AuditEntry::of_event(&run, record),
                    ));
                }
                lines.extend(part.notes);
            }
            None => {
                let (items, control) = tokio::join!(
                    self.query(AUDIT_PK, None, None, false, Some(limit)),
                    self.control()
                );
                for item in items? {
                    let sk = self.text(&item, SK)?.unwrap_or_default().to_string();
                    lines.push((sk, self.decode(&item, "entry", "audit entry")?));
                }
                // Lines whose own write may not have landed: kept in the control item too.
                let control = control?;
                let mut pending = Vec::new();
                if let Some(c) = self.creating(&control)? {
                    pending.push((run_audit_key(c.created.at, &c.header.id, 0), c.created));
                }
                if let Some(p) = self.automation_audit(&control)? {
                    pending.push((p.key, p.entry));
                }
                let oldest = lines.iter().map(|(k, _)| k.clone()).min();
                let full = lines.len() >= limit;
                for (k, entry) in pending {
                    let within = !full || oldest.as_ref().is_some_and(|o| k > *o);
                    if within && !lines.iter().any(|(seen, _)| *seen == k) {
                        lines.push((k, entry));
                    }
                }
            }
        }
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        let skip = lines.len().saturating_sub(limit);
        Ok(lines.into_iter().skip(skip).map(|(_, e)| e).collect())
    }

    async fn record_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.put_audit(&note_key(entry.at, "note"), &entry, true)
            .await
    }

    async fn set_automation(
        &self,
        mut automation: Automation,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        automation.version = STORE_VERSION;
        let pending = PendingAudit {
            version: STORE_VERSION,
            key: note_key(audit.at, "automation"),
            entry: audit,
        };
        let mut expr = Expr::default();
        let version = expr.n("version");
        let update = format!(
            "SET {} = {}, {} = {}, {version} = if_not_exists({version}, {}) + {}, {} = {}",
            expr.n("automation"),
            expr.v("automation", s(json(&automation))),
            expr.n("automation_audit"),
            expr.v("audit", s(json(&pending))),
            expr.v("zero", n(0)),
            expr.v("one", n(1)),
            expr.n("layout"),
            expr.v("layout", n(LAYOUT)),
        );
        // The version goes up, so a run being created against the old switches is checked again
        // against these.
        let old = match self
            .update_control(update, None, expr, Some(ReturnValue::UpdatedOld))
            .await?
        {
            Updated::Done(old) => old,
            Updated::ConditionFailed => None,
        };
        // The previous change's line, in case its writer died before writing it.
        let previous = match &old {
            Some(old) if old.contains_key("automation_audit") => self
                .decode::<PendingAudit>(old, "automation_audit", "audit entry")
                .ok(),
            _ => None,
        };
        let (now, before) =
            tokio::join!(self.put_audit(&pending.key, &pending.entry, true), async {
                match &previous {
                    Some(p) => self.put_audit(&p.key, &p.entry, true).await,
                    None => Ok(()),
                }
            });
        // The switches are set; a line not written now is read from the control item.
        for err in [now.err(), before.err()].into_iter().flatten() {
            tracing::warn!(error = %err, "an automation audit line is only in the control item");
        }
        Ok(())
    }

    async fn daemon_statuses(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut statuses = Vec::new();
        for item in self.query(DAEMON_PK, None, None, true, None).await? {
            let id = self.text(&item, SK)?.unwrap_or_default().to_string();
            let status = self.text(&item, "status")?.ok_or_else(|| {
                self.damaged(format!("item {}: it has no status", item_name(&item)))
            })?;
            statuses.push((id, status.to_string()));
        }
        Ok(statuses)
    }

    async fn put_daemon_status(&self, daemon: String, json: String) -> Result<(), StoreError> {
        if daemon.is_empty() || daemon.len() > MAX_ID_BYTES {
            return Err(self.refused(format!(
                "a daemon id must be 1 to {MAX_ID_BYTES} bytes; this one is {}",
                daemon.len()
            )));
        }
        let mut item = key(DAEMON_PK, &daemon);
        item.insert("status".into(), s(json));
        self.put_plain(item).await
    }

    async fn lease(&self) -> Result<Option<LeaseRecord>, StoreError> {
        let control = self.control().await?;
        self.lease_of(&control)
    }

    async fn swap_lease(
        &self,
        expected: Option<LeaseRecord>,
        next: LeaseRecord,
    ) -> Result<bool, StoreError> {
        let token = nonce();
        let mut expr = Expr::default();
        let update = format!(
            "SET {} = {}, {} = {}, {} = {}, {} = {}, {} = {}, {} = {}",
            expr.n("lease"),
            expr.v("lease", s(json(&next))),
            expr.n("lease_holder"),
            expr.v("holder", s(&next.holder)),
            expr.n("lease_epoch"),
            expr.v("epoch", n(next.epoch)),
            expr.n("lease_beat"),
            expr.v("beat", n(next.beat)),
            expr.n("lease_writer"),
            expr.v("writer", s(&token)),
            expr.n("layout"),
            expr.v("layout", n(LAYOUT)),
        );
        // Only the lease's own attributes: the version, and runs being created, are untouched.
        let condition = match &expected {
            None => format!("attribute_not_exists({})", expr.n("lease_epoch")),
            Some(e) => format!(
                "{} = {} AND {} = {} AND {} = {}",
                expr.n("lease_holder"),
                expr.v("was_holder", s(&e.holder)),
                expr.n("lease_epoch"),
                expr.v("was_epoch", n(e.epoch)),
                expr.n("lease_beat"),
                expr.v("was_beat", n(e.beat)),
            ),
        };
        match self
            .update_control(update, Some(condition), expr, None)
            .await?
        {
            Updated::Done(_) => Ok(true),
            Updated::ConditionFailed => {
                // Our own earlier attempt, applied but unanswered, or someone else's write.
                let now = self.control().await?;
                Ok(self.writer(&now, "lease_writer")? == Some(token.as_str()))
            }
        }
    }
}

/// Checks the version of a record and of the records it holds.
fn check_versions(what: &str, value: &serde_json::Value) -> Result<(), StoreError> {
    let version_of = |v: &serde_json::Value| v.get("version").and_then(|v| v.as_u64());
    if let Some(found) = version_of(value) {
        check_version(what, found.min(u32::MAX as u64) as u32)?;
    }
    for (field, inner) in [
        ("header", "run header"),
        ("created", "audit entry"),
        ("entry", "audit entry"),
    ] {
        if let Some(found) = value.get(field).and_then(version_of) {
            check_version(inner, found.min(u32::MAX as u64) as u32)?;
        }
    }
    Ok(())
}

/// An item's key, for messages.
fn item_name(item: &Item) -> String {
    let part = |name: &str| match item.get(name) {
        Some(AttributeValue::S(text)) => {
            let mut shown: String = text.chars().take(80).collect();
            if shown.len() < text.len() {
                shown.push('…');
            }
            shown
        }
        _ => "?".to_string(),
    };
    format!("pk={} sk={}", part(PK), part(SK))
}

fn kind_of(value: &AttributeValue) -> &'static str {
    match value {
        AttributeValue::S(_) => "S",
        AttributeValue::N(_) => "N",
        AttributeValue::B(_) => "B",
        AttributeValue::Bool(_) => "BOOL",
        AttributeValue::Null(_) => "NULL",
        AttributeValue::L(_) => "L",
        AttributeValue::M(_) => "M",
        AttributeValue::Ss(_) => "SS",
        AttributeValue::Ns(_) => "NS",
        AttributeValue::Bs(_) => "BS",
        _ => "unknown",
    }
}

/// A record as JSON. The store's records always serialise.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("\"unserialisable: {e}\""))
}

impl Store for DynamoStore {
    fn create_run_fenced(
        &self,
        header: &RunHeader,
        actor: &Actor,
        reason: &str,
        epoch: Option<u64>,
    ) -> Result<(), StoreError> {
        let (header, actor, reason) = (header.clone(), actor.clone(), reason.to_string());
        self.call("create run", move |s| async move {
            s.create_run(header, actor, reason, epoch).await
        })
    }

    fn append_fenced(
        &self,
        run: &RunId,
        at: Timestamp,
        actor: &Actor,
        event: RunEvent,
        epoch: Option<u64>,
    ) -> Result<EventRecord, StoreError> {
        let (run, actor) = (run.clone(), actor.clone());
        self.call("append", move |s| async move {
            s.append(run, at, actor, event, epoch).await
        })
    }

    fn load_run(&self, run: &RunId) -> Result<Option<StoredRun>, StoreError> {
        let run = run.clone();
        self.call("load run", move |s| async move { s.load_run(run).await })
    }

    fn list_runs(&self, limit: usize) -> Result<Vec<RunHeader>, StoreError> {
        self.call(
            "list runs",
            move |s| async move { s.list_runs(limit).await },
        )
    }

    fn active_run(&self) -> Result<Option<RunId>, StoreError> {
        self.call("active run", |s| async move { s.active_run().await })
    }

    fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let entry = entry.clone();
        self.call("record audit", move |s| async move {
            s.record_audit(entry).await
        })
    }

    fn audit(&self, run: Option<&RunId>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let run = run.cloned();
        self.call("audit", move |s| async move { s.audit(run, limit).await })
    }

    fn automation(&self) -> Result<Automation, StoreError> {
        self.call("automation", |s| async move {
            let control = s.control().await?;
            s.automation_of(&control)
        })
    }

    fn set_automation(
        &self,
        automation: &Automation,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let (automation, audit) = (automation.clone(), audit.clone());
        self.call("set automation", move |s| async move {
            s.set_automation(automation, audit).await
        })
    }

    fn daemon_statuses(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.call(
            "daemon statuses",
            |s| async move { s.daemon_statuses().await },
        )
    }

    fn put_daemon_status(&self, daemon: &str, json: &str) -> Result<(), StoreError> {
        let (daemon, json) = (daemon.to_string(), json.to_string());
        self.call("put daemon status", move |s| async move {
            s.put_daemon_status(daemon, json).await
        })
    }

    fn lease(&self) -> Result<Option<LeaseRecord>, StoreError> {
        self.call("lease", |s| async move { s.lease().await })
    }

    fn swap_lease(
        &self,
        expected: Option<&LeaseRecord>,
        next: &LeaseRecord,
    ) -> Result<bool, StoreError> {
        let (expected, next) = (expected.cloned(), next.clone());
        self.call("swap lease", move |s| async move {
            s.swap_lease(expected, next).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn time_keys_sort_as_the_timestamps_do_negative_ones_included() {
        let mut times = vec![
            i64::MIN,
            -1_000,
            -1,
            0,
            1,
            999,
            1_000,
            10_000,
            1_700_000_000_000,
            i64::MAX,
        ];
        let mut keys: Vec<String> = times.iter().map(|t| time_key(Timestamp(*t))).collect();
        assert!(keys.iter().all(|k| k.len() == 20), "{keys:?}");
        keys.sort();
        times.sort();
        let expected: Vec<String> = times.iter().map(|t| time_key(Timestamp(*t))).collect();
        assert_eq!(keys, expected);
    }

    #[test]
    fn event_keys_sort_by_sequence_and_read_back() {
        assert_eq!(event_sk(7), "ev#0000000007");
        assert!(event_sk(9) < event_sk(10));
        assert!(event_sk(99) < event_sk(100));
        assert_eq!(event_seq(&event_sk(42)), Some(42));
        assert_eq!(event_seq(&event_sk(MAX_SEQ)), Some(MAX_SEQ));
        for bad in ["ev#12", "ev#000000000x", "header", "ev#00000000001", "ev#"] {
            assert_eq!(event_seq(bad), None, "{bad}");
        }
        // A run's items: notes, then events, then the header; events are from "ev#" on.
        assert!(NOTE_PREFIX < EVENT_PREFIX && event_sk(MAX_SEQ).as_str() < HEADER_SK);
    }

    #[test]
    fn index_keys_order_runs_by_creation_and_read_back() {
        let run = RunId::new("r-1#odd");
        assert_eq!(index_order(&index_sk(12, &run)), Some(12));
        assert!(index_sk(9, &RunId::new("z")) < index_sk(10, &RunId::new("a")));
        for bad in ["12#r", "0000000000000000000x#r", "00000000000000000012r"] {
            assert_eq!(index_order(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_runs_audit_lines_sort_by_time_then_creation_then_sequence() {
        let run = RunId::new("r-1");
        let created = run_audit_key(Timestamp(1_000), &run, 0);
        let first = run_audit_key(Timestamp(1_000), &run, 1);
        let second = run_audit_key(Timestamp(1_000), &run, 2);
        let later = run_audit_key(Timestamp(2_000), &run, 3);
        assert!(created < first && first < second && second < later);
        // Rewriting a run's line writes the same key.
        assert_eq!(first, run_audit_key(Timestamp(1_000), &run, 1));
        let note = note_key_with(Timestamp(1_500), "note", 7, "abc");
        assert_eq!(
            note,
            format!("{}#note#{:020}#abc", time_key(Timestamp(1_500)), 7)
        );
        assert!(second < note && note < later);
        assert_ne!(
            note_key(Timestamp(1), "note"),
            note_key(Timestamp(1), "note")
        );
    }

    #[test]
    fn error_codes_are_classified() {
        assert_eq!(
            classify(Some("ConditionalCheckFailedException")),
            Class::ConditionFailed
        );
        assert_eq!(
            classify(Some("ReplicatedWriteConflictException")),
            Class::WriteConflict
        );
        assert_eq!(classify(Some("ResourceNotFoundException")), Class::NoTable);
        for other in [
            Some("InternalServerError"),
            Some("ProvisionedThroughputExceededException"),
            Some("ThrottlingException"),
            Some("AccessDeniedException"),
            Some("ValidationException"),
            None,
        ] {
            assert_eq!(classify(other), Class::Other, "{other:?}");
        }
    }

    #[test]
    fn tokens_differ_and_pauses_are_jittered_around_their_base() {
        let tokens: std::collections::BTreeSet<String> = (0..1000).map(|_| nonce()).collect();
        assert_eq!(tokens.len(), 1000);
        let base = Duration::from_millis(100);
        let pauses: Vec<Duration> = (0..200).map(|_| jittered(base)).collect();
        assert!(pauses.iter().all(|p| *p >= base / 2 && *p < base * 3 / 2));
        assert!(pauses.iter().any(|p| *p != pauses[0]), "not jittered");
    }

    #[test]
    fn expressions_send_only_the_placeholders_they_use() {
        let mut expr = Expr::default();
        assert_eq!((expr.names(), expr.values()), (None, None));
        let condition = format!("attribute_not_exists({})", expr.n(PK));
        assert_eq!(condition, "attribute_not_exists(#pk)");
        assert_eq!(expr.values(), None);
        assert_eq!(
            expr.names(),
            Some(HashMap::from([("#pk".to_string(), "pk".to_string())]))
        );
        assert_eq!(expr.v("one", n(1)), ":one");
        assert_eq!(expr.values().map(|v| v.len()), Some(1));
    }

    #[test]
    fn item_sizes_count_names_and_values() {
        let mut item = key("run#r-1", "header");
        assert_eq!(item_bytes(&item), 2 + 7 + 2 + 6);
        item.insert("header".into(), s("x".repeat(1000)));
        item.insert("version".into(), n(12));
        assert_eq!(item_bytes(&item), 17 + 6 + 1000 + 7 + 2);
        assert_eq!(item_name(&item), "pk=run#r-1 sk=header");
    }

    #[test]
    fn newer_records_and_records_holding_newer_ones_are_refused() {
        let value = serde_json::json!({"version": 99});
        assert!(matches!(
            check_versions("run event", &value),
            Err(StoreError::UnsupportedVersion { found: 99, .. })
        ));
        let nested = serde_json::json!({"version": 1, "header": {"version": 42}});
        assert!(matches!(
            check_versions("run header", &nested),
            Err(StoreError::UnsupportedVersion { found: 42, .. })
        ));
        check_versions("run header", &serde_json::json!({"version": 3})).unwrap();
        check_versions("run header", &serde_json::json!({"no": "version"})).unwrap();
    }

    fn settings(endpoint: String, attempt_ms: u64, call_ms: u64) -> DynamoSettings {
        DynamoSettings {
            table: "dr-store".into(),
            region: "us-east-2".into(),
            endpoint_url: Some(endpoint),
            profile: None,
            attempt_timeout: Duration::from_millis(attempt_ms),
            call_timeout: Duration::from_millis(call_ms),
        }
    }

    #[test]
    fn settings_without_a_table_or_time_limits_are_refused() {
        let mut bad = settings("http://127.0.0.1:9".into(), 100, 100);
        bad.table = " ".into();
        let err = DynamoStore::connect_with_credentials(&bad, "k", "s")
            .err()
            .unwrap();
        assert!(err.to_string().contains("no table name"), "{err}");
        let mut bad = settings("http://127.0.0.1:9".into(), 100, 100);
        bad.call_timeout = Duration::ZERO;
        assert!(DynamoStore::connect_with_credentials(&bad, "k", "s").is_err());
        // Limits too long to add to an instant: no overflow.
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let mut endless = settings(closed, 100, 100);
        endless.attempt_timeout = Duration::MAX;
        endless.call_timeout = Duration::MAX;
        let err = DynamoStore::connect_with_credentials(&endless, "k", "s")
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        let default = DynamoSettings::default();
        assert_eq!(default.attempt_timeout, Duration::from_secs(2));
        assert!(default.call_timeout > default.attempt_timeout);
    }

    /// A port that accepts connections (the kernel's backlog) and never answers.
    fn silent_endpoint() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        (listener, url)
    }

    #[test]
    fn an_endpoint_that_refuses_or_never_answers_is_unavailable_within_the_call_limit() {
        // Nothing listens there.
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let start = Instant::now();
        let err = DynamoStore::connect_with_credentials(&settings(closed, 300, 1_000), "k", "s")
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        assert!(err.to_string().contains("DescribeTable"), "{err}");
        assert!(start.elapsed() < Duration::from_millis(1_000) + GRACE);

        let (_listener, silent) = silent_endpoint();
        let start = Instant::now();
        let err = DynamoStore::connect_with_credentials(&settings(silent, 200, 700), "k", "s")
            .err()
            .unwrap();
        let took = start.elapsed();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        assert!(err.is_unusable());
        assert!(took >= Duration::from_millis(600), "{took:?}");
        assert!(took < Duration::from_millis(700) + GRACE, "{took:?}");
    }

    #[test]
    fn calls_from_inside_runtimes_of_either_flavour_neither_block_on_nor_panic() {
        for multi in [false, true] {
            let runtime = if multi {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
            };
            runtime.block_on(async {
                let (_listener, silent) = silent_endpoint();
                let store = tokio::task::spawn(async move {
                    let store = DynamoStore::connect_with_credentials(
                        &settings(silent, 100, 300),
                        "k",
                        "s",
                    );
                    // Dropped here, inside the runtime: no panic.
                    store.err().map(|e| e.to_string())
                })
                .await
                .unwrap();
                assert!(store.unwrap().contains("no answer"));
            });
        }
    }
}
