//! Names the node does not own go to the task's `--dns` servers or the node's upstreams, with
//! SERVFAIL when none answers in time.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;

use super::upstream::{self, FIXED_NAME};
use super::{
    a, addrs, ask, clients, ips, peers, start, start_with_timeout, table, STRANGER, TASK_A, TASK_B,
};
use crate::dns::DnsTable;

#[tokio::test]
async fn forwards_other_names_to_the_node_upstream_over_udp_and_tcp() {
    let upstream = upstream::start().await;
    let (server, addr) = start(table(false), vec![upstream.addr]).await;
    let fixed = ips(&[[198, 18, 0, 99]]);
    assert_eq!(a(addr, TASK_A, FIXED_NAME).await, fixed);
    assert_eq!(a(addr, STRANGER, FIXED_NAME).await, fixed);
    let over_tcp = ask(addr, TASK_B, FIXED_NAME, RecordType::A, true).await;
    assert_eq!(addrs(&over_tcp), fixed);
    // The upstream's TTL is relayed as it is (only our own names have TTL 0).
    let answer = ask(addr, TASK_A, FIXED_NAME, RecordType::A, false).await;
    assert!(answer.answers.iter().all(|r| r.ttl == 60));
    assert!(!answer.metadata.authoritative);
    server.shutdown().await;
}

#[tokio::test]
async fn a_task_with_its_own_dns_servers_uses_them() {
    let node_default = upstream::start().await;
    let own = upstream::start_with(Ipv4Addr::new(198, 18, 0, 98)).await;
    let table = DnsTable::new(&peers(false), clients(vec![own.addr]));
    let (server, addr) = start(table, vec![node_default.addr]).await;
    assert_eq!(a(addr, TASK_B, FIXED_NAME).await, ips(&[[198, 18, 0, 98]]));
    assert_eq!(a(addr, TASK_A, FIXED_NAME).await, ips(&[[198, 18, 0, 99]]));
    // Its own names still come from the table, not from its servers.
    assert_eq!(a(addr, TASK_B, "db").await, ips(&[[198, 18, 2, 2]]));
    server.shutdown().await;
}

#[tokio::test]
async fn servfail_when_no_upstream_answers() {
    let silent = upstream::silent().await;
    let (server, addr) = start(table(false), vec![silent.addr]).await;
    let servfail = (ResponseCode::ServFail, vec![]);
    assert_eq!(a(addr, TASK_A, FIXED_NAME).await, servfail);
    let over_tcp = ask(addr, TASK_A, FIXED_NAME, RecordType::A, true).await;
    assert_eq!(addrs(&over_tcp), servfail);
    // Our own names do not depend on any upstream.
    assert_eq!(a(addr, TASK_A, "web.1.aaa").await, ips(&[[198, 18, 1, 2]]));
    server.shutdown().await;

    // No upstream at all (a host without resolv.conf entries): SERVFAIL at once.
    let (server, addr) = start(table(false), vec![]).await;
    assert_eq!(a(addr, TASK_A, FIXED_NAME).await, servfail);
    // A task whose --dns names the node's own server: no forwarding loop, SERVFAIL.
    server.update(DnsTable::new(&peers(false), clients(vec![addr])));
    assert_eq!(a(addr, TASK_B, FIXED_NAME).await, servfail);
    server.shutdown().await;
}

#[tokio::test]
async fn the_next_upstream_answers_when_the_first_is_dead() {
    let silent = upstream::silent().await;
    let good = upstream::start().await;
    let (server, addr) = start(table(false), vec![silent.addr, good.addr]).await;
    assert_eq!(a(addr, TASK_A, FIXED_NAME).await, ips(&[[198, 18, 0, 99]]));
    server.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_refuses_fails_at_once_and_the_next_one_answers() {
    // A port nothing listens on: the kernel answers "port unreachable", which a connected
    // socket sees at once. The forward timeout is far longer than the test client's own
    // (5 s): an answer at all means the refusal was not waited out.
    let refused: SocketAddr = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a free port");
        socket.local_addr().expect("its address")
    };
    let good = upstream::start().await;
    let long = Duration::from_secs(60);
    let (server, addr) = start_with_timeout(table(false), vec![refused], long).await;
    assert_eq!(
        a(addr, TASK_A, FIXED_NAME).await,
        (ResponseCode::ServFail, vec![])
    );
    server.shutdown().await;
    let (server, addr) = start_with_timeout(table(false), vec![refused, good.addr], long).await;
    assert_eq!(a(addr, TASK_A, FIXED_NAME).await, ips(&[[198, 18, 0, 99]]));
    server.shutdown().await;
}
