"""atheris fuzz target for the FIX codec and the gateway session.

    python tests/fuzz/fuzz_fix.py -runs=20000        # a bounded smoke run
    python tests/fuzz/fuzz_fix.py corpus_dir/        # open-ended fuzzing

Each input becomes a byte stream (raw, spliced from FIX pieces, or a mutated
seed) that is framed whole and in chunks chosen by the input: both must give
the same messages and garbled reports before the same error (or none), and
the only exception allowed out of the parser is ProtocolError. The same
stream is then fed to a logged-on session, which must never raise.
"""

from __future__ import annotations

import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from sdi.errors import ProtocolError
    from sdi.exchange import fix


def run(chunks: list[bytes]) -> tuple[list[str], str | None]:
    """What a small-limit parser frames from ``chunks``, and the error that stopped it."""
    parser = fix.FixParser(message_bytes_max=512, fields_max=16, tag_max=9999)
    items: list[str] = []
    for chunk in [*chunks, b""]:
        try:
            items += map(repr, parser.parse(chunk) if chunk else parser.read_all())
        except ProtocolError:
            break
    error = parser.error
    return items, error and error.split(" at stream offset")[0]


def message(msg_type: bytes, *fields: tuple[int, str]) -> bytes:
    return fix.encode(msg_type, [(49, "ALPHA"), (56, "SDIX"), (34, 2), (52, "x"), *fields])


PIECES = [
    message(b"0"),
    message(b"D", (11, "a"), (55, "ACME"), (54, "1"), (38, "10"), (40, "2"), (44, "1.5")),
    message(b"F", (41, "a"), (11, "b"), (55, "ACME"), (54, "1")),
    message(b"1", (112, "t")),
    b"8=FIX.4.4\x01",
    b"9=12\x01",
    b"35=D\x01",
    b"10=000\x01",
    b"8=FIX.4.2\x01",
    b"8=FIX",
    b"\x01",
    b"=",
    b"49=",
    b"0",
]
SEEDS = [PIECES[0] + PIECES[1], PIECES[2] + b"xx" + PIECES[3]]


def build(data: bytes) -> tuple[bytes, int]:
    provider = atheris.FuzzedDataProvider(data)
    step = provider.ConsumeIntInRange(1, 13)
    mode = provider.ConsumeIntInRange(0, 2)
    if mode == 0:
        return provider.ConsumeBytes(provider.remaining_bytes()), step
    if mode == 1:
        count = provider.ConsumeIntInRange(0, 12)
        picks = [PIECES[provider.ConsumeIntInRange(0, len(PIECES) - 1)] for _ in range(count)]
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
            stream[at : at + 1] = bytes([provider.ConsumeIntInRange(0, 255)])
    return bytes(stream), step


def session() -> fix.Session:
    gateway = fix.Gateway(
        "SDIX",
        instruments={"ACME": fix.Instrument(symbol_id=0, price_unit=Decimal("0.1"))},
        peers={"ALPHA": fix.Peer(password="pw", account=0)},
    )
    connection = gateway.connect()
    connection.receive(fix.Client("ALPHA", "SDIX").logon("pw"), 0)
    return connection


def test_one_input(data: bytes) -> None:
    body, step = build(data)
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    whole = run([body])
    split = run(chunks)
    if whole != split:
        raise AssertionError(f"whole {whole!r} != split {split!r} for {body!r}")
    connection = session()
    for chunk in chunks:
        if connection.state is fix.SessionState.CLOSED:
            break
        connection.receive(chunk, 1)


def main() -> None:
    argv = list(sys.argv)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="fuzz_fix_"))
        for index, seed in enumerate(SEEDS):
            (corpus / f"seed{index}").write_bytes(seed)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
