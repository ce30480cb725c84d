//! Secrets and configs (`secret create`, `config create`) and a service's references to them
//! (`--secret`, `--config`): docker's rules, shared by the CLI (which parses the flags with
//! [`parse_reference`]) and the control API (which checks again), so both refuse with the
//! same words.
//!
//! A reference becomes a file in the task's containers: a secret's relative target is under
//! `/run/secrets`, a config's under `/` (docker's places), and an absolute target is used as
//! it is. Owner and group are numbers, the mode is permission bits only.

use std::collections::HashMap;

use crate::{ConfigReference, ContainerSpec, SecretReference};

/// Docker's limit on a secret's or config's data (swarmkit's `MaxSecretSize`).
pub const MAX_DATA: usize = 500 * 1024;
/// Docker's limit on a secret's or config's name.
pub const MAX_NAME: usize = 64;
/// Where a secret's relative target is put.
pub const SECRETS_DIR: &str = "/run/secrets";
/// Docker's mode for a secret's or config's file.
pub const DEFAULT_MODE: u32 = 0o444;
/// Longest target path.
const MAX_TARGET: usize = 4096;

/// Which of the two an object or a reference is: they differ only in words and places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Secret,
    Config,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }

    /// The container path of a reference's target.
    pub fn path(self, target: &str) -> String {
        if target.starts_with('/') {
            return target.to_string();
        }
        match self {
            Kind::Secret => format!("{SECRETS_DIR}/{target}"),
            Kind::Config => format!("/{target}"),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a secret, a config or a reference to one was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "invalid {kind} name {name:?}: use 1 to {MAX_NAME} letters, digits, '-', '_' and '.', \
         starting and ending with a letter or digit"
    )]
    InvalidName { kind: Kind, name: String },
    #[error(
        "{kind} data must be larger than 0 and less than 500 KiB ({len} bytes given); \
         {kind}s are for small values such as passwords, keys and certificates"
    )]
    DataSize { kind: Kind, len: usize },
    #[error("too many labels on {kind} {name} ({count}): at most {max}")]
    TooManyLabels {
        kind: Kind,
        name: String,
        count: usize,
        max: usize,
    },
    #[error("invalid --{kind} {value:?}: {reason}")]
    InvalidFlag {
        kind: Kind,
        value: String,
        reason: String,
    },
    #[error("--{kind} needs a source: give `--{kind} NAME` or `--{kind} source=NAME,…`")]
    NoSource { kind: Kind },
    #[error(
        "invalid target {target:?} for {kind} {name}: give a file name (or an absolute path) \
         without '..'"
    )]
    InvalidTarget {
        kind: Kind,
        name: String,
        target: String,
    },
    #[error("invalid {what} {value:?} for {kind} {name}: give a numeric ID such as 0 or 1000")]
    InvalidId {
        kind: Kind,
        name: String,
        what: &'static str,
        value: String,
    },
    #[error(
        "invalid mode {mode:o} for {kind} {name}: only permission bits are allowed (0 to 0777, \
         e.g. mode=0400)"
    )]
    InvalidMode { kind: Kind, name: String, mode: u32 },
    #[error(
        "{first} and {second} both mount at {path}: give each a different target \
         (`target=…`)"
    )]
    DuplicateTarget {
        path: String,
        first: String,
        second: String,
    },
}

/// Docker's name rule: `^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$`, at most 64 bytes.
pub fn name(kind: Kind, name: &str) -> Result<(), SecretError> {
    let inner_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ends_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > MAX_NAME || !inner_ok || !ends_ok {
        return Err(SecretError::InvalidName {
            kind,
            name: name.to_string(),
        });
    }
    Ok(())
}

/// A new secret's or config's name, labels and data.
pub fn object(
    kind: Kind,
    object_name: &str,
    labels: &HashMap<String, String>,
    data: &[u8],
) -> Result<(), SecretError> {
    name(kind, object_name)?;
    let max = super::bounds::MAX_LIST;
    if labels.len() > max {
        return Err(SecretError::TooManyLabels {
            kind,
            name: object_name.to_string(),
            count: labels.len(),
            max,
        });
    }
    if data.is_empty() || data.len() >= MAX_DATA {
        return Err(SecretError::DataSize {
            kind,
            len: data.len(),
        });
    }
    Ok(())
}

