"""atheris fuzz target for the RESP parsers.

    python tests/fuzz/fuzz_resp.py -runs=20000        # a bounded smoke run
    python tests/fuzz/fuzz_resp.py corpus_dir/        # open-ended fuzzing

Each input is parsed by a ReplyParser and a CommandParser with small limits,
once whole and once in chunks chosen by the input itself. The only exception
allowed out is ProtocolError, and both splits must agree: the same values
before the same error (or none). Anything else (a crash, another exception,
a disagreement) is a finding.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports():
    from sdi import resp
    from sdi.errors import ProtocolError

LIMITS = {"bulk_bytes_max": 4096, "aggregate_length_max": 64, "buffer_bytes_max": 1 << 16}


def run(parser: Any, chunks: list[bytes]) -> tuple[list[str], str | None]:
    """The values parsed and the protocol error that stopped the parser, if any.

    Values completed before an error are returned by the call that met it and
    the error is raised by the next call, so one more call drains it.
    """
    values: list[Any] = []
    for chunk in [*chunks, b""]:
        try:
            values += parser.parse(chunk) if chunk else parser.read_all()
        except ProtocolError:
            break
    error = parser.error
    return [repr(value) for value in values], error and error.split(" at stream offset")[0]


# Pieces of RESP that inputs are built from in token mode: the parser is
# compiled without coverage instrumentation, so libFuzzer gets little feedback
# from it and purely random bytes rarely get past the first type byte.
TOKENS = [
    b"+OK\r\n",
    b"-ERR x\r\n",
    b":1\r\n",
    b":-9223372036854775808\r\n",
    b"$3\r\nabc\r\n",
    b"$-1\r\n",
    b"$0\r\n\r\n",
    b"*-1\r\n",
    b"*0\r\n",
    b"*1\r\n",
    b"*2\r\n",
    b"%1\r\n",
    b"%0\r\n",
    b"~2\r\n",
    b">1\r\n",
    b"|1\r\n",
    b"|0\r\n",
    b"_\r\n",
    b"#t\r\n",
    b",1.5\r\n",
    b",nan\r\n",
    b"(123\r\n",
    b"!3\r\nERR\r\n",
    b"=5\r\ntxt:x\r\n",
    b"PING\r\n",
    b'"a\\x4',
    b"$",
    b"*",
    b"\r",
    b"\n",
    b"\r\n",
    b"-1",
    b"99999999999999999999",
    b"'",
    b" ",
]


def build(data: bytes) -> tuple[bytes, int]:
    """The stream to parse and the chunk size, both chosen by the input."""
    provider = atheris.FuzzedDataProvider(data)
    step = provider.ConsumeIntInRange(1, 9)
    mode = provider.ConsumeIntInRange(0, 2)
    if mode == 0:
        return provider.ConsumeBytes(provider.remaining_bytes()), step
    if mode == 1:
        count = provider.ConsumeIntInRange(0, 40)
        picks = [TOKENS[provider.ConsumeIntInRange(0, len(TOKENS) - 1)] for _ in range(count)]
        return b"".join(picks), step
    stream = bytearray(SEEDS[provider.ConsumeIntInRange(0, len(SEEDS) - 1)])
    for _ in range(provider.ConsumeIntInRange(0, 4)):
        at = provider.ConsumeIntInRange(0, len(stream))
        action = provider.ConsumeIntInRange(0, 2)
        if action == 0:
            stream[at:at] = provider.ConsumeBytes(provider.ConsumeIntInRange(1, 3))
        elif action == 1:
            del stream[at : at + provider.ConsumeIntInRange(1, 3)]
        else:
            stream = stream[:at]
    return bytes(stream), step


def test_one_input(data: bytes) -> None:
    body, step = build(data)
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    for make in (
        lambda: resp.ReplyParser(depth_max=8, line_bytes_max=256, **LIMITS),
        lambda: resp.ReplyParser(keep_attributes=True, **LIMITS),
        lambda: resp.CommandParser(inline_bytes_max=256, **LIMITS),
    ):
        whole = run(make(), [body])
        split = run(make(), chunks)
        if whole != split:
            raise AssertionError(f"whole {whole!r} != split {split!r} for {body!r}")


SEEDS = [
    b"+OK\r\n:1\r\n$3\r\nabc\r\n*2\r\n$-1\r\n*-1\r\n",
    b"%1\r\n+a\r\n~1\r\n,1.5\r\n>1\r\n#t\r\n|1\r\n_\r\n(12\r\n!1\r\nx\r\n=5\r\ntxt:a\r\n",
    b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\nset \"a\\x41\" 'b'\n",
]


def main() -> None:
    argv = list(sys.argv)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        # No corpus given: start from the seeds, so mutation begins near RESP.
        # (The parser is compiled without coverage instrumentation, so the
        # seeds carry most of the structure the mutations explore.)
        corpus = Path(tempfile.mkdtemp(prefix="fuzz_resp_"))
        for index, seed in enumerate(SEEDS):
            (corpus / f"seed{index}").write_bytes(seed)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
