//! The daemon process: the watch loop and its HTTP API, started together by one [`serve`].
//!
//! `dr daemon` calls it after it has read its config, secrets, store and listener; tests call it
//! with an in-memory store and a loopback listener, so what they exercise is what runs.

use crate::api::auth::Tokens;
use crate::api::serve::Limits;
use crate::api::{ApiState, app};
use crate::config::Config;
use crate::daemon::{Daemon, DaemonError, DaemonHandle, DaemonSettings};
use crate::engine::Engine;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Everything the daemon process runs on.
pub struct Service {
    /// The deployment.
    pub config: Config,
    /// Store, providers, clock and progress listeners.
    pub engine: Engine,
    /// The watch loop's timings and policy.
    pub settings: DaemonSettings,
    /// Who may call the API.
    pub tokens: Tokens,
    /// The listener's limits.
    pub limits: Limits,
}

/// The longest the API waits for the daemon's first observation before it answers anyway.
const FIRST_TICK_WAIT: Duration = Duration::from_secs(30);

/// A service that has been set up but not started: its handle is available before it runs.
pub struct Ready {
    daemon: Daemon,
    state: ApiState,
    limits: Limits,
}

impl Service {
    /// Sets the daemon and the API up over one engine, fenced by the daemon's lease: the API
    /// starts a run only while this daemon leads (a standby answers 409 naming the leader), and
    /// the run carries the leader's epoch, as the daemon's own runs do.
    pub fn prepare(self) -> Ready {
        let daemon = Daemon::new(self.config.clone(), self.engine.clone(), self.settings);
        let mut engine = self.engine;
        engine.fence = crate::leader::Fence(Some(daemon.leadership()));
        let state = ApiState {
            config: Arc::new(self.config),
            engine,
            daemon: daemon.handle(),
            tokens: Arc::new(self.tokens),
        };
        Ready {
            daemon,
            state,
            limits: self.limits,
        }
    }
}

impl Ready {
    /// What the daemon publishes to its API: its status, and a way to make it tick at once.
    pub fn handle(&self) -> DaemonHandle {
        self.daemon.handle()
    }

    /// Watches and serves the API on `listener` until `shutdown` fires, then stops the run in
    /// flight at a checkpoint and closes the listener. If the watch loop stops on an error (a
    /// store that cannot be used), the API stops too and the error is returned.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), DaemonError> {
        let server_stop = shutdown.child_token();
        let handle = self.daemon.handle();
        let mut watcher = tokio::spawn(self.daemon.run(shutdown));
        // The API answers once the daemon has observed once (or after FIRST_TICK_WAIT): before
        // that it could not say where the writer is, and an operator's `dr failover` would be
        // refused for want of it. Connections made meanwhile wait in the listen queue.
        let first = tokio::time::Instant::now() + FIRST_TICK_WAIT;
        while handle.status().is_none()
            && handle.store_failure().is_none()
            && !watcher.is_finished()
            && tokio::time::Instant::now() < first
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let server = tokio::spawn(crate::api::serve::serve(
            listener,
            app(self.state),
            self.limits,
            server_stop.clone(),
        ));
        let watched = match (&mut watcher).await {
            Ok(result) => result,
            Err(err) => {
                tracing::error!(error = %err, "the watch loop stopped unexpectedly");
                Ok(())
            }
        };
        server_stop.cancel();
        let _ = server.await;
        watched
    }
}

/// Watches and serves the API on `listener` until `shutdown` fires (see [`Ready::serve`]).
pub async fn serve(
    service: Service,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    service.prepare().serve(listener, shutdown).await
}
