//! Linux network namespaces on a bridge, for real partitions between real supervisors (root
//! only, as CI runs; a test without root or `ip` fails, it never skips).
//!
//! `Net::new(n)` makes namespaces `0..n`, each with a veth pair into one bridge and the address
//! `addr(i)` on one /24. `cut(i)` sets the bridge side of namespace i's veth down (the
//! `ip link set ... down` of a partition): i is alone. `partition(side)` moves the bridge sides
//! of `side` to a second bridge: the two sides each stay connected inside, not across. Every
//! change is checked with real TCP connects in both directions before it returns.
//!
//! Names carry the owning test process's pid (hex) and a counter. `Drop` removes everything a
//! `Net` made, also while its test panics; every new `Net` first sweeps what processes that no
//! longer exist left behind (a test run killed with -9), killing whatever still runs there.
//!
//! The bridges have no address and the root namespace gets no route, so every `Net` uses the
//! same subnet without clashing with another `Net` or the host's networks. The test process
//! reaches a namespace with a thread moved into it (`in_netns`, setns(2)), which also works while
//! the namespace is cut off.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::ring::args;
use super::sup::Sup;
use super::wait::wait_for;

/// Every name starts with this, then the owner's pid in hex and a `-`.
const PREFIX: &str = "wrn";
const SUBNET: &str = "10.213.0";
/// A connect that takes longer than this counts as dropped.
const PROBE: Duration = Duration::from_secs(1);
/// How long a change may take to show on a loaded machine before the test fails.
const SETTLE: Duration = Duration::from_secs(30);
/// Interface names are at most 15 bytes: `wrn` + 6 hex (pid_max is at most 2^22) + `-` + 3
/// hex + `h` + 1 hex.
const MAX_NETS: u32 = 0x1000;
const MAX_NAMESPACES: usize = 16;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Namespaces on bridges, removed on drop.
pub struct Net {
    tag: String,
    n: usize,
    links: Mutex<Links>,
}

/// What is cut and which side each namespace is on.
#[derive(Clone)]
struct Links {
    cut: Vec<bool>,
    minority: Vec<bool>,
}

impl Links {
    fn connected(&self, a: usize, b: usize) -> bool {
        !self.cut[a] && !self.cut[b] && self.minority[a] == self.minority[b]
    }
}

impl Net {
    /// `n` namespaces on one bridge, all reaching each other (checked). Panics with the reason if
    /// this is not root or `ip` is missing.
    pub fn new(n: usize) -> Net {
        preflight();
        sweep();
        let net = Net::create(std::process::id(), n);
        net.settle("creation");
        net
    }

    /// Makes the namespaces and bridges of a `Net` owned by pid `owner` and leaves them behind
    /// (as a killed test run would); returns their names. For the sweep's own test.
    pub fn abandon(owner: u32, n: usize) -> Vec<String> {
        preflight();
        let net = Net::create(owner, n);
        let names = net.names();
        std::mem::forget(net);
        names
    }

    fn create(owner: u32, n: usize) -> Net {
        assert!((1..=MAX_NAMESPACES).contains(&n), "1 to {MAX_NAMESPACES} namespaces, not {n}");
        let count = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(count < MAX_NETS, "more than {MAX_NETS} nets in one process");
        // The guard exists before anything is made, so a failure half-way is cleaned up too.
        let net = Net {
            tag: format!("{PREFIX}{owner:x}-{count:x}"),
            n,
            links: Mutex::new(Links { cut: vec![false; n], minority: vec![false; n] }),
        };
        for br in [net.bridge(false), net.bridge(true)] {
            // No netfilter on bridged frames: a host firewall (docker's FORWARD drop) must not
            // decide what crosses.
            let off = ["nf_call_iptables", "0", "nf_call_ip6tables", "0", "nf_call_arptables", "0"];
            ip(&[&["link", "add", &br, "type", "bridge"], &off[..]].concat());
            ip(&["link", "set", &br, "up"]);
        }
        for i in 0..n {
            let (ns, host, peer) = (net.ns(i), net.host_veth(i), format!("{}p{i:x}", net.tag));
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
            ip(&["link", "set", &peer, "netns", &ns]);
            ip(&["-n", &ns, "link", "set", &peer, "name", "eth0"]);
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", net.addr(i)), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["link", "set", &host, "master", &net.bridge(false), "up"]);
        }
        net
    }

