# cython: language_level=3
# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: auto_pickle=False, autotestdict=False
"""RESP2/RESP3 codec: a sans-IO parser for replies and for commands, and encoders.

The public, documented face of this module is :mod:`sdi.resp`; this file is the
implementation. The parser keeps its own state (a stack of partly built
aggregates) so that bytes can arrive in any split without any work being
redone, and it parses in place over the bytes it was given: only the tail of
an incomplete value is ever copied.
"""

cimport cython
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF, Py_XDECREF
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memchr, memcmp, memcpy, memmove

from sdi.errors import InvalidArgument, LimitExceeded, ProtocolError

cdef extern from "Python.h":
    # Raw-pointer forms of the C API, so the hot loop owns its references
    # explicitly (Cython's own declarations take and return ``object``).
    PyObject* PyBytes_FromStringAndSize(const char* v, Py_ssize_t n)
    char* PyBytes_AS_STRING(object o)
    Py_ssize_t PyBytes_GET_SIZE(object o)
    bint PyBytes_CheckExact(object o)
    bint PyBytes_Check(object o)
    bint PyUnicode_Check(object o)
    bint PyLong_CheckExact(object o)
    bint PyLong_Check(object o)
    bint PyFloat_Check(object o)
    bint PyBool_Check(object o)
    bint PyList_Check(object o)
    bint PyTuple_Check(object o)
    bint PyDict_Check(object o)
    bint PyAnySet_Check(object o)
    PyObject* PyLong_FromLongLong(long long v)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1
    PyObject* PyFloat_FromDouble(double v)
    PyObject* PyList_New(Py_ssize_t n)
    void PyList_SET_ITEM(PyObject* lst, Py_ssize_t i, PyObject* o)
    int PyList_Append(PyObject* lst, PyObject* o)
    PyObject* PyDict_New()
    int PyDict_SetItem(PyObject* d, PyObject* k, PyObject* v)
    int PyDict_Update(PyObject* a, PyObject* b)
    double PyOS_string_to_double(const char* s, char** endptr, PyObject* overflow_exception)
    PyObject* PyErr_Occurred()
    void PyErr_Clear()
    int PyErr_ExceptionMatches(PyObject* exc)
    PyObject* PyExc_TypeError
    PyObject* PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    PyObject* PyObject_CallOneArg(PyObject* callable, PyObject* arg)
    int PyGC_Enable()
    int PyGC_Disable()

    ctypedef struct Py_buffer:
        void* buf
        Py_ssize_t len
    int PyObject_GetBuffer(object o, Py_buffer* view, int flags) except -1
    void PyBuffer_Release(Py_buffer* view)
    int PyBUF_SIMPLE
    int PyObject_CheckBuffer(object o)


# ---------------------------------------------------------------------------
# Limits (defaults). Units are last in every name.
# ---------------------------------------------------------------------------

#: Longest bulk string payload, like redis-server's proto-max-bulk-len.
BULK_BYTES_MAX = 512 * 1024 * 1024
#: Most elements in one array, set or push, and most pairs in one map or attribute.
AGGREGATE_LENGTH_MAX = 2**31 - 1
#: Deepest nesting of aggregates.
DEPTH_MAX = 64
#: Longest line of a simple string, error, double, big number or header.
LINE_BYTES_MAX = 64 * 1024
#: Longest inline command (a command line not in RESP array form).
INLINE_BYTES_MAX = 64 * 1024
#: Most bytes held for values not yet complete plus bytes not yet parsed.
BUFFER_BYTES_MAX = 1024 * 1024 * 1024

# Hard ceilings on the configurable limits, so a limit cannot itself cause an
# unbounded allocation (the frame stack is allocated once at its full depth).
cdef Py_ssize_t _DEPTH_CEILING = 4096
cdef Py_ssize_t _INITIAL_BUFFER_BYTES = 16 * 1024
cdef Py_ssize_t _KEEP_BUFFER_BYTES = 1024 * 1024

cdef enum:
    K_ARRAY = 1
    K_SET = 2
    K_PUSH = 3
    K_MAP = 4
    K_ATTRIBUTE = 5

# Results of _read_int.
cdef enum:
    INT_INCOMPLETE = 0
    INT_OK = 1
    INT_NOT_DIGIT = -1
    INT_RANGE = -2
    INT_NO_LF = -3

cdef struct Frame:
    PyObject* container      # list or dict being filled (owned)
    PyObject* key            # a map key waiting for its value (owned)
    PyObject* attribute      # attributes that annotate this aggregate (owned)
    PyObject* attribute_next # attributes for the next child of this frame (owned)
    Py_ssize_t remaining     # elements still to come (a map counts keys and values)
    Py_ssize_t index         # next slot of a preallocated list
    int kind
    bint preallocated


# ---------------------------------------------------------------------------
# Python-visible value classes.
# ---------------------------------------------------------------------------

class ReplyError(Exception):
    """An error reply (``-ERR ...`` or RESP3 ``!``), returned as a value, not raised.

    ``str(error)`` is the message, decoded as UTF-8 with invalid bytes replaced.
    """


class Push(list):
    """A RESP3 push (``>``): a list that is out-of-band data, not a reply to a command."""

    def __repr__(self):
        return f"Push({list.__repr__(self)})"


class SimpleString(bytes):
    """Bytes that the encoders write as a RESP simple string (``+OK``) instead of a bulk string."""

    def __repr__(self):
        return f"SimpleString({bytes.__repr__(self)})"


class Attributed:
    """A value with the RESP3 attributes (``|``) that preceded it.

    Only returned by parsers built with ``keep_attributes=True``; encoded as an
    attribute map followed by the value in RESP3, as the bare value in RESP2.
    """

    __slots__ = ("attributes", "value")

    def __init__(self, value, attributes):
        self.value = value
        self.attributes = attributes

    def __eq__(self, other: object):
        if not isinstance(other, Attributed):
            return NotImplemented
        return self.value == other.value and self.attributes == other.attributes

    __hash__ = None

    def __repr__(self):
        return f"Attributed({self.value!r}, {self.attributes!r})"


# Cached objects for the commonest replies. CPython already shares -5..256;
# this cache reaches further so counters and lengths rarely allocate.
cdef enum:
    INT_CACHE_SIZE = 1024
cdef list _int_cache_owner = list(range(INT_CACHE_SIZE))
cdef PyObject* _int_cache[INT_CACHE_SIZE]
cdef Py_ssize_t _i
for _i in range(INT_CACHE_SIZE):
    _int_cache[_i] = <PyObject*>_int_cache_owner[_i]
cdef bytes _OK = b"OK"
cdef bytes _QUEUED = b"QUEUED"
cdef bytes _PONG = b"PONG"
cdef bytes _EMPTY = b""
# Cython reads a bare True as the C value 1; these are the Python objects.
cdef object _TRUE = True
cdef object _FALSE = False


cdef inline bint _is_digit(char c) noexcept nogil:
    return c >= c'0' and c <= c'9'


