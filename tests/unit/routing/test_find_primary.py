"""`find_primary`: where each new primary connection goes (no server: the connection is
intercepted right after the router's hook has chosen its address)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from scalepatterns.errors import ConfigurationError
from scalepatterns.routing import ReadWriteRouter

MULTIHOST = "postgresql+psycopg://app@/db?host=h1:5432&host=h2:5433&target_session_attrs=read-write"


class Intercepted(Exception):
    """Raised instead of connecting, carrying the parameters the connection would have used."""

    def __init__(self, cparams: dict[str, Any]) -> None:
        super().__init__("intercepted")
        self.cparams = cparams


def intercept(engine: Any) -> None:
    def record(dialect: Any, connection_record: Any, cargs: Any, cparams: Any) -> None:
        raise Intercepted(dict(cparams))

    sa.event.listen(getattr(engine, "sync_engine", engine), "do_connect", record)


def test_each_new_connection_goes_where_find_primary_says() -> None:
    answers = iter([("10.0.0.7", 6432), "db-primary.internal"])
    engine = sa.create_engine(MULTIHOST)
    ReadWriteRouter(engine, find_primary=lambda: next(answers))
    intercept(engine)
    with pytest.raises(Intercepted) as first:
        engine.connect()
    assert (first.value.cparams["host"], first.value.cparams["port"]) == ("10.0.0.7", 6432)
    assert first.value.cparams["target_session_attrs"] == "read-write"  # still checked
    with pytest.raises(Intercepted) as second:
        engine.connect()
    assert second.value.cparams["host"] == "db-primary.internal"
    assert "port" not in second.value.cparams  # the URL's list of two ports no longer fits


def test_an_async_find_primary_is_awaited_for_async_engines() -> None:
    async def locate() -> tuple[str, int]:
        await asyncio.sleep(0)
        return ("10.0.0.8", 5432)

    async def scenario() -> dict[str, Any]:
        engine = create_async_engine(MULTIHOST)
        ReadWriteRouter(engine, find_primary=locate)
        intercept(engine)
        try:
            async with engine.connect():
                pass
        except Intercepted as exc:
            return exc.cparams
        finally:
            await engine.dispose()
        raise AssertionError("the connection was not intercepted")

    cparams = asyncio.run(scenario())
    assert (cparams["host"], cparams["port"]) == ("10.0.0.8", 5432)


@pytest.mark.parametrize("answer", [None, "", ("h",), ("h", "5432"), ("h", 0), 42])
def test_a_bad_answer_from_find_primary_is_a_clear_error(answer: object) -> None:
    engine = sa.create_engine(MULTIHOST)
    ReadWriteRouter(engine, find_primary=lambda: answer)
    with pytest.raises(ConfigurationError, match="find_primary"):
        engine.connect()


def test_find_primary_is_for_postgresql_and_must_be_callable() -> None:
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        ReadWriteRouter(sa.create_engine("sqlite://"), find_primary=lambda: "h")
    with pytest.raises(ConfigurationError, match="callable"):
        ReadWriteRouter(sa.create_engine(MULTIHOST), find_primary="h")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql+psycopg://app@/db?host=h1:5432,h2:5433", "host=h1:p1&host=h2:p2"),
        ("postgresql+psycopg://app@/db?host=h1:5432&host=h2:5433", "target_session_attrs"),
        ("postgresql+psycopg://app@/db?host=h1,h2&target_session_attrs=any", "read-write"),
    ],
)
def test_a_multihost_primary_url_that_would_not_fail_over_is_refused(
    url: str, problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        ReadWriteRouter(sa.create_engine(url))


def test_multihost_primary_urls_that_fail_over_are_accepted() -> None:
    for url in (
        MULTIHOST,
        "postgresql+psycopg://app@/db?host=h1,h2&port=5432,5433&target_session_attrs=primary",
        "postgresql+psycopg://app:secret@h1:5432/db",
    ):
        ReadWriteRouter(sa.create_engine(url))
