//! `--mount` as docker's `service create` takes it (`type=bind|volume|tmpfs,source=…,
//! target=…,readonly,…`), parsed into [`Mount`] and checked: the CLI and the control API refuse
//! the same mounts with the same words, and the worker mounts only what passed.

use std::collections::HashSet;

use crate::{mount, ContainerSpec, Mount};

/// Where a named volume's name may come from: docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && name.len() <= 255
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error(
        "invalid --mount {0:?}: expected comma-separated KEY=VALUE fields, e.g. \
         type=volume,source=data,target=/data"
    )]
    Syntax(String),
    #[error(
        "unknown --mount field {0:?}: use type, source (src), target (dst, destination), \
         readonly (ro), bind-propagation, bind-nonrecursive, volume-driver, volume-label, \
         volume-nocopy, tmpfs-size, tmpfs-mode"
    )]
    UnknownField(String),
    #[error("invalid --mount type {0:?}: use bind, volume or tmpfs")]
    Type(String),
    #[error("invalid --mount value {field}={value:?}: {why}")]
    Value {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("--mount needs a target: the absolute path inside the container (target=/data)")]
    NoTarget,
    #[error("invalid --mount target {0:?}: it must be an absolute path other than /")]
    Target(String),
    #[error("two mounts have the same target {0}: give each target once")]
    DuplicateTarget(String),
    #[error("a bind mount needs a source: the absolute path on the node (source=/srv/data)")]
    NoBindSource,
    #[error("invalid bind mount source {0:?}: it must be an absolute path on the node")]
    BindSource(String),
    #[error(
        "invalid volume name {0:?}: use letters, digits, '_', '.' and '-', starting with a \
         letter or digit (at least 2 characters)"
    )]
    VolumeName(String),
    #[error("a tmpfs mount has no source: drop source={0}")]
    TmpfsSource(String),
    #[error("the --mount option {option} only applies to type={applies}")]
    WrongType {
        option: &'static str,
        applies: &'static str,
    },
    #[error(
        "unsupported volume-driver {0:?}: volumes are the node's own (local); drop \
         volume-driver or use local"
    )]
    VolumeDriver(String),
    #[error(
        "unsupported --mount field {0}: local volumes take no driver options; use a bind \
         mount for a device or a remote filesystem mounted on the node"
    )]
    VolumeOpt(String),
}

