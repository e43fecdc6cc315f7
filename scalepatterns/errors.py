"""Every error scalepatterns raises, rooted at `ScalePatternsError`.

The tree:

```
ScalePatternsError
├── ConfigurationError        bad argument at construction (also a ValueError)
├── MissingDependency         an optional extra is not installed (also an ImportError)
├── SerializationError        a value cannot be encoded, or bytes cannot be decoded
│   └── SignatureError        a signed payload is unsigned or was tampered with
├── BackendUnavailable        Redis / PostgreSQL / RabbitMQ could not be reached
├── Refused                   refused on purpose, try again after `retry_after`
│   ├── RateLimited           a limiter refused the call
│   ├── CircuitOpen           a breaker refused the call
│   ├── QueueFull             a queue is above its high watermark; carries `queue`
│   ├── BulkheadFull          a concurrency limit refused the call (backpressure)
│   └── NoHealthyEndpoint     a load balancer has no endpoint to use (resilience)
└── DeadlineExceeded          a timeout or deadline ran out (also a TimeoutError)
```

Each error carries the facts a caller needs as attributes and says what to do in its
message. Errors raised while talking to a driver are chained (`raise ... from exc`) so
the driver's own exception stays visible in tracebacks.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "CircuitOpen",
    "ConfigurationError",
    "DeadlineExceeded",
    "MissingDependency",
    "QueueFull",
    "RateLimited",
    "Refused",
    "ScalePatternsError",
    "SerializationError",
    "SignatureError",
]


class ScalePatternsError(Exception):
    """Root of every error raised by scalepatterns."""


class ConfigurationError(ScalePatternsError, ValueError):
    """An argument has a value the component cannot work with.

    Raised at construction or at the call that received the argument; a setting only a
    server can judge (a password, a vhost) is refused at the first call that reaches it.

    Attributes:
        parameter: the argument's name.
        value: the value that was given.
        accepted: what the argument accepts, in words.
    """

    def __init__(self, parameter: str, value: object, accepted: str) -> None:
        self.parameter = parameter
        self.value = value
        self.accepted = accepted
        super().__init__(f"invalid {parameter}={value!r}: expected {accepted}")


class MissingDependency(ScalePatternsError, ImportError):
    """An optional dependency is not installed; the message names the extra to install.

    Attributes:
        module: the module that failed to import.
        extra: the `scalepatterns[...]` extra that provides it.
    """

    def __init__(self, module: str, extra: str, feature: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{feature} needs the {module!r} package, which is not installed: "
            f"pip install 'scalepatterns[{extra}]'",
            name=module,
        )


class SerializationError(ScalePatternsError):
    """A value could not be serialized, or stored bytes could not be deserialized."""


class SignatureError(SerializationError):
    """A signed payload was unsigned, signed with another key, or tampered with.

    The payload is never deserialized when this is raised.
    """


class BackendUnavailable(ScalePatternsError):
    """A backend server could not be reached or answered with an error.

    Attributes:
        backend: a short name of the backend (``"redis"``, ``"postgresql"``, ...).
    """

    def __init__(self, backend: str, message: str) -> None:
        self.backend = backend
        super().__init__(f"{backend} unavailable: {message}")


class Refused(ScalePatternsError):
    """Refused on purpose to protect a service (a limit, an open breaker, a full queue):
    the same call may succeed later. Catch this one to back off from any of them.

    Attributes:
        retry_after: seconds until trying again makes sense, or None if unknown.
    """

    retry_after: float | None


class RateLimited(Refused):
    """A rate limiter refused the call.

    Attributes:
        key: the limited key.
        retry_after: seconds until the same call would be allowed.
    """

    retry_after: float  # always known

    def __init__(self, key: str, retry_after: float) -> None:
        self.key = key
        self.retry_after = retry_after
        super().__init__(f"rate limit exceeded for {key!r}: retry after {retry_after:.3f}s")


class CircuitOpen(Refused):
    """A circuit breaker is open and refused the call without trying it.

    Attributes:
        name: the breaker's name.
        retry_after: seconds until the breaker lets a trial call through.
    """

    retry_after: float  # always known

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(f"circuit {name!r} is open: calls are refused for {retry_after:.3f}s more")


class QueueFull(Refused):
    """A queue is above its high watermark and the producer was told to back off.

    Attributes:
        queue: the queue's name.
        depth: the depth that was observed.
        retry_after: a hint, in seconds, for when to try again (``None`` if unknown).
    """

    def __init__(self, queue: str, depth: int, retry_after: float | None = None) -> None:
        self.queue = queue
        self.depth = depth
        self.retry_after = retry_after
        super().__init__(f"queue {queue!r} is full (depth {depth}): slow down or retry later")


class DeadlineExceeded(ScalePatternsError, TimeoutError):
    """A timeout or a deadline carried by the caller ran out.

    Attributes:
        timeout: the budget, in seconds, that ran out.
    """

    def __init__(self, timeout: float, what: str = "call") -> None:
        self.timeout = timeout
        super().__init__(f"{what} did not finish within {timeout:.3f}s")
