//! The shared mapping: header fields as atomics and the data area.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::constants::{
    CAPACITY_BYTES_MAX, CAPACITY_BYTES_MIN, FORMAT_MAGIC, FORMAT_VERSION, HEADER_BYTES,
    RECORD_ALIGN_BYTES, RECORD_BYTES_MAX, RECORD_HEADER_BYTES,
};
use crate::error::{corrupt, Error, Result};
use crate::layout::*;

/// Checks a capacity asked for by a caller.
pub(crate) fn check_capacity(capacity_bytes: u64) -> Result<()> {
    if !capacity_bytes.is_power_of_two()
        || !(CAPACITY_BYTES_MIN..=CAPACITY_BYTES_MAX).contains(&capacity_bytes)
    {
        let suggestion = capacity_bytes
            .checked_next_power_of_two()
            .unwrap_or(CAPACITY_BYTES_MAX)
            .clamp(CAPACITY_BYTES_MIN, CAPACITY_BYTES_MAX);
        return Err(Error::BadCapacity {
            capacity: capacity_bytes,
            suggestion,
        });
    }
    Ok(())
}

/// The largest payload a ring of `capacity_bytes` accepts.
pub(crate) fn record_bytes_max_for(capacity_bytes: u64) -> usize {
    let fits_ring = capacity_bytes.saturating_sub(RECORD_HEADER_BYTES as u64);
    usize::try_from(fits_ring)
        .unwrap_or(usize::MAX)
        .min(RECORD_BYTES_MAX)
}

/// One mapping of a ring, shared by the handles that use it.
pub(crate) struct Region {
    // Keeps the mapping alive; `base` points into it.
    _map: MmapRaw,
    base: *mut u8,
    capacity_bytes: u64,
}

// SAFETY: the region is plain shared memory; every field that two threads
// touch at once is accessed through atomics, and the data area is handed
// between the two sides by the release/acquire protocol on head and tail.
unsafe impl Send for Region {}
// SAFETY: as above; `&Region` only exposes atomics and raw pointers.
unsafe impl Sync for Region {}

impl Region {
    /// Maps an anonymous region for two threads of one process.
    pub(crate) fn anonymous(capacity_bytes: u64) -> Result<Region> {
        check_capacity(capacity_bytes)?;
        let length = Self::file_bytes(capacity_bytes)?;
        let map = MmapOptions::new()
            .len(length)
            .map_anon()
            .map_err(|source| Error::Io {
                action: "map anonymous memory of",
                path: format!("{length} bytes").into(),
                source,
            })?;
        let region = Self::from_map(MmapRaw::from(map), capacity_bytes);
        region.initialise(capacity_bytes);
        Ok(region)
    }

