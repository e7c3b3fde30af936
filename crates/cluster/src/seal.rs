//! The gossip packet envelope: every UDP packet is sealed with
//! XChaCha20-Poly1305 under a key derived from the cluster key, so a node
//! without the key can neither read nor forge gossip, and a replayed packet
//! is recognised and dropped.
//!
//! Layout: `SYG1` | cluster name length (1 byte) | cluster name | sender node
//! id (8) | sender boot (8) | counter (8) | sender clock in ms (8) |
//! ciphertext with its 16-byte tag. Everything before the ciphertext is the
//! associated data. The nonce is sender | boot | counter: the boot is random
//! per process and the counter never repeats within it, so a nonce is never
//! reused under one key.
//!
//! Replays: a receiver keeps, per (sender, boot), the highest counter seen
//! and a 64-packet window below it, and refuses packets whose clock is more
//! than [`MAX_CLOCK_SKEW`] away from its own, so a packet recorded earlier
//! cannot be replayed once its window has been forgotten either.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 4] = b"SYG1";
/// Packets whose sender clock is further than this from ours are refused.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// Replay windows kept at most (one per sender process seen recently).
const MAX_WINDOWS: usize = 4096;
/// Bytes the envelope adds besides the cluster name.
pub const OVERHEAD: usize = 4 + 1 + 8 + 8 + 8 + 8 + 16;

/// Why a packet was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Too short, wrong magic, or cut off.
    Malformed,
    /// Sealed for another cluster name.
    WrongCluster,
    /// The tag does not verify: another key, or altered in transit.
    BadAuth,
    /// Seen before (same sender, boot and counter).
    Replayed,
    /// The sender's clock is too far from ours.
    Stale,
}

impl Refusal {
    /// Stable name for counters.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::WrongCluster => "wrong_cluster",
            Refusal::BadAuth => "bad_auth",
            Refusal::Replayed => "replayed",
            Refusal::Stale => "stale",
        }
    }
}

/// A sealed packet's authenticated header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender {
    /// The sender's node id.
    pub node: u64,
    /// The sender's process (random per start).
    pub boot: u64,
}

/// Seals outgoing packets and opens incoming ones.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    name: Vec<u8>,
    node: u64,
    boot: u64,
    counter: AtomicU64,
    windows: HashMap<(u64, u64), Window>,
}

struct Window {
    highest: u64,
    /// Bit i set: `highest - i` was seen.
    seen: u64,
    last: Instant,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Derives the 32-byte packet key from the configured cluster key.
pub fn derive_key(secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"switchyard cluster key v1\0");
    h.update(secret);
    h.finalize().into()
}

