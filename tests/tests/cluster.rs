//! Multi-node swarms end to end, the managers' side: real daemons and containerds, one per
//! network namespace, on a private bridge (see `shoal_tests::cluster`). Every check goes
//! through the `shoal` CLI of the hosts, and what runs is checked in each host's containerd as
//! well.
//!
//! - forming a 3-manager, 2-worker swarm from join tokens; killing the leader (acknowledged
//!   writes survive, a new leader takes over, the survivors take commands);
//! - a manager cut off the network (the majority goes on, the cut-off one refuses writes, and
//!   catches up once healed);
//! - promoting a worker to manager and demoting it again;
//! - `swarm init --force-new-cluster` on the last manager of a lost quorum.
//!
//! Where tasks run (dead workers, drains, constraints) is in `cluster_placement.rs`.
//!
//! The tests run the daemons with a 1 s `--dispatcher-heartbeat` (a node is DOWN after 3 s of
//! silence) to keep the suite short; `bench/cluster_failover.sh` measures the defaults, and
//! the times: these tests assert outcomes, with deadlines generous enough for a loaded machine.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::cluster::TestCluster;
use shoal_tests::daemon::{run_with_deadline, shoal_bin, wait_until, words};
use shoal_tests::http::sample;
use shoal_tests::listing::{
    create_zero_replicas, leader_seen_by, manager_statuses, placement, service_names,
    wait_all_ready, wait_node_ls, wait_replicas,
};

/// How long a service may take to converge on a loaded two-core machine.
const CONVERGE: Duration = Duration::from_secs(90);
/// The daemons' heartbeat period in these tests: a silent node is DOWN after three of them.
const HEARTBEAT: &[&str] = &["--dispatcher-heartbeat", "1s"];
/// Where the daemons of a test that reads their metrics serve them (each on its own loopback).
const METRICS_PORT: u16 = 9464;
/// The server's keepalive lets a vanished client go within 10 s; this leaves room for a slow
/// machine.
const STREAMS_LET_GO: Duration = Duration::from_secs(30);
/// Raft's election timeout is 1–2 s (10–20 ticks of 100 ms); "a few" of them.
const ELECTION: Duration = Duration::from_secs(10);
/// The same after a cut: a call a follower forwarded to the cut-off leader is given up only
/// `MOVED_GRACE` (3 s) after the leadership moved, so each poll may take that much longer.
const ELECTION_AFTER_CUT: Duration = Duration::from_secs(20);
/// How long a cut-off follower may take to refuse a write it cannot forward: generous, since
/// the point is that it answers at all (how fast is for the benchmarks).
const REFUSAL: Duration = Duration::from_secs(90);

/// Runs the CLI against the daemon at `api_url` (for threads that cannot borrow the cluster).
fn shoal_at(api_url: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(shoal_bin());
    cmd.arg("-H")
        .arg(api_url)
        .args(args)
        .env_remove("SHOAL_HOST");
    run_with_deadline(&mut cmd, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("`shoal {}` hung", args.join(" ")))
}

