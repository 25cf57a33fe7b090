//! The status page in a real headless browser (Debian's chromium). A real daemon watches the
//! simulator, sped up 60 times; us-east-1 goes dark and the daemon fails over by itself. While
//! the run is in flight, chromium loads the page over loopback, and the test checks the rendered
//! DOM for the regions and the drawn timeline. A screenshot is kept at
//! target/test-artifacts/status-page.png.

mod common;

use dr::api::auth::Tokens;
use dr::api::serve::Limits;
use dr::clock::{Clock, WallClock};
use dr::core::run::StepStatus;
use dr::core::time::Timestamp;
use dr::daemon::DaemonSettings;
use dr::provider::sim::{OutageKind, SimProvider, World};
use dr::service::Service;
use dr::store::{MemoryStore, Store};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "page-reader-secret-00001";

fn chromium() -> String {
    std::env::var("DR_CHROMIUM").unwrap_or_else(|_| "chromium".to_string())
}

fn browser(args: &[String]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let mut command = Command::new(chromium());
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--hide-scrollbars",
    ]);
    command.arg(format!("--user-data-dir={}", profile.path().display()));
    command.args(args);
    command.output().unwrap_or_else(|e| {
        panic!(
            "cannot start `{}` ({e}): install Debian's chromium (.ci/run does) or set DR_CHROMIUM",
            chromium()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_draws_regions_and_the_running_failover() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::example_config(dir.path());
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    let clock: Arc<dyn Clock> = Arc::new(WallClock::scaled(now, now, 60.0));
    let world = World::new(&config.topology, config.sim.seed, now);
    let sim = Arc::new(SimProvider::in_memory(world, clock.clone()));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = common::engine(store.clone(), &sim, &clock);
    // The daemon and its API start as `dr daemon` starts them.
    let service = Service {
        config: config.clone(),
        engine,
        settings: DaemonSettings::from_config(&config, Some(false)),
        tokens: Tokens::parse(&format!("page:read:{TOKEN}"), "test").unwrap(),
        limits: Limits::default(),
    };
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let serving = tokio::spawn(dr::service::serve(service, listener, stop.clone()));

    sim.update(|w| w.set_outage(&"us-east-1".into(), Some(OutageKind::Full)))
        .unwrap()
        .unwrap();
    // Wait (bounded) for the automatic failover to be in flight: promote-db running.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = store
            .active_run()
            .unwrap()
            .and_then(|id| store.load_run(&id).unwrap())
            .and_then(|run| run.state().ok())
            .is_some_and(|s| {
                s.steps
                    .values()
                    .any(|step| step.status == StepStatus::Running)
            });
        if running {
            break;
        }
        assert!(Instant::now() < deadline, "no failover started within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let url = format!("http://{address}/#token={TOKEN}");
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            browser(&[
                "--virtual-time-budget=4000".into(),
                "--dump-dom".into(),
                url,
            ])
        }
    })
    .await
    .unwrap();
    let html = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        dom.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    assert!(
        html.contains(r#"data-region="us-east-1""#),
        "regions not rendered:\n{html}"
    );
    assert!(html.contains(r#"data-region="us-west-2""#));
    assert!(
        html.contains(r#"class="region suspect""#) || html.contains(r#"class="region failed""#),
        "us-east-1's state is not shown:\n{html}"
    );
    assert!(
        html.contains(r#"data-step="preflight""#),
        "the timeline has no bars:\n{html}"
    );
    assert!(
        html.contains(r#"class="bar running""#),
        "no step is drawn as running:\n{html}"
    );
    assert!(html.contains("failover us-east-1 → us-west-2"));
    assert!(
        html.contains(r#"<span id="error"></span>"#),
        "the page reports an error:\n{html}"
    );

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let screenshot = tokio::task::spawn_blocking({
        let shot = shot.clone();
        move || {
            browser(&[
                "--virtual-time-budget=4000".into(),
                "--window-size=1280,1000".into(),
                format!("--screenshot={}", shot.display()),
                url,
            ])
        }
    })
    .await
    .unwrap();
    assert!(
        screenshot.status.success(),
        "{}",
        String::from_utf8_lossy(&screenshot.stderr)
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "the screenshot looks empty"
    );

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .expect("the daemon and its API stop within 30 s of shutdown")
        .unwrap()
        .unwrap();
}
