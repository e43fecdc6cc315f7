"""Errors of the read/write router, all `ScalePatternsError`s."""

from __future__ import annotations

from scalepatterns.errors import BackendUnavailable, ScalePatternsError

__all__ = ["InvalidToken", "NoHealthyReplica", "NotPrimary", "ReadOnlyViolation"]


class InvalidToken(ScalePatternsError, ValueError):
    """A consistency token could not be parsed.

    Tokens are parsed strictly (``v1:pg:<system id>:<timeline>:<hi>/<lo>``, the older
    ``v1:pg:<hi>/<lo>``, or ``v1:t:<unix seconds>``); anything
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


class NotPrimary(BackendUnavailable):
    """A new connection of the primary engine reached a server that must not take writes.

    The router checks every new connection of the primary engine before it is used, and
    closes it without sending anything else when the server is in recovery (a standby: the
    primary is down and no standby has been promoted yet, or the address points at a
    standby), or when it is on an older timeline of the cluster than one the router has
    already seen (a former primary that came back without being rebuilt as a standby).
    Retry once a standby has been promoted (or the old primary fenced).

    Attributes:
        source: the router's name.
        server: ``host:port`` the connection reached.
        reason: ``"in_recovery"`` or ``"behind"``.
    """

    def __init__(self, source: str, server: str, reason: str, detail: str = "") -> None:
        self.source = source
        self.server = server
        self.reason = reason
        what = (
            "is in recovery (a standby)"
            if reason == "in_recovery"
            else f"is behind the newest timeline this router has seen ({detail})"
        )
        super().__init__(
            "postgresql",
            f"router {source!r}: the server at {server} reached by the primary engine {what}; "
            "no write was sent to it. Writes resume once the primary engine reaches a promoted "
            "primary: use a multi-host URL with target_session_attrs=read-write or "
            "find_primary=, and fence a former primary",
        )
