"""Errors raised by the queue block, all under `ScalePatternsError`.

```
ScalePatternsError
├── BackendUnavailable
│   ├── ConnectionLost        the connection dropped before the broker confirmed
│   └── BrokerBlocked         the broker applies flow control (connection.blocked)
├── PublishError              the broker refused messages (nack, or unroutable)
├── TopologyConflict          a queue exists with other arguments (also a ConfigurationError)
├── BrokerRefused             wrong credentials or vhost: never retried (a ConfigurationError)
└── Reject                    raised by a handler: dead-letter this message now, no retry
```
"""

from __future__ import annotations

from collections.abc import Sequence

from scalepatterns.errors import BackendUnavailable, ConfigurationError, ScalePatternsError

__all__ = [
    "BrokerBlocked",
    "BrokerRefused",
    "ConnectionLost",
    "PublishError",
    "Reject",
    "TopologyConflict",
]


class ConnectionLost(BackendUnavailable):
    """The broker connection dropped; messages in flight were not confirmed.

    Attributes:
        unconfirmed: ids of the messages whose fate is unknown, and of any the broker
            refused in the same call (publish them again: consumers with a dedup store
            absorb the copies).
    """

    def __init__(
        self, message: str, unconfirmed: Sequence[str] = (), *, backend: str = "rabbitmq"
    ) -> None:
        self.unconfirmed = list(unconfirmed)
        super().__init__(backend, message)


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
        nacked: the ids in `failed` the broker nacked: it could not store them then (a
            quorum queue electing a new leader after a node died, a full queue rejecting
            publishes). Publishing them again may succeed; a `Producer` does so for up
            to its `reconnect_timeout` when every refused message was nacked.
        queue: the queue or exchange published to.
    """

    def __init__(self, queue: str, failed: dict[str, str], nacked: Sequence[str] = ()) -> None:
        self.queue = queue
        self.failed = dict(failed)
        self.nacked = list(nacked)
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


class BrokerRefused(ConfigurationError):
    """The broker refused the connection itself: wrong credentials, or no such vhost.

    Not transient, so never retried: every call of the broker raises it at once until
    the URL is fixed (a new broker object).

    Attributes:
        url: the URL, without its password.
        reason: the broker's words, e.g. ``"403 ACCESS_REFUSED - Login was refused ..."``.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        ScalePatternsError.__init__(
            self,
            f"the broker at {url} refused the connection: {reason}; check the user, "
            "password and vhost in the URL",
        )
        self.parameter, self.value = "url", url
        self.accepted = "credentials and a vhost the broker accepts"


class Reject(ScalePatternsError):
    """Raise from a handler to send the message to the dead-letter queue without retrying."""
