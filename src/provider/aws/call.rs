//! How every AWS call is made: one attempt time limit, a retry policy chosen by what the call
//! does, a rate limit for Route53, and errors turned into `ProviderError`s an operator can act on.
//!
//! The SDK's own retries are switched off (one attempt per `send`), so the policy here is the
//! only one and it is visible: reads and idempotent changes retry every transient error;
//! changes that are not idempotent retry only when AWS answered that they were throttled,
//! which means they were not applied. A change whose attempt timed out is never repeated here:
//! the step observes the world before it calls again.

use crate::provider::ProviderError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::future::Future;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// What a call does, which decides what may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Changes nothing.
    Read,
    /// Sends the same result however often it is applied (a size set, a request token).
    Idempotent,
    /// Must not be applied twice (a failover, a record change).
    NotIdempotent,
}

/// One call: what it is, where it goes, and what in the config names its resource.
#[derive(Clone, Debug)]
pub struct Call {
    /// The IAM service prefix: `rds`, `eks`, `autoscaling`, `route53`, `cloudwatch`.
    pub service: &'static str,
    /// The API operation, as IAM names it.
    pub operation: &'static str,
    /// The region (or `global` for Route53).
    pub region: String,
    /// The resource the call is about.
    pub resource: String,
    /// The config key that names the resource.
    pub config_key: String,
}

impl Call {
    /// The IAM action the call needs.
    pub fn iam_action(&self) -> String {
        format!("{}:{}", self.service, self.operation)
    }

    /// A `NotFound` error for this call's resource.
    pub fn not_found(&self) -> ProviderError {
        ProviderError::NotFound {
            operation: self.operation.to_string(),
            region: self.region.clone(),
            resource: self.resource.clone(),
            config_key: self.config_key.clone(),
        }
    }

    /// An `InvalidState` error for this call.
    pub fn invalid(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::InvalidState {
            operation: self.operation.to_string(),
            region: self.region.clone(),
            detail: detail.into(),
        }
    }

    /// An `Unavailable` error for this call.
    pub fn unavailable(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::Unavailable {
            operation: self.operation.to_string(),
            region: self.region.clone(),
            detail: detail.into(),
        }
    }
}

/// Error codes that mean "slow down": the request was not applied.
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "PriorRequestNotComplete",
    "SlowDown",
];

/// Error codes that mean "your credentials may not do this".
const DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedException",
    "NotAuthorized",
];

/// Error codes that mean "these credentials are not valid (any more)".
const EXPIRED: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
];

/// Error codes that mean "the resource is not there".
/// Codes of an endpoint that does not know the operation.
const NOT_SERVED: &[&str] = &[
    "UnknownOperationException",
    "UnknownOperation",
    "InvalidAction",
    "NotImplemented",
    "UnsupportedOperation",
];

const MISSING: &[&str] = &[
    "GlobalClusterNotFoundFault",
    "DBClusterNotFoundFault",
    "ResourceNotFoundException",
    "NoSuchHostedZone",
    "NoSuchHealthCheck",
    "NoSuchChange",
];

/// Error codes that mean "try again later" although the status is not 5xx.
const BUSY: &[&str] = &[
    "ScalingActivityInProgress",
    "ResourceContention",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalError",
];

/// Turns an SDK error into a `ProviderError`.
pub fn classify<E>(call: &Call, err: SdkError<E, HttpResponse>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    match &err {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            let code = inner.code().unwrap_or("");
            let message = inner.message().unwrap_or("").to_string();
            let detail = if message.is_empty() {
                code.to_string()
            } else {
                format!("{code}: {message}")
            };
            classify_code(call, code, status, detail)
        }
        SdkError::TimeoutError(_) => call.unavailable("no answer in time"),
        SdkError::DispatchFailure(_) => {
            let chain = error_chain(&err);
            if chain.contains("credential") {
                ProviderError::NoCredentials {
                    operation: call.operation.to_string(),
                    region: call.region.clone(),
                    detail: chain,
                }
            } else {
                call.unavailable(format!("cannot reach the endpoint: {chain}"))
            }
        }
        SdkError::ResponseError(_) => match status {
            Some(s) if s >= 500 => call.unavailable(format!("HTTP {s}")),
            _ => call.unavailable(format!(
                "the answer could not be read: {}",
                DisplayErrorContext(&err)
            )),
        },
        SdkError::ConstructionFailure(_) => call.invalid(format!(
            "the request could not be built: {}",
            DisplayErrorContext(&err)
        )),
        _ => call.unavailable(DisplayErrorContext(&err).to_string()),
    }
}

