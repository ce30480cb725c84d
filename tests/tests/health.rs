//! Healthchecks on real containers, as Docker Swarm runs them: a task with a check is STARTING
//! (health "starting") until its first healthy probe and RUNNING (healthy) after; one that
//! turns unhealthy (its check failing, or outlasting its timeout) is stopped, FAILED
//! "container unhealthy" and replaced; the image's
//! `HEALTHCHECK` applies unless the service overrides it (field by field) or turns it off
//! (`--no-healthcheck`); `service update --health-*` rolls a new check out; bad values are
//! refused with the reason, by the CLI and by the control API, storing nothing; only healthy
//! tasks are in the service's DNS answers and behind its VIP.
//!
//! Each test runs on its own host, so they run in parallel.

use std::time::Duration;

use serde_json::{json, Value};
use shoal_proto::control_client::ControlClient;
use shoal_proto::{ContainerSpec, CreateServiceRequest, HealthConfig, ServiceSpec};
use shoal_tests::daemon::{words, ShoalHost};
use shoal_tests::listing::{inspect_service, tasks};
use shoal_tests::tasknet::{eth0_addr, lookup};

const CONVERGE: Duration = Duration::from_secs(60);

fn state(t: &Value) -> &str {
    t["CurrentState"].as_str().unwrap_or_default()
}

fn id(t: &Value) -> String {
    t["ID"].as_str().unwrap_or_default().to_string()
}

/// A task of `service` in `state` ("Running", "Starting", "Failed") whose CURRENT STATE ends
/// with `health` ("(healthy)", "(health: starting)", "" for none), if there is one now.
fn find_task(host: &ShoalHost, service: &str, st: &str, health: &str) -> Option<Value> {
    tasks(host, service).into_iter().find(|t| {
        let s = state(t);
        s.starts_with(st) && s.ends_with(health) && (!health.is_empty() || !s.contains('('))
    })
}

/// Waits for [`find_task`] to find one, and returns it.
fn wait_task(host: &ShoalHost, service: &str, st: &str, health: &str) -> Value {
    let mut found = None;
    host.wait_for(
        CONVERGE,
        &format!("a {st} {health} task of {service}"),
        || {
            found = find_task(host, service, st, health);
            found.is_some()
        },
    );
    found.unwrap_or_default()
}

/// Waits for a FAILED task of `service` with "container unhealthy" as its error.
fn wait_unhealthy(host: &ShoalHost, service: &str) -> Value {
    let mut found = None;
    host.wait_for(CONVERGE, &format!("an unhealthy task of {service}"), || {
        found = tasks(host, service).into_iter().find(|t| {
            state(t).starts_with("Failed")
                && t["Error"]
                    .as_str()
                    .is_some_and(|e| e.contains("container unhealthy"))
        });
        found.is_some()
    });
    found.unwrap_or_default()
}

/// `--health-cmd CMD` checked every 500ms, unhealthy after 2 failures, stopped within 1s.
fn fast_check(cmd: &str) -> [&str; 8] {
    [
        "--health-cmd",
        cmd,
        "--health-interval",
        "500ms",
        "--health-retries",
        "2",
        "--stop-grace-period",
        "1s",
    ]
}

fn create(host: &ShoalHost, name: &str, flags: &[&str], image_and_cmd: &[&str]) {
    let args = [
        &["service", "create", "-d", "--name", name],
        flags,
        image_and_cmd,
    ]
    .concat();
    host.shoal_ok(&args);
}

