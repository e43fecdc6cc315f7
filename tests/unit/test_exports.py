"""Every public name is listed once, sorted, and resolves; top-level names are the blocks' own."""

from __future__ import annotations

import importlib

import pytest

import scalepatterns

PACKAGES = [
    "scalepatterns",
    "scalepatterns.backpressure",
    "scalepatterns.cache",
    "scalepatterns.contrib",
    "scalepatterns.queue",
    "scalepatterns.resilience",
    "scalepatterns.routing",
    "scalepatterns.sharding",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_unique_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported), f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
    for attribute in exported:
        assert getattr(module, attribute) is not None, f"{name}.{attribute}"


def test_top_level_names_are_the_same_objects_as_in_their_blocks() -> None:
    for attribute, module_name in scalepatterns._LAZY.items():
        block = importlib.import_module(module_name)
        assert getattr(scalepatterns, attribute) is getattr(block, attribute), attribute
        assert attribute in scalepatterns.__all__, attribute


def test_public_names_are_documented() -> None:
    undocumented = [
        attribute
        for attribute in scalepatterns.__all__
        if not attribute.startswith("_")
        and attribute not in {"SYSTEM_CLOCK", "Listener", "default_listeners"}
        and not (getattr(scalepatterns, attribute).__doc__ or "").strip()
    ]
    assert not undocumented