/// The messages of an error and its sources, each once, without the debug dumps.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        // The credential chain lists each provider it tried on lines of its own; keep the
        // first line, which says what is wrong.
        let text = text
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches("Attempted:")
            .trim()
            .trim_start_matches("dispatch failure")
            .trim_start_matches(": ")
            .trim_start_matches("other: ")
            .trim_start_matches("other")
            .trim()
            .to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// Classifies an error code and status (also used for errors read from a response body).
pub fn classify_code(
    call: &Call,
    code: &str,
    status: Option<u16>,
    detail: String,
) -> ProviderError {
    if THROTTLING.contains(&code) || status == Some(429) {
        return ProviderError::Throttled {
            operation: call.operation.to_string(),
            region: call.region.clone(),
            detail,
        };
    }
    if EXPIRED.contains(&code) {
        return ProviderError::NoCredentials {
            operation: call.operation.to_string(),
            region: call.region.clone(),
            detail,
        };
    }
    if DENIED.contains(&code) || (status == Some(403) && code.is_empty()) {
        return ProviderError::AccessDenied {
            operation: call.operation.to_string(),
            region: call.region.clone(),
            action: call.iam_action(),
        };
    }
    if MISSING.contains(&code) {
        return call.not_found();
    }
    if NOT_SERVED.contains(&code) || matches!(status, Some(404 | 501)) {
        // A 404 without a "no such resource" code is the endpoint saying it does not know the
        // operation (an emulator or a region without the service): not a config mistake.
        return ProviderError::NotServed {
            operation: call.operation.to_string(),
            region: call.region.clone(),
            detail: if code.is_empty() {
                format!("HTTP {}: {detail}", status.unwrap_or(0))
            } else {
                format!("{code}: {detail}")
            },
        };
    }
    if BUSY.contains(&code) || status.is_some_and(|s| s >= 500) {
        return call.unavailable(detail);
    }
    call.invalid(detail)
}

/// The retry and timeout policy every AWS provider shares.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Tries per call.
    pub max_attempts: u32,
    /// Time limit of one attempt.
    pub attempt_timeout: Duration,
    /// First backoff; doubled per retry, capped at `max_backoff`.
    pub first_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_attempts: 3,
            attempt_timeout: Duration::from_secs(10),
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl Policy {
    /// Runs `send` under the policy. `send` makes one attempt.
    pub async fn run<T, E, F, Fut>(
        &self,
        call: &Call,
        kind: Kind,
        send: F,
    ) -> Result<T, ProviderError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.run_raw(call, kind, || async {
            send().await.map_err(|err| classify(call, err))
        })
        .await
    }

    /// Runs `send`, whose errors are already classified, under the policy.
    pub async fn run_raw<T, F, Fut>(
        &self,
        call: &Call,
        kind: Kind,
        send: F,
    ) -> Result<T, ProviderError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut attempt = 1;
        let mut backoff = self.first_backoff;
        loop {
            let (error, timed_out) = match tokio::time::timeout(self.attempt_timeout, send()).await
            {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(err)) => (err, false),
                Err(_) => (
                    call.unavailable(format!(
                        "no answer within {}{}",
                        humantime::format_duration(self.attempt_timeout),
                        if kind == Kind::Read {
                            ""
                        } else {
                            "; the change may or may not have been applied, so dr looks before it calls again"
                        }
                    )),
                    true,
                ),
            };
            let retry = match kind {
                Kind::Read => error.is_transient(),
                // A change whose attempt timed out may have been applied: the step decides.
                Kind::Idempotent => error.is_transient() && !timed_out,
                // Only a throttled change is known not to have been applied.
                Kind::NotIdempotent => matches!(error, ProviderError::Throttled { .. }),
            };
            if !retry || attempt >= self.max_attempts {
                return Err(error);
            }
            tracing::debug!(operation = call.operation, region = %call.region, attempt, error = %error, "retrying");
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(self.max_backoff);
            attempt += 1;
        }
    }
}

