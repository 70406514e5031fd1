//! `sdi._rust`: the Python face of sdi's Rust cores.
//!
//! This is the only crate that depends on PyO3. Each core gets one submodule
//! (`sdi._rust.ring`, ...). Every call into a core goes through
//! [`errors::run_core`], which releases the GIL, catches panics and maps the
//! core's error enum onto the exception tree defined in `sdi.errors`.

use pyo3::prelude::*;

mod ec;
mod errors;
mod exchange;
mod geo;
mod log;
mod lsm;
mod marketdata;
mod ring;
mod zset;

/// A function that panics on purpose, so the tests can check that a Rust
/// panic reaches Python as `sdi.errors.InternalError` and not as a crash.
#[pyfunction]
fn _panic_for_test(py: Python<'_>, message: String) -> PyResult<()> {
    errors::run_core(py, move || -> Result<(), errors::Never> {
        panic!("{message}");
    })
}

#[pymodule]
fn _rust(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(_panic_for_test, m)?)?;
    ring::register(m)?;
    exchange::register(m)?;
    marketdata::register(m)?;
    log::register(m)?;
    ec::register(m)?;
    geo::register(m)?;
    zset::register(m)?;
    lsm::register(m)?;
    Ok(())
}
