//! Varints, posting list encoding and the set operations on doc id lists.
//!
//! Every doc id list here is sorted in descending order (newest first), with
//! no duplicates.

/// Appends `value` as a LEB128 varint.
#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a LEB128 varint at `*pos`, advancing it; `None` when the bytes end
/// early or the value overflows 64 bits.
#[inline]
pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0u32;
    loop {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        if shift == 63 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// A decoded posting list: doc ids in descending order and, for each, the
/// token positions of the term in that field (ascending).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PostingList {
    pub docs: Vec<u64>,
    /// `pos_ends[i]` is the end of doc `i`'s positions in `positions`.
    pub pos_ends: Vec<u32>,
    pub positions: Vec<u32>,
}

impl PostingList {
    pub fn positions_of(&self, index: usize) -> &[u32] {
        let start = if index == 0 {
            0
        } else {
            self.pos_ends[index - 1] as usize
        };
        &self.positions[start..self.pos_ends[index] as usize]
    }

    pub fn push(&mut self, doc: u64, positions: &[u32]) {
        debug_assert!(self.docs.last().is_none_or(|&last| last > doc));
        self.docs.push(doc);
        self.positions.extend_from_slice(positions);
        self.pos_ends.push(self.positions.len() as u32);
    }
}

/// Encodes a posting list (docs descending, positions ascending per doc):
///
/// ```text
/// count varint, doc_bytes varint,
/// doc ids: the first in full, then each as (previous - current) varint,
/// positions: per doc, count varint, the first in full, then deltas
/// ```
///
/// Doc ids come first as their own section so that queries that need no
/// positions decode only them.
pub(crate) fn encode_postings<'a>(
    out: &mut Vec<u8>,
    entries: impl Iterator<Item = (u64, &'a [u32])> + Clone,
    count: usize,
) {
    put_varint(out, count as u64);
    let varint_bytes = |v: u64| (64 - (v | 1).leading_zeros()).div_ceil(7) as u64;
    let mut doc_bytes = 0u64;
    let mut previous = None;
    for (doc, _) in entries.clone() {
        doc_bytes += varint_bytes(previous.map_or(doc, |p: u64| p - doc));
        previous = Some(doc);
    }
    put_varint(out, doc_bytes);
    let start = out.len();
    let mut previous = None;
    for (doc, _) in entries.clone() {
        match previous {
            None => put_varint(out, doc),
            Some(previous) => {
                debug_assert!(previous > doc);
                put_varint(out, previous - doc);
            }
        }
        previous = Some(doc);
    }
    debug_assert_eq!((out.len() - start) as u64, doc_bytes);
    for (_, positions) in entries {
        put_varint(out, positions.len() as u64);
        let mut last = 0u32;
        for (i, &position) in positions.iter().enumerate() {
            let delta = if i == 0 { position } else { position - last };
            put_varint(out, u64::from(delta));
            last = position;
        }
    }
}

/// Decodes only the doc ids of an encoded posting list, appending them to
/// `out`. `None` if the bytes are malformed.
pub(crate) fn decode_docs(value: &[u8], out: &mut Vec<u64>) -> Option<()> {
    let mut pos = 0;
    let count = usize::try_from(get_varint(value, &mut pos)?).ok()?;
    let doc_bytes = usize::try_from(get_varint(value, &mut pos)?).ok()?;
    let end = pos.checked_add(doc_bytes)?;
    let section = value.get(pos..end)?;
    if count > section.len() {
        return None;
    }
    out.reserve(count);
    let mut at = 0;
    let mut previous = 0u64;
    for i in 0..count {
        let raw = get_varint(section, &mut at)?;
        let doc = if i == 0 {
            raw
        } else {
            if raw == 0 {
                return None;
            }
            previous.checked_sub(raw)?
        };
        out.push(doc);
        previous = doc;
    }
    (at == section.len()).then_some(())
}

/// The first (highest) doc id of an encoded posting list; `None` if it is
/// malformed or empty.
pub(crate) fn first_doc(value: &[u8]) -> Option<u64> {
    let (count, docs, _) = sections(value)?;
    if count == 0 {
        return None;
    }
    get_varint(docs, &mut 0)
}

