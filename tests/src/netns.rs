//! A private test network: [`TestNetwork`].
//!
//! One Linux bridge in the root network namespace holds the address `198.18.X.1/24`, where X is
//! a /24 of 198.18.0.0/15 (the range RFC 2544 sets aside for benchmarking, so it never clashes
//! with a real network) that no address or route of the machine overlaps yet. Each test host is
//! a network namespace (`ip netns add`) joined to the bridge by a veth pair: `eth0` inside, with
//! `198.18.X.(10+i)/24`, loopback up and a default route via the bridge; the other end enslaved
//! to the bridge. Where bridged frames pass through iptables (br_netfilter) and a Docker engine
//! has set the FORWARD policy to DROP, the hosts could not talk, so an explicit ACCEPT rule for
//! the bridge is inserted as well.
//!
//! Names are `shtb<run>` (bridge), `shtv<run>_<i>` (bridge-side veth) and `shtn<run>_<i>`
//! (netns), where `<run>` is `<pid>_<k>` in base 36: the test process's pid and a per-process
//! counter. That fits Linux's 15-character interface names and lets [`cleanup_stale`] tell the
//! leftovers of a crashed run (its pid is gone) from a network another test is using right now.
//!
//! Dropping the network (also while a test panics) removes the rule, the veths, the bridge and
//! the namespaces. Processes started inside a namespace are not the network's: stop them first
//! (the cluster fixture does), or the namespace lives on, nameless, until they exit.

use std::collections::HashSet;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::daemon::run_with_deadline;
use crate::process::{kill_tree, pids};

/// Name prefixes of the objects this module creates; see the module documentation.
const BRIDGE_TAG: &str = "shtb";
const VETH_TAG: &str = "shtv";
const NETNS_TAG: &str = "shtn";

/// Where `ip netns add` puts its namespace files.
const NETNS_DIR: &str = "/run/netns";

/// Serialises subnet choice and stale cleanup between test processes: without it two runs
/// could both find the same /24 free before either has put its address on a bridge.
const LOCK_FILE: &str = "/run/lock/shoal-test-net.lock";

/// How long one `ip`/`iptables` call or [`TestNetwork::exec`] may take by default.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The first host gets `.10`, leaving the low addresses for the bridge and anything a test
/// wants to add.
const FIRST_HOST_OCTET: u8 = 10;

/// Runs of this process that are alive, so [`cleanup_stale`] does not take a dead run that
/// happened to have our pid for one of ours.
fn live_runs() -> &'static Mutex<HashSet<String>> {
    static RUNS: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    RUNS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A bridge, its hosts' namespaces and veths, and the firewall rule; see the module docs.
pub struct TestNetwork {
    run: String,
    bridge: String,
    /// The network address of the network's /24 within 198.18.0.0/15.
    subnet: Ipv4Addr,
    hosts: Vec<NetHost>,
    /// Whether the FORWARD rule for the bridge was inserted (and so must be deleted).
    forward_rule: bool,
    bridge_created: bool,
}

struct NetHost {
    netns: String,
    veth: String,
}

impl TestNetwork {
    /// Creates the bridge and `n_hosts` connected namespaces; on error, whatever was already
    /// created is removed again.
    pub fn new(n_hosts: usize) -> Result<Self> {
        if n_hosts > usize::from(u8::MAX - FIRST_HOST_OCTET) {
            bail!("a test network has room for at most 245 hosts, not {n_hosts}");
        }
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let run = run_id(std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        live_runs()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run.clone());
        let mut net = TestNetwork {
            bridge: bridge_name(&run),
            run,
            subnet: Ipv4Addr::UNSPECIFIED,
            hosts: Vec::new(),
            forward_rule: false,
            bridge_created: false,
        };
        // From here on an error drops `net`, which removes what was created so far.
        {
            let _lock = lock()?;
            net.subnet = free_subnet()?;
            ip(&[
                "link",
                "add",
                &net.bridge,
                "type",
                "bridge",
                "forward_delay",
                "0",
            ])?;
            net.bridge_created = true;
            let bridge_cidr = format!("{}/24", net.bridge_addr());
            ip(&["addr", "add", &bridge_cidr, "dev", &net.bridge])?;
        }
        ip(&["link", "set", &net.bridge, "up"])?;
        net.allow_forwarding()?;
        for i in 0..n_hosts {
            net.add_host(i)?;
        }
        Ok(net)
    }

