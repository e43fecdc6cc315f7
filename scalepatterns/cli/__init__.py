"""The operator command line: ``scalepatterns ...`` or ``python -m scalepatterns``.

Needs ``pip install 'scalepatterns[cli]'`` (click); `import scalepatterns` never loads it.
Every command prints a table for people or JSON for scripts (``--json``), and exits
with a code that says what happened (`scalepatterns.cli.exits`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from scalepatterns.cli.exits import USAGE

__all__ = ["main", "run"]


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: ``sys.argv[1:]``); returns the exit code."""
    try:
        from scalepatterns.cli.app import invoke
    except ImportError as exc:
        if exc.name != "click":
            raise
        print(
            "the scalepatterns command needs the 'click' package: pip install 'scalepatterns[cli]'",
            file=sys.stderr,
        )
        return USAGE
    return invoke(list(sys.argv[1:] if argv is None else argv))


def main() -> None:
    """The console script: run and exit with the command's code."""
    sys.exit(run())
