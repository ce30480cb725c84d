//! Writes the busybox test image (see `shoal_tests::image`) to a tar file, for loading with
//! `shoal image load` or pushing with skopeo outside the test suite.
//!
//! Usage: `build-test-image OUT.tar [--name NAME] [--format oci|docker]`

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use shoal_tests::image::{build_busybox_docker_archive, build_busybox_oci_archive, BUSYBOX_IMAGE};

const USAGE: &str = "usage: build-test-image OUT.tar [--name NAME] [--format oci|docker]";

fn main() -> Result<()> {
    let mut out: Option<PathBuf> = None;
    let mut name = BUSYBOX_IMAGE.to_string();
    let mut format = "oci".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--name" => name = args.next().context(USAGE)?,
            "--format" => format = args.next().context(USAGE)?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            a if a.starts_with('-') => bail!("unknown option {a}\n{USAGE}"),
            a if out.is_none() => out = Some(PathBuf::from(a)),
            a => bail!("unexpected argument {a}\n{USAGE}"),
        }
    }
    let out = out.context(USAGE)?;
    match format.as_str() {
        "oci" => build_busybox_oci_archive(&out, &name)?,
        "docker" => build_busybox_docker_archive(&out, &name)?,
        other => bail!("unknown format {other}: use oci or docker\n{USAGE}"),
    }
    println!("wrote {} ({format}, {name})", out.display());
    Ok(())
}