cdef inline int _read_int(const char* s, const char* end, int64_t* out, const char** after) noexcept nogil:
    """Read ``-?[0-9]+\\r\\n`` at ``s``: the digits are accumulated in the same
    pass that looks for the CR, and at most 19 digits are read, so a header
    never makes the parser scan far."""
    cdef const char* c = s
    cdef bint negative = False
    cdef uint64_t value = 0
    cdef int digits = 0
    cdef char ch
    if c < end and c[0] == c'-':
        negative = True
        c += 1
    while c < end:
        ch = c[0]
        if _is_digit(ch):
            if digits == 19:
                return INT_RANGE
            value = value * 10 + <uint64_t>(ch - c'0')
            digits += 1
            c += 1
        elif ch == c'\r':
            if digits == 0:
                return INT_NOT_DIGIT
            if c + 1 >= end:
                return INT_INCOMPLETE
            if c[1] != c'\n':
                return INT_NO_LF
            if negative:
                if value > <uint64_t>9223372036854775808ULL:
                    return INT_RANGE
                out[0] = -<int64_t>(value - 1) - 1
            else:
                if value > <uint64_t>9223372036854775807ULL:
                    return INT_RANGE
                out[0] = <int64_t>value
            after[0] = c + 2
            return INT_OK
        else:
            return INT_NOT_DIGIT
    return INT_INCOMPLETE


cdef str _int_problem(int code):
    if code == INT_NOT_DIGIT:
        return "is not a decimal integer"
    if code == INT_RANGE:
        return "is outside the signed 64-bit range"
    return "has a CR that is not followed by LF"


cdef inline bint _is_space(char c) noexcept nogil:
    return c == c' ' or c == c'\t' or c == c'\n' or c == c'\r' or c == c'\v' or c == c'\f'


cdef inline int _hex_value(char c) noexcept nogil:
    if c >= c'0' and c <= c'9':
        return c - c'0'
    if c >= c'a' and c <= c'f':
        return c - c'a' + 10
    if c >= c'A' and c <= c'F':
        return c - c'A' + 10
    return -1


cdef object _split_inline(const char* s, Py_ssize_t n):
    """Split an inline command line into arguments the way redis-server does:
    whitespace separates arguments; double quotes allow escapes (``\\n``,
    ``\\xHH``, ...); single quotes allow only ``\\'``; a closing quote must be
    followed by whitespace or the end. Returns None for unbalanced quotes."""
    cdef list args = []
    cdef Py_ssize_t i = 0
    cdef int quote
    cdef char c
    cdef bytearray current
    cdef int high, low
    while True:
        while i < n and _is_space(s[i]):
            i += 1
        if i >= n:
            return args
        current = bytearray()
        quote = 0
        while True:
            if quote == 1:
                if i >= n:
                    return None
                c = s[i]
                if c == c'\\' and i + 3 < n and s[i + 1] == c'x':
                    high = _hex_value(s[i + 2])
                    low = _hex_value(s[i + 3])
                    if high >= 0 and low >= 0:
                        current.append(high * 16 + low)
                        i += 4
                        continue
                if c == c'\\' and i + 1 < n:
                    c = s[i + 1]
                    if c == c'n':
                        c = c'\n'
                    elif c == c'r':
                        c = c'\r'
                    elif c == c't':
                        c = c'\t'
                    elif c == c'b':
                        c = c'\b'
                    elif c == c'a':
                        c = c'\a'
                    current.append(<unsigned char>c)
                    i += 2
                    continue
                if c == c'"':
                    if i + 1 < n and not _is_space(s[i + 1]):
                        return None
                    i += 1
                    break
                current.append(<unsigned char>c)
                i += 1
            elif quote == 2:
                if i >= n:
                    return None
                c = s[i]
                if c == c'\\' and i + 1 < n and s[i + 1] == c"'":
                    current.append(39)
                    i += 2
                    continue
                if c == c"'":
                    if i + 1 < n and not _is_space(s[i + 1]):
                        return None
                    i += 1
                    break
                current.append(<unsigned char>c)
                i += 1
            else:
                if i >= n:
                    break
                c = s[i]
                if _is_space(c):
                    break
                if c == c'"':
                    quote = 1
                elif c == c"'":
                    quote = 2
                else:
                    current.append(<unsigned char>c)
                i += 1
        args.append(bytes(current))


cdef Py_ssize_t _check_limit(object value, str name, Py_ssize_t low, Py_ssize_t high) except -1:
    if not PyLong_Check(value) or PyBool_Check(value):
        raise InvalidArgument(f"{name} must be an int, got {type(value).__name__}")
    if value < low or value > high:
        raise InvalidArgument(f"{name} must be between {low} and {high}, got {value}")
    return value


cdef void memset_frames(Frame* frames, Py_ssize_t count) noexcept:
    cdef Py_ssize_t level
    for level in range(count):
        frames[level].container = NULL
        frames[level].key = NULL
        frames[level].attribute = NULL
        frames[level].attribute_next = NULL
        frames[level].remaining = 0
        frames[level].index = 0
        frames[level].kind = 0
        frames[level].preallocated = False


# ---------------------------------------------------------------------------
# The parser.
# ---------------------------------------------------------------------------

