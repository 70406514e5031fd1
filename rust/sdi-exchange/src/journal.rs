//! The sequencer's journal: every inbound command, stamped and checksummed,
//! written before the engine acts on it.
//!
//! File layout (little-endian):
//!
//! ```text
//! header, 64 bytes:  magic "SDIXJNL1" | version u32 | record_bytes u32 |
//!                    config fingerprint u64 | first_seq u64 | zeros | crc32c u32 (of bytes 0..60)
//! record, 64 bytes:  seq u64 | command 48 bytes | crc32c u32 (of bytes 0..56) | zeros u32
//! ```
//!
//! On open every record is checked: its checksum, and that its sequence number
//! is one more than the last. A bad record at the end with nothing valid after
//! it is a torn tail (a write the process died in); it is cut off and never
//! served. A bad record with valid records after it is corruption, and opening
//! fails with `Error::Corrupt` rather than drop acknowledged commands.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::types::{Command, COMMAND_BYTES};

const MAGIC: &[u8; 8] = b"SDIXJNL1";
const VERSION: u32 = 1;
/// Bytes of the header and of each record.
pub const RECORD_BYTES: usize = 64;
const HEADER_BYTES: usize = 64;
/// Records read per chunk while replaying.
const REPLAY_CHUNK_RECORDS: usize = 8192;

/// When an append is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `fdatasync` after every appended batch (group commit): an acknowledged
    /// batch survives a power cut.
    Sync,
    /// Written to the OS page cache only: survives the process being killed,
    /// not a power cut. For tests and studies.
    Buffered,
}

/// One record as replay reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalRecord {
    pub seq: u64,
    pub command: Command,
}

/// An open journal, positioned to append after its last valid record.
pub struct Journal {
    file: File,
    path: PathBuf,
    durability: Durability,
    next_seq: u64,
    buffer: Vec<u8>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, message: String) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        message,
    }
}

fn encode_record(seq: u64, command: &Command, out: &mut [u8]) {
    out[0..8].copy_from_slice(&seq.to_le_bytes());
    out[8..8 + COMMAND_BYTES].copy_from_slice(&command.to_bytes());
    let crc = crc32c::crc32c(&out[0..56]);
    out[56..60].copy_from_slice(&crc.to_le_bytes());
    out[60..64].fill(0);
}

/// The record in `bytes`, if its checksum holds.
fn decode_record(bytes: &[u8]) -> Option<JournalRecord> {
    let crc = u32::from_le_bytes(bytes[56..60].try_into().ok()?);
    if crc32c::crc32c(&bytes[0..56]) != crc || bytes[60..64] != [0; 4] {
        return None;
    }
    let seq = u64::from_le_bytes(bytes[0..8].try_into().ok()?);
    let command: &[u8; COMMAND_BYTES] = bytes[8..56].try_into().ok()?;
    Some(JournalRecord {
        seq,
        command: Command::from_bytes(command),
    })
}

