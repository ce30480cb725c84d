//! The container options of a service as docker's `service create` takes them: `--sysctl`,
//! `--ulimit`, `--group`, `--host`, `--log-driver`/`--log-opt`. The parsers are here, next to
//! the checks, so that the CLI (reading flags) and the control API (before anything is
//! stored) refuse the same values with the same words, and the worker only sees values that
//! passed.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::{ContainerSpec, LogDriver, Ulimit};

/// The log driver a service gets unless it names one: the node keeps the log as JSON lines,
/// which `service logs` reads.
pub const LOG_DRIVER_JSON_FILE: &str = "json-file";
/// json-file's options.
pub const LOG_OPT_MAX_SIZE: &str = "max-size";
pub const LOG_OPT_MAX_FILE: &str = "max-file";

/// Docker's `--ulimit` names, as `ulimit` spells them.
pub const ULIMIT_NAMES: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// The IPC namespace's sysctls docker allows (`--sysctl`); `fs.mqueue.*` and `net.*` are
/// allowed as prefixes.
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];
const SYSCTL_PREFIXES: [&str; 2] = ["fs.mqueue.", "net."];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error(
        "invalid --sysctl {0:?}: expected NAME=VALUE, e.g. net.ipv4.ip_unprivileged_port_start=0"
    )]
    SysctlSyntax(String),
    #[error(
        "--sysctl {0} is not namespaced: it would change the whole node; a task may set \
         net.*, fs.mqueue.*, kernel.msgmax, kernel.msgmnb, kernel.msgmni, kernel.sem, \
         kernel.shmall, kernel.shmmax, kernel.shmmni and kernel.shm_rmid_forced"
    )]
    SysctlNotNamespaced(String),
    #[error(
        "invalid --ulimit {0:?}: expected NAME=SOFT[:HARD] with numbers, -1 for unlimited, \
         e.g. nofile=1024:2048"
    )]
    UlimitSyntax(String),
    #[error("unknown --ulimit {0:?}: use one of {names}", names = ULIMIT_NAMES.join(", "))]
    UlimitName(String),
    #[error("invalid --ulimit {name}: soft limit {soft} is above hard limit {hard}")]
    UlimitSoftAboveHard { name: String, soft: i64, hard: i64 },
    #[error("--ulimit {0} is given twice: give each limit once")]
    UlimitTwice(String),
    #[error(
        "invalid --group {0:?}: give a group name of the image or a numeric gid, one per flag"
    )]
    Group(String),
    #[error(
        "invalid --host {0:?}: expected HOST:IP, e.g. db.example:198.18.0.9 (an IPv6 address \
         after the first colon is fine)"
    )]
    HostSyntax(String),
    #[error(
        "unsupported --log-driver {0:?}: Shoal's tasks log with json-file (kept on the node, \
         read by `service logs`); leave --log-driver out or use json-file"
    )]
    LogDriver(String),
    #[error("unknown --log-opt {0:?} for json-file: use max-size=SIZE or max-file=COUNT")]
    LogOpt(String),
    #[error("invalid --log-opt max-size={0:?}: give a size such as 10m, 512k or 1g (at least 1)")]
    LogMaxSize(String),
    #[error("invalid --log-opt max-file={0:?}: give a whole number of files, at least 1")]
    LogMaxFile(String),
    #[error("--log-opt max-file above 1 needs max-size too: without a size nothing rotates")]
    LogMaxFileWithoutSize,
}

/// Checks every container option of `c`.
pub fn container(c: &ContainerSpec) -> Result<(), OptionsError> {
    for (name, value) in &c.sysctls {
        sysctl(name, value)?;
    }
    let mut seen = HashSet::new();
    for u in &c.ulimits {
        ulimit(u)?;
        if !seen.insert(u.name.as_str()) {
            return Err(OptionsError::UlimitTwice(u.name.clone()));
        }
    }
    for g in &c.groups {
        group(g)?;
    }
    for h in &c.hosts {
        host_line(h)?;
    }
    if let Some(d) = &c.log_driver {
        log_driver(d)?;
    }
    Ok(())
}

/// `NAME=VALUE` of `--sysctl`, checked.
pub fn parse_sysctl(arg: &str) -> Result<(String, String), OptionsError> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| OptionsError::SysctlSyntax(arg.to_string()))?;
    let (name, value) = (name.trim(), value.trim());
    sysctl(name, value)?;
    Ok((name.to_string(), value.to_string()))
}

fn sysctl(name: &str, value: &str) -> Result<(), OptionsError> {
    let well_formed = !name.is_empty()
        && !value.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if !well_formed {
        return Err(OptionsError::SysctlSyntax(format!("{name}={value}")));
    }
    let namespaced =
        IPC_SYSCTLS.contains(&name) || SYSCTL_PREFIXES.iter().any(|p| name.starts_with(p));
    if !namespaced {
        return Err(OptionsError::SysctlNotNamespaced(name.to_string()));
    }
    Ok(())
}

