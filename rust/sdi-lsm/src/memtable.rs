//! The memtable: postings of the mails written since the last flush.
//!
//! Every token of every mail looks its key up here, so keys live in one
//! byte arena found through an open-addressing hash table (no allocation
//! per key), their hashes computed while tokenizing, outside any lock. Keys
//! are sorted only when the memtable is flushed; a prefix query scans the
//! keys of its user (each user's key slots are listed apart). All positions
//! live in one arena too, so a posting costs no allocation of its own.

use std::collections::HashMap;

use crate::codec::PostingList;
use crate::doc::{DocState, Field};

/// Builds the key of a posting list: user (u32 big-endian, so one user's keys
/// are contiguous), field (u8), then the term's UTF-8 bytes.
pub(crate) fn make_key(out: &mut Vec<u8>, user: u32, field: Field, term: &[u8]) {
    out.clear();
    out.extend_from_slice(&user.to_be_bytes());
    out.push(field as u8);
    out.extend_from_slice(term);
}

/// One posting: a doc and the term's positions in it. A single position (the
/// common case) is kept in the entry itself; more live in the memtable's
/// position arena.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub doc: u64,
    /// The position itself when `pos_len` is 1, else the start of the
    /// positions in the arena.
    pos: u32,
    pos_len: u32,
}

/// An entry in arrival order, chained to the previous entry of its key.
#[derive(Debug, Clone, Copy)]
struct Node {
    entry: Entry,
    /// Index of the key's previous node, or [`NONE`].
    prev: u32,
    slot: u32,
}

const NONE: u32 = u32::MAX;

/// A hash table cell, one half cache line: the key's first 16 bytes (zero
/// padded, as a big-endian integer, so comparing two is comparing bytes),
/// its length and slot, where the rest of it is, and the newest node of its
/// postings. A key of at most 16 bytes (a term of up to 11) is compared
/// without touching the key arena. `slot == NONE` marks an empty cell.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
struct Cell {
    head_bytes: u128,
    slot: u32,
    head: u32,
    key_start: u32,
    key_len: u32,
}

const EMPTY: Cell = Cell {
    head_bytes: 0,
    slot: NONE,
    head: NONE,
    key_start: 0,
    key_len: 0,
};

/// A key's first 16 bytes as a big-endian integer, zero padded.
#[inline]
fn key_head(key: &[u8]) -> u128 {
    let mut head = [0u8; 16];
    let n = key.len().min(16);
    head[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(head)
}

/// Estimated bytes of one distinct key besides its own bytes: its cells
/// (at most half full), its hash and offsets, and its place in the user's
/// slot list.
const KEY_OVERHEAD_BYTES: usize = 2 * std::mem::size_of::<Cell>() + 8 + 4 + 4 + 4;

/// A document tokenized outside any lock, ready to insert.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    pub doc: u64,
    /// Concatenated keys.
    pub keys: Vec<u8>,
    /// Per posting: key end in `keys`, positions end in `positions`, key hash.
    pub groups: Vec<(u32, u32, u64)>,
    pub positions: Vec<u32>,
}

