"""Mail search: sdi's compiled LSM inverted index beside SQLite FTS5 and tantivy.

The corpus is ``n`` generated mail-like documents (deterministic, seed 7) split over
``users`` mailboxes: a sender (``First Last <first.last@domain>``), recipients (the
mailbox owner and sometimes a Cc), a subject of 3-8 words, a body of 100-150 words, and
on one mail in five an attachment name (``word-word.pdf``). Words come from a 30,000
word made-up vocabulary with Zipf-like frequencies (weight ``1 / (rank + 3)``). Mail
arrives in id order, so "newest first" is descending id (and date) in every engine.
Every engine gets the same documents and the same queries:

* **sdi**: ``sdi._rust.lsm.LsmIndex`` (``sync="never"``, background merging, default
  64 MiB memtable, tokenizing on every CPU), ``write_batch`` of ``BATCH`` adds; per-user
  mail ids (a counter per mailbox, as the email service assigns them); ``search(user,
  query, limit=50)``, newest first.
* **SQLite FTS5**: one contentless table (``content=''``: index only, like the others)
  with columns ``sender, recipients, subject, body, attachment, user`` and ``date
  UNINDEXED``, ``rowid`` = arrival order; ``journal_mode=WAL``, ``synchronous=OFF``
  (survives a process crash, not a power cut: the same promise as ``sync="never"``),
  a 256 MiB page cache, ``executemany`` of ``BATCH`` rows per transaction, and the
  user as a ``user:uN AND (...)`` term so the index filters by mailbox;
  ``ORDER BY rowid DESC LIMIT 50`` (FTS5 walks its doclists newest first and stops).
* **tantivy** (tantivy-py): text fields of the same names with the default tokenizer,
  indexed but not stored, ``user`` an indexed i64, ``date`` a fast i64; one writer
  with a 256 MiB heap on two threads, one commit at the end; queries through the
  tantivy query parser as ``+user:N +(...)``, ordered by the ``date`` fast field,
  newest first, top 50. Its parser drops ``*``, so a prefix query is a regex
  (``field:/pre.*/``) on every text field.

Figures:

* **indexing, docs/s**: the whole corpus, from the first batch to the last flush /
  commit (sdi: ``flush()``; FTS5: the last ``COMMIT``; tantivy: ``commit()``). The
  batches and rows are built before the clock starts; tantivy's ``Document`` objects
  are built inside it (that is its API's conversion, as ``write_batch`` converts its
  tuples). Merges still running afterwards (sdi's, tantivy's) are waited for before
  the queries and the disk figure, outside the clock; the note gives how long.
* **query latency, p50 and p99 in ms**, over ``queries_per_kind`` queries of each of
  seven kinds, each for a random user: a single term, two terms (AND), a prefix
  (``pre*``, three letters), a phrase of two adjacent body words, ``subject:word``,
  ``a OR b``, and ``a NOT b``; each includes parsing the query and getting the ids into
  Python. The worst kind (highest p99) is in the note, and each kind's p99 has a row.
* **on-disk bytes per document**: every file of the engine's directory after merging.

Before timing, three queries of each kind run with the largest limit (10,000) on all
three engines and their document sets are compared; a mismatch is printed as a warning
(the tokenizers differ: sdi also indexes whole addresses) and does not fail the run.

Goals (issue 7): indexing at least as fast as FTS5, p99 query latency under 5 ms.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import Progress, Result, Scale, percentile  # noqa: E402
from sdi._rust.lsm import SEARCH_RESULTS_MAX, LsmIndex  # noqa: E402

SIZES = {  # scale: (documents, users, queries per kind)
    "tiny": (3_000, 20, 20),
    "quick": (100_000, 100, 200),
    "full": (1_000_000, 100, 500),
}
BATCH = 5_000  # documents per write_batch / FTS5 transaction
VOCABULARY = 30_000
LIMIT = 50
DATE_BASE = 1_700_000_000  # the date of mail 0, in seconds; mail i arrives at DATE_BASE + i
TEXT_FIELDS = ("sender", "recipients", "subject", "body", "attachment")
SDI_FIELDS = ("from", "to", "subject", "body", "attachment")
KINDS = ("term", "and", "prefix", "phrase", "field", "or", "not")
SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou") + tuple(
    c + "r" for c in "aeiou"
)


@dataclass
class Corpus:
    """The documents as columns (``gid`` = position = arrival order)."""

    users: list[int] = field(default_factory=list)
    local: list[int] = field(default_factory=list)  # the per-user id sdi is given
    sender: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    subject: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    attachment: list[str] = field(default_factory=list)
    gids_of_user: list[list[int]] = field(default_factory=list)  # local id - 1 -> gid

    def __len__(self) -> int:
        return len(self.users)

    def texts(self, gid: int) -> tuple[str, str, str, str, str]:
        return (
            self.sender[gid],
            self.recipients[gid],
            self.subject[gid],
            self.body[gid],
            self.attachment[gid],
        )


@dataclass
class Query:
    kind: str
    user: int
    sdi: str
    fts: str
    tantivy: str


def _vocabulary(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct made-up words of 2-4 syllables, in frequency-rank order."""
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < count:
        lengths = rng.integers(2, 5, count)
        picks = rng.integers(0, len(SYLLABLES), (count, 4))
        for length, row in zip(lengths.tolist(), picks.tolist(), strict=True):
            word = "".join(SYLLABLES[i] for i in row[:length])
            if word not in seen:
                seen.add(word)
                words.append(word)
                if len(words) == count:
                    break
    return words


