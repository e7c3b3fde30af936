//! `chaos`: runs a Switchyard cluster of real nodes through faults drawn
//! from a seed, with clients publishing (every `acks` mode, idempotency
//! keys), streaming (resuming with `Last-Event-ID`, moving between nodes)
//! and consuming in a group, then heals everything, waits for the cluster
//! to converge and checks that nothing acknowledged was lost, that no
//! stream repeated or skipped a message, and that the group acknowledged
//! every message. It prints the seed and the schedule first and one
//! summary line last, and exits non-zero on any violation.
//!
//! ```text
//! chaos [--profile short|long] [--seed N] [--nodes N] [--bin PATH] [--fsync never|always] [--dir PATH] [--dry-run] [--keep]
//! ```
//!
//! It needs root for its network namespaces; without them it runs the
//! nodes on 127.0.0.1 with faults on processes only, and says so.
//!
//! The `soak` profile looks for false positives instead: ten minutes of
//! 1-2 s pauses while `stress-ng` keeps every core busy; besides the
//! usual checks, no node may be declared down.

mod check;
mod net;
mod nodes;
mod schedule;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use net::Net;
use nodes::{Mode, Nodes};
use schedule::{Fault, Planned, Profile};
use tokio::sync::Mutex;
use workload::{Records, Targets};

/// Size of each node's disk (a tmpfs) with namespaces.
const DISK_MIB: u64 = 512;
/// Most resident memory a node may reach.
const MAX_RSS_KIB: u64 = 1024 * 1024;

struct Args {
    profile: Profile,
    profile_name: String,
    seed: u64,
    nodes: usize,
    bin: PathBuf,
    fsync: String,
    dir: Option<PathBuf>,
    /// Print the schedule and stop.
    dry_run: bool,
    /// Keep the nodes' logs after a run that passed.
    keep: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("chaos: {msg}");
    eprintln!(
        "usage: chaos [--profile short|long] [--seed N] [--nodes N] [--bin PATH] [--fsync never|always] [--dir PATH] [--dry-run] [--keep]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        profile: Profile::short(),
        profile_name: "short".into(),
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_007),
        nodes: 5,
        bin: default_bin(),
        fsync: "always".into(),
        dir: None,
        dry_run: false,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--profile" => {
                args.profile_name = value();
                args.profile = match args.profile_name.as_str() {
                    "short" => Profile::short(),
                    "long" => Profile::long(),
                    "soak" => Profile::soak(),
                    other => usage(&format!("unknown profile {other:?}")),
                };
            }
            "--seed" => {
                args.seed = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--seed takes a number"))
            }
            "--nodes" => {
                args.nodes = value()
                    .parse()
                    .ok()
                    .filter(|n| (3..=9).contains(n))
                    .unwrap_or_else(|| usage("--nodes takes 3 to 9"))
            }
            "--bin" => args.bin = PathBuf::from(value()),
            "--fsync" => args.fsync = value(),
            "--dir" => args.dir = Some(PathBuf::from(value())),
            "--dry-run" => args.dry_run = true,
            "--keep" => args.keep = true,
            "-h" | "--help" => usage("fault injection for a Switchyard cluster"),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    args
}

/// The switchyard binary next to this one (both are built into the same
/// target directory).
fn default_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("switchyard")))
        .unwrap_or_else(|| PathBuf::from("switchyard"))
}