/// Decodes a whole posting list, positions included, appending to `out`
/// (whose docs must all be above this list's).
pub(crate) fn decode_full(value: &[u8], out: &mut PostingList) -> Option<()> {
    let first = out.docs.len();
    decode_docs(value, &mut out.docs)?;
    let count = out.docs.len() - first;
    if first > 0 && count > 0 && out.docs[first - 1] <= out.docs[first] {
        return None;
    }
    let mut pos = 0;
    get_varint(value, &mut pos)?;
    let doc_bytes = usize::try_from(get_varint(value, &mut pos)?).ok()?;
    pos += doc_bytes;
    for _ in 0..count {
        let n = get_varint(value, &mut pos)?;
        if n > (value.len() - pos.min(value.len())) as u64 {
            return None;
        }
        let mut last = 0u32;
        for i in 0..n {
            let raw = u32::try_from(get_varint(value, &mut pos)?).ok()?;
            let position = if i == 0 { raw } else { last.checked_add(raw)? };
            out.positions.push(position);
            last = position;
        }
        out.pos_ends.push(out.positions.len() as u32);
    }
    (pos == value.len()).then_some(())
}

/// The parts of an encoded posting list: (count, doc id section, position
/// section). `None` if the header is malformed.
fn sections(value: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let mut pos = 0;
    let count = get_varint(value, &mut pos)?;
    let doc_bytes = usize::try_from(get_varint(value, &mut pos)?).ok()?;
    let end = pos.checked_add(doc_bytes)?;
    Some((count, value.get(pos..end)?, value.get(end..)?))
}

/// Encodes the concatenation of encoded posting lists `(value, first doc,
/// last doc)` whose docs descend across them (the last doc of each above the
/// first of the next), as [`encode_postings`] would encode the whole, but
/// copying each list's deltas and positions as they are: only the first doc
/// id of each later list is re-encoded, as a delta from the list before.
/// This is a merge of runs written in arrival order, without decoding them.
/// `None` if a list is malformed or the lists are out of order.
pub(crate) fn concat_postings(out: &mut Vec<u8>, lists: &[(&[u8], u64, u64)]) -> Option<()> {
    let mut count = 0u64;
    let mut doc_bytes = 0usize;
    let mut parts = Vec::with_capacity(lists.len());
    let mut previous_last: Option<u64> = None;
    let mut head = Vec::new();
    for &(value, first, last) in lists {
        let (n, docs, positions) = sections(value)?;
        if n == 0 || first < last {
            return None;
        }
        let mut at = 0;
        if get_varint(docs, &mut at)? != first {
            return None;
        }
        let start = head.len();
        match previous_last {
            None => put_varint(&mut head, first),
            Some(previous) if previous > first => put_varint(&mut head, previous - first),
            Some(_) => return None,
        }
        count += n;
        doc_bytes += head.len() - start + docs.len() - at;
        parts.push((start..head.len(), &docs[at..], positions));
        previous_last = Some(last);
    }
    put_varint(out, count);
    put_varint(out, doc_bytes as u64);
    for (range, deltas, _) in &parts {
        out.extend_from_slice(&head[range.clone()]);
        out.extend_from_slice(deltas);
    }
    for (_, _, positions) in &parts {
        out.extend_from_slice(positions);
    }
    Some(())
}

/// Merges two posting lists with disjoint doc ids into one.
pub(crate) fn merge_postings(a: &PostingList, b: &PostingList) -> PostingList {
    let mut out = PostingList::default();
    let (mut i, mut j) = (0, 0);
    while i < a.docs.len() || j < b.docs.len() {
        let take_a = j >= b.docs.len() || (i < a.docs.len() && a.docs[i] > b.docs[j]);
        if take_a {
            out.push(a.docs[i], a.positions_of(i));
            i += 1;
        } else {
            if i < a.docs.len() && a.docs[i] == b.docs[j] {
                // A doc is added once, so it is in one source only; keep the first.
                i += 1;
            }
            out.push(b.docs[j], b.positions_of(j));
            j += 1;
        }
    }
    out
}

