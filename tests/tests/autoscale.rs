//! The autoscaler end to end, on real containers:
//!
//! * CPU: tasks that burn CPU against a 0.2 CPU limit for a fixed time after they start make a
//!   `--autoscale-cpu 50%` service grow; once every task is idle it shrinks back to its minimum
//!   after the (short) scale-down window. A daemon restart in between (a new leader) does not
//!   shrink it early. Scaling it by hand is refused.
//! * PromQL: policies evaluated by a real Prometheus server (Debian's `prometheus`, started on
//!   127.0.0.1 with a temporary storage dir): bad queries are refused at creation with
//!   Prometheus's own message, a server that cannot be reached refuses the policy at creation
//!   and, at run time, holds the replica count with the reason in `service inspect`.

use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::daemon::{free_loopback_port, words, ShoalHost};
use shoal_tests::listing::inspect_service;
use shoal_tests::prometheus::Prometheus;
use shoal_tests::workloads::create_cpu_burner;

/// Each task burns CPU for this long after it starts, then sleeps.
const BURN_SECONDS: u64 = 45;

/// The service's replica count as stored (the autoscaler's decision).
fn desired(host: &ShoalHost, service: &str) -> u64 {
    inspect_service(host, service)["spec"]["replicas"]
        .as_u64()
        .unwrap_or(0)
}