def _corpus(n: int, users: int, progress: Progress) -> tuple[Corpus, list[str], np.ndarray]:
    """The documents, the vocabulary and its sampling weights."""
    rng = np.random.default_rng(7)
    vocab = _vocabulary(rng, VOCABULARY)
    weights = 1.0 / (np.arange(VOCABULARY) + 3.0)
    weights /= weights.sum()
    vocab_array = np.array(vocab, dtype=object)
    names = [w.capitalize() for w in _vocabulary(np.random.default_rng(70), 600)]
    firsts, lasts = names[:300], names[300:]
    domains = [f"{w}.com" for w in vocab[2000:2040]]

    def person(i: int) -> tuple[str, str]:
        first, last = firsts[i % 300], lasts[(i * 7919) % 300]
        return f"{first} {last}", f"{first.lower()}.{last.lower()}@{domains[i % 40]}"

    owners = [person(u) for u in range(users)]
    corpus = Corpus(gids_of_user=[[] for _ in range(users)])
    chunk = 20_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        user_of = rng.integers(0, users, m).tolist()
        senders = rng.integers(0, 5_000, m).tolist()
        ccs = rng.integers(0, 5_000, m).tolist()
        has_cc = (rng.random(m) < 0.3).tolist()
        body_len = rng.integers(100, 151, m)
        subject_len = rng.integers(3, 9, m)
        body_words = vocab_array[rng.choice(VOCABULARY, int(body_len.sum()), p=weights)]
        subject_words = vocab_array[rng.choice(VOCABULARY, int(subject_len.sum()), p=weights)]
        has_attachment = (rng.random(m) < 0.2).tolist()
        attach_words = rng.integers(0, 3_000, (m, 2)).tolist()
        extensions = rng.integers(0, 4, m).tolist()
        body_ends = np.cumsum(body_len).tolist()
        subject_ends = np.cumsum(subject_len).tolist()
        body_list = body_words.tolist()
        subject_list = subject_words.tolist()
        b0 = s0 = 0
        for i in range(m):
            user = user_of[i]
            gid = start + i
            name, address = person(senders[i] + users)
            owner_name, owner_address = owners[user]
            to = f"{owner_name} <{owner_address}>"
            if has_cc[i]:
                cc_name, cc_address = person(ccs[i] + users)
                to += f", {cc_name} <{cc_address}>"
            corpus.users.append(user)
            corpus.gids_of_user[user].append(gid)
            corpus.local.append(len(corpus.gids_of_user[user]))
            corpus.sender.append(f"{name} <{address}>")
            corpus.recipients.append(to)
            corpus.subject.append(" ".join(subject_list[s0 : subject_ends[i]]))
            corpus.body.append(" ".join(body_list[b0 : body_ends[i]]))
            if has_attachment[i]:
                a, b = attach_words[i]
                ext = ("pdf", "docx", "xlsx", "png")[extensions[i]]
                corpus.attachment.append(f"{vocab[a]}-{vocab[b]}.{ext}")
            else:
                corpus.attachment.append("")
            b0, s0 = body_ends[i], subject_ends[i]
        if (start + m) % 200_000 == 0 or start + m == n:
            progress(f"generated {start + m:,}/{n:,} documents")
    return corpus, vocab, weights