impl Prepared {
    pub fn new(doc: &crate::Doc) -> Prepared {
        // (field in the top byte over the term's hash, text start, text
        // length, position): sorting by the integer first groups equal terms
        // cheaply; the text breaks ties between colliding hashes.
        let mut tokens: Vec<(u64, u32, u32, u32)> = Vec::new();
        let mut text = String::new();
        let mut next = [0u32; 5];
        for (field, field_text) in &doc.fields {
            let start = next[*field as usize];
            let end = crate::tokenize::tokenize(field_text, start, |token, position| {
                let at = text.len() as u32;
                text.push_str(token);
                let order = (u64::from(*field as u8) << 56) | (hash_key(token.as_bytes()) >> 8);
                tokens.push((order, at, token.len() as u32, position));
            });
            next[*field as usize] = end + 1;
        }
        let bytes = text.as_bytes();
        let term = |t: &(u64, u32, u32, u32)| &bytes[t.1 as usize..(t.1 + t.2) as usize];
        // Equal terms have equal hashes, so sorting by hash then position
        // groups them without comparing bytes; if two different terms of a
        // field share a hash (so rare it may never happen), sort again with
        // the bytes breaking ties.
        tokens.sort_unstable_by_key(|t| (t.0, t.3));
        if tokens
            .windows(2)
            .any(|w| w[0].0 == w[1].0 && term(&w[0]) != term(&w[1]))
        {
            tokens.sort_unstable_by(|a, b| {
                a.0.cmp(&b.0)
                    .then_with(|| term(a).cmp(term(b)))
                    .then(a.3.cmp(&b.3))
            });
        }
        let mut out = Prepared {
            doc: doc.id,
            keys: Vec::with_capacity(text.len() + tokens.len() * 5),
            groups: Vec::new(),
            positions: Vec::with_capacity(tokens.len()),
        };
        let mut key = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let first = tokens[i];
            let mut j = i;
            while j < tokens.len() && tokens[j].0 == first.0 && term(&tokens[j]) == term(&first) {
                out.positions.push(tokens[j].3);
                j += 1;
            }
            let field = Field::from_u8((first.0 >> 56) as u8).unwrap_or(Field::Body);
            make_key(&mut key, doc.user, field, term(&first));
            out.keys.extend_from_slice(&key);
            out.groups.push((
                out.keys.len() as u32,
                out.positions.len() as u32,
                hash_key(&key),
            ));
            i = j;
        }
        out
    }
}

