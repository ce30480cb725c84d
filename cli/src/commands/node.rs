//! `shoal node ls | inspect | update | promote | demote | rm`.

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value};
use shoal_proto::{
    Empty, GetNodeRequest, Node, NodeAvailability, NodeRole, NodeState, RemoveNodeRequest,
    UpdateNodeRequest,
};

use crate::client::{Client, RpcResult};
use crate::commands::flags::{parse_label, Role};
use crate::commands::{each, print_inspected, remove_each, report_each};
use crate::output::{self, Format, Listing, Pretty, Row};

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List nodes in the swarm
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more nodes
    Inspect(InspectArgs),
    /// Update a node
    Update(UpdateArgs),
    /// Promote one or more nodes to manager in the swarm
    Promote(NodesArgs),
    /// Demote one or more nodes from manager in the swarm
    Demote(NodesArgs),
    /// Remove one or more nodes from the swarm
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Availability of the node
    #[arg(long, value_enum)]
    pub availability: Option<Availability>,
    /// Role of the node
    #[arg(long, value_enum)]
    pub role: Option<Role>,
    /// Add or update a node label (KEY=VALUE)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label_add: Vec<(String, String)>,
    /// Remove a node label if exists
    #[arg(long, value_name = "KEY")]
    pub label_rm: Vec<String>,
    /// Node: ID, ID prefix, hostname, or "self"
    pub node: String,
}

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Nodes: ID, ID prefix or hostname
    #[arg(required = true, value_name = "NODE")]
    pub nodes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force remove a node from the swarm
    #[arg(short, long)]
    pub force: bool,
    /// Nodes: ID, ID prefix or hostname
    #[arg(required = true, value_name = "NODE")]
    pub nodes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only display IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output: table, json, or a Go-style template such as '{{.Hostname}}'
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print the information in a human friendly format
    #[arg(long)]
    pub pretty: bool,
    /// Nodes: ID, ID prefix, hostname, or "self"
    #[arg(required = true, value_name = "self|NODE")]
    pub nodes: Vec<String>,
}

pub async fn run(host: &str, command: NodeCommand) -> Result<()> {
    if let NodeCommand::Update(args) = &command {
        // Said before dialling: an update that changes nothing is a mistake, not a no-op.
        if args.availability.is_none()
            && args.role.is_none()
            && args.label_add.is_empty()
            && args.label_rm.is_empty()
        {
            bail!("nothing to update: pass --availability, --role, --label-add or --label-rm");
        }
    }
    let client = Client::connect(host).await?;
    match command {
        NodeCommand::Ls(args) => ls(&client, args).await,
        NodeCommand::Inspect(args) => inspect(&client, args).await,
        NodeCommand::Update(args) => {
            let node = args.node.clone();
            update(&client, update_request(args)).await?;
            println!("{node}");
            Ok(())
        }
        NodeCommand::Promote(args) => set_roles(&client, args, Role::Manager).await,
        NodeCommand::Demote(args) => set_roles(&client, args, Role::Worker).await,
        NodeCommand::Rm(args) => rm(&client, args).await,
    }
}

fn update_request(args: UpdateArgs) -> UpdateNodeRequest {
    let availability = match args.availability {
        Some(Availability::Active) => "active",
        Some(Availability::Pause) => "pause",
        Some(Availability::Drain) => "drain",
        None => "",
    };
    UpdateNodeRequest {
        node: args.node,
        availability: availability.to_string(),
        role: args.role.map_or("", Role::as_str).to_string(),
        label_add: args.label_add.into_iter().collect(),
        label_rm: args.label_rm,
    }
}

async fn update(client: &Client, request: UpdateNodeRequest) -> Result<Node> {
    client
        .control()
        .update_node(request)
        .await
        .or_daemon_error()
}

/// `promote` / `demote`, with docker's messages; each node on its own.
async fn set_roles(client: &Client, args: NodesArgs, role: Role) -> Result<()> {
    let (_, errors) = each(&args.nodes, |name| async move {
        let request = UpdateNodeRequest {
            node: name.clone(),
            role: role.as_str().to_string(),
            ..Default::default()
        };
        update(client, request).await?;
        if role == Role::Manager {
            println!("Node {name} promoted to a manager in the swarm.")
        } else {
            println!("Manager {name} demoted in the swarm.")
        }
        Ok(())
    })
    .await;
    report_each(&errors)
}

