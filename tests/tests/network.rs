//! `shoal network` against a real daemon: overlay networks are created with the subnet, gateway
//! and VXLAN ID the allocator gives them, listed, inspected and removed; bad input is refused
//! with what was wrong and what to do, and leaves the stored networks as they were. Every subnet
//! here is inside 198.18.0.0/15. Services attach to networks: each task gets an address the
//! allocator hands out, shown by `network inspect`, never one a live task holds; a network in
//! use is not removed. (The worker does not plumb the addresses into the tasks here: these tests
//! check what the managers record.)

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use shoal_tests::daemon::{words, ShoalHost};
use shoal_tests::table::parse_table;

/// `network ls`, keyed by name, for before/after comparisons.
fn networks(host: &ShoalHost) -> BTreeMap<String, BTreeMap<String, String>> {
    parse_table(&host.shoal_ok(&["network", "ls"]))
        .into_iter()
        .map(|row| (row.get("NAME").cloned().unwrap_or_default(), row))
        .collect()
}

fn inspect(host: &ShoalHost, name: &str) -> Value {
    let out = host.shoal_ok(&["network", "inspect", name]);
    let all: Value = serde_json::from_str(&out).expect("network inspect prints JSON");
    all.as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_else(|| panic!("network inspect {name} printed no object:\n{out}"))
}

fn vni(network: &Value) -> u64 {
    network["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VXLAN ID in {network:#}"))
}

#[test]
fn networks_are_created_listed_inspected_and_removed() {
    let host = ShoalHost::start_swarm();
    let id = host.shoal_ok(&words(
        "network create --driver overlay --subnet 198.18.64.0/24 --label tier=front front",
    ));
    let id = id.trim();
    assert!(
        id.len() >= 12,
        "network create prints the new ID, got {id:?}"
    );
    host.shoal_ok(&words(
        "network create --subnet 198.18.65.0/24 --gateway 198.18.65.254 --attachable back",
    ));

    // With swarm init's `ingress`, the routing mesh's network.
    let listed = networks(&host);
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        ["back", "front", "ingress"]
    );
    for row in listed.values() {
        assert_eq!(row["DRIVER"], "overlay");
        assert_eq!(row["SCOPE"], "swarm");
    }
    assert!(id.starts_with(&listed["front"]["NETWORK ID"]));
    let quiet = host.shoal_ok(&["network", "ls", "-q"]);
    assert_eq!(quiet.lines().count(), 3, "{quiet}");

    let front = inspect(&host, "front");
    assert_eq!(front["Name"], "front");
    assert_eq!(front["Driver"], "overlay");
    assert_eq!(front["Labels"]["tier"], "front");
    assert_eq!(front["IPAM"]["Config"][0]["Subnet"], "198.18.64.0/24");
    assert_eq!(front["IPAM"]["Config"][0]["Gateway"], "198.18.64.1");
    let back = inspect(&host, "back");
    assert_eq!(back["IPAM"]["Config"][0]["Gateway"], "198.18.65.254");
    assert_eq!(back["Attachable"], true);
    assert!(vni(&front) >= 4096 && vni(&back) >= 4096);
    assert_ne!(
        vni(&front),
        vni(&back),
        "two networks never share a VXLAN ID"
    );
    // Found by ID prefix too, as docker does.
    assert_eq!(inspect(&host, &id[..6])["Name"], "front");

    let removed = host.shoal_ok(&["network", "rm", "front"]);
    assert_eq!(removed.trim(), "front");
    assert_eq!(
        networks(&host).keys().collect::<Vec<_>>(),
        ["back", "ingress"]
    );
    let err = host.shoal_err(&["network", "inspect", "front"]);
    assert!(err.contains("front"), "{err}");
    // Its subnet is free again.
    host.shoal_ok(&words("network create --subnet 198.18.64.0/24 front2"));
}

