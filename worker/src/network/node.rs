//! [`NodeNetwork`]: the node's task networking, as the agent sees it through
//! [`TaskNetworks`]. It owns the outbound bridge, the overlay namespaces the node's tasks need,
//! the task namespaces, and the DNS server's table. One lock serialises every change to what
//! is shared, so a task being attached and a peer table arriving never interleave half-way;
//! what is a task's own (its namespace, veth and outbound address) is set up outside it.
//!
//! Layout of a task's namespace (docker's order): `eth0…` one per overlay network, in the
//! service's order, then the outbound bridge's interface last, which carries the default route.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex as StdMutex};

use ipnet::Ipv4Net;
use shoal_netns::{Netlink, Netns, NetnsDir};
use shoal_proto::{NetworkPeers, Task};
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::backends;
use super::balancing::TaskBalancing;
use super::config::NetworkConfig;
use super::ingress::IngressBalancer;
use super::lb::PortForward;
use super::outbound::Outbound;
use super::overlay::OverlayNs;
use super::{NetFuture, NetworkError, TaskNetwork, TaskNetworks};
use crate::dns::{self, Client, DnsServer, DnsServerConfig, DnsTable};

/// VXLAN's outer headers: an overlay's MTU is the underlay's minus this.
const VXLAN_OVERHEAD: u32 = 50;

pub struct NodeNetwork {
    cfg: NetworkConfig,
    host: Netlink,
    /// The namespace of every task being wired or attached, by task ID: held here, mounted
    /// nowhere. Outside the lock, so that tasks starting together are wired in parallel.
    namespaces: StdMutex<HashMap<String, Netns>>,
    networks_dir: NetnsDir,
    /// Where the ingress load balancer's namespace lives.
    lb_dir: NetnsDir,
    /// The overlays' MTU.
    mtu: u32,
    /// The host's resolv.conf, for the tasks' search domains.
    host_resolv: String,
    dns: DnsServer,
    state: Mutex<State>,
    /// Tasks being wired outside the lock: `retain` must not take their namespaces for
    /// leftovers.
    attaching: StdMutex<HashSet<String>>,
}

struct State {
    outbound: Outbound,
    overlays: HashMap<String, OverlayNs>,
    peers: HashMap<String, NetworkPeers>,
    tasks: HashMap<String, Attached>,
    /// The routing mesh's load balancer, while some service publishes an ingress port.
    balancer: Option<IngressBalancer>,
}

/// A task's namespace as [`NodeNetwork::wire`] leaves it.
struct Wired {
    ns: Netns,
    inside: Netlink,
    /// Made now, not found in place after a restart.
    fresh: bool,
    /// The outbound address found on its interface (a restart).
    found: Option<Ipv4Addr>,
}

/// A task attached under the lock, whose outbound address is still to be put on its interface
/// ([`Self::configure`]), outside the lock.
struct Attachment {
    network: TaskNetwork,
    inside: Netlink,
    ifname: String,
    outbound: Ipv4Addr,
    internal: bool,
}

impl Attachment {
    async fn configure(&self, bip: Ipv4Net) -> Result<(), NetworkError> {
        Outbound::configure(
            &self.inside,
            &self.ifname,
            self.outbound,
            bip,
            self.internal,
        )
        .await
    }
}

/// A task registered as being wired until this is dropped (also when its attach is
/// cancelled half-way).
struct Attaching<'a> {
    set: &'a StdMutex<HashSet<String>>,
    id: String,
}

impl<'a> Attaching<'a> {
    fn register(set: &'a StdMutex<HashSet<String>>, id: &str) -> Self {
        lock_ids(set).insert(id.to_string());
        Self {
            set,
            id: id.to_string(),
        }
    }

    fn ids(set: &StdMutex<HashSet<String>>) -> HashSet<String> {
        lock_ids(set).clone()
    }
}

impl Drop for Attaching<'_> {
    fn drop(&mut self) {
        lock_ids(self.set).remove(&self.id);
    }
}

