//! Nodes and pods made of network namespaces, veths, bridges and cgroup v2 directories.
//!
//! Topology: a `net` namespace holds a bridge joining the nodes (198.18.0.N/24, fd18::N/64).
//! Node N has a bridge for its pods (198.18.N.1/24, fd18:N::1/64) and routes to the other nodes'
//! pod ranges; pod K on node N is 198.18.N.K/24 and fd18:N::K/64, with routes to 198.18.0.0/15
//! and fd18::/15 through its node. Service addresses (198.19.x.x, fd19::x) are routed to the
//! node, which has no route for them: only capture makes them reachable.
//!
//! Names carry the creating process id (`mt<pid>-...`), so stale namespaces and cgroups of a
//! crashed run are found and removed, and parallel tests never touch each other's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::command::{require_root, run};

/// Where cgroup v2 is mounted on this machine kind.
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup/unified";
/// Directory where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";
const NAME_PREFIX: &str = "mt";

/// A node: a network namespace (its agent runs there).
#[derive(Debug, Clone)]
pub struct Node {
    /// Node name, e.g. `node1`.
    pub name: String,
    /// 1-based index.
    pub index: u8,
    /// Network namespace name.
    pub netns: String,
    /// Node address on the inter-node bridge.
    pub ip4: Ipv4Addr,
    /// Node IPv6 address.
    pub ip6: Ipv6Addr,
    /// cgroup v2 directory for the node's agent (as the agent's pod would have one).
    pub agent_cgroup: PathBuf,
    pods: u8,
}

impl Node {
    /// Path of the node's network namespace.
    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.netns)
    }

    /// A command that runs `program` inside the node's network namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// A command that runs `program` (the agent) inside the node's network namespace and in
    /// [`Node::agent_cgroup`], created if needed.
    pub fn agent_command(&self, program: &str) -> anyhow::Result<Command> {
        std::fs::create_dir_all(&self.agent_cgroup)
            .with_context(|| format!("creating cgroup {}", self.agent_cgroup.display()))?;
        Ok(in_cgroup_and_netns(
            &self.agent_cgroup,
            &self.netns_path(),
            program,
        ))
    }
}

/// A command that joins `cgroup` (before the program starts, so every socket it makes belongs
/// there) and execs `program` in the network namespace `netns`.
fn in_cgroup_and_netns(cgroup: &Path, netns: &Path, program: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"cg="$1"; ns="$2"; shift 2; echo $$ > "$cg/cgroup.procs" && exec nsenter --net="$ns" -- "$@""#)
        .arg("sh")
        .arg(cgroup)
        .arg(netns)
        .arg(program);
    cmd
}

/// A pod: a network namespace with its own addresses plus a cgroup v2 directory.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Pod name.
    pub name: String,
    /// Kubernetes namespace the pod pretends to be in.
    pub namespace: String,
    /// Node index.
    pub node: u8,
    /// Network namespace name.
    pub netns: String,
    /// cgroup v2 directory.
    pub cgroup: PathBuf,
    /// IPv4 address.
    pub ip4: Ipv4Addr,
    /// IPv6 address.
    pub ip6: Ipv6Addr,
}

impl Pod {
    /// `<namespace>/<name>`.
    pub fn uid(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Path of the pod's network namespace.
    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.netns)
    }

    /// A command that runs `program` as a process of the pod: in its cgroup (joined before the
    /// program starts, so every socket it makes belongs to the pod) and its network namespace.
    pub fn command(&self, program: &str) -> Command {
        in_cgroup_and_netns(&self.cgroup, &self.netns_path(), program)
    }

    /// Both addresses.
    pub fn addresses(&self) -> Vec<IpAddr> {
        vec![self.ip4.into(), self.ip6.into()]
    }
}

/// The cluster; dropping it removes every namespace, cgroup and process it made.
#[derive(Debug)]
pub struct Cluster {
    prefix: String,
    cgroup_root: PathBuf,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    children: Vec<Child>,
}

impl Cluster {
    /// Creates a cluster of `node_count` nodes (1..=9), after removing stale leftovers.
    pub fn new(node_count: u8) -> anyhow::Result<Cluster> {
        require_root()?;
        if !(1..=9).contains(&node_count) {
            bail!("a local cluster has 1 to 9 nodes, not {node_count}");
        }
        remove_stale()?;
        let prefix = format!("{NAME_PREFIX}{}", std::process::id());
        let cgroup_root = Path::new(CGROUP2_ROOT).join(&prefix);
        let mut cluster = Cluster {
            prefix,
            cgroup_root,
            nodes: Vec::new(),
            pods: Vec::new(),
            children: Vec::new(),
        };
        cluster.build_network(node_count)?;
        std::fs::create_dir_all(&cluster.cgroup_root).with_context(|| {
            format!(
                "creating {} (is cgroup v2 mounted at {CGROUP2_ROOT}?)",
                cluster.cgroup_root.display()
            )
        })?;
        Ok(cluster)
    }

    fn net_ns(&self) -> String {
        format!("{}-net", self.prefix)
    }

