//! Sites on separate hosts: one network namespace per site, joined by veth pairs to a
//! bridge in the test's namespace (which reaches every site, as an operator's machine
//! would). Faults:
//! - a cut between two sites is a pair of blackhole routes inside their namespaces
//!   (healing deletes them); a partition cuts every pair across two groups;
//! - loss and delay are a `tc netem` queue on a host's interface, so they apply to
//!   everything the host sends (without netem in the kernel, an iptables rule queues
//!   what the host sends to a [`Delayer`] thread in its namespace, which drops and
//!   delays it);
//! - [`Tmpfs`] is a small filesystem for a data dir that fills up.
//!
//! Needs root and iproute2 (tc is part of it). [`Hosts::create`] answers `Err` with the
//! reason when the machine cannot make namespaces, so a test can say it skipped and
//! why. Each scenario owns a subnet (10.231.`subnet`.0/24); two test runs at once on one
//! machine would fight over them (a new run clears what it finds on its subnet as left
//! over from a killed run).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::delay::{self, Delayer};

/// K namespaces on one bridge. Deleted on drop.
#[derive(Debug)]
pub struct Hosts {
    tag: String,
    subnet: u8,
    count: usize,
    /// Per host, its delay thread where netem is missing.
    delayers: Mutex<BTreeMap<usize, Delayer>>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Hosts {
    /// Makes `count` hosts. `tag` (a few letters) keeps names apart between tests that
    /// run at once; `subnet` picks 10.231.`subnet`.0/24.
    pub fn create(tag: &str, subnet: u8, count: usize) -> Result<Self, String> {
        remove_stale(subnet);
        let tag = format!("{tag}{}", std::process::id() % 10_000);
        let hosts = Self { tag, subnet, count, delayers: Mutex::default() };
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

    /// Cuts every host of `left` from every host of `right`.
    pub fn partition(&self, left: &[usize], right: &[usize]) -> Result<(), String> {
        left.iter().flat_map(|a| right.iter().map(move |b| (*a, *b))).try_for_each(|(a, b)| self.cut(a, b))
    }

    /// Undoes [`Self::partition`].
    pub fn heal_partition(&self, left: &[usize], right: &[usize]) -> Result<(), String> {
        left.iter().flat_map(|a| right.iter().map(move |b| (*a, *b))).try_for_each(|(a, b)| self.heal(a, b))
    }

    /// Everything host `i` sends is lost with probability `loss_percent` and delayed by
    /// `delay_ms` (replacing any earlier setting), with a `tc netem` queue — or, on a
    /// kernel built without netem (`CONFIG_NET_SCH_NETEM`), an iptables `NFQUEUE` rule
    /// and a [`Delayer`] thread. Answers how: `"netem"` or `"nfqueue"`.
    pub fn impair(&self, i: usize, loss_percent: u32, delay_ms: u32) -> Result<&'static str, String> {
        self.unimpair(i)?;
        let (loss, delay) = (format!("{loss_percent}%"), format!("{delay_ms}ms"));
        let netem = ip(&[
            "netns",
            "exec",
            &self.ns(i),
            "tc",
            "qdisc",
            "replace",
            "dev",
            "eth0",
            "root",
            "netem",
            "loss",
            &loss,
            "delay",
            &delay,
        ]);
        match netem {
            Ok(()) => Ok("netem"),
            Err(e) if e.contains("qdisc kind is unknown") => {
                // The queue is bound before the rule sends packets to it (an NFQUEUE rule
                // with nobody listening drops everything).
                let delay = Duration::from_millis(delay_ms.into());
                let delayer = Delayer::start(&self.ns(i), delay, f64::from(loss_percent) / 100.0)
                    .map_err(|why| format!("no netem qdisc ({e}), and no NFQUEUE: {why}"))?;
                self.delayers.lock().unwrap_or_else(PoisonError::into_inner).insert(i, delayer);
                let queue = delay::QUEUE.to_string();
                ip(&[
                    "netns",
                    "exec",
                    &self.ns(i),
                    "iptables",
                    "-A",
                    "OUTPUT",
                    "-o",
                    "eth0",
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    &queue,
                ])?;
                Ok("nfqueue")
            }
            Err(e) => Err(e),
        }
    }

    /// Undoes [`Self::impair`] (packets still held are let go).
    pub fn unimpair(&self, i: usize) -> Result<(), String> {
        let _ = ip(&["netns", "exec", &self.ns(i), "tc", "qdisc", "del", "dev", "eth0", "root"]);
        let rules = ip(&["netns", "exec", &self.ns(i), "iptables", "-F", "OUTPUT"]);
        self.delayers.lock().unwrap_or_else(PoisonError::into_inner).remove(&i);
        rules
    }

    /// Packets host `i`'s delay thread let through and dropped so far (none without one).
    pub fn delayed(&self, i: usize) -> (u64, u64) {
        let delayers = self.delayers.lock().unwrap_or_else(PoisonError::into_inner);
        delayers.get(&i).map_or((0, 0), |d| {
            (d.counts().passed.load(Ordering::Relaxed), d.counts().dropped.load(Ordering::Relaxed))
        })
    }
}

/// Removes what a test killed before its clean-up left on `subnet` (its bridge holds
/// 10.231.`subnet`.1; its namespaces share the bridge's tag), so routes do not clash.
fn remove_stale(subnet: u8) {
    let Ok(out) = Command::new("ip").args(["-o", "-4", "addr", "show"]).output() else { return };
    let gateway = format!("10.231.{subnet}.1/");
    for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&gateway)) {
        let Some(tag) = line.split_whitespace().nth(1).and_then(|dev| dev.strip_suffix("br")) else {
            continue;
        };
        if let Ok(list) = Command::new("ip").args(["netns", "list"]).output() {
            for ns in
                String::from_utf8_lossy(&list.stdout).lines().filter_map(|l| l.split_whitespace().next())
            {
                if ns.strip_prefix(tag).is_some_and(|rest| rest.starts_with('n')) {
                    let _ = ip(&["netns", "del", ns]);
                }
            }
        }
        let _ = ip(&["link", "del", &format!("{tag}br")]);
    }
}

/// A tmpfs of a set size mounted on a directory (made if missing). Unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    /// Mounts `size_kib` KiB of tmpfs on `dir`. Needs root.
    pub fn mount(dir: &std::path::Path, size_kib: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (size, path) = (format!("size={size_kib}k"), dir.display().to_string());
        run("mount", &["-t", "tmpfs", "-o", &size, "tmpfs", &path])?;
        Ok(Self { dir: dir.to_owned() })
    }

    /// Where it is mounted.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a site still holding files open must not keep the mount alive.
        let _ = run("umount", &["-l", &self.dir.display().to_string()]);
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
