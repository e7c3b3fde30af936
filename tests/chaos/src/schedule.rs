//! The fault schedule: drawn from a seed by a small deterministic
//! generator, so that the same seed replays the same faults at the same
//! times. Pure: nothing here touches a process or the network.

use std::fmt;
use std::time::Duration;

/// SplitMix64: a tiny, well-mixed generator whose sequence depends only on
/// the seed (no dependency, and no change between versions of a crate).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// An index below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `k` distinct indices below `n`, in increasing order.
    pub fn pick(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        let mut out = all[..k.min(n)].to_vec();
        out.sort_unstable();
        out
    }
}

/// One fault. Nodes are indices from 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9`, then a restart on the same data directory.
    Kill { node: usize },
    /// `kill -9`, the data directory deleted, then a restart: a new origin.
    Wipe { node: usize },
    /// SIGSTOP, then SIGCONT.
    Pause { node: usize },
    /// The node cut off from every other node (clients still reach it).
    Isolate { node: usize },
    /// The nodes split into `minority` and the rest.
    Split { minority: Vec<usize> },
    /// `a` and `c` cannot reach each other; both reach `b`.
    Bridge { a: usize, b: usize, c: usize },
    /// A partition of `node` from the rest, switched on and off `flips`
    /// times over the fault's duration.
    Flap { node: usize, flips: u32 },
    /// The node's data directory (a size-capped tmpfs) filled up, then
    /// freed.
    DiskFull { node: usize },
    /// The node's fsync and fdatasync fail with EIO (an LD_PRELOAD shim),
    /// then work again.
    SyncFail { node: usize },
    /// The node's fsync and fdatasync hang (a disk that stopped
    /// answering), then return.
    SyncStall { node: usize },
    /// `kill -9`, a byte of a stored message flipped in its journal, a
    /// restart (which must refuse the damaged directory), then the
    /// operator's repair: an empty directory, a new origin.
    Corrupt { node: usize },
    /// The node's wall clock (`CLOCK_REALTIME`, through libfaketime)
    /// stepped by `offset_s` seconds, then stepped back; its monotonic
    /// clock runs on. What an NTP step or a resumed virtual machine does.
    ClockJump { node: usize, offset_s: i64 },
    /// Delay and loss on a node's link.
    Netem {
        node: usize,
        delay_ms: u32,
        jitter_ms: u32,
        loss_pct: u32,
    },
}

impl Fault {
    /// Whether the fault takes a node away (so at most one such fault runs
    /// at a time, keeping a majority up).
    pub fn stops_a_node(&self) -> bool {
        matches!(
            self,
            Fault::Kill { .. }
                | Fault::Wipe { .. }
                | Fault::Pause { .. }
                | Fault::DiskFull { .. }
                | Fault::SyncFail { .. }
                | Fault::SyncStall { .. }
                | Fault::Corrupt { .. }
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill { node } => write!(f, "kill -9 n{node}, restart"),
            Fault::Wipe { node } => write!(f, "kill -9 n{node}, delete its data, restart"),
            Fault::Pause { node } => write!(f, "SIGSTOP n{node}, SIGCONT"),
            Fault::DiskFull { node } => write!(f, "fill n{node}'s disk, free it"),
            Fault::SyncFail { node } => write!(f, "fsync fails on n{node}"),
            Fault::SyncStall { node } => write!(f, "fsync hangs on n{node}"),
            Fault::Corrupt { node } => {
                write!(f, "kill -9 n{node}, flip a byte of its journal, restart")
            }
            Fault::Isolate { node } => write!(f, "isolate n{node}"),
            Fault::Split { minority } => {
                let names: Vec<String> = minority.iter().map(|n| format!("n{n}")).collect();
                write!(f, "split off {}", names.join(","))
            }
            Fault::Bridge { a, b, c } => write!(f, "bridge n{a} - n{b} - n{c} (n{a} x n{c})"),
            Fault::Flap { node, flips } => write!(f, "flap n{node} {flips} times"),
            Fault::ClockJump { node, offset_s } => {
                write!(f, "step n{node}'s wall clock by {offset_s:+} s, then back")
            }
            Fault::Netem {
                node,
                delay_ms,
                jitter_ms,
                loss_pct,
            } => write!(
                f,
                "netem n{node} delay {delay_ms}ms±{jitter_ms}ms loss {loss_pct}%"
            ),
        }
    }
}