cdef class _Parser:
    """State and buffering shared by :class:`ReplyParser` and :class:`CommandParser`."""

    # Internal buffer for bytes that must outlive a feed() call.
    cdef char* buffer
    cdef Py_ssize_t buffer_start
    cdef Py_ssize_t buffer_end
    cdef Py_ssize_t buffer_capacity
    # A bytes object parsed in place (zero copy) while the buffer is empty.
    cdef object held
    cdef Py_ssize_t held_position

    cdef Frame* frames
    cdef Py_ssize_t depth
    cdef PyObject* single
    # Bytes of the line at the parse position already known to hold no terminator.
    cdef Py_ssize_t scanned_bytes
    # Bytes consumed by the top-level value still being built.
    cdef Py_ssize_t value_bytes
    cdef long long stream_offset
    cdef object failure
    cdef bint busy
    cdef bint commands
    cdef bint keep_attributes
    cdef object reply_error
    cdef object not_enough_data

    cdef Py_ssize_t bulk_bytes_max
    cdef Py_ssize_t aggregate_length_max
    cdef Py_ssize_t depth_max
    cdef Py_ssize_t line_bytes_max
    cdef Py_ssize_t inline_bytes_max
    cdef Py_ssize_t buffer_bytes_max

    def __cinit__(self, *args, **kwargs):
        self.buffer = NULL
        self.frames = NULL
        self.single = NULL
        self.depth = 0
        self.held = None
        self.failure = None
        self.reply_error = ReplyError
        self.not_enough_data = False

    def __dealloc__(self):
        self._clear_values()
        free(self.frames)
        free(self.buffer)

    cdef int _setup(
        self,
        object bulk_bytes_max,
        object aggregate_length_max,
        object depth_max,
        object line_bytes_max,
        object inline_bytes_max,
        object buffer_bytes_max,
    ) except -1:
        cdef Py_ssize_t big = 2**62
        self.bulk_bytes_max = _check_limit(bulk_bytes_max, "bulk_bytes_max", 0, big)
        self.aggregate_length_max = _check_limit(
            aggregate_length_max, "aggregate_length_max", 0, 2**31 - 1
        )
        self.depth_max = _check_limit(depth_max, "depth_max", 1, _DEPTH_CEILING)
        self.line_bytes_max = _check_limit(line_bytes_max, "line_bytes_max", 1, big)
        self.inline_bytes_max = _check_limit(inline_bytes_max, "inline_bytes_max", 1, big)
        self.buffer_bytes_max = _check_limit(buffer_bytes_max, "buffer_bytes_max", 1, big)
        self._clear_values()
        free(self.frames)
        self.frames = <Frame*>malloc(sizeof(Frame) * (self.depth_max + 1))
        if self.frames == NULL:
            raise MemoryError()
        memset_frames(self.frames, self.depth_max + 1)
        self.buffer_start = 0
        self.buffer_end = 0
        self.held = None
        self.held_position = 0
        self.scanned_bytes = 0
        self.value_bytes = 0
        self.stream_offset = 0
        self.failure = None
        return 0

    cdef void _clear_values(self) noexcept:
        """Drop every partly built value (after an error, or at deallocation)."""
        cdef Py_ssize_t level
        cdef Frame* frame
        if self.frames != NULL:
            for level in range(self.depth_max + 1):
                frame = &self.frames[level]
                Py_XDECREF(frame.container)
                Py_XDECREF(frame.key)
                Py_XDECREF(frame.attribute)
                Py_XDECREF(frame.attribute_next)
                frame.container = NULL
                frame.key = NULL
                frame.attribute = NULL
                frame.attribute_next = NULL
        self.depth = 0
        Py_XDECREF(self.single)
        self.single = NULL

    cdef int _fail(self, str message) except -1:
        """Enter the error state for good and raise ProtocolError."""
        self.failure = message
        self._clear_values()
        self.held = None
        self.buffer_start = 0
        self.buffer_end = 0
        raise ProtocolError(message)

    cdef int _check_usable(self) except -1:
        if self.failure is not None:
            raise ProtocolError(
                f"the parser stopped at an earlier protocol error ({self.failure}); "
                "close the connection and start a new parser"
            )
        if self.frames == NULL:
            raise InvalidArgument("the parser was not initialised")
        if self.busy:
            raise InvalidArgument("the parser was called again while it was parsing")
        return 0

    cdef str _where(self, const char* data, const char* at, const char* end, Py_ssize_t start):
        cdef Py_ssize_t shown = min(end - at, 40)
        cdef bytes snippet = (<char*>at)[:shown]
        return f" at stream offset {self.stream_offset + (at - data - start)}: {snippet!r}"

    @cython.final
    cdef int _reserve(self, Py_ssize_t extra) except -1:
        """Make room for ``extra`` more bytes at the end of the internal buffer."""
        cdef Py_ssize_t used = self.buffer_end - self.buffer_start
        cdef Py_ssize_t capacity
        cdef char* grown
        if self.buffer_end + extra <= self.buffer_capacity:
            return 0
        if self.buffer_start > 0 and used + extra <= self.buffer_capacity:
            # Compaction: the only copy of unparsed bytes, and only of the tail.
            memmove(self.buffer, self.buffer + self.buffer_start, used)
            self.buffer_start = 0
            self.buffer_end = used
            return 0
        capacity = max(_INITIAL_BUFFER_BYTES, self.buffer_capacity * 2, used + extra)
        if self.buffer_start > 0:
            memmove(self.buffer, self.buffer + self.buffer_start, used)
            self.buffer_start = 0
            self.buffer_end = used
        grown = <char*>realloc(self.buffer, capacity)
        if grown == NULL:
            raise MemoryError()
        self.buffer = grown
        self.buffer_capacity = capacity
        return 0

    @cython.final
    cdef int _append(self, const char* data, Py_ssize_t length) except -1:
        self._reserve(length)
        memcpy(self.buffer + self.buffer_end, data, length)
        self.buffer_end += length
        return 0

    @property
    def buffered_bytes(self):
        """Bytes fed but not yet parsed into values."""
        if self.held is not None:
            return PyBytes_GET_SIZE(self.held) - self.held_position
        return self.buffer_end - self.buffer_start

    @property
    def error(self):
        """The message of the protocol error that stopped the parser, or None."""
        return self.failure

    def feed(self, data):
        """Add bytes received from the peer; any split of the stream is fine.

        ``bytes`` are parsed in place without a copy when nothing is buffered;
        other buffers (bytearray, memoryview) are copied, since their owner may
        reuse them.
        """
        cdef Py_buffer view
        cdef Py_ssize_t length
        cdef Py_ssize_t pending
        self._check_usable()
        if PyBytes_CheckExact(data):
            length = PyBytes_GET_SIZE(data)
        else:
            if not PyObject_CheckBuffer(data):
                raise InvalidArgument(
                    f"feed() takes bytes or a bytes-like object, got {type(data).__name__}"
                )
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            length = view.len
            PyBuffer_Release(&view)
        if length == 0:
            return
        pending = self.buffered_bytes + self.value_bytes + length
        if pending > self.buffer_bytes_max:
            self._fail(
                f"{pending} bytes would be buffered for values not yet read, past "
                f"buffer_bytes_max={self.buffer_bytes_max}; read values out more often "
                "or raise the limit"
            )
        if PyBytes_CheckExact(data) and self.held is None and self.buffer_end == self.buffer_start:
            self.held = data
            self.held_position = 0
            return
        if self.held is not None:
            # More bytes after a zero-copy chunk: copy only its unparsed tail.
            self._append(
                PyBytes_AS_STRING(self.held) + self.held_position,
                PyBytes_GET_SIZE(self.held) - self.held_position,
            )
            self.held = None
            self.held_position = 0
        if PyBytes_CheckExact(data):
            self._append(PyBytes_AS_STRING(data), length)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                self._append(<const char*>view.buf, view.len)
            finally:
                PyBuffer_Release(&view)

    @cython.final
    cdef Py_ssize_t _run(self, list out, Py_ssize_t values_max) except -1:
        """Parse up to ``values_max`` complete values from what is buffered."""
        cdef const char* data
        cdef Py_ssize_t length
        cdef Py_ssize_t start
        cdef Py_ssize_t stop
        cdef object keep
        cdef int gc_was_enabled
        self._check_usable()
        if self.held is not None:
            keep = self.held
            data = PyBytes_AS_STRING(keep)
            length = PyBytes_GET_SIZE(keep)
            start = self.held_position
        else:
            data = self.buffer
            length = self.buffer_end
            start = self.buffer_start
        if start >= length:
            return 0
        self.busy = True
        # No garbage is made while parsing (every object is referenced from the
        # result or the frame stack), so the cyclic GC is paused: otherwise
        # every 700 new lists would trigger a pass over the values just built.
        # The one pass that follows covers them all at once.
        gc_was_enabled = PyGC_Disable()
        try:
            if self.commands:
                stop = self._parse_commands(data, length, start, out, values_max)
            else:
                stop = self._parse_replies(data, length, start, out, values_max)
        except ProtocolError:
            self.busy = False
            if gc_was_enabled:
                PyGC_Enable()
            if out:
                # Values completed before the error are the peer's valid
                # requests or replies: hand them out now; the parser stays
                # stopped and the next call raises.
                return 0
            raise
        except BaseException as exc:
            self.busy = False
            if gc_was_enabled:
                PyGC_Enable()
            if self.failure is None:
                # An exception from a callback or from memory: the partial
                # state can no longer be trusted.
                self.failure = f"{type(exc).__name__}: {exc}"
                self._clear_values()
                self.held = None
                self.buffer_start = 0
                self.buffer_end = 0
            raise
        self.busy = False
        if gc_was_enabled:
            PyGC_Enable()
        self.stream_offset += stop - start
        if self.held is not None:
            if stop >= length:
                self.held = None
                self.held_position = 0
            else:
                self.held_position = stop
        else:
            self.buffer_start = stop
            if stop >= self.buffer_end:
                self.buffer_start = 0
                self.buffer_end = 0
                if self.buffer_capacity > _KEEP_BUFFER_BYTES:
                    # Give back the memory of a large value once it is parsed.
                    free(self.buffer)
                    self.buffer = NULL
                    self.buffer_capacity = 0
        return 0

    def gets(self):
        """Return the next complete value, or ``not_enough_data`` (default False)."""
        cdef object value
        self._run(None, 1)
        if self.single == NULL:
            return self.not_enough_data
        value = <object>self.single
        Py_DECREF(value)
        self.single = NULL
        return value

    def read_all(self):
        """Return every complete value buffered so far, in order (maybe none)."""
        cdef list out = []
        self._run(out, 2**62)
        return out

    def parse(self, data):
        """``feed(data)`` then ``read_all()`` in one call."""
        cdef list out = []
        self.feed(data)
        self._run(out, 2**62)
        return out

    # -- shared pieces of the state machine ---------------------------------

    @cython.final
    cdef PyObject* _annotate(self, PyObject* value, PyObject* attribute) except NULL:
        """Attach attributes to a value (steals both references)."""
        cdef object wrapped
        if not self.keep_attributes:
            Py_DECREF(<object>attribute)
            return value
        wrapped = Attributed(<object>value, <object>attribute)
        Py_DECREF(<object>value)
        Py_DECREF(<object>attribute)
        Py_INCREF(wrapped)
        return <PyObject*>wrapped

    @cython.final
    cdef int _pend_attribute(self, Frame* parent, PyObject* attribute) except -1:
        """Hold attributes for the next value at ``parent``'s level (steals)."""
        cdef int status
        if parent.attribute_next == NULL:
            parent.attribute_next = attribute
            return 0
        # Two attribute maps in a row annotate the same value: merge them.
        status = PyDict_Update(parent.attribute_next, attribute)
        Py_DECREF(<object>attribute)
        if status < 0:
            return -1
        return 0

    @cython.final
    cdef int _emit(self, PyObject* value, list out) except -1:
        """Place a complete value (steals it) into the open aggregate, closing
        every aggregate it completes. Returns 1 when a top-level value came out."""
        cdef Frame* frame
        cdef PyObject* attribute
        cdef PyObject* key
        cdef int kind
        cdef int status
        cdef object pushed
        while True:
            frame = &self.frames[self.depth]
            if frame.attribute_next != NULL:
                attribute = frame.attribute_next
                frame.attribute_next = NULL
                value = self._annotate(value, attribute)
            if self.depth == 0:
                if out is None:
                    self.single = value
                else:
                    status = PyList_Append(<PyObject*>out, value)
                    Py_DECREF(<object>value)
                    if status < 0:
                        return -1
                return 1
            kind = frame.kind
            if kind == K_MAP or kind == K_ATTRIBUTE:
                if frame.key == NULL:
                    frame.key = value
                else:
                    key = frame.key
                    frame.key = NULL
                    status = PyDict_SetItem(frame.container, key, value)
                    Py_DECREF(<object>value)
                    if status < 0:
                        if PyErr_ExceptionMatches(PyExc_TypeError):
                            PyErr_Clear()
                            message = (
                                f"a map key of type {type(<object>key).__name__} "
                                "is not hashable, so it cannot be a dict key"
                            )
                            Py_DECREF(<object>key)
                            self._fail(message)
                        Py_DECREF(<object>key)
                        return -1
                    Py_DECREF(<object>key)
            elif frame.preallocated:
                PyList_SET_ITEM(frame.container, frame.index, value)
                frame.index += 1
            else:
                status = PyList_Append(frame.container, value)
                Py_DECREF(<object>value)
                if status < 0:
                    return -1
            frame.remaining -= 1
            if frame.remaining > 0:
                return 0
            # The aggregate is complete: pop it and hand it to its parent.
            value = frame.container
            frame.container = NULL
            attribute = frame.attribute
            frame.attribute = NULL
            self.depth -= 1
            if kind == K_ATTRIBUTE:
                # Attributes are not an element of the parent; they annotate
                # the value that follows at the parent's level.
                self._pend_attribute(&self.frames[self.depth], value)
                Py_XDECREF(attribute)
                return 0
            if kind == K_PUSH:
                pushed = Push(<object>value)
                Py_DECREF(<object>value)
                Py_INCREF(pushed)
                value = <PyObject*>pushed
            if attribute != NULL:
                value = self._annotate(value, attribute)

    @cython.final
    cdef int _open(self, int kind, Py_ssize_t count, Py_ssize_t available) except -1:
        """Push a frame for an aggregate of ``count`` elements (count > 0).

        A list is preallocated only when the bytes already received could hold
        all of its elements (each takes at least 3 bytes), so a declared count
        alone never makes the parser allocate."""
        cdef Frame* frame = &self.frames[self.depth + 1]
        cdef Frame* parent = &self.frames[self.depth]
        cdef PyObject* container
        cdef bint preallocated = False
        if kind == K_MAP or kind == K_ATTRIBUTE:
            container = PyDict_New()
        elif count <= available // 3:
            container = PyList_New(count)
            preallocated = True
        else:
            container = PyList_New(0)
        if container == NULL:
            return -1
        frame.container = container
        frame.key = NULL
        frame.attribute_next = NULL
        frame.index = 0
        frame.kind = kind
        frame.preallocated = preallocated
        frame.remaining = count * 2 if (kind == K_MAP or kind == K_ATTRIBUTE) else count
        if kind == K_ATTRIBUTE:
            frame.attribute = NULL
        else:
            frame.attribute = parent.attribute_next
            parent.attribute_next = NULL
        self.depth += 1
        return 0

    @cython.final
    cdef PyObject* _reply_error(self, const char* text, Py_ssize_t length) except NULL:
        cdef PyObject* message = PyUnicode_DecodeUTF8(text, length, "replace")
        cdef PyObject* error
        if message == NULL:
            return NULL
        error = PyObject_CallOneArg(<PyObject*>self.reply_error, message)
        Py_DECREF(<object>message)
        return error

    # -- replies -------------------------------------------------------------

    @cython.final
    cdef Py_ssize_t _parse_replies(
        self, const char* data, Py_ssize_t length, Py_ssize_t start, list out, Py_ssize_t values_max
    ) except -1:
        cdef const char* p = data + start
        cdef const char* end = data + length
        cdef const char* segment = p
        cdef const char* mark
        cdef const char* after = NULL
        cdef const char* cr
        cdef const char* line
        cdef Py_ssize_t line_length
        cdef Py_ssize_t produced = 0
        cdef Py_ssize_t count
        cdef Py_ssize_t scan_from
        cdef int64_t number = 0
        cdef int code
        cdef int kind
        cdef char kind_byte
        cdef PyObject* value
        cdef double real
        cdef char* real_end
        cdef char number_text[512]
        cdef object big
        cdef Frame* frame
        cdef int status

        while produced < values_max and p < end:
            mark = p
            kind_byte = p[0]
            value = NULL

            if kind_byte == c'$' or kind_byte == c'=' or kind_byte == c'!':
                code = _read_int(p + 1, end, &number, &after)
                if code == INT_INCOMPLETE:
                    break
                if code < 0:
                    self._fail("bad bulk length: the length " + _int_problem(code)
                               + self._where(data, mark, end, start))
                if number < 0:
                    if number == -1 and kind_byte == c'$':
                        Py_INCREF(None)
                        value = <PyObject*>None
                        p = after
                    else:
                        self._fail(f"bad bulk length {number}: only $-1 may be negative"
                                   + self._where(data, mark, end, start))
                else:
                    if number > self.bulk_bytes_max:
                        self._fail(f"bulk length {number} is past bulk_bytes_max="
                                   f"{self.bulk_bytes_max}" + self._where(data, mark, end, start))
                    if end - after < number + 2:
                        break
                    if after[number] != c'\r' or after[number + 1] != c'\n':
                        self._fail(f"a bulk string of declared length {number} is not "
                                   "followed by CRLF" + self._where(data, mark, end, start))
                    if kind_byte == c'$':
                        value = PyBytes_FromStringAndSize(after, number)
                    elif kind_byte == c'=':
                        if number < 4 or after[3] != c':':
                            self._fail("a verbatim string must start with a 3-byte format "
                                       "and ':'" + self._where(data, mark, end, start))
                        value = PyBytes_FromStringAndSize(after + 4, number - 4)
                    else:
                        value = self._reply_error(after, number)
                    if value == NULL:
                        return -1
                    p = after + number + 2

            elif kind_byte == c':':
                code = _read_int(p + 1, end, &number, &after)
                if code == INT_INCOMPLETE:
                    break
                if code < 0:
                    self._fail("bad integer reply: the value " + _int_problem(code)
                               + self._where(data, mark, end, start))
                if 0 <= number < INT_CACHE_SIZE:
                    value = _int_cache[number]
                    Py_INCREF(<object>value)
                else:
                    value = PyLong_FromLongLong(number)
                    if value == NULL:
                        return -1
                p = after

            elif (kind_byte == c'*' or kind_byte == c'%' or kind_byte == c'~'
                    or kind_byte == c'>' or kind_byte == c'|'):
                code = _read_int(p + 1, end, &number, &after)
                if code == INT_INCOMPLETE:
                    break
                if code < 0:
                    self._fail("bad aggregate length: the length " + _int_problem(code)
                               + self._where(data, mark, end, start))
                if kind_byte == c'*':
                    kind = K_ARRAY
                elif kind_byte == c'%':
                    kind = K_MAP
                elif kind_byte == c'~':
                    kind = K_SET
                elif kind_byte == c'>':
                    kind = K_PUSH
                else:
                    kind = K_ATTRIBUTE
                if number < 0:
                    if number == -1 and kind == K_ARRAY:
                        Py_INCREF(None)
                        value = <PyObject*>None
                        p = after
                    else:
                        self._fail(f"bad aggregate length {number}: only *-1 may be negative"
                                   + self._where(data, mark, end, start))
                elif number > self.aggregate_length_max:
                    self._fail(f"aggregate length {number} is past aggregate_length_max="
                               f"{self.aggregate_length_max}" + self._where(data, mark, end, start))
                elif number == 0:
                    p = after
                    if kind == K_MAP or kind == K_ATTRIBUTE:
                        value = PyDict_New()
                    else:
                        value = PyList_New(0)
                    if value == NULL:
                        return -1
                    if kind == K_PUSH:
                        big = Push()
                        Py_DECREF(<object>value)
                        Py_INCREF(big)
                        value = <PyObject*>big
                    elif kind == K_ATTRIBUTE:
                        self._pend_attribute(&self.frames[self.depth], value)
                        value = NULL
                        continue
                else:
                    if self.depth >= self.depth_max:
                        self._fail(f"aggregates nest deeper than depth_max={self.depth_max}"
                                   + self._where(data, mark, end, start))
                    p = after
                    self._open(kind, number, end - after)
                    continue

            elif (kind_byte == c'+' or kind_byte == c'-' or kind_byte == c','
                    or kind_byte == c'(' or kind_byte == c'_' or kind_byte == c'#'):
                # A line: find its CR, resuming where the last attempt stopped.
                line = p + 1
                scan_from = self.scanned_bytes
                cr = <const char*>memchr(line + scan_from, c'\r', end - line - scan_from)
                if cr == NULL or cr + 1 >= end:
                    line_length = (end - line) if cr == NULL else (cr - line)
                    if line_length > self.line_bytes_max:
                        self._fail(f"a line is longer than line_bytes_max={self.line_bytes_max}"
                                   + self._where(data, mark, end, start))
                    self.scanned_bytes = line_length
                    break
                self.scanned_bytes = 0
                line_length = cr - line
                if line_length > self.line_bytes_max:
                    self._fail(f"a line is longer than line_bytes_max={self.line_bytes_max}"
                               + self._where(data, mark, end, start))
                if cr[1] != c'\n':
                    self._fail("a CR is not followed by LF" + self._where(data, mark, end, start))
                if kind_byte == c'+':
                    if memchr(line, c'\n', line_length) != NULL:
                        self._fail("a simple string contains LF" + self._where(data, mark, end, start))
                    if line_length == 2 and line[0] == c'O' and line[1] == c'K':
                        value = <PyObject*>_OK
                        Py_INCREF(_OK)
                    elif line_length == 4 and line[0] == c'P' and line[1] == c'O' and line[2] == c'N' and line[3] == c'G':
                        value = <PyObject*>_PONG
                        Py_INCREF(_PONG)
                    elif line_length == 6 and memcmp(line, b"QUEUED", 6) == 0:
                        value = <PyObject*>_QUEUED
                        Py_INCREF(_QUEUED)
                    else:
                        value = PyBytes_FromStringAndSize(line, line_length)
                elif kind_byte == c'-':
                    if memchr(line, c'\n', line_length) != NULL:
                        self._fail("an error reply contains LF" + self._where(data, mark, end, start))
                    value = self._reply_error(line, line_length)
                elif kind_byte == c'_':
                    if line_length != 0:
                        self._fail("a RESP3 null must be '_' then CRLF" + self._where(data, mark, end, start))
                    Py_INCREF(None)
                    value = <PyObject*>None
                elif kind_byte == c'#':
                    if line_length != 1 or (line[0] != c't' and line[0] != c'f'):
                        self._fail("a RESP3 boolean must be #t or #f" + self._where(data, mark, end, start))
                    if line[0] == c't':
                        value = <PyObject*>_TRUE
                    else:
                        value = <PyObject*>_FALSE
                    Py_INCREF(<object>value)
                elif kind_byte == c',':
                    if line_length == 0 or line_length >= 512 or _is_space(line[0]):
                        self._fail("bad double: empty, longer than 511 bytes or padded"
                                   + self._where(data, mark, end, start))
                    memcpy(number_text, line, line_length)
                    number_text[line_length] = 0
                    real = PyOS_string_to_double(number_text, &real_end, NULL)
                    if PyErr_Occurred() != NULL or real_end != number_text + line_length:
                        PyErr_Clear()
                        self._fail("bad double: not a decimal floating point number, inf or nan"
                                   + self._where(data, mark, end, start))
                    value = PyFloat_FromDouble(real)
                else:
                    # A big number: an optional minus and at least one digit.
                    count = 1 if (line_length > 0 and line[0] == c'-') else 0
                    if count == line_length:
                        self._fail("bad big number: no digits" + self._where(data, mark, end, start))
                    while count < line_length:
                        if not _is_digit(line[count]):
                            self._fail("bad big number: not a decimal integer"
                                       + self._where(data, mark, end, start))
                        count += 1
                    try:
                        big = int((<char*>line)[:line_length])
                    except ValueError as exc:
                        self._fail(f"bad big number: {exc}" + self._where(data, mark, end, start))
                    Py_INCREF(big)
                    value = <PyObject*>big
                if value == NULL:
                    return -1
                p = cr + 2

            else:
                self._fail(f"unknown reply type byte {bytes([<unsigned char>kind_byte])!r}"
                           + self._where(data, mark, end, start))

            # Fast paths for the commonest placements; _emit handles the rest.
            frame = &self.frames[self.depth]
            if frame.attribute_next == NULL:
                if self.depth == 0 and out is not None:
                    status = PyList_Append(<PyObject*>out, value)
                    Py_DECREF(<object>value)
                    if status < 0:
                        return -1
                    produced += 1
                    self.value_bytes = 0
                    segment = p
                    continue
                if frame.preallocated and frame.remaining > 1:
                    PyList_SET_ITEM(frame.container, frame.index, value)
                    frame.index += 1
                    frame.remaining -= 1
                    continue
            if self._emit(value, out):
                produced += 1
                self.value_bytes = 0
                segment = p

        if self.depth > 0 or self.frames[0].attribute_next != NULL:
            self.value_bytes += p - segment
        return p - data

    # -- commands -------------------------------------------------------------

    @cython.final
    cdef Py_ssize_t _parse_commands(
        self, const char* data, Py_ssize_t length, Py_ssize_t start, list out, Py_ssize_t values_max
    ) except -1:
        cdef const char* p = data + start
        cdef const char* end = data + length
        cdef const char* segment = p
        cdef const char* mark
        cdef const char* after = NULL
        cdef const char* newline
        cdef Py_ssize_t produced = 0
        cdef Py_ssize_t scan_from
        cdef Py_ssize_t line_length
        cdef int64_t number = 0
        cdef int code
        cdef PyObject* value
        cdef object arguments
        cdef Frame* frame

        while produced < values_max and p < end:
            mark = p
            if self.depth == 0:
                if p[0] == c'*':
                    code = _read_int(p + 1, end, &number, &after)
                    if code == INT_INCOMPLETE:
                        if end - p > self.line_bytes_max:
                            self._fail("a command header line is too long"
                                       + self._where(data, mark, end, start))
                        break
                    if code < 0:
                        self._fail("bad command length: the length " + _int_problem(code)
                                   + self._where(data, mark, end, start))
                    if number < -1:
                        self._fail(f"bad command length {number}"
                                   + self._where(data, mark, end, start))
                    if number > self.aggregate_length_max:
                        self._fail(f"command length {number} is past aggregate_length_max="
                                   f"{self.aggregate_length_max}" + self._where(data, mark, end, start))
                    p = after
                    if number <= 0:
                        # redis-server ignores *0 and *-1: no command, no reply.
                        segment = p
                        continue
                    self._open(K_ARRAY, number, end - after)
                    continue
                # An inline command: one line of whitespace-separated arguments.
                scan_from = self.scanned_bytes
                newline = <const char*>memchr(p + scan_from, c'\n', end - p - scan_from)
                if newline == NULL:
                    if end - p > self.inline_bytes_max:
                        self._fail(f"an inline command is longer than inline_bytes_max="
                                   f"{self.inline_bytes_max}" + self._where(data, mark, end, start))
                    self.scanned_bytes = end - p
                    break
                self.scanned_bytes = 0
                line_length = newline - p
                if line_length > self.inline_bytes_max:
                    self._fail(f"an inline command is longer than inline_bytes_max="
                               f"{self.inline_bytes_max}" + self._where(data, mark, end, start))
                if line_length > 0 and p[line_length - 1] == c'\r':
                    line_length -= 1
                arguments = _split_inline(p, line_length)
                if arguments is None:
                    self._fail("unbalanced quotes in an inline command"
                               + self._where(data, mark, end, start))
                p = newline + 1
                if not arguments:
                    segment = p
                    continue
                Py_INCREF(arguments)
                value = <PyObject*>arguments
            else:
                if p[0] != c'$':
                    self._fail(f"expected '$' for a command argument, got "
                               f"{bytes([<unsigned char>p[0]])!r}" + self._where(data, mark, end, start))
                code = _read_int(p + 1, end, &number, &after)
                if code == INT_INCOMPLETE:
                    break
                if code < 0 or number < 0:
                    self._fail("bad argument length: the length "
                               + (_int_problem(code) if code < 0 else "is negative")
                               + self._where(data, mark, end, start))
                if number > self.bulk_bytes_max:
                    self._fail(f"argument length {number} is past bulk_bytes_max="
                               f"{self.bulk_bytes_max}" + self._where(data, mark, end, start))
                if end - after < number + 2:
                    break
                if after[number] != c'\r' or after[number + 1] != c'\n':
                    self._fail(f"an argument of declared length {number} is not followed by CRLF"
                               + self._where(data, mark, end, start))
                value = PyBytes_FromStringAndSize(after, number)
                if value == NULL:
                    return -1
                p = after + number + 2
                # Fast path: an argument that does not complete its command.
                frame = &self.frames[1]
                if frame.preallocated and frame.remaining > 1:
                    PyList_SET_ITEM(frame.container, frame.index, value)
                    frame.index += 1
                    frame.remaining -= 1
                    continue
            if self._emit(value, out):
                produced += 1
                self.value_bytes = 0
                segment = p

        if self.depth > 0:
            self.value_bytes += p - segment
        return p - data


