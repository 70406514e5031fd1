//! The counted B+tree and the member index behind [`crate::ZSet`].
//!
//! * Leaves hold up to [`LEAF_MAX`] elements in key order: the scores in one
//!   vector, the member bytes back to back in another, and the end offset of
//!   each member in a third. A member's bytes live only here.
//! * Inner nodes hold up to [`INNER_MAX`] children, the number of elements
//!   under each child (for ranks) and separator keys (a copy of the first key
//!   of the right child at the time of the split).
//! * The member index is an open-addressing table (linear probing) of `u32`
//!   slots, each the id of the leaf holding the member and a 7-bit hash tag.
//!   A lookup verifies a candidate by finding the member's bytes in the leaf.
//!   Slots that hold the same (leaf, tag) are interchangeable: when a member
//!   moves to another leaf (split, merge) or leaves, the first such slot in
//!   its probe run is rewritten. Removal leaves a tombstone; a rebuild from
//!   the leaves drops them.
//! * Bulk build ([`Tree::build_sorted`]): sorted input into an empty tree
//!   fills leaves to [`LEAF_FILL`] (7/8, so that the first inserts do not
//!   split every leaf), builds the inner levels bottom-up with counts and
//!   separators, then the index in one pass over the leaves (hashing a leaf
//!   ahead and prefetching its slots), checking for repeated members.
//! * Score changes ([`Tree::update_in_place`], [`Tree::move_key`]): within
//!   the leaf when the new key is strictly inside it (no descent, no index
//!   or count change); else one descent finds both the old and the new
//!   place, and the element moves between leaves by retargeting its index
//!   slot and changing the counts below the two paths' common node. Only
//!   when the old leaf would underflow is it removed and reinserted.

use std::cmp::Ordering;

/// Most elements in a leaf; a leaf that grows past it splits in two.
#[cfg(not(test))]
pub(crate) const LEAF_MAX: usize = 64;
/// Small nodes under test, so that the property test builds deep trees.
#[cfg(test)]
pub(crate) const LEAF_MAX: usize = 8;
/// A leaf below this many elements merges with a neighbour when they fit.
const LEAF_MIN: usize = LEAF_MAX / 4;
/// Most children of an inner node.
#[cfg(not(test))]
pub(crate) const INNER_MAX: usize = 64;
#[cfg(test)]
pub(crate) const INNER_MAX: usize = 8;
/// An inner node below this many children merges with a neighbour when they fit.
const INNER_MIN: usize = INNER_MAX / 4;
/// Elements per leaf in a bulk build: 7/8 full, so that the first inserts
/// into a loaded set do not split every leaf at once.
const LEAF_FILL: usize = LEAF_MAX * 7 / 8;
/// Children per inner node in a bulk build.
const INNER_FILL: usize = INNER_MAX * 7 / 8;
/// No leaf (end of the leaf chain).
const NONE: u32 = u32::MAX;
/// Deepest tree: fan-out is at least 2, and 2^48 elements do not fit in memory.
const MAX_DEPTH: usize = 48;
/// Capacity steps of the leaf vectors (elements) and byte buffers (bytes).
const STEP: usize = 8;
const BYTES_STEP: usize = 64;

const EMPTY: u32 = u32::MAX;
const TOMB: u32 = u32::MAX - 1;
const TAG_BITS: u32 = 7;
const TAG_MASK: u32 = (1 << TAG_BITS) - 1;
/// Leaf ids must fit the index slot beside the tag (and stay clear of the
/// two sentinels).
pub(crate) const MAX_LEAVES: usize = (1 << (32 - TAG_BITS)) - 2;

/// Redis order: by score (`-0.0 == 0.0`), ties by member bytes.
#[inline]
pub(crate) fn cmp_key(s1: f64, m1: &[u8], s2: f64, m2: &[u8]) -> Ordering {
    match s1.partial_cmp(&s2) {
        Some(Ordering::Equal) | None => m1.cmp(m2),
        Some(o) => o,
    }
}

#[inline]
fn fold(x: u64, k: u64) -> u64 {
    let r = u128::from(x) * u128::from(k);
    (r as u64) ^ ((r >> 64) as u64)
}

/// A keyed multiply-fold hash of the member bytes.
#[inline]
pub(crate) fn hash(seed: u64, m: &[u8]) -> u64 {
    const K1: u64 = 0x9E37_79B9_7F4A_7C15;
    const K2: u64 = 0xD6E8_FEB8_6659_FD93;
    let mut h = seed ^ (m.len() as u64).wrapping_mul(K1);
    let mut chunks = m.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = fold(h ^ v, K2);
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rem.len()].copy_from_slice(rem);
        h = fold(h ^ u64::from_le_bytes(buf), K2);
    }
    fold(h ^ K1, K2 ^ seed)
}

/// Asks the CPU to fetch the cache line at `p` (a hint; no access).
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache hierarchy: it does not
    // dereference the pointer, cannot fault, and SSE is baseline on x86_64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches every cache line of `v`: a binary search over a cold array
/// then waits for one round of misses instead of one per step.
#[inline(always)]
fn prefetch_all<T>(v: &[T]) {
    let range = v.as_ptr_range();
    let (mut p, end) = (range.start.cast::<u8>(), range.end.cast::<u8>());
    while p < end {
        prefetch(p);
        p = p.wrapping_add(64);
    }
}

fn reserve<T>(v: &mut Vec<T>, extra: usize, step: usize) {
    if v.capacity() - v.len() < extra {
        v.reserve_exact(extra.max(step));
    }
}

