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
//!
//! The writer holds an exclusive `flock` on the file for as long as it has it
//! open; the kernel releases it when the writer dies, however it dies. A hot
//! standby follows the file with a [`Follower`] and takes the journal over when
//! it can take the lock.

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
/// Where the header keeps the writer epoch (see `bump_epoch`).
const EPOCH_RANGE: std::ops::Range<usize> = 32..40;

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
    /// Where the next record goes: the end of the last whole, acknowledged batch.
    end: u64,
    /// Set when a failed append could not be undone: no more appends.
    poisoned: Option<String>,
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

/// Takes the journal's exclusive lock without waiting. The lock belongs to the
/// open file, so the kernel drops it when the holder dies, even by SIGKILL.
fn try_lock(file: &File, path: &Path) -> Result<bool, Error> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock takes a file descriptor we own for the duration of the call.
    let status = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if status == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(io_error(path)(error))
}

/// Reads and checks the header; returns the first sequence number.
fn read_header(
    file: &mut File,
    path: &Path,
    fingerprint: u64,
    length: u64,
) -> Result<(u64, u64), Error> {
    if length < HEADER_BYTES as u64 {
        return Err(corrupt(path, format!(
            "the file is {length} bytes, shorter than a journal header; it is not an sdi exchange journal"
        )));
    }
    let mut header = [0u8; HEADER_BYTES];
    file.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
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
    Ok((
        u64::from_le_bytes(header[24..32].try_into().unwrap_or_default()),
        u64::from_le_bytes(header[EPOCH_RANGE].try_into().unwrap_or_default()),
    ))
}

/// Counts one more writer: every open for appending bumps the header's epoch,
/// so a follower can tell that a writer may have cut records it already read.
fn bump_epoch(file: &File, path: &Path) -> Result<u64, Error> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut header, 0).map_err(io_error(path))?;
    let epoch = u64::from_le_bytes(header[EPOCH_RANGE].try_into().unwrap_or_default()) + 1;
    header[EPOCH_RANGE].copy_from_slice(&epoch.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&header, 0).map_err(io_error(path))?;
    file.sync_data().map_err(io_error(path))?;
    Ok(epoch)
}

/// The epoch in the header now, if the header reads whole (its checksum holds).
fn current_epoch(file: &File, path: &Path) -> Result<Option<u64>, Error> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut header, 0).map_err(io_error(path))?;
    let crc = u32::from_le_bytes([header[60], header[61], header[62], header[63]]);
    Ok((crc32c::crc32c(&header[0..60]) == crc)
        .then(|| u64::from_le_bytes(header[EPOCH_RANGE].try_into().unwrap_or_default())))
}

/// Where a scan of the records stands.
struct Cursor {
    /// Byte offset of the next record to read.
    offset: u64,
    /// The sequence number that record must carry.
    expected: u64,
}

/// How strict a scan is about what follows the last valid record.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// The writer may still be appending: stop quietly at the first record
    /// that is not complete and valid, and look again later.
    Following,
    /// Nobody writes: a damaged record followed by a valid one is corruption.
    Final,
}

