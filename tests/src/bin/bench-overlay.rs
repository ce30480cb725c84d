//! Benchmark: the overlay's data path against the underlay's, and how fast a new service's name
//! resolves on another host.
//!
//! On the harness's two network-namespace hosts (a manager and a worker, addresses in
//! 198.18.0.0/17, the overlay's subnet from 198.18.128.0/17), in one run:
//! - iperf3 TCP throughput and ping round trips between two tasks on the overlay, one per host,
//!   measured from inside the tasks' network namespaces (the host's iperf3 and busybox run
//!   there with `nsenter`, so the image needs neither);
//! - the same between the two hosts' underlay addresses;
//! - the time from `service create` on the manager to the new name answering a lookup made
//!   from a task on the worker (polled every 20 ms through the node's DNS server).
//!
//! Prints every figure and the overlay/underlay ratios. Not a test: it asserts nothing about
//! speed. Usage: `bench-overlay [--seconds N]` (run by `bench/overlay.sh`).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use shoal_tests::bench::{gateway, in_netns, output, overlay_addr, running_task, TIMEOUT};
use shoal_tests::cluster::TestCluster;
use shoal_tests::daemon::{wait_until, words};

fn main() -> Result<()> {
    let seconds = parse_args()?;
    let cluster = TestCluster::new(2);
    cluster.form(1, 1);
    cluster.load_busybox_everywhere();
    let (m, w) = (cluster.host(0), cluster.host(1));
    // Names the swarm does not know go to a test host with no DNS server: nothing leaves.
    let no_dns = format!("--dns {}", cluster.net().host_addr(1));
    m.shoal_ok(&words("network create --driver overlay bench"));
    for (name, role) in [("server", "manager"), ("client", "worker")] {
        m.shoal_ok(&words(&format!(
            "service create --name {name} --network bench --constraint node.role=={role} \
             {no_dns} busybox sleep 86400"
        )));
    }
    let server = running_task(m, "server")?;
    let client = running_task(w, "client")?;
    let server_ns = m.task_netns(&server);
    let client_ns = w.task_netns(&client);
    let server_ip = overlay_addr(&server_ns)?;

    println!("overlay: task {server} on host 0 ({server_ip}) ← task {client} on host 1");
    let overlay_tput = iperf(&server_ns, &client_ns, &server_ip, seconds)?;
    let overlay_rtt = ping(&client_ns, &server_ip)?;
    let underlay_ip = cluster.host(0).addr().to_string();
    println!("underlay: host 0 ({underlay_ip}) ← host 1");
    let underlay_tput = iperf(m.netns_path(), w.netns_path(), &underlay_ip, seconds)?;
    let underlay_rtt = ping(w.netns_path(), &underlay_ip)?;

    let (resolve, running) = time_to_resolve(&cluster, &client_ns, &gateway(w), &no_dns)?;

    println!();
    println!("throughput  overlay {overlay_tput:>8.0} Mbit/s   underlay {underlay_tput:>8.0} Mbit/s   ratio {:.2}×", overlay_tput / underlay_tput);
    println!("ping rtt    overlay {overlay_rtt:>8.3} ms       underlay {underlay_rtt:>8.3} ms       ratio {:.2}×", overlay_rtt / underlay_rtt);
    println!(
        "service create → name resolves on the other host: {:.3} s (its container ran after {})",
        resolve.as_secs_f64(),
        running.map_or("?".to_string(), |r| format!("{:.3} s", r.as_secs_f64()))
    );
    println!("(target: overlay throughput ≥ 0.9× underlay)");

    m.shoal_ok(&words("service rm server client probe"));
    Ok(())
}

fn parse_args() -> Result<u64> {
    let mut seconds = 10;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .context("--seconds takes a whole number of seconds")?
            }
            other => bail!("unknown argument {other:?}; usage: bench-overlay [--seconds N]"),
        }
    }
    Ok(seconds)
}

/// Mbit/s received by an iperf3 server in `server_ns` from a client in `client_ns`.
fn iperf(server_ns: &Path, client_ns: &Path, addr: &str, seconds: u64) -> Result<f64> {
    let mut server: Child = in_netns(server_ns, "iperf3", &["-s", "-1", "-B", addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    let secs = seconds.to_string();
    // The server may not listen yet: the client is retried until it reports a transfer.
    let mut result = Err(anyhow::anyhow!("iperf3 client did not run"));
    for _ in 0..50 {
        result = output(in_netns(
            client_ns,
            "iperf3",
            &["-c", addr, "-t", &secs, "-J"],
        ))
        .and_then(|json| {
            let report: Value = serde_json::from_str(&json).context("iperf3 -J output")?;
            report["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .with_context(|| format!("no transfer in iperf3's report: {}", report["error"]))
        });
        if result.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    let bps = result?;
    let mbit = bps / 1e6;
    println!("  iperf3 {seconds} s: {mbit:.0} Mbit/s");
    Ok(mbit)
}

/// Mean round trip in ms of 20 pings.
fn ping(ns: &Path, addr: &str) -> Result<f64> {
    let out = output(in_netns(
        ns,
        "busybox",
        &["ping", "-c", "20", "-i", "0.05", "-q", addr],
    ))?;
    // "round-trip min/avg/max = 0.050/0.071/0.120 ms"
    let avg = out
        .lines()
        .find_map(|l| l.split(" = ").nth(1))
        .and_then(|v| v.split('/').nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no round-trip line in ping's output: {out}"))?;
    println!("  ping: {avg:.3} ms");
    Ok(avg)
}

/// From `service create --name probe` on the manager until `probe` resolves from the client's
/// namespace through its node's DNS server; and, watched alongside, until its container runs
/// in containerd (the floor the resolution time cannot beat).
fn time_to_resolve(
    cluster: &TestCluster,
    client_ns: &Path,
    dns: &str,
    no_dns: &str,
) -> Result<(Duration, Option<Duration>)> {
    let m = cluster.host(0);
    let started = Instant::now();
    m.shoal_ok(&words(&format!(
        "service create -d --name probe --network bench {no_dns} busybox sleep 86400"
    )));
    std::thread::scope(|s| {
        let running = s.spawn(|| {
            let seen = wait_until(TIMEOUT, || {
                cluster
                    .hosts()
                    .iter()
                    .any(|h| !h.running_containers_of("probe").is_empty())
            });
            seen.then(|| started.elapsed())
        });
        let mut resolved = None;
        while started.elapsed() < TIMEOUT {
            let answered = in_netns(client_ns, "busybox", &["nslookup", "probe", dns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if answered {
                resolved = Some(started.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let running = running.join().unwrap_or(None);
        match resolved {
            Some(r) => Ok((r, running)),
            None => bail!("probe did not resolve within {TIMEOUT:?}"),
        }
    })
}