/// `NAME=SOFT[:HARD]` of `--ulimit` (a lone number is both limits), checked.
pub fn parse_ulimit(arg: &str) -> Result<Ulimit, OptionsError> {
    let syntax = || OptionsError::UlimitSyntax(arg.to_string());
    let (name, limits) = arg.split_once('=').ok_or_else(syntax)?;
    let number = |s: &str| s.trim().parse::<i64>().map_err(|_| syntax());
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (number(s)?, number(h)?),
        None => {
            let n = number(limits)?;
            (n, n)
        }
    };
    let u = Ulimit {
        name: name.trim().to_string(),
        soft,
        hard,
    };
    ulimit(&u)?;
    Ok(u)
}

fn ulimit(u: &Ulimit) -> Result<(), OptionsError> {
    if !ULIMIT_NAMES.contains(&u.name.as_str()) {
        return Err(OptionsError::UlimitName(u.name.clone()));
    }
    if u.soft < -1 || u.hard < -1 {
        return Err(OptionsError::UlimitSyntax(format!(
            "{}={}:{}",
            u.name, u.soft, u.hard
        )));
    }
    // -1 is unlimited: above every number.
    let above = |a: i64, b: i64| b != -1 && (a == -1 || a > b);
    if above(u.soft, u.hard) {
        return Err(OptionsError::UlimitSoftAboveHard {
            name: u.name.clone(),
            soft: u.soft,
            hard: u.hard,
        });
    }
    Ok(())
}

/// A `--group` value: a name as /etc/group allows one, or a number.
pub fn group(g: &str) -> Result<(), OptionsError> {
    let ok = !g.is_empty()
        && g.len() <= 32
        && !g.starts_with('-')
        && g.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'));
    if ok {
        Ok(())
    } else {
        Err(OptionsError::Group(g.to_string()))
    }
}

/// `--host HOST:IP` as the `/etc/hosts` line swarmkit stores, `IP HOST`.
pub fn parse_host(arg: &str) -> Result<String, OptionsError> {
    let (host, ip) = arg
        .split_once(':')
        .ok_or_else(|| OptionsError::HostSyntax(arg.to_string()))?;
    let host = host.trim();
    if host.split_whitespace().count() != 1 {
        return Err(OptionsError::HostSyntax(arg.to_string()));
    }
    let line = format!("{} {host}", ip.trim());
    host_line(&line).map_err(|_| OptionsError::HostSyntax(arg.to_string()))?;
    Ok(line)
}

/// A stored `/etc/hosts` line: an IP address, then one or more names.
pub fn host_line(line: &str) -> Result<(), OptionsError> {
    let bad = || OptionsError::HostSyntax(line.to_string());
    let mut words = line.split_whitespace();
    words
        .next()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .ok_or_else(bad)?;
    let names: Vec<&str> = words.collect();
    let valid_name = |n: &&str| {
        n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    if names.is_empty() || !names.iter().all(valid_name) {
        return Err(bad());
    }
    Ok(())
}

/// The log driver, from `--log-driver` (absent = json-file) and `--log-opt KEY=VALUE`s;
/// `None` when neither is given.
pub fn parse_log_driver(
    name: Option<&str>,
    opts: &[String],
) -> Result<Option<LogDriver>, OptionsError> {
    if name.is_none() && opts.is_empty() {
        return Ok(None);
    }
    let mut driver = LogDriver {
        name: name.unwrap_or(LOG_DRIVER_JSON_FILE).to_string(),
        options: Default::default(),
    };
    for opt in opts {
        let (k, v) = opt
            .split_once('=')
            .ok_or_else(|| OptionsError::LogOpt(opt.clone()))?;
        driver
            .options
            .insert(k.trim().to_string(), v.trim().to_string());
    }
    log_driver(&driver)?;
    Ok(Some(driver))
}

/// What a json-file log keeps: (max-size in bytes, max-file), `None` for an option not set.
pub fn log_limits(d: &LogDriver) -> Result<(Option<u64>, Option<u32>), OptionsError> {
    let size = d
        .options
        .get(LOG_OPT_MAX_SIZE)
        .map(|v| {
            parse_size(v)
                .filter(|&n| n > 0)
                .ok_or_else(|| OptionsError::LogMaxSize(v.clone()))
        })
        .transpose()?;
    let files = d
        .options
        .get(LOG_OPT_MAX_FILE)
        .map(|v| {
            v.parse::<u32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| OptionsError::LogMaxFile(v.clone()))
        })
        .transpose()?;
    Ok((size, files))
}

fn log_driver(d: &LogDriver) -> Result<(), OptionsError> {
    if !d.name.is_empty() && d.name != LOG_DRIVER_JSON_FILE {
        return Err(OptionsError::LogDriver(d.name.clone()));
    }
    if let Some(k) = d
        .options
        .keys()
        .find(|k| *k != LOG_OPT_MAX_SIZE && *k != LOG_OPT_MAX_FILE)
    {
        return Err(OptionsError::LogOpt(k.clone()));
    }
    match log_limits(d)? {
        (None, Some(files)) if files > 1 => Err(OptionsError::LogMaxFileWithoutSize),
        _ => Ok(()),
    }
}

