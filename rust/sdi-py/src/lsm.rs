//! `sdi._rust.lsm`: the bindings of the `sdi-lsm` core (the email service's
//! inverted index).
//!
//! One class, `LsmIndex`, over one open index directory. Users are `u32`,
//! mail ids `u64` (increasing with arrival), folders `u32`; the email
//! service maps its addresses and folder names to them
//! (`sdi.email.lsmindex`). Writes take Python values apart with the GIL
//! held, then call the core with it released; `write_batch` takes a whole
//! list of ops in one call (one log write and one sync). Searches parse the
//! query language of the core and run with the GIL released.
//!
//! The index sits behind a `RwLock<Option<Index>>` that is only ever locked
//! with the GIL released (inside [`run_core`]), so a thread waiting for it
//! never holds the GIL its holder needs. Every call takes the read lock
//! (the core's methods take `&self` and synchronize themselves, so
//! searches and writes run side by side); `close` takes the write lock,
//! which waits for the calls in progress, and takes the index out.

use std::path::PathBuf;
use std::sync::{RwLock, RwLockReadGuard};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::errors::{run_core, to_py_err, CoreError, Kind};
use sdi_lsm::constants::{BATCH_OPS_MAX, SEARCH_RESULTS_MAX};
use sdi_lsm::{
    parse_query, Attrs, Doc, Error, Field, Filter, Index, Op, Options, SyncPolicy, FLAG_READ,
    FLAG_STARRED,
};

impl CoreError for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::Config(_)
            | Error::InvalidArgument(_)
            | Error::DuplicateDoc { .. }
            | Error::QuerySyntax { .. } => Kind::InvalidArgument,
            Error::QueryTooBroad(_) => Kind::LimitExceeded,
            Error::Corrupt { .. } => Kind::Corrupt,
            Error::Poisoned { .. } | Error::Io { .. } => Kind::Io,
        }
    }
}

/// What a call on an `LsmIndex` can fail with: the core's errors, plus the
/// handle's own states.
#[derive(Debug)]
enum Failure {
    Lsm(Error),
    /// `close()` was called on this handle.
    Closed,
    /// An earlier call panicked while it held the handle's lock.
    Broken,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Lsm(error)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Lsm(error) => error.fmt(f),
            Failure::Closed => f.write_str(
                "the index was closed; open a new LsmIndex on its directory to use it again",
            ),
            Failure::Broken => f.write_str(
                "an earlier call on this index handle failed inside sdi (a bug); \
                 drop it and open the directory again",
            ),
        }
    }
}

impl CoreError for Failure {
    fn kind(&self) -> Kind {
        match self {
            Failure::Lsm(error) => error.kind(),
            Failure::Closed => Kind::Closed,
            Failure::Broken => Kind::Internal,
        }
    }
}

fn invalid(py: Python<'_>, message: String) -> PyErr {
    to_py_err(py, Kind::InvalidArgument, message)
}

/// A doc's fields from a mapping `{name: text}` or a sequence of
/// `(name, text)` pairs (a name may repeat: several recipients).
fn extract_fields(value: &Bound<'_, PyAny>) -> PyResult<Vec<(Field, String)>> {
    let py = value.py();
    let pairs: Vec<(String, String)> = if let Ok(dict) = value.cast::<PyDict>() {
        dict.iter()
            .map(|(k, v)| Ok((k.extract()?, v.extract()?)))
            .collect::<PyResult<_>>()?
    } else if value.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "fields must be a dict {name: text} or a list of (name, text) pairs, not a str",
        ));
    } else {
        value.extract()?
    };
    pairs
        .into_iter()
        .map(|(name, text)| {
            let field = Field::from_name(&name).ok_or_else(|| {
                invalid(
                    py,
                    format!(
                        "unknown field {name:?}; use from, to, cc, subject, body, attachment or \
                         filename"
                    ),
                )
            })?;
            Ok((field, text))
        })
        .collect()
}

fn attrs(date: i64, folder: u32, flags: u32) -> Attrs {
    Attrs {
        date,
        folder,
        flags,
    }
}