/// A fast hash for short byte keys, multiply-rotate over 8-byte words in
/// the style of rustc's FxHasher. Not resistant to chosen keys: mail text
/// is not chosen to collide, and a collision only costs time.
#[inline]
pub(crate) fn hash_key(bytes: &[u8]) -> u64 {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    let mut hash = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        hash = (hash.rotate_left(26) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        hash = (hash.rotate_left(26) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    hash ^ (hash >> 32)
}

/// The memtable. Postings are nodes in one arena in arrival order, each
/// linked to its key's previous node, so an insert appends and touches one
/// hash cell and one key: no allocation per key or per posting. Queries walk
/// a key's chain (newest first); a flush groups the nodes by key with one
/// counting sort.
#[derive(Default)]
pub(crate) struct Memtable {
    /// Key bytes back to back.
    keys: Vec<u8>,
    /// Per slot: where its key starts and ends, and its full hash.
    key_starts: Vec<u32>,
    key_lens: Vec<u32>,
    hashes: Vec<u64>,
    nodes: Vec<Node>,
    /// Open addressing with linear probing; the length is a power of two.
    table: Vec<Cell>,
    /// Slots of each user's keys, for prefix scans.
    user_slots: HashMap<u32, Vec<u32>>,
    /// Positions of the entries with more than one.
    positions: Vec<u32>,
    /// Doc states changed since the last flush; they go into the run.
    pub docs: HashMap<(u32, u64), DocState>,
    pub bytes: usize,
}

/// The memtable's postings grouped by key, keys in byte order: what a flush
/// writes.
pub(crate) struct Sorted<'a> {
    table: &'a Memtable,
    /// Slots in key order.
    order: Vec<u32>,
    /// Entries grouped by slot, each group in arrival order; slot `s`'s group
    /// is `entries[starts[s]..starts[s + 1]]`.
    entries: Vec<Entry>,
    starts: Vec<u32>,
}

impl<'a> Sorted<'a> {
    /// Each key with its entries, docs ascending.
    pub fn for_each(&mut self, mut f: impl FnMut(&[u8], &[Entry])) {
        let table = self.table;
        for &slot in &self.order {
            let slot = slot as usize;
            let group =
                &mut self.entries[self.starts[slot] as usize..self.starts[slot + 1] as usize];
            if group.windows(2).any(|w| w[0].doc > w[1].doc) {
                group.sort_unstable_by_key(|e| e.doc);
            }
            f(table.key(slot), group);
        }
    }
}

impl Memtable {
    fn key(&self, slot: usize) -> &[u8] {
        let start = self.key_starts[slot] as usize;
        &self.keys[start..start + self.key_lens[slot] as usize]
    }

    /// Whether `cell` holds `key`, whose head is `head`.
    #[inline]
    fn holds(&self, cell: &Cell, key: &[u8], head: u128) -> bool {
        if cell.head_bytes != head || cell.key_len as usize != key.len() {
            return false;
        }
        key.len() <= 16 || {
            let start = cell.key_start as usize + 16;
            self.keys[start..cell.key_start as usize + key.len()] == key[16..]
        }
    }

    /// Where `key` is in the table (`Ok`), or the empty cell where it would
    /// go (`Err`); the table must not be empty.
    fn probe(&self, key: &[u8], hash: u64) -> std::result::Result<usize, usize> {
        let mask = self.table.len() - 1;
        let mut at = hash as usize & mask;
        let head = key_head(key);
        loop {
            let cell = &self.table[at];
            if cell.slot == NONE {
                return Err(at);
            }
            if self.holds(cell, key, head) {
                return Ok(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// The cell of `key`, if it is here.
    fn find(&self, key: &[u8], hash: u64) -> Option<&Cell> {
        if self.table.is_empty() {
            return None;
        }
        self.probe(key, hash).ok().map(|at| &self.table[at])
    }

    fn grow(&mut self) {
        let size = (self.table.len() * 2).max(1024);
        let mask = size - 1;
        let mut table = vec![EMPTY; size];
        for cell in self.table.iter().filter(|c| c.slot != NONE) {
            let mut at = self.hashes[cell.slot as usize] as usize & mask;
            while table[at].slot != NONE {
                at = (at + 1) & mask;
            }
            table[at] = *cell;
        }
        self.table = table;
    }

    /// The table index of `key`'s cell, made if it is new.
    fn find_or_insert(&mut self, key: &[u8], hash: u64) -> usize {
        if (self.hashes.len() + 1) * 2 > self.table.len() {
            self.grow();
        }
        let at = match self.probe(key, hash) {
            Ok(found) => return found,
            Err(empty) => empty,
        };
        let head = key_head(key);
        let slot = self.hashes.len() as u32;
        let cell = Cell {
            head_bytes: head,
            slot,
            head: NONE,
            key_start: self.keys.len() as u32,
            key_len: key.len() as u32,
        };
        self.table[at] = cell;
        self.key_starts.push(cell.key_start);
        self.key_lens.push(cell.key_len);
        self.keys.extend_from_slice(key);
        self.hashes.push(hash);
        let user = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
        self.user_slots.entry(user).or_default().push(slot);
        self.bytes += key.len() + KEY_OVERHEAD_BYTES;
        at
    }

    /// Empties the memtable, keeping its allocations for the next one.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.key_starts.clear();
        self.key_lens.clear();
        self.hashes.clear();
        self.nodes.clear();
        self.table.fill(EMPTY);
        self.user_slots.clear();
        self.positions.clear();
        self.docs.clear();
        // Each key counts two cells (the table is at most half full); the
        // capacity kept is what the last memtable needed.
        self.bytes = 0;
    }

    pub fn insert(&mut self, prepared: &Prepared) {
        let mut key_start = 0usize;
        let mut pos_start = 0usize;
        for &(key_end, pos_end, hash) in &prepared.groups {
            let key = &prepared.keys[key_start..key_end as usize];
            let positions = &prepared.positions[pos_start..pos_end as usize];
            let entry = if let [only] = positions {
                Entry {
                    doc: prepared.doc,
                    pos: *only,
                    pos_len: 1,
                }
            } else {
                let at = self.positions.len() as u32;
                self.positions.extend_from_slice(positions);
                self.bytes += positions.len() * 4;
                Entry {
                    doc: prepared.doc,
                    pos: at,
                    pos_len: positions.len() as u32,
                }
            };
            let at = self.find_or_insert(key, hash);
            let node = self.nodes.len() as u32;
            let cell = &mut self.table[at];
            self.nodes.push(Node {
                entry,
                prev: cell.head,
                slot: cell.slot,
            });
            cell.head = node;
            // A flush copies each entry once more, briefly.
            self.bytes += std::mem::size_of::<Node>() + std::mem::size_of::<Entry>();
            key_start = key_end as usize;
            pos_start = pos_end as usize;
        }
    }

    pub fn set_doc(&mut self, user: u32, doc: u64, state: DocState) {
        if self.docs.insert((user, doc), state).is_none() {
            self.bytes += 48;
        }
    }

    pub fn entry_positions<'e>(&'e self, entry: &'e Entry) -> &'e [u32] {
        if entry.pos_len == 1 {
            std::slice::from_ref(&entry.pos)
        } else {
            &self.positions[entry.pos as usize..(entry.pos + entry.pos_len) as usize]
        }
    }

    /// The entries of the chain from node `head`, docs descending.
    fn chain(&self, head: u32, out: &mut Vec<Entry>) {
        let start = out.len();
        let mut at = head;
        while at != NONE {
            let node = &self.nodes[at as usize];
            out.push(node.entry);
            at = node.prev;
        }
        // Ids usually arrive in increasing order, so the chain is already
        // newest first; mail added out of order needs a sort.
        let chain = &mut out[start..];
        if chain.windows(2).any(|w| w[0].doc < w[1].doc) {
            chain.sort_unstable_by_key(|e| std::cmp::Reverse(e.doc));
        }
    }

    fn entries_of(&self, key: &[u8], out: &mut Vec<Entry>) {
        if let Some(cell) = self.find(key, hash_key(key)) {
            self.chain(cell.head, out);
        }
    }

    /// Number of distinct keys.
    pub fn key_count(&self) -> usize {
        self.hashes.len()
    }

    /// The postings grouped by key, keys sorted.
    pub fn sorted(&self) -> Sorted<'_> {
        let keys = self.key_count();
        // Group by slot with a counting sort over the nodes (arrival order
        // kept within a key).
        let mut starts = vec![0u32; keys + 1];
        for node in &self.nodes {
            starts[node.slot as usize + 1] += 1;
        }
        for i in 1..=keys {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut entries = vec![
            Entry {
                doc: 0,
                pos: 0,
                pos_len: 0
            };
            self.nodes.len()
        ];
        for node in &self.nodes {
            let at = &mut next[node.slot as usize];
            entries[*at as usize] = node.entry;
            *at += 1;
        }
        // Sort by the first 16 key bytes, taken from the cells (read in
        // order, not through the key arena), comparing whole keys only on
        // ties, which need a term of over 11 bytes.
        let mut heads: Vec<(u128, u32)> = self
            .table
            .iter()
            .filter(|c| c.slot != NONE)
            .map(|c| (c.head_bytes, c.slot))
            .collect();
        heads.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| self.key(a.1 as usize).cmp(self.key(b.1 as usize)))
        });
        Sorted {
            table: self,
            order: heads.into_iter().map(|(_, slot)| slot).collect(),
            entries,
            starts,
        }
    }

    /// Doc ids of a key, descending.
    pub fn docs_of(&self, key: &[u8], out: &mut Vec<u64>) {
        let mut entries = Vec::new();
        self.entries_of(key, &mut entries);
        out.extend(entries.iter().map(|e| e.doc));
    }

    pub fn postings_of(&self, key: &[u8], out: &mut PostingList) {
        let mut entries = Vec::new();
        self.entries_of(key, &mut entries);
        for entry in &entries {
            out.push(entry.doc, self.entry_positions(entry));
        }
    }

    /// The doc ids, descending, of each key that starts with `prefix` (which
    /// holds at least the 4-byte user), keys in no particular order.
    pub fn for_each_prefix(
        &self,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &mut Vec<u64>) -> crate::Result<()>,
    ) -> crate::Result<()> {
        let user = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let Some(slots) = self.user_slots.get(&user) else {
            return Ok(());
        };
        let mut entries = Vec::new();
        let mut docs = Vec::new();
        for &slot in slots {
            let key = self.key(slot as usize);
            if !key.starts_with(prefix) {
                continue;
            }
            if let Some(cell) = self.find(key, self.hashes[slot as usize]) {
                entries.clear();
                self.chain(cell.head, &mut entries);
                docs.clear();
                docs.extend(entries.iter().map(|e| e.doc));
                f(key, &mut docs)?;
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.docs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attrs, Doc};

    #[test]
    fn insert_groups_positions_and_orders_docs() {
        let mut table = Memtable::default();
        for id in [5u64, 9, 2] {
            let doc = Doc {
                user: 1,
                id,
                attrs: Attrs::default(),
                fields: vec![(Field::Body, "x y x".into()), (Field::Subject, "x".into())],
            };
            table.insert(&Prepared::new(&doc));
        }
        let mut key = Vec::new();
        make_key(&mut key, 1, Field::Body, b"x");
        let mut docs = Vec::new();
        table.docs_of(&key, &mut docs);
        assert_eq!(docs, [9, 5, 2]);
        let mut postings = PostingList::default();
        table.postings_of(&key, &mut postings);
        assert_eq!(postings.positions_of(0), &[0, 2]);
        let mut prefix = Vec::new();
        make_key(&mut prefix, 1, Field::Body, b"");
        assert_eq!(prefix_keys(&table, &prefix).len(), 2);
    }

    #[test]
    fn many_keys_grow_the_table() {
        let mut table = Memtable::default();
        for id in 0..3000u64 {
            let doc = Doc {
                user: (id % 3) as u32,
                id,
                attrs: Attrs::default(),
                fields: vec![(Field::Body, format!("w{id} common w{}", id / 2))],
            };
            table.insert(&Prepared::new(&doc));
        }
        let mut key = Vec::new();
        for id in (0..3000u64).step_by(7) {
            make_key(
                &mut key,
                (id % 3) as u32,
                Field::Body,
                format!("w{id}").as_bytes(),
            );
            let mut docs = Vec::new();
            table.docs_of(&key, &mut docs);
            assert!(docs.contains(&id), "{id}");
        }
        make_key(&mut key, 1, Field::Body, b"common");
        let mut docs = Vec::new();
        table.docs_of(&key, &mut docs);
        assert_eq!(docs.len(), 1000);
        assert!(docs.windows(2).all(|w| w[0] > w[1]));
        let mut sorted: Vec<Vec<u8>> = Vec::new();
        let mut postings = 0;
        table.sorted().for_each(|k, entries| {
            sorted.push(k.to_vec());
            postings += entries.len();
            assert!(entries.windows(2).all(|w| w[0].doc < w[1].doc));
        });
        assert_eq!(sorted.len(), table.key_count());
        // Doc 0's two words are one key (w0).
        assert_eq!(postings, 3 * 3000 - 1);
        assert!(sorted.windows(2).all(|w| w[0] < w[1]));
        make_key(&mut key, 2, Field::Body, b"w1");
        let found = prefix_keys(&table, &key);
        assert!(found.iter().all(|k| k.starts_with(&key)));
        let mut want = std::collections::HashSet::new();
        for id in (0..3000u64).filter(|id| id % 3 == 2) {
            for word in [format!("w{id}"), format!("w{}", id / 2)] {
                if word.starts_with("w1") {
                    want.insert(word);
                }
            }
        }
        assert_eq!(found.len(), want.len());
    }

    fn prefix_keys(table: &Memtable, prefix: &[u8]) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        table
            .for_each_prefix(prefix, |key, docs| {
                assert!(docs.windows(2).all(|w| w[0] > w[1]));
                keys.push(key.to_vec());
                Ok(())
            })
            .unwrap();
        keys
    }

    #[test]
    fn out_of_order_docs_come_back_sorted() {
        let mut table = Memtable::default();
        for id in [7u64, 3, 9, 1, 8] {
            let doc = Doc {
                user: 4,
                id,
                attrs: Attrs::default(),
                fields: vec![(Field::Body, "a b a c a".into())],
            };
            table.insert(&Prepared::new(&doc));
        }
        let mut key = Vec::new();
        make_key(&mut key, 4, Field::Body, b"a");
        let mut docs = Vec::new();
        table.docs_of(&key, &mut docs);
        assert_eq!(docs, [9, 8, 7, 3, 1]);
        let mut postings = PostingList::default();
        table.postings_of(&key, &mut postings);
        assert_eq!(postings.docs, [9, 8, 7, 3, 1]);
        assert_eq!(postings.positions_of(4), &[0, 2, 4]);
        table.sorted().for_each(|_, entries| {
            assert!(entries.windows(2).all(|w| w[0].doc < w[1].doc));
            assert_eq!(entries.len(), 5);
        });
    }
}
