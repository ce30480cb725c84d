//! Task networking on real containers: every task gets its own network namespace with an
//! address on the node's outbound bridge and the node's DNS server in its resolv.conf; tasks
//! on an overlay network reach each other across hosts by IP and by name, overlays are
//! isolated, and nothing is left behind when the service and network go. Every address is
//! inside 198.18.0.0/15 (test hosts 198.18.0.0/17, the swarm pool 198.18.128.0/17, outbound
//! bridges 198.19.0.0/16).

use std::time::Duration;

use shoal_tests::daemon::{wait_until, words, Container, ShoalHost};

const WAIT: Duration = Duration::from_secs(60);

fn running(host: &ShoalHost, service: &str, n: usize) -> Vec<Container> {
    let mut found = Vec::new();
    host.wait_for(WAIT, &format!("{n} running tasks of {service}"), || {
        found = host.running_containers_of(service);
        found.len() == n
    });
    found
}

/// The bridge's address without prefix, e.g. 198.19.7.1.
fn gateway(host: &ShoalHost) -> String {
    let (_, bip) = host.bridge();
    bip.split('/').next().unwrap_or(bip).to_string()
}

#[test]
fn every_task_gets_a_namespace_on_the_outbound_bridge_and_the_nodes_dns() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words("service create --name solo busybox sleep 3600"));
    let task = running(&host, "solo", 1).remove(0).id;

    // The namespace the worker built, named after the task, is the container's.
    assert_eq!(host.namespaces("tasks"), vec![task.clone()]);
    let gw = gateway(&host);
    let resolv = host
        .sh_in_task(&task, "cat /etc/resolv.conf")
        .expect("read resolv.conf");
    assert!(
        resolv.contains(&format!("nameserver {gw}")),
        "the task's resolv.conf points at the node's DNS server on {gw}:\n{resolv}"
    );
    let addrs = host
        .sh_in_task(&task, "ip -o -4 addr show")
        .expect("list addresses");
    let subnet = gw.rsplit_once('.').map_or("", |(net, _)| net);
    assert!(
        addrs.contains(&format!("eth0    inet {subnet}.")) || addrs.contains(&format!("inet {subnet}.")),
        "eth0 has an address on the outbound bridge {subnet}.0/24:\n{addrs}"
    );
    let route = host.sh_in_task(&task, "ip route").expect("routes");
    assert!(
        route.contains(&format!("default via {gw}")),
        "the default route goes through the bridge:\n{route}"
    );
    host.sh_in_task(&task, &format!("ping -c 1 -W 2 {gw}"))
        .expect("the task reaches its node through the bridge");
    let host_end = format!("gw{}", &task[..12]);
    assert!(host.host_links().contains(&host_end), "{:?}", host.host_links());

    host.shoal_ok(&["service", "rm", "solo"]);
    host.wait_for(WAIT, "the task's namespace and veth to go", || {
        host.namespaces("tasks").is_empty() && !host.host_links().contains(&host_end)
    });
    assert!(wait_until(Duration::from_secs(5), || host.containers().is_empty()));
}
