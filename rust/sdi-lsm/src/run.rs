//! Sorted runs: immutable files of posting lists by key, written once by a
//! flush or a merge, read through a memory map. The layout is in the crate
//! docs (`# Files`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::codec::{get_varint, hash64, put_varint};
use crate::constants::{
    BLOCK_BYTES_TARGET, BLOOM_BITS_PER_KEY, BLOOM_BLOCK_BYTES, BLOOM_PROBES, RUN_FOOTER_BYTES,
    RUN_MAGIC, RUN_VERSION,
};
use crate::doc::{Attrs, DocState};
use crate::error::{corrupt, io_error, Result};

pub(crate) fn run_file_name(id: u64) -> String {
    format!("run-{id:020}.sst")
}

pub(crate) fn parse_run_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("run-")?
        .strip_suffix(".sst")?
        .parse()
        .ok()
}

/// A version 1 bloom filter's bit positions for a key hash, by double
/// hashing over the whole filter.
#[inline]
fn bloom_probes_v1(hash: u64, bits: u64) -> impl Iterator<Item = u64> {
    let h1 = hash;
    let h2 = hash.rotate_left(32) | 1;
    (0..u64::from(BLOOM_PROBES)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bits)
}

/// A version 2 (blocked) bloom filter's bit positions for a key hash: the
/// high bits choose one 512-bit block (multiply-shift, no division), and
/// nine bits each of the low 54 choose a bit in it, so a lookup touches one
/// cache line.
#[inline]
fn bloom_probes_v2(hash: u64, blocks: u64) -> impl Iterator<Item = u64> {
    let block = ((u128::from(hash) * u128::from(blocks)) >> 64) as u64;
    let base = block * (BLOOM_BLOCK_BYTES as u64 * 8);
    (0..u64::from(BLOOM_PROBES)).map(move |i| base + ((hash >> (9 * i)) & 511))
}

/// A doc table entry as stored in a run.
pub(crate) type DocRecord = (u32, u64, DocState);

/// Writes a run: keys must come in strictly increasing order.
pub(crate) struct RunWriter {
    path: PathBuf,
    file: BufWriter<File>,
    block: Vec<u8>,
    block_last_key: Vec<u8>,
    index: Vec<u8>,
    index_entries: u64,
    hashes: Vec<u64>,
    offset: u64,
}

