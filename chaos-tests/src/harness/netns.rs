//! netns mode: each datacenter is its own network namespace, joined to one bridge in the root
//! namespace by a veth pair, so that partitioning a datacenter is a link the kernel takes down.
//!
//! Layout for a run of process `P` with `D` datacenters:
//!
//! - bridge `bchPbr` in the root namespace, address `10.213.0.1/16` (the workload and the
//!   harness run in the root namespace and reach every node through it);
//! - per datacenter `d`: namespace `bch-P-dcd` with `lo` up, veth pair `bchPdd` (root side, a
//!   port of the bridge) and `bchPddn` (moved into the namespace), which holds the addresses
//!   `10.213.d.k/16` of the datacenter's nodes.
//!
//! Only namespaces and links this run made are touched, except at start, when leftovers of
//! runs whose process is gone (`bch-*`) are deleted. Everything is removed on drop.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The datacenters' network of one run.
pub struct Netns {
    pid: u32,
    dcs: u8,
    /// What this run made and must remove, in creation order.
    namespaces: Vec<String>,
    links: Vec<String>,
}

/// Runs `ip` with `args`; an error carries its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("run ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip_output(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("run ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether netns mode can work here: root, `ip` present, and a namespace and a bridge can
/// really be made (a container may allow neither).
pub fn available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    if let Err(e) = Command::new("ip").arg("-V").output() {
        return Err(format!("`ip` not found ({e}); install iproute2"));
    }
    let pid = std::process::id();
    let (ns, br) = (format!("bch-{pid}-probe"), format!("bch{pid}probe"));
    let probe =
        ip(&["netns", "add", &ns]).and_then(|()| ip(&["link", "add", &br, "type", "bridge"]));
    let _ = ip(&["link", "del", &br]);
    let _ = ip(&["netns", "del", &ns]);
    probe.map_err(|e| format!("cannot make a network namespace and a bridge: {e:#}"))
}

/// Whether a process with this PID runs the chaos harness now.
pub(crate) fn harness_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| c.trim().starts_with("bongsu-chaos"))
}

/// The PID in a name made by [`Netns`] (`bch-<pid>-dc<d>` or `bch<pid>…`).
pub(crate) fn pid_in(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("bch")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Deletes namespaces and links left by chaos runs whose process is gone.
pub fn clean_stale() -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(list) = ip_output(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if name.starts_with("bch-")
                && pid_in(name).is_some_and(|p| !harness_alive(p))
                && ip(&["netns", "del", name]).is_ok()
            {
                removed.push(format!("namespace {name}"));
            }
        }
    }
    if let Ok(list) = ip_output(&["-o", "link", "show"]) {
        for line in list.lines() {
            // "7: bch123d1@if6: <...>" or "5: bch123br: <...>"
            let Some(name) = line
                .split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            else {
                continue;
            };
            if name.starts_with("bch")
                && pid_in(&name).is_some_and(|p| !harness_alive(p))
                && ip(&["link", "del", &name]).is_ok()
            {
                removed.push(format!("link {name}"));
            }
        }
    }
    removed
}

impl Netns {
    /// The address of node `k` of datacenter `d`.
    pub fn node_ip(d: u8, k: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, d, k)
    }

    /// How many datacenters the network has.
    pub fn dcs(&self) -> u8 {
        self.dcs
    }

    pub fn namespace(&self, d: u8) -> String {
        format!("bch-{}-dc{d}", self.pid)
    }

    fn bridge(&self) -> String {
        format!("bch{}br", self.pid)
    }

    /// The root-namespace end of datacenter `d`'s veth pair: the link a partition takes down.
    fn host_link(&self, d: u8) -> String {
        format!("bch{}d{d}", self.pid)
    }

    fn ns_link(&self, d: u8) -> String {
        format!("bch{}d{d}n", self.pid)
    }

    /// Builds the network for `dcs` datacenters of `nodes_per_dc` nodes each.
    pub fn create(dcs: u8, nodes_per_dc: u8) -> Result<Netns> {
        let mut n = Netns {
            pid: std::process::id(),
            dcs,
            namespaces: Vec::new(),
            links: Vec::new(),
        };
        n.build(nodes_per_dc)
            .context("build the datacenters' network namespaces")?;
        Ok(n)
    }

    fn build(&mut self, nodes_per_dc: u8) -> Result<()> {
        let br = self.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        self.links.push(br.clone());
        ip(&["addr", "add", "10.213.0.1/16", "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for d in 1..=self.dcs {
            let ns = self.namespace(d);
            ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let (host, inner) = (self.host_link(d), self.ns_link(d));
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])?;
            self.links.push(host.clone());
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &host, "master", &br])?;
            ip(&["link", "set", &host, "up"])?;
            for k in 1..=nodes_per_dc {
                ip(&[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/16", Self::node_ip(d, k)),
                    "dev",
                    &inner,
                ])?;
            }
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
        }
        Ok(())
    }

    /// Cuts datacenter `d` off from everything else (the other datacenters and the workload).
    pub fn link_down(&self, d: u8) -> Result<()> {
        ip(&["link", "set", &self.host_link(d), "down"])
    }

    pub fn link_up(&self, d: u8) -> Result<()> {
        ip(&["link", "set", &self.host_link(d), "up"])
    }

    /// Brings every datacenter's link up.
    pub fn heal_all(&self) -> Result<()> {
        for d in 1..=self.dcs {
            self.link_up(d)?;
        }
        Ok(())
    }

    /// A one-line description, for the run's log.
    pub fn describe(&self) -> String {
        format!(
            "bridge {} 10.213.0.1/16, namespaces {}",
            self.bridge(),
            (1..=self.dcs)
                .map(|d| format!(
                    "{} (10.213.{d}.x via {})",
                    self.namespace(d),
                    self.host_link(d)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("chaos: cleanup: {e:#}");
            }
        }
        for link in self.links.iter().rev() {
            if ip_output(&["link", "show", link]).is_ok() {
                if let Err(e) = ip(&["link", "del", link]) {
                    eprintln!("chaos: cleanup: {e:#}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pid_in;

    #[test]
    fn names_carry_the_pid() {
        assert_eq!(pid_in("bch-4242-dc1"), Some(4242));
        assert_eq!(pid_in("bch4242d3n"), Some(4242));
        assert_eq!(pid_in("bch4242br"), Some(4242));
        assert_eq!(pid_in("bchx"), None);
        assert_eq!(pid_in("eth0"), None);
    }
}
