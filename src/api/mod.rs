//! The daemon's HTTP surface: `/api/v1` for status, runs and operator actions, `/health` and
//! `/ready` for Kubernetes, `/metrics` for Prometheus, and the status page at `/`.
//!
//! `app(state) -> Router` holds every route; tests drive it with `oneshot`. Handlers only parse,
//! authorize and call the same store, engine and daemon functions the CLI uses; one `ApiError`
//! maps failures to deliberate statuses and never shows internals.

pub mod auth;
pub mod guard;
mod metrics;
pub mod serve;
pub mod view;

use crate::clock::Clock;
use crate::config::Config;
use crate::core::ids::{Actor, RegionName, RunId, StepName};
use crate::core::plan::{PlanRequest, RunKind, build_plan};
use crate::core::run::Trigger;
use crate::daemon::DaemonHandle;
use crate::engine::{Engine, EngineError, NewRun, control, new_run_id};
use crate::store::StoreError;
use auth::{Role, Tokens};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
pub use view::{ActionRequest, StartRequest};
use view::{AutomationAnswer, RunView, StatusView};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The deployment.
    pub config: Arc<Config>,
    /// Store, providers and clock, through the engine.
    pub engine: Engine,
    /// The daemon in this process.
    pub daemon: DaemonHandle,
    /// Who may call.
    pub tokens: Arc<Tokens>,
}

impl ApiState {
    fn clock(&self) -> Arc<dyn Clock> {
        self.engine.clock.clone()
    }
}

/// An error as the API answers it: a status and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(view::ErrorBody {
            error: self.message,
            status: self.status.as_u16(),
        });
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"dr\""),
            );
        }
        response
    }
}

/// Longest request target accepted, path and query.
pub const MAX_URI_BYTES: usize = 4096;

/// Refuses a request target over `MAX_URI_BYTES` with 414, before routing.
async fn limit_uri(request: Request, next: axum::middleware::Next) -> Response {
    let length = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(0);
    if length > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("the request target is {length} bytes; the limit is {MAX_URI_BYTES}"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Gives every error the documented JSON shape, `{"error": "...", "status": N}`, whoever made
/// it: axum's own rejections (405, a path that does not decode) are plain text otherwise.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let detail = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|t| !t.is_empty());
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if allowed.is_empty() {
                "this method is not allowed on this path: reads are GET, actions are POST".into()
            } else {
                format!("this method is not allowed on this path; use {allowed}")
            }
        }
        StatusCode::BAD_REQUEST => format!(
            "the request cannot be read: {}",
            detail.unwrap_or_else(|| "bad request".into())
        ),
        _ => detail.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_lowercase()),
    };
    let body = serde_json::to_vec(&view::ErrorBody {
        error: message,
        status: status.as_u16(),
    })
    .unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::RunActive { .. }
            | StoreError::DuplicateRun(_)
            | StoreError::AutomationPaused(_) => {
                ApiError::new(StatusCode::CONFLICT, err.to_string())
            }
            StoreError::NoSuchRun(_) => ApiError::new(StatusCode::NOT_FOUND, err.to_string()),
            StoreError::Refused(_) | StoreError::Fenced { .. } | StoreError::NotLeader { .. } => {
                ApiError::new(StatusCode::CONFLICT, err.to_string())
            }
            StoreError::ReadOnly(_)
            | StoreError::Damaged { .. }
            | StoreError::Io { .. }
            | StoreError::Unavailable { .. }
            | StoreError::UnsupportedVersion { .. } => {
                tracing::error!(error = %err, "store error in the API");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store cannot be used; see the daemon's log",
                )
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Store(err) => err.into(),
            EngineError::Plan(err) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, err.to_string())
            }
            EngineError::Refused(message) => ApiError::new(StatusCode::CONFLICT, message),
        }
    }
}

