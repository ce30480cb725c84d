//! Bridges, veth pairs, addresses and routes against the real kernel (needs root): two task
//! namespaces joined through a bridge in a third reach each other, and every "ensure" and
//! delete can be repeated.

mod common;

use std::net::Ipv4Addr;

use common::{ip, reachable, unique, Lab};
use shoal_netns::{Error, Ipv4Net, MacAddr, Netlink, Netns, Route};

fn net(cidr: &str) -> Ipv4Net {
    cidr.parse().expect("test CIDR")
}

/// Plugs `task` into `bridge` with `address` and the MTU these tests use.
async fn plug(switch: &Netlink, bridge: &str, task: &Netns, host_end: &str, address: &str) {
    common::plug(switch, bridge, task, host_end, net(address), 1400, None).await;
}

#[tokio::test]
async fn two_namespaces_reach_each_other_through_a_bridge_in_a_third() {
    let lab = Lab::new();
    let (switch_ns, a, b) = (lab.netns(), lab.netns(), lab.netns());
    let switch = Netlink::open(&switch_ns).expect("netlink in switch");
    let bridge = unique("br");
    let index = switch
        .ensure_bridge(&bridge, Some(1400))
        .await
        .expect("bridge");
    // Ensuring again is a no-op that returns the same bridge.
    assert_eq!(
        switch
            .ensure_bridge(&bridge, Some(1400))
            .await
            .expect("again"),
        index
    );
    let link = switch.link(&bridge).await.expect("lookup").expect("bridge");
    assert_eq!(link.kind.as_deref(), Some("bridge"));
    assert_eq!(link.mtu, Some(1400));
    assert!(link.up);

    let (va, vb) = (unique("va"), unique("vb"));
    plug(&switch, &bridge, &a, &va, "198.18.7.2/24").await;
    plug(&switch, &bridge, &b, &vb, "198.18.7.3/24").await;
    // Repeating the whole wiring changes nothing.
    plug(&switch, &bridge, &a, &va, "198.18.7.2/24").await;

    let port = switch.link(&va).await.expect("lookup").expect("veth");
    assert_eq!(port.kind.as_deref(), Some("veth"));
    assert_eq!(port.controller, Some(index));
    let eth0 = ip(&a, &["-o", "addr", "show", "dev", "eth0"]);
    assert_eq!(eth0.matches("198.18.7.2/24").count(), 1, "{eth0}");
    assert!(ip(&a, &["link", "show", "eth0"]).contains("mtu 1400"));

    assert!(
        reachable(&a, "198.18.7.3"),
        "a cannot reach b: {} {} {} {}",
        ip(&switch_ns, &["-d", "link"]),
        ip(&a, &["-d", "link"]),
        ip(&a, &["addr"]),
        ip(&a, &["neigh"])
    );
    assert!(reachable(&b, "198.18.7.2"), "b cannot reach a");

    // Unplugging b: deleting the host end deletes b's eth0 too.
    assert!(switch.delete_link(&vb).await.expect("delete"));
    assert!(!switch.delete_link(&vb).await.expect("delete again"));
    assert!(!ip(&b, &["-o", "link", "show"]).contains("eth0"));
    assert!(!reachable(&a, "198.18.7.3"), "b still reachable");
}

