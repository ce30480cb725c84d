//! Update and rollback policies end to end, on real containers (issue 12):
//!
//! * a version that crashes, with `--update-failure-action rollback`, is rolled back on its
//!   own: the CLI says so and fails, and the service's spec is exactly the one before the
//!   update (Swarm's automatic rollback is unreliable, moby/moby#37972);
//! * the default failure action pauses the update after the first failure, leaving the other
//!   tasks on the old spec, and `service rollback` goes back by hand;
//! * start-first with parallelism 2 runs new tasks beside old ones; `--force` replaces every
//!   task of an unchanged spec;
//! * a version that never becomes healthy is rolled back the same way;
//! * bad policy values and impossible rollbacks are refused, with nothing changed.

use std::collections::BTreeSet;
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

fn update_state(host: &ShoalHost, service: &str) -> String {
    inspect_service(host, service)["update_status"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The service's spec without what the CLI fills in on every update (the policies are part of
/// the spec: they are compared too).
fn spec_of(host: &ShoalHost, service: &str) -> Value {
    inspect_service(host, service)["spec"].clone()
}

#[test]
fn a_crashing_version_is_rolled_back_to_exactly_the_previous_spec() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words(
        "service create --name web --replicas 3 --stop-grace-period 1s -e V=1 \
         --restart-delay 1s --update-failure-action rollback --update-monitor 3s \
         busybox sleep 3600",
    ));
    host.wait_for(CONVERGE, "web at 3/3", || {
        host.replicas("web").as_deref() == Some("3/3")
    });
    let before = spec_of(&host, "web");
    let old_tasks = task_ids(&host.running_containers_of("web"));

    // The new version exits at once: its first task fails, and the update rolls back.
    let err = host.shoal_err(&[
        "service",
        "update",
        "--env-add",
        "V=2",
        "--entrypoint",
        "sh -c 'exit 3'",
        "web",
    ]);
    assert!(
        err.contains("rolled back") && err.contains("early termination of task"),
        "{err}"
    );
    host.wait_for(CONVERGE, "the rollback to complete", || {
        update_state(&host, "web") == "rollback_completed"
    });
    let after = inspect_service(&host, "web");
    assert_eq!(
        after["spec"], before,
        "the rollback restores the spec exactly"
    );
    assert!(
        after.get("previous_spec").is_none_or(Value::is_null),
        "an automatic rollback clears the previous spec, as swarmkit: {after}"
    );
    host.wait_for(CONVERGE, "web at 3/3 on the old spec", || {
        host.replicas("web").as_deref() == Some("3/3")
    });
    // Stop-first, parallelism 1: the rollout stopped at the failure (a slot moves on once its
    // new task has run, so the next one may have been replaced too), and the rest of the
    // tasks never stopped.
    let now = task_ids(&host.running_containers_of("web"));
    assert!(
        !now.is_disjoint(&old_tasks),
        "old {old_tasks:?} now {now:?}"
    );
}

#[test]
fn a_failing_update_pauses_and_service_rollback_goes_back() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words(
        "service create --name api --replicas 2 --stop-grace-period 1s -e V=1 \
         --restart-delay 1s busybox sleep 3600",
    ));
    host.wait_for(CONVERGE, "api at 2/2", || {
        host.replicas("api").as_deref() == Some("2/2")
    });
    let original = spec_of(&host, "api");

    // Default policy: pause at the first failure.
    let err = host.shoal_err(&["service", "update", "--entrypoint", "false", "api"]);
    assert!(err.contains("service update paused"), "{err}");
    assert!(err.contains("shoal service rollback api"), "{err}");
    let paused = inspect_service(&host, "api");
    assert_eq!(paused["update_status"]["state"], "paused");
    let pretty = host.shoal_ok(&["service", "inspect", "--pretty", "api"]);
    assert!(pretty.contains("UpdateStatus:"), "{pretty}");
    assert!(pretty.contains("update paused due to failure"), "{pretty}");
    // Paused: the other slot still runs the old spec.
    let running = host.running_containers_of("api");
    assert!(!running.is_empty(), "slot 2 keeps its old task");

    // `service rollback` goes back by hand; the failed spec becomes the previous one.
    host.shoal_ok(&["service", "rollback", "api"]);
    let back = inspect_service(&host, "api");
    assert_eq!(back["spec"], original);
    assert_eq!(
        back["previous_spec"]["container"]["command"],
        serde_json::json!(["false"])
    );
    host.wait_for(CONVERGE, "api back at 2/2", || {
        host.replicas("api").as_deref() == Some("2/2")
    });
    host.wait_for(CONVERGE, "the rollback to complete", || {
        update_state(&host, "api") == "rollback_completed"
    });
}