/// One reference's fields, whichever kind.
struct Reference<'a> {
    kind: Kind,
    name: &'a str,
    target: &'a str,
    uid: &'a str,
    gid: &'a str,
    mode: u32,
}

impl<'a> Reference<'a> {
    fn of_secret(r: &'a SecretReference) -> Self {
        Reference {
            kind: Kind::Secret,
            name: &r.secret_name,
            target: &r.target,
            uid: &r.uid,
            gid: &r.gid,
            mode: r.mode,
        }
    }

    fn of_config(r: &'a ConfigReference) -> Self {
        Reference {
            kind: Kind::Config,
            name: &r.config_name,
            target: &r.target,
            uid: &r.uid,
            gid: &r.gid,
            mode: r.mode,
        }
    }

    fn check(&self) -> Result<(), SecretError> {
        name(self.kind, self.name)?;
        let t = self.target;
        let bad_target = t.is_empty()
            || t.len() > MAX_TARGET
            || t == "/"
            || t.contains('\0')
            || t.split('/').any(|c| c == ".." || c == ".");
        if bad_target {
            return Err(SecretError::InvalidTarget {
                kind: self.kind,
                name: self.name.to_string(),
                target: t.to_string(),
            });
        }
        for (what, value) in [("uid", self.uid), ("gid", self.gid)] {
            if value.parse::<u32>().is_err() {
                return Err(SecretError::InvalidId {
                    kind: self.kind,
                    name: self.name.to_string(),
                    what,
                    value: value.to_string(),
                });
            }
        }
        if self.mode > 0o777 {
            return Err(SecretError::InvalidMode {
                kind: self.kind,
                name: self.name.to_string(),
                mode: self.mode,
            });
        }
        Ok(())
    }
}

/// A container's `--secret`s and `--config`s: each valid, and no two files at one path.
pub fn references(c: &ContainerSpec) -> Result<(), SecretError> {
    let all = c
        .secrets
        .iter()
        .map(Reference::of_secret)
        .chain(c.configs.iter().map(Reference::of_config));
    let mut paths: HashMap<String, String> = HashMap::new();
    for r in all {
        r.check()?;
        let path = r.kind.path(r.target).trim_end_matches('/').to_string();
        let label = format!("{} {}", r.kind, r.name);
        if let Some(first) = paths.insert(path.clone(), label.clone()) {
            return Err(SecretError::DuplicateTarget {
                path,
                first,
                second: label,
            });
        }
    }
    Ok(())
}

/// Docker's `--secret`/`--config` value: `NAME`, or `source=NAME[,target=T][,uid=U][,gid=G]
/// [,mode=M]` (mode in octal). Returns (name, target, uid, gid, mode) with docker's defaults:
/// target the name, uid and gid "0", mode 0444.
fn parse_flag(
    kind: Kind,
    value: &str,
) -> Result<(String, String, String, String, u32), SecretError> {
    let invalid = |reason: String| SecretError::InvalidFlag {
        kind,
        value: value.to_string(),
        reason,
    };
    let (mut source, mut target, mut uid, mut gid, mut mode) =
        (None, None, "0".to_string(), "0".to_string(), DEFAULT_MODE);
    if !value.contains('=') && !value.contains(',') {
        source = Some(value.to_string());
    } else {
        for field in value.split(',') {
            let (key, v) = field
                .split_once('=')
                .ok_or_else(|| invalid(format!("{field:?} is not KEY=VALUE")))?;
            match key.trim().to_ascii_lowercase().as_str() {
                "source" | "src" => source = Some(v.to_string()),
                "target" => target = Some(v.to_string()),
                "uid" => uid = v.to_string(),
                "gid" => gid = v.to_string(),
                "mode" => {
                    mode = u32::from_str_radix(v, 8).map_err(|_| {
                        invalid(format!(
                            "invalid mode {v:?}: give octal permission bits such as 0400"
                        ))
                    })?;
                }
                other => {
                    return Err(invalid(format!(
                        "unknown key {other:?}: use source, target, uid, gid or mode"
                    )))
                }
            }
        }
    }
    let source = source
        .filter(|s| !s.is_empty())
        .ok_or(SecretError::NoSource { kind })?;
    let target = target.unwrap_or_else(|| source.clone());
    Ok((source, target, uid, gid, mode))
}

