//! Benchmark: an HTTP server task reached directly, through its service's VIP, and through the
//! routing mesh from a node that runs no task of it.
//!
//! On the harness's two network-namespace hosts (a manager and a worker, addresses in
//! 198.18.0.0/17, overlays from 198.18.128.0/17): one busybox httpd task on the manager,
//! publishing 8080 on the mesh, and a client task on the worker. `wrk` (Debian's) runs in the
//! client task's namespace against (a) the server task's address and (b) the service's VIP,
//! both across the overlay, and (c) in the worker's own namespace against the worker's address
//! and published port, which the worker's ingress load balancer forwards to the manager's task.
//! Rounds alternate a, b, c so that the machine's noise falls on all three alike, and each
//! figure is the median of its rounds (one slow round on a noisy machine does not decide).
//!
//! Prints requests/s and p99 latency of each, and the ratios to direct. Not a test: it asserts
//! nothing about speed. Usage: `bench-lb [--seconds N] [--rounds N]` (run by `bench/lb.sh`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use shoal_tests::bench::{in_netns, output, running_task};
use shoal_tests::cluster::TestCluster;
use shoal_tests::daemon::words;

/// wrk's connections and thread: one thread leaves the other core to the server, whose busybox
/// httpd forks a process per connection.
const CONNECTIONS: &str = "8";
const THREADS: &str = "1";

fn main() -> Result<()> {
    let (seconds, rounds) = parse_args()?;
    let cluster = TestCluster::new(2);
    cluster.form(1, 1);
    cluster.load_busybox_everywhere();
    let (m, w) = (cluster.host(0), cluster.host(1));
    let no_dns = format!("--dns {}", cluster.net().host_addr(1));
    m.shoal_ok(&words("network create --driver overlay bench"));
    let create = format!(
        "service create --name web --network bench --publish 8080:80 \
         --constraint node.role==manager {no_dns} busybox sh -c"
    );
    let mut args = words(&create);
    args.push("mkdir -p /www && echo hello > /www/index.html && httpd -f -p 80 -h /www");
    m.shoal_ok(&args);
    m.shoal_ok(&words(&format!(
        "service create --name client --network bench --constraint node.role==worker \
         {no_dns} busybox sleep 86400"
    )));
    let server_ns = m.task_netns(&running_task(m, "web")?);
    let client = running_task(w, "client")?;
    let client_ns = w.task_netns(&client);
    // busybox httpd closes every connection, so each request is a new connection and the
    // server keeps it in TIME_WAIT; with tens of thousands a round, clients soon reuse a port
    // that collides with one, and the SYN waits a second to be retried. That measures the
    // benchmark, not the path: the server's namespace keeps no TIME_WAIT, and clients get
    // every ephemeral port (both namespaces are the benchmark's own).
    output(in_netns(
        &server_ns,
        "sysctl",
        &["-qw", "net.ipv4.tcp_max_tw_buckets=0"],
    ))?;
    for ns in [client_ns.as_path(), w.netns_path()] {
        output(in_netns(
            ns,
            "sysctl",
            &["-qw", "net.ipv4.ip_local_port_range=1024 65535"],
        ))?;
    }
    let network: Value = serde_json::from_str(&m.shoal_ok(&words("network inspect bench")))?;
    let bench_id = network[0]["Id"].as_str().unwrap_or_default().to_string();
    let direct_ip = network[0]["Containers"]
        .as_object()
        .and_then(|c| {
            c.values()
                .find(|e| e["Name"].as_str().is_some_and(|n| n.starts_with("web.")))
        })
        .and_then(|e| e["IPv4Address"].as_str())
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .with_context(|| format!("no web task on bench: {network:#}"))?;
    let web: Value = serde_json::from_str(&m.shoal_ok(&words("service inspect web")))?;
    let vip = web[0]["Endpoint"]["VirtualIPs"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["NetworkID"] == bench_id.as_str()))
        .and_then(|v| v["Addr"].as_str())
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .with_context(|| format!("web has no VIP on bench: {web:#}"))?;
    let mesh = format!("{}:8080", w.addr());

    let targets: [(&str, &Path, String); 3] = [
        ("direct", &client_ns, format!("http://{direct_ip}/")),
        ("vip", &client_ns, format!("http://{vip}/")),
        ("mesh", w.netns_path(), format!("http://{mesh}/")),
    ];
    let mut results = vec![Vec::new(); targets.len()];
    for round in 1..=rounds {
        for (i, (name, ns, url)) in targets.iter().enumerate() {
            let r = wrk(ns, url, seconds)?;
            println!(
                "round {round} {name:<6} {url:<28} {:>9.0} req/s  p99 {:>7.2} ms",
                r.0, r.1
            );
            results[i].push(r);
        }
    }
    let (direct_rps, direct_p99) = (median(&results[0], |r| r.0), median(&results[0], |r| r.1));
    println!("\nmedians of {rounds} rounds:");
    for (i, (name, _, _)) in targets.iter().enumerate() {
        let (rps, p99) = (median(&results[i], |r| r.0), median(&results[i], |r| r.1));
        println!(
            "{name:<6} {rps:>9.0} req/s ({:.2}× direct)   p99 {p99:>7.2} ms ({:.2}× direct)",
            rps / direct_rps,
            p99 / direct_p99
        );
    }
    println!("(targets: VIP ≥ 0.95× direct, mesh ≥ 0.9× direct, in requests/s)");
    m.shoal_ok(&words("service rm web client"));
    Ok(())
}

fn parse_args() -> Result<(u64, u32)> {
    let (mut seconds, mut rounds) = (5, 5);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next();
        match a.as_str() {
            "--seconds" => {
                seconds = value
                    .and_then(|s| s.parse().ok())
                    .context("--seconds takes a whole number of seconds")?
            }
            "--rounds" => {
                rounds = value
                    .and_then(|s| s.parse().ok())
                    .context("--rounds takes a whole number")?
            }
            other => {
                bail!("unknown argument {other:?}; usage: bench-lb [--seconds N] [--rounds N]")
            }
        }
    }
    Ok((seconds, rounds))
}

/// The median of one figure of the rounds.
fn median(rounds: &[(f64, f64)], figure: fn(&(f64, f64)) -> f64) -> f64 {
    let mut v: Vec<f64> = rounds.iter().map(figure).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Requests/s and p99 latency (ms) of `wrk` against `url` from the namespace at `ns`.
fn wrk(ns: &Path, url: &str, seconds: u64) -> Result<(f64, f64)> {
    let duration = format!("{seconds}s");
    let out = output(in_netns(
        ns,
        "wrk",
        &[
            "-t",
            THREADS,
            "-c",
            CONNECTIONS,
            "-d",
            &duration,
            "--latency",
            url,
        ],
    ))?;
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {out}"))?;
    let p99 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| parse_latency(v.trim()))
        .with_context(|| format!("no 99% latency in wrk's output: {out}"))?;
    if out.contains("Non-2xx") || out.contains("Socket errors") {
        println!("  wrk reported errors for {url}:\n{out}");
    }
    Ok((rps, p99))
}

/// wrk's "1.23ms", "456.00us", "1.02s" in milliseconds.
fn parse_latency(v: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}