/// The set or map, even if a panic poisoned its lock (an insert or remove of one entry cannot
/// be left half-done).
fn lock_ids<T>(set: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    set.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The task's interface on the outbound bridge: after one per overlay network, its last.
fn outbound_ifname(task: &Task) -> String {
    format!("eth{}", task.networks.len())
}

/// What a task was given, to undo it, to answer its DNS queries and to balance its traffic.
struct Attached {
    ns: Netns,
    outbound: Ipv4Addr,
    /// Network IDs, in interface order.
    networks: Vec<String>,
    upstream: Vec<SocketAddr>,
    /// Its host-mode ports: (protocol, published, target).
    host_ports: Vec<(&'static str, u16, u16)>,
    /// Its load balancing table and mesh reply rules as last written.
    lb: TaskBalancing,
}

impl NodeNetwork {
    /// Builds the outbound bridge and starts the DNS server on its address.
    pub async fn start(cfg: NetworkConfig) -> Result<Arc<Self>, NetworkError> {
        let host = Netlink::current()?;
        remove_mounted_task_namespaces(&cfg.netns_dir.join("tasks"))?;
        let networks_dir = NetnsDir::new(cfg.netns_dir.join("networks"))?;
        let lb_dir = NetnsDir::new(cfg.netns_dir.join("lb"))?;
        let outbound = Outbound::ensure(&host, &cfg).await?;
        let underlay_mtu = underlay_mtu(&host, cfg.underlay).await;
        let host_resolv = super::host_resolv_conf();
        let listen = SocketAddr::new(IpAddr::V4(outbound.gateway()), cfg.dns_port);
        let dns = DnsServer::start(
            DnsServerConfig::new(vec![listen], dns::host_nameservers(&host_resolv)),
            DnsTable::new(&[], []),
        )
        .await
        .map_err(|e| NetworkError::Dns(format!("cannot serve DNS on {listen}: {e}")))?;
        info!(%listen, mtu = underlay_mtu - VXLAN_OVERHEAD, "task networking ready");
        Ok(Arc::new(Self {
            mtu: underlay_mtu.saturating_sub(VXLAN_OVERHEAD),
            cfg,
            host,
            namespaces: StdMutex::new(HashMap::new()),
            networks_dir,
            lb_dir,
            host_resolv,
            dns,
            attaching: StdMutex::new(HashSet::new()),
            state: Mutex::new(State {
                outbound,
                overlays: HashMap::new(),
                peers: HashMap::new(),
                tasks: HashMap::new(),
                balancer: None,
            }),
        }))
    }

    /// The task-local part of attaching: its namespace (created, or found through its running
    /// container after a restart), loopback up, the outbound veth plugged in and the address
    /// it has on it already, if any. Nothing shared is touched, so this runs outside the lock
    /// and tasks starting together are wired in parallel.
    async fn wire(&self, task: &Task, running: Option<u32>) -> Result<Wired, NetworkError> {
        let (ns, fresh) = self.namespace_of(&task.id, running)?;
        let inside = Netlink::open(&ns)?;
        inside.set_up("lo").await?;
        let ifname = outbound_ifname(task);
        Outbound::wire(&self.host, &self.cfg.bridge, &ns, &task.id, &ifname).await?;
        // A namespace made now has a new veth, with no address to find.
        let found = match fresh {
            true => None,
            false => Outbound::found(&inside, &ifname, self.cfg.bip).await?,
        };
        Ok(Wired {
            ns,
            inside,
            fresh,
            found,
        })
    }

    /// The task's namespace, and whether it was made now: the one held already (attaching
    /// again converges), else the one its running container is in, else a new one.
    fn namespace_of(&self, id: &str, running: Option<u32>) -> Result<(Netns, bool), NetworkError> {
        if let Some(ns) = lock_ids(&self.namespaces).get(id) {
            return Ok((ns.clone(), false));
        }
        let (ns, fresh) = match running {
            Some(pid) => (Netns::of_process(id, pid)?, false),
            None => (Netns::new_held(id)?, true),
        };
        // Made outside the map's lock; should another attach of the task have been quicker,
        // its namespace stays and this one is dropped (and with it freed).
        let held = lock_ids(&self.namespaces)
            .entry(id.to_string())
            .or_insert(ns.clone())
            .clone();
        let fresh = fresh && held == ns;
        Ok((held, fresh))
    }

    /// The shared part of attaching, under the lock: the task's overlays, its outbound
    /// address booked, and the node's balancing and DNS tables with it.
    async fn attach_locked(
        &self,
        st: &mut State,
        task: &Task,
        wired: Wired,
    ) -> Result<Attachment, NetworkError> {
        let Wired {
            ns,
            inside,
            fresh,
            found,
        } = wired;
        let mut addresses = Vec::new();
        let mut networks = Vec::new();
        for (index, att) in task.networks.iter().enumerate() {
            let network = att.network.clone().unwrap_or_default();
            let bad = |what, value: &str| NetworkError::BadAttachment {
                task: task.id.clone(),
                network: network.id.clone(),
                what,
                value: value.to_string(),
            };
            if network.id.is_empty() {
                return Err(bad("ID", ""));
            }
            let address: Ipv4Net = att
                .address
                .parse()
                .map_err(|_| bad("address", &att.address))?;
            if !st.overlays.contains_key(&network.id) {
                let ov = OverlayNs::ensure(&self.networks_dir, &network.id, self.mtu).await?;
                st.overlays.insert(network.id.clone(), ov);
            }
            let State {
                overlays, peers, ..
            } = &mut *st;
            if let Some(ov) = overlays.get_mut(&network.id) {
                ov.attach_task(&ns, &inside, &task.id, index, address, self.mtu)
                    .await?;
                if let Some(p) = peers.get(&network.id) {
                    ov.program(&self.host, &network, p, self.cfg.underlay, self.mtu)
                        .await?;
                }
            }
            addresses.push(address.addr());
            networks.push(network.id.clone());
        }
        let outbound_if = outbound_ifname(task);
        // docker's `--internal`: a task on internal networks only never leaves the node.
        let internal = !task.networks.is_empty()
            && task.networks.iter().all(|a| {
                a.network
                    .as_ref()
                    .and_then(|n| n.spec.as_ref())
                    .is_some_and(|s| s.internal)
            });
        // Attached already (an attach again): the task keeps the address it was given.
        let found = found.or_else(|| st.tasks.get(&task.id).map(|a| a.outbound));
        let outbound = st.outbound.reserve(found, internal)?;
        addresses.push(outbound);
        let dns_config = task.spec.as_ref().and_then(|s| s.dns.as_ref());
        let upstream = dns_config
            .map(|d| {
                d.nameservers
                    .iter()
                    .filter_map(|n| n.parse::<IpAddr>().ok())
                    .map(|ip| SocketAddr::new(ip, 53))
                    .collect()
            })
            .unwrap_or_default();
        st.tasks.insert(
            task.id.clone(),
            Attached {
                ns: ns.clone(),
                outbound,
                networks,
                upstream,
                host_ports: task
                    .endpoint
                    .as_ref()
                    .map(|e| backends::host_ports(&e.ports))
                    .unwrap_or_default(),
                lb: if fresh {
                    TaskBalancing::fresh()
                } else {
                    TaskBalancing::default()
                },
            },
        );
        self.sync_balancing(st).await;
        self.refresh_dns(st);
        Ok(Attachment {
            network: TaskNetwork {
                netns: Some(ns),
                addresses,
                resolv_conf: Some(dns::resolv_conf(
                    IpAddr::V4(st.outbound.gateway()),
                    dns_config,
                    &self.host_resolv,
                )),
            },
            inside,
            ifname: outbound_if,
            outbound,
            internal,
        })
    }

    /// Undoes a failed attachment, so that nothing half-made stays (the task is rejected and
    /// its namespace goes), and gives back why it failed.
    async fn undo_attach(&self, st: &mut State, task_id: &str, e: NetworkError) -> NetworkError {
        if let Err(undo) = self.detach_locked(st, task_id).await {
            warn!(task = %task_id, error = %undo, "undoing a failed attachment failed");
        }
        e
    }

    async fn detach_locked(&self, st: &mut State, task_id: &str) -> Result<(), NetworkError> {
        let attached = st.tasks.remove(task_id);
        st.outbound
            .detach(&self.host, task_id, attached.as_ref().map(|a| a.outbound))
            .await?;
        if let Some(a) = &attached {
            for (index, net) in a.networks.iter().enumerate() {
                if let Some(ov) = st.overlays.get(net) {
                    ov.detach_task(task_id, index).await?;
                }
            }
        }
        // The last handle here: the namespace goes once its container (if any) has exited.
        lock_ids(&self.namespaces).remove(task_id);
        self.sync_balancing(st).await;
        self.drop_unused_overlays(st)?;
        self.refresh_dns(st);
        Ok(())
    }

    /// Overlay namespaces no attached task needs any more go (with their bridge and tunnel).
    fn drop_unused_overlays(&self, st: &mut State) -> Result<(), NetworkError> {
        let used: HashSet<&String> = st
            .tasks
            .values()
            .flat_map(|a| &a.networks)
            .chain(st.balancer.as_ref().map(|b| &b.network_id))
            .collect();
        let unused: Vec<String> = st
            .overlays
            .keys()
            .filter(|id| !used.contains(id))
            .cloned()
            .collect();
        for id in unused {
            st.overlays.remove(&id);
            self.networks_dir.delete(&id)?;
            info!(network = %id, "overlay network removed from this node");
        }
        Ok(())
    }

    /// Brings every load balancer of the node in line with the peer tables and the attached
    /// tasks: the ingress balancer (built while some service publishes an ingress port), the
    /// node's published ports, each task's VIPs and mesh replies. A failure is logged and the
    /// rest goes on: one broken task must not stop the others' traffic.
    async fn sync_balancing(&self, st: &mut State) {
        let mesh = backends::ingress(&st.peers)
            .map(backends::mesh_ports)
            .unwrap_or_default();
        if let Err(e) = self.sync_ingress(st, &mesh).await {
            warn!(error = %e, "programming the routing mesh failed");
        }
        let mut forwards = st
            .balancer
            .as_ref()
            .map(|b| b.node_forwards(&mesh))
            .unwrap_or_default();
        for a in st.tasks.values() {
            for (protocol, published, target) in &a.host_ports {
                forwards.push(PortForward {
                    protocol,
                    port: *published,
                    backends: vec![SocketAddrV4::new(a.outbound, *target)],
                });
            }
        }
        if let Err(e) = st.outbound.set_ports(forwards) {
            warn!(error = %e, "publishing the node's ports failed");
        }
        let State { tasks, peers, .. } = st;
        for (id, a) in tasks.iter_mut() {
            let vips = backends::task_vips(peers, &a.networks);
            let mesh = backends::mesh_return(peers, &a.networks);
            if let Err(e) = a.lb.sync(&a.ns, &vips, mesh).await {
                warn!(task = %id, error = %e, "programming the task's load balancing failed");
            }
        }
    }

    /// The ingress balancer: there while the ingress table gives this node an address and
    /// some service publishes a mesh port (`mesh`), rebuilt if its network or address changed.
    async fn sync_ingress(&self, st: &mut State, mesh: &[PortForward]) -> Result<(), NetworkError> {
        let wanted = backends::ingress(&st.peers).and_then(|p| {
            let address: Ipv4Net = p.local_address.parse().ok()?;
            let network = p.network.clone()?;
            (!mesh.is_empty()).then_some((network, address))
        });
        let keep = match (&st.balancer, &wanted) {
            (Some(b), Some((n, a))) => b.network_id == n.id && b.address == *a,
            _ => false,
        };
        if !keep {
            if let Some(old) = st.balancer.take() {
                let overlay = st.overlays.get(&old.network_id);
                old.remove(&self.lb_dir, &self.host, &mut st.outbound, overlay)
                    .await?;
            }
        }
        let Some((network, address)) = wanted else {
            return Ok(());
        };
        if st.balancer.is_none() {
            if !st.overlays.contains_key(&network.id) {
                let ov = OverlayNs::ensure(&self.networks_dir, &network.id, self.mtu).await?;
                st.overlays.insert(network.id.clone(), ov);
            }
            let State {
                overlays,
                peers,
                outbound,
                ..
            } = &mut *st;
            let Some(ov) = overlays.get_mut(&network.id) else {
                return Ok(());
            };
            if let Some(p) = peers.get(&network.id) {
                ov.program(&self.host, &network, p, self.cfg.underlay, self.mtu)
                    .await?;
            }
            let wiring_id = format!("lb{:08x}", u32::from(self.cfg.bip.addr()));
            let balancer = IngressBalancer::ensure(
                &self.lb_dir,
                &self.host,
                outbound,
                ov,
                &network.id,
                address,
                &wiring_id,
                self.mtu,
            )
            .await?;
            st.balancer = Some(balancer);
        }
        if let Some(b) = st.balancer.as_mut() {
            b.program(mesh)?;
        }
        Ok(())
    }

    fn refresh_dns(&self, st: &State) {
        let peers: Vec<NetworkPeers> = st.peers.values().cloned().collect();
        let clients = st.tasks.values().map(|a| Client {
            addr: IpAddr::V4(a.outbound),
            networks: a.networks.clone(),
            upstream: a.upstream.clone(),
        });
        self.dns.update(DnsTable::new(&peers, clients));
    }
}

impl TaskNetworks for NodeNetwork {
    fn attach<'a>(&'a self, task: &'a Task, running: Option<u32>) -> NetFuture<'a, TaskNetwork> {
        Box::pin(async move {
            let mode = task.spec.as_ref().map_or("", |s| s.network_mode.as_str());
            if mode == shoal_proto::validate::NETWORK_NONE {
                // `--network none`: runc makes an empty namespace (loopback only); no DNS
                // server.
                return Ok(TaskNetwork::default());
            }
            // Registered until the lock is held, so `retain` never sees a half-made namespace.
            let attaching = Attaching::register(&self.attaching, &task.id);
            let wired = self.wire(task, running).await;
            let attachment = {
                let mut st = self.state.lock().await;
                drop(attaching);
                let attached = match wired {
                    Ok(wired) => self.attach_locked(&mut st, task, wired).await,
                    Err(e) => Err(e),
                };
                match attached {
                    Ok(a) => a,
                    Err(e) => return Err(self.undo_attach(&mut st, &task.id, e).await),
                }
            };
            // The task's own namespace again: its address goes on outside the lock, beside
            // the other tasks being attached.
            if let Err(e) = attachment.configure(self.cfg.bip).await {
                let mut st = self.state.lock().await;
                return Err(self.undo_attach(&mut st, &task.id, e).await);
            }
            Ok(attachment.network)
        })
    }

    fn detach<'a>(&'a self, task_id: &'a str) -> NetFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.state.lock().await;
            self.detach_locked(&mut st, task_id).await
        })
    }

    fn set_peers(&self, peers: Vec<NetworkPeers>) -> NetFuture<'_, ()> {
        Box::pin(async move {
            let mut st = self.state.lock().await;
            st.peers = peers
                .into_iter()
                .filter_map(|p| Some((p.network.as_ref()?.id.clone(), p)))
                .collect();
            let State {
                overlays, peers, ..
            } = &mut *st;
            for (id, ov) in overlays.iter_mut() {
                let Some(p) = peers.get(id) else { continue };
                let network = p.network.clone().unwrap_or_default();
                if let Err(e) = ov
                    .program(&self.host, &network, p, self.cfg.underlay, self.mtu)
                    .await
                {
                    warn!(network = %id, error = %e, "programming the overlay's peers failed");
                }
            }
            self.sync_balancing(&mut st).await;
            if let Err(e) = self.drop_unused_overlays(&mut st) {
                warn!(error = %e, "removing unused overlays failed");
            }
            self.refresh_dns(&st);
            Ok(())
        })
    }

    fn retain<'a>(&'a self, keep: &'a [Task]) -> NetFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.state.lock().await;
            let tasks: HashSet<&str> = keep.iter().map(|t| t.id.as_str()).collect();
            let attaching = Attaching::ids(&self.attaching);
            let held: Vec<String> = lock_ids(&self.namespaces).keys().cloned().collect();
            for id in held {
                if !tasks.contains(id.as_str()) && !attaching.contains(&id) {
                    info!(task = %id, "detaching the network of a task no longer assigned");
                    self.detach_locked(&mut st, &id).await?;
                }
            }
            let networks: HashSet<String> = keep
                .iter()
                .flat_map(|t| &t.networks)
                .filter_map(|a| Some(a.network.as_ref()?.id.clone()))
                .collect();
            if st.balancer.is_none() {
                for name in self.lb_dir.list()? {
                    info!(netns = %name, "removing an ingress load balancer no service needs");
                    self.lb_dir.delete(&name)?;
                }
            }
            for name in self.networks_dir.list()? {
                if !networks.contains(&name) && !st.overlays.contains_key(&name) {
                    info!(network = %name, "removing an overlay namespace no task needs");
                    self.networks_dir.delete(&name)?;
                }
            }
            Ok(())
        })
    }
}

/// Task namespaces were bind mounts in `dir` before they were held by descriptors: what an
/// earlier daemon left there goes (a running container keeps its own namespace), and the
/// directory with it.
fn remove_mounted_task_namespaces(dir: &std::path::Path) -> Result<(), NetworkError> {
    if !dir.exists() {
        return Ok(());
    }
    let mounted = NetnsDir::new(dir)?;
    for name in mounted.list()? {
        mounted.delete(&name)?;
    }
    mounted.remove()?;
    Ok(())
}

/// The MTU of the interface holding the underlay address (1500 when it cannot be told).
async fn underlay_mtu(host: &Netlink, underlay: Option<Ipv4Addr>) -> u32 {
    const DEFAULT: u32 = 1500;
    let Some(ip) = underlay else {
        return DEFAULT;
    };
    let Ok(links) = host.links().await else {
        return DEFAULT;
    };
    for link in links {
        let Ok(addresses) = host.addresses(&link.name).await else {
            continue;
        };
        if addresses.iter().any(|a| a.addr() == ip) {
            return link.mtu.unwrap_or(DEFAULT);
        }
    }
    DEFAULT
}
