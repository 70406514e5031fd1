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

#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub doc: u64,
    pub pos_start: u32,
    pub pos_len: u32,
}

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
        tokens.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| term(a).cmp(term(b)))
                .then(a.3.cmp(&b.3))
        });
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

#[derive(Default)]
pub(crate) struct Memtable {
    /// Key bytes back to back; slot `i`'s key ends at `key_ends[i]`.
    keys: Vec<u8>,
    key_ends: Vec<u32>,
    hashes: Vec<u64>,
    /// Postings per slot, docs ascending.
    lists: Vec<Vec<Entry>>,
    /// Open addressing, linear probing: (slot + 1, top half of the key's
    /// hash); slot 0 means empty. The hash half spares a look at `hashes`
    /// and the key on most probes that miss.
    table: Vec<(u32, u32)>,
    /// Slots of each user's keys, for prefix scans.
    user_slots: HashMap<u32, Vec<u32>>,
    pub positions: Vec<u32>,
    /// Doc states changed since the last flush; they go into the run.
    pub docs: HashMap<(u32, u64), DocState>,
    pub bytes: usize,
}

impl Memtable {
    fn key(&self, slot: usize) -> &[u8] {
        let start = if slot == 0 {
            0
        } else {
            self.key_ends[slot - 1] as usize
        };
        &self.keys[start..self.key_ends[slot] as usize]
    }

