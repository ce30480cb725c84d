//! Bad input and bad surroundings: each gets a clear error that says what is wrong (and what to
//! do), and none of them loses or changes what the swarm already holds.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use shoal_tests::daemon::{words, ShoalHost};

const CONVERGE: Duration = Duration::from_secs(60);

/// How long a daemon that cannot start may take to give up.
const GIVE_UP: Duration = Duration::from_secs(30);

/// The `service ls` rows, keyed by service name, for before/after comparisons.
fn services(host: &ShoalHost) -> BTreeMap<String, BTreeMap<String, String>> {
    host.service_ls()
        .into_iter()
        .map(|row| (row.get("NAME").cloned().unwrap_or_default(), row))
        .collect()
}

/// Runs a command that must fail, and checks its error names each of `expected` and that the
/// stored services did not change.
fn refused(
    host: &ShoalHost,
    before: &BTreeMap<String, BTreeMap<String, String>>,
    args: &[&str],
    expected: &[&str],
) -> String {
    let err = host.shoal_err(args);
    for e in expected {
        assert!(
            err.to_lowercase().contains(&e.to_lowercase()),
            "`shoal {}` should mention {e:?}; it said:\n{err}",
            args.join(" ")
        );
    }
    assert_eq!(
        &services(host),
        before,
        "`shoal {}` changed the stored services",
        args.join(" ")
    );
    err
}

#[test]
fn bad_input_is_refused_and_loses_nothing() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words(
        "service create --name web --replicas 2 busybox sleep 3600",
    ));
    host.wait_for(CONVERGE, "web at 2/2", || {
        host.replicas("web").as_deref() == Some("2/2")
    });
    let before = services(&host);
    let containers_before = host.running_container_ids();

    // Malformed image references never reach the store.
    refused(
        &host,
        &before,
        &words("service create --name upper BUSYBOX"),
        &["BUSYBOX", "invalid reference format"],
    );
    refused(
        &host,
        &before,
        &words("service create --name colons a::b"),
        &["a::b", "invalid reference format"],
    );

    // Replica counts must be non-negative integers.
    refused(
        &host,
        &before,
        &words("service create --name neg --replicas -1 busybox"),
        &["replicas"],
    );
    refused(
        &host,
        &before,
        &words("service create --name abc --replicas abc busybox"),
        &["replicas", "abc"],
    );
    refused(&host, &before, &words("service scale web=-1"), &["web=-1"]);
    // …and bounded: a huge count once became one Raft entry of that many task creations.
    refused(
        &host,
        &before,
        &words("service scale web=100000000"),
        &["100000000 replicas", "limit of 100000 per service"],
    );
    refused(
        &host,
        &before,
        &words("service create --name huge --replicas 100001 busybox"),
        &["100001 replicas", "limit of 100000"],
    );
    refused(
        &host,
        &before,
        &words("service create --name auto --autoscale-max 1000000 --autoscale-cpu 50 busybox"),
        &["--autoscale-max 1000000", "limit of 100000"],
    );
    let envs: Vec<String> = (0..1001).map(|i| format!("V{i}=1")).collect();
    let mut many_env = words("service create --name envs");
    for env in &envs {
        many_env.extend(["--env", env.as_str()]);
    }
    many_env.push("busybox");
    refused(
        &host,
        &before,
        &many_env,
        &[
            "too many environment variables (1001, --env)",
            "at most 1000",
        ],
    );
    refused(
        &host,
        &before,
        &words("service scale web=abc"),
        &["web=abc"],
    );

    // Names are unique and DNS-safe.
    refused(
        &host,
        &before,
        &words("service create --name web busybox sleep 1"),
        &["web", "already exists"],
    );
    refused(
        &host,
        &before,
        &words("service create --name bad_name! busybox"),
        &["bad_name!", "invalid"],
    );

    // A second `swarm init` on a manager.
    refused(
        &host,
        &before,
        &words("swarm init"),
        &["This node is already part of a swarm"],
    );

    // An image this node does not have: the error names it. Without -d the command waits for
    // the tasks and reports why they could not start.
    let err = host.shoal_err(&words("service create --name ghost nosuchimage"));
    assert!(
        err.contains("nosuchimage"),
        "the error names the missing image:\n{err}"
    );
    // With -d the service is stored and its task is Rejected with that error.
    host.shoal_ok(&words("service create -d --name ghost2 nosuchimage"));
    host.wait_for(CONVERGE, "ghost2's task to be Rejected", || {
        host.service_ps("ghost2").iter().any(|r| {
            r.get("CURRENT STATE")
                .is_some_and(|s| s.starts_with("Rejected"))
        })
    });
    let rows = parse_ps_no_trunc(&host, "ghost2");
    let rejected = rows
        .iter()
        .find(|r| {
            r.get("CURRENT STATE")
                .is_some_and(|s| s.starts_with("Rejected"))
        })
        .expect("a rejected row");
    assert!(
        rejected["ERROR"].contains("nosuchimage"),
        "the rejected task's error names the image: {rejected:?}"
    );

    // The services that were there are still there and still running the same containers.
    for name in ["ghost", "ghost2"] {
        // `ghost` may or may not have been stored by the create that failed: either is fine as
        // long as it can be removed and `web` is untouched.
        let _ = host.shoal(&["service", "rm", name]);
    }
    assert_eq!(services(&host), before, "the stored services are unchanged");
    assert_eq!(
        host.running_container_ids(),
        containers_before,
        "the running containers are unchanged"
    );
}

