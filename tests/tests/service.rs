//! Replicated services end to end: the real `shoal` binary, a real containerd, real
//! containers. What runs is checked in containerd itself (`ctr`), not only through Shoal.
//!
//! Each test on its own host so they run in parallel: one follows a service through task
//! failure, logs (`--since` too) and removal; one through scaling and daemon crashes; one
//! checks that what a task prints while the daemon is dead is kept; one that `service logs -f`
//! takes in tasks started after it began and ends with its service.

use std::collections::BTreeSet;
use std::path::Path;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shoal_tests::daemon::{words, Container, ShoalHost};

/// How long a service may take to reach its replica count. Starting a busybox container takes
/// well under a second; the margin is for a loaded two-core CI machine.
const CONVERGE: Duration = Duration::from_secs(60);

/// Waits until exactly `n` containers of `service` run in containerd and returns them.
fn wait_running(host: &ShoalHost, service: &str, n: usize) -> Vec<Container> {
    host.wait_for(
        CONVERGE,
        &format!("exactly {n} running containers of service {service}"),
        || host.running_containers_of(service).len() == n,
    );
    host.running_containers_of(service)
}

fn wait_replicas(host: &ShoalHost, service: &str, expected: &str) {
    host.wait_for(
        CONVERGE,
        &format!("`service ls` to show {service} at {expected}"),
        || host.replicas(service).as_deref() == Some(expected),
    );
}

fn task_id(c: &Container) -> String {
    c.task_id()
        .unwrap_or_else(|| panic!("container {} has no task label: {:?}", c.id, c.labels))
        .to_string()
}

fn slot(c: &Container) -> u64 {
    c.slot()
        .unwrap_or_else(|| panic!("container {} has no slot label: {:?}", c.id, c.labels))
}

fn sorted_ids(containers: &[Container]) -> Vec<String> {
    let mut ids: Vec<String> = containers.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    ids
}

/// The process of container `id` as containerd sees it, killed as an OOM kill or crash would.
fn kill9_container(host: &ShoalHost, id: &str) {
    let task = host
        .ctr_tasks()
        .into_iter()
        .find(|t| t.id == id)
        .unwrap_or_else(|| panic!("container {id} has no containerd task"));
    kill(Pid::from_raw(task.pid as i32), Signal::SIGKILL)
        .unwrap_or_else(|e| panic!("kill -9 {} (container {id}): {e}", task.pid));
}

/// `service ps` rows whose ID is a prefix of `task_id` (the CLI may truncate IDs).
fn ps_rows_of_task(
    rows: &[std::collections::BTreeMap<String, String>],
    task_id: &str,
) -> Vec<std::collections::BTreeMap<String, String>> {
    rows.iter()
        .filter(|r| {
            let id = r.get("ID").map(String::as_str).unwrap_or_default();
            !id.is_empty() && task_id.starts_with(id)
        })
        .cloned()
        .collect()
}

fn current_state(row: &std::collections::BTreeMap<String, String>) -> &str {
    row.get("CURRENT STATE")
        .map(String::as_str)
        .unwrap_or_default()
}

/// Every file or directory under `dir` whose name contains one of `needles`.
fn paths_naming(dir: &Path, needles: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if needles.iter().any(|n| name.contains(n.as_str())) {
                found.push(entry.path().display().to_string());
            }
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(entry.path());
            }
        }
    }
    found
}