def _queries(corpus: Corpus, vocab: list[str], per_kind: int, users: int) -> list[Query]:
    """``per_kind`` queries of each kind, for random users, interleaved by kind."""
    rng = np.random.default_rng(77)

    def word(low: int, high: int) -> str:
        return vocab[int(rng.integers(low, high))]

    def some_doc(user: int) -> int:
        gids = corpus.gids_of_user[user]
        return gids[int(rng.integers(0, len(gids)))]

    prefixes = [f"{f}:/{{p}}.*/" for f in TEXT_FIELDS]
    out: list[Query] = []
    for _ in range(per_kind):
        for kind in KINDS:
            user = int(rng.integers(0, users))
            while not corpus.gids_of_user[user]:
                user = int(rng.integers(0, users))
            if kind == "term":
                w = word(50, 3_000)
                q = (w, w, w)
            elif kind == "and":
                a, b = word(5, 300), word(50, 3_000)
                q = (f"{a} {b}", f"{a} {b}", f"+{a} +{b}")
            elif kind == "prefix":
                p = word(20, 2_000)[:3]
                regex = " ".join(x.replace("{p}", p) for x in prefixes)
                q = (f"{p}*", f"{p}*", regex)
            elif kind == "phrase":
                words = corpus.body[some_doc(user)].split()
                at = int(rng.integers(0, len(words) - 1))
                phrase = f'"{words[at]} {words[at + 1]}"'
                q = (phrase, phrase, phrase)
            elif kind == "field":
                w = rng.choice(corpus.subject[some_doc(user)].split())
                q = (f"subject:{w}", f"subject:{w}", f"subject:{w}")
            elif kind == "or":
                a, b = word(100, 5_000), word(100, 5_000)
                q = (f"{a} OR {b}", f"{a} OR {b}", f"{a} OR {b}")
            else:
                a, b = word(5, 300), word(5, 300)
                q = (f"{a} -{b}", f"{a} NOT {b}", f"+{a} -{b}")
            out.append(
                Query(kind, user, q[0], f"user:u{user} AND ({q[1]})", f"+user:{user} +({q[2]})")
            )
    return out


def _disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- engines ----------------------------------------------------------------------