/// One op of `write_batch`, from its tuple.
fn extract_op(item: &Bound<'_, PyAny>) -> PyResult<Op> {
    let py = item.py();
    let tuple = item.cast::<PyTuple>().map_err(|_| {
        PyTypeError::new_err(
            "an op is a tuple: (\"add\", user, doc, fields, date, folder, flags), \
             (\"delete\", user, doc) or (\"set_attrs\", user, doc, date, folder, flags)",
        )
    })?;
    let kind: String = tuple.get_item(0)?.extract()?;
    let arity = |want: usize| -> PyResult<()> {
        if tuple.len() == want {
            Ok(())
        } else {
            Err(invalid(
                py,
                format!("a {kind:?} op has {want} items, not {}", tuple.len()),
            ))
        }
    };
    match kind.as_str() {
        "add" => {
            arity(7)?;
            Ok(Op::Add(Doc {
                user: tuple.get_item(1)?.extract()?,
                id: tuple.get_item(2)?.extract()?,
                fields: extract_fields(&tuple.get_item(3)?)?,
                attrs: attrs(
                    tuple.get_item(4)?.extract()?,
                    tuple.get_item(5)?.extract()?,
                    tuple.get_item(6)?.extract()?,
                ),
            }))
        }
        "delete" => {
            arity(3)?;
            Ok(Op::Delete {
                user: tuple.get_item(1)?.extract()?,
                doc: tuple.get_item(2)?.extract()?,
            })
        }
        "set_attrs" => {
            arity(6)?;
            Ok(Op::SetAttrs {
                user: tuple.get_item(1)?.extract()?,
                doc: tuple.get_item(2)?.extract()?,
                attrs: attrs(
                    tuple.get_item(3)?.extract()?,
                    tuple.get_item(4)?.extract()?,
                    tuple.get_item(5)?.extract()?,
                ),
            })
        }
        other => Err(invalid(
            py,
            format!("unknown op {other:?}; use \"add\", \"delete\" or \"set_attrs\""),
        )),
    }
}

/// With `exist_ok`, an add of a mail the index already knows becomes a
/// change of its attributes (live mail) or nothing (deleted mail): ids are
/// never reused, so the text is the same.
fn skip_known(index: &Index, ops: Vec<Op>) -> Vec<Op> {
    ops.into_iter()
        .filter_map(|op| match op {
            Op::Add(doc) if index.contains(doc.user, doc.id) => {
                index.attrs(doc.user, doc.id).map(|_| Op::SetAttrs {
                    user: doc.user,
                    doc: doc.id,
                    attrs: doc.attrs,
                })
            }
            other => Some(other),
        })
        .collect()
}

fn parse_sync(sync: &str) -> Result<SyncPolicy, Error> {
    match sync {
        "always" => Ok(SyncPolicy::Always),
        "never" => Ok(SyncPolicy::Never),
        other => Err(Error::Config(format!(
            "sync must be \"always\" or \"never\", not {other:?}"
        ))),
    }
}

/// An open index directory (see `sdi.email.lsmindex` for the service's use).
#[pyclass(name = "LsmIndex", module = "sdi._rust.lsm", frozen)]
pub struct PyLsmIndex {
    path: PathBuf,
    inner: RwLock<Option<Index>>,
}

