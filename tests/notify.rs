//! Notifications received by local HTTP receivers on 127.0.0.1: both formats, a receiver that
//! fails before it accepts, and a receiver that is down, which costs retries but never the run.

mod common;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use dr::core::decision::{Decision, Hold};
use dr::core::plan::RunKind;
use dr::core::run::RunOutcome;
use dr::engine::{ExecOutcome, Progress};
use dr::notify::{Fanout, Notifier, Retry, Sinks};
use dr::store::{MemoryStore, Store};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Received {
    bodies: Arc<Mutex<Vec<(String, Value)>>>,
    failures_left: Arc<Mutex<u32>>,
}

async fn receive(
    State(received): State<Received>,
    uri: axum::http::Uri,
    body: String,
) -> StatusCode {
    {
        let mut left = received.failures_left.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    let value = serde_json::from_str(&body).unwrap_or(Value::Null);
    received
        .bodies
        .lock()
        .unwrap()
        .push((uri.path().to_string(), value));
    StatusCode::OK
}

/// A receiver on a loopback port; fails the first `failures` requests with 500.
async fn receiver(failures: u32) -> (String, Received) {
    let received = Received {
        failures_left: Arc::new(Mutex::new(failures)),
        ..Received::default()
    };
    let app = Router::new()
        .route("/slack", post(receive))
        .route("/pagerduty", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), received)
}

/// A loopback address where nothing listens.
async fn down() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

fn quick() -> Retry {
    Retry {
        attempts: 3,
        first_backoff: Duration::from_millis(20),
        request_timeout: Duration::from_secs(2),
    }
}