class Sdi:
    name = "sdi"

    def __init__(self, directory: Path) -> None:
        self.path = directory / "lsm"
        self.index = LsmIndex(self.path, sync="never")
        self.corpus: Corpus | None = None

    def load(self, corpus: Corpus) -> tuple[float, float]:
        """(ingest seconds up to the flush, seconds of merging after it)."""
        self.corpus = corpus
        batches = []
        for start in range(0, len(corpus), BATCH):
            ops = []
            for gid in range(start, min(start + BATCH, len(corpus))):
                fields = [
                    (name, text)
                    for name, text in zip(SDI_FIELDS, corpus.texts(gid), strict=True)
                    if text
                ]
                ops.append(
                    ("add", corpus.users[gid], corpus.local[gid], fields, DATE_BASE + gid, 0, 0)
                )
            batches.append(ops)
        start_time = time.perf_counter()
        for ops in batches:
            self.index.write_batch(ops)
        self.index.flush()
        ingest = time.perf_counter() - start_time
        del batches
        start_time = time.perf_counter()
        while self.index.compact_step():
            pass
        return ingest, time.perf_counter() - start_time

    def search(self, query: Query, limit: int = LIMIT) -> list[int]:
        return self.index.search(query.user, query.sdi, limit=limit)

    def gids(self, query: Query) -> set[int]:
        assert self.corpus is not None
        gids = self.corpus.gids_of_user[query.user]
        return {gids[i - 1] for i in self.search(query, SEARCH_RESULTS_MAX)}

    def disk(self) -> int:
        return _disk_bytes(self.path)

    def close(self) -> None:
        self.index.close()


