//! `service update` and resources end to end, on real containers:
//!
//! * a changed container spec (env, limits) rolls out one task at a time, stop-first: the
//!   service never runs more tasks than its replicas, nor fewer than one less;
//! * `--limit-cpu`/`--limit-memory` reach the task's cgroup (read from the cgroup files, v1 or
//!   v2), and the new env reaches the container's process;
//! * a reservation no node can hold leaves the task PENDING with the scheduler's reason, and
//!   `node inspect --pretty` shows the resources it is accounted against.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::daemon::{words, Container, ShoalHost};
use shoal_tests::listing::inspect_service;

const CONVERGE: Duration = Duration::from_secs(90);

fn task_ids(containers: &[Container]) -> BTreeSet<String> {
    containers
        .iter()
        .filter_map(|c| c.task_id().map(str::to_string))
        .collect()
}

/// A cgroup file of container `id`, from cgroup v1 (`/sys/fs/cgroup/CONTROLLER/shoal/ID/F1`) or
/// v2 (`/sys/fs/cgroup/shoal/ID/F2`), whichever this host has.
fn cgroup_file(id: &str, controller: &str, v1: &str, v2: &str) -> String {
    let root = Path::new("/sys/fs/cgroup");
    let candidates = [
        root.join(controller).join("shoal").join(id).join(v1),
        root.join("shoal").join(id).join(v2),
    ];
    for path in &candidates {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text.trim().to_string();
        }
    }
    panic!("none of {candidates:?} can be read");
}

/// The environment of container `id`'s process, from the OCI spec containerd holds.
fn container_env(host: &ShoalHost, id: &str) -> Vec<String> {
    let info: Value = serde_json::from_str(&host.ctr(&["containers", "info", id]))
        .unwrap_or_else(|e| panic!("`ctr containers info {id}` is not JSON: {e}"));
    info["Spec"]["process"]["env"]
        .as_array()
        .unwrap_or_else(|| panic!("no process env in the spec of {id}: {info}"))
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[test]
fn update_rolls_out_one_task_at_a_time_stop_first_with_limits_in_the_cgroup() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words(
        // busybox's sleep as PID 1 ignores SIGTERM: a short grace keeps each step quick.
        "service create --name web --replicas 3 --stop-grace-period 1s -e A=1 -e B=old \
         busybox sleep 3600",
    ));
    host.wait_for(CONVERGE, "web at 3/3", || {
        host.replicas("web").as_deref() == Some("3/3")
    });
    let old_tasks = task_ids(&host.running_containers_of("web"));
    assert_eq!(old_tasks.len(), 3);

    // Detached, so the rollout can be watched from here.
    let out = host.shoal_ok(&words(
        "service update -d --env-add B=new --env-rm A --limit-cpu 0.2 --limit-memory 64M web",
    ));
    assert_eq!(out.trim(), "web", "docker prints the service name");

    // Watched until every task is new. The deadline is generous: it keeps a stuck rollout from
    // hanging the test and does not time the rollout.
    let deadline = Instant::now() + CONVERGE;
    let (mut fewest, mut most) = (usize::MAX, 0);
    let mut new_seen: Vec<usize> = Vec::new();
    let (rolled_out, ids) = loop {
        let ids = task_ids(&host.running_containers_of("web"));
        fewest = fewest.min(ids.len());
        most = most.max(ids.len());
        let fresh = ids.difference(&old_tasks).count();
        if new_seen.last() != Some(&fresh) {
            new_seen.push(fresh);
        }
        if fresh == 3 && ids.len() == 3 {
            break (true, ids);
        }
        if Instant::now() > deadline {
            break (false, ids);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        rolled_out,
        "the update did not finish: running {ids:?}, new counts seen {new_seen:?}"
    );
    assert!(
        most <= 3,
        "stop-first: never more than the replicas ({most})"
    );
    assert!(
        fewest >= 2,
        "parallelism 1: never more than one slot down ({fewest})"
    );
    assert!(
        new_seen.windows(2).all(|w| w[1] <= w[0] + 1),
        "one new task at a time: {new_seen:?}"
    );

    // The new spec is what runs: env in the process, limits in the cgroup.
    for c in host.running_containers_of("web") {
        let env = container_env(&host, &c.id);
        assert!(env.contains(&"B=new".to_string()), "{env:?}");
        assert!(!env.iter().any(|e| e.starts_with("A=")), "{env:?}");
        let quota = cgroup_file(&c.id, "cpu", "cpu.cfs_quota_us", "cpu.max");
        assert!(
            quota == "20000" || quota == "20000 100000",
            "cpu quota of {}: {quota}",
            c.id
        );
        let memory = cgroup_file(&c.id, "memory", "memory.limit_in_bytes", "memory.max");
        assert_eq!(
            memory,
            (64u64 << 20).to_string(),
            "memory limit of {}",
            c.id
        );
    }

    // The old tasks are history, shut down by the update.
    let rows = host.service_ps("web");
    assert_eq!(rows.len(), 6, "{rows:?}");
    let shutdown = rows
        .iter()
        .filter(|r| r.get("DESIRED STATE").map(String::as_str) == Some("Shutdown"))
        .count();
    assert_eq!(shutdown, 3, "{rows:?}");
    let spec = inspect_service(&host, "web");
    assert_eq!(
        spec["spec"]["container"]["resources"]["limits"]["nano_cpus"],
        200_000_000
    );
    assert_eq!(
        spec["previous_spec"]["container"]["env"],
        serde_json::json!(["A=1", "B=old"])
    );

    // Waiting for convergence (the default) shows docker's progress and ends converged.
    let out = host.shoal_ok(&words("service update --env-add C=3 web"));
    assert!(out.starts_with("web\n"), "{out}");
    assert!(out.contains("overall progress: 3 out of 3 tasks"), "{out}");
    assert!(out.contains("verify: Service converged"), "{out}");
    for c in host.running_containers_of("web") {
        assert!(container_env(&host, &c.id).contains(&"C=3".to_string()));
    }

    // Scaling through update keeps the running tasks.
    let before = task_ids(&host.running_containers_of("web"));
    host.shoal_ok(&words("service update --replicas 2 web"));
    let after = task_ids(&host.running_containers_of("web"));
    assert_eq!(after.len(), 2);
    assert!(after.is_subset(&before), "scaling replaced tasks");

    // A bad value is refused before anything changes.
    let err = host.shoal_err(&words("service update --limit-memory 1k web"));
    assert!(err.contains("below the minimum of 6MiB"), "{err}");
    let err = host.shoal_err(&words("service update --env-add B=x nope"));
    assert!(err.contains("no such service: nope"), "{err}");
}

