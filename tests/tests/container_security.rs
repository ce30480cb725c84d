//! Containers confined as docker confines them, checked inside real containers: docker's
//! default seccomp profile (`Seccomp: 2` in `/proc/self/status`, `unshare` and `mount`
//! refused), `--security-opt seccomp=unconfined` (`Seccomp: 0`), a profile of the service's own
//! (`seccomp=PATH`), and `--cap-add`/`--cap-drop` (the `CapEff` bits; `mount` allowed with
//! CAP_SYS_ADMIN, which the default profile then allows too). Bad values are refused with a
//! clear error and store nothing. AppArmor is not exercised: this machine has none.
//!
//! Two tests, each on its own host so they run in parallel.

use std::time::Duration;

use shoal_tests::daemon::{words, ShoalHost};

const CONVERGE: Duration = Duration::from_secs(60);

/// What every probe task prints, then it sleeps: its seccomp mode and effective capabilities,
/// and whether `mkdir`, `mount` and `unshare` worked.
const PROBE: &str = "grep -E '^(Seccomp|CapEff):' /proc/self/status; \
    mkdir /tmp/m && echo MKDIR=ok || echo MKDIR=refused; \
    mount -t tmpfs none /tmp/m && echo MOUNT=ok || echo MOUNT=refused; \
    unshare -U true && echo UNSHARE=ok || echo UNSHARE=refused; \
    echo PROBE=done; sleep 3600";

/// Docker's default capabilities as `CapEff` prints them.
const DEFAULT_CAPS: &str = "00000000a80425fb";
/// Without CAP_NET_RAW (bit 13).
const NO_NET_RAW_CAPS: &str = "00000000a80405fb";
/// With CAP_SYS_ADMIN (bit 21).
const SYS_ADMIN_CAPS: &str = "00000000a82425fb";

/// What a probe task reported, once it has.
#[derive(Debug, Default, PartialEq)]
struct Probe {
    seccomp: String,
    cap_eff: String,
    mkdir: String,
    mount: String,
    unshare: String,
}

/// Parses one task's `service logs` (the task name prefixes every line).
fn parse_probe(logs: &str) -> Option<Probe> {
    let mut p = Probe::default();
    let mut done = false;
    for line in logs.lines() {
        let text = line.split_once('|').map_or(line, |(_, t)| t).trim();
        let mut fields = text.split_whitespace();
        match (fields.next(), fields.next()) {
            (Some("Seccomp:"), Some(v)) => p.seccomp = v.to_string(),
            (Some("CapEff:"), Some(v)) => p.cap_eff = v.to_string(),
            _ => {}
        }
        for (key, field) in [
            ("MKDIR=", &mut p.mkdir),
            ("MOUNT=", &mut p.mount),
            ("UNSHARE=", &mut p.unshare),
        ] {
            if let Some(v) = text.strip_prefix(key) {
                *field = v.to_string();
            }
        }
        done |= text == "PROBE=done";
    }
    done.then_some(p)
}

/// Creates a probe service with `flags` (detached) and returns its report.
fn probe(host: &ShoalHost, name: &str, flags: &[&str]) -> (Probe, String) {
    let mut args = vec!["service", "create", "-d", "--name", name];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["busybox", "sh", "-c", PROBE]);
    host.shoal_ok(&args);
    report(host, name)
}

/// The probe report of `name`'s current task, and the whole log (for failure messages and
/// the error texts).
fn report(host: &ShoalHost, name: &str) -> (Probe, String) {
    let logs = || {
        let out = host.shoal(&["service", "logs", name]);
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        text
    };
    host.wait_for(CONVERGE, &format!("the probe report of {name}"), || {
        parse_probe(&logs()).is_some()
    });
    let text = logs();
    (parse_probe(&text).unwrap_or_default(), text)
}

fn task_ids(host: &ShoalHost, name: &str) -> Vec<String> {
    host.running_containers_of(name)
        .iter()
        .filter_map(|c| c.task_id().map(str::to_string))
        .collect()
}

