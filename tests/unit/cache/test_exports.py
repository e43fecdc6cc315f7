from __future__ import annotations

import subprocess
import sys

import scalepatterns
import scalepatterns.cache as cache_pkg


def test_cache_exports_are_sorted_and_importable() -> None:
    assert cache_pkg.__all__ == sorted(cache_pkg.__all__)
    for name in cache_pkg.__all__:
        assert getattr(cache_pkg, name) is not None
    for name in ("Cache", "CacheInfo", "MemoryBackend", "ShardedBackend", "CacheHit"):
        assert getattr(scalepatterns, name) is getattr(cache_pkg, name)
        assert name in scalepatterns.__all__


def test_using_the_memory_cache_imports_no_server_client() -> None:
    code = (
        "import sys, scalepatterns\n"
        "c = scalepatterns.Cache.memory()\n"
        "c.cached(lambda x: x)(1)\n"
        "print(sorted(m for m in ('redis', 'pika', 'sqlalchemy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