fn main() {
    let args = parse_args();
    if args.dry_run {
        let network = Net::available();
        println!(
            "chaos: seed={} profile={} nodes={}",
            args.seed, args.profile_name, args.nodes
        );
        for p in schedule::draw(args.seed, args.nodes, args.profile, network) {
            println!(
                "  at {:>6.1}s for {:>4.1}s: {}",
                p.at.as_secs_f64(),
                p.lasts.as_secs_f64(),
                p.fault
            );
        }
        return;
    }
    if !args.bin.is_file() {
        usage(&format!(
            "no switchyard binary at {} (build it: cargo build -p switchyard)",
            args.bin.display()
        ));
    }
    // One run at a time: the namespaces and ports are fixed.
    let _lock = match lock() {
        Ok(f) => f,
        Err(e) => usage(&e),
    };
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("switchyard-chaos-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| usage(&format!("{}: {e}", dir.display())));
    // The plugin the binder binds, built (cargo may need the network)
    // before the harness enters its namespaces.
    let plugin = bytes::Bytes::from(switchyard_testkit::guest_plugin("passthrough"));
    // The namespaces, entered before any other thread exists.
    let net = if Net::available() {
        match Net::create(args.nodes).and_then(|n| n.enter_hub().map(|()| n)) {
            Ok(n) => Some(n),
            Err(e) => {
                eprintln!("chaos: network namespaces unavailable ({e}); running on 127.0.0.1");
                None
            }
        }
    } else {
        eprintln!("chaos: not root or no `ip`: running on 127.0.0.1 with faults on processes only");
        None
    };
    let mode = if net.is_some() {
        Mode::Namespaces
    } else {
        Mode::Loopback
    };
    let plan = schedule::draw(args.seed, args.nodes, args.profile, net.is_some());
    println!(
        "chaos: seed={} profile={} nodes={} net={} fsync={} dir={}",
        args.seed,
        args.profile_name,
        args.nodes,
        mode_name(mode),
        args.fsync,
        dir.display()
    );
    for p in &plan {
        println!(
            "  at {:>6.1}s for {:>4.1}s: {}",
            p.at.as_secs_f64(),
            p.lasts.as_secs_f64(),
            p.fault
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let nodes = Nodes::new(&args.bin, &dir, args.nodes, mode, &args.fsync);
    let ok = runtime.block_on(run(&args, nodes, net, plan, mode, plugin));
    runtime.shutdown_timeout(Duration::from_secs(2));
    if ok && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("chaos: node logs kept in {}", dir.display());
    }
    std::process::exit(if ok { 0 } else { 1 });
}

/// Takes the lock that keeps a second run from starting while one runs.
fn lock() -> Result<Option<std::fs::File>, String> {
    use std::os::fd::AsRawFd;
    let path = std::env::temp_dir().join("switchyard-chaos.lock");
    // Another user's lock file cannot be opened: that user's runs use
    // namespaces (root) or other ports; go on without the lock.
    let Ok(f) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
    else {
        return Ok(None);
    };
    // SAFETY: flock on a descriptor this function holds open.
    #[allow(unsafe_code)]
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        return Err(format!(
            "another chaos run holds {} (runs share fixed namespaces and ports)",
            path.display()
        ));
    }
    Ok(Some(f))
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Namespaces => "namespaces",
        Mode::Loopback => "loopback",
    }
}

/// One step of the schedule: a fault starting or ending.
#[derive(Debug)]
enum Step {
    Start(Fault),
    End(Fault),
    /// A flapping link: cut (`true`) or healed.
    FlapCut(usize, bool),
}

