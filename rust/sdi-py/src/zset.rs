//! `sdi._rust.zset`: the bindings of the `sdi-zset` core (the leaderboard's
//! sorted set with Redis ZSET semantics).
//!
//! One class, `ZSet`, members as `bytes`. The set sits behind a `RwLock`.
//! Short calls first try the lock without waiting while holding the GIL (no
//! thread switch for the common uncontended call); when the lock is busy they
//! wait for it with the GIL released, so a thread waiting for the lock never
//! holds the GIL that the holder may need. Batch calls (numpy arrays,
//! `dump`, `load`, `items`) always run with the GIL released. Members of a
//! batch are copied once into one flat buffer (a list of bytes) or read in
//! place (a numpy `S<n>` array), before the GIL is released.

use std::sync::{RwLock, TryLockError};

use numpy::{
    PyArray1, PyArrayDescrMethods, PyReadonlyArray1, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::errors::{core_err, run_core, run_core_attached, to_py_err, CoreError, Kind};
use sdi_zset::{AddFlags, AddReply, DumpError, Error, LexRange, Limit, ScoreRange, ZSet};

impl CoreError for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::MemberTooLong(_) | Error::Full => Kind::LimitExceeded,
            _ => Kind::InvalidArgument,
        }
    }
}

impl CoreError for DumpError {
    fn kind(&self) -> Kind {
        Kind::Corrupt
    }
}

/// What a call on a `ZSet` can fail with, besides the core's errors.
#[derive(Debug)]
enum CallError {
    Zset(Error),
    Poisoned,
}

impl From<Error> for CallError {
    fn from(error: Error) -> Self {
        CallError::Zset(error)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Zset(error) => error.fmt(f),
            CallError::Poisoned => f.write_str(
                "the sorted set was left inconsistent by an earlier internal error; rebuild it \
                 (for example from a dump taken before)",
            ),
        }
    }
}

impl CoreError for CallError {
    fn kind(&self) -> Kind {
        match self {
            CallError::Zset(error) => error.kind(),
            CallError::Poisoned => Kind::Internal,
        }
    }
}

/// Elements copied out of the set under its lock: scores, and the member
/// bytes back to back with their end offsets.
#[derive(Default)]
struct Flat {
    scores: Vec<f64>,
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Flat {
    fn collect<'a>(elements: impl Iterator<Item = (f64, &'a [u8])>) -> Flat {
        let mut flat = Flat::default();
        for (score, member) in elements {
            flat.push(score, member);
        }
        flat
    }

    fn push(&mut self, score: f64, member: &[u8]) {
        self.scores.push(score);
        self.bytes.extend_from_slice(member);
        self.ends.push(self.bytes.len());
    }

    fn member(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// `[(member, score), ...]`.
    fn pairs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(
            py,
            (0..self.scores.len()).map(|i| (PyBytes::new(py, self.member(i)), self.scores[i])),
        )
    }

    /// `[member, ...]`.
    fn members<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(
            py,
            (0..self.scores.len()).map(|i| PyBytes::new(py, self.member(i))),
        )
    }
}

/// The members of a batch, gathered with the GIL held.
enum MemberBuf<'py> {
    /// Copied from a sequence of bytes: bytes back to back, end offsets.
    Flat(Vec<u8>, Vec<usize>),
    /// A numpy `S<n>` array viewed as its bytes, and `n`.
    Fixed(PyReadonlyArray1<'py, u8>, usize, usize),
}

/// A batch's members as plain slices (`Send`, for use without the GIL).
#[derive(Clone, Copy)]
enum MemberView<'a> {
    Flat(&'a [u8], &'a [usize]),
    Fixed(&'a [u8], usize, usize),
}

impl MemberView<'_> {
    fn slices(&self) -> Vec<&[u8]> {
        match *self {
            MemberView::Flat(bytes, ends) => {
                let mut start = 0;
                ends.iter()
                    .map(|&end| {
                        let member = &bytes[start..end];
                        start = end;
                        member
                    })
                    .collect()
            }
            MemberView::Fixed(_, 0, count) => vec![&[][..]; count],
            MemberView::Fixed(bytes, size, _) => bytes
                .chunks_exact(size)
                .map(|item| {
                    // numpy's convention: an `S<n>` item ends at its trailing NULs.
                    let len = item.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                    &item[..len]
                })
                .collect(),
        }
    }
}

