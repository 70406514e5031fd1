# cython: language_level=3
# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: auto_pickle=False, autotestdict=False
"""FIX 4.4 tag=value codec: a sans-IO framing parser and encoders.

The public, documented face of this module is :mod:`sdi.exchange.fix`; this
file is the implementation. The parser frames messages by BodyLength and
CheckSum before it looks at a single field, so a message is either handed out
whole, reported as garbled and dropped, or (when the peer's bytes cannot be
trusted any more) refused with ``ProtocolError``. Bytes may arrive in any
split; the result never depends on the split, because nothing is decided
until a whole message, or a byte that settles the question, is buffered.
"""

cimport cython
from libc.stdint cimport uint8_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memchr, memcmp, memcpy, memmove

from sdi.errors import InvalidArgument, LimitExceeded, ProtocolError

cdef extern from "Python.h":
    char* PyBytes_AS_STRING(object o)
    Py_ssize_t PyBytes_GET_SIZE(object o)
    bint PyBytes_Check(object o)
    bint PyUnicode_Check(object o)
    bint PyLong_Check(object o)
    bint PyBool_Check(object o)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1

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

#: Longest whole message, from ``8=`` through the CheckSum's SOH.
MESSAGE_BYTES_MAX = 64 * 1024
#: Most fields in one message after MsgType (the header, body and trailer, not 8, 9, 35, 10).
FIELDS_MAX = 1024
#: Highest tag number accepted (FIX tags are positive integers; 5000-9999 are user-defined).
TAG_MAX = 99_999
#: Most bytes fed but not yet parsed (feed() without read_all()).
BUFFER_BYTES_MAX = 16 * 1024 * 1024

#: The only BeginString spoken: ``8=FIX.4.4`` and its SOH.
BEGIN_STRING = b"FIX.4.4"

cdef bytes _BEGIN = b"8=FIX.4.4\x01"
cdef Py_ssize_t _BEGIN_BYTES = 10
# ``10=ccc`` and its SOH.
cdef Py_ssize_t _TRAILER_BYTES = 7
# BodyLength has at most this many digits (64 KiB needs 5; one more shows a bad length).
cdef Py_ssize_t _LENGTH_DIGITS_MAX = 7
cdef Py_ssize_t _KEEP_BUFFER_BYTES = 1024 * 1024
cdef char SOH = 1


cdef Py_ssize_t _check_limit(object value, str name, Py_ssize_t low, Py_ssize_t high) except -1:
    if not PyLong_Check(value) or PyBool_Check(value):
        raise InvalidArgument(f"{name} must be an int, got {type(value).__name__}")
    if value < low or value > high:
        raise InvalidArgument(f"{name} must be between {low} and {high}, got {value}")
    return value


# ---------------------------------------------------------------------------
# Parsed values.
# ---------------------------------------------------------------------------

@cython.final
cdef class Message:
    """One framed FIX message: its MsgType and its fields in wire order.

    ``fields`` holds every field after MsgType and before CheckSum, as
    ``(tag, value)`` with ``tag`` an int and ``value`` the raw bytes: the
    standard header (49, 56, 34, 52, ...), the body, and the trailer fields
    other than CheckSum. BeginString, BodyLength, MsgType and CheckSum are
    framing and are checked, not listed. ``get(tag)`` finds the first value of
    a tag in O(1); ``duplicate_tag`` is the first tag seen twice (0 if none),
    which the session rejects since this subset has no repeating groups.
    """

    cdef readonly bytes msg_type
    cdef readonly list fields
    cdef readonly long long offset
    cdef readonly long duplicate_tag
    cdef dict index

    def __init__(self, msg_type, fields, offset=0):
        """Build a message by hand (the parser builds its own)."""
        cdef list pairs = []
        if PyUnicode_Check(msg_type):
            msg_type = (<str>msg_type).encode("ascii")
        if not PyBytes_Check(msg_type) or not msg_type:
            raise InvalidArgument("msg_type must be non-empty bytes or str")
        self.msg_type = bytes(msg_type)
        for tag, value in fields:
            if PyUnicode_Check(value):
                value = (<str>value).encode("ascii")
            pairs.append((int(tag), bytes(value)))
        self.offset = offset
        self._build(pairs)

    cdef int _build(self, list pairs) except -1:
        cdef dict index = {}
        cdef long duplicate = 0
        for pair in pairs:
            tag = (<tuple>pair)[0]
            if tag in index:
                if duplicate == 0:
                    duplicate = tag
            else:
                index[tag] = (<tuple>pair)[1]
        self.fields = pairs
        self.index = index
        self.duplicate_tag = duplicate
        return 0

    def get(self, tag, default=None):
        """The first value of ``tag`` (bytes), or ``default`` when absent."""
        return self.index.get(tag, default)

    def __getitem__(self, tag):
        return self.index[tag]

    def __contains__(self, tag):
        return tag in self.index

    def __len__(self):
        return len(self.fields)

    def __eq__(self, other):
        if not isinstance(other, Message):
            return NotImplemented
        return self.msg_type == (<Message>other).msg_type and self.fields == (<Message>other).fields

    __hash__ = None

    def __repr__(self):
        shown = "|".join(f"{tag}={value.decode('ascii', 'replace')}" for tag, value in self.fields)
        return f"Message({self.msg_type.decode('ascii', 'replace')!r}, {shown!r})"


