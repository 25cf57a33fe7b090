//! What keeps an action from being carried out twice, or late: a client's `Request-Deadline`
//! (Unix milliseconds) after which an action is refused and does nothing, and its
//! `Idempotency-Key`, under which a repeated request gets the first answer instead of a second
//! run. Applies to every `POST`; reads are never refused or cached.
//!
//! The keys live in memory, bounded; a daemon restart forgets them, and the deadline then covers
//! a request left in a socket. This module never calls the store or the engine.

use super::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

/// The header with the time, in Unix milliseconds, after which the request must not be acted on.
pub const DEADLINE_HEADER: &str = "request-deadline";
/// The header with the client's key for one request.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Set on an answer repeated for a key already seen.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// How many answered keys are remembered; the oldest is forgotten first.
pub const REMEMBERED_KEYS: usize = 1024;
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 128;
/// Largest answer kept for a key.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Answers already given, by key.
#[derive(Default)]
pub struct Idempotency {
    inner: Mutex<Keys>,
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct Keys {
    entries: HashMap<u64, Entry>,
    answered: VecDeque<u64>,
}

enum Entry {
    InFlight {
        request: String,
    },
    Answered {
        request: String,
        status: StatusCode,
        body: Bytes,
    },
}

/// What to do with a request under a key.
enum Begin {
    New,
    Replay(StatusCode, Bytes),
    InFlight,
    OtherRequest,
}

impl Idempotency {
    /// The slot of a key: scoped to the caller's credentials, so one caller never sees
    /// another's answer. The credentials are hashed, never kept.
    fn slot(&self, authorization: Option<&HeaderValue>, key: &str) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        authorization.map(|v| v.as_bytes()).hash(&mut hasher);
        key.hash(&mut hasher);
        hasher.finish()
    }

    fn begin(&self, slot: u64, request: &str) -> Begin {
        let mut keys = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match keys.entries.get(&slot) {
            None => {
                keys.entries.insert(
                    slot,
                    Entry::InFlight {
                        request: request.to_string(),
                    },
                );
                Begin::New
            }
            Some(Entry::InFlight { request: first })
            | Some(Entry::Answered { request: first, .. })
                if first != request =>
            {
                Begin::OtherRequest
            }
            Some(Entry::InFlight { .. }) => Begin::InFlight,
            Some(Entry::Answered { status, body, .. }) => Begin::Replay(*status, body.clone()),
        }
    }

    fn finish(&self, slot: u64, request: &str, answer: Option<(StatusCode, Bytes)>) {
        let mut keys = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match answer {
            None => {
                keys.entries.remove(&slot);
            }
            Some((status, body)) => {
                keys.entries.insert(
                    slot,
                    Entry::Answered {
                        request: request.to_string(),
                        status,
                        body,
                    },
                );
                keys.answered.push_back(slot);
                while keys.answered.len() > REMEMBERED_KEYS {
                    if let Some(old) = keys.answered.pop_front() {
                        keys.entries.remove(&old);
                    }
                }
            }
        }
    }
}

/// Forgets an in-flight key whose request was dropped (the client went away), so a retry runs.
struct InFlightGuard<'a> {
    cache: &'a Idempotency,
    slot: u64,
    request: String,
    done: bool,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.cache.finish(self.slot, &self.request, None);
        }
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The middleware: refuses a late action, replays a repeated one.
pub async fn guard_actions(
    State(cache): State<Arc<Idempotency>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    if let Some(value) = request.headers().get(DEADLINE_HEADER) {
        let Some(deadline) = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "`Request-Deadline` must be a Unix time in milliseconds",
            )
            .into_response();
        };
        let now = now_millis();
        if now > deadline {
            tracing::warn!(
                path = %request.uri().path(),
                late_by_ms = now - deadline,
                "action refused: it was read after its deadline; nothing was done"
            );
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request was read {} ms after its deadline, so nothing was done; check `dr status`, then send it again",
                    now - deadline
                ),
            )
            .into_response();
        }
    }
    let Some(value) = request.headers().get(IDEMPOTENCY_HEADER) else {
        return next.run(request).await;
    };
    let key = match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LEN => key.to_string(),
        _ => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("`Idempotency-Key` must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            )
            .into_response();
        }
    };
    let slot = cache.slot(request.headers().get(header::AUTHORIZATION), &key);
    let what = format!("{} {}", request.method(), request.uri().path());
    match cache.begin(slot, &what) {
        Begin::New => {}
        Begin::Replay(status, body) => {
            let mut response = (status, body).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
            return response;
        }
        Begin::InFlight => {
            return ApiError::new(
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key is still being handled; check `dr status`",
            )
            .into_response();
        }
        Begin::OtherRequest => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was used for another request; use a new key for each request",
            )
            .into_response();
        }
    }
    let mut guard = InFlightGuard {
        cache: &cache,
        slot,
        request: what.clone(),
        done: false,
    };
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ANSWER_BYTES).await else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the answer could not be read back; check `dr status`",
        )
        .into_response();
    };
    // Refusals that did nothing (no or wrong token, a late request, a failing store) are not
    // remembered, so the same request may be sent again once the cause is fixed.
    let remembered = !matches!(
        parts.status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::REQUEST_TIMEOUT
    ) && !parts.status.is_server_error();
    let answer = remembered.then(|| (parts.status, bytes.clone()));
    cache.finish(slot, &what, answer);
    guard.done = true;
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_and_scoped() {
        let cache = Idempotency::default();
        let a = cache.slot(Some(&HeaderValue::from_static("Bearer a")), "k");
        let b = cache.slot(Some(&HeaderValue::from_static("Bearer b")), "k");
        assert_ne!(a, b, "two callers share a key's slot");
        for n in 0..(REMEMBERED_KEYS as u64 + 10) {
            assert!(matches!(cache.begin(n, "POST /x"), Begin::New));
            cache.finish(n, "POST /x", Some((StatusCode::OK, Bytes::new())));
        }
        let keys = cache.inner.lock().unwrap();
        assert_eq!(keys.entries.len(), REMEMBERED_KEYS);
        assert!(!keys.entries.contains_key(&0), "the oldest key was kept");
    }
}