#[test]
fn bad_network_input_is_refused_and_creates_nothing() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words("network create --subnet 198.18.64.0/24 front"));
    let before = networks(&host);
    let cases: &[(&str, &[&str])] = &[
        (
            "network create --subnet 198.18.66.0/24 front",
            &["front", "already exists"],
        ),
        (
            "network create --subnet 198.18.64.128/25 back",
            &["198.18.64.128/25", "overlaps", "front"],
        ),
        (
            // Overlaps front and ingress both; either may be named.
            "network create --subnet 198.18.0.0/15 back",
            &["overlaps", "198.18.0.0/15"],
        ),
        (
            "network create --subnet nonsense back",
            &["invalid subnet", "nonsense"],
        ),
        (
            "network create --subnet 198.18.66.5/24 back",
            &["198.18.66.0/24"],
        ),
        (
            "network create --subnet 198.18.66.0/30 back",
            &["too small", "/29"],
        ),
        (
            "network create --subnet 198.18.66.0/24 --gateway 198.18.67.1 back",
            &["gateway", "198.18.67.1", "198.18.66.0/24"],
        ),
        (
            "network create --gateway 198.18.66.1 back",
            &["--gateway", "--subnet"],
        ),
        (
            "network create --driver bridge back",
            &["bridge", "overlay"],
        ),
        ("network create bad.name", &["invalid network name"]),
        ("network rm nosuchnet", &["nosuchnet"]),
        ("network inspect nosuchnet", &["nosuchnet"]),
    ];
    for (command, expected) in cases {
        let err = host.shoal_err(&words(command));
        for e in *expected {
            assert!(
                err.to_lowercase().contains(&e.to_lowercase()),
                "`shoal {command}` should mention {e:?}; it said:\n{err}"
            );
        }
        assert_eq!(
            networks(&host),
            before,
            "`shoal {command}` changed the networks"
        );
    }
}

#[test]
fn networks_need_a_swarm_manager() {
    let host = ShoalHost::start();
    for command in ["network create --subnet 198.18.64.0/24 front", "network ls"] {
        let err = host.shoal_err(&words(command));
        assert!(
            err.contains("not a swarm manager") && err.contains("swarm init"),
            "`shoal {command}` on a node outside a swarm said:\n{err}"
        );
    }
}

#[test]
fn subnets_come_from_the_swarms_address_pool() {
    // The harness's `swarm init` passes --default-addr-pool TEST_ADDR_POOL (198.18.128.0/17).
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words("network create first"));
    host.shoal_ok(&words("network create --subnet 198.18.130.0/24 mine"));
    host.shoal_ok(&words("network create third"));
    let subnet = |name: &str| inspect(&host, name)["IPAM"]["Config"][0]["Subnet"].clone();
    // Swarm init's ingress network took the pool's first subnet.
    assert_eq!(subnet("ingress"), "198.18.128.0/24");
    assert_eq!(subnet("first"), "198.18.129.0/24");
    // The user's subnet inside the pool is skipped by the allocator.
    assert_eq!(subnet("third"), "198.18.131.0/24");
    assert_eq!(
        inspect(&host, "third")["IPAM"]["Config"][0]["Gateway"],
        "198.18.131.1"
    );

    // A pool the flags describe wrongly is refused before anything starts.
    let other = ShoalHost::start();
    for (flags, expected) in [
        ("--default-addr-pool 198.18.128.5/17", "198.18.128.0/17"),
        ("--default-addr-pool nonsense", "nonsense"),
        (
            "--default-addr-pool 198.18.128.0/17 --default-addr-pool-mask-length 30",
            "out of range",
        ),
        (
            "--default-addr-pool 198.18.128.0/17 --default-addr-pool-mask-length 16",
            "shorter than the pool",
        ),
    ] {
        let err = other.shoal_err(&words(&format!("swarm init {flags}")));
        assert!(err.contains(expected), "`swarm init {flags}` said:\n{err}");
    }
    let info = other.shoal_ok(&["info"]);
    assert!(
        info.contains("Swarm: inactive"),
        "a refused swarm init left the node in a swarm:\n{info}"
    );
}

/// The live tasks `network inspect` lists on `network`: task ID → address (CIDR).
fn attached(host: &ShoalHost, network: &str) -> BTreeMap<String, String> {
    inspect(host, network)["Containers"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(id, e)| (id.clone(), e["IPv4Address"].as_str().unwrap_or("").into()))
                .collect()
        })
        .unwrap_or_default()
}