    fn find(&self, key: &[u8], hash: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let mask = self.table.len() - 1;
        let mut at = hash as usize & mask;
        let tag = (hash >> 32) as u32;
        loop {
            let (entry, entry_tag) = self.table[at];
            if entry == 0 {
                return None;
            }
            let slot = entry as usize - 1;
            if entry_tag == tag && self.key(slot) == key {
                return Some(slot);
            }
            at = (at + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let size = (self.table.len() * 2).max(1024);
        let mask = size - 1;
        let mut table = vec![(0u32, 0u32); size];
        for (slot, &hash) in self.hashes.iter().enumerate() {
            let mut at = hash as usize & mask;
            while table[at].0 != 0 {
                at = (at + 1) & mask;
            }
            table[at] = (slot as u32 + 1, (hash >> 32) as u32);
        }
        self.bytes += (size - self.table.len()) * 8;
        self.table = table;
    }

    fn find_or_insert(&mut self, key: &[u8], hash: u64) -> usize {
        if (self.hashes.len() + 1) * 2 > self.table.len() {
            self.grow();
        }
        let mask = self.table.len() - 1;
        let mut at = hash as usize & mask;
        let tag = (hash >> 32) as u32;
        loop {
            let (entry, entry_tag) = self.table[at];
            if entry == 0 {
                break;
            }
            let slot = entry as usize - 1;
            if entry_tag == tag && self.key(slot) == key {
                return slot;
            }
            at = (at + 1) & mask;
        }
        let slot = self.hashes.len();
        self.table[at] = (slot as u32 + 1, tag);
        self.keys.extend_from_slice(key);
        self.key_ends.push(self.keys.len() as u32);
        self.hashes.push(hash);
        self.lists.push(Vec::new());
        let user = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
        self.user_slots.entry(user).or_default().push(slot as u32);
        self.bytes += key.len() + 56;
        slot
    }

    pub fn insert(&mut self, prepared: &Prepared) {
        let mut key_start = 0usize;
        let mut pos_start = 0usize;
        for &(key_end, pos_end, hash) in &prepared.groups {
            let key = &prepared.keys[key_start..key_end as usize];
            let positions = &prepared.positions[pos_start..pos_end as usize];
            let entry = Entry {
                doc: prepared.doc,
                pos_start: self.positions.len() as u32,
                pos_len: positions.len() as u32,
            };
            self.positions.extend_from_slice(positions);
            self.bytes += 16 + positions.len() * 4;
            let slot = self.find_or_insert(key, hash);
            let list = &mut self.lists[slot];
            // Ids usually arrive in increasing order; keep the list ascending.
            match list.last() {
                Some(last) if last.doc > entry.doc => {
                    let at = list.partition_point(|e| e.doc < entry.doc);
                    list.insert(at, entry);
                }
                _ => list.push(entry),
            }
            key_start = key_end as usize;
            pos_start = pos_end as usize;
        }
    }

    pub fn set_doc(&mut self, user: u32, doc: u64, state: DocState) {
        if self.docs.insert((user, doc), state).is_none() {
            self.bytes += 48;
        }
    }

    pub fn entry_positions(&self, entry: &Entry) -> &[u32] {
        &self.positions[entry.pos_start as usize..(entry.pos_start + entry.pos_len) as usize]
    }

    fn list(&self, key: &[u8]) -> Option<&Vec<Entry>> {
        self.find(key, hash_key(key)).map(|slot| &self.lists[slot])
    }

    /// Number of distinct keys.
    pub fn key_count(&self) -> usize {
        self.lists.len()
    }

    /// Every key with its postings, in key order (sorts the keys).
    pub fn iter_sorted(&self) -> impl Iterator<Item = (&[u8], &Vec<Entry>)> + '_ {
        // Sort by the first 8 key bytes as a big-endian integer (zero padded,
        // so the order agrees with the bytes'), comparing whole keys only on
        // ties: most comparisons then touch no key bytes.
        let mut slots: Vec<(u64, u32)> = (0..self.lists.len())
            .map(|slot| {
                let key = self.key(slot);
                let mut head = [0u8; 8];
                let n = key.len().min(8);
                head[..n].copy_from_slice(&key[..n]);
                (u64::from_be_bytes(head), slot as u32)
            })
            .collect();
        slots.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| self.key(a.1 as usize).cmp(self.key(b.1 as usize)))
        });
        slots
            .into_iter()
            .map(|(_, slot)| (self.key(slot as usize), &self.lists[slot as usize]))
    }

    /// Doc ids of a key, descending.
    pub fn docs_of(&self, key: &[u8], out: &mut Vec<u64>) {
        if let Some(list) = self.list(key) {
            out.extend(list.iter().rev().map(|e| e.doc));
        }
    }

    pub fn postings_of(&self, key: &[u8], out: &mut PostingList) {
        if let Some(list) = self.list(key) {
            for entry in list.iter().rev() {
                out.push(entry.doc, self.entry_positions(entry));
            }
        }
    }

    /// Entries whose key starts with `prefix` (which holds at least the
    /// 4-byte user), in no particular order.
    pub fn range_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a Vec<Entry>)> + 'a {
        let user = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        self.user_slots
            .get(&user)
            .map(|slots| slots.as_slice())
            .unwrap_or(&[])
            .iter()
            .map(|&slot| (self.key(slot as usize), &self.lists[slot as usize]))
            .filter(move |(key, _)| key.starts_with(prefix))
    }

    pub fn is_empty(&self) -> bool {
        self.lists.is_empty() && self.docs.is_empty()
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
        assert_eq!(table.range_prefix(&prefix).count(), 2);
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
        let sorted: Vec<&[u8]> = table.iter_sorted().map(|(k, _)| k).collect();
        assert_eq!(sorted.len(), table.key_count());
        assert!(sorted.windows(2).all(|w| w[0] < w[1]));
        make_key(&mut key, 2, Field::Body, b"w1");
        assert!(table.range_prefix(&key).all(|(k, _)| k.starts_with(&key)));
        let mut want = std::collections::HashSet::new();
        for id in (0..3000u64).filter(|id| id % 3 == 2) {
            for word in [format!("w{id}"), format!("w{}", id / 2)] {
                if word.starts_with("w1") {
                    want.insert(word);
                }
            }
        }
        assert_eq!(table.range_prefix(&key).count(), want.len());
    }
}
