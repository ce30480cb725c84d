//! Task networking on real containers: every task gets its own network namespace with an
//! address on the node's outbound bridge and the node's DNS server in its resolv.conf; tasks
//! on an overlay network reach each other across hosts by IP and by name, overlays are
//! isolated, and nothing is left behind when the service and network go. Every address is
//! inside 198.18.0.0/15 (test hosts 198.18.0.0/17, the swarm pool 198.18.128.0/17, outbound
//! bridges 198.19.0.0/16).

use std::time::Duration;

use shoal_tests::cluster::TestCluster;
use shoal_tests::daemon::{wait_until, words, Container, ShoalHost};
use shoal_tests::tasknet::{eth0_addr, lookup, node_state, service_vips, wait_back_to};

const WAIT: Duration = Duration::from_secs(60);

// Debian's static busybox 1.35 `wget` crashes when given its own timeout (-T): the probes bound
// it with busybox `timeout` instead.

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
    let mut host = ShoalHost::start_swarm();
    host.shoal_ok(&words(
        "service create --name solo --hostname solo-host --dns-search corp.test \
         --dns-option ndots:2 busybox sleep 3600",
    ));
    let task = running(&host, "solo", 1).remove(0).id;

    // The namespace the worker built, and holds, is the container's.
    assert_eq!(host.held_namespaces(), vec![host.task_netns_id(&task)]);
    let gw = gateway(&host);
    let resolv = host
        .sh_in_task(&task, "cat /etc/resolv.conf")
        .expect("read resolv.conf");
    assert!(
        resolv.contains(&format!("nameserver {gw}")),
        "the task's resolv.conf points at the node's DNS server on {gw}:\n{resolv}"
    );
    assert!(
        resolv.contains("search corp.test") && resolv.contains("options ndots:2"),
        "--dns-search and --dns-option reach resolv.conf:\n{resolv}"
    );
    assert_eq!(
        host.sh_in_task(&task, "hostname").expect("hostname").trim(),
        "solo-host"
    );
    let addrs = host
        .sh_in_task(&task, "ip -o -4 addr show")
        .expect("list addresses");
    let subnet = gw.rsplit_once('.').map_or("", |(net, _)| net);
    assert!(
        addrs.contains(&format!("eth0    inet {subnet}."))
            || addrs.contains(&format!("inet {subnet}.")),
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
    assert!(
        host.host_links().contains(&host_end),
        "{:?}",
        host.host_links()
    );

    // `--network none`: loopback only, no namespace of ours, no bridge port.
    let err = host.shoal_err(&words(
        "service create --name bad --network none --network front busybox sleep 1",
    ));
    assert!(
        err.contains("cannot be combined with other networks"),
        "{err}"
    );
    host.shoal_ok(&words(
        "service create --name dark --network none busybox sleep 3600",
    ));
    let dark = running(&host, "dark", 1).remove(0).id;
    let links = host.sh_in_task(&dark, "ip -o link show").expect("links");
    assert_eq!(links.lines().count(), 1, "loopback only:\n{links}");
    assert!(!host.held_namespaces().contains(&host.task_netns_id(&dark)));
    assert_eq!(
        host.held_namespaces().len(),
        1,
        "only solo's namespace is held"
    );
    host.shoal_ok(&["service", "rm", "dark"]);

    host.shoal_ok(&["service", "rm", "solo"]);
    host.wait_for(WAIT, "the task's namespace and veth to go", || {
        host.held_namespaces().is_empty() && !host.host_links().contains(&host_end)
    });
    assert!(wait_until(Duration::from_secs(5), || host
        .containers()
        .is_empty()));

    // Task namespaces were bind mounts under netns/tasks before the daemon held them by
    // descriptor: a daemon started over what an older one left there removes it, mounts and
    // directory.
    host.kill9();
    let old = host.netns_dir().join("tasks");
    std::fs::create_dir_all(&old).expect("the old task namespace directory");
    // As the older daemon made it: the directory a shared mount of its own, a namespace
    // bind-mounted on a file in it.
    let leftover = old.join("old-task");
    std::fs::write(&leftover, b"").expect("a mount point");
    let sh = |script: String| {
        let status = std::process::Command::new("sh")
            .args(["-c", &script])
            .status()
            .expect("run sh");
        assert!(status.success(), "{script}");
    };
    sh(format!(
        "mount --bind {dir} {dir} && mount --make-shared {dir} && unshare --net={file} true",
        dir = old.display(),
        file = leftover.display()
    ));
    host.start_daemon();
    host.wait_for(WAIT, "the old task namespaces to go", || !old.exists());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mountinfo.contains(old.to_string_lossy().as_ref()),
        "{mountinfo}"
    );
}