/// Parses one `--mount` value. Fields and their aliases are docker's; `readonly` and
/// `volume-nocopy` may stand alone (meaning true).
pub fn parse_mount(arg: &str) -> Result<Mount, MountError> {
    let mut m = Mount {
        r#type: mount::Type::Volume as i32,
        ..Default::default()
    };
    let mut options = Vec::new();
    for field in arg.split(',') {
        let field = field.trim();
        if field.is_empty() {
            return Err(MountError::Syntax(arg.to_string()));
        }
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (field.to_ascii_lowercase(), None),
        };
        match key.as_str() {
            "type" => {
                let v = need(value, arg)?;
                m.r#type = match v {
                    "bind" => mount::Type::Bind,
                    "volume" => mount::Type::Volume,
                    "tmpfs" => mount::Type::Tmpfs,
                    _ => return Err(MountError::Type(v.to_string())),
                } as i32;
            }
            "source" | "src" => m.source = need(value, arg)?.to_string(),
            "target" | "dst" | "destination" => m.target = need(value, arg)?.to_string(),
            "readonly" | "ro" => m.read_only = boolean("readonly", value)?,
            "bind-propagation" => {
                let v = need(value, arg)?;
                options.push("bind-propagation");
                m.propagation = match v {
                    "rprivate" => mount::Propagation::Rprivate,
                    "private" => mount::Propagation::Private,
                    "rshared" => mount::Propagation::Rshared,
                    "shared" => mount::Propagation::Shared,
                    "rslave" => mount::Propagation::Rslave,
                    "slave" => mount::Propagation::Slave,
                    _ => {
                        return Err(MountError::Value {
                            field: "bind-propagation",
                            value: v.to_string(),
                            why: "use rprivate, private, rshared, shared, rslave or slave",
                        })
                    }
                } as i32;
            }
            "bind-nonrecursive" => {
                options.push("bind-nonrecursive");
                m.non_recursive = boolean("bind-nonrecursive", value)?;
            }
            "volume-nocopy" => {
                options.push("volume-nocopy");
                m.no_copy = boolean("volume-nocopy", value)?;
            }
            "volume-label" => {
                options.push("volume-label");
                let v = need(value, arg)?;
                let (k, val) = v.split_once('=').unwrap_or((v, ""));
                if k.is_empty() {
                    return Err(MountError::Value {
                        field: "volume-label",
                        value: v.to_string(),
                        why: "expected KEY=VALUE",
                    });
                }
                m.volume_labels.insert(k.to_string(), val.to_string());
            }
            "volume-driver" => {
                let v = need(value, arg)?;
                if v != "local" {
                    return Err(MountError::VolumeDriver(v.to_string()));
                }
                options.push("volume-driver");
            }
            "volume-opt" => return Err(MountError::VolumeOpt("volume-opt".into())),
            "tmpfs-size" => {
                options.push("tmpfs-size");
                let v = need(value, arg)?;
                m.tmpfs_size = super::options::parse_size(v)
                    .and_then(|n| i64::try_from(n).ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| MountError::Value {
                        field: "tmpfs-size",
                        value: v.to_string(),
                        why: "give a size such as 64m or 1g",
                    })?;
            }
            "tmpfs-mode" => {
                options.push("tmpfs-mode");
                let v = need(value, arg)?;
                m.tmpfs_mode = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|&n| n > 0 && n <= 0o7777)
                    .ok_or_else(|| MountError::Value {
                        field: "tmpfs-mode",
                        value: v.to_string(),
                        why: "give an octal file mode such as 1777 or 700",
                    })?;
            }
            // Docker accepts it on every platform and ignores it on Linux.
            "consistency" => {}
            _ => return Err(MountError::UnknownField(key)),
        }
    }
    for option in options {
        check_option_type(&m, option)?;
    }
    check(&m)?;
    Ok(m)
}

/// The value a field must have (`type` alone means nothing).
fn need<'a>(value: Option<&'a str>, arg: &str) -> Result<&'a str, MountError> {
    value.ok_or_else(|| MountError::Syntax(arg.to_string()))
}

fn boolean(field: &'static str, value: Option<&str>) -> Result<bool, MountError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => Err(MountError::Value {
            field,
            value: v.to_string(),
            why: "use true or false",
        }),
    }
}

/// The type an option belongs to.
fn check_option_type(m: &Mount, option: &'static str) -> Result<(), MountError> {
    let applies = match option {
        "bind-propagation" | "bind-nonrecursive" => mount::Type::Bind,
        "tmpfs-size" | "tmpfs-mode" => mount::Type::Tmpfs,
        _ => mount::Type::Volume,
    };
    if m.r#type == applies as i32 {
        Ok(())
    } else {
        Err(MountError::WrongType {
            option,
            applies: type_name(applies),
        })
    }
}

fn type_name(t: mount::Type) -> &'static str {
    match t {
        mount::Type::Bind => "bind",
        mount::Type::Volume => "volume",
        mount::Type::Tmpfs => "tmpfs",
    }
}

