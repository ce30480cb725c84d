//! Named network namespaces: create, find, list and delete in a private directory, against
//! the real kernel (needs root).

mod common;

use std::time::Duration;

use common::{eventually, ip, unique, Lab};
use shoal_netns::{Error, Netlink, Netns, NetnsDir};

#[test]
fn ensure_get_list_and_delete_are_idempotent() {
    let lab = Lab::new();
    let name = unique("ns");
    assert!(lab.dir.get(&name).expect("get").is_none());

    let ns = lab.dir.ensure(&name).expect("create");
    assert_eq!(ns.name(), name);
    assert_eq!(ns.path(), lab.dir.dir().join(&name));
    // Creating what exists hands back the same namespace.
    assert_eq!(lab.dir.ensure(&name).expect("ensure again"), ns);
    assert_eq!(lab.dir.get(&name).expect("get"), Some(ns.clone()));
    assert_eq!(lab.dir.list().expect("list"), vec![name.clone()]);

    // A fresh namespace has only loopback, down.
    let links = ip(&ns, &["-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:"), "{links}");

    assert!(lab.dir.delete(&name).expect("delete"));
    assert!(!lab.dir.delete(&name).expect("delete again"));
    assert!(lab.dir.get(&name).expect("get").is_none());
    assert!(lab.dir.list().expect("list").is_empty());
}

#[test]
fn a_half_created_entry_is_listed_replaced_and_deletable() {
    let lab = Lab::new();
    // What a kill -9 between creating the file and mounting onto it leaves behind.
    let name = unique("ns");
    std::fs::write(lab.dir.dir().join(&name), b"").expect("leftover file");
    assert_eq!(lab.dir.list().expect("list"), vec![name.clone()]);
    assert!(lab.dir.get(&name).expect("get").is_none());
    let ns = lab.dir.ensure(&name).expect("ensure replaces the leftover");
    assert!(lab.dir.get(&name).expect("get").is_some());
    assert!(lab.dir.delete(ns.name()).expect("delete"));

    let other = unique("ns");
    std::fs::write(lab.dir.dir().join(&other), b"").expect("leftover file");
    assert!(lab.dir.delete(&other).expect("cleanup of a leftover"));
    assert!(lab.dir.list().expect("list").is_empty());
}

#[test]
fn names_that_escape_the_directory_are_refused() {
    let lab = Lab::new();
    for bad in ["", "..", "a/b"] {
        assert!(matches!(
            lab.dir.ensure(bad),
            Err(Error::InvalidName { .. })
        ));
    }
}

#[tokio::test]
async fn opening_a_missing_namespace_says_so() {
    let lab = Lab::new();
    let ns = lab.netns();
    assert!(lab.dir.delete(ns.name()).expect("delete"));
    match Netlink::open(&ns) {
        Err(Error::NoSuchNamespace(name)) => assert_eq!(name, ns.name()),
        other => panic!("expected NoSuchNamespace, got {other:?}"),
    }
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_links() {
    let lab = Lab::new();
    let outer = lab.netns();
    let inner = lab.netns();
    let veth = unique("v");
    {
        let nl = Netlink::open(&outer).expect("netlink in outer");
        nl.ensure_veth(&veth, &inner, "eth0", None)
            .await
            .expect("veth");
        assert!(nl.link(&veth).await.expect("lookup").is_some());
    }
    assert!(ip(&inner, &["-o", "link", "show"]).contains("eth0@"));

    assert!(lab.dir.delete(inner.name()).expect("delete inner"));
    assert!(
        veth_goes(&outer, &veth),
        "veth {veth} outlived the namespace of its peer"
    );
}

/// Whether `veth` leaves `outer` within 10 s: the kernel tears a namespace down, and with it
/// the far end of a veth pair, asynchronously.
fn veth_goes(outer: &Netns, veth: &str) -> bool {
    eventually(Duration::from_secs(10), || {
        !ip(outer, &["-o", "link", "show"]).contains(veth)
    })
}

#[test]
fn a_restarted_daemon_finds_its_namespaces_again() {
    let lab = Lab::new();
    let kept = lab.netns();
    // What a daemon does at startup: open the directory again and list it.
    let reopened = shoal_netns::NetnsDir::new(lab.dir.dir()).expect("reopen");
    assert_eq!(
        reopened.list().expect("list"),
        vec![kept.name().to_string()]
    );
    assert_eq!(reopened.get(kept.name()).expect("get"), Some(kept.clone()));
    // Reopening does not stack a second mount on the directory.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = lab.dir.dir().display().to_string();
    let mounts = mountinfo
        .lines()
        .filter(|line| line.split(' ').nth(4) == Some(dir.as_str()))
        .count();
    assert_eq!(mounts, 1, "{mountinfo}");
}

#[test]
fn a_failing_test_still_cleans_up() {
    let made = std::sync::Mutex::new(None);
    let outcome = std::panic::catch_unwind(|| {
        let lab = Lab::new();
        let ns = lab.netns();
        *made.lock().expect("lock") = Some((lab.dir.dir().to_path_buf(), ns));
        panic!("a test failing halfway");
    });
    assert!(outcome.is_err());
    let (dir, ns) = made.into_inner().expect("lock").expect("lab was made");
    assert!(!ns.path().exists(), "namespace file left behind");
    assert!(!dir.exists(), "namespace directory left behind");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mountinfo.contains(dir.to_string_lossy().as_ref()),
        "{mountinfo}"
    );
}

