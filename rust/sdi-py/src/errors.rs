//! The one mapping from Rust errors to the Python exception tree.
//!
//! The exception classes live in Python (`sdi.errors`), so that the tree is
//! defined once and documented where users read it. Rust looks each class up
//! by name the first time it is needed and caches it.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The kinds of failure a core can report; each names one class in `sdi.errors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Kind {
    InvalidArgument,
    LimitExceeded,
    Corrupt,
    Closed,
    Timeout,
    PeerGone,
    Io,
    Internal,
}

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::InvalidArgument => "InvalidArgument",
            Kind::LimitExceeded => "LimitExceeded",
            Kind::Corrupt => "Corrupt",
            Kind::Closed => "Closed",
            Kind::Timeout => "Timeout",
            Kind::PeerGone => "PeerGone",
            Kind::Io => "StorageError",
            Kind::Internal => "InternalError",
        }
    }
}

/// Every core error enum implements this, once, here in the bindings crate.
pub trait CoreError: std::fmt::Display {
    fn kind(&self) -> Kind;
}

/// An error type with no values, for closures that can only fail by panicking.
#[derive(Debug)]
pub enum Never {}

impl std::fmt::Display for Never {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl CoreError for Never {
    fn kind(&self) -> Kind {
        match *self {}
    }
}

static CLASSES: [PyOnceLock<Py<PyType>>; 8] = [
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
];

fn class(py: Python<'_>, kind: Kind) -> PyResult<&Bound<'_, PyType>> {
    let cell = &CLASSES[kind as usize];
    let class = cell.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        let module = py.import("sdi.errors")?;
        let class = module.getattr(kind.class_name())?;
        Ok(class.cast_into::<PyType>()?.unbind())
    })?;
    Ok(class.bind(py))
}

/// Builds the Python exception for `kind` with `message`.
pub fn to_py_err(py: Python<'_>, kind: Kind, message: String) -> PyErr {
    match class(py, kind) {
        Ok(class) => PyErr::from_type(class.clone(), message),
        Err(lookup_failed) => lookup_failed,
    }
}

/// Maps a core error to its Python exception.
pub fn core_err<E: CoreError>(py: Python<'_>, error: E) -> PyErr {
    to_py_err(py, error.kind(), error.to_string())
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}

/// Runs a core call with the GIL released, turning a panic into
/// `sdi.errors.InternalError` and a core error into its exception.
///
/// Every binding that calls into a core goes through here, so that no call
/// holds the GIL while it works and no panic crosses into Python.
pub fn run_core<T, E, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    E: CoreError + Send,
    F: FnOnce() -> Result<T, E> + Send,
{
    let outcome = py.detach(|| catch_unwind(AssertUnwindSafe(work)));
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(core_err(py, error)),
        Err(payload) => Err(to_py_err(
            py,
            Kind::Internal,
            format!(
                "sdi hit an internal error (a Rust panic: {}); this is a bug, please report it with the call that caused it",
                panic_message(payload.as_ref())
            ),
        )),
    }
}

/// Like [`run_core`] but keeps the GIL: for calls too short to be worth
/// releasing it, or that touch Python objects. Panics are still caught.
#[allow(dead_code)]
pub fn run_core_attached<T, E, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    E: CoreError,
    F: FnOnce() -> Result<T, E>,
{
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(core_err(py, error)),
        Err(payload) => Err(to_py_err(
            py,
            Kind::Internal,
            format!(
                "sdi hit an internal error (a Rust panic: {}); this is a bug, please report it with the call that caused it",
                panic_message(payload.as_ref())
            ),
        )),
    }
}