/// Between half and all of `d`, so many callers retrying at once spread out.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let fraction = 0.5 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(fraction)
}

/// Spaces calls at least `interval` apart, across every task that shares it.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    /// At most `per_second` calls per second.
    pub fn per_second(per_second: f64) -> RateLimiter {
        RateLimiter {
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this caller's slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> Call {
        Call {
            service: "route53",
            operation: "ChangeResourceRecordSets",
            region: "global".into(),
            resource: "hosted zone Z1".into(),
            config_key: "dns.hosted_zone_id".into(),
        }
    }

    #[test]
    fn codes_become_errors_an_operator_can_act_on() {
        let c = call();
        assert!(matches!(
            classify_code(&c, "PriorRequestNotComplete", Some(400), "x".into()),
            ProviderError::Throttled { .. }
        ));
        assert!(matches!(
            classify_code(&c, "Throttling", Some(400), "x".into()),
            ProviderError::Throttled { .. }
        ));
        let denied = classify_code(&c, "AccessDenied", Some(403), "x".into());
        assert_eq!(
            denied.to_string(),
            "ChangeResourceRecordSets in global was denied: the credentials need IAM action route53:ChangeResourceRecordSets"
        );
        let unserved = classify_code(&c, "", Some(404), "not found".into());
        assert!(
            matches!(unserved, ProviderError::NotServed { .. }),
            "{unserved:?}"
        );
        assert!(
            !unserved.to_string().contains("dns.hosted_zone_id"),
            "{unserved}"
        );
        assert!(!unserved.is_transient());
        let missing = classify_code(&c, "NoSuchHostedZone", Some(404), "x".into());
        assert!(
            missing.to_string().contains("check dns.hosted_zone_id"),
            "{missing}"
        );
        assert!(classify_code(&c, "", Some(503), "x".into()).is_transient());
        assert!(!classify_code(&c, "InvalidChangeBatch", Some(400), "x".into()).is_transient());
    }

    #[tokio::test]
    async fn a_change_that_is_not_idempotent_is_retried_only_when_throttled() {
        let policy = Policy {
            first_backoff: Duration::from_millis(1),
            ..Policy::default()
        };
        let c = call();
        let tries = std::sync::atomic::AtomicU32::new(0);
        let result: Result<(), _> = policy
            .run_raw(&c, Kind::NotIdempotent, || async {
                tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(c.unavailable("HTTP 500"))
            })
            .await;
        assert!(result.is_err());
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 1);

        tries.store(0, std::sync::atomic::Ordering::SeqCst);
        let result: Result<(), _> = policy
            .run_raw(&c, Kind::NotIdempotent, || async {
                let n = tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n < 2 {
                    Err(classify_code(
                        &c,
                        "Throttling",
                        Some(400),
                        "Rate exceeded".into(),
                    ))
                } else {
                    Ok(())
                }
            })
            .await;
        assert!(result.is_ok());
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn reads_retry_transient_errors_up_to_the_limit() {
        let policy = Policy {
            first_backoff: Duration::from_millis(1),
            ..Policy::default()
        };
        let c = call();
        let tries = std::sync::atomic::AtomicU32::new(0);
        let result: Result<(), _> = policy
            .run_raw(&c, Kind::Read, || async {
                tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(c.unavailable("HTTP 503"))
            })
            .await;
        assert!(result.unwrap_err().is_transient());
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_spaces_calls() {
        let limiter = RateLimiter::per_second(2.0);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        // Five calls at two per second: the fifth goes at 2 s.
        assert!(
            start.elapsed() >= Duration::from_millis(1990),
            "{:?}",
            start.elapsed()
        );
        assert!(
            start.elapsed() < Duration::from_millis(2100),
            "{:?}",
            start.elapsed()
        );
    }
}