class Fts5:
    name = "SQLite FTS5"

    def __init__(self, directory: Path) -> None:
        self.path = directory / "fts5.db"
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("PRAGMA cache_size=-262144")
        self.db.execute(
            "CREATE VIRTUAL TABLE mail USING fts5("
            "sender, recipients, subject, body, attachment, user, date UNINDEXED, content='')"
        )

    def load(self, corpus: Corpus) -> tuple[float, float]:
        rows = [
            (gid, *corpus.texts(gid), f"u{corpus.users[gid]}", DATE_BASE + gid)
            for gid in range(len(corpus))
        ]
        insert = (
            "INSERT INTO mail(rowid, sender, recipients, subject, body, attachment, user, date)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        start_time = time.perf_counter()
        for start in range(0, len(rows), BATCH):
            self.db.execute("BEGIN")
            self.db.executemany(insert, rows[start : start + BATCH])
            self.db.execute("COMMIT")
        ingest = time.perf_counter() - start_time
        start_time = time.perf_counter()
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return ingest, time.perf_counter() - start_time

    def search(self, query: Query, limit: int = LIMIT) -> list[int]:
        sql = "SELECT rowid FROM mail WHERE mail MATCH ? ORDER BY rowid DESC LIMIT ?"
        return [row[0] for row in self.db.execute(sql, (query.fts, limit)).fetchall()]

    def gids(self, query: Query) -> set[int]:
        return set(self.search(query, SEARCH_RESULTS_MAX))

    def disk(self) -> int:
        return sum(
            _disk_bytes(Path(str(self.path) + suffix))
            for suffix in ("", "-wal", "-shm")
            if Path(str(self.path) + suffix).exists()
        )

    def close(self) -> None:
        self.db.close()


class Tantivy:
    name = "tantivy"

    def __init__(self, directory: Path) -> None:
        import tantivy

        self.tantivy = tantivy
        self.path = directory / "tantivy"
        self.path.mkdir()
        builder = tantivy.SchemaBuilder()
        for name in TEXT_FIELDS:
            builder.add_text_field(name, stored=False)
        builder.add_integer_field("user", indexed=True, fast=True)
        builder.add_integer_field("date", indexed=False, fast=True)
        self.schema = builder.build()
        self.index = tantivy.Index(self.schema, path=str(self.path))
        self.searcher: object = None

    def load(self, corpus: Corpus) -> tuple[float, float]:
        document = self.tantivy.Document
        writer = self.index.writer(256 << 20, 2)
        start_time = time.perf_counter()
        for gid in range(len(corpus)):
            sender, recipients, subject, body, attachment = corpus.texts(gid)
            writer.add_document(
                document(
                    sender=sender,
                    recipients=recipients,
                    subject=subject,
                    body=body,
                    attachment=attachment,
                    user=corpus.users[gid],
                    date=DATE_BASE + gid,
                )
            )
        writer.commit()
        ingest = time.perf_counter() - start_time
        start_time = time.perf_counter()
        writer.wait_merging_threads()
        settle = time.perf_counter() - start_time
        self.index.reload()
        self.searcher = self.index.searcher()
        return ingest, settle

    def search(self, query: Query, limit: int = LIMIT) -> list[int]:
        parsed = self.index.parse_query(query.tantivy, list(TEXT_FIELDS), allow_regexes=True)
        hits = self.searcher.search(parsed, limit, count=False, order_by_field="date").hits  # type: ignore[attr-defined]
        return [key - DATE_BASE for key, _ in hits]

    def gids(self, query: Query) -> set[int]:
        return set(self.search(query, SEARCH_RESULTS_MAX))

    def disk(self) -> int:
        return _disk_bytes(self.path)

    def close(self) -> None:
        self.searcher = None


Engine = Sdi | Fts5 | Tantivy


def _latencies(engine: Engine, queries: list[Query]) -> dict[str, list[float]]:
    """Milliseconds per query, by kind (and ``all``), each sorted."""
    for query in queries[: min(len(queries), 70)]:  # warm up: caches, code paths
        engine.search(query)
    by_kind: dict[str, list[float]] = {kind: [] for kind in KINDS}
    clock = time.perf_counter
    for query in queries:
        start = clock()
        engine.search(query)
        by_kind[query.kind].append((clock() - start) * 1e3)
    by_kind["all"] = [t for kind in KINDS for t in by_kind[kind]]
    return {kind: sorted(values) for kind, values in by_kind.items()}


def _compare(engines: list[Engine], queries: list[Query], progress: Progress) -> None:
    """Warns where the engines' result sets (limit 10,000) differ on a few queries of each kind."""
    sample = [q for kind in KINDS for q in [x for x in queries if x.kind == kind][:3]]
    mismatches = 0
    for query in sample:
        sets = {engine.name: engine.gids(query) for engine in engines}
        reference = sets["sdi"]
        for name, found in sets.items():
            if found != reference:
                mismatches += 1
                print(
                    f"warning: search: {name} finds {len(found)} docs for {query.kind} query "
                    f"{query.sdi!r} of user {query.user}, sdi {len(reference)} "
                    f"({len(found - reference)} only in {name}, "
                    f"{len(reference - found)} only in sdi)",
                    file=sys.stderr,
                )
    if not mismatches:
        progress(
            f"result sets agree on {len(sample)} sample queries (limit {SEARCH_RESULTS_MAX:,})"
        )


def _sync_always_batch_ms(directory: Path, corpus: Corpus) -> tuple[float, float]:
    """Median ms of a 100-doc write_batch under sync="always" and sync="never"."""
    out = []
    for sync in ("always", "never"):
        index = LsmIndex(directory / f"lsm-{sync}", sync=sync)
        times = []
        for b in range(20):
            ops = [
                (
                    "add",
                    corpus.users[g],
                    corpus.local[g],
                    [(n, t) for n, t in zip(SDI_FIELDS, corpus.texts(g), strict=True) if t],
                    DATE_BASE + g,
                    0,
                    0,
                )
                for g in range(b * 100, min(len(corpus), (b + 1) * 100))
            ]
            start = time.perf_counter()
            index.write_batch(ops)
            times.append((time.perf_counter() - start) * 1e3)
        index.close()
        out.append(statistics.median(times))
    return out[0], out[1]


def run(scale: Scale, progress: Progress) -> list[Result]:
    n, users, per_kind = SIZES[scale]
    corpus, vocab, _ = _corpus(n, users, progress)
    queries = _queries(corpus, vocab, per_kind, users)
    factories: list[tuple[str, Callable[[Path], Engine]]] = [
        ("sdi", Sdi),
        ("SQLite FTS5", Fts5),
        ("tantivy", Tantivy),
    ]
    label = f"{n / 1e6:g}M docs" if n >= 1_000_000 else f"{n // 1000:g}k docs"
    engines: list[Engine] = []
    ingest: dict[str, float] = {}
    settle: dict[str, float] = {}
    disk: dict[str, float] = {}
    latencies: dict[str, dict[str, list[float]]] = {}
    directory = Path(tempfile.mkdtemp(prefix="sdi-search-bench-"))
    try:
        for name, factory in factories:
            try:
                engine = factory(directory)
            except ImportError as error:
                print(f"search: {name} left out: cannot import it ({error})", file=sys.stderr)
                continue
            progress(f"{name}: indexing {n:,} documents")
            seconds, settle[name] = engine.load(corpus)
            ingest[name] = n / seconds
            disk[name] = engine.disk() / n
            progress(
                f"{name}: {ingest[name]:,.0f} docs/s ({seconds:.1f} s), merges after "
                f"{settle[name]:.1f} s, {disk[name]:,.0f} bytes/doc on disk"
            )
            engines.append(engine)
        _compare(engines, queries, progress)
        for engine in engines:
            progress(f"{engine.name}: {len(queries):,} queries")
            latencies[engine.name] = _latencies(engine, queries)
            summary = ", ".join(
                f"{kind} {percentile(values, 0.5):.2f}/{percentile(values, 0.99):.2f}"
                for kind, values in latencies[engine.name].items()
            )
            progress(f"{engine.name} p50/p99 ms: {summary}")
        always_ms, never_ms = _sync_always_batch_ms(directory, corpus)
    finally:
        for engine in engines:
            with contextlib.suppress(Exception):
                engine.close()
        shutil.rmtree(directory, ignore_errors=True)

    def others(values: dict[str, float]) -> dict[str, float]:
        return {name: value for name, value in values.items() if name != "sdi"}

    def worst(name: str) -> str:
        kinds = latencies[name]
        kind = max(KINDS, key=lambda k: percentile(kinds[k], 0.99))
        return f"{name} {kind} ({percentile(kinds[kind], 0.99):.2f} ms)"

    def at(fraction: float, kind: str = "all") -> dict[str, float]:
        return {name: percentile(values[kind], fraction) for name, values in latencies.items()}

    engines_note = "; ".join(f"{name} {settle[name]:.1f} s" for name in settle)
    queries_note = f"{per_kind} queries of each of {len(KINDS)} kinds, {users} users, top {LIMIT}"
    results = [
        Result(
            f"indexing, {label}",
            "docs/s",
            True,
            ingest["sdi"],
            others(ingest),
            note=f"batches of {BATCH:,} (sdi write_batch sync=never; FTS5 one transaction, "
            f"synchronous=OFF, WAL); tantivy 2 threads, 256 MiB, one commit. Merging after "
            f"the flush/commit (not in the rate): {engines_note}. A 100-doc write_batch "
            f'takes {always_ms:.2f} ms with sync="always", {never_ms:.2f} ms with "never"',
        ),
    ]
    p50, p99 = at(0.5), at(0.99)
    results.append(
        Result(
            f"query p50, {label}",
            "ms",
            False,
            p50["sdi"],
            others(p50),
            note=queries_note,
        )
    )
    results.append(
        Result(
            f"query p99, {label}",
            "ms",
            False,
            p99["sdi"],
            others(p99),
            note="worst kind by p99: " + "; ".join(worst(name) for name in latencies),
        )
    )
    for kind in KINDS:
        kind_p99 = at(0.99, kind)
        results.append(Result(f"query p99, {kind}", "ms", False, kind_p99["sdi"], others(kind_p99)))
    results.append(
        Result(
            f"on-disk bytes/doc, {label}",
            "bytes",
            False,
            disk["sdi"],
            others(disk),
            note="after merging; index only (FTS5 contentless, tantivy fields not stored); "
            f"mean text {sum(map(len, corpus.body[:1000])) / min(1000, n):.0f} bytes of body",
        )
    )
    return results
