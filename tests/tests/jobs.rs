//! Jobs end to end, on real containers (issue 12): `--mode replicated-job` runs its completions
//! once per slot, at most `--max-concurrent` at once, and `service ls` counts them;
//! `--mode global-job` runs once per node and again after an update; a job that cannot
//! complete makes the CLI say so; bad job flags are refused with nothing stored.

use std::time::{Duration, Instant};

use shoal_tests::daemon::{words, ShoalHost};
use shoal_tests::listing::tasks;

const DONE: Duration = Duration::from_secs(90);

fn replicas_cell(host: &ShoalHost, name: &str) -> String {
    host.replicas(name).unwrap_or_default()
}

#[test]
fn a_replicated_job_runs_once_per_slot_at_most_max_concurrent_at_once() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "batch",
        "--mode",
        "replicated-job",
        "--replicas",
        "4",
        "--max-concurrent",
        "2",
        "busybox",
        "sh",
        "-c",
        "sleep 2; echo done",
    ]);
    let deadline = Instant::now() + DONE;
    let mut most = 0;
    while Instant::now() < deadline && !replicas_cell(&host, "batch").contains("(4/4 completed)") {
        most = most.max(host.running_containers_of("batch").len());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(replicas_cell(&host, "batch"), "0/0 (4/4 completed)");
    assert!(
        (1..=2).contains(&most),
        "at most 2 at once, seen {most} running"
    );
    // Once per slot: four tasks, all complete, and no more come.
    std::thread::sleep(Duration::from_secs(3));
    let all = tasks(&host, "batch");
    assert_eq!(all.len(), 4, "{all:?}");
    for t in &all {
        assert_eq!(t["DesiredState"], "Complete", "{t}");
        assert!(
            t["CurrentState"]
                .as_str()
                .unwrap_or("")
                .starts_with("Complete"),
            "{t}"
        );
    }
    let logs = host.shoal_ok(&["service", "logs", "--raw", "batch"]);
    assert_eq!(logs.matches("done").count(), 4, "{logs}");
    let ls = host.shoal_ok(&["service", "ls"]);
    assert!(ls.contains("replicated job"), "{ls}");
}

#[test]
fn a_global_job_runs_once_per_node_and_again_after_an_update() {
    let host = ShoalHost::start_swarm();
    // Without -d the CLI follows the job to its end.
    let out = host.shoal_ok(&words(
        "service create --name once --mode global-job busybox echo hello",
    ));
    assert!(out.contains("job complete"), "{out}");
    assert_eq!(replicas_cell(&host, "once"), "0/0 (1/1 completed)");
    let pretty = host.shoal_ok(&["service", "inspect", "--pretty", "once"]);
    assert!(pretty.contains("Global Job"), "{pretty}");

    // An update is a new run.
    let out = host.shoal_ok(&words("service update --env-add RUN=2 once"));
    assert!(out.contains("job complete"), "{out}");
    let logs = host.shoal_ok(&["service", "logs", "--raw", "once"]);
    assert!(logs.matches("hello").count() >= 1, "{logs}");
    let current: Vec<_> = tasks(&host, "once")
        .into_iter()
        .filter(|t| {
            t["CurrentState"]
                .as_str()
                .unwrap_or("")
                .starts_with("Complete")
        })
        .collect();
    assert!(!current.is_empty());
}

#[test]
fn a_job_that_cannot_complete_and_bad_job_flags_are_reported() {
    let host = ShoalHost::start_swarm();
    let err = host.shoal_err(&words(
        "service create --name doomed --mode replicated-job --restart-condition none \
         busybox false",
    ));
    assert!(err.contains("cannot complete"), "{err}");
    assert!(err.contains("doomed.1"), "{err}");
    host.shoal_ok(&words("service rm doomed"));

    for (flags, expected) in [
        (
            "--mode replicated-job --restart-condition any",
            "cannot be used with jobs",
        ),
        (
            "--max-concurrent 2",
            "only be used with --mode replicated-job",
        ),
        ("--mode global-job --replicas 2", "replicated-job mode"),
        ("--mode global-job --max-concurrent 1", "replicated-job"),
        ("--mode batch", "invalid value 'batch'"),
    ] {
        let cmd = format!("service create --name bad {flags} busybox true");
        let err = host.shoal_err(&words(&cmd));
        assert!(err.contains(expected), "{flags}: {err}");
    }
    assert!(host.service_ls().is_empty(), "nothing was created");
}
