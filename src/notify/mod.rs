//! Webhook notifications in Slack-compatible and PagerDuty Events v2 formats: on a trip, a run
//! start, a step failure, an approval needed, a daemon alert, and a run's end.
//!
//! `Notifier` is a `Progress`: the engine and daemon hand it events synchronously, it queues
//! them on a bounded channel without waiting, and one background task delivers them with
//! retries and backoff, bounded in count and time. A receiver that is down costs retries,
//! never the run. URLs and keys come from the environment or files, never the TOML.

use crate::core::decision::{AlertLevel, Decision};
use crate::core::ids::{RunId, StepName};
use crate::core::run::{EventRecord, RunEvent};
use crate::core::time::Timestamp;
use crate::engine::Progress;
use crate::secret::Secret;
use serde::Serialize;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    /// The daemon decided to fail over.
    Trip,
    /// A run started.
    RunStarted,
    /// A step failed.
    StepFailed,
    /// A step waits for approval.
    ApprovalNeeded,
    /// The daemon raised an alert.
    Alert,
    /// A run finished.
    RunEnded,
}

/// How loud.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Wake someone.
    Critical,
    /// Something failed.
    Error,
    /// Look soon.
    Warning,
    /// For the record.
    Info,
}

/// One notification.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notice {
    /// What happened.
    pub kind: NoticeKind,
    /// When.
    pub at: Timestamp,
    /// The run it concerns.
    pub run: Option<RunId>,
    /// One line for people.
    pub summary: String,
    /// How loud.
    pub severity: Severity,
    /// Whether it closes the incident (a successful run end).
    pub resolves: bool,
}

/// Where notices go.
#[derive(Clone, Debug, Default)]
pub struct Sinks {
    /// A Slack-compatible incoming webhook URL: its path is the credential.
    pub slack_url: Option<Secret>,
    /// PagerDuty Events v2: the enqueue URL and the routing key.
    pub pagerduty: Option<(String, Secret)>,
}

/// The PagerDuty Events v2 endpoint used when DR_PAGERDUTY_URL is not set.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

fn secret(name: &str) -> Result<Option<Secret>, String> {
    if let Ok(path) = std::env::var(format!("{name}_FILE")) {
        return std::fs::read_to_string(&path)
            .map(|s| Some(Secret::new(s.trim())))
            .map_err(|e| format!("{name}_FILE={path}: {e}"));
    }
    Ok(std::env::var(name)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .map(Secret::new))
}

impl Sinks {
    /// From DR_SLACK_WEBHOOK_URL, DR_PAGERDUTY_ROUTING_KEY (each also as `..._FILE`) and
    /// DR_PAGERDUTY_URL.
    pub fn from_env() -> Result<Sinks, String> {
        let slack_url = secret("DR_SLACK_WEBHOOK_URL")?;
        let pagerduty = secret("DR_PAGERDUTY_ROUTING_KEY")?.map(|key| {
            let url = std::env::var("DR_PAGERDUTY_URL")
                .unwrap_or_else(|_| PAGERDUTY_EVENTS_URL.to_string());
            (url, key)
        });
        Ok(Sinks {
            slack_url,
            pagerduty,
        })
    }

    /// Whether any sink is configured.
    pub fn is_empty(&self) -> bool {
        self.slack_url.is_none() && self.pagerduty.is_none()
    }
}

/// Retry bounds.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Tries per notice per sink.
    pub attempts: u32,
    /// Wait before the second try; doubles after each.
    pub first_backoff: Duration,
    /// Timeout of one request.
    pub request_timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 5,
            first_backoff: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// The Slack-compatible body.
pub fn slack_body(notice: &Notice) -> serde_json::Value {
    let icon = match notice.severity {
        Severity::Critical => ":rotating_light:",
        Severity::Error => ":x:",
        Severity::Warning => ":warning:",
        Severity::Info => ":white_check_mark:",
    };
    let run = notice
        .run
        .as_ref()
        .map(|r| format!(" (run {r})"))
        .unwrap_or_default();
    serde_json::json!({
        "text": format!("{icon} dr {}{run}: {}", kind_text(notice.kind), notice.summary),
    })
}

/// The PagerDuty Events v2 body. One incident per run (dedup key), resolved by a successful end.
pub fn pagerduty_body(notice: &Notice, routing_key: &str) -> serde_json::Value {
    let dedup_key = match &notice.run {
        Some(run) => format!("dr-run-{run}"),
        None => format!("dr-{}", kind_text(notice.kind).replace(' ', "-")),
    };
    serde_json::json!({
        "routing_key": routing_key,
        "event_action": if notice.resolves { "resolve" } else { "trigger" },
        "dedup_key": dedup_key,
        "payload": {
            "summary": format!("dr {}: {}", kind_text(notice.kind), notice.summary),
            "source": "dr",
            "severity": match notice.severity {
                Severity::Critical => "critical",
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Info => "info",
            },
            "timestamp": notice.at.to_string(),
            "custom_details": {
                "kind": notice.kind,
                "run": notice.run,
            },
        },
    })
}