#[test]
fn a_task_is_starting_until_its_first_healthy_check_then_running_healthy() {
    let host = ShoalHost::start_swarm();
    // The check passes only once the file is there, which the test makes when it has seen the
    // task starting; the start period forgives the failures before.
    create(
        &host,
        "web",
        &[
            "--health-cmd",
            "test -f /tmp/ok",
            "--health-interval",
            "500ms",
            "--health-retries",
            "2",
            "--health-start-period",
            "30s",
        ],
        &["busybox", "sleep", "3600"],
    );
    let starting = wait_task(&host, "web", "Starting", "(health: starting)");
    // Its container runs, yet the task is not RUNNING and does not count as a replica.
    assert_eq!(host.running_containers_of("web").len(), 1);
    assert_eq!(host.replicas("web").as_deref(), Some("0/1"));
    std::thread::sleep(Duration::from_secs(2));
    let still = find_task(&host, "web", "Starting", "(health: starting)");
    assert_eq!(
        still.as_ref().map(id),
        Some(id(&starting)),
        "failing checks"
    );
    host.sh_in_task(&id(&starting), "touch /tmp/ok")
        .unwrap_or_else(|e| panic!("{e}"));

    let running = wait_task(&host, "web", "Running", "(healthy)");
    assert_eq!(id(&running), id(&starting), "the same task, now healthy");
    let table = host.shoal_ok(&words("service ps web"));
    assert!(table.contains("(healthy)"), "{table}");
    host.wait_for(CONVERGE, "web at 1/1", || {
        host.replicas("web").as_deref() == Some("1/1")
    });

    // `inspect` shows the check as given; `--pretty` too.
    let spec = inspect_service(&host, "web");
    let check = &spec["spec"]["container"]["healthcheck"];
    assert_eq!(
        check["test"],
        json!(["CMD-SHELL", "test -f /tmp/ok"]),
        "{spec}"
    );
    assert_eq!(check["interval_ms"], 500, "{spec}");
    assert_eq!(check["retries"], 2, "{spec}");
    assert_eq!(check["start_period_ms"], 30_000, "{spec}");
    let pretty = host.shoal_ok(&words("service inspect --pretty web"));
    assert!(pretty.contains("Healthcheck:"), "{pretty}");
    assert!(pretty.contains("test -f /tmp/ok"), "{pretty}");

    // The check runs as the container's own process does: its user, its environment.
    create(
        &host,
        "own",
        &[
            "--user",
            "nobody",
            "-e",
            "FOO=bar",
            "--health-cmd",
            "test \"$(id -u)\" = 65534 && test \"$FOO\" = bar",
            "--health-interval",
            "500ms",
        ],
        &["busybox", "sleep", "3600"],
    );
    wait_task(&host, "own", "Running", "(healthy)");
}

#[test]
fn a_task_that_turns_unhealthy_is_stopped_failed_and_replaced() {
    let host = ShoalHost::start_swarm();
    create(
        &host,
        "flaky",
        &fast_check("test -f /tmp/ok"),
        &["busybox", "sh", "-c", "touch /tmp/ok; exec sleep 3600"],
    );
    // A check that outlasts its timeout is killed and counts as a failure.
    create(
        &host,
        "slow",
        &[&fast_check("sleep 30")[..], &["--health-timeout", "300ms"]].concat(),
        &["busybox", "sleep", "3600"],
    );
    let first = wait_task(&host, "flaky", "Running", "(healthy)");
    // The check starts failing.
    host.sh_in_task(&id(&first), "rm /tmp/ok")
        .unwrap_or_else(|e| panic!("{e}"));
    let failed = wait_unhealthy(&host, "flaky");
    assert_eq!(id(&failed), id(&first), "the task that was healthy");
    assert!(state(&failed).ends_with("(unhealthy)"), "{failed}");
    // The orchestrator takes it out of service (desired Shutdown) as it replaces it.
    host.wait_for(CONVERGE, "the failed task to be desired Shutdown", || {
        tasks(&host, "flaky")
            .iter()
            .any(|t| id(t) == id(&first) && t["DesiredState"] == "Shutdown")
    });
    // Its container is gone, and the restart policy brings a new, healthy task.
    host.wait_for(CONVERGE, "the unhealthy container to be removed", || {
        !host
            .running_containers_of("flaky")
            .iter()
            .any(|c| c.id == id(&first))
    });
    let mut replacement = None;
    host.wait_for(CONVERGE, "a healthy replacement", || {
        replacement =
            find_task(&host, "flaky", "Running", "(healthy)").filter(|t| id(t) != id(&first));
        replacement.is_some()
    });

    let slow = wait_unhealthy(&host, "slow");
    assert_eq!(
        slow["Error"], "\"container unhealthy: the healthcheck timed out after 300ms\"",
        "{slow}"
    );
    assert!(
        tasks(&host, "slow")
            .iter()
            .all(|t| !state(t).contains("(healthy)")),
        "never healthy"
    );
}