/// A JSON body whose rejections are `ApiError`s: malformed JSON, wrong types and unknown fields
/// are 400, a missing content type 415, a body over the limit 413.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonSyntaxError(e) => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("malformed JSON: {}", e.body_text()),
                ),
                JsonRejection::JsonDataError(e) => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("the body does not fit the request: {}", e.body_text()),
                ),
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "send the body as JSON with Content-Type: application/json",
                ),
                JsonRejection::BytesRejection(_) => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is over {MAX_BODY_BYTES} bytes"),
                ),
                other => ApiError::new(StatusCode::BAD_REQUEST, other.body_text()),
            }),
        }
    }
}

/// The credentials of an `Authorization` value in the `Bearer` scheme, whose name is
/// case-insensitive (RFC 7235).
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// The authenticated caller.
pub struct Caller {
    /// The token's name: the actor in the audit log.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

impl Caller {
    fn actor(&self) -> Actor {
        Actor::new(format!("api:{}", self.name))
    }

    fn must_operate(&self) -> Result<(), ApiError> {
        if self.role == Role::Operate {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "token `{}` may only read; actions need a token with the operate role",
                    self.name
                ),
            ))
        }
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, message);
        if state.tokens.is_empty() {
            return Err(unauthorized(
                "no API tokens are configured on the daemon; set DR_API_TOKENS_FILE or DR_API_TOKENS",
            ));
        }
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_credentials)
            .ok_or_else(|| unauthorized("send a token: Authorization: Bearer <token>"))?;
        let token = state
            .tokens
            .find(presented.trim())
            .ok_or_else(|| unauthorized("the token is not valid"))?;
        Ok(Caller {
            name: token.name.clone(),
            role: token.role,
        })
    }
}

/// Every route.
pub fn app(state: ApiState) -> Router {
    let metrics_cache = Arc::new(metrics::Cache::default());
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route(
            "/metrics",
            get(move |state: State<ApiState>| metrics_text(state, metrics_cache.clone())),
        )
        .route("/api/v1/status", get(status))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/runs/{id}", get(run))
        .route("/api/v1/failover", post(failover))
        .route("/api/v1/switchover", post(switchover))
        .route("/api/v1/runs/{id}/approve", post(approve))
        .route("/api/v1/runs/{id}/abort", post(abort))
        .route("/api/v1/runs/{id}/resume", post(resume))
        .route("/api/v1/pause", post(pause))
        .route("/api/v1/unpause", post(unpause))
        .route("/api/v1/ack", post(ack))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(guard::Idempotency::default()),
            guard::guard_actions,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn(limit_uri))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; the API is under /api/v1",
    )
}

async fn page() -> impl IntoResponse {
    // The page holds no data: it reads the token from the URL fragment (never sent to the
    // server) and calls the authenticated API.
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(include_str!("page.html")),
    )
}

async fn health(State(state): State<ApiState>) -> Response {
    match state.daemon.store_failure() {
        None => Json(serde_json::json!({ "status": "ok" })).into_response(),
        // Details stay in the daemon's log: /health is unauthenticated.
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "store-unusable",
                "error": "the store cannot be used; see the daemon's log, then move the file aside or restore it",
            })),
        )
            .into_response(),
    }
}

