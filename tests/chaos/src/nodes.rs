//! The nodes: real `switchyard serve` processes, each with its own data
//! directory and config file, in its network namespace (or, without
//! namespaces, on 127.0.0.1 with ports of its own). Killed, paused,
//! wiped and restarted as the schedule says.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::net::Net;

/// How the nodes are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One network namespace per node (see [`Net`]).
    Namespaces,
    /// All on 127.0.0.1 (no network faults).
    Loopback,
}

pub struct Nodes {
    bin: PathBuf,
    dir: PathBuf,
    mode: Mode,
    fsync: String,
    procs: Vec<Option<Child>>,
    /// Ids of origins whose data directory was deleted (their
    /// `acks=local` messages may be lost).
    pub wiped_origins: Vec<String>,
    /// Most resident memory seen per node, in KiB.
    pub max_rss_kib: Vec<u64>,
    /// tmpfs mounts to remove at the end.
    mounted: Vec<PathBuf>,
    /// The fsync fault shim (`tests/faults/failsync.c`), preloaded into
    /// every node once built.
    shim: Option<PathBuf>,
    /// libfaketime, preloaded into every node once found: each node's
    /// wall clock follows the offset in its `n<i>.faketime` file.
    faketime: Option<PathBuf>,
}

/// Where Debian's `libfaketime` package puts the multi-threaded library.
const FAKETIME_PATHS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
];

const KEY: &str = "the chaos harness's cluster key";
/// The fsync fault shim's source.
const SHIM_SOURCE: &str = include_str!("../../faults/failsync.c");

