//! The names the node's DNS server answers, per client task.
//!
//! Built from the session's peer tables and the node's local tasks, and replaced whole whenever
//! either changes: the server never edits it, so a query always sees one consistent snapshot.
//! Each client (a task, known by its source IP) sees only the names of the networks it is on,
//! which is what keeps two networks isolated in DNS as they are on the wire.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use shoal_proto::{NetworkEndpoint, NetworkPeers};

/// A task on this node that may query the DNS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The task's source IP as the server sees it (its address on the outbound bridge).
    pub addr: IpAddr,
    /// The IDs of the networks the task is attached to, in attachment order.
    pub networks: Vec<String>,
    /// The task's `--dns` servers; empty = the node's default upstreams.
    pub upstream: Vec<SocketAddr>,
}

/// What the server does with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution<'a> {
    /// A name of the client's networks: answer these addresses (possibly none, e.g. for a type
    /// other than A), authoritatively, with TTL 0.
    Local(Vec<Ipv4Addr>),
    /// Not ours: ask these upstream servers; empty = the node's defaults.
    Forward(&'a [SocketAddr]),
}

/// Every network's names, and which networks each client may see.
#[derive(Debug, Default)]
pub struct DnsTable {
    /// Network ID → (normalised name → addresses, in endpoint order).
    networks: HashMap<String, HashMap<String, Vec<Ipv4Addr>>>,
    clients: HashMap<IpAddr, Client>,
    /// Turns the answers' order round, query by query, so that clients taking the first address
    /// spread over a service's tasks (docker's DNS round robin).
    turn: AtomicUsize,
}

impl DnsTable {
    /// Builds the table from the session's peer tables (`SessionMessage.networks`) and the
    /// node's local tasks. Only serving endpoints get names; an endpoint whose address does
    /// not parse as IPv4 is skipped (logged), never a panic. The ingress network has no names
    /// (as under docker: it only carries the routing mesh).
    pub fn new(peers: &[NetworkPeers], clients: impl IntoIterator<Item = Client>) -> Self {
        let networks = peers
            .iter()
            .filter_map(|p| {
                let network = p.network.as_ref()?;
                let spec = network.spec.as_ref();
                if spec.is_some_and(|s| s.ingress) {
                    return None;
                }
                let name = spec.map_or("", |s| s.name.as_str());
                Some((network.id.clone(), network_names(name, p)))
            })
            .collect();
        let clients = clients.into_iter().map(|c| (c.addr, c)).collect();
        DnsTable {
            networks,
            clients,
            turn: AtomicUsize::new(0),
        }
    }

    /// What to do with a query for `name` (any case, trailing dot or not) from `src`.
    /// `want_a` is true for A queries; any other type for a name we own (e.g. AAAA: no IPv6
    /// yet) gets an empty answer, NOERROR rather than NXDOMAIN, so resolvers keep the A answer.
    pub fn resolve(&self, src: IpAddr, name: &str, want_a: bool) -> Resolution<'_> {
        let Some(client) = self.clients.get(&src) else {
            return Resolution::Forward(&[]);
        };
        let key = normalise(name);
        let mut found: Option<Vec<Ipv4Addr>> = None;
        for id in &client.networks {
            let Some(addrs) = self.networks.get(id).and_then(|names| names.get(&key)) else {
                continue;
            };
            let all = found.get_or_insert_with(Vec::new);
            for a in addrs {
                if !all.contains(a) {
                    all.push(*a);
                }
            }
        }
        match found {
            Some(mut addrs) if want_a => {
                if addrs.len() > 1 {
                    let turn = self.turn.fetch_add(1, Ordering::Relaxed) % addrs.len();
                    addrs.rotate_left(turn);
                }
                Resolution::Local(addrs)
            }
            Some(_) => Resolution::Local(Vec::new()),
            None => Resolution::Forward(&client.upstream),
        }
    }

    /// The clients the table knows (for logs and tests).
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }
}

/// Lower case without the trailing dot: DNS names compare case-insensitively.
fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Every name one network answers: service names (and their aliases), `tasks.` names and task
/// names, each also suffixed with the network's name where docker does so. A service with a
/// VIP on the network (`vip` mode) answers its VIP, even with no task running (connections are
/// then refused at once); one without (`dnsrr`) answers its serving tasks' addresses.
fn network_names(network: &str, peers: &NetworkPeers) -> HashMap<String, Vec<Ipv4Addr>> {
    let network = normalise(network);
    let mut names: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
    let mut add = |name: &str, addrs: &[Ipv4Addr]| {
        if name.is_empty() {
            return;
        }
        let entry = names.entry(normalise(name)).or_default();
        for a in addrs {
            if !entry.contains(a) {
                entry.push(*a);
            }
        }
    };
    let mut services: HashMap<&str, ServiceNames> = HashMap::new();
    for svc in &peers.services {
        let Ok(vip) = svc.vip.parse::<Ipv4Addr>() else {
            continue;
        };
        let entry = services.entry(&svc.service_name).or_default();
        entry.vips.push(vip);
        entry.aliases.extend(svc.aliases.iter().cloned());
    }
    for ep in peers.endpoints.iter().filter(|ep| ep.running) {
        let Some(addr) = endpoint_addr(ep) else {
            continue;
        };
        add(&ep.task_name, &[addr]);
        let entry = services.entry(&ep.service_name).or_default();
        entry.tasks.push(addr);
        // Aliases are per network and the same on every endpoint of the service; take them
        // all so that a peer table caught mid-update still answers every alias it names.
        entry.aliases.extend(ep.aliases.iter().cloned());
    }
    for (
        service,
        ServiceNames {
            vips,
            tasks,
            aliases,
        },
    ) in services
    {
        let service_addrs = if vips.is_empty() { &tasks } else { &vips };
        let mut labels = vec![service.to_string()];
        for alias in aliases {
            if !labels.contains(&alias) {
                labels.push(alias);
            }
        }
        for label in labels.iter().filter(|l| !l.is_empty()) {
            add(label, service_addrs);
            add(&format!("tasks.{label}"), &tasks);
            if !network.is_empty() {
                add(&format!("{label}.{network}"), service_addrs);
                add(&format!("tasks.{label}.{network}"), &tasks);
            }
        }
    }
    names
}

/// What one service's names answer on a network.
#[derive(Default)]
struct ServiceNames {
    /// Its VIP (`vip` mode), or none (`dnsrr`).
    vips: Vec<Ipv4Addr>,
    /// Its serving tasks' addresses.
    tasks: Vec<Ipv4Addr>,
    aliases: Vec<String>,
}

fn endpoint_addr(ep: &NetworkEndpoint) -> Option<Ipv4Addr> {
    match ep.address.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            tracing::debug!(task = %ep.task_id, address = %ep.address, "endpoint address is not IPv4; not in DNS");
            None
        }
    }
}
