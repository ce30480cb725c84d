//! Metrics end to end: a real daemon started with `--metrics-addr`, a service on real
//! containers, Debian's `promtool` on what the daemon serves and on the shipped Prometheus
//! files, and a real Prometheus server (127.0.0.1, its own storage, the shipped config with
//! only the targets and intervals changed) that must scrape the daemon, per-task CPU included.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use shoal_tests::daemon::{free_loopback_port, run_with_timeout, wait_until, ShoalHost};
use shoal_tests::http::{http_get, http_request, sample};
use shoal_tests::prometheus::Prometheus;

/// How long the daemon may take to export something it should (a task's first usage report
/// comes within one report period, 5 s, of the task starting).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(60);
const PROMTOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

/// The daemon's /metrics in Prometheus' text format (what curl gets).
fn scrape(port: u16) -> String {
    let (status, headers, body) =
        http_get(port, "/metrics", None).expect("the metrics endpoint answers");
    assert_eq!(status, "HTTP/1.0 200 OK", "{headers}\n{body}");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    body
}

/// Every sample line of metric `name` (any labels).
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
        .collect()
}

/// Runs promtool with `args`, feeding it `stdin`; returns (success, its output).
fn promtool(args: &[&str], stdin: Option<&str>, dir: &Path) -> (bool, String) {
    let mut cmd = Command::new("promtool");
    cmd.args(args).current_dir(dir);
    let out = match stdin {
        None => run_with_timeout(&mut cmd, PROMTOOL_TIMEOUT),
        Some(input) => {
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run promtool ({e}): install Debian's prometheus package")
                });
            let mut pipe = child.stdin.take().expect("stdin is piped");
            let input = input.to_string();
            let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
            let out = child.wait_with_output().expect("wait for promtool");
            let _ = writer.join();
            out
        }
    };
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn shipped_prometheus_files_pass_promtool() {
    let dir = packaging().join("prometheus");
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "rules", "alerts.yml"],
        // The alerts' logic, on made-up series.
        &["test", "rules", "alerts_test.yml"],
    ] {
        let (ok, out) = promtool(args, None, &dir);
        assert!(ok, "promtool {} failed:\n{out}", args.join(" "));
    }
}

/// A Prometheus server running the shipped configuration, with the targets pointed at the
/// test's daemon (`manager_target`) and 1 s scrape and evaluation intervals.
fn start_prometheus(manager_target: &str) -> Prometheus {
    Prometheus::start(|dir, _| {
        let shipped = packaging().join("prometheus");
        let config = std::fs::read_to_string(shipped.join("prometheus.yml")).expect("config");
        for interval in ["scrape_interval: 15s", "evaluation_interval: 15s"] {
            assert!(
                config.contains(interval),
                "the shipped prometheus.yml no longer has `{interval}`; update this test"
            );
        }
        let config = config
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
        std::fs::write(dir.join("prometheus.yml"), config).expect("write the config");
        std::fs::copy(shipped.join("alerts.yml"), dir.join("alerts.yml")).expect("copy the alerts");
        let targets = dir.join("targets");
        std::fs::create_dir_all(&targets).expect("targets dir");
        std::fs::write(
            targets.join("managers.yml"),
            format!("- targets: ['{manager_target}']\n"),
        )
        .expect("write the manager targets");
        std::fs::write(targets.join("workers.yml"), "[]\n").expect("write the worker targets");
    })
}

