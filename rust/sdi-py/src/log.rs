//! `sdi._rust.log`: the bindings of the `sdi-log` core.
//!
//! One [`PyPartition`] wraps one open `sdi_log::Partition`. Appends take a
//! whole batch per call; reads return the core's bytes untouched (whole,
//! checksummed batches), and the module functions `batches` and `decode`
//! take those bytes apart for Python users. Every call goes through
//! [`run_core`] with the GIL released; the partition sits behind a mutex
//! that is only ever locked with the GIL released, so two Python threads
//! sharing a handle take turns instead of deadlocking.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;

use crate::errors::{run_core, CoreError, Kind};
use sdi_log::constants::{
    BATCH_BYTES_MAX, BATCH_HEADER_BYTES, BATCH_RECORDS_MAX, INDEX_INTERVAL_BYTES_DEFAULT,
    SEGMENT_BYTES_DEFAULT,
};
use sdi_log::{Error, FsyncPolicy, Partition, PartitionConfig, PayloadKind, Record};

impl CoreError for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::Config(_) | Error::InvalidArgument(_) | Error::OffsetOutOfRange { .. } => {
                Kind::InvalidArgument
            }
            Error::BatchTooLarge { .. } => Kind::LimitExceeded,
            Error::Corrupt { .. } => Kind::Corrupt,
            Error::Locked { .. } => Kind::InvalidArgument,
            Error::Io { .. } | Error::Poisoned { .. } => Kind::Io,
        }
    }
}

/// What a call on a partition handle can fail with: the core's errors, plus
/// the handle's own states.
#[derive(Debug)]
enum Failure {
    Log(Error),
    /// `close()` was called on this handle.
    Closed,
    /// An earlier call panicked while it held the partition.
    Broken,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Log(error)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Log(error) => error.fmt(f),
            Failure::Closed => f.write_str(
                "the partition was closed; open a new Partition on its directory to use it again",
            ),
            Failure::Broken => f.write_str(
                "an earlier call on this partition handle failed inside sdi (a bug); \
                 close it and open the directory again",
            ),
        }
    }
}

impl CoreError for Failure {
    fn kind(&self) -> Kind {
        match self {
            Failure::Log(error) => error.kind(),
            Failure::Closed => Kind::Closed,
            Failure::Broken => Kind::Internal,
        }
    }
}

fn parse_fsync(fsync: &str, interval_ms: u64) -> Result<FsyncPolicy, Error> {
    match fsync {
        "every_batch" => Ok(FsyncPolicy::EveryBatch),
        "interval" => Ok(FsyncPolicy::Interval { interval_ms }),
        "never" => Ok(FsyncPolicy::Never),
        other => Err(Error::Config(format!(
            "fsync must be 'every_batch', 'interval' or 'never', not {other:?}"
        ))),
    }
}

/// An open partition directory (see `sdi.mq.log.Partition`).
#[pyclass(module = "sdi._rust.log", name = "Partition", frozen)]
pub struct PyPartition {
    inner: Mutex<Option<Partition>>,
}

