//! `sdi._rust.ec`: the bindings of the `sdi-ec` core (Reed-Solomon erasure
//! coding).
//!
//! Calls take whole stripes as one contiguous buffer (anything with the
//! buffer protocol: `bytes`, `bytearray`, `memoryview`, numpy arrays) and
//! work on it in place, without copies: `encode_into` writes the parity into
//! a caller's buffer, `reconstruct` rebuilds the missing shards of a
//! `(k + m) * shard_len` buffer where they lie. Stripes of at least
//! [`DETACH_BYTES_MIN`] are coded with the GIL released.
//!
//! The object calls (`encode_object`, `decode_object`, `reconstruct_shards`)
//! take and give `bytes` per shard for `sdi.objstore.ec`, writing straight
//! into new `bytes` objects: each byte of output is written once.

use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{run_core, run_core_attached, to_py_err, CoreError, Kind};
use sdi_ec::{Codec, Error, Kernel};

impl CoreError for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::TooFewShards { .. } => Kind::Corrupt,
            Error::Singular(_) => Kind::Internal,
            _ => Kind::InvalidArgument,
        }
    }
}

/// Stripes at least this large are coded with the GIL released; smaller
/// ones with it held, which is cheaper than releasing it.
const DETACH_BYTES_MIN: usize = 32 * 1024;

fn invalid(py: Python<'_>, message: impl Into<String>) -> PyErr {
    to_py_err(py, Kind::InvalidArgument, message.into())
}

/// Runs `work` with the GIL released when `bytes` is large enough to pay for it.
fn run<T, F>(py: Python<'_>, bytes: usize, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> Result<T, Error> + Send,
{
    if bytes >= DETACH_BYTES_MIN {
        run_core(py, work)
    } else {
        run_core_attached(py, work)
    }
}

/// A C-contiguous buffer exported by a Python object, held for the call.
struct Buffer {
    buffer: PyUntypedBuffer,
}

impl Buffer {
    fn get(
        py: Python<'_>,
        object: &Bound<'_, PyAny>,
        what: &str,
        writable: bool,
    ) -> PyResult<Self> {
        let buffer = PyUntypedBuffer::get(object).map_err(|_| {
            invalid(
                py,
                format!(
                    "{what} must be a bytes-like object (bytes, bytearray, memoryview or a numpy uint8 array), not {}",
                    object
                        .get_type()
                        .name()
                        .map_or_else(|_| "?".to_owned(), |name| name.to_string())
                ),
            )
        })?;
        if !buffer.is_c_contiguous() {
            return Err(invalid(
                py,
                format!("{what} must be C-contiguous; pass numpy.ascontiguousarray(...)"),
            ));
        }
        if writable && buffer.readonly() {
            return Err(invalid(
                py,
                format!("{what} must be writable (a bytearray or a numpy array, not bytes)"),
            ));
        }
        Ok(Buffer { buffer })
    }

    fn len(&self) -> usize {
        self.buffer.len_bytes()
    }

    fn range(&self) -> std::ops::Range<usize> {
        let start = self.buffer.buf_ptr() as usize;
        start..start + self.len()
    }

    fn overlaps(&self, other: &Buffer) -> bool {
        let (a, b) = (self.range(), other.range());
        a.start < b.end && b.start < a.end
    }

    fn as_slice(&self) -> &[u8] {
        if self.len() == 0 {
            return &[];
        }
        // SAFETY: the exporter keeps `len_bytes` contiguous bytes at
        // `buf_ptr` alive and unmoved while the export (`self.buffer`)
        // lives, which outlives the returned borrow; bytearrays cannot be
        // resized while exported. Python code in another thread could still
        // write to a mutable buffer during the call; the bytes read are then
        // unspecified but every access stays in bounds.
        unsafe { std::slice::from_raw_parts(self.buffer.buf_ptr().cast::<u8>(), self.len()) }
    }

    /// The writable bytes. Callers check that no other slice taken in the
    /// same call overlaps them ([`Buffer::overlaps`]).
    #[allow(clippy::mut_from_ref)]
    fn as_mut_slice(&self) -> &mut [u8] {
        if self.len() == 0 {
            return &mut [];
        }
        // SAFETY: as in `as_slice`, and the buffer was checked writable in
        // `get`; within this call it is the only slice over these bytes, as
        // every caller checks the other buffers of the call do not overlap.
        unsafe { std::slice::from_raw_parts_mut(self.buffer.buf_ptr().cast::<u8>(), self.len()) }
    }
}

/// A new `bytes` object of `len` bytes and its content, to be filled
/// before Python sees the object.
fn new_bytes<'py>(py: Python<'py>, len: usize) -> PyResult<(Bound<'py, PyBytes>, &'py mut [u8])> {
    let size = isize::try_from(len)
        .map_err(|_| to_py_err(py, Kind::LimitExceeded, format!("{len} bytes is too large")))?;
    // SAFETY: a NULL source asks CPython for a new, uninitialised bytes
    // object of `size` bytes (or fails with an exception set); the call
    // returns a new reference, which `from_owned_ptr_or_err` takes over.
    let object = unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyBytes_FromStringAndSize(std::ptr::null(), size))
    }?;
    let object = object.cast_into::<PyBytes>()?;
    if len == 0 {
        // The empty bytes object is a shared singleton: never write to it.
        return Ok((object, &mut []));
    }
    // SAFETY: `object` is a new bytes object of `len` bytes that no other
    // code has seen, so its buffer is ours alone to fill; it stays alive
    // and unmoved while the returned `Bound` lives, and the slice is only
    // used while the caller holds that `Bound`, before Python sees it.
    let content = unsafe {
        std::slice::from_raw_parts_mut(ffi::PyBytes_AsString(object.as_ptr()).cast::<u8>(), len)
    };
    Ok((object, content))
}

