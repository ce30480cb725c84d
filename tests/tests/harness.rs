//! The multi-host harness itself: the test network connects its hosts and can cut one off, a
//! cluster host really runs containerd and `shoal daemon` in its namespace, and neither a
//! dropped cluster nor a crashed test run leaves anything behind on the machine.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use shoal_tests::cluster::{self, TestCluster, SWARM_PORT};
use shoal_tests::daemon::{wait_until, words, ShoalHost};
use shoal_tests::netns::{self, TestNetwork};
use shoal_tests::process::{cmdline_of, is_running, pids};

/// How long a service may take to run its container on a loaded two-core machine.
const CONVERGE: Duration = Duration::from_secs(60);
/// How long SIGKILLed processes may take to be gone.
const GONE: Duration = Duration::from_secs(15);

fn ping(net: &TestNetwork, from: usize, to: Ipv4Addr) -> bool {
    net.ping(from, to)
        .unwrap_or_else(|e| panic!("ping from host {from} to {to}: {e:#}"))
}

fn in_test_range(addr: Ipv4Addr) -> bool {
    let [a, b, ..] = addr.octets();
    a == 198 && (b == 18 || b == 19)
}

/// Whether a TCP connection from host `from`'s namespace to `to` is accepted within 2 s.
fn connects(net: &TestNetwork, from: usize, to: SocketAddr) -> bool {
    net.run_in(from, || {
        TcpStream::connect_timeout(&to, Duration::from_secs(2)).is_ok()
    })
    .unwrap_or_else(|e| panic!("entering host {from}'s namespace: {e:#}"))
}

fn iptables_forward_rules() -> String {
    match Command::new("iptables")
        .args(["-w", "-S", "FORWARD"])
        .output()
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        // No iptables: the network inserted no rule either.
        Err(_) => String::new(),
    }
}

/// The command line of `pid`, for matching and for messages.
fn cmdline(pid: i32) -> String {
    cmdline_of(pid).join(" ")
}

/// The cgroup directories process `pid` is in (one per v1 hierarchy, or the v2 one), apart from
/// the root cgroups, which never go.
fn cgroup_dirs(pid: i32) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return Vec::new();
    };
    let mut dirs = Vec::new();
    for line in text.lines() {
        // "4:memory:/shoal/ID" (v1) or "0::/shoal/ID" (v2)
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if path == "/" {
            continue;
        }
        let path = path.trim_start_matches('/');
        let roots: Vec<String> = if controllers.is_empty() {
            vec!["".into(), "unified".into()]
        } else {
            controllers
                .split(',')
                .map(|c| c.trim_start_matches("name=").to_string())
                .collect()
        };
        for root in roots {
            let dir = Path::new("/sys/fs/cgroup").join(root).join(path);
            if dir.is_dir() {
                dirs.push(dir);
            }
        }
    }
    dirs
}

/// (device, inode) of a network namespace file, as /proc/PID/ns/net shows it.
fn ns_id(path: &Path) -> (u64, u64) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.dev(), m.ino())
}

