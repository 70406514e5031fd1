"""The atheris target for the Kafka codec runs a bounded number of inputs without a finding."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_kafka.py"


def test_fuzz_target_smoke_run(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(TARGET), "-runs=5000", "-seed=1", "-max_len=512"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 5000 runs" in result.stderr


def test_fuzz_target_reports_a_disagreement() -> None:
    # The target must be able to fail: feed it a case its checks reject.
    namespace: dict[str, object] = {}
    source = TARGET.read_text().replace("if whole != split:", "if True:")
    exec(compile(source, str(TARGET), "exec"), namespace)
    test_one_input = namespace["test_one_input"]
    try:
        test_one_input(b"\x01\x00\x00\x00\x00\x00")  # type: ignore[operator]
    except AssertionError:
        return
    raise AssertionError("the fuzz target accepted everything")
