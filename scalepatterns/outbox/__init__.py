"""Transactional outbox: a database write and its events commit together; a relay
publishes them after the commit, with nothing lost.

`Outbox.add(session, target, body)` writes the event in the caller's transaction;
`OutboxRelay` / `AsyncOutboxRelay` publish committed rows through a `Producer` or an
`EventBus` and delete them once the broker confirmed. SQLAlchemy is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scalepatterns._deps import lazy_attributes
from scalepatterns.outbox.events import OutboxRelayed, OutboxRelayFailed, OutboxRowsRefused

if TYPE_CHECKING:
    from scalepatterns.outbox.outbox import Outbox, OutboxError
    from scalepatterns.outbox.relay import AsyncOutboxRelay, OutboxRelay, RelayBatch
    from scalepatterns.outbox.table import dead_table, outbox_table

__all__ = [
    "AsyncOutboxRelay",
    "Outbox",
    "OutboxError",
    "OutboxRelay",
    "OutboxRelayFailed",
    "OutboxRelayed",
    "OutboxRowsRefused",
    "RelayBatch",
    "dead_table",
    "outbox_table",
]

__getattr__ = lazy_attributes(
    __name__,
    {
        "AsyncOutboxRelay": "scalepatterns.outbox.relay",
        "Outbox": "scalepatterns.outbox.outbox",
        "OutboxError": "scalepatterns.outbox.outbox",
        "OutboxRelay": "scalepatterns.outbox.relay",
        "RelayBatch": "scalepatterns.outbox.relay",
        "dead_table": "scalepatterns.outbox.table",
        "outbox_table": "scalepatterns.outbox.table",
    },
)
