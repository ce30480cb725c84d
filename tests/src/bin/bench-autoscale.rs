//! Benchmark: how quickly the autoscaler reacts, on one private containerd.
//!
//! A `--autoscale-cpu` service (min 1, max 4, target 50 % of a 0.2 CPU limit) whose tasks burn
//! CPU for `--burn` seconds after they start, then sleep. Measured, from containerd itself:
//!
//! - **scale-up latency**: from the first task running (the start of load) to the first new
//!   replica running;
//! - **scale-down latency**: from the end of load (the last burning task's burn window ending)
//!   to the service being back at one running task.
//!
//! Printed with the configured windows and periods they depend on. Not a test: it asserts
//! nothing about speed.
//!
//! Usage: `bench-autoscale [--burn SECONDS] [--down-window DURATION]` (run by
//! `bench/autoscale.sh`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_tests::daemon::ShoalHost;
use shoal_tests::workloads::create_cpu_burner;

const POLL: Duration = Duration::from_millis(200);

struct Args {
    burn: u64,
    down_window: String,
}

fn parse_args() -> Result<Args> {
    let mut parsed = Args {
        burn: 60,
        down_window: "30s".into(),
    };
    let usage = "usage: bench-autoscale [--burn SECONDS] [--down-window DURATION]";
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--burn" => {
                let v = args.next().context("--burn needs a number of seconds")?;
                parsed.burn = v
                    .parse()
                    .with_context(|| format!("--burn {v}: not a number of seconds"))?;
            }
            "--down-window" => {
                parsed.down_window = args.next().context("--down-window needs a duration")?;
            }
            other => bail!("unknown argument {other}; {usage}"),
        }
    }
    Ok(parsed)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let host = ShoalHost::start_swarm();
    let created = Instant::now();
    create_cpu_burner(&host, "burn", args.burn, &args.down_window);

    // When each task was first seen running, by task ID.
    let mut started: BTreeMap<String, Instant> = BTreeMap::new();
    let mut first_new: Option<Instant> = None;
    let timeout = Duration::from_secs(args.burn * 5 + 600);
    let back_at_min = loop {
        let now = Instant::now();
        let running = host.running_containers_of("burn");
        for c in &running {
            if let Some(id) = c.task_id() {
                started.entry(id.to_string()).or_insert(now);
            }
        }
        if first_new.is_none() && running.len() >= 2 {
            first_new = Some(now);
        }
        let load_ended = started
            .values()
            .map(|s| *s + Duration::from_secs(args.burn))
            .max()
            .is_some_and(|end| now >= end);
        if first_new.is_some() && load_ended && running.len() == 1 {
            break now;
        }
        if created.elapsed() > timeout {
            bail!(
                "gave up after {timeout:?}: {} running, {} tasks seen, scaled up: {}",
                running.len(),
                started.len(),
                first_new.is_some()
            );
        }
        std::thread::sleep(POLL);
    };
    let load_start = started
        .values()
        .min()
        .copied()
        .context("no task was seen running")?;
    let load_end = started
        .values()
        .max()
        .copied()
        .context("no task was seen running")?
        + Duration::from_secs(args.burn);
    let up = first_new.context("never scaled up")? - load_start;
    let down = back_at_min.saturating_duration_since(load_end);
    let decisions = host.shoal_ok(&["service", "inspect", "--pretty", "burn"]);
    let most = started.len();

    println!(
        "autoscale benchmark (tasks burn {}s each at a 0.2 CPU limit, target 50%, min 1, max 4)",
        args.burn
    );
    println!(
        "  configured: scale-up window 0s, scale-down window {}, evaluation every {:?}, usage \
         reported every {:?}",
        args.down_window,
        shoal_manager::autoscaler::EVALUATION_PERIOD,
        shoal_worker::agent::USAGE_PERIOD,
    );
    println!(
        "  scale-up:   {:.1}s from the start of load to the first new replica running",
        up.as_secs_f64()
    );
    println!(
        "  scale-down: {:.1}s from the end of load to back at 1 running task",
        down.as_secs_f64()
    );
    println!("  tasks started in all: {most}");
    println!("\n{decisions}");
    Ok(())
}
