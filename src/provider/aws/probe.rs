//! `dr`'s own probe of a region's `/health`, over real HTTP with reqwest.

use crate::core::health::ProbeResult;
use crate::core::ids::RegionName;
use crate::provider::Probe;
use async_trait::async_trait;
use std::time::Duration;

/// One GET per probe, with no redirects followed and no connection reuse across regions'
/// outages hiding a dead endpoint.
pub struct HttpProbe {
    client: reqwest::Client,
}

impl Default for HttpProbe {
    fn default() -> Self {
        HttpProbe::new()
    }
}

impl HttpProbe {
    /// A probe client.
    pub fn new() -> HttpProbe {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .user_agent(concat!("dr/", env!("CARGO_PKG_VERSION"), " health probe"))
            .build()
            .unwrap_or_default();
        HttpProbe { client }
    }
}

/// True when the error chain holds a refused or reset connection.
fn refused(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
            );
        }
        source = e.source();
    }
    false
}

#[async_trait]
impl Probe for HttpProbe {
    async fn probe(&self, region: &RegionName, url: &str, timeout: Duration) -> ProbeResult {
        let answer = tokio::time::timeout(timeout, self.client.get(url).send()).await;
        match answer {
            Ok(Ok(response)) => ProbeResult::Status {
                code: response.status().as_u16(),
            },
            Ok(Err(err)) if refused(&err) => ProbeResult::Refused,
            Ok(Err(err)) => {
                tracing::debug!(%region, url, error = %err, "probe failed");
                // No HTTP answer (DNS, TLS, a dropped connection): nothing answered for the
                // service, which counts as no answer.
                ProbeResult::Timeout
            }
            Err(_) => ProbeResult::Timeout,
        }
    }
}