/// Checks one mount on its own.
pub fn check(m: &Mount) -> Result<(), MountError> {
    if m.target.is_empty() {
        return Err(MountError::NoTarget);
    }
    if !m.target.starts_with('/') || m.target.trim_end_matches('/').is_empty() {
        return Err(MountError::Target(m.target.clone()));
    }
    let kind =
        mount::Type::try_from(m.r#type).map_err(|_| MountError::Type(m.r#type.to_string()))?;
    match kind {
        mount::Type::Bind => {
            if m.source.is_empty() {
                return Err(MountError::NoBindSource);
            }
            if !m.source.starts_with('/') {
                return Err(MountError::BindSource(m.source.clone()));
            }
        }
        mount::Type::Volume => {
            if !m.source.is_empty() && !volume_name(&m.source) {
                return Err(MountError::VolumeName(m.source.clone()));
            }
        }
        mount::Type::Tmpfs => {
            if !m.source.is_empty() {
                return Err(MountError::TmpfsSource(m.source.clone()));
            }
        }
    }
    Ok(())
}

/// Checks every mount of `c`, and that no two share a target.
pub fn container(c: &ContainerSpec) -> Result<(), MountError> {
    let mut targets = HashSet::new();
    for m in &c.mounts {
        check(m)?;
        let target = m.target.trim_end_matches('/');
        if !targets.insert(target) {
            return Err(MountError::DuplicateTarget(target.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_mount_forms_parse() {
        let m = parse_mount("type=volume,source=data,target=/data").expect("valid");
        assert_eq!(m.r#type, mount::Type::Volume as i32);
        assert_eq!((m.source.as_str(), m.target.as_str()), ("data", "/data"));
        assert!(!m.read_only);

        let m = parse_mount("type=bind,src=/srv,dst=/srv,readonly,bind-propagation=rslave")
            .expect("valid");
        assert_eq!(m.r#type, mount::Type::Bind as i32);
        assert!(m.read_only);
        assert_eq!(m.propagation, mount::Propagation::Rslave as i32);

        let m = parse_mount("type=tmpfs,destination=/cache,tmpfs-size=64m,tmpfs-mode=700")
            .expect("valid");
        assert_eq!((m.tmpfs_size, m.tmpfs_mode), (64 << 20, 0o700));

        // The default type is volume; no source makes an anonymous one.
        let m = parse_mount("target=/scratch,volume-nocopy,volume-label=a=b").expect("valid");
        assert_eq!(m.r#type, mount::Type::Volume as i32);
        assert!(m.no_copy && m.source.is_empty());
        assert_eq!(m.volume_labels.get("a").map(String::as_str), Some("b"));
        assert!(!parse_mount("target=/x,ro=false").expect("valid").read_only);
    }

    #[test]
    fn bad_mounts_say_what_is_wrong() {
        type Expect = fn(&MountError) -> bool;
        let cases: [(&str, Expect); 12] = [
            ("type=nfs,target=/x", |e| matches!(e, MountError::Type(_))),
            ("type=bind,target=/x", |e| {
                matches!(e, MountError::NoBindSource)
            }),
            ("type=bind,source=srv,target=/x", |e| {
                matches!(e, MountError::BindSource(_))
            }),
            ("type=volume,source=/x", |e| {
                matches!(e, MountError::NoTarget)
            }),
            ("source=data,target=rel", |e| {
                matches!(e, MountError::Target(_))
            }),
            ("source=data,target=/", |e| {
                matches!(e, MountError::Target(_))
            }),
            ("source=-bad,target=/x", |e| {
                matches!(e, MountError::VolumeName(_))
            }),
            ("type=tmpfs,source=x,target=/x", |e| {
                matches!(e, MountError::TmpfsSource(_))
            }),
            ("type=volume,target=/x,tmpfs-size=1m", |e| {
                matches!(e, MountError::WrongType { .. })
            }),
            ("target=/x,volume-driver=nfs", |e| {
                matches!(e, MountError::VolumeDriver(_))
            }),
            ("target=/x,colour=red", |e| {
                matches!(e, MountError::UnknownField(_))
            }),
            ("target=/x,,ro", |e| matches!(e, MountError::Syntax(_))),
        ];
        for (arg, expected) in cases {
            let err = parse_mount(arg).expect_err(arg);
            assert!(expected(&err), "{arg}: {err}");
        }
        assert!(matches!(
            parse_mount("type=tmpfs,target=/x,tmpfs-mode=999"),
            Err(MountError::Value { .. })
        ));
    }

    #[test]
    fn targets_are_unique() {
        let c = ContainerSpec {
            mounts: vec![
                parse_mount("source=aa,target=/data").expect("valid"),
                parse_mount("type=tmpfs,target=/data/").expect("valid"),
            ],
            ..Default::default()
        };
        assert_eq!(
            container(&c),
            Err(MountError::DuplicateTarget("/data".into()))
        );
    }
}
