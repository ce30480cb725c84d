//! The crate root of the `shoal-log-driver` program, compiled by `worker/build.rs` with rustc
//! alone (no crates) and carried inside the `shoal` binary; its body is the worker's
//! `logdriver/driver.rs`, where the reasons are.

#[path = "../src/logdriver/driver.rs"]
#[allow(dead_code)]
mod driver;

fn main() {
    std::process::exit(driver::main_status());
}
