//! Published ports on real containers across two harness hosts. A routing-mesh port answers on
//! every node, the node without a task included, and the task sees the client's own address
//! (the calling harness host's), not a node's; a host-mode port answers only on the node
//! running the task; an idle connection through the mesh survives; unpublishing and removing
//! leave nothing behind. Every address is inside 198.18.0.0/15.

use std::time::Duration;

use shoal_tests::cluster::TestCluster;
use shoal_tests::daemon::{wait_until, words, ShoalHost};
use shoal_tests::tasknet::{node_state, serving, wait_back_to};

const WAIT: Duration = Duration::from_secs(60);

/// busybox httpd with a CGI script answering the client address the task sees.
const WHOAMI: &str = "mkdir -p /www/cgi-bin && \
     printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' \
     > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && httpd -f -p 80 -h /www";

/// `wget URL` from harness host `from`'s namespace: the body (an address the CGI script prints
/// as httpd's IPv6-mapped `[::ffff:A.B.C.D]` is given as `A.B.C.D`), or `Err` with what wget
/// said.
fn fetch(cluster: &TestCluster, from: usize, url: &str) -> Result<String, String> {
    let out = cluster
        .net()
        .exec(
            from,
            &["timeout", "5", "busybox", "wget", "-q", "-O", "-", url],
        )
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        let body = String::from_utf8_lossy(&out.stdout);
        let body = body.trim().trim_start_matches('[').trim_end_matches(']');
        Ok(body.strip_prefix("::ffff:").unwrap_or(body).to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Waits until `url`, fetched from host `from`, answers `want`.
fn answers(cluster: &TestCluster, from: usize, url: &str, want: &str) {
    let mut last = Err(String::new());
    assert!(
        wait_until(WAIT, || {
            last = fetch(cluster, from, url);
            last.as_deref() == Ok(want)
        }),
        "{url} from host {from}: {last:?}, expected {want:?}"
    );
}

/// The established-TCP conntrack timeout in the namespace at `ns` (a path), in seconds.
fn established_timeout(host: &ShoalHost, ns: &std::path::Path) -> u64 {
    host.host_output(
        "nsenter",
        &[
            &format!("--net={}", ns.display()),
            "cat",
            "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established",
        ],
    )
    .trim()
    .parse()
    .unwrap_or(0)
}

#[test]
fn published_ports_answer_everywhere_with_the_clients_address_and_host_mode_only_where_tasks_run() {
    let cluster = TestCluster::new(2);
    cluster.form(1, 1);
    cluster.load_busybox_everywhere();
    let (m, w) = (cluster.host(0), cluster.host(1));
    let (addr0, addr1) = (m.addr().to_string(), w.addr().to_string());
    let idle = [node_state(m), node_state(w)];
    let no_dns = format!("--dns {}", cluster.net().host_addr(1));
    // Every task runs on the manager: the worker has none of them.
    for (name, publish) in [
        ("web", "--publish 8080:80"),
        ("hostweb", "--publish mode=host,published=8081,target=80"),
    ] {
        let create = format!(
            "service create --name {name} {publish} --constraint node.role==manager \
             {no_dns} busybox sh -c"
        );
        let mut args = words(&create);
        args.push(WHOAMI);
        m.shoal_ok(&args);
    }
    m.shoal_ok(&words(&format!(
        "service create --name echo --publish 7001:7000 --constraint node.role==manager \
         {no_dns} busybox nc -ll -p 7000 -e cat"
    )));
    m.wait_for(WAIT, "web, hostweb and echo running", || {
        serving(m, "web") == 1 && serving(m, "hostweb") == 1 && serving(m, "echo") == 1
    });

    std::thread::scope(|s| {
        // An idle connection through the mesh of the node without a task survives a pause.
        let idle_conn = s.spawn(|| {
            let url = format!("http://{addr1}:8080/cgi-bin/ip");
            let mut last = Err(String::new());
            assert!(
                wait_until(WAIT, || {
                    last = fetch(&cluster, 0, &url);
                    last.is_ok()
                }),
                "the mesh never answered: {last:?}"
            );
            let script = format!(
                "(echo before; sleep 30; echo after; sleep 1) | timeout 45 busybox nc {addr1} 7001"
            );
            cluster
                .net()
                .exec_timeout(0, &["sh", "-c", &script], Duration::from_secs(60))
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        });

        // The mesh: the node without a task forwards, and the task sees the caller's address.
        answers(
            &cluster,
            0,
            &format!("http://{addr1}:8080/cgi-bin/ip"),
            &addr0,
        );
        answers(
            &cluster,
            1,
            &format!("http://{addr0}:8080/cgi-bin/ip"),
            &addr1,
        );
        // A node calling its own published port (no task there) is a client like any other.
        answers(
            &cluster,
            1,
            &format!("http://{addr1}:8080/cgi-bin/ip"),
            &addr1,
        );
        // Loopback works too; 127.0.0.1 cannot leave the node, so it takes the node's bridge
        // address.
        let (_, bip) = w.bridge();
        let bridge_addr = bip.split('/').next().unwrap_or(bip).to_string();
        answers(
            &cluster,
            1,
            "http://127.0.0.1:8080/cgi-bin/ip",
            &bridge_addr,
        );

        // Host mode: only where the task runs, straight to it, client address kept.
        answers(
            &cluster,
            1,
            &format!("http://{addr0}:8081/cgi-bin/ip"),
            &addr1,
        );
        let err = fetch(&cluster, 0, &format!("http://{addr1}:8081/")).unwrap_err();
        assert!(err.contains("refused"), "{err}");

        let out = idle_conn
            .join()
            .expect("idle connection thread")
            .expect("nc ran");
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["before", "after"],
            "the mesh connection did not survive its idle pause"
        );
    });

    // Nothing on the path (either node, the worker's ingress load balancer) expires an
    // established connection sooner than the kernel's 5 days, and no rule sets a timeout.
    let sbox = w.netns_dir().join("lb").join("ingress_sbox");
    for (host, ns) in [
        (m, cluster.net().netns_path(0)),
        (w, cluster.net().netns_path(1)),
        (w, sbox.clone()),
    ] {
        assert!(
            established_timeout(host, &ns) >= 432_000,
            "{}: {}",
            ns.display(),
            established_timeout(host, &ns)
        );
    }
    for rules in [
        m.nft_ruleset(),
        w.nft_ruleset(),
        w.host_output(
            "nsenter",
            &[
                &format!("--net={}", sbox.display()),
                "nft",
                "list",
                "ruleset",
            ],
        ),
    ] {
        assert!(rules.contains("dnat"), "{rules}");
        assert!(!rules.contains("timeout"), "{rules}");
    }

    // Unpublishing closes the port on every node.
    m.shoal_ok(&words("service update --publish-rm 8080 web"));
    for host in [m, w] {
        assert!(
            wait_until(WAIT, || !host.nft_ruleset().contains("8080")),
            "{}",
            host.nft_ruleset()
        );
    }
    let err = fetch(&cluster, 0, &format!("http://{addr1}:8080/")).unwrap_err();
    assert!(err.contains("refused"), "{err}");

    // Removing the services leaves each node as it was: no rule, route, mark or namespace.
    m.shoal_ok(&words("service rm web hostweb echo"));
    wait_back_to(&[m, w], &idle, "routing mesh");
}
