//! `service create`'s container options and mounts on real containers, checked from inside the
//! task: `--init` (tini is PID 1), `--read-only`, `--sysctl`, `--ulimit`, `--group`, `--host`,
//! `--env-file`, `--tty`, `--workdir`/`--user` updates, tmpfs, bind and volume mounts; local
//! volumes (made on first use with the image's files, kept after the service, refused removal
//! while in use, anonymous ones removed with their task) through `volume ls/inspect/rm`; and
//! every bad value refused with the reason, storing nothing.
//!
//! Three tests, each on its own host so they run in parallel.

use std::time::Duration;

use shoal_tests::daemon::{words, ShoalHost};
use shoal_tests::listing::log_lines;

const CONVERGE: Duration = Duration::from_secs(60);

/// Waits until `name`'s log has a line `DONE`, then returns its lines.
fn wait_done(host: &ShoalHost, name: &str) -> Vec<String> {
    host.wait_for(CONVERGE, &format!("{name} to print DONE"), || {
        log_lines(host, name).iter().any(|l| l == "DONE")
    });
    log_lines(host, name)
}

/// The value printed as `KEY=value`.
fn value<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    lines.iter().find_map(|l| l.strip_prefix(prefix.as_str()))
}

#[test]
fn container_options_reach_the_process() {
    let host = ShoalHost::start_swarm();
    let env_file = host.dir().join("app.env");
    std::fs::write(&env_file, "# settings\nFROM_FILE=yes\nOVERRIDDEN=file\n").expect("env file");
    let env_file = env_file.display().to_string();
    let probe = "echo PID1=$(tr '\\0' ' ' < /proc/1/cmdline); \
        touch /rootfile 2>/dev/null && echo ROOT=rw || echo ROOT=ro; \
        echo SOMAXCONN=$(cat /proc/sys/net/core/somaxconn); \
        echo NOFILE=$(ulimit -Sn):$(ulimit -Hn); \
        echo GROUPS=$(id -G); \
        echo HOSTS=$(grep db.example /etc/hosts | tr '\\t' ' '); \
        echo ENV=$FROM_FILE,$OVERRIDDEN; \
        echo SCRATCH=$(grep ' /scratch ' /proc/mounts | cut -d' ' -f3,4); \
        touch /scratch/f && echo SCRATCH_RW=yes; \
        [ -t 1 ] && echo TTY=yes || echo TTY=no; \
        echo DONE; sleep 3600";
    host.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "opts",
        "--init",
        "--read-only",
        "--sysctl",
        "net.core.somaxconn=512",
        "--ulimit",
        "nofile=100:200",
        "--group",
        "1234",
        "--host",
        "db.example:198.18.0.9",
        "--env-file",
        &env_file,
        "-e",
        "OVERRIDDEN=flag",
        "--mount",
        "type=tmpfs,target=/scratch,tmpfs-size=1m",
        "-t",
        "busybox",
        "sh",
        "-c",
        probe,
    ]);
    let lines = wait_done(&host, "opts");
    let all = lines.join("\n");
    assert!(
        value(&lines, "PID1").is_some_and(|p| p.starts_with("/sbin/docker-init -- sh -c")),
        "{all}"
    );
    assert_eq!(value(&lines, "ROOT"), Some("ro"), "{all}");
    assert_eq!(value(&lines, "SOMAXCONN"), Some("512"), "{all}");
    assert_eq!(value(&lines, "NOFILE"), Some("100:200"), "{all}");
    assert!(
        value(&lines, "GROUPS").is_some_and(|g| g.split(' ').any(|g| g == "1234")),
        "{all}"
    );
    assert_eq!(
        value(&lines, "HOSTS"),
        Some("198.18.0.9 db.example"),
        "{all}"
    );
    assert_eq!(value(&lines, "ENV"), Some("yes,flag"), "{all}");
    assert!(
        value(&lines, "SCRATCH")
            .is_some_and(|s| s.starts_with("tmpfs ") && s.contains("size=1024k")),
        "{all}"
    );
    assert_eq!(value(&lines, "SCRATCH_RW"), Some("yes"), "{all}");
    assert_eq!(value(&lines, "TTY"), Some("yes"), "{all}");

    // `inspect` shows them; `service update` changes them as docker's does.
    let inspect = host.shoal_ok(&words("service inspect opts"));
    for field in [
        "\"read_only\": true",
        "\"init\": true",
        "net.core.somaxconn",
    ] {
        assert!(inspect.contains(field), "{field} missing:\n{inspect}");
    }
    host.shoal_ok(&words(
        "service update -d --read-only=false --init=false --tty=false --sysctl-rm \
         net.core.somaxconn --ulimit-rm nofile --host-rm db.example --mount-rm /scratch opts",
    ));
    host.wait_for(CONVERGE, "the updated task to report", || {
        log_lines(&host, "opts")
            .iter()
            .filter(|l| l.as_str() == "DONE")
            .count()
            >= 2
    });
    let lines = log_lines(&host, "opts");
    let last = |key: &str| {
        let prefix = format!("{key}=");
        lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(str::to_string)
    };
    assert_eq!(last("ROOT").as_deref(), Some("rw"), "{lines:?}");
    assert!(
        last("PID1").is_some_and(|p| p.starts_with("sh -c")),
        "{lines:?}"
    );
    assert_eq!(last("HOSTS").as_deref(), Some(""), "{lines:?}");
    assert_eq!(last("TTY").as_deref(), Some("no"), "{lines:?}");
}