#[test]
fn tasks_run_under_dockers_seccomp_profile_and_capabilities() {
    let host = ShoalHost::start_swarm();

    // Docker's defaults: the profile filters, mount and unshare are refused.
    let (plain, logs) = probe(&host, "plain", &[]);
    assert_eq!(
        (plain.seccomp.as_str(), plain.cap_eff.as_str()),
        ("2", DEFAULT_CAPS),
        "{logs}"
    );
    assert_eq!(
        (
            plain.mkdir.as_str(),
            plain.mount.as_str(),
            plain.unshare.as_str()
        ),
        ("ok", "refused", "refused"),
        "{logs}"
    );
    assert!(logs.contains("Operation not permitted"), "{logs}");

    // seccomp=unconfined: no filter at all.
    let (unconfined, logs) = probe(
        &host,
        "unconfined",
        &["--security-opt", "seccomp=unconfined"],
    );
    assert_eq!(unconfined.seccomp, "0", "{logs}");
    assert_eq!(unconfined.cap_eff, DEFAULT_CAPS, "{logs}");

    // A profile of the service's own, read by the CLI from a file: it refuses mkdir only.
    let path = host.dir().join("no-mkdir.json");
    std::fs::write(
        &path,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 1}]}"#,
    )
    .expect("write the profile");
    let opt = format!("seccomp={}", path.display());
    let (own, logs) = probe(&host, "own", &["--security-opt", &opt]);
    assert_eq!(
        (own.seccomp.as_str(), own.mkdir.as_str()),
        ("2", "refused"),
        "{logs}"
    );
    std::fs::remove_file(&path).expect("remove the profile");

    // --cap-drop NET_RAW and --cap-add SYS_ADMIN (docker's default profile then allows mount).
    let (noraw, logs) = probe(&host, "noraw", &["--cap-drop", "net_raw"]);
    assert_eq!(noraw.cap_eff, NO_NET_RAW_CAPS, "{logs}");
    let (admin, logs) = probe(&host, "admin", &["--cap-add", "CAP_SYS_ADMIN"]);
    assert_eq!(
        (
            admin.seccomp.as_str(),
            admin.cap_eff.as_str(),
            admin.mount.as_str()
        ),
        ("2", SYS_ADMIN_CAPS, "ok"),
        "{logs}"
    );

    // Inspect shows them as docker does.
    let inspect: serde_json::Value =
        serde_json::from_str(&host.shoal_ok(&words("service inspect admin noraw own")))
            .expect("inspect prints JSON");
    let container = |i: usize| &inspect[i]["spec"]["container"];
    assert_eq!(
        container(0)["CapabilityAdd"],
        serde_json::json!(["CAP_SYS_ADMIN"])
    );
    assert_eq!(
        container(1)["CapabilityDrop"],
        serde_json::json!(["CAP_NET_RAW"])
    );
    assert_eq!(container(2)["Privileges"]["Seccomp"]["Mode"], "custom");
    let pretty = host.shoal_ok(&words("service inspect --pretty admin"));
    assert!(
        pretty.contains("Add:") && pretty.contains("CAP_SYS_ADMIN"),
        "{pretty}"
    );

    // A capability change is a spec change: the task is replaced, and the new one may mount.
    let before = task_ids(&host, "plain");
    host.shoal_ok(&words("service update --cap-add SYS_ADMIN plain"));
    host.wait_for(CONVERGE, "plain's task to be replaced", || {
        let now = task_ids(&host, "plain");
        now.len() == 1 && now != before
    });
    host.wait_for(CONVERGE, "the new plain task's report", || {
        let out = host.shoal(&words("service logs plain"));
        String::from_utf8_lossy(&out.stdout).contains("MOUNT=ok")
    });
    let inspect = host.shoal_ok(&words("service inspect plain"));
    assert!(inspect.contains("\"CapabilityAdd\""), "{inspect}");

    for name in ["plain", "unconfined", "own", "noraw", "admin"] {
        host.shoal_ok(&["service", "rm", name]);
    }
    host.wait_for(CONVERGE, "every probe container to go", || {
        host.running_container_ids().is_empty()
    });
}

#[test]
fn bad_security_settings_are_refused_and_store_nothing() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words(
        "service create --name web --cap-add NET_ADMIN busybox sleep 3600",
    ));
    let listing = || host.shoal_ok(&words("service ls"));
    let before = (listing(), host.running_container_ids());
    let invalid = host.dir().join("invalid.json");
    std::fs::write(&invalid, "{\"defaultAction\": ").expect("write the profile");
    let unknown_action = host.dir().join("unknown-action.json");
    std::fs::write(&unknown_action, r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#)
        .expect("write the profile");
    let missing = host.dir().join("missing.json");
    let opt = |path: &std::path::Path| format!("seccomp={}", path.display());
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (
            vec!["--cap-add".into(), "CAP_FLY".into()],
            vec!["unknown capability \"CAP_FLY\" in --cap-add".into()],
        ),
        (
            vec!["--cap-drop".into(), "bogus".into()],
            vec!["unknown capability \"bogus\" in --cap-drop".into()],
        ),
        (
            vec!["--security-opt".into(), "no-new-privileges".into()],
            vec!["not supported for services".into()],
        ),
        (
            vec!["--security-opt".into(), "fly=high".into()],
            vec!["unknown --security-opt".into()],
        ),
        (
            vec!["--security-opt".into(), "apparmor=my-profile".into()],
            vec!["apparmor=unconfined".into()],
        ),
        (
            vec!["--security-opt".into(), opt(&missing)],
            vec![
                "cannot read seccomp profile".into(),
                missing.display().to_string(),
            ],
        ),
        (
            vec!["--security-opt".into(), opt(&invalid)],
            vec![format!("invalid seccomp profile in {}", invalid.display())],
        ),
        (
            vec!["--security-opt".into(), opt(&unknown_action)],
            vec![
                "SCMP_ACT_MAYBE".into(),
                unknown_action.display().to_string(),
            ],
        ),
    ];
    for (flags, expected) in &cases {
        let mut args = vec!["service", "create", "--name", "bad"];
        args.extend(flags.iter().map(String::as_str));
        args.extend_from_slice(&["busybox", "sleep", "3600"]);
        let err = host.shoal_err(&args);
        for e in expected {
            assert!(
                err.contains(e.as_str()),
                "{flags:?}: expected {e:?} in:\n{err}"
            );
        }
        assert_eq!(
            (listing(), host.running_container_ids()),
            before,
            "{flags:?}"
        );
    }
    let err = host.shoal_err(&words("service update --cap-drop nope web"));
    assert!(err.contains("unknown capability \"nope\""), "{err}");
    assert_eq!((listing(), host.running_container_ids()), before);

    for path in [&invalid, &unknown_action] {
        std::fs::remove_file(path).expect("remove the profile");
    }
    host.shoal_ok(&words("service rm web"));
    host.wait_for(CONVERGE, "web's container to go", || {
        host.running_container_ids().is_empty()
    });
}