async fn rm(client: &Client, args: RmArgs) -> Result<()> {
    let force = args.force;
    remove_each(&args.nodes, |name| async move {
        let request = RemoveNodeRequest {
            node: name.clone(),
            force,
        };
        client
            .control()
            .remove_node(request)
            .await
            .or_daemon_error()?;
        Ok(())
    })
    .await
}

async fn ls(client: &Client, args: LsArgs) -> Result<()> {
    let response = client
        .control()
        .list_nodes(Empty {})
        .await
        .or_daemon_error()?;
    let mut nodes = response.nodes;
    // Docker sorts by hostname.
    nodes.sort_by(|a, b| hostname(a).cmp(hostname(b)).then(a.id.cmp(&b.id)));
    if args.quiet {
        for n in &nodes {
            println!("{}", n.id);
        }
        return Ok(());
    }
    let listing = node_listing(&nodes, &response.self_id);
    print!(
        "{}",
        listing.render(&Format::parse(args.format.as_deref()))?
    );
    Ok(())
}

const NODE_COLUMNS: &[(&str, &str)] = &[
    ("ID", "ID"),
    ("Hostname", "HOSTNAME"),
    ("Status", "STATUS"),
    ("Availability", "AVAILABILITY"),
    ("ManagerStatus", "MANAGER STATUS"),
    ("EngineVersion", "ENGINE VERSION"),
];

pub fn node_listing(nodes: &[Node], self_id: &str) -> Listing {
    let rows = nodes
        .iter()
        .map(|n| {
            let is_self = n.id == self_id;
            let id_cell = if is_self {
                format!("{} *", n.id)
            } else {
                n.id.clone()
            };
            let values = [
                n.id.clone(),
                hostname(n).to_string(),
                state_name(n),
                availability_name(n),
                manager_status(n),
                engine_version(n).to_string(),
            ];
            let mut fields = Map::new();
            for ((key, _), value) in NODE_COLUMNS.iter().zip(values.iter()) {
                fields.insert(key.to_string(), Value::String(value.clone()));
            }
            fields.insert("Self".into(), Value::Bool(is_self));
            let mut cells = values.to_vec();
            cells[0] = id_cell;
            Row { cells, fields }
        })
        .collect();
    Listing {
        columns: NODE_COLUMNS,
        rows,
    }
}

fn hostname(n: &Node) -> &str {
    n.description.as_ref().map_or("", |d| d.hostname.as_str())
}

fn engine_version(n: &Node) -> &str {
    n.description
        .as_ref()
        .map_or("", |d| d.containerd_version.as_str())
}

fn state_name(n: &Node) -> String {
    let state = NodeState::try_from(n.state).unwrap_or(NodeState::Unknown);
    output::capitalise(&output::enum_word(state.as_str_name(), "NODE_STATE_"))
}

fn availability_name(n: &Node) -> String {
    let a = NodeAvailability::try_from(n.availability).unwrap_or(NodeAvailability::Active);
    output::capitalise(&output::enum_word(a.as_str_name(), "NODE_AVAILABILITY_"))
}

/// "Leader", "Reachable", "Unreachable", or empty for a worker.
fn manager_status(n: &Node) -> String {
    let is_manager = NodeRole::try_from(n.role) == Ok(NodeRole::Manager);
    match &n.manager_status {
        Some(m) if m.leader => "Leader".into(),
        Some(m) if !m.reachability.is_empty() => output::capitalise(&m.reachability),
        Some(_) if is_manager => "Unknown".into(),
        _ => String::new(),
    }
}

async fn inspect(client: &Client, args: InspectArgs) -> Result<()> {
    let (found, errors) = each(&args.nodes, |name| async move {
        client
            .control()
            .get_node(GetNodeRequest { node: name.clone() })
            .await
            .or_daemon_error()
    })
    .await;
    let pretty_fn: fn(&Node) -> String = pretty;
    print_inspected(
        &found,
        &errors,
        args.pretty.then_some(pretty_fn),
        output::node_json,
    )
}

