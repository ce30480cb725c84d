//! The security settings of a service's containers: `--cap-add`/`--cap-drop` names and the
//! seccomp profile that `--security-opt seccomp=PATH` sends, in docker's JSON format.
//!
//! The profile types are docker's (`profiles/seccomp`'s `Seccomp`): the conditional rules
//! (`includes`/`excludes`) are kept as given, since only the worker knows the final capability
//! set and the node's architecture and kernel. Parsing is here so that the CLI (naming the
//! file) and the control API (before anything is stored) refuse a bad profile with the same
//! words, and the worker renders only profiles that passed.

use serde::{Deserialize, Serialize};

use crate::{privileges, ContainerSpec, Privileges};

/// Every capability docker 20.10 knows, in kernel order (bit 0 first); `ALL` means all of them
/// that the node's kernel has.
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// `--cap-add ALL` / `--cap-drop ALL`.
pub const ALL_CAPABILITIES: &str = "ALL";

/// Why a security setting was refused; the words users see from the CLI or the daemon.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecurityError {
    #[error(
        "unknown capability {name:?} in {flag}: give a Linux capability such as NET_ADMIN or \
         CAP_NET_ADMIN (see capabilities(7)), or ALL"
    )]
    UnknownCapability { flag: &'static str, name: String },
    #[error(
        "invalid seccomp profile{origin}: {reason}; give a JSON profile in docker's format \
         (like moby's profiles/seccomp/default.json)"
    )]
    InvalidSeccompProfile { origin: String, reason: String },
    #[error("a custom seccomp profile (--security-opt seccomp=PATH) needs the profile's content")]
    MissingSeccompProfile,
    #[error(
        "a seccomp profile is given but the mode is not custom: use --security-opt seccomp=PATH"
    )]
    UnexpectedSeccompProfile,
}

/// A capability as docker's CLI normalises it (`net_admin`, `CAP_NET_ADMIN` → `CAP_NET_ADMIN`;
/// `all` → `ALL`), refused when no kernel knows it.
pub fn normalize_capability(flag: &'static str, name: &str) -> Result<String, SecurityError> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == ALL_CAPABILITIES {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(SecurityError::UnknownCapability {
            flag,
            name: name.to_string(),
        })
    }
}

/// A stored spec's capabilities are normalised known names, and its seccomp options are
/// consistent (a custom mode carries a profile that parses, no other mode carries one).
pub fn container(c: &ContainerSpec) -> Result<(), SecurityError> {
    for (flag, names) in [
        ("--cap-add", &c.capability_add),
        ("--cap-drop", &c.capability_drop),
    ] {
        for name in names {
            if normalize_capability(flag, name)? != *name {
                return Err(SecurityError::UnknownCapability {
                    flag,
                    name: name.clone(),
                });
            }
        }
    }
    let Some(seccomp) = c.privileges.as_ref().and_then(|p| p.seccomp.as_ref()) else {
        return Ok(());
    };
    match (seccomp.mode(), seccomp.profile.is_empty()) {
        (privileges::seccomp::Mode::Custom, true) => Err(SecurityError::MissingSeccompProfile),
        (privileges::seccomp::Mode::Custom, false) => {
            seccomp_profile(&seccomp.profile, "").map(|_| ())
        }
        (_, true) => Ok(()),
        (_, false) => Err(SecurityError::UnexpectedSeccompProfile),
    }
}

impl Privileges {
    /// Only a seccomp choice (`profile`: the JSON of a custom one), AppArmor left as default.
    pub fn seccomp_only(mode: privileges::seccomp::Mode, profile: impl Into<String>) -> Self {
        Privileges {
            seccomp: Some(privileges::Seccomp {
                mode: mode as i32,
                profile: profile.into(),
            }),
            apparmor: None,
        }
    }
}

/// A seccomp profile in docker's format, as `profiles/seccomp`'s `Seccomp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompProfile {
    pub default_action: SeccompAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// The old format: the architectures as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<SeccompArch>,
    /// The new format: for the node's architecture, it and its sub-architectures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arch_map: Vec<ArchMap>,
    #[serde(default)]
    pub syscalls: Vec<SyscallRule>,
}

/// One entry of `archMap`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: SeccompArch,
    #[serde(default)]
    pub sub_architectures: Vec<SeccompArch>,
}