/// The shards of a `decode_object` or `reconstruct_shards` call, each held
/// as an exported buffer, and the core's view of them.
fn shard_buffers(
    py: Python<'_>,
    shards: &[Option<Bound<'_, PyAny>>],
    total: usize,
) -> PyResult<Vec<Option<Buffer>>> {
    if shards.len() != total {
        return Err(invalid(
            py,
            format!(
                "expected a list of k + m = {total} shards (None where missing), got {}",
                shards.len()
            ),
        ));
    }
    shards
        .iter()
        .enumerate()
        .map(|(index, shard)| {
            shard
                .as_ref()
                .map(|shard| Buffer::get(py, shard, &format!("shard {index}"), false))
                .transpose()
        })
        .collect()
}

fn parse_kernel(py: Python<'_>, name: Option<&str>) -> PyResult<Kernel> {
    match name {
        None => Ok(Kernel::best()),
        Some(name) => Kernel::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = Kernel::ALL.iter().map(|k| k.name()).collect();
            invalid(
                py,
                format!(
                    "unknown kernel {name:?}; the kernels are {}",
                    names.join(", ")
                ),
            )
        }),
    }
}

/// A Reed-Solomon code with `k` data and `m` parity shards (see `sdi.objstore.ec`).
#[pyclass(module = "sdi._rust.ec", name = "Codec", frozen)]
pub struct PyCodec {
    codec: Codec,
}

#[pymethods]
impl PyCodec {
    #[new]
    #[pyo3(signature = (k = 4, m = 2, kernel = None))]
    fn new(py: Python<'_>, k: usize, m: usize, kernel: Option<&str>) -> PyResult<Self> {
        let kernel = parse_kernel(py, kernel)?;
        let codec = run_core_attached(py, || Codec::with_kernel(k, m, kernel))?;
        Ok(PyCodec { codec })
    }

    #[getter]
    fn k(&self) -> usize {
        self.codec.data_shards()
    }

    #[getter]
    fn m(&self) -> usize {
        self.codec.parity_shards()
    }

