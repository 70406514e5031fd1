"""The shared side-by-side benchmark harness.

A core's benchmark lives in ``benchmarks/cores/<core>.py`` and defines::

    def run(scale: Scale, progress: Progress) -> list[Result]: ...

``scale`` is ``"tiny"`` (the test suite: seconds, only checks that it runs),
``"quick"`` (``--quick``: under a minute, still measures) or ``"full"``.
Each ``Result`` carries the sdi figure and every baseline's figure for one
metric, all measured in the same process run; the runner prints the ratios.
Machines here are shared and noisy, so figures are medians of repeats.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Scale = Literal["tiny", "quick", "full"]


@dataclass
class Result:
    """One metric, measured for sdi and for each baseline in the same run."""

    metric: str
    unit: str
    higher_is_better: bool
    sdi: float
    baselines: dict[str, float] = field(default_factory=dict)
    # Context printed under the table (sizes, settings); not part of the JSON contract.
    note: str = ""

    def ratio(self, baseline: str) -> float:
        """How many times better sdi is than ``baseline`` (>1 means sdi wins)."""
        other = self.baselines[baseline]
        if self.higher_is_better:
            return self.sdi / other if other else float("inf")
        return other / self.sdi if self.sdi else float("inf")

    def to_json(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "sdi": self.sdi,
            "baselines": dict(self.baselines),
        }


class Progress:
    """Prints one line per step to stderr so long runs show where they are."""

    def __init__(self, core: str, enabled: bool = True) -> None:
        self.core = core
        self.enabled = enabled
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.started
            print(f"[{self.core} {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


def median_time(work: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """The median wall time in seconds of ``repeats`` calls of ``work``."""
    for _ in range(warmup):
        work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The value at ``fraction`` (0..1) of already sorted values (nearest rank)."""
    if not sorted_values:
        raise ValueError("no values")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def format_table(core: str, results: list[Result]) -> str:
    """A plain-text table: metric, sdi, each baseline and sdi's ratio to it."""
    lines = [f"== {core} =="]
    header = (
        f"{'metric':<44} {'unit':<12} {'sdi':>12}   baselines (value, sdi ratio; >1 = sdi better)"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for result in results:
        parts = [
            f"{name} {value:,.4g} ({result.ratio(name):.2f}x)"
            for name, value in result.baselines.items()
        ]
        lines.append(
            f"{result.metric:<44} {result.unit:<12} {result.sdi:>12,.4g}   " + "; ".join(parts)
        )
    notes = [f"  {result.metric}: {result.note}" for result in results if result.note]
    if notes:
        lines.append("notes:")
        lines.extend(notes)
    return "\n".join(lines)


# --- processes and CPUs (servers on one CPU, clients on the other) -------------


def two_cpus() -> bool:
    """Whether there are two CPUs to pin a server and its client apart."""
    return hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2


def pin_process(pid: int, cpu: int) -> None:
    """Pins every thread of process ``pid`` to ``cpu`` (threads it starts later inherit it)."""
    if not two_cpus():
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), {cpu})


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """This thread (and the threads and processes it starts) on ``cpu`` for the block."""
    if not two_cpus():
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
