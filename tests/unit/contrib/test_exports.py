"""The contrib modules' public names are listed once, sorted, and resolve."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    "name",
    [
        "scalepatterns.contrib",
        "scalepatterns.contrib.logging",
        "scalepatterns.contrib.otel",
        "scalepatterns.contrib.prometheus",
    ],
)
def test_all_is_sorted_unique_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    assert len(set(exported)) == len(exported)
    for attribute in exported:
        assert getattr(module, attribute) is not None, f"{name}.{attribute}"
