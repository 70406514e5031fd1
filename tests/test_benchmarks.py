"""Every benchmark runs on a tiny input inside the test suite, so none can rot.

These check that each benchmark runs end to end and writes the JSON the
contract promises, with real positive figures for sdi and every baseline.
They assert nothing about speed: speed is asserted in the benchmarks.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORES = sorted(
    path.stem
    for path in (ROOT / "benchmarks" / "cores").glob("*.py")
    if not path.stem.startswith("_")
)


def test_there_are_benchmarks() -> None:
    assert CORES, "benchmarks/cores/ has no benchmark modules"


@pytest.mark.slow
@pytest.mark.parametrize("core", CORES)
def test_benchmark_runs_tiny_and_writes_the_contract(core: str, tmp_path: Path) -> None:
    out = tmp_path / f"{core}.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), core, "--tiny", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"== {core} ==" in result.stdout
    document = json.loads(out.read_text())
    assert document["core"] == core
    assert document["quick"] is True
    assert document["results"], "a benchmark must report at least one metric"
    for entry in document["results"]:
        assert set(entry) == {"metric", "unit", "higher_is_better", "sdi", "baselines"}
        assert isinstance(entry["higher_is_better"], bool)
        assert entry["baselines"], f"{entry['metric']} has no baseline beside it"
        for value in [entry["sdi"], *entry["baselines"].values()]:
            assert isinstance(value, float | int)
            assert math.isfinite(value)
            assert value > 0