/// A member end offset in a leaf's byte buffer.
trait Off: Copy {
    const SIZE: usize;
    fn get(self) -> usize;
    fn make(x: usize) -> Self;
}

impl Off for u16 {
    const SIZE: usize = 2;
    #[inline]
    fn get(self) -> usize {
        usize::from(self)
    }
    #[inline]
    fn make(x: usize) -> Self {
        x as u16
    }
}

impl Off for u32 {
    const SIZE: usize = 4;
    #[inline]
    fn get(self) -> usize {
        self as usize
    }
    #[inline]
    fn make(x: usize) -> Self {
        x as u32
    }
}

/// End offsets: 2 bytes each while the leaf's bytes fit 64 KiB, else 4.
enum Ends {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

impl Default for Ends {
    fn default() -> Self {
        Ends::Narrow(Vec::new())
    }
}

macro_rules! ends {
    ($e:expr, $v:ident => $body:expr) => {
        match $e {
            Ends::Narrow($v) => $body,
            Ends::Wide($v) => $body,
        }
    };
}

impl Ends {
    fn build(offsets: impl Iterator<Item = usize>, cap: usize, last: usize) -> Ends {
        if last <= usize::from(u16::MAX) {
            let mut v = Vec::with_capacity(cap);
            v.extend(offsets.map(|x| x as u16));
            Ends::Narrow(v)
        } else {
            let mut v = Vec::with_capacity(cap);
            v.extend(offsets.map(|x| x as u32));
            Ends::Wide(v)
        }
    }
    /// Switches to 4-byte offsets when `total` bytes need them.
    fn fit(&mut self, total: usize) {
        if total > usize::from(u16::MAX) {
            if let Ends::Narrow(v) = self {
                let mut w = Vec::with_capacity(v.capacity());
                w.extend(v.iter().map(|&x| u32::from(x)));
                *self = Ends::Wide(w);
            }
        }
    }
}

#[derive(Default)]
pub(crate) struct Leaf {
    scores: Vec<f64>,
    ends: Ends,
    bytes: Vec<u8>,
    prev: u32,
    next: u32,
}

impl Leaf {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.scores.len()
    }
    #[inline]
    fn end(&self, i: usize) -> usize {
        ends!(&self.ends, v => v[i].get())
    }
    #[inline]
    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.end(i - 1)
        }
    }
    #[inline]
    pub(crate) fn score(&self, i: usize) -> f64 {
        self.scores[i]
    }
    #[inline]
    pub(crate) fn member(&self, i: usize) -> &[u8] {
        &self.bytes[self.start(i)..self.end(i)]
    }
    fn find(&self, m: &[u8]) -> Option<usize> {
        let n = m.len();
        if n >= 8 {
            // Compare the last 8 bytes first (where keys built from counters
            // differ), as one word, before the rest: no memcmp call per element.
            let tail = u64::from_ne_bytes(m[n - 8..].try_into().expect("8 bytes"));
            let head = &m[..n - 8];
            return ends!(&self.ends, v => {
                let mut start = 0usize;
                for (i, e) in v.iter().enumerate() {
                    let e = e.get();
                    if e - start == n {
                        let t = u64::from_ne_bytes(self.bytes[e - 8..e].try_into().expect("8 bytes"));
                        if t == tail && self.bytes[start..e - 8] == *head {
                            return Some(i);
                        }
                    }
                    start = e;
                }
                None
            });
        }
        ends!(&self.ends, v => {
            let mut start = 0usize;
            for (i, e) in v.iter().enumerate() {
                let e = e.get();
                if e - start == m.len() && self.bytes[start..e] == *m {
                    return Some(i);
                }
                start = e;
            }
            None
        })
    }
    /// Number of leading elements for which `pred` holds (`pred` is true then false).
    fn partition(&self, pred: &impl Fn(f64, &[u8]) -> bool) -> usize {
        prefetch_all(&self.scores);
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if pred(self.scores[mid], self.member(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
    fn insert(&mut self, i: usize, score: f64, m: &[u8]) {
        reserve(&mut self.scores, 1, STEP);
        reserve(&mut self.bytes, m.len(), BYTES_STEP);
        self.ends.fit(self.bytes.len() + m.len());
        let at = self.start(i);
        self.bytes.splice(at..at, m.iter().copied());
        self.scores.insert(i, score);
        let n = m.len();
        ends!(&mut self.ends, v => {
            reserve(v, 1, STEP);
            v.insert(i, Off::make(at + n));
            for e in &mut v[i + 1..] {
                *e = Off::make(e.get() + n);
            }
        });
    }
    fn remove(&mut self, i: usize) {
        let (a, b) = (self.start(i), self.end(i));
        self.bytes.drain(a..b);
        self.scores.remove(i);
        let n = b - a;
        ends!(&mut self.ends, v => {
            v.remove(i);
            for e in &mut v[i..] {
                *e = Off::make(e.get() - n);
            }
        });
        // Give back capacity a shrinking leaf no longer needs.
        if self.scores.capacity() > self.len() + 2 * STEP
            || self.bytes.capacity() > self.bytes.len() + 2 * BYTES_STEP
        {
            self.shrink();
        }
    }
    fn shrink(&mut self) {
        let n = self.len() + STEP / 2;
        self.scores.shrink_to(n);
        ends!(&mut self.ends, v => v.shrink_to(n));
        let b = self.bytes.len() + BYTES_STEP / 2;
        self.bytes.shrink_to(b);
    }
    /// Moves elements `at..` to a new leaf.
    fn split_off(&mut self, at: usize) -> Leaf {
        let cut = self.start(at);
        let n = self.len() - at;
        let len = self.len();
        let right_bytes = self.bytes.len() - cut;
        let mut right = Leaf {
            scores: Vec::with_capacity(n + STEP / 2),
            ends: Ends::build(
                (at..len).map(|i| self.end(i) - cut),
                n + STEP / 2,
                right_bytes,
            ),
            bytes: Vec::with_capacity(right_bytes + BYTES_STEP / 2),
            prev: NONE,
            next: NONE,
        };
        right.scores.extend_from_slice(&self.scores[at..]);
        right.bytes.extend_from_slice(&self.bytes[cut..]);
        self.scores.truncate(at);
        ends!(&mut self.ends, v => v.truncate(at));
        self.bytes.truncate(cut);
        if cut <= usize::from(u16::MAX) && matches!(self.ends, Ends::Wide(_)) {
            self.ends = Ends::build((0..at).map(|i| self.end(i)), at + STEP / 2, cut);
        }
        self.shrink();
        right
    }
    fn append(&mut self, other: &Leaf) {
        let base = self.bytes.len();
        reserve(&mut self.scores, other.len(), STEP);
        reserve(&mut self.bytes, other.bytes.len(), BYTES_STEP);
        self.ends.fit(base + other.bytes.len());
        ends!(&mut self.ends, v => {
            reserve(v, other.len(), STEP);
            for i in 0..other.len() {
                v.push(Off::make(other.end(i) + base));
            }
        });
        self.scores.extend_from_slice(&other.scores);
        self.bytes.extend_from_slice(&other.bytes);
    }
    fn heap_bytes(&self) -> usize {
        self.scores.capacity() * 8
            + ends!(&self.ends, v => v.capacity() * size_of_off(v))
            + self.bytes.capacity()
    }
}

fn size_of_off<T: Off>(_: &[T]) -> usize {
    T::SIZE
}

#[derive(Default)]
struct Inner {
    keys: Vec<(f64, Box<[u8]>)>,
    children: Vec<u32>,
    counts: Vec<u64>,
}

impl Inner {
    fn heap_bytes(&self) -> usize {
        self.keys.capacity() * std::mem::size_of::<(f64, Box<[u8]>)>()
            + self.keys.iter().map(|k| k.1.len()).sum::<usize>()
            + self.children.capacity() * 4
            + self.counts.capacity() * 8
    }
}

/// The inner nodes from the root down to a leaf, with the child taken at each.
pub(crate) struct Path {
    nodes: [(u32, u32); MAX_DEPTH],
    len: usize,
}

impl Path {
    pub(crate) fn new() -> Self {
        Path {
            nodes: [(0, 0); MAX_DEPTH],
            len: 0,
        }
    }
    fn push(&mut self, node: u32, child: usize) {
        self.nodes[self.len] = (node, child as u32);
        self.len += 1;
    }
}

struct Index {
    slots: Vec<u32>,
    live: usize,
    tombs: usize,
    seed: u64,
}

impl Index {
    #[inline]
    fn home(&self, h: u64) -> usize {
        ((u128::from(h) * self.slots.len() as u128) >> 64) as usize
    }
    #[inline]
    fn step(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }
    fn find(&self, leaves: &[Leaf], m: &[u8], h: u64) -> Option<(u32, usize)> {
        if self.slots.is_empty() {
            return None;
        }
        let tag = (h as u32) & TAG_MASK;
        let mut i = self.home(h);
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return None;
            }
            if s != TOMB && s & TAG_MASK == tag {
                let leaf = s >> TAG_BITS;
                if let Some(pos) = leaves[leaf as usize].find(m) {
                    return Some((leaf, pos));
                }
            }
            i = self.step(i);
        }
    }
    /// Adds a slot; the caller made room ([`Tree::reserve_index`]).
    fn insert(&mut self, h: u64, leaf: u32) {
        let mut i = self.home(h);
        loop {
            let s = self.slots[i];
            if s == EMPTY || s == TOMB {
                if s == TOMB {
                    self.tombs -= 1;
                }
                self.slots[i] = (leaf << TAG_BITS) | ((h as u32) & TAG_MASK);
                self.live += 1;
                return;
            }
            i = self.step(i);
        }
    }
    /// Adds the slot of the member at `pos` of `leaf` unless its member
    /// is already indexed (then false); the caller made room.
    fn insert_new(&mut self, leaves: &[Leaf], h: u64, leaf: u32, pos: usize) -> bool {
        let tag = (h as u32) & TAG_MASK;
        let mut i = self.home(h);
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                self.slots[i] = (leaf << TAG_BITS) | tag;
                self.live += 1;
                return true;
            }
            if s != TOMB && s & TAG_MASK == tag {
                let l = &leaves[leaf as usize];
                let other = s >> TAG_BITS;
                let m = l.member(pos);
                let dup = if other == leaf {
                    // The member itself is in this leaf: look for another copy.
                    (0..l.len()).any(|i| i != pos && l.member(i) == m)
                } else {
                    leaves[other as usize].find(m).is_some()
                };
                if dup {
                    return false;
                }
            }
            i = self.step(i);
        }
    }
    /// The first slot of `h`'s run holding (`leaf`, tag of `h`).
    fn position(&self, h: u64, leaf: u32) -> usize {
        let want = (leaf << TAG_BITS) | ((h as u32) & TAG_MASK);
        let mut i = self.home(h);
        loop {
            let s = self.slots[i];
            assert!(s != EMPTY, "sdi-zset: member index lost a slot");
            if s == want {
                return i;
            }
            i = self.step(i);
        }
    }
    fn retarget(&mut self, h: u64, from: u32, to: u32) {
        if from != to {
            let i = self.position(h, from);
            self.slots[i] = (to << TAG_BITS) | ((h as u32) & TAG_MASK);
        }
    }
    fn remove(&mut self, h: u64, leaf: u32) {
        let i = self.position(h, leaf);
        self.slots[i] = TOMB;
        self.live -= 1;
        self.tombs += 1;
    }
}