/// Replays the valid records from `cursor` up to `length`, advancing it.
/// With `Scan::Final`, returns an error if valid records follow a damaged one.
fn scan(
    file: &mut File,
    path: &Path,
    cursor: &mut Cursor,
    length: u64,
    mode: Scan,
    replay: &mut dyn FnMut(&JournalRecord),
) -> Result<(), Error> {
    file.seek(SeekFrom::Start(cursor.offset))
        .map_err(io_error(path))?;
    let mut chunk = vec![0u8; REPLAY_CHUNK_RECORDS * RECORD_BYTES];
    let mut offset = cursor.offset;
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
                (Some(record), None) if record.seq == cursor.expected => {
                    replay(&record);
                    cursor.expected += 1;
                    cursor.offset += RECORD_BYTES as u64;
                }
                (Some(record), None) => {
                    return Err(corrupt(
                        path,
                        format!(
                            "the record at byte {offset} carries seq {} where seq {} \
                         belongs; this is corruption, so nothing was cut off; restore the \
                         journal from a replica",
                            record.seq, cursor.expected
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
                (_, None) if mode == Scan::Following => return Ok(()),
                (None, None) => torn_at = Some(offset),
                _ => {}
            }
            offset += record_bytes.len() as u64;
        }
    }
    Ok(())
}

impl Journal {
    /// Opens the journal at `path` (creating it if absent), takes its exclusive
    /// lock, checks it, calls `replay` for every valid record in order, cuts off
    /// a torn tail, and returns the journal ready to append.
    ///
    /// Fails with `Error::Locked` while another process holds the journal.
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
        if !try_lock(&file, path)? {
            return Err(Error::Locked {
                path: path.to_path_buf(),
            });
        }
        let length = file.metadata().map_err(io_error(path))?.len();
        if length == 0 {
            let first_seq: u64 = 1;
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
                end: HEADER_BYTES as u64,
                poisoned: None,
                buffer: Vec::new(),
            });
        }
        let (first_seq, _) = read_header(&mut file, path, fingerprint, length)?;
        let mut cursor = Cursor {
            offset: HEADER_BYTES as u64,
            expected: first_seq,
        };
        Self::finish_open(file, path, durability, &mut cursor, &mut replay)
    }

    /// The final scan from `cursor`, the torn tail cut, the append position set.
    fn finish_open(
        mut file: File,
        path: &Path,
        durability: Durability,
        cursor: &mut Cursor,
        replay: &mut dyn FnMut(&JournalRecord),
    ) -> Result<Self, Error> {
        let length = file.metadata().map_err(io_error(path))?.len();
        scan(&mut file, path, cursor, length, Scan::Final, replay)?;
        bump_epoch(&file, path)?;
        if cursor.offset < length {
            file.set_len(cursor.offset).map_err(io_error(path))?;
            file.sync_all().map_err(io_error(path))?;
        }
        file.seek(SeekFrom::Start(cursor.offset))
            .map_err(io_error(path))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            durability,
            next_seq: cursor.expected,
            end: cursor.offset,
            poisoned: None,
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
    ///
    /// A batch is all or nothing: if the write or the sync fails, whatever
    /// part of the batch reached the file is cut off again, so that no command
    /// the caller saw fail comes back on replay, and the journal refuses every
    /// later append (`Error::Poisoned`): reopen it to go on.
    pub fn append(&mut self, commands: &[Command]) -> Result<u64, Error> {
        if let Some(reason) = &self.poisoned {
            return Err(Error::Poisoned {
                path: self.path.clone(),
                reason: reason.clone(),
            });
        }
        let first = self.next_seq;
        self.buffer.resize(commands.len() * RECORD_BYTES, 0);
        for (index, (command, out)) in commands
            .iter()
            .zip(self.buffer.chunks_exact_mut(RECORD_BYTES))
            .enumerate()
        {
            encode_record(first + index as u64, command, out);
        }
        let written = self.file.write_all(&self.buffer);
        let outcome = match written {
            Ok(()) if self.durability == Durability::Sync => {
                self.file.sync_data().map_err(|error| (error, true))
            }
            Ok(()) => Ok(()),
            Err(error) => Err((error, false)),
        };
        if let Err((error, _sync_failed)) = outcome {
            // Cut what part of the batch reached the file (a standby may have
            // read it; the epoch bumped by the next writer tells it so), and
            // refuse further appends: after a failed write or sync the state of
            // the file is the kernel's guess, so the writer must reopen it.
            let end = self.end;
            let _ = self
                .file
                .set_len(end)
                .and_then(|()| self.file.seek(SeekFrom::Start(end)).map(drop));
            self.poisoned = Some(error.to_string());
            return Err(io_error(&self.path)(error));
        }
        self.end += self.buffer.len() as u64;
        self.next_seq += commands.len() as u64;
        Ok(first)
    }
}

/// Reads a journal another process is appending to, for a hot standby: the
/// records as they arrive, then the journal itself once its writer is gone.
pub struct Follower {
    file: File,
    path: PathBuf,
    cursor: Cursor,
    /// The writer epoch when following began.
    epoch: u64,
}

impl Follower {
    /// Opens the journal at `path` for following; it must exist with a header.
    pub fn open(path: &Path, fingerprint: u64) -> Result<Self, Error> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error(path))?;
        let length = file.metadata().map_err(io_error(path))?.len();
        let (first_seq, epoch) = read_header(&mut file, path, fingerprint, length)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            cursor: Cursor {
                offset: HEADER_BYTES as u64,
                expected: first_seq,
            },
            epoch,
        })
    }

    /// The sequence number of the next record the follower expects.
    pub fn next_seq(&self) -> u64 {
        self.cursor.expected
    }

    /// Replays the records appended since the last poll; returns how many.
    /// A record still being written is left for the next poll.
    ///
    /// Fails with `Error::Corrupt` if another writer opened the journal since
    /// following began (it may have cut records this follower applied): start
    /// a new follower.
    pub fn poll(&mut self, mut replay: impl FnMut(&JournalRecord)) -> Result<u64, Error> {
        match current_epoch(&self.file, &self.path)? {
            // A header being rewritten this instant: look again at the next poll.
            None => return Ok(0),
            Some(epoch) if epoch != self.epoch => {
                return Err(corrupt(
                    &self.path,
                    "another writer opened the journal since this standby began following \
                     it, and may have cut records the standby applied; start the standby again"
                        .into(),
                ))
            }
            Some(_) => {}
        }
        let before = self.cursor.expected;
        let length = self.file.metadata().map_err(io_error(&self.path))?.len();
        scan(
            &mut self.file,
            &self.path,
            &mut self.cursor,
            length,
            Scan::Following,
            &mut replay,
        )?;
        Ok(self.cursor.expected - before)
    }

    /// Whether a writer holds the journal (checked by trying its lock).
    /// Takes the journal over if nobody does: replays what is left, cuts a torn
    /// tail and returns the journal ready to append. Returns the follower
    /// unchanged while a writer is alive.
    pub fn try_promote(
        mut self,
        durability: Durability,
        mut replay: impl FnMut(&JournalRecord),
    ) -> Result<Result<Journal, Follower>, Error> {
        if !try_lock(&self.file, &self.path)? {
            return Ok(Err(self));
        }
        let path = self.path.clone();
        Journal::finish_open(self.file, &path, durability, &mut self.cursor, &mut replay).map(Ok)
    }
}
