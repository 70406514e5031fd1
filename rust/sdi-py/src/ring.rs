//! `sdi._rust.ring`: the bindings of the `sdi-ring` core.
//!
//! Each class holds its core handle in a mutex, so that a handle used from
//! two threads at once is refused with a clear error rather than raced, and
//! an `Option`, so that `close` can drop it. Every call that copies a batch
//! or waits goes through [`run_core`] (GIL released, panics caught);
//! blocking calls wait in slices and check for signals between slices, so
//! Ctrl-C interrupts a wait without a timeout.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::errors::{core_err, run_core, run_core_attached, CoreError, Kind};
use sdi_ring::{Error, Readiness, Role, WaitStrategy};

impl CoreError for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::InvalidArgument(_) | Error::BadCapacity { .. } => Kind::InvalidArgument,
            Error::RecordTooLarge { .. }
            | Error::BatchTooLarge { .. }
            | Error::RoleTaken { .. } => Kind::LimitExceeded,
            Error::Corrupt(_) => Kind::Corrupt,
            Error::Closed(_) | Error::PeerClosed(_) => Kind::Closed,
            Error::Timeout { .. } => Kind::Timeout,
            Error::PeerGone { .. } => Kind::PeerGone,
            Error::Io { .. } => Kind::Io,
        }
    }
}

/// How long a blocking call keeps the GIL released before it checks for
/// signals (Ctrl-C) and goes back to waiting.
const SIGNAL_CHECK_INTERVAL_MILLIS: u64 = 50;

/// Single records at least this large are copied with the GIL released;
/// smaller ones are copied with it held, which is cheaper than releasing it.
const DETACH_RECORD_BYTES_MIN: usize = 64 * 1024;

fn invalid(py: Python<'_>, message: impl Into<String>) -> PyErr {
    core_err(py, Error::InvalidArgument(message.into()))
}

/// A parsed `timeout` argument: `Some(None)` waits forever, `None` does not wait.
fn parse_timeout(py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Option<Instant>>> {
    match timeout {
        None => Ok(Some(None)),
        Some(0.0) => Ok(None),
        Some(seconds) if seconds.is_finite() && seconds > 0.0 => {
            let wait = Duration::try_from_secs_f64(seconds)
                .map_err(|_| invalid(py, format!("timeout {seconds} s is too large")))?;
            Ok(Some(Instant::now().checked_add(wait)))
        }
        Some(seconds) => Err(invalid(
            py,
            format!("timeout must be None (wait forever), 0 (do not wait) or a positive number of seconds, got {seconds}"),
        )),
    }
}

fn parse_wait(py: Python<'_>, wait: &str) -> PyResult<WaitStrategy> {
    WaitStrategy::from_name(wait).map_err(|error| core_err(py, error))
}

/// Runs `step` until it returns a value, each time with a deadline at most
/// one signal-check interval away; raises `Timeout` once `deadline` passes.
fn wait_in_slices<T>(
    py: Python<'_>,
    deadline: Option<Instant>,
    what: &'static str,
    mut step: impl FnMut(Instant) -> PyResult<Option<T>>,
) -> PyResult<T> {
    let started = Instant::now();
    loop {
        let slice_end = Instant::now() + Duration::from_millis(SIGNAL_CHECK_INTERVAL_MILLIS);
        let slice_deadline = deadline.map_or(slice_end, |deadline| deadline.min(slice_end));
        if let Some(value) = step(slice_deadline)? {
            return Ok(value);
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Err(core_err(
                py,
                Error::Timeout {
                    what,
                    waited_millis: started.elapsed().as_millis(),
                },
            ));
        }
        py.check_signals()?;
    }
}

fn lock<'a, T>(
    py: Python<'_>,
    cell: &'a Mutex<Option<T>>,
    role: Role,
) -> PyResult<MutexGuard<'a, Option<T>>> {
    let guard = match cell.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => {
            return Err(invalid(
                py,
                format!(
                "this {role} is in use by another thread; a ring has one {role} thread at a time"
            ),
            ))
        }
    };
    if guard.is_none() {
        return Err(core_err(py, Error::Closed(role)));
    }
    Ok(guard)
}

