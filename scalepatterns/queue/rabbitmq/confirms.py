"""Publisher-confirm bookkeeping: which publish call each delivery tag belongs to, and how
each message ends (confirmed, refused or lost).

Pure: no pika, no sockets, no event loop. The link feeds it what the broker says
(``basic.ack`` / ``basic.nack`` with ``multiple``, ``basic.return`` for unroutable
mandatory messages, a closed channel) in the order it arrives.
"""

from __future__ import annotations

import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable

from scalepatterns.errors import DeadlineExceeded
from scalepatterns.queue.errors import BrokerBlocked, ConnectionLost, PublishError

__all__ = ["Batch", "ConfirmTracker", "ConfirmWait", "culprit", "raise_for_outcome"]


class Batch:
    """The messages of one publish call: done once each was confirmed, refused or lost.

    `on_done` runs once, on whichever thread settles the last message.
    """

    __slots__ = (
        "_lock",
        "_on_done",
        "failed",
        "ids",
        "lost",
        "nacked",
        "remaining",
        "settled",
    )

    def __init__(self, ids: list[str], on_done: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._on_done = on_done
        self.ids = ids
        self.settled: Counter[str] = Counter()
        self.remaining = len(ids)
        self.failed: dict[str, str] = {}
        self.nacked: list[str] = []
        self.lost: list[str] = []
        if not ids:
            self._finish()

    @property
    def done(self) -> bool:
        return self.remaining <= 0

    def settle(
        self, message_id: str, error: str | None = None, *, lost: bool = False, nacked: bool = False
    ) -> None:
        """One message ended: confirmed (no `error`), refused (`error`; `nacked` by the
        broker, which may take it later) or `lost`."""
        with self._lock:
            if self.remaining <= 0:
                return
            self.settled[message_id] += 1
            if lost:
                self.lost.append(message_id)
            elif error is not None:
                self.failed[message_id] = error
                if nacked:
                    self.nacked.append(message_id)
            self.remaining -= 1
            finished = self.remaining <= 0
        if finished:
            self._finish()

    def confirm(self, message_ids: list[str]) -> None:
        """Many messages confirmed at once (one lock for all of them)."""
        with self._lock:
            if self.remaining <= 0:
                return
            count = min(len(message_ids), self.remaining)
            self.settled.update(message_ids[:count])
            self.remaining -= count
            finished = self.remaining <= 0
        if finished:
            self._finish()

    def lose_rest(self) -> None:
        """The connection died: whatever was not settled yet is lost."""
        with self._lock:
            if self.remaining <= 0:
                return
            self.lost.extend((Counter(self.ids) - self.settled).elements())
            self.remaining = 0
        self._finish()

    def _finish(self) -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done()


def raise_for_outcome(batches: Iterable[Batch], target: str, url: str) -> None:
    """Raise what the caller of a publish must hear about its settled `batches`.

    `ConnectionLost` when any message was lost (naming the refused ones too: a caller
    that publishes `unconfirmed` again must not report them as sent), else
    `PublishError` when any was refused.
    """
    failed: dict[str, str] = {}
    nacked: list[str] = []
    lost: list[str] = []
    for batch in batches:
        failed.update(batch.failed)
        nacked.extend(batch.nacked)
        lost.extend(batch.lost)
    if lost:
        lost.extend(failed)
        raise ConnectionLost(
            f"connection to {url} lost before the broker confirmed {len(lost)} message(s)", lost
        )
    if failed:
        raise PublishError(target, failed, nacked)


class ConfirmWait:
    """When a caller waiting for confirms gives up: at its deadline (`DeadlineExceeded`),
    or once the broker has blocked publishing for `blocked_timeout` (`BrokerBlocked`).

    The caller polls `check` while it waits.
    """

    def __init__(self, timeout: float, blocked_timeout: float, now: float) -> None:
        self._timeout = timeout
        self._deadline = now + timeout
        self._blocked_timeout = blocked_timeout
        self._blocked_since: float | None = None

    def check(self, now: float, *, blocked: bool, reason: str) -> None:
        if blocked:
            self._blocked_since = self._blocked_since or now
            if now - self._blocked_since >= self._blocked_timeout:
                raise BrokerBlocked(reason, now - self._blocked_since)
        else:
            self._blocked_since = None
        if now >= self._deadline:
            raise DeadlineExceeded(self._timeout, "waiting for publisher confirms")


class ConfirmTracker:
    """Delivery tags of one confirm-mode channel, from publish to confirm.

    A confirm with ``multiple`` may settle thousands of messages at once: the acks are
    gathered per publish call and settled with one lock each (this runs on the event
    loop of the async broker, where a slow callback stalls every other task).
    """

    def __init__(self) -> None:
        # delivery tag -> (batch, message id, exchange, body size), in tag order
        self._pending: dict[int, tuple[Batch, str, str, int]] = {}
        # message id -> reasons of basic.return not yet matched to that message's confirm
        self._returns: dict[str, deque[str]] = {}
        self._last_tag = 0

    def __len__(self) -> int:
        return len(self._pending)

    def sent(self, batch: Batch, message_id: str, exchange: str, size: int) -> None:
        """A message went out on the channel (it took the channel's next delivery tag)."""
        self._last_tag += 1
        self._pending[self._last_tag] = (batch, message_id, exchange, size)

    def returned(self, message_id: str, reason: str) -> None:
        """``basic.return``: a mandatory message with this id was unroutable. RabbitMQ
        sends it before that message's confirm (an ack), which then settles it as refused."""
        self._returns.setdefault(message_id, deque()).append(reason)

    def confirmed(self, delivery_tag: int, *, multiple: bool, nacked: bool) -> None:
        """``basic.ack`` / ``basic.nack`` for `delivery_tag` (and every earlier one if
        `multiple`)."""
        pending = self._pending
        if multiple:
            tags = []
            for tag in pending:
                if tag > delivery_tag:
                    break
                tags.append(tag)
        else:
            tags = [delivery_tag] if delivery_tag in pending else []
        returns = self._returns
        acked: dict[Batch, list[str]] = {}
        for tag in tags:
            batch, message_id, _, _ = pending.pop(tag)
            reasons = returns.get(message_id) if returns else None
            if reasons:
                reason = reasons.popleft()
                if not reasons:
                    del returns[message_id]
                batch.settle(message_id, f"unroutable ({reason})")
            elif nacked:
                batch.settle(message_id, "nacked by the broker", nacked=True)
            else:
                acked.setdefault(batch, []).append(message_id)
        for batch, message_ids in acked.items():
            batch.confirm(message_ids)

    def fail_all(
        self, reason: str, *, lost: bool, refused: Callable[[str, int], bool] | None = None
    ) -> None:
        """The channel closed: settle every unconfirmed message, as refused those
        `refused(exchange, size)` picks, the others as lost when `lost`, else as refused
        too. A new channel's tags start over at 1."""
        pending, self._pending = self._pending, {}
        self._returns.clear()
        self._last_tag = 0
        for batch, message_id, exchange, size in pending.values():
            if refused is not None and refused(exchange, size):
                batch.settle(message_id, reason)
            else:
                batch.settle(message_id, reason, lost=lost)


def culprit(reason: str) -> Callable[[str, int], bool] | None:
    """Which message (by exchange and body size) a broker's channel error was about, when
    its text says: ``no exchange 'x'`` (404), ``access to exchange 'x' ... refused`` (403),
    ``message size N is larger than ...`` (406)."""
    if match := re.search(r"exchange '(.*?)' in vhost", reason):
        name = match[1]
        return lambda exchange, _size: exchange == name
    if match := re.search(r"message size (\d+)", reason):
        too_big = int(match[1])
        return lambda _exchange, size: size == too_big
    return None
