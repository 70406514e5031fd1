//! Helpers shared by the integration tests: temporary ring files and
//! self-checking payloads.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

static NEXT: AtomicU64 = AtomicU64::new(0);

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "sdi-ring-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("creates a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn ring(&self, capacity_bytes: u64) -> PathBuf {
        let path = self.0.join("ring");
        sdi_ring::create(&path, capacity_bytes, true).expect("creates the ring");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// FNV-1a over `bytes`, a checksum good enough to catch torn copies.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A payload of `length` bytes (at least 16) that carries its sequence
/// number in front and a checksum of the rest at the back.
pub fn sequenced_payload(sequence: u64, length: usize) -> Vec<u8> {
    assert!(length >= 16);
    let mut payload = vec![0u8; length];
    payload[..8].copy_from_slice(&sequence.to_le_bytes());
    for (index, byte) in payload[8..length - 8].iter_mut().enumerate() {
        *byte = (sequence as usize).wrapping_mul(31).wrapping_add(index) as u8;
    }
    let sum = checksum(&payload[..length - 8]);
    payload[length - 8..].copy_from_slice(&sum.to_le_bytes());
    payload
}

/// Checks a payload made by [`sequenced_payload`]; returns its sequence number.
pub fn check_payload(payload: &[u8]) -> u64 {
    assert!(payload.len() >= 16, "payload of {} bytes", payload.len());
    let body = &payload[..payload.len() - 8];
    let stored = u64::from_le_bytes(payload[payload.len() - 8..].try_into().unwrap());
    assert_eq!(checksum(body), stored, "checksum mismatch: torn record");
    u64::from_le_bytes(payload[..8].try_into().unwrap())
}

/// Overwrites 8 bytes of a file at `offset`.
pub fn poke_u64(path: &Path, offset: u64, value: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("opens the ring file");
    file.write_all_at(&value.to_le_bytes(), offset)
        .expect("writes the ring file");
}

/// Reads 8 bytes of a file at `offset`.
pub fn peek_u64(path: &Path, offset: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).expect("opens the ring file");
    let mut bytes = [0u8; 8];
    file.read_exact_at(&mut bytes, offset)
        .expect("reads the ring file");
    u64::from_le_bytes(bytes)
}
