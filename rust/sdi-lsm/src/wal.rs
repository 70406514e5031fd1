//! The write-ahead log: one frame per write call (a batch is one frame, so
//! it is recovered whole or not at all).
//!
//! ```text
//! frame: payload_bytes u32 LE, crc32c u32 LE (of the payload), payload
//! payload: op_count varint, then per op:
//!   kind u8 (1 add, 2 delete, 3 set attrs), user u32 LE, doc u64 LE,
//!   add:       date i64 LE, folder u32 LE, flags u32 LE, field_count varint,
//!              per field: field u8, text_bytes varint, UTF-8 text
//!   delete:    nothing more
//!   set attrs: date i64 LE, folder u32 LE, flags u32 LE
//! ```
//!
//! The text is logged, not the tokens: replay tokenizes again, which is
//! deterministic.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::codec::{get_varint, put_varint};
use crate::constants::{WAL_FRAME_BYTES_MAX, WAL_FRAME_HEADER_BYTES};
use crate::doc::{Attrs, Doc, Field, Op};
use crate::error::{io_error, Error, Result};

const KIND_ADD: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_SET_ATTRS: u8 = 3;

pub(crate) fn wal_file_name(seq: u64) -> String {
    format!("wal-{seq:020}.log")
}

pub(crate) fn parse_wal_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn put_attrs(out: &mut Vec<u8>, attrs: &Attrs) {
    out.extend_from_slice(&attrs.date.to_le_bytes());
    out.extend_from_slice(&attrs.folder.to_le_bytes());
    out.extend_from_slice(&attrs.flags.to_le_bytes());
}

/// Appends one frame holding `ops` to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, ops: &[&Op]) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; WAL_FRAME_HEADER_BYTES]);
    put_varint(out, ops.len() as u64);
    for op in ops {
        match op {
            Op::Add(doc) => {
                out.push(KIND_ADD);
                out.extend_from_slice(&doc.user.to_le_bytes());
                out.extend_from_slice(&doc.id.to_le_bytes());
                put_attrs(out, &doc.attrs);
                put_varint(out, doc.fields.len() as u64);
                for (field, text) in &doc.fields {
                    out.push(*field as u8);
                    put_varint(out, text.len() as u64);
                    out.extend_from_slice(text.as_bytes());
                }
            }
            Op::Delete { user, doc } => {
                out.push(KIND_DELETE);
                out.extend_from_slice(&user.to_le_bytes());
                out.extend_from_slice(&doc.to_le_bytes());
            }
            Op::SetAttrs { user, doc, attrs } => {
                out.push(KIND_SET_ATTRS);
                out.extend_from_slice(&user.to_le_bytes());
                out.extend_from_slice(&doc.to_le_bytes());
                put_attrs(out, attrs);
            }
        }
    }
    let payload_bytes = out.len() - start - WAL_FRAME_HEADER_BYTES;
    if payload_bytes > WAL_FRAME_BYTES_MAX {
        out.truncate(start);
        return Err(Error::InvalidArgument(format!(
            "the batch takes {payload_bytes} bytes in the log, over the limit of \
             {WAL_FRAME_BYTES_MAX}; split it"
        )));
    }
    let crc = crc32c::crc32c(&out[start + WAL_FRAME_HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&(payload_bytes as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
    fn varint(&mut self) -> Option<u64> {
        get_varint(self.buf, &mut self.pos)
    }
    fn attrs(&mut self) -> Option<Attrs> {
        Some(Attrs {
            date: self.u64()? as i64,
            folder: self.u32()?,
            flags: self.u32()?,
        })
    }
}

fn decode_payload(payload: &[u8]) -> Option<Vec<Op>> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let count = r.varint()?;
    let mut ops = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        let kind = r.u8()?;
        let user = r.u32()?;
        let doc = r.u64()?;
        ops.push(match kind {
            KIND_ADD => {
                let attrs = r.attrs()?;
                let field_count = r.varint()?;
                let mut fields = Vec::with_capacity(field_count.min(64) as usize);
                for _ in 0..field_count {
                    let field = Field::from_u8(r.u8()?)?;
                    let len = usize::try_from(r.varint()?).ok()?;
                    let text = std::str::from_utf8(r.bytes(len)?).ok()?;
                    fields.push((field, text.to_string()));
                }
                Op::Add(Doc {
                    user,
                    id: doc,
                    attrs,
                    fields,
                })
            }
            KIND_DELETE => Op::Delete { user, doc },
            KIND_SET_ATTRS => Op::SetAttrs {
                user,
                doc,
                attrs: r.attrs()?,
            },
            _ => return None,
        });
    }
    (r.pos == payload.len()).then_some(ops)
}