    #[getter]
    fn kernel(&self) -> &'static str {
        self.codec.kernel().name()
    }

    /// The `(k + m) x k` generator matrix, identity rows first.
    fn generator<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<u8>>> {
        let k = self.codec.data_shards();
        let rows = self.codec.total_shards();
        PyArray1::from_slice(py, self.codec.generator()).reshape([rows, k])
    }

    /// Computes the parity of `data` (`k * shard_len` bytes, the data
    /// shards back to back) into a new `(m, shard_len)` uint8 array.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<u8>>> {
        let data = Buffer::get(py, data, "data", false)?;
        let (k, m) = (self.codec.data_shards(), self.codec.parity_shards());
        if data.len() % k != 0 {
            return Err(invalid(
                py,
                format!(
                    "data is {} bytes; it must hold k={k} shards of equal length (a multiple of {k} bytes)",
                    data.len()
                ),
            ));
        }
        let shard_len = data.len() / k;
        let parity = PyArray2::<u8>::zeros(py, [m, shard_len], false);
        {
            let mut out = parity
                .try_readwrite()
                .map_err(|e| invalid(py, e.to_string()))?;
            let out = out.as_slice_mut().map_err(|e| invalid(py, e.to_string()))?;
            let input = data.as_slice();
            run(py, data.len(), || self.codec.encode_stripe(input, out))?;
        }
        Ok(parity)
    }

    /// Computes the parity of `data` into `parity` (writable, `m * shard_len`
    /// bytes); returns `shard_len`.
    fn encode_into(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        parity: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let data = Buffer::get(py, data, "data", false)?;
        let parity = Buffer::get(py, parity, "parity", true)?;
        if data.overlaps(&parity) {
            return Err(invalid(py, "data and parity must not overlap"));
        }
        let input = data.as_slice();
        let output = parity.as_mut_slice();
        run(py, data.len(), || self.codec.encode_stripe(input, output))
    }

    /// Rebuilds in place the shards of `stripe` (writable, the `k + m`
    /// shards back to back) whose `present` flag is false; with
    /// `data_only`, only the data shards. Returns `shard_len`.
    #[pyo3(signature = (stripe, present, data_only = false))]
    fn reconstruct(
        &self,
        py: Python<'_>,
        stripe: &Bound<'_, PyAny>,
        present: Vec<bool>,
        data_only: bool,
    ) -> PyResult<usize> {
        let stripe = Buffer::get(py, stripe, "stripe", true)?;
        let shards = stripe.as_mut_slice();
        run(py, stripe.len(), || {
            self.codec.reconstruct_stripe(shards, &present, data_only)
        })
    }

    /// Whether the parity shards of `stripe` (the `k + m` shards back to
    /// back) match its data shards.
    fn verify(&self, py: Python<'_>, stripe: &Bound<'_, PyAny>) -> PyResult<bool> {
        let stripe = Buffer::get(py, stripe, "stripe", false)?;
        let n = self.codec.total_shards();
        let bytes = stripe.as_slice();
        if bytes.len() % n != 0 {
            return Err(invalid(
                py,
                format!(
                    "stripe is {} bytes; it must hold k + m = {n} shards of equal length",
                    bytes.len()
                ),
            ));
        }
        let shard_len = bytes.len() / n;
        run(py, bytes.len(), || {
            if shard_len == 0 {
                return Ok(true);
            }
            let shards: Vec<&[u8]> = bytes.chunks_exact(shard_len).collect();
            self.codec.verify(&shards)
        })
    }

    /// Splits `data` into `k` data shards of `ceil(len / k)` bytes (the last
    /// ones zero-padded) and computes the `m` parity shards: `k + m` bytes.
    fn encode_object<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let data = Buffer::get(py, data, "data", false)?;
        let (k, n) = (self.codec.data_shards(), self.codec.total_shards());
        let input = data.as_slice();
        let shard_len = input.len().div_ceil(k);
        let mut objects = Vec::with_capacity(n);
        let mut contents = Vec::with_capacity(n);
        for _ in 0..n {
            let (object, content) = new_bytes(py, shard_len)?;
            objects.push(object);
            contents.push(content);
        }
        run(py, input.len(), || {
            let (data_shards, parity_shards) = contents.split_at_mut(k);
            for (index, shard) in data_shards.iter_mut().enumerate() {
                let start = (index * shard_len).min(input.len());
                let end = (start + shard_len).min(input.len());
                shard[..end - start].copy_from_slice(&input[start..end]);
                shard[end - start..].fill(0);
            }
            let sources: Vec<&[u8]> = data_shards.iter().map(|shard| &**shard).collect();
            self.codec.encode(&sources, parity_shards)
        })?;
        Ok(objects)
    }

    /// The first `size` bytes of the data of `shards` (all `k + m`, data
    /// first, `None` where missing): present data shards are copied, missing
    /// ones rebuilt straight into the result.
    fn decode_object<'py>(
        &self,
        py: Python<'py>,
        shards: Vec<Option<Bound<'py, PyAny>>>,
        size: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (k, n) = (self.codec.data_shards(), self.codec.total_shards());
        let buffers = shard_buffers(py, &shards, n)?;
        let sources: Vec<Option<&[u8]>> = buffers
            .iter()
            .map(|buffer| buffer.as_ref().map(Buffer::as_slice))
            .collect();
        let shard_len = run_core_attached(py, || self.codec.check_sources(&sources))?;
        if size > k * shard_len {
            return Err(invalid(
                py,
                format!("size {size} does not fit in {k} data shards of {shard_len} bytes"),
            ));
        }
        let (object, out) = new_bytes(py, size)?;
        if size == 0 {
            return Ok(object);
        }
        run(py, size, move || {
            let mut targets: Vec<(usize, &mut [u8])> = Vec::new();
            let mut partial: Option<&mut [u8]> = None;
            let mut scratch = Vec::new();
            for (index, chunk) in out.chunks_mut(shard_len).enumerate() {
                match sources[index] {
                    Some(shard) => chunk.copy_from_slice(&shard[..chunk.len()]),
                    None if chunk.len() == shard_len => targets.push((index, chunk)),
                    None => {
                        scratch = vec![0u8; shard_len];
                        partial = Some(chunk);
                    }
                }
            }
            if let Some(chunk) = &partial {
                let index = size / shard_len;
                debug_assert_eq!(chunk.len(), size % shard_len);
                targets.push((index, &mut scratch[..]));
            }
            self.codec.reconstruct_into(&sources, &mut targets)?;
            drop(targets);
            if let Some(chunk) = partial {
                let len = chunk.len();
                chunk.copy_from_slice(&scratch[..len]);
            }
            Ok(())
        })?;
        Ok(object)
    }

    /// All `k + m` shards as bytes, the missing (`None`) ones rebuilt;
    /// present `bytes` objects are returned as they are.
    fn reconstruct_shards<'py>(
        &self,
        py: Python<'py>,
        shards: Vec<Option<Bound<'py, PyAny>>>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let n = self.codec.total_shards();
        let buffers = shard_buffers(py, &shards, n)?;
        let sources: Vec<Option<&[u8]>> = buffers
            .iter()
            .map(|buffer| buffer.as_ref().map(Buffer::as_slice))
            .collect();
        let shard_len = run_core_attached(py, || self.codec.check_sources(&sources))?;
        let mut objects = Vec::with_capacity(n);
        let mut targets: Vec<(usize, &mut [u8])> = Vec::new();
        for (index, shard) in shards.iter().enumerate() {
            match (shard, sources[index]) {
                (Some(shard), Some(content)) => objects.push(match shard.cast::<PyBytes>() {
                    Ok(bytes) => bytes.clone(),
                    Err(_) => PyBytes::new(py, content),
                }),
                _ => {
                    let (object, content) = new_bytes(py, shard_len)?;
                    objects.push(object);
                    targets.push((index, content));
                }
            }
        }
        run(py, shard_len * n, || {
            self.codec.reconstruct_into(&sources, &mut targets)
        })?;
        Ok(objects)
    }

    fn __repr__(&self) -> String {
        format!(
            "Codec(k={}, m={}, kernel={:?})",
            self.codec.data_shards(),
            self.codec.parity_shards(),
            self.codec.kernel().name()
        )
    }
}