/// The records of a `push_many` call, borrowed for the copy.
enum Records<'py> {
    List(Vec<Bound<'py, PyBytes>>),
    Rows(PyReadonlyArray2<'py, u8>),
}

fn extract_records<'py>(records: &Bound<'py, PyAny>) -> PyResult<Records<'py>> {
    let py = records.py();
    if let Ok(array) = records.cast::<PyArray2<u8>>() {
        if !array.is_c_contiguous() {
            return Err(invalid(
                py,
                "a 2-D record array must be C-contiguous; pass numpy.ascontiguousarray(records)",
            ));
        }
        return Ok(Records::Rows(array.readonly()));
    }
    if let Ok(list) = records.cast::<PyList>() {
        let mut items = Vec::with_capacity(list.len());
        for (index, item) in list.iter().enumerate() {
            match item.cast_into::<PyBytes>() {
                Ok(bytes) => items.push(bytes),
                Err(error) => {
                    return Err(invalid(
                        py,
                        format!(
                            "records[{index}] is a {}, not bytes; push_many takes a list of bytes or a 2-D uint8 array",
                            error.into_inner().get_type().name()?
                        ),
                    ))
                }
            }
        }
        return Ok(Records::List(items));
    }
    Err(invalid(
        py,
        format!(
            "push_many takes a list of bytes or a C-contiguous 2-D numpy uint8 array, got {}",
            records.get_type().name()?
        ),
    ))
}

/// The producing end of a ring (see `sdi.ring.Producer`).
#[pyclass(module = "sdi._rust.ring", frozen)]
pub struct Producer {
    inner: Mutex<Option<sdi_ring::Producer>>,
}

impl Producer {
    fn wrap(producer: sdi_ring::Producer) -> Producer {
        Producer {
            inner: Mutex::new(Some(producer)),
        }
    }

    fn with<T>(
        &self,
        py: Python<'_>,
        work: impl FnOnce(&mut sdi_ring::Producer) -> PyResult<T>,
    ) -> PyResult<T> {
        let mut guard = lock(py, &self.inner, Role::Producer)?;
        work(guard.as_mut().expect("lock checked the handle is open"))
    }
}

#[pymethods]
impl Producer {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Producer> {
        run_core(py, move || sdi_ring::Producer::attach(&path)).map(Producer::wrap)
    }

    #[pyo3(signature = (record, timeout = 0.0, wait = "spin_then_yield"))]
    fn push(
        &self,
        py: Python<'_>,
        record: &[u8],
        timeout: Option<f64>,
        wait: &str,
    ) -> PyResult<bool> {
        let deadline = parse_timeout(py, timeout)?;
        let strategy = parse_wait(py, wait)?;
        self.with(py, |producer| {
            let attempt = |producer: &mut sdi_ring::Producer| {
                if record.len() >= DETACH_RECORD_BYTES_MIN {
                    run_core(py, || producer.try_push(record))
                } else {
                    run_core_attached(py, || producer.try_push(record))
                }
            };
            let Some(deadline) = deadline else {
                return attempt(producer);
            };
            if attempt(producer)? {
                return Ok(true);
            }
            wait_in_slices(py, deadline, "room in the ring", |slice| {
                let readiness = run_core(py, || {
                    producer.wait_for_space(record.len(), Some(slice), strategy)
                })?;
                if readiness == Readiness::Ready && attempt(producer)? {
                    return Ok(Some(true));
                }
                Ok(None)
            })
        })
    }