/// A fault, when it starts (from the start of the run) and how long it
/// lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    pub lasts: Duration,
    pub fault: Fault,
}

/// What a run looks like.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    /// Time with faults.
    pub duration: Duration,
    /// Faults drawn.
    pub faults: usize,
    /// Longest fault.
    pub max_fault: Duration,
    /// Longest pause.
    pub max_pause: Duration,
    /// Only pauses, of 1 s to `max_pause` (the false-positive soak).
    pub pauses_only: bool,
}

impl Profile {
    pub fn short() -> Profile {
        Profile {
            duration: Duration::from_secs(60),
            faults: 8,
            max_fault: Duration::from_secs(8),
            max_pause: Duration::from_secs(6),
            pauses_only: false,
        }
    }

    pub fn long() -> Profile {
        Profile {
            duration: Duration::from_secs(20 * 60),
            faults: 120,
            max_fault: Duration::from_secs(30),
            max_pause: Duration::from_secs(30),
            pauses_only: false,
        }
    }

    /// Ten minutes of short pauses (1-2 s) on a machine whose cores are
    /// saturated: no node may be declared down.
    pub fn soak() -> Profile {
        Profile {
            duration: Duration::from_secs(10 * 60),
            faults: 60,
            max_fault: Duration::from_secs(2),
            max_pause: Duration::from_secs(2),
            pauses_only: true,
        }
    }
}

/// Draws the schedule of `profile` for `nodes` nodes from `seed`. Faults
/// start in order; one that stops a node never overlaps another such fault
/// (a majority stays up), network faults never overlap each other (one
/// partition at a time), and every fault ends before the run does.
/// Without `network` (no namespaces, and so no root for tmpfs mounts),
/// only faults on processes are drawn.
///
/// Clock jumps run in a lane of their own, drawn from a second generator
/// after the others, so that adding them left every other fault of a seed
/// where it was: one jump per 8 faults, never two at once, each stepping
/// one node's wall clock by 2 to 300 s either way.
pub fn draw(seed: u64, nodes: usize, profile: Profile, network: bool) -> Vec<Planned> {
    let mut rng = Rng::new(seed);
    let total = profile.duration.as_millis() as u64;
    let slot = total / profile.faults.max(1) as u64;
    let mut out = Vec::new();
    let mut node_free = 0u64;
    let mut net_free = 0u64;
    for i in 0..profile.faults as u64 {
        let start = i * slot + rng.range(0, slot / 2);
        let kind = if profile.pauses_only {
            2
        } else if network {
            rng.below(12)
        } else {
            rng.below(3)
        };
        let node = rng.below(nodes);
        let fault = match kind {
            0 => Fault::Kill { node },
            1 => Fault::Wipe { node },
            2 => Fault::Pause { node },
            3 => Fault::Isolate { node },
            8 => Fault::DiskFull { node },
            9 => Fault::Corrupt { node },
            10 => Fault::SyncFail { node },
            11 => Fault::SyncStall { node },
            4 => Fault::Split {
                minority: rng.pick(nodes, (nodes - 1) / 2),
            },
            5 => {
                let p = rng.pick(nodes, 3);
                Fault::Bridge {
                    a: p[0],
                    b: p[1],
                    c: p[2],
                }
            }
            6 => Fault::Flap {
                node,
                flips: rng.range(2, 6) as u32,
            },
            _ => Fault::Netem {
                node,
                delay_ms: rng.range(5, 200) as u32,
                jitter_ms: rng.range(0, 50) as u32,
                loss_pct: rng.range(0, 20) as u32,
            },
        };
        let max = if matches!(fault, Fault::Pause { .. }) {
            profile.max_pause
        } else {
            profile.max_fault
        };
        let lasts = rng.range(1000, max.as_millis() as u64);
        let busy = if fault.stops_a_node() {
            &mut node_free
        } else {
            &mut net_free
        };
        let start = start.max(*busy);
        if start + lasts > total {
            continue;
        }
        *busy = start + lasts + 500;
        out.push(Planned {
            at: Duration::from_millis(start),
            lasts: Duration::from_millis(lasts),
            fault,
        });
    }
    if network && !profile.pauses_only {
        let mut rng = Rng::new(seed ^ CLOCK_LANE);
        let jumps = (profile.faults / 8).max(1) as u64;
        let slot = total / jumps;
        let mut free = 0u64;
        for i in 0..jumps {
            let start = (i * slot + rng.range(0, slot / 2)).max(free);
            let lasts = rng.range(1000, profile.max_fault.as_millis() as u64);
            let node = rng.below(nodes);
            let size = rng.range(2, 300) as i64;
            let offset_s = if rng.below(2) == 0 { size } else { -size };
            if start + lasts > total {
                continue;
            }
            free = start + lasts + 500;
            out.push(Planned {
                at: Duration::from_millis(start),
                lasts: Duration::from_millis(lasts),
                fault: Fault::ClockJump { node, offset_s },
            });
        }
    }
    out
}