    /// Creates a ring file at `path`; fails if the file exists and `overwrite` is false.
    pub(crate) fn create(path: &Path, capacity_bytes: u64, overwrite: bool) -> Result<Region> {
        check_capacity(capacity_bytes)?;
        let length = Self::file_bytes(capacity_bytes)?;
        if overwrite {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        action: "remove the old ring file",
                        path: path.to_owned(),
                        source,
                    })
                }
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| Error::Io {
                action: "create the ring file (pass overwrite=True to replace it)",
                path: path.to_owned(),
                source,
            })?;
        file.set_len(length as u64).map_err(|source| Error::Io {
            action: "size the ring file",
            path: path.to_owned(),
            source,
        })?;
        let map = Self::map_file(&file, path, length)?;
        let region = Self::from_map(map, capacity_bytes);
        region.initialise(capacity_bytes);
        Ok(region)
    }

    /// Opens and checks an existing ring file.
    pub(crate) fn open(path: &Path) -> Result<Region> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Io {
                action: "open the ring file",
                path: path.to_owned(),
                source,
            })?;
        let file_bytes = file
            .metadata()
            .map_err(|source| Error::Io {
                action: "read the size of",
                path: path.to_owned(),
                source,
            })?
            .len();
        if file_bytes < HEADER_BYTES as u64 {
            return Err(corrupt(format!(
                "{} is {file_bytes} bytes, shorter than the {HEADER_BYTES}-byte ring header \
                 (not a ring file, or truncated)",
                path.display()
            )));
        }
        let length = usize::try_from(file_bytes)
            .map_err(|_| corrupt(format!("{} is too large to map", path.display())))?;
        let header = Self::map_file(&file, path, HEADER_BYTES)?;
        let capacity_bytes =
            Self::check_header(header.as_ptr(), file_bytes).map_err(|error| match error {
                Error::Corrupt(detail) => corrupt(format!("{}: {detail}", path.display())),
                other => other,
            })?;
        drop(header);
        let map = Self::map_file(&file, path, length)?;
        let region = Self::from_map(map, capacity_bytes);
        region.check_indices()?;
        Ok(region)
    }

    fn file_bytes(capacity_bytes: u64) -> Result<usize> {
        usize::try_from(capacity_bytes)
            .ok()
            .and_then(|capacity| capacity.checked_add(HEADER_BYTES))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "capacity_bytes {capacity_bytes} does not fit this machine's address space"
                ))
            })
    }

    fn map_file(file: &File, path: &Path, length: usize) -> Result<MmapRaw> {
        MmapOptions::new()
            .len(length)
            .map_raw(file)
            .map_err(|source| Error::Io {
                action: "map",
                path: path.to_owned(),
                source,
            })
    }

    fn from_map(map: MmapRaw, capacity_bytes: u64) -> Region {
        let base = map.as_mut_ptr();
        assert!(map.len() as u64 >= HEADER_BYTES as u64 + capacity_bytes);
        assert_eq!(base as usize % HEADER_BYTES.min(4096), 0);
        Region {
            _map: map,
            base,
            capacity_bytes,
        }
    }

    /// Reads the header fields from a mapping of at least `HEADER_BYTES` and
    /// checks them against each other and the file size; returns the capacity.
    fn check_header(base: *const u8, file_bytes: u64) -> Result<u64> {
        // SAFETY: the caller mapped at least HEADER_BYTES at `base`, which is
        // page aligned, and every offset below is within the header and
        // aligned to its field's size.
        let (magic, version, align, capacity, header_bytes) = unsafe {
            (
                (*(base.add(MAGIC_OFFSET) as *const AtomicU64)).load(Ordering::Acquire),
                (*(base.add(VERSION_OFFSET) as *const AtomicU32)).load(Ordering::Relaxed),
                (*(base.add(RECORD_ALIGN_OFFSET) as *const AtomicU32)).load(Ordering::Relaxed),
                (*(base.add(CAPACITY_OFFSET) as *const AtomicU64)).load(Ordering::Relaxed),
                (*(base.add(HEADER_BYTES_OFFSET) as *const AtomicU64)).load(Ordering::Relaxed),
            )
        };
        if magic != FORMAT_MAGIC {
            return Err(corrupt(format!(
                "bad magic {magic:#018x} (expected {FORMAT_MAGIC:#018x}): not an sdi ring, \
                 or its creator has not finished initialising it"
            )));
        }
        if version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {version}, this build reads version {FORMAT_VERSION}"
            )));
        }
        if align as usize != RECORD_ALIGN_BYTES {
            return Err(corrupt(format!(
                "record alignment {align}, this build uses {RECORD_ALIGN_BYTES}"
            )));
        }
        if header_bytes != HEADER_BYTES as u64 {
            return Err(corrupt(format!(
                "header size {header_bytes}, this build uses {HEADER_BYTES}"
            )));
        }
        if check_capacity(capacity).is_err() {
            return Err(corrupt(format!(
                "capacity {capacity} is not a power of two between \
                 {CAPACITY_BYTES_MIN} and {CAPACITY_BYTES_MAX}"
            )));
        }
        if file_bytes != HEADER_BYTES as u64 + capacity {
            return Err(corrupt(format!(
                "the file is {file_bytes} bytes but its header says {} \
                 ({HEADER_BYTES} header + {capacity} capacity)",
                HEADER_BYTES as u64 + capacity
            )));
        }
        Ok(capacity)
    }

    fn initialise(&self, capacity_bytes: u64) {
        // SAFETY: the region was just mapped by this process and nobody else
        // has checked its magic yet; the offsets are in the header and aligned.
        unsafe {
            (*(self.base.add(VERSION_OFFSET) as *const AtomicU32))
                .store(FORMAT_VERSION, Ordering::Relaxed);
            (*(self.base.add(RECORD_ALIGN_OFFSET) as *const AtomicU32))
                .store(RECORD_ALIGN_BYTES as u32, Ordering::Relaxed);
        }
        self.word(CAPACITY_OFFSET)
            .store(capacity_bytes, Ordering::Relaxed);
        self.word(HEADER_BYTES_OFFSET)
            .store(HEADER_BYTES as u64, Ordering::Relaxed);
        // The magic goes last, with release: an opener that sees it also sees
        // every field above.
        self.word(MAGIC_OFFSET)
            .store(FORMAT_MAGIC, Ordering::Release);
    }

    /// Checks the shared head and tail against each other and the capacity.
    pub(crate) fn check_indices(&self) -> Result<()> {
        let head = self.head().load(Ordering::Acquire);
        let tail = self.tail().load(Ordering::Acquire);
        self.check_span(head, tail)
    }

    /// Checks that `head..tail` is a valid occupied span.
    #[inline]
    pub(crate) fn check_span(&self, head: u64, tail: u64) -> Result<()> {
        let align = RECORD_ALIGN_BYTES as u64 - 1;
        if head > tail || tail - head > self.capacity_bytes || (head | tail) & align != 0 {
            return Err(corrupt(format!(
                "head {head} and tail {tail} do not describe at most {} aligned bytes",
                self.capacity_bytes
            )));
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset + 8 <= HEADER_BYTES && offset % 8 == 0);
        // SAFETY: every caller passes a header offset below HEADER_BYTES that
        // is 8-byte aligned; the mapping is page aligned and outlives `self`.
        unsafe { &*(self.base.add(offset) as *const AtomicU64) }
    }

    #[inline]
    pub(crate) fn tail(&self) -> &AtomicU64 {
        self.word(TAIL_OFFSET)
    }

    #[inline]
    pub(crate) fn head(&self) -> &AtomicU64 {
        self.word(HEAD_OFFSET)
    }

    #[inline]
    pub(crate) fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// The start of the data area.
    #[inline]
    pub(crate) fn data(&self) -> *mut u8 {
        // SAFETY: the mapping is HEADER_BYTES + capacity long.
        unsafe { self.base.add(HEADER_BYTES) }
    }

    /// The record header word at `offset` in the data area.
    #[inline]
    pub(crate) fn record_word(&self, offset: u64) -> &AtomicU64 {
        debug_assert!(offset + 8 <= self.capacity_bytes && offset % 8 == 0);
        // SAFETY: callers pass an 8-aligned offset with offset + 8 <= capacity,
        // which `offset & (capacity - 1)` on an aligned position guarantees.
        unsafe { &*(self.data().add(offset as usize) as *const AtomicU64) }
    }
}

/// Copies `len` bytes from `src` to `dst`, inlining the copy for the record
/// sizes benchmarks and wire formats use most: a call to `memcpy` costs more
/// than the copy itself at these sizes.
///
/// # Safety
/// `src` must be valid for reading and `dst` for writing `len` bytes, and the
/// two ranges must not overlap.
#[inline(always)]
pub(crate) unsafe fn copy_record(src: *const u8, dst: *mut u8, len: usize) {
    macro_rules! fixed {
        ($n:literal) => {
            // SAFETY: the caller guarantees `len` (== $n) readable and writable bytes.
            unsafe { ptr::copy_nonoverlapping(src.cast::<[u8; $n]>(), dst.cast::<[u8; $n]>(), 1) }
        };
    }
    match len {
        8 => fixed!(8),
        16 => fixed!(16),
        32 => fixed!(32),
        48 => fixed!(48),
        64 => fixed!(64),
        80 => fixed!(80),
        128 => fixed!(128),
        256 => fixed!(256),
        // SAFETY: as above, for any length.
        _ => unsafe { ptr::copy_nonoverlapping(src, dst, len) },
    }
}
