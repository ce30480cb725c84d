//! `--cap-add`/`--cap-drop` and `--security-opt`: parsing them as docker 20.10's CLI does,
//! merging them on `service update`, reading a `seccomp=PATH` profile (the profile travels in
//! the spec; the daemon never reads the client's path), and showing them in `inspect`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use shoal_proto::validate::security::{self, ALL_CAPABILITIES};
use shoal_proto::{privileges, ContainerSpec, Privileges};

/// One `--security-opt` Shoal supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityOpt {
    SeccompUnconfined,
    SeccompProfile(PathBuf),
    AppArmorUnconfined,
}

/// `--cap-add`/`--cap-drop` values: `NET_ADMIN`, `cap_net_admin`, `ALL`, …
pub fn parse_cap_add(s: &str) -> Result<String, String> {
    security::normalize_capability("--cap-add", s).map_err(|e| e.to_string())
}

pub fn parse_cap_drop(s: &str) -> Result<String, String> {
    security::normalize_capability("--cap-drop", s).map_err(|e| e.to_string())
}

/// `--security-opt KEY=VALUE` (or docker's older `KEY:VALUE`).
pub fn parse_security_opt(s: &str) -> Result<SecurityOpt, String> {
    let (key, value) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .unwrap_or((s, ""));
    match (key, value) {
        ("seccomp", "unconfined") => Ok(SecurityOpt::SeccompUnconfined),
        ("seccomp", "") => Err(format!(
            "invalid --security-opt {s:?}: give seccomp=unconfined or seccomp=PATH to a profile"
        )),
        ("seccomp", path) => Ok(SecurityOpt::SeccompProfile(PathBuf::from(path))),
        ("apparmor", "unconfined") => Ok(SecurityOpt::AppArmorUnconfined),
        ("apparmor", _) => Err(format!(
            "invalid --security-opt {s:?}: services run under Shoal's default AppArmor profile \
             or none (apparmor=unconfined); other profiles are not supported"
        )),
        ("label" | "no-new-privileges" | "systempaths" | "credentialspec", _) => Err(format!(
            "--security-opt {s:?} is not supported for services (as in docker's swarm mode); \
             supported: seccomp=unconfined, seccomp=PATH, apparmor=unconfined"
        )),
        _ => Err(format!(
            "unknown --security-opt {s:?}: supported: seccomp=unconfined, seccomp=PATH, \
             apparmor=unconfined"
        )),
    }
}

/// The privileges `--security-opt` asks for, reading and checking a profile file; none when
/// no option was given (docker's defaults).
pub fn privileges(opts: &[SecurityOpt]) -> Result<Option<Privileges>> {
    let mut p = Privileges::default();
    for opt in opts {
        match opt {
            SecurityOpt::SeccompUnconfined => {
                p.seccomp = Some(privileges::Seccomp {
                    mode: privileges::seccomp::Mode::Unconfined as i32,
                    profile: String::new(),
                })
            }
            SecurityOpt::SeccompProfile(path) => {
                let profile = std::fs::read_to_string(path).map_err(|e| {
                    anyhow!(
                        "cannot read seccomp profile {}: {e}; give the path of a JSON profile \
                         in docker's format",
                        path.display()
                    )
                })?;
                security::seccomp_profile(&profile, &format!(" in {}", path.display()))?;
                p.seccomp = Some(privileges::Seccomp {
                    mode: privileges::seccomp::Mode::Custom as i32,
                    profile,
                });
            }
            SecurityOpt::AppArmorUnconfined => {
                p.apparmor = Some(privileges::AppArmor {
                    mode: privileges::app_armor::Mode::Disabled as i32,
                })
            }
        }
    }
    Ok((p != Privileges::default()).then_some(p))
}

/// Docker's `EffectiveCapAddCapDrop`: `ALL` trumps every other name in its list, a name both
/// added and dropped is added, and both lists come out sorted without duplicates.
pub fn effective_add_drop(add: &[String], drop: &[String]) -> (Vec<String>, Vec<String>) {
    let set = |names: &[String]| -> BTreeSet<String> {
        if names.iter().any(|n| n == ALL_CAPABILITIES) {
            BTreeSet::from([ALL_CAPABILITIES.to_string()])
        } else {
            names.iter().cloned().collect()
        }
    };
    let add = set(add);
    let drop: BTreeSet<String> = set(drop).difference(&add).cloned().collect();
    (add.into_iter().collect(), drop.into_iter().collect())
}

/// `service update --cap-add/--cap-drop`, as docker 20.10's `updateCapabilities`: a dropped
/// name leaves the add list (unless also added now), an added name leaves the drop list.
pub fn update_capabilities(c: &mut ContainerSpec, to_add: &[String], to_drop: &[String]) {
    if to_add.is_empty() && to_drop.is_empty() {
        return;
    }
    let mut add: BTreeSet<String> = c.capability_add.iter().cloned().collect();
    let mut drop: BTreeSet<String> = c.capability_drop.iter().cloned().collect();
    for name in to_drop.iter().filter(|n| !to_add.contains(n)) {
        add.remove(name);
        drop.insert(name.clone());
    }
    for name in to_add {
        drop.remove(name);
        add.insert(name.clone());
    }
    let (add, drop) = effective_add_drop(
        &add.into_iter().collect::<Vec<_>>(),
        &drop.into_iter().collect::<Vec<_>>(),
    );
    c.capability_add = add;
    c.capability_drop = drop;
}

