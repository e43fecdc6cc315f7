"""The queue tests' broker fixtures serve the command line's tests too."""

from tests.integration.queue.conftest import admin, names

__all__ = ["admin", "names"]
