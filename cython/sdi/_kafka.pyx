# cython: language_level=3
# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: auto_pickle=False, autotestdict=False
"""Kafka wire codec: framing, primitives and record batch v2, sans-IO.

The public, documented face of this module is :mod:`sdi.mq.protocol`; this
file is the implementation of the hot paths (frame splitting, primitive
reads, CRC-32C and record batch validation). Every length read from the wire
is checked against the bytes that remain before it is used, so a malformed
frame raises :class:`sdi.errors.ProtocolError` and never reads past its end.
"""

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

from sdi.errors import InvalidArgument, LimitExceeded, ProtocolError

# ---------------------------------------------------------------------------
# Limits (defaults). Units are last in every name.
# ---------------------------------------------------------------------------

#: Largest request frame, like the broker's socket.request.max.bytes.
FRAME_BYTES_MAX = 100 * 1024 * 1024
cdef enum:
    # Size of the record batch v2 header, from baseOffset to recordsCount.
    _BATCH_HEADER_BYTES = 61
    # Bytes before the part of a batch that the CRC covers (baseOffset to crc).
    _CRC_START = 21

#: Size of the record batch v2 header, from baseOffset to recordsCount.
BATCH_HEADER_BYTES = _BATCH_HEADER_BYTES
#: The first API version of each API key that uses flexible (tagged) encoding.
FLEXIBLE_VERSION_MIN = {
    0: 9,    # Produce
    1: 12,   # Fetch
    2: 6,    # ListOffsets
    3: 9,    # Metadata
    8: 8,    # OffsetCommit
    9: 6,    # OffsetFetch
    10: 3,   # FindCoordinator
    11: 6,   # JoinGroup
    12: 4,   # Heartbeat
    13: 4,   # LeaveGroup
    14: 4,   # SyncGroup
    18: 3,   # ApiVersions
    19: 5,   # CreateTopics
    20: 4,   # DeleteTopics
    22: 2,   # InitProducerId
    23: 4,   # OffsetForLeaderEpoch
}

# ---------------------------------------------------------------------------
# CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as record batches use.
# ---------------------------------------------------------------------------

cdef uint32_t _crc_table[8][256]


cdef void _crc_table_init():
    cdef uint32_t crc
    cdef int i, j, k
    for i in range(256):
        crc = <uint32_t>i
        for j in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0x82F63B78
            else:
                crc = crc >> 1
        _crc_table[0][i] = crc
    # Slicing-by-8 tables: table k advances a byte through k more zero bytes.
    for i in range(256):
        crc = _crc_table[0][i]
        for k in range(1, 8):
            crc = (crc >> 8) ^ _crc_table[0][crc & 0xFF]
            _crc_table[k][i] = crc


_crc_table_init()


cdef uint32_t _crc32c(uint32_t crc, const uint8_t* data, Py_ssize_t length) noexcept nogil:
    crc = ~crc
    cdef uint32_t low, high
    while length >= 8:
        low = (data[0] | (<uint32_t>data[1] << 8) | (<uint32_t>data[2] << 16)
               | (<uint32_t>data[3] << 24)) ^ crc
        high = data[4] | (<uint32_t>data[5] << 8) | (<uint32_t>data[6] << 16) | (<uint32_t>data[7] << 24)
        crc = (_crc_table[7][low & 0xFF] ^ _crc_table[6][(low >> 8) & 0xFF]
               ^ _crc_table[5][(low >> 16) & 0xFF] ^ _crc_table[4][low >> 24]
               ^ _crc_table[3][high & 0xFF] ^ _crc_table[2][(high >> 8) & 0xFF]
               ^ _crc_table[1][(high >> 16) & 0xFF] ^ _crc_table[0][high >> 24])
        data += 8
        length -= 8
    while length > 0:
        crc = (crc >> 8) ^ _crc_table[0][(crc ^ data[0]) & 0xFF]
        data += 1
        length -= 1
    return ~crc


def crc32c(data, unsigned int crc=0):
    """CRC-32C of ``data`` (any buffer), continuing from ``crc``."""
    cdef const uint8_t[::1] view = _as_view(data)
    cdef uint32_t result
    with nogil:
        result = _crc32c(crc, &view[0] if view.shape[0] else NULL, view.shape[0])
    return result