@cython.final
cdef class Garbled:
    """A message dropped because its framing failed (FIX calls it garbled).

    ``reason`` says which check failed; ``offset`` is the stream offset where
    the dropped bytes began. The parser resumes at the next ``8=FIX.4.4``.
    """

    cdef readonly str reason
    cdef readonly long long offset

    def __init__(self, reason, offset):
        """Record a dropped message (the parser builds these)."""
        self.reason = reason
        self.offset = offset

    def __eq__(self, other):
        if not isinstance(other, Garbled):
            return NotImplemented
        return self.reason == (<Garbled>other).reason and self.offset == (<Garbled>other).offset

    __hash__ = None

    def __repr__(self):
        return f"Garbled({self.reason!r}, offset={self.offset})"


cdef Message _new_message(bytes msg_type, list pairs, long long offset):
    cdef Message message = Message.__new__(Message)
    message.msg_type = msg_type
    message.offset = offset
    message._build(pairs)
    return message


# ---------------------------------------------------------------------------
# The parser.
# ---------------------------------------------------------------------------

cdef int _other_version(const char* data, Py_ssize_t available) noexcept:
    """Whether ``data`` starts with a well-formed BeginString of another FIX version
    (``8=FIX.4.2``, ``8=FIXT.1.1``): its length with the SOH if so, 0 if not (garbage),
    -1 when that is not known until more bytes arrive."""
    cdef Py_ssize_t at = 5
    cdef Py_ssize_t k
    cdef char c
    if available < 5:
        return 0 if memcmp(data, b"8=FIX", available) != 0 else -1
    if memcmp(data, b"8=FIX", 5) != 0:
        return 0
    if available == 5:
        return -1
    if data[5] == c'T':
        at = 6
    for k in range(5):
        if at + k >= available:
            return -1
        c = data[at + k]
        if k == 0 or k == 2:
            if c != c'.':
                return 0
        elif k == 4:
            if c != SOH:
                return 0
        elif c < c'0' or c > c'9':
            return 0
    return at + 5


# Outcomes of _frame_one.
cdef enum:
    STEP_INCOMPLETE = 0
    STEP_DONE = 1


