//! Serving the router on a listener with the limits a slow or hostile client cannot get around:
//! a deadline for a request's headers, a lifetime for a connection (which bounds idle keep-alive
//! connections), and a cap on open connections. The limits are hyper's own
//! (`http1::Builder::header_read_timeout` on tokio's timer) and a tokio semaphore on accepted
//! connections; this module decides nothing about requests.
//!
//! Past half the cap, a new connection gets a much shorter header deadline: a client that sends
//! its request at once (a health probe) is served, one that trickles is cut quickly. At the cap,
//! a new connection is not refused: the oldest open connection is closed gracefully to make
//! room (a request in flight on it still gets its answer). A flood of half-sent requests then
//! only ever evicts itself, and a probe, which sends its request at once, always gets in.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How much a client may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time to send a request's headers, on a connection opened while the server is not busy.
    pub header_read_timeout: Duration,
    /// Time to send a request's headers once more than half the connections are in use.
    pub busy_header_read_timeout: Duration,
    /// A connection is closed (after its request in flight) this long after it opened.
    pub max_connection_age: Duration,
    /// Connections open at once; past it the oldest is closed to make room.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(5),
            busy_header_read_timeout: Duration::from_millis(500),
            max_connection_age: Duration::from_secs(60),
            max_connections: 512,
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let spare = Arc::new(Semaphore::new(limits.max_connections / 4));
    let builder = |header_read_timeout| {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_buf_size(64 * 1024);
        builder
    };
    let calm = builder(limits.header_read_timeout);
    let busy = builder(limits.busy_header_read_timeout);
    let open: Mutex<VecDeque<Open>> = Mutex::new(VecDeque::new());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, most likely: let connections close, then go on.
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Full: close the oldest open connection and take its place. The new one may
                // start while the evicted one is still closing, on one of a few spare slots, so
                // the accept loop rarely waits and the count stays within the cap and a quarter.
                evict_oldest(&open);
                tokio::task::yield_now().await;
                let slot = permits
                    .clone()
                    .try_acquire_owned()
                    .or_else(|_| spare.clone().try_acquire_owned());
                match slot {
                    Ok(permit) => permit,
                    Err(_) => {
                        match tokio::time::timeout(EVICTION_WAIT, permits.clone().acquire_owned())
                            .await
                        {
                            Ok(Ok(permit)) => permit,
                            _ => continue,
                        }
                    }
                }
            }
        };
        let evict = CancellationToken::new();
        let requests = Arc::new(AtomicUsize::new(0));
        {
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            // Connections that ended cancelled their token on the way out: drop them.
            while open.front().is_some_and(|c| c.evict.is_cancelled()) {
                open.pop_front();
            }
            if open.len() > limits.max_connections * 2 {
                open.retain(|c| !c.evict.is_cancelled());
            }
            open.push_back(Open {
                evict: evict.clone(),
                requests: requests.clone(),
            });
        }
        let in_use = limits.max_connections - permits.available_permits();
        let http = if in_use * 2 > limits.max_connections {
            &busy
        } else {
            &calm
        };
        // Counts the requests in flight on this connection, so an eviction knows whether it
        // may close the socket at once (nothing in flight) or must let a request finish.
        let counter = requests.clone();
        let app = router.clone();
        let service = tower::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let app = app.clone();
            let in_flight = InFlight::start(counter.clone());
            async move {
                let _in_flight = in_flight;
                tower::ServiceExt::oneshot(app, request).await
            }
        });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let stop = shutdown.clone();
        let age = limits.max_connection_age;
        tokio::spawn(async move {
            let _permit = permit;
            // Marks the connection ended, whichever way it ends.
            let _ended = evict.clone().drop_guard();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stop.cancelled() => {}
                _ = evict.cancelled() => {
                    if requests.load(Ordering::SeqCst) == 0 {
                        // Evicted with no request in flight: close the socket now.
                        return;
                    }
                }
                _ = tokio::time::sleep(age) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    // Requests in flight finish; connections close after them.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(10), permits.acquire_many(all)).await;
}

/// How long a new connection waits for a slot when even the spare ones are taken.
const EVICTION_WAIT: Duration = Duration::from_millis(50);

/// An open connection, as the accept loop sees it.
struct Open {
    /// Cancelled to evict it, and by the connection itself when it ends.
    evict: CancellationToken,
    /// Requests in flight on it.
    requests: Arc<AtomicUsize>,
}

/// A request in flight on a connection, counted while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn start(counter: Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Closes the oldest open connection that has no request in flight (a half-sent request or an
/// idle keep-alive), else the oldest of all, gracefully.
fn evict_oldest(open: &Mutex<VecDeque<Open>>) {
    let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
    open.retain(|c| !c.evict.is_cancelled());
    let idle = open
        .iter()
        .position(|c| c.requests.load(Ordering::SeqCst) == 0);
    if let Some(victim) = idle.or(if open.is_empty() { None } else { Some(0) })
        && let Some(connection) = open.remove(victim)
    {
        connection.evict.cancel();
    }
}
