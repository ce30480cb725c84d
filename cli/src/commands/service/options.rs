//! The container options of `service create` and their `service update` forms, as docker's:
//! `--mount`, `--env-file`, `--read-only`, `--init`, `--tty`, `--sysctl`, `--ulimit`,
//! `--group`, `--host`, `--log-driver`/`--log-opt`, and on update the plain flags that
//! `create` shares (`--user`, `--workdir`, `--entrypoint`, `--stop-signal`) plus every
//! `-add`/`-rm` pair. Values are parsed by `shoal_proto::validate` (`options`, `mounts`), so
//! the daemon refuses the same values with the same words.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use shoal_proto::validate::mounts::parse_mount;
use shoal_proto::validate::options::{
    group, parse_host, parse_log_driver, parse_sysctl, parse_ulimit,
};
use shoal_proto::{ContainerSpec, Mount, ServiceSpec, Ulimit};

use crate::commands::flags::{parse_label, parse_stop_signal};

fn sysctl_flag(s: &str) -> Result<(String, String), String> {
    parse_sysctl(s).map_err(|e| e.to_string())
}

fn ulimit_flag(s: &str) -> Result<Ulimit, String> {
    parse_ulimit(s).map_err(|e| e.to_string())
}

fn group_flag(s: &str) -> Result<String, String> {
    group(s).map(|()| s.to_string()).map_err(|e| e.to_string())
}

fn host_flag(s: &str) -> Result<String, String> {
    parse_host(s).map_err(|e| e.to_string())
}

fn mount_flag(s: &str) -> Result<Mount, String> {
    parse_mount(s).map_err(|e| e.to_string())
}

/// The container options of `service create`.
#[derive(Debug, Args, Default)]
pub struct OptionFlags {
    /// Attach a filesystem mount: type=bind|volume|tmpfs,source=…,target=…[,readonly,…]
    #[arg(long = "mount", value_name = "MOUNT", value_parser = mount_flag)]
    pub mount: Vec<Mount>,
    /// Read in a file of environment variables (KEY=VALUE lines; --env wins)
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Mount the container's root filesystem as read only
    #[arg(long)]
    pub read_only: bool,
    /// Use an init inside each service container to forward signals and reap processes
    #[arg(long)]
    pub init: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Sysctl options: NAME=VALUE (namespaced ones: net.*, fs.mqueue.*, kernel.shm*, …)
    #[arg(long = "sysctl", value_name = "NAME=VALUE", value_parser = sysctl_flag)]
    pub sysctl: Vec<(String, String)>,
    /// Ulimit options: NAME=SOFT[:HARD], e.g. nofile=1024:2048
    #[arg(long = "ulimit", value_name = "ULIMIT", value_parser = ulimit_flag)]
    pub ulimit: Vec<Ulimit>,
    /// Set one or more supplementary user groups for the container
    #[arg(long = "group", visible_alias = "group-add", value_name = "GROUP", value_parser = group_flag)]
    pub group: Vec<String>,
    /// Set one or more custom host-to-IP mappings: HOST:IP
    #[arg(long = "host", value_name = "HOST:IP", value_parser = host_flag)]
    pub host: Vec<String>,
    /// Logging driver for the service (json-file)
    #[arg(long = "log-driver", value_name = "DRIVER")]
    pub log_driver: Option<String>,
    /// Logging driver options: max-size=SIZE, max-file=COUNT
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    pub log_opt: Vec<String>,
}

impl OptionFlags {
    /// Sets the options on a new service's container; `env` (from `--env`) is what the
    /// environment files are merged under.
    pub fn apply(&self, c: &mut ContainerSpec) -> Result<()> {
        let mut env = Vec::new();
        for file in &self.env_file {
            env.extend(read_env_file(file)?);
        }
        // --env wins over the files, as docker's: the later entry of a name replaces it.
        env.append(&mut c.env);
        c.env = dedup_env(env);
        c.mounts.clone_from(&self.mount);
        c.read_only = self.read_only;
        c.init = self.init;
        c.tty = self.tty;
        c.sysctls = self.sysctl.iter().cloned().collect();
        c.ulimits = last_per_name(&self.ulimit);
        c.groups = dedup(self.group.clone());
        c.hosts = dedup(self.host.clone());
        c.log_driver = parse_log_driver(self.log_driver.as_deref(), &self.log_opt)?;
        Ok(())
    }
}

