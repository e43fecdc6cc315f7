"""Errors raised by the queue block, all under `ScalePatternsError`.

```
ScalePatternsError
├── BackendUnavailable
│   ├── ConnectionLost        the connection dropped before the broker confirmed
│   └── BrokerBlocked         the broker applies flow control (connection.blocked)
├── PublishError              the broker refused messages (nack, or unroutable)
├── TopologyConflict          a queue exists with other arguments (also a ConfigurationError)
└── Reject                    raised by a handler: dead-letter this message now, no retry
```
"""

from __future__ import annotations

from collections.abc import Sequence

from scalepatterns.errors import BackendUnavailable, ConfigurationError, ScalePatternsError

__all__ = ["BrokerBlocked", "ConnectionLost", "PublishError", "Reject", "TopologyConflict"]


class ConnectionLost(BackendUnavailable):
    """The broker connection dropped; messages in flight were not confirmed.

    Attributes:
        unconfirmed: ids of the messages whose fate is unknown (publish them again:
            consumers with a dedup store absorb the copies).
    """

    def __init__(self, message: str, unconfirmed: Sequence[str] = ()) -> None:
        self.unconfirmed = list(unconfirmed)
        super().__init__("rabbitmq", message)


class BrokerBlocked(BackendUnavailable):
    """The broker blocked publishing (memory or disk alarm) for longer than allowed.

    Attributes:
        reason: the broker's reason, e.g. ``"low on memory"``.
        waited: seconds the producer waited for the block to lift.
    """

    def __init__(self, reason: str, waited: float) -> None:
        self.reason = reason
        self.waited = waited
        super().__init__(
            "rabbitmq",
            f"the broker blocked publishing ({reason}) and did not unblock within "
            f"{waited:.1f}s: consumers are behind or the broker is short of memory/disk",
        )


class PublishError(ScalePatternsError):
    """The broker did not take some messages: they were nacked or could not be routed.

    Nothing in `failed` was stored; everything else in the same call was confirmed.

    Attributes:
        failed: message id -> why it was refused.
        queue: the queue or exchange published to.
    """

    def __init__(self, queue: str, failed: dict[str, str]) -> None:
        self.queue = queue
        self.failed = dict(failed)
        first_id, first_reason = next(iter(self.failed.items()))
        more = f" (and {len(self.failed) - 1} more)" if len(self.failed) > 1 else ""
        super().__init__(
            f"the broker refused message {first_id!r} to {queue!r}: {first_reason}{more}"
        )


class TopologyConflict(ConfigurationError):
    """A queue or exchange already exists with arguments that differ from the declaration.

    Attributes:
        name: the queue or exchange.
        argument: the conflicting argument (e.g. ``"x-queue-type"``), if the broker named it.
        detail: the broker's words.
    """

    def __init__(self, name: str, argument: str | None, detail: str) -> None:
        self.name = name
        self.argument = argument
        self.detail = detail
        ScalePatternsError.__init__(
            self,
            f"{name!r} already exists with a different {argument or 'argument'}: {detail}; "
            "declare it with the same arguments, or delete it first",
        )
        self.parameter, self.value, self.accepted = argument or "arguments", None, detail


class Reject(ScalePatternsError):
    """Raise from a handler to send the message to the dead-letter queue without retrying."""