/// The union of two descending lists.
pub(crate) fn union(a: &[u64], b: &[u64]) -> Vec<u64> {
    if a.is_empty() {
        return b.to_vec();
    }
    if b.is_empty() {
        return a.to_vec();
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Greater => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Less => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The union of many descending lists, merged two at a time, always the
/// two shortest (as in Huffman coding), so each doc id is copied about
/// log2(lists) times at most.
pub(crate) fn union_many(lists: Vec<Vec<u64>>) -> Vec<u64> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut lists: Vec<Vec<u64>> = lists.into_iter().filter(|l| !l.is_empty()).collect();
    match lists.len() {
        0 => return Vec::new(),
        1 => return lists.pop().unwrap_or_default(),
        2 => return union(&lists[0], &lists[1]),
        _ => {}
    }
    // Many lists over a dense id range (ids per user counting up, as IMAP
    // UIDs do): set bits in a bitmap over the range and read them back
    // from the top, linear in the postings plus range / 64.
    let total: usize = lists.iter().map(Vec::len).sum();
    let high = lists.iter().map(|l| l[0]).max().unwrap_or(0);
    let low = lists
        .iter()
        .filter_map(|l| l.last().copied())
        .min()
        .unwrap_or(0);
    let words = ((high - low) / 64 + 1) as usize;
    if lists.len() > 4 && words <= total.saturating_mul(4) {
        let mut bits = vec![0u64; words];
        for &doc in lists.iter().flatten() {
            let offset = doc - low;
            bits[(offset / 64) as usize] |= 1 << (offset % 64);
        }
        let mut out = Vec::with_capacity(total);
        for (i, &word) in bits.iter().enumerate().rev() {
            let mut word = word;
            while word != 0 {
                let bit = 63 - word.leading_zeros() as u64;
                out.push(low + i as u64 * 64 + bit);
                word &= !(1 << bit);
            }
        }
        return out;
    }
    let mut heap: BinaryHeap<Reverse<(usize, usize)>> = lists
        .iter()
        .enumerate()
        .map(|(i, l)| Reverse((l.len(), i)))
        .collect();
    loop {
        let Some(Reverse((_, a))) = heap.pop() else {
            return Vec::new();
        };
        let Some(Reverse((_, b))) = heap.pop() else {
            return std::mem::take(&mut lists[a]);
        };
        let merged = union(&lists[a], &lists[b]);
        lists[b] = Vec::new();
        heap.push(Reverse((merged.len(), a)));
        lists[a] = merged;
    }
}

/// The first index at or after `from` whose value is <= `target` in the
/// descending list, found by galloping then binary search.
#[inline]
fn gallop(list: &[u64], from: usize, target: u64) -> usize {
    let mut step = 1;
    let mut low = from;
    let mut high = from;
    while high < list.len() && list[high] > target {
        low = high + 1;
        high = from + step;
        step *= 2;
    }
    let high = high.min(list.len());
    low + list[low..high].partition_point(|&value| value > target)
}

/// The intersection of two descending lists; gallops through the longer one.
pub(crate) fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    let mut at = 0;
    for &doc in small {
        at = gallop(large, at, doc);
        if at >= large.len() {
            break;
        }
        if large[at] == doc {
            out.push(doc);
            at += 1;
        }
    }
    out
}

/// The docs of `a` that are not in `b`.
pub(crate) fn difference(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len());
    let mut at = 0;
    for &doc in a {
        at = gallop(b, at, doc);
        if at < b.len() && b[at] == doc {
            continue;
        }
        out.push(doc);
    }
    out
}