    #[pyo3(signature = (records, timeout = 0.0, wait = "spin_then_yield"))]
    fn push_many(
        &self,
        py: Python<'_>,
        records: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        wait: &str,
    ) -> PyResult<usize> {
        let deadline = parse_timeout(py, timeout)?;
        let strategy = parse_wait(py, wait)?;
        let records = extract_records(records)?;
        self.with(py, |producer| match &records {
            Records::List(items) => {
                let slices: Vec<&[u8]> = items.iter().map(|item| item.as_bytes()).collect();
                match deadline {
                    None => run_core(py, || producer.try_push_many(&slices)),
                    Some(deadline) => wait_in_slices(py, deadline, "room in the ring", |slice| {
                        run_core(py, || producer.push_many_wait(&slices, Some(slice), strategy))
                    }),
                }
            }
            Records::Rows(array) => {
                let row_bytes = array.shape()[1];
                let rows = array
                    .as_slice()
                    .map_err(|error| invalid(py, format!("records: {error}")))?;
                if rows.is_empty() {
                    return Ok(0);
                }
                if row_bytes == 0 {
                    return Err(invalid(py, "a 2-D record array needs at least one column (records of 0 bytes cannot be told apart from no rows)"));
                }
                match deadline {
                    None => run_core(py, || producer.try_push_rows(rows, row_bytes)),
                    Some(deadline) => wait_in_slices(py, deadline, "room in the ring", |slice| {
                        run_core(py, || {
                            producer.push_rows_wait(rows, row_bytes, Some(slice), strategy)
                        })
                    }),
                }
            }
        })
    }

    fn close(&self) {
        let mut guard = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(mut producer) = guard.take() {
            producer.close();
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        match self.inner.try_lock() {
            Ok(guard) => guard.is_none(),
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().is_none(),
            Err(TryLockError::WouldBlock) => false,
        }
    }

    #[getter]
    fn capacity_bytes(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |producer| Ok(producer.capacity_bytes()))
    }

    #[getter]
    fn record_bytes_max(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |producer| Ok(producer.record_bytes_max()))
    }

    fn free_bytes(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |producer| {
            run_core_attached(py, || producer.free_bytes())
        })
    }

    fn used_bytes(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |producer| {
            run_core_attached(py, || producer.used_bytes())
        })
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |producer| {
            run_core_attached(py, || producer.len_records()).map(|len| len as usize)
        })
    }

    fn consumer_state(&self, py: Python<'_>) -> PyResult<&'static str> {
        self.with(py, |producer| {
            run_core(py, || Ok::<_, Error>(producer.consumer_state().name()))
        })
    }
}

/// The consuming end of a ring (see `sdi.ring.Consumer`).
#[pyclass(module = "sdi._rust.ring", frozen)]
pub struct Consumer {
    inner: Mutex<Option<sdi_ring::Consumer>>,
}

impl Consumer {
    fn wrap(consumer: sdi_ring::Consumer) -> Consumer {
        Consumer {
            inner: Mutex::new(Some(consumer)),
        }
    }

    fn with<T>(
        &self,
        py: Python<'_>,
        work: impl FnOnce(&mut sdi_ring::Consumer) -> PyResult<T>,
    ) -> PyResult<T> {
        let mut guard = lock(py, &self.inner, Role::Consumer)?;
        work(guard.as_mut().expect("lock checked the handle is open"))
    }

    /// Runs `pop` (a non-blocking pop returning a count) without waiting,
    /// or waits in slices until it pops at least one record or the ring is
    /// finished (then returns 0).
    fn pop_counted(
        py: Python<'_>,
        consumer: &mut sdi_ring::Consumer,
        deadline: Option<Option<Instant>>,
        strategy: WaitStrategy,
        mut pop: impl FnMut(&mut sdi_ring::Consumer) -> Result<usize, Error> + Send,
    ) -> PyResult<usize> {
        let Some(deadline) = deadline else {
            return run_core(py, || pop(consumer));
        };
        wait_in_slices(py, deadline, "a record", |slice| {
            run_core(py, || -> Result<Option<usize>, Error> {
                match consumer.wait_for_records(Some(slice), strategy)? {
                    Readiness::Ready => {
                        let popped = pop(consumer)?;
                        // Zero after Ready means only a padding record was
                        // consumed: wait again.
                        Ok((popped > 0).then_some(popped))
                    }
                    Readiness::Finished => Ok(Some(0)),
                    Readiness::TimedOut => Ok(None),
                }
            })
        })
    }
}

#[pymethods]
impl Consumer {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Consumer> {
        run_core(py, move || sdi_ring::Consumer::attach(&path)).map(Consumer::wrap)
    }