cdef int _configure(
    _Parser parser, bint commands, object bulk_bytes_max, object aggregate_length_max,
    object depth_max, object line_bytes_max, object inline_bytes_max,
    object buffer_bytes_max, object reply_error, object not_enough_data,
    object keep_attributes,
) except -1:
    parser._setup(bulk_bytes_max, aggregate_length_max, depth_max, line_bytes_max,
                  inline_bytes_max, buffer_bytes_max)
    parser.commands = commands
    parser.reply_error = reply_error
    parser.not_enough_data = not_enough_data
    parser.keep_attributes = bool(keep_attributes)
    return 0


class ReplyParser(_Parser):
    """A sans-IO parser of RESP2 and RESP3 replies (the client side)."""

    __slots__ = ()

    def __init__(
        self,
        *,
        bulk_bytes_max=BULK_BYTES_MAX,
        aggregate_length_max=AGGREGATE_LENGTH_MAX,
        depth_max=DEPTH_MAX,
        line_bytes_max=LINE_BYTES_MAX,
        buffer_bytes_max=BUFFER_BYTES_MAX,
        reply_error=ReplyError,
        not_enough_data=False,
        keep_attributes=False,
    ):
        if not callable(reply_error):
            raise InvalidArgument("reply_error must be callable with the error message")
        _configure(self, False, bulk_bytes_max, aggregate_length_max, depth_max,
                   line_bytes_max, INLINE_BYTES_MAX, buffer_bytes_max, reply_error,
                   not_enough_data, keep_attributes)


