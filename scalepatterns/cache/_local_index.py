"""`LocalIndex`: which memory-tier entries a shared key or a tag names.

Invalidations arrive as shared keys (from other processes, through pub/sub) and as tags;
the memory tier stores entries under tuple keys. The index maps one to the other, and
stays bounded: entries the memory tier evicted or expired are pruned, amortised over as
many writes as the tier holds entries.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable

from scalepatterns.cache.memory import MemoryBackend

__all__ = ["LocalIndex"]


class LocalIndex:
    """The reverse index (shared key -> local key) and the tag index of a memory tier."""

    def __init__(self, local: MemoryBackend | None) -> None:
        self.local = local
        self.reverse: dict[str, Hashable] = {}
        self.tags: dict[str, set[Hashable]] = {}
        self._tagged = 0  # (tag, entry) pairs in the tag index, pruned or not
        self._lock = threading.Lock()

    def remember(self, skey: str, lkey: Hashable) -> None:
        """Map a shared key to its local-tier key, for invalidations from other processes."""
        reverse = self.reverse
        reverse[skey] = lkey
        local = self.local
        if local is not None and len(reverse) > 2 * local.maxsize:
            with self._lock:
                self.reverse = {s: k for s, k in list(reverse.items()) if k in local}

    def forget_keys(self) -> None:
        """Drop the reverse index (the memory tier was cleared)."""
        self.reverse.clear()

    def drop(self, skeys: Iterable[str]) -> None:
        """Drop the memory-tier entries of these shared keys."""
        local = self.local
        if local is None:
            return
        for skey in skeys:
            lkey = self.reverse.pop(skey, None)
            if lkey is not None:
                local.pop(lkey)

    def tag(self, lkey: Hashable, tags: list[str]) -> None:
        """Note that the memory-tier entry `lkey` carries `tags`."""
        with self._lock:
            index = self.tags
            for tag in tags:
                index.setdefault(tag, set()).add(lkey)
            self._tagged += len(tags)
            local = self.local
            if local is not None and self._tagged > 2 * local.maxsize:
                pruned = {tag: {k for k in keys if k in local} for tag, keys in index.items()}
                self.tags = {tag: keys for tag, keys in pruned.items() if keys}
                self._tagged = sum(map(len, self.tags.values()))

    def pop_tags(self, names: list[str]) -> int:
        """Drop the memory-tier entries tagged with any of `names`; how many there were."""
        with self._lock:
            lkeys = set().union(*(self.tags.pop(n, set()) for n in names))
        if self.local is not None:
            for lkey in lkeys:
                self.local.pop(lkey)
        return len(lkeys)
