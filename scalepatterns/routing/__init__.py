"""Read/write routing for SQLAlchemy: reads to replicas, writes to the primary, no stale reads.

```python
from scalepatterns.routing import ReadWriteRouter

router = ReadWriteRouter(primary=primary_engine, replicas=[replica_engine])
Session = router.sessionmaker()
with Session() as session:
    session.get(User, 1)                 # a replica
    session.add(User(name="Ada"))
    session.commit()                     # the primary
    token = router.token(session)        # carry it to the next request
```

Importing this package imports SQLAlchemy (`pip install 'scalepatterns[sqlalchemy]'`);
`import scalepatterns` does not.
"""

from __future__ import annotations

from scalepatterns.routing import _sqlalchemy  # noqa: F401 - first: names the extra if missing
from scalepatterns.routing.balance import Balancer, LeastLag, RandomChoice, RoundRobin, Weighted
from scalepatterns.routing.errors import (
    InvalidToken,
    NoHealthyReplica,
    NotPrimary,
    ReadOnlyViolation,
)
from scalepatterns.routing.events import (
    LagSampled,
    ReplicaEjected,
    ReplicaReadmitted,
    RouteDecided,
    TimelineChanged,
)
from scalepatterns.routing.health import (
    LagSample,
    ReplicaHealth,
    ReplicaStatus,
    ReplicaView,
    Transition,
)
from scalepatterns.routing.router import ReadWriteRouter, ReplicaMonitor
from scalepatterns.routing.session import RoutingSession
from scalepatterns.routing.timeline import Timeline, TimelineWatch
from scalepatterns.routing.token import ConsistencyToken

__all__ = [
    "Balancer",
    "ConsistencyToken",
    "InvalidToken",
    "LagSample",
    "LagSampled",
    "LeastLag",
    "NoHealthyReplica",
    "NotPrimary",
    "RandomChoice",
    "ReadOnlyViolation",
    "ReadWriteRouter",
    "ReplicaEjected",
    "ReplicaHealth",
    "ReplicaMonitor",
    "ReplicaReadmitted",
    "ReplicaStatus",
    "ReplicaView",
    "RoundRobin",
    "RouteDecided",
    "RoutingSession",
    "Timeline",
    "TimelineChanged",
    "TimelineWatch",
    "Transition",
    "Weighted",
]