async fn ready(State(state): State<ApiState>) -> Response {
    let store_ok = state.engine.store.active_run().is_ok();
    let ticked = state.daemon.status().is_some();
    let body = serde_json::json!({ "store": store_ok, "watching": ticked });
    if store_ok && ticked {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics_text(
    State(state): State<ApiState>,
    cache: Arc<metrics::Cache>,
) -> Result<Response, ApiError> {
    // Store reads block: off the runtime that runs the daemon and the other requests.
    let text = tokio::task::spawn_blocking(move || metrics::render(&state, &cache))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "metrics failed"))??;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn status(
    State(state): State<ApiState>,
    _caller: Caller,
) -> Result<Json<StatusView>, ApiError> {
    let daemon = state.daemon.status();
    let automation = state.engine.store.automation()?;
    let active = match state.engine.store.active_run()? {
        Some(id) => state
            .engine
            .store
            .load_run(&id)?
            .map(|r| RunView::of(&r, None)),
        None => None,
    };
    Ok(Json(StatusView {
        now: state.clock().now(),
        writer: daemon.as_ref().and_then(|d| d.writer.clone()),
        regions: daemon
            .as_ref()
            .map(|d| d.regions.clone())
            .unwrap_or_default(),
        decision: daemon.as_ref().map(|d| d.decision.clone()),
        reason: daemon.as_ref().map(|d| d.reason.clone()),
        observed_at: daemon.as_ref().map(|d| d.at),
        automation,
        cooldown_until: daemon.as_ref().and_then(|d| d.cooldown_until),
        prewarmed: daemon.as_ref().and_then(|d| d.prewarmed.clone()),
        active_run: active,
        follow_ups: daemon
            .as_ref()
            .map(|d| d.follow_ups.clone())
            .unwrap_or_default(),
        daemon: daemon.as_ref().map(|d| d.daemon.clone()),
        daemon_region: daemon.as_ref().and_then(|d| d.region.clone()),
        lease: daemon.as_ref().and_then(|d| d.lease.clone()),
        daemons: crate::daemon::DaemonStatus::read_all(state.engine.store.as_ref())
            .unwrap_or_default()
            .iter()
            .map(crate::api::view::DaemonView::of)
            .collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    limit: Option<usize>,
}

async fn runs(
    State(state): State<ApiState>,
    _caller: Caller,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<RunView>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = query.limit.unwrap_or(20).min(500);
    let mut out = Vec::new();
    for header in state.engine.store.list_runs(limit)? {
        if let Some(stored) = state.engine.store.load_run(&header.id)? {
            out.push(RunView::of(&stored, None));
        }
    }
    Ok(Json(out))
}

async fn run(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let id = RunId::new(id);
    let stored = state
        .engine
        .store
        .load_run(&id)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("there is no run {id}")))?;
    let audit = state.engine.store.audit(Some(&id), 1000)?;
    Ok(Json(RunView::of(&stored, Some(audit))))
}

fn reason_of(reason: &str) -> Result<String, ApiError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`reason` must not be empty: it goes into the audit log",
        ));
    }
    Ok(reason.to_string())
}

fn region_of(state: &ApiState, name: &str, field: &str) -> Result<RegionName, ApiError> {
    let region = RegionName::new(name);
    if state.config.topology.region(&region).is_none() {
        let known: Vec<String> = state
            .config
            .topology
            .region_names()
            .iter()
            .map(|r| r.to_string())
            .collect();
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "`{field}`: region `{name}` is not in the config; known regions: {}",
                known.join(", ")
            ),
        ));
    }
    Ok(region)
}

async fn start(
    state: ApiState,
    caller: Caller,
    body: StartRequest,
    kind: RunKind,
) -> Result<Response, ApiError> {
    caller.must_operate()?;
    let reason = reason_of(&body.reason)?;
    let to = region_of(&state, &body.to, "to")?;
    let from = match &body.from {
        Some(from) => region_of(&state, from, "from")?,
        None => state
            .daemon
            .status()
            .and_then(|s| s.writer)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "the writer's region is not known yet; name it with `from`",
                )
            })?,
    };
    let now = state.clock().now();
    let plan = build_plan(
        &state.config.topology,
        &PlanRequest { from, to, kind },
        &state.config.plan,
    )
    .map_err(EngineError::from)?;
    let header = state.engine.create_run(
        plan,
        NewRun {
            id: new_run_id(now),
            trigger: Trigger::Manual {
                actor: caller.actor(),
            },
            actor: caller.actor(),
            reason,
            dry_run: body.dry_run,
        },
    )?;
    // The daemon carries the run out; wake it instead of waiting for the next poll.
    state.daemon.nudge.notify_one();
    let stored = state
        .engine
        .store
        .load_run(&header.id)?
        .ok_or_else(|| StoreError::NoSuchRun(header.id.clone()))?;
    Ok((StatusCode::ACCEPTED, Json(RunView::of(&stored, None))).into_response())
}