impl RunWriter {
    pub fn create(path: &Path) -> Result<RunWriter> {
        let file = File::create(path).map_err(io_error(path))?;
        Ok(RunWriter {
            path: path.to_path_buf(),
            file: BufWriter::with_capacity(1 << 20, file),
            block: Vec::with_capacity(BLOCK_BYTES_TARGET * 2),
            block_last_key: Vec::new(),
            index: Vec::new(),
            index_entries: 0,
            hashes: Vec::new(),
            offset: 0,
        })
    }

    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        debug_assert!(self.hashes.is_empty() || key > self.block_last_key.as_slice());
        put_varint(&mut self.block, key.len() as u64);
        put_varint(&mut self.block, value.len() as u64);
        self.block.extend_from_slice(key);
        self.block.extend_from_slice(value);
        self.block_last_key.clear();
        self.block_last_key.extend_from_slice(key);
        self.hashes.push(hash64(key));
        if self.block.len() >= BLOCK_BYTES_TARGET {
            self.finish_block()?;
        }
        Ok(())
    }

    fn finish_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let crc = crc32c::crc32c(&self.block);
        self.block.extend_from_slice(&crc.to_le_bytes());
        self.file
            .write_all(&self.block)
            .map_err(io_error(&self.path))?;
        put_varint(&mut self.index, self.block_last_key.len() as u64);
        self.index.extend_from_slice(&self.block_last_key);
        put_varint(&mut self.index, self.offset);
        put_varint(&mut self.index, self.block.len() as u64);
        self.index_entries += 1;
        self.offset += self.block.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Writes the block index, bloom filter, doc table and footer, then
    /// syncs the file. Returns its size in bytes.
    pub fn finish(mut self, docs: &[DocRecord]) -> Result<u64> {
        self.finish_block()?;
        let mut index = Vec::with_capacity(self.index.len() + 10);
        put_varint(&mut index, self.index_entries);
        index.extend_from_slice(&self.index);

        let blocks = (self.hashes.len() * BLOOM_BITS_PER_KEY)
            .div_ceil(BLOOM_BLOCK_BYTES * 8)
            .max(1);
        let mut bloom = vec![0u8; blocks * BLOOM_BLOCK_BYTES];
        for &hash in &self.hashes {
            for bit in bloom_probes_v2(hash, blocks as u64) {
                bloom[(bit / 8) as usize] |= 1 << (bit % 8);
            }
        }

        let mut doc_bytes = Vec::with_capacity(docs.len() * 29 + 10);
        put_varint(&mut doc_bytes, docs.len() as u64);
        for (user, doc, state) in docs {
            doc_bytes.extend_from_slice(&user.to_le_bytes());
            doc_bytes.extend_from_slice(&doc.to_le_bytes());
            match state {
                DocState::Dead => doc_bytes.push(0),
                DocState::Live(attrs) => {
                    doc_bytes.push(1);
                    doc_bytes.extend_from_slice(&attrs.date.to_le_bytes());
                    doc_bytes.extend_from_slice(&attrs.folder.to_le_bytes());
                    doc_bytes.extend_from_slice(&attrs.flags.to_le_bytes());
                }
            }
        }

        let index_off = self.offset;
        let bloom_off = index_off + index.len() as u64;
        let docs_off = bloom_off + bloom.len() as u64;
        let mut footer = Vec::with_capacity(RUN_FOOTER_BYTES);
        footer.extend_from_slice(RUN_MAGIC);
        footer.extend_from_slice(&RUN_VERSION.to_le_bytes());
        for value in [
            index_off,
            index.len() as u64,
            bloom_off,
            bloom.len() as u64,
            docs_off,
            doc_bytes.len() as u64,
            self.hashes.len() as u64,
            docs.len() as u64,
        ] {
            footer.extend_from_slice(&value.to_le_bytes());
        }
        for section in [&index, &bloom, &doc_bytes] {
            footer.extend_from_slice(&crc32c::crc32c(section).to_le_bytes());
        }
        let crc = crc32c::crc32c(&footer);
        footer.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(footer.len(), RUN_FOOTER_BYTES);
        for section in [&index, &bloom, &doc_bytes, &footer] {
            self.file.write_all(section).map_err(io_error(&self.path))?;
        }
        let file = self
            .file
            .into_inner()
            .map_err(|e| io_error(&self.path)(e.into_error()))?;
        file.sync_all().map_err(io_error(&self.path))?;
        Ok(docs_off + doc_bytes.len() as u64 + RUN_FOOTER_BYTES as u64)
    }
}

struct IndexEntry {
    last_key: Box<[u8]>,
    offset: usize,
    len: usize,
}

/// An open run.
pub(crate) struct Run {
    pub id: u64,
    pub path: PathBuf,
    map: Mmap,
    index: Vec<IndexEntry>,
    bloom: (usize, usize),
    version: u32,
    docs: (usize, usize),
    pub bytes: u64,
    pub key_count: u64,
    pub doc_count: u64,
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(bytes)
}

/// Splits a block's entry bytes into `(key, value)`, advancing `pos`.
#[inline]
fn next_entry<'a>(block: &'a [u8], pos: &mut usize) -> Option<(&'a [u8], &'a [u8])> {
    let key_len = usize::try_from(get_varint(block, pos)?).ok()?;
    let value_len = usize::try_from(get_varint(block, pos)?).ok()?;
    let key_end = pos.checked_add(key_len)?;
    let value_end = key_end.checked_add(value_len)?;
    let key = block.get(*pos..key_end)?;
    let value = block.get(key_end..value_end)?;
    *pos = value_end;
    Some((key, value))
}