#[test]
fn reservations_no_node_can_hold_stay_pending_with_the_reason() {
    let host = ShoalHost::start_swarm();
    let pretty = host.shoal_ok(&words("node inspect --pretty self"));
    let cpus: u64 = pretty
        .lines()
        .find_map(|l| l.trim().strip_prefix("CPUs:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no CPUs in node inspect --pretty:\n{pretty}"));
    assert!(cpus >= 1, "{pretty}");
    assert!(
        pretty.lines().any(|l| l.trim().starts_with("Memory:")),
        "{pretty}"
    );

    // Twice the node's CPUs: placed nowhere.
    let too_many = (cpus * 2).to_string();
    host.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "big",
        "--reserve-cpu",
        &too_many,
        "busybox",
        "sleep",
        "3600",
    ]);
    host.wait_for(CONVERGE, "big's task to be pending with a reason", || {
        let out = host.shoal_ok(&["service", "ps", "--no-trunc", "big"]);
        out.contains("Pending")
            && out.contains("no suitable node (insufficient resources on 1 node)")
    });
    assert!(host.running_containers_of("big").is_empty());

    // Half the node's CPUs each: two fit, the third waits.
    let half = format!("{}", cpus as f64 / 2.0);
    host.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "halves",
        "--replicas",
        "3",
        "--reserve-cpu",
        &half,
        "busybox",
        "sleep",
        "3600",
    ]);
    host.wait_for(CONVERGE, "two of three halves running", || {
        host.running_containers_of("halves").len() == 2
            && host
                .shoal_ok(&["service", "ps", "--no-trunc", "halves"])
                .contains("insufficient resources on 1 node")
    });
    // Removing the big reservation frees nothing (it never held any); scaling halves down to
    // two leaves nothing pending.
    host.shoal_ok(&words("service scale halves=2"));
    assert_eq!(host.replicas("halves").as_deref(), Some("2/2"));
}
