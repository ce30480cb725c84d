//! Unit tests of the OCI spec builder and its helpers (Docker's defaults, users, signals,
//! /etc files, resources).

use super::*;

fn image(entrypoint: &[&str], cmd: &[&str]) -> ResolvedImage {
    ResolvedImage {
        name: "docker.io/library/busybox:latest".into(),
        entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin:/sbin".into(), "A=image".into()],
        ..Default::default()
    }
}

fn cspec(command: &[&str], args: &[&str]) -> ContainerSpec {
    ContainerSpec {
        command: command.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn args_follow_docker_service_create() {
    let img = image(&["/entry"], &["default", "cmd"]);
    assert_eq!(
        process_args(&cspec(&[], &[]), &img).unwrap(),
        strs(&["/entry", "default", "cmd"])
    );
    // `docker service create IMAGE a b` replaces CMD, keeps ENTRYPOINT.
    assert_eq!(
        process_args(&cspec(&[], &["a", "b"]), &img).unwrap(),
        strs(&["/entry", "a", "b"])
    );
    // `--entrypoint` replaces ENTRYPOINT and drops the image's CMD.
    assert_eq!(
        process_args(&cspec(&["/bin/sh", "-c"], &[]), &img).unwrap(),
        strs(&["/bin/sh", "-c"])
    );
    assert_eq!(
        process_args(&cspec(&["/bin/sh", "-c"], &["echo hi"]), &img).unwrap(),
        strs(&["/bin/sh", "-c", "echo hi"])
    );
    let none = image(&[], &[]);
    assert!(matches!(
        process_args(&cspec(&[], &[]), &none),
        Err(SpecError::NoCommand { .. })
    ));
    assert_eq!(
        process_args(&cspec(&[], &["sleep", "1"]), &none).unwrap(),
        strs(&["sleep", "1"])
    );
}

#[test]
fn env_task_wins_and_defaults_fill_in() {
    let env = merge_env(
        &strs(&["PATH=/bin", "A=image", "B=image"]),
        &strs(&["A=task", "C=task"]),
        "host1",
        "/root",
    );
    assert_eq!(
        env,
        strs(&[
            "PATH=/bin",
            "HOSTNAME=host1",
            "A=task",
            "B=image",
            "C=task",
            "HOME=/root"
        ])
    );
    let env = merge_env(&[], &strs(&["HOME=/x"]), "h", "/root");
    assert_eq!(
        env,
        strs(&[&format!("PATH={DEFAULT_PATH}"), "HOSTNAME=h", "HOME=/x"])
    );
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
                      # comment\n\
                      www:x:33:33:www-data:/var/www:/bin/false\n\
                      nobody:x:65534:65534:nobody:/home:/bin/false\n";
const GROUP: &str = "root:x:0:\n\
                     daemon:x:1:\n\
                     wheel:x:10:root,www\n\
                     www:x:33:\n\
                     audio:x:29:www\n\
                     nogroup:x:65534:\n";

#[test]
fn user_resolution() {
    let r = resolve_user("", Some(PASSWD), Some(GROUP)).unwrap();
    assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
    assert_eq!(r.additional_gids, vec![10]);

    let r = resolve_user("www", Some(PASSWD), Some(GROUP)).unwrap();
    assert_eq!((r.uid, r.gid, r.home.as_str()), (33, 33, "/var/www"));
    assert_eq!(r.additional_gids, vec![10, 29]);

    // An explicit group: no supplementary groups.
    let r = resolve_user("www:audio", Some(PASSWD), Some(GROUP)).unwrap();
    assert_eq!((r.uid, r.gid), (33, 29));
    assert!(r.additional_gids.is_empty());

    let r = resolve_user("1000:1000", Some(PASSWD), Some(GROUP)).unwrap();
    assert_eq!((r.uid, r.gid, r.home.as_str()), (1000, 1000, "/"));

    // A numeric uid with an entry takes the entry's primary group.
    let r = resolve_user("65534", Some(PASSWD), Some(GROUP)).unwrap();
    assert_eq!((r.uid, r.gid), (65534, 65534));

    // Numeric ids need no files at all.
    let r = resolve_user("5:6", None, None).unwrap();
    assert_eq!((r.uid, r.gid), (5, 6));

    assert!(matches!(
        resolve_user("ghost", Some(PASSWD), Some(GROUP)),
        Err(SpecError::UnknownUser { .. })
    ));
    assert!(matches!(
        resolve_user("www:ghosts", Some(PASSWD), Some(GROUP)),
        Err(SpecError::UnknownGroup { .. })
    ));
    assert!(matches!(
        resolve_user("www:", Some(PASSWD), Some(GROUP)),
        Err(SpecError::InvalidUser { .. })
    ));
}

#[test]
fn resolv_conf_drops_loopback_nameservers() {
    let host = "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver 10.0.0.2\noptions ndots:2\n";
    assert_eq!(
        resolv_conf(host),
        "# generated\nsearch example.com\nnameserver 10.0.0.2\noptions ndots:2\n"
    );
    let only_local = "nameserver 127.0.0.1\nnameserver ::1\n";
    assert_eq!(
        resolv_conf(only_local),
        "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    );
}

#[test]
fn hosts_has_localhost_and_own_addresses() {
    let h = hosts_file(
        "web1",
        &["10.0.0.5".parse().expect("ip")],
        &["198.18.0.9 db db.example".to_string()],
    );
    assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
    assert!(
        h.ends_with("10.0.0.5\tweb1\n198.18.0.9\tdb db.example\n"),
        "{h}"
    );
}

#[test]
fn hostname_defaults_to_short_task_id() {
    let mut task = Task {
        id: "abcdefghijklmnopqrstuvwxyz".into(),
        ..Default::default()
    };
    assert_eq!(hostname_for(&task), "abcdefghijkl");
    task.spec = Some(Box::new(ContainerSpec {
        hostname: "web".into(),
        ..Default::default()
    }));
    assert_eq!(hostname_for(&task), "web");
}

#[test]
fn signals_parse_like_docker() {
    use nix::sys::signal::Signal;
    assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
    assert_eq!(parse_signal("quit").unwrap(), Signal::SIGQUIT);
    assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
    assert!(parse_signal("SIGNOPE").is_err());
}

fn test_host() -> Host {
    Host {
        arch: "amd64",
        kernel: Some(shoal_proto::validate::security::KernelVersion {
            kernel: 6,
            major: 1,
        }),
        last_cap: 40,
        apparmor: apparmor::AppArmorState::Loaded,
    }
}

#[test]
fn container_options_reach_the_spec() {
    use shoal_proto::validate::{mounts::parse_mount, options::parse_ulimit};
    let volume = parse_mount("source=data,target=/data,readonly").unwrap();
    let shm = parse_mount("type=tmpfs,target=/dev/shm,tmpfs-size=1m").unwrap();
    let bind = parse_mount("type=bind,source=/srv,target=/srv,bind-propagation=rslave").unwrap();
    let task = Task {
        id: "t1234567890abcdef".into(),
        spec: Some(Box::new(ContainerSpec {
            init: true,
            tty: true,
            read_only: true,
            sysctls: [("net.core.somaxconn".to_string(), "512".to_string())].into(),
            ulimits: vec![
                parse_ulimit("nofile=100:200").unwrap(),
                parse_ulimit("nproc=-1").unwrap(),
            ],
            ..Default::default()
        })),
        ..Default::default()
    };
    let mounts = [
        options::ResolvedMount {
            mount: &volume,
            source: Some("/data/volumes/data/_data".into()),
        },
        options::ResolvedMount {
            mount: &shm,
            source: None,
        },
        options::ResolvedMount {
            mount: &bind,
            source: Some("/srv".into()),
        },
    ];
    let img = image(&[], &["sh"]);
    let user = resolve_user("", Some(PASSWD), Some(GROUP)).unwrap();
    let host = test_host();
    let input = |init| SpecInput {
        task: &task,
        image: &img,
        user: &user,
        hostname: "h",
        task_dir: Path::new("/data/tasks/t1"),
        nofile: 4096,
        netns: None,
        host: &host,
        mounts: &mounts,
        init,
    };
    assert!(matches!(build(&input(None)), Err(SpecError::NoInit)));
    let spec = build(&input(Some(Path::new("/usr/bin/tini-static")))).unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(
        json["process"]["args"],
        serde_json::json!(["/sbin/docker-init", "--", "sh"])
    );
    assert_eq!(json["process"]["terminal"], true);
    assert_eq!(json["root"]["readonly"], true);
    assert_eq!(json["linux"]["sysctl"]["net.core.somaxconn"], "512");
    let rlimits = json["process"]["rlimits"].as_array().unwrap();
    assert_eq!(rlimits.len(), 2, "the task's nofile replaces the default");
    assert_eq!(rlimits[0]["type"], "RLIMIT_NOFILE");
    assert_eq!(
        (rlimits[0]["soft"].clone(), rlimits[0]["hard"].clone()),
        (100.into(), 200.into())
    );
    assert_eq!(rlimits[1]["hard"], u64::MAX);
    let all = json["mounts"].as_array().unwrap();
    let at = |dest: &str| -> Vec<&serde_json::Value> {
        all.iter().filter(|m| m["destination"] == dest).collect()
    };
    assert_eq!(
        at("/dev/shm").len(),
        1,
        "the task's /dev/shm replaces the default"
    );
    assert_eq!(at("/dev/shm")[0]["type"], "tmpfs");
    assert!(at("/dev/shm")[0]["options"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("size=1048576")));
    assert_eq!(at("/data")[0]["source"], "/data/volumes/data/_data");
    assert_eq!(
        at("/data")[0]["options"],
        serde_json::json!(["rbind", "rprivate", "ro"])
    );
    assert_eq!(
        at("/srv")[0]["options"],
        serde_json::json!(["rbind", "rslave"])
    );
    assert_eq!(at("/sbin/docker-init")[0]["source"], "/usr/bin/tini-static");
    let depth = |m: &serde_json::Value| m["destination"].as_str().unwrap().split('/').count();
    assert!(
        all.windows(2).all(|w| depth(&w[0]) <= depth(&w[1])),
        "parents are mounted before children: {all:?}"
    );
}

#[test]
fn spec_has_docker_defaults() {
    let task = Task {
        id: "t1234567890abcdef".into(),
        spec: Some(Box::new(ContainerSpec {
            env: strs(&["A=task"]),
            dir: "/work".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let img = image(&[], &["sh"]);
    let user = resolve_user("", Some(PASSWD), Some(GROUP)).unwrap();
    let spec = build(&SpecInput {
        task: &task,
        image: &img,
        user: &user,
        hostname: "t1234567890a",
        task_dir: Path::new("/data/tasks/t1234567890abcdef"),
        nofile: 4096,
        netns: None,
        host: &test_host(),
        mounts: &[],
        init: None,
    })
    .unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    // Docker's seccomp profile and AppArmor profile, by default.
    assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(json["process"]["apparmorProfile"], "shoal-default");
    assert_eq!(json["process"]["args"], serde_json::json!(["sh"]));
    assert_eq!(json["process"]["cwd"], "/work");
    assert_eq!(json["hostname"], "t1234567890a");
    assert_eq!(json["linux"]["cgroupsPath"], "/shoal/t1234567890abcdef");
    let caps: HashSet<String> = json["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(caps.len(), 14);
    assert!(caps.contains("CAP_NET_BIND_SERVICE"));
    assert!(!caps.contains("CAP_SYS_ADMIN"));
    let ns: Vec<&str> = json["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(ns, vec!["mount", "network", "uts", "pid", "ipc"]);
    let dests: Vec<&str> = json["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    for d in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
    ] {
        assert!(dests.contains(&d), "missing mount {d}");
    }
    let hosts = json["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/etc/hosts")
        .unwrap();
    assert_eq!(hosts["source"], "/data/tasks/t1234567890abcdef/hosts");
    assert_eq!(json["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
    assert_eq!(json["process"]["rlimits"][0]["hard"], 4096);
    assert!(nofile_limit() <= NOFILE_LIMIT && nofile_limit() > 0);
    assert_eq!(
        json["process"]["user"]["additionalGids"],
        serde_json::json!([10])
    );
    assert!(json["linux"]["maskedPaths"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("/proc/kcore")));
    let env: Vec<&str> = json["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"A=task"));
    assert!(env.contains(&"HOME=/root"));
}

#[test]
fn resources_become_cgroup_limits() {
    use shoal_proto::{ResourceAmounts, Resources};
    let mut cs = ContainerSpec {
        resources: Some(Resources {
            limits: Some(ResourceAmounts {
                nano_cpus: 500_000_000,
                memory_bytes: 64 << 20,
            }),
            reservations: Some(ResourceAmounts {
                nano_cpus: 250_000_000,
                memory_bytes: 32 << 20,
            }),
        }),
        ..Default::default()
    };
    let json = serde_json::to_value(linux_resources(&cs, true).unwrap()).unwrap();
    assert_eq!(json["cpu"]["quota"], 50_000);
    assert_eq!(json["cpu"]["period"], 100_000);
    assert_eq!(json["memory"]["limit"], 64 << 20);
    assert_eq!(
        json["memory"]["swap"],
        128 << 20,
        "docker: as much swap as memory"
    );
    assert_eq!(json["memory"]["reservation"], 32 << 20);
    assert!(json["devices"].as_array().is_some_and(|d| !d.is_empty()));

    let json = serde_json::to_value(linux_resources(&cs, false).unwrap()).unwrap();
    assert!(
        json["memory"].get("swap").is_none(),
        "no swap limit where runc could not write it: {json}"
    );

    // The kernel's minimum quota is 1 ms.
    cs.resources = Some(Resources {
        limits: Some(ResourceAmounts {
            nano_cpus: 1_000_000,
            memory_bytes: 0,
        }),
        reservations: None,
    });
    let json = serde_json::to_value(linux_resources(&cs, true).unwrap()).unwrap();
    assert_eq!(json["cpu"]["quota"], 1_000);
    assert!(json.get("memory").is_none(), "{json}");

    let none =
        serde_json::to_value(linux_resources(&ContainerSpec::default(), true).unwrap()).unwrap();
    assert!(
        none.get("cpu").is_none() && none.get("memory").is_none(),
        "{none}"
    );
}

#[test]
fn layered_read_honours_whiteouts_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let upper = dir.path().join("upper");
    let l1 = dir.path().join("l1");
    let l2 = dir.path().join("l2");
    for d in [&upper, &l1, &l2] {
        fs::create_dir_all(d.join("etc")).unwrap();
    }
    fs::write(l2.join("etc/passwd"), "old").unwrap();
    fs::write(l1.join("etc/passwd"), "new").unwrap();
    fs::write(l2.join("etc/group"), "g").unwrap();
    std::os::unix::fs::symlink("../etc/group", l1.join("etc/group-link")).unwrap();
    let layers = vec![upper.clone(), l1.clone(), l2.clone()];
    assert_eq!(
        read_rootfs_file(&layers, "/etc/passwd").as_deref(),
        Some("new")
    );
    assert_eq!(
        read_rootfs_file(&layers, "/etc/group-link").as_deref(),
        Some("g")
    );
    assert_eq!(read_rootfs_file(&layers, "/etc/shadow"), None);
    nix::sys::stat::mknod(
        &upper.join("etc/passwd"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    assert_eq!(read_rootfs_file(&layers, "/etc/passwd"), None);

    let mounts = vec![containerd_client::types::Mount {
        r#type: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![
            "workdir=/w".into(),
            "upperdir=/u".into(),
            "lowerdir=/a:/b".into(),
        ],
    }];
    assert_eq!(
        rootfs_layers(&mounts),
        vec![
            PathBuf::from("/u"),
            PathBuf::from("/a"),
            PathBuf::from("/b")
        ]
    );
}