class CommandParser(_Parser):
    """A sans-IO parser of client commands (the server side): RESP arrays of
    bulk strings and inline commands, each returned as a list of bytes."""

    __slots__ = ()

    def __init__(
        self,
        *,
        bulk_bytes_max=BULK_BYTES_MAX,
        aggregate_length_max=AGGREGATE_LENGTH_MAX,
        inline_bytes_max=INLINE_BYTES_MAX,
        buffer_bytes_max=BUFFER_BYTES_MAX,
        not_enough_data=False,
    ):
        _configure(self, True, bulk_bytes_max, aggregate_length_max, 1, LINE_BYTES_MAX,
                   inline_bytes_max, buffer_bytes_max, ReplyError, not_enough_data, False)


# ---------------------------------------------------------------------------
# Encoders.
# ---------------------------------------------------------------------------

cdef struct Writer:
    char* data
    Py_ssize_t size
    Py_ssize_t capacity


cdef int _grow(Writer* writer, Py_ssize_t extra) except -1:
    cdef Py_ssize_t capacity = max(256, writer.capacity * 2, writer.size + extra)
    cdef char* grown = <char*>realloc(writer.data, capacity)
    if grown == NULL:
        raise MemoryError()
    writer.data = grown
    writer.capacity = capacity
    return 0


