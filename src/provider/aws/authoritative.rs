//! Route53's data plane: DNS queries sent straight to a hosted zone's authoritative name servers.
//!
//! Route53's control plane (`GetHealthCheckStatus`, `ListResourceRecordSets`,
//! `ChangeResourceRecordSets`) is served from us-east-1 and goes dark with it; the zone's name
//! servers keep answering. dr reads two things from them:
//! - **A region's health record**, Route53's checkers' verdict: a failover pair of TXT records
//!   at `<set_identifier>.dr-health.<record_name>`. The PRIMARY (SetIdentifier
//!   `<set_identifier>-healthy`, with the region's health check) answers `healthy`; the SECONDARY
//!   (`<set_identifier>-unhealthy`, no health check) answers `unhealthy`. Route53 answers the
//!   primary while the check is healthy, so one query tells the verdict.
//! - **The serving record** (`record_name`, one latency record per region, each with the
//!   region's health check): which regions it answers, to verify a repoint.
//!
//! `Authoritative` asks the servers it is given, in turn, with recursion off: the first
//! authoritative answer wins; a timeout, an error code or an answer without the AA flag moves on
//! to the next. It never recurses, never caches, never resolves a server's host name (it is given
//! socket addresses) and never asks a server it was not given.

use crate::provider::{DnsAnswers, DnsType, ProviderError};
use async_trait::async_trait;
use futures::StreamExt;
use hickory_net::DnsHandle;
use hickory_net::proto::op::{DnsRequestOptions, DnsResponse, Query, ResponseCode};
use hickory_net::proto::rr::{Name, RData, RecordType};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The port a name server is asked on when its entry names none.
pub const DNS_PORT: u16 = 53;

/// The operation named in errors.
const OPERATION: &str = "DNS query";

/// Where errors say the query went: Route53's name servers serve every region.
const DATA_PLANE: &str = "route53-data-plane";

/// A hosted zone's authoritative name servers, asked in turn.
#[derive(Clone, Debug)]
pub struct Authoritative {
    servers: Vec<SocketAddr>,
    timeout: Duration,
}

impl Authoritative {
    /// Asks `servers` in this order; each server gets `timeout` to answer, over UDP and, when the
    /// UDP answer is truncated, over TCP.
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Authoritative {
        Authoritative { servers, timeout }
    }

    /// The servers, in the order they are asked.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The values the first server that answers authoritatively gives for `name` and `rtype`,
    /// normalized (see `value_of`), sorted and without repeats; empty for NXDOMAIN or no record
    /// of the type. Only records of `rtype` are kept: an `A` query answered with a CNAME to a name
    /// outside the zone gives no value. When no server answers authoritatively, `Unavailable`
    /// names each server's failure. Takes at most `timeout` per server.
    pub async fn answers(&self, name: &str, rtype: DnsType) -> Result<Vec<String>, ProviderError> {
        let query_name = query_name(name)?;
        if self.servers.is_empty() {
            return Err(unavailable(name, rtype, "no name servers are configured"));
        }
        let mut failures = Vec::new();
        for &server in &self.servers {
            let asked =
                tokio::time::timeout(self.timeout, ask(server, &query_name, rtype, self.timeout))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "no answer within {}",
                            humantime::format_duration(self.timeout)
                        ))
                    });
            match asked.and_then(|response| judge(&response, rtype)) {
                Ok(values) => return Ok(values),
                Err(why) => failures.push(format!("{server}: {why}")),
            }
        }
        Err(unavailable(name, rtype, &failures.join("; ")))
    }
}

#[async_trait]
impl DnsAnswers for Authoritative {
    async fn answers(&self, name: &str, rtype: DnsType) -> Result<Vec<String>, ProviderError> {
        Authoritative::answers(self, name, rtype).await
    }
}

/// Name servers from the config: each entry `IP`, `IP:port` or `[IPv6]:port`, port 53 when left
/// out. The error names the first entry that is none of these.
pub fn parse_servers(text: &[String]) -> Result<Vec<SocketAddr>, String> {
    if text.is_empty() {
        return Err("no name servers are given: list the hosted zone's name servers".into());
    }
    text.iter().map(|entry| parse_server(entry)).collect()
}