impl<'py> MemberBuf<'py> {
    fn gather(members: &Bound<'py, PyAny>) -> PyResult<Self> {
        let py = members.py();
        if let Ok(array) = members.cast::<PyUntypedArray>() {
            let dtype = array.dtype();
            if dtype.kind() == b'S' {
                let size = dtype.itemsize();
                let count = array.len();
                let numpy = py.import("numpy")?;
                let flat = numpy
                    .call_method1("ascontiguousarray", (members,))?
                    .call_method1("reshape", (-1,))?;
                let view = if size == 0 {
                    numpy.call_method1("zeros", (0, "u1"))?
                } else {
                    flat.call_method1("view", ("u1",))?
                };
                let bytes: PyReadonlyArray1<'py, u8> = view.extract()?;
                return Ok(MemberBuf::Fixed(bytes, size, count));
            }
        }
        let (mut bytes, mut ends) = (Vec::new(), Vec::new());
        ends.reserve(members.len().unwrap_or(0));
        let mut take = |item: Bound<'py, PyAny>| -> PyResult<()> {
            let member = item.cast::<PyBytes>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "members must be bytes, not {}",
                    item.get_type()
                        .name()
                        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
                ))
            })?;
            bytes.extend_from_slice(member.as_bytes());
            ends.push(bytes.len());
            Ok(())
        };
        if members.is_instance_of::<PyBytes>() || members.is_instance_of::<pyo3::types::PyString>()
        {
            return Err(PyTypeError::new_err(
                "members must be a sequence of bytes (a list, tuple or numpy S array), not one bytes or str",
            ));
        }
        if let Ok(list) = members.cast::<PyList>() {
            for item in list.iter() {
                take(item)?;
            }
        } else if let Ok(tuple) = members.cast::<PyTuple>() {
            for item in tuple.iter() {
                take(item)?;
            }
        } else {
            for item in members.try_iter()? {
                take(item?)?;
            }
        }
        Ok(MemberBuf::Flat(bytes, ends))
    }

    fn view(&self) -> PyResult<MemberView<'_>> {
        Ok(match self {
            MemberBuf::Flat(bytes, ends) => MemberView::Flat(bytes, ends),
            MemberBuf::Fixed(array, size, count) => {
                let bytes = array.as_slice().map_err(|_| {
                    PyTypeError::new_err("the members array could not be read as contiguous bytes")
                })?;
                MemberView::Fixed(bytes, *size, *count)
            }
        })
    }
}

/// A 1-D contiguous float64 array from an array or anything numpy converts.
fn floats<'py>(values: &Bound<'py, PyAny>) -> PyResult<PyReadonlyArray1<'py, f64>> {
    if let Ok(array) = values.extract::<PyReadonlyArray1<'py, f64>>() {
        if array.is_c_contiguous() {
            return Ok(array);
        }
    }
    let py = values.py();
    py.import("numpy")?
        .call_method1("ascontiguousarray", (values, "float64"))?
        .call_method1("reshape", (-1,))?
        .extract()
}

/// A score as ZADD and ZINCRBY take it: bytes in Redis's float syntax, or a number.
fn score_arg(value: &Bound<'_, PyAny>) -> PyResult<f64> {
    if let Ok(text) = value.cast::<PyBytes>() {
        return sdi_zset::parse_float(text.as_bytes())
            .ok_or_else(|| core_err(value.py(), Error::NotAFloat));
    }
    value.extract::<f64>()
}

/// The sorted set. Members are ``bytes``; scores are floats (NaN refused).
///
/// Ordered by score, ties by member bytes, as Redis orders a ZSET. Errors
/// carry Redis's wording (without ``ERR``) in ``sdi.errors.InvalidArgument``;
/// a member over 32 MiB is ``sdi.errors.LimitExceeded``. Safe to share
/// between threads.
#[pyclass(name = "ZSet", module = "sdi._rust.zset", frozen)]
pub struct PyZSet {
    set: RwLock<ZSet>,
}