fn netns_of(pid: i32) -> Option<(u64, u64)> {
    fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Everything a test network or cluster put on the machine, recorded before it is dropped, so
/// the test can check afterwards that all of it is gone.
#[derive(Default)]
struct Footprint {
    netns_files: Vec<PathBuf>,
    namespaces: Vec<(u64, u64)>,
    links: Vec<String>,
    bridges: Vec<String>,
    dirs: Vec<PathBuf>,
    pids: Vec<i32>,
    runc_state: Vec<PathBuf>,
    cgroups: Vec<PathBuf>,
}

impl Footprint {
    fn of_network(net: &TestNetwork) -> Self {
        let mut f = Footprint {
            bridges: vec![net.bridge().to_string()],
            links: vec![net.bridge().to_string()],
            ..Footprint::default()
        };
        for i in 0..net.len() {
            f.netns_files.push(net.netns_path(i));
            f.namespaces.push(ns_id(&net.netns_path(i)));
            f.links.push(net.veth(i).to_string());
        }
        f
    }

    /// Adds a host's directories, its daemon, containerd and container processes, and the
    /// runc state of its containers.
    fn add_host(&mut self, host: &ShoalHost, containerd_pid: Option<i32>) {
        self.dirs.push(host.dir().to_path_buf());
        self.dirs.push(host.containerd().dir().to_path_buf());
        self.pids.extend(host.daemon_pid().map(|p| p as i32));
        self.pids.extend(containerd_pid);
        for task in host.ctr_tasks() {
            self.pids.push(task.pid as i32);
            self.runc_state
                .push(Path::new("/run/containerd/runc/shoal").join(&task.id));
            self.cgroups.extend(cgroup_dirs(task.pid as i32));
        }
    }

    fn assert_gone(&self) {
        for path in &self.netns_files {
            assert!(!path.exists(), "{} is still there", path.display());
        }
        for link in &self.links {
            assert!(
                !Path::new("/sys/class/net").join(link).exists(),
                "interface {link} is still there"
            );
        }
        let rules = iptables_forward_rules();
        for bridge in &self.bridges {
            assert!(
                !rules.contains(bridge.as_str()),
                "a FORWARD rule for {bridge} is still there:\n{rules}"
            );
        }
        for dir in &self.dirs {
            assert!(!dir.exists(), "{} is still there", dir.display());
        }
        for cgroup in &self.cgroups {
            assert!(
                !cgroup.exists(),
                "cgroup {} is still there",
                cgroup.display()
            );
        }
        for state in &self.runc_state {
            assert!(
                !state.exists(),
                "runc state {} is still there",
                state.display()
            );
        }
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
        for dir in &self.dirs {
            let dir = dir.to_string_lossy();
            assert!(
                !mountinfo.contains(dir.as_ref()),
                "something is still mounted under {dir}"
            );
        }
        // Processes: the recorded ones, anything whose command line names one of the
        // directories (containerd, shims, daemon, log drivers), anything in the namespaces.
        let lingering = || -> Vec<String> {
            pids()
                .into_iter()
                .filter(|pid| is_running(*pid))
                .filter(|pid| {
                    let cmd = cmdline(*pid);
                    self.pids.contains(pid)
                        || self
                            .dirs
                            .iter()
                            .any(|d| cmd.contains(d.to_string_lossy().as_ref()))
                        || netns_of(*pid).is_some_and(|ns| self.namespaces.contains(&ns))
                })
                .map(|pid| format!("{pid}: {}", cmdline(pid)))
                .collect()
        };
        if !wait_until(GONE, || lingering().is_empty()) {
            panic!(
                "processes outlived the teardown:\n{}",
                lingering().join("\n")
            );
        }
    }
}

#[test]
fn hosts_reach_each_other_and_a_cut_host_is_isolated_until_healed() {
    let net = TestNetwork::new(3).expect("create a three-host test network");
    assert!(in_test_range(net.bridge_addr()), "{}", net.bridge_addr());
    for i in 0..3 {
        let addr = net.host_addr(i);
        assert!(in_test_range(addr), "host {i} got {addr}");
        let shown = net
            .exec(i, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
            .expect("ip addr in the host's namespace");
        assert!(
            String::from_utf8_lossy(&shown.stdout).contains(&format!("{addr}/24")),
            "host {i}'s eth0: {}",
            String::from_utf8_lossy(&shown.stdout)
        );
        assert!(
            ping(&net, i, net.bridge_addr()),
            "host {i} cannot reach the bridge"
        );
        for j in (0..3).filter(|j| *j != i) {
            assert!(
                ping(&net, i, net.host_addr(j)),
                "host {i} cannot reach host {j}"
            );
        }
    }

    if Command::new("iptables").arg("--version").output().is_ok() {
        let rules = iptables_forward_rules();
        assert!(
            rules.contains(&format!(
                "-i {} -o {} -j ACCEPT",
                net.bridge(),
                net.bridge()
            )),
            "no FORWARD rule for {}:\n{rules}",
            net.bridge()
        );
    }

    net.cut(1).expect("cut host 1 off");
    assert!(net.is_cut(1).expect("link state of host 1"));
    assert!(
        !ping(&net, 0, net.host_addr(1)),
        "host 0 still reaches the cut host 1"
    );
    assert!(
        !ping(&net, 1, net.host_addr(0)),
        "the cut host 1 still reaches host 0"
    );
    assert!(
        !ping(&net, 1, net.bridge_addr()),
        "the cut host 1 still reaches the bridge"
    );
    assert!(
        ping(&net, 0, net.host_addr(2)),
        "cutting host 1 cut host 2 off too"
    );

    net.heal(1).expect("heal host 1");
    assert!(!net.is_cut(1).expect("link state of host 1"));
    // The link needs a moment to come up again after the veth is set up.
    assert!(
        wait_until(Duration::from_secs(10), || ping(&net, 0, net.host_addr(1))
            && ping(&net, 1, net.host_addr(0))),
        "host 1 is not reachable again after heal"
    );

    let footprint = Footprint::of_network(&net);
    drop(net);
    footprint.assert_gone();
}

#[test]
fn parallel_networks_get_distinct_subnets() {
    let a = TestNetwork::new(1).expect("create the first network");
    let b = TestNetwork::new(1).expect("create the second network");
    assert_ne!(a.subnet(), b.subnet());
    assert_ne!(a.bridge(), b.bridge());
    assert_ne!(a.netns_path(0), b.netns_path(0));
    assert!(ping(&a, 0, a.bridge_addr()));
    assert!(ping(&b, 0, b.bridge_addr()));
}

#[test]
fn cluster_host_runs_a_swarm_in_its_namespace_survives_death_and_leaves_nothing() {
    let mut cluster = TestCluster::new(2);
    let host = cluster.host(0);
    host.shoal_ok(&["info"]);

    // containerd and the daemon run in host 0's namespace, not the test's.
    let ns = ns_id(host.netns_path());
    let daemon = host.daemon_pid().expect("the daemon runs") as i32;
    let containerd = host.containerd_pid().expect("containerd runs");
    assert_eq!(
        netns_of(daemon),
        Some(ns),
        "the daemon is not in host 0's netns"
    );
    assert_eq!(
        netns_of(containerd),
        Some(ns),
        "containerd is not in host 0's netns"
    );

    host.swarm_init();
    let nodes = host.nodes();
    assert_eq!(nodes.len(), 1, "node ls: {nodes:?}");
    assert_eq!(nodes[0]["Status"], "Ready", "node ls: {nodes:?}");
    assert_eq!(nodes[0]["ManagerStatus"], "Leader", "node ls: {nodes:?}");
    assert_eq!(nodes[0]["Self"], true, "node ls: {nodes:?}");

    // The swarm port listens on host 0's test address and host 1 reaches it over the bridge,
    // unless host 0 is cut off.
    let swarm = SocketAddr::new(host.addr().into(), SWARM_PORT);
    assert!(
        connects(cluster.net(), 1, swarm),
        "host 1 cannot connect to {swarm}"
    );
    cluster.cut(0);
    assert!(
        !connects(cluster.net(), 1, swarm),
        "host 1 reaches {swarm} of the cut host 0"
    );
    cluster.heal(0);
    assert!(
        wait_until(Duration::from_secs(10), || connects(
            cluster.net(),
            1,
            swarm
        )),
        "host 1 cannot connect to {swarm} after heal"
    );

    // A container that outlives its machine's death, and is adopted when the machine is back.
    let host = cluster.host(0);
    host.load_busybox();
    host.shoal_ok(&words(
        "service create --name top --replicas 1 busybox sleep 600",
    ));
    host.wait_for(CONVERGE, "the service's container to run", || {
        host.running_container_ids().len() == 1
    });
    let running = host.running_container_ids();
    let task = host
        .ctr_tasks()
        .into_iter()
        .find(|t| t.status == "RUNNING")
        .expect("a running task");

    cluster.power_off(0);
    assert!(cluster.net().is_cut(0).expect("link state of host 0"));
    let host = cluster.host(0);
    assert!(!host.containerd_running());
    assert!(host.containerd_pid().is_none(), "containerd survived");
    assert!(host.daemon_pid().is_none(), "the daemon survived");
    assert!(
        is_running(task.pid as i32),
        "the container died with containerd; its shim should keep it"
    );

    cluster.power_on(0);
    assert!(!cluster.net().is_cut(0).expect("link state of host 0"));
    let host = cluster.host(0);
    host.shoal_ok(&["info"]);
    assert!(host.containerd_running());
    host.wait_for(CONVERGE, "the service back at 1/1", || {
        host.replicas("top").as_deref() == Some("1/1")
    });
    assert_eq!(
        host.running_container_ids(),
        running,
        "the restarted host replaced its container instead of adopting it"
    );

    // The machine dies again and stays dead: the teardown must still remove its container.
    let mut footprint = Footprint::of_network(cluster.net());
    for i in 0..cluster.len() {
        let h = cluster.host(i);
        footprint.add_host(h, h.containerd_pid());
    }
    cluster.host_mut(0).kill9_with_containerd();
    drop(cluster);
    footprint.assert_gone();
}

/// What a test process that crashed mid-test leaves: a namespace, bridge, veth and FORWARD
/// rule named for its (now dead) pid, containerd, shim, container and daemon still running in
/// the namespace, their directories and mounts. `cleanup_stale` removes all of it.
#[test]
fn cleanup_stale_removes_what_a_crashed_run_left() {
    // The "crashed run" is named for a child process of ours, so that until we kill it no
    // cleanup (another test's cluster starting meanwhile) takes the run for a dead one.
    let mut owner: Child = Command::new("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .spawn()
        .expect("start a stand-in for the crashed test process");
    let run = netns::run_id(owner.id(), 0);
    let bridge = netns::bridge_name(&run);
    let ns_name = netns::netns_name(&run, 0);
    let veth = netns::veth_name(&run, 0);
    let ns_path = Path::new("/run/netns").join(&ns_name);
    let sh = |cmd: &[&str]| {
        let out = Command::new(cmd[0])
            .args(&cmd[1..])
            .output()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(&["ip", "link", "add", &bridge, "type", "bridge"]);
    sh(&["ip", "netns", "add", &ns_name]);
    sh(&[
        "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns_name,
    ]);
    sh(&["ip", "link", "set", &veth, "master", &bridge]);
    sh(&["ip", "-n", &ns_name, "link", "set", "lo", "up"]);
    let iptables = Command::new("iptables").arg("--version").output().is_ok();
    if iptables {
        sh(&[
            "iptables", "-w", "-I", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
        ]);
    }

    // A host with a running container in the namespace; the swarm only needs loopback there.
    let host = ShoalHost::start_in_netns(&ns_path, &[]);
    host.shoal_ok(&words(
        "swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377",
    ));
    host.load_busybox();
    host.shoal_ok(&words(
        "service create --name left --replicas 1 busybox sleep 600",
    ));
    host.wait_for(CONVERGE, "the service's container to run", || {
        host.running_container_ids().len() == 1
    });
    let containerd = netns::pids_in_netns(&ns_path)
        .into_iter()
        .find(|pid| cmdline(*pid).starts_with("containerd "))
        .expect("containerd runs in the namespace");
    let mut footprint = Footprint {
        netns_files: vec![ns_path.clone()],
        namespaces: vec![ns_id(&ns_path)],
        links: vec![bridge.clone(), veth.clone()],
        bridges: vec![bridge.clone()],
        ..Footprint::default()
    };
    footprint.add_host(&host, Some(containerd));
    let daemon = host.daemon_pid().expect("the daemon runs") as i32;

    // The crash: nothing of the host's teardown runs.
    std::mem::forget(host);
    let _ = owner.kill();
    let _ = owner.wait();
    assert!(netns::stale_namespaces().contains(&ns_name));

    cluster::cleanup_stale().expect("clean up stale test clusters");
    assert!(
        wait_until(GONE, || !is_running(daemon) && !is_running(containerd)),
        "the crashed run's daemon or containerd survived the cleanup"
    );
    // They were our children: reap them, as init would a dead run's.
    for pid in [daemon, containerd] {
        let _ = waitpid(Pid::from_raw(pid), None);
    }
    footprint.assert_gone();
}

#[test]
fn form_makes_a_swarm_of_managers_and_workers_over_the_test_network() {
    let cluster = TestCluster::new(3);
    cluster.form(2, 1);
    let ids: Vec<String> = cluster.hosts().iter().map(|h| h.node_id()).collect();
    assert!(ids.iter().all(|id| !id.is_empty()), "node IDs: {ids:?}");
    for manager in 0..2 {
        let nodes = cluster.host(manager).nodes();
        let statuses: Vec<&str> = nodes
            .iter()
            .map(|n| n["ManagerStatus"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(nodes.len(), 3, "host {manager}'s node ls: {nodes:?}");
        assert!(
            nodes.iter().all(|n| n["Status"] == "Ready"),
            "host {manager}'s node ls: {nodes:?}"
        );
        let mut listed: Vec<&str> = nodes.iter().filter_map(|n| n["ID"].as_str()).collect();
        listed.sort();
        let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
        expected.sort();
        assert_eq!(listed, expected, "host {manager}'s node ls: {nodes:?}");
        let leader = nodes.iter().find(|n| n["ManagerStatus"] == "Leader");
        assert_eq!(
            leader.and_then(|n| n["ID"].as_str()),
            Some(ids[0].as_str()),
            "host 0, which ran init, should lead: {nodes:?}"
        );
        for status in ["Leader", "Reachable", ""] {
            assert_eq!(
                statuses.iter().filter(|s| **s == status).count(),
                1,
                "host {manager}'s node ls should have one node with manager status \
                 {status:?}: {nodes:?}"
            );
        }
    }
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::panic::catch_unwind(move || {
        let mut cluster = TestCluster::new(1);
        cluster.host(0).swarm_init();
        let mut footprint = Footprint::of_network(cluster.net());
        let host = cluster.host(0);
        footprint.add_host(host, host.containerd_pid());
        cluster.host_mut(0).kill9_with_containerd();
        cluster.cut(0);
        let _ = tx.send(footprint);
        panic!("a test fails with its cluster cut off and its host dead");
    });
    assert!(outcome.is_err(), "the closure was expected to panic");
    let footprint = rx
        .recv()
        .expect("the footprint was recorded before the panic");
    footprint.assert_gone();
}