async fn failover(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<StartRequest>,
) -> Result<Response, ApiError> {
    start(state, caller, body, RunKind::Failover).await
}

async fn switchover(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<StartRequest>,
) -> Result<Response, ApiError> {
    start(state, caller, body, RunKind::Switchover).await
}

fn existing_run(state: &ApiState, id: String) -> Result<RunId, ApiError> {
    let id = RunId::new(id);
    if state.engine.store.load_run(&id)?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("there is no run {id}"),
        ));
    }
    Ok(id)
}

fn acted(state: &ApiState, run: &RunId) -> Result<Json<RunView>, ApiError> {
    state.daemon.nudge.notify_one();
    let stored = state
        .engine
        .store
        .load_run(run)?
        .ok_or_else(|| StoreError::NoSuchRun(run.clone()))?;
    Ok(Json(RunView::of(&stored, None)))
}

async fn approve(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ActionRequest>,
) -> Result<Json<RunView>, ApiError> {
    caller.must_operate()?;
    let reason = reason_of(&body.reason)?;
    let step = match &body.step {
        Some(name) => Some(StepName::parse(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`step`: `{name}` is not a step"),
            )
        })?),
        None => None,
    };
    let run = existing_run(&state, id)?;
    control::approve(
        state.engine.store.as_ref(),
        &run,
        step,
        None,
        &caller.actor(),
        &reason,
        state.clock().now(),
    )?;
    acted(&state, &run)
}

async fn abort(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ActionRequest>,
) -> Result<Json<RunView>, ApiError> {
    caller.must_operate()?;
    let reason = reason_of(&body.reason)?;
    let run = existing_run(&state, id)?;
    // The daemon in this process is the executor: it finishes the run at its next turn.
    let executor_running = state.daemon.status().is_some();
    control::abort(
        state.engine.store.as_ref(),
        &run,
        &caller.actor(),
        &reason,
        state.clock().now(),
        executor_running,
    )?;
    acted(&state, &run)
}

async fn resume(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ActionRequest>,
) -> Result<Json<RunView>, ApiError> {
    caller.must_operate()?;
    let reason = reason_of(&body.reason)?;
    let run = existing_run(&state, id)?;
    control::resume(
        state.engine.store.as_ref(),
        &run,
        &caller.actor(),
        &reason,
        state.clock().now(),
    )?;
    acted(&state, &run)
}

/// One of the daemon's automation switches (pause, unpause, ack).
type AutomationSwitch = fn(
    &dyn crate::store::Store,
    &Actor,
    &str,
    crate::core::time::Timestamp,
) -> Result<Option<RunId>, EngineError>;

/// Runs one automation switch for an operator and answers with the switches as they now are.
async fn automation_action(
    state: ApiState,
    caller: Caller,
    body: ActionRequest,
    act: AutomationSwitch,
) -> Result<Json<AutomationAnswer>, ApiError> {
    caller.must_operate()?;
    let reason = reason_of(&body.reason)?;
    let paused_run = act(
        state.engine.store.as_ref(),
        &caller.actor(),
        &reason,
        state.clock().now(),
    )?;
    state.daemon.nudge.notify_one();
    Ok(Json(AutomationAnswer {
        automation: state.engine.store.automation()?,
        paused_run,
    }))
}

async fn pause(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<ActionRequest>,
) -> Result<Json<AutomationAnswer>, ApiError> {
    automation_action(
        state,
        caller,
        body,
        crate::engine::control::pause_automation,
    )
    .await
}

async fn unpause(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<ActionRequest>,
) -> Result<Json<AutomationAnswer>, ApiError> {
    automation_action(state, caller, body, |store, actor, reason, now| {
        crate::engine::control::unpause_automation(store, actor, reason, now).map(|_| None)
    })
    .await
}

async fn ack(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<ActionRequest>,
) -> Result<Json<AutomationAnswer>, ApiError> {
    automation_action(state, caller, body, |store, actor, reason, now| {
        crate::engine::control::ack_cooldown(store, actor, reason, now).map(|_| None)
    })
    .await
}
