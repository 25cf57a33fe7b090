//! Route53's data plane against the emulator: `Authoritative` asks the launcher's DNS server
//! (the hosted zone's authoritative name servers, answering from moto's records and the checker
//! reports GetHealthCheckStatus answers) over real UDP and TCP on loopback.
//!
//! Each test starts its own emulator, so the tests run in parallel and share nothing. Every
//! wait is a bounded loop.

mod common;

use common::moto::{HealthServer, Moto, aws_config, seed_world};
use dr::core::health::route53_counts_healthy;
use dr::core::plan::{ChangeAction, RecordChange};
use dr::provider::aws::Authoritative;
use dr::provider::{ChangeStatus, DnsAnswers, DnsType, ProviderError, Providers};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RECORD: &str = "api.ytvideocreator.com";
const EAST: &str = "203.0.113.10";
const WEST: &str = "198.51.100.20";

/// A region's health record, by the convention the launcher's seed follows.
fn health_record(set_identifier: &str) -> String {
    format!("{set_identifier}.dr-health.{RECORD}")
}

struct Setup {
    dir: tempfile::TempDir,
    moto: Moto,
    health: HealthServer,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path(), &seed_world());
    Setup {
        dir,
        moto,
        health: HealthServer::start(),
    }
}

impl Setup {
    /// The data plane, asked at the emulator's DNS server only.
    fn dns(&self) -> Authoritative {
        Authoritative::new(vec![self.moto.dns_addr()], Duration::from_secs(2))
    }

    /// dr's AWS providers (the SDK) pointed at the emulator, with static test credentials.
    async fn providers(&self) -> (Providers, aws_config::SdkConfig) {
        let path = aws_config(
            self.dir.path(),
            &self.moto,
            &self.health,
            Some(&self.moto.endpoint()),
        );
        let config = dr::config::load(&path).unwrap();
        let sdk = dr::provider::aws::sdk_config_loader(&config.aws)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_route53::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await;
        let providers = dr::provider::aws::connect_with(&sdk, &config.aws, &config.topology);
        (providers, sdk)
    }

    fn check(&self, region: &str) -> String {
        self.moto.health_checks[region].clone()
    }
}

async fn answers(dns: &dyn DnsAnswers, name: &str, rtype: DnsType) -> Vec<String> {
    dns.answers(name, rtype)
        .await
        .unwrap_or_else(|e| panic!("{name} {rtype}: {e}"))
}

