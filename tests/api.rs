//! The HTTP API with `oneshot` on the router: every endpoint, every error status, bad input that
//! changes nothing in the store, 50 concurrent failover requests, and one test over a real socket.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dr::api::auth::Tokens;
use dr::api::{ApiState, app};
use dr::daemon::{Daemon, DaemonSettings};
use dr::engine::Engine;
use dr::store::{RedbStore, Store};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const OPERATE: &str = "alice-operate-secret-0001";
const READ: &str = "grafana-read-secret-00002";

struct Api {
    router: Router,
    config: dr::config::Config,
    store: Arc<dyn Store>,
    engine: Engine,
    sim: Arc<dr::provider::sim::SimProvider>,
    _dir: tempfile::TempDir,
}

/// An API over a redb store and the in-memory simulator, after one daemon tick.
async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let config = common::example_config(dir.path());
    let (sim, clock) = common::sim(&config);
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("store.redb")).unwrap());
    let engine = common::engine(store.clone(), &sim, &clock);
    let mut daemon = Daemon::new(
        config.clone(),
        engine.clone(),
        DaemonSettings::from_config(&config, None),
    );
    daemon.tick().await.unwrap();
    let tokens = Tokens::parse(
        &format!("alice:operate:{OPERATE}\ngrafana:read:{READ}\n"),
        "test",
    )
    .unwrap();
    let state = ApiState {
        config: Arc::new(config),
        engine: engine.clone(),
        daemon: daemon.handle(),
        tokens: Arc::new(tokens),
    };
    Api {
        config: (*state.config).clone(),
        router: app(state),
        store,
        engine,
        sim,
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    body: Value,
    text: String,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    /// Runs and audit lines, to prove a refused request changed nothing.
    fn footprint(&self) -> (usize, usize, bool) {
        (
            self.store.list_runs(100).unwrap().len(),
            self.store.audit(None, 10_000).unwrap().len(),
            self.store.automation().unwrap().paused,
        )
    }
}

fn failover_body() -> String {
    json!({ "to": "us-west-2", "reason": "east is down" }).to_string()
}