    pub fn len(&self) -> usize {
        self.n
    }

    /// Namespace i's name (for `ip netns exec`).
    pub fn ns(&self, i: usize) -> String {
        assert!(i < self.n, "namespace {i} of {}", self.n);
        format!("{}-{i:x}", self.tag)
    }

    /// Namespace i's address on the bridge.
    pub fn addr(&self, i: usize) -> String {
        assert!(i < self.n, "namespace {i} of {}", self.n);
        format!("{SUBNET}.{}", 10 + i)
    }

    fn host_veth(&self, i: usize) -> String {
        format!("{}h{i:x}", self.tag)
    }

    fn bridge(&self, minority: bool) -> String {
        format!("{}{}", self.tag, if minority { "b" } else { "a" })
    }

    /// Every namespace (first, in order) and root-namespace interface this `Net` made.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = (0..self.n).map(|i| self.ns(i)).collect();
        v.extend((0..self.n).map(|i| self.host_veth(i)));
        v.extend([self.bridge(false), self.bridge(true)]);
        v
    }

    /// Sets namespace i's veth down on the bridge side: nothing reaches it or leaves it.
    pub fn cut(&self, i: usize) {
        self.links.lock().unwrap().cut[i] = true;
        ip(&["link", "set", &self.host_veth(i), "down"]);
        self.settle(&format!("cut({i})"));
    }

    /// Undoes `cut(i)`.
    pub fn heal(&self, i: usize) {
        self.links.lock().unwrap().cut[i] = false;
        ip(&["link", "set", &self.host_veth(i), "up"]);
        self.settle(&format!("heal({i})"));
    }

    /// Splits the network in two: `side` on a bridge of its own, the rest on the first. Members
    /// of a side still reach each other.
    pub fn partition(&self, side: &[usize]) {
        for &i in side {
            self.links.lock().unwrap().minority[i] = true;
            ip(&["link", "set", &self.host_veth(i), "master", &self.bridge(true)]);
        }
        self.settle(&format!("partition({side:?})"));
    }

    /// Undoes `partition`: everyone back on the first bridge.
    pub fn rejoin(&self) {
        for i in 0..self.n {
            if std::mem::take(&mut self.links.lock().unwrap().minority[i]) {
                ip(&["link", "set", &self.host_veth(i), "master", &self.bridge(false)]);
            }
        }
        self.settle("rejoin");
    }

    /// Whether a TCP connect from namespace `from` to a listener in namespace `to` succeeds.
    pub fn reachable(&self, from: usize, to: usize) -> bool {
        let addr = self.addr(to);
        let listener = in_netns(&self.ns(to), || TcpListener::bind((addr.as_str(), 0)))
            .unwrap_or_else(|e| panic!("listening on {addr} in {}: {e}", self.ns(to)));
        let target: SocketAddr = listener.local_addr().unwrap();
        in_netns(&self.ns(from), || TcpStream::connect_timeout(&target, PROBE).is_ok())
    }

    /// Waits until every ordered pair of namespaces is reachable exactly when it should be.
    fn settle(&self, what: &str) {
        let want = self.links.lock().unwrap().clone();
        let pairs: Vec<(usize, usize)> =
            (0..self.n).flat_map(|a| (0..self.n).filter(move |b| *b != a).map(move |b| (a, b))).collect();
        let mut wrong = Vec::new();
        let settled = wait_for(SETTLE, || {
            let got: Vec<bool> = std::thread::scope(|s| {
                let probes: Vec<_> =
                    pairs.iter().map(|&(a, b)| s.spawn(move || self.reachable(a, b))).collect();
                probes.into_iter().map(|p| p.join().unwrap()).collect()
            });
            wrong = pairs
                .iter()
                .zip(got)
                .filter(|((a, b), g)| *g != want.connected(*a, *b))
                .map(|((a, b), g)| format!("{a}->{b} {}", if g { "passes" } else { "is dropped" }))
                .collect();
            wrong.is_empty().then_some(())
        });
        assert!(settled.is_some(), "after {what} the bridge still disagrees: {wrong:?}");
    }

    /// Starts `warren sup run` in namespace i on `addr(i)` (ports chosen by the kernel); data in
    /// `dir/data-ns{i}`, log in `dir/sup-ns{i}.log`.
    pub fn start_sup(&self, i: usize, dir: &Path, extra: Vec<String>, envs: Vec<(String, String)>) -> Sup {
        let on = format!("{}:0", self.addr(i));
        Sup::start_in(Some(&self.ns(i)), dir, &format!("ns{i}"), &on, &on, extra, envs)
    }

    /// One supervisor per namespace, all with `extra`; namespace 0's is the seed the others
    /// `--peer` with.
    pub fn start_ring(&self, dir: &Path, extra: &[String], envs: &[(String, String)]) -> Vec<Sup> {
        let mut sups = vec![self.start_sup(0, dir, extra.to_vec(), envs.to_vec())];
        let seed = sups[0].gossip.clone();
        for i in 1..self.n {
            let mut a = extra.to_vec();
            a.extend(args(&["--peer", &seed]));
            sups.push(self.start_sup(i, dir, a, envs.to_vec()));
        }
        sups
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let namespaces: Vec<String> = (0..self.n).map(|i| self.ns(i)).collect();
        let mut links: Vec<String> = (0..self.n).map(|i| self.host_veth(i)).collect();
        links.extend([self.bridge(false), self.bridge(true)]);
        remove(&namespaces, &links);
    }
}

