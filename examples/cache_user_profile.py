"""The seeds' user-profile cache: SQLite as the database, memory or Redis as the cache.

    python examples/cache_user_profile.py                      # in-process memory
    CACHE_URL=redis://127.0.0.1:6379/0 python examples/cache_user_profile.py

Reads go through the cache; an update writes the database, then invalidates the entry
(in every process, for a two-tier cache). When Redis is down the profile still loads,
from the database.
"""

from __future__ import annotations

import os
import sqlite3
import time

from scalepatterns.cache import Cache

db = sqlite3.connect(":memory:", check_same_thread=False)
db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT)")
db.executemany(
    "INSERT INTO users VALUES (?, ?, ?)",
    [(i, f"user {i}", f"user{i}@example.com") for i in range(1, 101)],
)
queries = 0

url = os.environ.get("CACHE_URL")
cache = (
    Cache.two_tier(url, namespace=f"profiles-{os.getpid()}", local_ttl=5, ttl=300)
    if url
    else Cache.memory(maxsize=10_000, ttl=300)
)


@cache.cached(key="user:{user_id}", negative_ttl=30)
def get_user_profile(user_id: int) -> dict[str, object] | None:
    """Check the cache; on a miss query the database and store the row."""
    global queries
    queries += 1
    row = db.execute("SELECT id, name, email FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None:
        return None  # "not found" is cached too, for 30 s
    return {"id": row[0], "name": row[1], "email": row[2]}


def update_user_email(user_id: int, email: str) -> None:
    db.execute("UPDATE users SET email = ? WHERE id = ?", (email, user_id))
    db.commit()
    get_user_profile.invalidate(user_id)


def main() -> None:
    started = time.perf_counter()
    for _ in range(10):
        for user_id in range(1, 51):
            get_user_profile(user_id)
    elapsed = time.perf_counter() - started
    print(f"500 reads of 50 users: {queries} database queries in {elapsed * 1000:.1f} ms")
    print(f"cache: {get_user_profile.cache_info()}")
    update_user_email(7, "new@example.com")
    print(f"after update: {get_user_profile(7)}")
    print(f"missing user: {get_user_profile(999)} (now cached as not found)")
    if url:  # a demo: leave nothing behind in a shared Redis
        client = cache.backend.client
        client.delete(*client.scan_iter(f"{cache.namespace}*"))
    cache.close()


if __name__ == "__main__":
    main()