cdef const uint8_t[::1] _as_view(object data):
    if isinstance(data, bytearray) or isinstance(data, memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise InvalidArgument(f"expected a bytes-like object, got {type(data).__name__}")
    if len(data) == 0:
        return b"\0"[:0]
    return data


# ---------------------------------------------------------------------------
# Big-endian helpers over raw pointers; callers check the bounds first.
# ---------------------------------------------------------------------------

cdef inline int16_t _be16(const uint8_t* p) noexcept nogil:
    return <int16_t>((<uint32_t>p[0] << 8) | p[1])


cdef inline int32_t _be32(const uint8_t* p) noexcept nogil:
    return <int32_t>((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3])


cdef inline int64_t _be64(const uint8_t* p) noexcept nogil:
    return <int64_t>((<uint64_t><uint32_t>_be32(p) << 32) | <uint32_t>_be32(p + 4))


cdef inline void _put32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef inline void _put64(uint8_t* p, uint64_t v) noexcept nogil:
    _put32(p, <uint32_t>(v >> 32))
    _put32(p + 4, <uint32_t>v)


# ---------------------------------------------------------------------------
# Reader: primitive reads over one frame or body, bounds-checked.
# ---------------------------------------------------------------------------

cdef class Reader:
    """Reads Kafka primitives from a bytes-like object, never past its end."""

    cdef bytes _data
    cdef const uint8_t* _ptr
    cdef Py_ssize_t _pos
    cdef Py_ssize_t _end

    def __init__(self, data):
        """A reader over ``data``, from its first byte."""
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes):
            raise InvalidArgument(f"expected a bytes-like object, got {type(data).__name__}")
        self._data = data
        self._ptr = <const uint8_t*><const char*>self._data
        self._pos = 0
        self._end = len(self._data)

    @property
    def position(self):
        """Bytes read so far."""
        return self._pos

    @property
    def remaining(self):
        """Bytes not read yet."""
        return self._end - self._pos

    cdef inline int _need(self, Py_ssize_t count, str what) except -1:
        if count < 0 or count > self._end - self._pos:
            raise ProtocolError(
                f"truncated {what}: needs {count} bytes at offset {self._pos}, "
                f"{self._end - self._pos} remain"
            )
        return 0

    def int8(self):
        self._need(1, "int8")
        self._pos += 1
        return <int8_t>self._ptr[self._pos - 1]

    def boolean(self):
        self._need(1, "boolean")
        self._pos += 1
        return self._ptr[self._pos - 1] != 0

    def int16(self):
        self._need(2, "int16")
        self._pos += 2
        return _be16(self._ptr + self._pos - 2)

    def int32(self):
        self._need(4, "int32")
        self._pos += 4
        return _be32(self._ptr + self._pos - 4)

    def uint32(self):
        self._need(4, "uint32")
        self._pos += 4
        return <uint32_t>_be32(self._ptr + self._pos - 4)

    def int64(self):
        self._need(8, "int64")
        self._pos += 8
        return _be64(self._ptr + self._pos - 8)

    cdef uint64_t _uvarint(self, int bits_max) except? 0xFFFFFFFFFFFFFFFF:
        cdef uint64_t value = 0
        cdef int shift = 0
        cdef uint8_t byte
        while True:
            if self._pos >= self._end:
                raise ProtocolError(f"truncated varint at offset {self._pos}")
            byte = self._ptr[self._pos]
            self._pos += 1
            if shift >= bits_max or (shift + 7 > bits_max and (byte & 0x7F) >> (bits_max - shift)):
                raise ProtocolError(f"varint longer than {bits_max} bits at offset {self._pos - 1}")
            value |= <uint64_t>(byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def unsigned_varint(self):
        return <uint32_t>self._uvarint(32)

    def varint(self):
        cdef uint32_t raw = <uint32_t>self._uvarint(32)
        return <int32_t>((raw >> 1) ^ (-(raw & 1)))

    def varlong(self):
        cdef uint64_t raw = self._uvarint(64)
        return <int64_t>((raw >> 1) ^ (-(raw & 1)))

    cdef bytes _take(self, Py_ssize_t count, str what):
        self._need(count, what)
        self._pos += count
        return self._data[self._pos - count:self._pos]

    cdef str _text(self, bytes raw):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ProtocolError(f"string at offset {self._pos - len(raw)} is not UTF-8: {error}") from None

    def string(self):
        cdef Py_ssize_t length = self.int16()
        if length < 0:
            raise ProtocolError(f"negative string length {length} at offset {self._pos - 2}")
        return self._text(self._take(length, "string"))

    def nullable_string(self):
        cdef Py_ssize_t length = self.int16()
        if length == -1:
            return None
        if length < 0:
            raise ProtocolError(f"negative string length {length} at offset {self._pos - 2}")
        return self._text(self._take(length, "string"))

    def bytes_(self):
        cdef Py_ssize_t length = self.int32()
        if length < 0:
            raise ProtocolError(f"negative bytes length {length} at offset {self._pos - 4}")
        return self._take(length, "bytes")

    def nullable_bytes(self):
        cdef Py_ssize_t length = self.int32()
        if length == -1:
            return None
        if length < 0:
            raise ProtocolError(f"negative bytes length {length} at offset {self._pos - 4}")
        return self._take(length, "bytes")

    def compact_string(self):
        cdef Py_ssize_t length = <Py_ssize_t>self.unsigned_varint() - 1
        if length < 0:
            raise ProtocolError(f"null compact string at offset {self._pos - 1} where null is not allowed")
        return self._text(self._take(length, "compact string"))

    def compact_nullable_string(self):
        cdef Py_ssize_t length = <Py_ssize_t>self.unsigned_varint() - 1
        if length < 0:
            return None
        return self._text(self._take(length, "compact string"))

    def compact_bytes(self):
        cdef Py_ssize_t length = <Py_ssize_t>self.unsigned_varint() - 1
        if length < 0:
            raise ProtocolError(f"null compact bytes at offset {self._pos - 1} where null is not allowed")
        return self._take(length, "compact bytes")

    def compact_nullable_bytes(self):
        cdef Py_ssize_t length = <Py_ssize_t>self.unsigned_varint() - 1
        if length < 0:
            return None
        return self._take(length, "compact bytes")

    def array_length(self, bint nullable=False):
        """An array's element count; -1 (null) only when ``nullable``.

        Every element takes at least one byte, so a count above the bytes that
        remain is refused here, before the caller loops over it.
        """
        cdef Py_ssize_t count = self.int32()
        if count == -1 and nullable:
            return -1
        if count < 0:
            raise ProtocolError(f"negative array length {count} at offset {self._pos - 4}")
        if count > self._end - self._pos:
            raise ProtocolError(
                f"array length {count} at offset {self._pos - 4} is past the end of the frame"
            )
        return count

    def compact_array_length(self, bint nullable=False):
        """A compact array's element count (the varint holds count + 1)."""
        cdef Py_ssize_t count = <Py_ssize_t>self.unsigned_varint() - 1
        if count == -1 and nullable:
            return -1
        if count < 0:
            raise ProtocolError(f"null compact array at offset {self._pos - 1} where null is not allowed")
        if count > self._end - self._pos:
            raise ProtocolError(
                f"compact array length {count} at offset {self._pos} is past the end of the frame"
            )
        return count

    def skip_tagged_fields(self):
        """Skips a tagged-field section; returns how many fields it held."""
        cdef Py_ssize_t count = self.unsigned_varint()
        cdef Py_ssize_t index, size
        for index in range(count):
            self.unsigned_varint()
            size = self.unsigned_varint()
            self._take(size, "tagged field")
        return count

    def rest(self):
        """Every byte not read yet, which are then consumed."""
        return self._take(self._end - self._pos, "rest")

    def expect_end(self, str what="message"):
        """Raises ProtocolError if bytes are left over after a complete message."""
        if self._pos != self._end:
            raise ProtocolError(f"{self._end - self._pos} bytes left over after the {what}")


# ---------------------------------------------------------------------------
# Writer: primitive writes into a growing buffer.
# ---------------------------------------------------------------------------

cdef class Writer:
    """Appends Kafka primitives to a buffer; ``getvalue()`` returns the bytes."""

    cdef bytearray _out

    def __init__(self):
        """An empty writer."""
        self._out = bytearray()

    def __len__(self):
        return len(self._out)

    def getvalue(self):
        return bytes(self._out)

    cdef inline int _int(self, object value, int64_t low, int64_t high, str what) except -1:
        if not low <= value <= high:
            raise InvalidArgument(f"{what} value {value!r} is out of range [{low}, {high}]")
        return 0

    def int8(self, value):
        self._int(value, -128, 127, "int8")
        self._out += (<int>value & 0xFF).to_bytes(1, "big")

    def boolean(self, value):
        self._out.append(1 if value else 0)

    def int16(self, value):
        self._int(value, -(1 << 15), (1 << 15) - 1, "int16")
        self._out += (<int>value).to_bytes(2, "big", signed=True)

    def int32(self, value):
        self._int(value, -(1 << 31), (1 << 31) - 1, "int32")
        self._out += (<long long>value).to_bytes(4, "big", signed=True)

    def uint32(self, value):
        self._int(value, 0, (1 << 32) - 1, "uint32")
        self._out += (<long long>value).to_bytes(4, "big")

    def int64(self, value):
        if not -(1 << 63) <= value <= (1 << 63) - 1:
            raise InvalidArgument(f"int64 value {value!r} is out of range")
        self._out += (<long long>value).to_bytes(8, "big", signed=True)

    cdef void _uvarint(self, uint64_t value):
        while value >= 0x80:
            self._out.append(<int>((value & 0x7F) | 0x80))
            value >>= 7
        self._out.append(<int>value)

    def unsigned_varint(self, value):
        self._int(value, 0, (1 << 32) - 1, "unsigned varint")
        self._uvarint(<uint64_t>value)

    def varint(self, value):
        self._int(value, -(1 << 31), (1 << 31) - 1, "varint")
        cdef int32_t v = value
        self._uvarint(<uint32_t>((<uint32_t>v << 1) ^ <uint32_t>(v >> 31)))

    def varlong(self, value):
        if not -(1 << 63) <= value <= (1 << 63) - 1:
            raise InvalidArgument(f"varlong value {value!r} is out of range")
        cdef int64_t v = value
        self._uvarint((<uint64_t>v << 1) ^ <uint64_t>(v >> 63))

    cdef bytes _encode_text(self, str value):
        return value.encode("utf-8")

    def string(self, str value):
        raw = self._encode_text(value)
        self._int(len(raw), 0, (1 << 15) - 1, "string length")
        self.int16(len(raw))
        self._out += raw

    def nullable_string(self, value):
        if value is None:
            self.int16(-1)
        else:
            self.string(value)

    def bytes_(self, value):
        raw = bytes(value)
        self.int32(len(raw))
        self._out += raw

    def nullable_bytes(self, value):
        if value is None:
            self.int32(-1)
        else:
            self.bytes_(value)

    def compact_string(self, str value):
        raw = self._encode_text(value)
        self.unsigned_varint(len(raw) + 1)
        self._out += raw

    def compact_nullable_string(self, value):
        if value is None:
            self._uvarint(0)
        else:
            self.compact_string(value)

    def compact_bytes(self, value):
        raw = bytes(value)
        self.unsigned_varint(len(raw) + 1)
        self._out += raw

    def compact_nullable_bytes(self, value):
        if value is None:
            self._uvarint(0)
        else:
            self.compact_bytes(value)

    def array_length(self, count):
        """Writes an array's count; None writes the null array (-1)."""
        self.int32(-1 if count is None else count)

    def compact_array_length(self, count):
        """Writes a compact array's count + 1; None writes the null array (0)."""
        self.unsigned_varint(0 if count is None else count + 1)

    def empty_tagged_fields(self):
        self._out.append(0)

    def raw(self, data):
        """Appends bytes as they are (a nested message or a record set)."""
        self._out += data


# ---------------------------------------------------------------------------
# Framing.
# ---------------------------------------------------------------------------

cdef class FrameParser:
    """Splits a byte stream into size-prefixed frames, fed in any split."""

    cdef bytearray _buffer
    cdef Py_ssize_t _start
    cdef readonly Py_ssize_t frame_bytes_max
    cdef object _error

    def __init__(self, *, Py_ssize_t frame_bytes_max=FRAME_BYTES_MAX):
        """A parser that refuses frames larger than ``frame_bytes_max``."""
        if frame_bytes_max < 0:
            raise InvalidArgument(f"frame_bytes_max must be >= 0, got {frame_bytes_max}")
        self._buffer = bytearray()
        self._start = 0
        self.frame_bytes_max = frame_bytes_max
        self._error = None

    @property
    def buffered_bytes(self):
        """Bytes fed but not yet returned as a frame."""
        return len(self._buffer) - self._start

    @property
    def error(self):
        """The protocol error that stopped the parser, or None."""
        return self._error

    def feed(self, data):
        """Adds bytes; returns every frame (without its size) now complete.

        A bad frame size stops the parser for good: frames completed before
        it are returned first, and this call or the next raises ProtocolError.
        """
        if self._error is not None:
            raise ProtocolError(self._error)
        self._buffer += data
        frames = []
        cdef Py_ssize_t available, size
        cdef const uint8_t* ptr
        while True:
            available = len(self._buffer) - self._start
            if available < 4:
                break
            ptr = <const uint8_t*><char*>self._buffer
            size = _be32(ptr + self._start)
            if size < 0:
                self._error = f"negative frame size {size}"
            elif size > self.frame_bytes_max:
                self._error = (
                    f"frame of {size} bytes is larger than frame_bytes_max ({self.frame_bytes_max})"
                )
            if self._error is not None:
                # Frames completed before the fault are still returned (a
                # server answers them); the next call raises the error.
                if frames:
                    return frames
                raise ProtocolError(self._error)
            if available - 4 < size:
                break
            frames.append(bytes(self._buffer[self._start + 4:self._start + 4 + size]))
            self._start += 4 + size
        if self._start and (self._start == len(self._buffer) or self._start > 65536):
            del self._buffer[:self._start]
            self._start = 0
        return frames


def request_header_version(int api_key, int api_version):
    """The request header version (1 or 2) for an API key and version."""
    first = FLEXIBLE_VERSION_MIN.get(api_key)
    return 2 if first is not None and api_version >= first else 1


def parse_request_header(frame):
    """Splits a request frame into (api_key, api_version, correlation_id, client_id, body).

    The header version follows from the API key and version: v2 (with a
    tagged-field section) for flexible versions, v1 otherwise. The client id
    is never compact, even in header v2.
    """
    reader = Reader(frame)
    if reader.remaining < 8:
        raise ProtocolError(f"request frame of {reader.remaining} bytes is shorter than a header")
    api_key = reader.int16()
    api_version = reader.int16()
    correlation_id = reader.int32()
    client_id = reader.nullable_string()
    if request_header_version(api_key, api_version) == 2:
        reader.skip_tagged_fields()
    return api_key, api_version, correlation_id, client_id, reader.rest()


def encode_response(int correlation_id, body, int header_version=0):
    """A response frame: size, correlation id, tagged fields for header v1, body."""
    if header_version not in (0, 1):
        raise InvalidArgument(f"response header version must be 0 or 1, got {header_version}")
    cdef Py_ssize_t header_bytes = 4 + header_version
    cdef Py_ssize_t size = header_bytes + len(body)
    if size > 0x7FFFFFFF:
        raise LimitExceeded(f"response of {size} bytes does not fit a frame")
    out = bytearray(4 + header_bytes)
    _put32(<uint8_t*><char*>out, <uint32_t>size)
    _put32(<uint8_t*><char*>out + 4, <uint32_t>correlation_id)
    out += body
    return bytes(out)


# ---------------------------------------------------------------------------
# Record batch v2.
# ---------------------------------------------------------------------------

COMPRESSION_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


cdef Py_ssize_t _check_batch(const uint8_t* ptr, Py_ssize_t available, Py_ssize_t at) except -1:
    """Checks one batch's header and CRC; returns its total size in bytes."""
    if available < _BATCH_HEADER_BYTES:
        raise ProtocolError(
            f"truncated record batch at offset {at}: {available} bytes, "
            f"a header needs {_BATCH_HEADER_BYTES}"
        )
    cdef int64_t batch_length = _be32(ptr + 8)
    if batch_length < _BATCH_HEADER_BYTES - 12:
        raise ProtocolError(f"record batch at offset {at} has batchLength {batch_length}, too small")
    if batch_length + 12 > available:
        raise ProtocolError(
            f"record batch at offset {at} has batchLength {batch_length} but only "
            f"{available - 12} bytes follow"
        )
    if ptr[16] != 2:
        raise ProtocolError(f"record batch at offset {at} has magic {ptr[16]}, only magic 2 is supported")
    cdef uint32_t stored = <uint32_t>_be32(ptr + 17)
    cdef uint32_t computed
    with nogil:
        computed = _crc32c(0, ptr + _CRC_START, batch_length + 12 - _CRC_START)
    if stored != computed:
        raise ProtocolError(
            f"record batch at offset {at} fails its CRC: stored {stored:#010x}, computed {computed:#010x}"
        )
    cdef int compression = _be16(ptr + 21) & 0x07
    if compression != 0:
        name = COMPRESSION_NAMES.get(compression, f"unknown ({compression})")
        raise ProtocolError(
            f"record batch at offset {at} uses compression {name}, which is not supported: "
            f"only uncompressed batches are"
        )
    if _be32(ptr + 57) < 0:
        raise ProtocolError(f"record batch at offset {at} has a negative record count {_be32(ptr + 57)}")
    return <Py_ssize_t>batch_length + 12


def validate_record_batches(data):
    """Checks a record set without decoding values; returns one tuple per batch.

    Each tuple is (position, size_bytes, last_offset_delta, records_count,
    attributes, first_timestamp, max_timestamp, producer_id, producer_epoch,
    base_sequence), the last six as the batch header holds them.
    The CRC, lengths, magic and compression are checked, and the records are
    walked by their length prefixes so that the count and the bytes agree.
    """
    reader_data = bytes(data)
    cdef const uint8_t* ptr = <const uint8_t*><const char*>reader_data
    cdef Py_ssize_t total = len(reader_data)
    cdef Py_ssize_t at = 0, size, records_count, index, pos, end
    cdef Py_ssize_t record_length
    cdef uint64_t raw
    cdef int shift
    result = []
    if total == 0:
        raise ProtocolError("empty record set")
    while at < total:
        size = _check_batch(ptr + at, total - at, at)
        records_count = _be32(ptr + at + 57)
        pos = at + _BATCH_HEADER_BYTES
        end = at + size
        for index in range(records_count):
            raw = 0
            shift = 0
            while True:
                if pos >= end or shift > 28:
                    raise ProtocolError(f"bad length of record {index} in the batch at offset {at}")
                raw |= <uint64_t>(ptr[pos] & 0x7F) << shift
                pos += 1
                if not ptr[pos - 1] & 0x80:
                    break
                shift += 7
            record_length = <int32_t>((<uint32_t>raw >> 1) ^ (-(<uint32_t>raw & 1)))
            if record_length < 0 or record_length > end - pos:
                raise ProtocolError(
                    f"record {index} in the batch at offset {at} has length {record_length}, "
                    f"past the end of the batch"
                )
            pos += record_length
        if pos != end:
            raise ProtocolError(
                f"batch at offset {at} holds {end - pos} bytes after its {records_count} records"
            )
        result.append((
            at, size, _be32(ptr + at + 23), records_count,
            _be16(ptr + at + 21), _be64(ptr + at + 27), _be64(ptr + at + 35),
            _be64(ptr + at + 43), _be16(ptr + at + 51), _be32(ptr + at + 53),
        ))
        at = end
    return result


def rewrite_base_offset(batch, int64_t base_offset, partition_leader_epoch=None):
    """The batch with a new baseOffset (and partitionLeaderEpoch, when given), in one copy.

    The CRC covers neither field, so it stays valid.
    """
    cdef const uint8_t[::1] view = batch
    cdef Py_ssize_t size = view.shape[0]
    if size < _BATCH_HEADER_BYTES:
        raise ProtocolError(f"record batch of {size} bytes is shorter than its header")
    out = PyBytes_FromStringAndSize(NULL, size)
    cdef uint8_t* target = <uint8_t*>PyBytes_AS_STRING(out)
    memcpy(target, &view[0], size)
    _put64(target, <uint64_t>base_offset)
    if partition_leader_epoch is not None:
        _put32(target + 12, <uint32_t><int32_t>partition_leader_epoch)
    return out


def decode_record_batch(data):
    """Decodes one uncompressed batch: (header tuple, records list, size_bytes).

    The header tuple is (base_offset, partition_leader_epoch, attributes,
    last_offset_delta, base_timestamp, max_timestamp, producer_id,
    producer_epoch, base_sequence). Each record is (offset_delta,
    timestamp_delta, key, value, headers) with headers a list of
    (str, bytes | None) pairs.
    """
    raw = bytes(data)
    cdef const uint8_t* ptr = <const uint8_t*><const char*>raw
    cdef Py_ssize_t size = _check_batch(ptr, len(raw), 0)
    header = (
        _be64(ptr), _be32(ptr + 12), _be16(ptr + 21), _be32(ptr + 23), _be64(ptr + 27),
        _be64(ptr + 35), _be64(ptr + 43), _be16(ptr + 51), _be32(ptr + 53),
    )
    cdef Py_ssize_t count = _be32(ptr + 57)
    reader = Reader(raw[_BATCH_HEADER_BYTES:size])
    records = []
    cdef Py_ssize_t index, length
    for index in range(count):
        length = reader.varint()
        if length < 0 or length > reader.remaining:
            raise ProtocolError(f"record {index} has length {length}, past the end of the batch")
        # Each record is read through its own reader, so that no field can
        # run into the next record whatever lengths it declares.
        try:
            records.append(_decode_record(Reader(reader._take(length, "record"))))
        except ProtocolError as error:
            raise ProtocolError(f"record {index} of the batch: {error}") from None
    reader.expect_end("records of the batch")
    return header, records, size


cdef tuple _decode_record(Reader reader):
    reader.int8()
    timestamp_delta = reader.varlong()
    offset_delta = reader.varint()
    key = _varbytes(reader, "key")
    value = _varbytes(reader, "value")
    cdef Py_ssize_t header_count = reader.varint(), h
    if header_count < 0 or header_count > reader.remaining:
        raise ProtocolError(f"header count {header_count} does not fit the record")
    headers = []
    for h in range(header_count):
        name = _varbytes(reader, "header key")
        if name is None:
            raise ProtocolError("null header key")
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("header key is not UTF-8") from None
        headers.append((text, _varbytes(reader, "header value")))
    reader.expect_end("record's fields")
    return (offset_delta, timestamp_delta, key, value, headers)


cdef object _varbytes(Reader reader, str what):
    cdef Py_ssize_t length = reader.varint()
    if length == -1:
        return None
    if length < 0:
        raise ProtocolError(f"negative {what} length {length}")
    return reader._take(length, what)


def encode_record_batch(
    records,
    int64_t base_offset=0,
    int64_t base_timestamp=0,
    int64_t max_timestamp=-1,
    int64_t producer_id=-1,
    int producer_epoch=-1,
    int base_sequence=-1,
    int partition_leader_epoch=-1,
    int attributes=0,
):
    """Encodes one uncompressed batch from (offset_delta, timestamp_delta, key, value, headers).

    ``max_timestamp`` of -1 means the largest record timestamp.
    """
    if attributes & 0x07:
        raise InvalidArgument("only uncompressed batches can be encoded (compression bits must be 0)")
    body = Writer()
    record = Writer()
    cdef int64_t last_offset_delta = -1, max_delta = 0
    cdef Py_ssize_t count = 0
    for offset_delta, timestamp_delta, key, value, headers in records:
        record = Writer()
        record.int8(0)
        record.varlong(timestamp_delta)
        record.varint(offset_delta)
        _put_varbytes(record, key)
        _put_varbytes(record, value)
        record.varint(len(headers))
        for name, header_value in headers:
            _put_varbytes(record, name.encode("utf-8"))
            _put_varbytes(record, header_value)
        encoded = record.getvalue()
        body.varint(len(encoded))
        body.raw(encoded)
        if offset_delta > last_offset_delta:
            last_offset_delta = offset_delta
        if count == 0 or timestamp_delta > max_delta:
            max_delta = timestamp_delta
        count += 1
    if count == 0:
        raise InvalidArgument("a record batch needs at least one record")
    if max_timestamp == -1:
        max_timestamp = base_timestamp + max_delta
    tail = Writer()
    tail.int16(attributes)
    tail.int32(last_offset_delta)
    tail.int64(base_timestamp)
    tail.int64(max_timestamp)
    tail.int64(producer_id)
    tail.int16(producer_epoch)
    tail.int32(base_sequence)
    tail.int32(count)
    tail.raw(body.getvalue())
    covered = tail.getvalue()
    head = Writer()
    head.int64(base_offset)
    head.int32(len(covered) + 9)
    head.int32(partition_leader_epoch)
    head.int8(2)
    head.uint32(crc32c(covered))
    head.raw(covered)
    return head.getvalue()


cdef void _put_varbytes(Writer writer, object value):
    if value is None:
        writer.varint(-1)
    else:
        raw = bytes(value)
        writer.varint(len(raw))
        writer.raw(raw)
