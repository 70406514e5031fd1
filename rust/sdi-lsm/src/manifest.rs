//! The manifest: which runs are live and where the log starts. Written to
//! `MANIFEST.tmp`, synced, renamed over `MANIFEST`, then the directory is
//! synced, so a crash leaves either the old or the new one.
//!
//! ```text
//! sdi-lsm manifest 1
//! wal <first log sequence to replay>
//! next_run <next run id>
//! run <id>            one line per run, oldest first
//! crc <CRC-32C of the lines above, 8 hex digits>
//! ```

use std::io::Write;
use std::path::Path;

use crate::error::{corrupt, io_error, Result};

pub(crate) const MANIFEST_FILE: &str = "MANIFEST";
pub(crate) const MANIFEST_TMP_FILE: &str = "MANIFEST.tmp";
const HEADER: &str = "sdi-lsm manifest 1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub wal_start: u64,
    pub next_run: u64,
    /// Oldest first.
    pub runs: Vec<u64>,
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

impl Manifest {
    pub fn write(&self, dir: &Path) -> Result<()> {
        let mut text = format!(
            "{HEADER}\nwal {}\nnext_run {}\n",
            self.wal_start, self.next_run
        );
        for id in &self.runs {
            text.push_str(&format!("run {id}\n"));
        }
        let crc = crc32c::crc32c(text.as_bytes());
        text.push_str(&format!("crc {crc:08x}\n"));
        let tmp = dir.join(MANIFEST_TMP_FILE);
        let mut file = std::fs::File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(text.as_bytes()).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
        drop(file);
        let path = dir.join(MANIFEST_FILE);
        std::fs::rename(&tmp, &path).map_err(io_error(&path))?;
        sync_dir(dir)
    }

    /// Reads the manifest; `None` if there is none (a new index).
    pub fn read(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        };
        let bad = |what: &str| corrupt(&path, format!("manifest: {what}"));
        let crc_at = text.rfind("crc ").ok_or_else(|| bad("no checksum line"))?;
        let (body, crc_line) = text.split_at(crc_at);
        let crc = u32::from_str_radix(crc_line.trim_start_matches("crc ").trim_end(), 16)
            .map_err(|_| bad("unreadable checksum"))?;
        if crc != crc32c::crc32c(body.as_bytes()) {
            return Err(bad("checksum mismatch"));
        }
        let mut lines = body.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad("unknown header"));
        }
        let mut manifest = Manifest {
            wal_start: 0,
            next_run: 0,
            runs: Vec::new(),
        };
        for line in lines {
            let (name, value) = line.split_once(' ').ok_or_else(|| bad("malformed line"))?;
            let value: u64 = value.parse().map_err(|_| bad("malformed number"))?;
            match name {
                "wal" => manifest.wal_start = value,
                "next_run" => manifest.next_run = value,
                "run" => manifest.runs.push(value),
                _ => return Err(bad("unknown line")),
            }
        }
        Ok(Some(manifest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = crate::test_dir("manifest");
        assert_eq!(Manifest::read(&dir).unwrap(), None);
        let manifest = Manifest {
            wal_start: 3,
            next_run: 9,
            runs: vec![1, 4, 8],
        };
        manifest.write(&dir).unwrap();
        assert_eq!(Manifest::read(&dir).unwrap(), Some(manifest));
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("run 4", "run 5")).unwrap();
        assert!(Manifest::read(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