/// Whether a mount of the process's mount table is of the namespace at `path` (an nsfs mount
/// shows the namespace, `net:[INODE]`, as its root).
fn is_mounted(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ns = format!(
        "net:[{}]",
        std::fs::metadata(path).expect("namespace").ino()
    );
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .any(|line| line.split(' ').nth(3) == Some(ns.as_str()))
}

#[tokio::test]
async fn a_held_namespace_is_mounted_nowhere_and_lives_as_long_as_a_handle() {
    let lab = Lab::new();
    let outer = lab.netns();
    assert!(
        is_mounted(outer.path()),
        "the check sees a mounted namespace"
    );
    let held = Netns::new_held(&unique("held")).expect("new held namespace");
    assert!(
        !is_mounted(held.path()),
        "a held namespace is mounted nowhere"
    );
    // Another process (here `ip`, through nsenter) reaches it by its path.
    let links = ip(&held, &["-o", "link", "show"]);
    assert_eq!(
        links.lines().count(),
        1,
        "a new namespace has loopback only: {links}"
    );

    let veth = unique("v");
    let nl = Netlink::open(&outer).expect("netlink in outer");
    nl.ensure_veth(&veth, &held, "eth0", None)
        .await
        .expect("veth into the held namespace");
    assert!(ip(&held, &["-o", "link", "show"]).contains("eth0@"));

    // A clone shares the descriptor: dropping one handle keeps the namespace.
    let clone = held.clone();
    assert_eq!(clone, held);
    drop(held);
    assert!(ip(&clone, &["-o", "link", "show"]).contains("eth0@"));
    // The last one frees it, and with it the veth's other end.
    drop(clone);
    assert!(
        veth_goes(&outer, &veth),
        "veth {veth} outlived the held namespace of its peer"
    );
}

#[test]
fn a_process_namespace_is_found_by_its_pid_and_a_missing_one_says_so() {
    let held = Netns::new_held(&unique("held")).expect("new held namespace");
    let mut sleeper = std::process::Command::new("nsenter")
        .arg(format!("--net={}", held.path().display()))
        .args(["sleep", "30"])
        .spawn()
        .expect("start a process in the namespace");
    let inode = |path: &std::path::Path| std::fs::read_link(path).expect("namespace link");
    let wanted = inode(held.path());
    // nsenter execs sleep once it has entered the namespace.
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_link(format!("/proc/{}/ns/net", sleeper.id())).ok() == Some(wanted.clone())
    }));
    let found = Netns::of_process("found", sleeper.id()).expect("namespace of the process");
    // The process's namespace outlives the handle that made it, held now by the new one.
    drop(held);
    assert_eq!(inode(found.path()), wanted);
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    // A pid no process has (above the kernel's pid_max).
    match Netns::of_process("gone", 1 << 23) {
        Err(Error::NoSuchNamespace(name)) => assert_eq!(name, "gone"),
        other => panic!("expected NoSuchNamespace, got {other:?}"),
    }
}

#[test]
fn a_namespace_directory_is_removed_with_its_mount() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let path = tmp.path().join("old");
    let dir = NetnsDir::new(&path).expect("namespace directory");
    let name = unique("ns");
    dir.ensure(&name).expect("create");
    assert!(dir.delete(&name).expect("delete"));
    dir.remove().expect("remove the empty directory");
    assert!(!path.exists());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mountinfo.contains(path.to_string_lossy().as_ref()),
        "{mountinfo}"
    );
}