    #[pyo3(signature = (max_records, timeout = 0.0, wait = "spin_then_yield"))]
    fn pop<'py>(
        &self,
        py: Python<'py>,
        max_records: usize,
        timeout: Option<f64>,
        wait: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let deadline = parse_timeout(py, timeout)?;
        let strategy = parse_wait(py, wait)?;
        self.with(py, |consumer| {
            let take = |consumer: &mut sdi_ring::Consumer| -> PyResult<Bound<'py, PyList>> {
                let list = PyList::empty(py);
                let mut failure = None;
                run_core_attached(py, || {
                    consumer.pop_with(max_records, |payload| {
                        match list.append(PyBytes::new(py, payload)) {
                            Ok(()) => sdi_ring::Visit::Take,
                            Err(error) => {
                                failure = Some(error);
                                sdi_ring::Visit::Stop
                            }
                        }
                    })
                })?;
                match failure {
                    Some(error) => Err(error),
                    None => Ok(list),
                }
            };
            let Some(deadline) = deadline else {
                return take(consumer);
            };
            if max_records == 0 {
                return Ok(PyList::empty(py));
            }
            wait_in_slices(py, deadline, "a record", |slice| {
                match run_core(py, || consumer.wait_for_records(Some(slice), strategy))? {
                    Readiness::Ready => {
                        let list = take(consumer)?;
                        Ok((!list.is_empty()).then_some(list))
                    }
                    Readiness::Finished => Ok(Some(PyList::empty(py))),
                    Readiness::TimedOut => Ok(None),
                }
            })
        })
    }

    #[pyo3(signature = (buffer, offsets, timeout = 0.0, wait = "spin_then_yield"))]
    fn pop_into(
        &self,
        py: Python<'_>,
        buffer: &Bound<'_, PyAny>,
        offsets: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        wait: &str,
    ) -> PyResult<usize> {
        let deadline = parse_timeout(py, timeout)?;
        let strategy = parse_wait(py, wait)?;
        let buffer = buffer
            .cast::<PyArray1<u8>>()
            .map_err(|_| invalid(py, "buffer must be a 1-D numpy uint8 array"))?;
        let offsets = offsets
            .cast::<PyArray1<i64>>()
            .map_err(|_| invalid(py, "offsets must be a 1-D numpy int64 array"))?;
        let mut buffer = buffer
            .try_readwrite()
            .map_err(|error| invalid(py, format!("buffer: {error}")))?;
        let mut offsets = offsets
            .try_readwrite()
            .map_err(|error| invalid(py, format!("offsets: {error}")))?;
        let buffer = buffer
            .as_slice_mut()
            .map_err(|error| invalid(py, format!("buffer: {error}")))?;
        let offsets = offsets
            .as_slice_mut()
            .map_err(|error| invalid(py, format!("offsets: {error}")))?;
        if offsets.len() < 2 {
            return Err(invalid(
                py,
                "offsets needs max_records + 1 elements, at least 2",
            ));
        }
        self.with(py, |consumer| {
            Consumer::pop_counted(py, consumer, deadline, strategy, |consumer| {
                consumer.try_pop_into(buffer, offsets)
            })
        })
    }

    #[pyo3(signature = (rows, timeout = 0.0, wait = "spin_then_yield"))]
    fn pop_rows_into(
        &self,
        py: Python<'_>,
        rows: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        wait: &str,
    ) -> PyResult<usize> {
        let deadline = parse_timeout(py, timeout)?;
        let strategy = parse_wait(py, wait)?;
        let rows = rows
            .cast::<PyArray2<u8>>()
            .map_err(|_| invalid(py, "rows must be a 2-D numpy uint8 array"))?;
        if !rows.is_c_contiguous() {
            return Err(invalid(py, "rows must be C-contiguous"));
        }
        let row_bytes = rows.shape()[1];
        let mut rows = rows
            .try_readwrite()
            .map_err(|error| invalid(py, format!("rows: {error}")))?;
        let rows = rows
            .as_slice_mut()
            .map_err(|error| invalid(py, format!("rows: {error}")))?;
        if rows.is_empty() {
            return Ok(0);
        }
        self.with(py, |consumer| {
            Consumer::pop_counted(py, consumer, deadline, strategy, |consumer| {
                consumer.try_pop_rows(rows, row_bytes)
            })
        })
    }

    fn is_finished(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |consumer| {
            run_core_attached(py, || consumer.is_finished())
        })
    }

    fn close(&self) {
        let mut guard = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(mut consumer) = guard.take() {
            consumer.close();
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        match self.inner.try_lock() {
            Ok(guard) => guard.is_none(),
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().is_none(),
            Err(TryLockError::WouldBlock) => false,
        }
    }

    #[getter]
    fn capacity_bytes(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |consumer| Ok(consumer.capacity_bytes()))
    }

    #[getter]
    fn record_bytes_max(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |consumer| Ok(consumer.record_bytes_max()))
    }

    fn used_bytes(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |consumer| {
            run_core_attached(py, || consumer.used_bytes())
        })
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |consumer| {
            run_core_attached(py, || consumer.len_records()).map(|len| len as usize)
        })
    }

    fn producer_state(&self, py: Python<'_>) -> PyResult<&'static str> {
        self.with(py, |consumer| {
            run_core(py, || Ok::<_, Error>(consumer.producer_state().name()))
        })
    }
}