impl Run {
    /// Opens and checks a run: footer, block index, bloom filter and doc
    /// table checksums, and the index's layout. Blocks are checked when read.
    pub fn open(path: &Path, id: u64) -> Result<Run> {
        let file = File::open(path).map_err(io_error(path))?;
        let len = file.metadata().map_err(io_error(path))?.len();
        if len < RUN_FOOTER_BYTES as u64 {
            return Err(corrupt(
                path,
                format!("run of {len} bytes is shorter than its footer"),
            ));
        }
        // SAFETY: run files are written whole and synced before they are
        // listed in the manifest, and never modified afterwards; the index
        // only unlinks them, which leaves existing mappings valid. A file
        // truncated by another program would fault, which no code here can
        // prevent short of reading instead of mapping.
        let map = unsafe { Mmap::map(&file) }.map_err(io_error(path))?;
        let buf = &map[..];
        let f = buf.len() - RUN_FOOTER_BYTES;
        let footer = &buf[f..];
        if &footer[..8] != RUN_MAGIC {
            return Err(corrupt(path, "bad magic in the run footer"));
        }
        if read_u32(footer, RUN_FOOTER_BYTES - 4) != crc32c::crc32c(&footer[..RUN_FOOTER_BYTES - 4])
        {
            return Err(corrupt(path, "run footer checksum mismatch"));
        }
        let version = read_u32(footer, 8);
        if !(1..=RUN_VERSION).contains(&version) {
            return Err(corrupt(
                path,
                format!("unknown run version {version} (this build reads 1 to {RUN_VERSION})"),
            ));
        }
        let field = |i: usize| read_u64(footer, 12 + 8 * i);
        let (index_off, index_len) = (field(0), field(1));
        let (bloom_off, bloom_len) = (field(2), field(3));
        let (docs_off, docs_len) = (field(4), field(5));
        let (key_count, doc_count) = (field(6), field(7));
        let crc_at = |i: usize| read_u32(footer, 12 + 64 + 4 * i);
        if bloom_off != index_off.saturating_add(index_len)
            || docs_off != bloom_off.saturating_add(bloom_len)
            || docs_off.saturating_add(docs_len) != f as u64
            || bloom_len == 0
            || (version >= 2 && bloom_len % BLOOM_BLOCK_BYTES as u64 != 0)
        {
            return Err(corrupt(path, "run sections do not tile the file"));
        }
        let (index_off, index_len) = (index_off as usize, index_len as usize);
        let (bloom_off, bloom_len) = (bloom_off as usize, bloom_len as usize);
        let (docs_off, docs_len) = (docs_off as usize, docs_len as usize);
        let sections = [
            (index_off, index_len, "block index"),
            (bloom_off, bloom_len, "bloom filter"),
            (docs_off, docs_len, "doc table"),
        ];
        for (i, (off, len, name)) in sections.into_iter().enumerate() {
            if crc32c::crc32c(&buf[off..off + len]) != crc_at(i) {
                return Err(corrupt(path, format!("run {name} checksum mismatch")));
            }
        }
        let index_bytes = &buf[index_off..index_off + index_len];
        let mut pos = 0;
        let bad_index = || corrupt(path, "malformed block index");
        let count = get_varint(index_bytes, &mut pos).ok_or_else(bad_index)?;
        let mut index = Vec::with_capacity(count.min(1 << 20) as usize);
        let mut expected_offset = 0usize;
        for _ in 0..count {
            let key_len = get_varint(index_bytes, &mut pos).ok_or_else(bad_index)? as usize;
            let key = index_bytes
                .get(pos..pos.saturating_add(key_len))
                .ok_or_else(bad_index)?;
            pos += key_len;
            let offset = get_varint(index_bytes, &mut pos).ok_or_else(bad_index)? as usize;
            let len = get_varint(index_bytes, &mut pos).ok_or_else(bad_index)? as usize;
            if offset != expected_offset || len < 4 {
                return Err(bad_index());
            }
            if index
                .last()
                .is_some_and(|last: &IndexEntry| &*last.last_key >= key)
            {
                return Err(bad_index());
            }
            expected_offset = offset + len;
            index.push(IndexEntry {
                last_key: key.into(),
                offset,
                len,
            });
        }
        if pos != index_bytes.len() || expected_offset != index_off {
            return Err(bad_index());
        }
        Ok(Run {
            id,
            path: path.to_path_buf(),
            map,
            index,
            bloom: (bloom_off, bloom_len),
            version,
            docs: (docs_off, docs_len),
            bytes: len,
            key_count,
            doc_count,
        })
    }

    fn may_contain(&self, key: &[u8]) -> bool {
        let bloom = &self.map[self.bloom.0..self.bloom.0 + self.bloom.1];
        let set = |bit: u64| bloom[(bit / 8) as usize] & (1 << (bit % 8)) != 0;
        if self.version == 1 {
            bloom_probes_v1(hash64(key), (bloom.len() * 8) as u64).all(set)
        } else {
            let blocks = (bloom.len() / BLOOM_BLOCK_BYTES) as u64;
            bloom_probes_v2(hash64(key), blocks).all(set)
        }
    }

