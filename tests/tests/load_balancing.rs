//! Service load balancing on real containers across two harness hosts: a service's VIP spreads
//! new connections over its running tasks (kernel DNAT with nftables in the client task's
//! namespace), follows scaling and a killed task with no failed request once settled, refuses
//! at once when no task runs, and keeps an idle connection; `dnsrr` answers task addresses and
//! has no VIP. Every address is inside 198.18.0.0/15.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_tests::cluster::TestCluster;
use shoal_tests::daemon::{wait_until, words, ShoalHost};
use shoal_tests::tasknet::{lookup, node_state, service_vips, serving, wait_back_to};

const WAIT: Duration = Duration::from_secs(60);

/// busybox httpd answering its container's hostname (the task's ID).
const WEB: &str = "mkdir -p /www && hostname > /www/index.html && httpd -f -p 80 -h /www";

/// `n` requests to `url` from the task, each a new connection: who answered how often, and how
/// many failed.
fn spread(host: &ShoalHost, task: &str, url: &str, n: usize) -> (BTreeMap<String, usize>, usize) {
    let script =
        format!("for i in $(seq {n}); do timeout 5 wget -q -O - {url} || echo FAILED; done");
    let out = host.sh_in_task(task, &script).unwrap_or_else(|e| e);
    let mut answers = BTreeMap::new();
    let mut failed = 0;
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == "FAILED" {
            failed += 1;
        } else {
            *answers.entry(line.to_string()).or_insert(0) += 1;
        }
    }
    (answers, failed)
}

/// Waits until `n` requests all succeed and exactly `responders` tasks answer them.
fn settles_on(host: &ShoalHost, task: &str, url: &str, responders: usize) {
    let mut last = (BTreeMap::new(), 0);
    assert!(
        wait_until(WAIT, || {
            last = spread(host, task, url, 10 * responders);
            last.1 == 0 && last.0.len() == responders
        }),
        "{url} never settled on {responders} responders: last {last:?}"
    );
}