/// `--secret VALUE` (see [`parse_flag`]), checked; the ID is the control API's to fill in.
pub fn parse_secret(value: &str) -> Result<SecretReference, SecretError> {
    let (secret_name, target, uid, gid, mode) = parse_flag(Kind::Secret, value)?;
    let r = SecretReference {
        secret_id: String::new(),
        secret_name,
        target,
        uid,
        gid,
        mode,
    };
    Reference::of_secret(&r).check()?;
    Ok(r)
}

/// `--config VALUE` (see [`parse_flag`]), checked.
pub fn parse_config(value: &str) -> Result<ConfigReference, SecretError> {
    let (config_name, target, uid, gid, mode) = parse_flag(Kind::Config, value)?;
    let r = ConfigReference {
        config_id: String::new(),
        config_name,
        target,
        uid,
        gid,
        mode,
    };
    Reference::of_config(&r).check()?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["db_pass", "a", "v1.2-x", "A9"] {
            assert_eq!(name(Kind::Secret, ok), Ok(()), "{ok}");
        }
        for bad in ["", "-x", "x-", "a b", "a/b", "_x", &"x".repeat(65)] {
            assert!(name(Kind::Secret, bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn data_is_bounded() {
        let labels = HashMap::new();
        assert!(object(Kind::Secret, "s", &labels, b"x").is_ok());
        let err = object(Kind::Secret, "s", &labels, b"").unwrap_err();
        assert!(err.to_string().contains("larger than 0"), "{err}");
        let big = vec![0u8; MAX_DATA];
        let err = object(Kind::Config, "c", &labels, &big).unwrap_err();
        assert!(err.to_string().starts_with("config data must be"), "{err}");
    }

    #[test]
    fn flags_parse_with_dockers_defaults() {
        let r = parse_secret("db_pass").expect("short form");
        assert_eq!(
            (r.target.as_str(), r.uid.as_str(), r.gid.as_str(), r.mode),
            ("db_pass", "0", "0", 0o444)
        );
        let r = parse_secret("source=db,target=pw,uid=1000,gid=50,mode=0400").expect("long");
        assert_eq!(
            (
                r.secret_name.as_str(),
                r.target.as_str(),
                r.uid.as_str(),
                r.mode
            ),
            ("db", "pw", "1000", 0o400)
        );
        let c = parse_config("src=nginx.conf,target=/etc/nginx/nginx.conf").expect("config");
        assert_eq!(Kind::Config.path(&c.target), "/etc/nginx/nginx.conf");
        assert_eq!(Kind::Config.path("app.conf"), "/app.conf");
        assert_eq!(Kind::Secret.path("pw"), "/run/secrets/pw");
        for (bad, words) in [
            ("source=db,mode=9", "invalid mode"),
            ("source=db,mode=4755", "only permission bits"),
            ("target=x", "needs a source"),
            ("source=db,uid=root", "invalid uid"),
            ("source=db,target=../etc/passwd", "invalid target"),
            ("source=db,colour=red", "unknown key"),
            ("bad name", "invalid secret name"),
        ] {
            let err = parse_secret(bad).unwrap_err().to_string();
            assert!(err.contains(words), "{bad}: {err}");
        }
    }

    #[test]
    fn two_files_cannot_share_a_path() {
        let mut c = ContainerSpec {
            secrets: vec![
                parse_secret("a").expect("a"),
                parse_secret("source=b,target=/run/secrets/a").expect("b"),
            ],
            ..Default::default()
        };
        let err = references(&c).unwrap_err().to_string();
        assert!(
            err.contains("secret a and secret b both mount at /run/secrets/a"),
            "{err}"
        );
        c.secrets.pop();
        c.configs = vec![parse_config("source=a,target=/run/secrets/a").expect("c")];
        assert!(references(&c).is_err());
        c.configs = vec![parse_config("a").expect("c")];
        assert_eq!(references(&c), Ok(()));
    }
}
