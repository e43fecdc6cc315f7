"""Run the benchmarks: ``python -m benchmarks [--quick] [--out DIR] [block ...]``.

Every ``benchmarks/<block>.py`` with a ``run(bench)`` function is a block. Results go to
``DIR/<block>.json`` and ``DIR/<block>.png``, and ``DIR/results.md`` gathers the tables
(DIR defaults to ``benchmarks/results``). A block whose server is missing is skipped, or
fails the run under ``SCALEPATTERNS_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from benchmarks.harness import Bench, BenchmarkSkipped, chart, markdown

HERE = Path(__file__).resolve().parent
NOT_BLOCKS = {"__init__", "__main__", "harness", "common"}


def available_blocks() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem not in NOT_BLOCKS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "blocks", nargs="*", help=f"blocks to run (default: all of {available_blocks()})"
    )
    parser.add_argument(
        "--quick", action="store_true", help="run everything briefly (a smoke test)"
    )
    parser.add_argument(
        "--out", default=str(HERE / "results"), help="directory for JSON, PNG and Markdown"
    )
    args = parser.parse_args(argv)

    blocks = args.blocks or available_blocks()
    unknown = sorted(set(blocks) - set(available_blocks()))
    if unknown:
        parser.error(f"unknown blocks {unknown}; choose from {available_blocks()}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    required = os.environ.get("SCALEPATTERNS_REQUIRE_SERVICES") == "1"

    header = [
        "# Benchmark results",
        "",
        "Command: `" + " ".join(["python -m benchmarks", *sys.argv[1:]]) + "`"
        f" on {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}.",
        "",
    ]
    sections: list[str] = []
    failures = 0
    for block in blocks:
        bench = Bench(block, quick=args.quick)
        started = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.{block}").run(bench)
        except BenchmarkSkipped as skip:
            bench.result.skipped = str(skip)
            if required:
                failures += 1
                print(f"[{block}] skipped but services are required: {skip}", file=sys.stderr)
        except Exception:
            failures += 1
            traceback.print_exc()
            bench.result.skipped = "failed: see the traceback above"
        table = markdown(bench.result)
        print(table, flush=True)
        print(f"({block} took {time.perf_counter() - started:.1f}s)\n", flush=True)
        sections.append(table)
        (out / f"{block}.json").write_text(json.dumps(bench.result.to_json(), indent=2))
        chart(bench.result, str(out / f"{block}.png"))
    if not args.blocks:
        (out / "results.md").write_text("\n".join(header + sections))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
