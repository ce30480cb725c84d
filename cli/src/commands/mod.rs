//! The client commands, one module per command group as docker groups them.
//!
//! What the groups share lives here or beside them, never in another group: the flag parsers
//! in [`flags`], following a service's convergence in [`progress`], and below, acting on
//! several names with docker's error reporting ([`each`], [`remove_each`], [`report_each`]),
//! and [`list_networks`] (`network ls`, and `service` mapping network names and IDs).

#[cfg(test)]
mod fixtures;
pub mod flags;
pub mod image;
pub mod info;
pub mod job_progress;
pub mod login;
pub mod network;
pub mod node;
pub mod progress;
pub mod secret;
pub mod service;
pub mod swarm;
pub mod volume;

use std::fmt;
use std::future::Future;

use shoal_proto::{Empty, Network};

use crate::client::{Client, RpcResult};

/// Every network of the swarm.
pub async fn list_networks(client: &Client) -> anyhow::Result<Vec<Network>> {
    Ok(client
        .control()
        .list_networks(Empty {})
        .await
        .or_daemon_error()?
        .networks)
}

/// The command has already printed its errors (e.g. `service rm a b` with one unknown name):
/// `main` only sets the exit status.
#[derive(Debug)]
pub struct AlreadyReported;

impl fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("one or more operations failed")
    }
}

impl std::error::Error for AlreadyReported {}

/// What `inspect` prints for the objects it found: docker's `--pretty` blocks, or one JSON
/// array (also when nothing but errors came back, docker prints `[]`); then the errors.
pub fn print_inspected<T>(
    found: &[T],
    errors: &[anyhow::Error],
    pretty: Option<fn(&T) -> String>,
    json: fn(&T) -> anyhow::Result<serde_json::Value>,
) -> anyhow::Result<()> {
    if let Some(pretty) = pretty {
        let blocks: Vec<String> = found.iter().map(pretty).collect();
        print!("{}", blocks.join("\n"));
    } else if !found.is_empty() || errors.is_empty() {
        let values = found.iter().map(json).collect::<anyhow::Result<Vec<_>>>()?;
        println!("{}", serde_json::to_string_pretty(&values)?);
    }
    report_each(errors)
}

/// Runs `op` on each item in turn, docker's way for commands that take several names (`rm`,
/// `inspect`, `scale`, `promote`…): one bad name does not stop the others. Returns what
/// succeeded and the errors, each in the order given.
pub async fn each<'a, I, T, Fut>(
    items: &'a [I],
    mut op: impl FnMut(&'a I) -> Fut,
) -> (Vec<T>, Vec<anyhow::Error>)
where
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for item in items {
        match op(item).await {
            Ok(t) => done.push(t),
            Err(e) => errors.push(e),
        }
    }
    (done, errors)
}

/// `rm` as docker does it: `remove` each name in turn, print each name removed, then the
/// errors.
pub async fn remove_each<'a, Fut>(
    names: &'a [String],
    mut remove: impl FnMut(&'a String) -> Fut,
) -> anyhow::Result<()>
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    let (_, errors) = each(names, |name| {
        let removed = remove(name);
        async move {
            removed.await?;
            println!("{name}");
            Ok(())
        }
    })
    .await;
    report_each(&errors)
}

/// Prints the errors collected while acting on several names (see [`each`]) and fails the
/// command if there were any.
pub fn report_each(errors: &[anyhow::Error]) -> anyhow::Result<()> {
    if errors.is_empty() {
        return Ok(());
    }
    for e in errors {
        eprintln!("{e:#}");
    }
    Err(AlreadyReported.into())
}
