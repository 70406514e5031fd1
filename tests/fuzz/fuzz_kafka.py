"""atheris fuzz target for the Kafka codec.

    python tests/fuzz/fuzz_kafka.py -runs=5000        # a bounded smoke run
    python tests/fuzz/fuzz_kafka.py corpus_dir/       # open-ended fuzzing

Each input is read three ways: as a request stream (framed whole and in
chunks chosen by the input, then each frame's header and body decoded), and
as a record set (validated, and decoded batch by batch). The only exception
allowed out is ProtocolError; both splits must give the same frames, and a
record set that validates must decode to the record counts validation saw.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from sdi.errors import ProtocolError
    from sdi.mq import protocol


def frames_of(chunks: list[bytes]) -> tuple[list[bytes], str | None]:
    parser = protocol.FrameParser(frame_bytes_max=4096)
    frames: list[bytes] = []
    # One more empty feed drains an error met after complete frames.
    for chunk in [*chunks, b""]:
        try:
            frames += parser.feed(chunk)
        except ProtocolError:
            break
    return frames, parser.error


def check_requests(frames: list[bytes]) -> None:
    for frame in frames:
        try:
            header = protocol.parse_request_header(frame)
            protocol.decode_request(header)
        except ProtocolError:
            continue


def check_record_set(data: bytes) -> None:
    try:
        infos = protocol.validate_record_batches(data)
    except ProtocolError:
        infos = None
    try:
        batches = protocol.decode_record_batches(data)
    except ProtocolError:
        batches = None
    if (infos is None) != (batches is None):
        raise AssertionError(f"validation and decoding disagree on {data!r}")
    if infos is not None and batches is not None:
        counts = [info.records_count for info in infos]
        if counts != [len(batch.records) for batch in batches]:
            raise AssertionError(f"record counts disagree on {data!r}")


def build(data: bytes) -> tuple[bytes, int]:
    """The bytes to read and the chunk size, both chosen by the input."""
    provider = atheris.FuzzedDataProvider(data)
    step = provider.ConsumeIntInRange(1, 9)
    mode = provider.ConsumeIntInRange(0, 1)
    if mode == 0:
        return provider.ConsumeBytes(provider.remaining_bytes()), step
    stream = bytearray(SEEDS[provider.ConsumeIntInRange(0, len(SEEDS) - 1)])
    for _ in range(provider.ConsumeIntInRange(0, 4)):
        at = provider.ConsumeIntInRange(0, len(stream))
        action = provider.ConsumeIntInRange(0, 2)
        if action == 0:
            stream[at : at + 1] = provider.ConsumeBytes(provider.ConsumeIntInRange(1, 3))
        elif action == 1:
            del stream[at : at + provider.ConsumeIntInRange(1, 3)]
        else:
            stream = stream[:at]
    return bytes(stream), step


def test_one_input(data: bytes) -> None:
    body, step = build(data)
    whole = frames_of([body])
    split = frames_of([body[i : i + step] for i in range(0, len(body), step)])
    if whole != split:
        raise AssertionError(f"whole {whole!r} != split {split!r} for {body!r}")
    check_requests(whole[0])
    check_record_set(body)


def _request(api_key: int, version: int, body: bytes) -> bytes:
    writer = protocol.Writer()
    for value in (api_key, version):
        writer.int16(value)
    writer.int32(1)
    writer.nullable_string("c")
    writer.raw(body)
    frame = writer.getvalue()
    return len(frame).to_bytes(4, "big") + frame


_BATCH = protocol.encode_record_batch(
    [protocol.Record(b"k", b"v", [("h", b"x")], 0, 1), protocol.Record(None, b"w", [], 1, 2)]
)
SEEDS = [
    _request(18, 0, b"") + _request(3, 1, b"\x00\x00\x00\x01\x00\x01t"),
    _request(
        0,
        3,
        b"\xff\xff\x00\x01\x00\x00\x05\xdc\x00\x00\x00\x01\x00\x01t\x00\x00\x00\x01"
        b"\x00\x00\x00\x00" + len(_BATCH).to_bytes(4, "big") + _BATCH,
    ),
    _request(
        2,
        1,
        b"\xff\xff\xff\xff\x00\x00\x00\x01\x00\x01t\x00\x00\x00\x01\x00\x00\x00\x00"
        b"\xff\xff\xff\xff\xff\xff\xff\xfe",
    ),
    _BATCH,
    _BATCH + protocol.rewrite_base_offset(_BATCH, 2),
]


def main() -> None:
    argv = list(sys.argv)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        # No corpus given: start from the seeds, so mutation begins near valid input.
        corpus = Path(tempfile.mkdtemp(prefix="fuzz_kafka_"))
        for index, seed in enumerate(SEEDS):
            (corpus / f"seed{index}").write_bytes(seed)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