#[test]
fn volumes_are_the_nodes_and_outlive_their_tasks() {
    let host = ShoalHost::start_swarm();
    let bind_dir = host.dir().join("shared");
    std::fs::create_dir_all(&bind_dir).expect("bind source");
    std::fs::write(bind_dir.join("from-host"), "host file\n").expect("bind file");
    let bind = format!(
        "type=bind,source={},target=/shared,readonly",
        bind_dir.display()
    );
    let probe = "echo written > /data/note; \
        echo ETC=$(ls /etc-copy | tr '\\n' ' '); \
        echo BIND=$(cat /shared/from-host); \
        touch /shared/x 2>/dev/null && echo BIND_RW=yes || echo BIND_RW=no; \
        echo HOSTS=$(grep -c localhost /etc/hosts); \
        echo ANON=$(ls -d /anon); \
        echo DONE; sleep 3600";
    host.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "vols",
        "--mount",
        "type=volume,source=data,target=/data",
        "--mount",
        "source=etc-copy,target=/etc-copy,volume-label=made=by-test",
        "--mount",
        "target=/anon",
        "--mount",
        &bind,
        "--mount",
        "source=etc,target=/etc",
        "busybox",
        "sh",
        "-c",
        probe,
    ]);
    let lines = wait_done(&host, "vols");
    let all = lines.join("\n");
    // /etc-copy is not in the image: a new volume there starts empty.
    assert_eq!(value(&lines, "ETC"), Some(""), "{all}");
    assert_eq!(value(&lines, "BIND"), Some("host file"), "{all}");
    assert_eq!(value(&lines, "BIND_RW"), Some("no"), "{all}");
    // The volume at /etc got the image's /etc, and /etc/hosts is still mounted over it.
    assert!(value(&lines, "HOSTS").is_some_and(|n| n != "0"), "{all}");

    let listed = host.shoal_ok(&words("volume ls -q"));
    let names: Vec<&str> = listed.lines().collect();
    for name in ["data", "etc", "etc-copy"] {
        assert!(names.contains(&name), "{name} not listed: {listed}");
    }
    assert_eq!(names.len(), 4, "one anonymous volume besides: {listed}");
    let inspect = host.shoal_ok(&words("volume inspect data etc-copy"));
    let json: serde_json::Value = serde_json::from_str(&inspect).expect("inspect JSON");
    let mountpoint = json[0]["Mountpoint"].as_str().expect("mountpoint");
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(mountpoint).join("note")).expect("note"),
        "written\n"
    );
    assert_eq!(json[1]["Labels"]["made"], "by-test", "{inspect}");
    let etc = host.shoal_ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", "etc"]);
    assert!(
        std::path::Path::new(etc.trim()).join("passwd").is_file(),
        "the image's /etc was copied into the new volume"
    );

    // In use: refused, naming the task; nothing removed.
    let err = host.shoal_err(&words("volume rm data"));
    assert!(
        err.contains("volume data is in use by task vols.1"),
        "{err}"
    );
    assert!(std::path::Path::new(mountpoint).join("note").is_file());

    host.shoal_ok(&words("service rm vols"));
    host.wait_for(CONVERGE, "the task's container to go", || {
        host.running_container_ids().is_empty() && host.containers().is_empty()
    });
    // Named volumes stay with their data; the anonymous one went with its task.
    host.wait_for(CONVERGE, "the anonymous volume to go", || {
        host.shoal_ok(&words("volume ls -q")).lines().count() == 3
    });
    assert!(std::path::Path::new(mountpoint).join("note").is_file());

    // A new service finds the data a removed one left.
    host.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "again",
        "--mount",
        "source=data,target=/data",
        "busybox",
        "sh",
        "-c",
        "echo NOTE=$(cat /data/note); echo DONE; sleep 3600",
    ]);
    let lines = wait_done(&host, "again");
    assert_eq!(value(&lines, "NOTE"), Some("written"), "{lines:?}");
    host.shoal_ok(&words("service rm again"));
    host.wait_for(CONVERGE, "the task's container to go", || {
        host.containers().is_empty()
    });
    assert_eq!(host.shoal_ok(&words("volume rm data etc")), "data\netc\n");
    let err = host.shoal_err(&words("volume rm data"));
    assert!(err.contains("no such volume: data"), "{err}");
    host.shoal_ok(&words("volume rm -f data"));
    assert_eq!(host.shoal_ok(&words("volume create named")), "named\n");
    let err = host.shoal_err(&words("volume create bad/name"));
    assert!(err.contains("invalid volume name"), "{err}");
}

