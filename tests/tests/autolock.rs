//! Secrets at rest (issue 10): the Raft log is sealed on disk, and autolock keeps its key off
//! disk until `shoal swarm unlock`.
//!
//! - After `swarm init` and a service, no file under the raft directory holds the join tokens,
//!   the CA key (its PEM header or its base64 body) in plaintext; neither do the daemon's log
//!   nor `info`/`node inspect`/`service inspect` output.
//! - `swarm init --autolock` prints the unlock key; no `kek` file and no file under the data
//!   directory holds the key. After a restart the node is locked (`info`, every control command
//!   says so); a malformed, empty or wrong key is refused and the node stays locked; the right
//!   key unlocks it, the service is there and the node runs tasks again. `unlock-key --rotate`
//!   then a restart: the old key is refused, the new one works. `swarm update --autolock=false`
//!   then a restart: no key needed. Bad flag values and requests that make no sense are refused.
//!
//! - In a swarm of three managers, turning autolock on (on one manager) re-wraps every manager's
//!   key files, followers too: none keeps a `kek`. A restarted follower is locked while the
//!   others serve, and rejoins once unlocked; after a rotation each manager takes only the new
//!   key.
//!
//! Each test has its own hosts, so they run in parallel.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use shoal_proto::UpdateClusterRequest;
use shoal_tests::cluster::TestCluster;
use shoal_tests::daemon::{free_loopback_port, shoal_bin, words, ShoalHost, TEST_ADDR_POOL};
use shoal_tests::disk::files_containing;

const CONVERGE: Duration = Duration::from_secs(60);

const LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used. \
                      Please use `shoal swarm unlock` to unlock it.";

/// `shoal swarm unlock` with `input` on its stdin (not a terminal: it reads one line).
fn unlock(host: &ShoalHost, input: &str) -> Output {
    let mut child = Command::new(shoal_bin())
        .arg("-H")
        .arg(host.api_url())
        .args(["swarm", "unlock"])
        .env_remove("SHOAL_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal swarm unlock");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write the key");
    child.wait_with_output().expect("shoal swarm unlock")
}

