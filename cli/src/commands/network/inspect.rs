//! `network inspect`: docker's JSON object for each network found, then the errors.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::{json, Map, Value};
use shoal_proto::Network;

use super::{get_network, InspectArgs, SCOPE};
use crate::client::Client;
use crate::commands::{each, print_inspected};
use crate::output;

/// The driver option under which docker shows an overlay network's VXLAN ID.
const VXLAN_ID_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";

pub(super) async fn inspect(client: &Client, args: InspectArgs) -> Result<()> {
    let (found, errors) = each(&args.networks, |name| get_network(client, name)).await;
    print_inspected(&found, &errors, None, network_json)
}

/// Docker's `network inspect` object for what a Shoal network has.
pub fn network_json(network: &Network) -> Result<Value> {
    let spec = network.spec.clone().unwrap_or_default();
    // The allocated subnet and gateway; the spec's until the allocator has recorded them.
    let subnet = first_set(&network.subnet, &spec.subnet);
    let gateway = first_set(&network.gateway, &spec.gateway);
    let config = if subnet.is_empty() {
        vec![]
    } else {
        vec![json!({ "Subnet": subnet, "Gateway": gateway })]
    };
    let mut options = Map::new();
    if network.vni != 0 {
        options.insert(VXLAN_ID_OPTION.into(), network.vni.to_string().into());
    }
    let labels: BTreeMap<&String, &String> = spec.labels.iter().collect();
    Ok(json!({
        "Name": spec.name,
        "Id": network.id,
        "Created": output::rfc3339(network.meta.as_ref().map_or(0, |m| m.created_at_ms)),
        "Scope": SCOPE,
        "Driver": spec.driver,
        "EnableIPv6": false,
        "IPAM": { "Driver": "default", "Options": null, "Config": config },
        "Internal": spec.internal,
        "Attachable": spec.attachable,
        "Ingress": false,
        "Options": options,
        "Labels": labels,
    }))
}

fn first_set<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::fixtures::network;

    #[test]
    fn inspect_json_like_docker() {
        let mut n = network("abcdefghijklmnopqrstuvwxy", "backend", 4097);
        if let Some(spec) = n.spec.as_mut() {
            spec.attachable = true;
            spec.labels = [("env".to_string(), "prod".to_string())].into();
        }
        let v = network_json(&n).unwrap();
        assert_eq!(v["Id"], "abcdefghijklmnopqrstuvwxy");
        assert_eq!(v["Name"], "backend");
        assert_eq!(v["Driver"], "overlay");
        assert_eq!(v["Scope"], "swarm");
        assert_eq!(v["Attachable"], true);
        assert_eq!(v["Internal"], false);
        assert_eq!(v["Labels"], json!({"env": "prod"}));
        assert_eq!(
            v["IPAM"]["Config"],
            json!([{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}])
        );
        assert_eq!(v["Options"][VXLAN_ID_OPTION], "4097");
        assert_eq!(v["Created"], "2023-11-14T22:13:20.000Z");

        // Not allocated yet: the spec's subnet, or none, and no VXLAN ID.
        let mut bare = network("n2", "plain", 0);
        bare.subnet.clear();
        bare.gateway.clear();
        let v = network_json(&bare).unwrap();
        assert_eq!(v["IPAM"]["Config"], json!([]));
        assert_eq!(v["Options"], json!({}));
    }
}