@cython.final
cdef class FixParser:
    """Frames FIX 4.4 messages out of a byte stream split in any way."""

    cdef char* buffer
    cdef Py_ssize_t start
    cdef Py_ssize_t end
    cdef Py_ssize_t capacity
    # Stream offset of buffer[start].
    cdef long long offset
    # Skipping garbage: looking for the next BeginString since skip_origin.
    cdef bint skipping
    cdef long long skip_origin
    cdef object failure

    cdef readonly Py_ssize_t message_bytes_max
    cdef readonly Py_ssize_t fields_max
    cdef readonly Py_ssize_t tag_max
    cdef readonly Py_ssize_t buffer_bytes_max

    def __cinit__(self, *args, **kwargs):
        self.buffer = NULL
        self.start = 0
        self.end = 0
        self.capacity = 0
        self.offset = 0
        self.skipping = False
        self.failure = None

    def __init__(
        self,
        *,
        message_bytes_max=MESSAGE_BYTES_MAX,
        fields_max=FIELDS_MAX,
        tag_max=TAG_MAX,
        buffer_bytes_max=BUFFER_BYTES_MAX,
    ):
        """A parser with its limits; the defaults are the module's constants."""
        self.message_bytes_max = _check_limit(message_bytes_max, "message_bytes_max", 32, 1 << 24)
        self.fields_max = _check_limit(fields_max, "fields_max", 1, 1 << 20)
        self.tag_max = _check_limit(tag_max, "tag_max", 35, 999_999)
        self.buffer_bytes_max = _check_limit(
            buffer_bytes_max, "buffer_bytes_max", self.message_bytes_max, 1 << 40
        )

    def __dealloc__(self):
        free(self.buffer)

    @property
    def buffered_bytes(self):
        """Bytes fed but not yet framed into messages."""
        return self.end - self.start

    @property
    def error(self):
        """The message of the protocol error that stopped the parser, or None."""
        return self.failure

    cdef int _fail(self, str message) except -1:
        self.failure = message
        self.start = 0
        self.end = 0
        raise ProtocolError(message)

    cdef int _check_usable(self) except -1:
        if self.failure is not None:
            raise ProtocolError(
                f"the parser stopped at an earlier protocol error ({self.failure}); "
                "log the session out and start a new parser"
            )
        return 0

    def feed(self, data):
        """Add bytes received from the peer (bytes or any bytes-like object)."""
        cdef Py_buffer view
        cdef Py_ssize_t used
        cdef Py_ssize_t capacity
        cdef char* grown
        self._check_usable()
        if not PyObject_CheckBuffer(data):
            raise InvalidArgument(f"feed() takes a bytes-like object, got {type(data).__name__}")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len == 0:
                return
            used = self.end - self.start
            if used + view.len > self.buffer_bytes_max:
                self._fail(
                    f"{used + view.len} bytes would be buffered unparsed, past "
                    f"buffer_bytes_max={self.buffer_bytes_max}; call read_all() more often"
                )
            if self.end + view.len > self.capacity:
                if self.start > 0:
                    # Compaction: only the unparsed tail is ever moved.
                    memmove(self.buffer, self.buffer + self.start, used)
                    self.start = 0
                    self.end = used
                if used + view.len > self.capacity:
                    capacity = max(16 * 1024, self.capacity * 2, used + view.len)
                    grown = <char*>realloc(self.buffer, capacity)
                    if grown == NULL:
                        raise MemoryError()
                    self.buffer = grown
                    self.capacity = capacity
            memcpy(self.buffer + self.end, view.buf, view.len)
            self.end += view.len
        finally:
            PyBuffer_Release(&view)

    def read_all(self):
        """Every message (``Message``) and dropped message (``Garbled``) framed so far, in order.

        After a protocol error, what was framed before it is returned and the
        next call raises ``ProtocolError``.
        """
        cdef list out = []
        self._check_usable()
        try:
            while self._frame_one(out) == STEP_DONE:
                pass
        except ProtocolError:
            if out:
                return out
            raise
        if self.start == self.end:
            self.start = 0
            self.end = 0
            if self.capacity > _KEEP_BUFFER_BYTES:
                free(self.buffer)
                self.buffer = NULL
                self.capacity = 0
        return out

    def parse(self, data):
        """``feed(data)`` then ``read_all()``."""
        self.feed(data)
        return self.read_all()

    cdef inline void _advance(self, Py_ssize_t count) noexcept:
        self.start += count
        self.offset += count

    cdef int _garble(self, list out, str reason) except -1:
        """Report the message at the parse position as garbled and skip to the next BeginString."""
        out.append(Garbled(reason, self.offset))
        self.skipping = True
        self.skip_origin = self.offset
        self._advance(1)
        return 0

    cdef int _skip(self) except -1:
        """Look for the next BeginString; returns STEP_DONE when the parse position is on one."""
        cdef const char* data = self.buffer + self.start
        cdef Py_ssize_t available = self.end - self.start
        cdef const char* at = data
        cdef const char* stop = data + available
        cdef const char* found = NULL
        cdef Py_ssize_t clean
        while at < stop:
            at = <const char*>memchr(at, c'8', stop - at)
            if at == NULL:
                break
            if stop - at >= _BEGIN_BYTES:
                if memcmp(at, PyBytes_AS_STRING(_BEGIN), _BEGIN_BYTES) == 0:
                    found = at
                    break
            elif memcmp(at, PyBytes_AS_STRING(_BEGIN), stop - at) == 0:
                # A BeginString may be starting at the end of what has arrived.
                break
            at += 1
        if found != NULL:
            clean = found - data
        elif at != NULL and at < stop:
            clean = at - data
        else:
            clean = available
        if self.offset + clean - self.skip_origin > self.message_bytes_max:
            self._fail(
                f"no BeginString 8=FIX.4.4 within message_bytes_max={self.message_bytes_max} "
                f"bytes after the garbled data at stream offset {self.skip_origin}; "
                "the stream cannot be resynchronised"
            )
        self._advance(clean)
        if found != NULL:
            self.skipping = False
            return STEP_DONE
        return STEP_INCOMPLETE

    cdef int _frame_one(self, list out) except -1:
        """Frame one message, or report one garbled one; STEP_INCOMPLETE when more bytes are needed."""
        cdef const char* data
        cdef Py_ssize_t available
        cdef Py_ssize_t prefix
        cdef Py_ssize_t at
        cdef Py_ssize_t digits
        cdef Py_ssize_t body_length
        cdef Py_ssize_t body_start
        cdef Py_ssize_t trailer
        cdef Py_ssize_t total
        cdef unsigned int checksum
        cdef unsigned int stated
        cdef Py_ssize_t position
        cdef char c
        cdef int verdict
        if self.skipping:
            if self._skip() == STEP_INCOMPLETE:
                return STEP_INCOMPLETE
        data = self.buffer + self.start
        available = self.end - self.start
        if available == 0:
            return STEP_INCOMPLETE

        # BeginString, first.
        prefix = min(available, _BEGIN_BYTES)
        if memcmp(data, PyBytes_AS_STRING(_BEGIN), prefix) != 0:
            verdict = _other_version(data, available)
            if verdict == -1:
                return STEP_INCOMPLETE
            if verdict > 0:
                self._fail(
                    f"BeginString {bytes(data[2:verdict - 1])!r} at stream offset "
                    f"{self.offset} is not FIX.4.4; this gateway speaks FIX.4.4 only"
                )
            self._garble(out, "BeginString 8=FIX.4.4 is not the first field")
            return STEP_DONE
        if available < _BEGIN_BYTES:
            return STEP_INCOMPLETE

        # BodyLength, second: 9=<digits><SOH>.
        at = _BEGIN_BYTES
        for position in range(2):
            if at + position >= available:
                return STEP_INCOMPLETE
            if data[at + position] != (c'9' if position == 0 else c'='):
                self._garble(out, "BodyLength (9) is not the second field")
                return STEP_DONE
        at += 2
        body_length = 0
        digits = 0
        while True:
            if at + digits >= available:
                return STEP_INCOMPLETE
            c = data[at + digits]
            if c == SOH:
                break
            if c < c'0' or c > c'9' or digits == _LENGTH_DIGITS_MAX:
                self._garble(out, "BodyLength (9) is not a number")
                return STEP_DONE
            body_length = body_length * 10 + (c - c'0')
            digits += 1
        if digits == 0 or (digits > 1 and data[at] == c'0'):
            self._garble(out, "BodyLength (9) is not a number")
            return STEP_DONE
        body_start = at + digits + 1
        total = body_start + body_length + _TRAILER_BYTES
        if total > self.message_bytes_max:
            self._fail(
                f"BodyLength {body_length} at stream offset {self.offset} makes a message of "
                f"{total} bytes, past message_bytes_max={self.message_bytes_max}"
            )
        if available < total:
            return STEP_INCOMPLETE

        # BodyLength exact: the body ends with an SOH and the CheckSum follows it.
        trailer = body_start + body_length
        if (
            body_length == 0
            or data[trailer - 1] != SOH
            or memcmp(data + trailer, b"10=", 3) != 0
            or data[trailer + 6] != SOH
            or not (c'0' <= data[trailer + 3] <= c'9')
            or not (c'0' <= data[trailer + 4] <= c'9')
            or not (c'0' <= data[trailer + 5] <= c'9')
        ):
            self._garble(
                out, f"BodyLength {body_length} does not end at the CheckSum (10) field"
            )
            return STEP_DONE

        # CheckSum: the sum of every byte before "10=", modulo 256.
        checksum = 0
        for position in range(trailer):
            checksum += <uint8_t>data[position]
        checksum &= 0xFF
        stated = (
            (data[trailer + 3] - c'0') * 100
            + (data[trailer + 4] - c'0') * 10
            + (data[trailer + 5] - c'0')
        )
        if checksum != stated:
            out.append(
                Garbled(f"CheckSum {stated:03d} but the bytes sum to {checksum:03d}", self.offset)
            )
            self._advance(total)
            return STEP_DONE

        self._fields(out, data, body_start, trailer)
        self._advance(total)
        return STEP_DONE

    cdef int _fields(
        self, list out, const char* data, Py_ssize_t at, Py_ssize_t stop
    ) except -1:
        """Split a checksummed body into fields; MsgType must come first."""
        cdef list pairs = []
        cdef bytes msg_type = None
        cdef long tag
        cdef Py_ssize_t tag_start
        cdef Py_ssize_t value_start
        cdef const char* soh
        cdef char c
        while at < stop:
            tag_start = at
            tag = 0
            while at < stop and data[at] != c'=':
                c = data[at]
                if c < c'0' or c > c'9' or at - tag_start >= 6:
                    return self._bad_field(
                        data, tag_start, stop, "a tag must be a positive decimal number"
                    )
                tag = tag * 10 + (c - c'0')
                at += 1
            if at == stop:
                return self._bad_field(data, tag_start, stop, "a field has no '='")
            if at == tag_start or data[tag_start] == c'0':
                return self._bad_field(
                    data,
                    tag_start,
                    stop,
                    "a tag must be a positive decimal number without leading zeros",
                )
            if tag > self.tag_max:
                return self._bad_field(
                    data, tag_start, stop, f"tag {tag} is past tag_max={self.tag_max}"
                )
            at += 1
            value_start = at
            soh = <const char*>memchr(data + at, SOH, stop - at)
            # The body ends with an SOH (checked by the framing), so one is always found.
            at = soh - data
            if at == value_start:
                return self._bad_field(data, tag_start, stop, f"tag {tag} has an empty value")
            if msg_type is None:
                if tag != 35:
                    self._fail_garbled_msg_type(out)
                    return 0
                msg_type = data[value_start:at]
            else:
                if tag == 8 or tag == 9 or tag == 10 or tag == 35:
                    return self._bad_field(
                        data, tag_start, stop, f"framing tag {tag} appears inside the message body"
                    )
                if len(pairs) == self.fields_max:
                    return self._bad_field(
                        data,
                        tag_start,
                        stop,
                        f"the message has more than fields_max={self.fields_max} fields",
                    )
                pairs.append((tag, data[value_start:at]))
            at += 1
        out.append(_new_message(msg_type, pairs, self.offset))
        return 0

    cdef int _fail_garbled_msg_type(self, list out) except -1:
        # FIX counts a message whose third field is not MsgType as garbled. Its
        # extent is known from BodyLength, so framing resumes right after it.
        out.append(Garbled("MsgType (35) is not the third field", self.offset))
        return 0

    cdef int _bad_field(
        self, const char* data, Py_ssize_t at, Py_ssize_t stop, str problem
    ) except -1:
        cdef bytes snippet = data[at:min(at + 24, stop)]
        self._fail(
            f"{problem} in the message at stream offset {self.offset} "
            f"(near {snippet!r}); its CheckSum is right, so the peer sent it that way"
        )
        return -1


