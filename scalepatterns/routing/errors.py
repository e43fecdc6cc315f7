"""Errors of the read/write router, all `ScalePatternsError`s."""

from __future__ import annotations

from scalepatterns.errors import BackendUnavailable, ScalePatternsError

__all__ = ["InvalidToken", "NoHealthyReplica", "ReadOnlyViolation"]


class InvalidToken(ScalePatternsError, ValueError):
    """A consistency token could not be parsed.

    Tokens are parsed strictly (``v1:pg:<hi>/<lo>`` or ``v1:t:<unix seconds>``); anything
    else is refused rather than guessed at. The token itself is not echoed beyond its first
    characters, since it came from a client.

    Attributes:
        reason: what is wrong with it.
    """

    def __init__(self, token: object, reason: str) -> None:
        self.reason = reason
        shown = repr(token)[:40]
        super().__init__(
            f"invalid consistency token {shown}: {reason}; expected 'v1:pg:<lsn>' or "
            "'v1:t:<unix seconds>' as returned by ReadWriteRouter.token()"
        )


class ReadOnlyViolation(ScalePatternsError):
    """A write (flush, INSERT/UPDATE/DELETE, FOR UPDATE) was attempted in a read-only scope.

    Attributes:
        statement: a short description of what was attempted (``"flush"``, ``"Insert"``...).
    """

    def __init__(self, source: str, statement: str) -> None:
        self.source = source
        self.statement = statement
        super().__init__(
            f"router {source!r}: {statement} attempted inside a read-only scope; "
            "move the write out of `router.read_only()` or use a writing session"
        )


class NoHealthyReplica(BackendUnavailable):
    """No replica is in rotation and the router was configured with ``no_replica="raise"``.

    Attributes:
        source: the router's name.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__(
            "replica",
            f"router {source!r} has no healthy replica in rotation (all ejected for lag or "
            "connection failures); reads were not sent to the primary because "
            "no_replica='raise'",
        )
