"""Side-by-side measurement in one process run.

A block's script (``benchmarks/<block>.py``) defines ``run(bench: Bench) -> None`` and
calls ``bench.compare(...)`` for each hot path, naming the peer the ratios are against.
``compare`` warms every candidate up, then measures them in alternating rounds
(A B C, B C A, ...) so drift on a shared machine hits all sides alike, and reports each
candidate's median time per operation and the median (min..max) of its per-round ratio
to the baseline. ``bench.record(...)`` keeps figures that are not timings (keys moved,
loader calls, share of reads on replicas).
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


class BenchmarkSkipped(Exception):
    """Raised by `Bench.skip`: the benchmark cannot run here (a server is missing)."""


@dataclass
class Candidate:
    name: str
    per_op_ns: float
    ratio_median: float
    ratio_min: float
    ratio_max: float
    samples_ns: list[float]


@dataclass
class Comparison:
    title: str
    baseline: str
    ops_per_sample: int
    rounds: int
    candidates: list[Candidate]
    target: str = ""
    note: str = ""


@dataclass
class Figure:
    title: str
    values: dict[str, Any]
    target: str = ""
    note: str = ""


@dataclass
class BlockResult:
    block: str
    comparisons: list[Comparison] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    skipped: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Bench:
    """Given to a benchmark script: measure with `compare`, keep other figures with `record`."""

    def __init__(self, block: str, *, quick: bool) -> None:
        self.quick = quick
        self.result = BlockResult(block)

    def skip(self, reason: str) -> None:
        raise BenchmarkSkipped(reason)

    def scale(self, full: int, quick: int) -> int:
        """`full` normally, `quick` under --quick (for sizes of data sets and batches)."""
        return quick if self.quick else full

    def compare(
        self,
        title: str,
        candidates: dict[str, Callable[[], object]],
        *,
        baseline: str,
        number: int,
        ops: int = 1,
        rounds: int = 15,
        target: str = "",
        note: str = "",
    ) -> Comparison:
        """Time each candidate side by side and return the comparison.

        Args:
            title: what is measured, e.g. ``"in-memory hit"``.
            candidates: name -> a callable doing `ops` operations per call.
            baseline: the candidate ratios are computed against.
            number: calls per timing sample.
            ops: operations performed by one call (for batch callables).
            rounds: timing rounds; each round measures every candidate once.
            target: the issue's target, in words, shown beside the result.
        """
        if baseline not in candidates:
            raise ValueError(f"baseline {baseline!r} is not one of {sorted(candidates)}")
        if self.quick:
            number = max(1, number // 20)
            rounds = 3
        names = list(candidates)
        for name in names:  # warm-up: caches, JIT-less interpreter paths, connections
            _time_calls(candidates[name], max(1, number // 4))
        samples: dict[str, list[float]] = {name: [] for name in names}
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                elapsed = _time_calls(candidates[name], number)
                samples[name].append(elapsed * 1e9 / (number * ops))
        base = samples[baseline]
        results = []
        for name in names:
            ratios = [s / b for s, b in zip(samples[name], base, strict=True)]
            results.append(
                Candidate(
                    name=name,
                    per_op_ns=statistics.median(samples[name]),
                    ratio_median=statistics.median(ratios),
                    ratio_min=min(ratios),
                    ratio_max=max(ratios),
                    samples_ns=samples[name],
                )
            )
        comparison = Comparison(title, baseline, number * ops, rounds, results, target, note)
        self.result.comparisons.append(comparison)
        return comparison

    def record(
        self, title: str, values: dict[str, Any], *, target: str = "", note: str = ""
    ) -> None:
        """Keep a figure that is not a timing (counts, fractions, percentiles)."""
        self.result.figures.append(Figure(title, values, target, note))


def _time_calls(fn: Callable[[], object], number: int) -> float:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def format_time(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def markdown(result: BlockResult) -> str:
    """The block's results as Markdown tables."""
    lines = [f"## {result.block}", ""]
    if result.skipped:
        lines += [f"skipped: {result.skipped}", ""]
        return "\n".join(lines)
    for comparison in result.comparisons:
        lines.append(f"### {comparison.title}")
        lines.append("")
        if comparison.target:
            lines += [f"Target: {comparison.target}", ""]
        lines.append(f"| candidate | per op | ratio to {comparison.baseline} (median, min..max) |")
        lines.append("|---|---:|---:|")
        for c in comparison.candidates:
            lines.append(
                f"| {c.name} | {format_time(c.per_op_ns)} | "
                f"{c.ratio_median:.2f}x ({c.ratio_min:.2f}..{c.ratio_max:.2f}) |"
            )
        lines.append("")
        lines.append(
            f"{comparison.rounds} alternating rounds of {comparison.ops_per_sample} ops each."
            + (f" {comparison.note}" if comparison.note else "")
        )
        lines.append("")
    for figure in result.figures:
        lines.append(f"### {figure.title}")
        lines.append("")
        if figure.target:
            lines += [f"Target: {figure.target}", ""]
        lines.append("| measure | value |")
        lines.append("|---|---:|")
        for key, value in figure.values.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| {key} | {shown} |")
        lines.append("")
        if figure.note:
            lines += [figure.note, ""]
    return "\n".join(lines)


def chart(result: BlockResult, path: str) -> None:
    """A PNG bar chart of every comparison's ratios (log scale, baseline = 1)."""
    if not result.comparisons:
        return
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    count = len(result.comparisons)
    height = 0.5 + sum(0.7 + 0.3 * len(c.candidates) for c in result.comparisons)
    fig, axes = plt.subplots(count, 1, figsize=(8, height), squeeze=False)
    for ax, comparison in zip(axes[:, 0], result.comparisons, strict=True):
        names = [c.name for c in comparison.candidates]
        ratios = [c.ratio_median for c in comparison.candidates]
        errors = [
            [c.ratio_median - c.ratio_min for c in comparison.candidates],
            [c.ratio_max - c.ratio_median for c in comparison.candidates],
        ]
        colors = ["#2b7bba" if n.startswith("scalepatterns") else "#999999" for n in names]
        ax.barh(names, ratios, xerr=errors, color=colors)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_title(
            f"{comparison.title} (time per op, ratio to {comparison.baseline})", fontsize=9
        )
        ax.tick_params(labelsize=8)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