#[test]
fn bad_options_are_refused_with_the_reason_and_store_nothing() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words("service create -d --name keep busybox sleep 3600"));
    let before = host.shoal_ok(&words("service ls -q"));
    let cases: [(&[&str], &str); 9] = [
        (&["--sysctl", "kernel.hostname=x"], "is not namespaced"),
        (&["--sysctl", "net.core.somaxconn"], "expected NAME=VALUE"),
        (
            &["--ulimit", "nofile=2:1"],
            "soft limit 2 is above hard limit 1",
        ),
        (&["--ulimit", "files=1"], "unknown --ulimit \"files\""),
        (
            &["--mount", "type=bind,target=/x"],
            "a bind mount needs a source",
        ),
        (
            &["--mount", "type=nfs,target=/x"],
            "invalid --mount type \"nfs\"",
        ),
        (
            &["--log-driver", "syslog"],
            "unsupported --log-driver \"syslog\"",
        ),
        (
            &["--log-opt", "max-file=3"],
            "max-file above 1 needs max-size",
        ),
        (&["--host", "db"], "expected HOST:IP"),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["service", "create", "-d", "--name", "bad"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "sleep", "3600"]);
        let err = host.shoal_err(&args);
        assert!(err.contains(expected), "{flags:?}: {err}");
        let err = host.shoal_err(&[&["service", "update"], flags, &["keep"]].concat());
        assert!(
            err.contains(expected) || err.contains("unexpected argument"),
            "update {flags:?}: {err}"
        );
    }
    assert_eq!(host.shoal_ok(&words("service ls -q")), before);
    let err = host.shoal_err(&words("service update --mount-rm /nowhere keep"));
    assert!(err.contains("no mount at that target"), "{err}");

    // A bind source the node lacks: the task is rejected with the reason, never started.
    host.shoal_ok(&words(
        "service create -d --name nobind --mount type=bind,source=/nonexistent/shoal,target=/x \
         busybox sleep 3600",
    ));
    host.wait_for(CONVERGE, "the task to be rejected", || {
        host.shoal_ok(&words("service ps --no-trunc nobind"))
            .contains("bind source path /nonexistent/shoal does not exist on this node")
    });
    assert!(host.running_containers_of("nobind").is_empty());
}