impl PyPartition {
    /// Runs `work` on the open partition with the GIL released.
    fn with<T, F>(&self, py: Python<'_>, work: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(&mut Partition) -> Result<T, Error> + Send,
    {
        run_core(py, || {
            let mut guard = self.lock()?;
            let partition = guard.as_mut().ok_or(Failure::Closed)?;
            work(partition).map_err(Failure::Log)
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Option<Partition>>, Failure> {
        self.inner.lock().map_err(|_| Failure::Broken)
    }
}

#[pymethods]
impl PyPartition {
    #[new]
    #[pyo3(signature = (
        path,
        segment_bytes_max = SEGMENT_BYTES_DEFAULT,
        index_interval_bytes = INDEX_INTERVAL_BYTES_DEFAULT,
        fsync = "every_batch",
        fsync_interval_ms = 1000,
        retention_ms = None,
        retention_bytes = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        segment_bytes_max: u64,
        index_interval_bytes: u32,
        fsync: &str,
        fsync_interval_ms: u64,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
    ) -> PyResult<Self> {
        let fsync = fsync.to_owned();
        run_core(py, move || {
            let config = PartitionConfig {
                segment_bytes_max,
                index_interval_bytes,
                fsync: parse_fsync(&fsync, fsync_interval_ms)?,
                retention_ms,
                retention_bytes,
            };
            let partition = Partition::open(&path, config)?;
            Ok::<_, Error>(PyPartition {
                inner: Mutex::new(Some(partition)),
            })
        })
    }

    /// Appends one batch of records stamped `timestamp_ms`; returns its base
    /// offset. `keys` is `None` (no keys) or one key per value, each `None`
    /// or bytes; a `None` key is stored as an empty key.
    #[pyo3(signature = (keys, values, timestamp_ms))]
    fn append_records(
        &self,
        py: Python<'_>,
        keys: Option<Vec<Option<PyBackedBytes>>>,
        values: Vec<PyBackedBytes>,
        timestamp_ms: i64,
    ) -> PyResult<u64> {
        if let Some(keys) = &keys {
            if keys.len() != values.len() {
                return Err(crate::errors::core_err(
                    py,
                    Error::InvalidArgument(format!(
                        "{} keys for {} values; give one key (or None) per value",
                        keys.len(),
                        values.len()
                    )),
                ));
            }
        }
        let records: Vec<Record<'_>> = values
            .iter()
            .enumerate()
            .map(|(at, value)| Record {
                key: keys
                    .as_ref()
                    .and_then(|keys| keys[at].as_deref())
                    .unwrap_or(&[]),
                value,
            })
            .collect();
        self.with(py, |partition| {
            partition.append_records(&records, timestamp_ms)
        })
    }

    /// Appends `payload` as one opaque batch of `record_count` records;
    /// returns its base offset.
    #[pyo3(signature = (payload, record_count, first_timestamp_ms, max_timestamp_ms))]
    fn append_payload(
        &self,
        py: Python<'_>,
        payload: &[u8],
        record_count: u32,
        first_timestamp_ms: i64,
        max_timestamp_ms: i64,
    ) -> PyResult<u64> {
        self.with(py, |partition| {
            partition.append_payload(payload, record_count, first_timestamp_ms, max_timestamp_ms)
        })
    }

    /// Appends `payload` as one opaque batch of `record_count` offsets from
    /// `base_offset`, which may lie past `next_offset` (a gap left by
    /// compaction on the leader a replica copies); returns `base_offset`.
    #[pyo3(signature = (base_offset, payload, record_count, first_timestamp_ms, max_timestamp_ms))]
    fn append_payload_at(
        &self,
        py: Python<'_>,
        base_offset: u64,
        payload: &[u8],
        record_count: u32,
        first_timestamp_ms: i64,
        max_timestamp_ms: i64,
    ) -> PyResult<u64> {
        self.with(py, |partition| {
            partition.append_payload_at(
                base_offset,
                payload,
                record_count,
                first_timestamp_ms,
                max_timestamp_ms,
            )
        })
    }

    /// Compacts the closed segments wholly below `up_to` (see
    /// `sdi.mq.log.Partition.compact`); returns `(segments_before,
    /// segments_after, bytes_before, bytes_after, records_removed,
    /// tombstones_removed)`.
    #[pyo3(signature = (up_to, now_ms, tombstone_retention_ms))]
    fn compact(
        &self,
        py: Python<'_>,
        up_to: u64,
        now_ms: i64,
        tombstone_retention_ms: u64,
    ) -> PyResult<(usize, usize, u64, u64, u64, u64)> {
        let outcome = self.with(py, |partition| {
            partition.compact(up_to, now_ms, tombstone_retention_ms)
        })?;
        Ok((
            outcome.segments_before,
            outcome.segments_after,
            outcome.bytes_before,
            outcome.bytes_after,
            outcome.records_removed,
            outcome.tombstones_removed,
        ))
    }

    /// Whole batches from the one holding `offset`, as stored.
    #[pyo3(signature = (offset, max_bytes))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        offset: u64,
        max_bytes: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.with(py, |partition| partition.read(offset, max_bytes))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The payloads of whole batches from the one holding `offset`, back to
    /// back, without the log's batch headers.
    #[pyo3(signature = (offset, max_bytes))]
    fn read_payloads<'py>(
        &self,
        py: Python<'py>,
        offset: u64,
        max_bytes: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.with(py, |partition| {
            let mut out = Vec::new();
            partition.read_payloads_into(offset, max_bytes, &mut out)?;
            Ok(out)
        })?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Cuts the log back so that `offset` (a batch boundary) is the next offset.
    fn truncate_to(&self, py: Python<'_>, offset: u64) -> PyResult<()> {
        self.with(py, |partition| partition.truncate_to(offset))
    }

    /// The base offset of the first batch whose newest record is at or after
    /// `timestamp_ms`, or `None`.
    fn offset_for_time(&self, py: Python<'_>, timestamp_ms: i64) -> PyResult<Option<u64>> {
        self.with(py, |partition| partition.offset_for_time(timestamp_ms))
    }

    /// Forces everything appended to disk.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |partition| partition.flush())
    }

    /// Deletes expired or excess closed segments; returns
    /// `(segments_deleted, bytes_deleted)`.
    fn apply_retention(&self, py: Python<'_>, now_ms: i64) -> PyResult<(usize, u64)> {
        let outcome = self.with(py, |partition| partition.apply_retention(now_ms))?;
        Ok((outcome.segments_deleted, outcome.bytes_deleted))
    }

    /// The segments' base offsets, oldest first.
    fn segment_base_offsets(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        self.with(py, |partition| Ok(partition.segment_base_offsets()))
    }

    #[getter]
    fn log_start_offset(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |partition| Ok(partition.log_start_offset()))
    }

    #[getter]
    fn next_offset(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |partition| Ok(partition.next_offset()))
    }