#[test]
fn the_images_healthcheck_applies_unless_overridden_or_turned_off() {
    let host = ShoalHost::start_swarm();
    let archive = host.dir().join("checked.tar");
    shoal_tests::image::build_busybox_docker_archive_with_healthcheck(
        &archive,
        "checked:latest",
        json!({
            "Test": ["CMD-SHELL", "test -f /tmp/ok"],
            "Interval": 500_000_000u64,
            "Timeout": 2_000_000_000u64,
            "Retries": 2,
        }),
    )
    .expect("build the image with a HEALTHCHECK");
    host.shoal_ok(&["image", "load", "-i", &archive.display().to_string()]);

    // No flag: the image's check, which passes once the file is there. `create` without -d
    // waits for the task to run, which with a check means healthy.
    host.shoal_ok(&[
        "service",
        "create",
        "--name",
        "img",
        "checked",
        "sh",
        "-c",
        "touch /tmp/ok; exec sleep 3600",
    ]);
    let healthy = find_task(&host, "img", "Running", "(healthy)");
    assert!(healthy.is_some(), "{:?}", tasks(&host, "img"));

    // --no-healthcheck: never checked, so a task without the file runs on, no health shown.
    create(
        &host,
        "off",
        &["--no-healthcheck"],
        &["checked", "sleep", "3600"],
    );
    let running = wait_task(&host, "off", "Running", "");
    std::thread::sleep(Duration::from_secs(3));
    let now = tasks(&host, "off");
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(id(&now[0]), id(&running));
    assert!(
        state(&now[0]).starts_with("Running") && !state(&now[0]).contains("health"),
        "{now:?}"
    );

    // Only --health-cmd: the service's test with the image's 500ms interval and 2 retries (at
    // docker's default 30s it could not fail within the wait below).
    create(
        &host,
        "over",
        &[
            "--health-cmd",
            "test -f /tmp/other",
            "--stop-grace-period",
            "1s",
        ],
        &["checked", "sh", "-c", "touch /tmp/ok; exec sleep 3600"],
    );
    let mut failed = None;
    host.wait_for(
        Duration::from_secs(20),
        "the overridden check to fail",
        || {
            failed = tasks(&host, "over").into_iter().find(|t| {
                t["Error"]
                    .as_str()
                    .is_some_and(|e| e.contains("container unhealthy"))
            });
            failed.is_some()
        },
    );
    let spec = inspect_service(&host, "off");
    assert_eq!(
        spec["spec"]["container"]["healthcheck"]["test"],
        json!(["NONE"]),
        "{spec}"
    );
}

#[test]
fn service_update_rolls_out_a_new_check() {
    let host = ShoalHost::start_swarm();
    create(
        &host,
        "upd",
        &fast_check("true"),
        &["busybox", "sleep", "3600"],
    );
    let first = wait_task(&host, "upd", "Running", "(healthy)");

    // A check that cannot pass: the new task fails unhealthy, with the end of the check's
    // output as the reason: stdout and stderr, even what comes on stderr after stdout closed
    // (containerd 1.6's `file://` stdio lost that). Only the command changed.
    let failing = "echo checking; exec >&-; sleep 0.2; echo missing-file >&2; test -f /nonexistent";
    host.shoal_ok(&["service", "update", "-d", "--health-cmd", failing, "upd"]);
    let spec = inspect_service(&host, "upd");
    let check = &spec["spec"]["container"]["healthcheck"];
    assert_eq!(check["test"], json!(["CMD-SHELL", failing]));
    assert_eq!(check["interval_ms"], 500);
    assert_eq!(check["retries"], 2);
    let failed = wait_unhealthy(&host, "upd");
    assert_ne!(id(&failed), id(&first), "a task of the new spec");
    // Each stream has its own pipe, so either may arrive first; both must.
    let reason = failed["Error"].as_str().unwrap_or_default();
    assert!(
        [
            "\"container unhealthy: the healthcheck exited 1: checking missing-file\"",
            "\"container unhealthy: the healthcheck exited 1: missing-file checking\"",
        ]
        .contains(&reason),
        "{failed}"
    );

    // A check that passes: rolled out, healthy again.
    host.shoal_ok(&[
        "service",
        "update",
        "-d",
        "--health-cmd",
        "test -f /bin/sh",
        "upd",
    ]);
    let mut healthy = None;
    host.wait_for(CONVERGE, "a healthy task of the latest spec", || {
        healthy = find_task(&host, "upd", "Running", "(healthy)")
            .filter(|t| id(t) != id(&first) && id(t) != id(&failed));
        healthy.is_some()
    });
    host.wait_for(CONVERGE, "upd at 1/1", || {
        host.replicas("upd").as_deref() == Some("1/1")
    });
}