fn parse_ps_no_trunc(host: &ShoalHost, service: &str) -> Vec<BTreeMap<String, String>> {
    shoal_tests::table::parse_table(&host.shoal_ok(&["service", "ps", "--no-trunc", service]))
}

#[test]
fn service_commands_outside_a_swarm_say_how_to_create_one() {
    let host = ShoalHost::start();
    for args in [
        &words("service ls")[..],
        &words("service create --name web busybox sleep 3600"),
        &words("service ps web"),
        &words("service rm web"),
        &words("node ls"),
    ] {
        let err = host.shoal_err(args);
        assert!(
            err.contains("This node is not a swarm manager") && err.contains("shoal swarm init"),
            "`shoal {}` outside a swarm should say so and suggest `shoal swarm init`:\n{err}",
            args.join(" ")
        );
    }
    // Nothing was stored on the way: the new swarm starts empty.
    host.swarm_init();
    assert!(host.service_ls().is_empty(), "no service was stored");
}

#[test]
fn unreachable_containerd_is_reported_with_the_socket_and_how_to_start_it() {
    let mut host = ShoalHost::new_stopped(&[]);
    let bad_socket: PathBuf = host.dir().join("no-containerd-here.sock");
    let data_dir = host.data_dir().display().to_string();
    let bad = bad_socket.display().to_string();
    let args = [
        "--data-dir",
        &data_dir,
        "--containerd",
        &bad,
        "--containerd-namespace",
        "shoal",
    ];
    // Either the daemon refuses to start, or it starts and reports the problem: both must name
    // the socket and say how to get containerd running.
    host.spawn_daemon_raw(&args);
    let mut exited = None;
    let stopped = shoal_tests::daemon::wait_until(GIVE_UP, || {
        exited = host.daemon_exited();
        exited.is_some() || host.shoal(&["info"]).status.success()
    });
    assert!(
        stopped,
        "the daemon neither exited nor answered within {GIVE_UP:?}"
    );
    let report = match exited {
        Some(status) => {
            assert!(
                !status.success(),
                "a daemon without containerd exits non-zero"
            );
            host.daemon_log()
        }
        None => {
            let out = host.shoal(&["info"]);
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        }
    };
    assert!(
        report.contains(&bad),
        "the report names the socket {bad}:\n{report}"
    );
    assert!(
        report.contains("containerd --address") || report.contains("systemctl start containerd"),
        "the report says how to start containerd:\n{report}"
    );
    host.stop_daemon();
}

#[test]
fn corrupt_raft_data_stops_the_daemon_and_names_the_file() {
    let mut host = ShoalHost::start();
    host.swarm_init();
    host.stop_daemon();

    let raft_file = find_file(&host.data_dir(), "raft.redb")
        .unwrap_or_else(|| panic!("no raft.redb under {}", host.data_dir().display()));
    let garbage = b"this is not a redb file, just garbage written by a test\n".repeat(100);
    fs::write(&raft_file, &garbage).expect("overwrite the raft data file");

    let args = host.standard_daemon_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, output) = host.run_daemon_expecting_exit(&args, GIVE_UP);
    assert!(!status.success(), "the daemon refuses to start:\n{output}");
    let raft_dir = raft_file
        .parent()
        .expect("raft file has a parent")
        .display()
        .to_string();
    assert!(
        output.contains(&raft_dir),
        "the error names the damaged data ({}):\n{output}",
        raft_file.display()
    );
    assert_eq!(
        fs::read(&raft_file).expect("read the raft data file"),
        garbage,
        "the daemon leaves the damaged file as it was, for the operator to inspect"
    );
}

fn find_file(dir: &std::path::Path, name: &str) -> Option<PathBuf> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if entry.file_name() == name {
            return Some(path);
        }
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        }
    }
    None
}