impl PyLsmIndex {
    /// Runs `work` on the open index with the GIL released.
    fn with<T, F>(&self, py: Python<'_>, work: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(&Index) -> Result<T, Error> + Send,
    {
        run_core(py, || {
            let guard = self.read()?;
            let index = guard.as_ref().ok_or(Failure::Closed)?;
            work(index).map_err(Failure::Lsm)
        })
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, Option<Index>>, Failure> {
        self.inner.read().map_err(|_| Failure::Broken)
    }

    fn write_ops(&self, py: Python<'_>, ops: Vec<Op>, exist_ok: bool) -> PyResult<()> {
        self.with(py, move |index| {
            let ops = if exist_ok {
                skip_known(index, ops)
            } else {
                ops
            };
            index.write_batch(&ops)
        })
    }
}

#[pymethods]
impl PyLsmIndex {
    #[new]
    #[pyo3(signature = (
        path,
        *,
        sync = "always",
        background_merge = true,
        memtable_bytes = None,
        merge_width = None,
        runs_max = None,
        tokenize_threads = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        sync: &str,
        background_merge: bool,
        memtable_bytes: Option<usize>,
        merge_width: Option<usize>,
        runs_max: Option<usize>,
        tokenize_threads: Option<usize>,
    ) -> PyResult<Self> {
        let sync = sync.to_owned();
        run_core(py, move || {
            let defaults = Options::default();
            let options = Options {
                sync: parse_sync(&sync)?,
                memtable_bytes_max: memtable_bytes.unwrap_or(defaults.memtable_bytes_max),
                merge_width: merge_width.unwrap_or(defaults.merge_width),
                runs_max: runs_max.unwrap_or(defaults.runs_max),
                background_compaction: background_merge,
                tokenize_threads: tokenize_threads.unwrap_or(defaults.tokenize_threads),
            };
            let index = Index::open(&path, options)?;
            Ok::<_, Error>(PyLsmIndex {
                path,
                inner: RwLock::new(Some(index)),
            })
        })
    }

    /// The index directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Indexes one mail. `fields` is `{name: text}` or a list of
    /// `(name, text)` pairs; names are from, to (or cc), subject, body,
    /// attachment (or filename). InvalidArgument if the user already has or
    /// had this id, unless `exist_ok` (then only the attributes change).
    #[pyo3(signature = (user, doc, fields, *, date = 0, folder = 0, flags = 0, exist_ok = false))]
    #[allow(clippy::too_many_arguments)]
    fn add(
        &self,
        py: Python<'_>,
        user: u32,
        doc: u64,
        fields: &Bound<'_, PyAny>,
        date: i64,
        folder: u32,
        flags: u32,
        exist_ok: bool,
    ) -> PyResult<()> {
        let op = Op::Add(Doc {
            user,
            id: doc,
            attrs: attrs(date, folder, flags),
            fields: extract_fields(fields)?,
        });
        self.write_ops(py, vec![op], exist_ok)
    }

    /// Marks a mail deleted; an unknown or deleted id does nothing.
    fn delete(&self, py: Python<'_>, user: u32, doc: u64) -> PyResult<()> {
        self.with(py, |index| index.delete(user, doc))
    }

    /// Replaces a live mail's attributes; otherwise does nothing.
    #[pyo3(signature = (user, doc, *, date, folder, flags))]
    fn set_attrs(
        &self,
        py: Python<'_>,
        user: u32,
        doc: u64,
        date: i64,
        folder: u32,
        flags: u32,
    ) -> PyResult<()> {
        self.with(py, |index| {
            index.set_attrs(user, doc, attrs(date, folder, flags))
        })
    }

    /// Applies a list of ops in one call, as one log write and (with
    /// `sync="always"`) one sync: all or none survive a crash. An op is
    /// `("add", user, doc, fields, date, folder, flags)`,
    /// `("delete", user, doc)` or `("set_attrs", user, doc, date, folder,
    /// flags)`. Every op is checked first; on an error none is applied.
    #[pyo3(signature = (ops, *, exist_ok = false))]
    fn write_batch(&self, py: Python<'_>, ops: &Bound<'_, PyList>, exist_ok: bool) -> PyResult<()> {
        if ops.len() > BATCH_OPS_MAX {
            return Err(to_py_err(
                py,
                Kind::LimitExceeded,
                format!(
                    "a batch of {} ops, over the limit of {BATCH_OPS_MAX}; split it",
                    ops.len()
                ),
            ));
        }
        let ops = ops
            .iter()
            .map(|item| extract_op(&item))
            .collect::<PyResult<Vec<Op>>>()?;
        self.write_ops(py, ops, exist_ok)
    }

    /// Ids of `user`'s mail matching `query` (the core's query language)
    /// and the filters, newest first, at most `limit`, all below `before`.
    /// `date_from` is inclusive, `date_to` exclusive (Unix seconds).
    #[pyo3(signature = (
        user, query, *, folder = None, date_from = None, date_to = None, read = None,
        starred = None, limit = 50, before = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        py: Python<'_>,
        user: u32,
        query: &str,
        folder: Option<u32>,
        date_from: Option<i64>,
        date_to: Option<i64>,
        read: Option<bool>,
        starred: Option<bool>,
        limit: usize,
        before: Option<u64>,
    ) -> PyResult<Vec<u64>> {
        let query = query.to_owned();
        let filter = Filter {
            folder,
            date_from,
            date_to,
            read,
            starred,
        };
        self.with(py, move |index| {
            let query = parse_query(&query)?;
            index.search(user, &query, &filter, limit, before)
        })
    }