fn decisions(host: &ShoalHost, service: &str) -> Vec<Value> {
    inspect_service(host, service)["autoscale_status"]["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn status_message(host: &ShoalHost, service: &str) -> String {
    inspect_service(host, service)["autoscale_status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn cpu_load_scales_up_and_idle_scales_back_to_min() {
    let mut host = ShoalHost::start_swarm();
    create_cpu_burner(&host, "burn", BURN_SECONDS, "15s");
    assert_eq!(desired(&host, "burn"), 1, "starts at the minimum");

    // Scaling an autoscaled service by hand is refused, naming the way out.
    let err = host.shoal_err(&words("service scale -d burn=3"));
    assert!(
        err.contains(
            "service burn is autoscaled (min 1, max 4): change the bounds with `shoal service \
             update --autoscale-min/--autoscale-max`, or disable autoscaling first"
        ),
        "{err}"
    );

    // One task at its limit is 100 % against a 50 % target: the service grows.
    host.wait_for(
        Duration::from_secs(90),
        "the autoscaler to add a replica under load",
        || desired(&host, "burn") > 1,
    );
    host.wait_for(
        Duration::from_secs(60),
        "a second burning task to run",
        || host.running_containers_of("burn").len() >= 2,
    );
    let up = decisions(&host, "burn");
    let first = up.first().unwrap_or_else(|| panic!("no decision recorded"));
    assert_eq!(first["from_replicas"], 1, "{first}");
    let reason = first["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("CPU ")
            && reason.contains("% of limit")
            && reason.contains("target 50%"),
        "{reason}"
    );

    // A new leader (the daemon restarted) does not shrink the service before a full down
    // window has passed, whatever it measures first.
    let before = desired(&host, "burn");
    host.kill9();
    host.restart();
    let restarted = Instant::now();
    while restarted.elapsed() < Duration::from_secs(10) {
        let now = desired(&host, "burn");
        assert!(
            now >= before,
            "shrank from {before} to {now} right after the restart"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Every task stops burning BURN_SECONDS after it started: back to the minimum after the
    // down window.
    host.wait_for(
        Duration::from_secs(BURN_SECONDS * 4 + 60),
        "the autoscaler to scale back to 1 once idle",
        || desired(&host, "burn") == 1,
    );
    host.wait_for(Duration::from_secs(60), "one task left running", || {
        host.running_containers_of("burn").len() == 1
    });
    let all = decisions(&host, "burn");
    let last = all.last().cloned().unwrap_or_default();
    assert_eq!(last["to_replicas"], 1, "{all:?}");
    assert!(last["from_replicas"].as_u64().unwrap_or(0) > 1, "{all:?}");
    assert_eq!(status_message(&host, "burn"), "", "nothing held it");
    let pretty = host.shoal_ok(&words("service inspect --pretty burn"));
    assert!(pretty.contains("\nAutoscale:\n Min Replicas:"), "{pretty}");
    assert!(pretty.contains(" -> 1: CPU "), "{pretty}");

    // Disabling keeps the count and hands it back to the user.
    host.shoal_ok(&words("service update -d --autoscale-disable burn"));
    host.shoal_ok(&words("service scale -d burn=2"));
    assert_eq!(desired(&host, "burn"), 2);
}

/// A Prometheus server scraping itself (so that it answers queries), on 127.0.0.1.
fn start_prometheus() -> Prometheus {
    Prometheus::start(|dir, port| {
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    \
                 static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            ),
        )
        .expect("write the Prometheus config");
    })
}

fn create_query_service(host: &ShoalHost, name: &str, query: &str) -> std::process::Output {
    host.shoal(&[
        "service",
        "create",
        "-d",
        "--name",
        name,
        "--stop-grace-period",
        "1s",
        "--autoscale-max",
        "3",
        "--autoscale-query",
        query,
        "--autoscale-target",
        "100",
        "--autoscale-down-window",
        "5s",
        "busybox",
        "sleep",
        "3600",
    ])
}

fn stderr_of(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn query_policies_through_a_real_prometheus() {
    let host = ShoalHost::start_swarm();

    // No Prometheus configured: a query policy cannot be checked, nor evaluated.
    let err = stderr_of(&create_query_service(&host, "q", "vector(150)"));
    assert!(
        err.contains("no Prometheus server is configured for the swarm")
            && err.contains("shoal swarm update --prometheus-url URL"),
        "{err}"
    );
    let err = host.shoal_err(&words("swarm update --prometheus-url 127.0.0.1:9090"));
    assert!(err.contains("invalid Prometheus URL"), "{err}");

    // Configured but not answering: refused at creation.
    let dead = format!("http://127.0.0.1:{}", free_loopback_port());
    host.shoal_ok(&["swarm", "update", "--prometheus-url", &dead]);
    let err = stderr_of(&create_query_service(&host, "q", "vector(150)"));
    assert!(
        err.contains(&format!("cannot reach Prometheus at {dead}")),
        "{err}"
    );

    let prometheus = start_prometheus();
    host.shoal_ok(&["swarm", "update", "--prometheus-url", &prometheus.url()]);

    // Unbalanced brackets never reach the server; what only Prometheus's parser sees comes
    // back in its words.
    let err = stderr_of(&create_query_service(&host, "q", "sum(rate(up[1m])"));
    assert!(err.contains("'(' at position 4 is never closed"), "{err}");
    let err = stderr_of(&create_query_service(&host, "q", "sum(up) by"));
    assert!(
        err.contains("invalid autoscale query: Prometheus refused the query (bad_data)"),
        "{err}"
    );
    // Several series cannot be compared with one target: refused outright.
    let err = stderr_of(&create_query_service(
        &host,
        "q",
        "label_replace(vector(1), \"a\", \"x\", \"\", \"\") or label_replace(vector(2), \"a\", \"y\", \"\", \"\")",
    ));
    assert!(err.contains("the query returned 2 series"), "{err}");

    // 150 against a target of 100: 1 → 2 → 3 (the maximum).
    let out = create_query_service(&host, "q", "vector(150)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    host.wait_for(Duration::from_secs(60), "q to reach its maximum 3", || {
        desired(&host, "q") == 3
    });
    let d = decisions(&host, "q");
    assert_eq!(d[0]["reason"], "query value 150, target 100", "{d:?}");
    assert_eq!(
        (d[0]["from_replicas"].as_u64(), d[0]["to_replicas"].as_u64()),
        (Some(1), Some(2))
    );

    // Prometheus goes away: the count is held, and inspect says why.
    let mut prometheus = prometheus;
    prometheus.stop();
    host.wait_for(
        Duration::from_secs(30),
        "the autoscaler to report Prometheus unreachable",
        || status_message(&host, "q").contains("cannot reach Prometheus"),
    );
    let message = status_message(&host, "q");
    assert!(message.ends_with("; holding 3 replicas"), "{message}");
    // Longer than the down window and two evaluation periods: still 3.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(desired(&host, "q"), 3);
    let pretty = host.shoal_ok(&words("service inspect --pretty q"));
    assert!(pretty.contains("cannot reach Prometheus"), "{pretty}");

    // Back, with a query well under target: the message clears and q shrinks to 1.
    let prometheus = prometheus.restart();
    host.shoal_ok(&words("service update -d --autoscale-query vector(10) q"));
    host.wait_for(Duration::from_secs(60), "q to shrink to 1", || {
        desired(&host, "q") == 1
    });
    assert_eq!(status_message(&host, "q"), "");
    host.wait_for(Duration::from_secs(60), "one task of q running", || {
        host.running_containers_of("q").len() == 1
    });
    drop(prometheus);
}
