"""Every module of the package keeps a sorted `__all__` (case-sensitive, as `sorted()`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "scalepatterns"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _exports(path: Path) -> list[str] | None:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            assert isinstance(node.value, ast.List | ast.Tuple)
            return [ast.literal_eval(e) for e in node.value.elts]
    return None


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_all_is_sorted(path: Path) -> None:
    exports = _exports(path)
    if exports is not None:
        assert exports == sorted(exports)
