"""A worker process on a Redis Streams queue, for tests that SIGKILL one mid-run.

``python -m tests.support.streams_worker URL PREFIX QUEUE DEDUP_PREFIX EFFECTS_KEY``

Each message's effect is an RPUSH of ``<message id>:<pid>`` to EFFECTS_KEY, guarded by a
`RedisDedupStore` (claim, effect, mark done), as an application would write it.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import redis

from scalepatterns.queue import Message, RedisDedupStore, RedisStreamsBroker, Worker


def main(url: str, prefix: str, queue: str, dedup_prefix: str, effects: str) -> None:
    client = redis.Redis.from_url(url)
    pid = os.getpid()

    def handle(message: Message) -> None:
        client.rpush(effects, f"{message.id}:{pid}")
        time.sleep(0.002)  # a little work: the process holds messages when it is killed

    broker = RedisStreamsBroker(url, prefix=prefix, visibility_timeout=2.0)
    dedup = RedisDedupStore(client, prefix=dedup_prefix)
    with Worker(broker, queue, handle, concurrency=4, dedup=dedup, in_progress_ttl=1.0):
        print("ready", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main(*sys.argv[1:6])
