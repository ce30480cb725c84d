//! The `shoal` binary as a user runs it, with no real daemon: the error paths that need none,
//! and the client side of each command against a small in-process fake of the daemon's API
//! (canned answers; tasks advance one state per `ListTasks` poll). End-to-end behaviour against
//! a real daemon is tested in the `tests` crate.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};

use support::fake_daemon::{FakeDaemon, SELF_ID};
use support::{run, shoal};

// ---------------------------------------------------------------------------------------------
// Without any daemon
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_daemon_says_how_to_start_it() {
    let (code, stdout, stderr) =
        run(shoal().args(["-H", "unix:///nonexistent/shoal.sock", "service", "ls"]));
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "Cannot connect to the Shoal daemon at unix:///nonexistent/shoal.sock. Is the shoal daemon running? (start it with `shoal daemon`)\n"
    );
}

#[test]
fn host_comes_from_the_environment() {
    let (code, _, stderr) = run(shoal()
        .env("SHOAL_HOST", "unix:///nonexistent/from-env.sock")
        .arg("info"));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("at unix:///nonexistent/from-env.sock."),
        "{stderr}"
    );
    // -H wins over the environment.
    let (_, _, stderr) = run(shoal()
        .env("SHOAL_HOST", "unix:///nonexistent/from-env.sock")
        .args(["-H", "unix:///nonexistent/flag.sock", "info"]));
    assert!(
        stderr.contains("at unix:///nonexistent/flag.sock."),
        "{stderr}"
    );
}

#[test]
fn stale_socket_is_cannot_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let host = format!("unix://{}", path.display());
    let (code, _, stderr) = run(shoal().args(["-H", &host, "node", "ls"]));
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("Cannot connect to the Shoal daemon at"),
        "{stderr}"
    );
}

