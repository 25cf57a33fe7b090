//! `DnsAnswers` on AWS: the hosted zone's name servers from `[dns] name_servers`, asked through
//! `Authoritative`.
//!
//! Entries that are addresses are used as they are. Host names (Route53's own, such as
//! `ns-123.awsdns-45.com`) are resolved once, when first needed, with the system's resolver, and
//! the addresses are kept: after that no query depends on any resolver but the zone's own
//! servers. A name that does not resolve is tried again at the next query.

use super::authoritative::{Authoritative, DNS_PORT};
use crate::provider::{DnsAnswers, DnsType, ProviderError};
use async_trait::async_trait;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::Mutex;

/// How long each server gets to answer one query.
pub const PER_SERVER_TIMEOUT: Duration = Duration::from_secs(2);

/// The configured name servers, resolved on first use.
pub struct NameServers {
    configured: Vec<String>,
    resolved: Mutex<Option<Vec<SocketAddr>>>,
    timeout: Duration,
}

impl NameServers {
    /// The servers of `[dns] name_servers`, each asked for at most `timeout` per query.
    pub fn new(configured: Vec<String>, timeout: Duration) -> NameServers {
        NameServers {
            configured,
            resolved: Mutex::new(None),
            timeout,
        }
    }

    fn unavailable(detail: String) -> ProviderError {
        ProviderError::Unavailable {
            operation: "DNS query".into(),
            region: "route53-data-plane".into(),
            detail,
        }
    }

    /// Every configured server as socket addresses; resolves names the first time.
    async fn servers(&self) -> Result<Vec<SocketAddr>, ProviderError> {
        let mut resolved = self.resolved.lock().await;
        if let Some(servers) = resolved.as_ref() {
            return Ok(servers.clone());
        }
        let mut servers = Vec::new();
        let mut failures = Vec::new();
        for entry in &self.configured {
            match resolve(entry).await {
                Ok(mut addresses) => servers.append(&mut addresses),
                Err(why) => failures.push(format!("{entry}: {why}")),
            }
        }
        if servers.is_empty() {
            return Err(Self::unavailable(format!(
                "no name server could be resolved ({})",
                failures.join("; ")
            )));
        }
        if failures.is_empty() {
            *resolved = Some(servers.clone());
        }
        Ok(servers)
    }
}

/// One `[dns] name_servers` entry as socket addresses.
async fn resolve(entry: &str) -> Result<Vec<SocketAddr>, String> {
    let entry = entry.trim();
    if let Ok(address) = entry.parse::<SocketAddr>() {
        return Ok(vec![address]);
    }
    let unbracketed = entry
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(entry);
    if let Ok(ip) = unbracketed.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, DNS_PORT)]);
    }
    let (host, port) = match entry.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("`{port}` is not a port"))?,
        ),
        None => (entry, DNS_PORT),
    };
    let lookup = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host.trim_end_matches('.'), port)),
    )
    .await
    .map_err(|_| "the system's resolver did not answer within 5s".to_string())?
    .map_err(|e| e.to_string())?;
    let addresses: Vec<SocketAddr> = lookup.collect();
    if addresses.is_empty() {
        return Err("no address".into());
    }
    Ok(addresses)
}

#[async_trait]
impl DnsAnswers for NameServers {
    async fn answers(&self, name: &str, rtype: DnsType) -> Result<Vec<String>, ProviderError> {
        if self.configured.is_empty() {
            return Err(Self::unavailable(
                "no name servers are configured: list the hosted zone's in [dns] name_servers to read Route53 through its data plane".into(),
            ));
        }
        let servers = self.servers().await?;
        Authoritative::new(servers, self.timeout)
            .answers(name, rtype)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_are_used_as_they_are_and_a_missing_list_says_what_to_set() {
        assert_eq!(
            resolve("127.0.0.1:5353").await.unwrap(),
            vec!["127.0.0.1:5353".parse().unwrap()]
        );
        assert_eq!(
            resolve("192.0.2.53").await.unwrap(),
            vec!["192.0.2.53:53".parse().unwrap()]
        );
        assert!(resolve("ns.example:notaport").await.is_err());
        let none = NameServers::new(Vec::new(), PER_SERVER_TIMEOUT);
        let err = none.answers("x.example", DnsType::Txt).await.unwrap_err();
        assert!(err.to_string().contains("[dns] name_servers"), "{err}");
    }
}
