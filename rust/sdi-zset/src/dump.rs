//! A compact binary snapshot of a whole set ([`ZSet::dump`], [`ZSet::load`]).
//!
//! Layout, little-endian:
//!
//! ```text
//! magic    8 bytes  "SDIZSET" then the format version (1)
//! count    u64      number of elements
//! elements count x  score (f64 bits, u64) | member length (LEB128) | member bytes
//! crc      u32      CRC-32C of every byte before it
//! ```
//!
//! Elements are written in set order, so a load builds the tree from them
//! in one pass (no sort, no descent; leaves 7/8 full, as a bulk ZADD). A load checks the magic, the version, the
//! checksum, every length, that no score is NaN, that the elements are in
//! strictly increasing order and that no member occurs twice, and refuses
//! the snapshot ([`DumpError`]) on the first failure.

use std::cmp::Ordering;

use crate::tree::cmp_key;
use crate::{ZSet, MEMBER_MAX};

/// The first 7 bytes of every snapshot.
pub const DUMP_MAGIC: &[u8; 7] = b"SDIZSET";
/// The format version written (the 8th byte).
pub const DUMP_VERSION: u8 = 1;
const HEADER: usize = 16;
const TRAILER: usize = 4;
/// Smallest encoded element: a score and a one-byte length.
const MIN_ELEMENT: usize = 9;

/// Why a snapshot was refused by [`ZSet::load`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DumpError {
    /// Shorter than a header and a checksum.
    #[error("sorted-set snapshot is truncated: {0} bytes, a snapshot has at least 20")]
    TooShort(usize),
    /// The first bytes are not [`DUMP_MAGIC`].
    #[error("not a sorted-set snapshot (bad magic bytes)")]
    BadMagic,
    /// A version this build does not read.
    #[error("sorted-set snapshot version {0} is not supported (this build reads version 1)")]
    Version(u8),
    /// The stored CRC-32C differs from the one computed.
    #[error("sorted-set snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x} (truncated or altered data)")]
    Checksum {
        /// The checksum in the snapshot.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// The elements end before `count` of them, or bytes follow the last.
    #[error("sorted-set snapshot is malformed at element {index}: {what}")]
    Malformed {
        /// The element (0-based) where the problem is.
        index: u64,
        /// What is wrong.
        what: &'static str,
    },
}

impl ZSet {
    /// The exact size of [`ZSet::dump`]'s output.
    pub fn dump_len(&self) -> usize {
        HEADER
            + TRAILER
            + self
                .iter()
                .map(|(_, m)| 8 + varint_len(m.len()) + m.len())
                .sum::<usize>()
    }