fn kind_text(kind: NoticeKind) -> &'static str {
    match kind {
        NoticeKind::Trip => "trip",
        NoticeKind::RunStarted => "run started",
        NoticeKind::StepFailed => "step failed",
        NoticeKind::ApprovalNeeded => "approval needed",
        NoticeKind::Alert => "alert",
        NoticeKind::RunEnded => "run ended",
    }
}

/// Queues notices; one background task per receiver delivers them, so a receiver that hangs
/// delays only its own notices.
#[derive(Clone)]
pub struct Notifier {
    queues: Vec<(&'static str, mpsc::Sender<Notice>)>,
}

/// How many notices may wait per receiver; past it new ones are dropped (and logged), never
/// waited for.
pub const QUEUE: usize = 1024;

/// One receiver and how to address it.
enum Receiver {
    Slack(Secret),
    PagerDuty { url: String, key: Secret },
}

impl Receiver {
    fn name(&self) -> &'static str {
        match self {
            Receiver::Slack(_) => "slack",
            Receiver::PagerDuty { .. } => "pagerduty",
        }
    }

    fn url(&self) -> &str {
        match self {
            Receiver::Slack(url) => url.expose(),
            Receiver::PagerDuty { url, .. } => url,
        }
    }

    fn body(&self, notice: &Notice) -> serde_json::Value {
        match self {
            Receiver::Slack(_) => slack_body(notice),
            Receiver::PagerDuty { key, .. } => pagerduty_body(notice, key.expose()),
        }
    }
}

impl Notifier {
    /// Starts one delivery task per configured receiver on the current runtime. The handle
    /// ends when every task has.
    pub fn start(sinks: Sinks, retry: Retry) -> (Notifier, JoinHandle<()>) {
        let mut receivers = Vec::new();
        if let Some(url) = sinks.slack_url {
            receivers.push(Receiver::Slack(url));
        }
        if let Some((url, key)) = sinks.pagerduty {
            receivers.push(Receiver::PagerDuty { url, key });
        }
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for receiver in receivers {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.push((receiver.name(), tx));
            tasks.push(tokio::spawn(deliver(rx, receiver, retry)));
        }
        let all = tokio::spawn(async move {
            for task in tasks {
                let _ = task.await;
            }
        });
        (Notifier { queues }, all)
    }

    /// Queues a notice for every receiver without waiting.
    pub fn send(&self, notice: Notice) {
        for (sink, tx) in &self.queues {
            if let Err(err) = tx.try_send(notice.clone()) {
                tracing::warn!(sink, error = %err, "notification dropped: the queue is full or closed");
            }
        }
    }
}

async fn deliver(mut rx: mpsc::Receiver<Notice>, receiver: Receiver, retry: Retry) {
    let client = match reqwest::Client::builder()
        .timeout(retry.request_timeout)
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(sink = receiver.name(), error = %err.without_url(), "cannot build the HTTP client; notifications are off");
            return;
        }
    };
    while let Some(notice) = rx.recv().await {
        post(
            &client,
            receiver.url(),
            &receiver.body(&notice),
            &retry,
            receiver.name(),
        )
        .await;
    }
}