    /// The entry bytes of block `i`, checked against its CRC.
    fn block(&self, i: usize) -> Result<&[u8]> {
        let entry = &self.index[i];
        let bytes = &self.map[entry.offset..entry.offset + entry.len];
        let (data, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(data) != read_u32(crc, 0) {
            return Err(corrupt(
                &self.path,
                format!("block {i} at byte {} checksum mismatch", entry.offset),
            ));
        }
        Ok(data)
    }

    fn bad_block(&self, i: usize) -> crate::Error {
        corrupt(&self.path, format!("block {i} is malformed"))
    }

    /// The posting bytes stored under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        if !self.may_contain(key) {
            return Ok(None);
        }
        let i = self.index.partition_point(|e| &*e.last_key < key);
        if i == self.index.len() {
            return Ok(None);
        }
        let block = self.block(i)?;
        let mut pos = 0;
        while pos < block.len() {
            let (k, v) = next_entry(block, &mut pos).ok_or_else(|| self.bad_block(i))?;
            match k.cmp(key) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Ok(Some(v)),
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(None)
    }

    /// Calls `visit(key, value)` for every key starting with `prefix`, in
    /// key order.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut i = self.index.partition_point(|e| &*e.last_key < prefix);
        while i < self.index.len() {
            let block = self.block(i)?;
            let mut pos = 0;
            while pos < block.len() {
                let (k, v) = next_entry(block, &mut pos).ok_or_else(|| self.bad_block(i))?;
                if k < prefix {
                    continue;
                }
                if !k.starts_with(prefix) {
                    return Ok(());
                }
                visit(k, v)?;
            }
            i += 1;
        }
        Ok(())
    }

    /// A cursor over every entry in key order, for merging.
    pub fn cursor(&self) -> RunCursor<'_> {
        RunCursor {
            run: self,
            block: 0,
            data: &[],
            pos: 0,
        }
    }

    /// The run's doc table records, in (user, doc) order.
    pub fn doc_records(&self) -> Result<Vec<DocRecord>> {
        let bytes = &self.map[self.docs.0..self.docs.0 + self.docs.1];
        let bad = || corrupt(&self.path, "malformed doc table");
        let mut pos = 0;
        let count = get_varint(bytes, &mut pos).ok_or_else(bad)?;
        if count != self.doc_count || count > bytes.len() as u64 {
            return Err(bad());
        }
        let mut out = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let rest = bytes.get(pos..).ok_or_else(bad)?;
            if rest.len() < 13 {
                return Err(bad());
            }
            let user = read_u32(rest, 0);
            let doc = read_u64(rest, 4);
            let state = match rest[12] {
                0 => {
                    pos += 13;
                    DocState::Dead
                }
                1 if rest.len() >= 29 => {
                    pos += 29;
                    DocState::Live(Attrs {
                        date: read_u64(rest, 13) as i64,
                        folder: read_u32(rest, 21),
                        flags: read_u32(rest, 25),
                    })
                }
                _ => return Err(bad()),
            };
            out.push((user, doc, state));
        }
        if pos != bytes.len() {
            return Err(bad());
        }
        Ok(out)
    }
}

pub(crate) struct RunCursor<'a> {
    run: &'a Run,
    block: usize,
    data: &'a [u8],
    pos: usize,
}