/// Issue 3, points 1 and 2: three managers and two workers form a swarm from join tokens and
/// every manager agrees on one leader; then the leader's daemon is SIGKILLed while it takes
/// writes. A new leader is elected within a few election timeouts, every write the dead
/// leader acknowledged is on the survivors (and no write it did not take), and the surviving
/// managers take commands: create and scale a service whose tasks run.
#[test]
fn five_nodes_agree_on_one_leader_and_survive_its_kill9() {
    let mut cluster = TestCluster::new_with(5, HEARTBEAT);
    cluster.form(3, 2);
    let ids = cluster.node_ids();
    for m in 0..3 {
        let nodes = cluster.host(m).nodes();
        let statuses = manager_statuses(&nodes);
        let listed: BTreeSet<&String> = statuses.keys().collect();
        assert_eq!(
            listed,
            ids.iter().collect::<BTreeSet<_>>(),
            "host {m}'s node ls: {nodes:?}"
        );
        assert!(
            nodes.iter().all(|n| n["Status"] == "Ready"),
            "host {m}'s node ls: {nodes:?}"
        );
        let with = |s: &str| -> BTreeSet<&str> {
            statuses
                .iter()
                .filter(|(_, v)| *v == s)
                .map(|(k, _)| k.as_str())
                .collect()
        };
        assert_eq!(
            with("Leader"),
            BTreeSet::from([ids[0].as_str()]),
            "host {m}: exactly one leader, host 0 (which ran init): {nodes:?}"
        );
        assert_eq!(
            with("Reachable"),
            BTreeSet::from([ids[1].as_str(), ids[2].as_str()]),
            "host {m}: {nodes:?}"
        );
        assert_eq!(
            with(""),
            BTreeSet::from([ids[3].as_str(), ids[4].as_str()]),
            "host {m}: the workers have no manager status: {nodes:?}"
        );
        let me: Vec<&Value> = nodes.iter().filter(|n| n["Self"] == true).collect();
        assert_eq!(me.len(), 1, "host {m}: {nodes:?}");
        assert_eq!(me[0]["ID"], ids[m].as_str(), "host {m}: {nodes:?}");
    }
    // A worker is no manager: it cannot list nodes.
    let refused = cluster.host(3).shoal_err(&["node", "ls"]);
    assert!(
        refused.contains("not a swarm manager"),
        "node ls on a worker: {refused}"
    );
    cluster.load_busybox_everywhere();

    // Writes through the leader, one service per iteration, while the leader is killed.
    let api = cluster.host(0).api_url();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, killed) = (acked.clone(), killed.clone());
        thread::spawn(move || -> Option<(String, String)> {
            for i in 0.. {
                let name = format!("w{i}");
                let out = shoal_at(&api, &create_zero_replicas(&name));
                if out.status.success() {
                    acked.lock().unwrap().push(name);
                } else {
                    let err = format!(
                        "{}: {}{}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr),
                        String::from_utf8_lossy(&out.stdout)
                    );
                    assert!(
                        killed.load(Ordering::SeqCst),
                        "`service create {name}` failed before the leader was killed: {err}"
                    );
                    return Some((name, err));
                }
                if i > 10_000 {
                    return None;
                }
            }
            None
        })
    };
    let enough = wait_until(Duration::from_secs(60), || acked.lock().unwrap().len() >= 8);
    assert!(enough, "the leader acknowledged too few writes: {acked:?}");
    killed.store(true, Ordering::SeqCst);
    cluster.host_mut(0).kill9();
    let killed_at = Instant::now();
    let (failed_name, failed_err) = writer
        .join()
        .expect("the writer thread panicked")
        .expect("the writer never saw the dead leader");
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    eprintln!(
        "{} writes acknowledged before the kill; {failed_name} failed: {failed_err}",
        acked.len()
    );

    // A new leader among the survivors, and both agree on it.
    let mut new_leader = None;
    let elected = wait_until(ELECTION, || {
        let a = leader_seen_by(cluster.host(1));
        let b = leader_seen_by(cluster.host(2));
        if a.is_some() && a == b && a.as_deref() != Some(ids[0].as_str()) {
            new_leader = a;
            true
        } else {
            false
        }
    });
    assert!(
        elected,
        "no new leader within {ELECTION:?} of killing the leader; node ls on host 1:\n{}",
        String::from_utf8_lossy(&cluster.host(1).shoal(&["node", "ls"]).stdout)
    );
    let new_leader = new_leader.unwrap();
    eprintln!("new leader {new_leader} after {:?}", killed_at.elapsed());
    assert!(
        new_leader == ids[1] || new_leader == ids[2],
        "the new leader {new_leader} is not a surviving manager"
    );
    // The dead manager shows as Unreachable.
    wait_node_ls(
        cluster.host(1),
        ELECTION,
        "host 1 does not list the killed manager as Unreachable",
        |n| manager_statuses(n).get(&ids[0]).map(String::as_str) == Some("Unreachable"),
    );

    // Every acknowledged write survived; nothing that was not attempted appeared.
    for m in [1, 2] {
        let names = service_names(cluster.host(m));
        let missing: Vec<&String> = acked.difference(&names).collect();
        assert!(
            missing.is_empty(),
            "host {m} lost acknowledged writes {missing:?}; it lists {names:?}"
        );
        let extra: Vec<&String> = names
            .iter()
            .filter(|n| !acked.contains(*n) && **n != failed_name)
            .collect();
        assert!(
            extra.is_empty(),
            "host {m} lists unknown services {extra:?}"
        );
    }

    // Commands work through both surviving managers.
    cluster.host(1).shoal_ok(&words(
        "service create -d --name after --replicas 2 busybox sleep 600",
    ));
    cluster.host(2).shoal_ok(&words("service scale -d after=4"));
    wait_replicas(cluster.host(2), "after", 4, CONVERGE);
    let alive = [1, 2, 3, 4];
    cluster
        .host(1)
        .wait_for(CONVERGE, "4 containers of `after` on the survivors", || {
            cluster
                .running_per_host(&alive, "after")
                .iter()
                .sum::<usize>()
                == 4
        });
    let on_dead = placement(cluster.host(1), "after").remove(&ids[0]);
    assert_eq!(
        on_dead, None,
        "a task of `after` is placed on the dead node"
    );
    assert!(
        service_names(cluster.host(2)).is_superset(&acked),
        "acknowledged writes went missing later"
    );

    // The killed manager comes back as a follower, catches up and is Reachable again.
    cluster.host_mut(0).restart();
    let host0 = cluster.host(0);
    host0.wait_for(CONVERGE, "the restarted manager to catch up", || {
        let out = host0.shoal(&["service", "ls", "--format", "{{.Name}}"]);
        out.status.success() && {
            let names: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .collect();
            names.is_superset(&acked) && names.contains("after")
        }
    });
    wait_node_ls(
        cluster.host(0),
        CONVERGE,
        &format!("the restarted manager is not a Reachable follower of {new_leader}"),
        |n| {
            let st = manager_statuses(n);
            st.get(&new_leader).map(String::as_str) == Some("Leader")
                && st.values().filter(|s| *s == "Reachable").count() == 2
                && n.iter().all(|n| n["Status"] == "Ready")
        },
    );
}

