//! The node-wide budget of plugin instances: memory and instance slots.
//!
//! Each binding may hold `max_instances` instances of at most
//! `memory_bytes` each; nothing else bounds what all bindings together
//! (and the filter variants subscribers create) may take. A binding
//! reserves `memory_bytes × max_instances` bytes and `max_instances` slots
//! of the budget when it is built and is refused when that does not fit;
//! the reservation returns to the budget when the binding is dropped, or
//! earlier when the binding is replaced or unbound
//! ([`Reservation::release`]). The slots are those of wasmtime's pooling
//! allocator: without them, a binding accepted by the memory budget could
//! fail to create its instances once the pool is full.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// The budget: how many bytes and instance slots all reservations may hold
/// together.
pub(crate) struct MemoryBudget {
    total: u64,
    slots: u64,
    /// Bytes and slots reserved.
    used: Mutex<(u64, u64)>,
}

/// What a refused reservation lacked, and how much of it is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shortfall {
    Bytes(u64),
    Slots(u64),
}

/// Bytes and slots held of a [`MemoryBudget`]; returned when dropped or
/// released.
pub(crate) struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: AtomicU64,
    slots: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `total` bytes and `slots` instance slots (`u64::MAX`:
    /// instances are not pooled, so only memory bounds them).
    pub fn new(total: u64, slots: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            total,
            slots,
            used: Mutex::new((0, 0)),
        })
    }

    /// The budget's size in bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The budget's instance slots.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.lock().0
    }

    /// Slots reserved now.
    pub fn used_slots(&self) -> u64 {
        self.used.lock().1
    }

    /// Reserves `bytes` and `slots`, counting what `replacing` (a
    /// reservation about to be released) holds as free.
    pub fn reserve(
        self: &Arc<Self>,
        bytes: u64,
        slots: u64,
        replacing: Option<&Reservation>,
    ) -> Result<Reservation, Shortfall> {
        let mut used = self.used.lock();
        let (credit_bytes, credit_slots) = replacing
            .filter(|r| Arc::ptr_eq(&r.budget, self))
            .map_or((0, 0), |r| {
                (
                    r.bytes.load(Ordering::Relaxed),
                    r.slots.load(Ordering::Relaxed),
                )
            });
        let left = self
            .total
            .saturating_sub(used.0.saturating_sub(credit_bytes));
        if bytes > left {
            return Err(Shortfall::Bytes(left));
        }
        let left_slots = self
            .slots
            .saturating_sub(used.1.saturating_sub(credit_slots));
        if slots > left_slots {
            return Err(Shortfall::Slots(left_slots));
        }
        used.0 += bytes;
        used.1 += slots;
        Ok(Reservation {
            budget: self.clone(),
            bytes: AtomicU64::new(bytes),
            slots: AtomicU64::new(slots),
        })
    }
}

impl Reservation {
    /// Returns the bytes and slots to the budget now (idempotent).
    pub fn release(&self) {
        let bytes = self.bytes.swap(0, Ordering::Relaxed);
        let slots = self.slots.swap(0, Ordering::Relaxed);
        if bytes > 0 || slots > 0 {
            let mut used = self.budget.used.lock();
            used.0 = used.0.saturating_sub(bytes);
            used.1 = used.1.saturating_sub(slots);
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
        let b = MemoryBudget::new(1024 * MIB, u64::MAX);
        let a = b.reserve(8 * 32 * MIB, 1, None).unwrap();
        let c = b.reserve(512 * MIB, 1, None).unwrap();
        assert_eq!(b.used(), 768 * MIB);
        // 256 MiB left: 257 MiB does not fit, 256 MiB does.
        assert_eq!(
            b.reserve(257 * MIB, 1, None).err(),
            Some(Shortfall::Bytes(256 * MIB))
        );
        drop(a);
        assert_eq!(b.used(), 512 * MIB);
        let d = b.reserve(512 * MIB, 1, None).unwrap();
        assert_eq!(b.used(), 1024 * MIB);
        assert!(b.reserve(1, 1, None).is_err());
        drop((c, d));
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_replacement_may_reuse_what_the_old_binding_holds() {
        let b = MemoryBudget::new(100, u64::MAX);
        let old = b.reserve(80, 1, None).unwrap();
        assert!(b.reserve(30, 1, None).is_err());
        // Replacing `old`: its 80 count as free until it is released.
        let new = b.reserve(90, 1, Some(&old)).unwrap();
        old.release();
        old.release();
        assert_eq!(b.used(), 90);
        assert_eq!(old.bytes(), 0);
        drop(old);
        assert_eq!(b.used(), 90);
        drop(new);
        assert_eq!(b.used(), 0);
        // A replacement larger than the old one plus what is left is refused.
        let old = b.reserve(50, 1, None).unwrap();
        let _other = b.reserve(40, 1, None).unwrap();
        assert_eq!(
            b.reserve(61, 1, Some(&old)).err(),
            Some(Shortfall::Bytes(60))
        );
    }

    #[test]
    fn a_reservation_of_another_budget_gives_no_credit() {
        let b = MemoryBudget::new(100, u64::MAX);
        let other = MemoryBudget::new(100, u64::MAX);
        let foreign = other.reserve(100, 1, None).unwrap();
        let _held = b.reserve(100, 1, None).unwrap();
        assert!(b.reserve(10, 1, Some(&foreign)).is_err());
    }

    #[test]
    fn instance_slots_are_reserved_like_memory() {
        let b = MemoryBudget::new(1024 * MIB, 10);
        let a = b.reserve(4 * MIB, 4, None).unwrap();
        let c = b.reserve(4 * MIB, 4, None).unwrap();
        assert_eq!((b.used(), b.used_slots()), (8 * MIB, 8));
        // Memory is left, slots are not.
        assert_eq!(b.reserve(MIB, 3, None).err(), Some(Shortfall::Slots(2)));
        // A replacement may reuse the slots of the one it replaces.
        let a2 = b.reserve(MIB, 6, Some(&a)).unwrap();
        a.release();
        assert_eq!(b.used_slots(), 10);
        drop((a2, c));
        assert_eq!((b.used(), b.used_slots()), (0, 0));
    }
}
