//! The parts of a task's OCI spec that come from its container options, built as docker builds
//! them: `--ulimit` (process rlimits over the default RLIMIT_NOFILE), `--group` (extra gids,
//! names looked up in the image), `--init` (tini as PID 1 at docker's path), and `--mount`
//! (bind, local volume and tmpfs mounts, after docker's default ones).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder, PosixRlimit, PosixRlimitBuilder, PosixRlimitType};
use shoal_proto::{mount, ContainerSpec};

use super::{parse_group, SpecError};

/// Where `--init` puts the init inside the container (docker's `docker-init`).
pub const INIT_PATH: &str = "/sbin/docker-init";

/// The init binaries a node may have, best first: a static tini runs in any image.
pub const INIT_CANDIDATES: [&str; 3] = [
    "/usr/bin/tini-static",
    "/usr/bin/docker-init",
    "/usr/libexec/docker/docker-init",
];

/// The node's init binary for `--init`, if it has one.
pub fn find_init() -> Option<PathBuf> {
    INIT_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn rlimit_type(name: &str) -> Option<PosixRlimitType> {
    use PosixRlimitType::*;
    Some(match name {
        "core" => RlimitCore,
        "cpu" => RlimitCpu,
        "data" => RlimitData,
        "fsize" => RlimitFsize,
        "locks" => RlimitLocks,
        "memlock" => RlimitMemlock,
        "msgqueue" => RlimitMsgqueue,
        "nice" => RlimitNice,
        "nofile" => RlimitNofile,
        "nproc" => RlimitNproc,
        "rss" => RlimitRss,
        "rtprio" => RlimitRtprio,
        "rttime" => RlimitRttime,
        "sigpending" => RlimitSigpending,
        "stack" => RlimitStack,
        _ => return None,
    })
}

/// The process's rlimits: RLIMIT_NOFILE at `nofile` unless the task sets it, then every
/// `--ulimit` (-1 is unlimited).
pub fn rlimits(cs: &ContainerSpec, nofile: u64) -> Result<Vec<PosixRlimit>, SpecError> {
    let limit = |v: i64| u64::try_from(v).unwrap_or(u64::MAX);
    let mut out = Vec::new();
    if !cs.ulimits.iter().any(|u| u.name == "nofile") {
        out.push(
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(nofile)
                .hard(nofile)
                .build()?,
        );
    }
    for u in &cs.ulimits {
        let typ = rlimit_type(&u.name).ok_or_else(|| SpecError::Ulimit(u.name.clone()))?;
        out.push(
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(limit(u.soft))
                .hard(limit(u.hard))
                .build()?,
        );
    }
    Ok(out)
}

/// The gids of `--group`: numbers as they are, names from the image's /etc/group.
pub fn group_ids(cs: &ContainerSpec, group_file: Option<&str>) -> Result<Vec<u32>, SpecError> {
    cs.groups
        .iter()
        .map(|g| match g.parse::<u32>() {
            Ok(gid) => Ok(gid),
            Err(_) => parse_group(group_file.unwrap_or(""))
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| SpecError::UnknownGroup { group: g.clone() }),
        })
        .collect()
}

/// `args` run by the init (`docker-init -- ARGS…`, as docker).
pub fn with_init(args: Vec<String>) -> Vec<String> {
    [INIT_PATH.to_string(), "--".to_string()]
        .into_iter()
        .chain(args)
        .collect()
}

/// The init binary bind-mounted read-only at [`INIT_PATH`].
pub fn init_mount(binary: &Path) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(INIT_PATH)
        .typ("bind")
        .source(binary)
        .options(vec!["bind".to_string(), "ro".to_string()])
        .build()?)
}

/// A task's `--mount` with where its source is on this node: the bind source, or the volume's
/// data directory (`None` for tmpfs).
#[derive(Debug, Clone)]
pub struct ResolvedMount<'a> {
    pub mount: &'a shoal_proto::Mount,
    pub source: Option<PathBuf>,
}

fn propagation(p: i32) -> &'static str {
    match mount::Propagation::try_from(p).unwrap_or_default() {
        mount::Propagation::Rprivate => "rprivate",
        mount::Propagation::Private => "private",
        mount::Propagation::Rshared => "rshared",
        mount::Propagation::Shared => "shared",
        mount::Propagation::Rslave => "rslave",
        mount::Propagation::Slave => "slave",
    }
}

/// The OCI mount of one `--mount`, as docker makes it: binds and volumes are (recursive) bind
/// mounts, private unless told otherwise; a tmpfs is `nosuid,nodev` with its size and mode.
pub fn user_mount(m: &ResolvedMount<'_>) -> Result<Mount, SpecError> {
    let spec = m.mount;
    let mut options: Vec<String> = Vec::new();
    let (typ, source) = match mount::Type::try_from(spec.r#type).unwrap_or_default() {
        mount::Type::Bind | mount::Type::Volume => {
            let recursive = !(spec.r#type == mount::Type::Bind as i32 && spec.non_recursive);
            options.push(if recursive { "rbind" } else { "bind" }.to_string());
            options.push(propagation(spec.propagation).to_string());
            let source = m.source.clone().ok_or_else(|| SpecError::MountSource {
                target: spec.target.clone(),
            })?;
            ("bind", source)
        }
        mount::Type::Tmpfs => {
            options.extend(["nosuid", "nodev"].map(String::from));
            if spec.tmpfs_size > 0 {
                options.push(format!("size={}", spec.tmpfs_size));
            }
            let mode = if spec.tmpfs_mode > 0 {
                spec.tmpfs_mode
            } else {
                0o1777
            };
            options.push(format!("mode={mode:o}"));
            ("tmpfs", PathBuf::from("tmpfs"))
        }
    };
    if spec.read_only {
        options.push("ro".to_string());
    }
    Ok(MountBuilder::default()
        .destination(&spec.target)
        .typ(typ)
        .source(source)
        .options(options)
        .build()?)
}