impl Sealer {
    /// A sealer for node `node` in cluster `name` (at most 255 bytes).
    pub fn new(secret: &[u8], name: &str, node: u64) -> Sealer {
        let key = derive_key(secret);
        Sealer {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&key)),
            name: name.as_bytes()[..name.len().min(255)].to_vec(),
            node,
            boot: getrandom::u64().unwrap_or_else(|_| now_ms() ^ u64::from(std::process::id())),
            counter: AtomicU64::new(1),
            windows: HashMap::new(),
        }
    }

    /// Seals `body` into a packet.
    pub fn seal(&self, body: &[u8]) -> Vec<u8> {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::with_capacity(OVERHEAD + self.name.len() + body.len());
        out.extend_from_slice(MAGIC);
        out.push(self.name.len() as u8);
        out.extend_from_slice(&self.name);
        out.extend_from_slice(&self.node.to_be_bytes());
        out.extend_from_slice(&self.boot.to_be_bytes());
        out.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(&now_ms().to_be_bytes());
        let nonce = nonce(self.node, self.boot, counter);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: body,
                    aad: &out,
                },
            )
            .expect("sealing a buffer in memory cannot fail");
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a packet: its sender and body, or why it was refused. A packet
    /// is accepted at most once.
    pub fn open(&mut self, packet: &[u8]) -> Result<(Sender, Vec<u8>), (Refusal, Option<String>)> {
        let malformed = || (Refusal::Malformed, None);
        if packet.len() < OVERHEAD || &packet[..4] != MAGIC {
            return Err(malformed());
        }
        let name_len = packet[4] as usize;
        let header_len = 5 + name_len + 32;
        if packet.len() < header_len + 16 {
            return Err(malformed());
        }
        let name = &packet[5..5 + name_len];
        if name != self.name.as_slice() {
            return Err((
                Refusal::WrongCluster,
                Some(String::from_utf8_lossy(name).into_owned()),
            ));
        }
        let field = |i: usize| {
            let at = 5 + name_len + 8 * i;
            u64::from_be_bytes(packet[at..at + 8].try_into().expect("8 bytes"))
        };
        let (node, boot, counter, clock) = (field(0), field(1), field(2), field(3));
        let (aad, sealed) = packet.split_at(header_len);
        let body = self
            .cipher
            .decrypt(
                XNonce::from_slice(&nonce(node, boot, counter)),
                Payload { msg: sealed, aad },
            )
            .map_err(|_| (Refusal::BadAuth, None))?;
        if now_ms().abs_diff(clock) > MAX_CLOCK_SKEW.as_millis() as u64 {
            return Err((Refusal::Stale, None));
        }
        if !self.accept(node, boot, counter) {
            return Err((Refusal::Replayed, None));
        }
        Ok((Sender { node, boot }, body))
    }

    /// Records (sender, boot, counter); false when it was seen before or is
    /// too old for the window.
    fn accept(&mut self, node: u64, boot: u64, counter: u64) -> bool {
        let now = Instant::now();
        if self.windows.len() >= MAX_WINDOWS && !self.windows.contains_key(&(node, boot)) {
            // Forget senders not heard from for longer than any packet
            // stays acceptable; if none, the least recent one.
            self.windows
                .retain(|_, w| now.duration_since(w.last) < MAX_CLOCK_SKEW * 2);
            if self.windows.len() >= MAX_WINDOWS
                && let Some(oldest) = self
                    .windows
                    .iter()
                    .min_by_key(|(_, w)| w.last)
                    .map(|(k, _)| *k)
            {
                self.windows.remove(&oldest);
            }
        }
        let w = self.windows.entry((node, boot)).or_insert(Window {
            highest: 0,
            seen: 0,
            last: now,
        });
        w.last = now;
        if counter > w.highest {
            let shift = counter - w.highest;
            w.seen = if shift >= 64 { 0 } else { w.seen << shift };
            w.seen |= 1;
            w.highest = counter;
            return true;
        }
        let back = w.highest - counter;
        if back >= 64 || w.seen & (1 << back) != 0 {
            return false;
        }
        w.seen |= 1 << back;
        true
    }
}

fn nonce(node: u64, boot: u64, counter: u64) -> [u8; 24] {
    let mut n = [0u8; 24];
    n[..8].copy_from_slice(&node.to_be_bytes());
    n[8..16].copy_from_slice(&boot.to_be_bytes());
    n[16..].copy_from_slice(&counter.to_be_bytes());
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_packets_open_once_and_only_with_the_key() {
        let a = Sealer::new(b"secret", "edge", 1);
        let mut b = Sealer::new(b"secret", "edge", 2);
        let mut other_key = Sealer::new(b"other", "edge", 3);
        let mut other_name = Sealer::new(b"secret", "lab", 4);
        let p = a.seal(b"hello");
        let (sender, body) = b.open(&p).unwrap();
        assert_eq!((sender.node, body.as_slice()), (1, &b"hello"[..]));
        assert_eq!(b.open(&p).unwrap_err().0, Refusal::Replayed);
        assert_eq!(other_key.open(&p).unwrap_err().0, Refusal::BadAuth);
        let (why, name) = other_name.open(&p).unwrap_err();
        assert_eq!(
            (why, name.as_deref()),
            (Refusal::WrongCluster, Some("edge"))
        );
        let mut flipped = a.seal(b"hello");
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(b.open(&flipped).unwrap_err().0, Refusal::BadAuth);
        for junk in [&b""[..], b"SYG1", &[0u8; 80], &p[..p.len() - 17]] {
            assert!(b.open(junk).is_err());
        }
    }

    #[test]
    fn out_of_order_packets_within_the_window_are_accepted_once() {
        let a = Sealer::new(b"k", "c", 1);
        let mut b = Sealer::new(b"k", "c", 2);
        let packets: Vec<Vec<u8>> = (0..100).map(|i| a.seal(&[i as u8])).collect();
        assert!(b.open(&packets[50]).is_ok());
        assert!(b.open(&packets[49]).is_ok());
        assert!(b.open(&packets[10]).is_ok());
        assert_eq!(b.open(&packets[49]).unwrap_err().0, Refusal::Replayed);
        assert!(b.open(&packets[99]).is_ok());
        // 30 is now more than 64 behind the highest counter seen.
        assert_eq!(b.open(&packets[30]).unwrap_err().0, Refusal::Replayed);
    }
}
