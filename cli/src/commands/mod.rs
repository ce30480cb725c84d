//! The client commands, one module per command group as docker groups them.

pub mod flags;
pub mod image;
pub mod info;
pub mod node;
pub mod progress;
pub mod service;
pub mod swarm;

use std::fmt;

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

/// Prints the errors collected while acting on several names (docker's way for `rm` and
/// `inspect`: one bad name does not stop the others) and fails the command if there were any.
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

pub fn report_each(errors: &[anyhow::Error]) -> anyhow::Result<()> {
    if errors.is_empty() {
        return Ok(());
    }
    for e in errors {
        eprintln!("{e:#}");
    }
    Err(AlreadyReported.into())
}
