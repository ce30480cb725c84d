use oci_spec::runtime::{Arch, LinuxSeccompAction};
use shoal_proto::validate::security::KernelVersion;
use shoal_proto::{privileges, Privileges};

use super::super::apparmor::AppArmorState;
use super::super::capabilities::default_capabilities;
use super::*;

fn host(arch: &'static str, kernel: u64, major: u64) -> Host {
    Host {
        arch,
        kernel: Some(KernelVersion { kernel, major }),
        last_cap: 40,
        apparmor: AppArmorState::Disabled,
    }
}

fn default_with(add: &[Capability], host: &Host) -> LinuxSeccomp {
    let mut caps = default_capabilities();
    caps.extend(add.iter().copied());
    render(default_profile().unwrap(), &caps, host).unwrap()
}

/// Whether some rule allows `name` whatever its arguments.
fn allowed(s: &LinuxSeccomp, name: &str) -> bool {
    s.syscalls().iter().flatten().any(|r| {
        r.action() == LinuxSeccompAction::ScmpActAllow
            && r.names().iter().any(|n| n == name)
            && r.args().as_ref().is_none_or(|a| a.is_empty())
    })
}

#[test]
fn the_default_profile_denies_by_default_for_this_arch() {
    let s = default_with(&[], &host("amd64", 6, 1));
    assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(
        s.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
    );
    assert!(allowed(&s, "read") && allowed(&s, "arch_prctl"));
    assert!(!allowed(&s, "arm_fadvise64_64"));
    let arm = default_with(&[], &host("arm64", 6, 1));
    assert_eq!(
        arm.architectures().as_deref(),
        Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
    );
    assert!(allowed(&arm, "arm_fadvise64_64") && !allowed(&arm, "arch_prctl"));
}

#[test]
fn syscalls_follow_the_capabilities_as_docker() {
    let h = host("amd64", 6, 1);
    let plain = default_with(&[], &h);
    for name in [
        "mount",
        "unshare",
        "setns",
        "umount2",
        "reboot",
        "process_vm_readv",
    ] {
        assert!(!allowed(&plain, name), "{name} allowed by default");
    }
    // clone is allowed only without namespace flags (an argument condition).
    assert!(!allowed(&plain, "clone"));
    assert!(plain
        .syscalls()
        .iter()
        .flatten()
        .any(|r| r.names() == &["clone"] && r.args().as_ref().is_some_and(|a| a.len() == 1)));
    let admin = default_with(&[Capability::SysAdmin], &h);
    for name in ["mount", "unshare", "setns", "umount2", "clone"] {
        assert!(allowed(&admin, name), "{name} refused with CAP_SYS_ADMIN");
    }
    assert!(allowed(&default_with(&[Capability::SysBoot], &h), "reboot"));
    let ptrace = default_with(&[Capability::SysPtrace], &h);
    assert!(allowed(&ptrace, "process_vm_readv") && allowed(&ptrace, "kcmp"));
}

#[test]
fn kernel_conditions_use_the_nodes_version() {
    // docker 20.10's profile allows ptrace from kernel 4.8 on (older kernels let it bypass
    // seccomp), whatever the capabilities.
    assert!(allowed(&default_with(&[], &host("amd64", 4, 8)), "ptrace"));
    assert!(!allowed(&default_with(&[], &host("amd64", 4, 4)), "ptrace"));
    let unknown = Host {
        kernel: None,
        ..host("amd64", 0, 0)
    };
    let caps = default_capabilities();
    let err = render(default_profile().unwrap(), &caps, &unknown)
        .unwrap_err()
        .to_string();
    assert!(err.contains("kernel version cannot be read"), "{err}");
}

#[test]
fn services_choose_default_unconfined_or_their_own() {
    let h = host("amd64", 6, 1);
    let caps = default_capabilities();
    let default = for_container(&ContainerSpec::default(), &caps, &h).unwrap();
    assert_eq!(default, Some(default_with(&[], &h)));
    let unconfined = ContainerSpec {
        privileges: Some(Privileges::seccomp_only(
            privileges::seccomp::Mode::Unconfined,
            "",
        )),
        ..Default::default()
    };
    assert_eq!(for_container(&unconfined, &caps, &h).unwrap(), None);
    let own = Privileges::seccomp_only(
        privileges::seccomp::Mode::Custom,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","defaultErrnoRet":1,
            "architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"name":"mkdir","action":"SCMP_ACT_ERRNO","errnoRet":13,"args":null},
                        {"names":["chmod"],"action":"SCMP_ACT_KILL","includes":{"caps":["CAP_SYS_ADMIN"]}}]}"#,
    );
    let own = ContainerSpec {
        privileges: Some(own),
        ..Default::default()
    };
    let s = for_container(&own, &caps, &h).unwrap().unwrap();
    assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActAllow);
    assert_eq!(s.default_errno_ret(), Some(1));
    assert_eq!(
        s.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86_64][..])
    );
    let rules = s.syscalls().clone().unwrap_or_default();
    assert_eq!(rules.len(), 1, "the chmod rule needs CAP_SYS_ADMIN");
    assert_eq!(rules[0].names(), &["mkdir"]);
    assert_eq!(rules[0].errno_ret(), Some(13));
}
