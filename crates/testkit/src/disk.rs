//! Disks that fill up: a size-capped tmpfs mounted for a test and
//! unmounted when it is dropped. Mounting needs root; [`root_or_skip`]
//! tells a test to skip (saying so) when it does not run as root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether the test runs as root; otherwise prints why `test` skips.
#[allow(unsafe_code)]
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        println!("SKIPPED {test}: mounting a tmpfs needs root (euid {uid})");
        return false;
    }
    true
}

/// A size-capped tmpfs mounted on a directory, unmounted on drop (also
/// when the test fails). Declare it before anything that writes to it
/// (a node, a store), so that it is dropped after them.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_mib` MiB on `dir` (created if missing).
    /// Panics when it cannot.
    pub fn mount(dir: &Path, size_mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("create the mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Tmpfs {
            dir: dir.to_owned(),
        }
    }

    /// The mounted directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Free bytes left on the tmpfs.
    pub fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.dir)
            .output()
            .expect("run df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df answer")
    }

    /// Writes a filler file of up to `bytes` (real pages: a sparse file
    /// would take no room on a tmpfs); when the disk fills first, it is
    /// filled to its last byte. `u64::MAX` fills it. Returns the file.
    pub fn fill(&self, bytes: u64) -> PathBuf {
        use std::io::Write;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        // Incompressible enough for a filler: nothing reads it back.
        let chunk = vec![0xa5u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n]).is_err() {
                while f.write_all(&chunk[..1]).is_ok() {}
                break;
            }
            left -= n as u64;
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}