/// Docker's sizes for `max-size`: a number with an optional unit b, k, m, g (powers of 1024,
/// case-insensitive, with or without a trailing "b").
pub fn parse_size(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let n: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctls_must_be_namespaced() {
        assert_eq!(
            parse_sysctl("net.ipv4.ip_forward=1"),
            Ok(("net.ipv4.ip_forward".into(), "1".into()))
        );
        assert!(parse_sysctl("kernel.shmmax=65536").is_ok());
        assert!(parse_sysctl("fs.mqueue.msg_max=20").is_ok());
        assert_eq!(
            parse_sysctl("kernel.hostname=x"),
            Err(OptionsError::SysctlNotNamespaced("kernel.hostname".into()))
        );
        assert!(matches!(
            parse_sysctl("vm.swappiness=1"),
            Err(OptionsError::SysctlNotNamespaced(_))
        ));
        for bad in [
            "net.ipv4.ip_forward",
            "=1",
            "net.ipv4.ip_forward=",
            "net x=1",
        ] {
            assert!(
                matches!(parse_sysctl(bad), Err(OptionsError::SysctlSyntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn ulimits_take_docker_forms() {
        let u = parse_ulimit("nofile=1024:2048").expect("valid");
        assert_eq!((u.name.as_str(), u.soft, u.hard), ("nofile", 1024, 2048));
        let u = parse_ulimit("core=-1").expect("valid");
        assert_eq!((u.soft, u.hard), (-1, -1));
        assert!(parse_ulimit("nproc=10:-1").is_ok());
        assert_eq!(
            parse_ulimit("nofile=2048:1024"),
            Err(OptionsError::UlimitSoftAboveHard {
                name: "nofile".into(),
                soft: 2048,
                hard: 1024
            })
        );
        assert!(matches!(
            parse_ulimit("nproc=-1:10"),
            Err(OptionsError::UlimitSoftAboveHard { .. })
        ));
        assert!(matches!(
            parse_ulimit("files=10"),
            Err(OptionsError::UlimitName(_))
        ));
        for bad in ["nofile", "nofile=x", "nofile=1:2:3", "nofile=-2"] {
            assert!(
                matches!(parse_ulimit(bad), Err(OptionsError::UlimitSyntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_ulimit_given_twice_is_refused() {
        let c = ContainerSpec {
            ulimits: vec![
                parse_ulimit("nofile=1").expect("valid"),
                parse_ulimit("nofile=2").expect("valid"),
            ],
            ..Default::default()
        };
        assert_eq!(
            container(&c),
            Err(OptionsError::UlimitTwice("nofile".into()))
        );
    }

    #[test]
    fn hosts_become_etc_hosts_lines() {
        assert_eq!(
            parse_host("db.example:198.18.0.9"),
            Ok("198.18.0.9 db.example".into())
        );
        assert_eq!(parse_host("v6:fd00::1"), Ok("fd00::1 v6".into()));
        for bad in [
            "db.example",
            "db:not-an-ip",
            ":198.18.0.9",
            "bad host:198.18.0.9",
        ] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
        assert!(host_line("198.18.0.9 a b").is_ok());
        assert!(host_line("198.18.0.9").is_err());
    }

    #[test]
    fn groups_are_names_or_numbers() {
        assert!(group("audio").is_ok());
        assert!(group("1234").is_ok());
        for bad in ["", "a b", "-x", "a:b"] {
            assert!(group(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn log_options_are_json_files() {
        assert_eq!(parse_log_driver(None, &[]), Ok(None));
        let d = parse_log_driver(None, &["max-size=10m".into(), "max-file=3".into()])
            .expect("valid")
            .expect("some");
        assert_eq!(d.name, LOG_DRIVER_JSON_FILE);
        assert_eq!(log_limits(&d), Ok((Some(10 << 20), Some(3))));
        assert_eq!(
            parse_log_driver(Some("syslog"), &[]),
            Err(OptionsError::LogDriver("syslog".into()))
        );
        assert_eq!(
            parse_log_driver(None, &["compress=true".into()]),
            Err(OptionsError::LogOpt("compress".into()))
        );
        assert_eq!(
            parse_log_driver(None, &["max-size=ten".into()]),
            Err(OptionsError::LogMaxSize("ten".into()))
        );
        assert_eq!(
            parse_log_driver(None, &["max-file=0".into(), "max-size=1k".into()]),
            Err(OptionsError::LogMaxFile("0".into()))
        );
        assert_eq!(
            parse_log_driver(None, &["max-file=3".into()]),
            Err(OptionsError::LogMaxFileWithoutSize)
        );
    }

    #[test]
    fn sizes_follow_docker() {
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1k"), Some(1024));
        assert_eq!(parse_size("10MB"), Some(10 << 20));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size("1t"), None);
        assert_eq!(parse_size("m"), None);
    }
}