#[test]
fn service_runs_replaces_failed_tasks_logs_and_is_removed_cleanly() {
    let host = ShoalHost::start_swarm();
    let mut task_ids = BTreeSet::new();

    // (a) Three replicas: three containers in containerd, labelled with service, task, slot.
    host.shoal_ok(&words(
        "service create --name web --replicas 3 busybox sleep 3600",
    ));
    let web = wait_running(&host, "web", 3);
    let all = host.containers();
    assert_eq!(
        all.len(),
        3,
        "exactly the three task containers exist in containerd: {all:?}"
    );
    let slots: BTreeSet<u64> = web.iter().map(slot).collect();
    assert_eq!(slots, BTreeSet::from([1, 2, 3]), "one container per slot");
    let web_tasks: BTreeSet<String> = web.iter().map(task_id).collect();
    assert_eq!(web_tasks.len(), 3, "every container runs its own task");
    for c in &web {
        assert_eq!(c.image, "docker.io/library/busybox:latest", "{c:?}");
    }
    task_ids.extend(web_tasks.iter().cloned());

    host.wait_for(CONVERGE, "`service ps web` to show 3 Running tasks", || {
        let rows = host.service_ps("web");
        rows.len() == 3
            && rows.iter().all(|r| {
                current_state(r).starts_with("Running")
                    && r.get("DESIRED STATE").map(String::as_str) == Some("Running")
            })
    });
    let rows = host.service_ps("web");
    for t in &web_tasks {
        assert_eq!(
            ps_rows_of_task(&rows, t).len(),
            1,
            "`service ps web` lists task {t} (the one labelled on its container): {rows:?}"
        );
    }
    let names: BTreeSet<&str> = rows.iter().map(|r| r["NAME"].as_str()).collect();
    assert_eq!(names, BTreeSet::from(["web.1", "web.2", "web.3"]));
    wait_replicas(&host, "web", "3/3");

    // (b) A container dies: its task goes Failed and a new task takes over the same slot.
    let victim = web[0].clone();
    let victim_task = task_id(&victim);
    let victim_slot = slot(&victim);
    kill9_container(&host, &victim.id);
    host.wait_for(
        CONVERGE,
        &format!("a replacement task running in slot {victim_slot}"),
        || {
            let running = host.running_containers_of("web");
            running.len() == 3
                && running
                    .iter()
                    .any(|c| c.slot() == Some(victim_slot) && c.task_id() != Some(&victim_task))
        },
    );
    let web = host.running_containers_of("web");
    let slots: BTreeSet<u64> = web.iter().map(slot).collect();
    assert_eq!(
        slots,
        BTreeSet::from([1, 2, 3]),
        "still one container per slot"
    );
    task_ids.extend(web.iter().map(task_id));
    host.wait_for(
        CONVERGE,
        "`service ps` to show the dead task as Failed",
        || {
            ps_rows_of_task(&host.service_ps("web"), &victim_task)
                .first()
                .is_some_and(|r| current_state(r).starts_with("Failed"))
        },
    );
    let rows = host.service_ps("web");
    let dead = &ps_rows_of_task(&rows, &victim_task)[0];
    assert_eq!(dead["DESIRED STATE"], "Shutdown", "history row: {dead:?}");
    assert!(
        dead["NAME"].contains(&format!("web.{victim_slot}")),
        "the history row names the slot: {dead:?}"
    );
    assert!(
        dead["ERROR"].contains("137"),
        "the history row gives the exit code of the SIGKILLed process: {dead:?}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| current_state(r).starts_with("Running"))
            .count(),
        3,
        "three running tasks besides the history row: {rows:?}"
    );

    // (f) What tasks print, on stdout and stderr, comes back through `service logs`.
    host.shoal_ok(&[
        "service",
        "create",
        "--name",
        "talker",
        "--replicas",
        "2",
        "busybox",
        "sh",
        "-c",
        "echo out-line-$(hostname); echo err-line >&2; sleep 3600",
    ]);
    let talker = wait_running(&host, "talker", 2);
    task_ids.extend(talker.iter().map(task_id));
    // As with docker, the tasks' stdout lines come out on stdout and their stderr on stderr.
    let logs = || {
        let out = host.shoal(&words("service logs talker"));
        assert!(
            out.status.success(),
            "`service logs talker` failed: {out:?}"
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let count = |text: &str, marker: &str| text.lines().filter(|l| l.contains(marker)).count();
    host.wait_for(
        CONVERGE,
        "both talker tasks' lines in `service logs`",
        || {
            let (out, err) = logs();
            count(&out, "out-line-") >= 2 && count(&err, "err-line") >= 2
        },
    );
    let (out, err) = logs();
    assert_eq!(
        count(&out, "out-line-"),
        2,
        "one stdout line per task:\n{out}"
    );
    assert_eq!(
        count(&err, "err-line"),
        2,
        "one stderr line per task:\n{err}"
    );
    assert_eq!(
        count(&out, "err-line"),
        0,
        "stderr stays off stdout:\n{out}"
    );
    // `--since` keeps the lines from that time on: an hour back has them all, a time to come
    // none; a value that is no time is refused with the forms it takes.
    let since = |when: &str| host.shoal_ok(&["service", "logs", "--since", when, "talker"]);
    assert_eq!(count(&since("1h"), "out-line-"), 2);
    assert_eq!(count(&since("2099-01-01T00:00:00Z"), "out-line-"), 0);
    let err = host.shoal_err(&words("service logs --since soon talker"));
    assert!(err.contains("invalid --since value \"soon\""), "{err}");
    for line in out
        .lines()
        .chain(err.lines())
        .filter(|l| l.contains("-line"))
    {
        assert!(
            line.contains("talker.1") || line.contains("talker.2"),
            "each line names the task it came from: {line:?}"
        );
    }

    // (d) Removal leaves nothing: no container, task, writable snapshot or task directory.
    host.shoal_ok(&words("service rm web"));
    host.shoal_ok(&words("service rm talker"));
    host.wait_for(CONVERGE, "every container and task to be gone", || {
        host.containers().is_empty() && host.ctr_tasks().is_empty()
    });
    let err = host.shoal_err(&words("service ps web")).to_lowercase();
    assert!(
        err.contains("no such service: web"),
        "`service ps` of a removed service says there is no such service: {err}"
    );
    assert!(host.service_ls().is_empty(), "`service ls` is empty");
    host.wait_for(CONVERGE, "only image-layer snapshots to remain", || {
        host.snapshots()
            .iter()
            .all(|s| s.kind == "Committed" && s.key.starts_with("sha256:"))
    });
    assert!(
        !host.snapshots().is_empty(),
        "the image's layer snapshots stay for the next service"
    );
    host.wait_for(
        CONVERGE,
        "the removed tasks' directories and logs to go",
        || paths_naming(&host.data_dir(), &task_ids).is_empty(),
    );
}

#[test]
fn service_scales_and_survives_daemon_crashes() {
    let mut host = ShoalHost::start_swarm();
    host.shoal_ok(&words(
        "service create --name web --replicas 3 busybox sleep 3600",
    ));
    let before = sorted_ids(&wait_running(&host, "web", 3));
    wait_replicas(&host, "web", "3/3");
    let containers_before = host.containers().len();

    // (e) kill -9 the daemon: containers keep running under their shims; a new daemon reads
    // the service back from its Raft data and adopts them instead of starting new ones.
    host.kill9();
    assert_eq!(
        sorted_ids(&host.running_containers_of("web")),
        before,
        "containers outlive the daemon"
    );
    host.start_daemon();
    let listed = host.service_ls();
    assert!(
        listed
            .iter()
            .any(|r| r.get("NAME").map(String::as_str) == Some("web")),
        "the service is recovered from the data dir: {listed:?}"
    );
    wait_replicas(&host, "web", "3/3");
    // Give the restarted orchestrator and worker time to (wrongly) start extra tasks.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(
        sorted_ids(&host.running_containers_of("web")),
        before,
        "the running containers are adopted, not replaced or duplicated"
    );
    assert_eq!(
        host.containers().len(),
        containers_before,
        "no new containers"
    );
    let rows = host.service_ps("web");
    assert_eq!(rows.len(), 3, "no new tasks after the restart: {rows:?}");
    assert!(
        rows.iter().all(|r| current_state(r).starts_with("Running")),
        "{rows:?}"
    );

    // A task that dies while the daemon is down is noticed and replaced once it is back.
    host.kill9();
    let victim = host
        .running_containers_of("web")
        .into_iter()
        .next()
        .expect("a running web container");
    kill9_container(&host, &victim.id);
    host.start_daemon();
    host.wait_for(
        CONVERGE,
        "the task that died while the daemon was down to be replaced",
        || {
            let running = host.running_containers_of("web");
            running.len() == 3 && running.iter().all(|c| c.id != victim.id)
        },
    );
    let after = sorted_ids(&host.running_containers_of("web"));
    let kept: Vec<&String> = before.iter().filter(|id| after.contains(id)).collect();
    assert_eq!(
        kept.len(),
        2,
        "the two live containers are adopted, only the dead one is replaced: before {before:?}, \
         after {after:?}"
    );
    wait_replicas(&host, "web", "3/3");

    // (c) Scaling up and down: the containers follow the replica count.
    host.shoal_ok(&words("service scale web=5"));
    let web = wait_running(&host, "web", 5);
    let slots: BTreeSet<u64> = web.iter().map(slot).collect();
    assert_eq!(
        slots,
        BTreeSet::from([1, 2, 3, 4, 5]),
        "slots 4 and 5 are added"
    );
    wait_replicas(&host, "web", "5/5");

    host.shoal_ok(&words("service scale web=1"));
    wait_running(&host, "web", 1);
    wait_replicas(&host, "web", "1/1");
    let running_rows = host
        .service_ps("web")
        .into_iter()
        .filter(|r| r.get("DESIRED STATE").map(String::as_str) == Some("Running"))
        .count();
    assert_eq!(running_rows, 1, "one task is meant to run");

    host.shoal_ok(&words("service rm web"));
    host.wait_for(CONVERGE, "every container to be gone", || {
        host.containers().is_empty()
    });
}

/// The log driver is the shim's child, not the daemon's: what a task prints while the daemon is
/// dead (kill -9) is all kept, on stdout and stderr, in order, with no gap.
#[test]
fn logs_printed_while_the_daemon_is_dead_are_kept() {
    let mut host = ShoalHost::start_swarm();
    host.shoal_ok(&[
        "service",
        "create",
        "--name",
        "counter",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 100000 ]; do echo out-$i; echo err-$i >&2; i=$((i+1)); \
         sleep 0.05; done; sleep 3600",
    ]);
    wait_running(&host, "counter", 1);
    let numbers = |text: &str, prefix: &str| -> Vec<u64> {
        text.lines()
            .filter_map(|l| l.rsplit(prefix).next()?.trim().parse().ok())
            .collect()
    };
    let logs = |host: &ShoalHost| {
        let out = host.shoal(&words("service logs counter"));
        assert!(out.status.success(), "`service logs` failed: {out:?}");
        (
            numbers(&String::from_utf8_lossy(&out.stdout), "out-"),
            numbers(&String::from_utf8_lossy(&out.stderr), "err-"),
        )
    };
    host.wait_for(CONVERGE, "the counter's first lines", || {
        !logs(&host).0.is_empty()
    });
    host.kill9();
    // About 40 lines per stream go by while no daemon runs.
    thread::sleep(Duration::from_secs(2));
    host.start_daemon();
    let printed_after = |host: &ShoalHost| {
        let (out, err) = logs(host);
        out.len() > 60 && err.len() > 60
    };
    host.wait_for(CONVERGE, "the counter's lines since the restart", || {
        printed_after(&host)
    });
    let (out, err) = logs(&host);
    for (stream, got) in [("stdout", out), ("stderr", err)] {
        let want: Vec<u64> = (0..got.len() as u64).collect();
        assert_eq!(got, want, "{stream}: every line, in order, none lost");
    }
}