fn unlock_err(host: &ShoalHost, input: &str) -> String {
    let out = unlock(host, input);
    assert!(!out.status.success(), "unlock with {input:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `UpdateCluster` asking to rotate the unlock key and turn autolock off at once, straight over
/// the API socket.
fn both_rotate_and_off(host: &ShoalHost) -> tonic::Status {
    host.with_control(async |mut control| {
        control
            .update_cluster(UpdateClusterRequest {
                autolock: Some(false),
                rotate_unlock_key: true,
                ..Default::default()
            })
            .await
            .expect_err("rotating while turning autolock off")
    })
}

fn swarm_state(host: &ShoalHost) -> String {
    host.shoal_ok(&["info", "--format", "{{.swarm_state}}"])
        .trim()
        .to_string()
}

/// The `SWMKEY-1-…` line of a command's output.
fn key_in(output: &str) -> String {
    output
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("SWMKEY-1-"))
        .unwrap_or_else(|| panic!("no unlock key in:\n{output}"))
        .to_string()
}

/// How often the daemon has logged re-wrapping its raft data key.
fn rewraps(host: &ShoalHost) -> usize {
    host.daemon_log()
        .matches("raft data key re-wrapped")
        .count()
}

fn wait_rewrapped(host: &ShoalHost, before: usize) {
    host.wait_for(CONVERGE, "the raft data key to be re-wrapped", || {
        rewraps(host) > before
    });
}

fn assert_locked(host: &ShoalHost) {
    assert_eq!(swarm_state(host), "locked");
    for cmd in [
        "service ls",
        "node ls",
        "swarm unlock-key",
        "swarm join-token worker",
    ] {
        let err = host.shoal_err(&words(cmd));
        assert!(
            err.contains(LOCKED),
            "`{cmd}` on a locked node said:\n{err}"
        );
    }
}

fn wait_web(host: &ShoalHost, expected: &str) {
    host.wait_for(CONVERGE, &format!("web at {expected}"), || {
        host.replicas("web").as_deref() == Some(expected)
    });
}

#[test]
fn the_raft_log_holds_no_secret_in_plaintext_and_nothing_prints_one() {
    let host = ShoalHost::start_swarm();
    host.shoal_ok(&words(
        "service create --name web --replicas 1 busybox sleep 3600",
    ));
    wait_web(&host, "1/1");
    let worker = host.shoal_ok(&words("swarm join-token -q worker"));
    let manager = host.shoal_ok(&words("swarm join-token -q manager"));
    let raft = host.data_dir().join("raft");
    // The CA key, as the manager itself reads it back.
    let records = shoal_manager::raft::storage::decrypted_records(&raft, None).expect("log");
    let text: String = records
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    let begin = text
        .find("-----BEGIN PRIVATE KEY-----")
        .expect("the CA key is in the log");
    let body_line = text[begin..]
        .lines()
        .nth(1)
        .expect("the CA key's first base64 line")
        .to_string();
    for (what, secret) in [
        ("worker token", worker.trim()),
        ("manager token", manager.trim()),
        ("CA key header", "PRIVATE KEY"),
        ("CA key body", body_line.as_str()),
    ] {
        let found = files_containing(&raft, secret.as_bytes());
        assert!(found.is_empty(), "the {what} is in plaintext in {found:?}");
    }
    // Nor in what the daemon logs or prints.
    let outputs = [
        host.daemon_log(),
        host.shoal_ok(&words("info --format json")),
        host.shoal_ok(&words("node inspect self")),
        host.shoal_ok(&words("service inspect web")),
    ];
    for out in &outputs {
        for secret in [worker.trim(), manager.trim(), "PRIVATE KEY", &body_line] {
            assert!(!out.contains(secret), "a secret is printed:\n{out}");
        }
    }
}

#[test]
fn autolock_keeps_a_restarted_manager_locked_until_unlocked() {
    let mut host = ShoalHost::start();
    host.load_busybox();
    let err = unlock_err(&host, "SWMKEY-1-whatever\n");
    assert!(err.contains("This node is not part of a swarm"), "{err}");
    let err = host.shoal_err(&words("swarm init --autolock --force-new-cluster"));
    assert!(
        err.contains("--autolock cannot be combined with --force-new-cluster"),
        "{err}"
    );
    assert_eq!(swarm_state(&host), "inactive");

    let listen = format!("127.0.0.1:{}", free_loopback_port());
    let init = host.shoal_ok(&[
        "swarm",
        "init",
        "--autolock",
        "--listen-addr",
        &listen,
        "--default-addr-pool",
        TEST_ADDR_POOL,
    ]);
    assert!(
        init.contains(
            "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\n\
             command and provide the following key:\n\n    SWMKEY-1-"
        ),
        "{init}"
    );
    assert!(init.contains("Please remember to store this key"), "{init}");
    let key = key_in(&init);
    assert_eq!(host.shoal_ok(&words("swarm unlock-key -q")).trim(), key);
    let raft = host.data_dir().join("raft");
    let data = host.data_dir();
    let assert_key_off_disk = |key: &str| {
        assert!(!raft.join("kek").exists(), "the kek file is on disk");
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(key.trim_start_matches("SWMKEY-1-"))
            .expect("base64 key");
        assert_eq!(
            files_containing(&data, key.as_bytes()),
            Vec::<String>::new()
        );
        assert_eq!(files_containing(&data, &raw), Vec::<String>::new());
    };
    assert_key_off_disk(&key);
    // Not printed either.
    for out in [
        host.daemon_log(),
        host.shoal_ok(&words("info --format json")),
    ] {
        assert!(!out.contains(&key), "the unlock key is printed:\n{out}");
    }
    let err = unlock_err(&host, &format!("{key}\n"));
    assert!(err.contains("swarm is not locked"), "{err}");

    host.shoal_ok(&words(
        "service create --name web --replicas 1 busybox sleep 3600",
    ));
    wait_web(&host, "1/1");

    // Restarted: locked, and every bad key leaves it so.
    host.restart();
    assert_locked(&host);
    let wrong = format!("SWMKEY-1-{}\n", "A".repeat(43));
    let err = unlock_err(&host, &wrong);
    assert!(err.contains("invalid key, unable to unlock swarm"), "{err}");
    let err = unlock_err(&host, "nonsense\n");
    assert!(err.contains("invalid unlock key"), "{err}");
    assert!(err.contains("SWMKEY-1-"), "{err}");
    let err = unlock_err(&host, "\n");
    assert!(err.contains("no unlock key given"), "{err}");
    let err = host.shoal_err(&words("swarm init --force-new-cluster"));
    assert!(err.contains(LOCKED), "{err}");
    assert_locked(&host);

    let out = unlock(&host, &format!("{key}\n"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(swarm_state(&host), "active");
    wait_web(&host, "1/1");
    host.shoal_ok(&words("service scale web=2"));
    wait_web(&host, "2/2");

    // Rotation: the old key no longer unlocks a restarted manager, the new one does.
    let before = rewraps(&host);
    let rotated = host.shoal_ok(&words("swarm unlock-key --rotate"));
    assert!(
        rotated.starts_with("Successfully rotated manager unlock key."),
        "{rotated}"
    );
    let new_key = key_in(&rotated);
    assert_ne!(new_key, key);
    wait_rewrapped(&host, before);
    assert_key_off_disk(&new_key);
    host.restart();
    assert_locked(&host);
    let err = unlock_err(&host, &format!("{key}\n"));
    assert!(err.contains("invalid key, unable to unlock swarm"), "{err}");
    let out = unlock(&host, &format!("{new_key}\n"));
    assert!(out.status.success(), "{out:?}");
    wait_web(&host, "2/2");

    // Bad flag values and senseless requests change nothing.
    let err = host.shoal_err(&words("swarm update --autolock=maybe"));
    assert!(
        err.contains("use --autolock=true or --autolock=false"),
        "{err}"
    );
    // A request no CLI command makes: rotating while turning autolock off.
    let status = both_rotate_and_off(&host);
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("cannot rotate the unlock key while turning autolock off"),
        "{status:?}"
    );
    assert_eq!(host.shoal_ok(&words("swarm unlock-key -q")).trim(), new_key);

    // Autolock off: the key goes, and a restart needs none.
    let before = rewraps(&host);
    host.shoal_ok(&words("swarm update --autolock=false"));
    wait_rewrapped(&host, before);
    let err = host.shoal_err(&words("swarm unlock-key"));
    assert!(err.contains("no unlock key is set"), "{err}");
    let err = host.shoal_err(&words("swarm unlock-key --rotate"));
    assert!(err.contains("autolock is not enabled"), "{err}");
    assert!(raft.join("kek").exists());
    host.restart();
    assert_eq!(swarm_state(&host), "active");
    wait_web(&host, "2/2");

    // On again with `swarm update --autolock`: a new key, printed, and needed after a restart.
    let before = rewraps(&host);
    let update = host.shoal_ok(&words("swarm update --autolock"));
    assert!(update.starts_with("Swarm updated."), "{update}");
    let third = key_in(&update);
    wait_rewrapped(&host, before);
    assert_key_off_disk(&third);
    host.restart();
    assert_locked(&host);
    let out = unlock(&host, &format!("{third}\n"));
    assert!(out.status.success(), "{out:?}");
    wait_web(&host, "2/2");
    host.shoal_ok(&words("service rm web"));
}

#[test]
fn every_manager_rewraps_its_key_and_a_locked_one_rejoins_once_unlocked() {
    let mut cluster = TestCluster::new(3);
    cluster.form(3, 0);
    let first = cluster.host(0);
    let update = first.shoal_ok(&words("swarm update --autolock=true"));
    let key = key_in(&update);
    let all_wrapped = |cluster: &TestCluster, key: &str| {
        for host in cluster.hosts() {
            let raft = host.data_dir().join("raft");
            host.wait_for(CONVERGE, "the kek file to go", || {
                !raft.join("kek").exists()
            });
            assert_eq!(
                files_containing(&host.data_dir(), key.as_bytes()),
                Vec::<String>::new()
            );
        }
    };
    all_wrapped(&cluster, &key);

    cluster.host_mut(1).restart();
    assert_locked(cluster.host(1));
    // The others still serve.
    cluster.host(0).shoal_ok(&words("service ls"));
    let out = unlock(cluster.host(1), &format!("{key}\n"));
    assert!(out.status.success(), "{out:?}");
    let second = cluster.host(1);
    second.wait_for(CONVERGE, "the unlocked manager to answer", || {
        second.shoal(&words("node ls")).status.success()
    });

    // A rotation reaches every manager: each takes only the new key after a restart.
    let before: Vec<usize> = cluster.hosts().iter().map(|h| rewraps(h)).collect();
    let rotated = cluster
        .host(0)
        .shoal_ok(&words("swarm unlock-key --rotate"));
    let new_key = key_in(&rotated);
    for (host, before) in cluster.hosts().iter().zip(before) {
        wait_rewrapped(host, before);
    }
    all_wrapped(&cluster, &new_key);
    cluster.host_mut(2).restart();
    assert_locked(cluster.host(2));
    let err = unlock_err(cluster.host(2), &format!("{key}\n"));
    assert!(err.contains("invalid key, unable to unlock swarm"), "{err}");
    let out = unlock(cluster.host(2), &format!("{new_key}\n"));
    assert!(out.status.success(), "{out:?}");
    let third = cluster.host(2);
    third.wait_for(CONVERGE, "the unlocked manager to answer", || {
        third.shoal(&words("node ls")).status.success()
    });
}