impl Nodes {
    pub fn new(bin: &Path, dir: &Path, n: usize, mode: Mode, fsync: &str) -> Nodes {
        Nodes {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            mode,
            fsync: fsync.to_owned(),
            procs: (0..n).map(|_| None).collect(),
            wiped_origins: Vec::new(),
            max_rss_kib: vec![0; n],
            mounted: Vec::new(),
            shim: None,
            faketime: None,
        }
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    fn http(&self, i: usize) -> String {
        match self.mode {
            Mode::Namespaces => format!("{}:7070", Net::ip(i)),
            Mode::Loopback => format!("127.0.0.1:{}", 17070 + i),
        }
    }

    fn gossip(&self, i: usize) -> String {
        match self.mode {
            Mode::Namespaces => format!("{}:7946", Net::ip(i)),
            Mode::Loopback => format!("127.0.0.1:{}", 17946 + i),
        }
    }

    /// The run's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Node `i`'s base URL.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}", self.http(i))
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("n{i}"))
    }

    /// Starts node `i` (on its existing data directory, if any).
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        let seeds: Vec<String> = (0..self.len())
            .map(|j| format!("\"{}\"", self.gossip(j)))
            .collect();
        let config = format!(
            "listen = \"{}\"\ndata_dir = \"{}\"\n\n[cluster]\nname = \"chaos\"\nkey = \"{KEY}\"\n\
             gossip_listen = \"{}\"\nseeds = [{}]\nreplication_factor = 3\n",
            self.http(i),
            self.data_dir(i).display(),
            self.gossip(i),
            seeds.join(", ")
        );
        let path = self.dir.join(format!("n{i}.toml"));
        std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("n{i}.log")))
            .map_err(|e| e.to_string())?;
        let mut cmd = match self.mode {
            Mode::Namespaces => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &Net::namespace(i)]).arg(&self.bin);
                c
            }
            Mode::Loopback => Command::new(&self.bin),
        };
        let mut preload: Vec<String> = Vec::new();
        if let Some(shim) = &self.shim {
            preload.push(shim.display().to_string());
            cmd.env("FAILSYNC_TRIGGER", self.sync_file(i, "fail"))
                .env("FAILSYNC_STALL", self.sync_file(i, "stall"));
        }
        if let Some(lib) = &self.faketime {
            let rc = self.clock_file(i);
            if !rc.exists() {
                std::fs::write(&rc, "+0\n").map_err(|e| format!("{}: {e}", rc.display()))?;
            }
            preload.push(lib.display().to_string());
            // Read the offset on every call (a jump takes effect at once),
            // and leave the monotonic clock alone: only the wall clock
            // steps, as with NTP.
            cmd.env("FAKETIME_TIMESTAMP_FILE", rc)
                .env("FAKETIME_NO_CACHE", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        if !preload.is_empty() {
            cmd.env("LD_PRELOAD", preload.join(":"));
        }
        cmd.arg("serve")
            .arg("--config")
            .arg(&path)
            .args(["--fsync", &self.fsync])
            // Nodes listen on the namespaces' 10.213.0.x addresses; the
            // workload's clients carry no tokens.
            .arg("--allow-anonymous")
            .env(
                "SWITCHYARD_LOG",
                "info,fjall=warn,lsm_tree=warn,switchyard::access=off",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let child = cmd.spawn().map_err(|e| format!("start n{i}: {e}"))?;
        self.procs[i] = Some(child);
        Ok(())
    }

    fn pid(&self, i: usize) -> Option<i32> {
        self.procs[i].as_ref().map(|c| c.id() as i32)
    }

    fn signal(&self, i: usize, sig: i32) {
        if let Some(pid) = self.pid(i) {
            // SAFETY: kill(2) on the pid of a child process this harness
            // started and has not reaped.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// `kill -9` node `i` and reaps it.
    pub fn kill9(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.signal(i, libc::SIGKILL);
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.wait();
        }
    }

    pub fn pause(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    pub fn resume(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    /// Deletes everything in node `i`'s data directory (the node must be
    /// stopped); `origin` is the id it had.
    pub fn wipe(&mut self, i: usize, origin: Option<String>) -> Result<(), String> {
        if let Some(o) = origin {
            self.wiped_origins.push(o);
        }
        let d = self.data_dir(i);
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", d.display())),
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|e| format!("{}: {e}", p.display()))?;
        }
        Ok(())
    }

    /// Puts each node's data directory on a tmpfs of `mib` MiB, so that a
    /// disk can fill up. Needs root.
    pub fn mount_disks(&mut self, mib: u64) -> Result<(), String> {
        for i in 0..self.len() {
            let d = self.data_dir(i);
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(&d)
                .output()
                .map_err(|e| format!("mount: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "mount tmpfs on {}: {}",
                    d.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            self.mounted.push(d);
        }
        Ok(())
    }

    /// Fills node `i`'s disk with a filler file until it is full.
    pub fn fill_disk(&self, i: usize) -> Result<u64, String> {
        use std::io::Write;
        let path = self.data_dir(i).join("filler");
        let mut f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        while let Ok(n) = f.write(&chunk) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
        let _ = f.sync_all();
        Ok(written)
    }

    /// Flips one byte of a stored message (its topic name) in node `i`'s
    /// newest journal (the node must be stopped). Whether one was found.
    pub fn flip_journal_byte(&self, i: usize, pick: u64) -> Result<bool, String> {
        let dir = self.data_dir(i);
        let newest = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
            .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        let Some(path) = newest else {
            return Ok(false);
        };
        let mut bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let hits: Vec<usize> = bytes
            .windows(7)
            .enumerate()
            .filter(|(_, w)| *w == b"chaos.p")
            .map(|(at, _)| at)
            .collect();
        if hits.is_empty() {
            return Ok(false);
        }
        let at = hits[(pick % hits.len() as u64) as usize] + 2;
        bytes[at] ^= 0x20;
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(true)
    }

    /// The last lines of node `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("n{i}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// Builds the fsync fault shim with `cc`; the nodes started from now
    /// on preload it.
    pub fn build_shim(&mut self) -> Result<(), String> {
        let source = self.dir.join("failsync.c");
        std::fs::write(&source, SHIM_SOURCE).map_err(|e| format!("{}: {e}", source.display()))?;
        let out = self.dir.join("libfailsync.so");
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&out)
            .arg(&source)
            .arg("-ldl")
            .status()
            .map_err(|e| format!("cc (a C compiler builds the fsync fault shim): {e}"))?;
        if !status.success() {
            return Err(format!("cc {} failed", source.display()));
        }
        self.shim = Some(out);
        Ok(())
    }

    /// Finds libfaketime; the nodes started from now on preload it.
    pub fn find_faketime(&mut self) -> Result<(), String> {
        let found = FAKETIME_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        self.faketime = Some(found.ok_or(
            "libfaketime is missing (Debian package libfaketime; scripts/chaos.sh installs it)",
        )?);
        Ok(())
    }

    fn clock_file(&self, i: usize) -> PathBuf {
        self.dir.join(format!("n{i}.faketime"))
    }

    /// Steps node `i`'s wall clock to `offset_s` seconds from the real one
    /// (0: back to the real time).
    pub fn set_clock(&self, i: usize, offset_s: i64) -> Result<(), String> {
        let rc = self.clock_file(i);
        std::fs::write(&rc, format!("{offset_s:+}\n")).map_err(|e| format!("{}: {e}", rc.display()))
    }

    fn sync_file(&self, i: usize, what: &str) -> PathBuf {
        self.dir.join(format!("n{i}.sync-{what}"))
    }

    /// Switches node `i`'s fsync fault `what` (`fail` or `stall`) on or off.
    pub fn sync_fault(&self, i: usize, what: &str, on: bool) -> Result<(), String> {
        let path = self.sync_file(i, what);
        if on {
            std::fs::write(&path, b"").map_err(|e| format!("{}: {e}", path.display()))
        } else {
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("{}: {e}", path.display())),
            }
        }
    }

    /// Removes node `i`'s filler file.
    pub fn free_disk(&self, i: usize) {
        let _ = std::fs::remove_file(self.data_dir(i).join("filler"));
    }

    /// Whether node `i`'s process runs (it may be paused).
    pub fn running(&mut self, i: usize) -> bool {
        match &mut self.procs[i] {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Records each running node's resident memory.
    pub fn sample_rss(&mut self) {
        for i in 0..self.len() {
            let Some(pid) = self.pid(i) else { continue };
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue;
            };
            let kib = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            self.max_rss_kib[i] = self.max_rss_kib[i].max(kib);
        }
    }

    /// Stops every node: SIGTERM, then `kill -9` after `grace`.
    pub fn stop_all(&mut self, grace: Duration) {
        for i in 0..self.len() {
            self.resume(i);
            self.signal(i, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + grace;
        for i in 0..self.len() {
            while self.running(i) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            self.kill9(i);
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for i in 0..self.len() {
            self.kill9(i);
        }
        for d in self.mounted.drain(..) {
            let _ = Command::new("umount").arg(&d).output();
        }
    }
}
