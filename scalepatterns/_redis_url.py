"""Redis clients from a URL, for every block that takes one: plain Redis and Sentinel.

redis-py reads ``redis://``, ``rediss://`` and ``unix://`` URLs but has no URL for a
master found through Sentinel, so this module adds the form other libraries read
(RedisVL, Prefect)::

    redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/service[/db][?option=value...]

- the hosts are the sentinels (port 26379 when left out), ``service`` the master's name
  in their ``sentinel monitor`` line, ``db`` the database (0 when left out);
- the user name and password are the master's; ``sentinel_username`` and
  ``sentinel_password`` options log in to the sentinels, when they ask for it;
- the other options are redis-py's URL options (``socket_timeout=0.5``...) and apply to
  the master's connections.

The client it makes is redis-py's own Sentinel-managed one (``Sentinel(...).master_for``):
each new connection asks the sentinels where the master is, so after a failover the
client reaches the promoted replica without a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from scalepatterns._deps import require
from scalepatterns.errors import ConfigurationError

__all__ = ["aclose_client", "client_from_url", "close_client", "redact", "server_of"]

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
ACCEPTED = (
    "a redis://, rediss://, unix:// URL, or "
    "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]"
)
# Options of the sentinels' own connections, read out of the query string.
_SENTINEL_LOGIN = ("sentinel_username", "sentinel_password")


def redact(url: str) -> str:
    """`url` with its passwords (in the user part and in ``*password`` options) as ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:  # unreadable: show only its scheme
        return url.partition("://")[0] + "://..."
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
    if "password" in query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if "password" in k else v) for k, v in pairs], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def client_from_url(
    url: str, *, parameter: str, asyncio: bool = False, feature: str, **options: Any
) -> Any:
    """A redis-py client (``redis.asyncio`` with `asyncio`) for `url`.

    Args:
        url: a URL redis-py reads, or a ``redis+sentinel://`` URL (see the module).
        parameter: the caller's parameter name, for the error.
        feature: what the user was doing, for a missing ``redis`` package.
        options: client settings (``socket_timeout``, ``retry``...); the URL's own
            options win, as with redis-py's ``from_url``. For a Sentinel URL the socket
            settings and ``retry`` apply to the sentinels' connections too.

    Raises:
        ConfigurationError: the URL cannot be read (the password is never shown).
    """
    module = "redis.asyncio" if asyncio else "redis"
    redis = require(module, extra="redis", feature=feature)
    scheme = url.partition("://")[0].lower()
    if scheme == "rediss+sentinel":
        raise ConfigurationError(
            parameter,
            redact(url),
            f"{ACCEPTED} (for TLS, pass a client: Sentinel(..., ssl=True).master_for(name))",
        )
    if scheme != SENTINEL_SCHEME:
        try:
            return redis.Redis.from_url(url, **options)
        except ValueError as exc:
            raise ConfigurationError(parameter, redact(url), f"{ACCEPTED} ({exc})") from None
    connection = require("redis.connection", extra="redis", feature=feature)
    sentinels, service, master_options, login = _parse_sentinel_url(
        url, parameter, connection.parse_url
    )
    sentinel_module = require(f"{module}.sentinel", extra="redis", feature=feature)
    merged = {**options, **master_options}
    sentinel_options = {k: v for k, v in merged.items() if k.startswith("socket_") or k == "retry"}
    sentinel_options.update({k.removeprefix("sentinel_"): v for k, v in login.items()})
    manager = sentinel_module.Sentinel(sentinels, sentinel_kwargs=sentinel_options)
    return manager.master_for(service, **merged)


def _address(text: str) -> tuple[str, int] | None:
    """``host``, ``host:port`` or ``[v6 address]:port`` as (host, port), or None."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or rest[:1] not in ("", ":"):
            return None
        port = rest[1:] if rest else None
    else:
        host, colon, after = text.partition(":")
        port = after if colon else None
    if not host or (port is not None and not (port.isdigit() and 0 < int(port) < 65536)):
        return None
    return host, SENTINEL_PORT if port is None else int(port)


def _parse_sentinel_url(
    url: str, parameter: str, parse_url: Callable[[str], dict[str, Any]]
) -> tuple[list[tuple[str, int]], str, dict[str, Any], dict[str, str]]:
    """(sentinel addresses, service name, master options, sentinel login) of `url`;
    `parse_url` is redis-py's, which reads the options of one server's URL."""

    def refuse(why: str) -> ConfigurationError:
        return ConfigurationError(parameter, redact(url), f"{ACCEPTED}: {why}")

    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unbalanced [IPv6 address]
        raise refuse(str(exc)) from None
    hosts = parts.netloc.rsplit("@", 1)[-1]
    sentinels: list[tuple[str, int]] = []
    for text in hosts.split(","):
        address = _address(text)
        if address is None:
            raise refuse(f"{text!r} is not a sentinel host[:port]")
        sentinels.append(address)
    path = [unquote(p) for p in parts.path.split("/")[1:]]
    if not path or not path[0]:
        raise refuse("no service name (the master's name in `sentinel monitor`)")
    if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise refuse(f"the path after the service name is a db number, not {path[1:]!r}")
    query = parse_qs(parts.query)
    login = {k: query.pop(k)[0] for k in _SENTINEL_LOGIN if k in query}
    # redis-py reads the rest (credentials, db, options), as it would for one server.
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    db = path[1] if len(path) == 2 else "0"
    plain = urlunsplit(("redis", f"{userinfo}sentinel", f"/{db}", urlencode(query, doseq=True), ""))
    try:
        options = parse_url(plain)
    except ValueError as exc:
        raise refuse(str(exc)) from None
    options.pop("host", None)
    options.pop("port", None)
    return sentinels, path[0], options, login


def server_of(client: Any) -> str:
    """Where `client` connects, for log lines and errors: ``host:port``, ``unix:/path``,
    ``sentinel master 'name'``, or ``redis cluster host:port,...`` (no password)."""
    pool = getattr(client, "connection_pool", None)
    service = getattr(pool, "service_name", None)
    if service is not None:
        return f"sentinel master {service!r}"
    nodes = getattr(getattr(client, "nodes_manager", None), "startup_nodes", None)
    if nodes:
        return "redis cluster " + ",".join(sorted(nodes))
    options = getattr(pool, "connection_kwargs", None) or {}
    if "path" in options:
        return f"unix:{options['path']}"
    if "host" in options:
        return f"{options['host']}:{options.get('port', 6379)}"
    return type(client).__name__


def close_client(client: Any) -> None:
    """Close a sync client made here, and its connections to the sentinels (if any)."""
    client.close()
    for sentinel in _sentinels_of(client):
        sentinel.close()


async def aclose_client(client: Any) -> None:
    """`close_client` for a ``redis.asyncio`` client."""
    await client.aclose()
    for sentinel in _sentinels_of(client):
        await sentinel.aclose()


def _sentinels_of(client: Any) -> list[Any]:
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    return list(getattr(manager, "sentinels", ()))
