//! Who may use a node's daemon and read its state, against a real daemon: the API socket is
//! root's only (0600) unless the daemon's group (`--group`, docker's `docker` group model)
//! exists, then root's and the group's (0660); the internal dispatcher socket is 0600; the
//! data directory is 0700 and the Raft log (root CA key, join tokens) 0600, whatever the umask.
//! Another user is refused with a message that says what to do; a member of the group is let in.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use shoal_tests::daemon::{run_with_timeout, shoal_bin, ShoalHost};

/// nobody, on Debian.
const OTHER_UID: &str = "65534";

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A copy of the `shoal` binary that another user can run (the build's own directory may be
/// root's only), and the directory holding it.
fn client_for_others() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = dir.path().join("shoal");
    fs::copy(shoal_bin(), &bin).expect("copy shoal");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
    (dir, bin)
}

/// `shoal -H SOCKET info` as uid 65534, with `groups` as its supplementary groups.
fn info_as_other(bin: &Path, host: &ShoalHost, groups: Option<u32>) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={OTHER_UID}"),
        &format!("--regid={OTHER_UID}"),
    ]);
    match groups {
        Some(gid) => cmd.arg(format!("--groups={gid}")),
        None => cmd.arg("--clear-groups"),
    };
    cmd.arg(bin).arg("-H").arg(host.api_url()).arg("info");
    cmd.env_remove("SHOAL_HOST");
    run_with_timeout(&mut cmd, Duration::from_secs(30))
}

/// Lets any user reach the socket's directory, so that only the socket's own mode decides.
fn open_socket_dir(host: &ShoalHost) {
    let dir = host.api_socket().parent().expect("dir").to_path_buf();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A system group made for one test and removed when it ends.
struct TestGroup {
    name: String,
    gid: u32,
}

impl TestGroup {
    fn new() -> Self {
        let name = format!("shltest{}", std::process::id());
        let _ = Command::new("groupdel").arg(&name).status();
        let ok = Command::new("groupadd")
            .arg(&name)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "groupadd {name} failed");
        let out = Command::new("getent")
            .args(["group", &name])
            .output()
            .expect("getent");
        let gid = String::from_utf8_lossy(&out.stdout)
            .split(':')
            .nth(2)
            .and_then(|g| g.trim().parse().ok())
            .expect("the new group's gid");
        TestGroup { name, gid }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.name).status();
    }
}

#[test]
fn the_api_socket_and_the_state_are_roots_alone_without_the_group() {
    // Whatever the umask the daemon was started with, the modes are set explicitly.
    let host = ShoalHost::start_swarm();
    let data = host.data_dir();
    assert_eq!(mode(&host.api_socket()), 0o600);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("dispatcher.sock")), 0o600);
    let raft_file = walk(&data)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "raft.redb"))
        .expect("a Raft log after swarm init");
    assert_eq!(mode(&raft_file), 0o600, "{}", raft_file.display());

    open_socket_dir(&host);
    let (_dir, bin) = client_for_others();
    let out = info_as_other(&bin, &host, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "another user was let in");
    assert!(
        stderr.contains("permission denied") && stderr.contains("group"),
        "{stderr}"
    );
}

#[test]
fn members_of_the_daemons_group_may_use_the_socket_and_others_may_not() {
    let group = TestGroup::new();
    let host = ShoalHost::start_with(&["--group", &group.name]);
    let socket = host.api_socket();
    assert_eq!(mode(&socket), 0o660);
    assert_eq!(fs::metadata(&socket).expect("stat").gid(), group.gid);

    open_socket_dir(&host);
    let (_dir, bin) = client_for_others();
    let member = info_as_other(&bin, &host, Some(group.gid));
    assert!(
        member.status.success(),
        "a member of {} was refused: {}",
        group.name,
        String::from_utf8_lossy(&member.stderr)
    );
    let stranger = info_as_other(&bin, &host, None);
    assert!(!stranger.status.success(), "a non-member was let in");
}

#[test]
fn a_group_that_does_not_exist_stops_the_daemon_with_what_to_do() {
    let host = ShoalHost::new_stopped(&[]);
    let mut args = host.standard_daemon_args();
    args.extend(["--group".to_string(), "no-such-group-shoal".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, log) = host.run_daemon_expecting_exit(&args, Duration::from_secs(30));
    assert!(!status.success());
    assert!(log.contains("groupadd no-such-group-shoal"), "{log}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