fn parse_server(entry: &str) -> Result<SocketAddr, String> {
    let trimmed = entry.trim();
    let bracketed = trimmed
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6);
    let address = match trimmed.parse::<SocketAddr>() {
        Ok(address) => address,
        Err(_) => match trimmed.parse::<IpAddr>().ok().or(bracketed) {
            Some(ip) => SocketAddr::new(ip, DNS_PORT),
            None => {
                return Err(format!(
                    "name server {entry:?} is not an address: write IP, IP:port or [IPv6]:port (port {DNS_PORT} when left out)"
                ));
            }
        },
    };
    if address.port() == 0 {
        return Err(format!(
            "name server {entry:?} has port 0: give the port it answers DNS on, or none for {DNS_PORT}"
        ));
    }
    Ok(address)
}

fn unavailable(name: &str, rtype: DnsType, detail: &str) -> ProviderError {
    ProviderError::Unavailable {
        operation: OPERATION.into(),
        region: DATA_PLANE.into(),
        detail: format!("no authoritative answer for {name:?} {rtype}: {detail}"),
    }
}

/// The name to ask, absolute. A name DNS cannot carry is refused before any server is asked.
fn query_name(name: &str) -> Result<Name, ProviderError> {
    let refused = |why: String| ProviderError::InvalidState {
        operation: OPERATION.into(),
        region: DATA_PLANE.into(),
        detail: format!("{name:?} is not a DNS name: {why}"),
    };
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed == "." {
        return Err(refused("it is empty".into()));
    }
    let mut parsed = Name::from_utf8(trimmed).map_err(|e| refused(e.to_string()))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

fn record_type(rtype: DnsType) -> RecordType {
    match rtype {
        DnsType::A => RecordType::A,
        DnsType::Aaaa => RecordType::AAAA,
        DnsType::Cname => RecordType::CNAME,
        DnsType::Txt => RecordType::TXT,
    }
}

/// Recursion off: an authoritative server answers from its zones or not at all.
fn options() -> DnsRequestOptions {
    let mut options = DnsRequestOptions::default();
    options.recursion_desired = false;
    options
}

/// One server's response: over UDP, then over TCP when the UDP answer was truncated.
async fn ask(
    server: SocketAddr,
    name: &Name,
    rtype: DnsType,
    timeout: Duration,
) -> Result<DnsResponse, String> {
    let query = Query::query(name.clone(), record_type(rtype));
    // hickory ends the exchange without an item when its own timeout (the same one) fires.
    let silence = || {
        Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        ))
    };
    let provider = TokioRuntimeProvider::new();
    let udp = UdpClientStream::builder(server, provider.clone())
        .with_timeout(Some(timeout))
        .exchange();
    let response = udp
        .lookup(query.clone(), options())
        .next()
        .await
        .map_or_else(silence, |answer| {
            answer.map_err(|e| format!("over UDP: {e}"))
        })?;
    if !response.metadata.truncation {
        return Ok(response);
    }
    let tcp = TcpClientStream::exchange(server, None, timeout, None, provider)
        .await
        .map_err(|e| format!("the UDP answer was truncated, and TCP failed: {e}"))?;
    tcp.lookup(query, options())
        .next()
        .await
        .map_or_else(silence, |answer| {
            answer.map_err(|e| format!("the UDP answer was truncated, and over TCP: {e}"))
        })
}

/// The values of an authoritative answer, or why this response is not one.
fn judge(response: &DnsResponse, rtype: DnsType) -> Result<Vec<String>, String> {
    let code = response.metadata.response_code;
    if !matches!(code, ResponseCode::NoError | ResponseCode::NXDomain) {
        return Err(format!("answered {}", mnemonic(code)));
    }
    if !response.metadata.authoritative {
        return Err(
            "answered without authority (AA flag clear): not this zone's name server".into(),
        );
    }
    if response.metadata.truncation {
        return Err("the answer was truncated even over TCP".into());
    }
    if code == ResponseCode::NXDomain {
        return Ok(Vec::new());
    }
    let wanted = record_type(rtype);
    let mut values: Vec<String> = response
        .answers
        .iter()
        .filter(|record| record.record_type() == wanted)
        .filter_map(|record| value_of(&record.data))
        .collect();
    values.sort();
    values.dedup();
    Ok(values)
}

