//! Order id -> slab slot: an open-addressing table with linear probing.
//!
//! The gateway hands out order ids from a counter, so the ids resting at any
//! moment are mostly recent and close together. Indexing by the id's low bits
//! (no hashing) keeps those entries on few cache lines, and linear probing
//! with backward-shift deletion needs no tombstones. The table is sized at
//! start to at least twice the order capacity and never grows. (Ids chosen to
//! collide in their low bits make probes long, never wrong.)

const EMPTY: u64 = u64::MAX;

#[derive(Clone, Copy)]
struct Entry {
    id: u64,
    slot: u32,
}

pub struct IdIndex {
    entries: Vec<Entry>,
    mask: usize,
    len: usize,
}

impl IdIndex {
    /// A table for up to `capacity` ids (`u64::MAX` is reserved and never stored).
    pub fn with_capacity(capacity: usize) -> Self {
        let size = (capacity.max(8) * 2).next_power_of_two();
        Self {
            entries: vec![Entry { id: EMPTY, slot: 0 }; size],
            mask: size - 1,
            len: 0,
        }
    }

    #[inline]
    fn home(&self, id: u64) -> usize {
        id as usize & self.mask
    }

    #[inline]
    pub fn get(&self, id: u64) -> Option<u32> {
        if id == EMPTY {
            return None;
        }
        let mut at = self.home(id);
        loop {
            let entry = self.entries[at];
            if entry.id == id {
                return Some(entry.slot);
            }
            if entry.id == EMPTY {
                return None;
            }
            at = (at + 1) & self.mask;
        }
    }

    #[inline]
    pub fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    /// Inserts a new id; the caller has checked that it is absent and that
    /// fewer than `capacity` ids are stored.
    #[inline]
    pub fn insert(&mut self, id: u64, slot: u32) {
        debug_assert!(id != EMPTY && self.len < self.entries.len() / 2);
        let mut at = self.home(id);
        while self.entries[at].id != EMPTY {
            debug_assert!(self.entries[at].id != id, "id {id} inserted twice");
            at = (at + 1) & self.mask;
        }
        self.entries[at] = Entry { id, slot };
        self.len += 1;
    }

    /// Removes `id` if present, shifting later entries of its probe run back.
    #[inline]
    pub fn remove(&mut self, id: u64) {
        if id == EMPTY {
            return;
        }
        let mut at = self.home(id);
        loop {
            let entry = self.entries[at];
            if entry.id == EMPTY {
                return;
            }
            if entry.id == id {
                break;
            }
            at = (at + 1) & self.mask;
        }
        self.len -= 1;
        // Backward-shift deletion: move each following entry of the run into
        // the hole unless its home lies (cyclically) after the hole.
        let mut hole = at;
        let mut next = (hole + 1) & self.mask;
        loop {
            let entry = self.entries[next];
            if entry.id == EMPTY {
                break;
            }
            let home = self.home(entry.id);
            let distance_to_home = next.wrapping_sub(home) & self.mask;
            let distance_to_hole = next.wrapping_sub(hole) & self.mask;
            if distance_to_home >= distance_to_hole {
                self.entries[hole] = entry;
                hole = next;
            }
            next = (next + 1) & self.mask;
        }
        self.entries[hole] = Entry { id: EMPTY, slot: 0 };
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        #[test]
        fn matches_a_hashmap(
            ops in proptest::collection::vec((any::<bool>(), 0u64..96, any::<u32>()), 0..400),
            stride in prop_oneof![Just(1u64), Just(16u64), Just(1u64 << 20)],
        ) {
            // Small tables and strided ids force long probe runs and wrap-around.
            let mut index = IdIndex::with_capacity(24);
            let mut model = HashMap::new();
            for (insert, raw, slot) in ops {
                let id = raw * stride;
                if insert {
                    if !model.contains_key(&id) && model.len() < 24 {
                        index.insert(id, slot);
                        model.insert(id, slot);
                    }
                } else {
                    index.remove(id);
                    model.remove(&id);
                }
                prop_assert_eq!(index.len(), model.len());
                for probe in 0u64..96 {
                    let key = probe * stride;
                    prop_assert_eq!(index.get(key), model.get(&key).copied());
                }
            }
        }
    }

    #[test]
    fn the_reserved_id_is_never_found() {
        let index = IdIndex::with_capacity(8);
        assert_eq!(index.get(u64::MAX), None);
    }
}