    fn add_host(&mut self, i: usize) -> Result<()> {
        let host = NetHost {
            netns: netns_name(&self.run, i),
            veth: veth_name(&self.run, i),
        };
        if host.veth.len() > 15 {
            bail!("interface name {} is longer than 15 characters", host.veth);
        }
        ip(&["netns", "add", &host.netns])?;
        let netns = host.netns.clone();
        let veth = host.veth.clone();
        self.hosts.push(host);
        // The peer is created directly inside the namespace, already called eth0.
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ])?;
        ip(&["link", "set", &veth, "master", &self.bridge])?;
        ip(&["link", "set", &veth, "up"])?;
        let cidr = format!("{}/24", self.host_addr(i));
        let gateway = self.bridge_addr().to_string();
        ip(&["-n", &netns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &netns, "route", "add", "default", "via", &gateway])?;
        // A host's NIC coalesces what it receives (GRO), as real NICs do by default and veths
        // do not: without it every tunnelled packet would be decapsulated on its own, which no
        // real host does.
        let gro = Command::new("ip")
            .args([
                "netns", "exec", &netns, "ethtool", "-K", "eth0", "gro", "on",
            ])
            .output()
            .context("running ethtool (apt-get install ethtool)")?;
        if !gro.status.success() {
            bail!(
                "enabling GRO on {netns}'s eth0 failed: {}",
                String::from_utf8_lossy(&gro.stderr)
            );
        }
        Ok(())
    }

    /// Inserts `FORWARD -i BR -o BR -j ACCEPT` so bridged traffic between the hosts passes
    /// whatever FORWARD policy the machine has (Docker sets DROP, and br_netfilter hands
    /// bridged frames to iptables). Without an iptables binary there is no such policy to
    /// pass: Docker and the other firewalls that set one ship it.
    fn allow_forwarding(&mut self) -> Result<()> {
        if !iptables_available() {
            return Ok(());
        }
        iptables(&["-I", "FORWARD"], &self.bridge)?;
        self.forward_rule = true;
        Ok(())
    }

    /// How many hosts the network has.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether the network has no hosts.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// This run's name part (`<pid>_<k>` in base 36), for naming things that go with it.
    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// The bridge's interface name in the root namespace.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The bridge's address (`198.18.X.1`): the hosts' default gateway, reachable from the root
    /// namespace.
    pub fn bridge_addr(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.subnet.octets();
        Ipv4Addr::new(a, b, c, 1)
    }

    /// The network's /24, e.g. `198.18.3.0`.
    pub fn subnet(&self) -> Ipv4Addr {
        self.subnet
    }

    /// Host `i`'s address on `eth0`.
    pub fn host_addr(&self, i: usize) -> Ipv4Addr {
        self.check(i);
        let [a, b, c, _] = self.subnet.octets();
        // `new` refuses more hosts than fit, so this does not overflow.
        Ipv4Addr::new(a, b, c, FIRST_HOST_OCTET + i as u8)
    }

    /// Host `i`'s namespace name (as `ip netns` knows it).
    pub fn netns_name(&self, i: usize) -> &str {
        self.check(i);
        &self.hosts[i].netns
    }

    /// Host `i`'s namespace file, `/run/netns/NAME`, for `nsenter --net=…`.
    pub fn netns_path(&self, i: usize) -> PathBuf {
        Path::new(NETNS_DIR).join(self.netns_name(i))
    }

    /// The bridge-side end of host `i`'s veth pair.
    pub fn veth(&self, i: usize) -> &str {
        self.check(i);
        &self.hosts[i].veth
    }

    fn check(&self, i: usize) {
        assert!(
            i < self.hosts.len(),
            "host {i} does not exist: the network has {} hosts",
            self.hosts.len()
        );
    }

    /// Isolates host `i`: its bridge-side veth goes down, so nothing reaches it or leaves it
    /// (its `eth0` loses carrier), as when a machine's cable is pulled. Its processes go on.
    pub fn cut(&self, i: usize) -> Result<()> {
        ip(&["link", "set", self.veth(i), "down"])
    }

    /// Undoes [`TestNetwork::cut`].
    pub fn heal(&self, i: usize) -> Result<()> {
        ip(&["link", "set", self.veth(i), "up"])
    }

    /// Whether host `i` is cut off (its bridge-side veth is down).
    pub fn is_cut(&self, i: usize) -> Result<bool> {
        let out = ip_output(&["-o", "link", "show", "dev", self.veth(i)])?;
        // `-o link show` prints the flags as <BROADCAST,MULTICAST,UP,LOWER_UP>.
        let flags = out
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(flags, _)| flags.to_string())
            .unwrap_or_default();
        Ok(!flags.split(',').any(|f| f == "UP"))
    }

    /// A command that runs `program` inside host `i`'s namespace (through `nsenter --net`, so
    /// /sys and the cgroup mounts stay as they are, unlike `ip netns exec`).
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path(i).display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `args` (program and arguments) inside host `i`'s namespace and returns its output,
    /// whatever its exit status; an error if it outlives a minute (it is killed then). Panics
    /// if nsenter cannot be run at all, as every harness command does.
    pub fn exec(&self, i: usize, args: &[&str]) -> Result<Output> {
        self.exec_timeout(i, args, COMMAND_TIMEOUT)
    }

    /// [`TestNetwork::exec`] with a chosen timeout.
    pub fn exec_timeout(&self, i: usize, args: &[&str], timeout: Duration) -> Result<Output> {
        let Some((program, rest)) = args.split_first() else {
            bail!("exec needs a program to run");
        };
        let mut cmd = self.command(i, program);
        cmd.args(rest);
        run_with_deadline(&mut cmd, timeout)
            .with_context(|| format!("{args:?} in host {i}'s netns did not finish in {timeout:?}"))
    }

    /// Runs `f` on a thread that has entered host `i`'s network namespace (setns changes only
    /// the calling thread's), so Rust code can open sockets as the host would: connect to a
    /// daemon's swarm port, fetch a metrics endpoint.
    pub fn run_in<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = self.netns_path(i);
        let ns = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        std::thread::scope(|s| {
            s.spawn(move || -> Result<T> {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering {}", path.display()))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Whether one ping from host `i` to `addr` is answered within a second (busybox's ping,
    /// which Debian's busybox-static provides where iputils-ping may be missing).
    pub fn ping(&self, i: usize, addr: Ipv4Addr) -> Result<bool> {
        let addr = addr.to_string();
        Ok(self
            .exec(i, &["busybox", "ping", "-c", "1", "-W", "1", &addr])?
            .status
            .success())
    }

    /// Removes the firewall rule, veths, bridge and namespaces. Idempotent; also run on drop.
    pub fn teardown(&mut self) -> Result<()> {
        let mut problems = Vec::new();
        if self.forward_rule {
            match iptables(&["-D", "FORWARD"], &self.bridge) {
                Ok(()) => self.forward_rule = false,
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        for host in std::mem::take(&mut self.hosts) {
            // Deleting one end of a veth pair deletes both; the namespace would take its end
            // with it only once no process holds the namespace any more.
            if link_exists(&host.veth) {
                if let Err(e) = ip(&["link", "del", &host.veth]) {
                    problems.push(format!("{e:#}"));
                }
            }
            if Path::new(NETNS_DIR).join(&host.netns).exists() {
                if let Err(e) = ip(&["netns", "del", &host.netns]) {
                    problems.push(format!("{e:#}"));
                }
            }
        }
        if self.bridge_created {
            match ip(&["link", "del", &self.bridge]) {
                Ok(()) => self.bridge_created = false,
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        live_runs()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.run);
        if problems.is_empty() {
            Ok(())
        } else {
            bail!(
                "test network {} left things behind: {}",
                self.run,
                problems.join("; ")
            )
        }
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("{e:#}");
        }
    }
}

/// Removes what crashed runs (their process is gone) left behind: processes still running in
/// their namespaces (killed, with their descendants), FORWARD rules, veths, bridges and
/// namespaces. Networks of live test processes are not touched.
///
/// [`crate::cluster::cleanup_stale`] does this too, and first removes the containers and
/// directories of the test hosts that ran in those namespaces: prefer it where clusters ran.
pub fn cleanup_stale() -> Result<()> {
    cleanup_stale_with(|_, _| {})
}

/// [`cleanup_stale`], calling `on_stale_netns(path, pids)` for each stale namespace with the
/// processes inside it before they are killed, so a caller can first clean up what only it
/// knows about them. Runs under the lock that serialises cleanups and network creation, so
/// once it returns, no earlier cleanup is still half-way through.
pub fn cleanup_stale_with(mut on_stale_netns: impl FnMut(&Path, &[i32])) -> Result<()> {
    let _lock = lock()?;
    // Best effort throughout: a leftover that cannot be removed must not fail the test that
    // happens to start next, and the next run tries again.
    for name in stale_namespaces() {
        let path = Path::new(NETNS_DIR).join(&name);
        let pids = pids_in_netns(&path);
        on_stale_netns(&path, &pids);
        kill_tree(&pids);
        let _ = ip(&["netns", "del", &name]);
    }
    if iptables_available() {
        if let Ok(rules) = command_output(Command::new("iptables").args(["-w", "-S", "FORWARD"])) {
            for rule in rules.lines() {
                // "-A FORWARD -i shtb… -o shtb… -j ACCEPT", as `allow_forwarding` inserted it.
                let words: Vec<&str> = rule.split_whitespace().collect();
                if words.first() != Some(&"-A") {
                    continue;
                }
                let bridge = words
                    .windows(2)
                    .find(|w| w[0] == "-i")
                    .map(|w| w[1])
                    .filter(|b| b.strip_prefix(BRIDGE_TAG).is_some_and(run_is_stale));
                if let Some(bridge) = bridge {
                    let _ = iptables(&["-D", "FORWARD"], bridge);
                }
            }
        }
    }
    if let Ok(links) = ip_output(&["-o", "link", "show"]) {
        for line in links.lines() {
            // "12: shtv1a2b_0@if11: <BROADCAST,…" — the name ends at '@' or ':'.
            let Some(name) = line
                .split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n))
            else {
                continue;
            };
            let stale = if let Some(rest) = name.strip_prefix(VETH_TAG) {
                rest.rsplit_once('_')
                    .is_some_and(|(run, _)| run_is_stale(run))
            } else if let Some(run) = name.strip_prefix(BRIDGE_TAG) {
                run_is_stale(run)
            } else {
                false
            };
            if stale {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
    Ok(())
}

/// The name of run `k` of process `pid`: `<pid>_<k>` in base 36.
pub fn run_id(pid: u32, k: u32) -> String {
    format!("{}_{}", base36(pid), base36(k))
}

/// The bridge of run `run`.
pub fn bridge_name(run: &str) -> String {
    format!("{BRIDGE_TAG}{run}")
}

/// The namespace of host `i` of run `run`.
pub fn netns_name(run: &str, i: usize) -> String {
    format!("{NETNS_TAG}{run}_{}", base36(i as u32))
}

/// The bridge-side veth of host `i` of run `run`.
pub fn veth_name(run: &str, i: usize) -> String {
    format!("{VETH_TAG}{run}_{}", base36(i as u32))
}

/// Names of the namespaces, in `/run/netns`, that belong to crashed runs.
pub fn stale_namespaces() -> Vec<String> {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            name.strip_prefix(NETNS_TAG)
                .and_then(|rest| rest.rsplit_once('_'))
                .is_some_and(|(run, _)| run_is_stale(run))
        })
        .collect();
    names.sort();
    names
}

/// Whether run `<pid>_<k>` (base 36) is not alive: its process is gone, or it is this
/// process's pid but not one of this process's networks (a dead process had our pid).
fn run_is_stale(run: &str) -> bool {
    let Some((pid, k)) = run.split_once('_') else {
        return false;
    };
    let (Some(pid), Some(_)) = (from_base36(pid), from_base36(k)) else {
        return false;
    };
    if pid == std::process::id() {
        return !live_runs()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(run);
    }
    !Path::new("/proc").join(pid.to_string()).exists()
}

/// Processes whose network namespace is the one at `path` (what `ip netns pids` prints).
pub fn pids_in_netns(path: &Path) -> Vec<i32> {
    let Ok(target) = fs::metadata(path) else {
        return Vec::new();
    };
    pids()
        .into_iter()
        .filter(|pid| {
            // stat follows the ns/net magic link to the namespace's nsfs inode.
            fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino())
        })
        .collect()
}

/// The first /24 of 198.18.0.0/17 that overlaps no address or route of the root namespace.
/// 198.18.0.0/24 comes last, since a test written by hand most likely uses it. The hosts' own
/// network stays below 198.18.128.0/17, the pool test swarms give their networks
/// (`daemon::TEST_ADDR_POOL`).
fn free_subnet() -> Result<Ipv4Addr> {
    let mut used = Vec::new();
    for line in ip_output(&["-o", "-4", "addr", "show"])?.lines() {
        // "4: eth0    inet 192.0.2.2/24 brd …"
        if let Some(cidr) = line.split_whitespace().skip_while(|w| *w != "inet").nth(1) {
            used.extend(parse_cidr(cidr));
        }
    }
    for line in ip_output(&["-4", "route", "show", "table", "all"])?.lines() {
        // "198.18.3.0/24 dev shtb… proto kernel …", "local 198.18.3.1 dev …", "default via …"
        let mut words = line.split_whitespace();
        let mut dest = words.next().unwrap_or_default();
        if matches!(
            dest,
            "local" | "broadcast" | "unicast" | "multicast" | "blackhole"
        ) {
            dest = words.next().unwrap_or_default();
        }
        used.extend(parse_cidr(dest));
    }
    // Routes shorter than the whole range (default, a VPN's 0.0.0.0/1) lose to our more
    // specific one and are no conflict.
    used.retain(|(_, len)| *len >= 15);
    for n in (1..128u32).chain([0]) {
        let candidate = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (n << 8);
        if !used
            .iter()
            .any(|(net, len)| overlaps(candidate, 24, u32::from(*net), *len))
        {
            return Ok(Ipv4Addr::from(candidate));
        }
    }
    bail!("every /24 of 198.18.0.0/15 is in use on this machine; remove stale test networks")
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u32)> {
    match s.split_once('/') {
        Some((addr, len)) => Some((addr.parse().ok()?, len.parse().ok().filter(|l| *l <= 32)?)),
        None => Some((s.parse().ok()?, 32)),
    }
}

fn overlaps(a: u32, a_len: u32, b: u32, b_len: u32) -> bool {
    let len = a_len.min(b_len);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a & mask == b & mask
}

fn lock() -> Result<Flock<fs::File>> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .with_context(|| format!("opening {LOCK_FILE}"))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {LOCK_FILE}"))
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn iptables_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("iptables")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// `iptables ACTION… -i BR -o BR -j ACCEPT`; `-w` waits for the xtables lock that Docker and
/// parallel runs may hold.
fn iptables(action: &[&str], bridge: &str) -> Result<()> {
    command_output(
        Command::new("iptables")
            .arg("-w")
            .args(action)
            .args(["-i", bridge, "-o", bridge, "-j", "ACCEPT"]),
    )
    .map(drop)
}

fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).map(drop)
}

fn ip_output(args: &[&str]) -> Result<String> {
    command_output(Command::new("ip").args(args))
}

/// Runs `cmd`, returning stdout, or an error with its stderr if it fails.
fn command_output(cmd: &mut Command) -> Result<String> {
    let out = run_with_deadline(cmd, COMMAND_TIMEOUT)
        .with_context(|| format!("{cmd:?} did not finish within {COMMAND_TIMEOUT:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

fn from_base36(s: &str) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    u32::from_str_radix(s, 36).ok().filter(|_| {
        // from_str_radix accepts upper case and a sign; our names have neither.
        s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_round_trips() {
        for n in [0, 1, 35, 36, 4_194_304, u32::MAX] {
            assert_eq!(from_base36(&base36(n)), Some(n));
        }
        assert_eq!(from_base36(""), None);
        assert_eq!(from_base36("+1"), None);
        assert_eq!(from_base36("A"), None);
    }

    #[test]
    fn longest_names_fit_in_an_interface_name() {
        // The largest pid Linux allows, and generous counters.
        let run = format!("{}_{}", base36(4_194_304), base36(1295));
        assert!(format!("{VETH_TAG}{run}_{}", base36(244)).len() <= 15);
        assert!(format!("{BRIDGE_TAG}{run}").len() <= 15);
    }

    #[test]
    fn overlap_compares_the_shorter_prefix() {
        let net = |s: &str| u32::from(s.parse::<Ipv4Addr>().expect("test address"));
        assert!(overlaps(net("198.18.3.0"), 24, net("198.18.3.7"), 32));
        assert!(overlaps(net("198.18.3.0"), 24, net("198.18.0.0"), 15));
        assert!(!overlaps(net("198.18.3.0"), 24, net("198.18.4.0"), 24));
        assert!(overlaps(net("1.2.3.0"), 24, net("0.0.0.0"), 0));
    }

    #[test]
    fn runs_of_dead_processes_are_stale() {
        // pid_max is at most 2^22, so this pid cannot exist.
        assert!(run_is_stale(&format!("{}_0", base36(5_000_000))));
        // Our own pid, but no network of ours: left by a dead process that had our pid.
        assert!(run_is_stale(&format!("{}_zz", base36(std::process::id()))));
        assert!(!run_is_stale("not-a-run"));
        assert!(!run_is_stale(&format!("{}_0", base36(1))));
    }

    #[test]
    fn parse_cidr_reads_addresses_and_prefixes() {
        assert_eq!(
            parse_cidr("198.18.3.0/24"),
            Some((Ipv4Addr::new(198, 18, 3, 0), 24))
        );
        assert_eq!(
            parse_cidr("198.18.3.1"),
            Some((Ipv4Addr::new(198, 18, 3, 1), 32))
        );
        assert_eq!(parse_cidr("default"), None);
        assert_eq!(parse_cidr("1.2.3.4/33"), None);
    }
}
