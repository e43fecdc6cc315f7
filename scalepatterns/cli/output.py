"""What the commands print: JSON for scripts, aligned tables and fields for people,
progress bars on standard error (never mixed into the JSON)."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click

__all__ = ["emit", "fields", "json_option", "jsonable", "progress", "redact_text", "table"]

_PASSWORD_IN_URL = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@", re.IGNORECASE)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of a table."
)


def redact_text(text: str) -> str:
    """`text` with the password of every URL in it as ``***``."""
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


def jsonable(value: Any) -> Any:
    """`value` as JSON can carry it: bytes that are not UTF-8 as ``{"base64": ...}``."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def emit(as_json: bool, data: Any, human: Callable[[], str]) -> None:
    """Print `data` as JSON, or what `human()` renders."""
    click.echo(json.dumps(jsonable(data), indent=2) if as_json else human())


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell, numbers right-aligned; "-" for None."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    numeric = [_numbers([row[i] for row in rows]) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        padded = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])


def _numbers(column: list[object]) -> bool:
    """Whether a column holds numbers (and blanks): right-aligned."""
    given = [v for v in column if v is not None]
    return bool(given) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in given
    )


def fields(pairs: Sequence[tuple[str, object]]) -> str:
    """``label  value`` lines with the values aligned."""
    width = max(len(label) for label, _ in pairs)
    return "\n".join(f"{label.ljust(width)}  {_cell(value)}" for label, value in pairs)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


class _Bar:
    """What `progress` yields: `update(n)` advances the bar (a no-op when hidden)."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def update(self, steps: int) -> None:
        if self._bar is not None:
            self._bar.update(steps)


@contextlib.contextmanager
def progress(total: int, label: str, *, show: bool) -> Iterator[_Bar]:
    """A progress bar of `total` steps on standard error, when `show` and it is a terminal."""
    if not show or not sys.stderr.isatty():
        yield _Bar(None)
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield _Bar(bar)