impl<'a> RunCursor<'a> {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<(&'a [u8], &'a [u8])>> {
        while self.pos >= self.data.len() {
            if self.block >= self.run.index.len() {
                return Ok(None);
            }
            self.data = self.run.block(self.block)?;
            self.pos = 0;
            self.block += 1;
        }
        let block = self.block - 1;
        next_entry(self.data, &mut self.pos)
            .map(Some)
            .ok_or_else(|| self.run.bad_block(block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_run(path: &Path, n: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut writer = RunWriter::create(path).unwrap();
        let mut entries = Vec::new();
        for i in 0..n {
            let key = format!("key{i:06}").into_bytes();
            let value = vec![(i % 251) as u8; (i % 40) as usize];
            writer.add(&key, &value).unwrap();
            entries.push((key, value));
        }
        let docs = vec![
            (1, 5, DocState::Dead),
            (
                2,
                6,
                DocState::Live(Attrs {
                    date: -3,
                    folder: 4,
                    flags: 1,
                }),
            ),
        ];
        writer.finish(&docs).unwrap();
        entries
    }

    #[test]
    fn write_open_get_scan() {
        let dir = crate::test_dir("run");
        let path = dir.join(run_file_name(1));
        let entries = write_run(&path, 5000);
        let run = Run::open(&path, 1).unwrap();
        assert!(run.index.len() > 3);
        for (key, value) in entries.iter().step_by(37) {
            assert_eq!(run.get(key).unwrap(), Some(value.as_slice()));
        }
        assert_eq!(run.get(b"key").unwrap(), None);
        assert_eq!(run.get(b"zzz").unwrap(), None);
        let mut seen = 0;
        run.scan_prefix(b"key0012", |k, _| {
            assert!(k.starts_with(b"key0012"));
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 100);
        let mut cursor = run.cursor();
        let mut count = 0;
        while let Some((k, _)) = cursor.next().unwrap() {
            assert_eq!(k, entries[count].0.as_slice());
            count += 1;
        }
        assert_eq!(count, 5000);
        assert_eq!(run.doc_records().unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bloom_filter_answers_for_every_key_and_rarely_for_others() {
        let dir = crate::test_dir("run-bloom");
        let path = dir.join(run_file_name(1));
        let entries = write_run(&path, 20_000);
        let run = Run::open(&path, 1).unwrap();
        assert_eq!(run.version, RUN_VERSION);
        assert!(entries.iter().all(|(key, _)| run.may_contain(key)));
        let absent = 100_000;
        let false_positives = (0..absent)
            .filter(|i| run.may_contain(format!("other{i:07}").as_bytes()))
            .count();
        // About 1% at 10 bits per key in 512-bit blocks.
        assert!(false_positives < absent * 2 / 100, "{false_positives}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Rewrites a run's bloom filter in the version 1 layout, and its
    /// footer to match.
    fn rewrite_as_version_1(path: &Path, keys: &[Vec<u8>]) {
        let file = std::fs::read(path).unwrap();
        let footer = &file[file.len() - RUN_FOOTER_BYTES..];
        let field = |i: usize| read_u64(footer, 12 + 8 * i) as usize;
        let (index_off, index_len) = (field(0), field(1));
        let (docs_off, docs_len) = (field(4), field(5));
        let bits = ((keys.len() * BLOOM_BITS_PER_KEY).max(64) as u64).div_ceil(8) * 8;
        let mut bloom = vec![0u8; (bits / 8) as usize];
        for key in keys {
            for bit in bloom_probes_v1(hash64(key), bits) {
                bloom[(bit / 8) as usize] |= 1 << (bit % 8);
            }
        }
        let docs = &file[docs_off..docs_off + docs_len];
        let mut out = file[..index_off + index_len].to_vec();
        let bloom_off = out.len();
        out.extend_from_slice(&bloom);
        let new_docs_off = out.len();
        out.extend_from_slice(docs);
        let mut new_footer = Vec::new();
        new_footer.extend_from_slice(RUN_MAGIC);
        new_footer.extend_from_slice(&1u32.to_le_bytes());
        for value in [
            index_off,
            index_len,
            bloom_off,
            bloom.len(),
            new_docs_off,
            docs_len,
            field(6),
            field(7),
        ] {
            new_footer.extend_from_slice(&(value as u64).to_le_bytes());
        }
        for section in [&file[index_off..index_off + index_len], &bloom[..], docs] {
            new_footer.extend_from_slice(&crc32c::crc32c(section).to_le_bytes());
        }
        let crc = crc32c::crc32c(&new_footer);
        new_footer.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&new_footer);
        std::fs::write(path, out).unwrap();
    }

    #[test]
    fn version_1_runs_are_still_read() {
        let dir = crate::test_dir("run-v1");
        let path = dir.join(run_file_name(1));
        let entries = write_run(&path, 3000);
        let keys: Vec<Vec<u8>> = entries.iter().map(|(k, _)| k.clone()).collect();
        rewrite_as_version_1(&path, &keys);
        let run = Run::open(&path, 1).unwrap();
        assert_eq!(run.version, 1);
        for (key, value) in &entries {
            assert_eq!(run.get(key).unwrap(), Some(value.as_slice()));
        }
        assert_eq!(run.get(b"key9999999").unwrap(), None);
        assert_eq!(run.doc_records().unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let dir = crate::test_dir("run-flip");
        let path = dir.join(run_file_name(1));
        let entries = write_run(&path, 300);
        let good = std::fs::read(&path).unwrap();
        for at in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            let Ok(run) = Run::open(&path, 1) else {
                continue;
            };
            // Opening passed, so the damage is in a data block: every read
            // gives the right answer or an error, never a wrong answer.
            let mut errors = 0;
            for (key, value) in &entries {
                match run.get(key) {
                    Ok(got) => assert_eq!(got, Some(value.as_slice()), "byte {at}"),
                    Err(_) => errors += 1,
                }
            }
            let mut cursor = run.cursor();
            let full_scan = loop {
                match cursor.next() {
                    Ok(Some(_)) => {}
                    Ok(None) => break true,
                    Err(_) => break false,
                }
            };
            assert!(errors > 0, "byte {at}: no lookup failed");
            assert!(!full_scan, "byte {at} went unnoticed");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