/// The container options of `service update`.
#[derive(Debug, Args, Default)]
pub struct OptionUpdateFlags {
    /// Add or update a mount (replaces one with the same target)
    #[arg(long = "mount-add", value_name = "MOUNT", value_parser = mount_flag)]
    pub mount_add: Vec<Mount>,
    /// Remove a mount by its target path
    #[arg(long = "mount-rm", value_name = "TARGET")]
    pub mount_rm: Vec<String>,
    /// Mount the container's root filesystem as read only (--read-only=false to undo)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub read_only: Option<bool>,
    /// Use an init inside each service container (--init=false to undo)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub init: Option<bool>,
    /// Allocate a pseudo-TTY (--tty=false to undo)
    #[arg(short = 't', long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub tty: Option<bool>,
    /// Add or update a sysctl option: NAME=VALUE
    #[arg(long = "sysctl-add", value_name = "NAME=VALUE", value_parser = sysctl_flag)]
    pub sysctl_add: Vec<(String, String)>,
    /// Remove a sysctl option by name
    #[arg(long = "sysctl-rm", value_name = "NAME")]
    pub sysctl_rm: Vec<String>,
    /// Add or update a ulimit option: NAME=SOFT[:HARD]
    #[arg(long = "ulimit-add", value_name = "ULIMIT", value_parser = ulimit_flag)]
    pub ulimit_add: Vec<Ulimit>,
    /// Remove a ulimit option by name
    #[arg(long = "ulimit-rm", value_name = "NAME")]
    pub ulimit_rm: Vec<String>,
    /// Add an additional supplementary user group to the container
    #[arg(long = "group-add", value_name = "GROUP", value_parser = group_flag)]
    pub group_add: Vec<String>,
    /// Remove a previously added supplementary user group from the container
    #[arg(long = "group-rm", value_name = "GROUP")]
    pub group_rm: Vec<String>,
    /// Add a custom host-to-IP mapping: HOST:IP
    #[arg(long = "host-add", value_name = "HOST:IP", value_parser = host_flag)]
    pub host_add: Vec<String>,
    /// Remove a custom host-to-IP mapping: HOST:IP, or HOST for every one of that name
    #[arg(long = "host-rm", value_name = "HOST[:IP]")]
    pub host_rm: Vec<String>,
    /// Logging driver for the service (json-file)
    #[arg(long = "log-driver", value_name = "DRIVER")]
    pub log_driver: Option<String>,
    /// Logging driver options (replace the current ones): max-size=SIZE, max-file=COUNT
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    pub log_opt: Vec<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image ("" for the image's own)
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Signal to stop the container
    #[arg(long, value_parser = parse_stop_signal)]
    pub stop_signal: Option<String>,
    /// Add or update a service label
    #[arg(long = "label-add", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label_add: Vec<(String, String)>,
    /// Remove a service label by its key
    #[arg(long = "label-rm", value_name = "KEY")]
    pub label_rm: Vec<String>,
    /// Add or update a container label
    #[arg(long = "container-label-add", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub container_label_add: Vec<(String, String)>,
    /// Remove a container label by its key
    #[arg(long = "container-label-rm", value_name = "KEY")]
    pub container_label_rm: Vec<String>,
}

impl OptionUpdateFlags {
    /// Applies the flags to `spec` as docker's `service update`: every `-rm` before its `-add`.
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<()> {
        update_map(&mut spec.labels, &self.label_rm, &self.label_add);
        let c = spec.container.get_or_insert_with(Default::default);
        update_map(
            &mut c.labels,
            &self.container_label_rm,
            &self.container_label_add,
        );
        for target in &self.mount_rm {
            let before = c.mounts.len();
            let wanted = target.trim_end_matches('/');
            c.mounts
                .retain(|m| m.target.trim_end_matches('/') != wanted);
            if c.mounts.len() == before {
                bail!(
                    "--mount-rm {target}: the service has no mount at that target (its mounts: \
                     {})",
                    targets(&c.mounts)
                );
            }
        }
        for m in &self.mount_add {
            let target = m.target.trim_end_matches('/');
            c.mounts
                .retain(|old| old.target.trim_end_matches('/') != target);
            c.mounts.push(m.clone());
        }
        set(&mut c.read_only, self.read_only);
        set(&mut c.init, self.init);
        set(&mut c.tty, self.tty);
        update_map(&mut c.sysctls, &self.sysctl_rm, &self.sysctl_add);
        c.ulimits.retain(|u| !self.ulimit_rm.contains(&u.name));
        let mut ulimits = std::mem::take(&mut c.ulimits);
        ulimits.extend(self.ulimit_add.iter().cloned());
        c.ulimits = last_per_name(&ulimits);
        c.groups.retain(|g| !self.group_rm.contains(g));
        c.groups.extend(self.group_add.iter().cloned());
        c.groups = dedup(std::mem::take(&mut c.groups));
        c.hosts
            .retain(|line| !self.host_rm.iter().any(|rm| host_matches(line, rm)));
        c.hosts.extend(self.host_add.iter().cloned());
        c.hosts = dedup(std::mem::take(&mut c.hosts));
        if self.log_driver.is_some() || !self.log_opt.is_empty() {
            let name = self
                .log_driver
                .clone()
                .or_else(|| c.log_driver.as_ref().map(|d| d.name.clone()));
            c.log_driver = parse_log_driver(name.as_deref(), &self.log_opt)?;
        }
        if let Some(user) = &self.user {
            c.user.clone_from(user);
        }
        if let Some(dir) = &self.workdir {
            c.dir.clone_from(dir);
        }
        if let Some(entrypoint) = &self.entrypoint {
            c.command = shlex::split(entrypoint).ok_or_else(|| {
                anyhow!(
                    "invalid --entrypoint {entrypoint:?}: unbalanced quotes or trailing backslash"
                )
            })?;
        }
        if let Some(signal) = &self.stop_signal {
            c.stop_signal.clone_from(signal);
        }
        Ok(())
    }
}

fn set(field: &mut bool, value: Option<bool>) {
    if let Some(v) = value {
        *field = v;
    }
}

fn update_map(map: &mut HashMap<String, String>, rm: &[String], add: &[(String, String)]) {
    for k in rm {
        map.remove(k);
    }
    map.extend(add.iter().cloned());
}

/// `--host-rm HOST:IP` removes that mapping; `--host-rm HOST` every mapping of that name.
fn host_matches(line: &str, rm: &str) -> bool {
    let mut words = line.split_whitespace();
    let ip = words.next().unwrap_or_default();
    let names: Vec<&str> = words.collect();
    match rm.split_once(':') {
        Some((host, want_ip)) => names.contains(&host) && ip == want_ip,
        None => names.contains(&rm),
    }
}

fn targets(mounts: &[Mount]) -> String {
    if mounts.is_empty() {
        return "none".into();
    }
    mounts
        .iter()
        .map(|m| m.target.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The list without repeats, first occurrence kept.
fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

/// One limit per name, the last given winning, sorted by name.
fn last_per_name(ulimits: &[Ulimit]) -> Vec<Ulimit> {
    let by_name: BTreeMap<&str, &Ulimit> = ulimits.iter().map(|u| (u.name.as_str(), u)).collect();
    by_name.into_values().cloned().collect()
}

/// The key of a `KEY=VALUE` environment entry.
fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// One entry per name, in order of first appearance, the last value winning.
fn dedup_env(env: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for entry in env {
        match out.iter_mut().find(|e| env_key(e) == env_key(&entry)) {
            Some(existing) => *existing = entry,
            None => out.push(entry),
        }
    }
    out
}

/// docker's `--env-file`: one `KEY=VALUE` per line; blank lines and lines starting with `#`
/// are skipped; a bare `KEY` takes its value from this shell's environment (and is skipped
/// when unset there).
pub fn read_env_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --env-file {}", path.display()))?;
    let mut env = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line.trim_end(), None),
        };
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            bail!(
                "--env-file {} line {}: variable {key:?} is not a name (expected KEY=VALUE \
                 with no whitespace in KEY)",
                path.display(),
                n + 1
            );
        }
        match value {
            Some(v) => env.push(format!("{key}={v}")),
            None => {
                if let Ok(v) = std::env::var(key) {
                    env.push(format!("{key}={v}"));
                }
            }
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::service::spec::{apply_update, build_spec};
    use crate::commands::service::testing::{create_args, parse, update_args};
    use shoal_proto::mount;

    #[test]
    fn create_takes_every_option() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("env");
        std::fs::write(&file, "# comment\n\nA=from-file\nB=2\n").expect("write");
        let file = file.display().to_string();
        let a = create_args(&[
            "--name",
            "web",
            "--env-file",
            &file,
            "-e",
            "A=from-flag",
            "--mount",
            "type=volume,source=data,target=/data",
            "--mount",
            "type=tmpfs,target=/tmp",
            "--read-only",
            "--init",
            "-t",
            "--sysctl",
            "net.core.somaxconn=1024",
            "--ulimit",
            "nofile=100:200",
            "--group",
            "audio",
            "--group-add",
            "1234",
            "--host",
            "db:198.18.0.9",
            "--log-opt",
            "max-size=1m",
            "--log-opt",
            "max-file=2",
            "busybox",
        ]);
        let c = build_spec(&a).expect("valid").container.expect("container");
        assert_eq!(c.env, vec!["A=from-flag", "B=2"]);
        assert_eq!(c.mounts.len(), 2);
        assert_eq!(c.mounts[1].r#type, mount::Type::Tmpfs as i32);
        assert!(c.read_only && c.init && c.tty);
        assert_eq!(
            c.sysctls.get("net.core.somaxconn").map(String::as_str),
            Some("1024")
        );
        assert_eq!((c.ulimits[0].soft, c.ulimits[0].hard), (100, 200));
        assert_eq!(c.groups, vec!["audio", "1234"]);
        assert_eq!(c.hosts, vec!["198.18.0.9 db"]);
        let log = c.log_driver.expect("log driver");
        assert_eq!(log.name, "json-file");
        assert_eq!(log.options.len(), 2);
    }

    #[test]
    fn bad_option_values_are_refused_with_the_reason() {
        for (flag, value, words) in [
            ("--sysctl", "vm.swappiness=1", "not namespaced"),
            (
                "--ulimit",
                "nofile=2:1",
                "soft limit 2 is above hard limit 1",
            ),
            ("--ulimit", "bogus=1", "unknown --ulimit"),
            ("--host", "db", "expected HOST:IP"),
            ("--mount", "type=bind,target=/x", "needs a source"),
            ("--group", "a b", "invalid --group"),
        ] {
            let err = parse(&["create", "--name", "web", flag, value, "busybox"])
                .expect_err(value)
                .to_string();
            assert!(err.contains(words), "{flag} {value}: {err}");
        }
        let a = create_args(&["--name", "web", "--log-driver", "syslog", "busybox"]);
        let err = build_spec(&a).expect_err("syslog").to_string();
        assert!(err.contains("unsupported --log-driver \"syslog\""), "{err}");
        let a = create_args(&["--name", "web", "--env-file", "/nonexistent/env", "busybox"]);
        let err = format!("{:#}", build_spec(&a).expect_err("missing file"));
        assert!(
            err.contains("cannot read --env-file /nonexistent/env"),
            "{err}"
        );
    }

    #[test]
    fn env_files_skip_comments_and_refuse_bad_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("env");
        std::fs::write(&file, "A=1\n  # indented comment\nBAD NAME=2\n").expect("write");
        let err = read_env_file(&file).expect_err("bad name").to_string();
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn update_adds_and_removes() {
        let a = create_args(&[
            "--name",
            "web",
            "--mount",
            "source=aa,target=/a",
            "--sysctl",
            "net.core.somaxconn=1",
            "--ulimit",
            "nproc=5",
            "--group",
            "audio",
            "--host",
            "db:198.18.0.9",
            "--host",
            "db:198.18.0.10",
            "-l",
            "keep=1",
            "-l",
            "drop=1",
            "busybox",
        ]);
        let spec = build_spec(&a).expect("valid");
        let u = update_args(&[
            "--mount-rm",
            "/a",
            "--mount-add",
            "type=tmpfs,target=/b",
            "--read-only",
            "--tty=false",
            "--sysctl-rm",
            "net.core.somaxconn",
            "--sysctl-add",
            "kernel.shmmax=100",
            "--ulimit-add",
            "nproc=7",
            "--group-rm",
            "audio",
            "--group-add",
            "video",
            "--host-rm",
            "db:198.18.0.9",
            "--label-rm",
            "drop",
            "--label-add",
            "new=2",
            "--container-label-add",
            "c=3",
            "--user",
            "nobody",
            "--workdir",
            "/w",
            "--entrypoint",
            "sh -c",
            "--stop-signal",
            "hup",
            "--log-opt",
            "max-size=5k",
            "web",
        ]);
        let spec = apply_update(&spec, &u).expect("valid");
        let c = spec.container.clone().expect("container");
        assert_eq!(c.mounts.len(), 1);
        assert_eq!(c.mounts[0].target, "/b");
        assert!(c.read_only && !c.tty);
        assert_eq!(c.sysctls.keys().collect::<Vec<_>>(), vec!["kernel.shmmax"]);
        assert_eq!(c.ulimits.len(), 1);
        assert_eq!(c.ulimits[0].soft, 7);
        assert_eq!(c.groups, vec!["video"]);
        assert_eq!(c.hosts, vec!["198.18.0.10 db"]);
        assert!(spec.labels.contains_key("keep") && spec.labels.contains_key("new"));
        assert!(!spec.labels.contains_key("drop"));
        assert_eq!(c.labels.get("c").map(String::as_str), Some("3"));
        assert_eq!((c.user.as_str(), c.dir.as_str()), ("nobody", "/w"));
        assert_eq!(c.command, vec!["sh", "-c"]);
        assert_eq!(c.stop_signal, "SIGHUP");
        assert!(c.log_driver.is_some());

        let u = update_args(&["--host-rm", "db", "--mount-rm", "/nowhere", "web"]);
        let err = apply_update(&spec, &u)
            .expect_err("no such mount")
            .to_string();
        assert!(err.contains("no mount at that target"), "{err}");
    }
}
