//! Docker's default AppArmor profile, loaded as `shoal-default` where the kernel has AppArmor
//! on, and which profile (if any) a container gets.
//!
//! The profile is the text docker's `profiles/apparmor` template renders (moby 20.10,
//! Apache-2.0); it is loaded with `apparmor_parser -Kr` (on stdin) once per daemon start
//! ([`detect_and_load`], called by [`super::host::Host::current`]). The choice per container
//! ([`profile_for`]) is pure.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use shoal_proto::{privileges, ContainerSpec};

use super::SpecError;

/// The name the profile is loaded under (docker's is `docker-default`).
pub const PROFILE_NAME: &str = "shoal-default";

/// Where AppArmor's profiles and their includes live.
const PROFILE_DIR: &str = "/etc/apparmor.d";

/// The node's AppArmor, as found when the daemon started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppArmorState {
    /// The kernel has no AppArmor, or it is off: containers get no profile (as docker).
    Disabled,
    /// On, and [`PROFILE_NAME`] loaded.
    Loaded,
    /// On, but the profile could not be loaded: containers that need it are refused.
    Failed(String),
}

/// The profile a container runs under: [`PROFILE_NAME`] where AppArmor is on, unless the
/// service says `--security-opt apparmor=unconfined`.
pub fn profile_for(state: &AppArmorState, cs: &ContainerSpec) -> Result<Option<String>, SpecError> {
    let disabled = cs
        .privileges
        .as_ref()
        .and_then(|p| p.apparmor.as_ref())
        .is_some_and(|a| a.mode() == privileges::app_armor::Mode::Disabled);
    match state {
        AppArmorState::Disabled => Ok(None),
        _ if disabled => Ok(None),
        AppArmorState::Loaded => Ok(Some(PROFILE_NAME.to_string())),
        AppArmorState::Failed(why) => Err(SpecError::AppArmor(why.clone())),
    }
}

/// Whether the kernel has AppArmor on (`/sys/module/apparmor/parameters/enabled` is `Y`).
pub fn enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'))
}

/// Detects AppArmor and, where it is on, loads the profile.
pub fn detect_and_load() -> AppArmorState {
    if !enabled() {
        return AppArmorState::Disabled;
    }
    match load() {
        Ok(()) => AppArmorState::Loaded,
        Err(why) => {
            tracing::warn!("{why}");
            AppArmorState::Failed(why)
        }
    }
}

/// Renders the profile and loads it into the kernel, replacing an older one (`-r`), without
/// writing a cache (`-K`).
fn load() -> Result<(), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!(
            "AppArmor is enabled but the {PROFILE_NAME} profile could not be loaded ({what}: \
             {e}); install apparmor (apparmor_parser) or turn AppArmor off"
        )
    };
    let version = parser_version().map_err(|e| fail("apparmor_parser --version", &e))?;
    let daemon_profile = std::fs::read_to_string("/proc/self/attr/current").unwrap_or_default();
    let text = render_profile(
        PROFILE_NAME,
        &daemon_profile,
        version,
        Path::new(PROFILE_DIR).join("tunables/global").exists(),
        Path::new(PROFILE_DIR).join("abstractions/base").exists(),
    );
    // The profile goes in on stdin, so no file in a shared temporary directory is involved.
    let run = || -> std::io::Result<std::process::Output> {
        let mut child = Command::new("apparmor_parser")
            .arg("-Kr")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(text.as_bytes())?;
        }
        child.wait_with_output()
    };
    match run() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(fail(
            "apparmor_parser -Kr",
            &String::from_utf8_lossy(&o.stderr).trim(),
        )),
        Err(e) => Err(fail("apparmor_parser -Kr", &e)),
    }
}

/// `apparmor_parser --version` as one number, as docker's `aaparser.GetVersion`:
/// major × 100000 + minor × 1000 + patch (2.13.3 → 213003).
fn parser_version() -> Result<u32, String> {
    let out = Command::new("apparmor_parser")
        .arg("--version")
        .output()
        .map_err(|e| e.to_string())?;
    parse_parser_version(&String::from_utf8_lossy(&out.stdout))
}

pub fn parse_parser_version(output: &str) -> Result<u32, String> {
    let bad = || format!("unexpected version output {:?}", output.trim());
    let first = output.lines().next().ok_or_else(bad)?;
    let version = first.split_whitespace().last().ok_or_else(bad)?;
    let version = version.split(['-', '~']).next().unwrap_or(version);
    let mut parts = version.split('.').map(|p| p.parse::<u32>());
    let mut next = || parts.next().unwrap_or(Ok(0)).map_err(|_| bad());
    Ok(next()? * 100_000 + next()? * 1_000 + next()?)
}

