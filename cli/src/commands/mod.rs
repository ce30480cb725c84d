//! The client commands, one module per command group as docker groups them.

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
pub fn report_each(errors: &[anyhow::Error]) -> anyhow::Result<()> {
    if errors.is_empty() {
        return Ok(());
    }
    for e in errors {
        eprintln!("{e:#}");
    }
    Err(AlreadyReported.into())
}
