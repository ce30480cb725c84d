//! Service endpoints against a real daemon: published ports are allocated cluster-wide (a port
//! another service publishes is refused by name, `--publish 80` gets one from 30000-32767, a
//! removed service frees its port), `--network` in vip mode gives the service a VIP from the
//! network's subnet that no task holds, dnsrr gives none, and bad `--publish` values are
//! refused with what was wrong, storing nothing. `service ls` and `service inspect` show it as
//! docker does. Swarm init makes the `ingress` network (the routing mesh's): services with
//! routing-mesh ports get a VIP on it and their tasks an address, it cannot be named by a
//! service nor removed while a service publishes through it, and a change of ports alone
//! replaces the tasks. These check what the managers record; the data path is tested apart.
//! Every address is inside 198.18.0.0/15.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::daemon::{words, ShoalHost};

fn inspect_service(host: &ShoalHost, name: &str) -> Value {
    let out = host.shoal_ok(&["service", "inspect", name]);
    let all: Value = serde_json::from_str(&out).expect("service inspect prints JSON");
    all.as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_else(|| panic!("service inspect {name} printed no object:\n{out}"))
}

/// The PORTS cell of `service ls` for `name`.
fn ls_ports(host: &ShoalHost, name: &str) -> String {
    host.service_ls()
        .into_iter()
        .find(|row| row.get("NAME").map(String::as_str) == Some(name))
        .and_then(|row| row.get("PORTS").cloned())
        .unwrap_or_else(|| panic!("service {name} not in service ls"))
}

fn names(host: &ShoalHost) -> Vec<String> {
    host.service_ls()
        .into_iter()
        .filter_map(|row| row.get("NAME").cloned())
        .collect()
}

#[test]
fn published_ports_are_allocated_once_and_shown_as_docker_does() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words(
        "service create -d --name web --publish 8080:80 busybox sleep 600",
    ));
    assert_eq!(ls_ports(&host, "web"), "*:8080->80/tcp");
    let web = inspect_service(&host, "web");
    let port = &web["Endpoint"]["Ports"][0];
    assert_eq!(port["PublishedPort"], 8080, "{web:#}");
    assert_eq!(port["TargetPort"], 80);
    assert_eq!(port["Protocol"], "tcp");
    assert_eq!(port["PublishMode"], "ingress");
    assert_eq!(web["Endpoint"]["Spec"]["Mode"], "vip");
    let pretty = host.shoal_ok(&words("service inspect --pretty web"));
    assert!(
        pretty.contains("Endpoint Mode:") && pretty.contains("vip"),
        "{pretty}"
    );
    assert!(
        pretty.contains("PublishedPort:") && pretty.contains("8080"),
        "{pretty}"
    );

    // Another service may not publish 8080/tcp; nothing is stored.
    let err = host.shoal_err(&words(
        "service create -d --name api --publish 8080:81 busybox sleep 600",
    ));
    assert!(
        err.contains("port 8080/tcp is already published by service web"),
        "{err}"
    );
    assert_eq!(names(&host), ["web"]);

    // No published port: one from docker's dynamic range.
    host.shoal_ok(&words(
        "service create -d --name dyn --publish 80 busybox sleep 600",
    ));
    let dyn_port = inspect_service(&host, "dyn")["Endpoint"]["Ports"][0]["PublishedPort"]
        .as_u64()
        .expect("a published port was chosen");
    assert!((30000..=32767).contains(&dyn_port), "{dyn_port}");
    assert_eq!(ls_ports(&host, "dyn"), format!("*:{dyn_port}->80/tcp"));

    // An update that adds a port keeps the chosen one; removing the first publisher frees 8080.
    host.shoal_ok(&words("service update -d --publish-add 81 dyn"));
    let dyn_ports = inspect_service(&host, "dyn")["Endpoint"]["Ports"].clone();
    assert_eq!(dyn_ports[0]["PublishedPort"], dyn_port, "{dyn_ports:#}");
    assert_ne!(dyn_ports[1]["PublishedPort"], dyn_port, "{dyn_ports:#}");
    host.shoal_ok(&words("service rm web"));
    host.shoal_ok(&words(
        "service create -d --name api --publish 8080:81 busybox sleep 600",
    ));
    assert_eq!(ls_ports(&host, "api"), "*:8080->81/tcp");
    host.shoal_ok(&words("service update -d --publish-rm 8080 api"));
    assert_eq!(ls_ports(&host, "api"), "");

    // Host mode: not in `service ls` (docker shows it per task, in `service ps`).
    host.shoal_ok(&words(
        "service create -d --name local --publish mode=host,published=9090,target=90 busybox \
         sleep 600",
    ));
    assert_eq!(ls_ports(&host, "local"), "");
    host.wait_for(
        Duration::from_secs(30),
        "the host-mode port on the running task",
        || {
            host.shoal_ok(&words("service ps local"))
                .contains("*:9090->90/tcp")
        },
    );
}