#[test]
fn start_first_overlaps_and_force_replaces_every_task() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words(
        "service create --name edge --replicas 4 --stop-grace-period 1s \
         --update-parallelism 2 --update-order start-first --update-monitor 1s \
         busybox sleep 3600",
    ));
    host.wait_for(CONVERGE, "edge at 4/4", || {
        host.replicas("edge").as_deref() == Some("4/4")
    });
    let old_tasks = task_ids(&host.running_containers_of("edge"));
    let version = inspect_service(&host, "edge")["meta"]["version"].clone();

    // Nothing changes but --force: every task is replaced.
    host.shoal_ok(&words("service update -d --force edge"));
    let deadline = Instant::now() + CONVERGE;
    let (mut most, mut fewest) = (0, usize::MAX);
    let replaced = loop {
        let ids = task_ids(&host.running_containers_of("edge"));
        most = most.max(ids.len());
        fewest = fewest.min(ids.len());
        if ids.len() == 4 && ids.is_disjoint(&old_tasks) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(replaced, "--force did not replace every task");
    assert!(
        fewest >= 4,
        "start-first never runs fewer than the replicas"
    );
    assert!(most > 4 && most <= 6, "start-first, 2 at a time: {most}");
    assert_ne!(inspect_service(&host, "edge")["meta"]["version"], version);
    host.wait_for(CONVERGE, "the update to complete", || {
        update_state(&host, "edge") == "completed"
    });
}

#[test]
fn bad_policies_and_impossible_rollbacks_change_nothing() {
    let host = ShoalHost::start_swarm();
    for (flags, words_expected) in [
        ("--update-order sideways", "stop-first or start-first"),
        ("--update-max-failure-ratio 2", "between 0 and 1"),
        ("--rollback-failure-action rollback", "never rolled back"),
        (
            "--update-failure-action explode",
            "pause, continue or rollback",
        ),
        ("--update-delay soon", "soon"),
    ] {
        let cmd = format!("service create --name bad {flags} busybox sleep 1");
        let err = host.shoal_err(&words(&cmd));
        assert!(err.contains(words_expected), "{flags}: {err}");
    }
    assert!(
        host.service_ls().is_empty(),
        "nothing was created by bad flags"
    );

    host.shoal_ok(&words(
        "service create -d --name calm --replicas 0 busybox sleep 3600",
    ));
    let before = inspect_service(&host, "calm");
    let err = host.shoal_err(&["service", "rollback", "calm"]);
    assert!(err.contains("does not have a previous spec"), "{err}");
    let err = host.shoal_err(&words("service update --update-order sideways calm"));
    assert!(err.contains("stop-first or start-first"), "{err}");
    host.shoal_ok(&words("service update -d --env-add A=1 calm"));
    let err = host.shoal_err(&words("service update --rollback --env-add B=2 calm"));
    assert!(err.contains("cannot be combined"), "{err}");
    let after = inspect_service(&host, "calm");
    assert_eq!(
        after["spec"]["container"]["env"],
        serde_json::json!(["A=1"]),
        "only the good update applied"
    );
    assert_eq!(after["spec"]["name"], before["spec"]["name"]);
}

#[test]
fn a_version_that_never_becomes_healthy_is_rolled_back() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words(
        "service create --name checked --replicas 2 --stop-grace-period 1s \
         --health-cmd true --health-interval 500ms --health-retries 2 \
         --update-failure-action rollback --update-monitor 5s busybox sleep 3600",
    ));
    host.wait_for(CONVERGE, "checked at 2/2", || {
        host.replicas("checked").as_deref() == Some("2/2")
    });
    let before = spec_of(&host, "checked");

    // The new version's check never passes: its task never leaves STARTING, turns
    // unhealthy, fails, and the update rolls back.
    let err = host.shoal_err(&words("service update --health-cmd false checked"));
    assert!(err.contains("rolled back"), "{err}");
    host.wait_for(CONVERGE, "the rollback to complete", || {
        update_state(&host, "checked") == "rollback_completed"
    });
    assert_eq!(
        spec_of(&host, "checked"),
        before,
        "exactly the previous spec"
    );
    host.wait_for(CONVERGE, "checked at 2/2 again", || {
        host.replicas("checked").as_deref() == Some("2/2")
    });
}