# ---------------------------------------------------------------------------
# Encoders.
# ---------------------------------------------------------------------------

cdef struct Writer:
    char* data
    Py_ssize_t size
    Py_ssize_t capacity


cdef int _grow(Writer* writer, Py_ssize_t extra) except -1:
    cdef Py_ssize_t capacity
    cdef char* grown
    if writer.size + extra <= writer.capacity:
        return 0
    capacity = max(256, writer.capacity * 2, writer.size + extra)
    grown = <char*>realloc(writer.data, capacity)
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


cdef int _put_decimal(Writer* writer, unsigned long long value) except -1:
    cdef char digits[24]
    cdef int at = 24
    while True:
        at -= 1
        digits[at] = c'0' + <char>(value % 10)
        value //= 10
        if value == 0:
            break
    return _put(writer, digits + at, 24 - at)


cdef int _put_value(Writer* writer, object value, long tag) except -1:
    cdef const char* text
    cdef Py_ssize_t length
    cdef int overflow = 0
    cdef long long number
    cdef Py_buffer view
    if PyBytes_Check(value):
        text = PyBytes_AS_STRING(value)
        length = PyBytes_GET_SIZE(value)
    elif PyUnicode_Check(value):
        try:
            value = (<str>value).encode("ascii")
        except UnicodeEncodeError:
            raise InvalidArgument(
                f"tag {tag}: a str value must be ASCII; encode other text to bytes yourself"
            ) from None
        text = PyBytes_AS_STRING(value)
        length = PyBytes_GET_SIZE(value)
    elif PyLong_Check(value) and not PyBool_Check(value):
        number = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0 and number >= 0:
            return _put_decimal(writer, <unsigned long long>number)
        value = int.__repr__(value).encode("ascii")
        text = PyBytes_AS_STRING(value)
        length = PyBytes_GET_SIZE(value)
    elif PyObject_CheckBuffer(value):
        PyObject_GetBuffer(value, &view, PyBUF_SIMPLE)
        try:
            return _put_value(writer, (<char*>view.buf)[:view.len], tag)
        finally:
            PyBuffer_Release(&view)
    else:
        raise InvalidArgument(
            f"tag {tag}: cannot encode a {type(value).__name__}; pass bytes, ASCII str or int "
            "(format decimals as str: floats are not exact)"
        )
    if length == 0:
        raise InvalidArgument(f"tag {tag}: FIX forbids empty values; leave the field out")
    if memchr(text, SOH, length) != NULL:
        raise InvalidArgument(f"tag {tag}: a value cannot contain SOH (0x01)")
    return _put(writer, text, length)