    /// A snapshot of the whole set; see the module documentation of `dump`
    /// for the layout. [`ZSet::load`] reads it back.
    pub fn dump(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.dump_len());
        self.dump_into(&mut out);
        out
    }

    /// Appends a snapshot of the set to `out`.
    pub fn dump_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(DUMP_MAGIC);
        out.push(DUMP_VERSION);
        out.extend_from_slice(&(self.len() as u64).to_le_bytes());
        for (score, member) in self.iter() {
            out.extend_from_slice(&score.to_bits().to_le_bytes());
            let mut n = member.len();
            while n >= 0x80 {
                out.push((n as u8) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
            out.extend_from_slice(member);
        }
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Rebuilds a set from [`ZSet::dump`]'s output, checking everything
    /// (magic, version, checksum, lengths, order, duplicates). The elements
    /// are parsed, then the tree is built bottom-up in one pass.
    pub fn load(data: &[u8]) -> Result<ZSet, DumpError> {
        if data.len() < HEADER + TRAILER {
            return Err(DumpError::TooShort(data.len()));
        }
        if &data[..7] != DUMP_MAGIC {
            return Err(DumpError::BadMagic);
        }
        if data[7] != DUMP_VERSION {
            return Err(DumpError::Version(data[7]));
        }
        let (body, tail) = data.split_at(data.len() - TRAILER);
        let stored = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(DumpError::Checksum { stored, computed });
        }
        let count = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
        let mut rest = &body[HEADER..];
        // Each element takes at least MIN_ELEMENT bytes: a count past that is
        // refused before anything is allocated for it.
        if count > (rest.len() / MIN_ELEMENT) as u64 {
            return Err(DumpError::Malformed {
                index: (rest.len() / MIN_ELEMENT) as u64,
                what: "the element count is larger than the data holds",
            });
        }
        // Parse and check every element, then build the set in one pass
        // (the elements are in key order). A parse error stops the parse; a
        // member occurring twice before it is reported first, as an
        // element-by-element load would.
        let mut elements: Vec<(f64, &[u8])> = Vec::with_capacity(count as usize);
        let mut failure = None;
        for index in 0..count {
            match parse_element(rest, elements.last().copied()) {
                Ok((score, member, after)) => {
                    rest = after;
                    elements.push((score + 0.0, member));
                }
                Err(what) => {
                    failure = Some(DumpError::Malformed { index, what });
                    break;
                }
            }
        }
        let mut set = ZSet::new();
        let n = elements.len();
        let built = set.tree.build_sorted(
            n,
            |k| elements[k],
            |k| {
                if let Some(&(_, m)) = elements.get(k) {
                    crate::tree::prefetch(m.as_ptr());
                }
            },
        );
        if let Err(k) = built {
            return Err(DumpError::Malformed {
                index: k as u64,
                what: if k < n {
                    "the member occurs twice"
                } else {
                    "the set is larger than the member index can address"
                },
            });
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if !rest.is_empty() {
            return Err(DumpError::Malformed {
                index: count,
                what: "bytes follow the last element",
            });
        }
        Ok(set)
    }
}

/// One element at the start of `rest`, checked against the previous one:
/// (score, member, what follows it), or what is wrong with it.
fn parse_element<'a>(
    mut rest: &'a [u8],
    prev: Option<(f64, &[u8])>,
) -> Result<(f64, &'a [u8], &'a [u8]), &'static str> {
    if rest.len() < MIN_ELEMENT {
        return Err("the data ends inside the element");
    }
    let score = f64::from_bits(u64::from_le_bytes(rest[..8].try_into().expect("8")));
    rest = &rest[8..];
    if score.is_nan() {
        return Err("the score is NaN");
    }
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let Some((&b, after)) = rest.split_first() else {
            return Err("the data ends inside a member length");
        };
        rest = after;
        if shift > 28 {
            return Err("the member length is too long");
        }
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    if len > MEMBER_MAX {
        return Err("the member is longer than the limit");
    }
    if rest.len() < len {
        return Err("the data ends inside the member");
    }
    let (member, after) = rest.split_at(len);
    if let Some((ps, pm)) = prev {
        if cmp_key(ps, pm, score, member) != Ordering::Less {
            return Err("the elements are out of order");
        }
    }
    Ok((score, member, after))
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ZSet {
        let mut z = ZSet::new();
        for i in 0..500u32 {
            let m = format!("member-{i}").repeat((i % 7) as usize + 1);
            z.insert(f64::from(i % 37) - 10.5, m.as_bytes()).unwrap();
        }
        z.insert(f64::INFINITY, b"top").unwrap();
        z.insert(f64::NEG_INFINITY, b"").unwrap();
        z.insert(0.0, &vec![b'x'; 300]).unwrap();
        z
    }

    fn items(z: &ZSet) -> Vec<(f64, Vec<u8>)> {
        z.iter().map(|(s, m)| (s, m.to_vec())).collect()
    }

    #[test]
    fn round_trip() {
        for z in [ZSet::new(), sample()] {
            let d = z.dump();
            assert_eq!(d.len(), z.dump_len());
            let back = ZSet::load(&d).unwrap();
            back.check_invariants();
            assert_eq!(items(&back), items(&z));
            assert_eq!(back.dump(), d);
            for (s, m) in z.iter() {
                assert_eq!(back.score(m), Some(s));
            }
        }
    }

    #[test]
    fn every_truncation_and_bit_flip_is_refused() {
        let d = sample().dump();
        for cut in 0..d.len() {
            assert!(ZSet::load(&d[..cut]).is_err(), "cut at {cut}");
        }
        for i in (0..d.len()).step_by(7) {
            for bit in [0, 3, 7] {
                let mut e = d.clone();
                e[i] ^= 1 << bit;
                assert!(ZSet::load(&e).is_err(), "flip at {i} bit {bit}");
            }
        }
    }

    fn sealed(mut body: Vec<u8>) -> Vec<u8> {
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }

    fn element(score: f64, m: &[u8]) -> Vec<u8> {
        let mut v = score.to_bits().to_le_bytes().to_vec();
        v.push(m.len() as u8);
        v.extend_from_slice(m);
        v
    }

    fn snapshot(elements: &[(f64, &[u8])], count: u64) -> Vec<u8> {
        let mut b = b"SDIZSET\x01".to_vec();
        b.extend_from_slice(&count.to_le_bytes());
        for (s, m) in elements {
            b.extend(element(*s, m));
        }
        sealed(b)
    }

    #[test]
    fn checked_errors() {
        assert_eq!(ZSet::load(b"short").unwrap_err(), DumpError::TooShort(5));
        let ok = snapshot(&[(1.0, b"a"), (2.0, b"b")], 2);
        assert_eq!(ZSet::load(&ok).unwrap().len(), 2);
        let mut magic = ok.clone();
        magic[0] = b'X';
        assert_eq!(ZSet::load(&magic).unwrap_err(), DumpError::BadMagic);
        let mut version = ok.clone();
        version[7] = 9;
        assert_eq!(ZSet::load(&version).unwrap_err(), DumpError::Version(9));
        let malformed = |e: &[(f64, &[u8])], count| match ZSet::load(&snapshot(e, count)) {
            Err(DumpError::Malformed { what, .. }) => what,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            malformed(&[(2.0, b"a"), (1.0, b"b")], 2),
            "the elements are out of order"
        );
        assert_eq!(
            malformed(&[(1.0, b"a"), (1.0, b"a")], 2),
            "the elements are out of order"
        );
        assert_eq!(
            malformed(&[(1.0, b"a"), (2.0, b"a")], 2),
            "the member occurs twice"
        );
        assert_eq!(malformed(&[(f64::NAN, b"a")], 1), "the score is NaN");
        assert_eq!(
            malformed(&[(1.0, b"a"), (2.0, b"b")], 1),
            "bytes follow the last element"
        );
        assert_eq!(
            malformed(&[(1.0, b"a")], 1 << 40),
            "the element count is larger than the data holds"
        );
        assert_eq!(
            malformed(&[(1.0, b"abcdefghijk")], 2),
            "the data ends inside the element"
        );
    }
}