fn steps(plan: &[Planned]) -> Vec<(Duration, Step)> {
    let mut out = Vec::new();
    for p in plan {
        if let Fault::Flap { node, flips } = p.fault {
            let each = p.lasts / (2 * flips);
            for k in 0..2 * flips {
                out.push((p.at + each * k, Step::FlapCut(node, k % 2 == 0)));
            }
            out.push((p.at + p.lasts, Step::FlapCut(node, false)));
        } else {
            out.push((p.at, Step::Start(p.fault.clone())));
            out.push((p.at + p.lasts, Step::End(p.fault.clone())));
        }
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

async fn wait_all_alive(nodes: &Nodes, n: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let mut all = true;
        for i in 0..n {
            let c = switchyard::client::Client::new(&nodes.url(i)).expect("valid URL");
            let alive =
                match tokio::time::timeout(Duration::from_secs(2), c.get_json("/v1/cluster")).await
                {
                    Ok(Ok(v)) => v["members"]
                        .as_array()
                        .is_some_and(|m| m.iter().filter(|m| m["state"] == "alive").count() == n),
                    _ => false,
                };
            all &= alive;
        }
        if all {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// Whether the node at `url` answers `/readyz` with 200.
async fn ready(url: &str) -> bool {
    let c = switchyard::client::Client::new(url).expect("valid URL");
    matches!(
        tokio::time::timeout(Duration::from_secs(3), c.get_json("/readyz")).await,
        Ok(Ok(_))
    )
}

/// Longest a node started on a damaged journal may take to refuse it.
const CORRUPT_REFUSAL: Duration = Duration::from_secs(30);

async fn apply(
    step: &Step,
    nodes: &mut Nodes,
    net: &mut Option<Net>,
    ids: &mut [Option<String>],
    corrupted: &mut Vec<usize>,
) -> Result<(), String> {
    let no_net = || "a network fault without namespaces".to_owned();
    match step {
        Step::Start(f) => match f {
            Fault::Kill { node } => nodes.kill9(*node),
            Fault::Wipe { node } => {
                nodes.kill9(*node);
                nodes.wipe(*node, ids[*node].take())?;
            }
            Fault::Pause { node } => nodes.pause(*node),
            Fault::DiskFull { node } => {
                nodes.fill_disk(*node)?;
            }
            Fault::SyncFail { node } => nodes.sync_fault(*node, "fail", true)?,
            Fault::SyncStall { node } => nodes.sync_fault(*node, "stall", true)?,
            Fault::Corrupt { node } => {
                nodes.kill9(*node);
                let pick = ids[*node].as_deref().map_or(0, |s| s.len() as u64);
                if nodes.flip_journal_byte(*node, pick)? {
                    nodes.start(*node)?;
                    corrupted.push(*node);
                } else {
                    nodes.start(*node)?;
                }
            }
            Fault::Isolate { node } => net.as_mut().ok_or_else(no_net)?.split(&[*node])?,
            Fault::Split { minority } => net.as_mut().ok_or_else(no_net)?.split(minority)?,
            Fault::Bridge { a, c, .. } => net.as_mut().ok_or_else(no_net)?.cut(*a, *c)?,
            Fault::Flap { .. } => {}
            Fault::ClockJump { node, offset_s } => nodes.set_clock(*node, *offset_s)?,
            Fault::Netem {
                node,
                delay_ms,
                jitter_ms,
                loss_pct,
            } => net
                .as_mut()
                .ok_or_else(no_net)?
                .netem(*node, *delay_ms, *jitter_ms, *loss_pct)?,
        },
        Step::End(f) => match f {
            Fault::Kill { node } | Fault::Wipe { node } => {
                nodes.start(*node)?;
                ids[*node] = None;
            }
            Fault::Corrupt { node } => {
                if corrupted.contains(node) {
                    corrupted.retain(|n| n != node);
                    // The damaged directory must have been refused: the
                    // node exits once it has read the journal, which on a
                    // loaded machine can take longer than the fault.
                    let deadline = Instant::now() + CORRUPT_REFUSAL;
                    while nodes.running(*node) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    if nodes.running(*node) {
                        return Err(format!(
                            "n{node} started on a journal with a flipped byte (undetected corruption)"
                        ));
                    }
                    let tail = nodes.log_tail(*node);
                    if !tail.contains("damaged") {
                        return Err(format!(
                            "n{node} refused its damaged journal without saying so: {tail}"
                        ));
                    }
                    // The operator's repair: an empty directory.
                    nodes.wipe(*node, ids[*node].take())?;
                    nodes.start(*node)?;
                }
            }
            Fault::Pause { node } => nodes.resume(*node),
            Fault::SyncStall { node } => nodes.sync_fault(*node, "stall", false)?,
            Fault::SyncFail { node } => {
                nodes.sync_fault(*node, "fail", false)?;
                // A failed sync poisons the store until a restart.
                if !ready(&nodes.url(*node)).await {
                    nodes.kill9(*node);
                    nodes.start(*node)?;
                }
            }
            Fault::DiskFull { node } => {
                nodes.free_disk(*node);
                // A node that failed a write refuses writes until it is
                // restarted (what an operator does once /readyz says 503).
                if !ready(&nodes.url(*node)).await {
                    nodes.kill9(*node);
                    nodes.start(*node)?;
                }
            }
            Fault::Netem { .. } => net.as_mut().ok_or_else(no_net)?.clear_netem()?,
            Fault::ClockJump { node, .. } => nodes.set_clock(*node, 0)?,
            _ => net.as_mut().ok_or_else(no_net)?.heal()?,
        },
        Step::FlapCut(node, cut) => {
            let net = net.as_mut().ok_or_else(no_net)?;
            if *cut {
                net.split(&[*node])?;
            } else {
                net.heal()?;
            }
        }
    }
    Ok(())
}

async fn run(
    args: &Args,
    mut nodes: Nodes,
    mut net: Option<Net>,
    plan: Vec<Planned>,
    mode: Mode,
    plugin: bytes::Bytes,
) -> bool {
    let n = args.nodes;
    if mode == Mode::Namespaces
        && let Err(e) = nodes
            .mount_disks(DISK_MIB)
            .and_then(|()| nodes.build_shim())
            .and_then(|()| nodes.find_faketime())
    {
        eprintln!("chaos: {e}");
        return false;
    }
    for i in 0..n {
        if let Err(e) = nodes.start(i) {
            eprintln!("chaos: {e}");
            return false;
        }
    }
    if !wait_all_alive(&nodes, n, Duration::from_secs(60)).await {
        eprintln!("chaos: the nodes did not all see each other within 60 s");
        return false;
    }
    let mut ids: Vec<Option<String>> = Vec::new();
    for i in 0..n {
        ids.push(workload::node_id(&nodes.url(i)).await);
    }
    let targets = Arc::new(Targets {
        urls: (0..n).map(|i| nodes.url(i)).collect(),
    });
    // One publisher per node (while it has as many nodes as modes listed).
    let acks_modes: [&'static str; 5] = ["quorum", "all", "local", "quorum", "local"];
    let (subscribers, members) = (3, 3);
    let records = Arc::new(Mutex::new(Records {
        published: vec![Vec::new(); acks_modes.len()],
        streams: vec![Vec::new(); subscribers],
        resumes: vec![0; subscribers],
        group_acked: Vec::new(),
        group_unconfirmed: 0,
        group_received: Vec::new(),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let started = tokio::time::Instant::now();
    let mut publishers = Vec::new();
    for (i, acks) in acks_modes.iter().enumerate() {
        publishers.push(tokio::spawn(workload::publisher(
            i,
            acks,
            targets.clone(),
            records.clone(),
            stop.clone(),
            started,
        )));
    }
    // Cluster-wide plugin bindings changed on random nodes throughout.
    let binder = tokio::spawn(workload::binder(
        args.seed ^ (0xb1d_u64 << 40),
        targets.clone(),
        plugin,
        stop.clone(),
    ));
    let ctx = Arc::new(workload::Readers {
        targets: targets.clone(),
        records: records.clone(),
        done: done.clone(),
        started,
    });
    let mut readers = Vec::new();
    for i in 0..subscribers {
        let seed = args.seed ^ (i as u64 + 1) << 32;
        readers.push(tokio::spawn(workload::subscriber(i, seed, ctx.clone())));
    }
    for i in 0..members {
        let seed = args.seed ^ (i as u64 + 101) << 32;
        readers.push(tokio::spawn(workload::member(i, seed, ctx.clone())));
    }
    // The soak saturates the cores.
    let mut stress = if args.profile.pauses_only {
        match std::process::Command::new("stress-ng")
            .args(["--cpu", "0", "--quiet", "--timeout"])
            .arg(format!("{}s", args.profile.duration.as_secs()))
            .spawn()
        {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("chaos: cannot start stress-ng ({e}); scripts/chaos.sh installs it");
                return false;
            }
        }
    } else {
        None
    };
    // The schedule.
    let mut failures = Vec::new();
    let mut corrupted = Vec::new();
    // SIGINT or SIGTERM ends the run early, with the usual clean-up (the
    // nodes stopped, the namespaces and mounts removed).
    let interrupted = Arc::new(AtomicBool::new(false));
    for kind in [
        tokio::signal::unix::SignalKind::interrupt(),
        tokio::signal::unix::SignalKind::terminate(),
    ] {
        if let Ok(mut sig) = tokio::signal::unix::signal(kind) {
            let flag = interrupted.clone();
            tokio::spawn(async move {
                sig.recv().await;
                eprintln!("chaos: interrupted; cleaning up");
                flag.store(true, Ordering::Relaxed);
            });
        }
    }
    for (at, step) in steps(&plan) {
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
        let when = started + at;
        while tokio::time::Instant::now() < when && !interrupted.load(Ordering::Relaxed) {
            nodes.sample_rss();
            tokio::time::sleep_until(
                when.min(tokio::time::Instant::now() + Duration::from_secs(1)),
            )
            .await;
        }
        // Learn the id of a node restarted since (a wiped one is new).
        if let Step::Start(Fault::Wipe { node } | Fault::Kill { node } | Fault::Corrupt { node }) =
            &step
            && ids[*node].is_none()
        {
            ids[*node] = workload::node_id(&nodes.url(*node)).await;
        }
        println!("chaos: {:>6.1}s {step:?}", started.elapsed().as_secs_f64());
        if let Err(e) = apply(&step, &mut nodes, &mut net, &mut ids, &mut corrupted).await {
            failures.push(format!("applying {step:?}: {e}"));
        }
    }
    while started.elapsed() < args.profile.duration && !interrupted.load(Ordering::Relaxed) {
        nodes.sample_rss();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if let Some(mut s) = stress.take() {
        let _ = s.kill();
        let _ = s.wait();
    }
    // Heal everything.
    let healed = Instant::now();
    if let Some(net) = net.as_mut() {
        let _ = net.heal();
        let _ = net.clear_netem();
    }
    for i in 0..n {
        nodes.resume(i);
        if mode == Mode::Namespaces {
            let _ = nodes.set_clock(i, 0);
        }
        if !nodes.running(i)
            && let Err(e) = nodes.start(i)
        {
            failures.push(e);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        let _ = p.await;
    }
    let binding_changes = binder.await.unwrap_or(0);
    // Converge: every live node holds the same log, every stream all of
    // it, the group has acknowledged all of it.
    let converge_limit = if args.profile_name != "short" {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(90)
    };
    let mut verdict;
    let mut bindings_diverged;
    loop {
        nodes.sample_rss();
        let mut logs = Vec::new();
        for i in 0..n {
            if let Some(log) = workload::pull_all(&nodes.url(i)).await {
                logs.push(log);
            }
        }
        {
            let r = records.lock().await;
            verdict = check::check(
                &r.published,
                &logs,
                &r.streams,
                &r.group_acked,
                &nodes.wiped_origins,
            );
        }
        if logs.len() < n {
            verdict.diverged_nodes += n - logs.len();
        }
        // Every node runs the same version of each cluster-wide binding.
        let mut tables = Vec::new();
        for i in 0..n {
            if let Some(t) = workload::bindings(&nodes.url(i)).await {
                tables.push(t);
            }
        }
        bindings_diverged = n - tables.len()
            + tables
                .iter()
                .filter(|t| {
                    Some(*t) != tables.first()
                        || t.iter().any(|b| !b.is_null() && b["running_here"] != true)
                })
                .count();
        if (verdict.ok() && bindings_diverged == 0)
            || healed.elapsed() > converge_limit
            || interrupted.load(Ordering::Relaxed)
        {
            if bindings_diverged > 0 {
                for (i, t) in tables.iter().enumerate() {
                    println!("chaos: bindings on a node ({i} of those answering): {t:?}");
                }
            }
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let converge = healed.elapsed();
    if !verdict.ok() {
        // What each node says about itself, for the investigation.
        for i in 0..n {
            let state = workload::describe(&nodes.url(i)).await;
            let _ = std::fs::write(nodes.dir().join(format!("n{i}.state.json")), state);
        }
    }
    // Members declared down, as the nodes recorded it.
    let mut downs = 0;
    for i in 0..n {
        downs += workload::down_events(&nodes.url(i)).await;
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        r.abort();
    }
    nodes.stop_all(Duration::from_secs(10));
    let rss_ok = nodes.max_rss_kib.iter().all(|&k| k <= MAX_RSS_KIB);
    let r = records.lock().await;
    let attempts: usize = r.published.iter().map(Vec::len).sum();
    let resumes: u32 = r.resumes.iter().sum();
    println!(
        "chaos: {attempts} publishes attempted, {} acknowledged; streams resumed {resumes} times; group acks without an answer {}; max node RSS {} MiB",
        verdict.acked,
        r.group_unconfirmed,
        nodes.max_rss_kib.iter().max().copied().unwrap_or(0) / 1024
    );
    for line in r.group_repeats_by_second() {
        println!("chaos: group deliveries received again at {line}");
    }
    for e in &verdict.examples {
        println!("chaos: violation: {e}");
    }
    for f in &failures {
        println!("chaos: fault not applied: {f}");
    }
    if !rss_ok {
        println!(
            "chaos: violation: a node's RSS passed {} MiB: {:?} KiB",
            MAX_RSS_KIB / 1024,
            nodes.max_rss_kib
        );
    }
    if args.profile.pauses_only && downs > 0 {
        println!("chaos: violation: {downs} `down` events during the soak (false positives)");
    }
    if interrupted.load(Ordering::Relaxed) {
        failures.push("the run was interrupted".into());
    }
    if bindings_diverged > 0 {
        println!(
            "chaos: violation: {bindings_diverged} nodes run other versions of the cluster-wide bindings than the rest"
        );
    }
    let ok = verdict.ok()
        && bindings_diverged == 0
        && rss_ok
        && failures.is_empty()
        && (!args.profile.pauses_only || downs == 0);
    println!(
        "chaos: seed={} nodes={n} faults={} acked={} lost={} stream_repeats={} stream_gaps={} group_redelivered={} group_received_again={} local_lost_disk={} max_failover_s={:.1} converge_s={:.1} stored_twice={} stored_twice_unchecked={} order_violations={} group_missing={} diverged_nodes={} binding_changes={binding_changes} bindings_diverged={bindings_diverged} downs={downs} net={} result={}",
        args.seed,
        plan.len(),
        verdict.acked,
        verdict.lost,
        verdict.stream_repeats,
        verdict.stream_gaps,
        verdict.group_redelivered,
        r.group_received_again(),
        verdict.local_lost_disk,
        verdict.max_failover.as_secs_f64(),
        converge.as_secs_f64(),
        verdict.stored_twice,
        verdict.stored_twice_unchecked,
        verdict.order_violations,
        verdict.group_missing,
        verdict.diverged_nodes,
        match (mode, net.as_ref().is_some_and(Net::used_tbf)) {
            (Mode::Loopback, _) => "loopback",
            (_, true) => "namespaces(tbf)",
            _ => "namespaces",
        },
        if ok { "pass" } else { "FAIL" }
    );
    ok
}
