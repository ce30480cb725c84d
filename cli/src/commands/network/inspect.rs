//! `network inspect`: docker's JSON object for each network found, with the tasks attached to
//! it (docker's `Containers`, read with `ListTasks`), then the errors.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::{json, Map, Value};
use shoal_proto::{ListTasksRequest, Network, Task};

use super::{get_network, InspectArgs, SCOPE};
use crate::client::{Client, RpcResult};
use crate::commands::{each, print_inspected, report_each};
use crate::output;

/// The driver option under which docker shows an overlay network's VXLAN ID.
const VXLAN_ID_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";

pub(super) async fn inspect(client: &Client, args: InspectArgs) -> Result<()> {
    let (found, errors) = each(&args.networks, |name| get_network(client, name)).await;
    if found.is_empty() {
        return print_inspected(&found, &errors, None, network_json);
    }
    let tasks = all_tasks(client).await?;
    let values = found
        .iter()
        .map(|n| network_json_with(n, &tasks))
        .collect::<Result<Vec<_>>>()?;
    println!("{}", serde_json::to_string_pretty(&values)?);
    report_each(&errors)
}

/// Every task the manager knows, for the networks' endpoints.
async fn all_tasks(client: &Client) -> Result<Vec<Task>> {
    Ok(client
        .control()
        .list_tasks(ListTasksRequest::default())
        .await
        .or_daemon_error()?
        .tasks)
}

/// Docker's `network inspect` object for what a Shoal network has, without its tasks.
pub fn network_json(network: &Network) -> Result<Value> {
    network_json_with(network, &[])
}

/// Docker's object, with docker's `Containers` map: the live tasks attached to the network
/// (those whose address is taken), by task ID, with the task's name, address and node.
pub fn network_json_with(network: &Network, tasks: &[Task]) -> Result<Value> {
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
        "Ingress": spec.ingress,
        "Options": options,
        "Labels": labels,
        "Containers": endpoints(network, tasks),
    }))
}

fn endpoints(network: &Network, tasks: &[Task]) -> Map<String, Value> {
    tasks
        .iter()
        .filter(|t| !t.state().is_terminal())
        .filter_map(|t| {
            let a = t.networks.iter().find(|a| {
                a.network.as_ref().is_some_and(|n| n.id == network.id) && !a.address.is_empty()
            })?;
            let endpoint = json!({
                "Name": t.name(),
                "IPv4Address": a.address,
                "Node": t.node_id,
                "Aliases": a.aliases,
            });
            Some((t.id.clone(), endpoint))
        })
        .collect()
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
        assert_eq!(v["Ingress"], false);
        if let Some(spec) = n.spec.as_mut() {
            spec.ingress = true;
        }
        assert_eq!(network_json(&n).unwrap()["Ingress"], true);
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

    #[test]
    fn inspect_lists_the_live_tasks_on_the_network() {
        let n = network("net1", "backend", 4097);
        let task = |id: &str, state: shoal_proto::TaskState, on: &str| Task {
            id: id.into(),
            service_name: "web".into(),
            slot: 2,
            node_id: "node1".into(),
            status: Some(shoal_proto::TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            networks: vec![shoal_proto::NetworkAttachment {
                network: Some(Network {
                    id: on.into(),
                    ..Default::default()
                }),
                address: "10.0.1.5/24".into(),
                aliases: vec!["api".into()],
            }],
            ..Default::default()
        };
        let tasks = [
            task("t1", shoal_proto::TaskState::Running, "net1"),
            task("t2", shoal_proto::TaskState::Shutdown, "net1"),
            task("t3", shoal_proto::TaskState::Running, "other"),
        ];
        let v = network_json_with(&n, &tasks).unwrap();
        assert_eq!(
            v["Containers"],
            json!({"t1": {
                "Name": "web.2.t1",
                "IPv4Address": "10.0.1.5/24",
                "Node": "node1",
                "Aliases": ["api"],
            }})
        );
    }
}