cdef int _put_message(Writer* writer, Writer* body, object msg_type, object fields) except -1:
    cdef long tag
    cdef Py_ssize_t at
    cdef Py_ssize_t position
    cdef unsigned int checksum = 0
    body.size = 0
    _put(body, b"35=", 3)
    _put_value(body, msg_type, 35)
    _put(body, b"\x01", 1)
    for field in fields:
        if len(field) != 2:
            raise InvalidArgument(f"a field must be a (tag, value) pair, got {field!r}")
        key = field[0]
        if not PyLong_Check(key) or PyBool_Check(key) or key < 1 or key > TAG_MAX:
            raise InvalidArgument(f"a tag must be an int from 1 to {TAG_MAX}, got {key!r}")
        tag = key
        if tag == 8 or tag == 9 or tag == 10 or tag == 35:
            raise InvalidArgument(f"tag {tag} is framing; the encoder writes it itself")
        _put_decimal(body, <unsigned long long>tag)
        _put(body, b"=", 1)
        _put_value(body, field[1], tag)
        _put(body, b"\x01", 1)
    if body.size + 32 > MESSAGE_BYTES_MAX:
        raise LimitExceeded(
            f"the message body is {body.size} bytes; a message is at most "
            f"MESSAGE_BYTES_MAX={MESSAGE_BYTES_MAX} bytes"
        )
    at = writer.size
    _put(writer, PyBytes_AS_STRING(_BEGIN), _BEGIN_BYTES)
    _put(writer, b"9=", 2)
    _put_decimal(writer, <unsigned long long>body.size)
    _put(writer, b"\x01", 1)
    _put(writer, body.data, body.size)
    for position in range(at, writer.size):
        checksum += <uint8_t>writer.data[position]
    checksum &= 0xFF
    _put(writer, b"10=", 3)
    _grow(writer, 4)
    writer.data[writer.size] = c'0' + <char>(checksum // 100)
    writer.data[writer.size + 1] = c'0' + <char>((checksum // 10) % 10)
    writer.data[writer.size + 2] = c'0' + <char>(checksum % 10)
    writer.data[writer.size + 3] = SOH
    writer.size += 4
    return 0


cdef bytes _finish(Writer* writer, Writer* body):
    cdef bytes result
    try:
        result = writer.data[:writer.size] if writer.size else b""
    finally:
        free(writer.data)
        free(body.data)
        writer.data = NULL
        body.data = NULL
    return result


def encode(msg_type, fields):
    """One message: ``8=FIX.4.4``, BodyLength, ``35=msg_type``, ``fields`` in order, CheckSum."""
    cdef Writer writer
    cdef Writer body
    writer.data = NULL
    writer.size = 0
    writer.capacity = 0
    body.data = NULL
    body.size = 0
    body.capacity = 0
    try:
        _put_message(&writer, &body, msg_type, fields)
    except BaseException:
        free(writer.data)
        free(body.data)
        raise
    return _finish(&writer, &body)


def encode_many(messages):
    """Many ``(msg_type, fields)`` messages into one buffer, to send in one write."""
    cdef Writer writer
    cdef Writer body
    writer.data = NULL
    writer.size = 0
    writer.capacity = 0
    body.data = NULL
    body.size = 0
    body.capacity = 0
    try:
        for message in messages:
            if len(message) != 2:
                raise InvalidArgument(
                    f"encode_many() takes (msg_type, fields) pairs, got {message!r}"
                )
            _put_message(&writer, &body, message[0], message[1])
    except BaseException:
        free(writer.data)
        free(body.data)
        raise
    return _finish(&writer, &body)