#[tokio::test]
async fn health_ready_and_metrics_need_no_token() {
    let api = api().await;
    let health = api.call("GET", "/health", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");
    let ready = api.call("GET", "/ready", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    let metrics = api.call("GET", "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    for line in [
        "route53_health_check_status{region=\"us-east-1\"} 1",
        "dr_probe_status{region=\"us-west-2\"} 1",
        "postgres_replication_lag_seconds{source=\"us-east-1\",target=\"us-west-2\"} 2",
        "dr_region_state{region=\"us-east-1\",state=\"healthy\"} 1",
        "dr_decision{decision=\"nothing:all-healthy\"} 1",
        "dr_automation_paused 0",
        "# TYPE dr_runs_total counter",
    ] {
        assert!(
            metrics.text.contains(line),
            "missing `{line}` in:\n{}",
            metrics.text
        );
    }
}

#[tokio::test]
async fn ready_is_503_before_the_daemon_has_observed() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::example_config(dir.path());
    let (sim, clock) = common::sim(&config);
    let store: Arc<dyn Store> = Arc::new(dr::store::MemoryStore::new());
    let engine = common::engine(store, &sim, &clock);
    let daemon = Daemon::new(
        config.clone(),
        engine.clone(),
        DaemonSettings::from_config(&config, None),
    );
    let state = ApiState {
        config: Arc::new(config),
        engine,
        daemon: daemon.handle(),
        tokens: Arc::new(Tokens::default()),
    };
    let response = app(state)
        .oneshot(Request::get("/ready").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn tokens_are_required_and_roles_enforced() {
    let api = api().await;
    assert_eq!(
        api.call("GET", "/api/v1/status", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let wrong = api
        .call(
            "GET",
            "/api/v1/status",
            Some("alice-operate-secret-0002"),
            None,
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body["error"], "the token is not valid");
    let status = api.call("GET", "/api/v1/status", Some(READ), None).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.body["writer"], "us-east-1");
    assert_eq!(status.body["regions"].as_array().unwrap().len(), 2);
    assert!(
        status.body["reason"]
            .as_str()
            .unwrap()
            .contains("nothing to do")
    );
    assert!(status.body.get("cooldown_until").is_some());
    assert_eq!(status.body["automation"]["paused"], false);
    let before = api.footprint();
    let forbidden = api
        .call(
            "POST",
            "/api/v1/failover",
            Some(READ),
            Some(&failover_body()),
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert!(
        forbidden.body["error"]
            .as_str()
            .unwrap()
            .contains("operate role")
    );
    assert_eq!(api.footprint(), before);
    // Unknown endpoints are JSON 404s.
    let missing = api
        .call("GET", "/api/v2/everything", Some(READ), None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body["error"].is_string());
}

#[tokio::test]
async fn bad_input_gets_its_status_and_changes_nothing() {
    let api = api().await;
    let before = api.footprint();
    let huge = format!(
        "{{\"to\":\"us-west-2\",\"reason\":\"{}\"}}",
        "x".repeat(64 * 1024)
    );
    let cases: Vec<(&str, Option<String>, StatusCode)> = vec![
        (
            "malformed JSON",
            Some("{\"to\": \"us-west-2\",".into()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong type",
            Some(json!({ "to": 7, "reason": "x" }).to_string()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown field",
            Some(json!({ "to": "us-west-2", "reason": "x", "force": true }).to_string()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "missing field",
            Some(json!({ "to": "us-west-2" }).to_string()),
            StatusCode::BAD_REQUEST,
        ),
        ("huge body", Some(huge), StatusCode::PAYLOAD_TOO_LARGE),
        (
            "unknown region",
            Some(json!({ "to": "mars-west-9", "reason": "x" }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "same region",
            Some(json!({ "to": "us-east-1", "reason": "x" }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "empty reason",
            Some(json!({ "to": "us-west-2", "reason": "  " }).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (what, body, want) in cases {
        let answer = api
            .call("POST", "/api/v1/failover", Some(OPERATE), body.as_deref())
            .await;
        assert_eq!(answer.status, want, "{what}: {}", answer.text);
        assert!(answer.body["error"].is_string(), "{what}: {}", answer.text);
        assert_eq!(api.footprint(), before, "{what} changed the store");
    }
    // No content type.
    let request = Request::post("/api/v1/failover")
        .header(header::AUTHORIZATION, format!("Bearer {OPERATE}"))
        .body(Body::from(failover_body()))
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        api.call("GET", "/api/v1/runs?limit=many", Some(READ), None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(api.footprint(), before);
}

#[tokio::test(start_paused = true)]
async fn a_failover_through_the_api_is_recorded_with_the_token_as_actor() {
    let api = api().await;
    let started = api
        .call(
            "POST",
            "/api/v1/failover",
            Some(OPERATE),
            Some(&failover_body()),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.text);
    let id = started.body["id"].as_str().unwrap().to_string();
    assert_eq!(started.body["trigger"]["actor"], "api:alice");
    let again = api
        .call(
            "POST",
            "/api/v1/switchover",
            Some(OPERATE),
            Some(&failover_body()),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    let runs = api.call("GET", "/api/v1/runs", Some(READ), None).await;
    assert_eq!(runs.body.as_array().unwrap().len(), 1);
    let run = api
        .call("GET", &format!("/api/v1/runs/{id}"), Some(READ), None)
        .await;
    assert_eq!(run.status, StatusCode::OK);
    assert_eq!(run.body["steps"].as_array().unwrap().len(), 5);
    let audit = run.body["audit"].as_array().unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e["actor"] == "api:alice" && e["reason"] == "east is down")
    );
    assert_eq!(
        api.call("GET", "/api/v1/runs/r-none", Some(READ), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // The engine carries it out (the daemon would); the API shows it finished.
    let outcome = api
        .engine
        .execute(&dr::core::ids::RunId::new(&id), &Default::default())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        dr::engine::ExecOutcome::Finished(dr::core::run::RunOutcome::Succeeded)
    );
    let run = api
        .call("GET", &format!("/api/v1/runs/{id}"), Some(READ), None)
        .await;
    assert_eq!(run.body["status"]["outcome"], "succeeded");
}

#[tokio::test(start_paused = true)]
async fn approve_abort_and_resume_act_on_runs() {
    let api = api().await;
    api.sim
        .update(|w| w.set_lag(&"us-west-2".into(), std::time::Duration::from_secs(420)))
        .unwrap()
        .unwrap();
    let started = api
        .call(
            "POST",
            "/api/v1/failover",
            Some(OPERATE),
            Some(&failover_body()),
        )
        .await;
    let id = started.body["id"].as_str().unwrap().to_string();
    let run_id = dr::core::ids::RunId::new(&id);
    // Nothing waits yet: approving is a conflict.
    let early = api
        .call(
            "POST",
            &format!("/api/v1/runs/{id}/approve"),
            Some(OPERATE),
            Some(r#"{"reason":"ok"}"#),
        )
        .await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.text);
    let outcome = api
        .engine
        .execute(&run_id, &Default::default())
        .await
        .unwrap();
    assert!(
        matches!(outcome, dr::engine::ExecOutcome::Blocked(_)),
        "{outcome:?}"
    );
    let bad_step = api
        .call(
            "POST",
            &format!("/api/v1/runs/{id}/approve"),
            Some(OPERATE),
            Some(r#"{"reason":"ok","step":"promote"}"#),
        )
        .await;
    assert_eq!(bad_step.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = api
        .call(
            "POST",
            "/api/v1/runs/r-none/approve",
            Some(OPERATE),
            Some(r#"{"reason":"ok"}"#),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let approved = api
        .call(
            "POST",
            &format!("/api/v1/runs/{id}/approve"),
            Some(OPERATE),
            Some(r#"{"reason":"accept 7m of loss"}"#),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text);
    let resumed = api
        .call(
            "POST",
            &format!("/api/v1/runs/{id}/resume"),
            Some(OPERATE),
            Some(r#"{"reason":"go"}"#),
        )
        .await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.text);
    let aborted = api
        .call(
            "POST",
            &format!("/api/v1/runs/{id}/abort"),
            Some(OPERATE),
            Some(r#"{"reason":"stand down"}"#),
        )
        .await;
    assert_eq!(aborted.status, StatusCode::OK, "{}", aborted.text);
    assert_eq!(aborted.body["status"]["status"], "aborting");
    let again = api
        .call(
            "POST",
            &format!("/api/v1/runs/{id}/resume"),
            Some(OPERATE),
            Some(r#"{"reason":"go"}"#),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    // No executor was running: the daemon's next tick is what finishes the aborted run.
    let mut daemon = Daemon::new(
        api.config.clone(),
        api.engine.clone(),
        DaemonSettings::from_config(&api.config, None),
    );
    daemon.tick().await.unwrap();
    for _ in 0..100 {
        if api.store.active_run().unwrap().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let run = api
        .call("GET", &format!("/api/v1/runs/{id}"), Some(READ), None)
        .await;
    assert_eq!(run.body["status"]["outcome"], "aborted", "{}", run.text);
}

#[tokio::test]
async fn pause_unpause_and_ack_change_automation_and_are_audited() {
    let api = api().await;
    let paused = api
        .call(
            "POST",
            "/api/v1/pause",
            Some(OPERATE),
            Some(r#"{"reason":"maintenance"}"#),
        )
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text);
    assert!(api.store.automation().unwrap().paused);
    let unpaused = api
        .call(
            "POST",
            "/api/v1/unpause",
            Some(OPERATE),
            Some(r#"{"reason":"done"}"#),
        )
        .await;
    assert_eq!(unpaused.status, StatusCode::OK);
    assert!(!api.store.automation().unwrap().paused);
    let acked = api
        .call(
            "POST",
            "/api/v1/ack",
            Some(OPERATE),
            Some(r#"{"reason":"reviewed"}"#),
        )
        .await;
    assert_eq!(acked.status, StatusCode::OK);
    assert!(
        api.store
            .automation()
            .unwrap()
            .cooldown_cleared_at
            .is_some()
    );
    let audit = api.store.audit(None, 100).unwrap();
    for action in [
        "automation paused",
        "automation unpaused",
        "cooldown cleared",
    ] {
        assert!(
            audit
                .iter()
                .any(|e| e.action == action && e.actor.as_str() == "api:alice"),
            "{action}"
        );
    }
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/pause",
            Some(READ),
            Some(r#"{"reason":"x"}"#)
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_simultaneous_failovers_start_exactly_one_run() {
    let api = api().await;
    let mut handles = Vec::new();
    for i in 0..50 {
        let router = api.router.clone();
        handles.push(tokio::spawn(async move {
            let request = Request::post("/api/v1/failover")
                .header(header::AUTHORIZATION, format!("Bearer {OPERATE}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({ "to": "us-west-2", "reason": format!("request {i}") }).to_string(),
                ))
                .unwrap();
            router.oneshot(request).await.unwrap().status()
        }));
    }
    let mut accepted = 0;
    let mut conflicts = 0;
    for handle in handles {
        match handle.await.unwrap() {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((accepted, conflicts), (1, 49));
    assert_eq!(api.store.list_runs(100).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_over_a_real_socket() {
    let api = api().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = api.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{address}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let status: Value = client
        .get(format!("http://{address}/api/v1/status"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["writer"], "us-east-1");
    let page = client
        .get(format!("http://{address}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<title>dr status</title>"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page must load no external assets"
    );
    server.abort();
}

impl Api {
    /// A POST with extra headers.
    async fn post_with(&self, uri: &str, headers: &[(&str, String)], body: &str) -> Answer {
        let mut request = Request::builder()
            .method("POST")
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {OPERATE}"))
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Answer {
            status,
            body: json!({ "answer": serde_json::from_str::<Value>(&text).unwrap_or(Value::Null), "replayed": replayed }),
            text,
        }
    }
}

fn unix_millis_from_now(offset_ms: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (now + offset_ms).to_string()
}

#[tokio::test]
async fn an_action_read_after_its_deadline_is_refused_and_does_nothing() {
    let api = api().await;
    let before = api.footprint();
    let late = api
        .post_with(
            "/api/v1/failover",
            &[("Request-Deadline", unix_millis_from_now(-5_000))],
            &failover_body(),
        )
        .await;
    assert_eq!(late.status, StatusCode::REQUEST_TIMEOUT, "{}", late.text);
    assert!(late.text.contains("nothing was done"), "{}", late.text);
    assert_eq!(late.body["answer"]["status"], 408);
    assert_eq!(api.footprint(), before, "a late request changed the store");
    let bad = api
        .post_with(
            "/api/v1/pause",
            &[("Request-Deadline", "soon".to_string())],
            &json!({ "reason": "x" }).to_string(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    assert_eq!(api.footprint(), before);
    let in_time = api
        .post_with(
            "/api/v1/failover",
            &[("Request-Deadline", unix_millis_from_now(60_000))],
            &failover_body(),
        )
        .await;
    assert_eq!(in_time.status, StatusCode::ACCEPTED, "{}", in_time.text);
}

#[tokio::test]
async fn a_repeated_idempotency_key_gets_the_first_answer_and_starts_one_run() {
    let api = api().await;
    let key = ("Idempotency-Key", "k-0123456789".to_string());
    let first = api
        .post_with(
            "/api/v1/failover",
            std::slice::from_ref(&key),
            &failover_body(),
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert_eq!(first.body["replayed"], false);
    let second = api
        .post_with(
            "/api/v1/failover",
            std::slice::from_ref(&key),
            &failover_body(),
        )
        .await;
    assert_eq!(second.status, StatusCode::ACCEPTED, "{}", second.text);
    assert_eq!(second.body["replayed"], true);
    assert_eq!(second.text, first.text, "the repeat got another answer");
    assert_eq!(api.store.list_runs(10).unwrap().len(), 1);
    // The same key for another action is refused, not replayed.
    let other = api
        .post_with(
            "/api/v1/pause",
            std::slice::from_ref(&key),
            &json!({ "reason": "x" }).to_string(),
        )
        .await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        other.text
    );
    assert!(!api.store.automation().unwrap().paused);
    // Without a key, a second failover is refused as before: one run at a time.
    let no_key = api
        .post_with("/api/v1/failover", &[], &failover_body())
        .await;
    assert_eq!(no_key.status, StatusCode::CONFLICT, "{}", no_key.text);
}

/// A store that can be broken: every call then fails as a damaged file does.
struct Breakable {
    inner: Arc<dyn Store>,
    broken: std::sync::atomic::AtomicBool,
    listings: std::sync::atomic::AtomicUsize,
}

impl Breakable {
    fn check(&self) -> Result<(), dr::store::StoreError> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(dr::store::StoreError::Damaged {
                path: "store.redb".into(),
                detail: "zeroed".into(),
            });
        }
        Ok(())
    }
}

impl Store for Breakable {
    fn create_run_fenced(
        &self,
        header: &dr::core::run::RunHeader,
        actor: &dr::core::ids::Actor,
        reason: &str,
        epoch: Option<u64>,
    ) -> Result<(), dr::store::StoreError> {
        self.check()?;
        self.inner.create_run_fenced(header, actor, reason, epoch)
    }
    fn append_fenced(
        &self,
        run: &dr::core::ids::RunId,
        at: dr::core::time::Timestamp,
        actor: &dr::core::ids::Actor,
        event: dr::core::run::RunEvent,
        epoch: Option<u64>,
    ) -> Result<dr::core::run::EventRecord, dr::store::StoreError> {
        self.check()?;
        self.inner.append_fenced(run, at, actor, event, epoch)
    }
    fn load_run(
        &self,
        run: &dr::core::ids::RunId,
    ) -> Result<Option<dr::store::StoredRun>, dr::store::StoreError> {
        self.check()?;
        self.inner.load_run(run)
    }
    fn list_runs(
        &self,
        limit: usize,
    ) -> Result<Vec<dr::core::run::RunHeader>, dr::store::StoreError> {
        self.check()?;
        self.listings
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.list_runs(limit)
    }
    fn active_run(&self) -> Result<Option<dr::core::ids::RunId>, dr::store::StoreError> {
        self.check()?;
        self.inner.active_run()
    }
    fn record_audit(&self, entry: &dr::store::AuditEntry) -> Result<(), dr::store::StoreError> {
        self.check()?;
        self.inner.record_audit(entry)
    }
    fn audit(
        &self,
        run: Option<&dr::core::ids::RunId>,
        limit: usize,
    ) -> Result<Vec<dr::store::AuditEntry>, dr::store::StoreError> {
        self.check()?;
        self.inner.audit(run, limit)
    }
    fn automation(&self) -> Result<dr::core::decision::Automation, dr::store::StoreError> {
        self.check()?;
        self.inner.automation()
    }
    fn set_automation(
        &self,
        automation: &dr::core::decision::Automation,
        audit: &dr::store::AuditEntry,
    ) -> Result<(), dr::store::StoreError> {
        self.check()?;
        self.inner.set_automation(automation, audit)
    }
    fn daemon_statuses(&self) -> Result<Vec<(String, String)>, dr::store::StoreError> {
        self.check()?;
        self.inner.daemon_statuses()
    }
    fn put_daemon_status(&self, daemon: &str, json: &str) -> Result<(), dr::store::StoreError> {
        self.check()?;
        self.inner.put_daemon_status(daemon, json)
    }
    fn lease(&self) -> Result<Option<dr::core::lease::LeaseRecord>, dr::store::StoreError> {
        self.check()?;
        self.inner.lease()
    }
    fn swap_lease(
        &self,
        expected: Option<&dr::core::lease::LeaseRecord>,
        next: &dr::core::lease::LeaseRecord,
    ) -> Result<bool, dr::store::StoreError> {
        self.check()?;
        self.inner.swap_lease(expected, next)
    }
}

/// Records the alerts the daemon raises about its store.
#[derive(Default)]
struct StoreAlerts(std::sync::Mutex<Vec<String>>);

impl dr::engine::Progress for StoreAlerts {
    fn store_failed(&self, _at: dr::core::time::Timestamp, error: &str) {
        self.0.lock().unwrap().push(error.to_string());
    }
}

#[tokio::test(start_paused = true)]
async fn a_daemon_whose_store_breaks_is_unhealthy_and_alerts_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::example_config(dir.path());
    let (sim, clock) = common::sim(&config);
    let store = Arc::new(Breakable {
        inner: Arc::new(dr::store::MemoryStore::new()),
        broken: false.into(),
        listings: 0.into(),
    });
    let alerts = Arc::new(StoreAlerts::default());
    let mut engine = common::engine(store.clone(), &sim, &clock);
    engine.progress = alerts.clone();
    let daemon = Daemon::new(
        config.clone(),
        engine.clone(),
        DaemonSettings::from_config(&config, None),
    );
    let handle = daemon.handle();
    let router = app(ApiState {
        config: Arc::new(config.clone()),
        engine,
        daemon: handle.clone(),
        tokens: Arc::new(Tokens::default()),
    });
    let health = |router: Router| async move {
        router
            .oneshot(Request::get("/health").body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(daemon.run(shutdown.clone()));
    let poll = config.detection.poll_interval;
    while handle.status().is_none() {
        tokio::time::sleep(poll / 10).await;
    }
    assert_eq!(health(router.clone()).await, StatusCode::OK);
    store
        .broken
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..3 {
        tokio::time::sleep(poll).await;
    }
    assert!(handle.store_failure().is_some());
    assert_eq!(
        health(router.clone()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        alerts.0.lock().unwrap().len(),
        1,
        "one alert, not one per tick"
    );
    store
        .broken
        .store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(poll * 2).await;
    assert_eq!(health(router.clone()).await, StatusCode::OK);
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_a_401_says_bearer() {
    let api = api().await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let request = Request::get("/api/v1/status")
            .header(header::AUTHORIZATION, format!("{scheme} {READ}"))
            .body(Body::empty())
            .unwrap();
        let response = api.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "scheme {scheme}");
    }
    for authorization in [
        None,
        Some(format!("Basic {READ}")),
        Some("Bearer wrong-secret-0000000".into()),
    ] {
        let mut request = Request::get("/api/v1/status");
        if let Some(value) = &authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = api
            .router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let challenge = response.headers().get(header::WWW_AUTHENTICATE).unwrap();
        assert!(
            challenge.to_str().unwrap().starts_with("Bearer"),
            "{challenge:?}"
        );
    }
}

#[tokio::test]
async fn every_error_has_the_documented_json_shape() {
    let api = api().await;
    let long = format!("/api/v1/runs/{}", "a".repeat(5000));
    let cases = [
        ("DELETE", "/api/v1/status", StatusCode::METHOD_NOT_ALLOWED),
        ("GET", "/api/v1/failover", StatusCode::METHOD_NOT_ALLOWED),
        ("PUT", "/health", StatusCode::METHOD_NOT_ALLOWED),
        ("GET", long.as_str(), StatusCode::URI_TOO_LONG),
        ("GET", "/api/v1/runs/%FF%FE", StatusCode::BAD_REQUEST),
        ("GET", "/api/v1/nothing-here", StatusCode::NOT_FOUND),
        ("GET", "/api/v1/runs?limit=many", StatusCode::BAD_REQUEST),
    ];
    for (method, uri, want) in cases {
        let answer = api.call(method, uri, Some(READ), None).await;
        assert_eq!(answer.status, want, "{method} {uri}: {}", answer.text);
        assert_eq!(
            answer.body["status"],
            want.as_u16(),
            "{method} {uri}: {}",
            answer.text
        );
        let message = answer.body["error"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{method} {uri}: {}", answer.text);
    }
    let allowed = api.call("DELETE", "/api/v1/status", Some(READ), None).await;
    assert!(allowed.text.contains("not allowed"), "{}", allowed.text);
}

#[tokio::test(start_paused = true)]
async fn the_status_stops_showing_a_run_as_active_as_soon_as_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::example_config(dir.path());
    let (sim, clock) = common::sim(&config);
    let store: Arc<dyn Store> = Arc::new(dr::store::MemoryStore::new());
    let engine = common::engine(store.clone(), &sim, &clock);
    let daemon = Daemon::new(
        config.clone(),
        engine.clone(),
        DaemonSettings::from_config(&config, None),
    );
    let handle = daemon.handle();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(daemon.run(shutdown.clone()));
    let poll = config.detection.poll_interval;
    while handle.status().is_none() {
        tokio::time::sleep(poll / 10).await;
    }
    let run = common::create_failover(
        &engine,
        &config,
        "r-1",
        dr::core::plan::RunKind::Failover,
        "us-east-1",
        "us-west-2",
    );
    handle.nudge.notify_one();
    // Follow the run in steps far shorter than a poll, until it has ended.
    let ended_at = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stored = store.load_run(&run).unwrap().unwrap();
        if let Some(last) = stored.events.last()
            && matches!(last.event, dr::core::run::RunEvent::Finished { .. })
        {
            break last.at;
        }
    };
    // Well within one poll of the end, the daemon's status no longer names the run as active.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let status = handle.status().unwrap();
    assert!(status.at >= ended_at, "no status since the run ended");
    assert_eq!(status.active_run, None, "{}", status.reason);
    assert!(!status.reason.contains("is active"), "{}", status.reason);
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_cut_and_health_keeps_answering() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = api().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let limits = dr::api::serve::Limits {
        header_read_timeout: Duration::from_millis(400),
        busy_header_read_timeout: Duration::from_millis(100),
        max_connection_age: Duration::from_secs(30),
        max_connections: 16,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(dr::api::serve::serve(
        listener,
        api.router.clone(),
        limits,
        shutdown.clone(),
    ));
    // 300 clients that start a request and never finish it.
    let mut slow = Vec::new();
    for _ in 0..300 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(address).await {
            let _ = stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await;
            slow.push(stream);
        }
    }
    // Each is closed by the server, none is held past the header deadline (bounded wait).
    let cut = tokio::time::timeout(Duration::from_secs(10), async {
        for stream in &mut slow {
            let mut buf = [0u8; 512];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "half-sent requests were held open");
    // /health answers while the flood is on: a probe that sends its request at once.
    let mut flood = Vec::new();
    for _ in 0..300 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(address).await {
            let _ = stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                .await;
            flood.push(stream);
        }
    }
    let client = reqwest::Client::new();
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(response) = client.get(format!("http://{address}/health")).send().await
                && response.status() == 200
            {
                return;
            }
        }
    })
    .await;
    assert!(answered.is_ok(), "/health did not answer under the flood");
    // And every probe does, at its first attempt, while the slots are all taken by
    // half-sent requests that keep coming: the oldest connection makes room.
    let mut answered = 0;
    for _ in 0..20 {
        for _ in 0..40 {
            if let Ok(mut stream) = tokio::net::TcpStream::connect(address).await {
                let _ = stream
                    .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .await;
                flood.push(stream);
            }
        }
        let probe = tokio::time::timeout(
            Duration::from_secs(2),
            client.get(format!("http://{address}/health")).send(),
        )
        .await;
        if matches!(probe, Ok(Ok(ref r)) if r.status() == 200) {
            answered += 1;
        }
    }
    assert_eq!(
        answered, 20,
        "probes answered under a flood that fills every slot"
    );
    drop(flood);
    shutdown.cancel();
    server.await.unwrap();
}

#[tokio::test]
async fn a_metrics_scrape_does_not_read_the_runs_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::example_config(dir.path());
    let (sim, clock) = common::sim(&config);
    let store = Arc::new(Breakable {
        inner: Arc::new(dr::store::MemoryStore::new()),
        broken: false.into(),
        listings: 0.into(),
    });
    let engine = common::engine(store.clone(), &sim, &clock);
    let mut daemon = Daemon::new(
        config.clone(),
        engine.clone(),
        DaemonSettings::from_config(&config, None),
    );
    daemon.tick().await.unwrap();
    let router = app(ApiState {
        config: Arc::new(config),
        engine,
        daemon: daemon.handle(),
        tokens: Arc::new(Tokens::default()),
    });
    let before = store.listings.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..50 {
        let response = router
            .clone()
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let listings = store.listings.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(listings, 1, "50 scrapes listed the runs {listings} times");
}