/// Docker's `docker-default` template (`profiles/apparmor/template.go`), rendered: the
/// includes where the distribution has them, the signal rules for parsers from 2.8.96 and the
/// ptrace rule from 2.8.95. `daemon_profile` is this process's own confinement
/// (`/proc/self/attr/current`), so the daemon may signal its containers.
pub fn render_profile(
    name: &str,
    daemon_profile: &str,
    version: u32,
    tunables: bool,
    base: bool,
) -> String {
    let daemon = daemon_profile.split_whitespace().next().unwrap_or("");
    let daemon = if daemon.is_empty() {
        "unconfined"
    } else {
        daemon
    };
    let mut p = String::new();
    p.push_str(if tunables {
        "#include <tunables/global>\n\n"
    } else {
        "@{PROC}=/proc/\n\n"
    });
    p.push_str(&format!(
        "profile {name} flags=(attach_disconnected,mediate_deleted) {{\n"
    ));
    if base {
        p.push_str("  #include <abstractions/base>\n\n");
    }
    p.push_str("  network,\n  capability,\n  file,\n  umount,\n");
    if version >= 208_096 {
        p.push_str(&format!(
            "  # Host (privileged) processes may send signals to container processes.\n  \
             signal (receive) peer=unconfined,\n  \
             # The daemon may send signals to container processes (for `service rm`).\n  \
             signal (receive) peer={daemon},\n  \
             # Container processes may send signals amongst themselves.\n  \
             signal (send,receive) peer={name},\n"
        ));
    }
    p.push_str(
        r"
  deny @{PROC}/* w,   # deny write for all files directly in /proc (not in a subdir)
  # deny write to files not in /proc/<number>/** or /proc/sys/**
  deny @{PROC}/{[^1-9],[^1-9][^0-9],[^1-9s][^0-9y][^0-9s],[^1-9][^0-9][^0-9][^0-9]*}/** w,
  deny @{PROC}/sys/[^k]** w,  # deny /proc/sys except /proc/sys/k* (effectively /proc/sys/kernel)
  deny @{PROC}/sys/kernel/{?,??,[^s][^h][^m]**} w,  # deny everything except shm* in /proc/sys/kernel/
  deny @{PROC}/sysrq-trigger rwklx,
  deny @{PROC}/kcore rwklx,

  deny mount,

  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/security/** rwklx,
",
    );
    if version >= 208_095 {
        p.push_str(&format!(
            "\n  # suppress ptrace denials when using 'ps' inside a container\n  \
             ptrace (trace,read,tracedby,readby) peer={name},\n"
        ));
    }
    p.push_str("}\n");
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::Privileges;

    fn unconfined() -> ContainerSpec {
        ContainerSpec {
            privileges: Some(Privileges {
                seccomp: None,
                apparmor: Some(privileges::AppArmor {
                    mode: privileges::app_armor::Mode::Disabled as i32,
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_profile_is_set_only_where_apparmor_is_on() {
        let plain = ContainerSpec::default();
        assert_eq!(
            profile_for(&AppArmorState::Loaded, &plain).unwrap(),
            Some(PROFILE_NAME.to_string())
        );
        assert_eq!(profile_for(&AppArmorState::Disabled, &plain).unwrap(), None);
        assert_eq!(
            profile_for(&AppArmorState::Loaded, &unconfined()).unwrap(),
            None
        );
        let failed = AppArmorState::Failed("no apparmor_parser".into());
        assert_eq!(profile_for(&failed, &unconfined()).unwrap(), None);
        let err = profile_for(&failed, &plain).unwrap_err().to_string();
        assert!(err.contains("no apparmor_parser"), "{err}");
    }

    #[test]
    fn the_profile_renders_as_dockers_template() {
        let p = render_profile(PROFILE_NAME, "unconfined\n", 213_003, true, true);
        assert!(p.starts_with("#include <tunables/global>\n"), "{p}");
        assert!(p.contains("profile shoal-default flags=(attach_disconnected,mediate_deleted) {"));
        assert!(p.contains("  #include <abstractions/base>\n"));
        assert!(p.contains("signal (send,receive) peer=shoal-default,"));
        assert!(p.contains("signal (receive) peer=unconfined,"));
        assert!(p.contains("  deny mount,\n"));
        assert!(p.contains("ptrace (trace,read,tracedby,readby) peer=shoal-default,"));
        assert!(p.ends_with("}\n"));
        let old = render_profile(PROFILE_NAME, "", 208_000, false, false);
        assert!(old.starts_with("@{PROC}=/proc/\n"));
        assert!(!old.contains("signal") && !old.contains("ptrace") && !old.contains("#include"));
        let confined = render_profile(PROFILE_NAME, "shoald (enforce)", 300_000, false, false);
        assert!(
            confined.contains("signal (receive) peer=shoald,"),
            "{confined}"
        );
    }

    #[test]
    fn parser_versions() {
        assert_eq!(
            parse_parser_version("AppArmor parser version 2.13.3\nCopyright"),
            Ok(213_003)
        );
        assert_eq!(
            parse_parser_version("AppArmor parser version 3.0.8"),
            Ok(300_008)
        );
        assert_eq!(
            parse_parser_version("AppArmor parser version 4.1.0~beta5"),
            Ok(401_000)
        );
        assert!(parse_parser_version("").is_err());
    }
}