/// The sorted set's storage: the tree, the leaf chain and the member index.
pub(crate) struct Tree {
    leaves: Vec<Leaf>,
    free_leaves: Vec<u32>,
    inners: Vec<Inner>,
    free_inners: Vec<u32>,
    root: u32,
    /// 0: the root is a leaf.
    height: usize,
    len: usize,
    index: Index,
}

impl Tree {
    pub(crate) fn new() -> Self {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5d1_u64);
        Tree {
            leaves: vec![Leaf {
                prev: NONE,
                next: NONE,
                ..Leaf::default()
            }],
            free_leaves: Vec::new(),
            inners: Vec::new(),
            free_inners: Vec::new(),
            root: 0,
            height: 0,
            len: 0,
            index: Index {
                slots: Vec::new(),
                live: 0,
                tombs: 0,
                seed,
            },
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn hash(&self, m: &[u8]) -> u64 {
        hash(self.index.seed, m)
    }

    pub(crate) fn leaf(&self, id: u32) -> &Leaf {
        &self.leaves[id as usize]
    }

    pub(crate) fn next_leaf(&self, id: u32) -> u32 {
        self.leaves[id as usize].next
    }

    pub(crate) fn prev_leaf(&self, id: u32) -> u32 {
        self.leaves[id as usize].prev
    }

    /// Batch pipelines, stage 1: fetch the member's home slot.
    pub(crate) fn prefetch_slot(&self, h: u64) {
        if !self.index.slots.is_empty() {
            prefetch(&self.index.slots[self.index.home(h)]);
        }
    }

    /// The leaf of the first slot of the member's run that carries its tag.
    fn candidate(&self, h: u64) -> Option<&Leaf> {
        if self.index.slots.is_empty() {
            return None;
        }
        let s = self.index.slots[self.index.home(h)];
        (s < TOMB && s & TAG_MASK == (h as u32) & TAG_MASK)
            .then(|| &self.leaves[(s >> TAG_BITS) as usize])
    }

    /// Stage 2: fetch the header of the leaf the home slot points to.
    pub(crate) fn prefetch_leaf(&self, h: u64) {
        if let Some(l) = self.candidate(h) {
            prefetch(l);
        }
    }

    /// Stage 3: fetch the start of that leaf's arrays.
    pub(crate) fn prefetch_arrays(&self, h: u64) {
        if let Some(l) = self.candidate(h) {
            prefetch(l.scores.as_ptr());
            prefetch(l.bytes.as_ptr());
            ends!(&l.ends, v => prefetch(v.as_ptr()));
        }
    }

    /// Where a member is: (leaf, position in it).
    pub(crate) fn find(&self, m: &[u8], h: u64) -> Option<(u32, usize)> {
        self.index.find(&self.leaves, m, h)
    }

    /// The number of leading elements (in order) for which `pred` holds,
    /// with the leaf and position of the boundary. `pred` must be true on a
    /// prefix of the order and false after it.
    pub(crate) fn descend(
        &self,
        pred: impl Fn(f64, &[u8]) -> bool,
        path: &mut Path,
    ) -> (u32, usize, usize) {
        let mut node = self.root;
        let mut rank = 0usize;
        path.len = 0;
        for _ in 0..self.height {
            let inner = &self.inners[node as usize];
            let c = inner.keys.partition_point(|(s, m)| pred(*s, m));
            rank += inner.counts[..c].iter().sum::<u64>() as usize;
            path.push(node, c);
            node = inner.children[c];
        }
        let pos = self.leaves[node as usize].partition(&pred);
        (node, pos, rank + pos)
    }

    /// Rank of the first element for which `pred` is false.
    pub(crate) fn partition(&self, pred: impl Fn(f64, &[u8]) -> bool) -> usize {
        let mut path = Path::new();
        self.descend(pred, &mut path).2
    }

    /// The leaf and position of the element of rank `r` (`r < len`).
    pub(crate) fn descend_rank(&self, mut r: usize, path: &mut Path) -> (u32, usize) {
        debug_assert!(r < self.len);
        let mut node = self.root;
        path.len = 0;
        for _ in 0..self.height {
            let inner = &self.inners[node as usize];
            let mut c = 0;
            while r as u64 >= inner.counts[c] {
                r -= inner.counts[c] as usize;
                c += 1;
            }
            path.push(node, c);
            node = inner.children[c];
        }
        (node, r)
    }

    /// Makes room in the index for one more member (rebuilding it when full).
    pub(crate) fn reserve_index(&mut self) {
        let cap = self.index.slots.len();
        if (self.index.live + self.index.tombs + 1) * 8 <= cap * 7 {
            return;
        }
        let need = self.index.live + 1;
        let new_cap = if need * 2 > cap {
            (cap + cap / 2).max(need * 8 / 7 + 1).max(16)
        } else {
            cap
        };
        self.rebuild_index(new_cap);
    }

    fn rebuild_index(&mut self, cap: usize) {
        let mut slots = std::mem::take(&mut self.index.slots);
        slots.clear();
        slots.shrink_to(0);
        slots.resize(cap, EMPTY);
        self.index.slots = slots;
        self.index.live = 0;
        self.index.tombs = 0;
        let mut leaf = self.first_leaf();
        while leaf != NONE {
            let l = &self.leaves[leaf as usize];
            for i in 0..l.len() {
                let h = hash(self.index.seed, l.member(i));
                self.index.insert(h, leaf);
            }
            leaf = l.next;
        }
    }

    pub(crate) fn first_leaf(&self) -> u32 {
        let mut node = self.root;
        for _ in 0..self.height {
            node = self.inners[node as usize].children[0];
        }
        node
    }

    fn alloc_leaf(&mut self, leaf: Leaf) -> u32 {
        if let Some(id) = self.free_leaves.pop() {
            self.leaves[id as usize] = leaf;
            id
        } else {
            self.leaves.push(leaf);
            (self.leaves.len() - 1) as u32
        }
    }

    fn free_leaf(&mut self, id: u32) {
        let l = std::mem::take(&mut self.leaves[id as usize]);
        if l.prev != NONE {
            self.leaves[l.prev as usize].next = l.next;
        }
        if l.next != NONE {
            self.leaves[l.next as usize].prev = l.prev;
        }
        self.free_leaves.push(id);
    }

    fn alloc_inner(&mut self, inner: Inner) -> u32 {
        if let Some(id) = self.free_inners.pop() {
            self.inners[id as usize] = inner;
            id
        } else {
            self.inners.push(inner);
            (self.inners.len() - 1) as u32
        }
    }

    fn free_inner(&mut self, id: u32) {
        self.inners[id as usize] = Inner::default();
        self.free_inners.push(id);
    }

    /// Builds the tree of an empty set from `n` elements in strictly
    /// increasing key order, `item(k)` being the `k`-th (scores already
    /// normalised to `+0.0`): leaves filled to [`LEAF_FILL`], the inner
    /// levels bottom-up, then the member index in one pass over the leaves.
    /// `hint(k)` is called a few elements ahead of `item(k)` (to prefetch).
    /// `Err(k)` when the member of element `k` occurs earlier in the
    /// sequence, or (`k == n`) when the leaves would not fit the index's id
    /// space; the tree is then left in an unspecified state, to be dropped.
    pub(crate) fn build_sorted<'a>(
        &mut self,
        n: usize,
        item: impl Fn(usize) -> (f64, &'a [u8]),
        hint: impl Fn(usize),
    ) -> Result<(), usize> {
        debug_assert_eq!(self.len, 0);
        if n == 0 {
            return Ok(());
        }
        let nleaves = n.div_ceil(LEAF_FILL);
        if nleaves > MAX_LEAVES {
            return Err(n);
        }
        let mut leaves = Vec::with_capacity(nleaves);
        let (base, extra) = (n / nleaves, n % nleaves);
        let mut k = 0;
        for id in 0..nleaves {
            let len = base + usize::from(id < extra);
            let mut scores = Vec::with_capacity(len);
            let mut offs = [0usize; LEAF_MAX];
            let mut bytes_len = 0;
            for (j, off) in offs.iter_mut().enumerate().take(len) {
                hint(k + j + 16);
                let (s, m) = item(k + j);
                scores.push(s);
                bytes_len += m.len();
                *off = bytes_len;
            }
            let mut bytes = Vec::with_capacity(bytes_len);
            for j in 0..len {
                bytes.extend_from_slice(item(k + j).1);
            }
            k += len;
            leaves.push(Leaf {
                scores,
                ends: Ends::build(offs[..len].iter().copied(), len, bytes_len),
                bytes,
                prev: if id == 0 { NONE } else { id as u32 - 1 },
                next: if id + 1 == nleaves {
                    NONE
                } else {
                    id as u32 + 1
                },
            });
        }
        self.leaves = leaves;
        self.free_leaves.clear();
        self.inners.clear();
        self.free_inners.clear();
        self.len = n;
        // Inner levels: (node, elements under it, first leaf under it).
        let mut level: Vec<(u32, u64, u32)> = (0..nleaves as u32)
            .map(|id| (id, self.leaves[id as usize].len() as u64, id))
            .collect();
        let mut height = 0;
        while level.len() > 1 {
            let count = level.len().div_ceil(INNER_FILL);
            let (base, extra) = (level.len() / count, level.len() % count);
            let mut up = Vec::with_capacity(count);
            let mut rest = &level[..];
            for i in 0..count {
                let (group, after) = rest.split_at(base + usize::from(i < extra));
                rest = after;
                let keys = group[1..]
                    .iter()
                    .map(|&(_, _, first)| {
                        let l = &self.leaves[first as usize];
                        (l.score(0), Box::<[u8]>::from(l.member(0)))
                    })
                    .collect();
                let inner = Inner {
                    keys,
                    children: group.iter().map(|g| g.0).collect(),
                    counts: group.iter().map(|g| g.1).collect(),
                };
                let total = inner.counts.iter().sum();
                self.inners.push(inner);
                up.push(((self.inners.len() - 1) as u32, total, group[0].2));
            }
            level = up;
            height += 1;
        }
        self.root = level[0].0;
        self.height = height;
        self.index.slots = vec![EMPTY; n + n / 3 + 16];
        self.index.live = 0;
        self.index.tombs = 0;
        self.index_sorted()
    }

    /// Fills the (empty, sized) index from the leaves, checking that no
    /// member occurs twice: `Err(k)` for the first element (in order) whose
    /// member occurred before. Hashes a leaf ahead and prefetches its slots.
    fn index_sorted(&mut self) -> Result<(), usize> {
        let seed = self.index.seed;
        let mut ahead: Vec<u64> = Vec::with_capacity(LEAF_MAX);
        let mut cur: Vec<u64> = Vec::with_capacity(LEAF_MAX);
        let hash_leaf = |index: &Index, l: &Leaf, out: &mut Vec<u64>| {
            out.clear();
            for i in 0..l.len() {
                let h = hash(seed, l.member(i));
                prefetch(&index.slots[index.home(h)]);
                out.push(h);
            }
        };
        hash_leaf(&self.index, &self.leaves[0], &mut ahead);
        let mut k = 0;
        for id in 0..self.leaves.len() {
            std::mem::swap(&mut cur, &mut ahead);
            if id + 1 < self.leaves.len() {
                hash_leaf(&self.index, &self.leaves[id + 1], &mut ahead);
            }
            for (i, &h) in cur.iter().enumerate() {
                if !self.index.insert_new(&self.leaves, h, id as u32, i) {
                    return Err(k + i);
                }
            }
            k += cur.len();
        }
        Ok(())
    }

    /// Moves the element at `pos` of `leaf` (key `old`, member `m`, hash
    /// `h`) to the key `new` (not in the set). One descent finds both
    /// places; when the old leaf keeps at least [`LEAF_MIN`] elements the
    /// element is moved without restructuring: within its leaf (no index
    /// or count change), or to another leaf (the index slot retargeted,
    /// counts changed below the paths' common node). Otherwise it is
    /// removed and reinserted.
    pub(crate) fn move_key(&mut self, leaf: u32, pos: usize, old: f64, new: f64, m: &[u8], h: u64) {
        let le_old = |s: f64, x: &[u8]| cmp_key(s, x, old, m) != Ordering::Greater;
        let le_new = |s: f64, x: &[u8]| cmp_key(s, x, new, m) != Ordering::Greater;
        let mut path = Path::new();
        let mut new_path = Path::new();
        let mut node = self.root;
        let mut common = self.height;
        let mut to = NONE;
        for d in 0..self.height {
            let inner = &self.inners[node as usize];
            prefetch_all(&inner.keys);
            prefetch(&inner.children[inner.children.len() / 2]);
            prefetch(&inner.counts[inner.counts.len() / 2]);
            let c = inner.keys.partition_point(|(s, x)| le_old(*s, x));
            path.push(node, c);
            if common == self.height {
                let cn = inner.keys.partition_point(|(s, x)| le_new(*s, x));
                new_path.push(node, cn);
                if cn != c {
                    common = d;
                    let mut n2 = inner.children[cn];
                    for _ in d + 1..self.height {
                        let i2 = &self.inners[n2 as usize];
                        prefetch_all(&i2.keys);
                        let c2 = i2.keys.partition_point(|(s, x)| le_new(*s, x));
                        new_path.push(n2, c2);
                        n2 = i2.children[c2];
                    }
                    to = n2;
                }
            }
            node = inner.children[c];
        }
        debug_assert_eq!(node, leaf);
        if to == NONE {
            to = node;
        }
        if self.leaves[leaf as usize].len() <= LEAF_MIN && self.height > 0 {
            self.remove_at(leaf, pos, &path, h);
            self.insert(new, m, h);
            return;
        }
        self.leaves[leaf as usize].remove(pos);
        let l = &mut self.leaves[to as usize];
        let at = l.partition(&le_new);
        l.insert(at, new, m);
        if to == leaf {
            return;
        }
        for &(n, c) in &path.nodes[common..path.len] {
            self.inners[n as usize].counts[c as usize] -= 1;
        }
        for &(n, c) in &new_path.nodes[common..new_path.len] {
            self.inners[n as usize].counts[c as usize] += 1;
        }
        self.index.retarget(h, leaf, to);
        if self.leaves[to as usize].len() > LEAF_MAX {
            self.split_leaf(to, &new_path, false);
        }
    }

    /// Whether one more leaf can be made (the index's id space).
    pub(crate) fn has_room(&self) -> bool {
        self.free_leaves.len() + MAX_LEAVES > self.leaves.len()
    }

    /// Inserts a member that is not in the set.
    pub(crate) fn insert(&mut self, score: f64, m: &[u8], h: u64) {
        self.reserve_index();
        let mut path = Path::new();
        let (leaf, pos, _) =
            // `<=`: a stale separator equal to the key sends it right, where
            // keys >= the separator belong (the key itself is not in the set).
            self.descend(|s, x| cmp_key(s, x, score, m) != Ordering::Greater, &mut path);
        self.leaves[leaf as usize].insert(pos, score, m);
        self.index.insert(h, leaf);
        for &(n, c) in &path.nodes[..path.len] {
            self.inners[n as usize].counts[c as usize] += 1;
        }
        self.len += 1;
        let l = &self.leaves[leaf as usize];
        if l.len() > LEAF_MAX {
            // Appending to the last leaf (a sorted load): split off only the
            // new element, so that loaded leaves stay full.
            let append = pos + 1 == l.len() && l.next == NONE;
            self.split_leaf(leaf, &path, append);
        }
    }

    fn split_leaf(&mut self, leaf: u32, path: &Path, append: bool) {
        let l = &mut self.leaves[leaf as usize];
        let at = if append { l.len() - 1 } else { l.len() / 2 };
        let mut right = l.split_off(at);
        let old_next = l.next;
        right.prev = leaf;
        right.next = old_next;
        let sep: (f64, Box<[u8]>) = (right.scores[0], right.member(0).into());
        let moved = right.len() as u64;
        let rid = self.alloc_leaf(right);
        self.leaves[leaf as usize].next = rid;
        if old_next != NONE {
            self.leaves[old_next as usize].prev = rid;
        }
        let r = &self.leaves[rid as usize];
        for i in 0..r.len() {
            let h = hash(self.index.seed, r.member(i));
            self.index.retarget(h, leaf, rid);
        }
        self.insert_into_parent(path, path.len, sep, rid, moved, append);
    }

    /// Adds `rid` (with `rcount` elements and lower bound `sep`) right of
    /// the node reached by `path[..depth]`, splitting upwards as needed.
    fn insert_into_parent(
        &mut self,
        path: &Path,
        mut depth: usize,
        mut sep: (f64, Box<[u8]>),
        mut rid: u32,
        mut rcount: u64,
        append: bool,
    ) {
        loop {
            if depth == 0 {
                let total = self.len as u64;
                let root = Inner {
                    keys: vec![sep],
                    children: vec![self.root, rid],
                    counts: vec![total - rcount, rcount],
                };
                self.root = self.alloc_inner(root);
                self.height += 1;
                return;
            }
            let (p, c) = path.nodes[depth - 1];
            let (p, c) = (p as usize, c as usize);
            let inner = &mut self.inners[p];
            reserve(&mut inner.keys, 1, STEP);
            reserve(&mut inner.children, 1, STEP);
            reserve(&mut inner.counts, 1, STEP);
            inner.keys.insert(c, sep);
            inner.children.insert(c + 1, rid);
            inner.counts[c] -= rcount;
            inner.counts.insert(c + 1, rcount);
            if inner.children.len() <= INNER_MAX {
                return;
            }
            let at = if append && c + 2 == inner.children.len() {
                inner.children.len() - 1
            } else {
                inner.children.len() / 2
            };
            let children = inner.children.split_off(at);
            let counts = inner.counts.split_off(at);
            let keys = inner.keys.split_off(at);
            let up = inner.keys.pop().expect("inner node keys");
            inner.keys.shrink_to(at + STEP / 2);
            inner.children.shrink_to(at + STEP / 2);
            inner.counts.shrink_to(at + STEP / 2);
            rcount = counts.iter().sum();
            sep = up;
            rid = self.alloc_inner(Inner {
                keys,
                children,
                counts,
            });
            depth -= 1;
        }
    }

    /// Removes the element at `pos` of `leaf`, reached by `path`.
    pub(crate) fn remove_at(&mut self, leaf: u32, pos: usize, path: &Path, h: u64) {
        self.index.remove(h, leaf);
        self.leaves[leaf as usize].remove(pos);
        for &(n, c) in &path.nodes[..path.len] {
            self.inners[n as usize].counts[c as usize] -= 1;
        }
        self.len -= 1;
        self.rebalance(path);
    }

    fn node_len(&self, id: u32, is_leaf: bool) -> usize {
        if is_leaf {
            self.leaves[id as usize].len()
        } else {
            self.inners[id as usize].children.len()
        }
    }

    fn rebalance(&mut self, path: &Path) {
        let mut depth = path.len;
        while depth > 0 {
            let is_leaf = depth == self.height;
            let (p, c) = path.nodes[depth - 1];
            let (p, c) = (p as usize, c as usize);
            let child = self.inners[p].children[c];
            let n = self.node_len(child, is_leaf);
            let (min, max) = if is_leaf {
                (LEAF_MIN, LEAF_MAX)
            } else {
                (INNER_MIN, INNER_MAX)
            };
            if n == 0 {
                let inner = &mut self.inners[p];
                if c > 0 {
                    inner.keys.remove(c - 1);
                } else if !inner.keys.is_empty() {
                    inner.keys.remove(0);
                }
                inner.children.remove(c);
                inner.counts.remove(c);
                if is_leaf {
                    self.free_leaf(child);
                } else {
                    self.free_inner(child);
                }
            } else if n < min {
                let siblings = self.inners[p].children.len();
                if c + 1 < siblings
                    && n + self.node_len(self.inners[p].children[c + 1], is_leaf) <= max
                {
                    self.merge(p, c, is_leaf);
                } else if c > 0 && n + self.node_len(self.inners[p].children[c - 1], is_leaf) <= max
                {
                    self.merge(p, c - 1, is_leaf);
                } else {
                    break;
                }
            } else {
                break;
            }
            depth -= 1;
        }
        while self.height > 0 {
            let root = &self.inners[self.root as usize];
            let first = root.children.first().copied();
            match root.children.len() {
                0 => {
                    let old = self.root;
                    self.free_inner(old);
                    self.root = self.alloc_leaf(Leaf {
                        prev: NONE,
                        next: NONE,
                        ..Leaf::default()
                    });
                    self.height = 0;
                }
                1 => {
                    let old = self.root;
                    self.root = first.expect("one child");
                    self.free_inner(old);
                    self.height -= 1;
                }
                _ => break,
            }
        }
    }

    /// Merges child `i + 1` of inner node `p` into child `i`.
    fn merge(&mut self, p: usize, i: usize, is_leaf: bool) {
        let inner = &mut self.inners[p];
        let left = inner.children[i];
        let right = inner.children.remove(i + 1);
        let sep = inner.keys.remove(i);
        let rc = inner.counts.remove(i + 1);
        inner.counts[i] += rc;
        if is_leaf {
            let r = std::mem::take(&mut self.leaves[right as usize]);
            for k in 0..r.len() {
                let h = hash(self.index.seed, r.member(k));
                self.index.retarget(h, right, left);
            }
            let l = &mut self.leaves[left as usize];
            l.append(&r);
            l.next = r.next;
            if r.next != NONE {
                self.leaves[r.next as usize].prev = left;
            }
            self.free_leaves.push(right);
        } else {
            let r = std::mem::take(&mut self.inners[right as usize]);
            let l = &mut self.inners[left as usize];
            reserve(&mut l.keys, r.keys.len() + 1, STEP);
            reserve(&mut l.children, r.children.len(), STEP);
            reserve(&mut l.counts, r.counts.len(), STEP);
            l.keys.push(sep);
            l.keys.extend(r.keys);
            l.children.extend_from_slice(&r.children);
            l.counts.extend_from_slice(&r.counts);
            self.free_inners.push(right);
        }
    }

    /// Changes the score of the element at `pos` of `leaf` (member `m`)
    /// without leaving the leaf when the new key lies strictly between the
    /// leaf's other lowest and highest keys (so it belongs to this leaf
    /// whatever its bounds): in place when its neighbours keep it in order,
    /// else moved within the leaf (the index and counts do not change).
    /// False when it must move to another leaf.
    pub(crate) fn update_in_place(&mut self, leaf: u32, pos: usize, score: f64, m: &[u8]) -> bool {
        let l = &self.leaves[leaf as usize];
        let n = l.len();
        if n < 3 {
            return false;
        }
        let key = |i: usize| (l.score(i), l.member(i));
        let below = |i: usize| {
            let (s, x) = key(i);
            cmp_key(s, x, score, m) == Ordering::Less
        };
        let above = |i: usize| {
            let (s, x) = key(i);
            cmp_key(score, m, s, x) == Ordering::Less
        };
        let lo = if pos == 0 { 1 } else { 0 };
        let hi = if pos + 1 == n { n - 2 } else { n - 1 };
        if !below(lo) || !above(hi) {
            return false;
        }
        if (pos == 0 || below(pos - 1)) && (pos + 1 == n || above(pos + 1)) {
            self.leaves[leaf as usize].scores[pos] = score;
            return true;
        }
        let l = &mut self.leaves[leaf as usize];
        l.remove(pos);
        let at = l.partition(&|s, x| cmp_key(s, x, score, m) == Ordering::Less);
        l.insert(at, score, m);
        true
    }

    /// Heap bytes held, from the capacities of every allocation.
    pub(crate) fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.leaves.capacity() * std::mem::size_of::<Leaf>()
            + self.leaves.iter().map(Leaf::heap_bytes).sum::<usize>()
            + self.free_leaves.capacity() * 4
            + self.inners.capacity() * std::mem::size_of::<Inner>()
            + self.inners.iter().map(Inner::heap_bytes).sum::<usize>()
            + self.free_inners.capacity() * 4
            + self.index.slots.capacity() * 4
    }

