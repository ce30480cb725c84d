//! What the CLI tests share: running the `shoal` binary, and a fake daemon for the client
//! side of each command.

pub mod fake_daemon;

use std::process::{Command, Output, Stdio};

/// The `shoal` binary under test, with no `SHOAL_HOST` from the environment and no stdin.
pub fn shoal() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.env_remove("SHOAL_HOST");
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to the end: (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run shoal");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}
