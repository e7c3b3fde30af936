//! The test network: one Linux network namespace per node, each joined by
//! a veth pair to a bridge in a hub namespace, which the harness itself
//! enters to act as the clients. Addresses are in 10.213.0.0/24 and exist
//! only inside these namespaces. Partitions are blackhole routes inside
//! the node namespaces; delay and loss are `tc netem` on both ends of a
//! node's link. Everything is removed when the `Net` is dropped, and
//! leftovers of an earlier run are removed before a new one starts.

use std::collections::BTreeSet;
use std::process::Command;

const HUB: &str = "sychaos-hub";
const BRIDGE: &str = "sychaosbr";
const SUBNET: &str = "10.213.0";

fn node_ns(i: usize) -> String {
    format!("sychaos-n{i}")
}

fn hub_veth(i: usize) -> String {
    format!("sychv{i}")
}

/// Runs `ip`/`tc` with `args`; an error names the command and its output.
fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces and links of one run.
pub struct Net {
    nodes: usize,
    /// Blackhole routes in place: (in the namespace of, to the address of).
    cuts: BTreeSet<(usize, usize)>,
    /// Nodes with netem on their link.
    netem: BTreeSet<usize>,
    /// A slow link was made with `tbf` instead of netem.
    tbf: bool,
}

impl Net {
    /// Whether namespaces can be made here (root, `ip` present).
    pub fn available() -> bool {
        // SAFETY: geteuid has no preconditions.
        #[allow(unsafe_code)]
        let root = unsafe { libc::geteuid() } == 0;
        root && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Creates the hub with its bridge and `nodes` node namespaces.
    pub fn create(nodes: usize) -> Result<Net, String> {
        remove_leftovers();
        let net = Net {
            nodes,
            cuts: BTreeSet::new(),
            netem: BTreeSet::new(),
            tbf: false,
        };
        run("ip", &["netns", "add", HUB])?;
        run("ip", &["-n", HUB, "link", "set", "lo", "up"])?;
        run("ip", &["-n", HUB, "link", "add", BRIDGE, "type", "bridge"])?;
        run(
            "ip",
            &[
                "-n",
                HUB,
                "addr",
                "add",
                &format!("{SUBNET}.254/24"),
                "dev",
                BRIDGE,
            ],
        )?;
        run("ip", &["-n", HUB, "link", "set", BRIDGE, "up"])?;
        for i in 0..nodes {
            let ns = node_ns(i);
            let hv = hub_veth(i);
            run("ip", &["netns", "add", &ns])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            run(
                "ip",
                &[
                    "-n", HUB, "link", "add", &hv, "type", "veth", "peer", "name", "eth0", "netns",
                    &ns,
                ],
            )?;
            run("ip", &["-n", HUB, "link", "set", &hv, "master", BRIDGE])?;
            run("ip", &["-n", HUB, "link", "set", &hv, "up"])?;
            run(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/24", Net::ip(i)),
                    "dev",
                    "eth0",
                ],
            )?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    /// The address of node `i`.
    pub fn ip(i: usize) -> String {
        format!("{SUBNET}.{}", i + 1)
    }

    /// The namespace of node `i`.
    pub fn namespace(i: usize) -> String {
        node_ns(i)
    }

    /// Moves the calling thread (and the threads it starts afterwards) into
    /// the hub namespace, where the nodes' addresses are reachable. Call it
    /// before any other thread exists.
    pub fn enter_hub(&self) -> Result<(), String> {
        let path = format!("/var/run/netns/{HUB}");
        let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace file descriptor this function holds
        // open; it changes only the calling thread's network namespace.
        #[allow(unsafe_code)]
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if r != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Cuts `a` and `b` off from each other (both directions).
    pub fn cut(&mut self, a: usize, b: usize) -> Result<(), String> {
        for (from, to) in [(a, b), (b, a)] {
            if self.cuts.insert((from, to)) {
                run(
                    "ip",
                    &[
                        "-n",
                        &node_ns(from),
                        "route",
                        "add",
                        "blackhole",
                        &format!("{}/32", Net::ip(to)),
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Cuts every node of `side` off from every node not in it.
    pub fn split(&mut self, side: &[usize]) -> Result<(), String> {
        for a in side.iter().copied() {
            for b in (0..self.nodes).filter(|b| !side.contains(b)) {
                self.cut(a, b)?;
            }
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<(), String> {
        let cuts = std::mem::take(&mut self.cuts);
        let mut first_error = Ok(());
        for (from, to) in cuts {
            let r = run(
                "ip",
                &[
                    "-n",
                    &node_ns(from),
                    "route",
                    "del",
                    "blackhole",
                    &format!("{}/32", Net::ip(to)),
                ],
            );
            if first_error.is_ok() {
                first_error = r;
            }
        }
        first_error
    }

    /// Delay (with jitter) and loss on both ends of node `i`'s link, with
    /// `tc netem`. Where the kernel has no netem (`sch_netem`), a token
    /// bucket (`tbf`) slows the link instead: its rate gives a queueing
    /// delay of about `delay_ms` for a 64 KiB burst, and packets that would
    /// wait longer than twice that are dropped.
    pub fn netem(
        &mut self,
        i: usize,
        delay_ms: u32,
        jitter_ms: u32,
        loss_pct: u32,
    ) -> Result<(), String> {
        self.netem.insert(i);
        let (delay, jitter, loss) = (
            format!("{delay_ms}ms"),
            format!("{jitter_ms}ms"),
            format!("{loss_pct}%"),
        );
        let rate = format!("{}kbit", (512 * 1000 / delay_ms.max(1)).max(64));
        let latency = format!("{}ms", 2 * delay_ms.max(1));
        for (ns, dev) in [
            (HUB.to_owned(), hub_veth(i)),
            (node_ns(i), "eth0".to_owned()),
        ] {
            let netem = run(
                "tc",
                &[
                    "-n", &ns, "qdisc", "replace", "dev", &dev, "root", "netem", "delay", &delay,
                    &jitter, "loss", &loss,
                ],
            );
            if netem.is_err() {
                run(
                    "tc",
                    &[
                        "-n", &ns, "qdisc", "replace", "dev", &dev, "root", "tbf", "rate", &rate,
                        "burst", "32kbit", "latency", &latency,
                    ],
                )?;
                self.tbf = true;
            }
        }
        Ok(())
    }

    /// Whether a slow link was made with `tbf` (no netem in this kernel).
    pub fn used_tbf(&self) -> bool {
        self.tbf
    }

    /// Removes netem from every link.
    pub fn clear_netem(&mut self) -> Result<(), String> {
        let mut first_error = Ok(());
        for i in std::mem::take(&mut self.netem) {
            for (ns, dev) in [
                (HUB.to_owned(), hub_veth(i)),
                (node_ns(i), "eth0".to_owned()),
            ] {
                let r = run("tc", &["-n", &ns, "qdisc", "del", "dev", &dev, "root"]);
                if first_error.is_ok() {
                    first_error = r;
                }
            }
        }
        first_error
    }
}

/// Deletes the namespaces of a run (deleting a namespace removes its links).
fn remove_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with("sychaos-") {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        remove_leftovers();
    }
}