/// Creates a ring file; see `sdi.ring.create`.
#[pyfunction]
#[pyo3(signature = (path, capacity_bytes, overwrite = false))]
fn create(py: Python<'_>, path: PathBuf, capacity_bytes: u64, overwrite: bool) -> PyResult<()> {
    run_core(py, move || {
        sdi_ring::create(&path, capacity_bytes, overwrite)
    })
}

/// A producer and a consumer over one anonymous mapping; see `sdi.ring.pair`.
#[pyfunction]
fn pair(py: Python<'_>, capacity_bytes: u64) -> PyResult<(Producer, Consumer)> {
    let (producer, consumer) = run_core(py, move || sdi_ring::pair(capacity_bytes))?;
    Ok((Producer::wrap(producer), Consumer::wrap(consumer)))
}

/// (capacity_bytes, used_bytes, len_records, producer state, consumer state).
#[pyfunction]
fn inspect(py: Python<'_>, path: PathBuf) -> PyResult<(u64, u64, u64, &'static str, &'static str)> {
    let info = run_core(py, move || sdi_ring::inspect(&path))?;
    Ok((
        info.capacity_bytes,
        info.used_bytes,
        info.len_records,
        info.producer.name(),
        info.consumer.name(),
    ))
}

/// Builds `sdi._rust.ring`, adds it to `parent` and to `sys.modules`, so
/// that `import sdi._rust.ring` works like for a package.
pub fn register(parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = parent.py();
    let module = PyModule::new(py, "ring")?;
    module.add_class::<Producer>()?;
    module.add_class::<Consumer>()?;
    module.add_function(wrap_pyfunction!(create, &module)?)?;
    module.add_function(wrap_pyfunction!(pair, &module)?)?;
    module.add_function(wrap_pyfunction!(inspect, &module)?)?;
    use sdi_ring::constants as limits;
    module.add("CAPACITY_BYTES_MIN", limits::CAPACITY_BYTES_MIN)?;
    module.add("CAPACITY_BYTES_MAX", limits::CAPACITY_BYTES_MAX)?;
    module.add("RECORD_BYTES_MAX", limits::RECORD_BYTES_MAX)?;
    module.add("BATCH_RECORDS_MAX", limits::BATCH_RECORDS_MAX)?;
    module.add("HEADER_BYTES", limits::HEADER_BYTES)?;
    module.add("RECORD_HEADER_BYTES", limits::RECORD_HEADER_BYTES)?;
    module.add("RECORD_ALIGN_BYTES", limits::RECORD_ALIGN_BYTES)?;
    module.setattr("__name__", "sdi._rust.ring")?;
    parent.add_submodule(&module)?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("sdi._rust.ring", &module)?;
    Ok(())
}