/// CRC-32C of `data`.
#[pyfunction]
fn checksum(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u32> {
    let data = Buffer::get(py, data, "data", false)?;
    let bytes = data.as_slice();
    run(py, bytes.len(), || Ok(sdi_ec::checksum(bytes)))
}

/// CRC-32C of each of the `shards` equal parts of `stripe`, as a uint32 array.
#[pyfunction]
fn checksums<'py>(
    py: Python<'py>,
    stripe: &Bound<'py, PyAny>,
    shards: usize,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let stripe = Buffer::get(py, stripe, "stripe", false)?;
    let bytes = stripe.as_slice();
    if shards == 0 || bytes.len() % shards != 0 {
        return Err(invalid(
            py,
            format!(
                "stripe is {} bytes; it cannot be split into {shards} shards of equal length",
                bytes.len()
            ),
        ));
    }
    let shard_len = bytes.len() / shards;
    let sums = run(py, bytes.len(), || {
        Ok(if shard_len == 0 {
            vec![sdi_ec::checksum(&[]); shards]
        } else {
            bytes
                .chunks_exact(shard_len)
                .map(sdi_ec::checksum)
                .collect()
        })
    })?;
    Ok(PyArray1::from_vec(py, sums))
}

/// The kernel new codecs use on this CPU.
#[pyfunction]
fn kernel() -> &'static str {
    Kernel::best().name()
}

/// Every kernel this CPU supports, fastest first.
#[pyfunction]
fn kernels() -> Vec<&'static str> {
    Kernel::supported().into_iter().map(Kernel::name).collect()
}

pub fn register(parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = parent.py();
    let module = PyModule::new(py, "ec")?;
    module.add_class::<PyCodec>()?;
    module.add_function(wrap_pyfunction!(checksum, &module)?)?;
    module.add_function(wrap_pyfunction!(checksums, &module)?)?;
    module.add_function(wrap_pyfunction!(kernel, &module)?)?;
    module.add_function(wrap_pyfunction!(kernels, &module)?)?;
    module.add("SHARDS_MAX", sdi_ec::SHARDS_MAX)?;
    module.setattr("__name__", "sdi._rust.ec")?;
    parent.add_submodule(&module)?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("sdi._rust.ec", &module)?;
    Ok(())
}