    #[getter]
    fn size_bytes(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |partition| Ok(partition.size_bytes()))
    }

    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<bool> {
        run_core(py, || Ok::<_, Failure>(self.lock()?.is_none()))
    }

    /// Releases the partition and its lock; a second call does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        run_core(py, || {
            // Dropping the partition closes its files and the lock file.
            drop(self.lock()?.take());
            Ok::<_, Failure>(())
        })
    }
}

/// One batch as `batches` reports it:
/// `(base_offset, kind, record_count, first_timestamp_ms, max_timestamp_ms, payload)`.
type BatchTuple<'py> = (u64, u8, u32, i64, i64, Bound<'py, PyBytes>);

/// The batches in bytes returned by `Partition.read`, checksums checked.
#[pyfunction]
fn batches<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Vec<BatchTuple<'py>>> {
    let views = run_core(py, || {
        sdi_log::batches(data).collect::<Result<Vec<_>, Error>>()
    })?;
    Ok(views
        .iter()
        .map(|view| {
            let header = &view.header;
            (
                header.base_offset,
                header.kind as u8,
                header.record_count,
                header.first_timestamp_ms,
                header.max_timestamp_ms,
                PyBytes::new(py, view.payload),
            )
        })
        .collect())
}

/// One record as `decode` reports it: `(offset, timestamp_ms, key, value)`.
type RecordTuple<'py> = (u64, i64, Bound<'py, PyBytes>, Bound<'py, PyBytes>);

/// The records in bytes returned by `Partition.read`; every batch must hold
/// records written by `append_records` (not an opaque payload).
#[pyfunction]
fn decode<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Vec<RecordTuple<'py>>> {
    let records = run_core(py, || {
        let mut out = Vec::new();
        for view in sdi_log::batches(data) {
            let view = view?;
            if view.header.kind != PayloadKind::Records {
                return Err(Error::InvalidArgument(format!(
                    "the batch at offset {} holds an opaque payload; use batches() for it",
                    view.header.base_offset
                )));
            }
            for (at, record) in (0u64..).zip(view.records()?) {
                out.push((
                    view.header.base_offset + at,
                    view.header.first_timestamp_ms,
                    record.key,
                    record.value,
                ));
            }
        }
        Ok(out)
    })?;
    Ok(records
        .into_iter()
        .map(|(offset, timestamp_ms, key, value)| {
            (
                offset,
                timestamp_ms,
                PyBytes::new(py, key),
                PyBytes::new(py, value),
            )
        })
        .collect())
}

pub fn register(parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = parent.py();
    let module = PyModule::new(py, "log")?;
    module.add_class::<PyPartition>()?;
    module.add_function(wrap_pyfunction!(batches, &module)?)?;
    module.add_function(wrap_pyfunction!(decode, &module)?)?;
    module.add("BATCH_HEADER_BYTES", BATCH_HEADER_BYTES)?;
    module.add("BATCH_BYTES_MAX", BATCH_BYTES_MAX)?;
    module.add("BATCH_RECORDS_MAX", BATCH_RECORDS_MAX)?;
    module.add("SEGMENT_BYTES_DEFAULT", SEGMENT_BYTES_DEFAULT)?;
    module.add("INDEX_INTERVAL_BYTES_DEFAULT", INDEX_INTERVAL_BYTES_DEFAULT)?;
    module.setattr("__name__", "sdi._rust.log")?;
    parent.add_submodule(&module)?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("sdi._rust.log", &module)?;
    Ok(())
}
