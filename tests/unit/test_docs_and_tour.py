"""Every Python sample in README.md and docs/ runs; the tour runs end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"(?P<marker><!-- test: skip -->\s*\n)?```python\n(?P<code>.*?)```", re.S)
PAGES = sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md")])


def python_samples(page: Path) -> list[str]:
    return [m["code"] for m in FENCE.finditer(page.read_text()) if not m["marker"]]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_samples_run(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_sample_{page.stem}"}
    for index, code in enumerate(python_samples(page)):
        compiled = compile(code, f"{page.relative_to(ROOT)}[sample {index}]", "exec")
        exec(compiled, namespace)


def test_tour_runs_every_chapter() -> None:
    chapters = sorted((ROOT / "examples" / "tour").glob("ch*_*.py"))
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tour")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(chapters)} chapters" in result.stdout
    assert result.stdout.count("\n== ") == len(chapters)
    assert result.stdout.rstrip().endswith("tour complete")
