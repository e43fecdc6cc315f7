"""Imported first by the package: a missing SQLAlchemy fails with the extra to install."""

from __future__ import annotations

from scalepatterns._deps import require

require("sqlalchemy", extra="sqlalchemy", feature="scalepatterns.routing (ReadWriteRouter)")