impl PyZSet {
    /// Runs a short read: tries the lock with the GIL held, waits for it
    /// with the GIL released only when it is busy.
    fn read<T, F>(&self, py: Python<'_>, work: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(&ZSet) -> Result<T, CallError> + Send,
    {
        let mut work = Some(work);
        let quick = run_core_attached(py, || match self.set.try_read() {
            Ok(set) => work.take().expect("not run yet")(&set).map(Some),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Poisoned(_)) => Err(CallError::Poisoned),
        })?;
        match (quick, work) {
            (Some(value), _) => Ok(value),
            (None, Some(work)) => self.read_detached(py, work),
            (None, None) => unreachable!("work taken only when it ran"),
        }
    }

    /// Runs a read with the GIL released (long calls).
    fn read_detached<T, F>(&self, py: Python<'_>, work: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(&ZSet) -> Result<T, CallError> + Send,
    {
        run_core(py, || {
            let set = self.set.read().map_err(|_| CallError::Poisoned)?;
            work(&set)
        })
    }

    /// A short update; as [`Self::read`] with the write lock.
    fn write<T, F>(&self, py: Python<'_>, work: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(&mut ZSet) -> Result<T, CallError> + Send,
    {
        let mut work = Some(work);
        let quick = run_core_attached(py, || match self.set.try_write() {
            Ok(mut set) => work.take().expect("not run yet")(&mut set).map(Some),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Poisoned(_)) => Err(CallError::Poisoned),
        })?;
        match (quick, work) {
            (Some(value), _) => Ok(value),
            (None, Some(work)) => self.write_detached(py, work),
            (None, None) => unreachable!("work taken only when it ran"),
        }
    }

    /// An update with the GIL released (long calls).
    fn write_detached<T, F>(&self, py: Python<'_>, work: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(&mut ZSet) -> Result<T, CallError> + Send,
    {
        run_core(py, || {
            let mut set = self.set.write().map_err(|_| CallError::Poisoned)?;
            work(&mut set)
        })
    }
}

fn score_range(py: Python<'_>, min: &[u8], max: &[u8]) -> PyResult<ScoreRange> {
    ScoreRange::parse(min, max).map_err(|e| core_err(py, e))
}

fn lex_range<'a>(py: Python<'_>, min: &'a [u8], max: &'a [u8]) -> PyResult<LexRange<'a>> {
    LexRange::parse(min, max).map_err(|e| core_err(py, e))
}

/// Raises `InvalidArgument` carrying the failing element's `index`.
fn at_index(py: Python<'_>, index: usize, error: Error) -> PyErr {
    let err = core_err(py, error);
    // Best effort: the message is the core's text either way.
    let _ = err.value(py).setattr("index", index);
    err
}

#[pymethods]
impl PyZSet {
    #[new]
    fn new() -> Self {
        PyZSet {
            set: RwLock::new(ZSet::new()),
        }
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.read(py, |set| Ok(set.len()))
    }