/// Issue 3, point 3: the leader is cut off the network. The other two managers elect a
/// leader and go on taking writes; the cut-off manager refuses writes with an error that says
/// there is no quorum; once healed it catches up with what was written meanwhile. Then the
/// same with a follower cut off, whose writes are forwarded to a leader it cannot reach.
#[test]
fn a_cut_off_manager_refuses_writes_and_catches_up_after_heal() {
    let metrics_addr = format!("127.0.0.1:{METRICS_PORT}");
    let args: Vec<&str> = HEARTBEAT
        .iter()
        .copied()
        .chain(["--metrics-addr", metrics_addr.as_str()])
        .collect();
    let cluster = TestCluster::new_with(3, &args);
    cluster.form(3, 0);
    let ids = cluster.node_ids();
    cluster.host(0).shoal_ok(&words(
        "service create -d --name before --replicas 0 busybox",
    ));
    for m in 1..3 {
        let host = cluster.host(m);
        host.wait_for(CONVERGE, "`before` on every manager", || {
            service_names(host).contains("before")
        });
    }

    // The leader streams its messages to each follower.
    for m in 1..3 {
        let open = inbound_streams(&cluster, m);
        assert!(
            open >= 1.0,
            "host {m} holds {open} Raft streams from others"
        );
    }

    cluster.cut(0);
    let cut_at = Instant::now();
    // The majority elects one of its own and takes writes.
    let elected = wait_until(ELECTION_AFTER_CUT, || {
        let a = leader_seen_by(cluster.host(1));
        a.is_some() && a != Some(ids[0].clone()) && a == leader_seen_by(cluster.host(2))
    });
    assert!(
        elected,
        "the majority elected no leader within {ELECTION_AFTER_CUT:?}; node ls on host 1:\n{}",
        String::from_utf8_lossy(&cluster.host(1).shoal(&["node", "ls"]).stdout)
    );
    eprintln!("majority leader after {:?}", cut_at.elapsed());
    let during: Vec<String> = (0..3).map(|i| format!("during{i}")).collect();
    for (i, name) in during.iter().enumerate() {
        cluster
            .host(1 + i % 2)
            .shoal_ok(&create_zero_replicas(name));
    }
    cluster
        .host(2)
        .shoal_ok(&words("service scale -d before=0"));

    // The cut-off manager refuses writes, saying why.
    let refused = cluster.host(0).shoal(&words(
        "service create -d --name split --replicas 0 busybox",
    ));
    let err = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        !refused.status.success(),
        "the cut-off manager accepted a write: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    let lower = err.to_lowercase();
    assert!(
        lower.contains("no quorum")
            || lower.contains("not reachable")
            || lower.contains("cannot reach"),
        "the cut-off manager's refusal does not say why: {err}"
    );
    eprintln!("cut-off manager said: {}", err.trim());
    // It is not the leader any more, as far as it knows.
    assert_ne!(
        leader_seen_by(cluster.host(0)),
        Some(ids[0].clone()),
        "the cut-off manager still calls itself leader"
    );
    // The majority let go of the cut-off manager's streams (their connections broke without a
    // word; the server's keepalive noticed), and each keeps only the other's.
    for m in 1..3 {
        let mut open = f64::NAN;
        let let_go = wait_until(STREAMS_LET_GO, || {
            open = inbound_streams(&cluster, m);
            open <= 1.0
        });
        assert!(
            let_go,
            "host {m} still holds {open} Raft streams {STREAMS_LET_GO:?} after the cut"
        );
    }

    cluster.heal(0);
    let host0 = cluster.host(0);
    let mut expected: BTreeSet<String> = during.iter().cloned().collect();
    expected.insert("before".into());
    host0.wait_for(CONVERGE, "the healed manager to catch up", || {
        let out = host0.shoal(&["service", "ls", "--format", "{{.Name}}"]);
        out.status.success() && {
            let names: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect();
            names == expected
        }
    });
    // Not only the names: the scale-down done meanwhile, through the healed manager.
    host0.wait_for(
        CONVERGE,
        "`before` scaled to 0 on the healed manager",
        || host0.replicas("before").as_deref() == Some("0/0"),
    );
    // And it takes writes again, as a Reachable member.
    host0.shoal_ok(&words(
        "service create -d --name healed --replicas 0 busybox",
    ));
    for m in 0..3 {
        let host = cluster.host(m);
        host.wait_for(CONVERGE, "`healed` on every manager", || {
            service_names(host).contains("healed")
        });
        wait_node_ls(
            host,
            CONVERGE,
            &format!("host {m} does not list one leader and two reachable managers after heal"),
            |n| {
                let st = manager_statuses(n);
                st.values().filter(|s| *s == "Leader").count() == 1
                    && st.values().filter(|s| *s == "Reachable").count() == 2
            },
        );
    }

    // Now a follower is cut off. A write on it is forwarded to the leader it can no longer
    // reach: that must fail, saying so (not hang), while the other two go on.
    let leader = leader_seen_by(cluster.host(0)).expect("a leader after heal");
    let follower = (0..3).find(|&i| ids[i] != leader).expect("a follower");
    let others: Vec<usize> = (0..3).filter(|&i| i != follower).collect();
    cluster.cut(follower);
    let asked = Instant::now();
    let refused = cluster
        .host(follower)
        .shoal_within(
            &words("service create -d --name lonely --replicas 0 busybox"),
            REFUSAL,
        )
        .unwrap_or_else(|| {
            panic!("the cut-off follower did not answer a write within {REFUSAL:?}: it hangs")
        });
    let took = asked.elapsed();
    let err = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        !refused.status.success(),
        "the cut-off follower accepted a write: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    let lower = err.to_lowercase();
    assert!(
        lower.contains("no quorum") || lower.contains("not reachable"),
        "the cut-off follower's refusal does not say why: {err}"
    );
    eprintln!("cut-off follower said after {took:?}: {}", err.trim());
    cluster.host(others[0]).shoal_ok(&words(
        "service create -d --name while-follower-cut --replicas 0 busybox",
    ));
    assert!(service_names(cluster.host(others[1])).contains("while-follower-cut"));
    cluster.heal(follower);
    let host = cluster.host(follower);
    host.wait_for(CONVERGE, "the healed follower to catch up", || {
        let out = host.shoal(&["service", "ls", "--format", "{{.Name}}"]);
        // `lonely` may or may not be there, as the refusal said: the forwarded request can sit
        // in the follower's TCP send queue and reach the leader once the cable is back.
        out.status.success()
            && String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == "while-follower-cut")
    });
}