impl Journal {
    /// Opens the journal at `path` (creating it if absent), checks it, calls
    /// `replay` for every valid record in order, cuts off a torn tail, and
    /// returns the journal ready to append.
    pub fn open(
        path: &Path,
        fingerprint: u64,
        durability: Durability,
        mut replay: impl FnMut(&JournalRecord),
    ) -> Result<Self, Error> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_error(path))?;
        let length = file.metadata().map_err(io_error(path))?.len();
        let first_seq: u64 = 1;
        if length == 0 {
            let mut header = [0u8; HEADER_BYTES];
            header[0..8].copy_from_slice(MAGIC);
            header[8..12].copy_from_slice(&VERSION.to_le_bytes());
            header[12..16].copy_from_slice(&(RECORD_BYTES as u32).to_le_bytes());
            header[16..24].copy_from_slice(&fingerprint.to_le_bytes());
            header[24..32].copy_from_slice(&first_seq.to_le_bytes());
            let crc = crc32c::crc32c(&header[0..60]);
            header[60..64].copy_from_slice(&crc.to_le_bytes());
            file.write_all(&header).map_err(io_error(path))?;
            file.sync_all().map_err(io_error(path))?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)
                    .and_then(|dir| dir.sync_all())
                    .map_err(io_error(path))?;
            }
            return Ok(Self {
                file,
                path: path.to_path_buf(),
                durability,
                next_seq: first_seq,
                buffer: Vec::new(),
            });
        }
        if length < HEADER_BYTES as u64 {
            return Err(corrupt(path, format!(
                "the file is {length} bytes, shorter than a journal header; it is not an sdi exchange journal"
            )));
        }
        let mut header = [0u8; HEADER_BYTES];
        file.read_exact(&mut header).map_err(io_error(path))?;
        if &header[0..8] != MAGIC {
            return Err(corrupt(
                path,
                "bad magic: not an sdi exchange journal".into(),
            ));
        }
        let crc = u32::from_le_bytes([header[60], header[61], header[62], header[63]]);
        if crc32c::crc32c(&header[0..60]) != crc {
            return Err(corrupt(path, "the header's checksum does not match".into()));
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if version != VERSION {
            return Err(corrupt(
                path,
                format!("journal version {version}; this build reads version {VERSION}"),
            ));
        }
        let record_bytes = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        if record_bytes as usize != RECORD_BYTES {
            return Err(corrupt(
                path,
                format!("record size {record_bytes}, expected {RECORD_BYTES}"),
            ));
        }
        let stored = u64::from_le_bytes(header[16..24].try_into().unwrap_or_default());
        if stored != fingerprint {
            return Err(corrupt(
                path,
                format!(
                    "the journal was written by an engine with another configuration \
                 (fingerprint {stored:#018x}, this one {fingerprint:#018x}); \
                 open it with the configuration it was written with"
                ),
            ));
        }
        let first_seq = u64::from_le_bytes(header[24..32].try_into().unwrap_or_default());
        let mut expected = first_seq;
        let mut valid_end = HEADER_BYTES as u64;
        let mut chunk = vec![0u8; REPLAY_CHUNK_RECORDS * RECORD_BYTES];
        let mut offset = HEADER_BYTES as u64;
        let mut torn_at: Option<u64> = None;
        while offset < length {
            let want = ((length - offset) as usize).min(chunk.len());
            file.read_exact(&mut chunk[..want])
                .map_err(io_error(path))?;
            for record_bytes in chunk[..want].chunks(RECORD_BYTES) {
                let record = (record_bytes.len() == RECORD_BYTES)
                    .then(|| decode_record(record_bytes))
                    .flatten();
                match (record, torn_at) {
                    (Some(record), None) if record.seq == expected => {
                        replay(&record);
                        expected += 1;
                        valid_end += RECORD_BYTES as u64;
                    }
                    (Some(record), None) => {
                        return Err(corrupt(
                            path,
                            format!(
                                "the record at byte {offset} carries seq {} where seq {expected} \
                             belongs; this is corruption, so nothing was cut off; restore the \
                             journal from a replica",
                                record.seq
                            ),
                        ));
                    }
                    (Some(record), Some(at)) => {
                        return Err(corrupt(
                            path,
                            format!(
                                "the record at byte {at} is damaged but a valid record follows it \
                             (seq {} at byte {offset}); this is corruption, not a torn write, \
                             so nothing was cut off; restore the journal from a replica",
                                record.seq
                            ),
                        ));
                    }
                    (None, None) => torn_at = Some(offset),
                    (None, Some(_)) => {}
                }
                offset += record_bytes.len() as u64;
            }
        }
        if valid_end < length {
            file.set_len(valid_end).map_err(io_error(path))?;
            file.sync_all().map_err(io_error(path))?;
        }
        file.seek(SeekFrom::Start(valid_end))
            .map_err(io_error(path))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            durability,
            next_seq: expected,
            buffer: Vec::new(),
        })
    }

    /// The sequence number the next appended command must carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `commands` with sequence numbers `next_seq..`, in one write and
    /// (with [`Durability::Sync`]) one `fdatasync`. Returns the first sequence number.
    pub fn append(&mut self, commands: &[Command]) -> Result<u64, Error> {
        let first = self.next_seq;
        self.buffer.resize(commands.len() * RECORD_BYTES, 0);
        for (index, (command, out)) in commands
            .iter()
            .zip(self.buffer.chunks_exact_mut(RECORD_BYTES))
            .enumerate()
        {
            encode_record(first + index as u64, command, out);
        }
        self.file
            .write_all(&self.buffer)
            .map_err(io_error(&self.path))?;
        if self.durability == Durability::Sync {
            self.file.sync_data().map_err(io_error(&self.path))?;
        }
        self.next_seq += commands.len() as u64;
        Ok(first)
    }
}