    /// `(date, folder, flags)` of a live mail, or None.
    fn attrs(&self, py: Python<'_>, user: u32, doc: u64) -> PyResult<Option<(i64, u32, u32)>> {
        self.with(py, |index| {
            Ok(index.attrs(user, doc).map(|a| (a.date, a.folder, a.flags)))
        })
    }

    /// Whether the index knows mail `doc` of `user`, live or deleted.
    fn contains(&self, py: Python<'_>, user: u32, doc: u64) -> PyResult<bool> {
        self.with(py, |index| Ok(index.contains(user, doc)))
    }

    /// Every mail id of `user` the index knows, ascending, each with
    /// `(date, folder, flags)` or None when deleted.
    #[allow(clippy::type_complexity)]
    fn docs_of(&self, py: Python<'_>, user: u32) -> PyResult<Vec<(u64, Option<(i64, u32, u32)>)>> {
        self.with(py, |index| {
            Ok(index
                .docs_of(user)
                .into_iter()
                .map(|(doc, a)| (doc, a.map(|a| (a.date, a.folder, a.flags))))
                .collect())
        })
    }

    /// Writes the memtable to a sorted run now.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, Index::flush)
    }

    /// Syncs the log: every write so far survives a power cut.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, Index::sync)
    }

    /// One size-tiered merge if one is due; whether one ran.
    fn compact_step(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, Index::compact_step)
    }

    /// Flushes and merges every run into one, dropping deleted mail.
    fn compact(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, Index::compact)
    }

    /// Counters and sizes: a dict with run_bytes (list, oldest first),
    /// memtable_bytes, memtable_keys, live_docs, dead_docs, wal_seq,
    /// wal_bytes, flushes, compactions, background_error (str or None).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.with(py, |index| Ok(index.stats()))?;
        let out = PyDict::new(py);
        out.set_item("run_bytes", stats.run_bytes)?;
        out.set_item("memtable_bytes", stats.memtable_bytes)?;
        out.set_item("memtable_keys", stats.memtable_keys)?;
        out.set_item("live_docs", stats.live_docs)?;
        out.set_item("dead_docs", stats.dead_docs)?;
        out.set_item("wal_seq", stats.wal_seq)?;
        out.set_item("wal_bytes", stats.wal_bytes)?;
        out.set_item("flushes", stats.flushes)?;
        out.set_item("compactions", stats.compactions)?;
        out.set_item("background_error", stats.background_error)?;
        Ok(out)
    }

    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<bool> {
        run_core(py, || Ok::<_, Failure>(self.read()?.is_none()))
    }

    /// Stops merging, flushes and syncs (the next open replays nothing);
    /// waits for calls in progress. A second call does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        run_core(py, || {
            let index = self.inner.write().map_err(|_| Failure::Broken)?.take();
            match index {
                Some(index) => index.close().map_err(Failure::Lsm),
                None => Ok(()),
            }
        })
    }
}

/// Checks a query against the core's language: InvalidArgument with the
/// position and the reason when it does not parse.
#[pyfunction]
fn check_query(py: Python<'_>, query: &str) -> PyResult<()> {
    run_core(py, || parse_query(query).map(drop))
}

pub fn register(parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = parent.py();
    let module = PyModule::new(py, "lsm")?;
    module.add_class::<PyLsmIndex>()?;
    module.add_function(wrap_pyfunction!(check_query, &module)?)?;
    module.add("FLAG_READ", FLAG_READ)?;
    module.add("FLAG_STARRED", FLAG_STARRED)?;
    module.add("SEARCH_RESULTS_MAX", SEARCH_RESULTS_MAX)?;
    module.add("BATCH_OPS_MAX", BATCH_OPS_MAX)?;
    module.setattr("__name__", "sdi._rust.lsm")?;
    parent.add_submodule(&module)?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("sdi._rust.lsm", &module)?;
    Ok(())
}