    fn build_network(&mut self, node_count: u8) -> anyhow::Result<()> {
        let net = self.net_ns();
        add_netns(&net)?;
        ip(&net, &["link", "add", "br0", "type", "bridge"])?;
        ip(&net, &["link", "set", "br0", "up"])?;
        ip(&net, &["addr", "add", "198.18.0.254/24", "dev", "br0"])?;
        for index in 1..=node_count {
            let node = Node {
                name: format!("node{index}"),
                index,
                netns: format!("{}-n{index}", self.prefix),
                ip4: Ipv4Addr::new(198, 18, 0, index),
                ip6: format!("fd18::{index}")
                    .parse()
                    .context("node v6 address")?,
                agent_cgroup: self.cgroup_root.join(format!("agent-node{index}")),
                pods: 0,
            };
            add_netns(&node.netns)?;
            add_veth(&node.netns, &format!("n{index}"), &net)?;
            ip(
                &net,
                &["link", "set", &format!("n{index}"), "master", "br0", "up"],
            )?;
            up_with_addresses(
                &node.netns,
                "eth0",
                &format!("{}/24", node.ip4),
                &format!("{}/64", node.ip6),
            )?;
            ip(&node.netns, &["link", "add", "br0", "type", "bridge"])?;
            up_with_addresses(
                &node.netns,
                "br0",
                &format!("198.18.{index}.1/24"),
                &format!("fd18:{index}::1/64"),
            )?;
            sysctl(&node.netns, "net.ipv4.ip_forward=1")?;
            sysctl(&node.netns, "net.ipv6.conf.all.forwarding=1")?;
            self.nodes.push(node);
        }
        // The control plane reaches every node's pods (a waypoint pod talks to the controller,
        // as waypoint pods reach istiod in Kubernetes).
        for node in &self.nodes {
            let i = node.index;
            ip(
                &net,
                &[
                    "route",
                    "add",
                    &format!("198.18.{i}.0/24"),
                    "via",
                    &node.ip4.to_string(),
                ],
            )?;
        }
        for node in &self.nodes {
            for other in self.nodes.iter().filter(|o| o.index != node.index) {
                let o = other.index;
                ip(
                    &node.netns,
                    &[
                        "route",
                        "add",
                        &format!("198.18.{o}.0/24"),
                        "via",
                        &other.ip4.to_string(),
                    ],
                )?;
                ip(
                    &node.netns,
                    &[
                        "-6",
                        "route",
                        "add",
                        &format!("fd18:{o}::/64"),
                        "via",
                        &other.ip6.to_string(),
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Address of the control plane on the inter-node network (in the `net` namespace).
    pub fn control_plane_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 254)
    }

    /// A command that runs `program` in the `net` namespace, where the control plane runs.
    pub fn control_plane_command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!(
            "--net={}",
            Path::new(NETNS_DIR).join(self.net_ns()).display()
        ))
        .arg("--")
        .arg(program);
        cmd
    }

    /// The inter-node link of node `index` as seen from the `net` namespace (for captures).
    pub fn node_link(&self, index: u8) -> (String, String) {
        (self.net_ns(), format!("n{index}"))
    }

    /// The nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `index` (1-based).
    pub fn node(&self, index: u8) -> anyhow::Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.index == index)
            .with_context(|| format!("no node {index}"))
    }

    /// Adds a pod on node `node` (1-based).
    pub fn add_pod(&mut self, node: u8, namespace: &str, name: &str) -> anyhow::Result<Pod> {
        let position = self
            .nodes
            .iter()
            .position(|n| n.index == node)
            .with_context(|| format!("no node {node}"))?;
        let host = self.nodes[position].clone();
        let k = 10 + host.pods;
        if k > 250 {
            bail!("node {node} is full");
        }
        self.nodes[position].pods += 1;
        let pod = Pod {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            node,
            netns: format!("{}-p{node}-{k}", self.prefix),
            cgroup: self.cgroup_root.join(format!("{namespace}-{name}")),
            ip4: Ipv4Addr::new(198, 18, node, k),
            ip6: format!("fd18:{node}::{k}")
                .parse()
                .context("pod v6 address")?,
        };
        add_netns(&pod.netns)?;
        let host_if = format!("p{k}");
        add_veth(&pod.netns, &host_if, &host.netns)?;
        ip(
            &host.netns,
            &["link", "set", &host_if, "master", "br0", "up"],
        )?;
        up_with_addresses(
            &pod.netns,
            "eth0",
            &format!("{}/24", pod.ip4),
            &format!("{}/64", pod.ip6),
        )?;
        ip(
            &pod.netns,
            &[
                "route",
                "add",
                "198.18.0.0/15",
                "via",
                &format!("198.18.{node}.1"),
            ],
        )?;
        ip(
            &pod.netns,
            &[
                "-6",
                "route",
                "add",
                "fd18::/15",
                "via",
                &format!("fd18:{node}::1"),
            ],
        )?;
        std::fs::create_dir_all(&pod.cgroup)
            .with_context(|| format!("creating cgroup {}", pod.cgroup.display()))?;
        self.pods.push(pod.clone());
        Ok(pod)
    }

    /// Starts `cmd` and keeps the child so it is killed when the cluster is dropped.
    pub fn spawn(&mut self, mut cmd: Command) -> anyhow::Result<u32> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Removes a pod's namespace and cgroup (killing its processes).
    pub fn remove_pod(&mut self, pod: &Pod) -> anyhow::Result<()> {
        kill_cgroup(&pod.cgroup)?;
        del_netns(&pod.netns)?;
        self.pods.retain(|p| p.netns != pod.netns);
        Ok(())
    }

    /// Tears everything down; also done on drop.
    pub fn teardown(&mut self) -> anyhow::Result<()> {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
        let mut first_error = None;
        for pod in std::mem::take(&mut self.pods) {
            if let Err(e) = kill_cgroup(&pod.cgroup).and_then(|()| del_netns(&pod.netns)) {
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = remove_cgroup_tree(&self.cgroup_root) {
            first_error.get_or_insert(e);
        }
        for node in std::mem::take(&mut self.nodes) {
            if let Err(e) = del_netns(&node.netns) {
                first_error.get_or_insert(e);
            }
        }
        let net = self.net_ns();
        if Path::new(NETNS_DIR).join(&net).exists() {
            if let Err(e) = del_netns(&net) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("local cluster teardown: {e:#}");
        }
    }
}

fn ip(netns: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["-n", netns];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// A veth pair: `eth0` in `inner`, `outer_name` in `outer`.
fn add_veth(inner: &str, outer_name: &str, outer: &str) -> anyhow::Result<()> {
    let args = [
        "link", "add", "eth0", "netns", inner, "type", "veth", "peer", "name", outer_name, "netns",
        outer,
    ];
    run("ip", &args).map(|_| ())
}

fn sysctl(netns: &str, setting: &str) -> anyhow::Result<()> {
    run(
        "ip",
        &["netns", "exec", netns, "sysctl", "-q", "-w", setting],
    )
    .map(|_| ())
}

fn add_netns(name: &str) -> anyhow::Result<()> {
    run("ip", &["netns", "add", name])?;
    ip(name, &["link", "set", "lo", "up"]).map(|_| ())
}

fn del_netns(name: &str) -> anyhow::Result<()> {
    if !Path::new(NETNS_DIR).join(name).exists() {
        return Ok(());
    }
    run("ip", &["netns", "del", name]).map(|_| ())
}

/// Gives `dev` in `netns` an IPv4 and an IPv6 address (no duplicate-address detection, so the
/// address is usable at once) and sets it up.
fn up_with_addresses(netns: &str, dev: &str, v4: &str, v6: &str) -> anyhow::Result<()> {
    ip(netns, &["addr", "add", v4, "dev", dev])?;
    ip(netns, &["-6", "addr", "add", v6, "dev", dev, "nodad"])?;
    ip(netns, &["link", "set", dev, "up"])?;
    Ok(())
}

/// Kills every process in a cgroup and removes the directory (bounded wait).
fn kill_cgroup(cgroup: &Path) -> anyhow::Result<()> {
    if !cgroup.exists() {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<&str> = procs.split_whitespace().collect();
        if pids.is_empty() {
            break;
        }
        if cgroup.join("cgroup.kill").exists() {
            let _ = std::fs::write(cgroup.join("cgroup.kill"), "1");
        } else {
            for pid in &pids {
                let _ = run("kill", &["-9", pid]);
            }
        }
        if Instant::now() > deadline {
            bail!("processes {pids:?} in {} did not exit", cgroup.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    rmdir_retry(cgroup)
}

fn rmdir_retry(dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("removing cgroup {}", dir.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn remove_cgroup_tree(root: &Path) -> anyhow::Result<()> {
    if !root.exists() {
        return Ok(());
    }
    let entries = std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))?;
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            kill_cgroup(&entry.path())?;
        }
    }
    kill_cgroup(root)
}

/// The process id in a name of ours (`mt<pid>` or `mt<pid>-...`), if it is one.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = &rest[digits.len()..];
    if digits.is_empty() || !(after.is_empty() || after.starts_with('-')) {
        return None;
    }
    digits.parse().ok()
}

/// Removes namespaces and cgroups left by runs whose process is gone.
pub fn remove_stale() -> anyhow::Result<()> {
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if owner_pid(&name).is_some_and(|pid| !alive(pid)) {
                del_netns(&name)?;
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(CGROUP2_ROOT) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if owner_pid(&name).is_some_and(|pid| !alive(pid)) {
                remove_cgroup_tree(&entry.path())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn owner_pid_only_matches_our_names() {
        assert_eq!(owner_pid("mt123-n1"), Some(123));
        assert_eq!(owner_pid("mt123"), Some(123));
        assert_eq!(owner_pid("mtx-n1"), None);
        assert_eq!(owner_pid("mt12a"), None);
        assert_eq!(owner_pid("cni-1234"), None);
    }
}