/// Seeds the clock-jump lane's generator (with the run's seed).
const CLOCK_LANE: u64 = 0x00c1_0c45_7e95_1a7e;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_schedule() {
        let a = draw(42, 5, Profile::short(), true);
        let b = draw(42, 5, Profile::short(), true);
        assert_eq!(a, b);
        assert_ne!(a, draw(43, 5, Profile::short(), true));
        assert!(!a.is_empty());
    }

    #[test]
    fn node_faults_never_overlap_and_all_end_in_time() {
        for seed in 0..200 {
            let s = draw(seed, 5, Profile::long(), true);
            let mut stops: Vec<&Planned> = s.iter().filter(|p| p.fault.stops_a_node()).collect();
            stops.sort_by_key(|p| p.at);
            for w in stops.windows(2) {
                assert!(w[0].at + w[0].lasts <= w[1].at, "seed {seed}: {w:?}");
            }
            let mut nets: Vec<&Planned> = s
                .iter()
                .filter(|p| !p.fault.stops_a_node())
                .filter(|p| !matches!(p.fault, Fault::ClockJump { .. }))
                .collect();
            nets.sort_by_key(|p| p.at);
            for w in nets.windows(2) {
                assert!(w[0].at + w[0].lasts <= w[1].at, "seed {seed}: {w:?}");
            }
            for p in &s {
                assert!(p.at + p.lasts <= Profile::long().duration);
                if let Fault::Split { minority } = &p.fault {
                    assert_eq!(minority.len(), 2);
                }
            }
        }
    }

    #[test]
    fn without_namespaces_only_process_faults_are_drawn() {
        for seed in 0..50 {
            assert!(
                draw(seed, 5, Profile::short(), false)
                    .iter()
                    .all(|p| p.fault.stops_a_node())
            );
        }
    }

    #[test]
    fn clock_jumps_leave_the_other_faults_of_a_seed_alone() {
        for seed in 0..50 {
            let s = draw(seed, 5, Profile::long(), true);
            let jumps: Vec<&Planned> = s
                .iter()
                .filter(|p| matches!(p.fault, Fault::ClockJump { .. }))
                .collect();
            assert!(!jumps.is_empty(), "seed {seed}");
            for w in jumps.windows(2) {
                assert!(w[0].at + w[0].lasts <= w[1].at, "seed {seed}: {w:?}");
            }
            for j in &jumps {
                let Fault::ClockJump { offset_s, .. } = j.fault else {
                    unreachable!()
                };
                assert!((2..=300).contains(&offset_s.abs()), "{offset_s}");
            }
            // The other faults are those of the first lane, unchanged.
            let rest: Vec<&Planned> = s
                .iter()
                .filter(|p| !matches!(p.fault, Fault::ClockJump { .. }))
                .collect();
            assert_eq!(rest.len() + jumps.len(), s.len());
            assert!(s[..rest.len()].iter().zip(&rest).all(|(a, b)| a == *b));
        }
        // The first fault of seed 1's short run is where it always was.
        let s = draw(1, 5, Profile::short(), true);
        assert_eq!(s[0].fault.to_string(), "netem n0 delay 180ms±3ms loss 2%");
        assert!((2350..2450).contains(&s[0].at.as_millis()), "{:?}", s[0].at);
    }

    #[test]
    fn picks_are_distinct() {
        let mut rng = Rng::new(7);
        for _ in 0..100 {
            let p = rng.pick(5, 3);
            assert_eq!(p.len(), 3);
            assert!(p.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