#[test]
fn overlay_tasks_reach_each_other_by_ip_and_name_across_hosts_and_overlays_are_isolated() {
    let mut cluster = TestCluster::new(2);
    cluster.form(1, 1);
    cluster.load_busybox_everywhere();
    let (m, w) = (cluster.host(0), cluster.host(1));
    // Nothing here is ever forwarded beyond the test network: names the swarm does not know go
    // to a test host where no DNS server listens.
    let no_dns = format!("--dns {}", cluster.net().host_addr(1));
    // After the swarm formed, the outbound bridges exist: what a node has with no task.
    let idle = [node_state(m), node_state(w)];

    // `--network` needs a manager, as every service command does.
    let err = w.shoal_err(&words(
        "service create --name x --network front busybox sleep 1",
    ));
    assert!(err.contains("not a swarm manager"), "{err}");

    m.shoal_ok(&words("network create --driver overlay front"));
    m.shoal_ok(&words("network create --driver overlay back"));
    let web_create = format!(
        "service create --name web --network front --replicas 2 --replicas-max-per-node 1 \
         {no_dns} busybox sh -c"
    );
    let mut args = words(&web_create);
    args.push("mkdir -p /www && hostname > /www/index.html && httpd -f -p 80 -h /www");
    m.shoal_ok(&args);
    m.shoal_ok(&words(&format!(
        "service create --name client --network front --constraint node.role==worker \
         {no_dns} busybox sleep 3600"
    )));
    m.shoal_ok(&words(&format!(
        "service create --name other --network back --constraint node.role==manager \
         {no_dns} busybox sleep 3600"
    )));
    let client = running(w, "client", 1).remove(0).id;
    let other = running(m, "other", 1).remove(0).id;
    let web_m = running(m, "web", 1).remove(0).id;
    let web_w = running(w, "web", 1).remove(0).id;
    let mut web_ips = vec![eth0_addr(m, &web_m), eth0_addr(w, &web_w)];
    web_ips.sort();
    let other_ip = eth0_addr(m, &other);

    // The outside of the node: the other host's underlay address, through the outbound bridge.
    w.sh_in_task(
        &client,
        &format!("ping -c 1 -W 2 {}", cluster.net().host_addr(0)),
    )
    .expect("a task reaches the outside of its node");

    // Across hosts over the overlay, by IP, by service name, and every task by tasks.NAME.
    for ip in &web_ips {
        w.sh_in_task(&client, &format!("ping -c 1 -W 2 {ip}"))
            .expect("the client reaches a web task by IP");
    }
    let page = w
        .sh_in_task(&client, "timeout 10 wget -q -O - http://web/")
        .expect("the client reaches web by name");
    assert!(!page.trim().is_empty());
    assert_eq!(lookup(w, &client, "tasks.web"), web_ips);
    // The service name answers its VIP (vip mode, the default); tasks.NAME the tasks.
    assert_eq!(lookup(w, &client, "web.front"), service_vips(m, "web"));

    // The other overlay is out of reach, by address and by name.
    assert!(w
        .sh_in_task(&client, &format!("ping -c 1 -W 1 {other_ip}"))
        .is_err());
    assert!(lookup(w, &client, "other").is_empty());

    // An internal network's task resolves names but never leaves its node.
    m.shoal_ok(&words("network create --driver overlay --internal sealed"));
    m.shoal_ok(&words(&format!(
        "service create --name vault --network sealed --constraint node.role==worker \
         {no_dns} busybox sleep 3600"
    )));
    let vault = running(w, "vault", 1).remove(0).id;
    let vault_ip = eth0_addr(w, &vault);
    assert_eq!(lookup(w, &vault, "tasks.vault"), vec![vault_ip]);
    assert_eq!(lookup(w, &vault, "vault"), service_vips(m, "vault"));
    let routes = w.sh_in_task(&vault, "ip route").expect("routes");
    assert!(!routes.contains("default"), "{routes}");
    // And should it craft packets anyway, the node drops what it would forward for it.
    let rules = w.nft_ruleset();
    assert!(
        rules.contains("ip saddr") && rules.contains("drop"),
        "{rules}"
    );
    assert!(w
        .sh_in_task(
            &vault,
            &format!("ping -c 1 -W 1 {}", cluster.net().host_addr(0))
        )
        .is_err());

    // Scale down: the gone task leaves DNS; scale up again: a fresh address, no conflict.
    m.shoal_ok(&words("service scale web=1"));
    assert!(
        wait_until(WAIT, || lookup(w, &client, "tasks.web").len() == 1),
        "tasks.web still lists {:?}",
        lookup(w, &client, "tasks.web")
    );
    m.shoal_ok(&words("service scale web=2"));
    assert!(
        wait_until(WAIT, || {
            let ips = lookup(w, &client, "tasks.web");
            ips.len() == 2 && ips[0] != ips[1]
        }),
        "tasks.web lists {:?}",
        lookup(w, &client, "tasks.web")
    );
    for ip in lookup(w, &client, "tasks.web") {
        w.sh_in_task(&client, &format!("ping -c 1 -W 2 {ip}"))
            .expect("a re-scaled web task is reachable");
    }

    // A worker daemon killed with -9 and started again adopts its tasks, networks and all; a
    // task removed while it was down loses its container and network namespace on restart.
    let vault_ns = cluster.host(1).task_netns_id(&vault);
    cluster.host_mut(1).kill9();
    cluster.host(0).shoal_ok(&words("service rm vault"));
    cluster.host_mut(1).restart();
    let (m, w) = (cluster.host(0), cluster.host(1));
    assert!(
        wait_until(WAIT, || w
            .sh_in_task(&client, "timeout 3 wget -q -O - http://web/")
            .is_ok()),
        "the client reaches web by name after its daemon's kill -9 and restart"
    );
    w.wait_for(WAIT, "the removed task's namespace to go", || {
        !w.held_namespaces().contains(&vault_ns)
    });

    // Removing the services and the networks leaves each node as it was with no task.
    m.shoal_ok(&words("service rm web client other"));
    wait_back_to(&[m, w], &idle, "task networking");
    m.shoal_ok(&words("network rm front back sealed"));
}