#[test]
fn non_unix_host_is_refused() {
    let (code, _, stderr) = run(shoal().args(["-H", "tcp://127.0.0.1:2375", "info"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("unix sockets"), "{stderr}");
}

#[test]
fn version_prints_the_client_even_without_daemon() {
    let (code, stdout, stderr) = run(shoal().args(["-H", "unix:///nonexistent/s.sock", "version"]));
    assert_eq!(code, 1);
    assert!(stdout.starts_with("Client:\n Version:    "), "{stdout}");
    assert!(stderr.starts_with("Cannot connect"), "{stderr}");
    let (code, stdout, _) = run(shoal().arg("-v"));
    assert_eq!(code, 0);
    assert!(stdout.starts_with("shoal "), "{stdout}");
}

#[test]
fn usage_errors_are_clear() {
    let (code, _, stderr) = run(shoal().args([
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "-1",
        "busybox",
    ]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("invalid replicas value \"-1\": must be a non-negative integer"),
        "{stderr}"
    );
    let (code, _, stderr) = run(shoal().args(["service", "scale", "web"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("invalid scale specifier \"web\""),
        "{stderr}"
    );
    let (code, _, stderr) = run(shoal().args(["service", "scale", "web=abc"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("invalid replicas value \"abc\""),
        "{stderr}"
    );
    let (code, _, stderr) = run(shoal().args([
        "service",
        "create",
        "--name",
        "web",
        "--restart-delay",
        "soon",
        "busybox",
    ]));
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid duration \"soon\""), "{stderr}");
}

#[test]
fn local_validation_happens_before_connecting() {
    let nowhere = ["-H", "unix:///nonexistent/s.sock"];
    let (code, _, stderr) = run(shoal()
        .args(nowhere)
        .args(["service", "create", "--name", "web", "Busybox"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("must be lowercase"), "{stderr}");
    let (code, _, stderr) =
        run(shoal()
            .args(nowhere)
            .args(["image", "load", "-i", "/nonexistent/image.tar"]));
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("cannot open /nonexistent/image.tar"),
        "{stderr}"
    );
}

#[test]
fn bad_networking_flags_fail_before_connecting() {
    let nowhere = ["-H", "unix:///nonexistent/s.sock"];
    let cases: &[(&[&str], &str)] = &[
        (
            &["create", "--name", "web", "--network", "alias=x", "busybox"],
            "invalid --network value \"alias=x\": name= is required",
        ),
        (
            &[
                "create",
                "--name",
                "web",
                "--network",
                "name=a,ip=1.2.3.4",
                "busybox",
            ],
            "invalid --network value \"name=a,ip=1.2.3.4\": unknown key \"ip\"",
        ),
        (
            &["update", "--network-add", "alias=x", "web"],
            "invalid --network value \"alias=x\": name= is required",
        ),
        (
            &[
                "create",
                "--name",
                "web",
                "--dns",
                "resolver.example",
                "busybox",
            ],
            "invalid --dns value \"resolver.example\": a DNS server is an IP address",
        ),
    ];
    for (args, message) in cases {
        let (code, stdout, stderr) = run(shoal().args(nowhere).arg("service").args(*args));
        assert_ne!(code, 0, "{args:?}");
        assert_eq!(stdout, "", "{args:?}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("nonexistent"),
            "{args:?} dialled: {stderr}"
        );
    }
}

#[test]
fn the_log_driver_is_not_a_command() {
    let (_, help, _) = run(shoal().arg("--help"));
    assert!(!help.contains("log-driver"), "{help}");
    for cmd in ["daemon", "info", "swarm", "node", "service", "image"] {
        assert!(help.contains(cmd), "{cmd} missing from {help}");
    }
    // The log driver is a program of its own that the daemon installs, not a subcommand.
    let (code, _, stderr) = run(shoal().args(["__log-driver", "path=/x.log"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("unrecognized subcommand"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Against a fake daemon (`support/fake_daemon.rs`)
// ---------------------------------------------------------------------------------------------

fn write_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(&vec![42u8; len]).expect("write");
    path
}

#[test]
fn swarm_commands() {
    let d = FakeDaemon::start();
    let (code, stdout, _) = d.shoal(&["swarm", "init"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with(&format!(
        "Swarm initialized: current node ({SELF_ID}) is now a manager.\n\nTo add a worker to this swarm, run the following command:\n\n    shoal swarm join --token SWMTKN-1-worker 10.0.0.1:2377\n\n"
    )), "{stdout}");
    let (code, stdout, _) = d.shoal(&["swarm", "join-token", "-q", "manager"]);
    assert_eq!((code, stdout.as_str()), (0, "SWMTKN-1-manager\n"));
    let (_, stdout, _) = d.shoal(&["swarm", "join-token", "worker"]);
    assert_eq!(
        stdout,
        "To add a worker to this swarm, run the following command:\n\n    shoal swarm join --token SWMTKN-1-worker 10.0.0.1:2377\n\n"
    );
    let (code, _, stderr) = d.shoal(&["swarm", "leave"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "Error response from daemon: this node is the last manager: leaving loses the swarm; use `shoal swarm leave --force`\n"
    );
    let (code, stdout, _) = d.shoal(&["swarm", "leave", "--force"]);
    assert_eq!((code, stdout.as_str()), (0, "Node left the swarm.\n"));
    let (_, stdout, _) = d.shoal(&["info"]);
    assert!(
        stdout.contains(" Swarm: active\n  NodeID: node1"),
        "{stdout}"
    );
}

#[test]
fn node_changes() {
    let d = FakeDaemon::start();
    let (code, stdout, _) = d.shoal(&[
        "node",
        "update",
        "--availability",
        "drain",
        "--label-add",
        "zone=a",
        "node1",
    ]);
    assert_eq!((code, stdout.as_str()), (0, "node1\n"));
    let (code, _, stderr) = d.shoal(&["node", "update", "node1"]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("nothing to update"), "{stderr}");
    let (code, stdout, stderr) = d.shoal(&["node", "promote", "node1", "ghost"]);
    assert_eq!(code, 1);
    assert_eq!(stdout, "Node node1 promoted to a manager in the swarm.\n");
    assert_eq!(stderr, "Error response from daemon: no such node: ghost\n");
    let (_, stdout, _) = d.shoal(&["node", "demote", "node1"]);
    assert_eq!(stdout, "Manager node1 demoted in the swarm.\n");
    let updates = d.fake.0.lock().expect("lock").node_updates.clone();
    assert_eq!(updates[0].availability, "drain");
    assert_eq!(
        updates[0].label_add.get("zone").map(String::as_str),
        Some("a")
    );
    assert_eq!(updates[1].role, "manager");
    assert_eq!(updates[2].role, "worker");
    let (code, _, stderr) = d.shoal(&["node", "rm", "node2"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("use --force"), "{stderr}");
    let (code, stdout, _) = d.shoal(&["node", "rm", "-f", "node2"]);
    assert_eq!((code, stdout.as_str()), (0, "node2\n"));

    let (code, stdout, stderr) = d.shoal(&[
        "swarm",
        "join",
        "--token",
        "SWMTKN-1-worker",
        "10.0.0.1:2377",
    ]);
    assert_eq!(code, 0, "{stderr}");
    // The fake's Info says it is a manager.
    assert_eq!(stdout, "This node joined a swarm as a manager.\n");
}

#[test]
fn node_commands() {
    let d = FakeDaemon::start();
    let (code, stdout, _) = d.shoal(&["node", "ls"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        format!("ID                            HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION\n{SELF_ID} *   node1      Ready     Active         Leader           1.7.24\n")
    );
    let (_, stdout, _) = d.shoal(&["node", "ls", "-q"]);
    assert_eq!(stdout, format!("{SELF_ID}\n"));
    let (code, stdout, stderr) = d.shoal(&["node", "inspect", "self", "nope"]);
    assert_eq!(code, 1);
    let parsed: serde_json::Value = serde_json::from_str(&stdout).expect("json array");
    assert_eq!(parsed[0]["role"], "manager");
    assert_eq!(stderr, "Error response from daemon: no such node: nope\n");
    let (_, stdout, _) = d.shoal(&["node", "inspect", "--pretty", "self"]);
    assert!(
        stdout.contains("Hostname:") && stdout.contains(" Memory:") && stdout.contains("2GiB"),
        "{stdout}"
    );
}

#[test]
fn service_lifecycle() {
    let d = FakeDaemon::start();
    let (code, stdout, stderr) = d.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "busybox",
        "sleep",
        "1d",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let mut lines = stdout.lines();
    let id = lines.next().unwrap_or_default().to_string();
    assert_eq!(id.len(), 25);
    let rest: Vec<&str> = lines.collect();
    assert_eq!(
        rest.first().copied(),
        Some("overall progress: 0 out of 2 tasks")
    );
    assert!(
        rest.contains(&"1/2: preparing [=================================>                 ]"),
        "{stdout}"
    );
    assert!(
        rest.contains(&"overall progress: 2 out of 2 tasks"),
        "{stdout}"
    );
    assert_eq!(rest.last().copied(), Some("verify: Service converged"));

    let created = d.fake.0.lock().expect("lock").services[0].clone();
    let c = created.spec.and_then(|s| s.container).unwrap_or_default();
    assert_eq!(c.image, "docker.io/library/busybox:latest");
    assert_eq!(c.args, vec!["sleep", "1d"]);

    let (_, stdout, _) = d.shoal(&["service", "ls"]);
    assert_eq!(
        stdout,
        format!(
            "ID             NAME      MODE         REPLICAS   IMAGE            PORTS\n{}   web       replicated   2/2        busybox:latest\n",
            &id[..12]
        )
    );
    let (_, stdout, _) = d.shoal(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"]);
    assert_eq!(stdout, "web 2/2\n");

    let (code, stdout, _) = d.shoal(&["service", "scale", "web=3", "-d"]);
    assert_eq!((code, stdout.as_str()), (0, "web scaled to 3\n"));
    let (code, stdout, _) = d.shoal(&["service", "scale", "web=1"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("web scaled to 1\n"), "{stdout}");
    assert!(stdout.ends_with("verify: Service converged\n"), "{stdout}");

    let (_, stdout, _) = d.shoal(&["service", "ps", "web"]);
    let header = stdout.lines().next().unwrap_or_default();
    assert!(
        header.starts_with(
            "ID             NAME      IMAGE            NODE      DESIRED STATE   CURRENT STATE"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("web.1     busybox:latest   node1     Running         Running "),
        "{stdout}"
    );
    let (_, stdout, _) = d.shoal(&["service", "ps", "-q", "-f", "desired-state=running", "web"]);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");

    let (_, stdout, _) = d.shoal(&["service", "inspect", "web"]);
    let parsed: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(parsed[0]["spec"]["restart"]["condition"], "any");
    let (_, stdout, _) = d.shoal(&["service", "inspect", "--pretty", "web"]);
    assert!(
        stdout.contains("Service Mode:") && stdout.contains(" Replicas:"),
        "{stdout}"
    );

    let (code, stdout, stderr) = d.shoal(&["service", "logs", "web"]);
    assert_eq!(code, 0);
    assert_eq!(stdout, "web.1.abcdefghijkl@node1    | hello\n");
    assert_eq!(stderr, "web.1.abcdefghijkl@node1    | oops\n");

    let (code, stdout, stderr) = d.shoal(&["service", "rm", "nope", "web"]);
    assert_eq!(code, 1);
    assert_eq!(stdout, "web\n");
    assert_eq!(
        stderr,
        "Error response from daemon: no such service: nope\n"
    );
    let (_, stdout, _) = d.shoal(&["service", "ls", "-q"]);
    assert_eq!(stdout, "");
}

#[test]
fn create_stops_at_a_missing_image() {
    let d = FakeDaemon::start();
    let (code, stdout, stderr) = d.shoal(&["service", "create", "--name", "bad", "nope"]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("1/1: No such image: docker.io/library/nope:latest"),
        "{stdout}"
    );
    assert!(
        stderr.starts_with("service bad cannot converge: task bad.1 was rejected: No such image: docker.io/library/nope:latest"),
        "{stderr}"
    );
    let (code, stdout, _) = d.shoal(&["service", "create", "-d", "--name", "bad2", "nope"]);
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 1, "-d prints only the ID: {stdout}");
}

#[test]
fn image_commands() {
    let d = FakeDaemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let len = 2 * 1024 * 1024 + 12_345;
    let tar = write_file(dir.path(), "busybox.tar", len);
    let (code, stdout, stderr) =
        d.shoal(&["image", "load", "-i", tar.to_str().unwrap_or_default()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "Loaded image: busybox:latest\n");
    assert_eq!(d.fake.0.lock().expect("lock").loaded_bytes, len);

    // From stdin.
    let file = std::fs::File::open(&tar).expect("open");
    let (code, stdout, _) = run(shoal().args(["-H", &d.host, "image", "load"]).stdin(file));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "Loaded image: busybox:latest\n")
    );

    let (_, stdout, _) = d.shoal(&["image", "ls"]);
    assert_eq!(
        stdout,
        "REPOSITORY   TAG       IMAGE ID       CREATED       SIZE\nbusybox      latest    6fd955f66c23   3 hours ago   4.26MB\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Networks
// ---------------------------------------------------------------------------------------------

#[test]
fn network_lifecycle() {
    let d = FakeDaemon::start();
    let (code, stdout, stderr) = d.shoal(&[
        "network",
        "create",
        "--subnet",
        "198.18.4.0/24",
        "--gateway",
        "198.18.4.254",
        "--attachable",
        "--label",
        "env=prod",
        "web",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let web_id = stdout.trim_end().to_string();
    assert_eq!(stdout, format!("{web_id}\n"), "create prints the ID alone");
    assert_eq!(web_id.len(), 25);
    let (code, stdout, _) = d.shoal(&["network", "create", "backend"]);
    assert_eq!(code, 0);
    let backend_id = stdout.trim_end().to_string();
    {
        let st = d.fake.0.lock().expect("lock");
        let spec = st.networks[0].spec.clone().unwrap_or_default();
        assert_eq!(spec.driver, "overlay", "the driver defaults to overlay");
        assert_eq!(
            (spec.subnet.as_str(), spec.gateway.as_str()),
            ("198.18.4.0/24", "198.18.4.254")
        );
        assert!(spec.attachable && !spec.internal);
        assert_eq!(spec.labels.get("env").map(String::as_str), Some("prod"));
        let bare = st.networks[1].spec.clone().unwrap_or_default();
        assert_eq!((bare.subnet.as_str(), bare.gateway.as_str()), ("", ""));
    }

    let (code, stdout, _) = d.shoal(&["network", "ls"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        format!(
            "NETWORK ID     NAME      DRIVER    SCOPE\n\
             {}   backend   overlay   swarm\n\
             {}   web       overlay   swarm\n",
            &backend_id[..12],
            &web_id[..12]
        )
    );
    let (_, stdout, _) = d.shoal(&["network", "ls", "-q"]);
    assert_eq!(
        stdout,
        format!("{}\n{}\n", &backend_id[..12], &web_id[..12])
    );
    let (_, stdout, _) = d.shoal(&["network", "list", "--format", "json"]);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[1]["Name"], "web");
    assert_eq!(lines[1]["Labels"], "env=prod");
    assert_eq!(lines[1]["Scope"], "swarm");

    let (code, stdout, stderr) = d.shoal(&["network", "inspect", "web"]);
    assert_eq!(code, 0, "{stderr}");
    let parsed: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let web = &parsed[0];
    assert_eq!(web["Id"], web_id.as_str());
    assert_eq!(web["Name"], "web");
    assert_eq!(web["Driver"], "overlay");
    assert_eq!(web["Scope"], "swarm");
    assert_eq!(web["Attachable"], true);
    assert_eq!(web["Internal"], false);
    assert_eq!(web["Labels"]["env"], "prod");
    assert_eq!(web["IPAM"]["Config"][0]["Subnet"], "198.18.4.0/24");
    assert_eq!(web["IPAM"]["Config"][0]["Gateway"], "198.18.4.254");
    assert_eq!(
        web["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
        "4097"
    );

    // An unknown name: the others are still shown, then the error, exit 1.
    let (code, stdout, stderr) = d.shoal(&["network", "inspect", "nope", &backend_id[..6]]);
    assert_eq!(code, 1);
    let parsed: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(parsed[0]["Name"], "backend");
    assert_eq!(
        stderr,
        "Error response from daemon: network nope not found\n"
    );

    let (code, stdout, stderr) = d.shoal(&["network", "rm", "nope", "web"]);
    assert_eq!(code, 1);
    assert_eq!(stdout, "web\n");
    assert_eq!(
        stderr,
        "Error response from daemon: network nope not found\n"
    );
    let (code, stdout, _) = d.shoal(&["network", "remove", "backend"]);
    assert_eq!((code, stdout.as_str()), (0, "backend\n"));
    let (_, stdout, _) = d.shoal(&["network", "ls"]);
    assert_eq!(stdout, "NETWORK ID   NAME      DRIVER    SCOPE\n");
}

#[test]
fn network_create_refusals_never_reach_the_daemon() {
    let d = FakeDaemon::start();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--subnet", "banana", "n"],
            "invalid subnet \"banana\": expected an IPv4 CIDR such as 198.18.1.0/24",
        ),
        (
            &["--subnet", "198.18.1.5/24", "n"],
            "invalid subnet 198.18.1.5/24: it should be 198.18.1.0/24 (the network address, host bits zero)",
        ),
        (
            &["--subnet", "198.18.1.4/30", "n"],
            "subnet 198.18.1.4/30 is too small: an overlay network needs at least a /29 (8 addresses); use a prefix length of 29 or less, e.g. 198.18.1.0/29",
        ),
        (
            &["--subnet", "198.18.1.0/24", "--gateway", "198.18.2.1", "n"],
            "invalid gateway 198.18.2.1: subnet 198.18.1.0/24 does not contain it; pick an address inside the subnet",
        ),
        (
            &["--gateway", "198.18.2.1", "n"],
            "--gateway 198.18.2.1 needs --subnet: every gateway must have a corresponding subnet",
        ),
        (
            &["--driver", "bridge", "n"],
            "network driver \"bridge\" is not supported: Shoal networks use the overlay driver (pass --driver overlay or leave --driver out)",
        ),
        (
            &["my.net"],
            "invalid network name \"my.net\": use letters, digits, '-' and '_', starting and ending with a letter or digit (the name is used in DNS names)",
        ),
        (
            &["bridge"],
            "bridge is a pre-defined network and cannot be created: choose another name",
        ),
        (
            &["--label", "com.docker.swarm.predefined=true", "n"],
            "label com.docker.swarm.predefined is for networks the swarm creates itself and cannot be given by users: choose another label name",
        ),
    ];
    for (args, message) in cases {
        let (code, stdout, stderr) = d.shoal(&[&["network", "create"], *args].concat());
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}");
        assert_eq!(stderr, format!("{message}\n"), "{args:?}");
    }
    assert_eq!(
        d.fake.0.lock().expect("lock").network_calls,
        Vec::<String>::new(),
        "a refused create never dials the daemon"
    );
    // The same words without any daemon at all.
    let (code, _, stderr) = run(shoal().args([
        "-H",
        "unix:///nonexistent/s.sock",
        "network",
        "create",
        "--driver",
        "macvlan",
        "n",
    ]));
    assert_eq!(code, 1);
    assert!(stderr.starts_with("network driver \"macvlan\""), "{stderr}");
}

#[test]
fn publishing_is_silent_now_that_ports_are_served() {
    let d = FakeDaemon::start();
    let (code, _, stderr) = d.shoal(&[
        "service",
        "create",
        "-d",
        "--name",
        "pub",
        "--publish",
        "8080:80",
        "busybox",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}