/// Reads the frames of a log file. Returns the ops of every whole, valid
/// frame and the byte length they take; anything after the first torn or
/// damaged frame is left out (it was a write the process died in).
pub(crate) fn read_wal(path: &Path) -> Result<(Vec<Op>, u64)> {
    let buf = std::fs::read(path).map_err(io_error(path))?;
    let mut ops = Vec::new();
    let mut pos = 0usize;
    while buf.len() - pos >= WAL_FRAME_HEADER_BYTES {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().unwrap_or_default());
        let start = pos + WAL_FRAME_HEADER_BYTES;
        if len > WAL_FRAME_BYTES_MAX || buf.len() - start < len {
            break;
        }
        let payload = &buf[start..start + len];
        if crc32c::crc32c(payload) != crc {
            break;
        }
        let Some(frame_ops) = decode_payload(payload) else {
            break;
        };
        ops.extend(frame_ops);
        pos = start + len;
    }
    Ok((ops, pos as u64))
}

/// The log file being appended to.
pub(crate) struct WalWriter {
    pub seq: u64,
    pub path: PathBuf,
    file: File,
    pub bytes: u64,
}

impl WalWriter {
    /// Opens log `seq` in `dir` for appending, cutting it to `valid_bytes`
    /// (dropping a torn tail), or creating it.
    pub fn open(dir: &Path, seq: u64, valid_bytes: u64) -> Result<WalWriter> {
        let path = dir.join(wal_file_name(seq));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let len = file.metadata().map_err(io_error(&path))?.len();
        if len != valid_bytes {
            file.set_len(valid_bytes).map_err(io_error(&path))?;
            file.sync_all().map_err(io_error(&path))?;
        }
        let mut writer = WalWriter {
            seq,
            path,
            file,
            bytes: valid_bytes,
        };
        use std::io::Seek;
        writer
            .file
            .seek(std::io::SeekFrom::Start(valid_bytes))
            .map_err(io_error(&writer.path))?;
        Ok(writer)
    }

    pub fn append(&mut self, frame: &[u8], sync: bool) -> Result<()> {
        self.file.write_all(frame).map_err(io_error(&self.path))?;
        self.bytes += frame.len() as u64;
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(io_error(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_torn_tail() {
        let dir = crate::test_dir("wal");
        let ops = [
            Op::Add(Doc {
                user: 7,
                id: 3,
                attrs: Attrs {
                    date: -5,
                    folder: 2,
                    flags: 1,
                },
                fields: vec![(Field::Subject, "héllo".into()), (Field::Body, "".into())],
            }),
            Op::Delete { user: 7, doc: 3 },
            Op::SetAttrs {
                user: 1,
                doc: u64::MAX,
                attrs: Attrs::default(),
            },
        ];
        let mut frame = Vec::new();
        encode_frame(&mut frame, &[&ops[0], &ops[1]]).unwrap();
        let first = frame.len();
        encode_frame(&mut frame, &[&ops[2]]).unwrap();
        let mut writer = WalWriter::open(&dir, 1, 0).unwrap();
        writer.append(&frame, true).unwrap();
        let path = dir.join(wal_file_name(1));
        let (got, len) = read_wal(&path).unwrap();
        assert_eq!(got, ops);
        assert_eq!(len, frame.len() as u64);
        for cut in 0..frame.len() {
            std::fs::write(&path, &frame[..cut]).unwrap();
            let (got, len) = read_wal(&path).unwrap();
            let expected = if cut >= first { 2 } else { 0 };
            assert_eq!(got.len(), expected, "cut {cut}");
            assert_eq!(len, if cut >= first { first as u64 } else { 0 });
        }
        let mut damaged = frame.clone();
        damaged[first + 10] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        assert_eq!(read_wal(&path).unwrap().0.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
