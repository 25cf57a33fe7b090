//! `dr daemon` and `dr healthcheck`.

use super::context::{Ctx, holder, internal};
use super::{CliError, CliResult, DaemonArgs, Switch, exit, init_logging};
use crate::engine::{Engine, EngineSettings};
use crate::service::Service;
use crate::store::ExecutorLock;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `dr daemon`: reads its secrets, store and listener, then watches and serves until SIGTERM.
pub async fn daemon(ctx: Ctx, args: DaemonArgs) -> CliResult {
    init_logging(&args.log_format, "info")?;
    let pre_warm = args.pre_warm.map(|switch| switch == Switch::On);
    let tokens = crate::api::auth::Tokens::from_env()
        .map_err(|e| CliError::bad_input(format!("API tokens: {e}")))?;
    let sinks = crate::notify::Sinks::from_env()
        .map_err(|e| CliError::bad_input(format!("notifications: {e}")))?;
    let store = ctx.store()?;
    // On a file store, the executor lock keeps every other process off it; daemons sharing a
    // store take turns by its leader lease instead.
    let lock = match ctx.config.store {
        crate::config::StoreBackend::Redb => {
            Some(ExecutorLock::acquire(&ctx.config.store_path, &holder())?)
        }
        crate::config::StoreBackend::Dynamodb { .. } => {
            if ctx.config.daemon.region.is_none() {
                return Err(CliError::bad_input(
                    "a daemon on a shared store needs the region it runs in: set DR_DAEMON_REGION (or [daemon] region)",
                ));
            }
            None
        }
    };
    let backend = ctx.backend().await?;
    let config = ctx.config;
    let listener = tokio::net::TcpListener::bind(config.api_listen)
        .await
        .map_err(|e| {
            CliError::refused(format!(
                "cannot serve the API on {} ({e}); free the port or set [api] listen",
                config.api_listen
            ))
        })?;
    if tokens.is_empty() {
        tracing::warn!(
            "no API tokens are configured (DR_API_TOKENS_FILE or DR_API_TOKENS): the API answers 401 to everything but /health, /ready and /metrics"
        );
    }
    if sinks.is_empty() {
        tracing::warn!(
            "no notification webhooks are configured (DR_SLACK_WEBHOOK_URL, DR_PAGERDUTY_ROUTING_KEY)"
        );
    }
    let (notifier, _delivery) =
        crate::notify::Notifier::start(sinks, crate::notify::Retry::default());
    let engine = Engine {
        store,
        providers: backend.providers,
        clock: backend.clock,
        progress: Arc::new(crate::notify::Fanout(vec![Arc::new(notifier)])),
        settings: EngineSettings::from_config(&config),
        fence: Default::default(),
    };
    let settings = crate::daemon::DaemonSettings::from_config(&config, pre_warm);
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        super::wait_for_signal().await;
        tracing::info!("signal received: stopping at the next checkpoint");
        signals.cancel();
    });
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(address = %address, "serving the API, the status page and /metrics");
    let service = Service {
        config,
        engine,
        settings,
        tokens,
        limits: crate::api::serve::Limits::default(),
    };
    crate::service::serve(service, listener, shutdown)
        .await
        .map_err(|e| CliError::new(exit::STORE_DAMAGED, e.to_string()))?;
    drop(lock);
    Ok(exit::OK)
}

/// `dr healthcheck`: asks a running daemon's /health (or /ready).
pub async fn healthcheck(ctx: &Ctx, ready: bool, url: Option<String>) -> CliResult {
    let base = url.unwrap_or_else(|| {
        let mut address = ctx.config.api_listen;
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{address}")
    });
    let path = if ready { "ready" } else { "health" };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| internal(e.to_string()))?;
    match client.get(format!("{base}/{path}")).send().await {
        Ok(response) if response.status().is_success() => {
            println!("{base}/{path}: {}", response.status());
            Ok(exit::OK)
        }
        Ok(response) => Err(internal(format!(
            "{base}/{path} answered {}",
            response.status()
        ))),
        Err(err) => Err(internal(format!("{base}/{path} did not answer: {err}"))),
    }
}
