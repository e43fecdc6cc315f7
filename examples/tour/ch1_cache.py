"""Chapter 1: cache-aside on the embedded memory backend: hits, a stampede, staleness, outages."""

from __future__ import annotations

import socket
import threading
import time

from scalepatterns.cache import Cache
from scalepatterns.clock import FakeClock

TITLE = "Cache-aside: hits, one load under a stampede, stale-if-error, a dead cache"


def run() -> None:
    cache = Cache.memory(maxsize=1_000, ttl=60)
    queries: list[int] = []

    @cache.cached(stale_if_error=300)
    def profile(user_id: int) -> dict[str, object]:
        queries.append(user_id)
        time.sleep(0.05)  # the database
        return {"id": user_id, "name": f"user {user_id}"}

    for _ in range(100):
        profile(1)
    info = profile.cache_info()
    print(f"   100 calls for user 1: {info.loads} database query, {info.hits} hits")

    threads = [threading.Thread(target=profile, args=(2,)) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"   64 threads on cold user 2: the loader ran {queries.count(2)} time")

    loads_before = profile.cache_info().loads
    profile.refresh(1)
    print(f"   refresh(1): {profile.cache_info().loads - loads_before} query, value replaced")

    clock = FakeClock()
    catalog = Cache.memory(ttl=60, clock=clock)
    database_up = True

    @catalog.cached(stale_if_error=600)
    def stock(sku: str) -> int:
        if not database_up:
            raise ConnectionError("database down")
        return 12

    stock("apple")
    clock.advance(120)  # the entry expired a minute ago...
    database_up = False  # ...and the database is down
    print(f"   database down, entry expired: stale-if-error still answers {stock('apple')}")

    port = closed_port()
    print(
        f"   planned outage demo: a Redis that is not running (127.0.0.1:{port}); "
        "the log line below is expected"
    )
    shared = Cache.redis(f"redis://127.0.0.1:{port}/0", namespace="tour")

    @shared.cached()
    def price(sku: str) -> float:
        return 9.99

    answers = {price("apple") for _ in range(1_000)}
    print(
        f"   Redis down: 1000 calls answered {answers} from the function, "
        f"{shared.backend_errors} backend errors before the breaker opened"
    )
    shared.close()


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