fn strings(items: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_record_follows_the_checker_report_across_the_18_percent_line() {
    let s = setup();
    let (providers, _) = s.providers().await;
    let dns = s.dns();
    let east = s.check("us-east-1");
    // (healthy, total) checkers, crossing 18% both ways; the last is the launcher's default.
    let reports = [
        (16, 16),
        (3, 16),   // 18.75%: healthy
        (18, 100), // exactly 18%: unhealthy
        (19, 100), // healthy again
        (9, 50),   // exactly 18%: unhealthy
        (0, 16),
        (16, 16),
    ];
    let mut seen = Vec::new();
    for (healthy, total) in reports {
        s.moto.set_checkers(&east, healthy, total);
        // What the control plane says, through dr's Route53 provider, judged by dr's own rule.
        let report = providers.health_checks.checker_report(&east).await.unwrap();
        assert_eq!((report.healthy, report.total), (healthy, total));
        let verdict = if route53_counts_healthy(report.healthy, report.total) {
            "healthy"
        } else {
            "unhealthy"
        };
        // What the data plane says.
        let answer = answers(&dns, &health_record("us-east-1"), DnsType::Txt).await;
        assert_eq!(answer, vec![verdict], "{healthy}/{total}");
        // The other region's record does not move.
        let west = answers(&dns, &health_record("us-west-2"), DnsType::Txt).await;
        assert_eq!(west, vec!["healthy"], "{healthy}/{total}");
        seen.push(verdict);
    }
    assert_eq!(
        seen,
        [
            "healthy",
            "healthy",
            "unhealthy",
            "healthy",
            "unhealthy",
            "unhealthy",
            "healthy"
        ]
    );
    // Answered by the name servers themselves, authoritatively (UDP may be retried).
    let queries = s.moto.dns_queries();
    assert!(queries.len() >= reports.len() * 2, "{queries:?}");
    assert!(
        queries
            .iter()
            .all(|q| q["aa"] == true && q["rcode"] == "NOERROR"),
        "{queries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_record_answers_only_the_regions_whose_checks_pass() {
    let s = setup();
    let dns = s.dns();
    let (east, west) = (s.check("us-east-1"), s.check("us-west-2"));
    assert_eq!(
        answers(&dns, RECORD, DnsType::A).await,
        strings(&[EAST, WEST])
    );
    s.moto.set_checkers(&east, 2, 16);
    assert_eq!(answers(&dns, RECORD, DnsType::A).await, strings(&[WEST]));
    s.moto.set_checkers(&east, 16, 16);
    s.moto.set_checkers(&west, 0, 16);
    assert_eq!(answers(&dns, RECORD, DnsType::A).await, strings(&[EAST]));
    // Every region failing: Route53 answers them all rather than nothing.
    s.moto.set_checkers(&east, 0, 16);
    assert_eq!(
        answers(&dns, RECORD, DnsType::A).await,
        strings(&[EAST, WEST])
    );
    // A name in the zone with no record of the type, or no record at all: no values.
    assert!(answers(&dns, RECORD, DnsType::Aaaa).await.is_empty());
    assert!(
        answers(&dns, "nothing-here.ytvideocreator.com", DnsType::A)
            .await
            .is_empty()
    );
    assert!(
        answers(&dns, &format!("dr-health.{RECORD}"), DnsType::Txt)
            .await
            .is_empty()
    );
    // A name in no zone of this account is refused, so no server answered for it.
    let error = dns.answers("example.org", DnsType::A).await.unwrap_err();
    assert!(error.to_string().contains("REFUSED"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_the_same_while_every_route53_api_operation_fails() {
    let s = setup();
    let (providers, _) = s.providers().await;
    let dns = s.dns();
    let east = s.check("us-east-1");
    s.moto.set_checkers(&east, 1, 16);
    let names = [
        (RECORD.to_string(), DnsType::A),
        (health_record("us-east-1"), DnsType::Txt),
        (health_record("us-west-2"), DnsType::Txt),
    ];
    let mut before = Vec::new();
    for (name, rtype) in &names {
        before.push(answers(&dns, name, *rtype).await);
    }
    assert_eq!(before[0], strings(&[WEST]));
    assert_eq!(before[1], vec!["unhealthy"]);

    for operation in [
        "GetHealthCheckStatus",
        "ListResourceRecordSets",
        "ChangeResourceRecordSets",
        "GetChange",
    ] {
        s.moto
            .fault(json!({"operation": operation, "kind": "error", "status": 503}));
    }
    // The control plane is dark ...
    let zone = s.moto.hosted_zone_id.clone();
    let read = providers.health_checks.checker_report(&east).await;
    assert!(
        matches!(read, Err(ProviderError::Unavailable { .. })),
        "{read:?}"
    );
    let listed = providers.dns.list_records(&zone, RECORD).await;
    assert!(
        matches!(listed, Err(ProviderError::Unavailable { .. })),
        "{listed:?}"
    );
    // ... and the data plane answers as before.
    for ((name, rtype), expected) in names.iter().zip(&before) {
        assert_eq!(&answers(&dns, name, *rtype).await, expected, "{name}");
    }
    // Its checkers go on judging: east recovers with the API still failing.
    s.moto.set_checkers(&east, 16, 16);
    assert_eq!(
        answers(&dns, &health_record("us-east-1"), DnsType::Txt).await,
        vec!["healthy"]
    );
    assert_eq!(
        answers(&dns, RECORD, DnsType::A).await,
        strings(&[EAST, WEST])
    );
    let failed = s
        .moto
        .calls()
        .iter()
        .filter(|c| c["outcome"] == "error")
        .count();
    assert!(failed >= 2, "{:?}", s.moto.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_record_leaves_dns_once_its_change_is_insync() {
    let s = setup();
    let (providers, _) = s.providers().await;
    let dns = s.dns();
    let zone = s.moto.hosted_zone_id.clone();
    // Long enough that the first reads land while the change is PENDING.
    s.moto.timings(json!({"dns_change": 4.0}));
    let records = providers.dns.list_records(&zone, RECORD).await.unwrap();
    let east = records
        .iter()
        .find(|r| r.set_identifier == "us-east-1")
        .unwrap()
        .clone();
    let change = providers
        .dns
        .change_records(
            &zone,
            &[RecordChange {
                action: ChangeAction::Delete,
                record: east,
            }],
        )
        .await
        .unwrap();
    // Read DNS, then GetChange: while GetChange still says PENDING after a read, that read was
    // made before the change propagated, and must show the zone as it was.
    let start = Instant::now();
    let mut pending_reads = 0;
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the change never became INSYNC"
        );
        let seen = answers(&dns, RECORD, DnsType::A).await;
        match providers.dns.get_change(&change).await.unwrap() {
            ChangeStatus::Pending => {
                assert_eq!(seen, strings(&[EAST, WEST]), "read while PENDING");
                pending_reads += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            ChangeStatus::Insync => break,
        }
    }
    assert!(
        pending_reads >= 1,
        "no read was made while the change was PENDING"
    );
    assert_eq!(answers(&dns, RECORD, DnsType::A).await, strings(&[WEST]));
    // The health record is a record set of its own, untouched by the serving record's change.
    assert_eq!(
        answers(&dns, &health_record("us-east-1"), DnsType::Txt).await,
        vec!["healthy"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_fails_in_bounded_time_and_the_next_server_answers() {
    let s = setup();
    let live = s.moto.dns_addr();
    let timeout = Duration::from_millis(400);
    s.moto.dns_fault(json!({"kind": "drop"}));
    let dropping = Authoritative::new(vec![live], timeout);
    let start = Instant::now();
    let error = dropping.answers(RECORD, DnsType::A).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let ProviderError::Unavailable {
        operation, detail, ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(operation, "DNS query");
    assert!(detail.contains(&live.to_string()), "{detail}");
    assert!(detail.contains("no answer within"), "{detail}");
    s.moto.clear_dns_faults();

    // A server that never answers, one whose port is closed, then the live one.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed: SocketAddr = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let servers = vec![silent.local_addr().unwrap(), closed, live];
    let dns: Arc<dyn DnsAnswers> = Arc::new(Authoritative::new(servers, timeout));
    let start = Instant::now();
    assert_eq!(
        answers(dns.as_ref(), RECORD, DnsType::A).await,
        strings(&[EAST, WEST])
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    // A server that answers SERVFAIL, or without authority, is passed over for the next one.
    for kind in ["servfail", "not-authoritative"] {
        s.moto.dns_fault(json!({"kind": kind, "count": 1}));
        let twice = Authoritative::new(vec![live, live], timeout);
        assert_eq!(
            answers(&twice, &health_record("us-west-2"), DnsType::Txt).await,
            vec!["healthy"],
            "{kind}"
        );
        s.moto.clear_dns_faults();
    }
    let faults: Vec<_> = s
        .moto
        .dns_queries()
        .iter()
        .filter_map(|q| q["fault"].as_str().map(str::to_string))
        .collect();
    assert!(faults.contains(&"servfail".to_string()), "{faults:?}");
    assert!(
        faults.contains(&"not-authoritative".to_string()),
        "{faults:?}"
    );

    // Every server failing: each one's failure is named.
    s.moto.dns_fault(json!({"kind": "servfail"}));
    let both = Authoritative::new(vec![closed, live], timeout);
    let error = both.answers(RECORD, DnsType::A).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&closed.to_string()), "{text}");
    assert!(
        text.contains(&format!("{live}: answered SERVFAIL")),
        "{text}"
    );
    s.moto.clear_dns_faults();

    // A slow answer for one name is a timeout for that name only.
    s.moto
        .dns_fault(json!({"kind": "latency", "seconds": 1.5, "name": RECORD}));
    let one = Authoritative::new(vec![live], timeout);
    let start = Instant::now();
    let error = one.answers(RECORD, DnsType::A).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(error.to_string().contains("no answer within"), "{error}");
    assert_eq!(
        answers(&one, &health_record("us-east-1"), DnsType::Txt).await,
        vec!["healthy"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    let s = setup();
    let (_, sdk) = s.providers().await;
    let dns = s.dns();
    // Forced: the server truncates every UDP answer for one name.
    let name = health_record("us-west-2");
    s.moto
        .dns_fault(json!({"kind": "truncate", "name": name, "transport": "udp"}));
    assert_eq!(answers(&dns, &name, DnsType::Txt).await, vec!["healthy"]);
    assert_truncated_then_tcp(&s.moto, &name);

    // Natural: a TXT record larger than the EDNS payload hickory advertises (1232 bytes).
    s.moto.timings(json!({"dns_change": 0.0}));
    let strings: Vec<String> = (0..6).map(|i| format!("{i}{}", "x".repeat(249))).collect();
    let value = strings
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(" ");
    let route53 = aws_sdk_route53::Client::new(&sdk);
    let record = aws_sdk_route53::types::ResourceRecordSet::builder()
        .name("big.ytvideocreator.com")
        .r#type(aws_sdk_route53::types::RrType::Txt)
        .ttl(60)
        .resource_records(
            aws_sdk_route53::types::ResourceRecord::builder()
                .value(value)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    route53
        .change_resource_record_sets()
        .hosted_zone_id(&s.moto.hosted_zone_id)
        .change_batch(
            aws_sdk_route53::types::ChangeBatch::builder()
                .changes(
                    aws_sdk_route53::types::Change::builder()
                        .action(aws_sdk_route53::types::ChangeAction::Create)
                        .resource_record_set(record)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let big = answers(&dns, "big.ytvideocreator.com", DnsType::Txt).await;
    assert_eq!(big, vec![strings.concat()]);
    assert_truncated_then_tcp(&s.moto, "big.ytvideocreator.com");
}

/// The queries for `name` were over UDP, answered truncated (more than once if UDP was
/// retried), and once over TCP, answered whole.
fn assert_truncated_then_tcp(moto: &Moto, name: &str) {
    let asked: Vec<(String, bool)> = moto
        .dns_queries()
        .iter()
        .filter(|q| q["name"] == name)
        .map(|q| {
            (
                q["transport"].as_str().unwrap().to_string(),
                q["truncated"].as_bool().unwrap(),
            )
        })
        .collect();
    let (udp, tcp): (Vec<_>, Vec<_>) = asked.iter().partition(|(transport, _)| transport == "udp");
    assert!(!udp.is_empty(), "{asked:?}");
    assert!(udp.iter().all(|(_, truncated)| *truncated), "{asked:?}");
    assert_eq!(tcp, [&("tcp".to_string(), false)], "{asked:?}");
}
