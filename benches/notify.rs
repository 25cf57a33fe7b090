//! Delivery delay to one receiver while the other hangs: Slack's webhook accepts connections on
//! 127.0.0.1 and never answers; PagerDuty's answers at once. Ten notices (a trip, a run start,
//! step failures, a run end) are queued one after another with the daemon's default retry
//! policy, and each PagerDuty delivery's delay from its queueing is measured.
//! Run by `cargo bench --bench notify`; loopback only, bounded (it waits at most 30 s).

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use dr::core::time::Timestamp;
use dr::notify::{Notice, NoticeKind, Notifier, Retry, Severity, Sinks};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NOTICES: usize = 10;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let received: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let app = Router::new()
        .route(
            "/pagerduty",
            post(|State(r): State<Arc<Mutex<Vec<Instant>>>>| async move {
                r.lock().unwrap().push(Instant::now());
                "ok"
            }),
        )
        .with_state(received.clone());
    let pagerduty = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pagerduty_address = pagerduty.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(pagerduty, app).await });
    let slack = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slack_address = slack.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = slack.accept().await {
            held.push(socket);
        }
    });
    let sinks = Sinks {
        slack_url: Some(format!("http://{slack_address}/services/hanging").into()),
        pagerduty: Some((
            format!("http://{pagerduty_address}/pagerduty"),
            "routing-key".into(),
        )),
    };
    let retry = Retry::default();
    let (notifier, _task) = Notifier::start(sinks, retry);
    let mut queued = Vec::new();
    for n in 0..NOTICES {
        queued.push(Instant::now());
        notifier.send(Notice {
            kind: NoticeKind::Alert,
            at: Timestamp(n as i64),
            run: None,
            summary: format!("notice {n}"),
            severity: Severity::Critical,
            resolves: n + 1 == NOTICES,
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.lock().unwrap().len() < NOTICES && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = received.lock().unwrap().clone();
    let mut delays: Vec<f64> = got
        .iter()
        .zip(&queued)
        .map(|(at, sent)| at.duration_since(*sent).as_secs_f64() * 1000.0)
        .collect();
    delays.sort_by(f64::total_cmp);
    println!(
        "slack hanging (each attempt gives up after {:?}), {NOTICES} notices queued",
        retry.request_timeout
    );
    println!("pagerduty received {}/{NOTICES}", got.len());
    if let (Some(first), Some(last)) = (delays.first(), delays.last()) {
        println!(
            "pagerduty delay: min {first:.1} ms, median {:.1} ms, max {last:.1} ms",
            delays[delays.len() / 2]
        );
    }
}