/// `inspect`'s container spec in docker's words: `CapabilityAdd`, `CapabilityDrop` and
/// `Privileges` (modes by name), each only when set.
pub fn docker_json(container: &mut serde_json::Map<String, Value>, c: &ContainerSpec) {
    for key in ["capability_add", "capability_drop", "privileges"] {
        container.remove(key);
    }
    if !c.capability_add.is_empty() {
        container.insert("CapabilityAdd".into(), json!(c.capability_add));
    }
    if !c.capability_drop.is_empty() {
        container.insert("CapabilityDrop".into(), json!(c.capability_drop));
    }
    let Some(p) = &c.privileges else { return };
    let mut privileges = serde_json::Map::new();
    if let Some(s) = &p.seccomp {
        let mut seccomp = json!({ "Mode": seccomp_mode(s) });
        if !s.profile.is_empty() {
            seccomp["Profile"] = json!(s.profile);
        }
        privileges.insert("Seccomp".into(), seccomp);
    }
    if let Some(a) = &p.apparmor {
        privileges.insert("AppArmor".into(), json!({ "Mode": apparmor_mode(a) }));
    }
    container.insert("Privileges".into(), Value::Object(privileges));
}

/// Docker's words for the modes: `default`, `unconfined`, `custom`; `default`, `disabled`.
pub fn seccomp_mode(s: &privileges::Seccomp) -> String {
    s.mode().as_str_name().to_ascii_lowercase()
}

pub fn apparmor_mode(a: &privileges::AppArmor) -> String {
    a.mode().as_str_name().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn security_opts_docker_knows() {
        assert_eq!(
            parse_security_opt("seccomp=unconfined"),
            Ok(SecurityOpt::SeccompUnconfined)
        );
        assert_eq!(
            parse_security_opt("seccomp:unconfined"),
            Ok(SecurityOpt::SeccompUnconfined)
        );
        assert_eq!(
            parse_security_opt("seccomp=/etc/p.json"),
            Ok(SecurityOpt::SeccompProfile("/etc/p.json".into()))
        );
        assert_eq!(
            parse_security_opt("apparmor=unconfined"),
            Ok(SecurityOpt::AppArmorUnconfined)
        );
        for (bad, words) in [
            ("no-new-privileges", "not supported for services"),
            ("label=disable", "not supported for services"),
            ("apparmor=my-profile", "other profiles are not supported"),
            ("seccomp=", "seccomp=unconfined or seccomp=PATH"),
            ("fly=high", "unknown --security-opt \"fly=high\""),
        ] {
            let err = parse_security_opt(bad).unwrap_err();
            assert!(err.contains(words), "{bad}: {err}");
        }
    }

    #[test]
    fn profiles_are_read_and_checked_by_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        std::fs::write(&good, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
        let p = privileges(&[SecurityOpt::SeccompProfile(good)])
            .unwrap()
            .unwrap();
        let s = p.seccomp.unwrap();
        assert_eq!(s.mode(), privileges::seccomp::Mode::Custom);
        assert_eq!(s.profile, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        let err = privileges(&[SecurityOpt::SeccompProfile(bad.clone())])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("invalid seccomp profile in {}: ", bad.display())),
            "{err}"
        );
        let missing = dir.path().join("missing.json");
        let err = privileges(&[SecurityOpt::SeccompProfile(missing)])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot read seccomp profile "), "{err}");
        assert_eq!(privileges(&[]).unwrap(), None);
    }

    #[test]
    fn add_and_drop_lists_as_docker() {
        assert_eq!(
            effective_add_drop(
                &strs(&["CAP_B", "CAP_A", "CAP_A"]),
                &strs(&["CAP_A", "CAP_C"])
            ),
            (strs(&["CAP_A", "CAP_B"]), strs(&["CAP_C"]))
        );
        assert_eq!(
            effective_add_drop(&strs(&["CAP_A", "ALL"]), &strs(&["ALL", "CAP_B"])),
            (strs(&["ALL"]), strs(&[]))
        );
        assert_eq!(
            effective_add_drop(&strs(&["CAP_A"]), &strs(&["CAP_B", "ALL"])),
            (strs(&["CAP_A"]), strs(&["ALL"]))
        );
    }

    #[test]
    fn updates_move_names_between_the_lists() {
        let mut c = ContainerSpec {
            capability_add: strs(&["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]),
            capability_drop: strs(&["CAP_NET_RAW"]),
            ..Default::default()
        };
        update_capabilities(&mut c, &strs(&["CAP_NET_RAW"]), &strs(&["CAP_SYS_ADMIN"]));
        assert_eq!(c.capability_add, strs(&["CAP_NET_ADMIN", "CAP_NET_RAW"]));
        assert_eq!(c.capability_drop, strs(&["CAP_SYS_ADMIN"]));
        // Both at once: adding wins.
        update_capabilities(&mut c, &strs(&["CAP_KILL"]), &strs(&["CAP_KILL"]));
        assert!(c.capability_add.contains(&"CAP_KILL".to_string()));
        assert!(!c.capability_drop.contains(&"CAP_KILL".to_string()));
        let before = c.clone();
        update_capabilities(&mut c, &[], &[]);
        assert_eq!(c, before);
    }

    #[test]
    fn inspect_uses_dockers_names() {
        let c = ContainerSpec {
            capability_add: strs(&["CAP_SYS_ADMIN"]),
            privileges: Some(Privileges::seccomp_only(
                privileges::seccomp::Mode::Unconfined,
                "",
            )),
            ..Default::default()
        };
        let mut json = match serde_json::to_value(&c) {
            Ok(Value::Object(map)) => map,
            other => panic!("not an object: {other:?}"),
        };
        docker_json(&mut json, &c);
        assert_eq!(json["CapabilityAdd"], json!(["CAP_SYS_ADMIN"]));
        assert!(!json.contains_key("CapabilityDrop") && !json.contains_key("capability_add"));
        assert_eq!(
            json["Privileges"],
            json!({"Seccomp": {"Mode": "unconfined"}})
        );
    }
}