    fn __contains__(&self, py: Python<'_>, member: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(member) = member.cast::<PyBytes>() else {
            return Ok(false);
        };
        let member = member.as_bytes();
        self.read(py, |set| Ok(set.contains(member)))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let len = self.read(py, |set| Ok(set.len()))?;
        Ok(format!("<sdi.zset.ZSet of {len} members>"))
    }

    /// ZSCORE: the member's score, or None.
    fn score(&self, py: Python<'_>, member: &[u8]) -> PyResult<Option<f64>> {
        self.read(py, |set| Ok(set.score(member)))
    }

    /// ZMSCORE: the score of each member (None where absent).
    fn mscore(&self, py: Python<'_>, members: &Bound<'_, PyAny>) -> PyResult<Vec<Option<f64>>> {
        let buf = MemberBuf::gather(members)?;
        let view = buf.view()?;
        self.read(py, |set| Ok(set.scores(&view.slices())))
    }

    /// ZADD with its flags over score-member pairs. Scores are numbers or
    /// bytes in Redis's float syntax; every pair is checked before anything
    /// changes. Returns the count (added, or with ``ch`` added plus
    /// changed), or with ``incr`` the new score (None when a flag blocked it).
    #[pyo3(signature = (scores, members, *, nx = false, xx = false, gt = false, lt = false, ch = false, incr = false))]
    #[allow(clippy::too_many_arguments)]
    fn zadd(
        &self,
        py: Python<'_>,
        scores: &Bound<'_, PyAny>,
        members: &Bound<'_, PyAny>,
        nx: bool,
        xx: bool,
        gt: bool,
        lt: bool,
        ch: bool,
        incr: bool,
    ) -> PyResult<Py<PyAny>> {
        let flags = AddFlags {
            nx,
            xx,
            gt,
            lt,
            ch,
            incr,
        };
        let values = scores
            .try_iter()?
            .map(|item| score_arg(&item?))
            .collect::<PyResult<Vec<f64>>>()?;
        let buf = MemberBuf::gather(members)?;
        let view = buf.view()?;
        let reply = self.write(py, |set| Ok(set.zadd(flags, &values, &view.slices())?))?;
        Ok(match reply {
            AddReply::Count(n) => n.into_pyobject(py)?.into_any().unbind(),
            AddReply::Score(Some(score)) => score.into_pyobject(py)?.into_any().unbind(),
            AddReply::Score(None) => py.None(),
        })
    }

    /// ZINCRBY: adds ``delta`` (a number, or bytes in Redis's float syntax)
    /// to the member's score (0 when absent); the new score.
    fn incr(&self, py: Python<'_>, delta: &Bound<'_, PyAny>, member: &[u8]) -> PyResult<f64> {
        let delta = score_arg(delta)?;
        self.write(py, |set| Ok(set.incr(delta, member)?))
    }

    /// ZREM: how many of the members were there (and are removed).
    fn remove(&self, py: Python<'_>, members: &Bound<'_, PyAny>) -> PyResult<usize> {
        let buf = MemberBuf::gather(members)?;
        let view = buf.view()?;
        self.write(py, |set| {
            Ok(view
                .slices()
                .iter()
                .filter(|m| set.remove(m).is_some())
                .count())
        })
    }

    /// ZRANK / ZREVRANK WITHSCORE: ``(rank, score)``, or None.
    #[pyo3(signature = (member, rev = false))]
    fn rank(&self, py: Python<'_>, member: &[u8], rev: bool) -> PyResult<Option<(usize, f64)>> {
        self.read(py, |set| {
            Ok(if rev {
                set.rev_rank_with_score(member)
            } else {
                set.rank_with_score(member)
            })
        })
    }

    /// ZRANGE start stop [REV]: ``[(member, score), ...]``, ranks as Redis
    /// reads them (negative from the end, clamped).
    #[pyo3(signature = (start, stop, rev = false))]
    fn range_by_rank<'py>(
        &self,
        py: Python<'py>,
        start: i64,
        stop: i64,
        rev: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let flat = self.read(py, |set| {
            Ok(Flat::collect(set.range_by_rank(start, stop, rev)))
        })?;
        flat.pairs(py)
    }

    /// ZRANGE BYSCORE [REV] [LIMIT offset count]. ``min`` and ``max`` in
    /// Redis's bound syntax, always min first (also with ``rev``).
    #[pyo3(
        signature = (min, max, rev = false, offset = 0, count = -1),
        text_signature = "($self, min, max, rev=False, offset=0, count=-1)"
    )]
    fn range_by_score<'py>(
        &self,
        py: Python<'py>,
        min: &[u8],
        max: &[u8],
        rev: bool,
        offset: i64,
        count: i64,
    ) -> PyResult<Bound<'py, PyList>> {
        let range = score_range(py, min, max)?;
        let limit = Some(Limit { offset, count });
        let flat = self.read(py, |set| {
            Ok(Flat::collect(set.range_by_score(&range, rev, limit)))
        })?;
        flat.pairs(py)
    }

    /// ZCOUNT.
    fn count_by_score(&self, py: Python<'_>, min: &[u8], max: &[u8]) -> PyResult<usize> {
        let range = score_range(py, min, max)?;
        self.read(py, |set| Ok(set.count_by_score(&range)))
    }

    /// ZRANGE BYLEX [REV] [LIMIT offset count]: members. Bounds ``-``,
    /// ``+``, ``[member``, ``(member``, always min first.
    #[pyo3(
        signature = (min, max, rev = false, offset = 0, count = -1),
        text_signature = "($self, min, max, rev=False, offset=0, count=-1)"
    )]
    fn range_by_lex<'py>(
        &self,
        py: Python<'py>,
        min: &[u8],
        max: &[u8],
        rev: bool,
        offset: i64,
        count: i64,
    ) -> PyResult<Bound<'py, PyList>> {
        let range = lex_range(py, min, max)?;
        let limit = Some(Limit { offset, count });
        let flat = self.read(py, |set| {
            Ok(Flat::collect(set.range_by_lex(&range, rev, limit)))
        })?;
        flat.members(py)
    }

    /// ZLEXCOUNT.
    fn count_by_lex(&self, py: Python<'_>, min: &[u8], max: &[u8]) -> PyResult<usize> {
        let range = lex_range(py, min, max)?;
        self.read(py, |set| Ok(set.count_by_lex(&range)))
    }

    /// ZPOPMIN / ZPOPMAX (``max=True``) count: ``[(member, score), ...]``.
    #[pyo3(signature = (count = 1, max = false))]
    fn pop<'py>(&self, py: Python<'py>, count: i64, max: bool) -> PyResult<Bound<'py, PyList>> {
        let Ok(count) = usize::try_from(count) else {
            return Err(to_py_err(
                py,
                Kind::InvalidArgument,
                "value is out of range, must be positive".to_owned(),
            ));
        };
        let popped = self.write(py, |set| {
            Ok(if max {
                set.pop_max(count)
            } else {
                set.pop_min(count)
            })
        })?;
        PyList::new(
            py,
            popped
                .iter()
                .map(|(score, member)| (PyBytes::new(py, member), *score)),
        )
    }

    /// ZREMRANGEBYRANK; the number removed.
    fn remove_range_by_rank(&self, py: Python<'_>, start: i64, stop: i64) -> PyResult<usize> {
        self.write(py, |set| Ok(set.remove_range_by_rank(start, stop)))
    }

    /// ZREMRANGEBYSCORE; the number removed.
    fn remove_range_by_score(&self, py: Python<'_>, min: &[u8], max: &[u8]) -> PyResult<usize> {
        let range = score_range(py, min, max)?;
        self.write(py, |set| Ok(set.remove_range_by_score(&range)))
    }

    /// ZREMRANGEBYLEX; the number removed.
    fn remove_range_by_lex(&self, py: Python<'_>, min: &[u8], max: &[u8]) -> PyResult<usize> {
        let range = lex_range(py, min, max)?;
        self.write(py, |set| Ok(set.remove_range_by_lex(&range)))
    }

    /// The element of rank ``rank`` (0 is the lowest score), or None when
    /// ``rank`` is negative or past the end.
    fn get_by_rank<'py>(
        &self,
        py: Python<'py>,
        rank: i64,
    ) -> PyResult<Option<(Bound<'py, PyBytes>, f64)>> {
        let Ok(rank) = usize::try_from(rank) else {
            return Ok(None);
        };
        let found = self.read(py, |set| {
            Ok(set.get_by_rank(rank).map(|(s, m)| (s, m.to_vec())))
        })?;
        Ok(found.map(|(score, member)| (PyBytes::new(py, &member), score)))
    }

    /// Every element, lowest score first: ``[(member, score), ...]``.
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let flat = self.read_detached(py, |set| Ok(Flat::collect(set.iter())))?;
        flat.pairs(py)
    }

    /// A compact binary snapshot of the whole set (magic, version, the
    /// elements in order, CRC-32C); :meth:`load` reads it back.
    fn dump<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.read_detached(py, |set| Ok(set.dump()))?;
        Ok(PyBytes::new(py, &data))
    }

    /// A set from :meth:`dump`'s bytes, all checked; bad data raises
    /// ``sdi.errors.Corrupt`` saying what is wrong.
    #[staticmethod]
    fn load(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let set = run_core(py, || ZSet::load(data))?;
        Ok(PyZSet {
            set: RwLock::new(set),
        })
    }

    /// Heap bytes the set holds (leaves, inner nodes, member index).
    fn memory_bytes(&self, py: Python<'_>) -> PyResult<usize> {
        self.read_detached(py, |set| Ok(set.memory_bytes()))
    }

    /// The tree's shape and memory: ``len``, ``leaves``, ``inner_nodes``,
    /// ``height``, ``index_slots``, ``memory_bytes``, ``member_bytes`` and
    /// ``overhead_per_member`` (bytes beyond the member and its 8-byte score).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (stats, member_bytes) =
            self.read_detached(py, |set| Ok((set.stats(), set.member_bytes())))?;
        let dict = PyDict::new(py);
        dict.set_item("len", stats.len)?;
        dict.set_item("leaves", stats.leaves)?;
        dict.set_item("inner_nodes", stats.inner_nodes)?;
        dict.set_item("height", stats.height)?;
        dict.set_item("index_slots", stats.index_slots)?;
        dict.set_item("memory_bytes", stats.memory_bytes)?;
        dict.set_item("member_bytes", member_bytes)?;
        let overhead = if stats.len == 0 {
            0.0
        } else {
            (stats.memory_bytes as f64 - member_bytes as f64 - 8.0 * stats.len as f64)
                / stats.len as f64
        };
        dict.set_item("overhead_per_member", overhead)?;
        Ok(dict)
    }

    /// Plain ZADD of arrays (GIL released): float64 scores, members as a
    /// sequence of bytes or a numpy ``S<n>`` array (trailing NULs stripped).
    /// Every pair is checked first; the number of members added.
    fn add_many(
        &self,
        py: Python<'_>,
        scores: &Bound<'_, PyAny>,
        members: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let scores = floats(scores)?;
        let scores = scores
            .as_slice()
            .map_err(|e| to_py_err(py, Kind::InvalidArgument, format!("scores: {e}")))?;
        let buf = MemberBuf::gather(members)?;
        let view = buf.view()?;
        self.write_detached(py, |set| Ok(set.add_many(scores, &view.slices())?))
    }

    /// ZINCRBY over arrays, in order (GIL released): the new scores. A NaN
    /// delta fails before anything changes; an increment whose result is
    /// NaN fails with the ones before it applied. The exception's ``index``
    /// says which element failed.
    fn incr_many<'py>(
        &self,
        py: Python<'py>,
        deltas: &Bound<'py, PyAny>,
        members: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let deltas = floats(deltas)?;
        let deltas = deltas
            .as_slice()
            .map_err(|e| to_py_err(py, Kind::InvalidArgument, format!("deltas: {e}")))?;
        if let Some(i) = deltas.iter().position(|d| d.is_nan()) {
            return Err(at_index(py, i, Error::NotAFloat));
        }
        let buf = MemberBuf::gather(members)?;
        let view = buf.view()?;
        let outcome = self.write_detached(py, |set| Ok(set.incr_many(deltas, &view.slices())))?;
        match outcome {
            Ok(scores) => Ok(PyArray1::from_vec(py, scores)),
            Err((_, error @ Error::LengthMismatch { .. })) => Err(core_err(py, error)),
            Err((i, error)) => Err(at_index(py, i, error)),
        }
    }

    /// Batch ZSCORE (GIL released): float64 scores, NaN where absent.
    fn scores<'py>(
        &self,
        py: Python<'py>,
        members: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let buf = MemberBuf::gather(members)?;
        let view = buf.view()?;
        let out = self.read_detached(py, |set| {
            let members = view.slices();
            let mut out = vec![0.0; members.len()];
            set.scores_into(&members, &mut out);
            Ok(out)
        })?;
        Ok(PyArray1::from_vec(py, out))
    }

    /// Batch ZRANK / ZREVRANK (GIL released): int64 ranks, -1 where absent.
    #[pyo3(signature = (members, rev = false))]
    fn ranks<'py>(
        &self,
        py: Python<'py>,
        members: &Bound<'py, PyAny>,
        rev: bool,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let buf = MemberBuf::gather(members)?;
        let view = buf.view()?;
        let out = self.read_detached(py, |set| {
            let members = view.slices();
            let mut out = vec![0; members.len()];
            set.ranks_into(&members, rev, &mut out);
            Ok(out)
        })?;
        Ok(PyArray1::from_vec(py, out))
    }
}

pub fn register(parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = parent.py();
    let module = PyModule::new(py, "zset")?;
    module.add_class::<PyZSet>()?;
    module.add("MEMBER_MAX", sdi_zset::MEMBER_MAX)?;
    module.setattr("__name__", "sdi._rust.zset")?;
    parent.add_submodule(&module)?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("sdi._rust.zset", &module)?;
    Ok(())
}