/// One rule: what happens to some syscalls, when its conditions hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyscallRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    pub action: SeccompAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// `null` and absent are both "no argument conditions".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<SeccompArg>>,
    #[serde(default)]
    pub includes: SeccompFilter,
    #[serde(default)]
    pub excludes: SeccompFilter,
}

impl SyscallRule {
    /// The syscalls the rule is about (`name` is the old format's single name).
    pub fn syscall_names(&self) -> Vec<String> {
        if self.name.is_empty() {
            self.names.clone()
        } else {
            vec![self.name.clone()]
        }
    }
}

/// A rule's condition: the container has all these capabilities, the node is one of these
/// architectures (libseccomp's names: `amd64`, `arm64`, …) and runs at least this kernel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompFilter {
    #[serde(default)]
    pub caps: Vec<String>,
    #[serde(default)]
    pub arches: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<KernelVersion>,
}

/// `"<kernel>.<major>"`, e.g. `"4.8"`: distro suffixes and minor revisions are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KernelVersion {
    pub kernel: u64,
    pub major: u64,
}

impl TryFrom<String> for KernelVersion {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("invalid kernel version {s:?}, expected \"<kernel>.<major>\"");
        let (kernel, major) = s.split_once('.').ok_or_else(bad)?;
        let version = KernelVersion {
            kernel: kernel.parse().map_err(|_| bad())?,
            major: major.parse().map_err(|_| bad())?,
        };
        if version.kernel == 0 && version.major == 0 {
            return Err(bad());
        }
        Ok(version)
    }
}

impl From<KernelVersion> for String {
    fn from(v: KernelVersion) -> String {
        format!("{}.{}", v.kernel, v.major)
    }
}

/// A condition on one syscall argument (the OCI spec's `LinuxSeccompArg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompArg {
    pub index: u32,
    pub value: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value_two: u64,
    pub op: SeccompOperator,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The actions runc knows, by their libseccomp names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SeccompAction {
    ScmpActKill,
    ScmpActKillThread,
    ScmpActKillProcess,
    ScmpActTrap,
    ScmpActErrno,
    ScmpActNotify,
    ScmpActTrace,
    ScmpActLog,
    ScmpActAllow,
}

/// The comparisons runc knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SeccompOperator {
    ScmpCmpNe,
    ScmpCmpLt,
    ScmpCmpLe,
    ScmpCmpEq,
    ScmpCmpGe,
    ScmpCmpGt,
    ScmpCmpMaskedEq,
}

/// The architectures runc knows, by their libseccomp names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompArch {
    #[serde(rename = "SCMP_ARCH_NATIVE")]
    Native,
    #[serde(rename = "SCMP_ARCH_X86")]
    X86,
    #[serde(rename = "SCMP_ARCH_X86_64")]
    X86_64,
    #[serde(rename = "SCMP_ARCH_X32")]
    X32,
    #[serde(rename = "SCMP_ARCH_ARM")]
    Arm,
    #[serde(rename = "SCMP_ARCH_AARCH64")]
    Aarch64,
    #[serde(rename = "SCMP_ARCH_MIPS")]
    Mips,
    #[serde(rename = "SCMP_ARCH_MIPS64")]
    Mips64,
    #[serde(rename = "SCMP_ARCH_MIPS64N32")]
    Mips64n32,
    #[serde(rename = "SCMP_ARCH_MIPSEL")]
    Mipsel,
    #[serde(rename = "SCMP_ARCH_MIPSEL64")]
    Mipsel64,
    #[serde(rename = "SCMP_ARCH_MIPSEL64N32")]
    Mipsel64n32,
    #[serde(rename = "SCMP_ARCH_PPC")]
    Ppc,
    #[serde(rename = "SCMP_ARCH_PPC64")]
    Ppc64,
    #[serde(rename = "SCMP_ARCH_PPC64LE")]
    Ppc64le,
    #[serde(rename = "SCMP_ARCH_S390")]
    S390,
    #[serde(rename = "SCMP_ARCH_S390X")]
    S390x,
    #[serde(rename = "SCMP_ARCH_RISCV64")]
    Riscv64,
}