cdef inline int _put(Writer* writer, const char* text, Py_ssize_t length) except -1:
    if writer.size + length > writer.capacity:
        _grow(writer, length)
    memcpy(writer.data + writer.size, text, length)
    writer.size += length
    return 0


cdef inline int _decimal(char* digits, long long value) noexcept nogil:
    """Write ``value`` at the end of a 24-byte buffer; return where it starts."""
    cdef int at = 24
    cdef unsigned long long magnitude
    cdef bint negative = value < 0
    if negative:
        magnitude = <unsigned long long>(-(value + 1)) + 1
    else:
        magnitude = <unsigned long long>value
    while True:
        at -= 1
        digits[at] = <char>(c'0' + magnitude % 10)
        magnitude //= 10
        if magnitude == 0:
            break
    if negative:
        at -= 1
        digits[at] = c'-'
    return at


cdef inline int _put_decimal(Writer* writer, long long value) except -1:
    cdef char digits[24]
    cdef int at = _decimal(digits, value)
    return _put(writer, digits + at, 24 - at)


cdef inline int _put_header(Writer* writer, char kind, long long value) except -1:
    if writer.size + 24 > writer.capacity:
        _grow(writer, 24)
    writer.data[writer.size] = kind
    writer.size += 1
    _put_decimal(writer, value)
    writer.data[writer.size] = c'\r'
    writer.data[writer.size + 1] = c'\n'
    writer.size += 2
    return 0