/// A `shoal service logs -f` running beside the test, killed when dropped.
struct Follower(std::process::Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn logs_follow_takes_in_tasks_started_after_it_began() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "chatty",
        "busybox",
        "sh",
        "-c",
        "echo hello-from-$(hostname); sleep 3600",
    ]);
    let out_path = host.dir().join("follow.out");
    let out = std::fs::File::create(&out_path).expect("create the follower's output");
    let mut follower = Follower(
        host.shoal_command(&words("service logs -f chatty"))
            .stdout(out)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start `service logs -f`"),
    );
    let hellos = || {
        std::fs::read_to_string(&out_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("hello-from-"))
            .map(str::to_string)
            .collect::<BTreeSet<String>>()
    };
    host.wait_for(
        CONVERGE,
        "the first task's line in the followed log",
        || hellos().len() == 1,
    );
    // Tasks placed after the follow began come in too, from their first line.
    host.shoal_ok(&words("service scale -d chatty=3"));
    host.wait_for(CONVERGE, "the new tasks' lines in the followed log", || {
        hellos().len() == 3
    });
    // Removing the service ends the follow by itself.
    host.shoal_ok(&words("service rm chatty"));
    host.wait_for(
        CONVERGE,
        "`service logs -f` to end with its service",
        || matches!(follower.0.try_wait(), Ok(Some(_))),
    );
}
