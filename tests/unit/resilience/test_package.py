"""The public surface: exports are sorted and importable; docstring examples run."""

from __future__ import annotations

import importlib
import pkgutil
import re
import textwrap

import pytest

import scalepatterns
import scalepatterns.resilience as resilience

FENCE = re.compile(r"```python\n(?P<code>.*?)```", re.S)
MODULES = sorted(
    f"scalepatterns.resilience.{m.name}" for m in pkgutil.iter_modules(resilience.__path__)
)


def test_exports_sorted_and_present() -> None:
    assert resilience.__all__ == sorted(resilience.__all__)
    for name in resilience.__all__:
        assert getattr(resilience, name) is not None
    for name in ("CircuitBreaker", "LoadBalancer", "retry", "timeout", "resilient"):
        assert getattr(scalepatterns, name) is getattr(resilience, name)
        assert name in scalepatterns.__all__


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module: str) -> None:
    loaded = importlib.import_module(module)
    sources = [loaded.__doc__ or ""]
    for value in vars(loaded).values():
        if getattr(value, "__module__", None) == module:
            sources.append(getattr(value, "__doc__", None) or "")
    for source in sources:
        for match in FENCE.finditer(source):
            code = textwrap.dedent(match["code"])
            exec(compile(code, module, "exec"), {"__name__": "doc_example"})
