//! The node-wide memory budget of plugin instances.
//!
//! Each binding may hold `max_instances` instances of at most
//! `memory_bytes` each; nothing else bounds what all bindings together
//! (and the filter variants subscribers create) may take. A binding
//! reserves `memory_bytes × max_instances` of the budget when it is built
//! and is refused when that does not fit; the reservation returns to the
//! budget when the binding is dropped, or earlier when the binding is
//! replaced or unbound ([`Reservation::release`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// The budget: how many bytes all reservations may hold together.
pub(crate) struct MemoryBudget {
    total: u64,
    used: Mutex<u64>,
}

/// Bytes held of a [`MemoryBudget`]; returned when dropped or released.
pub(crate) struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: AtomicU64,
}

impl MemoryBudget {
    pub fn new(total: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            total,
            used: Mutex::new(0),
        })
    }

    /// The budget's size in bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        *self.used.lock()
    }

    /// Reserves `bytes`, counting the bytes of `replacing` (a reservation
    /// about to be released) as free. `Err` says how much is left.
    pub fn reserve(
        self: &Arc<Self>,
        bytes: u64,
        replacing: Option<&Reservation>,
    ) -> Result<Reservation, u64> {
        let mut used = self.used.lock();
        let credit = replacing
            .filter(|r| Arc::ptr_eq(&r.budget, self))
            .map_or(0, |r| r.bytes.load(Ordering::Relaxed));
        let left = self.total.saturating_sub(used.saturating_sub(credit));
        if bytes > left {
            return Err(left);
        }
        *used += bytes;
        Ok(Reservation {
            budget: self.clone(),
            bytes: AtomicU64::new(bytes),
        })
    }
}

impl Reservation {
    /// Returns the bytes to the budget now (idempotent).
    pub fn release(&self) {
        let bytes = self.bytes.swap(0, Ordering::Relaxed);
        if bytes > 0 {
            let mut used = self.budget.used.lock();
            *used = used.saturating_sub(bytes);
        }
    }

    /// Bytes still held.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn reservations_beyond_the_budget_are_refused_and_return_on_drop() {
        let b = MemoryBudget::new(1024 * MIB);
        let a = b.reserve(8 * 32 * MIB, None).unwrap();
        let c = b.reserve(512 * MIB, None).unwrap();
        assert_eq!(b.used(), 768 * MIB);
        // 256 MiB left: 257 MiB does not fit, 256 MiB does.
        assert_eq!(b.reserve(257 * MIB, None).err(), Some(256 * MIB));
        drop(a);
        assert_eq!(b.used(), 512 * MIB);
        let d = b.reserve(512 * MIB, None).unwrap();
        assert_eq!(b.used(), 1024 * MIB);
        assert!(b.reserve(1, None).is_err());
        drop((c, d));
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_replacement_may_reuse_what_the_old_binding_holds() {
        let b = MemoryBudget::new(100);
        let old = b.reserve(80, None).unwrap();
        assert!(b.reserve(30, None).is_err());
        // Replacing `old`: its 80 count as free until it is released.
        let new = b.reserve(90, Some(&old)).unwrap();
        old.release();
        old.release();
        assert_eq!(b.used(), 90);
        assert_eq!(old.bytes(), 0);
        drop(old);
        assert_eq!(b.used(), 90);
        drop(new);
        assert_eq!(b.used(), 0);
        // A replacement larger than the old one plus what is left is refused.
        let old = b.reserve(50, None).unwrap();
        let _other = b.reserve(40, None).unwrap();
        assert_eq!(b.reserve(61, Some(&old)).err(), Some(60));
    }

    #[test]
    fn a_reservation_of_another_budget_gives_no_credit() {
        let b = MemoryBudget::new(100);
        let other = MemoryBudget::new(100);
        let foreign = other.reserve(100, None).unwrap();
        let _held = b.reserve(100, None).unwrap();
        assert!(b.reserve(10, Some(&foreign)).is_err());
    }
}
