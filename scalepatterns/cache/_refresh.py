"""`RefreshPool`: the few threads that run a cache's background refreshes (sync functions).

Started on first use; `wait` lets a caller (tests, shutdown) wait for what was submitted.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable

__all__ = ["RefreshPool"]


class RefreshPool:
    """A small thread pool, started on the first `submit`."""

    def __init__(self, workers: int = 4) -> None:
        self.workers = workers
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._lock = threading.Lock()

    def submit(self, work: Callable[[], None]) -> None:
        """Run `work` on one of the pool's threads."""
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix="scalepatterns-cache-refresh"
                )
            future = self._executor.submit(work)
            self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def wait(self, timeout: float | None) -> bool:
        """Wait up to `timeout` seconds (None: no limit) for the work submitted so far;
        True when all of it finished. Work still running at the deadline finishes on its
        own thread; later work gets a fresh pool."""
        with self._lock:
            executor, self._executor = self._executor, None
            pending, self._pending = self._pending, set()
        if executor is None:
            return True
        _, not_done = concurrent.futures.wait(pending, timeout=timeout)
        executor.shutdown(wait=False)
        return not not_done
