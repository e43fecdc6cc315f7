"""What ships where: the sdist carries what its tests import (examples/ too), the wheel the
library and its console script; the tour needs only the `tour` extra."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str]]:
    from hatchling.builders.sdist import SdistBuilder
    from hatchling.builders.wheel import WheelBuilder

    out = tmp_path_factory.mktemp("dist")
    (sdist,) = SdistBuilder(str(ROOT)).build(directory=str(out))
    (wheel,) = WheelBuilder(str(ROOT)).build(directory=str(out))
    with tarfile.open(sdist) as tar:
        sdist_names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    return sdist_names, zipfile.ZipFile(wheel).namelist()


def test_the_sdist_ships_every_package_its_tests_import(
    artifacts: tuple[list[str], list[str]],
) -> None:
    sdist, _ = artifacts
    imported = set()
    for test in (ROOT / "tests").rglob("*.py"):
        imported |= set(re.findall(r"^\s*(?:from|import) (\w+)", test.read_text(), re.M))
    ours = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() or p.name == "examples"}
    for package in sorted(imported & ours):
        assert any(name.startswith(f"{package}/") for name in sdist), package
    for needed in ("examples/app/__main__.py", "examples/tour/__main__.py", "Makefile"):
        assert needed in sdist


def test_the_wheel_is_the_library_and_its_console_script(
    artifacts: tuple[list[str], list[str]],
) -> None:
    _, wheel = artifacts
    assert "scalepatterns/cli/__init__.py" in wheel
    assert "scalepatterns/__main__.py" in wheel
    assert not [n for n in wheel if n.startswith(("examples/", "tests/", "benchmarks/"))]
    (entry_points,) = [n for n in wheel if n.endswith("entry_points.txt")]
    assert entry_points  # the console script is declared in pyproject.toml [project.scripts]


# Not installed by a dependency: redis-py's tracing hooks import OpenTelemetry when it is
# present (as in the dev environment), Cython-built extensions register cython_runtime, and
# the rest is the project itself and the tour's chapters.
OPTIONAL_IMPORTS = {"opentelemetry", "cython_runtime", "scalepatterns"} | {
    p.stem for p in (ROOT / "examples" / "tour").glob("ch*_*.py")
}


def _closure(name: str, extras: frozenset[str], seen: set[tuple[str, frozenset[str]]]) -> None:
    """Every distribution `name[extras]` installs, into `seen`."""
    key = (_normal(name), extras)
    if key in seen:
        return
    seen.add(key)
    for text in metadata.requires(name) or []:
        requirement = Requirement(text)
        wanted = requirement.marker is None or any(
            requirement.marker.evaluate({"extra": extra}) for extra in (*extras, "")
        )
        if wanted:
            _closure(requirement.name, frozenset(requirement.extras), seen)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_tour_imports_only_what_the_tour_extra_installs() -> None:
    script = (
        "import json, runpy, sys\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / 'examples' / 'tour')!r}, run_name='__main__')\n"
        "except SystemExit as done:\n"
        "    assert done.code in (0, None), done.code\n"
        "top = {m.partition('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)\n"
        "print(json.dumps(sorted(m for m in top if not m.startswith('_'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, result.stderr
    imported = set(json.loads(result.stdout.splitlines()[-1]))
    seen: set[tuple[str, frozenset[str]]] = set()
    _closure("scalepatterns", frozenset({"tour"}), seen)
    installed = {name for name, _ in seen}
    owners = metadata.packages_distributions()
    outside = {
        module
        for module in imported - OPTIONAL_IMPORTS
        if not any(_normal(d) in installed for d in owners.get(module, []))
    }
    assert not outside, f"the tour imports {outside}, which scalepatterns[tour] does not install"
    assert "fakeredis" not in imported
