//! Starting a run through a running daemon's API, when the daemon holds the store: the request
//! and the answers are the API's own typed values (`api::view`).

use super::context::{Ctx, confirm, internal};
use super::{CliError, CliResult, RunArgs, exit, render};
use crate::api::view::{ErrorBody, RunView, Settled, StartRequest};
use crate::core::plan::RunKind;
use crate::core::time::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long the CLI waits for the daemon's API to answer, unless DR_API_TIMEOUT says otherwise.
const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the CLI keeps asking about a run it started when the daemon's API does not answer
/// (or answers an error) before it reports the outcome as unknown.
const POLL_GRACE: Duration = Duration::from_secs(60);

/// How long the CLI follows a run it started through the API.
const FOLLOW_LIMIT: Duration = Duration::from_secs(3600);

/// A fresh key for one request: random where the system offers it, else time and process.
fn idempotency_key() -> String {
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if random {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    } else {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{}-{nanos}", std::process::id())
    }
}

/// The daemon that holds the store, for messages: `the daemon <holder>`, once, whether the
/// holder is a file lock's (a command line and pid) or a lease's (already `the daemon <id> ...`).
pub fn the_daemon(holder: &str) -> String {
    format!(
        "the daemon {}",
        holder.strip_prefix("the daemon ").unwrap_or(holder)
    )
}

/// Starts a run through the daemon's API and follows it until it finishes or needs an operator.
pub async fn start(ctx: &Ctx, args: &RunArgs, kind: RunKind, holder: &str) -> CliResult {
    let base =
        std::env::var("DR_API_URL").unwrap_or_else(|_| format!("http://{}", ctx.config.api_listen));
    let token = std::env::var("DR_API_TOKEN").map_err(|_| {
        CliError::refused(format!(
            "{} carries out runs on this store; set DR_API_TOKEN to a token with the operate role so this command goes through its API at {base}",
            the_daemon(holder)
        ))
    })?;
    if !args.dry_run {
        confirm(
            &format!("{kind} to {} through the daemon's API at {base}.", args.to),
            &args.to,
            args.yes,
        )?;
    }
    let timeout = match std::env::var("DR_API_TIMEOUT") {
        Ok(text) => humantime::parse_duration(&text).map_err(|e| {
            CliError::bad_input(format!("DR_API_TIMEOUT `{text}` is not a duration ({e})"))
        })?,
        Err(_) => DEFAULT_API_TIMEOUT,
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| internal(e.to_string()))?;
    let path = match kind {
        RunKind::Failover => "failover",
        RunKind::Switchover => "switchover",
    };
    let body = StartRequest {
        to: args.to.clone(),
        from: args.from.clone(),
        reason: args.reason.clone(),
        dry_run: args.dry_run,
    };
    // The daemon refuses the request if it reads it after the deadline, so a request this
    // command gave up on can never start a run later; the key makes a repeat harmless.
    let deadline = std::time::SystemTime::now() + timeout;
    let deadline_ms = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let response = client
        .post(format!("{base}/api/v1/{path}"))
        .bearer_auth(&token)
        .header(crate::api::guard::IDEMPOTENCY_HEADER, idempotency_key())
        .header(crate::api::guard::DEADLINE_HEADER, deadline_ms.to_string())
        .json(&body)
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                CliError::refused(format!(
                    "cannot reach the daemon's API at {base}: {e}; nothing was sent"
                ))
            } else {
                CliError::new(
                    exit::OUTCOME_UNKNOWN,
                    format!(
                        "the daemon's API at {base} took the request but did not answer ({e}); the outcome is unknown. The daemon refuses it if it reads it after {}, so nothing starts later than that; see whether a run started with `dr status` and `dr runs` before trying again",
                        Timestamp::from_system_time(deadline)
                    ),
                )
            }
        })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status != reqwest::StatusCode::ACCEPTED {
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|e| e.error)
            .unwrap_or_else(|_| "no message".into());
        let code = match status.as_u16() {
            400 | 413 | 422 => exit::BAD_INPUT,
            _ => exit::REFUSED,
        };
        return Err(CliError::new(
            code,
            format!("the daemon's API answered {status}: {message}"),
        ));
    }
    let started: RunView = serde_json::from_str(&text).map_err(|e| {
        CliError::new(
            exit::OUTCOME_UNKNOWN,
            format!(
                "the daemon's API at {base} accepted the request, but its answer cannot be read ({e}); see the run with `dr status` and `dr runs`"
            ),
        )
    })?;
    let id = started.id;
    if !ctx.json {
        eprintln!(
            "run {id}: started through the daemon's API; following it (Ctrl-C stops following, not the run)"
        );
    }
    let deadline = std::time::Instant::now() + FOLLOW_LIMIT;
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        let lost = |e: String| {
            CliError::new(
                exit::OUTCOME_UNKNOWN,
                format!(
                    "run {id} started, then the daemon's API at {base} stopped answering ({e}); follow the run with `dr status` and `dr runs {id}`"
                ),
            )
        };
        let polled = async {
            let response = client
                .get(format!("{base}/api/v1/runs/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("it answered {}", response.status()));
            }
            response.json::<RunView>().await.map_err(|e| e.to_string())
        }
        .await;
        let run = match polled {
            Ok(run) => {
                failing_since = None;
                run
            }
            Err(err) => {
                // A busy daemon (503 at its connection cap, say) is asked again for a while.
                let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > POLL_GRACE {
                    return Err(lost(err));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for step in &run.steps {
            let status = step_status_word(&step.status);
            let name = step.name.to_string();
            if seen.get(&name) != Some(&status) && !ctx.json {
                let summary = step
                    .summary
                    .as_ref()
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                eprintln!("{}", render::safe(&format!("{name}: {status}{summary}")));
            }
            seen.insert(name, status);
        }
        if let Some(settled) = run.settled() {
            if ctx.json {
                ctx.print_json(&run);
            } else {
                let status = run
                    .status
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unreadable".into());
                eprintln!("{}", render::safe(&format!("run {id}: {status}")));
            }
            return Ok(match settled {
                Settled::Succeeded => exit::OK,
                Settled::Failed => exit::RUN_FAILED,
                Settled::NeedsOperator => exit::NEEDS_OPERATOR,
            });
        }
        if std::time::Instant::now() > deadline {
            return Err(CliError::refused(format!(
                "run {id} is still going after an hour; follow it with `dr status`"
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A step's status in one word, as the API spells it.
pub fn step_status_word(status: &crate::core::run::StepStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_string))
        .unwrap_or_default()
}
