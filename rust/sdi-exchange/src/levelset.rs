//! A two-level bitset over price levels: which levels hold orders.
//!
//! The best bid is the highest set bit, the best ask the lowest; when a level
//! empties, the next best is found with `trailing_zeros`/`leading_zeros` on at
//! most a few words instead of walking empty levels.

#[derive(Clone, Debug)]
pub struct LevelSet {
    words: Vec<u64>,
    summary: Vec<u64>,
}

impl LevelSet {
    pub fn new(levels: usize) -> Self {
        let words = levels.div_ceil(64).max(1);
        Self {
            words: vec![0; words],
            summary: vec![0; words.div_ceil(64)],
        }
    }

    #[inline]
    pub fn insert(&mut self, index: usize) {
        let word = index >> 6;
        self.words[word] |= 1 << (index & 63);
        self.summary[word >> 6] |= 1 << (word & 63);
    }

    #[inline]
    pub fn remove(&mut self, index: usize) {
        let word = index >> 6;
        self.words[word] &= !(1 << (index & 63));
        if self.words[word] == 0 {
            self.summary[word >> 6] &= !(1 << (word & 63));
        }
    }

    #[cfg(test)]
    pub fn contains(&self, index: usize) -> bool {
        self.words[index >> 6] & (1 << (index & 63)) != 0
    }

    /// The lowest set index `>= from`, if any.
    #[inline]
    pub fn next_at_or_above(&self, from: usize) -> Option<usize> {
        let mut word = from >> 6;
        if word >= self.words.len() {
            return None;
        }
        let bits = self.words[word] & (u64::MAX << (from & 63));
        if bits != 0 {
            return Some((word << 6) | bits.trailing_zeros() as usize);
        }
        word += 1;
        if word >= self.words.len() {
            return None;
        }
        let mut group = word >> 6;
        let mut mask = u64::MAX << (word & 63);
        loop {
            let groups = self.summary[group] & mask;
            if groups != 0 {
                let found = (group << 6) | groups.trailing_zeros() as usize;
                return Some((found << 6) | self.words[found].trailing_zeros() as usize);
            }
            group += 1;
            if group >= self.summary.len() {
                return None;
            }
            mask = u64::MAX;
        }
    }

    /// The highest set index `<= from`, if any.
    #[inline]
    pub fn next_at_or_below(&self, from: usize) -> Option<usize> {
        let from = from.min(self.words.len() * 64 - 1);
        let word = from >> 6;
        let shift = 63 - (from & 63);
        let bits = self.words[word] & (u64::MAX >> shift);
        if bits != 0 {
            return Some((word << 6) | (63 - bits.leading_zeros() as usize));
        }
        if word == 0 {
            return None;
        }
        let word = word - 1;
        let mut group = word >> 6;
        let mut mask = u64::MAX >> (63 - (word & 63));
        loop {
            let groups = self.summary[group] & mask;
            if groups != 0 {
                let found = (group << 6) | (63 - groups.leading_zeros() as usize);
                return Some((found << 6) | (63 - self.words[found].leading_zeros() as usize));
            }
            if group == 0 {
                return None;
            }
            group -= 1;
            mask = u64::MAX;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn matches_a_btreeset(
            levels in 1usize..9000,
            ops in proptest::collection::vec((any::<bool>(), any::<usize>()), 0..300),
            probes in proptest::collection::vec(any::<usize>(), 1..50),
        ) {
            let mut set = LevelSet::new(levels);
            let mut model = BTreeSet::new();
            for (insert, raw) in ops {
                let index = raw % levels;
                if insert { set.insert(index); model.insert(index); }
                else { set.remove(index); model.remove(&index); }
            }
            for raw in probes {
                let from = raw % levels;
                prop_assert_eq!(set.contains(from), model.contains(&from));
                prop_assert_eq!(set.next_at_or_above(from), model.range(from..).next().copied());
                prop_assert_eq!(set.next_at_or_below(from), model.range(..=from).next_back().copied());
            }
        }
    }

    #[test]
    fn far_apart_levels_are_found() {
        let mut set = LevelSet::new(1 << 20);
        set.insert(5);
        set.insert((1 << 20) - 1);
        assert_eq!(set.next_at_or_above(6), Some((1 << 20) - 1));
        assert_eq!(set.next_at_or_below((1 << 20) - 2), Some(5));
        set.remove(5);
        assert_eq!(set.next_at_or_below((1 << 20) - 2), None);
        assert_eq!(set.next_at_or_above(0), Some((1 << 20) - 1));
    }
}