/// A response code as DNS tools print it.
fn mnemonic(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("response code {} ({other})", u16::from(other)),
    }
}

/// One record's value as dr compares it: an address as text (IPv6 in its canonical short form),
/// a CNAME target in lower case without the trailing dot, a TXT record's strings joined without
/// quotes (bytes that are not UTF-8 replaced). `None` for the types dr does not read.
fn value_of(data: &RData) -> Option<String> {
    match data {
        RData::A(address) => Some(address.0.to_string()),
        RData::AAAA(address) => Some(address.0.to_string()),
        RData::CNAME(target) => Some(
            target
                .0
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase(),
        ),
        RData::TXT(text) => {
            let bytes: Vec<u8> = text.txt_data.iter().flatten().copied().collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_net::proto::op::Message;
    use hickory_net::proto::rr::Record;
    use hickory_net::proto::rr::rdata::{A, AAAA, CNAME, TXT};
    use std::net::Ipv4Addr;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn servers_are_ip_ip_port_or_bracketed_v6_with_port_53_by_default() {
        let parsed = parse_servers(&strings(&[
            "205.251.192.1",
            "127.0.0.1:5353",
            "[::1]:5300",
            "2600:9000:5300::1",
            "[2600:9000:5301::1]",
            " 10.0.0.2 ",
        ]))
        .unwrap();
        assert_eq!(
            parsed,
            vec![
                "205.251.192.1:53".parse().unwrap(),
                "127.0.0.1:5353".parse().unwrap(),
                "[::1]:5300".parse().unwrap(),
                "[2600:9000:5300::1]:53".parse().unwrap(),
                "[2600:9000:5301::1]:53".parse().unwrap(),
                "10.0.0.2:53".parse().unwrap(),
            ]
        );
    }

    #[test]
    fn a_bad_server_entry_is_named() {
        for bad in [
            "ns-2048.awsdns-64.com",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "::1:53:x",
            "[::1",
            "",
            "1.2.3",
            "127.0.0.1:0",
        ] {
            let error = parse_servers(&strings(&["127.0.0.1", bad])).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
        assert!(parse_servers(&[]).unwrap_err().contains("no name servers"));
    }

    #[test]
    fn types_parse_in_any_case_and_serialize_in_kebab_case() {
        for rtype in DnsType::ALL {
            assert_eq!(DnsType::parse(rtype.as_str()), Some(rtype));
            assert_eq!(
                DnsType::parse(&rtype.as_str().to_ascii_lowercase()),
                Some(rtype)
            );
        }
        assert_eq!(DnsType::parse("MX"), None);
        assert_eq!(DnsType::parse(""), None);
        assert_eq!(serde_json::to_string(&DnsType::Aaaa).unwrap(), "\"aaaa\"");
        assert_eq!(
            serde_json::from_str::<DnsType>("\"cname\"").unwrap(),
            DnsType::Cname
        );
    }

    #[test]
    fn values_are_normalized() {
        assert_eq!(
            value_of(&RData::A(A(Ipv4Addr::new(203, 0, 113, 10)))).unwrap(),
            "203.0.113.10"
        );
        assert_eq!(
            value_of(&RData::AAAA(AAAA("2001:0db8:0000::0001".parse().unwrap()))).unwrap(),
            "2001:db8::1"
        );
        assert_eq!(
            value_of(&RData::CNAME(CNAME(
                Name::from_ascii("API-West.Example.COM.").unwrap()
            )))
            .unwrap(),
            "api-west.example.com"
        );
        assert_eq!(
            value_of(&RData::TXT(TXT::new(vec!["heal".into(), "thy".into()]))).unwrap(),
            "healthy"
        );
        assert_eq!(
            value_of(&RData::TXT(TXT::from_bytes(vec![&b"\xff\"x"[..]]))).unwrap(),
            "\u{fffd}\"x"
        );
    }

    fn response(code: ResponseCode, authoritative: bool, answers: Vec<Record>) -> DnsResponse {
        let mut message = Message::query().into_response();
        message.metadata.response_code = code;
        message.metadata.authoritative = authoritative;
        message.answers = answers;
        DnsResponse::from_message(message).unwrap()
    }

    fn record(data: RData) -> Record {
        Record::from_rdata(Name::from_ascii("api.example.com.").unwrap(), 60, data)
    }

    #[test]
    fn only_authoritative_answers_count_and_only_the_asked_type_is_kept() {
        let answers = vec![
            record(RData::A(A(Ipv4Addr::new(198, 51, 100, 20)))),
            record(RData::A(A(Ipv4Addr::new(203, 0, 113, 10)))),
            record(RData::A(A(Ipv4Addr::new(198, 51, 100, 20)))),
            record(RData::CNAME(CNAME(
                Name::from_ascii("x.example.com.").unwrap(),
            ))),
        ];
        assert_eq!(
            judge(
                &response(ResponseCode::NoError, true, answers.clone()),
                DnsType::A
            )
            .unwrap(),
            vec!["198.51.100.20", "203.0.113.10"]
        );
        assert_eq!(
            judge(
                &response(ResponseCode::NoError, true, answers.clone()),
                DnsType::Cname
            )
            .unwrap(),
            vec!["x.example.com"]
        );
        assert!(
            judge(
                &response(ResponseCode::NoError, true, answers.clone()),
                DnsType::Txt
            )
            .unwrap()
            .is_empty()
        );
        let error =
            judge(&response(ResponseCode::NoError, false, answers), DnsType::A).unwrap_err();
        assert!(error.contains("AA flag"), "{error}");
        assert!(
            judge(&response(ResponseCode::NXDomain, true, vec![]), DnsType::A)
                .unwrap()
                .is_empty()
        );
        assert!(judge(&response(ResponseCode::NXDomain, false, vec![]), DnsType::A).is_err());
        for code in [
            ResponseCode::ServFail,
            ResponseCode::Refused,
            ResponseCode::FormErr,
        ] {
            let error = judge(&response(code, true, vec![]), DnsType::A).unwrap_err();
            assert!(error.contains(&mnemonic(code)), "{error}");
        }
    }

    #[test]
    fn names_dns_cannot_carry_are_refused_without_a_query() {
        let long_label = "a".repeat(64);
        let long_name = vec!["abcdefghi"; 40].join(".");
        for bad in ["", " ", ".", "a..b", &long_label, &long_name] {
            let error = query_name(bad).unwrap_err();
            assert!(!error.is_transient(), "{bad}: {error}");
        }
        assert_eq!(
            query_name("api.example.com").unwrap().to_ascii(),
            "api.example.com."
        );
        // Unusual but legal input is asked as it is, never a panic.
        for odd in [
            "bücher.example",
            "_dmarc.example.com.",
            "a b.example",
            "\u{0}x.example",
        ] {
            let _ = query_name(odd);
        }
    }

    #[tokio::test]
    async fn no_servers_and_a_silent_server_are_unavailable_within_the_timeout() {
        let none = Authoritative::new(vec![], Duration::from_millis(100));
        let error = none
            .answers("api.example.com", DnsType::A)
            .await
            .unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert!(error.to_string().contains("no name servers"), "{error}");

        // A bound socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = silent.local_addr().unwrap();
        let one = Authoritative::new(vec![address], Duration::from_millis(300));
        let start = std::time::Instant::now();
        let error = one
            .answers("api.example.com", DnsType::A)
            .await
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        let ProviderError::Unavailable { detail, .. } = &error else {
            panic!("{error:?}");
        };
        assert!(detail.contains(&address.to_string()), "{detail}");
        assert!(detail.contains("300ms"), "{detail}");
    }
}
