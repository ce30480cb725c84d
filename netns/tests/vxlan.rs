//! The overlay data path in miniature, against the real kernel (needs root): two "hosts"
//! (namespaces joined by an underlay veth), each with a per-network namespace holding a bridge
//! and a VXLAN device whose UDP socket stays in the host, and a task namespace plugged into
//! that bridge. Static FDB and neighbour entries are all that connects the two tasks.

mod common;

use std::net::Ipv4Addr;

use common::{bridge, ip, reachable, unique, Lab};
use shoal_netns::{
    Error, FdbEntry, Ipv4Net, MacAddr, NeighbourEntry, Netlink, Netns, Vxlan, VXLAN_PORT,
};

const VNI: u32 = 4242;
const OVERLAY_MTU: u32 = 1450;

/// One node of the miniature cluster.
struct Node {
    host: Netns,
    overlay: Netns,
    task: Netns,
    underlay: Ipv4Addr,
    task_ip: Ipv4Addr,
    task_mac: MacAddr,
}

/// Builds the overlay network's side on `node`: bridge and VXLAN device in its overlay
/// namespace, the task's veth into that bridge, the task's address and MAC.
async fn build_node(node: &Node, vxlan: &str, bridge_name: &str, veth: &str) {
    let host = Netlink::open(&node.host).expect("netlink in host");
    let mut spec = Vxlan::new(vxlan, VNI, node.underlay);
    spec.mtu = Some(OVERLAY_MTU);
    host.ensure_vxlan(&spec, Some(&node.overlay))
        .await
        .expect("vxlan");
    // Ensuring again (the reconcile loop after a restart) is not an error.
    host.ensure_vxlan(&spec, Some(&node.overlay))
        .await
        .expect("vxlan again");
    assert!(
        host.link(vxlan).await.expect("lookup").is_none(),
        "vxlan left in host"
    );

    let overlay = Netlink::open(&node.overlay).expect("netlink in overlay");
    overlay
        .ensure_bridge(bridge_name, Some(OVERLAY_MTU))
        .await
        .expect("bridge");
    overlay
        .attach_to_bridge(vxlan, bridge_name)
        .await
        .expect("attach vxlan");
    overlay.set_up(vxlan).await.expect("vxlan up");
    let address = Ipv4Net::new(node.task_ip, 24).expect("prefix");
    let mac = Some(node.task_mac);
    common::plug(
        &overlay,
        bridge_name,
        &node.task,
        veth,
        address,
        OVERLAY_MTU,
        mac,
    )
    .await;
}

/// Programs on `node` the peer entries for `remote`'s task.
async fn add_peer(node: &Node, vxlan: &str, remote: &Node) {
    let overlay = Netlink::open(&node.overlay).expect("netlink in overlay");
    for _ in 0..2 {
        overlay
            .ensure_fdb(vxlan, remote.task_mac, remote.underlay)
            .await
            .expect("fdb");
        overlay
            .ensure_neighbour(vxlan, remote.task_ip, remote.task_mac)
            .await
            .expect("neighbour");
    }
}

