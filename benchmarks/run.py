#!/usr/bin/env python3
"""Run one core's benchmark (or all) side by side with its baselines.

    python benchmarks/run.py ring --quick --json /tmp/ring.json
    python benchmarks/run.py all --json-dir benchmarks/results --plot

Prints a table with sdi's ratio to each baseline. With ``--json`` writes
``{"core", "quick", "results": [{"metric", "unit", "higher_is_better", "sdi",
"baselines"}]}``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

# None of the benchmarks uses BLAS; OpenBLAS's idle worker threads would
# otherwise spin on the second core that the measured processes need.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import Progress, Result, Scale, format_table  # noqa: E402


def available_cores() -> list[str]:
    """The cores that have a benchmark module under ``benchmarks/cores``."""
    return sorted(
        path.stem for path in (HERE / "cores").glob("*.py") if not path.stem.startswith("_")
    )


def run_core(core: str, scale: Scale, show_progress: bool = True) -> list[Result]:
    """Import ``cores.<core>`` and run it at ``scale``."""
    module = importlib.import_module(f"cores.{core}")
    results: list[Result] = module.run(scale, Progress(core, enabled=show_progress))
    return results


def to_json(core: str, scale: Scale, results: list[Result]) -> dict[str, object]:
    return {
        "core": core,
        "quick": scale != "full",
        "results": [result.to_json() for result in results],
    }


def plot(core: str, results: list[Result], path: Path) -> None:
    """One bar group per metric: sdi beside each baseline, as ratios to sdi."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(results))
    rows = -(-len(results) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for axis in axes.flat[len(results) :]:
        axis.set_visible(False)
    for axis, result in zip(axes.flat, results, strict=False):
        names = ["sdi", *result.baselines]
        values = [result.sdi, *result.baselines.values()]
        colors = ["#d1495b"] + ["#5b7db1"] * len(result.baselines)
        axis.bar(names, values, color=colors)
        axis.set_title(result.metric, fontsize=8)
        axis.set_ylabel(result.unit + ("" if result.higher_is_better else " (lower is better)"))
        axis.tick_params(axis="x", labelrotation=30, labelsize=7)
        if values and min(v for v in values if v > 0) * 50 < max(values):
            axis.set_yscale("log")
    fig.suptitle(f"sdi {core}: side by side in one run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    cores = available_cores()
    parser = argparse.ArgumentParser(
        description="Run sdi's benchmarks side by side with their baselines.",
        epilog=f"cores: {', '.join(cores)}",
    )
    parser.add_argument("core", choices=[*cores, "all"], help="the core to measure, or all")
    parser.add_argument(
        "--quick", action="store_true", help="smaller inputs, fewer repeats (<60 s)"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="smallest inputs: only checks that it runs"
    )
    parser.add_argument("--json", type=Path, help="write the results of one core here")
    parser.add_argument("--json-dir", type=Path, help="write <core>.json for each core here")
    parser.add_argument(
        "--plot", action="store_true", help="also write <core>.png (needs --json-dir)"
    )
    args = parser.parse_args(argv)

    scale: Scale = "tiny" if args.tiny else "quick" if args.quick else "full"
    selected = cores if args.core == "all" else [args.core]
    if args.json and len(selected) != 1:
        parser.error("--json takes one core; use --json-dir with all")
    if args.plot and not args.json_dir:
        parser.error("--plot writes next to the JSON files: give --json-dir")
    for core in selected:
        results = run_core(core, scale)
        print(format_table(core, results), flush=True)
        document = to_json(core, scale, results)
        if args.json:
            args.json.write_text(json.dumps(document, indent=2) + "\n")
        if args.json_dir:
            args.json_dir.mkdir(parents=True, exist_ok=True)
            (args.json_dir / f"{core}.json").write_text(json.dumps(document, indent=2) + "\n")
            if args.plot:
                plot(core, results, args.json_dir / f"{core}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
