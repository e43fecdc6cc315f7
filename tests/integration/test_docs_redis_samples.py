"""The docs' Redis samples (``<!-- test: redis -->``) run on their own against the real Redis."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.unit.test_docs_and_tour import PAGES, ROOT, python_samples

pytestmark = pytest.mark.redis

SAMPLES = [
    pytest.param(code, id=f"{page.relative_to(ROOT)}[{index}]")
    for page in PAGES
    for index, code in enumerate(python_samples(page, "redis"))
]


def test_there_are_redis_samples() -> None:
    assert len(SAMPLES) >= 4


@pytest.mark.parametrize("code", SAMPLES)
def test_redis_sample_runs(code: str, redis_url: str) -> None:
    server = urlsplit(redis_url)
    local = code.replace("redis://localhost:6379", f"{server.scheme}://{server.netloc}")
    exec(compile(local, "<docs sample>", "exec"), {"__name__": "docs_redis_sample"})