#[test]
fn a_vip_spreads_over_running_tasks_follows_scaling_and_refuses_when_none_runs() {
    let cluster = TestCluster::new(2);
    cluster.form(1, 1);
    cluster.load_busybox_everywhere();
    let (m, w) = (cluster.host(0), cluster.host(1));
    let idle = [node_state(m), node_state(w)];
    let no_dns = format!("--dns {}", cluster.net().host_addr(1));
    m.shoal_ok(&words("network create --driver overlay front"));
    let web_create =
        format!("service create --name web --network front --replicas 3 {no_dns} busybox sh -c");
    let mut web = words(&web_create);
    web.push(WEB);
    m.shoal_ok(&web);
    m.shoal_ok(&words(&format!(
        "service create --name client --network front --constraint node.role==worker \
         {no_dns} busybox sleep 3600"
    )));
    // An echo server for the idle connection.
    m.shoal_ok(&words(&format!(
        "service create --name echo --network front --constraint node.role==manager \
         {no_dns} busybox nc -ll -p 7000 -e cat"
    )));
    m.wait_for(WAIT, "web, client and echo running", || {
        serving(m, "web") == 3 && serving(m, "client") == 1 && serving(m, "echo") == 1
    });
    let client = w
        .running_containers_of("client")
        .pop()
        .expect("the client runs on the worker")
        .id;

    // The name is the VIP, which no task holds; tasks.NAME lists the tasks.
    let vip = service_vips(m, "web");
    assert_eq!(vip.len(), 1, "{vip:?}");
    assert_eq!(lookup(w, &client, "web"), vip);
    assert_eq!(lookup(w, &client, "tasks.web").len(), 3);
    assert!(!lookup(w, &client, "tasks.web").contains(&vip[0]));

    // An idle connection through the VIP outlives a 30 s pause, while the rest goes on.
    std::thread::scope(|s| {
        let idle_conn = s.spawn(|| {
            w.sh_in_task_within(
                &client,
                "(echo before; sleep 30; echo after; sleep 1) | timeout 45 nc echo 7000",
                Duration::from_secs(60),
            )
        });

        // Every running task answers, by VIP and by name.
        settles_on(w, &client, "http://web/", 3);
        let (answers, failed) = spread(w, &client, &format!("http://{}/", vip[0]), 30);
        assert_eq!((answers.len(), failed), (3, 0), "{answers:?}");

        // Scaling up adds responders, scaling down removes them with no failure once settled.
        m.shoal_ok(&words("service scale web=4"));
        settles_on(w, &client, "http://web/", 4);
        m.shoal_ok(&words("service scale web=2"));
        settles_on(w, &client, "http://web/", 2);
        let (answers, failed) = spread(w, &client, "http://web/", 40);
        assert_eq!((answers.len(), failed), (2, 0), "{answers:?}");

        // A killed task leaves; its replacement joins.
        let victim = m
            .running_containers_of("web")
            .pop()
            .or_else(|| w.running_containers_of("web").pop())
            .expect("a web task runs");
        let owner = if m
            .running_containers_of("web")
            .iter()
            .any(|c| c.id == victim.id)
        {
            m
        } else {
            w
        };
        owner.ctr(&["task", "kill", "-s", "SIGKILL", &victim.id]);
        settles_on(w, &client, "http://web/", 2);
        let (answers, _) = spread(w, &client, "http://web/", 20);
        assert!(
            !answers.contains_key(&victim.id[..victim.id.len().min(12)])
                && !answers.keys().any(|h| victim.id.starts_with(h.as_str())),
            "the killed task still answers: {answers:?}"
        );

        let out = idle_conn
            .join()
            .expect("idle connection thread")
            .expect("the idle connection works");
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["before", "after"],
            "the connection did not survive its idle pause"
        );
    });

    // Nothing on the path expires established connections sooner than the kernel's default.
    let established = w
        .sh_in_task(
            &client,
            "cat /proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established",
        )
        .expect("conntrack timeout readable");
    assert!(
        established.trim().parse::<u64>().unwrap_or(0) >= 432_000,
        "{established}"
    );
    let task_rules = w.host_output(
        "nsenter",
        &[
            &format!("--net={}", w.task_netns(&client).display()),
            "nft",
            "list",
            "ruleset",
        ],
    );
    assert!(task_rules.contains("dnat to"), "{task_rules}");
    assert!(!task_rules.contains("timeout"), "{task_rules}");

    // No running task: connections are refused at once, not black-holed.
    m.shoal_ok(&words("service scale web=0"));
    m.wait_for(WAIT, "web scaled to 0", || serving(m, "web") == 0);
    assert!(
        wait_until(WAIT, || {
            w.sh_in_task(&client, "timeout 5 wget -q -O - http://web/ 2>&1; true")
                .is_ok_and(|out| out.contains("refused"))
        }),
        "a VIP without tasks does not refuse at once"
    );

    // dnsrr: the name answers the tasks, and there is no VIP.
    let db_create = format!(
        "service create --name db --endpoint-mode dnsrr --network front --replicas 2 \
         {no_dns} busybox sh -c"
    );
    let mut db = words(&db_create);
    db.push(WEB);
    m.shoal_ok(&db);
    m.wait_for(WAIT, "db running", || serving(m, "db") == 2);
    assert!(service_vips(m, "db").is_empty());
    assert!(
        wait_until(WAIT, || lookup(w, &client, "db").len() == 2),
        "{:?}",
        lookup(w, &client, "db")
    );
    assert_eq!(lookup(w, &client, "db"), lookup(w, &client, "tasks.db"));
    w.sh_in_task(&client, "timeout 5 wget -q -O - http://db/")
        .expect("dnsrr service reachable by name");

    // Removing everything leaves each node as it was: no table, rule, route or namespace.
    m.shoal_ok(&words("service rm web client echo db"));
    wait_back_to(&[m, w], &idle, "load balancing");
    m.shoal_ok(&words("network rm front"));
}
