//! Sites on separate hosts: one network namespace per site, joined by veth pairs to a
//! bridge in the test's namespace (which reaches every site, as an operator's machine
//! would). A cut between two sites is a pair of blackhole routes inside their
//! namespaces; healing deletes them.
//!
//! Needs root and iproute2. [`Hosts::create`] answers `Err` with the reason when the
//! machine cannot make namespaces, so a test can say it skipped and why.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

/// K namespaces on one bridge. Deleted on drop.
#[derive(Debug)]
pub struct Hosts {
    tag: String,
    subnet: u8,
    count: usize,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Hosts {
    /// Makes `count` hosts. `tag` (a few letters) keeps names apart between tests that
    /// run at once; `subnet` picks 10.231.`subnet`.0/24.
    pub fn create(tag: &str, subnet: u8, count: usize) -> Result<Self, String> {
        let hosts = Self { tag: format!("{tag}{}", std::process::id() % 10_000), subnet, count };
        let bridge = hosts.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("10.231.{subnet}.1/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..count {
            let (ns, host_end) = (hosts.ns(i), format!("{}h{i}", hosts.tag));
            ip(&["netns", "add", &ns])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
            ip(&["link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["link", "set", &host_end, "master", &bridge, "up"])?;
            let addr = format!("{}/24", hosts.addr(i));
            ip(&["netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", "eth0", "up"])?;
        }
        Ok(hosts)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    /// Host `i`'s namespace name.
    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 231, self.subnet, 2 + i as u8))
    }

    /// The command prefix that runs a program on host `i`.
    pub fn prefix(&self, i: usize) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns(i)]
    }

    /// Cuts hosts `a` and `b` apart (both directions).
    pub fn cut(&self, a: usize, b: usize) -> Result<(), String> {
        ip(&["netns", "exec", &self.ns(a), "ip", "route", "add", "blackhole", &self.addr(b).to_string()])?;
        ip(&["netns", "exec", &self.ns(b), "ip", "route", "add", "blackhole", &self.addr(a).to_string()])
    }

    /// Undoes [`Self::cut`].
    pub fn heal(&self, a: usize, b: usize) -> Result<(), String> {
        ip(&["netns", "exec", &self.ns(a), "ip", "route", "del", "blackhole", &self.addr(b).to_string()])?;
        ip(&["netns", "exec", &self.ns(b), "ip", "route", "del", "blackhole", &self.addr(a).to_string()])
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 0..self.count {
            // Deleting the namespace deletes its veth end, and so the pair.
            let _ = ip(&["netns", "del", &self.ns(i)]);
            let _ = ip(&["link", "del", &format!("{}h{i}", self.tag)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}