#[tokio::test]
async fn a_vxlan_pair_with_static_entries_carries_traffic_between_tasks() {
    let lab = Lab::new();
    let nodes = [1u8, 2].map(|i| Node {
        host: lab.netns(),
        overlay: lab.netns(),
        task: lab.netns(),
        underlay: Ipv4Addr::new(198, 18, 10, i),
        task_ip: Ipv4Addr::new(198, 19, 10, i + 1),
        task_mac: MacAddr::new([0x02, 0x42, 0xc6, 0x13, 0x0a, i + 1]),
    });
    let [one, two] = &nodes;

    // The underlay: a veth between the two hosts.
    let underlay = unique("u");
    let host_one = Netlink::open(&one.host).expect("netlink in host one");
    host_one
        .ensure_veth(&underlay, &two.host, &underlay, None)
        .await
        .expect("underlay veth");
    for node in &nodes {
        let host = Netlink::open(&node.host).expect("netlink in host");
        host.ensure_address(&underlay, Ipv4Net::new(node.underlay, 24).expect("prefix"))
            .await
            .expect("underlay address");
        host.set_up(&underlay).await.expect("underlay up");
    }
    assert!(reachable(&one.host, "198.18.10.2"), "underlay broken");

    let (vxlan, br, veth) = (unique("vx"), unique("br"), unique("v"));
    for node in &nodes {
        build_node(node, &vxlan, &br, &veth).await;
    }

    // The device is what the overlay needs: VNI, port, learning off, proxy ARP.
    let details = ip(&one.overlay, &["-d", "link", "show", &vxlan]);
    for expected in [
        format!("vxlan id {VNI}"),
        "local 198.18.10.1".to_string(),
        format!("dstport {VXLAN_PORT}"),
        "nolearning".to_string(),
        "proxy".to_string(),
        format!("mtu {OVERLAY_MTU}"),
    ] {
        assert!(
            details.contains(&expected),
            "{expected:?} missing: {details}"
        );
    }

    // The device lives in the overlay namespace, its UDP socket in the host's, where the
    // underlay address is.
    let sockets = |ns: &Netns| {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .args(["ss", "-Hlun"])
            .output()
            .expect("run ss");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(sockets(&one.host).contains(&format!(":{VXLAN_PORT}")));
    assert!(!sockets(&one.overlay).contains(&format!(":{VXLAN_PORT}")));

    // Without peer entries nothing crosses: no flooding, no learning.
    assert!(
        !reachable(&one.task, "198.19.10.3"),
        "reached without peer entries"
    );

    add_peer(one, &vxlan, two).await;
    add_peer(two, &vxlan, one).await;
    let overlay_one = Netlink::open(&one.overlay).expect("netlink in overlay one");
    assert_eq!(
        overlay_one.fdb_entries(&vxlan).await.expect("fdb entries"),
        vec![FdbEntry {
            mac: two.task_mac,
            remote: two.underlay
        }]
    );
    assert_eq!(
        overlay_one
            .neighbour_entries(&vxlan)
            .await
            .expect("neighbour entries"),
        vec![NeighbourEntry {
            ip: two.task_ip,
            mac: two.task_mac
        }]
    );
    let fdb = bridge(&one.overlay, &["fdb", "show", "dev", &vxlan]);
    // (`bridge` prints the underlay's namespace id in between: "dst … link-netnsid 0 self".)
    assert!(
        fdb.lines().any(
            |line| line.starts_with("02:42:c6:13:0a:03 dst 198.18.10.2 ")
                && line.ends_with("self permanent")
        ),
        "{fdb}"
    );
    let neigh = ip(&one.overlay, &["neigh", "show", "dev", &vxlan]);
    assert!(
        neigh.contains("198.19.10.3 lladdr 02:42:c6:13:0a:03 PERMANENT"),
        "{neigh}"
    );

    assert!(
        reachable(&one.task, "198.19.10.3"),
        "task one cannot reach task two"
    );
    assert!(
        reachable(&two.task, "198.19.10.2"),
        "task two cannot reach task one"
    );

    // Removing the peer entries (task two went away) cuts the path again; removing twice is fine.
    for _ in 0..2 {
        overlay_one
            .delete_fdb(&vxlan, two.task_mac, two.underlay)
            .await
            .expect("delete fdb");
        overlay_one
            .delete_neighbour(&vxlan, two.task_ip)
            .await
            .expect("delete neighbour");
    }
    let fdb = bridge(&one.overlay, &["fdb", "show", "dev", &vxlan]);
    // (The bridge itself may still have learnt the MAC on its VXLAN port; that entry ages out
    // and sends nowhere without the device's own.)
    assert!(
        !fdb.lines()
            .any(|line| line.starts_with("02:42:c6:13:0a:03 dst")),
        "{fdb}"
    );
    let neigh = ip(&one.overlay, &["neigh", "show", "dev", &vxlan]);
    assert!(!neigh.contains("198.19.10.3"), "{neigh}");
    assert!(overlay_one
        .fdb_entries(&vxlan)
        .await
        .expect("fdb")
        .is_empty());
    assert!(overlay_one
        .neighbour_entries(&vxlan)
        .await
        .expect("neighbours")
        .is_empty());
    // Task one's own ARP cache may still hold task two's MAC; flush it so the check is about
    // the overlay's entries.
    ip(&one.task, &["neigh", "flush", "dev", "eth0"]);
    assert!(
        !reachable(&one.task, "198.19.10.3"),
        "reached after peer removal"
    );
}

#[tokio::test]
async fn a_vxlan_device_in_place_is_ensured_and_checked_for_kind() {
    let lab = Lab::new();
    let ns = lab.netns();
    let nl = Netlink::open(&ns).expect("netlink");
    let vxlan = unique("vx");
    let spec = Vxlan::new(&vxlan, 77, Ipv4Addr::new(198, 18, 11, 1));
    nl.ensure_vxlan(&spec, None).await.expect("vxlan");
    nl.ensure_vxlan(&spec, None).await.expect("vxlan again");
    let link = nl.link(&vxlan).await.expect("lookup").expect("vxlan");
    assert_eq!(link.kind.as_deref(), Some("vxlan"));

    let br = unique("br");
    nl.ensure_bridge(&br, None).await.expect("bridge");
    let clash = Vxlan::new(&br, 78, Ipv4Addr::new(198, 18, 11, 1));
    assert!(matches!(
        nl.ensure_vxlan(&clash, None).await,
        Err(Error::WrongKind { .. })
    ));

    // Entries on a device that is gone: a clear error, not a silent success.
    assert!(nl.delete_link(&vxlan).await.expect("delete"));
    let mac = MacAddr::new([0x02, 0x42, 0xc6, 0x13, 0x0b, 0x02]);
    assert!(matches!(
        nl.ensure_fdb(&vxlan, mac, Ipv4Addr::new(198, 18, 11, 2))
            .await,
        Err(Error::NoSuchLink { .. })
    ));
}
