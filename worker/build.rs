//! Compiles the log driver (`src/logdriver/driver.rs`, std only) into the small
//! `shoal-log-driver` program that `src/logdriver/mod.rs` embeds; see there for why it is a
//! program of its own. rustc alone builds it: it uses no crate.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=logdriver/main.rs");
    println!("cargo:rerun-if-changed=src/logdriver/driver.rs");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let status = Command::new(rustc)
        .args([
            "--edition=2021",
            "--crate-type=bin",
            "--crate-name=shoal_log_driver",
            "--target",
            &target,
            // Small and lean in memory: it runs once per container.
            "-Copt-level=s",
            "-Cpanic=abort",
            "-Ccodegen-units=1",
            "-Cstrip=symbols",
            "-o",
        ])
        .arg(out.join("shoal-log-driver"))
        .arg("logdriver/main.rs")
        .status()
        .expect("running rustc for the log driver");
    assert!(
        status.success(),
        "compiling the log driver (logdriver/main.rs) failed"
    );
}