cdef inline int _put_bulk(Writer* writer, const char* text, Py_ssize_t length) except -1:
    if length > BULK_BYTES_MAX:
        raise LimitExceeded(
            f"a bulk string of {length} bytes is past the {BULK_BYTES_MAX}-byte "
            "proto-max-bulk-len that servers accept"
        )
    _put_header(writer, c'$', length)
    if writer.size + length + 2 > writer.capacity:
        _grow(writer, length + 2)
    memcpy(writer.data + writer.size, text, length)
    writer.data[writer.size + length] = c'\r'
    writer.data[writer.size + length + 1] = c'\n'
    writer.size += length + 2
    return 0


cdef int _put_buffer_bulk(Writer* writer, object value) except -1:
    cdef Py_buffer view
    PyObject_GetBuffer(value, &view, PyBUF_SIMPLE)
    try:
        _put_bulk(writer, <const char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef int _put_argument(Writer* writer, object argument) except -1:
    """One command argument as a bulk string."""
    cdef Py_ssize_t length
    cdef const char* text
    cdef int overflow = 0
    cdef long long number
    cdef char digits[24]
    cdef int at
    if PyBytes_Check(argument):
        _put_bulk(writer, PyBytes_AS_STRING(argument), PyBytes_GET_SIZE(argument))
    elif PyUnicode_Check(argument):
        try:
            text = PyUnicode_AsUTF8AndSize(argument, &length)
        except UnicodeEncodeError as exc:
            raise InvalidArgument(f"a str argument is not encodable as UTF-8: {exc}") from None
        _put_bulk(writer, text, length)
    elif PyLong_Check(argument) and not PyBool_Check(argument):
        number = PyLong_AsLongLongAndOverflow(argument, &overflow)
        if overflow == 0:
            at = _decimal(digits, number)
            _put_bulk(writer, digits + at, 24 - at)
        else:
            _put_argument(writer, int.__repr__(argument).encode())
    elif PyFloat_Check(argument):
        _put_argument(writer, float.__repr__(argument).encode())
    elif PyBool_Check(argument) or argument is None:
        raise InvalidArgument(
            f"cannot send {argument!r} as a command argument: write b'1'/b'0' or b'' "
            "explicitly, the meaning of bool and None is ambiguous"
        )
    elif PyObject_CheckBuffer(argument):
        _put_buffer_bulk(writer, argument)
    else:
        raise InvalidArgument(
            f"cannot send a {type(argument).__name__} as a command argument: "
            "use bytes, str, int or float"
        )
    return 0


cdef int _put_command(Writer* writer, object arguments) except -1:
    cdef Py_ssize_t count = len(arguments)
    if count == 0:
        raise InvalidArgument("a command needs at least one argument (its name)")
    _put_header(writer, c'*', count)
    for argument in arguments:
        _put_argument(writer, argument)
    return 0


cdef bytes _take(Writer* writer):
    cdef bytes result
    try:
        result = (<char*>writer.data)[:writer.size] if writer.size else _EMPTY
    finally:
        free(writer.data)
        writer.data = NULL
    return result


def encode_command(*arguments):
    """Encode one command (its name, then its arguments) as a RESP array of bulk strings."""
    cdef Writer writer
    writer.data = NULL
    writer.size = 0
    writer.capacity = 0
    try:
        _put_command(&writer, arguments)
    except BaseException:
        free(writer.data)
        raise
    return _take(&writer)


def encode_commands(commands):
    """Encode many commands (a pipeline) into one buffer, to send in one write."""
    cdef Writer writer
    writer.data = NULL
    writer.size = 0
    writer.capacity = 0
    try:
        for command in commands:
            if PyBytes_Check(command) or PyUnicode_Check(command):
                raise InvalidArgument(
                    "encode_commands() takes an iterable of commands, each a sequence of "
                    "arguments; got a bare bytes or str"
                )
            _put_command(&writer, command)
    except BaseException:
        free(writer.data)
        raise
    return _take(&writer)


cdef int _put_line(Writer* writer, char kind, object text, str what) except -1:
    cdef const char* data
    cdef Py_ssize_t length
    if PyUnicode_Check(text):
        text = (<str>text).encode("utf-8", "replace")
    data = PyBytes_AS_STRING(text)
    length = PyBytes_GET_SIZE(text)
    if memchr(data, c'\r', length) != NULL or memchr(data, c'\n', length) != NULL:
        raise InvalidArgument(f"{what} cannot contain CR or LF: {text[:60]!r}")
    _put(writer, &kind, 1)
    _put(writer, data, length)
    _put(writer, b"\r\n", 2)
    return 0


cdef int _put_reply(Writer* writer, object value, int protocol, int depth) except -1:
    cdef Py_ssize_t length
    cdef const char* text
    cdef int overflow = 0
    cdef long long number
    cdef bytes encoded
    if depth > DEPTH_MAX:
        raise LimitExceeded(
            f"the reply nests deeper than {DEPTH_MAX} levels (or contains itself)"
        )
    if value is None:
        if protocol == 3:
            _put(writer, b"_\r\n", 3)
        else:
            _put(writer, b"$-1\r\n", 5)
    elif PyBool_Check(value):
        if protocol == 3:
            if value:
                _put(writer, b"#t\r\n", 4)
            else:
                _put(writer, b"#f\r\n", 4)
        elif value:
            _put(writer, b":1\r\n", 4)
        else:
            _put(writer, b":0\r\n", 4)
    elif PyBytes_CheckExact(value):
        _put_bulk(writer, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
    elif isinstance(value, SimpleString):
        _put_line(writer, c'+', value, "a simple string")
    elif PyBytes_Check(value):
        _put_bulk(writer, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
    elif PyUnicode_Check(value):
        try:
            text = PyUnicode_AsUTF8AndSize(value, &length)
        except UnicodeEncodeError as exc:
            raise InvalidArgument(f"a str reply is not encodable as UTF-8: {exc}") from None
        _put_bulk(writer, text, length)
    elif PyLong_Check(value):
        number = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0:
            _put_header(writer, c':', number)
        else:
            encoded = int.__repr__(value).encode()
            if protocol == 3:
                _put_line(writer, c'(', encoded, "a big number")
            else:
                # RESP2 has no big numbers; Redis sends them as bulk strings.
                _put_bulk(writer, encoded, len(encoded))
    elif PyFloat_Check(value):
        encoded = float.__repr__(value).encode()
        if protocol == 3:
            _put_line(writer, c',', encoded, "a double")
        else:
            _put_bulk(writer, encoded, len(encoded))
    elif isinstance(value, ReplyError):
        message = str(value).encode("utf-8", "replace")
        if b"\r" in message or b"\n" in message:
            if protocol != 3:
                raise InvalidArgument("a RESP2 error reply cannot contain CR or LF")
            _put_header(writer, c'!', len(message))
            _put(writer, message, len(message))
            _put(writer, b"\r\n", 2)
        else:
            _put_line(writer, c'-', message, "an error reply")
    elif isinstance(value, Push):
        _put_header(writer, c'>' if protocol == 3 else c'*', len(value))
        for item in value:
            _put_reply(writer, item, protocol, depth + 1)
    elif PyList_Check(value) or PyTuple_Check(value):
        _put_header(writer, c'*', len(value))
        for item in value:
            _put_reply(writer, item, protocol, depth + 1)
    elif PyDict_Check(value):
        if protocol == 3:
            _put_header(writer, c'%', len(value))
        else:
            # RESP2 has no maps; Redis flattens them into key, value, ... arrays.
            _put_header(writer, c'*', 2 * len(value))
        for key, item in (<dict>value).items():
            _put_reply(writer, key, protocol, depth + 1)
            _put_reply(writer, item, protocol, depth + 1)
    elif PyAnySet_Check(value):
        _put_header(writer, c'~' if protocol == 3 else c'*', len(value))
        for item in value:
            _put_reply(writer, item, protocol, depth + 1)
    elif isinstance(value, Attributed):
        if protocol == 3:
            attributes = (<object>value).attributes
            if not PyDict_Check(attributes):
                raise InvalidArgument("Attributed.attributes must be a dict")
            _put_header(writer, c'|', len(attributes))
            for key, item in attributes.items():
                _put_reply(writer, key, protocol, depth + 1)
                _put_reply(writer, item, protocol, depth + 1)
        _put_reply(writer, (<object>value).value, protocol, depth + 1)
    elif PyObject_CheckBuffer(value):
        _put_buffer_bulk(writer, value)
    else:
        raise InvalidArgument(f"cannot encode a {type(value).__name__} as a RESP reply")
    return 0


cdef int _check_protocol(object protocol) except -1:
    if protocol != 2 and protocol != 3:
        raise InvalidArgument(f"protocol must be 2 or 3, got {protocol!r}")
    return protocol


def encode_reply(value, protocol=2):
    """Encode one reply; ``protocol`` 3 uses RESP3 types, 2 their RESP2 forms."""
    cdef int version = _check_protocol(protocol)
    cdef Writer writer
    writer.data = NULL
    writer.size = 0
    writer.capacity = 0
    try:
        _put_reply(&writer, value, version, 0)
    except BaseException:
        free(writer.data)
        raise
    return _take(&writer)


def encode_replies(values, protocol=2):
    """Encode many replies into one buffer (the answers to a pipeline)."""
    cdef int version = _check_protocol(protocol)
    cdef Writer writer
    writer.data = NULL
    writer.size = 0
    writer.capacity = 0
    try:
        for value in values:
            _put_reply(&writer, value, version, 0)
    except BaseException:
        free(writer.data)
        raise
    return _take(&writer)