#[test]
fn bad_publish_values_are_refused_and_store_nothing() {
    let host = ShoalHost::start_swarm();
    for (flags, want) in [
        ("--publish 0", "invalid port 0: ports are 1 to 65535"),
        (
            "--publish 70000",
            "invalid port 70000: ports are 1 to 65535",
        ),
        ("--publish 8080:70000", "invalid port 70000"),
        ("--publish 80/sctp", "invalid protocol \"sctp\""),
        (
            "--publish mode=bridge,target=80",
            "invalid publish mode \"bridge\"",
        ),
        (
            "--publish 8080:80 --publish 8080:81",
            "port 8080/tcp is published more than once",
        ),
        (
            "--endpoint-mode dnsrr --publish 8080:80",
            "port published with ingress mode can't be used with dnsrr mode",
        ),
        ("--endpoint-mode roundrobin", "invalid endpoint mode"),
        (
            "--publish mode=host,target=80",
            "mode=host,published=P,target=80",
        ),
    ] {
        let err = host.shoal_err(&words(&format!(
            "service create -d --name bad {flags} busybox sleep 600"
        )));
        assert!(err.contains(want), "{flags}: {err}");
    }
    assert!(
        host.service_ls().is_empty(),
        "a refused create stored a service"
    );
}

#[test]
fn vip_mode_gives_a_vip_no_task_holds_and_dnsrr_none() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words("network create --subnet 198.18.72.0/24 front"));
    let front: Value = serde_json::from_str(&host.shoal_ok(&words("network inspect front")))
        .expect("network inspect prints JSON");
    let front_id = front[0]["Id"].as_str().unwrap_or_default().to_string();
    assert!(!front_id.is_empty(), "{front:#}");
    host.shoal_ok(&words(
        "service create -d --name web --replicas 3 --network front busybox sleep 600",
    ));
    let web = inspect_service(&host, "web");
    let vips = web["Endpoint"]["VirtualIPs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(vips.len(), 1, "{web:#}");
    assert_eq!(vips[0]["NetworkID"], front_id.as_str());
    let vip = vips[0]["Addr"].as_str().unwrap_or_default().to_string();
    assert!(
        vip.starts_with("198.18.72.") && vip.ends_with("/24") && vip != "198.18.72.1/24",
        "{vip} is not an address of front"
    );
    // The tasks get addresses of their own, never the VIP.
    let mut tasks = BTreeSet::new();
    host.wait_for(Duration::from_secs(30), "three tasks on front", || {
        let out = host.shoal_ok(&words("network inspect front"));
        let v: Value = serde_json::from_str(&out).unwrap_or_default();
        tasks = v[0]["Containers"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|e| e["IPv4Address"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        tasks.len() == 3
    });
    assert!(!tasks.contains(&vip), "a task got the VIP {vip}: {tasks:?}");

    // dnsrr: no VIP.
    host.shoal_ok(&words(
        "service create -d --name db --endpoint-mode dnsrr --network front busybox sleep 600",
    ));
    let db = inspect_service(&host, "db");
    assert_eq!(db["Endpoint"]["Spec"]["Mode"], "dnsrr", "{db:#}");
    assert!(db["Endpoint"].get("VirtualIPs").is_none(), "{db:#}");
    let pretty = host.shoal_ok(&words("service inspect --pretty db"));
    assert!(pretty.contains("dnsrr"), "{pretty}");

    // Switching web to dnsrr frees its VIP; back to vip, it gets one again, still no task's.
    host.shoal_ok(&words("service update -d --endpoint-mode dnsrr web"));
    assert!(inspect_service(&host, "web")["Endpoint"]
        .get("VirtualIPs")
        .is_none());
    host.shoal_ok(&words("service update -d --endpoint-mode vip web"));
    let again = inspect_service(&host, "web")["Endpoint"]["VirtualIPs"][0]["Addr"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(again.starts_with("198.18.72."), "{again}");
    assert!(
        !tasks.contains(&again),
        "the VIP {again} is a task's: {tasks:?}"
    );
}

fn inspect_network(host: &ShoalHost, name: &str) -> Value {
    let out = host.shoal_ok(&["network", "inspect", name]);
    let all: Value = serde_json::from_str(&out).expect("network inspect prints JSON");
    all[0].clone()
}

/// The addresses of the live tasks `network inspect` shows on `name`.
fn attached(host: &ShoalHost, name: &str) -> BTreeSet<String> {
    inspect_network(host, name)["Containers"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|e| e["IPv4Address"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn swarm_init_makes_the_ingress_network_and_it_guards_the_routing_mesh() {
    let host = ShoalHost::start_swarm();
    let ls = host.shoal_ok(&words("network ls"));
    let row = ls
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("ingress"))
        .unwrap_or_else(|| panic!("no ingress in network ls:\n{ls}"));
    assert!(row.contains("overlay") && row.contains("swarm"), "{row}");
    let ingress = inspect_network(&host, "ingress");
    assert_eq!(ingress["Ingress"], true, "{ingress:#}");
    // The first subnet of the swarm's address pool (the harness's 198.18.128.0/17).
    assert_eq!(ingress["IPAM"]["Config"][0]["Subnet"], "198.18.128.0/24");
    let ingress_id = ingress["Id"].as_str().unwrap_or_default().to_string();

    // One ingress network; services never name it.
    let err = host.shoal_err(&words("network create --ingress mesh"));
    assert!(
        err.contains("an ingress network already exists: ingress"),
        "{err}"
    );
    let err = host.shoal_err(&words(
        "service create -d --name bad --network ingress busybox sleep 600",
    ));
    assert!(
        err.contains("service cannot be explicitly attached to the ingress network"),
        "{err}"
    );
    assert!(host.service_ls().is_empty());

    // A routing-mesh port: a VIP on ingress, and the task gets an address on it.
    host.shoal_ok(&words(
        "service create -d --name web --publish 8080:80 busybox sleep 600",
    ));
    let web = inspect_service(&host, "web");
    let vips = web["Endpoint"]["VirtualIPs"].clone();
    assert_eq!(vips[0]["NetworkID"], ingress_id.as_str(), "{web:#}");
    let vip = vips[0]["Addr"].as_str().unwrap_or_default().to_string();
    assert!(vip.starts_with("198.18.128."), "{vip}");
    host.wait_for(Duration::from_secs(30), "web's task on ingress", || {
        attached(&host, "ingress").len() == 1
    });
    assert!(!attached(&host, "ingress").contains(&vip));

    // Not removed while web publishes through it.
    let err = host.shoal_err(&words("network rm ingress"));
    assert!(
        err.contains("ingress-mode published ports") && err.contains("web"),
        "{err}"
    );
    // Once nothing publishes, it may go (when the task has stopped), as docker allows.
    host.shoal_ok(&words("service rm web"));
    host.wait_for(
        Duration::from_secs(30),
        "network rm ingress once web's task stopped",
        || host.shoal(&words("network rm ingress")).status.success(),
    );
    // Without one, routing-mesh ports are refused with what to do; host mode needs none.
    let err = host.shoal_err(&words(
        "service create -d --name web --publish 8080:80 busybox sleep 600",
    ));
    assert!(
        err.contains("no ingress network")
            && err.contains("network create --driver overlay --ingress"),
        "{err}"
    );
    assert!(host.service_ls().is_empty());
    host.shoal_ok(&words(
        "service create -d --name local --publish mode=host,published=9090,target=90 busybox \
         sleep 600",
    ));
    // `network create --ingress` makes a new one; publishing works again.
    host.shoal_ok(&words("network create --ingress mesh"));
    assert_eq!(inspect_network(&host, "mesh")["Ingress"], true);
    host.shoal_ok(&words(
        "service create -d --name web --publish 8080:80 busybox sleep 600",
    ));
    let mesh_id = inspect_network(&host, "mesh")["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        inspect_service(&host, "web")["Endpoint"]["VirtualIPs"][0]["NetworkID"],
        mesh_id.as_str()
    );
}

#[test]
fn a_change_of_ports_alone_replaces_the_tasks() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words(
        "service create -d --name web --replicas 2 --publish 8080:80 busybox sleep 600",
    ));
    let running_ids = |host: &ShoalHost| -> BTreeSet<String> {
        host.running_containers_of("web")
            .iter()
            .filter_map(|c| c.task_id().map(String::from))
            .collect()
    };
    let mut first = BTreeSet::new();
    host.wait_for(Duration::from_secs(60), "two web tasks running", || {
        first = running_ids(&host);
        first.len() == 2
    });
    host.shoal_ok(&words("service update -d --publish-add 8081:81 web"));
    host.wait_for(
        Duration::from_secs(90),
        "both tasks replaced after a ports-only update",
        || {
            let now = running_ids(&host);
            now.len() == 2 && now.is_disjoint(&first)
        },
    );
    let ports = inspect_service(&host, "web")["Endpoint"]["Ports"].clone();
    assert_eq!(ports[1]["PublishedPort"], 8081, "{ports:#}");
}
