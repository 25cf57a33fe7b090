//! Progress for people: the engine's events, throttled waits, calls and retries, on stderr.

use super::render;
use crate::clock::Clock;
use crate::core::ids::{RunId, StepName};
use crate::core::plan::Operation;
use crate::core::run::{EventRecord, RunEvent};
use crate::core::time::{Timestamp, fmt_duration};
use crate::engine::Progress;
use crate::provider::ProviderError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Prints progress to stderr: events, throttled waits, calls, retries.
pub struct Printer {
    started: Timestamp,
    quiet: bool,
    waits: Mutex<std::collections::BTreeMap<StepName, Wait>>,
}

/// What a step has been waiting for, since when, and when it was last printed.
struct Wait {
    what: String,
    since: Timestamp,
    printed: Option<Timestamp>,
}

impl Printer {
    /// A printer whose times count from now; `quiet` prints nothing but dry-run calls.
    pub fn new(clock: Arc<dyn Clock>, quiet: bool) -> Printer {
        Printer {
            started: clock.now(),
            quiet,
            waits: Mutex::new(Default::default()),
        }
    }

    fn line(&self, at: Timestamp, text: &str) {
        if !self.quiet {
            let elapsed = at.since(self.started).as_secs();
            eprintln!(
                "[+{:02}:{:02}] {}",
                elapsed / 60,
                elapsed % 60,
                render::safe(text)
            );
        }
    }
}

impl Progress for Printer {
    fn event(&self, _run: &RunId, record: &EventRecord) {
        let text = match &record.event {
            RunEvent::StepStarted { step, attempt: 1 } => format!("{step}: started"),
            RunEvent::StepStarted { step, attempt } => {
                format!("{step}: started again (attempt {attempt})")
            }
            RunEvent::StepProgress { step, note } => format!("{step}: {note}"),
            event @ (RunEvent::StepGated { .. }
            | RunEvent::Promoting { .. }
            | RunEvent::Requested { .. }
            | RunEvent::TakenOver { .. }) => event.shared_text().unwrap_or_default(),
            RunEvent::StepSucceeded { step, outcome } => {
                format!("{step}: done: {}", outcome.summary)
            }
            RunEvent::StepFailed { step, error } => format!("{step}: FAILED: {error}"),
            RunEvent::StepInterrupted { step, reason } => format!("{step}: interrupted: {reason}"),
            RunEvent::StepSkipped { step, reason } => format!("{step}: skipped: {reason}"),
            RunEvent::Approved { step, reason, .. } => format!("{step}: approved: {reason}"),
            RunEvent::Paused { reason } => format!("run paused: {reason}"),
            RunEvent::Resumed { reason } => format!("run resumed: {reason}"),
            RunEvent::AbortRequested { reason } => format!("abort requested: {reason}"),
            RunEvent::Finished { outcome } => format!("run finished: {outcome}"),
        };
        self.line(record.at, &text);
    }

    fn waiting(&self, step: StepName, at: Timestamp, what: &str) {
        let mut waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        let wait = waits.entry(step).or_insert_with(|| Wait {
            what: String::new(),
            since: at,
            printed: None,
        });
        if wait.what != what {
            *wait = Wait {
                what: what.to_string(),
                since: at,
                printed: None,
            };
        }
        let due = wait
            .printed
            .is_none_or(|printed| at.since(printed) >= Duration::from_secs(30));
        if due {
            wait.printed = Some(at);
            let waited = at.since(wait.since);
            drop(waits);
            let so_far = if waited.is_zero() {
                String::new()
            } else {
                format!(" ({} so far)", fmt_duration(waited))
            };
            self.line(at, &format!("{step}: waiting for {what}{so_far}"));
        }
    }

    fn calling(&self, step: StepName, at: Timestamp, operation: &Operation, dry_run: bool) {
        if dry_run {
            // Dry-run mutations go to stdout: they are the command's result.
            println!(
                "DRY RUN {step}: would call {}",
                render::safe(&operation.to_string())
            );
        } else {
            self.line(at, &format!("{step}: calling {operation}"));
        }
    }

    fn retrying(&self, step: StepName, at: Timestamp, error: &ProviderError, after: Duration) {
        self.line(
            at,
            &format!("{step}: {error}; retrying in {}", fmt_duration(after)),
        );
    }
}