/// Docker's `node inspect --pretty` layout.
pub fn pretty(n: &Node) -> String {
    let mut p = Pretty::default();
    let d = n.description.clone().unwrap_or_default();
    p.field(0, "ID", n.id.clone());
    p.field(0, "Hostname", d.hostname.clone());
    p.labels(0, &n.labels);
    let joined = n.meta.as_ref().map_or(0, |m| m.created_at_ms);
    p.field(0, "Joined at", output::rfc3339(joined));
    p.section(0, "Status");
    p.field(1, "State", state_name(n));
    if !n.status_message.is_empty() {
        p.field(1, "Message", n.status_message.clone());
    }
    p.field(1, "Availability", availability_name(n));
    p.field(1, "Address", n.addr.clone());
    if let Some(m) = &n.manager_status {
        p.section(0, "Manager Status");
        p.field(1, "Address", m.addr.clone());
        p.field(1, "Raft Status", output::capitalise(&m.reachability));
        p.field(1, "Leader", if m.leader { "Yes" } else { "No" });
    }
    p.section(0, "Platform");
    p.field(1, "Operating System", d.os.clone());
    p.field(1, "Architecture", d.arch.clone());
    if !d.kernel_version.is_empty() {
        p.field(1, "Kernel Version", d.kernel_version.clone());
    }
    p.section(0, "Resources");
    p.field(1, "CPUs", d.nano_cpus_count.to_string());
    p.field(1, "Memory", output::bytes_size(d.memory_bytes));
    p.field(0, "Engine Version", d.containerd_version.clone());
    if !d.containerd_address.is_empty() {
        p.field(0, "Engine Address", d.containerd_address.clone());
    }
    p.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{ManagerStatus, NodeDescription};

    fn node(id: &str, host: &str, manager: Option<ManagerStatus>) -> Node {
        Node {
            id: id.into(),
            role: if manager.is_some() {
                NodeRole::Manager as i32
            } else {
                NodeRole::Worker as i32
            },
            state: NodeState::Ready as i32,
            description: Some(NodeDescription {
                hostname: host.into(),
                containerd_version: "1.7.24".into(),
                ..Default::default()
            }),
            manager_status: manager,
            ..Default::default()
        }
    }

    #[test]
    fn ls_marks_self_and_manager_status() {
        let leader = ManagerStatus {
            leader: true,
            reachability: "reachable".into(),
            ..Default::default()
        };
        let nodes = vec![
            node("aaa", "node1", Some(leader)),
            node("bbb", "node2", None),
        ];
        let out = node_listing(&nodes, "aaa").render(&Format::Table).unwrap();
        assert_eq!(
            out,
            "ID        HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION\n\
             aaa *     node1      Ready     Active         Leader           1.7.24\n\
             bbb       node2      Ready     Active                          1.7.24\n"
        );
        let json = node_listing(&nodes, "aaa").render(&Format::Json).unwrap();
        let first: Value = serde_json::from_str(json.lines().next().unwrap_or("")).unwrap();
        assert_eq!(first["ID"], "aaa");
        assert_eq!(first["Hostname"], "node1");
        assert_eq!(first["ManagerStatus"], "Leader");
        assert_eq!(first["Self"], true);
    }

    #[test]
    fn update_flags_become_a_request() {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: NodeCommand,
        }
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "shoal-node",
            "update",
            "--availability",
            "drain",
            "--label-add",
            "zone=a",
            "--label-rm",
            "old",
            "node2",
        ])
        .unwrap();
        let NodeCommand::Update(args) = cli.command else {
            panic!("not an update");
        };
        let req = update_request(args);
        assert_eq!(req.node, "node2");
        assert_eq!(req.availability, "drain");
        assert_eq!(req.role, "");
        assert_eq!(req.label_add.get("zone").map(String::as_str), Some("a"));
        assert_eq!(req.label_rm, vec!["old"]);
        assert!(
            Cli::try_parse_from(["shoal-node", "update", "--availability", "gone", "n"]).is_err()
        );
    }

    #[test]
    fn pretty_has_docker_sections() {
        let n = node(
            "aaa",
            "node1",
            Some(ManagerStatus {
                addr: "10.0.0.1:2377".into(),
                reachability: "reachable".into(),
                leader: true,
                ..Default::default()
            }),
        );
        let out = pretty(&n);
        assert!(out.starts_with("ID:"), "{out}");
        assert!(out.contains("\nManager Status:\n Address:"), "{out}");
        assert!(out.contains(" Raft Status:      Reachable\n"), "{out}");
        assert!(out.contains("Engine Version:    1.7.24\n"), "{out}");
    }
}