#[tokio::test]
async fn a_default_route_reaches_beyond_the_subnet() {
    let lab = Lab::new();
    let (router_ns, task) = (lab.netns(), lab.netns());
    let router = Netlink::open(&router_ns).expect("netlink in router");
    let bridge = unique("br");
    router.ensure_bridge(&bridge, None).await.expect("bridge");
    router
        .ensure_address(&bridge, net("198.18.8.1/24"))
        .await
        .expect("gateway address");
    // An address of the router's outside the task's subnet.
    router
        .ensure_address(&bridge, net("198.19.8.1/24"))
        .await
        .expect("far address");
    let veth = unique("v");
    plug(&router, &bridge, &task, &veth, "198.18.8.2/24").await;

    let inside = Netlink::open(&task).expect("netlink in task");
    assert!(!reachable(&task, "198.19.8.1"), "reachable without a route");
    let default = Route::default_via(Ipv4Addr::new(198, 18, 8, 1));
    inside.ensure_route(&default).await.expect("default route");
    inside
        .ensure_route(&default)
        .await
        .expect("default route again");
    let routes = ip(&task, &["route", "show"]);
    assert!(
        routes.contains("default via 198.18.8.1 dev eth0"),
        "{routes}"
    );
    assert!(
        reachable(&task, "198.19.8.1"),
        "default route does not work"
    );

    // A direct route, then deleting both, twice.
    let direct = Route::direct(net("198.19.9.0/24"), "eth0");
    inside.ensure_route(&direct).await.expect("direct route");
    let routes = ip(&task, &["route", "show"]);
    assert!(routes.contains("198.19.9.0/24 dev eth0"), "{routes}");
    for route in [&default, &direct] {
        assert!(inside.delete_route(route).await.expect("delete route"));
        assert!(!inside.delete_route(route).await.expect("delete again"));
    }
    let routes = ip(&task, &["route", "show"]);
    assert!(
        !routes.contains("default") && !routes.contains("198.19.9.0"),
        "{routes}"
    );
}

/// A veth pair between two new namespaces: a handle on one end's side, the other namespace
/// (where the peer is eth0) and the name of the first end.
async fn veth_pair(lab: &Lab) -> (Netlink, Netns, String) {
    let (ns, peer) = (lab.netns(), lab.netns());
    let nl = Netlink::open(&ns).expect("netlink");
    let veth = unique("v");
    nl.ensure_veth(&veth, &peer, "eth0", None)
        .await
        .expect("veth");
    (nl, peer, veth)
}

#[tokio::test]
async fn addresses_mac_and_link_state_converge() {
    let lab = Lab::new();
    let (nl, peer, veth) = veth_pair(&lab).await;
    assert_eq!(
        nl.ensure_veth(&veth, &peer, "eth0", None)
            .await
            .expect("again"),
        nl.link(&veth).await.expect("lookup").expect("veth").index
    );

    let address = net("198.18.9.5/24");
    nl.ensure_address(&veth, address).await.expect("address");
    nl.ensure_address(&veth, address)
        .await
        .expect("address again");
    assert_eq!(nl.addresses(&veth).await.expect("list"), vec![address]);
    assert!(nl.delete_address(&veth, address).await.expect("delete"));
    assert!(!nl
        .delete_address(&veth, address)
        .await
        .expect("delete again"));
    assert!(nl.addresses(&veth).await.expect("list").is_empty());

    let mac: MacAddr = "02:42:c6:12:09:05".parse().expect("MAC");
    nl.set_mac(&veth, mac).await.expect("set MAC");
    let link = nl.link(&veth).await.expect("lookup").expect("veth");
    assert_eq!(link.mac, Some(mac));
    assert!(!link.up);
    nl.set_up(&veth).await.expect("up");
    assert!(nl.link(&veth).await.expect("lookup").expect("veth").up);
    nl.set_down(&veth).await.expect("down");
    assert!(!nl.link(&veth).await.expect("lookup").expect("veth").up);
    assert!(nl
        .links()
        .await
        .expect("links")
        .iter()
        .any(|l| l.name == "lo"));
}

#[tokio::test]
async fn wrong_kinds_and_missing_links_are_clear_errors() {
    let lab = Lab::new();
    let (nl, peer, veth) = veth_pair(&lab).await;
    match nl.ensure_bridge(&veth, None).await {
        Err(Error::WrongKind { actual, .. }) => assert_eq!(actual, "veth"),
        other => panic!("expected WrongKind, got {other:?}"),
    }
    // The peer name is taken in `peer` now: a second pair cannot have it.
    let other = unique("v");
    assert!(matches!(
        nl.ensure_veth(&other, &peer, "eth0", None).await,
        Err(Error::Netlink { .. })
    ));
    assert!(nl.link(&other).await.expect("lookup").is_none());
    assert!(matches!(
        nl.set_up("shlmissing").await,
        Err(Error::NoSuchLink { .. })
    ));
    assert!(matches!(
        nl.ensure_bridge("much-too-long-name", None).await,
        Err(Error::InvalidName { .. })
    ));
    assert!(!nl.delete_link("shlmissing").await.expect("delete missing"));
}
