"""The reference app on embedded defaults, driven in-process by FastAPI's TestClient."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the app extra is not installed")

from fastapi.testclient import TestClient

from examples.app.app import create_app
from examples.app.settings import Settings

AppFactory = Callable[..., Any]


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll until `predicate()` is truthy (bounded); returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def stats(client: TestClient) -> dict[str, Any]:
    return client.get("/stats").json()  # type: ignore[no-any-return]


def another_client(client: TestClient) -> TestClient:
    """A second client (its own cookies: another browser) of the app `client` runs.

    It sends its requests through `client`'s event loop: a `TestClient` that was not
    started would run each request on a loop of its own, where the async build's
    clients (bound to the app's loop) cannot serve it.
    """
    other = TestClient(client.app)
    other.portal = client.portal
    return other


def signup(client: TestClient, name: str = "Ada") -> tuple[int, str]:
    response = client.post("/users", json={"email": f"{name.lower()}@example.com", "name": name})
    assert response.status_code == 201, response.text
    return response.json()["id"], response.headers["X-Consistency-Token"]


@pytest.fixture(params=["patterned", "async"])
def build(request: pytest.FixtureRequest) -> str:
    """The build a test runs against: both patterned builds, unless the test parametrizes
    `build` itself (the naive build's tests do)."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def make_client(tmp_path: Path, build: str) -> Iterator[Callable[..., Any]]:
    """`make_client(**settings)` -> a started TestClient of `build` on embedded defaults."""
    with _clients() as opened:

        def make(**overrides: Any) -> TestClient:
            settings = Settings(
                build=build, data_dir=tmp_path, email_latency=0.001, retry_base=0.01
            )
            return opened(create_app(settings.with_(**overrides)))

        yield make


@contextmanager
def _clients() -> Iterator[Callable[[Any], TestClient]]:
    started: list[TestClient] = []

    def open_(app: Any) -> TestClient:
        client = TestClient(app)
        client.__enter__()
        started.append(client)
        return client

    try:
        yield open_
    finally:
        for client in reversed(started):
            client.__exit__(None, None, None)
