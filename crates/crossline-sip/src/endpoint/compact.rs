//! Tables that give their memory back. A burst of calls grows the
//! endpoint's maps (transactions live 32 s after a call, so 1,000 calls a
//! second keep tens of thousands), and a `HashMap` never shrinks by itself:
//! without this, the capacity of the busiest second stays allocated for
//! the life of the process.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::Hash;
use std::mem::size_of;

/// Tables whose slots take up to this many bytes are left alone: too small
/// to matter, and steady light traffic mustn't make them shrink and grow
/// again. Bytes, not slots: a call's slot is over 1.5 KB, so 1,024 of them
/// kept 1.7 MB after every burst.
const KEEP_BYTES: usize = 64 * 1024;

/// Shrink to twice the entries once at most a quarter of the slots are
/// used. After a shrink the table is half full, so it must lose half its
/// entries again (or double) before the next shrink or growth: a steady
/// load never rehashes back and forth.
pub(super) trait Compact {
    fn compact(&mut self);
}

fn worth_shrinking(len: usize, capacity: usize, slot_bytes: usize) -> bool {
    capacity.saturating_mul(slot_bytes) > KEEP_BYTES && len.saturating_mul(4) < capacity
}

impl<K: Eq + Hash, V> Compact for HashMap<K, V> {
    fn compact(&mut self) {
        if worth_shrinking(self.len(), self.capacity(), size_of::<(K, V)>()) {
            self.shrink_to(self.len() * 2);
        }
    }
}

impl<T: Ord> Compact for BinaryHeap<T> {
    fn compact(&mut self) {
        if worth_shrinking(self.len(), self.capacity(), size_of::<T>()) {
            self.shrink_to(self.len() * 2);
        }
    }
}

impl<T> Compact for VecDeque<T> {
    fn compact(&mut self) {
        if worth_shrinking(self.len(), self.capacity(), size_of::<T>()) {
            self.shrink_to(self.len() * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mostly_empty_table_shrinks_and_a_small_or_busy_one_does_not() {
        let mut m: HashMap<u32, [u8; 64]> = (0..50_000).map(|i| (i, [0; 64])).collect();
        let grown = m.capacity();
        // 30 % full: left as it is.
        let keep = (grown * 3 / 10) as u32;
        m.retain(|k, _| *k < keep);
        let before = m.capacity();
        m.compact();
        assert_eq!(m.capacity(), before);
        m.retain(|k, _| *k < 1_000);
        m.compact();
        assert!(m.capacity() <= grown / 16, "{}", m.capacity());
        assert!(m.capacity() >= 2_000);
        assert_eq!(m.len(), 1_000);
        // Small tables keep their slots.
        let mut small: HashMap<u32, u32> = (0..800).map(|i| (i, i)).collect();
        let cap = small.capacity();
        small.clear();
        small.compact();
        assert_eq!(small.capacity(), cap);
        // A table of few but wide slots is not small: emptied, it lets go.
        let mut wide: HashMap<u32, [u8; 1700]> = (0..600).map(|i| (i, [0; 1700])).collect();
        wide.clear();
        wide.compact();
        assert_eq!(wide.capacity(), 0);

        let mut heap: BinaryHeap<u64> = (0..10_000).collect();
        heap.retain(|x| *x < 100);
        heap.compact();
        assert!(heap.capacity() < 1_000);
        assert_eq!(heap.peek(), Some(&99));
        let mut queue: VecDeque<u64> = (0..10_000).collect();
        queue.truncate(10);
        queue.compact();
        assert!(queue.capacity() < 1_000);
        assert_eq!(queue.len(), 10);
    }
}
