"""`Subscriber`: the daemon thread of a two-tier cache that hears invalidations from Redis.

Other processes publish the shared keys they invalidated (and namespace bumps) on the
namespace's channel; this thread hands each message to `on_message`. When the
subscription was cut, messages may have been lost, so `resync` is called first.

The callbacks are held weakly: a cache nobody uses any more is collected, and its
thread ends.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["Subscriber"]


class Subscriber:
    """Listens on `channel` of a redis-py `client` until stopped.

    Args:
        client: the redis-py client to subscribe with.
        channel: the namespace's invalidation channel.
        name: the thread's name.
        on_message: called with each message's text.
        resync: called after (re)subscribing, when messages may have been lost.
    """

    def __init__(
        self,
        client: Any,
        channel: str,
        name: str,
        on_message: Callable[[str], None],
        resync: Callable[[], None],
    ) -> None:
        self.client = client
        self.channel = channel
        self._on_message = weakref.WeakMethod(on_message)
        self._resync = weakref.WeakMethod(resync)
        self._stop = threading.Event()
        self._reconnected = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _on_connect(self, connection: Any) -> None:
        self._reconnected = True

    def _run(self) -> None:
        pubsub = None
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.channel)
                    # A client with driver retries reconnects and subscribes again inside
                    # redis-py (after a failover, to the new master), unseen here.
                    register = getattr(pubsub.connection, "register_connect_callback", None)
                    if register is not None:
                        register(self._on_connect)
                    self._reconnected = True
                if self._reconnected:
                    self._reconnected = False
                    resync = self._resync()
                    if resync is None:
                        return
                    resync()  # messages sent while we were away are lost
                    del resync
                message = pubsub.get_message(timeout=0.2)
                if message is not None and message.get("type") == "message":
                    on_message = self._on_message()
                    if on_message is None:
                        return
                    on_message(message["data"].decode())
                    del on_message
            except Exception:  # noqa: BLE001, PERF203 - reconnect after a pause
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
                pubsub = None
                self._stop.wait(0.5)
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()
