//! Hollow nodes for scale benchmarks — NOT a Shoal worker: N workers in one process, each a
//! tokio task with its own key, certificate (a real join with the token) and mutual-TLS
//! connection to the leader, running the real agent on an executor that starts no container
//! (see `shoal_tests::hollow`).
//!
//! Usage: `hollow-nodes --token TOKEN --manager IP:PORT --nodes N --addr IP --dir DIR`.
//!
//! Prints, on stdout, `joined N MS` once every node has its certificate (MS: how long the joins
//! took), then `tasks PREPARED STARTED STOPPED` whenever those totals change (at most every
//! 20 ms). Runs until its stdin closes (the benchmark that started it exited or dropped it),
//! then stops the agents and removes DIR.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use shoal_tests::hollow::{self, HollowStats};
use tokio::sync::watch;

const USAGE: &str =
    "usage: hollow-nodes --token TOKEN --manager IP:PORT --nodes N --addr IP --dir DIR [--join-parallel K]";
/// How often progress is looked at.
const PROGRESS: Duration = Duration::from_millis(20);
/// How long one node's join may take (1,000 joins queue at the managers).
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

struct Args {
    token: String,
    manager: String,
    nodes: usize,
    addr: String,
    dir: PathBuf,
    join_parallel: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    let (mut token, mut manager, mut addr, mut dir) = (None, None, None, None);
    let (mut nodes, mut join_parallel) = (1, 16);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context(USAGE);
        match arg.as_str() {
            "--token" => token = Some(value()?),
            "--manager" => manager = Some(value()?),
            "--addr" => addr = Some(value()?),
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--nodes" => nodes = value()?.parse().context("--nodes: a number")?,
            "--join-parallel" => {
                join_parallel = value()?.parse().context("--join-parallel: a number")?
            }
            _ => bail!("unknown argument {arg:?}; {USAGE}"),
        }
    }
    Ok(Args {
        token: token.context(USAGE)?,
        manager: manager.context(USAGE)?,
        nodes,
        addr: addr.context(USAGE)?,
        dir: dir.context(USAGE)?,
        join_parallel: join_parallel.max(1),
    })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    shoal_tests::bench::raise_nofile_limit()?;
    let runtime = tokio::runtime::Runtime::new().context("start a tokio runtime")?;
    let result = runtime.block_on(run(&args));
    // Shut down before removing the directory, so no agent writes into it meanwhile.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&args.dir);
    result
}

async fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let joined: Vec<hollow::Joined> = futures::stream::iter(0..args.nodes)
        .map(|i| async move {
            let hostname = format!("hollow-{i:04}");
            tokio::time::timeout(
                JOIN_TIMEOUT,
                hollow::join(&args.manager, &args.token, &args.addr, &hostname),
            )
            .await
            .with_context(|| format!("{hostname}: the join took over {JOIN_TIMEOUT:?}"))?
            .with_context(|| format!("{hostname}: join"))
        })
        .buffer_unordered(args.join_parallel)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    say(&format!(
        "joined {} {}",
        joined.len(),
        started.elapsed().as_millis()
    ))?;

    let stats = Arc::new(HollowStats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut agents = Vec::new();
    for (i, node) in joined.into_iter().enumerate() {
        let dir = args.dir.join(format!("node-{i:04}"));
        let (addr, stats, stop) = (args.addr.clone(), stats.clone(), stop_rx.clone());
        agents.push(tokio::spawn(async move {
            if let Err(e) = hollow::run(node, addr, dir, stats, stop).await {
                eprintln!("hollow node {i}: {e:#}");
            }
        }));
    }

    // Ends when stdin closes: whoever started us is gone or done.
    let mut stdin_closed = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let mut stdin = std::io::stdin().lock();
        while stdin.read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
    });
    let mut last = (0, 0, 0);
    loop {
        tokio::select! {
            _ = &mut stdin_closed => break,
            _ = tokio::time::sleep(PROGRESS) => {}
        }
        let now = (
            stats.prepared.load(Ordering::Relaxed),
            stats.started.load(Ordering::Relaxed),
            stats.stopped.load(Ordering::Relaxed),
        );
        if now != last {
            say(&format!("tasks {} {} {}", now.0, now.1, now.2))?;
            last = now;
        }
    }
    let _ = stop_tx.send(true);
    // The agents stop side by side; a stuck one is dropped with the runtime.
    let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(agents)).await;
    Ok(())
}

fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("write to stdout")?;
    out.flush().context("flush stdout")
}