/// Parses a profile as docker's `LoadProfile` does, with its two format checks; `origin` names
/// where it came from (e.g. " in /etc/profile.json"), or is empty.
pub fn seccomp_profile(json: &str, origin: &str) -> Result<SeccompProfile, SecurityError> {
    let invalid = |reason: String| SecurityError::InvalidSeccompProfile {
        origin: origin.to_string(),
        reason,
    };
    let profile: SeccompProfile = serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
    if !profile.architectures.is_empty() && !profile.arch_map.is_empty() {
        return Err(invalid(
            "'architectures' and 'archMap' are both given; use one of them".into(),
        ));
    }
    if let Some(rule) = profile
        .syscalls
        .iter()
        .find(|r| !r.name.is_empty() && !r.names.is_empty())
    {
        return Err(invalid(format!(
            "a rule for {:?} gives both 'name' and 'names'; use one of them",
            rule.name
        )));
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_normalised_as_docker_does() {
        let n = |s| normalize_capability("--cap-add", s);
        assert_eq!(n("net_admin").as_deref(), Ok("CAP_NET_ADMIN"));
        assert_eq!(n(" Cap_Sys_Admin ").as_deref(), Ok("CAP_SYS_ADMIN"));
        assert_eq!(n("all").as_deref(), Ok("ALL"));
        let err = n("CAP_FLY").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown capability \"CAP_FLY\" in --cap-add"),
            "{err}"
        );
    }

    #[test]
    fn stored_capabilities_must_be_normalised() {
        let mut c = ContainerSpec {
            capability_add: vec!["CAP_NET_ADMIN".into(), "ALL".into()],
            capability_drop: vec!["CAP_NET_RAW".into()],
            ..Default::default()
        };
        assert_eq!(container(&c), Ok(()));
        c.capability_drop.push("net_raw".into());
        assert!(matches!(
            container(&c),
            Err(SecurityError::UnknownCapability {
                flag: "--cap-drop",
                ..
            })
        ));
    }

    fn with_seccomp(mode: privileges::seccomp::Mode, profile: &str) -> ContainerSpec {
        ContainerSpec {
            privileges: Some(Privileges::seccomp_only(mode, profile)),
            ..Default::default()
        }
    }

    #[test]
    fn seccomp_options_are_consistent() {
        use privileges::seccomp::Mode;
        let ok = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}"#;
        assert_eq!(container(&with_seccomp(Mode::Custom, ok)), Ok(()));
        assert_eq!(container(&with_seccomp(Mode::Unconfined, "")), Ok(()));
        assert_eq!(
            container(&with_seccomp(Mode::Custom, "")),
            Err(SecurityError::MissingSeccompProfile)
        );
        assert_eq!(
            container(&with_seccomp(Mode::Default, ok)),
            Err(SecurityError::UnexpectedSeccompProfile)
        );
        let err = container(&with_seccomp(Mode::Custom, "{")).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid seccomp profile: "),
            "{err}"
        );
    }

    #[test]
    fn bad_profiles_say_what_is_wrong() {
        let err = |json| seccomp_profile(json, " in p.json").unwrap_err().to_string();
        assert!(err("{}").contains("missing field `defaultAction`"));
        let e = err(r#"{"defaultAction":"SCMP_ACT_MAYBE"}"#);
        assert!(
            e.starts_with("invalid seccomp profile in p.json: unknown variant"),
            "{e}"
        );
        assert!(err(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86"],
                "archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#
        )
        .contains("'architectures' and 'archMap'"));
        assert!(err(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"a","names":["b"],
                "action":"SCMP_ACT_ALLOW"}]}"#
        )
        .contains("both 'name' and 'names'"));
        assert!(err(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["b"],
                "action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4"}}]}"#
        )
        .contains("invalid kernel version \"4\""));
    }

    #[test]
    fn profiles_and_capability_lists_are_bounded() {
        use crate::validate::bounds::{self, BoundsError, MAX_STRING};
        let spec = |c: ContainerSpec| crate::ServiceSpec {
            container: Some(c),
            ..Default::default()
        };
        let huge = format!(
            "{{\"defaultAction\":\"SCMP_ACT_ALLOW\"{}}}",
            " ".repeat(MAX_STRING)
        );
        let err = bounds::check(&spec(with_seccomp(
            privileges::seccomp::Mode::Custom,
            &huge,
        )))
        .unwrap_err();
        assert!(matches!(
            err,
            BoundsError::TooLong {
                flag: "--security-opt seccomp=PATH",
                ..
            }
        ));
        let many = ContainerSpec {
            capability_drop: vec!["CAP_CHOWN".into(); 1_001],
            ..Default::default()
        };
        assert!(matches!(
            bounds::check(&spec(many)),
            Err(BoundsError::TooMany {
                flag: "--cap-drop",
                ..
            })
        ));
    }
}
