"""A per-user API rate limit: each user gets 10 requests/second with a burst of 5.

Runs in this process by default; pass a Redis URL to share the limit between every API
process (``python examples/backpressure_api_rate_limit.py redis://localhost:6379/0``).
"""

from __future__ import annotations

import sys
import uuid
from collections import Counter

from scalepatterns import SYSTEM_CLOCK, Clock, FakeClock, RateLimited, RateLimiter


def main(redis_url: str | None = None) -> Counter[str]:
    # In-process, a fake clock makes the second of traffic instant; Redis decides with its
    # own clock, so against Redis the second is real.
    clock: Clock = FakeClock()
    client = None
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        clock = SYSTEM_CLOCK
    # A prefix of its own per run: limits left by an earlier run must not count here.
    prefix = f"example:api:{uuid.uuid4().hex[:8]}:"
    limiter = RateLimiter("10/second", burst=5, redis=client, prefix=prefix, clock=clock)

    @limiter.limit(key=lambda user, **_: f"user:{user}")
    def get_orders(user: str) -> str:
        return f"orders of {user}"

    def handle(user: str) -> str:
        """What the API layer does: 200 with the body, or 429 with Retry-After."""
        try:
            get_orders(user)
        except RateLimited:
            return "429"
        return "ok"

    outcome: Counter[str] = Counter()
    try:
        # One greedy user sends 40 requests in 1 s, a polite one sends 5.
        for tick in range(40):
            for user in ("greedy", "polite") if tick % 8 == 0 else ("greedy",):
                outcome[f"{user} {handle(user)}"] += 1
            clock.sleep(1 / 40)
    finally:  # the Redis keys expire on their own once the users' buckets are full again
        limiter.close()
        if client is not None:
            client.close()
    return +outcome


if __name__ == "__main__":
    for line, count in sorted(main(sys.argv[1] if len(sys.argv) > 1 else None).items()):
        print(f"{line}: {count}")