/// A 64-bit hash for bloom filters: FNV-1a over the bytes, then the
/// splitmix64 finalizer to spread the bits.
pub(crate) fn hash64(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip() {
        let values = [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX];
        let mut buf = Vec::new();
        for &v in &values {
            put_varint(&mut buf, v);
        }
        let mut pos = 0;
        for &v in &values {
            assert_eq!(get_varint(&buf, &mut pos), Some(v));
        }
        assert_eq!(get_varint(&buf, &mut pos), None);
        assert_eq!(get_varint(&[0xff; 11], &mut 0), None);
    }

    #[test]
    fn postings_round_trip() {
        let entries: Vec<(u64, Vec<u32>)> =
            vec![(900, vec![0, 5, 9]), (17, vec![3]), (0, vec![1, 2])];
        let mut buf = Vec::new();
        encode_postings(
            &mut buf,
            entries.iter().map(|(d, p)| (*d, p.as_slice())),
            entries.len(),
        );
        let mut docs = Vec::new();
        decode_docs(&buf, &mut docs).unwrap();
        assert_eq!(docs, vec![900, 17, 0]);
        let mut full = PostingList::default();
        decode_full(&buf, &mut full).unwrap();
        assert_eq!(full.docs, docs);
        assert_eq!(full.positions_of(0), &[0, 5, 9]);
        assert_eq!(full.positions_of(2), &[1, 2]);
        assert!(decode_docs(&buf[..buf.len() - 1], &mut Vec::new()).is_some());
        assert!(decode_full(&buf[..buf.len() - 1], &mut PostingList::default()).is_none());
    }

    #[test]
    fn concatenation_equals_encoding_the_whole() {
        let mut state = 7u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        for _ in 0..2000 {
            // Lists of descending docs, each list below the one before.
            let lists = 1 + next(4) as usize;
            let mut doc = 1 + next(1 << 40);
            let mut all: Vec<(u64, Vec<u32>)> = Vec::new();
            let mut encoded = Vec::new();
            for _ in 0..lists {
                let mut list = Vec::new();
                for _ in 0..1 + next(5) {
                    let positions: Vec<u32> = {
                        let mut p = 0u32;
                        (0..1 + next(3))
                            .map(|_| {
                                p += next(300) as u32;
                                p
                            })
                            .collect()
                    };
                    list.push((doc + 1000, positions));
                    let gap = if next(2) == 0 { 3 } else { 1 << 20 };
                    doc -= doc.min(1 + next(gap));
                    if doc == 0 {
                        break;
                    }
                }
                let mut value = Vec::new();
                encode_postings(
                    &mut value,
                    list.iter().map(|(d, p)| (*d, p.as_slice())),
                    list.len(),
                );
                encoded.push((value, list[0].0, list[list.len() - 1].0));
                all.extend(list);
                if doc == 0 {
                    break;
                }
            }
            let mut want = Vec::new();
            encode_postings(
                &mut want,
                all.iter().map(|(d, p)| (*d, p.as_slice())),
                all.len(),
            );
            let refs: Vec<(&[u8], u64, u64)> = encoded
                .iter()
                .map(|(v, f, l)| (v.as_slice(), *f, *l))
                .collect();
            let mut got = Vec::new();
            concat_postings(&mut got, &refs).unwrap();
            assert_eq!(got, want);
            if refs.len() > 1 {
                let mut swapped = refs.clone();
                swapped.swap(0, 1);
                assert!(concat_postings(&mut Vec::new(), &swapped).is_none());
            }
        }
    }

    #[test]
    fn set_operations() {
        let a = vec![10, 8, 6, 4, 2];
        let b = vec![9, 8, 4, 1];
        assert_eq!(union(&a, &b), vec![10, 9, 8, 6, 4, 2, 1]);
        assert_eq!(intersect(&a, &b), vec![8, 4]);
        assert_eq!(difference(&a, &b), vec![10, 6, 2]);
        assert_eq!(difference(&b, &a), vec![9, 1]);
        assert_eq!(union_many(vec![a.clone(), b.clone(), vec![11]]).len(), 8);
        // Many lists: the bitmap path (dense) and the heap path (sparse).
        let dense: Vec<Vec<u64>> = (0..10u64)
            .map(|k| (0..50).rev().filter(|d| d % (k + 2) == 0).collect())
            .collect();
        let want: Vec<u64> = (0..50)
            .rev()
            .filter(|d| (2..12).any(|m| d % m == 0))
            .collect();
        assert_eq!(union_many(dense), want);
        let sparse: Vec<Vec<u64>> = (0..6u64)
            .map(|k| vec![u64::MAX - k, (k + 1) << 40, k])
            .collect();
        let mut want: Vec<u64> = sparse.iter().flatten().copied().collect();
        want.sort_unstable_by(|a, b| b.cmp(a));
        want.dedup();
        assert_eq!(union_many(sparse), want);
        let big: Vec<u64> = (0..1000).rev().collect();
        assert_eq!(intersect(&big, &[999, 500, 3]), vec![999, 500, 3]);
        assert_eq!(difference(&[1000, 999, 3], &big), vec![1000]);
    }
}
