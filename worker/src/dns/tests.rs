//! The DNS server over real sockets on loopback: clients are told apart by their source IP
//! (all of 127/8 is local on Linux), so 127.0.0.2 and 127.0.0.3 act as two tasks on two
//! networks. Upstreams are tiny hickory servers on loopback too; nothing leaves the host.

mod forwarding;
mod upstream;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::net::tcp::TcpClientStream;
use hickory_server::net::udp::UdpClientStream;
use hickory_server::net::DnsHandle;
use hickory_server::proto::op::{DnsRequest, DnsRequestOptions, Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use shoal_proto::{Network, NetworkEndpoint, NetworkPeers, NetworkSpec};

use super::{Client, DnsServer, DnsServerConfig, DnsTable, Resolution};

/// Task A: on the "front" network.
const TASK_A: [u8; 4] = [127, 0, 0, 2];
/// Task B: on the "back" network only.
const TASK_B: [u8; 4] = [127, 0, 0, 3];
/// Not a task of this node.
const STRANGER: [u8; 4] = [127, 0, 0, 9];

fn endpoint(task_name: &str, service: &str, address: &str, running: bool) -> NetworkEndpoint {
    NetworkEndpoint {
        task_id: task_name.rsplit('.').next().unwrap_or_default().to_string(),
        task_name: task_name.to_string(),
        service_name: service.to_string(),
        aliases: if service == "web" {
            vec!["www".into()]
        } else {
            vec![]
        },
        address: address.to_string(),
        node_addr: "198.18.0.2".to_string(),
        running,
        service_id: format!("id-{service}"),
        node_id: "node-1".to_string(),
    }
}

fn network(id: &str, name: &str, endpoints: Vec<NetworkEndpoint>) -> NetworkPeers {
    NetworkPeers {
        network: Some(Network {
            id: id.to_string(),
            spec: Some(NetworkSpec {
                name: name.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        endpoints,
        services: Vec::new(),
        local_address: String::new(),
    }
}

/// "front": web (two running tasks, one starting, alias www); "back": db (one task).
fn peers(web3_running: bool) -> Vec<NetworkPeers> {
    vec![
        network(
            "net-front",
            "front",
            vec![
                endpoint("web.1.aaa", "web", "198.18.1.2", true),
                endpoint("web.2.bbb", "web", "198.18.1.3", true),
                endpoint("web.3.ccc", "web", "198.18.1.4", web3_running),
                endpoint("broken.1.ddd", "broken", "not-an-ip", true),
            ],
        ),
        network(
            "net-back",
            "back",
            vec![endpoint("db.1.eee", "db", "198.18.2.2", true)],
        ),
    ]
}

fn clients(b_upstream: Vec<SocketAddr>) -> Vec<Client> {
    vec![
        Client {
            addr: IpAddr::from(TASK_A),
            networks: vec!["net-front".into()],
            upstream: vec![],
        },
        Client {
            addr: IpAddr::from(TASK_B),
            networks: vec!["net-back".into()],
            upstream: b_upstream,
        },
    ]
}

fn table(web3_running: bool) -> DnsTable {
    DnsTable::new(&peers(web3_running), clients(vec![]))
}

/// Starts our server on 127.0.0.1:0 forwarding to `upstream`, with a short timeout for tests.
async fn start(table: DnsTable, upstream: Vec<SocketAddr>) -> (DnsServer, SocketAddr) {
    start_with_timeout(table, upstream, Duration::from_millis(500)).await
}

/// As [`start`], giving each upstream `forward_timeout` to answer.
async fn start_with_timeout(
    table: DnsTable,
    upstream: Vec<SocketAddr>,
    forward_timeout: Duration,
) -> (DnsServer, SocketAddr) {
    let mut config = DnsServerConfig::new(vec!["127.0.0.1:0".parse().expect("literal")], upstream);
    config.forward_timeout = forward_timeout;
    let server = DnsServer::start(config, table)
        .await
        .expect("DNS server starts");
    let addr = server.local_addrs()[0];
    (server, addr)
}

/// Asks `server` for `name`/`qtype` from source IP `from`, over UDP or TCP.
async fn ask(
    server: SocketAddr,
    from: [u8; 4],
    name: &str,
    qtype: RecordType,
    tcp: bool,
) -> Message {
    let bind = SocketAddr::from((from, 0));
    let name = Name::from_ascii(name).expect("test names are valid");
    let request = DnsRequest::new(
        {
            let mut m = Message::query();
            m.metadata.recursion_desired = true;
            m.add_query(Query::query(name, qtype));
            m
        },
        DnsRequestOptions::default(),
    );
    let timeout = Duration::from_secs(5);
    // The provider owns the task driving a TCP connection: it must outlive the response.
    let provider = TokioRuntimeProvider::new();
    let exchange = if tcp {
        TcpClientStream::exchange(server, Some(bind), timeout, None, provider.clone())
            .await
            .expect("TCP connect")
    } else {
        UdpClientStream::builder(server, provider.clone())
            .with_bind_addr(Some(bind))
            .with_timeout(Some(timeout))
            .exchange()
    };
    let response = exchange.send(request).next().await;
    drop(provider);
    response
        .expect("a response")
        .expect("no transport error")
        .into_message()
}

/// The A addresses of an answer, sorted, with the response code.
fn addrs(answer: &Message) -> (ResponseCode, Vec<Ipv4Addr>) {
    let mut out: Vec<Ipv4Addr> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    out.sort();
    (answer.metadata.response_code, out)
}

async fn a(server: SocketAddr, from: [u8; 4], name: &str) -> (ResponseCode, Vec<Ipv4Addr>) {
    addrs(&ask(server, from, name, RecordType::A, false).await)
}

fn ips(list: &[[u8; 4]]) -> (ResponseCode, Vec<Ipv4Addr>) {
    (
        ResponseCode::NoError,
        list.iter().map(|&o| Ipv4Addr::from(o)).collect(),
    )
}

#[tokio::test]
async fn answers_the_clients_own_networks_names() {
    let upstream = upstream::start().await;
    let (server, addr) = start(table(false), vec![upstream.addr]).await;
    let web = ips(&[[198, 18, 1, 2], [198, 18, 1, 3]]);
    for name in [
        "web",
        "web.front",
        "WEB.Front.",
        "web.",
        "www",
        "www.front",
        "tasks.www",
    ] {
        assert_eq!(a(addr, TASK_A, name).await, web, "{name}");
    }
    assert_eq!(a(addr, TASK_A, "tasks.web").await, web);
    assert_eq!(a(addr, TASK_A, "tasks.web.front").await, web);
    assert_eq!(a(addr, TASK_A, "web.1.aaa").await, ips(&[[198, 18, 1, 2]]));
    assert_eq!(a(addr, TASK_B, "db").await, ips(&[[198, 18, 2, 2]]));
    assert_eq!(a(addr, TASK_B, "db.back").await, ips(&[[198, 18, 2, 2]]));

    // Answers are authoritative and carry TTL 0: nothing may cache a task's address.
    let answer = ask(addr, TASK_A, "web", RecordType::A, false).await;
    assert!(answer.metadata.authoritative);
    assert!(answer.answers.iter().all(|r| r.ttl == 0));
    server.shutdown().await;
}

#[tokio::test]
async fn names_of_other_networks_and_starting_tasks_are_not_answered() {
    // The upstream answers NXDOMAIN for every name it does not know, so a forwarded name shows.
    let upstream = upstream::start().await;
    let (server, addr) = start(table(false), vec![upstream.addr]).await;
    let nx = (ResponseCode::NXDomain, vec![]);
    assert_eq!(a(addr, TASK_A, "db").await, nx);
    assert_eq!(a(addr, TASK_A, "db.back").await, nx);
    assert_eq!(a(addr, TASK_A, "tasks.db").await, nx);
    assert_eq!(a(addr, TASK_B, "web").await, nx);
    assert_eq!(a(addr, TASK_B, "web.1.aaa").await, nx);
    assert_eq!(a(addr, TASK_A, "web.3.ccc").await, nx, "not running yet");
    assert_eq!(a(addr, TASK_A, "broken").await, nx, "address did not parse");
    // A task that is not in the table gets no names at all.
    assert_eq!(a(addr, STRANGER, "web").await, nx);
    server.shutdown().await;
}

#[tokio::test]
async fn aaaa_for_a_known_name_is_empty_noerror() {
    let upstream = upstream::start().await;
    let (server, addr) = start(table(false), vec![upstream.addr]).await;
    let answer = ask(addr, TASK_A, "web", RecordType::AAAA, false).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.answers.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn a_table_swap_takes_effect_at_once() {
    let upstream = upstream::start().await;
    let (server, addr) = start(table(false), vec![upstream.addr]).await;
    assert_eq!(a(addr, TASK_A, "web.3.ccc").await.0, ResponseCode::NXDomain);
    server.update(table(true));
    let three = ips(&[[198, 18, 1, 2], [198, 18, 1, 3], [198, 18, 1, 4]]);
    assert_eq!(a(addr, TASK_A, "tasks.web").await, three);
    assert_eq!(a(addr, TASK_A, "web.3.ccc").await, ips(&[[198, 18, 1, 4]]));
    // And back: a task that stops leaves DNS with the next table.
    server.update(table(false));
    assert_eq!(a(addr, TASK_A, "web.3.ccc").await.0, ResponseCode::NXDomain);
    server.shutdown().await;
}

#[tokio::test]
async fn answers_over_tcp() {
    let upstream = upstream::start().await;
    let (server, addr) = start(table(false), vec![upstream.addr]).await;
    let answer = ask(addr, TASK_A, "tasks.web", RecordType::A, true).await;
    assert_eq!(addrs(&answer), ips(&[[198, 18, 1, 2], [198, 18, 1, 3]]));
    server.shutdown().await;
}

#[test]
fn vip_services_answer_their_vip_and_dnsrr_ones_their_tasks() {
    let mut tables = peers(false);
    tables[0].services.push(shoal_proto::ServiceVip {
        service_id: "id-web".into(),
        service_name: "web".into(),
        aliases: vec!["www".into()],
        vip: "198.18.1.100".into(),
        ports: vec![],
    });
    // A VIP service with no task running still answers (its VIP refuses connections at once).
    tables[0].services.push(shoal_proto::ServiceVip {
        service_id: "id-idle".into(),
        service_name: "idle".into(),
        aliases: vec![],
        vip: "198.18.1.101".into(),
        ports: vec![],
    });
    let mut ingress = network("net-ingress", "ingress", vec![]);
    if let Some(spec) = ingress.network.as_mut().and_then(|n| n.spec.as_mut()) {
        spec.ingress = true;
    }
    ingress.endpoints = vec![endpoint("mesh.1.fff", "mesh", "198.18.3.2", true)];
    tables.push(ingress);
    let mut c = clients(vec![]);
    c[0].networks.push("net-ingress".into());
    let table = DnsTable::new(&tables, c);
    let local = |name: &str| match table.resolve(IpAddr::from(TASK_A), name, true) {
        Resolution::Local(mut a) => {
            a.sort();
            Some(a)
        }
        Resolution::Forward(_) => None,
    };
    let vip = vec![Ipv4Addr::new(198, 18, 1, 100)];
    assert_eq!(local("web"), Some(vip.clone()));
    assert_eq!(local("www.front"), Some(vip));
    assert_eq!(
        local("tasks.web"),
        Some(vec![
            Ipv4Addr::new(198, 18, 1, 2),
            Ipv4Addr::new(198, 18, 1, 3)
        ])
    );
    assert_eq!(local("idle"), Some(vec![Ipv4Addr::new(198, 18, 1, 101)]));
    // db has no VIP (dnsrr): its task's address.
    assert_eq!(
        table.resolve(IpAddr::from(TASK_B), "db", true),
        Resolution::Local(vec![Ipv4Addr::new(198, 18, 2, 2)])
    );
    assert_eq!(local("mesh"), None, "the ingress network has no names");
}