fn wait_attached(host: &ShoalHost, network: &str, n: usize) -> BTreeMap<String, String> {
    let mut last = BTreeMap::new();
    host.wait_for(
        Duration::from_secs(30),
        &format!("{n} tasks with addresses on {network}"),
        || {
            last = attached(host, network);
            last.len() == n
        },
    );
    last
}

#[test]
fn service_tasks_get_addresses_on_their_network_and_never_share_one() {
    let host = ShoalHost::start_swarm();
    host.load_busybox();
    host.shoal_ok(&words("network create --subnet 198.18.70.0/24 front"));
    host.shoal_ok(&words(
        "service create -d --name web --replicas 3 --network name=front,alias=www busybox sleep 600",
    ));
    let first = wait_attached(&host, "front", 3);
    let addrs: BTreeSet<&String> = first.values().collect();
    assert_eq!(addrs.len(), 3, "three tasks, three addresses: {first:?}");
    for a in &addrs {
        assert!(
            a.starts_with("198.18.70.") && a.ends_with("/24") && a.as_str() != "198.18.70.1/24",
            "{a} is not a task address of 198.18.70.0/24"
        );
    }
    let pretty = host.shoal_ok(&words("service inspect --pretty web"));
    assert!(pretty.contains("front (aliases: www)"), "{pretty}");

    // Scale down and up again: the new tasks never take an address a live task holds.
    host.shoal_ok(&words("service scale -d web=1"));
    let one = wait_attached(&host, "front", 1);
    host.shoal_ok(&words("service scale -d web=3"));
    let again = wait_attached(&host, "front", 3);
    let again_addrs: BTreeSet<&String> = again.values().collect();
    assert_eq!(again_addrs.len(), 3, "{again:?}");
    for (id, addr) in &one {
        assert_eq!(
            again.get(id),
            Some(addr),
            "the surviving task kept its address"
        );
    }
}

#[test]
fn networks_in_use_stay_and_unknown_networks_create_nothing() {
    let host = ShoalHost::start_swarm();
    host.load_busybox();
    host.shoal_ok(&words("network create --subnet 198.18.71.0/24 front"));

    let err = host.shoal_err(&words(
        "service create -d --name ghost --network nosuchnet busybox sleep 600",
    ));
    assert!(err.contains("network nosuchnet not found"), "{err}");
    let err = host.shoal_err(&words(
        "service create -d --name twice --network front --network name=front,alias=x busybox",
    ));
    assert!(err.contains("front") && err.contains("twice"), "{err}");
    let err = host.shoal_err(&words(
        "service create -d --name bad --network alias=x busybox",
    ));
    assert!(err.contains("name= is required"), "{err}");
    let err = host.shoal_err(&words("service create -d --name bad --dns nope busybox"));
    assert!(err.contains("invalid --dns value"), "{err}");
    assert!(
        host.service_ls().is_empty(),
        "a refused create stored a service"
    );

    host.shoal_ok(&words(
        "service create -d --name web --network front busybox sleep 600",
    ));
    wait_attached(&host, "front", 1);
    let err = host.shoal_err(&words("network rm front"));
    assert!(
        err.contains("in use by service web") && err.contains("--network-rm front web"),
        "{err}"
    );
    assert!(
        networks(&host).contains_key("front"),
        "a network in use was removed"
    );

    // Leaving the network by update: the task is replaced by one without it.
    host.shoal_ok(&words("service update -d --network-rm front web"));
    wait_attached(&host, "front", 0);
    host.shoal_ok(&words(
        "service update -d --network-add front --hostname h1 web",
    ));
    wait_attached(&host, "front", 1);

    host.shoal_ok(&words("service rm web"));
    // The task still holds its address until its worker has stopped it.
    host.wait_for(
        Duration::from_secs(30),
        "network rm once the tasks stopped",
        || host.shoal(&words("network rm front")).status.success(),
    );
    assert!(!networks(&host).contains_key("front"));
}
