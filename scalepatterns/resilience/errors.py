"""Errors specific to the resilience block (the shared ones live in `scalepatterns.errors`)."""

from __future__ import annotations

from scalepatterns.errors import Refused

__all__ = ["NoHealthyEndpoint"]


class NoHealthyEndpoint(Refused):
    """Every endpoint of a `LoadBalancer` is ejected, unhealthy or busy with its trial.

    Attributes:
        balancer: the balancer's name.
        retry_after: seconds until an ejected endpoint gets its trial (None if unknown,
            e.g. all are failing active health checks).
    """

    def __init__(self, balancer: str, retry_after: float | None) -> None:
        self.balancer = balancer
        self.retry_after = retry_after
        hint = (
            f"the next trial is in {retry_after:.3f}s"
            if retry_after is not None
            else "waiting for a health check to pass"
        )
        super().__init__(f"load balancer {balancer!r} has no endpoint to use: {hint}")