/// Issue 3, point 6: `node promote` makes a worker a manager that the others list as
/// Reachable and that answers manager commands itself; `node demote`, run on the promoted node
/// itself, makes it a worker again and the swarm goes on with its one manager.
#[test]
fn a_promoted_worker_becomes_a_reachable_manager_and_is_demoted_back() {
    let cluster = TestCluster::new_with(2, HEARTBEAT);
    cluster.form(1, 1);
    let ids = cluster.node_ids();
    let (manager, worker) = (cluster.host(0), cluster.host(1));
    assert!(worker
        .shoal_err(&["node", "ls"])
        .contains("not a swarm manager"));

    let out = manager.shoal_ok(&["node", "promote", &ids[1]]);
    assert!(out.contains(&ids[1]), "node promote said: {out}");
    for host in [manager, worker] {
        wait_node_ls(
            host,
            CONVERGE,
            &format!(
                "host {} does not list the promoted node as Reachable",
                host.index()
            ),
            |n| {
                let st = manager_statuses(n);
                st.get(&ids[0]).map(String::as_str) == Some("Leader")
                    && st.get(&ids[1]).map(String::as_str) == Some("Reachable")
            },
        );
    }
    assert_eq!(worker.info()["is_manager"], true, "{}", worker.info());
    // The promoted node takes writes itself (forwarded to the leader), as a voter.
    worker.shoal_ok(&words(
        "service create -d --name by-promoted --replicas 0 busybox",
    ));
    assert!(service_names(manager).contains("by-promoted"));

    // Demoted through itself: the call is forwarded to the leader, which takes the node out
    // of Raft while the node waits for the answer.
    let out = worker.shoal_ok(&["node", "demote", &ids[1]]);
    assert!(out.contains(&ids[1]), "node demote said: {out}");
    wait_node_ls(
        manager,
        CONVERGE,
        "the demoted node still has a manager status",
        |n| {
            let st = manager_statuses(n);
            st.get(&ids[0]).map(String::as_str) == Some("Leader")
                && st.get(&ids[1]).map(String::as_str) == Some("")
        },
    );
    worker.wait_for(CONVERGE, "the demoted node to stop being a manager", || {
        let out = worker.shoal(&["node", "ls"]);
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("not a swarm manager")
    });
    // The one remaining manager has quorum alone and the demoted node is still a Ready worker.
    manager.shoal_ok(&words(
        "service create -d --name after-demote --replicas 0 busybox",
    ));
    wait_all_ready(manager, &ids, CONVERGE);
}