/// The metric names `text` (PromQL or JSON holding PromQL) refers to.
fn shoal_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("shoal_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if boundary {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

#[test]
fn a_daemon_serves_metrics_that_promtool_and_prometheus_accept() {
    let port = free_loopback_port();
    let addr = format!("127.0.0.1:{port}");
    let host = ShoalHost::start_with(&["--metrics-addr", &addr]);

    // Not in a swarm: the process and build series, nothing of a manager.
    let text = scrape(port);
    assert!(text.contains("\nshoal_build_info{version=\""), "{text}");
    assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
    assert!(!text.contains("shoal_raft_term"), "{text}");

    host.swarm_init();
    host.load_busybox();
    // Each task burns some CPU, then idles: its CPU counter must be above zero.
    host.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; sleep 3600",
    ]);

    let cpu_of_web = |text: &str| -> Vec<f64> {
        samples(text, "shoal_task_cpu_seconds_total")
            .into_iter()
            .filter(|l| l.contains("service=\"web\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect()
    };
    let mut text = String::new();
    let exported = wait_until(EXPORT_TIMEOUT, || {
        text = scrape(port);
        let cpu = cpu_of_web(&text);
        cpu.len() == 2 && cpu.iter().all(|&c| c > 0.0)
    });
    assert!(
        exported,
        "no per-task CPU above zero for both tasks of web:\n{text}\ndaemon log:\n{}",
        host.daemon_log()
    );

    // Per task: every label, and the task IDs are the service's.
    let ps = host.shoal_ok(&["service", "ps", "-q", "--no-trunc", "web"]);
    for line in samples(&text, "shoal_task_cpu_seconds_total") {
        assert!(
            line.contains("task=\"")
                && line.contains("slot=\"")
                && line.contains("node=\"")
                && ps
                    .lines()
                    .any(|id| !id.is_empty() && line.contains(id.trim())),
            "{line} (service ps -q: {ps})"
        );
    }
    assert_eq!(
        samples(&text, "shoal_task_memory_working_set_bytes")
            .iter()
            .filter(|l| l.contains("service=\"web\""))
            .count(),
        2,
        "{text}"
    );
    for series in [
        "shoal_raft_is_leader",
        "shoal_raft_has_leader",
        "shoal_raft_voters",
        "shoal_raft_voters_reachable",
        r#"shoal_service_replicas_desired{service="web"}"#,
        r#"shoal_service_usage_tasks{service="web"}"#,
        r#"shoal_nodes{role="manager",state="ready",availability="active"}"#,
        "shoal_dispatcher_sessions",
    ] {
        assert_eq!(
            sample(&text, series),
            Some(if series.contains("web") { 2.0 } else { 1.0 }),
            "{series} in:\n{text}"
        );
    }
    for counted in [
        "shoal_raft_proposal_duration_seconds_count",
        "shoal_raft_apply_duration_seconds_count",
        "shoal_raft_log_append_entries_count",
        "shoal_raft_log_append_entries_sum",
        "shoal_raft_commit_index",
        r#"shoal_api_requests_total{server="local",service="shoal.v1.Control",method="CreateService",code="OK"}"#,
        r#"shoal_api_requests_total{server="dispatcher",service="shoal.v1.Dispatcher",method="ReportUsage",code="OK"}"#,
    ] {
        assert!(
            sample(&text, counted).is_some_and(|v| v >= 1.0),
            "{counted} in:\n{text}"
        );
    }
    // A single manager: no other manager streams Raft messages to it.
    assert_eq!(
        sample(&text, "shoal_raft_inbound_streams"),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(&text, "shoal_scheduler_latency_seconds_count").is_some_and(|v| v >= 2.0),
        "both tasks' scheduling latency:\n{text}"
    );
    assert!(
        sample(&text, "shoal_dispatcher_message_tasks_count").is_some_and(|v| v >= 1.0)
            && sample(&text, "shoal_dispatcher_message_tasks_sum").is_some_and(|v| v >= 2.0),
        "the session messages that carried both tasks to the node:\n{text}"
    );
    // A failed call is counted with its code.
    host.shoal_err(&["service", "inspect", "no-such-service"]);
    let text = scrape(port);
    assert!(
        samples(&text, "shoal_api_requests_total")
            .iter()
            .any(|l| l.contains(r#"method="GetService",code="NotFound""#)),
        "{text}"
    );

    // promtool's linter accepts the whole exposition.
    let (ok, out) = promtool(&["check", "metrics"], Some(&text), host.dir());
    assert!(
        ok,
        "promtool check metrics:\n{out}\n--- metrics ---\n{text}"
    );

    // OpenMetrics to a client that asks for it; errors for what is not served.
    let (status, headers, body) = http_get(
        port,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    )
    .expect("the metrics endpoint answers");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert!(
        headers.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{headers}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(
        body.contains("# TYPE shoal_task_cpu_seconds counter"),
        "{body}"
    );
    let (status, _, _) = http_get(port, "/nothing", None).expect("answers");
    assert!(status.contains(" 404 "), "{status}");
    let answer = http_request(
        port,
        "POST /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.0 405"), "{answer}");

    // Every metric the shipped alerts and dashboard use is one the daemon exports.
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    let alerts = std::fs::read_to_string(packaging().join("prometheus/alerts.yml")).unwrap();
    let dashboard =
        std::fs::read_to_string(packaging().join("grafana/shoal-dashboard.json")).unwrap();
    for name in shoal_names(&alerts)
        .into_iter()
        .chain(shoal_names(&dashboard))
    {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            exported.contains(&name) || exported.contains(base),
            "{name} is used by the shipped alerts or dashboard but not exported"
        );
    }

    // A real Prometheus, on the shipped configuration, scrapes it all.
    let prometheus = start_prometheus(&addr);
    let mut last = (String::new(), String::new(), Vec::new());
    let scraped = wait_until(EXPORT_TIMEOUT, || {
        last = prometheus.query(r#"shoal_task_cpu_seconds_total{service="web"}"#);
        last.2.len() == 2
    });
    assert!(
        scraped,
        "Prometheus has no per-task CPU series of web: {last:?}\ntargets: {}",
        prometheus.api("/api/v1/targets")
    );
    for series in &last.2 {
        let m = &series["metric"];
        assert_eq!(m["job"], "shoal-managers", "{series}");
        assert_eq!(m["instance"], addr.as_str(), "{series}");
        for label in ["task", "slot", "node"] {
            assert!(
                m[label].as_str().is_some_and(|v| !v.is_empty()),
                "{label} in {series}"
            );
        }
        let value: f64 = series["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(value > 0.0, "{series}");
    }
    let (_, _, up) = prometheus.query(r#"up{job="shoal-managers"}"#);
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");

    // The shipped alerts load, and a healthy one-node swarm fires none of Shoal's critical ones.
    let rules = prometheus.api("/api/v1/rules");
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(loaded.len(), 6, "{rules}");
    assert!(
        loaded.iter().all(|r| r["health"] != "err"),
        "a shipped rule fails to evaluate: {rules}"
    );
    let (_, _, leaders) = prometheus.query("sum(shoal_raft_is_leader)");
    assert_eq!(
        leaders.first().map(|l| l["value"][1].clone()),
        Some(Value::from("1")),
        "{leaders:?}"
    );

    // Every dashboard query is valid PromQL for this server.
    let dash: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .map(|e| {
            e.replace("$__rate_interval", "1m")
                .replace("$service", ".*")
        })
        .collect();
    assert!(exprs.len() > 20, "{exprs:?}");
    for expr in exprs {
        let (status, error, _) = prometheus.query(&expr);
        assert_eq!(status, "success", "dashboard query {expr}: {error}");
    }
}

#[test]
fn a_taken_metrics_address_stops_the_daemon_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let host = ShoalHost::new_stopped(&[]);
    let mut args = host.standard_daemon_args();
    args.extend(["--metrics-addr".to_string(), addr.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, out) = host.run_daemon_expecting_exit(&args, Duration::from_secs(30));
    assert!(!status.success(), "{out}");
    assert!(
        out.contains(&format!("cannot listen on {addr} (--metrics-addr)")),
        "{out}"
    );
}
