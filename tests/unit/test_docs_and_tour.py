"""Every Python sample in README.md and docs/ runs; the tour runs end to end.

A page with several samples says how they run, in words a reader sees: "Each example on
this page runs on its own." (each sample runs here in a fresh namespace) or "The examples
on this page build on each other: run them in order." (one namespace, in order). Samples
marked ``<!-- test: redis -->`` need a Redis server: they run on their own in
tests/integration/test_docs_redis_samples.py; ``<!-- test: skip -->`` ones do not run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(
    r"(?:<!-- test: (?P<marker>skip|redis) -->\s*\n)?```python\n(?P<code>.*?)```", re.S
)
PAGES = sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md")])
ON_ITS_OWN = "Each example on this page runs on its own."
IN_ORDER = "The examples on this page build on each other: run them in order."
# what a user does not have: the project's test doubles
TEST_ONLY = {"fakeredis"}


def python_samples(page: Path, marker: str | None = None) -> list[str]:
    return [m["code"] for m in FENCE.finditer(page.read_text()) if m["marker"] == marker]


def builds_on_itself(page: Path) -> bool:
    """Whether the page's samples share one namespace (see the module)."""
    text = page.read_text()
    samples = len(FENCE.findall(text))
    said = [sentence for sentence in (ON_ITS_OWN, IN_ORDER) if sentence in text]
    if samples > 1:
        assert len(said) == 1, f"{page.name} must say exactly one of: {ON_ITS_OWN!r}, {IN_ORDER!r}"
    return said == [IN_ORDER]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_samples_run(page: Path) -> None:
    shared = builds_on_itself(page)
    namespace: dict[str, object] = {}
    for index, code in enumerate(python_samples(page)):
        if not shared:
            namespace = {}
        namespace["__name__"] = f"docs_sample_{page.stem}"
        compiled = compile(code, f"{page.relative_to(ROOT)}[sample {index}]", "exec")
        exec(compiled, namespace)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_samples_import_nothing_a_user_lacks(page: Path) -> None:
    for marker in (None, "redis", "skip"):
        for code in python_samples(page, marker):
            imported = set(re.findall(r"^\s*(?:from|import) (\w+)", code, re.M))
            assert not imported & TEST_ONLY, f"{page.name}: {imported & TEST_ONLY}"


def test_redis_samples_stand_alone_on_pages_that_build_on_themselves() -> None:
    """A Redis sample runs alone in the integration tests: it may not need earlier ones,
    and later samples may not need it (the unit run leaves it out)."""
    for page in PAGES:
        for code in python_samples(page, "redis"):
            assert "redis://localhost:6379" in code, f"{page.name}: a Redis sample names its URL"


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
    # the one log line is the planned outage, announced, and names the dead server
    logged = [line for line in result.stdout.splitlines() if "[log] " in line]
    assert len(logged) == 1
    announced = result.stdout.split(logged[0])[0].splitlines()[-1]
    port = re.search(r"127\.0\.0\.1:(\d+)", announced)
    assert port
    assert "planned outage demo" in announced
    assert f"redis backend at 127.0.0.1:{port[1]} failing" in logged[0]