/// `swarm init --force-new-cluster` on the one manager left of three: it leads alone at once,
/// every service is still there, it takes writes, and a new manager can join it.
#[test]
fn force_new_cluster_recovers_a_lost_quorum_keeping_the_state() {
    let mut cluster = TestCluster::new_with(3, HEARTBEAT);
    cluster.form(3, 0);
    for name in ["kept1", "kept2"] {
        cluster.host(0).shoal_ok(&create_zero_replicas(name));
    }
    let survivor = 2;
    let host = cluster.host(survivor);
    host.wait_for(CONVERGE, "both services on the survivor", || {
        let names = service_names(host);
        names.contains("kept1") && names.contains("kept2")
    });
    cluster.power_off(0);
    cluster.power_off(1);

    // Two of three managers gone: no quorum, no writes.
    let host = cluster.host(survivor);
    let refused = host.shoal(&words("service create -d --name lost --replicas 0 busybox"));
    assert!(
        !refused.status.success(),
        "a write was accepted without a quorum"
    );

    host.shoal_ok(&words("swarm init --force-new-cluster"));
    let leads = wait_until(ELECTION, || {
        leader_seen_by(host).as_deref() == Some(host.node_id().as_str())
    });
    assert!(
        leads,
        "the survivor does not lead after --force-new-cluster"
    );
    let names = service_names(host);
    assert!(
        names.contains("kept1") && names.contains("kept2"),
        "services lost by --force-new-cluster: {names:?}"
    );
    host.shoal_ok(&words(
        "service create -d --name after --replicas 0 busybox",
    ));
    assert!(service_names(host).contains("after"));
}

/// `shoal_raft_inbound_streams` on host `i`: the Raft streams other managers hold open to it.
fn inbound_streams(cluster: &TestCluster, i: usize) -> f64 {
    let text = match cluster.metrics_text(i, METRICS_PORT) {
        Ok(text) => text,
        Err(e) => panic!("{e:#}"),
    };
    match sample(&text, "shoal_raft_inbound_streams") {
        Some(v) => v,
        None => panic!("host {i}'s metrics hold no shoal_raft_inbound_streams:\n{text}"),
    }
}
