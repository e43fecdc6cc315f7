"""What the command line's exit codes mean (the same for every command)."""

from __future__ import annotations

__all__ = ["FAILED", "FOUND", "INTERRUPTED", "OK", "UNREACHABLE", "USAGE"]

OK = 0
"""Done, and what was checked is healthy."""
FOUND = 1
"""Done, and it found something to act on: a replica out of rotation or not a standby, a
breaker open, a dry run with work left to do, a count or checksum that differs."""
USAGE = 2
"""Bad arguments or settings (an unreadable URL, a rate that is not a rate, a missing
option); nothing was done."""
UNREACHABLE = 3
"""A server could not be reached (or refused the connection: credentials, vhost)."""
FAILED = 4
"""A server answered with an error, or the work stopped midway in a stated way (a
resharding row that differs on the target); the message says what to do."""
INTERRUPTED = 130
"""Stopped by Ctrl-C or SIGTERM (work in progress stopped at a safe point)."""