/// Posts with bounded retries; returns whether it was delivered.
async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    retry: &Retry,
    sink: &str,
) -> bool {
    let mut backoff = retry.first_backoff;
    for attempt in 1..=retry.attempts {
        // Each attempt is bounded here too, whatever the client does.
        let sent =
            tokio::time::timeout(retry.request_timeout, client.post(url).json(body).send()).await;
        let Ok(sent) = sent else {
            tracing::warn!(
                sink,
                attempt,
                "notification not delivered: no answer in time"
            );
            if attempt < retry.attempts {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            continue;
        };
        match sent {
            Ok(response) if response.status().is_success() => return true,
            Ok(response) => {
                tracing::warn!(sink, attempt, status = %response.status().as_u16(), "notification refused");
                // A 4xx other than throttling will not get better by retrying.
                let status = response.status();
                if status.is_client_error() && status.as_u16() != 429 {
                    return false;
                }
            }
            // Without the URL: a Slack webhook's path is its credential.
            Err(err) => {
                tracing::warn!(sink, attempt, error = %err.without_url(), "notification not delivered")
            }
        }
        if attempt < retry.attempts {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    tracing::error!(
        sink,
        "notification given up after {} attempts",
        retry.attempts
    );
    false
}

impl Progress for Notifier {
    fn event(&self, run: &RunId, record: &EventRecord) {
        let notice = |kind, severity, summary: String, resolves| Notice {
            kind,
            at: record.at,
            run: Some(run.clone()),
            summary,
            severity,
            resolves,
        };
        match &record.event {
            RunEvent::StepStarted {
                step: StepName::Preflight,
                attempt: 1,
            } => {
                self.send(notice(
                    NoticeKind::RunStarted,
                    Severity::Warning,
                    "the run started its preflight".into(),
                    false,
                ));
            }
            RunEvent::StepFailed { step, error } => {
                self.send(notice(
                    NoticeKind::StepFailed,
                    Severity::Error,
                    format!("{step} failed: {error}"),
                    false,
                ));
            }
            RunEvent::StepSucceeded { outcome, .. } => {
                for gate in &outcome.gates {
                    self.send(notice(
                        NoticeKind::ApprovalNeeded,
                        Severity::Critical,
                        format!("{} waits for `dr approve`: {}", gate.step, gate.reason),
                        false,
                    ));
                }
            }
            RunEvent::StepGated { gate, .. } => {
                self.send(notice(
                    NoticeKind::ApprovalNeeded,
                    Severity::Critical,
                    format!("{} waits for `dr approve`: {}", gate.step, gate.reason),
                    false,
                ));
            }
            RunEvent::Finished { outcome } => {
                let severity = if outcome.is_success() {
                    Severity::Info
                } else {
                    Severity::Critical
                };
                self.send(notice(
                    NoticeKind::RunEnded,
                    severity,
                    format!("finished: {outcome}"),
                    outcome.is_success(),
                ));
            }
            _ => {}
        }
    }

    fn decided(&self, at: Timestamp, decision: &Decision) {
        let (kind, severity) = match (decision, decision.alert()) {
            (Decision::Failover { .. } | Decision::FailoverAwaitingApproval { .. }, _) => {
                (NoticeKind::Trip, Severity::Critical)
            }
            (_, Some(AlertLevel::Critical)) => (NoticeKind::Alert, Severity::Critical),
            (_, Some(AlertLevel::Warning)) => (NoticeKind::Alert, Severity::Warning),
            (_, None) => return,
        };
        self.send(Notice {
            kind,
            at,
            run: None,
            summary: decision.to_string(),
            severity,
            resolves: false,
        });
    }

    fn store_failed(&self, at: Timestamp, error: &str) {
        self.send(Notice {
            kind: NoticeKind::Alert,
            at,
            run: None,
            summary: format!(
                "the store cannot be used; the daemon is unhealthy and will not act: {error}"
            ),
            severity: Severity::Critical,
            resolves: false,
        });
    }
}

/// Hands every event to several progress listeners.
pub struct Fanout(pub Vec<std::sync::Arc<dyn Progress>>);

impl Progress for Fanout {
    fn event(&self, run: &RunId, record: &EventRecord) {
        self.0.iter().for_each(|p| p.event(run, record));
    }
    fn waiting(&self, step: StepName, at: Timestamp, what: &str) {
        self.0.iter().for_each(|p| p.waiting(step, at, what));
    }
    fn calling(
        &self,
        step: StepName,
        at: Timestamp,
        operation: &crate::core::plan::Operation,
        dry_run: bool,
    ) {
        self.0
            .iter()
            .for_each(|p| p.calling(step, at, operation, dry_run));
    }
    fn retrying(
        &self,
        step: StepName,
        at: Timestamp,
        error: &crate::provider::ProviderError,
        after: Duration,
    ) {
        self.0
            .iter()
            .for_each(|p| p.retrying(step, at, error, after));
    }
    fn decided(&self, at: Timestamp, decision: &Decision) {
        self.0.iter().for_each(|p| p.decided(at, decision));
    }
    fn observed(
        &self,
        at: Timestamp,
        region: &crate::core::ids::RegionName,
        signals: &crate::core::detect::Signals,
    ) {
        self.0.iter().for_each(|p| p.observed(at, region, signals));
    }
    fn store_failed(&self, at: Timestamp, error: &str) {
        self.0.iter().for_each(|p| p.store_failed(at, error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(resolves: bool) -> Notice {
        Notice {
            kind: NoticeKind::RunEnded,
            at: Timestamp(0),
            run: Some(RunId::new("r-1")),
            summary: "finished: succeeded".into(),
            severity: Severity::Info,
            resolves,
        }
    }

    #[test]
    fn pagerduty_bodies_follow_events_v2() {
        let body = pagerduty_body(&notice(true), "KEY");
        assert_eq!(body["routing_key"], "KEY");
        assert_eq!(body["event_action"], "resolve");
        assert_eq!(body["dedup_key"], "dr-run-r-1");
        assert_eq!(body["payload"]["source"], "dr");
        assert_eq!(body["payload"]["severity"], "info");
        assert_eq!(
            pagerduty_body(&notice(false), "KEY")["event_action"],
            "trigger"
        );
    }

    #[test]
    fn slack_bodies_are_one_text_line() {
        let body = slack_body(&notice(true));
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .contains("run ended (run r-1): finished: succeeded")
        );
    }
}
