"""The settings both RabbitMQ brokers take, checked once, and the node URLs they connect to."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from scalepatterns._checks import seconds
from scalepatterns._deps import require
from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners, default_listeners

__all__ = ["BrokerSettings", "DEFAULT_URL", "node_urls", "redact"]

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
_ACCEPTED = (
    "an amqp:// or amqps:// URL, several of them (a list, or separated by commas), or one "
    "URL naming several hosts: amqp://user:password@host1:5672,host2:5672/vhost"
)
_NEXT_URL = re.compile(r"\s*[,;]\s*(?=amqps?://)")


def redact(url: str) -> str:
    """`url` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))


def node_urls(url: str | Sequence[str]) -> list[str]:
    """One URL per node, from what a user may pass as `url`.

    Accepted: one URL; a list of URLs; URLs separated by commas (or semicolons, as
    Celery writes them); one URL whose host part lists several ``host:port`` separated by
    commas (user, password, vhost and query shared by all). Raises `ConfigurationError`
    for anything that is not AMQP.
    """
    items = [url] if isinstance(url, str) else list(url)
    if not items or not all(isinstance(item, str) for item in items):
        raise ConfigurationError("url", url, _ACCEPTED)
    urls: list[str] = []
    for item in items:
        for one in _NEXT_URL.split(item.strip()):
            urls.extend(_one_per_host(one))
    return urls


def _one_per_host(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError("url", redact(url), _ACCEPTED) from exc
    if parts.scheme not in ("amqp", "amqps") or not parts.netloc:
        raise ConfigurationError("url", redact(url), _ACCEPTED)
    credentials, _, hosts = parts.netloc.rpartition("@")
    prefix = f"{credentials}@" if credentials else ""
    names = [host.strip() for host in hosts.split(",")]
    if not all(names):
        raise ConfigurationError("url", redact(url), _ACCEPTED)
    return [urlunsplit(parts._replace(netloc=prefix + host)) for host in names]


@dataclass(frozen=True)
class BrokerSettings:
    """What `RabbitMQBroker` and `AsyncRabbitMQBroker` take (see their docstrings)."""

    url: str | Sequence[str] = DEFAULT_URL
    heartbeat: int = 30
    connect_timeout: float = 10.0
    blocked_timeout: float = 30.0
    reconnect_max_delay: float = 5.0
    window: int = 5000
    listeners: Listeners = field(default_factory=lambda: default_listeners)
    urls: list[str] = field(init=False)
    """Each node's URL, without its password."""

    def __post_init__(self) -> None:
        heartbeat = self.heartbeat
        if isinstance(heartbeat, bool) or not isinstance(heartbeat, int) or heartbeat < 0:
            raise ConfigurationError("heartbeat", heartbeat, "whole seconds >= 0")
        seconds("connect_timeout", self.connect_timeout, positive=True)
        seconds("blocked_timeout", self.blocked_timeout)
        seconds("reconnect_max_delay", self.reconnect_max_delay, positive=True)
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ConfigurationError("window", self.window, "an int >= 1")
        object.__setattr__(self, "urls", [redact(u) for u in node_urls(self.url)])

    def load_pika(self, feature: str) -> ModuleType:
        return require("pika", extra="rabbitmq", feature=feature)

    def parameters(self, pika: ModuleType) -> list[Any]:
        """pika's connection parameters for each node."""
        nodes = []
        for url in node_urls(self.url):
            try:
                params = pika.URLParameters(url)
            except Exception as exc:  # pika's own error names no parameter
                raise ConfigurationError("url", redact(url), f"{_ACCEPTED} ({exc})") from exc
            params.heartbeat = self.heartbeat
            params.socket_timeout = self.connect_timeout
            params.stack_timeout = self.connect_timeout
            params.connection_attempts = 1
            params.blocked_connection_timeout = None  # the brokers surface blocking themselves
            nodes.append(params)
        return nodes

    def describe(self) -> str:
        return self.urls[0] if len(self.urls) == 1 else ",".join(self.urls)