/// `CreateService` straight over the API socket, as another client than the CLI would call
/// it; returns the refusal.
fn create_over_api(host: &ShoalHost, test: &[&str]) -> tonic::Status {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let spec = ServiceSpec {
        name: "api".into(),
        replicas: 1,
        container: Some(ContainerSpec {
            image: "docker.io/library/busybox:latest".into(),
            healthcheck: Some(HealthConfig {
                test: test.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    rt.block_on(async {
        let channel = shoal_worker::containerd::connect_unix(&host.api_socket())
            .await
            .expect("connect to the API socket");
        ControlClient::new(channel)
            .create_service(CreateServiceRequest {
                spec: Some(Box::new(spec)),
            })
            .await
            .expect_err("a bad healthcheck test is refused")
    })
}

#[test]
fn bad_health_values_are_refused_with_the_reason_and_store_nothing() {
    let host = ShoalHost::start_swarm();
    create(
        &host,
        "keep",
        &["--health-cmd", "true", "--health-interval", "2s"],
        &["busybox", "sleep", "3600"],
    );
    let before = host.shoal_ok(&words("service ls -q"));
    let check_before = inspect_service(&host, "keep")["spec"]["container"]["healthcheck"].clone();
    let cases: [(&[&str], &str); 7] = [
        (
            &["--health-interval", "-1s"],
            "the duration cannot be negative",
        ),
        (
            &["--health-timeout", "soon"],
            "invalid --health-timeout \"soon\": expected a duration",
        ),
        (
            &["--health-start-period", "500us"],
            "must be 0 (the default) or at least 1ms",
        ),
        (
            &["--health-retries", "x"],
            "invalid --health-retries \"x\": must be a non-negative integer",
        ),
        (
            &["--health-retries", "-1"],
            "invalid --health-retries \"-1\": must be a non-negative integer",
        ),
        (
            &["--no-healthcheck", "--health-cmd", "true"],
            "--no-healthcheck conflicts with --health-* options",
        ),
        (
            &["--no-healthcheck", "--health-interval", "1s"],
            "--no-healthcheck conflicts with --health-* options",
        ),
    ];
    for (flags, expected) in cases {
        let args = [
            &["service", "create", "-d", "--name", "bad"],
            flags,
            &["busybox", "sleep", "3600"],
        ]
        .concat();
        let err = host.shoal_err(&args);
        assert!(err.contains(expected), "create {flags:?}: {err}");
        let err = host.shoal_err(&[&["service", "update", "-d"], flags, &["keep"]].concat());
        assert!(err.contains(expected), "update {flags:?}: {err}");
    }
    assert_eq!(host.shoal_ok(&words("service ls -q")), before);
    assert_eq!(
        inspect_service(&host, "keep")["spec"]["container"]["healthcheck"],
        check_before
    );

    // The control API checks the stored form itself, with the same words as the CLI's.
    let refused = create_over_api(&host, &["CMD-SHELL"]);
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    assert!(
        refused
            .message()
            .contains("CMD-SHELL takes one non-empty command string"),
        "{refused}"
    );
    let refused = create_over_api(&host, &["curl", "localhost"]);
    assert!(
        refused
            .message()
            .contains("invalid healthcheck test \"curl\": it starts with NONE, CMD or CMD-SHELL"),
        "{refused}"
    );
    assert_eq!(host.shoal_ok(&words("service ls -q")), before);
}

/// Who answers `n` requests to `url` from `task` (each its hostname), and how many failed.
fn answers(host: &ShoalHost, task: &str, url: &str, n: usize) -> Vec<String> {
    let script =
        format!("for i in $(seq {n}); do timeout 5 wget -q -O - {url} || echo FAILED; done");
    let out = host.sh_in_task(task, &script).unwrap_or_else(|e| e);
    out.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn only_healthy_tasks_get_traffic() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words("network create --driver overlay front"));
    // Two web servers, healthy only once told so (the file), never failing meanwhile.
    create(
        &host,
        "web",
        &[
            "--replicas",
            "2",
            "--network",
            "front",
            "--health-cmd",
            "test -f /tmp/ok",
            "--health-interval",
            "500ms",
            "--health-start-period",
            "10m",
        ],
        &[
            "busybox",
            "sh",
            "-c",
            "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    );
    create(
        &host,
        "client",
        &["--network", "front"],
        &["busybox", "sleep", "3600"],
    );
    let client = id(&wait_task(&host, "client", "Running", ""));
    host.wait_for(CONVERGE, "both web tasks starting", || {
        tasks(&host, "web")
            .iter()
            .filter(|t| state(t).ends_with("(health: starting)"))
            .count()
            == 2
    });
    // Up, listening, but not healthy: no DNS answer for the tasks, the VIP serves nobody.
    assert_eq!(lookup(&host, &client, "tasks.web"), Vec::<String>::new());
    let none = answers(&host, &client, "http://web/", 3);
    assert_eq!(none, ["FAILED"; 3], "{none:?}");

    // One turns healthy: it alone is named and answers.
    let web = tasks(&host, "web");
    let healthy = id(&web[0]);
    host.sh_in_task(&healthy, "touch /tmp/ok")
        .unwrap_or_else(|e| panic!("{e}"));
    wait_task(&host, "web", "Running", "(healthy)");
    let addr = eth0_addr(&host, &healthy);
    let name = host
        .sh_in_task(&healthy, "hostname")
        .unwrap_or_else(|e| panic!("{e}"));
    host.wait_for(CONVERGE, "tasks.web to name the healthy task", || {
        lookup(&host, &client, "tasks.web") == [addr.clone()]
    });
    let got = answers(&host, &client, "http://web/", 10);
    assert_eq!(got, vec![name.trim().to_string(); 10], "{got:?}");
    assert!(
        find_task(&host, "web", "Starting", "(health: starting)").is_some(),
        "the other task is still starting"
    );
}