/// Runs `f` on a thread inside network namespace `ns` (setns(2) moves only that thread).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns(2) with a namespace file held open for the call; no memory involved.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// iproute2's `ip`, wherever this system keeps it.
pub fn ip_path() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("ip")
}

/// Fails the test, with the reason, where namespaces cannot be made.
fn preflight() {
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "network-namespace tests need root (CI runs them as root); this runs as uid {euid}. They fail \
         rather than skip, so a partition test never passes unrun."
    );
    let version = Command::new(ip_path()).arg("-V").output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "network-namespace tests need iproute2's `ip` (looked for {}): install iproute2",
        ip_path()
    );
}

/// Runs `ip ARGS`; panics with its stderr if it fails.
fn ip(a: &[&str]) {
    let out = Command::new(ip_path()).args(a).output().expect("running ip");
    assert!(out.status.success(), "ip {}: {}", a.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}

/// Runs `ip ARGS` for its output; None if it fails (cleanup never panics).
fn ip_output(a: &[&str]) -> Option<String> {
    let out = Command::new(ip_path()).args(a).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every network namespace and root-namespace interface now present, by name.
pub fn existing() -> Vec<String> {
    let namespaces = ip_output(&["netns", "list"]).unwrap_or_default();
    let links = ip_output(&["-o", "link", "show"]).unwrap_or_default();
    // `ip netns list` prints `name (id: 3)`; `ip -o link` prints `7: name@peer: <FLAGS> ...`.
    let mut v: Vec<String> =
        namespaces.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect();
    v.extend(
        links
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string()),
    );
    v
}

/// The pids of the processes running in namespace `ns`.
pub fn pids(ns: &str) -> Vec<String> {
    ip_output(&["netns", "pids", ns]).unwrap_or_default().lines().map(|l| l.trim().to_string()).collect()
}

/// The pid of the test process that made `name`, if it is one of ours.
fn owner(name: &str) -> Option<u32> {
    let (pid, _) = name.strip_prefix(PREFIX)?.split_once('-')?;
    u32::from_str_radix(pid, 16).ok()
}

/// Removes what test processes that no longer exist left behind.
fn sweep() {
    let dead = |name: &String| owner(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
    let stale: Vec<String> = existing().into_iter().filter(dead).collect();
    let namespaces: Vec<String> =
        stale.iter().filter(|n| Path::new(&format!("/run/netns/{n}")).exists()).cloned().collect();
    let links: Vec<String> = stale.into_iter().filter(|n| !namespaces.contains(n)).collect();
    remove(&namespaces, &links);
}

/// Kills what runs in `namespaces`, deletes `links` (a veth takes its peer along), then the
/// namespaces. Errors are ignored: another sweep may have been first.
fn remove(namespaces: &[String], links: &[String]) {
    for ns in namespaces {
        for pid in pids(ns) {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) of a process inside a namespace a test of ours made.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    for link in links {
        let _ = ip_output(&["link", "del", link]);
    }
    for ns in namespaces {
        let _ = ip_output(&["netns", "del", ns]);
    }
}