/// Waits (bounded) until `received` holds `count` bodies.
async fn wait_for(received: &Received, count: usize) -> Vec<(String, Value)> {
    for _ in 0..500 {
        let bodies = received.bodies.lock().unwrap().clone();
        if bodies.len() >= count {
            return bodies;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {count} notifications, got {:?}",
        received.bodies.lock().unwrap()
    );
}

/// Runs the seed's failover on the simulator with the notifier listening.
async fn failover_with(notifier: Notifier) -> ExecOutcome {
    let dir = tempfile::tempdir().unwrap();
    let config = common::example_config(dir.path());
    // Real sockets need real time; the simulator's clock runs 600 times faster than the wall.
    let now = dr::core::time::Timestamp::from_system_time(std::time::SystemTime::now());
    let clock: Arc<dyn dr::clock::Clock> = Arc::new(dr::clock::WallClock::scaled(now, now, 600.0));
    let world = dr::provider::sim::World::new(&config.topology, config.sim.seed, now);
    let sim = Arc::new(dr::provider::sim::SimProvider::in_memory(
        world,
        clock.clone(),
    ));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut engine = common::engine(store, &sim, &clock);
    engine.progress = Arc::new(Fanout(vec![Arc::new(notifier)]));
    let run = common::create_failover(
        &engine,
        &config,
        "r-1",
        RunKind::Failover,
        "us-east-1",
        "us-west-2",
    );
    engine.execute(&run, &Default::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_notifies_slack_and_pagerduty_in_their_formats() {
    let (base, received) = receiver(0).await;
    let sinks = Sinks {
        slack_url: Some(format!("{base}/slack").into()),
        pagerduty: Some((format!("{base}/pagerduty"), "routing-key-1".into())),
    };
    let (notifier, _task) = Notifier::start(sinks, quick());
    notifier.decided(
        dr::core::time::Timestamp(0),
        &Decision::Failover {
            from: "us-east-1".into(),
            to: "us-west-2".into(),
            reason: "us-east-1 failed".into(),
        },
    );
    notifier.decided(
        dr::core::time::Timestamp(0),
        &Decision::Nothing(Hold::AllHealthy),
    );
    let outcome = failover_with(notifier).await;
    assert_eq!(outcome, ExecOutcome::Finished(RunOutcome::Succeeded));
    // Trip, run start, run end: three notices, each to both sinks.
    let bodies = wait_for(&received, 6).await;
    let slack: Vec<&Value> = bodies
        .iter()
        .filter(|(p, _)| p == "/slack")
        .map(|(_, b)| b)
        .collect();
    let pagerduty: Vec<&Value> = bodies
        .iter()
        .filter(|(p, _)| p == "/pagerduty")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(slack.len(), 3, "{slack:?}");
    assert!(slack[0]["text"].as_str().unwrap().contains("trip"));
    assert!(
        slack[2]["text"]
            .as_str()
            .unwrap()
            .contains("finished: succeeded")
    );
    assert_eq!(pagerduty.len(), 3);
    assert_eq!(pagerduty[0]["routing_key"], "routing-key-1");
    assert_eq!(pagerduty[0]["event_action"], "trigger");
    assert_eq!(pagerduty[0]["payload"]["severity"], "critical");
    assert_eq!(pagerduty[1]["dedup_key"], "dr-run-r-1");
    assert_eq!(pagerduty[2]["event_action"], "resolve");
    assert_eq!(pagerduty[2]["dedup_key"], "dr-run-r-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_first_gets_the_notice_after_retries() {
    let (base, received) = receiver(2).await;
    let sinks = Sinks {
        slack_url: Some(format!("{base}/slack").into()),
        pagerduty: None,
    };
    let (notifier, _task) = Notifier::start(sinks, quick());
    notifier.decided(
        dr::core::time::Timestamp(0),
        &Decision::Nothing(Hold::NoHealthyTarget {
            region: "us-east-1".into(),
        }),
    );
    let bodies = wait_for(&received, 1).await;
    assert!(bodies[0].1["text"].as_str().unwrap().contains("ALERT"));
    assert_eq!(
        *received.failures_left.lock().unwrap(),
        0,
        "both failures were retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_never_blocks_the_run_or_the_other_sink() {
    let (base, received) = receiver(0).await;
    let sinks = Sinks {
        slack_url: Some(format!("{}/slack", down().await).into()),
        pagerduty: Some((format!("{base}/pagerduty"), "key".into())),
    };
    let (notifier, _task) = Notifier::start(sinks, quick());
    let outcome = failover_with(notifier).await;
    assert_eq!(outcome, ExecOutcome::Finished(RunOutcome::Succeeded));
    // Slack is down: its notices are retried and given up; PagerDuty still gets both.
    let bodies = wait_for(&received, 2).await;
    assert!(bodies.iter().all(|(path, _)| path == "/pagerduty"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_notices_cost_the_run_nothing_while_the_receiver_is_down() {
    // The notifier would keep retrying for far longer than the run takes; the run finishes
    // regardless of the dead receiver.
    let sinks = Sinks {
        slack_url: Some(format!("{}/slack", down().await).into()),
        pagerduty: None,
    };
    let (notifier, _task) = Notifier::start(
        sinks,
        Retry {
            attempts: 50,
            first_backoff: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
        },
    );
    let outcome = failover_with(notifier).await;
    assert_eq!(outcome, ExecOutcome::Finished(RunOutcome::Succeeded));
}

/// A loopback receiver that accepts connections and never answers.
async fn hanging() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_delay_the_other() {
    let (base, received) = receiver(0).await;
    let sinks = Sinks {
        slack_url: Some(format!("{}/slack", hanging().await).into()),
        pagerduty: Some((format!("{base}/pagerduty"), "key".into())),
    };
    // Each Slack attempt waits a minute for an answer that never comes.
    let (notifier, _task) = Notifier::start(
        sinks,
        Retry {
            attempts: 5,
            first_backoff: Duration::from_secs(1),
            request_timeout: Duration::from_secs(60),
        },
    );
    for n in 0..3 {
        notifier.send(dr::notify::Notice {
            kind: dr::notify::NoticeKind::Alert,
            at: dr::core::time::Timestamp(n),
            run: None,
            summary: format!("alert {n}"),
            severity: dr::notify::Severity::Warning,
            resolves: false,
        });
    }
    // PagerDuty gets all three while Slack is still waiting on its first (wait_for gives up
    // after 5 s, far below one Slack attempt).
    let bodies = wait_for(&received, 3).await;
    assert!(bodies.iter().all(|(path, _)| path == "/pagerduty"));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_that_gets_no_answer_is_given_up_after_its_timeout() {
    let sinks = Sinks {
        slack_url: Some(format!("{}/slack", hanging().await).into()),
        pagerduty: None,
    };
    let (notifier, task) = Notifier::start(
        sinks,
        Retry {
            attempts: 2,
            first_backoff: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
        },
    );
    notifier.send(dr::notify::Notice {
        kind: dr::notify::NoticeKind::Alert,
        at: dr::core::time::Timestamp(0),
        run: None,
        summary: "x".into(),
        severity: dr::notify::Severity::Warning,
        resolves: false,
    });
    drop(notifier);
    // Two attempts of 5 s and a 1 s backoff: the task ends within 11 s of virtual time.
    tokio::time::timeout(Duration::from_secs(12), task)
        .await
        .expect("the delivery task outlived its attempts' timeouts")
        .unwrap();
}
