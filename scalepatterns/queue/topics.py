"""AMQP topic matching: ``*`` matches one dot-separated word, ``#`` zero or more."""

from __future__ import annotations

import functools

__all__ = ["topic_matches"]


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether `routing_key` matches the topic `pattern` the way RabbitMQ matches it.

    ```python
    from scalepatterns.queue.topics import topic_matches

    assert topic_matches("user.*", "user.signed_up")
    assert not topic_matches("user.*", "user.profile.updated")
    assert topic_matches("user.#", "user.profile.updated")
    ```
    """
    return _match(tuple(pattern.split(".")), tuple(routing_key.split(".")))


@functools.lru_cache(maxsize=4096)
def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])