    /// Member bytes stored (the sum of the members' lengths).
    pub(crate) fn member_bytes(&self) -> usize {
        self.leaves.iter().map(|l| l.bytes.len()).sum()
    }

    /// (leaves in use, inner nodes in use, height, index slots).
    pub(crate) fn shape(&self) -> (usize, usize, usize, usize) {
        (
            self.leaves.len() - self.free_leaves.len(),
            self.inners.len() - self.free_inners.len(),
            self.height,
            self.index.slots.len(),
        )
    }

    /// Checks every invariant (tests).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let mut count = 0;
        let mut prev: Option<(f64, Vec<u8>)> = None;
        let mut leaf = self.first_leaf();
        let mut back = NONE;
        while leaf != NONE {
            let l = &self.leaves[leaf as usize];
            assert_eq!(l.prev, back);
            assert!(l.len() > 0 || (self.height == 0 && self.len == 0));
            for i in 0..l.len() {
                if let Some((s, m)) = &prev {
                    assert_eq!(cmp_key(*s, m, l.score(i), l.member(i)), Ordering::Less);
                }
                prev = Some((l.score(i), l.member(i).to_vec()));
                let h = hash(self.index.seed, l.member(i));
                assert_eq!(self.find(l.member(i), h), Some((leaf, i)));
                count += 1;
            }
            back = leaf;
            leaf = l.next;
        }
        assert_eq!(count, self.len);
        assert_eq!(self.index.live, self.len);
        if self.height > 0 {
            assert_eq!(
                self.check_node(self.root, self.height, None, None),
                self.len
            );
        }
    }

    #[cfg(test)]
    fn check_node(
        &self,
        node: u32,
        height: usize,
        lo: Option<(f64, &[u8])>,
        hi: Option<(f64, &[u8])>,
    ) -> usize {
        if height == 0 {
            let l = &self.leaves[node as usize];
            assert!(l.len() > 0);
            for i in 0..l.len() {
                if let Some((s, m)) = lo {
                    assert_ne!(cmp_key(l.score(i), l.member(i), s, m), Ordering::Less);
                }
                if let Some((s, m)) = hi {
                    assert_eq!(cmp_key(l.score(i), l.member(i), s, m), Ordering::Less);
                }
            }
            return l.len();
        }
        let inner = &self.inners[node as usize];
        assert_eq!(inner.keys.len() + 1, inner.children.len());
        assert!(inner.children.len() <= INNER_MAX);
        let mut total = 0;
        for (c, &child) in inner.children.iter().enumerate() {
            let clo = if c == 0 {
                lo
            } else {
                Some((inner.keys[c - 1].0, &inner.keys[c - 1].1[..]))
            };
            let chi = if c == inner.keys.len() {
                hi
            } else {
                Some((inner.keys[c].0, &inner.keys[c].1[..]))
            };
            let n = self.check_node(child, height - 1, clo, chi);
            assert_eq!(n as u64, inner.counts[c]);
            total += n;
        }
        total
    }
}
